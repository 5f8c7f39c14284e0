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
//!    bare onnxruntime inference of as many sequences at the same batch sizes as the backfill
//!    with the models ran: its `features` table has one row per sequence; each window's
//!    sequences are split between the backfill's workers (`runtime.workers`, 2) as evenly as
//!    its hash split would be on average and cut into batches of `max_batch` (64), and each
//!    worker's share runs the encoder and the forecaster on a thread of its own, with one
//!    intra-op thread as the backfill's sessions. The encoder also embeds the windows views
//!    of active histories, after each window's sequences and in the same batches, a batch of
//!    views alone with the mean-only encoder, as the backfill does: how many the backfill
//!    embedded is in its `run.json` (what the encoders ran beyond the sequences), spread over
//!    the windows in proportion to their sequences. The inputs are fixture sequences (the
//!    models' cost does not depend on the values).
//!
//! It prints each one's seconds and events/s, the backfills' times over the script's, and the
//! backfill with the models over scan + inference.

use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampMillisecondType};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use personaflow_models::encoder::{VaeEncoder, ENCODER_FILE, ENCODER_MEAN_FILE};
use personaflow_models::forecaster::{OnnxForecaster, FORECASTER_FILE};
use personaflow_models::SessionOptions;
use personaflow_operators::window::features::NUM_FEATURES;
use std::collections::BTreeMap;
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
/// The backfill's batch cap (`embedder.max_batch` and `forecaster.max_batch`' default).
const MAX_BATCH: usize = personaflow_operators::embed::operator::DEFAULT_MAX_BATCH;

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
    let windows = sequences_per_window(&out.join("features"));
    let sequences: usize = windows.iter().sum();
    let views = views_embedded(&out.join("run.json"), sequences);
    let inference = bare_inference(&with_views(&windows, views));
    println!(
        "columnar: bare Parquet scan {scan:.2} s; bare inference of {sequences} sequences and \
         {views} windows views (encoder + forecaster, {WORKERS} threads, batches of <= \
         {MAX_BATCH}) {inference:.2} s; the backfill with the models is {:.2}x scan + inference",
        models_secs / (scan + inference)
    );
}

/// The windows views the backfill embedded: what its encoders (the encoder and the mean-only
/// one) ran beyond the `sequences` of its `features` table, from its `run.json`.
fn views_embedded(run_json: &Path, sequences: usize) -> usize {
    let text = std::fs::read_to_string(run_json).expect("the backfill's run.json");
    let run: serde_json::Value = serde_json::from_str(&text).expect("run.json is JSON");
    let ran = |model: &str| run["inference"][model]["sequences"].as_u64().unwrap_or(0) as usize;
    (ran("encoder") + ran("encoder_mean"))
        .checked_sub(sequences)
        .expect("the encoders ran at least every sequence")
}

/// `(sequences, views)` of each window: `views` spread over the windows in proportion to
/// their sequences (the totals exact).
fn with_views(windows: &[usize], views: usize) -> Vec<(usize, usize)> {
    let total: usize = windows.iter().sum::<usize>().max(1);
    let mut before = 0;
    windows
        .iter()
        .map(|&n| {
            let share = |upto: usize| upto * views / total;
            let v = share(before + n) - share(before);
            before += n;
            (n, v)
        })
        .collect()
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

/// The number of sequences of each window: rows of the `features` table by `window_end`.
fn sequences_per_window(features: &Path) -> Vec<usize> {
    let mut counts: BTreeMap<i64, usize> = BTreeMap::new();
    for path in parquet_files(features) {
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).expect("opens"))
            .expect("reads the footer")
            .build()
            .expect("builds the reader");
        for batch in reader {
            let batch = batch.expect("decodes a batch");
            let column = batch
                .column_by_name("window_end")
                .expect("a window_end column");
            let ends: Vec<i64> = if let Some(a) = column.as_primitive_opt::<Int64Type>() {
                a.values().to_vec()
            } else {
                let a = column
                    .as_primitive_opt::<TimestampMillisecondType>()
                    .expect("window_end is an integer or a millisecond timestamp");
                a.values().to_vec()
            };
            for end in ends {
                *counts.entry(end).or_default() += 1;
            }
        }
    }
    counts.into_values().collect()
}

/// Seconds to run the encoder and the forecaster over `windows`' sequences and the encoders
/// over their views (`(sequences, views)` of each window), each window split between
/// [`WORKERS`] threads and cut into batches of at most [`MAX_BATCH`] as the backfill cuts them:
/// a worker's views follow its sequences, a batch of views alone goes to the mean-only encoder.
fn bare_inference(windows: &[(usize, usize)]) -> f64 {
    let x = inputs::inputs(MAX_BATCH);
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
                // This worker's share of `n`: the first `n % WORKERS` workers take one more.
                let share = |n: usize| n / WORKERS + usize::from(worker < n % WORKERS);
                for &(n, v) in windows {
                    let (seqs, views) = (share(n), share(v));
                    let mut start = 0;
                    while start < seqs + views {
                        let b = (seqs + views - start).min(MAX_BATCH);
                        let (xs, m, ctx) = (
                            &x.features[..b * step],
                            &x.mask[..b * l],
                            &x.context[..b * c],
                        );
                        if start >= seqs {
                            enc.run_mean(b, l, xs, m, ctx)
                                .expect("mean-only encoder run");
                        } else {
                            enc.run(b, l, xs, m, ctx).expect("encoder run");
                        }
                        start += b;
                    }
                    let mut left = seqs;
                    while left > 0 {
                        let b = left.min(MAX_BATCH);
                        fc.run(b, l, &x.features[..b * step], &x.mask[..b * l])
                            .expect("forecaster run");
                        left -= b;
                    }
                }
            });
        }
    });
    started.elapsed().as_secs_f64()
}
