//! Seeded random events for the oracle tests, shared by the operators' oracle
//! (`operators/tests/oracle.rs`) and the production graph's (`pipeline/dataflow/tests/oracle.rs`,
//! which includes this file by path).

use personaflow_operators::{Event, WindowSpec};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The segments of the random users.
pub const SEGMENTS: [&str; 3] = ["gamer", "video_streamer", "iot_device"];
/// Their actions: each segment prefers one of the first three.
pub const ACTIONS: [&str; 6] = [
    "game_move",
    "stream_chunk",
    "heartbeat",
    "page_view",
    "chat",
    "search",
];

/// What to draw.
#[derive(Clone, Copy, Debug)]
pub struct RandomEvents {
    /// Seed.
    pub seed: u64,
    /// Users (60% of them authenticated, with their segment).
    pub users: usize,
    /// Windows the events fall in, from window 0.
    pub windows: u64,
    /// Events.
    pub events: usize,
    /// Windows a session lasts (the session id changes every `session_windows` windows).
    pub session_windows: u64,
}

impl RandomEvents {
    /// Seeded random events of users in [`SEGMENTS`], each preferring its segment's action, with
    /// bytes, latencies, errors, sessions and context; in no particular order.
    pub fn draw(&self, spec: &WindowSpec) -> Vec<Event> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let users: Vec<(String, Option<&str>, &str)> = (0..self.users)
            .map(|i| {
                let seg = SEGMENTS[i % SEGMENTS.len()];
                let auth = rng.random_bool(0.6);
                let device = ["tv", "pc", "phone"][rng.random_range(0..3)];
                (format!("user-{i:03}"), auth.then_some(seg), device)
            })
            .collect();
        (0..self.events)
            .map(|_| {
                let u = rng.random_range(0..users.len());
                let (name, seg, device) = &users[u];
                let w = rng.random_range(0..self.windows);
                let ts = spec.start_ms(w) + rng.random_range(0..spec.len_ms());
                // Each segment prefers its own action, so profiles differ between segments.
                let action = if rng.random_bool(0.6) {
                    ACTIONS[u % SEGMENTS.len()]
                } else {
                    ACTIONS[rng.random_range(0..ACTIONS.len())]
                };
                let mut e = Event::new(ts, name.clone(), action);
                e.authenticated = seg.is_some();
                e.segment = seg.map(str::to_string);
                e.bytes_in = Some(rng.random_range(0..100_000));
                e.bytes_out = rng.random_bool(0.8).then(|| rng.random_range(0..5_000));
                e.latency_ms = rng.random_bool(0.7).then(|| rng.random_range(1.0..500.0));
                e.status = Some(if rng.random_bool(0.05) { 503 } else { 200 });
                e.session_id = Some(format!("{name}-s{}", w / self.session_windows.max(1)));
                e.device = Some(device.to_string());
                e.country = Some(["DE", "US"][u % 2].to_string());
                e
            })
            .collect()
    }
}

/// Orders events so that each arrives at most `disorder` windows after events of later windows.
pub fn arrival_order(events: &[Event], seed: u64, disorder: u64, spec: &WindowSpec) -> Vec<Event> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    let mut keyed: Vec<(u64, u64, Event)> = events
        .iter()
        .map(|e| {
            let w = spec.index(e.ts_ms).unwrap();
            (w + rng.random_range(0..=disorder), rng.random(), e.clone())
        })
        .collect();
    keyed.sort_by_key(|(k, tie, _)| (*k, *tie));
    keyed.into_iter().map(|(_, _, e)| e).collect()
}

/// Whether `arrival` really is out of event-time order.
pub fn out_of_order(arrival: &[Event]) -> bool {
    arrival.windows(2).any(|w| w[1].ts_ms < w[0].ts_ms)
}
