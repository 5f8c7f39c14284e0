//! `personaflow`: learns how users behave from event logs and computes per-user features,
//! latent profiles, segment profiles, resonance, demand forecasts, personas, drift and scaling
//! advice as Parquet tables, over files (`backfill`) or a Kafka topic (`run`). One module of
//! the library crates per command; this binary parses flags, shows progress and prints.

use anyhow::{bail, Context as _, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use personaflow_dataflow::backfill::{self, Backfill, Progress, ProgressUpdate};
use personaflow_dataflow::config::Config;
use personaflow_eval::drift as drift_eval;
use personaflow_eval::resonance::{check_same_scenario, evaluate_resonance, read_truth};
use personaflow_kafka::produce::{produce, Produce};
use personaflow_kafka::{self as stream, StartInfo, StreamJob, StreamReporter, StreamStatus};
use personaflow_sim::{simulate_to_dir, DriftSpec, SimulationConfig};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;
use std::time::Instant;

/// Users simulated by `personaflow demo` unless told otherwise.
const DEMO_USERS: usize = 1_000;
/// Days simulated by `personaflow demo` unless told otherwise.
const DEMO_DAYS: f64 = 1.0;
/// Seed of `personaflow demo` unless told otherwise.
const DEMO_SEED: u64 = 42;

#[derive(Parser, Debug)]
#[command(
    name = "personaflow",
    version,
    about = "Incremental behavioural profiles, segment resonance and personas over event logs",
    long_about = "personaflow reads user events (Parquet, CSV/TSV, NDJSON, or other schemas through an \
ingest mapping), computes per user and time window behavioural features, latent profiles, rolling \
segment profiles and each user's resonance to every segment, on an incremental \
timely/differential dataflow, and writes them as Hive-partitioned Parquet tables.\n\n\
Start with `personaflow demo`."
)]
struct Cli {
    /// Print nothing but errors.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the dataflow over event files and write the output tables.
    Backfill(BackfillArgs),
    /// Generate a seeded scenario of users in named segments, with ground truth.
    Simulate(SimulateArgs),
    /// Simulate a small scenario, backfill it, and report resonance against the truth.
    Demo(DemoArgs),
    /// Score a backfill's resonance against a simulation's ground truth (`--scenario`,
    /// `--output`), or the drift detector (`scenarios`, `tcpd DIR`, `nab DIR`).
    Evaluate(EvaluateArgs),
    /// Run the dataflow continuously over a Kafka topic (until SIGINT/SIGTERM).
    Run(RunArgs),
    /// Write event files to a Kafka topic as JSON events (for tests, load tests, replays).
    Produce(ProduceArgs),
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Bootstrap brokers, HOST:PORT separated by commas [config: stream.brokers].
    #[arg(long)]
    brokers: Option<String>,
    /// Input topic, one JSON event per message [config: stream.topic].
    #[arg(long)]
    topic: Option<String>,
    /// Consumer group [config: stream.group].
    #[arg(long)]
    group: Option<String>,
    /// Output directory (tables, late events, checkpoint) [config: stream.output].
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Job configuration (TOML); PERSONAFLOW__SECTION__KEY variables override it.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Ingest mapping (TOML) for messages not in the canonical schema.
    #[arg(long, short)]
    mapping: Option<PathBuf>,
    /// Worker threads, one consumer each [default: 2].
    #[arg(long, short)]
    workers: Option<usize>,
    /// Prometheus endpoint HOST:PORT ("" turns it off) [config: stream.metrics_addr].
    #[arg(long)]
    metrics_addr: Option<String>,
    /// Stop at the partitions' ends as of the start, closing every window (a bounded run).
    #[arg(long)]
    until_end: bool,
}

#[derive(Args, Debug)]
struct ProduceArgs {
    /// Bootstrap brokers, HOST:PORT separated by commas.
    #[arg(long)]
    brokers: String,
    /// Topic (must exist).
    #[arg(long)]
    topic: String,
    /// Event files, directories or globs.
    #[arg(long, short, required = true, num_args = 1..)]
    input: Vec<String>,
    /// Ingest mapping (TOML) of the inputs.
    #[arg(long, short)]
    mapping: Option<PathBuf>,
    /// Events per second [default: as fast as the broker takes them].
    #[arg(long)]
    rate: Option<f64>,
    /// Stop after this many events.
    #[arg(long)]
    limit: Option<u64>,
}

#[derive(Args, Debug)]
struct BackfillArgs {
    /// Input files, directories or globs (Parquet, CSV, TSV, NDJSON, Zeek logs).
    #[arg(long, short, required = true, num_args = 1..)]
    input: Vec<String>,
    /// Output directory; must not exist or be empty (see --overwrite).
    #[arg(long, short)]
    output: PathBuf,
    /// Job configuration (TOML); PERSONAFLOW__SECTION__KEY variables override it.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Ingest mapping (TOML) for inputs not in the canonical schema.
    #[arg(long, short)]
    mapping: Option<PathBuf>,
    /// Worker threads [default: 2].
    #[arg(long, short)]
    workers: Option<usize>,
    /// Replace a non-empty output directory.
    #[arg(long)]
    overwrite: bool,
}

#[derive(Args, Debug)]
struct SimulateArgs {
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
    /// Drift injection SEGMENT@OFFSET[+RAMP]:KIND=MAGNITUDE, e.g. gamer@36h:bytes=3.0, or
    /// gamer@36h+2h:pace=3 for a roll-out to the segment's users over 2 h (repeatable).
    #[arg(long)]
    drift: Vec<String>,
    /// Replace an existing events directory.
    #[arg(long)]
    overwrite: bool,
}

#[derive(Args, Debug)]
struct DemoArgs {
    /// Number of users.
    #[arg(long, default_value_t = DEMO_USERS)]
    users: usize,
    /// Simulated days.
    #[arg(long, default_value_t = DEMO_DAYS)]
    days: f64,
    /// Random seed.
    #[arg(long, default_value_t = DEMO_SEED)]
    seed: u64,
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

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
struct EvaluateArgs {
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
enum EvaluateCommand {
    /// Simulate scenarios with drifts injected at known times (and two without), backfill
    /// them, and report detection delay and false alarms.
    Scenarios(ScenarioArgs),
    /// Run the drift detector on the Turing Change Point Dataset series in DIR and score F1
    /// against the human annotations (margin 5 rows).
    Tcpd(SeriesArgs),
    /// Run the drift detector on the Numenta Anomaly Benchmark series in DIR and score its
    /// detections against the labelled anomaly windows.
    Nab(SeriesArgs),
}

#[derive(Args, Debug)]
struct SeriesArgs {
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
struct ScenarioArgs {
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

struct Bar(ProgressBar);

impl Progress for Bar {
    fn start(&self, total_bytes: u64, files: usize) {
        self.0.set_length(total_bytes);
        self.0.set_message(format!("{files} files"));
    }
    fn update(&self, u: &ProgressUpdate) {
        self.0.set_position(u.bytes_done);
        let newest = u
            .newest_window_end_ms
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
            .unwrap_or_default();
        self.0.set_message(format!(
            "{} events, {} rejected, event time {newest}",
            u.events, u.rejects
        ));
    }
    fn finish(&self) {
        self.0.finish_and_clear();
    }
    fn models(&self, m: &personaflow_dataflow::graph::ModelsReport) {
        // Above the bar on a terminal; elsewhere (a hidden bar prints nothing) the line comes
        // with the summary at the end, so that a failed run still prints one line only.
        self.0.println(models_line(m));
    }
    fn warning(&self, message: &str) {
        self.0
            .suspend(|| eprintln!("personaflow: warning: {message}"));
    }
}

/// Progress of a `--quiet` run: nothing but warnings.
struct QuietProgress;

impl Progress for QuietProgress {
    fn start(&self, _: u64, _: usize) {}
    fn update(&self, _: &ProgressUpdate) {}
    fn finish(&self) {}
    fn warning(&self, message: &str) {
        eprintln!("personaflow: warning: {message}");
    }
}

/// One line saying which models run, and on which execution provider.
fn models_line(m: &personaflow_dataflow::graph::ModelsReport) -> String {
    let forecaster = m.forecaster.as_deref().unwrap_or("off");
    match (&m.execution_provider, &m.onnxruntime) {
        (Some(provider), Some(lib)) => format!(
            "models: embedder {}, forecaster {forecaster}; onnxruntime on {provider} ({lib})",
            m.embedder
        ),
        _ => format!("models: embedder {}, forecaster {forecaster}", m.embedder),
    }
}

fn progress(quiet: bool) -> Arc<dyn Progress> {
    if quiet {
        return Arc::new(QuietProgress);
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {msg}",
        )
        .expect("valid template"),
    );
    Arc::new(Bar(bar))
}

fn load_config(
    file: Option<&Path>,
    mapping: Option<PathBuf>,
    workers: Option<usize>,
) -> Result<Config> {
    let mut config = Config::load(file, std::env::vars())?;
    if let Some(m) = mapping {
        config.ingest.mapping = Some(m);
    }
    if let Some(w) = workers {
        if w == 0 {
            bail!("--workers must be at least 1");
        }
        config.runtime.workers = w;
    }
    Ok(config)
}

/// A flag that SIGINT and SIGTERM set to their number; a second one while it is set ends
/// the process at once (what was staged is then removed by the next run).
fn interrupt_flag() -> Result<Arc<AtomicUsize>> {
    let flag = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 128 + signal, seen.clone())
            .context("installing the signal handler")?;
        signal_hook::flag::register(signal, seen.clone())
            .context("installing the signal handler")?;
        signal_hook::flag::register_usize(signal, flag.clone(), signal as usize)
            .context("installing the signal handler")?;
    }
    Ok(flag)
}

fn cmd_backfill(args: BackfillArgs, quiet: bool) -> Result<()> {
    let config = load_config(args.config.as_deref(), args.mapping, args.workers)?;
    let job = Backfill {
        inputs: args.input,
        output: args.output.clone(),
        config,
        overwrite: args.overwrite,
        interrupt: Some(interrupt_flag()?),
    };
    let summary = backfill::run(&job, progress(quiet))?;
    if !quiet {
        eprintln!("{}", models_line(&summary.models));
        eprintln!(
            "backfill: {} events ({} rejected, {} late) over {} windows in {:.1}s ({:.0} events/s) -> {}",
            summary.events,
            summary.rejects,
            summary.late_events,
            summary.windows,
            summary.elapsed_secs,
            summary.events_per_sec,
            args.output.display()
        );
        for (table, rows) in &summary.rows_written {
            eprintln!("  {table:<19} {rows:>12} rows");
        }
    }
    Ok(())
}

fn simulation_config(args: &SimulateArgs) -> Result<SimulationConfig> {
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
        drifts,
        overwrite: args.overwrite,
        ..SimulationConfig::default()
    })
}

fn simulate(config: &SimulationConfig, out: &Path, quiet: bool) -> Result<()> {
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

fn cmd_demo(args: DemoArgs, quiet: bool) -> Result<()> {
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

fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("personaflow-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn write_json(path: Option<&Path>, value: &impl serde::Serialize) -> Result<()> {
    if let Some(path) = path {
        std::fs::write(path, serde_json::to_vec_pretty(value)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn cmd_evaluate(args: EvaluateArgs, quiet: bool) -> Result<()> {
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
            let temp;
            let work = match &a.keep {
                Some(dir) => dir.clone(),
                None => {
                    temp = tempfile_dir()?;
                    temp.clone()
                }
            };
            let scenarios = drift_eval::default_scenarios();
            let total = scenarios.len();
            let mut done = 0;
            let report = drift_eval::evaluate_scenarios(
                &scenarios,
                a.users,
                a.days,
                &config,
                &work,
                &mut |r| {
                    done += 1;
                    if !quiet {
                        eprintln!(
                            "scenario {done}/{total} {}: {} drift events",
                            r.scenario.name, r.events
                        );
                    }
                },
            );
            if a.keep.is_none() {
                std::fs::remove_dir_all(&work).ok();
            }
            let report = report?;
            print!("{}", report.to_table());
            write_json(a.json.as_deref(), &report)
        }
        None => {
            let (Some(scenario), Some(output)) = (args.scenario, args.output) else {
                bail!("evaluate needs --scenario and --output, or one of scenarios, tcpd, nab");
            };
            let truth = read_truth(&scenario.join("truth").join("users.parquet"))?;
            check_same_scenario(&truth, &output)?;
            let report = evaluate_resonance(&truth, &output)?;
            print!("{}", report.to_table());
            write_json(args.json.as_deref(), &report)
        }
    }
}

/// Prints what the continuous job reports.
struct RunReporter {
    quiet: bool,
}

impl StreamReporter for RunReporter {
    fn started(&self, i: &StartInfo) {
        if self.quiet {
            return;
        }
        eprintln!("{}", models_line(&i.models));
        let resumed = match &i.resumed_after {
            Some(end) => format!(
                "resuming after the window ending {end} ({} unfinished window files removed)",
                i.removed_files
            ),
            None => "starting fresh".to_string(),
        };
        eprintln!("run: {} partitions, {resumed}", i.partitions);
        if let Some(state) = &i.resumed_state {
            eprintln!("run: operator state resumed: {state}");
        }
        if !i.output_topics.is_empty() {
            eprintln!("run: publishing to {}", i.output_topics.join(", "));
        }
        if let Some(addr) = &i.metrics_addr {
            eprintln!("run: metrics on http://{addr}/metrics");
        }
    }

    fn status(&self, s: &StreamStatus) {
        if !self.quiet {
            eprintln!(
                "run: {} events ({} replayed, {} rejected, {} late), {} windows emitted, \
                 watermark {}, lag {}",
                s.events,
                s.replayed,
                s.rejects,
                s.late,
                s.windows_emitted,
                s.watermark.as_deref().unwrap_or("-"),
                s.lag
            );
        }
    }

    fn warning(&self, message: &str) {
        eprintln!("personaflow: warning: {message}");
    }
}

fn cmd_run(args: RunArgs, quiet: bool) -> Result<()> {
    let mut config = load_config(args.config.as_deref(), args.mapping, args.workers)?;
    let sc = &mut config.stream;
    if let Some(b) = args.brokers {
        sc.brokers = Some(b);
    }
    if let Some(t) = args.topic {
        sc.topic = Some(t);
    }
    if let Some(g) = args.group {
        sc.group = Some(g);
    }
    if let Some(o) = args.output {
        sc.output = Some(o);
    }
    if let Some(m) = args.metrics_addr {
        sc.metrics_addr = m;
    }
    let need = |v: &Option<String>, flag: &str| {
        v.clone().with_context(|| {
            format!("--{flag} is required (or stream.{flag} in the configuration)")
        })
    };
    let brokers = need(&sc.brokers, "brokers")?;
    let topic = need(&sc.topic, "topic")?;
    let group = need(&sc.group, "group")?;
    let output = sc
        .output
        .clone()
        .context("--output is required (or stream.output in the configuration)")?;
    let shutdown = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, shutdown.clone())
            .context("installing the signal handler")?;
    }
    let job = StreamJob {
        brokers,
        topic,
        group,
        output: output.clone(),
        config,
        until_end: args.until_end,
        shutdown,
    };
    let summary = stream::run(&job, Arc::new(RunReporter { quiet }))?;
    if !quiet {
        let ms = |s: Option<f64>| s.map_or("-".to_string(), |s| format!("{:.0} ms", s * 1000.0));
        eprintln!(
            "run: stopped ({}): {} events ({} replayed, {} rejected, {} late), {} windows \
             emitted through {} in {:.1}s ({:.0} events/s); close-to-output p50 {}, p99 {} -> {}",
            summary.stopped_by,
            summary.status.events,
            summary.status.replayed,
            summary.status.rejects,
            summary.status.late,
            summary.status.windows_emitted,
            summary.emitted_through.as_deref().unwrap_or("-"),
            summary.elapsed_secs,
            summary.events_per_sec,
            ms(summary.latency_p50_secs),
            ms(summary.latency_p99_secs),
            output.display()
        );
        for (table, rows) in &summary.rows_written {
            eprintln!("  {table:<19} {rows:>12} rows");
        }
    }
    Ok(())
}

fn cmd_produce(args: ProduceArgs, quiet: bool) -> Result<()> {
    let mapping = match &args.mapping {
        Some(p) => personaflow_io::source::IngestMapping::from_toml_file(p)?,
        None => personaflow_io::source::IngestMapping::identity(),
    };
    let job = Produce {
        brokers: args.brokers,
        topic: args.topic.clone(),
        inputs: args.input,
        mapping,
        rate: args.rate,
        limit: args.limit,
    };
    let summary = produce(&job, &mut |_| {})?;
    if !quiet {
        eprintln!(
            "produce: {} events ({} input rows refused) to {} in {:.1}s",
            summary.events, summary.rejects, args.topic, summary.elapsed_secs
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let quiet = cli.quiet;
    let result = match cli.command {
        Command::Backfill(a) => cmd_backfill(a, quiet),
        Command::Simulate(a) => simulation_config(&a).and_then(|c| simulate(&c, &a.out, quiet)),
        Command::Demo(a) => cmd_demo(a, quiet),
        Command::Evaluate(a) => cmd_evaluate(a, quiet),
        Command::Run(a) => cmd_run(a, quiet),
        Command::Produce(a) => cmd_produce(a, quiet),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("personaflow: error: {e:#}");
            // Interrupted runs exit as shells expect of a signal: 128 + its number.
            match e.downcast_ref::<personaflow_dataflow::Error>() {
                Some(personaflow_dataflow::Error::Interrupted { signal }) => {
                    ExitCode::from(u8::try_from(128 + signal).unwrap_or(1))
                }
                _ => ExitCode::FAILURE,
            }
        }
    }
}
