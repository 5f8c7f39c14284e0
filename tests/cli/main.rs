//! Integration tests of the `personaflow` binary: the real executable on real files in
//! temporary directories.
//!
//! - `simulated`: `simulate`, `backfill`, `evaluate` and `demo` on simulator output;
//! - `real_data`: the shipped Zeek and CDNOW mappings on `../shared/data` (skipped if absent);
//! - `validation`: one test per input validation rule, through the CLI;
//! - `basics`: help, error messages, configuration layers;
//! - `interop`: DuckDB, Polars and pyarrow read the outputs as they are;
//! - `models`: the VAE embedder and LSTM forecaster through onnxruntime, and their errors;
//! - `stream`: the continuous Kafka job against librdkafka's mock cluster.
//! - `drift`: personas, drift and scaling tables, and `evaluate tcpd/nab` on the real data;
//! - `policy`: the policies, socket profiles and feedback a backfill writes, and `policy
//!   render` applied in a network namespace with a real TCP flow through it;
//! - `serve`: `personaflow serve` on a real port, its answers against the tables;
//! - `synth`: `personaflow synth` on a backfill with the models, against the decoder;
//! - `regression`: one test per defect found by trying the binary as a new user, named for it.

mod basics;
mod broker;
mod drift;
mod interop;
mod models;
mod policy;
mod real_data;
mod regression;
mod serve;
mod simulated;
mod stream;
mod support;
mod synth;
mod validation;
