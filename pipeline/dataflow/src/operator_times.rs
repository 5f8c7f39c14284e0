//! `runtime.operator_times`: where a worker's time goes, operator by operator, from timely's
//! own log of operator activations (its `Schedule` events). Off by default; on, a backfill
//! keeps each operator's activations and the time spent in them, per worker, and reports
//! them in `run.json` (`operator_times`), and `personaflow backfill` prints them as a table.
//! An operator's time includes the operators it contains: a dataflow's `own` time (its time
//! less its operators') is timely's progress tracking between them, the part of a window's
//! cost that every window with data pays whatever its events.
//!
//! ```
//! use personaflow_dataflow::operator_times::OperatorTimes;
//! use timely::dataflow::operators::{Inspect, ToStream};
//! let rows = timely::execute_directly(|worker| {
//!     let times = OperatorTimes::register(worker);
//!     worker.dataflow::<u64, _, _>(|scope| {
//!         (0..100u64).to_stream(scope).container::<Vec<_>>().inspect(|_| {});
//!     });
//!     while worker.step() {}
//!     times.report(worker)
//! });
//! let dataflow = rows.iter().find(|r| r.address == [0]).unwrap();
//! let inspect = rows.iter().find(|r| r.name == "InspectBatch").unwrap();
//! assert!(inspect.activations > 0 && inspect.address == [0, 2]);
//! assert!(dataflow.secs >= inspect.secs && dataflow.own_secs <= dataflow.secs);
//! ```

use serde::Serialize;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;
use timely::logging::{StartStop, TimelyEvent, TimelyEventBuilder};
use timely::worker::Worker;

/// The name under which timely's log is taken.
const LOG: &str = "timely";

/// One operator of one worker: how often it was activated and for how long.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct OperatorTime {
    /// The worker.
    pub worker: usize,
    /// The operator's address: the path of scope indexes from the root (`[0]` is the first
    /// dataflow, `[0, 3]` its fourth operator).
    pub address: Vec<usize>,
    /// The operator's name (`WindowAggregate`, `SinkProfiles`, ...; `Dataflow` for a scope).
    pub name: String,
    /// Times it was scheduled.
    pub activations: u64,
    /// Seconds spent in it, the operators it contains included.
    pub secs: f64,
    /// Seconds spent in it but not in the operators it contains (all of it for an operator
    /// that contains none).
    pub own_secs: f64,
}

/// What the log has told so far, by timely's worker-unique operator id.
#[derive(Debug, Default)]
struct Log {
    /// Address and name.
    operators: HashMap<usize, (Vec<usize>, String)>,
    /// When each operator's current activation started (log time).
    started: HashMap<usize, Duration>,
    /// Activations and time.
    totals: HashMap<usize, (u64, Duration)>,
}

impl Log {
    fn event(&mut self, at: Duration, event: &TimelyEvent) {
        match event {
            TimelyEvent::Operates(o) => {
                self.operators
                    .insert(o.id, (o.addr.clone(), o.name.clone()));
            }
            TimelyEvent::Schedule(s) => match s.start_stop {
                StartStop::Start => {
                    self.started.insert(s.id, at);
                }
                StartStop::Stop => {
                    if let Some(start) = self.started.remove(&s.id) {
                        let total = self.totals.entry(s.id).or_default();
                        total.0 += 1;
                        total.1 += at.saturating_sub(start);
                    }
                }
            },
            _ => {}
        }
    }
}

/// Collects a worker's operator times from the moment it is registered
/// ([`register`](Self::register)) until [`report`](Self::report).
#[derive(Debug)]
pub struct OperatorTimes {
    log: Rc<RefCell<Log>>,
}

impl OperatorTimes {
    /// Starts taking `worker`'s log of operator activations. Register before building the
    /// dataflow: operators are named in the log when they are built.
    pub fn register(worker: &mut Worker) -> OperatorTimes {
        let log = Rc::new(RefCell::new(Log::default()));
        let sink = log.clone();
        if let Some(mut registry) = worker.log_register() {
            registry.insert::<TimelyEventBuilder, _>(LOG, move |_, events| {
                if let Some(events) = events {
                    let mut log = sink.borrow_mut();
                    for (at, event) in events.iter() {
                        log.event(*at, event);
                    }
                }
            });
        }
        OperatorTimes { log }
    }

    /// Stops taking the log and reports every operator that was activated, most time first.
    pub fn report(self, worker: &mut Worker) -> Vec<OperatorTime> {
        if let Some(mut registry) = worker.log_register() {
            registry.flush();
            registry.remove(LOG);
        }
        let log = self.log.borrow();
        let rows = log.totals.iter().map(|(id, (activations, time))| {
            let (address, name) = log.operators.get(id).cloned().unwrap_or_default();
            OperatorTime {
                worker: worker.index(),
                address,
                name,
                activations: *activations,
                secs: time.as_secs_f64(),
                own_secs: 0.0,
            }
        });
        with_own_times(rows.collect())
    }
}

/// Fills in each row's `own_secs`: its time less that of the rows directly inside it (one
/// address longer, with its address as their prefix, on the same worker); sorts by time, most
/// first.
///
/// ```
/// use personaflow_dataflow::operator_times::{with_own_times, OperatorTime};
/// let row = |address: Vec<usize>, secs: f64| OperatorTime { address, secs, ..Default::default() };
/// let rows = with_own_times(vec![row(vec![0, 1], 2.0), row(vec![0], 5.0), row(vec![0, 2], 1.0)]);
/// assert_eq!(rows[0].address, [0]);
/// assert_eq!(rows[0].own_secs, 2.0);
/// assert_eq!(rows[1].own_secs, 2.0);
/// ```
pub fn with_own_times(mut rows: Vec<OperatorTime>) -> Vec<OperatorTime> {
    let mut inside: HashMap<(usize, Vec<usize>), f64> = HashMap::new();
    for r in &rows {
        if let Some((_, parent)) = r.address.split_last() {
            *inside.entry((r.worker, parent.to_vec())).or_default() += r.secs;
        }
    }
    for r in &mut rows {
        let children = inside
            .get(&(r.worker, r.address.clone()))
            .copied()
            .unwrap_or(0.0);
        r.own_secs = (r.secs - children).max(0.0);
    }
    sort_by_time(&mut rows);
    rows
}

/// Sorts rows by time, most first (then by worker and address): how [`with_own_times`] and
/// [`OperatorTimes::report`] hand them on, and how the workers' reports merge.
///
/// ```
/// use personaflow_dataflow::operator_times::{sort_by_time, OperatorTime};
/// let row = |worker: usize, secs: f64| OperatorTime { worker, secs, ..Default::default() };
/// let mut rows = vec![row(0, 1.0), row(1, 3.0), row(0, 3.0)];
/// sort_by_time(&mut rows);
/// assert_eq!(rows.iter().map(|r| (r.worker, r.secs)).collect::<Vec<_>>(), [(0, 3.0), (1, 3.0), (0, 1.0)]);
/// ```
pub fn sort_by_time(rows: &mut [OperatorTime]) {
    rows.sort_by(|a, b| {
        b.secs
            .total_cmp(&a.secs)
            .then_with(|| (a.worker, &a.address).cmp(&(b.worker, &b.address)))
    });
}

/// The rows as a table, one line an operator and worker, most time first; at most `limit`
/// lines after the header.
///
/// ```
/// use personaflow_dataflow::operator_times::{table, OperatorTime};
/// let rows = vec![OperatorTime {
///     worker: 1, address: vec![0, 3], name: "Sequences".into(), activations: 12, secs: 0.25, own_secs: 0.25,
/// }];
/// let text = table(&rows, 10);
/// assert!(text.lines().nth(1).unwrap().contains("Sequences"));
/// assert!(text.contains("250.0"));
/// ```
pub fn table(rows: &[OperatorTime], limit: usize) -> String {
    let mut out = format!(
        "{:>6} {:<10} {:<24} {:>11} {:>10} {:>10}\n",
        "worker", "address", "operator", "activations", "ms", "own ms"
    );
    for r in rows.iter().take(limit) {
        let address = format!("{:?}", r.address);
        out.push_str(&format!(
            "{:>6} {:<10} {:<24} {:>11} {:>10.1} {:>10.1}\n",
            r.worker,
            address,
            r.name,
            r.activations,
            r.secs * 1e3,
            r.own_secs * 1e3
        ));
    }
    out
}
