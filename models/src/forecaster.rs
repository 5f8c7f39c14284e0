//! The LSTM demand forecaster (`models/onnx/demand_forecaster.onnx`) as the pipeline's
//! [`Forecaster`].
//!
//! Inputs `features [B, L, F]` and `mask [B, L]`; output `forecast [B, H, 2]`: predicted
//! requests (events) and bytes for each of the next `H` windows.

use crate::runtime::SessionOptions;
use crate::tensors::{model_accessors, Model, SequenceBatch};
use crate::Result;
use personaflow_operators::forecast::{Forecast, Forecaster};
use personaflow_operators::sequences::Sequence;
use personaflow_operators::window::features::NUM_FEATURES;
use std::path::Path;

/// File name of the forecaster in `models/onnx/`.
pub const FORECASTER_FILE: &str = "demand_forecaster.onnx";
/// Model kind in the forecaster's metadata.
pub const FORECASTER_KIND: &str = "demand_forecaster";
/// Name of the LSTM forecaster in outputs.
pub const LSTM_FORECASTER_NAME: &str = "lstm-v1";

/// The forecaster session, reused for every batch.
#[derive(Debug)]
pub struct OnnxForecaster {
    model: Model,
}

impl OnnxForecaster {
    /// Opens the forecaster at `path`; refuses a model trained on another feature schema.
    pub fn open(path: &Path, options: &SessionOptions) -> Result<Self> {
        Ok(OnnxForecaster {
            model: Model::open(path, options, FORECASTER_KIND)?,
        })
    }

    model_accessors!();

    /// Runs the forecaster on raw tensors: `features` `[batch, steps, F]` and `mask`
    /// `[batch, steps]`; returns `[batch, H, 2]`.
    pub fn run(
        &mut self,
        batch: usize,
        steps: usize,
        features: &[f32],
        mask: &[f32],
    ) -> Result<Vec<f32>> {
        if batch == 0 {
            return Ok(Vec::new());
        }
        let width = self.model.info.horizon * 2;
        Ok(self
            .model
            .run(
                batch,
                &[
                    ("features", vec![batch, steps, NUM_FEATURES], features),
                    ("mask", vec![batch, steps], mask),
                ],
                &[("forecast", width)],
            )?
            .pop()
            .unwrap_or_default())
    }

    /// Forecasts sequences.
    pub fn forecast(&mut self, seqs: &[&Sequence]) -> Result<Vec<Forecast>> {
        let b = SequenceBatch::pack(&self.model.path, seqs, None)?;
        let out = self.run(b.batch, b.steps, &b.features, &b.mask)?;
        let h = self.model.info.horizon;
        out.chunks_exact(2 * h)
            .map(|row| {
                let requests = row.iter().step_by(2).copied().collect();
                let bytes = row.iter().skip(1).step_by(2).copied().collect();
                Forecast::try_new(requests, bytes)
                    .map_err(|e| self.model.shape_error(e.to_string()))
            })
            .collect()
    }
}

impl Forecaster for OnnxForecaster {
    fn name(&self) -> &str {
        LSTM_FORECASTER_NAME
    }

    fn horizon(&self) -> usize {
        self.model.info.horizon
    }

    fn forecast_batch(
        &mut self,
        batch: &[&Sequence],
    ) -> personaflow_operators::Result<Vec<Forecast>> {
        self.forecast(batch)
            .map_err(|e| personaflow_operators::Error::Forecaster {
                forecaster: LSTM_FORECASTER_NAME.to_string(),
                reason: e.to_string(),
            })
    }
}
