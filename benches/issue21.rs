//! Issue 21 (Performance) in one run: every point's bench, one after the other, in one
//! process, so one sitting of one machine gives all the numbers.
//!
//! Run with `TMPDIR=/dev/shm cargo bench --bench issue21` (it does nothing under `cargo
//! test`). About ten minutes on a 2-core machine, most of it the million users. In order:
//!
//! 1. points 1 and 2, [`columnar`](../columnar/index.html): the simulated dense day
//!    (`PF_BENCH_USERS` [5,000] users, about a million events) through the Polars script, the
//!    backfill model-free and with the models, a bare Parquet scan and bare inference of the
//!    same sequences at the same batch sizes;
//! 2. point 3, `sparse_windows`: the CDNOW log spread over its days, backfilled with 1-minute
//!    and 1-day windows, alternated, `PF_BENCH_ROUNDS` [5] rounds, model-free and then with
//!    the default models (only the one `PF_BENCH_MODELS` names, where it is set);
//! 3. point 4, `users`: 11,000, 110,000 and 1,100,000 simulated sparse users over a day
//!    (`PF_BENCH_USER_COUNTS`), peak RSS and cost per event;
//! 4. point 5, `stream_e2e`: `PF_BENCH_STREAM_USERS` [3,000] users over `PF_BENCH_HOURS` [10]
//!    hours through the tansu broker (`PF_BENCH_BROKER`), the continuous job's catch-up against
//!    the backfill of the same events (`PF_BENCH_STREAM_ROUNDS` [3] alternated pairs, the median
//!    ratio), then close-to-output latency at half its rate, with
//!    the default `stream.fetch_wait` and with `PF_BENCH_FETCH_WAIT` [10ms]; then all of it
//!    again with the output topics as Arrow IPC (`stream.output_message = "arrow"`);
//! 5. point 6, `inference`: the models' sequences per second by batch size
//!    (`PF_BENCH_PROVIDER` [cpu]; `cuda` where a GPU is lent).
//!
//! Each part prints what it prints on its own (each is also `cargo bench --bench NAME`); a
//! part whose input is missing (the CDNOW log, the broker) says so and the next one runs.
//! Point 7 (results unchanged) is the oracle tests and `scripts/compare-outputs.py`, not a
//! timing.

// Each part is its bench's own file, helpers included, exactly as `cargo bench --bench NAME`
// builds it, so the shared helper files are loaded once per part.
#![allow(clippy::duplicate_mod)]

use std::time::Instant;

#[path = "columnar.rs"]
mod columnar;
#[path = "inference.rs"]
mod inference;
#[path = "sparse_windows.rs"]
mod sparse_windows;
#[path = "stream_e2e.rs"]
mod stream_e2e;
#[path = "users.rs"]
mod users;

/// The continuous job's default user count here (`stream_e2e` alone defaults to 300; the
/// issue's numbers are with 3,000).
const STREAM_USERS: u32 = 3_000;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("issue21: run it with `cargo bench --bench issue21`; skipped");
        return;
    }
    let started = Instant::now();
    let part = |name: &str| {
        println!(
            "\n== issue21: {name} (at {:.0} s)",
            started.elapsed().as_secs_f64()
        );
    };
    part("points 1 and 2: columnar");
    columnar::main();
    part("point 3: sparse_windows");
    sparse_windows::main();
    // The same with the default configuration's models (unless asked for alone).
    if std::env::var_os("PF_BENCH_MODELS").is_none() {
        part("point 3 with the default models: sparse_windows");
        std::env::set_var("PF_BENCH_MODELS", "1");
        sparse_windows::main();
        std::env::remove_var("PF_BENCH_MODELS");
    }
    part("point 4: users");
    users::main();
    part("point 5: stream_e2e");
    // `PF_BENCH_USERS` is the columnar file's user count; the stream has its own. Nothing
    // else runs in this process now: the parts before have joined their threads.
    let stream_users = std::env::var("PF_BENCH_STREAM_USERS")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(STREAM_USERS);
    std::env::set_var("PF_BENCH_USERS", stream_users.to_string());
    stream_e2e::main();
    // The same with the output topics as Arrow IPC (the jobs it starts read the variable).
    part("point 5 with `stream.output_message = \"arrow\"`: stream_e2e");
    std::env::set_var("PERSONAFLOW__STREAM__OUTPUT_MESSAGE", "arrow");
    stream_e2e::main();
    std::env::remove_var("PERSONAFLOW__STREAM__OUTPUT_MESSAGE");
    part("point 6: inference");
    inference::main();
    println!(
        "\n== issue21: done in {:.0} s",
        started.elapsed().as_secs_f64()
    );
}
