//! The dashboard's time series: per window, each segment's mean resonance and share of top
//! segments, each segment's size, each forecaster's mean absolute error; and a 2-D map of the
//! latest personas. Kept as sums per window (a few numbers per segment), fed the same batches
//! as the store, and cut into at most `points` buckets when asked for.
//!
//! A window's sums are added as its batches arrive, so a window must be added once. The one
//! source of a second time, a restarted job replaying windows the store already loaded from
//! its files, is kept out by [`Timeline::seal`]: windows at or before a table's sealed window
//! are not added again. Segment sizes and personas are set, not added, and need no seal.
//!
//! ```
//! use personaflow_serve::timeline::Timeline;
//! let mut t = Timeline::new(1_000);
//! t.add_resonance(60_000, "gamer", 0.8, true);
//! t.add_resonance(60_000, "video", 0.2, false);
//! t.add_resonance(60_000, "gamer", 0.4, false);
//! t.add_resonance(60_000, "video", 0.6, true);
//! let s = t.series(100);
//! assert_eq!(s.resonance.window_end, vec![60_000]);
//! let gamer = &s.resonance.series[0];
//! assert_eq!(gamer.name, "gamer");
//! assert!((gamer.mean_probability[0].unwrap() - 0.6).abs() < 1e-9);
//! assert_eq!(gamer.top_share[0], Some(0.5));
//! ```

use crate::store::{column, timestamps};
use crate::{Error, Result};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type, Int64Type, UInt32Type, UInt64Type};
use arrow_array::{Array, RecordBatch};
use personaflow_io::tables::Table;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// The tables the timeline reads (the others are not shown to it).
pub const TIMELINE_TABLES: [Table; 4] = [
    Table::Resonance,
    Table::ForecastErrors,
    Table::SegmentProfiles,
    Table::Personas,
];

/// Windows the timeline keeps by default (two weeks of one-minute windows); the oldest go
/// first.
pub const DEFAULT_TIMELINE_WINDOWS: usize = 20_160;
/// Points per series the dashboard asks for by default.
pub const DEFAULT_POINTS: usize = 360;
/// Points per series one request may ask for.
pub const MAX_POINTS: usize = 5_000;

/// One segment's resonance sums in one window.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct ResonanceSums {
    probability: f64,
    rows: u64,
    top: u64,
}

/// One forecaster's error sums in one window (the forecasts' target window).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct ErrorSums {
    abs_error_requests: f64,
    rows: u64,
}

/// A persona of the latest window, as the map needs it.
#[derive(Clone, Debug, PartialEq)]
struct MapPersona {
    id: u32,
    size: u64,
    centroid: Vec<f32>,
    top_features: Vec<String>,
}

/// The timeline: per-window sums of the tables the dashboard draws.
#[derive(Debug)]
pub struct Timeline {
    max_windows: usize,
    resonance: BTreeMap<i64, BTreeMap<Box<str>, ResonanceSums>>,
    sizes: BTreeMap<i64, BTreeMap<Box<str>, u64>>,
    errors: BTreeMap<i64, BTreeMap<Box<str>, ErrorSums>>,
    personas: (i64, BTreeMap<u32, MapPersona>),
    sealed_resonance: Option<i64>,
    sealed_errors: Option<i64>,
}

/// A series' values, one per point (`None`: nothing in that bucket).
pub type Values = Vec<Option<f64>>;

/// Resonance per segment over time.
#[derive(Debug, Serialize, PartialEq)]
pub struct ResonanceSeries {
    /// Each point's last window end (ms).
    pub window_end: Vec<i64>,
    /// One per segment, by name.
    pub series: Vec<SegmentResonance>,
}

/// One segment's resonance over time.
#[derive(Debug, Serialize, PartialEq)]
pub struct SegmentResonance {
    /// The segment.
    pub name: String,
    /// Mean resonance probability of the users with a row for the segment.
    pub mean_probability: Values,
    /// Share of the users whose top segment it is.
    pub top_share: Values,
}

/// Named series over shared points.
#[derive(Debug, Serialize, PartialEq)]
pub struct Series {
    /// Each point's last window end (ms).
    pub window_end: Vec<i64>,
    /// One per name.
    pub series: Vec<NamedValues>,
}

/// One named series.
#[derive(Debug, Serialize, PartialEq)]
pub struct NamedValues {
    /// Segment or forecaster.
    pub name: String,
    /// One value per point.
    pub values: Values,
}

/// The latest personas on a plane.
#[derive(Debug, Serialize, PartialEq)]
pub struct PersonaMap {
    /// Their window (ms), if any came.
    pub window_end: Option<i64>,
    /// The share of the centroids' variance each axis shows.
    pub explained: [f64; 2],
    /// One per persona.
    pub personas: Vec<MapPoint>,
}

/// A persona on the map.
#[derive(Debug, Serialize, PartialEq)]
pub struct MapPoint {
    /// Its id.
    pub persona_id: u32,
    /// Users assigned to it.
    pub size: u64,
    /// First principal axis.
    pub x: f64,
    /// Second principal axis.
    pub y: f64,
    /// The features that set it apart.
    pub top_features: Vec<String>,
}

/// Everything the dashboard draws but drift, cut into buckets.
#[derive(Debug, Serialize, PartialEq)]
pub struct TimelineSeries {
    /// Windows kept.
    pub windows: usize,
    /// Windows per point (the last bucket may hold fewer).
    pub bucket_windows: usize,
    /// Mean resonance and top share per segment.
    pub resonance: ResonanceSeries,
    /// Profiles per segment (mean over the bucket's windows).
    pub segment_sizes: Series,
    /// Mean absolute error of requests per forecaster (all horizons).
    pub forecast_error: Series,
    /// The latest personas.
    pub persona_map: PersonaMap,
}

impl Timeline {
    /// An empty timeline keeping at most `max_windows` windows per table.
    pub fn new(max_windows: usize) -> Self {
        Timeline {
            max_windows: max_windows.max(1),
            resonance: BTreeMap::new(),
            sizes: BTreeMap::new(),
            errors: BTreeMap::new(),
            personas: (i64::MIN, BTreeMap::new()),
            sealed_resonance: None,
            sealed_errors: None,
        }
    }

    /// Adds one resonance row: `probability` of `segment` for one user in `window`, and
    /// whether it is that user's top segment.
    pub fn add_resonance(&mut self, window: i64, segment: &str, probability: f64, top: bool) {
        if self.sealed_resonance.is_some_and(|s| window <= s) {
            return;
        }
        let cell = cell(&mut self.resonance, window, segment);
        cell.probability += probability;
        cell.rows += 1;
        cell.top += u64::from(top);
        trim(&mut self.resonance, self.max_windows);
    }

    /// Adds one forecast error: `forecaster`'s absolute error of requests for `window`.
    pub fn add_error(&mut self, window: i64, forecaster: &str, abs_error_requests: f64) {
        if self.sealed_errors.is_some_and(|s| window <= s) {
            return;
        }
        let cell = cell(&mut self.errors, window, forecaster);
        cell.abs_error_requests += abs_error_requests;
        cell.rows += 1;
        trim(&mut self.errors, self.max_windows);
    }

    /// Sets `segment`'s size (profiles) in `window`.
    pub fn set_size(&mut self, window: i64, segment: &str, profiles: u64) {
        *cell(&mut self.sizes, window, segment) = profiles;
        trim(&mut self.sizes, self.max_windows);
    }

    /// Sets a persona of `window`; a later window's personas replace an earlier one's.
    pub fn set_persona(
        &mut self,
        window: i64,
        id: u32,
        size: u64,
        centroid: Vec<f32>,
        top_features: Vec<String>,
    ) {
        if window > self.personas.0 {
            self.personas = (window, BTreeMap::new());
        }
        if window == self.personas.0 {
            self.personas.1.insert(
                id,
                MapPersona {
                    id,
                    size,
                    centroid,
                    top_features,
                },
            );
        }
    }

    /// Stops `table`'s windows up to its latest one being added again (they are complete:
    /// the store loaded them from files). Only resonance and forecast errors are added.
    pub fn seal(&mut self, table: Table) {
        match table {
            Table::Resonance => self.sealed_resonance = self.resonance.keys().next_back().copied(),
            Table::ForecastErrors => self.sealed_errors = self.errors.keys().next_back().copied(),
            _ => {}
        }
    }

    /// Adds or sets what `table`'s batch holds (tables the dashboard does not draw are
    /// ignored).
    pub fn apply(&mut self, table: Table, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        match table {
            Table::Resonance => {
                let windows = timestamps(batch, "window_end")?;
                let segments = string_column(batch, "segment")?;
                let p = column(batch, "probability")?
                    .as_primitive_opt::<Float32Type>()
                    .ok_or_else(|| Error::column("probability", "not f32"))?;
                let top = column(batch, "top")?
                    .as_boolean_opt()
                    .ok_or_else(|| Error::column("top", "not a boolean"))?;
                for (i, w) in windows.iter().enumerate() {
                    let prob = f64::from(p.value(i));
                    if p.is_valid(i) && prob.is_finite() {
                        self.add_resonance(*w, segments.value(i), prob, top.value(i));
                    }
                }
            }
            Table::ForecastErrors => {
                let windows = timestamps(batch, "window_end")?;
                let forecasters = string_column(batch, "forecaster")?;
                let e = column(batch, "abs_error_requests")?
                    .as_primitive_opt::<Float64Type>()
                    .ok_or_else(|| Error::column("abs_error_requests", "not f64"))?;
                for (i, w) in windows.iter().enumerate() {
                    if e.is_valid(i) && e.value(i).is_finite() {
                        self.add_error(*w, forecasters.value(i), e.value(i));
                    }
                }
            }
            Table::SegmentProfiles => {
                let windows = timestamps(batch, "window_end")?;
                let segments = string_column(batch, "segment")?;
                let profiles = column(batch, "profiles")?
                    .as_primitive_opt::<Int64Type>()
                    .ok_or_else(|| Error::column("profiles", "not i64"))?;
                for (i, w) in windows.iter().enumerate() {
                    self.set_size(*w, segments.value(i), profiles.value(i).max(0) as u64);
                }
            }
            Table::Personas => {
                let windows = timestamps(batch, "window_end")?;
                let ids = column(batch, "persona_id")?
                    .as_primitive_opt::<UInt32Type>()
                    .ok_or_else(|| Error::column("persona_id", "not u32"))?;
                let sizes = column(batch, "size")?
                    .as_primitive_opt::<UInt64Type>()
                    .ok_or_else(|| Error::column("size", "not u64"))?;
                let centroids = column(batch, "centroid")?
                    .as_list_opt::<i32>()
                    .ok_or_else(|| Error::column("centroid", "not a list"))?;
                let features = column(batch, "top_features")?
                    .as_list_opt::<i32>()
                    .ok_or_else(|| Error::column("top_features", "not a list"))?;
                for (i, w) in windows.iter().enumerate() {
                    let c = centroids.value(i);
                    let c = c
                        .as_primitive_opt::<Float32Type>()
                        .ok_or_else(|| Error::column("centroid", "not a list of f32"))?;
                    let f = features.value(i);
                    let f = f
                        .as_string_opt::<i32>()
                        .ok_or_else(|| Error::column("top_features", "not a list of strings"))?;
                    self.set_persona(
                        *w,
                        ids.value(i),
                        sizes.value(i),
                        c.values().to_vec(),
                        (0..f.len()).map(|j| f.value(j).to_string()).collect(),
                    );
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The series, each cut into at most `points` buckets of consecutive windows.
    pub fn series(&self, points: usize) -> TimelineSeries {
        let points = points.max(1);
        let bucket = |n: usize| n.div_ceil(points).max(1);
        let resonance = {
            let b = bucket(self.resonance.len());
            let names = names(&self.resonance);
            let chunks = chunks(&self.resonance, b);
            // Users with a top segment in each bucket (the share's denominator), for every
            // segment's series.
            let tops: Vec<u64> = chunks
                .iter()
                .map(|c| c.iter().flat_map(|(_, m)| m.values()).map(|s| s.top).sum())
                .collect();
            ResonanceSeries {
                window_end: chunks
                    .iter()
                    .map(|c| c.last().expect("a window").0)
                    .collect(),
                series: names
                    .iter()
                    .map(|name| {
                        let sums: Vec<ResonanceSums> = chunks
                            .iter()
                            .map(|c| {
                                c.iter().filter_map(|(_, m)| m.get(*name)).fold(
                                    ResonanceSums::default(),
                                    |a, s| ResonanceSums {
                                        probability: a.probability + s.probability,
                                        rows: a.rows + s.rows,
                                        top: a.top + s.top,
                                    },
                                )
                            })
                            .collect();
                        SegmentResonance {
                            name: name.to_string(),
                            mean_probability: sums
                                .iter()
                                .map(|s| ratio(s.probability, s.rows))
                                .collect(),
                            top_share: sums
                                .iter()
                                .zip(&tops)
                                .map(|(s, t)| ratio(s.top as f64, *t))
                                .collect(),
                        }
                    })
                    .collect(),
            }
        };
        // Mean over the bucket's windows; a window without the segment counts 0.
        let segment_sizes = named_series(&self.sizes, points, |c, name| {
            let sum: u64 = c.iter().filter_map(|(_, m)| m.get(name)).sum();
            ratio(sum as f64, c.len() as u64)
        });
        let forecast_error = named_series(&self.errors, points, |c, name| {
            let (sum, rows) = c
                .iter()
                .filter_map(|(_, m)| m.get(name))
                .fold((0.0, 0), |(a, n), s| (a + s.abs_error_requests, n + s.rows));
            ratio(sum, rows)
        });
        let personas: Vec<&MapPersona> = self.personas.1.values().collect();
        let centroids: Vec<Vec<f64>> = personas
            .iter()
            .map(|p| p.centroid.iter().map(|v| f64::from(*v)).collect())
            .collect();
        let (xy, explained) = project_2d(&centroids);
        TimelineSeries {
            windows: self.resonance.len().max(self.sizes.len()),
            bucket_windows: bucket(self.resonance.len().max(self.sizes.len())),
            resonance,
            segment_sizes,
            forecast_error,
            persona_map: PersonaMap {
                window_end: (!personas.is_empty()).then_some(self.personas.0),
                explained,
                personas: personas
                    .iter()
                    .zip(xy)
                    .map(|(p, [x, y])| MapPoint {
                        persona_id: p.id,
                        size: p.size,
                        x,
                        y,
                        top_features: p.top_features.clone(),
                    })
                    .collect(),
            },
        }
    }
}

fn string_column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a arrow_array::StringArray> {
    column(batch, name)?
        .as_string_opt::<i32>()
        .ok_or_else(|| Error::column(name, "not a string"))
}

fn cell<'a, V: Default>(
    map: &'a mut BTreeMap<i64, BTreeMap<Box<str>, V>>,
    window: i64,
    name: &str,
) -> &'a mut V {
    let m = map.entry(window).or_default();
    if !m.contains_key(name) {
        m.insert(Box::from(name), V::default());
    }
    m.get_mut(name).expect("just inserted")
}

fn trim<V>(map: &mut BTreeMap<i64, V>, max: usize) {
    while map.len() > max {
        map.pop_first();
    }
}

fn names<V>(map: &BTreeMap<i64, BTreeMap<Box<str>, V>>) -> Vec<&str> {
    let set: BTreeSet<&str> = map.values().flat_map(|m| m.keys().map(|k| &**k)).collect();
    set.into_iter().collect()
}

type Window<'a, V> = (i64, &'a BTreeMap<Box<str>, V>);

fn chunks<V>(map: &BTreeMap<i64, BTreeMap<Box<str>, V>>, size: usize) -> Vec<Vec<Window<'_, V>>> {
    let all: Vec<Window<'_, V>> = map.iter().map(|(w, m)| (*w, m)).collect();
    all.chunks(size.max(1)).map(|c| c.to_vec()).collect()
}

/// One series per name of `map`, each point `value` of a bucket of at most
/// `ceil(windows / points)` consecutive windows.
fn named_series<V>(
    map: &BTreeMap<i64, BTreeMap<Box<str>, V>>,
    points: usize,
    value: impl Fn(&[Window<'_, V>], &str) -> Option<f64>,
) -> Series {
    let chunks = chunks(map, map.len().div_ceil(points.max(1)).max(1));
    Series {
        window_end: chunks
            .iter()
            .map(|c| c.last().expect("a window").0)
            .collect(),
        series: names(map)
            .iter()
            .map(|name| NamedValues {
                name: name.to_string(),
                values: chunks.iter().map(|c| value(c, name)).collect(),
            })
            .collect(),
    }
}

fn ratio(sum: f64, n: u64) -> Option<f64> {
    (n > 0).then(|| sum / n as f64)
}

/// `points` projected on their first two principal axes (centred; each axis's sign set so
/// that its largest component is positive), and the share of the variance each axis holds.
/// Fewer than two points, or points without spread, lie at the origin.
///
/// ```
/// use personaflow_serve::timeline::project_2d;
/// // Points on a line in 3-D: all the variance is on the first axis.
/// let points = vec![vec![0.0, 0.0, 0.0], vec![1.0, 2.0, 2.0], vec![2.0, 4.0, 4.0]];
/// let (xy, explained) = project_2d(&points);
/// assert!((xy[2][0] - xy[0][0] - 6.0).abs() < 1e-9); // the line's length
/// assert!(xy.iter().all(|p| p[1].abs() < 1e-9));
/// assert!((explained[0] - 1.0).abs() < 1e-9);
/// ```
pub fn project_2d(points: &[Vec<f64>]) -> (Vec<[f64; 2]>, [f64; 2]) {
    let n = points.len();
    let d = points.iter().map(Vec::len).min().unwrap_or(0);
    if n < 2 || d == 0 {
        return (vec![[0.0, 0.0]; n], [0.0, 0.0]);
    }
    let mean: Vec<f64> = (0..d)
        .map(|j| points.iter().map(|p| p[j]).sum::<f64>() / n as f64)
        .collect();
    let centred: Vec<Vec<f64>> = points
        .iter()
        .map(|p| (0..d).map(|j| p[j] - mean[j]).collect())
        .collect();
    let mut cov = vec![vec![0.0; d]; d];
    for p in &centred {
        for i in 0..d {
            for j in 0..d {
                cov[i][j] += p[i] * p[j] / n as f64;
            }
        }
    }
    let total: f64 = (0..d).map(|i| cov[i][i]).sum();
    if total <= f64::EPSILON {
        return (vec![[0.0, 0.0]; n], [0.0, 0.0]);
    }
    let mut axes: Vec<Vec<f64>> = Vec::new();
    let mut explained = [0.0; 2];
    for (k, share) in explained.iter_mut().enumerate() {
        let (v, lambda) = top_eigenvector(&cov, k, &axes);
        // Deflate, so the next axis is the next eigenvector.
        for i in 0..d {
            for j in 0..d {
                cov[i][j] -= lambda * v[i] * v[j];
            }
        }
        *share = (lambda / total).max(0.0);
        axes.push(v);
    }
    let xy = centred
        .iter()
        .map(|p| {
            let dot = |a: &[f64]| a.iter().zip(p).map(|(x, y)| x * y).sum::<f64>();
            [dot(&axes[0]), dot(&axes[1])]
        })
        .collect();
    (xy, explained)
}

/// The unit eigenvector of the symmetric positive semi-definite `m` with the largest
/// eigenvalue, and that eigenvalue, by power iteration from a fixed start (deterministic); its
/// largest component is made positive. It is kept orthogonal to `orthogonal_to`.
fn top_eigenvector(m: &[Vec<f64>], k: usize, orthogonal_to: &[Vec<f64>]) -> (Vec<f64>, f64) {
    let d = m.len();
    // A start with a component along every axis, different per k.
    let mut v: Vec<f64> = (0..d)
        .map(|i| 1.0 + ((i + k * 7) % 5) as f64 * 0.1)
        .collect();
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    for _ in 0..500 {
        let mut w: Vec<f64> = (0..d)
            .map(|i| (0..d).map(|j| m[i][j] * v[j]).sum())
            .collect();
        // Kept orthogonal to the axes found before (rounding would drift it back).
        for a in orthogonal_to {
            let dot: f64 = a.iter().zip(&w).map(|(x, y)| x * y).sum();
            w.iter_mut().zip(a).for_each(|(x, y)| *x -= dot * y);
        }
        let nw = norm(&w);
        if nw <= f64::EPSILON {
            return (vec![0.0; d], 0.0);
        }
        let next: Vec<f64> = w.iter().map(|x| x / nw).collect();
        let delta: f64 = next.iter().zip(&v).map(|(a, b)| (a - b).abs()).sum();
        v = next;
        if delta < 1e-12 {
            break;
        }
    }
    let (imax, _) =
        v.iter().enumerate().fold(
            (0, 0.0),
            |(bi, bv), (i, x)| {
                if x.abs() > bv {
                    (i, x.abs())
                } else {
                    (bi, bv)
                }
            },
        );
    if v[imax] < 0.0 {
        v.iter_mut().for_each(|x| *x = -*x);
    }
    // The Rayleigh quotient: the eigenvalue, signed.
    let mv: Vec<f64> = (0..d)
        .map(|i| (0..d).map(|j| m[i][j] * v[j]).sum())
        .collect();
    let rq: f64 = mv.iter().zip(&v).map(|(a, b)| a * b).sum();
    (v, rq.max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use personaflow_io::tables::{ForecastErrorRow, ResonanceRow, TableRow};

    /// A seeded generator (SplitMix64), enough for test data.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn unit(&mut self) -> f64 {
            (self.next() >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    const SEGMENTS: [&str; 3] = ["gamer", "streamer", "worker"];

    /// Users' resonance rows over `windows` windows: a distribution per active user-window.
    fn resonance_rows(rng: &mut Rng, windows: i64, users: u64) -> Vec<ResonanceRow> {
        let mut rows = Vec::new();
        for w in 1..=windows {
            for u in 0..users {
                if rng.below(3) == 0 {
                    continue; // inactive
                }
                let raw: Vec<f64> = SEGMENTS.iter().map(|_| rng.unit() + 0.01).collect();
                let total: f64 = raw.iter().sum();
                let top = (0..SEGMENTS.len())
                    .max_by(|a, b| raw[*a].total_cmp(&raw[*b]))
                    .expect("segments");
                for (s, r) in SEGMENTS.iter().zip(&raw) {
                    rows.push(ResonanceRow {
                        window_end: w * 60_000,
                        user_id: format!("u{u}").into(),
                        segment: (*s).into(),
                        cosine: 0.0,
                        probability: (r / total) as f32,
                        resonating: false,
                        top: *s == SEGMENTS[top],
                        cold_start: false,
                    });
                }
            }
        }
        rows
    }

    /// The oracle: mean probability and top share per (window, segment), recounted.
    fn recount(rows: &[ResonanceRow]) -> BTreeMap<(i64, String), (f64, f64)> {
        let mut sums: BTreeMap<(i64, String), (f64, u64, u64)> = BTreeMap::new();
        let mut users: BTreeMap<i64, u64> = BTreeMap::new();
        for r in rows {
            let e = sums
                .entry((r.window_end, r.segment.to_string()))
                .or_default();
            e.0 += f64::from(r.probability);
            e.1 += 1;
            e.2 += u64::from(r.top);
            *users.entry(r.window_end).or_default() += u64::from(r.top);
        }
        sums.into_iter()
            .map(|((w, s), (p, n, t))| ((w, s), (p / n as f64, t as f64 / users[&w] as f64)))
            .collect()
    }

    /// Batches of `rows` as the job emits them: per window, split among `workers` by user.
    fn batches<R: TableRow + Clone>(
        rows: &[R],
        window: impl Fn(&R) -> i64,
        user: impl Fn(&R) -> &str,
        workers: u64,
    ) -> Vec<RecordBatch> {
        let mut by: BTreeMap<(i64, u64), Vec<R>> = BTreeMap::new();
        for r in rows {
            let h = user(r).bytes().fold(0u64, |a, b| a * 31 + u64::from(b));
            by.entry((window(r), h % workers))
                .or_default()
                .push(r.clone());
        }
        by.values().map(|rs| R::to_batch(rs)).collect()
    }

    fn check_resonance(t: &Timeline, want: &BTreeMap<(i64, String), (f64, f64)>) {
        let s = t.series(usize::MAX);
        let mut seen = 0;
        for seg in &s.resonance.series {
            for (i, w) in s.resonance.window_end.iter().enumerate() {
                match want.get(&(*w, seg.name.clone())) {
                    Some((p, share)) => {
                        let got = seg.mean_probability[i].expect("a value");
                        assert!(
                            (got - p).abs() < 1e-9,
                            "window {w} {}: {got} vs {p}",
                            seg.name
                        );
                        let got = seg.top_share[i].expect("a value");
                        assert!((got - share).abs() < 1e-9, "window {w} {}", seg.name);
                        seen += 1;
                    }
                    None => assert_eq!(seg.mean_probability[i], None),
                }
            }
        }
        assert_eq!(seen, want.len());
    }

    #[test]
    fn resonance_matches_a_recount_at_every_window() {
        for seed in 0..5 {
            let mut rng = Rng(seed);
            let rows = resonance_rows(&mut rng, 30, 40);
            let mut t = Timeline::new(1_000);
            for b in batches(&rows, |r| r.window_end, |r| &r.user_id, 1 + seed % 3) {
                t.apply(Table::Resonance, &b).unwrap();
            }
            check_resonance(&t, &recount(&rows));
        }
    }

    #[test]
    fn a_sealed_table_replayed_after_a_restart_is_not_counted_twice() {
        let mut rng = Rng(7);
        let rows = resonance_rows(&mut rng, 20, 30);
        let (loaded, later): (Vec<_>, Vec<_>) = rows
            .iter()
            .cloned()
            .partition(|r| r.window_end <= 12 * 60_000);
        let mut t = Timeline::new(1_000);
        // Loaded from files, then sealed.
        for b in batches(&loaded, |r| r.window_end, |r| &r.user_id, 2) {
            t.apply(Table::Resonance, &b).unwrap();
        }
        t.seal(Table::Resonance);
        // The job replays windows 5..=12 (with another worker count), then goes on.
        let replayed: Vec<_> = loaded
            .iter()
            .filter(|r| r.window_end >= 5 * 60_000)
            .cloned()
            .collect();
        for b in batches(&replayed, |r| r.window_end, |r| &r.user_id, 3) {
            t.apply(Table::Resonance, &b).unwrap();
        }
        for b in batches(&later, |r| r.window_end, |r| &r.user_id, 3) {
            t.apply(Table::Resonance, &b).unwrap();
        }
        check_resonance(&t, &recount(&rows));
    }

    #[test]
    fn buckets_pool_their_windows_sums() {
        let mut rng = Rng(3);
        let rows = resonance_rows(&mut rng, 10, 20);
        let mut t = Timeline::new(1_000);
        for b in batches(&rows, |r| r.window_end, |r| &r.user_id, 2) {
            t.apply(Table::Resonance, &b).unwrap();
        }
        let s = t.series(3); // 10 windows -> buckets of 4, 4, 2
        assert_eq!(s.resonance.window_end, vec![240_000, 480_000, 600_000]);
        let in_bucket = |lo: i64, hi: i64, seg: &str| {
            let rs: Vec<_> = rows
                .iter()
                .filter(|r| &*r.segment == seg && (lo..=hi).contains(&(r.window_end / 60_000)))
                .collect();
            rs.iter().map(|r| f64::from(r.probability)).sum::<f64>() / rs.len() as f64
        };
        for seg in &s.resonance.series {
            let want = [
                in_bucket(1, 4, &seg.name),
                in_bucket(5, 8, &seg.name),
                in_bucket(9, 10, &seg.name),
            ];
            for (got, want) in seg.mean_probability.iter().zip(want) {
                assert!((got.unwrap() - want).abs() < 1e-9);
            }
        }
    }

    #[test]
    fn forecast_errors_are_mean_absolute_errors_per_forecaster() {
        let mut rng = Rng(11);
        let mut rows = Vec::new();
        for w in 1..=25i64 {
            for u in 0..20 {
                for f in ["lstm-v1", "naive"] {
                    let predicted = rng.unit() * 5.0;
                    let actual = rng.below(6);
                    rows.push(ForecastErrorRow::new(
                        w * 60_000,
                        format!("u{u}").into(),
                        f.into(),
                        (w - 1) * 60_000,
                        1,
                        (predicted as f32, actual),
                        (0.0, 0),
                    ));
                }
            }
        }
        let mut t = Timeline::new(1_000);
        for b in batches(&rows, |r| r.window_end, |r| &r.user_id, 2) {
            t.apply(Table::ForecastErrors, &b).unwrap();
        }
        let s = t.series(usize::MAX);
        assert_eq!(s.forecast_error.window_end.len(), 25);
        for series in &s.forecast_error.series {
            for (i, w) in s.forecast_error.window_end.iter().enumerate() {
                let rs: Vec<_> = rows
                    .iter()
                    .filter(|r| r.window_end == *w && *r.forecaster == *series.name)
                    .collect();
                let want = rs.iter().map(|r| r.abs_error_requests).sum::<f64>() / rs.len() as f64;
                assert!((series.values[i].unwrap() - want).abs() < 1e-9);
            }
        }
    }

    #[test]
    fn the_oldest_windows_go_first() {
        let mut t = Timeline::new(5);
        for w in 1..=9 {
            t.add_resonance(w, "a", 0.5, true);
            t.set_size(w, "a", w as u64);
        }
        let s = t.series(100);
        assert_eq!(s.resonance.window_end, vec![5, 6, 7, 8, 9]);
        assert_eq!(s.segment_sizes.window_end, vec![5, 6, 7, 8, 9]);
        assert_eq!(s.segment_sizes.series[0].values[0], Some(5.0));
    }

    #[test]
    fn later_personas_replace_earlier_ones() {
        let mut t = Timeline::new(5);
        t.set_persona(1, 0, 10, vec![0.0, 0.0], vec![]);
        t.set_persona(1, 1, 10, vec![1.0, 0.0], vec![]);
        t.set_persona(2, 4, 7, vec![0.0, 1.0], vec!["x".into()]);
        t.set_persona(1, 2, 10, vec![1.0, 1.0], vec![]); // late, older: ignored
        let s = t.series(10);
        assert_eq!(s.persona_map.window_end, Some(2));
        assert_eq!(s.persona_map.personas.len(), 1);
        assert_eq!(s.persona_map.personas[0].persona_id, 4);
        assert_eq!(
            (s.persona_map.personas[0].x, s.persona_map.personas[0].y),
            (0.0, 0.0)
        );
    }

    #[test]
    fn the_projection_keeps_the_distances_of_planar_points() {
        let mut rng = Rng(5);
        // Points on a plane embedded in 6-D by an orthonormal pair of axes.
        let a = [0.5, 0.5, 0.5, 0.5, 0.0, 0.0];
        let b = [0.5, -0.5, 0.5, -0.5, 0.0, 0.0];
        let points: Vec<Vec<f64>> = (0..12)
            .map(|_| {
                let (s, t) = (rng.unit() * 10.0, rng.unit() * 3.0);
                (0..6).map(|j| s * a[j] + t * b[j] + 1.0).collect()
            })
            .collect();
        let (xy, explained) = project_2d(&points);
        assert!(
            (explained[0] + explained[1] - 1.0).abs() < 1e-6,
            "{explained:?}"
        );
        assert!(explained[0] >= explained[1]);
        for i in 0..points.len() {
            for j in 0..points.len() {
                let d6: f64 = (0..6)
                    .map(|k| (points[i][k] - points[j][k]).powi(2))
                    .sum::<f64>()
                    .sqrt();
                let d2 = ((xy[i][0] - xy[j][0]).powi(2) + (xy[i][1] - xy[j][1]).powi(2)).sqrt();
                assert!((d6 - d2).abs() < 1e-6, "{d6} vs {d2}");
            }
        }
        // Deterministic.
        assert_eq!(project_2d(&points), (xy, explained));
    }
}
