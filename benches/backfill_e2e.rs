//! End-to-end backfill benchmark on simulator data.
//!
//! Run with `cargo bench --bench backfill_e2e` (it does nothing under `cargo test`). For each
//! dataset (a small one of about 1 million events and a large one of at least 10 million, by
//! default the same users over 1/10 and all of the simulated days) it:
//!
//! 1. simulates the events with the release binary (`personaflow simulate`) into
//!    `<target>/bench-data/sim-u<users>-d<days>-s<seed>/`, or reuses that directory when a
//!    previous run completed it (delete it to regenerate);
//! 2. scans every event file in two ways in this process, single-threaded, as the baselines:
//!    a plain `parquet`-crate scan decoding *all* columns into Arrow record batches, and a scan
//!    through the project's own readers (`resolve_inputs` + `open_reader` +
//!    `EventReader::next_chunk`: decoding, validation and conversion into `Event`s, what the
//!    backfill's reader thread does);
//! 3. runs `personaflow backfill` on the same files as a separate process, so that its
//!    `run.json` reports its own peak RSS (`VmHWM`), events/s and per-block window timings.
//!
//! It prints a table and writes everything as JSON to
//! `<target>/bench-data/backfill_e2e-<datasets>-s<seed>.json` (e.g.
//! `backfill_e2e-small-u14000-d0.4_large-u14000-d4-s42.json` with the defaults).
//!
//! Environment variables (defaults in brackets):
//! `PF_BENCH_USERS` [`DEFAULT_USERS`] and `PF_BENCH_DAYS` [`DEFAULT_DAYS`] size the large
//! dataset; `PF_BENCH_SMALL_USERS` [same users] and `PF_BENCH_SMALL_DAYS` [days / 10] the
//! small one; `PF_BENCH_SEED` [42]; `PF_BENCH_WORKERS` [the binary's default];
//! `PF_BENCH_RUNS` [`small,large`] which datasets to run.

use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use personaflow_io::source::{
    open_reader, resolve_inputs, Chunk, IngestMapping, DEFAULT_CHUNK_ROWS,
};
use serde_json::{json, Value};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Users of the large dataset unless `PF_BENCH_USERS` says otherwise. The simulator gives
/// about 190 events per user and day (measured: `personaflow simulate --users 1000 --days 1`
/// wrote 193,827 events), so 14,000 users over 4 days are about 11.2 million events, and over
/// 0.4 days about 1.0 million.
const DEFAULT_USERS: usize = 14_000;
/// Simulated days of the large dataset unless `PF_BENCH_DAYS` says otherwise (a multiple of
/// four, so that each quarter of the run covers whole days and the same daily cycle).
const DEFAULT_DAYS: f64 = 4.0;
/// The small dataset simulates this fraction of the large one's days (same users), so the two
/// peak-memory figures differ in history length only.
const SMALL_DAYS_FRACTION: f64 = 0.1;
/// Seed of the simulations unless `PF_BENCH_SEED` says otherwise.
const DEFAULT_SEED: u64 = 42;
/// Marker written into a simulation directory once it is complete.
const SIM_MARKER: &str = "bench-simulation.json";
/// The release binary, built by `cargo bench` for this bench target. It is copied into
/// `<target>/bench-data/` at the start, and every run uses the copy, so that a rebuild in the
/// (shared) target directory during the benchmark cannot mix two binaries in one report.
const BINARY: &str = env!("CARGO_BIN_EXE_personaflow");
/// Name of the copy of [`BINARY`].
const BINARY_COPY: &str = "personaflow-under-test";

/// One dataset to simulate and backfill.
#[derive(Clone, Debug)]
struct Dataset {
    name: &'static str,
    users: usize,
    days: f64,
    seed: u64,
}

impl Dataset {
    fn dir_name(&self) -> String {
        format!("sim-u{}-d{}-s{}", self.users, self.days, self.seed)
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid value")),
        Err(_) => default,
    }
}

/// `<target>`: `CARGO_TARGET_DIR` when set, else two levels above the binary
/// (`<target>/release/personaflow`).
fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        let dir = PathBuf::from(dir);
        return if dir.is_absolute() {
            dir
        } else {
            Path::new(env!("CARGO_MANIFEST_DIR")).join(dir)
        };
    }
    Path::new(BINARY)
        .parent()
        .and_then(Path::parent)
        .expect("the binary lies in <target>/<profile>/")
        .to_path_buf()
}

/// Rounds to 6 decimals (so that 4 days / 10 is `0.4`, in directory names too).
fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// Linux `USER_HZ`: the unit of the CPU times in `/proc/*/stat`.
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// CPU seconds (user, system) of this process's waited-for children, from `/proc/self/stat`
/// (`cutime`, `cstime`); `None` off Linux.
fn children_cpu_secs() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `cutime` and `cstime` are fields 16 and 17 of the whole line, 14 and 15 of `rest`.
    let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
    Some((
        ticks(13)? / CLOCK_TICKS_PER_SEC,
        ticks(14)? / CLOCK_TICKS_PER_SEC,
    ))
}

fn secs_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

/// Where and with what the benchmark runs.
#[derive(Clone, Debug)]
struct BenchEnv {
    /// The copy of the binary under test.
    bin: PathBuf,
    /// `<target>/bench-data`.
    root: PathBuf,
    /// `--workers` of the backfill, when set.
    workers: Option<usize>,
}

/// Simulates `ds` into `root/<dir_name>` unless a completed simulation is there already.
fn ensure_simulation(ds: &Dataset, env: &BenchEnv) -> (PathBuf, Value) {
    let dir = env.root.join(ds.dir_name());
    let marker = dir.join(SIM_MARKER);
    if let Ok(text) = std::fs::read_to_string(&marker) {
        let info: Value = serde_json::from_str(&text).expect("valid simulation marker");
        eprintln!("[{}] reusing simulation {}", ds.name, dir.display());
        return (dir, info);
    }
    eprintln!(
        "[{}] simulating {} users x {} days (seed {}) into {}",
        ds.name,
        ds.users,
        ds.days,
        ds.seed,
        dir.display()
    );
    let started = Instant::now();
    let out = Command::new(&env.bin)
        .args(["simulate", "--users", &ds.users.to_string()])
        .args([
            "--days",
            &ds.days.to_string(),
            "--seed",
            &ds.seed.to_string(),
        ])
        .arg("--out")
        .arg(&dir)
        .arg("--overwrite")
        .output()
        .expect("runs personaflow simulate");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "personaflow simulate failed:\n{stderr}"
    );
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.starts_with("simulate:"))
        .unwrap_or_default()
        .to_string();
    let info = json!({
        "users": ds.users,
        "days": ds.days,
        "seed": ds.seed,
        "simulate_secs": secs_since(started),
        "simulate_report": line,
    });
    std::fs::write(
        &marker,
        serde_json::to_vec_pretty(&info).expect("serialises"),
    )
    .expect("writes the simulation marker");
    (dir, info)
}

/// Result of one bare scan.
#[derive(Clone, Copy, Debug, Default)]
struct Scan {
    rows: u64,
    secs: f64,
}

/// Decodes every column of every Parquet file under `events` into Arrow record batches.
fn parquet_scan(files: &[PathBuf]) -> Scan {
    let started = Instant::now();
    let mut rows = 0u64;
    for path in files {
        let file = File::open(path).expect("opens an event file");
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .expect("reads the Parquet footer")
            .with_batch_size(DEFAULT_CHUNK_ROWS)
            .build()
            .expect("builds the reader");
        for batch in reader {
            let batch = batch.expect("decodes a record batch");
            rows += batch.num_rows() as u64;
            std::hint::black_box(&batch);
        }
    }
    Scan {
        rows,
        secs: secs_since(started),
    }
}

/// Reads every event file through the project's readers (identity mapping), as the
/// backfill's reader thread does, and counts the events.
fn reader_scan(events_dir: &Path) -> Scan {
    let started = Instant::now();
    let mapping = IngestMapping::identity();
    let files = resolve_inputs(&[events_dir.display().to_string()], &mapping)
        .expect("resolves the event files");
    let mut chunk = Chunk::default();
    let mut rows = 0u64;
    for file in &files {
        let mut reader = open_reader(file, &mapping, DEFAULT_CHUNK_ROWS).expect("opens a reader");
        while reader.next_chunk(&mut chunk).expect("reads a chunk") {
            rows += chunk.events.len() as u64;
            std::hint::black_box(&chunk.events);
            assert!(chunk.rejects.is_empty(), "simulated events are all valid");
            chunk.clear();
        }
    }
    Scan {
        rows,
        secs: secs_since(started),
    }
}

/// The Parquet event files of a simulation, in path order.
fn event_files(events_dir: &Path) -> Vec<PathBuf> {
    let mapping = IngestMapping::identity();
    resolve_inputs(&[events_dir.display().to_string()], &mapping)
        .expect("resolves the event files")
        .into_iter()
        .map(|f| f.path)
        .collect()
}

/// What the backfill process did, seen from outside.
#[derive(Clone, Copy, Debug)]
struct Process {
    wall_secs: f64,
    /// User and system CPU seconds of the process (all its threads).
    cpu_secs: Option<(f64, f64)>,
}

/// Runs `personaflow backfill` as its own process and returns its `run.json`, wall and CPU
/// time.
fn backfill(ds: &Dataset, events_dir: &Path, env: &BenchEnv) -> (Value, Process) {
    let output = env.root.join("out").join(ds.name);
    let mut cmd = Command::new(&env.bin);
    cmd.args(["--quiet", "backfill", "--overwrite", "--input"])
        .arg(events_dir)
        .arg("--output")
        .arg(&output);
    if let Some(w) = env.workers {
        cmd.args(["--workers", &w.to_string()]);
    }
    eprintln!("[{}] backfill: {cmd:?}", ds.name);
    let cpu_before = children_cpu_secs();
    let started = Instant::now();
    let out = cmd.output().expect("runs personaflow backfill");
    let wall = secs_since(started);
    let cpu_secs = match (cpu_before, children_cpu_secs()) {
        (Some((u0, s0)), Some((u1, s1))) => Some((u1 - u0, s1 - s0)),
        _ => None,
    };
    assert!(
        out.status.success(),
        "personaflow backfill failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = output.join("run.json");
    let text = std::fs::read_to_string(&path).expect("reads run.json");
    let process = Process {
        wall_secs: wall,
        cpu_secs,
    };
    (
        serde_json::from_str(&text).expect("valid run.json"),
        process,
    )
}

/// Per-window and per-event cost of the blocks of one quarter of the run.
fn quarter_cost(blocks: &[Value]) -> Value {
    let sum = |key: &str| -> f64 { blocks.iter().map(|b| b[key].as_f64().unwrap_or(0.0)).sum() };
    let (secs, windows, events) = (sum("secs"), sum("windows"), sum("events"));
    json!({
        "blocks": blocks.len(),
        "windows": windows,
        "events": events,
        "secs": secs,
        "ms_per_window": 1e3 * secs / windows.max(1.0),
        "us_per_event": 1e6 * secs / events.max(1.0),
    })
}

/// The cost of a window in the first against the last quarter of the run's window blocks.
fn window_growth(run: &Value) -> Value {
    let blocks = run["window_blocks"].as_array().cloned().unwrap_or_default();
    let q = blocks.len() / 4;
    if q == 0 {
        return json!({ "blocks": blocks.len(), "note": "fewer than 4 window blocks" });
    }
    let first = quarter_cost(&blocks[..q]);
    let last = quarter_cost(&blocks[blocks.len() - q..]);
    let ratio = |key: &str| last[key].as_f64().unwrap_or(0.0) / first[key].as_f64().unwrap_or(1.0);
    json!({
        "blocks": blocks.len(),
        "first_quarter": first,
        "last_quarter": last,
        "ms_per_window_last_over_first": ratio("ms_per_window"),
        "us_per_event_last_over_first": ratio("us_per_event"),
    })
}

/// Everything measured on one dataset.
fn run_dataset(ds: &Dataset, env: &BenchEnv) -> Value {
    let (dir, sim) = ensure_simulation(ds, env);
    let events_dir = dir.join("events");
    let files = event_files(&events_dir);
    let input_bytes: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum();
    // The plain scan goes first and also brings the files into the page cache.
    eprintln!("[{}] plain parquet scan of {} files", ds.name, files.len());
    let plain = parquet_scan(&files);
    eprintln!("[{}] project reader scan", ds.name);
    let readers = reader_scan(&events_dir);
    assert_eq!(plain.rows, readers.rows, "both scans see every row");
    let (run, process) = backfill(ds, &events_dir, env);
    let wall = process.wall_secs;
    let cpu = process.cpu_secs.map(|(u, s)| u + s);
    let events = run["events"].as_u64().unwrap_or(0);
    assert_eq!(events, readers.rows, "the backfill accepts every event");
    let elapsed = run["elapsed_secs"].as_f64().unwrap_or(wall);
    // One `features` row per active user and window.
    let user_windows = run["rows_written"]["features"].as_f64().unwrap_or(f64::NAN);
    json!({
        "dataset": ds.name,
        "users": ds.users,
        "days": ds.days,
        "seed": ds.seed,
        "simulation_dir": dir.display().to_string(),
        "simulation": sim,
        "files": files.len(),
        "input_bytes": input_bytes,
        "events": events,
        "windows": run["windows"],
        "plain_parquet_scan": {
            "secs": plain.secs,
            "rows_per_sec": plain.rows as f64 / plain.secs,
        },
        "reader_scan": {
            "secs": readers.secs,
            "events_per_sec": readers.rows as f64 / readers.secs,
        },
        "backfill": {
            "elapsed_secs": elapsed,
            "process_wall_secs": wall,
            "process_cpu_secs": cpu,
            "process_cpu_user_sys_secs": process.cpu_secs,
            "cpu_utilisation": cpu.map(|c| c / wall),
            "events_per_sec": run["events_per_sec"],
            "peak_rss_bytes": run["peak_rss_bytes"],
            "workers": run["workers"],
            "rows_written": run["rows_written"],
        },
        "user_windows": user_windows,
        "backfill_us_per_user_window": 1e6 * elapsed / user_windows,
        "backfill_over_plain_parquet_scan": elapsed / plain.secs,
        "backfill_over_reader_scan": elapsed / readers.secs,
        "window_cost": window_growth(&run),
    })
}

/// The work tree's commit when the benchmark ran, and its modified tracked files (a binary
/// built from this tree includes those changes); nulls without git.
fn provenance() -> Value {
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            .arg("-C")
            .arg(env!("CARGO_MANIFEST_DIR"))
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim_end().to_string())
    };
    let modified: Option<Vec<String>> = git(&["status", "--porcelain", "--untracked-files=no"])
        .map(|s| {
            s.lines()
                .map(|l| l.get(3..).unwrap_or(l).to_string())
                .collect()
        });
    json!({
        "git_head": git(&["rev-parse", "--short", "HEAD"]),
        "modified_tracked_files": modified,
    })
}

/// Nproc, memory and CPU model of this machine.
fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kb = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok());
    json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "cpu_model": model,
        "mem_total_bytes": mem_kb.map(|k| k * 1024),
    })
}

fn mib(v: &Value) -> String {
    v.as_f64()
        .map(|b| format!("{:.0} MiB", b / 1_048_576.0))
        .unwrap_or_else(|| "n/a".into())
}

fn num(v: &Value, digits: usize) -> String {
    v.as_f64()
        .map(|x| format!("{x:.digits$}"))
        .unwrap_or_else(|| "n/a".into())
}

fn print_table(results: &[Value], summary: &Value) {
    println!();
    println!("backfill_e2e (binary built from {BINARY})");
    let header = [
        "dataset",
        "events",
        "windows",
        "scan pq s",
        "scan rd s",
        "backfill s",
        "events/s",
        "cpu/wall",
        "x pq scan",
        "x rd scan",
        "peak RSS",
        "ms/win Q1",
        "ms/win Q4",
        "Q4/Q1 win",
        "Q4/Q1 evt",
    ];
    println!(
        "{}",
        header
            .iter()
            .map(|h| format!("{h:>11}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    for r in results {
        let g = &r["window_cost"];
        let cells = [
            r["dataset"].as_str().unwrap_or("").to_string(),
            r["events"].to_string(),
            r["windows"].to_string(),
            num(&r["plain_parquet_scan"]["secs"], 2),
            num(&r["reader_scan"]["secs"], 2),
            num(&r["backfill"]["elapsed_secs"], 2),
            num(&r["backfill"]["events_per_sec"], 0),
            num(&r["backfill"]["cpu_utilisation"], 2),
            num(&r["backfill_over_plain_parquet_scan"], 2),
            num(&r["backfill_over_reader_scan"], 2),
            mib(&r["backfill"]["peak_rss_bytes"]),
            num(&g["first_quarter"]["ms_per_window"], 2),
            num(&g["last_quarter"]["ms_per_window"], 2),
            num(&g["ms_per_window_last_over_first"], 2),
            num(&g["us_per_event_last_over_first"], 2),
        ];
        println!(
            "{}",
            cells
                .iter()
                .map(|c| format!("{c:>11}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    if let Some(r) = summary["peak_rss_large_over_small"].as_f64() {
        println!(
            "peak RSS large/small: {r:.2} (events large/small: {})",
            num(&summary["events_large_over_small"], 2)
        );
    }
    println!(
        "columns: scan pq = plain parquet-crate scan of all columns; scan rd = project readers \
         (decode + validate + Event); x = backfill elapsed / scan; Q1/Q4 = first/last quarter \
         of run.json window_blocks (win = ms per window, evt = us per event); cpu/wall = backfill process CPU seconds / wall seconds"
    );
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("backfill_e2e: run it with `cargo bench --bench backfill_e2e`; skipped");
        return;
    }
    let users = env_or("PF_BENCH_USERS", DEFAULT_USERS);
    let days = env_or("PF_BENCH_DAYS", DEFAULT_DAYS);
    let seed = env_or("PF_BENCH_SEED", DEFAULT_SEED);
    let small_users = env_or("PF_BENCH_SMALL_USERS", users);
    let small_days = env_or("PF_BENCH_SMALL_DAYS", round6(days * SMALL_DAYS_FRACTION));
    let workers: Option<usize> = std::env::var("PF_BENCH_WORKERS")
        .ok()
        .map(|v| v.parse().expect("PF_BENCH_WORKERS is a number"));
    let runs = std::env::var("PF_BENCH_RUNS").unwrap_or_else(|_| "small,large".into());
    let datasets: Vec<Dataset> = runs
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|name| match name {
            "small" => Dataset {
                name: "small",
                users: small_users,
                days: small_days,
                seed,
            },
            "large" => Dataset {
                name: "large",
                users,
                days,
                seed,
            },
            other => panic!("PF_BENCH_RUNS: unknown dataset {other:?} (small, large)"),
        })
        .collect();

    let root = target_dir().join("bench-data");
    std::fs::create_dir_all(&root).expect("creates bench-data");
    let bin = root.join(BINARY_COPY);
    std::fs::copy(BINARY, &bin).expect("copies the binary under test");
    let env = BenchEnv { bin, root, workers };
    let started = Instant::now();
    let results: Vec<Value> = datasets.iter().map(|ds| run_dataset(ds, &env)).collect();
    let find = |name: &str| results.iter().find(|r| r["dataset"] == name);
    let mut summary = json!({});
    if let (Some(s), Some(l)) = (find("small"), find("large")) {
        let ratio =
            |a: &Value, b: &Value| a.as_f64().unwrap_or(f64::NAN) / b.as_f64().unwrap_or(f64::NAN);
        summary = json!({
            "peak_rss_large_over_small": ratio(&l["backfill"]["peak_rss_bytes"], &s["backfill"]["peak_rss_bytes"]),
            "events_large_over_small": ratio(&l["events"], &s["events"]),
            "events_per_sec_large_over_small": ratio(&l["backfill"]["events_per_sec"], &s["backfill"]["events_per_sec"]),
        });
    }
    let unix_secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let report = json!({
        "bench": "backfill_e2e",
        "finished_unix_secs": unix_secs,
        "total_secs": secs_since(started),
        "binary": BINARY,
        "binary_bytes": std::fs::metadata(&env.bin).map(|m| m.len()).ok(),
        "machine": machine(),
        "source": provenance(),
        "datasets": results,
        "summary": summary,
    });
    let tag: Vec<String> = datasets
        .iter()
        .map(|d| format!("{}-u{}-d{}", d.name, d.users, d.days))
        .collect();
    let path = env
        .root
        .join(format!("backfill_e2e-{}-s{seed}.json", tag.join("_")));
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&report).expect("serialises"),
    )
    .expect("writes the results");
    print_table(&results, &summary);
    println!("results: {}", path.display());
}
