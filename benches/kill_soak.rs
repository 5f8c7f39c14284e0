//! The SIGKILL soak of the continuous job on a real broker (tansu): how long a restarted job
//! takes to its first new checkpoint, and that the union of the outputs of many killed runs
//! equals the backfill's, row for row.
//!
//! ```text
//! cargo bench --bench kill_soak                    # 20 kills, 300 users over 6 hours
//! PF_SOAK_KILLS=50 PF_SOAK_USERS=1000 cargo bench --bench kill_soak
//! ```
//!
//! 1. Simulates `PF_SOAK_USERS` users (default 300) for `PF_SOAK_HOURS` hours (default 6),
//!    seed 17, and starts tansu (`PF_TANSU`, else `~/.cache/personaflow/tools/bin/tansu`,
//!    which `scripts/setup-tansu.sh` installs) with a 3-partition `events` topic.
//! 2. A producer thread (an rdkafka client of this process: another Kafka client than the
//!    job's) writes the events in `PF_SOAK_KILLS + 1` slices in event-time order, one message
//!    per produce batch (tansu mishandles fetches inside a batch: see the producer); each run
//!    of `personaflow run` gets the next slice, written while it runs.
//! 3. `PF_SOAK_KILLS` times (default 20): start the job, measure the time from its start to
//!    its first checkpoint past the previous one (polling `_checkpoint.json` every 10 ms), wait
//!    a seeded random 0-3 s more, SIGKILL it.
//! 4. Produces the last slice, runs the job with `--until-end`, backfills the same events with
//!    the same configuration, and compares every table: rows missing from the stream and rows
//!    it wrote twice.
//!
//! `PF_SOAK_KEEP=DIR` keeps the scenario and both outputs there. Prints the
//! restart-to-checkpoint p50/p99/max, the state files' size and the comparison;
//! exits non-zero if a row is missing or duplicated. Numbers are from one run.

#[allow(dead_code)]
#[path = "../tests/cli/broker.rs"]
mod broker;
#[allow(dead_code)]
#[path = "../tests/cli/support.rs"]
mod support;

use broker::{Tansu, OUTPUT_TOPICS};
use rand::{Rng, SeedableRng};
use rdkafka::config::ClientConfig;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

mod common;
use common::env_or;

/// Partitions of the events topic.
const PARTITIONS: u32 = 3;
/// The longest a restarted job may take to its first new checkpoint before the soak fails.
const CHECKPOINT_DEADLINE: Duration = Duration::from_secs(300);
/// Persona and drift settings that find personas and drift events among a few hundred users.
const CONFIG: &str = "[personas]\nmin_users = 5\n[drift]\nbaseline = 20\nrecent = 5\n\
                      min_points = 3\n";

fn checkpointed_through(out: &Path) -> Option<u64> {
    let bytes = std::fs::read(out.join("_checkpoint.json")).ok()?;
    let c: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    c["emitted_through"].as_u64()
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

fn main() {
    let kills: usize = env_or("PF_SOAK_KILLS", 20);
    let users: u32 = env_or("PF_SOAK_USERS", 300);
    let hours: f64 = env_or("PF_SOAK_HOURS", 6.0);
    let tansu = std::env::var_os("PF_TANSU")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/personaflow/tools/bin/tansu"))
        })
        .filter(|p| p.is_file())
        .expect("tansu is needed: run scripts/setup-tansu.sh (or set PF_TANSU)");
    let tmp = tempfile::tempdir().unwrap();
    let tmp = match std::env::var_os("PF_SOAK_KEEP") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Kept::Dir(dir)
        }
        None => Kept::Temp(tmp),
    };
    let sim = tmp.path().join("sim");
    support::simulate(&sim, users, hours / 24.0, 17, &[]).ok();
    let events = sim.join("events");
    let config = tmp.path().join("job.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let cfg = config.to_str().unwrap();

    let broker = Tansu::start(tansu);
    broker.create_topic("events", PARTITIONS);
    for t in OUTPUT_TOPICS {
        broker.create_topic(t, 1);
    }
    let brokers = broker.brokers();
    let out = tmp.path().join("stream");
    let run = |extra: &[&str]| {
        let mut c = support::personaflow();
        c.args([
            "run",
            "--brokers",
            &brokers,
            "--topic",
            "events",
            "--group",
            "soak",
        ])
        .arg("--output")
        .arg(&out)
        .args([
            "--workers",
            support::WORKERS,
            "--metrics-addr",
            "",
            "--config",
            cfg,
        ])
        .args(extra);
        c
    };

    // The producer: one slice per run, over about two seconds.
    let producer =
        support::SlicedProducer::start(&brokers, &events, kills + 1, Duration::from_secs(2));
    let total = producer.total();

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(env_or("PF_SOAK_SEED", 29));
    let mut to_checkpoint = Vec::new();
    let mut last = None;
    let mut state_bytes = Vec::new();
    for kill in 0..kills {
        producer.release(kill);
        let started = Instant::now();
        let mut job = run(&[])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let through = loop {
            if let Some(t) = checkpointed_through(&out).filter(|t| last.is_none_or(|l| *t > l)) {
                break t;
            }
            if let Some(status) = job.try_wait().unwrap() {
                panic!("run {kill} exited ({status}) before its first checkpoint");
            }
            assert!(
                started.elapsed() < CHECKPOINT_DEADLINE,
                "run {kill}: no new checkpoint within {CHECKPOINT_DEADLINE:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        let secs = started.elapsed().as_secs_f64();
        to_checkpoint.push(secs);
        std::thread::sleep(Duration::from_millis(rng.random_range(0..3_000)));
        job.kill().unwrap();
        job.wait().unwrap();
        // The run may have checkpointed again before the kill: the next one must pass that.
        let through = checkpointed_through(&out).unwrap_or(through);
        let state: u64 = std::fs::read_dir(out.join("_state"))
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        state_bytes.push(state);
        eprintln!(
            "kill {:>2}: first new checkpoint {secs:.2}s after the start (through window {through}), state {state} bytes",
            kill + 1
        );
        last = Some(through);
    }
    producer.release(kills);
    producer.finish();
    let (messages, distinct) = topic_contents(&brokers, "events");
    println!(
        "the events topic holds {messages} messages, {distinct} distinct, for {total} events produced"
    );
    let finish = support::run_cmd(&mut run(&["--until-end"])).ok();
    eprintln!("{}", finish.stderr.lines().last().unwrap_or_default());
    let back = tmp.path().join("backfill");
    support::backfill(&events, &back, &["--config", cfg]).ok();
    // The last state, in its binary form and as the JSON of the version before.
    let (binary, json) = {
        let spec = personaflow_operators::WindowSpec::default();
        let window = checkpointed_through(&out).expect("a checkpoint");
        let workers: usize = support::WORKERS.parse().unwrap();
        let state = personaflow_dataflow::snapshot::load(&out, spec, window, workers)
            .expect("the last state loads");
        let binary: u64 = (0..workers)
            .map(|w| {
                let p = personaflow_dataflow::snapshot::state_path(&out, spec, window, w);
                std::fs::metadata(p).map_or(0, |m| m.len())
            })
            .sum();
        (binary, serde_json::to_vec(&state).unwrap().len() as u64)
    };

    let mut sorted = to_checkpoint.clone();
    sorted.sort_by(f64::total_cmp);
    println!(
        "kill soak: {kills} SIGKILLs on tansu, {users} users over {hours} h ({total} events, {PARTITIONS} partitions)"
    );
    println!(
        "restart to first new checkpoint: p50 {:.2} s, p99 {:.2} s, max {:.2} s; state files {} KiB per checkpoint (mean over the kills)",
        quantile(&sorted, 0.5),
        quantile(&sorted, 0.99),
        sorted.last().copied().unwrap_or(f64::NAN),
        state_bytes.iter().sum::<u64>() / state_bytes.len().max(1) as u64 / 1024
    );
    println!(
        "last state: {} KiB binary over the workers, {} KiB as JSON (the format before)",
        binary / 1024,
        json / 1024
    );
    println!(
        "{:<20} {:>9} {:>9} {:>8} {:>10}",
        "table", "stream", "backfill", "missing", "duplicate"
    );
    let mut bad = 0;
    for table in support::PARTITIONED_TABLES
        .iter()
        .chain(&support::DERIVED_TABLES)
    {
        let rows = |root: &Path| {
            if root.join(table).exists() && !support::parquet_files(&root.join(table)).is_empty() {
                support::output_table(root, table).sorted_rows()
            } else {
                Vec::new()
            }
        };
        let (s, b) = (rows(&out), rows(&back));
        let mut dedup = s.clone();
        dedup.dedup();
        let duplicate = s.len() - dedup.len();
        let missing = b.iter().filter(|r| dedup.binary_search(r).is_err()).count();
        let extra = dedup.iter().filter(|r| b.binary_search(r).is_err()).count();
        bad += duplicate + missing + extra;
        println!(
            "{table:<20} {:>9} {:>9} {missing:>8} {duplicate:>10}{}",
            s.len(),
            b.len(),
            if extra > 0 {
                format!(" ({extra} not in the backfill)")
            } else {
                String::new()
            }
        );
        if let Some(m) = b.iter().find(|r| dedup.binary_search(r).is_err()) {
            eprintln!("  {table}: e.g. missing {m}");
        }
        if let Some(x) = dedup.iter().find(|r| b.binary_search(r).is_err()) {
            eprintln!("  {table}: e.g. not in the backfill {x}");
        }
    }
    assert_eq!(bad, 0, "the stream's outputs differ from the backfill's");
}

/// Messages in `topic` (all partitions, from the beginning) and how many distinct payloads.
fn topic_contents(brokers: &str, topic: &str) -> (usize, usize) {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "soak-count")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    let mut ends = Vec::new();
    for p in 0..PARTITIONS as i32 {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(30))
            .unwrap();
        tpl.add_partition_offset(topic, p, rdkafka::Offset::Offset(low))
            .unwrap();
        ends.push(high - low);
    }
    let expected: i64 = ends.iter().sum();
    consumer.assign(&tpl).unwrap();
    let mut payloads = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while (payloads.len() as i64) < expected && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            payloads.push(m.payload().unwrap_or_default().to_vec());
        }
    }
    let n = payloads.len();
    payloads.sort();
    payloads.dedup();
    (n, payloads.len())
}

/// The working directory: a temporary one, or `PF_SOAK_KEEP` (kept for a look).
enum Kept {
    Temp(tempfile::TempDir),
    Dir(PathBuf),
}

impl Kept {
    fn path(&self) -> &Path {
        match self {
            Kept::Temp(t) => t.path(),
            Kept::Dir(d) => d,
        }
    }
}
