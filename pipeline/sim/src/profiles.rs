//! Behaviour tables of the simulator: the action vocabulary, the countries, and one
//! [`SegmentProfile`] per segment.
//!
//! Everything here is a documented constant table; the generator in `user.rs` turns a
//! profile plus per-user random multipliers into events. Volumes are chosen so that the
//! population averages roughly 150–400 events per user per day (see [`SegmentProfile`]).

/// Something a user can do, with its category and typical cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Action {
    Login,
    Logout,
    PageView,
    Search,
    Click,
    Purchase,
    GameMove,
    Chat,
    Matchmaking,
    AssetDownload,
    Play,
    StreamChunk,
    Like,
    ApiCall,
    Email,
    DocEdit,
    VideoCall,
    FileUpload,
    Heartbeat,
    Telemetry,
    FirmwareCheck,
}

/// Typical size and latency of one action (medians of log-normal draws).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ActionSpec {
    /// Value of the `action` column.
    pub name: &'static str,
    /// Value of the `category` column.
    pub category: &'static str,
    /// Median bytes received by the user.
    pub bytes_in: f64,
    /// Median bytes sent by the user.
    pub bytes_out: f64,
    /// Log-normal sigma of both byte counts.
    pub bytes_sigma: f64,
    /// Median server-side latency in milliseconds (network round trip is added per country).
    pub latency_ms: f64,
    /// Log-normal sigma of the latency.
    pub latency_sigma: f64,
    /// Status code of a successful request.
    pub ok_status: i32,
}

/// An [`ActionSpec`] from `(bytes_in, bytes_out, bytes_sigma)` and
/// `(latency_ms, latency_sigma)`.
const fn spec(
    name: &'static str,
    category: &'static str,
    (bytes_in, bytes_out, bytes_sigma): (f64, f64, f64),
    (latency_ms, latency_sigma): (f64, f64),
    ok_status: i32,
) -> ActionSpec {
    ActionSpec {
        name,
        category,
        bytes_in,
        bytes_out,
        bytes_sigma,
        latency_ms,
        latency_sigma,
        ok_status,
    }
}

impl Action {
    /// The action's vocabulary entry.
    #[rustfmt::skip]
    pub(crate) const fn spec(self) -> ActionSpec {
        // name, category, (bytes in, bytes out, sigma), (latency ms, sigma), status on success
        match self {
            Action::Login => spec("login", "auth", (2_000.0, 800.0, 0.3), (180.0, 0.4), 200),
            Action::Logout => spec("logout", "auth", (500.0, 300.0, 0.3), (80.0, 0.4), 200),
            Action::PageView => spec("page_view", "web", (180_000.0, 2_500.0, 0.8), (250.0, 0.6), 200),
            Action::Search => spec("search", "search", (40_000.0, 1_200.0, 0.6), (150.0, 0.5), 200),
            Action::Click => spec("click", "web", (8_000.0, 900.0, 0.7), (90.0, 0.5), 200),
            Action::Purchase => spec("purchase", "commerce", (25_000.0, 4_000.0, 0.4), (450.0, 0.4), 200),
            Action::GameMove => spec("game_move", "game", (600.0, 300.0, 0.4), (35.0, 0.35), 200),
            Action::Chat => spec("chat", "social", (1_200.0, 700.0, 0.5), (60.0, 0.4), 200),
            Action::Matchmaking => spec("matchmaking", "game", (6_000.0, 1_500.0, 0.4), (900.0, 0.6), 200),
            Action::AssetDownload => spec("asset_download", "game", (25_000_000.0, 10_000.0, 1.0), (4_000.0, 0.7), 200),
            Action::Play => spec("play", "video", (60_000.0, 2_000.0, 0.4), (350.0, 0.4), 200),
            Action::StreamChunk => spec("stream_chunk", "video", (8_000_000.0, 3_000.0, 0.5), (220.0, 0.4), 200),
            Action::Like => spec("like", "social", (1_000.0, 600.0, 0.3), (80.0, 0.4), 200),
            Action::ApiCall => spec("api_call", "api", (12_000.0, 3_000.0, 0.9), (120.0, 0.6), 200),
            Action::Email => spec("email", "email", (45_000.0, 20_000.0, 1.0), (200.0, 0.5), 200),
            Action::DocEdit => spec("doc_edit", "docs", (6_000.0, 9_000.0, 0.6), (140.0, 0.5), 200),
            Action::VideoCall => spec("video_call", "conferencing", (1_500_000.0, 1_200_000.0, 0.4), (60.0, 0.3), 200),
            Action::FileUpload => spec("file_upload", "storage", (50_000.0, 3_000_000.0, 1.0), (1_500.0, 0.6), 201),
            Action::Heartbeat => spec("heartbeat", "iot", (120.0, 180.0, 0.1), (400.0, 0.5), 204),
            Action::Telemetry => spec("telemetry", "iot", (300.0, 2_400.0, 0.5), (450.0, 0.5), 202),
            Action::FirmwareCheck => spec("firmware_check", "iot", (2_000.0, 300.0, 0.3), (600.0, 0.5), 200),
        }
    }
}

/// A country: code, offset of its (main) time zone from UTC, and the network round trip to
/// the service.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Country {
    /// Value of the `country` column (ISO 3166 alpha-2).
    pub code: &'static str,
    /// Offset of local time from UTC in minutes (no daylight saving).
    pub utc_offset_min: i64,
    /// Median network round trip added to every latency, milliseconds.
    pub rtt_ms: f64,
}

/// Number of entries in [`COUNTRIES`] (the length of every per-segment country weight row).
pub(crate) const N_COUNTRIES: usize = 12;

/// The countries users come from.
#[rustfmt::skip]
pub(crate) const COUNTRIES: [Country; N_COUNTRIES] = [
    Country { code: "US", utc_offset_min: -300, rtt_ms: 20.0 },
    Country { code: "CA", utc_offset_min: -300, rtt_ms: 25.0 },
    Country { code: "BR", utc_offset_min: -180, rtt_ms: 90.0 },
    Country { code: "GB", utc_offset_min: 0, rtt_ms: 15.0 },
    Country { code: "DE", utc_offset_min: 60, rtt_ms: 15.0 },
    Country { code: "FR", utc_offset_min: 60, rtt_ms: 15.0 },
    Country { code: "IN", utc_offset_min: 330, rtt_ms: 110.0 },
    Country { code: "JP", utc_offset_min: 540, rtt_ms: 70.0 },
    Country { code: "KR", utc_offset_min: 540, rtt_ms: 75.0 },
    Country { code: "AU", utc_offset_min: 600, rtt_ms: 140.0 },
    Country { code: "NG", utc_offset_min: 60, rtt_ms: 130.0 },
    Country { code: "MX", utc_offset_min: -360, rtt_ms: 45.0 },
];

/// The behaviour of one segment. Users draw their own multipliers around these values.
///
/// Expected events per active day ≈ `sessions_per_day` × mean session length / mean gap
/// (+ one heartbeat per heartbeat period for devices):
/// gamer ≈ 300, video_streamer ≈ 240, remote_worker ≈ 320 on weekdays and ≈ 25 on
/// weekends, iot_device ≈ 340, casual_browser ≈ 80.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SegmentProfile {
    /// The segment name (also in [`super::SEGMENTS`], same order).
    pub name: &'static str,
    /// Share of the population in this segment (normalised over all segments).
    pub population_weight: f64,
    /// Mean number of sessions per (weekday) day.
    pub sessions_per_day: f64,
    /// Session rate on Saturday and Sunday (local time) relative to weekdays.
    pub weekend_factor: f64,
    /// Relative session-start rate for each local hour 0..24 (normalised to mean 1).
    pub hourly: [f64; 24],
    /// Standard deviation, hours, of each user's shift of the daily curve (chronotype).
    pub chronotype_sd_h: f64,
    /// Median session length, minutes, and its log-normal sigma.
    pub session_minutes: f64,
    /// Log-normal sigma of session lengths.
    pub session_sigma: f64,
    /// Median gap between events within a session, seconds.
    pub gap_seconds: f64,
    /// Log-normal sigma of the gaps (large = bursts then pauses).
    pub gap_sigma: f64,
    /// Median heartbeat period, seconds, for always-on devices (heartbeats run 24/7,
    /// independently of sessions); `None` for people.
    pub heartbeat_seconds: Option<f64>,
    /// The action mix within sessions: (action, relative weight).
    pub actions: &'static [(Action, f64)],
    /// Device class and operating system mix: (device, os, relative weight).
    pub devices: &'static [(&'static str, &'static str, f64)],
    /// Relative weight of each country of [`COUNTRIES`].
    pub countries: [f64; N_COUNTRIES],
    /// Multiplier of every latency (game servers are close, cellular devices are far).
    pub latency_factor: f64,
    /// Baseline probability of a 4xx status.
    pub client_error_rate: f64,
    /// Baseline probability of a 5xx status.
    pub server_error_rate: f64,
}

/// Local hours 0..24, late-evening peak.
const GAMER_HOURLY: [f64; 24] = [
    0.5, 0.35, 0.2, 0.1, 0.05, 0.05, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.45, 0.5, 0.6, 0.8,
    1.0, 1.3, 1.6, 1.9, 2.0, 1.8, 1.0,
];
/// Local hours 0..24, prime-time peak with a small lunch bump.
const VIDEO_HOURLY: [f64; 24] = [
    0.6, 0.35, 0.2, 0.1, 0.05, 0.05, 0.1, 0.2, 0.25, 0.25, 0.3, 0.35, 0.5, 0.45, 0.4, 0.4, 0.5,
    0.7, 1.1, 1.6, 2.0, 2.1, 1.8, 1.2,
];
/// Local hours 0..24, business hours with a lunch dip.
const WORKER_HOURLY: [f64; 24] = [
    0.01, 0.01, 0.01, 0.01, 0.01, 0.02, 0.05, 0.2, 1.2, 2.2, 2.4, 2.3, 1.2, 1.9, 2.3, 2.2, 1.9,
    1.0, 0.4, 0.2, 0.15, 0.1, 0.05, 0.02,
];
/// Flat: devices do not sleep.
const FLAT_HOURLY: [f64; 24] = [1.0; 24];
/// Local hours 0..24, commute, lunch and evening.
const CASUAL_HOURLY: [f64; 24] = [
    0.3, 0.15, 0.08, 0.05, 0.05, 0.1, 0.3, 0.7, 0.9, 0.7, 0.6, 0.7, 1.0, 0.9, 0.7, 0.7, 0.8, 1.0,
    1.2, 1.4, 1.5, 1.3, 1.0, 0.6,
];

/// One profile per segment, in the order of [`super::SEGMENTS`].
#[rustfmt::skip]
pub(crate) const PROFILES: [SegmentProfile; 5] = [
    SegmentProfile {
        name: "gamer",
        population_weight: 0.15,
        sessions_per_day: 2.5,
        weekend_factor: 1.4,
        hourly: GAMER_HOURLY,
        chronotype_sd_h: 1.0,
        session_minutes: 50.0,
        session_sigma: 0.6,
        gap_seconds: 20.0,
        gap_sigma: 0.9,
        heartbeat_seconds: None,
        actions: &[
            (Action::GameMove, 0.55),
            (Action::Chat, 0.18),
            (Action::Matchmaking, 0.07),
            (Action::PageView, 0.05),
            (Action::Click, 0.03),
            (Action::Search, 0.02),
            (Action::Login, 0.04),
            (Action::Logout, 0.02),
            (Action::Purchase, 0.015),
            (Action::AssetDownload, 0.005),
        ],
        devices: &[
            ("desktop", "windows", 0.5),
            ("console", "playstation", 0.2),
            ("console", "xbox", 0.1),
            ("mobile", "android", 0.15),
            ("mobile", "ios", 0.05),
        ],
        //          US    CA    BR    GB    DE    FR    IN    JP    KR    AU    NG    MX
        countries: [0.25, 0.04, 0.10, 0.07, 0.08, 0.05, 0.08, 0.08, 0.12, 0.04, 0.03, 0.06],
        latency_factor: 0.8,
        client_error_rate: 0.005,
        server_error_rate: 0.002,
    },
    SegmentProfile {
        name: "video_streamer",
        population_weight: 0.25,
        sessions_per_day: 2.0,
        weekend_factor: 1.3,
        hourly: VIDEO_HOURLY,
        chronotype_sd_h: 1.0,
        session_minutes: 55.0,
        session_sigma: 0.6,
        gap_seconds: 30.0,
        gap_sigma: 0.4,
        heartbeat_seconds: None,
        actions: &[
            (Action::StreamChunk, 0.62),
            (Action::Play, 0.08),
            (Action::Search, 0.08),
            (Action::Like, 0.05),
            (Action::PageView, 0.09),
            (Action::Click, 0.04),
            (Action::Login, 0.03),
            (Action::Purchase, 0.005),
        ],
        devices: &[
            ("tv", "tizen", 0.2),
            ("tv", "android", 0.15),
            ("mobile", "ios", 0.2),
            ("mobile", "android", 0.2),
            ("tablet", "ipados", 0.1),
            ("desktop", "windows", 0.1),
            ("desktop", "macos", 0.05),
        ],
        //          US    CA    BR    GB    DE    FR    IN    JP    KR    AU    NG    MX
        countries: [0.30, 0.05, 0.10, 0.10, 0.08, 0.07, 0.10, 0.05, 0.04, 0.04, 0.03, 0.04],
        latency_factor: 1.0,
        client_error_rate: 0.008,
        server_error_rate: 0.002,
    },
    SegmentProfile {
        name: "remote_worker",
        population_weight: 0.20,
        sessions_per_day: 7.0,
        weekend_factor: 0.08,
        hourly: WORKER_HOURLY,
        chronotype_sd_h: 0.5,
        session_minutes: 45.0,
        session_sigma: 0.5,
        gap_seconds: 40.0,
        gap_sigma: 1.0,
        heartbeat_seconds: None,
        actions: &[
            (Action::ApiCall, 0.35),
            (Action::DocEdit, 0.2),
            (Action::Email, 0.15),
            (Action::VideoCall, 0.12),
            (Action::PageView, 0.07),
            (Action::Search, 0.04),
            (Action::Chat, 0.03),
            (Action::Login, 0.03),
            (Action::FileUpload, 0.02),
        ],
        devices: &[
            ("laptop", "windows", 0.45),
            ("laptop", "macos", 0.35),
            ("laptop", "linux", 0.1),
            ("desktop", "windows", 0.1),
        ],
        //          US    CA    BR    GB    DE    FR    IN    JP    KR    AU    NG    MX
        countries: [0.35, 0.08, 0.04, 0.14, 0.12, 0.08, 0.12, 0.02, 0.01, 0.03, 0.00, 0.01],
        latency_factor: 1.0,
        client_error_rate: 0.01,
        server_error_rate: 0.002,
    },
    SegmentProfile {
        name: "iot_device",
        population_weight: 0.10,
        sessions_per_day: 12.0,
        weekend_factor: 1.0,
        hourly: FLAT_HOURLY,
        chronotype_sd_h: 0.0,
        session_minutes: 2.0,
        session_sigma: 0.5,
        gap_seconds: 15.0,
        gap_sigma: 0.5,
        heartbeat_seconds: Some(360.0),
        actions: &[
            (Action::Telemetry, 0.9),
            (Action::FirmwareCheck, 0.04),
            (Action::Login, 0.04),
            (Action::PageView, 0.02),
        ],
        devices: &[
            ("sensor", "rtos", 0.4),
            ("gateway", "linux", 0.35),
            ("camera", "linux", 0.25),
        ],
        //          US    CA    BR    GB    DE    FR    IN    JP    KR    AU    NG    MX
        countries: [0.25, 0.03, 0.03, 0.07, 0.20, 0.06, 0.06, 0.14, 0.12, 0.02, 0.00, 0.02],
        latency_factor: 1.6,
        client_error_rate: 0.002,
        server_error_rate: 0.002,
    },
    SegmentProfile {
        name: "casual_browser",
        population_weight: 0.30,
        sessions_per_day: 5.0,
        weekend_factor: 1.2,
        hourly: CASUAL_HOURLY,
        chronotype_sd_h: 1.0,
        session_minutes: 6.0,
        session_sigma: 0.8,
        gap_seconds: 20.0,
        gap_sigma: 1.0,
        heartbeat_seconds: None,
        actions: &[
            (Action::PageView, 0.5),
            (Action::Click, 0.22),
            (Action::Search, 0.15),
            (Action::Login, 0.04),
            (Action::Purchase, 0.03),
            (Action::Like, 0.03),
            (Action::StreamChunk, 0.02),
            (Action::Chat, 0.01),
        ],
        devices: &[
            ("mobile", "android", 0.45),
            ("mobile", "ios", 0.35),
            ("tablet", "ipados", 0.05),
            ("desktop", "windows", 0.1),
            ("desktop", "macos", 0.05),
        ],
        //          US    CA    BR    GB    DE    FR    IN    JP    KR    AU    NG    MX
        countries: [0.20, 0.03, 0.12, 0.06, 0.05, 0.05, 0.20, 0.04, 0.03, 0.02, 0.12, 0.08],
        latency_factor: 1.2,
        client_error_rate: 0.02,
        server_error_rate: 0.003,
    },
];

/// 5xx status codes and their relative weights.
pub(crate) const SERVER_ERRORS: [(i32, f64); 4] =
    [(500, 0.35), (502, 0.25), (503, 0.25), (504, 0.15)];

/// 4xx status codes and their relative weights.
pub(crate) const CLIENT_ERRORS: [(i32, f64); 5] =
    [(400, 0.2), (401, 0.2), (403, 0.1), (404, 0.4), (429, 0.1)];
