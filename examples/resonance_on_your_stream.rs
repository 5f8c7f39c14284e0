//! The operators as a library, on a stream of your own: events in, each user's resonance to
//! the known segments out, window by window, on a timely/differential dataflow you build.
//!
//! ```sh
//! cargo run --example resonance_on_your_stream            # a seeded stream of 40 users
//! printf '0,u1,game_move,gamer\n...' | cargo run --example resonance_on_your_stream -- -
//! ```
//!
//! With `-`, events are read from standard input as `ts_ms,user,action[,segment]` lines, in
//! time order; a user with a segment is authenticated (its segment is trusted and builds the
//! segment profiles), one without is scored against them. Otherwise a seeded stream of gamers
//! and video streamers is made up, half of them authenticated.
//!
//! The graph is the front of personaflow's own (`pipeline/dataflow/src/graph.rs`), with the
//! model-free embedder: window_aggregate -> sequences -> embed_profiles -> segment_profiles ->
//! resonance. Each window is closed by advancing the input past it; the probe says when the
//! dataflow has caught up.

use personaflow_operators::embed::StandardisedEmbedder;
use personaflow_operators::ops::{
    EmbedProfiles, ErrorSlot, Resonate, SegmentProfiles, Sequences, WindowAggregate,
};
use personaflow_operators::resonance::ResonanceConfig;
use personaflow_operators::{Event, WindowSpec};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::io::BufRead;
use std::sync::{Arc, Mutex};
use timely::dataflow::operators::Input;

/// Windows of one minute.
const WINDOW_MS: i64 = 60_000;
/// Each user's profile is embedded from its last 8 active windows.
const SEQUENCE_LENGTH: usize = 8;
/// Segment profiles sum the profiles of the last 30 windows.
const SEGMENT_WINDOW: u64 = 30;
/// Profiles embedded per call of the embedder.
const EMBED_BATCH: usize = 256;
/// The made-up stream: users, minutes, seed.
const USERS: usize = 40;
const MINUTES: i64 = 90;
const SEED: u64 = 7;

/// `(window, user) -> (top segment, its probability)`, as the dataflow emits them.
type Scores = Arc<Mutex<BTreeMap<(u64, String), (String, f64)>>>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Events, and every user's true segment where we know it.
    let (events, truth) = match std::env::args().nth(1).as_deref() {
        Some("-") => {
            let events = read_events(std::io::stdin().lock())?;
            let truth = events
                .iter()
                .filter_map(|e| Some((e.user_id.clone(), e.segment.clone()?)))
                .collect();
            (events, truth)
        }
        Some(other) => return Err(format!("unknown argument {other:?} (use - for stdin)").into()),
        None => made_up_events(),
    };
    let told: std::collections::BTreeSet<String> = events
        .iter()
        .filter(|e| e.authenticated)
        .map(|e| e.user_id.clone())
        .collect();
    let spec = WindowSpec::try_new(WINDOW_MS)?;
    let scores: Scores = Arc::default();
    let sink = scores.clone();

    timely::execute_directly(move |worker| {
        let sink = sink.clone();
        let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
            let (input, events) = scope.new_input::<Vec<Event>>();
            let profiles = events
                .window_aggregate(spec)
                .sequences(SEQUENCE_LENGTH)
                .embed_profiles(
                    Box::new(StandardisedEmbedder::default()),
                    EMBED_BATCH,
                    ErrorSlot::default(),
                );
            let segments = profiles.clone().segment_profiles(SEGMENT_WINDOW);
            let resonance = profiles
                .resonance(segments, ResonanceConfig::default())
                .inspect(move |(((user, window), r), _time, diff)| {
                    if *diff > 0 {
                        let top = &r.scores[r.top];
                        sink.lock().unwrap().insert(
                            (*window, user.to_string()),
                            (top.segment.to_string(), f64::from(top.probability.0)),
                        );
                    }
                });
            (input, resonance.probe().0)
        });
        // Feed events in time order; when one belongs to a later window, close the earlier
        // ones and let the dataflow catch up before going on.
        for event in events {
            let window = spec.index(event.ts_ms).expect("event time within range");
            if window > *input.time() {
                input.advance_to(window);
                worker.step_while(|| probe.less_than(input.time()));
            }
            input.send(event);
        }
        let end = *input.time() + 1;
        input.advance_to(end);
        worker.step_while(|| probe.less_than(input.time()));
    });

    // The last window each user was scored in: its top segment against what we know.
    let scores = scores.lock().unwrap();
    let mut last: BTreeMap<&str, (u64, &str, f64)> = BTreeMap::new();
    for ((window, user), (segment, p)) in scores.iter() {
        last.insert(user, (*window, segment, *p));
    }
    let (mut right, mut scored) = (0, 0);
    println!(
        "{:<10} {:>6}  {:<16} {:>11}  {:<16} told",
        "user", "window", "top segment", "probability", "true segment"
    );
    for (user, (window, segment, p)) in &last {
        let known = truth.get(*user);
        let was_told = told.contains(*user);
        if let (Some(k), false) = (known, was_told) {
            scored += 1;
            right += usize::from(k == segment);
        }
        println!(
            "{user:<10} {window:>6}  {segment:<16} {p:>11.3}  {:<16} {}",
            known.map_or("-", String::as_str),
            if was_told { "yes" } else { "no" }
        );
    }
    println!(
        "{} users scored; of the {scored} whose segment the dataflow was not told, {right} have \
         it as their top segment",
        last.len()
    );
    Ok(())
}

/// Events as `ts_ms,user,action[,segment]` lines, in time order.
fn read_events(input: impl BufRead) -> Result<Vec<Event>, Box<dyn std::error::Error>> {
    let mut events = Vec::new();
    let mut last = i64::MIN;
    for (i, line) in input.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let bad = |why: &str| format!("line {}: {why}: {line:?}", i + 1);
        if !(3..=4).contains(&fields.len()) {
            return Err(bad("expected ts_ms,user,action[,segment]").into());
        }
        let ts_ms: i64 = fields[0]
            .parse()
            .map_err(|_| bad("ts_ms is not an integer"))?;
        if ts_ms < last {
            return Err(bad("events must be in time order").into());
        }
        last = ts_ms;
        let mut event = Event::new(ts_ms, fields[1], fields[2]);
        if let Some(segment) = fields.get(3).filter(|s| !s.is_empty()) {
            event.authenticated = true;
            event.segment = Some(segment.to_string());
        }
        events.push(event);
    }
    Ok(events)
}

/// A seeded stream: gamers (many small, fast game moves) and video streamers (fewer, large,
/// slower chunks), sorted by time; the events of authenticated users (half of them) carry
/// their segment. Returns the events and every user's true segment.
fn made_up_events() -> (Vec<Event>, BTreeMap<String, String>) {
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let mut events = Vec::new();
    let mut truth = BTreeMap::new();
    for u in 0..USERS {
        let gamer = u % 2 == 0;
        let authenticated = u % 4 < 2;
        let segment = if gamer { "gamer" } else { "video_streamer" };
        truth.insert(format!("user{u:03}"), segment.to_string());
        for minute in 0..MINUTES {
            let per_minute = if gamer {
                rng.random_range(8..14)
            } else {
                rng.random_range(1..4)
            };
            for _ in 0..per_minute {
                let ts_ms = minute * WINDOW_MS + rng.random_range(0..WINDOW_MS);
                let mut e = Event::new(
                    ts_ms,
                    format!("user{u:03}"),
                    if gamer { "game_move" } else { "stream_chunk" },
                );
                e.bytes_in = Some(if gamer {
                    rng.random_range(200..2_000)
                } else {
                    rng.random_range(500_000..3_000_000)
                });
                e.latency_ms = Some(if gamer {
                    rng.random_range(5.0..30.0)
                } else {
                    rng.random_range(40.0..200.0)
                });
                if authenticated {
                    e.authenticated = true;
                    e.segment = Some(segment.to_string());
                }
                events.push(e);
            }
        }
    }
    events.sort_by(|a, b| {
        a.ts_ms
            .cmp(&b.ts_ms)
            .then_with(|| a.user_id.cmp(&b.user_id))
    });
    (events, truth)
}
