//! personaflow pipeline: the event schema, sources (Parquet, CSV/TSV, NDJSON, with ingest
//! mappings), sinks (Parquet tables), configuration, the scenario simulator, and the
//! assembly and running of the backfill dataflow.

pub mod backfill;
pub mod config;
pub mod dataflow;
pub mod drift_eval;
pub mod error;
pub mod evaluate;
pub mod output_dir;
pub mod schema;
pub mod simulate;
pub mod sink;
pub mod source;
pub mod stream;

pub use error::{Error, Result};
