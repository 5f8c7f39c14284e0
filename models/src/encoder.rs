//! The RNN-VAE encoder (`models/onnx/rnn_vae_encoder.onnx`) as the pipeline's embedder.
//!
//! Inputs `features [B, L, F]` (the pipeline's raw features, zeros where inactive), `mask
//! [B, L]` and `context [B, C]`; outputs `mu [B, D]`, `logvar [B, D]` and `recon_error [B]`,
//! the mean squared error (normalised units, active windows only) of the decoder's
//! reconstruction from `mu`. The profile is `mu`; the reconstruction error is the anomaly score.
//!
//! The mean-only encoder (`models/onnx/rnn_vae_encoder_mean.onnx`, derived from the encoder by
//! `models/training/export_encoder_mean.py`: its graph up to `mu`) gives the same `mu` bit for
//! bit without the decoder pass the reconstruction error needs, at about half the cost. With it
//! ([`VaeEncoder::with_mean_model`]), [`Embedder::embed_vectors`] (embeddings whose anomaly
//! scores are not wanted) runs it instead of the encoder.

use crate::metadata::ModelInfo;
use crate::runtime::SessionOptions;
use crate::stats::InferenceStats;
use crate::tensors::{model_accessors, Model, SequenceBatch};
use crate::Result;
use personaflow_operators::embed::{Embedder, Embedding};
use personaflow_operators::sequences::Sequence;
use personaflow_operators::window::features::NUM_FEATURES;
use std::path::Path;

/// File name of the encoder in `models/onnx/`.
pub const ENCODER_FILE: &str = "rnn_vae_encoder.onnx";
/// Model kind in the encoder's metadata.
pub const ENCODER_KIND: &str = "rnn_vae_encoder";
/// File name of the mean-only encoder in `models/onnx/`.
pub const ENCODER_MEAN_FILE: &str = "rnn_vae_encoder_mean.onnx";
/// Model kind in the mean-only encoder's metadata.
pub const ENCODER_MEAN_KIND: &str = "rnn_vae_encoder_mean";
/// Name of the VAE embedder in outputs.
pub const VAE_EMBEDDER_NAME: &str = "rnn-vae-v1";

/// The encoder's outputs for a batch.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EncoderOutput {
    /// `[B, D]` latent means.
    pub mu: Vec<f32>,
    /// `[B, D]` latent log-variances.
    pub logvar: Vec<f32>,
    /// `[B]` reconstruction errors.
    pub recon_error: Vec<f32>,
}

/// The encoder session, reused for every batch.
#[derive(Debug)]
pub struct VaeEncoder {
    model: Model,
    /// The mean-only encoder, where one was opened beside it.
    mean: Option<Model>,
}

impl VaeEncoder {
    /// Opens the encoder at `path`; refuses a model trained on another feature schema.
    pub fn open(path: &Path, options: &SessionOptions) -> Result<Self> {
        Ok(VaeEncoder {
            model: Model::open(path, options, ENCODER_KIND)?,
            mean: None,
        })
    }

    model_accessors!();

    /// Also opens the mean-only encoder at `path`, which [`Embedder::embed_vectors`] runs from
    /// now on, timed into `stats`. Refuses one derived from another encoder: its metadata must
    /// be this encoder's but for its kind ([`check_derived`]).
    pub fn with_mean_model(
        mut self,
        path: &Path,
        options: &SessionOptions,
        stats: InferenceStats,
    ) -> Result<Self> {
        let mut mean = Model::open(path, options, ENCODER_MEAN_KIND)?;
        check_derived(&self.model.info, &mean.info, &mean.path)?;
        mean.stats = stats;
        self.mean = Some(mean);
        Ok(self)
    }

    /// Whether a mean-only encoder is open.
    pub fn has_mean_model(&self) -> bool {
        self.mean.is_some()
    }

    /// Runs the mean-only encoder (the encoder where none is open) on raw tensors, shaped as
    /// for [`run`](Self::run); returns `mu`, `[batch, D]`.
    pub fn run_mean(
        &mut self,
        batch: usize,
        steps: usize,
        features: &[f32],
        mask: &[f32],
        context: &[f32],
    ) -> Result<Vec<f32>> {
        let Some(mean) = self.mean.as_mut() else {
            return Ok(self.run(batch, steps, features, mask, context)?.mu);
        };
        if batch == 0 {
            return Ok(Vec::new());
        }
        let (c, d) = (mean.info.context_dims, mean.info.latent_dims);
        let inputs = encoder_inputs(batch, steps, c, features, mask, context);
        let mut out = mean.run(batch, &inputs, &[("mu", d)])?;
        Ok(out.pop().unwrap_or_default())
    }

    /// Runs the encoder on raw tensors: `features` `[batch, steps, F]`, `mask`
    /// `[batch, steps]`, `context` `[batch, C]`.
    pub fn run(
        &mut self,
        batch: usize,
        steps: usize,
        features: &[f32],
        mask: &[f32],
        context: &[f32],
    ) -> Result<EncoderOutput> {
        if batch == 0 {
            return Ok(EncoderOutput::default());
        }
        let (c, d) = (self.model.info.context_dims, self.model.info.latent_dims);
        let inputs = encoder_inputs(batch, steps, c, features, mask, context);
        let mut out = self
            .model
            .run(
                batch,
                &inputs,
                &[("mu", d), ("logvar", d), ("recon_error", 1)],
            )?
            .into_iter();
        let mut next = || out.next().unwrap_or_default();
        Ok(EncoderOutput {
            mu: next(),
            logvar: next(),
            recon_error: next(),
        })
    }

    /// Encodes sequences.
    pub fn encode(&mut self, seqs: &[&Sequence]) -> Result<EncoderOutput> {
        let vocab = &self.model.info.context_vocabulary;
        let b = SequenceBatch::pack(&self.model.path, seqs, Some(vocab))?;
        self.run(b.batch, b.steps, &b.features, &b.mask, &b.context)
    }

    fn embedder_error(e: crate::Error) -> personaflow_operators::Error {
        personaflow_operators::Error::Embedder {
            embedder: VAE_EMBEDDER_NAME.to_string(),
            reason: e.to_string(),
        }
    }
}

/// The encoders' named inputs: `features` `[batch, steps, F]`, `mask` `[batch, steps]` and
/// `context` `[batch, context_dims]`.
fn encoder_inputs<'a>(
    batch: usize,
    steps: usize,
    context_dims: usize,
    features: &'a [f32],
    mask: &'a [f32],
    context: &'a [f32],
) -> [(&'static str, Vec<usize>, &'a [f32]); 3] {
    [
        ("features", vec![batch, steps, NUM_FEATURES], features),
        ("mask", vec![batch, steps], mask),
        ("context", vec![batch, context_dims], context),
    ]
}

/// Refuses a mean-only encoder (`mean`, at `path`) whose metadata differs from the encoder's
/// (`encoder`) in anything but its kind: the training metadata (seed, losses, normalisation)
/// tells one encoder's derivative from another's.
///
/// ```
/// use personaflow_models::encoder::{check_derived, ENCODER_MEAN_KIND};
/// use personaflow_models::metadata::ModelInfo;
/// let info = |kind: &str, seed: u64| ModelInfo {
///     kind: kind.into(), sequence_len: 16, features: 33, feature_names: vec![],
///     context_dims: 0, context_vocabulary: Default::default(), latent_dims: 16, horizon: 0,
///     hidden: 0, normalisation: Default::default(), seed, training: Default::default(),
/// };
/// assert!(check_derived(&info("rnn_vae_encoder", 7), &info(ENCODER_MEAN_KIND, 7), "m.onnx").is_ok());
/// let err = check_derived(&info("rnn_vae_encoder", 7), &info(ENCODER_MEAN_KIND, 8), "m.onnx").unwrap_err();
/// assert!(err.to_string().contains("export_encoder_mean.py"));
/// ```
pub fn check_derived(encoder: &ModelInfo, mean: &ModelInfo, path: &str) -> Result<()> {
    let as_encoder = ModelInfo {
        kind: encoder.kind.clone(),
        ..mean.clone()
    };
    if as_encoder == *encoder {
        return Ok(());
    }
    Err(crate::Error::BadMetadata {
        model: path.to_string(),
        reason: "it was not derived from this encoder (its metadata differs from the \
                 encoder's); re-run models/training/export_encoder_mean.py, or remove it to \
                 embed with the encoder alone"
            .to_string(),
    })
}

impl Embedder for VaeEncoder {
    fn name(&self) -> &str {
        VAE_EMBEDDER_NAME
    }

    fn dims(&self) -> usize {
        self.model.info.latent_dims
    }

    fn embed_batch(
        &mut self,
        batch: &[&Sequence],
    ) -> personaflow_operators::Result<Vec<Embedding>> {
        let out = self.encode(batch).map_err(Self::embedder_error)?;
        let d = self.model.info.latent_dims;
        Ok(out
            .mu
            .chunks_exact(d)
            .zip(out.recon_error)
            .map(|(mu, err)| Embedding {
                vector: mu.to_vec(),
                anomaly_score: Some(err),
            })
            .collect())
    }

    fn embed_vectors(
        &mut self,
        batch: &[&Sequence],
    ) -> personaflow_operators::Result<Vec<Vec<f32>>> {
        let vocab = &self.model.info.context_vocabulary;
        let b = SequenceBatch::pack(&self.model.path, batch, Some(vocab))
            .map_err(Self::embedder_error)?;
        let mu = self
            .run_mean(b.batch, b.steps, &b.features, &b.mask, &b.context)
            .map_err(Self::embedder_error)?;
        Ok(mu
            .chunks_exact(self.model.info.latent_dims)
            .map(<[f32]>::to_vec)
            .collect())
    }
}
