//! personaflow io: the canonical event schema, the input formats (Parquet, CSV/TSV/Zeek and
//! whitespace text, NDJSON, JSON records) with their ingest mappings, the output tables, the
//! partitioned writer, and the atomic output directory. No dataflow, no Kafka.

pub mod atomic_file;
pub mod error;
pub mod output_dir;
pub mod schema;
pub mod source;
pub mod tables;
pub mod window_file;
pub mod writer;

pub use error::{Error, InputErrorKind, OldOutput, OutputErrorKind, Result, SettingsErrorKind};
