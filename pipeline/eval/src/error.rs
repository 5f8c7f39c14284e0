//! The eval crate's error type.

use std::path::PathBuf;

/// Errors of the evaluations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading a table, a truth file or a dataset failed (the file is named).
    #[error(transparent)]
    Io(#[from] personaflow_io::Error),
    /// A backfill run by an evaluation failed.
    #[error(transparent)]
    Dataflow(#[from] personaflow_dataflow::Error),
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
