//! The metadata every personaflow model carries (ONNX `metadata_props`, written by
//! `models/training/train.py`): the feature schema it was trained on, its shapes, the context
//! vocabulary, the normalisation statistics and a description of its training.

use crate::{Error, FeatureSchemaRef, Result};
use ort::session::Session;
use personaflow_operators::window::features::NUM_FEATURES;
use personaflow_operators::Context;
use serde::{Deserialize, Serialize};

/// Metadata key of the feature schema (JSON [`FeatureSchemaRef`]).
pub const SCHEMA_KEY: &str = "personaflow.feature_schema";
/// Metadata key of the model description (JSON [`ModelInfo`]).
pub const MODEL_KEY: &str = "personaflow.model";

/// The one-hot vocabulary of the context input: one slot per known value of each field, in
/// this order; unknown or missing values leave their field's slots at zero.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextVocabulary {
    /// Device classes.
    pub device: Vec<String>,
    /// Operating systems.
    pub os: Vec<String>,
    /// Countries.
    pub country: Vec<String>,
}

impl ContextVocabulary {
    /// Width of the one-hot encoding, `C`.
    pub fn width(&self) -> usize {
        self.device.len() + self.os.len() + self.country.len()
    }

    /// Writes the one-hot encoding of `context` into `out` (`C` values, overwritten).
    ///
    /// ```
    /// use personaflow_models::metadata::ContextVocabulary;
    /// use personaflow_operators::Context;
    /// let v = ContextVocabulary { device: vec!["pc".into(), "tv".into()], os: vec!["linux".into()], country: vec![] };
    /// let mut out = vec![9.0; v.width()];
    /// v.encode(&Context { device: Some("tv".into()), os: Some("beos".into()), country: None }, &mut out);
    /// assert_eq!(out, vec![0.0, 1.0, 0.0]);
    /// ```
    pub fn encode(&self, context: &Context, out: &mut [f32]) {
        out.fill(0.0);
        let mut offset = 0;
        for (vocab, value) in [
            (&self.device, &context.device),
            (&self.os, &context.os),
            (&self.country, &context.country),
        ] {
            if let Some(i) = value
                .as_deref()
                .and_then(|v| vocab.iter().position(|x| x == v))
            {
                out[offset + i] = 1.0;
            }
            offset += vocab.len();
        }
    }
}

/// Per-feature normalisation learned in training (already applied inside the graphs; kept
/// here so the model says what it expects).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Normalisation {
    /// Mean per feature.
    pub mean: Vec<f32>,
    /// Standard deviation per feature.
    pub std: Vec<f32>,
}

/// A model's description.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// `rnn_vae_encoder`, `rnn_vae_decoder` or `demand_forecaster`.
    pub kind: String,
    /// Sequence length `L` it was trained on.
    pub sequence_len: usize,
    /// Features per step, `F`.
    pub features: usize,
    /// Feature names, in order.
    #[serde(default)]
    pub feature_names: Vec<String>,
    /// Context width, `C`.
    pub context_dims: usize,
    /// The context one-hot vocabulary.
    pub context_vocabulary: ContextVocabulary,
    /// Latent dimensions, `D`.
    pub latent_dims: usize,
    /// Forecast horizon, `H`.
    pub horizon: usize,
    /// Width of the recurrent state the step decoder carries between calls (0 for the other
    /// models).
    #[serde(default)]
    pub hidden: usize,
    /// Normalisation statistics.
    pub normalisation: Normalisation,
    /// Training seed.
    #[serde(default)]
    pub seed: u64,
    /// Training data, losses and metrics, as written by the training script.
    #[serde(default)]
    pub training: serde_json::Value,
}

impl ModelInfo {
    /// Parses the two metadata values of a model and checks them: the feature schema must be
    /// the pipeline's, the kind the expected one, and the shapes consistent.
    ///
    /// ```
    /// use personaflow_models::{metadata::ModelInfo, FeatureSchemaRef};
    /// let schema = serde_json::to_string(&FeatureSchemaRef { version: 0, ..FeatureSchemaRef::current() }).unwrap();
    /// let err = ModelInfo::parse("old.onnx", "rnn_vae_encoder", Some(&schema), Some("{}")).unwrap_err();
    /// assert!(err.to_string().contains("retrain"));
    /// ```
    pub fn parse(
        model: &str,
        expected_kind: &str,
        schema: Option<&str>,
        info: Option<&str>,
    ) -> Result<ModelInfo> {
        let bad = |reason: String| Error::BadMetadata {
            model: model.to_string(),
            reason,
        };
        let schema = schema.ok_or_else(|| {
            bad(format!(
                "no {SCHEMA_KEY} entry: not a personaflow model, or exported without metadata"
            ))
        })?;
        let schema: FeatureSchemaRef = serde_json::from_str(schema)
            .map_err(|e| bad(format!("{SCHEMA_KEY} is not a feature schema: {e}")))?;
        schema.check(model)?;
        let info = info.ok_or_else(|| bad(format!("no {MODEL_KEY} entry")))?;
        let info: ModelInfo = serde_json::from_str(info)
            .map_err(|e| bad(format!("{MODEL_KEY} is malformed: {e}")))?;
        if info.kind != expected_kind {
            return Err(bad(format!(
                "it is a {} model, expected {expected_kind}",
                info.kind
            )));
        }
        if info.features != NUM_FEATURES
            || info.context_dims != info.context_vocabulary.width()
            || info.normalisation.mean.len() != NUM_FEATURES
            || info.normalisation.std.len() != NUM_FEATURES
        {
            return Err(bad(format!(
                "inconsistent shapes: F = {} (pipeline {NUM_FEATURES}), C = {} with a \
                 vocabulary of {}, normalisation of {} and {} values",
                info.features,
                info.context_dims,
                info.context_vocabulary.width(),
                info.normalisation.mean.len(),
                info.normalisation.std.len()
            )));
        }
        Ok(info)
    }

    /// Reads and checks the metadata of an open session.
    pub fn of_session(session: &Session, model: &str, expected_kind: &str) -> Result<ModelInfo> {
        let meta = session.metadata().map_err(|e| Error::Ort {
            model: model.to_string(),
            reason: format!("reading metadata: {e}"),
        })?;
        ModelInfo::parse(
            model,
            expected_kind,
            meta.custom(SCHEMA_KEY).as_deref(),
            meta.custom(MODEL_KEY).as_deref(),
        )
    }
}
