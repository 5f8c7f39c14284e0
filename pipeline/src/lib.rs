//! personaflow pipeline: the event schema, sources (Parquet, CSV/TSV, NDJSON, with ingest
//! mappings), sinks (Parquet tables), configuration, the scenario simulator, and the
//! assembly and running of the backfill dataflow.

pub mod error;
pub mod schema;
pub mod simulate;
pub mod source;

pub use error::{Error, Result};
