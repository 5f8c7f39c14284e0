//! `personaflow demo`: simulate, backfill, evaluate, in one go.

use crate::common::*;
use crate::simulate::simulate;
use anyhow::Result;
use clap::Args;
use personaflow_dataflow::backfill::{self, Backfill};
use personaflow_eval::resonance::{evaluate_resonance, read_truth};
use personaflow_sim::SimulationConfig;
use std::path::PathBuf;

/// Users simulated by `personaflow demo` unless told otherwise.
const DEMO_USERS: usize = 1_000;
/// Days simulated by `personaflow demo` unless told otherwise.
const DEMO_DAYS: f64 = 1.0;
/// Seed of `personaflow demo` unless told otherwise.
const DEMO_SEED: u64 = 42;

#[derive(Args, Debug)]
pub(crate) struct DemoArgs {
    /// Number of users.
    #[arg(long, default_value_t = DEMO_USERS)]
    users: usize,
    /// Simulated days.
    #[arg(long, default_value_t = DEMO_DAYS)]
    days: f64,
    /// Random seed.
    #[arg(long, default_value_t = DEMO_SEED)]
    seed: u64,
    /// Sparse activity: every user starts this many sessions a day on average, no heartbeats
    /// (as `simulate --sessions-per-day`).
    #[arg(long, value_name = "N")]
    sessions_per_day: Option<f64>,
    /// Every user's median session length in minutes instead of its segment's 2 to 55.
    #[arg(long, value_name = "M")]
    session_minutes: Option<f64>,
    /// Where to keep the scenario and outputs [default: a temporary directory, removed].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Job configuration (TOML).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Worker threads [default: 2].
    #[arg(long, short)]
    workers: Option<usize>,
}

pub(crate) fn cmd_demo(args: DemoArgs, quiet: bool) -> Result<()> {
    let temp;
    let root = match &args.out {
        Some(dir) => dir.clone(),
        None => {
            temp = tempfile_dir()?;
            temp.clone()
        }
    };
    let scenario = root.join("scenario");
    let output = root.join("output");
    let sim = SimulationConfig {
        users: args.users,
        days: args.days,
        seed: args.seed,
        sessions_per_day: args.sessions_per_day,
        session_minutes: args.session_minutes,
        overwrite: true,
        ..SimulationConfig::default()
    };
    simulate(&sim, &scenario, quiet)?;
    let config = load_config(args.config.as_deref(), None, args.workers)?;
    let job = Backfill {
        inputs: vec![scenario.join("events").display().to_string()],
        output: output.clone(),
        config,
        overwrite: true,
        interrupt: Some(interrupt_flag()?),
        observer: None,
    };
    let summary = backfill::run(&job, progress(quiet))?;
    let truth = read_truth(&scenario.join("truth").join("users.parquet"))?;
    let report = evaluate_resonance(&truth, &output)?;
    println!(
        "personaflow demo: {} users over {} days, {} events, {} windows, backfill {:.1}s ({:.0} events/s)",
        args.users, args.days, summary.events, summary.windows, summary.elapsed_secs, summary.events_per_sec
    );
    println!("resonance by true segment (held out = unauthenticated users, scored on their last window):");
    print!("{}", report.to_table());
    if let Some(forecaster) = &summary.models.forecaster {
        let by_h = &summary.forecast_errors;
        let cells = |f: fn(&personaflow_dataflow::graph::HorizonAccuracy) -> f64| {
            by_h.values()
                .map(|e| format!("{:.2}", f(e)))
                .collect::<Vec<_>>()
                .join(" ")
        };
        println!(
            "demand forecasts ({forecaster}): {} scored; mean absolute error at h = 1..{}: \
             requests {}, kilobytes {}",
            by_h.values().map(|e| e.forecasts).sum::<u64>(),
            by_h.len(),
            cells(|e| e.mae_requests),
            cells(|e| e.mae_bytes / 1000.0)
        );
    }
    if job.config.policy.enabled {
        let secs = job.config.window_spec().len_ms() as f64 / 1_000.0;
        let f = personaflow_eval::shaping::feedback_summary(&output, secs)?;
        println!(
            "policies: {} allocations judged against the next window's demand: {:.1}% of the \
             demand served within its latency target, {:.1}% of allocations wholly; {:.1}% of \
             the allocated bytes unused",
            f.judged,
            100.0 * f.served_share,
            100.0 * f.within_target,
            100.0 * f.waste_share
        );
    }
    if args.out.is_some() {
        println!(
            "scenario: {}\noutputs:  {}",
            scenario.display(),
            output.display()
        );
    } else {
        std::fs::remove_dir_all(&root).ok();
    }
    Ok(())
}
