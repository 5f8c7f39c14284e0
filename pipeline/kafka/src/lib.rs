//! personaflow kafka: the continuous job over Kafka (`personaflow run`): event-time watermarks per partition,
//! per-window atomic outputs and output topics, checkpoints and offset commits after the
//! outputs are durable, restarts that rebuild the windowed state and resume the operator state
//! stored with the checkpoint, and Prometheus metrics; and the producer (`personaflow produce`).
//! The only crate of the workspace that links librdkafka.

pub mod checkpoint;
pub mod error;
pub mod job;
pub mod json_rows;
pub mod messages;
pub mod metrics;
pub mod output;
pub mod produce;
pub mod watermark;

pub use error::{Error, Result};
pub use job::{run, StartInfo, StreamJob, StreamReporter, StreamStatus, StreamSummary};
