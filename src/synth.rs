//! `personaflow synth`: synthetic users from a backfill's latent space, written as event
//! files, replayed as HTTP requests or published to a topic.

use anyhow::{bail, Context as _, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use personaflow_dataflow::config::{parse_duration_ms, Config};
use personaflow_models::decoder::{VaeDecoderStep, DECODER_STEP_FILE};
use personaflow_operators::WindowSpec;
use personaflow_synth::generate::{generate, plan, to_events, SynthOptions, DEFAULT_DECODE_BATCH};
use personaflow_synth::gmm::DEFAULT_COMPONENTS;
use personaflow_synth::population::{drift_shift, read_populations, Selection};
use personaflow_synth::residual::residual_pools;
use personaflow_synth::volume::read_volume;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("population").args(["segment", "persona", "mix"])))]
#[command(group(clap::ArgGroup::new("sink").args(["out", "http", "brokers"]).required(true)))]
pub(crate) struct SynthArgs {
    /// A backfill's output directory (its profiles, run.json, and drift for a shift).
    #[arg(long)]
    profiles: PathBuf,
    /// Fit only the profiles of windows ending at or before this time (RFC 3339 or epoch ms),
    /// e.g. before a drift.
    #[arg(long)]
    profiles_until: Option<String>,
    /// Imitate one segment's users (their known segment: authenticated users).
    #[arg(long)]
    segment: Option<String>,
    /// Imitate one persona's users.
    #[arg(long)]
    persona: Option<u32>,
    /// `observed` (the default): every segment, and users without one, in its observed share
    /// of the users.
    #[arg(long, value_parser = ["observed"])]
    mix: Option<String>,
    /// Synthetic users.
    #[arg(long, default_value_t = 1_000)]
    users: usize,
    /// Length of the generated period ("30m", "1h", "1d" or milliseconds).
    #[arg(long, default_value = "1h")]
    duration: String,
    /// Start of the period (RFC 3339 or epoch ms) [default: the profiles' last window end].
    #[arg(long)]
    start: Option<String>,
    /// Random seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Output directory (events/ and truth/ under it, like `simulate`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Replay the events as HTTP requests against this service (http://host:port/path):
    /// `POST path/CATEGORY/ACTION` with `bytes_out` bytes, or `GET` without; reports the
    /// achieved rate, latency p50/p99 and errors.
    #[arg(long)]
    http: Option<String>,
    /// Publish the events to a Kafka topic instead (bootstrap brokers HOST:PORT,...), as the
    /// JSON events `run` reads, at their synthetic times scaled by --speedup.
    #[arg(long, requires = "topic")]
    brokers: Option<String>,
    /// The topic to publish to (must exist).
    #[arg(long, requires = "brokers")]
    topic: Option<String>,
    /// Synthetic seconds per wall-clock second when replaying or publishing (1: real pace).
    #[arg(long, default_value_t = 1.0)]
    speedup: f64,
    /// Requests (or events published) at most.
    #[arg(long)]
    limit: Option<u64>,
    /// Keep-alive connections when replaying.
    #[arg(long, default_value_t = personaflow_synth::driver::DEFAULT_CONNECTIONS)]
    connections: usize,
    /// Move the sampled latent points along a detected drift: `latest`, SCOPE:ID (e.g.
    /// segment:gamer) for that scope's latest drift, or SCOPE:ID@T for its drift detected at
    /// the window ending at T (RFC 3339 or epoch ms).
    #[arg(long)]
    shift_along_drift: Option<String>,
    /// How far along the drift: 1 reproduces the observed shift, 2 extrapolates.
    #[arg(long, default_value_t = 1.0, requires = "shift_along_drift")]
    magnitude: f32,
    /// `forecast`: scale each window's active users by the demand the backfill's forecaster
    /// predicts for it against its average (the last horizon's factor past the horizon).
    #[arg(long, value_parser = ["forecast"])]
    volume: Option<String>,
    /// The forecaster whose forecasts --volume follows [default: the only one, or the one
    /// with the smallest error].
    #[arg(long, requires = "volume")]
    forecaster: Option<String>,
    /// `on`: add to each decoded window a residual drawn from its population's real windows
    /// (what the decoder's mean leaves out); `off`: the decoded means alone.
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    residuals: String,
    /// Mixture components per population at most.
    #[arg(long, default_value_t = DEFAULT_COMPONENTS)]
    components: usize,
    /// Replace an existing events directory.
    #[arg(long)]
    overwrite: bool,
    /// Job configuration (TOML), for the models' directory and session options.
    #[arg(long, short)]
    config: Option<PathBuf>,
}

/// The backfill's window length, baseline length, last window end and number of windows,
/// from its run.json.
fn run_facts(dir: &Path) -> Result<(i64, i64, i64, u64)> {
    let path = dir.join("run.json");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {} (give --profiles a backfill's output directory)",
            path.display()
        )
    })?;
    let run: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    let window = run["config"]["window"]["length"]
        .as_str()
        .map(parse_duration_ms)
        .transpose()
        .map_err(anyhow::Error::msg)?
        .unwrap_or(personaflow_operators::window::DEFAULT_WINDOW_MS);
    let baseline = run["config"]["drift"]["baseline"].as_i64().unwrap_or(60);
    let last = run["last_window_end"]
        .as_str()
        .map(parse_time)
        .transpose()?
        .with_context(|| format!("{}: no last_window_end (an empty run?)", path.display()))?;
    let windows = run["windows"].as_u64().unwrap_or(1);
    Ok((window, baseline * window, last, windows))
}

/// RFC 3339 or epoch milliseconds.
fn parse_time(s: &str) -> Result<i64> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    Ok(chrono::DateTime::parse_from_rfc3339(s)
        .with_context(|| format!("{s:?}: expected RFC 3339 or epoch milliseconds"))?
        .timestamp_millis())
}

/// `personaflow synth`.
pub(crate) fn cmd_synth(a: SynthArgs, quiet: bool) -> Result<()> {
    if a.users == 0 {
        bail!("--users must be at least 1");
    }
    if !(a.speedup.is_finite() && a.speedup > 0.0) {
        bail!("--speedup must be a positive number, got {}", a.speedup);
    }
    let duration_ms = parse_duration_ms(&a.duration)
        .map_err(anyhow::Error::msg)
        .context("invalid --duration")?;
    let (window_ms, baseline_ms, last_window_end, run_windows) = run_facts(&a.profiles)?;
    let spec = WindowSpec::try_new(window_ms)?;
    let start_ms = match &a.start {
        Some(s) => parse_time(s).context("invalid --start")?,
        None => last_window_end,
    };
    let selection = match (&a.segment, a.persona) {
        (Some(s), _) => Selection::Segment(s.clone()),
        (None, Some(p)) => Selection::Persona(p),
        _ => Selection::Observed,
    };
    let started = Instant::now();
    let until = a
        .profiles_until
        .as_deref()
        .map(parse_time)
        .transpose()
        .context("invalid --profiles-until")?
        .unwrap_or(i64::MAX);
    let populations = read_populations(&a.profiles, &selection, run_windows, until, a.seed)
        .with_context(|| format!("reading the populations of {}", a.profiles.display()))?;
    let shift = match &a.shift_along_drift {
        None => None,
        Some(id) => {
            // SCOPE:ID@T with T in RFC 3339: the library takes epoch milliseconds.
            let id = match id.split_once('@') {
                Some((scoped, t)) if t.parse::<i64>().is_err() => format!(
                    "{scoped}@{}",
                    parse_time(t).context("invalid --shift-along-drift detection time")?
                ),
                _ => id.clone(),
            };
            let d = drift_shift(&a.profiles, &id, baseline_ms)?;
            if !quiet {
                eprintln!(
                    "synth: shifting along {}:{} (onset {}, detected {}; {} baseline and {} \
                     current user-windows) x {}",
                    d.scope,
                    d.scope_id,
                    d.onset_window_end,
                    d.detected_window_end,
                    d.points.0,
                    d.points.1,
                    a.magnitude
                );
            }
            Some(d.direction().iter().map(|v| v * a.magnitude).collect())
        }
    };
    let windows = (duration_ms.max(0) as u64).div_ceil(window_ms as u64);
    let volume = match a.volume.as_deref() {
        None => None,
        Some(_) => {
            let v = read_volume(
                &a.profiles,
                &selection,
                a.forecaster.as_deref(),
                until,
                start_ms,
            )
            .with_context(|| format!("--volume forecast from {}", a.profiles.display()))?;
            let first = spec.index(start_ms).unwrap_or(0);
            let factors: Vec<f64> = (0..windows)
                .map(|k| v.factor_at(spec.end_ms(first + k), window_ms))
                .collect();
            if !quiet {
                let shown: Vec<String> = v.factors.iter().map(|f| format!("{f:.2}")).collect();
                eprintln!(
                    "synth: volume follows {}'s forecast made at {} (against its mean over {} \
                     windows): x[{}] for the next {} windows, the last after",
                    v.forecaster,
                    chrono::DateTime::from_timestamp_millis(v.origin_window_end)
                        .map_or_else(|| v.origin_window_end.to_string(), |t| t.to_rfc3339()),
                    v.baseline_origins,
                    shown.join(", "),
                    v.factors.len()
                );
            }
            Some(factors)
        }
    };
    let mut options = SynthOptions {
        users: a.users,
        start_ms,
        duration_ms,
        seed: a.seed,
        spec,
        components: a.components,
        decode_batch: DEFAULT_DECODE_BATCH,
        shift,
        volume,
        threads: 0,
        residuals: Default::default(),
    };
    let users = plan(&populations, &options)?;
    let config: Config = crate::common::load_config(a.config.as_deref(), None, None)?;
    let path = config.models.resolved_dir().join(DECODER_STEP_FILE);
    let mut decoder = VaeDecoderStep::open(&path, &config.models.session_options())
        .with_context(|| format!("opening the decoder {}", path.display()))?;
    if a.residuals == "on" {
        options.residuals = residual_pools(&a.profiles, &populations, &mut decoder)
            .with_context(|| format!("the residuals of {}", a.profiles.display()))?;
        if !quiet {
            let sizes: Vec<String> = options
                .residuals
                .iter()
                .map(|(p, r)| format!("{p} {}", r.rows()))
                .collect();
            if sizes.is_empty() {
                eprintln!(
                    "synth: no real windows' features in {} (the features table): decoded \
                     means alone, as with --residuals off",
                    a.profiles.display()
                );
            } else {
                eprintln!("synth: residuals of real windows: {}", sizes.join(", "));
            }
        }
    }
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        let b = ProgressBar::new(windows);
        b.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} windows {msg} ({eta})")
                .expect("a valid template"),
        );
        b
    };
    if let Some(url) = &a.http {
        return drive(&a, url, &users, &mut decoder, &options, &bar, quiet);
    }
    if let (Some(brokers), Some(topic)) = (&a.brokers, &a.topic) {
        return publish(
            &a,
            brokers,
            topic,
            &users,
            &mut decoder,
            &options,
            &bar,
            quiet,
        );
    }
    let out = a
        .out
        .as_ref()
        .expect("--out or --http, by the argument group");
    let summary = generate(
        &users,
        &mut decoder,
        &options,
        out,
        a.overwrite,
        &mut |done, events| {
            bar.set_position(done);
            bar.set_message(format!("{events} events"));
        },
    )?;
    bar.finish_and_clear();
    if !quiet {
        let names: Vec<String> = populations
            .iter()
            .map(|p| format!("{} ({} user-windows)", p.name, p.user_windows))
            .collect();
        eprintln!(
            "synth: {} users from {}, {} windows, {} events in {} files in {:.1}s -> {}",
            summary.users,
            names.join(", "),
            summary.windows,
            summary.events,
            summary.event_files.len(),
            started.elapsed().as_secs_f64(),
            out.display()
        );
    }
    Ok(())
}

/// `--http`: the events replayed as requests, paced by their synthetic times.
fn drive(
    a: &SynthArgs,
    url: &str,
    users: &[personaflow_synth::generate::SyntheticUser],
    decoder: &mut VaeDecoderStep,
    options: &SynthOptions,
    bar: &ProgressBar,
    quiet: bool,
) -> Result<()> {
    use personaflow_synth::driver::{DriveOptions, HttpDriver, HttpTarget};
    let target = HttpTarget::parse(url)?;
    let max_wall =
        std::time::Duration::from_secs_f64(options.duration_ms.max(0) as f64 / 1000.0 / a.speedup);
    let mut driver = HttpDriver::start(
        target,
        DriveOptions {
            speedup: a.speedup,
            limit: a.limit,
            max_wall,
            connections: a.connections,
        },
        period_start(options),
    );
    let names = personaflow_synth::expand::Names::new();
    personaflow_synth::generate::generate_events(users, decoder, options, &mut |k, window| {
        for e in &to_events(window, users, &names) {
            if !driver.send(e) {
                return Ok(false);
            }
        }
        bar.set_position(k + 1);
        bar.set_message(format!("{} requests", driver.sent()));
        Ok(!driver.done())
    })?;
    let report = driver.finish();
    bar.finish_and_clear();
    if !quiet {
        eprintln!(
            "synth: {} requests to {url} in {:.1}s: {:.1} req/s achieved, {} ok, {} errors; latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            report.sent,
            report.elapsed_secs,
            report.achieved_rate,
            report.ok,
            report.errors,
            report.p50_ms,
            report.p99_ms,
            report.max_ms
        );
    }
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// `--brokers/--topic`: the events published at their synthetic times scaled by --speedup,
/// bounded by --limit and the duration.
#[allow(clippy::too_many_arguments)]
fn publish(
    a: &SynthArgs,
    brokers: &str,
    topic: &str,
    users: &[personaflow_synth::generate::SyntheticUser],
    decoder: &mut VaeDecoderStep,
    options: &SynthOptions,
    bar: &ProgressBar,
    quiet: bool,
) -> Result<()> {
    use personaflow_kafka::produce::EventPublisher;
    let mut publisher = EventPublisher::connect(brokers, topic)?;
    let start_ms = period_start(options);
    let started = Instant::now();
    let mut sent = 0u64;
    let names = personaflow_synth::expand::Names::new();
    personaflow_synth::generate::generate_events(users, decoder, options, &mut |k, window| {
        for e in &to_events(window, users, &names) {
            if a.limit.is_some_and(|l| sent >= l) {
                return Ok(false);
            }
            let due = std::time::Duration::from_secs_f64(
                (e.ts_ms - start_ms).max(0) as f64 / 1000.0 / a.speedup,
            );
            let elapsed = started.elapsed();
            if due > elapsed {
                publisher.wait(due - elapsed);
                std::thread::sleep(due.saturating_sub(started.elapsed()));
            }
            publisher
                .send(e)
                .map_err(|e| personaflow_synth::Error::Input(e.to_string()))?;
            sent += 1;
        }
        publisher.poll();
        bar.set_position(k + 1);
        bar.set_message(format!("{sent} events published"));
        Ok(true)
    })?;
    publisher.flush()?;
    bar.finish_and_clear();
    if !quiet {
        eprintln!(
            "synth: {sent} events published to {topic} in {:.1}s ({:.0} events/s)",
            started.elapsed().as_secs_f64(),
            sent as f64 / started.elapsed().as_secs_f64().max(1e-9)
        );
    }
    Ok(())
}

/// The start of the generated period: the start of `--start`'s window.
fn period_start(options: &SynthOptions) -> i64 {
    options
        .spec
        .start_ms(options.spec.index(options.start_ms).unwrap_or(0))
}
