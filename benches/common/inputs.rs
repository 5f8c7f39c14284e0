//! Model inputs for the inference benches: sequences built from the parity fixtures (real
//! simulator features, `models/tests/fixtures/parity.json`), cycled and scaled slightly so that
//! rows differ; the models' cost does not depend on the values.

use personaflow_operators::window::features::NUM_FEATURES;
use serde_json::Value;
use std::path::Path;

/// `n` sequences as the models take them: row-major features, masks and contexts.
pub struct Inputs {
    /// Steps per sequence, `L`.
    pub steps: usize,
    /// Width of a context row.
    pub context_width: usize,
    /// `n x L x F` features.
    pub features: Vec<f32>,
    /// `n x L` masks.
    pub mask: Vec<f32>,
    /// `n x C` contexts.
    pub context: Vec<f32>,
}

/// `n` sequences built from the parity fixtures.
pub fn inputs(n: usize) -> Inputs {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tests/fixtures/parity.json"),
    )
    .expect("models/tests/fixtures/parity.json (run models/training/train.sh)");
    let v: Value = serde_json::from_str(&text).expect("fixtures are JSON");
    let array = |k: &str| -> (Vec<usize>, Vec<f32>) {
        let shape = v[k]["shape"]
            .as_array()
            .expect("shape")
            .iter()
            .map(|d| d.as_u64().expect("dim") as usize)
            .collect();
        let data = v[k]["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|x| x.as_f64().expect("number") as f32)
            .collect();
        (shape, data)
    };
    let (fs, fd) = array("features");
    let (_, md) = array("mask");
    let (cs, cd) = array("context");
    let (rows, steps, c) = (fs[0], fs[1], cs[1]);
    let step = steps * NUM_FEATURES;
    let mut out = Inputs {
        steps,
        context_width: c,
        features: Vec::with_capacity(n * step),
        mask: Vec::with_capacity(n * steps),
        context: Vec::with_capacity(n * c),
    };
    for i in 0..n {
        let r = i % rows;
        let scale = 1.0 + (i / rows) as f32 * 1e-4;
        out.features
            .extend(fd[r * step..(r + 1) * step].iter().map(|x| x * scale));
        out.mask.extend_from_slice(&md[r * steps..(r + 1) * steps]);
        out.context.extend_from_slice(&cd[r * c..(r + 1) * c]);
    }
    out
}
