//! Time spent in inference, shared by every session of a model across workers: the job reports
//! it (`run.json`), so the share of a backfill spent in the models is measured, not guessed.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A handle to shared inference counters (cheap to clone).
#[derive(Clone, Debug, Default)]
pub struct InferenceStats(Arc<Counters>);

#[derive(Debug, Default)]
struct Counters {
    nanos: AtomicU64,
    batches: AtomicU64,
    rows: AtomicU64,
    sizes: Mutex<BTreeMap<usize, u64>>,
}

/// A snapshot of [`InferenceStats`].
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct InferenceSummary {
    /// Session runs.
    pub batches: u64,
    /// Sequences (rows) inferred.
    pub sequences: u64,
    /// Seconds inside onnxruntime, summed over workers.
    pub secs: f64,
    /// Session runs by their number of rows: how full the batches were (and what a bench
    /// replays to time bare inference at the same batch sizes).
    pub batch_sizes: BTreeMap<usize, u64>,
}

impl InferenceStats {
    /// Records one run of `rows` rows that took `elapsed`.
    ///
    /// ```
    /// use personaflow_models::stats::InferenceStats;
    /// let s = InferenceStats::default();
    /// s.clone().record(512, std::time::Duration::from_millis(3));
    /// s.clone().record(3, std::time::Duration::from_millis(1));
    /// assert_eq!(s.summary().sequences, 515);
    /// assert_eq!(s.summary().batch_sizes, [(3, 1), (512, 1)].into());
    /// ```
    pub fn record(&self, rows: usize, elapsed: Duration) {
        let c = &self.0;
        c.nanos
            .fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
        c.batches.fetch_add(1, Ordering::Relaxed);
        c.rows.fetch_add(rows as u64, Ordering::Relaxed);
        *c.sizes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(rows)
            .or_default() += 1;
    }

    /// The counters so far.
    pub fn summary(&self) -> InferenceSummary {
        let c = &self.0;
        InferenceSummary {
            batches: c.batches.load(Ordering::Relaxed),
            sequences: c.rows.load(Ordering::Relaxed),
            secs: c.nanos.load(Ordering::Relaxed) as f64 / 1e9,
            batch_sizes: c.sizes.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        }
    }
}
