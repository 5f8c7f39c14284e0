//! `personaflow simulate`: a seeded scenario with ground truth.

use anyhow::{Context as _, Result};
use clap::Args;
use indicatif::ProgressBar;
use personaflow_sim::{simulate_to_dir, DriftSpec, SimulationConfig};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Args, Debug)]
pub(crate) struct SimulateArgs {
    /// Number of users.
    #[arg(long, default_value_t = personaflow_sim::DEFAULT_USERS)]
    users: usize,
    /// Simulated days (fractions allowed).
    #[arg(long, default_value_t = personaflow_sim::DEFAULT_DAYS)]
    days: f64,
    /// Random seed.
    #[arg(long, default_value_t = personaflow_sim::DEFAULT_SEED)]
    seed: u64,
    /// Output directory (events/ and truth/ are written under it).
    #[arg(long)]
    out: PathBuf,
    /// Share of users that are authenticated (their events carry their segment).
    #[arg(long, default_value_t = personaflow_sim::DEFAULT_AUTHENTICATED_SHARE)]
    authenticated_share: f64,
    /// Sparse activity: every user starts this many sessions a day on average instead of its
    /// segment's 2 to 12, and devices send no heartbeats (users active a few times a day).
    #[arg(long, value_name = "N")]
    sessions_per_day: Option<f64>,
    /// Every user's median session length in minutes instead of its segment's 2 to 55.
    #[arg(long, value_name = "M")]
    session_minutes: Option<f64>,
    /// Drift injection SEGMENT@OFFSET[+RAMP]:KIND=MAGNITUDE, e.g. gamer@36h:bytes=3.0, or
    /// gamer@36h+2h:pace=3 for a roll-out to the segment's users over 2 h (repeatable).
    #[arg(long)]
    drift: Vec<String>,
    /// Replace an existing events directory.
    #[arg(long)]
    overwrite: bool,
}

pub(crate) fn simulation_config(args: &SimulateArgs) -> Result<SimulationConfig> {
    let drifts = args
        .drift
        .iter()
        .map(|d| d.parse::<DriftSpec>().map_err(anyhow::Error::from))
        .collect::<Result<Vec<_>>>()
        .context("invalid --drift")?;
    Ok(SimulationConfig {
        users: args.users,
        days: args.days,
        seed: args.seed,
        authenticated_share: args.authenticated_share,
        sessions_per_day: args.sessions_per_day,
        session_minutes: args.session_minutes,
        drifts,
        overwrite: args.overwrite,
        ..SimulationConfig::default()
    })
}

pub(crate) fn simulate(config: &SimulationConfig, out: &Path, quiet: bool) -> Result<()> {
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        let b = ProgressBar::new_spinner();
        b.set_message("simulating");
        b
    };
    let started = Instant::now();
    let summary = simulate_to_dir(config, out, &mut |n| bar.set_message(format!("{n} events")))?;
    bar.finish_and_clear();
    if !quiet {
        eprintln!(
            "simulate: {} users ({} authenticated), {} events in {} files in {:.1}s -> {}",
            summary.users,
            summary.authenticated_users,
            summary.events,
            summary.event_files.len(),
            started.elapsed().as_secs_f64(),
            out.display()
        );
    }
    Ok(())
}

/// `personaflow simulate`.
pub(crate) fn cmd_simulate(args: SimulateArgs, quiet: bool) -> Result<()> {
    let config = simulation_config(&args)?;
    simulate(&config, &args.out, quiet)
}
