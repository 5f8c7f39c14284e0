//! The `Embedder` boundary: turns sequences into latent profiles (DESIGN.md step 4).
//!
//! The RNN-VAE encoder of the models crate implements [`Embedder`]; this crate ships the
//! [`StandardisedEmbedder`] baseline, which needs no model.
//!
//! Its operator: [`operator::EmbedProfiles`].

pub mod operator;

use crate::sequences::Sequence;
use crate::window::features::{FEATURES, NUM_FEATURES};
use crate::Result;

/// The embedding of one sequence.
#[derive(Clone, Debug, PartialEq)]
pub struct Embedding {
    /// The latent profile.
    pub vector: Vec<f32>,
    /// Anomaly score (e.g. reconstruction error), when the embedder has one.
    pub anomaly_score: Option<f32>,
}

/// Turns batches of sequences into profiles. Called once per window with every active user's
/// sequence on a worker, so implementations can batch inference.
pub trait Embedder {
    /// A short name recorded in outputs (e.g. `standardised-v1`).
    fn name(&self) -> &str;
    /// Dimensions of the embeddings it returns.
    fn dims(&self) -> usize;
    /// Embeds a batch; returns one embedding per sequence, in order.
    fn embed_batch(&mut self, batch: &[&Sequence]) -> Result<Vec<Embedding>>;
    /// Embeds a batch whose anomaly scores are not wanted; returns each sequence's
    /// [`Embedding::vector`], equal to what [`embed_batch`](Self::embed_batch) gives for the
    /// same batch. An embedder with a cheaper path to the vectors alone overrides it (the
    /// RNN-VAE runs its encoder without the decoder pass that scores the reconstruction).
    fn embed_vectors(&mut self, batch: &[&Sequence]) -> Result<Vec<Vec<f32>>> {
        Ok(self
            .embed_batch(batch)?
            .into_iter()
            .map(|e| e.vector)
            .collect())
    }
}

/// Baseline embedder: each feature standardised with the reference statistics of the feature
/// schema, averaged over the sequence's active windows (calendar features left out), plus the
/// standardised share of active windows. No training, deterministic, cheap.
///
/// ```
/// use personaflow_operators::embed::{Embedder, StandardisedEmbedder};
/// use personaflow_operators::{Event, WindowSpec};
/// use personaflow_operators::window::features::{WindowAgg, WindowSummary};
/// use personaflow_operators::sequences::build_sequence;
/// let s = WindowSummary::new(&WindowAgg::of(&Event::new(0, "u", "a")), 0, &WindowSpec::default());
/// let seq = build_sequence(0, 16, &[(0, &s)]).unwrap();
/// let mut e = StandardisedEmbedder::default();
/// let out = e.embed_batch(&[&seq]).unwrap();
/// assert_eq!(out[0].vector.len(), e.dims());
/// ```
#[derive(Clone, Debug, Default)]
pub struct StandardisedEmbedder {
    _private: (),
}

/// Name of the baseline embedder in outputs.
pub const STANDARDISED_EMBEDDER_NAME: &str = "standardised-v1";
/// Reference centre of the active-window share.
const ACTIVITY_MEAN: f32 = 0.5;
/// Reference scale of the active-window share.
const ACTIVITY_SCALE: f32 = 0.25;

impl StandardisedEmbedder {
    fn behavioural() -> impl Iterator<Item = usize> {
        (0..NUM_FEATURES).filter(|i| !FEATURES[*i].calendar)
    }

    /// Embeds one sequence.
    ///
    /// Every feature of each active step is standardised and summed, the calendar ones
    /// included (left out at the end): a loop over the whole row, which the compiler turns
    /// into vector instructions, where picking the behavioural features inside the loop kept
    /// it scalar. Each kept feature's sum takes the same operations in the same order either
    /// way, so the embedding is the same to the bit (tested against the per-feature loop).
    pub fn embed_one(&self, seq: &Sequence) -> Vec<f32> {
        let mut acc = [0f64; NUM_FEATURES];
        let mut active = 0usize;
        for step in seq.active_steps() {
            active += 1;
            let step = &step[..NUM_FEATURES];
            for (((slot, x), mean), scale) in
                acc.iter_mut().zip(step).zip(&REFERENCE.0).zip(&REFERENCE.1)
            {
                *slot += f64::from((x - mean) / scale);
            }
        }
        let n = active.max(1) as f64;
        // Sized once: collecting the filtered features grew the vector four times, and the
        // activity share a fifth (2.2% of a model-free run's samples in the allocator).
        let mut out = Vec::with_capacity(BEHAVIOURAL_DIMS + 1);
        out.extend(Self::behavioural().map(|i| (acc[i] / n) as f32));
        let share = active as f32 / seq.len().max(1) as f32;
        out.push((share - ACTIVITY_MEAN) / ACTIVITY_SCALE);
        out
    }
}

/// The behavioural (not calendar) features: the embedding's dimensions but the last.
const BEHAVIOURAL_DIMS: usize = {
    let (mut n, mut i) = (0, 0);
    while i < NUM_FEATURES {
        if !FEATURES[i].calendar {
            n += 1;
        }
        i += 1;
    }
    n
};

/// Each feature's reference mean and scale ([`FEATURES`]), as two arrays.
const REFERENCE: ([f32; NUM_FEATURES], [f32; NUM_FEATURES]) = {
    let (mut mean, mut scale) = ([0f32; NUM_FEATURES], [0f32; NUM_FEATURES]);
    let mut i = 0;
    while i < NUM_FEATURES {
        mean[i] = FEATURES[i].reference_mean;
        scale[i] = FEATURES[i].reference_scale;
        i += 1;
    }
    (mean, scale)
};

impl Embedder for StandardisedEmbedder {
    fn name(&self) -> &str {
        STANDARDISED_EMBEDDER_NAME
    }

    fn dims(&self) -> usize {
        BEHAVIOURAL_DIMS + 1
    }

    fn embed_batch(&mut self, batch: &[&Sequence]) -> Result<Vec<Embedding>> {
        Ok(batch
            .iter()
            .map(|s| Embedding {
                vector: self.embed_one(s),
                anomaly_score: None,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sequences::build_sequence;
    use crate::window::features::{WindowAgg, WindowSummary};
    use crate::{Event, WindowSpec};

    /// The embedding as it was computed before the whole-row loop: the behavioural features
    /// picked one by one.
    fn embed_one_per_feature(seq: &Sequence) -> Vec<f32> {
        let dims: Vec<usize> = StandardisedEmbedder::behavioural().collect();
        let mut acc = vec![0f64; dims.len()];
        let mut active = 0usize;
        for step in seq.active_steps() {
            active += 1;
            for (slot, &i) in acc.iter_mut().zip(&dims) {
                let def = &FEATURES[i];
                *slot += f64::from((step[i] - def.reference_mean) / def.reference_scale);
            }
        }
        let n = active.max(1) as f64;
        let mut out: Vec<f32> = acc.into_iter().map(|v| (v / n) as f32).collect();
        let share = active as f32 / seq.len().max(1) as f32;
        out.push((share - ACTIVITY_MEAN) / ACTIVITY_SCALE);
        out
    }

    #[test]
    fn the_whole_row_loop_gives_the_per_feature_embedding_to_the_bit() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(21);
        let embedder = StandardisedEmbedder::default();
        for case in 0..500 {
            let len = rng.random_range(1..=24);
            let mut features = vec![0f32; len * NUM_FEATURES];
            let active: Vec<bool> = (0..len)
                .map(|i| i == len - 1 || rng.random_bool(0.6))
                .collect();
            for (step, row) in features.chunks_mut(NUM_FEATURES).enumerate() {
                if active[step] {
                    for x in row {
                        // Wide and awkward values: tiny, huge, negative, subnormal.
                        *x = match rng.random_range(0..4) {
                            0 => rng.random_range(-3.0f32..3.0),
                            1 => rng.random_range(-1e30f32..1e30),
                            2 => rng.random_range(-1e-38f32..1e-38),
                            _ => rng.random_range(0.0f32..20.0),
                        };
                    }
                }
            }
            // A real sequence's other fields; its matrix and mask replaced.
            let spec = WindowSpec::default();
            let one = WindowSummary::new(&WindowAgg::of(&Event::new(0, "u", "a")), 0, &spec);
            let mut seq = build_sequence(0, len, &[(0, &one)]).unwrap();
            seq.features = std::sync::Arc::new(crate::vector::Vector(features));
            seq.active = active.into();
            let got = embedder.embed_one(&seq);
            let want = embed_one_per_feature(&seq);
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(
                    g.to_bits(),
                    w.to_bits(),
                    "case {case}: {got:?} against {want:?}"
                );
            }
        }
    }

    #[test]
    fn embedding_averages_active_windows() {
        let spec = WindowSpec::default();
        let one = WindowSummary::new(&WindowAgg::of(&Event::new(0, "u", "a")), 0, &spec);
        let mut agg = WindowAgg::empty();
        for i in 0..9 {
            agg.add(&Event::new(60_000 + i, "u", "a"));
        }
        let nine = WindowSummary::new(&agg, 1, &spec);
        let e = StandardisedEmbedder::default();
        let solo = e.embed_one(&build_sequence(1, 4, &[(1, &nine)]).unwrap());
        let both = e.embed_one(&build_sequence(1, 4, &[(0, &one), (1, &nine)]).unwrap());
        // Feature 0 is ln(1+events): (ln 2 + ln 10) / 2 standardised.
        let expect = ((2f32.ln() + 10f32.ln()) / 2.0 - FEATURES[0].reference_mean)
            / FEATURES[0].reference_scale;
        assert!((both[0] - expect).abs() < 1e-5);
        assert!(solo[0] > both[0]);
        assert!(
            both[both.len() - 1] > solo[solo.len() - 1],
            "more active windows"
        );
        assert_eq!(solo.len(), e.dims());
    }
}
