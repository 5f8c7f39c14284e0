//! The shipped ingest mappings on the real data in `../shared/data` (skipped when absent).

use crate::support::*;
use std::collections::BTreeSet;
use std::path::Path;

/// Data rows of a Zeek log with the value of `field` in each, in file order.
fn zeek_column(log: &str, field: &str) -> Vec<String> {
    let fields: Vec<&str> = log
        .lines()
        .find_map(|l| l.strip_prefix("#fields\t"))
        .expect("a #fields header")
        .split('\t')
        .collect();
    let idx = fields.iter().position(|f| *f == field).expect("the field");
    log.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            l.split('\t')
                .nth(idx)
                .expect("the field's cell")
                .to_string()
        })
        .collect()
}

#[test]
fn zeek_conn_log_through_the_shipped_mapping() {
    let Some(data) = shared_data("zeek_conn_log_through_the_shipped_mapping") else {
        return;
    };
    let log_path = data.join("zeek/conn.log");
    let log = std::fs::read_to_string(&log_path).unwrap();
    let hosts = zeek_column(&log, "id.orig_h");
    assert_eq!(hosts.len(), 360, "the fixture has 360 flows");

    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("zeek");
    let zeek_mapping = mapping("zeek_conn.toml");
    backfill(
        &log_path,
        &out,
        &["--mapping", zeek_mapping.to_str().unwrap()],
    )
    .ok();

    let json = run_json(&out);
    let (events, rejects) = (json_u64(&json, "/events"), json_u64(&json, "/rejects"));
    assert_eq!(json_u64(&json, "/rows_read"), 360);
    assert_eq!(events + rejects, 360);
    assert!(events > 0);
    let rejected = crate::support::rejects(&out);
    assert_eq!(rejected.len() as u64, rejects);
    assert_eq!(json["rows_written"]["rejects"].as_u64(), Some(rejects));
    assert!(
        json["inputs"][0]
            .as_str()
            .is_some_and(|s| s.ends_with("zeek/conn.log")),
        "{json}"
    );

    // Users are exactly the originating hosts of the accepted flows.
    let rejected_rows: BTreeSet<u64> = rejected.iter().map(|r| r.1).collect();
    let accepted_hosts: BTreeSet<&str> = hosts
        .iter()
        .enumerate()
        .filter(|(i, _)| !rejected_rows.contains(&(*i as u64 + 1)))
        .map(|(_, h)| h.as_str())
        .collect();
    let profiles = output_table(&out, "profiles");
    let users: BTreeSet<&str> = profiles.column("user_id").iter().map(|v| v.str()).collect();
    assert_eq!(users, accepted_hosts);
    assert!(users.len() <= 22, "{} users", users.len());

    // Every accepted flow is counted once in the features, all on 2013-09-15.
    let features = output_table(&out, "features");
    let counted: i64 = features.column("events").iter().map(|v| v.int()).sum();
    assert_eq!(counted as u64, events);
    assert_eq!(features.len(), profiles.len());
    for table in ["features", "profiles"] {
        assert_eq!(
            check_partitions(&out, table, DEFAULT_WINDOW_MS),
            ["2013-09-15"]
        );
    }
    assert_eq!(
        json["first_window_end"].as_str(),
        Some("2013-09-15T23:45:00+00:00")
    );
}

/// CDNOW is ordered by customer, not by time: it spans 546 days, so a backfill needs
/// `ingest.max_out_of_order` of at least that to accept every purchase.
/// Backfills the CDNOW log through the shipped mapping with a job config.
fn backfill_cdnow(input: &Path, out: &Path, config: &Path) {
    let cdnow_mapping = mapping("cdnow.toml");
    backfill(
        input,
        out,
        &[
            "--mapping",
            cdnow_mapping.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ],
    )
    .ok();
}

#[test]
fn cdnow_through_the_shipped_mapping_with_daily_windows() {
    let Some(data) = shared_data("cdnow_through_the_shipped_mapping_with_daily_windows") else {
        return;
    };
    let input = data.join("cdnow/CDNOW_master.txt");
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("cdnow-job.toml");
    std::fs::write(
        &config,
        "[window]\nlength = \"1d\"\n[ingest]\nmax_out_of_order = \"600d\"\n",
    )
    .unwrap();
    let out = tmp.path().join("cdnow");
    backfill_cdnow(&input, &out, &config);

    let json = run_json(&out);
    assert_eq!(json_u64(&json, "/rows_read"), 69_659);
    assert_eq!(json_u64(&json, "/events"), 69_659);
    assert_eq!(json_u64(&json, "/rejects"), 0);
    assert_eq!(json_u64(&json, "/windows"), 546);
    assert_eq!(json["config"]["window"]["length"], "1d");
    assert_eq!(
        json["first_window_end"].as_str(),
        Some("1997-01-02T00:00:00+00:00")
    );
    assert_eq!(
        json["last_window_end"].as_str(),
        Some("1998-07-01T00:00:00+00:00")
    );

    let features = read_dir_columns(
        &out.join("features"),
        Some(&["window_end", "user_id", "events"]),
    );
    let users: BTreeSet<&str> = features.column("user_id").iter().map(|v| v.str()).collect();
    assert_eq!(users.len(), 23_570);
    assert!(
        users.contains("00001") && users.contains("23570"),
        "ids kept as text"
    );
    let counted: i64 = features.column("events").iter().map(|v| v.int()).sum();
    assert_eq!(counted, 69_659);
    assert_eq!(
        json_u64(&json, "/rows_written/features"),
        features.len() as u64
    );
    assert_eq!(
        json_u64(&json, "/rows_written/profiles"),
        features.len() as u64
    );
    let dates = check_partitions(&out, "features", 86_400_000);
    assert_eq!(dates.first().map(String::as_str), Some("1997-01-01"));
    assert_eq!(dates.last().map(String::as_str), Some("1998-06-30"));
}

/// With daily windows and the default 5-minute disorder bound, the customer-ordered CDNOW
/// log is mostly late: every row is still accounted for, as an event or a `late` reject.
#[test]
fn cdnow_out_of_order_purchases_are_rejected_as_late_not_lost() {
    let Some(data) = shared_data("cdnow_out_of_order_purchases_are_rejected_as_late_not_lost")
    else {
        return;
    };
    let input = data.join("cdnow/CDNOW_master.txt");
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("daily.toml");
    std::fs::write(&config, "[window]\nlength = \"1d\"\n").unwrap();
    let out = tmp.path().join("cdnow");
    backfill_cdnow(&input, &out, &config);
    let json = run_json(&out);
    let (events, late) = (json_u64(&json, "/events"), json_u64(&json, "/late_events"));
    assert_eq!(json_u64(&json, "/rows_read"), 69_659);
    assert_eq!(json_u64(&json, "/rejects"), late);
    assert_eq!(events + late, 69_659);
    assert!(late > 60_000, "only {late} late purchases");
    assert_eq!(
        json["rejects_by_reason"],
        serde_json::json!({ "late": late })
    );
    let rejected = crate::support::rejects(&out);
    assert_eq!(rejected.len() as u64, late);
    let file = input.display().to_string();
    let mut rows = BTreeSet::new();
    for (f, row, field, reason) in &rejected {
        assert_eq!(f, &file);
        assert!((1..=69_659).contains(row));
        assert!(rows.insert(*row), "row {row} rejected twice");
        assert_eq!(field.as_deref(), Some("ts"));
        assert!(reason.starts_with("late:"), "{reason}");
    }
    let features = read_dir_columns(&out.join("features"), Some(&["user_id", "events"]));
    let counted: i64 = features.column("events").iter().map(|v| v.int()).sum();
    assert_eq!(counted as u64, events);
}
