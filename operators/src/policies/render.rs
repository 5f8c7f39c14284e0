//! A policy as configurations a router or proxy applies: a shell script of Linux
//! traffic-control commands ([`tc_script`]) and an nftables rule set ([`nft_ruleset`]).
//!
//! The device named (`--dev`) is the user's access interface (a veth, a PPP session, a VLAN
//! sub-interface): traffic leaving on it goes to the user, traffic arriving on it comes from
//! the user.
//!
//! - **tc**: an HTB tree on the device: class `1:1` capped at the policy's ceiling, and the
//!   user's class `1:10` (the default) with `rate` = the allocation, `ceil` = the ceiling,
//!   `burst`/`cburst` = the burst, `prio` and `quantum` from the priority weight. HTB is what
//!   the kernel these scripts were tested on has (its fq_codel and CAKE qdiscs could not be
//!   loaded), so the class keeps HTB's default leaf queue. DSCP marking with tc needs the
//!   `act_pedit` action; the script tries it and, where the kernel lacks it, says so and
//!   leaves the marking to the nftables rule set.
//! - **nftables**: a table of its own per user: traffic from the user to ports outside the
//!   allowed ones is dropped, new connections above the request rate limit are dropped, the
//!   user's upload is policed at the ceiling, and traffic to the user is marked with the
//!   policy's DSCP.

use crate::policies::blend::Policy;
use std::fmt::Write as _;

/// HTB `prio` of a priority weight: higher weights get lower (more urgent) `prio`, in 0..=7.
///
/// ```
/// use personaflow_operators::policies::render::htb_prio;
/// assert_eq!((htb_prio(6.0), htb_prio(1.0), htb_prio(100.0)), (1, 6, 0));
/// ```
pub fn htb_prio(weight: f32) -> u8 {
    (7.0 - f64::from(weight).round()).clamp(0.0, 7.0) as u8
}

/// HTB `quantum` of a priority weight: the weight in full-size Ethernet frames (1,514 bytes),
/// at least one frame.
pub fn htb_quantum(weight: f32) -> u64 {
    ((f64::from(weight) * 1_514.0).round() as u64).max(1_514)
}

/// A name safe in tc comments, nftables identifiers and file names: ASCII alphanumerics and
/// `_`, other characters as `_`, at most 40 characters.
///
/// ```
/// use personaflow_operators::policies::render::safe_name;
/// assert_eq!(safe_name("u000034"), "u000034");
/// assert_eq!(safe_name("10.0.0.1; rm -rf /"), "10_0_0_1__rm__rf__");
/// ```
pub fn safe_name(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(40)
        .collect()
}

/// A device name is what Linux allows: 1 to 15 bytes, no `/`, whitespace or quotes.
pub fn valid_device(dev: &str) -> bool {
    !dev.is_empty()
        && dev.len() <= 15
        && dev
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@' | ':'))
}

/// The tc script of `policy` for `user` at `window` (a label, e.g. the window's end as RFC
/// 3339), on device `dev` (a valid device name: [`valid_device`]).
///
/// ```
/// use personaflow_operators::policies::blend::{blend, DemandOutlook, PolicyConfig};
/// use personaflow_operators::policies::catalogue::PersonaCatalogue;
/// use personaflow_operators::policies::render::tc_script;
/// let c = PersonaCatalogue::example();
/// let p = blend(&c, &[("gamer", 1.0)], &DemandOutlook::default(), 60.0, &PolicyConfig::default());
/// let s = tc_script(&p, "u1", "2026-01-05T00:01:00Z", "veth0");
/// assert!(s.contains("classid 1:10 htb rate 64000bit ceil 20000000bit burst 32000b"));
/// ```
pub fn tc_script(policy: &Policy, user: &str, window: &str, dev: &str) -> String {
    let p = policy;
    let mut s = String::new();
    let tos = u32::from(p.dscp) << 2;
    let _ = writeln!(s, "#!/bin/sh");
    let _ = writeln!(
        s,
        "# personaflow policy of user {} at {window}: persona {} ({}, DSCP {})",
        safe_name(user),
        safe_name(&p.persona),
        p.diffserv_class,
        p.dscp
    );
    let _ = writeln!(
        s,
        "# HTB: rate = allocation {} bit/s, ceil = ceiling {} bit/s, burst {} bytes",
        p.allocated_bps, p.ceiling_bps, p.burst_bytes
    );
    let _ = writeln!(s, "set -eu");
    let _ = writeln!(s, "DEV=\"${{DEV:-{dev}}}\"");
    // HTB cannot change a root qdisc in place: the script replaces the whole tree.
    let _ = writeln!(
        s,
        "tc qdisc del dev \"$DEV\" root 2>/dev/null || true\ntc qdisc add dev \"$DEV\" root handle 1: htb default 10"
    );
    let _ = writeln!(
        s,
        "tc class replace dev \"$DEV\" parent 1: classid 1:1 htb rate {c}bit ceil {c}bit burst {b}b cburst {b}b",
        c = p.ceiling_bps.max(8),
        b = p.burst_bytes.max(1_600)
    );
    let _ = writeln!(
        s,
        "tc class replace dev \"$DEV\" parent 1:1 classid 1:10 htb rate {r}bit ceil {c}bit burst {b}b cburst {b}b prio {prio} quantum {q}",
        r = p.allocated_bps.max(8),
        c = p.ceiling_bps.max(8),
        b = p.burst_bytes.max(1_600),
        prio = htb_prio(p.priority_weight.0),
        q = htb_quantum(p.priority_weight.0)
    );
    let _ = writeln!(
        s,
        "# DSCP {} (TOS byte 0x{tos:02x}) on everything the class sends; needs act_pedit.",
        p.dscp
    );
    let _ = writeln!(
        s,
        "if ! tc filter replace dev \"$DEV\" parent 1: protocol ip prio 1 handle 800::800 u32 match u32 0 0 flowid 1:10 \\\n    action pedit ex munge ip dsfield set 0x{tos:02x} retain 0xfc pipe action csum ip 2>/dev/null; then\n    echo \"personaflow: this kernel has no tc pedit action: DSCP marking is left to the nftables rule set\" >&2\nfi"
    );
    s
}

/// Port ranges as nftables set elements.
fn nft_ports(policy: &Policy) -> String {
    policy
        .allowed_ports
        .iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// An nftables `limit rate` of `per_s` per second: whole per second, or per minute below one.
fn nft_rate(per_s: f64) -> String {
    if per_s >= 1.0 {
        format!("{}/second", per_s.round() as u64)
    } else {
        format!("{}/minute", ((per_s * 60.0).round() as u64).max(1))
    }
}

/// The nftables rule set of `policy` for `user` at `window` on device `dev` (`nft -f`; it
/// replaces the user's table if there is one).
///
/// ```
/// use personaflow_operators::policies::blend::{blend, DemandOutlook, PolicyConfig};
/// use personaflow_operators::policies::catalogue::PersonaCatalogue;
/// use personaflow_operators::policies::render::nft_ruleset;
/// let c = PersonaCatalogue::example();
/// let p = blend(&c, &[("gamer", 1.0)], &DemandOutlook::default(), 60.0, &PolicyConfig::default());
/// let s = nft_ruleset(&p, "u1", "2026-01-05T00:01:00Z", "veth0");
/// assert!(s.contains("elements = { 443, 27000-27050 }"));
/// assert!(s.contains("ip dscp set 32"));
/// ```
pub fn nft_ruleset(policy: &Policy, user: &str, window: &str, dev: &str) -> String {
    let p = policy;
    let table = format!("personaflow_{}", safe_name(user));
    let ceiling_bytes = (p.ceiling_bps / 8).max(1);
    let burst = p.burst_bytes.max(1_514);
    let rate = f64::from(p.rate_limit_rps.0);
    let burst_conns = (rate * 2.0).ceil().max(5.0) as u64;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# personaflow policy of user {} at {window}: persona {} ({}, DSCP {}); {} authentication, {} inspection{}",
        safe_name(user),
        safe_name(&p.persona),
        p.diffserv_class,
        p.dscp,
        p.authentication.name(),
        p.inspection.name(),
        if p.vpn_required { ", VPN required" } else { "" }
    );
    let _ = writeln!(
        s,
        "# application classes allowed: {}",
        p.allowed_app_classes.join(", ")
    );
    let _ = writeln!(s, "add table inet {table}");
    let _ = writeln!(s, "delete table inet {table}");
    let _ = writeln!(s, "table inet {table} {{");
    let _ = writeln!(
        s,
        "    set allowed_ports {{\n        type inet_service\n        flags interval\n        elements = {{ {} }}\n    }}",
        nft_ports(p)
    );
    let _ = writeln!(
        s,
        "    chain from_user {{\n        meta l4proto {{ tcp, udp }} th dport != @allowed_ports counter drop\n        ct state new limit rate over {} burst {burst_conns} packets counter drop\n        limit rate over {ceiling_bytes} bytes/second burst {burst} bytes counter drop\n    }}",
        nft_rate(rate)
    );
    for (chain, hook) in [("input_filter", "input"), ("forward_filter", "forward")] {
        let _ = writeln!(
            s,
            "    chain {chain} {{\n        type filter hook {hook} priority filter; policy accept;\n        iifname \"{dev}\" jump from_user\n    }}"
        );
    }
    let _ = writeln!(
        s,
        "    chain mark_to_user {{\n        type filter hook postrouting priority mangle; policy accept;\n        oifname \"{dev}\" ip dscp set {d}\n        oifname \"{dev}\" ip6 dscp set {d}\n    }}",
        d = p.dscp
    );
    let _ = writeln!(s, "}}");
    s
}
