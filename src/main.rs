//! `personaflow`: learns how users behave from event logs and computes per-user features,
//! latent profiles, segment profiles, resonance, demand forecasts, personas, drift and scaling
//! advice as Parquet tables, over files (`backfill`) or a Kafka topic (`run`). One module of
//! the library crates per command; this binary parses flags, shows progress and prints.

mod allocator;
mod backfill;
mod common;
mod demo;
mod evaluate;
mod policy;
mod produce;
mod run;
mod serve;
mod simulate;
mod synth;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

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
    Backfill(backfill::BackfillArgs),
    /// Generate a seeded scenario of users in named segments, with ground truth.
    Simulate(simulate::SimulateArgs),
    /// Simulate a small scenario, backfill it, and report resonance against the truth.
    Demo(demo::DemoArgs),
    /// Score a backfill's resonance against a simulation's ground truth (`--scenario`,
    /// `--output`), or the drift detector (`scenarios`, `tcpd DIR`, `nab DIR`).
    Evaluate(evaluate::EvaluateArgs),
    /// Run the dataflow continuously over a Kafka topic (until SIGINT/SIGTERM).
    Run(run::RunArgs),
    /// Write event files to a Kafka topic as JSON events (for tests, load tests, replays).
    Produce(produce::ProduceArgs),
    /// Render a user's policy as a tc script, an nftables rule set or JSON.
    Policy(policy::PolicyArgs),
    /// Serve a run's outputs over HTTP: per-user lookups, segments, personas, drift.
    Serve(serve::ServeArgs),
    /// Synthetic users from a backfill's latent space, written as event files.
    Synth(synth::SynthArgs),
}

fn main() -> ExitCode {
    allocator::tune();
    let cli = Cli::parse();
    let quiet = cli.quiet;
    let result = match cli.command {
        Command::Backfill(a) => backfill::cmd_backfill(a, quiet),
        Command::Simulate(a) => simulate::cmd_simulate(a, quiet),
        Command::Demo(a) => demo::cmd_demo(a, quiet),
        Command::Evaluate(a) => evaluate::cmd_evaluate(a, quiet),
        Command::Run(a) => run::cmd_run(a, quiet),
        Command::Produce(a) => produce::cmd_produce(a, quiet),
        Command::Policy(a) => policy::cmd_policy(a, quiet),
        Command::Serve(a) => serve::cmd_serve(a, quiet),
        Command::Synth(a) => synth::cmd_synth(a, quiet),
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
