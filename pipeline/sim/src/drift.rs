//! Drift injections: a segment changes behaviour from a point in time on.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::Serialize;

use super::{segment_index, SEGMENTS};
use personaflow_io::{Error, Result, SettingsErrorKind};

/// Where drift parse and validation errors point (the `path` of [`Error::Config`]).
const DRIFT_SOURCE: &str = "<drift>";

/// Milliseconds per unit of the offsets accepted by [`DriftSpec::from_str`].
const OFFSET_UNITS: [(&str, f64); 5] = [
    ("ms", 1.0),
    ("s", 1_000.0),
    ("m", 60_000.0),
    ("h", 3_600_000.0),
    ("d", 86_400_000.0),
];

/// What a drift changes in the behaviour of its segment.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum DriftKind {
    /// Multiplies the rate of sessions and heartbeats, so of events (magnitude > 0).
    Rate,
    /// Multiplies the pace of requests within sessions: the gaps between a session's events
    /// are divided by the magnitude (> 0), so an active user sends that many times the requests.
    Pace,
    /// Multiplies bytes in and bytes out (magnitude > 0).
    Bytes,
    /// Multiplies latencies (magnitude > 0).
    Latency,
    /// Adds this probability of a 5xx status to every event (magnitude in \[0, 1\]).
    Errors,
    /// With probability `magnitude` (in \[0, 1\]) an action is drawn from the base action mix
    /// of segment `toward` instead of the user's own.
    Mix {
        /// The segment whose action mix the drifting segment moves toward.
        toward: String,
    },
}

impl DriftKind {
    /// The kind's name as written in drift strings (`rate`, `pace`, `bytes`, `latency`,
    /// `errors`, `mix`).
    pub fn name(&self) -> &'static str {
        match self {
            DriftKind::Rate => "rate",
            DriftKind::Pace => "pace",
            DriftKind::Bytes => "bytes",
            DriftKind::Latency => "latency",
            DriftKind::Errors => "errors",
            DriftKind::Mix { .. } => "mix",
        }
    }
}

impl fmt::Display for DriftKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DriftKind::Mix { toward } => write!(f, "mix:{toward}"),
            other => f.write_str(other.name()),
        }
    }
}

/// One drift injection: from `start_offset_ms` after the start of the simulation on, the
/// users of `segment` behave differently: all at once, or, with a ramp, each user from its own
/// time, spread evenly over the `ramp_ms` after the start (a staged roll-out: the share of the
/// segment's users that has changed grows linearly from 0 to 1).
///
/// Written as `SEGMENT@OFFSET[+RAMP]:KIND=MAGNITUDE`, where OFFSET and RAMP are numbers with a
/// unit (`ms`, `s`, `m`, `h`, `d`) and KIND is `rate`, `pace`, `bytes`, `latency`, `errors` or
/// `mix:TARGET_SEGMENT`:
///
/// ```
/// use personaflow_sim::{DriftKind, DriftSpec};
///
/// let drift: DriftSpec = "gamer@36h:bytes=3.0".parse().unwrap();
/// assert_eq!(drift.segment, "gamer");
/// assert_eq!(drift.start_offset_ms, 36 * 3_600_000);
/// assert_eq!(drift.kind, DriftKind::Bytes);
/// assert_eq!(drift.magnitude, 3.0);
///
/// let mix: DriftSpec = "casual_browser@1.5d:mix:video_streamer=0.5".parse().unwrap();
/// assert_eq!(mix.kind, DriftKind::Mix { toward: "video_streamer".into() });
/// assert_eq!(mix.to_string(), "casual_browser@129600000ms:mix:video_streamer=0.5");
///
/// let rollout: DriftSpec = "video_streamer@6h+3h:pace=3".parse().unwrap();
/// assert_eq!((rollout.start_offset_ms, rollout.ramp_ms), (6 * 3_600_000, 3 * 3_600_000));
/// assert_eq!(rollout.to_string(), "video_streamer@21600000ms+10800000ms:pace=3");
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct DriftSpec {
    /// The segment that drifts (one of [`SEGMENTS`]).
    pub segment: String,
    /// When the drift starts, milliseconds after the start of the simulation.
    pub start_offset_ms: i64,
    /// Over how long after the start the segment's users take it up (0: all at once).
    pub ramp_ms: i64,
    /// What changes.
    pub kind: DriftKind,
    /// How much (a multiplier for `rate`/`pace`/`bytes`/`latency`, a probability for
    /// `errors`/`mix`).
    pub magnitude: f64,
}

fn drift_error(reason: String) -> Error {
    Error::Config {
        path: PathBuf::from(DRIFT_SOURCE),
        kind: SettingsErrorKind::Invalid(reason),
    }
}

fn parse_offset(text: &str) -> Option<i64> {
    // Longest unit first, so that "ms" is not read as "m".
    let (number, unit_ms) = OFFSET_UNITS
        .iter()
        .filter_map(|(unit, ms)| text.strip_suffix(unit).map(|n| (n, *ms)))
        .min_by_key(|(n, _)| n.len())?;
    let value: f64 = number.trim().parse().ok()?;
    let ms = value * unit_ms;
    (value.is_finite() && value >= 0.0 && ms < i64::MAX as f64).then(|| ms.round() as i64)
}

impl FromStr for DriftSpec {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let usage = "expected SEGMENT@OFFSET[+RAMP]:KIND=MAGNITUDE, e.g. gamer@36h:bytes=3.0, \
                     gamer@36h+2h:pace=3 or gamer@2d:mix:video_streamer=0.5";
        let (segment, rest) = text
            .split_once('@')
            .ok_or_else(|| drift_error(format!("{text:?}: no '@'; {usage}")))?;
        let (offset, rest) = rest
            .split_once(':')
            .ok_or_else(|| drift_error(format!("{text:?}: no ':' after the offset; {usage}")))?;
        let (kind, magnitude) = rest
            .rsplit_once('=')
            .ok_or_else(|| drift_error(format!("{text:?}: no '=MAGNITUDE'; {usage}")))?;
        let (offset, ramp) = offset.split_once('+').unwrap_or((offset, "0ms"));
        let duration = |what: &str, value: &str| {
            parse_offset(value).ok_or_else(|| {
                drift_error(format!(
                    "{text:?}: bad {what} {value:?}: expected a non-negative number with a unit \
                     (ms, s, m, h, d), e.g. 36h"
                ))
            })
        };
        let start_offset_ms = duration("offset", offset)?;
        let ramp_ms = duration("ramp", ramp)?;
        let kind = match kind.split_once(':') {
            Some(("mix", toward)) => DriftKind::Mix {
                toward: toward.trim().to_string(),
            },
            None if kind == "mix" => {
                return Err(drift_error(format!(
                    "{text:?}: a mix drift needs a target segment, e.g. \
                     {segment}@{offset}:mix:video_streamer={magnitude}"
                )))
            }
            None if kind == "rate" => DriftKind::Rate,
            None if kind == "pace" => DriftKind::Pace,
            None if kind == "bytes" => DriftKind::Bytes,
            None if kind == "latency" => DriftKind::Latency,
            None if kind == "errors" => DriftKind::Errors,
            _ => {
                return Err(drift_error(format!(
                    "{text:?}: unknown drift kind {kind:?}: expected rate, pace, bytes, \
                     latency, errors or mix:SEGMENT"
                )))
            }
        };
        let magnitude: f64 = magnitude.trim().parse().map_err(|_| {
            drift_error(format!("{text:?}: magnitude {magnitude:?} is not a number"))
        })?;
        let spec = DriftSpec {
            segment: segment.trim().to_string(),
            start_offset_ms,
            ramp_ms,
            kind,
            magnitude,
        };
        spec.validate()?;
        Ok(spec)
    }
}

impl fmt::Display for DriftSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}ms", self.segment, self.start_offset_ms)?;
        if self.ramp_ms > 0 {
            write!(f, "+{}ms", self.ramp_ms)?;
        }
        write!(f, ":{}={}", self.kind, self.magnitude)
    }
}

impl DriftSpec {
    /// Checks the segment names and the magnitude's range for the kind (the offset against
    /// the simulated duration is checked by [`super::SimulationConfig::validate`]).
    pub fn validate(&self) -> Result<()> {
        let known = SEGMENTS.join(", ");
        if segment_index(&self.segment).is_none() {
            return Err(drift_error(format!(
                "drift {self}: unknown segment {:?} (known: {known})",
                self.segment
            )));
        }
        if self.start_offset_ms < 0 || self.ramp_ms < 0 {
            return Err(drift_error(format!(
                "drift {self}: negative start offset or ramp"
            )));
        }
        let m = self.magnitude;
        match &self.kind {
            DriftKind::Rate | DriftKind::Pace | DriftKind::Bytes | DriftKind::Latency => {
                if !(m.is_finite() && m > 0.0) {
                    return Err(drift_error(format!(
                        "drift {self}: a {} multiplier must be a finite number > 0",
                        self.kind.name()
                    )));
                }
            }
            DriftKind::Errors | DriftKind::Mix { .. } => {
                if !(0.0..=1.0).contains(&m) {
                    return Err(drift_error(format!(
                        "drift {self}: a {} magnitude is a probability in [0, 1]",
                        self.kind.name()
                    )));
                }
            }
        }
        if let DriftKind::Mix { toward } = &self.kind {
            if segment_index(toward).is_none() {
                return Err(drift_error(format!(
                    "drift {self}: unknown mix target segment {toward:?} (known: {known})"
                )));
            }
            if *toward == self.segment {
                return Err(drift_error(format!(
                    "drift {self}: a mix drift must move toward another segment"
                )));
            }
        }
        Ok(())
    }
}

/// A drift as recorded in `truth/drifts.json`.
#[derive(Debug, Serialize)]
pub(crate) struct DriftRecord {
    pub segment: String,
    /// Start time, RFC 3339 (UTC).
    pub start: String,
    /// Start time, milliseconds since the epoch.
    pub start_ms: i64,
    /// Start time, milliseconds after the start of the simulation.
    pub start_offset_ms: i64,
    /// Over how long after the start the users take it up (0: all at once).
    pub ramp_ms: i64,
    pub kind: &'static str,
    /// The target segment of a `mix` drift.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub toward: Option<String>,
    pub magnitude: f64,
}

/// The combined effect of all drifts active on a segment at some time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Effects {
    /// Multiplier of session and heartbeat rates.
    pub rate: f64,
    /// Divisor of the gaps between a session's events.
    pub pace: f64,
    /// Multiplier of bytes.
    pub bytes: f64,
    /// Multiplier of latencies.
    pub latency: f64,
    /// Extra 5xx probability.
    pub errors: f64,
    /// (target segment index, probability) of drawing actions from another segment's mix.
    pub mix: Option<(usize, f64)>,
}

impl Effects {
    /// No drift.
    pub const NONE: Effects = Effects {
        rate: 1.0,
        pace: 1.0,
        bytes: 1.0,
        latency: 1.0,
        errors: 0.0,
        mix: None,
    };

    fn with(mut self, drift: &DriftSpec) -> Effects {
        let m = drift.magnitude;
        match &drift.kind {
            DriftKind::Rate => self.rate *= m,
            DriftKind::Pace => self.pace *= m,
            DriftKind::Bytes => self.bytes *= m,
            DriftKind::Latency => self.latency *= m,
            DriftKind::Errors => self.errors = (self.errors + m).min(1.0),
            DriftKind::Mix { toward } => self.mix = segment_index(toward).map(|t| (t, m)),
        }
        self
    }
}

/// Piecewise-constant drift effects of one segment over time.
#[derive(Clone, Debug, Default)]
pub(crate) struct Timeline {
    /// (absolute start ms, effects from then on), sorted by start.
    steps: Vec<(i64, Effects)>,
}

impl Timeline {
    /// The timeline of a user of `segment` given all drifts (validated) and the simulation
    /// start: the user takes up a ramped drift `adoption` (in \[0, 1)) of the way into its ramp.
    pub fn new(segment: usize, drifts: &[DriftSpec], start_ms: i64, adoption: f64) -> Timeline {
        let at = |d: &DriftSpec| {
            let delay = (adoption.clamp(0.0, 1.0) * d.ramp_ms as f64) as i64;
            start_ms
                .saturating_add(d.start_offset_ms)
                .saturating_add(delay)
        };
        let mut mine: Vec<&DriftSpec> = drifts
            .iter()
            .filter(|d| segment_index(&d.segment) == Some(segment))
            .collect();
        mine.sort_by_key(|d| at(d));
        let mut steps: Vec<(i64, Effects)> = Vec::with_capacity(mine.len());
        let mut current = Effects::NONE;
        for drift in mine {
            current = current.with(drift);
            let at = at(drift);
            match steps.last_mut() {
                Some((last, effects)) if *last == at => *effects = current,
                _ => steps.push((at, current)),
            }
        }
        Timeline { steps }
    }

    /// The effects at time `t`.
    pub fn at(&self, t: i64) -> Effects {
        let i = self.steps.partition_point(|(start, _)| *start <= t);
        if i == 0 {
            Effects::NONE
        } else {
            self.steps[i - 1].1
        }
    }

    /// The first change of the rate multiplier strictly after `t`, if any.
    pub fn next_rate_change_after(&self, t: i64) -> Option<i64> {
        let rate = self.at(t).rate;
        let i = self.steps.partition_point(|(start, _)| *start <= t);
        self.steps[i..]
            .iter()
            .find(|(_, effects)| effects.rate != rate)
            .map(|(start, _)| *start)
    }
}
