//! Evaluation of shaping policies on a link simulator (`personaflow evaluate shaping`).
//!
//! Simulator scenarios (with and without drift) are backfilled with the job's configuration;
//! each policy a backfill writes is an allocation for the user's next window, and the
//! `shaping_feedback` table says what that window's demand then was. Every window, the users
//! judged in it share one bottleneck ([`share_link`]: reservations, scaled down together when
//! they exceed the link, then borrowing of unused capacity by priority weight up to each
//! user's ceiling). Six allocation policies are compared on the same demand:
//!
//! - **static persona**: the most probable entry's guaranteed rate, ceiling, weight, target and
//!   burst (a hard assignment);
//! - **static blend**: the blended guaranteed rate (the policy without a forecast);
//! - **predictive**: the policy's allocation (forecast peak × headroom in [floor, ceiling]);
//! - **reactive**: the last window's demand × headroom in [floor, ceiling];
//! - **learned**: a tabular Q-learning shaper that scales the predictive allocation. State:
//!   the most probable entry, the forecast's bucket (powers of 4 of bits/s), the user's
//!   shortfall in its previous judged window under the shaper (none, partial, most), and the
//!   window's load (the predictive allocations over the link's capacity, known when they are
//!   made). Actions: [`ACTIONS`]. Reward: the user's share of demand served within its latency
//!   target plus [`COOPERATION`] × the window's, minus `waste_penalty` × the bits it left
//!   unused, in units of its predictive allocation. Trained offline on the training scenarios'
//!   policies and feedback tables, replayed on the same link simulator (each action's outcome
//!   recomputed from the realised demand), and evaluated greedily on held-out scenarios whose
//!   seeds and drifts it never saw.
//!
//! - **predictive + admission**: the predictive allocations, and when they ask more than the
//!   link has, [`admit_order`] keeps reservations by priority weight and size while they fit
//!   and drops the rest to their floor (serving some users in full rather than all late);
//!
//! - **foresight** (a reference, not a policy): each user reserves exactly the demand that
//!   then came: what allocation alone can reach on the link; **foresight + admission**, the
//!   same with admission: the most an allocation can reach here.
//!
//! Scores: **QoE**, the share of all demanded bits served within their latency target;
//! **waste**, reserved bits unused (as a share of demanded bits); **Jain fairness** of users'
//! QoE.

use crate::drift::simulate_and_backfill;
use crate::resonance::{for_each_batch, parquet_files};
use crate::Result;
use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, TimestampMillisecondType, UInt64Type};
use personaflow_dataflow::config::Config;
use personaflow_operators::policies::catalogue::PersonaCatalogue;
use personaflow_operators::policies::link::{share_link, LinkUser};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Scale factors the learned shaper applies to the predictive allocation.
pub const ACTIONS: [f64; 7] = [0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0];
/// The action that keeps the predictive allocation.
const KEEP: usize = 3;
/// Load buckets of the shaper's state: the window's predictive allocations over the link's
/// capacity, below 0.5, 1, 2, and above.
pub const LOAD_BUCKETS: usize = 4;
/// Weight of the window's QoE (all users') in each user's reward: the shaper shares one link,
/// and a user served by taking another's capacity is no gain.
pub const COOPERATION: f64 = 1.0;
/// Forecast buckets of the shaper's state (powers of 4 from 16 kbit/s).
pub const FORECAST_BUCKETS: usize = 8;
/// Shortfall buckets of the shaper's state: none (all served in target), partial (at least
/// half), most (less than half).
pub const SHORTFALL_BUCKETS: usize = 3;
/// Default link capacity, as a multiple of the scenario's mean demand rate.
pub const DEFAULT_CAPACITY_FACTOR: f64 = 1.5;
/// Default waste penalty of the shaper's reward.
pub const DEFAULT_WASTE_PENALTY: f64 = 0.25;
/// Default training epochs over the training traces.
pub const DEFAULT_EPOCHS: usize = 30;
/// Default learning rate.
pub const DEFAULT_ALPHA: f64 = 0.1;
/// Default discount.
pub const DEFAULT_GAMMA: f64 = 0.5;
/// Default exploration rate of the first epoch (decays linearly to a tenth of it).
pub const DEFAULT_EPSILON: f64 = 0.3;
/// Default seed of the exploration.
pub const DEFAULT_SEED: u64 = 4594;

/// How the evaluation runs.
#[derive(Clone, Debug, Serialize)]
pub struct ShapingConfig {
    /// Users per scenario.
    pub users: usize,
    /// Simulated days per scenario.
    pub days: f64,
    /// Link capacity as a multiple of each scenario's mean demand rate.
    pub capacity_factor: f64,
    /// Waste penalty λ of the reward.
    pub waste_penalty: f64,
    /// Training epochs.
    pub epochs: usize,
    /// Learning rate.
    pub alpha: f64,
    /// Discount.
    pub gamma: f64,
    /// Initial exploration rate.
    pub epsilon: f64,
    /// Seed.
    pub seed: u64,
}

impl Default for ShapingConfig {
    fn default() -> Self {
        ShapingConfig {
            users: 600,
            days: 0.5,
            capacity_factor: DEFAULT_CAPACITY_FACTOR,
            waste_penalty: DEFAULT_WASTE_PENALTY,
            epochs: DEFAULT_EPOCHS,
            alpha: DEFAULT_ALPHA,
            gamma: DEFAULT_GAMMA,
            epsilon: DEFAULT_EPSILON,
            seed: DEFAULT_SEED,
        }
    }
}

/// A scenario of the evaluation.
#[derive(Clone, Debug, Serialize)]
pub struct ShapingScenario {
    /// Name.
    pub name: String,
    /// Drift injections.
    pub drifts: Vec<String>,
    /// Seed.
    pub seed: u64,
    /// Used for training (else held out).
    pub train: bool,
}

/// The built-in scenarios: three to train on, three held out (other seeds, other drifts).
pub fn default_shaping_scenarios() -> Vec<ShapingScenario> {
    let s = |name: &str, drifts: &[&str], seed: u64, train: bool| ShapingScenario {
        name: name.into(),
        drifts: drifts.iter().map(|d| d.to_string()).collect(),
        seed,
        train,
    };
    vec![
        s("train-no-drift", &[], 101, true),
        s("train-gamer-bytes-x3", &["gamer@6h:bytes=3.0"], 102, true),
        s(
            "train-streamer-rate-x3",
            &["video_streamer@6h:rate=3.0"],
            103,
            true,
        ),
        s("test-no-drift", &[], 201, false),
        s(
            "test-worker-pace-x3",
            &["remote_worker@6h:pace=3.0"],
            202,
            false,
        ),
        s(
            "test-iot-mix-to-gamer",
            &["iot_device@6h:mix:gamer=0.8"],
            203,
            false,
        ),
    ]
}

/// One policy's allocation for a user's next window, and the demand that came.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// User.
    pub user: String,
    /// The window judged (end, ms).
    pub window_end: i64,
    /// Index of the most probable entry in the catalogue.
    pub persona: usize,
    /// The most probable entry's guaranteed rate, bits/s.
    pub persona_guaranteed_bps: f64,
    /// Its ceiling.
    pub persona_ceiling_bps: f64,
    /// Its priority weight.
    pub persona_weight: f64,
    /// Its latency target, s.
    pub persona_target_secs: f64,
    /// Its burst, bits.
    pub persona_burst_bits: f64,
    /// Blended floor.
    pub floor_bps: f64,
    /// Blended guaranteed.
    pub guaranteed_bps: f64,
    /// Blended ceiling.
    pub ceiling_bps: f64,
    /// The predictive allocation.
    pub allocated_bps: f64,
    /// The forecast it was sized from.
    pub sized_for_bps: f64,
    /// The demand of the policy's own window, bits/s.
    pub current_bps: f64,
    /// Blended weight.
    pub weight: f64,
    /// Blended latency target, s.
    pub target_secs: f64,
    /// Blended burst, bits.
    pub burst_bits: f64,
    /// Demand in the judged window, bits.
    pub demand_bits: f64,
}

/// A scenario's steps, by judged window.
#[derive(Clone, Debug, Default)]
pub struct Trace {
    /// Window length, s.
    pub window_secs: f64,
    /// Steps per judged window, in window order.
    pub windows: BTreeMap<i64, Vec<Step>>,
}

impl Trace {
    /// Mean demand rate over the trace's windows, bits/s.
    pub fn mean_demand_bps(&self) -> f64 {
        let total: f64 = self.windows.values().flatten().map(|s| s.demand_bits).sum();
        total / (self.windows.len().max(1) as f64 * self.window_secs)
    }
}

/// The allocation policies compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ShapingPolicy {
    /// The top entry's guaranteed rate.
    StaticPersona,
    /// The blended guaranteed rate.
    StaticBlend,
    /// The policy's forecast-sized allocation.
    Predictive,
    /// Last window's demand × headroom.
    Reactive,
    /// The Q-learning shaper.
    Learned,
    /// A reference, not a policy: each user reserves exactly the demand that then came
    /// (perfect foresight, no bounds): what allocation alone can reach on this link.
    Foresight,
    /// The predictive allocations, with admission ([`admit_order`]) when they ask more than
    /// the link has.
    PredictiveAdmission,
    /// A reference: foresight with admission ([`admit_order`]), the most any allocation with
    /// admission can reach on this link.
    ForesightAdmission,
}

/// Every policy, in report order.
pub const POLICIES: [ShapingPolicy; 8] = [
    ShapingPolicy::StaticPersona,
    ShapingPolicy::StaticBlend,
    ShapingPolicy::Predictive,
    ShapingPolicy::PredictiveAdmission,
    ShapingPolicy::Reactive,
    ShapingPolicy::Learned,
    ShapingPolicy::Foresight,
    ShapingPolicy::ForesightAdmission,
];

impl ShapingPolicy {
    /// Name in reports.
    pub fn name(self) -> &'static str {
        match self {
            ShapingPolicy::StaticPersona => "static persona",
            ShapingPolicy::StaticBlend => "static blend",
            ShapingPolicy::Predictive => "predictive",
            ShapingPolicy::Reactive => "reactive",
            ShapingPolicy::Learned => "learned (Q)",
            ShapingPolicy::Foresight => "foresight (ref)",
            ShapingPolicy::PredictiveAdmission => "predictive + admission",
            ShapingPolicy::ForesightAdmission => "foresight + admission (ref)",
        }
    }
}

/// The Q-learning shaper's table.
#[derive(Clone, Debug, Serialize)]
pub struct QTable {
    personas: usize,
    q: Vec<f64>,
}

/// The shaper's state: (persona, forecast bucket, shortfall bucket, load bucket).
pub type ShaperState = (usize, usize, usize, usize);

impl QTable {
    fn new(personas: usize) -> Self {
        QTable {
            personas,
            q: vec![
                0.0;
                personas.max(1)
                    * FORECAST_BUCKETS
                    * SHORTFALL_BUCKETS
                    * LOAD_BUCKETS
                    * ACTIONS.len()
            ],
        }
    }

    fn index(&self, (p, f, s, l): ShaperState, a: usize) -> usize {
        (((p.min(self.personas.saturating_sub(1)) * FORECAST_BUCKETS + f) * SHORTFALL_BUCKETS + s)
            * LOAD_BUCKETS
            + l)
            * ACTIONS.len()
            + a
    }

    /// The greedy action of a state (ties: the smallest scale, the cheapest).
    pub fn best(&self, s: ShaperState) -> usize {
        (0..ACTIONS.len())
            .max_by(|&a, &b| {
                self.q[self.index(s, a)]
                    .total_cmp(&self.q[self.index(s, b)])
                    .then(b.cmp(&a))
            })
            .unwrap_or(KEEP)
    }

    fn value(&self, s: ShaperState) -> f64 {
        self.q[self.index(s, self.best(s))]
    }
}

/// The forecast bucket of a rate: `floor(log4(bps / 16 kbit/s))` in `0..FORECAST_BUCKETS`.
pub fn forecast_bucket(bps: f64) -> usize {
    if bps <= 16_000.0 {
        return 0;
    }
    ((bps / 16_000.0).log(4.0).floor() as usize).min(FORECAST_BUCKETS - 1)
}

/// The load bucket of the window's predictive allocations over the link's capacity.
pub fn load_bucket(load: f64) -> usize {
    match load {
        l if l < 0.5 => 0,
        l if l < 1.0 => 1,
        l if l < 2.0 => 2,
        _ => 3,
    }
}

/// The shortfall bucket of a served share.
pub fn shortfall_bucket(served_share: f64) -> usize {
    if served_share >= 0.999 {
        0
    } else if served_share >= 0.5 {
        1
    } else {
        2
    }
}

/// The learned allocation: the predictive one scaled by `ACTIONS[a]`, in [floor, ceiling].
fn scaled(step: &Step, a: usize) -> f64 {
    (step.allocated_bps * ACTIONS[a]).clamp(step.floor_bps, step.ceiling_bps.max(step.floor_bps))
}

/// Bits allocated and unused, in units of the predictive allocation's bits (so that scaling
/// up costs more).
fn waste_units(step: &Step, bps: f64, window_secs: f64) -> f64 {
    (bps * window_secs - step.demand_bits).max(0.0) / (step.allocated_bps * window_secs).max(1.0)
}

/// The shaper's states for one window's steps: the window's load is what the predictive
/// allocations ask of the link, known when the allocations are made.
fn states(
    steps: &[Step],
    shortfall: &HashMap<String, usize>,
    capacity_bps: f64,
) -> Vec<ShaperState> {
    let load = steps.iter().map(|s| s.allocated_bps).sum::<f64>() / capacity_bps.max(1.0);
    steps
        .iter()
        .map(|s| {
            (
                s.persona,
                forecast_bucket(s.sized_for_bps),
                shortfall.get(&s.user).copied().unwrap_or(0),
                load_bucket(load),
            )
        })
        .collect()
}

fn link_user(s: &Step, allocated_bps: f64) -> LinkUser {
    LinkUser {
        allocated_bps,
        ceiling_bps: s.ceiling_bps,
        priority_weight: s.weight,
        demand_bits: s.demand_bits,
        burst_bits: s.burst_bits,
        target_secs: s.target_secs,
    }
}

/// Trains the shaper on `traces` (each with its link capacity, bits/s) on the link simulator
/// itself: every window, every user of it acts (ε-greedy), the link serves them together, and
/// each user's reward is its own share served within target plus [`COOPERATION`] × the
/// window's, minus the waste penalty × its waste (in predictive allocations). A user's step is
/// updated when its next step shows the state it led to; its last step bootstraps from its
/// own state (the trace ends where the data ends, not where the user does).
pub fn train(traces: &[(Trace, f64)], personas: usize, config: &ShapingConfig) -> QTable {
    let mut q = QTable::new(personas);
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let epochs = config.epochs.max(1);
    for epoch in 0..epochs {
        let epsilon = (config.epsilon * (1.0 - 0.9 * epoch as f64 / epochs as f64)).clamp(0.0, 1.0);
        for (trace, capacity) in traces {
            let mut shortfall: HashMap<String, usize> = HashMap::new();
            // user -> (state, action, reward) awaiting the user's next state.
            // A BTreeMap: the updates left at the end are applied in a fixed order (the run is
            // deterministic for its seed).
            let mut pending: BTreeMap<String, (ShaperState, usize, f64)> = BTreeMap::new();
            for steps in trace.windows.values() {
                let states = states(steps, &shortfall, *capacity);
                let mut actions = Vec::with_capacity(steps.len());
                for (step, s) in steps.iter().zip(&states) {
                    if let Some((ps, pa, pr)) = pending.remove(&step.user) {
                        let k = q.index(ps, pa);
                        q.q[k] += config.alpha * (pr + config.gamma * q.value(*s) - q.q[k]);
                    }
                    actions.push(if rng.random_bool(epsilon) {
                        rng.random_range(0..ACTIONS.len())
                    } else {
                        q.best(*s)
                    });
                }
                let users: Vec<LinkUser> = steps
                    .iter()
                    .zip(&actions)
                    .map(|(s, &a)| link_user(s, scaled(s, a)))
                    .collect();
                let out = share_link(&users, *capacity, trace.window_secs);
                let demanded: f64 = users.iter().map(|u| u.demand_bits).sum();
                let served: f64 = out.iter().map(|o| o.served_bits).sum();
                let window_qoe = if demanded > 0.0 {
                    served / demanded
                } else {
                    1.0
                };
                for (((step, s), &a), (u, o)) in steps
                    .iter()
                    .zip(&states)
                    .zip(&actions)
                    .zip(users.iter().zip(&out))
                {
                    let own = if u.demand_bits > 0.0 {
                        o.served_bits / u.demand_bits
                    } else {
                        1.0
                    };
                    let r = own + COOPERATION * window_qoe
                        - config.waste_penalty
                            * waste_units(step, u.allocated_bps, trace.window_secs);
                    shortfall.insert(step.user.clone(), shortfall_bucket(own));
                    pending.insert(step.user.clone(), (*s, a, r));
                }
            }
            for (_, (ps, pa, pr)) in pending {
                let k = q.index(ps, pa);
                q.q[k] += config.alpha * (pr + config.gamma * q.value(ps) - q.q[k]);
            }
        }
    }
    q
}

/// Admission when the reservations ask more of the link than it has: users keep their
/// reservation in order of priority weight (highest first), then of reservation (smallest
/// first, so that as many as possible are served in full), while the reservations kept fit the
/// link; the others fall back to their floor (and still borrow what is left, up to their
/// ceiling). Proportional scaling, which HTB does, leaves every user short in an overloaded
/// window, and a user short of its arrival rate misses its latency target within seconds:
/// admission serves some users in full instead of all of them late. It needs the link's
/// capacity, which a deployment knows and the policies table does not.
///
/// ```
/// use personaflow_eval::shaping::admit_order;
/// // 10 Mbit/s: the two reservations of weight 2 (6 Mbit/s), then 3 of weight 1 fit; 6 does not.
/// let kept = admit_order(&[(6e6, 1.0), (3e6, 1.0), (2e6, 2.0), (4e6, 2.0)], 10e6);
/// assert_eq!(kept, vec![false, true, true, true]);
/// ```
/// `reservations` are (bits/s, priority weight); returns which are kept.
pub fn admit_order(reservations: &[(f64, f64)], capacity_bps: f64) -> Vec<bool> {
    let total: f64 = reservations.iter().map(|r| r.0.max(0.0)).sum();
    if total <= capacity_bps {
        return vec![true; reservations.len()];
    }
    let mut order: Vec<usize> = (0..reservations.len()).collect();
    order.sort_by(|&a, &b| {
        let (ra, rb) = (&reservations[a], &reservations[b]);
        rb.1.total_cmp(&ra.1)
            .then(ra.0.total_cmp(&rb.0))
            .then(a.cmp(&b))
    });
    let mut kept = vec![false; reservations.len()];
    let mut used = 0.0;
    for i in order {
        let r = reservations[i].0.max(0.0);
        if used + r <= capacity_bps {
            used += r;
            kept[i] = true;
        }
    }
    kept
}

/// [`admit_order`] applied to one window's link users: those not kept are reserved their
/// floor (the step's, or their reservation if smaller).
fn admit(mut users: Vec<LinkUser>, steps: &[Step], capacity_bps: f64) -> Vec<LinkUser> {
    let reservations: Vec<(f64, f64)> = users
        .iter()
        .map(|u| (u.allocated_bps, u.priority_weight))
        .collect();
    for ((u, s), kept) in users
        .iter_mut()
        .zip(steps)
        .zip(admit_order(&reservations, capacity_bps))
    {
        if !kept {
            u.allocated_bps = u.allocated_bps.min(s.floor_bps);
        }
    }
    users
}

/// One policy's score on one scenario.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PolicyScore {
    /// Share of demanded bits served within their latency target.
    pub qoe: f64,
    /// Reserved bits unused, as a share of demanded bits.
    pub waste: f64,
    /// Jain fairness of users' QoE.
    pub jain: f64,
    /// Demanded bits.
    pub demanded_bits: f64,
    /// Served in target.
    pub served_bits: f64,
    /// Reserved and unused.
    pub wasted_bits: f64,
    /// User-windows judged.
    pub user_windows: u64,
}

/// Plays `policy` over `trace` on a link of `capacity_bps`.
pub fn play(
    trace: &Trace,
    policy: ShapingPolicy,
    q: Option<&QTable>,
    capacity_bps: f64,
    headroom: f64,
) -> PolicyScore {
    let mut score = PolicyScore::default();
    let mut per_user: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    let mut learned_shortfall: HashMap<String, usize> = HashMap::new();
    for steps in trace.windows.values() {
        let learned_states = (policy == ShapingPolicy::Learned)
            .then(|| states(steps, &learned_shortfall, capacity_bps));
        let users: Vec<LinkUser> = steps
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let (allocated, ceiling, weight, target, burst) = match policy {
                    ShapingPolicy::StaticPersona => (
                        s.persona_guaranteed_bps,
                        s.persona_ceiling_bps,
                        s.persona_weight,
                        s.persona_target_secs,
                        s.persona_burst_bits,
                    ),
                    ShapingPolicy::StaticBlend => (
                        s.guaranteed_bps,
                        s.ceiling_bps,
                        s.weight,
                        s.target_secs,
                        s.burst_bits,
                    ),
                    ShapingPolicy::Predictive | ShapingPolicy::PredictiveAdmission => (
                        s.allocated_bps,
                        s.ceiling_bps,
                        s.weight,
                        s.target_secs,
                        s.burst_bits,
                    ),
                    ShapingPolicy::Foresight | ShapingPolicy::ForesightAdmission => (
                        s.demand_bits / trace.window_secs,
                        s.ceiling_bps.max(s.demand_bits / trace.window_secs),
                        s.weight,
                        s.target_secs,
                        s.burst_bits,
                    ),
                    ShapingPolicy::Reactive => (
                        (s.current_bps * headroom)
                            .clamp(s.floor_bps, s.ceiling_bps.max(s.floor_bps)),
                        s.ceiling_bps,
                        s.weight,
                        s.target_secs,
                        s.burst_bits,
                    ),
                    ShapingPolicy::Learned => {
                        let state = learned_states.as_ref().expect("learned")[i];
                        let a = q.map_or(KEEP, |q| q.best(state));
                        (
                            scaled(s, a),
                            s.ceiling_bps,
                            s.weight,
                            s.target_secs,
                            s.burst_bits,
                        )
                    }
                };
                LinkUser {
                    allocated_bps: allocated,
                    ceiling_bps: ceiling,
                    priority_weight: weight,
                    demand_bits: s.demand_bits,
                    burst_bits: burst,
                    target_secs: target,
                }
            })
            .collect();
        let users = match policy {
            ShapingPolicy::PredictiveAdmission | ShapingPolicy::ForesightAdmission => {
                admit(users, steps, capacity_bps)
            }
            _ => users,
        };
        let outcomes = share_link(&users, capacity_bps, trace.window_secs);
        for ((s, u), o) in steps.iter().zip(&users).zip(&outcomes) {
            score.demanded_bits += u.demand_bits;
            score.served_bits += o.served_bits;
            score.wasted_bits += o.wasted_bits;
            score.user_windows += 1;
            let e = per_user.entry(&s.user).or_default();
            e.0 += o.served_bits;
            e.1 += u.demand_bits;
            let share = if u.demand_bits > 0.0 {
                o.served_bits / u.demand_bits
            } else {
                1.0
            };
            learned_shortfall.insert(s.user.clone(), shortfall_bucket(share));
        }
    }
    score.qoe = score.served_bits / score.demanded_bits.max(1.0);
    score.waste = score.wasted_bits / score.demanded_bits.max(1.0);
    let shares: Vec<f64> = per_user
        .values()
        .filter(|(_, d)| *d > 0.0)
        .map(|(s, d)| s / d)
        .collect();
    let (sum, sq): (f64, f64) = shares
        .iter()
        .fold((0.0, 0.0), |(a, b), x| (a + x, b + x * x));
    score.jain = if sq > 0.0 {
        sum * sum / (shares.len() as f64 * sq)
    } else {
        1.0
    };
    score
}

/// The trace of a backfill's output: its policies joined with their feedback.
pub fn read_trace(output: &Path, catalogue: &PersonaCatalogue, window_secs: f64) -> Result<Trace> {
    let names: Vec<&String> = catalogue.personas.keys().collect();
    // (user, made_at) -> the policy's terms.
    let mut policies: HashMap<(String, i64), Step> = HashMap::new();
    let columns = [
        "window_end",
        "user_id",
        "persona",
        "floor_bps",
        "guaranteed_bps",
        "ceiling_bps",
        "allocated_bps",
        "sized_for_bps",
        "burst_bytes",
        "priority_weight",
        "latency_target_ms",
        "current_bytes",
    ];
    for path in parquet_files(&output.join("policies"))? {
        for_each_batch(&path, &columns, |b| {
            let c = b.columns();
            let ts = c[0].as_primitive::<TimestampMillisecondType>();
            let (user, persona) = (c[1].as_string::<i32>(), c[2].as_string::<i32>());
            let u = |k: usize, i: usize| c[k].as_primitive::<UInt64Type>().value(i) as f64;
            let f = |k: usize, i: usize| f64::from(c[k].as_primitive::<Float32Type>().value(i));
            for i in 0..b.num_rows() {
                let name = persona.value(i);
                let Some(entry) = catalogue.get(name) else {
                    continue;
                };
                let step = Step {
                    user: user.value(i).to_string(),
                    window_end: 0,
                    persona: names.iter().position(|n| *n == name).unwrap_or(0),
                    persona_guaranteed_bps: entry.bandwidth.guaranteed_kbps * 1e3,
                    persona_ceiling_bps: entry.bandwidth.ceiling_kbps * 1e3,
                    persona_weight: entry.priority_weight,
                    persona_target_secs: entry.latency_target_ms / 1e3,
                    persona_burst_bits: entry.bandwidth.burst_kb * 8e3,
                    floor_bps: u(3, i),
                    guaranteed_bps: u(4, i),
                    ceiling_bps: u(5, i),
                    allocated_bps: u(6, i),
                    sized_for_bps: u(7, i),
                    burst_bits: u(8, i) * 8.0,
                    weight: f(9, i),
                    target_secs: f(10, i) / 1e3,
                    current_bps: u(11, i) * 8.0 / window_secs,
                    demand_bits: 0.0,
                };
                policies.insert((step.user.clone(), ts.value(i)), step);
            }
        })?;
    }
    let mut trace = Trace {
        window_secs,
        windows: BTreeMap::new(),
    };
    let columns = [
        "window_end",
        "user_id",
        "made_at_window_end",
        "demand_bytes",
    ];
    for path in parquet_files(&output.join("shaping_feedback"))? {
        for_each_batch(&path, &columns, |b| {
            let c = b.columns();
            let ts = c[0].as_primitive::<TimestampMillisecondType>();
            let user = c[1].as_string::<i32>();
            let made = c[2].as_primitive::<TimestampMillisecondType>();
            let demand = c[3].as_primitive::<UInt64Type>();
            for i in 0..b.num_rows() {
                let key = (user.value(i).to_string(), made.value(i));
                if let Some(p) = policies.get(&key) {
                    let mut step = p.clone();
                    step.window_end = ts.value(i);
                    step.demand_bits = demand.value(i) as f64 * 8.0;
                    trace.windows.entry(step.window_end).or_default().push(step);
                }
            }
        })?;
    }
    for steps in trace.windows.values_mut() {
        steps.sort_by(|a, b| a.user.cmp(&b.user));
    }
    Ok(trace)
}

/// What a run's `shaping_feedback` table says of its allocations, overall and per persona.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FeedbackSummary {
    /// Allocations judged.
    pub judged: u64,
    /// Share of the demanded bytes served within the latency target (on each allocation
    /// alone, no shared link).
    pub served_share: f64,
    /// Share of the judged allocations whose whole demand was.
    pub within_target: f64,
    /// Share of the allocated bytes left unused.
    pub waste_share: f64,
    /// Per persona: (judged, served share of demand, waste share of allocation).
    pub personas: BTreeMap<String, (u64, f64, f64)>,
}

/// Summarises the `shaping_feedback` table of `output` (windows of `window_secs`).
pub fn feedback_summary(output: &Path, window_secs: f64) -> Result<FeedbackSummary> {
    // persona -> (judged, within, demanded, served, allocated, wasted)
    let mut acc: BTreeMap<String, (u64, u64, f64, f64, f64, f64)> = BTreeMap::new();
    let columns = [
        "persona",
        "allocated_bps",
        "demand_bytes",
        "waste_bytes",
        "served_share",
        "within_target",
    ];
    for path in parquet_files(&output.join("shaping_feedback"))? {
        for_each_batch(&path, &columns, |b| {
            let c = b.columns();
            let persona = c[0].as_string::<i32>();
            let allocated = c[1].as_primitive::<UInt64Type>();
            let demand = c[2].as_primitive::<UInt64Type>();
            let waste = c[3].as_primitive::<arrow_array::types::Float64Type>();
            let served = c[4].as_primitive::<arrow_array::types::Float64Type>();
            let within = c[5].as_boolean();
            for i in 0..b.num_rows() {
                let e = acc.entry(persona.value(i).to_string()).or_default();
                let d = demand.value(i) as f64;
                e.0 += 1;
                e.1 += u64::from(within.value(i));
                e.2 += d;
                e.3 += d * served.value(i);
                e.4 += allocated.value(i) as f64 * window_secs / 8.0;
                e.5 += waste.value(i);
            }
        })?;
    }
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 1.0 };
    let mut s = FeedbackSummary::default();
    let mut total = (0u64, 0u64, 0.0, 0.0, 0.0, 0.0);
    for (persona, e) in &acc {
        s.personas
            .insert(persona.clone(), (e.0, ratio(e.3, e.2), ratio(e.5, e.4)));
        total = (
            total.0 + e.0,
            total.1 + e.1,
            total.2 + e.2,
            total.3 + e.3,
            total.4 + e.4,
            total.5 + e.5,
        );
    }
    s.judged = total.0;
    s.within_target = ratio(total.1 as f64, total.0 as f64);
    s.served_share = ratio(total.3, total.2);
    s.waste_share = ratio(total.5, total.4);
    Ok(s)
}

/// One scenario's scores.
#[derive(Clone, Debug, Serialize)]
pub struct ShapingResult {
    /// The scenario.
    pub scenario: ShapingScenario,
    /// Link capacity, bits/s.
    pub capacity_bps: f64,
    /// Score per policy (held-out scenarios: all five; training ones: all but the learned).
    pub scores: BTreeMap<ShapingPolicy, PolicyScore>,
}

/// The evaluation's report.
#[derive(Clone, Debug, Serialize)]
pub struct ShapingReport {
    /// How it ran.
    pub config: ShapingConfig,
    /// Per scenario.
    pub results: Vec<ShapingResult>,
    /// Per policy, over the held-out scenarios (bits summed over them).
    pub held_out: BTreeMap<ShapingPolicy, PolicyScore>,
    /// The learned shaper.
    pub q_table: QTable,
    /// The better of predictive and learned, by held-out QoE.
    pub best: ShapingPolicy,
    /// Its QoE over the static blend's, minus 1.
    pub qoe_gain_over_static_blend: f64,
    /// Its waste is at most the static blend's.
    pub no_more_waste: bool,
    /// Its QoE is above the reactive policy's.
    pub beats_reactive: bool,
}

impl ShapingReport {
    /// The report as a table.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "{:<26} {:<27} {:>7} {:>8} {:>6}\n",
            "scenario", "policy", "QoE", "waste", "Jain"
        ));
        let mut row = |name: &str, p: ShapingPolicy, s: &PolicyScore| {
            out.push_str(&format!(
                "{:<26} {:<27} {:>6.1}% {:>7.1}% {:>6.3}\n",
                name,
                p.name(),
                100.0 * s.qoe,
                100.0 * s.waste,
                s.jain
            ));
        };
        for r in &self.results {
            for (p, s) in &r.scores {
                row(&r.scenario.name, *p, s);
            }
        }
        for (p, s) in &self.held_out {
            row("held-out (all)", *p, s);
        }
        out.push_str(&format!(
            "goal: {} QoE {:+.1}% over the static blend (>= +10%: {}), waste {} the static blend's, {} the reactive policy\n",
            self.best.name(),
            100.0 * self.qoe_gain_over_static_blend,
            if self.qoe_gain_over_static_blend >= 0.10 { "met" } else { "NOT met" },
            if self.no_more_waste { "at most" } else { "ABOVE" },
            if self.beats_reactive { "beats" } else { "does NOT beat" },
        ));
        out
    }
}

fn add(total: &mut PolicyScore, s: &PolicyScore) {
    total.demanded_bits += s.demanded_bits;
    total.served_bits += s.served_bits;
    total.wasted_bits += s.wasted_bits;
    total.user_windows += s.user_windows;
    total.qoe = total.served_bits / total.demanded_bits.max(1.0);
    total.waste = total.wasted_bits / total.demanded_bits.max(1.0);
}

/// Runs the evaluation: simulates and backfills each scenario under `work` with `job`,
/// trains the shaper on the training scenarios and scores every policy.
pub fn evaluate_shaping(
    scenarios: &[ShapingScenario],
    config: &ShapingConfig,
    job: &Config,
    work: &Path,
    on_done: &mut dyn FnMut(&str),
) -> Result<ShapingReport> {
    let catalogue = job.catalogue()?;
    let window_secs = job.window_spec().len_ms() as f64 / 1e3;
    let mut traces: Vec<(ShapingScenario, Trace)> = Vec::new();
    for scenario in scenarios {
        let (_, run, _) = simulate_and_backfill(
            &work.join(&scenario.name),
            &scenario.drifts,
            scenario.seed,
            config.users,
            config.days,
            job,
        )?;
        traces.push((
            scenario.clone(),
            read_trace(&run.output, &catalogue, window_secs)?,
        ));
        on_done(&scenario.name);
    }
    let training: Vec<(Trace, f64)> = traces
        .iter()
        .filter(|(s, _)| s.train)
        .map(|(_, t)| (t.clone(), config.capacity_factor * t.mean_demand_bps()))
        .collect();
    let q = train(&training, catalogue.personas.len(), config);
    let headroom = job.policy.headroom;
    let mut results = Vec::new();
    let mut held_out: BTreeMap<ShapingPolicy, PolicyScore> = BTreeMap::new();
    for (scenario, trace) in &traces {
        let capacity = config.capacity_factor * trace.mean_demand_bps();
        let mut scores = BTreeMap::new();
        for p in POLICIES {
            if p == ShapingPolicy::Learned && scenario.train {
                continue;
            }
            let s = play(trace, p, Some(&q), capacity, headroom);
            if !scenario.train {
                add(held_out.entry(p).or_default(), &s);
            }
            scores.insert(p, s);
        }
        results.push(ShapingResult {
            scenario: scenario.clone(),
            capacity_bps: capacity,
            scores,
        });
    }
    // Jain over the held-out scenarios: the mean of theirs.
    let tests = results.iter().filter(|r| !r.scenario.train).count().max(1) as f64;
    for (p, total) in held_out.iter_mut() {
        total.jain = results
            .iter()
            .filter(|r| !r.scenario.train)
            .filter_map(|r| r.scores.get(p).map(|s| s.jain))
            .sum::<f64>()
            / tests;
    }
    let get = |p: ShapingPolicy| held_out.get(&p).cloned().unwrap_or_default();
    let best = [
        ShapingPolicy::Learned,
        ShapingPolicy::Predictive,
        ShapingPolicy::PredictiveAdmission,
    ]
    .into_iter()
    .max_by(|a, b| get(*a).qoe.total_cmp(&get(*b).qoe))
    .unwrap_or(ShapingPolicy::Predictive);
    let blend = get(ShapingPolicy::StaticBlend);
    let b = get(best);
    Ok(ShapingReport {
        config: config.clone(),
        results,
        qoe_gain_over_static_blend: b.qoe / blend.qoe.max(1e-12) - 1.0,
        no_more_waste: b.wasted_bits <= blend.wasted_bits,
        beats_reactive: b.qoe > get(ShapingPolicy::Reactive).qoe,
        held_out,
        q_table: q,
        best,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(user: &str, window_end: i64, allocated: f64, demand_bits: f64) -> Step {
        Step {
            user: user.into(),
            window_end,
            persona: 0,
            persona_guaranteed_bps: 1e6,
            persona_ceiling_bps: 1e7,
            persona_weight: 1.0,
            persona_target_secs: 0.1,
            persona_burst_bits: 0.0,
            floor_bps: 1e4,
            guaranteed_bps: 1e6,
            ceiling_bps: 1e7,
            allocated_bps: allocated,
            sized_for_bps: allocated / 1.25,
            current_bps: allocated / 1.25,
            weight: 1.0,
            target_secs: 0.1,
            burst_bits: 0.0,
            demand_bits,
        }
    }

    #[test]
    fn buckets_cover_their_ranges() {
        assert_eq!(forecast_bucket(0.0), 0);
        assert_eq!(forecast_bucket(64_000.0), 1);
        assert_eq!(forecast_bucket(1e12), FORECAST_BUCKETS - 1);
        assert_eq!(
            (
                shortfall_bucket(1.0),
                shortfall_bucket(0.7),
                shortfall_bucket(0.1)
            ),
            (0, 1, 2)
        );
    }

    /// A user who needs more than its allocation and one who never uses its allocation, on a
    /// link with room: HTB-style borrowing serves the first whatever it reserves, so the
    /// shaper learns to reserve little for both: less waste, the same QoE.
    #[test]
    fn the_shaper_learns_to_cut_waste_without_losing_qoe() {
        let mut trace = Trace {
            window_secs: 60.0,
            windows: BTreeMap::new(),
        };
        for w in 0..300 {
            let hungry = step("hungry", w, 1e6, 2.5e6 * 60.0);
            let idle = Step {
                persona: 1,
                ..step("idle", w, 1e6, 0.0)
            };
            trace.windows.insert(w, vec![hungry, idle]);
        }
        let capacity = 1e7;
        let q = train(&[(trace.clone(), capacity)], 2, &ShapingConfig::default());
        let learned = play(&trace, ShapingPolicy::Learned, Some(&q), capacity, 1.25);
        let predictive = play(&trace, ShapingPolicy::Predictive, None, capacity, 1.25);
        assert_eq!(learned.qoe, predictive.qoe);
        assert!(
            learned.wasted_bits < 0.5 * predictive.wasted_bits,
            "learned {} vs predictive {}",
            learned.wasted_bits,
            predictive.wasted_bits
        );
        let idle_state = states(&trace.windows[&299], &HashMap::new(), capacity)[1];
        assert_eq!(ACTIONS[q.best(idle_state)], ACTIONS[0]);
    }

    #[test]
    fn play_scores_demand_served_waste_and_fairness() {
        let mut trace = Trace {
            window_secs: 60.0,
            windows: BTreeMap::new(),
        };
        trace
            .windows
            .insert(0, vec![step("a", 0, 1e6, 60e6), step("b", 0, 1e6, 0.0)]);
        let s = play(&trace, ShapingPolicy::Predictive, None, 1e9, 1.25);
        assert_eq!(s.qoe, 1.0);
        assert_eq!(s.wasted_bits, 60e6);
        assert_eq!(s.jain, 1.0);
        assert_eq!(s.user_windows, 2);
    }

    #[test]
    fn admission_serves_some_users_in_full_where_scaling_serves_none() {
        let mut trace = Trace {
            window_secs: 60.0,
            windows: BTreeMap::new(),
        };
        // Three users asking 4 Mbit/s each of a 10 Mbit/s link.
        let steps: Vec<Step> = ["a", "b", "c"]
            .iter()
            .map(|u| step(u, 0, 4e6, 4e6 * 60.0))
            .collect();
        trace.windows.insert(0, steps);
        let scaled = play(&trace, ShapingPolicy::Predictive, None, 10e6, 1.25);
        let admitted = play(&trace, ShapingPolicy::PredictiveAdmission, None, 10e6, 1.25);
        assert!(scaled.qoe < 0.1, "{scaled:?}");
        // Two served in full; the third borrows the last 2 Mbit/s and misses its target.
        assert!((admitted.qoe - 2.0 / 3.0).abs() < 0.01, "{admitted:?}");
        assert!(admitted.jain < 0.7, "less fair: {admitted:?}");
    }

    #[test]
    fn admission_keeps_everyone_when_the_link_suffices() {
        let r = [(1e6, 1.0), (2e6, 4.0), (3e6, 0.5)];
        assert_eq!(admit_order(&r, 6e6), vec![true; 3]);
        // Short: weight first (b), then the smallest (a); c does not fit.
        assert_eq!(admit_order(&r, 5e6), vec![true, true, false]);
    }
}
