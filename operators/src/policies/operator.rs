//! `policies`: each active user's blended policy and socket profile, window by window.

use crate::embed::operator::Profile;
use crate::forecast::Forecast;
use crate::ops::consolidate;
use crate::ops::{user_hash, UserId, UserWindow};
use crate::personas::operator::PersonaAssignment;
use crate::policies::blend::{Blender, DemandOutlook, Policy, PolicyConfig};
use crate::policies::catalogue::PersonaCatalogue;
use crate::policies::socket::{socket_profile, RiskBySegment, SocketProfile, WindowDemand};
use crate::policies::Shaped;
use crate::resonance::Resonance;
use crate::vector::Score;
use crate::WindowSpec;
use differential_dataflow::{AsCollection, ExchangeData, VecCollection};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::{Operator, OutputBuilder};
use timely::dataflow::operators::{Capability, InputCapability};
use timely::progress::frontier::MutableAntichain;

/// One of the things a policy is made from, for one user and window.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PolicyPart {
    /// From the profile: anomaly score, known segment, events and the window's demand.
    Profile {
        /// Anomaly score.
        anomaly_score: Option<Score>,
        /// Known segment (authenticated users).
        segment: Option<String>,
        /// Events in the window.
        events: u64,
        /// The window's demand.
        demand: WindowDemand,
    },
    /// The resonance distribution: (segment, probability), and the top segment.
    Resonance {
        /// Segment probabilities.
        scores: Vec<(Arc<str>, Score)>,
        /// Most probable segment.
        top: Arc<str>,
    },
    /// The demand forecast.
    Forecast(Forecast),
    /// Clustered persona probabilities.
    Personas(Vec<(u32, Score)>),
}

impl PolicyPart {
    /// A profile's part.
    pub fn of_profile(p: &Profile) -> Self {
        PolicyPart::Profile {
            anomaly_score: p.anomaly_score,
            segment: p.segment.clone(),
            events: p.events,
            demand: p.demand.clone(),
        }
    }

    /// A persona assignment's part.
    pub fn of_assignment(a: &PersonaAssignment) -> Self {
        PolicyPart::Personas(
            a.ids
                .iter()
                .copied()
                .zip(a.probabilities.0.iter().map(|p| Score(*p)))
                .collect(),
        )
    }
}

/// Everything known of one user in one window, gathered from the parts.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
struct Gathered {
    user: UserId,
    anomaly_score: Option<Score>,
    segment: Option<String>,
    events: u64,
    demand: WindowDemand,
    scores: Vec<(Arc<str>, Score)>,
    top: Option<Arc<str>>,
    forecast: Option<Forecast>,
    personas: Vec<(u32, Score)>,
}

impl Gathered {
    /// The segment the user's risk is calibrated in: the known one, else the top resonance
    /// segment, else none (`""`).
    fn risk_segment(&self) -> &str {
        self.segment
            .as_deref()
            .or(self.top.as_deref())
            .unwrap_or_default()
    }
}

/// Makes policies.
pub trait ShapePolicies<'scope> {
    /// For each user with a [`PolicyPart::Profile`] fact at window `w`, one fact
    /// `((user, w), Shaped)` (its policy and socket profile) at `w`, made from the parts of `(user, w)`
    /// present (resonance, forecast and persona parts are optional) as
    /// [`blend`](crate::policies::blend) and [`socket`](crate::policies::socket) say.
    ///
    /// Parts travel to the worker of their user (the one that holds the user's sequences and
    /// profiles, so those parts stay where they are) and are gathered once their window is
    /// complete; there the users stay. What a user's risk needs from the other workers is the
    /// anomaly scores of its segment: each worker sends every worker its window's scores by
    /// segment (a few lists a window, [`SegmentScores`]), and each worker keeps every
    /// segment's scores of the last `policy.risk_windows` windows (so the results do not
    /// depend on the number of workers) and blends its own users' policies. So the blending
    /// is spread by user even when one segment holds every user (a log without segments), and
    /// no user's parts cross workers twice to learn one number. The risk calibrations are the
    /// operator's only state, and they are windowed: a restarted job rebuilds them from the
    /// windows it replays.
    ///
    /// ```
    /// use personaflow_operators::{Event, WindowSpec};
    /// use personaflow_operators::embed::StandardisedEmbedder;
    /// use personaflow_operators::ops::*;
    /// use personaflow_operators::policies::{PolicyConfig, PersonaCatalogue, PolicyPart};
    /// use std::sync::Arc;
    /// use timely::dataflow::operators::ToStream;
    /// let mut e = Event::new(1_000, "u", "stream_chunk");
    /// e.bytes_in = Some(7_500_000);
    /// timely::example(move |scope| {
    ///     vec![e]
    ///         .to_stream(scope)
    ///         .container::<Vec<_>>()
    ///         .window_aggregate(WindowSpec::default())
    ///         .sequences(16)
    ///         .embed_profiles(Box::new(StandardisedEmbedder::default()), 64, ErrorSlot::default())
    ///         .map(|(k, p)| (k, PolicyPart::of_profile(&p)))
    ///         .policies(Arc::new(PersonaCatalogue::example()), PolicyConfig::default(), WindowSpec::default())
    ///         .inspect(|(((u, w), shaped), _, _)| {
    ///             let (p, s) = &**shaped;
    ///             // No resonance: all to default; 1 Mbit/s now, x 1.25.
    ///             assert!(&**u == "u" && *w == 0 && &*p.persona == "default" && p.allocated_bps == 1_250_000);
    ///             assert_eq!(s.request_type.name(), "streaming");
    ///         });
    /// });
    /// ```
    fn policies(
        self,
        catalogue: Arc<PersonaCatalogue>,
        config: PolicyConfig,
        spec: WindowSpec,
    ) -> VecCollection<'scope, u64, (UserWindow, Shaped), isize>;
}

impl<'scope> ShapePolicies<'scope> for VecCollection<'scope, u64, (UserWindow, PolicyPart), isize> {
    fn policies(
        self,
        catalogue: Arc<PersonaCatalogue>,
        config: PolicyConfig,
        spec: WindowSpec,
    ) -> VecCollection<'scope, u64, (UserWindow, Shaped), isize> {
        policies_from(vec![PolicyInput::new(self)], catalogue, config, spec)
    }
}

/// What a [`PolicyPart`] is made from: a profile, a resonance, a persona assignment, a
/// forecast, or a part itself.
pub trait IntoPolicyPart {
    /// The part.
    fn into_policy_part(self) -> PolicyPart;
}

impl IntoPolicyPart for PolicyPart {
    fn into_policy_part(self) -> PolicyPart {
        self
    }
}

impl IntoPolicyPart for Profile {
    fn into_policy_part(self) -> PolicyPart {
        PolicyPart::of_profile(&self)
    }
}

impl IntoPolicyPart for Resonance {
    /// Each segment's probability and the top segment, the names moved rather than copied.
    fn into_policy_part(self) -> PolicyPart {
        let top = Arc::clone(&self.scores[self.top].segment);
        PolicyPart::Resonance {
            scores: self
                .scores
                .into_iter()
                .map(|s| (s.segment, s.probability))
                .collect(),
            top,
        }
    }
}

impl IntoPolicyPart for PersonaAssignment {
    fn into_policy_part(self) -> PolicyPart {
        PolicyPart::of_assignment(&self)
    }
}

impl IntoPolicyPart for Forecast {
    fn into_policy_part(self) -> PolicyPart {
        PolicyPart::Forecast(self)
    }
}

/// The parts of each window on this worker, not yet complete: the window's capabilities (for
/// the gathered users and for their scores, [`Held`]) and its updates.
type PendingParts = BTreeMap<u64, (Held, Vec<((UserWindow, PolicyPart), isize)>)>;

/// The gathering operator's capabilities for one window: its output of gathered users
/// (port 0) and of their anomaly scores by segment (port 1).
type Held = [Capability<u64>; 2];

/// Both of the gathering operator's capabilities for the records of a window that came in a
/// message with capability `cap` (as [`crate::ops::held`] for one output).
fn held_for_both(cap: &InputCapability<u64>) -> Held {
    [cap.retain(0), cap.retain(1)]
}

/// One worker's anomaly scores of one segment (the one its users' risk is calibrated in) in
/// one window, addressed to one worker (`to`): every worker gets every worker's, and keeps
/// each segment's calibration whole.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SegmentScores {
    /// The worker it goes to.
    pub to: u64,
    /// The window.
    pub window: u64,
    /// The segment.
    pub segment: String,
    /// The scores, in no particular order.
    pub scores: Vec<f32>,
}

/// Moves what arrived at one input of the gathering operator into the pending parts.
type Drain = Box<dyn FnMut(&mut PendingParts)>;

/// One input of [`policies_from`]: a collection of facts of users and windows, each of which
/// becomes one [`PolicyPart`] ([`IntoPolicyPart`]) as it arrives at the gathering operator.
pub struct PolicyInput<'scope>(Box<dyn AttachParts<'scope> + 'scope>);

impl<'scope> PolicyInput<'scope> {
    /// An input of facts of type `D`.
    pub fn new<D>(facts: VecCollection<'scope, u64, (UserWindow, D), isize>) -> Self
    where
        D: ExchangeData + IntoPolicyPart,
    {
        PolicyInput(Box::new(Parts(facts)))
    }
}

impl std::fmt::Debug for PolicyInput<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PolicyInput")
    }
}

/// An input of the gathering operator, typed.
struct Parts<'scope, D: 'static>(VecCollection<'scope, u64, (UserWindow, D), isize>);

/// Adds an input to the gathering operator; returns what moves its records into the pending
/// parts, as parts.
trait AttachParts<'scope> {
    fn attach(self: Box<Self>, builder: &mut OperatorBuilder<'scope, u64>) -> Drain;
    fn scope(&self) -> timely::dataflow::Scope<'scope, u64>;
}

impl<'scope, D> AttachParts<'scope> for Parts<'scope, D>
where
    D: ExchangeData + IntoPolicyPart,
{
    fn attach(self: Box<Self>, builder: &mut OperatorBuilder<'scope, u64>) -> Drain {
        // Each part goes to the worker of its user (where its profile already is).
        let to_user =
            Exchange::new(|(((user, _), _), _, _): &((UserWindow, D), u64, isize)| user_hash(user));
        let mut input = builder.new_input(self.0.inner, to_user);
        Box::new(move |pending: &mut PendingParts| {
            input.for_each_time(|cap, data| {
                for batch in data {
                    for ((key, fact), time, diff) in batch.drain(..) {
                        pending
                            .entry(time)
                            .or_insert_with(|| (held_for_both(&cap), Vec::new()))
                            .1
                            .push(((key, fact.into_policy_part()), diff));
                    }
                }
            })
        })
    }

    fn scope(&self) -> timely::dataflow::Scope<'scope, u64> {
        self.0.inner.scope()
    }
}

/// [`ShapePolicies::policies`] of the parts made from several collections (at least one):
/// one operator gathers them all (`GatherPolicyParts`, an input per collection), so that the
/// parts of a window do not each pass through an operator that makes them parts and another
/// that concatenates them, which on a sparse log cost a time at each of those operators for
/// every window with data. The same policies as `policies` of the concatenation of the
/// collections made into parts.
///
/// ```
/// use personaflow_operators::{Event, WindowSpec};
/// use personaflow_operators::embed::StandardisedEmbedder;
/// use personaflow_operators::ops::*;
/// use personaflow_operators::policies::operator::{policies_from, PolicyInput};
/// use personaflow_operators::policies::{PolicyConfig, PersonaCatalogue};
/// use std::sync::Arc;
/// use timely::dataflow::operators::ToStream;
/// timely::example(move |scope| {
///     let profiles = vec![Event::new(1_000, "u", "page_view")]
///         .to_stream(scope)
///         .container::<Vec<_>>()
///         .window_aggregate(WindowSpec::default())
///         .sequences(16)
///         .embed_profiles(Box::new(StandardisedEmbedder::default()), 64, ErrorSlot::default());
///     let catalogue = Arc::new(PersonaCatalogue::example());
///     policies_from(vec![PolicyInput::new(profiles)], catalogue, PolicyConfig::default(), WindowSpec::default())
///         .inspect(|(((u, w), shaped), _, _)| assert!(&**u == "u" && *w == 0 && &*shaped.0.persona == "default"));
/// });
/// ```
pub fn policies_from<'scope>(
    inputs: Vec<PolicyInput<'scope>>,
    catalogue: Arc<PersonaCatalogue>,
    config: PolicyConfig,
    spec: WindowSpec,
) -> VecCollection<'scope, u64, (UserWindow, Shaped), isize> {
    let scope = inputs
        .first()
        .expect("policies_from needs at least one input")
        .0
        .scope();
    let mut builder = OperatorBuilder::new("GatherPolicyParts".to_owned(), scope);
    let mut drains: Vec<Drain> = inputs
        .into_iter()
        .map(|input| input.0.attach(&mut builder))
        .collect();
    let peers = scope.peers() as u64;
    let (output, gathered) = builder.new_output::<Vec<(Gathered, u64, isize)>>();
    let mut output = OutputBuilder::<u64, CapacityContainerBuilder<Vec<_>>>::from(output);
    let (scores_output, scores) = builder.new_output::<Vec<SegmentScores>>();
    let mut scores_output =
        OutputBuilder::<u64, CapacityContainerBuilder<Vec<_>>>::from(scores_output);
    builder.build(move |_capabilities| {
        let mut pending = PendingParts::new();
        move |frontiers: &[MutableAntichain<u64>]| {
            for drain in drains.iter_mut() {
                drain(&mut pending);
            }
            let mut output = output.activate();
            let mut scores_output = scores_output.activate();
            while let Some(entry) = pending.first_entry() {
                let time = *entry.key();
                if frontiers.iter().any(|f| f.less_equal(&time)) {
                    break;
                }
                let ([cap, scores_cap], mut updates) = entry.remove();
                // Net the window's updates: only parts inserted at this window (and not
                // retracted within it) are gathered, in key order.
                consolidate(&mut updates);
                let parts = updates
                    .into_iter()
                    .filter(|(_, r)| *r > 0)
                    .map(|(d, _)| d)
                    .collect();
                let users = gather(parts);
                let mut session = scores_output.session(&scores_cap);
                for (segment, scores) in scores_by_segment(&users) {
                    session.give_iterator((0..peers).map(|to| SegmentScores {
                        to,
                        window: time,
                        segment: segment.to_string(),
                        scores: scores.clone(),
                    }));
                }
                output
                    .session(&cap)
                    .give_iterator(users.into_iter().map(|g| (g, time, 1isize)));
            }
            crate::ops::follow_frontier(
                pending.values_mut().flat_map(|(caps, _)| caps.iter_mut()),
                crate::ops::earliest(frontiers),
            );
        }
    });
    shape(gathered, scores, catalogue, config, spec)
}

/// The anomaly scores of `users` by the segment their risk is calibrated in
/// ([`Gathered::risk_segment`]), segments in name order, each segment's scores in the users'
/// order; users without a score have none to give.
fn scores_by_segment(users: &[Gathered]) -> BTreeMap<&str, Vec<f32>> {
    let mut by_segment: BTreeMap<&str, Vec<f32>> = BTreeMap::new();
    for g in users {
        if let Some(score) = g.anomaly_score {
            by_segment
                .entry(g.risk_segment())
                .or_default()
                .push(score.0);
        }
    }
    by_segment
}

/// A window of the policies' last operator, not yet complete on this worker: a capability
/// for it once one of its users has come (none for a window of other workers' scores only),
/// its users, and every worker's scores of it by segment.
#[derive(Default)]
struct ShapeWindow {
    cap: Option<Capability<u64>>,
    users: Vec<Gathered>,
    scores: BTreeMap<String, Vec<f32>>,
}

/// The gathered users' risk calibrated by segment and their policies blended, each on its
/// user's worker; `scores` brings every worker's anomaly scores by segment (see
/// [`ShapePolicies::policies`]). A window is shaped once neither input can bring more of it,
/// windows in order: each worker's calibrations take every window's scores in turn.
fn shape<'scope>(
    gathered: timely::dataflow::StreamVec<'scope, u64, (Gathered, u64, isize)>,
    scores: timely::dataflow::StreamVec<'scope, u64, SegmentScores>,
    catalogue: Arc<PersonaCatalogue>,
    config: PolicyConfig,
    spec: WindowSpec,
) -> VecCollection<'scope, u64, (UserWindow, Shaped), isize> {
    let mut risk = RiskBySegment::new();
    let risk_windows = config.risk_windows.max(1);
    let window_secs = spec.len_ms() as f64 / 1_000.0;
    let blender = Blender::new(&catalogue);
    gathered
        .binary_frontier::<_, CapacityContainerBuilder<Vec<_>>, _, _, _, _>(
            scores,
            Pipeline,
            Exchange::new(|s: &SegmentScores| s.to),
            "BlendPolicies",
            move |_cap, _info| {
                let mut pending: BTreeMap<u64, ShapeWindow> = BTreeMap::new();
                move |(users, users_frontier), (scores, scores_frontier), output| {
                    users.for_each_time(|cap, data| {
                        for batch in data {
                            for (g, window, diff) in batch.drain(..) {
                                // One fact per user and window: the gathering made it.
                                debug_assert_eq!(diff, 1);
                                let w = pending.entry(window).or_default();
                                w.cap.get_or_insert_with(|| crate::ops::held(&cap));
                                w.users.push(g);
                            }
                        }
                    });
                    scores.for_each_time(|_cap, data| {
                        for batch in data {
                            for s in batch.drain(..) {
                                let w = pending.entry(s.window).or_default();
                                w.scores.entry(s.segment).or_default().extend(s.scores);
                            }
                        }
                    });
                    while let Some(entry) = pending.first_entry() {
                        let window = *entry.key();
                        if users_frontier.less_equal(&window) || scores_frontier.less_equal(&window)
                        {
                            break;
                        }
                        let ShapeWindow { cap, users, scores } = entry.remove();
                        calibrate(&mut risk, risk_windows, window, scores);
                        let Some(cap) = cap else { continue };
                        output
                            .session(&cap)
                            .give_iterator(users.into_iter().map(|mut g| {
                                let r = risk_of(&risk, &g);
                                let shaped =
                                    policy_of(&blender, &catalogue, &config, window_secs, &g, r);
                                let key = (std::mem::take(&mut g.user), window);
                                ((key, Arc::new(shaped)), window, 1isize)
                            }));
                    }
                    crate::ops::follow_frontier(
                        pending.values_mut().filter_map(|w| w.cap.as_mut()),
                        crate::ops::earliest([users_frontier, scores_frontier]),
                    );
                }
            },
        )
        .as_collection()
}

/// Adds a window's anomaly scores (every worker's, by segment) to each segment's calibration,
/// which forgets the windows `risk_windows` or more windows older. A segment with no scores
/// in the window is left as it is: the windows it would forget are forgotten at its next
/// scores, before any quantile is read from it, so every quantile is the same.
fn calibrate(
    risk: &mut RiskBySegment,
    risk_windows: u64,
    window: u64,
    scores: BTreeMap<String, Vec<f32>>,
) {
    for (segment, scores) in scores {
        risk.entry(segment)
            .or_default()
            .push(window, scores, risk_windows);
    }
}

/// A gathered user's risk: the quantile of its anomaly score among its segment's calibrated
/// scores (`None` without a score).
fn risk_of(risk: &RiskBySegment, g: &Gathered) -> Option<f64> {
    let score = g.anomaly_score?;
    risk.get(g.risk_segment())?.quantile(score.0)
}

/// The users of one window, their parts gathered (parts sorted by key, as `fold_by_window`
/// hands them, so each user's parts are consecutive); users without a profile part are
/// dropped.
fn gather(parts: Vec<(UserWindow, PolicyPart)>) -> Vec<Gathered> {
    // (has a profile part, what is gathered) of each user, in the parts' (key) order.
    let mut users: Vec<(bool, Gathered)> = Vec::new();
    for ((user, _), part) in parts {
        if users.last().is_none_or(|(_, g)| g.user != user) {
            users.push((
                false,
                Gathered {
                    user,
                    ..Gathered::default()
                },
            ));
        }
        let (has_profile, g) = users.last_mut().expect("pushed");
        match part {
            PolicyPart::Profile {
                anomaly_score,
                segment,
                events,
                demand,
            } => {
                *has_profile = true;
                g.anomaly_score = anomaly_score;
                g.segment = segment;
                g.events = events;
                g.demand = demand;
            }
            PolicyPart::Resonance { scores, top } => {
                g.scores = scores;
                g.top = Some(top);
            }
            PolicyPart::Forecast(f) => g.forecast = Some(f),
            PolicyPart::Personas(p) => g.personas = p,
        }
    }
    users
        .into_iter()
        .filter(|(p, _)| *p)
        .map(|(_, g)| g)
        .collect()
}

/// One user's policy and socket profile.
fn policy_of(
    blender: &Blender,
    catalogue: &PersonaCatalogue,
    config: &PolicyConfig,
    window_secs: f64,
    g: &Gathered,
    risk: Option<f64>,
) -> (Policy, SocketProfile) {
    let segments: Vec<(&str, f64)> = g
        .scores
        .iter()
        .map(|(s, p)| (&**s, f64::from(p.0)))
        .collect();
    let personas: Vec<(u32, f64)> = g
        .personas
        .iter()
        .map(|(id, p)| (*id, f64::from(p.0)))
        .collect();
    let distribution = blender.distribution(&segments, &personas);
    let horizon = |f: &Forecast| f.horizon().min(config.horizon);
    let peak = |f: &Forecast, pick: fn((f32, f32)) -> f32| {
        (1..=horizon(f))
            .filter_map(|h| f.at(h).map(pick))
            .map(f64::from)
            .fold(0.0f64, f64::max)
    };
    let demand = DemandOutlook {
        peak_bytes: g.forecast.as_ref().map(|f| peak(f, |x| x.1)),
        peak_requests: g.forecast.as_ref().map(|f| peak(f, |x| x.0)),
        current_bytes: (g.demand.bytes_in + g.demand.bytes_out) as f64,
        current_requests: g.events as f64,
    };
    let policy = blender.blend(&distribution, &demand, window_secs, config);
    let next = g
        .forecast
        .as_ref()
        .and_then(|f| f.at(1))
        .map(|(r, b)| (f64::from(b), f64::from(r)));
    let socket = socket_profile(
        &policy,
        &g.demand,
        next,
        risk,
        &catalogue.endpoints,
        window_secs,
        config,
    );
    (policy, socket)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resonance::SegmentScore;
    use rand::{Rng, SeedableRng};

    /// A resonance's part holds each segment's name and probability, in order, and the top
    /// segment's name, on seeded random resonances (the top anywhere, names repeated or
    /// empty).
    #[test]
    fn a_resonance_moved_into_its_part_keeps_its_segments_and_top() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(18);
        for _ in 0..200 {
            let n = rng.random_range(1..6);
            let scores: Vec<SegmentScore> = (0..n)
                .map(|i| SegmentScore {
                    segment: ["", "gamer", "video", "web"][rng.random_range(0..4)]
                        .repeat(i % 2 + 1)
                        .into(),
                    cosine: Score(rng.random_range(-1.0..1.0)),
                    probability: Score(rng.random_range(0.0..1.0)),
                    resonating: rng.random_bool(0.5),
                })
                .collect();
            let r = Resonance {
                window: rng.random_range(0..100),
                top: rng.random_range(0..n),
                scores,
                cold_start: rng.random_bool(0.5),
            };
            let want = PolicyPart::Resonance {
                scores: r
                    .scores
                    .iter()
                    .map(|s| (s.segment.clone(), s.probability))
                    .collect(),
                top: r.scores[r.top].segment.clone(),
            };
            assert_eq!(r.into_policy_part(), want);
        }
    }

    /// A segment left alone in the windows without scores (as `calibrate` leaves it) gives
    /// every quantile that pushing those windows' empty lists gives (as a segment's worker did
    /// when the users travelled to it), on seeded scores with gaps of every length.
    #[test]
    fn calibrating_only_the_windows_with_scores_gives_the_same_quantiles() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(21);
        const SEGMENTS: [&str; 3] = ["", "gamer", "video"];
        for keep in [1, 3, 10] {
            let (mut skipping, mut every) = (RiskBySegment::new(), RiskBySegment::new());
            let mut compared = 0;
            for window in 0..300u64 {
                let busy = [0.1, 0.5, 0.9][(window / 50 % 3) as usize];
                let mut scores: BTreeMap<String, Vec<f32>> = BTreeMap::new();
                for s in SEGMENTS {
                    if rng.random_bool(busy) {
                        let n = rng.random_range(1..6);
                        let xs = (0..n).map(|_| rng.random_range(0..20) as f32 / 4.0);
                        scores.insert(s.to_string(), xs.collect());
                    }
                }
                let mut all = scores.clone();
                for s in SEGMENTS {
                    all.entry(s.to_string()).or_default();
                }
                calibrate(&mut skipping, keep, window, scores.clone());
                calibrate(&mut every, keep, window, all);
                for (segment, xs) in &scores {
                    for x in xs.iter().chain(&[-1.0, 2.5, 9.0]) {
                        assert_eq!(
                            skipping[segment].quantile(*x),
                            every[segment].quantile(*x),
                            "keep {keep}, window {window}, segment {segment:?}, score {x}"
                        );
                        compared += 1;
                    }
                }
            }
            assert!(compared > 1_000, "{compared}");
        }
    }

    /// Users give their scores by the segment their risk is calibrated in (known, else the
    /// top resonance segment, else none), users without a score none; a user's risk is its
    /// score's quantile there, `None` without a score or a calibrated segment.
    #[test]
    fn scores_go_by_risk_segment_and_come_back_as_quantiles() {
        let user = |segment: Option<&str>, top: Option<&str>, score: Option<f32>| Gathered {
            segment: segment.map(str::to_string),
            top: top.map(Arc::from),
            anomaly_score: score.map(Score),
            ..Gathered::default()
        };
        let users = vec![
            user(Some("gamer"), Some("video"), Some(1.0)),
            user(None, Some("video"), Some(2.0)),
            user(None, None, Some(3.0)),
            user(Some("gamer"), None, None),
            user(Some("gamer"), None, Some(4.0)),
        ];
        let by_segment = scores_by_segment(&users);
        let want: BTreeMap<&str, Vec<f32>> = [
            ("", vec![3.0]),
            ("gamer", vec![1.0, 4.0]),
            ("video", vec![2.0]),
        ]
        .into();
        assert_eq!(by_segment, want);
        let mut risk = RiskBySegment::new();
        let owned = by_segment
            .into_iter()
            .map(|(s, xs)| (s.to_string(), xs))
            .collect();
        calibrate(&mut risk, 5, 0, owned);
        assert_eq!(risk_of(&risk, &users[0]), Some(0.25));
        assert_eq!(risk_of(&risk, &users[4]), Some(0.75));
        assert_eq!(risk_of(&risk, &users[1]), Some(0.5));
        assert_eq!(risk_of(&risk, &users[3]), None);
        assert_eq!(risk_of(&risk, &user(Some("web"), None, Some(1.0))), None);
    }
}
