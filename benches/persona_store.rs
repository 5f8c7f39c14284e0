//! The persona store under load: `PF_BENCH_USERS` [1,000,000] users, each with a window of
//! records shaped like a backfill's (a 16-d profile, five resonance segments, a persona
//! assignment, a policy, a socket profile, four forecast horizons), applied as the sinks apply
//! them; then the real HTTP server on 127.0.0.1 and an open-loop load generator in this
//! process asking `GET /v1/users/{id}` for uniformly random users at `PF_BENCH_RATE` [10,000]
//! requests/s over `PF_BENCH_CONNECTIONS` [32] keep-alive connections for `PF_BENCH_SECS` [10]
//! seconds, `PF_BENCH_TRIALS` [3] times (each trial on new connections; the p99 of each and
//! their median reported); the server on `PF_BENCH_SERVER_THREADS` [2] tokio worker threads.
//! A request that waits for its connection (the previous answer came after its
//! scheduled time) counts from its schedule, so a stall counts against every request it
//! delays, not just one; otherwise it counts from its send (the generator's timer wakes up to
//! a millisecond late). Reports the store's resident memory per user (and
//! per user-window with `PF_BENCH_WINDOWS` [1] windows kept), the cost of applying a
//! user-window, and latency percentiles.
//!
//! Run with `cargo bench --bench persona_store` (it does nothing under `cargo test`). The load
//! generator shares the machine's cores with the server: on 2 cores it is a lower bound.

use personaflow_io::tables::*;
use personaflow_serve::api::{self, ApiConfig, AppState};
use personaflow_serve::store::{PersonaStore, StoreConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;
use common::env_or;

/// Resident memory of this process, bytes (Linux).
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

const SEGMENTS: [&str; 5] = [
    "casual_browser",
    "gamer",
    "iot_device",
    "remote_worker",
    "video_streamer",
];

fn user(i: usize) -> String {
    format!("u{i:07}")
}

/// Every user table's batch for users `range` at window end `w`.
fn batches(
    range: std::ops::Range<usize>,
    w: i64,
    rng: &mut ChaCha8Rng,
) -> Vec<(Table, arrow_array::RecordBatch)> {
    let n = range.len();
    let mut profiles = Vec::with_capacity(n);
    let mut resonance = Vec::with_capacity(n * 5);
    let mut assignments = Vec::with_capacity(n);
    let mut policies = Vec::with_capacity(n);
    let mut sockets = Vec::with_capacity(n);
    let mut forecasts = Vec::with_capacity(n * 4);
    for i in range {
        let u = user(i);
        let top = rng.random_range(0..5);
        profiles.push(ProfileRow {
            window_end: w,
            user_id: u.as_str().into(),
            embedder: "rnn-vae-v1".into(),
            embedding: (0..16).map(|_| rng.random_range(-2.0..2.0)).collect(),
            anomaly_score: Some(rng.random()),
            history_windows: 8,
            events: rng.random_range(1..200),
            authenticated: rng.random_bool(0.7),
            segment: Some(SEGMENTS[top].into()),
            device: Some("desktop".into()),
            os: Some("linux".into()),
            country: Some("DE".into()),
        });
        for (s, name) in SEGMENTS.iter().enumerate() {
            resonance.push(ResonanceRow {
                window_end: w,
                user_id: u.as_str().into(),
                segment: (*name).into(),
                cosine: rng.random_range(-1.0..1.0),
                probability: if s == top { 0.9 } else { 0.025 },
                resonating: s == top,
                top: s == top,
                cold_start: false,
            });
        }
        assignments.push(PersonaAssignmentRow {
            window_end: w,
            user_id: u.as_str().into(),
            persona_id: top as u32,
            distance: rng.random(),
            persona_ids: (0..7).collect(),
            probabilities: (0..7).map(|_| rng.random()).collect(),
        });
        policies.push(PolicyRow {
            window_end: w,
            user_id: u.as_str().into(),
            persona: SEGMENTS[top].into(),
            personas: vec![SEGMENTS[top].into(), "default".into()],
            probabilities: vec![0.9, 0.1],
            diffserv_class: "multimedia-streaming".into(),
            dscp: 26,
            endpoint_class: "cdn-edge".into(),
            floor_bps: 256_000,
            guaranteed_bps: 4_000_000,
            ceiling_bps: 25_000_000,
            allocated_bps: rng.random_range(256_000..25_000_000),
            sized_for_bps: rng.random_range(256_000..25_000_000),
            burst_bytes: 262_144,
            priority_weight: 2.0,
            latency_target_ms: 150.0,
            rate_limit_rps: 20.0,
            request_limit_rps: 50.0,
            send_buffer_min: 65_536,
            send_buffer_max: 4_194_304,
            receive_buffer_min: 65_536,
            receive_buffer_max: 8_388_608,
            authentication: "password",
            inspection: "metadata",
            allowed_app_classes: vec!["video".into(), "web".into()],
            allowed_ports: vec!["443".into(), "80".into(), "1935".into()],
            vpn_required: false,
            current_bytes: rng.random_range(0..10_000_000),
            current_requests: rng.random_range(0..500),
        });
        sockets.push(SocketProfileRow {
            window_end: w,
            user_id: u.as_str().into(),
            predicted_bytes_per_s: rng.random_range(0.0..3e6),
            predicted_requests_per_s: rng.random_range(0.0..20.0),
            request_type: "streaming",
            risk: Some(rng.random()),
            rtt_ms: 50.0,
            send_buffer: 1_048_576,
            receive_buffer: 2_097_152,
            rate_limit_bytes_per_s: 3_750_000,
            security_level: "standard",
            endpoint: "cdn-edge".into(),
        });
        for h in 1..=4u32 {
            forecasts.push(ForecastRow {
                window_end: w,
                user_id: u.as_str().into(),
                forecaster: "lstm-v1".into(),
                horizon: h,
                target_window_end: w + i64::from(h) * 60_000,
                predicted_requests: rng.random_range(0.0..300.0),
                predicted_bytes: rng.random_range(0.0..2e7),
            });
        }
    }
    vec![
        (Table::Profiles, ProfileRow::to_batch(&profiles)),
        (Table::Resonance, ResonanceRow::to_batch(&resonance)),
        (
            Table::PersonaAssignments,
            PersonaAssignmentRow::to_batch(&assignments),
        ),
        (Table::Policies, PolicyRow::to_batch(&policies)),
        (Table::SocketProfiles, SocketProfileRow::to_batch(&sockets)),
        (Table::Forecasts, ForecastRow::to_batch(&forecasts)),
    ]
}

/// One keep-alive connection's requests: each at its scheduled time; returns the latencies
/// (from the schedule) and the errors.
async fn connection(
    addr: std::net::SocketAddr,
    schedule: Vec<(Instant, usize)>,
) -> (Vec<Duration>, u64) {
    let mut latencies = Vec::with_capacity(schedule.len());
    let mut errors = 0;
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connects");
    stream.set_nodelay(true).ok();
    let mut buf = vec![0u8; 64 * 1024];
    // When the previous answer came (the connection was busy until then).
    let mut free_at = Instant::now();
    for (at, id) in schedule {
        tokio::time::sleep_until(at.into()).await;
        // Latency counts from the schedule when the connection was still busy with the
        // previous request then (a slow server delays every request behind it: no coordinated
        // omission), else from the send (the timer wakes up to a millisecond late, which is
        // the generator's, not the server's).
        let from = if free_at > at { at } else { Instant::now() };
        let req = format!("GET /v1/users/{} HTTP/1.1\r\nHost: bench\r\n\r\n", user(id));
        if stream.write_all(req.as_bytes()).await.is_err() {
            errors += 1;
            continue;
        }
        // Read the head, then the body by its content length.
        let mut have = 0;
        let (head_end, length) = loop {
            let n = stream.read(&mut buf[have..]).await.unwrap_or(0);
            if n == 0 {
                break (0, 0);
            }
            have += n;
            if let Some(p) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..p]).to_ascii_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if !head.starts_with("http/1.1 200") {
                    errors += 1;
                }
                break (p + 4, len);
            }
            if have == buf.len() {
                buf.resize(buf.len() * 2, 0);
            }
        };
        if head_end == 0 {
            errors += 1;
            break;
        }
        while have < head_end + length {
            if buf.len() < head_end + length {
                buf.resize(head_end + length, 0);
            }
            let n = stream.read(&mut buf[have..]).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            have += n;
        }
        latencies.push(from.elapsed());
        free_at = Instant::now();
    }
    (latencies, errors)
}

/// The Redis sink's cost per user-window: `PF_BENCH_REDIS_USERS` [100,000] users' windows
/// written to a redis-server of the bench's own (`PERSONAFLOW_REDIS_SERVER`, which
/// `scripts/test.sh` installs; skipped without it), pipelined per table batch as the job does.
fn redis_cost(rng: &mut ChaCha8Rng) {
    let Ok(bin) = std::env::var("PERSONAFLOW_REDIS_SERVER") else {
        println!("persona_store: redis sink skipped (set PERSONAFLOW_REDIS_SERVER)");
        return;
    };
    let users: usize = env_or("PF_BENCH_REDIS_USERS", 100_000);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = std::process::Command::new(bin)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server starts");
    let url = format!("redis://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let sink = loop {
        match personaflow_serve::redis::RedisSink::connect(&url, "personaflow:user:") {
            Ok(s) => break s,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "redis-server did not answer: {e}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    let mut writing = Duration::ZERO;
    const CHUNK: usize = 10_000;
    for lo in (0..users).step_by(CHUNK) {
        let b = batches(lo..(lo + CHUNK).min(users), 1_767_571_200_000, rng);
        let t = Instant::now();
        for (table, batch) in &b {
            sink.write(*table, batch).expect("writes");
        }
        writing += t.elapsed();
    }
    server.kill().ok();
    server.wait().ok();
    println!(
        "persona_store: redis sink: {users} user-windows (persona, resonance, policy: 3 conditional writes, EVALSHA, each) in {:.2} s: {:.2} us per user-window, pipelined per batch of {CHUNK} users",
        writing.as_secs_f64(),
        writing.as_secs_f64() * 1e6 / users as f64
    );
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("persona_store: run it with `cargo bench --bench persona_store`; skipped");
        return;
    }
    let users: usize = env_or("PF_BENCH_USERS", 1_000_000);
    let windows: usize = env_or("PF_BENCH_WINDOWS", 1);
    let rate: f64 = env_or("PF_BENCH_RATE", 10_000.0);
    let secs: f64 = env_or("PF_BENCH_SECS", 10.0);
    let conns: usize = env_or("PF_BENCH_CONNECTIONS", 32);
    let trials: usize = env_or("PF_BENCH_TRIALS", 3).max(1);
    let server_threads: usize = env_or("PF_BENCH_SERVER_THREADS", 2).max(1);
    let mut rng = ChaCha8Rng::seed_from_u64(42);

    let before = rss_bytes();
    let store = Arc::new(PersonaStore::new(StoreConfig {
        history_windows: windows,
        ..StoreConfig::default()
    }));
    let started = Instant::now();
    let mut applying = Duration::ZERO;
    const CHUNK: usize = 10_000;
    for w in 0..windows {
        let end = 1_767_571_200_000 + 60_000 * w as i64;
        for lo in (0..users).step_by(CHUNK) {
            let b = batches(lo..(lo + CHUNK).min(users), end, &mut rng);
            let t = Instant::now();
            for (table, batch) in &b {
                store.apply(*table, batch).expect("applies");
            }
            applying += t.elapsed();
        }
    }
    let after = rss_bytes();
    let user_windows = (users * windows) as f64;
    println!(
        "persona_store: {users} users x {windows} windows stored in {:.1} s ({:.2} us per user-window applied); RSS {:.2} GiB more: {:.0} bytes per user, {:.0} per user-window",
        started.elapsed().as_secs_f64(),
        applying.as_secs_f64() * 1e6 / user_windows,
        (after - before) as f64 / (1u64 << 30) as f64,
        (after - before) as f64 / users as f64,
        (after - before) as f64 / user_windows,
    );

    redis_cost(&mut rng);

    let state = AppState::new(store, ApiConfig::default());
    state.ready.store(true, Ordering::Release);
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(server_threads)
        .enable_all()
        .build()
        .unwrap();
    let listener = server_rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        server_rt
            .block_on(api::serve(listener, state, async {
                stopped.await.ok();
            }))
            .unwrap();
    });

    let load_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut p99s = Vec::new();
    for trial in 1..=trials {
        p99s.push(load(
            &load_rt, addr, users, rate, secs, conns, trial, &mut rng,
        ));
    }
    stop.send(()).ok();
    server.join().unwrap();
    let mut sorted = p99s.clone();
    sorted.sort_by(f64::total_cmp);
    println!(
        "persona_store: p99 per trial {}; median {:.3} ms; at most 2 ms in {} of {trials} trials",
        p99s.iter()
            .map(|p| format!("{p:.3} ms"))
            .collect::<Vec<_>>()
            .join(", "),
        sorted[sorted.len() / 2],
        p99s.iter().filter(|p| **p <= 2.0).count(),
    );
}

/// One trial: `rate` requests/s for `secs` seconds over `conns` new connections, request k at
/// start + k / rate on connection k mod conns; prints its percentiles and returns its p99 (ms).
#[allow(clippy::too_many_arguments)]
fn load(
    rt: &tokio::runtime::Runtime,
    addr: std::net::SocketAddr,
    users: usize,
    rate: f64,
    secs: f64,
    conns: usize,
    trial: usize,
    rng: &mut ChaCha8Rng,
) -> f64 {
    let total = (rate * secs) as usize;
    let start = Instant::now() + Duration::from_millis(500);
    let mut schedules: Vec<Vec<(Instant, usize)>> = vec![Vec::new(); conns];
    for k in 0..total {
        let at = start + Duration::from_secs_f64(k as f64 / rate);
        schedules[k % conns].push((at, rng.random_range(0..users)));
    }
    let (mut latencies, errors) = rt.block_on(async {
        let tasks: Vec<_> = schedules
            .into_iter()
            .map(|s| tokio::spawn(connection(addr, s)))
            .collect();
        let mut all = Vec::with_capacity(total);
        let mut errors = 0;
        for t in tasks {
            let (l, e) = t.await.unwrap();
            all.extend(l);
            errors += e;
        }
        (all, errors)
    });
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort();
    let q = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
    };
    println!(
        "persona_store: trial {trial}: GET /v1/users/{{id}} at {rate:.0} req/s offered over {conns} connections for {secs} s: {} answered ({:.0} req/s achieved), {errors} errors; latency p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
        latencies.len(),
        latencies.len() as f64 / elapsed,
        q(0.50),
        q(0.90),
        q(0.99),
        q(0.999),
        latencies.last().map_or(f64::NAN, |d| d.as_secs_f64() * 1e3),
    );
    q(0.99)
}
