//! The canonical event record that every source produces and every operator consumes.

use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// One user event in the canonical schema (see the README's "Event schema" section).
///
/// Only `ts_ms`, `user_id` and `action` are required; every other field is optional and
/// defaults to "unknown". Sources validate records before they become `Event`s, so an
/// `Event` always has a non-empty `user_id` and `action` and non-negative byte counts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Event time, milliseconds since the Unix epoch (UTC).
    pub ts_ms: i64,
    /// The user (or host, or customer) the event belongs to.
    pub user_id: String,
    /// Session identifier, when the source has one.
    pub session_id: Option<String>,
    /// Whether the user was authenticated; only authenticated users' segments are trusted.
    pub authenticated: bool,
    /// The user's known segment (only meaningful for authenticated users).
    pub segment: Option<String>,
    /// What the user did (e.g. `page_view`, `stream_chunk`, `dns`).
    pub action: String,
    /// A coarser category of the action (e.g. `video`, `http`).
    pub category: Option<String>,
    /// Bytes received by the user.
    pub bytes_in: Option<u64>,
    /// Bytes sent by the user.
    pub bytes_out: Option<u64>,
    /// Latency or duration of the request, milliseconds.
    pub latency_ms: Option<f64>,
    /// Status code (HTTP-like: 400 and above count as errors).
    pub status: Option<i32>,
    /// Device class (e.g. `mobile`, `tv`).
    pub device: Option<String>,
    /// Operating system.
    pub os: Option<String>,
    /// Country code.
    pub country: Option<String>,
}

/// The context of a user that does not depend on behaviour: used for cold-start priors. Its
/// values are shared (`Arc<str>`): sequences and profiles carry it, and every consumer of their
/// streams gets a copy of each record.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Context {
    /// Device class.
    pub device: Option<Arc<str>>,
    /// Operating system.
    pub os: Option<Arc<str>>,
    /// Country code.
    pub country: Option<Arc<str>>,
}

impl Event {
    /// A minimal event with only the required fields set.
    pub fn new(ts_ms: i64, user_id: impl Into<String>, action: impl Into<String>) -> Self {
        Event {
            ts_ms,
            user_id: user_id.into(),
            action: action.into(),
            ..Event::default()
        }
    }

    /// The event's context fields.
    pub fn context(&self) -> Context {
        Context {
            device: self.device.as_deref().map(Arc::from),
            os: self.os.as_deref().map(Arc::from),
            country: self.country.as_deref().map(Arc::from),
        }
    }
}
