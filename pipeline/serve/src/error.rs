//! The serve crate's error type.

use std::path::PathBuf;

/// Errors of the store and the server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading a table failed (the file is named).
    #[error(transparent)]
    Io(#[from] personaflow_io::Error),
    /// A batch given to the store lacks a column it needs, or has it of another type.
    #[error("column `{column}`: {reason}")]
    Column {
        /// The column.
        column: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Rendering rows as JSON failed.
    #[error("rendering rows as JSON: {0}")]
    Json(#[source] arrow_schema::ArrowError),
    /// A table file could not be loaded into the store.
    #[error("{}: {reason}", path.display())]
    Load {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The token file could not be read or holds no token.
    #[error("token file {}: {reason}", path.display())]
    Token {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The server could not bind or serve.
    #[error("serving on {addr}: {source}")]
    Serve {
        /// The address.
        addr: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The Redis sink could not connect, or Redis refused a command.
    #[error("redis at {addr}: {reason}")]
    Redis {
        /// The server (or URL).
        addr: String,
        /// Why.
        reason: String,
    },
    /// Refused to serve without a token on an address other than loopback.
    #[error(
        "refusing to serve {addr} without a token: pass --token-file, or bind a loopback \
         address (127.0.0.1, ::1) to serve without one"
    )]
    NoTokenOffLoopback {
        /// The address.
        addr: String,
    },
}

/// Result type of the serve crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// This error as a sink's of `table` (`sink` names which, e.g. `resonance (redis)`), as
    /// the job's [`WindowObserver`](personaflow_io::writer::WindowObserver)s report it.
    pub(crate) fn into_sink(self, sink: String) -> personaflow_io::Error {
        personaflow_io::Error::Sink {
            table: sink,
            source: Box::new(self),
        }
    }

    pub(crate) fn column(column: &str, reason: &str) -> Self {
        Error::Column {
            column: column.to_string(),
            reason: reason.to_string(),
        }
    }
}
