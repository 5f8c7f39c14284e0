//! `personaflow policy render`: a user's stored policy as a Linux traffic-control script, an
//! nftables rule set, or JSON.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use personaflow_io::tables::read::{read_policies, StoredPolicy};
use personaflow_operators::policies::render::{nft_ruleset, tc_script, valid_device};
use serde::Serialize;
use std::io::Write as _;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub(crate) struct PolicyArgs {
    #[command(subcommand)]
    what: PolicyCommand,
}

#[derive(Subcommand, Debug)]
pub(crate) enum PolicyCommand {
    /// Write a user's policy as a configuration a router or proxy applies.
    Render(RenderArgs),
}

/// What to render a policy as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// A shell script of `tc` commands: an HTB class with the allocation as rate, the ceiling
    /// as ceil, the burst, and DSCP marking.
    Tc,
    /// An nftables rule set (`nft -f`): allowed ports, request rate limit, upload ceiling,
    /// DSCP marking.
    Nft,
    /// The policy and socket profile as JSON.
    Json,
}

#[derive(Args, Debug)]
pub(crate) struct RenderArgs {
    /// A run's output directory (backfill or continuous job).
    #[arg(long)]
    outputs: PathBuf,
    /// The user.
    #[arg(long)]
    user: String,
    /// The window: the latest policy whose window ended at or before this time (RFC 3339,
    /// e.g. 2026-01-05T06:00:00Z, or epoch milliseconds) [default: the latest].
    #[arg(long)]
    window: Option<String>,
    /// Output format.
    #[arg(long, value_enum)]
    format: Format,
    /// The user's access interface the tc script and the nftables rules apply to.
    #[arg(long, default_value = "eth0")]
    dev: String,
    /// Write here instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Serialize)]
struct PolicyJson<'a> {
    user_id: &'a str,
    window_end: String,
    #[serde(flatten)]
    stored: &'a personaflow_operators::policies::Policy,
    socket_profile: Option<&'a personaflow_operators::policies::SocketProfile>,
}

/// Epoch ms of `--window`.
fn parse_window(text: &str) -> Result<i64> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .with_context(|| {
            format!("--window {text:?} is neither RFC 3339 (2026-01-05T06:00:00Z) nor epoch ms")
        })
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| ms.to_string())
}

pub(crate) fn cmd_policy(args: PolicyArgs, _quiet: bool) -> Result<()> {
    let PolicyCommand::Render(a) = args.what;
    if !valid_device(&a.dev) {
        bail!(
            "--dev {:?} is not a network device name (1 to 15 letters, digits, '-', '_', '.', '@', ':')",
            a.dev
        );
    }
    if !a.outputs.join("policies").is_dir() {
        bail!(
            "{}: no policies table (is it a personaflow output with [policy] enabled?)",
            a.outputs.display()
        );
    }
    let until = a.window.as_deref().map(parse_window).transpose()?;
    let policies = read_policies(&a.outputs, &a.user)?;
    if policies.is_empty() {
        bail!(
            "{}: user {:?} has no policy in this output",
            a.outputs.display(),
            a.user
        );
    }
    let chosen: &StoredPolicy = match until {
        Some(t) => policies
            .iter()
            .rev()
            .find(|p| p.window_end <= t)
            .with_context(|| {
                format!(
                    "user {:?} has no policy at or before {} (the first is at {})",
                    a.user,
                    rfc3339(t),
                    rfc3339(policies[0].window_end)
                )
            })?,
        None => policies.last().expect("not empty"),
    };
    let window = rfc3339(chosen.window_end);
    let text = match a.format {
        Format::Tc => tc_script(&chosen.policy, &a.user, &window, &a.dev),
        Format::Nft => nft_ruleset(&chosen.policy, &a.user, &window, &a.dev),
        Format::Json => {
            let mut s = serde_json::to_string_pretty(&PolicyJson {
                user_id: &a.user,
                window_end: window,
                stored: &chosen.policy,
                socket_profile: chosen.socket.as_ref(),
            })?;
            s.push('\n');
            s
        }
    };
    match &a.out {
        Some(path) => {
            std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?;
            #[cfg(unix)]
            if a.format == Format::Tc {
                use std::os::unix::fs::PermissionsExt as _;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
                    .with_context(|| format!("making {} executable", path.display()))?;
            }
        }
        None => std::io::stdout().write_all(text.as_bytes())?,
    }
    Ok(())
}
