//! Writing a simulation to a directory: time-partitioned event Parquet files and the truth.
//!
//! ```text
//! DIR/events/date=YYYY-MM-DD/part-00000.parquet   rows sorted by ts within and across files
//! DIR/truth/users.parquet                         user_id, segment, authenticated
//! DIR/truth/drifts.json                           the drift injections ([] when none)
//! DIR/truth/incidents.json                        the segment-wide error incidents
//! ```

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{ArrayRef, BooleanArray, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use chrono::{DateTime, SecondsFormat};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use personaflow_operators::Event;
use serde::Serialize;

use super::drift::DriftRecord;
use super::{SimulationConfig, Simulator, UserTruth, DAY_MS};
use personaflow_io::schema::{event_schema, events_to_batch};
use personaflow_io::{Error, OutputErrorKind, Result};

/// Directory (under the output directory) of the event files.
pub const EVENTS_DIR: &str = "events";
/// Directory (under the output directory) of the truth files.
pub const TRUTH_DIR: &str = "truth";
/// File (under [`TRUTH_DIR`]) of the users' segments and authentication.
pub const USERS_FILE: &str = "users.parquet";
/// File (under [`TRUTH_DIR`]) of the drift injections.
pub const DRIFTS_FILE: &str = "drifts.json";
/// File (under [`TRUTH_DIR`]) of the segment-wide incidents.
pub const INCIDENTS_FILE: &str = "incidents.json";

/// What [`simulate_to_dir`] wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct SimulationSummary {
    /// Number of users (including those without events).
    pub users: usize,
    /// Number of authenticated users.
    pub authenticated_users: usize,
    /// Number of events written.
    pub events: u64,
    /// Events per segment (of all users, authenticated or not).
    pub events_per_segment: BTreeMap<String, u64>,
    /// The event files, in time (and path) order.
    pub event_files: Vec<PathBuf>,
    /// The users truth file.
    pub users_file: PathBuf,
    /// The drifts truth file.
    pub drifts_file: PathBuf,
    /// The incidents truth file.
    pub incidents_file: PathBuf,
    /// Time of the first event, milliseconds since the epoch.
    pub first_ts_ms: Option<i64>,
    /// Time of the last event, milliseconds since the epoch.
    pub last_ts_ms: Option<i64>,
    /// Start of the simulated period, milliseconds since the epoch.
    pub start_ms: i64,
    /// End (exclusive) of the simulated period, milliseconds since the epoch.
    pub end_ms: i64,
}

/// Runs the simulation of `config` and writes it under `dir` (layout in the module docs
/// above). `progress` is called after every chunk with the number of events written so far.
///
/// Refuses (with [`Error::Output`]) an existing non-empty `dir/events` unless
/// `config.overwrite` is set, in which case that directory is removed first. Every file is
/// written under a temporary name in its directory and renamed when complete.
pub fn simulate_to_dir(
    config: &SimulationConfig,
    dir: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<SimulationSummary> {
    let mut simulator = Simulator::new(config)?;
    let events_dir = dir.join(EVENTS_DIR);
    prepare_events_dir(&events_dir, config.overwrite)?;

    let mut writer = PartitionedWriter::new(events_dir, config);
    let mut first_ts_ms = None;
    let mut last_ts_ms = None;
    while let Some(chunk) = simulator.next_chunk() {
        first_ts_ms = first_ts_ms.or(chunk.first().map(|e| e.ts_ms));
        last_ts_ms = chunk.last().map(|e| e.ts_ms).or(last_ts_ms);
        if let Err(e) = writer.append(&chunk) {
            writer.abort();
            return Err(e);
        }
        progress(simulator.events_emitted());
    }
    let event_files = writer.finish()?;

    let truth_dir = dir.join(TRUTH_DIR);
    fs::create_dir_all(&truth_dir).map_err(|e| Error::io(&truth_dir, e))?;
    let users_file = truth_dir.join(USERS_FILE);
    write_users(&users_file, simulator.truth())?;
    let drifts_file = truth_dir.join(DRIFTS_FILE);
    write_json(&drifts_file, &drift_records(config))?;
    let incidents_file = truth_dir.join(INCIDENTS_FILE);
    write_json(&incidents_file, &simulator.incidents())?;

    Ok(SimulationSummary {
        users: simulator.truth().len(),
        authenticated_users: simulator.truth().iter().filter(|u| u.authenticated).count(),
        events: simulator.events_emitted(),
        events_per_segment: simulator.events_per_segment(),
        event_files,
        users_file,
        drifts_file,
        incidents_file,
        first_ts_ms,
        last_ts_ms,
        start_ms: simulator.start_ms(),
        end_ms: simulator.end_ms(),
    })
}

/// RFC 3339 (UTC, milliseconds) of a time, or the number when out of range.
fn rfc3339(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |t| t.to_rfc3339_opts(SecondsFormat::Millis, true),
    )
}

fn drift_records(config: &SimulationConfig) -> Vec<DriftRecord> {
    let mut drifts: Vec<&super::DriftSpec> = config.drifts.iter().collect();
    drifts.sort_by_key(|d| d.start_offset_ms);
    drifts
        .into_iter()
        .map(|d| {
            let start_ms = config.start_ms.saturating_add(d.start_offset_ms);
            DriftRecord {
                segment: d.segment.clone(),
                start: rfc3339(start_ms),
                start_ms,
                start_offset_ms: d.start_offset_ms,
                ramp_ms: d.ramp_ms,
                kind: d.kind.name(),
                toward: match &d.kind {
                    super::DriftKind::Mix { toward } => Some(toward.clone()),
                    _ => None,
                },
                magnitude: d.magnitude,
            }
        })
        .collect()
}

/// Makes sure `events_dir` exists and is empty (removing it first when `overwrite`).
pub fn prepare_events_dir(events_dir: &Path, overwrite: bool) -> Result<()> {
    if events_dir.exists() {
        if !events_dir.is_dir() {
            return Err(Error::output(events_dir, OutputErrorKind::NotADirectory));
        }
        let mut entries = fs::read_dir(events_dir).map_err(|e| Error::io(events_dir, e))?;
        if entries.next().is_some() {
            if !overwrite {
                return Err(Error::output(
                    events_dir,
                    OutputErrorKind::NotEmptyNoOverwrite,
                ));
            }
            fs::remove_dir_all(events_dir).map_err(|e| Error::io(events_dir, e))?;
        }
    }
    fs::create_dir_all(events_dir).map_err(|e| Error::io(events_dir, e))
}

/// The temporary name of `path`: hidden, in the same directory.
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{name}.tmp"))
}

/// Flushes `file` to disk and renames `temp` to `path`.
fn commit(file: File, temp: &Path, path: &Path) -> Result<()> {
    file.sync_all().map_err(|e| Error::io(temp, e))?;
    drop(file);
    fs::rename(temp, path).map_err(|e| Error::io(path, e))
}

/// The events' session column, written without a dictionary.
const SESSION_ID_COLUMN: &str = "session_id";

fn writer_properties(row_group_rows: usize) -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(row_group_rows.max(1)))
        // Session ids are nearly all distinct within a file: a dictionary of them outgrows its
        // page and falls back to plain encoding anyway, after hashing every one (12–20% of
        // the synthetic event writer's time, BENCHMARKS.md).
        .set_column_dictionary_enabled(SESSION_ID_COLUMN.into(), false)
        .build()
}

/// Writes `truth` to `path` (`user_id`, `segment`, `authenticated`), atomically.
fn write_users(path: &Path, truth: &[UserTruth]) -> Result<()> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Utf8, false),
        Field::new("segment", DataType::Utf8, false),
        Field::new("authenticated", DataType::Boolean, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            truth.iter().map(|u| &u.user_id),
        )),
        Arc::new(StringArray::from_iter_values(
            truth.iter().map(|u| &u.segment),
        )),
        Arc::new(BooleanArray::from(
            truth.iter().map(|u| u.authenticated).collect::<Vec<_>>(),
        )),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns).map_err(|source| Error::Arrow {
        path: path.to_path_buf(),
        source,
    })?;
    let temp = temp_path(path);
    let file = File::create(&temp).map_err(|e| Error::io(&temp, e))?;
    let props = writer_properties(truth.len());
    let mut writer =
        ArrowWriter::try_new(file, schema, Some(props)).map_err(|e| Error::parquet(&temp, e))?;
    writer.write(&batch).map_err(|e| Error::parquet(&temp, e))?;
    let file = writer.into_inner().map_err(|e| Error::parquet(&temp, e))?;
    commit(file, &temp, path)
}

/// Writes `value` as pretty JSON to `path`, atomically.
fn write_json<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    let mut text = serde_json::to_vec_pretty(value)
        .map_err(|e| Error::output(path, OutputErrorKind::Json(e)))?;
    text.push(b'\n');
    let temp = temp_path(path);
    let mut file = File::create(&temp).map_err(|e| Error::io(&temp, e))?;
    file.write_all(&text).map_err(|e| Error::io(&temp, e))?;
    commit(file, &temp, path)
}

/// A Parquet file being written: its day, part number, rows so far and names.
struct OpenPart {
    day: i64,
    part: usize,
    rows: usize,
    writer: ArrowWriter<File>,
    temp: PathBuf,
    path: PathBuf,
}

/// Appends time-ordered events to `date=YYYY-MM-DD/part-NNNNN.parquet` files, starting a new
/// part when one is full and a new directory when the day changes.
/// Writes events, appended in time order, as `ROOT/date=YYYY-MM-DD/part-NNNNN.parquet` (the
/// layout of a simulation's `events/`): each file written under a temporary name and renamed
/// when complete. Used by the simulator and by the synthetic-user generator.
pub struct PartitionedWriter {
    root: PathBuf,
    props: WriterProperties,
    rows_per_file: usize,
    row_group_rows: usize,
    open: Option<OpenPart>,
    files: Vec<PathBuf>,
}

impl std::fmt::Debug for PartitionedWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionedWriter")
            .field("root", &self.root)
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl PartitionedWriter {
    fn new(root: PathBuf, config: &SimulationConfig) -> Self {
        PartitionedWriter::with_sizes(root, config.rows_per_file, config.row_group_rows)
    }

    /// A writer under `root` with at most `rows_per_file` rows per file and
    /// `row_group_rows` per row group.
    pub fn with_sizes(root: PathBuf, rows_per_file: usize, row_group_rows: usize) -> Self {
        PartitionedWriter {
            root,
            props: writer_properties(row_group_rows),
            rows_per_file: rows_per_file.max(1),
            row_group_rows: row_group_rows.max(1),
            open: None,
            files: Vec::new(),
        }
    }

    /// Appends events sorted by time (and later than everything appended before).
    pub fn append(&mut self, events: &[Event]) -> Result<()> {
        let mut rest = events;
        while let Some(first) = rest.first() {
            let day = first.ts_ms.div_euclid(DAY_MS);
            let day_end = (day + 1) * DAY_MS;
            let same_day = rest.partition_point(|e| e.ts_ms < day_end);
            let (today, later) = rest.split_at(same_day);
            self.append_day(day, today.len(), |at, n| {
                events_to_batch(&today[at..at + n])
            })?;
            rest = later;
        }
        Ok(())
    }

    /// Appends a batch of the canonical event columns
    /// ([`personaflow_io::schema::event_schema`]) sorted by `ts` (and later than everything
    /// appended before), without going through [`Event`]s.
    pub fn append_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        use arrow_array::cast::AsArray;
        use arrow_array::types::TimestampMillisecondType;
        let ts = batch
            .column(0)
            .as_primitive_opt::<TimestampMillisecondType>()
            .ok_or_else(|| {
                Error::parquet(
                    &self.root,
                    parquet::errors::ParquetError::General(
                        "an event batch's first column is not its millisecond timestamps".into(),
                    ),
                )
            })?
            .values();
        let mut at = 0;
        while at < ts.len() {
            let day = ts[at].div_euclid(DAY_MS);
            let day_end = (day + 1) * DAY_MS;
            let end = at + ts[at..].partition_point(|t| *t < day_end);
            self.append_day(day, end - at, |from, n| batch.slice(at + from, n))?;
            at = end;
        }
        Ok(())
    }

    /// Writes `rows` rows of `day`, `batch_of(offset, len)` making the batch of each run of
    /// them, into as many parts and row groups as they need.
    fn append_day(
        &mut self,
        day: i64,
        rows: usize,
        batch_of: impl Fn(usize, usize) -> RecordBatch,
    ) -> Result<()> {
        let mut done = 0;
        while done < rows {
            let part = match &self.open {
                Some(open) if open.day == day && open.rows < self.rows_per_file => None,
                Some(open) if open.day == day => Some(open.part + 1),
                _ => Some(0),
            };
            if let Some(part) = part {
                self.close()?;
                self.open = Some(self.open_part(day, part)?);
            }
            let Some(open) = self.open.as_mut() else {
                continue;
            };
            let take = (self.rows_per_file - open.rows)
                .min(self.row_group_rows)
                .min(rows - done);
            let batch = batch_of(done, take);
            open.writer
                .write(&batch)
                .map_err(|e| Error::parquet(&open.temp, e))?;
            open.rows += take;
            done += take;
        }
        Ok(())
    }

    fn open_part(&self, day: i64, part: usize) -> Result<OpenPart> {
        let date = DateTime::from_timestamp_millis(day * DAY_MS)
            .map(|d| d.format("%Y-%m-%d").to_string())
            .ok_or_else(|| Error::output(&self.root, OutputErrorKind::DayOutOfRange(day)))?;
        let dir = self.root.join(format!("date={date}"));
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let path = dir.join(format!("part-{part:05}.parquet"));
        let temp = temp_path(&path);
        let file = File::create(&temp).map_err(|e| Error::io(&temp, e))?;
        let writer = ArrowWriter::try_new(file, event_schema(), Some(self.props.clone()))
            .map_err(|e| Error::parquet(&temp, e))?;
        Ok(OpenPart {
            day,
            part,
            rows: 0,
            writer,
            temp,
            path,
        })
    }

    /// Completes the open part, if any, and renames it to its final name.
    fn close(&mut self) -> Result<()> {
        if let Some(open) = self.open.take() {
            let file = open
                .writer
                .into_inner()
                .map_err(|e| Error::parquet(&open.temp, e))?;
            commit(file, &open.temp, &open.path)?;
            self.files.push(open.path);
        }
        Ok(())
    }

    /// Completes the last part and returns every file written, in order.
    pub fn finish(mut self) -> Result<Vec<PathBuf>> {
        self.close()?;
        Ok(self.files)
    }

    /// Drops the open part's temporary file after an error (best effort).
    pub fn abort(&mut self) {
        if let Some(open) = self.open.take() {
            drop(open.writer);
            // Best effort: the error that made us abort is what the caller reports.
            let _ = fs::remove_file(&open.temp);
        }
    }
}
