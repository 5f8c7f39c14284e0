//! Synthetic users' speed: decoding latent points through the committed decoder
//! (onnxruntime, batches of `PF_BENCH_BATCH` [1,024]), and expanding the decoded sequences
//! into events written as Parquet, for `PF_BENCH_USERS` [100,000] users over
//! `PF_BENCH_MINUTES` [60] one-minute windows. The users are drawn from a mixture fitted to
//! seeded latent points (one population, activity `PF_BENCH_ACTIVITY` [0.08], the share of
//! windows a real user of the demo is active in), so the cost is the generator's, not the
//! fit's. The generator decodes with the step decoder, one step per active user-window.
//! Reports the run's latent points and steps decoded per second, events expanded and written
//! per second, the whole run's time, the CPU time the generation used over its wall time (how
//! many cores it kept busy) and the process's peak resident memory; then whole
//! sequences (all `L` steps of `PF_BENCH_SEQUENCES` [100,000] points) decoded per second by the
//! full decoder and by the step decoder.
//!
//! `PF_BENCH_INTRA_THREADS` sets the decoder's intra-op threads [1, as `synth`; 0: all cores],
//! `PF_BENCH_THREADS` the expansion's [0: all cores].
//!
//! Run with `cargo bench --bench synth` (it does nothing under `cargo test`); needs the
//! onnxruntime of `scripts/setup-onnxruntime.sh`.

use personaflow_models::decoder::{VaeDecoder, VaeDecoderStep, DECODER_FILE, DECODER_STEP_FILE};
use personaflow_models::SessionOptions;
use personaflow_operators::WindowSpec;
use personaflow_synth::generate::{
    generate, generate_events, plan, Decoder, SynthOptions, DEFAULT_DECODE_BATCH,
};
use personaflow_synth::population::Population;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::time::Instant;

mod common;
use common::env_or;

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

/// CPU seconds this process has used (all its threads), from `/proc/self/stat` (ticks of
/// `USER_HZ`, 100 on Linux).
fn process_cpu_secs() -> f64 {
    const USER_HZ: f64 = 100.0;
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command's closing parenthesis; utime and stime are the 12th
            // and 13th of them.
            let rest = &s[s.rfind(')')? + 1..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?)
        })
        .map_or(0.0, |ticks| ticks / USER_HZ)
}

/// The decoder, timed.
struct Timed<'a> {
    inner: &'a mut VaeDecoderStep,
    secs: f64,
    steps: usize,
}

impl Decoder for Timed<'_> {
    fn sequence_len(&self) -> usize {
        self.inner.info().sequence_len
    }
    fn hidden(&self) -> usize {
        self.inner.hidden()
    }
    fn step(
        &mut self,
        batch: usize,
        z: &[f32],
        h: &[f32],
        first: &[f32],
    ) -> personaflow_synth::Result<(Vec<f32>, Vec<f32>)> {
        let t = Instant::now();
        let out = <VaeDecoderStep as Decoder>::step(self.inner, batch, z, h, first);
        self.secs += t.elapsed().as_secs_f64();
        self.steps += batch;
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
    let batch: usize = env_or("PF_BENCH_BATCH", DEFAULT_DECODE_BATCH);
    let activity: f32 = env_or("PF_BENCH_ACTIVITY", 0.08);
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("models/onnx")
        .join(DECODER_STEP_FILE);
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let session = SessionOptions {
        intra_threads: match env_or("PF_BENCH_INTRA_THREADS", 1) {
            0 => cores,
            n => n,
        },
        ..SessionOptions::default()
    };
    let mut decoder = VaeDecoderStep::open(&path, &session).expect("the decoder");
    let d = decoder.info().latent_dims;
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let population = Population {
        name: "bench".into(),
        segment: Some("gamer".into()),
        user_windows: 5_000,
        keys: Vec::new(),
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
        volume: None,
        threads: env_or("PF_BENCH_THREADS", 0),
        residuals: Default::default(),
    };
    let started = Instant::now();
    let planned = plan(&[population], &options).expect("plans");
    let planning = started.elapsed().as_secs_f64();
    let out = tempfile::tempdir().expect("a temporary directory");
    let mut timed = Timed {
        inner: &mut decoder,
        secs: 0.0,
        steps: 0,
    };
    let t = Instant::now();
    let cpu = process_cpu_secs();
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
    let cpu = process_cpu_secs() - cpu;
    let (decode_secs, steps) = (timed.secs, timed.steps);
    let expanding = total - decode_secs;
    println!(
        "synth: decoder ({}): {users} latent points, {steps} steps decoded (one per active \
         user-window) in {:.2} s: {:.0} latent points/s, {:.0} steps/s (batch {batch})",
        decoder.provider(),
        decode_secs,
        users as f64 / decode_secs,
        steps as f64 / decode_secs
    );
    println!(
        "synth: expansion + Parquet: {} events over {} windows in {:.2} s: {:.0} events/s",
        summary.events,
        summary.windows,
        expanding,
        summary.events as f64 / expanding
    );
    println!(
        "synth: {users} users x {minutes} min: {:.1} s in all (plan {:.1} s, decode {:.1} s, expand and write {:.1} s; generating used {cpu:.1} CPU s, {:.2} of {cores} cores); peak RSS {:.2} GiB",
        planning + total,
        planning,
        decode_secs,
        expanding,
        cpu / total,
        peak_rss_bytes() as f64 / (1u64 << 30) as f64
    );
    // The same users again, expanded but not written: what the Parquet writing costs.
    let mut timed = Timed {
        inner: &mut decoder,
        secs: 0.0,
        steps: 0,
    };
    let t = Instant::now();
    let (_, expanded) =
        generate_events(&planned, &mut timed, &options, &mut |_, _| Ok(true)).expect("generates");
    let expand_only = t.elapsed().as_secs_f64() - timed.secs;
    println!(
        "synth: expansion alone (not written): {expanded} events in {expand_only:.2} s: {:.0} events/s; \
         decoding without the writer thread {:.0} latent points/s, {:.0} steps/s",
        expanded as f64 / expand_only,
        users as f64 / timed.secs,
        timed.steps as f64 / timed.secs
    );
    // Whole sequences: every step of every point, full decoder against step decoder.
    let n: usize = env_or("PF_BENCH_SEQUENCES", 100_000);
    let z: Vec<f32> = (0..n * d)
        .map(|_| rng.random::<f32>() * 2.0 - 1.0)
        .collect();
    let full_path = path.with_file_name(DECODER_FILE);
    let mut full = VaeDecoder::open(&full_path, &session).expect("the decoder");
    let l = full.info().sequence_len;
    let t = Instant::now();
    for c in z.chunks(batch * d) {
        full.decode(c.len() / d, c).expect("decodes");
    }
    let full_rate = n as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let hidden = decoder.hidden();
    for c in z.chunks(batch * d) {
        let b = c.len() / d;
        let mut h = vec![0f32; b * hidden];
        for s in 0..l {
            let first = vec![f32::from(u8::from(s == 0)); b];
            h = decoder.step(b, c, &h, &first).expect("steps").1;
        }
    }
    let step_rate = n as f64 / t.elapsed().as_secs_f64();
    println!(
        "synth: whole sequences ({l} steps): {n} points, full decoder {full_rate:.0} points/s, \
         step decoder {step_rate:.0} points/s"
    );
}
