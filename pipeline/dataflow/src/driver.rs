//! The one driver loop of a dataflow worker: events are sent at the input's time, the input
//! is advanced as event time moves (with flow control: no more input while the outputs lag
//! more than [`FLOW_CONTROL_WINDOWS`] windows behind), the worker steps, and at the end the
//! input is closed and the dataflow drained (with a watchdog that names the stages holding it
//! back). The backfill drives it from its file readers, the continuous job from Kafka, the
//! oracle tests from vectors of events; each decides *when* to advance, the driver does the
//! rest the same way for all of them.
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
use personaflow_operators::ops::advance::advance_input;
use personaflow_operators::ops::ErrorSlot;
use personaflow_operators::Event;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};
use timely::dataflow::{InputHandleVec, ProbeHandle};
use timely::worker::Worker;

pub use personaflow_operators::ops::advance::FLOW_CONTROL_WINDOWS;

/// How long a draining worker parks between steps when it has nothing to do.
pub const PARK: Duration = Duration::from_secs(1);

/// How long the output frontier may stay still while draining before the driver says which
/// stages hold it back (once per stall).
pub const STALL_REPORT: Duration = Duration::from_secs(60);

/// Drives one worker's dataflow (see the [module](self)).
#[derive(Debug)]
pub struct Driver {
    input: Option<InputHandleVec<u64, Event>>,
    probe: ProbeHandle<u64>,
    report: Rc<RefCell<SinkReport>>,
    embed_errors: ErrorSlot,
    stages: Vec<(&'static str, ProbeHandle<u64>)>,
}

impl Driver {
    /// The driver of a built dataflow, and the dataflow's operator snapshots (when kept).
    pub fn new(handles: DataflowHandles) -> (Driver, Option<StateSnapshots>) {
        let DataflowHandles {
            input,
            probe,
            report,
            embed_errors,
            stages,
            snapshots,
        } = handles;
        let driver = Driver {
            input: Some(input),
            probe,
            report,
            embed_errors,
            stages,
        };
        (driver, snapshots)
    }

    /// The input's time (the first window still open), `None` once the input is closed.
    pub fn time(&self) -> Option<u64> {
        self.input.as_ref().map(|i| *i.time())
    }

    /// The input, while it is open (for callers that route events themselves).
    pub fn input(&mut self) -> Option<&mut InputHandleVec<u64, Event>> {
        self.input.as_mut()
    }

    /// Sends an event at the input's time; its window must not be before it. Ignored once the
    /// input is closed.
    pub fn send(&mut self, event: Event) {
        if let Some(input) = self.input.as_mut() {
            input.send(event);
        }
    }

    /// Advances the input to `window` if that is later than its time, then steps the worker
    /// until the outputs are within [`FLOW_CONTROL_WINDOWS`] of it or `stop` says so. Returns
    /// whether the input moved.
    pub fn advance(&mut self, worker: &mut Worker, window: u64, stop: &dyn Fn() -> bool) -> bool {
        match self.input.as_mut() {
            Some(input) => advance_input(worker, input, &self.probe, window, stop),
            None => false,
        }
    }

    /// Advances the input to `window` if that is later, without waiting for the outputs.
    pub fn advance_without_waiting(&mut self, window: u64) {
        if let Some(input) = self.input.as_mut() {
            if window > *input.time() {
                input.advance_to(window);
            }
        }
    }

    /// One step of the worker.
    pub fn step(&mut self, worker: &mut Worker) {
        worker.step();
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
        let mut last_move = (frontier(&self.probe), Instant::now());
        let mut reported = false;
        while worker.step_or_park(Some(PARK)) {
            if self.failed() {
                on_failure();
            }
            let now = frontier(&self.probe);
            if now != last_move.0 {
                last_move = (now, Instant::now());
                reported = false;
            } else if !reported && last_move.1.elapsed() >= STALL_REPORT {
                reported = true;
                let stages: Vec<String> = self
                    .stages
                    .iter()
                    .map(|(name, p)| format!("{name} {:?}", frontier(p)))
                    .collect();
                eprintln!(
                    "warning: worker {}: the output frontier has stayed at {:?} for {}s; stage \
                     frontiers: {}",
                    worker.index(),
                    last_move.0,
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
