//! The one driver loop of a dataflow worker: events are sent at the input's time, the input
//! is advanced as event time moves (with flow control: while the windows the outputs have not
//! passed hold at most [`FLOW_CONTROL_EVENTS`] events, the input moves on; once they hold more,
//! the outputs must come within [`FLOW_CONTROL_WINDOWS`] windows of it: see
//! [`settle_target`]), the worker
//! steps, and at the end the input is closed and the dataflow drained (with a watchdog that
//! names the stages holding it back). The backfill drives it from its file readers, the
//! continuous job from Kafka, the oracle tests from vectors of events; each decides *when* to
//! advance, the driver does the rest the same way for all of them. The backfill has the
//! driver send runs of windows at one input time ([`Driver::windows_in_runs`]): the records
//! keep their windows, and timely tracks a time per run instead of one per window with events.
//!
//! ```
//! use personaflow_dataflow::config::{Config, EmbedderKind, ForecasterKind};
//! use personaflow_dataflow::driver::Driver;
//! use personaflow_dataflow::graph::{self, ModelStats, StateMode};
//! use personaflow_io::writer::PartitionedSinks;
//! use personaflow_operators::{Event, WindowSpec};
//!
//! let out = tempfile::tempdir().unwrap();
//! let mut config = Config::default();
//! config.embedder.kind = EmbedderKind::Standardised;
//! config.forecaster.kind = ForecasterKind::None;
//! let spec = config.window_spec();
//! let sinks = PartitionedSinks { root: out.path().into(), spec, row_group_rows: 1024, observer: None };
//! let rows = timely::execute_directly(move |worker| {
//!     let handles = graph::build_with(worker, &config, &sinks, &ModelStats::default(), StateMode::Off)
//!         .unwrap();
//!     let (mut driver, _) = Driver::new(handles);
//!     for minute in 0..10 {
//!         driver.advance(worker, minute, &|| false);
//!         driver.send(Event::new(minute as i64 * 60_000 + 1, "u1", "page_view"));
//!     }
//!     driver.drain(worker, &mut || {});
//!     driver.finish().unwrap().rows
//! });
//! assert_eq!(rows[&personaflow_io::tables::Table::Features], 10);
//! ```

use crate::graph::{DataflowHandles, SinkReport, StateSnapshots};
use crate::{Error, Result};
use personaflow_operators::ops::advance::{self, advance_input_settling, OutputFrontier};
use personaflow_operators::ops::ErrorSlot;
use personaflow_operators::Event;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};
use timely::dataflow::{InputHandleVec, ProbeHandle};
use timely::worker::Worker;

pub use personaflow_operators::ops::advance::FLOW_CONTROL_WINDOWS;

/// Events the windows in flight (advanced past by the input, not yet passed by the outputs)
/// may hold before the driver waits for the outputs, beyond the [`FLOW_CONTROL_WINDOWS`]
/// always allowed. A sparse run's windows hold an event or two: without it, every window would
/// be waited for, a flush of the whole dataflow per window, so its cost would follow the
/// clock and not the events. A run of a few dozen events a window (ten thousand users active a
/// few minutes a day) keeps dozens of windows in flight, so the operators and sinks take many
/// windows per scheduling and the workers do not wait for each other at every window (256
/// events made such a run 1.3× slower). A dense run's windows fill it at once and keep the
/// window bound. Once the budget is spent, the windows in flight are drained down to the window
/// bound, not one at a time: the next windows are then taken together again (waiting for the
/// oldest window alone made a sparse run's operators take its windows about one at a time).
pub const FLOW_CONTROL_EVENTS: u64 = 4_096;

/// Windows in flight at most, however few their events.
pub const FLOW_CONTROL_MAX_WINDOWS: usize = 256;

/// How long a draining worker parks between steps when it has nothing to do.
pub const PARK: Duration = Duration::from_secs(1);

/// How long the output frontier may stay still while draining before the driver says which
/// stages hold it back (once per stall).
pub const STALL_REPORT: Duration = Duration::from_secs(60);

/// The window the outputs must pass before the input takes more, when it moves to `window`
/// with `in_flight` (windows with events, oldest first, each with its events) not yet passed:
/// while they hold at most [`FLOW_CONTROL_EVENTS`] events between them and number at most
/// [`FLOW_CONTROL_MAX_WINDOWS`], the oldest of them (already passed by everything before it:
/// no wait), else `window`. The driver waits for the earlier of it and
/// `window - FLOW_CONTROL_WINDOWS`.
///
/// ```
/// use personaflow_dataflow::driver::settle_target;
/// use std::collections::VecDeque;
/// // A dense run: the last window alone holds more than the budget.
/// assert_eq!(settle_target(&VecDeque::from([(8, 5_000), (9, 5_000)]), 10), 10);
/// // A sparse run: a few events in each of the last windows; all may stay in flight.
/// assert_eq!(settle_target(&VecDeque::from([(3, 1), (40, 2), (95, 1)]), 100), 3);
/// // Over the budget: all but the window bound drain, not only the oldest window.
/// assert_eq!(settle_target(&VecDeque::from([(3, 5_000), (40, 90), (95, 6)]), 100), 100);
/// assert_eq!(settle_target(&VecDeque::from([(3, 2_000), (40, 2_000), (95, 97)]), 100), 100);
/// ```
pub fn settle_target(in_flight: &std::collections::VecDeque<(u64, u64)>, window: u64) -> u64 {
    let events: u64 = in_flight.iter().map(|(_, n)| n).sum();
    match in_flight.front() {
        Some(&(oldest, _))
            if events <= FLOW_CONTROL_EVENTS && in_flight.len() <= FLOW_CONTROL_MAX_WINDOWS =>
        {
            oldest
        }
        _ => window,
    }
}

/// The outputs' frontier as the sinks keep it in their report
/// ([`SinkReport::output_frontier`]), for [`advance_input_settling`].
struct Outputs<'a>(&'a RefCell<SinkReport>);

impl OutputFrontier for Outputs<'_> {
    fn less_than(&self, time: &u64) -> bool {
        self.0.borrow().output_frontier().is_some_and(|f| f < *time)
    }
}

/// Drives one worker's dataflow (see the [module](self)).
#[derive(Debug)]
pub struct Driver {
    input: Option<InputHandleVec<u64, Event>>,
    /// The sinks' report, which also holds the outputs' frontier.
    report: Rc<RefCell<SinkReport>>,
    embed_errors: ErrorSlot,
    stages: Vec<(&'static str, ProbeHandle<u64>)>,
    /// The windows the input has passed, newest last, and the events sent in each, while
    /// the outputs may not have passed them.
    in_flight: std::collections::VecDeque<(u64, u64)>,
    /// Events sent at the input's time.
    sent: u64,
    /// False once events have been sent through [`Driver::input`] (not counted): then only
    /// [`FLOW_CONTROL_WINDOWS`] bounds the lag.
    counted: bool,
    /// How long a step with nothing to do parks the worker ([`Driver::park_when_idle`]);
    /// `None`: it steps again at once.
    park: Option<Duration>,
    /// With [`Driver::windows_in_runs`]: the run of windows being sent at the input's time.
    run: Option<Run>,
}

/// How much a run of windows sent at one input time ([`Driver::windows_in_runs`]) may hold.
/// The default is the budget of the windows in flight: [`FLOW_CONTROL_EVENTS`] events and
/// [`FLOW_CONTROL_MAX_WINDOWS`] windows with events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunBudget {
    /// A run takes another window while it holds at most this many events.
    pub events: u64,
    /// A run takes another window while it holds at most this many windows with events.
    pub windows: usize,
}

impl Default for RunBudget {
    fn default() -> Self {
        RunBudget {
            events: FLOW_CONTROL_EVENTS,
            windows: FLOW_CONTROL_MAX_WINDOWS,
        }
    }
}

impl RunBudget {
    /// Whether a run that holds `events` events in `windows` windows with events may take
    /// another window.
    ///
    /// ```
    /// use personaflow_dataflow::driver::RunBudget;
    /// let budget = RunBudget::default();
    /// assert!(budget.continues(3, 2), "a sparse run: one time for many windows");
    /// assert!(!budget.continues(5_000, 1), "a dense window: a time of its own");
    /// assert!(!budget.continues(300, 257), "at most 256 windows with events");
    /// ```
    pub fn continues(&self, events: u64, windows: usize) -> bool {
        events <= self.events && windows <= self.windows
    }
}

/// The run of windows sent at one input time ([`Driver::windows_in_runs`]).
#[derive(Debug)]
struct Run {
    budget: RunBudget,
    /// The window the input has been advanced to, past its time; `None`: none past it.
    window: Option<u64>,
    /// Windows of the run with events, before `window`.
    windows: usize,
    /// The run's events (the driver's events sent at the input's time) when the input was
    /// last advanced: more since, and the window advanced from had events.
    sent_before: u64,
}

impl Run {
    fn new(budget: RunBudget) -> Self {
        Run {
            budget,
            window: None,
            windows: 0,
            sent_before: 0,
        }
    }
}

impl Driver {
    /// The driver of a built dataflow, and the dataflow's operator snapshots (when kept).
    pub fn new(handles: DataflowHandles) -> (Driver, Option<StateSnapshots>) {
        let DataflowHandles {
            input,
            report,
            embed_errors,
            stages,
            snapshots,
        } = handles;
        let driver = Driver {
            input: Some(input),
            report,
            embed_errors,
            stages,
            in_flight: Default::default(),
            sent: 0,
            counted: true,
            park: None,
            run: None,
        };
        (driver, snapshots)
    }

    /// From now on, a step with nothing to do (the worker waits for the outputs or another
    /// worker) parks the worker up to `bound` ([`SETTLE_PARK`](personaflow_operators::ops::advance::SETTLE_PARK)),
    /// in [`advance`](Self::advance) and [`step_or_park`](Self::step_or_park), instead of
    /// stepping again at once: for a job that shares its cores with other processes.
    pub fn park_when_idle(&mut self, bound: Duration) {
        self.park = Some(bound);
    }

    /// From now on, the events of a run of windows are sent at one input time, the run's
    /// first window: [`advance`](Self::advance) moves the input's time only once the run
    /// holds more than `budget` allows ([`RunBudget::continues`]), then waits for the outputs
    /// to pass the run before it (so one run is in flight while the next is sent). The
    /// records keep their windows (the operators handle a window once their input frontier
    /// has passed it, whatever time its records came at: see `personaflow_operators::ops`),
    /// so the outputs are the same; what changes is that timely tracks the progress of a time
    /// per run and not of every window with events, which on a sparse log (a window with an
    /// event or two) was most of the cost of a window. For a backfill, which reads as fast as
    /// it can: a window's outputs wait until its run ends, so a continuous job, whose outputs
    /// should follow each window, sends a window at a time.
    pub fn windows_in_runs(&mut self, budget: RunBudget) {
        self.run = Some(Run::new(budget));
    }

    /// The window the input has been advanced to (the first window still open), `None` once
    /// the input is closed. With [`windows_in_runs`](Self::windows_in_runs) the input's
    /// timely time may be earlier: the first window of the run being sent.
    pub fn time(&self) -> Option<u64> {
        let time = *self.input.as_ref()?.time();
        let run = self.run.as_ref().and_then(|r| r.window);
        Some(run.unwrap_or(time).max(time))
    }

    /// The input's timely time, at which events are sent: [`time`](Self::time), or with
    /// [`windows_in_runs`](Self::windows_in_runs) the first window of the run being sent;
    /// `None` once the input is closed.
    pub fn input_time(&self) -> Option<u64> {
        self.input.as_ref().map(|i| *i.time())
    }

    /// Whether the run being sent ([`windows_in_runs`](Self::windows_in_runs)) takes `window`
    /// (the input's time stays where it is); false without runs, or once the run is over its
    /// budget: then the caller moves the input's time to `window`, where the next run starts.
    fn run_takes(&mut self, window: u64) -> bool {
        let (counted, sent) = (self.counted, self.sent);
        let Some(run) = self.run.as_mut() else {
            return false;
        };
        if sent > run.sent_before {
            run.windows += 1;
            run.sent_before = sent;
        }
        if counted && run.budget.continues(sent, run.windows) {
            run.window = Some(window);
            return true;
        }
        *run = Run::new(run.budget);
        false
    }

    /// The input, while it is open (for callers that route events themselves).
    pub fn input(&mut self) -> Option<&mut InputHandleVec<u64, Event>> {
        self.counted = false;
        self.input.as_mut()
    }

    /// Sends an event at the input's time; its window must not be before it. Ignored once the
    /// input is closed.
    pub fn send(&mut self, event: Event) {
        if let Some(input) = self.input.as_mut() {
            input.send(event);
            self.sent += 1;
        }
    }

    /// Advances the input to `window` if that is later than its time; then, unless the
    /// windows the outputs have not passed hold at most [`FLOW_CONTROL_EVENTS`] events (and
    /// number at most [`FLOW_CONTROL_MAX_WINDOWS`]), steps the worker until the outputs are
    /// within [`FLOW_CONTROL_WINDOWS`] of it or `stop` says so ([`settle_target`]). Returns
    /// whether the input moved.
    pub fn advance(&mut self, worker: &mut Worker, window: u64, stop: &dyn Fn() -> bool) -> bool {
        self.advance_waiting_for(worker, window, u64::MAX, stop)
    }

    /// As [`advance`](Self::advance), but waits at most until the outputs pass `wait_for`
    /// when that is earlier: a caller that feeds the input in large rounds (a continuous job
    /// catching up) passes the previous round's window, so that one round stays in flight
    /// while it takes the next, instead of draining the dataflow at every round.
    pub fn advance_waiting_for(
        &mut self,
        worker: &mut Worker,
        window: u64,
        wait_for: u64,
        stop: &dyn Fn() -> bool,
    ) -> bool {
        if self.time().is_none_or(|time| window <= time) {
            return false;
        }
        if self.run_takes(window) {
            return true;
        }
        let Some(time) = self.input_moves() else {
            return false;
        };
        let Some(input) = self.input.as_mut() else {
            return false;
        };
        let settled = if self.run.is_some() {
            // The run just sent stays in flight while the next one is sent: the outputs
            // must have passed the runs before it.
            time
        } else if self.counted {
            settle_target(&self.in_flight, window)
        } else {
            window
        }
        .min(wait_for);
        let outputs = Outputs(&self.report);
        let moved =
            advance_input_settling(worker, input, &outputs, window, settled, self.park, stop);
        // The windows the outputs have passed are no longer in flight.
        let frontier = self.report.borrow().output_frontier();
        while let Some(&(w, _)) = self.in_flight.front() {
            if frontier.is_some_and(|f| f <= w) {
                break;
            }
            self.in_flight.pop_front();
        }
        moved
    }

    /// Advances the input to `window` if that is later, without waiting for the outputs.
    ///
    /// With [`windows_in_runs`](Self::windows_in_runs), the run being sent takes `window`
    /// unless it is over its budget.
    pub fn advance_without_waiting(&mut self, window: u64) {
        if self.time().is_none_or(|time| window <= time) || self.run_takes(window) {
            return;
        }
        if self.input_moves().is_some() {
            if let Some(input) = self.input.as_mut() {
                input.advance_to(window);
            }
        }
    }

    /// Before the input's time moves: the events sent at it become a window in flight.
    /// Returns the input's time (`None`: the input is closed).
    fn input_moves(&mut self) -> Option<u64> {
        let time = self.input_time()?;
        if self.sent > 0 {
            self.in_flight.push_back((time, self.sent));
            self.sent = 0;
        }
        Some(time)
    }

    /// Whether the outputs have not yet passed every window the input has passed: the
    /// dataflow has work in flight, and a caller waiting for input should step it instead.
    pub fn behind(&self) -> bool {
        self.time()
            .is_some_and(|t| Outputs(&self.report).less_than(&t))
    }

    /// One step of the worker.
    pub fn step(&mut self, worker: &mut Worker) {
        worker.step();
    }

    /// One step of the worker, parking it as [`park_when_idle`](Self::park_when_idle) set if
    /// it has nothing to do (a plain step if that was never called): for a caller with no new
    /// input this round, whose windows in flight wait on another worker.
    pub fn step_or_park(&mut self, worker: &mut Worker) {
        advance::step(worker, self.park);
    }

    /// Whether a sink or the embedder failed (the failure stays for [`take_failure`](Self::take_failure)).
    pub fn failed(&self) -> bool {
        self.report.borrow().error.is_some() || self.embed_errors.borrow().is_some()
    }

    /// The first failure of the embedder, else of a sink, taken.
    pub fn take_failure(&self) -> Option<Error> {
        if let Some(e) = self.embed_errors.borrow_mut().take() {
            return Some(Error::Operator(e));
        }
        self.report.borrow_mut().error.take()
    }

    /// Closes the input: every window is complete.
    pub fn close(&mut self) {
        self.input = None;
    }

    /// Closes the input and steps the worker until the dataflow is done, parking between
    /// steps; calls `on_failure` whenever a sink or the embedder has failed, and warns on
    /// standard error, naming the stages' frontiers, when the output frontier has not moved for
    /// [`STALL_REPORT`].
    pub fn drain(&mut self, worker: &mut Worker, on_failure: &mut dyn FnMut()) {
        self.close();
        let frontier = |p: &ProbeHandle<u64>| p.with_frontier(|f| f.to_vec());
        let outputs = |d: &Driver| d.report.borrow().output_frontier();
        let mut last_move = (outputs(self), Instant::now());
        let mut reported = false;
        while worker.step_or_park(Some(PARK)) {
            if self.failed() {
                on_failure();
            }
            let now = outputs(self);
            if now != last_move.0 {
                last_move = (now, Instant::now());
                reported = false;
            } else if !reported && last_move.1.elapsed() >= STALL_REPORT {
                reported = true;
                let mut stages: Vec<String> = self
                    .stages
                    .iter()
                    .map(|(name, p)| format!("{name} {:?}", frontier(p)))
                    .collect();
                stages.extend(
                    self.report
                        .borrow()
                        .frontiers
                        .iter()
                        .map(|(name, f)| format!("{name} {:?}", f.as_slice())),
                );
                eprintln!(
                    "warning: worker {}: the output frontier has stayed at {:?} for {}s; stage \
                     frontiers: {}",
                    worker.index(),
                    last_move.0.as_slice(),
                    STALL_REPORT.as_secs(),
                    stages.join(", ")
                );
            }
        }
    }

    /// What the sinks report once drained: the first failure, else rows and forecast errors.
    pub fn finish(self) -> Result<SinkReport> {
        if let Some(e) = self.take_failure() {
            return Err(e);
        }
        Ok(std::mem::take(&mut *self.report.borrow_mut()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use personaflow_io::tables::Table;
    use rand::{Rng, SeedableRng};
    use std::collections::VecDeque;

    /// The rule from scratch: every window in flight may stay (no wait: the oldest of them)
    /// while they are at most `FLOW_CONTROL_MAX_WINDOWS` and their events add up to at most
    /// the budget; else all drain down to the window bound (`window`).
    fn oracle(in_flight: &VecDeque<(u64, u64)>, window: u64) -> u64 {
        let mut events = 0;
        for (_, e) in in_flight {
            events += e;
        }
        if in_flight.is_empty()
            || in_flight.len() > FLOW_CONTROL_MAX_WINDOWS
            || events > FLOW_CONTROL_EVENTS
        {
            window
        } else {
            in_flight[0].0
        }
    }

    /// A run takes windows while its events and windows with events are within the budget;
    /// the window that would go over it starts the next run, at its own time.
    #[test]
    fn a_run_of_windows_stays_at_its_first_window_until_over_its_budget() {
        use crate::config::{Config, EmbedderKind, ForecasterKind};
        use crate::graph::{self, ModelStats, StateMode};
        use personaflow_io::writer::PartitionedSinks;
        let out = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.embedder.kind = EmbedderKind::Standardised;
        config.forecaster.kind = ForecasterKind::None;
        let sinks = PartitionedSinks {
            root: out.path().into(),
            spec: config.window_spec(),
            row_group_rows: 1024,
            observer: None,
        };
        let times = timely::execute_directly(move |worker| {
            let handles = graph::build_with(
                worker,
                &config,
                &sinks,
                &ModelStats::default(),
                StateMode::Off,
            )
            .unwrap();
            let (mut driver, _) = Driver::new(handles);
            driver.windows_in_runs(RunBudget {
                events: 5,
                windows: 2,
            });
            let mut times = Vec::new();
            // Windows 0..4 with one event each, window 4 with six, then 5..7 with one.
            for (window, events) in [(0, 1), (1, 1), (2, 1), (3, 1), (4, 6), (5, 1), (6, 1)] {
                driver.advance(worker, window, &|| false);
                for i in 0..events {
                    let ts = window as i64 * 60_000 + i;
                    driver.send(Event::new(ts, "u1", "page_view"));
                }
                times.push((driver.time().unwrap(), driver.input_time().unwrap()));
            }
            driver.drain(worker, &mut || {});
            assert_eq!(driver.finish().unwrap().rows[&Table::Features], 7);
            times
        });
        // (window, input time): windows 0..2 go at 0 (two windows with events before window
        // 2); window 3 would make a third, so it starts a run; window 4's six events are over
        // the event budget, so window 5 starts a run, which takes window 6.
        assert_eq!(
            times,
            vec![(0, 0), (1, 0), (2, 0), (3, 3), (4, 3), (5, 5), (6, 5)]
        );
    }

    #[test]
    fn the_settle_target_drains_the_windows_in_flight_once_over_the_budget() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(41);
        for case in 0..2_000 {
            let mut w = 0u64;
            let dense = rng.random_bool(0.3);
            let in_flight: VecDeque<(u64, u64)> = (0..rng.random_range(0..400))
                .map(|_| {
                    w += rng.random_range(1..50);
                    let events = if dense {
                        rng.random_range(1..2_000)
                    } else {
                        rng.random_range(1..4)
                    };
                    (w, events)
                })
                .collect();
            let window = w + rng.random_range(1..10);
            assert_eq!(
                settle_target(&in_flight, window),
                oracle(&in_flight, window),
                "case {case}"
            );
        }
    }
}
