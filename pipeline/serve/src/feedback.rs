//! Feedback from other services (`POST /v1/users/{id}/feedback`): validated, buffered, and
//! appended to the run's `service_feedback` table as small atomic Parquet files
//! (`service_feedback/date=YYYY-MM-DD/feedback-<ms>-<seq>.parquet`), where downloads, DuckDB
//! and the shaping evaluation's readers find it.
//!
//! ```
//! use personaflow_serve::feedback::{FeedbackLog, FeedbackReport};
//! let dir = tempfile::tempdir().unwrap();
//! let log = FeedbackLog::new(dir.path());
//! let report: FeedbackReport =
//!     serde_json::from_str(r#"{"source": "cdn-edge", "qoe": 0.92, "latency_ms": 41}"#).unwrap();
//! log.append("u1", report.validate(1_767_571_200_000).unwrap());
//! assert_eq!(log.flush().unwrap(), 1);
//! assert!(dir.path().join("service_feedback/date=2026-01-05").is_dir());
//! ```

use personaflow_io::atomic_file::write_parquet_atomically;
use personaflow_io::tables::{ServiceFeedbackRow, TableRow};
use personaflow_io::writer::date_partition;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// How often the server writes what it has buffered, ms.
pub const FLUSH_INTERVAL_MS: u64 = 1_000;
/// Buffered reports that make the server write at once.
pub const FLUSH_ROWS: usize = 10_000;
/// Longest `source` accepted, bytes.
pub const MAX_SOURCE_BYTES: usize = 128;

/// A report as another service posts it.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedbackReport {
    /// The reporting service.
    pub source: String,
    /// When it observed this: epoch ms or RFC 3339 (default: now).
    #[serde(default)]
    pub observed_at: Option<serde_json::Value>,
    /// Bytes it saw the user move.
    #[serde(default)]
    pub observed_bytes: Option<u64>,
    /// Requests it saw.
    #[serde(default)]
    pub observed_requests: Option<u64>,
    /// Quality of experience, in [0, 1].
    #[serde(default)]
    pub qoe: Option<f64>,
    /// Latency it measured, ms.
    #[serde(default)]
    pub latency_ms: Option<f64>,
}

/// A report refused: the field and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadReport {
    /// The field.
    pub field: &'static str,
    /// Why.
    pub message: String,
}

fn bad(field: &'static str, message: impl Into<String>) -> BadReport {
    BadReport {
        field,
        message: message.into(),
    }
}

/// A validated report, received at `received_at` (ms).
#[derive(Clone, Debug, PartialEq)]
pub struct ValidReport {
    observed_at: i64,
    received_at: i64,
    source: String,
    observed_bytes: Option<u64>,
    observed_requests: Option<u64>,
    qoe: Option<f32>,
    latency_ms: Option<f32>,
}

impl FeedbackReport {
    /// Checks the report, received at `now` (ms).
    pub fn validate(self, now: i64) -> Result<ValidReport, BadReport> {
        if self.source.is_empty()
            || self.source.len() > MAX_SOURCE_BYTES
            || self.source.chars().any(char::is_control)
        {
            return Err(bad(
                "source",
                format!("1 to {MAX_SOURCE_BYTES} bytes, no control characters"),
            ));
        }
        let observed_at = match &self.observed_at {
            None => now,
            Some(serde_json::Value::Number(n)) => n
                .as_i64()
                .ok_or_else(|| bad("observed_at", "epoch milliseconds, an integer"))?,
            Some(serde_json::Value::String(s)) => chrono::DateTime::parse_from_rfc3339(s)
                .map(|t| t.timestamp_millis())
                .map_err(|e| bad("observed_at", format!("{s:?} is not RFC 3339 ({e})")))?,
            Some(_) => return Err(bad("observed_at", "epoch milliseconds or RFC 3339")),
        };
        // Parquet timestamps and date partitions: years 1970 to 9999.
        if !(0..=253_402_300_799_999).contains(&observed_at) {
            return Err(bad("observed_at", "between 1970 and 9999"));
        }
        if let Some(q) = self.qoe {
            if !(0.0..=1.0).contains(&q) {
                return Err(bad("qoe", "a share in [0, 1]"));
            }
        }
        if let Some(l) = self.latency_ms {
            if !l.is_finite() || !(0.0..=f64::from(f32::MAX)).contains(&l) {
                return Err(bad("latency_ms", "a finite non-negative number"));
            }
        }
        if self.observed_bytes.is_none()
            && self.observed_requests.is_none()
            && self.qoe.is_none()
            && self.latency_ms.is_none()
        {
            return Err(bad(
                "observed_bytes",
                "report at least one of observed_bytes, observed_requests, qoe, latency_ms",
            ));
        }
        Ok(ValidReport {
            observed_at,
            received_at: now,
            source: self.source,
            observed_bytes: self.observed_bytes,
            observed_requests: self.observed_requests,
            qoe: self.qoe.map(|q| q as f32),
            latency_ms: self.latency_ms.map(|l| l as f32),
        })
    }
}

/// Buffered reports and where they go.
#[derive(Debug)]
pub struct FeedbackLog {
    root: PathBuf,
    pending: Mutex<Vec<ServiceFeedbackRow>>,
    seq: AtomicU64,
    written: AtomicU64,
}

impl FeedbackLog {
    /// Appends to `<root>/service_feedback/`.
    pub fn new(root: &Path) -> Self {
        FeedbackLog {
            root: root.to_path_buf(),
            pending: Mutex::new(Vec::new()),
            seq: AtomicU64::new(0),
            written: AtomicU64::new(0),
        }
    }

    /// Buffers `user`'s report; returns the reports now buffered.
    pub fn append(&self, user: &str, r: ValidReport) -> usize {
        let mut p = self.pending.lock().expect("not poisoned");
        p.push(ServiceFeedbackRow {
            observed_at: r.observed_at,
            received_at: r.received_at,
            user_id: user.to_string(),
            source: r.source,
            observed_bytes: r.observed_bytes,
            observed_requests: r.observed_requests,
            qoe: r.qoe,
            latency_ms: r.latency_ms,
        });
        p.len()
    }

    /// Reports written so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Writes what is buffered, one file per date partition; returns the rows written. On an
    /// error the rows not written are kept for the next flush.
    pub fn flush(&self) -> personaflow_io::Result<u64> {
        let rows = std::mem::take(&mut *self.pending.lock().expect("not poisoned"));
        if rows.is_empty() {
            return Ok(0);
        }
        let mut by_day: BTreeMap<String, Vec<ServiceFeedbackRow>> = BTreeMap::new();
        for r in rows {
            by_day
                .entry(date_partition(r.observed_at))
                .or_default()
                .push(r);
        }
        let mut written = 0u64;
        let mut days = by_day.into_iter();
        while let Some((day, rows)) = days.next() {
            let seq = self.seq.fetch_add(1, Ordering::Relaxed);
            let path = self
                .root
                .join("service_feedback")
                .join(format!("date={day}"))
                .join(format!(
                    "feedback-{}-{seq:06}.parquet",
                    rows.iter().map(|r| r.received_at).max().unwrap_or(0)
                ));
            let result = std::fs::create_dir_all(path.parent().expect("has a parent"))
                .map_err(|e| personaflow_io::Error::io(&path, e))
                .and_then(|_| {
                    write_parquet_atomically(
                        &path,
                        &ServiceFeedbackRow::to_batch(&rows),
                        rows.len().max(1),
                        true,
                    )
                });
            if let Err(e) = result {
                // Keep this day's rows and the days not tried for the next flush.
                let mut p = self.pending.lock().expect("not poisoned");
                p.extend(rows);
                p.extend(days.flat_map(|(_, r)| r));
                return Err(e);
            }
            written += rows.len() as u64;
        }
        self.written.fetch_add(written, Ordering::Relaxed);
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(json: &str) -> Result<ValidReport, BadReport> {
        serde_json::from_str::<FeedbackReport>(json)
            .unwrap()
            .validate(1_000)
    }

    #[test]
    fn reports_are_validated_field_by_field() {
        assert_eq!(
            report(r#"{"source":"", "qoe":0.5}"#).unwrap_err().field,
            "source"
        );
        assert_eq!(
            report(r#"{"source":"s", "qoe":1.5}"#).unwrap_err().field,
            "qoe"
        );
        assert_eq!(
            report(r#"{"source":"s", "latency_ms":-1}"#)
                .unwrap_err()
                .field,
            "latency_ms"
        );
        assert_eq!(
            report(r#"{"source":"s"}"#).unwrap_err().field,
            "observed_bytes"
        );
        assert_eq!(
            report(r#"{"source":"s", "qoe":0.5, "observed_at":"yesterday"}"#)
                .unwrap_err()
                .field,
            "observed_at"
        );
        assert_eq!(
            report(r#"{"source":"s", "qoe":0.5, "observed_at":-5}"#)
                .unwrap_err()
                .field,
            "observed_at"
        );
        let ok =
            report(r#"{"source":"s", "observed_bytes":7, "observed_at":"1970-01-01T00:00:02Z"}"#)
                .unwrap();
        assert_eq!((ok.observed_at, ok.received_at), (2_000, 1_000));
        assert!(serde_json::from_str::<FeedbackReport>(r#"{"source":"s","extra":1}"#).is_err());
    }

    #[test]
    fn flushes_write_one_file_per_day_and_nothing_when_empty() {
        let dir = tempfile::tempdir().unwrap();
        let log = FeedbackLog::new(dir.path());
        assert_eq!(log.flush().unwrap(), 0);
        let day = 86_400_000;
        for (user, at) in [("a", 0), ("b", day + 5), ("c", 10)] {
            let r = report(&format!(r#"{{"source":"s","qoe":0.5,"observed_at":{at}}}"#)).unwrap();
            log.append(user, r);
        }
        assert_eq!(log.flush().unwrap(), 3);
        assert_eq!(log.written(), 3);
        let files =
            personaflow_io::tables::read::parquet_files(&dir.path().join("service_feedback"))
                .unwrap();
        assert_eq!(files.len(), 2, "{files:?}");
        assert!(files[0].to_string_lossy().contains("date=1970-01-01"));
        assert!(files[1].to_string_lossy().contains("date=1970-01-02"));
    }
}
