//! Evaluation of the drift detector: on simulator scenarios with drifts injected at known
//! times (detection delay, false alarms), on the Turing Change Point Dataset (F1 against the
//! human annotations, as in van den Burg & Williams 2020) and on the Numenta Anomaly
//! Benchmark (detections against the labelled anomaly windows).
//!
//! Metric series (TCPD, NAB) go through the same [`DriftDetector`](personaflow_operators::drift::DriftDetector) as the pipeline's segment
//! and persona profiles: one step per row, the row's values as the step's single point.

use crate::resonance::{for_each_batch, parquet_files};
use crate::{Error, Result};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, TimestampMillisecondType, UInt64Type};
use arrow_array::Array;
use personaflow_dataflow::backfill::{self, Backfill, NoProgress};
use personaflow_dataflow::config::Config;
use personaflow_operators::drift::changepoint::{ChangeConfig, ChangeDetector};
use personaflow_sim::{simulate_to_dir, DriftSpec, SimulationConfig};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

/// Margin of the TCPD F1, in rows.
pub const TCPD_MARGIN: usize = 5;

/// The detector setting every metric series is evaluated with (one for all series).
pub fn series_config() -> ChangeConfig {
    ChangeConfig::default()
}

/// A change found in a series.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChangePoint {
    /// Estimated first row of the new regime (what TCPD scores).
    pub row: usize,
    /// Row the detector raised the alarm at.
    pub detected_at: usize,
    /// Test statistic.
    pub statistic: f64,
    /// Permutation-test p-value.
    pub p_value: f64,
}

/// Runs the online change-point detector over a series of rows.
pub fn detect_series(rows: &[Vec<f32>], config: &ChangeConfig) -> Vec<ChangePoint> {
    let mut detector = ChangeDetector::new(config.clone());
    rows.iter()
        .filter_map(|row| {
            let row: Vec<f64> = row.iter().map(|x| f64::from(*x)).collect();
            detector.update(&row)
        })
        .map(|c| ChangePoint {
            row: c.location as usize,
            detected_at: c.detected_at as usize,
            statistic: c.statistic,
            p_value: c.p_value,
        })
        .collect()
}

/// The rows of a TCPD CSV (as shipped by `river`) that make up the series the annotations
/// index: the TCPD repository subsamples two of them (`apple`: `get_apple.py` drops the first
/// row and keeps every 3rd; `brent_crude_oil`: `convert.py` keeps every 10th day from the
/// first of 2000, 500 points); the other series are used whole.
pub fn tcpd_rows(file: &str, rows: Vec<Vec<f32>>) -> Vec<Vec<f32>> {
    match file {
        "apple.csv" => rows.into_iter().skip(1).step_by(3).collect(),
        "brent_crude_oil.csv" => rows.into_iter().skip(3200).step_by(10).take(500).collect(),
        _ => rows,
    }
}

/// Rows of the TCPD metric: points matched one to one within `margin`, nearest first.
fn true_positives(truth: &BTreeSet<usize>, predicted: &BTreeSet<usize>, margin: usize) -> usize {
    let mut left: BTreeSet<usize> = predicted.clone();
    let mut hits = 0;
    for &tau in truth {
        let best = left
            .iter()
            .filter(|&&x| x.abs_diff(tau) <= margin)
            .min_by_key(|&&x| (x.abs_diff(tau), x))
            .copied();
        if let Some(x) = best {
            left.remove(&x);
            hits += 1;
        }
    }
    hits
}

/// Precision, recall and F1 as in the TCPD paper: row 0 counts as a change point in every
/// set; precision against the union of the annotators' points; recall averaged over
/// annotators.
///
/// ```
/// use personaflow_eval::drift::tcpd_f1;
/// let annotators = vec![vec![10], vec![12]];
/// // Predicting nothing: precision 1 (row 0), recall 1/2.
/// let (p, r, f) = tcpd_f1(&annotators, &[], 5);
/// assert_eq!((p, r), (1.0, 0.5));
/// assert!((f - 2.0 / 3.0).abs() < 1e-12);
/// ```
pub fn tcpd_f1(annotators: &[Vec<usize>], predicted: &[usize], margin: usize) -> (f64, f64, f64) {
    let mut x: BTreeSet<usize> = predicted.iter().copied().collect();
    x.insert(0);
    let sets: Vec<BTreeSet<usize>> = annotators
        .iter()
        .map(|a| a.iter().copied().chain([0]).collect())
        .collect();
    let union: BTreeSet<usize> = sets.iter().flatten().copied().collect();
    let precision = true_positives(&union, &x, margin) as f64 / x.len() as f64;
    let recall = sets
        .iter()
        .map(|t| true_positives(t, &x, margin) as f64 / t.len() as f64)
        .sum::<f64>()
        / sets.len().max(1) as f64;
    let f1 = if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    };
    (precision, recall, f1)
}

/// One TCPD series' result.
#[derive(Clone, Debug, Serialize)]
pub struct TcpdSeries {
    /// File name.
    pub file: String,
    /// Rows.
    pub rows: usize,
    /// Value columns used.
    pub columns: Vec<String>,
    /// Annotators.
    pub annotators: usize,
    /// Change points found.
    pub predicted: Vec<ChangePoint>,
    /// Precision.
    pub precision: f64,
    /// Recall.
    pub recall: f64,
    /// F1.
    pub f1: f64,
    /// F1 of predicting no change point (the "zero" baseline).
    pub f1_nothing: f64,
}

/// The TCPD evaluation.
#[derive(Clone, Debug, Serialize)]
pub struct TcpdReport {
    /// Detector setting (one for all series).
    pub config: ChangeConfig,
    /// Margin, rows.
    pub margin: usize,
    /// Per series.
    pub series: Vec<TcpdSeries>,
    /// Mean F1.
    pub mean_f1: f64,
    /// Mean F1 of predicting nothing.
    pub mean_f1_nothing: f64,
}

impl TcpdReport {
    /// A plain-text table.
    pub fn to_table(&self) -> String {
        let mut s = format!(
            "{:<26} {:>5} {:>5} {:>9} {:>9} {:>7} {:>7} {:>9}\n",
            "series", "rows", "found", "precision", "recall", "F1", "F1 nil", "annotated"
        );
        for r in &self.series {
            s += &format!(
                "{:<26} {:>5} {:>5} {:>9.3} {:>9.3} {:>7.3} {:>7.3} {:>9}\n",
                r.file,
                r.rows,
                r.predicted.len(),
                r.precision,
                r.recall,
                r.f1,
                r.f1_nothing,
                r.annotators
            );
        }
        s += &format!(
            "{:<26} {:>5} {:>5} {:>9} {:>9} {:>7.3} {:>7.3}\n",
            "mean", "", "", "", "", self.mean_f1, self.mean_f1_nothing
        );
        s
    }

    /// `{file: [change-point rows]}`, the predictions file.
    pub fn predictions(&self) -> BTreeMap<String, Vec<usize>> {
        self.series
            .iter()
            .map(|s| (s.file.clone(), s.predicted.iter().map(|c| c.row).collect()))
            .collect()
    }
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text)
        .map_err(|e| input_error(path, None, None, format!("invalid JSON: {e}")))
}

/// A bad-input error naming the file, the 1-based line and the field when known.
fn input_error(path: &Path, line: Option<u64>, field: Option<&str>, reason: String) -> Error {
    let field = field.map(str::to_owned);
    let kind = personaflow_io::InputErrorKind::Dataset {
        line,
        field,
        reason,
    };
    personaflow_io::Error::bad_input(path, kind).into()
}

/// Reads the value `columns` of a CSV file with a header (a simple comma-separated format
/// without quoted commas, as TCPD and NAB are); returns the rows and the first column.
fn read_csv(path: &Path, columns: &[String]) -> Result<(Vec<String>, Vec<Vec<f32>>)> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .ok_or_else(|| input_error(path, None, None, "empty file".into()))?
        .split(',')
        .map(str::trim)
        .collect();
    let idx: Vec<usize> = columns
        .iter()
        .map(|c| {
            header.iter().position(|h| h == c).ok_or_else(|| {
                input_error(
                    path,
                    Some(1),
                    Some(c),
                    format!("no column {c:?} in {header:?}"),
                )
            })
        })
        .collect::<Result<_>>()?;
    let mut first = Vec::new();
    let mut rows = Vec::new();
    for (i, line) in lines.enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        first.push(cells.first().copied().unwrap_or_default().to_string());
        let row = idx
            .iter()
            .zip(columns)
            .map(|(&j, name)| {
                let cell = cells.get(j).copied().unwrap_or_default();
                cell.parse::<f32>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| {
                        input_error(
                            path,
                            Some(i as u64 + 2),
                            Some(name),
                            format!("{cell:?} is not a number"),
                        )
                    })
            })
            .collect::<Result<Vec<f32>>>()?;
        rows.push(row);
    }
    Ok((first, rows))
}

/// Evaluates the detector on the TCPD series in `dir` (`targets.json`, `annotations.json`
/// and one CSV per series).
pub fn evaluate_tcpd(dir: &Path, config: &ChangeConfig) -> Result<TcpdReport> {
    let targets = read_json(&dir.join("targets.json"))?;
    let annotations = read_json(&dir.join("annotations.json"))?;
    let targets = targets.as_object().ok_or_else(|| {
        input_error(
            &dir.join("targets.json"),
            None,
            None,
            "not an object".into(),
        )
    })?;
    let mut series = Vec::new();
    for (file, cols) in targets {
        let columns: Vec<String> = cols
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|c| c.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let (_, rows) = read_csv(&dir.join(file), &columns)?;
        let rows = tcpd_rows(file, rows);
        let annotators: Vec<Vec<usize>> = annotations
            .get(file)
            .and_then(|a| a.as_object())
            .map(|a| {
                a.values()
                    .map(|points| {
                        points
                            .as_array()
                            .map(|p| {
                                p.iter()
                                    .filter_map(|x| x.as_u64())
                                    .map(|x| x as usize)
                                    .collect()
                            })
                            .unwrap_or_default()
                    })
                    .collect()
            })
            .ok_or_else(|| {
                input_error(
                    &dir.join("annotations.json"),
                    None,
                    Some(file),
                    "no annotations for this series".into(),
                )
            })?;
        let predicted = detect_series(&rows, config);
        let rows_found: Vec<usize> = predicted.iter().map(|c| c.row).collect();
        let (precision, recall, f1) = tcpd_f1(&annotators, &rows_found, TCPD_MARGIN);
        let (_, _, f1_nothing) = tcpd_f1(&annotators, &[], TCPD_MARGIN);
        series.push(TcpdSeries {
            file: file.clone(),
            rows: rows.len(),
            columns,
            annotators: annotators.len(),
            predicted,
            precision,
            recall,
            f1,
            f1_nothing,
        });
    }
    if series.is_empty() {
        return Err(input_error(
            &dir.join("targets.json"),
            None,
            None,
            "lists no series".into(),
        ));
    }
    let n = series.len() as f64;
    Ok(TcpdReport {
        config: config.clone(),
        margin: TCPD_MARGIN,
        mean_f1: series.iter().map(|s| s.f1).sum::<f64>() / n,
        mean_f1_nothing: series.iter().map(|s| s.f1_nothing).sum::<f64>() / n,
        series,
    })
}

/// One NAB file's result.
#[derive(Clone, Debug, Serialize)]
pub struct NabFile {
    /// Path under the NAB data directory.
    pub file: String,
    /// Rows.
    pub rows: usize,
    /// Labelled windows.
    pub windows: usize,
    /// Detections (alarm rows).
    pub detections: usize,
    /// Detections inside a labelled window.
    pub true_detections: usize,
    /// Windows with at least one detection.
    pub windows_detected: usize,
    /// For each detected window, where its first detection falls (0 = start, 1 = end).
    pub earliness: Vec<f64>,
    /// Rows inside labelled windows.
    pub rows_in_windows: usize,
}

/// The NAB evaluation.
#[derive(Clone, Debug, Serialize)]
pub struct NabReport {
    /// Detector setting.
    pub config: ChangeConfig,
    /// Per file.
    pub files: Vec<NabFile>,
    /// Detections inside labelled windows over all detections.
    pub precision: f64,
    /// Labelled windows detected over all labelled windows.
    pub recall: f64,
    /// Mean position of the first detection inside detected windows (0 = start, 1 = end).
    pub mean_earliness: f64,
    /// Detections per 1,000 rows outside labelled windows.
    pub false_alarms_per_1000_rows: f64,
    /// Share of rows inside labelled windows: the precision of detections at random.
    pub window_row_share: f64,
}

impl NabReport {
    /// A plain-text table (per NAB category, then overall).
    pub fn to_table(&self) -> String {
        let mut by_cat: BTreeMap<String, Vec<&NabFile>> = BTreeMap::new();
        for f in &self.files {
            let cat = f.file.split('/').next().unwrap_or("").to_string();
            by_cat.entry(cat).or_default().push(f);
        }
        let mut s = format!(
            "{:<22} {:>5} {:>8} {:>10} {:>9} {:>7} {:>9}\n",
            "category", "files", "windows", "detections", "precision", "recall", "earliness"
        );
        let mut line = |name: &str, files: &[&NabFile]| {
            let w: usize = files.iter().map(|f| f.windows).sum();
            let d: usize = files.iter().map(|f| f.detections).sum();
            let t: usize = files.iter().map(|f| f.true_detections).sum();
            let wd: usize = files.iter().map(|f| f.windows_detected).sum();
            let e: Vec<f64> = files.iter().flat_map(|f| f.earliness.clone()).collect();
            s += &format!(
                "{:<22} {:>5} {:>8} {:>10} {:>9.3} {:>7.3} {:>9.3}\n",
                name,
                files.len(),
                w,
                d,
                t as f64 / d.max(1) as f64,
                wd as f64 / w.max(1) as f64,
                (e.iter().sum::<f64>() / e.len().max(1) as f64).max(0.0)
            );
        };
        for (cat, files) in &by_cat {
            line(cat, files);
        }
        let all: Vec<&NabFile> = self.files.iter().collect();
        line("all", &all);
        s += &format!(
            "{:.1}% of rows lie in labelled windows (the precision of random detections); \
             {:.2} detections per 1,000 rows outside them\n",
            100.0 * self.window_row_share,
            self.false_alarms_per_1000_rows
        );
        s
    }
}

/// Parses NAB's `YYYY-MM-DD HH:MM:SS[.ffffff]` timestamps to epoch ms.
fn nab_time(text: &str) -> Option<i64> {
    let t = text.trim();
    let t = t.split('.').next()?;
    chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S")
        .ok()
        .map(|d| d.and_utc().timestamp_millis())
}

/// Evaluates the detector on every file of the NAB data directory `dir` that has labelled
/// windows in `labels/combined_windows.json`.
pub fn evaluate_nab(dir: &Path, config: &ChangeConfig) -> Result<NabReport> {
    let labels_path = dir.join("labels").join("combined_windows.json");
    let labels = read_json(&labels_path)?;
    let labels = labels
        .as_object()
        .ok_or_else(|| input_error(&labels_path, None, None, "not an object".into()))?;
    let mut files = Vec::new();
    for (file, windows) in labels {
        let path = dir.join(file);
        let (stamps, rows) = read_csv(&path, &["value".to_string()])?;
        let times: Vec<i64> = stamps
            .iter()
            .enumerate()
            .map(|(i, s)| {
                nab_time(s).ok_or_else(|| {
                    input_error(
                        &path,
                        Some(i as u64 + 2),
                        Some("timestamp"),
                        format!("{s:?} is not a timestamp"),
                    )
                })
            })
            .collect::<Result<_>>()?;
        let windows: Vec<(i64, i64)> = windows
            .as_array()
            .map(|ws| {
                ws.iter()
                    .filter_map(|w| {
                        let w = w.as_array()?;
                        Some((
                            nab_time(w.first()?.as_str()?)?,
                            nab_time(w.get(1)?.as_str()?)?,
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let detections: Vec<i64> = detect_series(&rows, config)
            .iter()
            .map(|c| times[c.detected_at])
            .collect();
        let inside = |t: i64| windows.iter().any(|(a, b)| t >= *a && t <= *b);
        let mut earliness = Vec::new();
        let mut windows_detected = 0;
        for (a, b) in &windows {
            if let Some(first) = detections.iter().find(|t| **t >= *a && **t <= *b) {
                windows_detected += 1;
                earliness.push((first - a) as f64 / (b - a).max(1) as f64);
            }
        }
        files.push(NabFile {
            file: file.clone(),
            rows: rows.len(),
            windows: windows.len(),
            detections: detections.len(),
            true_detections: detections.iter().filter(|t| inside(**t)).count(),
            windows_detected,
            earliness,
            rows_in_windows: times.iter().filter(|t| inside(**t)).count(),
        });
    }
    let d: usize = files.iter().map(|f| f.detections).sum();
    let t: usize = files.iter().map(|f| f.true_detections).sum();
    let w: usize = files.iter().map(|f| f.windows).sum();
    let wd: usize = files.iter().map(|f| f.windows_detected).sum();
    let e: Vec<f64> = files.iter().flat_map(|f| f.earliness.clone()).collect();
    let rows: usize = files.iter().map(|f| f.rows).sum();
    Ok(NabReport {
        config: config.clone(),
        precision: t as f64 / d.max(1) as f64,
        recall: wd as f64 / w.max(1) as f64,
        mean_earliness: e.iter().sum::<f64>() / e.len().max(1) as f64,
        false_alarms_per_1000_rows: (d - t) as f64 * 1000.0 / rows.max(1) as f64,
        window_row_share: files.iter().map(|f| f.rows_in_windows).sum::<usize>() as f64
            / rows.max(1) as f64,
        files,
    })
}

/// A simulator scenario.
#[derive(Clone, Debug, Serialize)]
pub struct Scenario {
    /// Name.
    pub name: String,
    /// Drift injections (`SEGMENT@OFFSET[+RAMP]:KIND=MAGNITUDE`).
    pub drifts: Vec<String>,
    /// Seed.
    pub seed: u64,
}

/// The built-in scenarios: one per drift kind, and two without drift.
pub fn default_scenarios() -> Vec<Scenario> {
    let s = |name: &str, drifts: &[&str], seed: u64| Scenario {
        name: name.to_string(),
        drifts: drifts.iter().map(|d| d.to_string()).collect(),
        seed,
    };
    vec![
        s("no-drift-a", &[], 1),
        s("no-drift-b", &[], 2),
        s("gamer-bytes-x4", &["gamer@6h:bytes=4.0"], 3),
        s("streamer-rate-x3", &["video_streamer@6h:rate=3.0"], 4),
        s("streamer-pace-x3", &["video_streamer@6h:pace=3.0"], 8),
        s("streamer-pace-ramp", &["video_streamer@6h+1h:pace=3.0"], 8),
        s("worker-latency-x5", &["remote_worker@6h:latency=5.0"], 5),
        s("browser-errors-0.3", &["casual_browser@6h:errors=0.3"], 6),
        s("iot-mix-to-gamer", &["iot_device@6h:mix:gamer=0.8"], 7),
    ]
}

/// One scenario's result.
#[derive(Clone, Debug, Serialize)]
pub struct ScenarioResult {
    /// The scenario.
    pub scenario: Scenario,
    /// Windows in the run.
    pub windows: u64,
    /// Drift events, all scopes.
    pub events: usize,
    /// Segment-scope events.
    pub segment_events: usize,
    /// Persona-scope events.
    pub persona_events: usize,
    /// For each injected drift: windows from injection to the first alarm of its segment at
    /// or after it (`None`: missed).
    pub delays: Vec<Option<u64>>,
    /// Segment-scope alarms that are not the first detection of an injected drift.
    pub false_segment_alarms: usize,
    /// Of the detections, the scaling action recommended.
    pub actions: Vec<String>,
    /// Every segment recommendation, checked against the demand that followed it.
    pub scaling: Vec<ScalingCheck>,
}

/// A segment drift event's scaling recommendation against the segment's realized demand.
#[derive(Clone, Debug, Serialize)]
pub struct ScalingCheck {
    /// Window of the event (end, epoch ms).
    pub window_end_ms: i64,
    /// The segment.
    pub segment: String,
    /// Instances the demand of the event's window needs.
    pub current_instances: u64,
    /// Instances recommended (for the predicted peak of the next `horizon` windows).
    pub recommended_instances: u64,
    /// Windows the recommendation looks ahead.
    pub horizon: usize,
    /// The segment's largest demand (requests of its users) in the next `horizon` windows.
    pub realized_peak: f64,
    /// The demand of the event's window.
    pub current_requests: f64,
    /// The segment's demand in each of the next `horizon` windows.
    pub realized: Vec<f64>,
    /// The expected demand the event predicted for them.
    pub expected: Vec<f64>,
    /// The demand the event sized its recommendation for.
    pub upper: Vec<f64>,
    /// Instances that peak needed.
    pub needed_instances: u64,
    /// Requests per window one instance serves.
    pub capacity_per_instance: f64,
}

impl ScalingCheck {
    /// The recommendation covered the realized peak.
    pub fn covered(&self) -> bool {
        self.recommended_instances >= self.needed_instances
    }

    /// Sizing on the current demand alone (no forecast) covered it.
    pub fn covered_by_current(&self) -> bool {
        self.current_instances >= self.needed_instances
    }

    /// A scale-out that demand above the current capacity followed.
    pub fn scale_out_before_demand(&self) -> bool {
        self.recommended_instances > self.current_instances
            && self.needed_instances > self.current_instances
    }

    /// For a scale-out ahead of demand: the windows from the recommendation to the first
    /// demand above the current capacity (1: the next window).
    pub fn lead_windows(&self) -> Option<usize> {
        if !self.scale_out_before_demand() {
            return None;
        }
        let capacity = self.current_instances as f64 * self.capacity_per_instance;
        self.realized
            .iter()
            .position(|d| *d > capacity)
            .map(|i| i + 1)
    }
}

/// How well the recommendations' demand forecasts matched the demand that followed, over every
/// (recommendation, horizon) pair.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ForecastQuality {
    /// Mean absolute error of the expected demand.
    pub expected_mae: f64,
    /// Mean absolute error of the current demand taken as the forecast.
    pub persistence_mae: f64,
    /// Share of pairs whose demand was at most the sized-for demand.
    pub upper_coverage: f64,
    /// Share of pairs whose demand was at most the current demand.
    pub current_coverage: f64,
}

impl ForecastQuality {
    /// Over `checks` (all zero without pairs).
    pub fn of(checks: &[&ScalingCheck]) -> ForecastQuality {
        let mut q = ForecastQuality::default();
        let mut n = 0usize;
        for c in checks {
            for (h, real) in c.realized.iter().enumerate() {
                let (Some(e), Some(u)) = (c.expected.get(h), c.upper.get(h)) else {
                    continue;
                };
                n += 1;
                q.expected_mae += (e - real).abs();
                q.persistence_mae += (c.current_requests - real).abs();
                q.upper_coverage += f64::from(u8::from(*real <= *u));
                q.current_coverage += f64::from(u8::from(*real <= c.current_requests));
            }
        }
        let n = n.max(1) as f64;
        q.expected_mae /= n;
        q.persistence_mae /= n;
        q.upper_coverage /= n;
        q.current_coverage /= n;
        q
    }
}

/// Requests per window per instance `evaluate scenarios` sizes recommendations with: at 1000
/// users a segment's users send 10 to 60 requests a minute, so the default 500 would round
/// every recommendation to one instance.
pub const SCENARIO_CAPACITY_PER_INSTANCE: f64 = 20.0;

/// The scenario evaluation.
#[derive(Clone, Debug, Serialize)]
pub struct ScenarioReport {
    /// Users per scenario.
    pub users: usize,
    /// Simulated days per scenario.
    pub days: f64,
    /// Per scenario.
    pub results: Vec<ScenarioResult>,
    /// Injected drifts detected / injected.
    pub detected: usize,
    /// Injected drifts.
    pub injected: usize,
    /// Mean detection delay, windows.
    pub mean_delay_windows: f64,
    /// Segment-scope alarms per 1,000 windows on the scenarios without drift.
    pub segment_false_alarms_per_1000_windows: f64,
    /// All-scope alarms (segments and personas) per 1,000 windows on the scenarios without
    /// drift.
    pub all_alarms_per_1000_windows_no_drift: f64,
    /// Requests per window per instance the recommendations were sized with.
    pub capacity_per_instance: f64,
    /// Segment recommendations checked.
    pub recommendations: usize,
    /// Of them, those whose instances covered the realized peak.
    pub covered: usize,
    /// Of them, those where the current demand's instances covered it.
    pub covered_by_current: usize,
    /// Mean absolute error of the expected demand over every (recommendation, horizon).
    pub expected_mae: f64,
    /// The same for the current demand taken as the forecast (persistence).
    pub persistence_mae: f64,
    /// Share of (recommendation, horizon) whose demand stayed within the sized-for demand.
    pub upper_coverage: f64,
    /// Share whose demand stayed within the current demand.
    pub current_coverage: f64,
    /// Instances the recommendations held above the realized peak's need, in all.
    pub excess_instances: u64,
    /// The same for sizing on the current demand.
    pub excess_by_current: u64,
    /// Scale-outs recommended.
    pub scale_outs: usize,
    /// Scale-outs that demand above the current capacity followed.
    pub scale_outs_before_demand: usize,
    /// Of those, the windows from each to the first demand above the current capacity.
    pub lead_windows: Vec<usize>,
}

impl ScenarioReport {
    /// A plain-text table.
    pub fn to_table(&self) -> String {
        let mut s = format!(
            "{:<20} {:>7} {:>8} {:>8} {:>8} {:>12} {:>12}\n",
            "scenario", "windows", "segment", "persona", "false", "delay (win)", "action"
        );
        for r in &self.results {
            let delays: Vec<String> = r
                .delays
                .iter()
                .map(|d| d.map_or("missed".into(), |d| d.to_string()))
                .collect();
            s += &format!(
                "{:<20} {:>7} {:>8} {:>8} {:>8} {:>12} {:>12}\n",
                r.scenario.name,
                r.windows,
                r.segment_events,
                r.persona_events,
                r.false_segment_alarms,
                if delays.is_empty() {
                    "-".into()
                } else {
                    delays.join(",")
                },
                r.actions.first().map_or("-", String::as_str)
            );
        }
        s += &format!(
            "detected {}/{} injected drifts, mean delay {:.1} windows; without drift: {:.2} segment \
             alarms and {:.2} alarms of any scope per 1,000 windows\n",
            self.detected,
            self.injected,
            self.mean_delay_windows,
            self.segment_false_alarms_per_1000_windows,
            self.all_alarms_per_1000_windows_no_drift
        );
        s += &format!(
            "scaling ({} requests per window per instance): {} segment recommendations; the \
             recommended instances covered the realized peak of the next windows in {}, the \
             current demand's instances in {}; instances above the need: {} against {}; {} \
             scale-outs, {} followed by demand above the current capacity (after {} windows)\n\
             demand forecasts (every recommendation and horizon): mean absolute error {:.2} \
             requests against {:.2} for the current demand; the sized-for demand covered {:.0}% \
             of the windows, the current demand {:.0}%\n",
            self.capacity_per_instance,
            self.recommendations,
            self.covered,
            self.covered_by_current,
            self.excess_instances,
            self.excess_by_current,
            self.scale_outs,
            self.scale_outs_before_demand,
            if self.lead_windows.is_empty() {
                "-".to_string()
            } else {
                let leads: Vec<String> = self.lead_windows.iter().map(usize::to_string).collect();
                leads.join(", ")
            },
            self.expected_mae,
            self.persistence_mae,
            self.upper_coverage * 100.0,
            self.current_coverage * 100.0
        );
        s
    }
}

/// Hands every batch of `columns` (in that order) of the Parquet files of `table` under
/// `output` to `each`; a table that was never written has none.
fn read_table(
    output: &Path,
    table: &str,
    columns: &[&str],
    each: &mut dyn FnMut(&arrow_array::RecordBatch),
) -> Result<()> {
    let dir = output.join(table);
    if !dir.exists() {
        return Ok(());
    }
    for path in parquet_files(&dir)? {
        for_each_batch(&path, columns, &mut *each)?;
    }
    Ok(())
}

/// Requests of each segment's authenticated users per window (window end ms), from the
/// `features` table: the demand the segment's recommendations are about.
pub fn segment_demand(output: &Path) -> Result<BTreeMap<(String, i64), f64>> {
    let mut demand: BTreeMap<(String, i64), f64> = BTreeMap::new();
    read_table(
        output,
        "features",
        &["window_end", "segment", "authenticated", "events"],
        &mut |batch| {
            let c = batch.columns();
            let we = c[0].as_primitive::<TimestampMillisecondType>();
            let (segment, auth) = (c[1].as_string::<i32>(), c[2].as_boolean());
            let events = c[3].as_primitive::<UInt64Type>();
            for i in 0..batch.num_rows() {
                if segment.is_valid(i) && auth.is_valid(i) && auth.value(i) {
                    *demand
                        .entry((segment.value(i).to_string(), we.value(i)))
                        .or_default() += events.value(i) as f64;
                }
            }
        },
    )?;
    Ok(demand)
}

/// Checks each segment recommendation of the `scaling` table under `output` against the
/// segment's demand in the windows it looks ahead (`window_ms` apart).
pub fn check_scaling(output: &Path, window_ms: i64) -> Result<Vec<ScalingCheck>> {
    let demand = segment_demand(output)?;
    let mut checks = Vec::new();
    let columns = [
        "window_end",
        "scope",
        "scope_id",
        "current_instances",
        "recommended_instances",
        "capacity_per_instance",
        "predicted_requests",
        "upper_requests",
        "current_requests",
    ];
    read_table(output, "scaling", &columns, &mut |batch| {
        let c = batch.columns();
        let we = c[0].as_primitive::<TimestampMillisecondType>();
        let (scope, id) = (c[1].as_string::<i32>(), c[2].as_string::<i32>());
        let current = c[3].as_primitive::<UInt64Type>();
        let recommended = c[4].as_primitive::<UInt64Type>();
        let capacity = c[5].as_primitive::<Float32Type>();
        let predicted = c[6].as_list::<i32>();
        let upper = c[7].as_list::<i32>();
        let current_requests = c[8].as_primitive::<Float32Type>();
        let floats = |list: &arrow_array::ListArray, i: usize| -> Vec<f64> {
            let values = list.value(i);
            let values = values.as_primitive::<Float32Type>();
            values.values().iter().map(|x| f64::from(*x)).collect()
        };
        for i in 0..batch.num_rows() {
            if scope.value(i) != "segment" {
                continue;
            }
            let horizon = predicted.value(i).len().max(1);
            let segment = id.value(i).to_string();
            let realized: Vec<f64> = (1..=horizon as i64)
                .map(|h| {
                    demand
                        .get(&(segment.clone(), we.value(i) + h * window_ms))
                        .copied()
                        .unwrap_or(0.0)
                })
                .collect();
            let realized_peak = realized.iter().copied().fold(0.0f64, f64::max);
            let cap = f64::from(capacity.value(i)).max(f64::MIN_POSITIVE);
            checks.push(ScalingCheck {
                window_end_ms: we.value(i),
                segment,
                current_instances: current.value(i),
                recommended_instances: recommended.value(i),
                horizon,
                realized_peak,
                current_requests: f64::from(current_requests.value(i)),
                realized,
                expected: floats(predicted, i),
                upper: floats(upper, i),
                // What `recommend` would size for the realized peak (at least one instance).
                needed_instances: personaflow_operators::drift::scaling::instances(
                    realized_peak,
                    cap,
                ),
                capacity_per_instance: cap,
            });
        }
    })?;
    checks.sort_by(|a, b| (a.window_end_ms, &a.segment).cmp(&(b.window_end_ms, &b.segment)));
    Ok(checks)
}

/// Drift rows read back from a backfill's `drift` table: (window_end ms, scope, scope id,
/// action).
pub fn read_drift_table(output: &Path) -> Result<Vec<(i64, String, String, String)>> {
    let mut rows = Vec::new();
    let columns = ["window_end", "scope", "scope_id", "action"];
    read_table(output, "drift", &columns, &mut |batch| {
        let c = batch.columns();
        let we = c[0].as_primitive::<TimestampMillisecondType>();
        let (scope, id, action) = (
            c[1].as_string::<i32>(),
            c[2].as_string::<i32>(),
            c[3].as_string::<i32>(),
        );
        for i in 0..batch.num_rows() {
            if we.is_valid(i) {
                rows.push((
                    we.value(i),
                    scope.value(i).to_string(),
                    id.value(i).to_string(),
                    action.value(i).to_string(),
                ));
            }
        }
    })?;
    rows.sort();
    Ok(rows)
}

/// Simulates `users` over `days` with `seed` and `drifts` into `dir/scenario`, and backfills
/// it with `config` into `dir/output`: what every scenario evaluation starts with.
pub fn simulate_and_backfill(
    dir: &Path,
    drifts: &[String],
    seed: u64,
    users: usize,
    days: f64,
    config: &Config,
) -> Result<(SimulationConfig, Backfill, backfill::RunSummary)> {
    let drifts: Vec<DriftSpec> = drifts
        .iter()
        .map(|d| d.parse())
        .collect::<personaflow_io::Result<_>>()?;
    let sim = SimulationConfig {
        users,
        days,
        seed,
        overwrite: true,
        drifts,
        ..SimulationConfig::default()
    };
    simulate_to_dir(&sim, &dir.join("scenario"), &mut |_| {})?;
    let job = Backfill {
        inputs: vec![dir.join("scenario").join("events").display().to_string()],
        output: dir.join("output"),
        config: config.clone(),
        overwrite: true,
        interrupt: None,
        observer: None,
    };
    let summary = backfill::run(&job, Arc::new(NoProgress))?;
    Ok((sim, job, summary))
}

/// Runs each scenario (simulate `users` for `days`, backfill with `config`) under `work` and
/// scores the drift table against the injections.
pub fn evaluate_scenarios(
    scenarios: &[Scenario],
    users: usize,
    days: f64,
    config: &Config,
    work: &Path,
    on_done: &mut dyn FnMut(&ScenarioResult),
) -> Result<ScenarioReport> {
    let spec = config.window_spec();
    let mut results = Vec::new();
    for scenario in scenarios {
        let (sim, job, summary) = simulate_and_backfill(
            &work.join(&scenario.name),
            &scenario.drifts,
            scenario.seed,
            users,
            days,
            config,
        )?;
        let drifts = &sim.drifts;
        let rows = read_drift_table(&job.output)?;
        let segment: Vec<&(i64, String, String, String)> =
            rows.iter().filter(|r| r.1 == "segment").collect();
        let mut used = BTreeSet::new();
        let mut delays = Vec::new();
        let mut actions = Vec::new();
        for d in drifts {
            let start = sim.start_ms + d.start_offset_ms;
            let first = segment
                .iter()
                .enumerate()
                .find(|(_, r)| r.2 == d.segment && r.0 > start);
            match first {
                Some((i, r)) => {
                    used.insert(i);
                    let window_of = |ms: i64| spec.index(ms).unwrap_or(0);
                    let windows = window_of(r.0 - 1).saturating_sub(window_of(start));
                    delays.push(Some(windows));
                    actions.push(r.3.clone());
                }
                None => delays.push(None),
            }
        }
        let result = ScenarioResult {
            scenario: scenario.clone(),
            windows: summary.windows,
            events: rows.len(),
            segment_events: segment.len(),
            persona_events: rows.len() - segment.len(),
            delays,
            false_segment_alarms: segment.len() - used.len(),
            actions,
            scaling: check_scaling(&job.output, spec.len_ms())?,
        };
        on_done(&result);
        results.push(result);
    }
    let injected: usize = results.iter().map(|r| r.delays.len()).sum();
    let found: Vec<u64> = results
        .iter()
        .flat_map(|r| r.delays.iter().flatten().copied())
        .collect();
    let quiet: Vec<&ScenarioResult> = results.iter().filter(|r| r.delays.is_empty()).collect();
    let quiet_windows: u64 = quiet.iter().map(|r| r.windows).sum();
    let per_1000 = |x: usize| x as f64 * 1000.0 / quiet_windows.max(1) as f64;
    let checks: Vec<&ScalingCheck> = results.iter().flat_map(|r| &r.scaling).collect();
    let quality = ForecastQuality::of(&checks);
    Ok(ScenarioReport {
        users,
        days,
        detected: found.len(),
        injected,
        mean_delay_windows: found.iter().sum::<u64>() as f64 / found.len().max(1) as f64,
        segment_false_alarms_per_1000_windows: per_1000(
            quiet.iter().map(|r| r.segment_events).sum(),
        ),
        all_alarms_per_1000_windows_no_drift: per_1000(quiet.iter().map(|r| r.events).sum()),
        capacity_per_instance: config.scaling.capacity_per_instance,
        recommendations: checks.len(),
        covered: checks.iter().filter(|c| c.covered()).count(),
        covered_by_current: checks.iter().filter(|c| c.covered_by_current()).count(),
        expected_mae: quality.expected_mae,
        persistence_mae: quality.persistence_mae,
        upper_coverage: quality.upper_coverage,
        current_coverage: quality.current_coverage,
        excess_instances: checks
            .iter()
            .map(|c| c.recommended_instances.saturating_sub(c.needed_instances))
            .sum(),
        excess_by_current: checks
            .iter()
            .map(|c| c.current_instances.saturating_sub(c.needed_instances))
            .sum(),
        scale_outs: checks
            .iter()
            .filter(|c| c.recommended_instances > c.current_instances)
            .count(),
        scale_outs_before_demand: checks
            .iter()
            .filter(|c| c.scale_out_before_demand())
            .count(),
        lead_windows: checks.iter().filter_map(|c| c.lead_windows()).collect(),
        results,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcpd_f1_matches_the_papers_definition() {
        // Two annotators; a prediction within the margin of both, one far off.
        let annotators = vec![vec![50], vec![53, 90]];
        let (p, r, f) = tcpd_f1(&annotators, &[51, 200], 5);
        // X = {0, 51, 200}; union = {0, 50, 53, 90}: 0 and 51 match -> P = 2/3.
        assert!((p - 2.0 / 3.0).abs() < 1e-12);
        // Annotator 1: {0, 50} both found; annotator 2: {0, 53, 90}: 2 of 3.
        assert!((r - (1.0 + 2.0 / 3.0) / 2.0).abs() < 1e-12);
        assert!((f - 2.0 * p * r / (p + r)).abs() < 1e-12);
        // A prediction is used once: two true points 2 apart, one prediction between them.
        assert_eq!(true_positives(&[10, 12].into(), &[11].into(), 5), 1);
    }

    #[test]
    fn a_level_shift_in_a_series_is_found_at_its_row() {
        let rows: Vec<Vec<f32>> = (0..200)
            .map(|i| {
                let noise = ((i * 7919) % 13) as f32 / 13.0 - 0.5;
                vec![if i >= 120 { 5.0 } else { 0.0 } + noise]
            })
            .collect();
        let found = detect_series(&rows, &series_config());
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].row.abs_diff(120) <= 2, "{found:?}");
        assert!(found[0].detected_at >= 120);
    }

    #[test]
    fn scaling_checks_compare_the_recommendation_with_the_demand_that_followed() {
        let check = |current, recommended, needed| ScalingCheck {
            window_end_ms: 0,
            segment: "gamer".into(),
            current_instances: current,
            recommended_instances: recommended,
            horizon: 4,
            realized_peak: 0.0,
            current_requests: 0.0,
            realized: vec![],
            expected: vec![],
            upper: vec![],
            needed_instances: needed,
            capacity_per_instance: 10.0,
        };
        // Scaled out from 1 to 3, and demand needed 2: covered, and before the demand.
        let c = check(1, 3, 2);
        assert!(c.covered() && !c.covered_by_current() && c.scale_out_before_demand());
        // The demand passed the one instance's 10 requests in the third window.
        let c = ScalingCheck {
            realized: vec![8.0, 10.0, 15.0, 12.0],
            ..c
        };
        assert_eq!(c.lead_windows(), Some(3));
        // Scaled out, but demand stayed within the current capacity.
        let c = check(2, 3, 2);
        assert!(c.covered() && c.covered_by_current() && !c.scale_out_before_demand());
        assert_eq!(c.lead_windows(), None);
        // Held while demand grew: neither covered it.
        let c = check(2, 2, 3);
        assert!(!c.covered() && !c.covered_by_current() && !c.scale_out_before_demand());
        // Scaled in too far.
        let c = check(3, 1, 2);
        assert!(!c.covered() && c.covered_by_current());
    }

    #[test]
    fn forecast_quality_compares_each_horizon_with_its_demand() {
        let c = ScalingCheck {
            window_end_ms: 0,
            segment: "gamer".into(),
            current_instances: 1,
            recommended_instances: 2,
            horizon: 2,
            realized_peak: 14.0,
            current_requests: 10.0,
            realized: vec![12.0, 14.0],
            expected: vec![11.0, 13.0],
            upper: vec![13.0, 13.5],
            needed_instances: 1,
            capacity_per_instance: 20.0,
        };
        let q = ForecastQuality::of(&[&c]);
        assert_eq!(q.expected_mae, 1.0);
        assert_eq!(q.persistence_mae, 3.0);
        assert_eq!((q.upper_coverage, q.current_coverage), (0.5, 0.0));
        assert_eq!(ForecastQuality::of(&[]), ForecastQuality::default());
    }

    #[test]
    fn nab_times_parse() {
        assert_eq!(nab_time("1970-01-01 00:00:01.000000"), Some(1000));
        assert_eq!(nab_time("1970-01-01 00:01:00"), Some(60_000));
        assert_eq!(nab_time("yesterday"), None);
    }
}
