//! The outputs open as they are in DuckDB, Polars and pyarrow (Hive partitions included), and
//! the three agree with `run.json`: `tests/interop/check_outputs.py` run on a real backfill.
//!
//! Needs a Python with `requirements-dev.txt` installed, named by `PERSONAFLOW_PYTHON`
//! (`scripts/test.sh`, the README's test command, sets it up). Without it the test says so and
//! is skipped; under CI (`CI=true`) a missing interpreter is a failure.

use crate::support::{backfill, simulate};
use std::path::PathBuf;
use std::process::Command;

#[test]
fn duckdb_polars_and_pyarrow_read_the_outputs() {
    let Some(python) = std::env::var_os("PERSONAFLOW_PYTHON") else {
        assert!(
            std::env::var("CI").is_err(),
            "PERSONAFLOW_PYTHON must be set in CI (run scripts/test.sh)"
        );
        eprintln!(
            "skipped: set PERSONAFLOW_PYTHON (scripts/test.sh does) to check DuckDB/Polars/pyarrow"
        );
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    simulate(&tmp.path().join("sim"), 80, 0.1, 3, &[]).ok();
    let out = tmp.path().join("out");
    backfill(&tmp.path().join("sim").join("events"), &out, &[]).ok();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/check_outputs.py");
    let result = Command::new(python).arg(script).arg(&out).output().unwrap();
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(
        result.status.success(),
        "interop check failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&result.stderr)
    );
    assert!(
        stdout.contains("resonance") && stdout.contains("agree"),
        "{stdout}"
    );
}
