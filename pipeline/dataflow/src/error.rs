//! The dataflow crate's error type.

use std::path::PathBuf;

/// Errors of the dataflow crate: reading inputs and writing tables ([`Error::Io`], which names
/// the file), configuration, operators and models, and the run itself.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading an input, writing an output or a state file failed (the file is named).
    #[error(transparent)]
    Io(#[from] personaflow_io::Error),
    /// A configuration file or variable is invalid: `path` is the file or variable that set the
    /// value (`<defaults>` for none).
    #[error("{}: {reason}", path.display())]
    Config {
        /// The configuration file, or the `PERSONAFLOW__*` variable.
        path: PathBuf,
        /// What is wrong (starts with the key where there is one).
        reason: String,
    },
    /// An operator failed (for example an embedder).
    #[error(transparent)]
    Operator(#[from] personaflow_operators::Error),
    /// A model could not be loaded or run.
    #[error(transparent)]
    Model(#[from] personaflow_models::Error),
    /// The dataflow failed to run (a worker panicked or a sink failed).
    #[error("dataflow: {0}")]
    Dataflow(String),
    /// The run was stopped by a signal (SIGINT, SIGTERM) before it finished; nothing was
    /// written.
    #[error("interrupted by {}: stopped before writing any output", signal_name(*.signal))]
    Interrupted {
        /// The signal's number.
        signal: i32,
    },
}

/// The name of a signal number, for messages.
pub fn signal_name(signal: i32) -> String {
    match signal {
        2 => "SIGINT".into(),
        15 => "SIGTERM".into(),
        1 => "SIGHUP".into(),
        n => format!("signal {n}"),
    }
}

/// Result type of the dataflow crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with the file it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        personaflow_io::Error::io(path, source).into()
    }
}
