//! `personaflow produce`: event files to a Kafka topic.

use anyhow::Result;
use clap::Args;
use personaflow_kafka::produce::{produce, Produce};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub(crate) struct ProduceArgs {
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

pub(crate) fn cmd_produce(args: ProduceArgs, quiet: bool) -> Result<()> {
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
