//! `detect_drift`: drift of each segment's and persona's profile distribution against its
//! baseline, with a scaling recommendation sized from the demand forecasts of its users
//! (DESIGN.md step 8).

use crate::drift::{DriftConfig, DriftDetector, Step};
use crate::window::features::{Fnv, CALENDAR_START, FEATURES, NUM_BASE_FEATURES};

/// Calendar features (hour and weekday, sine and cosine).
const CALENDAR_FEATURES: usize = NUM_BASE_FEATURES - CALENDAR_START;
use crate::drift::scaling::{recommend, DemandForecast, DemandHistory, Scaling, ScalingConfig};
use crate::ops::batch::BatchByWindow;
use crate::ops::{worker_of, Snapshots, UserId};
use crate::vector::{Score, Vector};
use crate::Error;
use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use timely::dataflow::channels::pact::Exchange;

/// What a drift is about.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Scope {
    /// A known segment.
    Segment(String),
    /// A persona id.
    Persona(u32),
}

impl Scope {
    /// `segment` or `persona`.
    pub fn kind(&self) -> &'static str {
        match self {
            Scope::Segment(_) => "segment",
            Scope::Persona(_) => "persona",
        }
    }

    /// The segment name or the persona id, as text.
    pub fn id(&self) -> String {
        match self {
            Scope::Segment(s) => s.clone(),
            Scope::Persona(p) => p.to_string(),
        }
    }
}

/// A user of a scope in one window: the point the distribution is made of, and the demand.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ScopeMember {
    /// Latent profile.
    pub embedding: Vector,
    /// Behavioural features of the window.
    pub features: Vector,
    /// Requests (events) in the window.
    pub requests: u64,
    /// Predicted requests for the next windows (horizon 1 first), when forecasting is on.
    pub forecast: Option<Vector>,
}

/// A drift event with its scaling recommendation.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DriftEvent {
    /// The scope.
    pub scope: Scope,
    /// The estimated first window of the new distribution.
    pub onset: u64,
    /// Standardised centroid distance from the baseline (in baseline spreads between users).
    pub distance: Score,
    /// Threshold crossed.
    pub threshold: Score,
    /// `distance / threshold`.
    pub score: Score,
    /// Permutation-test p-value.
    pub p_value: Score,
    /// Features that moved most: name and change in baseline standard deviations.
    pub moved: Vec<(String, Score)>,
    /// Users of the scope in the window.
    pub users: u64,
    /// Their requests in the window.
    pub current_requests: Score,
    /// Their expected requests per future window: summed forecasts, calibrated on the scope's
    /// recent forecast errors (empty without forecasts).
    pub predicted_requests: Vector,
    /// Requests per future window covered with the configured probability.
    pub upper_requests: Vector,
    /// Residuals behind the calibration (0: the summed forecasts as they are).
    pub calibration_residuals: u64,
    /// Demand rise per window since the onset, carried forward (0: none, or `onset_trend` off).
    pub trend: Score,
    /// Horizon of the peak of `upper_requests` (1-based).
    pub peak_horizon: u32,
    /// Requests per window per instance.
    pub capacity_per_instance: Score,
    /// Instances for the current demand.
    pub current_instances: u64,
    /// Instances for the peak of `upper_requests`.
    pub recommended_instances: u64,
    /// `recommended - current`.
    pub change: i64,
}

impl DriftEvent {
    /// The recommendation's action (`scale_out`, `scale_in`, `hold`).
    pub fn action(&self) -> &'static str {
        crate::drift::scaling::action(self.change)
    }
}

/// Every scope's detector and demand history.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DriftState {
    /// Detector per scope.
    #[serde(with = "as_pairs")]
    pub detectors: BTreeMap<Scope, DriftDetector>,
    /// Demand and summed forecasts per scope, for calibrating its demand forecasts.
    #[serde(default, with = "as_pairs")]
    pub demand: BTreeMap<Scope, DemandHistory>,
}

/// Serialises a map as a list of `(key, value)` pairs: formats such as JSON only take strings
/// as map keys, and scopes are not.
mod as_pairs {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;

    pub fn serialize<K: Serialize, V: Serialize, S: Serializer>(
        map: &BTreeMap<K, V>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(map.iter())
    }

    pub fn deserialize<'de, K, V, D>(d: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Ok(Vec::<(K, V)>::deserialize(d)?.into_iter().collect())
    }
}

/// Detector states after each window, for checkpoints (this worker's scopes).
pub type DriftSnapshots = Snapshots<DriftState>;

impl DriftState {
    /// The part of this state that worker `index` of `peers` detects drift for: the scopes
    /// [`DetectDrift::detect_drift`] sends it.
    pub fn owned_by(&self, index: usize, peers: usize) -> DriftState {
        let mine = |s: &Scope| worker_of(scope_hash(s), peers) == index;
        DriftState {
            detectors: self
                .detectors
                .iter()
                .filter(|(s, _)| mine(s))
                .map(|(s, d)| (s.clone(), d.clone()))
                .collect(),
            demand: self
                .demand
                .iter()
                .filter(|(s, _)| mine(s))
                .map(|(s, d)| (s.clone(), d.clone()))
                .collect(),
        }
    }

    /// The union of the states of disjoint sets of scopes (each worker's part): an error
    /// names a scope two parts hold.
    ///
    /// ```
    /// use personaflow_operators::drift::operator::DriftState;
    /// let whole = DriftState::default();
    /// let parts: Vec<DriftState> = (0..3).map(|i| whole.owned_by(i, 3)).collect();
    /// assert_eq!(DriftState::merge(parts).unwrap(), whole);
    /// ```
    pub fn merge(parts: impl IntoIterator<Item = DriftState>) -> crate::Result<DriftState> {
        let mut all = DriftState::default();
        for part in parts {
            for (scope, d) in part.detectors {
                if all.detectors.insert(scope.clone(), d).is_some() {
                    return Err(Error::StateOverlap(format!("drift scope {scope:?}")));
                }
            }
            for (scope, d) in part.demand {
                if all.demand.insert(scope.clone(), d).is_some() {
                    return Err(Error::StateOverlap(format!("demand scope {scope:?}")));
                }
            }
        }
        Ok(all)
    }
}

/// The drift events of one window: the plain function behind [`DetectDrift::detect_drift`].
/// `members` must be sorted by scope (then user).
pub fn window_drift(
    state: &mut DriftState,
    window: u64,
    members: &[((Scope, UserId), ScopeMember)],
    config: &DriftConfig,
    scaling: &ScalingConfig,
) -> Vec<DriftEvent> {
    let mut events = Vec::new();
    let mut start = 0;
    while start < members.len() {
        let scope = &members[start].0 .0;
        let end = start
            + members[start..]
                .iter()
                .take_while(|((s, _), _)| s == scope)
                .count();
        let group = &members[start..end];
        let dims = group[0].1.embedding.len();
        let keyed: Vec<(u64, &ScopeMember)> = group
            .iter()
            .filter(|(_, m)| m.embedding.len() == dims)
            .map(|((_, user), m)| (Fnv::hash_str(user), m))
            .collect();
        let keys: Vec<u64> = keyed.iter().map(|(k, _)| *k).collect();
        let group: Vec<&ScopeMember> = keyed.iter().map(|(_, m)| *m).collect();
        let points: Vec<&[f32]> = group.iter().map(|m| m.embedding.as_slice()).collect();
        let features: Vec<&[f32]> = group.iter().map(|m| m.features.0.as_slice()).collect();
        let mut step = Step::new(
            window,
            &points,
            &keys,
            &features,
            config.max_points,
            config.seed,
        );
        // Calendar features say what time it is, not how users behave: they always "move".
        step.ignore_features(CALENDAR_START..CALENDAR_START + CALENDAR_FEATURES);
        let current: f64 = group.iter().map(|m| m.requests as f64).sum();
        let horizon = group
            .iter()
            .filter_map(|m| m.forecast.as_ref().map(Vector::len))
            .max()
            .unwrap_or(0);
        let mut summed = vec![0.0f64; horizon];
        for f in group.iter().filter_map(|m| m.forecast.as_ref()) {
            for (p, x) in summed.iter_mut().zip(f.as_slice()) {
                *p += f64::from(*x);
            }
        }
        let summed = scaling.over_horizon(&summed);
        let demand = state.demand.entry(scope.clone()).or_default();
        demand.observe(window, current, &summed, scaling.calibration_windows);
        let detector = state.detectors.entry(scope.clone()).or_default();
        if let Some(alarm) = detector.observe(step, config) {
            let mut forecast = if scaling.calibration_windows == 0 {
                DemandForecast::uncalibrated(&summed)
            } else {
                demand.forecast(&summed, current, scaling.coverage)
            };
            if scaling.onset_trend {
                if let Some(trend) = demand.trend_since(alarm.onset) {
                    if trend.significant() {
                        forecast.carry_trend(trend.slope);
                    }
                }
            }
            let rec: Scaling = recommend(
                group.len(),
                current,
                &forecast.expected,
                &forecast.upper,
                scaling.capacity_per_instance,
            );
            let f32s = |v: &[f64]| Vector(v.iter().map(|x| *x as f32).collect());
            events.push(DriftEvent {
                scope: scope.clone(),
                onset: alarm.onset,
                distance: Score(alarm.distance as f32),
                threshold: Score(alarm.threshold as f32),
                score: Score(alarm.score as f32),
                p_value: Score(alarm.p_value as f32),
                moved: alarm
                    .moved
                    .iter()
                    .map(|(i, z)| {
                        let name = FEATURES.get(*i).map_or("?", |f| f.name);
                        (name.to_string(), Score(*z as f32))
                    })
                    .collect(),
                users: rec.users as u64,
                current_requests: Score(rec.current_requests as f32),
                predicted_requests: f32s(&rec.predicted_requests),
                upper_requests: f32s(&rec.upper_requests),
                calibration_residuals: forecast.residuals as u64,
                trend: Score(forecast.trend as f32),
                peak_horizon: rec.peak_horizon as u32,
                capacity_per_instance: Score(rec.capacity_per_instance as f32),
                current_instances: rec.current_instances,
                recommended_instances: rec.recommended_instances,
                change: rec.change,
            });
        }
        start = end;
    }
    events
}

fn scope_hash(scope: &Scope) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    scope.hash(&mut h);
    h.finish()
}

/// Detects drift.
pub trait DetectDrift<'scope> {
    /// For the members of each scope at each window, one [`DriftEvent`] fact at the window
    /// when the scope's distribution has drifted from its baseline ([`window_drift`]). Scopes
    /// travel to the worker of their hash, which keeps their detectors and feeds them window
    /// by window in order, with each scope's demand history (which calibrates the forecasts a
    /// recommendation is sized from). `initial` `(w, state)` resumes from the state as of the
    /// end of window `w` (this worker's part of it: [`DriftState::owned_by`]), skipping windows
    /// up to `w`. With `snapshots`, the state is kept there after each window (and the initial
    /// one at `w`), where a checkpoint takes it ([`Snapshots`]).
    ///
    /// ```
    /// use differential_dataflow::input::Input;
    /// use personaflow_operators::drift::DriftConfig;
    /// use personaflow_operators::drift::operator::{DetectDrift, Scope, ScopeMember};
    /// use personaflow_operators::drift::scaling::ScalingConfig;
    /// use personaflow_operators::ops::UserId;
    /// use personaflow_operators::vector::Vector;
    /// use std::sync::{Arc, Mutex};
    /// let found = Arc::new(Mutex::new(Vec::new()));
    /// let sink = found.clone();
    /// // A short baseline and current window, and 3 confirming windows, for a quick example.
    /// let config = DriftConfig { baseline: 20, recent: 5, confirm: 3, ..DriftConfig::default() };
    /// timely::example(move |scope| {
    ///     let (mut input, members) = scope.new_collection::<((Scope, UserId), ScopeMember), isize>();
    ///     members
    ///         .detect_drift(config, ScalingConfig::default(), None, None)
    ///         .inspect(move |((s, e), t, _)| sink.lock().unwrap().push((s.clone(), *t, e.onset, e.action())));
    ///     for w in 0..60u64 {
    ///         for u in 0..20 {
    ///             let x = if w < 40 { 0.0 } else { 5.0 } + (u % 5) as f32 * 0.1;
    ///             let m = ScopeMember { embedding: Vector(vec![x]), features: Vector(vec![x]), requests: 1, forecast: None };
    ///             input.insert(((Scope::Persona(0), format!("u{u}").into()), m));
    ///         }
    ///         input.advance_to(w + 1);
    ///     }
    /// });
    /// // The shift at window 40 is confirmed at window 42, with onset 40; with no forecast the
    /// // recommendation is to hold.
    /// assert_eq!(*found.lock().unwrap(), vec![(Scope::Persona(0), 42, 40, "hold")]);
    /// ```
    fn detect_drift(
        self,
        config: DriftConfig,
        scaling: ScalingConfig,
        initial: Option<(u64, DriftState)>,
        snapshots: Option<DriftSnapshots>,
    ) -> VecCollection<'scope, u64, (Scope, DriftEvent), isize>;
}

impl<'scope> DetectDrift<'scope>
    for VecCollection<'scope, u64, ((Scope, UserId), ScopeMember), isize>
{
    fn detect_drift(
        self,
        config: DriftConfig,
        scaling: ScalingConfig,
        initial: Option<(u64, DriftState)>,
        snapshots: Option<DriftSnapshots>,
    ) -> VecCollection<'scope, u64, (Scope, DriftEvent), isize> {
        let (resume_after, mut state) = match initial {
            Some((w, s)) => (Some(w), s),
            None => (None, DriftState::default()),
        };
        if let (Some(w), Some(s)) = (resume_after, &snapshots) {
            s.borrow_mut().insert(w, state.clone());
        }
        self.fold_by_window(
            Exchange::new(
                |(((s, _), _), _, _): &(((Scope, UserId), ScopeMember), u64, isize)| scope_hash(s),
            ),
            "DetectDrift",
            move |window, members, out| {
                if resume_after.is_some_and(|r| window <= r) {
                    return;
                }
                let events = window_drift(&mut state, window, &members, &config, &scaling);
                out.extend(events.into_iter().map(|e| (e.scope.clone(), e)));
                if let Some(s) = &snapshots {
                    s.borrow_mut().insert(window, state.clone());
                }
            },
        )
    }
}
