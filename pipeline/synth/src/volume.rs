//! `--volume forecast`: synthetic users whose demand follows the backfill's demand forecast.
//!
//! The backfill forecasts each active user's requests `h = 1..H` windows ahead (`forecasts`).
//! Summed over the population's users, the forecast made at the last window before the
//! generated period (the *origin*) says how much demand the population will bring in each of
//! the next `H` windows; the same sums over every earlier origin of the fitted period say how
//! much it brought on average. Their ratio, per horizon, is the **volume factor**:
//!
//! ```text
//! factor[h] = S(origin, h) / mean over origins o of S(o, h)      S(o, h) = sum over users of
//!                                                                 predicted_requests(o, h)
//! ```
//!
//! Both sides are sums over the users the forecaster saw at an origin, so they share its
//! selection (the users active there) and its bias; the ratio is the change the forecaster
//! expects against the period the users' activity was measured over. A synthetic user active
//! in a share `a` of windows is active in the window `h` after the origin with probability
//! `min(1, a × factor[h])`. Windows past the forecast's horizon keep `factor[H]`.
//!
//! ```
//! use personaflow_synth::volume::volume_factors;
//! use std::collections::BTreeMap;
//! // Origins 0, 1, 2 (window ends in ms, windows of 1), horizons 1 and 2.
//! let sums = BTreeMap::from([
//!     ((0, 1), 10.0), ((0, 2), 10.0),
//!     ((1, 1), 10.0), ((1, 2), 10.0),
//!     ((2, 1), 20.0), ((2, 2), 40.0),
//! ]);
//! let f = volume_factors(&sums, 2).unwrap();
//! assert_eq!(f, vec![1.5, 2.0]); // 20 / mean(10, 10, 20); 40 / mean(10, 10, 40)
//! ```

use crate::population::Selection;
use crate::{Error, Result};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, TimestampMillisecondType, UInt32Type, UInt64Type};
use arrow_array::Array;
use personaflow_io::tables::read::{for_each_batch, parquet_files};
use personaflow_io::tables::Table;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

/// Summed forecasts: `(origin window end, horizon) -> predicted requests`.
pub type ForecastSums = BTreeMap<(i64, u32), f64>;

/// The volume factors of one forecaster at one origin.
#[derive(Clone, Debug, PartialEq)]
pub struct VolumePlan {
    /// The forecaster whose forecasts were summed.
    pub forecaster: String,
    /// The window end the forecast was made at (the last one before the generated period).
    pub origin_window_end: i64,
    /// Origins the baseline averages over.
    pub baseline_origins: usize,
    /// `factors[h - 1]`: the factor `h` windows after the origin.
    pub factors: Vec<f64>,
}

impl VolumePlan {
    /// The factor of the window ending at `window_end` (windows of `window_ms`): its horizon's,
    /// the first horizon's for windows up to the origin's next, the last horizon's past it.
    pub fn factor_at(&self, window_end: i64, window_ms: i64) -> f64 {
        let h = (window_end - self.origin_window_end).div_euclid(window_ms.max(1));
        let i = (h.max(1) as usize).min(self.factors.len()) - 1;
        self.factors[i]
    }
}

/// The factor per horizon at the latest origin of `sums` that is at or before `origin` (see
/// the module's documentation). Fails when there is no forecast at or before `origin`, or the
/// baseline of a horizon is not positive.
pub fn volume_factors(sums: &ForecastSums, origin: i64) -> Result<Vec<f64>> {
    let at = sums
        .range(..=(origin, u32::MAX))
        .next_back()
        .map(|((o, _), _)| *o)
        .ok_or_else(|| Error::Input(format!("no demand forecast made at or before {origin}")))?;
    let horizons: Vec<u32> = sums
        .range((at, 0)..=(at, u32::MAX))
        .map(|((_, h), _)| *h)
        .collect();
    let last = horizons.iter().copied().max().unwrap_or(0);
    (1..=last)
        .map(|h| {
            let (total, n) = sums
                .iter()
                .filter(|((o, hh), _)| *hh == h && *o <= at)
                .fold((0.0, 0usize), |(t, n), (_, v)| (t + v, n + 1));
            let mean = total / n.max(1) as f64;
            let now = sums.get(&(at, h)).copied().unwrap_or(0.0);
            if !(mean > 0.0 && mean.is_finite()) {
                return Err(Error::Input(format!(
                    "horizon {h}: the forecasts predict no demand before the origin {at}, \
                     nothing to scale by"
                )));
            }
            Ok(now / mean)
        })
        .collect()
}

/// Reads the forecasts of the backfill output `dir` for the users of `selection` (their
/// user-windows at each origin) made at origins at or before `until`, and plans the volume of
/// a period starting at `start_ms`: the factors at the last origin before it. `forecaster`
/// picks a forecaster by name; by default the only one, or the one with the smallest mean
/// absolute error in `forecast_error` when there are several.
pub fn read_volume(
    dir: &Path,
    selection: &Selection,
    forecaster: Option<&str>,
    until: i64,
    start_ms: i64,
) -> Result<VolumePlan> {
    let members = selection_windows(dir, selection)?;
    let tdir = dir.join(Table::Forecasts.name());
    let files = if tdir.is_dir() {
        parquet_files(&tdir)?
    } else {
        Vec::new()
    };
    if files.is_empty() {
        return Err(Error::Input(format!(
            "{}: no forecasts (--volume forecast needs a backfill with a forecaster)",
            tdir.display()
        )));
    }
    let cutoff = until.min(start_ms);
    let mut sums: BTreeMap<String, ForecastSums> = BTreeMap::new();
    let columns = [
        "window_end",
        "user_id",
        "forecaster",
        "horizon",
        "predicted_requests",
    ];
    for path in &files {
        for_each_batch(path, &columns, |b| {
            let (Some(w), Some(u), Some(f), Some(h), Some(p)) = (
                b.column(0).as_primitive_opt::<TimestampMillisecondType>(),
                b.column(1).as_string_opt::<i32>(),
                b.column(2).as_string_opt::<i32>(),
                b.column(3).as_primitive_opt::<UInt32Type>(),
                b.column(4).as_primitive_opt::<Float32Type>(),
            ) else {
                return;
            };
            for i in 0..b.num_rows() {
                let origin = w.value(i);
                if origin > cutoff || !p.is_valid(i) || !p.value(i).is_finite() {
                    continue;
                }
                if let Some(m) = &members {
                    if !m.contains(&(u.value(i).to_string(), origin)) {
                        continue;
                    }
                }
                *sums
                    .entry(f.value(i).to_string())
                    .or_default()
                    .entry((origin, h.value(i)))
                    .or_default() += f64::from(p.value(i).max(0.0));
            }
        })?;
    }
    if sums.is_empty() {
        return Err(Error::Input(format!(
            "{}: no forecast of {selection} at or before {cutoff}",
            tdir.display()
        )));
    }
    let name = match forecaster {
        Some(name) => {
            if !sums.contains_key(name) {
                let known: Vec<&str> = sums.keys().map(String::as_str).collect();
                return Err(Error::Input(format!(
                    "no forecasts of forecaster {name:?} (there are: {})",
                    known.join(", ")
                )));
            }
            name.to_string()
        }
        None if sums.len() == 1 => sums.keys().next().cloned().unwrap_or_default(),
        None => best_forecaster(dir, sums.keys().cloned().collect())?,
    };
    let chosen = &sums[&name];
    let factors = volume_factors(chosen, cutoff)?;
    let origin = chosen
        .keys()
        .map(|(o, _)| *o)
        .max()
        .expect("volume_factors found an origin");
    let baseline_origins = chosen.keys().map(|(o, _)| *o).collect::<HashSet<_>>().len();
    Ok(VolumePlan {
        forecaster: name,
        origin_window_end: origin,
        baseline_origins,
        factors,
    })
}

/// The user-windows of `selection` (`None`: every user-window).
fn selection_windows(dir: &Path, selection: &Selection) -> Result<Option<HashSet<(String, i64)>>> {
    let segment = match selection {
        Selection::Observed => return Ok(None),
        Selection::Persona(p) => {
            return Ok(Some(crate::population::persona_user_windows(dir, *p)?));
        }
        Selection::Segment(s) => s,
    };
    let mut out = HashSet::new();
    for path in parquet_files(&dir.join(Table::Profiles.name()))? {
        for_each_batch(&path, &["window_end", "user_id", "segment"], |b| {
            let (Some(w), Some(u), Some(s)) = (
                b.column(0).as_primitive_opt::<TimestampMillisecondType>(),
                b.column(1).as_string_opt::<i32>(),
                b.column(2).as_string_opt::<i32>(),
            ) else {
                return;
            };
            for i in 0..b.num_rows() {
                if s.is_valid(i) && s.value(i) == segment {
                    out.insert((u.value(i).to_string(), w.value(i)));
                }
            }
        })?;
    }
    Ok(Some(out))
}

/// Of `names`, the forecaster with the smallest mean absolute error of requests in the
/// backfill's `forecast_error` (ties and forecasters without errors: by name).
fn best_forecaster(dir: &Path, names: Vec<String>) -> Result<String> {
    let mut errors: BTreeMap<String, (f64, u64)> = BTreeMap::new();
    for path in parquet_files(&dir.join(Table::ForecastErrors.name()))? {
        for_each_batch(
            &path,
            &["forecaster", "predicted_requests", "actual_requests"],
            |b| {
                let (Some(f), Some(p), Some(a)) = (
                    b.column(0).as_string_opt::<i32>(),
                    b.column(1).as_primitive_opt::<Float32Type>(),
                    b.column(2).as_primitive_opt::<UInt64Type>(),
                ) else {
                    return;
                };
                for i in 0..b.num_rows() {
                    let e = errors.entry(f.value(i).to_string()).or_default();
                    e.0 += (f64::from(p.value(i)) - a.value(i) as f64).abs();
                    e.1 += 1;
                }
            },
        )?;
    }
    let mae = |n: &String| {
        errors
            .get(n)
            .filter(|(_, c)| *c > 0)
            .map_or(f64::INFINITY, |(s, c)| s / *c as f64)
    };
    names
        .into_iter()
        .min_by(|a, b| mae(a).total_cmp(&mae(b)).then(a.cmp(b)))
        .ok_or_else(|| Error::Input("no forecaster".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// From scratch: for each horizon, the sum at the last origin over the mean of the sums
    /// at every origin up to it.
    fn recount(rows: &[(i64, u32, f64)], origin: i64) -> Vec<f64> {
        let at = rows
            .iter()
            .filter(|r| r.0 <= origin)
            .map(|r| r.0)
            .max()
            .unwrap();
        let hmax = rows
            .iter()
            .filter(|r| r.0 == at)
            .map(|r| r.1)
            .max()
            .unwrap();
        (1..=hmax)
            .map(|h| {
                let mut per_origin: BTreeMap<i64, f64> = BTreeMap::new();
                for r in rows.iter().filter(|r| r.1 == h && r.0 <= at) {
                    *per_origin.entry(r.0).or_default() += r.2;
                }
                let mean = per_origin.values().sum::<f64>() / per_origin.len() as f64;
                per_origin[&at] / mean
            })
            .collect()
    }

    #[test]
    fn factors_match_a_recount_at_every_origin() {
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        // Users' forecasts over 40 origins, demand rising after origin 25.
        let mut rows = Vec::new();
        for o in 0..40i64 {
            for _user in 0..rng.random_range(3..12) {
                for h in 1..=4u32 {
                    let level = if o > 25 { 3.0 } else { 1.0 };
                    rows.push((o * 60_000, h, level * rng.random_range(0.5..5.0)));
                }
            }
        }
        let mut sums = ForecastSums::new();
        for (o, h, v) in &rows {
            *sums.entry((*o, *h)).or_default() += v;
        }
        for origin in 0..40i64 {
            let got = volume_factors(&sums, origin * 60_000 + 59_999).unwrap();
            let want = recount(&rows, origin * 60_000 + 59_999);
            assert_eq!(got.len(), 4);
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-9, "origin {origin}: {g} vs {w}");
            }
        }
        // The rise shows: late origins ask for more than the average.
        assert!(volume_factors(&sums, 39 * 60_000).unwrap()[0] > 1.5);
        assert!(volume_factors(&sums, i64::MIN).is_err(), "no origin before");
    }

    #[test]
    fn no_demand_in_the_baseline_is_an_error_not_a_division_by_zero() {
        let sums = ForecastSums::from([((0, 1), 0.0), ((60_000, 1), 0.0)]);
        let e = volume_factors(&sums, 60_000).unwrap_err().to_string();
        assert!(e.contains("no demand"), "{e}");
    }

    #[test]
    fn each_window_takes_its_horizons_factor() {
        let plan = VolumePlan {
            forecaster: "lstm".into(),
            origin_window_end: 600_000,
            baseline_origins: 10,
            factors: vec![1.0, 2.0, 3.0],
        };
        let at = |end| plan.factor_at(end, 60_000);
        assert_eq!(at(600_000), 1.0, "the origin itself: the first horizon");
        assert_eq!(at(660_000), 1.0);
        assert_eq!(at(720_000), 2.0);
        assert_eq!(at(780_000), 3.0);
        assert_eq!(at(6_000_000), 3.0, "past the horizon: the last factor");
    }
}
