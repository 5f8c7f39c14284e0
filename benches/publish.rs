//! The output topics' JSON encoding of a window's rows: Arrow's JSON writer over the batch
//! (its timestamps relabelled, the lines split), as the continuous job published before,
//! against the row encoder it publishes with now (`personaflow_kafka::json_rows`).
//!
//! Run with `cargo bench --bench publish`. The rows are a window of `profiles` (the widest
//! published table) drawn from a seeded [`ChaCha8Rng`]; throughput is in rows.

use arrow_array::RecordBatch;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use personaflow_io::tables::{ProfileRow, TableRow};
use personaflow_kafka::json_rows::JsonRows;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::hint::black_box;
use std::sync::Arc;

/// Rows in the window (one per user).
const ROWS: usize = 3_000;
/// Embedding dimensions (the shipped encoder's latent size).
const DIMS: usize = 16;

fn window(rng: &mut ChaCha8Rng) -> RecordBatch {
    let end = 1_767_571_260_000;
    let rows: Vec<ProfileRow> = (0..ROWS)
        .map(|u| ProfileRow {
            window_end: end,
            user_id: Arc::from(format!("user-{u:06}")),
            embedder: Arc::from("rnn_vae"),
            embedding: (0..DIMS).map(|_| rng.random_range(-3.0f32..3.0)).collect(),
            anomaly_score: Some(rng.random_range(0.0f32..2.0)),
            history_windows: rng.random_range(1..16),
            events: rng.random_range(1..40),
            authenticated: rng.random(),
            segment: Some("streaming".into()),
            device: Some("mobile".into()),
            os: Some("android".into()),
            country: rng.random_bool(0.9).then(|| "DE".into()),
        })
        .collect();
    ProfileRow::to_batch(&rows)
}

fn encode(c: &mut Criterion) {
    let batch = window(&mut ChaCha8Rng::seed_from_u64(0x5eed));
    let mut g = c.benchmark_group("publish_profiles");
    g.throughput(Throughput::Elements(ROWS as u64));
    g.bench_function("arrow_json_writer", |b| {
        b.iter(|| {
            let relabelled = personaflow_io::tables::utc_offset_timestamps(&batch);
            let mut w = arrow_json::LineDelimitedWriter::new(Vec::new());
            w.write(&relabelled).unwrap();
            w.finish().unwrap();
            let json = w.into_inner();
            let mut bytes = 0;
            for line in json.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                bytes += black_box(line).len();
            }
            bytes
        })
    });
    g.bench_function("json_rows", |b| {
        b.iter(|| {
            let mut rows = JsonRows::try_new(&batch).unwrap();
            let mut line = Vec::new();
            let mut bytes = 0;
            for r in 0..batch.num_rows() {
                line.clear();
                rows.encode(r, &mut line);
                bytes += black_box(&line).len();
            }
            bytes
        })
    });
    g.finish();
}

/// The bench as criterion's group (in a module of its own: the function the macro makes has
/// no documentation).
mod group {
    use super::*;
    criterion_group!(benches, encode);
}
criterion_main!(group::benches);
