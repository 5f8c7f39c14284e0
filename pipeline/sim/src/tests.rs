use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int32Type, TimestampMillisecondType, UInt64Type};
use arrow_array::{Array, RecordBatch, StringArray};
use chrono::DateTime;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;

use super::*;
use personaflow_operators::window::features::Fnv;

fn config(users: usize, days: f64, seed: u64) -> SimulationConfig {
    SimulationConfig::new(users, days, seed)
}

fn run(config: &SimulationConfig) -> (Vec<Event>, Vec<UserTruth>) {
    let mut simulator = Simulator::new(config).unwrap();
    let mut events = Vec::new();
    while let Some(chunk) = simulator.next_chunk() {
        events.extend(chunk);
    }
    (events, simulator.truth().to_vec())
}

fn segment_of(truth: &[UserTruth]) -> HashMap<String, String> {
    truth
        .iter()
        .map(|u| (u.user_id.clone(), u.segment.clone()))
        .collect()
}

fn of_segment<'a>(
    events: &'a [Event],
    segments: &'a HashMap<String, String>,
    segment: &'a str,
) -> impl Iterator<Item = &'a Event> + 'a {
    events
        .iter()
        .filter(move |e| segments[&e.user_id] == segment)
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    assert!(n > 0, "mean of nothing");
    sum / n as f64
}

#[test]
fn same_seed_gives_the_same_events_and_another_seed_other_events() {
    let a = run(&config(60, 0.25, 7));
    let b = run(&config(60, 0.25, 7));
    let c = run(&config(60, 0.25, 8));
    assert!(a.0.len() > 1_000, "only {} events", a.0.len());
    assert_eq!(a, b);
    assert_ne!(a.0, c.0);
}

#[test]
fn chunk_length_does_not_change_the_events() {
    let hourly = config(40, 0.3, 3);
    let fine = SimulationConfig {
        chunk_ms: 7 * MINUTE_MS,
        ..hourly.clone()
    };
    assert_eq!(run(&hourly), run(&fine));
}

#[test]
fn chunks_are_time_ordered_and_inside_the_period() {
    let config = SimulationConfig {
        chunk_ms: 20 * MINUTE_MS,
        ..config(50, 0.5, 11)
    };
    let mut simulator = Simulator::new(&config).unwrap();
    let (start, end) = (simulator.start_ms(), simulator.end_ms());
    assert_eq!(end - start, DAY_MS / 2);
    let mut last = i64::MIN;
    let mut chunks = 0;
    let mut total = 0u64;
    while let Some(chunk) = simulator.next_chunk() {
        assert!(!chunk.is_empty());
        chunks += 1;
        total += chunk.len() as u64;
        for e in &chunk {
            assert!(e.ts_ms >= last, "{} after {}", e.ts_ms, last);
            assert!((start..end).contains(&e.ts_ms));
            last = e.ts_ms;
        }
    }
    assert!(chunks > 20, "{chunks} chunks");
    assert_eq!(simulator.events_emitted(), total);
    assert_eq!(simulator.events_per_segment().values().sum::<u64>(), total);
    assert!(simulator.next_chunk().is_none());
}

#[test]
fn every_segment_is_present_and_the_authenticated_share_holds() {
    let (events, truth) = run(&config(50, 0.5, 5));
    let segments = segment_of(&truth);
    for segment in SEGMENTS {
        let users: Vec<&UserTruth> = truth.iter().filter(|u| u.segment == segment).collect();
        assert!(!users.is_empty(), "no {segment} users");
        assert!(
            users.iter().any(|u| u.authenticated),
            "no authenticated {segment}"
        );
        assert!(
            of_segment(&events, &segments, segment).count() > 0,
            "no {segment} events"
        );
    }
    let authenticated = truth.iter().filter(|u| u.authenticated).count();
    assert!((22..=28).contains(&authenticated), "{authenticated} of 50");
    let ids: BTreeSet<&str> = truth.iter().map(|u| u.user_id.as_str()).collect();
    assert_eq!(ids.len(), 50);

    for (share, expected) in [(0.0, 0), (1.0, 7)] {
        let (_, truth) = run(&SimulationConfig {
            authenticated_share: share,
            ..config(7, 0.01, 1)
        });
        assert_eq!(truth.iter().filter(|u| u.authenticated).count(), expected);
    }
}

#[test]
fn only_authenticated_users_events_carry_their_segment() {
    let (events, truth) = run(&config(80, 0.3, 9));
    let by_id: HashMap<&str, &UserTruth> = truth.iter().map(|u| (u.user_id.as_str(), u)).collect();
    let (mut with, mut without) = (0, 0);
    for e in &events {
        let user = by_id[e.user_id.as_str()];
        assert_eq!(e.authenticated, user.authenticated);
        if user.authenticated {
            assert_eq!(e.segment.as_deref(), Some(user.segment.as_str()));
            with += 1;
        } else {
            assert_eq!(e.segment, None);
            without += 1;
        }
        assert_eq!(e.device.as_deref(), Some(user.device.as_str()));
        assert_eq!(e.country.as_deref(), Some(user.country.as_str()));
        assert!(e
            .session_id
            .as_deref()
            .is_some_and(|s| s.starts_with(&e.user_id)));
    }
    assert!(with > 0 && without > 0);
}

/// Share of a segment's events whose local hour (user's time zone) is in `hours`, on
/// weekdays.
fn local_share(
    events: &[Event],
    truth: &[UserTruth],
    segment: &str,
    hours: std::ops::Range<i64>,
) -> f64 {
    let offsets: HashMap<&str, i64> = truth
        .iter()
        .filter(|u| u.segment == segment)
        .map(|u| (u.user_id.as_str(), u.utc_offset_min * MINUTE_MS))
        .collect();
    let mut inside = 0usize;
    let mut total = 0usize;
    for e in events {
        if let Some(offset) = offsets.get(e.user_id.as_str()) {
            let local = e.ts_ms + offset;
            let weekday = (local.div_euclid(DAY_MS) + EPOCH_WEEKDAY).rem_euclid(7) < SATURDAY;
            if weekday {
                total += 1;
                inside += usize::from(hours.contains(&(local.rem_euclid(DAY_MS) / HOUR_MS)));
            }
        }
    }
    assert!(total > 0, "no weekday {segment} events");
    inside as f64 / total as f64
}

#[test]
fn segments_behave_measurably_differently() {
    // Tuesday 2026-01-06 00:00 UTC to Wednesday: a full weekday in every time zone but AU/JP/KR
    // early hours, which are still Tuesday locally.
    let config = SimulationConfig {
        start_ms: DEFAULT_START_MS + DAY_MS,
        ..config(300, 1.0, 21)
    };
    let (events, truth) = run(&config);
    let segments = segment_of(&truth);

    // Volume: 150-400 events per user and day on average.
    let per_user_day = events.len() as f64 / 300.0;
    assert!(
        (150.0..=400.0).contains(&per_user_day),
        "{per_user_day} events per user per day"
    );

    // Bytes: video chunks are megabytes, IoT heartbeats and telemetry are tiny.
    let bytes_in = |segment: &str| {
        mean(of_segment(&events, &segments, segment).map(|e| e.bytes_in.unwrap_or(0) as f64))
    };
    assert!(
        bytes_in("video_streamer") > 100.0 * bytes_in("iot_device"),
        "video {} vs iot {}",
        bytes_in("video_streamer"),
        bytes_in("iot_device")
    );
    // Gamers' moves are fast; devices on slow links are slow.
    let median_latency = |segment: &str| {
        let mut l: Vec<f64> = of_segment(&events, &segments, segment)
            .filter_map(|e| e.latency_ms)
            .collect();
        l.sort_by(f64::total_cmp);
        l[l.len() / 2]
    };
    assert!(median_latency("gamer") * 3.0 < median_latency("iot_device"));

    // Remote workers work business hours (local time); casual browsing is spread out.
    let worker = local_share(&events, &truth, "remote_worker", 8..19);
    let casual = local_share(&events, &truth, "casual_browser", 8..19);
    assert!(worker > 0.85, "remote workers: {worker} in business hours");
    assert!(casual < 0.7, "casual browsers: {casual} in business hours");
    // Gamers play in the evening.
    let gamer_evening = local_share(&events, &truth, "gamer", 17..24);
    assert!(
        gamer_evening > 0.5,
        "gamers: {gamer_evening} in the evening"
    );

    // Devices are active around the clock: every UTC hour within 35% of the mean.
    let mut hourly = [0usize; 24];
    for e in of_segment(&events, &segments, "iot_device") {
        hourly[(e.ts_ms.rem_euclid(DAY_MS) / HOUR_MS) as usize] += 1;
    }
    let avg = hourly.iter().sum::<usize>() as f64 / 24.0;
    for (hour, n) in hourly.iter().enumerate() {
        let ratio = *n as f64 / avg;
        assert!((0.65..1.35).contains(&ratio), "iot hour {hour}: {ratio}");
    }
    // Heartbeats every few minutes: most iot events are heartbeats or telemetry.
    let iot_actions: BTreeSet<&str> = of_segment(&events, &segments, "iot_device")
        .map(|e| e.action.as_str())
        .collect();
    assert!(iot_actions.contains("heartbeat") && iot_actions.contains("telemetry"));
    assert!(!iot_actions.contains("game_move"));

    // Device and OS mixes.
    for u in truth.iter().filter(|u| u.segment == "iot_device") {
        assert!(u.os == "linux" || u.os == "rtos", "iot os {}", u.os);
    }
    let casual_users: Vec<&UserTruth> = truth
        .iter()
        .filter(|u| u.segment == "casual_browser")
        .collect();
    let mobile = casual_users.iter().filter(|u| u.device == "mobile").count();
    assert!(mobile * 2 > casual_users.len());

    // Action vocabularies overlap on page_view but differ in their signature actions.
    let actions = |segment: &str| -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for e in of_segment(&events, &segments, segment) {
            *counts.entry(e.action.clone()).or_insert(0) += 1;
        }
        counts
    };
    for (segment, signature) in [
        ("gamer", "game_move"),
        ("video_streamer", "stream_chunk"),
        ("remote_worker", "api_call"),
        ("casual_browser", "page_view"),
    ] {
        let counts = actions(segment);
        assert!(
            counts.contains_key("page_view"),
            "{segment} never views a page"
        );
        let top = counts
            .iter()
            .max_by_key(|(_, n)| **n)
            .map(|(a, _)| a.as_str());
        assert_eq!(top, Some(signature), "{segment}: {counts:?}");
    }

    // Users within a segment differ (per-user multipliers).
    let per_user: BTreeMap<&str, usize> =
        of_segment(&events, &segments, "casual_browser").fold(BTreeMap::new(), |mut m, e| {
            *m.entry(e.user_id.as_str()).or_insert(0) += 1;
            m
        });
    let counts: Vec<usize> = per_user.values().copied().collect();
    let (lo, hi) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
    assert!(hi > &(2 * lo), "casual browsers all alike: {lo}..{hi}");

    // Some errors, mostly successes.
    let errors = events
        .iter()
        .filter(|e| e.status.unwrap_or(0) >= 500)
        .count();
    assert!(errors > 0 && errors * 10 < events.len(), "{errors} 5xx");
}

fn split_at_time<'a>(
    events: &'a [Event],
    segments: &'a HashMap<String, String>,
    segment: &'a str,
    t: i64,
) -> (Vec<&'a Event>, Vec<&'a Event>) {
    of_segment(events, segments, segment).partition(|e| e.ts_ms < t)
}

#[test]
fn drifts_change_their_segment_after_their_start_and_nothing_before() {
    let offset = 6 * HOUR_MS;
    let base_config = config(200, 0.5, 13);
    let t = base_config.start_ms + offset;
    let drifts: Vec<DriftSpec> = [
        "gamer@6h:bytes=3",
        "video_streamer@6h:errors=0.5",
        "iot_device@360m:rate=3",
        "remote_worker@6h:latency=2",
        "casual_browser@0.25d:mix:video_streamer=0.8",
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect();
    let (base, truth) = run(&base_config);
    let (drifted, truth2) = run(&SimulationConfig {
        drifts,
        ..base_config.clone()
    });
    assert_eq!(truth, truth2);
    let segments = segment_of(&truth);

    // Before the drifts, everything is identical.
    let before = |events: &[Event]| -> Vec<Event> {
        events.iter().filter(|e| e.ts_ms < t).cloned().collect()
    };
    assert_eq!(before(&base), before(&drifted));
    // Drifts of attributes leave the times of events alone: only rate drifts move them.
    let timing = |events: &[Event]| -> Vec<(i64, String, Option<String>)> {
        events
            .iter()
            .filter(|e| segments[&e.user_id] != "iot_device")
            .map(|e| (e.ts_ms, e.user_id.clone(), e.session_id.clone()))
            .collect()
    };
    assert_eq!(timing(&base), timing(&drifted));

    // bytes: same events, three times the bytes.
    let (_, b) = split_at_time(&base, &segments, "gamer", t);
    let (_, d) = split_at_time(&drifted, &segments, "gamer", t);
    assert_eq!(b.len(), d.len());
    let sum = |v: &[&Event]| {
        v.iter()
            .map(|e| e.bytes_in.unwrap_or(0) as f64)
            .sum::<f64>()
    };
    let ratio = sum(&d) / sum(&b);
    assert!((2.95..3.05).contains(&ratio), "bytes ratio {ratio}");

    // errors: half of the video events fail after the start.
    let fails = |v: &[&Event]| {
        v.iter().filter(|e| e.status.unwrap_or(0) >= 500).count() as f64 / v.len() as f64
    };
    let (_, b) = split_at_time(&base, &segments, "video_streamer", t);
    let (_, d) = split_at_time(&drifted, &segments, "video_streamer", t);
    assert!(
        fails(&b) < 0.1 && fails(&d) > 0.4,
        "{} -> {}",
        fails(&b),
        fails(&d)
    );

    // rate: about three times as many device events.
    let (_, b) = split_at_time(&base, &segments, "iot_device", t);
    let (_, d) = split_at_time(&drifted, &segments, "iot_device", t);
    let ratio = d.len() as f64 / b.len() as f64;
    assert!((2.5..3.5).contains(&ratio), "rate ratio {ratio}");

    // latency: twice as slow.
    let latency = |v: &[&Event]| mean(v.iter().filter_map(|e| e.latency_ms));
    let (_, b) = split_at_time(&base, &segments, "remote_worker", t);
    let (_, d) = split_at_time(&drifted, &segments, "remote_worker", t);
    let ratio = latency(&d) / latency(&b);
    assert!((1.7..2.3).contains(&ratio), "latency ratio {ratio}");

    // mix: casual browsers start streaming.
    let streaming = |v: &[&Event]| {
        v.iter().filter(|e| e.action == "stream_chunk").count() as f64 / v.len() as f64
    };
    let (_, b) = split_at_time(&base, &segments, "casual_browser", t);
    let (_, d) = split_at_time(&drifted, &segments, "casual_browser", t);
    assert!(
        streaming(&b) < 0.1 && streaming(&d) > 0.35,
        "{} -> {}",
        streaming(&b),
        streaming(&d)
    );
}

#[test]
fn a_pace_drift_multiplies_the_requests_of_sessions_not_their_number() {
    let base_config = config(300, 0.5, 17);
    let t = base_config.start_ms + 6 * HOUR_MS;
    let (base, truth) = run(&base_config);
    let (drifted, _) = run(&SimulationConfig {
        drifts: vec!["gamer@6h:pace=3".parse().unwrap()],
        ..base_config.clone()
    });
    let segments = segment_of(&truth);
    let (b0, b) = split_at_time(&base, &segments, "gamer", t);
    let (d0, d) = split_at_time(&drifted, &segments, "gamer", t);
    assert_eq!(b0.len(), d0.len());
    let ratio = d.len() as f64 / b.len() as f64;
    assert!((2.3..3.7).contains(&ratio), "events ratio {ratio}");
    let sessions = |v: &[&Event]| {
        v.iter()
            .filter_map(|e| e.session_id.clone())
            .collect::<HashSet<_>>()
            .len() as f64
    };
    let ratio = sessions(&d) / sessions(&b);
    assert!((0.8..1.25).contains(&ratio), "sessions ratio {ratio}");
}

#[test]
fn a_ramped_drift_reaches_the_segments_users_one_by_one_over_the_ramp() {
    let base_config = config(300, 0.5, 17);
    let (base, truth) = run(&base_config);
    let (drifted, _) = run(&SimulationConfig {
        drifts: vec!["gamer@2h+4h:bytes=4".parse().unwrap()],
        ..base_config.clone()
    });
    // A bytes drift leaves the times of events alone: the two runs differ only in the bytes of
    // the events after each gamer's own take-up.
    assert_eq!(base.len(), drifted.len());
    let segments = segment_of(&truth);
    let (from, to) = (
        base_config.start_ms + 2 * HOUR_MS,
        base_config.start_ms + 6 * HOUR_MS,
    );
    // (changed, unchanged) gamer events with bytes, before, within and after the ramp.
    let mut counts = [(0, 0); 3];
    for (b, d) in base.iter().zip(&drifted) {
        assert_eq!((&b.user_id, b.ts_ms), (&d.user_id, d.ts_ms));
        let changed = b.bytes_in != d.bytes_in;
        if segments[&b.user_id] != "gamer" {
            assert!(!changed);
            continue;
        }
        if b.bytes_in.unwrap_or(0) == 0 {
            continue;
        }
        let phase = match b.ts_ms {
            t if t < from => 0,
            t if t < to => 1,
            _ => 2,
        };
        let c = &mut counts[phase];
        if changed {
            c.0 += 1
        } else {
            c.1 += 1
        }
    }
    let [before, within, after] = counts;
    assert_eq!(before.0, 0, "{counts:?}");
    assert!(within.0 > 50 && within.1 > 50, "{counts:?}");
    assert!(after.0 > 50 && after.1 == 0, "{counts:?}");
    // The share of gamers that have taken it up grows with time.
    let user_take_up = |user: &str| {
        let adoption = Fnv::hash_str(user) as f64 / (u64::MAX as f64 + 1.0);
        from + (adoption * (to - from) as f64) as i64
    };
    for (b, d) in base.iter().zip(&drifted) {
        if segments[&b.user_id] == "gamer" && b.bytes_in.unwrap_or(0) > 0 {
            assert_eq!(
                b.bytes_in != d.bytes_in,
                d.ts_ms >= user_take_up(&d.user_id)
            );
        }
    }
}

#[test]
fn a_drift_leaves_other_segments_alone() {
    let base_config = config(100, 0.3, 17);
    let (base, truth) = run(&base_config);
    let (drifted, _) = run(&SimulationConfig {
        drifts: vec!["gamer@2h:rate=4".parse().unwrap()],
        ..base_config
    });
    let segments = segment_of(&truth);
    let others = |events: &[Event]| -> Vec<Event> {
        events
            .iter()
            .filter(|e| segments[&e.user_id] != "gamer")
            .cloned()
            .collect()
    };
    assert_eq!(others(&base), others(&drifted));
    let gamers = |events: &[Event]| of_segment(events, &segments, "gamer").count();
    assert!(gamers(&drifted) > gamers(&base));
}

/// Reads events back from canonical Parquet batches.
fn batch_events(batch: &RecordBatch) -> Vec<Event> {
    let column = |name: &str| batch.column_by_name(name).unwrap().clone();
    let ts = column("ts");
    let ts = ts.as_primitive::<TimestampMillisecondType>();
    let strings: Vec<StringArray> = [
        "user_id",
        "session_id",
        "segment",
        "action",
        "category",
        "device",
        "os",
        "country",
    ]
    .iter()
    .map(|n| column(n).as_string::<i32>().clone())
    .collect();
    let text = |a: &StringArray, r: usize| (!a.is_null(r)).then(|| a.value(r).to_string());
    let auth = column("authenticated");
    let auth = auth.as_boolean();
    let bytes_in = column("bytes_in");
    let bytes_in = bytes_in.as_primitive::<UInt64Type>();
    let bytes_out = column("bytes_out");
    let bytes_out = bytes_out.as_primitive::<UInt64Type>();
    let latency = column("latency_ms");
    let latency = latency.as_primitive::<Float64Type>();
    let status = column("status");
    let status = status.as_primitive::<Int32Type>();
    (0..batch.num_rows())
        .map(|r| Event {
            ts_ms: ts.value(r),
            user_id: strings[0].value(r).to_string(),
            session_id: text(&strings[1], r),
            authenticated: auth.value(r),
            segment: text(&strings[2], r),
            action: strings[3].value(r).to_string(),
            category: text(&strings[4], r),
            bytes_in: (!bytes_in.is_null(r)).then(|| bytes_in.value(r)),
            bytes_out: (!bytes_out.is_null(r)).then(|| bytes_out.value(r)),
            latency_ms: (!latency.is_null(r)).then(|| latency.value(r)),
            status: (!status.is_null(r)).then(|| status.value(r)),
            device: text(&strings[5], r),
            os: text(&strings[6], r),
            country: text(&strings[7], r),
        })
        .collect()
}

fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(all_files(&path));
        } else {
            files.push(path);
        }
    }
    files.sort();
    files
}

#[test]
fn files_read_back_equal_the_events_in_memory() {
    let config = SimulationConfig {
        // 22:00 UTC, 4.8 hours: crosses midnight into a second date partition.
        start_ms: DEFAULT_START_MS + 22 * HOUR_MS,
        rows_per_file: 500,
        row_group_rows: 150,
        drifts: vec!["gamer@1h:latency=1.5".parse().unwrap()],
        ..config(60, 0.2, 2)
    };
    let dir = tempfile::tempdir().unwrap();
    let mut calls = Vec::new();
    let summary = simulate_to_dir(&config, dir.path(), &mut |n| calls.push(n)).unwrap();
    let (expected, truth) = run(&config);

    assert_eq!(summary.events, expected.len() as u64);
    assert_eq!(calls.last().copied(), Some(summary.events));
    assert!(calls.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(summary.first_ts_ms, expected.first().map(|e| e.ts_ms));
    assert_eq!(summary.last_ts_ms, expected.last().map(|e| e.ts_ms));

    // Every file is complete (no temporary names left) and the event files come in order.
    let files = all_files(dir.path());
    assert!(files
        .iter()
        .all(|f| !f.file_name().unwrap().to_string_lossy().starts_with('.')));
    let event_files: Vec<PathBuf> = files
        .iter()
        .filter(|f| f.starts_with(dir.path().join(EVENTS_DIR)))
        .cloned()
        .collect();
    assert_eq!(event_files, summary.event_files);
    let dates: BTreeSet<String> = event_files
        .iter()
        .map(|f| {
            f.parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(
        dates.into_iter().collect::<Vec<_>>(),
        ["date=2026-01-05", "date=2026-01-06"]
    );
    assert!(
        event_files.len() as u64 >= summary.events / 500,
        "{} events in {event_files:?}",
        summary.events
    );
    assert!(event_files.len() > 3, "{event_files:?}");

    let mut read = Vec::new();
    for path in &event_files {
        let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap();
        let metadata = builder.metadata().clone();
        assert_eq!(builder.schema(), &personaflow_io::schema::event_schema());
        let mut rows = 0;
        for group in metadata.row_groups() {
            assert!(group.num_rows() <= 150);
            assert_eq!(group.column(0).compression(), Compression::SNAPPY);
            rows += group.num_rows();
        }
        assert!(rows <= 500);
        let date = path
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        for batch in builder.build().unwrap() {
            let events = batch_events(&batch.unwrap());
            for e in &events {
                let day = DateTime::from_timestamp_millis(e.ts_ms).unwrap();
                assert_eq!(date, day.format("date=%Y-%m-%d").to_string());
            }
            read.extend(events);
        }
    }
    assert_eq!(read, expected);

    // Truth.
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&summary.users_file).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let mut users = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let names: Vec<&str> = batch
            .schema_ref()
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        assert_eq!(names, ["user_id", "segment", "authenticated"]);
        let ids = batch.column(0).as_string::<i32>();
        let segs = batch.column(1).as_string::<i32>();
        let auth = batch.column(2).as_boolean();
        for r in 0..batch.num_rows() {
            users.push((
                ids.value(r).to_string(),
                segs.value(r).to_string(),
                auth.value(r),
            ));
        }
    }
    let expected_users: Vec<(String, String, bool)> = truth
        .iter()
        .map(|u| (u.user_id.clone(), u.segment.clone(), u.authenticated))
        .collect();
    assert_eq!(users, expected_users);
    assert_eq!(summary.users, 60);

    let drifts: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&summary.drifts_file).unwrap()).unwrap();
    assert_eq!(
        drifts,
        serde_json::json!([{
            "segment": "gamer",
            "start": "2026-01-05T23:00:00.000Z",
            "start_ms": DEFAULT_START_MS + 23 * HOUR_MS,
            "start_offset_ms": HOUR_MS,
            "kind": "latency",
            "magnitude": 1.5,
            "ramp_ms": 0,
        }])
    );
    let incidents: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&summary.incidents_file).unwrap()).unwrap();
    assert_eq!(
        incidents.len(),
        Simulator::new(&config).unwrap().incidents().len()
    );
}

#[test]
fn refuses_to_overwrite_events_unless_asked() {
    let config = config(10, 0.05, 4);
    let dir = tempfile::tempdir().unwrap();
    let first = simulate_to_dir(&config, dir.path(), &mut |_| {}).unwrap();
    assert!(!first.event_files.is_empty());
    let err = simulate_to_dir(&config, dir.path(), &mut |_| {}).unwrap_err();
    assert!(matches!(err, Error::Output { .. }), "{err}");
    assert!(err.to_string().contains("overwrite"), "{err}");
    // The refused run left the earlier output alone.
    assert!(first.event_files.iter().all(|f| f.exists()));

    let stale = dir.path().join(EVENTS_DIR).join("date=1999-01-01");
    std::fs::create_dir_all(&stale).unwrap();
    let again = simulate_to_dir(
        &SimulationConfig {
            overwrite: true,
            ..config.clone()
        },
        dir.path(),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(again.events, first.events);
    assert!(!stale.exists());
    let drifts = std::fs::read_to_string(&again.drifts_file).unwrap();
    assert_eq!(drifts.trim(), "[]");

    // An empty events directory is fine without overwrite.
    let empty = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(empty.path().join(EVENTS_DIR)).unwrap();
    simulate_to_dir(&config, empty.path(), &mut |_| {}).unwrap();
}

#[test]
fn drift_strings_parse_and_bad_ones_are_rejected_with_a_reason() {
    let d: DriftSpec = "remote_worker@90m:rate=0.5".parse().unwrap();
    assert_eq!(d.start_offset_ms, 90 * MINUTE_MS);
    assert_eq!(d.kind, DriftKind::Rate);
    let d: DriftSpec = "iot_device@1500ms:errors=0.2".parse().unwrap();
    assert_eq!(d.start_offset_ms, 1_500);
    let d: DriftSpec = "gamer@2d:latency=1.5".parse().unwrap();
    assert_eq!(d.start_offset_ms, 2 * DAY_MS);
    assert_eq!(d.to_string().parse::<DriftSpec>().unwrap(), d);
    let d: DriftSpec = "gamer@30s:mix:casual_browser=1".parse().unwrap();
    assert_eq!(d.to_string().parse::<DriftSpec>().unwrap(), d);

    for (bad, needle) in [
        ("gamer:bytes=3", "'@'"),
        ("gamer@36h", "':'"),
        ("gamer@36h:bytes", "MAGNITUDE"),
        ("gamer@36:bytes=3", "offset"),
        ("gamer@-1h:bytes=3", "offset"),
        ("gamer@36h:volume=3", "unknown drift kind"),
        ("gamer@36h:bytes=lots", "not a number"),
        ("gamer@36h:bytes=0", "> 0"),
        ("gamer@36h:errors=1.5", "[0, 1]"),
        ("gamers@36h:bytes=3", "unknown segment"),
        ("gamer@36h:mix=0.5", "target segment"),
        ("gamer@36h:mix:tv=0.5", "unknown mix target"),
        ("gamer@36h:mix:gamer=0.5", "another segment"),
    ] {
        let err = bad.parse::<DriftSpec>().unwrap_err();
        assert!(matches!(err, Error::Config { .. }), "{bad}: {err}");
        assert!(err.to_string().contains(needle), "{bad}: {err}");
    }
}

#[test]
fn invalid_configurations_are_rejected_with_a_reason() {
    let ok = config(10, 1.0, 1);
    ok.validate().unwrap();
    for (bad, needle) in [
        (
            SimulationConfig {
                users: 0,
                ..ok.clone()
            },
            "users",
        ),
        (
            SimulationConfig {
                days: 0.0,
                ..ok.clone()
            },
            "days",
        ),
        (
            SimulationConfig {
                days: f64::NAN,
                ..ok.clone()
            },
            "days",
        ),
        (
            SimulationConfig {
                authenticated_share: 1.5,
                ..ok.clone()
            },
            "share",
        ),
        (
            SimulationConfig {
                chunk_ms: 0,
                ..ok.clone()
            },
            "chunk",
        ),
        (
            SimulationConfig {
                row_group_rows: 0,
                ..ok.clone()
            },
            "row group",
        ),
        (
            SimulationConfig {
                start_ms: -1,
                ..ok.clone()
            },
            "start",
        ),
        (
            SimulationConfig {
                drifts: vec!["gamer@2d:bytes=2".parse().unwrap()],
                ..ok.clone()
            },
            "after the end",
        ),
        (
            SimulationConfig {
                drifts: vec![DriftSpec {
                    segment: "nobody".into(),
                    start_offset_ms: 0,
                    kind: DriftKind::Bytes,
                    magnitude: 2.0,
                    ramp_ms: 0,
                }],
                ..ok.clone()
            },
            "unknown segment",
        ),
    ] {
        let err = Simulator::new(&bad).unwrap_err();
        assert!(matches!(err, Error::Config { .. }), "{err}");
        assert!(err.to_string().contains(needle), "{needle}: {err}");
    }
}

#[test]
fn the_population_splits_by_weight_and_covers_every_segment() {
    assert_eq!(segment_counts(100), [15, 25, 20, 10, 30]);
    assert_eq!(segment_counts(5), [1, 1, 1, 1, 1]);
    assert_eq!(segment_counts(3).iter().sum::<usize>(), 3);
    for users in [1, 5, 6, 7, 13, 999] {
        let counts = segment_counts(users);
        assert_eq!(counts.iter().sum::<usize>(), users);
        if users >= SEGMENTS.len() {
            assert!(counts.iter().all(|c| *c > 0), "{users}: {counts:?}");
        }
    }
    let names: Vec<&str> = profiles::PROFILES.iter().map(|p| p.name).collect();
    assert_eq!(names, SEGMENTS);
}

#[test]
fn the_daily_curve_is_normalised_and_continuous() {
    for profile in profiles::PROFILES {
        let curve = Curve::new(&profile.hourly);
        let steps = 24 * 60;
        let mean = (0..steps).map(|m| curve.at(m as f64 / 60.0)).sum::<f64>() / steps as f64;
        assert!((mean - 1.0).abs() < 1e-6, "{}: {mean}", profile.name);
        assert!((curve.at(0.0) - curve.at(23.999_999)).abs() < 1e-3);
        assert!((0..steps).all(|m| curve.at(m as f64 / 60.0) <= curve.peak + 1e-12));
    }
}

#[test]
fn sparse_activity_sets_every_users_session_rate_and_stops_heartbeats() {
    let sessions_per_user_day = |c: &SimulationConfig, events: &[Event]| {
        let sessions: HashSet<(&str, &str)> = events
            .iter()
            .filter(|e| e.action != "heartbeat")
            .filter_map(|e| Some((e.user_id.as_str(), e.session_id.as_deref()?)))
            .collect();
        sessions.len() as f64 / c.users as f64 / c.days
    };
    let dense = config(600, 2.0, 11);
    let (dense_events, dense_truth) = run(&dense);
    assert!(dense_events.iter().any(|e| e.action == "heartbeat"));
    let dense_rate = sessions_per_user_day(&dense, &dense_events);
    for n in [0.5, 2.0] {
        let sparse = SimulationConfig {
            sessions_per_day: Some(n),
            ..dense.clone()
        };
        let (events, truth) = run(&sparse);
        assert_eq!(truth, dense_truth, "the same users, traits and segments");
        assert!(events.iter().all(|e| e.action != "heartbeat"));
        let rate = sessions_per_user_day(&sparse, &events);
        assert!(
            (rate - n).abs() < 0.15 * n,
            "{n} sessions a day asked, {rate:.3} made"
        );
        assert!(rate < dense_rate / 2.0, "{rate} against {dense_rate}");
        assert_eq!(run(&sparse).0, events, "seeded");
    }
    for bad in [
        0.0,
        -1.0,
        f64::NAN,
        f64::INFINITY,
        MAX_SESSIONS_PER_DAY * 2.0,
    ] {
        let c = SimulationConfig {
            sessions_per_day: Some(bad),
            ..dense.clone()
        };
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("sessions per day"), "{bad}: {err}");
    }
}

#[test]
fn session_minutes_set_every_users_session_length() {
    // A session's span: its first to its last event, in minutes, mean over sessions.
    let mean_span = |events: &[Event]| {
        let mut spans: HashMap<(&str, &str), (i64, i64)> = HashMap::new();
        for e in events.iter().filter(|e| e.action != "heartbeat") {
            if let Some(s) = e.session_id.as_deref() {
                let span = spans.entry((&e.user_id, s)).or_insert((e.ts_ms, e.ts_ms));
                span.0 = span.0.min(e.ts_ms);
                span.1 = span.1.max(e.ts_ms);
            }
        }
        mean(spans.values().map(|(a, b)| (b - a) as f64 / 60_000.0))
    };
    let base = SimulationConfig {
        sessions_per_day: Some(3.0),
        ..config(400, 1.0, 5)
    };
    let (events, truth) = run(&base);
    let long = mean_span(&events);
    let short = SimulationConfig {
        session_minutes: Some(1.0),
        ..base.clone()
    };
    let (short_events, short_truth) = run(&short);
    assert_eq!(short_truth, truth);
    let span = mean_span(&short_events);
    assert!(
        span < 3.0,
        "1-minute sessions span {span:.2} minutes on average"
    );
    assert!(long > 10.0 * span, "{long:.2} against {span:.2}");
    assert!(short_events.len() * 5 < events.len());
    for bad in [0.0, f64::NAN, MAX_SESSION_MINUTES + 1.0] {
        let c = SimulationConfig {
            session_minutes: Some(bad),
            ..base.clone()
        };
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("session minutes"), "{bad}: {err}");
    }
}
