//! Job configuration: named defaults < TOML file < `PERSONAFLOW__SECTION__KEY` environment
//! variables < command-line flags (applied by the binary).
//!
//! ```toml
//! [window]
//! length = "1m"            # tumbling window: "500ms", "30s", "1m", "1h", "1d" or milliseconds
//!
//! [sequence]
//! length = 16              # L: windows per sequence
//! history = "active"       # "active": the last L active windows; "windows": the last L windows
//! max_idle = "30d"         # history = "active": windows older than this are forgotten
//!
//! [segments]
//! window = 60              # W: rolling window of segment profiles, in windows
//!
//! [resonance]
//! temperature = 0.1
//! threshold = 0.5
//! center = true
//! cold_start_windows = 1
//! prior_smoothing = 1.0
//! min_segment_profiles = 1
//!
//! [ingest]
//! # mapping = "data/mappings/zeek_conn.toml"
//! max_out_of_order = "5m"  # events older than this behind the input's event time are late
//! max_outliers = 15        # events dated ahead of the rest that cannot move event time
//! chunk_rows = 16384
//!
//! [embedder]
//! kind = "vae"             # "vae" (the RNN-VAE encoder) or "standardised" (no model)
//! max_batch = 64
//!
//! [forecaster]
//! kind = "lstm"            # "lstm" (the demand forecaster), "persistence" or "none"
//! max_batch = 64
//!
//! [models]
//! dir = "models/onnx"      # relative: to the working directory, else the executable's
//! provider = "auto"        # "cpu", "cuda" or "auto" (CUDA when it registers)
//! intra_threads = 1        # onnxruntime threads per worker
//!
//! [runtime]
//! workers = 2
//! progress = "auto"        # "eager" | "demand"; auto: eager up to 4 workers
//! operator_times = false   # backfill: each operator's activations and time, per worker
//!
//! [output]
//! row_group_rows = 131072  # rows per Parquet row group
//!
//! [stream]                 # the continuous job (`personaflow run`); flags override these
//! # brokers = "127.0.0.1:9092"
//! # topic = "events"
//! # group = "personaflow"
//! # output = "/data/personaflow"
//! allowed_lateness = "5m"  # watermark = newest event time of a partition minus this
//! idle_timeout = "30s"     # a partition silent this long stops holding the watermark back
//! fetch_wait = "100ms"     # longest a broker may hold a fetch without new messages
//! poll_batch = 4096        # most messages a worker takes before it steps the dataflow
//! checkpoint_interval = "1s"  # least time between two checkpoints (operator state stored)
//! output_topic_prefix = "personaflow."
//! output_topics = ["profiles", "segment_profiles", "resonance", "forecasts", "policies"]
//! output_message = "row"   # a row per message; "key": a key's rows of a window (a JSON array);
//!                          # "arrow": Arrow IPC streams of a window's rows
//! dead_letter_topic = "personaflow.dead_letter"
//! metrics_addr = "127.0.0.1:9464"   # Prometheus /metrics; "" turns it off
//! fsync = true             # fsync window files and the checkpoint before committing offsets
//!
//! [personas]
//! # k = 5                  # fixed number of personas; unset: chosen in k_min..=k_max by silhouette
//! k_min = 2
//! k_max = 8
//! decay = 0.5              # weight a persona's past count keeps from one window to the next
//! batch_size = 256         # points per mini-batch
//! passes = 3               # passes over each window's points
//! reselect_every = 60      # windows between silhouette searches for k (0: only the first)
//! min_users = 20           # users a window needs before the first personas are formed
//! silhouette_sample = 400
//! restarts = 4             # k-means++ restarts of each batch run
//! top_features = 3         # features listed as characterising each persona
//! seed = 1592630901
//!
//! [drift]
//! baseline = 60            # windows a baseline is calibrated over
//! recent = 20              # windows the current distribution is taken over
//! min_effect = 1.0         # smallest drift, in baseline spreads, that counts
//! z = 1.0                  # standard errors the centroid distance must exceed
//! alpha = 0.001            # significance level of the permutation test
//! permutations = 999
//! max_points = 64          # points of a window kept for the test
//! top_moved = 3            # features reported as having moved most
//! min_points = 8           # users the current window and the baseline each need
//! confirm = 1              # consecutive rejecting windows an alarm needs
//! persona_pin = 1440       # windows a user counts for the persona it was pinned to
//! seed = 1592630901
//! points = "windows"       # a user's point: the embedding of the last L windows, or "profile"
//!
//! [scaling]
//! capacity_per_instance = 500.0  # requests per window one instance handles
//! calibration_windows = 60 # recent windows whose forecast errors calibrate (0: uncalibrated)
//! coverage = 0.9           # share of the demand the recommendation is sized for
//! horizon = 15             # windows a recommendation looks ahead
//! onset_trend = false      # carry a drift's demand rise since its onset forward
//!
//! [policy]
//! enabled = true           # the policies, socket_profiles and shaping_feedback tables
//! # catalogue = "data/personas.toml"  # unset: the built-in catalogue (that file)
//! security_floor = 0.2     # probability from which an entry's security profile counts
//! headroom = 1.25          # allocation and rate limits = predicted demand x headroom
//! horizon = 4              # windows of forecast the allocation covers
//! risk_windows = 0         # windows of a segment's anomaly scores risk is calibrated on (0: segments.window)
//! risk_elevated = 0.9      # risk from which the security level is "elevated"
//! risk_strict = 0.99       # risk from which it is "strict"
//! default_rtt_ms = 50.0    # round trip assumed where no latency was observed
//!
//! [sinks]                  # mirrors besides the Parquet tables (none by default)
//! # [sinks.redis]          # each user's latest persona, resonance and policy as a hash
//! # url = "redis://127.0.0.1:6379"   # redis://[:password@]host[:port][/db]
//! # key_prefix = "personaflow:user:" # the hash of user U is <key_prefix>U
//! ```

use crate::error::{ConfigError, ConfigErrorKind};
use crate::{Error, Result};
use personaflow_io::error::toml_error_at;
use personaflow_models::runtime::DEFAULT_INTRA_THREADS;
use personaflow_models::{Provider, SessionOptions};
pub use personaflow_operators::drift::scaling::{
    ScalingConfig, DEFAULT_CALIBRATION_WINDOWS, DEFAULT_CAPACITY_PER_INSTANCE, DEFAULT_COVERAGE,
};
use personaflow_operators::drift::DriftConfig;
use personaflow_operators::personas::PersonaConfig;
use personaflow_operators::policies::{PersonaCatalogue, PolicyConfig};
use personaflow_operators::resonance::ResonanceConfig;
use personaflow_operators::sequences::SequenceSpec;
use personaflow_operators::window::DEFAULT_WINDOW_MS;
use personaflow_operators::WindowSpec;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub use personaflow_operators::embed::operator::DEFAULT_MAX_BATCH;
pub use personaflow_operators::segments::DEFAULT_SEGMENT_WINDOW;
pub use personaflow_operators::sequences::{SequenceHistory, DEFAULT_SEQUENCE_LEN};

/// Prefix of configuration environment variables (`PERSONAFLOW__RESONANCE__TEMPERATURE=0.2`).
pub const ENV_PREFIX: &str = "PERSONAFLOW__";
/// The origin of a configuration built in code, in errors.
pub const IN_CODE: &str = "<config>";
/// Default bound on how far out of event-time order input may arrive.
pub const DEFAULT_MAX_OUT_OF_ORDER_MS: i64 = 5 * 60_000;
/// Default of `sequence.max_idle`: how long an active-history sequence remembers a window.
pub const DEFAULT_SEQUENCE_MAX_IDLE_MS: i64 = 30 * 86_400_000;
/// Default rows per read chunk.
pub const DEFAULT_CHUNK_ROWS: usize = 16_384;
/// Default number of events dated far ahead of the rest that the input's event time ignores
/// (it follows the `max_outliers + 1`-th newest event).
pub const DEFAULT_MAX_OUTLIERS: usize = 15;
/// Default number of timely worker threads.
pub const DEFAULT_WORKERS: usize = 2;
/// With `runtime.progress = "auto"`, the most workers that send their progress eagerly.
pub const EAGER_PROGRESS_MAX_WORKERS: usize = 4;
/// Default rows per Parquet row group in outputs.
pub const DEFAULT_ROW_GROUP_ROWS: usize = 128 * 1024;

/// A duration written as `"500ms"`, `"30s"`, `"1m"`, `"2h"`, `"1d"` or plain milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "DurationRepr", into = "String")]
pub struct Millis(pub i64);

#[derive(Deserialize)]
#[serde(untagged)]
enum DurationRepr {
    Number(i64),
    Text(String),
}

impl TryFrom<DurationRepr> for Millis {
    type Error = String;
    fn try_from(r: DurationRepr) -> std::result::Result<Self, String> {
        match r {
            DurationRepr::Number(n) => Ok(Millis(n)),
            DurationRepr::Text(s) => parse_duration_ms(&s).map(Millis),
        }
    }
}

impl From<Millis> for String {
    fn from(m: Millis) -> String {
        format_duration_ms(m.0)
    }
}

/// Parses `"500ms"`, `"30s"`, `"1m"`, `"2h"`, `"1d"` or a plain number of milliseconds.
pub fn parse_duration_ms(s: &str) -> std::result::Result<i64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: i64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. \"30s\", \"1m\", \"1h\""))?;
    let factor = match unit.trim() {
        "" | "ms" => 1,
        "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => {
            return Err(format!(
                "invalid duration unit {other:?} in {s:?} (ms, s, m, h, d)"
            ))
        }
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("duration {s:?} is too large"))
}

/// Formats milliseconds with the largest exact unit.
pub fn format_duration_ms(ms: i64) -> String {
    for (unit, f) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms != 0 && ms % f == 0 {
            return format!("{}{unit}", ms / f);
        }
    }
    format!("{ms}ms")
}

/// `[window]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WindowConfig {
    /// Tumbling window length.
    pub length: Millis,
}
impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig {
            length: Millis(DEFAULT_WINDOW_MS),
        }
    }
}

/// `[sequence]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SequenceConfig {
    /// `L`, windows per sequence.
    pub length: usize,
    /// Which windows a sequence's steps are: the last `L` windows, active or not, or the
    /// user's last `L` active windows however far apart (users active a few times a day keep
    /// a history).
    pub history: SequenceHistory,
    /// With `history = "active"`: windows older than this before the current one are
    /// forgotten, and so are users idle this long.
    pub max_idle: Millis,
}
impl Default for SequenceConfig {
    fn default() -> Self {
        SequenceConfig {
            length: DEFAULT_SEQUENCE_LEN,
            history: SequenceHistory::default(),
            max_idle: Millis(DEFAULT_SEQUENCE_MAX_IDLE_MS),
        }
    }
}

/// `[segments]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SegmentsConfig {
    /// `W`, rolling window of segment profiles, in windows.
    pub window: u64,
}
impl Default for SegmentsConfig {
    fn default() -> Self {
        SegmentsConfig {
            window: DEFAULT_SEGMENT_WINDOW,
        }
    }
}

/// `[ingest]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Ingest mapping file (relative paths are relative to the config file).
    pub mapping: Option<PathBuf>,
    /// How far behind the input's event time an event may arrive; older ones are rejected.
    pub max_out_of_order: Millis,
    /// Events dated ahead of all the others that cannot move the input's event time: it
    /// follows the `max_outliers + 1`-th newest event seen, so a few rows with a wrong clock
    /// make nothing after them late (they are kept, and processed in their windows).
    pub max_outliers: usize,
    /// Rows per read chunk.
    pub chunk_rows: usize,
}
impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            mapping: None,
            max_out_of_order: Millis(DEFAULT_MAX_OUT_OF_ORDER_MS),
            max_outliers: DEFAULT_MAX_OUTLIERS,
            chunk_rows: DEFAULT_CHUNK_ROWS,
        }
    }
}

/// Which embedder turns sequences into profiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmbedderKind {
    /// The RNN-VAE encoder (`models/onnx/rnn_vae_encoder.onnx`): profile = `mu`, anomaly
    /// score = reconstruction error.
    Vae,
    /// Standardised features averaged over the sequence (no model needed).
    Standardised,
}

/// `[embedder]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbedderConfig {
    /// The embedder.
    pub kind: EmbedderKind,
    /// Largest inference batch.
    pub max_batch: usize,
}
impl Default for EmbedderConfig {
    fn default() -> Self {
        EmbedderConfig {
            kind: EmbedderKind::Vae,
            max_batch: DEFAULT_MAX_BATCH,
        }
    }
}

/// Which forecaster predicts each active user's demand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForecasterKind {
    /// The LSTM demand forecaster (`models/onnx/demand_forecaster.onnx`).
    Lstm,
    /// The current window's demand, repeated (no model needed).
    Persistence,
    /// No forecasts (and no `forecasts` / `forecast_error` tables).
    None,
}

/// `[forecaster]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForecasterConfig {
    /// The forecaster.
    pub kind: ForecasterKind,
    /// Largest inference batch.
    pub max_batch: usize,
}
impl Default for ForecasterConfig {
    fn default() -> Self {
        ForecasterConfig {
            kind: ForecasterKind::Lstm,
            max_batch: DEFAULT_MAX_BATCH,
        }
    }
}

/// Default directory of the ONNX models.
pub const DEFAULT_MODELS_DIR: &str = "models/onnx";

/// `[models]`: where the ONNX models are and how onnxruntime runs them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelsConfig {
    /// Directory of the ONNX models; a relative path is looked up under the working directory,
    /// then under the executable's directory and its ancestors.
    pub dir: PathBuf,
    /// Execution provider: `cpu`, `cuda` or `auto`.
    pub provider: Provider,
    /// onnxruntime intra-op threads per session (one session per worker and model).
    pub intra_threads: usize,
}
impl Default for ModelsConfig {
    fn default() -> Self {
        ModelsConfig {
            dir: PathBuf::from(DEFAULT_MODELS_DIR),
            provider: Provider::default(),
            intra_threads: DEFAULT_INTRA_THREADS,
        }
    }
}

impl ModelsConfig {
    /// The models directory, resolved as documented on [`ModelsConfig::dir`]; the configured
    /// path itself if it is found nowhere (opening a model then names it).
    pub fn resolved_dir(&self) -> PathBuf {
        if self.dir.is_absolute() || self.dir.is_dir() {
            return self.dir.clone();
        }
        let exe = std::env::current_exe().ok();
        exe.iter()
            .flat_map(|e| e.ancestors().skip(1))
            .map(|a| a.join(&self.dir))
            .find(|p| p.is_dir())
            .unwrap_or_else(|| self.dir.clone())
    }

    /// Session options for onnxruntime.
    pub fn session_options(&self) -> SessionOptions {
        SessionOptions {
            intra_threads: self.intra_threads,
            provider: self.provider,
        }
    }
}

/// `[runtime]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Timely worker threads.
    pub workers: usize,
    /// How the workers tell each other their progress.
    pub progress: ProgressMode,
    /// Whether a backfill keeps each operator's activations and time, per worker
    /// ([`crate::operator_times`]), for `run.json` and the backfill's summary.
    pub operator_times: bool,
}
impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            workers: DEFAULT_WORKERS,
            progress: ProgressMode::default(),
            operator_times: false,
        }
    }
}

impl RuntimeConfig {
    /// The timely configuration of these workers in this process.
    ///
    /// ```
    /// use personaflow_dataflow::config::{ProgressMode, RuntimeConfig};
    /// let runtime = RuntimeConfig::default();
    /// assert_eq!(runtime.progress, ProgressMode::Auto);
    /// assert!(runtime.eager_progress()); // 2 workers
    /// let many = RuntimeConfig { workers: 16, ..RuntimeConfig::default() };
    /// assert!(!many.eager_progress());
    /// let _ = many.timely();
    /// ```
    pub fn timely(&self) -> timely::Config {
        let mut config = timely::Config::process(self.workers);
        if self.eager_progress() {
            config.worker = config
                .worker
                .progress_mode(timely::worker::ProgressMode::Eager);
        }
        config
    }

    /// Whether the workers send every progress update as they make it.
    pub fn eager_progress(&self) -> bool {
        match self.progress {
            ProgressMode::Auto => self.workers <= EAGER_PROGRESS_MAX_WORKERS,
            ProgressMode::Eager => true,
            ProgressMode::Demand => false,
        }
    }
}

/// `runtime.progress`: when a worker sends the changes to its outstanding work (timely's
/// progress messages) to the others.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProgressMode {
    /// The default: `eager` up to [`EAGER_PROGRESS_MAX_WORKERS`] workers, `demand` beyond.
    #[default]
    Auto,
    /// As they are made: the least latency per window, at the cost of a message per change to
    /// every worker (timely warns that many workers can drown in them). With 2 workers, 7–8%
    /// less wall time on the sparse real log with 1-minute windows (1.93 / 1.92 s against 2.07 /
    /// 2.10 s) and 1–2% on the dense simulated day, within the noise (BENCHMARKS.md, "Fewer
    /// hops a window").
    Eager,
    /// Only once they could move the frontier of some worker (timely's default): fewer
    /// messages, more waiting.
    Demand,
}

/// `[output]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// Rows per Parquet row group.
    pub row_group_rows: usize,
}
impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig {
            row_group_rows: DEFAULT_ROW_GROUP_ROWS,
        }
    }
}

/// Default allowed lateness: how far behind the newest event time of its partition an event
/// may be and still count.
pub const DEFAULT_ALLOWED_LATENESS_MS: i64 = 5 * 60_000;
/// Default idle timeout: a partition silent this long (processing time) stops holding the
/// watermark back.
pub const DEFAULT_IDLE_TIMEOUT_MS: i64 = 30_000;
/// Default longest time a broker may hold a fetch of the continuous job's consumers that has
/// no new messages yet (librdkafka's `fetch.wait.max.ms`). A broker that answers as soon as
/// it has a message (Kafka) delivers at once whatever this is; one that holds every fetch to
/// its limit (tansu) delivers events in steps of it, which then set the closes' latency.
pub const DEFAULT_FETCH_WAIT_MS: i64 = 100;
/// The upper bound of `stream.fetch_wait`: librdkafka's for `fetch.wait.max.ms`.
pub const MAX_FETCH_WAIT_MS: i64 = 300_000;
/// Default least time between two checkpoints of the continuous job (the state request of
/// one and the next): each asks every worker to store its operator state (the persona model,
/// pins, drift detectors and sequence rings: about 1.5 MB for 3,000 users), which a live job
/// otherwise did about every other window. A crash re-emits the windows after the last
/// checkpoint, so this bounds, in time, what a restart does again.
pub const DEFAULT_CHECKPOINT_INTERVAL_MS: i64 = 1_000;
/// Default most messages a worker of the continuous job takes in one round before it steps
/// the dataflow. A round that fills it means the worker is catching up (BENCHMARKS.md, "The
/// settler, the row encoder and rounds kept in flight": 1,024 and 16,384 were slower).
pub const DEFAULT_POLL_BATCH: usize = 4096;

/// Default output topics of the continuous job (table names; prefixed with
/// [`StreamConfig::output_topic_prefix`]).
pub const DEFAULT_OUTPUT_TOPICS: [&str; 5] = [
    "profiles",
    "segment_profiles",
    "resonance",
    "forecasts",
    "policies",
];
/// `stream.output_message`: what one message of an output topic holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputMessage {
    /// The default: one row per message, a JSON object.
    #[default]
    Row,
    /// Every row of one key (the row's user, or its segment for tables without a user; a
    /// table with neither has one key) in one window, as a JSON array of the row objects,
    /// split only where one message would pass 512 KiB. A compacted topic then keeps a key's
    /// whole latest window (a resonance row per segment, a forecast per horizon), not its last
    /// row; and the job sends 2.7 times fewer messages for the default topics, about 3% less
    /// of its CPU (BENCHMARKS.md, "A message per key and window").
    Key,
    /// A window's rows in Arrow IPC streams, each the table's schema and a record batch of as
    /// many rows as fit in 512 KiB, keyed by the window's end (RFC 3339): for consumers that
    /// read columns (pyarrow, Spark, DuckDB), at a fraction of JSON's bytes and encoding.
    /// Not for compacted topics (a key is a window, not a user).
    Arrow,
}

/// Default prefix of the continuous job's output topics.
pub const DEFAULT_OUTPUT_TOPIC_PREFIX: &str = "personaflow.";
/// Default dead-letter topic of the continuous job.
pub const DEFAULT_DEAD_LETTER_TOPIC: &str = "personaflow.dead_letter";
/// Default address of the continuous job's Prometheus endpoint.
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9464";

/// `[stream]`: the continuous job over Kafka (`personaflow run`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamConfig {
    /// Bootstrap brokers, `HOST:PORT[,HOST:PORT...]`.
    pub brokers: Option<String>,
    /// Input topic: one JSON event per message.
    pub topic: Option<String>,
    /// Consumer group (offsets are committed to it).
    pub group: Option<String>,
    /// Output directory of the Parquet tables and the checkpoint.
    pub output: Option<PathBuf>,
    /// A partition's watermark is its newest event time minus this; older events are late.
    pub allowed_lateness: Millis,
    /// A partition silent this long (processing time) stops holding the watermark back.
    pub idle_timeout: Millis,
    /// The longest a broker may hold a consumer's fetch that has no new messages
    /// ([`DEFAULT_FETCH_WAIT_MS`]): lower it for a broker that holds every fetch to this
    /// limit; an idle job then sends more fetches.
    pub fetch_wait: Millis,
    /// Most messages a worker takes in one round before it steps the dataflow
    /// ([`DEFAULT_POLL_BATCH`]); a worker whose round fills it is catching up: it commits at
    /// most every 500 ms and keeps its previous round in flight while it takes the next.
    pub poll_batch: usize,
    /// Least time between two checkpoints ([`DEFAULT_CHECKPOINT_INTERVAL_MS`]; 0: as often as
    /// the workers store their state).
    pub checkpoint_interval: Millis,
    /// Prefix of the output topics.
    pub output_topic_prefix: String,
    /// Tables published to Kafka, one topic each (`{prefix}{table}`); empty: none.
    pub output_topics: Vec<String>,
    /// What one message of an output topic holds ([`OutputMessage`]).
    pub output_message: OutputMessage,
    /// Topic of malformed messages (empty: only counted and logged).
    pub dead_letter_topic: String,
    /// Address of the Prometheus `/metrics` endpoint (empty: off; port 0: any free port).
    pub metrics_addr: String,
    /// fsync window files and the checkpoint before offsets are committed.
    pub fsync: bool,
}
impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            brokers: None,
            topic: None,
            group: None,
            output: None,
            allowed_lateness: Millis(DEFAULT_ALLOWED_LATENESS_MS),
            idle_timeout: Millis(DEFAULT_IDLE_TIMEOUT_MS),
            fetch_wait: Millis(DEFAULT_FETCH_WAIT_MS),
            poll_batch: DEFAULT_POLL_BATCH,
            checkpoint_interval: Millis(DEFAULT_CHECKPOINT_INTERVAL_MS),
            output_topic_prefix: DEFAULT_OUTPUT_TOPIC_PREFIX.into(),
            output_topics: DEFAULT_OUTPUT_TOPICS
                .iter()
                .map(|t| t.to_string())
                .collect(),
            output_message: OutputMessage::default(),
            dead_letter_topic: DEFAULT_DEAD_LETTER_TOPIC.into(),
            metrics_addr: DEFAULT_METRICS_ADDR.into(),
            fsync: true,
        }
    }
}

/// The built-in persona catalogue, `data/personas.toml`.
pub const BUILT_IN_CATALOGUE: &str = include_str!("../../../data/personas.toml");
/// How the built-in catalogue is named in messages.
pub const BUILT_IN_CATALOGUE_NAME: &str = "<built-in data/personas.toml>";

/// Parses and validates a persona catalogue's text (`origin` names it in errors).
pub fn parse_catalogue(origin: &Path, text: &str) -> Result<PersonaCatalogue> {
    let table = text.parse::<toml::Table>().map_err(|e| {
        let (at, message) = toml_error_at(text, &e);
        ConfigError::new(origin, None, ConfigErrorKind::Syntax { at, message })
    })?;
    let catalogue: PersonaCatalogue = serde_path_to_error::deserialize(toml::Value::Table(table))
        .map_err(|e| {
        let key = e.path().to_string();
        let kind = ConfigErrorKind::Type(humanize_serde(&e.inner().to_string()));
        ConfigError::new(origin, (key != ".").then_some(key.as_str()), kind)
    })?;
    catalogue.validate().map_err(|e| match e {
        personaflow_operators::Error::InvalidConfig { key, reason } => {
            ConfigError::new(origin, Some(&key), ConfigErrorKind::OutOfRange(reason))
        }
        other => ConfigError::new(origin, None, ConfigErrorKind::OutOfRange(other.to_string())),
    })?;
    Ok(catalogue)
}

/// The whole job configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[window]`.
    pub window: WindowConfig,
    /// `[sequence]`.
    pub sequence: SequenceConfig,
    /// `[segments]`.
    pub segments: SegmentsConfig,
    /// `[resonance]`.
    pub resonance: ResonanceConfig,
    /// `[ingest]`.
    pub ingest: IngestConfig,
    /// `[embedder]`.
    pub embedder: EmbedderConfig,
    /// `[forecaster]`.
    pub forecaster: ForecasterConfig,
    /// `[models]`.
    pub models: ModelsConfig,
    /// `[runtime]`.
    pub runtime: RuntimeConfig,
    /// `[output]`.
    pub output: OutputConfig,
    /// `[stream]`.
    pub stream: StreamConfig,
    /// `[personas]`.
    pub personas: PersonaConfig,
    /// `[drift]`.
    pub drift: DriftConfig,
    /// `[scaling]`.
    pub scaling: ScalingConfig,
    /// `[policy]`.
    pub policy: PolicyConfig,
    /// `[sinks]`.
    pub sinks: SinksConfig,
}

/// The default prefix of the Redis sink's keys.
pub const DEFAULT_REDIS_KEY_PREFIX: &str = "personaflow:user:";

/// `[sinks]`: where results are mirrored besides the Parquet tables.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinksConfig {
    /// `[sinks.redis]`: each user's latest persona, resonance and policy as a hash.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisSinkConfig>,
}

/// `[sinks.redis]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSinkConfig {
    /// `redis://[:password@]host[:port][/db]`.
    pub url: String,
    /// The hash of user `U` is `<key_prefix>U`.
    #[serde(default = "default_redis_key_prefix")]
    pub key_prefix: String,
}

fn default_redis_key_prefix() -> String {
    DEFAULT_REDIS_KEY_PREFIX.to_string()
}

/// The sections of the configuration, as they are named in files and variables.
pub const SECTIONS: [&str; 16] = [
    "window",
    "sequence",
    "segments",
    "resonance",
    "ingest",
    "embedder",
    "forecaster",
    "models",
    "runtime",
    "output",
    "stream",
    "personas",
    "drift",
    "scaling",
    "policy",
    "sinks",
];

/// The upper bound of every size key (counts of windows, rows, users, threads...), checked
/// at start: a size far beyond these is a typo, and would run out of memory or time.
pub const SIZE_LIMITS: [(&str, u64); 34] = [
    ("sequence.length", 1_024),
    ("segments.window", 100_000),
    ("resonance.cold_start_windows", 1_024),
    ("resonance.min_segment_profiles", 10_000_000),
    ("ingest.chunk_rows", 1 << 20),
    ("ingest.max_outliers", 1_024),
    ("embedder.max_batch", 65_536),
    ("forecaster.max_batch", 65_536),
    ("models.intra_threads", 256),
    ("runtime.workers", 256),
    ("output.row_group_rows", 1 << 24),
    ("personas.k", 256),
    ("personas.k_min", 256),
    ("personas.k_max", 256),
    ("personas.batch_size", 1_000_000),
    ("personas.passes", 100),
    ("personas.reselect_every", 10_000_000),
    ("personas.min_users", 10_000_000),
    ("personas.silhouette_sample", 100_000),
    ("personas.restarts", 100),
    ("personas.top_features", 64),
    ("drift.baseline", 100_000),
    ("drift.recent", 100_000),
    ("drift.permutations", 100_000),
    ("drift.max_points", 100_000),
    ("drift.top_moved", 64),
    ("drift.min_points", 100_000),
    ("drift.confirm", 1_000),
    ("drift.persona_pin", 10_000_000),
    ("scaling.calibration_windows", 100_000),
    ("policy.horizon", 1_024),
    ("stream.poll_batch", 1_000_000),
    ("policy.risk_windows", 100_000),
    (
        "scaling.horizon",
        personaflow_operators::drift::scaling::MAX_HORIZON as u64,
    ),
];

/// Integer keys that are not sizes (no bound).
pub const UNBOUNDED_KEYS: [&str; 2] = ["personas.seed", "drift.seed"];

/// The upper bound of every duration key, ms.
pub const DURATION_LIMITS: [(&str, i64); 7] = [
    ("window.length", 366 * 86_400_000),
    ("sequence.max_idle", 3_660 * 86_400_000),
    ("ingest.max_out_of_order", 3_660 * 86_400_000),
    ("stream.allowed_lateness", 30 * 86_400_000),
    ("stream.idle_timeout", 86_400_000),
    ("stream.fetch_wait", MAX_FETCH_WAIT_MS),
    ("stream.checkpoint_interval", 86_400_000),
];

/// Where each configured key came from: the file, or the variable that set it.
#[derive(Debug, Default)]
struct Sources {
    /// Dotted key (or section) -> the variable that set it.
    variables: Vec<(String, String)>,
}

impl Sources {
    /// The variable that set `key` (or a section or key above or below it), if any.
    fn variable_of(&self, key: &str) -> Option<&str> {
        self.variables
            .iter()
            .rev()
            .find(|(k, _)| {
                k == key || key.starts_with(&format!("{k}.")) || k.starts_with(&format!("{key}."))
            })
            .map(|(_, v)| v.as_str())
    }
}

impl Config {
    /// Loads the configuration: defaults, then `file` (if any), then `PERSONAFLOW__*`
    /// variables from `env`. Validates the result. An error names the key and its source:
    /// the file, or the variable that set it. Variables that look like settings but are
    /// misspelt (`PERSONAFLOW_SEQUENCE__LENGTH`, `PERSONAFLOW__SEQUENCE_LENGTH`) are errors.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config> {
        let text = match file {
            Some(path) => std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?,
            None => String::new(),
        };
        Self::from_toml_str(&text, file, env)
    }

    /// Like [`load`](Self::load), with the file's text given (`file` names it in messages and
    /// anchors a relative mapping path).
    pub fn from_toml_str(
        text: &str,
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config> {
        let origin = file
            .map(Path::to_path_buf)
            .unwrap_or_else(|| "<defaults>".into());
        let mut table = text.parse::<toml::Table>().map_err(|e| {
            let (at, message) = toml_error_at(text, &e);
            ConfigError::new(&origin, None, ConfigErrorKind::Syntax { at, message })
        })?;
        let mut sources = Sources::default();
        let mut env: Vec<(String, String)> = env.into_iter().collect();
        env.sort();
        for (key, value) in env {
            let Some(path) = env_key_path(&key)? else {
                continue;
            };
            set_path(&mut table, &path, parse_env_value(&value))
                .map_err(|reason| ConfigError::new(&key, None, ConfigErrorKind::Type(reason)))?;
            sources.variables.push((path.join("."), key));
        }
        let blame = |key: &str| -> PathBuf {
            sources
                .variable_of(key)
                .map_or_else(|| origin.clone(), PathBuf::from)
        };
        let mut config: Config = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| {
                let key = e.path().to_string();
                let kind = ConfigErrorKind::Type(humanize_serde(&e.inner().to_string()));
                ConfigError::new(blame(&key), (key != ".").then_some(key.as_str()), kind)
            })?;
        if let (Some(mapping), Some(dir)) = (&config.ingest.mapping, file.and_then(Path::parent)) {
            if mapping.is_relative() && !mapping.exists() {
                config.ingest.mapping = Some(dir.join(mapping));
            }
        }
        if let (Some(catalogue), Some(dir)) =
            (&config.policy.catalogue, file.and_then(Path::parent))
        {
            if catalogue.is_relative() && !catalogue.exists() {
                config.policy.catalogue = Some(dir.join(catalogue));
            }
        }
        config.validate().map_err(|mut e| {
            e.origin = blame(e.key.as_deref().unwrap_or_default());
            e
        })?;
        if config.policy.enabled {
            // A bad catalogue fails here, before the job reads or writes anything.
            config.catalogue()?;
        }
        Ok(config)
    }

    /// Checks every value's range (a configuration built in code is `<config>` in the error;
    /// [`load`](Self::load) names the file or variable that set the key).
    pub fn validate(&self) -> std::result::Result<(), ConfigError> {
        let bad = |key: &str, reason: String| {
            Err(ConfigError::new(
                IN_CODE,
                Some(key),
                ConfigErrorKind::OutOfRange(reason),
            ))
        };
        self.check_limits()?;
        if self.window.length.0 <= 0 {
            return bad(
                "window.length",
                format!("must be positive, got {}ms", self.window.length.0),
            );
        }
        if self.sequence.max_idle.0 <= 0 {
            return bad(
                "sequence.max_idle",
                format!("must be positive, got {}ms", self.sequence.max_idle.0),
            );
        }
        if self.ingest.max_out_of_order.0 < 0 {
            return bad("ingest.max_out_of_order", "must not be negative".into());
        }
        for (key, value) in [
            ("sequence.length", self.sequence.length as u64),
            ("segments.window", self.segments.window),
            ("ingest.chunk_rows", self.ingest.chunk_rows as u64),
            ("embedder.max_batch", self.embedder.max_batch as u64),
            ("forecaster.max_batch", self.forecaster.max_batch as u64),
            ("models.intra_threads", self.models.intra_threads as u64),
            ("runtime.workers", self.runtime.workers as u64),
            ("output.row_group_rows", self.output.row_group_rows as u64),
            ("stream.poll_batch", self.stream.poll_batch as u64),
        ] {
            if value == 0 {
                return bad(key, "must be at least 1".into());
            }
        }
        for (key, value) in [
            ("stream.allowed_lateness", self.stream.allowed_lateness.0),
            ("stream.idle_timeout", self.stream.idle_timeout.0),
            ("stream.fetch_wait", self.stream.fetch_wait.0),
            (
                "stream.checkpoint_interval",
                self.stream.checkpoint_interval.0,
            ),
        ] {
            if value < 0 {
                return bad(key, "must not be negative".into());
            }
        }
        for table in &self.stream.output_topics {
            if personaflow_io::tables::Table::from_name(table).is_none() {
                let tables = personaflow_io::tables::Table::ALL.map(|t| t.name());
                return Err(ConfigError::new(
                    IN_CODE,
                    Some("stream.output_topics"),
                    ConfigErrorKind::Type(format!(
                        "unknown table {table:?} (one of {})",
                        tables.join(", ")
                    )),
                ));
            }
        }
        let operator = |e: personaflow_operators::Error| match e {
            personaflow_operators::Error::InvalidConfig { key, reason } => {
                ConfigError::new(IN_CODE, Some(&key), ConfigErrorKind::OutOfRange(reason))
            }
            other => ConfigError::new(
                IN_CODE,
                None,
                ConfigErrorKind::OutOfRange(other.to_string()),
            ),
        };
        self.scaling.validate().map_err(operator)?;
        self.policy.validate().map_err(operator)?;
        if self.policy.risk_windows > self.segments.window {
            return bad(
                "policy.risk_windows",
                format!(
                    "({}) must be at most segments.window ({}): a restarted job rebuilds the \
                     risk calibration from the windows it replays",
                    self.policy.risk_windows, self.segments.window
                ),
            );
        }
        self.personas.validate().map_err(operator)?;
        self.drift.validate().map_err(operator)?;
        self.resonance.validate().map_err(operator)
    }

    /// The ingest mapping (`ingest.mapping`, or the identity mapping of the canonical schema).
    pub fn ingest_mapping(&self) -> Result<personaflow_io::source::IngestMapping> {
        match &self.ingest.mapping {
            Some(path) => Ok(personaflow_io::source::IngestMapping::from_toml_file(path)?),
            None => Ok(personaflow_io::source::IngestMapping::identity()),
        }
    }

    /// The persona catalogue: `policy.catalogue`, or the built-in one (`data/personas.toml`),
    /// validated. An error names the file and the key (`personas.gamer.dscp`).
    pub fn catalogue(&self) -> Result<PersonaCatalogue> {
        let (origin, text) = match &self.policy.catalogue {
            Some(path) => (
                path.clone(),
                std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?,
            ),
            None => (
                PathBuf::from(BUILT_IN_CATALOGUE_NAME),
                BUILT_IN_CATALOGUE.to_string(),
            ),
        };
        parse_catalogue(&origin, &text)
    }

    /// `[policy]` as the policies operator takes it (`risk_windows` 0 resolved to
    /// `segments.window`).
    pub fn policy_config(&self) -> PolicyConfig {
        let mut p = self.policy.clone();
        if p.risk_windows == 0 {
            p.risk_windows = self.segments.window;
        }
        p
    }

    /// What a sequence holds: `sequence.length` steps of the configured history, `max_idle`
    /// in windows (rounded up, at least one).
    pub fn sequence_spec(&self) -> SequenceSpec {
        let len = self.window.length.0.max(1);
        let max_idle = ((self.sequence.max_idle.0.max(1) + len - 1) / len) as u64;
        SequenceSpec {
            len: self.sequence.length.max(1),
            history: self.sequence.history,
            max_idle_windows: max_idle.max(1),
        }
    }

    /// The windows of events a continuous job replays on restart to rebuild the windowed
    /// state of the window after its checkpoint: the segments' rolling window (`W`) of
    /// profiles, each from a sequence of `L` windows, and with policies on, a policy's risk
    /// over the anomaly scores of the last `R` (`policy.risk_windows`) windows, each placed
    /// in a segment by resonance there: `L + W (+ R)`.
    pub fn restart_replay_windows(&self) -> u64 {
        let risk_windows = if self.policy.enabled {
            self.policy_config().risk_windows
        } else {
            0
        };
        (self.sequence.length as u64) + self.segments.window + risk_windows
    }

    /// The window specification.
    pub fn window_spec(&self) -> WindowSpec {
        WindowSpec::try_new(self.window.length.0).expect("validated")
    }

    /// How many windows of disorder the input may have.
    pub fn disorder_windows(&self) -> u64 {
        let len = self.window.length.0.max(1);
        ((self.ingest.max_out_of_order.0 + len - 1) / len) as u64
    }
}

impl Config {
    /// Checks every size key against [`SIZE_LIMITS`] and every duration against
    /// [`DURATION_LIMITS`].
    fn check_limits(&self) -> std::result::Result<(), ConfigError> {
        let value = toml::Value::try_from(self)
            .map_err(|e| ConfigError::new(IN_CODE, None, ConfigErrorKind::Type(e.to_string())))?;
        let above = |key: &str, value: String, bound: String| {
            Err(ConfigError::new(
                IN_CODE,
                Some(key),
                ConfigErrorKind::AboveBound { value, bound },
            ))
        };
        let lookup = |key: &str| {
            key.split('.')
                .try_fold(&value, |v, part| v.get(part))
                .cloned()
        };
        for (key, max) in SIZE_LIMITS {
            if let Some(toml::Value::Integer(v)) = lookup(key) {
                if v < 0 || v as u64 > max {
                    return above(key, v.to_string(), max.to_string());
                }
            }
        }
        for (key, max) in DURATION_LIMITS {
            if let Some(toml::Value::String(text)) = lookup(key) {
                let ms = parse_duration_ms(&text)
                    .map_err(|m| ConfigError::new(IN_CODE, Some(key), ConfigErrorKind::Type(m)))?;
                if ms > max {
                    return above(key, text, format_duration_ms(max));
                }
            }
        }
        Ok(())
    }
}

/// The key path of a configuration variable (`PERSONAFLOW__SEQUENCE__LENGTH` ->
/// `sequence.length`), `None` for variables that are not settings, and an error for one that
/// looks like a setting but is misspelt.
fn env_key_path(name: &str) -> Result<Option<Vec<String>>> {
    let misspelt = |hint: String| {
        Err(ConfigError::new(name, None, ConfigErrorKind::NotAVariable { hint }).into())
    };
    let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
        // `PERSONAFLOW_SEQUENCE__LENGTH` and the like; other `PERSONAFLOW_*` variables
        // (the test hooks, tool paths) are not settings.
        return match name.strip_prefix("PERSONAFLOW_").and_then(meant_variable) {
            Some(meant) => misspelt(format!(" (did you mean {meant}?)")),
            None => Ok(None),
        };
    };
    let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
    if !SECTIONS.contains(&path[0].as_str()) {
        let hint = meant_variable(&path[0]).map_or_else(
            || format!("; the sections are {}", SECTIONS.join(", ")),
            |meant| format!(" (did you mean {meant}?)"),
        );
        return misspelt(hint);
    }
    Ok(Some(path))
}

/// The variable meant by `SECTION_KEY...` (a section, one underscore, the rest), if it starts
/// with a section: `PERSONAFLOW__SECTION__KEY...`.
fn meant_variable(text: &str) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    let section = SECTIONS
        .iter()
        .find(|s| lower.strip_prefix(**s).is_some_and(|r| r.starts_with('_')))?;
    let key = lower[section.len()..].trim_start_matches('_');
    Some(format!(
        "{ENV_PREFIX}{}__{}",
        section.to_ascii_uppercase(),
        key.to_ascii_uppercase()
    ))
}

/// A serde message as a person would say it: `invalid type: string "sixteen", expected
/// usize` becomes `expected an integer, got "sixteen"`.
fn humanize_serde(message: &str) -> String {
    // toml adds "\nin `key`" lines of its own.
    let message = message.lines().next().unwrap_or_default().trim();
    let Some(rest) = message.strip_prefix("invalid type: ") else {
        return message
            .strip_prefix("invalid value: ")
            .map_or_else(|| message.to_owned(), str::to_owned);
    };
    let Some((got, expected)) = rest.split_once(", expected ") else {
        return message.to_owned();
    };
    let expected = match expected {
        "usize" | "u64" | "u32" | "u16" | "u8" | "i64" | "i32" | "isize" => "an integer",
        "f32" | "f64" => "a number",
        "a boolean" | "bool" => "true or false",
        other => other,
    };
    let got = got
        .strip_prefix("string ")
        .or_else(|| got.strip_prefix("integer "))
        .or_else(|| got.strip_prefix("floating point "))
        .or_else(|| got.strip_prefix("boolean "))
        .unwrap_or(got)
        .trim_matches('`');
    format!("expected {expected}, got {got}")
}

fn parse_env_value(v: &str) -> toml::Value {
    // A bare TOML value ("0.2", "true", "[1, 2]") or, failing that, a string.
    format!("v = {v}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(v.to_string()))
}

fn set_path(
    table: &mut toml::Table,
    path: &[String],
    value: toml::Value,
) -> std::result::Result<(), String> {
    match path {
        [] => Err("empty configuration key".into()),
        [last] => {
            table.insert(last.clone(), value);
            Ok(())
        }
        [first, rest @ ..] => {
            let entry = table
                .entry(first.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match entry {
                toml::Value::Table(t) => set_path(t, rest, value),
                _ => Err(format!("`{first}` is not a section")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The TOML block of this module's documentation.
    fn documented_example() -> String {
        include_str!("config.rs")
            .lines()
            .skip_while(|l| !l.starts_with("//! ```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| {
                l.strip_prefix("//! ")
                    .unwrap_or(l.trim_start_matches("//!"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn the_documented_example_names_every_section_and_holds_the_defaults() {
        let text = documented_example();
        for section in SECTIONS {
            assert!(
                text.contains(&format!("[{section}]")),
                "[{section}] is not documented"
            );
        }
        let c = Config::from_toml_str(&text, None, []).unwrap();
        assert_eq!(
            c,
            Config::default(),
            "{}",
            toml::to_string(&Config::default()).unwrap()
        );
    }

    #[test]
    fn defaults_are_named_and_valid() {
        let c = Config::load(None, []).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.window.length.0, DEFAULT_WINDOW_MS);
        assert_eq!(c.sequence.length, DEFAULT_SEQUENCE_LEN);
        assert_eq!(c.disorder_windows(), 5);
    }

    #[test]
    fn sequences_default_to_active_history_forgotten_after_max_idle_in_windows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("job.toml");
        std::fs::write(
            &path,
            "[window]\nlength = \"1h\"\n[sequence]\nhistory = \"active\"\nmax_idle = \"2d\"\n",
        )
        .unwrap();
        let c = Config::load(Some(&path), vec![]).unwrap();
        assert_eq!(
            c.sequence_spec(),
            SequenceSpec::active(DEFAULT_SEQUENCE_LEN, 48)
        );
        // The default: 30 days of 1-minute windows.
        assert_eq!(
            Config::default().sequence_spec(),
            SequenceSpec::active(
                DEFAULT_SEQUENCE_LEN,
                personaflow_operators::sequences::DEFAULT_MAX_IDLE_WINDOWS
            )
        );
        std::fs::write(
            dir.path().join("windows.toml"),
            "[sequence]\nhistory = \"windows\"\n",
        )
        .unwrap();
        let c = Config::load(Some(&dir.path().join("windows.toml")), vec![]).unwrap();
        assert_eq!(
            c.sequence_spec(),
            SequenceSpec::windows(DEFAULT_SEQUENCE_LEN)
        );
        let env = vec![(
            "PERSONAFLOW__SEQUENCE__MAX_IDLE".to_string(),
            "90m".to_string(),
        )];
        // Rounded up to whole windows.
        let c = Config::load(Some(&path), env).unwrap();
        assert_eq!(c.sequence_spec().max_idle_windows, 2);
        std::fs::write(&path, "[sequence]\nhistory = \"sparse\"\n").unwrap();
        let err = Config::load(Some(&path), vec![]).unwrap_err().to_string();
        assert!(
            err.contains("sequence.history") && err.contains("windows") && err.contains("active"),
            "{err}"
        );
        std::fs::write(&path, "[sequence]\nmax_idle = \"0s\"\n").unwrap();
        let err = Config::load(Some(&path), vec![]).unwrap_err().to_string();
        assert!(err.contains("sequence.max_idle"), "{err}");
    }

    #[test]
    fn the_checkpoint_interval_is_a_bounded_duration_and_0_means_always() {
        assert_eq!(
            Config::default().stream.checkpoint_interval,
            Millis(DEFAULT_CHECKPOINT_INTERVAL_MS)
        );
        let env = |v: &str| {
            vec![(
                "PERSONAFLOW__STREAM__CHECKPOINT_INTERVAL".to_string(),
                v.to_string(),
            )]
        };
        assert_eq!(
            Config::load(None, env("250ms"))
                .unwrap()
                .stream
                .checkpoint_interval,
            Millis(250)
        );
        for zero in ["0", "0s"] {
            let c = Config::load(None, env(zero)).unwrap();
            assert_eq!(c.stream.checkpoint_interval, Millis(0), "{zero}");
        }
        for bad in ["2d", "-1"] {
            let err = Config::load(None, env(bad)).unwrap_err().to_string();
            assert!(err.contains("stream.checkpoint_interval"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_fetch_wait_is_a_bounded_duration() {
        assert_eq!(
            Config::default().stream.fetch_wait,
            Millis(DEFAULT_FETCH_WAIT_MS)
        );
        let env = |v: &str| vec![("PERSONAFLOW__STREAM__FETCH_WAIT".to_string(), v.to_string())];
        let c = Config::load(None, env("10ms")).unwrap();
        assert_eq!(c.stream.fetch_wait, Millis(10));
        let c = Config::load(None, env("0")).unwrap();
        assert_eq!(
            c.stream.fetch_wait,
            Millis(0),
            "0: the broker answers at once"
        );
        let err = Config::load(None, env("6m")).unwrap_err().to_string();
        assert!(
            err.contains("stream.fetch_wait") && err.contains("5m"),
            "{err}"
        );
        let err = Config::load(None, env("-5")).unwrap_err().to_string();
        assert!(err.contains("stream.fetch_wait"), "{err}");
    }

    #[test]
    fn file_then_env_layering() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("job.toml");
        std::fs::write(
            &path,
            "[window]\nlength = \"30s\"\n[resonance]\ntemperature = 0.5\n[ingest]\nmapping = \"m.toml\"\n",
        )
        .unwrap();
        let env = vec![
            (
                "PERSONAFLOW__RESONANCE__TEMPERATURE".to_string(),
                "0.25".to_string(),
            ),
            ("PERSONAFLOW__SEQUENCE__LENGTH".to_string(), "8".to_string()),
            ("UNRELATED".to_string(), "x".to_string()),
        ];
        let c = Config::load(Some(&path), env).unwrap();
        assert_eq!(c.window.length, Millis(30_000));
        assert_eq!(c.resonance.temperature, 0.25, "env overrides the file");
        assert_eq!(c.sequence.length, 8);
        assert_eq!(c.ingest.mapping, Some(dir.path().join("m.toml")));
    }

    #[test]
    fn bad_values_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "[resonance]\ntemperature = -1.0\n").unwrap();
        let err = Config::load(Some(&path), []).unwrap_err().to_string();
        assert!(
            err.contains("bad.toml") && err.contains("temperature"),
            "{err}"
        );
        std::fs::write(&path, "[window]\nlenght = \"1m\"\n").unwrap();
        let err = Config::load(Some(&path), []).unwrap_err().to_string();
        assert!(err.contains("lenght"), "unknown keys are refused: {err}");
        std::fs::write(&path, "[window]\nlength = \"1 fortnight\"\n").unwrap();
        assert!(Config::load(Some(&path), []).is_err());
    }

    /// Every integer key of the configuration, dotted.
    fn integer_keys(value: &toml::Value, prefix: &str, out: &mut Vec<String>) {
        if let toml::Value::Table(t) = value {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                match v {
                    toml::Value::Integer(_) => out.push(key),
                    toml::Value::Table(_) => integer_keys(v, &key, out),
                    _ => {}
                }
            }
        }
    }

    #[test]
    fn every_size_key_has_a_bound_that_is_checked() {
        let mut config = Config::default();
        config.personas.k = Some(3);
        let value = toml::Value::try_from(&config).unwrap();
        let mut keys = Vec::new();
        integer_keys(&value, "", &mut keys);
        assert!(keys.len() > 20, "{keys:?}");
        for key in &keys {
            assert!(
                SIZE_LIMITS.iter().any(|(k, _)| k == key) || UNBOUNDED_KEYS.contains(&key.as_str()),
                "{key} has no bound in SIZE_LIMITS"
            );
        }
        let section: Vec<&str> = SECTIONS.to_vec();
        let mut top: Vec<&str> = value
            .as_table()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        top.sort();
        let mut sorted = section.clone();
        sorted.sort();
        assert_eq!(top, sorted, "SECTIONS lists every section");
        // Each bound is enforced, with the key in the message.
        for (key, max) in SIZE_LIMITS {
            let (section, name) = key.split_once('.').unwrap();
            let env = vec![(
                format!(
                    "PERSONAFLOW__{}__{}",
                    section.to_uppercase(),
                    name.to_uppercase()
                ),
                (max as u128 + 1).to_string(),
            )];
            let err = Config::load(None, env).unwrap_err().to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.toml");
        std::fs::write(&path, "[sequence]\nlength = 100000\n").unwrap();
        let err = Config::load(Some(&path), []).unwrap_err().to_string();
        assert!(
            err.contains("big.toml") && err.contains("sequence.length") && err.contains("1024"),
            "{err}"
        );
        std::fs::write(&path, "[window]\nlength = \"400d\"\n").unwrap();
        let err = Config::load(Some(&path), []).unwrap_err().to_string();
        assert!(err.contains("window.length"), "{err}");
    }

    #[test]
    fn type_errors_name_the_key_and_blame_their_source() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("job.toml");
        std::fs::write(&path, "[sequence]\nlength = \"sixteen\"\n").unwrap();
        let err = Config::load(Some(&path), []).unwrap_err().to_string();
        assert!(
            err.contains("job.toml")
                && err.contains("sequence.length: expected an integer, got \"sixteen\""),
            "{err}"
        );
        // A bad variable is blamed, not the (good) file.
        std::fs::write(&path, "[sequence]\nlength = 8\n").unwrap();
        let env = vec![(
            "PERSONAFLOW__SEQUENCE__LENGTH".to_string(),
            "sixteen".to_string(),
        )];
        let err = Config::load(Some(&path), env).unwrap_err().to_string();
        assert!(
            err.starts_with("PERSONAFLOW__SEQUENCE__LENGTH: sequence.length: expected an integer"),
            "{err}"
        );
        let env = vec![(
            "PERSONAFLOW__RESONANCE__TEMPERATURE".to_string(),
            "0".to_string(),
        )];
        let err = Config::load(Some(&path), env).unwrap_err().to_string();
        assert!(
            err.starts_with("PERSONAFLOW__RESONANCE__TEMPERATURE: "),
            "{err}"
        );
        // Misspelt variables are reported, with the name meant.
        for (name, meant) in [
            (
                "PERSONAFLOW_SEQUENCE__LENGTH",
                "PERSONAFLOW__SEQUENCE__LENGTH",
            ),
            (
                "PERSONAFLOW_SEQUENCE_LENGTH",
                "PERSONAFLOW__SEQUENCE__LENGTH",
            ),
            (
                "PERSONAFLOW__SEQUENCE_LENGTH",
                "PERSONAFLOW__SEQUENCE__LENGTH",
            ),
        ] {
            let env = vec![(name.to_string(), "8".to_string())];
            let err = Config::load(None, env).unwrap_err().to_string();
            assert!(err.starts_with(name) && err.contains(meant), "{err}");
        }
        let env = vec![("PERSONAFLOW__SEQUENCE__LENGHT".to_string(), "8".to_string())];
        let err = Config::load(None, env).unwrap_err().to_string();
        assert!(
            err.starts_with("PERSONAFLOW__SEQUENCE__LENGHT") && err.contains("lenght"),
            "{err}"
        );
        // Other PERSONAFLOW_ variables (tool paths, test hooks) are not settings.
        let env = vec![(
            "PERSONAFLOW_PYTHON".to_string(),
            "/usr/bin/python3".to_string(),
        )];
        assert!(Config::load(None, env).is_ok());
    }

    #[test]
    fn durations_parse_and_format() {
        assert_eq!(parse_duration_ms("90s"), Ok(90_000));
        assert_eq!(parse_duration_ms("1d"), Ok(86_400_000));
        assert_eq!(parse_duration_ms("250"), Ok(250));
        assert!(parse_duration_ms("m").is_err());
        assert_eq!(format_duration_ms(3_600_000), "1h");
        assert_eq!(format_duration_ms(1_500), "1500ms");
    }
}
