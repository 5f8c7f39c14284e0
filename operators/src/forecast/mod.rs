//! The `Forecaster` boundary: predicts a user's demand (requests and bytes) for the next `H`
//! windows from their sequence, and the error of such a forecast once the windows it predicts
//! are over.
//!
//! The LSTM forecaster of the models crate implements [`Forecaster`]; this crate ships the
//! [`PersistenceForecaster`] baseline, which needs no model.
//!
//! Its operators: [`demand::ForecastDemand`] and [`residuals::ForecastErrors`].

pub mod demand;
pub mod residuals;

use crate::sequences::Sequence;
use crate::vector::Score;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// Default forecast horizon `H`, in windows.
pub const DEFAULT_FORECAST_HORIZON: usize = 4;

/// Name of the baseline forecaster in outputs.
pub const PERSISTENCE_FORECASTER_NAME: &str = "persistence-v1";

/// A user's predicted demand for the `H` windows after the window `w` of the sequence it was
/// made from: index `h - 1` is window `w + h`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Forecast {
    /// Predicted events (requests) per window.
    pub requests: Vec<Score>,
    /// Predicted bytes in + out per window.
    pub bytes: Vec<Score>,
}

impl Forecast {
    /// A forecast of `requests` and `bytes` per window; both must cover the same horizon.
    ///
    /// ```
    /// use personaflow_operators::forecast::Forecast;
    /// let f = Forecast::try_new(vec![3.0, 2.0], vec![900.0, 600.0]).unwrap();
    /// assert_eq!(f.horizon(), 2);
    /// assert_eq!(f.at(2), Some((2.0, 600.0)));
    /// assert!(Forecast::try_new(vec![3.0], vec![]).is_err());
    /// ```
    pub fn try_new(requests: Vec<f32>, bytes: Vec<f32>) -> Result<Self> {
        if requests.len() != bytes.len() {
            return Err(Error::InvalidForecast(format!(
                "{} request predictions but {} byte predictions",
                requests.len(),
                bytes.len()
            )));
        }
        Ok(Forecast {
            requests: requests.into_iter().map(Score).collect(),
            bytes: bytes.into_iter().map(Score).collect(),
        })
    }

    /// The number of windows predicted, `H` (windows predicted for both requests and bytes).
    pub fn horizon(&self) -> usize {
        self.requests.len().min(self.bytes.len())
    }

    /// The predicted (requests, bytes) `h` windows ahead (`h` is 1-based); `None` outside
    /// `1..=H`.
    pub fn at(&self, h: usize) -> Option<(f32, f32)> {
        let i = h.checked_sub(1)?;
        Some((self.requests.get(i)?.0, self.bytes.get(i)?.0))
    }
}

/// Turns batches of sequences into forecasts. Called once per window with every active user's
/// sequence on a worker, so implementations can batch inference.
pub trait Forecaster {
    /// A short name recorded in outputs (e.g. `persistence-v1`).
    fn name(&self) -> &str;
    /// Windows ahead each forecast covers, `H`.
    fn horizon(&self) -> usize;
    /// Forecasts a batch; returns one forecast of horizon [`Forecaster::horizon`] per
    /// sequence, in order.
    fn forecast_batch(&mut self, batch: &[&Sequence]) -> Result<Vec<Forecast>>;
}

/// Baseline forecaster: the demand of the sequence's current window persists, i.e. every one
/// of the next `H` windows is predicted to see the current window's events and bytes. No
/// training, deterministic, cheap; the bar a learned forecaster has to clear.
///
/// ```
/// use personaflow_operators::forecast::{Forecaster, PersistenceForecaster};
/// use personaflow_operators::{Event, WindowSpec};
/// use personaflow_operators::window::features::{WindowAgg, WindowSummary};
/// use personaflow_operators::sequences::build_sequence;
/// let mut e = Event::new(0, "u", "a");
/// e.bytes_in = Some(500);
/// let s = WindowSummary::new(&WindowAgg::of(&e), 0, &WindowSpec::default());
/// let seq = build_sequence(0, 16, &[(0, &s)]).unwrap();
/// let mut f = PersistenceForecaster::try_new(3).unwrap();
/// let out = f.forecast_batch(&[&seq]).unwrap();
/// assert_eq!(out[0].horizon(), 3);
/// assert_eq!(out[0].at(3), Some((1.0, 500.0)));
/// ```
#[derive(Clone, Debug)]
pub struct PersistenceForecaster {
    horizon: usize,
}

impl Default for PersistenceForecaster {
    fn default() -> Self {
        PersistenceForecaster {
            horizon: DEFAULT_FORECAST_HORIZON,
        }
    }
}

impl PersistenceForecaster {
    /// A persistence forecaster of `horizon` windows; it must be positive.
    pub fn try_new(horizon: usize) -> Result<Self> {
        if horizon == 0 {
            return Err(Error::invalid_config(
                "forecast horizon",
                "must be at least 1 window, got 0",
            ));
        }
        Ok(PersistenceForecaster { horizon })
    }

    /// Forecasts one sequence.
    pub fn forecast_one(&self, seq: &Sequence) -> Forecast {
        Forecast {
            requests: vec![Score(seq.events as f32); self.horizon],
            bytes: vec![Score(seq.bytes as f32); self.horizon],
        }
    }
}

impl Forecaster for PersistenceForecaster {
    fn name(&self) -> &str {
        PERSISTENCE_FORECASTER_NAME
    }

    fn horizon(&self) -> usize {
        self.horizon
    }

    fn forecast_batch(&mut self, batch: &[&Sequence]) -> Result<Vec<Forecast>> {
        Ok(batch.iter().map(|s| self.forecast_one(s)).collect())
    }
}

/// How far off one forecast was for one window: the forecast made at window `made_at` for
/// window `made_at + horizon`, against what the user actually did there.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ForecastResidual {
    /// The window the forecast was made at.
    pub made_at: u64,
    /// Windows ahead, `h` (1-based): the forecast is for window `made_at + horizon`.
    pub horizon: u32,
    /// Predicted events.
    pub predicted_requests: Score,
    /// Actual events (0 if the user was inactive in the window).
    pub actual_requests: u64,
    /// Predicted bytes in + out.
    pub predicted_bytes: Score,
    /// Actual bytes in + out (0 if the user was inactive in the window).
    pub actual_bytes: u64,
}

impl ForecastResidual {
    /// The window the forecast was for, `made_at + horizon`.
    pub fn target(&self) -> u64 {
        self.made_at + u64::from(self.horizon)
    }

    /// Absolute error of the events prediction.
    pub fn requests_abs_error(&self) -> f64 {
        (f64::from(self.predicted_requests.0) - self.actual_requests as f64).abs()
    }

    /// Absolute error of the bytes prediction.
    pub fn bytes_abs_error(&self) -> f64 {
        (f64::from(self.predicted_bytes.0) - self.actual_bytes as f64).abs()
    }
}

/// The error of `forecast`, made at window `made_at`, for window `target`, given the user's
/// `actual` (events, bytes) there ((0, 0) if the user had no events in `target`). `None` unless
/// `target` is one of the windows the forecast covers, `made_at + 1 ..= made_at + H`.
///
/// ```
/// use personaflow_operators::forecast::{forecast_error, Forecast};
/// let f = Forecast::try_new(vec![3.0, 2.0], vec![900.0, 600.0]).unwrap();
/// let e = forecast_error(10, &f, 12, (5, 100)).unwrap();
/// assert_eq!((e.horizon, e.target()), (2, 12));
/// assert_eq!((e.requests_abs_error(), e.bytes_abs_error()), (3.0, 500.0));
/// assert!(forecast_error(10, &f, 10, (5, 100)).is_none());
/// assert!(forecast_error(10, &f, 13, (5, 100)).is_none());
/// ```
pub fn forecast_error(
    made_at: u64,
    forecast: &Forecast,
    target: u64,
    actual: (u64, u64),
) -> Option<ForecastResidual> {
    let h = target.checked_sub(made_at)?;
    let (requests, bytes) = forecast.at(usize::try_from(h).ok()?)?;
    Some(ForecastResidual {
        made_at,
        horizon: u32::try_from(h).ok()?,
        predicted_requests: Score(requests),
        actual_requests: actual.0,
        predicted_bytes: Score(bytes),
        actual_bytes: actual.1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sequences::build_sequence;
    use crate::window::features::{WindowAgg, WindowSummary};
    use crate::{Event, WindowSpec};

    fn forecast(requests: &[f32], bytes: &[f32]) -> Forecast {
        Forecast::try_new(requests.to_vec(), bytes.to_vec()).unwrap()
    }

    #[test]
    fn error_covers_exactly_the_forecast_horizon() {
        let f = forecast(&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0]);
        let targets: Vec<u64> = (0..10)
            .filter(|t| forecast_error(4, &f, *t, (0, 0)).is_some())
            .collect();
        assert_eq!(targets, vec![5, 6, 7]);
        for h in 1..=3u32 {
            let e = forecast_error(4, &f, 4 + u64::from(h), (7, 70)).unwrap();
            assert_eq!(e.made_at, 4);
            assert_eq!(e.horizon, h);
            assert_eq!(e.target(), 4 + u64::from(h));
            assert_eq!(e.predicted_requests, Score(h as f32));
            assert_eq!(e.predicted_bytes, Score(10.0 * h as f32));
            assert_eq!((e.actual_requests, e.actual_bytes), (7, 70));
        }
        assert!(forecast_error(u64::MAX, &f, 0, (0, 0)).is_none());
    }

    #[test]
    fn inactive_target_counts_as_zero_demand() {
        let f = forecast(&[2.5], &[1_000.0]);
        let e = forecast_error(0, &f, 1, (0, 0)).unwrap();
        assert_eq!(e.requests_abs_error(), 2.5);
        assert_eq!(e.bytes_abs_error(), 1_000.0);
    }

    #[test]
    fn horizon_is_where_both_predictions_exist() {
        let f = Forecast {
            requests: vec![Score(1.0); 3],
            bytes: vec![Score(1.0); 2],
        };
        assert_eq!(f.horizon(), 2);
        assert!(forecast_error(0, &f, 3, (0, 0)).is_none());
        assert!(f.at(0).is_none());
        assert!(forecast(&[], &[]).at(1).is_none());
    }

    #[test]
    fn persistence_repeats_the_current_window() {
        let spec = WindowSpec::default();
        let mut agg = WindowAgg::empty();
        for i in 0..3 {
            let mut e = Event::new(120_000 + i, "u", "a");
            e.bytes_in = Some(100);
            e.bytes_out = Some(5);
            agg.add(&e);
        }
        let earlier = WindowSummary::new(&WindowAgg::of(&Event::new(0, "u", "a")), 0, &spec);
        let now = WindowSummary::new(&agg, 2, &spec);
        let seq = build_sequence(2, 4, &[(0, &earlier), (2, &now)]).unwrap();
        let mut p = PersistenceForecaster::default();
        assert_eq!(p.name(), PERSISTENCE_FORECASTER_NAME);
        assert_eq!(p.horizon(), DEFAULT_FORECAST_HORIZON);
        let out = p.forecast_batch(&[&seq, &seq]).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], forecast(&[3.0; 4], &[315.0; 4]));
        assert!(PersistenceForecaster::try_new(0).is_err());
    }
}
