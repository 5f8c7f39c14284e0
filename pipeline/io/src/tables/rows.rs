//! Every output table's row type, field by field: a field is a column (name, Rust type, and
//! the [`columns`](super::columns) kind that gives its Arrow type). The field order is the
//! column order.

table_rows! {
    /// A row of `features`: one user's window.
    FeatureRow = "features" {
        /// Window end, ms.
        window_end: i64 => Timestamp,
        /// User.
        user_id: String => Utf8,
        /// Events in the window.
        events: u64 => U64,
        /// Bytes in + out in the window.
        bytes: u64 => U64,
        /// Authenticated in the window.
        authenticated: bool => Bool,
        /// Known segment.
        segment: Option<String> => OptUtf8,
        /// Active windows of history before this one (within `L`).
        history_windows: u32 => U32,
        /// The feature values, one column each (named as in the feature schema).
        values: Vec<f32> => Features,
    }

    /// A row of `profiles`: one user's latent profile in a window.
    ProfileRow = "profiles" {
        /// Window end, ms.
        window_end: i64 => Timestamp,
        /// User.
        user_id: String => Utf8,
        /// Embedder name.
        embedder: String => Utf8,
        /// Embedding.
        embedding: Vec<f32> => ListF32,
        /// Anomaly score.
        anomaly_score: Option<f32> => OptF32,
        /// History windows.
        history_windows: u32 => U32,
        /// Events in the window.
        events: u64 => U64,
        /// Authenticated.
        authenticated: bool => Bool,
        /// Known segment.
        segment: Option<String> => OptUtf8,
        /// Device.
        device: Option<String> => OptUtf8,
        /// Os.
        os: Option<String> => OptUtf8,
        /// Country.
        country: Option<String> => OptUtf8,
    }

    /// A row of `segment_profiles`.
    SegmentProfileRow = "segment_profiles" {
        /// Window end, ms.
        window_end: i64 => Timestamp,
        /// Segment.
        segment: String => Utf8,
        /// Profiles in the rolling window.
        profiles: i64 => I64,
        /// Mean embedding.
        embedding: Vec<f32> => ListF32,
    }

    /// A row of `resonance`: one user's score for one segment in a window.
    ResonanceRow = "resonance" {
        /// Window end, ms.
        window_end: i64 => Timestamp,
        /// User.
        user_id: String => Utf8,
        /// Segment.
        segment: String => Utf8,
        /// Centred cosine similarity.
        cosine: f32 => F32,
        /// Probability of the segment.
        probability: f32 => F32,
        /// Probability >= threshold.
        resonating: bool => Bool,
        /// The user's most probable segment.
        top: bool => Bool,
        /// The context prior was applied.
        cold_start: bool => Bool,
    }

    /// A row of `forecasts`: the demand predicted at `window_end` for the window `horizon`
    /// windows later.
    ForecastRow = "forecasts" {
        /// End of the window the forecast was made at, ms.
        window_end: i64 => Timestamp,
        /// User.
        user_id: String => Utf8,
        /// Forecaster name.
        forecaster: String => Utf8,
        /// Windows ahead, 1-based.
        horizon: u32 => U32,
        /// End of the window predicted, ms.
        target_window_end: i64 => Timestamp,
        /// Predicted events.
        predicted_requests: f32 => F32,
        /// Predicted bytes in + out.
        predicted_bytes: f32 => F32,
    }

    /// A row of `forecast_error`: a forecast against what happened in its target window
    /// (build it with [`ForecastErrorRow::new`], which computes the absolute errors).
    ForecastErrorRow = "forecast_error" {
        /// End of the target window, ms.
        window_end: i64 => Timestamp,
        /// User.
        user_id: String => Utf8,
        /// Forecaster name.
        forecaster: String => Utf8,
        /// End of the window the forecast was made at, ms.
        made_at_window_end: i64 => Timestamp,
        /// Windows ahead, 1-based.
        horizon: u32 => U32,
        /// Predicted events.
        predicted_requests: f32 => F32,
        /// Events that happened (0 if the user was inactive).
        actual_requests: u64 => U64,
        /// Predicted bytes.
        predicted_bytes: f32 => F32,
        /// Bytes that happened.
        actual_bytes: u64 => U64,
        /// `|predicted_requests - actual_requests|`.
        abs_error_requests: f64 => F64,
        /// `|predicted_bytes - actual_bytes|`.
        abs_error_bytes: f64 => F64,
    }

    /// A row of `personas`.
    PersonaRow = "personas" {
        /// Window end, ms.
        window_end: i64 => Timestamp,
        /// Stable persona id.
        persona_id: u32 => U32,
        /// Users assigned in the window.
        size: u64 => U64,
        /// Personas in the window.
        personas: u32 => U32,
        /// k was chosen in this window.
        reselected: bool => Bool,
        /// Centroid.
        centroid: Vec<f32> => ListF32,
        /// Characterising features.
        top_features: Vec<String> => ListUtf8,
        /// Their z (persona mean against the window's users), in the same order.
        top_feature_z: Vec<f32> => ListF32,
    }

    /// A row of `persona_assignments`.
    PersonaAssignmentRow = "persona_assignments" {
        /// Window end, ms.
        window_end: i64 => Timestamp,
        /// User.
        user_id: String => Utf8,
        /// Nearest persona.
        persona_id: u32 => U32,
        /// Distance to it.
        distance: f32 => F32,
        /// The window's persona ids.
        persona_ids: Vec<u32> => ListU32,
        /// Probability of each.
        probabilities: Vec<f32> => ListF32,
    }

    /// A row of `drift`: a drift event of a segment or persona.
    DriftRow = "drift" {
        /// Window end, ms.
        window_end: i64 => Timestamp,
        /// `segment` or `persona`.
        scope: String => Utf8,
        /// Segment name or persona id.
        scope_id: String => Utf8,
        /// Estimated onset window end, ms.
        onset_window_end: i64 => Timestamp,
        /// Standardised centroid distance from the baseline.
        distance: f32 => F32,
        /// Threshold.
        threshold: f32 => F32,
        /// `distance / threshold`.
        score: f32 => F32,
        /// Permutation-test p-value.
        p_value: f32 => F32,
        /// Features that moved most.
        moved_features: Vec<String> => ListUtf8,
        /// Their change in baseline standard deviations, in the same order.
        moved_z: Vec<f32> => ListF32,
        /// Users of the scope in the window.
        users: u64 => U64,
        /// `scale_out`, `scale_in` or `hold`.
        action: String => Utf8,
    }

    /// A row of `scaling`: the recommendation of a drift event.
    ScalingRow = "scaling" {
        /// Window end, ms.
        window_end: i64 => Timestamp,
        /// `segment` or `persona`.
        scope: String => Utf8,
        /// Segment name or persona id.
        scope_id: String => Utf8,
        /// Users of the scope in the window.
        users: u64 => U64,
        /// Current requests of those users.
        current_requests: f32 => F32,
        /// Expected requests per horizon (calibrated summed forecasts).
        predicted_requests: Vec<f32> => ListF32,
        /// Requests per horizon covered with the configured probability.
        upper_requests: Vec<f32> => ListF32,
        /// Forecast residuals behind the calibration (0: uncalibrated).
        calibration_residuals: u64 => U64,
        /// Demand rise per window since the onset, carried forward (0: none).
        trend_per_window: f32 => F32,
        /// Horizon of the peak of `upper_requests`.
        peak_horizon: u32 => U32,
        /// Peak window end, ms.
        peak_window_end: i64 => Timestamp,
        /// Requests per window per instance.
        capacity_per_instance: f32 => F32,
        /// Instances now.
        current_instances: u64 => U64,
        /// Instances for the peak.
        recommended_instances: u64 => U64,
        /// Change.
        change: i64 => I64,
        /// `scale_out`, `scale_in` or `hold`.
        action: String => Utf8,
    }

    /// A row of `rejects`: an input row that did not become an event.
    RejectRow = "rejects" {
        /// Input file.
        file: String => Utf8,
        /// 1-based record number in the file.
        row: u64 => U64,
        /// Offending field, when one.
        field: Option<String> => OptUtf8,
        /// The kind of rejection: `late`, `malformed_record` or `invalid_<field>`.
        code: String => Utf8,
        /// Why the row was rejected.
        reason: String => Utf8,
    }

    /// A row of the continuous job's `late` table: an event that came after its window closed.
    LateRow = "late" {
        /// Kafka partition.
        partition: i32 => I32,
        /// Offset in it.
        offset: i64 => I64,
        /// User.
        user_id: String => Utf8,
        /// Event time, ms.
        ts: i64 => Timestamp,
        /// The partition's watermark when the event came, ms.
        watermark: i64 => Timestamp,
        /// `watermark - ts`.
        lateness_ms: i64 => I64,
        /// The message as received.
        payload: String => Utf8,
    }
}

impl ForecastErrorRow {
    /// The row of a forecast made at `made_at_window_end` for `window_end`, with its absolute
    /// errors.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        window_end: i64,
        user_id: String,
        forecaster: String,
        made_at_window_end: i64,
        horizon: u32,
        (predicted_requests, actual_requests): (f32, u64),
        (predicted_bytes, actual_bytes): (f32, u64),
    ) -> Self {
        ForecastErrorRow {
            window_end,
            user_id,
            forecaster,
            made_at_window_end,
            horizon,
            predicted_requests,
            actual_requests,
            predicted_bytes,
            actual_bytes,
            abs_error_requests: (f64::from(predicted_requests) - actual_requests as f64).abs(),
            abs_error_bytes: (f64::from(predicted_bytes) - actual_bytes as f64).abs(),
        }
    }
}

impl LateRow {
    /// The row of an event of `user_id` at `ts` that came when its partition's watermark was
    /// `watermark`.
    pub fn new(
        partition: i32,
        offset: i64,
        user_id: String,
        ts: i64,
        watermark: i64,
        payload: String,
    ) -> Self {
        LateRow {
            partition,
            offset,
            user_id,
            ts,
            watermark,
            lateness_ms: watermark - ts,
            payload,
        }
    }
}
