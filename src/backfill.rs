//! `personaflow backfill`: the dataflow over event files.

use crate::common::*;
use anyhow::Result;
use clap::Args;
use personaflow_dataflow::backfill::{self, Backfill};
use personaflow_dataflow::operator_times;
use std::path::PathBuf;
use std::sync::Arc;

/// Operator-time lines the summary prints (`run.json` has them all).
const OPERATOR_TIMES_SHOWN: usize = 30;

#[derive(Args, Debug)]
pub(crate) struct BackfillArgs {
    /// Input files, directories or globs (Parquet, CSV, TSV, NDJSON, Zeek logs).
    #[arg(long, short, required = true, num_args = 1..)]
    input: Vec<String>,
    /// Output directory; must not exist or be empty (see --overwrite).
    #[arg(long, short)]
    output: PathBuf,
    #[command(flatten)]
    job: JobFlags,
    /// Replace a non-empty output directory.
    #[arg(long)]
    overwrite: bool,
}

pub(crate) fn cmd_backfill(args: BackfillArgs, quiet: bool) -> Result<()> {
    let config = args.job.config()?;
    let observer =
        redis_sink(&config)?.map(|r| r as Arc<dyn personaflow_io::writer::WindowObserver>);
    let job = Backfill {
        inputs: args.input,
        output: args.output.clone(),
        config,
        overwrite: args.overwrite,
        interrupt: Some(interrupt_flag()?),
        observer,
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
        if !summary.operator_times.is_empty() {
            eprintln!(
                "operator times (runtime.operator_times; all {} rows in run.json):\n{}",
                summary.operator_times.len(),
                operator_times::table(&summary.operator_times, OPERATOR_TIMES_SHOWN)
            );
        }
    }
    Ok(())
}
