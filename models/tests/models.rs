//! The committed ONNX models through onnxruntime: parity with PyTorch on the fixtures the
//! training script exported, batch-size invariance, and the refusals (feature-schema mismatch,
//! wrong kind). The onnxruntime library comes from `.venv` (scripts/test.sh installs it).

use personaflow_models::decoder::{VaeDecoder, VaeDecoderStep, DECODER_FILE, DECODER_STEP_FILE};
use personaflow_models::encoder::{VaeEncoder, ENCODER_FILE, ENCODER_MEAN_FILE};
use personaflow_models::forecaster::{OnnxForecaster, FORECASTER_FILE};
use personaflow_models::{Error, Provider, SessionOptions};
use personaflow_operators::embed::Embedder;
use personaflow_operators::window::features::NUM_FEATURES;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The parity bound of the models issue.
const PARITY_TOLERANCE: f32 = 1e-4;

#[derive(Deserialize)]
struct Array {
    shape: Vec<usize>,
    data: Vec<f32>,
}

#[derive(Deserialize)]
struct Fixtures {
    features: Array,
    mask: Array,
    context: Array,
    mu: Array,
    logvar: Array,
    recon_error: Array,
    z: Array,
    decoded: Array,
    forecast: Array,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn model(file: &str) -> PathBuf {
    root().join("onnx").join(file)
}

fn fixtures() -> Fixtures {
    let text = std::fs::read_to_string(root().join("tests/fixtures/parity.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn cpu() -> SessionOptions {
    SessionOptions {
        provider: Provider::Cpu,
        ..SessionOptions::default()
    }
}

/// Max |a - b| / max(1, |b|) when `relative`, else max |a - b|.
fn max_diff(a: &[f32], b: &[f32], relative: bool) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let d = (x - y).abs();
            if relative {
                d / y.abs().max(1.0)
            } else {
                d
            }
        })
        .fold(0.0, f32::max)
}

#[test]
fn encoder_matches_pytorch() {
    let f = fixtures();
    let mut enc = VaeEncoder::open(&model(ENCODER_FILE), &cpu()).unwrap();
    assert_eq!(enc.provider(), "CPUExecutionProvider");
    let (b, l) = (f.features.shape[0], f.features.shape[1]);
    assert_eq!(f.features.shape[2], NUM_FEATURES);
    let out = enc
        .run(b, l, &f.features.data, &f.mask.data, &f.context.data)
        .unwrap();
    for (name, got, want) in [
        ("mu", &out.mu, &f.mu.data),
        ("logvar", &out.logvar, &f.logvar.data),
        ("recon_error", &out.recon_error, &f.recon_error.data),
    ] {
        let d = max_diff(got, want, false);
        assert!(d <= PARITY_TOLERANCE, "{name}: max |ort - torch| = {d}");
    }
    assert_eq!(enc.dims(), f.mu.shape[1]);
}

/// The mean-only encoder (the encoder's graph up to `mu`) gives the encoder's `mu` bit for bit
/// at every batch size of the fixtures, and is timed into its own counters.
#[test]
fn the_mean_encoder_gives_the_encoders_mu_bit_for_bit() {
    let f = fixtures();
    let mut enc = VaeEncoder::open(&model(ENCODER_FILE), &cpu()).unwrap();
    let stats = personaflow_models::stats::InferenceStats::default();
    let mut with_mean = VaeEncoder::open(&model(ENCODER_FILE), &cpu())
        .unwrap()
        .with_mean_model(&model(ENCODER_MEAN_FILE), &cpu(), stats.clone())
        .unwrap();
    assert!(with_mean.has_mean_model() && !enc.has_mean_model());
    let (b, l, c) = (f.features.shape[0], f.features.shape[1], f.context.shape[1]);
    let step = l * NUM_FEATURES;
    let mut rows = 0;
    for n in 1..=b {
        let (x, m, ctx) = (
            &f.features.data[..n * step],
            &f.mask.data[..n * l],
            &f.context.data[..n * c],
        );
        let want = enc.run(n, l, x, m, ctx).unwrap().mu;
        assert_eq!(
            with_mean.run_mean(n, l, x, m, ctx).unwrap(),
            want,
            "batch {n}"
        );
        // Without a mean-only model, run_mean is the encoder's mu.
        assert_eq!(enc.run_mean(n, l, x, m, ctx).unwrap(), want, "batch {n}");
        rows += n;
    }
    let summary = stats.summary();
    assert_eq!(
        (summary.batches, summary.sequences),
        (b as u64, rows as u64)
    );
}

/// A mean-only model of another kind is refused (one derived from another encoder is refused
/// by `check_derived`, whose doc example shows it).
#[test]
fn a_mean_model_that_is_not_one_is_refused() {
    let enc = VaeEncoder::open(&model(ENCODER_FILE), &cpu()).unwrap();
    let err = enc
        .with_mean_model(&model(ENCODER_FILE), &cpu(), Default::default())
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("rnn_vae_encoder model, expected rnn_vae_encoder_mean"),
        "{err}"
    );
}

#[test]
fn decoder_matches_pytorch() {
    let f = fixtures();
    let mut dec = VaeDecoder::open(&model(DECODER_FILE), &cpu()).unwrap();
    let out = dec.decode(f.z.shape[0], &f.z.data).unwrap();
    let d = max_diff(&out, &f.decoded.data, false);
    assert!(d <= PARITY_TOLERANCE, "decoded: max |ort - torch| = {d}");
    let enc = VaeEncoder::open(&model(ENCODER_FILE), &cpu()).unwrap();
    assert!(
        dec.matches(enc.info()),
        "the decoder shares the encoder's latent space"
    );
}

/// The step decoder, called L times and fed its own state, gives the decoder's sequences (it
/// is derived from the same weights); points in one batch start and continue independently.
#[test]
fn the_step_decoder_steps_through_the_decoders_sequences() {
    let f = fixtures();
    let mut dec = VaeDecoder::open(&model(DECODER_FILE), &cpu()).unwrap();
    let mut step = VaeDecoderStep::open(&model(DECODER_STEP_FILE), &cpu()).unwrap();
    let (n, d) = (f.z.shape[0], f.z.shape[1]);
    let l = dec.info().sequence_len;
    let h = step.hidden();
    assert_eq!(step.info().latent_dims, d);
    let want = dec.decode(n, &f.z.data).unwrap();
    let mut state = vec![0f32; n * h];
    for s in 0..l {
        let first = vec![f32::from(u8::from(s == 0)); n];
        let (x, next) = step.step(n, &f.z.data, &state, &first).unwrap();
        for i in 0..n {
            let w = &want[(i * l + s) * NUM_FEATURES..(i * l + s + 1) * NUM_FEATURES];
            let d = max_diff(&x[i * NUM_FEATURES..(i + 1) * NUM_FEATURES], w, false);
            assert!(d <= PARITY_TOLERANCE, "point {i} step {s}: max diff {d}");
        }
        state = next;
    }
    // Point 0 restarts (first = 1, garbage state) while point 1 continues: each gets its own.
    let mut garbage = state.clone();
    garbage[..h].fill(7.0);
    let (x, _) = step
        .step(2, &f.z.data[..2 * d], &garbage[..2 * h], &[1.0, 0.0])
        .unwrap();
    let d0 = max_diff(&x[..NUM_FEATURES], &want[..NUM_FEATURES], false);
    assert!(d0 <= PARITY_TOLERANCE, "a restart ignores the state: {d0}");
    assert!(VaeDecoderStep::open(&model(DECODER_FILE), &cpu()).is_err());
}

#[test]
fn forecaster_matches_pytorch() {
    // Forecasts are in requests and bytes (up to ~1e6), so the bound is relative to
    // max(1, |value|): 1e-4 absolute below 1, 1e-4 of the value above.
    let f = fixtures();
    let mut fc = OnnxForecaster::open(&model(FORECASTER_FILE), &cpu()).unwrap();
    let (b, l) = (f.features.shape[0], f.features.shape[1]);
    let out = fc.run(b, l, &f.features.data, &f.mask.data).unwrap();
    let d = max_diff(&out, &f.forecast.data, true);
    assert!(
        d <= PARITY_TOLERANCE,
        "forecast: max relative |ort - torch| = {d}"
    );
    assert!(out.iter().all(|v| *v >= 0.0), "demand is never negative");
}

/// Fails naming how many of `got`'s values differ from `want`'s bits, and by how much.
fn same_bits(got: &[f32], want: &[f32], what: &str, size: usize) {
    assert_eq!(got.len(), want.len(), "{what}, batches of {size}");
    let differ = got
        .iter()
        .zip(want)
        .filter(|(a, b)| a.to_bits() != b.to_bits());
    let n = differ.clone().count();
    let worst = differ.map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(
        n == 0,
        "{what}, batches of {size}: {n} of {} values differ from one batch's (by up to {worst:e})",
        got.len()
    );
}

/// A row's outputs are the same bits whatever batch it runs in: 512 rows (the fixtures'
/// rows, perturbed) run as one batch and cut into batches of 1, 2, 3, 7 and 64, through the
/// encoder, the mean-only encoder and the forecaster. The pipeline relies on it: it cuts its
/// batches by the windows complete at once and by worker, and its outputs must not show how.
#[test]
fn a_rows_outputs_do_not_depend_on_its_batch() {
    const BIG: usize = 512;
    let f = fixtures();
    let (n, l) = (f.features.shape[0], f.features.shape[1]);
    let c = f.context.shape[1];
    let step = l * NUM_FEATURES;
    // 512 rows cycling through the fixtures, each slightly perturbed so rows differ.
    let mut feats = Vec::with_capacity(BIG * step);
    let (mut mask, mut ctx) = (Vec::new(), Vec::new());
    for i in 0..BIG {
        let r = i % n;
        let scale = 1.0 + (i / n) as f32 * 1e-3;
        feats.extend(
            f.features.data[r * step..(r + 1) * step]
                .iter()
                .map(|v| v * scale),
        );
        mask.extend_from_slice(&f.mask.data[r * l..(r + 1) * l]);
        ctx.extend_from_slice(&f.context.data[r * c..(r + 1) * c]);
    }
    let stats = personaflow_models::stats::InferenceStats::default();
    let mut enc = VaeEncoder::open(&model(ENCODER_FILE), &cpu())
        .unwrap()
        .with_mean_model(&model(ENCODER_MEAN_FILE), &cpu(), stats.clone())
        .unwrap();
    let mut fc = OnnxForecaster::open(&model(FORECASTER_FILE), &cpu()).unwrap();
    let rows = |from: usize, to: usize| {
        (
            &feats[from * step..to * step],
            &mask[from * l..to * l],
            &ctx[from * c..to * c],
        )
    };
    let (x, m, k) = rows(0, BIG);
    let whole = enc.run(BIG, l, x, m, k).unwrap();
    let whole_mean = enc.run_mean(BIG, l, x, m, k).unwrap();
    let whole_fc = fc.run(BIG, l, x, m).unwrap();
    assert_eq!(
        whole_mean, whole.mu,
        "the mean-only encoder's mu is the encoder's"
    );
    for size in [1, 2, 3, 7, 64] {
        let (mut mu, mut logvar, mut recon, mut mean, mut forecast) =
            (vec![], vec![], vec![], vec![], vec![]);
        // The first 130 rows: every cut's last batch is a short one.
        for from in (0..130).step_by(size) {
            let to = (from + size).min(130);
            let (x, m, k) = rows(from, to);
            let out = enc.run(to - from, l, x, m, k).unwrap();
            mu.extend(out.mu);
            logvar.extend(out.logvar);
            recon.extend(out.recon_error);
            mean.extend(enc.run_mean(to - from, l, x, m, k).unwrap());
            forecast.extend(fc.run(to - from, l, x, m).unwrap());
        }
        let d = enc.info().latent_dims;
        let h2 = fc.info().horizon * 2;
        same_bits(&mu, &whole.mu[..130 * d], "encoder mu", size);
        same_bits(&logvar, &whole.logvar[..130 * d], "logvar", size);
        same_bits(&recon, &whole.recon_error[..130], "recon_error", size);
        same_bits(&mean, &whole_mean[..130 * d], "mean-only mu", size);
        same_bits(&forecast, &whole_fc[..130 * h2], "forecast", size);
    }
    // A batch of one is recorded as one row, though it runs as two: 130 in batches of 1,
    // and the last of the batches of 3.
    assert_eq!(stats.summary().batch_sizes.get(&1), Some(&131));
}

#[test]
fn a_model_of_another_feature_schema_is_refused() {
    let stale = root().join("tests/fixtures/schema_mismatch.onnx");
    let err = VaeDecoder::open(&stale, &cpu()).unwrap_err();
    assert!(matches!(err, Error::SchemaMismatch { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("schema_mismatch.onnx") && msg.contains("retrain"),
        "{msg}"
    );
}

#[test]
fn a_model_of_another_kind_is_refused() {
    let err = VaeEncoder::open(&model(DECODER_FILE), &cpu()).unwrap_err();
    assert!(
        err.to_string()
            .contains("rnn_vae_decoder model, expected rnn_vae_encoder"),
        "{err}"
    );
    let err = VaeEncoder::open(&root().join("onnx/missing.onnx"), &cpu()).unwrap_err();
    assert!(matches!(err, Error::ModelNotFound { .. }), "{err}");
}

#[test]
fn auto_provider_runs_somewhere_and_says_where() {
    let opts = SessionOptions {
        provider: Provider::Auto,
        ..SessionOptions::default()
    };
    let enc = VaeEncoder::open(&model(ENCODER_FILE), &opts).unwrap();
    assert!(["CPUExecutionProvider", "CUDAExecutionProvider"].contains(&enc.provider()));
}
