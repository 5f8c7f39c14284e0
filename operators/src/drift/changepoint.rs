//! Online change-point detection on a metric series (one row of `D` values per step): a
//! windowed, rank-based CUSUM with a permutation test, made for series that trend and wander
//! (prices, demand, a drift distance) rather than for samples of many users per step, which
//! [`crate::drift`] handles.
//!
//! At each step, over the last `window` rows:
//!
//! 1. each column is detrended (least-squares slope) and quasi-differenced by its own AR(1)
//!    persistence `phi = clip(1 + 2 rho, 0, 1)`, with `rho` the lag-1 autocorrelation of its
//!    robustly scaled first differences: a random walk is differenced, white noise is not, so
//!    a level shift shows in both; the absolute first differences are added as a volatility
//!    feature;
//! 2. every feature column is replaced by its centred, scaled ranks (scale-free, robust);
//! 3. the statistic is the largest standardised CUSUM `S_k² N / (k (N - k))` over splits
//!    `k` at least `margin` rows from either end, averaged over columns;
//! 4. a permutation test (rows shuffled, seeded) must find no more than
//!    `floor(alpha (P + 1) - 1)` permutations at least as extreme: then the change is
//!    reported at the best split, and the window restarts from there (the reset).

use crate::personas::rng_for;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Rows the detector looks back over.
pub const DEFAULT_WINDOW: usize = 100;
/// Rows a split keeps on either side.
pub const DEFAULT_MARGIN: usize = 5;
/// Significance level of the permutation test.
pub const DEFAULT_ALPHA: f64 = 0.005;
/// Permutations.
pub const DEFAULT_PERMUTATIONS: usize = 199;

/// Settings of the change-point detector.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChangeConfig {
    /// Rows looked back over.
    pub window: usize,
    /// Rows a split keeps on either side.
    pub margin: usize,
    /// Significance level.
    pub alpha: f64,
    /// Permutations of the test.
    pub permutations: usize,
    /// Seed of the permutations.
    pub seed: u64,
}

impl Default for ChangeConfig {
    fn default() -> Self {
        ChangeConfig {
            window: DEFAULT_WINDOW,
            margin: DEFAULT_MARGIN,
            alpha: DEFAULT_ALPHA,
            permutations: DEFAULT_PERMUTATIONS,
            seed: 0,
        }
    }
}

/// A change found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// Index of the first row of the new regime.
    pub location: u64,
    /// Index of the row the change was detected at.
    pub detected_at: u64,
    /// The test statistic.
    pub statistic: f64,
    /// Permutation p-value: (permutations at least as extreme + 1) / (permutations + 1).
    pub p_value: f64,
}

/// The online detector.
#[derive(Clone, Debug)]
pub struct ChangeDetector {
    config: ChangeConfig,
    buf: VecDeque<Vec<f64>>,
    start: u64,
    next: u64,
    rng: ChaCha8Rng,
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Average ranks (ties share their mean rank), centred and divided by their population
/// standard deviation; all zeros when the column is constant.
fn scaled_ranks(col: &[f64]) -> Vec<f64> {
    let n = col.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| col[a].total_cmp(&col[b]));
    let mut ranks = vec![0.0; n];
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && col[order[j + 1]] == col[order[i]] {
            j += 1;
        }
        let r = (i + j) as f64 / 2.0;
        for &k in &order[i..=j] {
            ranks[k] = r;
        }
        i = j + 1;
    }
    let mean = ranks.iter().sum::<f64>() / n.max(1) as f64;
    let sd = (ranks.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / n.max(1) as f64).sqrt();
    if sd <= 1e-12 {
        return vec![0.0; n];
    }
    ranks.into_iter().map(|r| (r - mean) / sd).collect()
}

/// The feature columns of a window of rows (see the module docs), `N = rows - 1` long each.
fn features(rows: &VecDeque<Vec<f64>>) -> Vec<Vec<f64>> {
    let n = rows.len();
    let dims = rows.front().map_or(0, Vec::len);
    let mut cols = Vec::with_capacity(2 * dims);
    let mut vol = Vec::with_capacity(dims);
    for j in 0..dims {
        let x: Vec<f64> = rows.iter().map(|r| r[j]).collect();
        let d: Vec<f64> = x.windows(2).map(|w| w[1] - w[0]).collect();
        let med = median(&mut d.clone());
        let mut dev: Vec<f64> = d.iter().map(|v| (v - med).abs()).collect();
        let mad = 1.4826 * median(&mut dev);
        let mad = if mad > 0.0 { mad } else { 1.0 };
        let c: Vec<f64> = d
            .iter()
            .map(|v| ((v - med) / mad).clamp(-3.0, 3.0))
            .collect();
        let denom: f64 = c.iter().map(|v| v * v).sum();
        let rho = if denom > 0.0 {
            c.windows(2).map(|w| w[0] * w[1]).sum::<f64>() / denom
        } else {
            0.0
        };
        let phi = (1.0 + 2.0 * rho).clamp(0.0, 1.0);
        let tmean = (n as f64 - 1.0) / 2.0;
        let xmean = x.iter().sum::<f64>() / n as f64;
        let (mut sxy, mut sxx) = (0.0, 0.0);
        for (i, v) in x.iter().enumerate() {
            let t = i as f64 - tmean;
            sxy += t * (v - xmean);
            sxx += t * t;
        }
        let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
        let y: Vec<f64> = x
            .iter()
            .enumerate()
            .map(|(i, v)| v - slope * (i as f64 - tmean))
            .collect();
        cols.push(y.windows(2).map(|w| w[1] - phi * w[0]).collect());
        vol.push(d.iter().map(|v| (v - med).abs()).collect());
    }
    cols.extend(vol);
    cols
}

/// The largest column-averaged standardised CUSUM over splits `margin..=N - margin` of the
/// rows in `order`, and its first arg-max.
fn statistic(z: &[Vec<f64>], order: &[usize], margin: usize) -> (f64, usize) {
    let n = order.len();
    let mut sums = vec![0.0; z.len()];
    let mut best = (f64::NEG_INFINITY, margin);
    for (k, &row) in order.iter().enumerate().take(n - margin) {
        for (s, col) in sums.iter_mut().zip(z) {
            *s += col[row];
        }
        let k = k + 1;
        if k < margin {
            continue;
        }
        let scale = n as f64 / (k as f64 * (n - k) as f64);
        let value = sums.iter().map(|s| s * s * scale).sum::<f64>() / z.len() as f64;
        if value > best.0 {
            best = (value, k);
        }
    }
    best
}

impl ChangeDetector {
    /// A detector with `config`.
    pub fn new(config: ChangeConfig) -> Self {
        let rng = rng_for(config.seed, 0, 5);
        ChangeDetector {
            config,
            buf: VecDeque::new(),
            start: 0,
            next: 0,
            rng,
        }
    }

    /// Feeds the next row; returns the change it completes, if any.
    pub fn update(&mut self, row: &[f64]) -> Option<Change> {
        let at = self.next;
        self.next += 1;
        self.buf.push_back(row.to_vec());
        if self.buf.len() > self.config.window {
            self.buf.pop_front();
            self.start += 1;
        }
        let m = self.config.margin.max(1);
        if self.buf.len() < 2 * m + 1 {
            return None;
        }
        let z: Vec<Vec<f64>> = features(&self.buf)
            .iter()
            .map(|c| scaled_ranks(c))
            .collect();
        let mut order: Vec<usize> = (0..self.buf.len() - 1).collect();
        let (observed, split) = statistic(&z, &order, m);
        if !observed.is_finite() || observed <= 0.0 {
            return None;
        }
        let p = self.config.permutations;
        let allowed = (self.config.alpha * (p + 1) as f64 - 1.0).floor().max(0.0) as usize;
        let mut extreme = 0;
        for _ in 0..p {
            order.shuffle(&mut self.rng);
            if statistic(&z, &order, m).0 >= observed {
                extreme += 1;
                if extreme > allowed {
                    return None;
                }
            }
        }
        // Feature row k-1 is the difference into buffer row k: the new regime starts there.
        let cut = split + 1;
        let location = self.start + cut as u64;
        self.buf.drain(..cut);
        self.start = location;
        Some(Change {
            location,
            detected_at: at,
            statistic: observed,
            p_value: (extreme + 1) as f64 / (p + 1) as f64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;
    use rand_distr::{Distribution, Normal};

    fn run(series: &[f64]) -> Vec<Change> {
        let mut d = ChangeDetector::new(ChangeConfig::default());
        series.iter().filter_map(|x| d.update(&[*x])).collect()
    }

    #[test]
    fn level_steps_in_white_noise_are_found_at_their_rows() {
        let noise = Normal::new(0.0, 1.0).unwrap();
        let mut rng = rng_for(1, 0, 0);
        let series: Vec<f64> = (0..1000)
            .map(|i| (i / 200) as f64 * 5.0 + noise.sample(&mut rng))
            .collect();
        let found = run(&series);
        let locations: Vec<u64> = found.iter().map(|c| c.location).collect();
        for step in [200u64, 400, 600, 800] {
            assert!(
                locations.iter().any(|l| l.abs_diff(step) <= 5),
                "step at {step} not found: {locations:?}"
            );
        }
        assert!(found.len() <= 6, "{locations:?}");
    }

    #[test]
    fn a_random_walk_raises_few_alarms() {
        let noise = Normal::new(0.0, 1.0).unwrap();
        let mut rng = rng_for(2, 0, 0);
        let mut x = 0.0;
        let series: Vec<f64> = (0..1000)
            .map(|_| {
                x += noise.sample(&mut rng);
                x
            })
            .collect();
        assert!(run(&series).len() <= 10);
    }

    #[test]
    fn a_constant_series_raises_none() {
        assert!(run(&[3.0; 300]).is_empty());
        let mut rng = rng_for(3, 0, 0);
        let noisy: Vec<f64> = (0..500).map(|_| rng.random_range(0.0..1.0)).collect();
        assert!(run(&noisy).len() <= 3);
    }

    #[test]
    fn ranks_share_ties() {
        let r = scaled_ranks(&[1.0, 2.0, 2.0, 3.0]);
        assert_eq!(r[1], r[2]);
        assert!(r[0] < r[1] && r[2] < r[3]);
        assert_eq!(scaled_ranks(&[5.0; 4]), vec![0.0; 4]);
    }
}
