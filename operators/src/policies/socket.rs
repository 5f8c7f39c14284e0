//! Socket profiles: per client, the socket parameters its predicted behaviour implies.
//!
//! - **Predicted data rate** (bytes/s): the forecast of the next window's bytes over the
//!   window's length (the current window's bytes without a forecaster); likewise requests/s.
//! - **Request type**: the most frequent [`RequestType`] among the window's events (ties: the
//!   order streaming, bulk, transactional, control), each event classified by its category and
//!   action ([`RequestType::of`]).
//! - **Security risk** in [0, 1]: the mid-rank quantile of the user's anomaly score among the
//!   anomaly scores of the user's segment (known segment, else top resonance segment) over the
//!   last `policy.risk_windows` windows, this one included ([`RiskCalibration`]): 0.5 is a
//!   typical user of the segment, 0.99 is above 99% of them. Null without an anomaly score
//!   (a model-free embedder).
//! - **Buffers**: the bandwidth-delay product, rate × RTT, with the RTT the window's mean
//!   observed latency (`policy.default_rtt_ms` without one): the receive buffer from the
//!   received share of the predicted rate, the send buffer from the sent share, each clamped to
//!   the policy's blended bounds.
//! - **Rate limit** = predicted rate × `policy.headroom` (bytes/s).
//! - **Security level**: `strict` from risk `policy.risk_strict`, `elevated` from
//!   `policy.risk_elevated`, else `standard`.
//! - **Endpoint**: the catalogue's endpoint for the request type.

use crate::policies::blend::{Policy, PolicyConfig};
use crate::policies::catalogue::Endpoints;
use crate::vector::Score;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// What kind of traffic a client's requests are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RequestType {
    /// Continuous media: video, audio, calls.
    Streaming,
    /// Large transfers: downloads, uploads, backups, updates.
    Bulk,
    /// Request/response: page views, searches, API calls, purchases, game moves.
    Transactional,
    /// Signalling: authentication, heartbeats, telemetry, DNS.
    Control,
}

/// Request types in index order (the order of [`WindowDemand::requests`]).
pub const REQUEST_TYPES: [RequestType; 4] = [
    RequestType::Streaming,
    RequestType::Bulk,
    RequestType::Transactional,
    RequestType::Control,
];

/// Keywords of each type, matched against an event's category and then its action (lower
/// case; a keyword matches a whole `_`/`-`/`.`-separated word or a word's prefix).
const KEYWORDS: [(RequestType, &[&str]); 3] = [
    (
        RequestType::Streaming,
        &[
            "video",
            "audio",
            "music",
            "media",
            "stream",
            "play",
            "conferencing",
            "call",
            "voip",
            "rtp",
            "rtsp",
            "webrtc",
        ],
    ),
    (
        RequestType::Bulk,
        &[
            "download", "upload", "storage", "backup", "sync", "ftp", "transfer", "bulk", "update",
            "asset",
        ],
    ),
    (
        RequestType::Control,
        &[
            "auth",
            "login",
            "logout",
            "heartbeat",
            "telemetry",
            "iot",
            "dns",
            "ntp",
            "dhcp",
            "snmp",
            "ping",
            "icmp",
            "keepalive",
            "health",
            "firmware",
            "control",
        ],
    ),
];

impl RequestType {
    /// The type of an event of `category` and `action`: the first type with a keyword that
    /// starts a word of the category, else of the action; transactional when none does.
    ///
    /// ```
    /// use personaflow_operators::policies::socket::RequestType;
    /// assert_eq!(RequestType::of(Some("video"), "play"), RequestType::Streaming);
    /// assert_eq!(RequestType::of(Some("game"), "asset_download"), RequestType::Bulk);
    /// assert_eq!(RequestType::of(Some("iot"), "telemetry"), RequestType::Control);
    /// assert_eq!(RequestType::of(None, "dns"), RequestType::Control);
    /// assert_eq!(RequestType::of(Some("commerce"), "purchase"), RequestType::Transactional);
    /// ```
    pub fn of(category: Option<&str>, action: &str) -> RequestType {
        let starts = |w: &[u8], k: &str| {
            w.len() >= k.len() && w[..k.len()].eq_ignore_ascii_case(k.as_bytes())
        };
        let matches = |text: &str, words: &[&str]| {
            text.split(['_', '-', '.', ' ', '/'])
                .any(|w| !w.is_empty() && words.iter().any(|k| starts(w.as_bytes(), k)))
        };
        for text in category.into_iter().chain([action]) {
            for (t, words) in KEYWORDS {
                if matches(text, words) {
                    return t;
                }
            }
        }
        RequestType::Transactional
    }

    /// Index in [`REQUEST_TYPES`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The name in tables.
    pub fn name(self) -> &'static str {
        match self {
            RequestType::Streaming => "streaming",
            RequestType::Bulk => "bulk",
            RequestType::Transactional => "transactional",
            RequestType::Control => "control",
        }
    }

    /// The most frequent type of `counts` (indexed as [`REQUEST_TYPES`]; ties to the first),
    /// transactional when there are no events.
    pub fn dominant(counts: &[u32; 4]) -> RequestType {
        let (i, n) = counts.iter().enumerate().fold(
            (2, 0),
            |best, (i, &n)| if n > best.1 { (i, n) } else { best },
        );
        if n == 0 {
            RequestType::Transactional
        } else {
            REQUEST_TYPES[i]
        }
    }

    /// The endpoint class of this type.
    pub fn endpoint(self, endpoints: &Endpoints) -> &str {
        match self {
            RequestType::Streaming => &endpoints.streaming,
            RequestType::Bulk => &endpoints.bulk,
            RequestType::Transactional => &endpoints.transactional,
            RequestType::Control => &endpoints.control,
        }
    }
}

/// What a window's events asked of the network: bytes each way, mean latency, request types.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WindowDemand {
    /// Bytes received by the user.
    pub bytes_in: u64,
    /// Bytes sent by the user.
    pub bytes_out: u64,
    /// Mean latency of the events that have one, microseconds (`None`: none had).
    pub latency_mean_us: Option<u64>,
    /// Events per [`RequestType`] (indexed as [`REQUEST_TYPES`]).
    pub requests: [u32; 4],
}

/// How risky a client looks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum SecurityLevel {
    /// The persona's profile as it is.
    Standard,
    /// Risk at or above `policy.risk_elevated`.
    Elevated,
    /// Risk at or above `policy.risk_strict`.
    Strict,
}

impl SecurityLevel {
    /// The level of `risk` (standard when unknown).
    pub fn of(risk: Option<f64>, config: &PolicyConfig) -> SecurityLevel {
        match risk {
            Some(r) if r >= config.risk_strict => SecurityLevel::Strict,
            Some(r) if r >= config.risk_elevated => SecurityLevel::Elevated,
            _ => SecurityLevel::Standard,
        }
    }

    /// The name in tables.
    pub fn name(self) -> &'static str {
        match self {
            SecurityLevel::Standard => "standard",
            SecurityLevel::Elevated => "elevated",
            SecurityLevel::Strict => "strict",
        }
    }
}

/// One client's socket profile in one window.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SocketProfile {
    /// Predicted bytes/s in the next window.
    pub predicted_bytes_per_s: Score,
    /// Predicted requests/s in the next window.
    pub predicted_requests_per_s: Score,
    /// Dominant request type.
    pub request_type: RequestType,
    /// Risk in [0, 1] (`None`: no anomaly score).
    pub risk: Option<Score>,
    /// The round trip the buffers are sized for, ms.
    pub rtt_ms: Score,
    /// Send buffer, bytes.
    pub send_buffer: u64,
    /// Receive buffer, bytes.
    pub receive_buffer: u64,
    /// Rate limit, bytes/s.
    pub rate_limit_bytes_per_s: u64,
    /// Security level.
    pub security_level: SecurityLevel,
    /// Endpoint class.
    pub endpoint: String,
}

/// The socket profile of a client with policy `policy`, window demand `demand`, predicted
/// next-window `(bytes, requests)` `next` (`None`: the current window's), risk `risk`, for
/// windows of `window_secs`.
///
/// ```
/// use personaflow_operators::policies::blend::{blend, DemandOutlook, PolicyConfig};
/// use personaflow_operators::policies::catalogue::PersonaCatalogue;
/// use personaflow_operators::policies::socket::{socket_profile, WindowDemand, SecurityLevel};
/// let c = PersonaCatalogue::example();
/// let config = PolicyConfig::default();
/// let policy = blend(&c, &[("gamer", 1.0)], &DemandOutlook::default(), 60.0, &config);
/// let demand = WindowDemand { bytes_in: 900, bytes_out: 100, latency_mean_us: Some(100_000), requests: [0, 0, 5, 1] };
/// // 6 MB predicted next minute: 100 kB/s; RTT 100 ms: BDP 10 kB, 9 kB of it received.
/// let s = socket_profile(&policy, &demand, Some((6e6, 60.0)), Some(0.95), &c.endpoints, 60.0, &config);
/// assert_eq!(s.receive_buffer, 16_384); // 9 kB, raised to the persona's minimum
/// assert_eq!(s.rate_limit_bytes_per_s, 125_000);
/// assert_eq!(s.security_level, SecurityLevel::Elevated);
/// assert_eq!(s.endpoint, "app");
/// ```
pub fn socket_profile(
    policy: &Policy,
    demand: &WindowDemand,
    next: Option<(f64, f64)>,
    risk: Option<f64>,
    endpoints: &Endpoints,
    window_secs: f64,
    config: &PolicyConfig,
) -> SocketProfile {
    let secs = window_secs.max(f64::MIN_POSITIVE);
    let (bytes, requests) = next.unwrap_or((
        (demand.bytes_in + demand.bytes_out) as f64,
        demand.requests.iter().map(|&n| f64::from(n)).sum(),
    ));
    let rate = bytes.max(0.0) / secs;
    let rtt_ms = demand
        .latency_mean_us
        .map_or(config.default_rtt_ms, |us| us as f64 / 1_000.0);
    let total = demand.bytes_in + demand.bytes_out;
    let in_share = if total == 0 {
        0.5
    } else {
        demand.bytes_in as f64 / total as f64
    };
    let bdp = rate * rtt_ms / 1_000.0;
    let clamp = |v: f64, [lo, hi]: [u64; 2]| (v.round() as u64).clamp(lo, hi);
    let request_type = RequestType::dominant(&demand.requests);
    SocketProfile {
        predicted_bytes_per_s: Score(rate as f32),
        predicted_requests_per_s: Score((requests.max(0.0) / secs) as f32),
        request_type,
        risk: risk.map(|r| Score(r as f32)),
        rtt_ms: Score(rtt_ms as f32),
        send_buffer: clamp(bdp * (1.0 - in_share), policy.send_buffer),
        receive_buffer: clamp(bdp * in_share, policy.receive_buffer),
        rate_limit_bytes_per_s: (rate * config.headroom).round() as u64,
        security_level: SecurityLevel::of(risk, config),
        endpoint: request_type.endpoint(endpoints).to_string(),
    }
}

/// The recent anomaly scores of one segment, window by window: a user's risk is its score's
/// mid-rank quantile among them.
///
/// Every score held is also kept in one sorted run (`held`), so a quantile is two binary
/// searches whatever the number of windows, and a window's push is a merge of its scores in
/// and of the forgotten windows' out (linear in the scores held).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RiskCalibration {
    /// (window, that window's scores, sorted), oldest first.
    windows: VecDeque<(u64, Vec<f32>)>,
    /// Every score of `windows`, sorted by [`f32::total_cmp`].
    held: Vec<f32>,
}

impl RiskCalibration {
    /// Adds window `window`'s scores and forgets windows `keep` or more windows older.
    pub fn push(&mut self, window: u64, mut scores: Vec<f32>, keep: u64) {
        scores.retain(|s| s.is_finite());
        scores.sort_by(f32::total_cmp);
        self.held = merge_sorted(&self.held, &scores);
        self.windows.push_back((window, scores));
        let mut gone: Vec<f32> = Vec::new();
        while let Some((w, _)) = self.windows.front() {
            if *w + keep > window {
                break;
            }
            let (_, s) = self.windows.pop_front().expect("a front window");
            gone = merge_sorted(&gone, &s);
        }
        if !gone.is_empty() {
            self.held = remove_sorted(&self.held, &gone);
        }
    }

    /// The mid-rank quantile of `score`: (scores below + half the scores equal) / scores held;
    /// `None` when none are held.
    ///
    /// ```
    /// use personaflow_operators::policies::socket::RiskCalibration;
    /// let mut r = RiskCalibration::default();
    /// r.push(0, vec![1.0, 2.0, 3.0, 4.0], 10);
    /// assert_eq!(r.quantile(2.0), Some(0.375));
    /// assert_eq!(r.quantile(9.0), Some(1.0));
    /// r.push(10, vec![5.0], 10); // window 0 is now 10 windows old: forgotten
    /// assert_eq!(r.quantile(5.0), Some(0.5));
    /// ```
    pub fn quantile(&self, score: f32) -> Option<f64> {
        if self.held.is_empty() {
            return None;
        }
        // `held` is sorted by `total_cmp`, which orders finite values as `<` does (and -0.0
        // before 0.0, which `<` and `<=` treat alike): both predicates are monotone on it.
        let below = self.held.partition_point(|x| *x < score);
        let equal = self.held.partition_point(|x| *x <= score) - below;
        Some((below as f64 + 0.5 * equal as f64) / self.held.len() as f64)
    }
}

/// The sorted union (with repeats) of two runs sorted by [`f32::total_cmp`].
fn merge_sorted(a: &[f32], b: &[f32]) -> Vec<f32> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if b[j].total_cmp(&a[i]).is_lt() {
            out.push(b[j]);
            j += 1;
        } else {
            out.push(a[i]);
            i += 1;
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

/// `held` without one occurrence of each of `gone`'s values (both sorted by
/// [`f32::total_cmp`]; `gone` is part of `held`, bit for bit).
fn remove_sorted(held: &[f32], gone: &[f32]) -> Vec<f32> {
    let mut out = Vec::with_capacity(held.len().saturating_sub(gone.len()));
    let mut j = 0;
    for x in held {
        if j < gone.len() && gone[j].total_cmp(x).is_eq() {
            j += 1;
        } else {
            out.push(*x);
        }
    }
    debug_assert_eq!(j, gone.len(), "forgotten scores that were not held");
    out
}

/// Risk calibrations by segment.
pub type RiskBySegment = BTreeMap<String, RiskCalibration>;

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Oracle: the quantile against a from-scratch count over the last `keep` windows, on
    /// seeded random scores at every window.
    #[test]
    fn risk_quantiles_match_a_recount_at_every_window() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let keep = 5;
        let mut r = RiskCalibration::default();
        let mut all: Vec<(u64, f32)> = Vec::new();
        for w in 0..60u64 {
            if rng.random_bool(0.2) {
                continue; // a window without scores
            }
            let scores: Vec<f32> = (0..rng.random_range(0..20))
                .map(|_| (rng.random_range(0..50) as f32) / 10.0)
                .collect();
            all.extend(scores.iter().map(|s| (w, *s)));
            r.push(w, scores, keep);
            let held: Vec<f32> = all
                .iter()
                .filter(|(x, _)| x + keep > w)
                .map(|(_, s)| *s)
                .collect();
            for probe in [0.0f32, 1.0, 2.5, 4.9, 7.0] {
                let want = (!held.is_empty()).then(|| {
                    let below = held.iter().filter(|s| **s < probe).count() as f64;
                    let equal = held.iter().filter(|s| **s == probe).count() as f64;
                    (below + 0.5 * equal) / held.len() as f64
                });
                assert_eq!(r.quantile(probe), want, "window {w}, probe {probe}");
            }
        }
    }

    /// The same oracle with signed zeros, repeats, scores that are not finite (dropped),
    /// several windows forgotten at once and other lengths of memory; the sorted run of every
    /// held score is the windows' scores sorted, bit for bit.
    #[test]
    fn risk_quantiles_match_a_recount_with_zeros_gaps_and_non_finite_scores() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let values = [
            -0.0f32,
            0.0,
            1.5,
            -2.25,
            3.0,
            f32::NAN,
            f32::INFINITY,
            1e-30,
        ];
        for keep in [1u64, 3, 20] {
            let mut r = RiskCalibration::default();
            let mut all: Vec<(u64, f32)> = Vec::new();
            let mut w = 0u64;
            for _ in 0..80 {
                w += rng.random_range(1..=2 * keep); // gaps that forget several windows at once
                let scores: Vec<f32> = (0..rng.random_range(0..12))
                    .map(|_| values[rng.random_range(0..values.len())])
                    .collect();
                all.extend(scores.iter().filter(|s| s.is_finite()).map(|s| (w, *s)));
                r.push(w, scores, keep);
                let mut held: Vec<f32> = all
                    .iter()
                    .filter(|(x, _)| x + keep > w)
                    .map(|(_, s)| *s)
                    .collect();
                held.sort_by(f32::total_cmp);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&r.held), bits(&held), "keep {keep}, window {w}");
                for probe in [-0.0f32, 0.0, 1.5, -3.0, 2.0, 1e-30, 5.0] {
                    let want = (!held.is_empty()).then(|| {
                        let below = held.iter().filter(|s| **s < probe).count() as f64;
                        let equal = held.iter().filter(|s| **s == probe).count() as f64;
                        (below + 0.5 * equal) / held.len() as f64
                    });
                    assert_eq!(r.quantile(probe), want, "keep {keep}, window {w}, {probe}");
                }
            }
        }
    }

    #[test]
    fn the_dominant_request_type_breaks_ties_in_order() {
        assert_eq!(
            RequestType::dominant(&[0, 0, 0, 0]),
            RequestType::Transactional
        );
        assert_eq!(RequestType::dominant(&[3, 3, 0, 1]), RequestType::Streaming);
        assert_eq!(RequestType::dominant(&[0, 1, 1, 2]), RequestType::Control);
    }
}
