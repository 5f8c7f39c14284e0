//! Every output table's row type, field by field: a field is a column (name, Rust type, and
//! the [`columns`](super::columns) kind that gives its Arrow type). The field order is the
//! column order. User ids are shared (`Arc<str>`): the pipeline's keys hold them, and a row
//! takes a pointer, not a copy.

use std::sync::Arc;

table_rows! {
    /// A row of `features`: one user's window.
    FeatureRow = "features" {
        /// Window end, ms.
        window_end: i64 => Timestamp,
        /// User.
        user_id: Arc<str> => Utf8,
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
        user_id: Arc<str> => Utf8,
        /// Embedder name.
        embedder: Arc<str> => Utf8,
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
        device: Option<Arc<str>> => OptSharedUtf8,
        /// Os.
        os: Option<Arc<str>> => OptSharedUtf8,
        /// Country.
        country: Option<Arc<str>> => OptSharedUtf8,
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
        user_id: Arc<str> => Utf8,
        /// Segment.
        segment: Arc<str> => Utf8,
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
        user_id: Arc<str> => Utf8,
        /// Forecaster name.
        forecaster: Arc<str> => Utf8,
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
        user_id: Arc<str> => Utf8,
        /// Forecaster name.
        forecaster: Arc<str> => Utf8,
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
        user_id: Arc<str> => Utf8,
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

    /// A row of `policies`: one user's blended network policy in a window.
    PolicyRow = "policies" {
        /// Window end, ms.
        window_end: i64 => Timestamp,
        /// User.
        user_id: Arc<str> => Utf8,
        /// The most probable catalogue entry.
        persona: Arc<str> => Utf8,
        /// Catalogue entries with a positive probability, most probable first.
        personas: Vec<Arc<str>> => ListSharedUtf8,
        /// Their probabilities, in the same order.
        probabilities: Vec<f32> => ListF32,
        /// RFC 4594 service class of the most probable entry.
        diffserv_class: Arc<str> => Utf8,
        /// Its DSCP.
        dscp: u32 => U32,
        /// Its endpoint class.
        endpoint_class: Arc<str> => Utf8,
        /// Blended floor bandwidth, bits/s.
        floor_bps: u64 => U64,
        /// Blended static reservation, bits/s.
        guaranteed_bps: u64 => U64,
        /// Blended ceiling, bits/s.
        ceiling_bps: u64 => U64,
        /// Allocation for the coming windows (forecast x headroom in [floor, ceiling]), bits/s.
        allocated_bps: u64 => U64,
        /// Demand the allocation was sized for (the forecast's peak), bits/s.
        sized_for_bps: u64 => U64,
        /// Blended burst, bytes.
        burst_bytes: u64 => U64,
        /// Blended priority weight.
        priority_weight: f32 => F32,
        /// Blended latency target, ms.
        latency_target_ms: f32 => F32,
        /// Request rate limit for the coming windows, requests/s.
        rate_limit_rps: f32 => F32,
        /// Blended request limit (the bound of `rate_limit_rps`), requests/s.
        request_limit_rps: f32 => F32,
        /// Blended send buffer minimum, bytes.
        send_buffer_min: u64 => U64,
        /// Blended send buffer maximum, bytes.
        send_buffer_max: u64 => U64,
        /// Blended receive buffer minimum, bytes.
        receive_buffer_min: u64 => U64,
        /// Blended receive buffer maximum, bytes.
        receive_buffer_max: u64 => U64,
        /// Strictest authentication: `none`, `password`, `mfa` or `certificate`.
        authentication: &'static str => Utf8,
        /// Deepest inspection: `none`, `metadata` or `full`.
        inspection: &'static str => Utf8,
        /// Application classes allowed.
        allowed_app_classes: Vec<Arc<str>> => ListSharedUtf8,
        /// Ports allowed (`443`, `27000-27050`).
        allowed_ports: Vec<Arc<str>> => ListSharedUtf8,
        /// A VPN is required.
        vpn_required: bool => Bool,
        /// Bytes in + out in the window.
        current_bytes: u64 => U64,
        /// Events in the window.
        current_requests: u64 => U64,
    }

    /// A row of `socket_profiles`: one client's predicted behaviour and the socket settings it
    /// implies, in a window.
    SocketProfileRow = "socket_profiles" {
        /// Window end, ms.
        window_end: i64 => Timestamp,
        /// User.
        user_id: Arc<str> => Utf8,
        /// Predicted bytes/s in the next window.
        predicted_bytes_per_s: f32 => F32,
        /// Predicted requests/s in the next window.
        predicted_requests_per_s: f32 => F32,
        /// `streaming`, `bulk`, `transactional` or `control`.
        request_type: &'static str => Utf8,
        /// Anomaly score quantile in the segment's recent scores, [0, 1] (null: no score).
        risk: Option<f32> => OptF32,
        /// Round trip the buffers are sized for, ms.
        rtt_ms: f32 => F32,
        /// Send buffer (`SO_SNDBUF`), bytes.
        send_buffer: u64 => U64,
        /// Receive buffer (`SO_RCVBUF`), bytes.
        receive_buffer: u64 => U64,
        /// Rate limit, bytes/s.
        rate_limit_bytes_per_s: u64 => U64,
        /// `standard`, `elevated` or `strict`.
        security_level: &'static str => Utf8,
        /// Endpoint class for the request type.
        endpoint: String => Utf8,
    }

    /// A row of `shaping_feedback`: the allocation made for a window against the demand that
    /// came in it.
    ShapingFeedbackRow = "shaping_feedback" {
        /// End of the window judged, ms.
        window_end: i64 => Timestamp,
        /// User.
        user_id: Arc<str> => Utf8,
        /// End of the window whose policy made the allocation, ms.
        made_at_window_end: i64 => Timestamp,
        /// The policy's most probable catalogue entry.
        persona: Arc<str> => Utf8,
        /// Allocated bandwidth, bits/s.
        allocated_bps: u64 => U64,
        /// Rate limit, requests/s.
        rate_limit_rps: f32 => F32,
        /// Latency target, ms.
        latency_target_ms: f32 => F32,
        /// Bytes that came (0: the user was inactive).
        demand_bytes: u64 => U64,
        /// Requests that came.
        demand_requests: u64 => U64,
        /// Bytes beyond the allocation.
        shortfall_bytes: f64 => F64,
        /// Bytes allocated and unused.
        waste_bytes: f64 => F64,
        /// Requests beyond the rate limit.
        excess_requests: f64 => F64,
        /// Share of the demand served within the latency target on the allocation (link model).
        served_share: f64 => F64,
        /// All of the demand was served within the target.
        within_target: bool => Bool,
    }

    /// A row of `service_feedback`: what another service observed of a user, as it reported
    /// it to `POST /v1/users/{id}/feedback`; appended by the server.
    ServiceFeedbackRow = "service_feedback" {
        /// The time observed (the service's, else the receipt), ms.
        observed_at: i64 => Timestamp,
        /// When the server received it, ms.
        received_at: i64 => Timestamp,
        /// User.
        user_id: String => Utf8,
        /// The reporting service.
        source: String => Utf8,
        /// Bytes the service saw the user move.
        observed_bytes: Option<u64> => OptU64,
        /// Requests the service saw.
        observed_requests: Option<u64> => OptU64,
        /// The user's quality of experience as the service judged it, in [0, 1].
        qoe: Option<f32> => OptF32,
        /// Latency the service measured, ms.
        latency_ms: Option<f32> => OptF32,
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
        user_id: Arc<str>,
        forecaster: Arc<str>,
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
