//! Fuzzing, on the stable toolchain, of every decoder that reads untrusted bytes: Kafka JSON
//! records, CSV, TSV, whitespace text and Zeek logs, NDJSON, ingest mappings, configuration
//! and durations. Each target gets raw bytes and mutations of valid inputs (bytes flipped,
//! inserted, deleted, lines duplicated or cut), from a seeded generator.
//!
//! The property is the same everywhere: no panic, and every input is decoded or refused with
//! a reason. Records: each is an event (which then satisfies the validation rules: time in
//! range, user and action present, bounded bytes and latency) or a reject with a reason;
//! files that cannot be read as a whole are a clean error naming the file.
//!
//! `cargo test -p personaflow-pipeline --test fuzz` runs a short seeded pass (CI does);
//! `PERSONAFLOW_FUZZ_CASES=1000000 cargo test --release -p personaflow-pipeline --test fuzz`
//! runs a million cases per target (BENCHMARKS.md has the run). `PERSONAFLOW_FUZZ_SEED`
//! picks another seed.

use personaflow_dataflow::config::{format_duration_ms, parse_duration_ms, Config};
use personaflow_io::source::{
    open_bytes, Chunk, Format, IngestMapping, JsonRecordDecoder, MAX_EVENT_BYTES,
    MAX_EVENT_LATENCY_MS, MAX_EVENT_TS_MS,
};
use personaflow_operators::Event;
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, RngSeed, TestRunner};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Cases per target in the default (CI) pass.
const DEFAULT_CASES: u32 = 2_000;
/// Seed of the default pass.
const DEFAULT_SEED: u64 = 0x5eed_f022;
/// Longest generated input, bytes.
const MAX_INPUT: usize = 2_048;

/// A seeded runner of `PERSONAFLOW_FUZZ_CASES` cases.
fn runner() -> TestRunner {
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let cases = env("PERSONAFLOW_FUZZ_CASES").map_or(DEFAULT_CASES, |c| c as u32);
    let seed = env("PERSONAFLOW_FUZZ_SEED").unwrap_or(DEFAULT_SEED);
    TestRunner::new(RunnerConfig {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        max_shrink_iters: 2_000,
        ..RunnerConfig::default()
    })
}

/// Runs `target` on inputs from `strategy`, then prints the cases run.
fn fuzz<S: Strategy>(name: &str, strategy: S, target: impl Fn(S::Value) + std::panic::RefUnwindSafe)
where
    S::Value: std::fmt::Debug,
{
    let ran = AtomicU64::new(0);
    let result = runner().run(&strategy, |input| {
        ran.fetch_add(1, Ordering::Relaxed);
        target(input);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
    eprintln!(
        "fuzz {name}: {} cases, no failure",
        ran.load(Ordering::Relaxed)
    );
}

/// One mutation of a byte string.
#[derive(Clone, Debug)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, u8),
    Delete(usize, usize),
    DuplicateLine(usize),
    Truncate(usize),
    Splice(usize, Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    // Bytes that matter to the decoders more often than others.
    let special = prop_oneof![
        any::<u8>(),
        Just(b'"'),
        Just(b','),
        Just(b'\t'),
        Just(b'\n'),
        Just(b'\r'),
        Just(b'#'),
        Just(b'{'),
        Just(b'}'),
        Just(0u8),
        Just(0xFF),
    ];
    let snippets = prop_oneof![
        Just(b"\"".to_vec()),
        Just(b"18446744073709551615".to_vec()),
        Just(b"-1".to_vec()),
        Just(b"1e308".to_vec()),
        Just(b"NaN".to_vec()),
        Just(b"\xEF\xBB\xBF".to_vec()),
        Just(b"\xFF\xFE".to_vec()),
        Just(b"\x1f\x8b".to_vec()),
        Just(b"#fields\tts\tuid".to_vec()),
        Just(b"9999-99-99T99:99:99Z".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..16),
    ];
    prop_oneof![
        (any::<usize>(), special.clone()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), special).prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<usize>(), 1..8usize).prop_map(|(i, n)| Mutation::Delete(i, n)),
        any::<usize>().prop_map(Mutation::DuplicateLine),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), snippets).prop_map(|(i, s)| Mutation::Splice(i, s)),
    ]
}

fn apply(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let at = |i: usize, len: usize| if len == 0 { 0 } else { i % (len + 1) };
        match m {
            Mutation::Flip(i, b) if !bytes.is_empty() => {
                let n = bytes.len();
                bytes[i % n] = *b;
            }
            Mutation::Insert(i, b) => {
                let p = at(*i, bytes.len());
                bytes.insert(p, *b);
            }
            Mutation::Delete(i, n) if !bytes.is_empty() => {
                let p = i % bytes.len();
                let end = (p + n).min(bytes.len());
                bytes.drain(p..end);
            }
            Mutation::DuplicateLine(i) => {
                let lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
                let line = lines[i % lines.len()].to_vec();
                let p = at(*i, bytes.len());
                let mut dup = line;
                dup.push(b'\n');
                bytes.splice(p..p, dup);
            }
            Mutation::Truncate(i) => {
                let p = at(*i, bytes.len());
                bytes.truncate(p);
            }
            Mutation::Splice(i, s) => {
                let p = at(*i, bytes.len());
                bytes.splice(p..p, s.iter().copied());
            }
            _ => {}
        }
        bytes.truncate(MAX_INPUT * 2);
    }
    bytes
}

/// Raw bytes, or a valid input from `corpus` with up to 8 mutations.
fn inputs(corpus: &'static [&'static [u8]]) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => proptest::collection::vec(any::<u8>(), 0..MAX_INPUT),
        3 => (0..corpus.len(), proptest::collection::vec(mutation(), 0..8))
            .prop_map(move |(i, m)| apply(corpus[i].to_vec(), &m)),
    ]
}

/// Checks that an accepted event obeys the validation rules.
fn check_event(e: &Event) {
    assert!(
        (0..=MAX_EVENT_TS_MS).contains(&e.ts_ms),
        "time out of range: {e:?}"
    );
    assert!(!e.user_id.trim().is_empty(), "blank user: {e:?}");
    assert!(!e.action.trim().is_empty(), "blank action: {e:?}");
    for b in [e.bytes_in, e.bytes_out].into_iter().flatten() {
        assert!(b <= MAX_EVENT_BYTES, "bytes above the bound: {e:?}");
    }
    if let Some(l) = e.latency_ms {
        assert!(
            l.is_finite() && (0.0..=MAX_EVENT_LATENCY_MS).contains(&l),
            "bad latency: {e:?}"
        );
    }
}

/// Reads `bytes` as `format`: every record is an event or a reject with a reason, or the
/// whole input is a clean error naming the file.
fn read_all(name: &str, bytes: Vec<u8>, format: Format, mapping: &IngestMapping) {
    let mut reader = match open_bytes(name, bytes, format, mapping, 7) {
        Ok(r) => r,
        Err(e) => {
            assert!(
                e.to_string().contains(name),
                "an error names the input: {e}"
            );
            return;
        }
    };
    let mut chunk = Chunk::default();
    loop {
        match reader.next_chunk(&mut chunk) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                assert!(
                    e.to_string().contains(name),
                    "an error names the input: {e}"
                );
                return;
            }
        }
    }
    assert_eq!(
        reader.rows_read(),
        chunk.records() as u64,
        "every record accounted for"
    );
    assert_eq!(chunk.rows.len(), chunk.events.len());
    chunk.events.iter().for_each(check_event);
    for r in &chunk.rejects {
        assert!(
            !r.reason.trim().is_empty(),
            "a reject without a reason: {r:?}"
        );
        assert!(r.row >= 1, "rows are 1-based: {r:?}");
    }
}

const CSV: &[&[u8]] = &[
    b"ts,user_id,action,bytes_in,bytes_out,latency_ms,status,authenticated,segment\n\
      1767571200000,u1,page_view,100,20,12.5,200,true,gamer\n\
      1767571201000,u2,\"quoted, action\",5,0,1,404,false,\n\
      2026-01-05T00:00:02Z,u3,x,,,,,,\n",
    b"ts,user_id,action,note\n1,u,a,\"multi\nline\"\n2,v,b,plain\n",
    b"\xEF\xBB\xBFts,user_id,action\n1767571200,u,a\n",
];
const TSV: &[&[u8]] =
    &[b"ts\tuser_id\taction\tbytes_in\n1767571200000\tu1\tget\t10\n1767571200001\tu2\tput\t-3\n"];
const ZEEK: &[&[u8]] = &[b"#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n\
#unset_field\t-\n#path\tconn\n#fields\tts\tuid\tid.orig_h\tproto\tservice\tduration\torig_bytes\tresp_bytes\n\
#types\ttime\tstring\taddr\tenum\tstring\tinterval\tcount\tcount\n\
1331901000.000000\tCxyz\t192.168.1.1\ttcp\thttp\t0.5\t100\t2000\n\
1331901001.500000\tCabc\t192.168.1.2\tudp\t-\t-\t-\t-\n"];
const NDJSON: &[&[u8]] = &[
    b"{\"ts\": 1767571200000, \"user_id\": \"u1\", \"action\": \"x\", \"bytes_in\": 5}\n\n\
      {\"ts\": \"2026-01-05T00:00:01Z\", \"user_id\": \"u2\", \"action\": \"y\", \"latency_ms\": 3.5}\n\
      {\"ts\": 1, \"user_id\": {\"nested\": 1}, \"action\": \"z\"}\n",
];
const WHITESPACE: &[&[u8]] = &[b"00001 19970101 1 11.77\n00002   19970112  5  77.00\r\n"];

#[test]
fn csv_records_are_decoded_or_rejected() {
    let mapping = IngestMapping::identity();
    fuzz("csv", inputs(CSV), |b| {
        read_all("fuzz.csv", b, Format::Csv, &mapping)
    });
}

#[test]
fn tsv_records_are_decoded_or_rejected() {
    let mapping = IngestMapping::identity();
    fuzz("tsv", inputs(TSV), |b| {
        read_all("fuzz.tsv", b, Format::Tsv, &mapping)
    });
}

#[test]
fn zeek_records_are_decoded_or_rejected() {
    let toml = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/mappings/zeek_conn.toml"),
    )
    .unwrap();
    let mapping = IngestMapping::from_toml_str(&toml, Path::new("zeek_conn.toml")).unwrap();
    fuzz("zeek", inputs(ZEEK), |b| {
        read_all("conn.log", b, Format::Zeek, &mapping)
    });
}

#[test]
fn whitespace_records_are_decoded_or_rejected() {
    let toml = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/mappings/cdnow.toml"),
    )
    .unwrap()
    .replace("has_header = true", "has_header = false");
    let mapping = IngestMapping::from_toml_str(&toml, Path::new("cdnow.toml")).unwrap();
    fuzz("whitespace", inputs(WHITESPACE), |b| {
        read_all("cdnow.txt", b, Format::Whitespace, &mapping)
    });
}

#[test]
fn ndjson_records_are_decoded_or_rejected() {
    let mapping = IngestMapping::identity();
    fuzz("ndjson", inputs(NDJSON), |b| {
        read_all("fuzz.ndjson", b, Format::Ndjson, &mapping)
    });
}

#[test]
fn gzip_inputs_are_decoded_or_refused() {
    use std::io::Write as _;
    let mapping = IngestMapping::identity();
    let gz = |b: Vec<u8>| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&b).unwrap();
        e.finish().unwrap()
    };
    // Valid gzip of mutated CSV, and mutated gzip bytes.
    let strategy = prop_oneof![
        inputs(CSV).prop_map(gz),
        (inputs(CSV), proptest::collection::vec(mutation(), 1..4))
            .prop_map(move |(b, m)| apply(gz(b), &m)),
    ];
    fuzz("gzip", strategy, |b| {
        read_all("fuzz.csv.gz", b, Format::Csv, &mapping)
    });
}

const RECORDS: &[&[u8]] = &[
    b"{\"ts\": 1767571201000, \"user_id\": \"u\", \"action\": \"a\", \"bytes_in\": 10}",
    b"{\"ts\": \"2026-01-05T00:00:01Z\", \"user_id\": \"u\", \"action\": \"a\", \"authenticated\": true, \"segment\": \"gamer\", \"status\": 500, \"latency_ms\": 12.25}",
];

#[test]
fn kafka_json_records_are_decoded_or_rejected_with_a_reason() {
    let decoder = JsonRecordDecoder::new(&IngestMapping::identity()).unwrap();
    fuzz("json-record", inputs(RECORDS), |b| {
        match decoder.decode(&b) {
            Ok(e) => check_event(&e),
            Err(e) => assert!(!e.reason.trim().is_empty(), "no reason for {b:?}"),
        }
    });
}

const MAPPINGS: &[&[u8]] = &[
    b"format = \"whitespace\"\n[text]\nhas_header = false\ncolumn_names = [\"a\", \"b\", \"c\"]\n\
      [columns]\nuser_id = \"a\"\nts = \"b\"\nbytes_in = \"c\"\n[constants]\naction = \"buy\"\n\
      [scale]\nbytes_in = 100.0\n[timestamp]\nformat = \"%Y%m%d\"\n",
    b"[columns]\nuser_id = \"id.orig_h\"\n[timestamp]\nunit = \"s\"\nnull_markers = [\"-\"]\n",
];

#[test]
fn ingest_mappings_are_parsed_or_refused_with_a_reason() {
    fuzz("mapping", inputs(MAPPINGS), |b| {
        let text = String::from_utf8_lossy(&b);
        match IngestMapping::from_toml_str(&text, Path::new("m.toml")) {
            // A valid mapping compiles, and decodes a record without panicking.
            Ok(m) => {
                if let Ok(d) = JsonRecordDecoder::new(&m) {
                    let _ = d.decode(br#"{"ts": 1, "user_id": "u", "action": "a", "b": "1"}"#);
                }
            }
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    msg.starts_with("m.toml: ") && !msg.contains('\n'),
                    "{msg:?}"
                );
            }
        }
    });
}

const CONFIGS: &[&[u8]] = &[
    b"[window]\nlength = \"30s\"\n[sequence]\nlength = 8\n[segments]\nwindow = 30\n\
      [resonance]\ntemperature = 0.2\n[ingest]\nmax_out_of_order = \"2m\"\nmax_outliers = 3\n\
      [personas]\nk = 4\n[drift]\nbaseline = 20\nrecent = 5\n[scaling]\nhorizon = 10\n",
    b"[stream]\nbrokers = \"127.0.0.1:9092\"\noutput_topics = [\"profiles\"]\nidle_timeout = 1000\n",
];

#[test]
fn configurations_are_loaded_or_refused_naming_the_source() {
    fuzz("config", inputs(CONFIGS), |b| {
        let text = String::from_utf8_lossy(&b);
        match Config::from_toml_str(&text, Some(Path::new("job.toml")), []) {
            Ok(c) => assert!(c.validate().is_ok()),
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    msg.starts_with("job.toml: ") && !msg.contains('\n'),
                    "{msg:?}"
                );
            }
        }
    });
}

#[test]
fn durations_parse_or_are_refused_and_round_trip() {
    let strategy = prop_oneof![
        "[0-9]{0,22}(ms|s|m|min|h|d|x|)",
        "[ -~]{0,24}",
        any::<i64>().prop_map(|v| v.to_string()),
    ];
    fuzz("duration", strategy, |s: String| {
        if let Ok(ms) = parse_duration_ms(&s) {
            assert_eq!(parse_duration_ms(&format_duration_ms(ms)), Ok(ms), "{s:?}");
        }
    });
}
