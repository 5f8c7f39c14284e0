//! Sources: input files (Parquet, CSV/TSV, whitespace-separated text, NDJSON, Zeek logs) read
//! as validated canonical [`Event`]s, through an [`IngestMapping`].
//!
//! The flow for a batch job:
//!
//! 1. [`resolve_inputs`] turns files, directories and globs into [`InputFile`]s in path order;
//! 2. [`check_input`] on every file, before any output is written: it reads only headers and
//!    Parquet footers, and fails on a missing required column ([`Error::MissingColumn`],
//!    naming file and column) or a corrupt file;
//! 3. [`open_reader`] per file, then [`EventReader::next_chunk`] until it returns `false`.
//!    Records that fail validation become [`Reject`]s, not errors, and reading continues.
//!
//! ```no_run
//! use personaflow_pipeline::source::{
//!     check_input, open_reader, resolve_inputs, IngestMapping, DEFAULT_CHUNK_ROWS,
//! };
//!
//! # fn main() -> personaflow_pipeline::Result<()> {
//! let mapping = IngestMapping::from_toml_file("data/mappings/zeek_conn.toml".as_ref())?;
//! let files = resolve_inputs(&["logs/".to_owned()], &mapping)?;
//! for file in &files {
//!     check_input(file, &mapping)?;
//! }
//! let (mut events, mut rejects) = (Vec::new(), Vec::new());
//! for file in &files {
//!     let mut reader = open_reader(file, &mapping, DEFAULT_CHUNK_ROWS)?;
//!     while reader.next_chunk(&mut events, &mut rejects)? {
//!         // hand `events` on, then
//!         events.clear();
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Validation
//!
//! A record is rejected (with the first offending canonical column, in schema order) when:
//! `user_id` or `action` is missing or blank; `ts` is missing, unparsable, before 1970 or
//! after [`MAX_EVENT_TS_MS`]; `bytes_in`/`bytes_out` is negative, fractional or not a
//! number; `latency_ms` is negative, NaN, infinite or not a number; `status` is not an
//! integer; `authenticated` is not a boolean (`true/false/t/f/yes/no/y/n/1/0`, any case; null
//! is `false`); or the record as a whole is malformed (wrong number of fields, invalid JSON).
//! Text values equal to one of the mapping's null markers are null.

use std::fmt;
use std::path::{Path, PathBuf};

use personaflow_operators::Event;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

mod convert;
mod json_record;
mod mapping;
mod ndjson_reader;
mod parquet_reader;
mod resolve;
mod text_reader;

pub use json_record::{JsonRecordDecoder, RecordError};
pub use mapping::{
    IngestMapping, Literal, TextOptions, TimestampSpec, TsUnit, BUILT_IN_ORIGIN,
    DEFAULT_NULL_MARKERS, DEFAULT_TS_UNIT,
};
pub use resolve::resolve_inputs;

use convert::{Cells, FieldError, N_FIELDS};
use mapping::Compiled;

/// Default number of records a reader returns per [`EventReader::next_chunk`] call (and the
/// Parquet record batch size).
pub const DEFAULT_CHUNK_ROWS: usize = 65_536;

/// The latest accepted event time: 2100-01-01T00:00:00Z, in milliseconds. Later timestamps
/// are almost certainly unit mistakes (e.g. microseconds read as milliseconds).
pub const MAX_EVENT_TS_MS: i64 = 4_102_444_800_000;

/// An input file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Apache Parquet (`.parquet`, `.parq`), read by record batch.
    Parquet,
    /// Comma-separated values with quoting (`.csv`).
    Csv,
    /// Tab-separated values (`.tsv`, `.tab`).
    Tsv,
    /// One JSON object per line (`.ndjson`, `.jsonl`, `.json`).
    Ndjson,
    /// Zeek (Bro) ASCII logs with `#separator`/`#fields`/`#types` headers (`.log`).
    Zeek,
    /// Fields separated by runs of spaces or tabs, no quoting (e.g. the CDNOW log); only
    /// chosen by a mapping's `format`.
    Whitespace,
}

impl Format {
    /// The format for a file extension (case-insensitive), if it is one of ours.
    pub fn from_extension(ext: &str) -> Option<Format> {
        const TABLE: [(&str, Format); 9] = [
            ("parquet", Format::Parquet),
            ("parq", Format::Parquet),
            ("csv", Format::Csv),
            ("tsv", Format::Tsv),
            ("tab", Format::Tsv),
            ("ndjson", Format::Ndjson),
            ("jsonl", Format::Ndjson),
            ("json", Format::Ndjson),
            ("log", Format::Zeek),
        ];
        TABLE
            .iter()
            .find(|(e, _)| ext.eq_ignore_ascii_case(e))
            .map(|(_, f)| *f)
    }

    /// The format of a path from its extension, if known.
    pub fn from_path(path: &Path) -> Option<Format> {
        path.extension()
            .and_then(|e| e.to_str())
            .and_then(Format::from_extension)
    }

    /// The lowercase name used in mappings.
    pub fn name(self) -> &'static str {
        match self {
            Format::Parquet => "parquet",
            Format::Csv => "csv",
            Format::Tsv => "tsv",
            Format::Ndjson => "ndjson",
            Format::Zeek => "zeek",
            Format::Whitespace => "whitespace",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One input file to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputFile {
    /// Its path.
    pub path: PathBuf,
    /// Its format.
    pub format: Format,
    /// Its size when resolved, in bytes.
    pub size_bytes: u64,
}

impl InputFile {
    /// An input file of the given format; reads its size.
    pub fn new(path: impl Into<PathBuf>, format: Format) -> Result<Self> {
        let path = path.into();
        let size_bytes = std::fs::metadata(&path)
            .map_err(|e| Error::io(&path, e))?
            .len();
        Ok(InputFile {
            path,
            format,
            size_bytes,
        })
    }
}

/// A record that failed validation. Rejects are data: they go to the rejects output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reject {
    /// The input file.
    pub file: String,
    /// 1-based number of the record in the file, counting data records only (not headers,
    /// comments or blank lines); for Parquet, the row number in the file.
    pub row: u64,
    /// The canonical column that failed, or `None` when the record as a whole is malformed.
    pub field: Option<String>,
    /// Why.
    pub reason: String,
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: record {}", self.file, self.row)?;
        if let Some(field) = &self.field {
            write!(f, ": {field}")?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// Reads one input file as canonical events, a chunk at a time.
pub trait EventReader: Send {
    /// Appends up to the reader's chunk size of records to `events` (valid ones) and
    /// `rejects` (invalid ones); neither is cleared. Returns `Ok(false)` when the input is
    /// exhausted and nothing was appended, `Ok(true)` otherwise (a chunk may hold only
    /// rejects). An `Err` (I/O, corrupt Parquet page) names the file; don't call again after it.
    fn next_chunk(&mut self, events: &mut Vec<Event>, rejects: &mut Vec<Reject>) -> Result<bool>;

    /// Data records consumed so far (events plus rejects).
    fn rows_read(&self) -> u64;
}

/// Opens a reader for `file` through `mapping`, returning at most `chunk_rows` records per
/// [`EventReader::next_chunk`] (0 means [`DEFAULT_CHUNK_ROWS`]). Performs the checks of
/// [`check_input`] first.
pub fn open_reader(
    file: &InputFile,
    mapping: &IngestMapping,
    chunk_rows: usize,
) -> Result<Box<dyn EventReader>> {
    let compiled = mapping.compile()?;
    let chunk_rows = if chunk_rows == 0 {
        DEFAULT_CHUNK_ROWS
    } else {
        chunk_rows
    };
    Ok(match file.format {
        Format::Parquet => Box::new(parquet_reader::ParquetReader::open(
            &file.path, compiled, chunk_rows,
        )?),
        Format::Ndjson => {
            ndjson_reader::check(&file.path, &compiled)?;
            Box::new(ndjson_reader::NdjsonReader::open(
                &file.path, compiled, chunk_rows,
            )?)
        }
        Format::Csv | Format::Tsv | Format::Whitespace | Format::Zeek => Box::new(
            text_reader::TextReader::open(&file.path, file.format, compiled, chunk_rows)?,
        ),
    })
}

/// Checks that `file` can be read through `mapping`, reading only its header (Parquet: its
/// footer; NDJSON: its first JSON object): every required canonical column (and every column
/// the mapping renames explicitly) must be present, else [`Error::MissingColumn`] names the
/// file and the column; a corrupt or truncated Parquet file is [`Error::Parquet`]; other
/// malformed files are [`Error::BadInput`]. Call it for every file before writing output.
pub fn check_input(file: &InputFile, mapping: &IngestMapping) -> Result<()> {
    let compiled = mapping.compile()?;
    match file.format {
        Format::Parquet => parquet_reader::ParquetReader::check(&file.path, &compiled),
        Format::Ndjson => ndjson_reader::check(&file.path, &compiled),
        Format::Csv | Format::Tsv | Format::Whitespace | Format::Zeek => {
            text_reader::TextReader::open(&file.path, file.format, compiled, 1).map(drop)
        }
    }
}

/// Finds the input column of every canonical column in `header`: indices per canonical
/// column, or the `MissingColumn` error for the first required (or explicitly renamed) column
/// the header lacks. `required_only` skips explicit optional renames (for NDJSON, whose
/// objects may simply omit null keys).
pub(crate) fn locate_columns(
    path: &Path,
    compiled: &Compiled,
    header: &[&str],
    required_only: bool,
) -> Result<[Option<usize>; N_FIELDS]> {
    let mut indices = [None; N_FIELDS];
    for (i, source) in compiled.sources.iter().enumerate() {
        let Some(source) = source else { continue };
        let found = header.iter().position(|h| *h == source.name);
        let canonical = crate::schema::CANONICAL_COLUMNS[i];
        let required = crate::schema::REQUIRED_COLUMNS.contains(&canonical);
        match found {
            Some(idx) => indices[i] = Some(idx),
            None if required || (source.explicit && !required_only) => {
                return Err(missing_column(
                    path,
                    compiled,
                    canonical,
                    &source.name,
                    header,
                ));
            }
            None => {}
        }
    }
    Ok(indices)
}

/// The error for a canonical column whose source column is absent.
pub(crate) fn missing_column(
    path: &Path,
    compiled: &Compiled,
    canonical: &str,
    source: &str,
    header: &[&str],
) -> Error {
    let mut found: Vec<&str> = header.iter().copied().take(MAX_LISTED_COLUMNS).collect();
    if header.len() > MAX_LISTED_COLUMNS {
        found.push("…");
    }
    let from = if source == canonical {
        String::new()
    } else {
        format!(" (mapped from source column `{source}`)")
    };
    Error::MissingColumn {
        path: path.to_path_buf(),
        column: canonical.to_owned(),
        hint: format!(
            "{from}; the input has columns [{}]; mapping: {}",
            found.join(", "),
            compiled.origin.display()
        ),
    }
}

/// How many input column names a missing-column message lists.
const MAX_LISTED_COLUMNS: usize = 32;

/// Records one converted row as an event or a reject.
pub(crate) fn push_row(
    result: std::result::Result<Event, FieldError>,
    file: &str,
    row: u64,
    events: &mut Vec<Event>,
    rejects: &mut Vec<Reject>,
) {
    match result {
        Ok(event) => events.push(event),
        Err(e) => rejects.push(Reject {
            file: file.to_owned(),
            row,
            field: e.field.map(str::to_owned),
            reason: e.reason,
        }),
    }
}

/// A reject of a whole record (no single field is to blame).
pub(crate) fn record_error(reason: String) -> FieldError {
    FieldError {
        field: None,
        reason,
    }
}

/// An all-null row of cells.
pub(crate) fn null_cells<'a>() -> Cells<'a> {
    [convert::Cell::Null; N_FIELDS]
}

#[cfg(test)]
mod tests;
