//! personaflow models: model metadata and its compatibility checks.
//!
//! ONNX inference (the RNN-VAE encoder as an [`Embedder`](personaflow_operators::embed::Embedder),
//! the decoder and the demand forecaster, through onnxruntime) lands here with the models
//! issue. What exists today is the check every model must pass before it is used: a model
//! trained on another feature schema is refused with a clear error.

use personaflow_operators::features::{feature_schema_hash, FEATURE_SCHEMA_VERSION, NUM_FEATURES};
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
