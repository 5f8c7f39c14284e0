//! One window's decoded features expanded into events whose window features reproduce them.
//!
//! The decoder gives a feature vector per window (see
//! [`personaflow_operators::window::features::FEATURES`], in the pipeline's units); this module
//! inverts the features one family at a time:
//!
//! - **events** `n = round(e^log_events - 1)` (none: an inactive window);
//! - **times**: evenly spaced over `session_span × window length`, at an offset drawn within
//!   the window (so `mean_gap` follows from the span; the decoder's own `mean_gap` is not used,
//!   being the span's over `n - 1`);
//! - **bytes**: totals from `bytes_in_rate` and `bytes_out_rate` over the window, split evenly
//!   (so `bytes_per_event` follows);
//! - **latency**: one event at the maximum, the others at the value that gives the mean;
//! - **errors**: `round(error_rate × n)` events with status 500, the rest 200;
//! - **sessions**: `round(e^sessions - 1)` session ids (at least 1, at most `n`), in turn;
//! - **actions and categories**: counts per mix bucket by largest remainder, each bucket's
//!   events named with a name that hashes to it ([`bucket_names`]).
//!
//! Re-aggregated through the real window features, the events reproduce the input within
//! rounding: counts exactly when the input came from whole counts, rates and latencies to the
//! byte and microsecond (the test states each tolerance).
//!
//! ```
//! use personaflow_operators::window::features::{window_features, WindowAgg, NUM_FEATURES};
//! use personaflow_operators::WindowSpec;
//! use personaflow_synth::expand::{expand_window, Names, Persona};
//! use rand::SeedableRng;
//! let spec = WindowSpec::default();
//! let mut x = [0f32; NUM_FEATURES];
//! x[0] = (1.0f32 + 12.0).ln(); // 12 events
//! x[11] = 1.0; // every action in bucket 0
//! let names = Names::new();
//! let who = Persona { user: "s1", ..Persona::default() };
//! let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
//! let events = expand_window(&x, 7, &spec, &who, &names, &mut rng);
//! assert_eq!(events.len(), 12);
//! let mut agg = WindowAgg::empty();
//! events.iter().for_each(|e| agg.add(e));
//! assert_eq!(agg.events, 12);
//! assert_eq!(window_features(&agg, 7, &spec)[11], 1.0);
//! ```

use personaflow_operators::window::features::{
    mix_bucket, ACTION_MIX_START, CATEGORY_MIX_START, MIX_BUCKETS,
};
use personaflow_operators::{Event, WindowSpec};
use rand::Rng;

/// Events one window may hold at most (a decoded `log_events` beyond it is clamped).
pub const MAX_EVENTS_PER_WINDOW: u64 = 100_000;
/// Status of an event counted as an error.
pub const ERROR_STATUS_CODE: i32 = 500;
/// Status of the other events.
pub const OK_STATUS_CODE: i32 = 200;

/// Who the events are of: the user and their context.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Persona<'a> {
    /// The synthetic user's id.
    pub user: &'a str,
    /// Device class.
    pub device: Option<&'a str>,
    /// Operating system.
    pub os: Option<&'a str>,
    /// Country code.
    pub country: Option<&'a str>,
    /// Segment, for an authenticated user (unauthenticated users' events carry none).
    pub segment: Option<&'a str>,
}

/// Personas laid out for lookups by index, as [`WindowEvents::to_batch`] makes them (one per
/// event, in time order, so across the users at random): the users' ids in one buffer and a
/// fixed-size row per user whose context and segment are codes into a few interned strings.
/// A lookup reads one row and one id; a [`Persona`] of scattered `String`s costs a cache miss
/// per field at a million users (BENCHMARKS.md, "Synthetic users").
///
/// ```
/// use personaflow_synth::expand::{Persona, PersonaTable};
/// let people = [
///     Persona { user: "s1", device: Some("pc"), country: Some("US"), ..Persona::default() },
///     Persona { user: "s2", segment: Some("gamers"), device: Some("pc"), ..Persona::default() },
/// ];
/// let table = PersonaTable::new(people.iter().copied());
/// assert_eq!(table.len(), 2);
/// assert_eq!(table.get(1).user, "s2");
/// assert_eq!(table.get(1).segment, Some("gamers"));
/// assert_eq!(table.get(0).country, Some("US"));
/// assert_eq!(table.get(1).country, None);
/// ```
#[derive(Clone, Debug, Default)]
pub struct PersonaTable {
    ids: String,
    rows: Vec<PersonaRow>,
    strings: Vec<String>,
}

/// One user's row of a [`PersonaTable`]: where its id is, and its fields' string codes
/// ([`NO_STRING`]: none).
#[derive(Clone, Copy, Debug)]
struct PersonaRow {
    id_start: u64,
    id_len: u32,
    device: u32,
    os: u32,
    country: u32,
    segment: u32,
}

/// A [`PersonaRow`]'s code for a field without a value.
const NO_STRING: u32 = u32::MAX;

impl PersonaTable {
    /// The table of `personas`, the `u`-th at index `u`.
    pub fn new<'a>(personas: impl IntoIterator<Item = Persona<'a>>) -> Self {
        let mut table = PersonaTable::default();
        let mut codes: std::collections::HashMap<&'a str, u32> = Default::default();
        let mut code = |v: Option<&'a str>, strings: &mut Vec<String>| -> u32 {
            v.map_or(NO_STRING, |v| {
                *codes.entry(v).or_insert_with(|| {
                    strings.push(v.to_owned());
                    (strings.len() - 1) as u32
                })
            })
        };
        for p in personas {
            let row = PersonaRow {
                id_start: table.ids.len() as u64,
                id_len: p.user.len() as u32,
                device: code(p.device, &mut table.strings),
                os: code(p.os, &mut table.strings),
                country: code(p.country, &mut table.strings),
                segment: code(p.segment, &mut table.strings),
            };
            table.ids.push_str(p.user);
            table.rows.push(row);
        }
        table
    }

    /// Users held.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when there is none.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The `u`-th persona (panics past the end, like indexing).
    pub fn get(&self, u: u32) -> Persona<'_> {
        let row = self.rows[u as usize];
        let string = |c: u32| (c != NO_STRING).then(|| self.strings[c as usize].as_str());
        let start = row.id_start as usize;
        Persona {
            user: &self.ids[start..start + row.id_len as usize],
            device: string(row.device),
            os: string(row.os),
            country: string(row.country),
            segment: string(row.segment),
        }
    }
}

/// An action name and a category name for each mix bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    /// `actions[b]` hashes to bucket `b`.
    pub actions: [String; MIX_BUCKETS],
    /// `categories[b]` hashes to bucket `b`.
    pub categories: [String; MIX_BUCKETS],
}

impl Default for Names {
    fn default() -> Self {
        Names::new()
    }
}

impl Names {
    /// `synth_action_<b>` and `synth_category_<b>`, suffixed until each hashes to its bucket.
    pub fn new() -> Self {
        Names {
            actions: bucket_names("synth_action"),
            categories: bucket_names("synth_category"),
        }
    }
}

/// A name `<prefix>_<b>[_<k>]` for each bucket `b` that hashes to `b` (the first `k` that
/// does).
///
/// ```
/// use personaflow_operators::window::features::mix_bucket;
/// let names = personaflow_synth::expand::bucket_names("page");
/// for (b, n) in names.iter().enumerate() {
///     assert_eq!(mix_bucket(n), b);
/// }
/// ```
pub fn bucket_names(prefix: &str) -> [String; MIX_BUCKETS] {
    std::array::from_fn(|b| {
        let first = format!("{prefix}_{b}");
        if mix_bucket(&first) == b {
            return first;
        }
        (0u32..)
            .map(|k| format!("{prefix}_{b}_{k}"))
            .find(|n| mix_bucket(n) == b)
            .expect("some suffix hashes to every bucket")
    })
}

/// Splits `total` into counts proportional to `shares` (negative shares count as 0; all zero:
/// everything in the first bucket) by largest remainder, so the counts sum to `total`.
///
/// ```
/// use personaflow_synth::expand::apportion;
/// assert_eq!(apportion(&[0.5, 0.25, 0.25], 4), vec![2, 1, 1]);
/// assert_eq!(apportion(&[0.34, 0.33, 0.33], 2), vec![1, 1, 0]);
/// assert_eq!(apportion(&[0.0, 0.0], 3), vec![3, 0]);
/// ```
pub fn apportion(shares: &[f32], total: u64) -> Vec<u64> {
    let clean = |s: &f32| {
        if s.is_finite() {
            f64::from(*s).max(0.0)
        } else {
            0.0
        }
    };
    let sum: f64 = shares.iter().map(clean).sum();
    let mut out = vec![0; shares.len()];
    if sum <= 0.0 {
        if let Some(first) = out.first_mut() {
            *first = total;
        }
        return out;
    }
    let mut remainders: Vec<(f64, usize)> = Vec::with_capacity(shares.len());
    for (i, s) in shares.iter().enumerate() {
        let exact = clean(s) / sum * total as f64;
        out[i] = exact.floor() as u64;
        remainders.push((exact - exact.floor(), i));
    }
    let left = total - out.iter().sum::<u64>().min(total);
    let left = usize::try_from(left).map_or(out.len(), |l| l.min(out.len()));
    if left > 0 {
        // The `left` largest remainders get one more; ties to the lower bucket.
        remainders.select_nth_unstable_by(left - 1, |a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        for (_, i) in &remainders[..left] {
            out[*i] += 1;
        }
    }
    out
}

/// `e^v - 1`, at least 0 (non-finite: 0).
fn expm1_pos(v: f32) -> f64 {
    let v = f64::from(v);
    if v.is_finite() {
        v.exp_m1().max(0.0)
    } else {
        0.0
    }
}

/// Milliseconds of span per event up to which [`WindowEvents::merged_by_time`] sorts by
/// counting (a one-minute window holds 60,000).
pub const COUNTING_SORT_SPAN_PER_EVENT: i128 = 8;
/// Span up to which [`WindowEvents::merged_by_time`] sorts by counting, however few the
/// events: one default window.
pub const COUNTING_SORT_MIN_SPAN: i128 = 60_000;

/// Events column by column, their user an index into a list of users and their action and
/// category a mix bucket: what the expansion writes, without an allocation per event.
/// [`WindowEvents::to_batch`] makes the canonical event columns of them,
/// [`WindowEvents::event`] one [`Event`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WindowEvents {
    /// Event time, ms.
    pub ts: Vec<i64>,
    /// The user's index.
    pub user: Vec<u32>,
    /// The session's number within the user's window (`<user>-s<n>`).
    pub session: Vec<u32>,
    /// The action's mix bucket.
    pub action: Vec<u8>,
    /// The category's mix bucket.
    pub category: Vec<u8>,
    /// Bytes in.
    pub bytes_in: Vec<u64>,
    /// Bytes out.
    pub bytes_out: Vec<u64>,
    /// Latency, ms (NaN: none).
    pub latency_ms: Vec<f64>,
    /// Status code.
    pub status: Vec<i32>,
}

impl WindowEvents {
    /// Events held.
    pub fn len(&self) -> usize {
        self.ts.len()
    }

    /// True when there is none.
    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }

    /// Appends `other`'s events after these.
    pub fn extend(&mut self, other: &WindowEvents) {
        self.ts.extend_from_slice(&other.ts);
        self.user.extend_from_slice(&other.user);
        self.session.extend_from_slice(&other.session);
        self.action.extend_from_slice(&other.action);
        self.category.extend_from_slice(&other.category);
        self.bytes_in.extend_from_slice(&other.bytes_in);
        self.bytes_out.extend_from_slice(&other.bytes_out);
        self.latency_ms.extend_from_slice(&other.latency_ms);
        self.status.extend_from_slice(&other.status);
    }

    /// The events in time order (ties keep their order).
    pub fn sorted_by_time(&self) -> WindowEvents {
        let mut order: Vec<(i64, u32)> = self
            .ts
            .iter()
            .enumerate()
            .map(|(i, t)| (*t, i as u32))
            .collect();
        order.sort_unstable();
        fn gather<T: Copy>(v: &[T], order: &[(i64, u32)]) -> Vec<T> {
            order.iter().map(|(_, i)| v[*i as usize]).collect()
        }
        WindowEvents {
            ts: order.iter().map(|(t, _)| *t).collect(),
            user: gather(&self.user, &order),
            session: gather(&self.session, &order),
            action: gather(&self.action, &order),
            category: gather(&self.category, &order),
            bytes_in: gather(&self.bytes_in, &order),
            bytes_out: gather(&self.bytes_out, &order),
            latency_ms: gather(&self.latency_ms, &order),
            status: gather(&self.status, &order),
        }
    }

    /// The events of `parts`, one after another, in time order (ties keep their order): what
    /// concatenating them and [`WindowEvents::sorted_by_time`] give, without the copy. A
    /// window's events span at most its length in milliseconds, so they are placed by a
    /// counting sort over that span; events spread wider than
    /// [`COUNTING_SORT_SPAN_PER_EVENT`] ms per event are sorted by comparison instead.
    pub fn merged_by_time(parts: &[WindowEvents]) -> WindowEvents {
        let n: usize = parts.iter().map(WindowEvents::len).sum();
        let all = || parts.iter().flat_map(|p| p.ts.iter().copied());
        let (lo, hi) = all().fold((i64::MAX, i64::MIN), |(lo, hi), t| (lo.min(t), hi.max(t)));
        let span = i128::from(hi) - i128::from(lo) + 1;
        if n == 0 || span > (COUNTING_SORT_SPAN_PER_EVENT * n as i128).max(COUNTING_SORT_MIN_SPAN) {
            let mut joined = WindowEvents::default();
            parts.iter().for_each(|p| joined.extend(p));
            return joined.sorted_by_time();
        }
        // Where each event goes: the events before its millisecond, then those of its
        // millisecond met before it.
        let mut next = vec![0u32; span as usize + 1];
        for t in all() {
            next[(t - lo) as usize + 1] += 1;
        }
        for i in 1..next.len() {
            next[i] += next[i - 1];
        }
        let dest: Vec<u32> = all()
            .map(|t| {
                let slot = &mut next[(t - lo) as usize];
                *slot += 1;
                *slot - 1
            })
            .collect();
        fn scatter<T: Copy + Default>(
            parts: &[WindowEvents],
            dest: &[u32],
            column: impl Fn(&WindowEvents) -> &[T],
        ) -> Vec<T> {
            let mut out = vec![T::default(); dest.len()];
            let values = parts.iter().flat_map(|p| column(p).iter());
            for (to, v) in dest.iter().zip(values) {
                out[*to as usize] = *v;
            }
            out
        }
        WindowEvents {
            ts: scatter(parts, &dest, |p| &p.ts),
            user: scatter(parts, &dest, |p| &p.user),
            session: scatter(parts, &dest, |p| &p.session),
            action: scatter(parts, &dest, |p| &p.action),
            category: scatter(parts, &dest, |p| &p.category),
            bytes_in: scatter(parts, &dest, |p| &p.bytes_in),
            bytes_out: scatter(parts, &dest, |p| &p.bytes_out),
            latency_ms: scatter(parts, &dest, |p| &p.latency_ms),
            status: scatter(parts, &dest, |p| &p.status),
        }
    }

    /// Event `i`, of the user `who`.
    pub fn event(&self, i: usize, who: &Persona<'_>, names: &Names) -> Event {
        let latency = self.latency_ms[i];
        Event {
            ts_ms: self.ts[i],
            user_id: who.user.to_string(),
            session_id: Some(format!("{}-s{}", who.user, self.session[i])),
            authenticated: who.segment.is_some(),
            segment: who.segment.map(str::to_string),
            action: names.actions[usize::from(self.action[i])].clone(),
            category: Some(names.categories[usize::from(self.category[i])].clone()),
            bytes_in: Some(self.bytes_in[i]),
            bytes_out: Some(self.bytes_out[i]),
            latency_ms: (!latency.is_nan()).then_some(latency),
            status: Some(self.status[i]),
            device: who.device.map(str::to_string),
            os: who.os.map(str::to_string),
            country: who.country.map(str::to_string),
        }
    }

    /// The canonical event columns ([`personaflow_io::schema::event_schema`]) of these
    /// events, `who(user index)` giving each user: the batch
    /// [`personaflow_io::schema::events_to_batch`] makes of the same events as [`Event`]s.
    pub fn to_batch<'a>(
        &self,
        who: impl Fn(u32) -> Persona<'a>,
        names: &Names,
    ) -> arrow_array::RecordBatch {
        use arrow_array::builder::{
            BooleanBuilder, Float64Builder, StringBuilder, TimestampMillisecondBuilder,
        };
        use arrow_array::{ArrayRef, Int32Array, UInt64Array};
        use std::sync::Arc;
        let n = self.len();
        let mut id = String::new();
        let mut ts = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
        let mut user = StringBuilder::with_capacity(n, n * 10);
        let mut session = StringBuilder::with_capacity(n, n * 14);
        let mut auth = BooleanBuilder::with_capacity(n);
        let mut segment = StringBuilder::with_capacity(n, n * 8);
        let mut action = StringBuilder::with_capacity(n, n * 16);
        let mut category = StringBuilder::with_capacity(n, n * 16);
        let mut device = StringBuilder::with_capacity(n, n * 6);
        let mut os = StringBuilder::with_capacity(n, n * 6);
        let mut country = StringBuilder::with_capacity(n, n * 2);
        let mut latency = Float64Builder::with_capacity(n);
        // Runs of one user's events share its strings.
        let mut last: Option<(u32, Persona<'a>)> = None;
        for i in 0..n {
            let u = self.user[i];
            let p = match last {
                Some((lu, p)) if lu == u => p,
                _ => {
                    let p = who(u);
                    last = Some((u, p));
                    p
                }
            };
            ts.append_value(self.ts[i]);
            user.append_value(p.user);
            id.clear();
            id.push_str(p.user);
            id.push_str("-s");
            push_decimal(&mut id, self.session[i]);
            session.append_value(&id);
            auth.append_value(p.segment.is_some());
            segment.append_option(p.segment);
            action.append_value(&names.actions[usize::from(self.action[i])]);
            category.append_value(&names.categories[usize::from(self.category[i])]);
            let l = self.latency_ms[i];
            latency.append_option((!l.is_nan()).then_some(l));
            device.append_option(p.device);
            os.append_option(p.os);
            country.append_option(p.country);
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(ts.finish()),
            Arc::new(user.finish()),
            Arc::new(session.finish()),
            Arc::new(auth.finish()),
            Arc::new(segment.finish()),
            Arc::new(action.finish()),
            Arc::new(category.finish()),
            Arc::new(UInt64Array::from(self.bytes_in.clone())),
            Arc::new(UInt64Array::from(self.bytes_out.clone())),
            Arc::new(latency.finish()),
            Arc::new(Int32Array::from(self.status.clone())),
            Arc::new(device.finish()),
            Arc::new(os.finish()),
            Arc::new(country.finish()),
        ];
        arrow_array::RecordBatch::try_new(personaflow_io::schema::event_schema(), columns)
            .expect("the canonical columns match the schema")
    }
}

/// Appends `v` in decimal to `s` (what `write!(s, "{v}")` does, without the formatting
/// machinery).
fn push_decimal(s: &mut String, mut v: u32) {
    let mut digits = [0u8; 10];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    s.push_str(std::str::from_utf8(&digits[i..]).expect("ASCII digits"));
}

/// The events of window `window` whose features are `x` (at least the base features; see the
/// module's documentation for how each is inverted). `rng` places the span in the window.
pub fn expand_window(
    x: &[f32],
    window: u64,
    spec: &WindowSpec,
    who: &Persona<'_>,
    names: &Names,
    rng: &mut impl Rng,
) -> Vec<Event> {
    let mut out = WindowEvents::default();
    expand_window_into(x, window, spec, 0, rng, &mut out);
    (0..out.len()).map(|i| out.event(i, who, names)).collect()
}

/// [`expand_window`] into columns: appends the events of user `user` to `out`.
pub fn expand_window_into(
    x: &[f32],
    window: u64,
    spec: &WindowSpec,
    user: u32,
    rng: &mut impl Rng,
    out: &mut WindowEvents,
) {
    let n = (expm1_pos(x[0]).round() as u64).min(MAX_EVENTS_PER_WINDOW);
    if n == 0 {
        return;
    }
    let len_ms = spec.len_ms();
    let secs = spec.len_secs();
    // Times: n events evenly over the span, the span placed at random in the window.
    let span = ((f64::from(x[7]).clamp(0.0, 1.0) * len_ms as f64).round() as i64).min(len_ms - 1);
    let span = if n == 1 { 0 } else { span };
    let offset = rng.random_range(0..=(len_ms - 1 - span));
    let start = spec.start_ms(window) + offset;
    let time = |i: u64| {
        if n == 1 {
            start
        } else {
            start + (span as f64 * i as f64 / (n - 1) as f64).round() as i64
        }
    };
    // Bytes: window totals, split evenly (the remainder to the first events).
    let total_in = (expm1_pos(x[2]) * secs).round() as u64;
    let total_out = (expm1_pos(x[3]) * secs).round() as u64;
    let share = |total: u64, i: u64| total / n + u64::from(i < total % n);
    // Latency: microseconds, one event at the maximum, the rest at what gives the mean.
    let has_latency = x[4] > 0.0 || x[5] > 0.0;
    let max_us = (expm1_pos(x[5]) * 1000.0).round();
    let mean_us = (expm1_pos(x[4]) * 1000.0).round().min(max_us);
    let rest_us = if n > 1 {
        ((mean_us * n as f64 - max_us) / (n - 1) as f64).clamp(0.0, max_us)
    } else {
        max_us
    };
    let errors = ((f64::from(x[6]).clamp(0.0, 1.0) * n as f64).round() as u64).min(n);
    let sessions = (expm1_pos(x[9]).round() as u64).clamp(1, n);
    let actions = apportion(&x[ACTION_MIX_START..ACTION_MIX_START + MIX_BUCKETS], n);
    let categories = apportion(&x[CATEGORY_MIX_START..CATEGORY_MIX_START + MIX_BUCKETS], n);
    let buckets = |counts: &[u64], into: &mut Vec<u8>| {
        for (b, c) in counts.iter().enumerate() {
            into.extend(std::iter::repeat_n(b as u8, *c as usize));
        }
    };
    buckets(&actions, &mut out.action);
    buckets(&categories, &mut out.category);
    for i in 0..n {
        out.ts.push(time(i));
        out.user.push(user);
        out.session.push((i % sessions) as u32);
        out.bytes_in.push(share(total_in, i));
        out.bytes_out.push(share(total_out, i));
        let us = if i == 0 { max_us } else { rest_us };
        out.latency_ms
            .push(if has_latency { us / 1000.0 } else { f64::NAN });
        out.status.push(if i < errors {
            ERROR_STATUS_CODE
        } else {
            OK_STATUS_CODE
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use personaflow_operators::window::features::{
        window_features, WindowAgg, FEATURES, NUM_BASE_FEATURES, NUM_FEATURES,
    };
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// A random window of real-looking events (the kind of window the decoder was trained
    /// on), as its aggregate.
    fn random_window(rng: &mut ChaCha8Rng, window: u64, spec: &WindowSpec) -> WindowAgg {
        let n = rng.random_range(1..200u64);
        let actions = bucket_names("a");
        let categories = bucket_names("c");
        let sessions = rng.random_range(1..=n.min(10));
        let with_latency = rng.random_bool(0.8);
        let mut agg = WindowAgg::empty();
        for i in 0..n {
            let mut e = Event::new(
                spec.start_ms(window) + rng.random_range(0..spec.len_ms()),
                "u",
                actions[rng.random_range(0..3usize) * 2].clone(),
            );
            e.category = Some(categories[rng.random_range(0..4usize)].clone());
            e.bytes_in = Some(rng.random_range(0..200_000));
            e.bytes_out = Some(rng.random_range(0..5_000));
            e.latency_ms = with_latency.then(|| rng.random_range(1.0..900.0));
            e.status = Some(if rng.random_bool(0.1) { 503 } else { 200 });
            e.session_id = Some(format!("s{}", i % sessions));
            agg.add(&e);
        }
        agg
    }

    /// What re-aggregation must reproduce, feature by feature: (index, absolute tolerance).
    /// Counts and shares of whole counts come back exactly (to f32 rounding); bytes to the
    /// byte per window; latency to the microsecond; the span to a millisecond, and the mean
    /// gap with it.
    fn tolerance(i: usize, spec: &WindowSpec) -> f32 {
        match FEATURES[i].name {
            "bytes_in_rate" | "bytes_out_rate" | "bytes_per_event" => 1e-3,
            "latency_mean" | "latency_max" => 2e-3,
            "session_span" => 2.0 / spec.len_ms() as f32,
            "mean_gap" => 2e-3,
            _ => 1e-5,
        }
    }

    #[test]
    fn re_aggregated_events_reproduce_the_features_of_every_window() {
        let spec = WindowSpec::default();
        let names = Names::new();
        let who = Persona {
            user: "synthetic-1",
            device: Some("mobile"),
            ..Persona::default()
        };
        let mut rng = ChaCha8Rng::seed_from_u64(17);
        for window in 1_000..1_400u64 {
            let agg = random_window(&mut rng, window, &spec);
            let mut x = [0f32; NUM_FEATURES];
            x[..NUM_BASE_FEATURES].copy_from_slice(&window_features(&agg, window, &spec));
            let events = expand_window(&x, window, &spec, &who, &names, &mut rng);
            let mut back = WindowAgg::empty();
            for e in &events {
                assert_eq!(spec.index(e.ts_ms), Some(window), "inside the window");
                back.add(e);
            }
            let y = window_features(&back, window, &spec);
            for i in 0..NUM_BASE_FEATURES {
                assert!(
                    (x[i] - y[i]).abs() <= tolerance(i, &spec),
                    "window {window}: {} was {} and came back {}",
                    FEATURES[i].name,
                    x[i],
                    y[i]
                );
            }
        }
    }

    /// Random events in `parts` parts, their times within `span` ms of `base` (many ties).
    fn random_parts(rng: &mut ChaCha8Rng, parts: usize, base: i64, span: i64) -> Vec<WindowEvents> {
        (0..parts)
            .map(|_| {
                let mut p = WindowEvents::default();
                for _ in 0..rng.random_range(0..300) {
                    p.ts.push(base + rng.random_range(0..span));
                    p.user.push(rng.random());
                    p.session.push(rng.random());
                    p.action.push(rng.random());
                    p.category.push(rng.random());
                    p.bytes_in.push(rng.random());
                    p.bytes_out.push(rng.random());
                    p.latency_ms.push(rng.random());
                    p.status.push(rng.random());
                }
                p
            })
            .collect()
    }

    #[test]
    fn merged_by_time_is_concatenating_then_sorting() {
        let mut rng = ChaCha8Rng::seed_from_u64(23);
        // Narrow spans take the counting sort, wide ones the comparison sort; ties abound.
        for (case, span) in [1, 50, 60_000, 10_000_000, i64::MAX / 4]
            .into_iter()
            .cycle()
            .take(60)
            .enumerate()
        {
            let parts = random_parts(&mut rng, case % 4, -7_000 + case as i64, span);
            let mut joined = WindowEvents::default();
            parts.iter().for_each(|p| joined.extend(p));
            let want = joined.sorted_by_time();
            assert_eq!(
                WindowEvents::merged_by_time(&parts),
                want,
                "case {case}, span {span}"
            );
            assert!(want.ts.is_sorted());
        }
        assert!(WindowEvents::merged_by_time(&[]).is_empty());
    }

    #[test]
    fn implausible_decoded_values_are_clamped_not_trusted() {
        let spec = WindowSpec::default();
        let mut x = [0f32; NUM_FEATURES];
        x[0] = 40.0; // e^40 events
        x[6] = 3.0; // an error rate over 1
        x[7] = -1.0; // a negative span
        x[9] = 50.0; // more sessions than events
        x[11] = f32::NAN;
        x[4] = 9.0; // a mean latency over the max
        x[5] = 2.0;
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let events = expand_window(&x, 0, &spec, &Persona::default(), &Names::new(), &mut rng);
        assert_eq!(events.len() as u64, MAX_EVENTS_PER_WINDOW);
        assert!(events.iter().all(|e| e.status == Some(ERROR_STATUS_CODE)));
        assert!(events.iter().all(|e| e.ts_ms == events[0].ts_ms));
        let max = events
            .iter()
            .filter_map(|e| e.latency_ms)
            .fold(0.0, f64::max);
        assert!(events.iter().all(|e| e.latency_ms.unwrap() <= max));
        // Nothing below zero events.
        x[0] = -3.0;
        assert!(
            expand_window(&x, 0, &spec, &Persona::default(), &Names::new(), &mut rng).is_empty()
        );
    }

    /// The columns made directly are the ones the events, as `Event`s, make: every window of
    /// a seeded run, several users, one of them without a segment or context.
    #[test]
    fn the_columns_are_the_events_columns() {
        let spec = WindowSpec::default();
        let names = Names::new();
        let people = [
            Persona {
                user: "syn1",
                device: Some("tv"),
                os: Some("tizen"),
                country: Some("KR"),
                segment: Some("video_streamer"),
            },
            Persona {
                user: "syn22",
                ..Persona::default()
            },
        ];
        let mut rng = ChaCha8Rng::seed_from_u64(23);
        let mut cols = WindowEvents::default();
        for window in 100..160u64 {
            let agg = random_window(&mut rng, window, &spec);
            let mut x = [0f32; NUM_FEATURES];
            x[..NUM_BASE_FEATURES].copy_from_slice(&window_features(&agg, window, &spec));
            if window % 7 == 0 {
                x[4] = 0.0; // no latency
                x[5] = 0.0;
            }
            expand_window_into(&x, window, &spec, (window % 2) as u32, &mut rng, &mut cols);
        }
        let cols = cols.sorted_by_time();
        assert!(cols.ts.windows(2).all(|w| w[0] <= w[1]));
        let events: Vec<Event> = (0..cols.len())
            .map(|i| cols.event(i, &people[cols.user[i] as usize], &names))
            .collect();
        assert!(events.iter().any(|e| e.latency_ms.is_none()));
        let want = personaflow_io::schema::events_to_batch(&events);
        let got = cols.to_batch(|u| people[u as usize], &names);
        assert_eq!(got, want);
    }

    #[test]
    fn a_persona_table_gives_back_each_persona_it_was_made_of() {
        let mut rng = ChaCha8Rng::seed_from_u64(29);
        let pick = |rng: &mut ChaCha8Rng, of: &'static [&'static str]| -> Option<&'static str> {
            let i = rng.random_range(0..=of.len());
            of.get(i).copied()
        };
        let ids: Vec<String> = (0..2_000)
            .map(|i| format!("syn{}", i * 7 % 1_000 + rng.random_range(0..3)))
            .collect();
        let people: Vec<Persona<'_>> = ids
            .iter()
            .map(|id| Persona {
                user: id,
                device: pick(&mut rng, &["pc", "phone", ""]),
                os: pick(&mut rng, &["linux", "pc"]),
                country: pick(&mut rng, &["US", "DE", "FR"]),
                segment: pick(&mut rng, &["gamers", "US"]),
            })
            .collect();
        let table = PersonaTable::new(people.iter().copied());
        assert_eq!(table.len(), people.len());
        for (u, p) in people.iter().enumerate() {
            assert_eq!(table.get(u as u32), *p, "user {u}");
        }
        assert!(PersonaTable::new([]).is_empty());
    }

    #[test]
    fn apportion_is_largest_remainder_recomputed_from_scratch() {
        // The rule as stated: floors, then one more to each of the largest remainders in
        // turn (ties to the lower bucket), by a full sort.
        fn oracle(shares: &[f32], total: u64) -> Vec<u64> {
            let clean: Vec<f64> = shares
                .iter()
                .map(|s| {
                    if s.is_finite() {
                        f64::from(*s).max(0.0)
                    } else {
                        0.0
                    }
                })
                .collect();
            let sum: f64 = clean.iter().sum();
            let mut out = vec![0u64; shares.len()];
            if sum <= 0.0 {
                if !out.is_empty() {
                    out[0] = total;
                }
                return out;
            }
            let exact: Vec<f64> = clean.iter().map(|s| s / sum * total as f64).collect();
            for (o, e) in out.iter_mut().zip(&exact) {
                *o = e.floor() as u64;
            }
            let mut left = total.saturating_sub(out.iter().sum());
            let mut order: Vec<usize> = (0..exact.len()).collect();
            order.sort_by(|a, b| {
                let (ra, rb) = (exact[*a] - exact[*a].floor(), exact[*b] - exact[*b].floor());
                rb.total_cmp(&ra).then(a.cmp(b))
            });
            for i in order {
                if left == 0 {
                    break;
                }
                out[i] += 1;
                left -= 1;
            }
            out
        }
        let mut rng = ChaCha8Rng::seed_from_u64(31);
        for case in 0..5_000 {
            let len = rng.random_range(0..20);
            let shares: Vec<f32> = (0..len)
                .map(|_| match rng.random_range(0..10) {
                    0 => 0.0,
                    1 => -1.0,
                    2 => f32::NAN,
                    3 => 0.25, // ties
                    _ => rng.random::<f32>(),
                })
                .collect();
            let total = rng.random_range(0..200);
            let got = apportion(&shares, total);
            assert_eq!(
                got,
                oracle(&shares, total),
                "case {case}: {shares:?} {total}"
            );
            if !shares.is_empty() {
                assert_eq!(got.iter().sum::<u64>(), total, "case {case}");
            }
        }
    }

    #[test]
    fn decimals_are_written_as_format_writes_them() {
        for v in [0, 7, 10, 99, 100, 65_535, 1_000_000, u32::MAX] {
            let mut s = String::from("u-s");
            push_decimal(&mut s, v);
            assert_eq!(s, format!("u-s{v}"));
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_events() {
        let spec = WindowSpec::default();
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let agg = random_window(&mut rng, 3, &spec);
        let mut x = [0f32; NUM_FEATURES];
        x[..NUM_BASE_FEATURES].copy_from_slice(&window_features(&agg, 3, &spec));
        let run = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            expand_window(&x, 3, &spec, &Persona::default(), &Names::new(), &mut rng)
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }
}
