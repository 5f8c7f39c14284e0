//! The models in the job: the RNN-VAE embedder and the LSTM forecaster through onnxruntime
//! (the `.venv` that scripts/test.sh sets up), their outputs, and the errors a user meets when
//! the library, a model or a provider is missing.

use crate::support::*;
use std::collections::BTreeMap;
use std::path::Path;

/// A small simulation, written once per test.
fn small_sim(dir: &Path) -> std::path::PathBuf {
    let sim = dir.join("sim");
    simulate(&sim, 60, 0.1, 11, &[]).ok();
    sim.join("events")
}

#[test]
fn backfill_embeds_with_the_vae_and_forecasts_demand() {
    let tmp = tempfile::tempdir().unwrap();
    let events = small_sim(tmp.path());
    let out = tmp.path().join("out");
    let run = backfill(&events, &out, &[]).ok();
    assert!(
        run.stderr
            .contains("embedder rnn-vae-v1, forecaster lstm-v1; onnxruntime on"),
        "the provider line is missing: {}",
        run.stderr
    );
    let json = run_json(&out);
    assert_eq!(json["embedder"], "rnn-vae-v1");
    assert_eq!(json["models"]["forecaster"], "lstm-v1");
    let provider = json["models"]["execution_provider"].as_str().unwrap();
    assert!(
        ["CPUExecutionProvider", "CUDAExecutionProvider"].contains(&provider),
        "{provider}"
    );
    assert!(json["models"]["onnxruntime"]
        .as_str()
        .unwrap()
        .ends_with("libonnxruntime.so.1.31.1"));

    // Profiles: 16-dimensional mu, the reconstruction error as anomaly score.
    let profiles = output_table(&out, "profiles");
    let (emb, score) = (profiles.col("embedding"), profiles.col("anomaly_score"));
    for r in &profiles.rows {
        let Value::List(v) = &r[emb] else {
            panic!("embedding is not a list")
        };
        assert_eq!(v.len(), 16);
        let s = r[score].float();
        assert!(s.is_finite() && s >= 0.0, "anomaly score {s}");
    }

    // Forecasts: H = 4 rows per active user and window, non-negative, targets 1..4 ahead.
    let features = output_table(&out, "features");
    let forecasts = output_table(&out, "forecasts");
    assert_eq!(forecasts.len(), 4 * features.len());
    let step = DEFAULT_WINDOW_MS;
    let (we, h, tw) = (
        forecasts.col("window_end"),
        forecasts.col("horizon"),
        forecasts.col("target_window_end"),
    );
    for r in &forecasts.rows {
        assert_eq!(r[tw].int() - r[we].int(), r[h].int() * step);
        assert!(r[forecasts.col("predicted_requests")].float() >= 0.0);
        assert!(r[forecasts.col("predicted_bytes")].float() >= 0.0);
    }

    // forecast_error: every forecast whose target window is within the data, scored against
    // what the features table says happened there (0 where the user was inactive).
    let mut actual: BTreeMap<(String, i64), (i64, i64)> = BTreeMap::new();
    for r in &features.rows {
        actual.insert(
            (
                r[features.col("user_id")].str().to_string(),
                r[features.col("window_end")].int(),
            ),
            (
                r[features.col("events")].int(),
                r[features.col("bytes")].int(),
            ),
        );
    }
    let last = features
        .column("window_end")
        .iter()
        .map(|v| v.int())
        .max()
        .unwrap();
    let expected = forecasts
        .rows
        .iter()
        .filter(|r| r[tw].int() <= last)
        .count();
    let errors = output_table(&out, "forecast_error");
    assert_eq!(
        errors.len(),
        expected,
        "one error per forecast that came due"
    );
    let c = |n: &str| errors.col(n);
    let mut by_horizon: BTreeMap<i64, u64> = BTreeMap::new();
    for r in &errors.rows {
        let key = (r[c("user_id")].str().to_string(), r[c("window_end")].int());
        let (events, bytes) = actual.get(&key).copied().unwrap_or((0, 0));
        assert_eq!(r[c("actual_requests")].int(), events, "{key:?}");
        assert_eq!(r[c("actual_bytes")].int(), bytes, "{key:?}");
        let h = r[c("horizon")].int();
        assert_eq!(
            r[c("window_end")].int() - r[c("made_at_window_end")].int(),
            h * step
        );
        let err = (r[c("predicted_requests")].float() - events as f64).abs();
        assert!((r[c("abs_error_requests")].float() - err).abs() < 1e-3);
        *by_horizon.entry(h).or_default() += 1;
    }
    assert_eq!(by_horizon.keys().copied().collect::<Vec<_>>(), [1, 2, 3, 4]);
    for (h, n) in by_horizon {
        assert_eq!(
            json_u64(&json, &format!("/forecast_errors/{h}/forecasts")),
            n
        );
    }
}

#[test]
fn a_missing_onnxruntime_library_is_a_clear_error_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let events = small_sim(tmp.path());
    let out = tmp.path().join("out");
    let mut cmd = personaflow();
    cmd.env(
        "ORT_DYLIB_PATH",
        tmp.path().join("nowhere/libonnxruntime.so.1.31.1"),
    );
    let line = run_cmd(backfill_cmd(&mut cmd, &events, &out, &[])).fails_with_one_line();
    assert!(
        line.contains("onnxruntime library not found") && line.contains("ORT_DYLIB_PATH"),
        "{line}"
    );
    assert!(!out.exists());
    assert!(staging_dirs(tmp.path(), "out").is_empty());

    // The model-free embedder and forecaster need no library.
    let mut cmd = personaflow();
    cmd.env(
        "ORT_DYLIB_PATH",
        tmp.path().join("nowhere/libonnxruntime.so.1.31.1"),
    )
    .env("PERSONAFLOW__EMBEDDER__KIND", "standardised")
    .env("PERSONAFLOW__FORECASTER__KIND", "persistence");
    run_cmd(backfill_cmd(&mut cmd, &events, &out, &[])).ok();
    let json = run_json(&out);
    assert_eq!(json["embedder"], "standardised-v1");
    assert_eq!(json["models"]["forecaster"], "persistence-v1");
    assert!(json["models"]["execution_provider"].is_null());
}

#[test]
fn a_model_of_another_feature_schema_is_refused_before_any_output() {
    let tmp = tempfile::tempdir().unwrap();
    let events = small_sim(tmp.path());
    let models = tmp.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(
        repo.join("models/tests/fixtures/schema_mismatch.onnx"),
        models.join("rnn_vae_encoder.onnx"),
    )
    .unwrap();
    let out = tmp.path().join("out");
    let mut cmd = personaflow();
    cmd.env("PERSONAFLOW__MODELS__DIR", &models);
    let line = run_cmd(backfill_cmd(&mut cmd, &events, &out, &[])).fails_with_one_line();
    assert!(
        line.contains("rnn_vae_encoder.onnx")
            && line.contains("feature schema")
            && line.contains("retrain"),
        "{line}"
    );
    assert!(!out.exists());
}

#[test]
fn cuda_on_a_machine_without_it_is_an_error_and_auto_falls_back() {
    let tmp = tempfile::tempdir().unwrap();
    let events = small_sim(tmp.path());
    let out = tmp.path().join("out");
    let mut cmd = personaflow();
    cmd.env("PERSONAFLOW__MODELS__PROVIDER", "cuda");
    let run = run_cmd(backfill_cmd(&mut cmd, &events, &out, &[]));
    if run.code == Some(0) {
        // A machine with onnxruntime-gpu and a GPU: CUDA really ran.
        assert_eq!(
            run_json(&out)["models"]["execution_provider"],
            "CUDAExecutionProvider"
        );
        return;
    }
    let line = run.fails_with_one_line();
    assert!(
        line.contains("execution provider cuda unavailable"),
        "{line}"
    );
    let mut cmd = personaflow();
    cmd.env("PERSONAFLOW__MODELS__PROVIDER", "auto");
    run_cmd(backfill_cmd(&mut cmd, &events, &out, &[])).ok();
    assert_eq!(
        run_json(&out)["models"]["execution_provider"],
        "CPUExecutionProvider"
    );
}
