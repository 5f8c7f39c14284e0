//! The RNN-VAE decoder (`models/onnx/rnn_vae_decoder.onnx`): latent points `z [B, D]` back to
//! feature sequences `features [B, L, F]` in the pipeline's units, for synthetic users. The VAE
//! does not model the calendar features (the same for every user in a window): they come out
//! at their training mean.

use crate::encoder::ENCODER_KIND;
use crate::metadata::ModelInfo;
use crate::runtime::{open_session, SessionOptions};
use crate::stats::InferenceStats;
use crate::tensors::run;
use crate::{Error, Result};
use ort::session::Session;
use personaflow_operators::features::NUM_FEATURES;
use std::path::Path;

/// File name of the decoder in `models/onnx/`.
pub const DECODER_FILE: &str = "rnn_vae_decoder.onnx";
/// Model kind in the decoder's metadata.
pub const DECODER_KIND: &str = "rnn_vae_decoder";

/// The decoder session, reused for every batch.
#[derive(Debug)]
pub struct VaeDecoder {
    session: Session,
    info: ModelInfo,
    model: String,
    provider: &'static str,
    stats: InferenceStats,
}

impl VaeDecoder {
    /// Opens the decoder at `path`; refuses a model trained on another feature schema.
    pub fn open(path: &Path, options: &SessionOptions) -> Result<Self> {
        let opened = open_session(path, options)?;
        let model = path.display().to_string();
        let info = ModelInfo::of_session(&opened.session, &model, DECODER_KIND)?;
        Ok(VaeDecoder {
            session: opened.session,
            info,
            model,
            provider: opened.provider,
            stats: InferenceStats::default(),
        })
    }

    /// The model's metadata.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The execution provider the session runs on.
    pub fn provider(&self) -> &'static str {
        self.provider
    }

    /// Records inference time into `stats` (shared with other sessions) from now on.
    pub fn with_stats(mut self, stats: InferenceStats) -> Self {
        self.stats = stats;
        self
    }

    /// Decodes `z` `[batch, D]` into `[batch, L, F]` features.
    pub fn decode(&mut self, batch: usize, z: &[f32]) -> Result<Vec<f32>> {
        if batch == 0 {
            return Ok(Vec::new());
        }
        let d = self.info.latent_dims;
        let started = std::time::Instant::now();
        let (_, features) = run(
            &mut self.session,
            &self.model,
            &[("z", vec![batch, d], z)],
            &["features"],
        )?
        .pop()
        .unwrap_or_default();
        self.stats.record(batch, started.elapsed());
        let expected = batch * self.info.sequence_len * NUM_FEATURES;
        if features.len() != expected {
            return Err(Error::Shape {
                model: self.model.clone(),
                reason: format!("{} output values, expected {expected}", features.len()),
            });
        }
        Ok(features)
    }

    /// Whether this decoder belongs to the encoder with metadata `encoder` (same latent space,
    /// context vocabulary and normalisation).
    pub fn matches(&self, encoder: &ModelInfo) -> bool {
        encoder.kind == ENCODER_KIND
            && encoder.latent_dims == self.info.latent_dims
            && encoder.context_vocabulary == self.info.context_vocabulary
            && encoder.normalisation == self.info.normalisation
    }
}
