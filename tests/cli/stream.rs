//! The continuous job (`personaflow run`) against librdkafka's mock cluster: a real Kafka
//! protocol peer on 127.0.0.1, started in this test process, that the `personaflow` child
//! processes connect to. Equivalence with the backfill, dead letters and late events,
//! graceful stop and restart, and restarts after SIGKILL while a producer keeps writing.

use crate::broker::{Tansu, OUTPUT_TOPICS};
use crate::support::*;
use personaflow_dataflow::config::DEFAULT_OUTPUT_TOPICS;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, DefaultProducerContext, Producer};
use rdkafka::TopicPartitionList;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A mock cluster with an `events` topic of `partitions` partitions and the output topics.
pub fn cluster(partitions: i32) -> (MockCluster<'static, DefaultProducerContext>, String) {
    let c = MockCluster::new(1).expect("mock cluster starts");
    c.create_topic("events", partitions, 1).unwrap();
    for t in OUTPUT_TOPICS {
        c.create_topic(t, 1, 1).unwrap();
    }
    let brokers = c.bootstrap_servers();
    (c, brokers)
}

/// `personaflow produce` of `events` to the `events` topic.
pub fn produce_cmd(brokers: &str, events: &Path) -> Command {
    let mut cmd = personaflow();
    cmd.args([
        "produce",
        "--brokers",
        brokers,
        "--topic",
        "events",
        "--input",
    ])
    .arg(events);
    cmd
}

/// `personaflow run` on the `events` topic into `out`, with `extra` flags.
pub fn run_job_cmd(brokers: &str, out: &Path, extra: &[&str]) -> Command {
    run_group_cmd(brokers, "pf", out, extra)
}

/// `personaflow run` on the `events` topic as consumer group `group` into `out`, with `extra`
/// flags.
pub fn run_group_cmd(brokers: &str, group: &str, out: &Path, extra: &[&str]) -> Command {
    let mut cmd = personaflow();
    cmd.args([
        "run",
        "--brokers",
        brokers,
        "--topic",
        "events",
        "--group",
        group,
    ])
    .arg("--output")
    .arg(out)
    .args(["--workers", WORKERS, "--metrics-addr", "127.0.0.1:0"])
    .args(extra);
    cmd
}

/// Asserts that every table of `stream` holds exactly the rows of `backfill`'s, and that no
/// row is written twice.
pub fn assert_same_tables(stream: &Path, backfill: &Path) {
    assert_same(stream, backfill, &PARTITIONED_TABLES);
    assert_same(stream, backfill, &DERIVED_TABLES);
}

// DERIVED_TABLES (support): their operators remember the whole stream, so a restarted job
// matches the backfill on them only by resuming their checkpointed state.

/// Configuration of the restart tests: a small rolling window (W = 8) so that a restart
/// rewinds part of the topic only, persona and drift settings that find personas and
/// (mostly false) drift alarms among their few users, and rounds of 64 messages, which fill
/// (the workers' catch-up path).
const RESTART_CONFIG: &str = "[segments]\nwindow = 8\n[personas]\nmin_users = 3\n\
                              [drift]\nbaseline = 10\nrecent = 5\nmin_points = 3\n\
                              z = 0.1\nmin_effect = 0.01\nalpha = 0.5\npermutations = 99\n\
                              [stream]\npoll_batch = 64\n";

/// Asserts that the backfill `back` has persona and drift rows: a restart test that compares
/// the stream with it on them is not vacuous.
fn assert_has_derived_rows(back: &Path) {
    for table in ["persona_assignments", "drift"] {
        assert!(output_table(back, table).len() > 0, "{table} has rows");
    }
}

/// Asserts that `tables` of `stream` hold exactly the rows of `backfill`'s, and that no row is
/// written twice.
fn assert_same(stream: &Path, backfill: &Path, tables: &[&str]) {
    // The backfill writes every table, with no rows if need be; the continuous job writes
    // files of the windows that have rows.
    for &table in tables {
        let sorted = |root: &Path| {
            if !root.join(table).exists() || parquet_files(&root.join(table)).is_empty() {
                Vec::new()
            } else {
                output_table(root, table).sorted_rows()
            }
        };
        assert!(backfill.join(table).exists(), "the backfill wrote {table}");
        let s = sorted(stream);
        let b = sorted(backfill);
        let mut dedup = s.clone();
        dedup.dedup();
        assert_eq!(dedup.len(), s.len(), "{table}: duplicate rows");
        if s != b {
            let missing = b.iter().filter(|r| !s.contains(r)).count();
            let extra = s.iter().filter(|r| !b.contains(r)).count();
            let example = b
                .iter()
                .find(|r| !s.contains(r))
                .or(s.iter().find(|r| !b.contains(r)));
            panic!(
                "{table}: {} rows in the stream, {} in the backfill; {missing} missing, {extra} \
                 extra, e.g. {example:?}",
                s.len(),
                b.len()
            );
        }
    }
}

/// A message read back: its key, payload and headers.
struct Read {
    key: String,
    payload: Vec<u8>,
    headers: BTreeMap<String, String>,
}

/// Messages on `topic` (all partitions), read from the beginning until `expected` arrived or
/// the time ran out.
fn consume_all(
    brokers: &str,
    topic: &str,
    expected: usize,
) -> Vec<(Vec<u8>, BTreeMap<String, String>)> {
    if expected == 0 {
        return Vec::new();
    }
    let mut n = 0;
    consume_until(brokers, topic, |_| {
        n += 1;
        n >= expected
    })
    .into_iter()
    .map(|m| (m.payload, m.headers))
    .collect()
}

/// The messages of an output topic published a message per key and window (the default):
/// each a JSON array of rows, read until they hold `rows` rows or the time ran out.
fn consume_row_arrays(
    brokers: &str,
    topic: &str,
    rows: usize,
) -> Vec<(String, Vec<serde_json::Value>)> {
    let arrays = |m: &Read| {
        let v: Vec<serde_json::Value> = serde_json::from_slice(&m.payload)
            .unwrap_or_else(|e| panic!("{topic}: not an array of rows ({e}): {:?}", m.payload));
        (m.key.clone(), v)
    };
    let mut n = 0;
    consume_until(brokers, topic, |m| {
        n += arrays(m).1.len();
        n >= rows
    })
    .iter()
    .map(arrays)
    .collect()
}

/// Messages on `topic` (all partitions), read from the beginning until `enough` says so of the
/// last one read, or the time ran out.
fn consume_until(brokers: &str, topic: &str, mut enough: impl FnMut(&Read) -> bool) -> Vec<Read> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "test-reader")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in md.topics()[0].partitions() {
        tpl.add_partition_offset(topic, p.id(), rdkafka::Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut done = false;
    while !done && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            (
                                h.key.to_string(),
                                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            let read = Read {
                key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                payload: m.payload().unwrap_or_default().to_vec(),
                headers,
            };
            done = enough(&read);
            out.push(read);
        }
    }
    out
}

fn small_sim(dir: &Path, users: u32, days: f64) -> PathBuf {
    let sim = dir.join("sim");
    simulate(&sim, users, days, 11, &[]).ok();
    sim.join("events")
}

#[test]
fn the_continuous_job_writes_exactly_what_the_backfill_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let events = small_sim(tmp.path(), 60, 0.1);
    let (mock, brokers) = cluster(3);
    run_cmd(&mut produce_cmd(&brokers, &events)).ok();
    let out = tmp.path().join("stream");
    let run = run_cmd(&mut run_job_cmd(&brokers, &out, &["--until-end"])).ok();
    assert!(
        run.stderr.contains("run: 3 partitions, starting fresh"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("stopped (end)"), "{}", run.stderr);
    let back = tmp.path().join("backfill");
    backfill(&events, &back, &[]).ok();
    assert_same_tables(&out, &back);

    // Personas, drift and scaling, on so few users only with smaller minimums and windows;
    // and rounds of 64 messages, which fill: the workers catch up, each keeping its previous
    // round's windows in flight while it takes the next.
    let config = tmp.path().join("small.toml");
    std::fs::write(
        &config,
        "[personas]\nmin_users = 3\n[drift]\nbaseline = 10\nrecent = 5\nmin_points = 3\n\
         [stream]\npoll_batch = 64\noutput_topic_prefix = \"key.\"\noutput_message = \"key\"\n",
    )
    .unwrap();
    for t in DEFAULT_OUTPUT_TOPICS {
        mock.create_topic(&format!("key.{t}"), 1, 1).unwrap();
    }
    let c = ["--config", config.to_str().unwrap()];
    let out2 = tmp.path().join("stream-derived");
    // A group of its own: the first run's group has committed its offsets at the end.
    let mut job = run_group_cmd(&brokers, "pf-derived", &out2, &["--until-end"]);
    run_cmd(job.args(c)).ok();
    let back2 = tmp.path().join("backfill-derived");
    backfill(&events, &back2, &c).ok();
    assert!(output_table(&back2, "persona_assignments").len() > 0);
    assert_same_tables(&out2, &back2);

    // Window files: per table and worker, each of one or more windows, under idempotent
    // names.
    for f in parquet_files(&out.join("profiles")) {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            personaflow_io::window_file::window_range_of_file(&name).is_some()
                && name.ends_with(".parquet"),
            "{name}"
        );
    }
    // The checkpoint covers every window.
    let ckpt: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("_checkpoint.json")).unwrap()).unwrap();
    let last = output_table(&back, "features")
        .column("window_end")
        .into_iter()
        .map(|v| v.int())
        .max()
        .unwrap();
    let through = ckpt["emitted_through_end"].as_str().unwrap();
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(through)
            .unwrap()
            .timestamp_millis(),
        last
    );

    // The resonance topic carries every resonance row, as JSON keyed by user: by default a
    // message per row, a JSON object.
    let rows = output_table(&out, "resonance").len();
    let msgs = consume_until(&brokers, "personaflow.resonance", {
        let mut n = 0;
        move |_| {
            n += 1;
            n >= rows
        }
    });
    assert_eq!(msgs.len(), rows);
    for m in &msgs {
        let row: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        assert!(
            row["user_id"] == m.key.as_str() && row["probability"].is_number(),
            "{row}"
        );
    }
    // And the policies topic every policy row.
    let rows = output_table(&out, "policies").len();
    let msgs = consume_all(&brokers, "personaflow.policies", rows);
    assert_eq!(msgs.len(), rows);
    let first: serde_json::Value = serde_json::from_slice(&msgs[0].0).unwrap();
    assert!(
        first["user_id"].is_string()
            && first["allocated_bps"].is_number()
            && first["dscp"].is_number(),
        "{first}"
    );
    // With `output_message = "key"` (the derived run) a message per user and window: the
    // user's rows of the window (one per segment) as a JSON array, keyed by the user.
    let ms = |r: &serde_json::Value| {
        chrono::DateTime::parse_from_rfc3339(r["window_end"].as_str().unwrap())
            .unwrap()
            .timestamp_millis()
    };
    let table = output_table(&out2, "resonance");
    let (u, w) = (table.col("user_id"), table.col("window_end"));
    let mut expected: BTreeMap<(String, i64), usize> = BTreeMap::new();
    for row in &table.rows {
        *expected
            .entry((row[u].str().to_string(), row[w].int()))
            .or_default() += 1;
    }
    let mut got: BTreeMap<(String, i64), usize> = BTreeMap::new();
    for (key, rows) in consume_row_arrays(&brokers, "key.resonance", table.len()) {
        let window = ms(&rows[0]);
        assert!(
            rows.iter().all(|r| r["user_id"] == key.as_str()
                && ms(r) == window
                && r["probability"].is_number()),
            "{key}: {rows:?}"
        );
        let again = got.insert((key.clone(), window), rows.len());
        assert!(again.is_none(), "{key}: two messages for window {window}");
    }
    assert_eq!(
        got, expected,
        "a message per user and window, with each of its rows"
    );
    assert!(
        expected.values().any(|n| *n > 1),
        "users resonate with several segments"
    );
    // Policies: one per user and window, arrays of one.
    let rows = output_table(&out2, "policies").len();
    let msgs = consume_row_arrays(&brokers, "key.policies", rows);
    assert_eq!(msgs.len(), rows);
    let (key, first) = (&msgs[0].0, &msgs[0].1[0]);
    assert!(
        first["user_id"] == key.as_str() && first["allocated_bps"].is_number(),
        "{first}"
    );

    // With `output_message = "arrow"` a window's rows in Arrow IPC streams, keyed by the
    // window's end: read back, the resonance table's rows.
    let arrow = tmp.path().join("arrow.toml");
    std::fs::write(
        &arrow,
        "[stream]\noutput_topic_prefix = \"arrow.\"\noutput_message = \"arrow\"\n",
    )
    .unwrap();
    for t in DEFAULT_OUTPUT_TOPICS {
        mock.create_topic(&format!("arrow.{t}"), 1, 1).unwrap();
    }
    let out3 = tmp.path().join("stream-arrow");
    let arrow_flags = ["--until-end", "--config", arrow.to_str().unwrap()];
    run_cmd(&mut run_group_cmd(
        &brokers,
        "pf-arrow",
        &out3,
        &arrow_flags,
    ))
    .ok();
    let table = output_table(&out3, "resonance");
    let (u, w, sg) = (
        table.col("user_id"),
        table.col("window_end"),
        table.col("segment"),
    );
    let mut expected: Vec<(String, i64, String)> = table
        .rows
        .iter()
        .map(|r| (r[u].str().to_string(), r[w].int(), r[sg].str().to_string()))
        .collect();
    let mut n = 0;
    let mut got: Vec<(String, i64, String)> = Vec::new();
    for m in consume_until(&brokers, "arrow.resonance", |m| {
        n += arrow_batches(&m.payload)
            .iter()
            .map(|b| b.num_rows())
            .sum::<usize>();
        n >= expected.len()
    }) {
        for b in arrow_batches(&m.payload) {
            use arrow_array::cast::AsArray;
            use arrow_array::types::TimestampMillisecondType;
            let users = b.column_by_name("user_id").unwrap().as_string::<i32>();
            let ends = b
                .column_by_name("window_end")
                .unwrap()
                .as_primitive::<TimestampMillisecondType>();
            let segments = b.column_by_name("segment").unwrap().as_string::<i32>();
            for r in 0..b.num_rows() {
                let key = chrono::DateTime::parse_from_rfc3339(&m.key).unwrap();
                assert_eq!(key.timestamp_millis(), ends.value(r), "keyed by the window");
                got.push((
                    users.value(r).to_string(),
                    ends.value(r),
                    segments.value(r).to_string(),
                ));
            }
        }
    }
    expected.sort();
    got.sort();
    assert_eq!(
        got, expected,
        "the arrow messages hold the resonance table's rows"
    );
}

/// The record batches of one Arrow IPC stream (an output message with `output_message =
/// "arrow"`).
fn arrow_batches(payload: &[u8]) -> Vec<arrow_array::RecordBatch> {
    arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(payload), None)
        .expect("an Arrow IPC stream")
        .map(|b| b.expect("a record batch"))
        .collect()
}

#[test]
fn malformed_messages_go_to_the_dead_letter_topic_and_late_events_to_late() {
    let tmp = tempfile::tempdir().unwrap();
    let (_cluster, brokers) = cluster(1);
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let t0 = 1_767_571_200_000i64; // 2026-01-05T00:00:00Z
    let event = |ts: i64, user: &str| {
        format!(r#"{{"ts": {ts}, "user_id": "{user}", "action": "page_view", "bytes_in": 100}}"#)
    };
    let mut payloads: Vec<String> = Vec::new();
    for i in 0..40 {
        payloads.push(event(t0 + i * 30_000, "a")); // 20 minutes of events
    }
    payloads.push("{not json".into());
    payloads.push(r#"{"ts": 1, "user_id": "b", "action": "x", "bytes_in": -3}"#.into());
    payloads.push(event(t0 + 60_000, "late-user")); // 19 minutes behind: late
    payloads.push(event(t0 + 41 * 30_000, "a"));
    for p in &payloads {
        producer
            .send(BaseRecord::<str, str>::to("events").payload(p.as_str()))
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();

    let out = tmp.path().join("out");
    let run = run_cmd(&mut run_job_cmd(&brokers, &out, &["--until-end"])).ok();
    assert!(
        run.stderr.contains("2 rejected, 1 late"),
        "the summary counts them: {}",
        run.stderr
    );
    let dead = consume_all(&brokers, "personaflow.dead_letter", 2);
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[0].0, b"{not json");
    assert!(!dead[0].1["personaflow.error"].is_empty());
    assert_eq!(dead[1].1["personaflow.field"], "bytes_in");
    assert_eq!(dead[1].1["personaflow.source"], "events/0/41");
    let late = output_table(&out, "late");
    assert_eq!(late.len(), 1);
    assert_eq!(late.rows[0][late.col("user_id")].str(), "late-user");
    // The newest event was at 19m30s, so the watermark was 14m30s (allowed lateness 5m) when
    // the event of 1m came: 13m30s late.
    assert_eq!(
        late.rows[0][late.col("lateness_ms")].int(),
        13 * 60_000 + 30_000
    );
    assert_eq!(late.rows[0][late.col("offset")].int(), 42);
}

fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    body
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn wait_for(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            panic!("the job did not stop within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A job process that is killed (and reaped) when dropped, so that a test that fails while
/// its job runs does not leave the job behind.
struct Job(Child);

impl std::ops::Deref for Job {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Job {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            self.0.kill().ok();
            self.0.wait().ok();
        }
    }
}

fn spawn_quiet(cmd: &mut Command) -> Job {
    Job(cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap())
}

/// Spawns `cmd` with its stdout discarded and its stderr written to `log`.
fn spawn_logged(cmd: &mut Command, log: &Path) -> Job {
    Job(cmd
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap())
}

/// Windows (by end) in `table` of `out`.
fn windows(out: &Path, table: &str) -> std::collections::BTreeSet<i64> {
    if !out.join(table).exists() {
        return Default::default();
    }
    let files = parquet_files(&out.join(table));
    if files.is_empty() {
        return Default::default();
    }
    output_table(out, table)
        .column("window_end")
        .into_iter()
        .map(|v| v.int())
        .collect()
}

#[test]
fn sigterm_flushes_commits_and_a_restart_resumes_without_emitting_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let events = small_sim(tmp.path(), 40, 0.1);
    let (_cluster, brokers) = cluster(2);
    run_cmd(&mut produce_cmd(&brokers, &events)).ok();
    let out = tmp.path().join("stream");
    let config = tmp.path().join("job.toml");
    std::fs::write(&config, RESTART_CONFIG).unwrap();
    let cfg = config.to_str().unwrap();
    let log = tmp.path().join("run.log");
    let mut job = spawn_logged(&mut run_job_cmd(&brokers, &out, &["--config", cfg]), &log);
    // Let it emit some windows, then scrape its metrics and stop it.
    let deadline = Instant::now() + Duration::from_secs(60);
    while windows(&out, "features").len() < 10 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let addr = text
        .lines()
        .find_map(|l| l.strip_prefix("run: metrics on http://"))
        .and_then(|l| l.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("no metrics address in {text}"));
    let metrics = http_get(addr, "/metrics");
    for name in [
        "personaflow_events_consumed_total",
        "personaflow_rejects_total",
        "personaflow_late_events_total",
        "personaflow_consumer_lag{partition=\"0\"}",
        "personaflow_watermark_delay_seconds",
        "personaflow_window_close_to_output_seconds_bucket",
    ] {
        assert!(metrics.contains(name), "{name} is not in {metrics}");
    }
    let consumed = metrics
        .lines()
        .find_map(|l| l.strip_prefix("personaflow_events_consumed_total "))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap();
    assert!(consumed > 0, "{metrics}");
    // Lag starts at the partitions' ends (every event was produced before the job started)
    // and is refreshed off the workers: once every event is read it falls to 0.
    let lag = |text: &str| -> Option<i64> {
        let values: Vec<i64> = text
            .lines()
            .filter(|l| l.starts_with("personaflow_consumer_lag{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect();
        (!values.is_empty()).then(|| values.iter().sum())
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while lag(&http_get(addr, "/metrics")) != Some(0) {
        assert!(Instant::now() < deadline, "lag never fell to 0");
        std::thread::sleep(Duration::from_millis(200));
    }
    sigterm(&job);
    let status = wait_for(&mut job, Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "SIGTERM exits 0");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(summary["stopped_by"], "signal");
    assert!(
        summary["status"]["windows_emitted"].as_u64().unwrap() >= 10,
        "{summary}"
    );
    let ckpt: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("_checkpoint.json")).unwrap()).unwrap();
    assert!(ckpt["emitted_through"].as_u64().is_some(), "{ckpt}");
    let before = windows(&out, "features");
    assert!(!before.is_empty());

    let run = restart_until_end(&brokers, &out, cfg);
    assert!(
        run.stderr.contains("resuming after the window ending"),
        "{}",
        run.stderr
    );
    let back = tmp.path().join("backfill");
    backfill(&events, &back, &["--config", cfg]).ok();
    assert_has_derived_rows(&back);
    assert_same_tables(&out, &back);
}

/// `stream.checkpoint_interval` holds checkpoints back: with an hour, a live job's checkpoint
/// stays at its first durable window while it emits 20 more; killed (SIGKILL), it restarts
/// from that old checkpoint, redoes every window after it (files cut or removed, state
/// resumed as of then) and ends with exactly the backfill's tables.
#[test]
fn a_checkpoint_interval_holds_checkpoints_back_and_a_crash_redoes_what_followed() {
    use personaflow_operators::WindowSpec;
    let tmp = tempfile::tempdir().unwrap();
    let events = small_sim(tmp.path(), 40, 0.1);
    let (_cluster, brokers) = cluster(2);
    run_cmd(&mut produce_cmd(&brokers, &events)).ok();
    let out = tmp.path().join("stream");
    let config = tmp.path().join("job.toml");
    std::fs::write(
        &config,
        format!("{RESTART_CONFIG}checkpoint_interval = \"1h\"\n"),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let mut job = spawn_quiet(&mut run_job_cmd(&brokers, &out, &["--config", cfg]));
    let through = wait_for_checkpoint_after(&out, None, &mut job, CHECKPOINT_DEADLINE);
    let checkpoint_end = WindowSpec::default().end_ms(through);
    // Wait for 20 windows emitted after the checkpoint's.
    let deadline = Instant::now() + Duration::from_secs(60);
    while windows(&out, "features")
        .range(checkpoint_end + 1..)
        .count()
        < 20
    {
        assert!(
            Instant::now() < deadline,
            "no 20 windows after the checkpoint"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        checkpointed_through(&out),
        Some(through),
        "no second checkpoint within the interval"
    );
    job.kill().unwrap(); // SIGKILL
    job.wait().unwrap();
    let run = restart_until_end(&brokers, &out, cfg);
    assert!(run.stderr.contains("resuming after"), "{}", run.stderr);
    let back = tmp.path().join("backfill");
    backfill(&events, &back, &["--config", cfg]).ok();
    assert_has_derived_rows(&back);
    assert_same_tables(&out, &back);
    assert_eq!(windows(&out, "features"), windows(&back, "features"));
}

/// Restarts the job on `out` with `--until-end` and checks that it resumed its operator state.
fn restart_until_end(brokers: &str, out: &Path, cfg: &str) -> Run {
    let run = run_cmd(&mut run_job_cmd(
        brokers,
        out,
        &["--config", cfg, "--until-end"],
    ))
    .ok();
    assert!(
        run.stderr.contains("run: operator state resumed: "),
        "{}",
        run.stderr
    );
    run
}

/// How long a restarted job may take to write its first new checkpoint before a test fails.
const CHECKPOINT_DEADLINE: Duration = Duration::from_secs(180);

/// The last window `_checkpoint.json` in `out` says is emitted.
pub fn checkpointed_through(out: &Path) -> Option<u64> {
    let bytes = std::fs::read(out.join("_checkpoint.json")).ok()?;
    let c: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    c["emitted_through"].as_u64()
}

/// Waits until the checkpoint in `out` names a window after `after`, and returns it; panics
/// if the job exits first or the deadline passes.
#[track_caller]
pub fn wait_for_checkpoint_after(
    out: &Path,
    after: Option<u64>,
    job: &mut Child,
    deadline: Duration,
) -> u64 {
    let until = Instant::now() + deadline;
    loop {
        if let Some(t) = checkpointed_through(out).filter(|t| after.is_none_or(|a| *t > a)) {
            return t;
        }
        if let Some(status) = job.try_wait().unwrap() {
            panic!("the job exited ({status}) before checkpointing past {after:?}");
        }
        if Instant::now() > until {
            job.kill().ok();
            panic!("no checkpoint past {after:?} within {deadline:?}: the job made no progress");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The fault test of the issue: the job is killed with SIGKILL at seeded random moments while
/// a producer keeps writing, and restarted each time; at the end the union of its outputs
/// equals the backfill's, with no duplicate rows and no missing windows.
#[test]
fn sigkill_at_random_moments_loses_and_duplicates_nothing() {
    use rand::{Rng, SeedableRng};
    let tmp = tempfile::tempdir().unwrap();
    let events = small_sim(tmp.path(), 40, 0.15);
    let (_cluster, brokers) = cluster(3);
    let out = tmp.path().join("stream");
    let config = tmp.path().join("job.toml");
    std::fs::write(&config, RESTART_CONFIG).unwrap();
    let cfg = config.to_str().unwrap();
    // Each run gets a new slice of the events, produced while it runs: every run has windows
    // to close, whatever the machine's speed.
    const KILLS: usize = 5;
    let producer = SlicedProducer::start(&brokers, &events, KILLS + 1, Duration::from_secs(1));
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let mut last: Option<u64> = None;
    for kill in 0..KILLS {
        producer.release(kill);
        let mut job = spawn_quiet(&mut run_job_cmd(&brokers, &out, &["--config", cfg]));
        // Kill each run only after its first new checkpoint (a condition, not a guess at how
        // long a start takes), at a seeded random moment after it: the run was working.
        let through = wait_for_checkpoint_after(&out, last, &mut job, CHECKPOINT_DEADLINE);
        std::thread::sleep(Duration::from_millis(rng.random_range(0..1_500)));
        job.kill().unwrap(); // SIGKILL
        job.wait().unwrap();
        eprintln!(
            "kill {}: the run had checkpointed through window {through}",
            kill + 1
        );
        last = Some(through);
    }
    producer.release(KILLS);
    let total = producer.total();
    assert_eq!(producer.finish(), total, "every event was produced");
    let run = run_cmd(&mut run_job_cmd(
        &brokers,
        &out,
        &["--config", cfg, "--until-end"],
    ))
    .ok();
    assert!(run.stderr.contains("resuming after"), "{}", run.stderr);
    let back = tmp.path().join("backfill");
    backfill(&events, &back, &["--config", cfg]).ok();
    assert_has_derived_rows(&back);
    assert_same_tables(&out, &back);
    assert_eq!(windows(&out, "features"), windows(&back, "features"));
}

/// The continuous job against a real, separately started broker process: `tansu`, which
/// `scripts/test.sh` installs (`scripts/setup-tansu.sh`) and names in `PERSONAFLOW_TANSU`.
/// Run alone without that script, the test says so and checks nothing.
#[test]
fn against_a_real_broker_process_tansu() {
    let Some(bin) = std::env::var_os("PERSONAFLOW_TANSU").map(PathBuf::from) else {
        eprintln!("PERSONAFLOW_TANSU is not set: run scripts/test.sh (it installs tansu)");
        return;
    };
    assert!(
        bin.is_file(),
        "PERSONAFLOW_TANSU={} is not a file",
        bin.display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let events = small_sim(tmp.path(), 40, 0.05);
    let broker = Tansu::start(bin);
    broker.create_topic("events", 2);
    for t in OUTPUT_TOPICS {
        broker.create_topic(t, 1);
    }
    let brokers = broker.brokers();
    // One message per produce batch (see `SlicedProducer`): tansu mishandles fetches inside
    // a batch.
    let producer = SlicedProducer::start(&brokers, &events, 1, Duration::from_secs(1));
    producer.release(0);
    producer.finish();
    let out = tmp.path().join("stream");
    // Stop it once with SIGTERM after its first checkpoint, then finish: offsets committed to
    // tansu, and the restart rewinds into the topic.
    let mut job = spawn_quiet(&mut run_job_cmd(&brokers, &out, &[]));
    wait_for_checkpoint_after(&out, None, &mut job, CHECKPOINT_DEADLINE);
    sigterm(&job);
    assert_eq!(wait_for(&mut job, Duration::from_secs(60)).code(), Some(0));
    let run = run_cmd(&mut run_job_cmd(&brokers, &out, &["--until-end"])).ok();
    assert!(run.stderr.contains("resuming after"), "{}", run.stderr);
    let back = tmp.path().join("backfill");
    backfill(&events, &back, &[]).ok();
    assert_same_tables(&out, &back);
    let rows = output_table(&out, "profiles").len();
    assert_eq!(
        consume_all(&brokers, "personaflow.profiles", rows).len(),
        rows
    );
}

/// Active-history sequences with a replay of 9 windows (`L + W + R` = 4 + 3 + 2).
const ACTIVE_CONFIG: &str = "[sequence]\nhistory = \"active\"\nlength = 4\n\
                             [segments]\nwindow = 3\n[policy]\nrisk_windows = 2\n\
                             [personas]\nmin_users = 3\n";

/// Active-history sequences reach back further than a restart replays (users active a few
/// minutes every two hours, a replay of 9 one-minute windows): their rings are checkpointed.
/// A job stopped by SIGTERM well into the first half of the events and restarted for the
/// second half writes exactly what the backfill writes.
#[test]
fn active_history_sequences_resume_exactly_after_sigterm() {
    active_history_restart(false);
}

/// As [`active_history_sequences_resume_exactly_after_sigterm`], killed (SIGKILL): the job
/// resumes from a checkpoint taken while it ran.
#[test]
fn active_history_sequences_resume_exactly_after_sigkill() {
    active_history_restart(true);
}

/// The window (default length) `windows` after the first event's, checked to close while
/// only the first slice of `producer` is produced (its last event is more than the default
/// out-of-order bound later), so a job fed that slice alone checkpoints through it.
fn first_slice_stop(producer: &SlicedProducer, windows: i64) -> u64 {
    use personaflow_dataflow::config::DEFAULT_MAX_OUT_OF_ORDER_MS;
    use personaflow_operators::window::DEFAULT_WINDOW_MS;
    let (first, last) = producer.span(0);
    let stop = first / DEFAULT_WINDOW_MS + windows;
    let slice_last = last / DEFAULT_WINDOW_MS;
    assert!(
        stop + 2 * DEFAULT_MAX_OUT_OF_ORDER_MS / DEFAULT_WINDOW_MS < slice_last,
        "window {stop} does not close within the first slice (last event in window {slice_last})"
    );
    stop as u64
}

fn active_history_restart(kill: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let sim = tmp.path().join("sim");
    simulate(
        &sim,
        40,
        0.5,
        11,
        &["--sessions-per-day", "12", "--session-minutes", "1"],
    )
    .ok();
    let events = sim.join("events");
    let (_cluster, brokers) = cluster(2);
    let out = tmp.path().join("stream");
    let config = tmp.path().join("job.toml");
    std::fs::write(&config, ACTIVE_CONFIG).unwrap();
    let cfg = config.to_str().unwrap();
    let producer = SlicedProducer::start(&brokers, &events, 2, Duration::from_secs(1));
    producer.release(0);
    let log = tmp.path().join("run.log");
    let mut job = spawn_logged(&mut run_job_cmd(&brokers, &out, &["--config", cfg]), &log);
    // Stop only once the checkpoint is 100 windows past the first event's (an absolute window
    // the first slice closes, whenever the job happens to take its first checkpoint): most
    // users' rings then hold windows before the replay.
    let stop_at = first_slice_stop(&producer, 100);
    let mut through = wait_for_checkpoint_after(&out, None, &mut job, CHECKPOINT_DEADLINE);
    eprintln!("first checkpoint through window {through}, stopping at or after {stop_at}");
    while through < stop_at {
        through = wait_for_checkpoint_after(&out, Some(through), &mut job, CHECKPOINT_DEADLINE);
    }
    if kill {
        job.kill().unwrap(); // SIGKILL
        job.wait().unwrap();
    } else {
        sigterm(&job);
        let status = wait_for(&mut job, Duration::from_secs(60));
        assert_eq!(
            status.code(),
            Some(0),
            "SIGTERM exits 0: {}",
            std::fs::read_to_string(&log).unwrap()
        );
    }
    producer.release(1);
    let total = producer.total();
    assert_eq!(producer.finish(), total, "every event was produced");
    restart_until_end(&brokers, &out, cfg);
    let back = tmp.path().join("backfill");
    backfill(&events, &back, &["--config", cfg]).ok();
    assert_same_tables(&out, &back);
    assert_eq!(windows(&out, "features"), windows(&back, "features"));
}
