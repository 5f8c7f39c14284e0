//! Oracle tests: the incremental dataflow, fed seeded random events that arrive out of order
//! (within a bound) on two workers, must equal a from-scratch recomputation from the raw events
//! at every window, for window features, sequences, profiles, segment profiles, resonance,
//! demand forecasts and forecast errors.

use personaflow_operators::embed::{Embedder, StandardisedEmbedder};
use personaflow_operators::forecast::{Forecast, ForecastResidual, PersistenceForecaster};
use personaflow_operators::ops::advance::advance_input;
use personaflow_operators::ops::*;
use personaflow_operators::resonance::{resonance, Resonance, ResonanceConfig};
use personaflow_operators::segments::{SegmentSum, SegmentTable};
use personaflow_operators::sequences::{build_sequence, Sequence};
use personaflow_operators::vector::Score;
use personaflow_operators::window::features::{WindowAgg, WindowSummary};
use personaflow_operators::{Event, WindowSpec};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use support::{arrival_order, out_of_order, RandomEvents, SEGMENTS};
use timely::dataflow::operators::Input;

mod support;

struct Params {
    seed: u64,
    users: usize,
    windows: u64,
    events: usize,
    disorder: u64,
    seq_len: usize,
    segment_window: u64,
    horizon: usize,
    /// Windows sent at one input time: the input's time moves only to a multiple of it (1: a
    /// window at a time), as a feeder that sends runs of windows at one time does.
    run: u64,
}

fn random_events(p: &Params, spec: &WindowSpec) -> Vec<Event> {
    RandomEvents {
        seed: p.seed,
        users: p.users,
        windows: p.windows,
        events: p.events,
        session_windows: 5,
    }
    .draw(spec)
}

type Updates<D> = Arc<Mutex<Vec<(D, u64, isize)>>>;
/// Windows handed to a sink after the frontier it was told of, with that frontier.
type Late = Arc<Mutex<Vec<(u64, Option<u64>)>>>;

struct Captured {
    summaries: Updates<(UserWindow, WindowSummary)>,
    sequences: Updates<(UserWindow, Sequence)>,
    profiles: Updates<(UserWindow, Profile)>,
    segments: Updates<(String, SegmentSum)>,
    resonance: Updates<(UserWindow, Resonance)>,
    forecasts: Updates<(UserWindow, Forecast)>,
    forecast_errors: Updates<(UserWindow, ForecastResidual)>,
    /// The same errors handed to a sink (`forecast_error_by_into`), at their target windows.
    errors_into: Updates<(UserWindow, ForecastResidual)>,
    /// Windows a sink was handed after it had been told of a frontier past them.
    late: Late,
}

/// Records what `forecast_error_by_into` hands it, and any window handed over after the
/// frontier it was told of passed it (`None`: after the end).
struct IntoSink {
    out: Updates<(UserWindow, ForecastResidual)>,
    late: Late,
    frontier: Option<Option<u64>>,
}

impl ScoredSink<ForecastResidual> for IntoSink {
    fn window(&mut self, window: u64, facts: Vec<(UserWindow, ForecastResidual)>) {
        if let Some(f) = self.frontier {
            if f.is_none_or(|f| window < f) {
                self.late.lock().unwrap().push((window, f));
            }
        }
        let mut out = self.out.lock().unwrap();
        out.extend(facts.into_iter().map(|fact| (fact, window, 1)));
    }
    fn frontier(&mut self, frontier: Option<u64>) {
        self.frontier = Some(frontier);
    }
}

fn run_dataflow(
    p: &Params,
    spec: WindowSpec,
    arrival: Vec<Event>,
    cfg: ResonanceConfig,
) -> Captured {
    let cap = Captured {
        summaries: Default::default(),
        sequences: Default::default(),
        profiles: Default::default(),
        segments: Default::default(),
        resonance: Default::default(),
        forecasts: Default::default(),
        forecast_errors: Default::default(),
        errors_into: Default::default(),
        late: Default::default(),
    };
    let (into_c, late_c) = (cap.errors_into.clone(), cap.late.clone());
    let (sum_c, seq_c, prof_c, seg_c, res_c, fc_c, fe_c) = (
        cap.summaries.clone(),
        cap.sequences.clone(),
        cap.profiles.clone(),
        cap.segments.clone(),
        cap.resonance.clone(),
        cap.forecasts.clone(),
        cap.forecast_errors.clone(),
    );
    let (seq_len, segment_window, disorder, horizon, run) = (
        p.seq_len,
        p.segment_window,
        p.disorder,
        p.horizon,
        p.run.max(1),
    );
    timely::execute(timely::Config::process(2), move |worker| {
        fn tap<D: Clone + 'static>(c: &Updates<D>) -> impl FnMut(&(D, u64, isize)) + 'static {
            let c = c.clone();
            move |u| c.lock().unwrap().push(u.clone())
        }
        let (sum_c, seq_c, prof_c, seg_c, res_c, fc_c, fe_c) = (
            sum_c.clone(),
            seq_c.clone(),
            prof_c.clone(),
            seg_c.clone(),
            res_c.clone(),
            fc_c.clone(),
            fe_c.clone(),
        );
        let (into_c, late_c) = (into_c.clone(), late_c.clone());
        let cfg = cfg.clone();
        // The outputs' frontier, for the flow control of `advance_input`.
        let probe = timely::dataflow::ProbeHandle::new();
        let p = probe.clone();
        let mut input = worker.dataflow::<u64, _, _>(move |scope| {
            let (input, events) = scope.new_input::<Vec<Event>>();
            let summaries = events.window_aggregate(spec).inspect(tap(&sum_c));
            let sequences = summaries.sequences(seq_len).inspect(tap(&seq_c));
            let forecaster = PersistenceForecaster::try_new(horizon).unwrap();
            let forecasts = sequences
                .clone()
                .forecast_demand(Box::new(forecaster), 5, ErrorSlot::default())
                .inspect(tap(&fc_c));
            forecasts
                .clone()
                .forecast_error(sequences.clone())
                .inspect(tap(&fe_c))
                .probe_with(&p);
            let sink = IntoSink {
                out: into_c,
                late: late_c,
                frontier: None,
            };
            forecasts.forecast_error_by_into(
                sequences.clone(),
                |f| (f, ()),
                |e, _| e,
                Box::new(sink),
            );
            let profiles = sequences
                .embed_profiles(
                    Box::new(StandardisedEmbedder::default()),
                    7,
                    ErrorSlot::default(),
                )
                .inspect(tap(&prof_c));
            let segments = profiles
                .clone()
                .segment_profiles(segment_window)
                .inspect(tap(&seg_c));
            profiles
                .resonance(segments, cfg)
                .inspect(tap(&res_c))
                .probe_with(&p);
            input
        });
        let (index, peers) = (worker.index(), worker.peers());
        let mut max_seen = 0u64;
        for (i, e) in arrival.iter().enumerate() {
            let w = spec.index(e.ts_ms).unwrap();
            max_seen = max_seen.max(w);
            let epoch = max_seen.saturating_sub(disorder);
            assert!(w >= epoch, "arrival order respects the disorder bound");
            advance_input(worker, &mut input, &probe, epoch / run * run, &|| false);
            if i % peers == index {
                input.send(e.clone());
            }
        }
    })
    .unwrap();
    cap
}

/// The collection's contents at each time `0..=until`, from its updates.
fn states<D: Ord + Clone>(updates: &Updates<D>, until: u64) -> Vec<BTreeSet<D>> {
    let mut by_time: BTreeMap<u64, Vec<(D, isize)>> = BTreeMap::new();
    for (d, t, r) in updates.lock().unwrap().iter() {
        by_time.entry(*t).or_default().push((d.clone(), *r));
    }
    let mut acc: BTreeMap<D, isize> = BTreeMap::new();
    let mut out = Vec::new();
    for t in 0..=until {
        for (d, r) in by_time.remove(&t).unwrap_or_default() {
            *acc.entry(d).or_default() += r;
        }
        acc.retain(|_, r| *r != 0);
        assert!(
            acc.values().all(|r| *r == 1),
            "every record is present once at time {t}"
        );
        out.push(acc.keys().cloned().collect());
    }
    assert!(by_time.keys().all(|t| *t > until));
    out
}

struct Oracle {
    summaries: Vec<BTreeSet<(UserWindow, WindowSummary)>>,
    sequences: Vec<BTreeSet<(UserWindow, Sequence)>>,
    profiles: Vec<BTreeSet<(UserWindow, Profile)>>,
    segments: Vec<BTreeSet<(String, SegmentSum)>>,
    resonance: Vec<BTreeSet<(UserWindow, Resonance)>>,
    /// All updates, sorted.
    forecasts: Vec<((UserWindow, Forecast), u64, isize)>,
    /// All updates, sorted.
    forecast_errors: Vec<((UserWindow, ForecastResidual), u64, isize)>,
}

/// Recomputes everything from scratch at every time, from the raw events.
fn oracle(
    events: &[Event],
    p: &Params,
    spec: &WindowSpec,
    cfg: &ResonanceConfig,
    until: u64,
) -> Oracle {
    let mut aggs: BTreeMap<UserWindow, WindowAgg> = BTreeMap::new();
    for e in events {
        let key = (e.user_id.as_str().into(), spec.index(e.ts_ms).unwrap());
        aggs.entry(key).or_insert_with(WindowAgg::empty).add(e);
    }
    let all: BTreeMap<UserWindow, WindowSummary> = aggs
        .iter()
        .map(|(k, a)| (k.clone(), WindowSummary::new(a, k.1, spec)))
        .collect();
    let mut embedder = StandardisedEmbedder::default();
    let mut o = Oracle {
        summaries: vec![],
        sequences: vec![],
        profiles: vec![],
        segments: vec![],
        resonance: vec![],
        forecasts: vec![],
        forecast_errors: vec![],
    };
    // Persistence: every window of a user's forecast repeats the user's demand in its window;
    // each forecast is scored against every window it covers, up to the last window with data.
    let last_window = all.keys().map(|(_, w)| *w).max().unwrap();
    let demand = |key: &UserWindow| all.get(key).map_or((0, 0), |s| (s.events, s.bytes));
    for ((user, w), s) in &all {
        let (requests, bytes) = (Score(s.events as f32), Score(s.bytes as f32));
        let forecast = Forecast {
            requests: vec![requests; p.horizon],
            bytes: vec![bytes; p.horizon],
        };
        o.forecasts.push((((user.clone(), *w), forecast), *w, 1));
        for h in 1..=p.horizon as u64 {
            let target = w + h;
            if target > last_window {
                break;
            }
            let (actual_requests, actual_bytes) = demand(&(user.clone(), target));
            let error = ForecastResidual {
                made_at: *w,
                horizon: h as u32,
                predicted_requests: requests,
                actual_requests,
                predicted_bytes: bytes,
                actual_bytes,
            };
            o.forecast_errors
                .push((((user.clone(), target), error), target, 1));
        }
    }
    o.forecasts.sort();
    o.forecast_errors.sort();
    let mut profiles_by_window: BTreeMap<u64, Vec<(UserWindow, Profile)>> = BTreeMap::new();
    for t in 0..=until {
        o.summaries.push(
            all.iter()
                .filter(|(k, _)| k.1 <= t)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        );
        let mut seqs = BTreeSet::new();
        for ((user, w), _) in all.iter().filter(|(k, _)| k.1 == t) {
            let history: Vec<(u64, &WindowSummary)> = all
                .iter()
                .filter(|(k, _)| &k.0 == user && k.1 <= t)
                .map(|(k, s)| (k.1, s))
                .collect();
            seqs.insert((
                (user.clone(), *w),
                build_sequence(t, p.seq_len, &history).unwrap(),
            ));
        }
        let mut profiles = Vec::new();
        for (key, seq) in &seqs {
            let e = embedder.embed_batch(&[seq]).unwrap().remove(0);
            profiles.push((
                key.clone(),
                Profile::new(ProfileData {
                    embedding: e.vector.into(),
                    anomaly_score: None,
                    history_windows: seq.history_windows,
                    events: seq.events,
                    authenticated: seq.authenticated,
                    segment: seq.segment.clone(),
                    context: seq.context.clone(),
                    features: seq.current().to_vec().into(),
                    demand: seq.demand.clone(),
                    windows_embedding: None,
                }),
            ));
        }
        profiles_by_window.insert(t, profiles.clone());
        // Sequences are facts: each stays from its window on.
        let mut all_seqs = o.sequences.last().cloned().unwrap_or_default();
        all_seqs.extend(seqs);
        o.sequences.push(all_seqs);
        o.profiles.push(
            profiles_by_window
                .range(..=t)
                .flat_map(|(_, v)| v.iter().cloned())
                .collect(),
        );
        let mut sums: BTreeMap<String, SegmentSum> = BTreeMap::new();
        let from = (t + 1).saturating_sub(p.segment_window);
        for (_, prof) in profiles_by_window
            .range(from..=t)
            .flat_map(|(_, v)| v.iter())
        {
            if let (true, Some(seg)) = (prof.authenticated, &prof.segment) {
                let one = SegmentSum::of_profile(prof.embedding.as_slice(), &prof.context);
                use differential_dataflow::difference::Semigroup;
                sums.entry(seg.clone()).or_default().plus_equals(&one);
            }
        }
        let table = SegmentTable::from_sums(
            sums.iter().map(|(s, v)| (s.as_str(), v)),
            cfg.min_segment_profiles,
        );
        let mut scored = o.resonance.last().cloned().unwrap_or_default();
        scored.extend(profiles.iter().filter_map(|(key, prof)| {
            resonance(
                t,
                prof.embedding.as_slice(),
                prof.history_windows,
                &prof.context,
                &table,
                cfg,
            )
            .map(|r| (key.clone(), r))
        }));
        o.resonance.push(scored);
        o.segments.push(sums.into_iter().collect());
    }
    o
}

fn check(p: Params) {
    let spec = WindowSpec::default();
    let cfg = ResonanceConfig::default();
    let events = random_events(&p, &spec);
    let arrival = arrival_order(&events, p.seed, p.disorder, &spec);
    assert!(
        out_of_order(&arrival),
        "the input really arrives out of order"
    );
    let until = p.windows + p.segment_window.max(p.seq_len as u64) + 2;
    let got = run_dataflow(&p, spec, arrival, cfg.clone());
    let want = oracle(&events, &p, &spec, &cfg, until);
    let got_sum = states(&got.summaries, until);
    let got_seq = states(&got.sequences, until);
    let got_prof = states(&got.profiles, until);
    let got_seg = states(&got.segments, until);
    // Profiles and resonance are facts: every update is a single insertion, never a transient
    // correction that a consumer reading one window at a time would have to net out.
    for (name, ok) in [
        (
            "profiles",
            got.profiles.lock().unwrap().iter().all(|u| u.2 == 1),
        ),
        (
            "resonance",
            got.resonance.lock().unwrap().iter().all(|u| u.2 == 1),
        ),
    ] {
        assert!(ok, "{name} had updates other than single insertions");
    }
    let got_res = states(&got.resonance, until);
    let mut resonated = 0;
    for t in 0..=until as usize {
        assert_eq!(
            got_sum[t], want.summaries[t],
            "window features differ at window {t}"
        );
        assert_eq!(
            got_seq[t], want.sequences[t],
            "sequences differ at window {t}"
        );
        assert_eq!(
            got_prof[t], want.profiles[t],
            "profiles differ at window {t}"
        );
        assert_eq!(
            got_seg[t], want.segments[t],
            "segment profiles differ at window {t}"
        );
        assert_eq!(
            got_res[t], want.resonance[t],
            "resonance differs at window {t}"
        );
        resonated = got_res[t].len();
    }
    // The test is only meaningful if every stage produced something and state expired.
    assert!(want.summaries[p.windows as usize].len() > p.users);
    assert!(
        resonated > p.users,
        "resonance was computed for many user-windows"
    );
    assert!(want.segments.iter().any(|s| s.len() == SEGMENTS.len()));
    assert!(
        got_seg[until as usize].is_empty(),
        "segment profiles expire after W windows"
    );
    assert!(
        got_seq[until as usize].len() > p.users,
        "sequences were built for many user-windows"
    );
    check_updates("forecasts", &got.forecasts, &want.forecasts);
    check_updates(
        "forecast errors",
        &got.forecast_errors,
        &want.forecast_errors,
    );
    check_updates(
        "forecast errors handed to a sink",
        &got.errors_into,
        &want.forecast_errors,
    );
    let late = got.late.lock().unwrap();
    assert!(
        late.is_empty(),
        "windows handed over past the frontier: {late:?}"
    );
    // Meaningful only if forecasts were scored against both active and inactive windows, and
    // some targets fell after the last window with data.
    let errors = &want.forecast_errors;
    assert!(errors.iter().any(|((_, e), _, _)| e.actual_requests == 0));
    assert!(errors.iter().any(|((_, e), _, _)| e.actual_requests > 0));
    assert!(errors.len() < want.forecasts.len() * p.horizon);
}

/// The captured updates equal `want` (sorted) as multisets of (record, time, diff), window by
/// window.
fn check_updates<D: Ord + Clone + std::fmt::Debug>(
    name: &str,
    got: &Updates<D>,
    want: &[(D, u64, isize)],
) {
    let mut got = got.lock().unwrap().clone();
    got.sort();
    let at = |updates: &[(D, u64, isize)], t: u64| -> Vec<(D, u64, isize)> {
        updates.iter().filter(|u| u.1 == t).cloned().collect()
    };
    let last = got.iter().chain(want).map(|u| u.1).max().unwrap_or(0);
    for t in 0..=last {
        assert_eq!(at(&got, t), at(want, t), "{name} differ at window {t}");
    }
    assert_eq!(got, want, "{name} differ");
    assert!(!want.is_empty(), "{name}: nothing to compare");
}

/// 24 users over 40 windows, 1,500 events arriving up to 3 windows out of order, the input's
/// time moved only to multiples of `run` windows.
fn dense(seed: u64, run: u64) -> Params {
    Params {
        seed,
        users: 24,
        windows: 40,
        events: 1_500,
        disorder: 3,
        seq_len: 4,
        segment_window: 10,
        horizon: personaflow_operators::forecast::DEFAULT_FORECAST_HORIZON,
        run,
    }
}

#[test]
fn incremental_equals_recomputation_at_every_window() {
    check(dense(7, 1));
}

/// The events of runs of windows sent at one input time (a backfill's driver does): every
/// collection still equals the recomputation at every window.
#[test]
fn incremental_equals_recomputation_with_runs_of_windows_at_one_time() {
    for (seed, run) in [(8, 4), (9, 16)] {
        check(dense(seed, run));
    }
}

#[test]
fn incremental_equals_recomputation_with_long_windows_and_sparse_users() {
    check(Params {
        seed: 1234,
        users: 60,
        windows: 30,
        events: 600,
        disorder: 5,
        seq_len: 16,
        segment_window: 60,
        horizon: 7,
        run: 1,
    });
}

#[test]
fn forecasts_and_errors_equal_recomputation_with_horizon_past_the_end() {
    check(Params {
        seed: 99,
        users: 18,
        windows: 14,
        events: 400,
        disorder: 4,
        seq_len: 4,
        segment_window: 8,
        horizon: 20,
        run: 1,
    });
}
