//! Helpers shared by the CLI tests: running the real binary, reading its Parquet outputs back
//! with the `parquet` crate (independently of the product's own readers), and writing inputs.

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int32Type, Int64Type, TimestampMillisecondType, UInt32Type,
    UInt64Type,
};
use arrow_array::{Array, ArrayRef, RecordBatch, RecordBatchReader};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::{ArrowWriter, ProjectionMask};
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Worker threads every backfill in these tests runs with.
pub const WORKERS: &str = "2";
/// The simulator's default start, 2026-01-05T00:00:00Z (a Monday), in ms.
pub const SIM_START_MS: i64 = personaflow_sim::DEFAULT_START_MS;
/// Window length of the default configuration, ms.
pub const DEFAULT_WINDOW_MS: i64 = personaflow_operators::window::DEFAULT_WINDOW_MS;
/// The output tables written by `backfill`.
pub const PARTITIONED_TABLES: [&str; 9] = [
    "features",
    "profiles",
    "segment_profiles",
    "resonance",
    "forecasts",
    "forecast_error",
    "policies",
    "socket_profiles",
    "shaping_feedback",
];
/// The segments the issue requires of the simulator, written out independently of
/// `simulate::SEGMENTS` on purpose: a segment dropped from the simulator fails the tests.
pub const SEGMENTS: [&str; 5] = [
    "gamer",
    "video_streamer",
    "remote_worker",
    "iot_device",
    "casual_browser",
];

/// The tables personas and drift add to a backfill (their operators remember the whole
/// stream).
pub const DERIVED_TABLES: [&str; 4] = ["personas", "persona_assignments", "drift", "scaling"];

/// The events of a simulation's `events` directory, read with the product's readers, in
/// event-time order.
pub fn events_in_time_order(events: &Path) -> Vec<personaflow_operators::Event> {
    use personaflow_io::source::{open_reader, resolve_inputs, Chunk, IngestMapping};
    let mapping = IngestMapping::identity();
    let mut all = Vec::new();
    for file in resolve_inputs(&[events.display().to_string()], &mapping).unwrap() {
        let mut reader = open_reader(&file, &mapping, 4096).unwrap();
        let mut chunk = Chunk::default();
        while reader.next_chunk(&mut chunk).unwrap() {
            all.append(&mut chunk.events);
            chunk.clear();
        }
    }
    all.sort_by_key(|e| e.ts_ms);
    all
}

/// Produces a simulation's events to the `events` topic from a thread, in equal slices (in
/// event-time order), each when [`release`](Self::release)d and spread over `spread`, one
/// message per produce batch: tansu 0.6.0 (in-memory storage) answers a fetch at an offset
/// inside a record batch with the next batch (and reports the last batch's base offset + 1
/// as the high watermark), so a consumer resuming inside a batch would lose the rest of it.
/// Kafka and librdkafka's mock cluster return the batch that holds the offset.
pub struct SlicedProducer {
    go: std::sync::mpsc::Sender<usize>,
    handle: std::thread::JoinHandle<usize>,
    total: usize,
    /// The first and last event time (ms) of each slice.
    spans: Vec<(i64, i64)>,
}

impl SlicedProducer {
    /// Reads the events of `events` and waits for the first release.
    pub fn start(
        brokers: &str,
        events: &Path,
        slices: usize,
        spread: std::time::Duration,
    ) -> SlicedProducer {
        use rdkafka::config::ClientConfig;
        use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
        use std::time::{Duration, Instant};
        let all = events_in_time_order(events);
        let total = all.len();
        let per_slice = all.len().div_ceil(slices).max(1);
        let spans = all
            .chunks(per_slice)
            .map(|c| (c[0].ts_ms, c[c.len() - 1].ts_ms))
            .collect();
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("linger.ms", "0")
            .set("batch.num.messages", "1")
            .create()
            .unwrap();
        let (go, released) = std::sync::mpsc::channel::<usize>();
        let handle = std::thread::spawn(move || {
            let mut sent = 0;
            while let Ok(k) = released.recv() {
                let slice = all.chunks(per_slice).nth(k).unwrap_or_default();
                let started = Instant::now();
                for (i, e) in slice.iter().enumerate() {
                    let payload = personaflow_io::source::event_json(e).to_string();
                    let mut record = BaseRecord::to("events")
                        .key(e.user_id.as_str())
                        .payload(payload.as_str())
                        .timestamp(e.ts_ms);
                    // A full queue hands the record back: serve it, and send again.
                    while let Err((_, r)) = producer.send(record) {
                        record = r;
                        producer.poll(Duration::from_millis(10));
                    }
                    sent += 1;
                    let due = spread.mul_f64(i as f64 / slice.len() as f64);
                    if let Some(wait) = due.checked_sub(started.elapsed()) {
                        producer.poll(wait);
                    }
                }
                producer.flush(Duration::from_secs(60)).unwrap();
                if k + 1 == slices {
                    break;
                }
            }
            sent
        });
        SlicedProducer {
            go,
            handle,
            total,
            spans,
        }
    }

    /// Events read, to be produced over all the slices.
    pub fn total(&self) -> usize {
        self.total
    }

    /// The first and last event time (ms) of slice `k`.
    pub fn span(&self, k: usize) -> (i64, i64) {
        self.spans[k]
    }

    /// Starts producing slice `k`.
    pub fn release(&self, k: usize) {
        self.go.send(k).unwrap();
    }

    /// Waits until every released slice is produced; returns the events sent.
    pub fn finish(self) -> usize {
        drop(self.go);
        self.handle.join().unwrap()
    }
}

/// The finished run of a command.
#[derive(Debug)]
pub struct Run {
    /// Exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// Panics, showing the output, unless the command succeeded.
    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code,
            Some(0),
            "command failed\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// Panics unless the command failed cleanly (non-zero exit code, not a panic or signal)
    /// with exactly one line on stderr of the form `personaflow: error: ...`; returns that line.
    #[track_caller]
    pub fn fails_with_one_line(&self) -> String {
        assert!(
            matches!(self.code, Some(c) if c != 0 && c != 101),
            "expected a clean failure, got {:?}\nstdout:\n{}\nstderr:\n{}",
            self.code,
            self.stdout,
            self.stderr
        );
        let line = self.stderr.trim_end_matches('\n');
        assert!(
            !line.contains('\n'),
            "expected a one-line error, got:\n{}",
            self.stderr
        );
        assert!(
            line.starts_with("personaflow: error: "),
            "expected `personaflow: error: ...`, got: {line}"
        );
        line.to_string()
    }
}

/// The `personaflow` binary with no `PERSONAFLOW__*` variables inherited from the caller, run
/// from the repository root (where it finds `models/onnx` and the `.venv` with onnxruntime, as
/// a user running it from a checkout does).
pub fn personaflow() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_personaflow"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PERSONAFLOW__") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// Runs a prepared command to completion.
pub fn run_cmd(cmd: &mut Command) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("the personaflow binary runs");
    Run {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// Runs `personaflow ARGS`.
pub fn run<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Run {
    run_cmd(personaflow().args(args))
}

/// `personaflow simulate` of `users` users over `days` days with `seed`, into `out`.
pub fn simulate(out: &Path, users: u32, days: f64, seed: u64, extra: &[&str]) -> Run {
    let mut cmd = personaflow();
    cmd.arg("simulate")
        .args(["--users", &users.to_string()])
        .args(["--days", &days.to_string()])
        .args(["--seed", &seed.to_string()])
        .arg("--out")
        .arg(out)
        .args(extra);
    run_cmd(&mut cmd)
}

/// `personaflow backfill --input INPUT --output OUTPUT --workers 2 EXTRA...`.
pub fn backfill(input: &Path, output: &Path, extra: &[&str]) -> Run {
    let mut cmd = personaflow();
    backfill_cmd(&mut cmd, input, output, extra);
    run_cmd(&mut cmd)
}

/// Adds the arguments of a backfill to `cmd`.
pub fn backfill_cmd<'c>(
    cmd: &'c mut Command,
    input: &Path,
    output: &Path,
    extra: &[&str],
) -> &'c mut Command {
    cmd.arg("backfill")
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(output)
        .args(["--workers", WORKERS])
        .args(extra)
}

/// A simulation of `users` users over `days` days (`seed`) in `dir/sim`, backfilled with the
/// model-free embedder and forecaster into `dir/out` (for tests about what comes after the
/// models); returns the output directory.
pub fn backfilled_model_free(dir: &Path, users: u32, days: f64, seed: u64) -> PathBuf {
    let sim = dir.join("sim");
    simulate(&sim, users, days, seed, &[]).ok();
    let out = dir.join("out");
    let mut cmd = personaflow();
    backfill_cmd(
        cmd.env("PERSONAFLOW__EMBEDDER__KIND", "standardised")
            .env("PERSONAFLOW__FORECASTER__KIND", "persistence"),
        &sim.join("events"),
        &out,
        &[],
    );
    run_cmd(&mut cmd).ok();
    out
}

/// `run.json` of an output directory.
pub fn run_json(output: &Path) -> serde_json::Value {
    let path = output.join("run.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).expect("run.json is JSON")
}

/// A `u64` field of `run.json`.
#[track_caller]
pub fn json_u64(json: &serde_json::Value, pointer: &str) -> u64 {
    json.pointer(pointer)
        .and_then(serde_json::Value::as_u64)
        .unwrap_or_else(|| panic!("run.json has no integer at {pointer}: {json:#}"))
}

/// One value of a table, as read back from Parquet.
#[derive(Clone, Debug, PartialEq, PartialOrd)]
pub enum Value {
    /// Null.
    Null,
    /// Boolean.
    Bool(bool),
    /// Signed integer (including timestamps, in their unit).
    Int(i64),
    /// Unsigned integer.
    UInt(u64),
    /// Float (from `Float32` or `Float64`).
    Float(f64),
    /// Text.
    Str(String),
    /// A list.
    List(Vec<Value>),
}

impl Value {
    /// The text, or a panic.
    #[track_caller]
    pub fn str(&self) -> &str {
        match self {
            Value::Str(s) => s,
            other => panic!("expected text, found {other:?}"),
        }
    }

    /// The text, or `None` for null.
    #[track_caller]
    pub fn opt_str(&self) -> Option<&str> {
        match self {
            Value::Null => None,
            Value::Str(s) => Some(s),
            other => panic!("expected text or null, found {other:?}"),
        }
    }

    /// The integer (signed or unsigned) as `i64`, or a panic.
    #[track_caller]
    pub fn int(&self) -> i64 {
        match self {
            Value::Int(v) => *v,
            Value::UInt(v) => i64::try_from(*v).expect("fits i64"),
            other => panic!("expected an integer, found {other:?}"),
        }
    }

    /// The float, or a panic.
    #[track_caller]
    pub fn float(&self) -> f64 {
        match self {
            Value::Float(v) => *v,
            other => panic!("expected a float, found {other:?}"),
        }
    }

    /// The boolean, or a panic.
    #[track_caller]
    pub fn bool(&self) -> bool {
        match self {
            Value::Bool(b) => *b,
            other => panic!("expected a boolean, found {other:?}"),
        }
    }
}

fn value(array: &ArrayRef, row: usize) -> Value {
    if array.is_null(row) {
        return Value::Null;
    }
    macro_rules! primitive {
        ($($t:ty => $variant:ident),* $(,)?) => {
            $(
                if let Some(a) = array.as_primitive_opt::<$t>() {
                    return Value::$variant(a.value(row).into());
                }
            )*
        };
    }
    primitive!(
        Int32Type => Int,
        Int64Type => Int,
        TimestampMillisecondType => Int,
        UInt32Type => UInt,
        UInt64Type => UInt,
        Float32Type => Float,
        Float64Type => Float,
    );
    if let Some(a) = array.as_boolean_opt() {
        return Value::Bool(a.value(row));
    }
    if let Some(a) = array.as_string_opt::<i32>() {
        return Value::Str(a.value(row).to_string());
    }
    if let Some(a) = array.as_list_opt::<i32>() {
        let item = a.value(row);
        return Value::List((0..item.len()).map(|i| value(&item, i)).collect());
    }
    panic!("the tests cannot read Arrow type {}", array.data_type())
}

/// A table read back from Parquet files: column names and rows.
#[derive(Clone, Debug, Default)]
pub struct Table {
    /// Column names.
    pub columns: Vec<String>,
    /// Rows, in file order.
    pub rows: Vec<Vec<Value>>,
    /// The files read.
    pub files: Vec<PathBuf>,
    /// Rows per file, in `files` order.
    pub rows_per_file: Vec<usize>,
}

impl Table {
    /// The index of a column, or a panic.
    #[track_caller]
    pub fn col(&self, name: &str) -> usize {
        self.columns
            .iter()
            .position(|c| c == name)
            .unwrap_or_else(|| panic!("no column `{name}` in {:?}", self.columns))
    }

    /// The values of a column.
    #[track_caller]
    pub fn column(&self, name: &str) -> Vec<&Value> {
        let i = self.col(name);
        self.rows.iter().map(|r| &r[i]).collect()
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Rows as sorted strings (exact: floats print with round-trip precision), for
    /// comparing the contents of two tables regardless of file layout and row order.
    pub fn sorted_rows(&self) -> Vec<String> {
        let mut rows: Vec<String> = self.rows.iter().map(|r| format!("{r:?}")).collect();
        rows.sort();
        rows
    }
}

/// Reads one Parquet file.
pub fn read_parquet(path: &Path) -> Table {
    read_parquet_columns(path, None)
}

/// Reads one Parquet file, only the named (top-level) columns if `columns` is given.
pub fn read_parquet_columns(path: &Path, columns: Option<&[&str]>) -> Table {
    let file = File::open(path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    let mut builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap_or_else(|e| panic!("{} is not readable Parquet: {e}", path.display()));
    if let Some(names) = columns {
        let mask = ProjectionMask::columns(builder.parquet_schema(), names.iter().copied());
        builder = builder.with_projection(mask);
    }
    let reader = builder.build().expect("reader builds");
    let mut table = Table {
        columns: reader
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect(),
        ..Table::default()
    };
    let mut rows_in_file = 0;
    for batch in reader {
        let batch: RecordBatch = batch.expect("batch decodes");
        for row in 0..batch.num_rows() {
            table
                .rows
                .push(batch.columns().iter().map(|c| value(c, row)).collect());
        }
        rows_in_file += batch.num_rows();
    }
    table.files.push(path.to_path_buf());
    table.rows_per_file.push(rows_in_file);
    table
}

/// Every visible `*.parquet` file under `dir`, recursively, sorted by path.
pub fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries =
            std::fs::read_dir(&d).unwrap_or_else(|e| panic!("listing {}: {e}", d.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if name.starts_with('.') {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else if name.ends_with(".parquet") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Reads every Parquet file under `dir` as one table.
#[track_caller]
pub fn read_dir_table(dir: &Path) -> Table {
    read_dir_columns(dir, None)
}

/// Reads every Parquet file under `dir` as one table, only the named columns if given.
#[track_caller]
pub fn read_dir_columns(dir: &Path, columns: Option<&[&str]>) -> Table {
    let files = parquet_files(dir);
    assert!(
        !files.is_empty(),
        "no Parquet files under {}",
        dir.display()
    );
    let mut table = Table::default();
    for f in files {
        let t = read_parquet_columns(&f, columns);
        if table.columns.is_empty() {
            table.columns = t.columns;
        } else {
            assert_eq!(
                table.columns,
                t.columns,
                "{} has other columns",
                f.display()
            );
        }
        table.rows.extend(t.rows);
        table.files.extend(t.files);
        table.rows_per_file.extend(t.rows_per_file);
    }
    table
}

/// Reads an output table of a backfill.
#[track_caller]
pub fn output_table(output: &Path, name: &str) -> Table {
    read_dir_table(&output.join(name))
}

/// The rows of the `rejects` table as `(file, row, field, reason)`, sorted by file and row.
pub fn rejects(output: &Path) -> Vec<(String, u64, Option<String>, String)> {
    let t = output_table(output, "rejects");
    let (f, r, fd, rs) = (t.col("file"), t.col("row"), t.col("field"), t.col("reason"));
    let mut out: Vec<_> = t
        .rows
        .iter()
        .map(|row| {
            (
                row[f].str().to_string(),
                row[r].int() as u64,
                row[fd].opt_str().map(str::to_string),
                row[rs].str().to_string(),
            )
        })
        .collect();
    out.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    out
}

/// `YYYY-MM-DD` of a time in ms since the epoch (UTC), computed independently of chrono.
pub fn civil_date(ms: i64) -> String {
    // Howard Hinnant's days-to-civil algorithm.
    let z = ms.div_euclid(86_400_000) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Checks the Hive layout of a partitioned table: every file is
/// `TABLE/date=YYYY-MM-DD/part-*.parquet`, and every row's window (by its start) falls on
/// its partition's date. Returns the partition dates seen.
#[track_caller]
pub fn check_partitions(output: &Path, table: &str, window_ms: i64) -> Vec<String> {
    let dir = output.join(table);
    assert!(dir.is_dir(), "table directory {} is missing", dir.display());
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().to_string();
        assert!(
            name.starts_with("date="),
            "{table}/ holds {name}, not only date=YYYY-MM-DD partitions"
        );
    }
    let mut dates = Vec::new();
    for file in parquet_files(&dir) {
        let rel = file.strip_prefix(&dir).unwrap();
        let parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().to_string())
            .collect();
        assert_eq!(
            parts.len(),
            2,
            "{} is not TABLE/date=.../part",
            file.display()
        );
        let date = parts[0].strip_prefix("date=").unwrap().to_string();
        assert!(
            date.len() == 10 && date.as_bytes()[4] == b'-' && date.as_bytes()[7] == b'-',
            "bad partition name {}",
            parts[0]
        );
        assert!(
            parts[1].starts_with("part-") && parts[1].ends_with(".parquet"),
            "bad file name {}",
            parts[1]
        );
        let t = read_parquet_columns(&file, Some(&["window_end"]));
        let we = t.col("window_end");
        for row in &t.rows {
            assert_eq!(
                civil_date(row[we].int() - window_ms),
                date,
                "a row of {} belongs to another date partition",
                file.display()
            );
        }
        if !dates.contains(&date) {
            dates.push(date);
        }
    }
    dates
}

/// Writes a Parquet file from named columns.
pub fn write_parquet(path: &Path, columns: Vec<(&str, ArrayRef)>, row_group_rows: usize) {
    let batch = RecordBatch::try_from_iter(columns).expect("columns of one length");
    let props = parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(row_group_rows))
        .build();
    let file = File::create(path).unwrap();
    let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(props)).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

/// Entries of `dir` whose names start with `.NAME.staging-` (backfill staging directories).
pub fn staging_dirs(parent: &Path, output_name: &str) -> Vec<String> {
    let prefix = format!(".{output_name}.staging-");
    std::fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with(&prefix))
        .collect()
}

/// Every file under `dir` (relative path -> contents), for "left untouched" checks.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(dir).unwrap().to_path_buf();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

/// `../shared/data` beside the checkout, or `None` (with a note on stderr) when absent.
pub fn shared_data(test: &str) -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "skipping {test}: {} is missing (the real-data fixtures live beside the checkout)",
            dir.display()
        );
        None
    }
}

/// A shipped ingest mapping.
pub fn mapping(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/mappings")
        .join(name)
}
