//! A Gaussian mixture with diagonal covariances: the latent distribution of a population
//! (a segment's or a persona's users), fitted by expectation-maximisation from k-means++
//! seeds and sampled for synthetic users' latent points. Seeded and deterministic: the same
//! points, `k` and seed give the same mixture, and the same mixture and seed the same samples.
//!
//! ```
//! use personaflow_synth::gmm::{DiagGmm, FitOptions};
//! use rand::SeedableRng;
//! // Two clusters in 2-D, at (0, 0) and (10, 10).
//! let points: Vec<Vec<f32>> = (0..200)
//!     .map(|i| {
//!         let c = if i % 2 == 0 { 0.0 } else { 10.0 };
//!         vec![c + (i % 7) as f32 * 0.1, c - (i % 5) as f32 * 0.1]
//!     })
//!     .collect();
//! let gmm = DiagGmm::fit(&points, &FitOptions { components: 2, ..FitOptions::default() }).unwrap();
//! let mut means: Vec<f32> = gmm.means().iter().map(|m| m[0]).collect();
//! means.sort_by(f32::total_cmp);
//! assert!((means[0] - 0.3).abs() < 0.1 && (means[1] - 10.3).abs() < 0.1);
//! let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
//! assert_eq!(gmm.sample(&mut rng).len(), 2);
//! ```

use crate::{Error, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// Components fitted by default (fewer when the population is small: see
/// [`MIN_POINTS_PER_COMPONENT`]).
pub const DEFAULT_COMPONENTS: usize = 4;
/// A component is only fitted for every this many points.
pub const MIN_POINTS_PER_COMPONENT: usize = 20;
/// EM iterations at most.
pub const DEFAULT_MAX_ITERATIONS: usize = 200;
/// EM stops when the mean log-likelihood gains less than this.
pub const DEFAULT_TOLERANCE: f64 = 1e-6;
/// Variances are floored at this share of the population's own variance in each dimension
/// (a component on a few identical points would otherwise collapse).
pub const VARIANCE_FLOOR_SHARE: f64 = 1e-3;
/// The seed of the fit by default.
pub const DEFAULT_SEED: u64 = 0x5eed_6a55;

/// How to fit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FitOptions {
    /// Components wanted (at most one per [`MIN_POINTS_PER_COMPONENT`] points, at least 1).
    pub components: usize,
    /// EM iterations at most.
    pub max_iterations: usize,
    /// Stop when the mean log-likelihood gains less than this.
    pub tolerance: f64,
    /// Seed of the k-means++ initialisation.
    pub seed: u64,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            components: DEFAULT_COMPONENTS,
            max_iterations: DEFAULT_MAX_ITERATIONS,
            tolerance: DEFAULT_TOLERANCE,
            seed: DEFAULT_SEED,
        }
    }
}

/// A fitted mixture.
#[derive(Clone, Debug, PartialEq)]
pub struct DiagGmm {
    weights: Vec<f64>,
    means: Vec<Vec<f64>>,
    variances: Vec<Vec<f64>>,
    iterations: usize,
    log_likelihood: f64,
}

impl DiagGmm {
    /// Fits a mixture to `points` (all of one dimension, at least one point).
    pub fn fit(points: &[Vec<f32>], options: &FitOptions) -> Result<Self> {
        let n = points.len();
        let d = points.first().map_or(0, Vec::len);
        if n == 0 || d == 0 {
            return Err(Error::Fit("no points".into()));
        }
        if let Some(p) = points.iter().position(|p| p.len() != d) {
            return Err(Error::Fit(format!(
                "point {p} has {} dimensions, the first {d}",
                points[p].len()
            )));
        }
        if points.iter().flatten().any(|v| !v.is_finite()) {
            return Err(Error::Fit("a point is not finite".into()));
        }
        let x: Vec<Vec<f64>> = points
            .iter()
            .map(|p| p.iter().map(|v| f64::from(*v)).collect())
            .collect();
        let k = options
            .components
            .min(n / MIN_POINTS_PER_COMPONENT)
            .clamp(1, n);
        let (_, var) = moments(&x, None);
        let floor: Vec<f64> = var
            .iter()
            .map(|v| (v * VARIANCE_FLOOR_SHARE).max(1e-9))
            .collect();
        let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
        let mut gmm = DiagGmm {
            weights: vec![1.0 / k as f64; k],
            means: kmeans_pp(&x, k, &mut rng),
            variances: vec![var.iter().zip(&floor).map(|(v, f)| v.max(*f)).collect(); k],
            iterations: 0,
            log_likelihood: f64::NEG_INFINITY,
        };
        let mut resp = vec![vec![0.0; k]; n];
        for it in 0..options.max_iterations.max(1) {
            // E step: responsibilities, by log-sum-exp.
            let mut ll = 0.0;
            for (xi, ri) in x.iter().zip(resp.iter_mut()) {
                for (j, r) in ri.iter_mut().enumerate() {
                    *r = gmm.weights[j].ln() + log_normal(xi, &gmm.means[j], &gmm.variances[j]);
                }
                let m = ri.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let s: f64 = ri.iter().map(|r| (r - m).exp()).sum();
                let lse = m + s.ln();
                for r in ri.iter_mut() {
                    *r = (*r - lse).exp();
                }
                ll += lse;
            }
            ll /= n as f64;
            gmm.iterations = it + 1;
            let gain = ll - gmm.log_likelihood;
            gmm.log_likelihood = ll;
            // M step.
            for j in 0..k {
                let nj: f64 = resp.iter().map(|r| r[j]).sum();
                if nj < 1e-9 {
                    // An empty component: restart it on the worst-explained point.
                    let worst = (0..n)
                        .min_by(|a, b| {
                            let la = resp[*a].iter().copied().fold(0.0, f64::max);
                            let lb = resp[*b].iter().copied().fold(0.0, f64::max);
                            la.total_cmp(&lb)
                        })
                        .expect("points");
                    gmm.means[j] = x[worst].clone();
                    gmm.weights[j] = 1.0 / n as f64;
                    continue;
                }
                let w: Vec<f64> = resp.iter().map(|r| r[j]).collect();
                let (m, v) = moments(&x, Some(&w));
                gmm.weights[j] = nj / n as f64;
                gmm.means[j] = m;
                gmm.variances[j] = v.iter().zip(&floor).map(|(v, f)| v.max(*f)).collect();
            }
            let total: f64 = gmm.weights.iter().sum();
            gmm.weights.iter_mut().for_each(|w| *w /= total);
            if it > 0 && gain.abs() < options.tolerance {
                break;
            }
        }
        Ok(gmm)
    }

    /// The components' weights (summing to 1).
    pub fn weights(&self) -> &[f64] {
        &self.weights
    }

    /// The components' means.
    pub fn means(&self) -> Vec<Vec<f32>> {
        self.means
            .iter()
            .map(|m| m.iter().map(|v| *v as f32).collect())
            .collect()
    }

    /// The components' variances, per dimension.
    pub fn variances(&self) -> &[Vec<f64>] {
        &self.variances
    }

    /// EM iterations run.
    pub fn iterations(&self) -> usize {
        self.iterations
    }

    /// Mean log-likelihood of the fitted points.
    pub fn log_likelihood(&self) -> f64 {
        self.log_likelihood
    }

    /// Dimensions.
    pub fn dims(&self) -> usize {
        self.means.first().map_or(0, Vec::len)
    }

    /// The mixture's mean (the weighted mean of its components').
    pub fn mean(&self) -> Vec<f64> {
        let mut m = vec![0.0; self.dims()];
        for (w, c) in self.weights.iter().zip(&self.means) {
            for (a, b) in m.iter_mut().zip(c) {
                *a += w * b;
            }
        }
        m
    }

    /// One latent point: a component by weight, then a normal draw from it.
    pub fn sample(&self, rng: &mut impl Rng) -> Vec<f32> {
        let u: f64 = rng.random();
        let mut acc = 0.0;
        let mut j = self.weights.len() - 1;
        for (i, w) in self.weights.iter().enumerate() {
            acc += w;
            if u < acc {
                j = i;
                break;
            }
        }
        self.means[j]
            .iter()
            .zip(&self.variances[j])
            .map(|(m, v)| {
                let z: f64 = StandardNormal.sample(rng);
                (m + z * v.sqrt()) as f32
            })
            .collect()
    }
}

/// Weighted mean and variance per dimension (weights `None`: all 1).
fn moments(x: &[Vec<f64>], w: Option<&[f64]>) -> (Vec<f64>, Vec<f64>) {
    let d = x[0].len();
    let weight = |i: usize| w.map_or(1.0, |w| w[i]);
    let total: f64 = (0..x.len()).map(weight).sum();
    let mut mean = vec![0.0; d];
    for (i, xi) in x.iter().enumerate() {
        for (m, v) in mean.iter_mut().zip(xi) {
            *m += weight(i) * v;
        }
    }
    mean.iter_mut().for_each(|m| *m /= total);
    let mut var = vec![0.0; d];
    for (i, xi) in x.iter().enumerate() {
        for ((s, v), m) in var.iter_mut().zip(xi).zip(&mean) {
            *s += weight(i) * (v - m) * (v - m);
        }
    }
    var.iter_mut().for_each(|s| *s /= total);
    (mean, var)
}

fn log_normal(x: &[f64], mean: &[f64], var: &[f64]) -> f64 {
    let mut s = 0.0;
    for ((xi, m), v) in x.iter().zip(mean).zip(var) {
        s += (xi - m) * (xi - m) / v + v.ln();
    }
    -0.5 * (s + x.len() as f64 * (2.0 * std::f64::consts::PI).ln())
}

/// k-means++ seeds: the first point at random, each next one with probability proportional to
/// its squared distance to the nearest seed so far.
fn kmeans_pp(x: &[Vec<f64>], k: usize, rng: &mut ChaCha8Rng) -> Vec<Vec<f64>> {
    let dist = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(p, q)| (p - q) * (p - q)).sum::<f64>();
    let mut seeds = vec![x[rng.random_range(0..x.len())].clone()];
    let mut nearest: Vec<f64> = x.iter().map(|p| dist(p, &seeds[0])).collect();
    while seeds.len() < k {
        let total: f64 = nearest.iter().sum();
        let next = if total <= 0.0 {
            rng.random_range(0..x.len())
        } else {
            let mut u = rng.random::<f64>() * total;
            let mut pick = x.len() - 1;
            for (i, d) in nearest.iter().enumerate() {
                if u < *d {
                    pick = i;
                    break;
                }
                u -= d;
            }
            pick
        };
        seeds.push(x[next].clone());
        for (n, p) in nearest.iter_mut().zip(x) {
            *n = n.min(dist(p, &seeds[seeds.len() - 1]));
        }
    }
    seeds
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Points from a known mixture: (weight, mean, sd) per component.
    fn draw(components: &[(f64, Vec<f64>, f64)], n: usize, seed: u64) -> Vec<Vec<f32>> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                let u: f64 = rng.random();
                let mut acc = 0.0;
                let mut pick = &components[components.len() - 1];
                for c in components {
                    acc += c.0;
                    if u < acc {
                        pick = c;
                        break;
                    }
                }
                pick.1
                    .iter()
                    .map(|m| {
                        let z: f64 = StandardNormal.sample(&mut rng);
                        (m + z * pick.2) as f32
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn recovers_well_separated_components() {
        let truth = vec![
            (0.5, vec![0.0, 0.0, 0.0], 0.5),
            (0.3, vec![8.0, -8.0, 4.0], 1.0),
            (0.2, vec![-8.0, 8.0, -4.0], 0.3),
        ];
        let points = draw(&truth, 3_000, 1);
        let gmm = DiagGmm::fit(
            &points,
            &FitOptions {
                components: 3,
                ..FitOptions::default()
            },
        )
        .unwrap();
        for (w, mean, sd) in &truth {
            // The fitted component nearest to the true mean.
            let (j, _) = gmm
                .means
                .iter()
                .enumerate()
                .map(|(j, m)| {
                    (
                        j,
                        m.iter().zip(mean).map(|(a, b)| (a - b).abs()).sum::<f64>(),
                    )
                })
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .unwrap();
            assert!((gmm.weights[j] - w).abs() < 0.03, "{:?}", gmm.weights);
            for (m, t) in gmm.means[j].iter().zip(mean) {
                assert!((m - t).abs() < 0.1, "{m} vs {t}");
            }
            for v in &gmm.variances[j] {
                assert!((v.sqrt() - sd).abs() < 0.1 * sd, "{} vs {sd}", v.sqrt());
            }
        }
    }

    #[test]
    fn samples_have_the_mixtures_moments_and_repeat_per_seed() {
        let truth = vec![(0.7, vec![1.0, -2.0], 0.5), (0.3, vec![5.0, 3.0], 1.0)];
        let points = draw(&truth, 2_000, 2);
        let gmm = DiagGmm::fit(&points, &FitOptions::default()).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let samples: Vec<Vec<f32>> = (0..20_000).map(|_| gmm.sample(&mut rng)).collect();
        let x: Vec<Vec<f64>> = samples
            .iter()
            .map(|p| p.iter().map(|v| f64::from(*v)).collect())
            .collect();
        let data: Vec<Vec<f64>> = points
            .iter()
            .map(|p| p.iter().map(|v| f64::from(*v)).collect())
            .collect();
        let (ms, vs) = moments(&x, None);
        let (md, vd) = moments(&data, None);
        for d in 0..2 {
            assert!(
                (ms[d] - md[d]).abs() < 0.08,
                "mean {d}: {} vs {}",
                ms[d],
                md[d]
            );
            assert!(
                (vs[d] / vd[d] - 1.0).abs() < 0.06,
                "var {d}: {} vs {}",
                vs[d],
                vd[d]
            );
        }
        let again = DiagGmm::fit(&points, &FitOptions::default()).unwrap();
        assert_eq!(again, gmm);
        let mut rng2 = ChaCha8Rng::seed_from_u64(9);
        assert_eq!(gmm.sample(&mut rng2), samples[0]);
    }

    #[test]
    fn small_or_degenerate_populations_still_fit() {
        // Fewer points than a component needs: one component, the points' own moments.
        let few = vec![vec![1.0f32, 2.0], vec![3.0, 2.0], vec![2.0, 2.0]];
        let gmm = DiagGmm::fit(&few, &FitOptions::default()).unwrap();
        assert_eq!(gmm.weights().len(), 1);
        assert!((gmm.means()[0][0] - 2.0).abs() < 1e-6);
        // A constant dimension keeps a floored, positive variance.
        assert!(gmm.variances()[0][1] > 0.0);
        let same = vec![vec![1.0f32, 1.0]; 50];
        let gmm = DiagGmm::fit(&same, &FitOptions::default()).unwrap();
        assert!(gmm.log_likelihood().is_finite());
        assert!(DiagGmm::fit(&[], &FitOptions::default()).is_err());
        assert!(DiagGmm::fit(&[vec![1.0], vec![1.0, 2.0]], &FitOptions::default()).is_err());
        assert!(DiagGmm::fit(&[vec![f32::NAN]], &FitOptions::default()).is_err());
    }
}
