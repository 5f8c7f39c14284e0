//! Synthetic users' speed: decoding latent points through the committed decoder
//! (onnxruntime, batches of `PF_BENCH_BATCH` [1,024]), and expanding the decoded sequences
//! into events written as Parquet, for `PF_BENCH_USERS` [100,000] users over
//! `PF_BENCH_MINUTES` [60] one-minute windows. The users are drawn from a mixture fitted to
//! seeded latent points (one population, activity `PF_BENCH_ACTIVITY` [0.08], the share of
//! windows a real user of the demo is active in), so the cost is the generator's, not the
//! fit's. Reports latent points decoded per second, events expanded and written per second,
//! the whole run's time, and the process's peak resident memory.
//!
//! Run with `cargo bench --bench synth` (it does nothing under `cargo test`); needs the
//! onnxruntime of `scripts/setup-onnxruntime.sh`.

use personaflow_models::decoder::{VaeDecoder, DECODER_FILE};
use personaflow_models::SessionOptions;
use personaflow_operators::WindowSpec;
use personaflow_synth::generate::{generate, plan, Decoder, SynthOptions};
use personaflow_synth::population::Population;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::time::Instant;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// The decoder, timed.
struct Timed<'a> {
    inner: &'a mut VaeDecoder,
    secs: f64,
    points: usize,
}

impl Decoder for Timed<'_> {
    fn sequence_len(&self) -> usize {
        self.inner.info().sequence_len
    }
    fn decode(&mut self, batch: usize, z: &[f32]) -> personaflow_synth::Result<Vec<f32>> {
        let t = Instant::now();
        let out = <VaeDecoder as Decoder>::decode(self.inner, batch, z);
        self.secs += t.elapsed().as_secs_f64();
        self.points += batch;
        out
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("synth: run it with `cargo bench --bench synth`; skipped");
        return;
    }
    let users: usize = env_or("PF_BENCH_USERS", 100_000);
    let minutes: i64 = env_or("PF_BENCH_MINUTES", 60);
    let batch: usize = env_or("PF_BENCH_BATCH", 1_024);
    let activity: f32 = env_or("PF_BENCH_ACTIVITY", 0.08);
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("models/onnx")
        .join(DECODER_FILE);
    let mut decoder = VaeDecoder::open(&path, &SessionOptions::default()).expect("the decoder");
    let d = decoder.info().latent_dims;
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let population = Population {
        name: "bench".into(),
        segment: Some("gamer".into()),
        user_windows: 5_000,
        points: (0..5_000)
            .map(|_| (0..d).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect())
            .collect(),
        contexts: BTreeMap::from([(
            (Some("pc".into()), Some("windows".into()), Some("US".into())),
            1,
        )]),
        activity: vec![activity],
    };
    let options = SynthOptions {
        users,
        start_ms: 1_767_571_200_000,
        duration_ms: minutes * 60_000,
        seed: 1,
        spec: WindowSpec::default(),
        components: 4,
        decode_batch: batch,
        shift: None,
    };
    let started = Instant::now();
    let planned = plan(&[population], &options).expect("plans");
    let planning = started.elapsed().as_secs_f64();
    let out = tempfile::tempdir().expect("a temporary directory");
    let mut timed = Timed {
        inner: &mut decoder,
        secs: 0.0,
        points: 0,
    };
    let t = Instant::now();
    let summary = generate(
        &planned,
        &mut timed,
        &options,
        out.path(),
        false,
        &mut |_, _| {},
    )
    .expect("generates");
    let total = t.elapsed().as_secs_f64();
    let (decode_secs, points) = (timed.secs, timed.points);
    let expanding = total - decode_secs;
    println!(
        "synth: decoder ({}): {} latent points in {:.2} s: {:.0} points/s (batch {batch})",
        decoder.provider(),
        points,
        decode_secs,
        points as f64 / decode_secs
    );
    println!(
        "synth: expansion + Parquet: {} events over {} windows in {:.2} s: {:.0} events/s",
        summary.events,
        summary.windows,
        expanding,
        summary.events as f64 / expanding
    );
    println!(
        "synth: {users} users x {minutes} min: {:.1} s in all (plan {:.1} s, decode {:.1} s, expand and write {:.1} s); peak RSS {:.2} GiB",
        planning + total,
        planning,
        decode_secs,
        expanding,
        peak_rss_bytes() as f64 / (1u64 << 30) as f64
    );
}
