//! The backfill against a columnar batch script on the same events, and the backfill with the
//! models against a bare scan plus bare inference (issue 21, points 1 and 2).
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
//!    forecaster) and with the default models, once each;
//! 4. (point 2) times a bare Parquet scan of the events (every column decoded to Arrow) and
//!    bare onnxruntime inference of the batches the backfill with the models ran: its
//!    `run.json` counts each model's session runs by their number of rows
//!    (`inference.*.batch_sizes`: the encoder's, the mean-only encoder's for batches of windows
//!    views alone, the forecaster's), and the bench runs as many batches of each size, dealt in
//!    turn to the backfill's workers (`runtime.workers`, 2), each on a thread of its own with one
//!    intra-op thread as the backfill's sessions. The inputs are fixture sequences (the models'
//!    cost does not depend on the values).
//!
//! It prints each one's seconds and events/s, the backfills' times over the script's, and the
//! backfill with the models over scan + inference.

use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use personaflow_models::encoder::{VaeEncoder, ENCODER_FILE, ENCODER_MEAN_FILE};
use personaflow_models::forecaster::{OnnxForecaster, FORECASTER_FILE};
use personaflow_models::SessionOptions;
use personaflow_operators::window::features::NUM_FEATURES;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

mod common;
use common::env_or;
#[path = "common/files.rs"]
mod files;
use files::parquet_files;
#[path = "common/inputs.rs"]
mod inputs;

/// The backfill's workers (`runtime.workers`' default).
const WORKERS: usize = 2;

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

/// Runs the bench (see the module documentation); also a part of `issue21`.
pub fn main() {
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
    let mut with_models: Option<(f64, PathBuf)> = None;
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
        if env.is_empty() {
            with_models = Some((secs, out));
        }
    }
    let (models_secs, out) = with_models.expect("the backfill with the models ran");
    let scan = parquet_scan(&parquet_files(&events));
    let batches = batches_run(&out.join("run.json"));
    let count = |model: usize| batches.iter().filter(|(m, _)| *m == model).count();
    let sequences = |model: usize| -> usize {
        batches
            .iter()
            .filter(|(m, _)| *m == model)
            .map(|(_, b)| b)
            .sum()
    };
    let inference = bare_inference(&batches);
    println!(
        "columnar: bare Parquet scan {scan:.2} s; bare inference of the backfill's batches \
         (encoder {} batches of {} sequences, mean-only encoder {} of {}, forecaster {} of {}; \
         {WORKERS} threads) {inference:.2} s; the backfill with the models is {:.2}x scan + \
         inference",
        count(ENCODER),
        sequences(ENCODER),
        count(MEAN),
        sequences(MEAN),
        count(FORECASTER),
        sequences(FORECASTER),
        models_secs / (scan + inference)
    );
}

/// The models of [`batches_run`]'s batches.
const ENCODER: usize = 0;
const MEAN: usize = 1;
const FORECASTER: usize = 2;

/// The batches the backfill ran, `(model, rows)`, from its `run.json`'s
/// `inference.{encoder, encoder_mean, forecaster}.batch_sizes`, by model and size: dealt out
/// in turn, each worker gets its share of each model's batches of each size.
fn batches_run(run_json: &Path) -> Vec<(usize, usize)> {
    let text = std::fs::read_to_string(run_json).expect("the backfill's run.json");
    let run: serde_json::Value = serde_json::from_str(&text).expect("run.json is JSON");
    let mut batches = Vec::new();
    for (model, name) in [
        (ENCODER, "encoder"),
        (MEAN, "encoder_mean"),
        (FORECASTER, "forecaster"),
    ] {
        let Some(sizes) = run["inference"][name]["batch_sizes"].as_object() else {
            continue;
        };
        for (size, n) in sizes {
            let size: usize = size.parse().expect("a batch size");
            let n = n.as_u64().expect("a count") as usize;
            batches.extend(std::iter::repeat_n((model, size), n));
        }
    }
    assert!(
        batches.iter().any(|(m, _)| *m == ENCODER),
        "the backfill's run.json counts the encoder's batches by size"
    );
    batches.sort_unstable();
    batches
}

/// Decodes every column of every file into Arrow record batches; returns the seconds.
fn parquet_scan(files: &[PathBuf]) -> f64 {
    let started = Instant::now();
    for path in files {
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path).expect("opens"))
            .expect("reads the footer")
            .build()
            .expect("builds the reader");
        for batch in reader {
            std::hint::black_box(batch.expect("decodes a batch"));
        }
    }
    started.elapsed().as_secs_f64()
}

/// Seconds to run `batches` (`(model, rows)`, [`batches_run`]): the `i`-th on worker
/// `i % WORKERS`, each worker a thread with its own sessions, as the backfill's workers.
fn bare_inference(batches: &[(usize, usize)]) -> f64 {
    let largest = batches.iter().map(|(_, b)| *b).max().unwrap_or(1);
    let x = inputs::inputs(largest);
    let (l, c) = (x.steps, x.context_width);
    let step = l * NUM_FEATURES;
    let onnx = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/onnx");
    let options = SessionOptions::default();
    let started = Instant::now();
    std::thread::scope(|scope| {
        for worker in 0..WORKERS {
            let (x, onnx, options) = (&x, &onnx, &options);
            scope.spawn(move || {
                let mut enc = VaeEncoder::open(&onnx.join(ENCODER_FILE), options)
                    .and_then(|e| {
                        e.with_mean_model(
                            &onnx.join(ENCODER_MEAN_FILE),
                            options,
                            Default::default(),
                        )
                    })
                    .expect("encoder");
                let mut fc =
                    OnnxForecaster::open(&onnx.join(FORECASTER_FILE), options).expect("forecaster");
                for &(model, b) in batches.iter().skip(worker).step_by(WORKERS) {
                    let (xs, m, ctx) = (
                        &x.features[..b * step],
                        &x.mask[..b * l],
                        &x.context[..b * c],
                    );
                    match model {
                        ENCODER => drop(enc.run(b, l, xs, m, ctx).expect("encoder run")),
                        MEAN => drop(
                            enc.run_mean(b, l, xs, m, ctx)
                                .expect("mean-only encoder run"),
                        ),
                        _ => drop(fc.run(b, l, xs, m).expect("forecaster run")),
                    }
                }
            });
        }
    });
    started.elapsed().as_secs_f64()
}
