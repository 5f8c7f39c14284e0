//! Streaming k-means for personas (DESIGN.md step 7): k-means++ seeding, Lloyd's algorithm,
//! mini-batch updates with decayed counts, the silhouette for choosing k, and the matching of
//! new centroids to old ones that keeps persona ids stable from window to window.
//!
//! Everything here is a plain function of its inputs and a seed, so a window's result does not
//! depend on the order its points arrived in once the caller sorts them by a key (the
//! [`PersonaModel`] sorts by user).
//!
//! Its operators: [`operator::ClusterPersonas`] and, for persona drift cohorts, [`pin::PinPersonas`].

pub mod operator;
pub mod pin;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Default number of personas: `None` chooses k in [`DEFAULT_K_MIN`]..=[`DEFAULT_K_MAX`] by
/// silhouette.
pub const DEFAULT_K: Option<usize> = None;
/// Smallest k the silhouette search tries.
pub const DEFAULT_K_MIN: usize = 2;
/// Largest k the silhouette search tries.
pub const DEFAULT_K_MAX: usize = 8;
/// Weight a persona's past count keeps from one window to the next.
pub const DEFAULT_DECAY: f64 = 0.5;
/// Points per mini-batch.
pub const DEFAULT_BATCH_SIZE: usize = 256;
/// Passes over a window's points.
pub const DEFAULT_PASSES: usize = 3;
/// Windows between two silhouette searches for k (auto k only); 0 searches only once.
pub const DEFAULT_RESELECT_EVERY: u64 = 60;
/// Users a window needs before the first personas are formed.
pub const DEFAULT_MIN_USERS: usize = 20;
/// Points the silhouette is computed on (a seeded sample); it is quadratic in this.
pub const DEFAULT_SILHOUETTE_SAMPLE: usize = 400;
/// k-means++ restarts of a batch run (the best inertia wins).
pub const DEFAULT_RESTARTS: usize = 4;
/// Lloyd iterations of a batch run at most.
pub const MAX_LLOYD_ITERATIONS: usize = 300;
/// A persona whose decayed count falls below this share of the total is re-seeded.
pub const DEFAULT_DEAD_SHARE: f64 = 1e-3;
/// Default seed.
pub const DEFAULT_SEED: u64 = 0x5eed_9e75;

/// Squared Euclidean distance.
pub fn sq_dist(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let d = f64::from(*x) - f64::from(*y);
            d * d
        })
        .sum()
}

/// Distances [`sq_dists`] takes side by side: the four sums' chains overlap in the CPU (or
/// share a SIMD register) where one sum's additions each wait for the one before.
pub const DISTANCE_LANES: usize = 4;

/// [`sq_dist`] from `x` to each of `ys`, bit for bit: every sum is still taken dimension by
/// dimension in order, only [`DISTANCE_LANES`] of them side by side. The k-means, the
/// silhouettes and the assignments spend most of their time here. `out` has a slot for each
/// of `ys`.
///
/// ```
/// use personaflow_operators::personas::{sq_dist, sq_dists};
/// let x = [0.1f32, -2.0, 3.5];
/// let ys = [vec![1.0f32, 0.0, 0.0], vec![0.1, -2.0, 3.5], vec![-1.0, 4.0, 2.25]];
/// let mut out = vec![0.0; ys.len()];
/// sq_dists(&x, &ys, &mut out);
/// for (d, y) in out.iter().zip(&ys) {
///     assert_eq!(d.to_bits(), sq_dist(&x, y).to_bits());
/// }
/// ```
pub fn sq_dists<Y: AsRef<[f32]>>(x: &[f32], ys: &[Y], out: &mut [f64]) {
    for_each_sq_dist(x, ys, |j, d| out[j] = d);
}

/// Hands `(j, sq_dist(x, ys[j]))` to `f` for each `j` in order, [`DISTANCE_LANES`] sums at a
/// time (the rest one by one): what [`sq_dists`] and [`nearest`] share.
fn for_each_sq_dist<Y: AsRef<[f32]>>(x: &[f32], ys: &[Y], mut f: impl FnMut(usize, f64)) {
    let mut chunks = ys.chunks_exact(DISTANCE_LANES);
    for (c, chunk) in chunks.by_ref().enumerate() {
        let lanes = sq_dist_lanes(
            x,
            [
                chunk[0].as_ref(),
                chunk[1].as_ref(),
                chunk[2].as_ref(),
                chunk[3].as_ref(),
            ],
        );
        for (i, d) in lanes.into_iter().enumerate() {
            f(c * DISTANCE_LANES + i, d);
        }
    }
    let done = ys.len() - chunks.remainder().len();
    for (i, y) in chunks.remainder().iter().enumerate() {
        f(done + i, sq_dist(x, y.as_ref()));
    }
}

/// [`sq_dist`] from `x` to each of four points at once (each sum in dimension order).
fn sq_dist_lanes(x: &[f32], ys: [&[f32]; DISTANCE_LANES]) -> [f64; DISTANCE_LANES] {
    let n = x.len();
    if ys.iter().any(|y| y.len() != n) {
        // `sq_dist` pairs dimensions up to the shorter one.
        return ys.map(|y| sq_dist(x, y));
    }
    let ys = ys.map(|y| &y[..n]);
    // The value `sq_dist`'s `sum` starts from, whatever the standard library makes it.
    let mut acc = [std::iter::empty::<f64>().sum::<f64>(); DISTANCE_LANES];
    for (d, xd) in x.iter().enumerate() {
        let xd = f64::from(*xd);
        for (a, y) in acc.iter_mut().zip(&ys) {
            let t = xd - f64::from(y[d]);
            *a += t * t;
        }
    }
    acc
}

/// The nearest centroid to `x` and its squared distance (`(0, inf)` without centroids; the
/// first of equally near ones).
pub fn nearest(x: &[f32], centroids: &[Vec<f32>]) -> (usize, f64) {
    let mut best = (0, f64::INFINITY);
    for_each_sq_dist(x, centroids, |j, d| {
        if d < best.1 {
            best = (j, d);
        }
    });
    best
}

/// Sum of squared distances of the points to their nearest centroid.
///
/// ```
/// use personaflow_operators::personas::inertia;
/// let points = vec![vec![0.0, 0.0], vec![2.0, 0.0]];
/// assert_eq!(inertia(&points, &[vec![1.0, 0.0]]), 2.0);
/// ```
pub fn inertia(points: &[Vec<f32>], centroids: &[Vec<f32>]) -> f64 {
    points.iter().map(|p| nearest(p, centroids).1).sum()
}

/// A deterministic generator for `(seed, window, salt)`.
pub fn rng_for(seed: u64, window: u64, salt: u64) -> ChaCha8Rng {
    let mixed = seed
        ^ window.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ salt.wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
    ChaCha8Rng::seed_from_u64(mixed)
}

/// k-means++ seeding: the first centre uniformly, each next one with probability proportional
/// to its squared distance from the nearest centre chosen so far. Returns at most
/// `min(k, points.len())` centres.
pub fn kmeans_plus_plus(points: &[Vec<f32>], k: usize, rng: &mut impl Rng) -> Vec<Vec<f32>> {
    if points.is_empty() || k == 0 {
        return Vec::new();
    }
    let mut centres = vec![points[rng.random_range(0..points.len())].clone()];
    let mut d2 = vec![0.0f64; points.len()];
    sq_dists(&centres[0], points, &mut d2);
    let mut to_next = vec![0.0f64; points.len()];
    while centres.len() < k.min(points.len()) {
        let total: f64 = d2.iter().sum();
        let next = if total <= 0.0 {
            // Every point sits on a centre: no further distinct centre exists.
            break;
        } else {
            let mut target = rng.random::<f64>() * total;
            let mut chosen = d2.len() - 1;
            for (i, d) in d2.iter().enumerate() {
                if target < *d {
                    chosen = i;
                    break;
                }
                target -= d;
            }
            chosen
        };
        let c = points[next].clone();
        sq_dists(&c, points, &mut to_next);
        for (d, t) in d2.iter_mut().zip(&to_next) {
            *d = d.min(*t);
        }
        centres.push(c);
    }
    centres
}

/// The outcome of a batch k-means run.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchKMeans {
    /// The centroids.
    pub centroids: Vec<Vec<f32>>,
    /// Each point's centroid.
    pub labels: Vec<usize>,
    /// Points per centroid.
    pub sizes: Vec<usize>,
    /// Sum of squared distances to the assigned centroids.
    pub inertia: f64,
    /// Lloyd iterations run (of the best restart).
    pub iterations: usize,
}

/// Lloyd's algorithm from `centroids` until no label changes (or [`MAX_LLOYD_ITERATIONS`]).
/// A centroid that loses all its points moves to the point farthest from its centroid.
pub fn lloyd(points: &[Vec<f32>], mut centroids: Vec<Vec<f32>>) -> BatchKMeans {
    let dims = points.first().map_or(0, Vec::len);
    let k = centroids.len();
    let mut labels = vec![usize::MAX; points.len()];
    let mut iterations = 0;
    loop {
        let mut changed = false;
        for (l, p) in labels.iter_mut().zip(points) {
            let (j, _) = nearest(p, &centroids);
            if *l != j {
                *l = j;
                changed = true;
            }
        }
        iterations += 1;
        if !changed || iterations >= MAX_LLOYD_ITERATIONS {
            break;
        }
        let mut sums = vec![vec![0.0f64; dims]; k];
        let mut sizes = vec![0usize; k];
        for (l, p) in labels.iter().zip(points) {
            sizes[*l] += 1;
            for (s, x) in sums[*l].iter_mut().zip(p) {
                *s += f64::from(*x);
            }
        }
        for j in 0..k {
            if sizes[j] > 0 {
                centroids[j] = sums[j]
                    .iter()
                    .map(|s| (s / sizes[j] as f64) as f32)
                    .collect();
            } else if let Some(far) = farthest(points, &labels, &centroids) {
                centroids[j] = points[far].clone();
                labels[far] = j;
            }
        }
    }
    let mut sizes = vec![0usize; k];
    let mut total = 0.0;
    for (l, p) in labels.iter().zip(points) {
        sizes[*l] += 1;
        total += sq_dist(p, &centroids[*l]);
    }
    BatchKMeans {
        centroids,
        labels,
        sizes,
        inertia: total,
        iterations,
    }
}

fn farthest(points: &[Vec<f32>], labels: &[usize], centroids: &[Vec<f32>]) -> Option<usize> {
    (0..points.len())
        .filter(|&i| labels[i] < centroids.len())
        .max_by(|&a, &b| {
            let da = sq_dist(&points[a], &centroids[labels[a]]);
            let db = sq_dist(&points[b], &centroids[labels[b]]);
            da.total_cmp(&db).then(b.cmp(&a))
        })
}

/// Batch k-means: `restarts` k-means++ seedings, each run by Lloyd's algorithm to convergence;
/// the lowest inertia wins. The reference the streaming model is measured against.
///
/// ```
/// use personaflow_operators::personas::{batch_kmeans, rng_for};
/// let points = vec![vec![0.0], vec![0.1], vec![10.0], vec![10.1]];
/// let run = batch_kmeans(&points, 2, 3, &mut rng_for(1, 0, 0));
/// assert!(run.inertia < 0.011);
/// assert_ne!(run.labels[0], run.labels[2]);
/// ```
pub fn batch_kmeans(
    points: &[Vec<f32>],
    k: usize,
    restarts: usize,
    rng: &mut impl Rng,
) -> BatchKMeans {
    let mut best: Option<BatchKMeans> = None;
    for _ in 0..restarts.max(1) {
        let run = lloyd(points, kmeans_plus_plus(points, k, rng));
        if best.as_ref().is_none_or(|b| run.inertia < b.inertia) {
            best = Some(run);
        }
    }
    best.expect("at least one restart")
}

/// Mean silhouette of a labelling: for each point, `(b - a) / max(a, b)` where `a` is its mean
/// distance to its own cluster and `b` the smallest mean distance to another cluster; points
/// alone in their cluster score 0. Quadratic in the number of points.
pub fn silhouette(points: &[Vec<f32>], labels: &[usize], k: usize) -> f64 {
    silhouettes(points, &[(labels, k)])[0]
}

/// [`silhouette`] of each of several labellings `(labels, k)` of the same points, bit for bit,
/// in one pass: each point's distances to the others are computed once for all of them
/// ([`choose_k`] scores one labelling per `k`), in memory linear in the points.
///
/// ```
/// use personaflow_operators::personas::{silhouette, silhouettes};
/// let points = vec![vec![0.0, 0.0], vec![0.0, 1.0], vec![5.0, 0.0], vec![5.0, 1.0]];
/// let (two, one) = ([0, 0, 1, 1], [0, 0, 0, 0]);
/// let s = silhouettes(&points, &[(&two, 2), (&one, 1)]);
/// assert_eq!(s, vec![silhouette(&points, &two, 2), 0.0]);
/// assert!(s[0] > 0.7);
/// ```
pub fn silhouettes(points: &[Vec<f32>], labellings: &[(&[usize], usize)]) -> Vec<f64> {
    let n = points.len();
    let scored = |k: usize| n >= 2 && k >= 2;
    let sizes: Vec<Vec<usize>> = labellings
        .iter()
        .map(|(labels, k)| {
            let mut sizes = vec![0usize; *k];
            if scored(*k) {
                for l in labels.iter() {
                    sizes[*l] += 1;
                }
            }
            sizes
        })
        .collect();
    let mut totals = vec![0.0f64; labellings.len()];
    if !labellings.iter().any(|(_, k)| scored(*k)) {
        return totals;
    }
    let mut row = vec![0.0f64; n];
    let mut sums = Vec::new();
    for (i, p) in points.iter().enumerate() {
        sq_dists(p, points, &mut row);
        for d in row.iter_mut() {
            *d = d.sqrt();
        }
        for (((labels, k), sizes), total) in labellings.iter().zip(&sizes).zip(&mut totals) {
            if !scored(*k) {
                continue;
            }
            sums.clear();
            sums.resize(*k, 0.0f64);
            for (d, l) in row.iter().zip(labels.iter()) {
                sums[*l] += d;
            }
            if let Some(s) = point_silhouette(&sums, sizes, labels[i]) {
                *total += s;
            }
        }
    }
    totals.iter().map(|t| t / n.max(1) as f64).collect()
}

/// One point's silhouette from its summed distances to each cluster (`sums`, itself
/// included at distance 0), the clusters' `sizes` and its own cluster: `None` when it is alone
/// in its cluster or no other cluster has points.
fn point_silhouette(sums: &[f64], sizes: &[usize], own: usize) -> Option<f64> {
    if sizes[own] <= 1 {
        return None;
    }
    let a = sums[own] / (sizes[own] - 1) as f64;
    let b = (0..sizes.len())
        .filter(|&j| j != own && sizes[j] > 0)
        .map(|j| sums[j] / sizes[j] as f64)
        .fold(f64::INFINITY, f64::min);
    (b.is_finite() && a.max(b) > 0.0).then(|| (b - a) / a.max(b))
}

/// Chooses k in `k_min..=k_max` by the silhouette of a batch k-means run on (a seeded sample of
/// at most `sample` of) the points; ties go to the smaller k. Returns k and its run on all the
/// points.
pub fn choose_k(
    points: &[Vec<f32>],
    k_min: usize,
    k_max: usize,
    sample: usize,
    restarts: usize,
    rng: &mut impl Rng,
) -> (usize, BatchKMeans) {
    let k_max = k_max.min(points.len().saturating_sub(1)).max(1);
    let k_min = k_min.clamp(1, k_max);
    let mut idx: Vec<usize> = (0..points.len()).collect();
    idx.shuffle(rng);
    idx.truncate(sample.max(2));
    idx.sort_unstable();
    let sampled: Vec<Vec<f32>> = idx.iter().map(|&i| points[i].clone()).collect();
    let runs: Vec<(usize, BatchKMeans)> = (k_min..=k_max)
        .map(|k| (k, batch_kmeans(points, k, restarts, rng)))
        .collect();
    let labels: Vec<Vec<usize>> = runs
        .iter()
        .map(|(_, run)| {
            sampled
                .iter()
                .map(|p| nearest(p, &run.centroids).0)
                .collect()
        })
        .collect();
    // Every k's labelling of the sample is scored in one pass over its distances.
    let labellings: Vec<(&[usize], usize)> = labels
        .iter()
        .zip(&runs)
        .map(|(l, (_, run))| (l.as_slice(), run.centroids.len()))
        .collect();
    let scores = silhouettes(&sampled, &labellings);
    let mut best: Option<(f64, usize, BatchKMeans)> = None;
    for ((k, run), score) in runs.into_iter().zip(scores) {
        if best.as_ref().is_none_or(|(s, _, _)| score > *s + 1e-9) {
            best = Some((score, k, run));
        }
    }
    let (_, k, run) = best.expect("at least one k");
    (k, run)
}

/// Minimum-cost assignment of rows to columns (`rows <= cols`) by the Hungarian algorithm,
/// O(rows² · cols): `result[i]` is row `i`'s column.
///
/// ```
/// use personaflow_operators::personas::hungarian;
/// let cost = vec![vec![4.0, 1.0, 3.0], vec![2.0, 0.0, 5.0], vec![3.0, 2.0, 2.0]];
/// assert_eq!(hungarian(&cost), vec![1, 0, 2]);
/// ```
pub fn hungarian(cost: &[Vec<f64>]) -> Vec<usize> {
    let n = cost.len();
    if n == 0 {
        return Vec::new();
    }
    let m = cost[0].len();
    assert!(n <= m, "hungarian needs rows <= columns");
    // Potentials u (rows), v (columns); p[j]: the row matched to column j (1-based, 0 = none).
    let mut u = vec![0.0f64; n + 1];
    let mut v = vec![0.0f64; m + 1];
    let mut p = vec![0usize; m + 1];
    let mut way = vec![0usize; m + 1];
    for i in 1..=n {
        p[0] = i;
        let mut j0 = 0;
        let mut minv = vec![f64::INFINITY; m + 1];
        let mut used = vec![false; m + 1];
        loop {
            used[j0] = true;
            let i0 = p[j0];
            let mut delta = f64::INFINITY;
            let mut j1 = 0;
            for j in 1..=m {
                if !used[j] {
                    let cur = cost[i0 - 1][j - 1] - u[i0] - v[j];
                    if cur < minv[j] {
                        minv[j] = cur;
                        way[j] = j0;
                    }
                    if minv[j] < delta {
                        delta = minv[j];
                        j1 = j;
                    }
                }
            }
            for j in 0..=m {
                if used[j] {
                    u[p[j]] += delta;
                    v[j] -= delta;
                } else {
                    minv[j] -= delta;
                }
            }
            j0 = j1;
            if p[j0] == 0 {
                break;
            }
        }
        loop {
            let j1 = way[j0];
            p[j0] = p[j1];
            j0 = j1;
            if j0 == 0 {
                break;
            }
        }
    }
    let mut result = vec![0usize; n];
    for j in 1..=m {
        if p[j] > 0 {
            result[p[j] - 1] = j - 1;
        }
    }
    result
}

/// Ids for `new` centroids that keep the ids of the `old` ones they match: the assignment of
/// least total squared distance pairs them; new centroids left over get fresh ids from
/// `next_id` on.
///
/// ```
/// use personaflow_operators::personas::match_ids;
/// let old = vec![(7, vec![0.0f32]), (3, vec![10.0])];
/// let mut next = 8;
/// let ids = match_ids(&old, &[vec![9.5], vec![20.0], vec![0.5]], &mut next);
/// assert_eq!(ids, vec![3, 8, 7]);
/// ```
pub fn match_ids(old: &[(u32, Vec<f32>)], new: &[Vec<f32>], next_id: &mut u32) -> Vec<u32> {
    let mut ids = vec![u32::MAX; new.len()];
    if !old.is_empty() && !new.is_empty() {
        if old.len() <= new.len() {
            let cost: Vec<Vec<f64>> = old
                .iter()
                .map(|(_, o)| new.iter().map(|c| sq_dist(o, c)).collect())
                .collect();
            for (row, col) in hungarian(&cost).into_iter().enumerate() {
                ids[col] = old[row].0;
            }
        } else {
            let cost: Vec<Vec<f64>> = new
                .iter()
                .map(|c| old.iter().map(|(_, o)| sq_dist(o, c)).collect())
                .collect();
            for (row, col) in hungarian(&cost).into_iter().enumerate() {
                ids[row] = old[col].0;
            }
        }
    }
    for id in ids.iter_mut().filter(|id| **id == u32::MAX) {
        *id = *next_id;
        *next_id += 1;
    }
    ids
}

/// How personas are formed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PersonaConfig {
    /// Number of personas; `None` chooses it in `k_min..=k_max` by silhouette.
    pub k: Option<usize>,
    /// Smallest k tried.
    pub k_min: usize,
    /// Largest k tried.
    pub k_max: usize,
    /// Weight a persona's past count keeps from one window to the next (0..=1): lower forgets
    /// faster.
    pub decay: f64,
    /// Points per mini-batch.
    pub batch_size: usize,
    /// Passes over each window's points.
    pub passes: usize,
    /// Windows between silhouette searches for k (auto k only; 0: only the first).
    pub reselect_every: u64,
    /// Users a window needs before the first personas are formed.
    pub min_users: usize,
    /// Silhouette sample size.
    pub silhouette_sample: usize,
    /// k-means++ restarts of each batch run.
    pub restarts: usize,
    /// Features listed as characterising each persona.
    pub top_features: usize,
    /// Seed.
    pub seed: u64,
}

impl Default for PersonaConfig {
    fn default() -> Self {
        PersonaConfig {
            k: DEFAULT_K,
            k_min: DEFAULT_K_MIN,
            k_max: DEFAULT_K_MAX,
            decay: DEFAULT_DECAY,
            batch_size: DEFAULT_BATCH_SIZE,
            passes: DEFAULT_PASSES,
            reselect_every: DEFAULT_RESELECT_EVERY,
            min_users: DEFAULT_MIN_USERS,
            silhouette_sample: DEFAULT_SILHOUETTE_SAMPLE,
            restarts: DEFAULT_RESTARTS,
            top_features: 3,
            seed: DEFAULT_SEED,
        }
    }
}

impl PersonaConfig {
    /// Checks the ranges.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |key: &str, reason: String| Err(crate::Error::invalid_config(key, reason));
        if self.k == Some(0) {
            return bad("personas.k", "must be at least 1".into());
        }
        if self.k_min < 2 || self.k_min > self.k_max {
            return bad(
                "personas.k_min",
                format!(
                    "({}) must be at least 2 and at most k_max ({})",
                    self.k_min, self.k_max
                ),
            );
        }
        if !(0.0..=1.0).contains(&self.decay) {
            return bad(
                "personas.decay",
                format!("({}) must be in 0..=1", self.decay),
            );
        }
        for (key, value) in [
            ("personas.batch_size", self.batch_size),
            ("personas.passes", self.passes),
            ("personas.restarts", self.restarts),
        ] {
            if value == 0 {
                return bad(key, "must be at least 1".into());
            }
        }
        if self.silhouette_sample < 2 {
            return bad("personas.silhouette_sample", "must be at least 2".into());
        }
        Ok(())
    }
}

/// One persona as the model holds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Centroid {
    /// Stable id.
    pub id: u32,
    /// Position in profile space.
    pub centre: Vec<f32>,
    /// Decayed number of points it has absorbed.
    pub count: f64,
}

/// A user's place among the personas of a window.
#[derive(Clone, Debug, PartialEq)]
pub struct Assignment {
    /// The nearest persona's id.
    pub persona: u32,
    /// Euclidean distance to it.
    pub distance: f64,
    /// Probability of each persona (in the order of [`WindowPersonas::ids`]): a softmax of
    /// minus squared distance over the window's mean squared distance to the nearest persona.
    pub probabilities: Vec<f32>,
}

/// The personas of one window.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowPersonas {
    /// Persona ids, ascending.
    pub ids: Vec<u32>,
    /// Centroids, in the order of `ids`.
    pub centroids: Vec<Vec<f32>>,
    /// Users assigned in this window, in the order of `ids`.
    pub sizes: Vec<usize>,
    /// One assignment per input point, in input order.
    pub assignments: Vec<Assignment>,
    /// Sum of squared distances of this window's points to their personas.
    pub inertia: f64,
    /// k was (re)chosen in this window.
    pub reselected: bool,
}

/// The streaming k-means model: its state is the centroids with their decayed counts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PersonaModel {
    /// Current personas, by ascending id.
    pub centroids: Vec<Centroid>,
    /// The next fresh id.
    pub next_id: u32,
    /// Window of the last silhouette search.
    pub selected_at: Option<u64>,
}

impl PersonaModel {
    /// Updates the model with the points of `window` (each point must have the model's
    /// dimensions) and assigns them. The points must be in a canonical order (e.g. by user) for
    /// the result not to depend on arrival order. Returns `None` while no persona exists and
    /// the window has fewer than `min_users` points.
    ///
    /// * First window with enough points, or a due silhouette search (auto k): batch k-means
    ///   (k-means++ seeding, Lloyd to convergence, best of `restarts`) picks the centroids;
    ///   they keep the ids of the old centroids they match ([`match_ids`]).
    /// * Otherwise: counts decay by `decay`, then `passes` shuffled passes of mini-batches move
    ///   each centroid towards its points with step `1 / count` (Sculley's mini-batch k-means).
    ///   A persona whose count falls below [`DEFAULT_DEAD_SHARE`] of the total is re-seeded at
    ///   the point farthest from its persona, under a fresh id.
    pub fn update(
        &mut self,
        window: u64,
        points: &[&[f32]],
        config: &PersonaConfig,
    ) -> Option<WindowPersonas> {
        let owned: Vec<Vec<f32>> = points.iter().map(|p| p.to_vec()).collect();
        let due = config.k.is_none()
            && config.reselect_every > 0
            && self
                .selected_at
                .is_some_and(|at| window >= at + config.reselect_every);
        let mut reselected = false;
        if (self.centroids.is_empty() && owned.len() >= config.min_users.max(2)) || due {
            let mut rng = rng_for(config.seed, window, 1);
            let run = match config.k {
                Some(k) => batch_kmeans(&owned, k, config.restarts, &mut rng),
                None => {
                    choose_k(
                        &owned,
                        config.k_min,
                        config.k_max,
                        config.silhouette_sample,
                        config.restarts,
                        &mut rng,
                    )
                    .1
                }
            };
            let old: Vec<(u32, Vec<f32>)> = self
                .centroids
                .iter()
                .map(|c| (c.id, c.centre.clone()))
                .collect();
            let ids = match_ids(&old, &run.centroids, &mut self.next_id);
            self.centroids = ids
                .into_iter()
                .zip(run.centroids)
                .zip(run.sizes)
                .map(|((id, centre), size)| Centroid {
                    id,
                    centre,
                    count: size as f64,
                })
                .collect();
            self.centroids.sort_by_key(|c| c.id);
            self.selected_at = Some(window);
            reselected = true;
        } else if !self.centroids.is_empty() {
            self.mini_batch(window, &owned, config);
        }
        if self.centroids.is_empty() {
            return None;
        }
        Some(self.assign(&owned, reselected))
    }

    fn mini_batch(&mut self, window: u64, points: &[Vec<f32>], config: &PersonaConfig) {
        for c in &mut self.centroids {
            c.count *= config.decay;
        }
        let mut rng = rng_for(config.seed, window, 2);
        let mut order: Vec<usize> = (0..points.len()).collect();
        for _ in 0..config.passes {
            order.shuffle(&mut rng);
            for batch in order.chunks(config.batch_size) {
                let centres: Vec<Vec<f32>> =
                    self.centroids.iter().map(|c| c.centre.clone()).collect();
                let labels: Vec<usize> = batch
                    .iter()
                    .map(|&i| nearest(&points[i], &centres).0)
                    .collect();
                for (&i, &j) in batch.iter().zip(&labels) {
                    let c = &mut self.centroids[j];
                    c.count += 1.0;
                    let eta = 1.0 / c.count;
                    for (x, p) in c.centre.iter_mut().zip(&points[i]) {
                        *x = ((1.0 - eta) * f64::from(*x) + eta * f64::from(*p)) as f32;
                    }
                }
            }
        }
        let total: f64 = self.centroids.iter().map(|c| c.count).sum();
        let dead: Vec<usize> = (0..self.centroids.len())
            .filter(|&j| self.centroids[j].count < DEFAULT_DEAD_SHARE * total)
            .collect();
        for j in dead {
            let centres: Vec<Vec<f32>> = self.centroids.iter().map(|c| c.centre.clone()).collect();
            let far = (0..points.len()).max_by(|&a, &b| {
                nearest(&points[a], &centres)
                    .1
                    .total_cmp(&nearest(&points[b], &centres).1)
                    .then(b.cmp(&a))
            });
            if let Some(far) = far {
                let id = self.next_id;
                self.next_id += 1;
                self.centroids[j] = Centroid {
                    id,
                    centre: points[far].clone(),
                    count: 1.0,
                };
            }
        }
        self.centroids.sort_by_key(|c| c.id);
    }

    fn assign(&self, points: &[Vec<f32>], reselected: bool) -> WindowPersonas {
        let centres: Vec<Vec<f32>> = self.centroids.iter().map(|c| c.centre.clone()).collect();
        let k = centres.len();
        let d2: Vec<Vec<f64>> = points
            .iter()
            .map(|p| {
                let mut row = vec![0.0f64; k];
                sq_dists(p, &centres, &mut row);
                row
            })
            .collect();
        let nearest_d2: Vec<(usize, f64)> = d2
            .iter()
            .map(|row| {
                row.iter().enumerate().fold(
                    (0, f64::INFINITY),
                    |b, (j, d)| if *d < b.1 { (j, *d) } else { b },
                )
            })
            .collect();
        let inertia: f64 = nearest_d2.iter().map(|(_, d)| d).sum();
        let temperature = (inertia / points.len().max(1) as f64).max(1e-9);
        let mut sizes = vec![0usize; k];
        let assignments = d2
            .iter()
            .zip(&nearest_d2)
            .map(|(row, &(j, d))| {
                sizes[j] += 1;
                let logits: Vec<f64> = row.iter().map(|x| -(x - d) / temperature).collect();
                let total: f64 = logits.iter().map(|l| l.exp()).sum();
                Assignment {
                    persona: self.centroids[j].id,
                    distance: d.sqrt(),
                    probabilities: logits.iter().map(|l| (l.exp() / total) as f32).collect(),
                }
            })
            .collect();
        WindowPersonas {
            ids: self.centroids.iter().map(|c| c.id).collect(),
            centroids: centres,
            sizes,
            assignments,
            inertia,
            reselected,
        }
    }
}

/// The `n` features that set a group apart from the population most: the largest
/// `|group mean - population mean| / population std`, with the sign of the difference
/// (ties by index). Features with no spread in the population are skipped.
///
/// ```
/// use personaflow_operators::personas::distinguishing_features;
/// let top = distinguishing_features(&[5.0, 1.0, 0.0], &[1.0, 1.0, 0.0], &[2.0, 1.0, 0.0], 2);
/// assert_eq!(top, vec![(0, 2.0), (1, 0.0)]);
/// ```
pub fn distinguishing_features(
    group_mean: &[f64],
    population_mean: &[f64],
    population_std: &[f64],
    n: usize,
) -> Vec<(usize, f64)> {
    let mut z: Vec<(usize, f64)> = group_mean
        .iter()
        .zip(population_mean)
        .zip(population_std)
        .enumerate()
        .filter(|(_, (_, s))| **s > 1e-12)
        .map(|(i, ((g, p), s))| (i, (g - p) / s))
        .collect();
    z.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()).then(a.0.cmp(&b.0)));
    z.truncate(n);
    z
}

/// Running column means and standard deviations of feature rows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ColumnStats {
    n: f64,
    sum: Vec<f64>,
    sum_sq: Vec<f64>,
}

impl ColumnStats {
    /// Adds a row.
    pub fn add(&mut self, row: &[f32]) {
        if self.sum.len() < row.len() {
            self.sum.resize(row.len(), 0.0);
            self.sum_sq.resize(row.len(), 0.0);
        }
        self.n += 1.0;
        for (i, x) in row.iter().enumerate() {
            let x = f64::from(*x);
            self.sum[i] += x;
            self.sum_sq[i] += x * x;
        }
    }

    /// Rows added.
    pub fn count(&self) -> usize {
        self.n as usize
    }

    /// Column means.
    pub fn mean(&self) -> Vec<f64> {
        let n = self.n.max(1.0);
        self.sum.iter().map(|s| s / n).collect()
    }

    /// Column (population) standard deviations.
    pub fn std(&self) -> Vec<f64> {
        let n = self.n.max(1.0);
        self.sum
            .iter()
            .zip(&self.sum_sq)
            .map(|(s, q)| (q / n - (s / n) * (s / n)).max(0.0).sqrt())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_distr::{Distribution, Normal};

    /// `per_blob` points around each of `centres`, standard deviation `spread`.
    fn blobs(centres: &[Vec<f32>], per_blob: usize, spread: f32, seed: u64) -> Vec<Vec<f32>> {
        let mut rng = rng_for(seed, 0, 9);
        let noise = Normal::new(0.0f32, spread).unwrap();
        let mut out = Vec::new();
        for _ in 0..per_blob {
            for c in centres {
                out.push(c.iter().map(|x| x + noise.sample(&mut rng)).collect());
            }
        }
        out
    }

    fn centres(k: usize, dims: usize, seed: u64) -> Vec<Vec<f32>> {
        let mut rng = rng_for(seed, 0, 7);
        (0..k)
            .map(|_| (0..dims).map(|_| rng.random_range(-4.0..4.0)).collect())
            .collect()
    }

    /// The nearest centroid as it was found before [`sq_dists`]: one distance after another.
    fn nearest_one_by_one(x: &[f32], centroids: &[Vec<f32>]) -> (usize, f64) {
        let mut best = (0, f64::INFINITY);
        for (j, c) in centroids.iter().enumerate() {
            let d = sq_dist(x, c);
            if d < best.1 {
                best = (j, d);
            }
        }
        best
    }

    #[test]
    fn distances_side_by_side_are_sq_dist_bit_for_bit() {
        let mut rng = rng_for(11, 0, 3);
        for case in 0..2_000u64 {
            let dims = rng.random_range(0..40);
            let count = rng.random_range(0..13);
            // Mostly wide ranges and ties (repeated points, a centroid on `x`); now and then a
            // point of another length, which `sq_dist` pairs up to the shorter.
            let scale: f32 = [1e-3, 1.0, 1e4][rng.random_range(0..3)];
            let x: Vec<f32> = (0..dims).map(|_| rng.random_range(-scale..scale)).collect();
            let mut ys: Vec<Vec<f32>> = (0..count)
                .map(|_| match rng.random_range(0..10) {
                    0 => x.clone(),
                    1 => (0..rng.random_range(0..dims + 2))
                        .map(|_| rng.random_range(-scale..scale))
                        .collect(),
                    _ => (0..dims).map(|_| rng.random_range(-scale..scale)).collect(),
                })
                .collect();
            if case % 7 == 0 && count > 1 {
                ys[count - 1] = ys[0].clone();
            }
            let mut out = vec![f64::NAN; count];
            sq_dists(&x, &ys, &mut out);
            for (d, y) in out.iter().zip(&ys) {
                assert_eq!(d.to_bits(), sq_dist(&x, y).to_bits(), "case {case}");
                assert_eq!(
                    d.to_bits(),
                    sq_dist(y, &x).to_bits(),
                    "case {case}: symmetric"
                );
            }
            let (j, d) = nearest(&x, &ys);
            let (oj, od) = nearest_one_by_one(&x, &ys);
            assert_eq!((j, d.to_bits()), (oj, od.to_bits()), "case {case}");
        }
    }

    #[test]
    fn hungarian_finds_the_cheapest_assignment() {
        // Greedy would take (0, 0) at cost 1 and then pay 10; the optimum pays 2 + 2.
        let cost = vec![vec![1.0, 2.0], vec![2.0, 10.0]];
        assert_eq!(hungarian(&cost), vec![1, 0]);
        // Brute force on seeded random 5x6 matrices.
        let mut rng = rng_for(3, 0, 0);
        for _ in 0..50 {
            let cost: Vec<Vec<f64>> = (0..5)
                .map(|_| (0..6).map(|_| rng.random_range(0.0..10.0)).collect())
                .collect();
            let got = hungarian(&cost);
            let got_cost: f64 = got.iter().enumerate().map(|(i, &j)| cost[i][j]).sum();
            let mut best = f64::INFINITY;
            permutations(6, 5, &mut Vec::new(), &mut |p| {
                best = best.min(p.iter().enumerate().map(|(i, &j)| cost[i][j]).sum());
            });
            assert!((got_cost - best).abs() < 1e-9, "{got_cost} vs {best}");
        }
    }

    fn permutations(m: usize, n: usize, cur: &mut Vec<usize>, f: &mut impl FnMut(&[usize])) {
        if cur.len() == n {
            f(cur);
            return;
        }
        for j in 0..m {
            if !cur.contains(&j) {
                cur.push(j);
                permutations(m, n, cur, f);
                cur.pop();
            }
        }
    }

    /// The silhouette as first written, one labelling at a time (each point's term as
    /// [`point_silhouette`] gives it): the oracle of [`silhouettes`], which scores several in
    /// one pass.
    fn silhouette_pointwise(points: &[Vec<f32>], labels: &[usize], k: usize) -> f64 {
        if points.len() < 2 || k < 2 {
            return 0.0;
        }
        let mut sizes = vec![0usize; k];
        for l in labels {
            sizes[*l] += 1;
        }
        let mut total = 0.0;
        for (i, p) in points.iter().enumerate() {
            let mut sums = vec![0.0f64; k];
            for (q, l) in points.iter().zip(labels) {
                sums[*l] += sq_dist(p, q).sqrt();
            }
            if let Some(s) = point_silhouette(&sums, &sizes, labels[i]) {
                total += s;
            }
        }
        total / points.len() as f64
    }

    #[test]
    fn one_pass_gives_each_labellings_pointwise_silhouette_bit_for_bit() {
        let mut rng = rng_for(11, 0, 0);
        for case in 0..200 {
            let n = rng.random_range(0..60);
            let dims = rng.random_range(1..20);
            let points: Vec<Vec<f32>> = (0..n)
                .map(|_| (0..dims).map(|_| rng.random_range(-50.0..50.0)).collect())
                .collect();
            let labellings: Vec<(Vec<usize>, usize)> = (0..rng.random_range(1..6))
                .map(|_| {
                    let k = rng.random_range(1..9);
                    ((0..n).map(|_| rng.random_range(0..k)).collect(), k)
                })
                .collect();
            let each: Vec<(&[usize], usize)> =
                labellings.iter().map(|(l, k)| (l.as_slice(), *k)).collect();
            let got = silhouettes(&points, &each);
            for (j, (labels, k)) in labellings.iter().enumerate() {
                let want = silhouette_pointwise(&points, labels, *k);
                assert_eq!(
                    got[j].to_bits(),
                    want.to_bits(),
                    "case {case}, labelling {j}"
                );
                assert_eq!(silhouette(&points, labels, *k).to_bits(), want.to_bits());
            }
        }
    }

    #[test]
    fn silhouette_prefers_the_true_number_of_blobs() {
        let corners = vec![
            vec![0.0, 0.0, 0.0],
            vec![4.0, 0.0, 0.0],
            vec![0.0, 4.0, 0.0],
            vec![0.0, 0.0, 4.0],
        ];
        let points = blobs(&corners, 60, 0.4, 2);
        let (k, run) = choose_k(&points, 2, 8, 300, 3, &mut rng_for(5, 0, 0));
        assert_eq!(k, 4);
        assert_eq!(run.sizes.iter().sum::<usize>(), points.len());
    }

    #[test]
    fn streaming_inertia_is_within_ten_percent_of_batch_kmeans() {
        // Stationary blobs arriving over 20 windows; the model sees each window once.
        let truth = centres(5, 8, 11);
        let config = PersonaConfig {
            k: Some(5),
            ..PersonaConfig::default()
        };
        let mut model = PersonaModel::default();
        let mut all = Vec::new();
        for w in 0..20 {
            let points = blobs(&truth, 30, 0.8, 100 + w);
            let refs: Vec<&[f32]> = points.iter().map(Vec::as_slice).collect();
            model.update(w, &refs, &config).expect("personas exist");
            all.extend(points);
        }
        let centres: Vec<Vec<f32>> = model.centroids.iter().map(|c| c.centre.clone()).collect();
        let streaming = inertia(&all, &centres);
        let batch = batch_kmeans(&all, 5, 10, &mut rng_for(42, 0, 0)).inertia;
        assert!(
            streaming <= 1.10 * batch,
            "streaming inertia {streaming:.1} against batch {batch:.1}"
        );
    }

    #[test]
    fn ids_stay_stable_while_the_data_does() {
        let truth = centres(3, 4, 21);
        let config = PersonaConfig {
            k: None,
            reselect_every: 5,
            ..PersonaConfig::default()
        };
        let mut model = PersonaModel::default();
        let mut first: Option<Vec<(u32, Vec<f32>)>> = None;
        for w in 0..30 {
            let points = blobs(&truth, 40, 0.2, 300 + w);
            let refs: Vec<&[f32]> = points.iter().map(Vec::as_slice).collect();
            let out = model.update(w, &refs, &config).unwrap();
            assert_eq!(out.ids.len(), 3, "window {w}");
            // Each blob's points keep the id they had in window 0, through re-selections.
            let ids_by_blob: Vec<u32> = (0..3).map(|b| out.assignments[b].persona).collect();
            let pairs: Vec<(u32, Vec<f32>)> = ids_by_blob
                .iter()
                .zip(&truth)
                .map(|(id, c)| (*id, c.clone()))
                .collect();
            match &first {
                None => first = Some(pairs),
                Some(f) => assert_eq!(&pairs, f, "window {w}"),
            }
        }
        assert_eq!(model.next_id, 3, "no persona was re-created");
    }

    #[test]
    fn probabilities_sum_to_one_and_favour_the_nearest() {
        let points = blobs(&centres(3, 2, 4), 30, 0.3, 5);
        let refs: Vec<&[f32]> = points.iter().map(Vec::as_slice).collect();
        let out = PersonaModel::default()
            .update(0, &refs, &PersonaConfig::default())
            .unwrap();
        for a in &out.assignments {
            let sum: f32 = a.probabilities.iter().sum();
            assert!((sum - 1.0).abs() < 1e-4);
            let top = out.ids.iter().position(|id| *id == a.persona).unwrap();
            assert!(a.probabilities.iter().all(|p| *p <= a.probabilities[top]));
        }
    }

    #[test]
    fn too_few_users_form_no_personas() {
        let points = blobs(&centres(2, 2, 4), 3, 0.3, 5);
        let refs: Vec<&[f32]> = points.iter().map(Vec::as_slice).collect();
        assert!(PersonaModel::default()
            .update(0, &refs, &PersonaConfig::default())
            .is_none());
    }

    #[test]
    fn a_persona_that_loses_its_users_is_reseeded_under_a_new_id() {
        let config = PersonaConfig {
            k: Some(2),
            decay: 0.01,
            ..PersonaConfig::default()
        };
        let mut model = PersonaModel::default();
        let two = blobs(&[vec![0.0, 0.0], vec![10.0, 10.0]], 30, 0.1, 1);
        let refs: Vec<&[f32]> = two.iter().map(Vec::as_slice).collect();
        model.update(0, &refs, &config).unwrap();
        // The second blob moves far away: its persona follows or is re-seeded; either way
        // two personas keep covering the data.
        let moved = blobs(&[vec![0.0, 0.0], vec![-50.0, 40.0]], 30, 0.1, 2);
        let refs: Vec<&[f32]> = moved.iter().map(Vec::as_slice).collect();
        for w in 1..6 {
            model.update(w, &refs, &config).unwrap();
        }
        let centres: Vec<Vec<f32>> = model.centroids.iter().map(|c| c.centre.clone()).collect();
        assert!(inertia(&moved, &centres) / (moved.len() as f64) < 1.0);
    }
}
