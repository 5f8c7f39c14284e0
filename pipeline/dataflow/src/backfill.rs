//! The backfill job: reads event files in event-time order, runs the dataflow, and writes the
//! output tables atomically.
//!
//! 1. Every input is resolved and checked (schemas, required columns, Parquet footers) before
//!    anything is written.
//! 2. A reader thread decodes the files as one stream in event-time order
//!    ([`TimeOrdered`]: a k-way merge by each file's first events), rejects bad rows and
//!    events more than `ingest.max_out_of_order` behind the input's event time (the
//!    [`EventClock`]: the `ingest.max_outliers + 1`-th newest event, so a few rows dated far
//!    ahead cannot make the rest late), and hands chunks to worker 0, which advances the input
//!    frontier with that clock minus the bound, so arrangements compact as it goes.
//! 3. Outputs are written into a staging directory next to the output directory, which is
//!    renamed into place only when the whole run succeeded ([`personaflow_io::output_dir`]: the output
//!    is checked and locked before any input is read, and a crash at any step of the commit
//!    is recovered by the next run).
//!
//! A run stops early, writing nothing, when [`Backfill::interrupt`] is set (the binary sets it
//! on SIGINT and SIGTERM).

use crate::config::Config;
use crate::driver::{Driver, RunBudget};
use crate::graph::{self, DataflowHandles};
use crate::operator_times::{sort_by_time, OperatorTime, OperatorTimes};
use crate::{Error, Result};
use personaflow_io::output_dir::{self, StagedOutput};
use personaflow_io::source::{
    check_input, resolve_inputs, IngestMapping, InputFile, Merged, Reject, TimeOrdered,
};
use personaflow_io::tables::{RejectRow, Table, TableRow};
use personaflow_io::writer::PartitionedWriter;
use personaflow_operators::window::features::{feature_schema_hash, FEATURE_SCHEMA_VERSION};
use personaflow_operators::Event;
use serde::Serialize;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Chunks buffered between the reader thread and the dataflow.
const READ_AHEAD_CHUNKS: usize = 4;
/// Window timings in `run.json` are reported per block of this many windows.
pub const TIMING_BLOCK_WINDOWS: u64 = 60;

/// Receives progress of a long backfill (the binary shows a progress bar).
pub trait Progress: Send + Sync {
    /// Called once with the total input size.
    fn start(&self, total_bytes: u64, files: usize);
    /// Called as input is read.
    fn update(&self, update: &ProgressUpdate);
    /// Called at the end of reading.
    fn finish(&self);
    /// Called once before reading, with the models that will run and where (e.g. the
    /// execution provider); the default does nothing.
    fn models(&self, _models: &graph::ModelsReport) {}
    /// Called with something the user should know that does not stop the run (e.g. what was
    /// recovered from an interrupted earlier run); the default does nothing.
    fn warning(&self, _message: &str) {}
}

/// A progress report.
#[derive(Clone, Debug, Default)]
pub struct ProgressUpdate {
    /// Bytes of input files completely read, plus an estimate within the current file.
    pub bytes_done: u64,
    /// Events accepted so far.
    pub events: u64,
    /// Rows rejected so far.
    pub rejects: u64,
    /// End of the newest window seen, ms.
    pub newest_window_end_ms: Option<i64>,
}

/// Progress that goes nowhere.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _: u64, _: usize) {}
    fn update(&self, _: &ProgressUpdate) {}
    fn finish(&self) {}
}

/// A backfill job.
#[derive(Clone, Debug)]
pub struct Backfill {
    /// Files, directories or globs.
    pub inputs: Vec<String>,
    /// Output directory (must not exist, or be empty, unless `overwrite`).
    pub output: PathBuf,
    /// The job configuration.
    pub config: Config,
    /// Replace an existing non-empty output directory (only one a personaflow run wrote).
    pub overwrite: bool,
    /// When it holds a signal number (not 0), the run stops, writes nothing and fails with
    /// [`Error::Interrupted`].
    pub interrupt: Option<Arc<AtomicUsize>>,
    /// Shown every window as it is written (the Redis sink is one); it sees the run as it
    /// goes, before the output is put in place.
    pub observer: Option<Arc<dyn personaflow_io::writer::WindowObserver>>,
}

impl Backfill {
    /// The signal that interrupted the run, if one did.
    fn interrupted(&self) -> Option<i32> {
        signal_in(&self.interrupt)
    }
}

/// What a run did: written to `run.json` in the output directory.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RunSummary {
    /// personaflow version.
    pub version: String,
    /// Feature schema version.
    pub feature_schema_version: u32,
    /// Feature schema hash (hex).
    pub feature_schema_hash: String,
    /// Embedder used.
    pub embedder: String,
    /// The models that ran: embedder, forecaster, execution provider, onnxruntime library.
    pub models: graph::ModelsReport,
    /// Time spent in the models (filled in at the end of the run).
    pub inference: graph::InferenceReport,
    /// Forecast errors per horizon (1-based) over the forecasts whose windows passed in the
    /// run (details in the `forecast_error` table): when they grow, retrain the forecaster.
    pub forecast_errors: BTreeMap<u32, graph::HorizonAccuracy>,
    /// Input files.
    pub inputs: Vec<String>,
    /// Input bytes.
    pub input_bytes: u64,
    /// Rows read (accepted + rejected).
    pub rows_read: u64,
    /// Events that entered the dataflow.
    pub events: u64,
    /// Rows rejected (bad rows and late events).
    pub rejects: u64,
    /// Of the rejects, events later than `ingest.max_out_of_order`.
    pub late_events: u64,
    /// Rejects per reason code: `late`, `malformed_record` or `invalid_<field>` (the `code`
    /// column of the `rejects` table).
    pub rejects_by_reason: BTreeMap<String, u64>,
    /// First window end, RFC 3339.
    pub first_window_end: Option<String>,
    /// Index of the first window (`first_window_end` says it as a time in `run.json`).
    #[serde(skip)]
    pub first_window_index: Option<u64>,
    /// Last window end, RFC 3339.
    pub last_window_end: Option<String>,
    /// Windows spanned.
    pub windows: u64,
    /// Rows written per table.
    pub rows_written: BTreeMap<String, u64>,
    /// Wall-clock seconds of the whole run.
    pub elapsed_secs: f64,
    /// Events per second over the whole run.
    pub events_per_sec: f64,
    /// Worker threads.
    pub workers: usize,
    /// Peak resident memory of the process, bytes (Linux `VmHWM`; absent elsewhere).
    pub peak_rss_bytes: Option<u64>,
    /// Wall time to process each block of [`TIMING_BLOCK_WINDOWS`] windows, in input order:
    /// shows whether the cost of a window grows with history.
    pub window_blocks: Vec<WindowBlock>,
    /// Each operator's activations and time, per worker, most time first: only with
    /// `runtime.operator_times` ([`crate::operator_times`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub operator_times: Vec<OperatorTime>,
    /// The effective configuration.
    pub config: Config,
}

/// Processing time of one block of windows.
#[derive(Clone, Debug, Default, Serialize)]
pub struct WindowBlock {
    /// First window of the block (index since the first window of the run).
    pub first_window: u64,
    /// Windows in the block.
    pub windows: u64,
    /// Events fed in the block.
    pub events: u64,
    /// Seconds from the block's first input to its outputs being complete.
    pub secs: f64,
}

/// Peak resident set size of this process, from `/proc/self/status` (Linux only).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The signal number an interrupt flag holds (0: none).
fn signal_in(flag: &Option<Arc<AtomicUsize>>) -> Option<i32> {
    flag.as_ref()
        .map(|i| i.load(Ordering::Relaxed))
        .filter(|s| *s != 0)
        .map(|s| s as i32)
}

/// Tells the reader and the workers to stop: after an error (`abort`), or on a signal.
#[derive(Debug, Default)]
struct Stop {
    abort: AtomicBool,
    interrupt: Option<Arc<AtomicUsize>>,
}

impl Stop {
    /// Whether to stop.
    fn now(&self) -> bool {
        self.abort.load(Ordering::Relaxed) || self.signal().is_some()
    }

    /// The signal that interrupted the run, if one did.
    fn signal(&self) -> Option<i32> {
        signal_in(&self.interrupt)
    }

    fn abort(&self) {
        self.abort.store(true, Ordering::SeqCst);
    }
}

enum Msg {
    /// Events to feed. Before the event at index `i` of each `(i, target)` of `advances`, the
    /// input frontier moves to `target`; after them all, to `epoch`.
    Chunk {
        events: Vec<Event>,
        advances: Vec<(usize, u64)>,
        epoch: u64,
    },
    Failed(Error),
}

/// The input's event time as the reader judges lateness by: the `k`-th newest window seen
/// (the oldest seen while fewer have been), so that up to `k - 1` events dated far ahead of
/// the rest (a wrong clock, a typo) cannot make the events after them late. They are kept,
/// and processed when the input reaches their windows.
#[derive(Debug)]
pub struct EventClock {
    k: usize,
    top: BinaryHeap<Reverse<u64>>,
}

impl EventClock {
    /// A clock that follows the `k`-th newest window (`k` at least 1).
    pub fn new(k: usize) -> Self {
        EventClock {
            k: k.max(1),
            top: BinaryHeap::with_capacity(k.max(1) + 1),
        }
    }

    /// Notes an accepted event's window.
    pub fn observe(&mut self, window: u64) {
        if self.top.len() < self.k {
            self.top.push(Reverse(window));
        } else if self.top.peek().is_some_and(|Reverse(min)| window > *min) {
            self.top.pop();
            self.top.push(Reverse(window));
        }
    }

    /// The window event time stands at (`None` before any event); it never goes back.
    pub fn now(&self) -> Option<u64> {
        self.top.peek().map(|Reverse(w)| *w)
    }

    /// The input frontier for `disorder` windows of allowed disorder: events in earlier
    /// windows are late.
    pub fn frontier(&self, disorder: u64) -> u64 {
        self.now().map_or(0, |n| n.saturating_sub(disorder))
    }
}

#[derive(Debug, Default)]
struct ReadStats {
    rows_read: u64,
    events: u64,
    rejects: u64,
    late: u64,
    by_reason: BTreeMap<String, u64>,
    first_window: Option<u64>,
    last_window: Option<u64>,
}

/// Runs a backfill.
pub fn run(job: &Backfill, progress: Arc<dyn Progress>) -> Result<RunSummary> {
    let started = Instant::now();
    let config = &job.config;
    config.validate()?;
    let mapping = config.ingest_mapping()?;
    let files = resolve_inputs(&job.inputs, &mapping)?;
    // Before reading anything: the output must be apart from the inputs, and usable.
    let mut inputs: Vec<PathBuf> = job
        .inputs
        .iter()
        .map(PathBuf::from)
        .filter(|p| p.exists())
        .collect();
    inputs.extend(files.iter().map(|f| f.path.clone()));
    output_dir::check_not_overlapping(&job.output, &inputs)?;
    let staged = StagedOutput::prepare(&job.output, job.overwrite)?;
    for r in staged.recovered() {
        progress.warning(&r.0);
    }
    for file in &files {
        check_input(file, &mapping)?;
    }
    let models = graph::check_models(config)?;
    progress.models(&models);
    // On an error `staged` is dropped, which removes the staging directory.
    let mut summary = run_in(job, &files, &mapping, staged.staging(), progress)?;
    if let Some(signal) = job.interrupted() {
        return Err(Error::Interrupted { signal });
    }
    // Every table exists, rows or not.
    let spec = config.window_spec();
    let partition = summary
        .first_window_index
        .map_or(personaflow_io::writer::EPOCH_PARTITION.to_string(), |w| {
            personaflow_io::writer::date_partition(spec.start_ms(w))
        });
    personaflow_io::writer::write_empty_tables(
        staged.staging(),
        &graph::tables(config),
        &partition,
        config.output.row_group_rows,
    )?;
    summary.embedder = models.embedder.clone();
    summary.models = models;
    summary.elapsed_secs = started.elapsed().as_secs_f64();
    summary.peak_rss_bytes = peak_rss_bytes();
    summary.events_per_sec = summary.events as f64 / summary.elapsed_secs.max(1e-9);
    let json = serde_json::to_vec_pretty(&summary).expect("summary serialises");
    staged.commit(&json)?;
    Ok(summary)
}

fn run_in(
    job: &Backfill,
    files: &[InputFile],
    mapping: &IngestMapping,
    staging: &Path,
    progress: Arc<dyn Progress>,
) -> Result<RunSummary> {
    let started = Instant::now();
    let config = job.config.clone();
    let (tx, rx) = sync_channel::<Msg>(READ_AHEAD_CHUNKS);
    let abort = Arc::new(Stop {
        abort: AtomicBool::new(false),
        interrupt: job.interrupt.clone(),
    });
    let stats = Arc::new(Mutex::new(ReadStats::default()));
    let reader = {
        let (files, mapping, config, staging_dir) = (
            files.to_vec(),
            mapping.clone(),
            config.clone(),
            staging.to_path_buf(),
        );
        let (stats, abort, progress) = (stats.clone(), abort.clone(), progress.clone());
        std::thread::Builder::new()
            .name("personaflow-reader".into())
            .spawn(move || {
                let result = read_all(
                    &files,
                    &mapping,
                    &config,
                    &staging_dir,
                    &tx,
                    &stats,
                    &abort,
                    &*progress,
                );
                progress.finish();
                if let Err(e) = result {
                    let _ = tx.send(Msg::Failed(e));
                }
            })
            .map_err(|e| Error::io(staging, e))?
    };
    let rx = Arc::new(Mutex::new(Some(rx)));
    let workers = config.runtime.workers;
    let timely_config = config.runtime.timely();
    let staging_root = staging.to_path_buf();
    let worker_config = config.clone();
    let worker_abort = abort.clone();
    let model_stats = graph::ModelStats::default();
    let worker_stats = model_stats.clone();
    let observer = job.observer.clone();
    let guards = timely::execute(timely_config, move |worker| {
        let times = worker_config
            .runtime
            .operator_times
            .then(|| OperatorTimes::register(worker));
        let handles = graph::build(
            worker,
            &worker_config,
            &staging_root,
            &worker_stats,
            observer.clone(),
        )?;
        let receiver = if worker.index() == 0 {
            rx.lock().expect("receiver lock").take()
        } else {
            None
        };
        let report = drive(worker, handles, receiver, &worker_abort);
        let operator_times = times.map(|t| t.report(worker)).unwrap_or_default();
        report.map(|r| WorkerReport {
            operator_times,
            ..r
        })
    })
    .map_err(Error::Dataflow)?;
    let mut rows: BTreeMap<String, u64> = BTreeMap::new();
    let mut window_blocks = Vec::new();
    let mut operator_times = Vec::new();
    let mut forecast_errors: BTreeMap<u32, graph::HorizonAccuracy> = BTreeMap::new();
    let mut first_error = None;
    for result in guards.join() {
        match result {
            Ok(Ok(report)) => {
                for (t, n) in report.rows {
                    *rows.entry(t.name().to_string()).or_default() += n;
                }
                for (h, e) in &report.forecast_errors {
                    forecast_errors.entry(*h).or_default().merge(e);
                }
                window_blocks.extend(report.blocks);
                operator_times.extend(report.operator_times);
            }
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(panic) => {
                first_error.get_or_insert(Error::WorkerPanicked {
                    message: panic.to_string(),
                });
            }
        }
    }
    // Each worker's rows carry their own times already; the merged report is sorted anew.
    sort_by_time(&mut operator_times);
    abort.abort();
    // A reader that panicked dropped its channel as if the input had ended: the workers
    // finished with what it had sent, so the run must fail, not write part of the input.
    if let Err(panic) = reader.join() {
        first_error.get_or_insert(Error::ReaderPanicked {
            message: panic_message(panic.as_ref()),
        });
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    let stats = std::mem::take(&mut *stats.lock().expect("stats lock"));
    rows.insert(Table::Rejects.name().to_string(), stats.rejects);
    let spec = config.window_spec();
    let rfc = |w: Option<u64>| {
        w.and_then(|w| chrono::DateTime::from_timestamp_millis(spec.end_ms(w)))
            .map(|d| d.to_rfc3339())
    };
    Ok(RunSummary {
        version: env!("CARGO_PKG_VERSION").to_string(),
        feature_schema_version: FEATURE_SCHEMA_VERSION,
        feature_schema_hash: format!("{:016x}", feature_schema_hash()),
        embedder: String::new(),
        models: graph::ModelsReport::default(),
        forecast_errors,
        inference: model_stats.report(&config, started.elapsed().as_secs_f64()),
        inputs: files.iter().map(|f| f.path.display().to_string()).collect(),
        input_bytes: files.iter().map(|f| f.size_bytes).sum(),
        rows_read: stats.rows_read,
        events: stats.events,
        rejects: stats.rejects,
        late_events: stats.late,
        rejects_by_reason: stats.by_reason,
        first_window_end: rfc(stats.first_window),
        first_window_index: stats.first_window,
        last_window_end: rfc(stats.last_window),
        windows: match (stats.first_window, stats.last_window) {
            (Some(a), Some(b)) => b - a + 1,
            _ => 0,
        },
        rows_written: rows,
        elapsed_secs: 0.0,
        events_per_sec: 0.0,
        workers,
        peak_rss_bytes: None,
        window_blocks,
        operator_times,
        config,
    })
}

/// Runs one worker: worker 0 feeds the input from the reader; every worker then drains the
/// dataflow and reports its sinks.
fn drive(
    worker: &mut timely::worker::Worker,
    handles: DataflowHandles,
    receiver: Option<Receiver<Msg>>,
    abort: &Stop,
) -> Result<WorkerReport> {
    let (mut driver, _) = Driver::new(handles);
    // A backfill reads as fast as it can: the events of a run of windows go in at one time.
    driver.windows_in_runs(RunBudget::default());
    let mut failure = None;
    let mut blocks: Vec<WindowBlock> = Vec::new();
    let mut block_start: Option<(u64, Instant, u64)> = None;
    if let Some(rx) = receiver {
        while let Ok(msg) = rx.recv() {
            match msg {
                Msg::Chunk {
                    events,
                    advances,
                    epoch,
                } => {
                    let n = events.len() as u64;
                    let (first, start, fed) = block_start.get_or_insert((epoch, Instant::now(), 0));
                    *fed += n;
                    if epoch >= *first + TIMING_BLOCK_WINDOWS {
                        blocks.push(WindowBlock {
                            first_window: *first,
                            windows: epoch - *first,
                            events: *fed,
                            secs: start.elapsed().as_secs_f64(),
                        });
                        block_start = Some((epoch, Instant::now(), 0));
                    }
                    // Advance the frontier as the reader's event clock moves, not once per
                    // chunk: a chunk can span many windows, and only about `disorder` windows
                    // should be open at a time. The reader accepted each event against the
                    // same clock, so no event is ever behind the frontier.
                    let mut advances = advances.into_iter().peekable();
                    for (i, e) in events.into_iter().enumerate() {
                        while let Some((_, target)) = advances.next_if(|(at, _)| *at == i) {
                            driver.advance(worker, target, &|| abort.now());
                        }
                        driver.send(e);
                    }
                    driver.advance_without_waiting(epoch);
                    driver.step(worker);
                }
                Msg::Failed(e) => {
                    failure = Some(e);
                    break;
                }
            }
            if driver.failed() {
                abort.abort();
            }
            if let Some(signal) = abort.signal() {
                failure = Some(Error::Interrupted { signal });
                break;
            }
            if abort.now() {
                break;
            }
        }
    }
    driver.drain(worker, &mut || abort.abort());
    if let Some(e) = failure {
        return Err(e);
    }
    let report = driver.finish()?;
    if let Some(origin) = blocks.first().map(|b| b.first_window) {
        blocks.iter_mut().for_each(|b| b.first_window -= origin);
    }
    Ok(WorkerReport {
        rows: report.rows,
        forecast_errors: report.forecast_errors,
        blocks,
        operator_times: Vec::new(),
    })
}

/// What one worker did.
struct WorkerReport {
    rows: BTreeMap<Table, u64>,
    forecast_errors: BTreeMap<u32, graph::HorizonAccuracy>,
    blocks: Vec<WindowBlock>,
    /// Its operators' times (with `runtime.operator_times`).
    operator_times: Vec<OperatorTime>,
}

#[allow(clippy::too_many_arguments)]
fn read_all(
    files: &[InputFile],
    mapping: &IngestMapping,
    config: &Config,
    staging: &Path,
    tx: &SyncSender<Msg>,
    stats: &Mutex<ReadStats>,
    abort: &Stop,
    progress: &dyn Progress,
) -> Result<()> {
    let spec = config.window_spec();
    let disorder = config.disorder_windows();
    let total_bytes: u64 = files.iter().map(|f| f.size_bytes).sum();
    progress.start(total_bytes, files.len());
    let mut rejects_writer =
        PartitionedWriter::new(staging, Table::Rejects, 0, config.output.row_group_rows);
    let mut input = TimeOrdered::new(files.to_vec(), mapping, config.ingest.chunk_rows)?;
    let names: Vec<String> = files.iter().map(|f| f.path.display().to_string()).collect();
    let mut clock = EventClock::new(config.ingest.max_outliers + 1);
    let mut merged = Merged::default();
    let mut update = ProgressUpdate::default();
    loop {
        if let Some(signal) = abort.signal() {
            return Err(Error::Interrupted { signal });
        }
        if abort.now() {
            return Ok(());
        }
        merged.clear();
        let more = input.next_chunk(&mut merged)?;
        let mut rejects = std::mem::take(&mut merged.rejects);
        let mut accepted = Vec::with_capacity(merged.events.len());
        let mut advances = Vec::new();
        let mut late_count = 0u64;
        let mut epoch = clock.frontier(disorder);
        let (mut first, mut last) = (None::<u64>, None::<u64>);
        let sources = merged.files.iter().zip(&merged.rows);
        for (e, (&file, &row)) in merged.events.drain(..).zip(sources) {
            let late = |reason: String| Reject {
                file: names[file as usize].clone(),
                row,
                field: Some("ts".into()),
                reason,
            };
            let Some(window) = spec.index(e.ts_ms) else {
                rejects.push(late("invalid: event time before 1970".into()));
                continue;
            };
            if window < epoch {
                late_count += 1;
                rejects.push(late(format!(
                    "late: {} windows behind the input's event time, more than \
                     ingest.max_out_of_order allows ({disorder} windows)",
                    clock.now().unwrap_or(0) - window,
                )));
                continue;
            }
            clock.observe(window);
            let now = clock.frontier(disorder);
            if now > epoch {
                advances.push((accepted.len(), now));
                epoch = now;
            }
            first = Some(first.map_or(window, |f| f.min(window)));
            last = Some(last.map_or(window, |l| l.max(window)));
            accepted.push(e);
        }
        if !rejects.is_empty() {
            let rows: Vec<RejectRow> = rejects
                .iter()
                .map(|r| RejectRow {
                    file: r.file.clone(),
                    row: r.row,
                    field: r.field.clone(),
                    code: r.code(),
                    reason: r.reason.clone(),
                })
                .collect();
            rejects_writer.write(None, &RejectRow::to_batch(&rows))?;
        }
        {
            let mut s = stats.lock().expect("stats lock");
            s.rows_read += merged.records;
            s.events += accepted.len() as u64;
            s.rejects += rejects.len() as u64;
            s.late += late_count;
            for r in &rejects {
                *s.by_reason.entry(r.code()).or_default() += 1;
            }
            if let Some(f) = first {
                s.first_window = Some(s.first_window.map_or(f, |x| x.min(f)));
            }
            if let Some(l) = last {
                s.last_window = Some(s.last_window.map_or(l, |x| x.max(l)));
            }
            update.events = s.events;
            update.rejects = s.rejects;
        }
        update.newest_window_end_ms = clock.now().map(|n| spec.end_ms(n));
        update.bytes_done = input.bytes_read().min(total_bytes);
        progress.update(&update);
        let msg = Msg::Chunk {
            events: accepted,
            advances,
            epoch,
        };
        if tx.send(msg).is_err() {
            return Ok(());
        }
        if !more {
            break;
        }
    }
    update.bytes_done = total_bytes;
    progress.update(&update);
    rejects_writer.finish_unpartitioned()?;
    Ok(())
}

/// The message of a panic's payload (`panic!` gives a `&str` or a `String`).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Progress that panics at its `n`-th update (on the reader's thread).
    struct PanicsAtUpdate {
        n: usize,
        seen: AtomicUsize,
    }

    impl Progress for PanicsAtUpdate {
        fn start(&self, _: u64, _: usize) {}
        fn update(&self, _: &ProgressUpdate) {
            if self.seen.fetch_add(1, Ordering::SeqCst) + 1 == self.n {
                panic!("update {} refused", self.n);
            }
        }
        fn finish(&self) {}
    }

    /// A reader that panics after it has sent part of the input fails the run, and nothing
    /// is written: before, the workers took the closed channel for the input's end and the
    /// run wrote what they had, as if it were all.
    #[test]
    fn a_reader_that_panics_fails_the_run_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("events.ndjson");
        let lines: String = (0..200)
            .map(|i| {
                format!(
                    "{{\"ts\": {}, \"user_id\": \"u{}\", \"action\": \"x\"}}\n",
                    i * 1_000,
                    i % 7
                )
            })
            .collect();
        std::fs::write(&input, lines).unwrap();
        let mut config = Config::default();
        config.embedder.kind = crate::config::EmbedderKind::Standardised;
        config.forecaster.kind = crate::config::ForecasterKind::None;
        config.ingest.chunk_rows = 16;
        let job = Backfill {
            inputs: vec![input.display().to_string()],
            output: dir.path().join("out"),
            config,
            overwrite: false,
            interrupt: None,
            observer: None,
        };
        // The whole input reads in without the panic.
        let whole = run(&job, Arc::new(NoProgress)).unwrap();
        assert_eq!(whole.events, 200);
        std::fs::remove_dir_all(&job.output).unwrap();
        let progress = Arc::new(PanicsAtUpdate {
            n: 3,
            seen: AtomicUsize::new(0),
        });
        let e = run(&job, progress).unwrap_err();
        assert!(
            matches!(&e, Error::ReaderPanicked { message } if message == "update 3 refused"),
            "{e}"
        );
        assert!(!job.output.exists(), "nothing is written");
    }

    #[test]
    fn the_event_clock_follows_the_kth_newest_window_and_never_goes_back() {
        let mut clock = EventClock::new(3);
        assert_eq!((clock.now(), clock.frontier(5)), (None, 0));
        // While fewer than k windows are seen, the clock is the oldest of them.
        for w in [100, 102] {
            clock.observe(w);
        }
        assert_eq!(clock.now(), Some(100));
        clock.observe(101);
        assert_eq!(clock.now(), Some(100));
        // Two outliers far ahead do not move it; a third does.
        clock.observe(400);
        clock.observe(401);
        assert_eq!(clock.now(), Some(102));
        assert_eq!(clock.frontier(5), 97);
        clock.observe(402);
        assert_eq!(clock.now(), Some(400));
        // Older windows never move it back.
        clock.observe(50);
        assert_eq!(clock.now(), Some(400));
        assert_eq!(EventClock::new(0).k, 1, "k is at least 1");
    }
}
