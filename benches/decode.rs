//! Decoding JSON events (the continuous job's messages, the NDJSON reader's lines) through
//! the identity mapping: field by field, as `JsonRecordDecoder::decode` does now, against the
//! reference path through a `serde_json::Value` (`decode_with_value`, the path before).
//!
//! Run with `cargo bench --bench decode`. The events are drawn from a seeded [`ChaCha8Rng`]
//! with the simulator's fields and encoded as the job reads them (`event_json`); throughput is
//! in events.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use personaflow_io::source::{event_json, IngestMapping, JsonRecordDecoder};
use personaflow_operators::Event;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::hint::black_box;

/// Events decoded per iteration.
const EVENTS: usize = 10_000;

fn payloads(rng: &mut ChaCha8Rng) -> Vec<Vec<u8>> {
    const ACTIONS: [&str; 4] = ["page_view", "stream_chunk", "api_call", "dns"];
    const DEVICES: [&str; 3] = ["mobile", "desktop", "tv"];
    (0..EVENTS)
        .map(|i| {
            let e = Event {
                ts_ms: 1_767_571_200_000 + i as i64 * 37,
                user_id: format!("user-{:06}", rng.random_range(0..3_000)),
                session_id: Some(format!("s-{}", rng.random_range(0..100_000))),
                authenticated: rng.random(),
                segment: rng.random_bool(0.6).then(|| "streaming".to_string()),
                action: ACTIONS[rng.random_range(0..ACTIONS.len())].to_string(),
                category: Some("video".to_string()),
                bytes_in: Some(rng.random_range(0..5_000_000)),
                bytes_out: Some(rng.random_range(0..50_000)),
                latency_ms: Some(rng.random_range(1.0..900.0)),
                status: Some(if rng.random_bool(0.97) { 200 } else { 503 }),
                device: Some(DEVICES[rng.random_range(0..DEVICES.len())].to_string()),
                os: Some("android".to_string()),
                country: Some("DE".to_string()),
            };
            serde_json::to_vec(&event_json(&e)).unwrap()
        })
        .collect()
}

fn decode(c: &mut Criterion) {
    let payloads = payloads(&mut ChaCha8Rng::seed_from_u64(0x5eed));
    let decoder = JsonRecordDecoder::new(&IngestMapping::identity()).unwrap();
    for p in &payloads {
        assert_eq!(decoder.decode(p), decoder.decode_with_value(p));
    }
    let mut g = c.benchmark_group("decode_events");
    g.throughput(Throughput::Elements(EVENTS as u64));
    g.bench_function("through_a_value", |b| {
        b.iter(|| {
            payloads
                .iter()
                .filter(|p| black_box(decoder.decode_with_value(p)).is_ok())
                .count()
        })
    });
    g.bench_function("field_wise", |b| {
        b.iter(|| {
            payloads
                .iter()
                .filter(|p| black_box(decoder.decode(p)).is_ok())
                .count()
        })
    });
    g.finish();
}

/// The bench as criterion's group (in a module of its own: the function the macro makes has
/// no documentation).
mod group {
    use super::*;
    criterion_group!(benches, decode);
}
criterion_main!(group::benches);
