//! Evaluation of resonance against the simulator's ground truth: per segment, how many users,
//! their mean resonance (probability) to their own segment, and top-segment accuracy on the
//! users whose segment the pipeline was not given (unauthenticated users, last window).

use crate::{Error, Result, ScenarioMismatch};
use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMillisecondType;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Ground truth of one simulated user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TruthUser {
    /// True segment.
    pub segment: String,
    /// Whether the pipeline saw the segment (authenticated).
    pub authenticated: bool,
}

/// Per-segment results.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SegmentReport {
    /// Users of the segment in the truth.
    pub users: u64,
    /// Of them, users with at least one resonance row.
    pub users_scored: u64,
    /// Mean over users of their mean probability of their own segment.
    pub mean_own_resonance: f64,
    /// Unauthenticated users scored.
    pub held_out_users: u64,
    /// Of them, users whose top segment in their last window is their true segment.
    pub held_out_correct: u64,
}

impl SegmentReport {
    /// Top-segment accuracy on held-out users.
    pub fn accuracy(&self) -> f64 {
        self.held_out_correct as f64 / self.held_out_users.max(1) as f64
    }
}

/// Results over all segments.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ResonanceReport {
    /// Per segment.
    pub segments: BTreeMap<String, SegmentReport>,
    /// Held-out users scored, all segments.
    pub held_out_users: u64,
    /// Held-out users whose last-window top segment is right.
    pub held_out_correct: u64,
}

impl ResonanceReport {
    /// Overall top-segment accuracy on held-out users.
    pub fn accuracy(&self) -> f64 {
        self.held_out_correct as f64 / self.held_out_users.max(1) as f64
    }

    /// A plain-text table.
    pub fn to_table(&self) -> String {
        let mut s = format!(
            "{:<16} {:>7} {:>8} {:>14} {:>10} {:>9}\n",
            "segment", "users", "scored", "own resonance", "held out", "accuracy"
        );
        for (name, r) in &self.segments {
            s.push_str(&format!(
                "{:<16} {:>7} {:>8} {:>14.3} {:>10} {:>8.1}%\n",
                name,
                r.users,
                r.users_scored,
                r.mean_own_resonance,
                r.held_out_users,
                100.0 * r.accuracy()
            ));
        }
        s.push_str(&format!(
            "{:<16} {:>7} {:>8} {:>14} {:>10} {:>8.1}%\n",
            "all",
            self.segments.values().map(|r| r.users).sum::<u64>(),
            self.segments.values().map(|r| r.users_scored).sum::<u64>(),
            "",
            self.held_out_users,
            100.0 * self.accuracy()
        ));
        s
    }
}

/// Reads `truth/users.parquet` (`user_id`, `segment`, `authenticated`).
pub fn read_truth(path: &Path) -> Result<HashMap<String, TruthUser>> {
    let mut truth = HashMap::new();
    for_each_batch(path, &["user_id", "segment", "authenticated"], |batch| {
        let (users, segments, auth) = (
            batch.column(0).as_string::<i32>(),
            batch.column(1).as_string::<i32>(),
            batch.column(2).as_boolean(),
        );
        for i in 0..batch.num_rows() {
            truth.insert(
                users.value(i).to_string(),
                TruthUser {
                    segment: segments.value(i).to_string(),
                    authenticated: auth.value(i),
                },
            );
        }
    })?;
    Ok(truth)
}

/// Share of the output's authenticated users whose known segment may differ from the truth's
/// before the output is taken for another scenario's.
pub const MAX_SEGMENT_DISAGREEMENT: f64 = 0.01;

/// Checks that a backfill output comes from the scenario of `truth`: its users are the
/// truth's users, and the segment its authenticated users' events carried (the `features`
/// table's `segment`) is the one the truth gives them. An output of another scenario (whose
/// users share ids with this one, as simulated users do) would otherwise be scored, and
/// give a meaningless accuracy. The error says what does not match.
pub fn check_same_scenario(truth: &HashMap<String, TruthUser>, output: &Path) -> Result<()> {
    let mut users: HashMap<String, Option<bool>> = HashMap::new();
    for file in parquet_files(&output.join("features"))? {
        for_each_batch(&file, &["user_id", "authenticated", "segment"], |batch| {
            let ids = batch.column(0).as_string::<i32>();
            let auth = batch.column(1).as_boolean();
            let segs = batch.column(2).as_string::<i32>();
            for i in 0..batch.num_rows() {
                let verdict = users.entry(ids.value(i).to_string()).or_insert(None);
                if !auth.value(i) || arrow_array::Array::is_null(segs, i) {
                    continue;
                }
                let agrees = truth
                    .get(ids.value(i))
                    .is_some_and(|t| t.segment == segs.value(i));
                *verdict = Some(verdict.unwrap_or(true) && agrees);
            }
        })?;
    }
    let mismatch = |evidence: ScenarioMismatch| -> Result<()> {
        Err(Error::OtherScenario {
            output: output.to_path_buf(),
            evidence,
        })
    };
    if users.is_empty() {
        return Ok(()); // nothing to score, nothing to mix up
    }
    let unknown = users.keys().filter(|u| !truth.contains_key(*u)).count();
    if unknown * 2 > users.len() {
        return mismatch(ScenarioMismatch::UnknownUsers {
            unknown,
            users: users.len(),
        });
    }
    let judged: Vec<bool> = users.values().flatten().copied().collect();
    let disagree = judged.iter().filter(|ok| !**ok).count();
    if disagree as f64 > MAX_SEGMENT_DISAGREEMENT * judged.len() as f64 {
        return mismatch(ScenarioMismatch::OtherSegments {
            disagree,
            judged: judged.len(),
        });
    }
    Ok(())
}

/// Scores the `resonance` table of a backfill output against the truth.
pub fn evaluate_resonance(
    truth: &HashMap<String, TruthUser>,
    output: &Path,
) -> Result<ResonanceReport> {
    #[derive(Default)]
    struct UserAcc {
        own_sum: f64,
        own_n: u64,
        last: Option<(i64, String)>,
    }
    let mut acc: HashMap<String, UserAcc> = HashMap::new();
    let files = parquet_files(&output.join("resonance"))?;
    for file in files {
        let columns = ["window_end", "user_id", "segment", "probability", "top"];
        for_each_batch(&file, &columns, |batch| {
            let we = batch.column(0).as_primitive::<TimestampMillisecondType>();
            let users = batch.column(1).as_string::<i32>();
            let segs = batch.column(2).as_string::<i32>();
            let probs = batch
                .column(3)
                .as_primitive::<arrow_array::types::Float32Type>();
            let top = batch.column(4).as_boolean();
            for i in 0..batch.num_rows() {
                let Some(t) = truth.get(users.value(i)) else {
                    continue;
                };
                let a = acc.entry(users.value(i).to_string()).or_default();
                if segs.value(i) == t.segment {
                    a.own_sum += f64::from(probs.value(i));
                    a.own_n += 1;
                }
                if top.value(i) && a.last.as_ref().is_none_or(|(w, _)| we.value(i) >= *w) {
                    a.last = Some((we.value(i), segs.value(i).to_string()));
                }
            }
        })?;
    }
    let mut report = ResonanceReport::default();
    let mut own: BTreeMap<String, (f64, u64)> = BTreeMap::new();
    for (user, t) in truth {
        let seg = report.segments.entry(t.segment.clone()).or_default();
        seg.users += 1;
        let Some(a) = acc.get(user) else { continue };
        seg.users_scored += 1;
        if a.own_n > 0 {
            let o = own.entry(t.segment.clone()).or_default();
            o.0 += a.own_sum / a.own_n as f64;
            o.1 += 1;
        }
        if !t.authenticated {
            if let Some((_, top)) = &a.last {
                seg.held_out_users += 1;
                report.held_out_users += 1;
                if *top == t.segment {
                    seg.held_out_correct += 1;
                    report.held_out_correct += 1;
                }
            }
        }
    }
    for (name, (sum, n)) in own {
        if let Some(seg) = report.segments.get_mut(&name) {
            seg.mean_own_resonance = sum / n.max(1) as f64;
        }
    }
    Ok(report)
}

pub use personaflow_io::tables::read::{for_each_batch, parquet_files};
