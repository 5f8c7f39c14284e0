//! Tests of the sources: round trips, every format, every validation rule, real data.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::StringDictionaryBuilder;
use arrow_array::types::Int32Type;
use arrow_array::{
    ArrayRef, Date32Array, Float32Array, Int16Array, Int32Array, Int64Array, RecordBatch,
    StringArray, TimestampMicrosecondArray, UInt8Array,
};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use personaflow_operators::Event;

use super::*;

/// Chunk size used by most tests: small, so chunk boundaries are crossed.
const TEST_CHUNK_ROWS: usize = 3;

fn write_file(dir: &Path, name: &str, content: &[u8]) -> InputFile {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    let format = Format::from_path(&path).unwrap_or(Format::Whitespace);
    InputFile::new(path, format).unwrap()
}

fn read_all_chunked(
    file: &InputFile,
    mapping: &IngestMapping,
    chunk_rows: usize,
) -> (Vec<Event>, Vec<Reject>) {
    check_input(file, mapping).unwrap();
    let mut reader = open_reader(file, mapping, chunk_rows).unwrap();
    let mut chunk = Chunk::default();
    loop {
        let before = chunk.records();
        let more = reader.next_chunk(&mut chunk).unwrap();
        let got = chunk.records() - before;
        assert!(
            got <= chunk_rows,
            "a chunk of {got} rows exceeds {chunk_rows}"
        );
        if !more {
            assert_eq!(got, 0, "the final call appends nothing");
            break;
        }
    }
    assert!(!reader.next_chunk(&mut chunk).unwrap(), "stays exhausted");
    assert_eq!(reader.rows_read(), chunk.records() as u64);
    assert_eq!(chunk.rows.len(), chunk.events.len());
    (chunk.events, chunk.rejects)
}

fn read_all(file: &InputFile, mapping: &IngestMapping) -> (Vec<Event>, Vec<Reject>) {
    read_all_chunked(file, mapping, TEST_CHUNK_ROWS)
}

fn mapping(toml: &str) -> IngestMapping {
    IngestMapping::from_toml_str(toml, Path::new("test-mapping.toml")).unwrap()
}

/// Asserts that exactly the given (row, field) pairs were rejected, with reasons containing
/// the given words.
fn assert_rejects(rejects: &[Reject], file: &InputFile, expected: &[(u64, Option<&str>, &str)]) {
    let got: Vec<(u64, Option<&str>)> = rejects
        .iter()
        .map(|r| (r.row, r.field.as_deref()))
        .collect();
    let want: Vec<(u64, Option<&str>)> = expected.iter().map(|(r, f, _)| (*r, *f)).collect();
    assert_eq!(got, want, "rejects: {rejects:#?}");
    for (reject, (_, _, words)) in rejects.iter().zip(expected) {
        assert!(
            reject.reason.contains(words),
            "reason {:?} lacks {words:?}",
            reject.reason
        );
        assert_eq!(reject.file, file.path.display().to_string());
    }
}

/// Events using every canonical field, deterministic.
fn sample_events(n: usize) -> Vec<Event> {
    const DEVICES: [&str; 3] = ["mobile", "tv", "desktop"];
    (0..n)
        .map(|i| {
            let mut e = Event::new(
                1_700_000_000_000 + i as i64 * 1_234,
                format!("user-{}", i % 17),
                ["view", "click", "play"][i % 3],
            );
            e.session_id = (i % 4 != 0).then(|| format!("s{}", i / 10));
            e.authenticated = i % 2 == 0;
            e.segment = (i % 5 == 0).then(|| "gold".to_owned());
            e.category = (i % 3 != 1).then(|| "video".to_owned());
            e.bytes_in = (i % 6 != 0).then_some(i as u64 * 1_000);
            e.bytes_out = Some(i as u64);
            e.latency_ms = (i % 7 != 0).then_some(i as f64 * 0.25);
            e.status = Some(if i % 11 == 0 { 503 } else { 200 });
            e.device = Some(DEVICES[i % 3].to_owned());
            e.os = (i % 2 == 1).then(|| "linux".to_owned());
            e.country = Some("NL".to_owned());
            e
        })
        .collect()
}

fn write_parquet(path: &Path, batches: &[RecordBatch], row_group_rows: usize) {
    let file = std::fs::File::create(path).unwrap();
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(row_group_rows))
        .build();
    let mut writer = ArrowWriter::try_new(file, batches[0].schema(), Some(props)).unwrap();
    for batch in batches {
        writer.write(batch).unwrap();
    }
    writer.close().unwrap();
}

fn shared_data() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "SKIPPED: real data folder {} is missing (see shared/data/README.md)",
            dir.display()
        );
        None
    }
}

fn shipped_mapping(name: &str) -> IngestMapping {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../data/mappings")
        .join(name);
    IngestMapping::from_toml_file(&path).unwrap()
}

// ---------------------------------------------------------------- formats

#[test]
fn canonical_events_round_trip_through_parquet() {
    let dir = tempfile::tempdir().unwrap();
    let events = sample_events(1_000);
    let path = dir.path().join("events.parquet");
    let batches: Vec<RecordBatch> = events
        .chunks(250)
        .map(crate::schema::events_to_batch)
        .collect();
    write_parquet(&path, &batches, 100);
    let file = InputFile::new(&path, Format::Parquet).unwrap();
    let (read, rejects) = read_all_chunked(&file, &IngestMapping::identity(), 64);
    assert!(rejects.is_empty(), "{rejects:?}");
    assert_eq!(read, events);
}

#[test]
fn parquet_physical_types_are_coerced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.parquet");
    let mut action = StringDictionaryBuilder::<Int32Type>::new();
    for a in ["login", "play", "play"] {
        action.append_value(a);
    }
    let columns: Vec<(&str, ArrayRef)> = vec![
        (
            "when",
            Arc::new(
                TimestampMicrosecondArray::from(vec![1_000_999, 2_000_000, 3_000_000])
                    .with_timezone("Europe/Amsterdam"),
            ),
        ),
        ("uid", Arc::new(Int32Array::from(vec![7, 8, 9]))),
        ("action", Arc::new(action.finish())),
        (
            "bytes_in",
            Arc::new(Int16Array::from(vec![Some(5), None, Some(-1)])),
        ),
        ("status", Arc::new(UInt8Array::from(vec![200, 201, 202]))),
        (
            "latency_ms",
            Arc::new(Float32Array::from(vec![1.5, 2.0, 2.5])),
        ),
        ("unused", Arc::new(StringArray::from(vec!["a", "b", "c"]))),
    ];
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    write_parquet(&path, &[batch], 2);
    let file = InputFile::new(&path, Format::Parquet).unwrap();
    let m = mapping("[columns]\nts = \"when\"\nuser_id = \"uid\"");
    let (events, rejects) = read_all(&file, &m);
    assert_rejects(&rejects, &file, &[(3, Some("bytes_in"), "negative")]);
    assert_eq!(events.len(), 2);
    assert_eq!(
        events[0].ts_ms, 1_000,
        "µs rounded down to ms, time zone ignored"
    );
    assert_eq!(events[0].user_id, "7");
    assert_eq!(events[0].action, "login");
    assert_eq!(events[0].bytes_in, Some(5));
    assert_eq!(events[0].status, Some(200));
    assert_eq!(events[0].latency_ms, Some(1.5));
    assert_eq!(events[1].bytes_in, None);
    assert_eq!(events[1].action, "play");
}

#[test]
fn parquet_numeric_string_and_date_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let ids = || Arc::new(StringArray::from(vec!["u", "u"])) as ArrayRef;
    let acts = || Arc::new(StringArray::from(vec!["a", "a"])) as ArrayRef;
    let cases: Vec<(&str, ArrayRef, &str, [i64; 2])> = vec![
        (
            "seconds.parquet",
            Arc::new(Int64Array::from(vec![1_379_288_667, 0])),
            "[timestamp]\nunit = \"s\"",
            [1_379_288_667_000, 0],
        ),
        (
            "strings.parquet",
            Arc::new(StringArray::from(vec![
                "2013-09-15T23:44:27.706+00:00",
                "1970-01-01T01:00:00+01:00",
            ])),
            "",
            [1_379_288_667_706, 0],
        ),
        (
            "dates.parquet",
            Arc::new(Date32Array::from(vec![1, 0])),
            "",
            [86_400_000, 0],
        ),
    ];
    for (name, ts, toml, expected) in cases {
        let path = dir.path().join(name);
        let batch =
            RecordBatch::try_from_iter([("ts", ts), ("user_id", ids()), ("action", acts())])
                .unwrap();
        write_parquet(&path, &[batch], 10);
        let file = InputFile::new(&path, Format::Parquet).unwrap();
        let (events, rejects) = read_all(&file, &mapping(toml));
        assert!(rejects.is_empty(), "{name}: {rejects:?}");
        let got: Vec<i64> = events.iter().map(|e| e.ts_ms).collect();
        assert_eq!(got, expected, "{name}");
    }
}

#[test]
fn csv_reader_reads_quoted_fields_and_optional_columns() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(
        dir.path(),
        "e.csv",
        b"\xEF\xBB\xBFts,user_id,action,category,bytes_in,latency_ms,status,authenticated,extra\n\
          1000,alice,view,\"video, hd\",10,1.5,200,true,x\n\
          2000,\"bob \"\"b\"\"\",click,,,,,,y\n",
    );
    let (events, rejects) = read_all(&file, &IngestMapping::identity());
    assert!(rejects.is_empty(), "{rejects:?}");
    let mut first = Event::new(1_000, "alice", "view");
    first.category = Some("video, hd".to_owned());
    first.bytes_in = Some(10);
    first.latency_ms = Some(1.5);
    first.status = Some(200);
    first.authenticated = true;
    assert_eq!(events, [first, Event::new(2_000, "bob \"b\"", "click")]);
}

#[test]
fn tsv_reader_reads_tabs() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(
        dir.path(),
        "e.tsv",
        b"user_id\tts\taction\tcountry\nu1\t5\tlogin\tDE\nu2\t6\tlogout\t\n",
    );
    let (events, rejects) = read_all(&file, &IngestMapping::identity());
    assert!(rejects.is_empty());
    let mut first = Event::new(5, "u1", "login");
    first.country = Some("DE".to_owned());
    assert_eq!(events, [first, Event::new(6, "u2", "logout")]);
}

#[test]
fn headerless_text_uses_the_mapping_names_delimiter_and_comments() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), "e.csv", b"# exported\nu1|9|buy\n\nu2|10|sell\n");
    let m = mapping(
        "[text]\ndelimiter = \"|\"\ncomment = \"#\"\ncolumn_names = [\"who\", \"ts\", \"what\"]\n\
         [columns]\nuser_id = \"who\"\naction = \"what\"",
    );
    let (events, rejects) = read_all(&file, &m);
    assert!(rejects.is_empty(), "{rejects:?}");
    assert_eq!(
        events,
        [Event::new(9, "u1", "buy"), Event::new(10, "u2", "sell")]
    );
}

#[test]
fn whitespace_reader_splits_on_runs_of_blanks() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(
        dir.path(),
        "w.txt",
        b"  who  ts   what\r\n a  1  x\r\n\r\n\tb\t 2 y\r\n",
    );
    let m = mapping("format = \"whitespace\"\n[columns]\nuser_id = \"who\"\naction = \"what\"");
    let (events, rejects) = read_all(&file, &m);
    assert!(rejects.is_empty(), "{rejects:?}");
    assert_eq!(events, [Event::new(1, "a", "x"), Event::new(2, "b", "y")]);
}

#[test]
fn ndjson_reader_reads_objects_nested_keys_and_json_types() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(
        dir.path(),
        "e.ndjson",
        br#"{"ts": "2024-01-01T00:00:00Z", "user": {"id": 42}, "action": "view", "bytes_in": 7, "authenticated": true, "latency_ms": 0.5}

{"ts": 1704067200001, "user": {"id": "u2"}, "action": "click", "status": null, "session_id": "s"}
"#,
    );
    let m = mapping("[columns]\nuser_id = \"user.id\"");
    let (events, rejects) = read_all(&file, &m);
    assert!(rejects.is_empty(), "{rejects:?}");
    let mut first = Event::new(1_704_067_200_000, "42", "view");
    first.bytes_in = Some(7);
    first.authenticated = true;
    first.latency_ms = Some(0.5);
    let mut second = Event::new(1_704_067_200_001, "u2", "click");
    second.session_id = Some("s".to_owned());
    assert_eq!(events, [first, second]);
}

#[test]
fn zeek_headers_name_columns_and_declare_null_markers() {
    let dir = tempfile::tempdir().unwrap();
    let log = "#separator \\x2c\n#unset_field,NONE\n#fields,ts,host,p,dur\n#types,time,addr,enum,interval\n\
               10.5,h1,tcp,NONE\n#close,x\n#fields,p,ts,host,dur\n#types,enum,time,addr,interval\n\
               udp,11,h2,0.25\n";
    let file = write_file(dir.path(), "c.log", log.as_bytes());
    assert_eq!(file.format, Format::Zeek);
    let m = mapping(
        "[columns]\nuser_id = \"host\"\naction = \"p\"\nlatency_ms = \"dur\"\n[scale]\nlatency_ms = 1000.0",
    );
    let (events, rejects) = read_all(&file, &m);
    assert!(rejects.is_empty(), "{rejects:?}");
    let first = Event::new(10_500, "h1", "tcp");
    let mut second = Event::new(11_000, "h2", "udp");
    second.latency_ms = Some(250.0);
    assert_eq!(
        events,
        [first, second],
        "seconds by default, re-headered mid-file"
    );
}

#[test]
fn timestamp_units_and_formats() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &str, i64); 9] = [
        ("1379262000", "unit = \"s\"", 1_379_262_000_000),
        ("1379262000.123456", "unit = \"s\"", 1_379_262_000_123),
        ("1379262000123", "unit = \"ms\"", 1_379_262_000_123),
        ("1379262000123", "", 1_379_262_000_123),
        ("1379262000123456", "unit = \"us\"", 1_379_262_000_123),
        ("1379262000123456789", "unit = \"ns\"", 1_379_262_000_123),
        ("2013-09-15T16:20:00.123Z", "", 1_379_262_000_123),
        ("19970101", "format = \"%Y%m%d\"", 852_076_800_000),
        (
            "15/09/2013 16:20",
            "format = \"%d/%m/%Y %H:%M\"",
            1_379_262_000_000,
        ),
    ];
    for (i, (value, spec, expected)) in cases.iter().enumerate() {
        let file = write_file(
            dir.path(),
            &format!("t{i}.csv"),
            format!("ts,user_id,action\n\"{value}\",u,a\n").as_bytes(),
        );
        let (events, rejects) = read_all(&file, &mapping(&format!("[timestamp]\n{spec}")));
        assert!(rejects.is_empty(), "{value} with {spec:?}: {rejects:?}");
        assert_eq!(events[0].ts_ms, *expected, "{value} with {spec:?}");
    }
}

#[test]
fn constants_and_scales_apply_to_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(
        dir.path(),
        "e.csv",
        b"ts,user_id,dollars,secs\n1,u,11.77,0.5\n",
    );
    let m = mapping(
        "[columns]\nbytes_out = \"dollars\"\nlatency_ms = \"secs\"\n\
         [constants]\naction = \"purchase\"\nauthenticated = true\nstatus = 200\n\
         [scale]\nbytes_out = 100.0\nlatency_ms = 1000.0",
    );
    let (events, rejects) = read_all(&file, &m);
    assert!(rejects.is_empty(), "{rejects:?}");
    let mut e = Event::new(1, "u", "purchase");
    e.bytes_out = Some(1_177);
    e.latency_ms = Some(500.0);
    e.authenticated = true;
    e.status = Some(200);
    assert_eq!(events, [e]);
}

// ---------------------------------------------------------------- validation: bad rows

/// Reads a CSV (identity mapping) and checks its rejects; the rows not listed must pass.
fn check_csv_rejects(
    header: &str,
    rows: &[&str],
    expected: &[(u64, Option<&str>, &str)],
) -> Vec<Event> {
    let dir = tempfile::tempdir().unwrap();
    let mut text = format!("{header}\n");
    for row in rows {
        text.push_str(row);
        text.push('\n');
    }
    let file = write_file(dir.path(), "rows.csv", text.as_bytes());
    let (events, rejects) = read_all(&file, &IngestMapping::identity());
    assert_rejects(&rejects, &file, expected);
    assert_eq!(events.len() + rejects.len(), rows.len());
    events
}

#[test]
fn rejects_null_or_empty_user_id() {
    let events = check_csv_rejects(
        "ts,user_id,action",
        &["1,u1,a", "2,,a", "3,\"  \",a", "4,u4,a"],
        &[
            (2, Some("user_id"), "missing"),
            (3, Some("user_id"), "blank"),
        ],
    );
    assert_eq!(events[1].user_id, "u4");
}

#[test]
fn rejects_null_or_empty_action() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(
        dir.path(),
        "a.ndjson",
        br#"{"ts": 1, "user_id": "u", "action": "ok"}
{"ts": 2, "user_id": "u", "action": null}
{"ts": 3, "user_id": "u", "action": ""}
{"ts": 4, "user_id": "u"}
"#,
    );
    let (events, rejects) = read_all(&file, &IngestMapping::identity());
    assert_rejects(
        &rejects,
        &file,
        &[
            (2, Some("action"), "missing"),
            (3, Some("action"), "empty"),
            (4, Some("action"), "missing"),
        ],
    );
    assert_eq!(events, [Event::new(1, "u", "ok")]);
}

#[test]
fn rejects_missing_timestamp() {
    check_csv_rejects(
        "ts,user_id,action",
        &["1,u,a", ",u,a"],
        &[(2, Some("ts"), "missing")],
    );
}

#[test]
fn rejects_unparsable_timestamp() {
    check_csv_rejects(
        "ts,user_id,action",
        &[
            "2024-01-01T00:00:00Z,u,a",
            "yesterday,u,a",
            "2024-13-45T00:00:00Z,u,a",
            "12:30,u,a",
        ],
        &[
            (2, Some("ts"), "unparsable"),
            (3, Some("ts"), "unparsable"),
            (4, Some("ts"), "unparsable"),
        ],
    );
}

#[test]
fn rejects_timestamp_before_1970() {
    check_csv_rejects(
        "ts,user_id,action",
        &["0,u,a", "-1,u,a", "1969-12-31T23:59:59Z,u,a"],
        &[
            (2, Some("ts"), "before 1970"),
            (3, Some("ts"), "before 1970"),
        ],
    );
}

#[test]
fn rejects_timestamp_too_far_in_the_future() {
    let events = check_csv_rejects(
        "ts,user_id,action",
        &[
            "4102444800000,u,a",
            "4102444800001,u,a",
            "1700000000000000,u,a",
        ],
        &[(2, Some("ts"), "future"), (3, Some("ts"), "future")],
    );
    assert_eq!(events[0].ts_ms, MAX_EVENT_TS_MS);
}

#[test]
fn rejects_negative_bytes() {
    check_csv_rejects(
        "ts,user_id,action,bytes_in,bytes_out",
        &["1,u,a,0,5", "2,u,a,-5,5", "3,u,a,5,-0.5"],
        &[
            (2, Some("bytes_in"), "negative"),
            (3, Some("bytes_out"), "negative"),
        ],
    );
}

#[test]
fn rejects_negative_or_nan_latency() {
    check_csv_rejects(
        "ts,user_id,action,latency_ms",
        &[
            "1,u,a,0",
            "2,u,a,-1.5",
            "3,u,a,NaN",
            "4,u,a,inf",
            "5,u,a,2.5",
        ],
        &[
            (2, Some("latency_ms"), "negative"),
            (3, Some("latency_ms"), "NaN"),
            (4, Some("latency_ms"), "infinite"),
        ],
    );
}

#[test]
fn rejects_non_numeric_status() {
    let events = check_csv_rejects(
        "ts,user_id,action,status",
        &["1,u,a,404", "2,u,a,OK", "3,u,a,20x", "4,u,a,99999999999"],
        &[
            (2, Some("status"), "not an integer"),
            (3, Some("status"), "not an integer"),
            (4, Some("status"), "out of range"),
        ],
    );
    assert_eq!(events[0].status, Some(404));
}

#[test]
fn rejects_non_boolean_authenticated() {
    let events = check_csv_rejects(
        "ts,user_id,action,authenticated",
        &["1,u,a,T", "2,u,a,maybe", "3,u,a,0", "4,u,a,2"],
        &[
            (2, Some("authenticated"), "not a boolean"),
            (4, Some("authenticated"), "not a boolean"),
        ],
    );
    assert!(events[0].authenticated);
    assert!(!events[1].authenticated);
}

#[test]
fn rejects_unparsable_numbers() {
    check_csv_rejects(
        "ts,user_id,action,bytes_in,bytes_out,latency_ms",
        &[
            "1,u,a,1,2,3",
            "2,u,a,ten,2,3",
            "3,u,a,1,2.5,3",
            "4,u,a,1,2,fast",
        ],
        &[
            (2, Some("bytes_in"), "not a number"),
            (3, Some("bytes_out"), "not an integer"),
            (4, Some("latency_ms"), "not a number"),
        ],
    );
}

#[test]
fn rejects_malformed_records() {
    check_csv_rejects(
        "ts,user_id,action",
        &["1,u,a", "2,u", "3,u,a,extra", "4,u,a"],
        &[
            (2, None, "expected 3 fields, found 2"),
            (3, None, "found 4"),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(
        dir.path(),
        "bad.jsonl",
        b"{\"ts\": 1, \"user_id\": \"u\", \"action\": \"a\"}\n{\"ts\": 2,\n[1, 2]\n",
    );
    let (events, rejects) = read_all(&file, &IngestMapping::identity());
    assert_rejects(
        &rejects,
        &file,
        &[(2, None, "invalid JSON"), (3, None, "not a JSON object")],
    );
    assert_eq!(events.len(), 1);
}

#[test]
fn rejects_invalid_utf8_text() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(
        dir.path(),
        "b.csv",
        b"ts,user_id,action\n1,\xff\xfe,a\n2,u,a\n",
    );
    let (events, rejects) = read_all(&file, &IngestMapping::identity());
    assert_rejects(&rejects, &file, &[(1, Some("user_id"), "UTF-8")]);
    assert_eq!(events, [Event::new(2, "u", "a")]);
}

#[test]
fn null_markers_make_values_null() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(
        dir.path(),
        "n.csv",
        b"ts,user_id,action,bytes_in\n1,u,a,-\n2,-,a,3\n",
    );
    let m = mapping("null_markers = [\"-\", \"\"]");
    let (events, rejects) = read_all(&file, &m);
    assert_rejects(&rejects, &file, &[(2, Some("user_id"), "missing")]);
    assert_eq!(events, [Event::new(1, "u", "a")]);
}

// ---------------------------------------------------------------- validation: whole files

fn assert_missing_column(err: Error, file: &InputFile, column: &str) {
    match &err {
        Error::MissingColumn {
            path, column: c, ..
        } => {
            assert_eq!(path, &file.path);
            assert_eq!(c, column);
        }
        other => panic!("expected MissingColumn, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains(&file.path.display().to_string()),
        "{message}"
    );
    assert!(message.contains(column), "{message}");
}

#[test]
fn missing_required_column_is_an_error_naming_file_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let identity = IngestMapping::identity();

    let csv = write_file(dir.path(), "no_action.csv", b"ts,user_id\n1,u\n");
    assert_missing_column(check_input(&csv, &identity).unwrap_err(), &csv, "action");
    assert!(
        open_reader(&csv, &identity, 1).is_err(),
        "open_reader checks too"
    );

    let json = write_file(
        dir.path(),
        "no_user.ndjson",
        b"\n{\"ts\": 1, \"action\": \"a\"}\n",
    );
    assert_missing_column(check_input(&json, &identity).unwrap_err(), &json, "user_id");

    let zeek = write_file(dir.path(), "z.log", b"#fields\tts\tuid\n1\tx\n");
    assert_missing_column(check_input(&zeek, &identity).unwrap_err(), &zeek, "user_id");

    let path = dir.path().join("no_ts.parquet");
    let batch = RecordBatch::try_from_iter([
        (
            "user_id",
            Arc::new(StringArray::from(vec!["u"])) as ArrayRef,
        ),
        ("action", Arc::new(StringArray::from(vec!["a"])) as ArrayRef),
    ])
    .unwrap();
    write_parquet(&path, &[batch], 10);
    let parquet = InputFile::new(&path, Format::Parquet).unwrap();
    assert_missing_column(
        check_input(&parquet, &identity).unwrap_err(),
        &parquet,
        "ts",
    );

    // A column the mapping renames explicitly must exist, even an optional one; the message
    // names the source column too.
    let renamed = write_file(dir.path(), "r.csv", b"ts,user_id,action\n1,u,a\n");
    let m = mapping("[columns]\ncategory = \"kind\"");
    let err = check_input(&renamed, &m).unwrap_err();
    assert!(err.to_string().contains("`kind`"), "{err}");
    assert_missing_column(err, &renamed, "category");

    // A constant satisfies a required column.
    let m = mapping("[constants]\naction = \"a\"");
    check_input(&csv, &m).unwrap();
}

#[test]
fn truncated_parquet_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.parquet");
    write_parquet(
        &path,
        &[crate::schema::events_to_batch(&sample_events(500))],
        100,
    );
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let file = InputFile::new(&path, Format::Parquet).unwrap();
    let err = check_input(&file, &IngestMapping::identity()).unwrap_err();
    assert!(
        matches!(&err, Error::Parquet { path: p, .. } if p == &path),
        "{err:?}"
    );
    assert!(err.to_string().contains("events.parquet"));
    assert!(open_reader(&file, &IngestMapping::identity(), 10).is_err());
}

#[test]
fn garbage_parquet_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in [
        (
            "garbage.parquet",
            b"this is not parquet at all, just text".to_vec(),
        ),
        ("empty.parquet", Vec::new()),
        (
            "fake_magic.parquet",
            b"PAR1\x00\x00\x00\x00garbagePAR1".to_vec(),
        ),
    ] {
        let file = write_file(dir.path(), name, &content);
        let err = check_input(&file, &IngestMapping::identity()).unwrap_err();
        assert!(
            matches!(&err, Error::Parquet { path, .. } | Error::BadInput { path, .. } if path == &file.path),
            "{name}: {err:?}"
        );
        assert!(err.to_string().contains(name), "{err}");
    }
}

#[test]
fn corrupt_parquet_pages_fail_naming_the_file_or_read_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pages.parquet");
    write_parquet(
        &path,
        &[crate::schema::events_to_batch(&sample_events(2_000))],
        500,
    );
    let mut bytes = std::fs::read(&path).unwrap();
    // Overwrite the middle of the data pages (the footer stays intact).
    let mid = bytes.len() / 3;
    for b in &mut bytes[mid..mid + 64] {
        *b = 0xA5;
    }
    std::fs::write(&path, &bytes).unwrap();
    let file = InputFile::new(&path, Format::Parquet).unwrap();
    check_input(&file, &IngestMapping::identity()).unwrap();
    let mut reader = open_reader(&file, &IngestMapping::identity(), 256).unwrap();
    let mut chunk = Chunk::default();
    let mut failed = false;
    loop {
        match reader.next_chunk(&mut chunk) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                assert!(
                    matches!(&e, Error::Parquet { path: p, .. } if p == &path),
                    "{e:?}"
                );
                failed = true;
                break;
            }
        }
    }
    assert!(failed || chunk.records() == 2_000);
}

#[test]
fn json_array_files_are_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), "a.json", b"[\n {\"ts\": 1}\n]\n");
    let err = check_input(&file, &IngestMapping::identity()).unwrap_err();
    assert!(
        matches!(&err, Error::BadInput { path, .. } if path == &file.path),
        "{err:?}"
    );
}

#[test]
fn empty_text_files_have_no_events() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["e.csv", "e.ndjson", "e.log"] {
        let file = write_file(dir.path(), name, b"");
        let (events, rejects) = read_all(&file, &IngestMapping::identity());
        assert!(events.is_empty() && rejects.is_empty(), "{name}");
    }
}

// ---------------------------------------------------------------- real data

#[test]
fn zeek_conn_log_through_the_shipped_mapping() {
    let Some(data) = shared_data() else { return };
    let files = resolve_inputs(
        &[data.join("zeek/conn.log").display().to_string()],
        &shipped_mapping("zeek_conn.toml"),
    )
    .unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].format, Format::Zeek);
    let (events, rejects) = read_all_chunked(&files[0], &shipped_mapping("zeek_conn.toml"), 100);
    assert_eq!(events.len() + rejects.len(), 360);
    assert!(rejects.is_empty(), "{rejects:?}");
    let users: BTreeSet<&str> = events.iter().map(|e| e.user_id.as_str()).collect();
    assert_eq!(users.len(), 22);
    let count = |action: &str| events.iter().filter(|e| e.action == action).count();
    assert_eq!((count("tcp"), count("udp"), count("icmp")), (115, 225, 20));
    assert_eq!(
        events
            .iter()
            .filter(|e| e.category.as_deref() == Some("http"))
            .count(),
        67
    );

    let first = &events[0];
    assert_eq!(first.ts_ms, 1_379_288_667_706);
    assert_eq!(first.user_id, "192.168.33.10");
    assert_eq!(first.session_id.as_deref(), Some("CoyZrY2g74UvMMgp4a"));
    assert_eq!(
        (first.action.as_str(), first.category.as_deref()),
        ("tcp", Some("http"))
    );
    assert_eq!((first.bytes_out, first.bytes_in), (Some(601), Some(38_393)));
    assert!((first.latency_ms.unwrap() - 447.46).abs() < 1e-9);

    let last = events.last().unwrap();
    assert_eq!(last.user_id, "109.67.16.18");
    assert_eq!(last.action, "icmp");
    assert_eq!(
        (last.category.as_deref(), last.bytes_in, last.latency_ms),
        (None, None, None)
    );
}

#[test]
fn cdnow_through_the_shipped_mapping() {
    let Some(data) = shared_data() else { return };
    let m = shipped_mapping("cdnow.toml");
    let files = resolve_inputs(&[data.join("cdnow").display().to_string()], &m).unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].format, Format::Whitespace);
    let (events, rejects) = read_all_chunked(&files[0], &m, DEFAULT_CHUNK_ROWS);
    assert!(rejects.is_empty(), "{:?}", &rejects[..rejects.len().min(5)]);
    assert_eq!(events.len(), 69_659);
    let users: BTreeSet<&str> = events.iter().map(|e| e.user_id.as_str()).collect();
    assert_eq!(users.len(), 23_570);
    assert!(events
        .iter()
        .all(|e| e.action == "purchase" && e.category.as_deref() == Some("music")));

    let day = |y, m, d| {
        chrono::NaiveDate::from_ymd_opt(y, m, d)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp_millis()
    };
    let mut first = Event::new(day(1997, 1, 1), "00001", "purchase");
    first.category = Some("music".to_owned());
    first.bytes_in = Some(1);
    first.bytes_out = Some(1_177);
    assert_eq!(events[0], first);
    let last = events.last().unwrap();
    assert_eq!(
        (last.user_id.as_str(), last.ts_ms),
        ("23570", day(1997, 3, 26))
    );
    assert_eq!((last.bytes_in, last.bytes_out), (Some(2), Some(4_296)));
    let min = events.iter().map(|e| e.ts_ms).min().unwrap();
    let max = events.iter().map(|e| e.ts_ms).max().unwrap();
    assert_eq!((min, max), (day(1997, 1, 1), day(1998, 6, 30)));
}
