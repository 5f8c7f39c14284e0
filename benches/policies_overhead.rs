//! What the policies stage (policies, socket profiles, shaping feedback) costs a backfill: the
//! release binary on the same simulated events, alternately with `policy.enabled` off and on,
//! `PF_BENCH_PAIRS` [3] pairs in one run (alternating, so that the shared machine's drift
//! hits both alike); the ratio of their mean elapsed times is the overhead.
//!
//! Run with `cargo bench --bench policies_overhead` (it does nothing under `cargo test`).
//! `PF_BENCH_USERS` [2000] and `PF_BENCH_DAYS` [0.5] size the simulation, `PF_BENCH_SEED`
//! [42]; `PF_BENCH_MODEL_FREE=1` runs the model-free embedder and persistence forecaster
//! (the stage's share of a cheaper run). The simulation is kept in
//! `<target>/bench-data/policies-u<users>-d<days>-s<seed>/` and reused.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::env_or;

/// The release binary cargo built for this bench.
const BINARY: &str = env!("CARGO_BIN_EXE_personaflow");

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// CPU seconds (user + system) of this process's waited-for children so far, from
/// `/proc/self/stat` (`cutime`, `cstime`; clock ticks of 1/100 s on Linux); `None` elsewhere.
/// Less disturbed than elapsed time by other work on a shared machine.
fn children_cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // cutime and cstime are fields 16 and 17 of the line, 14 and 15 after the name.
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    Some((ticks(13)? + ticks(14)?) / 100.0)
}

fn run(cmd: &mut Command) {
    let status = cmd.status().expect("the binary runs");
    assert!(status.success(), "{cmd:?} failed");
}

/// One backfill; returns (elapsed seconds from run.json, CPU seconds, events/s, rows written
/// per table).
fn backfill(
    events: &Path,
    out: &Path,
    enabled: bool,
    model_free: bool,
) -> (f64, Option<f64>, f64, Value) {
    let cpu_before = children_cpu_secs();
    let mut cmd = Command::new(BINARY);
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["backfill", "--quiet", "--overwrite", "--input"])
        .arg(events)
        .arg("--output")
        .arg(out)
        .env("PERSONAFLOW__POLICY__ENABLED", enabled.to_string());
    if model_free {
        cmd.env("PERSONAFLOW__EMBEDDER__KIND", "standardised")
            .env("PERSONAFLOW__FORECASTER__KIND", "persistence");
    }
    run(&mut cmd);
    let cpu = children_cpu_secs().zip(cpu_before).map(|(a, b)| a - b);
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    (
        json["elapsed_secs"].as_f64().unwrap(),
        cpu,
        json["events_per_sec"].as_f64().unwrap(),
        json["rows_written"].clone(),
    )
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("policies_overhead: run it with `cargo bench --bench policies_overhead`; skipped");
        return;
    }
    let users: usize = env_or("PF_BENCH_USERS", 2_000);
    let days: f64 = env_or("PF_BENCH_DAYS", 0.5);
    let seed: u64 = env_or("PF_BENCH_SEED", 42);
    let pairs: usize = env_or("PF_BENCH_PAIRS", 3);
    let model_free = std::env::var("PF_BENCH_MODEL_FREE").is_ok_and(|v| v == "1");
    let data = target_dir().join("bench-data");
    let sim = data.join(format!("policies-u{users}-d{days}-s{seed}"));
    if !sim.join("events").is_dir() {
        run(Command::new(BINARY)
            .args(["simulate", "--quiet", "--overwrite", "--users"])
            .arg(users.to_string())
            .args([
                "--days",
                &days.to_string(),
                "--seed",
                &seed.to_string(),
                "--out",
            ])
            .arg(&sim));
    }
    let events = sim.join("events");
    let out = data.join("policies-overhead-out");
    let (mut off, mut on) = (Vec::new(), Vec::new());
    let (mut cpu_off, mut cpu_on) = (Vec::new(), Vec::new());
    let mut rates = (0.0, 0.0);
    let mut policy_rows = 0u64;
    for pair in 0..pairs {
        let (t_off, c_off, r_off, _) = backfill(&events, &out, false, model_free);
        let (t_on, c_on, r_on, rows) = backfill(&events, &out, true, model_free);
        let cpu = match (c_off, c_on) {
            (Some(a), Some(b)) => {
                cpu_off.push(a);
                cpu_on.push(b);
                format!(
                    "; CPU off {a:.2} s, on {b:.2} s ({:+.1}%)",
                    100.0 * (b / a - 1.0)
                )
            }
            _ => String::new(),
        };
        println!(
            "pair {}: policies off {t_off:.2} s, on {t_on:.2} s ({:+.1}%){cpu}",
            pair + 1,
            100.0 * (t_on / t_off - 1.0)
        );
        off.push(t_off);
        on.push(t_on);
        rates = (r_off, r_on);
        policy_rows = rows["policies"].as_u64().unwrap_or(0);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let cpu = if cpu_off.is_empty() {
        String::new()
    } else {
        format!(
            "; CPU off {:.2} s, on {:.2} s mean, on/off = {:.3}",
            mean(&cpu_off),
            mean(&cpu_on),
            mean(&cpu_on) / mean(&cpu_off)
        )
    };
    println!(
        "policies_overhead: {users} users x {days} days ({}), {pairs} alternating pairs: off {:.2} s, on {:.2} s mean; on/off = {:.3}{cpu} ({} policy rows; {:.0} vs {:.0} events/s in the last pair)",
        if model_free { "model-free" } else { "default models" },
        mean(&off),
        mean(&on),
        mean(&on) / mean(&off),
        policy_rows,
        rates.0,
        rates.1
    );
    std::fs::remove_dir_all(&out).ok();
}
