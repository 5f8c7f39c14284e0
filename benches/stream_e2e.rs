//! End-to-end benchmark of the continuous job through a Kafka broker.
//!
//! ```text
//! cargo bench --bench stream_e2e                      # tansu if installed, else the mock cluster
//! PF_BENCH_BROKER=mock cargo bench --bench stream_e2e # force librdkafka's mock cluster
//! ```
//!
//! 1. Simulates `PF_BENCH_USERS` users (default 300) for `PF_BENCH_HOURS` hours (default 10),
//!    seed 7, and produces the events to a 4-partition topic with `personaflow produce`.
//! 2. **Throughput and memory**: runs `personaflow run --until-end` over the whole topic
//!    (the job consumes as fast as it can), scraping `/metrics` for the watermark and reading
//!    the process's resident memory (`VmRSS`) as it goes: the RSS when the watermark passes 1
//!    hour of event time and at the end (10 hours). Sustained events/s come from `run.json`.
//!    Then `PF_BENCH_STREAM_ROUNDS` - 1 more rounds (default 3 in all), each a catch-up of
//!    the same topic by a fresh consumer group and the backfill of the same events right
//!    after it: the throughput ratio is the median of the rounds' ratios, each measured
//!    within minutes on the same machine (one pair alone moved by ±0.08 run to run).
//! 3. **Latency**: a fresh topic is fed by a paced producer (`PF_BENCH_PACED_SHARE` of the
//!    median sustained throughput, default 0.5, for `PF_BENCH_PACED_SECS` seconds, default 20, of
//!    the events from the start) while the job runs;
//!    once the producer is done and the job caught up, SIGTERM; the close-to-output latency
//!    p50/p99 come from `run.json`. Then the same on another fresh topic with the consumers'
//!    `stream.fetch_wait` set to `PF_BENCH_FETCH_WAIT` (default `10ms`; empty: skipped), for
//!    brokers that hold a fetch to its limit (tansu does).
//!
//! 4. With `PF_BENCH_BREAKDOWN` set, where the time goes: 2 and 3 again (3 with
//!    `PF_BENCH_FETCH_WAIT`) with `stream.fsync = false`, then without the output topics
//!    (`stream.output_topics = []`).
//!
//! Prints one table; the numbers are from one run (the machine is shared and noisy).

#[path = "../tests/cli/broker.rs"]
mod broker;

use broker::{Tansu, OUTPUT_TOPICS};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::env_or;

const PARTITIONS: i32 = 4;

fn personaflow() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_personaflow"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

fn check(cmd: &mut Command) -> String {
    let out = cmd.output().expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{cmd:?} failed: {stderr}");
    stderr
}

/// A broker: a tansu process (the tests' wrapper) or an in-process mock cluster.
enum Broker {
    Tansu(Tansu),
    Mock(MockCluster<'static, DefaultProducerContext>),
}

impl Broker {
    fn start() -> Broker {
        let choice = std::env::var("PF_BENCH_BROKER").unwrap_or_default();
        let tansu = std::env::var_os("PF_TANSU")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .map(|h| PathBuf::from(h).join(".cache/personaflow/tools/bin/tansu"))
            })
            .filter(|p| p.is_file());
        match (choice.as_str(), tansu) {
            ("mock", _) | (_, None) => Broker::Mock(MockCluster::new(1).expect("mock cluster")),
            (_, Some(bin)) => Broker::Tansu(Tansu::start(bin)),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Broker::Tansu(_) => "tansu (separate process, in-memory storage)",
            Broker::Mock(_) => "librdkafka mock cluster (in-process)",
        }
    }

    fn bootstrap(&self) -> String {
        match self {
            Broker::Tansu(t) => t.brokers(),
            Broker::Mock(c) => c.bootstrap_servers(),
        }
    }

    fn create_topic(&self, name: &str, partitions: i32) {
        match self {
            Broker::Tansu(t) => t.create_topic(name, partitions as u32),
            Broker::Mock(c) => c.create_topic(name, partitions, 1).unwrap(),
        }
    }
}

fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

fn rss_bytes(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = s
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// A catch-up of the whole `events` topic by consumer group `group` (`personaflow run
/// --until-end`, the job's environment `envs` added, its files under `dir`): its events/s.
fn catch_up(brokers: &str, dir: &Path, group: &str, envs: &[(&str, &str)]) -> f64 {
    let out = dir.join(format!("out-{group}"));
    let log = dir.join(format!("{group}.log"));
    let (mut job, _) = start_job(brokers, "events", group, &out, &log, &["--until-end"], envs);
    assert!(
        job.wait().unwrap().success(),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    run_json(&out)["events_per_sec"].as_f64().unwrap()
}

/// Rounds of the catch-up and the backfill (`PF_BENCH_STREAM_ROUNDS`).
const STREAM_ROUNDS: usize = 3;

/// The median of `v` (the mean of the middle two for an even count).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The backfill of `events` into `out`: its events/s.
fn backfill(events: &Path, out: &Path) -> f64 {
    check(
        personaflow()
            .args(["backfill", "--input"])
            .arg(events)
            .arg("--output")
            .arg(out),
    );
    run_json(out)["events_per_sec"].as_f64().unwrap()
}

/// Starts `personaflow run` with its stderr in `log`, and waits for its metrics address.
fn start_job(
    brokers: &str,
    topic: &str,
    group: &str,
    out: &Path,
    log: &Path,
    extra: &[&str],
    envs: &[(&str, &str)],
) -> (Child, String) {
    let mut child = personaflow()
        .args([
            "run",
            "--brokers",
            brokers,
            "--topic",
            topic,
            "--group",
            group,
        ])
        .arg("--output")
        .arg(out)
        .args(["--metrics-addr", "127.0.0.1:0"])
        .args(extra)
        .envs(envs.iter().copied())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("personaflow run starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(addr) = text.lines().find_map(|l| {
            l.strip_prefix("run: metrics on http://")?
                .strip_suffix("/metrics")
                .map(str::to_string)
        }) {
            return (child, addr);
        }
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            child.kill().ok();
            child.wait().ok();
            panic!("the job did not start: {text}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn run_json(out: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(out.join("run.json")).expect("run.json")).unwrap()
}

/// Runs the bench (see the module documentation); also a part of `issue21`.
pub fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // cargo test --benches
    }
    let users: u32 = env_or("PF_BENCH_USERS", 300);
    let hours: f64 = env_or("PF_BENCH_HOURS", 10.0);
    let paced_share: f64 = env_or("PF_BENCH_PACED_SHARE", 0.5);
    let paced_secs: f64 = env_or("PF_BENCH_PACED_SECS", 20.0);
    let tmp = tempfile::tempdir().unwrap();
    let sim = tmp.path().join("sim");
    check(
        personaflow()
            .args(["simulate", "--users", &users.to_string()])
            .args([
                "--days",
                &(hours / 24.0).to_string(),
                "--seed",
                "7",
                "--out",
            ])
            .arg(&sim),
    );
    let events = sim.join("events");
    let broker = Broker::start();
    let brokers = broker.bootstrap();
    broker.create_topic("events", PARTITIONS);
    for t in OUTPUT_TOPICS {
        broker.create_topic(t, 1);
    }
    let t = Instant::now();
    let produced = check(
        personaflow()
            .args([
                "produce",
                "--brokers",
                &brokers,
                "--topic",
                "events",
                "--input",
            ])
            .arg(&events),
    );
    let produce_secs = t.elapsed().as_secs_f64();
    eprintln!("{}", produced.trim());

    // Throughput and memory over the whole topic.
    let out = tmp.path().join("out");
    let log = tmp.path().join("run.log");
    let (mut job, addr) = start_job(
        &brokers,
        "events",
        "events",
        &out,
        &log,
        &["--until-end"],
        &[],
    );
    let pid = job.id();
    let (mut first_wm, mut rss_1h, mut rss_max) = (None::<f64>, None::<u64>, 0u64);
    let mut samples = Vec::new();
    while job.try_wait().unwrap().is_none() {
        if let (Some(text), Some(rss)) = (http_get(&addr, "/metrics"), rss_bytes(pid)) {
            let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
            if let Some(delay) = metric(&text, "personaflow_watermark_delay_seconds") {
                let wm = now - delay;
                let start = *first_wm.get_or_insert(wm);
                let event_hours = (wm - start) / 3600.0;
                samples.push((event_hours, rss));
                if event_hours >= 1.0 && rss_1h.is_none() {
                    rss_1h = Some(rss);
                }
            }
            rss_max = rss_max.max(rss);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        job.wait().unwrap().success(),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    let summary = run_json(&out);
    let rss_end = samples.last().map(|s| s.1);
    // The backfill of the same events, for the ratio.
    let backfill_eps = backfill(&events, &tmp.path().join("backfill"));
    let first_eps = summary["events_per_sec"].as_f64().unwrap();
    let total_events = summary["status"]["events"].as_u64().unwrap();
    // More rounds of the pair: a catch-up by a fresh group, then the backfill again.
    let mut rounds = vec![(first_eps, backfill_eps)];
    for r in 1..env_or("PF_BENCH_STREAM_ROUNDS", STREAM_ROUNDS).max(1) {
        let stream_eps = catch_up(&brokers, tmp.path(), &format!("events-round-{r}"), &[]);
        let back_eps = backfill(&events, &tmp.path().join(format!("backfill-{r}")));
        rounds.push((stream_eps, back_eps));
    }
    let events_per_sec = median(rounds.iter().map(|r| r.0).collect());
    let ratio = median(rounds.iter().map(|(s, b)| s / b).collect());
    let backfill_median = median(rounds.iter().map(|r| r.1).collect());

    // Latency under a paced producer: the events from the start, for
    // `PF_BENCH_PACED_SECS` seconds at the paced rate (at most all of them), long enough for
    // the job to settle into its steady state (a start-up transient of a second or two
    // is then a few of the closes measured, not most of them).
    let paced_files: Vec<PathBuf> = {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&events)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        files
    };
    let rate = (events_per_sec * paced_share).max(100.0);
    let paced_events = (total_events as f64).min(rate * paced_secs) as u64;
    // One paced run on `topic`, the job's environment `envs` added; its `run.json`.
    let paced_run = |topic: &str, envs: &[(&str, &str)]| -> serde_json::Value {
        broker.create_topic(topic, PARTITIONS);
        let out2 = tmp.path().join(format!("out-{topic}"));
        let log2 = tmp.path().join(format!("{topic}.log"));
        let (mut job2, addr2) = start_job(&brokers, topic, topic, &out2, &log2, &[], envs);
        let mut producer = personaflow()
            .args(["produce", "--brokers", &brokers, "--topic", topic])
            .args([
                "--rate",
                &rate.to_string(),
                "--limit",
                &paced_events.to_string(),
            ])
            .arg("--input")
            .args(&paced_files)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        assert!(producer.wait().unwrap().success());
        // Wait until the job has consumed everything (lag 0), then stop it.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let text = http_get(&addr2, "/metrics").unwrap_or_default();
            let lag: f64 = text
                .lines()
                .filter(|l| l.starts_with("personaflow_consumer_lag{"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            let consumed = metric(&text, "personaflow_events_consumed_total").unwrap_or(0.0);
            if lag == 0.0 && consumed >= paced_events as f64 || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        Command::new("kill")
            .args(["-TERM", &job2.id().to_string()])
            .status()
            .unwrap();
        assert!(
            job2.wait().unwrap().success(),
            "{}",
            std::fs::read_to_string(&log2).unwrap()
        );
        run_json(&out2)
    };
    let paced = paced_run("paced", &[]);
    // Again with the consumers' `stream.fetch_wait` lowered: tansu holds every fetch to its
    // limit (the default 100 ms) even while messages arrive, so the job's events come in
    // steps of it (BENCHMARKS.md, "The consumers' fetch wait").
    let fetch_wait = std::env::var("PF_BENCH_FETCH_WAIT").unwrap_or_else(|_| "10ms".into());
    let paced_fetch = (!fetch_wait.is_empty()).then(|| {
        paced_run(
            "paced-fetch",
            &[("PERSONAFLOW__STREAM__FETCH_WAIT", fetch_wait.as_str())],
        )
    });

    // Where the stream's time goes (`PF_BENCH_BREAKDOWN`): the same catch-up and paced runs
    // without fsync, and without the output topics (the job then only writes files).
    let variants: [(&str, (&str, &str)); 2] = [
        (
            "stream.fsync = false",
            ("PERSONAFLOW__STREAM__FSYNC", "false"),
        ),
        (
            "no output topics",
            ("PERSONAFLOW__STREAM__OUTPUT_TOPICS", "[]"),
        ),
    ];
    let breakdown: Vec<(&str, f64, serde_json::Value)> =
        if std::env::var_os("PF_BENCH_BREAKDOWN").is_some() {
            variants
                .iter()
                .enumerate()
                .map(|(i, (name, env))| {
                    let eps = catch_up(&brokers, tmp.path(), &format!("events-{i}"), &[*env]);
                    let mut envs = vec![*env];
                    if !fetch_wait.is_empty() {
                        envs.push(("PERSONAFLOW__STREAM__FETCH_WAIT", fetch_wait.as_str()));
                    }
                    (*name, eps, paced_run(&format!("paced-{i}"), &envs))
                })
                .collect()
        } else {
            Vec::new()
        };

    let mib = |b: Option<u64>| b.map_or("-".into(), |b| format!("{:.0} MiB", b as f64 / 1048576.0));
    let ms = |v: &serde_json::Value| {
        v.as_f64()
            .map_or("-".into(), |s| format!("{:.0} ms", s * 1000.0))
    };
    println!("stream_e2e: broker {}", broker.name());
    println!(
        "  input: {users} users, {hours} h of event time, {total_events} events, {PARTITIONS} partitions; produced in {produce_secs:.1}s"
    );
    println!(
        "  sustained (catch-up over the whole topic, 2 workers): {first_eps:.0} events/s, {:.1}s",
        summary["elapsed_secs"].as_f64().unwrap()
    );
    println!(
        "  backfill of the same events: {backfill_eps:.0} events/s; stream / backfill = {:.2}",
        first_eps / backfill_eps
    );
    if rounds.len() > 1 {
        let each: Vec<String> = rounds
            .iter()
            .map(|(s, b)| format!("{s:.0} / {b:.0} = {:.2}", s / b))
            .collect();
        println!(
            "  {} rounds (stream / backfill events/s): {}; median stream / backfill = {ratio:.2}, median sustained {events_per_sec:.0} events/s",
            rounds.len(),
            each.join(", ")
        );
    }
    let state_files = summary["state_files"].as_u64().unwrap_or(0);
    let state_bytes = summary["state_bytes"].as_u64().unwrap_or(0);
    println!(
        "  operator state (personas, pins, drift): {state_files} files stored, {} KiB each on average",
        state_bytes / state_files.max(1) / 1024
    );
    println!(
        "  resident memory: {} after 1 h of event time, {} after {hours} h (peak {})",
        mib(rss_1h),
        mib(rss_end),
        mib(Some(rss_max))
    );
    println!(
        "  paced at {rate:.0} events/s ({paced_share} of sustained), {} events: close-to-output latency p50 {}, p99 {} over {} windows",
        paced["status"]["events"],
        ms(&paced["latency_p50_secs"]),
        ms(&paced["latency_p99_secs"]),
        paced["status"]["windows_emitted"]
    );
    if let Some(p) = &paced_fetch {
        println!(
            "  the same with stream.fetch_wait = {fetch_wait}: p50 {}, p99 {} over {} windows",
            ms(&p["latency_p50_secs"]),
            ms(&p["latency_p99_secs"]),
            p["status"]["windows_emitted"]
        );
    }
    for (name, eps, paced) in &breakdown {
        println!(
            "  with {name}: sustained {eps:.0} events/s ({:.2} of the backfill's median); paced (fetch wait {fetch_wait}) p50 {}, p99 {}",
            eps / backfill_median,
            ms(&paced["latency_p50_secs"]),
            ms(&paced["latency_p99_secs"]),
        );
    }
    // The first sample at or after each whole hour of event time.
    let mut curve: Vec<String> = Vec::new();
    let mut next_hour = 1.0;
    for (h, r) in &samples {
        if *h >= next_hour {
            curve.push(format!("{h:.1}h {}", mib(Some(*r))));
            next_hour = h.floor() + 1.0;
        }
    }
    println!("  RSS by event time: {}", curve.join(", "));
}
