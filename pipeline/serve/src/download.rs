//! Table downloads: a run's table, filtered by time range, user and segment, its columns
//! chosen, written as Parquet, Arrow IPC (stream), CSV or NDJSON to any `Write`, batch by
//! batch (a table larger than memory is never held whole). The HTTP route streams it.
//!
//! ```
//! use personaflow_serve::download::{DownloadQuery, Format};
//! use std::collections::HashMap;
//! let params: HashMap<String, String> =
//!     [("columns", "user_id,probability"), ("user", "u1"), ("format", "csv")]
//!         .into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
//! let q = DownloadQuery::parse("resonance", &params).unwrap();
//! assert_eq!(q.format, Format::Csv);
//! let bad = DownloadQuery::parse("resonance", &[("columns".to_string(), "nope".to_string())].into()).unwrap_err();
//! assert_eq!(bad.parameter, "columns");
//! assert!(DownloadQuery::parse("../etc", &HashMap::new()).unwrap_err().not_found);
//! ```

use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMillisecondType;
use arrow_array::{Array, BooleanArray, RecordBatch};
use arrow_schema::{Schema, SchemaRef};
use personaflow_io::tables::read::{for_each_batch, parquet_files};
use personaflow_io::tables::{utc_offset_timestamps, Table};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

/// The longest time range one download may ask for (`from` to `to`), ms: 400 days. Without
/// `from` and `to` the whole table is downloaded.
pub const MAX_RANGE_MS: i64 = 400 * 86_400_000;
/// The most rows one download may ask for with `limit`.
pub const MAX_LIMIT: u64 = 1_000_000_000;

/// A download's format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Parquet (zstd).
    Parquet,
    /// Arrow IPC stream.
    Arrow,
    /// CSV with a header; lists as `[a, b]`.
    Csv,
    /// One JSON object per line.
    Ndjson,
}

impl Format {
    /// Every format, by its name.
    pub const ALL: [(&'static str, Format); 4] = [
        ("parquet", Format::Parquet),
        ("arrow", Format::Arrow),
        ("csv", Format::Csv),
        ("ndjson", Format::Ndjson),
    ];

    /// The format's HTTP content type.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Parquet => "application/vnd.apache.parquet",
            Format::Arrow => "application/vnd.apache.arrow.stream",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Ndjson => "application/x-ndjson",
        }
    }

    /// The file extension.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Parquet => "parquet",
            Format::Arrow => "arrows",
            Format::Csv => "csv",
            Format::Ndjson => "ndjson",
        }
    }
}

/// A parameter the download refuses, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadParameter {
    /// The parameter.
    pub parameter: String,
    /// Why.
    pub message: String,
    /// The table does not exist (404 rather than 400).
    pub not_found: bool,
}

fn bad(parameter: &str, message: impl Into<String>) -> BadParameter {
    BadParameter {
        parameter: parameter.to_string(),
        message: message.into(),
        not_found: false,
    }
}

/// What to download.
#[derive(Clone, Debug, PartialEq)]
pub struct DownloadQuery {
    /// The table.
    pub table: Table,
    /// Rows with `from <=` their time ([`Table::time_column`]), ms.
    pub from: Option<i64>,
    /// Rows with their time `<= to`, ms.
    pub to: Option<i64>,
    /// Rows of this user only.
    pub user: Option<String>,
    /// Rows of this segment only.
    pub segment: Option<String>,
    /// The columns, in this order (all when none are named).
    pub columns: Vec<String>,
    /// The format.
    pub format: Format,
    /// At most this many rows.
    pub limit: Option<u64>,
}

/// Epoch milliseconds or RFC 3339.
pub fn parse_time(name: &str, value: &str) -> Result<i64, BadParameter> {
    if let Ok(ms) = value.parse::<i64>() {
        return Ok(ms);
    }
    chrono::DateTime::parse_from_rfc3339(value)
        .map(|t| t.timestamp_millis())
        .map_err(|e| {
            bad(
                name,
                format!("{value:?} is neither epoch milliseconds nor RFC 3339 ({e})"),
            )
        })
}

const PARAMETERS: [&str; 7] = [
    "from", "to", "user", "segment", "columns", "format", "limit",
];

impl DownloadQuery {
    /// Validates a download of `table` with the query parameters `params`.
    pub fn parse(table: &str, params: &HashMap<String, String>) -> Result<Self, BadParameter> {
        let table = Table::from_name(table).ok_or_else(|| BadParameter {
            parameter: "table".into(),
            message: format!(
                "no table {table:?}; the tables are {}",
                Table::ALL.map(|t| t.name()).join(", ")
            ),
            not_found: true,
        })?;
        if let Some(k) = params.keys().find(|k| !PARAMETERS.contains(&k.as_str())) {
            return Err(bad(
                k,
                format!("unknown parameter (expected {})", PARAMETERS.join(", ")),
            ));
        }
        let schema = table.schema();
        let has = |c: &str| schema.field_with_name(c).is_ok();
        let from = params
            .get("from")
            .map(|v| parse_time("from", v))
            .transpose()?;
        let to = params.get("to").map(|v| parse_time("to", v)).transpose()?;
        if let (Some(f), Some(t)) = (from, to) {
            if f > t {
                return Err(bad("from", "from is after to"));
            }
            if t.saturating_sub(f) > MAX_RANGE_MS {
                return Err(bad(
                    "to",
                    format!(
                        "the range spans more than {} days; ask in parts, or leave out from and \
                         to for the whole table",
                        MAX_RANGE_MS / 86_400_000
                    ),
                ));
            }
        }
        if (from.is_some() || to.is_some()) && table.time_column().is_none() {
            return Err(bad(
                if from.is_some() { "from" } else { "to" },
                format!("{} has no time column", table.name()),
            ));
        }
        let user = params.get("user").cloned();
        if user.is_some() && !has("user_id") {
            return Err(bad(
                "user",
                format!("{} has no user_id column", table.name()),
            ));
        }
        let segment = params.get("segment").cloned();
        if segment.is_some() && !has("segment") {
            return Err(bad(
                "segment",
                format!("{} has no segment column", table.name()),
            ));
        }
        let columns: Vec<String> = match params.get("columns") {
            None => Vec::new(),
            Some(list) => {
                let cols: Vec<String> = list.split(',').map(|c| c.trim().to_string()).collect();
                for c in &cols {
                    if !has(c) {
                        return Err(bad(
                            "columns",
                            format!("{} has no column {c:?}", table.name()),
                        ));
                    }
                }
                cols
            }
        };
        let format = match params.get("format") {
            None => Format::Parquet,
            Some(f) => Format::ALL
                .iter()
                .find(|(n, _)| n == f)
                .map(|(_, f)| *f)
                .ok_or_else(|| bad("format", "expected parquet, arrow, csv or ndjson"))?,
        };
        let limit = params
            .get("limit")
            .map(|v| {
                v.parse::<u64>()
                    .ok()
                    .filter(|n| *n <= MAX_LIMIT)
                    .ok_or_else(|| bad("limit", format!("a row count up to {MAX_LIMIT}")))
            })
            .transpose()?;
        Ok(DownloadQuery {
            table,
            from,
            to,
            user,
            segment,
            columns,
            format,
            limit,
        })
    }

    /// The columns downloaded, in order.
    pub fn selected(&self) -> Vec<String> {
        if self.columns.is_empty() {
            self.table
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect()
        } else {
            self.columns.clone()
        }
    }
}

/// The day (`date=YYYY-MM-DD` partition) of a file, as epoch ms of its midnight.
fn partition_day(path: &Path) -> Option<i64> {
    path.components().find_map(|c| {
        let s = c.as_os_str().to_str()?;
        let d = s.strip_prefix("date=")?;
        let date = chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok()?;
        Some(date.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis())
    })
}

/// A writer of one format.
enum Sink<W: Write + Send> {
    Parquet(parquet::arrow::ArrowWriter<W>),
    Arrow(arrow_ipc::writer::StreamWriter<W>),
    Csv(csv::Writer<W>),
    Ndjson(arrow_json::LineDelimitedWriter<W>),
}

/// Errors while writing a download.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// Reading the table failed.
    #[error(transparent)]
    Read(#[from] personaflow_io::Error),
    /// Encoding failed (or the reader went away).
    #[error("writing the download: {0}")]
    Write(String),
}

fn werr(e: impl std::fmt::Display) -> DownloadError {
    DownloadError::Write(e.to_string())
}

impl<W: Write + Send> Sink<W> {
    fn new(format: Format, schema: &SchemaRef, out: W) -> Result<Self, DownloadError> {
        Ok(match format {
            Format::Parquet => {
                let props = parquet::file::properties::WriterProperties::builder()
                    .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
                    .build();
                Sink::Parquet(
                    parquet::arrow::ArrowWriter::try_new(out, schema.clone(), Some(props))
                        .map_err(werr)?,
                )
            }
            Format::Arrow => {
                Sink::Arrow(arrow_ipc::writer::StreamWriter::try_new(out, schema).map_err(werr)?)
            }
            Format::Csv => {
                let mut w = csv::Writer::from_writer(out);
                w.write_record(schema.fields().iter().map(|f| f.name().as_str()))
                    .map_err(werr)?;
                Sink::Csv(w)
            }
            Format::Ndjson => Sink::Ndjson(arrow_json::LineDelimitedWriter::new(out)),
        })
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<(), DownloadError> {
        match self {
            Sink::Parquet(w) => w.write(batch).map_err(werr),
            Sink::Arrow(w) => w.write(batch).map_err(werr),
            Sink::Ndjson(w) => w.write(&utc_offset_timestamps(batch)).map_err(werr),
            Sink::Csv(w) => {
                let batch = utc_offset_timestamps(batch);
                let options = arrow_cast::display::FormatOptions::default();
                let formatters = batch
                    .columns()
                    .iter()
                    .map(|c| arrow_cast::display::ArrayFormatter::try_new(c.as_ref(), &options))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(werr)?;
                let mut record = Vec::with_capacity(formatters.len());
                for row in 0..batch.num_rows() {
                    record.clear();
                    for (f, c) in formatters.iter().zip(batch.columns()) {
                        record.push(if c.is_null(row) {
                            String::new()
                        } else {
                            f.value(row).to_string()
                        });
                    }
                    w.write_record(&record).map_err(werr)?;
                }
                Ok(())
            }
        }
    }

    fn finish(self) -> Result<(), DownloadError> {
        match self {
            Sink::Parquet(w) => w.close().map(|_| ()).map_err(werr),
            Sink::Arrow(mut w) => w.finish().map_err(werr),
            Sink::Csv(mut w) => w.flush().map_err(werr),
            Sink::Ndjson(mut w) => w.finish().map_err(werr),
        }
    }
}

/// Writes `q`'s rows of the run in `outputs` to `out`, file by file and batch by batch;
/// returns the rows written. A table with no files yet is an empty download.
pub fn write_download<W: Write + Send>(
    outputs: &Path,
    q: &DownloadQuery,
    out: W,
) -> Result<u64, DownloadError> {
    let selected = q.selected();
    let full = q.table.schema();
    let schema: SchemaRef = Arc::new(Schema::new(
        selected
            .iter()
            .map(|c| full.field_with_name(c).expect("validated").clone())
            .collect::<Vec<_>>(),
    ));
    // Read the selected columns and those the filters need.
    let mut read: Vec<String> = selected.clone();
    let time = q.table.time_column().unwrap_or("window_end");
    for (c, used) in [
        (time, q.from.is_some() || q.to.is_some()),
        ("user_id", q.user.is_some()),
        ("segment", q.segment.is_some()),
    ] {
        if used && !read.iter().any(|r| r == c) {
            read.push(c.to_string());
        }
    }
    let read_refs: Vec<&str> = read.iter().map(String::as_str).collect();
    let mut sink = Sink::new(q.format, &schema, out)?;
    let dir = outputs.join(q.table.name());
    let files = if dir.is_dir() {
        parquet_files(&dir)?
    } else {
        Vec::new()
    };
    const DAY: i64 = 86_400_000;
    let mut written = 0u64;
    let mut failed: Option<DownloadError> = None;
    for path in files {
        // A window's rows sit in the partition of its start: skip days that cannot hold any.
        if let Some(day) = partition_day(&path) {
            if q.to.is_some_and(|t| day > t) || q.from.is_some_and(|f| day + 2 * DAY < f) {
                continue;
            }
        }
        if failed.is_some() || q.limit.is_some_and(|l| written >= l) {
            break;
        }
        for_each_batch(&path, &read_refs, |b| {
            if failed.is_some() || q.limit.is_some_and(|l| written >= l) {
                return;
            }
            match filtered(b, q, &schema) {
                Ok(Some(batch)) => {
                    let batch = match q.limit {
                        Some(l) if written + batch.num_rows() as u64 > l => {
                            batch.slice(0, (l - written) as usize)
                        }
                        _ => batch,
                    };
                    written += batch.num_rows() as u64;
                    if let Err(e) = sink.write(&batch) {
                        failed = Some(e);
                    }
                }
                Ok(None) => {}
                Err(e) => failed = Some(e),
            }
        })?;
    }
    if let Some(e) = failed {
        return Err(e);
    }
    sink.finish()?;
    Ok(written)
}

/// `b`'s rows that pass `q`'s filters, as `schema`'s columns (`None`: no row passes).
fn filtered(
    b: &RecordBatch,
    q: &DownloadQuery,
    schema: &SchemaRef,
) -> Result<Option<RecordBatch>, DownloadError> {
    let n = b.num_rows();
    let mut keep = vec![true; n];
    if q.from.is_some() || q.to.is_some() {
        let time = q.table.time_column().unwrap_or("window_end");
        let ts = b
            .column_by_name(time)
            .and_then(|c| c.as_primitive_opt::<TimestampMillisecondType>())
            .ok_or_else(|| werr(format!("{time} is not a timestamp")))?;
        let (f, t) = (q.from.unwrap_or(i64::MIN), q.to.unwrap_or(i64::MAX));
        for (k, i) in keep.iter_mut().zip(0..n) {
            *k &= (f..=t).contains(&ts.value(i));
        }
    }
    for (col, want) in [("user_id", &q.user), ("segment", &q.segment)] {
        if let Some(want) = want {
            let s = b
                .column_by_name(col)
                .and_then(|c| c.as_string_opt::<i32>())
                .ok_or_else(|| werr(format!("{col} is not a string")))?;
            for (k, i) in keep.iter_mut().zip(0..n) {
                *k &= s.is_valid(i) && s.value(i) == want.as_str();
            }
        }
    }
    let kept = keep.iter().filter(|k| **k).count();
    if kept == 0 {
        return Ok(None);
    }
    let columns = schema
        .fields()
        .iter()
        .map(|f| {
            b.column_by_name(f.name())
                .cloned()
                .ok_or_else(|| werr(format!("column {} missing from a file", f.name())))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let batch = RecordBatch::try_new(schema.clone(), columns).map_err(werr)?;
    if kept == n {
        return Ok(Some(batch));
    }
    arrow_select::filter::filter_record_batch(&batch, &BooleanArray::from(keep))
        .map(Some)
        .map_err(werr)
}
