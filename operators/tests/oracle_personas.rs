//! Oracle tests of the personas and drift operators: the incremental dataflow, on two workers
//! with records arriving in a seeded random order, against a from-scratch recomputation that
//! folds the plain functions over the windows in order, compared at every window.

use differential_dataflow::input::{Input, InputSession};
use personaflow_operators::drift::operator::{
    window_drift, DetectDrift, DriftEvent, DriftState, Scope, ScopeMember,
};
use personaflow_operators::drift::scaling::ScalingConfig;
use personaflow_operators::drift::DriftConfig;
use personaflow_operators::event::Context;
use personaflow_operators::ops::{
    state_through, ClusterPersonas, PinPersonas, Profile, ProfileData, Snapshots, UserId,
    UserWindow,
};
use personaflow_operators::personas::operator::model_worker;
use personaflow_operators::personas::operator::{window_personas, Persona, PersonaAssignment};
use personaflow_operators::personas::pin::{pin_window, PinState};
use personaflow_operators::personas::{rng_for, PersonaConfig, PersonaModel};
use personaflow_operators::vector::Vector;
use rand::seq::SliceRandom;
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

const WINDOWS: u64 = 60;

/// Updates an `inspect` saw, shared by the workers.
type Seen<D> = Arc<Mutex<Vec<(D, u64, isize)>>>;
/// A scope member and its window.
type TimedMember = (((Scope, UserId), ScopeMember), u64);

/// Seeded profiles: users around 3 centres that move at window 45, with random features.
fn random_profiles(seed: u64) -> Vec<(UserWindow, Profile)> {
    let mut rng = rng_for(seed, 0, 0);
    let centres = [[0.0f32, 0.0, 0.0], [3.0, 0.0, 1.0], [0.0, 3.0, -1.0]];
    let mut out = Vec::new();
    for w in 0..WINDOWS {
        for u in 0..60 {
            if rng.random_range(0.0..1.0) < 0.25 {
                continue; // inactive in this window
            }
            let c = centres[u % 3];
            let shift = if w >= 45 && u % 3 == 1 { 2.0 } else { 0.0 };
            let embedding: Vec<f32> = c
                .iter()
                .map(|x| x + shift + rng.random_range(-0.5..0.5))
                .collect();
            let features: Vec<f32> = (0..33).map(|_| rng.random_range(0.0..1.0)).collect();
            out.push((
                (format!("u{u:02}").into(), w),
                Profile::new(ProfileData {
                    embedding: Vector(embedding),
                    anomaly_score: None,
                    history_windows: 0,
                    events: rng.random_range(1..20),
                    authenticated: true,
                    segment: Some(format!("s{}", u % 3)),
                    context: Context::default(),
                    features: Vector(features),
                    demand: Default::default(),
                    windows_embedding: None,
                }),
            ));
        }
    }
    out
}

type PersonaOut = (
    BTreeMap<u64, BTreeSet<(u32, Persona)>>,
    BTreeMap<u64, BTreeSet<(UserWindow, PersonaAssignment)>>,
);

fn run_personas(
    profiles: &[(UserWindow, Profile)],
    config: &PersonaConfig,
    seed: u64,
) -> PersonaOut {
    let personas: Seen<(u32, Persona)> = Arc::default();
    let assignments: Seen<(UserWindow, PersonaAssignment)> = Arc::default();
    let (p, a) = (personas.clone(), assignments.clone());
    let mut shuffled = profiles.to_vec();
    shuffled.shuffle(&mut rng_for(seed, 1, 1));
    let config = config.clone();
    timely::execute(timely::Config::process(2), move |worker| {
        let (p, a, config) = (p.clone(), a.clone(), config.clone());
        let mut input = worker.dataflow::<u64, _, _>(|scope| {
            let (input, profiles) = scope.new_collection::<(UserWindow, Profile), isize>();
            let out = profiles.personas(config, None, None);
            out.personas
                .inspect(move |x| p.lock().unwrap().push(x.clone()));
            out.assignments
                .inspect(move |x| a.lock().unwrap().push(x.clone()));
            input
        });
        // Each worker sends its share, in the shuffled order, at the record's window.
        let me = worker.index();
        for (i, (key, profile)) in shuffled.iter().enumerate() {
            if i % 2 == me {
                input.update_at((key.clone(), profile.clone()), key.1, 1);
            }
        }
        input.close();
    })
    .unwrap();
    let mut out: PersonaOut = Default::default();
    for (d, t, r) in personas.lock().unwrap().drain(..) {
        assert_eq!(r, 1);
        assert!(
            out.0.entry(t).or_default().insert(d),
            "duplicate persona at {t}"
        );
    }
    for (d, t, r) in assignments.lock().unwrap().drain(..) {
        assert_eq!(r, 1);
        assert!(
            out.1.entry(t).or_default().insert(d),
            "duplicate assignment at {t}"
        );
    }
    out
}

fn oracle_personas(profiles: &[(UserWindow, Profile)], config: &PersonaConfig) -> PersonaOut {
    let mut model = PersonaModel::default();
    let mut out: PersonaOut = Default::default();
    for w in 0..WINDOWS {
        let mut window: Vec<(UserWindow, Profile)> =
            profiles.iter().filter(|(k, _)| k.1 == w).cloned().collect();
        window.sort();
        for (persona, members) in window_personas(&mut model, w, &window, config) {
            out.0.entry(w).or_default().insert((persona.id, persona));
            out.1.entry(w).or_default().extend(members);
        }
    }
    out
}

#[test]
fn personas_equal_recomputation_at_every_window() {
    for (seed, k) in [(1, Some(3)), (2, None)] {
        let config = PersonaConfig {
            k,
            reselect_every: 10,
            ..PersonaConfig::default()
        };
        let profiles = random_profiles(seed);
        let got = run_personas(&profiles, &config, seed);
        let want = oracle_personas(&profiles, &config);
        assert_eq!(got.0.len() as u64, WINDOWS, "every window has personas");
        for w in 0..WINDOWS {
            assert_eq!(got.0.get(&w), want.0.get(&w), "personas at window {w}");
            assert_eq!(got.1.get(&w), want.1.get(&w), "assignments at window {w}");
        }
    }
}

#[test]
fn personas_do_not_depend_on_arrival_order() {
    let config = PersonaConfig::default();
    let profiles = random_profiles(3);
    let a = run_personas(&profiles, &config, 10);
    let b = run_personas(&profiles, &config, 11);
    assert_eq!(a, b);
}

fn members(profiles: &[(UserWindow, Profile)]) -> Vec<TimedMember> {
    profiles
        .iter()
        .map(|((user, w), p)| {
            let m = ScopeMember {
                embedding: p.embedding.clone(),
                features: p.features.clone(),
                requests: p.events,
                forecast: Some(Vector(vec![p.events as f32 * 2.0; 4])),
            };
            (
                (
                    (Scope::Segment(p.segment.clone().unwrap()), user.clone()),
                    m,
                ),
                *w,
            )
        })
        .collect()
}

/// Looks 6 windows ahead, past the members' 4 forecast horizons, and carries the onset trend.
fn scaling() -> ScalingConfig {
    ScalingConfig {
        capacity_per_instance: 100.0,
        horizon: 6,
        onset_trend: true,
        ..ScalingConfig::default()
    }
}

#[test]
fn drift_equals_recomputation_at_every_window() {
    // A baseline short enough for the 60 windows of the input.
    let config = DriftConfig {
        baseline: 30,
        recent: 10,
        confirm: 3,
        ..DriftConfig::default()
    };
    let profiles = random_profiles(4);
    let input = members(&profiles);
    let found: Seen<(Scope, DriftEvent)> = Arc::default();
    let f = found.clone();
    let mut shuffled = input.clone();
    shuffled.shuffle(&mut rng_for(4, 1, 1));
    let cfg = config.clone();
    timely::execute(timely::Config::process(2), move |worker| {
        let (f, cfg) = (f.clone(), cfg.clone());
        let mut handle = worker.dataflow::<u64, _, _>(|scope| {
            let (input, members) = scope.new_collection::<((Scope, UserId), ScopeMember), isize>();
            members
                .detect_drift(cfg, scaling(), None, None)
                .inspect(move |x| f.lock().unwrap().push(x.clone()));
            input
        });
        let me = worker.index();
        for (i, (m, w)) in shuffled.iter().enumerate() {
            if i % 2 == me {
                handle.update_at(m.clone(), *w, 1);
            }
        }
        handle.close();
    })
    .unwrap();
    let mut got: BTreeMap<u64, BTreeSet<(Scope, DriftEvent)>> = BTreeMap::new();
    for (d, t, r) in found.lock().unwrap().drain(..) {
        assert_eq!(r, 1);
        got.entry(t).or_default().insert(d);
    }
    let mut state = DriftState::default();
    let mut want: BTreeMap<u64, BTreeSet<(Scope, DriftEvent)>> = BTreeMap::new();
    for w in 0..WINDOWS {
        let mut window: Vec<((Scope, UserId), ScopeMember)> = input
            .iter()
            .filter(|(_, t)| *t == w)
            .map(|(m, _)| m.clone())
            .collect();
        window.sort();
        for e in window_drift(&mut state, w, &window, &config, &scaling()) {
            want.entry(w).or_default().insert((e.scope.clone(), e));
        }
    }
    for w in 0..WINDOWS {
        assert_eq!(got.get(&w), want.get(&w), "drift at window {w}");
    }
    // The moved segment (s1, shifted at window 45) is detected, with onset 45.
    let s1: Vec<&DriftEvent> = want
        .values()
        .flatten()
        .filter(|(s, _)| *s == Scope::Segment("s1".into()))
        .map(|(_, e)| e)
        .collect();
    assert!(s1.iter().any(|e| e.onset == 45), "{s1:?}");
    // The recommendations are sized from forecasts calibrated on the segment's past windows,
    // for an upper bound above the expected demand.
    for e in s1 {
        assert!(e.calibration_residuals >= 10, "{e:?}");
        assert_eq!(e.predicted_requests.len(), 6, "{e:?}");
        assert!(e.trend.0 >= 0.0, "{e:?}");
        let pairs = e.predicted_requests.0.iter().zip(&e.upper_requests.0);
        assert!(pairs.into_iter().all(|(p, u)| p <= u), "{e:?}");
    }
}

/// Seeded persona assignments of 40 users, each active in a window with probability 0.7 and
/// assigned one of 4 personas at random.
fn random_assignments(seed: u64) -> Vec<((UserWindow, u32), u64)> {
    let mut rng = rng_for(seed, 0, 0);
    let mut input = Vec::new();
    for w in 0..WINDOWS {
        for u in 0..40 {
            if rng.random_range(0.0..1.0) < 0.3 {
                continue;
            }
            input.push((((format!("u{u:02}").into(), w), rng.random_range(0..4)), w));
        }
    }
    input
}

#[test]
fn pinned_personas_equal_recomputation_at_every_window() {
    let input = random_assignments(9);
    let pin = 7;
    let seen: Seen<(UserWindow, u32)> = Arc::default();
    let s = seen.clone();
    let mut shuffled = input.clone();
    shuffled.shuffle(&mut rng_for(9, 1, 1));
    timely::execute(timely::Config::process(2), move |worker| {
        let s = s.clone();
        let mut handle = worker.dataflow::<u64, _, _>(|scope| {
            let (input, assignments) = scope.new_collection::<(UserWindow, u32), isize>();
            assignments
                .pin_personas(pin, None, None)
                .inspect(move |x| s.lock().unwrap().push(x.clone()));
            input
        });
        let me = worker.index();
        for (i, (a, w)) in shuffled.iter().enumerate() {
            if i % 2 == me {
                handle.update_at(a.clone(), *w, 1);
            }
        }
        handle.close();
    })
    .unwrap();
    let mut got: BTreeMap<u64, BTreeSet<(UserId, u32)>> = BTreeMap::new();
    for (((user, w), p), t, r) in seen.lock().unwrap().drain(..) {
        assert_eq!((r, w), (1, t));
        got.entry(t).or_default().insert((user, p));
    }
    let mut state = PinState::default();
    let mut changed = 0;
    for w in 0..WINDOWS {
        let mut window: Vec<(UserId, u32)> = input
            .iter()
            .filter(|(_, t)| *t == w)
            .map(|(((u, _), p), _)| (u.clone(), *p))
            .collect();
        window.sort();
        let want: BTreeSet<(UserId, u32)> = pin_window(&mut state, w, &window, pin)
            .into_iter()
            .collect();
        changed += want.iter().filter(|x| !window.contains(x)).count();
        assert_eq!(
            got.remove(&w).unwrap_or_default(),
            want,
            "pins at window {w}"
        );
    }
    assert!(got.is_empty());
    // The pins are not the assignments: random re-assignment is held back.
    assert!(changed > 100, "{changed}");
}

/// Outputs of a run, by window, rendered as text (so one harness serves every operator).
type ByWindow = BTreeMap<u64, BTreeSet<String>>;

/// Runs the dataflow `build` makes on `peers` workers over `input` (records at their window,
/// shuffled by `seed`, each sent by one worker). `build` gets the worker and the place to
/// record outputs, and returns its input and its operator's snapshots. Returns the outputs by
/// window and each worker's state as of the end of window `through`.
fn run_resumable<D, S, F>(
    peers: usize,
    input: &[(D, u64)],
    seed: u64,
    through: u64,
    build: F,
) -> (ByWindow, Vec<Option<S>>)
where
    D: Clone + Ord + Send + Sync + 'static + std::fmt::Debug,
    S: Clone + Send + 'static,
    F: Fn(&mut timely::worker::Worker, Seen<String>) -> (InputSession<u64, D, isize>, Snapshots<S>)
        + Send
        + Sync
        + 'static,
{
    let seen: Seen<String> = Arc::default();
    let states: Arc<Mutex<BTreeMap<usize, Option<S>>>> = Arc::default();
    let mut shuffled = input.to_vec();
    shuffled.shuffle(&mut rng_for(seed, 1, 1));
    let (s, st) = (seen.clone(), states.clone());
    timely::execute(timely::Config::process(peers), move |worker| {
        let (mut handle, snapshots) = build(worker, s.clone());
        let me = worker.index();
        for (i, (d, w)) in shuffled.iter().enumerate() {
            if i % peers == me {
                handle.update_at(d.clone(), *w, 1);
            }
        }
        handle.close();
        while worker.step() {}
        st.lock()
            .unwrap()
            .insert(me, state_through(&snapshots, through));
    })
    .unwrap();
    let mut out = ByWindow::new();
    for (d, t, r) in seen.lock().unwrap().drain(..) {
        assert_eq!(r, 1);
        assert!(out.entry(t).or_default().insert(d), "duplicate at {t}");
    }
    let states = std::mem::take(&mut *states.lock().unwrap());
    (out, states.into_values().collect())
}

/// Where the resume tests stop the first run and start the second.
const RESUME_AFTER: u64 = 31;

/// A run resumed from the state of an uninterrupted run as of `RESUME_AFTER`, fed the whole
/// input again (as the continuous job replays history), writes nothing up to it and exactly
/// the uninterrupted outputs after it.
fn assert_resumes_exactly(whole: &ByWindow, resumed: &ByWindow) {
    for w in 0..=RESUME_AFTER {
        assert_eq!(resumed.get(&w), None, "window {w} is before the resume");
    }
    let after = |m: &ByWindow| m.range(RESUME_AFTER + 1..).count();
    assert!(
        after(whole) > 20,
        "the uninterrupted run has outputs after the resume"
    );
    for w in RESUME_AFTER + 1..WINDOWS {
        assert_eq!(resumed.get(&w), whole.get(&w), "window {w}");
    }
}

#[test]
fn personas_resume_exactly_from_a_snapshot_on_another_number_of_workers() {
    let config = PersonaConfig {
        reselect_every: 10,
        ..PersonaConfig::default()
    };
    let input: Vec<((UserWindow, Profile), u64)> = random_profiles(5)
        .into_iter()
        .map(|(k, p)| ((k.clone(), p), k.1))
        .collect();
    let build = |initial: Option<(u64, PersonaModel)>| {
        let config = config.clone();
        move |worker: &mut timely::worker::Worker, seen: Seen<String>| {
            let snapshots = Snapshots::default();
            let mine = worker.index() == model_worker(worker.peers());
            let initial = initial.clone().filter(|_| mine);
            let (config, s) = (config.clone(), snapshots.clone());
            let input = worker.dataflow::<u64, _, _>(|scope| {
                let (input, profiles) = scope.new_collection::<(UserWindow, Profile), isize>();
                let out = profiles.personas(config, initial, Some(s));
                let text = out
                    .personas
                    .map(|p| format!("{p:?}"))
                    .concat(out.assignments.map(|a| format!("{a:?}")));
                text.inspect(move |x| seen.lock().unwrap().push(x.clone()));
                input
            });
            (input, snapshots)
        }
    };
    let (whole, states) = run_resumable(2, &input, 5, RESUME_AFTER, build(None));
    let models: Vec<PersonaModel> = states.into_iter().flatten().collect();
    assert_eq!(models.len(), 1, "one worker carries the model");
    let model = models[0].clone();
    assert!(!model.centroids.is_empty());
    let (resumed, states) = run_resumable(
        3,
        &input,
        6,
        RESUME_AFTER,
        build(Some((RESUME_AFTER, model.clone()))),
    );
    assert_resumes_exactly(&whole, &resumed);
    // The resumed run's state at the resume is the one it was given.
    assert_eq!(
        states.into_iter().flatten().collect::<Vec<_>>(),
        vec![model]
    );
}

#[test]
fn drift_resumes_exactly_from_snapshots_on_another_number_of_workers() {
    let config = DriftConfig {
        baseline: 20,
        recent: 8,
        confirm: 3,
        ..DriftConfig::default()
    };
    let input = members(&random_profiles(7));
    let build = |initial: Option<(u64, DriftState)>| {
        let config = config.clone();
        move |worker: &mut timely::worker::Worker, seen: Seen<String>| {
            let snapshots = Snapshots::default();
            let (index, peers) = (worker.index(), worker.peers());
            let initial = initial
                .as_ref()
                .map(|(w, s)| (*w, s.owned_by(index, peers)));
            let (config, s) = (config.clone(), snapshots.clone());
            let input = worker.dataflow::<u64, _, _>(|scope| {
                let (input, members) =
                    scope.new_collection::<((Scope, UserId), ScopeMember), isize>();
                members
                    .detect_drift(config, scaling(), initial, Some(s))
                    .inspect(move |(e, t, r)| {
                        seen.lock().unwrap().push((format!("{e:?}"), *t, *r))
                    });
                input
            });
            (input, snapshots)
        }
    };
    let (whole, states) = run_resumable(2, &input, 7, RESUME_AFTER, build(None));
    let state = DriftState::merge(states.into_iter().flatten()).unwrap();
    assert_eq!(state.detectors.len(), 3, "every segment has a detector");
    let (resumed, states) = run_resumable(
        3,
        &input,
        8,
        RESUME_AFTER,
        build(Some((RESUME_AFTER, state.clone()))),
    );
    // Drift is found after the resume (the shift at window 45): the comparison is not vacuous.
    assert!(whole
        .range(RESUME_AFTER + 1..)
        .any(|(_, es)| !es.is_empty()));
    for w in RESUME_AFTER + 1..WINDOWS {
        assert_eq!(resumed.get(&w), whole.get(&w), "drift at window {w}");
    }
    assert!(resumed.range(..=RESUME_AFTER).next().is_none());
    let parts: Vec<DriftState> = states.into_iter().flatten().collect();
    assert_eq!(DriftState::merge(parts).unwrap(), state);
}

#[test]
fn pins_resume_exactly_from_snapshots_on_another_number_of_workers() {
    let input = random_assignments(12);
    let build = |initial: Option<(u64, PinState)>| {
        move |worker: &mut timely::worker::Worker, seen: Seen<String>| {
            let snapshots = Snapshots::default();
            let (index, peers) = (worker.index(), worker.peers());
            let initial = initial
                .as_ref()
                .map(|(w, s)| (*w, s.owned_by(index, peers)));
            let s = snapshots.clone();
            let input = worker.dataflow::<u64, _, _>(|scope| {
                let (input, assignments) = scope.new_collection::<(UserWindow, u32), isize>();
                assignments
                    .pin_personas(7, initial, Some(s))
                    .inspect(move |(p, t, r)| {
                        seen.lock().unwrap().push((format!("{p:?}"), *t, *r))
                    });
                input
            });
            (input, snapshots)
        }
    };
    let (whole, states) = run_resumable(2, &input, 12, RESUME_AFTER, build(None));
    let state = PinState::merge(states.into_iter().flatten()).unwrap();
    assert!(state.pins.len() > 30);
    let (resumed, states) = run_resumable(
        3,
        &input,
        13,
        RESUME_AFTER,
        build(Some((RESUME_AFTER, state.clone()))),
    );
    assert_resumes_exactly(&whole, &resumed);
    assert_eq!(
        PinState::merge(states.into_iter().flatten()).unwrap(),
        state
    );
}
