//! personaflow dataflow: the configuration, the graph (one function from events to the output
//! tables, on timely/differential), the one driver loop that feeds it, the operator-state
//! snapshots a restart resumes from, the backfill over files, and where a run's time goes
//! operator by operator.

pub mod backfill;
pub mod config;
pub mod driver;
pub mod error;
pub mod graph;
pub mod operator_times;
pub mod snapshot;

pub use error::{ConfigError, ConfigErrorKind, Error, Result, StateFileError};
