//! The RNN-VAE decoder (`models/onnx/rnn_vae_decoder.onnx`): latent points `z [B, D]` back to
//! feature sequences `features [B, L, F]` in the pipeline's units, for synthetic users. The VAE
//! does not model the calendar features (the same for every user in a window): they come out
//! at their training mean.

use crate::encoder::ENCODER_KIND;
use crate::metadata::ModelInfo;
use crate::runtime::SessionOptions;
use crate::tensors::{model_accessors, Model};
use crate::Result;
use personaflow_operators::window::features::NUM_FEATURES;
use std::path::Path;

/// File name of the decoder in `models/onnx/`.
pub const DECODER_FILE: &str = "rnn_vae_decoder.onnx";
/// Model kind in the decoder's metadata.
pub const DECODER_KIND: &str = "rnn_vae_decoder";

/// The decoder session, reused for every batch.
#[derive(Debug)]
pub struct VaeDecoder {
    model: Model,
}

impl VaeDecoder {
    /// Opens the decoder at `path`; refuses a model trained on another feature schema.
    pub fn open(path: &Path, options: &SessionOptions) -> Result<Self> {
        Ok(VaeDecoder {
            model: Model::open(path, options, DECODER_KIND)?,
        })
    }

    model_accessors!();

    /// Decodes `z` `[batch, D]` into `[batch, L, F]` features.
    pub fn decode(&mut self, batch: usize, z: &[f32]) -> Result<Vec<f32>> {
        if batch == 0 {
            return Ok(Vec::new());
        }
        let info = &self.model.info;
        let (d, width) = (info.latent_dims, info.sequence_len * NUM_FEATURES);
        Ok(self
            .model
            .run(batch, &[("z", vec![batch, d], z)], &[("features", width)])?
            .pop()
            .unwrap_or_default())
    }

    /// Whether this decoder belongs to the encoder with metadata `encoder` (same latent space,
    /// context vocabulary and normalisation).
    pub fn matches(&self, encoder: &ModelInfo) -> bool {
        let info = &self.model.info;
        encoder.kind == ENCODER_KIND
            && encoder.latent_dims == info.latent_dims
            && encoder.context_vocabulary == info.context_vocabulary
            && encoder.normalisation == info.normalisation
    }
}
