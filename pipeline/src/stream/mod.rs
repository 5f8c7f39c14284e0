//! The continuous job's building blocks (the Kafka job of issue 4, in progress): so far the
//! event-time watermarks of a partitioned stream, and (in `source`) the decoding of one JSON
//! record through an ingest mapping ([`JsonRecordDecoder`](crate::source::JsonRecordDecoder)).
//! The Kafka transport, the `run` command, durable per-window outputs and offset commits are
//! not built yet.

pub mod watermark;
