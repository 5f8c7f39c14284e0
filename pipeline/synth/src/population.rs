//! The populations synthetic users are drawn from, read from a backfill's `profiles` (and
//! `persona_assignments` for a persona): each population's latent points (one per active
//! user-window, the encoder's latent mean) and the device, OS and country of its users.
//!
//! A user-window belongs to the segment its profile names (known for authenticated users
//! only: unauthenticated ones are the population `unknown` under `--mix observed`) and to the
//! persona it was assigned in that window.

use crate::{Error, Result};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, TimestampMillisecondType, UInt32Type};
use arrow_array::{Array, RecordBatch};
use personaflow_io::tables::read::{for_each_batch, parquet_files};
use personaflow_io::tables::Table;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

/// Latent points a population keeps at most for the fit (a seeded uniform sample of its
/// user-windows beyond that).
pub const MAX_FIT_POINTS: usize = 50_000;
/// The population of the user-windows without a known segment under `--mix observed`.
pub const UNKNOWN_SEGMENT: &str = "unknown";
/// The embedder whose latent space the decoder shares.
pub const LATENT_EMBEDDER_PREFIX: &str = "rnn-vae";

/// Which users to imitate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    /// The user-windows of one segment.
    Segment(String),
    /// The user-windows assigned to one persona.
    Persona(u32),
    /// Every user-window, one population per segment (and [`UNKNOWN_SEGMENT`]), each drawn
    /// in its observed share.
    Observed,
}

impl std::fmt::Display for Selection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Selection::Segment(s) => write!(f, "segment {s:?}"),
            Selection::Persona(p) => write!(f, "persona {p}"),
            Selection::Observed => write!(f, "any population"),
        }
    }
}

/// A device, OS and country.
pub type Context = (Option<String>, Option<String>, Option<String>);

/// One population.
#[derive(Clone, Debug, PartialEq)]
pub struct Population {
    /// Its name: the segment, `persona-<id>`, or [`UNKNOWN_SEGMENT`].
    pub name: String,
    /// The segment its users' events carry (authenticated users), if any.
    pub segment: Option<String>,
    /// User-windows seen (before any sampling for the fit).
    pub user_windows: u64,
    /// Latent points for the fit (at most [`MAX_FIT_POINTS`]).
    pub points: Vec<Vec<f32>>,
    /// The user-window (user, window end) of each point, when read from profiles (empty for
    /// points made otherwise).
    pub keys: Vec<(String, i64)>,
    /// Contexts and how many user-windows had each.
    pub contexts: BTreeMap<Context, u64>,
    /// Each of its users' share of the run's windows in which they were active (a user
    /// is active in few windows: synthetic users keep the real ones' pace).
    pub activity: Vec<f32>,
}

impl Population {
    /// A user's activity (share of windows with events), drawn from the population's users.
    pub fn draw_activity(&self, rng: &mut impl Rng) -> f32 {
        if self.activity.is_empty() {
            return 1.0;
        }
        self.activity[rng.random_range(0..self.activity.len())]
    }

    /// A context drawn in proportion to how often it was seen.
    pub fn draw_context(&self, rng: &mut impl Rng) -> Context {
        let total: u64 = self.contexts.values().sum();
        if total == 0 {
            return (None, None, None);
        }
        let mut u = rng.random_range(0..total);
        for (c, n) in &self.contexts {
            if u < *n {
                return c.clone();
            }
            u -= n;
        }
        unreachable!("u < total")
    }
}

/// Reads the populations of `selection` from the backfill output `dir`, whose run had
/// `run_windows` windows (for the users' activity), from the profiles of windows ending at or
/// before `until` (all: `i64::MAX`); `seed` picks the fit's sample of a large population.
/// Fails, naming what is missing, when the profiles are not the latent encoder's or the
/// selection matches nothing.
pub fn read_populations(
    dir: &Path,
    selection: &Selection,
    run_windows: u64,
    until: i64,
    seed: u64,
) -> Result<Vec<Population>> {
    let profiles = dir.join(Table::Profiles.name());
    let files = parquet_files(&profiles)?;
    if files.is_empty() {
        return Err(Error::Input(format!(
            "{}: no profiles (run a backfill first)",
            profiles.display()
        )));
    }
    let persona_windows = match selection {
        Selection::Persona(p) => Some(persona_user_windows(dir, *p)?),
        _ => None,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut pops: BTreeMap<String, Population> = BTreeMap::new();
    // (population, user) -> active windows.
    let mut active: HashMap<(String, String), u64> = HashMap::new();
    let columns = [
        "window_end",
        "user_id",
        "embedder",
        "embedding",
        "segment",
        "device",
        "os",
        "country",
    ];
    let mut failed = None;
    for path in &files {
        for_each_batch(path, &columns, |b| {
            if failed.is_none() {
                let persona_windows = persona_windows.as_ref();
                if let Err(e) = add_batch(
                    b,
                    (selection, until),
                    persona_windows,
                    &mut pops,
                    &mut active,
                    &mut rng,
                ) {
                    failed = Some(Error::Input(format!("{}: {e}", path.display())));
                }
            }
        })?;
        if let Some(e) = failed.take() {
            return Err(e);
        }
    }
    if pops.is_empty() {
        return Err(Error::Input(format!(
            "{}: no user-window of {selection} (before --profiles-until, if given)",
            profiles.display()
        )));
    }
    let mut active: Vec<((String, String), u64)> = active.into_iter().collect();
    active.sort();
    for ((pop, _), n) in active {
        if let Some(p) = pops.get_mut(&pop) {
            p.activity
                .push((n as f32 / run_windows.max(1) as f32).min(1.0));
        }
    }
    Ok(pops.into_values().collect())
}

/// (user, window end) of the user-windows assigned to `persona`.
pub(crate) fn persona_user_windows(dir: &Path, persona: u32) -> Result<HashSet<(String, i64)>> {
    let tdir = dir.join(Table::PersonaAssignments.name());
    let mut out = HashSet::new();
    for path in parquet_files(&tdir)? {
        for_each_batch(&path, &["window_end", "user_id", "persona_id"], |b| {
            let (Some(w), Some(u), Some(p)) = (
                b.column(0).as_primitive_opt::<TimestampMillisecondType>(),
                b.column(1).as_string_opt::<i32>(),
                b.column(2).as_primitive_opt::<UInt32Type>(),
            ) else {
                return;
            };
            for i in 0..b.num_rows() {
                if p.value(i) == persona {
                    out.insert((u.value(i).to_string(), w.value(i)));
                }
            }
        })?;
    }
    Ok(out)
}

fn opt(a: &arrow_array::StringArray, i: usize) -> Option<String> {
    a.is_valid(i).then(|| a.value(i).to_string())
}

fn add_batch(
    b: &RecordBatch,
    (selection, until): (&Selection, i64),
    persona_windows: Option<&HashSet<(String, i64)>>,
    pops: &mut BTreeMap<String, Population>,
    active: &mut HashMap<(String, String), u64>,
    rng: &mut ChaCha8Rng,
) -> std::result::Result<(), String> {
    let strings = |i: usize, name: &str| {
        b.column(i)
            .as_string_opt::<i32>()
            .ok_or_else(|| format!("column {name} is not a string"))
    };
    let windows = b
        .column(0)
        .as_primitive_opt::<TimestampMillisecondType>()
        .ok_or("column window_end is not a timestamp")?;
    let users = strings(1, "user_id")?;
    let embedders = strings(2, "embedder")?;
    let embeddings = b
        .column(3)
        .as_list_opt::<i32>()
        .ok_or("column embedding is not a list")?;
    let (segments, devices, oses, countries) = (
        strings(4, "segment")?,
        strings(5, "device")?,
        strings(6, "os")?,
        strings(7, "country")?,
    );
    for i in 0..b.num_rows() {
        if windows.value(i) > until {
            continue;
        }
        let embedder = embedders.value(i);
        if !embedder.starts_with(LATENT_EMBEDDER_PREFIX) {
            return Err(format!(
                "row {i}: embedder {embedder:?}; synthetic users need the profiles of the \
                 RNN-VAE encoder ({LATENT_EMBEDDER_PREFIX}-*), whose latent space the decoder shares"
            ));
        }
        let segment = opt(segments, i);
        let (name, carried) = match selection {
            Selection::Segment(s) => {
                if segment.as_deref() != Some(s.as_str()) {
                    continue;
                }
                (s.clone(), Some(s.clone()))
            }
            Selection::Persona(p) => {
                let key = (users.value(i).to_string(), windows.value(i));
                if !persona_windows.is_some_and(|w| w.contains(&key)) {
                    continue;
                }
                (format!("persona-{p}"), None)
            }
            Selection::Observed => match &segment {
                Some(s) => (s.clone(), Some(s.clone())),
                None => (UNKNOWN_SEGMENT.to_string(), None),
            },
        };
        let e = embeddings.value(i);
        let e = e
            .as_primitive_opt::<Float32Type>()
            .ok_or("column embedding is not a list of f32")?;
        let point: Vec<f32> = e.values().to_vec();
        if point.iter().any(|v| !v.is_finite()) {
            continue;
        }
        let pop = pops.entry(name.clone()).or_insert_with(|| Population {
            name,
            segment: carried,
            user_windows: 0,
            points: Vec::new(),
            keys: Vec::new(),
            contexts: BTreeMap::new(),
            activity: Vec::new(),
        });
        pop.user_windows += 1;
        *active
            .entry((pop.name.clone(), users.value(i).to_string()))
            .or_default() += 1;
        *pop.contexts
            .entry((opt(devices, i), opt(oses, i), opt(countries, i)))
            .or_default() += 1;
        // Reservoir sampling: a uniform sample of MAX_FIT_POINTS of the user-windows.
        let key = (users.value(i).to_string(), windows.value(i));
        if pop.points.len() < MAX_FIT_POINTS {
            pop.points.push(point);
            pop.keys.push(key);
        } else {
            let j = rng.random_range(0..pop.user_windows) as usize;
            if j < MAX_FIT_POINTS {
                pop.points[j] = point;
                pop.keys[j] = key;
            }
        }
    }
    Ok(())
}

/// A detected drift, as the shift along it needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct DriftShift {
    /// `segment` or `persona`.
    pub scope: String,
    /// The segment or persona id.
    pub scope_id: String,
    /// When it began (ms).
    pub onset_window_end: i64,
    /// When it was detected (ms).
    pub detected_window_end: i64,
    /// The scope's mean latent point over the baseline (the windows before the onset).
    pub baseline: Vec<f32>,
    /// The scope's mean latent point from the onset to the detection.
    pub current: Vec<f32>,
    /// User-windows in the baseline and in the current mean.
    pub points: (u64, u64),
}

impl DriftShift {
    /// `current - baseline`: the observed shift (K = 1).
    pub fn direction(&self) -> Vec<f32> {
        self.current
            .iter()
            .zip(&self.baseline)
            .map(|(c, b)| c - b)
            .collect()
    }
}

/// The drift `id` of the backfill output `dir` (`latest`; `SCOPE:ID` such as
/// `segment:gamer` or `persona:3` for that scope's latest drift; `SCOPE:ID@MS` for its drift
/// detected at the window ending at `MS`) and its direction in latent
/// space: the scope's mean latent point from the onset to the detection minus its mean over
/// the `baseline_ms` before the onset (the drift detector's baseline).
pub fn drift_shift(dir: &Path, id: &str, baseline_ms: i64) -> Result<DriftShift> {
    let tdir = dir.join(Table::Drift.name());
    let mut drifts: Vec<(i64, String, String, i64)> = Vec::new();
    for path in parquet_files(&tdir)? {
        for_each_batch(
            &path,
            &["window_end", "scope", "scope_id", "onset_window_end"],
            |b| {
                let (Some(w), Some(s), Some(i), Some(o)) = (
                    b.column(0).as_primitive_opt::<TimestampMillisecondType>(),
                    b.column(1).as_string_opt::<i32>(),
                    b.column(2).as_string_opt::<i32>(),
                    b.column(3).as_primitive_opt::<TimestampMillisecondType>(),
                ) else {
                    return;
                };
                for r in 0..b.num_rows() {
                    drifts.push((
                        w.value(r),
                        s.value(r).to_string(),
                        i.value(r).to_string(),
                        o.value(r),
                    ));
                }
            },
        )?;
    }
    drifts.sort();
    let picked = if id == "latest" {
        drifts.last()
    } else {
        let bad = || {
            Error::Input(format!(
                "drift {id:?}: expected `latest`, SCOPE:ID (e.g. segment:gamer, persona:3) or \
                 SCOPE:ID@DETECTED (the window end it was detected at, epoch ms)"
            ))
        };
        let (scoped, at) = match id.split_once('@') {
            Some((s, t)) => (s, Some(t.parse::<i64>().map_err(|_| bad())?)),
            None => (id, None),
        };
        let (scope, scope_id) = scoped.split_once(':').ok_or_else(bad)?;
        drifts
            .iter()
            .rev()
            .find(|d| d.1 == scope && d.2 == scope_id && at.is_none_or(|t| d.0 == t))
    };
    let Some((detected, scope, scope_id, onset)) = picked.cloned() else {
        let known: Vec<String> = drifts.iter().map(|d| format!("{}:{}", d.1, d.2)).collect();
        return Err(Error::Input(format!(
            "{}: no drift {id:?} (detected: {})",
            tdir.display(),
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )));
    };
    let persona_windows = match scope.as_str() {
        "persona" => Some(persona_user_windows(
            dir,
            scope_id
                .parse()
                .map_err(|_| Error::Input(format!("persona id {scope_id:?} is not a number")))?,
        )?),
        "segment" => None,
        other => return Err(Error::Input(format!("drift scope {other:?} is not known"))),
    };
    // Sums of the scope's latent points over the baseline and the current range.
    let mut sums: [(Vec<f64>, u64); 2] = [(Vec::new(), 0), (Vec::new(), 0)];
    for path in parquet_files(&dir.join(Table::Profiles.name()))? {
        for_each_batch(
            &path,
            &["window_end", "user_id", "segment", "embedding"],
            |b| {
                let (Some(w), Some(u), Some(s), Some(e)) = (
                    b.column(0).as_primitive_opt::<TimestampMillisecondType>(),
                    b.column(1).as_string_opt::<i32>(),
                    b.column(2).as_string_opt::<i32>(),
                    b.column(3).as_list_opt::<i32>(),
                ) else {
                    return;
                };
                for r in 0..b.num_rows() {
                    let t = w.value(r);
                    let range = if (onset - baseline_ms..onset).contains(&t) {
                        0
                    } else if (onset..=detected).contains(&t) {
                        1
                    } else {
                        continue;
                    };
                    let member = match &persona_windows {
                        Some(pw) => pw.contains(&(u.value(r).to_string(), t)),
                        None => s.is_valid(r) && s.value(r) == scope_id,
                    };
                    if !member {
                        continue;
                    }
                    let point = e.value(r);
                    let Some(point) = point.as_primitive_opt::<Float32Type>() else {
                        continue;
                    };
                    let (sum, n) = &mut sums[range];
                    if sum.is_empty() {
                        sum.resize(point.len(), 0.0);
                    }
                    if sum.len() == point.len() {
                        for (a, v) in sum.iter_mut().zip(point.values()) {
                            *a += f64::from(*v);
                        }
                        *n += 1;
                    }
                }
            },
        )?;
    }
    let mean = |(sum, n): &(Vec<f64>, u64), what: &str| -> Result<Vec<f32>> {
        if *n == 0 {
            return Err(Error::Input(format!(
                "drift {scope}:{scope_id}: no profiles of the scope {what}"
            )));
        }
        Ok(sum.iter().map(|s| (s / *n as f64) as f32).collect())
    };
    Ok(DriftShift {
        baseline: mean(&sums[0], "in the baseline before its onset")?,
        current: mean(&sums[1], "between its onset and its detection")?,
        points: (sums[0].1, sums[1].1),
        scope,
        scope_id,
        onset_window_end: onset,
        detected_window_end: detected,
    })
}
