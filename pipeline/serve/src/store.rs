//! The persona store: each user's latest records, and the last few windows of them, kept in
//! memory and answered without touching a file.
//!
//! The store is fed the same record batches the sinks write ([`PersonaStore::apply`]): by the
//! continuous job as each window is emitted, or from a backfill's Parquet files at start
//! ([`PersonaStore::load_outputs`]). Each user-window's rows of each user table are kept as
//! their JSON (rendered once, when they arrive), so a lookup is a hash, a read lock and a
//! concatenation. Applying the same batch twice (a restarted job replaying windows) changes
//! nothing: a user's rows of a table and window replace what was there.
//!
//! ```
//! use personaflow_io::tables::{PolicyRow, ResonanceRow, TableRow, Table};
//! use personaflow_serve::store::{PersonaStore, StoreConfig};
//! let store = PersonaStore::new(StoreConfig::default());
//! let row = |segment: &str, p: f32, top: bool| ResonanceRow {
//!     window_end: 60_000, user_id: "u1".into(), segment: segment.into(),
//!     cosine: 0.5, probability: p, resonating: top, top, cold_start: false,
//! };
//! let batch = ResonanceRow::to_batch(&[row("gamer", 0.8, true), row("video", 0.2, false)]);
//! store.apply(Table::Resonance, &batch).unwrap();
//! let user: serde_json::Value = serde_json::from_str(&store.user("u1").unwrap()).unwrap();
//! assert_eq!(user["resonance"]["top_segment"], "gamer");
//! assert_eq!(user["resonance"]["segments"].as_array().unwrap().len(), 2);
//! assert!(store.user("u2").is_none());
//! ```

use crate::timeline::{Timeline, TimelineSeries, DEFAULT_TIMELINE_WINDOWS, TIMELINE_TABLES};
use crate::{Error, Result};
use arrow_array::cast::AsArray;
use arrow_array::types::{TimestampMillisecondType, UInt32Type};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use personaflow_io::tables::read::{for_each_batch, parquet_files};
use personaflow_io::tables::Table;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::RwLock;

/// Windows of each user kept for `history` by default.
pub const DEFAULT_HISTORY_WINDOWS: usize = 4;
/// Lock shards of the user map by default (more shards, less contention between lookups and
/// the job's updates).
pub const DEFAULT_SHARDS: usize = 64;
/// Drift and scaling events kept by default (the oldest go first).
pub const DEFAULT_MAX_EVENTS: usize = 100_000;

/// The tables a user's view is made of, and the names of their parts in it.
pub const USER_TABLES: [(Table, &str); 6] = [
    (Table::Profiles, "profile"),
    (Table::Resonance, "resonance"),
    (Table::PersonaAssignments, "persona"),
    (Table::Policies, "policy"),
    (Table::SocketProfiles, "socket_profile"),
    (Table::Forecasts, "forecast"),
];

/// Every table the store reads: the user tables, the store-wide ones, and forecast errors
/// (for the dashboard's sums only).
pub const STORE_TABLES: [Table; 11] = [
    Table::Profiles,
    Table::Resonance,
    Table::PersonaAssignments,
    Table::Policies,
    Table::SocketProfiles,
    Table::Forecasts,
    Table::SegmentProfiles,
    Table::Personas,
    Table::Drift,
    Table::Scaling,
    Table::ForecastErrors,
];

/// The columns of `table` the store reads: all but of forecast errors, of which only what
/// the dashboard's sums need.
fn store_columns(table: Table) -> Vec<String> {
    match table {
        Table::ForecastErrors => ["window_end", "forecaster", "abs_error_requests"]
            .map(String::from)
            .to_vec(),
        _ => table
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect(),
    }
}

/// The store's options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    /// Windows kept per user (at least 1: the latest).
    pub history_windows: usize,
    /// Lock shards.
    pub shards: usize,
    /// Drift and scaling events kept.
    pub max_events: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            history_windows: DEFAULT_HISTORY_WINDOWS,
            shards: DEFAULT_SHARDS,
            max_events: DEFAULT_MAX_EVENTS,
        }
    }
}

/// One user's rows of one window: a JSON fragment per user table (`None`: none came).
#[derive(Debug)]
struct WindowParts {
    window_end: i64,
    parts: [Option<Box<str>>; USER_TABLES.len()],
}

/// One user's last windows, oldest first.
#[derive(Debug, Default)]
struct UserEntry {
    windows: VecDeque<WindowParts>,
}

impl UserEntry {
    /// Sets `part` of `window_end`, keeping at most `keep` windows.
    fn set(&mut self, window_end: i64, part: usize, json: Box<str>, keep: usize) {
        let at = self.windows.partition_point(|w| w.window_end < window_end);
        match self.windows.get_mut(at) {
            Some(w) if w.window_end == window_end => w.parts[part] = Some(json),
            _ => {
                if self.windows.len() >= keep && at == 0 {
                    return; // older than every window kept
                }
                let mut w = WindowParts {
                    window_end,
                    parts: Default::default(),
                };
                w.parts[part] = Some(json);
                self.windows.insert(at, w);
                while self.windows.len() > keep {
                    self.windows.pop_front();
                }
            }
        }
    }

    /// The latest fragment of each part and the latest window with any.
    fn latest(&self) -> (i64, [Option<&str>; USER_TABLES.len()]) {
        let mut out: [Option<&str>; USER_TABLES.len()] = Default::default();
        for w in self.windows.iter().rev() {
            for (o, p) in out.iter_mut().zip(&w.parts) {
                if o.is_none() {
                    *o = p.as_deref();
                }
            }
        }
        (self.windows.back().map_or(0, |w| w.window_end), out)
    }
}

/// Store-wide tables: segments, personas, drift and scaling.
#[derive(Debug, Default)]
struct Global {
    /// Segment -> (window end, row) of its latest profile.
    segments: BTreeMap<String, (i64, Box<str>)>,
    /// The latest window's personas, by id.
    personas: (i64, BTreeMap<u32, Box<str>>),
    /// (window end, scope, scope id) -> row.
    drift: BTreeMap<(i64, String, String), Box<str>>,
    /// (window end, scope, scope id) -> row.
    scaling: BTreeMap<(i64, String, String), Box<str>>,
}

/// The persona store. Shared between the job (writer) and the server (readers).
#[derive(Debug)]
pub struct PersonaStore {
    config: StoreConfig,
    shards: Vec<RwLock<HashMap<Box<str>, UserEntry>>>,
    global: RwLock<Global>,
    timeline: RwLock<Timeline>,
    latest_window: AtomicI64,
    rows: AtomicU64,
}

/// FNV-1a of a user id: the shard (stable across runs, unlike the std hasher's seed).
#[derive(Default)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h = (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
        self.0 = h;
    }
}

#[derive(Default)]
struct BuildFnv;

impl BuildHasher for BuildFnv {
    type Hasher = Fnv;
    fn build_hasher(&self) -> Fnv {
        Fnv::default()
    }
}

/// A store-wide list: its rows' JSON fragments, oldest first.
pub type Rows = Vec<Box<str>>;

impl PersonaStore {
    /// An empty store.
    pub fn new(config: StoreConfig) -> Self {
        let config = StoreConfig {
            history_windows: config.history_windows.max(1),
            shards: config.shards.max(1),
            max_events: config.max_events.max(1),
        };
        PersonaStore {
            shards: (0..config.shards)
                .map(|_| RwLock::new(HashMap::new()))
                .collect(),
            config,
            global: RwLock::new(Global::default()),
            timeline: RwLock::new(Timeline::new(DEFAULT_TIMELINE_WINDOWS)),
            latest_window: AtomicI64::new(i64::MIN),
            rows: AtomicU64::new(0),
        }
    }

    /// The store's options.
    pub fn config(&self) -> StoreConfig {
        self.config
    }

    fn shard(&self, user: &str) -> usize {
        (BuildFnv.hash_one(user) % self.shards.len() as u64) as usize
    }

    /// Users stored.
    pub fn users(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().expect("not poisoned").len())
            .sum()
    }

    /// Some user the store holds (the first of the first non-empty shard), if any.
    pub fn any_user(&self) -> Option<String> {
        self.shards.iter().find_map(|s| {
            s.read()
                .expect("not poisoned")
                .keys()
                .next()
                .map(|k| k.to_string())
        })
    }

    /// Rows applied so far.
    pub fn rows_applied(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }

    /// The latest window end seen in any table (ms), if any.
    pub fn latest_window_end(&self) -> Option<i64> {
        let w = self.latest_window.load(Ordering::Relaxed);
        (w != i64::MIN).then_some(w)
    }

    /// Applies a batch of `table`'s rows (as its sink writes them). Tables the store does not
    /// keep (features, shaping feedback, rejects) are ignored; of forecast errors, only the
    /// dashboard's sums are kept.
    pub fn apply(&self, table: Table, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 || !STORE_TABLES.contains(&table) {
            return Ok(());
        }
        let windows = timestamps(batch, "window_end")?;
        if let Some(max) = windows.iter().copied().max() {
            self.latest_window.fetch_max(max, Ordering::Relaxed);
        }
        self.rows
            .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        // The timeline's lock only for the tables it reads (the others would only contend
        // with the dashboard's readers).
        if TIMELINE_TABLES.contains(&table) {
            self.timeline
                .write()
                .expect("not poisoned")
                .apply(table, batch)?;
        }
        if let Some(part) = USER_TABLES.iter().position(|(t, _)| *t == table) {
            return self.apply_users(table, part, batch, &windows);
        }
        match table {
            Table::SegmentProfiles => {
                let segments = strings(batch, "segment")?;
                let json = rows_json(batch, &[])?;
                let mut g = self.global.write().expect("not poisoned");
                for ((segment, w), row) in segments.into_iter().zip(windows).zip(json) {
                    let e = g
                        .segments
                        .entry(segment)
                        .or_insert((i64::MIN, Box::from("")));
                    if w >= e.0 {
                        *e = (w, row);
                    }
                }
            }
            Table::Personas => {
                let ids = column(batch, "persona_id")?
                    .as_primitive_opt::<UInt32Type>()
                    .ok_or_else(|| Error::column("persona_id", "not u32"))?
                    .clone();
                let json = rows_json(batch, &[])?;
                let mut g = self.global.write().expect("not poisoned");
                for ((i, w), row) in windows.into_iter().enumerate().zip(json) {
                    if w > g.personas.0 {
                        g.personas = (w, BTreeMap::new());
                    }
                    if w == g.personas.0 {
                        g.personas.1.insert(ids.value(i), row);
                    }
                }
            }
            Table::Drift | Table::Scaling => {
                let scope = strings(batch, "scope")?;
                let scope_id = strings(batch, "scope_id")?;
                let json = rows_json(batch, &[])?;
                let mut g = self.global.write().expect("not poisoned");
                let max = self.config.max_events;
                let events = if table == Table::Drift {
                    &mut g.drift
                } else {
                    &mut g.scaling
                };
                for (((w, s), id), row) in windows.into_iter().zip(scope).zip(scope_id).zip(json) {
                    events.insert((w, s, id), row);
                }
                while events.len() > max {
                    events.pop_first();
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn apply_users(
        &self,
        table: Table,
        part: usize,
        batch: &RecordBatch,
        windows: &[i64],
    ) -> Result<()> {
        let users = column(batch, "user_id")?
            .as_string_opt::<i32>()
            .ok_or_else(|| Error::column("user_id", "not a string"))?;
        // The fragments leave out what the view says once: the user and the window.
        let json = rows_json(batch, &["user_id", "window_end"])?;
        // (user, window) -> its rows, in batch order.
        let mut groups: HashMap<(&str, i64), Vec<usize>> = HashMap::new();
        let mut order = Vec::new();
        for (i, w) in windows.iter().enumerate() {
            let key = (users.value(i), *w);
            groups
                .entry(key)
                .or_insert_with(|| {
                    order.push(key);
                    Vec::new()
                })
                .push(i);
        }
        let top = if table == Table::Resonance {
            Some(
                column(batch, "top")?
                    .as_boolean_opt()
                    .ok_or_else(|| Error::column("top", "not a boolean"))?
                    .clone(),
            )
        } else {
            None
        };
        // Borrowed from the batch: only the top segment's name is copied.
        let segments = if table == Table::Resonance {
            Some(
                column(batch, "segment")?
                    .as_string_opt::<i32>()
                    .ok_or_else(|| Error::column("segment", "not a string"))?,
            )
        } else {
            None
        };
        let mut by_shard: Vec<Vec<(&str, i64, Box<str>)>> =
            (0..self.shards.len()).map(|_| Vec::new()).collect();
        for key in order {
            let rows = &groups[&key];
            let fragment: String = match table {
                Table::Resonance => {
                    let top_segment = rows
                        .iter()
                        .find(|&&i| top.as_ref().is_some_and(|t| t.value(i)))
                        .and_then(|&i| segments.map(|s| s.value(i)));
                    format!(
                        "{{\"top_segment\":{},\"segments\":[{}]}}",
                        serde_json::to_string(&top_segment).expect("a string"),
                        join(rows.iter().map(|&i| &*json[i]))
                    )
                }
                Table::Forecasts => format!("[{}]", join(rows.iter().map(|&i| &*json[i]))),
                _ => json[*rows.last().expect("a row")].to_string(),
            };
            by_shard[self.shard(key.0)].push((key.0, key.1, fragment.into_boxed_str()));
        }
        let keep = self.config.history_windows;
        for (shard, updates) in self.shards.iter().zip(by_shard) {
            if updates.is_empty() {
                continue;
            }
            let mut map = shard.write().expect("not poisoned");
            for (user, w, fragment) in updates {
                match map.get_mut(user) {
                    Some(e) => e.set(w, part, fragment, keep),
                    None => {
                        let mut e = UserEntry::default();
                        e.set(w, part, fragment, keep);
                        map.insert(Box::from(user), e);
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether the store holds `user`.
    pub fn contains(&self, user: &str) -> bool {
        self.shards[self.shard(user)]
            .read()
            .expect("not poisoned")
            .contains_key(user)
    }

    /// The user's latest view as JSON: `user_id`, `window_end` (ms, the latest window with any
    /// record), and the latest record of each part of [`USER_TABLES`] (`null` when none):
    /// `profile`, `resonance` (`top_segment` and `segments`), `persona`, `policy`,
    /// `socket_profile` and `forecast` (one entry per horizon).
    pub fn user(&self, user: &str) -> Option<String> {
        let map = self.shards[self.shard(user)].read().expect("not poisoned");
        let e = map.get(user)?;
        let (w, parts) = e.latest();
        Some(view(user, w, &parts))
    }

    /// The user's windows with `from <= window_end <= to` (ms), oldest first, each a view as
    /// [`user`](Self::user) gives but of that window's records only; `None` for an unknown
    /// user. Only the last `history_windows` windows are kept.
    pub fn history(&self, user: &str, from: i64, to: i64) -> Option<Vec<String>> {
        let map = self.shards[self.shard(user)].read().expect("not poisoned");
        let e = map.get(user)?;
        Some(
            e.windows
                .iter()
                .filter(|w| (from..=to).contains(&w.window_end))
                .map(|w| {
                    let parts: Vec<Option<&str>> = w.parts.iter().map(|p| p.as_deref()).collect();
                    view(user, w.window_end, &parts)
                })
                .collect(),
        )
    }

    /// The latest profile of each segment.
    pub fn segments(&self) -> Rows {
        let g = self.global.read().expect("not poisoned");
        g.segments.values().map(|(_, r)| r.clone()).collect()
    }

    /// The latest window's personas.
    pub fn personas(&self) -> Rows {
        let g = self.global.read().expect("not poisoned");
        g.personas.1.values().cloned().collect()
    }

    /// Drift events and scaling recommendations with `from <= window_end <= to`.
    pub fn drift(&self, from: i64, to: i64) -> (Rows, Rows) {
        let g = self.global.read().expect("not poisoned");
        let pick = |m: &BTreeMap<(i64, String, String), Box<str>>| {
            m.range((from, String::new(), String::new())..)
                .take_while(|((w, _, _), _)| *w <= to)
                .map(|(_, r)| r.clone())
                .collect()
        };
        (pick(&g.drift), pick(&g.scaling))
    }

    /// The dashboard's series, each cut into at most `points` points.
    pub fn timeline(&self, points: usize) -> TimelineSeries {
        self.timeline.read().expect("not poisoned").series(points)
    }

    /// Loads a run's outputs: every table the store keeps, file by file. A table whose files
    /// lack a column the store needs (an output of an older version) is skipped whole, and
    /// said so in the warnings returned; any other error fails the load.
    pub fn load_outputs(
        &self,
        dir: &Path,
        mut progress: impl FnMut(Table, u64),
    ) -> Result<Vec<String>> {
        let mut warnings = Vec::new();
        for table in STORE_TABLES {
            let tdir = dir.join(table.name());
            if !tdir.is_dir() {
                continue;
            }
            let columns = store_columns(table);
            let names: Vec<&str> = columns.iter().map(String::as_str).collect();
            let files = parquet_files(&tdir)?;
            if let Some(w) = missing_columns(&files, &names)? {
                warnings.push(format!("{}: not loaded: {w}", table.name()));
                continue;
            }
            let mut rows = 0u64;
            for path in files {
                let mut failed = None;
                for_each_batch(&path, &names, |b| {
                    if failed.is_none() {
                        rows += b.num_rows() as u64;
                        if let Err(e) = self.apply(table, b) {
                            failed = Some(e);
                        }
                    }
                })?;
                if let Some(e) = failed {
                    return Err(Error::Load {
                        path: path.clone(),
                        reason: e.to_string(),
                    });
                }
            }
            // A restarted job replays windows loaded here: the dashboard's sums are complete.
            self.timeline.write().expect("not poisoned").seal(table);
            progress(table, rows);
        }
        Ok(warnings)
    }
}

/// The first of `files` that lacks one of `columns`, said as "FILE has no column C", read
/// from the files' footers only.
fn missing_columns(files: &[std::path::PathBuf], columns: &[&str]) -> Result<Option<String>> {
    for path in files {
        let file = std::fs::File::open(path).map_err(|e| personaflow_io::Error::io(path, e))?;
        let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| personaflow_io::Error::parquet(path, e))?;
        let schema = builder.schema();
        if let Some(c) = columns.iter().find(|c| schema.field_with_name(c).is_err()) {
            return Ok(Some(format!(
                "{} has no column {c} (written by an older version?)",
                path.display()
            )));
        }
    }
    Ok(None)
}

/// The continuous job shows the store every window it emits (`run --serve`).
impl personaflow_io::writer::WindowObserver for PersonaStore {
    fn window(
        &self,
        table: Table,
        _window: u64,
        batch: &RecordBatch,
    ) -> personaflow_io::Result<()> {
        self.apply(table, batch)
            .map_err(|e| e.into_sink(table.name().to_string()))
    }
}

fn join<'a>(parts: impl Iterator<Item = &'a str>) -> String {
    let mut s = String::new();
    for (i, p) in parts.enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(p);
    }
    s
}

/// A user's view from its parts' fragments.
fn view(user: &str, window_end: i64, parts: &[Option<&str>]) -> String {
    let mut s = String::with_capacity(64 + parts.iter().flatten().map(|p| p.len()).sum::<usize>());
    s.push_str("{\"user_id\":");
    s.push_str(&serde_json::to_string(user).expect("a string"));
    s.push_str(",\"window_end\":");
    s.push_str(&window_end.to_string());
    for ((_, name), part) in USER_TABLES.iter().zip(parts) {
        s.push_str(",\"");
        s.push_str(name);
        s.push_str("\":");
        s.push_str(part.unwrap_or("null"));
    }
    s.push('}');
    s
}

pub(crate) fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a dyn Array> {
    batch
        .column_by_name(name)
        .map(|c| c.as_ref())
        .ok_or_else(|| Error::column(name, "missing"))
}

pub(crate) fn timestamps(batch: &RecordBatch, name: &str) -> Result<Vec<i64>> {
    let c = column(batch, name)?
        .as_primitive_opt::<TimestampMillisecondType>()
        .ok_or_else(|| Error::column(name, "not a millisecond timestamp"))?;
    Ok(c.values().to_vec())
}

fn strings(batch: &RecordBatch, name: &str) -> Result<Vec<String>> {
    let c = column(batch, name)?
        .as_string_opt::<i32>()
        .ok_or_else(|| Error::column(name, "not a string"))?;
    Ok((0..c.len()).map(|i| c.value(i).to_string()).collect())
}

/// Each row of `batch`, without the columns `leave_out`, as a JSON object (nulls explicit;
/// timestamps as epoch milliseconds, like the views' `window_end`).
pub fn rows_json(batch: &RecordBatch, leave_out: &[&str]) -> Result<Vec<Box<str>>> {
    let schema = batch.schema();
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        if leave_out.contains(&field.name().as_str()) {
            continue;
        }
        if matches!(field.data_type(), DataType::Timestamp(..)) {
            columns.push(arrow_cast::cast(column, &DataType::Int64).map_err(Error::Json)?);
            fields.push(Field::new(
                field.name(),
                DataType::Int64,
                field.is_nullable(),
            ));
        } else {
            columns.push(column.clone());
            fields.push(field.as_ref().clone());
        }
    }
    let projected = RecordBatch::try_new(std::sync::Arc::new(Schema::new(fields)), columns)
        .map_err(Error::Json)?;
    let mut buf = Vec::with_capacity(projected.num_rows() * 256);
    {
        let mut w = arrow_json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, arrow_json::writer::LineDelimited>(&mut buf);
        w.write(&projected).map_err(Error::Json)?;
        w.finish().map_err(Error::Json)?;
    }
    let text = String::from_utf8(buf).map_err(|e| Error::column("*", &e.to_string()))?;
    Ok(text.lines().map(Box::from).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use personaflow_io::tables::{PolicyRow, ProfileRow, TableRow};

    fn profile(user: &str, w: i64, score: f32) -> ProfileRow {
        ProfileRow {
            window_end: w,
            user_id: user.into(),
            embedder: "e".into(),
            embedding: vec![0.5, -0.5],
            anomaly_score: Some(score),
            history_windows: 1,
            events: 3,
            authenticated: true,
            segment: None,
            device: None,
            os: None,
            country: None,
        }
    }

    fn value(s: &str) -> serde_json::Value {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn the_latest_window_wins_whatever_the_order_and_replays_change_nothing() {
        let store = PersonaStore::new(StoreConfig {
            history_windows: 2,
            ..StoreConfig::default()
        });
        let b = |w: i64, s: f32| ProfileRow::to_batch(&[profile("u", w, s)]);
        store.apply(Table::Profiles, &b(120_000, 0.2)).unwrap();
        store.apply(Table::Profiles, &b(60_000, 0.1)).unwrap();
        store.apply(Table::Profiles, &b(120_000, 0.2)).unwrap();
        let v = value(&store.user("u").unwrap());
        assert_eq!(v["window_end"], 120_000);
        assert!((v["profile"]["anomaly_score"].as_f64().unwrap() - 0.2).abs() < 1e-6);
        assert!(v["policy"].is_null());
        let h = store.history("u", 0, i64::MAX).unwrap();
        assert_eq!(h.len(), 2);
        // A third, newer window pushes the oldest out; an older one is not kept.
        store.apply(Table::Profiles, &b(180_000, 0.3)).unwrap();
        store.apply(Table::Profiles, &b(0, 0.0)).unwrap();
        let h: Vec<i64> = store
            .history("u", 0, i64::MAX)
            .unwrap()
            .iter()
            .map(|v| value(v)["window_end"].as_i64().unwrap())
            .collect();
        assert_eq!(h, vec![120_000, 180_000]);
        assert_eq!(store.users(), 1);
    }

    #[test]
    fn a_part_missing_in_the_latest_window_comes_from_the_one_before() {
        let store = PersonaStore::new(StoreConfig::default());
        let policy = PolicyRow {
            window_end: 60_000,
            user_id: "u".into(),
            persona: "gamer".into(),
            personas: vec!["gamer".into()],
            probabilities: vec![1.0],
            diffserv_class: "real-time-interactive".into(),
            dscp: 32,
            endpoint_class: "edge".into(),
            floor_bps: 1,
            guaranteed_bps: 2,
            ceiling_bps: 3,
            allocated_bps: 2,
            sized_for_bps: 2,
            burst_bytes: 1,
            priority_weight: 1.0,
            latency_target_ms: 50.0,
            rate_limit_rps: 1.0,
            request_limit_rps: 2.0,
            send_buffer_min: 1,
            send_buffer_max: 2,
            receive_buffer_min: 1,
            receive_buffer_max: 2,
            authentication: "password",
            inspection: "none",
            allowed_app_classes: vec!["gaming".into()],
            allowed_ports: vec!["443".into()],
            vpn_required: false,
            current_bytes: 0,
            current_requests: 0,
        };
        store
            .apply(Table::Policies, &PolicyRow::to_batch(&[policy]))
            .unwrap();
        store
            .apply(
                Table::Profiles,
                &ProfileRow::to_batch(&[profile("u", 120_000, 0.5)]),
            )
            .unwrap();
        let v = value(&store.user("u").unwrap());
        assert_eq!(v["window_end"], 120_000);
        assert_eq!(v["policy"]["persona"], "gamer");
        assert_eq!(v["policy"]["allowed_ports"][0], "443");
        assert!(
            v["policy"].get("user_id").is_none(),
            "said once, at the top"
        );
    }

    #[test]
    fn a_table_of_an_older_schema_is_skipped_whole_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let profiles = dir.path().join("profiles/date=2026-01-05");
        std::fs::create_dir_all(&profiles).unwrap();
        // A profiles file without `country`.
        let batch = ProfileRow::to_batch(&[profile("u", 60_000, 0.1)]);
        let old = batch
            .project(&(0..batch.num_columns() - 1).collect::<Vec<_>>())
            .unwrap();
        personaflow_io::atomic_file::write_parquet_atomically(
            &profiles.join("part-0.parquet"),
            &old,
            1024,
            false,
        )
        .unwrap();
        let store = PersonaStore::new(StoreConfig::default());
        let warnings = store.load_outputs(dir.path(), |_, _| {}).unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("no column country"), "{warnings:?}");
        assert_eq!(store.users(), 0);
    }

    #[test]
    fn user_ids_are_json_escaped() {
        let store = PersonaStore::new(StoreConfig::default());
        store
            .apply(
                Table::Profiles,
                &ProfileRow::to_batch(&[profile("a\"b\\c", 60_000, 0.1)]),
            )
            .unwrap();
        assert_eq!(value(&store.user("a\"b\\c").unwrap())["user_id"], "a\"b\\c");
    }
}
