//! The persona catalogue (`data/personas.toml`): what each persona gets from the network and
//! the service (DiffServ class, bandwidth, burst, priority, latency target, request rate,
//! socket buffer bounds, security profile, endpoint class), and which segments and clustered
//! personas map to which entry.
//!
//! The catalogue is data: [`PersonaCatalogue`] deserialises from the file (the job reads it)
//! and [`PersonaCatalogue::validate`] checks it before anything runs, naming the key that is
//! wrong (`personas.gamer.dscp`).

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// The entry every unmapped segment's (or persona's) probability goes to; the catalogue must
/// have it.
pub const DEFAULT_PERSONA: &str = "default";

/// The service classes of RFC 4594 (Configuration Guidelines for DiffServ Service Classes),
/// figure 3, by name, with the DSCP values each may be marked with.
pub const DIFFSERV_CLASSES: [(&str, &[u8]); 12] = [
    ("network-control", &[48]),
    ("telephony", &[46]),
    ("signaling", &[40]),
    ("multimedia-conferencing", &[34, 36, 38]),
    ("real-time-interactive", &[32]),
    ("multimedia-streaming", &[26, 28, 30]),
    ("broadcast-video", &[24]),
    ("low-latency-data", &[18, 20, 22]),
    ("oam", &[16]),
    ("high-throughput-data", &[10, 12, 14]),
    ("standard", &[0]),
    ("low-priority-data", &[8]),
];

/// How strongly a user must authenticate, weakest first (the derived order is strictness).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Authentication {
    /// No authentication.
    None,
    /// A password or token.
    Password,
    /// Multi-factor.
    Mfa,
    /// A client certificate (mutual TLS).
    Certificate,
}

/// How deeply traffic is inspected, lightest first (the derived order is strictness).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Inspection {
    /// None.
    None,
    /// Flow metadata (addresses, ports, sizes, SNI).
    Metadata,
    /// Full content inspection.
    Full,
}

macro_rules! names {
    ($t:ty { $($v:ident = $s:literal),* $(,)? }) => {
        impl $t {
            /// The name used in files and tables.
            pub fn name(self) -> &'static str {
                match self { $(Self::$v => $s),* }
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}
names!(Authentication { None = "none", Password = "password", Mfa = "mfa", Certificate = "certificate" });
names!(Inspection { None = "none", Metadata = "metadata", Full = "full" });

/// A port or an inclusive range of ports, written `443` or `"27000-27050"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "PortSpec", into = "String")]
pub struct PortRange {
    /// First port.
    pub first: u16,
    /// Last port (`first` for a single port).
    pub last: u16,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum PortSpec {
    Port(i64),
    Text(String),
}

impl TryFrom<PortSpec> for PortRange {
    type Error = String;
    fn try_from(spec: PortSpec) -> std::result::Result<Self, String> {
        let port = |v: i64| {
            u16::try_from(v)
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("port {v} is not in 1..=65535"))
        };
        match spec {
            PortSpec::Port(p) => Ok(PortRange {
                first: port(p)?,
                last: port(p)?,
            }),
            PortSpec::Text(t) => t.parse(),
        }
    }
}

impl std::str::FromStr for PortRange {
    type Err = String;
    /// `443` or `27000-27050`.
    ///
    /// ```
    /// use personaflow_operators::policies::catalogue::PortRange;
    /// assert_eq!("443".parse(), Ok(PortRange { first: 443, last: 443 }));
    /// assert_eq!("27000-27050".parse(), Ok(PortRange { first: 27000, last: 27050 }));
    /// assert!("50-40".parse::<PortRange>().is_err());
    /// assert!("0".parse::<PortRange>().is_err());
    /// ```
    fn from_str(t: &str) -> std::result::Result<Self, String> {
        let port = |s: &str| {
            s.trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("{s:?} is not a port in 1..=65535"))
        };
        let (first, last) = match t.split_once('-') {
            Some((a, b)) => (port(a)?, port(b)?),
            None => (port(t)?, port(t)?),
        };
        if first > last {
            return Err(format!("port range {t:?} ends before it starts"));
        }
        Ok(PortRange { first, last })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

impl From<PortRange> for String {
    fn from(p: PortRange) -> String {
        p.to_string()
    }
}

/// Bandwidth bounds of a persona, kilobits per second (1 kbit = 1,000 bits, as `tc` counts).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bandwidth {
    /// The least a user of the persona is ever allocated (a forecast of no demand still gets
    /// this much).
    pub floor_kbps: f64,
    /// The static reservation: what a user of the persona is guaranteed without a forecast.
    pub guaranteed_kbps: f64,
    /// The most a user of the persona may use (HTB `ceil`).
    pub ceiling_kbps: f64,
    /// Bytes a user may send at once above its rate (HTB `burst`), kilobytes (1,000 bytes).
    pub burst_kb: f64,
}

/// Request rate bounds of a persona, requests per second.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestRate {
    /// The least rate limit set (a forecast of no requests still allows this many).
    pub floor_per_s: f64,
    /// The most requests per second a user of the persona is allowed.
    pub limit_per_s: f64,
}

/// Socket buffer bounds of a persona, bytes: `[min, max]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SocketBounds {
    /// Send buffer (`SO_SNDBUF`) bounds.
    pub send_buffer: [u64; 2],
    /// Receive buffer (`SO_RCVBUF`) bounds.
    pub receive_buffer: [u64; 2],
}

/// What a persona's users are allowed and how they are checked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityProfile {
    /// Authentication strength required.
    pub authentication: Authentication,
    /// Inspection level applied.
    pub inspection: Inspection,
    /// Application classes (the events' `category`) allowed.
    pub allowed_app_classes: Vec<String>,
    /// Destination ports allowed (`443`, `"27000-27050"`).
    pub allowed_ports: Vec<PortRange>,
    /// Traffic must come through the VPN.
    pub vpn_required: bool,
}

/// One persona's configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersonaEntry {
    /// What the persona is, for people.
    #[serde(default)]
    pub description: String,
    /// RFC 4594 service class name ([`DIFFSERV_CLASSES`]).
    pub diffserv_class: String,
    /// DSCP value, one the class allows.
    pub dscp: u8,
    /// Relative share of spare capacity (HTB `quantum` and `prio` are derived from it), > 0.
    pub priority_weight: f64,
    /// One-way delay the persona's traffic should stay within, ms.
    pub latency_target_ms: f64,
    /// Where the persona's users are served (a class of endpoints: `edge-realtime`, ...).
    pub endpoint_class: String,
    /// Bandwidth bounds.
    pub bandwidth: Bandwidth,
    /// Request rate bounds.
    pub requests: RequestRate,
    /// Socket buffer bounds.
    pub socket: SocketBounds,
    /// Security profile.
    pub security: SecurityProfile,
}

/// Which catalogue entry each segment, and each clustered persona, is.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogueMapping {
    /// Segment name -> catalogue entry.
    #[serde(default)]
    pub segments: BTreeMap<String, String>,
    /// Clustered persona id (the `personas` table's `persona_id`, as a string key) ->
    /// catalogue entry; used for users whose resonance has no segment to score against.
    #[serde(default)]
    pub personas: BTreeMap<String, String>,
}

/// The endpoint class for each predicted request type.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoints {
    /// Streaming traffic (video, audio, calls).
    pub streaming: String,
    /// Transactional traffic (page views, API calls, purchases).
    pub transactional: String,
    /// Control traffic (authentication, heartbeats, telemetry, DNS).
    pub control: String,
    /// Bulk transfers (downloads, uploads, backups).
    pub bulk: String,
}

/// The persona catalogue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersonaCatalogue {
    /// Entries by name; one must be [`DEFAULT_PERSONA`].
    pub personas: BTreeMap<String, PersonaEntry>,
    /// Segment and persona mapping.
    #[serde(default)]
    pub mapping: CatalogueMapping,
    /// Endpoint per request type.
    pub endpoints: Endpoints,
}

impl PersonaCatalogue {
    /// The entry called `name`.
    pub fn get(&self, name: &str) -> Option<&PersonaEntry> {
        self.personas.get(name)
    }

    /// The entry a segment maps to ([`DEFAULT_PERSONA`] when unmapped).
    pub fn entry_of_segment(&self, segment: &str) -> &str {
        self.mapping
            .segments
            .get(segment)
            .map_or(DEFAULT_PERSONA, String::as_str)
    }

    /// The entry a clustered persona maps to ([`DEFAULT_PERSONA`] when unmapped).
    pub fn entry_of_persona(&self, persona: u32) -> &str {
        self.mapping
            .personas
            .get(&persona.to_string())
            .map_or(DEFAULT_PERSONA, String::as_str)
    }

    /// Checks every entry; the error names the key (`personas.gamer.bandwidth.ceiling_kbps`).
    ///
    /// ```
    /// use personaflow_operators::policies::catalogue::PersonaCatalogue;
    /// let mut c = PersonaCatalogue::example();
    /// assert!(c.validate().is_ok());
    /// c.personas.get_mut("default").unwrap().dscp = 46;
    /// let e = c.validate().unwrap_err().to_string();
    /// assert!(e.contains("personas.default.dscp"), "{e}");
    /// ```
    pub fn validate(&self) -> Result<()> {
        let bad = |key: String, reason: String| Err(Error::invalid_config(key, reason));
        if !self.personas.contains_key(DEFAULT_PERSONA) {
            return bad(
                format!("personas.{DEFAULT_PERSONA}"),
                "is missing: unmapped probability needs an entry to go to".into(),
            );
        }
        for (name, p) in &self.personas {
            let key = |k: &str| format!("personas.{name}.{k}");
            if name.trim().is_empty() {
                return bad("personas".into(), "has an entry with an empty name".into());
            }
            let Some((_, dscps)) = DIFFSERV_CLASSES
                .iter()
                .find(|(c, _)| *c == p.diffserv_class)
            else {
                let names: Vec<&str> = DIFFSERV_CLASSES.iter().map(|(c, _)| *c).collect();
                return bad(
                    key("diffserv_class"),
                    format!(
                        "{:?} is not an RFC 4594 service class (one of {})",
                        p.diffserv_class,
                        names.join(", ")
                    ),
                );
            };
            if !dscps.contains(&p.dscp) {
                return bad(
                    key("dscp"),
                    format!(
                        "({}) is not a DSCP of class {} (one of {dscps:?})",
                        p.dscp, p.diffserv_class
                    ),
                );
            }
            let positive = |k: &str, v: f64| {
                if v.is_finite() && v > 0.0 {
                    Ok(())
                } else {
                    bad(key(k), format!("must be a finite number > 0, got {v}"))
                }
            };
            positive("priority_weight", p.priority_weight)?;
            positive("latency_target_ms", p.latency_target_ms)?;
            positive("bandwidth.floor_kbps", p.bandwidth.floor_kbps)?;
            positive("bandwidth.burst_kb", p.bandwidth.burst_kb)?;
            positive("requests.floor_per_s", p.requests.floor_per_s)?;
            let b = &p.bandwidth;
            let ordered = b.floor_kbps <= b.guaranteed_kbps
                && b.guaranteed_kbps <= b.ceiling_kbps
                && b.ceiling_kbps.is_finite();
            if !ordered {
                return bad(
                    key("bandwidth"),
                    format!(
                        "needs floor_kbps <= guaranteed_kbps <= ceiling_kbps (finite), got {} <= {} <= {}",
                        b.floor_kbps, b.guaranteed_kbps, b.ceiling_kbps
                    ),
                );
            }
            let r = &p.requests;
            let ordered = r.floor_per_s <= r.limit_per_s && r.limit_per_s.is_finite();
            if !ordered {
                return bad(
                    key("requests"),
                    format!(
                        "needs floor_per_s <= limit_per_s (finite), got {} <= {}",
                        r.floor_per_s, r.limit_per_s
                    ),
                );
            }
            for (k, [lo, hi]) in [
                ("socket.send_buffer", p.socket.send_buffer),
                ("socket.receive_buffer", p.socket.receive_buffer),
            ] {
                if lo == 0 || lo > hi || hi > MAX_SOCKET_BUFFER {
                    return bad(
                        key(k),
                        format!(
                            "needs 0 < min <= max <= {MAX_SOCKET_BUFFER} bytes, got [{lo}, {hi}]"
                        ),
                    );
                }
            }
            if p.endpoint_class.trim().is_empty() {
                return bad(key("endpoint_class"), "must not be empty".into());
            }
            if p.security.allowed_ports.is_empty() {
                return bad(
                    key("security.allowed_ports"),
                    "must allow at least one port".into(),
                );
            }
        }
        for (kind, map) in [
            ("segments", &self.mapping.segments),
            ("personas", &self.mapping.personas),
        ] {
            for (from, to) in map {
                if kind == "personas" && from.parse::<u32>().is_err() {
                    return bad(
                        format!("mapping.personas.{from}"),
                        "must be a persona id (a whole number)".into(),
                    );
                }
                if !self.personas.contains_key(to) {
                    return bad(
                        format!("mapping.{kind}.{from}"),
                        format!("maps to {to:?}, which is not in [personas]"),
                    );
                }
            }
        }
        Ok(())
    }

    /// A small valid catalogue (a `default` and a `gamer` entry), for examples and tests.
    pub fn example() -> Self {
        let entry = |class: &str, dscp: u8, kbps: [f64; 3], target: f64| PersonaEntry {
            description: String::new(),
            diffserv_class: class.into(),
            dscp,
            priority_weight: 1.0,
            latency_target_ms: target,
            endpoint_class: "app".into(),
            bandwidth: Bandwidth {
                floor_kbps: kbps[0],
                guaranteed_kbps: kbps[1],
                ceiling_kbps: kbps[2],
                burst_kb: 32.0,
            },
            requests: RequestRate {
                floor_per_s: 1.0,
                limit_per_s: 20.0,
            },
            socket: SocketBounds {
                send_buffer: [16_384, 1_048_576],
                receive_buffer: [16_384, 4_194_304],
            },
            security: SecurityProfile {
                authentication: Authentication::Password,
                inspection: Inspection::Metadata,
                allowed_app_classes: vec!["web".into()],
                allowed_ports: vec![PortRange {
                    first: 443,
                    last: 443,
                }],
                vpn_required: false,
            },
        };
        let mut gamer = entry("real-time-interactive", 32, [64.0, 2_000.0, 20_000.0], 50.0);
        gamer.priority_weight = 4.0;
        gamer.security.allowed_ports.push(PortRange {
            first: 27_000,
            last: 27_050,
        });
        PersonaCatalogue {
            personas: BTreeMap::from([
                (
                    DEFAULT_PERSONA.into(),
                    entry("standard", 0, [32.0, 500.0, 5_000.0], 200.0),
                ),
                ("gamer".into(), gamer),
            ]),
            mapping: CatalogueMapping {
                segments: BTreeMap::from([("gamer".into(), "gamer".into())]),
                personas: BTreeMap::new(),
            },
            endpoints: Endpoints {
                streaming: "edge-cache".into(),
                transactional: "app".into(),
                control: "control-plane".into(),
                bulk: "bulk-transfer".into(),
            },
        }
    }
}

/// The largest socket buffer a catalogue may ask for, bytes (Linux caps `SO_SNDBUF` and
/// `SO_RCVBUF` at `net.core.wmem_max`/`rmem_max`; 1 GiB is far above any sane setting).
pub const MAX_SOCKET_BUFFER: u64 = 1 << 30;
