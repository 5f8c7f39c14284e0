//! The io crate's error type.

use std::path::PathBuf;

/// Errors of the io crate. Every variant names the file (and where known the row and
/// column) it is about, so a user can find and fix the input. Variants that wrap another error
/// expose it as their `source()` and leave it out of their own message (print the chain, e.g.
/// with `anyhow`'s `{:#}`, to see both).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O error on a file.
    #[error("{}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A Parquet file could not be read or written (corrupt, truncated, unsupported).
    #[error("{}: parquet", path.display())]
    Parquet {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: parquet::errors::ParquetError,
    },
    /// An Arrow error while reading or building record batches.
    #[error("{}: arrow", path.display())]
    Arrow {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: arrow_schema::ArrowError,
    },
    /// An input lacks a required canonical column (after the ingest mapping is applied).
    #[error("{}: missing required column `{column}`{hint}", path.display())]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// The canonical column that is missing.
        column: String,
        /// Extra advice (e.g. which mapping rule was expected to provide it).
        hint: String,
    },
    /// A file is malformed as a whole (not a single bad row): which file, and what is wrong.
    #[error("{}: {kind}", path.display())]
    BadInput {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        kind: InputErrorKind,
    },
    /// No input files matched an input as given (`None`: no inputs were given at all).
    #[error(
        "no input files found for {}",
        input.as_deref().unwrap_or("an empty list of inputs")
    )]
    NoInputs {
        /// The input (a file, directory or glob), as given.
        input: Option<String>,
    },
    /// An ingest mapping (or a simulation's settings) is invalid: the file (or `<built-in>`,
    /// `<simulation>`, `<drift>`) and what is wrong.
    #[error("{}: {kind}", path.display())]
    Config {
        /// The mapping file, or where the settings came from.
        path: PathBuf,
        /// What is wrong.
        kind: SettingsErrorKind,
    },
    /// A sink that is not a file (a Kafka topic, say) failed to take a table's rows.
    #[error("table {table}: sink")]
    Sink {
        /// The table.
        table: String,
        /// The sink's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The output directory cannot be used, or the run's result could not be put in place.
    #[error("output {}: {kind}", path.display())]
    Output {
        /// The output directory.
        path: PathBuf,
        /// What is wrong.
        kind: OutputErrorKind,
    },
}

/// What is wrong with a malformed file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InputErrorKind {
    /// The format cannot be told from the file's name.
    #[error(
        "cannot tell the input format from the extension (expected .parquet, .csv, .tsv, \
         .ndjson/.jsonl/.json or .log); set `format` in the ingest mapping"
    )]
    UnknownFormat,
    /// An input is a glob pattern that does not parse.
    #[error("invalid glob pattern: {0}")]
    Glob(glob::PatternError),
    /// Parquet was given as bytes (it is read from files, by its footer).
    #[error("Parquet is read from files only")]
    ParquetFromBytes,
    /// A header names a column more than once.
    #[error(
        "the column `{name}` appears {} times (columns {}): column names must be unique; \
         rename or drop the duplicates",
        positions.len(),
        positions.iter().map(usize::to_string).collect::<Vec<_>>().join(", ")
    )]
    DuplicateColumn {
        /// The column's name, printable.
        name: String,
        /// Its positions, 1-based.
        positions: Vec<usize>,
    },
    /// A Parquet column has a type no event field can be read from.
    #[error(
        "column `{column}` (for `{canonical}`) has type {data_type}, which cannot be read as \
         an event field"
    )]
    ColumnType {
        /// The file's column.
        column: String,
        /// The canonical field it is mapped to.
        canonical: String,
        /// Its Arrow type.
        data_type: String,
    },
    /// A file named `.gz` is not gzip data.
    #[error("is named .gz but is not gzip data ({0})")]
    NotGzip(std::io::Error),
    /// A gzip file under a name that does not end in `.gz`.
    #[error(
        "is gzip-compressed data under a name that does not end in .gz: name it e.g. \
         events.csv.gz to have it decompressed as it is read"
    )]
    GzipWithoutGzName,
    /// UTF-16 text.
    #[error(
        "is UTF-16 text (it starts with a UTF-16 byte order mark); personaflow reads UTF-8: \
         convert it, e.g. `iconv -f UTF-16 -t UTF-8`"
    )]
    Utf16,
    /// Binary data where text was expected.
    #[error(
        "holds NUL bytes in its first 4 KiB: it is not UTF-8 text (binary data, or UTF-16 \
         without a byte order mark)"
    )]
    Binary,
    /// A quoted field opens and the file ends inside it.
    #[error(
        "line {line}: a quoted field opens on this line and is never closed: the file ends \
         inside it (is a closing quote missing?)"
    )]
    UnclosedQuote {
        /// The line where the quote opens.
        line: u64,
    },
    /// A record spans lines because of a quote that is not closed where it should be.
    #[error(
        "line {line} (record {record}): {what}: is a closing quote missing? Every line after \
         an unclosed quote becomes part of one value"
    )]
    QuoteSpansLines {
        /// The line where the record starts.
        line: u64,
        /// The record's number.
        record: u64,
        /// What gave it away (a field count, a value over several lines).
        what: String,
    },
    /// A Zeek `#separator` that is not one byte.
    #[error("Zeek #separator {0:?} is not one byte")]
    ZeekSeparator(String),
    /// A Zeek log whose records come before its `#fields` header.
    #[error("Zeek log without a #fields header before its first record")]
    ZeekWithoutFields,
    /// A `.json` file holding one JSON array, not one object per line.
    #[error("starts with a JSON array; expected one JSON object per line (NDJSON)")]
    JsonArray,
    /// No JSON object among the first lines of an NDJSON file.
    #[error("none of the first {0} non-blank lines is a JSON object")]
    NoJsonObject(usize),
    /// The CSV reader's own error.
    #[error("{0}")]
    Csv(String),
    /// A dataset (a TCPD or NAB series, its labels) is malformed: where, and why.
    #[error(
        "{}{}{reason}",
        line.map(|l| format!("line {l}: ")).unwrap_or_default(),
        field.as_ref().map(|f| format!("field {f:?}: ")).unwrap_or_default()
    )]
    Dataset {
        /// The line (1-based), when known.
        line: Option<u64>,
        /// The field, when one.
        field: Option<String>,
        /// What is wrong.
        reason: String,
    },
    /// Not a file of the kind expected (a checkpoint): what was expected, and why it is not
    /// one.
    #[error("not a {what}: {reason}")]
    NotA {
        /// What the file should be.
        what: &'static str,
        /// Why it is not.
        reason: String,
    },
    /// A file of another version of its format.
    #[error("{what} version {found} is not {expected}")]
    Version {
        /// What the file is.
        what: &'static str,
        /// Its version.
        found: u32,
        /// The version read.
        expected: u32,
    },
}

/// What is wrong with a mapping or other settings.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsErrorKind {
    /// The TOML does not parse into settings (syntax, an unknown key, a wrong type): where,
    /// when known, and the parser's message on one line.
    #[error("{}{message}", at.map(|(l, c)| format!("line {l}, column {c}: ")).unwrap_or_default())]
    Parse {
        /// Line and column, 1-based.
        at: Option<(usize, usize)>,
        /// The parser's message.
        message: String,
    },
    /// A setting is not valid (its key, then why).
    #[error("{0}")]
    Invalid(String),
}

/// Why an output directory cannot be used, or what went wrong putting a result in place.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutputErrorKind {
    /// The output overlaps an input (`relation`: is also, lies inside, contains).
    #[error(
        "{relation} {}: the output is replaced as a whole, so it must be apart from every input",
        input.display()
    )]
    OverlapsInput {
        /// How: "is also an input", "lies inside the input", "contains the input".
        relation: &'static str,
        /// The input.
        input: PathBuf,
    },
    /// Another run holds the output's lock.
    #[error("another personaflow run is writing it ({holder}; lock {})", lock.display())]
    Locked {
        /// What the lock file says of its holder.
        holder: String,
        /// The lock file.
        lock: PathBuf,
    },
    /// The lock could not be taken.
    #[error("could not take the lock {}", lock.display())]
    LockNotTaken {
        /// The lock file.
        lock: PathBuf,
    },
    /// The output is the root directory.
    #[error("is the root directory: choose a directory to write into")]
    Root,
    /// The output exists and is not a directory.
    #[error("exists and is not a directory")]
    NotADirectory,
    /// The output is a mount point.
    #[error(
        "is a mount point: a finished run is renamed into place, which cannot replace a mount \
         point; write into a directory inside it"
    )]
    MountPoint,
    /// The output is not empty and `--overwrite` was not given.
    #[error("exists and is not empty; pass --overwrite to replace a personaflow output")]
    NotEmpty,
    /// The output is not empty and was not written by personaflow.
    #[error(
        "exists, is not empty and was not written by personaflow (it has no {marker} marker): \
         --overwrite replaces only personaflow outputs; remove it yourself or choose another \
         directory"
    )]
    NotPersonaflowOutput {
        /// The marker file it lacks.
        marker: &'static str,
    },
    /// A generated dataset's directory is not empty and may not be replaced.
    #[error(
        "already exists and is not empty; refusing to overwrite it (set `overwrite`, or pass \
         --overwrite, to replace it)"
    )]
    NotEmptyNoOverwrite,
    /// A step after the run failed; the finished output is kept and named.
    #[error(
        "the run finished, but {during} failed ({cause:#}); the finished output is in {}{}",
        finished.display(),
        old.as_ref().map(|o| o.note()).unwrap_or_default()
    )]
    AfterRun {
        /// The step that failed.
        during: &'static str,
        /// Its error (in the message, not a `source()`: the message is complete).
        cause: Box<crate::Error>,
        /// Where the finished output is.
        finished: PathBuf,
        /// Where the old output is, when it had been moved aside.
        old: Option<OldOutput>,
    },
    /// The new output is in place but the old one could not be removed.
    #[error(
        "the new output is in place, but removing the old one failed ({cause}): remove {} \
         yourself (the next run into it does)",
        old.display()
    )]
    OldNotRemoved {
        /// The removal's error.
        cause: Box<crate::Error>,
        /// The old output.
        old: PathBuf,
    },
    /// A summary or truth file could not be encoded.
    #[error("cannot encode JSON: {0}")]
    Json(serde_json::Error),
    /// A day of a generated dataset has no calendar date.
    #[error("day {0} since the epoch is out of range")]
    DayOutOfRange(i64),
}

/// Where the old output is after a failed commit.
#[derive(Debug)]
pub enum OldOutput {
    /// Put back in place.
    Restored,
    /// Still moved aside, here.
    At(PathBuf),
}

impl OldOutput {
    fn note(&self) -> String {
        match self {
            OldOutput::Restored => "; the old output is back in place".to_owned(),
            OldOutput::At(path) => format!("; the old output is in {}", path.display()),
        }
    }
}

/// Result type of the io crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An output directory that cannot be used.
    pub fn output(path: impl Into<PathBuf>, kind: OutputErrorKind) -> Self {
        Error::Output {
            path: path.into(),
            kind,
        }
    }

    /// A malformed file.
    pub fn bad_input(path: impl Into<PathBuf>, kind: InputErrorKind) -> Self {
        Error::BadInput {
            path: path.into(),
            kind,
        }
    }

    /// Wraps an I/O error with the file it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Wraps a Parquet error with the file it happened on.
    pub fn parquet(path: impl Into<PathBuf>, source: parquet::errors::ParquetError) -> Self {
        Error::Parquet {
            path: path.into(),
            source,
        }
    }
}

/// A TOML syntax error on one line: where (line and column) and what.
pub fn toml_error(text: &str, e: &toml::de::Error) -> String {
    match toml_error_at(text, e) {
        (Some((line, column)), message) => format!("line {line}, column {column}: {message}"),
        (None, message) => message,
    }
}

/// Where (line and column, 1-based, when known) a TOML syntax error is, and its message on one
/// line.
pub fn toml_error_at(text: &str, e: &toml::de::Error) -> (Option<(usize, usize)>, String) {
    let message = e.message().trim().replace('\n', "; ");
    let at = e.span().map(|span| {
        let mut start = span.start.min(text.len());
        while !text.is_char_boundary(start) {
            start -= 1;
        }
        let before = &text[..start];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        (line, column)
    });
    (at, message)
}
