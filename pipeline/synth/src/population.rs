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
use std::collections::{BTreeMap, HashSet};
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
    /// Contexts and how many user-windows had each.
    pub contexts: BTreeMap<Context, u64>,
}

impl Population {
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

/// Reads the populations of `selection` from the backfill output `dir`; `seed` picks the
/// fit's sample of a large population. Fails, naming what is missing, when the profiles are
/// not the latent encoder's or the selection matches nothing.
pub fn read_populations(dir: &Path, selection: &Selection, seed: u64) -> Result<Vec<Population>> {
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
                if let Err(e) =
                    add_batch(b, selection, persona_windows.as_ref(), &mut pops, &mut rng)
                {
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
            "{}: no user-window matches {selection:?}",
            profiles.display()
        )));
    }
    Ok(pops.into_values().collect())
}

/// (user, window end) of the user-windows assigned to `persona`.
fn persona_user_windows(dir: &Path, persona: u32) -> Result<HashSet<(String, i64)>> {
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
    selection: &Selection,
    persona_windows: Option<&HashSet<(String, i64)>>,
    pops: &mut BTreeMap<String, Population>,
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
            contexts: BTreeMap::new(),
        });
        pop.user_windows += 1;
        *pop.contexts
            .entry((opt(devices, i), opt(oses, i), opt(countries, i)))
            .or_default() += 1;
        // Reservoir sampling: a uniform sample of MAX_FIT_POINTS of the user-windows.
        if pop.points.len() < MAX_FIT_POINTS {
            pop.points.push(point);
        } else {
            let j = rng.random_range(0..pop.user_windows) as usize;
            if j < MAX_FIT_POINTS {
                pop.points[j] = point;
            }
        }
    }
    Ok(())
}
