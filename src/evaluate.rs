//! `personaflow evaluate`: resonance against a scenario's truth; the drift detector on
//! scenarios, TCPD and NAB.

use crate::common::*;
use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use personaflow_eval::drift as drift_eval;
use personaflow_eval::resonance::{check_same_scenario, evaluate_resonance, read_truth};
use personaflow_eval::shaping;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct EvaluateArgs {
    #[command(subcommand)]
    what: Option<EvaluateCommand>,
    /// The simulation directory (with truth/users.parquet).
    #[arg(long, required = true)]
    scenario: Option<PathBuf>,
    /// The backfill output directory.
    #[arg(long, required = true)]
    output: Option<PathBuf>,
    /// Also write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub(crate) enum EvaluateCommand {
    /// Simulate scenarios with drifts injected at known times (and two without), backfill
    /// them, and report detection delay and false alarms.
    Scenarios(ScenarioArgs),
    /// Run the drift detector on the Turing Change Point Dataset series in DIR and score F1
    /// against the human annotations (margin 5 rows).
    Tcpd(SeriesArgs),
    /// Run the drift detector on the Numenta Anomaly Benchmark series in DIR and score its
    /// detections against the labelled anomaly windows.
    Nab(SeriesArgs),
    /// Simulate scenarios (with and without drift), backfill them, train a Q-learning shaper
    /// on three and compare it with static, predictive and reactive allocation on the three
    /// held out, on a shared-bottleneck link simulator.
    Shaping(ShapingArgs),
    /// Backfill real and synthetic scenarios (DIR/events, DIR/truth/users.parquet) the same
    /// way and compare their window features: KS per feature, MMD, a real-vs-synthetic
    /// classifier's AUC, and train-on-synthetic/test-on-real segment accuracy.
    Synthetic(SyntheticArgs),
}

#[derive(Args, Debug)]
pub(crate) struct SyntheticArgs {
    /// The real scenario (`simulate`'s layout: events/ and truth/users.parquet with segments).
    #[arg(long)]
    real: PathBuf,
    /// The synthetic scenario (`synth`'s output: truth with populations).
    #[arg(long)]
    synthetic: PathBuf,
    /// User-windows of each side the metrics use at most (a seeded sample).
    #[arg(long, default_value_t = personaflow_eval::synthetic::DEFAULT_MAX_ROWS)]
    max_rows: usize,
    /// Seed of the samples and folds.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Job configuration (TOML) of both backfills.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Keep the backfills' outputs here (real/ and synthetic/) instead of a temporary directory.
    #[arg(long)]
    keep: Option<PathBuf>,
    /// Compare only the real user-windows ending at or after this time (RFC 3339 or epoch
    /// ms), e.g. after a drift.
    #[arg(long)]
    real_from: Option<String>,
    /// Compare only the real users of this segment (by the real truth).
    #[arg(long)]
    real_segment: Option<String>,
    /// Also write the report as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub(crate) struct ShapingArgs {
    /// Users per scenario.
    #[arg(long, default_value_t = shaping::ShapingConfig::default().users)]
    users: usize,
    /// Simulated days per scenario (drifts start 6 h in).
    #[arg(long, default_value_t = shaping::ShapingConfig::default().days)]
    days: f64,
    /// Link capacity as a multiple of each scenario's mean demand rate.
    #[arg(long, default_value_t = shaping::DEFAULT_CAPACITY_FACTOR)]
    capacity_factor: f64,
    /// Waste penalty of the shaper's reward.
    #[arg(long, default_value_t = shaping::DEFAULT_WASTE_PENALTY)]
    waste_penalty: f64,
    /// Training epochs.
    #[arg(long, default_value_t = shaping::DEFAULT_EPOCHS)]
    epochs: usize,
    /// Seed of the shaper's exploration.
    #[arg(long, default_value_t = shaping::DEFAULT_SEED)]
    seed: u64,
    /// Job configuration (TOML).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Keep the scenarios and outputs here [default: a temporary directory, removed].
    #[arg(long)]
    keep: Option<PathBuf>,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub(crate) struct SeriesArgs {
    /// The dataset directory.
    dir: PathBuf,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write `{file: [change-point rows]}` here (tcpd only).
    #[arg(long)]
    predictions: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub(crate) struct ScenarioArgs {
    /// Users per scenario (at 300, a segment has only about 5 distinct authenticated users
    /// an hour: too few to test its distribution).
    #[arg(long, default_value_t = 1000)]
    users: usize,
    /// Simulated days per scenario (drifts start 6 h in).
    #[arg(long, default_value_t = 0.5)]
    days: f64,
    /// Job configuration (TOML).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Keep the scenarios and outputs here [default: a temporary directory, removed].
    #[arg(long)]
    keep: Option<PathBuf>,
    /// Requests per window one instance serves, for the scaling recommendations (replaces
    /// `scaling.capacity_per_instance`: the scenarios' segments send 10 to 60 requests a
    /// window).
    #[arg(long, default_value_t = drift_eval::SCENARIO_CAPACITY_PER_INSTANCE)]
    capacity: f64,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Runs `f` in `keep`, or in a temporary directory removed afterwards.
fn in_work_dir<T>(keep: Option<&Path>, f: impl FnOnce(&Path) -> T) -> Result<T> {
    match keep {
        Some(dir) => Ok(f(dir)),
        None => {
            let temp = tempfile_dir()?;
            let out = f(&temp);
            std::fs::remove_dir_all(&temp).ok();
            Ok(out)
        }
    }
}

pub(crate) fn cmd_evaluate(args: EvaluateArgs, quiet: bool) -> Result<()> {
    match args.what {
        Some(EvaluateCommand::Tcpd(a)) => {
            let report = drift_eval::evaluate_tcpd(&a.dir, &drift_eval::series_config())?;
            print!("{}", report.to_table());
            write_json(a.json.as_deref(), &report)?;
            write_json(a.predictions.as_deref(), &report.predictions())
        }
        Some(EvaluateCommand::Nab(a)) => {
            if a.predictions.is_some() {
                bail!("--predictions is for `evaluate tcpd`");
            }
            let report = drift_eval::evaluate_nab(&a.dir, &drift_eval::series_config())?;
            print!("{}", report.to_table());
            write_json(a.json.as_deref(), &report)
        }
        Some(EvaluateCommand::Scenarios(a)) => {
            let mut config = load_config(a.config.as_deref(), None, None)?;
            if !(a.capacity.is_finite() && a.capacity > 0.0) {
                bail!("--capacity must be a positive number, got {}", a.capacity);
            }
            config.scaling.capacity_per_instance = a.capacity;
            let scenarios = drift_eval::default_scenarios();
            let total = scenarios.len();
            let mut done = 0;
            let report = in_work_dir(a.keep.as_deref(), |work| {
                drift_eval::evaluate_scenarios(
                    &scenarios,
                    a.users,
                    a.days,
                    &config,
                    work,
                    &mut |r| {
                        done += 1;
                        if !quiet {
                            eprintln!(
                                "scenario {done}/{total} {}: {} drift events",
                                r.scenario.name, r.events
                            );
                        }
                    },
                )
            })??;
            print!("{}", report.to_table());
            write_json(a.json.as_deref(), &report)
        }
        Some(EvaluateCommand::Shaping(a)) => {
            let job = load_config(a.config.as_deref(), None, None)?;
            if !job.policy.enabled {
                bail!("evaluate shaping needs policies: [policy] enabled = false in the configuration");
            }
            if !(a.capacity_factor.is_finite() && a.capacity_factor > 0.0) {
                bail!(
                    "--capacity-factor must be a positive number, got {}",
                    a.capacity_factor
                );
            }
            if !(a.waste_penalty.is_finite() && a.waste_penalty >= 0.0) {
                bail!(
                    "--waste-penalty must be a number >= 0, got {}",
                    a.waste_penalty
                );
            }
            let config = shaping::ShapingConfig {
                users: a.users,
                days: a.days,
                capacity_factor: a.capacity_factor,
                waste_penalty: a.waste_penalty,
                epochs: a.epochs,
                seed: a.seed,
                ..shaping::ShapingConfig::default()
            };
            let scenarios = shaping::default_shaping_scenarios();
            let total = scenarios.len();
            let mut done = 0;
            let report = in_work_dir(a.keep.as_deref(), |work| {
                shaping::evaluate_shaping(&scenarios, &config, &job, work, &mut |name| {
                    done += 1;
                    if !quiet {
                        eprintln!("scenario {done}/{total} {name}: backfilled");
                    }
                })
            })??;
            print!("{}", report.to_table());
            write_json(a.json.as_deref(), &report)
        }
        Some(EvaluateCommand::Synthetic(a)) => evaluate_synthetic(&a, quiet),
        None => {
            let (Some(scenario), Some(output)) = (args.scenario, args.output) else {
                bail!("evaluate needs --scenario and --output, or one of scenarios, shaping, tcpd, nab");
            };
            let truth = read_truth(&scenario.join("truth").join("users.parquet"))?;
            check_same_scenario(&truth, &output)?;
            let report = evaluate_resonance(&truth, &output)?;
            print!("{}", report.to_table());
            write_json(args.json.as_deref(), &report)
        }
    }
}

/// `evaluate synthetic`: both scenarios through the same backfill, then the metrics.
fn evaluate_synthetic(a: &SyntheticArgs, quiet: bool) -> Result<()> {
    use personaflow_dataflow::backfill::{self, Backfill};
    use personaflow_eval::synthetic::{
        fidelity, read_feature_rows, read_labels, GOAL_AUC, GOAL_TSTR_SHARE,
    };
    for (flag, dir) in [("--real", &a.real), ("--synthetic", &a.synthetic)] {
        if !dir.join("events").is_dir() || !dir.join("truth").join("users.parquet").is_file() {
            bail!(
                "{flag} {}: expected a scenario directory with events/ and truth/users.parquet",
                dir.display()
            );
        }
    }
    let config = load_config(a.config.as_deref(), None, None)?;
    let report = in_work_dir(a.keep.as_deref(), |work| -> Result<_> {
        let mut outputs = Vec::new();
        for (name, dir) in [("real", &a.real), ("synthetic", &a.synthetic)] {
            let output = work.join(name);
            let job = Backfill {
                inputs: vec![dir.join("events").display().to_string()],
                output: output.clone(),
                config: config.clone(),
                overwrite: true,
                interrupt: Some(crate::common::interrupt_flag()?),
                observer: None,
            };
            let summary = backfill::run(&job, crate::common::progress(quiet))?;
            if !quiet {
                eprintln!(
                    "evaluate synthetic: {name}: {} events backfilled",
                    summary.events
                );
            }
            outputs.push(output);
        }
        let from = match &a.real_from {
            Some(t) => chrono::DateTime::parse_from_rfc3339(t)
                .map(|d| d.timestamp_millis())
                .or_else(|_| t.parse::<i64>())
                .map_err(|_| anyhow::anyhow!("--real-from {t:?}: expected RFC 3339 or epoch ms"))?,
            None => i64::MIN,
        };
        let mut real = read_feature_rows(&outputs[0], from)?;
        let synthetic = read_feature_rows(&outputs[1], i64::MIN)?;
        let real_labels = read_labels(&a.real.join("truth").join("users.parquet"))?;
        if let Some(s) = &a.real_segment {
            real.retain(|(u, _)| real_labels.get(u) == Some(s));
        }
        if real.is_empty() {
            bail!("no real user-window is left to compare (--real-from, --real-segment)");
        }
        let synthetic_labels = read_labels(&a.synthetic.join("truth").join("users.parquet"))?;
        Ok(fidelity(
            &real,
            &synthetic,
            &real_labels,
            &synthetic_labels,
            a.max_rows,
            a.seed,
        ))
    })??;
    println!(
        "user-windows compared: {} real, {} synthetic",
        report.rows.0, report.rows.1
    );
    println!("KS per feature (0: same distribution, 1: disjoint):");
    for (name, ks) in &report.ks {
        println!("  {name:<18} {ks:.3}");
    }
    println!(
        "MMD^2 (RBF, bandwidth {:.3}): {:.4}",
        report.mmd_bandwidth, report.mmd2
    );
    println!(
        "real-vs-synthetic classifier AUC: {:.3} (goal <= {GOAL_AUC}: {})",
        report.discriminator_auc,
        if report.auc_goal_met {
            "met"
        } else {
            "not met"
        }
    );
    if report.segments.len() < 2 {
        println!(
            "segments ({}): TSTR and TRTR need two segments or more",
            report.segments.join(", ")
        );
    } else {
        println!(
            "segments ({}): TSTR {:.3}, TRTR {:.3}, ratio {:.3} (goal >= {GOAL_TSTR_SHARE}: {})",
            report.segments.join(", "),
            report.tstr,
            report.trtr,
            if report.trtr > 0.0 {
                report.tstr / report.trtr
            } else {
                0.0
            },
            if report.tstr_goal_met {
                "met"
            } else {
                "not met"
            }
        );
    }
    write_json(a.json.as_deref(), &report)
}
