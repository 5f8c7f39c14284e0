//! The oracle test of the production graph: [`graph::build_with`], driven by the one
//! [`Driver`] on two workers with seeded random events that arrive out of order, must write, at
//! every window, exactly the rows of features, profiles, segment profiles, resonance, forecasts,
//! forecast errors, policies, socket profiles and shaping feedback that a from-scratch
//! recomputation from the raw events gives (with the plain-function cores of the operators:
//! `build_sequence`, the embedder, `SegmentSum`, `resonance`, the persistence forecaster,
//! `blend`, `socket_profile`, `RiskCalibration`, `feedback`). The operators' own oracle tests
//! (`operators/tests/`) check each operator's updates at every time; this one checks the
//! assembly: the wiring, the exchanges, the sinks' row conversions and the driver.

use arrow_array::{ArrayRef, RecordBatch};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_schema::DataType;
use differential_dataflow::difference::Semigroup;
use personaflow_dataflow::config::{Config, EmbedderKind, ForecasterKind, Millis, SequenceHistory};
use personaflow_dataflow::driver::{Driver, RunBudget};
use personaflow_dataflow::graph::{self, ModelStats, StateMode};
use personaflow_io::tables::{
    FeatureRow, ForecastErrorRow, ForecastRow, PolicyRow, ProfileRow, ResonanceRow,
    SegmentProfileRow, ShapingFeedbackRow, SocketProfileRow, Table, TableRow,
};
use personaflow_io::writer::{SinkFactory, WindowSink};
use personaflow_operators::embed::{Embedder, StandardisedEmbedder};
use personaflow_operators::forecast::{
    Forecaster, PersistenceForecaster, DEFAULT_FORECAST_HORIZON,
};
use personaflow_operators::policies::blend::{blend, persona_distribution, DemandOutlook};
use personaflow_operators::policies::link::feedback;
use personaflow_operators::policies::socket::{socket_profile, RiskCalibration};
use personaflow_operators::resonance::resonance;
use personaflow_operators::segments::{SegmentSum, SegmentTable};
use personaflow_operators::sequences::build_sequence_with;
use personaflow_operators::window::features::{WindowAgg, WindowSummary};
use personaflow_operators::Event;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use support::{arrival_order, out_of_order, RandomEvents, SEGMENTS};

#[path = "../../../operators/tests/support/mod.rs"]
mod support;

const SEQUENCE_LENGTH: usize = 3;
const SEGMENT_WINDOW: u64 = 5;

/// What the sinks were given: per table, the formatted rows of every batch.
type Captured = Arc<Mutex<BTreeMap<Table, Vec<Vec<String>>>>>;

/// Sinks that keep every row, formatted.
struct Capture(Captured);

struct CaptureSink(Table, Captured);

impl SinkFactory for Capture {
    fn sink(&self, table: Table, _worker: usize) -> Box<dyn WindowSink> {
        Box::new(CaptureSink(table, self.0.clone()))
    }
}

impl WindowSink for CaptureSink {
    fn table(&self) -> Table {
        self.0
    }
    fn write_window(&mut self, _window: u64, batch: &RecordBatch) -> personaflow_io::Result<u64> {
        self.1
            .lock()
            .unwrap()
            .entry(self.0)
            .or_default()
            .extend(rows_of(batch));
        Ok(batch.num_rows() as u64)
    }
    fn advance(&mut self, _frontier: Option<u64>) -> personaflow_io::Result<()> {
        Ok(())
    }
}

/// Every row of `batch` as its cells' text (floats print so that they parse back exactly;
/// timestamps as their milliseconds).
fn rows_of(batch: &RecordBatch) -> Vec<Vec<String>> {
    let options = FormatOptions::default();
    let columns: Vec<ArrayRef> = batch
        .columns()
        .iter()
        .map(|c| match c.data_type() {
            DataType::Timestamp(..) => arrow_cast::cast(c, &DataType::Int64).unwrap(),
            _ => c.clone(),
        })
        .collect();
    let formatters: Vec<ArrayFormatter<'_>> = columns
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
        .collect();
    (0..batch.num_rows())
        .map(|r| formatters.iter().map(|f| f.value(r).to_string()).collect())
        .collect()
}

fn config() -> Config {
    let mut config = Config::default();
    config.embedder.kind = EmbedderKind::Standardised;
    config.forecaster.kind = ForecasterKind::Persistence;
    config.sequence.length = SEQUENCE_LENGTH;
    config.segments.window = SEGMENT_WINDOW;
    config
}

/// Runs the production graph on two workers, feeding `arrival` through the driver and
/// advancing the input to `disorder` windows behind the newest window seen; with `runs`, the
/// driver sends runs of windows at one time ([`Driver::windows_in_runs`], as the backfill
/// does).
fn run_graph(
    config: &Config,
    arrival: Vec<Event>,
    disorder: u64,
    runs: Option<RunBudget>,
) -> BTreeMap<Table, Vec<Vec<String>>> {
    let captured: Captured = Arc::default();
    let sinks = Capture(captured.clone());
    let config = config.clone();
    let sinks = Arc::new(sinks);
    timely::execute(timely::Config::process(2), move |worker| {
        let handles = graph::build_with(
            worker,
            &config,
            sinks.as_ref(),
            &ModelStats::default(),
            StateMode::Off,
        )
        .unwrap();
        let (mut driver, _) = Driver::new(handles);
        if let Some(budget) = runs {
            driver.windows_in_runs(budget);
        }
        let spec = config.window_spec();
        let (index, peers) = (worker.index(), worker.peers());
        let mut newest = 0u64;
        for (i, e) in arrival.iter().enumerate() {
            let w = spec.index(e.ts_ms).unwrap();
            newest = newest.max(w);
            driver.advance(worker, newest.saturating_sub(disorder), &|| false);
            assert!(
                w >= driver.time().unwrap(),
                "arrival respects the disorder bound"
            );
            if i % peers == index {
                driver.send(e.clone());
            }
        }
        driver.drain(worker, &mut || {});
        driver.finish().unwrap();
    })
    .unwrap();
    let mut tables = captured.lock().unwrap().clone();
    tables.values_mut().for_each(|rows| rows.sort());
    tables
}

/// The rows every table should hold, from scratch.
fn recompute(config: &Config, events: &[Event]) -> BTreeMap<Table, Vec<Vec<String>>> {
    let spec = config.window_spec();
    let cfg = &config.resonance;
    let mut aggs: BTreeMap<(String, u64), WindowAgg> = BTreeMap::new();
    for e in events {
        let key = (e.user_id.clone(), spec.index(e.ts_ms).unwrap());
        aggs.entry(key).or_insert_with(WindowAgg::empty).add(e);
    }
    let all: BTreeMap<(String, u64), WindowSummary> = aggs
        .iter()
        .map(|(k, a)| (k.clone(), WindowSummary::new(a, k.1, &spec)))
        .collect();
    let last_window = all.keys().map(|(_, w)| *w).max().unwrap();
    let mut embedder = StandardisedEmbedder::default();
    let forecaster = PersistenceForecaster::try_new(DEFAULT_FORECAST_HORIZON).unwrap();
    let (mut features, mut profiles, mut segment_rows, mut resonance_rows) =
        (vec![], vec![], vec![], vec![]);
    let (mut forecasts, mut errors) = (vec![], vec![]);
    let (mut policy_rows, mut socket_rows, mut feedback_rows) = (vec![], vec![], vec![]);
    let catalogue = config.catalogue().unwrap();
    let secs = spec.len_ms() as f64 / 1_000.0;
    let mut risk: BTreeMap<String, RiskCalibration> = BTreeMap::new();
    // Per window: the authenticated profiles (embedding, context, segment) seen in it.
    let mut seen: BTreeMap<u64, Vec<(String, SegmentSum)>> = BTreeMap::new();
    let mut previous_sums: BTreeMap<String, SegmentSum> = BTreeMap::new();
    for t in 0..=last_window + SEGMENT_WINDOW + 1 {
        let mut window_profiles = vec![];
        for (user, w) in all.keys().filter(|k| k.1 == t) {
            let history: Vec<(u64, &WindowSummary)> = all
                .iter()
                .filter(|(k, _)| &k.0 == user && k.1 <= t)
                .map(|(k, s)| (k.1, s))
                .collect();
            let seq = build_sequence_with(&config.sequence_spec(), t, &history).unwrap();
            features.push(FeatureRow {
                window_end: spec.end_ms(*w),
                user_id: user.as_str().into(),
                events: seq.events,
                bytes: seq.bytes,
                authenticated: seq.authenticated,
                segment: seq.segment.clone(),
                history_windows: seq.history_windows,
                values: seq.current().to_vec(),
            });
            let e = embedder.embed_batch(&[&seq]).unwrap().remove(0);
            profiles.push(ProfileRow {
                window_end: spec.end_ms(*w),
                user_id: user.as_str().into(),
                embedder: embedder.name().into(),
                embedding: e.vector.clone(),
                anomaly_score: e.anomaly_score,
                history_windows: seq.history_windows,
                events: seq.events,
                authenticated: seq.authenticated,
                segment: seq.segment.clone(),
                device: seq.context.device.clone(),
                os: seq.context.os.clone(),
                country: seq.context.country.clone(),
            });
            if let (true, Some(segment)) = (seq.authenticated, &seq.segment) {
                let one = SegmentSum::of_profile(&e.vector, &seq.context);
                seen.entry(t).or_default().push((segment.clone(), one));
            }
            window_profiles.push((
                user.clone(),
                e.vector,
                seq.history_windows,
                seq.context.clone(),
                seq.clone(),
                e.anomaly_score,
            ));
            // Persistence: every horizon repeats the window's demand; each forecast is scored
            // once its target window has passed, up to the last window with data.
            let forecast = forecaster.forecast_one(&seq.windows_view());
            for h in 1..=forecast.horizon() {
                let (requests, bytes) = forecast.at(h).unwrap();
                forecasts.push(ForecastRow {
                    window_end: spec.end_ms(*w),
                    user_id: user.as_str().into(),
                    forecaster: forecaster.name().into(),
                    horizon: h as u32,
                    target_window_end: spec.end_ms(*w + h as u64),
                    predicted_requests: requests,
                    predicted_bytes: bytes,
                });
                let target = w + h as u64;
                if target <= last_window {
                    let actual = all
                        .get(&(user.clone(), target))
                        .map_or((0, 0), |s| (s.events, s.bytes));
                    errors.push(ForecastErrorRow::new(
                        spec.end_ms(target),
                        user.as_str().into(),
                        forecaster.name().into(),
                        spec.end_ms(*w),
                        h as u32,
                        (requests, actual.0),
                        (bytes, actual.1),
                    ));
                }
            }
        }
        // Segment profiles: the authenticated profiles of the last W windows, written for every
        // window in which they changed.
        let mut sums: BTreeMap<String, SegmentSum> = BTreeMap::new();
        let from = (t + 1).saturating_sub(SEGMENT_WINDOW);
        for (segment, one) in seen.range(from..=t).flat_map(|(_, v)| v) {
            sums.entry(segment.clone()).or_default().plus_equals(one);
        }
        if sums != previous_sums {
            segment_rows.extend(sums.iter().map(|(segment, sum)| SegmentProfileRow {
                window_end: spec.end_ms(t),
                segment: segment.clone(),
                profiles: sum.profiles,
                embedding: sum.mean(),
            }));
        }
        let table = SegmentTable::from_sums(
            sums.iter().map(|(s, v)| (s.as_str(), v)),
            cfg.min_segment_profiles,
        );
        // Policies: each user's resonance (if any) mapped onto the catalogue, sized from the
        // persistence forecast; risk against the user's segment's recent anomaly scores.
        let mut by_risk_segment: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        let resonances: Vec<_> = window_profiles
            .iter()
            .map(|(_, embedding, history, context, _, _)| {
                resonance(t, embedding, *history, context, &table, cfg)
            })
            .collect();
        for (i, (_, _, _, _, seq, _)) in window_profiles.iter().enumerate() {
            let segment = seq
                .segment
                .clone()
                .or_else(|| resonances[i].as_ref().map(|r| r.top_segment().to_string()))
                .unwrap_or_default();
            by_risk_segment.entry(segment).or_default().push(i);
        }
        for (segment, members) in &by_risk_segment {
            let calibration = risk.entry(segment.clone()).or_default();
            let scores = members
                .iter()
                .filter_map(|&i| window_profiles[i].5)
                .collect();
            calibration.push(t, scores, config.policy_config().risk_windows);
            for &i in members {
                let (user, _, _, _, seq, anomaly) = &window_profiles[i];
                let segments: Vec<(Arc<str>, f64)> = resonances[i].as_ref().map_or(vec![], |r| {
                    r.scores
                        .iter()
                        .map(|s| (s.segment.clone(), f64::from(s.probability.0)))
                        .collect()
                });
                let distribution = persona_distribution(&catalogue, &segments, &[]);
                let forecast = forecaster.forecast_one(&seq.windows_view());
                let peak = |pick: fn((f32, f32)) -> f32| {
                    (1..=forecast.horizon().min(config.policy.horizon))
                        .map(|h| f64::from(pick(forecast.at(h).unwrap())))
                        .fold(0.0f64, f64::max)
                };
                let demand = DemandOutlook {
                    peak_bytes: Some(peak(|x| x.1)),
                    peak_requests: Some(peak(|x| x.0)),
                    current_bytes: (seq.demand.bytes_in + seq.demand.bytes_out) as f64,
                    current_requests: seq.events as f64,
                };
                let p = blend(&catalogue, &distribution, &demand, secs, &config.policy);
                let next = forecast.at(1).map(|(r, b)| (f64::from(b), f64::from(r)));
                let r = anomaly.and_then(|a| calibration.quantile(a));
                let so = socket_profile(
                    &p,
                    &seq.demand,
                    next,
                    r,
                    &catalogue.endpoints,
                    secs,
                    &config.policy,
                );
                policy_rows.push(PolicyRow {
                    window_end: spec.end_ms(t),
                    user_id: user.as_str().into(),
                    persona: p.persona.clone(),
                    personas: p.personas.iter().map(|(n, _)| n.clone()).collect(),
                    probabilities: p.personas.iter().map(|(_, x)| x.0).collect(),
                    diffserv_class: p.diffserv_class.clone(),
                    dscp: u32::from(p.dscp),
                    endpoint_class: p.endpoint_class.clone(),
                    floor_bps: p.floor_bps,
                    guaranteed_bps: p.guaranteed_bps,
                    ceiling_bps: p.ceiling_bps,
                    allocated_bps: p.allocated_bps,
                    sized_for_bps: p.sized_for_bps,
                    burst_bytes: p.burst_bytes,
                    priority_weight: p.priority_weight.0,
                    latency_target_ms: p.latency_target_ms.0,
                    rate_limit_rps: p.rate_limit_rps.0,
                    request_limit_rps: p.request_limit_rps.0,
                    send_buffer_min: p.send_buffer[0],
                    send_buffer_max: p.send_buffer[1],
                    receive_buffer_min: p.receive_buffer[0],
                    receive_buffer_max: p.receive_buffer[1],
                    authentication: p.authentication.name(),
                    inspection: p.inspection.name(),
                    allowed_app_classes: p.allowed_app_classes.clone(),
                    allowed_ports: p
                        .allowed_ports
                        .iter()
                        .map(|r| r.to_string().into())
                        .collect(),
                    vpn_required: p.vpn_required,
                    current_bytes: p.current_bytes,
                    current_requests: p.current_requests,
                });
                socket_rows.push(SocketProfileRow {
                    window_end: spec.end_ms(t),
                    user_id: user.as_str().into(),
                    predicted_bytes_per_s: so.predicted_bytes_per_s.0,
                    predicted_requests_per_s: so.predicted_requests_per_s.0,
                    request_type: so.request_type.name(),
                    risk: so.risk.map(|r| r.0),
                    rtt_ms: so.rtt_ms.0,
                    send_buffer: so.send_buffer,
                    receive_buffer: so.receive_buffer,
                    rate_limit_bytes_per_s: so.rate_limit_bytes_per_s,
                    security_level: so.security_level.name(),
                    endpoint: so.endpoint.clone(),
                });
                // Judged in the next window, when it has data anywhere.
                if t < last_window {
                    let (requests, bytes) = all
                        .get(&(user.clone(), t + 1))
                        .map_or((0, 0), |s| (s.events, s.bytes));
                    let f = feedback(
                        p.allocated_bps as f64,
                        p.burst_bytes as f64,
                        f64::from(p.rate_limit_rps.0),
                        f64::from(p.latency_target_ms.0),
                        bytes as f64,
                        requests,
                        secs,
                    );
                    feedback_rows.push(ShapingFeedbackRow {
                        window_end: spec.end_ms(t + 1),
                        user_id: user.as_str().into(),
                        made_at_window_end: spec.end_ms(t),
                        persona: p.persona.clone(),
                        allocated_bps: p.allocated_bps,
                        rate_limit_rps: p.rate_limit_rps.0,
                        latency_target_ms: p.latency_target_ms.0,
                        demand_bytes: bytes,
                        demand_requests: requests,
                        shortfall_bytes: f.shortfall_bytes,
                        waste_bytes: f.waste_bytes,
                        excess_requests: f.excess_requests,
                        served_share: f.served_share,
                        within_target: f.within_target,
                    });
                }
            }
        }
        for (i, (user, _, _, _, _, _)) in window_profiles.iter().enumerate() {
            let Some(r) = &resonances[i] else {
                continue;
            };
            for (i, s) in r.scores.iter().enumerate() {
                resonance_rows.push(ResonanceRow {
                    window_end: spec.end_ms(t),
                    user_id: user.as_str().into(),
                    segment: s.segment.clone(),
                    cosine: s.cosine.0,
                    probability: s.probability.0,
                    resonating: s.resonating,
                    top: i == r.top,
                    cold_start: r.cold_start,
                });
            }
        }
        previous_sums = sums;
    }
    let mut tables = BTreeMap::new();
    tables.insert(Table::Features, rows_of(&FeatureRow::to_batch(&features)));
    tables.insert(Table::Profiles, rows_of(&ProfileRow::to_batch(&profiles)));
    tables.insert(
        Table::SegmentProfiles,
        rows_of(&SegmentProfileRow::to_batch(&segment_rows)),
    );
    tables.insert(
        Table::Resonance,
        rows_of(&ResonanceRow::to_batch(&resonance_rows)),
    );
    tables.insert(
        Table::Forecasts,
        rows_of(&ForecastRow::to_batch(&forecasts)),
    );
    tables.insert(
        Table::ForecastErrors,
        rows_of(&ForecastErrorRow::to_batch(&errors)),
    );
    tables.insert(Table::Policies, rows_of(&PolicyRow::to_batch(&policy_rows)));
    tables.insert(
        Table::SocketProfiles,
        rows_of(&SocketProfileRow::to_batch(&socket_rows)),
    );
    tables.insert(
        Table::ShapingFeedback,
        rows_of(&ShapingFeedbackRow::to_batch(&feedback_rows)),
    );
    tables.values_mut().for_each(|rows| rows.sort());
    tables
}

/// The rows of `rows` whose first column (`window_end`) is `window`.
fn at<'a>(rows: &'a [Vec<String>], window: &str) -> Vec<&'a Vec<String>> {
    rows.iter().filter(|r| r[0] == window).collect()
}

fn check(config: Config, seed: u64, users: usize, windows: u64, n: usize, disorder: u64) {
    check_fed(config, seed, users, windows, n, disorder, None);
}

/// As [`check`], the driver sending runs of windows at one time when `runs` is given.
fn check_fed(
    config: Config,
    seed: u64,
    users: usize,
    windows: u64,
    n: usize,
    disorder: u64,
    runs: Option<RunBudget>,
) {
    let spec = config.window_spec();
    let events = RandomEvents {
        seed,
        users,
        windows,
        events: n,
        session_windows: 4,
    }
    .draw(&spec);
    let arrival = arrival_order(&events, seed, disorder, &spec);
    assert!(
        out_of_order(&arrival),
        "the input really arrives out of order"
    );
    let got = run_graph(&config, arrival, disorder, runs);
    let want = recompute(&config, &events);
    for (table, want_rows) in &want {
        let got_rows = got.get(table).cloned().unwrap_or_default();
        assert!(
            !want_rows.is_empty(),
            "{}: nothing to compare",
            table.name()
        );
        let mut windows: Vec<&String> = want_rows.iter().chain(&got_rows).map(|r| &r[0]).collect();
        windows.sort();
        windows.dedup();
        for w in windows {
            assert_eq!(
                at(&got_rows, w),
                at(want_rows, w),
                "{} differs at window_end {w}",
                table.name()
            );
        }
        assert_eq!(&got_rows, want_rows, "{}", table.name());
    }
    // Meaningful only if every stage produced rows for many user-windows.
    assert!(want[&Table::Resonance].len() > users * SEGMENTS.len());
    assert!(want[&Table::SegmentProfiles].len() > SEGMENTS.len());
}

#[test]
fn the_production_graph_equals_recomputation_at_every_window() {
    check(config(), 11, 24, 30, 1_500, 3);
}

#[test]
fn the_production_graph_equals_recomputation_with_sparse_users_and_more_disorder() {
    check(config(), 12, 60, 40, 900, 6);
}

/// Sequences of each user's last `L` active windows, some of them forgotten (`max_idle` of
/// 9 windows): every table still equals the recomputation.
#[test]
fn the_production_graph_equals_recomputation_with_active_history_sequences() {
    let mut config = config();
    config.sequence.history = SequenceHistory::Active;
    config.sequence.max_idle = Millis(9 * config.window.length.0);
    check(config, 13, 60, 40, 900, 4);
}

/// The driver sending runs of windows at one input time, as the backfill does: small runs
/// (a few windows, ending at random places in the arrival), and one run for everything (the
/// default budget holds all of these events). Every table still equals the recomputation.
#[test]
fn the_production_graph_equals_recomputation_with_windows_sent_in_runs() {
    let small = RunBudget {
        events: 20,
        windows: 3,
    };
    check_fed(config(), 14, 24, 30, 1_500, 3, Some(small));
    check_fed(config(), 15, 60, 40, 900, 6, Some(RunBudget::default()));
    let mut active = config();
    active.sequence.history = SequenceHistory::Active;
    active.sequence.max_idle = Millis(9 * active.window.length.0);
    check_fed(active, 16, 60, 40, 900, 4, Some(small));
}
