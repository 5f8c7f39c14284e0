//! Blending: a user's probabilities over catalogue entries, turned into one network policy
//! (DESIGN.md step 9).
//!
//! - The probabilities are the user's resonance distribution over segments, each segment's
//!   mass moved to the entry the catalogue maps it to (unmapped segments, and mass the
//!   distribution does not cover, to `default`). A user with no segment to resonate with
//!   (a source without segments) is mapped through its clustered persona probabilities the
//!   same way ([`persona_distribution`]).
//! - Numeric settings (bandwidth bounds, burst, priority weight, latency target, request
//!   bounds, socket buffer bounds) are the probability-weighted means of the entries'.
//! - Class, DSCP and endpoint class follow the most probable entry (ties: the first by name).
//! - Security is the strictest among the entries whose probability is at least
//!   `policy.security_floor` (the most probable always counts): the strongest authentication,
//!   the deepest inspection, the application classes and ports all of them allow (the most
//!   probable entry's when they share none), and a VPN if any requires one.
//! - The allocation is sized from the demand forecast: the largest of the next `H` windows'
//!   predicted bytes, as a rate, times `policy.headroom`, clamped to the blended
//!   `[floor, ceiling]` bandwidth; the rate limit likewise from predicted requests, clamped to
//!   the blended `[floor, limit]`. Without a forecaster, the current window's demand stands in
//!   for the forecast.

use crate::policies::catalogue::{
    Authentication, Inspection, PersonaCatalogue, PersonaEntry, PortRange, DEFAULT_PERSONA,
};
use crate::vector::Score;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;

/// Default `policy.security_floor`: entries with at least this probability shape security.
pub const DEFAULT_SECURITY_FLOOR: f64 = 0.2;
/// Default `policy.headroom`: allocation and rate limits are the predicted demand times this.
pub const DEFAULT_HEADROOM: f64 = 1.25;
/// Default `policy.horizon`: windows of forecast the allocation covers (the forecaster's `H`).
pub const DEFAULT_POLICY_HORIZON: usize = crate::forecast::DEFAULT_FORECAST_HORIZON;
/// Default `policy.risk_windows`: 0, the job's `segments.window` (windows of a segment's
/// anomaly scores a user's risk is the quantile against).
pub const DEFAULT_RISK_WINDOWS: u64 = 0;
/// Default `policy.risk_elevated`: risk at or above which the security level is `elevated`.
pub const DEFAULT_RISK_ELEVATED: f64 = 0.9;
/// Default `policy.risk_strict`: risk at or above which the security level is `strict`.
pub const DEFAULT_RISK_STRICT: f64 = 0.99;
/// Default `policy.default_rtt_ms`: the round trip assumed for a user without latencies.
pub const DEFAULT_RTT_MS: f64 = 50.0;

/// `[policy]`: how policies and socket profiles are made.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Make the `policies`, `socket_profiles` and `shaping_feedback` tables.
    pub enabled: bool,
    /// The persona catalogue (TOML; default: the built-in `data/personas.toml`).
    pub catalogue: Option<PathBuf>,
    /// Probability from which an entry's security profile counts, in (0, 1].
    pub security_floor: f64,
    /// Allocation = predicted demand × headroom (>= 1).
    pub headroom: f64,
    /// Windows of forecast the allocation covers (>= 1; at most the forecaster's horizon is
    /// used).
    pub horizon: usize,
    /// Windows of a segment's anomaly scores that risk is calibrated against (at most
    /// `segments.window`, so a restarted job rebuilds them from its replay; 0: the job's
    /// `segments.window`, and 1 for the operator used alone).
    pub risk_windows: u64,
    /// Risk from which the security level is `elevated`, in (0, 1).
    pub risk_elevated: f64,
    /// Risk from which the security level is `strict`, in [risk_elevated, 1].
    pub risk_strict: f64,
    /// Round trip assumed where no latency was observed, ms.
    pub default_rtt_ms: f64,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            enabled: true,
            catalogue: None,
            security_floor: DEFAULT_SECURITY_FLOOR,
            headroom: DEFAULT_HEADROOM,
            horizon: DEFAULT_POLICY_HORIZON,
            risk_windows: DEFAULT_RISK_WINDOWS,
            risk_elevated: DEFAULT_RISK_ELEVATED,
            risk_strict: DEFAULT_RISK_STRICT,
            default_rtt_ms: DEFAULT_RTT_MS,
        }
    }
}

impl PolicyConfig {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, reason: String| Err(Error::invalid_config(key, reason));
        if !(self.security_floor > 0.0 && self.security_floor <= 1.0) {
            return bad(
                "policy.security_floor",
                format!("({}) must be in (0, 1]", self.security_floor),
            );
        }
        if !(self.headroom.is_finite() && self.headroom >= 1.0) {
            return bad(
                "policy.headroom",
                format!("({}) must be a finite number >= 1", self.headroom),
            );
        }
        if self.horizon == 0 {
            return bad("policy.horizon", "must be at least 1 window".into());
        }
        if !(self.risk_elevated > 0.0 && self.risk_elevated < 1.0) {
            return bad(
                "policy.risk_elevated",
                format!("({}) must be in (0, 1)", self.risk_elevated),
            );
        }
        if !(self.risk_strict >= self.risk_elevated && self.risk_strict <= 1.0) {
            return bad(
                "policy.risk_strict",
                format!(
                    "({}) must be in [risk_elevated ({}), 1]",
                    self.risk_strict, self.risk_elevated
                ),
            );
        }
        if !(self.default_rtt_ms.is_finite() && self.default_rtt_ms > 0.0) {
            return bad(
                "policy.default_rtt_ms",
                format!("({}) must be a finite number > 0", self.default_rtt_ms),
            );
        }
        Ok(())
    }
}

/// What a policy is sized from: the demand the user is predicted to have, and what they had.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DemandOutlook {
    /// Largest predicted bytes in one of the next `H` windows (`None`: no forecast).
    pub peak_bytes: Option<f64>,
    /// Largest predicted requests in one of the next `H` windows.
    pub peak_requests: Option<f64>,
    /// Bytes in the current window.
    pub current_bytes: f64,
    /// Requests in the current window.
    pub current_requests: f64,
}

impl DemandOutlook {
    /// The bytes and requests per window the allocation is sized for: the forecast's peak, or
    /// the current window's when there is no forecast.
    pub fn sized_for(&self) -> (f64, f64) {
        (
            self.peak_bytes.unwrap_or(self.current_bytes).max(0.0),
            self.peak_requests.unwrap_or(self.current_requests).max(0.0),
        )
    }
}

/// One user's blended network policy in one window.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Policy {
    /// Catalogue entries with a positive probability, most probable first (ties by name).
    pub personas: Vec<(Arc<str>, Score)>,
    /// The most probable entry.
    pub persona: Arc<str>,
    /// Its RFC 4594 class.
    pub diffserv_class: Arc<str>,
    /// Its DSCP.
    pub dscp: u8,
    /// Its endpoint class.
    pub endpoint_class: Arc<str>,
    /// Blended floor bandwidth, bits/s.
    pub floor_bps: u64,
    /// Blended static reservation, bits/s.
    pub guaranteed_bps: u64,
    /// Blended ceiling, bits/s.
    pub ceiling_bps: u64,
    /// The allocation for the coming windows: forecast × headroom in `[floor, ceiling]`, bits/s.
    pub allocated_bps: u64,
    /// The demand the allocation was sized for, bits/s (before headroom and clamping).
    pub sized_for_bps: u64,
    /// Blended burst, bytes.
    pub burst_bytes: u64,
    /// Blended priority weight.
    pub priority_weight: Score,
    /// Blended latency target, ms.
    pub latency_target_ms: Score,
    /// Request rate limit for the coming windows: forecast × headroom in the blended
    /// `[floor, limit]`, requests/s.
    pub rate_limit_rps: Score,
    /// Blended request limit, requests/s (the bound of `rate_limit_rps`).
    pub request_limit_rps: Score,
    /// Blended send buffer bounds, bytes.
    pub send_buffer: [u64; 2],
    /// Blended receive buffer bounds, bytes.
    pub receive_buffer: [u64; 2],
    /// Strictest authentication among the entries above the security floor.
    pub authentication: Authentication,
    /// Deepest inspection among them.
    pub inspection: Inspection,
    /// Application classes all of them allow.
    pub allowed_app_classes: Vec<Arc<str>>,
    /// Ports all of them allow.
    pub allowed_ports: Vec<PortRange>,
    /// Any of them requires a VPN.
    pub vpn_required: bool,
    /// Bytes in the window the policy was made in.
    pub current_bytes: u64,
    /// Requests in that window.
    pub current_requests: u64,
}

/// A user's probabilities over catalogue entries: `segments` (segment, probability) mapped
/// through the catalogue when there are any, else `personas` (clustered persona id,
/// probability); unmapped mass, and mass missing from a distribution summing to less than 1,
/// goes to `default`. Entries come out by name, probabilities summing to 1. For many users,
/// [`Blender::distribution`] does the same without resolving the catalogue each time.
///
/// ```
/// use personaflow_operators::policies::blend::persona_distribution;
/// use personaflow_operators::policies::catalogue::PersonaCatalogue;
/// let c = PersonaCatalogue::example(); // maps segment "gamer" to entry "gamer"
/// let d = persona_distribution(&c, &[("gamer".to_string(), 0.7), ("video".to_string(), 0.3)], &[]);
/// assert_eq!(d, vec![("default", 0.3), ("gamer", 0.7)]);
/// assert_eq!(persona_distribution::<&str>(&c, &[], &[]), vec![("default", 1.0)]);
/// ```
pub fn persona_distribution<'c, S: AsRef<str>>(
    catalogue: &'c PersonaCatalogue,
    segments: &[(S, f64)],
    personas: &[(u32, f64)],
) -> Vec<(&'c str, f64)> {
    let names: Vec<&str> = catalogue.personas.keys().map(String::as_str).collect();
    Blender::new(catalogue)
        .distribution(segments, personas)
        .into_iter()
        .map(|(i, p)| (names[i], p))
        .collect()
}

/// The policy of a user whose probabilities over catalogue entries are `distribution` (as
/// [`persona_distribution`] makes it; entries not in the catalogue count as `default`) and
/// whose demand is `demand`, for windows of `window_secs` seconds. For many users,
/// [`Blender::blend`] does the same without resolving the catalogue each time.
///
/// ```
/// use personaflow_operators::policies::blend::{blend, DemandOutlook, PolicyConfig};
/// use personaflow_operators::policies::catalogue::PersonaCatalogue;
/// let c = PersonaCatalogue::example();
/// let demand = DemandOutlook { peak_bytes: Some(7_500_000.0), ..DemandOutlook::default() };
/// // One-hot: the entry exactly; 7.5 MB a minute is 1 Mbit/s, x 1.25 headroom.
/// let p = blend(&c, &[("gamer", 1.0)], &demand, 60.0, &PolicyConfig::default());
/// assert_eq!((p.dscp, p.guaranteed_bps, p.ceiling_bps), (32, 2_000_000, 20_000_000));
/// assert_eq!(p.allocated_bps, 1_250_000);
/// ```
pub fn blend(
    catalogue: &PersonaCatalogue,
    distribution: &[(&str, f64)],
    demand: &DemandOutlook,
    window_secs: f64,
    config: &PolicyConfig,
) -> Policy {
    let blender = Blender::new(catalogue);
    let indexed: Vec<(usize, f64)> = distribution
        .iter()
        .map(|(n, p)| (blender.index_of(n), *p))
        .collect();
    blender.blend(&indexed, demand, window_secs, config)
}

/// A (validated) catalogue made ready to blend many users' policies: its entries numbered in
/// name order, each mapping resolved to an entry once, the text a policy copies from an entry
/// shared (`Arc<str>`: a policy costs no allocation per name or class) and each entry's ports
/// merged once. What it makes is exactly what [`persona_distribution`] and [`blend`] make.
///
/// ```
/// use personaflow_operators::policies::blend::{Blender, DemandOutlook, PolicyConfig};
/// use personaflow_operators::policies::catalogue::PersonaCatalogue;
/// let c = PersonaCatalogue::example();
/// let b = Blender::new(&c);
/// let d = b.distribution(&[("gamer", 0.7), ("video", 0.3)], &[]);
/// assert_eq!(d, vec![(b.index_of("default"), 0.3), (b.index_of("gamer"), 0.7)]);
/// let p = b.blend(&d, &DemandOutlook::default(), 60.0, &PolicyConfig::default());
/// assert_eq!(&*p.persona, "gamer");
/// ```
#[derive(Clone, Debug)]
pub struct Blender {
    /// The entries in name order.
    entries: Vec<BlendEntry>,
    /// `default`'s index.
    default: usize,
    /// (segment name, entry index), sorted by name (looked up by binary search: a handful of
    /// short names, where hashing each user's every segment cost more).
    segments: Vec<(String, usize)>,
    /// (clustered persona id, entry index), sorted by id.
    personas: Vec<(u32, usize)>,
}

/// One catalogue entry, as [`Blender`] uses it.
#[derive(Clone, Debug)]
struct BlendEntry {
    name: Arc<str>,
    entry: PersonaEntry,
    diffserv_class: Arc<str>,
    endpoint_class: Arc<str>,
    app_classes: Vec<Arc<str>>,
    /// The allowed ports, sorted and merged.
    ports: Vec<PortRange>,
    /// The numbers a policy blends, by [`Blended`].
    numbers: [f64; BLENDED],
}

/// The value of `key` in `pairs`, sorted by key.
fn lookup<K: Ord + ?Sized, Q: std::borrow::Borrow<K>>(
    pairs: &[(Q, usize)],
    key: &K,
) -> Option<usize> {
    pairs
        .binary_search_by(|(k, _)| k.borrow().cmp(key))
        .ok()
        .map(|j| pairs[j].1)
}

/// The numbers of an entry a policy blends (probability-weighted means), as indices into
/// [`BlendEntry::numbers`].
#[derive(Clone, Copy, Debug)]
enum Blended {
    FloorKbps,
    GuaranteedKbps,
    CeilingKbps,
    BurstKb,
    PriorityWeight,
    LatencyTargetMs,
    RequestFloor,
    RequestLimit,
    SendBufferMin,
    SendBufferMax,
    ReceiveBufferMin,
    ReceiveBufferMax,
}

/// How many numbers a policy blends.
const BLENDED: usize = Blended::ReceiveBufferMax as usize + 1;

/// An entry's numbers, by [`Blended`].
fn blended_numbers(e: &PersonaEntry) -> [f64; BLENDED] {
    let mut n = [0.0; BLENDED];
    n[Blended::FloorKbps as usize] = e.bandwidth.floor_kbps;
    n[Blended::GuaranteedKbps as usize] = e.bandwidth.guaranteed_kbps;
    n[Blended::CeilingKbps as usize] = e.bandwidth.ceiling_kbps;
    n[Blended::BurstKb as usize] = e.bandwidth.burst_kb;
    n[Blended::PriorityWeight as usize] = e.priority_weight;
    n[Blended::LatencyTargetMs as usize] = e.latency_target_ms;
    n[Blended::RequestFloor as usize] = e.requests.floor_per_s;
    n[Blended::RequestLimit as usize] = e.requests.limit_per_s;
    n[Blended::SendBufferMin as usize] = e.socket.send_buffer[0] as f64;
    n[Blended::SendBufferMax as usize] = e.socket.send_buffer[1] as f64;
    n[Blended::ReceiveBufferMin as usize] = e.socket.receive_buffer[0] as f64;
    n[Blended::ReceiveBufferMax as usize] = e.socket.receive_buffer[1] as f64;
    n
}

impl Blender {
    /// Resolves `catalogue`, which must have a `default` entry (a validated one does).
    pub fn new(catalogue: &PersonaCatalogue) -> Blender {
        let entries: Vec<BlendEntry> = catalogue
            .personas
            .iter()
            .map(|(name, e)| BlendEntry {
                name: name.as_str().into(),
                entry: e.clone(),
                diffserv_class: e.diffserv_class.as_str().into(),
                endpoint_class: e.endpoint_class.as_str().into(),
                app_classes: e
                    .security
                    .allowed_app_classes
                    .iter()
                    .map(|c| c.as_str().into())
                    .collect(),
                ports: normalise_ports(&e.security.allowed_ports),
                numbers: blended_numbers(e),
            })
            .collect();
        let default = entries
            .iter()
            .position(|e| &*e.name == DEFAULT_PERSONA)
            .expect("a validated catalogue has a default entry");
        let mut blender = Blender {
            entries,
            default,
            segments: Vec::new(),
            personas: Vec::new(),
        };
        for (segment, entry) in &catalogue.mapping.segments {
            let i = blender.index_of(entry);
            blender.segments.push((segment.clone(), i));
        }
        // Only a key an id prints as can match it (`catalogue.entry_of_persona`).
        for (id, entry) in &catalogue.mapping.personas {
            if let Some(n) = id.parse::<u32>().ok().filter(|n| n.to_string() == *id) {
                let i = blender.index_of(entry);
                blender.personas.push((n, i));
            }
        }
        // The mapping's segments come sorted (a `BTreeMap`); ids parsed from its keys do not.
        blender.personas.sort_unstable();
        blender
    }

    /// The index of the entry called `name` (`default`'s for a name not in the catalogue).
    pub fn index_of(&self, name: &str) -> usize {
        self.entries
            .binary_search_by(|e| (*e.name).cmp(name))
            .unwrap_or(self.default)
    }

    /// The name of entry `index`.
    pub fn name(&self, index: usize) -> &Arc<str> {
        &self.entries[index].name
    }

    /// [`persona_distribution`], the entries by index (in name order).
    pub fn distribution<S: AsRef<str>>(
        &self,
        segments: &[(S, f64)],
        personas: &[(u32, f64)],
    ) -> Vec<(usize, f64)> {
        let mut mass = vec![0.0f64; self.entries.len()];
        let clean = |p: f64| if p.is_finite() && p > 0.0 { p } else { 0.0 };
        if !segments.is_empty() {
            for (s, p) in segments {
                let i = lookup(&self.segments, s.as_ref());
                mass[i.unwrap_or(self.default)] += clean(*p);
            }
        } else {
            for (id, p) in personas {
                let i = lookup(&self.personas, id);
                mass[i.unwrap_or(self.default)] += clean(*p);
            }
        }
        // Entries no user's mass reached add 0.0, which leaves the sum as it was.
        let total: f64 = mass.iter().sum();
        if total > 1.0 {
            mass.iter_mut().for_each(|p| *p /= total);
        } else if total < 1.0 {
            mass[self.default] += 1.0 - total;
        }
        mass.into_iter()
            .enumerate()
            .filter(|(_, p)| *p > 0.0)
            .collect()
    }

    /// [`blend`] of a distribution over entries by index (as
    /// [`distribution`](Self::distribution) makes it).
    pub fn blend(
        &self,
        distribution: &[(usize, f64)],
        demand: &DemandOutlook,
        window_secs: f64,
        config: &PolicyConfig,
    ) -> Policy {
        let mut entries: Vec<(usize, f64)> = distribution
            .iter()
            .filter(|(i, p)| p.is_finite() && *p > 0.0 && *i < self.entries.len())
            .copied()
            .collect();
        if entries.is_empty() {
            entries.push((self.default, 1.0));
        }
        // Merge duplicates, then most probable first, ties by name (index order is name order).
        entries.sort_by_key(|e| e.0);
        entries.dedup_by(|b, a| {
            if a.0 == b.0 {
                a.1 += b.1;
                true
            } else {
                false
            }
        });
        let total: f64 = entries.iter().map(|e| e.1).sum();
        entries.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        // Every blended number in one pass over the entries: for each, the probability-weighted
        // sum in the entries' order (from what `Iterator::sum` starts from, so the same bits as
        // summing it alone) and the entries' range.
        let mut sums = [std::iter::empty::<f64>().sum::<f64>(); BLENDED];
        let (mut lo, mut hi) = ([f64::MAX; BLENDED], [f64::MIN; BLENDED]);
        for (i, p) in &entries {
            let numbers = &self.entries[*i].numbers;
            for k in 0..BLENDED {
                sums[k] += p * numbers[k];
                lo[k] = lo[k].min(numbers[k]);
                hi[k] = hi[k].max(numbers[k]);
            }
        }
        // The weighted mean, kept inside the entries' range despite rounding.
        let weighted =
            |n: Blended| (sums[n as usize] / total).clamp(lo[n as usize], hi[n as usize]);
        let top = &self.entries[entries[0].0];
        let kbps = |v: f64| (v * 1_000.0).round() as u64;
        let floor_kbps = weighted(Blended::FloorKbps);
        let ceiling_kbps = weighted(Blended::CeilingKbps);
        let request_floor = weighted(Blended::RequestFloor);
        let request_limit = weighted(Blended::RequestLimit);
        let (bytes, requests) = demand.sized_for();
        let secs = window_secs.max(f64::MIN_POSITIVE);
        let sized_for_bps = bytes * 8.0 / secs;
        let allocated =
            (sized_for_bps * config.headroom).clamp(floor_kbps * 1_000.0, ceiling_kbps * 1_000.0);
        let rate_limit = (requests / secs * config.headroom).clamp(request_floor, request_limit);
        let buffer = |min: Blended, max: Blended| -> [u64; 2] {
            [weighted(min).round() as u64, weighted(max).round() as u64]
        };
        // Security: the strictest among the entries at or above the floor (the top one always).
        let secure: Vec<&BlendEntry> = entries
            .iter()
            .enumerate()
            .filter(|(k, (_, p))| *k == 0 || *p / total >= config.security_floor)
            .map(|(_, (i, _))| &self.entries[*i])
            .collect();
        let mut app_classes: Vec<Arc<str>> = top.app_classes.clone();
        app_classes.retain(|c| secure.iter().all(|e| e.app_classes.contains(c)));
        if app_classes.is_empty() {
            app_classes = top.app_classes.clone();
        }
        app_classes.sort();
        app_classes.dedup();
        let mut ports = secure
            .iter()
            .skip(1)
            .fold(top.ports.clone(), |acc, e| intersect_ports(&acc, &e.ports));
        if ports.is_empty() {
            ports = top.ports.clone();
        }
        Policy {
            personas: entries
                .iter()
                .map(|(i, p)| (self.entries[*i].name.clone(), Score((p / total) as f32)))
                .collect(),
            persona: top.name.clone(),
            diffserv_class: top.diffserv_class.clone(),
            dscp: top.entry.dscp,
            endpoint_class: top.endpoint_class.clone(),
            floor_bps: kbps(floor_kbps),
            guaranteed_bps: kbps(weighted(Blended::GuaranteedKbps)),
            ceiling_bps: kbps(ceiling_kbps),
            allocated_bps: (allocated.round() as u64).clamp(kbps(floor_kbps), kbps(ceiling_kbps)),
            sized_for_bps: sized_for_bps.round() as u64,
            burst_bytes: kbps(weighted(Blended::BurstKb)),
            priority_weight: Score(weighted(Blended::PriorityWeight) as f32),
            latency_target_ms: Score(weighted(Blended::LatencyTargetMs) as f32),
            rate_limit_rps: Score(rate_limit as f32),
            request_limit_rps: Score(request_limit as f32),
            send_buffer: buffer(Blended::SendBufferMin, Blended::SendBufferMax),
            receive_buffer: buffer(Blended::ReceiveBufferMin, Blended::ReceiveBufferMax),
            authentication: secure
                .iter()
                .map(|e| e.entry.security.authentication)
                .max()
                .unwrap_or(top.entry.security.authentication),
            inspection: secure
                .iter()
                .map(|e| e.entry.security.inspection)
                .max()
                .unwrap_or(top.entry.security.inspection),
            allowed_app_classes: app_classes,
            allowed_ports: ports,
            vpn_required: secure.iter().any(|e| e.entry.security.vpn_required),
            current_bytes: demand.current_bytes.max(0.0).round() as u64,
            current_requests: demand.current_requests.max(0.0).round() as u64,
        }
    }
}

/// Sorted, merged port ranges.
fn normalise_ports(ports: &[PortRange]) -> Vec<PortRange> {
    let mut v = ports.to_vec();
    v.sort();
    let mut out: Vec<PortRange> = Vec::with_capacity(v.len());
    for p in v {
        match out.last_mut() {
            Some(last) if u32::from(p.first) <= u32::from(last.last) + 1 => {
                last.last = last.last.max(p.last)
            }
            _ => out.push(p),
        }
    }
    out
}

/// The ports in both of two normalised lists.
fn intersect_ports(a: &[PortRange], b: &[PortRange]) -> Vec<PortRange> {
    let mut out = Vec::new();
    for x in a {
        for y in b {
            let (first, last) = (x.first.max(y.first), x.last.min(y.last));
            if first <= last {
                out.push(PortRange { first, last });
            }
        }
    }
    normalise_ports(&out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policies::catalogue::PersonaCatalogue;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn catalogue() -> PersonaCatalogue {
        let mut c = PersonaCatalogue::example();
        let mut streamer = c.personas["gamer"].clone();
        streamer.diffserv_class = "multimedia-streaming".into();
        streamer.dscp = 26;
        streamer.bandwidth.ceiling_kbps = 50_000.0;
        streamer.bandwidth.guaranteed_kbps = 5_000.0;
        streamer.latency_target_ms = 400.0;
        streamer.security.authentication = Authentication::Mfa;
        streamer.security.allowed_app_classes = vec!["video".into(), "web".into()];
        streamer.security.allowed_ports = vec!["443".parse().unwrap(), "1935".parse().unwrap()];
        streamer.security.vpn_required = true;
        c.personas.insert("streamer".into(), streamer);
        c.validate().unwrap();
        c
    }

    /// A blend of every entry with seeded random probabilities and demand.
    fn random_case(
        rng: &mut ChaCha8Rng,
        c: &PersonaCatalogue,
    ) -> (Vec<(String, f64)>, DemandOutlook) {
        let mut d: Vec<(String, f64)> = Vec::new();
        for n in c.personas.keys() {
            if rng.random_bool(0.7) {
                d.push((n.clone(), rng.random_range(0.0..1.0)));
            }
        }
        let total: f64 = d.iter().map(|x| x.1).sum();
        d.iter_mut().for_each(|x| x.1 /= total.max(1e-9));
        let demand = DemandOutlook {
            peak_bytes: rng.random_bool(0.8).then(|| rng.random_range(0.0..1e9)),
            peak_requests: rng.random_bool(0.8).then(|| rng.random_range(0.0..5_000.0)),
            current_bytes: rng.random_range(0.0..1e8),
            current_requests: rng.random_range(0.0..500.0),
        };
        (d, demand)
    }

    /// Property: every blended numeric value lies within the range of the entries blended.
    #[test]
    fn every_blended_value_lies_within_the_personas_range() {
        let c = catalogue();
        let mut rng = ChaCha8Rng::seed_from_u64(18);
        for _ in 0..2_000 {
            let (d, demand) = random_case(&mut rng, &c);
            let d: Vec<(&str, f64)> = d.iter().map(|(n, p)| (n.as_str(), *p)).collect();
            let p = blend(&c, &d, &demand, 60.0, &PolicyConfig::default());
            let used: Vec<&PersonaEntry> =
                p.personas.iter().map(|(n, _)| &c.personas[&**n]).collect();
            let within = |v: f64, f: &dyn Fn(&PersonaEntry) -> f64, what: &str| {
                let lo = used.iter().map(|e| f(e)).fold(f64::MAX, f64::min);
                let hi = used.iter().map(|e| f(e)).fold(f64::MIN, f64::max);
                assert!(
                    v >= lo - 1e-6 * lo.abs() - 0.5 && v <= hi + 1e-6 * hi.abs() + 0.5,
                    "{what}: {v} not in [{lo}, {hi}] for {d:?}"
                );
            };
            within(
                p.floor_bps as f64,
                &|e| e.bandwidth.floor_kbps * 1e3,
                "floor",
            );
            within(
                p.guaranteed_bps as f64,
                &|e| e.bandwidth.guaranteed_kbps * 1e3,
                "guaranteed",
            );
            within(
                p.ceiling_bps as f64,
                &|e| e.bandwidth.ceiling_kbps * 1e3,
                "ceiling",
            );
            within(
                p.burst_bytes as f64,
                &|e| e.bandwidth.burst_kb * 1e3,
                "burst",
            );
            within(
                p.priority_weight.0 as f64,
                &|e| e.priority_weight,
                "priority",
            );
            within(
                p.latency_target_ms.0 as f64,
                &|e| e.latency_target_ms,
                "latency",
            );
            within(
                p.request_limit_rps.0 as f64,
                &|e| e.requests.limit_per_s,
                "limit",
            );
            within(
                p.send_buffer[0] as f64,
                &|e| e.socket.send_buffer[0] as f64,
                "sndbuf",
            );
            within(
                p.receive_buffer[1] as f64,
                &|e| e.socket.receive_buffer[1] as f64,
                "rcvbuf",
            );
            // The allocation lies within the blended bounds, and within every entry's range.
            assert!(p.floor_bps <= p.allocated_bps && p.allocated_bps <= p.ceiling_bps);
            let r = p.rate_limit_rps.0 as f64;
            assert!(
                r >= p
                    .personas
                    .iter()
                    .map(|(n, _)| c.personas[&**n].requests.floor_per_s)
                    .fold(f64::MAX, f64::min)
                    - 1e-3
            );
            assert!(r <= p.request_limit_rps.0 as f64 + 1e-3);
            let sum: f32 = p.personas.iter().map(|x| x.1 .0).sum();
            assert!((sum - 1.0).abs() < 1e-4);
            // Security is at least as strict as the top entry's.
            let top = &c.personas[&*p.persona];
            assert!(p.authentication >= top.security.authentication);
            assert!(p.inspection >= top.security.inspection);
            assert!(p.vpn_required >= top.security.vpn_required);
            assert!(p.allowed_app_classes.iter().all(|a| top
                .security
                .allowed_app_classes
                .iter()
                .any(|t| **t == **a)));
        }
    }

    /// Property: a one-hot distribution reproduces its entry exactly.
    #[test]
    fn a_one_hot_distribution_reproduces_its_persona_exactly() {
        let c = catalogue();
        for (name, e) in &c.personas {
            let p = blend(
                &c,
                &[(name.as_str(), 1.0)],
                &DemandOutlook::default(),
                60.0,
                &PolicyConfig::default(),
            );
            assert_eq!(&*p.persona, name.as_str());
            assert_eq!(&*p.diffserv_class, e.diffserv_class);
            assert_eq!(p.dscp, e.dscp);
            assert_eq!(&*p.endpoint_class, e.endpoint_class);
            assert_eq!(p.floor_bps as f64, e.bandwidth.floor_kbps * 1e3);
            assert_eq!(p.guaranteed_bps as f64, e.bandwidth.guaranteed_kbps * 1e3);
            assert_eq!(p.ceiling_bps as f64, e.bandwidth.ceiling_kbps * 1e3);
            assert_eq!(p.burst_bytes as f64, e.bandwidth.burst_kb * 1e3);
            assert_eq!(p.priority_weight.0, e.priority_weight as f32);
            assert_eq!(p.latency_target_ms.0, e.latency_target_ms as f32);
            assert_eq!(p.request_limit_rps.0, e.requests.limit_per_s as f32);
            assert_eq!(p.send_buffer, e.socket.send_buffer);
            assert_eq!(p.receive_buffer, e.socket.receive_buffer);
            assert_eq!(p.authentication, e.security.authentication);
            assert_eq!(p.inspection, e.security.inspection);
            let mut classes = e.security.allowed_app_classes.clone();
            classes.sort();
            let got: Vec<&str> = p.allowed_app_classes.iter().map(|c| &**c).collect();
            assert_eq!(got, classes);
            assert_eq!(p.allowed_ports, normalise_ports(&e.security.allowed_ports));
            assert_eq!(p.vpn_required, e.security.vpn_required);
            // No demand: the floors.
            assert_eq!(p.allocated_bps, p.floor_bps);
            assert_eq!(p.rate_limit_rps.0, e.requests.floor_per_s as f32);
        }
    }

    #[test]
    fn security_is_the_strictest_above_the_floor_only() {
        let c = catalogue();
        let config = PolicyConfig::default();
        let demand = DemandOutlook::default();
        // Streamer at 0.3 >= 0.2: its MFA, VPN and the classes both allow.
        let p = blend(
            &c,
            &[("gamer", 0.7), ("streamer", 0.3)],
            &demand,
            60.0,
            &config,
        );
        assert_eq!(&*p.persona, "gamer");
        assert_eq!(p.dscp, 32);
        assert_eq!(p.authentication, Authentication::Mfa);
        assert!(p.vpn_required);
        assert_eq!(p.allowed_app_classes, vec![Arc::from("web")]);
        assert_eq!(p.allowed_ports, vec!["443".parse().unwrap()]);
        // At 0.1 it does not count.
        let p = blend(
            &c,
            &[("gamer", 0.9), ("streamer", 0.1)],
            &demand,
            60.0,
            &config,
        );
        assert_eq!(p.authentication, Authentication::Password);
        assert!(!p.vpn_required);
        assert_eq!(p.allowed_ports.len(), 2);
    }

    #[test]
    fn the_allocation_follows_the_forecast_peak_within_the_bounds() {
        let c = catalogue();
        let config = PolicyConfig::default();
        let at = |bytes: f64| {
            let d = DemandOutlook {
                peak_bytes: Some(bytes),
                current_bytes: 1.0,
                ..Default::default()
            };
            blend(&c, &[("gamer", 1.0)], &d, 60.0, &config).allocated_bps
        };
        assert_eq!(at(0.0), 64_000);
        assert_eq!(at(60.0 * 1e6 / 8.0), 1_250_000);
        assert_eq!(at(1e12), 20_000_000);
        // Without a forecast, the current window stands in.
        let d = DemandOutlook {
            current_bytes: 60.0 * 1e6 / 8.0,
            ..Default::default()
        };
        assert_eq!(
            blend(&c, &[("gamer", 1.0)], &d, 60.0, &config).allocated_bps,
            1_250_000
        );
    }

    use std::collections::BTreeMap;

    // The distribution and the blend as they were computed before `Blender` (names looked up
    // in the catalogue for every user), kept to prove the blender makes the same, bit for bit.
    fn distribution_before<'c, S: AsRef<str>>(
        catalogue: &'c PersonaCatalogue,
        segments: &[(S, f64)],
        personas: &[(u32, f64)],
    ) -> Vec<(&'c str, f64)> {
        let mut mass: BTreeMap<&'c str, f64> = BTreeMap::new();
        let clean = |p: f64| if p.is_finite() && p > 0.0 { p } else { 0.0 };
        if !segments.is_empty() {
            for (s, p) in segments {
                *mass
                    .entry(catalogue.entry_of_segment(s.as_ref()))
                    .or_default() += clean(*p);
            }
        } else {
            for (id, p) in personas {
                *mass.entry(catalogue.entry_of_persona(*id)).or_default() += clean(*p);
            }
        }
        let total: f64 = mass.values().sum();
        if total > 1.0 {
            mass.values_mut().for_each(|p| *p /= total);
        } else if total < 1.0 {
            *mass.entry(DEFAULT_PERSONA).or_default() += 1.0 - total;
        }
        mass.into_iter().filter(|(_, p)| *p > 0.0).collect()
    }

    fn blend_before(
        catalogue: &PersonaCatalogue,
        distribution: &[(&str, f64)],
        demand: &DemandOutlook,
        window_secs: f64,
        config: &PolicyConfig,
    ) -> Policy {
        let default = catalogue
            .get(DEFAULT_PERSONA)
            .expect("a validated catalogue has a default entry");
        let mut entries: Vec<(&str, &PersonaEntry, f64)> = distribution
            .iter()
            .filter(|(_, p)| p.is_finite() && *p > 0.0)
            .map(|(n, p)| match catalogue.personas.get_key_value(*n) {
                Some((name, e)) => (name.as_str(), e, *p),
                None => (DEFAULT_PERSONA, default, *p),
            })
            .collect();
        if entries.is_empty() {
            entries.push((DEFAULT_PERSONA, default, 1.0));
        }
        // Merge duplicates (entries mapped to default), then most probable first, ties by name.
        entries.sort_by(|a, b| a.0.cmp(b.0));
        entries.dedup_by(|b, a| {
            if a.0 == b.0 {
                a.2 += b.2;
                true
            } else {
                false
            }
        });
        let total: f64 = entries.iter().map(|e| e.2).sum();
        entries.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(b.0)));
        let weighted = |f: &dyn Fn(&PersonaEntry) -> f64| -> f64 {
            let v = entries.iter().map(|(_, e, p)| p * f(e)).sum::<f64>() / total;
            // Keep the mean inside the entries' range despite rounding.
            let (lo, hi) = entries
                .iter()
                .fold((f64::MAX, f64::MIN), |(lo, hi), (_, e, _)| {
                    (lo.min(f(e)), hi.max(f(e)))
                });
            v.clamp(lo, hi)
        };
        let (top_name, top, _) = entries[0];
        let kbps = |v: f64| (v * 1_000.0).round() as u64;
        let floor_kbps = weighted(&|e| e.bandwidth.floor_kbps);
        let ceiling_kbps = weighted(&|e| e.bandwidth.ceiling_kbps);
        let request_floor = weighted(&|e| e.requests.floor_per_s);
        let request_limit = weighted(&|e| e.requests.limit_per_s);
        let (bytes, requests) = demand.sized_for();
        let secs = window_secs.max(f64::MIN_POSITIVE);
        let sized_for_bps = bytes * 8.0 / secs;
        let allocated =
            (sized_for_bps * config.headroom).clamp(floor_kbps * 1_000.0, ceiling_kbps * 1_000.0);
        let rate_limit = (requests / secs * config.headroom).clamp(request_floor, request_limit);
        let buffer = |f: &dyn Fn(&PersonaEntry) -> [u64; 2]| -> [u64; 2] {
            [
                weighted(&|e| f(e)[0] as f64).round() as u64,
                weighted(&|e| f(e)[1] as f64).round() as u64,
            ]
        };
        // Security: the strictest among the entries at or above the floor (the top one always).
        let secure: Vec<&PersonaEntry> = entries
            .iter()
            .enumerate()
            .filter(|(i, (_, _, p))| *i == 0 || *p / total >= config.security_floor)
            .map(|(_, (_, e, _))| *e)
            .collect();
        let mut app_classes: Vec<String> = top.security.allowed_app_classes.clone();
        app_classes.retain(|c| {
            secure
                .iter()
                .all(|e| e.security.allowed_app_classes.contains(c))
        });
        if app_classes.is_empty() {
            app_classes = top.security.allowed_app_classes.clone();
        }
        app_classes.sort();
        app_classes.dedup();
        let mut ports = secure
            .iter()
            .skip(1)
            .fold(normalise_ports(&top.security.allowed_ports), |acc, e| {
                intersect_ports(&acc, &normalise_ports(&e.security.allowed_ports))
            });
        if ports.is_empty() {
            ports = normalise_ports(&top.security.allowed_ports);
        }
        Policy {
            personas: entries
                .iter()
                .map(|(n, _, p)| ((*n).into(), Score((p / total) as f32)))
                .collect(),
            persona: top_name.into(),
            diffserv_class: top.diffserv_class.as_str().into(),
            dscp: top.dscp,
            endpoint_class: top.endpoint_class.as_str().into(),
            floor_bps: kbps(floor_kbps),
            guaranteed_bps: kbps(weighted(&|e| e.bandwidth.guaranteed_kbps)),
            ceiling_bps: kbps(ceiling_kbps),
            allocated_bps: (allocated.round() as u64).clamp(kbps(floor_kbps), kbps(ceiling_kbps)),
            sized_for_bps: sized_for_bps.round() as u64,
            burst_bytes: kbps(weighted(&|e| e.bandwidth.burst_kb)),
            priority_weight: Score(weighted(&|e| e.priority_weight) as f32),
            latency_target_ms: Score(weighted(&|e| e.latency_target_ms) as f32),
            rate_limit_rps: Score(rate_limit as f32),
            request_limit_rps: Score(request_limit as f32),
            send_buffer: buffer(&|e| e.socket.send_buffer),
            receive_buffer: buffer(&|e| e.socket.receive_buffer),
            authentication: secure
                .iter()
                .map(|e| e.security.authentication)
                .max()
                .unwrap_or(top.security.authentication),
            inspection: secure
                .iter()
                .map(|e| e.security.inspection)
                .max()
                .unwrap_or(top.security.inspection),
            allowed_app_classes: app_classes.iter().map(|c| c.as_str().into()).collect(),
            allowed_ports: ports,
            vpn_required: secure.iter().any(|e| e.security.vpn_required),
            current_bytes: demand.current_bytes.max(0.0).round() as u64,
            current_requests: demand.current_requests.max(0.0).round() as u64,
        }
    }

    /// The blender makes exactly what the per-user lookups made: seeded random segment and
    /// persona distributions (mapped, unmapped, repeated, non-finite and negative
    /// probabilities, sums above and below 1), random demand and security floors, on the
    /// example catalogue and one with more entries, ports and app classes.
    #[test]
    fn the_blender_makes_what_the_lookups_made() {
        let mut streamers = catalogue();
        streamers
            .mapping
            .segments
            .insert("video".into(), "streamer".into());
        streamers
            .mapping
            .personas
            .insert("3".into(), "streamer".into());
        streamers
            .mapping
            .personas
            .insert("04".into(), "gamer".into());
        // Numbers that are not round, so that the order of a weighted sum shows in its bits.
        for (k, e) in streamers.personas.values_mut().enumerate() {
            let f = 1.0 + 0.1234567 * (k + 1) as f64;
            e.bandwidth.floor_kbps *= f;
            e.bandwidth.guaranteed_kbps *= f;
            e.bandwidth.ceiling_kbps *= f;
            e.bandwidth.burst_kb *= f;
            e.priority_weight *= f;
            e.latency_target_ms *= f;
            e.requests.floor_per_s *= f;
            e.requests.limit_per_s *= f;
        }
        streamers.validate().unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(27);
        for c in [PersonaCatalogue::example(), streamers] {
            let b = Blender::new(&c);
            let mut names: Vec<String> = c.mapping.segments.keys().cloned().collect();
            names.extend(["unmapped".to_string(), String::new()]);
            for case in 0..3_000 {
                let probability = |rng: &mut ChaCha8Rng| match rng.random_range(0..12) {
                    0 => f64::NAN,
                    1 => -0.5,
                    2 => f64::INFINITY,
                    3 => 0.0,
                    // Ties, which the most probable entry and the order break by name.
                    4 | 5 => 0.25,
                    _ => rng.random_range(0.0..0.9),
                };
                let segments: Vec<(String, f64)> = (0..rng.random_range(0..6))
                    .map(|_| {
                        let n = names[rng.random_range(0..names.len())].clone();
                        (n, probability(&mut rng))
                    })
                    .collect();
                let personas: Vec<(u32, f64)> = (0..rng.random_range(0..4))
                    .map(|_| (rng.random_range(0..6), probability(&mut rng)))
                    .collect();
                let expected = distribution_before(&c, &segments, &personas);
                let got = b.distribution(&segments, &personas);
                let named: Vec<(&str, f64)> =
                    got.iter().map(|(i, p)| (&**b.name(*i), *p)).collect();
                let bits = |d: &[(&str, f64)]| -> Vec<(String, u64)> {
                    d.iter()
                        .map(|(n, p)| (n.to_string(), p.to_bits()))
                        .collect()
                };
                assert_eq!(
                    bits(&named),
                    bits(&expected),
                    "case {case}: {segments:?} {personas:?}"
                );
                let (every, demand) = random_case(&mut rng, &c);
                let config = PolicyConfig {
                    security_floor: rng.random_range(0.01..1.0),
                    ..PolicyConfig::default()
                };
                let secs = [1.0, 60.0, 86_400.0][rng.random_range(0..3)];
                let expected = blend_before(&c, &expected, &demand, secs, &config);
                assert_eq!(
                    b.blend(&got, &demand, secs, &config),
                    expected,
                    "case {case}"
                );
                assert_eq!(
                    blend(&c, &named, &demand, secs, &config),
                    expected,
                    "case {case}"
                );
                // A distribution over every entry (up to all five at once).
                let every: Vec<(&str, f64)> = every.iter().map(|(n, p)| (n.as_str(), *p)).collect();
                assert_eq!(
                    blend(&c, &every, &demand, secs, &config),
                    blend_before(&c, &every, &demand, secs, &config),
                    "case {case}"
                );
            }
        }
    }

    #[test]
    fn port_lists_merge_and_intersect() {
        let p = |s: &str| s.parse::<PortRange>().unwrap();
        assert_eq!(
            normalise_ports(&[p("80-90"), p("85-100"), p("101"), p("443")]),
            vec![p("80-101"), p("443")]
        );
        assert_eq!(
            intersect_ports(&[p("1-100")], &[p("50-200"), p("443")]),
            vec![p("50-100")]
        );
    }

    #[test]
    fn config_ranges_are_checked() {
        let mut c = PolicyConfig::default();
        assert!(c.validate().is_ok());
        c.headroom = 0.5;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("policy.headroom"));
        let c = PolicyConfig {
            risk_strict: 0.5,
            ..PolicyConfig::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("policy.risk_strict"));
    }
}
