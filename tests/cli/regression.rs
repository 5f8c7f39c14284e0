//! Regression tests: one per defect found by trying personaflow as a new user would (the
//! hardening issue), named for the defect, through the real binary. Each failed before its
//! fix.

use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Event time of the first generated row: 2026-01-05T00:00:00Z.
const T0: i64 = SIM_START_MS;

/// The model-free embedder and forecaster: these tests are about the data, not the models.
fn quick(cmd: &mut Command) -> &mut Command {
    cmd.env("PERSONAFLOW__EMBEDDER__KIND", "standardised")
        .env("PERSONAFLOW__FORECASTER__KIND", "persistence")
}

/// `personaflow backfill` of `inputs` into `output` with `extra` flags, model-free.
fn backfill_many(inputs: &[&Path], output: &Path, extra: &[&str]) -> Run {
    let mut cmd = personaflow();
    quick(&mut cmd).arg("backfill");
    for i in inputs {
        cmd.arg("--input").arg(i);
    }
    cmd.arg("--output")
        .arg(output)
        .args(["--workers", WORKERS])
        .args(extra);
    run_cmd(&mut cmd)
}

/// A TSV/CSV file of events: `(ts, user, rest)` rows after `header`, joined by `sep`.
fn write_events(path: &Path, header: &str, rows: &[String]) {
    let mut text = format!("{header}\n");
    for r in rows {
        text.push_str(r);
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

/// `n` good CSV rows (`ts,user_id,action`), 10 s apart, of users `u0..u4`.
fn good_rows(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("{},u{},page_view", T0 + i as i64 * 10_000, i % 5))
        .collect()
}

/// Names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn overwrite_never_deletes_an_input_or_a_directory_personaflow_did_not_write() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("d");
    std::fs::create_dir(&d).unwrap();
    let events = d.join("events.tsv");
    let rows: Vec<String> = good_rows(20).iter().map(|r| r.replace(',', "\t")).collect();
    write_events(&events, "ts\tuser_id\taction", &rows);
    let before = snapshot(&d);
    // The output is the input, lies inside it, or contains it: refused before reading.
    for (out, what) in [
        (d.clone(), "is also an input"),
        (d.join("out"), "lies inside the input"),
        (tmp.path().to_path_buf(), "contains the input"),
    ] {
        let line = backfill_many(&[&d], &out, &["--overwrite"]).fails_with_one_line();
        assert!(line.contains(what), "{line}");
        assert!(before == snapshot(&d), "the input was touched");
    }
    let line = backfill_many(&[&events], &d, &["--overwrite"]).fails_with_one_line();
    assert!(line.contains("contains the input"), "{line}");
    assert!(before == snapshot(&d));
    // A directory personaflow did not write is refused, with its path, and survives.
    let mine = tmp.path().join("mine");
    std::fs::create_dir(&mine).unwrap();
    std::fs::write(mine.join("notes.txt"), "mine").unwrap();
    let line = backfill_many(&[&d], &mine, &["--overwrite"]).fails_with_one_line();
    assert!(
        line.contains(&mine.display().to_string()) && line.contains("not written by personaflow"),
        "{line}"
    );
    assert_eq!(
        std::fs::read_to_string(mine.join("notes.txt")).unwrap(),
        "mine"
    );
    assert_eq!(names(tmp.path()), ["d", "mine"], "nothing left beside them");
    // A personaflow output is replaced.
    let out = tmp.path().join("out");
    backfill_many(&[&d], &out, &[]).ok();
    backfill_many(&[&d], &out, &["--overwrite"]).ok();
    assert_eq!(json_u64(&run_json(&out), "/events"), 20);
}

#[test]
fn byte_counts_and_latencies_too_large_to_sum_are_rejected_not_wrapped() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("big.tsv");
    let mut rows = Vec::new();
    for i in 0..10 {
        rows.push(format!("{}\tu1\tget\t100\t10\t5.0", T0 + i * 1_000));
    }
    rows.push(format!("{}\tu1\tget\t1e19\t10\t5.0", T0 + 11_000));
    rows.push(format!("{}\tu1\tget\t1e19\t10\t5.0", T0 + 12_000));
    rows.push(format!(
        "{}\tu1\tget\t100\t18446744073709551615\t5.0",
        T0 + 13_000
    ));
    rows.push(format!("{}\tu1\tget\t100\t10\t1e16", T0 + 14_000));
    rows.push(format!("{}\tu1\tget\t100\t10\t1e16", T0 + 15_000));
    write_events(
        &input,
        "ts\tuser_id\taction\tbytes_in\tbytes_out\tlatency_ms",
        &rows,
    );
    let out = tmp.path().join("out");
    backfill_many(&[&input], &out, &[]).ok();
    let rejects = rejects(&out);
    let fields: Vec<(u64, Option<&str>)> = rejects
        .iter()
        .map(|(_, row, field, _)| (*row, field.as_deref()))
        .collect();
    assert_eq!(
        fields,
        [
            (11, Some("bytes_in")),
            (12, Some("bytes_in")),
            (13, Some("bytes_out")),
            (14, Some("latency_ms")),
            (15, Some("latency_ms"))
        ]
    );
    assert!(
        rejects.iter().all(|r| r.3.contains("above the bound")),
        "{rejects:?}"
    );
    // The accepted rows' features are what they should be: 10 events of 110 bytes.
    let features = output_table(&out, "features");
    let bytes: i64 = features.column("bytes").iter().map(|v| v.int()).sum();
    assert_eq!(bytes, 1_100);
    for row in &features.rows {
        let mean = row[features.col("latency_mean")].float();
        let max = row[features.col("latency_max")].float();
        assert!(
            mean <= max + 1e-6,
            "latency mean {mean} above its max {max}"
        );
    }
}

#[test]
fn an_unterminated_quote_fails_the_file_naming_the_line_instead_of_swallowing_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let header = "ts,user_id,action,note";
    // Row 33 opens a quote that is never closed: before, the 167 rows after it vanished.
    let mut rows: Vec<String> = good_rows(200).iter().map(|r| format!("{r},ok")).collect();
    rows[32] = format!("\"unterminated,{}", rows[32]);
    let input = tmp.path().join("quote.csv");
    write_events(&input, header, &rows);
    let out = tmp.path().join("out");
    let line = backfill_many(&[&input], &out, &[]).fails_with_one_line();
    assert!(
        line.contains("quote.csv") && line.contains("line 34") && line.contains("quote"),
        "{line}"
    );
    assert!(!out.exists());
    assert_eq!(staging_dirs(tmp.path(), "out"), Vec::<String>::new());
    // In the last column, the swallowed lines keep the field count: still found, at the end.
    let mut rows: Vec<String> = good_rows(200).iter().map(|r| format!("{r},ok")).collect();
    rows[32] = rows[32].replace(",ok", ",\"never closed");
    write_events(&input, header, &rows);
    let line = backfill_many(&[&input], &out, &[]).fails_with_one_line();
    assert!(
        line.contains("line 34") && line.contains("never closed"),
        "{line}"
    );
    // A quote closed by a stray quote further down spans lines with the wrong field count.
    let mut rows: Vec<String> = good_rows(200).iter().map(|r| format!("{r},ok")).collect();
    rows[32] = rows[32].replace(",ok", ",\"opened");
    rows[80] = rows[80].replace(",ok", ",closed\" later,x");
    write_events(&input, header, &rows);
    let line = backfill_many(&[&input], &out, &[]).fails_with_one_line();
    assert!(line.contains("line 34") && line.contains("spans"), "{line}");
    // A legitimate multi-line value of a column personaflow does not read is fine.
    let mut rows: Vec<String> = good_rows(50).iter().map(|r| format!("{r},ok")).collect();
    rows[10] = rows[10].replace(",ok", ",\"two\nlines\"");
    write_events(&input, header, &rows);
    backfill_many(&[&input], &out, &[]).ok();
    let json = run_json(&out);
    assert_eq!(
        (json_u64(&json, "/rows_read"), json_u64(&json, "/events")),
        (50, 50)
    );
}

/// A finished output of `input` in `out`, then a run into it with `env` set that must die or
/// fail; returns that run.
fn interrupted_commit(input: &Path, out: &Path, env: (&str, &str)) -> Run {
    let mut cmd = personaflow();
    quick(&mut cmd)
        .env(env.0, env.1)
        .arg("backfill")
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(out)
        .args(["--workers", WORKERS, "--overwrite"]);
    run_cmd(&mut cmd)
}

#[test]
fn a_crash_at_any_step_of_the_commit_is_recovered_by_the_next_run() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.csv");
    write_events(&input, "ts,user_id,action", &good_rows(30));
    let newer = tmp.path().join("newer.csv");
    write_events(&newer, "ts,user_id,action", &good_rows(40));
    for point in ["commit:staged", "commit:old-moved", "commit:new-in-place"] {
        let out = tmp.path().join("out");
        backfill_many(&[&input], &out, &["--overwrite"]).ok();
        let run = interrupted_commit(&newer, &out, ("PERSONAFLOW_TEST_CRASH_AT", point));
        assert_eq!(run.code, None, "{point}: the process was killed: {run:?}");
        // Whatever the step, one whole output is in place or a run can put it there.
        let next = backfill_many(&[&newer], &out, &["--overwrite"]).ok();
        assert!(
            next.stderr.contains("personaflow: warning: "),
            "{point}: the recovery is reported: {}",
            next.stderr
        );
        assert_eq!(json_u64(&run_json(&out), "/events"), 40, "{point}");
        let left: Vec<String> = names(tmp.path())
            .into_iter()
            .filter(|n| !n.ends_with(".csv"))
            .collect();
        match point {
            // The crashed run's finished output is kept, visibly, and the warning says where.
            "commit:staged" => {
                assert_eq!(left.len(), 2, "{left:?}");
                assert!(left[1].starts_with("out.finished-"), "{left:?}");
                assert!(next.stderr.contains(&left[1]), "{}", next.stderr);
                std::fs::remove_dir_all(tmp.path().join(&left[1])).unwrap();
            }
            _ => assert_eq!(left, ["out"], "{point}"),
        }
    }
}

#[test]
fn a_failure_after_the_run_names_where_the_finished_output_is() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.csv");
    write_events(&input, "ts,user_id,action", &good_rows(30));
    for point in ["commit:run-json", "commit:move-old", "commit:rename"] {
        let out = tmp.path().join("out");
        backfill_many(&[&input], &out, &["--overwrite"]).ok();
        let run = interrupted_commit(&input, &out, ("PERSONAFLOW_TEST_FAIL_AT", point));
        let line = run.fails_with_one_line();
        let kept = names(tmp.path())
            .into_iter()
            .find(|n| n.starts_with("out.finished-"))
            .unwrap_or_else(|| panic!("{point}: no finished output kept: {line}"));
        assert!(line.contains(&kept), "{point}: {line}");
        assert!(
            tmp.path().join(&kept).join("features").is_dir(),
            "{point}: the kept output has the tables"
        );
        // The old output is still whole.
        assert_eq!(json_u64(&run_json(&out), "/events"), 30, "{point}");
        std::fs::remove_dir_all(tmp.path().join(&kept)).unwrap();
    }
    // Removing the old output fails: the new one is in place, and the old is named.
    let out = tmp.path().join("out");
    let run = interrupted_commit(
        &input,
        &out,
        ("PERSONAFLOW_TEST_FAIL_AT", "commit:remove-old"),
    );
    let line = run.fails_with_one_line();
    assert!(
        line.contains("the new output is in place") && line.contains(".out.old-"),
        "{line}"
    );
    backfill_many(&[&input], &out, &["--overwrite"]).ok();
    assert_eq!(names(tmp.path()), ["in.csv", "out"]);
}

#[test]
fn a_mount_point_as_output_is_refused_before_reading_anything() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.csv");
    write_events(&input, "ts,user_id,action", &good_rows(10));
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    // A private mount namespace (as an unprivileged user too) with a tmpfs on `mnt`.
    let script = format!(
        "mount -t tmpfs none '{}' && exec '{}' backfill --input '{}' --output '{}' --overwrite",
        mnt.display(),
        env!("CARGO_BIN_EXE_personaflow"),
        input.display(),
        mnt.display()
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["-rm", "sh", "-c", &script])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    let Ok(probe) = Command::new("unshare").args(["-rm", "true"]).status() else {
        panic!("unshare (util-linux) is needed for this test");
    };
    assert!(probe.success(), "unshare -rm is refused on this machine");
    let line = run_cmd(&mut cmd).fails_with_one_line();
    assert!(
        line.contains("mount point") && line.contains("mnt"),
        "{line}"
    );
    assert_eq!(names(tmp.path()), ["in.csv", "mnt"], "nothing staged");
}

#[test]
fn size_keys_are_bounded_and_type_errors_name_the_key_and_its_source() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.csv");
    write_events(&input, "ts,user_id,action", &good_rows(10));
    let out = tmp.path().join("out");
    let config = tmp.path().join("job.toml");
    let c = config.to_str().unwrap();
    std::fs::write(&config, "[sequence]\nlength = 100000\n").unwrap();
    let line = backfill_many(&[&input], &out, &["--config", c]).fails_with_one_line();
    assert!(
        line.contains("job.toml") && line.contains("sequence.length") && line.contains("1024"),
        "{line}"
    );
    std::fs::write(&config, "[sequence]\nlength = \"sixteen\"\n").unwrap();
    let line = backfill_many(&[&input], &out, &["--config", c]).fails_with_one_line();
    assert!(
        line.contains("job.toml: sequence.length: expected an integer, got \"sixteen\""),
        "{line}"
    );
    // A bad variable is blamed, not the good file.
    std::fs::write(&config, "[sequence]\nlength = 8\n").unwrap();
    let mut cmd = personaflow();
    backfill_cmd(&mut cmd, &input, &out, &["--config", c])
        .env("PERSONAFLOW__SEQUENCE__LENGTH", "sixteen");
    let line = run_cmd(&mut cmd).fails_with_one_line();
    assert!(
        line.contains("PERSONAFLOW__SEQUENCE__LENGTH: sequence.length"),
        "{line}"
    );
    assert!(!line.contains("job.toml"), "{line}");
    // A misspelt variable is reported, not ignored.
    let mut cmd = personaflow();
    backfill_cmd(&mut cmd, &input, &out, &[]).env("PERSONAFLOW_SEQUENCE__LENGTH", "8");
    let line = run_cmd(&mut cmd).fails_with_one_line();
    assert!(
        line.contains("did you mean PERSONAFLOW__SEQUENCE__LENGTH"),
        "{line}"
    );
    assert!(!out.exists());
}

/// Spawns a backfill of `input` into `out` and waits until it is past its start (its staging
/// directory holds a table): a signal then interrupts the dataflow, not the set-up.
fn spawn_running_backfill(input: &Path, out: &Path) -> std::process::Child {
    let mut cmd = personaflow();
    let mut child = quick(&mut cmd)
        .arg("backfill")
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(out)
        .args(["--workers", WORKERS])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let parent = out.parent().unwrap();
    let name = out.file_name().unwrap().to_string_lossy().into_owned();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let started = staging_dirs(parent, &name)
            .iter()
            .any(|s| parent.join(s).join("features").exists());
        if started {
            return child;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the backfill ended ({status}) before it was interrupted");
        }
        assert!(
            Instant::now() < deadline,
            "the backfill never started writing"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A CSV of `n` events over many windows, large enough to take a while.
fn long_input(path: &Path, n: usize) {
    let rows: Vec<String> = (0..n)
        .map(|i| format!("{},u{},page_view", T0 + i as i64 * 200, i % 500))
        .collect();
    write_events(path, "ts,user_id,action", &rows);
}

#[test]
fn sigint_and_sigterm_stop_a_backfill_and_remove_its_staging_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.csv");
    long_input(&input, 400_000);
    for (signal, code) in [("INT", 130), ("TERM", 143)] {
        let out = tmp.path().join("out");
        let child = spawn_running_backfill(&input, &out);
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(code), "SIG{signal}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line: {stderr}");
        assert!(
            lines[0].starts_with("personaflow: error: interrupted by SIG"),
            "{stderr}"
        );
        assert_eq!(
            names(tmp.path()),
            ["in.csv"],
            "SIG{signal} left something behind"
        );
    }
    // SIGKILL leaves the staging directory; the next run into the output removes it.
    let out = tmp.path().join("out");
    let mut child = spawn_running_backfill(&input, &out);
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(staging_dirs(tmp.path(), "out").len(), 1);
    let small = tmp.path().join("small.csv");
    write_events(&small, "ts,user_id,action", &good_rows(10));
    let run = backfill_many(&[&small], &out, &[]).ok();
    assert!(
        run.stderr.contains("personaflow: warning: removed")
            && run.stderr.contains(".out.staging-"),
        "{}",
        run.stderr
    );
    assert_eq!(names(tmp.path()), ["in.csv", "out", "small.csv"]);
}

#[test]
fn a_run_without_valid_events_still_writes_every_table_with_its_schema() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = tmp.path().join("sim");
    simulate(&sim, 20, 0.02, 3, &[]).ok();
    let input = tmp.path().join("bad.csv");
    write_events(
        &input,
        "ts,user_id,action",
        &["oops,u1,x".to_string(), "1,,x".into()],
    );
    let out = tmp.path().join("out");
    backfill_many(&[&input], &out, &[]).ok();
    let json = run_json(&out);
    assert_eq!(json_u64(&json, "/events"), 0);
    for table in PARTITIONED_TABLES.iter().chain(&[
        "personas",
        "persona_assignments",
        "drift",
        "scaling",
        "rejects",
    ]) {
        let t = read_dir_table(&out.join(table));
        let expected = if *table == "rejects" { 2 } else { 0 };
        assert_eq!(t.len(), expected, "{table}");
        assert!(!t.columns.is_empty(), "{table} has its schema");
    }
    // The README's readers open it as it is.
    if let Some(python) = std::env::var_os("PERSONAFLOW_PYTHON") {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/check_outputs.py");
        let status = Command::new(python).arg(script).arg(&out).status().unwrap();
        assert!(
            status.success(),
            "the interop check fails on an empty output"
        );
    }
    // So does evaluate.
    let run = run(&[
        "evaluate",
        "--scenario",
        sim.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ])
    .ok();
    assert!(run.stdout.contains("all"), "{}", run.stdout);
}

#[test]
fn files_split_by_user_over_the_same_hours_are_merged_by_event_time() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a.csv"), tmp.path().join("b.csv"));
    let rows = |users: &str| -> Vec<String> {
        (0..600)
            .map(|i| format!("{},{users}{},page_view", T0 + i * 30_000, i % 7))
            .collect()
    };
    write_events(&a, "ts,user_id,action", &rows("a"));
    write_events(&b, "ts,user_id,action", &rows("b"));
    let out = tmp.path().join("out");
    backfill_many(&[&a, &b], &out, &[]).ok();
    let json = run_json(&out);
    assert_eq!(json_u64(&json, "/late_events"), 0, "no event of b is late");
    assert_eq!(json_u64(&json, "/events"), 1_200);
    // Rows really out of order within a file are still late.
    let mut late_rows = rows("a");
    late_rows.insert(300, format!("{},a0,page_view", T0));
    write_events(&a, "ts,user_id,action", &late_rows);
    backfill_many(&[&a, &b], &out, &["--overwrite"]).ok();
    let json = run_json(&out);
    assert_eq!(json_u64(&json, "/late_events"), 1);
    let late = rejects(&out);
    assert_eq!((late[0].1, late[0].3.starts_with("late:")), (301, true));
}

#[test]
fn one_row_dated_hours_ahead_makes_no_other_row_late() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.csv");
    let mut rows = good_rows(200);
    rows.insert(40, format!("{},u9,page_view", T0 + 5 * 3_600_000));
    write_events(&input, "ts,user_id,action", &rows);
    let out = tmp.path().join("out");
    backfill_many(&[&input], &out, &[]).ok();
    let json = run_json(&out);
    assert_eq!(json_u64(&json, "/rejects"), 0, "{:?}", rejects(&out));
    assert_eq!(json_u64(&json, "/events"), 201);
    // The outlier is kept, in its own window.
    let features = output_table(&out, "features");
    let outlier: Vec<i64> = features
        .rows
        .iter()
        .filter(|r| r[features.col("user_id")].str() == "u9")
        .map(|r| r[features.col("window_end")].int())
        .collect();
    assert_eq!(outlier, [T0 + 5 * 3_600_000 + DEFAULT_WINDOW_MS]);
}

#[test]
fn rejects_by_reason_is_keyed_by_a_fixed_code_not_the_message() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.csv");
    let mut rows = good_rows(10);
    rows.extend((0..1_000).map(|i| format!("bad-time-{i},u1,x")));
    write_events(&input, "ts,user_id,action", &rows);
    let out = tmp.path().join("out");
    backfill_many(&[&input], &out, &[]).ok();
    let json = run_json(&out);
    assert_eq!(
        json["rejects_by_reason"],
        serde_json::json!({"invalid_ts": 1000})
    );
    let t = output_table(&out, "rejects");
    assert!(t.column("code").iter().all(|c| c.str() == "invalid_ts"));
}

#[test]
fn compressed_and_utf16_files_are_named_not_dumped_and_gzip_is_read() {
    use std::io::Write as _;
    let tmp = tempfile::tempdir().unwrap();
    let text = {
        let mut t = String::from("ts,user_id,action\n");
        for r in good_rows(20) {
            t.push_str(&r);
            t.push('\n');
        }
        t
    };
    let gz_bytes = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(text.as_bytes()).unwrap();
        e.finish().unwrap()
    };
    let out = tmp.path().join("out");
    // gzip data under a .csv name: refused by name, with no raw bytes in the message.
    let misnamed = tmp.path().join("events.csv");
    std::fs::write(&misnamed, &gz_bytes).unwrap();
    let line = backfill_many(&[&misnamed], &out, &[]).fails_with_one_line();
    assert!(
        line.contains("events.csv") && line.contains("gzip"),
        "{line}"
    );
    assert!(line.chars().all(|c| !c.is_control()), "{line:?}");
    // UTF-16 with a byte order mark.
    let utf16: Vec<u8> = [0xFF, 0xFE]
        .into_iter()
        .chain(text.encode_utf16().flat_map(u16::to_le_bytes))
        .collect();
    std::fs::write(&misnamed, &utf16).unwrap();
    let line = backfill_many(&[&misnamed], &out, &[]).fails_with_one_line();
    assert!(line.contains("UTF-16"), "{line}");
    assert!(line.chars().all(|c| !c.is_control()), "{line:?}");
    // A .csv.gz is read.
    let gz = tmp.path().join("events.csv.gz");
    std::fs::write(&gz, &gz_bytes).unwrap();
    std::fs::remove_file(&misnamed).unwrap();
    backfill_many(&[&gz], &out, &[]).ok();
    assert_eq!(json_u64(&run_json(&out), "/events"), 20);
}

#[test]
fn a_duplicate_column_or_key_is_refused_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("dup.csv");
    let rows: Vec<String> = good_rows(5).iter().map(|r| format!("{r},u7")).collect();
    write_events(&input, "ts,user_id,action,user_id", &rows);
    let line = backfill_many(&[&input], &tmp.path().join("out"), &[]).fails_with_one_line();
    assert!(
        line.contains("dup.csv") && line.contains("`user_id` appears 2 times (columns 2, 4)"),
        "{line}"
    );
    // A duplicate of a column personaflow does not read is refused too; empty names (trailing
    // delimiters) are not names.
    let rows: Vec<String> = good_rows(5).iter().map(|r| format!("{r},a,b,,")).collect();
    write_events(&input, "ts,user_id,action,note,note,,", &rows);
    let line = backfill_many(&[&input], &tmp.path().join("out"), &[]).fails_with_one_line();
    assert!(
        line.contains("`note` appears 2 times (columns 4, 5)"),
        "{line}"
    );
    let rows: Vec<String> = good_rows(5).iter().map(|r| format!("{r},a,,")).collect();
    write_events(&input, "ts,user_id,action,note,,", &rows);
    backfill_many(&[&input], &tmp.path().join("out"), &[]).ok();
    // In NDJSON (and Kafka records) an object with a key twice is rejected, with the key.
    let ndjson = tmp.path().join("dup.ndjson");
    let text = format!(
        "{{\"ts\": {T0}, \"user_id\": \"u\", \"action\": \"x\"}}\n\
         {{\"ts\": {T0}, \"user_id\": \"u\", \"action\": \"x\", \"user_id\": \"v\"}}\n"
    );
    std::fs::write(&ndjson, text).unwrap();
    let out = tmp.path().join("out-ndjson");
    backfill_many(&[&ndjson], &out, &[]).ok();
    let r = rejects(&out);
    assert_eq!(r.len(), 1);
    assert!(
        r[0].1 == 2 && r[0].3.contains("`user_id` appears twice"),
        "{r:?}"
    );
}

#[test]
fn ndjson_reject_rows_are_line_numbers_counting_blank_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("e.ndjson");
    let good = |i: i64| {
        format!(
            "{{\"ts\": {}, \"user_id\": \"u\", \"action\": \"x\"}}",
            T0 + i
        )
    };
    let text = format!("{}\n\n\n{}\nnot json\n\n{}\n", good(1), good(2), good(3));
    std::fs::write(&input, text).unwrap();
    let out = tmp.path().join("out");
    backfill_many(&[&input], &out, &[]).ok();
    let r = rejects(&out);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].1, 5, "`sed -n 5p` shows the bad line");
}

#[test]
fn segment_profiles_do_not_depend_on_the_number_of_workers() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = tmp.path().join("sim");
    simulate(&sim, 120, 0.05, 8, &[]).ok();
    let mut tables = Vec::new();
    for workers in ["1", "2", "5"] {
        let out = tmp.path().join(format!("w{workers}"));
        let mut cmd = personaflow();
        quick(&mut cmd)
            .arg("backfill")
            .arg("--input")
            .arg(sim.join("events"))
            .arg("--output")
            .arg(&out)
            .args(["--workers", workers]);
        run_cmd(&mut cmd).ok();
        tables.push(output_table(&out, "segment_profiles").sorted_rows());
    }
    assert!(tables[0].len() > 10);
    assert!(tables[0] == tables[1], "1 and 2 workers differ");
    assert!(tables[0] == tables[2], "1 and 5 workers differ");
}

#[test]
fn evaluate_refuses_the_output_of_another_scenario() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    simulate(&a, 60, 0.05, 1, &[]).ok();
    simulate(&b, 60, 0.05, 2, &[]).ok();
    let out = tmp.path().join("out");
    let mut cmd = personaflow();
    quick(&mut cmd);
    backfill_cmd(&mut cmd, &a.join("events"), &out, &[]);
    run_cmd(&mut cmd).ok();
    let evaluate = |scenario: &PathBuf| {
        run(&[
            "evaluate",
            "--scenario",
            scenario.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ])
    };
    evaluate(&a).ok();
    let line = evaluate(&b).fails_with_one_line();
    assert!(
        line.contains("does not look like a backfill of this scenario"),
        "{line}"
    );
}
