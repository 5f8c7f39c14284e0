//! The eval crate's error type.

use std::path::PathBuf;

/// Errors of the evaluations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading a table, a truth file or a dataset failed (the file is named).
    #[error(transparent)]
    Io(#[from] personaflow_io::Error),
    /// The output evaluated is not a backfill of the scenario it is scored against.
    #[error(
        "output {}: does not look like a backfill of this scenario's events: {evidence}; \
         evaluate an output with the scenario it was computed from",
        output.display()
    )]
    OtherScenario {
        /// The output.
        output: PathBuf,
        /// What gave it away.
        evidence: ScenarioMismatch,
    },
    /// A backfill run by an evaluation failed.
    #[error(transparent)]
    Dataflow(#[from] personaflow_dataflow::Error),
}

/// What shows that an output is not a backfill of a scenario.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScenarioMismatch {
    /// Most of its users are not in the scenario.
    #[error("{unknown} of its {users} users are not in the scenario's truth")]
    UnknownUsers {
        /// Users not in the scenario's truth.
        unknown: usize,
        /// Users in the output.
        users: usize,
    },
    /// Too many authenticated users carry another segment than the truth gives them.
    #[error("{disagree} of its {judged} authenticated users carry another segment than the truth gives them")]
    OtherSegments {
        /// Users whose segment disagrees.
        disagree: usize,
        /// Authenticated users compared.
        judged: usize,
    },
}

/// Result type of the eval crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with the file it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        personaflow_io::Error::io(path, source).into()
    }

    /// Wraps a Parquet error with the file it happened on.
    pub fn parquet(path: impl Into<PathBuf>, source: parquet::errors::ParquetError) -> Self {
        personaflow_io::Error::parquet(path, source).into()
    }
}
