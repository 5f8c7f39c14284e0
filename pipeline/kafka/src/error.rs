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
    /// The output directory holds the checkpoint of another job.
    #[error(
        "output {}: holds the checkpoint of topic {found_topic} with {found_window_ms} ms \
         windows, not of topic {topic} with {window_ms} ms windows: use another output \
         directory",
        output.display()
    )]
    OtherJob {
        /// The output directory.
        output: PathBuf,
        /// The checkpoint's topic.
        found_topic: String,
        /// The checkpoint's window length.
        found_window_ms: i64,
        /// This job's topic.
        topic: String,
        /// This job's window length.
        window_ms: i64,
    },
    /// Topics the job or the producer needs are not on the brokers.
    #[error(
        "topic{} {} not found on {brokers}: create {} first (topics are not created automatically)",
        if topics.len() > 1 { "s" } else { "" },
        topics.join(", "),
        if topics.len() > 1 { "them" } else { "it" }
    )]
    TopicsMissing {
        /// The missing topics.
        topics: Vec<String>,
        /// The bootstrap brokers asked.
        brokers: String,
    },
    /// A message to an output or dead-letter topic was not delivered.
    #[error("delivery to {topic} failed")]
    Delivery {
        /// The topic.
        topic: String,
        /// The producer's error.
        source: rdkafka::error::KafkaError,
    },
    /// Messages the producer could not deliver, even after librdkafka's retries: they are not
    /// on the topic.
    #[error("{failed} of {sent} messages to {topic} were not delivered (the first: {first})")]
    Undelivered {
        /// The topic.
        topic: String,
        /// Messages not delivered.
        failed: u64,
        /// Messages sent.
        sent: u64,
        /// The first failure's error.
        first: rdkafka::error::KafkaError,
    },
    /// A table's rows could not be encoded as JSON messages.
    #[error("{topic}: rows to JSON")]
    Json {
        /// The output topic.
        topic: String,
        /// The encoder's error.
        source: arrow_schema::ArrowError,
    },
    /// A table's rows could not be encoded as Arrow IPC messages.
    #[error("{topic}: rows to Arrow IPC")]
    Ipc {
        /// The output topic.
        topic: String,
        /// The encoder's error.
        source: arrow_schema::ArrowError,
    },
    /// The metrics endpoint could not be served.
    #[error("metrics endpoint {addr}")]
    Metrics {
        /// The address asked for.
        addr: String,
        /// The error.
        source: std::io::Error,
    },
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
