//! How closely synthetic users behave like real ones, on the window features both produce
//! through the same backfill: per-feature two-sample Kolmogorov–Smirnov statistics, the
//! maximum mean discrepancy with an RBF kernel (bandwidth by the median heuristic), the
//! cross-validated AUC of a classifier told to separate real from synthetic user-windows,
//! and train-on-synthetic/test-on-real segment accuracy against train-on-real.
//!
//! Each metric is a plain function over rows of features, tested against a from-scratch
//! count on seeded data.
//!
//! ```
//! use personaflow_eval::synthetic::{ks_statistic, auc};
//! assert_eq!(ks_statistic(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]), 0.0);
//! assert_eq!(ks_statistic(&[1.0, 2.0], &[5.0, 6.0]), 1.0);
//! // Scores that put every positive above every negative.
//! assert_eq!(auc(&[0.9, 0.8, 0.2, 0.1], &[true, true, false, false]), 1.0);
//! ```

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Points of each sample the MMD uses at most (it is quadratic in them).
pub const MMD_MAX_POINTS: usize = 2_000;
/// Folds of the cross-validated classifiers.
pub const FOLDS: usize = 5;
/// Gradient steps of the logistic regressions.
pub const LOGISTIC_STEPS: usize = 300;
/// Their learning rate.
pub const LOGISTIC_RATE: f64 = 0.5;
/// Their L2 penalty.
pub const LOGISTIC_L2: f64 = 1e-3;

/// The two-sample Kolmogorov–Smirnov statistic: the largest distance between the samples'
/// empirical distribution functions (0 when either is empty).
pub fn ks_statistic(a: &[f64], b: &[f64]) -> f64 {
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let mut a: Vec<f64> = a.to_vec();
    let mut b: Vec<f64> = b.to_vec();
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let (mut i, mut j, mut d) = (0usize, 0usize, 0f64);
    while i < a.len() && j < b.len() {
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / a.len() as f64 - j as f64 / b.len() as f64).abs());
    }
    d
}

/// Rows standardised by the mean and standard deviation of `fit` (a constant column: 0).
pub fn standardise(fit: &[Vec<f64>], rows: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let d = fit.first().map_or(0, Vec::len);
    let n = fit.len().max(1) as f64;
    let mean: Vec<f64> = (0..d)
        .map(|j| fit.iter().map(|r| r[j]).sum::<f64>() / n)
        .collect();
    let sd: Vec<f64> = (0..d)
        .map(|j| (fit.iter().map(|r| (r[j] - mean[j]).powi(2)).sum::<f64>() / n).sqrt())
        .collect();
    rows.iter()
        .map(|r| {
            (0..d)
                .map(|j| {
                    if sd[j] > 0.0 {
                        (r[j] - mean[j]) / sd[j]
                    } else {
                        0.0
                    }
                })
                .collect()
        })
        .collect()
}

fn sq_dist(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// The squared maximum mean discrepancy (unbiased) between `a` and `b` with the kernel
/// `exp(-|x - y|² / (2 h²))`, `h` the median distance between the pooled points (the median
/// heuristic); each sample cut to [`MMD_MAX_POINTS`] seeded points first. Returns
/// `(mmd², h)`.
pub fn mmd_rbf(a: &[Vec<f64>], b: &[Vec<f64>], seed: u64) -> (f64, f64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let cut = |s: &[Vec<f64>], rng: &mut ChaCha8Rng| -> Vec<Vec<f64>> {
        let mut v = s.to_vec();
        if v.len() > MMD_MAX_POINTS {
            v.shuffle(rng);
            v.truncate(MMD_MAX_POINTS);
        }
        v
    };
    let (a, b) = (cut(a, &mut rng), cut(b, &mut rng));
    if a.len() < 2 || b.len() < 2 {
        return (0.0, 0.0);
    }
    let pooled: Vec<&Vec<f64>> = a.iter().chain(&b).collect();
    let mut d: Vec<f64> = Vec::new();
    // The median over a seeded sample of pairs (all pairs when few).
    let pairs = (pooled.len() * (pooled.len() - 1) / 2).min(200_000);
    for _ in 0..pairs {
        let i = rng.random_range(0..pooled.len());
        let mut j = rng.random_range(0..pooled.len() - 1);
        if j >= i {
            j += 1;
        }
        d.push(sq_dist(pooled[i], pooled[j]).sqrt());
    }
    d.sort_by(f64::total_cmp);
    let h = d[d.len() / 2].max(1e-12);
    let k = |x: &[f64], y: &[f64]| (-sq_dist(x, y) / (2.0 * h * h)).exp();
    let within = |s: &[Vec<f64>]| {
        let mut t = 0.0;
        for i in 0..s.len() {
            for j in 0..s.len() {
                if i != j {
                    t += k(&s[i], &s[j]);
                }
            }
        }
        t / (s.len() * (s.len() - 1)) as f64
    };
    let mut cross = 0.0;
    for x in &a {
        for y in &b {
            cross += k(x, y);
        }
    }
    cross /= (a.len() * b.len()) as f64;
    (within(&a) + within(&b) - 2.0 * cross, h)
}

/// The area under the ROC curve of `scores` for `labels` (true: positive), by ranks (ties
/// averaged): the probability that a random positive scores above a random negative.
pub fn auc(scores: &[f64], labels: &[bool]) -> f64 {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|a, b| scores[*a].total_cmp(&scores[*b]));
    let mut ranks = vec![0.0; scores.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        let r = (i + j) as f64 / 2.0 + 1.0;
        for k in &idx[i..=j] {
            ranks[*k] = r;
        }
        i = j + 1;
    }
    let pos = labels.iter().filter(|l| **l).count() as f64;
    let neg = labels.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return 0.5;
    }
    let sum: f64 = ranks
        .iter()
        .zip(labels)
        .filter(|(_, l)| **l)
        .map(|(r, _)| r)
        .sum();
    (sum - pos * (pos + 1.0) / 2.0) / (pos * neg)
}

/// A multinomial logistic regression (softmax), fitted by full-batch gradient descent on
/// standardised rows.
#[derive(Clone, Debug)]
pub struct Logistic {
    classes: usize,
    weights: Vec<Vec<f64>>, // classes x (d + 1)
}

impl Logistic {
    /// Fits `rows` (standardised) to `labels` in `0..classes`.
    pub fn fit(rows: &[Vec<f64>], labels: &[usize], classes: usize) -> Self {
        let d = rows.first().map_or(0, Vec::len);
        let mut w = vec![vec![0.0; d + 1]; classes.max(1)];
        let n = rows.len().max(1) as f64;
        for _ in 0..LOGISTIC_STEPS {
            let mut grad = vec![vec![0.0; d + 1]; w.len()];
            for (x, y) in rows.iter().zip(labels) {
                let p = softmax(&w, x);
                for (c, g) in grad.iter_mut().enumerate() {
                    let e = p[c] - if c == *y { 1.0 } else { 0.0 };
                    for (gj, xj) in g.iter_mut().zip(x) {
                        *gj += e * xj;
                    }
                    g[d] += e;
                }
            }
            for (wc, gc) in w.iter_mut().zip(&grad) {
                for (wj, gj) in wc.iter_mut().zip(gc) {
                    *wj -= LOGISTIC_RATE * (gj / n + LOGISTIC_L2 * *wj);
                }
            }
        }
        Logistic {
            classes: classes.max(1),
            weights: w,
        }
    }

    /// The probability of each class for `x`.
    pub fn probabilities(&self, x: &[f64]) -> Vec<f64> {
        softmax(&self.weights, x)
    }

    /// The most probable class.
    pub fn predict(&self, x: &[f64]) -> usize {
        let p = self.probabilities(x);
        (0..self.classes)
            .max_by(|a, b| p[*a].total_cmp(&p[*b]))
            .unwrap_or(0)
    }
}

fn softmax(w: &[Vec<f64>], x: &[f64]) -> Vec<f64> {
    let d = x.len();
    let z: Vec<f64> = w
        .iter()
        .map(|wc| wc[..d].iter().zip(x).map(|(a, b)| a * b).sum::<f64>() + wc[d])
        .collect();
    let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

/// `FOLDS`-fold assignment of `n` rows, seeded.
fn folds(n: usize, seed: u64) -> Vec<usize> {
    let mut f: Vec<usize> = (0..n).map(|i| i % FOLDS).collect();
    f.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    f
}

/// The cross-validated AUC of a logistic regression told to separate `real` (negative) from
/// `synthetic` (positive) rows: each row scored by the model fitted on the other folds. 0.5:
/// indistinguishable.
pub fn discriminator_auc(real: &[Vec<f64>], synthetic: &[Vec<f64>], seed: u64) -> f64 {
    let rows: Vec<Vec<f64>> = real.iter().chain(synthetic).cloned().collect();
    let labels: Vec<bool> = (0..rows.len()).map(|i| i >= real.len()).collect();
    let fold = folds(rows.len(), seed);
    let mut scores = vec![0.0; rows.len()];
    for f in 0..FOLDS {
        let train: Vec<usize> = (0..rows.len()).filter(|i| fold[*i] != f).collect();
        let test: Vec<usize> = (0..rows.len()).filter(|i| fold[*i] == f).collect();
        let fit: Vec<Vec<f64>> = train.iter().map(|i| rows[*i].clone()).collect();
        let x = standardise(&fit, &fit);
        let y: Vec<usize> = train.iter().map(|i| usize::from(labels[*i])).collect();
        let model = Logistic::fit(&x, &y, 2);
        let t: Vec<Vec<f64>> = test.iter().map(|i| rows[*i].clone()).collect();
        for (i, x) in test.iter().zip(standardise(&fit, &t)) {
            scores[*i] = model.probabilities(&x)[1];
        }
    }
    auc(&scores, &labels)
}

/// Accuracy of a segment classifier fitted on `train` and scored on `test` (labels in
/// `0..classes`).
pub fn accuracy(
    train: &[Vec<f64>],
    train_labels: &[usize],
    test: &[Vec<f64>],
    test_labels: &[usize],
    classes: usize,
) -> f64 {
    if test.is_empty() || train.is_empty() {
        return 0.0;
    }
    let x = standardise(train, train);
    let model = Logistic::fit(&x, train_labels, classes);
    let right = standardise(train, test)
        .iter()
        .zip(test_labels)
        .filter(|(x, y)| model.predict(x) == **y)
        .count();
    right as f64 / test.len() as f64
}

/// Train-on-real/test-on-real accuracy by `FOLDS`-fold cross-validation over `real`.
pub fn trtr_accuracy(real: &[Vec<f64>], labels: &[usize], classes: usize, seed: u64) -> f64 {
    let fold = folds(real.len(), seed);
    let (mut right, mut total) = (0.0, 0.0);
    for f in 0..FOLDS {
        let pick = |test: bool| -> (Vec<Vec<f64>>, Vec<usize>) {
            (0..real.len())
                .filter(|i| (fold[*i] == f) == test)
                .map(|i| (real[i].clone(), labels[i]))
                .unzip()
        };
        let (tx, ty) = pick(false);
        let (vx, vy) = pick(true);
        right += accuracy(&tx, &ty, &vx, &vy, classes) * vx.len() as f64;
        total += vx.len() as f64;
    }
    if total > 0.0 {
        right / total
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_distr::{Distribution, StandardNormal};

    fn normal(rng: &mut ChaCha8Rng, n: usize, mean: f64) -> Vec<f64> {
        (0..n)
            .map(|_| {
                let z: f64 = StandardNormal.sample(rng);
                mean + z
            })
            .collect::<Vec<f64>>()
    }

    #[test]
    fn ks_matches_a_recount_over_every_threshold() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for case in 0..50 {
            let a: Vec<f64> = (0..rng.random_range(1..40))
                .map(|_| f64::from(rng.random_range(0..10u8)))
                .collect();
            let b: Vec<f64> = (0..rng.random_range(1..40))
                .map(|_| {
                    f64::from(rng.random_range(0..10u8)) + if case % 2 == 0 { 0.0 } else { 1.5 }
                })
                .collect();
            let cdf =
                |s: &[f64], t: f64| s.iter().filter(|v| **v <= t).count() as f64 / s.len() as f64;
            let want = a
                .iter()
                .chain(&b)
                .map(|t| (cdf(&a, *t) - cdf(&b, *t)).abs())
                .fold(0.0, f64::max);
            assert!((ks_statistic(&a, &b) - want).abs() < 1e-12, "case {case}");
        }
    }

    #[test]
    fn auc_matches_a_count_of_pairs() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        for _ in 0..50 {
            let n = rng.random_range(2..60);
            let scores: Vec<f64> = (0..n)
                .map(|_| f64::from(rng.random_range(0..8u8)))
                .collect();
            let labels: Vec<bool> = (0..n).map(|_| rng.random_bool(0.4)).collect();
            let (mut win, mut pairs) = (0.0, 0.0);
            for i in 0..n {
                for j in 0..n {
                    if labels[i] && !labels[j] {
                        pairs += 1.0;
                        win += if scores[i] > scores[j] {
                            1.0
                        } else if scores[i] == scores[j] {
                            0.5
                        } else {
                            0.0
                        };
                    }
                }
            }
            let want = if pairs > 0.0 { win / pairs } else { 0.5 };
            assert!((auc(&scores, &labels) - want).abs() < 1e-12);
        }
    }

    #[test]
    fn the_mmd_grows_with_the_distance_and_is_near_zero_for_one_distribution() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let sample = |rng: &mut ChaCha8Rng, shift: f64| -> Vec<Vec<f64>> {
            (0..400)
                .map(|_| normal(rng, 3, 0.0).into_iter().map(|v| v + shift).collect())
                .collect()
        };
        let base = sample(&mut rng, 0.0);
        let same = mmd_rbf(&base, &sample(&mut rng, 0.0), 1).0;
        let near = mmd_rbf(&base, &sample(&mut rng, 0.5), 1).0;
        let far = mmd_rbf(&base, &sample(&mut rng, 2.0), 1).0;
        assert!(same.abs() < 0.01, "{same}");
        assert!(same < near && near < far, "{same} {near} {far}");
    }

    #[test]
    fn the_discriminator_tells_apart_only_what_differs() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let rows = |rng: &mut ChaCha8Rng, m: f64| -> Vec<Vec<f64>> {
            (0..300)
                .map(|_| vec![normal(rng, 1, m)[0], normal(rng, 1, 0.0)[0]])
                .collect()
        };
        let real = rows(&mut rng, 0.0);
        let same = discriminator_auc(&real, &rows(&mut rng, 0.0), 1);
        let apart = discriminator_auc(&real, &rows(&mut rng, 3.0), 1);
        assert!((same - 0.5).abs() < 0.08, "{same}");
        assert!(apart > 0.95, "{apart}");
    }

    #[test]
    fn tstr_equals_trtr_when_synthetic_rows_come_from_the_same_classes() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let data = |rng: &mut ChaCha8Rng, n: usize| -> (Vec<Vec<f64>>, Vec<usize>) {
            (0..n)
                .map(|i| {
                    let c = i % 3;
                    (
                        vec![normal(rng, 1, 3.0 * c as f64)[0], normal(rng, 1, 0.0)[0]],
                        c,
                    )
                })
                .unzip()
        };
        let (real, labels) = data(&mut rng, 600);
        let (syn, syn_labels) = data(&mut rng, 600);
        let trtr = trtr_accuracy(&real, &labels, 3, 1);
        let tstr = accuracy(&syn, &syn_labels, &real, &labels, 3);
        assert!(trtr > 0.85, "{trtr}");
        assert!((tstr - trtr).abs() < 0.05, "{tstr} vs {trtr}");
        // Labels scrambled in the synthetic rows: TSTR falls to chance.
        let scrambled: Vec<usize> = syn_labels.iter().map(|c| (c + 1) % 3).collect();
        assert!(accuracy(&syn, &scrambled, &real, &labels, 3) < 0.2);
    }
}

/// How many user-windows of each side the metrics use at most (seeded sample).
pub const DEFAULT_MAX_ROWS: usize = 4_000;
/// Goal: the discriminator's AUC at most this.
pub const GOAL_AUC: f64 = 0.6;
/// Goal: TSTR at least this share of TRTR.
pub const GOAL_TSTR_SHARE: f64 = 0.9;

/// The fidelity of synthetic users.
#[derive(Clone, Debug, serde::Serialize)]
pub struct FidelityReport {
    /// User-windows compared (real, synthetic).
    pub rows: (usize, usize),
    /// KS statistic per feature, by name.
    pub ks: Vec<(String, f64)>,
    /// The squared MMD on the standardised features, and its bandwidth.
    pub mmd2: f64,
    /// The RBF bandwidth (median heuristic).
    pub mmd_bandwidth: f64,
    /// Cross-validated AUC of real vs synthetic (0.5: indistinguishable).
    pub discriminator_auc: f64,
    /// Segments both sides have (the classes of TSTR and TRTR).
    pub segments: Vec<String>,
    /// Segment accuracy trained on synthetic, tested on real.
    pub tstr: f64,
    /// Segment accuracy trained and tested on real (cross-validated).
    pub trtr: f64,
    /// Whether AUC ≤ [`GOAL_AUC`].
    pub auc_goal_met: bool,
    /// Whether TSTR ≥ [`GOAL_TSTR_SHARE`] × TRTR.
    pub tstr_goal_met: bool,
}

/// User-windows: the user and its window features.
pub type Rows = Vec<(String, Vec<f64>)>;

/// The non-calendar window features of a backfill's `features` table, per user-window, of
/// the windows ending at or after `from` (all: `i64::MIN`).
pub fn read_feature_rows(output: &std::path::Path, from: i64) -> crate::Result<Rows> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float32Type, TimestampMillisecondType};
    use personaflow_operators::window::features::FEATURES;
    let names: Vec<&str> = FEATURES
        .iter()
        .filter(|f| !f.calendar)
        .map(|f| f.name)
        .collect();
    let mut columns = vec!["window_end", "user_id"];
    columns.extend(&names);
    let mut rows = Vec::new();
    let dir = output.join(personaflow_io::tables::Table::Features.name());
    for path in personaflow_io::tables::read::parquet_files(&dir)? {
        personaflow_io::tables::read::for_each_batch(&path, &columns, |b| {
            let windows = b.column(0).as_primitive::<TimestampMillisecondType>();
            let users = b.column(1).as_string::<i32>();
            let cols: Vec<_> = (2..b.num_columns())
                .map(|c| b.column(c).as_primitive::<Float32Type>().clone())
                .collect();
            for i in 0..b.num_rows() {
                if windows.value(i) < from {
                    continue;
                }
                rows.push((
                    users.value(i).to_string(),
                    cols.iter().map(|c| f64::from(c.value(i))).collect(),
                ));
            }
        })?;
    }
    Ok(rows)
}

/// The feature names [`read_feature_rows`] reads, in order.
pub fn feature_names() -> Vec<&'static str> {
    personaflow_operators::window::features::FEATURES
        .iter()
        .filter(|f| !f.calendar)
        .map(|f| f.name)
        .collect()
}

/// Compares `real` with `synthetic` user-windows; `real_labels` and `synthetic_labels` give
/// users' segments (users without one are left out of TSTR and TRTR). Each side is cut to
/// `max_rows` seeded user-windows first.
pub fn fidelity(
    real: &Rows,
    synthetic: &Rows,
    real_labels: &std::collections::HashMap<String, String>,
    synthetic_labels: &std::collections::HashMap<String, String>,
    max_rows: usize,
    seed: u64,
) -> FidelityReport {
    // Each side sampled with its own generator of the same seed: identical inputs, identical
    // samples.
    let cut = |rows: &Rows| -> Rows {
        let mut r = rows.clone();
        r.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        r.truncate(max_rows);
        r
    };
    let (real, synthetic) = (cut(real), cut(synthetic));
    let names = feature_names();
    let ks = names
        .iter()
        .enumerate()
        .map(|(j, n)| {
            let a: Vec<f64> = real.iter().map(|r| r.1[j]).collect();
            let b: Vec<f64> = synthetic.iter().map(|r| r.1[j]).collect();
            (n.to_string(), ks_statistic(&a, &b))
        })
        .collect();
    let rx: Vec<Vec<f64>> = real.iter().map(|r| r.1.clone()).collect();
    let sx: Vec<Vec<f64>> = synthetic.iter().map(|r| r.1.clone()).collect();
    let (mmd2, h) = mmd_rbf(&standardise(&rx, &rx), &standardise(&rx, &sx), seed);
    let discriminator_auc = discriminator_auc(&rx, &sx, seed);
    let mut segments: Vec<String> = synthetic_labels
        .values()
        .filter(|s| real_labels.values().any(|r| r == *s))
        .cloned()
        .collect();
    segments.sort();
    segments.dedup();
    let labelled = |rows: &Rows, labels: &std::collections::HashMap<String, String>| {
        rows.iter()
            .filter_map(|(u, x)| {
                let s = labels.get(u)?;
                let c = segments.iter().position(|g| g == s)?;
                Some((x.clone(), c))
            })
            .unzip::<_, _, Vec<Vec<f64>>, Vec<usize>>()
    };
    let (ry, ryl) = labelled(&real, real_labels);
    let (sy, syl) = labelled(&synthetic, synthetic_labels);
    let k = segments.len();
    let tstr = accuracy(&sy, &syl, &ry, &ryl, k);
    let trtr = trtr_accuracy(&ry, &ryl, k, seed);
    FidelityReport {
        rows: (real.len(), synthetic.len()),
        ks,
        mmd2,
        mmd_bandwidth: h,
        discriminator_auc,
        auc_goal_met: discriminator_auc <= GOAL_AUC,
        tstr_goal_met: k > 1 && tstr >= GOAL_TSTR_SHARE * trtr,
        segments,
        tstr,
        trtr,
    }
}

/// Users' labels from a truth file: its `population` column (a synthetic scenario's) or
/// else its `segment` (a simulation's); nulls and `unknown` left out.
pub fn read_labels(
    path: &std::path::Path,
) -> crate::Result<std::collections::HashMap<String, String>> {
    use arrow_array::cast::AsArray;
    use arrow_array::Array;
    let file = std::fs::File::open(path).map_err(|e| personaflow_io::Error::io(path, e))?;
    let schema = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| personaflow_io::Error::parquet(path, e))?
        .schema()
        .clone();
    let column = if schema.field_with_name("population").is_ok() {
        "population"
    } else {
        "segment"
    };
    let mut out = std::collections::HashMap::new();
    personaflow_io::tables::read::for_each_batch(path, &["user_id", column], |b| {
        let (u, s) = (
            b.column(0).as_string::<i32>(),
            b.column(1).as_string::<i32>(),
        );
        for i in 0..b.num_rows() {
            if s.is_valid(i) && s.value(i) != "unknown" {
                out.insert(u.value(i).to_string(), s.value(i).to_string());
            }
        }
    })?;
    Ok(out)
}
