//! personaflow operators: record types and the stages of the dataflow, each a module named for
//! it that holds its math as plain functions (tested directly) and its differential-dataflow
//! operator, an extension trait named for its verb: [`window`] (features, `window_aggregate`),
//! [`sequences`], [`embed`], [`segments`], [`resonance`], [`forecast`] (demand forecasts and
//! their residuals), [`personas`] (clustering and pins), [`drift`] (detection, scaling, the
//! single-series change-point detector), [`policies`] (the persona catalogue blended into
//! network policies and socket profiles, and the link model feedback is judged by). [`ops`] holds what the operators share and re-exports
//! every operator trait. No I/O, no Kafka, no onnxruntime.

pub mod event;
pub mod window;

pub use event::{Context, Event};
pub use window::WindowSpec;

/// Errors of the operators crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting is out of its range: the setting (`personas.k_min`) and what its value must be
    /// (`(3) must be at least 2 and at most k_max (2)`, `must be > 0, got 0`).
    #[error("invalid configuration: {key} {reason}")]
    InvalidConfig {
        /// The setting, as configured (`section.key`), or the parameter's name.
        key: String,
        /// What is wrong with its value.
        reason: String,
    },
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

impl Error {
    /// A setting out of its range.
    pub fn invalid_config(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidConfig {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// Result type of the operators crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub mod drift;
pub mod embed;
pub mod forecast;
pub mod ops;
pub mod personas;
pub mod policies;
pub mod resonance;
pub mod segments;
pub mod sequences;
pub mod vector;
