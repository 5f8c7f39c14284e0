//! Event-time watermarks of a partitioned stream (the continuous job, DESIGN.md "Time").
//!
//! Each partition's watermark is the largest event time seen on it minus the allowed lateness.
//! The job's watermark is the minimum over the *active* partitions: a partition that has sent
//! nothing for the idle timeout (processing time) stops holding it back, and counts again as
//! soon as it sends. A partition assigned but not yet heard from holds the watermark where it
//! is (its events may be the oldest) until it sends or times out. The job's watermark never moves backwards. An event older than the job's
//! watermark is late: it goes to the `late` output with its lateness, never into a window that
//! may already have closed.
//!
//! Processing time is passed in (`now_ms`), so the rules are tested without clocks.

use std::collections::BTreeMap;

pub use personaflow_dataflow::config::{DEFAULT_ALLOWED_LATENESS_MS, DEFAULT_IDLE_TIMEOUT_MS};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PartitionState {
    /// Largest event time seen, ms (`None`: assigned, nothing received yet).
    max_event_ms: Option<i64>,
    /// Processing time of the last message, ms.
    last_seen_ms: i64,
}

/// What [`Watermarks::observe`] says of an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// In time: its window is still open.
    OnTime,
    /// Older than the job's watermark by this many ms.
    Late {
        /// Watermark minus the event time, ms (> 0).
        lateness_ms: i64,
    },
}

/// Per-partition watermarks and the job's watermark.
#[derive(Clone, Debug)]
pub struct Watermarks {
    lateness_ms: i64,
    idle_timeout_ms: i64,
    partitions: BTreeMap<i32, PartitionState>,
    current: Option<i64>,
}

impl Watermarks {
    /// A tracker with the given allowed lateness and idle timeout (both ms, clamped at 0).
    pub fn new(allowed_lateness_ms: i64, idle_timeout_ms: i64) -> Self {
        Watermarks {
            lateness_ms: allowed_lateness_ms.max(0),
            idle_timeout_ms: idle_timeout_ms.max(0),
            partitions: BTreeMap::new(),
            current: None,
        }
    }

    /// Records an event of `partition` with event time `event_ms`, received at processing
    /// time `now_ms`, and says whether it is late against the job's watermark *before* this
    /// event (an event never makes itself late). Late events still count as partition
    /// activity but do not move the partition's maximum back.
    ///
    /// ```
    /// use personaflow_kafka::watermark::{Arrival, Watermarks};
    /// let mut w = Watermarks::new(1_000, 30_000);
    /// w.assign(0, 0);
    /// assert_eq!(w.observe(0, 10_000, 0), Arrival::OnTime);
    /// assert_eq!(w.watermark(0), Some(9_000));
    /// assert_eq!(w.observe(0, 8_500, 1), Arrival::Late { lateness_ms: 500 });
    /// ```
    pub fn observe(&mut self, partition: i32, event_ms: i64, now_ms: i64) -> Arrival {
        let arrival = match self.current {
            Some(wm) if event_ms < wm => Arrival::Late {
                lateness_ms: wm - event_ms,
            },
            _ => Arrival::OnTime,
        };
        let state = self.partitions.entry(partition).or_insert(PartitionState {
            max_event_ms: None,
            last_seen_ms: now_ms,
        });
        state.max_event_ms = Some(state.max_event_ms.map_or(event_ms, |m| m.max(event_ms)));
        state.last_seen_ms = state.last_seen_ms.max(now_ms);
        self.advance(now_ms);
        arrival
    }

    /// Records that `partition` is assigned to this consumer at `now_ms`: until it sends an
    /// event or times out, it holds the job's watermark where it is.
    pub fn assign(&mut self, partition: i32, now_ms: i64) {
        self.partitions.entry(partition).or_insert(PartitionState {
            max_event_ms: None,
            last_seen_ms: now_ms,
        });
    }

    /// Forgets `partition` (revoked from this consumer in a rebalance): it no longer holds the
    /// watermark back.
    pub fn revoke(&mut self, partition: i32, now_ms: i64) {
        self.partitions.remove(&partition);
        self.advance(now_ms);
    }

    /// The job's watermark at processing time `now_ms` (`None` before any event): the minimum
    /// of the active partitions' watermarks; if every partition is idle, the largest of them.
    /// Never decreases.
    pub fn watermark(&mut self, now_ms: i64) -> Option<i64> {
        self.advance(now_ms);
        self.current
    }

    /// Partitions idle at `now_ms`.
    pub fn idle_partitions(&self, now_ms: i64) -> Vec<i32> {
        self.partitions
            .iter()
            .filter(|(_, s)| self.is_idle(s, now_ms))
            .map(|(p, _)| *p)
            .collect()
    }

    fn is_idle(&self, s: &PartitionState, now_ms: i64) -> bool {
        now_ms - s.last_seen_ms >= self.idle_timeout_ms
    }

    fn advance(&mut self, now_ms: i64) {
        let (mut active, mut idle): (Option<i64>, Option<i64>) = (None, None);
        for s in self.partitions.values() {
            let idle_now = self.is_idle(s, now_ms);
            let Some(max) = s.max_event_ms else {
                if idle_now {
                    continue; // assigned, silent, timed out: it does not count
                }
                return; // assigned, not heard from yet: hold
            };
            let mark = max.saturating_sub(self.lateness_ms);
            if idle_now {
                idle = Some(idle.map_or(mark, |m| m.max(mark)));
            } else {
                active = Some(active.map_or(mark, |m| m.min(mark)));
            }
        }
        if let Some(c) = active.or(idle) {
            self.current = Some(self.current.map_or(c, |cur| cur.max(c)));
        }
    }
}

impl Default for Watermarks {
    fn default() -> Self {
        Watermarks::new(DEFAULT_ALLOWED_LATENESS_MS, DEFAULT_IDLE_TIMEOUT_MS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_job_watermark_is_the_minimum_over_active_partitions() {
        let mut w = Watermarks::new(100, 1_000);
        w.assign(0, 0);
        w.assign(1, 0);
        w.observe(0, 5_000, 0);
        assert_eq!(w.watermark(0), None, "partition 1 has not been heard from");
        w.observe(1, 2_000, 0);
        assert_eq!(w.watermark(0), Some(1_900), "partition 1 holds it back");
        w.observe(1, 4_000, 10);
        assert_eq!(w.watermark(10), Some(3_900));
        // An event of partition 0 between the two watermarks is on time.
        assert_eq!(w.observe(0, 3_950, 20), Arrival::OnTime);
        assert_eq!(w.observe(0, 3_000, 20), Arrival::Late { lateness_ms: 900 });
    }

    #[test]
    fn an_idle_partition_stops_holding_the_watermark_back_until_it_sends() {
        let mut w = Watermarks::new(0, 1_000);
        w.assign(0, 0);
        w.assign(1, 0);
        w.observe(0, 10_000, 0);
        w.observe(1, 1_000, 0);
        assert_eq!(w.watermark(500), Some(1_000));
        // Partition 0 keeps sending; partition 1 falls silent for the idle timeout.
        w.observe(0, 20_000, 1_200);
        assert_eq!(w.idle_partitions(1_200), vec![1]);
        assert_eq!(w.watermark(1_200), Some(20_000));
        // Partition 1 wakes up with old events: they are late, and the watermark stays.
        assert_eq!(
            w.observe(1, 2_000, 1_300),
            Arrival::Late {
                lateness_ms: 18_000
            }
        );
        assert_eq!(w.watermark(1_300), Some(20_000), "never moves backwards");
        assert!(w.idle_partitions(1_300).is_empty());
    }

    #[test]
    fn when_every_partition_is_idle_the_largest_watermark_holds() {
        let mut w = Watermarks::new(50, 100);
        w.observe(0, 1_000, 0);
        w.observe(1, 3_000, 0);
        assert_eq!(w.watermark(10), Some(950));
        assert_eq!(
            w.watermark(500),
            Some(2_950),
            "the stream paused: windows close"
        );
    }

    #[test]
    fn revoked_partitions_no_longer_count() {
        let mut w = Watermarks::new(0, 10_000);
        w.assign(0, 0);
        w.assign(1, 0);
        w.observe(0, 1_000, 0);
        w.observe(1, 9_000, 0);
        assert_eq!(w.watermark(0), Some(1_000));
        w.revoke(0, 1);
        assert_eq!(w.watermark(1), Some(9_000));
        assert_eq!(Watermarks::default().watermark(0), None);
    }

    #[test]
    fn a_silent_assigned_partition_holds_the_watermark_until_it_times_out() {
        let mut w = Watermarks::new(0, 1_000);
        w.assign(0, 0);
        w.assign(1, 0);
        w.observe(0, 5_000, 10);
        assert_eq!(w.watermark(500), None);
        assert_eq!(w.watermark(1_000), Some(5_000), "partition 1 timed out");
        w.observe(0, 6_000, 1_005);
        assert_eq!(w.watermark(1_005), Some(6_000));
    }
}
