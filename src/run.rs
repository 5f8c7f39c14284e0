//! `personaflow run`: the continuous job over a Kafka topic.

use crate::common::*;
use anyhow::{Context as _, Result};
use clap::Args;
use personaflow_kafka::{self as stream, StartInfo, StreamJob, StreamReporter, StreamStatus};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

#[derive(Args, Debug)]
pub(crate) struct RunArgs {
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
    #[command(flatten)]
    job: JobFlags,
    /// Prometheus endpoint HOST:PORT ("" turns it off) [config: stream.metrics_addr].
    #[arg(long)]
    metrics_addr: Option<String>,
    /// Stop at the partitions' ends as of the start, closing every window (a bounded run).
    #[arg(long)]
    until_end: bool,
    /// Serve the HTTP API (as `personaflow serve` does) at HOST:PORT from the job's own
    /// state: each user's latest records, updated as each window is emitted. With
    /// --until-end, the final state is served until SIGINT/SIGTERM.
    #[arg(long)]
    serve: Option<std::net::SocketAddr>,
    /// With --serve: the bearer token file (its first line); without it, loopback only.
    #[arg(long, requires = "serve")]
    token_file: Option<PathBuf>,
}

/// Prints what the continuous job reports.
pub(crate) struct RunReporter {
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

pub(crate) fn cmd_run(args: RunArgs, quiet: bool) -> Result<()> {
    let mut config = args.job.config()?;
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
    // Held until the job ends: the server stops with it.
    let served = args
        .serve
        .map(|bind| crate::serve::serve_job(&output, bind, args.token_file.as_deref()))
        .transpose()?;
    // The persona store (with --serve) and the Redis sink see every emitted window.
    let mut observers: Vec<Arc<dyn personaflow_io::writer::WindowObserver>> = Vec::new();
    if let Some((store, _)) = &served {
        observers.push(store.clone());
    }
    if let Some(r) = redis_sink(&config)? {
        observers.push(r);
    }
    let observer = (!observers.is_empty()).then(|| {
        Arc::new(personaflow_io::writer::Observers(observers))
            as Arc<dyn personaflow_io::writer::WindowObserver>
    });
    let job = StreamJob {
        brokers,
        topic,
        group,
        output: output.clone(),
        config,
        until_end: args.until_end,
        shutdown: shutdown.clone(),
        observer,
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
    // A bounded run that serves keeps serving its final state until told to stop.
    if served.is_some() && args.until_end && summary.stopped_by != "signal" {
        if !quiet {
            eprintln!("run: done; serving the final state until SIGINT/SIGTERM");
        }
        while !shutdown.load(std::sync::atomic::Ordering::SeqCst) {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    drop(served);
    Ok(())
}
