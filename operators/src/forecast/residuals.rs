//! `forecast_error`: every demand forecast against what the user then did, window by window.

use crate::forecast::{forecast_error, Forecast, ForecastResidual};
use crate::ops::consolidate;
use crate::ops::{user_hash, UserId, UserWindow};
use crate::sequences::Sequence;
use differential_dataflow::{AsCollection, ExchangeData, VecCollection};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;

/// What the error operator sees of the sequences.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum Observed {
    /// A user's demand in a window, from their sequence there (for the worker of the user's
    /// sequences).
    Demand {
        user: UserId,
        window: u64,
        events: u64,
        bytes: u64,
    },
    /// Some worker has a sequence at this window (sent to every worker).
    Window(u64),
}

/// Scores forecasts against what happened.
pub trait ForecastErrors<'scope> {
    /// For each forecast fact `((user, w), forecast)` at `w` and each `h` in `1..=H` (`H` the
    /// forecast's [`horizon`](Forecast::horizon)), one fact `((user, w + h), ForecastResidual)` at
    /// window `w + h`, once `w + h` is complete on both inputs: the prediction `h` windows
    /// ahead against the user's events and bytes in their sequence at `w + h`, or `(0, 0)` if
    /// the user has no sequence there.
    ///
    /// While the inputs are open, a target window is scored as soon as it is complete: the
    /// source has moved past it in event time, so it happened, even if nobody was active in it
    /// (zero actuals). Waiting for data at a later window instead would stall a source that
    /// waits for the outputs to catch up before it sends more (the backfill's flow control
    /// does). When the inputs end, windows after the last one that has a sequence on any worker
    /// never happened: forecasts for them yield nothing. Each worker learns the last window with
    /// data from a broadcast, by every worker, of its latest complete window with data.
    ///
    /// Forecasts and sequences of a user must be on the same worker (as when the forecasts are
    /// [`forecast_demand`](crate::ops::ForecastDemand::forecast_demand) of these sequences),
    /// and forecasts must be facts at their window (others are ignored). State is bounded: a
    /// forecast is kept (with a capability at its next target window) until its last target
    /// is scored, and a window's actuals until the window is complete.
    ///
    /// ```
    /// use personaflow_operators::{Event, WindowSpec};
    /// use personaflow_operators::forecast::PersistenceForecaster;
    /// use personaflow_operators::ops::*;
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use std::sync::Arc;
    /// use timely::dataflow::operators::ToStream;
    /// // "u" is active in windows 0, 1 and 2; "v" only in window 3, the last window with data.
    /// let events = vec![
    ///     Event::new(1_000, "u", "a"),
    ///     Event::new(61_000, "u", "a"),
    ///     Event::new(121_000, "u", "a"),
    ///     Event::new(181_000, "v", "a"),
    /// ];
    /// let scored = Arc::new(AtomicUsize::new(0));
    /// let count = scored.clone();
    /// timely::example(move |scope| {
    ///     let sequences = events
    ///         .to_stream(scope)
    ///         .container::<Vec<_>>()
    ///         .window_aggregate(WindowSpec::default())
    ///         .sequences(16);
    ///     sequences
    ///         .clone()
    ///         .forecast_demand(Box::new(PersistenceForecaster::try_new(2).unwrap()), 64, ErrorSlot::default())
    ///         .forecast_error(sequences)
    ///         .inspect(move |(((u, w), e), t, r)| {
    ///             assert!(&**u == "u" && *w == e.target() && t == w && *r == 1 && *w <= 3);
    ///             assert_eq!(e.actual_requests, if *w < 3 { 1 } else { 0 });
    ///             count.fetch_add(1, Ordering::SeqCst);
    ///         });
    /// });
    /// // Made at 0: windows 1, 2; at 1: windows 2, 3; at 2: window 3 only (4 has no data).
    /// assert_eq!(scored.load(Ordering::SeqCst), 5);
    /// ```
    fn forecast_error(
        self,
        sequences: VecCollection<'scope, u64, (UserWindow, Sequence), isize>,
    ) -> VecCollection<'scope, u64, (UserWindow, ForecastResidual), isize>;
}

/// Scores facts that make a forecast: as [`ForecastErrors::forecast_error`], for a collection
/// of any facts `((user, w), d)` that `split` turns into a forecast and a payload, each
/// residual joined with its payload by `join` (e.g. the allocation a policy sized, scored as a
/// one-window forecast of the demand it allows). The facts need not be on their user's worker:
/// they are exchanged there. One operator besides the one that observes the sequences, so a
/// window costs the dataflow two operators' progress, not a chain of maps and exchanges.
pub trait ForecastErrorsBy<'scope, D> {
    /// For each fact `((user, w), d)` with `split(d) = (forecast, payload)`, the facts
    /// `((user, w + h), join(residual, &payload))` for the residuals that
    /// [`forecast_error`](ForecastErrors::forecast_error) gives for the forecast.
    ///
    /// ```
    /// use personaflow_operators::{Event, WindowSpec};
    /// use personaflow_operators::forecast::Forecast;
    /// use personaflow_operators::ops::*;
    /// use std::sync::{Arc, Mutex};
    /// use timely::dataflow::operators::ToStream;
    /// // "u" is active in windows 0 and 1, "v" in window 1 only.
    /// let events = vec![
    ///     Event::new(1_000, "u", "a"),
    ///     Event::new(61_000, "u", "a"),
    ///     Event::new(62_000, "v", "a"),
    /// ];
    /// let scored = Arc::new(Mutex::new(Vec::new()));
    /// let out = scored.clone();
    /// timely::example(move |scope| {
    ///     let sequences = events
    ///         .to_stream(scope)
    ///         .container::<Vec<_>>()
    ///         .window_aggregate(WindowSpec::default())
    ///         .sequences(16);
    ///     // An allowance of 3 events in the next window, named after the window it was made in.
    ///     sequences
    ///         .clone()
    ///         .map(|((user, w), _)| ((user, w), format!("allowance of {w}")))
    ///         .forecast_error_by(
    ///             sequences,
    ///             |name| (Forecast::try_new(vec![3.0], vec![0.0]).unwrap(), name),
    ///             |e, name: &String| (name.clone(), e.actual_requests),
    ///         )
    ///         .inspect(move |(((user, w), scored), _, _)| {
    ///             out.lock().unwrap().push((user.to_string(), *w, scored.clone()))
    ///         });
    /// });
    /// // Made at 0 for "u", scored at 1 against its one event there; window 2 has no data.
    /// let got = scored.lock().unwrap().clone();
    /// assert_eq!(got, vec![("u".to_string(), 1, ("allowance of 0".to_string(), 1))]);
    /// ```
    fn forecast_error_by<P, O, F, G>(
        self,
        sequences: VecCollection<'scope, u64, (UserWindow, Sequence), isize>,
        split: F,
        join: G,
    ) -> VecCollection<'scope, u64, (UserWindow, O), isize>
    where
        P: Clone + 'static,
        O: Clone + 'static,
        F: FnMut(D) -> (Forecast, P) + 'static,
        G: FnMut(ForecastResidual, &P) -> O + 'static;

    /// As [`forecast_error_by`](Self::forecast_error_by), but the facts go to `sink`, each
    /// target window's once it is complete, instead of into a collection at their target
    /// window. Scoring at `w + h` in a collection puts times into the dataflow that windows
    /// without data would not (the operator holds a capability at each next target, the sink
    /// after it sees each target's time); a sparse run, where the windows after one with data
    /// mostly have none, put up to `H` more times per window with data through them. The sink
    /// is told the inputs' frontier after each activation, as a sink operator reading the
    /// collection would see it.
    ///
    /// ```
    /// use personaflow_operators::forecast::Forecast;
    /// use personaflow_operators::forecast::residuals::ScoredSink;
    /// use personaflow_operators::ops::*;
    /// use personaflow_operators::{Event, WindowSpec};
    /// use std::sync::{Arc, Mutex};
    /// use timely::dataflow::operators::ToStream;
    /// struct Seen(Arc<Mutex<Vec<(u64, usize)>>>);
    /// impl ScoredSink<u64> for Seen {
    ///     fn window(&mut self, w: u64, facts: Vec<(UserWindow, u64)>) {
    ///         self.0.lock().unwrap().push((w, facts.len()));
    ///     }
    ///     fn frontier(&mut self, _: Option<u64>) {}
    /// }
    /// let events = vec![Event::new(1_000, "u", "a"), Event::new(61_000, "u", "a")];
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let sink = Seen(seen.clone());
    /// timely::example(move |scope| {
    ///     let sequences = events
    ///         .to_stream(scope)
    ///         .container::<Vec<_>>()
    ///         .window_aggregate(WindowSpec::default())
    ///         .sequences(16);
    ///     sequences.clone().forecast_error_by_into(
    ///         sequences,
    ///         |_| (Forecast::try_new(vec![3.0], vec![0.0]).unwrap(), ()),
    ///         |e, _| e.actual_requests,
    ///         Box::new(sink),
    ///     );
    /// });
    /// // Made at 0, scored at 1 (one event there); made at 1, window 2 never happened.
    /// assert_eq!(*seen.lock().unwrap(), vec![(1, 1)]);
    /// ```
    fn forecast_error_by_into<P, O, F, G>(
        self,
        sequences: VecCollection<'scope, u64, (UserWindow, Sequence), isize>,
        split: F,
        join: G,
        sink: Box<dyn ScoredSink<O>>,
    ) where
        P: Clone + 'static,
        O: Clone + 'static,
        F: FnMut(D) -> (Forecast, P) + 'static,
        G: FnMut(ForecastResidual, &P) -> O + 'static;
}

/// Where [`ForecastErrorsBy::forecast_error_by_into`] hands the facts it scores: a sink that
/// writes them labelled with their target window, without a dataflow time of their own.
pub trait ScoredSink<O> {
    /// The facts scored for `window` (complete), all of this worker's at once, in no
    /// particular order.
    fn window(&mut self, window: u64, facts: Vec<(UserWindow, O)>);
    /// Called after each activation with the earlier of the two inputs' frontiers (`None`:
    /// both ended): every window before it that has facts has been handed to
    /// [`window`](Self::window).
    fn frontier(&mut self, frontier: Option<u64>);
}

/// The forecasts made at one window, waiting for their targets.
struct Made<P> {
    /// The window the forecasts were made at.
    made_at: u64,
    /// The next target window to score.
    next: u64,
    /// The last target window of any of the forecasts.
    last: u64,
    /// User, forecast and payload.
    forecasts: Vec<(UserId, Forecast, P)>,
}

/// One worker's scoring state, whichever way its facts leave: the forecasts waiting for their
/// targets (by the window they were made at), the actuals of windows not yet complete and the
/// largest window that has a sequence on some worker.
struct Scorer<P> {
    made: BTreeMap<u64, Made<P>>,
    demand: DemandUpdates,
    last_window: Option<u64>,
}

impl<P> Scorer<P> {
    fn new() -> Self {
        Scorer {
            made: BTreeMap::new(),
            demand: BTreeMap::new(),
            last_window: None,
        }
    }

    fn observe(&mut self, observed: Observed, r: isize) {
        match observed {
            Observed::Window(w) if r > 0 => self.last_window = self.last_window.max(Some(w)),
            Observed::Window(_) => {}
            Observed::Demand {
                user,
                window,
                events,
                bytes,
            } => self
                .demand
                .entry(window)
                .or_default()
                .push(((user, events, bytes), r)),
        }
    }

    /// The forecast facts of `window`, complete: those that look ahead wait for their targets.
    /// Returns the first target, if any does.
    fn made<D>(
        &mut self,
        window: u64,
        mut updates: Vec<((UserWindow, D), isize)>,
        split: &mut impl FnMut(D) -> (Forecast, P),
    ) -> Option<u64>
    where
        D: Ord,
    {
        consolidate(&mut updates);
        let forecasts: Vec<(UserId, Forecast, P)> = updates
            .into_iter()
            .filter(|(((_, w), _), r)| *r > 0 && *w == window)
            .map(|(((user, _), d), _)| {
                let (f, p) = split(d);
                (user, f, p)
            })
            .collect();
        let h = forecasts.iter().map(|(_, f, _)| f.horizon()).max()?;
        (h > 0).then(|| {
            let next = window + 1;
            self.made.insert(
                window,
                Made {
                    made_at: window,
                    next,
                    last: window + h as u64,
                    forecasts,
                },
            );
            next
        })
    }

    /// Scores targets in window order while their window is `complete` and known to exist:
    /// for each target and each window whose forecasts target it (in that order), `each(made
    /// at, target, facts, next target of those forecasts if any)`. Forgets the actuals of
    /// complete windows, and, once the inputs have `ended`, the forecasts left.
    fn score<O>(
        &mut self,
        complete: impl Fn(u64) -> bool,
        ended: bool,
        join: &mut impl FnMut(ForecastResidual, &P) -> O,
        mut each: impl FnMut(u64, u64, Vec<(UserWindow, O)>, Option<u64>),
    ) {
        while let Some(target) = self.made.values().map(|m| m.next).min() {
            // While the input is open, a complete window has passed in event time (the source
            // moved beyond it), data or not; waiting for a later sequence there would stall a
            // source that waits for the outputs before it sends more. At the end, the windows
            // after the last one with data never happened.
            if !complete(target) || (ended && self.last_window.is_none_or(|l| l < target)) {
                break;
            }
            let actuals = net_demand(self.demand.remove(&target).unwrap_or_default());
            for m in self.made.values_mut().filter(|m| m.next == target) {
                let facts = m
                    .forecasts
                    .iter()
                    .filter_map(|(user, f, p)| {
                        let actual = actuals.get(user).copied().unwrap_or((0, 0));
                        let e = forecast_error(m.made_at, f, target, actual)?;
                        Some(((user.clone(), target), join(e, p)))
                    })
                    .collect();
                m.next += 1;
                each(
                    m.made_at,
                    target,
                    facts,
                    (m.next <= m.last).then_some(m.next),
                );
            }
            self.made.retain(|_, m| m.next <= m.last);
        }
        // The actuals of a complete window left over are not needed: nothing targets the
        // window (a target with actuals is never after the last window with data, which every
        // worker sends once it is complete).
        while let Some(entry) = self.demand.first_entry() {
            if !complete(*entry.key()) {
                break;
            }
            entry.remove();
        }
        // End of input: the targets left are after the last window with data.
        if ended {
            self.made.clear();
        }
    }
}

type Pending<D> = BTreeMap<u64, (Capability<u64>, Vec<(D, isize)>)>;
/// Per window: (user, events, bytes) updates.
type DemandUpdates = BTreeMap<u64, Vec<((UserId, u64, u64), isize)>>;

/// How the error operator's facts leave it: as a collection, each at its target window (the
/// operator holds a capability at the next target of each window's forecasts), or into a
/// sink, labelled with their target window (no capability held beyond the inputs' windows).
enum Delivery<O> {
    Collection,
    Sink(Box<dyn ScoredSink<O>>),
}

impl<'scope> ForecastErrors<'scope> for VecCollection<'scope, u64, (UserWindow, Forecast), isize> {
    fn forecast_error(
        self,
        sequences: VecCollection<'scope, u64, (UserWindow, Sequence), isize>,
    ) -> VecCollection<'scope, u64, (UserWindow, ForecastResidual), isize> {
        self.forecast_error_by(sequences, |f| (f, ()), |e, _| e)
    }
}

impl<'scope, D> ForecastErrorsBy<'scope, D> for VecCollection<'scope, u64, (UserWindow, D), isize>
where
    D: ExchangeData,
{
    fn forecast_error_by<P, O, F, G>(
        self,
        sequences: VecCollection<'scope, u64, (UserWindow, Sequence), isize>,
        split: F,
        join: G,
    ) -> VecCollection<'scope, u64, (UserWindow, O), isize>
    where
        P: Clone + 'static,
        O: Clone + 'static,
        F: FnMut(D) -> (Forecast, P) + 'static,
        G: FnMut(ForecastResidual, &P) -> O + 'static,
    {
        score(self, sequences, split, join, Delivery::Collection).as_collection()
    }

    fn forecast_error_by_into<P, O, F, G>(
        self,
        sequences: VecCollection<'scope, u64, (UserWindow, Sequence), isize>,
        split: F,
        join: G,
        sink: Box<dyn ScoredSink<O>>,
    ) where
        P: Clone + 'static,
        O: Clone + 'static,
        F: FnMut(D) -> (Forecast, P) + 'static,
        G: FnMut(ForecastResidual, &P) -> O + 'static,
    {
        score(self, sequences, split, join, Delivery::Sink(sink));
    }
}

/// The error operator of [`ForecastErrorsBy`], its facts delivered as `delivery` says.
fn score<'scope, D, P, O, F, G>(
    facts: VecCollection<'scope, u64, (UserWindow, D), isize>,
    sequences: VecCollection<'scope, u64, (UserWindow, Sequence), isize>,
    mut split: F,
    mut join: G,
    mut delivery: Delivery<O>,
) -> StreamVec<'scope, u64, ((UserWindow, O), u64, isize)>
where
    D: ExchangeData,
    P: Clone + 'static,
    O: Clone + 'static,
    F: FnMut(D) -> (Forecast, P) + 'static,
    G: FnMut(ForecastResidual, &P) -> O + 'static,
{
    let observed = observe(sequences);
    // The forecasts go to the worker of their user's sequences (the sequences operator
    // places users by differential's hash of the user id); the observations carry the
    // worker they are for.
    let to_user =
        Exchange::new(|(((user, _), _), _, _): &((UserWindow, D), u64, isize)| user_hash(user));
    let to_worker = Exchange::new(|(worker, _, _): &(u64, Observed, isize)| *worker);
    facts
        .inner
        .binary_frontier::<_, CapacityContainerBuilder<Vec<_>>, _, _, _, _>(
            observed,
            to_user,
            to_worker,
            "ForecastResidual",
            move |_cap, _info| {
                let mut pending: Pending<(UserWindow, D)> = BTreeMap::new();
                let mut scorer: Scorer<P> = Scorer::new();
                // Collection: a capability at the next target of each window's forecasts.
                let mut holds: BTreeMap<u64, Capability<u64>> = BTreeMap::new();
                // Sink: the facts of each target scored in this activation.
                let mut scored: BTreeMap<u64, Vec<(UserWindow, O)>> = BTreeMap::new();
                move |(forecast_input, forecast_frontier),
                      (observed_input, observed_frontier),
                      output| {
                    forecast_input.for_each_time(|cap, data| {
                        for batch in data {
                            for (d, t, r) in batch.drain(..) {
                                pending
                                    .entry(t)
                                    .or_insert_with(|| (crate::ops::held(&cap), Vec::new()))
                                    .1
                                    .push((d, r));
                            }
                        }
                    });
                    observed_input.for_each_time(|_cap, data| {
                        for batch in data {
                            for (_, observed, r) in batch.drain(..) {
                                scorer.observe(observed, r);
                            }
                        }
                    });
                    // Forecasts of a complete window are final: they wait for their targets.
                    while let Some(entry) = pending.first_entry() {
                        let window = *entry.key();
                        if forecast_frontier.less_equal(&window) {
                            break;
                        }
                        let (mut cap, updates) = entry.remove();
                        if let Some(next) = scorer.made(window, updates, &mut split) {
                            if let Delivery::Collection = delivery {
                                cap.downgrade(&next);
                                holds.insert(window, cap);
                            }
                        }
                    }
                    let complete = |t: u64| {
                        !forecast_frontier.less_equal(&t) && !observed_frontier.less_equal(&t)
                    };
                    let ended = forecast_frontier.is_empty() && observed_frontier.is_empty();
                    scorer.score(
                        complete,
                        ended,
                        &mut join,
                        |made_at, target, facts, next| match &delivery {
                            Delivery::Collection => {
                                let cap = holds.get_mut(&made_at).expect("a held window");
                                output
                                    .session(cap)
                                    .give_iterator(facts.into_iter().map(|f| (f, target, 1)));
                                match next {
                                    Some(next) => cap.downgrade(&next),
                                    None => drop(holds.remove(&made_at)),
                                }
                            }
                            Delivery::Sink(_) => scored.entry(target).or_default().extend(facts),
                        },
                    );
                    if ended {
                        holds.clear();
                    }
                    crate::ops::follow_frontier(
                        pending.values_mut().map(|(cap, _)| cap),
                        crate::ops::earliest([forecast_frontier, observed_frontier]),
                    );
                    if let Delivery::Sink(sink) = &mut delivery {
                        for (target, facts) in std::mem::take(&mut scored) {
                            sink.window(target, facts);
                        }
                        let frontier = match (
                            forecast_frontier.frontier().first().copied(),
                            observed_frontier.frontier().first().copied(),
                        ) {
                            (Some(a), Some(b)) => Some(a.min(b)),
                            (a, b) => a.or(b),
                        };
                        sink.frontier(frontier);
                    }
                }
            },
        )
}

/// Each user's (events, bytes) in a window, from the window's updates.
fn net_demand(mut updates: Vec<((UserId, u64, u64), isize)>) -> HashMap<UserId, (u64, u64)> {
    consolidate(&mut updates);
    updates
        .into_iter()
        .filter(|(_, r)| *r > 0)
        .map(|((user, events, bytes), _)| (user, (events, bytes)))
        .collect()
}

/// What the error operator observes of the sequences, each record addressed to a worker:
/// every sequence's demand `(user, events, bytes)` at its own window, to this worker (updates of
/// a sequence at a later window are not demand), and `Window(w)` at `w` to every worker for the
/// latest window `w` in which this worker has a sequence (net count of the sequences of `w` at
/// `w` positive) of those completed together, once `w` is complete: what the error operator
/// needs of them is the largest.
fn observe<'scope>(
    sequences: VecCollection<'scope, u64, (UserWindow, Sequence), isize>,
) -> StreamVec<'scope, u64, (u64, Observed, isize)> {
    let scope = sequences.inner.scope();
    let (me, peers) = (scope.index() as u64, scope.peers() as u64);
    sequences
        .inner
        .unary_frontier::<CapacityContainerBuilder<Vec<_>>, _, _, _>(
            Pipeline,
            "ObserveSequences",
            move |_cap, _info| {
                let mut counts: BTreeMap<u64, (Capability<u64>, isize)> = BTreeMap::new();
                move |(input, frontier), output| {
                    input.for_each_time(|cap, data| {
                        let mut session = output.session(&cap);
                        for batch in data {
                            for (((user, w), s), t, r) in batch.drain(..) {
                                if w == t {
                                    let demand = Observed::Demand {
                                        user,
                                        window: w,
                                        events: s.events,
                                        bytes: s.bytes,
                                    };
                                    session.give((me, demand, r));
                                    counts
                                        .entry(t)
                                        .or_insert_with(|| (crate::ops::held(&cap), 0))
                                        .1 += r;
                                }
                            }
                        }
                    });
                    // Only the latest of the windows completed together is sent: the error
                    // operator keeps the largest (one message per activation, not per window).
                    let mut latest = None;
                    while let Some(entry) = counts.first_entry() {
                        let window = *entry.key();
                        if frontier.less_equal(&window) {
                            break;
                        }
                        let (cap, count) = entry.remove();
                        if count > 0 {
                            latest = Some((cap, window));
                        }
                    }
                    if let Some((cap, window)) = latest {
                        let mut session = output.session(&cap);
                        for worker in 0..peers {
                            session.give((worker, Observed::Window(window), 1));
                        }
                    }
                    crate::ops::follow_frontier(
                        counts.values_mut().map(|(cap, _)| cap),
                        crate::ops::earliest([frontier]),
                    );
                }
            },
        )
}

#[cfg(test)]
mod tests {
    use crate::forecast::PersistenceForecaster;
    use crate::ops::{ErrorSlot, ForecastDemand, ForecastErrors, Sequences, WindowAggregate};
    use crate::{Event, WindowSpec};
    use timely::dataflow::operators::{Input, Probe};
    use timely::dataflow::ProbeHandle;

    /// Regression: with a gap in the data, the operator waited for a sequence at or after a
    /// target window before scoring it, while the backfill's feeder waited for the outputs to
    /// pass that window before sending the data after the gap: the job spun forever (CDNOW with
    /// 1-day windows, where most days have no accepted purchase).
    #[test]
    fn a_gap_in_the_data_does_not_hold_the_outputs_back() {
        timely::execute_directly(|worker| {
            let probe = ProbeHandle::new();
            let mut input = worker.dataflow::<u64, _, _>(|scope| {
                let (input, events) = scope.new_input::<Vec<Event>>();
                let sequences = events.window_aggregate(WindowSpec::default()).sequences(16);
                let forecaster = PersistenceForecaster::try_new(4).unwrap();
                sequences
                    .clone()
                    .forecast_demand(Box::new(forecaster), 64, ErrorSlot::default())
                    .forecast_error(sequences)
                    .inner
                    .probe_with(&probe);
                input
            });
            input.send(Event::new(1_000, "u", "a")); // window 0
            input.advance_to(10); // the source has seen event time at window 10 or later
            let mut steps = 0;
            while probe.less_than(&10) && steps < 1_000 {
                worker.step();
                steps += 1;
            }
            assert!(
                !probe.less_than(&10),
                "forecast errors of windows 1..=4 held the frontier back"
            );
        });
    }
}
