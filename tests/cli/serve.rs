//! `personaflow serve` over a backfill's outputs: the real binary on a real port, spoken to
//! over TCP with plain HTTP/1.1; the answers checked against the Parquet tables.

use crate::support::*;
use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// A running server; killed when dropped.
struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// Starts `personaflow serve ARGS --bind 127.0.0.1:0` and waits (up to two minutes) for the
/// line that names the address it bound.
fn start(args: &[&str]) -> Server {
    start_cmd(
        personaflow()
            .arg("serve")
            .args(args)
            .args(["--bind", "127.0.0.1:0"])
            .stderr(Stdio::inherit()),
    )
}

/// Spawns `cmd` (which serves, on a port it prints) and waits up to two minutes for the line
/// that names the address.
fn start_cmd(cmd: &mut std::process::Command) -> Server {
    let child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    // Owned by the guard from here: killed and waited for however this ends.
    let mut server = Server {
        child,
        addr: String::new(),
    };
    let stdout = server.child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("the server says where it serves within two minutes");
        if let Some(rest) = line.strip_prefix("serving http://") {
            server.addr = rest.split(':').take(2).collect::<Vec<_>>().join(":");
            return server;
        }
    }
}

/// One HTTP/1.1 request; returns (status, body as text).
fn http(addr: &str, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let (status, bytes) = http_bytes(addr, method, path, token, body);
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// One HTTP/1.1 request; returns (status, body).
fn http_bytes(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let rest = &raw[split + 4..];
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    (status, body)
}

fn dechunk(mut s: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = s
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("a chunk size");
        let size = std::str::from_utf8(&s[..eol]).unwrap();
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&s[eol + 2..eol + 2 + n]);
        s = &s[eol + 2 + n + 2..];
    }
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

/// Each user's rows of `table` in its latest window, as (window_end, rows).
fn latest_rows(out: &Path, table: &str) -> BTreeMap<String, (i64, Vec<usize>)> {
    let t = output_table(out, table);
    let mut latest: BTreeMap<String, (i64, Vec<usize>)> = BTreeMap::new();
    for r in 0..t.len() {
        let user = t.column("user_id")[r].str().to_string();
        let w = t.column("window_end")[r].int();
        let e = latest.entry(user).or_insert((i64::MIN, Vec::new()));
        if w > e.0 {
            *e = (w, vec![r]);
        } else if w == e.0 {
            e.1.push(r);
        }
    }
    latest
}

#[test]
fn serve_answers_each_users_latest_records_as_the_tables_hold_them() {
    let tmp = tempfile::tempdir().unwrap();
    let out = backfilled_model_free(tmp.path(), 120, 0.1, 23);
    let token_file = tmp.path().join("token");
    std::fs::write(&token_file, "s3cret-token\n").unwrap();
    let server = start(&[
        "--outputs",
        out.to_str().unwrap(),
        "--token-file",
        token_file.to_str().unwrap(),
    ]);
    let addr = server.addr.as_str();
    let tok = Some("s3cret-token");

    assert_eq!(http(addr, "GET", "/healthz", None, "").0, 200);
    assert_eq!(http(addr, "GET", "/readyz", None, "").0, 200);

    let policies = output_table(&out, "policies");
    let latest_policy = latest_rows(&out, "policies");
    let profiles = output_table(&out, "profiles");
    let latest_profile = latest_rows(&out, "profiles");
    let assignments = output_table(&out, "persona_assignments");
    let latest_assignment = latest_rows(&out, "persona_assignments");
    let forecasts = latest_rows(&out, "forecasts");
    assert!(latest_profile.len() > 30, "{} users", latest_profile.len());

    // Without the token (or with a wrong one): 401, and nothing about the user.
    let some_user = latest_profile.keys().next().unwrap().clone();
    let (st, body) = http(addr, "GET", &format!("/v1/users/{some_user}"), None, "");
    assert_eq!(st, 401, "{body}");
    assert!(!body.contains("profile"));
    let (st, _) = http(
        addr,
        "GET",
        &format!("/v1/users/{some_user}"),
        Some("s3cret-tokeN"),
        "",
    );
    assert_eq!(st, 401);

    // Every user: the latest profile, policy and persona, as the tables say.
    for (user, (w, rows)) in &latest_profile {
        let (st, body) = http(addr, "GET", &format!("/v1/users/{user}"), tok, "");
        assert_eq!(st, 200, "{user}: {body}");
        let v = json(&body);
        assert_eq!(v["user_id"], user.as_str());
        let r = rows[0];
        assert_eq!(
            v["profile"]["events"].as_u64().unwrap(),
            profiles.column("events")[r].int() as u64,
            "{user}"
        );
        let newest = [&latest_policy, &latest_assignment, &forecasts]
            .iter()
            .filter_map(|m| m.get(user).map(|(w, _)| *w))
            .fold(*w, i64::max);
        assert_eq!(v["window_end"].as_i64().unwrap(), newest, "{user}");
        if let Some((_, rows)) = latest_policy.get(user) {
            let r = rows[0];
            assert_eq!(
                v["policy"]["persona"],
                policies.column("persona")[r].str(),
                "{user}"
            );
            assert_eq!(
                v["policy"]["allocated_bps"].as_u64().unwrap(),
                policies.column("allocated_bps")[r].int() as u64,
                "{user}"
            );
        }
        if let Some((_, rows)) = latest_assignment.get(user) {
            assert_eq!(
                v["persona"]["persona_id"].as_i64().unwrap(),
                assignments.column("persona_id")[rows[0]].int(),
                "{user}"
            );
        }
        if let Some((_, rows)) = forecasts.get(user) {
            assert_eq!(
                v["forecast"].as_array().unwrap().len(),
                rows.len(),
                "{user}"
            );
        }
    }

    // batchGet: found and missing.
    let ids: Vec<&String> = latest_profile.keys().take(3).collect();
    let body = serde_json::json!({ "ids": [ids[0], ids[1], ids[2], "no-such-user"] }).to_string();
    let (st, resp) = http(addr, "POST", "/v1/users:batchGet", tok, &body);
    assert_eq!(st, 200, "{resp}");
    let v = json(&resp);
    assert_eq!(v["users"].as_array().unwrap().len(), 3);
    assert_eq!(v["missing"], serde_json::json!(["no-such-user"]));

    // Store-wide lists.
    let v = json(&http(addr, "GET", "/v1/segments", tok, "").1);
    assert!(!v["segments"].as_array().unwrap().is_empty());
    let personas = output_table(&out, "personas");
    let last = personas.column("window_end").iter().map(|v| v.int()).max();
    let want = personas
        .column("window_end")
        .iter()
        .filter(|v| Some(v.int()) == last)
        .count();
    let v = json(&http(addr, "GET", "/v1/personas", tok, "").1);
    assert_eq!(
        v["personas"].as_array().unwrap().len(),
        want,
        "the latest window's"
    );
    let (st, body) = http(
        addr,
        "GET",
        "/v1/drift?from=0&to=9223372036854775807",
        tok,
        "",
    );
    assert_eq!(st, 200, "{body}");
    let drift = output_table(&out, "drift");
    assert_eq!(json(&body)["drift"].as_array().unwrap().len(), drift.len());

    // Hostile parameters: a name is never a path; bad values are 400 naming the parameter.
    for path in [
        "/v1/users/..%2F..%2Fetc%2Fpasswd",
        "/v1/users/%2Fetc%2Fpasswd",
        "/v1/users/..",
    ] {
        let (st, body) = http(addr, "GET", path, tok, "");
        assert_eq!(st, 404, "{path}: {body}");
        assert!(!body.contains("root:"), "{path}");
    }
    for (path, parameter) in [
        ("/v1/drift?from=1e999", "from"),
        ("/v1/drift?to=tomorrow", "to"),
        ("/v1/drift?from=5&to=4", "from"),
        ("/v1/drift?table=..%2Fsecret", "table"),
        ("/v1/users/a%00b", "id"),
    ] {
        let (st, body) = http(addr, "GET", path, tok, "");
        assert_eq!(st, 400, "{path}: {body}");
        assert_eq!(json(&body)["error"]["parameter"], parameter, "{path}");
    }
    check_downloads(addr, tok, &out, &some_user);
    check_feedback(addr, tok, &out, &some_user);

    let huge = format!("{{\"ids\":[\"{}\"]}}", "x".repeat(400 * 1024));
    let (st, body) = http(addr, "POST", "/v1/users:batchGet", tok, &huge);
    assert_eq!(st, 413, "a body over the limit");
    assert_eq!(json(&body)["error"]["parameter"], "body");
    let (st, body) = http(addr, "DELETE", "/v1/users/u1", tok, "");
    assert_eq!(st, 405);
    assert_eq!(json(&body)["error"]["status"], 405);
    drop(server);
}

/// Table downloads: filtered, projected, in every format, against the files; and read by
/// pyarrow, Polars and DuckDB when `PERSONAFLOW_PYTHON` names a Python that has them.
fn check_downloads(addr: &str, tok: Option<&str>, out: &Path, user: &str) {
    let (st, body) = http(addr, "GET", "/v1/tables", tok, "");
    assert_eq!(st, 200, "{body}");
    let tables = json(&body);
    let resonance = tables["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "resonance")
        .unwrap();
    assert_eq!(resonance["available"], true);

    let table = output_table(out, "resonance");
    let mine: Vec<usize> = (0..table.len())
        .filter(|&r| table.column("user_id")[r].str() == user)
        .collect();
    assert!(!mine.is_empty());
    let base = format!("/v1/tables/resonance?user={user}");
    let (st, csv) = http(addr, "GET", &format!("{base}&format=csv"), tok, "");
    assert_eq!(st, 200, "{csv}");
    assert_eq!(csv.lines().count(), mine.len() + 1, "a header and the rows");
    assert!(csv.starts_with("window_end,user_id,segment,"), "{csv}");
    let (st, nd) = http(
        addr,
        "GET",
        &format!("{base}&format=ndjson&columns=user_id,probability"),
        tok,
        "",
    );
    assert_eq!(st, 200, "{nd}");
    let rows: Vec<serde_json::Value> = nd.lines().map(json).collect();
    assert_eq!(rows.len(), mine.len());
    for r in &rows {
        assert_eq!(r.as_object().unwrap().len(), 2, "{r}");
        assert_eq!(r["user_id"], user);
    }
    // A time range: the user's middle window only.
    let mut windows: Vec<i64> = mine
        .iter()
        .map(|&r| table.column("window_end")[r].int())
        .collect();
    windows.sort();
    let w = windows[windows.len() / 2];
    let want = windows.iter().filter(|x| **x == w).count();
    let (st, nd) = http(
        addr,
        "GET",
        &format!("{base}&format=ndjson&from={w}&to={w}"),
        tok,
        "",
    );
    assert_eq!(st, 200, "{nd}");
    assert_eq!(nd.lines().count(), want);
    let (st, nd) = http(
        addr,
        "GET",
        &format!("{base}&format=ndjson&limit=1"),
        tok,
        "",
    );
    assert_eq!((st, nd.lines().count()), (200, 1));
    // Parquet, whole table, read back by the parquet crate.
    let (st, bytes) = http_bytes(addr, "GET", "/v1/tables/resonance?format=parquet", tok, "");
    assert_eq!(st, 200);
    let file = out.parent().unwrap().join("download.parquet");
    std::fs::write(&file, bytes).unwrap();
    let got = read_parquet(&file);
    assert_eq!(got.len(), table.len());
    assert_eq!(got.sorted_rows(), table.sorted_rows());
    // Hostile or wrong parameters.
    for (path, status, parameter) in [
        ("/v1/tables/..%2Fresonance", 404, "table"),
        ("/v1/tables/%2Fetc%2Fpasswd", 404, "table"),
        ("/v1/tables/resonance?columns=nope", 400, "columns"),
        ("/v1/tables/resonance?format=xlsx", 400, "format"),
        (
            "/v1/tables/resonance?from=0&to=9223372036854775807",
            400,
            "to",
        ),
        ("/v1/tables/policies?segment=gamer", 400, "segment"),
        ("/v1/tables/resonance?limit=-1", 400, "limit"),
        ("/v1/tables/resonance?where=1", 400, "where"),
    ] {
        let (st, body) = http(addr, "GET", path, tok, "");
        assert_eq!(st, status, "{path}: {body}");
        assert_eq!(json(&body)["error"]["parameter"], parameter, "{path}");
    }
    if let Some(python) = std::env::var_os("PERSONAFLOW_PYTHON") {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/check_downloads.py");
        let result = std::process::Command::new(python)
            .arg(script)
            .arg(format!("http://{addr}"))
            .arg(tok.unwrap_or(""))
            .arg(user)
            .arg(mine.len().to_string())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&result.stdout);
        assert!(
            result.status.success(),
            "download interop failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&result.stderr)
        );
        assert!(stdout.contains("downloads agree"), "{stdout}");
    } else {
        assert!(
            std::env::var("CI").is_err(),
            "PERSONAFLOW_PYTHON must be set in CI"
        );
    }
}

/// Feedback from another service: validated, accepted, and appended to `service_feedback`
/// (written within about a second; the test waits for the file, up to a minute).
fn check_feedback(addr: &str, tok: Option<&str>, out: &Path, user: &str) {
    let path = format!("/v1/users/{user}/feedback");
    let report = r#"{"source":"cdn-edge-7","observed_at":"2026-01-05T01:00:00Z","observed_bytes":123456,"qoe":0.875,"latency_ms":42.5}"#;
    assert_eq!(http(addr, "POST", &path, None, report).0, 401);
    let (st, body) = http(addr, "POST", &path, tok, report);
    assert_eq!(st, 202, "{body}");
    for (bad, parameter) in [
        (r#"{"source":"x","qoe":7}"#, "qoe"),
        (r#"{"source":"x"}"#, "observed_bytes"),
        (r#"{"qoe":0.5}"#, "body"),
        ("not json", "body"),
    ] {
        let (st, body) = http(addr, "POST", &path, tok, bad);
        assert_eq!(st, 400, "{bad}: {body}");
        assert_eq!(json(&body)["error"]["parameter"], parameter, "{bad}");
    }
    let (st, _) = http(addr, "POST", "/v1/users/nobody-here/feedback", tok, report);
    assert_eq!(st, 404);
    let dir = out.join("service_feedback");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !dir.is_dir() || parquet_files(&dir).is_empty() {
        assert!(
            Instant::now() < deadline,
            "no service_feedback file within a minute"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let t = output_table(out, "service_feedback");
    assert_eq!(t.len(), 1);
    assert_eq!(t.column("user_id")[0].str(), user);
    assert_eq!(t.column("source")[0].str(), "cdn-edge-7");
    assert_eq!(t.column("observed_at")[0].int(), 1_767_574_800_000);
    let (st, nd) = http(
        addr,
        "GET",
        "/v1/tables/service_feedback?format=ndjson&from=2026-01-05T00:00:00Z&to=2026-01-05T02:00:00Z",
        tok,
        "",
    );
    assert_eq!(st, 200, "{nd}");
    let row = json(nd.lines().next().expect("a row"));
    assert_eq!(row["observed_bytes"], 123456);
}

/// schemathesis fuzzes every route from `/openapi.json` (with the bearer token): no 5xx, every
/// status documented, every response in its schema and content type. Seeded; a few hundred
/// cases.
#[test]
fn schemathesis_finds_no_server_error_and_no_response_outside_the_schema() {
    let Some(python) = std::env::var_os("PERSONAFLOW_PYTHON") else {
        assert!(
            std::env::var("CI").is_err(),
            "PERSONAFLOW_PYTHON must be set in CI (run scripts/test.sh)"
        );
        eprintln!("skipped: set PERSONAFLOW_PYTHON (scripts/test.sh does) to run schemathesis");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = backfilled_model_free(tmp.path(), 120, 0.1, 23);
    let token_file = tmp.path().join("token");
    std::fs::write(&token_file, "fuzz-token\n").unwrap();
    let server = start(&[
        "--outputs",
        out.to_str().unwrap(),
        "--token-file",
        token_file.to_str().unwrap(),
    ]);
    let result = std::process::Command::new(python)
        // Its cache (`.schemathesis/`) goes there too, not into the clone.
        .current_dir(tmp.path())
        .args(["-m", "schemathesis.cli", "run"])
        .arg(format!("http://{}/openapi.json", server.addr))
        .args([
            "-H",
            "Authorization: Bearer fuzz-token",
            "--checks",
            "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance",
            "--max-examples",
            "25",
            "--seed",
            "4594",
            "--report-dir",
        ])
        .arg(tmp.path().join("schemathesis"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(
        result.status.success(),
        "schemathesis found problems:\n{stdout}\n{}",
        String::from_utf8_lossy(&result.stderr)
    );
    assert!(stdout.contains("No issues found"), "{stdout}");
    drop(server);
}

#[test]
fn serve_refuses_to_run_without_a_token_off_loopback_and_names_bad_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    let line = run(&[
        "serve",
        "--outputs",
        tmp.path().to_str().unwrap(),
        "--bind",
        "0.0.0.0:0",
    ])
    .fails_with_one_line();
    assert!(
        line.contains("without a token") && line.contains("--token-file"),
        "{line}"
    );
    let empty = tmp.path().join("empty-token");
    std::fs::write(&empty, "\n").unwrap();
    let line = run(&[
        "serve",
        "--outputs",
        tmp.path().to_str().unwrap(),
        "--token-file",
        empty.to_str().unwrap(),
    ])
    .fails_with_one_line();
    assert!(
        line.contains("empty-token") && line.contains("empty"),
        "{line}"
    );
    let line = run(&[
        "serve",
        "--outputs",
        "/no/such/dir",
        "--bind",
        "127.0.0.1:0",
    ])
    .fails_with_one_line();
    assert!(line.contains("/no/such/dir"), "{line}");
}

#[test]
fn run_serve_answers_from_the_jobs_own_state_as_windows_are_emitted() {
    use crate::stream::{cluster, produce_cmd, run_job_cmd};
    let tmp = tempfile::tempdir().unwrap();
    let sim = tmp.path().join("sim");
    simulate(&sim, 40, 0.1, 29, &[]).ok();
    let (_cluster, brokers) = cluster(2);
    run_cmd(&mut produce_cmd(&brokers, &sim.join("events"))).ok();
    let config = tmp.path().join("job.toml");
    std::fs::write(
        &config,
        "[embedder]\nkind = \"standardised\"\n[forecaster]\nkind = \"persistence\"\n",
    )
    .unwrap();
    let out = tmp.path().join("stream");
    let log = tmp.path().join("run.log");
    // A bounded run: it consumes everything, closes every window, then keeps serving.
    let mut cmd = run_job_cmd(
        &brokers,
        &out,
        &[
            "--config",
            config.to_str().unwrap(),
            "--until-end",
            "--serve",
            "127.0.0.1:0",
        ],
    );
    let mut server = start_cmd(cmd.stderr(std::fs::File::create(&log).unwrap()));
    let addr = server.addr.clone();
    // While it runs: the store is never behind the files (it sees a window before its file is
    // written). Files first, then the store.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let dir = out.join("profiles");
        if dir.is_dir() && !parquet_files(&dir).is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "no profiles within two minutes");
        std::thread::sleep(Duration::from_millis(100));
    }
    for (user, (w, _)) in &latest_rows(&out, "profiles") {
        let (st, body) = http(&addr, "GET", &format!("/v1/users/{user}"), None, "");
        assert_eq!(st, 200, "{user}: {body}");
        assert!(
            json(&body)["window_end"].as_i64().unwrap() >= *w,
            "{user}: {body}"
        );
    }
    // Once the run is done, the store holds exactly the files' latest records.
    let deadline = Instant::now() + Duration::from_secs(180);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("run: done; serving the final state")
    {
        assert!(
            Instant::now() < deadline,
            "the run did not finish within three minutes:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let profiles = output_table(&out, "profiles");
    let latest = latest_rows(&out, "profiles");
    let policies = output_table(&out, "policies");
    let latest_policy = latest_rows(&out, "policies");
    assert!(latest.len() >= 10, "{} users", latest.len());
    for (user, (_, rows)) in &latest {
        let (st, body) = http(&addr, "GET", &format!("/v1/users/{user}"), None, "");
        assert_eq!(st, 200, "{user}: {body}");
        let v = json(&body);
        assert_eq!(
            v["profile"]["events"].as_i64().unwrap(),
            profiles.column("events")[rows[0]].int(),
            "{user}"
        );
        if let Some((_, rows)) = latest_policy.get(user) {
            assert_eq!(
                v["policy"]["allocated_bps"].as_i64().unwrap(),
                policies.column("allocated_bps")[rows[0]].int(),
                "{user}"
            );
        }
    }
    // The dashboard's series were fed by the job once per window: each segment's mean
    // resonance in each window is the files' recount.
    let (st, body) = http(&addr, "GET", "/v1/timeline?points=5000", None, "");
    assert_eq!(st, 200, "{body}");
    let timeline = json(&body);
    let resonance = output_table(&out, "resonance");
    let mut sums: BTreeMap<(i64, String), (f64, u64)> = BTreeMap::new();
    for r in 0..resonance.len() {
        let e = sums
            .entry((
                resonance.column("window_end")[r].int(),
                resonance.column("segment")[r].str().to_string(),
            ))
            .or_default();
        e.0 += resonance.column("probability")[r].float();
        e.1 += 1;
    }
    let windows: Vec<i64> = timeline["resonance"]["window_end"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_i64().unwrap())
        .collect();
    let mut want_windows: Vec<i64> = sums.keys().map(|(w, _)| *w).collect();
    want_windows.dedup();
    assert_eq!(windows, want_windows, "one point per window");
    let mut compared = 0;
    for series in timeline["resonance"]["series"].as_array().unwrap() {
        let name = series["name"].as_str().unwrap();
        for (i, w) in windows.iter().enumerate() {
            let got = series["mean_probability"][i].as_f64();
            match sums.get(&(*w, name.to_string())) {
                Some((sum, n)) => {
                    let want = sum / *n as f64;
                    assert!(
                        (got.unwrap() - want).abs() < 1e-6,
                        "{w} {name}: {got:?} vs {want}"
                    );
                    compared += 1;
                }
                None => assert_eq!(got, None, "{w} {name}"),
            }
        }
    }
    assert_eq!(compared, sums.len());
    let status = std::process::Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    let code = loop {
        if let Some(s) = server.child.try_wait().unwrap() {
            break s.code();
        }
        assert!(Instant::now() < deadline, "the job did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, Some(0));
}

/// A redis-server of its own on 127.0.0.1 (Debian's, found by `PERSONAFLOW_REDIS_SERVER`,
/// which `scripts/test.sh` sets); stopped when dropped.
struct Redis {
    child: Child,
    port: u16,
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

impl Redis {
    fn start(bin: &str) -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new(bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let redis = Redis { child, port };
        let url = personaflow_serve::redis::parse_url(&redis.url()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while personaflow_serve::redis::RespClient::connect(&url).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer within a minute"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

#[test]
fn the_redis_sink_mirrors_each_users_latest_persona_resonance_and_policy() {
    let Ok(bin) = std::env::var("PERSONAFLOW_REDIS_SERVER") else {
        assert!(
            std::env::var("CI").is_err(),
            "PERSONAFLOW_REDIS_SERVER must be set in CI (run scripts/test.sh)"
        );
        eprintln!(
            "skipped: set PERSONAFLOW_REDIS_SERVER (scripts/test.sh does) to test the Redis sink"
        );
        return;
    };
    let redis = Redis::start(&bin);
    let tmp = tempfile::tempdir().unwrap();
    let sim = tmp.path().join("sim");
    simulate(&sim, 80, 0.1, 31, &[]).ok();
    let config = tmp.path().join("job.toml");
    std::fs::write(
        &config,
        format!(
            "[embedder]\nkind = \"standardised\"\n[forecaster]\nkind = \"persistence\"\n\
             [sinks.redis]\nurl = \"{}\"\n",
            redis.url()
        ),
    )
    .unwrap();
    let out = tmp.path().join("out");
    backfill(
        &sim.join("events"),
        &out,
        &["--config", config.to_str().unwrap()],
    )
    .ok();

    let url = personaflow_serve::redis::parse_url(&redis.url()).unwrap();
    let mut client = personaflow_serve::redis::RespClient::connect(&url).unwrap();
    let policies = output_table(&out, "policies");
    let latest_policy = latest_rows(&out, "policies");
    let resonance = output_table(&out, "resonance");
    let latest_resonance = latest_rows(&out, "resonance");
    let assignments = output_table(&out, "persona_assignments");
    let latest_assignment = latest_rows(&out, "persona_assignments");
    assert!(latest_policy.len() >= 20, "{} users", latest_policy.len());
    for (user, (w, rows)) in &latest_policy {
        let h = client.hgetall(&format!("personaflow:user:{user}")).unwrap();
        let r = rows[0];
        assert_eq!(h["policy_window_end"], w.to_string(), "{user}");
        assert_eq!(
            h["allocated_bps"],
            policies.column("allocated_bps")[r].int().to_string(),
            "{user}"
        );
        assert_eq!(
            h["catalogue_persona"],
            policies.column("persona")[r].str(),
            "{user}"
        );
        let policy: serde_json::Value = serde_json::from_str(&h["policy"]).unwrap();
        assert_eq!(
            policy["dscp"].as_i64().unwrap(),
            policies.column("dscp")[r].int()
        );
    }
    for (user, (w, rows)) in &latest_resonance {
        let h = client.hgetall(&format!("personaflow:user:{user}")).unwrap();
        assert_eq!(h["resonance_window_end"], w.to_string(), "{user}");
        let top = rows
            .iter()
            .find(|&&r| resonance.column("top")[r].bool())
            .map(|&r| resonance.column("segment")[r].str().to_string())
            .unwrap_or_default();
        assert_eq!(h["top_segment"], top, "{user}");
        let dist: serde_json::Value = serde_json::from_str(&h["resonance"]).unwrap();
        assert_eq!(dist.as_object().unwrap().len(), rows.len(), "{user}");
    }
    for (user, (_, rows)) in &latest_assignment {
        let h = client.hgetall(&format!("personaflow:user:{user}")).unwrap();
        assert_eq!(
            h["persona_id"],
            assignments.column("persona_id")[rows[0]].int().to_string(),
            "{user}"
        );
    }
    // A user's older window arriving after a newer one (the workers write independently, a
    // restarted job replays) leaves the newer one; a newer one replaces it.
    {
        use personaflow_io::tables::{ResonanceRow, Table, TableRow};
        let sink = personaflow_serve::redis::RedisSink::connect(&redis.url(), "personaflow:user:")
            .unwrap();
        let (user, (w, _)) = latest_resonance.iter().next().unwrap();
        let key = format!("personaflow:user:{user}");
        let before = client.hgetall(&key).unwrap();
        let row = |window_end: i64| ResonanceRow {
            window_end,
            user_id: user.as_str().into(),
            segment: "zz_test".into(),
            cosine: 1.0,
            probability: 1.0,
            resonating: true,
            top: true,
            cold_start: false,
        };
        let older = ResonanceRow::to_batch(&[row(w - 60_000)]);
        sink.write(Table::Resonance, &older).unwrap();
        assert_eq!(
            client.hgetall(&key).unwrap(),
            before,
            "an older window changed nothing"
        );
        let newer = ResonanceRow::to_batch(&[row(w + 60_000)]);
        sink.write(Table::Resonance, &newer).unwrap();
        let after = client.hgetall(&key).unwrap();
        assert_eq!(after["top_segment"], "zz_test");
        assert_eq!(after["resonance_window_end"], (w + 60_000).to_string());
        assert_eq!(
            after.get("policy_window_end"),
            before.get("policy_window_end")
        );
    }
    // A server that is not there fails the run before any output, naming the address.
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "[sinks.redis]\nurl = \"redis://127.0.0.1:1\"\n").unwrap();
    let out2 = tmp.path().join("out2");
    let line = run(&[
        "backfill",
        "--input",
        sim.join("events").to_str().unwrap(),
        "--output",
        out2.to_str().unwrap(),
        "--config",
        bad.to_str().unwrap(),
    ])
    .fails_with_one_line();
    assert!(
        line.contains("sinks.redis") && line.contains("127.0.0.1:1"),
        "{line}"
    );
    assert!(!out2.exists(), "nothing is written");
}

/// The dashboard in a real browser: a drift scenario backfilled, served with a token, the page
/// opened in headless Chromium (`tests/interop/dashboard.py` drives it over the DevTools
/// protocol, waiting for the page to say it has drawn), and what it drew compared with the
/// tables: one series per segment and forecaster, every drift event, the latest window's
/// personas, and the looked-up user's top segment and distribution. The screenshot is kept
/// as an artifact under the target directory.
#[test]
fn the_dashboard_draws_the_runs_series_and_looks_a_user_up_in_chromium() {
    let (Ok(chromium), Some(python)) = (
        std::env::var("PERSONAFLOW_CHROMIUM"),
        std::env::var_os("PERSONAFLOW_PYTHON"),
    ) else {
        assert!(
            std::env::var("CI").is_err(),
            "PERSONAFLOW_CHROMIUM and PERSONAFLOW_PYTHON must be set in CI (run scripts/test.sh)"
        );
        eprintln!(
            "skipped: set PERSONAFLOW_CHROMIUM and PERSONAFLOW_PYTHON (scripts/test.sh does)"
        );
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let sim = tmp.path().join("sim");
    simulate(&sim, 200, 0.25, 5, &["--drift", "gamer@3h:bytes=6"]).ok();
    let out = tmp.path().join("out");
    let mut cmd = personaflow();
    backfill_cmd(
        cmd.env("PERSONAFLOW__EMBEDDER__KIND", "standardised")
            .env("PERSONAFLOW__FORECASTER__KIND", "persistence")
            // Few users per window: personas and drift from a small scenario.
            .env("PERSONAFLOW__PERSONAS__MIN_USERS", "5")
            .env("PERSONAFLOW__DRIFT__MIN_POINTS", "4"),
        &sim.join("events"),
        &out,
        &[],
    );
    run_cmd(&mut cmd).ok();

    // What the charts should show, from the tables.
    let distinct = |table: &str, column: &str| -> Vec<String> {
        let t = output_table(&out, table);
        let set: std::collections::BTreeSet<String> = (0..t.len())
            .map(|r| t.column(column)[r].str().to_string())
            .collect();
        set.into_iter().collect()
    };
    let segments = distinct("resonance", "segment");
    let profiled = distinct("segment_profiles", "segment");
    let forecasters = distinct("forecast_error", "forecaster");
    let drift = output_table(&out, "drift");
    assert!(drift.len() > 0, "the scenario's drift is detected");
    let personas = output_table(&out, "personas");
    let last = (0..personas.len())
        .map(|r| personas.column("window_end")[r].int())
        .max()
        .expect("personas");
    let mut latest_personas: Vec<i64> = (0..personas.len())
        .filter(|&r| personas.column("window_end")[r].int() == last)
        .map(|r| personas.column("persona_id")[r].int())
        .collect();
    latest_personas.sort();
    let resonance = output_table(&out, "resonance");
    let latest = latest_rows(&out, "resonance");
    let (user, (_, rows)) = latest
        .iter()
        .max_by_key(|(u, (w, _))| (*w, std::cmp::Reverse((*u).clone())))
        .unwrap();
    let top = rows
        .iter()
        .find(|&&r| resonance.column("top")[r].bool())
        .map(|&r| resonance.column("segment")[r].str().to_string())
        .expect("a top segment");
    let mut user_segments: Vec<String> = rows
        .iter()
        .map(|&r| resonance.column("segment")[r].str().to_string())
        .collect();
    user_segments.sort();

    let token_file = tmp.path().join("token");
    std::fs::write(&token_file, "dash-token\n").unwrap();
    let server = start(&[
        "--outputs",
        out.to_str().unwrap(),
        "--token-file",
        token_file.to_str().unwrap(),
    ]);
    // The page itself needs no token (it holds no data); the API it reads does.
    let (st, page) = http(&server.addr, "GET", "/", None, "");
    assert_eq!(st, 200);
    assert!(page.contains("<script src=\"/dashboard.js\""), "{page}");
    assert_eq!(http(&server.addr, "GET", "/v1/timeline", None, "").0, 401);

    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR")).join("artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let screenshot = artifacts.join("dashboard.png");
    std::fs::remove_file(&screenshot).ok();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/dashboard.py");
    let result = std::process::Command::new(python)
        .arg(script)
        .arg(chromium)
        .arg(format!("http://{}/", server.addr))
        .arg(user)
        .arg(&screenshot)
        .arg("dash-token")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(
        result.status.success(),
        "the browser run failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let found = json(&stdout);
    let names = |v: &serde_json::Value| -> Vec<String> {
        let mut n: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect();
        n.sort();
        n
    };
    assert_eq!(found["problems"], serde_json::json!([]), "{stdout}");
    assert_eq!(
        found["token_form_hidden"], true,
        "the token from the address was used"
    );
    assert_eq!(found["token_left_in_address"], false);
    assert_eq!(found["empty"], serde_json::json!([]), "every chart drew");
    let charts = &found["charts"];

    let r = &charts["resonance"];
    assert_eq!(names(&r["series"]), segments);
    assert_eq!(r["x_label"], "window end (UTC)");
    assert_eq!(r["y_label"], "mean resonance probability");
    assert!(r["points"].as_u64().unwrap() > 100, "{r}");
    let s = &charts["segment-sizes"];
    assert_eq!(names(&s["series"]), profiled);
    assert_eq!(s["y_label"], "profiles");
    let f = &charts["forecast-error"];
    assert_eq!(names(&f["series"]), forecasters);
    assert_eq!(f["y_label"], "mean absolute error (requests)");
    assert_eq!(f["x_label"], "target window end (UTC)");

    let d = &charts["drift"];
    let mut drawn: Vec<String> = d["drift_events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["scope"].as_str().unwrap().to_string())
        .collect();
    drawn.sort();
    let mut events: Vec<String> = (0..drift.len())
        .map(|r| {
            format!(
                "{}:{}",
                drift.column("scope")[r].str(),
                drift.column("scope_id")[r].str()
            )
        })
        .collect();
    events.sort();
    assert_eq!(
        drawn, events,
        "one mark per drift event, on its scope's row"
    );
    assert_eq!(
        found["drift_table_rows"].as_u64().unwrap() as usize,
        drift.len().min(12)
    );

    let m = &charts["persona-map"];
    let mut drawn: Vec<i64> = m["personas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_i64().unwrap())
        .collect();
    drawn.sort();
    assert_eq!(drawn, latest_personas);
    assert!(m["x_label"]
        .as_str()
        .unwrap()
        .starts_with("first principal axis ("));

    let lookup = &found["lookup"];
    assert_eq!(lookup["user"], user.as_str(), "{lookup}");
    assert_eq!(lookup["title"], user.as_str());
    assert!(
        lookup["headings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h.as_str().unwrap().ends_with(&format!("top segment {top}"))),
        "{lookup}"
    );
    assert_eq!(names(&lookup["bars"]), user_segments);
    assert!(lookup["headings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h == "Policy"));
    assert_eq!(found["toggled_y_label"], "share of top segments");

    let png = std::fs::read(&screenshot).expect("the screenshot was saved");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 20_000,
        "{} bytes",
        png.len()
    );
    eprintln!("dashboard screenshot: {}", screenshot.display());
    drop(server);
}

/// The README's "Serve" section as written: every `curl` line of its shell blocks (but the
/// token example's, whose server binds another address) and its Python blocks (pyarrow off
/// the socket, DuckDB on the downloaded file), run against a server over a backfill, with
/// only the address changed to the test server's. curl gets `--fail-with-body`, so an
/// answer other than 2xx fails the test.
#[test]
fn the_readmes_serve_examples_work_as_written() {
    let Some(python) = std::env::var_os("PERSONAFLOW_PYTHON") else {
        assert!(
            std::env::var("CI").is_err(),
            "PERSONAFLOW_PYTHON must be set in CI"
        );
        eprintln!("skipped: set PERSONAFLOW_PYTHON (scripts/test.sh does)");
        return;
    };
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = readme
        .split("\n## Serve\n")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("a Serve section");
    // Fenced blocks: (language, body).
    let mut blocks: Vec<(String, String)> = Vec::new();
    let mut open: Option<(String, String)> = None;
    for line in section.lines() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(lang)) => open = Some((lang.to_string(), String::new())),
            (Some(_), Some(_)) => blocks.push(open.take().unwrap()),
            (Some((_, body)), None) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, None) => {}
        }
    }
    // Shell commands, continuation lines joined; the `curl` ones, but those that need the
    // token example's server.
    let mut curls = Vec::new();
    for (lang, body) in &blocks {
        if lang != "sh" || body.contains("--token-file") {
            continue;
        }
        let mut command = String::new();
        for line in body.lines() {
            command.push_str(line.trim_end_matches('\\'));
            if line.ends_with('\\') {
                continue;
            }
            if command.trim_start().starts_with("curl ") {
                curls.push(command.clone());
            }
            command.clear();
        }
    }
    let pythons: Vec<&String> = blocks
        .iter()
        .filter(|(l, _)| l == "python")
        .map(|(_, b)| b)
        .collect();
    assert!(curls.len() >= 10, "{curls:#?}");
    assert_eq!(pythons.len(), 2);

    let tmp = tempfile::tempdir().unwrap();
    let out = backfilled_model_free(tmp.path(), 30, 1.0, 3);
    let server = start(&["--outputs", out.to_str().unwrap()]);
    for user in ["u000002", "u000003"] {
        let (st, body) = http(&server.addr, "GET", &format!("/v1/users/{user}"), None, "");
        assert_eq!(st, 200, "the examples' users are in the run: {body}");
    }
    let here = |s: &str| {
        s.replace("localhost:8080", &server.addr)
            .replace("127.0.0.1:8080", &server.addr)
    };
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    for c in &curls {
        let c = here(c).replacen("curl -s", "curl -sS --fail-with-body", 1);
        let r = std::process::Command::new("bash")
            .args(["-c", &c])
            .current_dir(&work)
            .output()
            .unwrap();
        assert!(
            r.status.success(),
            "{c}\n{}\n{}",
            String::from_utf8_lossy(&r.stdout),
            String::from_utf8_lossy(&r.stderr)
        );
    }
    assert!(
        work.join("resonance.parquet").is_file(),
        "the download example wrote its file"
    );
    for p in pythons {
        let r = std::process::Command::new(&python)
            .args(["-c", &here(p)])
            .current_dir(&work)
            .output()
            .unwrap();
        assert!(
            r.status.success(),
            "{p}\n{}\n{}",
            String::from_utf8_lossy(&r.stdout),
            String::from_utf8_lossy(&r.stderr)
        );
        assert!(!r.stdout.is_empty(), "{p} printed nothing");
    }
    drop(server);
}
