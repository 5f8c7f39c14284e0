//! Policies through the CLI: the tables a backfill writes, and `policy render` applied to a
//! real kernel: a network namespace pair joined by a veth, the tc script and nftables rule set
//! applied and read back, and a real TCP flow through the shaped link.
//!
//! The namespace test needs root, `ip`, `tc` and `nft` (nftables, installed by
//! `scripts/setup-netfilter.sh`, which `scripts/test.sh` runs). Without them it fails, saying
//! what is missing, unless `PERSONAFLOW_SKIP_NETNS=1` says to skip it.

use crate::support::*;
use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A numeric value of any width, as `f64`.
fn num(v: &Value) -> f64 {
    match v {
        Value::Int(i) => *i as f64,
        Value::UInt(u) => *u as f64,
        Value::Float(f) => *f,
        other => panic!("expected a number, found {other:?}"),
    }
}

#[test]
fn policies_socket_profiles_and_feedback_are_consistent() {
    let tmp = tempfile::tempdir().unwrap();
    let out = backfilled_model_free(tmp.path(), 150, 0.1, 18);
    let profiles = output_table(&out, "profiles");
    let policies = output_table(&out, "policies");
    let sockets = output_table(&out, "socket_profiles");
    let feedback = output_table(&out, "shaping_feedback");
    // One policy and one socket profile per profile (user and active window).
    let key = |t: &Table, r: usize| {
        (
            t.column("user_id")[r].str().to_string(),
            t.column("window_end")[r].int(),
        )
    };
    let mut want: Vec<_> = (0..profiles.len()).map(|r| key(&profiles, r)).collect();
    let mut got: Vec<_> = (0..policies.len()).map(|r| key(&policies, r)).collect();
    let mut got_s: Vec<_> = (0..sockets.len()).map(|r| key(&sockets, r)).collect();
    want.sort();
    got.sort();
    got_s.sort();
    assert_eq!(got, want);
    assert_eq!(got_s, want);
    for r in 0..policies.len() {
        let v = |c: &str| num(policies.column(c)[r]);
        assert!(v("floor_bps") <= v("allocated_bps") && v("allocated_bps") <= v("ceiling_bps"));
        assert!(v("floor_bps") <= v("guaranteed_bps") && v("guaranteed_bps") <= v("ceiling_bps"));
        let probs: f64 = match policies.column("probabilities")[r] {
            Value::List(p) => p.iter().map(Value::float).sum(),
            other => panic!("{other:?}"),
        };
        assert!((probs - 1.0).abs() < 1e-4, "probabilities sum to {probs}");
    }
    // Every policy whose next window has data is judged there, once.
    let last = (0..profiles.len())
        .map(|r| profiles.column("window_end")[r].int())
        .max()
        .unwrap();
    let judged: Vec<_> = (0..feedback.len())
        .map(|r| {
            (
                feedback.column("user_id")[r].str().to_string(),
                feedback.column("made_at_window_end")[r].int(),
            )
        })
        .collect();
    let mut expected: Vec<_> = want.iter().filter(|(_, w)| *w < last).cloned().collect();
    let mut judged_sorted = judged.clone();
    judged_sorted.sort();
    expected.sort();
    assert_eq!(judged_sorted, expected);
    for r in 0..feedback.len() {
        let v = |c: &str| num(feedback.column(c)[r]);
        let allocated = v("allocated_bps") * 60.0 / 8.0;
        let demand = v("demand_bytes");
        assert!((v("shortfall_bytes") - (demand - allocated).max(0.0)).abs() < 1.0);
        assert!((v("waste_bytes") - (allocated - demand).max(0.0)).abs() < 1.0);
        assert!((0.0..=1.0).contains(&v("served_share")));
    }
}

/// Deletes the namespaces it was given when dropped.
struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = Command::new("ip").args(["netns", "delete", ns]).status();
        }
    }
}

#[track_caller]
fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "{} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What this machine lacks for the namespace test (empty: nothing).
fn netns_missing() -> Vec<String> {
    let mut missing = Vec::new();
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !is_root {
        missing.push("root".to_string());
    }
    for tool in ["ip", "tc", "nft", "python3"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map_or(true, |o| !o.status.success())
        {
            missing.push(tool.to_string());
        }
    }
    missing
}

/// `rate 8056bit`, `ceil 1047Kbit` in `tc class show` output, in bits/s.
fn tc_rate(line: &str, word: &str) -> f64 {
    let text = line
        .split_whitespace()
        .skip_while(|w| *w != word)
        .nth(1)
        .unwrap_or_else(|| panic!("no {word} in {line}"));
    let (digits, unit) = text.split_at(text.find(|c: char| c.is_ascii_alphabetic()).unwrap());
    let scale = match unit {
        "bit" => 1.0,
        "Kbit" => 1e3,
        "Mbit" => 1e6,
        "Gbit" => 1e9,
        other => panic!("unit {other} in {line}"),
    };
    digits.parse::<f64>().unwrap() * scale
}

/// The receiver: connects to HOST:PORT (retrying until the deadline: the sender may not be
/// listening yet), reads for `secs`, prints the bytes/s measured after the first second, or
/// `refused` when no connection could be made within the deadline.
const RECEIVER: &str = r#"
import socket, sys, time
host, port, secs, deadline = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
end = time.monotonic() + deadline
while True:
    try:
        s = socket.create_connection((host, port), timeout=1.0)
        break
    except OSError:
        if time.monotonic() > end:
            print("refused"); sys.exit(0)
        time.sleep(0.05)
s.settimeout(5.0)
start = time.monotonic(); n = 0; t1 = None; n1 = 0
while time.monotonic() - start < secs:
    b = s.recv(1 << 16)
    if not b: break
    n += len(b)
    if t1 is None and time.monotonic() - start >= 1.0:
        t1 = time.monotonic(); n1 = n
print((n - n1) / (time.monotonic() - t1))
"#;

/// The sender: listens on HOST:PORT, prints `listening`, and sends zeros to the first client
/// until it goes away.
const SENDER: &str = r#"
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind((host, port)); l.listen(1); print("listening", flush=True)
c, _ = l.accept(); buf = bytes(1 << 16)
try:
    while True: c.sendall(buf)
except OSError:
    pass
"#;

/// Starts the sender in namespace `ns` on 10.231.0.1:`port` and waits until it listens.
fn spawn_sender(ns: &str, script: &Path, port: &str) -> std::process::Child {
    let mut sender = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "python3",
            script.to_str().unwrap(),
            "10.231.0.1",
            port,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(sender.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "listening");
    sender
}

#[test]
fn rendered_tc_and_nft_apply_in_a_namespace_and_hold_the_rate() {
    let missing = netns_missing();
    if !missing.is_empty() {
        if std::env::var_os("PERSONAFLOW_SKIP_NETNS").is_some() {
            eprintln!("skipped (PERSONAFLOW_SKIP_NETNS): missing {missing:?}");
            return;
        }
        panic!(
            "the namespace test needs {missing:?} (run scripts/setup-netfilter.sh as root, or \
             set PERSONAFLOW_SKIP_NETNS=1 to skip it)"
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = backfilled_model_free(tmp.path(), 150, 0.1, 18);
    // The user whose latest policy has the smallest ceiling above 2 Mbit/s (a rate a Python
    // sender fills easily).
    let policies = output_table(&out, "policies");
    let mut latest: std::collections::BTreeMap<String, (i64, f64, f64)> = Default::default();
    for r in 0..policies.len() {
        let user = policies.column("user_id")[r].str().to_string();
        let w = policies.column("window_end")[r].int();
        let e = latest.entry(user).or_insert((i64::MIN, 0.0, 0.0));
        if w > e.0 {
            *e = (
                w,
                num(policies.column("ceiling_bps")[r]),
                num(policies.column("allocated_bps")[r]),
            );
        }
    }
    let (user, (_, ceiling, allocated)) = latest
        .into_iter()
        .filter(|(_, (_, c, _))| *c >= 2e6)
        .min_by(|a, b| a.1 .1.total_cmp(&b.1 .1))
        .expect("a user with a ceiling above 2 Mbit/s");

    let id = std::process::id() % 100_000;
    let (a, b) = (format!("pfa{id}"), format!("pfb{id}"));
    let (va, vb) = (format!("pfva{id}"), format!("pfvb{id}"));
    let _guard = Namespaces(vec![a.clone(), b.clone()]);
    sh(&["ip", "netns", "add", &a]);
    sh(&["ip", "netns", "add", &b]);
    sh(&[
        "ip", "link", "add", &va, "netns", &a, "type", "veth", "peer", "name", &vb, "netns", &b,
    ]);
    let in_ns = |ns: &str, cmd: &[&str]| {
        let mut args = vec!["ip", "netns", "exec", ns];
        args.extend_from_slice(cmd);
        sh(&args)
    };
    in_ns(&a, &["ip", "addr", "add", "10.231.0.1/30", "dev", &va]);
    in_ns(&b, &["ip", "addr", "add", "10.231.0.2/30", "dev", &vb]);
    for (ns, dev) in [(&a, &va), (&b, &vb)] {
        in_ns(ns, &["ip", "link", "set", dev, "up"]);
        in_ns(ns, &["ip", "link", "set", "lo", "up"]);
    }

    // Render and apply both, in namespace A (the network side of the user's link).
    let render = |format: &str, file: &Path| {
        run(&[
            "policy",
            "render",
            "--outputs",
            out.to_str().unwrap(),
            "--user",
            &user,
            "--format",
            format,
            "--dev",
            &va,
            "--out",
            file.to_str().unwrap(),
        ])
        .ok();
    };
    let (tc_file, nft_file) = (tmp.path().join("user.tc.sh"), tmp.path().join("user.nft"));
    render("tc", &tc_file);
    render("nft", &nft_file);
    in_ns(&a, &["sh", tc_file.to_str().unwrap()]);
    in_ns(&a, &["nft", "-f", nft_file.to_str().unwrap()]);
    // Applying twice replaces, never duplicates.
    in_ns(&a, &["sh", tc_file.to_str().unwrap()]);
    in_ns(&a, &["nft", "-f", nft_file.to_str().unwrap()]);

    // Read back: the HTB class as the policy says (the kernel rounds rates to its clock).
    let classes = in_ns(&a, &["tc", "-s", "class", "show", "dev", &va]);
    let class = classes
        .lines()
        .find(|l| l.starts_with("class htb 1:10 "))
        .unwrap_or_else(|| panic!("no class 1:10 in\n{classes}"));
    let close = |got: f64, want: f64| (got - want).abs() <= want * 0.01 + 8.0;
    assert!(
        close(tc_rate(class, "rate"), allocated.max(8.0)),
        "{class} vs {allocated}"
    );
    assert!(
        close(tc_rate(class, "ceil"), ceiling),
        "{class} vs {ceiling}"
    );
    let ruleset = in_ns(&a, &["nft", "list", "ruleset"]);
    let table = format!("table inet personaflow_{}", user);
    assert_eq!(ruleset.matches(&table).count(), 1, "{ruleset}");
    assert!(
        ruleset.contains("@allowed_ports") && ruleset.contains("ip dscp set"),
        "{ruleset}"
    );

    // A real TCP flow from the network (A, port 443: allowed for every persona) to the user
    // (B) through the shaped link.
    let (sender_py, receiver_py) = (tmp.path().join("sender.py"), tmp.path().join("receiver.py"));
    std::fs::write(&sender_py, SENDER).unwrap();
    std::fs::write(&receiver_py, RECEIVER).unwrap();
    let mut sender = spawn_sender(&a, &sender_py, "443");
    let measured = in_ns(
        &b,
        &[
            "python3",
            receiver_py.to_str().unwrap(),
            "10.231.0.1",
            "443",
            "5",
            "30",
        ],
    );
    let _ = sender.kill();
    let _ = sender.wait();
    let bytes_per_s: f64 = measured
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{measured}"));
    let bits = bytes_per_s * 8.0;
    // TCP payload against the HTB ceiling on Ethernet frames (40 bytes of headers and 14 of
    // Ethernet per 1,448-byte segment: about 3.6% of the wire rate).
    let payload_ceiling = ceiling * 1448.0 / 1514.0;
    eprintln!(
        "user {user}: ceiling {ceiling} bit/s, TCP payload {bits:.0} bit/s ({:.1}% of the payload ceiling)",
        100.0 * bits / payload_ceiling
    );
    assert!(
        (bits - payload_ceiling).abs() <= 0.10 * payload_ceiling,
        "measured {bits:.0} bit/s against a ceiling of {ceiling} bit/s"
    );
    let stats = in_ns(&a, &["tc", "-s", "class", "show", "dev", &va]);
    assert!(
        !stats.contains("Sent 0 bytes"),
        "the flow went through the class:\n{stats}"
    );

    // A port the policy does not allow is dropped on the way in from the user.
    let started = Instant::now();
    let mut blocked_sender = spawn_sender(&a, &sender_py, "9");
    let refused = in_ns(
        &b,
        &[
            "python3",
            receiver_py.to_str().unwrap(),
            "10.231.0.1",
            "9",
            "1",
            "3",
        ],
    );
    let _ = blocked_sender.kill();
    let _ = blocked_sender.wait();
    assert_eq!(refused.trim(), "refused", "port 9 got through");
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn a_bad_catalogue_fails_before_any_output_naming_the_file_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = tmp.path().join("sim");
    simulate(&sim, 20, 0.02, 3, &[]).ok();
    let good = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/data/personas.toml"))
        .unwrap();
    let cases: [(&str, String, &str); 4] = [
        (
            "dscp",
            good.replacen("dscp = 32", "dscp = 46", 1),
            "personas.gamer.dscp (46) is not a DSCP of class real-time-interactive",
        ),
        (
            "bounds",
            good.replacen("ceiling_kbps = 50000.0", "ceiling_kbps = 10.0", 1),
            "personas.gamer.bandwidth needs floor_kbps <= guaranteed_kbps <= ceiling_kbps",
        ),
        (
            "mapping",
            good.replacen("gamer = \"gamer\"", "gamer = \"gamers\"", 1),
            "mapping.segments.gamer maps to \"gamers\", which is not in [personas]",
        ),
        (
            "type",
            good.replacen(
                "allowed_ports = [80, 443, 3074,",
                "allowed_ports = [80, 443, 70000,",
                1,
            ),
            "personas.gamer.security.allowed_ports[2]: port 70000 is not in 1..=65535",
        ),
    ];
    for (name, text, expected) in cases {
        assert_ne!(text, good, "{name}: the case changes the catalogue");
        let catalogue = tmp.path().join(format!("{name}.toml"));
        std::fs::write(&catalogue, text).unwrap();
        let config = tmp.path().join(format!("{name}-job.toml"));
        std::fs::write(&config, format!("[policy]\ncatalogue = \"{name}.toml\"\n")).unwrap();
        let out = tmp.path().join(format!("out-{name}"));
        let run = backfill(
            &sim.join("events"),
            &out,
            &["--config", config.to_str().unwrap()],
        );
        let line = run.fails_with_one_line();
        assert!(line.contains(&format!("{name}.toml")), "{name}: {line}");
        assert!(line.contains(expected), "{name}: {line}");
        assert!(!out.exists(), "{name}: nothing is written");
    }
}

#[test]
fn evaluate_shaping_compares_the_policies_with_foresight() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("job.toml");
    // Model-free and small: this is about the command, EVALUATION.md has the real run.
    std::fs::write(
        &config,
        "[embedder]\nkind = \"standardised\"\n[forecaster]\nkind = \"persistence\"\n",
    )
    .unwrap();
    let json = tmp.path().join("shaping.json");
    let run = run(&[
        "evaluate",
        "shaping",
        "--users",
        "60",
        "--days",
        "0.3",
        "--epochs",
        "3",
        "--config",
        config.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ])
    .ok();
    for policy in [
        "static persona",
        "static blend",
        "predictive",
        "predictive + admission",
        "reactive",
        "learned (Q)",
        "foresight + admission (ref)",
    ] {
        assert!(run.stdout.contains(policy), "{policy} in\n{}", run.stdout);
    }
    assert!(run.stdout.contains("held-out (all)"), "{}", run.stdout);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let held_out = report["held_out"].as_object().unwrap();
    assert_eq!(held_out.len(), 8);
    for (policy, score) in held_out {
        let qoe = score["qoe"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&qoe), "{policy}: {qoe}");
        assert!(score["demanded_bits"].as_f64().unwrap() > 0.0, "{policy}");
    }
}
