//! The synth crate's errors.

/// What can go wrong making synthetic users.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A population too small or malformed to fit.
    #[error("cannot fit a mixture: {0}")]
    Fit(String),
    /// Input that cannot make synthetic users (named in the message).
    #[error("{0}")]
    Input(String),
    /// Reading or writing files.
    #[error(transparent)]
    Io(#[from] personaflow_io::Error),
    /// The decoder.
    #[error("decoding: {0}")]
    Model(#[from] personaflow_models::Error),
}

/// The crate's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
