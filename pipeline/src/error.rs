//! The pipeline crate's error type.

use std::path::PathBuf;

/// Errors of the pipeline crate. Every variant names the file (and where known the row and
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
    /// The output directory cannot be used.
    #[error("output {}: {reason}", path.display())]
    Output {
        /// The output directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An operator failed (for example an embedder).
    #[error(transparent)]
    Operator(#[from] personaflow_operators::Error),
    /// A model could not be loaded or run.
    #[error(transparent)]
    Model(#[from] personaflow_models::Error),
    /// The dataflow failed to run.
    #[error("dataflow: {0}")]
    Dataflow(String),
    /// A Kafka operation failed (what was being done, and librdkafka's error).
    #[error("kafka: {context}")]
    Kafka {
        /// What was being done.
        context: String,
        /// The client's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// The continuous job cannot run as configured (missing topic, broker, flag...).
    #[error("{0}")]
    Stream(String),
    /// The run was stopped by a signal (SIGINT, SIGTERM) before it finished; nothing was
    /// written.
    #[error("interrupted by {}: stopped before writing any output", signal_name(*.signal))]
    Interrupted {
        /// The signal's number.
        signal: i32,
    },
}

/// The name of a signal number, for messages.
pub fn signal_name(signal: i32) -> String {
    match signal {
        2 => "SIGINT".into(),
        15 => "SIGTERM".into(),
        1 => "SIGHUP".into(),
        n => format!("signal {n}"),
    }
}

/// Result type of the pipeline crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with the file it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Wraps a Kafka error with what was being done.
    pub fn kafka(context: impl Into<String>, source: rdkafka::error::KafkaError) -> Self {
        Error::Kafka {
            context: context.into(),
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
