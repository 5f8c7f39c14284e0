//! personaflow models: ONNX inference through onnxruntime (`ort`), and the metadata checks
//! every model must pass before it is used.
//!
//! - [`encoder::VaeEncoder`]: the RNN-VAE encoder as an
//!   [`Embedder`](personaflow_operators::embed::Embedder): profile = `mu`, anomaly score =
//!   reconstruction error.
//! - [`decoder::VaeDecoder`]: latent points back to feature sequences (synthetic users).
//! - [`forecaster::OnnxForecaster`]: the LSTM demand forecaster as a
//!   [`Forecaster`](personaflow_operators::forecast::Forecaster).
//! - [`runtime`]: finding `libonnxruntime` (the `onnxruntime==1.31.1` wheel in `.venv/`, or
//!   `ORT_DYLIB_PATH`), sessions, and the `cpu | cuda | auto` execution-provider choice.
//!
//! A model trained on another feature schema is refused with a clear error
//! ([`FeatureSchemaRef::check`]). The artifacts live in `models/onnx/`; `models/training/`
//! reproduces them.

pub mod decoder;
pub mod encoder;
pub mod forecaster;
pub mod metadata;
pub mod runtime;
pub mod stats;
mod tensors;

pub use runtime::{Provider, SessionOptions};

use personaflow_operators::window::features::{
    feature_schema_hash, FEATURE_SCHEMA_VERSION, NUM_FEATURES,
};
use serde::{Deserialize, Serialize};

/// Errors of the models crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The model was trained on a different feature schema.
    #[error(
        "model {model} was trained on feature schema v{model_version} (hash {model_hash:016x}, \
         {model_features} features) but the pipeline computes v{pipeline_version} (hash \
         {pipeline_hash:016x}, {pipeline_features} features); retrain or use a matching model"
    )]
    SchemaMismatch {
        /// The model's name or path.
        model: String,
        /// Schema version in the model.
        model_version: u32,
        /// Schema hash in the model.
        model_hash: u64,
        /// Features per step in the model.
        model_features: usize,
        /// The pipeline's schema version.
        pipeline_version: u32,
        /// The pipeline's schema hash.
        pipeline_hash: u64,
        /// The pipeline's features per step.
        pipeline_features: usize,
    },
    /// Metadata is missing or malformed.
    #[error("model {model}: bad metadata: {reason}")]
    BadMetadata {
        /// The model's name or path.
        model: String,
        /// What is wrong.
        reason: String,
    },
    /// The onnxruntime library was not found.
    #[error(
        "onnxruntime library not found: {hint} (searched: {})",
        display_paths(searched)
    )]
    LibraryNotFound {
        /// Where it was looked for.
        searched: Vec<std::path::PathBuf>,
        /// What to do about it.
        hint: String,
    },
    /// onnxruntime could not be loaded or started.
    #[error("{0}")]
    Runtime(String),
    /// A model file does not exist.
    #[error("model file {path} not found (the committed models are in models/onnx/)")]
    ModelNotFound {
        /// The path.
        path: String,
    },
    /// The requested execution provider cannot be used.
    #[error("execution provider {provider} unavailable: {reason}")]
    ProviderUnavailable {
        /// The provider asked for.
        provider: Provider,
        /// Why not.
        reason: String,
    },
    /// onnxruntime failed on a model.
    #[error("model {model}: {reason}")]
    Ort {
        /// The model's path.
        model: String,
        /// What failed.
        reason: String,
    },
    /// Inputs that do not fit the model.
    #[error("model {model}: {reason}")]
    Shape {
        /// The model's path.
        model: String,
        /// What does not fit.
        reason: String,
    },
    /// An option is out of range.
    #[error("invalid option: {0}")]
    BadOption(String),
}

fn display_paths(paths: &[std::path::PathBuf]) -> String {
    let shown: Vec<String> = paths
        .iter()
        .take(6)
        .map(|p| p.display().to_string())
        .collect();
    let more = paths.len().saturating_sub(shown.len());
    if more > 0 {
        format!("{} and {more} more", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

/// Result type of the models crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The feature-schema part of a model's metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureSchemaRef {
    /// Feature schema version.
    pub version: u32,
    /// Feature schema hash, hex (16 digits).
    pub hash: String,
    /// Features per sequence step.
    pub features: usize,
}

impl FeatureSchemaRef {
    /// The schema this pipeline computes.
    pub fn current() -> Self {
        FeatureSchemaRef {
            version: FEATURE_SCHEMA_VERSION,
            hash: format!("{:016x}", feature_schema_hash()),
            features: NUM_FEATURES,
        }
    }

    /// Refuses a model whose schema differs from the pipeline's.
    ///
    /// ```
    /// use personaflow_models::FeatureSchemaRef;
    /// assert!(FeatureSchemaRef::current().check("model.onnx").is_ok());
    /// let old = FeatureSchemaRef { version: 0, ..FeatureSchemaRef::current() };
    /// assert!(old.check("old.onnx").unwrap_err().to_string().contains("retrain"));
    /// ```
    pub fn check(&self, model: &str) -> Result<()> {
        let hash = u64::from_str_radix(&self.hash, 16).map_err(|_| Error::BadMetadata {
            model: model.to_string(),
            reason: format!("feature schema hash {:?} is not hex", self.hash),
        })?;
        let current = FeatureSchemaRef::current();
        if *self != current {
            return Err(Error::SchemaMismatch {
                model: model.to_string(),
                model_version: self.version,
                model_hash: hash,
                model_features: self.features,
                pipeline_version: current.version,
                pipeline_hash: feature_schema_hash(),
                pipeline_features: current.features,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mismatches_are_refused_with_both_schemas_named() {
        let mut m = FeatureSchemaRef::current();
        m.hash = "0000000000000001".into();
        let err = m.check("enc.onnx").unwrap_err().to_string();
        assert!(
            err.contains("enc.onnx") && err.contains("0000000000000001"),
            "{err}"
        );
        m.hash = "zz".into();
        assert!(matches!(m.check("x"), Err(Error::BadMetadata { .. })));
        let json = serde_json::to_string(&FeatureSchemaRef::current()).unwrap();
        let back: FeatureSchemaRef = serde_json::from_str(&json).unwrap();
        assert!(back.check("roundtrip").is_ok());
    }
}
