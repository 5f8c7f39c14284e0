//! What the decoder leaves out: each population's reconstruction residuals, added back to
//! synthetic windows.
//!
//! The decoder returns the *mean* window of a latent point: decoding only means gives windows
//! smoother and less varied than real ones (a VAE's observation noise is part of its model;
//! sampling without it is the usual cause of over-smooth samples). For each population, a
//! sample of its real user-windows is decoded from their own latent points (the encoder's
//! mean, in `profiles`) and compared with the window's real features (`features`): the
//! differences, whole vectors, are the population's **residual pool**. A synthetic window is
//! its decoded step plus a residual drawn from the pool (a residual bootstrap: the draws keep
//! the residuals' spread and their correlations across features).
//!
//! The real window is the last step of the sequence its latent point was encoded from, so a
//! residual is `features(window) - decode(z)[L - 1]`. Calendar and velocity features are not
//! used by the expansion and get no residual.
//!
//! ```
//! use personaflow_synth::residual::{residual, ResidualPool};
//! let pool = ResidualPool::new(vec![residual(&[2.0, 1.0], &[1.5, 1.0], &[true, false])]);
//! assert_eq!(pool.rows(), 1);
//! assert_eq!(pool.get(7), &[0.5, 0.0]); // every draw picks the only residual
//! ```

use crate::generate::Decoder;
use crate::population::Population;
use crate::{Error, Result};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, TimestampMillisecondType};
use personaflow_io::tables::read::{for_each_batch, parquet_files};
use personaflow_io::tables::Table;
use personaflow_operators::window::features::{FEATURES, NUM_BASE_FEATURES, NUM_FEATURES};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// User-windows a population's residual pool is made from at most.
pub const MAX_RESIDUALS: usize = 5_000;

/// At most `max` of the indices `0..n`, evenly spread over them (all of them when `n <= max`):
/// a population's windows are read in time order, so its first `max` would all come from the
/// start of the period.
///
/// ```
/// use personaflow_synth::residual::spread;
/// assert_eq!(spread(10, 4).collect::<Vec<_>>(), vec![0, 2, 5, 7]);
/// assert_eq!(spread(3, 5).collect::<Vec<_>>(), vec![0, 1, 2]);
/// assert_eq!(spread(0, 5).count(), 0);
/// ```
pub fn spread(n: usize, max: usize) -> impl Iterator<Item = usize> {
    let take = n.min(max);
    (0..take).map(move |k| k * n / take.max(1))
}

/// `real - decoded` where `modelled`, else 0.
pub fn residual(real: &[f32], decoded: &[f32], modelled: &[bool]) -> Vec<f32> {
    real.iter()
        .zip(decoded)
        .zip(modelled)
        .map(|((r, d), m)| if *m { r - d } else { 0.0 })
        .collect()
}

/// Which features get residuals: the base features that are not calendar ones.
pub fn modelled_features() -> [bool; NUM_FEATURES] {
    std::array::from_fn(|i| i < NUM_BASE_FEATURES && !FEATURES[i].calendar)
}

/// One population's residuals, drawn by a 64-bit random number.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResidualPool {
    width: usize,
    values: Vec<f32>,
}

impl ResidualPool {
    /// A pool of `rows` (each of the same width).
    pub fn new(rows: Vec<Vec<f32>>) -> Self {
        let width = rows.first().map_or(0, Vec::len);
        ResidualPool {
            width,
            values: rows.into_iter().flatten().collect(),
        }
    }

    /// Residuals in the pool.
    pub fn rows(&self) -> usize {
        self.values.len().checked_div(self.width).unwrap_or(0)
    }

    /// The residual `draw` picks (uniformly over the pool for a uniform `draw`); the pool must
    /// not be empty.
    pub fn get(&self, draw: u64) -> &[f32] {
        let i = (draw % self.rows().max(1) as u64) as usize;
        &self.values[i * self.width..(i + 1) * self.width]
    }
}

/// The residual pools of `populations` (by name) from the backfill output `dir`: for each,
/// the real windows of its sampled latent points (at most [`MAX_RESIDUALS`], evenly spread over its
/// seeded sample), decoded with `decoder`. A population none of whose windows is in the
/// features table gets no pool (its windows are decoded means); without a features table,
/// no population has one.
pub fn residual_pools(
    dir: &Path,
    populations: &[Population],
    decoder: &mut dyn Decoder,
) -> Result<BTreeMap<String, ResidualPool>> {
    // (user, window end) -> (population, point) for the windows wanted.
    let mut wanted: HashMap<(&str, i64), (usize, usize)> = HashMap::new();
    for (p, pop) in populations.iter().enumerate() {
        for i in spread(pop.keys.len(), MAX_RESIDUALS) {
            let key = &pop.keys[i];
            wanted.insert((key.0.as_str(), key.1), (p, i));
        }
    }
    let modelled = modelled_features();
    let names: Vec<(usize, &str)> = FEATURES
        .iter()
        .enumerate()
        .filter(|(i, _)| modelled[*i])
        .map(|(i, f)| (i, f.name))
        .collect();
    let mut columns = vec!["window_end", "user_id"];
    columns.extend(names.iter().map(|(_, n)| *n));
    // (population, point) -> real features.
    let mut real: BTreeMap<(usize, usize), [f32; NUM_FEATURES]> = BTreeMap::new();
    let tdir = dir.join(Table::Features.name());
    if !tdir.is_dir() {
        return Ok(BTreeMap::new());
    }
    let mut failed = None;
    for path in parquet_files(&tdir)? {
        for_each_batch(&path, &columns, |b| {
            let (Some(w), Some(u)) = (
                b.column(0).as_primitive_opt::<TimestampMillisecondType>(),
                b.column(1).as_string_opt::<i32>(),
            ) else {
                failed = Some("window_end or user_id of another type".to_string());
                return;
            };
            let cols: Option<Vec<_>> = (2..b.num_columns())
                .map(|c| b.column(c).as_primitive_opt::<Float32Type>())
                .collect();
            let Some(cols) = cols else {
                failed = Some("a feature column is not f32".to_string());
                return;
            };
            for r in 0..b.num_rows() {
                if let Some(at) = wanted.get(&(u.value(r), w.value(r))) {
                    let mut x = [0f32; NUM_FEATURES];
                    for ((i, _), c) in names.iter().zip(&cols) {
                        x[*i] = c.value(r);
                    }
                    real.insert(*at, x);
                }
            }
        })?;
        if let Some(e) = failed.take() {
            return Err(Error::Input(format!("{}: {e}", path.display())));
        }
    }
    let l = decoder.sequence_len().max(1);
    let hidden = decoder.hidden();
    let mut pools = BTreeMap::new();
    for (p, pop) in populations.iter().enumerate() {
        let rows: Vec<(&[f32; NUM_FEATURES], &Vec<f32>)> = real
            .range((p, 0)..(p + 1, 0))
            .map(|((_, i), x)| (x, &pop.points[*i]))
            .collect();
        if rows.is_empty() {
            continue;
        }
        let mut residuals = Vec::with_capacity(rows.len());
        for chunk in rows.chunks(crate::generate::DEFAULT_DECODE_BATCH) {
            let z: Vec<f32> = chunk.iter().flat_map(|(_, z)| z.iter().copied()).collect();
            let mut h = vec![0f32; chunk.len() * hidden];
            let mut last = Vec::new();
            for s in 0..l {
                let first = vec![f32::from(u8::from(s == 0)); chunk.len()];
                let (x, next) = decoder.step(chunk.len(), &z, &h, &first)?;
                h = next;
                last = x;
            }
            for (i, (x, _)) in chunk.iter().enumerate() {
                residuals.push(residual(
                    &x[..],
                    &last[i * NUM_FEATURES..(i + 1) * NUM_FEATURES],
                    &modelled,
                ));
            }
        }
        pools.insert(pop.name.clone(), ResidualPool::new(residuals));
    }
    Ok(pools)
}
