//! What the commands share: progress bars, the configuration with its flags, the signal flag,
//! JSON reports.

use anyhow::{bail, Context as _, Result};
use indicatif::{ProgressBar, ProgressStyle};
use personaflow_dataflow::backfill::{Progress, ProgressUpdate};
use personaflow_dataflow::config::Config;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;

pub(crate) struct Bar(ProgressBar);

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
pub(crate) struct QuietProgress;

impl Progress for QuietProgress {
    fn start(&self, _: u64, _: usize) {}
    fn update(&self, _: &ProgressUpdate) {}
    fn finish(&self) {}
    fn warning(&self, message: &str) {
        eprintln!("personaflow: warning: {message}");
    }
}

/// One line saying which models run, and on which execution provider.
pub(crate) fn models_line(m: &personaflow_dataflow::graph::ModelsReport) -> String {
    let forecaster = m.forecaster.as_deref().unwrap_or("off");
    match (&m.execution_provider, &m.onnxruntime) {
        (Some(provider), Some(lib)) => format!(
            "models: embedder {}, forecaster {forecaster}; onnxruntime on {provider} ({lib})",
            m.embedder
        ),
        _ => format!("models: embedder {}, forecaster {forecaster}", m.embedder),
    }
}

pub(crate) fn progress(quiet: bool) -> Arc<dyn Progress> {
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

pub(crate) fn load_config(
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
pub(crate) fn interrupt_flag() -> Result<Arc<AtomicUsize>> {
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

pub(crate) fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("personaflow-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

pub(crate) fn write_json(path: Option<&Path>, value: &impl serde::Serialize) -> Result<()> {
    if let Some(path) = path {
        std::fs::write(path, serde_json::to_vec_pretty(value)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The flags of the jobs (`backfill`, `run`): configuration, ingest mapping, workers.
#[derive(clap::Args, Debug)]
pub(crate) struct JobFlags {
    /// Job configuration (TOML); PERSONAFLOW__SECTION__KEY variables override it.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Ingest mapping (TOML) for events not in the canonical schema.
    #[arg(long, short)]
    mapping: Option<PathBuf>,
    /// Worker threads [default: 2] (in `run`, one consumer each).
    #[arg(long, short)]
    workers: Option<usize>,
}

impl JobFlags {
    /// The configuration: defaults < file < `PERSONAFLOW__*` variables < these flags.
    pub(crate) fn config(&self) -> Result<Config> {
        load_config(self.config.as_deref(), self.mapping.clone(), self.workers)
    }
}

/// The Redis sink of `config`'s `[sinks.redis]`, connected (so that a wrong URL or a server
/// that is down fails before any work), if there is one.
pub(crate) fn redis_sink(
    config: &personaflow_dataflow::config::Config,
) -> Result<Option<Arc<personaflow_serve::redis::RedisSink>>> {
    config
        .sinks
        .redis
        .as_ref()
        .map(|r| {
            personaflow_serve::redis::RedisSink::connect(&r.url, &r.key_prefix)
                .map(Arc::new)
                .with_context(|| "[sinks.redis]".to_string())
        })
        .transpose()
}
