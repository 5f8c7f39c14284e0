//! The RNN-VAE encoder (`models/onnx/rnn_vae_encoder.onnx`) as the pipeline's embedder.
//!
//! Inputs `features [B, L, F]` (the pipeline's raw features, zeros where inactive), `mask
//! [B, L]` and `context [B, C]`; outputs `mu [B, D]`, `logvar [B, D]` and `recon_error [B]`,
//! the mean squared error (normalised units, active windows only) of the decoder's
//! reconstruction from `mu`. The profile is `mu`; the reconstruction error is the anomaly score.

use crate::runtime::SessionOptions;
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
}

impl VaeEncoder {
    /// Opens the encoder at `path`; refuses a model trained on another feature schema.
    pub fn open(path: &Path, options: &SessionOptions) -> Result<Self> {
        Ok(VaeEncoder {
            model: Model::open(path, options, ENCODER_KIND)?,
        })
    }

    model_accessors!();

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
        let mut out = self
            .model
            .run(
                batch,
                &[
                    ("features", vec![batch, steps, NUM_FEATURES], features),
                    ("mask", vec![batch, steps], mask),
                    ("context", vec![batch, c], context),
                ],
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
        let out = self
            .encode(batch)
            .map_err(|e| personaflow_operators::Error::Embedder {
                embedder: VAE_EMBEDDER_NAME.to_string(),
                reason: e.to_string(),
            })?;
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
}
