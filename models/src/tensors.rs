//! Sequences to the models' input tensors, and running a session on them.

use crate::metadata::ContextVocabulary;
use crate::{Error, Result};
use ort::session::{Session, SessionInputValue};
use ort::value::TensorRef;
use personaflow_operators::features::NUM_FEATURES;
use personaflow_operators::sequence::Sequence;
use std::borrow::Cow;

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
