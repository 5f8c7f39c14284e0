//! The backfill's memory and cost per event by the number of distinct users (issue 21,
//! point 4: a million distinct users over a day in at most 4 GiB, cost per event flat within
//! 1.3× from 10,000 to 1,000,000 users).
//!
//! Run with `cargo bench --bench users` (it does nothing under `cargo test`). For each count
//! in `PF_BENCH_USER_COUNTS` [`11000,110000,1100000`] simulated users, smallest first, it
//!
//! 1. simulates them over one day (seed `PF_BENCH_SEED` [42]) with sparse activity: three
//!    sessions a day on average (`--sessions-per-day 3`), of a median minute
//!    (`--session-minutes 1`), so about 93% of the simulated users are active (1,100,000
//!    simulated users give about 1,020,000 distinct ones) with about 11 events each;
//! 2. counts the events and the distinct user ids in the simulated files;
//! 3. backfills them with the default configuration (the models on; `PF_BENCH_MODEL_FREE=1`
//!    for the standardised embedder and no forecaster), timing the process, and takes the
//!    events read and the peak resident memory from the run's own `run.json` (`events`,
//!    `peak_rss_bytes`). A backfill shorter than `PF_BENCH_REPEAT_UNDER_SECS` [60] seconds
//!    runs again, `PF_BENCH_USER_ROUNDS` [3] times in all, and its median time counts: a
//!    three-second run is moved most by this shared machine's noise (the same 11,000 users
//!    took 2.8–3.7 s), where a four-minute one averages it out;
//! 4. removes the simulation and the output before the next count (the largest output is
//!    about 2.5 GB).
//!
//! It prints a row per count (distinct users, events, events per one-minute window, wall,
//! µs per event, peak RSS) and at the end the largest µs per event over the smallest, and the
//! peak RSS of the largest run against 4 GiB.

use arrow_array::cast::AsArray;
use arrow_array::Array;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;
use std::collections::HashSet;
use std::fs::File;
use std::path::Path;
use std::process::Command;

mod common;
use common::env_or;
#[path = "common/process.rs"]
mod process;
use process::run;
#[path = "common/files.rs"]
mod files;
use files::parquet_files;

/// The release binary `cargo bench` builds for this target.
const BINARY: &str = env!("CARGO_BIN_EXE_personaflow");
/// Point 4's memory bound.
const MEMORY_BOUND: u64 = 4 << 30;
/// One day of one-minute windows (the default window).
const WINDOWS_PER_DAY: f64 = 1440.0;

/// The events and the distinct `user_id`s in the Parquet files under `events`.
fn count_users(events: &Path) -> (u64, usize) {
    let mut users: HashSet<String> = HashSet::new();
    let mut rows = 0u64;
    for path in parquet_files(events) {
        let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).expect("opens"))
            .expect("reads the footer");
        let column = builder
            .schema()
            .index_of("user_id")
            .expect("a user_id column");
        let mask = ProjectionMask::roots(builder.parquet_schema(), [column]);
        for batch in builder.with_projection(mask).build().expect("builds") {
            let batch = batch.expect("decodes a batch");
            let ids = batch.column(0).as_string::<i32>();
            rows += ids.len() as u64;
            for id in ids.iter().flatten() {
                if !users.contains(id) {
                    users.insert(id.to_string());
                }
            }
        }
    }
    (rows, users.len())
}

/// Runs the bench (see the module documentation); also a part of `issue21`.
pub fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("users: run it with `cargo bench --bench users`; skipped");
        return;
    }
    let counts: Vec<u64> = std::env::var("PF_BENCH_USER_COUNTS")
        .unwrap_or_else(|_| "11000,110000,1100000".into())
        .split(',')
        .map(|c| {
            c.trim()
                .parse()
                .expect("PF_BENCH_USER_COUNTS: comma-separated integers")
        })
        .collect();
    let seed: u64 = env_or("PF_BENCH_SEED", 42);
    let rounds: usize = env_or("PF_BENCH_USER_ROUNDS", 3);
    let repeat_under: f64 = env_or("PF_BENCH_REPEAT_UNDER_SECS", 60.0);
    let model_free = env_or("PF_BENCH_MODEL_FREE", 0) == 1;
    let env: &[(&str, &str)] = if model_free {
        &[
            ("PERSONAFLOW__EMBEDDER__KIND", "standardised"),
            ("PERSONAFLOW__FORECASTER__KIND", "none"),
        ]
    } else {
        &[]
    };
    println!(
        "users: one day, seed {seed}, --sessions-per-day 3 --session-minutes 1, {}",
        if model_free {
            "model-free"
        } else {
            "default models"
        }
    );
    println!(
        "| simulated users | distinct users | events | events per window | wall | µs per event | peak RSS |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut per_event: Vec<f64> = Vec::new();
    let mut last_peak = 0u64;
    for &n in &counts {
        let work = tempfile::tempdir().expect("a temporary directory");
        let sim = work.path().join("sim");
        run(Command::new(BINARY)
            .args(["simulate", "-q", "--days", "1", "--sessions-per-day", "3"])
            .args(["--session-minutes", "1", "--users", &n.to_string()])
            .args(["--seed", &seed.to_string(), "--out"])
            .arg(&sim));
        let events = sim.join("events");
        let (rows, distinct) = count_users(&events);
        let out = work.path().join("out");
        // (seconds, peak RSS) of each run; short runs again, up to `rounds`.
        let mut runs: Vec<(f64, u64)> = Vec::new();
        while runs.is_empty() || (runs.len() < rounds && runs[0].0 < repeat_under) {
            let started = std::time::Instant::now();
            run(Command::new(BINARY)
                .args(["backfill", "-q", "--overwrite", "--input"])
                .arg(&events)
                .arg("--output")
                .arg(&out)
                .envs(env.iter().copied()));
            let secs = started.elapsed().as_secs_f64();
            let report: serde_json::Value = serde_json::from_slice(
                &std::fs::read(out.join("run.json")).expect("the run's run.json"),
            )
            .expect("run.json parses");
            let peak = report["peak_rss_bytes"].as_u64().expect("peak_rss_bytes");
            assert_eq!(
                report["events"].as_u64(),
                Some(rows),
                "the run read every event"
            );
            runs.push((secs, peak));
        }
        let mut by_time = runs.clone();
        by_time.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (secs, _) = by_time[by_time.len() / 2];
        let peak = runs.iter().map(|r| r.1).max().expect("a run");
        let us = secs * 1e6 / rows as f64;
        per_event.push(us);
        last_peak = peak;
        let each = match runs.len() {
            1 => String::new(),
            _ => {
                let each: Vec<String> = runs.iter().map(|r| format!("{:.1}", r.0)).collect();
                format!(" (median of {})", each.join(", "))
            }
        };
        println!(
            "| {n} | {distinct} | {rows} | {:.0} | {secs:.1} s{each} | {us:.1} | {} MiB |",
            rows as f64 / WINDOWS_PER_DAY,
            peak >> 20
        );
    }
    let most = per_event.iter().copied().fold(f64::MIN, f64::max);
    let least = per_event.iter().copied().fold(f64::MAX, f64::min);
    println!(
        "users: µs per event, largest over smallest: {:.2}x (point 4: at most 1.3x); peak RSS \
         of the largest run {} MiB ({} 4 GiB)",
        most / least,
        last_peak >> 20,
        if last_peak <= MEMORY_BOUND {
            "within"
        } else {
            "above"
        }
    );
}
