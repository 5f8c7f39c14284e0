//! `personaflow synth` on a backfill with the models: the same seed writes the same files;
//! each synthetic user's events, re-aggregated, follow the decoder's output for its latent
//! point (decoded again here); the shift along a detected drift moves every latent point by
//! K times the drift's direction, recounted from the profiles.

use crate::support::*;
use personaflow_models::decoder::{VaeDecoder, DECODER_FILE};
use personaflow_models::runtime::SessionOptions;
use personaflow_operators::window::features::NUM_FEATURES;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A scenario with drift, backfilled with the models (few users per window suffice for
/// personas and drift).
fn backfilled(dir: &Path) -> PathBuf {
    let sim = dir.join("sim");
    simulate(&sim, 300, 0.5, 5, &["--drift", "gamer@5h:bytes=8"]).ok();
    let out = dir.join("out");
    let mut cmd = personaflow();
    backfill_cmd(
        cmd.env("PERSONAFLOW__PERSONAS__MIN_USERS", "5")
            .env("PERSONAFLOW__DRIFT__MIN_POINTS", "4"),
        &sim.join("events"),
        &out,
        &[],
    );
    run_cmd(&mut cmd).ok();
    out
}

fn synth(profiles: &Path, out: &Path, extra: &[&str]) -> Run {
    let mut cmd = personaflow();
    cmd.arg("synth")
        .arg("--profiles")
        .arg(profiles)
        .arg("--out")
        .arg(out)
        .args(["--users", "120", "--duration", "2h", "--seed", "11"])
        .args(extra);
    run_cmd(&mut cmd)
}

/// The files under `dir`, relative path to bytes.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

fn latents(out: &Path) -> BTreeMap<String, Vec<f32>> {
    let t = read_dir_table(&out.join("truth"));
    (0..t.len())
        .map(|r| {
            let Value::List(items) = t.column("latent")[r] else {
                panic!("latent is a list")
            };
            (
                t.column("user_id")[r].str().to_string(),
                items.iter().map(|v| v.float() as f32).collect(),
            )
        })
        .collect()
}

/// A local HTTP service answering every request 200, recording their request lines.
fn http_service() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(conn) = conn else { break };
            let s = s.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(conn);
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut length = 0;
                    loop {
                        let mut h = String::new();
                        if r.read_line(&mut h).unwrap_or(0) == 0 {
                            return;
                        }
                        if h.trim().is_empty() {
                            break;
                        }
                        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; length];
                    if r.read_exact(&mut body).is_err() {
                        return;
                    }
                    s.lock().unwrap().push(line.trim().to_string());
                    if r.get_mut()
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

#[test]
fn synth_is_seeded_follows_the_decoder_and_shifts_along_a_drift() {
    let tmp = tempfile::tempdir().unwrap();
    let profiles = backfilled(tmp.path());

    // The same seed, the same files.
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    synth(&profiles, &a, &[]).ok();
    synth(&profiles, &b, &[]).ok();
    let fa = files(&a);
    assert!(
        fa.keys().any(|k| k.starts_with("events/date=")),
        "{:?}",
        fa.keys()
    );
    assert!(fa.contains_key("truth/users.parquet"));
    assert_eq!(fa, files(&b), "two runs with one seed wrote the same bytes");

    // The truth: one row per user, from the profiles' populations.
    let truth = read_dir_table(&a.join("truth"));
    assert_eq!(truth.len(), 120);
    let segments: std::collections::BTreeSet<String> = {
        let p = output_table(&profiles, "profiles");
        (0..p.len())
            .filter_map(|r| p.column("segment")[r].opt_str().map(str::to_string))
            .collect()
    };
    for r in 0..truth.len() {
        let pop = truth.column("population")[r].str();
        assert!(pop == "unknown" || segments.contains(pop), "{pop}");
    }

    // A persona's users: every synthetic user is drawn from that persona.
    let assignments = output_table(&profiles, "persona_assignments");
    let persona = assignments.column("persona_id")[0].int().to_string();
    let p = tmp.path().join("persona");
    synth(&profiles, &p, &["--persona", &persona]).ok();
    let pt = read_dir_table(&p.join("truth"));
    assert_eq!(pt.len(), 120);
    let want = format!("persona-{persona}");
    assert!((0..pt.len()).all(|r| pt.column("population")[r].str() == want));

    // The residuals come from every population's real windows.
    let plain_run = synth(
        &profiles,
        &tmp.path().join("means"),
        &["--residuals", "off"],
    )
    .ok();
    let means = tmp.path().join("means");
    assert!(!plain_run.stderr.contains("residuals of real windows"));
    let with = synth(&profiles, &tmp.path().join("with"), &[]).ok();
    let line = with
        .stderr
        .lines()
        .find(|l| l.contains("synth: residuals of real windows: "))
        .unwrap_or_else(|| panic!("{}", with.stderr));
    for pop in line.split(": ").nth(2).unwrap().split(", ") {
        let n: usize = pop.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(n > 0, "{line}");
    }

    // Each user's events (decoded means, --residuals off), window by window, against the
    // decoder's output for its point: the j-th window with events has the event count and
    // bytes of the j-th decoded step with any events (steps cycling through the sequence).
    let a = means;
    let z = latents(&a);
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("models/onnx")
        .join(DECODER_FILE);
    let mut decoder = VaeDecoder::open(&path, &SessionOptions::default()).unwrap();
    let l = decoder.info().sequence_len;
    let users: Vec<&String> = z.keys().collect();
    let flat: Vec<f32> = users.iter().flat_map(|u| z[*u].clone()).collect();
    let decoded = decoder.decode(users.len(), &flat).unwrap();
    let events = read_dir_table(&a.join("events"));
    // user -> window start -> (events, bytes in)
    let mut windows: BTreeMap<String, BTreeMap<i64, (u64, u64)>> = BTreeMap::new();
    for r in 0..events.len() {
        let w = windows
            .entry(events.column("user_id")[r].str().to_string())
            .or_default()
            .entry(events.column("ts")[r].int().div_euclid(60_000))
            .or_default();
        w.0 += 1;
        w.1 += events.column("bytes_in")[r].int() as u64;
    }
    // The generator decodes with the step decoder, this test with the full one: the same
    // weights, but float sums in another order, so a value may differ in its last bits. A
    // count within a part in 1e5 of a rounding boundary may round either way: such a user is
    // skipped (counted below); bytes agree to a part in 1e5.
    let (mut checked, mut skipped) = (0, 0);
    for (k, user) in users.iter().enumerate() {
        let mut ambiguous = false;
        let steps: Vec<(u64, u64)> = (0..l)
            .map(|s| {
                let x = &decoded[(k * l + s) * NUM_FEATURES..(k * l + s + 1) * NUM_FEATURES];
                let v = f64::from(x[0]).exp_m1().max(0.0);
                ambiguous |= ((v - v.floor()) - 0.5).abs() < 1e-5 * (1.0 + v);
                let n = (v.round() as u64).min(100_000);
                let bytes = (f64::from(x[2]).exp_m1().max(0.0) * 60.0).round() as u64;
                (n, bytes)
            })
            .collect();
        if ambiguous {
            skipped += 1;
            continue;
        }
        let seen: Vec<(u64, u64)> = windows
            .get(*user)
            .map(|w| w.values().copied().collect())
            .unwrap_or_default();
        let active: Vec<(u64, u64)> = steps.iter().copied().filter(|s| s.0 > 0).collect();
        if active.is_empty() {
            assert!(
                seen.is_empty(),
                "{user}: events from a sequence without any"
            );
            continue;
        }
        // Steps with no events are skipped windows too, so the seen windows follow the active
        // steps in turn from the first.
        for (j, got) in seen.iter().enumerate() {
            let want = active[j % active.len()];
            assert_eq!(got.0, want.0, "{user}: events of active window {j}");
            assert!(
                got.1.abs_diff(want.1) as f64 <= 1.0 + 1e-5 * want.1 as f64,
                "{user}: bytes in of active window {j}: {} vs {}",
                got.1,
                want.1
            );
            checked += 1;
        }
    }
    assert!(checked > 200, "{checked} user-windows checked");
    assert!(skipped <= 3, "{skipped} users near a rounding boundary");

    // The load driver: the events replayed as HTTP requests against a local service, paced
    // (30 synthetic minutes at 600x: 3 s at most) and bounded by --limit.
    let (addr, seen) = http_service();
    let mut cmd = personaflow();
    cmd.arg("synth")
        .arg("--profiles")
        .arg(&profiles)
        .args(["--users", "120", "--duration", "30m", "--seed", "11"])
        .args(["--http", &format!("http://{addr}/load"), "--speedup", "600"])
        .args(["--limit", "150", "--connections", "4"]);
    let run = run_cmd(&mut cmd).ok();
    let report: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    let sent = report["sent"].as_u64().unwrap();
    assert!(sent > 0 && sent <= 150, "{report}");
    assert_eq!(report["ok"].as_u64().unwrap(), sent, "{report}");
    assert_eq!(report["errors"], 0);
    assert!(report["p99_ms"].as_f64().unwrap() >= report["p50_ms"].as_f64().unwrap());
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len() as u64, sent);
    assert!(
        seen.iter()
            .all(|r| r.starts_with("GET /load/synth_category_")
                || r.starts_with("POST /load/synth_category_")),
        "{seen:?}"
    );
    drop(seen);

    // Publishing to a topic: the continuous job reads every synthetic event.
    let (_cluster, brokers) = crate::stream::cluster(2);
    let mut cmd = personaflow();
    cmd.arg("synth")
        .arg("--profiles")
        .arg(&profiles)
        .args(["--users", "60", "--duration", "20m", "--seed", "11"])
        .args([
            "--brokers",
            &brokers,
            "--topic",
            "events",
            "--speedup",
            "100000",
        ])
        .args(["--limit", "100"]);
    let published = run_cmd(&mut cmd).ok();
    assert!(
        published
            .stderr
            .contains("synth: 100 events published to events"),
        "the limit bounds the events published: {}",
        published.stderr
    );
    let stream_out = tmp.path().join("stream");
    let mut job = crate::stream::run_job_cmd(&brokers, &stream_out, &["--until-end"]);
    job.env("PERSONAFLOW__EMBEDDER__KIND", "standardised")
        .env("PERSONAFLOW__FORECASTER__KIND", "persistence");
    run_cmd(&mut job).ok();
    let features = output_table(&stream_out, "features");
    let events: i64 = (0..features.len())
        .map(|r| features.column("events")[r].int())
        .sum();
    assert_eq!(events, 100, "every published event was read");
    assert!((0..features.len()).all(|r| features.column("user_id")[r].str().starts_with("syn")));

    // The shift along the latest iot_device drift, K = 2, against the direction recounted
    // from the profiles: the segment's mean latent point from the onset to the detection
    // minus its mean over the 60 windows (the drift baseline) before the onset.
    let drift = output_table(&profiles, "drift");
    let (detected, onset) = (0..drift.len())
        .filter(|&r| {
            drift.column("scope")[r].str() == "segment"
                && drift.column("scope_id")[r].str() == "iot_device"
        })
        .map(|r| {
            (
                drift.column("window_end")[r].int(),
                drift.column("onset_window_end")[r].int(),
            )
        })
        .max()
        .expect("the scenario's iot_device drift is detected");
    let p = output_table(&profiles, "profiles");
    let mut sums = [(vec![0f64; 0], 0u64), (vec![0f64; 0], 0u64)];
    for r in 0..p.len() {
        if p.column("segment")[r].opt_str() != Some("iot_device") {
            continue;
        }
        let t = p.column("window_end")[r].int();
        let i = if (onset - 60 * 60_000..onset).contains(&t) {
            0
        } else if (onset..=detected).contains(&t) {
            1
        } else {
            continue;
        };
        let Value::List(e) = p.column("embedding")[r] else {
            panic!("an embedding is a list")
        };
        let (s, n) = &mut sums[i];
        s.resize(e.len(), 0.0);
        for (a, v) in s.iter_mut().zip(e) {
            *a += v.float();
        }
        *n += 1;
    }
    let direction: Vec<f64> = sums[1]
        .0
        .iter()
        .zip(&sums[0].0)
        .map(|(c, b)| c / sums[1].1 as f64 - b / sums[0].1 as f64)
        .collect();
    let (plain, shifted) = (tmp.path().join("plain"), tmp.path().join("shifted"));
    let shift = ["--shift-along-drift", "segment:iot_device"];
    synth(
        &profiles,
        &plain,
        &[&shift[..], &["--magnitude", "0"]].concat(),
    )
    .ok();
    synth(
        &profiles,
        &shifted,
        &[&shift[..], &["--magnitude", "2"]].concat(),
    )
    .ok();
    let (zp, zs) = (latents(&plain), latents(&shifted));
    for (user, p) in &zp {
        for ((a, b), d) in p.iter().zip(&zs[user]).zip(&direction) {
            let moved = f64::from(b - a);
            assert!((moved - 2.0 * d).abs() < 1e-3, "{user}: {moved} vs 2 x {d}");
        }
    }
    // --volume forecast: the factors printed are the forecasts' sums at the last origin
    // over their mean at every origin (recounted here), and each window's active users follow
    // them: the same draw decides, so a factor above 1 only adds users to the plain run's
    // window and one below only removes them; the counts match the users' activities.
    let forecasts = output_table(&profiles, "forecasts");
    let mut sums: BTreeMap<(i64, i64), f64> = BTreeMap::new();
    for r in 0..forecasts.len() {
        *sums
            .entry((
                forecasts.column("window_end")[r].int(),
                forecasts.column("horizon")[r].int(),
            ))
            .or_default() += forecasts.column("predicted_requests")[r].float();
    }
    let origin = sums.keys().map(|k| k.0).max().expect("forecasts");
    let factors: Vec<f64> = (1..=4)
        .map(|h| {
            let at: Vec<f64> = sums
                .iter()
                .filter(|((_, hh), _)| *hh == h)
                .map(|(_, v)| *v)
                .collect();
            sums[&(origin, h)] / (at.iter().sum::<f64>() / at.len() as f64)
        })
        .collect();
    let (vplain, vscaled) = (tmp.path().join("vplain"), tmp.path().join("vscaled"));
    let many = |out: &Path, extra: &[&str]| {
        let mut cmd = personaflow();
        cmd.arg("synth")
            .arg("--profiles")
            .arg(&profiles)
            .arg("--out")
            .arg(out)
            .args(["--users", "1500", "--duration", "6m", "--seed", "11"])
            .args(extra);
        run_cmd(&mut cmd).ok()
    };
    many(&vplain, &[]);
    let run = many(&vscaled, &["--volume", "forecast"]);
    let shown: Vec<String> = factors.iter().map(|f| format!("{f:.2}")).collect();
    assert!(
        run.stderr.contains(&format!("x[{}]", shown.join(", "))),
        "factors {shown:?} recounted, printed: {}",
        run.stderr
    );
    let active = |dir: &Path| {
        let e = read_dir_table(&dir.join("events"));
        let mut w: BTreeMap<i64, std::collections::BTreeSet<String>> = BTreeMap::new();
        for r in 0..e.len() {
            w.entry(e.column("ts")[r].int().div_euclid(60_000))
                .or_default()
                .insert(e.column("user_id")[r].str().to_string());
        }
        w
    };
    let (wp, ws) = (active(&vplain), active(&vscaled));
    let truth = read_dir_table(&vplain.join("truth"));
    let activity: Vec<f64> = (0..truth.len())
        .map(|r| truth.column("activity")[r].float())
        .collect();
    let first = wp.keys().chain(ws.keys()).min().copied().unwrap();
    for k in 0..6i64 {
        let f = factors[(k as usize).min(3)];
        let (p, s) = (
            wp.get(&(first + k)).cloned().unwrap_or_default(),
            ws.get(&(first + k)).cloned().unwrap_or_default(),
        );
        // Which users show events: in the first window every active user decodes its first
        // step in both runs, so the sets nest exactly. After it, a user's active windows step
        // through its decoded sequence in turn: an extra (or a missing) window earlier moves
        // its later steps, and a step may decode no events, so a few users may cross (one of
        // 110 in window 5 with the models of b3063cb). Independent draws would cross most.
        let (fewer, more) = if f >= 1.0 { (&p, &s) } else { (&s, &p) };
        let crossed = fewer.difference(more).count();
        let allowed = if k == 0 { 0 } else { fewer.len() / 10 };
        assert!(
            crossed <= allowed,
            "window {k}: factor {f}: {crossed} of {} users of the run with fewer active users \
             show no events in the other (at most {allowed})",
            fewer.len()
        );
        // Expected active users (an active user with no decoded events shows no events,
        // so the count is at most this; within 5 standard deviations of it, less those).
        let mean: f64 = activity.iter().map(|a| (a * f).min(1.0)).sum();
        let var: f64 = activity
            .iter()
            .map(|a| (a * f).min(1.0) * (1.0 - (a * f).min(1.0)))
            .sum();
        let got = s.len() as f64;
        assert!(
            got <= mean + 5.0 * var.sqrt() + 1.0 && got >= 0.8 * mean - 5.0 * var.sqrt() - 1.0,
            "window {k}: {got} users active, expected about {mean:.0} (factor {f:.2})"
        );
    }

    // Naming the detection picks that drift: the latest one here, so the same points.
    let named = tmp.path().join("named");
    let at = format!("segment:iot_device@{detected}");
    synth(
        &profiles,
        &named,
        &["--shift-along-drift", &at, "--magnitude", "2"],
    )
    .ok();
    assert_eq!(latents(&named), zs);
    let line = synth(
        &profiles,
        &tmp.path().join("never"),
        &["--shift-along-drift", "segment:iot_device@1"],
    )
    .fails_with_one_line();
    assert!(line.contains("no drift \"segment:iot_device@1\""), "{line}");

    // A drift that is not there is named with the ones that are.
    let line = synth(
        &profiles,
        &tmp.path().join("none"),
        &["--shift-along-drift", "segment:nobody"],
    )
    .fails_with_one_line();
    assert!(line.contains("no drift \"segment:nobody\""), "{line}");
    assert!(line.contains("segment:iot_device"), "{line}");
}

/// `evaluate synthetic` of a scenario against an identical copy: every KS statistic 0, the
/// MMD about 0, a classifier that cannot tell them apart (AUC about 0.5), and TSTR equal to
/// TRTR; and its errors name the directory that is not a scenario.
#[test]
fn evaluate_synthetic_finds_a_copy_indistinguishable() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    simulate(&a, 150, 0.2, 8, &[]).ok();
    simulate(&b, 150, 0.2, 8, &[]).ok();
    let json = tmp.path().join("fidelity.json");
    let mut cmd = personaflow();
    cmd.env("PERSONAFLOW__EMBEDDER__KIND", "standardised")
        .env("PERSONAFLOW__FORECASTER__KIND", "persistence")
        .args(["evaluate", "synthetic", "--max-rows", "1500", "--real"])
        .arg(&a)
        .arg("--synthetic")
        .arg(&b)
        .arg("--json")
        .arg(&json);
    let run = run_cmd(&mut cmd).ok();
    assert!(run.stdout.contains("classifier AUC"), "{}", run.stdout);
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    for ks in r["ks"].as_array().unwrap() {
        assert_eq!(ks[1].as_f64().unwrap(), 0.0, "{ks}");
    }
    assert!(r["mmd2"].as_f64().unwrap().abs() < 1e-3, "{}", r["mmd2"]);
    let auc = r["discriminator_auc"].as_f64().unwrap();
    assert!((auc - 0.5).abs() < 0.1, "{auc}");
    assert_eq!(r["auc_goal_met"], true);
    let (tstr, trtr) = (r["tstr"].as_f64().unwrap(), r["trtr"].as_f64().unwrap());
    assert!(trtr > 0.3 && (tstr - trtr).abs() < 0.05, "{tstr} vs {trtr}");
    assert_eq!(r["segments"].as_array().unwrap().len(), 5);

    let mut cmd = personaflow();
    cmd.args(["evaluate", "synthetic", "--real"])
        .arg(&a)
        .arg("--synthetic")
        .arg(tmp.path());
    let line = run_cmd(&mut cmd).fails_with_one_line();
    assert!(line.contains("expected a scenario directory"), "{line}");
}
