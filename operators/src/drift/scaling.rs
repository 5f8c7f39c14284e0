//! The scaling recommendation a drift event carries (DESIGN.md step 8): a scope's demand for
//! the next windows, sized from the demand forecasts of its users and calibrated on the scope's
//! own recent forecast errors, against a capacity per instance.
//!
//! Summed per-user forecasts are not yet a forecast of a scope's demand: they cover only the
//! users active now (a scope's demand in the next windows also comes from users whose sessions
//! start later), and a forecaster can be biased for some kinds of users. So each scope keeps the
//! last `calibration_windows` windows of its demand and of its users' summed forecasts, and for
//! each horizon `h` fits, on the windows `w` whose target `w + h` has passed, the demand
//! `demand(w + h)` as `a + b · forecast_w(h) + c · demand(w)` (least squares, a slight ridge):
//! a combination of the users' forecasts with the scope's current demand, weighted by how well
//! each predicted this scope lately. The expected demand is the fit at the current window; the
//! demand a recommendation is sized for adds the `coverage` quantile of the fit's residuals (on
//! exchangeable errors it covers the demand with about that probability). Too few windows leave
//! the summed forecasts as they are.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Default requests per window one service instance handles.
pub const DEFAULT_CAPACITY_PER_INSTANCE: f64 = 500.0;

/// Default recent windows whose forecast errors calibrate a scope's demand forecast.
pub const DEFAULT_CALIBRATION_WINDOWS: usize = 60;

/// Default probability with which the demand a recommendation is sized for covers the realized
/// demand at each horizon.
pub const DEFAULT_COVERAGE: f64 = 0.9;

/// Residuals a horizon needs before its forecast is calibrated.
pub const MIN_CALIBRATION_RESIDUALS: usize = 10;

/// Default windows a recommendation looks ahead (1-minute windows: a quarter of an hour).
pub const DEFAULT_SCALING_HORIZON: usize = 15;

/// Most windows a recommendation may look ahead.
pub const MAX_HORIZON: usize = 1440;

/// Windows since a drift's onset its demand trend needs.
pub const MIN_TREND_WINDOWS: usize = 3;

/// `[scaling]`: how drift events size their recommendations.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScalingConfig {
    /// Requests per window one instance handles.
    pub capacity_per_instance: f64,
    /// Recent windows whose forecast errors calibrate a scope's forecast (0: uncalibrated).
    pub calibration_windows: usize,
    /// Coverage of the demand the recommendation is sized for, in (0, 1).
    pub coverage: f64,
    /// Windows a recommendation looks ahead (0: the forecaster's horizon). Beyond the
    /// forecaster's horizon, its last forecast stands in for the users' forecast.
    pub horizon: usize,
    /// Carry a drift's demand trend forward: the least-squares rise per window of the scope's
    /// demand since the drift's onset, when it is a rise of more than [`TREND_T`] standard
    /// errors, added `h` times at horizon `h`.
    pub onset_trend: bool,
}

impl Default for ScalingConfig {
    fn default() -> Self {
        ScalingConfig {
            capacity_per_instance: DEFAULT_CAPACITY_PER_INSTANCE,
            calibration_windows: DEFAULT_CALIBRATION_WINDOWS,
            coverage: DEFAULT_COVERAGE,
            horizon: DEFAULT_SCALING_HORIZON,
            onset_trend: false,
        }
    }
}

impl ScalingConfig {
    /// Checks the ranges.
    pub fn validate(&self) -> crate::Result<()> {
        let c = self.capacity_per_instance;
        if c.is_nan() || c <= 0.0 || c.is_infinite() {
            return Err(crate::Error::invalid_config(
                "scaling.capacity_per_instance",
                format!("must be a finite number > 0, got {c}"),
            ));
        }
        if !(self.coverage > 0.0 && self.coverage < 1.0) {
            return Err(crate::Error::invalid_config(
                "scaling.coverage",
                format!("must be in (0, 1), got {}", self.coverage),
            ));
        }
        if self.horizon > MAX_HORIZON {
            return Err(crate::Error::invalid_config(
                "scaling.horizon",
                format!(
                    "must be at most {MAX_HORIZON} windows, got {}",
                    self.horizon
                ),
            ));
        }
        Ok(())
    }

    /// The users' summed forecasts (horizon 1 first) over the configured horizon: cut, or
    /// extended with the last forecast. Without forecasts there is nothing to extend.
    ///
    /// ```
    /// use personaflow_operators::drift::scaling::ScalingConfig;
    /// let c = ScalingConfig { horizon: 5, ..ScalingConfig::default() };
    /// assert_eq!(c.over_horizon(&[1.0, 2.0, 3.0]), vec![1.0, 2.0, 3.0, 3.0, 3.0]);
    /// assert_eq!(c.over_horizon(&[]), Vec::<f64>::new());
    /// let own = ScalingConfig { horizon: 0, ..ScalingConfig::default() };
    /// assert_eq!(own.over_horizon(&[1.0, 2.0]), vec![1.0, 2.0]);
    /// ```
    pub fn over_horizon(&self, summed: &[f64]) -> Vec<f64> {
        let Some(&last) = summed.last() else {
            return Vec::new();
        };
        if self.horizon == 0 {
            return summed.to_vec();
        }
        (0..self.horizon)
            .map(|h| summed.get(h).copied().unwrap_or(last))
            .collect()
    }
}

/// A scope's recent demand and summed forecasts, window by window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DemandHistory {
    /// (window, demand, summed forecast per horizon), windows increasing; windows in which the
    /// scope had no users are absent (their demand was 0).
    windows: VecDeque<(u64, f64, Vec<f64>)>,
}

/// Standard errors a demand trend's rise must exceed to be carried forward.
pub const TREND_T: f64 = 2.0;

/// A least-squares demand trend.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Trend {
    /// Change in requests per window.
    pub slope: f64,
    /// Its standard error.
    pub std_error: f64,
}

impl Trend {
    /// A rise of more than [`TREND_T`] standard errors.
    pub fn significant(&self) -> bool {
        self.slope > TREND_T * self.std_error
    }
}

/// A scope's calibrated demand forecast for the next windows.
#[derive(Clone, Debug, PartialEq)]
pub struct DemandForecast {
    /// Expected demand per horizon (1 first): the calibrated fit (the summed forecast where
    /// uncalibrated).
    pub expected: Vec<f64>,
    /// Demand per horizon covered with the configured probability.
    pub upper: Vec<f64>,
    /// Residuals behind the calibration of horizon 1 (0: uncalibrated).
    pub residuals: usize,
    /// Demand rise per window carried forward (0: none).
    pub trend: f64,
}

impl DemandForecast {
    /// The summed forecasts as they are.
    pub fn uncalibrated(summed: &[f64]) -> DemandForecast {
        DemandForecast {
            expected: summed.to_vec(),
            upper: summed.to_vec(),
            residuals: 0,
            trend: 0.0,
        }
    }

    /// Carries a rise of `slope` requests per window forward: `h · slope` more at horizon `h`.
    /// A fall is not carried (scale-ins follow the calibrated forecast alone).
    ///
    /// ```
    /// use personaflow_operators::drift::scaling::DemandForecast;
    /// let mut f = DemandForecast::uncalibrated(&[10.0, 10.0, 10.0]);
    /// f.carry_trend(2.0);
    /// assert_eq!((f.expected, f.upper, f.trend), (vec![12.0, 14.0, 16.0], vec![12.0, 14.0, 16.0], 2.0));
    /// let mut g = DemandForecast::uncalibrated(&[10.0]);
    /// g.carry_trend(-3.0);
    /// assert_eq!((g.expected, g.trend), (vec![10.0], 0.0));
    /// ```
    pub fn carry_trend(&mut self, slope: f64) {
        let rise = if slope.is_finite() {
            slope.max(0.0)
        } else {
            0.0
        };
        for (h, (e, u)) in self.expected.iter_mut().zip(&mut self.upper).enumerate() {
            *e += rise * (h + 1) as f64;
            *u += rise * (h + 1) as f64;
        }
        self.trend = rise;
    }
}

/// The `q` quantile of `values` (sorted in place; linear interpolation between order
/// statistics).
fn quantile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (values.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    values[lo] + (values[hi] - values[lo]) * (pos - lo as f64)
}

impl DemandHistory {
    /// Records `window`'s demand and summed forecasts (windows must increase), keeping what the
    /// residuals of the last `keep` windows need.
    pub fn observe(&mut self, window: u64, demand: f64, forecast: &[f64], keep: usize) {
        if self.windows.back().is_some_and(|(w, _, _)| *w >= window) {
            return;
        }
        self.windows.push_back((window, demand, forecast.to_vec()));
        let horizon = self
            .windows
            .iter()
            .map(|(_, _, f)| f.len())
            .max()
            .unwrap_or(0);
        let span = (keep + horizon) as u64;
        while self
            .windows
            .front()
            .is_some_and(|(w, _, _)| w + span <= window)
        {
            self.windows.pop_front();
        }
    }

    /// For each window `w` whose target `w + h` (`h` 1-based) has passed: (summed forecast at
    /// `h`, demand of `w`, demand of `w + h`).
    pub fn pairs(&self, h: usize) -> Vec<(f64, f64, f64)> {
        let Some(&(last, _, _)) = self.windows.back() else {
            return Vec::new();
        };
        let demand = |w: u64| {
            self.windows
                .binary_search_by_key(&w, |(x, _, _)| *x)
                .map_or(0.0, |i| self.windows[i].1)
        };
        self.windows
            .iter()
            .filter(|(w, _, f)| w + h as u64 <= last && f.len() >= h)
            .map(|(w, d, f)| (f[h - 1], *d, demand(w + h as u64)))
            .collect()
    }

    /// The least-squares change per window of the demand over the windows from `onset` to the
    /// last one observed (windows without users count as no demand), with its standard
    /// error; `None` with fewer than [`MIN_TREND_WINDOWS`] windows.
    ///
    /// ```
    /// use personaflow_operators::drift::scaling::DemandHistory;
    /// let mut history = DemandHistory::default();
    /// for w in 0..30u64 {
    ///     // Flat at 10, then rising by 2 a window from window 20.
    ///     history.observe(w, 10.0 + 2.0 * w.saturating_sub(20) as f64, &[0.0], 60);
    /// }
    /// let trend = history.trend_since(20).unwrap();
    /// assert!((trend.slope - 2.0).abs() < 1e-9 && trend.std_error < 1e-6);
    /// assert!(trend.significant());
    /// assert_eq!(history.trend_since(28), None);
    /// ```
    pub fn trend_since(&self, onset: u64) -> Option<Trend> {
        let &(last, _, _) = self.windows.back()?;
        let first = onset.max(self.windows.front()?.0);
        if last < first || ((last - first + 1) as usize) < MIN_TREND_WINDOWS {
            return None;
        }
        let n = (last - first + 1) as f64;
        let mean_w = (first + last) as f64 / 2.0;
        let span = || self.windows.iter().filter(|(w, _, _)| *w >= first);
        // The window offsets sum to 0 over the span, so windows without users (no demand)
        // drop out of the sums below.
        let sxy: f64 = span().map(|(w, d, _)| (*w as f64 - mean_w) * d).sum();
        let sum: f64 = span().map(|(_, d, _)| d).sum();
        let squares: f64 = span().map(|(_, d, _)| d * d).sum();
        let sxx = n * (n * n - 1.0) / 12.0;
        let slope = sxy / sxx;
        let syy = squares - sum * sum / n;
        let residual = (syy - slope * slope * sxx).max(0.0);
        Some(Trend {
            slope,
            std_error: (residual / (n - 2.0) / sxx).sqrt(),
        })
    }

    /// Calibrates the summed forecasts `forecast` (horizon 1 first) made now, when the scope's
    /// demand is `current`.
    ///
    /// ```
    /// use personaflow_operators::drift::scaling::DemandHistory;
    /// let demand = |w: u64| 10.0 + (w % 5) as f64;
    /// let mut history = DemandHistory::default();
    /// // The scope's users forecast 60% of the scope's next demand (the rest comes from users
    /// // whose sessions have not started yet).
    /// for w in 0..40u64 {
    ///     history.observe(w, demand(w), &[0.6 * demand(w + 1)], 60);
    /// }
    /// let f = history.forecast(&[6.0], 14.0, 0.9);
    /// assert_eq!(f.residuals, 39);
    /// assert!((f.expected[0] - 10.0).abs() < 0.1, "{:?}", f.expected);
    /// assert!(f.upper[0] >= f.expected[0]);
    /// ```
    pub fn forecast(&self, forecast: &[f64], current: f64, coverage: f64) -> DemandForecast {
        let mut expected = forecast.to_vec();
        let mut upper = forecast.to_vec();
        let mut calibrated = 0;
        for h in 1..=forecast.len() {
            let pairs = self.pairs(h);
            if pairs.len() < MIN_CALIBRATION_RESIDUALS {
                continue;
            }
            if h == 1 {
                calibrated = pairs.len();
            }
            let fit = Combination::fit(&pairs);
            let mut residuals: Vec<f64> = pairs
                .iter()
                .map(|(f, d, y)| y - fit.predict(*f, *d))
                .collect();
            let point = fit.predict(forecast[h - 1], current);
            expected[h - 1] = point.max(0.0);
            upper[h - 1] = (point + quantile(&mut residuals, coverage)).max(0.0);
        }
        DemandForecast {
            expected,
            upper,
            residuals: calibrated,
            trend: 0.0,
        }
    }
}

/// Relative ridge on the slopes: keeps the fit defined when a regressor does not vary.
const RIDGE: f64 = 1e-3;

/// `a + b · forecast + c · demand`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Combination {
    a: f64,
    b: f64,
    c: f64,
}

impl Combination {
    /// Least squares on (forecast, demand now, demand later), the slopes slightly ridged.
    fn fit(pairs: &[(f64, f64, f64)]) -> Combination {
        let n = pairs.len().max(1) as f64;
        let mean = |i: usize| pairs.iter().map(|p| [p.0, p.1, p.2][i]).sum::<f64>() / n;
        let (mf, md, my) = (mean(0), mean(1), mean(2));
        let (mut sff, mut sdd, mut sfd, mut sfy, mut sdy) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for (f, d, y) in pairs {
            let (f, d, y) = (f - mf, d - md, y - my);
            sff += f * f;
            sdd += d * d;
            sfd += f * d;
            sfy += f * y;
            sdy += d * y;
        }
        let (sff, sdd) = (
            sff * (1.0 + RIDGE) + f64::MIN_POSITIVE,
            sdd * (1.0 + RIDGE) + f64::MIN_POSITIVE,
        );
        let det = sff * sdd - sfd * sfd;
        let (b, c) = if det > 0.0 && det.is_finite() {
            ((sfy * sdd - sdy * sfd) / det, (sdy * sff - sfy * sfd) / det)
        } else {
            (0.0, 0.0)
        };
        Combination {
            a: my - b * mf - c * md,
            b,
            c,
        }
    }

    fn predict(&self, forecast: f64, demand: f64) -> f64 {
        self.a + self.b * forecast + self.c * demand
    }
}

/// A scaling recommendation sized from demand forecasts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scaling {
    /// Users behind it.
    pub users: usize,
    /// Their requests in the current window.
    pub current_requests: f64,
    /// Expected requests for each of the next windows (horizon 1 first).
    pub predicted_requests: Vec<f64>,
    /// Requests for each of the next windows covered with the configured probability.
    pub upper_requests: Vec<f64>,
    /// The horizon (1-based) of the peak of `upper_requests`.
    pub peak_horizon: usize,
    /// Requests per window one instance serves.
    pub capacity_per_instance: f64,
    /// Instances the current demand needs.
    pub current_instances: u64,
    /// Instances the peak of `upper_requests` needs.
    pub recommended_instances: u64,
    /// `recommended - current`.
    pub change: i64,
}

/// The action a change in instances means: `scale_out`, `scale_in` or `hold`.
pub fn action(change: i64) -> &'static str {
    match change {
        c if c > 0 => "scale_out",
        c if c < 0 => "scale_in",
        _ => "hold",
    }
}

impl Scaling {
    /// `scale_out`, `scale_in` or `hold`.
    pub fn action(&self) -> &'static str {
        action(self.change)
    }
}

/// Instances `requests` per window need at `capacity` each (at least one).
pub fn instances(requests: f64, capacity: f64) -> u64 {
    (requests.max(0.0) / capacity.max(f64::MIN_POSITIVE))
        .ceil()
        .max(1.0) as u64
}

/// Sizes a recommendation: the current demand, and the expected and covered demand for each
/// horizon, against `capacity` requests per window per instance. Without a forecast the
/// recommendation is to hold.
///
/// ```
/// use personaflow_operators::drift::scaling::recommend;
/// let r = recommend(3, 100.0, &[150.0, 220.0, 180.0], &[170.0, 260.0, 200.0], 100.0);
/// assert_eq!((r.current_instances, r.recommended_instances, r.change, r.peak_horizon), (1, 3, 2, 2));
/// assert_eq!(r.action(), "scale_out");
/// ```
pub fn recommend(
    users: usize,
    current: f64,
    expected: &[f64],
    upper: &[f64],
    capacity: f64,
) -> Scaling {
    let (peak_index, peak) =
        upper
            .iter()
            .copied()
            .enumerate()
            .fold(
                (0, f64::NEG_INFINITY),
                |b, (i, x)| if x > b.1 { (i, x) } else { b },
            );
    let peak = if upper.is_empty() { current } else { peak };
    let current_instances = instances(current, capacity);
    let recommended_instances = instances(peak, capacity);
    Scaling {
        users,
        current_requests: current,
        predicted_requests: expected.to_vec(),
        upper_requests: upper.to_vec(),
        peak_horizon: peak_index + 1,
        capacity_per_instance: capacity,
        current_instances,
        recommended_instances,
        change: recommended_instances as i64 - current_instances as i64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_forecast_means_hold() {
        let r = recommend(2, 250.0, &[], &[], 100.0);
        assert_eq!((r.current_instances, r.change, r.action()), (3, 0, "hold"));
        let down = recommend(2, 250.0, &[40.0, 20.0], &[40.0, 20.0], 100.0);
        assert_eq!((down.recommended_instances, down.action()), (1, "scale_in"));
    }

    #[test]
    fn pairs_join_each_forecast_with_the_demand_of_its_target_window() {
        let mut h = DemandHistory::default();
        h.observe(1, 5.0, &[1.0, 2.0], 60);
        // Window 2 had no users: demand 0.
        h.observe(3, 7.0, &[3.0, 4.0], 60);
        h.observe(4, 9.0, &[0.0, 0.0], 60);
        // Horizon 1: window 1 -> 2, window 3 -> 4.
        assert_eq!(h.pairs(1), vec![(1.0, 5.0, 0.0), (3.0, 7.0, 9.0)]);
        // Horizon 2: window 1 -> 3.
        assert_eq!(h.pairs(2), vec![(2.0, 5.0, 7.0)]);
        // A window seen again (or out of order) is ignored.
        h.observe(4, 100.0, &[0.0, 0.0], 60);
        assert_eq!(h.pairs(1), vec![(1.0, 5.0, 0.0), (3.0, 7.0, 9.0)]);
    }

    #[test]
    fn the_history_keeps_the_calibration_windows_and_the_horizon() {
        let mut h = DemandHistory::default();
        for w in 0..100 {
            h.observe(w, w as f64, &[0.0, 0.0], 10);
        }
        // Forecasts of windows 88..=97 have horizon-2 targets that passed; 10 + 2 windows kept.
        assert_eq!(h.windows.len(), 12);
        assert_eq!(h.pairs(2).len(), 10);
    }

    #[test]
    fn too_few_windows_leave_the_forecast_as_it_is() {
        let mut h = DemandHistory::default();
        for w in 0..5 {
            h.observe(w, 10.0, &[2.0], 60);
        }
        let f = h.forecast(&[2.0], 10.0, 0.9);
        assert_eq!(f, DemandForecast::uncalibrated(&[2.0]));
    }

    /// A seeded uniform draw in [-1, 1).
    fn noise(seed: &mut u64) -> f64 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (*seed >> 33) as f64 / (1u64 << 30) as f64 - 1.0
    }

    #[test]
    fn the_upper_bound_covers_the_configured_share_of_past_demand() {
        // Demand 20 + noise in [-5, 5), forecasts always 0: the 0.9 upper bound is near 24.
        let mut h = DemandHistory::default();
        let mut seed = 7u64;
        let mut demand = Vec::new();
        for w in 0..200 {
            demand.push(20.0 + 5.0 * noise(&mut seed));
            h.observe(w, demand[w as usize], &[0.0], 150);
        }
        let f = h.forecast(&[0.0], 20.0, 0.9);
        assert!((f.upper[0] - 24.0).abs() < 1.0, "{:?}", f.upper);
        assert!((f.expected[0] - 20.0).abs() < 1.0, "{:?}", f.expected);
        let recent = &demand[50..];
        let covered = recent.iter().filter(|d| **d <= f.upper[0]).count() as f64;
        let share = covered / recent.len() as f64;
        assert!((0.85..=0.95).contains(&share), "{share}");
    }

    #[test]
    fn a_demand_that_persists_is_predicted_from_the_current_demand() {
        // A random walk, and forecasts that see none of it: the fit leans on the current
        // demand, and follows it to a level it has not seen.
        let mut h = DemandHistory::default();
        let (mut seed, mut d) = (3u64, 50.0);
        for w in 0..80 {
            h.observe(w, d, &[1.0], 60);
            d += 3.0 * noise(&mut seed);
        }
        let f = h.forecast(&[1.0], 90.0, 0.9);
        assert!((f.expected[0] - 90.0).abs() < 5.0, "{:?}", f.expected);
    }

    #[test]
    fn forecasts_that_predict_the_demand_carry_the_fit() {
        // The demand is what the users forecast, plus users not active now (4 requests), and
        // has nothing to do with the demand before it.
        let mut h = DemandHistory::default();
        let mut seed = 11u64;
        let forecasts: Vec<f64> = (0..81).map(|_| 20.0 + 10.0 * noise(&mut seed)).collect();
        for w in 0..80 {
            let demand = if w == 0 { 24.0 } else { forecasts[w - 1] + 4.0 };
            h.observe(w as u64, demand, &[forecasts[w]], 60);
        }
        let f = h.forecast(&[12.0], 30.0, 0.9);
        assert!((f.expected[0] - 16.0).abs() < 0.5, "{:?}", f.expected);
        assert!(f.upper[0] - f.expected[0] < 0.5, "{:?}", f.upper);
    }

    #[test]
    fn the_trend_counts_windows_without_users_as_no_demand() {
        let mut h = DemandHistory::default();
        // Windows 10..=14 with demand 0, 0 (absent), 4, 0 (absent), 8: the slope of
        // (0, 0, 4, 0, 8) over offsets (-2..=2) is (0 + 0 + 0 + 0 + 16) / 10.
        for (w, d) in [(10, 0.0), (12, 4.0), (14, 8.0)] {
            h.observe(w, d, &[0.0], 60);
        }
        let t = h.trend_since(10).unwrap();
        assert!((t.slope - 1.6).abs() < 1e-12);
        // Residuals of (0, 0, 4, 0, 8) around 2.4 + 1.6 x: (0.8, -0.8, 1.6, -4.0, 2.4); their
        // squares sum to 25.6, over 3 degrees of freedom and sxx 10.
        assert!((t.std_error - (25.6f64 / 3.0 / 10.0).sqrt()).abs() < 1e-12);
        assert!(!t.significant());
        // An onset before the history starts uses the history there is.
        assert_eq!(h.trend_since(0), Some(t));
    }

    #[test]
    fn config_ranges_are_checked() {
        assert!(ScalingConfig::default().validate().is_ok());
        let far = ScalingConfig {
            horizon: MAX_HORIZON + 1,
            ..ScalingConfig::default()
        };
        assert!(far.validate().is_err());
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let c = ScalingConfig {
                capacity_per_instance: bad,
                ..ScalingConfig::default()
            };
            assert!(c.validate().is_err(), "{bad}");
        }
        for bad in [0.0, 1.0, f64::NAN] {
            let c = ScalingConfig {
                coverage: bad,
                ..ScalingConfig::default()
            };
            assert!(c.validate().is_err(), "{bad}");
        }
    }
}
