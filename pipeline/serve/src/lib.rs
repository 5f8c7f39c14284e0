//! personaflow serve: the persona store and the HTTP API over it.
//!
//! - [`store`]: each user's latest records (and the last few windows of them), segments,
//!   personas, drift and scaling, in memory; fed the record batches the sinks write, by the
//!   continuous job as windows are emitted or from a backfill's outputs.
//! - [`api`]: the versioned JSON API (axum on tokio), bearer-token auth, validation and
//!   limits.
//! - [`download`]: a table, filtered and in a chosen format, streamed.
//! - [`feedback`]: other services' reports, appended to `service_feedback`.
//! - [`openapi`]: the API's OpenAPI 3.1 document, generated from the code.
//! - [`redis`]: the Redis sink, each user's latest persona, resonance and policy as a hash.
//! - [`timeline`]: the dashboard's series (resonance, segment sizes, forecast error per window;
//!   the persona map), kept as per-window sums.
//! - [`dashboard`]: the dashboard page at `/`, its script and style compiled in.
//! - [`metrics`]: requests and latency per route, for `/metrics`.

pub mod api;
pub mod dashboard;
pub mod download;
pub mod error;
pub mod feedback;
pub mod metrics;
pub mod openapi;
pub mod redis;
pub mod store;
pub mod timeline;

pub use error::{Error, Result};
pub use store::{PersonaStore, StoreConfig};
