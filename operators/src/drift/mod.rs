//! Drift of a profile distribution against its baseline (DESIGN.md step 8), as a plain state
//! machine fed one step (window) at a time (the scaling recommendation a drift carries is in
//! [`crate::drift::scaling`]).
//!
//! Each step brings a sample of points (the profiles of a segment's or persona's users in a
//! window), keyed by user. The detector
//!
//! 1. calibrates a **baseline** over the first `baseline` steps (after the start, or after the
//!    estimated onset of the last drift: the baseline reset), and then lets it slide: steps that
//!    leave the current window join it and its oldest steps drop out;
//! 2. keeps the last `recent` steps as the **current** distribution;
//! 3. takes **users as the units**: a user's points are averaged within the baseline and within
//!    the current window, so a user active in many windows counts once;
//! 4. measures the **centroid distance** `d` between the two samples' unit means, each
//!    dimension in units of the baseline's spread between users, and compares it with the
//!    **threshold** `max(min_effect, z · sqrt(D (1/n_current + 1/n_base)))`: the effect floor, or
//!    `z` times the distance that sampling noise alone gives two samples of these sizes;
//! 5. confirms a crossing with a **permutation test** (Welch's statistic summed over the `D`
//!    dimensions, seeded relabellings of the units): the step rejects when `p <= alpha`;
//! 6. raises an **alarm** after `confirm` consecutive rejecting steps (a real drift keeps the
//!    current window away from the baseline; a few unusual users do not stay long), estimates
//!    the **onset** as the split of the steps since the baseline that best separates before
//!    from after, and starts a new baseline from the onset.
//!
//! With it: the scaling recommendation ([`scaling`]), the operator over segments and personas ([`operator::DetectDrift`]), and the single-series detector of the metric benchmarks ([`changepoint`]).

pub mod changepoint;
pub mod operator;
pub mod scaling;

use crate::personas::{rng_for, ColumnStats};
use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

/// Steps (windows) the baseline spans.
pub const DEFAULT_BASELINE_STEPS: usize = 60;
/// Steps (windows) the current distribution is taken over.
pub const DEFAULT_RECENT_STEPS: usize = 20;
/// Smallest drift, in baseline spreads, that counts (effect size floor).
pub const DEFAULT_MIN_EFFECT: f64 = 1.0;
/// How many standard errors the centroid distance must exceed.
pub const DEFAULT_Z: f64 = 1.0;
/// Significance level of the permutation test.
pub const DEFAULT_ALPHA: f64 = 0.001;
/// Permutations of the test (p-values have a resolution of `1 / (permutations + 1)`).
pub const DEFAULT_PERMUTATIONS: usize = 999;
/// Points of a step kept for the permutation test (a seeded sample beyond that).
pub const DEFAULT_MAX_POINTS: usize = 64;
/// Features listed as having moved most.
pub const DEFAULT_TOP_MOVED: usize = 3;
/// Units (distinct users) the current window and the baseline each need before
/// they are compared: a scope with a handful of active users says little about its
/// distribution.
pub const DEFAULT_MIN_POINTS: usize = 8;
/// Consecutive steps at which the test must reject before an alarm. On the simulator
/// scenarios (EVALUATION.md) 10 removed every true detection along with some false alarms, so
/// the default is 1: one rejection alarms.
pub const DEFAULT_CONFIRM_STEPS: usize = 1;
/// Windows a user's persona is pinned for in persona drift (one day of one-minute windows):
/// personas are re-fitted every window, and a persona whose members were taken afresh each
/// window would drift without any user changing (EVALUATION.md).
pub const DEFAULT_PERSONA_PIN_STEPS: u64 = 1440;

/// Which embedding is a user's point in their scopes' distributions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftPoints {
    /// The embedding of the user's last `L` windows
    /// ([`ProfileData::windows_embedding`](crate::embed::operator::ProfileData::windows_embedding)):
    /// with active-history sequences, a second embedding of each user whose last `L` windows
    /// differ from their active history (on the demo's dense day with the RNN-VAE, the
    /// backfill takes about a third longer).
    #[default]
    Windows,
    /// The profile's own embedding: nothing more to embed, but with active-history sequences
    /// a change in behaviour is averaged with the sessions before it for longer, so it is
    /// found later or not at all (`evaluate scenarios`: 4 of 7 injected drifts instead of 5).
    Profile,
}

/// How drift is detected.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DriftConfig {
    /// Steps a baseline is calibrated over.
    pub baseline: usize,
    /// Steps the current distribution is taken over.
    pub recent: usize,
    /// Smallest drift, in baseline spreads, that counts.
    pub min_effect: f64,
    /// Standard errors the centroid distance must exceed.
    pub z: f64,
    /// Significance level of the permutation test.
    pub alpha: f64,
    /// Permutations of the test.
    pub permutations: usize,
    /// Points of a step kept for the test.
    pub max_points: usize,
    /// Features reported as having moved most.
    pub top_moved: usize,
    /// Units (users) the current window and the baseline each need.
    pub min_points: usize,
    /// Consecutive rejecting steps an alarm needs.
    pub confirm: usize,
    /// Windows a user counts for the persona it was assigned when pinned, in persona drift.
    pub persona_pin: u64,
    /// Seed of the test's permutations and samples.
    pub seed: u64,
    /// Which embedding is a user's point (read by the pipeline, which embeds the last `L`
    /// windows only when asked to).
    pub points: DriftPoints,
}

impl Default for DriftConfig {
    fn default() -> Self {
        DriftConfig {
            baseline: DEFAULT_BASELINE_STEPS,
            recent: DEFAULT_RECENT_STEPS,
            min_effect: DEFAULT_MIN_EFFECT,
            z: DEFAULT_Z,
            alpha: DEFAULT_ALPHA,
            permutations: DEFAULT_PERMUTATIONS,
            max_points: DEFAULT_MAX_POINTS,
            top_moved: DEFAULT_TOP_MOVED,
            min_points: DEFAULT_MIN_POINTS,
            confirm: DEFAULT_CONFIRM_STEPS,
            persona_pin: DEFAULT_PERSONA_PIN_STEPS,
            seed: crate::personas::DEFAULT_SEED,
            points: DriftPoints::default(),
        }
    }
}

impl DriftConfig {
    /// Checks the ranges.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |key: &str, reason: String| Err(crate::Error::invalid_config(key, reason));
        if self.baseline < 2 {
            return bad(
                "drift.baseline",
                format!("({}) must be at least 2", self.baseline),
            );
        }
        if self.alpha.is_nan() || self.alpha <= 0.0 || self.alpha >= 1.0 {
            return bad("drift.alpha", format!("({}) must be in (0, 1)", self.alpha));
        }
        for (key, value) in [("drift.min_effect", self.min_effect), ("drift.z", self.z)] {
            if value.is_nan() || value < 0.0 {
                return bad(key, format!("({value}) must not be negative"));
            }
        }
        for (key, value, min) in [
            ("drift.recent", self.recent, 1),
            ("drift.persona_pin", self.persona_pin as usize, 1),
            ("drift.confirm", self.confirm, 1),
            ("drift.min_points", self.min_points, 2),
            ("drift.permutations", self.permutations, 1),
            ("drift.max_points", self.max_points, 2),
        ] {
            if value < min {
                return bad(key, format!("({value}) must be at least {min}"));
            }
        }
        Ok(())
    }
}

/// One step of a scope: a sample of points and the features behind them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// The step (window index).
    pub at: u64,
    /// Points seen (all of them, also those not kept).
    pub n: usize,
    /// Sum of all the points.
    pub sum: Vec<f64>,
    /// Kept points (a seeded sample of at most `max_points`).
    pub points: Vec<Vec<f32>>,
    /// The unit (user) of each kept point: a user seen in several steps is one unit of the
    /// test, not several.
    pub keys: Vec<u64>,
    /// Mean of the features of the points' users.
    pub feature_mean: Vec<f64>,
    /// Standard deviation of those features.
    pub feature_std: Vec<f64>,
}

impl Step {
    /// A step of `points` of the units `keys` (with the matching `features` rows, possibly
    /// none) at `at`, keeping a seeded sample of at most `max_points`.
    pub fn new(
        at: u64,
        points: &[&[f32]],
        keys: &[u64],
        features: &[&[f32]],
        max_points: usize,
        seed: u64,
    ) -> Step {
        let dims = points.first().map_or(0, |p| p.len());
        let mut sum = vec![0.0f64; dims];
        for p in points {
            for (s, x) in sum.iter_mut().zip(p.iter()) {
                *s += f64::from(*x);
            }
        }
        let mut kept: Vec<usize> = (0..points.len()).collect();
        if kept.len() > max_points {
            kept.shuffle(&mut rng_for(seed, at, 3));
            kept.truncate(max_points);
            kept.sort_unstable();
        }
        let mut stats = ColumnStats::default();
        for f in features {
            stats.add(f);
        }
        Step {
            at,
            n: points.len(),
            sum,
            keys: kept
                .iter()
                .map(|&i| keys.get(i).copied().unwrap_or(i as u64))
                .collect(),
            points: kept.into_iter().map(|i| points[i].to_vec()).collect(),
            feature_mean: stats.mean(),
            feature_std: stats.std(),
        }
    }

    /// Makes the features in `range` count as 0 in every row: their mean and standard
    /// deviation 0, exactly what zeroing them in the rows before [`Step::new`] gives (each
    /// feature's statistics are its column's alone), without copying the rows.
    pub fn ignore_features(&mut self, range: std::ops::Range<usize>) {
        for stats in [&mut self.feature_mean, &mut self.feature_std] {
            let end = range.end.min(stats.len());
            if let Some(ignored) = stats.get_mut(range.start.min(end)..end) {
                ignored.fill(0.0);
            }
        }
    }
}

/// A detected drift.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alarm {
    /// The step the drift was detected at.
    pub at: u64,
    /// The estimated first step of the new distribution.
    pub onset: u64,
    /// Standardised centroid distance of the current distribution from the baseline (each
    /// dimension in baseline spreads between users).
    pub distance: f64,
    /// The threshold it crossed.
    pub threshold: f64,
    /// `distance / threshold`.
    pub score: f64,
    /// p-value of the permutation test.
    pub p_value: f64,
    /// The features that moved most: index and change in baseline standard deviations.
    pub moved: Vec<(usize, f64)>,
}

/// The detector of one scope; its whole state is serialisable. Steps never change once made
/// and are shared (`Arc`), so a copy of a detector (a checkpoint's snapshot after every
/// window) costs a few pointers per step, not the steps' points.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DriftDetector {
    /// Steps of the baseline (complete once it holds `baseline` steps).
    baseline: Vec<Arc<Step>>,
    /// Steps since the baseline was complete, oldest first (at most `recent + baseline`).
    since: VecDeque<Arc<Step>>,
    /// Alarms so far.
    pub alarms: u64,
    /// Consecutive steps at which the test has rejected.
    #[serde(default)]
    streak: usize,
    /// The unit means of the baseline and of the recent steps, kept between steps.
    #[serde(skip)]
    means: MeansCache,
}

/// The unit means of a detector's baseline and recent steps ([`UnitMeans`]): derived state,
/// not part of the detector's value. A copy (a checkpoint's snapshot) starts empty and a
/// restored detector rebuilds it at its next step; detectors compare equal whatever it holds.
#[derive(Debug, Default)]
struct MeansCache {
    baseline: UnitMeans,
    recent: UnitMeans,
}

impl Clone for MeansCache {
    fn clone(&self) -> Self {
        MeansCache::default()
    }
}

impl PartialEq for MeansCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// Each unit's kept points over a run of steps that gain steps at the back and lose them at
/// the front, in step order, with each unit's mean kept until its points change: what
/// [`unit_means`] gives for the same steps, bit for bit (a unit's sum always equals its sum
/// afresh in step order: points that join extend it, points that leave are subtracted when
/// that is exact and otherwise the sum is recomputed), at the cost of the points of the steps
/// that came and went.
#[derive(Debug, Default)]
struct UnitMeans {
    steps: VecDeque<Arc<Step>>,
    /// The serial number of `steps[0]`.
    front: u64,
    units: BTreeMap<u64, Unit>,
}

/// A unit's points (step serial, index in the step), oldest first, their sum in that order
/// (a point that joins at the back extends it: the same additions in the same order as
/// summing afresh; one that leaves at the front is subtracted only while [`Span`] proves every
/// partial sum exact, and otherwise drops the sum), and its mean.
#[derive(Debug, Default)]
struct Unit {
    points: VecDeque<(u64, usize)>,
    sum: Option<Vec<f64>>,
    /// The binary span of every point added to `sum` since it was last summed afresh.
    span: Span,
    /// The mean of `points`, when `mean_current`; otherwise a buffer its next mean is
    /// computed into (a unit's mean changes nearly every window: a fresh vector each time
    /// was 1% of a model-free run's samples in the allocator).
    mean: Vec<f32>,
    mean_current: bool,
}

/// The binary span of a set of `f32` values: the exponent of the largest magnitude's leading
/// bit (`hi`) and of the lowest set bit of any value (`lo`), zeros left out. Every value is a
/// multiple of `2^lo` below `2^(hi + 1)` in magnitude, so while `n` such values are summed in
/// `f64` with `hi + 1 + ceil(log2 n) - lo <= 53` every partial sum, in any order and of any
/// subset, is an integer multiple of `2^lo` below `2^53 * 2^lo`: exactly representable. Each
/// addition and subtraction is then exact, and a sum kept by adding and removing values is
/// the sum afresh in step order bit for bit (both are the exact sum; neither is ever `-0.0`,
/// as the sum afresh starts at `+0.0`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    hi: i32,
    lo: i32,
}

impl Default for Span {
    /// The span of no values (or only zeros): any count of them sums exactly.
    fn default() -> Self {
        Span {
            hi: i32::MIN / 4,
            lo: i32::MAX / 4,
        }
    }
}

impl Span {
    /// A span that no count fits: values that are not finite.
    const UNBOUNDED: Span = Span {
        hi: i32::MAX / 4,
        lo: i32::MIN / 4,
    };

    /// Widens the span by the values of `point`.
    fn add(&mut self, point: &[f32]) {
        for x in point {
            let bits = x.to_bits();
            let exp = ((bits >> 23) & 0xff) as i32;
            let mantissa = bits & 0x7f_ffff;
            let (hi, lo) = match exp {
                0 if mantissa == 0 => continue,
                // Subnormal: `mantissa * 2^-149`.
                0 => (
                    -149 + 31 - mantissa.leading_zeros() as i32,
                    -149 + mantissa.trailing_zeros() as i32,
                ),
                0xff => {
                    *self = Span::UNBOUNDED;
                    return;
                }
                // Normal: `(2^23 + mantissa) * 2^(exp - 150)`.
                _ => (
                    exp - 127,
                    exp - 150 + (mantissa | 1 << 23).trailing_zeros() as i32,
                ),
            };
            self.hi = self.hi.max(hi);
            self.lo = self.lo.min(lo);
        }
    }

    /// Whether sums of up to `n` values of this span are exact in `f64`.
    fn exact_for(&self, n: usize) -> bool {
        if self.hi < self.lo {
            return true;
        }
        let log2_n = n.max(1).next_power_of_two().trailing_zeros() as i64;
        i64::from(self.hi) + 1 + log2_n - i64::from(self.lo) <= i64::from(f64::MANTISSA_DIGITS)
    }
}

/// The mean of each of the first `dims` columns of `rows`. Rows are walked in turn, each
/// adding to every column's sum (memory in order, the loop vectorised), which gives each
/// column the same additions in the same order as summing the column alone: the same bits.
fn column_means(rows: &[&[f32]], dims: usize) -> Vec<f64> {
    let mut sums = vec![empty_sum(); dims];
    for row in rows {
        for (s, x) in sums.iter_mut().zip(&row[..dims]) {
            *s += f64::from(*x);
        }
    }
    sums.into_iter().map(|s| s / rows.len() as f64).collect()
}

/// For each column of `means`, the sum over `rows` of the squared deviation from its mean,
/// row by row as [`column_means`] sums.
fn column_squared_deviations(rows: &[&[f32]], means: &[f64]) -> Vec<f64> {
    let mut sums = vec![empty_sum(); means.len()];
    for row in rows {
        for ((s, x), m) in sums.iter_mut().zip(&row[..means.len()]).zip(means) {
            *s += (f64::from(*x) - m).powi(2);
        }
    }
    sums
}

/// What `Iterator::sum` of `f64`s starts from (its sum of nothing), so a sum kept by hand
/// adds exactly as `sum` does.
fn empty_sum() -> f64 {
    std::iter::empty::<f64>().sum()
}

impl UnitMeans {
    /// Moves to the steps `want` (oldest first) and returns their unit means in unit order.
    fn sync(&mut self, want: &[&Arc<Step>]) -> Vec<&[f32]> {
        // The steps kept that are still wanted are a run of `steps` that starts `want`; the
        // `stale` ones before it (all of them if there is no such run) leave.
        let start = want
            .first()
            .and_then(|first| self.steps.iter().position(|s| Arc::ptr_eq(s, first)));
        let stale = match start {
            Some(j)
                if self
                    .steps
                    .iter()
                    .skip(j)
                    .zip(want)
                    .all(|(s, w)| Arc::ptr_eq(s, w))
                    && self.steps.len() - j <= want.len() =>
            {
                j
            }
            _ => self.steps.len(),
        };
        for _ in 0..stale {
            let step = self.steps.pop_front().expect("a step to drop");
            for (key, point) in step.keys.iter().zip(&step.points) {
                let unit = self
                    .units
                    .get_mut(key)
                    .expect("a dropped step's unit is kept");
                // Exact while the span holds for the points summed so far (this one included).
                if unit.span.exact_for(unit.points.len()) {
                    if let Some(sum) = unit.sum.as_mut() {
                        sub_point(sum, point);
                    }
                } else {
                    unit.sum = None;
                }
                unit.points.pop_front();
                unit.mean_current = false;
                if unit.points.is_empty() {
                    self.units.remove(key);
                }
            }
            self.front += 1;
        }
        for step in &want[self.steps.len()..] {
            let serial = self.front + self.steps.len() as u64;
            for (i, key) in step.keys.iter().enumerate() {
                let unit = self.units.entry(*key).or_default();
                if let Some(sum) = unit.sum.as_mut() {
                    add_point(sum, &step.points[i]);
                    unit.span.add(&step.points[i]);
                }
                unit.points.push_back((serial, i));
                unit.mean_current = false;
            }
            self.steps.push_back(Arc::clone(step));
        }
        let (steps, front) = (&self.steps, self.front);
        self.units
            .values_mut()
            .map(|unit| {
                let (points, sum, span) = (&unit.points, &mut unit.sum, &mut unit.span);
                if !unit.mean_current {
                    let sum = sum.get_or_insert_with(|| {
                        let point = |&(serial, i): &(u64, usize)| -> &[f32] {
                            &steps[(serial - front) as usize].points[i]
                        };
                        let mut sum = vec![0.0f64; points.front().map_or(0, |p| point(p).len())];
                        *span = Span::default();
                        for p in points {
                            add_point(&mut sum, point(p));
                            span.add(point(p));
                        }
                        sum
                    });
                    let n = points.len() as f64;
                    unit.mean.clear();
                    unit.mean.extend(sum.iter().map(|x| (x / n) as f32));
                    unit.mean_current = true;
                }
                unit.mean.as_slice()
            })
            .collect()
    }
}

/// Adds `point` to a unit's running `sum` (as far as both reach).
fn add_point(sum: &mut [f64], point: &[f32]) {
    for (a, x) in sum.iter_mut().zip(point) {
        *a += f64::from(*x);
    }
}

/// Takes `point` off a unit's running `sum` (as far as both reach).
fn sub_point(sum: &mut [f64], point: &[f32]) {
    for (a, x) in sum.iter_mut().zip(point) {
        *a -= f64::from(*x);
    }
}

/// Smallest per-dimension spread a distance is standardised by (a dimension on which the
/// baseline's users all agree would otherwise make any movement infinite).
const MIN_SPREAD: f64 = 1e-3;

fn mean_of(steps: &[&Step]) -> (Vec<f64>, usize) {
    let dims = steps.iter().map(|s| s.sum.len()).max().unwrap_or(0);
    let mut sum = vec![0.0f64; dims];
    let mut n = 0;
    for s in steps {
        n += s.n;
        for (a, b) in sum.iter_mut().zip(&s.sum) {
            *a += b;
        }
    }
    let d = n.max(1) as f64;
    (sum.into_iter().map(|x| x / d).collect(), n)
}

/// The mean kept point of each unit over `steps`, in unit order. Each unit's points are
/// summed in step order (a stable sort by unit), as a map from unit to running sum would.
/// Recomputed from scratch: the oracle of [`UnitMeans`], which the detector uses.
#[cfg(test)]
fn unit_means(steps: &[&Step]) -> Vec<Vec<f32>> {
    let mut points: Vec<(u64, &[f32])> = steps
        .iter()
        .flat_map(|s| {
            s.keys
                .iter()
                .copied()
                .zip(s.points.iter().map(Vec::as_slice))
        })
        .collect();
    points.sort_by_key(|(k, _)| *k);
    let mut means = Vec::new();
    for unit in points.chunk_by(|x, y| x.0 == y.0) {
        let mut sum = vec![0.0f64; unit[0].1.len()];
        for (_, p) in unit {
            for (a, x) in sum.iter_mut().zip(p.iter()) {
                *a += f64::from(*x);
            }
        }
        let n = unit.len() as f64;
        means.push(sum.into_iter().map(|x| (x / n) as f32).collect());
    }
    means
}

fn distance(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt()
}

fn feature_mean(steps: &[&Step]) -> (Vec<f64>, Vec<f64>) {
    let dims = steps
        .iter()
        .map(|s| s.feature_mean.len())
        .max()
        .unwrap_or(0);
    let mut mean = vec![0.0; dims];
    let mut var = vec![0.0; dims];
    let total: usize = steps.iter().map(|s| s.n).sum();
    let total = total.max(1) as f64;
    for s in steps {
        let w = s.n as f64 / total;
        for i in 0..s.feature_mean.len() {
            mean[i] += w * s.feature_mean[i];
            var[i] += w * (s.feature_std[i] * s.feature_std[i] + s.feature_mean[i].powi(2));
        }
    }
    let std = var
        .iter()
        .zip(&mean)
        .map(|(v, m)| (v - m * m).max(0.0).sqrt())
        .collect();
    (mean, std)
}

/// The points of a permutation test, pooled: rows of `dims` values (as `f64`) and each
/// dimension's sum and sum of squares over all of them, so that a relabelling's statistic
/// ([`Pooled::welch`]) sums only the smaller side's points and takes the other side's sums as
/// the totals less them.
struct Pooled {
    rows: Vec<f64>,
    dims: usize,
    sum: Vec<f64>,
    squares: Vec<f64>,
}

impl Pooled {
    fn new(points: &[&[f32]], dims: usize) -> Self {
        let mut rows = Vec::with_capacity(points.len() * dims);
        let (mut sum, mut squares) = (vec![0.0f64; dims], vec![0.0f64; dims]);
        for p in points {
            for (d, x) in p.iter().take(dims).enumerate() {
                let x = f64::from(*x);
                rows.push(x);
                sum[d] += x;
                squares[d] += x * x;
            }
        }
        Pooled {
            rows,
            dims,
            sum,
            squares,
        }
    }

    /// Welch's statistic summed over dimensions: `sum_d (mean_b - mean_a)² / (var_a / n_a +
    /// var_b / n_b)`, each dimension studentised by its own sample variances, so that one
    /// dimension that moves far is not drowned by many that do not. `a` are the first `na`
    /// points in `order`, `b` the rest. The same statistic as summing each side's points (up
    /// to rounding in the last bits: the permutation test counts relabellings within a
    /// relative 1e-12 of the observed statistic as at least as extreme), at the cost of the
    /// smaller side.
    fn welch(&self, order: &[usize], na: usize) -> f64 {
        let dims = self.dims;
        let (mut s, mut q) = (vec![0.0f64; dims], vec![0.0f64; dims]);
        let smaller = if na <= order.len() - na {
            &order[..na]
        } else {
            &order[na..]
        };
        for &i in smaller {
            let row = &self.rows[i * dims..(i + 1) * dims];
            for d in 0..dims {
                s[d] += row[d];
                q[d] += row[d] * row[d];
            }
        }
        let other = |d: usize| (self.sum[d] - s[d], self.squares[d] - q[d]);
        let (na, nb) = (na as f64, (order.len() as f64) - na as f64);
        let var = |s: f64, q: f64, n: f64| ((q - s * s / n) / (n - 1.0).max(1.0)).max(0.0);
        (0..dims)
            .map(|d| {
                let ((sa, qa), (sb, qb)) = if smaller.len() == na as usize {
                    ((s[d], q[d]), other(d))
                } else {
                    (other(d), (s[d], q[d]))
                };
                let diff = sb / nb - sa / na;
                let se = var(sa, qa, na) / na + var(sb, qb, nb) / nb;
                diff * diff / se.max(1e-12)
            })
            .sum()
    }
}

/// [`permutation_p_value`] when it is at most `alpha`, else `None`; it stops relabelling as
/// soon as the relabellings at least as extreme as the observed split put the p-value above
/// `alpha` whatever the rest give (with the default `alpha` and permutations, at the first
/// one), so a test that does not reject costs a few relabellings instead of all of them.
/// Whenever it returns a value, that value and the relabellings drawn are
/// [`permutation_p_value`]'s.
pub fn permutation_p_value_at_most(
    a: &[&[f32]],
    b: &[&[f32]],
    permutations: usize,
    alpha: f64,
    rng: &mut impl Rng,
) -> Option<f64> {
    let pooled: Vec<&[f32]> = a.iter().chain(b).copied().collect();
    let dims = pooled.iter().map(|p| p.len()).min().unwrap_or(0);
    let (na, nb) = (a.len(), b.len());
    let p = |at_least: usize| (1 + at_least) as f64 / (1 + permutations) as f64;
    if na < 2 || nb < 2 || dims == 0 {
        return Some(1.0).filter(|p| *p <= alpha);
    }
    let mut order: Vec<usize> = (0..pooled.len()).collect();
    let pooled = Pooled::new(&pooled, dims);
    let observed = pooled.welch(&order, na);
    let mut at_least = 0usize;
    for _ in 0..permutations {
        order.shuffle(rng);
        if pooled.welch(&order, na) >= observed * (1.0 - 1e-12) {
            at_least += 1;
            if p(at_least) > alpha {
                return None;
            }
        }
    }
    Some(p(at_least)).filter(|p| *p <= alpha)
}

/// p-value of a permutation test of the difference in means between the points `a` and `b`
/// (Welch's statistic summed over dimensions), with `permutations` seeded relabellings.
pub fn permutation_p_value(
    a: &[&[f32]],
    b: &[&[f32]],
    permutations: usize,
    rng: &mut impl Rng,
) -> f64 {
    // Every p-value is at most 1: nothing stops the relabelling early.
    permutation_p_value_at_most(a, b, permutations, 1.0, rng).unwrap_or(1.0)
}

/// The split of `steps` (the first `fixed` of which are the baseline and stay before it) that
/// maximises `n1 n2 / (n1 + n2) |mean1 - mean2|²`; returns the first step after the split.
fn onset(steps: &[&Step], fixed: usize) -> usize {
    let mut best = (fixed.min(steps.len().saturating_sub(1)), f64::NEG_INFINITY);
    for split in fixed.max(1)..steps.len() {
        let (m1, n1) = mean_of(&steps[..split]);
        let (m2, n2) = mean_of(&steps[split..]);
        let (a, b) = (n1 as f64, n2 as f64);
        if a == 0.0 || b == 0.0 {
            continue;
        }
        let d = distance(&m1, &m2);
        let score = a * b / (a + b) * d * d;
        if score > best.1 {
            best = (split, score);
        }
    }
    best.0
}

impl DriftDetector {
    /// Whether the baseline is complete.
    pub fn calibrated(&self, config: &DriftConfig) -> bool {
        self.baseline.len() >= config.baseline
    }

    /// Feeds one step; returns an alarm when the step completes a detected drift.
    ///
    /// The baseline slides: once calibrated, the steps that leave the current window join it
    /// and its oldest steps drop out, so slow movement (a daily rhythm) is absorbed while an
    /// abrupt change stands out against the steps just before it. After an alarm the baseline
    /// restarts from the onset and must calibrate again.
    pub fn observe(&mut self, step: Step, config: &DriftConfig) -> Option<Alarm> {
        if step.n == 0 {
            return None;
        }
        let step = Arc::new(step);
        if !self.calibrated(config) {
            self.baseline.push(step);
            return None;
        }
        self.since.push_back(step);
        while self.since.len() > config.recent {
            let oldest = self.since.pop_front().expect("not empty");
            self.baseline.push(oldest);
            if self.baseline.len() > config.baseline {
                self.baseline.remove(0);
            }
        }
        if self.since.len() < config.recent {
            return None;
        }
        let base_steps: Vec<&Arc<Step>> = self.baseline.iter().collect();
        let recent_steps: Vec<&Arc<Step>> = self
            .since
            .iter()
            .skip(self.since.len() - config.recent)
            .collect();
        let base: Vec<&Step> = base_steps.iter().map(|s| &***s).collect();
        let recent: Vec<&Step> = recent_steps.iter().map(|s| &***s).collect();
        // The test's units are users: each user's points in a sample are averaged first
        // (`unit_means`, kept between steps for the units that did not change).
        let a = self.means.baseline.sync(&base_steps);
        let b = self.means.recent.sync(&recent_steps);
        let (nb, nr) = (a.len(), b.len());
        if nr < config.min_points || nb < config.min_points {
            self.streak = 0;
            return None;
        }
        let dims = a.iter().chain(&b).map(|p| p.len()).min().unwrap_or(0);
        let (mb, mr) = (column_means(&a, dims), column_means(&b, dims));
        // Each dimension in units of the baseline's spread between users.
        let spread: Vec<f64> = column_squared_deviations(&a, &mb)
            .into_iter()
            .map(|ss| (ss / (nb - 1) as f64).sqrt().max(MIN_SPREAD))
            .collect();
        let d = (0..dims)
            .map(|i| ((mr[i] - mb[i]) / spread[i]).powi(2))
            .sum::<f64>()
            .sqrt();
        // What sampling noise alone gives: the expected standardised distance between two
        // samples of this size from one distribution.
        let noise = (dims as f64 * (1.0 / nr as f64 + 1.0 / nb as f64)).sqrt();
        let threshold = config.min_effect.max(config.z * noise);
        if d <= threshold {
            self.streak = 0;
            return None;
        }
        let at = recent.last().map_or(0, |s| s.at);
        let Some(p_value) = permutation_p_value_at_most(
            &a,
            &b,
            config.permutations,
            config.alpha,
            &mut rng_for(config.seed, at, 4),
        ) else {
            self.streak = 0;
            return None;
        };
        self.streak += 1;
        if self.streak < config.confirm {
            return None;
        }
        self.streak = 0;
        // Onset: the best split of baseline + everything since, the baseline kept before it.
        let all: Vec<&Step> = self
            .baseline
            .iter()
            .chain(self.since.iter())
            .map(|s| &**s)
            .collect();
        let split = onset(&all, self.baseline.len());
        let onset_at = all[split].at;
        let (fb, sb) = feature_mean(&base);
        let (fr, _) = feature_mean(&recent);
        let moved = crate::personas::distinguishing_features(&fr, &fb, &sb, config.top_moved);
        // Baseline reset: the steps from the onset on start the new baseline.
        let from = split - self.baseline.len();
        let new_baseline: Vec<Arc<Step>> = self.since.drain(..).skip(from).collect();
        self.baseline = new_baseline;
        if self.baseline.len() > config.baseline {
            let extra = self.baseline.len() - config.baseline;
            let rest = self.baseline.split_off(config.baseline);
            self.since = rest.into();
            debug_assert_eq!(self.since.len(), extra);
        }
        self.alarms += 1;
        Some(Alarm {
            at,
            onset: onset_at,
            distance: d,
            threshold,
            score: d / threshold,
            p_value,
            moved,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_distr::{Distribution, Normal};

    /// `steps` steps of `per_step` 2-d points around `mean(t)`.
    fn series(steps: u64, per_step: usize, mean: impl Fn(u64) -> f32, seed: u64) -> Vec<Step> {
        let noise = Normal::new(0.0f32, 1.0).unwrap();
        let mut rng = rng_for(seed, 0, 0);
        (0..steps)
            .map(|t| {
                let pts: Vec<Vec<f32>> = (0..per_step)
                    .map(|_| vec![mean(t) + noise.sample(&mut rng), noise.sample(&mut rng)])
                    .collect();
                let refs: Vec<&[f32]> = pts.iter().map(Vec::as_slice).collect();
                let keys: Vec<u64> = (0..per_step as u64).map(|u| t * 1000 + u).collect();
                Step::new(t, &refs, &keys, &refs, DEFAULT_MAX_POINTS, 1)
            })
            .collect()
    }

    /// Ignoring features gives, bit for bit, the step made from rows with those features
    /// zeroed (what the drift operator did before: a copy of every row), on seeded random
    /// rows of random widths, non-finite values among them, and ranges past the rows' end.
    #[test]
    fn ignored_features_are_the_zeroed_rows_step() {
        use rand::Rng;
        let mut rng = rng_for(31, 0, 0);
        for case in 0..500 {
            let (n, width) = (rng.random_range(0..40), rng.random_range(0..12));
            let specials = [f32::NAN, f32::INFINITY, -1e30, 0.0];
            let rows: Vec<Vec<f32>> = (0..n)
                .map(|_| {
                    (0..width)
                        .map(|_| match rng.random_range(0..20) {
                            0 => specials[rng.random_range(0..specials.len())],
                            _ => rng.random_range(-5.0..5.0),
                        })
                        .collect()
                })
                .collect();
            let start = rng.random_range(0..14);
            let range = start..start + rng.random_range(0..6);
            let zeroed: Vec<Vec<f32>> = rows
                .iter()
                .map(|r| {
                    let mut r = r.clone();
                    for x in r.iter_mut().skip(range.start).take(range.len()) {
                        *x = 0.0;
                    }
                    r
                })
                .collect();
            let raw: Vec<&[f32]> = rows.iter().map(Vec::as_slice).collect();
            let zeroed: Vec<&[f32]> = zeroed.iter().map(Vec::as_slice).collect();
            let keys: Vec<u64> = (0..n as u64).collect();
            let expected = Step::new(case, &raw, &keys, &zeroed, 16, 3);
            let mut got = Step::new(case, &raw, &keys, &raw, 16, 3);
            got.ignore_features(range.clone());
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&got.feature_mean),
                bits(&expected.feature_mean),
                "case {case}"
            );
            assert_eq!(
                bits(&got.feature_std),
                bits(&expected.feature_std),
                "case {case}"
            );
            assert_eq!((got.n, &got.keys), (expected.n, &expected.keys));
        }
    }

    /// Column means and squared deviations summed row by row are, bit for bit, the column by
    /// column sums the detector took before, on seeded random rows of uneven widths.
    #[test]
    fn row_by_row_column_sums_are_the_column_sums() {
        use rand::Rng;
        let mut rng = rng_for(32, 0, 0);
        for case in 0..300 {
            let n = rng.random_range(1..50);
            let rows: Vec<Vec<f32>> = (0..n)
                .map(|_| {
                    let width = rng.random_range(4..9);
                    // Magnitudes far apart, so that f64 sums round and order shows.
                    (0..width)
                        .map(|_| {
                            rng.random_range(-1.0..1.0) * 10f32.powi(rng.random_range(-20..20))
                        })
                        .collect()
                })
                .collect();
            let rows: Vec<&[f32]> = rows.iter().map(Vec::as_slice).collect();
            let dims = rows.iter().map(|r| r.len()).min().unwrap();
            let means: Vec<f64> = (0..dims)
                .map(|d| rows.iter().map(|p| f64::from(p[d])).sum::<f64>() / rows.len() as f64)
                .collect();
            let squares: Vec<f64> = (0..dims)
                .map(|d| {
                    rows.iter()
                        .map(|p| (f64::from(p[d]) - means[d]).powi(2))
                        .sum()
                })
                .collect();
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            let got = column_means(&rows, dims);
            assert_eq!(bits(&got), bits(&means), "case {case}");
            let got = column_squared_deviations(&rows, &means);
            assert_eq!(bits(&got), bits(&squares), "case {case}");
        }
    }

    fn alarms(steps: Vec<Step>, config: &DriftConfig) -> Vec<Alarm> {
        let mut d = DriftDetector::default();
        steps
            .into_iter()
            .filter_map(|s| d.observe(s, config))
            .collect()
    }

    #[test]
    fn a_stationary_series_raises_no_alarm() {
        for seed in 0..10 {
            let found = alarms(series(200, 30, |_| 0.0, seed), &DriftConfig::default());
            assert!(found.is_empty(), "seed {seed}: {found:?}");
        }
        // Without the effect floor only the noise threshold, the test and the confirmation
        // hold false alarms down.
        let bare = DriftConfig {
            min_effect: 0.0,
            ..DriftConfig::default()
        };
        let found: Vec<Alarm> = (0..2)
            .flat_map(|seed| alarms(series(200, 30, |_| 0.0, seed), &bare))
            .collect();
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn a_mean_shift_is_found_quickly_with_its_onset_and_feature() {
        let found = alarms(
            series(200, 30, |t| if t >= 100 { 3.0 } else { 0.0 }, 3),
            &DriftConfig::default(),
        );
        assert_eq!(found.len(), 1, "{found:?}");
        let a = &found[0];
        // The effect floor needs about a third of the current window shifted, then the test
        // must reject `confirm` times in a row.
        assert!((100..=125).contains(&a.at), "detected at {}", a.at);
        assert_eq!(a.onset, 100);
        assert!(a.distance > a.threshold && a.p_value <= DEFAULT_ALPHA);
        assert!((a.score - a.distance / a.threshold).abs() < 1e-9);
        assert_eq!(a.moved[0].0, 0, "feature 0 moved");
        assert!(a.moved[0].1 > 0.3);
    }

    #[test]
    fn a_shift_in_one_dimension_of_many_is_found() {
        // 16 dimensions, one moves by 1.5 spreads: the studentised statistic finds it.
        let noise = Normal::new(0.0f32, 1.0).unwrap();
        let mut rng = rng_for(11, 0, 0);
        let steps: Vec<Step> = (0..200u64)
            .map(|t| {
                let pts: Vec<Vec<f32>> = (0..10)
                    .map(|_| {
                        let mut p: Vec<f32> = (0..16).map(|_| noise.sample(&mut rng)).collect();
                        p[7] += if t >= 100 { 1.5 } else { 0.0 };
                        p
                    })
                    .collect();
                let refs: Vec<&[f32]> = pts.iter().map(Vec::as_slice).collect();
                let keys: Vec<u64> = (0..10u64).map(|u| t * 1000 + u).collect();
                Step::new(t, &refs, &keys, &refs, DEFAULT_MAX_POINTS, 1)
            })
            .collect();
        let found = alarms(steps, &DriftConfig::default());
        assert_eq!(found.len(), 1, "{found:?}");
        assert!((100..=130).contains(&found[0].at), "{found:?}");
        assert_eq!(found[0].moved[0].0, 7);
    }

    /// The map from unit to running sum that `unit_means` replaced: the oracle.
    fn unit_means_by_map(steps: &[&Step]) -> Vec<Vec<f32>> {
        let mut sums: std::collections::BTreeMap<u64, (Vec<f64>, f64)> = Default::default();
        for s in steps {
            for (k, p) in s.keys.iter().zip(&s.points) {
                let (sum, n) = sums.entry(*k).or_insert_with(|| (vec![0.0; p.len()], 0.0));
                for (a, x) in sum.iter_mut().zip(p) {
                    *a += f64::from(*x);
                }
                *n += 1.0;
            }
        }
        sums.into_values()
            .map(|(sum, n)| sum.into_iter().map(|x| (x / n) as f32).collect())
            .collect()
    }

    #[test]
    fn unit_means_are_the_maps_bit_for_bit_at_every_step() {
        let mut rng = rng_for(11, 0, 0);
        let noise = Normal::new(0.0f32, 3.0).unwrap();
        let steps: Vec<Step> = (0..120u64)
            .map(|t| {
                let n = rng.random_range(0..40);
                let pts: Vec<Vec<f32>> = (0..n)
                    .map(|_| (0..5).map(|_| noise.sample(&mut rng) * 1e3).collect())
                    .collect();
                let refs: Vec<&[f32]> = pts.iter().map(Vec::as_slice).collect();
                // Few units, so that each appears in many steps.
                let keys: Vec<u64> = (0..n).map(|_| rng.random_range(0..25)).collect();
                Step::new(t, &refs, &keys, &refs, 16, 1)
            })
            .collect();
        for end in 0..=steps.len() {
            let window: Vec<&Step> = steps[end.saturating_sub(80)..end].iter().collect();
            assert_eq!(
                unit_means(&window),
                unit_means_by_map(&window),
                "steps ..{end}"
            );
        }
    }

    /// The kept means are `unit_means` recomputed from scratch at every step, bit for bit, as
    /// the steps slide by one, by several, restart (an alarm's reset), shrink and grow.
    #[test]
    fn kept_unit_means_are_recomputed_ones_at_every_step() {
        let mut rng = rng_for(12, 0, 0);
        let noise = Normal::new(0.0f32, 3.0).unwrap();
        let steps: Vec<Arc<Step>> = (0..300u64)
            .map(|t| {
                let n = rng.random_range(0..30);
                let pts: Vec<Vec<f32>> = (0..n)
                    .map(|_| (0..4).map(|_| noise.sample(&mut rng) * 1e3).collect())
                    .collect();
                let refs: Vec<&[f32]> = pts.iter().map(Vec::as_slice).collect();
                // Few units, repeated within and across steps.
                let keys: Vec<u64> = (0..n).map(|_| rng.random_range(0..20)).collect();
                Arc::new(Step::new(t, &refs, &keys, &refs, 12, 1))
            })
            .collect();
        let mut kept = UnitMeans::default();
        let (mut from, mut to) = (0usize, 0usize);
        for round in 0..600 {
            match rng.random_range(0..10) {
                0 => from = rng.random_range(0..=to), // a restart inside the run
                1 => {
                    // Unrelated steps: a rebuild.
                    from = rng.random_range(0..steps.len());
                    to = from;
                }
                2 => from = (from + rng.random_range(0..5)).min(to),
                _ => {}
            }
            to = (to + rng.random_range(0..3)).min(steps.len());
            if to - from > 40 {
                from = to - 40;
            }
            let want: Vec<&Arc<Step>> = steps[from..to].iter().collect();
            let plain: Vec<&Step> = want.iter().map(|s| &***s).collect();
            let got: Vec<Vec<f32>> = kept.sync(&want).into_iter().map(<[f32]>::to_vec).collect();
            assert_eq!(got, unit_means(&plain), "round {round}: steps {from}..{to}");
        }
    }

    /// The kept means stay the recomputed ones when most subtractions are exact and some are
    /// not: units whose values span from 1e-12 to 1e12 (no sum of them is exact) beside units
    /// of ordinary values, with repeated, zero and subnormal values.
    #[test]
    fn kept_unit_means_are_recomputed_ones_whatever_the_values_span() {
        let mut rng = rng_for(13, 0, 0);
        let noise = Normal::new(0.0f32, 1.0).unwrap();
        let steps: Vec<Arc<Step>> = (0..200u64)
            .map(|t| {
                let n = rng.random_range(0..24);
                let keys: Vec<u64> = (0..n).map(|_| rng.random_range(0..16)).collect();
                let pts: Vec<Vec<f32>> = keys
                    .iter()
                    .map(|k| {
                        (0..3)
                            .map(|_| match k % 4 {
                                0 => {
                                    noise.sample(&mut rng) * 10f32.powi(rng.random_range(-12..=12))
                                }
                                1 => [0.0, -0.0, 1e-40, 0.5][rng.random_range(0..4)],
                                _ => noise.sample(&mut rng),
                            })
                            .collect()
                    })
                    .collect();
                let refs: Vec<&[f32]> = pts.iter().map(Vec::as_slice).collect();
                Arc::new(Step::new(t, &refs, &keys, &refs, 16, 1))
            })
            .collect();
        let mut kept = UnitMeans::default();
        for end in 0..=steps.len() {
            let from = end.saturating_sub(30);
            let want: Vec<&Arc<Step>> = steps[from..end].iter().collect();
            let plain: Vec<&Step> = want.iter().map(|s| &***s).collect();
            let got: Vec<Vec<u32>> = kept
                .sync(&want)
                .into_iter()
                .map(|m| m.iter().map(|x| x.to_bits()).collect())
                .collect();
            let fresh: Vec<Vec<u32>> = unit_means(&plain)
                .into_iter()
                .map(|m| m.iter().map(|x| x.to_bits()).collect())
                .collect();
            assert_eq!(got, fresh, "steps {from}..{end}");
        }
    }

    /// Sums of values whose span fits are the same bits in any order, by adding or by
    /// subtracting from a larger sum; the span of values that do not fit says so.
    #[test]
    fn a_span_that_fits_makes_every_sum_exact() {
        let mut rng = rng_for(14, 0, 0);
        let noise = Normal::new(0.0f32, 1.0).unwrap();
        let (mut fits, mut does_not) = (0, 0);
        for round in 0..2000 {
            let n = rng.random_range(1..80);
            let scale = 10f32.powi(rng.random_range(-6..=6));
            let values: Vec<f32> = (0..n)
                .map(|_| match rng.random_range(0..20) {
                    0 => 0.0,
                    1 => noise.sample(&mut rng) * 1e-9,
                    _ => noise.sample(&mut rng) * scale,
                })
                .collect();
            let mut span = Span::default();
            for v in &values {
                span.add(std::slice::from_ref(v));
            }
            if !span.exact_for(n) {
                does_not += 1;
                continue;
            }
            fits += 1;
            let forward = values.iter().fold(0.0f64, |a, x| a + f64::from(*x));
            let backward = values.iter().rev().fold(0.0f64, |a, x| a + f64::from(*x));
            assert_eq!(forward.to_bits(), backward.to_bits(), "round {round}");
            // Dropping the first k by subtraction is the rest summed afresh.
            let mut kept = forward;
            for k in 0..n {
                kept -= f64::from(values[k]);
                let rest = values[k + 1..]
                    .iter()
                    .fold(0.0f64, |a, x| a + f64::from(*x));
                assert_eq!(kept.to_bits(), rest.to_bits(), "round {round}, {k} dropped");
            }
        }
        assert!(
            fits > 500 && does_not > 100,
            "fits {fits}, does not {does_not}"
        );
        let mut wide = Span::default();
        wide.add(&[1e12, 1e-12]);
        assert!(!wide.exact_for(2));
        let mut odd = Span::default();
        odd.add(&[1.0, f32::NAN]);
        assert!(!odd.exact_for(1));
        assert!(Span::default().exact_for(1000));
    }

    /// Welch's statistic summed over dimensions, each side's sums taken over its own points:
    /// the oracle of [`Pooled::welch`].
    fn welch_from_scratch(pooled: &[&[f32]], order: &[usize], na: usize, dims: usize) -> f64 {
        let (mut sa, mut qa, mut sb, mut qb) = (
            vec![0.0f64; dims],
            vec![0.0f64; dims],
            vec![0.0f64; dims],
            vec![0.0f64; dims],
        );
        for (k, &i) in order.iter().enumerate() {
            let (s, q) = if k < na {
                (&mut sa, &mut qa)
            } else {
                (&mut sb, &mut qb)
            };
            for (d, x) in pooled[i].iter().enumerate().take(dims) {
                let x = f64::from(*x);
                s[d] += x;
                q[d] += x * x;
            }
        }
        let (na, nb) = (na as f64, (order.len() - na) as f64);
        let var = |s: f64, q: f64, n: f64| ((q - s * s / n) / (n - 1.0).max(1.0)).max(0.0);
        (0..dims)
            .map(|d| {
                let diff = sb[d] / nb - sa[d] / na;
                let se = var(sa[d], qa[d], na) / na + var(sb[d], qb[d], nb) / nb;
                diff * diff / se.max(1e-12)
            })
            .sum()
    }

    /// The pooled statistic, which sums only the smaller side, equals the one that sums both
    /// sides' points to a relative 1e-12, whichever side is smaller, on seeded random splits.
    #[test]
    fn the_pooled_statistic_equals_summing_both_sides() {
        let mut rng = rng_for(17, 0, 0);
        let noise = Normal::new(0.0f32, 1.0).unwrap();
        for case in 0..300 {
            let (n, dims) = (rng.random_range(4..200), rng.random_range(1..20));
            let shift = rng.random_range(-3.0f32..3.0);
            let points: Vec<Vec<f32>> = (0..n)
                .map(|_| {
                    (0..dims)
                        .map(|_| noise.sample(&mut rng) * 2.0 + shift)
                        .collect()
                })
                .collect();
            let refs: Vec<&[f32]> = points.iter().map(Vec::as_slice).collect();
            let pooled = Pooled::new(&refs, dims);
            let mut order: Vec<usize> = (0..n).collect();
            order.shuffle(&mut rng);
            let na = rng.random_range(2..=n - 2);
            let (fast, plain) = (
                pooled.welch(&order, na),
                welch_from_scratch(&refs, &order, na, dims),
            );
            assert!(
                (fast - plain).abs() <= 1e-12 * plain.abs().max(1e-300),
                "case {case}: {fast} against {plain}"
            );
        }
    }

    /// Every relabelling, counted to the end: the oracle of the early-stopping test.
    fn p_value_without_stopping(
        a: &[&[f32]],
        b: &[&[f32]],
        permutations: usize,
        rng: &mut impl Rng,
    ) -> f64 {
        let pooled: Vec<&[f32]> = a.iter().chain(b).copied().collect();
        let dims = pooled.iter().map(|p| p.len()).min().unwrap_or(0);
        if a.len() < 2 || b.len() < 2 || dims == 0 {
            return 1.0;
        }
        let mut order: Vec<usize> = (0..pooled.len()).collect();
        let observed = welch_from_scratch(&pooled, &order, a.len(), dims);
        let mut at_least = 0usize;
        for _ in 0..permutations {
            order.shuffle(rng);
            if welch_from_scratch(&pooled, &order, a.len(), dims) >= observed * (1.0 - 1e-12) {
                at_least += 1;
            }
        }
        (1 + at_least) as f64 / (1 + permutations) as f64
    }

    #[test]
    fn the_early_stopping_test_gives_the_full_tests_answer() {
        let mut rng = rng_for(13, 0, 0);
        let noise = Normal::new(0.0f32, 1.0).unwrap();
        let mut rejected = 0;
        for case in 0..200u64 {
            let shift = (case % 5) as f32 * 0.3;
            let (na, nb) = (rng.random_range(0..30), rng.random_range(0..30));
            let mut sample = |n: usize, m: f32| -> Vec<Vec<f32>> {
                (0..n)
                    .map(|_| (0..4).map(|_| noise.sample(&mut rng) + m).collect())
                    .collect()
            };
            let (a, b) = (sample(na, 0.0), sample(nb, shift));
            fn r(v: &[Vec<f32>]) -> Vec<&[f32]> {
                v.iter().map(Vec::as_slice).collect()
            }
            for (alpha, permutations) in [(0.001, 999), (0.05, 99), (0.5, 19)] {
                let full = p_value_without_stopping(
                    &r(&a),
                    &r(&b),
                    permutations,
                    &mut rng_for(5, case, 4),
                );
                assert_eq!(
                    permutation_p_value(&r(&a), &r(&b), permutations, &mut rng_for(5, case, 4)),
                    full
                );
                let early = permutation_p_value_at_most(
                    &r(&a),
                    &r(&b),
                    permutations,
                    alpha,
                    &mut rng_for(5, case, 4),
                );
                assert_eq!(
                    early,
                    Some(full).filter(|p| *p <= alpha),
                    "case {case}, alpha {alpha}"
                );
                rejected += usize::from(early.is_some());
            }
        }
        assert!(
            rejected > 50,
            "both answers are tried: {rejected} rejections"
        );
    }

    #[test]
    fn the_baseline_resets_after_an_alarm() {
        // Two shifts: each is reported once, the second against the baseline after the first.
        let found = alarms(
            series(
                330,
                30,
                |t| match t {
                    0..100 => 0.0,
                    100..220 => 3.0,
                    _ => 6.0,
                },
                5,
            ),
            &DriftConfig::default(),
        );
        let onsets: Vec<u64> = found.iter().map(|a| a.onset).collect();
        assert_eq!(onsets, vec![100, 220], "{found:?}");
    }

    #[test]
    fn a_drift_needs_consecutive_rejections() {
        // A burst of 5 shifted steps: the current window moves, but not for `confirm` steps.
        let with_confirm = |confirm: usize| {
            let burst = series(
                200,
                30,
                |t| if (100..105).contains(&t) { 8.0 } else { 0.0 },
                7,
            );
            alarms(
                burst,
                &DriftConfig {
                    confirm,
                    ..DriftConfig::default()
                },
            )
        };
        let found = with_confirm(30);
        assert!(found.is_empty(), "{found:?}");
        let eager = with_confirm(1);
        assert!(
            !eager.is_empty(),
            "one rejection is enough with confirm = 1"
        );
    }

    #[test]
    fn the_permutation_test_rejects_only_real_differences() {
        let mut rng = rng_for(9, 0, 0);
        let noise = Normal::new(0.0f32, 1.0).unwrap();
        let a: Vec<Vec<f32>> = (0..40).map(|_| vec![noise.sample(&mut rng)]).collect();
        let b: Vec<Vec<f32>> = (0..40)
            .map(|_| vec![noise.sample(&mut rng) + 2.0])
            .collect();
        let c: Vec<Vec<f32>> = (0..40).map(|_| vec![noise.sample(&mut rng)]).collect();
        fn r(v: &[Vec<f32>]) -> Vec<&[f32]> {
            v.iter().map(Vec::as_slice).collect()
        }
        assert!(permutation_p_value(&r(&a), &r(&b), 199, &mut rng) <= 0.01);
        assert!(permutation_p_value(&r(&a), &r(&c), 199, &mut rng) > 0.05);
    }
}
