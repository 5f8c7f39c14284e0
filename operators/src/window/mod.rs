//! Tumbling event-time windows: the timely timestamp of the whole dataflow is the window index.
//!
//! The stage `window_aggregate`: the per-window features of a user ([`features`]) and the operator that folds events into them ([`aggregate`]).

pub mod aggregate;
pub mod features;

use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// Default window length: one minute.
pub const DEFAULT_WINDOW_MS: i64 = 60_000;

/// A tumbling window specification: window `i` covers `[i * len, (i + 1) * len)` ms since the epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSpec {
    len_ms: i64,
}

impl Default for WindowSpec {
    fn default() -> Self {
        WindowSpec {
            len_ms: DEFAULT_WINDOW_MS,
        }
    }
}

impl WindowSpec {
    /// A window of `len_ms` milliseconds; it must be positive.
    pub fn try_new(len_ms: i64) -> Result<Self> {
        if len_ms <= 0 {
            return Err(Error::invalid_config(
                "window length",
                format!("must be positive, got {len_ms} ms"),
            ));
        }
        Ok(WindowSpec { len_ms })
    }

    /// Window length in milliseconds.
    pub fn len_ms(&self) -> i64 {
        self.len_ms
    }

    /// Window length in seconds.
    pub fn len_secs(&self) -> f64 {
        self.len_ms as f64 / 1000.0
    }

    /// The window index of an event time. Times before the epoch are not supported and map
    /// to `None` (sources reject them).
    pub fn index(&self, ts_ms: i64) -> Option<u64> {
        if ts_ms < 0 {
            None
        } else {
            Some((ts_ms / self.len_ms) as u64)
        }
    }

    /// Start of window `index`, ms since the epoch.
    pub fn start_ms(&self, index: u64) -> i64 {
        index as i64 * self.len_ms
    }

    /// End (exclusive) of window `index`, ms since the epoch: the `window_end` column of outputs.
    pub fn end_ms(&self, index: u64) -> i64 {
        (index as i64 + 1) * self.len_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_and_bounds() {
        let w = WindowSpec::try_new(60_000).unwrap();
        assert_eq!(w.index(0), Some(0));
        assert_eq!(w.index(59_999), Some(0));
        assert_eq!(w.index(60_000), Some(1));
        assert_eq!(w.index(-1), None);
        assert_eq!(w.start_ms(3), 180_000);
        assert_eq!(w.end_ms(3), 240_000);
        assert!(WindowSpec::try_new(0).is_err());
    }
}
