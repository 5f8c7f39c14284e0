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
    /// An input file is malformed as a whole (not a single bad row).
    #[error("{}: {reason}", path.display())]
    BadInput {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// No input files matched what was given.
    #[error("no input files found for {0}")]
    NoInputs(String),
    /// An ingest mapping or configuration file is invalid.
    #[error("{}: {reason}", path.display())]
    Config {
        /// The mapping or config file (or `<built-in>`).
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A sink that is not a file (a Kafka topic, say) failed to take a table's rows.
    #[error("table {table}: sink")]
    Sink {
        /// The table.
        table: String,
        /// The sink's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The output directory cannot be used.
    #[error("output {}: {reason}", path.display())]
    Output {
        /// The output directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Result type of the io crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
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
