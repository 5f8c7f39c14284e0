//! Oracle test of the policies operator: seeded random policy parts (profiles with anomaly
//! scores and demand, resonance, forecasts, persona probabilities), on two workers in a seeded
//! random order, against a from-scratch recomputation with the plain functions (`blend`,
//! `socket_profile`, and the risk quantile counted afresh over each segment's last
//! `risk_windows` windows), compared at every window; the parts fed as one collection and as
//! one collection per kind of part (as the pipeline's graph feeds them).

use differential_dataflow::input::Input;
use personaflow_operators::forecast::Forecast;
use personaflow_operators::ops::{ShapePolicies, UserWindow};
use personaflow_operators::policies::blend::{blend, persona_distribution, DemandOutlook};
use personaflow_operators::policies::catalogue::PersonaCatalogue;
use personaflow_operators::policies::operator::{policies_from, PolicyInput};
use personaflow_operators::policies::socket::socket_profile;
use personaflow_operators::policies::{PolicyConfig, PolicyPart, Shaped, WindowDemand};
use personaflow_operators::vector::Score;
use personaflow_operators::WindowSpec;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

const WINDOWS: u64 = 40;
const USERS: usize = 40;
const SEGMENTS: [&str; 3] = ["gamer", "video", "web"];

/// A policy fact.
type Fact = (UserWindow, Shaped);
type Out = BTreeMap<u64, BTreeSet<Fact>>;

fn random_parts(seed: u64) -> Vec<(UserWindow, PolicyPart)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut parts = Vec::new();
    for w in 0..WINDOWS {
        for u in 0..USERS {
            if rng.random_bool(0.3) {
                continue;
            }
            let key = (format!("u{u:02}").into(), w);
            let known = (u % 4 == 0).then(|| SEGMENTS[u % 3].to_string());
            parts.push((
                key.clone(),
                PolicyPart::Profile {
                    anomaly_score: rng
                        .random_bool(0.9)
                        .then(|| Score((rng.random_range(0..40) as f32) / 8.0)),
                    segment: known,
                    events: rng.random_range(1..50),
                    demand: WindowDemand {
                        bytes_in: rng.random_range(0..50_000_000),
                        bytes_out: rng.random_range(0..5_000_000),
                        latency_mean_us: rng
                            .random_bool(0.8)
                            .then(|| rng.random_range(1_000..900_000)),
                        requests: [
                            rng.random_range(0..5),
                            rng.random_range(0..5),
                            rng.random_range(0..5),
                            rng.random_range(0..5),
                        ],
                    },
                },
            ));
            if rng.random_bool(0.8) {
                let raw: Vec<f32> = SEGMENTS
                    .iter()
                    .map(|_| rng.random_range(0.01..1.0))
                    .collect();
                let total: f32 = raw.iter().sum();
                let scores: Vec<(std::sync::Arc<str>, Score)> = SEGMENTS
                    .iter()
                    .zip(&raw)
                    .map(|(s, p)| ((*s).into(), Score(p / total)))
                    .collect();
                let top = scores
                    .iter()
                    .max_by(|a, b| a.1.cmp(&b.1))
                    .map(|s| s.0.clone())
                    .unwrap();
                parts.push((key.clone(), PolicyPart::Resonance { scores, top }));
            } else if rng.random_bool(0.5) {
                parts.push((
                    key.clone(),
                    PolicyPart::Personas(vec![(0, Score(0.6)), (1, Score(0.4))]),
                ));
            }
            if rng.random_bool(0.7) {
                let h = 4;
                let requests: Vec<f32> = (0..h).map(|_| rng.random_range(0.0..60.0)).collect();
                let bytes: Vec<f32> = (0..h).map(|_| rng.random_range(0.0..6e7)).collect();
                parts.push((
                    key,
                    PolicyPart::Forecast(Forecast::try_new(requests, bytes).unwrap()),
                ));
            }
        }
    }
    parts
}

fn catalogue() -> PersonaCatalogue {
    let mut c = PersonaCatalogue::example();
    let mut video = c.personas["gamer"].clone();
    video.diffserv_class = "multimedia-streaming".into();
    video.dscp = 26;
    video.bandwidth.ceiling_kbps = 80_000.0;
    c.personas.insert("video".into(), video);
    c.mapping.segments.insert("video".into(), "video".into());
    c.mapping.personas.insert("1".into(), "gamer".into());
    c.validate().unwrap();
    c
}

/// How the parts reach the policies operator: one collection of parts (`policies`), or one
/// collection per kind of part (`policies_from`, as the pipeline's graph feeds it).
#[derive(Clone, Copy, Debug)]
enum Inputs {
    One,
    ByKind,
}

/// The kind of a part: the input it goes to with [`Inputs::ByKind`].
fn kind(p: &PolicyPart) -> usize {
    match p {
        PolicyPart::Profile { .. } => 0,
        PolicyPart::Resonance { .. } => 1,
        PolicyPart::Personas(_) => 2,
        PolicyPart::Forecast(_) => 3,
    }
}

fn run(parts: &[(UserWindow, PolicyPart)], config: &PolicyConfig, seed: u64, how: Inputs) -> Out {
    let seen: Arc<Mutex<Vec<(Fact, u64, isize)>>> = Arc::default();
    let s = seen.clone();
    let mut shuffled = parts.to_vec();
    shuffled.shuffle(&mut ChaCha8Rng::seed_from_u64(seed + 1));
    let config = config.clone();
    let catalogue = Arc::new(catalogue());
    timely::execute(timely::Config::process(2), move |worker| {
        let (s, config, catalogue) = (s.clone(), config.clone(), catalogue.clone());
        let mut inputs = worker.dataflow::<u64, _, _>(|scope| {
            let spec = WindowSpec::default();
            let (inputs, policies) = match how {
                Inputs::One => {
                    let (input, parts) = scope.new_collection::<(UserWindow, PolicyPart), isize>();
                    (vec![input], parts.policies(catalogue, config, spec))
                }
                Inputs::ByKind => {
                    let (inputs, parts): (Vec<_>, Vec<_>) = (0..4)
                        .map(|_| {
                            let (input, parts) =
                                scope.new_collection::<(UserWindow, PolicyPart), isize>();
                            (input, PolicyInput::new(parts))
                        })
                        .unzip();
                    (inputs, policies_from(parts, catalogue, config, spec))
                }
            };
            policies.inspect(move |x| s.lock().unwrap().push(x.clone()));
            inputs
        });
        // Window by window, each worker its share of the parts; then the inputs advance past
        // the window in a seeded random order with a few steps between them, so that one kind
        // of part can be complete for a window while another is still on its way.
        let me = worker.index();
        let mut rng = ChaCha8Rng::seed_from_u64(seed + 2 + me as u64);
        for w in 0..WINDOWS {
            for (i, (key, part)) in shuffled.iter().enumerate() {
                if i % 2 == me && key.1 == w {
                    let input = match how {
                        Inputs::One => 0,
                        Inputs::ByKind => kind(part),
                    };
                    inputs[input].update_at((key.clone(), part.clone()), w, 1);
                }
            }
            let mut order: Vec<usize> = (0..inputs.len()).collect();
            order.shuffle(&mut rng);
            for i in order {
                inputs[i].advance_to(w + 1);
                inputs[i].flush();
                for _ in 0..rng.random_range(0..4) {
                    worker.step();
                }
            }
        }
        inputs.into_iter().for_each(|i| i.close());
    })
    .unwrap();
    let mut out = Out::new();
    for (d, t, r) in seen.lock().unwrap().drain(..) {
        assert_eq!(r, 1);
        assert_eq!(t, (d.0).1, "a policy is a fact at its window");
        assert!(out.entry(t).or_default().insert(d), "duplicate at {t}");
    }
    out
}

fn oracle(parts: &[(UserWindow, PolicyPart)], config: &PolicyConfig) -> Out {
    let catalogue = catalogue();
    let secs = WindowSpec::default().len_ms() as f64 / 1e3;
    // (segment, window) -> the anomaly scores of that segment's users in that window.
    let mut scores: BTreeMap<(String, u64), Vec<f32>> = BTreeMap::new();
    let mut users: BTreeMap<UserWindow, Vec<&PolicyPart>> = BTreeMap::new();
    for (k, p) in parts {
        users.entry(k.clone()).or_default().push(p);
    }
    let risk_segment = |ps: &[&PolicyPart]| -> String {
        let known = ps.iter().find_map(|p| match p {
            PolicyPart::Profile { segment, .. } => segment.clone(),
            _ => None,
        });
        let top = ps.iter().find_map(|p| match p {
            PolicyPart::Resonance { top, .. } => Some(top.to_string()),
            _ => None,
        });
        known.or(top).unwrap_or_default()
    };
    for (k, ps) in &users {
        for p in ps {
            if let PolicyPart::Profile {
                anomaly_score: Some(a),
                ..
            } = p
            {
                scores.entry((risk_segment(ps), k.1)).or_default().push(a.0);
            }
        }
    }
    let mut out = Out::new();
    for (k, ps) in &users {
        let Some((anomaly, events, demand)) = ps.iter().find_map(|p| match p {
            PolicyPart::Profile {
                anomaly_score,
                events,
                demand,
                ..
            } => Some((*anomaly_score, *events, demand.clone())),
            _ => None,
        }) else {
            continue;
        };
        let segments: Vec<(String, f64)> = ps
            .iter()
            .find_map(|p| match p {
                PolicyPart::Resonance { scores, .. } => Some(
                    scores
                        .iter()
                        .map(|(s, x)| (s.to_string(), f64::from(x.0)))
                        .collect(),
                ),
                _ => None,
            })
            .unwrap_or_default();
        let personas: Vec<(u32, f64)> = ps
            .iter()
            .find_map(|p| match p {
                PolicyPart::Personas(v) => {
                    Some(v.iter().map(|(i, x)| (*i, f64::from(x.0))).collect())
                }
                _ => None,
            })
            .unwrap_or_default();
        let forecast = ps.iter().find_map(|p| match p {
            PolicyPart::Forecast(f) => Some(f.clone()),
            _ => None,
        });
        let peak = |pick: fn((f32, f32)) -> f32| {
            forecast.as_ref().map(|f| {
                (1..=f.horizon().min(config.horizon))
                    .map(|h| f64::from(pick(f.at(h).unwrap())))
                    .fold(0.0f64, f64::max)
            })
        };
        let outlook = DemandOutlook {
            peak_bytes: peak(|x| x.1),
            peak_requests: peak(|x| x.0),
            current_bytes: (demand.bytes_in + demand.bytes_out) as f64,
            current_requests: events as f64,
        };
        let distribution = persona_distribution(&catalogue, &segments, &personas);
        let policy = blend(&catalogue, &distribution, &outlook, secs, config);
        // Risk counted afresh over the segment's last `risk_windows` windows, this one included.
        let segment = risk_segment(ps);
        let risk = anomaly.and_then(|a| {
            let held: Vec<f32> = scores
                .range(
                    (
                        segment.clone(),
                        (k.1 + 1).saturating_sub(config.risk_windows),
                    )..=(segment.clone(), k.1),
                )
                .flat_map(|(_, v)| v.iter().copied())
                .collect();
            (!held.is_empty()).then(|| {
                let below = held.iter().filter(|x| **x < a.0).count() as f64;
                let equal = held.iter().filter(|x| **x == a.0).count() as f64;
                (below + 0.5 * equal) / held.len() as f64
            })
        });
        let next = forecast
            .as_ref()
            .and_then(|f| f.at(1))
            .map(|(r, b)| (f64::from(b), f64::from(r)));
        let socket = socket_profile(
            &policy,
            &demand,
            next,
            risk,
            &catalogue.endpoints,
            secs,
            config,
        );
        out.entry(k.1)
            .or_default()
            .insert((k.clone(), std::sync::Arc::new((policy, socket))));
    }
    out
}

#[test]
fn policies_equal_recomputation_at_every_window() {
    for (seed, risk_windows) in [(1, 5), (2, 1), (3, 100)] {
        let config = PolicyConfig {
            risk_windows,
            ..PolicyConfig::default()
        };
        let parts = random_parts(seed);
        let want = oracle(&parts, &config);
        assert!(want.values().map(BTreeSet::len).sum::<usize>() > 500);
        for how in [Inputs::One, Inputs::ByKind] {
            let got = run(&parts, &config, seed, how);
            for w in 0..WINDOWS {
                assert_eq!(
                    got.get(&w),
                    want.get(&w),
                    "seed {seed}, {how:?}, window {w}"
                );
            }
        }
        // Risk was really calibrated: some users are above the elevated threshold.
        let elevated = want
            .values()
            .flatten()
            .filter(|(_, shaped)| shaped.1.risk.is_some_and(|r| r.0 >= 0.9))
            .count();
        assert!(elevated > 10, "{elevated}");
    }
}
