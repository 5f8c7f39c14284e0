//! Resonance: how strongly a user's profile resembles each segment's profile, as a
//! probability distribution over segments (DESIGN.md step 6).
//!
//! Cosine similarity is taken in the centred embedding space (profile and segment means minus
//! the global mean of the segment profiles), turned into probabilities with a softmax at a
//! temperature; a segment "resonates" when its probability reaches a threshold. Users with no
//! history get a context prior (device, os, country) multiplied in.
//!
//! Its operator: [`operator::Resonate`].

pub mod operator;

use crate::event::Context;
use crate::segments::{SegmentTable, CONTEXT_FIELDS};
use crate::vector::{cosine, softmax, Score};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// Default softmax temperature.
pub const DEFAULT_TEMPERATURE: f32 = 0.1;
/// Default probability at which a segment counts as resonating.
pub const DEFAULT_RESONANCE_THRESHOLD: f32 = 0.5;
/// Default: users with fewer active windows of history than this get the context prior.
pub const DEFAULT_COLD_START_WINDOWS: u32 = 1;
/// Default additive (Laplace) smoothing of the context prior's counts.
pub const DEFAULT_PRIOR_SMOOTHING: f32 = 1.0;

/// Resonance settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResonanceConfig {
    /// Softmax temperature (> 0); lower is sharper.
    pub temperature: f32,
    /// Probability at which a segment resonates, in (0, 1].
    pub threshold: f32,
    /// Centre embeddings on the global mean before the cosine.
    pub center: bool,
    /// Users with fewer history windows than this get the context prior.
    pub cold_start_windows: u32,
    /// Laplace smoothing of the context prior.
    pub prior_smoothing: f32,
    /// Segments with fewer profiles in the rolling window are ignored.
    pub min_segment_profiles: i64,
}

impl Default for ResonanceConfig {
    fn default() -> Self {
        ResonanceConfig {
            temperature: DEFAULT_TEMPERATURE,
            threshold: DEFAULT_RESONANCE_THRESHOLD,
            center: true,
            cold_start_windows: DEFAULT_COLD_START_WINDOWS,
            prior_smoothing: DEFAULT_PRIOR_SMOOTHING,
            min_segment_profiles: crate::segments::DEFAULT_MIN_SEGMENT_PROFILES,
        }
    }
}

impl ResonanceConfig {
    /// Checks ranges.
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return Err(Error::invalid_config(
                "resonance.temperature",
                format!("must be > 0, got {}", self.temperature),
            ));
        }
        if !(self.threshold > 0.0 && self.threshold <= 1.0) {
            return Err(Error::invalid_config(
                "resonance.threshold",
                format!("must be in (0, 1], got {}", self.threshold),
            ));
        }
        if !(self.prior_smoothing > 0.0 && self.prior_smoothing.is_finite()) {
            return Err(Error::invalid_config(
                "resonance.prior_smoothing",
                format!("must be > 0, got {}", self.prior_smoothing),
            ));
        }
        Ok(())
    }
}

/// One user's resonance to one segment.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SegmentScore {
    /// Segment name (shared with the segment table's entry: a score's copies allocate nothing
    /// for it).
    pub segment: std::sync::Arc<str>,
    /// Cosine similarity (centred).
    pub cosine: Score,
    /// Probability of the segment.
    pub probability: Score,
    /// Probability >= threshold.
    pub resonating: bool,
}

/// One user's resonance in one window.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Resonance {
    /// The window.
    pub window: u64,
    /// One score per segment, sorted by segment name.
    pub scores: Vec<SegmentScore>,
    /// Index into `scores` of the most probable segment.
    pub top: usize,
    /// Whether the context prior was applied.
    pub cold_start: bool,
}

impl Resonance {
    /// The most probable segment's name.
    pub fn top_segment(&self) -> &str {
        &self.scores[self.top].segment
    }
}

/// Computes a user's resonance against a segment table. Returns `None` when the table has no
/// segments.
///
/// ```
/// use personaflow_operators::Context;
/// use personaflow_operators::resonance::{resonance, ResonanceConfig};
/// use personaflow_operators::segments::{SegmentSum, SegmentTable};
/// let a = SegmentSum::of_profile(&[1.0, 0.0], &Context::default());
/// let b = SegmentSum::of_profile(&[0.0, 1.0], &Context::default());
/// let table = SegmentTable::from_sums([("a", &a), ("b", &b)], 1);
/// let r = resonance(7, &[0.9, 0.1], 3, &Context::default(), &table, &ResonanceConfig::default()).unwrap();
/// assert_eq!(r.top_segment(), "a");
/// assert!(r.scores[0].resonating && !r.scores[1].resonating);
/// ```
pub fn resonance(
    window: u64,
    profile: &[f32],
    history_windows: u32,
    context: &Context,
    table: &SegmentTable,
    cfg: &ResonanceConfig,
) -> Option<Resonance> {
    if table.segments.is_empty() {
        return None;
    }
    let user: Vec<f32> = if cfg.center {
        profile
            .iter()
            .zip(table.global_mean.0.iter().chain(std::iter::repeat(&0.0)))
            .map(|(x, m)| x - m)
            .collect()
    } else {
        profile.to_vec()
    };
    let cosines: Vec<f32> = table
        .segments
        .iter()
        .map(|s| {
            let mean = if cfg.center { &s.centred_mean } else { &s.mean };
            cosine(&user, mean.as_slice())
        })
        .collect();
    let mut probs = softmax(&cosines, cfg.temperature);
    let cold_start = history_windows < cfg.cold_start_windows;
    if cold_start {
        let prior = context_prior(context, table, cfg.prior_smoothing);
        let total: f32 = probs.iter().zip(&prior).map(|(p, q)| p * q).sum();
        if total > 0.0 && total.is_finite() {
            for (p, q) in probs.iter_mut().zip(&prior) {
                *p = *p * q / total;
            }
        }
    }
    let mut top = 0;
    for (i, p) in probs.iter().enumerate() {
        if *p > probs[top] {
            top = i;
        }
    }
    let scores = table
        .segments
        .iter()
        .zip(cosines.iter().zip(&probs))
        .map(|(s, (c, p))| SegmentScore {
            segment: std::sync::Arc::clone(&s.name),
            cosine: Score(*c),
            probability: Score(*p),
            resonating: *p >= cfg.threshold,
        })
        .collect();
    Some(Resonance {
        window,
        scores,
        top,
        cold_start,
    })
}

/// The context prior P(segment | device, os, country) from the segments' context counts:
/// naive Bayes with Laplace smoothing, one probability per segment of the table.
///
/// ```
/// use personaflow_operators::Context;
/// use personaflow_operators::resonance::context_prior;
/// use personaflow_operators::segments::{SegmentSum, SegmentTable};
/// let tv = Context { device: Some("tv".into()), ..Context::default() };
/// let phone = Context { device: Some("phone".into()), ..Context::default() };
/// let a = SegmentSum::of_profile(&[1.0], &tv);
/// let b = SegmentSum::of_profile(&[1.0], &phone);
/// let p = context_prior(&tv, &SegmentTable::from_sums([("a", &a), ("b", &b)], 1), 1.0);
/// assert!(p[0] > p[1]);
/// ```
pub fn context_prior(context: &Context, table: &SegmentTable, smoothing: f32) -> Vec<f32> {
    let total: i64 = table.segments.iter().map(|s| s.profiles).sum();
    let mut logp: Vec<f64> = table
        .segments
        .iter()
        .map(|s| {
            (s.profiles as f64 / total.max(1) as f64)
                .max(f64::MIN_POSITIVE)
                .ln()
        })
        .collect();
    let alpha = f64::from(smoothing);
    for (i, field) in CONTEXT_FIELDS.iter().enumerate() {
        let Some(value) = field.of(context) else {
            continue;
        };
        let vocab = (table.context_vocabulary[i] + 1) as f64;
        for (lp, s) in logp.iter_mut().zip(&table.segments) {
            let seen = s.context_count(*field, value) as f64;
            *lp += ((seen + alpha) / (s.context_totals[i] as f64 + alpha * vocab)).ln();
        }
    }
    let logp: Vec<f32> = logp.into_iter().map(|v| v as f32).collect();
    softmax(&logp, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segments::SegmentSum;
    use crate::vector::softmax;
    use differential_dataflow::difference::Multiply;

    fn table() -> SegmentTable {
        let tv = Context {
            device: Some("tv".into()),
            os: Some("tizen".into()),
            country: Some("US".into()),
        };
        let pc = Context {
            device: Some("pc".into()),
            os: Some("windows".into()),
            country: Some("US".into()),
        };
        let a = SegmentSum::of_profile(&[1.0, 0.0, 0.0], &tv).multiply(&10);
        let b = SegmentSum::of_profile(&[0.0, 1.0, 0.0], &pc).multiply(&10);
        let c = SegmentSum::of_profile(&[0.0, 0.0, 1.0], &pc).multiply(&10);
        SegmentTable::from_sums([("video", &a), ("gamer", &b), ("worker", &c)], 1)
    }

    #[test]
    fn probabilities_sum_to_one_and_follow_cosine() {
        let r = resonance(
            1,
            &[0.0, 0.9, 0.1],
            5,
            &Context::default(),
            &table(),
            &ResonanceConfig::default(),
        )
        .unwrap();
        let total: f32 = r.scores.iter().map(|s| s.probability.0).sum();
        assert!((total - 1.0).abs() < 1e-5);
        assert_eq!(r.top_segment(), "gamer");
        assert!(!r.cold_start);
        let names: Vec<_> = r.scores.iter().map(|s| &*s.segment).collect();
        assert_eq!(names, ["gamer", "video", "worker"]);
    }

    #[test]
    fn cold_start_prior_breaks_ties_by_context() {
        let tv = Context {
            device: Some("tv".into()),
            os: Some("tizen".into()),
            country: Some("US".into()),
        };
        // A profile equally far from every segment: only the prior can decide.
        let r = resonance(
            1,
            &[1.0, 1.0, 1.0],
            0,
            &tv,
            &table(),
            &ResonanceConfig::default(),
        )
        .unwrap();
        assert!(r.cold_start);
        assert_eq!(r.top_segment(), "video");
        let warm = resonance(
            1,
            &[1.0, 1.0, 1.0],
            3,
            &tv,
            &table(),
            &ResonanceConfig::default(),
        )
        .unwrap();
        assert!(!warm.cold_start);
        let p: Vec<f32> = warm.scores.iter().map(|s| s.probability.0).collect();
        assert!(
            (p[0] - p[1]).abs() < 1e-5,
            "without the prior the tie stays"
        );
    }

    #[test]
    fn empty_table_gives_nothing_and_config_is_validated() {
        let r = resonance(
            1,
            &[1.0],
            0,
            &Context::default(),
            &SegmentTable::default(),
            &ResonanceConfig::default(),
        );
        assert!(r.is_none());
        let bad = ResonanceConfig {
            temperature: 0.0,
            ..ResonanceConfig::default()
        };
        assert!(bad.validate().is_err());
        assert!(ResonanceConfig::default().validate().is_ok());
    }

    /// The prior straight from its definition: counts and vocabularies recomputed by scanning.
    fn direct_prior(context: &Context, table: &SegmentTable, alpha: f64) -> Vec<f32> {
        let total: i64 = table.segments.iter().map(|s| s.profiles).sum();
        let mut logp: Vec<f64> = table
            .segments
            .iter()
            .map(|s| (s.profiles as f64 / total as f64).ln())
            .collect();
        for field in CONTEXT_FIELDS {
            let Some(value) = field.of(context) else {
                continue;
            };
            let mut vocab: Vec<&str> = table
                .segments
                .iter()
                .flat_map(|s| &s.context)
                .filter(|((f, _), _)| *f == field)
                .map(|((_, v), _)| v.as_str())
                .collect();
            vocab.sort_unstable();
            vocab.dedup();
            for (lp, s) in logp.iter_mut().zip(&table.segments) {
                let count = |pred: &dyn Fn(&str) -> bool| -> f64 {
                    s.context
                        .iter()
                        .filter(|((f, v), _)| *f == field && pred(v))
                        .map(|(_, c)| *c as f64)
                        .sum()
                };
                let seen = count(&|v| v == value);
                let field_total = count(&|_| true);
                *lp += ((seen + alpha) / (field_total + alpha * (vocab.len() + 1) as f64)).ln();
            }
        }
        softmax(&logp.iter().map(|v| *v as f32).collect::<Vec<_>>(), 1.0)
    }

    #[test]
    fn context_prior_matches_its_definition() {
        let devices = ["tv", "pc", "phone", "console"];
        let countries = ["DE", "US", "BR"];
        let mut sums = Vec::new();
        for (i, name) in ["a", "b", "c", "d"].iter().enumerate() {
            let mut acc = SegmentSum::default();
            use differential_dataflow::difference::Semigroup;
            for j in 0..(5 + 3 * i) {
                let ctx = Context {
                    device: Some(devices[(i * j + j) % devices.len()].into()),
                    os: (j % 3 != 0).then(|| format!("os{}", (i + j) % 2).into()),
                    country: Some(countries[(i + 2 * j) % countries.len()].into()),
                };
                acc.plus_equals(&SegmentSum::of_profile(&[i as f32, j as f32], &ctx));
            }
            sums.push((*name, acc));
        }
        let table = SegmentTable::from_sums(sums.iter().map(|(n, s)| (*n, s)), 1);
        for device in ["tv", "console", "unseen"] {
            for os in [None, Some("os1")] {
                let ctx = Context {
                    device: Some(device.into()),
                    os: os.map(Into::into),
                    country: Some("BR".into()),
                };
                let fast = context_prior(&ctx, &table, 0.5);
                let direct = direct_prior(&ctx, &table, 0.5);
                for (f, d) in fast.iter().zip(&direct) {
                    assert!((f - d).abs() < 1e-6, "{ctx:?}: {fast:?} vs {direct:?}");
                }
            }
        }
        // Centred means are the means minus the global mean.
        for s in &table.segments {
            for ((c, m), g) in s
                .centred_mean
                .0
                .iter()
                .zip(&s.mean.0)
                .zip(&table.global_mean.0)
            {
                assert!((c - (m - g)).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn temperature_controls_resonating() {
        let hot = ResonanceConfig {
            temperature: 10.0,
            ..ResonanceConfig::default()
        };
        let r = resonance(1, &[0.0, 1.0, 0.0], 5, &Context::default(), &table(), &hot).unwrap();
        assert!(
            r.scores.iter().all(|s| !s.resonating),
            "a flat distribution"
        );
    }
}
