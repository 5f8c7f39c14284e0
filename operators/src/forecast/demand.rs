//! `forecast_demand`: sequences to demand forecasts for the next `H` windows through a
//! [`Forecaster`], batched by the windows complete at once.

use crate::forecast::{Forecast, Forecaster};
use crate::ops::batch::BatchByWindow;
use crate::ops::{ErrorSlot, UserWindow};
use crate::sequences::Sequence;
use crate::{Error, Result};
use differential_dataflow::VecCollection;

/// Forecasts demand.
pub trait ForecastDemand<'scope> {
    /// For each sequence whose net update at window `w` is an insertion, one fact
    /// `((user, w), Forecast)` at `w`: the user's predicted requests and bytes for windows
    /// `w + 1 ..= w + H`. The sequences of every window this worker finds complete at once (one
    /// window, or a run of windows sent at one time) are forecast together, in batches of at
    /// most `max_batch`, in window order. If the forecaster fails, or
    /// returns a number of forecasts or a horizon other than it should, the error goes to
    /// `errors` and that batch yields no forecasts; the runtime reports it and stops.
    ///
    /// ```
    /// use personaflow_operators::{Event, WindowSpec};
    /// use personaflow_operators::forecast::PersistenceForecaster;
    /// use personaflow_operators::ops::{ErrorSlot, ForecastDemand, Sequences, WindowAggregate};
    /// use timely::dataflow::operators::ToStream;
    /// timely::example(|scope| {
    ///     vec![Event::new(1_000, "u", "a"), Event::new(2_000, "u", "b")]
    ///         .to_stream(scope)
    ///         .container::<Vec<_>>()
    ///         .window_aggregate(WindowSpec::default())
    ///         .sequences(16)
    ///         .forecast_demand(Box::new(PersistenceForecaster::try_new(3).unwrap()), 64, ErrorSlot::default())
    ///         .inspect(|(((u, w), f), t, r)| assert!(&**u == "u" && *w == 0 && *t == 0 && *r == 1 && f.horizon() == 3 && f.at(3) == Some((2.0, 0.0))));
    /// });
    /// ```
    fn forecast_demand(
        self,
        forecaster: Box<dyn Forecaster>,
        max_batch: usize,
        errors: ErrorSlot,
    ) -> VecCollection<'scope, u64, (UserWindow, Forecast), isize>;
}

impl<'scope> ForecastDemand<'scope> for VecCollection<'scope, u64, (UserWindow, Sequence), isize> {
    fn forecast_demand(
        self,
        mut forecaster: Box<dyn Forecaster>,
        max_batch: usize,
        errors: ErrorSlot,
    ) -> VecCollection<'scope, u64, (UserWindow, Forecast), isize> {
        let max_batch = max_batch.max(1);
        self.batch_by_windows("ForecastDemand", move |windows, forecasts| {
            // Every window complete now is forecast together (each key names its window).
            let records: Vec<(UserWindow, Sequence)> =
                windows.into_iter().flat_map(|(_, r)| r).collect();
            for chunk in records.chunks(max_batch) {
                match forecast_chunk(forecaster.as_mut(), chunk) {
                    Ok(out) => forecasts.extend(out.into_iter().map(|f| (f.0 .1, f))),
                    Err(e) => {
                        errors.borrow_mut().get_or_insert(e);
                    }
                }
            }
        })
    }
}

/// Forecasts one batch and checks that the forecaster returned one forecast of its horizon per
/// sequence.
fn forecast_chunk(
    forecaster: &mut dyn Forecaster,
    chunk: &[(UserWindow, Sequence)],
) -> Result<Vec<(UserWindow, Forecast)>> {
    // Forecasters read consecutive windows, whatever history the sequences hold.
    let views: Vec<std::borrow::Cow<'_, Sequence>> =
        chunk.iter().map(|(_, s)| s.windows_view()).collect();
    let seqs: Vec<&Sequence> = views.iter().map(|s| s.as_ref()).collect();
    let forecasts = forecaster.forecast_batch(&seqs)?;
    let invalid = |reason: String| Error::Forecaster {
        forecaster: forecaster.name().to_string(),
        reason,
    };
    if forecasts.len() != chunk.len() {
        return Err(invalid(format!(
            "returned {} forecasts for {} sequences",
            forecasts.len(),
            chunk.len()
        )));
    }
    let horizon = forecaster.horizon();
    if let Some(f) = forecasts
        .iter()
        .find(|f| f.requests.len() != horizon || f.bytes.len() != horizon)
    {
        return Err(invalid(format!(
            "returned a forecast of {} request and {} byte predictions, horizon is {horizon}",
            f.requests.len(),
            f.bytes.len()
        )));
    }
    Ok(chunk
        .iter()
        .map(|(key, _)| key.clone())
        .zip(forecasts)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forecast::PersistenceForecaster;
    use crate::sequences::build_sequence;
    use crate::vector::Score;
    use crate::window::features::{WindowAgg, WindowSummary};
    use crate::{Event, WindowSpec};

    /// Returns what it was built with, whatever the batch.
    #[derive(Debug)]
    struct Canned(usize, Vec<Forecast>);

    impl Forecaster for Canned {
        fn name(&self) -> &str {
            "canned"
        }
        fn horizon(&self) -> usize {
            self.0
        }
        fn forecast_batch(&mut self, _batch: &[&Sequence]) -> Result<Vec<Forecast>> {
            Ok(self.1.clone())
        }
    }

    fn chunk() -> Vec<(UserWindow, Sequence)> {
        let s = WindowSummary::new(
            &WindowAgg::of(&Event::new(0, "u", "a")),
            0,
            &WindowSpec::default(),
        );
        let seq = build_sequence(0, 4, &[(0, &s)]).unwrap();
        vec![(("u".into(), 0), seq.clone()), (("v".into(), 0), seq)]
    }

    #[test]
    fn forecasts_are_keyed_in_batch_order() {
        let mut p = PersistenceForecaster::try_new(2).unwrap();
        let out = forecast_chunk(&mut p, &chunk()).unwrap();
        let users: Vec<&str> = out.iter().map(|((u, _), _)| &**u).collect();
        assert_eq!(users, vec!["u", "v"]);
        assert_eq!(out[0].1.requests, vec![Score(1.0); 2]);
    }

    #[test]
    fn forecasts_that_do_not_fit_the_forecaster_are_errors() {
        let one = Forecast {
            requests: vec![Score(1.0); 2],
            bytes: vec![Score(1.0); 2],
        };
        let too_few = forecast_chunk(&mut Canned(2, vec![one.clone()]), &chunk());
        assert!(matches!(too_few, Err(Error::Forecaster { .. })));
        let short = forecast_chunk(&mut Canned(3, vec![one.clone(), one.clone()]), &chunk());
        assert!(matches!(short, Err(Error::Forecaster { .. })));
        assert!(forecast_chunk(&mut Canned(2, vec![one.clone(), one]), &chunk()).is_ok());
    }
}
