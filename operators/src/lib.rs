//! personaflow operators: record types, window features, embeddings, segment profiles,
//! resonance and demand forecasts, first as plain functions and then as differential-dataflow
//! operators over them.
//!
//! Every stage of the dataflow is one file in [`ops`], an extension trait named for its verb;
//! the math it uses lives in the plain modules at the top level and is tested directly.

pub mod event;
pub mod window;

pub use event::{Context, Event};
pub use window::WindowSpec;

/// Errors of the operators crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// An embedder failed on a batch.
    #[error("embedder {embedder} failed: {reason}")]
    Embedder {
        /// The embedder's name.
        embedder: String,
        /// What went wrong.
        reason: String,
    },
    /// A forecaster failed on a batch, or returned forecasts that do not fit it.
    #[error("forecaster {forecaster} failed: {reason}")]
    Forecaster {
        /// The forecaster's name.
        forecaster: String,
        /// What went wrong.
        reason: String,
    },
    /// A forecast's predictions do not line up.
    #[error("invalid forecast: {0}")]
    InvalidForecast(String),
    /// Operator states to merge overlap: two of them hold the same key (a scope, a user).
    #[error("operator states overlap: {0} is in more than one")]
    StateOverlap(String),
}

/// Result type of the operators crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub mod changepoint;
pub mod cluster;
pub mod drift;
pub mod embed;
pub mod features;
pub mod forecast;
pub mod ops;
pub mod resonance;
pub mod scaling;
pub mod segments;
pub mod sequence;
pub mod vector;
