//! The synth crate's errors.

/// What can go wrong making synthetic users.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A population too small or malformed to fit.
    #[error("cannot fit a mixture: {0}")]
    Fit(String),
}

/// The crate's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
