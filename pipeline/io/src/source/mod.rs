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
//! use personaflow_io::source::{
//!     check_input, open_reader, resolve_inputs, Chunk, IngestMapping, DEFAULT_CHUNK_ROWS,
//! };
//!
//! # fn main() -> personaflow_io::Result<()> {
//! let mapping = IngestMapping::from_toml_file("data/mappings/zeek_conn.toml".as_ref())?;
//! let files = resolve_inputs(&["logs/".to_owned()], &mapping)?;
//! for file in &files {
//!     check_input(file, &mapping)?;
//! }
//! let mut chunk = Chunk::default();
//! for file in &files {
//!     let mut reader = open_reader(file, &mapping, DEFAULT_CHUNK_ROWS)?;
//!     while reader.next_chunk(&mut chunk)? {
//!         // hand `chunk.events` (and `chunk.rejects`) on, then
//!         chunk.clear();
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
//! after [`MAX_EVENT_TS_MS`]; `bytes_in`/`bytes_out` is negative, fractional, not a number
//! or above [`MAX_EVENT_BYTES`]; `latency_ms` is negative, NaN, infinite, not a number or
//! above [`MAX_EVENT_LATENCY_MS`]; `status` is not an
//! integer; `authenticated` is not a boolean (`true/false/t/f/yes/no/y/n/1/0`, any case; null
//! is `false`); or the record as a whole is malformed (wrong number of fields, invalid JSON, a
//! JSON object with a key twice).
//! Text values equal to one of the mapping's null markers are null.
//!
//! # Compressed and odd files
//!
//! Text inputs named `*.gz` (`events.csv.gz`, `conn.log.gz`) are decompressed as they are
//! read, their format told by the name without `.gz`. A file whose first bytes say it is
//! gzip-compressed but whose name does not end in `.gz`, UTF-16 text, or a binary file, is
//! refused by name ([`Error::BadInput`]) before anything is read.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use personaflow_operators::Event;
use serde::{Deserialize, Serialize};

use crate::{Error, InputErrorKind, Result};

mod convert;
mod json_record;
mod mapping;
pub mod merge;
mod ndjson_reader;
mod parquet_reader;
mod resolve;
mod text_reader;

pub use json_record::{event_json, JsonRecordDecoder, RecordError};
pub use mapping::{
    IngestMapping, Literal, TextOptions, TimestampSpec, TsUnit, BUILT_IN_ORIGIN,
    DEFAULT_NULL_MARKERS, DEFAULT_TS_UNIT,
};
pub use merge::{Merged, TimeOrdered};
pub use resolve::resolve_inputs;

use convert::{Cells, FieldError, N_FIELDS};
use mapping::Compiled;

/// Default number of records a reader returns per [`EventReader::next_chunk`] call (and the
/// Parquet record batch size).
pub const DEFAULT_CHUNK_ROWS: usize = 65_536;

/// The latest accepted event time: 2100-01-01T00:00:00Z, in milliseconds. Later timestamps
/// are almost certainly unit mistakes (e.g. microseconds read as milliseconds).
pub const MAX_EVENT_TS_MS: i64 = 4_102_444_800_000;

/// The largest byte count (`bytes_in`, `bytes_out`) one event may carry: 2^50 bytes (1 PiB).
/// Larger values are rejected: no single request moves that much, and values such as
/// 18446744073709551615 (`u64::MAX`) are usually placeholders for "unknown" (map them to
/// null with a null marker). Summed over a window, bounded counts cannot overflow.
pub const MAX_EVENT_BYTES: u64 = 1 << 50;

/// The largest latency one event may carry, in ms: 365 days (Zeek's `duration` of a
/// long-lived connection stays well below it). Larger values are rejected.
pub const MAX_EVENT_LATENCY_MS: f64 = 365.0 * 86_400_000.0;

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

    /// The format of a path from its extension, if known; a `.gz` extension is looked
    /// through (`events.csv.gz` is CSV).
    pub fn from_path(path: &Path) -> Option<Format> {
        let path = if is_gzip_name(path) {
            Path::new(path.file_stem()?)
        } else {
            path
        };
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

/// The code of a late event's rejection (its reason starts with `late:`).
pub const LATE_CODE: &str = "late";
/// The code of a record rejected as a whole (no single field is to blame).
pub const MALFORMED_CODE: &str = "malformed_record";

impl Reject {
    /// A fixed code for the kind of rejection: `late`, `malformed_record`, or
    /// `invalid_<field>` (e.g. `invalid_ts`). There are at most as many codes as canonical
    /// columns plus two, whatever the reasons say, so counts by code stay small.
    pub fn code(&self) -> String {
        if self.reason.starts_with("late:") {
            return LATE_CODE.to_owned();
        }
        match &self.field {
            Some(field) => format!("invalid_{field}"),
            None => MALFORMED_CODE.to_owned(),
        }
    }
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

/// What a reader appends per [`EventReader::next_chunk`]: valid events with their row
/// numbers, and rejects.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Chunk {
    /// Valid events, in record order.
    pub events: Vec<Event>,
    /// The row of each event in its file (as [`Reject::row`] numbers rows).
    pub rows: Vec<u64>,
    /// Records that failed validation.
    pub rejects: Vec<Reject>,
}

impl Chunk {
    /// Empties the chunk, keeping its allocations.
    pub fn clear(&mut self) {
        self.events.clear();
        self.rows.clear();
        self.rejects.clear();
    }

    /// Records read into it: events plus rejects.
    pub fn records(&self) -> usize {
        self.events.len() + self.rejects.len()
    }
}

/// Reads one input file as canonical events, a chunk at a time.
pub trait EventReader: Send {
    /// Appends up to the reader's chunk size of records to `chunk` (nothing is cleared).
    /// Returns `Ok(false)` when the input is exhausted and nothing was appended, `Ok(true)`
    /// otherwise (a chunk may hold only rejects). An `Err` (I/O, corrupt Parquet page, an
    /// unterminated quote) names the file; don't call again after it.
    fn next_chunk(&mut self, chunk: &mut Chunk) -> Result<bool>;

    /// Data records consumed so far (events plus rejects).
    fn rows_read(&self) -> u64;

    /// Bytes of the file consumed so far (of the file on disk, compressed or not; for
    /// Parquet, estimated from the rows read), for progress reports.
    fn bytes_read(&self) -> u64;
}

/// Records per chunk: `chunk_rows`, or [`DEFAULT_CHUNK_ROWS`] for 0.
fn chunk_size(chunk_rows: usize) -> usize {
    if chunk_rows == 0 {
        DEFAULT_CHUNK_ROWS
    } else {
        chunk_rows
    }
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
    let chunk_rows = chunk_size(chunk_rows);
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

/// Opens a reader of an input held in memory, `bytes` in the text format `format` (CSV, TSV,
/// whitespace, Zeek or NDJSON; `name` stands for its file in messages and rejects, and a
/// `.gz` name means gzip data): the same decoding and validation as [`open_reader`] on a file.
/// For decoding what came from elsewhere than a file, and for fuzzing the decoders.
///
/// ```
/// use personaflow_io::source::{open_bytes, Chunk, Format, IngestMapping};
/// let csv = b"ts,user_id,action\n1767571200000,u1,view\nnot-a-time,u2,view\n".to_vec();
/// let mut reader = open_bytes("mem.csv", csv, Format::Csv, &IngestMapping::identity(), 0).unwrap();
/// let mut chunk = Chunk::default();
/// while reader.next_chunk(&mut chunk).unwrap() {}
/// assert_eq!((chunk.events.len(), chunk.rejects.len()), (1, 1));
/// assert_eq!(chunk.rejects[0].row, 2);
/// ```
pub fn open_bytes(
    name: &str,
    bytes: Vec<u8>,
    format: Format,
    mapping: &IngestMapping,
    chunk_rows: usize,
) -> Result<Box<dyn EventReader>> {
    let compiled = mapping.compile()?;
    let chunk_rows = chunk_size(chunk_rows);
    let path = Path::new(name);
    let (input, count) = text_input(path, std::io::Cursor::new(bytes))?;
    Ok(match format {
        Format::Parquet => return Err(Error::bad_input(path, InputErrorKind::ParquetFromBytes)),
        Format::Ndjson => Box::new(ndjson_reader::NdjsonReader::from_input(
            path, input, count, compiled, chunk_rows,
        )),
        Format::Csv | Format::Tsv | Format::Whitespace | Format::Zeek => Box::new(
            text_reader::TextReader::from_input(path, input, count, format, compiled, chunk_rows)?,
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
    check_unique_columns(path, header)?;
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

/// Refuses a header in which a (non-empty) column name appears more than once: which of them
/// a mapping means is ambiguous, and readers of the file disagree on it. Empty names (as
/// trailing delimiters make) are not names.
fn check_unique_columns(path: &Path, header: &[&str]) -> Result<()> {
    for (first, name) in header.iter().enumerate() {
        if name.is_empty() || header[..first].contains(name) {
            continue;
        }
        let positions: Vec<usize> = header
            .iter()
            .enumerate()
            .filter(|(_, h)| *h == name)
            .map(|(i, _)| i + 1)
            .collect();
        if positions.len() > 1 {
            let name = printable(name.as_bytes());
            return Err(Error::bad_input(
                path,
                InputErrorKind::DuplicateColumn { name, positions },
            ));
        }
    }
    Ok(())
}

/// The error for a canonical column whose source column is absent.
pub(crate) fn missing_column(
    path: &Path,
    compiled: &Compiled,
    canonical: &str,
    source: &str,
    header: &[&str],
) -> Error {
    let mut found: Vec<String> = header
        .iter()
        .take(MAX_LISTED_COLUMNS)
        .map(|h| printable(h.as_bytes()))
        .collect();
    if header.len() > MAX_LISTED_COLUMNS {
        found.push("…".to_owned());
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
    chunk: &mut Chunk,
) {
    match result {
        Ok(event) => {
            chunk.events.push(event);
            chunk.rows.push(row);
        }
        Err(e) => chunk.rejects.push(Reject {
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

/// Whether a path's name ends in `.gz`.
pub(crate) fn is_gzip_name(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gz"))
}

/// The first bytes of a gzip stream.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// Bytes looked at to tell text from binary.
const SNIFF_BYTES: usize = 4096;

/// Counts the bytes read through it (shared, for progress reports from another handle).
#[derive(Debug)]
pub(crate) struct CountingRead<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for CountingRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Opens a text input for reading: decompressed if its name ends in `.gz`, after checking
/// that its first bytes are text (refusing, by name, gzip data under another name, UTF-16
/// and binary files). Returns the reader and a counter of the bytes read from the file.
pub(crate) fn open_text(path: &Path) -> Result<(Box<dyn Read + Send>, Arc<AtomicU64>)> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    text_input(path, file)
}

/// A text input from any reader (`path` names it in messages and tells `.gz`): see
/// [`open_text`].
pub(crate) fn text_input(
    path: &Path,
    input: impl Read + Send + 'static,
) -> Result<(Box<dyn Read + Send>, Arc<AtomicU64>)> {
    let count = Arc::new(AtomicU64::new(0));
    let counted = CountingRead {
        inner: input,
        count: count.clone(),
    };
    let mut reader: Box<dyn Read + Send> = if is_gzip_name(path) {
        Box::new(flate2::read::MultiGzDecoder::new(counted))
    } else {
        Box::new(counted)
    };
    // Look at the first bytes, then hand them back in front of the rest.
    let mut head = Vec::with_capacity(SNIFF_BYTES);
    (&mut reader)
        .take(SNIFF_BYTES as u64)
        .read_to_end(&mut head)
        .map_err(|e| {
            if is_gzip_name(path) && e.kind() == std::io::ErrorKind::InvalidInput {
                Error::bad_input(path, InputErrorKind::NotGzip(e))
            } else {
                Error::io(path, e)
            }
        })?;
    check_text_head(path, &head)?;
    Ok((Box::new(std::io::Cursor::new(head).chain(reader)), count))
}

/// Refuses the start of a text file that is not UTF-8 text.
fn check_text_head(path: &Path, head: &[u8]) -> Result<()> {
    let refuse = |kind| Err(Error::bad_input(path, kind));
    if head.starts_with(&GZIP_MAGIC) {
        return refuse(InputErrorKind::GzipWithoutGzName);
    }
    if head.starts_with(b"\xFF\xFE") || head.starts_with(b"\xFE\xFF") {
        return refuse(InputErrorKind::Utf16);
    }
    if head.contains(&0) {
        return refuse(InputErrorKind::Binary);
    }
    Ok(())
}

/// A name or value from an input file as it may be shown in a message: invalid UTF-8 and
/// control characters escaped, cut to a readable length.
pub(crate) fn printable(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let escaped: String = text.chars().flat_map(char::escape_debug).collect();
    convert::quote(&escaped)
}

/// An all-null row of cells.
pub(crate) fn null_cells<'a>() -> Cells<'a> {
    [convert::Cell::Null; N_FIELDS]
}

#[cfg(test)]
mod tests;
