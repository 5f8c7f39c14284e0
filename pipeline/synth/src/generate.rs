//! Synthetic users, planned and written: a mixture fitted per population
//! ([`crate::gmm`]), latent points sampled from it, decoded one step per active window by the
//! step decoder (the user's state kept between its windows), plus a residual drawn from the
//! population's real windows ([`crate::residual`]), and expanded into events
//! ([`crate::expand`]), written in time order in the layout of a simulation:
//!
//! ```text
//! OUT/events/date=YYYY-MM-DD/part-00000.parquet   rows sorted by time within and across files
//! OUT/truth/users.parquet                         user_id, population, segment, authenticated,
//!                                                 device, os, country, latent, activity
//! ```
//!
//! Each synthetic user is active in a window with the probability drawn from its population's
//! users ([`Population::activity`]), scaled by the window's volume factor
//! ([`crate::volume`]); its active windows step through its decoded sequence in turn (the
//! `j`-th active window is step `j mod L`). The encoder's sequences are `L` calendar windows
//! with the inactive ones masked, and the decoder is trained on the active ones only, so its
//! steps say how a user's windows differ from one another, not when they come: when is the
//! activity's to say. Everything is seeded: the same populations, options and decoder give the
//! same files, whatever the number of threads.

use crate::expand::{apportion, expand_window_into, Names, Persona, PersonaTable, WindowEvents};
use crate::gmm::{DiagGmm, FitOptions};
use crate::population::{Context, Population};
use crate::residual::ResidualPool;
use crate::{Error, Result};
use arrow_array::builder::{Float32Builder, ListBuilder};
use arrow_array::{ArrayRef, BooleanArray, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use personaflow_io::tables::read::parquet_files;
use personaflow_operators::window::features::NUM_FEATURES;
use personaflow_operators::{Event, WindowSpec};
use personaflow_sim::{
    prepare_events_dir, PartitionedWriter, DEFAULT_ROWS_PER_FILE, DEFAULT_ROW_GROUP_ROWS,
    EVENTS_DIR, TRUTH_DIR, USERS_FILE,
};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Latent points decoded per batch by default.
pub const DEFAULT_DECODE_BATCH: usize = 1_024;

/// Turns latent points into feature windows one recurrent step at a time: step `s` of a
/// point's sequence is its `s`-th window (`s < L`), as the full decoder gives them.
pub trait Decoder {
    /// `L`: windows per decoded sequence.
    fn sequence_len(&self) -> usize;
    /// `H`: floats of state a point carries from one step to the next.
    fn hidden(&self) -> usize;
    /// One step of `batch` points: `z [batch, D]`, states `h [batch, H]`, `first [batch]` (1:
    /// step 0, the state ignored). Returns features `[batch, F]` with `F` = [`NUM_FEATURES`]
    /// and the next states `[batch, H]`.
    fn step(
        &mut self,
        batch: usize,
        z: &[f32],
        h: &[f32],
        first: &[f32],
    ) -> Result<(Vec<f32>, Vec<f32>)>;
}

impl Decoder for personaflow_models::decoder::VaeDecoderStep {
    fn sequence_len(&self) -> usize {
        self.info().sequence_len
    }

    fn hidden(&self) -> usize {
        personaflow_models::decoder::VaeDecoderStep::hidden(self)
    }

    fn step(
        &mut self,
        batch: usize,
        z: &[f32],
        h: &[f32],
        first: &[f32],
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        Ok(personaflow_models::decoder::VaeDecoderStep::step(
            self, batch, z, h, first,
        )?)
    }
}

/// What to generate.
#[derive(Clone, Debug, PartialEq)]
pub struct SynthOptions {
    /// Synthetic users.
    pub users: usize,
    /// Start of the generated period (ms; rounded down to its window).
    pub start_ms: i64,
    /// Length of the generated period (ms).
    pub duration_ms: i64,
    /// Seed of everything random.
    pub seed: u64,
    /// The windows the decoder's features describe.
    pub spec: WindowSpec,
    /// Mixture components per population at most.
    pub components: usize,
    /// Latent points per decoder call.
    pub decode_batch: usize,
    /// Added to every sampled latent point (a drift's direction times a magnitude).
    pub shift: Option<Vec<f32>>,
    /// Volume factor of each generated window (the last one repeats past its end): a user of
    /// activity `a` is active in window `k` with probability `min(1, a × volume[k])`
    /// ([`crate::volume`]). `None`: 1.
    pub volume: Option<Vec<f64>>,
    /// Threads expanding a window's events (0: the machine's cores).
    pub threads: usize,
    /// Residual pools by population name ([`crate::residual`]): a synthetic window is its
    /// decoded step plus a residual drawn from its population's pool (none: the step alone).
    pub residuals: BTreeMap<String, ResidualPool>,
}

/// One synthetic user.
#[derive(Clone, Debug, PartialEq)]
pub struct SyntheticUser {
    /// `syn0000000`, ...
    pub user_id: String,
    /// The population it was drawn from.
    pub population: String,
    /// The segment its events carry (an authenticated user), if any.
    pub segment: Option<String>,
    /// Device, OS, country.
    pub context: Context,
    /// Its latent point (shifted, if a shift was asked for).
    pub latent: Vec<f32>,
    /// The share of windows it is active in (drawn from its population's users).
    pub activity: f32,
}

/// Fits each population's mixture and draws `options.users` users: a population in
/// proportion to its user-windows, a latent point from its mixture (plus the shift), a
/// context from its users'.
pub fn plan(populations: &[Population], options: &SynthOptions) -> Result<Vec<SyntheticUser>> {
    if populations.is_empty() {
        return Err(Error::Input("no population to draw from".into()));
    }
    let mixtures = populations
        .iter()
        .enumerate()
        .map(|(i, p)| {
            DiagGmm::fit(
                &p.points,
                &FitOptions {
                    components: options.components,
                    seed: options.seed.wrapping_add(i as u64),
                    ..FitOptions::default()
                },
            )
            .map_err(|e| Error::Input(format!("population {}: {e}", p.name)))
        })
        .collect::<Result<Vec<_>>>()?;
    if let Some(shift) = &options.shift {
        let d = mixtures[0].dims();
        if shift.len() != d {
            return Err(Error::Input(format!(
                "the shift has {} dimensions, the latent space {d}",
                shift.len()
            )));
        }
    }
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let order = population_order(populations, options.users, &mut rng);
    Ok(order
        .into_iter()
        .enumerate()
        .map(|(k, i)| {
            let mut latent = mixtures[i].sample(&mut rng);
            if let Some(shift) = &options.shift {
                latent.iter_mut().zip(shift).for_each(|(z, s)| *z += s);
            }
            SyntheticUser {
                user_id: format!("syn{k:07}"),
                population: populations[i].name.clone(),
                segment: populations[i].segment.clone(),
                context: populations[i].draw_context(&mut rng),
                activity: populations[i].draw_activity(&mut rng),
                latent,
            }
        })
        .collect())
}

/// Each synthetic user's population, in user order: every population gets its share of the
/// real **users** (by largest remainder, [`apportion`]), in a seeded random order. Each
/// synthetic user then takes the activity of one of its population's real users, so the
/// populations also get their shares of the user-windows. (Drawing users in proportion to
/// the populations' user-windows counted activity twice: a population of very active users
/// got more users *and* more windows each.) A population without per-user activity counts
/// its user-windows as users.
pub fn population_order(
    populations: &[Population],
    users: usize,
    rng: &mut impl Rng,
) -> Vec<usize> {
    let real_users: Vec<f32> = populations
        .iter()
        .map(|p| match p.activity.len() {
            0 => p.user_windows as f32,
            n => n as f32,
        })
        .collect();
    let mut order: Vec<usize> = apportion(&real_users, users as u64)
        .into_iter()
        .enumerate()
        .flat_map(|(i, n)| std::iter::repeat_n(i, n as usize))
        .collect();
    order.shuffle(rng);
    order
}

/// Who `user`'s events are of.
pub fn persona(user: &SyntheticUser) -> Persona<'_> {
    Persona {
        user: &user.user_id,
        device: user.context.0.as_deref(),
        os: user.context.1.as_deref(),
        country: user.context.2.as_deref(),
        segment: user.segment.as_deref(),
    }
}

/// `users`' events of `window` as [`Event`]s.
pub fn to_events(window: &WindowEvents, users: &[SyntheticUser], names: &Names) -> Vec<Event> {
    (0..window.len())
        .map(|i| window.event(i, &persona(&users[window.user[i] as usize]), names))
        .collect()
}

/// What [`generate`] wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct SynthSummary {
    /// Users.
    pub users: usize,
    /// Events written.
    pub events: u64,
    /// Windows generated.
    pub windows: u64,
    /// The event files.
    pub event_files: Vec<PathBuf>,
    /// The truth file.
    pub users_file: PathBuf,
}

/// A well-mixed 64-bit hash of `(seed, user, window, salt)` (SplitMix64's finaliser over
/// each part in turn): the random draws of a user in a window, independent of every other
/// user's and window's, so users are generated in any order or in parallel with the same
/// result.
fn mix(seed: u64, user: u64, window: u64, salt: u64) -> u64 {
    let mut x = seed ^ salt;
    for part in [user, window] {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15) ^ part;
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^= x >> 31;
    }
    x
}

const ACTIVITY_SALT: u64 = 0xa5a5_0001;
const EXPANSION_SALT: u64 = 0xa5a5_0002;
const RESIDUAL_SALT: u64 = 0xa5a5_0003;

/// Whether user `user` is active in window `window` when it is active with probability `p`.
/// For one user and window, the draw is the same whatever `p`: a user active at some `p` is
/// active at every larger one.
pub fn is_active(seed: u64, user: u64, window: u64, p: f64) -> bool {
    let u = (mix(seed, user, window, ACTIVITY_SALT) >> 11) as f64 / (1u64 << 53) as f64;
    u < p
}

/// The volume factor of the `k`-th generated window (1 without one; the last one past the
/// end; a factor that is not a number counts as 1, a negative one as 0).
fn volume_factor(options: &SynthOptions, k: u64) -> f64 {
    options
        .volume
        .as_ref()
        .map_or(1.0, |v| {
            v.get(k as usize)
                .or(v.last())
                .copied()
                .filter(|f| f.is_finite())
                .unwrap_or(1.0)
        })
        .max(0.0)
}

/// Hands `users`' events to `emit`, window by window in time order (`emit(window index from
/// the start, events sorted by time)`, which may take them; their `user` is an index into
/// `users`: see [`persona`] and [`WindowEvents::event`]); stops early when `emit` answers
/// false. Returns the windows and events handed over.
///
/// Each window: the users active in it are drawn ([`is_active`]), their next step decoded in
/// batches (the decoder's state kept per user between windows: `H` floats a user, nothing
/// that grows with the period), and their events expanded on `options.threads` threads.
/// Memory is the users' states plus one window's features and events.
pub fn generate_events(
    users: &[SyntheticUser],
    decoder: &mut dyn Decoder,
    options: &SynthOptions,
    emit: &mut dyn FnMut(u64, &mut WindowEvents) -> Result<bool>,
) -> Result<(u64, u64)> {
    let l = decoder.sequence_len().max(1);
    let hidden = decoder.hidden();
    let dims = users.first().map_or(0, |u| u.latent.len());
    if let Some(u) = users.iter().find(|u| u.latent.len() != dims) {
        return Err(Error::Input(format!(
            "user {} has {} latent dimensions, the others {dims}",
            u.user_id,
            u.latent.len()
        )));
    }
    let spec = options.spec;
    let first = spec
        .index(options.start_ms)
        .ok_or_else(|| Error::Input(format!("start {} is before 1970", options.start_ms)))?;
    let windows = (options.duration_ms.max(0) as u64).div_ceil(spec.len_ms() as u64);
    let threads = match options.threads {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    let batch = options.decode_batch.max(1);
    // Per user: its residual pool, the decoder's state and the active windows so far.
    let pools: Vec<Option<&ResidualPool>> = users
        .iter()
        .map(|u| {
            options
                .residuals
                .get(&u.population)
                .filter(|p| p.rows() > 0)
        })
        .collect();
    let mut state = vec![0f32; users.len() * hidden];
    let mut steps = vec![0u32; users.len()];
    let mut events = 0u64;
    let (mut z, mut h, mut starts) = (Vec::new(), Vec::new(), Vec::new());
    for k in 0..windows {
        let window = first + k;
        let factor = volume_factor(options, k);
        let active: Vec<usize> = (0..users.len())
            .filter(|u| {
                let p = (f64::from(users[*u].activity) * factor).clamp(0.0, 1.0);
                is_active(options.seed, *u as u64, window, p)
            })
            .collect();
        // Decode the active users' next steps.
        let mut features = vec![0f32; active.len() * NUM_FEATURES];
        for (c, chunk) in active.chunks(batch).enumerate() {
            z.clear();
            h.clear();
            starts.clear();
            for u in chunk {
                z.extend_from_slice(&users[*u].latent);
                h.extend_from_slice(&state[u * hidden..(u + 1) * hidden]);
                starts.push(f32::from(u8::from((steps[*u] as usize).is_multiple_of(l))));
            }
            let (x, next) = decoder.step(chunk.len(), &z, &h, &starts)?;
            if x.len() != chunk.len() * NUM_FEATURES || next.len() != chunk.len() * hidden {
                return Err(Error::Input(format!(
                    "the decoder gave {} features and {} state values for {} points \
                     ({NUM_FEATURES} and {hidden} each)",
                    x.len(),
                    next.len(),
                    chunk.len()
                )));
            }
            let at = c * batch * NUM_FEATURES;
            features[at..at + x.len()].copy_from_slice(&x);
            for (i, u) in chunk.iter().enumerate() {
                if let Some(pool) = pools[*u] {
                    let r = pool.get(mix(options.seed, *u as u64, window, RESIDUAL_SALT));
                    let x = &mut features[at + i * NUM_FEATURES..at + (i + 1) * NUM_FEATURES];
                    x.iter_mut().zip(r).for_each(|(v, r)| *v += r);
                }
            }
            for (i, u) in chunk.iter().enumerate() {
                state[u * hidden..(u + 1) * hidden]
                    .copy_from_slice(&next[i * hidden..(i + 1) * hidden]);
                steps[*u] += 1;
            }
        }
        // Expand them, a share of the users per thread, in user order.
        let expand = |from: usize, to: usize| -> WindowEvents {
            let mut v = WindowEvents::default();
            for (i, u) in active.iter().enumerate().take(to).skip(from) {
                let mut rng =
                    ChaCha8Rng::seed_from_u64(mix(options.seed, *u as u64, window, EXPANSION_SALT));
                let x = &features[i * NUM_FEATURES..(i + 1) * NUM_FEATURES];
                expand_window_into(x, window, &spec, *u as u32, &mut rng, &mut v);
            }
            v
        };
        let parts: Vec<WindowEvents> = if threads <= 1 || active.len() < 2 * MIN_USERS_PER_THREAD {
            vec![expand(0, active.len())]
        } else {
            let (share, n) = (active.len().div_ceil(threads), active.len());
            std::thread::scope(|s| {
                let handles: Vec<_> = (0..threads)
                    .map(|t| {
                        let expand = &expand;
                        s.spawn(move || expand(t * share, ((t + 1) * share).min(n)))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("an expansion thread panicked"))
                    .collect()
            })
        };
        // In time order (ties in user order).
        let mut sorted = WindowEvents::merged_by_time(&parts);
        events += sorted.len() as u64;
        if !emit(k, &mut sorted)? {
            return Ok((k + 1, events));
        }
    }
    Ok((windows, events))
}

/// Windows of events queued for the writer thread at most.
const WRITE_QUEUE_WINDOWS: usize = 2;

/// Active users in a window below which expanding on more threads is not worth starting them.
const MIN_USERS_PER_THREAD: usize = 256;

/// Decodes `users`' latent points and writes their events and truth under `out` (an
/// existing non-empty `out/events` only with `overwrite`). `progress` is told the windows
/// done and the events written so far.
pub fn generate(
    users: &[SyntheticUser],
    decoder: &mut dyn Decoder,
    options: &SynthOptions,
    out: &Path,
    overwrite: bool,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<SynthSummary> {
    let events_dir = out.join(EVENTS_DIR);
    prepare_events_dir(&events_dir, overwrite)?;
    let mut writer =
        PartitionedWriter::with_sizes(events_dir, DEFAULT_ROWS_PER_FILE, DEFAULT_ROW_GROUP_ROWS);
    // The writer on its own thread, a window or two behind the expansion.
    let (tx, rx) = std::sync::mpsc::sync_channel::<WindowEvents>(WRITE_QUEUE_WINDOWS);
    let names = Names::new();
    // The writer looks a persona up per event, across the users at random.
    let personas = PersonaTable::new(users.iter().map(persona));
    let (result, written) = std::thread::scope(|s| {
        let (names, personas) = (&names, &personas);
        let writing = s.spawn(move || -> Result<PartitionedWriter> {
            for window in rx {
                let batch = window.to_batch(|u| personas.get(u), names);
                if let Err(e) = writer.append_batch(&batch) {
                    writer.abort();
                    return Err(e.into());
                }
            }
            Ok(writer)
        });
        let mut written = 0u64;
        let result = generate_events(users, decoder, options, &mut |k, batch| {
            written += batch.len() as u64;
            progress(k + 1, written);
            // A closed channel: the writer failed; its error is reported below.
            Ok(tx.send(std::mem::take(batch)).is_ok())
        });
        drop(tx);
        let written = writing.join().expect("the writer thread panicked");
        (result, written)
    });
    let mut writer = written?;
    let (windows, events) = match result {
        Ok(r) => r,
        Err(e) => {
            writer.abort();
            return Err(e);
        }
    };
    let event_files = writer.finish()?;
    let truth = out.join(TRUTH_DIR);
    std::fs::create_dir_all(&truth).map_err(|e| personaflow_io::Error::io(&truth, e))?;
    let users_file = truth.join(USERS_FILE);
    write_truth(&users_file, users)?;
    Ok(SynthSummary {
        users: users.len(),
        events,
        windows,
        event_files,
        users_file,
    })
}

/// The truth of the synthetic users, written under a temporary name and renamed.
fn write_truth(path: &Path, users: &[SyntheticUser]) -> Result<()> {
    let strings = |f: &dyn Fn(&SyntheticUser) -> Option<&str>| -> ArrayRef {
        Arc::new(users.iter().map(f).collect::<StringArray>())
    };
    let mut latent = ListBuilder::new(Float32Builder::new());
    for u in users {
        latent.values().append_slice(&u.latent);
        latent.append(true);
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Utf8, false),
        Field::new("population", DataType::Utf8, false),
        Field::new("segment", DataType::Utf8, true),
        Field::new("authenticated", DataType::Boolean, false),
        Field::new("device", DataType::Utf8, true),
        Field::new("os", DataType::Utf8, true),
        Field::new("country", DataType::Utf8, true),
        Field::new(
            "latent",
            DataType::List(Arc::new(Field::new("item", DataType::Float32, true))),
            false,
        ),
        Field::new("activity", DataType::Float32, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            strings(&|u| Some(u.user_id.as_str())),
            strings(&|u| Some(u.population.as_str())),
            strings(&|u| u.segment.as_deref()),
            Arc::new(
                users
                    .iter()
                    .map(|u| Some(u.segment.is_some()))
                    .collect::<BooleanArray>(),
            ),
            strings(&|u| u.context.0.as_deref()),
            strings(&|u| u.context.1.as_deref()),
            strings(&|u| u.context.2.as_deref()),
            Arc::new(latent.finish()),
            Arc::new(
                users
                    .iter()
                    .map(|u| Some(u.activity))
                    .collect::<arrow_array::Float32Array>(),
            ),
        ],
    )
    .map_err(|e| Error::Input(format!("the truth's columns: {e}")))?;
    let temp = path.with_file_name(".users.parquet.tmp");
    let file = std::fs::File::create(&temp).map_err(|e| personaflow_io::Error::io(&temp, e))?;
    let mut w = parquet::arrow::ArrowWriter::try_new(file, schema, None)
        .map_err(|e| personaflow_io::Error::parquet(&temp, e))?;
    w.write(&batch)
        .map_err(|e| personaflow_io::Error::parquet(&temp, e))?;
    let file = w
        .into_inner()
        .map_err(|e| personaflow_io::Error::parquet(&temp, e))?;
    file.sync_all()
        .map_err(|e| personaflow_io::Error::io(&temp, e))?;
    std::fs::rename(&temp, path).map_err(|e| personaflow_io::Error::io(path, e))?;
    Ok(())
}

/// The event files under `out` (for tests and the summary).
pub fn event_files(out: &Path) -> Result<Vec<PathBuf>> {
    Ok(parquet_files(&out.join(EVENTS_DIR))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use personaflow_operators::window::features::{window_features, WindowAgg, NUM_BASE_FEATURES};
    use std::collections::{BTreeMap, HashMap};

    /// A decoder of 2-d latent points into consistent feature windows: every window of a
    /// sequence has `round(4 |z0|) + step % 3` events, all actions in bucket `step % 8`,
    /// latencies and bytes from `z1`. Counts `decode` calls and points.
    struct Fake {
        calls: usize,
        points: usize,
    }

    const L: usize = 4;

    fn fake_window(z: &[f32], step: usize) -> [f32; NUM_FEATURES] {
        let spec = WindowSpec::default();
        let n = (4.0 * z[0].abs()).round() as u64 + (step % 3) as u64;
        let mut agg = WindowAgg::empty();
        for i in 0..n {
            let mut e = Event::new(
                60_000 + i as i64 * 1_000,
                "u",
                crate::expand::bucket_names("x")[step % 8].clone(),
            );
            e.bytes_in = Some((1_000.0 * z[1].abs()) as u64 + i);
            e.latency_ms = Some(10.0 + f64::from(z[1].abs()));
            e.status = Some(200);
            e.session_id = Some("s".into());
            agg.add(&e);
        }
        let mut x = [0f32; NUM_FEATURES];
        x[..NUM_BASE_FEATURES].copy_from_slice(&window_features(&agg, 1, &spec));
        x
    }

    impl Decoder for Fake {
        fn sequence_len(&self) -> usize {
            L
        }
        fn hidden(&self) -> usize {
            1
        }
        /// The state is the step index.
        fn step(
            &mut self,
            batch: usize,
            z: &[f32],
            h: &[f32],
            first: &[f32],
        ) -> Result<(Vec<f32>, Vec<f32>)> {
            self.calls += 1;
            self.points += batch;
            let step = |i: usize| if first[i] == 1.0 { 0.0 } else { h[i] + 1.0 };
            Ok((
                (0..batch)
                    .flat_map(|i| fake_window(&z[2 * i..2 * i + 2], step(i) as usize))
                    .collect(),
                (0..batch).map(step).collect(),
            ))
        }
    }

    fn population(name: &str, centre: f32, n: usize, segment: Option<&str>) -> Population {
        let mut rng = ChaCha8Rng::seed_from_u64(centre.to_bits().into());
        Population {
            name: name.into(),
            segment: segment.map(str::to_string),
            user_windows: n as u64,
            keys: Vec::new(),
            points: (0..n)
                .map(|_| {
                    vec![
                        centre + rng.random::<f32>() * 0.1,
                        2.0 + rng.random::<f32>(),
                    ]
                })
                .collect(),
            contexts: BTreeMap::from([
                ((Some("tv".into()), None, Some("US".into())), 3),
                ((Some("mobile".into()), Some("ios".into()), None), 1),
            ]),
            activity: vec![1.0],
        }
    }

    fn options(users: usize, seed: u64) -> SynthOptions {
        SynthOptions {
            users,
            start_ms: 1_767_571_200_000,
            duration_ms: 10 * 60_000,
            seed,
            spec: WindowSpec::default(),
            components: 2,
            decode_batch: 7,
            shift: None,
            volume: None,
            threads: 2,
            residuals: BTreeMap::new(),
        }
    }

    fn read_events(out: &Path) -> Vec<(i64, String, String, Option<u64>)> {
        use arrow_array::cast::AsArray;
        use arrow_array::types::{TimestampMillisecondType, UInt64Type};
        use arrow_array::Array;
        let mut rows = Vec::new();
        for f in event_files(out).unwrap() {
            personaflow_io::tables::read::for_each_batch(
                &f,
                &["ts", "user_id", "action", "bytes_in"],
                |b| {
                    let ts = b.column(0).as_primitive::<TimestampMillisecondType>();
                    let user = b.column(1).as_string::<i32>();
                    let action = b.column(2).as_string::<i32>();
                    let bytes = b.column(3).as_primitive::<UInt64Type>();
                    for i in 0..b.num_rows() {
                        rows.push((
                            ts.value(i),
                            user.value(i).to_string(),
                            action.value(i).to_string(),
                            bytes.is_valid(i).then(|| bytes.value(i)),
                        ));
                    }
                },
            )
            .unwrap();
        }
        rows
    }

    #[test]
    fn the_same_seed_writes_the_same_users_and_events() {
        // 20 real gamers against 10 unknown users, all active in every window, but the gamers
        // with 200 user-windows to the others' 100: the users are split 2 : 1.
        let mut pops = vec![
            population("gamer", 1.0, 200, Some("gamer")),
            population("unknown", 3.0, 100, None),
        ];
        pops[0].activity = vec![1.0; 20];
        pops[1].activity = vec![1.0; 10];
        let run = |seed: u64| {
            let dir = tempfile::tempdir().unwrap();
            let users = plan(&pops, &options(30, seed)).unwrap();
            let mut d = Fake {
                calls: 0,
                points: 0,
            };
            let s = generate(
                &users,
                &mut d,
                &options(30, seed),
                dir.path(),
                false,
                &mut |_, _| {},
            )
            .unwrap();
            // Every user active in each of the 10 windows (activity 1), batches of 7.
            assert_eq!((d.calls, d.points), (10 * 5, 10 * 30), "batches of 7");
            (users, s.events, read_events(dir.path()))
        };
        let (a, b) = (run(4), run(4));
        assert_eq!(a, b);
        assert_ne!(a.2, run(5).2);
        // Sorted by time across files; every event inside the period.
        let times: Vec<i64> = a.2.iter().map(|r| r.0).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
        let o = options(30, 4);
        assert!(times
            .iter()
            .all(|t| (o.start_ms..o.start_ms + o.duration_ms).contains(t)));
        // Populations in their shares of the real users (20 : 10 of 30), contexts from theirs.
        let gamers = a.0.iter().filter(|u| u.population == "gamer").count();
        assert_eq!(gamers, 20);
        assert!(a
            .0
            .iter()
            .all(|u| u.segment.as_deref() == (u.population == "gamer").then_some("gamer")));
        assert!(a.0.iter().all(|u| u.context.0.is_some()));
    }

    #[test]
    fn populations_get_their_share_of_users_not_of_user_windows() {
        // 30 real users active in 90% of windows against 60 in 15%: the first has 75% of the
        // real user-windows. Drawn by user-windows it would get 75% of the synthetic users,
        // and with its users' activity 95% of the synthetic windows; drawn by users it gets a
        // third of the users and, through their activity, its 75% of the windows.
        let mut busy = population("busy", 1.0, 30 * 90, None);
        busy.activity = vec![0.9; 30];
        let mut quiet = population("quiet", 3.0, 60 * 15, None);
        quiet.activity = vec![0.15; 60];
        let pops = [busy, quiet];
        for seed in 0..20 {
            let order = population_order(&pops, 301, &mut ChaCha8Rng::seed_from_u64(seed));
            assert_eq!(order.len(), 301);
            assert_eq!(
                order.iter().filter(|i| **i == 0).count(),
                100,
                "seed {seed}"
            );
        }
        // Expected user-windows per population: the real ones' shares.
        let users = plan(&pops, &options(3_000, 1)).unwrap();
        let windows = |name: &str| -> f32 {
            users
                .iter()
                .filter(|u| u.population == name)
                .map(|u| u.activity)
                .sum()
        };
        let share = windows("busy") / (windows("busy") + windows("quiet"));
        let real = 30.0 * 0.9 / (30.0 * 0.9 + 60.0 * 0.15);
        assert!(
            (share - real).abs() < 1e-4,
            "{share} against {real} (f32 sums)"
        );
        // Without per-user activity, user-windows stand in for users.
        let bare: Vec<Population> = pops
            .iter()
            .cloned()
            .map(|mut p| {
                p.activity.clear();
                p
            })
            .collect();
        let order = population_order(&bare, 100, &mut ChaCha8Rng::seed_from_u64(3));
        assert_eq!(order.iter().filter(|i| **i == 0).count(), 75);
    }

    #[test]
    fn each_users_windows_re_aggregate_to_its_decoded_sequence() {
        let pops = vec![population("p", 2.0, 300, None)];
        let o = options(12, 9);
        let users = plan(&pops, &o).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut d = Fake {
            calls: 0,
            points: 0,
        };
        generate(&users, &mut d, &o, dir.path(), false, &mut |_, _| {}).unwrap();
        let spec = o.spec;
        let first = spec.index(o.start_ms).unwrap();
        let mut aggs: HashMap<(String, u64), WindowAgg> = HashMap::new();
        for (ts, user, action, bytes) in read_events(dir.path()) {
            let mut e = Event::new(ts, user.clone(), action);
            e.bytes_in = bytes;
            aggs.entry((user, spec.index(ts).unwrap()))
                .or_insert_with(WindowAgg::empty)
                .add(&e);
        }
        for u in &users {
            for k in 0..10u64 {
                let want = fake_window(&u.latent, (k % L as u64) as usize);
                let got = aggs
                    .get(&(u.user_id.clone(), first + k))
                    .map(|a| window_features(a, first + k, &spec));
                let n = got.map_or(0.0, |g| g[0]);
                assert!(
                    (n - want[0]).abs() < 1e-5,
                    "{} window {k}: events",
                    u.user_id
                );
                if let Some(g) = got {
                    for i in 11..19 {
                        assert!((g[i] - want[i]).abs() < 1e-5, "action mix {i}");
                    }
                    assert!((g[2] - want[2]).abs() < 1e-3, "bytes in");
                }
            }
        }
    }

    #[test]
    fn the_volume_scales_each_windows_active_users() {
        let mut pop = population("p", 1.0, 300, None);
        pop.activity = vec![0.3];
        let volume = vec![1.0, 2.0, 0.5, 3.0];
        let mut o = options(4_000, 6);
        o.duration_ms = 6 * 60_000;
        let users = plan(&[pop], &o).unwrap();
        let run = |volume: Option<Vec<f64>>| {
            let mut d = Fake {
                calls: 0,
                points: 0,
            };
            let o = SynthOptions {
                volume,
                ..o.clone()
            };
            let mut per_window: Vec<std::collections::BTreeSet<String>> = Vec::new();
            generate_events(&users, &mut d, &o, &mut |_, batch| {
                per_window.push(
                    batch
                        .user
                        .iter()
                        .map(|u| users[*u as usize].user_id.clone())
                        .collect(),
                );
                Ok(true)
            })
            .unwrap();
            per_window
        };
        let (plain, scaled) = (run(None), run(Some(volume.clone())));
        for k in 0..6 {
            let f = volume[k.min(3)];
            let p: f64 = (0.3 * f).min(1.0);
            let want = 4_000.0 * p;
            let sd = (4_000.0 * p * (1.0 - p)).sqrt().max(1.0);
            let got = scaled[k].len() as f64;
            assert!(
                (got - want).abs() <= 5.0 * sd,
                "window {k}: {got} active, expected {want}"
            );
            // The same draw decides: more volume only adds users, less only removes them.
            if f >= 1.0 {
                assert!(plain[k].is_subset(&scaled[k]), "window {k}");
            } else {
                assert!(scaled[k].is_subset(&plain[k]), "window {k}");
            }
        }
        assert_eq!(plain, run(Some(vec![1.0])), "a factor of 1 changes nothing");
    }

    #[test]
    fn a_residual_is_added_to_each_decoded_window() {
        // One residual: ln 2 on log_events, so a window of n events becomes one of 2n + 1
        // (e^(ln(1 + n) + ln 2) - 1); one population with it, one without.
        let pops = vec![
            population("with", 1.0, 300, None),
            population("without", 1.2, 300, None),
        ];
        let mut row = vec![0f32; NUM_FEATURES];
        row[0] = std::f32::consts::LN_2;
        let o = options(40, 3);
        let users = plan(&pops, &o).unwrap();
        let counts = |residuals: BTreeMap<String, ResidualPool>| {
            let o = SynthOptions {
                residuals,
                ..o.clone()
            };
            let mut d = Fake {
                calls: 0,
                points: 0,
            };
            let mut n: BTreeMap<(String, i64), u64> = BTreeMap::new();
            generate_events(&users, &mut d, &o, &mut |_, batch| {
                for (u, ts) in batch.user.iter().zip(&batch.ts) {
                    *n.entry((users[*u as usize].user_id.clone(), ts / 60_000))
                        .or_default() += 1;
                }
                Ok(true)
            })
            .unwrap();
            n
        };
        let plain = counts(BTreeMap::new());
        let with = counts(BTreeMap::from([(
            "with".to_string(),
            ResidualPool::new(vec![row]),
        )]));
        let population: HashMap<&str, &str> = users
            .iter()
            .map(|u| (u.user_id.as_str(), u.population.as_str()))
            .collect();
        assert_eq!(plain.len(), with.len(), "the same windows are active");
        for (key, n) in &plain {
            let want = if population[key.0.as_str()] == "with" {
                2 * n + 1
            } else {
                *n
            };
            assert_eq!(with[key], want, "{key:?}");
        }
    }

    #[test]
    fn a_shift_moves_every_latent_point_by_the_shift() {
        let pops = vec![population("p", 1.0, 300, None)];
        let plain = plan(&pops, &options(500, 2)).unwrap();
        let shift = vec![0.75f32, -2.0];
        let shifted = plan(
            &pops,
            &SynthOptions {
                shift: Some(shift.clone()),
                ..options(500, 2)
            },
        )
        .unwrap();
        for (a, b) in plain.iter().zip(&shifted) {
            for ((x, y), s) in a.latent.iter().zip(&b.latent).zip(&shift) {
                assert!((y - x - s).abs() < 1e-5);
            }
        }
        let mean = |us: &[SyntheticUser], d: usize| {
            us.iter().map(|u| f64::from(u.latent[d])).sum::<f64>() / us.len() as f64
        };
        for (d, s) in shift.iter().enumerate() {
            let moved = mean(&shifted, d) - mean(&plain, d);
            assert!((moved - f64::from(*s)).abs() < 1e-4, "{moved}");
        }
        let bad = SynthOptions {
            shift: Some(vec![1.0]),
            ..options(5, 2)
        };
        assert!(plan(&pops, &bad).is_err());
    }
}
