//! The backfill against a columnar batch script on the same events (issue 21, in progress: the
//! baseline of its point 1; the other points are not measured here yet).
//!
//! Run with `cargo bench --bench columnar` (it does nothing under `cargo test`). It:
//!
//! 1. simulates `PF_BENCH_USERS` [5,000] users over `PF_BENCH_DAYS` [1] days (seed
//!    `PF_BENCH_SEED` [42]; about a million events) into a temporary directory with the
//!    release binary;
//! 2. runs `benches/polars_reference.py` on the events (per-user 1-minute window features and
//!    their 16-window rolling means, in Polars) with the project's `.venv` Python
//!    (`PERSONAFLOW_PYTHON` overrides it), `PF_BENCH_TRIALS` [3] times, keeping the fastest;
//! 3. runs `personaflow backfill` on the same files model-free (standardised embedder, no
//!    forecaster) and with the default models, once each.
//!
//! It prints each one's seconds and events/s and the backfills' times over the script's.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

mod common;
use common::env_or;

/// The release binary `cargo bench` builds for this target.
const BINARY: &str = env!("CARGO_BIN_EXE_personaflow");

fn python() -> PathBuf {
    std::env::var_os("PERSONAFLOW_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"))
}

/// Runs `cmd`, panicking with its output if it fails; returns its wall seconds and stdout.
fn timed(cmd: &mut Command) -> (f64, String) {
    let t = Instant::now();
    let out = cmd.output().expect("the command starts");
    let secs = t.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (secs, String::from_utf8_lossy(&out.stdout).into_owned())
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("columnar: run it with `cargo bench --bench columnar`; skipped");
        return;
    }
    let users: usize = env_or("PF_BENCH_USERS", 5_000);
    let days: f64 = env_or("PF_BENCH_DAYS", 1.0);
    let seed: u64 = env_or("PF_BENCH_SEED", 42);
    let trials: usize = env_or("PF_BENCH_TRIALS", 3).max(1);
    let work = tempfile::tempdir().expect("a temporary directory");
    let sim = work.path().join("sim");
    timed(Command::new(BINARY).args([
        "simulate",
        "-q",
        "--users",
        &users.to_string(),
        "--days",
        &days.to_string(),
        "--seed",
        &seed.to_string(),
        "--out",
        sim.to_str().expect("a UTF-8 path"),
    ]));
    let events = sim.join("events");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/polars_reference.py");
    let mut polars = f64::INFINITY;
    let mut rows = 0u64;
    for _ in 0..trials {
        let (_, out) = timed(Command::new(python()).arg(&script).arg(&events));
        let report: serde_json::Value =
            serde_json::from_str(out.trim()).expect("the script's JSON");
        polars = polars.min(report["seconds"].as_f64().expect("seconds"));
        rows = report["events"].as_u64().expect("events");
    }
    println!(
        "columnar: {users} users x {days} days (seed {seed}): {rows} events; Polars script \
         {polars:.2} s ({:.0} events/s), fastest of {trials}",
        rows as f64 / polars
    );
    for (name, env) in [
        (
            "model-free",
            &[
                ("PERSONAFLOW__EMBEDDER__KIND", "standardised"),
                ("PERSONAFLOW__FORECASTER__KIND", "none"),
            ][..],
        ),
        ("default models", &[][..]),
    ] {
        let out = work.path().join(format!("out-{}", name.replace(' ', "-")));
        let mut cmd = Command::new(BINARY);
        cmd.args(["backfill", "-q", "--input"])
            .arg(&events)
            .arg("--output")
            .arg(&out)
            .envs(env.iter().copied());
        let (secs, _) = timed(&mut cmd);
        println!(
            "columnar: backfill, {name}: {secs:.1} s ({:.0} events/s), {:.0}x the Polars script",
            rows as f64 / secs,
            secs / polars
        );
    }
}
