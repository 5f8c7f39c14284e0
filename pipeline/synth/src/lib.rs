//! personaflow synth: synthetic users from the profiles' latent space, written as events or
//! driven as load.
//!
//! Each stage a plain-function core tested directly:
//!
//! - [`population`]: the populations (a segment's, a persona's, or all of them in their
//!   observed shares) read from a backfill's profiles: latent points, contexts, activity;
//!   and a detected drift's direction in latent space.
//! - [`gmm`]: a Gaussian mixture with diagonal covariances, fitted by EM from k-means++
//!   seeds (seeded, deterministic), sampled for latent points of a population.
//! - [`residual`]: each population's reconstruction residuals (real windows minus the
//!   decoding of their own latent points), added back to synthetic windows.
//! - [`volume`]: volume factors per window from the backfill's demand forecasts.
//! - [`expand`]: one window's decoded features (the decoder's output, in the pipeline's
//!   units) expanded into events, as event columns, whose window features reproduce them.
//! - [`generate`]: users planned (a mixture per population, latent points, an optional
//!   shift), decoded a step per active window, expanded and written like a simulation, with
//!   their truth.
//! - [`driver`]: the events replayed as HTTP requests, paced by their synthetic times.

pub mod driver;
pub mod error;
pub mod expand;
pub mod generate;
pub mod gmm;
pub mod population;
pub mod residual;
pub mod volume;

pub use error::{Error, Result};
