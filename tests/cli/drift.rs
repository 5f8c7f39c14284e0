//! Personas, drift and scaling through the CLI: the tables a backfill writes, and the
//! evaluation commands on the real change-point and anomaly data in `../shared/data`.

use crate::support::*;
use std::collections::{BTreeMap, BTreeSet};

#[test]
fn backfill_writes_consistent_personas_drift_and_scaling() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = tmp.path().join("sim");
    simulate(
        &sim,
        300,
        0.3,
        5,
        &["--drift", "video_streamer@3h:rate=4.0"],
    )
    .ok();
    let out = tmp.path().join("out");
    backfill(&sim.join("events"), &out, &[]).ok();
    let json = run_json(&out);
    for name in DERIVED_TABLES {
        let t = output_table(&out, name);
        assert_eq!(
            json_u64(&json, &format!("/rows_written/{name}")),
            t.len() as u64,
            "run.json rows_written of {name}"
        );
    }

    // Every profile is assigned once, to a persona of its window, with probabilities that
    // sum to one and are largest for the assigned persona.
    let profiles = output_table(&out, "profiles");
    let assignments = output_table(&out, "persona_assignments");
    let personas = output_table(&out, "personas");
    // Personas form at the first window with `personas.min_users` users; from then on every
    // profile is assigned.
    let first = (0..personas.len())
        .map(|r| personas.column("window_end")[r].int())
        .min()
        .expect("personas formed");
    let assignable = (0..profiles.len())
        .filter(|r| profiles.column("window_end")[*r].int() >= first)
        .count();
    assert_eq!(assignments.len(), assignable, "one assignment per profile");
    let mut ids_by_window: BTreeMap<i64, BTreeSet<i64>> = BTreeMap::new();
    let mut sizes: BTreeMap<i64, i64> = BTreeMap::new();
    for row in 0..personas.len() {
        let w = personas.column("window_end")[row].int();
        ids_by_window
            .entry(w)
            .or_default()
            .insert(personas.column("persona_id")[row].int());
        *sizes.entry(w).or_default() += personas.column("size")[row].int();
        let k = personas.column("personas")[row].int();
        assert!((2..=8).contains(&k), "k in the silhouette range: {k}");
    }
    let mut assigned: BTreeMap<i64, i64> = BTreeMap::new();
    for row in 0..assignments.len() {
        let w = assignments.column("window_end")[row].int();
        let id = assignments.column("persona_id")[row].int();
        *assigned.entry(w).or_default() += 1;
        let Value::List(ids) = assignments.column("persona_ids")[row] else {
            panic!("persona_ids is a list")
        };
        let Value::List(probs) = assignments.column("probabilities")[row] else {
            panic!("probabilities is a list")
        };
        let ids: BTreeSet<i64> = ids.iter().map(Value::int).collect();
        assert_eq!(Some(&ids), ids_by_window.get(&w), "the window's personas");
        let probs: Vec<f64> = probs.iter().map(Value::float).collect();
        assert!((probs.iter().sum::<f64>() - 1.0).abs() < 1e-3);
        let mine = ids.iter().position(|i| *i == id).unwrap();
        assert!(probs.iter().all(|p| *p <= probs[mine] + 1e-6));
    }
    assert_eq!(assigned, sizes, "persona sizes count their assignments");

    // Persona ids are stable: most windows keep every id of the window before.
    let windows: Vec<&BTreeSet<i64>> = ids_by_window.values().collect();
    let kept = windows.windows(2).filter(|w| w[0] == w[1]).count();
    assert!(
        kept * 10 >= (windows.len() - 1) * 8,
        "ids kept in {kept} of {} window pairs",
        windows.len() - 1
    );

    // Every drift event has its scaling row, and both agree on the action.
    let drift = output_table(&out, "drift");
    let scaling = output_table(&out, "scaling");
    assert_eq!(drift.len(), scaling.len());
    let keyed = |t: &Table| -> BTreeSet<(i64, String, String, String)> {
        (0..t.len())
            .map(|r| {
                (
                    t.column("window_end")[r].int(),
                    t.column("scope")[r].str().to_string(),
                    t.column("scope_id")[r].str().to_string(),
                    t.column("action")[r].str().to_string(),
                )
            })
            .collect()
    };
    assert_eq!(keyed(&drift), keyed(&scaling));
    for r in 0..drift.len() {
        assert!(drift.column("distance")[r].float() > drift.column("threshold")[r].float());
        assert!(drift.column("p_value")[r].float() < 0.01);
        assert!(drift.column("onset_window_end")[r].int() <= drift.column("window_end")[r].int());
    }
    // Each recommendation is sized for the peak of the demand it covers, which is at least
    // the expected demand at every horizon.
    let floats = |v: &Value| -> Vec<f64> {
        match v {
            Value::List(items) => items.iter().map(Value::float).collect(),
            other => panic!("expected a list, found {other:?}"),
        }
    };
    for r in 0..scaling.len() {
        let expected = floats(scaling.column("predicted_requests")[r]);
        let upper = floats(scaling.column("upper_requests")[r]);
        assert_eq!(expected.len(), upper.len());
        // `[scaling] horizon` is 15 windows by default, past the forecaster's 4.
        assert!(expected.is_empty() || expected.len() == 15, "{expected:?}");
        // `onset_trend` is off by default.
        assert_eq!(scaling.column("trend_per_window")[r].float(), 0.0);
        assert!(expected
            .iter()
            .zip(&upper)
            .all(|(e, u)| e <= u && *e >= 0.0));
        let capacity = scaling.column("capacity_per_instance")[r].float();
        let peak = upper.iter().copied().fold(0.0f64, f64::max);
        let needed = ((peak / capacity).ceil() as i64).max(1);
        if !upper.is_empty() {
            assert_eq!(scaling.column("recommended_instances")[r].int(), needed);
        }
    }
}

#[test]
fn evaluate_tcpd_scores_above_the_baselines_and_writes_predictions() {
    let Some(data) = shared_data("evaluate_tcpd_scores_above_the_baselines_and_writes_predictions")
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (json, predictions) = (tmp.path().join("r.json"), tmp.path().join("p.json"));
    let run = run(&[
        "evaluate",
        "tcpd",
        data.join("tcpd").to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
        "--predictions",
        predictions.to_str().unwrap(),
    ])
    .ok();
    assert!(run.stdout.contains("mean"), "{}", run.stdout);
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let nothing = report["mean_f1_nothing"].as_f64().unwrap();
    // The TCPD paper's "zero" method on these 7 series, as the issue states it.
    assert!((nothing - 0.483).abs() < 0.005, "{nothing}");
    let f1 = report["mean_f1"].as_f64().unwrap();
    assert!(f1 > nothing + 0.08, "mean F1 {f1} against {nothing}");
    let p: BTreeMap<String, Vec<usize>> =
        serde_json::from_slice(&std::fs::read(&predictions).unwrap()).unwrap();
    assert_eq!(p.len(), 7);
    assert!(p["uk_coal_employment.csv"].iter().all(|r| *r < 105));
}

#[test]
fn evaluate_nab_scores_every_labelled_file() {
    let Some(data) = shared_data("evaluate_nab_scores_every_labelled_file") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("nab.json");
    let run = run(&[
        "evaluate",
        "nab",
        data.join("nab").to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ])
    .ok();
    assert!(run.stdout.contains("realKnownCause"), "{}", run.stdout);
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["files"].as_array().unwrap().len(), 58);
    let precision = report["precision"].as_f64().unwrap();
    let share = report["window_row_share"].as_f64().unwrap();
    assert!(
        precision > share,
        "better than random: {precision} vs {share}"
    );
    assert!(report["recall"].as_f64().unwrap() > 0.5);
}

#[test]
fn evaluate_without_a_mode_says_what_it_needs() {
    let run = run(&["evaluate", "tcpd", "/nonexistent/tcpd"]);
    let line = run.fails_with_one_line();
    assert!(line.contains("/nonexistent/tcpd/targets.json"), "{line}");
}
