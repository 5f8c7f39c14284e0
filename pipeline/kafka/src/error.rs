//! The kafka crate's error type.

use std::path::PathBuf;

/// Errors of the continuous job and the producer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading an input or writing an output failed (the file is named).
    #[error(transparent)]
    Io(#[from] personaflow_io::Error),
    /// The dataflow, its configuration or its state failed.
    #[error(transparent)]
    Dataflow(#[from] personaflow_dataflow::Error),
    /// A Kafka operation failed (what was being done, and librdkafka's error).
    #[error("kafka: {context}")]
    Kafka {
        /// What was being done.
        context: String,
        /// The client's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// The job cannot run as configured or asked (a missing topic, broker or flag; a
    /// checkpoint of another topic).
    #[error("{0}")]
    Job(String),
}

/// Result type of the kafka crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<personaflow_operators::Error> for Error {
    fn from(e: personaflow_operators::Error) -> Self {
        Error::Dataflow(e.into())
    }
}

impl Error {
    /// Wraps an I/O error with the file it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        personaflow_io::Error::io(path, source).into()
    }

    /// Wraps a Parquet error with the file it happened on.
    pub fn parquet(path: impl Into<PathBuf>, source: parquet::errors::ParquetError) -> Self {
        personaflow_io::Error::parquet(path, source).into()
    }

    /// Wraps a Kafka error with what was being done.
    pub fn kafka(context: impl Into<String>, source: rdkafka::error::KafkaError) -> Self {
        Error::Kafka {
            context: context.into(),
            source,
        }
    }
}
