//! personaflow synth: synthetic users from the profiles' latent space (issue 20, in progress).
//!
//! Built so far, each a plain-function core tested directly:
//!
//! - [`gmm`]: a Gaussian mixture with diagonal covariances, fitted by EM from k-means++
//!   seeds (seeded, deterministic), sampled for latent points of a population.
//! - [`expand`]: one window's decoded features (the decoder's output, in the pipeline's
//!   units) expanded into events whose window features reproduce them.
//!
//! Not built yet: the `personaflow synth` command (populations from a backfill's profiles,
//! decoding through `personaflow_models::decoder::VaeDecoder`, Hive-partitioned output and
//! `truth/users.parquet`), the shift along a drift, `evaluate synthetic`, the load driver and
//! the speed bench.

pub mod error;
pub mod expand;
pub mod gmm;

pub use error::{Error, Result};
