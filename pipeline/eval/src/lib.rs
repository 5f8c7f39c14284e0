//! personaflow eval: how good the outputs are. Resonance against a simulated scenario's ground
//! truth ([`resonance`]); the drift detector on simulated scenarios with injected drifts, on
//! the Turing Change Point Dataset and on the Numenta Anomaly Benchmark ([`drift`]); shaping
//! policies, learned and not, on a link simulator ([`shaping`]); synthetic users against real
//! ones ([`synthetic`]).

pub mod drift;
pub mod error;
pub mod resonance;
pub mod shaping;
pub mod synthetic;

pub use error::{Error, Result, ScenarioMismatch};
