//! `policies`: each active user's blended policy and socket profile, window by window.

use crate::embed::operator::Profile;
use crate::forecast::Forecast;
use crate::ops::batch::BatchByWindow;
use crate::ops::consolidate;
use crate::ops::{user_hash, UserId, UserWindow};
use crate::personas::operator::PersonaAssignment;
use crate::policies::blend::{Blender, DemandOutlook, Policy, PolicyConfig};
use crate::policies::catalogue::PersonaCatalogue;
use crate::policies::socket::{
    socket_profile, RiskBySegment, RiskCalibration, SocketProfile, WindowDemand,
};
use crate::policies::Shaped;
use crate::resonance::Resonance;
use crate::vector::Score;
use crate::window::features::Fnv;
use crate::WindowSpec;
use differential_dataflow::{AsCollection, ExchangeData, VecCollection};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::{Operator, OutputBuilder};
use timely::dataflow::operators::Capability;
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
    /// complete; the gathered users then travel by the segment their risk is calibrated in,
    /// whose worker keeps that segment's anomaly scores of the last `policy.risk_windows`
    /// windows (so the results do not depend on the number of workers), and come back to
    /// their user's worker with their risk, where their policy is blended and sunk. So the
    /// blending, the larger part of the work, is spread by user even when one segment holds
    /// every user (a log without segments). The risk calibrations are the operator's only
    /// state, and they are windowed: a restarted job rebuilds them from the windows it
    /// replays.
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

/// The parts of each window on this worker, not yet complete: the window's capability and its
/// updates.
type PendingParts = BTreeMap<u64, (Capability<u64>, Vec<((UserWindow, PolicyPart), isize)>)>;

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
                            .or_insert_with(|| (crate::ops::held(&cap), Vec::new()))
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
    let (output, gathered) = builder.new_output::<Vec<(Gathered, u64, isize)>>();
    let mut output = OutputBuilder::<u64, CapacityContainerBuilder<Vec<_>>>::from(output);
    builder.build(move |_capabilities| {
        let mut pending = PendingParts::new();
        move |frontiers: &[MutableAntichain<u64>]| {
            for drain in drains.iter_mut() {
                drain(&mut pending);
            }
            let mut output = output.activate();
            while let Some(entry) = pending.first_entry() {
                let time = *entry.key();
                if frontiers.iter().any(|f| f.less_equal(&time)) {
                    break;
                }
                let (cap, mut updates) = entry.remove();
                // Net the window's updates: only parts inserted at this window (and not
                // retracted within it) are gathered, in key order.
                consolidate(&mut updates);
                let parts = updates
                    .into_iter()
                    .filter(|(_, r)| *r > 0)
                    .map(|(d, _)| d)
                    .collect();
                output
                    .session(&cap)
                    .give_iterator(gather(parts).into_iter().map(|g| (g, time, 1isize)));
            }
            crate::ops::follow_frontier(
                pending.values_mut().map(|(cap, _)| cap),
                crate::ops::earliest(frontiers),
            );
        }
    });
    shape(gathered.as_collection(), catalogue, config, spec)
}

/// The gathered users' risk calibrated by segment, and their policies blended on their own
/// worker (see [`ShapePolicies::policies`]).
fn shape<'scope>(
    gathered: VecCollection<'scope, u64, Gathered, isize>,
    catalogue: Arc<PersonaCatalogue>,
    config: PolicyConfig,
    spec: WindowSpec,
) -> VecCollection<'scope, u64, (UserWindow, Shaped), isize> {
    let mut risk = RiskBySegment::new();
    let risk_windows = config.risk_windows.max(1);
    let calibrated = gathered.fold_by_window(
        Exchange::new(|(g, _, _): &(Gathered, u64, isize)| Fnv::hash_str(g.risk_segment())),
        "CalibrateRisk",
        move |window, users, out| calibrate_window(&mut risk, risk_windows, window, users, out),
    );
    let window_secs = spec.len_ms() as f64 / 1_000.0;
    let blender = Blender::new(&catalogue);
    calibrated
        .inner
        .unary::<CapacityContainerBuilder<Vec<_>>, _, _, _>(
            Exchange::new(move |((g, _), _, _): &(Risked, u64, isize)| user_hash(&g.user)),
            "BlendPolicies",
            move |_cap, _info| {
                move |input, output| {
                    input.for_each_time(|time, data| {
                        let mut session = output.session(&time);
                        for batch in data {
                            session.give_iterator(batch.drain(..).map(
                                |((mut g, r), window, diff)| {
                                    let shaped = policy_of(
                                        &blender,
                                        &catalogue,
                                        &config,
                                        window_secs,
                                        &g,
                                        r,
                                    );
                                    let key = (std::mem::take(&mut g.user), window);
                                    ((key, Arc::new(shaped)), window, diff)
                                },
                            ));
                        }
                    });
                }
            },
        )
        .as_collection()
}

/// A gathered user and its risk (the quantile of its anomaly score in its segment's
/// calibration), as [`calibrate_window`] hands it on.
type Risked = (Gathered, Option<f64>);

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

/// Scores one window's users (of the segments this worker holds) against their segments'
/// recent anomaly scores (the last `risk_windows` windows), after adding theirs: each user
/// with its risk.
fn calibrate_window(
    risk: &mut RiskBySegment,
    risk_windows: u64,
    window: u64,
    users: Vec<Gathered>,
    out: &mut Vec<Risked>,
) {
    // By segment (a stable sort: users keep their order within one).
    let mut users = users;
    users.sort_by(|a, b| a.risk_segment().cmp(b.risk_segment()));
    let mut risks = Vec::with_capacity(users.len());
    let mut rest = &users[..];
    while let Some(first) = rest.first() {
        let segment = first.risk_segment();
        let n = rest
            .iter()
            .take_while(|g| g.risk_segment() == segment)
            .count();
        let (same, next) = rest.split_at(n);
        if !risk.contains_key(segment) {
            risk.insert(segment.to_string(), RiskCalibration::default());
        }
        let calibration = risk.get_mut(segment).expect("inserted");
        calibration.push(
            window,
            same.iter()
                .filter_map(|g| g.anomaly_score.map(|s| s.0))
                .collect(),
            risk_windows,
        );
        risks.extend(
            same.iter()
                .map(|g| g.anomaly_score.and_then(|s| calibration.quantile(s.0))),
        );
        rest = next;
    }
    out.extend(users.into_iter().zip(risks));
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
}
