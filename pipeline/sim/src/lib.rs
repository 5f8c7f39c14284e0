//! The seeded scenario simulator: synthetic users in named segments, with diurnal cycles,
//! sessions, error bursts and optional drift injections, written as time-partitioned Parquet
//! in the canonical event schema plus the ground truth (who is in which segment, which
//! drifts were injected).
//!
//! Everything is driven by [`rand_chacha::ChaCha8Rng`] streams derived from the seed: one
//! stream for the population (segments, authentication, incidents) and one per user, so the
//! same [`SimulationConfig`] always gives the same events, whatever the chunk size.
//!
//! Behaviour per segment (see the tables in `profiles.rs`):
//!
//! | segment | when | what | context |
//! |---|---|---|---|
//! | `gamer` | evenings, more on weekends | `game_move`, `chat`, `matchmaking`, some `purchase`, rare huge `asset_download` | desktop/console, low latency |
//! | `video_streamer` | prime time | `stream_chunk` (MBs each), `play`, `search`, `like` | tv/mobile/tablet |
//! | `remote_worker` | business hours on weekdays, local time | `api_call`, `doc_edit`, `email`, `video_call`, `file_upload` | laptops |
//! | `iot_device` | 24/7: a heartbeat every few minutes plus telemetry bursts | `heartbeat`, `telemetry`, `firmware_check`, tiny bytes | sensor/gateway/camera, rtos/linux, slow links |
//! | `casual_browser` | sporadic short sessions, commute/lunch/evening | `page_view`, `click`, `search`, `purchase` | mostly mobile |
//!
//! Everyone does some `page_view`/`login`/`search`. Each user draws its own rate, session
//! length, gap, bytes and latency multipliers and its own perturbation of the segment's action
//! mix, so a segment is a distribution of users. Error bursts come from segment-wide
//! incidents (a few per segment and day, 5xx for everyone in the segment) and from personal
//! bursts (flaky network).
//!
//! ```
//! use personaflow_sim::{SimulationConfig, Simulator};
//!
//! let config = SimulationConfig { users: 20, days: 0.1, ..SimulationConfig::default() };
//! let mut simulator = Simulator::new(&config).unwrap();
//! let mut last = i64::MIN;
//! while let Some(chunk) = simulator.next_chunk() {
//!     for event in &chunk {
//!         assert!(event.ts_ms >= last);
//!         last = event.ts_ms;
//!     }
//! }
//! assert_eq!(simulator.truth().len(), 20);
//! ```

mod drift;
mod output;
mod profiles;
mod user;

use std::collections::BTreeMap;
use std::path::PathBuf;

use personaflow_operators::Event;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

pub use drift::{DriftKind, DriftSpec};
pub use output::{
    prepare_events_dir, simulate_to_dir, PartitionedWriter, SimulationSummary, DRIFTS_FILE,
    EVENTS_DIR, INCIDENTS_FILE, TRUTH_DIR, USERS_FILE,
};

use profiles::PROFILES;
use user::{action_table, ActionTable, User};

pub use personaflow_io::{Error, Result, SettingsErrorKind};

/// The segments users belong to.
pub const SEGMENTS: [&str; 5] = [
    "gamer",
    "video_streamer",
    "remote_worker",
    "iot_device",
    "casual_browser",
];

/// Default number of users.
pub const DEFAULT_USERS: usize = 1_000;
/// Default simulated duration, days.
pub const DEFAULT_DAYS: f64 = 1.0;
/// Default seed.
pub const DEFAULT_SEED: u64 = 42;
/// Default start: Monday 2026-01-05 00:00:00 UTC, in milliseconds since the epoch.
pub const DEFAULT_START_MS: i64 = 1_767_571_200_000;
/// Default share of users who are authenticated (whose events carry their segment).
pub const DEFAULT_AUTHENTICATED_SHARE: f64 = 0.5;
/// Most sessions per day [`SimulationConfig::sessions_per_day`] accepts (one a minute).
pub const MAX_SESSIONS_PER_DAY: f64 = 1_440.0;
/// Longest median session [`SimulationConfig::session_minutes`] accepts (a day).
pub const MAX_SESSION_MINUTES: f64 = 1_440.0;
/// Default length of the time chunks events are generated (and sorted) in: one hour.
pub const DEFAULT_CHUNK_MS: i64 = HOUR_MS;
/// Default largest number of rows in one Parquet file (a day gets more parts beyond it).
pub const DEFAULT_ROWS_PER_FILE: usize = 1_000_000;
/// Default number of rows per Parquet row group.
pub const DEFAULT_ROW_GROUP_ROWS: usize = 65_536;

/// Milliseconds per second.
pub(crate) const SECOND_MS: i64 = 1_000;
/// Milliseconds per minute.
pub(crate) const MINUTE_MS: i64 = 60 * SECOND_MS;
/// Milliseconds per hour.
pub(crate) const HOUR_MS: i64 = 60 * MINUTE_MS;
/// Milliseconds per day.
pub(crate) const DAY_MS: i64 = 24 * HOUR_MS;
/// Day of the week of 1970-01-01 (a Thursday), counting Monday as 0.
pub(crate) const EPOCH_WEEKDAY: i64 = 3;
/// Day of the week of Saturday, counting Monday as 0 (Saturday and Sunday are the weekend).
pub(crate) const SATURDAY: i64 = 5;
/// Latest supported event time: 9999-12-31T23:59:59.999Z.
const MAX_TIME_MS: i64 = 253_402_300_799_999;
/// Digits of user ids at least (`u000042`), so that ids sort like their numbers.
const USER_ID_MIN_DIGITS: usize = 6;
/// Mean number of incidents (segment-wide 5xx periods) per segment and day.
const INCIDENTS_PER_SEGMENT_DAY: f64 = 0.75;
/// Median incident length.
const INCIDENT_MEDIAN_MS: f64 = 15.0 * MINUTE_MS as f64;
/// Log-normal sigma of incident lengths.
const INCIDENT_SIGMA: f64 = 0.5;
/// Range of the extra 5xx probability during an incident.
const INCIDENT_ERROR_RATE: (f64, f64) = (0.3, 0.8);
/// Random streams per user (attributes, timing, session arrivals).
const USER_STREAMS: u64 = 3;
/// Where configuration errors point (the `path` of [`Error::Config`]).
const CONFIG_SOURCE: &str = "<simulation config>";

/// The index of a segment name in [`SEGMENTS`].
pub fn segment_index(name: &str) -> Option<usize> {
    SEGMENTS.iter().position(|s| *s == name)
}

/// What to simulate. Build it with struct update syntax over [`Default`]:
///
/// ```
/// use personaflow_sim::SimulationConfig;
///
/// let config = SimulationConfig {
///     users: 3_000,
///     days: 2.0,
///     drifts: vec!["gamer@36h:bytes=3.0".parse().unwrap()],
///     ..SimulationConfig::default()
/// };
/// config.validate().unwrap();
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct SimulationConfig {
    /// Number of users (at least 1).
    pub users: usize,
    /// Simulated duration in days (> 0; fractions allowed).
    pub days: f64,
    /// Seed of every random draw.
    pub seed: u64,
    /// Start of the simulated period, milliseconds since the epoch (UTC).
    pub start_ms: i64,
    /// Share of users who are authenticated, in \[0, 1\] (per segment, rounded).
    pub authenticated_share: f64,
    /// Sparse activity: every user starts this many sessions a day on average (its segment's
    /// daily curve, weekend factor and its own rate still shape when), instead of its
    /// segment's 2 to 12, and devices send no heartbeats. Users are then active only a few
    /// times a day. `None`: the segments' own rates and heartbeats.
    pub sessions_per_day: Option<f64>,
    /// Every user's median session length in minutes (its own multiplier still applies),
    /// instead of its segment's 2 to 55: with a few sessions a day and short sessions,
    /// users are active in a few minutes of the day. `None`: the segments' own lengths.
    pub session_minutes: Option<f64>,
    /// Drift injections.
    pub drifts: Vec<DriftSpec>,
    /// Replace an existing non-empty `DIR/events` instead of refusing.
    pub overwrite: bool,
    /// Length of the time chunks events are generated and sorted in (bounds memory).
    pub chunk_ms: i64,
    /// Largest number of rows in one Parquet file.
    pub rows_per_file: usize,
    /// Rows per Parquet row group.
    pub row_group_rows: usize,
}

impl Default for SimulationConfig {
    fn default() -> Self {
        SimulationConfig {
            users: DEFAULT_USERS,
            days: DEFAULT_DAYS,
            seed: DEFAULT_SEED,
            start_ms: DEFAULT_START_MS,
            authenticated_share: DEFAULT_AUTHENTICATED_SHARE,
            sessions_per_day: None,
            session_minutes: None,
            drifts: Vec::new(),
            overwrite: false,
            chunk_ms: DEFAULT_CHUNK_MS,
            rows_per_file: DEFAULT_ROWS_PER_FILE,
            row_group_rows: DEFAULT_ROW_GROUP_ROWS,
        }
    }
}

fn config_error(reason: impl Into<String>) -> Error {
    Error::Config {
        path: PathBuf::from(CONFIG_SOURCE),
        kind: SettingsErrorKind::Invalid(reason.into()),
    }
}

impl SimulationConfig {
    /// The default configuration with the given population, duration and seed.
    pub fn new(users: usize, days: f64, seed: u64) -> Self {
        SimulationConfig {
            users,
            days,
            seed,
            ..SimulationConfig::default()
        }
    }

    /// The simulated duration in milliseconds (`days` rounded to the millisecond).
    pub fn duration_ms(&self) -> i64 {
        (self.days * DAY_MS as f64).round() as i64
    }

    /// Checks every field, with a message naming the field and the accepted values.
    pub fn validate(&self) -> Result<()> {
        if self.users == 0 {
            return Err(config_error("users must be at least 1"));
        }
        if u32::try_from(self.users).is_err() {
            return Err(config_error(format!(
                "users = {} is too many (at most {})",
                self.users,
                u32::MAX
            )));
        }
        if !(self.days.is_finite() && self.days > 0.0) {
            return Err(config_error(format!(
                "days must be a number > 0, got {}",
                self.days
            )));
        }
        if !(0.0..=1.0).contains(&self.authenticated_share) {
            return Err(config_error(format!(
                "authenticated share must be in [0, 1], got {}",
                self.authenticated_share
            )));
        }
        if let Some(n) = self.sessions_per_day {
            if !(n.is_finite() && n > 0.0 && n <= MAX_SESSIONS_PER_DAY) {
                return Err(config_error(format!(
                    "sessions per day must be a number in (0, {MAX_SESSIONS_PER_DAY}], got {n}"
                )));
            }
        }
        if let Some(m) = self.session_minutes {
            if !(m.is_finite() && m > 0.0 && m <= MAX_SESSION_MINUTES) {
                return Err(config_error(format!(
                    "session minutes must be a number in (0, {MAX_SESSION_MINUTES}], got {m}"
                )));
            }
        }
        let duration = self.duration_ms();
        if duration < 1 {
            return Err(config_error(format!(
                "days = {} is shorter than a millisecond",
                self.days
            )));
        }
        let in_range = self.start_ms >= 0
            && self
                .start_ms
                .checked_add(duration)
                .is_some_and(|end| end <= MAX_TIME_MS);
        if !in_range {
            return Err(config_error(format!(
                "start {} ms + {} days lies outside 1970-01-01 ..= 9999-12-31",
                self.start_ms, self.days
            )));
        }
        if self.chunk_ms < 1 {
            return Err(config_error(format!(
                "chunk length must be at least 1 ms, got {}",
                self.chunk_ms
            )));
        }
        if self.rows_per_file == 0 || self.row_group_rows == 0 {
            return Err(config_error(
                "rows per file and rows per row group must be at least 1",
            ));
        }
        for drift in &self.drifts {
            drift.validate()?;
            if drift.start_offset_ms >= duration {
                return Err(config_error(format!(
                    "drift {drift} starts at or after the end of the simulation ({} days)",
                    self.days
                )));
            }
        }
        Ok(())
    }
}

/// The ground truth about one user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UserTruth {
    /// The user id its events carry.
    pub user_id: String,
    /// Its segment (whether or not its events show it).
    pub segment: String,
    /// Whether it is authenticated (only then its events carry `segment`).
    pub authenticated: bool,
    /// Its device class (not written to `users.parquet`; its events carry it).
    pub device: String,
    /// Its operating system (not written to `users.parquet`).
    pub os: String,
    /// Its country code (not written to `users.parquet`).
    pub country: String,
    /// Offset of its local time from UTC, minutes (not written to `users.parquet`).
    pub utc_offset_min: i64,
}

/// A segment-wide incident: every user of the segment sees extra 5xx statuses and slower
/// responses between `start_ms` and `end_ms`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Incident {
    /// The affected segment.
    pub segment: String,
    /// Start, milliseconds since the epoch.
    pub start_ms: i64,
    /// End (exclusive), milliseconds since the epoch.
    pub end_ms: i64,
    /// Extra probability of a 5xx status during the incident.
    pub server_error_rate: f64,
}

/// A daily activity curve normalised to mean one.
#[derive(Clone, Debug)]
pub(crate) struct Curve {
    values: [f64; 24],
    /// The largest value.
    pub peak: f64,
}

impl Curve {
    fn new(hourly: &[f64; 24]) -> Curve {
        let mean = hourly.iter().sum::<f64>() / hourly.len() as f64;
        let values = hourly.map(|v| v / mean);
        let peak = values.iter().copied().fold(0.0, f64::max);
        Curve { values, peak }
    }

    /// The curve at a fractional local hour in \[0, 24), linear between hour centres.
    pub fn at(&self, hour: f64) -> f64 {
        let x = hour - 0.5;
        let below = x.floor();
        let frac = x - below;
        let n = self.values.len() as i64;
        let a = self.values[(below as i64).rem_euclid(n) as usize];
        let b = self.values[(below as i64 + 1).rem_euclid(n) as usize];
        a + (b - a) * frac
    }
}

/// What all users share: the period, drift timelines, incidents, curves and base mixes.
#[derive(Clone, Debug)]
pub(crate) struct World {
    pub start_ms: i64,
    pub end_ms: i64,
    /// The drifts (validated), from which each user's timeline is made.
    pub drifts: Vec<DriftSpec>,
    /// Per segment: (start, end, extra 5xx rate), sorted and non-overlapping.
    incidents: Vec<Vec<(i64, i64, f64)>>,
    pub base_mixes: Vec<ActionTable>,
    pub curves: Vec<Curve>,
    /// Sessions per day of every user, replacing the segments' (and no heartbeats).
    pub sessions_per_day: Option<f64>,
    /// Median session length of every user in minutes, replacing the segments'.
    pub session_minutes: Option<f64>,
}

impl World {
    /// The extra 5xx rate of an incident on `segment` at `t` (0 when none).
    pub fn incident_rate(&self, segment: usize, t: i64) -> f64 {
        let list = &self.incidents[segment];
        let i = list.partition_point(|(start, _, _)| *start <= t);
        match i.checked_sub(1).map(|i| list[i]) {
            Some((_, end, rate)) if t < end => rate,
            _ => 0.0,
        }
    }
}

/// Generates the events of a [`SimulationConfig`] in time-ordered chunks.
///
/// Each call of [`Simulator::next_chunk`] advances every user through the next
/// `chunk_ms` of simulated time (each user's session state carried over) and returns the
/// chunk's events sorted by time; chunks follow each other in time, so the concatenation is
/// globally time-ordered. Memory is bounded by one chunk.
#[derive(Debug)]
pub struct Simulator {
    config: SimulationConfig,
    world: World,
    users: Vec<User>,
    truth: Vec<UserTruth>,
    cursor_ms: i64,
    events: u64,
    events_per_segment: [u64; SEGMENTS.len()],
    last_chunk_len: usize,
}

/// Splits `users` over segments in proportion to the population weights (largest
/// remainder), giving every segment at least one user when there are enough users.
fn segment_counts(users: usize) -> [usize; SEGMENTS.len()] {
    let total: f64 = PROFILES.iter().map(|p| p.population_weight).sum();
    let quotas = PROFILES.map(|p| users as f64 * p.population_weight / total);
    let mut counts = quotas.map(|q| q.floor() as usize);
    let mut order: Vec<usize> = (0..SEGMENTS.len()).collect();
    order.sort_by(|a, b| {
        let ra = quotas[*a] - quotas[*a].floor();
        let rb = quotas[*b] - quotas[*b].floor();
        rb.total_cmp(&ra).then(a.cmp(b))
    });
    let assigned: usize = counts.iter().sum();
    for &s in order.iter().take(users - assigned) {
        counts[s] += 1;
    }
    if users >= SEGMENTS.len() {
        while let Some(empty) = counts.iter().position(|c| *c == 0) {
            let largest = (0..SEGMENTS.len()).max_by_key(|s| counts[*s]).unwrap_or(0);
            counts[largest] -= 1;
            counts[empty] += 1;
        }
    }
    counts
}

impl Simulator {
    /// Validates the configuration, draws the population and schedules everyone's first
    /// steps.
    pub fn new(config: &SimulationConfig) -> Result<Simulator> {
        config.validate()?;
        let start_ms = config.start_ms;
        let end_ms = start_ms + config.duration_ms();
        let mut population = ChaCha8Rng::seed_from_u64(config.seed);

        // Segments and authentication: a random permutation of users cut into blocks.
        let counts = segment_counts(config.users);
        let mut order: Vec<usize> = (0..config.users).collect();
        order.shuffle(&mut population);
        let mut assignment = vec![(0usize, false); config.users];
        let mut position = 0;
        for (segment, count) in counts.iter().enumerate() {
            let authenticated = (*count as f64 * config.authenticated_share).round() as usize;
            for k in 0..*count {
                assignment[order[position]] = (segment, k < authenticated);
                position += 1;
            }
        }

        // Segment-wide incidents.
        let mut incidents = Vec::with_capacity(SEGMENTS.len());
        for _ in SEGMENTS {
            let mut list = Vec::new();
            let mut t = start_ms as f64;
            loop {
                let u: f64 = population.random();
                t += -(1.0 - u).ln() * DAY_MS as f64 / INCIDENTS_PER_SEGMENT_DAY;
                if t >= end_ms as f64 {
                    break;
                }
                let z: f64 = population.sample(rand_distr::StandardNormal);
                let length = INCIDENT_MEDIAN_MS * (INCIDENT_SIGMA * z).exp();
                let rate = population.random_range(INCIDENT_ERROR_RATE.0..INCIDENT_ERROR_RATE.1);
                let start = t as i64;
                list.push((start, start + length as i64, rate));
                t += length;
            }
            incidents.push(list);
        }

        let world = World {
            start_ms,
            end_ms,
            drifts: config.drifts.clone(),
            incidents,
            base_mixes: PROFILES
                .iter()
                .map(|p| action_table(p.actions.iter().copied()))
                .collect(),
            curves: PROFILES.iter().map(|p| Curve::new(&p.hourly)).collect(),
            sessions_per_day: config.sessions_per_day,
            session_minutes: config.session_minutes,
        };

        let digits = config.users.saturating_sub(1).to_string().len();
        let width = digits.max(USER_ID_MIN_DIGITS);
        let users: Vec<User> = assignment
            .iter()
            .enumerate()
            .map(|(i, (segment, authenticated))| {
                // Stream 0 is the population's; each user has three of its own.
                let stream = |k: u64| {
                    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
                    rng.set_stream(USER_STREAMS * i as u64 + k);
                    rng
                };
                let id = format!("u{i:0width$}");
                let (segment, authenticated) = (*segment, *authenticated);
                User::new(
                    stream(1),
                    stream(2),
                    stream(3),
                    id,
                    segment,
                    authenticated,
                    &world,
                )
            })
            .collect();
        let truth = users.iter().map(User::truth).collect();
        Ok(Simulator {
            config: config.clone(),
            world,
            users,
            truth,
            cursor_ms: start_ms,
            events: 0,
            events_per_segment: [0; SEGMENTS.len()],
            last_chunk_len: 0,
        })
    }

    /// The events of the next chunk of time that has any, sorted by time (ties by user),
    /// or `None` when the simulated period is over.
    pub fn next_chunk(&mut self) -> Option<Vec<Event>> {
        while self.cursor_ms < self.world.end_ms {
            let until = self
                .cursor_ms
                .saturating_add(self.config.chunk_ms)
                .min(self.world.end_ms);
            let mut chunk = Vec::with_capacity(self.last_chunk_len + self.last_chunk_len / 4);
            for user in &mut self.users {
                let before = chunk.len();
                user.generate(until, &self.world, &mut chunk);
                self.events_per_segment[user.segment] += (chunk.len() - before) as u64;
            }
            self.cursor_ms = until;
            if chunk.is_empty() {
                continue;
            }
            // Stable: ties keep user order, and each user's events are in time order.
            chunk.sort_by_key(|e| e.ts_ms);
            self.events += chunk.len() as u64;
            self.last_chunk_len = chunk.len();
            return Some(chunk);
        }
        None
    }

    /// The ground truth: one entry per user, in user-id order.
    pub fn truth(&self) -> &[UserTruth] {
        &self.truth
    }

    /// The configuration being simulated.
    pub fn config(&self) -> &SimulationConfig {
        &self.config
    }

    /// Start of the simulated period, milliseconds since the epoch.
    pub fn start_ms(&self) -> i64 {
        self.world.start_ms
    }

    /// End (exclusive) of the simulated period, milliseconds since the epoch.
    pub fn end_ms(&self) -> i64 {
        self.world.end_ms
    }

    /// Events returned so far.
    pub fn events_emitted(&self) -> u64 {
        self.events
    }

    /// Events returned so far, per segment (of all users, authenticated or not).
    pub fn events_per_segment(&self) -> BTreeMap<String, u64> {
        SEGMENTS
            .iter()
            .zip(self.events_per_segment)
            .map(|(s, n)| (s.to_string(), n))
            .collect()
    }

    /// The segment-wide incidents of the whole period, by segment then time.
    pub fn incidents(&self) -> Vec<Incident> {
        self.world
            .incidents
            .iter()
            .enumerate()
            .flat_map(|(s, list)| {
                list.iter().map(move |(start, end, rate)| Incident {
                    segment: SEGMENTS[s].to_string(),
                    start_ms: *start,
                    end_ms: *end,
                    server_error_rate: *rate,
                })
            })
            .collect()
    }
}

impl Iterator for Simulator {
    type Item = Vec<Event>;

    /// Same as [`Simulator::next_chunk`].
    fn next(&mut self) -> Option<Vec<Event>> {
        self.next_chunk()
    }
}

#[cfg(test)]
mod tests;
