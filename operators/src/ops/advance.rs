//! The step every feeder of a dataflow takes when event time moves: advance the input, then
//! let the outputs catch up to within [`FLOW_CONTROL_WINDOWS`] before taking more input. The
//! production driver (`personaflow_dataflow::driver`) and the operators' oracle tests both
//! advance through [`advance_input`].

use std::time::Duration;
use timely::dataflow::{InputHandleVec, ProbeHandle};
use timely::worker::Worker;

/// The outputs' frontier a feeder waits for: a timely probe, or any other record of how far
/// the outputs have got (the production dataflow's sinks keep their own).
pub trait OutputFrontier {
    /// Whether the outputs may still produce something at a time before `time`.
    fn less_than(&self, time: &u64) -> bool;
}

impl OutputFrontier for ProbeHandle<u64> {
    fn less_than(&self, time: &u64) -> bool {
        ProbeHandle::less_than(self, time)
    }
}

/// Windows the outputs may lag behind the input frontier before the feeder stops taking input
/// and steps the dataflow until they catch up: bounds the open windows, and so memory,
/// whatever the input's speed.
pub const FLOW_CONTROL_WINDOWS: u64 = 2;

/// How long the continuous job's workers park, waiting for the outputs or another worker,
/// when they have nothing to do (a message from another worker wakes them sooner): stepping
/// without a pause spun the core, taking CPU from the other worker, the broker client's
/// threads and the brokers that share the machine. A backfill's workers step without a pause
/// instead (`park` of [`advance_input_settling`] `None`): each has a core, and waking from a
/// park made a sparse run of many small windows about 5% slower (BENCHMARKS.md, "Workers park
/// while they wait").
pub const SETTLE_PARK: Duration = Duration::from_millis(1);

/// Advances `input` to `window` if that is later than its time, then steps `worker` until
/// `probe` (the outputs' frontier) is within [`FLOW_CONTROL_WINDOWS`] of it or `stop` says so.
/// Returns whether the input moved.
///
/// ```
/// use personaflow_operators::ops::advance::advance_input;
/// use timely::dataflow::operators::{Input, Probe};
/// use timely::dataflow::ProbeHandle;
/// timely::execute_directly(|worker| {
///     let probe = ProbeHandle::new();
///     let mut input = worker.dataflow::<u64, _, _>(|scope| {
///         let (input, stream) = scope.new_input::<Vec<u32>>();
///         stream.probe_with(&probe);
///         input
///     });
///     input.send(1);
///     assert!(advance_input(worker, &mut input, &probe, 5, &|| false));
///     assert!(!probe.less_than(&3), "the outputs caught up to within 2 windows");
///     assert!(!advance_input(worker, &mut input, &probe, 4, &|| false), "never backwards");
/// });
/// ```
pub fn advance_input<D: Clone + 'static>(
    worker: &mut Worker,
    input: &mut InputHandleVec<u64, D>,
    probe: &impl OutputFrontier,
    window: u64,
    stop: &dyn Fn() -> bool,
) -> bool {
    let settled = window.saturating_sub(FLOW_CONTROL_WINDOWS);
    advance_input_settling(worker, input, probe, window, settled, None, stop)
}

/// Like [`advance_input`], but steps `worker` until the outputs have passed `settled` (at
/// most [`FLOW_CONTROL_WINDOWS`] before `window`): for a feeder that bounds the work in flight
/// otherwise, e.g. by its events. With `park`, a step that finds nothing to do parks the
/// worker up to that long ([`SETTLE_PARK`]); without, it steps again at once.
pub fn advance_input_settling<D: Clone + 'static>(
    worker: &mut Worker,
    input: &mut InputHandleVec<u64, D>,
    probe: &impl OutputFrontier,
    window: u64,
    settled: u64,
    park: Option<Duration>,
    stop: &dyn Fn() -> bool,
) -> bool {
    if window <= *input.time() {
        return false;
    }
    input.advance_to(window);
    let settled = settled.min(window.saturating_sub(FLOW_CONTROL_WINDOWS));
    while probe.less_than(&settled) && !stop() {
        step(worker, park);
    }
    true
}

/// One step of `worker`; with `park`, a step that finds nothing to do parks the worker up to
/// that long (a message from another worker wakes it sooner), without, it returns at once.
pub fn step(worker: &mut Worker, park: Option<Duration>) {
    match park {
        Some(bound) => {
            worker.step_or_park(Some(bound));
        }
        None => {
            worker.step();
        }
    }
}
