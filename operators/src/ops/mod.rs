//! The differential-dataflow operators, one per file, each an extension trait named for its
//! verb. Timestamps are window indexes (`u64`).
//!
//! Most collections here are *facts*: a record is inserted at the window it describes and is
//! never retracted by its producer. [`hold::Hold::hold_for`] gives facts a lifetime (inserted
//! at `w`, retracted at `w + n`), which is how every piece of state stays windowed: arrangements
//! only ever hold the last `max(L, W)` windows, so memory does not grow with history.

mod batch;
pub mod detect_drift;
pub mod embed;
pub mod forecast_demand;
pub mod forecast_error;
pub mod hold;
pub mod personas;
pub mod pin_personas;
pub mod resonance;
pub mod segment_profiles;
pub mod sequences;
pub mod window_aggregate;

pub use detect_drift::DetectDrift;
pub use embed::{EmbedProfiles, ErrorSlot, Profile};
pub use forecast_demand::ForecastDemand;
pub use forecast_error::ForecastErrors;
pub use hold::Hold;
pub use personas::ClusterPersonas;
pub use pin_personas::PinPersonas;
pub use resonance::Resonate;
pub use segment_profiles::SegmentProfiles;
pub use sequences::Sequences;
pub use window_aggregate::WindowAggregate;

/// A user and a window index: the key of per-user, per-window records.
pub type UserWindow = (String, u64);
