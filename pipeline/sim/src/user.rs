//! One simulated user: its drawn traits and its state (current session, next session,
//! heartbeat, error burst), carried from one time chunk to the next.
//!
//! A user is a small event-time state machine driven by its own random stream. It always
//! performs its earliest pending step (a heartbeat, a session start, the next event of the
//! current session) and pauses when that step lies at or after the end of the chunk, so
//! the events and the random draws do not depend on how time is cut into chunks.
//!
//! A user draws from three streams: attributes (action, status, bytes, latency), timing
//! (gaps, session lengths, heartbeats, error bursts) and session arrivals. Keeping them
//! apart means a drift changes only what it targets and only from its start on: a `bytes`
//! drift leaves every event time alone, and no drift changes anything before it starts.

use personaflow_operators::Event;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use super::drift::{Effects, Timeline};
use super::profiles::{Action, SegmentProfile, CLIENT_ERRORS, COUNTRIES, PROFILES, SERVER_ERRORS};
use super::World;
use super::{UserTruth, DAY_MS, HOUR_MS, MINUTE_MS, SECOND_MS};
use personaflow_operators::window::features::Fnv;

/// A time that never comes.
pub(crate) const NEVER: i64 = i64::MAX;

/// Log-normal sigma (mean one) of each user's session-rate multiplier.
const USER_RATE_SIGMA: f64 = 0.35;
/// Log-normal sigma (mean one) of each user's session-length multiplier.
const USER_SESSION_SIGMA: f64 = 0.25;
/// Log-normal sigma (mean one) of each user's in-session gap multiplier.
const USER_GAP_SIGMA: f64 = 0.25;
/// Log-normal sigma (mean one) of each user's bytes multiplier.
const USER_BYTES_SIGMA: f64 = 0.3;
/// Log-normal sigma (mean one) of each user's latency multiplier.
const USER_LATENCY_SIGMA: f64 = 0.2;
/// Log-normal sigma (mean one) applied to each weight of a user's action mix.
const USER_MIX_SIGMA: f64 = 0.35;
/// Log-normal sigma of the heartbeat period across devices of a segment.
const HEARTBEAT_DEVICE_SIGMA: f64 = 0.35;
/// Log-normal sigma of the jitter of one heartbeat period.
const HEARTBEAT_JITTER_SIGMA: f64 = 0.03;
/// Median lifetime of a device's connection (the session id of its heartbeats).
const CONNECTION_MEDIAN_MS: f64 = 8.0 * HOUR_MS as f64;
/// Log-normal sigma of connection lifetimes.
const CONNECTION_SIGMA: f64 = 0.7;
/// Shortest gap between two events of a session.
const MIN_GAP_MS: f64 = 200.0;
/// Mean number of personal error bursts (flaky network, broken client) per user and day.
const USER_BURSTS_PER_DAY: f64 = 0.3;
/// Median length of a personal error burst.
const USER_BURST_MEDIAN_MS: f64 = 5.0 * MINUTE_MS as f64;
/// Log-normal sigma of personal error burst lengths.
const USER_BURST_SIGMA: f64 = 0.6;
/// Extra 5xx probability during a personal error burst.
const USER_BURST_SERVER_ERROR_RATE: f64 = 0.5;
/// Latency multiplier while a user is in an error burst or its segment in an incident.
const DEGRADED_LATENCY_FACTOR: f64 = 2.5;
/// Latency multiplier of a request that ends in a 5xx status (timeouts, retries).
const SERVER_ERROR_LATENCY_FACTOR: f64 = 3.0;
/// Median size of an error response body, bytes.
const ERROR_BODY_BYTES: f64 = 350.0;
/// Log-normal sigma of error body sizes.
const ERROR_BODY_SIGMA: f64 = 0.3;
/// Upper bound of the total 5xx probability.
const MAX_SERVER_ERROR_RATE: f64 = 0.95;
/// Log-normal sigma of the network round trip of one request.
const RTT_SIGMA: f64 = 0.25;
/// Latencies are rounded to 1 / this many milliseconds.
const LATENCY_RESOLUTION: f64 = 100.0;

/// A standard normal draw.
fn normal(rng: &mut ChaCha8Rng) -> f64 {
    rng.sample(StandardNormal)
}

/// A log-normal draw with the given median.
fn lognormal(rng: &mut ChaCha8Rng, median: f64, sigma: f64) -> f64 {
    median * (sigma * normal(rng)).exp()
}

/// A log-normal multiplier with mean one.
fn mean_one(rng: &mut ChaCha8Rng, sigma: f64) -> f64 {
    (sigma * normal(rng) - sigma * sigma / 2.0).exp()
}

/// An exponential draw with the given mean.
fn exponential(rng: &mut ChaCha8Rng, mean: f64) -> f64 {
    let u: f64 = rng.random();
    -(1.0 - u).ln() * mean
}

/// Index drawn from relative weights.
fn pick_weighted<T>(rng: &mut ChaCha8Rng, items: &[T], weight: impl Fn(&T) -> f64) -> usize {
    let total: f64 = items.iter().map(&weight).sum();
    let mut x = rng.random::<f64>() * total;
    for (i, item) in items.iter().enumerate() {
        x -= weight(item);
        if x < 0.0 {
            return i;
        }
    }
    items.len().saturating_sub(1)
}

/// A cumulative action table: (cumulative weight, action), last entry holds the total.
pub(crate) type ActionTable = Vec<(f64, Action)>;

/// The cumulative table of weighted actions.
pub(crate) fn action_table(actions: impl IntoIterator<Item = (Action, f64)>) -> ActionTable {
    let mut total = 0.0;
    actions
        .into_iter()
        .map(|(action, w)| {
            total += w;
            (total, action)
        })
        .collect()
}

/// Draws an action from a cumulative table.
fn draw_action(rng: &mut ChaCha8Rng, table: &ActionTable) -> Action {
    let total = table.last().map_or(0.0, |(c, _)| *c);
    let x = rng.random::<f64>() * total;
    table
        .iter()
        .find(|(c, _)| x < *c)
        .or(table.last())
        .map_or(Action::PageView, |(_, a)| *a)
}

/// The session in progress.
#[derive(Clone, Debug)]
struct Session {
    id: String,
    end_ms: i64,
    next_event_ms: i64,
}

/// One user: traits drawn once, then the state carried across chunks.
#[derive(Clone, Debug)]
pub(crate) struct User {
    /// Draws of traits and event attributes (action, status, bytes, latency).
    rng: ChaCha8Rng,
    /// Draws of event times within sessions, session lengths, heartbeat periods,
    /// connections and error bursts: kept apart so that a drift of attributes (which may
    /// take more or fewer draws) leaves the times of events alone.
    timing: ChaCha8Rng,
    /// Draws of session arrival times only: arrivals are drawn ahead of time (up to the
    /// next accepted start), so they must not shift the draws of earlier events.
    arrivals: ChaCha8Rng,
    pub segment: usize,
    /// The segment's drifts as they reach this user (its place in each ramped roll-out).
    timeline: Timeline,
    user_id: String,
    /// `Some(segment name)` for authenticated users only.
    segment_label: Option<String>,
    authenticated: bool,
    device: &'static str,
    os: &'static str,
    country: usize,
    /// Local time minus UTC, including the user's chronotype shift.
    clock_shift_ms: i64,
    /// Local time minus UTC (the time zone alone), for the day of the week.
    utc_offset_ms: i64,
    rate: f64,
    session_mult: f64,
    gap_mult: f64,
    bytes_mult: f64,
    latency_mult: f64,
    mix: ActionTable,
    /// Session starts per millisecond at the peak of the daily curve, before drift.
    peak_rate_per_ms: f64,
    heartbeat_period_ms: Option<f64>,
    // State carried across chunks.
    session: Option<Session>,
    sessions_started: u64,
    next_session_ms: i64,
    next_heartbeat_ms: i64,
    connection: u64,
    connection_end_ms: i64,
    burst_end_ms: i64,
    next_burst_ms: i64,
}

impl User {
    /// Draws a user's traits from its own random stream and schedules its first steps.
    pub fn new(
        mut rng: ChaCha8Rng,
        mut timing: ChaCha8Rng,
        arrivals: ChaCha8Rng,
        user_id: String,
        segment: usize,
        authenticated: bool,
        world: &World,
    ) -> User {
        let profile: &SegmentProfile = &PROFILES[segment];
        let device = pick_weighted(&mut rng, profile.devices, |d| d.2);
        let (device, os, _) = profile.devices[device];
        let country = pick_weighted(&mut rng, &profile.countries, |w| *w);
        let utc_offset_ms = COUNTRIES[country].utc_offset_min * MINUTE_MS;
        let chronotype_ms = (profile.chronotype_sd_h * normal(&mut rng) * HOUR_MS as f64) as i64;
        let rate = mean_one(&mut rng, USER_RATE_SIGMA);
        let session_mult = mean_one(&mut rng, USER_SESSION_SIGMA);
        let gap_mult = mean_one(&mut rng, USER_GAP_SIGMA);
        let bytes_mult = mean_one(&mut rng, USER_BYTES_SIGMA);
        let latency_mult = mean_one(&mut rng, USER_LATENCY_SIGMA);
        let mix = action_table(
            profile
                .actions
                .iter()
                .map(|(a, w)| (*a, w * mean_one(&mut rng, USER_MIX_SIGMA)))
                .collect::<Vec<_>>(),
        );
        let sessions_per_day = world.sessions_per_day.unwrap_or(profile.sessions_per_day);
        let peak_rate_per_ms = sessions_per_day * rate / DAY_MS as f64
            * world.curves[segment].peak
            * profile.weekend_factor.max(1.0);
        let heartbeat_period_ms = profile
            .heartbeat_seconds
            .map(|s| lognormal(&mut timing, s * SECOND_MS as f64, HEARTBEAT_DEVICE_SIGMA));
        let next_heartbeat_ms = heartbeat_period_ms.map_or(NEVER, |p| {
            world.start_ms + (timing.random::<f64>() * p) as i64
        });
        // Sparse activity: no heartbeats (drawn all the same, so that the other draws of the
        // user's streams stay where they are).
        let (heartbeat_period_ms, next_heartbeat_ms) = match world.sessions_per_day {
            Some(_) => (None, NEVER),
            None => (heartbeat_period_ms, next_heartbeat_ms),
        };
        let next_burst_ms =
            world.start_ms + exponential(&mut timing, DAY_MS as f64 / USER_BURSTS_PER_DAY) as i64;
        // The user's place in ramped roll-outs: a hash of its id, so that no random draw of the
        // user's streams moves and a run without ramps stays as it was.
        let adoption = Fnv::hash_str(&user_id) as f64 / (u64::MAX as f64 + 1.0);
        let timeline = Timeline::new(segment, &world.drifts, world.start_ms, adoption);
        let mut user = User {
            rng,
            timing,
            arrivals,
            segment,
            timeline,
            segment_label: authenticated.then(|| profile.name.to_string()),
            user_id,
            authenticated,
            device,
            os,
            country,
            clock_shift_ms: utc_offset_ms + chronotype_ms,
            utc_offset_ms,
            rate,
            session_mult,
            gap_mult,
            bytes_mult,
            latency_mult,
            mix,
            peak_rate_per_ms,
            heartbeat_period_ms,
            session: None,
            sessions_started: 0,
            next_session_ms: NEVER,
            next_heartbeat_ms,
            connection: 0,
            connection_end_ms: i64::MIN,
            burst_end_ms: i64::MIN,
            next_burst_ms,
        };
        user.next_session_ms = user.next_session_after(world.start_ms, world);
        user
    }

    /// The user's ground truth.
    pub fn truth(&self) -> UserTruth {
        UserTruth {
            user_id: self.user_id.clone(),
            segment: PROFILES[self.segment].name.to_string(),
            authenticated: self.authenticated,
            device: self.device.to_string(),
            os: self.os.to_string(),
            country: COUNTRIES[self.country].code.to_string(),
            utc_offset_min: self.utc_offset_ms / MINUTE_MS,
        }
    }

    /// Appends the user's events with times before `until` (in time order) to `out`.
    pub fn generate(&mut self, until: i64, world: &World, out: &mut Vec<Event>) {
        loop {
            let session_step = self
                .session
                .as_ref()
                .map_or(self.next_session_ms, |s| s.next_event_ms);
            if self.next_heartbeat_ms <= session_step {
                if self.next_heartbeat_ms >= until {
                    return;
                }
                let event = self.heartbeat(world);
                out.push(event);
            } else {
                if session_step >= until {
                    return;
                }
                let event = self.session_step(session_step, world);
                out.push(event);
            }
        }
    }

    /// Emits the heartbeat due now and schedules the next one.
    fn heartbeat(&mut self, world: &World) -> Event {
        let t = self.next_heartbeat_ms;
        if t >= self.connection_end_ms {
            self.connection += 1;
            self.connection_end_ms =
                t + lognormal(&mut self.timing, CONNECTION_MEDIAN_MS, CONNECTION_SIGMA) as i64;
        }
        let session = format!("{}-c{}", self.user_id, self.connection);
        let event = self.event(t, Action::Heartbeat, session, world);
        let effects = self.timeline.at(t);
        let period = self.heartbeat_period_ms.unwrap_or(f64::INFINITY);
        let next = lognormal(&mut self.timing, period, HEARTBEAT_JITTER_SIGMA) / effects.rate;
        self.next_heartbeat_ms = t.saturating_add(next.max(MIN_GAP_MS) as i64);
        event
    }

    /// Starts a session (if none is open) and emits its next event at `t`.
    fn session_step(&mut self, t: i64, world: &World) -> Event {
        let profile = &PROFILES[self.segment];
        let session = match self.session.take() {
            Some(session) => session,
            None => {
                self.sessions_started += 1;
                let length = lognormal(
                    &mut self.timing,
                    world.session_minutes.unwrap_or(profile.session_minutes)
                        * MINUTE_MS as f64
                        * self.session_mult,
                    profile.session_sigma,
                );
                Session {
                    id: format!("{}-s{}", self.user_id, self.sessions_started),
                    end_ms: t.saturating_add(length as i64),
                    next_event_ms: t,
                }
            }
        };
        let effects = self.timeline.at(t);
        let action = self.draw_action(&effects, world);
        let event = self.event(t, action, session.id.clone(), world);
        let gap = lognormal(
            &mut self.timing,
            profile.gap_seconds * SECOND_MS as f64 * self.gap_mult,
            profile.gap_sigma,
        ) / effects.pace;
        let next = t.saturating_add(gap.max(MIN_GAP_MS) as i64);
        if next < session.end_ms {
            self.session = Some(Session {
                next_event_ms: next,
                ..session
            });
        } else {
            self.next_session_ms = self.next_session_after(session.end_ms, world);
        }
        event
    }

    fn draw_action(&mut self, effects: &Effects, world: &World) -> Action {
        if let Some((target, share)) = effects.mix {
            if self.rng.random::<f64>() < share {
                return draw_action(&mut self.rng, &world.base_mixes[target]);
            }
        }
        draw_action(&mut self.rng, &self.mix)
    }

    /// Session starts per millisecond at time `t` (local diurnal curve, weekday, drift).
    fn session_rate(&self, t: f64, effects: &Effects, world: &World) -> f64 {
        let profile = &PROFILES[self.segment];
        let local = t as i64 + self.clock_shift_ms;
        let hour = local.rem_euclid(DAY_MS) as f64 / HOUR_MS as f64;
        let day_of_week = (t as i64 + self.utc_offset_ms).div_euclid(DAY_MS) + super::EPOCH_WEEKDAY;
        let weekend = day_of_week.rem_euclid(7) >= super::SATURDAY;
        let day_factor = if weekend { profile.weekend_factor } else { 1.0 };
        world.sessions_per_day.unwrap_or(profile.sessions_per_day) * self.rate / DAY_MS as f64
            * world.curves[self.segment].at(hour)
            * day_factor
            * effects.rate
    }

    /// The start of the next session after `from` (thinning of a non-homogeneous Poisson
    /// process whose bound is piecewise constant between drift changes), or [`NEVER`].
    fn next_session_after(&mut self, from: i64, world: &World) -> i64 {
        let timeline = &self.timeline;
        let mut t = from as f64;
        loop {
            let now = t as i64;
            let effects = timeline.at(now);
            let bound = self.peak_rate_per_ms * effects.rate;
            let change = timeline
                .next_rate_change_after(now)
                .map_or(f64::INFINITY, |c| c as f64);
            let candidate = t + exponential(&mut self.arrivals, 1.0 / bound);
            if candidate >= world.end_ms as f64 {
                return NEVER;
            }
            if candidate >= change {
                // The process is memoryless: restart at the change under the new bound.
                t = change;
                continue;
            }
            let accept = self.arrivals.random::<f64>() * bound;
            if accept <= self.session_rate(candidate, &effects, world) {
                return candidate.ceil() as i64;
            }
            t = candidate;
        }
    }

    /// Ends or starts the user's personal error bursts up to time `t`.
    fn advance_bursts(&mut self, t: i64) {
        while self.next_burst_ms <= t {
            let length = lognormal(&mut self.timing, USER_BURST_MEDIAN_MS, USER_BURST_SIGMA);
            self.burst_end_ms = self.next_burst_ms + length as i64;
            let pause = exponential(&mut self.timing, DAY_MS as f64 / USER_BURSTS_PER_DAY);
            self.next_burst_ms = self.burst_end_ms + pause as i64;
        }
    }

    /// One event of this user at `t` with status, bytes and latency drawn.
    fn event(&mut self, t: i64, action: Action, session_id: String, world: &World) -> Event {
        let profile = &PROFILES[self.segment];
        let spec = action.spec();
        let effects = self.timeline.at(t);
        self.advance_bursts(t);
        let incident = world.incident_rate(self.segment, t);
        let in_burst = t < self.burst_end_ms;
        let burst = if in_burst {
            USER_BURST_SERVER_ERROR_RATE
        } else {
            0.0
        };
        let server_error_rate = (profile.server_error_rate + incident + burst + effects.errors)
            .min(MAX_SERVER_ERROR_RATE);
        let u: f64 = self.rng.random();
        let status = if u < server_error_rate {
            SERVER_ERRORS[pick_weighted(&mut self.rng, &SERVER_ERRORS, |s| s.1)].0
        } else if u < server_error_rate + profile.client_error_rate {
            CLIENT_ERRORS[pick_weighted(&mut self.rng, &CLIENT_ERRORS, |s| s.1)].0
        } else {
            spec.ok_status
        };
        let failed = status >= 400;
        let bytes_in = if failed {
            lognormal(&mut self.rng, ERROR_BODY_BYTES, ERROR_BODY_SIGMA)
        } else {
            lognormal(
                &mut self.rng,
                spec.bytes_in * self.bytes_mult,
                spec.bytes_sigma,
            )
        } * effects.bytes;
        let bytes_out = lognormal(
            &mut self.rng,
            spec.bytes_out * self.bytes_mult,
            spec.bytes_sigma,
        ) * effects.bytes;
        let server = lognormal(
            &mut self.rng,
            spec.latency_ms * profile.latency_factor * self.latency_mult,
            spec.latency_sigma,
        );
        let rtt = lognormal(&mut self.rng, COUNTRIES[self.country].rtt_ms, RTT_SIGMA);
        let mut latency = (server + rtt) * effects.latency;
        if in_burst || incident > 0.0 {
            latency *= DEGRADED_LATENCY_FACTOR;
        }
        if status >= 500 {
            latency *= SERVER_ERROR_LATENCY_FACTOR;
        }
        Event {
            ts_ms: t,
            user_id: self.user_id.clone(),
            session_id: Some(session_id),
            authenticated: self.authenticated,
            segment: self.segment_label.clone(),
            action: spec.name.to_string(),
            category: Some(spec.category.to_string()),
            bytes_in: Some(bytes_in.round() as u64),
            bytes_out: Some(bytes_out.round() as u64),
            latency_ms: Some((latency * LATENCY_RESOLUTION).round() / LATENCY_RESOLUTION),
            status: Some(status),
            device: Some(self.device.to_string()),
            os: Some(self.os.to_string()),
            country: Some(COUNTRIES[self.country].code.to_string()),
        }
    }
}
