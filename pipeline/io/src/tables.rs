//! Parquet table sinks: the output tables' schemas, row types, and a writer that lays files
//! out in Hive-style date partitions (`resonance/date=2026-01-05/part-000-00000.parquet`)
//! readable as they are by DuckDB, Polars and pyarrow.
//!
//! Writers only ever write inside the run's staging directory; the backfill renames the whole
//! directory into place when the run succeeds, so a failed run leaves no partial output.

use crate::{Error, Result};
use arrow_array::builder::{
    BooleanBuilder, Float32Builder, Float64Builder, Int64Builder, ListBuilder, StringBuilder,
    TimestampMillisecondBuilder, UInt32Builder, UInt64Builder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use personaflow_operators::features::{FEATURES, NUM_FEATURES};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The output tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// Per user and window features.
    Features,
    /// Per user and window latent profiles.
    Profiles,
    /// Per segment and window profiles.
    SegmentProfiles,
    /// Per user, window and segment resonance (long format).
    Resonance,
    /// Per user, window and horizon demand forecasts (long format).
    Forecasts,
    /// Per user and target window: a forecast's error once its window has passed.
    ForecastErrors,
    /// Per persona and window: size, centroid and characterising features.
    Personas,
    /// Per user and window: persona, distance and probability over personas.
    PersonaAssignments,
    /// Drift events of segments and personas.
    Drift,
    /// The scaling recommendation of each drift event.
    Scaling,
    /// Rejected input rows.
    Rejects,
}

impl Table {
    /// Every table, in output order.
    pub const ALL: [Table; 11] = [
        Table::Features,
        Table::Profiles,
        Table::SegmentProfiles,
        Table::Resonance,
        Table::Forecasts,
        Table::ForecastErrors,
        Table::Personas,
        Table::PersonaAssignments,
        Table::Drift,
        Table::Scaling,
        Table::Rejects,
    ];

    /// The table named `name` (its directory name).
    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The table's directory name.
    pub fn name(self) -> &'static str {
        match self {
            Table::Features => "features",
            Table::Profiles => "profiles",
            Table::SegmentProfiles => "segment_profiles",
            Table::Resonance => "resonance",
            Table::Forecasts => "forecasts",
            Table::ForecastErrors => "forecast_error",
            Table::Personas => "personas",
            Table::PersonaAssignments => "persona_assignments",
            Table::Drift => "drift",
            Table::Scaling => "scaling",
            Table::Rejects => "rejects",
        }
    }

    /// The table's Arrow schema.
    pub fn schema(self) -> SchemaRef {
        let window_end = || {
            Field::new(
                "window_end",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                false,
            )
        };
        let embedding = || {
            Field::new(
                "embedding",
                DataType::List(Arc::new(Field::new("item", DataType::Float32, true))),
                false,
            )
        };
        let fields = match self {
            Table::Features => {
                let mut f = vec![
                    window_end(),
                    Field::new("user_id", DataType::Utf8, false),
                    Field::new("events", DataType::UInt64, false),
                    Field::new("bytes", DataType::UInt64, false),
                    Field::new("authenticated", DataType::Boolean, false),
                    Field::new("segment", DataType::Utf8, true),
                    Field::new("history_windows", DataType::UInt32, false),
                ];
                f.extend(
                    FEATURES
                        .iter()
                        .map(|d| Field::new(d.name, DataType::Float32, false)),
                );
                f
            }
            Table::Profiles => vec![
                window_end(),
                Field::new("user_id", DataType::Utf8, false),
                Field::new("embedder", DataType::Utf8, false),
                embedding(),
                Field::new("anomaly_score", DataType::Float32, true),
                Field::new("history_windows", DataType::UInt32, false),
                Field::new("events", DataType::UInt64, false),
                Field::new("authenticated", DataType::Boolean, false),
                Field::new("segment", DataType::Utf8, true),
                Field::new("device", DataType::Utf8, true),
                Field::new("os", DataType::Utf8, true),
                Field::new("country", DataType::Utf8, true),
            ],
            Table::SegmentProfiles => vec![
                window_end(),
                Field::new("segment", DataType::Utf8, false),
                Field::new("profiles", DataType::Int64, false),
                embedding(),
            ],
            Table::Resonance => vec![
                window_end(),
                Field::new("user_id", DataType::Utf8, false),
                Field::new("segment", DataType::Utf8, false),
                Field::new("cosine", DataType::Float32, false),
                Field::new("probability", DataType::Float32, false),
                Field::new("resonating", DataType::Boolean, false),
                Field::new("top", DataType::Boolean, false),
                Field::new("cold_start", DataType::Boolean, false),
            ],
            Table::Forecasts => vec![
                window_end(),
                Field::new("user_id", DataType::Utf8, false),
                Field::new("forecaster", DataType::Utf8, false),
                Field::new("horizon", DataType::UInt32, false),
                ts_field("target_window_end"),
                Field::new("predicted_requests", DataType::Float32, false),
                Field::new("predicted_bytes", DataType::Float32, false),
            ],
            Table::ForecastErrors => vec![
                window_end(),
                Field::new("user_id", DataType::Utf8, false),
                Field::new("forecaster", DataType::Utf8, false),
                ts_field("made_at_window_end"),
                Field::new("horizon", DataType::UInt32, false),
                Field::new("predicted_requests", DataType::Float32, false),
                Field::new("actual_requests", DataType::UInt64, false),
                Field::new("predicted_bytes", DataType::Float32, false),
                Field::new("actual_bytes", DataType::UInt64, false),
                Field::new("abs_error_requests", DataType::Float64, false),
                Field::new("abs_error_bytes", DataType::Float64, false),
            ],
            Table::Personas => vec![
                window_end(),
                Field::new("persona_id", DataType::UInt32, false),
                Field::new("size", DataType::UInt64, false),
                Field::new("personas", DataType::UInt32, false),
                Field::new("reselected", DataType::Boolean, false),
                list_field("centroid", DataType::Float32),
                list_field("top_features", DataType::Utf8),
                list_field("top_feature_z", DataType::Float32),
            ],
            Table::PersonaAssignments => vec![
                window_end(),
                Field::new("user_id", DataType::Utf8, false),
                Field::new("persona_id", DataType::UInt32, false),
                Field::new("distance", DataType::Float32, false),
                list_field("persona_ids", DataType::UInt32),
                list_field("probabilities", DataType::Float32),
            ],
            Table::Drift => vec![
                window_end(),
                Field::new("scope", DataType::Utf8, false),
                Field::new("scope_id", DataType::Utf8, false),
                ts_field("onset_window_end"),
                Field::new("distance", DataType::Float32, false),
                Field::new("threshold", DataType::Float32, false),
                Field::new("score", DataType::Float32, false),
                Field::new("p_value", DataType::Float32, false),
                list_field("moved_features", DataType::Utf8),
                list_field("moved_z", DataType::Float32),
                Field::new("users", DataType::UInt64, false),
                Field::new("action", DataType::Utf8, false),
            ],
            Table::Scaling => vec![
                window_end(),
                Field::new("scope", DataType::Utf8, false),
                Field::new("scope_id", DataType::Utf8, false),
                Field::new("users", DataType::UInt64, false),
                Field::new("current_requests", DataType::Float32, false),
                list_field("predicted_requests", DataType::Float32),
                list_field("upper_requests", DataType::Float32),
                Field::new("calibration_residuals", DataType::UInt64, false),
                Field::new("trend_per_window", DataType::Float32, false),
                Field::new("peak_horizon", DataType::UInt32, false),
                ts_field("peak_window_end"),
                Field::new("capacity_per_instance", DataType::Float32, false),
                Field::new("current_instances", DataType::UInt64, false),
                Field::new("recommended_instances", DataType::UInt64, false),
                Field::new("change", DataType::Int64, false),
                Field::new("action", DataType::Utf8, false),
            ],
            Table::Rejects => vec![
                Field::new("file", DataType::Utf8, false),
                Field::new("row", DataType::UInt64, false),
                Field::new("field", DataType::Utf8, true),
                Field::new("code", DataType::Utf8, false),
                Field::new("reason", DataType::Utf8, false),
            ],
        };
        Arc::new(Schema::new(fields))
    }
}

fn list_field(name: &str, item: DataType) -> Field {
    Field::new(
        name,
        DataType::List(Arc::new(Field::new("item", item, true))),
        false,
    )
}

/// A row of `personas`.
#[derive(Clone, Debug, PartialEq)]
pub struct PersonaRow {
    /// Window end, ms.
    pub window_end: i64,
    /// Stable persona id.
    pub persona_id: u32,
    /// Users assigned in the window.
    pub size: u64,
    /// Personas in the window.
    pub personas: u32,
    /// k was chosen in this window.
    pub reselected: bool,
    /// Centroid.
    pub centroid: Vec<f32>,
    /// Characterising features and their z (persona mean against the window's users).
    pub top_features: Vec<(String, f32)>,
}

/// A row of `persona_assignments`.
#[derive(Clone, Debug, PartialEq)]
pub struct PersonaAssignmentRow {
    /// Window end, ms.
    pub window_end: i64,
    /// User.
    pub user_id: String,
    /// Nearest persona.
    pub persona_id: u32,
    /// Distance to it.
    pub distance: f32,
    /// The window's persona ids.
    pub persona_ids: Vec<u32>,
    /// Probability of each.
    pub probabilities: Vec<f32>,
}

/// A row of `drift`, with its `scaling` recommendation.
#[derive(Clone, Debug, PartialEq)]
pub struct DriftRow {
    /// Window end, ms.
    pub window_end: i64,
    /// `segment` or `persona`.
    pub scope: String,
    /// Segment name or persona id.
    pub scope_id: String,
    /// Estimated onset window end, ms.
    pub onset_window_end: i64,
    /// Standardised centroid distance from the baseline.
    pub distance: f32,
    /// Threshold.
    pub threshold: f32,
    /// `distance / threshold`.
    pub score: f32,
    /// Permutation-test p-value.
    pub p_value: f32,
    /// Features that moved most, with their change in baseline standard deviations.
    pub moved: Vec<(String, f32)>,
    /// Users of the scope in the window.
    pub users: u64,
    /// Current requests of those users.
    pub current_requests: f32,
    /// Expected requests per horizon (calibrated summed forecasts).
    pub predicted_requests: Vec<f32>,
    /// Requests per horizon covered with the configured probability.
    pub upper_requests: Vec<f32>,
    /// Forecast residuals behind the calibration (0: uncalibrated).
    pub calibration_residuals: u64,
    /// Demand rise per window since the onset, carried forward (0: none).
    pub trend_per_window: f32,
    /// Horizon of the peak of `upper_requests`.
    pub peak_horizon: u32,
    /// Peak window end, ms.
    pub peak_window_end: i64,
    /// Requests per window per instance.
    pub capacity_per_instance: f32,
    /// Instances now.
    pub current_instances: u64,
    /// Instances for the peak.
    pub recommended_instances: u64,
    /// Change.
    pub change: i64,
    /// `scale_out`, `scale_in` or `hold`.
    pub action: String,
}

fn str_list_builder(n: usize) -> ListBuilder<StringBuilder> {
    ListBuilder::with_capacity(StringBuilder::new(), n).with_field(Arc::new(Field::new(
        "item",
        DataType::Utf8,
        true,
    )))
}

/// Rows of `personas` as a record batch.
pub fn personas_batch(rows: &[PersonaRow]) -> RecordBatch {
    let n = rows.len();
    let mut we = ts_builder(n);
    let mut id = UInt32Builder::with_capacity(n);
    let mut size = UInt64Builder::with_capacity(n);
    let mut k = UInt32Builder::with_capacity(n);
    let mut re = BooleanBuilder::with_capacity(n);
    let mut centroid = list_builder(n);
    let mut names = str_list_builder(n);
    let mut z = list_builder(n);
    for r in rows {
        we.append_value(r.window_end);
        id.append_value(r.persona_id);
        size.append_value(r.size);
        k.append_value(r.personas);
        re.append_value(r.reselected);
        centroid.values().append_slice(&r.centroid);
        centroid.append(true);
        for (name, v) in &r.top_features {
            names.values().append_value(name);
            z.values().append_value(*v);
        }
        names.append(true);
        z.append(true);
    }
    finish(
        Table::Personas,
        vec![
            Arc::new(we.finish()),
            Arc::new(id.finish()),
            Arc::new(size.finish()),
            Arc::new(k.finish()),
            Arc::new(re.finish()),
            Arc::new(centroid.finish()),
            Arc::new(names.finish()),
            Arc::new(z.finish()),
        ],
    )
}

/// Rows of `persona_assignments` as a record batch.
pub fn persona_assignments_batch(rows: &[PersonaAssignmentRow]) -> RecordBatch {
    let n = rows.len();
    let mut we = ts_builder(n);
    let mut user = StringBuilder::new();
    let mut id = UInt32Builder::with_capacity(n);
    let mut dist = Float32Builder::with_capacity(n);
    let mut ids = ListBuilder::with_capacity(UInt32Builder::new(), n)
        .with_field(Arc::new(Field::new("item", DataType::UInt32, true)));
    let mut probs = list_builder(n);
    for r in rows {
        we.append_value(r.window_end);
        user.append_value(&r.user_id);
        id.append_value(r.persona_id);
        dist.append_value(r.distance);
        ids.values().append_slice(&r.persona_ids);
        ids.append(true);
        probs.values().append_slice(&r.probabilities);
        probs.append(true);
    }
    finish(
        Table::PersonaAssignments,
        vec![
            Arc::new(we.finish()),
            Arc::new(user.finish()),
            Arc::new(id.finish()),
            Arc::new(dist.finish()),
            Arc::new(ids.finish()),
            Arc::new(probs.finish()),
        ],
    )
}

/// Rows of `drift` as a record batch.
pub fn drift_batch(rows: &[DriftRow]) -> RecordBatch {
    let n = rows.len();
    let mut we = ts_builder(n);
    let mut scope = StringBuilder::new();
    let mut scope_id = StringBuilder::new();
    let mut onset = ts_builder(n);
    let mut f32s: [Float32Builder; 4] = std::array::from_fn(|_| Float32Builder::with_capacity(n));
    let mut names = str_list_builder(n);
    let mut z = list_builder(n);
    let mut users = UInt64Builder::with_capacity(n);
    let mut action = StringBuilder::new();
    for r in rows {
        we.append_value(r.window_end);
        scope.append_value(&r.scope);
        scope_id.append_value(&r.scope_id);
        onset.append_value(r.onset_window_end);
        for (b, v) in f32s
            .iter_mut()
            .zip([r.distance, r.threshold, r.score, r.p_value])
        {
            b.append_value(v);
        }
        for (name, v) in &r.moved {
            names.values().append_value(name);
            z.values().append_value(*v);
        }
        names.append(true);
        z.append(true);
        users.append_value(r.users);
        action.append_value(&r.action);
    }
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(we.finish()),
        Arc::new(scope.finish()),
        Arc::new(scope_id.finish()),
        Arc::new(onset.finish()),
    ];
    columns.extend(f32s.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
    columns.extend([
        Arc::new(names.finish()) as ArrayRef,
        Arc::new(z.finish()),
        Arc::new(users.finish()),
        Arc::new(action.finish()),
    ]);
    finish(Table::Drift, columns)
}

/// Rows of `scaling` (one per drift event) as a record batch.
pub fn scaling_batch(rows: &[DriftRow]) -> RecordBatch {
    let n = rows.len();
    let mut we = ts_builder(n);
    let mut scope = StringBuilder::new();
    let mut scope_id = StringBuilder::new();
    let mut users = UInt64Builder::with_capacity(n);
    let mut current = Float32Builder::with_capacity(n);
    let mut predicted = list_builder(n);
    let mut upper = list_builder(n);
    let mut residuals = UInt64Builder::with_capacity(n);
    let mut trend = Float32Builder::with_capacity(n);
    let mut peak = UInt32Builder::with_capacity(n);
    let mut peak_end = ts_builder(n);
    let mut capacity = Float32Builder::with_capacity(n);
    let mut now = UInt64Builder::with_capacity(n);
    let mut recommended = UInt64Builder::with_capacity(n);
    let mut change = Int64Builder::with_capacity(n);
    let mut action = StringBuilder::new();
    for r in rows {
        we.append_value(r.window_end);
        scope.append_value(&r.scope);
        scope_id.append_value(&r.scope_id);
        users.append_value(r.users);
        current.append_value(r.current_requests);
        predicted.values().append_slice(&r.predicted_requests);
        predicted.append(true);
        upper.values().append_slice(&r.upper_requests);
        upper.append(true);
        residuals.append_value(r.calibration_residuals);
        trend.append_value(r.trend_per_window);
        peak.append_value(r.peak_horizon);
        peak_end.append_value(r.peak_window_end);
        capacity.append_value(r.capacity_per_instance);
        now.append_value(r.current_instances);
        recommended.append_value(r.recommended_instances);
        change.append_value(r.change);
        action.append_value(&r.action);
    }
    finish(
        Table::Scaling,
        vec![
            Arc::new(we.finish()),
            Arc::new(scope.finish()),
            Arc::new(scope_id.finish()),
            Arc::new(users.finish()),
            Arc::new(current.finish()),
            Arc::new(predicted.finish()),
            Arc::new(upper.finish()),
            Arc::new(residuals.finish()),
            Arc::new(trend.finish()),
            Arc::new(peak.finish()),
            Arc::new(peak_end.finish()),
            Arc::new(capacity.finish()),
            Arc::new(now.finish()),
            Arc::new(recommended.finish()),
            Arc::new(change.finish()),
            Arc::new(action.finish()),
        ],
    )
}

/// A row of `features`.
#[derive(Clone, Debug, PartialEq)]
pub struct FeatureRow {
    /// Window end, ms.
    pub window_end: i64,
    /// User.
    pub user_id: String,
    /// Events in the window.
    pub events: u64,
    /// Bytes in + out in the window.
    pub bytes: u64,
    /// Authenticated in the window.
    pub authenticated: bool,
    /// Known segment.
    pub segment: Option<String>,
    /// Active windows of history before this one (within `L`).
    pub history_windows: u32,
    /// The [`NUM_FEATURES`] feature values.
    pub values: Vec<f32>,
}

/// A row of `profiles`.
#[derive(Clone, Debug, PartialEq)]
pub struct ProfileRow {
    /// Window end, ms.
    pub window_end: i64,
    /// User.
    pub user_id: String,
    /// Embedder name.
    pub embedder: String,
    /// Embedding.
    pub embedding: Vec<f32>,
    /// Anomaly score.
    pub anomaly_score: Option<f32>,
    /// History windows.
    pub history_windows: u32,
    /// Events in the window.
    pub events: u64,
    /// Authenticated.
    pub authenticated: bool,
    /// Known segment.
    pub segment: Option<String>,
    /// Device.
    pub device: Option<String>,
    /// Os.
    pub os: Option<String>,
    /// Country.
    pub country: Option<String>,
}

/// A row of `segment_profiles`.
#[derive(Clone, Debug, PartialEq)]
pub struct SegmentProfileRow {
    /// Window end, ms.
    pub window_end: i64,
    /// Segment.
    pub segment: String,
    /// Profiles in the rolling window.
    pub profiles: i64,
    /// Mean embedding.
    pub embedding: Vec<f32>,
}

/// A row of `resonance`.
#[derive(Clone, Debug, PartialEq)]
pub struct ResonanceRow {
    /// Window end, ms.
    pub window_end: i64,
    /// User.
    pub user_id: String,
    /// Segment.
    pub segment: String,
    /// Centred cosine similarity.
    pub cosine: f32,
    /// Probability of the segment.
    pub probability: f32,
    /// Probability >= threshold.
    pub resonating: bool,
    /// The user's most probable segment.
    pub top: bool,
    /// The context prior was applied.
    pub cold_start: bool,
}

/// A row of `rejects`.
#[derive(Clone, Debug, PartialEq)]
pub struct RejectRow {
    /// Input file.
    pub file: String,
    /// 1-based record number in the file.
    pub row: u64,
    /// Offending field, when one.
    pub field: Option<String>,
    /// The kind of rejection: `late`, `malformed_record` or `invalid_<field>`.
    pub code: String,
    /// Why the row was rejected.
    pub reason: String,
}

fn ts_field(name: &str) -> Field {
    Field::new(
        name,
        DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
        false,
    )
}

fn finish(table: Table, columns: Vec<ArrayRef>) -> RecordBatch {
    RecordBatch::try_new(table.schema(), columns).expect("columns match the table schema")
}

fn ts_builder(n: usize) -> TimestampMillisecondBuilder {
    TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC")
}

fn list_builder(n: usize) -> ListBuilder<Float32Builder> {
    ListBuilder::with_capacity(Float32Builder::new(), n).with_field(Arc::new(Field::new(
        "item",
        DataType::Float32,
        true,
    )))
}

/// Rows of `features` as a record batch.
pub fn features_batch(rows: &[FeatureRow]) -> RecordBatch {
    let n = rows.len();
    let mut we = ts_builder(n);
    let mut user = StringBuilder::new();
    let mut events = UInt64Builder::with_capacity(n);
    let mut bytes = UInt64Builder::with_capacity(n);
    let mut auth = BooleanBuilder::with_capacity(n);
    let mut seg = StringBuilder::new();
    let mut hist = UInt32Builder::with_capacity(n);
    let mut feats: Vec<Float32Builder> = (0..NUM_FEATURES)
        .map(|_| Float32Builder::with_capacity(n))
        .collect();
    for r in rows {
        we.append_value(r.window_end);
        user.append_value(&r.user_id);
        events.append_value(r.events);
        bytes.append_value(r.bytes);
        auth.append_value(r.authenticated);
        seg.append_option(r.segment.as_deref());
        hist.append_value(r.history_windows);
        for (b, v) in feats
            .iter_mut()
            .zip(r.values.iter().chain(std::iter::repeat(&0.0)))
        {
            b.append_value(*v);
        }
    }
    let mut cols: Vec<ArrayRef> = vec![
        Arc::new(we.finish()),
        Arc::new(user.finish()),
        Arc::new(events.finish()),
        Arc::new(bytes.finish()),
        Arc::new(auth.finish()),
        Arc::new(seg.finish()),
        Arc::new(hist.finish()),
    ];
    cols.extend(
        feats
            .into_iter()
            .map(|mut b| Arc::new(b.finish()) as ArrayRef),
    );
    finish(Table::Features, cols)
}

/// Rows of `profiles` as a record batch.
pub fn profiles_batch(rows: &[ProfileRow]) -> RecordBatch {
    let n = rows.len();
    let mut we = ts_builder(n);
    let mut user = StringBuilder::new();
    let mut embedder = StringBuilder::new();
    let mut emb = list_builder(n);
    let mut anomaly = Float32Builder::with_capacity(n);
    let mut hist = UInt32Builder::with_capacity(n);
    let mut events = UInt64Builder::with_capacity(n);
    let mut auth = BooleanBuilder::with_capacity(n);
    let mut seg = StringBuilder::new();
    let mut device = StringBuilder::new();
    let mut os = StringBuilder::new();
    let mut country = StringBuilder::new();
    for r in rows {
        we.append_value(r.window_end);
        user.append_value(&r.user_id);
        embedder.append_value(&r.embedder);
        emb.values().append_slice(&r.embedding);
        emb.append(true);
        anomaly.append_option(r.anomaly_score);
        hist.append_value(r.history_windows);
        events.append_value(r.events);
        auth.append_value(r.authenticated);
        seg.append_option(r.segment.as_deref());
        device.append_option(r.device.as_deref());
        os.append_option(r.os.as_deref());
        country.append_option(r.country.as_deref());
    }
    finish(
        Table::Profiles,
        vec![
            Arc::new(we.finish()),
            Arc::new(user.finish()),
            Arc::new(embedder.finish()),
            Arc::new(emb.finish()),
            Arc::new(anomaly.finish()),
            Arc::new(hist.finish()),
            Arc::new(events.finish()),
            Arc::new(auth.finish()),
            Arc::new(seg.finish()),
            Arc::new(device.finish()),
            Arc::new(os.finish()),
            Arc::new(country.finish()),
        ],
    )
}

/// Rows of `segment_profiles` as a record batch.
pub fn segment_profiles_batch(rows: &[SegmentProfileRow]) -> RecordBatch {
    let n = rows.len();
    let mut we = ts_builder(n);
    let mut seg = StringBuilder::new();
    let mut profiles = Int64Builder::with_capacity(n);
    let mut emb = list_builder(n);
    for r in rows {
        we.append_value(r.window_end);
        seg.append_value(&r.segment);
        profiles.append_value(r.profiles);
        emb.values().append_slice(&r.embedding);
        emb.append(true);
    }
    finish(
        Table::SegmentProfiles,
        vec![
            Arc::new(we.finish()),
            Arc::new(seg.finish()),
            Arc::new(profiles.finish()),
            Arc::new(emb.finish()),
        ],
    )
}

/// Rows of `resonance` as a record batch.
pub fn resonance_batch(rows: &[ResonanceRow]) -> RecordBatch {
    let n = rows.len();
    let mut we = ts_builder(n);
    let mut user = StringBuilder::new();
    let mut seg = StringBuilder::new();
    let mut cos = Float32Builder::with_capacity(n);
    let mut prob = Float32Builder::with_capacity(n);
    let mut res = BooleanBuilder::with_capacity(n);
    let mut top = BooleanBuilder::with_capacity(n);
    let mut cold = BooleanBuilder::with_capacity(n);
    for r in rows {
        we.append_value(r.window_end);
        user.append_value(&r.user_id);
        seg.append_value(&r.segment);
        cos.append_value(r.cosine);
        prob.append_value(r.probability);
        res.append_value(r.resonating);
        top.append_value(r.top);
        cold.append_value(r.cold_start);
    }
    finish(
        Table::Resonance,
        vec![
            Arc::new(we.finish()),
            Arc::new(user.finish()),
            Arc::new(seg.finish()),
            Arc::new(cos.finish()),
            Arc::new(prob.finish()),
            Arc::new(res.finish()),
            Arc::new(top.finish()),
            Arc::new(cold.finish()),
        ],
    )
}

/// A row of `forecasts`: the demand predicted at `window_end` for the window `horizon`
/// windows later.
#[derive(Clone, Debug, PartialEq)]
pub struct ForecastRow {
    /// End of the window the forecast was made at, ms.
    pub window_end: i64,
    /// User.
    pub user_id: String,
    /// Forecaster name.
    pub forecaster: String,
    /// Windows ahead, 1-based.
    pub horizon: u32,
    /// End of the window predicted, ms.
    pub target_window_end: i64,
    /// Predicted events.
    pub predicted_requests: f32,
    /// Predicted bytes in + out.
    pub predicted_bytes: f32,
}

/// Rows of `forecasts` as a record batch.
pub fn forecasts_batch(rows: &[ForecastRow]) -> RecordBatch {
    let n = rows.len();
    let (mut we, mut target) = (ts_builder(n), ts_builder(n));
    let (mut user, mut name) = (StringBuilder::new(), StringBuilder::new());
    let mut horizon = UInt32Builder::with_capacity(n);
    let (mut req, mut bytes) = (
        Float32Builder::with_capacity(n),
        Float32Builder::with_capacity(n),
    );
    for r in rows {
        we.append_value(r.window_end);
        user.append_value(&r.user_id);
        name.append_value(&r.forecaster);
        horizon.append_value(r.horizon);
        target.append_value(r.target_window_end);
        req.append_value(r.predicted_requests);
        bytes.append_value(r.predicted_bytes);
    }
    finish(
        Table::Forecasts,
        vec![
            Arc::new(we.finish()),
            Arc::new(user.finish()),
            Arc::new(name.finish()),
            Arc::new(horizon.finish()),
            Arc::new(target.finish()),
            Arc::new(req.finish()),
            Arc::new(bytes.finish()),
        ],
    )
}

/// A row of `forecast_error`: a forecast against what happened in its target window.
#[derive(Clone, Debug, PartialEq)]
pub struct ForecastErrorRow {
    /// End of the target window, ms.
    pub window_end: i64,
    /// User.
    pub user_id: String,
    /// Forecaster name.
    pub forecaster: String,
    /// End of the window the forecast was made at, ms.
    pub made_at_window_end: i64,
    /// Windows ahead, 1-based.
    pub horizon: u32,
    /// Predicted events.
    pub predicted_requests: f32,
    /// Events that happened (0 if the user was inactive).
    pub actual_requests: u64,
    /// Predicted bytes.
    pub predicted_bytes: f32,
    /// Bytes that happened.
    pub actual_bytes: u64,
}

/// Rows of `forecast_error` as a record batch.
pub fn forecast_errors_batch(rows: &[ForecastErrorRow]) -> RecordBatch {
    let n = rows.len();
    let (mut we, mut made) = (ts_builder(n), ts_builder(n));
    let (mut user, mut name) = (StringBuilder::new(), StringBuilder::new());
    let mut horizon = UInt32Builder::with_capacity(n);
    let (mut preq, mut pbytes) = (
        Float32Builder::with_capacity(n),
        Float32Builder::with_capacity(n),
    );
    let (mut areq, mut abytes) = (
        UInt64Builder::with_capacity(n),
        UInt64Builder::with_capacity(n),
    );
    let (mut ereq, mut ebytes) = (
        Float64Builder::with_capacity(n),
        Float64Builder::with_capacity(n),
    );
    for r in rows {
        we.append_value(r.window_end);
        user.append_value(&r.user_id);
        name.append_value(&r.forecaster);
        made.append_value(r.made_at_window_end);
        horizon.append_value(r.horizon);
        preq.append_value(r.predicted_requests);
        areq.append_value(r.actual_requests);
        pbytes.append_value(r.predicted_bytes);
        abytes.append_value(r.actual_bytes);
        ereq.append_value((f64::from(r.predicted_requests) - r.actual_requests as f64).abs());
        ebytes.append_value((f64::from(r.predicted_bytes) - r.actual_bytes as f64).abs());
    }
    finish(
        Table::ForecastErrors,
        vec![
            Arc::new(we.finish()),
            Arc::new(user.finish()),
            Arc::new(name.finish()),
            Arc::new(made.finish()),
            Arc::new(horizon.finish()),
            Arc::new(preq.finish()),
            Arc::new(areq.finish()),
            Arc::new(pbytes.finish()),
            Arc::new(abytes.finish()),
            Arc::new(ereq.finish()),
            Arc::new(ebytes.finish()),
        ],
    )
}

/// Rows of `rejects` as a record batch.
pub fn rejects_batch(rows: &[RejectRow]) -> RecordBatch {
    let mut file = StringBuilder::new();
    let mut row = UInt64Builder::with_capacity(rows.len());
    let mut field = StringBuilder::new();
    let mut code = StringBuilder::new();
    let mut reason = StringBuilder::new();
    for r in rows {
        file.append_value(&r.file);
        row.append_value(r.row);
        field.append_option(r.field.as_deref());
        code.append_value(&r.code);
        reason.append_value(&r.reason);
    }
    finish(
        Table::Rejects,
        vec![
            Arc::new(file.finish()),
            Arc::new(row.finish()),
            Arc::new(field.finish()),
            Arc::new(code.finish()),
            Arc::new(reason.finish()),
        ],
    )
}

/// Where one table's rows go, window by window, on one worker. The dataflow's sinks call
/// [`write_window`](WindowSink::write_window) with each complete window's rows and
/// [`advance`](WindowSink::advance) as the frontier moves; the backfill writes date-partitioned
/// files, the continuous job one atomic file per window (and Kafka messages).
pub trait WindowSink {
    /// The table.
    fn table(&self) -> Table;
    /// Writes the rows of `window`, which is complete; returns the rows written (a sink may
    /// skip a window, e.g. one already emitted before a restart, and return 0).
    fn write_window(&mut self, window: u64, batch: &RecordBatch) -> Result<u64>;
    /// Every window before `frontier` has been passed to `write_window` (or had no rows);
    /// `None`: the input ended and every window has.
    fn advance(&mut self, frontier: Option<u64>) -> Result<()>;
}

/// Creates the sinks of a dataflow.
pub trait SinkFactory {
    /// The sink of `table` on worker `worker`.
    fn sink(&self, table: Table, worker: usize) -> Box<dyn WindowSink>;
}

/// The backfill's sinks: a [`PartitionedWriter`] per table and worker under `root`.
#[derive(Clone, Debug)]
pub struct PartitionedSinks {
    /// The output (staging) directory.
    pub root: PathBuf,
    /// Windows, for the date partitions.
    pub spec: personaflow_operators::WindowSpec,
    /// Rows per row group.
    pub row_group_rows: usize,
}

impl SinkFactory for PartitionedSinks {
    fn sink(&self, table: Table, worker: usize) -> Box<dyn WindowSink> {
        Box::new(PartitionedSink {
            writer: PartitionedWriter::new(&self.root, table, worker, self.row_group_rows),
            spec: self.spec,
        })
    }
}

#[derive(Debug)]
struct PartitionedSink {
    writer: PartitionedWriter,
    spec: personaflow_operators::WindowSpec,
}

impl WindowSink for PartitionedSink {
    fn table(&self) -> Table {
        self.writer.table()
    }

    fn write_window(&mut self, window: u64, batch: &RecordBatch) -> Result<u64> {
        let partition = date_partition(self.spec.start_ms(window));
        self.writer.write(Some(&partition), batch)?;
        Ok(batch.num_rows() as u64)
    }

    fn advance(&mut self, frontier: Option<u64>) -> Result<()> {
        if frontier.is_none() {
            self.writer.finish()?;
        }
        Ok(())
    }
}

/// The partition of the empty file of a table without rows when the run had no window:
/// `date=1970-01-01` (readers infer a partition column's type from its values, and pyarrow
/// refuses a table whose only partition is Hive's null, `__HIVE_DEFAULT_PARTITION__`).
pub const EPOCH_PARTITION: &str = "1970-01-01";

/// Gives every table of `tables` without a file under `root` one Parquet file with no rows
/// and the table's schema, in the date partition `partition`, so that every table exists for
/// readers (DuckDB's, Polars' and pyarrow's globs and datasets) even when it has no rows.
/// Returns the tables that got one.
pub fn write_empty_tables(
    root: &Path,
    tables: &[Table],
    partition: &str,
    row_group_rows: usize,
) -> Result<Vec<Table>> {
    let mut written = Vec::new();
    for &table in tables {
        let dir = root.join(table.name());
        if dir.is_dir() && has_parquet_file(&dir).map_err(|e| Error::io(&dir, e))? {
            continue;
        }
        let mut writer = PartitionedWriter::new(root, table, 0, row_group_rows);
        writer.write_empty(partition)?;
        written.push(table);
    }
    Ok(written)
}

/// Whether `dir` holds a `.parquet` file, at any depth.
fn has_parquet_file(dir: &Path) -> std::io::Result<bool> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            if has_parquet_file(&path)? {
                return Ok(true);
            }
        } else if path.extension().is_some_and(|e| e == "parquet") {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The window end encoded in a window file's name (`w{window_end_ms}-{worker}.parquet`, and the
/// operator-state files `w{window_end_ms}-{worker}.state`).
pub fn window_end_of_file(name: &str) -> Option<i64> {
    let rest = name.strip_prefix('w')?;
    let (end, _) = rest.split_once('-')?;
    end.parse().ok()
}

/// The `date=YYYY-MM-DD` partition of a window, by the window's start (UTC).
pub fn date_partition(window_start_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(window_start_ms)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| "unknown".to_string())
}

/// The Parquet writer properties of `table`'s files: zstd, `row_group_rows` rows per group.
pub fn writer_properties(table: Table, row_group_rows: usize) -> WriterProperties {
    writer_properties_for(&table.schema(), row_group_rows)
}

/// The Parquet writer properties of files of `schema`: zstd, `row_group_rows` rows per group,
/// dictionaries for string columns.
pub fn writer_properties_for(schema: &Schema, row_group_rows: usize) -> WriterProperties {
    // Dictionary encoding pays off for the repetitive string columns (users, segments,
    // context, reasons), not for floats, where it only costs time.
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_row_count(Some(row_group_rows.max(1)))
        .set_dictionary_enabled(false);
    for field in schema.fields() {
        if field.data_type() == &DataType::Utf8 {
            props =
                props.set_column_dictionary_enabled(ColumnPath::from(field.name().as_str()), true);
        }
    }
    props.build()
}

/// Writes one table of one worker: one Parquet file per date partition it sees, named
/// `part-{worker:03}-{seq:05}.parquet`, zstd-compressed.
#[derive(Debug)]
pub struct PartitionedWriter {
    dir: PathBuf,
    table: Table,
    worker: usize,
    props: WriterProperties,
    current: Option<(String, PathBuf, ArrowWriter<File>)>,
    seq: usize,
    rows: u64,
    files: Vec<PathBuf>,
}

impl PartitionedWriter {
    /// A writer for `table` under `root/<table>/`.
    pub fn new(root: &Path, table: Table, worker: usize, row_group_rows: usize) -> Self {
        let props = writer_properties(table, row_group_rows);
        PartitionedWriter {
            dir: root.join(table.name()),
            table,
            worker,
            props,
            current: None,
            seq: 0,
            rows: 0,
            files: Vec::new(),
        }
    }

    /// Appends a batch to partition `partition` (`None`: the table is not partitioned).
    pub fn write(&mut self, partition: Option<&str>, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let key = partition.unwrap_or("");
        if self.current.as_ref().map(|c| c.0.as_str()) != Some(key) {
            self.close_current()?;
            let dir = match partition {
                Some(p) => self.dir.join(format!("date={p}")),
                None => self.dir.clone(),
            };
            std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
            let path = dir.join(format!("part-{:03}-{:05}.parquet", self.worker, self.seq));
            self.seq += 1;
            let file = File::create(&path).map_err(|e| Error::io(&path, e))?;
            let writer = ArrowWriter::try_new(file, self.table.schema(), Some(self.props.clone()))
                .map_err(|e| Error::parquet(&path, e))?;
            self.current = Some((key.to_string(), path, writer));
        }
        let (_, path, writer) = self.current.as_mut().expect("opened above");
        writer
            .write(batch)
            .map_err(|e| Error::parquet(path.as_path(), e))?;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    fn close_current(&mut self) -> Result<()> {
        if let Some((_, path, writer)) = self.current.take() {
            writer.close().map_err(|e| Error::parquet(&path, e))?;
            self.files.push(path);
        }
        Ok(())
    }

    /// Closes the open file; returns rows written.
    pub fn finish(&mut self) -> Result<u64> {
        self.close_current()?;
        Ok(self.rows)
    }

    /// Like [`finish`](Self::finish), but writes a file with no rows (and the table's schema)
    /// if nothing was written, so the table always exists for readers.
    pub fn finish_unpartitioned(&mut self) -> Result<u64> {
        if self.rows == 0 && self.current.is_none() && self.files.is_empty() {
            let dir = self.dir.clone();
            self.write_empty_file(&dir)?;
        }
        self.finish()
    }

    /// Writes a file with no rows (and the table's schema) into partition `partition`.
    pub fn write_empty(&mut self, partition: &str) -> Result<()> {
        self.close_current()?;
        let dir = self.dir.join(format!("date={partition}"));
        self.write_empty_file(&dir)
    }

    fn write_empty_file(&mut self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let path = dir.join(format!("part-{:03}-{:05}.parquet", self.worker, self.seq));
        self.seq += 1;
        let file = File::create(&path).map_err(|e| Error::io(&path, e))?;
        let writer = ArrowWriter::try_new(file, self.table.schema(), Some(self.props.clone()))
            .map_err(|e| Error::parquet(&path, e))?;
        writer.close().map_err(|e| Error::parquet(&path, e))?;
        self.files.push(path);
        Ok(())
    }

    /// The table written.
    pub fn table(&self) -> Table {
        self.table
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Files completed so far.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    #[test]
    fn every_batch_matches_its_schema() {
        let f = features_batch(&[FeatureRow {
            window_end: 60_000,
            user_id: "u".into(),
            events: 3,
            bytes: 300,
            authenticated: false,
            segment: None,
            history_windows: 0,
            values: vec![1.0; NUM_FEATURES],
        }]);
        assert_eq!(f.num_columns(), 7 + NUM_FEATURES);
        let p = profiles_batch(&[ProfileRow {
            window_end: 60_000,
            user_id: "u".into(),
            embedder: "e".into(),
            embedding: vec![0.5, 0.25],
            anomaly_score: None,
            history_windows: 2,
            events: 1,
            authenticated: true,
            segment: Some("gamer".into()),
            device: None,
            os: None,
            country: Some("DE".into()),
        }]);
        assert_eq!(p.num_rows(), 1);
        assert_eq!(segment_profiles_batch(&[]).num_rows(), 0);
        assert_eq!(resonance_batch(&[]).schema(), Table::Resonance.schema());
        assert_eq!(rejects_batch(&[]).schema(), Table::Rejects.schema());
        let fc = forecasts_batch(&[ForecastRow {
            window_end: 60_000,
            user_id: "u".into(),
            forecaster: "lstm-v1".into(),
            horizon: 2,
            target_window_end: 180_000,
            predicted_requests: 1.5,
            predicted_bytes: 900.0,
        }]);
        assert_eq!(fc.schema(), Table::Forecasts.schema());
        let e = forecast_errors_batch(&[ForecastErrorRow {
            window_end: 180_000,
            user_id: "u".into(),
            forecaster: "lstm-v1".into(),
            made_at_window_end: 60_000,
            horizon: 2,
            predicted_requests: 1.5,
            actual_requests: 3,
            predicted_bytes: 900.0,
            actual_bytes: 1000,
        }]);
        let col = |name: &str| e.column(e.schema().index_of(name).unwrap()).clone();
        let abs = col("abs_error_bytes");
        let abs = abs
            .as_any()
            .downcast_ref::<arrow_array::Float64Array>()
            .unwrap();
        assert_eq!(abs.value(0), 100.0);
        let abs = col("abs_error_requests");
        let abs = abs
            .as_any()
            .downcast_ref::<arrow_array::Float64Array>()
            .unwrap();
        assert_eq!(abs.value(0), 1.5);
    }

    #[test]
    fn column_names_are_unique_in_every_table() {
        // Regression: `features` once had both the `events` count and an `events` feature,
        // which pyarrow and DuckDB refuse to read.
        for table in Table::ALL {
            let schema = table.schema();
            let mut names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            let n = names.len();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), n, "duplicate column in {}", table.name());
            assert!(!names.contains(&"date"), "`date` is the partition column");
        }
    }

    #[test]
    fn partitioned_writer_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = PartitionedWriter::new(dir.path(), Table::Resonance, 1, 1024);
        let row = |we: i64| ResonanceRow {
            window_end: we,
            user_id: "u".into(),
            segment: "gamer".into(),
            cosine: 0.5,
            probability: 0.9,
            resonating: true,
            top: true,
            cold_start: false,
        };
        w.write(Some("2026-01-05"), &resonance_batch(&[row(1), row(2)]))
            .unwrap();
        w.write(Some("2026-01-06"), &resonance_batch(&[row(3)]))
            .unwrap();
        assert_eq!(w.finish().unwrap(), 3);
        let files = w.files().to_vec();
        assert_eq!(files.len(), 2);
        assert!(files[0].ends_with("resonance/date=2026-01-05/part-001-00000.parquet"));
        let f = File::open(&files[0]).unwrap();
        let rows: usize = ParquetRecordBatchReaderBuilder::try_new(f)
            .unwrap()
            .build()
            .unwrap()
            .map(|b| b.unwrap().num_rows())
            .sum();
        assert_eq!(rows, 2);
    }

    #[test]
    fn partitions_follow_the_window_start_date() {
        assert_eq!(date_partition(0), "1970-01-01");
        assert_eq!(date_partition(86_400_000 - 1), "1970-01-01");
        assert_eq!(date_partition(86_400_000), "1970-01-02");
    }
}
