//! An open model (session, metadata, provider, timing), sequences to its input tensors, and
//! running it.

use crate::metadata::{ContextVocabulary, ModelInfo};
use crate::runtime::{open_session, SessionOptions};
use crate::stats::InferenceStats;
use crate::{Error, Result};
use ort::session::{Session, SessionInputValue};
use ort::value::TensorRef;
use personaflow_operators::sequences::Sequence;
use personaflow_operators::window::features::NUM_FEATURES;
use std::borrow::Cow;
use std::path::Path;

/// A batch of sequences as row-major tensors: features `[B, L, F]`, mask `[B, L]` (1 where the
/// user was active) and context `[B, C]` (one-hot).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct SequenceBatch {
    pub batch: usize,
    pub steps: usize,
    pub features: Vec<f32>,
    pub mask: Vec<f32>,
    pub context: Vec<f32>,
}

impl SequenceBatch {
    /// Packs `seqs` (all of one length) with `vocab` (`None`: no context input).
    pub fn pack(
        model: &str,
        seqs: &[&Sequence],
        vocab: Option<&ContextVocabulary>,
    ) -> Result<Self> {
        let steps = seqs.first().map_or(0, |s| s.len());
        if let Some(s) = seqs.iter().find(|s| s.len() != steps) {
            return Err(Error::Shape {
                model: model.to_string(),
                reason: format!("a batch mixes sequences of {} and {steps} steps", s.len()),
            });
        }
        let width = vocab.map_or(0, ContextVocabulary::width);
        let mut out = SequenceBatch {
            batch: seqs.len(),
            steps,
            features: Vec::with_capacity(seqs.len() * steps * NUM_FEATURES),
            mask: Vec::with_capacity(seqs.len() * steps),
            context: vec![0.0; seqs.len() * width],
        };
        for (i, s) in seqs.iter().enumerate() {
            out.features.extend_from_slice(s.features.as_slice());
            out.mask
                .extend(s.active.iter().map(|a| f32::from(u8::from(*a))));
            if let Some(v) = vocab {
                v.encode(&s.context, &mut out.context[i * width..(i + 1) * width]);
            }
        }
        Ok(out)
    }
}

/// Runs `session` on named `[shape, data]` inputs; returns the named outputs, each as its
/// shape and values.
pub(crate) fn run(
    session: &mut Session,
    model: &str,
    inputs: &[(&str, Vec<usize>, &[f32])],
    outputs: &[&str],
) -> Result<Vec<(Vec<usize>, Vec<f32>)>> {
    let err = |reason: String| Error::Ort {
        model: model.to_string(),
        reason,
    };
    let mut values: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = Vec::with_capacity(inputs.len());
    for (name, shape, data) in inputs {
        let expected: usize = shape.iter().product();
        if expected != data.len() {
            return Err(Error::Shape {
                model: model.to_string(),
                reason: format!("input {name}: {} values for shape {shape:?}", data.len()),
            });
        }
        let tensor = TensorRef::from_array_view((shape.clone(), *data))
            .map_err(|e| err(format!("input {name}: {e}")))?;
        values.push((Cow::Borrowed(*name), tensor.into()));
    }
    let result = session
        .run(values)
        .map_err(|e| err(format!("inference failed: {e}")))?;
    outputs
        .iter()
        .map(|name| {
            let value = result
                .get(*name)
                .ok_or_else(|| err(format!("no output named {name}")))?;
            let (shape, data) = value
                .try_extract_tensor::<f32>()
                .map_err(|e| err(format!("output {name}: {e}")))?;
            let shape = shape.iter().map(|d| (*d).max(0) as usize).collect();
            Ok((shape, data.to_vec()))
        })
        .collect()
}

/// How many copies of a single row a model runs ([`Model::run`]): the smallest batch whose
/// kernels give each row the bits every larger batch gives it.
pub(crate) const SINGLE_ROW_COPIES: usize = 2;

/// An open model: the session (reused for every batch), its checked metadata, the execution
/// provider it runs on and where its inference time goes. Each model type wraps one.
#[derive(Debug)]
pub(crate) struct Model {
    session: Session,
    pub info: ModelInfo,
    pub path: String,
    pub provider: &'static str,
    pub stats: InferenceStats,
}

impl Model {
    /// Opens the model at `path`, refusing it unless its metadata says `kind` and the
    /// pipeline's feature schema.
    pub fn open(path: &Path, options: &SessionOptions, kind: &str) -> Result<Self> {
        let opened = open_session(path, options)?;
        let model = path.display().to_string();
        let info = ModelInfo::of_session(&opened.session, &model, kind)?;
        Ok(Model {
            session: opened.session,
            info,
            path: model,
            provider: opened.provider,
            stats: InferenceStats::default(),
        })
    }

    /// Runs a batch of `rows` rows (timed into the stats); returns the named outputs' values,
    /// each checked to hold `rows * width` values.
    ///
    /// A row's outputs do not depend on the batch it runs in: onnxruntime's CPU kernels give a
    /// row the same bits in a batch of any size from two up, but take another path for a
    /// single row (a recurrent step's matrix product becomes a matrix-vector one) whose last
    /// bits differ. So a batch of one runs as two copies of its row ([`SINGLE_ROW_COPIES`]),
    /// and how the pipeline cuts its batches (by window, by run of windows, by worker) never
    /// shows in its outputs.
    pub fn run(
        &mut self,
        rows: usize,
        inputs: &[(&str, Vec<usize>, &[f32])],
        outputs: &[(&str, usize)],
    ) -> Result<Vec<Vec<f32>>> {
        let started = std::time::Instant::now();
        let names: Vec<&str> = outputs.iter().map(|(n, _)| *n).collect();
        let copies = match rows == 1 && inputs.iter().all(|(_, s, _)| s.first() == Some(&1)) {
            true => SINGLE_ROW_COPIES,
            false => 1,
        };
        let values = if copies == 1 {
            run(&mut self.session, &self.path, inputs, &names)?
        } else {
            let repeated: Vec<(Vec<usize>, Vec<f32>)> = inputs
                .iter()
                .map(|(_, shape, data)| {
                    let mut shape = shape.clone();
                    shape[0] = copies;
                    (shape, data.repeat(copies))
                })
                .collect();
            let padded: Vec<(&str, Vec<usize>, &[f32])> = inputs
                .iter()
                .zip(&repeated)
                .map(|((name, _, _), (shape, data))| (*name, shape.clone(), data.as_slice()))
                .collect();
            let mut values = run(&mut self.session, &self.path, &padded, &names)?;
            for (v, (_, width)) in values.iter_mut().zip(outputs) {
                if v.1.len() == copies * width {
                    v.1.truncate(*width);
                }
            }
            values
        };
        self.stats.record(rows, started.elapsed());
        values
            .into_iter()
            .zip(outputs)
            .map(|((_, v), (name, width))| {
                if v.len() == rows * width {
                    Ok(v)
                } else {
                    Err(self.shape_error(format!(
                        "output {name}: {} values for {rows} rows of {width}",
                        v.len()
                    )))
                }
            })
            .collect()
    }

    /// An error about shapes, naming the model.
    pub fn shape_error(&self, reason: String) -> Error {
        Error::Shape {
            model: self.path.clone(),
            reason,
        }
    }
}

/// The accessors every model type has, delegated to its [`Model`] field `model`.
macro_rules! model_accessors {
    () => {
        /// The model's metadata.
        pub fn info(&self) -> &crate::metadata::ModelInfo {
            &self.model.info
        }

        /// The execution provider the session runs on.
        pub fn provider(&self) -> &'static str {
            self.model.provider
        }

        /// Records inference time into `stats` (shared with other sessions) from now on.
        pub fn with_stats(mut self, stats: crate::stats::InferenceStats) -> Self {
            self.model.stats = stats;
            self
        }
    };
}
pub(crate) use model_accessors;
