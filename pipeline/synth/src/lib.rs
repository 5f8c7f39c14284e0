//! personaflow synth: synthetic users from the profiles' latent space (issue 20, in progress).
//!
//! Built so far, each a plain-function core tested directly:
//!
//! - [`gmm`]: a Gaussian mixture with diagonal covariances, fitted by EM from k-means++
//!   seeds (seeded, deterministic), sampled for latent points of a population.
//! - [`expand`]: one window's decoded features (the decoder's output, in the pipeline's
//!   units) expanded into events whose window features reproduce them.
//! - [`population`]: the populations (a segment's, a persona's, or all of them in their
//!   observed shares) read from a backfill's profiles: latent points and contexts.
//! - [`generate`]: users planned (a mixture per population, latent points, an optional
//!   shift), decoded in batches, expanded and written like a simulation, with their truth.
//!
//! Not built yet: shifting along a detected drift by its id, volume following the forecast,
//! `evaluate synthetic`, the load driver and the speed bench.

pub mod driver;
pub mod error;
pub mod expand;
pub mod generate;
pub mod gmm;
pub mod population;
pub mod residual;
pub mod volume;

pub use error::{Error, Result};
