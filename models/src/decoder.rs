//! The RNN-VAE decoder (`models/onnx/rnn_vae_decoder.onnx`): latent points `z [B, D]` back to
//! feature sequences `features [B, L, F]` in the pipeline's units, for synthetic users. The VAE
//! does not model the calendar features (the same for every user in a window): they come out
//! at their training mean.
//!
//! The step decoder (`models/onnx/rnn_vae_decoder_step.onnx`, derived from the decoder by
//! `models/training/export_decoder_step.py`: the same weights) runs one recurrent step per call
//! and hands its state back, so a synthetic user decodes a step only for a window it is
//! active in and keeps `hidden` floats between windows instead of its whole sequence.

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
/// File name of the step decoder in `models/onnx/`.
pub const DECODER_STEP_FILE: &str = "rnn_vae_decoder_step.onnx";
/// Model kind in the step decoder's metadata.
pub const DECODER_STEP_KIND: &str = "rnn_vae_decoder_step";

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

/// The step decoder session: one recurrent step of [`VaeDecoder`] per call.
#[derive(Debug)]
pub struct VaeDecoderStep {
    model: Model,
}

impl VaeDecoderStep {
    /// Opens the step decoder at `path`; refuses a model trained on another feature schema or
    /// without the width of its state.
    pub fn open(path: &Path, options: &SessionOptions) -> Result<Self> {
        let model = Model::open(path, options, DECODER_STEP_KIND)?;
        if model.info.hidden == 0 {
            return Err(model.shape_error("its metadata gives no state width (hidden)".into()));
        }
        Ok(VaeDecoderStep { model })
    }

    model_accessors!();

    /// Width of the state, `H`.
    pub fn hidden(&self) -> usize {
        self.model.info.hidden
    }

    /// One step for `batch` points: `z [batch, D]`, their states `h [batch, H]` and `first
    /// [batch]` (1: start the sequence, ignoring `h`; 0: continue it). Returns the step's
    /// features `[batch, F]` and the next states `[batch, H]`.
    ///
    /// Called `L` times (first 1, then 0), it gives [`VaeDecoder::decode`]'s `L` steps.
    pub fn step(
        &mut self,
        batch: usize,
        z: &[f32],
        h: &[f32],
        first: &[f32],
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        if batch == 0 {
            return Ok((Vec::new(), Vec::new()));
        }
        let (d, hidden) = (self.model.info.latent_dims, self.model.info.hidden);
        let mut out = self.model.run(
            batch,
            &[
                ("z", vec![batch, d], z),
                ("h", vec![batch, hidden], h),
                ("first", vec![batch, 1], first),
            ],
            &[("features", NUM_FEATURES), ("h_next", hidden)],
        )?;
        let h_next = out.pop().unwrap_or_default();
        let features = out.pop().unwrap_or_default();
        Ok((features, h_next))
    }
}
