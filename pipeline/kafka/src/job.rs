//! The continuous job (`personaflow run`): the backfill's dataflow fed from a Kafka topic.
//!
//! - **Consumers.** Each timely worker has its own `rdkafka` consumer in the job's group,
//!   assigned the partitions `p` with `p % workers == worker` (the job assigns partitions
//!   itself, as Flink's Kafka source does, so restarts are deterministic; offsets are committed
//!   to the group). Every message is one JSON event, decoded through the ingest mapping.
//! - **Event time.** One [`Watermarks`] tracker spans every partition of the job: a
//!   partition's watermark is its newest event time minus `stream.allowed_lateness`, the job's
//!   the minimum over active partitions (idle ones stop holding it back after
//!   `stream.idle_timeout`). Every worker advances its input to the window holding the job's
//!   watermark, so windows before it close; older events go to the `late` table, counted.
//! - **Outputs.** Closed windows' rows are written per table and worker as atomic Parquet
//!   files with idempotent names, one per run of windows a sink completes together
//!   ([`personaflow_io::window_file`]: the group commit of a job catching up), and published
//!   to the output topics.
//! - **Delivery.** Once every sink has written every window before `d`, the job's settler
//!   thread waits until the brokers have acknowledged every message sent for those windows
//!   (and every dead letter sent before; the workers go on meanwhile, their new messages in
//!   the producer's next epoch: [`crate::output::Deliveries`]); then the workers write the
//!   checkpoint (`_checkpoint.json`: windows emitted, rewind offsets) and commit each
//!   partition's offset: the first offset whose event is in a window not yet emitted.
//!   Before the checkpoint names a window, every worker has stored the state of its persona,
//!   pin and drift operators as of that window ([`personaflow_dataflow::snapshot`]). On restart
//!   the job removes (or cuts) files of windows the checkpoint does not cover, resumes that operator
//!   state (split between the workers, whose number may have changed), rewinds each partition
//!   to the first event of the `L + W` windows the next window's windowed state depends on,
//!   rebuilds that state, and never writes an emitted window again.
//! - **Shutdown.** SIGINT/SIGTERM (the `shutdown` flag) stops consuming, writes every closed
//!   window, commits and returns; windows still open are emitted after the restart. With
//!   `until_end` the job instead stops at the partitions' ends as they were at start and
//!   closes every window, as a backfill does.

use crate::checkpoint::{remove_unemitted, Checkpoint, PartitionCheckpoint, CHECKPOINT_VERSION};
use crate::metrics::{Metrics, MetricsServer};
use crate::output::{Publisher, SinkProgress, StreamSinks};
use crate::watermark::{Arrival, Watermarks};
use crate::{Error, Result};
use personaflow_dataflow::config::{Config, ForecasterKind};
use personaflow_dataflow::driver::Driver;
use personaflow_dataflow::graph::{self, ModelStats, OperatorState, StateMode, StateSnapshots};
use personaflow_dataflow::snapshot;
use personaflow_io::atomic_file::write_parquet_atomically;
use personaflow_io::source::{JsonRecordDecoder, RecordError};
use personaflow_io::tables::{LateRow, Table, TableRow};
use personaflow_operators::ops::advance::SETTLE_PARK;
use personaflow_operators::sequences::SequenceLog;
use personaflow_operators::{Event, WindowSpec};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Timeout of metadata, offset and commit requests to the brokers.
pub const BROKER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one poll waits for a message when none is buffered.
pub const POLL_WAIT: Duration = Duration::from_millis(50);
/// How often at most a worker that is catching up (its last round filled
/// `stream.poll_batch`) commits its settled windows: writes late rows and commits its
/// partitions. A worker that has caught up commits every window as it is settled.
pub const CATCH_UP_SETTLE_INTERVAL: Duration = Duration::from_millis(500);
/// How often consumer lag is refreshed and progress reported.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(2);
/// Longest wait of the settler between two looks at whether it should stop.
pub const SETTLER_WAIT: Duration = Duration::from_millis(100);

/// A continuous job.
#[derive(Clone, Debug)]
pub struct StreamJob {
    /// Bootstrap brokers.
    pub brokers: String,
    /// Input topic.
    pub topic: String,
    /// Consumer group.
    pub group: String,
    /// Output directory (created; a checkpoint in it means a restart).
    pub output: PathBuf,
    /// The job configuration (`[stream]` and the dataflow's sections).
    pub config: Config,
    /// Stop at the partitions' ends as of the start and close every window (a bounded run).
    pub until_end: bool,
    /// Set to stop gracefully (SIGINT/SIGTERM).
    pub shutdown: Arc<AtomicBool>,
    /// Shown every complete window of every table as it is emitted (and the replayed ones
    /// after a restart); `run --serve` keeps its persona store current with it.
    pub observer: Option<Arc<dyn personaflow_io::writer::WindowObserver>>,
}

/// What the job reports as it runs (the binary prints it).
pub trait StreamReporter: Send + Sync {
    /// Once, when the job has its partitions and is about to consume.
    fn started(&self, info: &StartInfo);
    /// Every [`STATUS_INTERVAL`].
    fn status(&self, status: &StreamStatus);
    /// A problem the job survives (e.g. a broker connection error librdkafka retries).
    fn warning(&self, message: &str);
}

/// How the job started.
#[derive(Clone, Debug, Serialize)]
pub struct StartInfo {
    /// Partitions of the input topic.
    pub partitions: usize,
    /// Windows emitted before this run (restart), by end, RFC 3339.
    pub resumed_after: Option<String>,
    /// Files of windows the checkpoint does not cover, removed.
    pub removed_files: usize,
    /// The operator state resumed (restart), in words: personas, pinned users, drift scopes
    /// (and users with active-history sequence rings).
    pub resumed_state: Option<String>,
    /// Where `/metrics` is served.
    pub metrics_addr: Option<String>,
    /// The models that run.
    pub models: graph::ModelsReport,
    /// Output topics.
    pub output_topics: Vec<String>,
}

/// A progress report.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StreamStatus {
    /// New events so far.
    pub events: u64,
    /// Events replayed to rebuild state.
    pub replayed: u64,
    /// Malformed messages.
    pub rejects: u64,
    /// Late events.
    pub late: u64,
    /// Windows emitted by this run.
    pub windows_emitted: u64,
    /// The job's watermark, RFC 3339.
    pub watermark: Option<String>,
    /// Messages behind the partitions' ends.
    pub lag: i64,
}

/// What a run did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StreamSummary {
    /// Counters at the end.
    pub status: StreamStatus,
    /// Last window emitted (by end, RFC 3339).
    pub emitted_through: Option<String>,
    /// Rows written per table by this run.
    pub rows_written: BTreeMap<String, u64>,
    /// Messages published to output topics.
    pub published: u64,
    /// Median window close-to-output latency, seconds.
    pub latency_p50_secs: Option<f64>,
    /// 99th percentile of it.
    pub latency_p99_secs: Option<f64>,
    /// Wall-clock seconds.
    pub elapsed_secs: f64,
    /// New events per second, from the first event consumed to the end.
    pub events_per_sec: f64,
    /// Peak resident memory, bytes.
    pub peak_rss_bytes: Option<u64>,
    /// Operator state files stored (one per worker and checkpoint).
    pub state_files: u64,
    /// Bytes of operator state stored.
    pub state_bytes: u64,
    /// Why it stopped: `signal` or `end`.
    pub stopped_by: String,
    /// The models that ran.
    pub models: graph::ModelsReport,
    /// The effective configuration.
    pub config: Config,
}

/// One partition's bookkeeping for commits and rewinds.
#[derive(Clone, Debug, Default)]
struct PartitionTrack {
    /// Smallest offset of an event sent to the dataflow, per window (pruned below the
    /// windows the next window's state needs).
    window_min: BTreeMap<u64, i64>,
    /// Next offset to read.
    next: i64,
    /// Last committed offset.
    committed: i64,
    /// Offsets below this were read before a restart: replays.
    replay_until: i64,
    /// End offset of a bounded run.
    end: Option<i64>,
    /// Reached `end`.
    done: bool,
}

impl PartitionTrack {
    /// Commit and rewind offsets once every window before `durable` is emitted; `history` is
    /// how many windows before a window its state depends on. Offsets of windows the next
    /// window after `checkpointed` (the checkpoint on disk) depends on are kept even when
    /// `durable` is further on: a restart rewinds from that checkpoint, not from `durable`.
    fn settle(&mut self, durable: u64, history: u64, checkpointed: u64) -> PartitionCheckpoint {
        let keep_from = durable.min(checkpointed).saturating_sub(history);
        self.window_min = self.window_min.split_off(&keep_from);
        let commit = self
            .window_min
            .range(durable..)
            .map(|(_, o)| *o)
            .min()
            .unwrap_or(self.next)
            .min(self.next);
        let rewind = self.window_min.values().copied().min().unwrap_or(commit);
        PartitionCheckpoint {
            committed: commit.max(self.committed),
            rewind: rewind.min(commit),
        }
    }
}

/// A message taken from the consumer: partition, offset, key, payload.
type Polled = (i32, i64, Option<Vec<u8>>, Vec<u8>);

/// Shared by the workers.
struct Shared {
    watermarks: Mutex<Watermarks>,
    tracks: Mutex<BTreeMap<i32, PartitionTrack>>,
    progress: Arc<SinkProgress>,
    closing: Arc<AtomicU64>,
    max_window: AtomicI64,
    min_window: AtomicU64,
    /// The window after the last emitted one of the checkpoint on disk.
    checkpointed: AtomicU64,
    /// The operator state worker 0 has asked every worker to store (at most one request is
    /// outstanding): request `r` is the state after window `r - 1` (every window before `r`
    /// durable). Once every worker has stored it, the checkpoint names it and the next
    /// request asks for the state as of the newest durable window: checkpoints follow as
    /// fast as the workers store their state, and never wait on a queue of requests.
    state_requests: Mutex<Vec<u64>>,
    /// Per worker: the last request it stored its operator state for.
    states_written: Vec<AtomicU64>,
    /// When the last state request was made (`stream.checkpoint_interval` apart at least).
    last_state_request: Mutex<Option<Instant>>,
    first_event: std::sync::OnceLock<Instant>,
    metrics: Arc<Metrics>,
    publisher: Option<Arc<Publisher>>,
    /// What the settler has settled: every window before `.0` is written and every output
    /// message of it acknowledged, as is every message of the producer's epochs up to `.1`.
    settled: Mutex<(Option<u64>, Option<u64>)>,
    /// Tells the settler to stop.
    settler_stop: AtomicBool,
    failure: Mutex<Option<Error>>,
}

impl Shared {
    /// Records the first failure and stops the job.
    fn fail(&self, e: Error, shutdown: &AtomicBool) {
        self.failure.lock().expect("failure lock").get_or_insert(e);
        shutdown.store(true, Ordering::SeqCst);
    }
}

/// The settler thread, stopped (and joined) when dropped.
struct Settler {
    shared: Arc<Shared>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Settler {
    fn spawn(shared: &Arc<Shared>, job: &StreamJob) -> Result<Settler> {
        let (s, shutdown) = (shared.clone(), job.shutdown.clone());
        let handle = std::thread::Builder::new()
            .name("personaflow-settler".into())
            .spawn(move || settler(&s, &shutdown))
            .map_err(|e| Error::io(&job.output, e))?;
        Ok(Settler {
            shared: shared.clone(),
            handle: Some(handle),
        })
    }

    /// Stops the thread and waits for it; false if it panicked.
    fn stop(&mut self) -> bool {
        self.shared.settler_stop.store(true, Ordering::SeqCst);
        self.shared.progress.poke();
        self.handle.take().is_none_or(|h| h.join().is_ok())
    }
}

impl Drop for Settler {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Consumer lag (each partition's end offset less the next offset to read), refreshed every
/// [`STATUS_INTERVAL`] on a thread of its own: asking the brokers for a partition's end is a
/// round trip, which on a worker would hold back that worker's windows and, at the next
/// window, every other worker. Stopped (and joined) when dropped.
struct LagWatcher {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl LagWatcher {
    fn spawn(admin: BaseConsumer, shared: &Arc<Shared>, job: &StreamJob) -> Result<LagWatcher> {
        let stop = Arc::new(AtomicBool::new(false));
        let (s, flag, topic) = (shared.clone(), stop.clone(), job.topic.clone());
        let handle = std::thread::Builder::new()
            .name("personaflow-lag".into())
            .spawn(move || watch_lag(&admin, &s, &topic, &flag))
            .map_err(|e| Error::io(&job.output, e))?;
        Ok(LagWatcher {
            stop,
            handle: Some(handle),
        })
    }
}

impl Drop for LagWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            h.thread().unpark();
            let _ = h.join();
        }
    }
}

fn watch_lag(admin: &BaseConsumer, shared: &Shared, topic: &str, stop: &AtomicBool) {
    loop {
        let until = Instant::now() + STATUS_INTERVAL;
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            std::thread::park_timeout(left);
        }
        let partitions: Vec<i32> = shared
            .tracks
            .lock()
            .expect("tracks lock")
            .keys()
            .copied()
            .collect();
        for p in partitions {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            if let Ok((_, high)) = admin.fetch_watermarks(topic, p, Duration::from_secs(1)) {
                let next = shared.tracks.lock().expect("tracks lock")[&p].next;
                shared
                    .metrics
                    .lag
                    .lock()
                    .expect("lag lock")
                    .insert(p, (high - next).max(0));
            }
        }
    }
}

/// The settler: whenever the sinks report progress (or a worker sent dead letters), ends the
/// producer's epoch, waits for its acknowledgements and publishes what is settled (and the
/// close-to-output latency of the windows it covers), so that the workers never wait on the
/// brokers. Without output topics a window is settled once it is written.
fn settler(shared: &Shared, shutdown: &AtomicBool) {
    let mut seen = 0;
    while !shared.settler_stop.load(Ordering::SeqCst) {
        seen = shared.progress.wait_change(seen, SETTLER_WAIT);
        // Read before the epoch ends: every message of these windows is counted by then.
        let durable = shared.progress.durable();
        let epoch = match &shared.publisher {
            Some(p) => match p.settle() {
                Ok(e) => Some(e),
                Err(e) => {
                    shared.fail(e, shutdown);
                    return;
                }
            },
            None => None,
        };
        *shared.settled.lock().expect("settled lock") = (durable, epoch);
        if let Some(d) = durable.filter(|d| *d != u64::MAX) {
            for secs in shared.progress.take_latencies(d) {
                shared.metrics.observe_latency(secs);
            }
        }
    }
}

/// Writes late rows, one file per partition named by its first offset (idempotent).
fn write_late(root: &Path, rows: &mut Vec<LateRow>, fsync: bool) -> Result<()> {
    let mut by_partition: BTreeMap<i32, Vec<LateRow>> = BTreeMap::new();
    for r in rows.drain(..) {
        by_partition.entry(r.partition).or_default().push(r);
    }
    for (p, rows) in by_partition {
        let first = rows.iter().map(|r| r.offset).min().unwrap_or(0);
        let path = root
            .join("late")
            .join(format!("p{p:04}-o{first:012}.parquet"));
        let batch = LateRow::to_batch(&rows);
        write_parquet_atomically(&path, &batch, rows.len().max(1), fsync)?;
    }
    Ok(())
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn rfc3339(ms: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms).map(|d| d.to_rfc3339())
}

fn consumer_config(job: &StreamJob) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &job.brokers)
        .set("group.id", &job.group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("allow.auto.create.topics", "false")
        .set(
            "fetch.wait.max.ms",
            job.config.stream.fetch_wait.0.to_string(),
        )
        .set("enable.partition.eof", "false");
    c
}

/// The number of partitions of `topic`, and whether every topic in `others` exists.
fn check_topics(consumer: &BaseConsumer, job: &StreamJob, others: &[String]) -> Result<usize> {
    let mut missing = Vec::new();
    let mut partitions = 0;
    for (i, topic) in std::iter::once(&job.topic).chain(others).enumerate() {
        let md = consumer
            .fetch_metadata(Some(topic), BROKER_TIMEOUT)
            .map_err(|e| {
                Error::kafka(format!("metadata of topic {topic} from {}", job.brokers), e)
            })?;
        let t = md.topics().iter().find(|t| t.name() == topic);
        match t {
            Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                if i == 0 {
                    partitions = t.partitions().len();
                }
            }
            _ => missing.push(topic.clone()),
        }
    }
    if !missing.is_empty() {
        return Err(Error::TopicsMissing {
            topics: missing,
            brokers: job.brokers.clone(),
        });
    }
    Ok(partitions)
}

/// Runs the continuous job until `shutdown` is set (or, with `until_end`, the input ends).
pub fn run(job: &StreamJob, reporter: Arc<dyn StreamReporter>) -> Result<StreamSummary> {
    let started = Instant::now();
    let config = job.config.clone();
    config
        .validate()
        .map_err(personaflow_dataflow::Error::from)?;
    let decoder = JsonRecordDecoder::new(&config.ingest_mapping()?)?;
    let models = graph::check_models(&config)?;
    let spec = config.window_spec();
    let sc = &config.stream;

    std::fs::create_dir_all(&job.output).map_err(|e| Error::io(&job.output, e))?;
    let checkpoint = Checkpoint::load(&job.output)?;
    if let Some(c) = &checkpoint {
        if c.topic != job.topic || c.window_ms != spec.len_ms() {
            return Err(Error::OtherJob {
                output: job.output.clone(),
                found_topic: c.topic.clone(),
                found_window_ms: c.window_ms,
                topic: job.topic.clone(),
                window_ms: spec.len_ms(),
            });
        }
    }
    let emitted_through = checkpoint.as_ref().and_then(|c| c.emitted_through);
    let removed = remove_unemitted(&job.output, emitted_through.map(|e| spec.end_ms(e)))?;
    // The state of the window after the checkpoint's needs the last `L + W (+ R)` windows of
    // events replayed (`Config::restart_replay_windows`).
    let history = config.restart_replay_windows();
    let first_needed = emitted_through.map_or(0, |e| (e + 1).saturating_sub(history));
    // The persona, pin and drift state as of the last emitted window.
    let initial = match (
        emitted_through,
        checkpoint.as_ref().and_then(|c| c.state_workers),
    ) {
        (Some(e), Some(n)) => Some(Arc::new(snapshot::load(&job.output, spec, e, n)?)),
        (Some(_), None) => {
            reporter.warning(
                "the checkpoint holds no operator state (written by an older version): \
                 personas, persona pins and drift baselines start afresh",
            );
            None
        }
        (None, _) => None,
    };

    let metrics = Metrics::new();
    let admin: BaseConsumer = consumer_config(job)
        .create()
        .map_err(|e| Error::kafka("creating a consumer", e))?;
    let out_tables: HashSet<Table> = sc
        .output_topics
        .iter()
        .filter_map(|t| Table::from_name(t))
        .filter(|t| {
            config.forecaster.kind != ForecasterKind::None
                || !matches!(t, Table::Forecasts | Table::ForecastErrors)
        })
        .collect();
    let mut other_topics: Vec<String> = out_tables
        .iter()
        .map(|t| format!("{}{}", sc.output_topic_prefix, t.name()))
        .collect();
    other_topics.sort();
    if !sc.dead_letter_topic.is_empty() {
        other_topics.push(sc.dead_letter_topic.clone());
    }
    let partitions = check_topics(&admin, job, &other_topics)?;
    let publisher = if other_topics.is_empty() {
        None
    } else {
        let p = Publisher::new(
            &job.brokers,
            &sc.output_topic_prefix,
            out_tables,
            sc.output_message,
            metrics.clone(),
        )?;
        p.warm_up(&other_topics, BROKER_TIMEOUT)?;
        Some(Arc::new(p))
    };

    // Where each partition starts: the checkpoint's rewind offset; for a partition it does
    // not know, the offset of the first needed window's start time; else the committed offset.
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions as i32 {
        tpl.add_partition(&job.topic, p);
    }
    let committed = admin
        .committed_offsets(tpl.clone(), BROKER_TIMEOUT)
        .map_err(|e| Error::kafka(format!("committed offsets of group {}", job.group), e))?;
    let by_time = if checkpoint.is_some() {
        let mut t = TopicPartitionList::new();
        for p in 0..partitions as i32 {
            t.add_partition_offset(&job.topic, p, Offset::Offset(spec.start_ms(first_needed)))
                .map_err(|e| Error::kafka("offsets for times", e))?;
        }
        admin.offsets_for_times(t, BROKER_TIMEOUT).ok()
    } else {
        None
    };
    let offset_in = |list: &TopicPartitionList, p: i32| -> Option<i64> {
        match list.find_partition(&job.topic, p)?.offset() {
            Offset::Offset(o) if o >= 0 => Some(o),
            _ => None,
        }
    };
    let mut tracks = BTreeMap::new();
    for p in 0..partitions as i32 {
        let kafka_committed = offset_in(&committed, p);
        let known = checkpoint
            .as_ref()
            .and_then(|c| c.partitions.get(&p))
            .copied();
        let start = match (known, by_time.as_ref().and_then(|t| offset_in(t, p))) {
            (Some(k), _) => Some(k.rewind),
            (None, Some(t)) => Some(kafka_committed.map_or(t, |c| c.min(t))),
            (None, None) => kafka_committed,
        };
        let replay_until = kafka_committed
            .into_iter()
            .chain(known.map(|k| k.committed))
            .max()
            .unwrap_or(0);
        let (low, high) = admin
            .fetch_watermarks(&job.topic, p, BROKER_TIMEOUT)
            .map_err(|e| Error::kafka(format!("offsets of {}/{p}", job.topic), e))?;
        let start = start.unwrap_or(low).max(low);
        metrics
            .lag
            .lock()
            .expect("lag lock")
            .insert(p, (high - start).max(0));
        tracks.insert(
            p,
            PartitionTrack {
                window_min: BTreeMap::new(),
                next: start,
                committed: replay_until,
                replay_until,
                end: job.until_end.then_some(high),
                done: job.until_end && start >= high,
            },
        );
    }

    let server = if sc.metrics_addr.is_empty() {
        None
    } else {
        Some(MetricsServer::start(&sc.metrics_addr, metrics.clone())?)
    };
    let workers = config.runtime.workers;
    let timely_config = config.runtime.timely();
    let progress = SinkProgress::new(graph::tables(&config).len() * workers);
    let closing = Arc::new(AtomicU64::new(u64::MAX));
    let sinks = StreamSinks {
        root: job.output.clone(),
        spec,
        row_group_rows: config.output.row_group_rows,
        fsync: sc.fsync,
        emitted_through,
        closing: closing.clone(),
        progress: progress.clone(),
        publisher: publisher.clone(),
        observer: job.observer.clone(),
    };
    let mut watermarks = Watermarks::new(sc.allowed_lateness.0, sc.idle_timeout.0);
    for (p, t) in &tracks {
        if !t.done {
            watermarks.assign(*p, now_ms());
        }
    }
    let shared = Arc::new(Shared {
        watermarks: Mutex::new(watermarks),
        tracks: Mutex::new(tracks),
        progress,
        closing,
        max_window: AtomicI64::new(-1),
        min_window: AtomicU64::new(u64::MAX),
        checkpointed: AtomicU64::new(emitted_through.map_or(0, |e| e + 1)),
        state_requests: Mutex::new(Vec::new()),
        last_state_request: Mutex::new(None),
        states_written: (0..workers)
            .map(|_| AtomicU64::new(emitted_through.map_or(0, |e| e + 1)))
            .collect(),
        first_event: std::sync::OnceLock::new(),
        metrics: metrics.clone(),
        publisher: publisher.clone(),
        settled: Mutex::new((None, None)),
        settler_stop: AtomicBool::new(false),
        failure: Mutex::new(None),
    });
    let mut settler = Settler::spawn(&shared, job)?;
    let _lag = LagWatcher::spawn(admin, &shared, job)?;
    reporter.started(&StartInfo {
        partitions,
        resumed_after: emitted_through.and_then(|e| rfc3339(spec.end_ms(e))),
        removed_files: removed.len(),
        resumed_state: initial.as_ref().map(|s| {
            let rings = s.sequences.as_ref().map_or(String::new(), |q| {
                format!(", {} users' active-history sequences", q.users.len())
            });
            format!(
                "{} personas, {} pinned users, {} drift scopes{rings}",
                s.personas.as_ref().map_or(0, |m| m.centroids.len()),
                s.pins.pins.len(),
                s.drift.detectors.len()
            )
        }),
        metrics_addr: server.as_ref().map(|s| s.addr().to_string()),
        models: models.clone(),
        output_topics: publisher.as_ref().map(|p| p.topics()).unwrap_or_default(),
    });

    let ctx = WorkerContext {
        initial,
        job: job.clone(),
        decoder,
        spec,
        history,
        first_needed,
        emitted_through,
        shared: shared.clone(),
        reporter: reporter.clone(),
    };
    let model_stats = ModelStats::default();
    let guards = timely::execute(timely_config, move |worker| {
        let initial = ctx
            .initial
            .as_ref()
            .map(|s| s.for_worker(worker.index(), worker.peers()));
        let mode = StateMode::Kept { initial };
        let handles = graph::build_with(worker, &ctx.job.config, &sinks, &model_stats, mode);
        match handles {
            Ok(h) => ctx.drive(worker, h),
            Err(e) => Err(e.into()),
        }
    })
    .map_err(personaflow_dataflow::Error::Dataflow)?;
    let mut rows: BTreeMap<String, u64> = BTreeMap::new();
    let mut finals = Vec::new();
    let mut first_error = None;
    let mut stopped_by = "end".to_string();
    for result in guards.join() {
        match result {
            Ok(Ok(mut done)) => {
                for (t, n) in std::mem::take(&mut done.rows) {
                    *rows.entry(t.name().to_string()).or_default() += n;
                }
                if done.by_signal {
                    stopped_by = "signal".into();
                }
                finals.push(done);
            }
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(panic) => {
                first_error.get_or_insert(
                    personaflow_dataflow::Error::WorkerPanicked {
                        message: panic.to_string(),
                    }
                    .into(),
                );
            }
        }
    }
    // The workers are done: stop the settler (the last windows are settled below).
    if !settler.stop() {
        shared.fail(
            personaflow_dataflow::Error::WorkerPanicked {
                message: "the settler panicked".into(),
            }
            .into(),
            &job.shutdown,
        );
    }
    if let Some(e) = first_error.or_else(|| shared.failure.lock().expect("failure lock").take()) {
        return Err(e);
    }
    // Every sink has finished: settle the last windows.
    let durable = shared.progress.durable().unwrap_or(first_needed);
    let emitted = settle(&shared, durable, emitted_through)?;
    for secs in shared.progress.take_latencies(durable) {
        metrics.observe_latency(secs);
    }
    if let Some(e) = emitted {
        let from = emitted_through
            .map_or(0, |x| x + 1)
            .max(shared.min_window.load(Ordering::SeqCst));
        metrics
            .windows_emitted
            .store((e + 1).saturating_sub(from), Ordering::Relaxed);
    }
    // After a bounded run every window is emitted: keep the history the next one needs.
    let durable = if durable == u64::MAX {
        emitted.map_or(first_needed, |e| e + 1)
    } else {
        durable
    };
    for f in &mut finals {
        f.commit(&shared, durable, history)?;
    }
    // Every worker's operator state as of the last emitted window, then the checkpoint.
    if let Some(e) = emitted {
        for f in &finals {
            let mut s = f
                .states
                .iter()
                .rev()
                .find(|s| s.window <= e)
                .cloned()
                .unwrap_or_default();
            s.window = e;
            if let Some(log) = &f.sequences {
                s.sequences = Some(
                    log.state_before((e + 1).saturating_sub(history))
                        .expect("the sequence log is pruned only before a requested checkpoint"),
                );
            }
            snapshot::store(
                &job.output,
                spec,
                f.index,
                workers,
                &s,
                job.config.stream.fsync,
            )?;
        }
    }
    write_checkpoint(&shared, job, spec, emitted)?;
    let elapsed = started.elapsed().as_secs_f64();
    let status = status_of(&shared.metrics);
    let summary = StreamSummary {
        emitted_through: emitted.and_then(|e| rfc3339(spec.end_ms(e))),
        rows_written: rows,
        published: metrics.published.load(Ordering::Relaxed),
        latency_p50_secs: metrics.latency_quantile(0.5),
        latency_p99_secs: metrics.latency_quantile(0.99),
        elapsed_secs: elapsed,
        events_per_sec: status.events as f64
            / shared
                .first_event
                .get()
                .map_or(elapsed, |t| t.elapsed().as_secs_f64())
                .max(1e-9),
        peak_rss_bytes: personaflow_dataflow::backfill::peak_rss_bytes(),
        state_files: metrics.state_files.load(Ordering::Relaxed),
        state_bytes: metrics.state_bytes.load(Ordering::Relaxed),
        status,
        stopped_by,
        models,
        config,
    };
    let json = serde_json::to_vec_pretty(&summary).expect("summary serialises");
    personaflow_io::atomic_file::write_atomically(&job.output.join("run.json"), &json, false)?;
    Ok(summary)
}

fn status_of(m: &Metrics) -> StreamStatus {
    let wm = m.watermark_ms.load(Ordering::Relaxed);
    StreamStatus {
        events: m.events.load(Ordering::Relaxed),
        replayed: m.replayed.load(Ordering::Relaxed),
        rejects: m.rejects.load(Ordering::Relaxed),
        late: m.late.load(Ordering::Relaxed),
        windows_emitted: m.windows_emitted.load(Ordering::Relaxed),
        watermark: (wm != i64::MIN).then(|| rfc3339(wm)).flatten(),
        lag: m.lag.lock().expect("lag lock").values().sum(),
    }
}

/// The last window emitted once every window before `durable` is durable.
fn emitted_through_at(shared: &Shared, durable: u64, before: Option<u64>) -> Option<u64> {
    let now = if durable == u64::MAX {
        u64::try_from(shared.max_window.load(Ordering::SeqCst)).ok()
    } else {
        durable.checked_sub(1)
    };
    match (now, before) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// Flushes the producer (outputs and dead letters) so that everything before `durable` is
/// acknowledged; returns the last window emitted.
fn settle(shared: &Shared, durable: u64, before: Option<u64>) -> Result<Option<u64>> {
    if let Some(p) = &shared.publisher {
        p.flush()?;
    }
    Ok(emitted_through_at(shared, durable, before))
}

fn write_checkpoint(
    shared: &Shared,
    job: &StreamJob,
    spec: WindowSpec,
    emitted: Option<u64>,
) -> Result<()> {
    let partitions = shared
        .tracks
        .lock()
        .expect("tracks lock")
        .iter()
        .map(|(p, t)| {
            (
                *p,
                PartitionCheckpoint {
                    committed: t.committed,
                    rewind: t
                        .window_min
                        .values()
                        .copied()
                        .min()
                        .unwrap_or(t.committed)
                        .min(t.committed),
                },
            )
        })
        .collect();
    let wm = shared.metrics.watermark_ms.load(Ordering::Relaxed);
    Checkpoint {
        version: CHECKPOINT_VERSION,
        topic: job.topic.clone(),
        group: job.group.clone(),
        window_ms: spec.len_ms(),
        emitted_through: emitted,
        emitted_through_end: emitted.and_then(|e| rfc3339(spec.end_ms(e))),
        watermark_ms: (wm != i64::MIN).then_some(wm),
        partitions,
        state_workers: Some(shared.states_written.len()),
    }
    .store(&job.output, job.config.stream.fsync)?;
    if let Some(e) = emitted {
        shared.checkpointed.fetch_max(e + 1, Ordering::SeqCst);
        // Older operator states are superseded.
        snapshot::remove_before(&job.output, spec.end_ms(e))?;
    }
    Ok(())
}

struct WorkerContext {
    /// The operator state to resume from (all workers'; each takes its part).
    initial: Option<Arc<OperatorState>>,
    job: StreamJob,
    decoder: JsonRecordDecoder,
    spec: WindowSpec,
    history: u64,
    first_needed: u64,
    emitted_through: Option<u64>,
    shared: Arc<Shared>,
    reporter: Arc<dyn StreamReporter>,
}

/// What a worker hands back: its consumer (for the final commit), what it wrote, and its
/// operator state after each window it kept (for the final checkpoint).
struct WorkerDone {
    index: usize,
    states: Vec<OperatorState>,
    /// Active-history sequence rings: the log they can be had from as of any window the final
    /// checkpoint may take (its rings are as of the window before its replay).
    sequences: Option<SequenceLog>,
    consumer: BaseConsumer,
    partitions: Vec<i32>,
    late: Vec<LateRow>,
    rows: BTreeMap<Table, u64>,
    by_signal: bool,
    topic: String,
    output: PathBuf,
    fsync: bool,
}

impl WorkerDone {
    /// Writes the late rows and commits this worker's partitions as of `durable`.
    fn commit(&mut self, shared: &Shared, durable: u64, history: u64) -> Result<()> {
        write_late(&self.output, &mut self.late, self.fsync)?;
        commit_partitions(
            &self.consumer,
            &self.topic,
            &self.partitions,
            shared,
            durable,
            history,
        )
    }
}

fn commit_partitions(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: &[i32],
    shared: &Shared,
    durable: u64,
    history: u64,
) -> Result<()> {
    let mut tpl = TopicPartitionList::new();
    {
        let mut tracks = shared.tracks.lock().expect("tracks lock");
        for p in partitions {
            let t = tracks.get_mut(p).expect("assigned partitions are tracked");
            let c = t.settle(durable, history, shared.checkpointed.load(Ordering::SeqCst));
            if c.committed > t.committed {
                t.committed = c.committed;
                tpl.add_partition_offset(topic, *p, Offset::Offset(c.committed))
                    .map_err(|e| Error::kafka("offsets to commit", e))?;
            }
        }
    }
    if tpl.count() > 0 {
        consumer
            .commit(&tpl, CommitMode::Sync)
            .map_err(|e| Error::kafka(format!("committing offsets of {topic}"), e))?;
        shared.metrics.commits.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

impl WorkerContext {
    fn fail(&self, e: Error) {
        self.shared.fail(e, &self.job.shutdown);
    }

    fn drive(
        &self,
        worker: &mut timely::worker::Worker,
        handles: graph::DataflowHandles,
    ) -> Result<WorkerDone> {
        let index = worker.index();
        let peers = worker.peers();
        let job = &self.job;
        let sc = &job.config.stream;
        let shared = &*self.shared;
        let (mut driver, snapshots) = Driver::new(handles);
        // The job shares its cores with the broker client's threads (and often the brokers):
        // a worker waiting on another parks rather than spinning.
        driver.park_when_idle(SETTLE_PARK);
        let snapshots = snapshots.expect("the continuous job keeps operator snapshots");
        let partitions: Vec<i32> = shared
            .tracks
            .lock()
            .expect("tracks lock")
            .keys()
            .copied()
            .filter(|p| *p as usize % peers == index)
            .collect();
        let consumer: BaseConsumer = consumer_config(job)
            .create()
            .map_err(|e| Error::kafka("creating a consumer", e))?;
        let mut tpl = TopicPartitionList::new();
        {
            let tracks = shared.tracks.lock().expect("tracks lock");
            for p in &partitions {
                let t = &tracks[p];
                tpl.add_partition_offset(&job.topic, *p, Offset::Offset(t.next))
                    .map_err(|e| Error::kafka("assignment", e))?;
            }
        }
        consumer
            .assign(&tpl)
            .map_err(|e| Error::kafka(format!("assigning partitions of {}", job.topic), e))?;
        driver.advance_without_waiting(self.first_needed);
        let mut late: Vec<LateRow> = Vec::new();
        let mut last_durable = self.first_needed;
        let mut last_status = Instant::now();
        let mut last_settle = Instant::now();
        let mut by_signal = false;
        let mut batch: Vec<Polled> = Vec::new();
        // The epoch of the last dead letter this worker sent: its offsets are committed once
        // the settler has settled that epoch.
        let mut dead_letters: Option<u64> = None;
        // The window of the last advance.
        let mut last_target: Option<u64> = None;
        loop {
            if job.shutdown.load(Ordering::SeqCst) {
                by_signal = true;
                break;
            }
            let all_done = {
                let tracks = shared.tracks.lock().expect("tracks lock");
                partitions.iter().all(|p| tracks[p].done)
            };
            if all_done && job.until_end {
                break;
            }
            // Take what is buffered (waiting a little when nothing is and the dataflow has
            // no closed window in flight: one step per round moves a window one stage on, so
            // a wait per round would hold closed windows back).
            batch.clear();
            if !all_done {
                let mut wait = if driver.behind() {
                    Duration::ZERO
                } else {
                    POLL_WAIT
                };
                while batch.len() < sc.poll_batch {
                    match consumer.poll(wait) {
                        Some(Ok(m)) => batch.push((
                            m.partition(),
                            m.offset(),
                            m.key().map(<[u8]>::to_vec),
                            m.payload().unwrap_or_default().to_vec(),
                        )),
                        Some(Err(e)) => {
                            self.reporter.warning(&format!("consumer: {e}"));
                            break;
                        }
                        None => break,
                    }
                    wait = Duration::ZERO;
                }
            } else {
                std::thread::sleep(POLL_WAIT);
            }
            // A round that filled the batch: the worker is catching up.
            let catching_up = batch.len() >= sc.poll_batch;
            if let Err(e) = self.ingest(&batch, driver.input(), &mut late, &mut dead_letters) {
                self.fail(e);
                break;
            }
            // Close the windows the job's watermark has passed.
            let wm = shared
                .watermarks
                .lock()
                .expect("wm lock")
                .watermark(now_ms());
            if let (Some(wm), Some(time)) = (wm, driver.time()) {
                shared.metrics.watermark_ms.fetch_max(wm, Ordering::Relaxed);
                let target = self.spec.index(wm).unwrap_or(0).max(self.first_needed);
                if target > time {
                    // The close is timed from here; the driver then lets the outputs catch
                    // up before more input is taken: while catching up, up to the previous
                    // round's window (that round stays in flight while this worker takes the
                    // next, so the other worker has work meanwhile), else up to this one.
                    shared.progress.closed(target);
                    let wait_for = match (catching_up, last_target) {
                        (true, Some(last)) => last,
                        _ => target,
                    };
                    let stop = || job.shutdown.load(Ordering::SeqCst);
                    driver.advance_waiting_for(worker, target, wait_for, &stop);
                    last_target = Some(target);
                }
            }
            if job.until_end {
                let done = {
                    let tracks = shared.tracks.lock().expect("tracks lock");
                    partitions.iter().all(|p| tracks[p].done)
                };
                if done {
                    driver.close();
                }
            }
            // Without new input, wait for the other workers parked rather than spinning: on a
            // machine the job shares with its brokers and its Kafka clients' threads, a spinning
            // worker takes the CPU they need.
            if batch.is_empty() {
                driver.step_or_park(worker);
            } else {
                driver.step(worker);
            }
            if let Some(e) = driver.take_failure() {
                self.fail(e.into());
                break;
            }
            // Commit what is settled: as soon as it is once caught up, at most every
            // CATCH_UP_SETTLE_INTERVAL while catching up.
            let (settled, epoch) = *shared.settled.lock().expect("settled lock");
            let letters_delivered = dead_letters.is_none_or(|x| epoch.is_some_and(|e| x <= e));
            if let Some(d) = settled {
                if d > last_durable
                    && d != u64::MAX
                    && letters_delivered
                    && (!catching_up || last_settle.elapsed() >= CATCH_UP_SETTLE_INTERVAL)
                {
                    last_settle = Instant::now();
                    let done =
                        self.checkpoint(index, &consumer, &partitions, d, last_durable, &mut late);
                    if let Err(e) = done {
                        self.fail(e);
                        break;
                    }
                    last_durable = d;
                }
            }
            let stored = self
                .store_requested_states(index, last_durable, &snapshots)
                .and_then(|_| {
                    if index == 0 {
                        self.advance_checkpoint()
                    } else {
                        Ok(())
                    }
                });
            if let Err(e) = stored {
                self.fail(e);
                break;
            }
            if last_status.elapsed() >= STATUS_INTERVAL {
                last_status = Instant::now();
                if index == 0 {
                    self.reporter.status(&status_of(&shared.metrics));
                }
            }
        }
        // Stop: windows still open are not written (they are emitted whole after a restart);
        // then close the input and let the dataflow write every closed window.
        if let (Some(time), true) = (driver.time(), by_signal) {
            shared.closing.fetch_min(time, Ordering::SeqCst);
        }
        driver.drain(worker, &mut || {});
        let report = driver.finish()?;
        Ok(WorkerDone {
            index,
            states: snapshots.history(),
            sequences: snapshots.sequences.as_ref().map(|log| log.borrow().clone()),
            consumer,
            partitions,
            late,
            rows: report.rows,
            by_signal,
            topic: job.topic.clone(),
            output: job.output.clone(),
            fsync: sc.fsync,
        })
    }

    /// Decodes and routes one batch of messages.
    fn ingest(
        &self,
        batch: &[Polled],
        mut input: Option<&mut timely::dataflow::InputHandleVec<u64, Event>>,
        late: &mut Vec<LateRow>,
        dead_letters: &mut Option<u64>,
    ) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let shared = &*self.shared;
        let m = &shared.metrics;
        let now = now_ms();
        let mut wm = shared.watermarks.lock().expect("wm lock");
        let mut tracks = shared.tracks.lock().expect("tracks lock");
        for (p, offset, key, payload) in batch {
            m.messages.fetch_add(1, Ordering::Relaxed);
            let t = tracks.get_mut(p).expect("assigned partitions are tracked");
            t.next = offset + 1;
            let replay = *offset < t.replay_until;
            if t.end.is_some_and(|end| t.next >= end) && !t.done {
                t.done = true;
            }
            let event = self.decoder.decode(payload).and_then(|e| {
                if self.spec.index(e.ts_ms).is_none() {
                    Err(RecordError {
                        field: Some("ts".into()),
                        reason: "invalid: event time before 1970".into(),
                    })
                } else {
                    Ok(e)
                }
            });
            let event = match event {
                Ok(e) => e,
                Err(err) => {
                    if !replay {
                        m.rejects.fetch_add(1, Ordering::Relaxed);
                        if let (Some(pb), false) = (
                            &shared.publisher,
                            self.job.config.stream.dead_letter_topic.is_empty(),
                        ) {
                            let epoch = pb.dead_letter(
                                &self.job.config.stream.dead_letter_topic,
                                key.as_deref(),
                                payload,
                                &err,
                                &format!("{}/{p}/{offset}", self.job.topic),
                            )?;
                            *dead_letters = Some(epoch);
                            // The settler ends the epoch even if no window completes.
                            shared.progress.poke();
                        }
                    }
                    continue;
                }
            };
            let window = self.spec.index(event.ts_ms).expect("checked above");
            if window < self.first_needed {
                continue; // history no window to come depends on
            }
            // Late: older than the job's watermark, or in a window this worker's input has
            // already closed.
            let late_against = match wm.observe(*p, event.ts_ms, now) {
                Arrival::Late { lateness_ms } => Some(event.ts_ms + lateness_ms),
                Arrival::OnTime => input
                    .as_deref()
                    .filter(|i| window < *i.time())
                    .map(|i| self.spec.start_ms(*i.time())),
            };
            if let Some(watermark_ms) = late_against {
                if !replay {
                    m.late.fetch_add(1, Ordering::Relaxed);
                    late.push(LateRow::new(
                        *p,
                        *offset,
                        event.user_id.clone(),
                        event.ts_ms,
                        watermark_ms,
                        String::from_utf8_lossy(payload).into_owned(),
                    ));
                }
                continue;
            }
            let Some(i) = input.as_deref_mut() else {
                continue;
            };
            if replay {
                m.replayed.fetch_add(1, Ordering::Relaxed);
            } else {
                m.events.fetch_add(1, Ordering::Relaxed);
            }
            let e = t.window_min.entry(window).or_insert(*offset);
            *e = (*e).min(*offset);
            shared.max_window.fetch_max(window as i64, Ordering::SeqCst);
            shared.min_window.fetch_min(window, Ordering::SeqCst);
            shared.first_event.get_or_init(Instant::now);
            i.send(event);
        }
        for (p, t) in tracks.iter() {
            if t.done && t.end.is_some() {
                wm.revoke(*p, now);
            }
        }
        Ok(())
    }

    /// Every window before `durable` is settled (written, its messages acknowledged): write
    /// late rows, commit this worker's partitions (worker 0 writes the checkpoint once every
    /// worker has stored its operator state: [`advance_checkpoint`](Self::advance_checkpoint)).
    fn checkpoint(
        &self,
        index: usize,
        consumer: &BaseConsumer,
        partitions: &[i32],
        durable: u64,
        before: u64,
        late: &mut Vec<LateRow>,
    ) -> Result<()> {
        let shared = &*self.shared;
        write_late(&self.job.output, late, self.job.config.stream.fsync)?;
        if index == 0 {
            let from = before
                .max(self.emitted_through.map_or(0, |e| e + 1))
                .max(shared.min_window.load(Ordering::SeqCst));
            let newly = durable.saturating_sub(from);
            shared
                .metrics
                .windows_emitted
                .fetch_add(newly, Ordering::Relaxed);
        }
        commit_partitions(
            consumer,
            &self.job.topic,
            partitions,
            shared,
            durable,
            self.history,
        )?;
        Ok(())
    }

    /// Stores this worker's operator state for each request of worker 0 it has not stored
    /// yet, in order, once this worker has settled every window before it (its late rows
    /// written, its partitions committed). Every window before a request is durable, so the
    /// operators have processed them and their snapshots are final. Then drops the snapshots
    /// no request can need: requests only grow.
    fn store_requested_states(
        &self,
        index: usize,
        settled: u64,
        snapshots: &StateSnapshots,
    ) -> Result<()> {
        let shared = &*self.shared;
        let written = &shared.states_written[index];
        let pending: Vec<u64> = {
            let requests = shared.state_requests.lock().expect("requests lock");
            let w = written.load(Ordering::SeqCst);
            requests
                .iter()
                .copied()
                .filter(|r| *r > w && *r <= settled)
                .collect()
        };
        for request in pending {
            let window = request - 1;
            let bytes = snapshot::store(
                &self.job.output,
                self.spec,
                index,
                shared.states_written.len(),
                &snapshots.through(window),
                self.job.config.stream.fsync,
            )?;
            shared.metrics.count_state(bytes);
            written.store(request, Ordering::SeqCst);
        }
        // Requests to come are at least the last one issued, which this worker has stored
        // unless one is still pending: keep what the oldest of those needs.
        let keep = {
            let requests = shared.state_requests.lock().expect("requests lock");
            let w = written.load(Ordering::SeqCst);
            requests.iter().copied().find(|r| *r > w).unwrap_or(w)
        };
        if keep > 0 {
            snapshots.prune(keep - 1);
        }
        Ok(())
    }

    /// Worker 0: writes the checkpoint once every worker has stored its operator state for the
    /// outstanding request, then asks for the state as of the last durable window (at least
    /// `stream.checkpoint_interval` after the last request).
    fn advance_checkpoint(&self) -> Result<()> {
        let shared = &*self.shared;
        let stored = shared
            .states_written
            .iter()
            .map(|w| w.load(Ordering::SeqCst))
            .min()
            .unwrap_or(0);
        let checkpointed = shared.checkpointed.load(Ordering::SeqCst);
        if stored > checkpointed {
            let emitted = emitted_through_at(shared, stored, self.emitted_through);
            write_checkpoint(shared, &self.job, self.spec, emitted)?;
            let mut requests = shared.state_requests.lock().expect("requests lock");
            requests.retain(|r| *r > stored);
        }
        if let Some(d) = shared.progress.durable() {
            let mut requests = shared.state_requests.lock().expect("requests lock");
            let checkpointed = shared.checkpointed.load(Ordering::SeqCst);
            let mut last = shared.last_state_request.lock().expect("request time lock");
            let interval =
                Duration::from_millis(self.job.config.stream.checkpoint_interval.0 as u64);
            let due = last.is_none_or(|t| t.elapsed() >= interval);
            if requests.is_empty() && d != u64::MAX && d > checkpointed && due {
                requests.push(d);
                *last = Some(Instant::now());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_consumers_fetch_wait_is_the_configured_one() {
        let mut job = StreamJob {
            brokers: "127.0.0.1:9092".into(),
            topic: "events".into(),
            group: "g".into(),
            output: PathBuf::from("out"),
            config: Config::default(),
            until_end: false,
            shutdown: Arc::new(AtomicBool::new(false)),
            observer: None,
        };
        let wait = |job: &StreamJob| {
            consumer_config(job)
                .get("fetch.wait.max.ms")
                .map(str::to_string)
        };
        assert_eq!(
            wait(&job).as_deref(),
            Some(
                personaflow_dataflow::config::DEFAULT_FETCH_WAIT_MS
                    .to_string()
                    .as_str()
            )
        );
        job.config.stream.fetch_wait = personaflow_dataflow::config::Millis(10);
        assert_eq!(wait(&job).as_deref(), Some("10"));
    }

    #[test]
    fn commits_point_at_the_first_unemitted_event_and_rewinds_keep_the_history() {
        let mut t = PartitionTrack {
            next: 100,
            ..PartitionTrack::default()
        };
        // Offsets by window, out of order within the partition.
        for (w, o) in [
            (1, 10),
            (2, 20),
            (3, 35),
            (3, 30),
            (4, 40),
            (6, 60),
            (5, 70),
        ] {
            let e = t.window_min.entry(w).or_insert(o);
            *e = (*e).min(o);
        }
        // Windows before 4 are emitted; the next window's state needs 2 windows of history.
        let c = t.settle(4, 2, 4);
        assert_eq!(c.committed, 40, "window 4's first event is not yet emitted");
        assert_eq!(c.rewind, 20, "windows 2 and 3 are history of window 4");
        assert_eq!(
            t.window_min.keys().copied().collect::<Vec<_>>(),
            vec![2, 3, 4, 5, 6]
        );
        // Everything emitted: commit the next offset; never go back.
        t.committed = 40;
        let c = t.settle(7, 2, 7);
        assert_eq!((c.committed, c.rewind), (100, 60));
        t.committed = 100;
        t.next = 90; // a rewound restart reading again
        assert_eq!(t.settle(7, 2, 7).committed, 100);
        // Regression (found by the SIGKILL test): another worker may see a later durable
        // window than the checkpoint on disk; the history of the checkpoint's next window
        // stays, or a restart from that checkpoint rebuilds a state with events missing.
        let mut t = PartitionTrack {
            next: 100,
            ..PartitionTrack::default()
        };
        t.window_min.extend([(1, 10), (2, 20), (5, 50), (9, 90)]);
        let c = t.settle(9, 2, 4);
        assert_eq!(
            (c.committed, c.rewind),
            (90, 20),
            "window 4 needs windows 2 and 3"
        );
    }

    #[test]
    fn late_rows_carry_their_lateness() {
        let b = LateRow::to_batch(&[LateRow::new(2, 7, "u".into(), 1_000, 61_000, "{}".into())]);
        assert_eq!(b.schema(), LateRow::schema());
        let l = b
            .column(5)
            .as_any()
            .downcast_ref::<arrow_array::Int64Array>()
            .unwrap();
        assert_eq!(l.value(0), 60_000);
    }
}
