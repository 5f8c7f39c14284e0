//! Inference throughput of the committed ONNX models through onnxruntime.
//!
//! Run with `cargo bench --bench inference` (it does nothing under `cargo test`). For each batch
//! size in [`BATCH_SIZES`] it runs the RNN-VAE encoder, its mean-only part (`mu` alone, what
//! the windows views of active histories are embedded with) and the LSTM demand forecaster on
//! sequences of the default length (`L` = 16, `F` = 33) until at least [`MIN_SEQUENCES`]
//! sequences and [`MIN_SECS`] seconds, after one warm-up run, and prints sequences per second.
//! The inputs are the parity fixtures' held-out sequences (real simulator features), cycled and
//! scaled slightly so that rows differ; the models' cost does not depend on the values.
//!
//! Environment variables (defaults in brackets): `PF_BENCH_PROVIDER` [`cpu`] (`cpu`, `cuda` or
//! `auto`; the provider that really ran is printed), `PF_BENCH_THREADS` [1] onnxruntime
//! intra-op threads, `PF_BENCH_MODELS` [`models/onnx`] the directory of the models (to compare
//! model sets, e.g. retrained at another size, in one sitting). Writes the results as JSON to `<target>/bench-data/inference-<provider>-
//! t<threads>.json`. The onnxruntime library is found as by the binary (`.venv` or
//! `ORT_DYLIB_PATH`).

use personaflow_models::encoder::{VaeEncoder, ENCODER_FILE, ENCODER_MEAN_FILE};
use personaflow_models::forecaster::{OnnxForecaster, FORECASTER_FILE};
use personaflow_models::{Provider, SessionOptions};
use personaflow_operators::window::features::NUM_FEATURES;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[path = "common/inputs.rs"]
mod inputs;
use inputs::inputs;

/// Batch sizes measured.
const BATCH_SIZES: [usize; 7] = [1, 4, 16, 64, 256, 1024, 4096];
/// Sequences inferred per batch size at least.
const MIN_SEQUENCES: usize = 8192;
/// Seconds spent per batch size at least.
const MIN_SECS: f64 = 1.0;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// Runs `f(batch_start, batch)` over batches of `batch` until enough work is done; returns
/// sequences per second.
fn measure(batch: usize, total: usize, mut f: impl FnMut(usize, usize)) -> (f64, usize) {
    f(0, batch); // warm-up
    let started = Instant::now();
    let mut done = 0;
    let mut start = 0;
    while done < MIN_SEQUENCES || started.elapsed().as_secs_f64() < MIN_SECS {
        if start + batch > total {
            start = 0;
        }
        f(start, batch);
        start += batch;
        done += batch;
    }
    (done as f64 / started.elapsed().as_secs_f64(), done)
}

/// Runs the bench (see the module documentation); also a part of `issue21`.
pub fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return; // `cargo test` builds and runs benches without --bench: nothing to do.
    }
    let provider: Provider = std::env::var("PF_BENCH_PROVIDER")
        .unwrap_or_else(|_| "cpu".into())
        .parse()
        .expect("PF_BENCH_PROVIDER");
    let threads: usize = std::env::var("PF_BENCH_THREADS")
        .ok()
        .map(|t| t.parse().expect("PF_BENCH_THREADS"))
        .unwrap_or(1);
    let options = SessionOptions {
        provider,
        intra_threads: threads,
    };
    let onnx = std::env::var_os("PF_BENCH_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("models/onnx"));
    let mut enc = VaeEncoder::open(&onnx.join(ENCODER_FILE), &options).expect("encoder");
    let mut mean = VaeEncoder::open(&onnx.join(ENCODER_FILE), &options)
        .and_then(|e| {
            e.with_mean_model(&onnx.join(ENCODER_MEAN_FILE), &options, Default::default())
        })
        .expect("mean-only encoder");
    let mut fc = OnnxForecaster::open(&onnx.join(FORECASTER_FILE), &options).expect("forecaster");
    let total = *BATCH_SIZES.iter().max().expect("sizes") * 2;
    let x = inputs(total);
    let (l, c) = (x.steps, x.context_width);
    let step = l * NUM_FEATURES;
    println!(
        "inference on {} (requested {provider}), {threads} intra-op thread(s), L = {l}, F = {NUM_FEATURES}; \
         {}: encoder hidden {}, forecaster hidden {}",
        enc.provider(),
        onnx.display(),
        enc.info().training["hidden"],
        fc.info().training["hidden"]
    );
    println!(
        "{:>6} {:>16} {:>16} {:>16}",
        "batch", "encoder seq/s", "mean-only seq/s", "forecaster seq/s"
    );
    let mut rows = Vec::new();
    for &b in &BATCH_SIZES {
        let (enc_rate, enc_n) = measure(b, total, |s, b| {
            enc.run(
                b,
                l,
                &x.features[s * step..(s + b) * step],
                &x.mask[s * l..(s + b) * l],
                &x.context[s * c..(s + b) * c],
            )
            .expect("encoder run");
        });
        let (mean_rate, mean_n) = measure(b, total, |s, b| {
            mean.run_mean(
                b,
                l,
                &x.features[s * step..(s + b) * step],
                &x.mask[s * l..(s + b) * l],
                &x.context[s * c..(s + b) * c],
            )
            .expect("mean-only encoder run");
        });
        let (fc_rate, fc_n) = measure(b, total, |s, b| {
            fc.run(
                b,
                l,
                &x.features[s * step..(s + b) * step],
                &x.mask[s * l..(s + b) * l],
            )
            .expect("forecaster run");
        });
        println!("{b:>6} {enc_rate:>16.0} {mean_rate:>16.0} {fc_rate:>16.0}");
        rows.push(json!({
            "batch": b,
            "encoder_sequences_per_sec": enc_rate,
            "encoder_sequences": enc_n,
            "encoder_mean_sequences_per_sec": mean_rate,
            "encoder_mean_sequences": mean_n,
            "forecaster_sequences_per_sec": fc_rate,
            "forecaster_sequences": fc_n,
        }));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    let dir = target.join("bench-data");
    std::fs::create_dir_all(&dir).expect("bench-data dir");
    let path = dir.join(format!("inference-{}-t{threads}.json", enc.provider()));
    let report = json!({
        "provider": enc.provider(),
        "requested_provider": provider.to_string(),
        "intra_threads": threads,
        "models": onnx.display().to_string(),
        "encoder_hidden": enc.info().training["hidden"],
        "forecaster_hidden": fc.info().training["hidden"],
        "onnxruntime": personaflow_models::runtime::library_path().map(|p| p.display().to_string()),
        "sequence_len": l,
        "features": NUM_FEATURES,
        "results": rows,
    });
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&report).expect("serialises"),
    )
    .expect("write report");
    println!("wrote {}", path.display());
}
