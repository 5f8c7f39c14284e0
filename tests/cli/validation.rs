//! One test per input validation rule, through the CLI: whole-file problems fail the job
//! before any output exists; bad rows go to `rejects` (file, 1-based row, field, reason)
//! while the good rows are processed.

use crate::support::*;
use arrow_array::{ArrayRef, Int64Array, StringArray, TimestampMillisecondArray};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Event time of the first generated row: 2026-01-05T00:00:00Z.
const T0: i64 = SIM_START_MS;
/// Header of the generated CSV files.
const CSV_HEADER: &str = "ts,user_id,action,bytes_in,bytes_out,latency_ms,status,authenticated";

/// A good CSV record: row `i` (1-based) of user `u{i % 3}`, 10 s after the previous one.
fn good_csv_row(i: usize) -> String {
    format!(
        "{},u{},page_view,100,20,12.5,200,true",
        T0 + i as i64 * 10_000,
        i % 3
    )
}

/// A CSV file of `rows` records, good except for the given 1-based rows, whose whole line
/// is replaced.
fn csv_with(rows: usize, bad: &[(usize, String)]) -> Vec<u8> {
    let mut out = format!("{CSV_HEADER}\n");
    for i in 1..=rows {
        match bad.iter().find(|(r, _)| *r == i) {
            Some((_, line)) => out.push_str(line),
            None => out.push_str(&good_csv_row(i)),
        }
        out.push('\n');
    }
    out.into_bytes()
}

/// A CSV record of row `i` with one field replaced (by canonical column name).
fn csv_row_with(i: usize, column: &str, value: &str) -> String {
    let names: Vec<&str> = CSV_HEADER.split(',').collect();
    let mut cells: Vec<String> = good_csv_row(i).split(',').map(str::to_string).collect();
    let idx = names
        .iter()
        .position(|n| *n == column)
        .expect("a CSV column");
    cells[idx] = value.to_string();
    cells.join(",")
}

/// An expected reject: 1-based row, field, and a text the reason must contain.
type Expected<'a> = (u64, Option<&'a str>, &'a str);

/// Runs a backfill of `input` that must succeed with exactly the `expected` rejects from
/// `input` (and the other rows as events), and checks `run.json` and the features.
#[track_caller]
fn assert_rejects(tmp: &Path, input: &Path, rows: u64, expected: &[Expected<'_>]) -> PathBuf {
    let out = tmp.join(format!(
        "out-{}",
        input.file_name().unwrap().to_string_lossy()
    ));
    backfill(input, &out, &[]).ok();
    let got = rejects(&out);
    let file = input.display().to_string();
    let shown = || format!("{got:#?}");
    assert_eq!(got.len(), expected.len(), "rejects: {}", shown());
    for ((f, row, field, reason), (e_row, e_field, e_reason)) in got.iter().zip(expected) {
        assert_eq!(f, &file, "reject file");
        assert_eq!(row, e_row, "reject row: {}", shown());
        assert_eq!(
            field.as_deref(),
            *e_field,
            "field of row {row}: {}",
            shown()
        );
        assert!(
            reason.contains(e_reason),
            "reason of row {row}: {reason:?} should contain {e_reason:?}"
        );
    }
    let json = run_json(&out);
    let n = expected.len() as u64;
    assert_eq!(json_u64(&json, "/rows_read"), rows);
    assert_eq!(json_u64(&json, "/rejects"), n);
    assert_eq!(json_u64(&json, "/rows_written/rejects"), n);
    assert_eq!(json_u64(&json, "/events"), rows - n);
    let by_reason: u64 = json["rejects_by_reason"]
        .as_object()
        .expect("rejects_by_reason")
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(by_reason, n);
    // The good rows went through the whole dataflow.
    let features = output_table(&out, "features");
    let counted: i64 = features.column("events").iter().map(|v| v.int()).sum();
    assert_eq!(counted as u64, rows - n, "features count the good rows");
    assert_eq!(output_table(&out, "profiles").len(), features.len());
    out
}

/// Writes `content` to `tmp/name`.
fn write(tmp: &Path, name: &str, content: &[u8]) -> PathBuf {
    let path = tmp.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

/// A Parquet events file of `n` good rows (`ts`, `user_id`, `action`, `bytes_in`), in row
/// groups of `row_group_rows`.
fn good_parquet(path: &Path, n: usize, row_group_rows: usize) {
    let ts: Vec<i64> = (0..n as i64).map(|i| T0 + i * 1_000).collect();
    let users: Vec<String> = (0..n).map(|i| format!("user-{:04}", i % 7)).collect();
    let actions: Vec<String> = (0..n)
        .map(|i| format!("action-with-a-long-name-{i}"))
        .collect();
    write_parquet(
        path,
        vec![
            (
                "ts",
                Arc::new(TimestampMillisecondArray::from(ts).with_timezone("UTC")) as ArrayRef,
            ),
            ("user_id", Arc::new(StringArray::from(users)) as ArrayRef),
            ("action", Arc::new(StringArray::from(actions)) as ArrayRef),
            (
                "bytes_in",
                Arc::new(Int64Array::from_iter_values(0..n as i64)) as ArrayRef,
            ),
        ],
        row_group_rows,
    );
}

/// Asserts that a backfill into `tmp/out` failed cleanly, naming `file`, and left neither
/// the output directory nor a staging directory behind. Returns the error line.
#[track_caller]
fn assert_failed_without_output(run: &Run, tmp: &Path, file: &Path) -> String {
    let line = run.fails_with_one_line();
    assert!(
        line.contains(&file.display().to_string()),
        "the error does not name {}: {line}",
        file.display()
    );
    assert!(!tmp.join("out").exists(), "an output directory was created");
    assert_eq!(staging_dirs(tmp, "out"), Vec::<String>::new());
    line
}

#[test]
fn missing_required_column_fails_before_any_output() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let good = write(dir, "a-good.csv", &csv_with(5, &[]));
    // CSV without `action`, after a good file: nothing at all is written.
    let csv = write(
        dir,
        "b-no-action.csv",
        format!("ts,user_id,bytes_in\n{T0},u1,5\n").as_bytes(),
    );
    let mut cmd = personaflow();
    cmd.arg("backfill")
        .arg("--input")
        .arg(&good)
        .arg(&csv)
        .arg("--output")
        .arg(dir.join("out"))
        .args(["--workers", WORKERS]);
    let line = assert_failed_without_output(&run_cmd(&mut cmd), dir, &csv);
    assert!(line.contains("`action`"), "{line}");

    // The same rule for NDJSON (no `user_id`) and Parquet (no `ts`).
    let ndjson = write(
        dir,
        "no-user.ndjson",
        format!("{{\"ts\": {T0}, \"action\": \"x\"}}\n").as_bytes(),
    );
    let line =
        assert_failed_without_output(&backfill(&ndjson, &dir.join("out"), &[]), dir, &ndjson);
    assert!(line.contains("`user_id`"), "{line}");
    let parquet = dir.join("no-ts.parquet");
    write_parquet(
        &parquet,
        vec![
            (
                "user_id",
                Arc::new(StringArray::from(vec!["u"])) as ArrayRef,
            ),
            ("action", Arc::new(StringArray::from(vec!["x"])) as ArrayRef),
        ],
        1024,
    );
    let line =
        assert_failed_without_output(&backfill(&parquet, &dir.join("out"), &[]), dir, &parquet);
    assert!(line.contains("`ts`"), "{line}");
}

#[test]
fn null_or_empty_user_id_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let csv = write(
        dir,
        "users.csv",
        &csv_with(
            8,
            &[
                (2, csv_row_with(2, "user_id", "")),
                (5, csv_row_with(5, "user_id", "   ")),
            ],
        ),
    );
    assert_rejects(
        dir,
        &csv,
        8,
        &[
            (2, Some("user_id"), "user_id is missing or empty"),
            (5, Some("user_id"), "user_id is blank"),
        ],
    );

    // Parquet nulls and NDJSON nulls or absent keys are rejected the same way.
    let parquet = dir.join("users.parquet");
    write_parquet(
        &parquet,
        vec![
            (
                "ts",
                Arc::new(
                    TimestampMillisecondArray::from(vec![T0, T0 + 1, T0 + 2, T0 + 3])
                        .with_timezone("UTC"),
                ) as ArrayRef,
            ),
            (
                "user_id",
                Arc::new(StringArray::from(vec![
                    Some("a"),
                    None,
                    Some("b"),
                    Some(""),
                ])) as ArrayRef,
            ),
            (
                "action",
                Arc::new(StringArray::from(vec!["x", "x", "x", "x"])) as ArrayRef,
            ),
        ],
        1024,
    );
    assert_rejects(
        dir,
        &parquet,
        4,
        &[
            (2, Some("user_id"), "user_id is missing or empty"),
            (4, Some("user_id"), "user_id is missing or empty"),
        ],
    );
    let ndjson = write(
        dir,
        "users.ndjson",
        format!(
            "{{\"ts\": {T0}, \"user_id\": \"a\", \"action\": \"x\"}}\n\
             {{\"ts\": {T0}, \"user_id\": null, \"action\": \"x\"}}\n\
             {{\"ts\": {T0}, \"action\": \"x\"}}\n\
             {{\"ts\": {T0}, \"user_id\": 42, \"action\": \"x\"}}\n"
        )
        .as_bytes(),
    );
    let out = assert_rejects(
        dir,
        &ndjson,
        4,
        &[
            (2, Some("user_id"), "user_id is missing or empty"),
            (3, Some("user_id"), "user_id is missing or empty"),
        ],
    );
    let users: BTreeSet<String> = output_table(&out, "features")
        .column("user_id")
        .iter()
        .map(|v| v.str().to_string())
        .collect();
    assert_eq!(users, BTreeSet::from(["a".to_string(), "42".to_string()]));
}

#[test]
fn missing_or_empty_action_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let csv = write(
        tmp.path(),
        "actions.csv",
        &csv_with(6, &[(6, csv_row_with(6, "action", ""))]),
    );
    assert_rejects(
        tmp.path(),
        &csv,
        6,
        &[(6, Some("action"), "action is missing or empty")],
    );
}

#[test]
fn missing_or_unparsable_timestamp_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let csv = write(
        tmp.path(),
        "times.csv",
        &csv_with(
            9,
            &[
                (1, csv_row_with(1, "ts", "")),
                (4, csv_row_with(4, "ts", "yesterday")),
                (7, csv_row_with(7, "ts", "2026-13-45T00:00:00Z")),
            ],
        ),
    );
    assert_rejects(
        tmp.path(),
        &csv,
        9,
        &[
            (1, Some("ts"), "timestamp is missing"),
            (4, Some("ts"), "unparsable timestamp `yesterday`"),
            (7, Some("ts"), "unparsable timestamp"),
        ],
    );
}

#[test]
fn timestamp_before_1970_or_after_2100_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let csv = write(
        tmp.path(),
        "range.csv",
        &csv_with(
            6,
            &[
                (2, csv_row_with(2, "ts", "-5000")),
                (3, csv_row_with(3, "ts", "1969-12-31T23:00:00Z")),
                // Microseconds read as milliseconds: year 57,000-something.
                (5, csv_row_with(5, "ts", &(T0 * 1_000).to_string())),
            ],
        ),
    );
    assert_rejects(
        tmp.path(),
        &csv,
        6,
        &[
            (2, Some("ts"), "before 1970"),
            (3, Some("ts"), "before 1970"),
            (5, Some("ts"), "too far in the future"),
        ],
    );
}

#[test]
fn negative_fractional_or_non_numeric_bytes_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let mut both_bad = csv_row_with(6, "bytes_out", "-7");
    both_bad = both_bad.replacen(",200,", ",oops,", 1);
    let csv = write(
        tmp.path(),
        "bytes.csv",
        &csv_with(
            10,
            &[
                (2, csv_row_with(2, "bytes_in", "-5")),
                (3, csv_row_with(3, "bytes_in", "1.5")),
                (4, csv_row_with(4, "bytes_out", "lots")),
                // Two bad fields: the first in canonical order is reported.
                (6, both_bad),
            ],
        ),
    );
    assert_rejects(
        tmp.path(),
        &csv,
        10,
        &[
            (2, Some("bytes_in"), "negative byte count -5"),
            (3, Some("bytes_in"), "not an integer"),
            (4, Some("bytes_out"), "not a number: `lots`"),
            (6, Some("bytes_out"), "negative byte count -7"),
        ],
    );
}

#[test]
fn negative_nan_infinite_or_non_numeric_latency_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let csv = write(
        tmp.path(),
        "latency.csv",
        &csv_with(
            9,
            &[
                (1, csv_row_with(1, "latency_ms", "-0.5")),
                (3, csv_row_with(3, "latency_ms", "NaN")),
                (5, csv_row_with(5, "latency_ms", "inf")),
                (9, csv_row_with(9, "latency_ms", "slow")),
            ],
        ),
    );
    assert_rejects(
        tmp.path(),
        &csv,
        9,
        &[
            (1, Some("latency_ms"), "negative latency"),
            (3, Some("latency_ms"), "latency is NaN"),
            (5, Some("latency_ms"), "latency is infinite"),
            (9, Some("latency_ms"), "not a number: `slow`"),
        ],
    );
}

#[test]
fn non_integer_status_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let csv = write(
        tmp.path(),
        "status.csv",
        &csv_with(
            7,
            &[
                (2, csv_row_with(2, "status", "OK")),
                (4, csv_row_with(4, "status", "200.5")),
                (6, csv_row_with(6, "status", "99999999999")),
            ],
        ),
    );
    assert_rejects(
        tmp.path(),
        &csv,
        7,
        &[
            (2, Some("status"), "status is not an integer: `OK`"),
            (4, Some("status"), "status is not an integer"),
            (6, Some("status"), "out of range"),
        ],
    );
}

#[test]
fn non_boolean_authenticated_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let csv = write(
        tmp.path(),
        "auth.csv",
        &csv_with(
            6,
            &[
                (3, csv_row_with(3, "authenticated", "maybe")),
                // Accepted spellings: yes/no/1/0/t/f, any case; empty is false.
                (4, csv_row_with(4, "authenticated", "YES")),
                (5, csv_row_with(5, "authenticated", "")),
            ],
        ),
    );
    let out = assert_rejects(
        tmp.path(),
        &csv,
        6,
        &[(3, Some("authenticated"), "not a boolean: `maybe`")],
    );
    let features = output_table(&out, "features");
    let auth: Vec<bool> = features
        .column("authenticated")
        .iter()
        .map(|v| v.bool())
        .collect();
    assert!(auth.contains(&true), "YES and true are accepted as true");
}

#[test]
fn malformed_records_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let csv = write(
        dir,
        "fields.csv",
        &csv_with(
            5,
            &[
                (2, format!("{},extra", good_csv_row(2))),
                (4, format!("{T0},u1,short")),
            ],
        ),
    );
    assert_rejects(
        dir,
        &csv,
        5,
        &[
            (2, None, "expected 8 fields, found 9"),
            (4, None, "expected 8 fields, found 3"),
        ],
    );
    let ndjson = write(
        dir,
        "lines.ndjson",
        format!(
            "{{\"ts\": {T0}, \"user_id\": \"a\", \"action\": \"x\"}}\n\
             {{\"ts\": {T0}, \"user_id\": \"a\", \n\
             \n\
             [1, 2, 3]\n\
             {{\"ts\": {T0}, \"user_id\": \"b\", \"action\": \"x\"}}\n\
             {{\"ts\": {T0}, \"user_id\": {{\"nested\": 1}}, \"action\": \"x\"}}\n"
        )
        .as_bytes(),
    );
    // Rows of NDJSON are line numbers (blank lines count): the array is on line 4.
    assert_rejects(
        dir,
        &ndjson,
        5,
        &[
            (2, None, "invalid JSON"),
            (4, None, "not a JSON object"),
            (6, Some("user_id"), "found a JSON object"),
        ],
    );
}

#[test]
fn invalid_utf8_text_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let mut content = csv_with(4, &[]);
    let line3 = good_csv_row(3);
    let at = String::from_utf8_lossy(&content).find(&line3).unwrap();
    let user_at = at + line3.find(",u").unwrap() + 1;
    content[user_at] = 0xFF;
    let csv = write(tmp.path(), "utf8.csv", &content);
    assert_rejects(
        tmp.path(),
        &csv,
        4,
        &[(3, Some("user_id"), "not valid UTF-8")],
    );
}

#[test]
fn truncated_parquet_fails_without_output_or_staging() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let whole = dir.join("whole.parquet");
    good_parquet(&whole, 500, 100);
    let bytes = std::fs::read(&whole).unwrap();
    let half = write(dir, "half.parquet", &bytes[..bytes.len() / 2]);
    std::fs::remove_file(&whole).unwrap();
    let good = write(dir, "0-good.csv", &csv_with(3, &[]));
    let mut cmd = personaflow();
    cmd.arg("backfill")
        .arg("--input")
        .arg(&good)
        .arg(&half)
        .arg("--output")
        .arg(dir.join("out"))
        .args(["--workers", WORKERS]);
    let line = assert_failed_without_output(&run_cmd(&mut cmd), dir, &half);
    assert!(line.to_lowercase().contains("parquet"), "{line}");
}

#[test]
fn garbage_parquet_fails_without_output_or_staging() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let garbage = write(
        dir,
        "garbage.parquet",
        b"this is a CSV file someone named .parquet\n1,2,3\n",
    );
    let line =
        assert_failed_without_output(&backfill(&garbage, &dir.join("out"), &[]), dir, &garbage);
    assert!(line.to_lowercase().contains("parquet"), "{line}");
    let empty = write(dir, "empty.parquet", b"");
    assert_failed_without_output(&backfill(&empty, &dir.join("out"), &[]), dir, &empty);
}

/// A Parquet file whose footer is intact but whose second row group is zeroed: the problem
/// shows only after the first row group was read and fed to the dataflow.
#[test]
fn parquet_corrupt_after_its_first_row_group_fails_without_output_or_staging() {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let path = dir.join("corrupt.parquet");
    good_parquet(&path, 4_000, 2_000);
    let reader = SerializedFileReader::new(std::fs::File::open(&path).unwrap()).unwrap();
    let metadata = reader.metadata();
    assert_eq!(metadata.num_row_groups(), 2);
    let mut bytes = std::fs::read(&path).unwrap();
    for column in metadata.row_group(1).columns() {
        let (start, len) = column.byte_range();
        bytes[start as usize..(start + len) as usize].fill(0);
    }
    drop(reader);
    std::fs::write(&path, &bytes).unwrap();
    let run = backfill(&path, &dir.join("out"), &[]);
    assert_failed_without_output(&run, dir, &path);
}

#[test]
fn events_later_than_max_out_of_order_are_rejected_as_late() {
    let tmp = tempfile::tempdir().unwrap();
    let line = |user: &str, offset_s: i64| {
        format!(
            "{{\"ts\": {}, \"user_id\": \"{user}\", \"action\": \"x\"}}\n",
            T0 + offset_s * 1_000
        )
    };
    let mut content = String::new();
    content += &line("a", 60); // line 1
    content += &line("b", 120); // 2
    content += "\n"; // 3: a blank line is no record, but a line
    content += &line("a", 180); // 4
    content += "{\"ts\": \n"; // 5: invalid JSON
    content += &line("b", 600); // 6: newest so far
    content += &line("c", 420); // 7: 3 minutes behind: accepted
    content += &line("c", 600 - 3_600); // 8: an hour behind: late
    content += &line("a", 660); // 9
    content += &line("d", 660 - 3_600); // 10: the last row, an hour older: late
    let ndjson = write(tmp.path(), "late.ndjson", content.as_bytes());
    let out = assert_rejects(
        tmp.path(),
        &ndjson,
        9,
        &[
            (5, None, "invalid JSON"),
            (8, Some("ts"), "late"),
            (10, Some("ts"), "late"),
        ],
    );
    for (_, row, _, reason) in rejects(&out) {
        if row != 5 {
            assert!(reason.starts_with("late"), "{reason}");
            assert!(reason.contains("max_out_of_order"), "{reason}");
        }
    }
    let json = run_json(&out);
    assert_eq!(json_u64(&json, "/late_events"), 2);
    let mut by_reason = BTreeMap::new();
    by_reason.insert("malformed_record".to_string(), 1);
    by_reason.insert("late".to_string(), 2);
    assert_eq!(json["rejects_by_reason"], serde_json::json!(by_reason));
    let users: BTreeSet<String> = output_table(&out, "features")
        .column("user_id")
        .iter()
        .map(|v| v.str().to_string())
        .collect();
    assert_eq!(
        users,
        BTreeSet::from(["a".into(), "b".into(), "c".into()]),
        "d's only event was late"
    );

    // A larger bound accepts them.
    let config = write(
        tmp.path(),
        "lenient.toml",
        b"[ingest]\nmax_out_of_order = \"2h\"\n",
    );
    let lenient = tmp.path().join("lenient");
    backfill(&ndjson, &lenient, &["--config", config.to_str().unwrap()]).ok();
    let json = run_json(&lenient);
    assert_eq!(json_u64(&json, "/late_events"), 0);
    assert_eq!(json_u64(&json, "/events"), 8);
}

#[test]
fn existing_output_is_refused_without_overwrite_and_replaced_with_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let input = write(dir, "in.csv", &csv_with(6, &[]));
    let out = dir.join("out");
    backfill(&input, &out, &[]).ok();
    std::fs::write(out.join("stale.txt"), b"from before").unwrap();
    let before = snapshot(&out);

    let line = backfill(&input, &out, &[]).fails_with_one_line();
    assert!(line.contains(&out.display().to_string()), "{line}");
    assert!(line.contains("--overwrite"), "{line}");
    assert!(before == snapshot(&out), "the existing output was touched");
    assert_eq!(staging_dirs(dir, "out"), Vec::<String>::new());

    // A personaflow output is replaced, whole.
    backfill(&input, &out, &["--overwrite"]).ok();
    assert!(!out.join("stale.txt").exists());
    assert_eq!(json_u64(&run_json(&out), "/events"), 6);
    let mut left: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["in.csv", "out"],
        "staging, old outputs or the lock left behind"
    );

    // An existing empty directory is fine without --overwrite.
    let empty = dir.join("empty");
    std::fs::create_dir(&empty).unwrap();
    backfill(&input, &empty, &[]).ok();
    assert_eq!(json_u64(&run_json(&empty), "/events"), 6);
}
