//! Window features: the one place where the per-user, per-window feature families are
//! defined and versioned (DESIGN.md step 2).
//!
//! Events of one user in one window are folded into a [`WindowAgg`], a commutative monoid of
//! integers (so an event costs O(1) and the result does not depend on arrival order); the
//! aggregate becomes a fixed-length feature vector with [`window_features`]. The two velocity
//! features need the user's earlier windows and are filled in by [`crate::sequences`].

use crate::event::{Context, Event};
use crate::policies::socket::{RequestType, WindowDemand};
use crate::vector::Vector;
use crate::window::WindowSpec;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Version of the feature schema below. Bump it whenever a feature's meaning changes; models
/// record the version (and [`feature_schema_hash`]) they were trained on.
pub const FEATURE_SCHEMA_VERSION: u32 = 1;
/// Number of hashed buckets for the action mix and for the category mix.
pub const MIX_BUCKETS: usize = 8;
/// At most this many distinct session ids are tracked per user and window (the smallest
/// hashes are kept, so the count is exact up to this number and saturates above it).
pub const MAX_TRACKED_SESSIONS: usize = 64;
/// Status codes at or above this value count as errors.
pub const ERROR_STATUS: i32 = 400;

/// A feature: its name, meaning and the reference statistics used to standardise it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FeatureDef {
    /// Column name in the `features` table.
    pub name: &'static str,
    /// What it measures.
    pub description: &'static str,
    /// Reference centre for standardisation.
    pub reference_mean: f32,
    /// Reference scale for standardisation.
    pub reference_scale: f32,
    /// Calendar features describe the window, not the user.
    pub calendar: bool,
}

const fn f(
    name: &'static str,
    description: &'static str,
    reference_mean: f32,
    reference_scale: f32,
) -> FeatureDef {
    FeatureDef {
        name,
        description,
        reference_mean,
        reference_scale,
        calendar: false,
    }
}

const fn cal(name: &'static str, description: &'static str) -> FeatureDef {
    FeatureDef {
        name,
        description,
        reference_mean: 0.0,
        reference_scale: 0.7,
        calendar: true,
    }
}

const MIX_MEAN: f32 = 1.0 / MIX_BUCKETS as f32;
const MIX_SCALE: f32 = 0.25;

/// Index of the first action-mix feature.
pub const ACTION_MIX_START: usize = 11;
/// Index of the first category-mix feature.
pub const CATEGORY_MIX_START: usize = ACTION_MIX_START + MIX_BUCKETS;
/// Index of the first calendar feature.
pub const CALENDAR_START: usize = CATEGORY_MIX_START + MIX_BUCKETS;
/// Features computed from one window alone.
pub const NUM_BASE_FEATURES: usize = CALENDAR_START + 4;
/// Index of the event-count velocity feature.
pub const VELOCITY_EVENTS: usize = NUM_BASE_FEATURES;
/// Index of the bytes velocity feature.
pub const VELOCITY_BYTES: usize = NUM_BASE_FEATURES + 1;
/// Total number of features per window.
pub const NUM_FEATURES: usize = NUM_BASE_FEATURES + 2;

/// The feature schema, version [`FEATURE_SCHEMA_VERSION`].
pub const FEATURES: [FeatureDef; NUM_FEATURES] = [
    f("log_events", "ln(1 + events in the window)", 1.5, 1.0),
    f("request_rate", "events per second", 0.1, 0.2),
    f(
        "bytes_in_rate",
        "ln(1 + bytes received per second)",
        6.0,
        4.0,
    ),
    f("bytes_out_rate", "ln(1 + bytes sent per second)", 4.0, 3.0),
    f(
        "latency_mean",
        "ln(1 + mean latency ms); 0 without latencies",
        3.5,
        1.5,
    ),
    f(
        "latency_max",
        "ln(1 + max latency ms); 0 without latencies",
        4.0,
        1.5,
    ),
    f(
        "error_rate",
        "share of events with status >= 400",
        0.03,
        0.1,
    ),
    f(
        "session_span",
        "(last - first event time) / window length",
        0.4,
        0.35,
    ),
    f(
        "mean_gap",
        "ln(1 + mean seconds between events); 0 for one event",
        2.0,
        1.5,
    ),
    f("sessions", "ln(1 + distinct session ids)", 0.7, 0.4),
    f(
        "bytes_per_event",
        "ln(1 + (bytes in + out) / events)",
        8.0,
        4.0,
    ),
    f(
        "action_mix_0",
        "share of actions hashing to bucket 0",
        MIX_MEAN,
        MIX_SCALE,
    ),
    f(
        "action_mix_1",
        "share of actions hashing to bucket 1",
        MIX_MEAN,
        MIX_SCALE,
    ),
    f(
        "action_mix_2",
        "share of actions hashing to bucket 2",
        MIX_MEAN,
        MIX_SCALE,
    ),
    f(
        "action_mix_3",
        "share of actions hashing to bucket 3",
        MIX_MEAN,
        MIX_SCALE,
    ),
    f(
        "action_mix_4",
        "share of actions hashing to bucket 4",
        MIX_MEAN,
        MIX_SCALE,
    ),
    f(
        "action_mix_5",
        "share of actions hashing to bucket 5",
        MIX_MEAN,
        MIX_SCALE,
    ),
    f(
        "action_mix_6",
        "share of actions hashing to bucket 6",
        MIX_MEAN,
        MIX_SCALE,
    ),
    f(
        "action_mix_7",
        "share of actions hashing to bucket 7",
        MIX_MEAN,
        MIX_SCALE,
    ),
    f(
        "category_mix_0",
        "share of categories hashing to bucket 0",
        MIX_MEAN,
        MIX_SCALE,
    ),
    f(
        "category_mix_1",
        "share of categories hashing to bucket 1",
        MIX_MEAN,
        MIX_SCALE,
    ),
    f(
        "category_mix_2",
        "share of categories hashing to bucket 2",
        MIX_MEAN,
        MIX_SCALE,
    ),
    f(
        "category_mix_3",
        "share of categories hashing to bucket 3",
        MIX_MEAN,
        MIX_SCALE,
    ),
    f(
        "category_mix_4",
        "share of categories hashing to bucket 4",
        MIX_MEAN,
        MIX_SCALE,
    ),
    f(
        "category_mix_5",
        "share of categories hashing to bucket 5",
        MIX_MEAN,
        MIX_SCALE,
    ),
    f(
        "category_mix_6",
        "share of categories hashing to bucket 6",
        MIX_MEAN,
        MIX_SCALE,
    ),
    f(
        "category_mix_7",
        "share of categories hashing to bucket 7",
        MIX_MEAN,
        MIX_SCALE,
    ),
    cal("hour_sin", "sin of the window start's time of day (UTC)"),
    cal("hour_cos", "cos of the window start's time of day (UTC)"),
    cal(
        "weekday_sin",
        "sin of the window start's day of week (UTC, Monday = 0)",
    ),
    cal(
        "weekday_cos",
        "cos of the window start's day of week (UTC, Monday = 0)",
    ),
    f(
        "velocity_events",
        "ln(1+events) minus that of the previous active window among the preceding L-1",
        0.0,
        1.0,
    ),
    f(
        "velocity_bytes",
        "ln(1+bytes) minus that of the previous active window among the preceding L-1",
        0.0,
        2.0,
    ),
];

/// A stable 64-bit hash of the feature schema (version, names and reference statistics),
/// recorded in model metadata so a model trained on other features is refused.
pub fn feature_schema_hash() -> u64 {
    let mut h = Fnv::default();
    h.write(&FEATURE_SCHEMA_VERSION.to_le_bytes());
    for def in FEATURES.iter() {
        h.write(def.name.as_bytes());
        h.write(&def.reference_mean.to_bits().to_le_bytes());
        h.write(&def.reference_scale.to_bits().to_le_bytes());
    }
    h.finish()
}

/// FNV-1a, 64 bit: a stable hash (unlike `std`'s randomised one) for mix buckets, session
/// sets and schema hashes.
#[derive(Clone, Copy, Debug)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    /// Feeds bytes.
    pub fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// The hash so far.
    pub fn finish(&self) -> u64 {
        self.0
    }

    /// Hash of one string.
    pub fn hash_str(s: &str) -> u64 {
        let mut h = Fnv::default();
        h.write(s.as_bytes());
        h.finish()
    }
}

/// The hashed bucket of an action or category name.
pub fn mix_bucket(name: &str) -> usize {
    (Fnv::hash_str(name) % MIX_BUCKETS as u64) as usize
}

/// A value with the event time it was seen at; merging keeps the latest (ties: the larger
/// value), which is commutative and associative.
pub type Latest<T> = Option<(i64, T)>;

fn merge_latest(into: &mut Latest<String>, other: &Latest<String>) {
    if let Some((ts, v)) = other {
        offer_latest(into, *ts, v);
    }
}

/// Merges the value `v` seen at `ts` into `into` (as [`merge_latest`] would), reusing the kept
/// text's buffer: a user's device, os, country and segment rarely change, so an event that
/// only moves the time allocates nothing.
fn offer_latest(into: &mut Latest<String>, ts: i64, v: &str) {
    match into {
        Some((cur_ts, cur)) => {
            if (*cur_ts, cur.as_str()) < (ts, v) {
                *cur_ts = ts;
                if cur != v {
                    cur.clear();
                    cur.push_str(v);
                }
            }
        }
        None => *into = Some((ts, v.to_owned())),
    }
}

/// The partial aggregate of one user's events in one window: a commutative monoid of
/// integers (so merging is exact and independent of arrival order).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WindowAgg {
    /// Events.
    pub events: u64,
    /// Events with status >= [`ERROR_STATUS`].
    pub errors: u64,
    /// Sum of bytes received.
    pub bytes_in: u64,
    /// Sum of bytes sent.
    pub bytes_out: u64,
    /// Sum of latencies, microseconds.
    pub latency_sum_us: u64,
    /// Events with a latency.
    pub latency_n: u64,
    /// Largest latency, microseconds.
    pub latency_max_us: u64,
    /// Earliest event time, ms (`i64::MAX` when empty).
    pub first_ts: i64,
    /// Latest event time, ms (`i64::MIN` when empty).
    pub last_ts: i64,
    /// Action counts per hashed bucket.
    pub actions: [u32; MIX_BUCKETS],
    /// Category counts per hashed bucket.
    pub categories: [u32; MIX_BUCKETS],
    /// Events per request type ([`RequestType::of`] their category and action), indexed as
    /// [`REQUEST_TYPES`](crate::policies::socket::REQUEST_TYPES).
    pub requests: [u32; 4],
    /// Smallest [`MAX_TRACKED_SESSIONS`] session-id hashes, sorted.
    pub sessions: Vec<u64>,
    /// Whether any event was authenticated.
    pub authenticated: bool,
    /// Latest non-null segment.
    pub segment: Latest<String>,
    /// Latest non-null device.
    pub device: Latest<String>,
    /// Latest non-null os.
    pub os: Latest<String>,
    /// Latest non-null country.
    pub country: Latest<String>,
}

impl WindowAgg {
    /// The empty aggregate (the monoid's identity).
    pub fn empty() -> Self {
        WindowAgg {
            first_ts: i64::MAX,
            last_ts: i64::MIN,
            ..WindowAgg::default()
        }
    }

    /// The aggregate of one event.
    pub fn of(event: &Event) -> Self {
        let mut agg = WindowAgg::empty();
        agg.add(event);
        agg
    }

    /// Folds one event in. Sums saturate at `u64::MAX` instead of wrapping (sources bound
    /// each event's bytes and latency, so a window reaches it only with billions of events).
    pub fn add(&mut self, e: &Event) {
        self.events = self.events.saturating_add(1);
        if e.status.is_some_and(|s| s >= ERROR_STATUS) {
            self.errors = self.errors.saturating_add(1);
        }
        self.bytes_in = self.bytes_in.saturating_add(e.bytes_in.unwrap_or(0));
        self.bytes_out = self.bytes_out.saturating_add(e.bytes_out.unwrap_or(0));
        if let Some(l) = e.latency_ms.filter(|l| l.is_finite() && *l >= 0.0) {
            // `as` saturates a float too large for a u64.
            let us = (l * 1000.0).round() as u64;
            self.latency_sum_us = self.latency_sum_us.saturating_add(us);
            self.latency_n = self.latency_n.saturating_add(1);
            self.latency_max_us = self.latency_max_us.max(us);
        }
        self.first_ts = self.first_ts.min(e.ts_ms);
        self.last_ts = self.last_ts.max(e.ts_ms);
        let a = &mut self.actions[mix_bucket(&e.action)];
        *a = a.saturating_add(1);
        if let Some(c) = &e.category {
            let c = &mut self.categories[mix_bucket(c)];
            *c = c.saturating_add(1);
        }
        let r = &mut self.requests[RequestType::of(e.category.as_deref(), &e.action).index()];
        *r = r.saturating_add(1);
        if let Some(s) = &e.session_id {
            insert_session(&mut self.sessions, Fnv::hash_str(s));
        }
        self.authenticated |= e.authenticated;
        for (into, v) in [
            (&mut self.segment, &e.segment),
            (&mut self.device, &e.device),
            (&mut self.os, &e.os),
            (&mut self.country, &e.country),
        ] {
            if let Some(v) = v {
                offer_latest(into, e.ts_ms, v);
            }
        }
    }

    /// Merges another aggregate in (commutative and associative; sums saturate).
    pub fn merge(&mut self, o: &WindowAgg) {
        self.events = self.events.saturating_add(o.events);
        self.errors = self.errors.saturating_add(o.errors);
        self.bytes_in = self.bytes_in.saturating_add(o.bytes_in);
        self.bytes_out = self.bytes_out.saturating_add(o.bytes_out);
        self.latency_sum_us = self.latency_sum_us.saturating_add(o.latency_sum_us);
        self.latency_n = self.latency_n.saturating_add(o.latency_n);
        self.latency_max_us = self.latency_max_us.max(o.latency_max_us);
        self.first_ts = self.first_ts.min(o.first_ts);
        self.last_ts = self.last_ts.max(o.last_ts);
        for i in 0..MIX_BUCKETS {
            self.actions[i] = self.actions[i].saturating_add(o.actions[i]);
            self.categories[i] = self.categories[i].saturating_add(o.categories[i]);
        }
        for i in 0..self.requests.len() {
            self.requests[i] = self.requests[i].saturating_add(o.requests[i]);
        }
        for s in &o.sessions {
            insert_session(&mut self.sessions, *s);
        }
        self.authenticated |= o.authenticated;
        merge_latest(&mut self.segment, &o.segment);
        merge_latest(&mut self.device, &o.device);
        merge_latest(&mut self.os, &o.os);
        merge_latest(&mut self.country, &o.country);
    }

    /// Bytes received and sent (saturating).
    pub fn bytes(&self) -> u64 {
        self.bytes_in.saturating_add(self.bytes_out)
    }

    /// What the window asked of the network.
    pub fn demand(&self) -> WindowDemand {
        WindowDemand {
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            latency_mean_us: (self.latency_n > 0).then(|| self.latency_sum_us / self.latency_n),
            requests: self.requests,
        }
    }

    /// The context (device, os, country) last seen in the window.
    pub fn context(&self) -> Context {
        let v = |l: &Latest<String>| l.as_ref().map(|(_, v)| Arc::from(v.as_str()));
        Context {
            device: v(&self.device),
            os: v(&self.os),
            country: v(&self.country),
        }
    }
}

fn insert_session(sessions: &mut Vec<u64>, h: u64) {
    if let Err(pos) = sessions.binary_search(&h) {
        if pos < MAX_TRACKED_SESSIONS {
            sessions.insert(pos, h);
            sessions.truncate(MAX_TRACKED_SESSIONS);
        }
    }
}

/// One user's window, summarised: the base features plus what later stages need.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WindowSummary {
    /// The [`NUM_BASE_FEATURES`] base features.
    pub base: Vector,
    /// Events in the window.
    pub events: u64,
    /// Bytes in + out.
    pub bytes: u64,
    /// Whether any event was authenticated.
    pub authenticated: bool,
    /// The known segment, for authenticated users.
    pub segment: Option<String>,
    /// Device, os, country.
    pub context: Context,
    /// What the window asked of the network.
    pub demand: WindowDemand,
}

impl WindowSummary {
    /// Summarises an aggregate of window `window`.
    pub fn new(agg: &WindowAgg, window: u64, spec: &WindowSpec) -> Self {
        WindowSummary {
            base: Vector(window_features(agg, window, spec).to_vec()),
            events: agg.events,
            bytes: agg.bytes(),
            authenticated: agg.authenticated,
            segment: if agg.authenticated {
                agg.segment.as_ref().map(|(_, s)| s.clone())
            } else {
                None
            },
            context: agg.context(),
            demand: agg.demand(),
        }
    }
}

const MS_PER_DAY: i64 = 86_400_000;
/// 1970-01-01 was a Thursday: days to add so that Monday is 0.
const EPOCH_WEEKDAY_OFFSET: i64 = 3;

/// The base features of one window's aggregate (all but the two velocity features).
///
/// ```
/// use personaflow_operators::{Event, WindowSpec};
/// use personaflow_operators::window::features::{window_features, WindowAgg, FEATURES};
/// let mut e = Event::new(30_000, "u1", "page_view");
/// e.bytes_in = Some(6_000);
/// let x = window_features(&WindowAgg::of(&e), 0, &WindowSpec::default());
/// assert_eq!(FEATURES[0].name, "log_events");
/// assert!((x[0] - 2f32.ln()).abs() < 1e-6); // ln(1 + 1 event)
/// ```
pub fn window_features(
    agg: &WindowAgg,
    window: u64,
    spec: &WindowSpec,
) -> [f32; NUM_BASE_FEATURES] {
    let mut x = [0f32; NUM_BASE_FEATURES];
    let n = agg.events.max(1) as f64;
    let secs = spec.len_secs();
    let ln1p = |v: f64| v.ln_1p() as f32;
    x[0] = ln1p(agg.events as f64);
    x[1] = (agg.events as f64 / secs) as f32;
    x[2] = ln1p(agg.bytes_in as f64 / secs);
    x[3] = ln1p(agg.bytes_out as f64 / secs);
    if agg.latency_n > 0 {
        // A saturated sum would put the mean below its true value: never below the max.
        let mean_us =
            (agg.latency_sum_us as f64 / agg.latency_n as f64).min(agg.latency_max_us as f64);
        x[4] = ln1p(mean_us / 1000.0);
        x[5] = ln1p(agg.latency_max_us as f64 / 1000.0);
    }
    x[6] = (agg.errors as f64 / n) as f32;
    if agg.events > 0 {
        let span_ms = (agg.last_ts - agg.first_ts).max(0) as f64;
        x[7] = (span_ms / spec.len_ms() as f64) as f32;
        if agg.events > 1 {
            x[8] = ln1p(span_ms / 1000.0 / (agg.events - 1) as f64);
        }
    }
    x[9] = ln1p(agg.sessions.len() as f64);
    x[10] = ln1p((agg.bytes_in as f64 + agg.bytes_out as f64) / n);
    let cats: u32 = agg.categories.iter().sum();
    for i in 0..MIX_BUCKETS {
        x[ACTION_MIX_START + i] = (f64::from(agg.actions[i]) / n) as f32;
        if cats > 0 {
            x[CATEGORY_MIX_START + i] = (f64::from(agg.categories[i]) / f64::from(cats)) as f32;
        }
    }
    let start = spec.start_ms(window);
    let day_frac = start.rem_euclid(MS_PER_DAY) as f64 / MS_PER_DAY as f64;
    let week_frac = ((start.div_euclid(MS_PER_DAY) + EPOCH_WEEKDAY_OFFSET).rem_euclid(7) as f64
        + day_frac)
        / 7.0;
    let tau = std::f64::consts::TAU;
    x[CALENDAR_START] = (tau * day_frac).sin() as f32;
    x[CALENDAR_START + 1] = (tau * day_frac).cos() as f32;
    x[CALENDAR_START + 2] = (tau * week_frac).sin() as f32;
    x[CALENDAR_START + 3] = (tau * week_frac).cos() as f32;
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(ts: i64, action: &str) -> Event {
        Event::new(ts, "u", action)
    }

    #[test]
    fn schema_is_consistent() {
        assert_eq!(FEATURES.len(), NUM_FEATURES);
        assert_eq!(FEATURES[ACTION_MIX_START].name, "action_mix_0");
        assert_eq!(FEATURES[CATEGORY_MIX_START].name, "category_mix_0");
        assert_eq!(FEATURES[CALENDAR_START].name, "hour_sin");
        assert_eq!(FEATURES[VELOCITY_EVENTS].name, "velocity_events");
        let mut names: Vec<_> = FEATURES.iter().map(|f| f.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), NUM_FEATURES, "feature names are unique");
        assert!(FEATURES.iter().all(|f| f.reference_scale > 0.0));
        assert_eq!(feature_schema_hash(), feature_schema_hash());
    }

    #[test]
    fn merge_is_order_independent() {
        let mut events = [ev(1_000, "a"), ev(5_000, "b"), ev(3_000, "c")];
        events[0].session_id = Some("s1".into());
        events[1].session_id = Some("s2".into());
        events[1].status = Some(503);
        events[2].latency_ms = Some(12.5);
        events[2].device = Some("tv".into());
        events[0].device = Some("mobile".into());
        let mut fwd = WindowAgg::empty();
        events.iter().for_each(|e| fwd.add(e));
        let mut rev = WindowAgg::empty();
        events.iter().rev().for_each(|e| rev.add(e));
        let mut merged = WindowAgg::of(&events[2]);
        let mut rest = WindowAgg::of(&events[0]);
        rest.merge(&WindowAgg::of(&events[1]));
        merged.merge(&rest);
        assert_eq!(fwd, rev);
        assert_eq!(fwd, merged);
        assert_eq!(fwd.errors, 1);
        assert_eq!(fwd.sessions.len(), 2);
        assert_eq!(
            fwd.context().device.as_deref(),
            Some("tv"),
            "latest device wins"
        );
    }

    #[test]
    fn the_latest_context_is_the_largest_time_and_value_in_any_order() {
        use rand::seq::SliceRandom;
        use rand::{Rng, SeedableRng};
        // ChaCha8, as the crate's other seeded tests: the same cases on every rand version.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(21);
        let devices = ["tv", "mobile", "desktop", "tablet"];
        for _ in 0..300 {
            let n = rng.random_range(1..12);
            let mut events: Vec<Event> = (0..n)
                .map(|_| {
                    let mut e = ev(rng.random_range(0..4) * 1_000, "a");
                    e.device = rng
                        .random_bool(0.8)
                        .then(|| devices[rng.random_range(0..devices.len())].to_string());
                    e
                })
                .collect();
            // The oracle: the largest (time, value) of the events that have one.
            let want = events
                .iter()
                .filter_map(|e| Some((e.ts_ms, e.device.clone()?)))
                .max();
            events.shuffle(&mut rng);
            let mut folded = WindowAgg::empty();
            events.iter().for_each(|e| folded.add(e));
            assert_eq!(folded.device, want, "{events:?}");
            let (a, b) = events.split_at(n / 2);
            let mut merged = WindowAgg::empty();
            a.iter().for_each(|e| merged.add(e));
            let mut rest = WindowAgg::empty();
            b.iter().for_each(|e| rest.add(e));
            merged.merge(&rest);
            assert_eq!(merged, folded);
        }
    }

    #[test]
    fn features_have_expected_values() {
        let spec = WindowSpec::default();
        let mut a = ev(0, "x");
        a.bytes_in = Some(600);
        a.latency_ms = Some(100.0);
        a.status = Some(200);
        let mut b = ev(30_000, "x");
        b.latency_ms = Some(300.0);
        b.status = Some(500);
        let mut agg = WindowAgg::of(&a);
        agg.add(&b);
        let x = window_features(&agg, 0, &spec);
        assert!((x[0] - 3f32.ln()).abs() < 1e-6);
        assert!((x[1] - 2.0 / 60.0).abs() < 1e-6);
        assert!((x[2] - 11f32.ln()).abs() < 1e-5); // 600 B / 60 s = 10 B/s
        assert!((x[4] - 201f32.ln()).abs() < 1e-5); // mean 200 ms
        assert!((x[5] - 301f32.ln()).abs() < 1e-5);
        assert!((x[6] - 0.5).abs() < 1e-6);
        assert!((x[7] - 0.5).abs() < 1e-6);
        assert!((x[8] - 31f32.ln()).abs() < 1e-5);
        let mix: f32 = x[ACTION_MIX_START..ACTION_MIX_START + MIX_BUCKETS]
            .iter()
            .sum();
        assert!((mix - 1.0).abs() < 1e-6);
        // Window 0 starts at midnight on a Thursday (1970-01-01): weekday index 3.
        assert!(x[CALENDAR_START].abs() < 1e-6 && (x[CALENDAR_START + 1] - 1.0).abs() < 1e-6);
        let week = (std::f64::consts::TAU * 3.0 / 7.0) as f32;
        assert!((x[CALENDAR_START + 2] - week.sin()).abs() < 1e-5);
    }

    #[test]
    fn sums_saturate_instead_of_wrapping() {
        let mut e = ev(0, "a");
        e.bytes_in = Some(u64::MAX - 1);
        e.bytes_out = Some(u64::MAX);
        e.latency_ms = Some(1e16);
        let mut agg = WindowAgg::of(&e);
        agg.add(&e);
        agg.merge(&WindowAgg::of(&e));
        assert_eq!(agg.bytes_in, u64::MAX);
        assert_eq!(agg.bytes(), u64::MAX);
        assert_eq!(agg.latency_sum_us, u64::MAX);
        let x = window_features(&agg, 0, &WindowSpec::default());
        assert!(x[4] <= x[5], "the latency mean is not above the max");
        assert!(x.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn session_sketch_saturates() {
        let mut agg = WindowAgg::empty();
        for i in 0..(MAX_TRACKED_SESSIONS * 2) {
            let mut e = ev(0, "a");
            e.session_id = Some(format!("s{i}"));
            agg.add(&e);
        }
        assert_eq!(agg.sessions.len(), MAX_TRACKED_SESSIONS);
        assert!(agg.sessions.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn unauthenticated_windows_carry_no_segment() {
        let mut e = ev(0, "a");
        e.segment = Some("gamer".into());
        let s = WindowSummary::new(&WindowAgg::of(&e), 0, &WindowSpec::default());
        assert_eq!(s.segment, None);
        e.authenticated = true;
        let s = WindowSummary::new(&WindowAgg::of(&e), 0, &WindowSpec::default());
        assert_eq!(s.segment.as_deref(), Some("gamer"));
    }
}
