//! CLI basics: help, clean one-line errors, configuration layers.

use crate::simulated::check_resonance_rows;
use crate::support::*;

#[test]
fn help_lists_the_commands_and_the_backfill_flags() {
    let run = run(&["--help"]).ok();
    for command in ["backfill", "simulate", "demo", "evaluate"] {
        assert!(run.stdout.contains(command), "--help lacks {command}");
    }
    let run = crate::support::run(&["backfill", "--help"]).ok();
    for flag in [
        "--input",
        "--output",
        "--config",
        "--mapping",
        "--workers",
        "--overwrite",
        "PERSONAFLOW__",
    ] {
        assert!(run.stdout.contains(flag), "backfill --help lacks {flag}");
    }
    let run = crate::support::run(&["simulate", "--help"]).ok();
    for flag in ["--users", "--days", "--seed", "--out", "--drift"] {
        assert!(run.stdout.contains(flag), "simulate --help lacks {flag}");
    }
    let run = crate::support::run(&["--version"]).ok();
    assert!(
        run.stdout.contains(env!("CARGO_PKG_VERSION")),
        "{}",
        run.stdout
    );

    // Usage errors are refused by the parser, with the usage.
    let run = crate::support::run(&["backfill", "--output", "x"]);
    assert!(matches!(run.code, Some(c) if c != 0 && c != 101), "{run:?}");
    assert!(run.stderr.contains("--input"), "{}", run.stderr);
    let run = crate::support::run::<&str>(&[]);
    assert!(matches!(run.code, Some(c) if c != 0 && c != 101), "{run:?}");
}

#[test]
fn nonexistent_input_is_a_one_line_error() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-dir/events.parquet");
    let out = tmp.path().join("out");
    let line = backfill(&missing, &out, &[]).fails_with_one_line();
    assert!(line.contains(&missing.display().to_string()), "{line}");
    assert!(!out.exists());
    // A glob that matches nothing.
    let glob = tmp.path().join("*.parquet");
    let line = backfill(&glob, &out, &[]).fails_with_one_line();
    assert!(line.contains("no input files"), "{line}");
    assert!(!out.exists());
    // A file whose format cannot be told.
    let odd = tmp.path().join("events.xlsx");
    std::fs::write(&odd, b"x").unwrap();
    let line = backfill(&odd, &out, &[]).fails_with_one_line();
    assert!(
        line.contains("events.xlsx") && line.contains("format"),
        "{line}"
    );
    assert!(!out.exists());
    assert_eq!(staging_dirs(tmp.path(), "out"), Vec::<String>::new());
}

#[test]
fn bad_configuration_is_refused_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.csv");
    std::fs::write(&input, format!("ts,user_id,action\n{SIM_START_MS},u,x\n")).unwrap();
    let out = tmp.path().join("out");
    let cases: [(&str, &str, &[&str]); 4] = [
        (
            "negative.toml",
            "[resonance]\ntemperature = -1\n",
            &["temperature"],
        ),
        (
            "threshold.toml",
            "[resonance]\nthreshold = 1.5\n",
            &["threshold"],
        ),
        ("typo.toml", "[window]\nlenght = \"1m\"\n", &["lenght"]),
        (
            "window.toml",
            "[window]\nlength = \"1 fortnight\"\n",
            &["fortnight"],
        ),
    ];
    for (name, text, words) in cases {
        let config = tmp.path().join(name);
        std::fs::write(&config, text).unwrap();
        let line =
            backfill(&input, &out, &["--config", config.to_str().unwrap()]).fails_with_one_line();
        assert!(line.contains(name), "{line}");
        for word in words {
            assert!(line.contains(word), "{line}");
        }
        assert!(!out.exists());
    }
    // A bad value from the environment names the variable's key.
    let mut cmd = personaflow();
    backfill_cmd(&mut cmd, &input, &out, &[]).env("PERSONAFLOW__RESONANCE__TEMPERATURE", "0");
    let line = run_cmd(&mut cmd).fails_with_one_line();
    assert!(line.contains("temperature"), "{line}");
    // --workers 0 is refused.
    let mut cmd = personaflow();
    cmd.arg("backfill")
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(&out)
        .args(["--workers", "0"]);
    let line = run_cmd(&mut cmd).fails_with_one_line();
    assert!(line.contains("workers"), "{line}");
    assert!(!out.exists());
}

#[test]
fn environment_overrides_the_config_file_and_flags_override_both() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = tmp.path().join("sim");
    simulate(&sim, 80, 0.1, 5, &[]).ok();
    let events = sim.join("events");

    // A softer softmax than the default, so that many probabilities fall between the two
    // thresholds.
    let base = tmp.path().join("base.toml");
    std::fs::write(&base, "[resonance]\ntemperature = 0.3\n").unwrap();
    let default = tmp.path().join("default");
    backfill(&events, &default, &["--config", base.to_str().unwrap()]).ok();

    // File says 0.6, the environment 0.9: 0.9 wins. The environment's 1 worker loses to
    // --workers 2.
    let config = tmp.path().join("job.toml");
    std::fs::write(
        &config,
        "[resonance]\ntemperature = 0.3\nthreshold = 0.6\n[runtime]\nworkers = 1\n",
    )
    .unwrap();
    let strict = tmp.path().join("strict");
    let mut cmd = personaflow();
    backfill_cmd(
        &mut cmd,
        &events,
        &strict,
        &["--config", config.to_str().unwrap()],
    )
    .env("PERSONAFLOW__RESONANCE__THRESHOLD", "0.9")
    .env("PERSONAFLOW__RUNTIME__WORKERS", "1");
    run_cmd(&mut cmd).ok();

    let json = run_json(&strict);
    let threshold = json["config"]["resonance"]["threshold"].as_f64().unwrap();
    assert!((threshold - 0.9).abs() < 1e-6, "threshold {threshold}");
    assert_eq!(json_u64(&json, "/workers"), 2);
    assert_eq!(json_u64(&json, "/config/runtime/workers"), 2);
    let default_json = run_json(&default);
    assert_eq!(
        default_json["config"]["resonance"]["threshold"].as_f64(),
        Some(0.5)
    );

    // Resonating flags follow each run's threshold, and fewer rows resonate at 0.9.
    let (_, at_half) = check_resonance_rows(&output_table(&default, "resonance"), 0.5);
    let strict_resonance = output_table(&strict, "resonance");
    let (_, at_ninety) = check_resonance_rows(&strict_resonance, 0.9);
    let between = strict_resonance
        .column("probability")
        .iter()
        .filter(|p| (0.6..0.9).contains(&p.float()))
        .count();
    assert!(
        between > 0,
        "no probability in [0.6, 0.9): the test cannot tell 0.9 from the file's 0.6"
    );
    assert!(
        at_ninety < at_half,
        "{at_ninety} rows resonate at 0.9, {at_half} at 0.5"
    );
    assert!(at_ninety > 0);
    // Nothing else changes.
    for table in ["features", "profiles", "segment_profiles"] {
        assert!(
            output_table(&default, table).sorted_rows()
                == output_table(&strict, table).sorted_rows(),
            "{table} changed with the resonance threshold"
        );
    }
}

/// The `: `-separated parts of an error line that occur more than once (ignoring short
/// ones such as `parquet`).
fn repeated_parts(line: &str) -> Vec<&str> {
    let parts: Vec<&str> = line.split(": ").collect();
    let mut repeated: Vec<&str> = parts
        .iter()
        .enumerate()
        .filter(|(i, p)| p.len() > 16 && parts[..*i].contains(p))
        .map(|(_, p)| *p)
        .collect();
    repeated.dedup();
    repeated
}

#[test]
fn errors_state_their_cause_once() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing.parquet");
    let garbage = tmp.path().join("garbage.parquet");
    std::fs::write(&garbage, b"not parquet at all, just some text").unwrap();
    for input in [&missing, &garbage] {
        let line = backfill(input, &tmp.path().join("out"), &[]).fails_with_one_line();
        assert_eq!(repeated_parts(&line), Vec::<&str>::new(), "{line}");
    }
}

#[test]
fn operator_times_name_every_stage_on_each_worker() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = tmp.path().join("sim");
    simulate(&sim, 60, 0.05, 3, &[]).ok();
    let out = tmp.path().join("out");
    let mut cmd = personaflow();
    cmd.env("PERSONAFLOW__EMBEDDER__KIND", "standardised")
        .env("PERSONAFLOW__FORECASTER__KIND", "persistence");
    backfill_cmd(&mut cmd, &sim.join("events"), &out, &[])
        .env("PERSONAFLOW__RUNTIME__OPERATOR_TIMES", "true");
    let run = run_cmd(&mut cmd).ok();
    assert!(run.stderr.contains("operator times"), "{}", run.stderr);

    let json = run_json(&out);
    let rows = json["operator_times"].as_array().expect("operator_times");
    let row = |worker: u64, name: &str| {
        rows.iter()
            .find(|r| r["worker"] == worker && r["name"] == name)
    };
    for worker in 0..2 {
        // The stages that place users by user run on both workers.
        for name in [
            "WindowAggregate",
            "Sequences",
            "EmbedProfiles",
            "SinkProfiles",
        ] {
            let r = row(worker, name).unwrap_or_else(|| panic!("{name} on {worker}: {rows:#?}"));
            assert!(r["activations"].as_u64().unwrap() > 0, "{r}");
        }
        // The dataflow contains them: its time is at least theirs, its own time the rest.
        let dataflow = row(worker, "Dataflow").expect("the dataflow");
        let inside: f64 = rows
            .iter()
            .filter(|r| r["worker"] == worker && r["address"].as_array().unwrap().len() == 2)
            .map(|r| r["secs"].as_f64().unwrap())
            .sum();
        let (secs, own) = (
            dataflow["secs"].as_f64().unwrap(),
            dataflow["own_secs"].as_f64().unwrap(),
        );
        assert!(
            secs >= inside * 0.999 && (own - (secs - inside)).abs() < 1e-6,
            "{dataflow}"
        );
    }
    // Off by default: no rows.
    let plain = tmp.path().join("plain");
    let mut cmd = personaflow();
    cmd.env("PERSONAFLOW__EMBEDDER__KIND", "standardised")
        .env("PERSONAFLOW__FORECASTER__KIND", "persistence");
    run_cmd(backfill_cmd(&mut cmd, &sim.join("events"), &plain, &[])).ok();
    assert!(run_json(&plain).get("operator_times").is_none());
}
