//! Criterion benches of the per-event and per-profile kernels of the dataflow: window feature
//! aggregation, sequences and the baseline embedder, segment sums and resonance, the
//! per-window cores of personas, drift and scaling, and policies (blend and socket profile).
//!
//! Run with `cargo bench --bench kernels` (add a filter, e.g. `-- resonance`, to run a part).
//! Every input is drawn from a seeded [`ChaCha8Rng`], so runs compare like with like. Each
//! bench sets its throughput unit: events, user-windows, sequences, profiles or users.

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use differential_dataflow::difference::{Abelian, Semigroup};
use personaflow_operators::drift::operator::{window_drift, DriftState, Scope, ScopeMember};
use personaflow_operators::drift::scaling::{DemandHistory, ScalingConfig};
use personaflow_operators::drift::{permutation_p_value, DriftConfig, DriftDetector, Step};
use personaflow_operators::embed::{Embedder, StandardisedEmbedder};
use personaflow_operators::ops::UserId;
use personaflow_operators::personas::{batch_kmeans, rng_for, PersonaConfig, PersonaModel};
use personaflow_operators::resonance::{context_prior, resonance, ResonanceConfig};
use personaflow_operators::segments::{SegmentSum, SegmentTable};
use personaflow_operators::sequences::{build_sequence, DEFAULT_SEQUENCE_LEN};
use personaflow_operators::vector::Vector;
use personaflow_operators::window::features::{window_features, WindowAgg, WindowSummary};
use personaflow_operators::{Context, Event, WindowSpec};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::hint::black_box;

/// Seed of every input.
const SEED: u64 = 0x5eed_f10e;
/// User-windows in the feature benches.
const USER_WINDOWS: usize = 2_000;
/// Largest number of events of one user in one window (sizes are uniform in 1..=this).
const MAX_EVENTS_PER_WINDOW: usize = 32;
/// Sequences built and embedded per iteration.
const SEQUENCES: usize = 1_000;
/// Share of a sequence's windows in which the user is active.
const ACTIVE_SHARE: f64 = 0.6;
/// Profiles per iteration in the segment-sum benches.
const PROFILES: usize = 1_000;
/// Users scored per iteration in the resonance benches.
const USERS: usize = 1_000;
/// Windows of one segment's risk calibration (a day of 1-minute windows).
const RISK_STEPS: usize = 1_440;
/// Scored users of the segment in each window (a fifth of a dense day's ~385 a window).
const RISK_USERS_PER_WINDOW: usize = 77;
/// Windows a calibration keeps (the default `policy.risk_windows`, `segments.window`).
const RISK_WINDOWS: u64 = 60;
/// Segment table sizes of the resonance benches.
const SEGMENT_COUNTS: [usize; 2] = [5, 50];
/// Profiles summed into each segment of a resonance table.
const PROFILES_PER_SEGMENT: usize = 40;

const ACTIONS: [&str; 12] = [
    "page_view",
    "click",
    "search",
    "purchase",
    "login",
    "stream_chunk",
    "play",
    "game_move",
    "chat",
    "api_call",
    "heartbeat",
    "telemetry",
];
const CATEGORIES: [&str; 6] = ["web", "video", "game", "work", "iot", "commerce"];
const DEVICES: [&str; 6] = ["mobile", "desktop", "tv", "tablet", "console", "sensor"];
const OSES: [&str; 5] = ["android", "ios", "windows", "linux", "tizen"];
const COUNTRIES: [&str; 8] = ["US", "DE", "FR", "BR", "IN", "JP", "GB", "NG"];
const SEGMENT_NAMES: [&str; 5] = [
    "gamer",
    "video_streamer",
    "remote_worker",
    "iot_device",
    "casual_browser",
];

fn pick<'a>(rng: &mut ChaCha8Rng, from: &[&'a str]) -> &'a str {
    from[rng.random_range(0..from.len())]
}

fn random_context(rng: &mut ChaCha8Rng) -> Context {
    Context {
        device: Some(pick(rng, &DEVICES).into()),
        os: Some(pick(rng, &OSES).into()),
        country: Some(pick(rng, &COUNTRIES).into()),
    }
}

/// One random event of `user` in window `window`, with every optional field set the way the
/// simulator sets them (some left empty).
fn random_event(rng: &mut ChaCha8Rng, user: &str, window: u64, spec: &WindowSpec) -> Event {
    let ts = spec.start_ms(window) + rng.random_range(0..spec.len_ms());
    let mut e = Event::new(ts, user, pick(rng, &ACTIONS));
    e.session_id = Some(format!("{user}-s{}", rng.random_range(0..4u32)));
    e.authenticated = rng.random_bool(0.5);
    e.segment = Some(pick(rng, &SEGMENT_NAMES).to_string());
    e.category = rng
        .random_bool(0.9)
        .then(|| pick(rng, &CATEGORIES).to_string());
    e.bytes_in = Some(rng.random_range(100..2_000_000));
    e.bytes_out = Some(rng.random_range(50..20_000));
    e.latency_ms = rng.random_bool(0.8).then(|| rng.random_range(1.0..900.0));
    e.status = Some(if rng.random_bool(0.05) { 503 } else { 200 });
    let ctx = random_context(rng);
    let owned = |v: Option<std::sync::Arc<str>>| v.as_deref().map(str::to_string);
    (e.device, e.os, e.country) = (owned(ctx.device), owned(ctx.os), owned(ctx.country));
    e
}

/// `USER_WINDOWS` groups of events, each of one user in one window.
fn event_groups(rng: &mut ChaCha8Rng, spec: &WindowSpec) -> Vec<(u64, Vec<Event>)> {
    (0..USER_WINDOWS)
        .map(|i| {
            let user = format!("u{:06}", i % 500);
            let window = 29_462_400 + (i / 500) as u64;
            let n = rng.random_range(1..=MAX_EVENTS_PER_WINDOW);
            let events = (0..n)
                .map(|_| random_event(rng, &user, window, spec))
                .collect();
            (window, events)
        })
        .collect()
}

fn bench_features(c: &mut Criterion) {
    let spec = WindowSpec::default();
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let groups = event_groups(&mut rng, &spec);
    let events: usize = groups.iter().map(|(_, g)| g.len()).sum();
    let aggs: Vec<(u64, WindowAgg)> = groups
        .iter()
        .map(|(w, g)| {
            let mut agg = WindowAgg::empty();
            g.iter().for_each(|e| agg.add(e));
            (*w, agg)
        })
        .collect();
    let singletons: Vec<Vec<WindowAgg>> = groups
        .iter()
        .map(|(_, g)| g.iter().map(WindowAgg::of).collect())
        .collect();

    let mut group = c.benchmark_group("features");
    group.throughput(Throughput::Elements(events as u64));
    group.bench_function("window_agg_add/per_event", |b| {
        b.iter(|| {
            for (_, g) in &groups {
                let mut agg = WindowAgg::empty();
                for e in g {
                    agg.add(black_box(e));
                }
                black_box(&agg);
            }
        })
    });
    group.bench_function("window_agg_merge/per_event", |b| {
        b.iter(|| {
            for s in &singletons {
                let mut agg = WindowAgg::empty();
                for one in s {
                    agg.merge(black_box(one));
                }
                black_box(&agg);
            }
        })
    });
    group.throughput(Throughput::Elements(aggs.len() as u64));
    group.bench_function("window_features/per_user_window", |b| {
        b.iter(|| {
            for (w, agg) in &aggs {
                black_box(window_features(black_box(agg), *w, &spec));
            }
        })
    });
    group.bench_function("window_summary/per_user_window", |b| {
        b.iter(|| {
            for (w, agg) in &aggs {
                black_box(WindowSummary::new(black_box(agg), *w, &spec));
            }
        })
    });
    group.finish();
}

/// `SEQUENCES` users' histories: window summaries in about `ACTIVE_SHARE` of the last `L`
/// windows, always including the current one.
fn histories(rng: &mut ChaCha8Rng, spec: &WindowSpec) -> Vec<Vec<(u64, WindowSummary)>> {
    let len = DEFAULT_SEQUENCE_LEN as u64;
    let current = 29_462_400 + len;
    (0..SEQUENCES)
        .map(|i| {
            let user = format!("u{i:06}");
            let mut history = Vec::new();
            for w in current + 1 - len..=current {
                if w != current && !rng.random_bool(ACTIVE_SHARE) {
                    continue;
                }
                let mut agg = WindowAgg::empty();
                for _ in 0..rng.random_range(1..=MAX_EVENTS_PER_WINDOW) {
                    agg.add(&random_event(rng, &user, w, spec));
                }
                history.push((w, WindowSummary::new(&agg, w, spec)));
            }
            history
        })
        .collect()
}

fn bench_sequences(c: &mut Criterion) {
    let spec = WindowSpec::default();
    let mut rng = ChaCha8Rng::seed_from_u64(SEED ^ 1);
    let histories = histories(&mut rng, &spec);
    let refs: Vec<Vec<(u64, &WindowSummary)>> = histories
        .iter()
        .map(|h| h.iter().map(|(w, s)| (*w, s)).collect())
        .collect();
    let current = refs[0].last().map(|(w, _)| *w).expect("non-empty history");
    let sequences: Vec<_> = refs
        .iter()
        .map(|h| build_sequence(current, DEFAULT_SEQUENCE_LEN, h).expect("active in current"))
        .collect();
    let embedder = StandardisedEmbedder::default();

    let mut group = c.benchmark_group("sequences");
    group.throughput(Throughput::Elements(SEQUENCES as u64));
    group.bench_function("build_sequence/per_sequence", |b| {
        b.iter(|| {
            for h in &refs {
                black_box(build_sequence(current, DEFAULT_SEQUENCE_LEN, black_box(h)));
            }
        })
    });
    group.bench_function("embed_one/per_sequence", |b| {
        b.iter(|| {
            for s in &sequences {
                black_box(embedder.embed_one(black_box(s)));
            }
        })
    });
    group.bench_function("build_sequence+embed_one/per_sequence", |b| {
        b.iter(|| {
            for h in &refs {
                let seq = build_sequence(current, DEFAULT_SEQUENCE_LEN, black_box(h))
                    .expect("active in current");
                black_box(embedder.embed_one(&seq));
            }
        })
    });
    group.finish();
}

/// A random profile of the baseline embedder's dimensionality.
fn random_profile(rng: &mut ChaCha8Rng, dims: usize) -> Vec<f32> {
    (0..dims).map(|_| rng.random_range(-3.0f32..3.0)).collect()
}

fn bench_segment_sums(c: &mut Criterion) {
    let dims = StandardisedEmbedder::default().dims();
    let mut rng = ChaCha8Rng::seed_from_u64(SEED ^ 2);
    let sums: Vec<SegmentSum> = (0..PROFILES)
        .map(|_| {
            let p = random_profile(&mut rng, dims);
            SegmentSum::of_profile(&p, &random_context(&mut rng))
        })
        .collect();

    let mut group = c.benchmark_group(format!("segment_sum/dims={dims}"));
    group.throughput(Throughput::Elements(PROFILES as u64));
    group.bench_function("of_profile/per_profile", |b| {
        let profiles: Vec<(Vec<f32>, Context)> = (0..PROFILES)
            .map(|_| (random_profile(&mut rng, dims), random_context(&mut rng)))
            .collect();
        b.iter(|| {
            for (p, ctx) in &profiles {
                black_box(SegmentSum::of_profile(black_box(p), ctx));
            }
        })
    });
    group.bench_function("plus_equals/per_profile", |b| {
        b.iter(|| {
            let mut acc = SegmentSum::default();
            for s in &sums {
                acc.plus_equals(black_box(s));
            }
            black_box(acc)
        })
    });
    group.bench_function("plus_equals_retract/per_profile", |b| {
        // The rolling window: insert each profile, retract the one W = 60 profiles back.
        let negated: Vec<SegmentSum> = sums
            .iter()
            .map(|s| {
                let mut n = s.clone();
                n.negate();
                n
            })
            .collect();
        b.iter(|| {
            let mut acc = SegmentSum::default();
            for (i, s) in sums.iter().enumerate() {
                acc.plus_equals(black_box(s));
                if i >= 60 {
                    acc.plus_equals(black_box(&negated[i - 60]));
                }
            }
            black_box(acc)
        })
    });
    group.bench_function("negate/per_profile", |b| {
        let mut work = sums.clone();
        b.iter(|| {
            for s in work.iter_mut() {
                s.negate();
            }
            black_box(&work);
        })
    });
    group.finish();
}

/// A table of `segments` segments, each the sum of `PROFILES_PER_SEGMENT` random profiles
/// around its own centre, with their contexts.
fn segment_table(rng: &mut ChaCha8Rng, segments: usize, dims: usize) -> SegmentTable {
    let names: Vec<String> = (0..segments).map(|i| format!("segment_{i:03}")).collect();
    let sums: Vec<SegmentSum> = (0..segments)
        .map(|_| {
            let centre = random_profile(rng, dims);
            let mut acc = SegmentSum::default();
            for _ in 0..PROFILES_PER_SEGMENT {
                let p: Vec<f32> = centre
                    .iter()
                    .map(|c| c + rng.random_range(-0.5f32..0.5))
                    .collect();
                acc.plus_equals(&SegmentSum::of_profile(&p, &random_context(rng)));
            }
            acc
        })
        .collect();
    SegmentTable::from_sums(names.iter().map(String::as_str).zip(&sums), 1)
}

fn bench_resonance(c: &mut Criterion) {
    let dims = StandardisedEmbedder::default().dims();
    let cfg = ResonanceConfig::default();
    let mut rng = ChaCha8Rng::seed_from_u64(SEED ^ 3);
    let users: Vec<(Vec<f32>, Context)> = (0..USERS)
        .map(|_| (random_profile(&mut rng, dims), random_context(&mut rng)))
        .collect();

    let mut group = c.benchmark_group(format!("resonance/dims={dims}"));
    group.throughput(Throughput::Elements(USERS as u64));
    for segments in SEGMENT_COUNTS {
        let table = segment_table(&mut rng, segments, dims);
        assert_eq!(table.segments.len(), segments);
        group.bench_with_input(
            BenchmarkId::new("warm/per_user", format!("segments={segments}")),
            &table,
            |b, table| {
                b.iter(|| {
                    for (p, ctx) in &users {
                        black_box(resonance(7, black_box(p), 5, ctx, table, &cfg));
                    }
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("cold_start/per_user", format!("segments={segments}")),
            &table,
            |b, table| {
                b.iter(|| {
                    for (p, ctx) in &users {
                        black_box(resonance(7, black_box(p), 0, ctx, table, &cfg));
                    }
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("context_prior/per_user", format!("segments={segments}")),
            &table,
            |b, table| {
                b.iter(|| {
                    for (_, ctx) in &users {
                        black_box(context_prior(black_box(ctx), table, cfg.prior_smoothing));
                    }
                })
            },
        );
    }
    group.throughput(Throughput::Elements(1));
    for segments in SEGMENT_COUNTS {
        let names: Vec<String> = (0..segments).map(|i| format!("segment_{i:03}")).collect();
        let sums: Vec<SegmentSum> = (0..segments)
            .map(|_| {
                let mut acc = SegmentSum::default();
                for _ in 0..PROFILES_PER_SEGMENT {
                    let p = random_profile(&mut rng, dims);
                    acc.plus_equals(&SegmentSum::of_profile(&p, &random_context(&mut rng)));
                }
                acc
            })
            .collect();
        group.bench_function(
            BenchmarkId::new("table_from_sums/per_table", format!("segments={segments}")),
            |b| {
                b.iter(|| {
                    black_box(SegmentTable::from_sums(
                        names.iter().map(String::as_str).zip(black_box(&sums)),
                        1,
                    ))
                })
            },
        );
    }
    group.finish();
}

/// Users clustered per window in the persona benches.
const PERSONA_USERS: usize = 1_000;
/// Profile dimensions (the RNN-VAE's latent size).
const PROFILE_DIMS: usize = 16;
/// Clusters the persona benches' profiles are drawn around.
const PROFILE_CLUSTERS: usize = 6;
/// Segments and members per segment and window in the drift bench.
const DRIFT_SCOPES: usize = 5;
const DRIFT_MEMBERS: usize = 40;
/// Steps and users of the scope in the sliding detector bench (a day of 1-minute windows).
const DRIFT_SLIDING_STEPS: u64 = 1_440;
const DRIFT_SCOPE_USERS: u64 = 500;

/// `n` profiles drawn around `PROFILE_CLUSTERS` random centres (spread 0.3 around them).
fn clustered_profiles(rng: &mut ChaCha8Rng, n: usize) -> Vec<Vec<f32>> {
    let centres: Vec<Vec<f32>> = (0..PROFILE_CLUSTERS)
        .map(|_| {
            (0..PROFILE_DIMS)
                .map(|_| rng.random_range(-2.0..2.0))
                .collect()
        })
        .collect();
    (0..n)
        .map(|i| {
            centres[i % PROFILE_CLUSTERS]
                .iter()
                .map(|c| c + rng.random_range(-0.3..0.3))
                .collect()
        })
        .collect()
}

fn bench_personas(c: &mut Criterion) {
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let mut group = c.benchmark_group("personas");
    group.throughput(Throughput::Elements(PERSONA_USERS as u64));
    let config = PersonaConfig::default();
    let first = clustered_profiles(&mut rng, PERSONA_USERS);
    let next = clustered_profiles(&mut rng, PERSONA_USERS);
    let next_slices: Vec<&[f32]> = next.iter().map(Vec::as_slice).collect();
    let first_slices: Vec<&[f32]> = first.iter().map(Vec::as_slice).collect();
    // The first window picks k by silhouette and fits by batch k-means; later windows update.
    let mut model = PersonaModel::default();
    model
        .update(0, &first_slices, &config)
        .expect("enough users");
    let k = model.centroids.len();
    group.bench_function("update_minibatch/per_user", |b| {
        b.iter_batched(
            || model.clone(),
            |mut m| black_box(m.update(1, black_box(&next_slices), &config)),
            BatchSize::SmallInput,
        )
    });
    // A window where the silhouette search for k is due.
    let due = config.reselect_every;
    group.bench_function("update_reselect_k/per_user", |b| {
        b.iter_batched(
            || model.clone(),
            |mut m| black_box(m.update(due, black_box(&next_slices), &config)),
            BatchSize::SmallInput,
        )
    });
    // What a from-scratch fit of the same window costs (k fixed: no silhouette search).
    group.bench_function("batch_kmeans_refit/per_user", |b| {
        b.iter(|| {
            black_box(batch_kmeans(
                black_box(&next),
                k,
                config.restarts,
                &mut rng_for(config.seed, 1, 0),
            ))
        })
    });
    group.finish();
}

/// One window's members of `DRIFT_SCOPES` segments, sorted by scope then user.
fn drift_members(rng: &mut ChaCha8Rng) -> Vec<((Scope, UserId), ScopeMember)> {
    let features = personaflow_operators::window::features::NUM_FEATURES;
    let mut members: Vec<((Scope, UserId), ScopeMember)> = (0..DRIFT_SCOPES)
        .flat_map(|s| (0..DRIFT_MEMBERS).map(move |u| (s, u)))
        .map(|(s, u)| {
            let m = ScopeMember {
                embedding: Vector(
                    (0..PROFILE_DIMS)
                        .map(|_| rng.random_range(-1.0..1.0))
                        .collect(),
                ),
                features: Vector((0..features).map(|_| rng.random_range(0.0..1.0)).collect()),
                requests: rng.random_range(0..20),
                forecast: Some(Vector(
                    (0..4).map(|_| rng.random_range(0.0..20.0)).collect(),
                )),
            };
            // 3 windows' worth of distinct users rotate through each segment.
            let user = format!("u{:04}", u + DRIFT_MEMBERS * rng.random_range(0..3));
            (
                (Scope::Segment(SEGMENT_NAMES[s].to_string()), user.into()),
                m,
            )
        })
        .collect();
    members.sort();
    members.dedup_by(|a, b| a.0 == b.0);
    members
}

fn bench_drift(c: &mut Criterion) {
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let config = DriftConfig::default();
    let scaling = ScalingConfig::default();
    // A state warmed up on a full baseline and current window of stationary members.
    let warm = (config.baseline + config.recent) as u64;
    let mut state = DriftState::default();
    for w in 0..warm {
        window_drift(&mut state, w, &drift_members(&mut rng), &config, &scaling);
    }
    let window = drift_members(&mut rng);
    let mut group = c.benchmark_group("drift");
    group.throughput(Throughput::Elements(window.len() as u64));
    // The usual window: every scope's distance is below its threshold (no test runs).
    group.bench_function("window_drift_stationary/per_member", |b| {
        b.iter_batched(
            || state.clone(),
            |mut s| {
                black_box(window_drift(
                    &mut s,
                    warm,
                    black_box(&window),
                    &config,
                    &scaling,
                ))
            },
            BatchSize::SmallInput,
        )
    });
    // A scope's detector over a day's run of steps (its baseline and current window
    // sliding by one step each): 64 kept points a step, of 120 users active in each window
    // out of the scope's 500, so a user's points recur across the kept steps.
    let steps: Vec<Step> = (0..DRIFT_SLIDING_STEPS)
        .map(|t| {
            let mut users: Vec<u64> = (0..DRIFT_SCOPE_USERS).collect();
            users.shuffle(&mut rng);
            users.truncate(120);
            let points: Vec<Vec<f32>> = users
                .iter()
                .map(|_| {
                    (0..PROFILE_DIMS)
                        .map(|_| rng.random_range(-2.0..2.0))
                        .collect()
                })
                .collect();
            let refs: Vec<&[f32]> = points.iter().map(Vec::as_slice).collect();
            Step::new(t, &refs, &users, &[], config.max_points, SEED)
        })
        .collect();
    group.throughput(Throughput::Elements(DRIFT_SLIDING_STEPS));
    group.bench_function("detector_sliding/per_step", |b| {
        b.iter_batched(
            || steps.clone(),
            |steps| {
                let mut detector = DriftDetector::default();
                for step in steps {
                    black_box(detector.observe(step, &config));
                }
                detector
            },
            BatchSize::LargeInput,
        )
    });
    // The permutation test a distance above the threshold runs: one scope's users, a
    // baseline's and a current window's (each user's profiles averaged).
    let units = |rng: &mut ChaCha8Rng, n: usize| -> Vec<Vec<f32>> {
        (0..n)
            .map(|_| {
                (0..PROFILE_DIMS)
                    .map(|_| rng.random_range(-1.0..1.0))
                    .collect()
            })
            .collect()
    };
    let (a, b) = (
        units(&mut rng, 3 * DRIFT_MEMBERS),
        units(&mut rng, DRIFT_MEMBERS),
    );
    let a: Vec<&[f32]> = a.iter().map(Vec::as_slice).collect();
    let b: Vec<&[f32]> = b.iter().map(Vec::as_slice).collect();
    group.throughput(Throughput::Elements(1));
    group.bench_function("permutation_test/per_test", |bench| {
        bench.iter(|| {
            black_box(permutation_p_value(
                black_box(&a),
                black_box(&b),
                config.permutations,
                &mut rng_for(config.seed, 0, 4),
            ))
        })
    });
    // The calibrated demand forecast a recommendation is sized from (15 horizons, 60
    // windows of history).
    let mut history = DemandHistory::default();
    let horizon = scaling.horizon.max(1);
    for w in 0..(scaling.calibration_windows + horizon) as u64 {
        let forecast: Vec<f64> = (0..horizon).map(|_| rng.random_range(0.0..40.0)).collect();
        history.observe(
            w,
            rng.random_range(10.0..50.0),
            &forecast,
            scaling.calibration_windows,
        );
    }
    let forecast: Vec<f64> = (0..horizon).map(|_| rng.random_range(0.0..40.0)).collect();
    group.bench_function("calibrated_forecast/per_recommendation", |bench| {
        bench.iter(|| black_box(history.forecast(black_box(&forecast), 30.0, scaling.coverage)))
    });
    group.finish();
}

/// Blending the built-in persona catalogue (`data/personas.toml`) and making the socket
/// profile, per user-window, for users resonating with the five segments with random
/// probabilities, forecasts, demand and risk: the cost the policies stage adds per
/// user-window (issue goal: at most 2 µs).
fn bench_policies(c: &mut Criterion) {
    use personaflow_operators::policies::blend::{Blender, DemandOutlook, PolicyConfig};
    use personaflow_operators::policies::socket::{socket_profile, WindowDemand};
    let catalogue = personaflow_dataflow::config::Config::default()
        .catalogue()
        .unwrap();
    let config = PolicyConfig::default();
    let segments = [
        "gamer",
        "video_streamer",
        "remote_worker",
        "iot_device",
        "casual_browser",
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    /// A user's segment probabilities, demand outlook, window demand and risk.
    type PolicyCase = (Vec<(String, f64)>, DemandOutlook, WindowDemand, f64);
    let users: Vec<PolicyCase> = (0..USERS)
        .map(|_| {
            let raw: Vec<f64> = segments
                .iter()
                .map(|_| rng.random_range(0.0..1.0f64).powi(4))
                .collect();
            let total: f64 = raw.iter().sum();
            let probs = segments
                .iter()
                .zip(&raw)
                .map(|(s, p)| (s.to_string(), p / total))
                .collect();
            let outlook = DemandOutlook {
                peak_bytes: Some(rng.random_range(0.0..6e8)),
                peak_requests: Some(rng.random_range(0.0..300.0)),
                current_bytes: rng.random_range(0.0..6e8),
                current_requests: rng.random_range(0.0..300.0),
            };
            let demand = WindowDemand {
                bytes_in: rng.random_range(0..500_000_000),
                bytes_out: rng.random_range(0..50_000_000),
                latency_mean_us: Some(rng.random_range(1_000..500_000)),
                requests: [
                    rng.random_range(0..20),
                    rng.random_range(0..20),
                    rng.random_range(0..20),
                    rng.random_range(0..20),
                ],
            };
            (probs, outlook, demand, rng.random_range(0.0..1.0))
        })
        .collect();
    let mut group = c.benchmark_group("policies");
    group.throughput(Throughput::Elements(USERS as u64));
    // The catalogue resolved once, as the `BlendPolicies` operator does.
    let blender = Blender::new(&catalogue);
    group.bench_function("blend+socket_profile/per_user_window", |b| {
        b.iter(|| {
            for (probs, outlook, demand, risk) in &users {
                let d = blender.distribution(probs, &[]);
                let p = blender.blend(&d, outlook, 60.0, &config);
                let s = socket_profile(
                    &p,
                    demand,
                    Some((1e7, 20.0)),
                    Some(*risk),
                    &catalogue.endpoints,
                    60.0,
                    &config,
                );
                black_box((p, s));
            }
        })
    });
    // A segment's risk calibration over a day of windows, as `BlendPolicies` runs it on every worker: each
    // window's users' anomaly scores pushed, then each user's quantile among the last
    // `RISK_WINDOWS` windows' scores.
    use personaflow_operators::policies::socket::RiskCalibration;
    let windows: Vec<Vec<f32>> = (0..RISK_STEPS)
        .map(|_| {
            (0..RISK_USERS_PER_WINDOW)
                .map(|_| rng.random_range(0.0..4.0f32))
                .collect()
        })
        .collect();
    group.throughput(Throughput::Elements(RISK_STEPS as u64));
    group.bench_function("risk_calibration/per_window", |b| {
        b.iter_batched(
            || windows.clone(),
            |windows| {
                let mut r = RiskCalibration::default();
                for (w, scores) in windows.into_iter().enumerate() {
                    r.push(w as u64, scores.clone(), RISK_WINDOWS);
                    for s in &scores {
                        black_box(r.quantile(*s));
                    }
                }
                r
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

/// The benches as criterion's group (in a module of its own: the function the macro makes
/// has no documentation).
mod group {
    use super::*;
    criterion_group!(
        benches,
        bench_features,
        bench_sequences,
        bench_segment_sums,
        bench_resonance,
        bench_personas,
        bench_drift,
        bench_policies
    );
}
criterion_main!(group::benches);
