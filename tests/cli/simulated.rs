//! The CLI on simulator output: `simulate`, `backfill`, `evaluate` and `demo`.

use crate::support::*;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

/// Parses the event count from `simulate`'s summary line
/// (`simulate: N users (A authenticated), E events in F files ...`).
fn simulated_events(stderr: &str) -> u64 {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("simulate: "))
        .unwrap_or_else(|| panic!("no summary line in:\n{stderr}"));
    let before = line
        .split(" events")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .unwrap_or_else(|| panic!("no event count in {line}"));
    before
        .parse()
        .unwrap_or_else(|_| panic!("no event count in {line}"))
}

/// The truth of a simulation: user -> (segment, authenticated).
fn truth(sim: &Path) -> HashMap<String, (String, bool)> {
    let t = read_parquet(&sim.join("truth/users.parquet"));
    let (u, s, a) = (t.col("user_id"), t.col("segment"), t.col("authenticated"));
    t.rows
        .iter()
        .map(|r| {
            (
                r[u].str().to_string(),
                (r[s].str().to_string(), r[a].bool()),
            )
        })
        .collect()
}

/// `(window_end, user_id)` of every row, checking that none repeats.
#[track_caller]
fn user_windows(t: &Table, table: &str) -> BTreeSet<(i64, String)> {
    let (we, u) = (t.col("window_end"), t.col("user_id"));
    let mut keys = BTreeSet::new();
    for r in &t.rows {
        let key = (r[we].int(), r[u].str().to_string());
        assert!(keys.insert(key.clone()), "{table} repeats {key:?}");
    }
    keys
}

/// Row-level checks of a resonance table: known segments, probabilities in \[0, 1\], finite
/// cosines, and `resonating` exactly when `probability >= threshold`. Returns the
/// `(window_end, user_id)` keys and the number of resonating rows.
#[track_caller]
pub fn check_resonance_rows(t: &Table, threshold: f64) -> (BTreeSet<(i64, String)>, usize) {
    let (we, u, s) = (t.col("window_end"), t.col("user_id"), t.col("segment"));
    let (p, res, cos) = (t.col("probability"), t.col("resonating"), t.col("cosine"));
    let mut keys = BTreeSet::new();
    let mut resonating = 0;
    for r in &t.rows {
        let key = (r[we].int(), r[u].str().to_string());
        let prob = r[p].float();
        assert!(SEGMENTS.contains(&r[s].str()), "unknown segment in {r:?}");
        assert!(
            (0.0..=1.0 + 1e-6).contains(&prob),
            "probability {prob} in {r:?}"
        );
        assert!(r[cos].float().is_finite(), "cosine not finite in {r:?}");
        assert_eq!(
            r[res].bool(),
            // The product compares in f32, as stored.
            (prob as f32) >= (threshold as f32),
            "resonating must be probability >= {threshold}: {r:?}"
        );
        resonating += usize::from(r[res].bool());
        keys.insert(key);
    }
    (keys, resonating)
}

/// Group-level checks of a resonance table: per (window_end, user_id) the segments are
/// distinct, their probabilities sum to 1 (within 1e-4), and exactly one row is `top`, the
/// most probable one.
#[track_caller]
fn check_resonance_distributions(t: &Table) {
    let (we, u, s) = (t.col("window_end"), t.col("user_id"), t.col("segment"));
    let (p, top) = (t.col("probability"), t.col("top"));
    let mut groups: BTreeMap<(i64, String), Vec<&Vec<Value>>> = BTreeMap::new();
    for r in &t.rows {
        groups
            .entry((r[we].int(), r[u].str().to_string()))
            .or_default()
            .push(r);
    }
    assert!(!groups.is_empty());
    for (key, rows) in &groups {
        let segments: BTreeSet<&str> = rows.iter().map(|r| r[s].str()).collect();
        assert_eq!(
            segments.len(),
            rows.len(),
            "{key:?} has {} rows for {} segments:\n{rows:#?}",
            rows.len(),
            segments.len()
        );
        let sum: f64 = rows.iter().map(|r| r[p].float()).sum();
        assert!(
            (sum - 1.0).abs() <= 1e-4,
            "probabilities of {key:?} sum to {sum}"
        );
        let tops: Vec<_> = rows.iter().filter(|r| r[top].bool()).collect();
        assert_eq!(tops.len(), 1, "{key:?} has {} top rows", tops.len());
        let max = rows.iter().map(|r| r[p].float()).fold(f64::MIN, f64::max);
        assert!(
            tops[0][p].float() >= max - 1e-6,
            "the top row of {key:?} is not its most probable segment"
        );
    }
}

#[test]
fn simulate_then_backfill_writes_consistent_deterministic_tables() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = tmp.path().join("sim");
    let run = simulate(&sim, 120, 0.15, 7, &[]).ok();
    let simulated = simulated_events(&run.stderr);
    let events_table = read_dir_table(&sim.join("events"));
    assert_eq!(events_table.len() as u64, simulated);
    assert!(simulated > 500, "a 120-user simulation should have events");
    let truth = truth(&sim);
    assert_eq!(truth.len(), 120);

    let out = tmp.path().join("out");
    let run = backfill(&sim.join("events"), &out, &[]).ok();
    assert!(
        run.stderr
            .contains(&format!("backfill: {simulated} events")),
        "summary line missing: {}",
        run.stderr
    );

    // run.json: counts agree with the simulator and with the tables on disk.
    let json = run_json(&out);
    assert_eq!(json_u64(&json, "/events"), simulated);
    assert_eq!(json_u64(&json, "/rows_read"), simulated);
    assert_eq!(json_u64(&json, "/rejects"), 0);
    assert_eq!(json_u64(&json, "/late_events"), 0);
    assert_eq!(json_u64(&json, "/workers"), 2);
    let inputs: Vec<String> = events_table
        .files
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    assert_eq!(json["inputs"], serde_json::json!(inputs));
    let mut tables = BTreeMap::new();
    for name in PARTITIONED_TABLES.iter().chain(&["rejects"]) {
        let t = output_table(&out, name);
        assert_eq!(
            json_u64(&json, &format!("/rows_written/{name}")),
            t.len() as u64,
            "run.json rows_written of {name}"
        );
        let mut columns = t.columns.clone();
        columns.sort();
        columns.dedup();
        assert_eq!(
            columns.len(),
            t.columns.len(),
            "{name} repeats a column name (pyarrow and DuckDB refuse such files): {:?}",
            t.columns
        );
        assert!(
            !columns.contains(&"date".to_string()),
            "`date` is the partition key"
        );
        tables.insert(*name, t);
    }

    // Hive layout: TABLE/date=YYYY-MM-DD/part-*.parquet, rows in their window's date.
    for name in PARTITIONED_TABLES {
        assert!(tables[name].len() > 0, "{name} is empty");
        let dates = check_partitions(&out, name, DEFAULT_WINDOW_MS);
        assert_eq!(dates, ["2026-01-05"], "{name}");
    }
    for f in &tables["rejects"].files {
        let rel = f.strip_prefix(out.join("rejects")).unwrap();
        let name = rel.to_string_lossy();
        assert!(name.starts_with("part-") && !name.contains('/'), "{name}");
    }
    assert_eq!(tables["rejects"].len(), 0);

    // features and profiles: one row each per active user and window, the same keys.
    let features = &tables["features"];
    let profiles = &tables["profiles"];
    let feature_keys = user_windows(features, "features");
    let profile_keys = user_windows(profiles, "profiles");
    assert_eq!(feature_keys, profile_keys, "features and profiles differ");
    let counted: i64 = features.column("events").iter().map(|v| v.int()).sum();
    assert_eq!(counted as u64, simulated, "features count every event once");
    let (fu, fa, fs) = (
        features.col("user_id"),
        features.col("authenticated"),
        features.col("segment"),
    );
    for r in &features.rows {
        let (segment, authenticated) = &truth[r[fu].str()];
        assert_eq!(r[fa].bool(), *authenticated, "{}", r[fu].str());
        if *authenticated {
            assert_eq!(r[fs].opt_str(), Some(segment.as_str()));
        } else {
            assert_eq!(
                r[fs].opt_str(),
                None,
                "unauthenticated users carry no segment"
            );
        }
    }
    let emb = profiles.col("embedding");
    let dims = match &profiles.rows[0][emb] {
        Value::List(v) => v.len(),
        other => panic!("embedding is {other:?}"),
    };
    assert!(dims > 0);
    for r in &profiles.rows {
        let Value::List(v) = &r[emb] else {
            panic!("embedding is not a list")
        };
        assert_eq!(v.len(), dims);
        assert!(v.iter().all(|x| x.float().is_finite()));
    }

    // segment profiles: known segments, at least one profile each.
    let sp = &tables["segment_profiles"];
    for r in &sp.rows {
        assert!(SEGMENTS.contains(&r[sp.col("segment")].str()));
        assert!(r[sp.col("profiles")].int() > 0);
    }

    // resonance: row-level rules (one distribution per profiled user-window is checked by
    // `resonance_is_one_distribution_per_user_and_window`).
    let (_, resonating) = check_resonance_rows(&tables["resonance"], 0.5);
    assert!(resonating > 0, "no user resonates with any segment");

    // Determinism: a second run gives the same rows in every table.
    let again = tmp.path().join("again");
    backfill(&sim.join("events"), &again, &[]).ok();
    for (name, t) in &tables {
        let other = output_table(&again, name);
        assert_eq!(t.columns, other.columns, "{name}");
        assert!(
            t.sorted_rows() == other.sorted_rows(),
            "{name} differs between two runs of the same backfill"
        );
    }
    let json_again = run_json(&again);
    for name in ["features", "profiles", "segment_profiles", "rejects"] {
        let pointer = format!("/rows_written/{name}");
        assert_eq!(json_u64(&json, &pointer), json_u64(&json_again, &pointer));
    }

    // evaluate reads both and writes the report.
    let report = tmp.path().join("report.json");
    let mut cmd = personaflow();
    cmd.arg("evaluate")
        .arg("--scenario")
        .arg(&sim)
        .arg("--output")
        .arg(&out)
        .arg("--json")
        .arg(&report);
    let run = run_cmd(&mut cmd).ok();
    assert!(run.stdout.lines().any(|l| l.starts_with("all ")));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let users: u64 = SEGMENTS
        .iter()
        .map(|s| json_u64(&report, &format!("/segments/{s}/users")))
        .sum();
    assert_eq!(users, 120);
}

#[test]
fn resonance_is_one_distribution_per_user_and_window() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = tmp.path().join("sim");
    simulate(&sim, 120, 0.15, 7, &[]).ok();
    let first = tmp.path().join("first");
    let second = tmp.path().join("second");
    backfill(&sim.join("events"), &first, &[]).ok();
    backfill(&sim.join("events"), &second, &[]).ok();
    let resonance = output_table(&first, "resonance");
    check_resonance_distributions(&resonance);
    let profiles = output_table(&first, "profiles");
    let profile_keys = user_windows(&profiles, "profiles");
    let (keys, _) = check_resonance_rows(&resonance, 0.5);
    assert!(
        keys.is_subset(&profile_keys),
        "resonance for a user-window without a profile: {:?}",
        keys.difference(&profile_keys).next()
    );
    assert!(
        resonance.sorted_rows() == output_table(&second, "resonance").sorted_rows(),
        "resonance differs between two runs of the same backfill"
    );
}

#[test]
fn simulate_is_seeded_and_writes_the_truth() {
    let tmp = tempfile::tempdir().unwrap();
    let drift = ["--drift", "gamer@2h:bytes=3.0"];
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    let c = tmp.path().join("c");
    simulate(&a, 60, 0.1, 11, &drift).ok();
    simulate(&b, 60, 0.1, 11, &drift).ok();
    simulate(&c, 60, 0.1, 12, &drift).ok();

    let events = |dir: &Path| read_dir_table(&dir.join("events"));
    let (ea, eb, ec) = (events(&a), events(&b), events(&c));
    assert!(ea.len() > 100);
    assert!(
        ea.sorted_rows() == eb.sorted_rows(),
        "same seed, different events"
    );
    assert!(
        ea.sorted_rows() != ec.sorted_rows(),
        "different seeds, same events"
    );
    assert_eq!(truth(&a), truth(&b));

    // Events: canonical columns, sorted by time, within the simulated period.
    for col in ["ts", "user_id", "action"] {
        ea.col(col);
    }
    let ts: Vec<i64> = ea.column("ts").iter().map(|v| v.int()).collect();
    assert!(
        ts.windows(2).all(|w| w[0] <= w[1]),
        "events not in time order"
    );
    let end = SIM_START_MS + (0.1 * 86_400_000.0) as i64;
    assert!(ts.iter().all(|t| (SIM_START_MS..end).contains(t)));
    for f in &ea.files {
        let rel = f.strip_prefix(a.join("events")).unwrap();
        assert!(rel.starts_with("date=2026-01-05"), "{}", rel.display());
    }

    // The truth: every user once, in a known segment.
    let users = read_parquet(&a.join("truth/users.parquet"));
    assert_eq!(users.len(), 60);
    let truth = truth(&a);
    assert_eq!(truth.len(), 60, "user ids repeat");
    assert!(truth.values().all(|(s, _)| SEGMENTS.contains(&s.as_str())));
    assert!(truth.values().any(|(_, auth)| *auth) && truth.values().any(|(_, auth)| !*auth));
    let event_users: BTreeSet<&str> = ea.column("user_id").iter().map(|v| v.str()).collect();
    assert!(event_users.iter().all(|u| truth.contains_key(*u)));

    // drifts.json records the injection.
    let drifts: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.join("truth/drifts.json")).unwrap()).unwrap();
    let drifts = drifts.as_array().expect("drifts.json is an array");
    assert_eq!(drifts.len(), 1, "{drifts:?}");
    let d = &drifts[0];
    assert_eq!(d["segment"], "gamer");
    assert_eq!(d["kind"], "bytes");
    assert_eq!(d["magnitude"].as_f64(), Some(3.0));
    assert_eq!(d["start_offset_ms"].as_i64(), Some(2 * 3_600_000));
    assert_eq!(d["start_ms"].as_i64(), Some(SIM_START_MS + 2 * 3_600_000));
    let none: serde_json::Value = {
        let d = tmp.path().join("d");
        simulate(&d, 10, 0.05, 1, &[]).ok();
        serde_json::from_slice(&std::fs::read(d.join("truth/drifts.json")).unwrap()).unwrap()
    };
    assert_eq!(none, serde_json::json!([]));

    // An existing simulation is not overwritten without --overwrite.
    let before = snapshot(&a.join("events"));
    let line = simulate(&a, 60, 0.1, 99, &[]).fails_with_one_line();
    assert!(
        line.contains("events") && line.contains("overwrite"),
        "{line}"
    );
    assert!(before == snapshot(&a.join("events")), "events were touched");
    simulate(&a, 60, 0.1, 12, &["--overwrite", "--drift", drift[1]]).ok();
    assert!(events(&a).sorted_rows() == ec.sorted_rows());

    // A malformed drift is refused.
    let line = simulate(
        &tmp.path().join("e"),
        10,
        0.05,
        1,
        &["--drift", "gamer@2h:bytes"],
    )
    .fails_with_one_line();
    assert!(line.contains("drift"), "{line}");
    assert!(!tmp.path().join("e").join("events").exists());
}

#[test]
fn demo_prints_every_segment_and_the_total() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = personaflow();
    cmd.args([
        "demo",
        "--users",
        "150",
        "--days",
        "0.2",
        "--workers",
        WORKERS,
    ])
    .arg("--out")
    .arg(tmp.path());
    let run = run_cmd(&mut cmd).ok();
    let mut users = BTreeMap::new();
    for line in run.stdout.lines() {
        let mut fields = line.split_whitespace();
        let (Some(name), Some(count)) = (fields.next(), fields.next()) else {
            continue;
        };
        if let Ok(n) = count.parse::<u64>() {
            users.insert(name.to_string(), n);
        }
    }
    for seg in SEGMENTS {
        assert!(
            users.get(seg).is_some_and(|n| *n > 0),
            "no row for {seg} in:\n{}",
            run.stdout
        );
    }
    let total: u64 = SEGMENTS.iter().map(|s| users[*s]).sum();
    assert_eq!(users.get("all"), Some(&total), "{}", run.stdout);
    assert_eq!(total, 150);
    // --out keeps the scenario and the outputs.
    assert!(tmp.path().join("scenario/truth/users.parquet").is_file());
    let json = run_json(&tmp.path().join("output"));
    assert!(json_u64(&json, "/events") > 0);
    check_partitions(&tmp.path().join("output"), "resonance", DEFAULT_WINDOW_MS);
}
