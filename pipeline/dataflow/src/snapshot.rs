//! The continuous job's operator state: what the persona model, the persona pins and the drift
//! detectors (with their demand histories) hold after a window, one file per worker
//! (`_state/w{window_end_ms}-{worker}.state` in the output directory), written atomically before
//! a checkpoint names that window.
//!
//! The format is compact binary: the magic bytes `PFSTATE\0`, the format version (u32), the
//! payload's length (u64) and FNV-1a hash (u64), all little-endian, then the payload, the
//! [`postcard`] encoding of the state (floats as their 4 or 8 bytes, so they come back bit for
//! bit). A file whose hash does not match is refused as corrupt. Files of version 1 (JSON,
//! `.json`) are still read, so a job resumes from a checkpoint of the version before.
//!
//! The rest of the dataflow's state is windowed and rebuilt on restart by replaying the last
//! `L + W (+ R)` windows of events; these operators remember the whole stream, so they are
//! stored, and so are active-history sequence rings (as of the window before the replay).
//! Files of version 2 (without rings) are still read.
//! On restart the files of the checkpoint's window are merged and split again between the
//! workers ([`OperatorState::for_worker`]), whose number may have changed.

use crate::graph::OperatorState;
use crate::{Error, Result, StateFileError};
use personaflow_io::atomic_file::write_atomically;
use personaflow_operators::drift::operator::DriftState;
use personaflow_operators::personas::pin::PinState;
use personaflow_operators::personas::PersonaModel;
use personaflow_operators::sequences::{HeldWindow, SequenceState};
use personaflow_operators::window::features::{Fnv, WindowSummary};
use personaflow_operators::WindowSpec;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Directory of the state files in the output directory.
pub const STATE_DIR: &str = "_state";
/// Version of the state file format (3: the active-history sequence rings were added; 4: a
/// ring holds what sequences read of each window, [`HeldWindow`], not the whole summary).
pub const STATE_VERSION: u32 = 4;
/// The version before, whose rings held whole window summaries: still read.
const V3_STATE_VERSION: u32 = 3;
/// The binary version before that, without sequence rings: still read.
const V2_STATE_VERSION: u32 = 2;
/// The version of the JSON files written before.
const JSON_STATE_VERSION: u32 = 1;
/// The first bytes of a state file.
const MAGIC: &[u8; 8] = b"PFSTATE\0";
/// Bytes of the header: magic, version, length, hash.
const HEADER_BYTES: usize = 8 + 4 + 8 + 8;

/// One worker's state file.
#[derive(Debug, Serialize, Deserialize)]
struct StateFile {
    version: u32,
    /// The worker that wrote it, of `workers`.
    worker: usize,
    workers: usize,
    state: OperatorState,
}

/// A state file of version 2 (the same, without sequence rings).
#[derive(Debug, Serialize, Deserialize)]
struct StateFileV2 {
    version: u32,
    worker: usize,
    workers: usize,
    state: OperatorStateV2,
}

/// [`OperatorState`] as version 2 wrote it.
#[derive(Debug, Serialize, Deserialize)]
struct OperatorStateV2 {
    window: u64,
    personas: Option<PersonaModel>,
    pins: PinState,
    drift: DriftState,
}

/// Version 2 read as version 3 without rings (and from there as the current version).
impl From<StateFileV2> for StateFileV3 {
    fn from(v2: StateFileV2) -> Self {
        let s = v2.state;
        StateFileV3 {
            version: v2.version,
            worker: v2.worker,
            workers: v2.workers,
            state: OperatorStateV3 {
                window: s.window,
                personas: s.personas,
                pins: s.pins,
                drift: s.drift,
                sequences: None,
            },
        }
    }
}

/// A state file of version 3 (rings of whole window summaries).
#[derive(Debug, Serialize, Deserialize)]
struct StateFileV3 {
    version: u32,
    worker: usize,
    workers: usize,
    state: OperatorStateV3,
}

/// [`OperatorState`] as version 3 wrote it.
#[derive(Debug, Serialize, Deserialize)]
struct OperatorStateV3 {
    window: u64,
    personas: Option<PersonaModel>,
    pins: PinState,
    drift: DriftState,
    sequences: Option<SequenceStateV3>,
}

/// [`SequenceState`] as version 3 wrote it.
#[derive(Debug, Serialize, Deserialize)]
struct SequenceStateV3 {
    users: BTreeMap<String, Vec<(u64, WindowSummary)>>,
    swept: u64,
}

impl From<StateFileV3> for StateFile {
    fn from(v3: StateFileV3) -> Self {
        let s = v3.state;
        StateFile {
            version: v3.version,
            worker: v3.worker,
            workers: v3.workers,
            state: OperatorState {
                window: s.window,
                personas: s.personas,
                pins: s.pins,
                drift: s.drift,
                sequences: s.sequences.map(|q| SequenceState {
                    users: q
                        .users
                        .into_iter()
                        .map(|(u, ring)| {
                            let ring = ring.iter().map(|(w, s)| (*w, HeldWindow::from(s)));
                            (u, ring.collect())
                        })
                        .collect(),
                    swept: q.swept,
                }),
            },
        }
    }
}

/// The state file of `worker` for the window `window`.
pub fn state_path(output: &Path, spec: WindowSpec, window: u64, worker: usize) -> PathBuf {
    output
        .join(STATE_DIR)
        .join(format!("w{}-{worker:03}.state", spec.end_ms(window)))
}

/// The file of version 1 (JSON) of `worker` for the window `window`.
fn json_state_path(output: &Path, spec: WindowSpec, window: u64, worker: usize) -> PathBuf {
    state_path(output, spec, window, worker).with_extension("json")
}

/// Encodes a state file: header and payload.
fn encode(file: &StateFile) -> std::result::Result<Vec<u8>, postcard::Error> {
    let payload = postcard::to_stdvec(file)?;
    let mut hash = Fnv::default();
    hash.write(&payload);
    let mut out = Vec::with_capacity(HEADER_BYTES + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&STATE_VERSION.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&hash.finish().to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Decodes a state file, checking its header and hash.
fn decode(bytes: &[u8]) -> std::result::Result<StateFile, StateFileError> {
    if bytes.len() < HEADER_BYTES || &bytes[..8] != MAGIC {
        return Err(StateFileError::NoHeader);
    }
    let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if ![STATE_VERSION, V3_STATE_VERSION, V2_STATE_VERSION].contains(&version) {
        return Err(StateFileError::Version {
            found: version,
            expected: STATE_VERSION,
        });
    }
    let (len, want) = (word(12), word(20));
    let payload = &bytes[HEADER_BYTES..];
    if payload.len() as u64 != len {
        return Err(StateFileError::Truncated {
            found: payload.len() as u64,
            expected: len,
        });
    }
    let mut hash = Fnv::default();
    hash.write(payload);
    if hash.finish() != want {
        return Err(StateFileError::HashMismatch);
    }
    let undecodable = |e: postcard::Error| StateFileError::Undecodable(e.to_string());
    if version == V2_STATE_VERSION {
        return postcard::from_bytes::<StateFileV2>(payload)
            .map(|v2| StateFile::from(StateFileV3::from(v2)))
            .map_err(undecodable);
    }
    if version == V3_STATE_VERSION {
        return postcard::from_bytes::<StateFileV3>(payload)
            .map(StateFile::from)
            .map_err(undecodable);
    }
    postcard::from_bytes(payload).map_err(undecodable)
}

/// Writes the state of `worker` (of `workers`) atomically, fsyncing when `fsync`. Returns the
/// bytes written.
pub fn store(
    output: &Path,
    spec: WindowSpec,
    worker: usize,
    workers: usize,
    state: &OperatorState,
    fsync: bool,
) -> Result<u64> {
    let path = state_path(output, spec, state.window, worker);
    let dir = path.parent().expect("state files live in a directory");
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let file = StateFile {
        version: STATE_VERSION,
        worker,
        workers,
        state: state.clone(),
    };
    let bytes = encode(&file).map_err(|e| Error::StateFile {
        path: path.clone(),
        kind: StateFileError::Unencodable(e.to_string()),
    })?;
    write_atomically(&path, &bytes, fsync)?;
    Ok(bytes.len() as u64)
}

/// The state as of `window`, merged from the files of its `workers` workers: an error names a
/// missing or unreadable file.
pub fn load(output: &Path, spec: WindowSpec, window: u64, workers: usize) -> Result<OperatorState> {
    let mut parts = Vec::with_capacity(workers);
    for worker in 0..workers {
        let mut path = state_path(output, spec, window, worker);
        let json = json_state_path(output, spec, window, worker);
        let legacy = !path.exists() && json.exists();
        if legacy {
            path = json;
        }
        let bad = |kind: StateFileError| Error::StateFile {
            path: path.clone(),
            kind,
        };
        let bytes = std::fs::read(&path).map_err(|e| bad(StateFileError::Unreadable(e)))?;
        let file: StateFile = if legacy {
            let file: StateFile = serde_json::from_slice(&bytes)
                .map_err(|e| bad(StateFileError::Undecodable(e.to_string())))?;
            if file.version != JSON_STATE_VERSION {
                return Err(bad(StateFileError::Version {
                    found: file.version,
                    expected: JSON_STATE_VERSION,
                }));
            }
            file
        } else {
            decode(&bytes).map_err(bad)?
        };
        let found = (file.worker, file.workers, file.state.window);
        if found != (worker, workers, window) {
            return Err(bad(StateFileError::OtherPart {
                found,
                expected: (worker, workers, window),
            }));
        }
        parts.push(file.state);
    }
    OperatorState::merge(window, parts)
}

/// Removes the state files of windows ending before `keep_end_ms` (superseded by a newer
/// checkpoint). Returns how many were removed.
pub fn remove_before(output: &Path, keep_end_ms: i64) -> Result<usize> {
    let dir = output.join(STATE_DIR);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(0);
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(&dir, e))?;
        let name = entry.file_name().to_string_lossy().to_string();
        let end = personaflow_io::writer::window_end_of_file(&name);
        if end.is_some_and(|end| end < keep_end_ms) {
            let path = entry.path();
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use personaflow_operators::drift::operator::{window_drift, DriftState, Scope, ScopeMember};
    use personaflow_operators::drift::scaling::ScalingConfig;
    use personaflow_operators::drift::DriftConfig;
    use personaflow_operators::personas::Centroid;
    use personaflow_operators::sequences::{SequenceHistories, SequenceSpec, SequenceState};
    use personaflow_operators::vector::Vector;
    use personaflow_operators::window::features::{WindowAgg, WindowSummary};
    use personaflow_operators::Event;

    fn state(window: u64, users: &[&str], model: bool) -> OperatorState {
        let mut pins = PinState::default();
        for (i, u) in users.iter().enumerate() {
            pins.pins.insert((*u).into(), (i as u32, window));
        }
        OperatorState {
            window,
            personas: model.then(|| PersonaModel {
                centroids: vec![Centroid {
                    id: 3,
                    // Values whose shortest decimal form is long: they must come back exactly.
                    centre: vec![0.1, 1.0 / 3.0, f32::MIN_POSITIVE, -7.123_456_7e-12],
                    count: 2.0f64.sqrt() * 1e7,
                }],
                next_id: 4,
                selected_at: Some(window),
            }),
            pins,
            drift: drift_state(window),
            sequences: Some(sequence_state(users)),
        }
    }

    /// `user`'s summary of window `w`.
    fn summary(user: &str, w: u64) -> WindowSummary {
        let mut e = Event::new(w as i64 * 60_000, user, "a");
        e.bytes_in = Some(w * 7);
        WindowSummary::new(&WindowAgg::of(&e), w, &WindowSpec::default())
    }

    /// Active-history rings of `users` (length 2) pushed windows 1, 4 and 6: windows 4 and 6.
    fn sequence_state(users: &[&str]) -> SequenceState {
        let mut h = SequenceHistories::with_spec(SequenceSpec::active(2, 50));
        for w in [1u64, 4, 6] {
            for u in users {
                h.push(u, w, summary(u, w));
            }
        }
        h.state()
    }

    /// A state file of `version` around `payload`, framed as [`encode`] frames one.
    fn framed(version: u32, payload: &[u8]) -> Vec<u8> {
        let mut hash = Fnv::default();
        hash.write(payload);
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&version.to_le_bytes());
        bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&hash.finish().to_le_bytes());
        bytes.extend_from_slice(payload);
        bytes
    }

    /// A drift state with a detector and a demand history per segment, after `windows`
    /// windows of members.
    fn drift_state(windows: u64) -> DriftState {
        let mut state = DriftState::default();
        let config = DriftConfig::default();
        let scaling = ScalingConfig::default();
        for w in 0..windows {
            let mut members = Vec::new();
            for s in ["a", "b"] {
                for u in 0..5u32 {
                    let x = (u as f32 + w as f32) / 7.0;
                    let m = ScopeMember {
                        embedding: Vector(vec![x, 1.0 / 3.0]),
                        features: Vector(vec![x; 3]),
                        requests: u as u64 + 1,
                        forecast: Some(Vector(vec![x * 3.0; 4])),
                    };
                    members.push(((Scope::Segment(s.into()), format!("u{u}").into()), m));
                }
            }
            window_drift(&mut state, w, &members, &config, &scaling);
        }
        state
    }

    #[test]
    fn states_round_trip_exactly_merge_and_split_again() {
        let dir = tempfile::tempdir().unwrap();
        let spec = WindowSpec::default();
        let whole = state(9, &["a", "b", "c", "d", "e"], true);
        assert_eq!(whole.drift.detectors.len(), 2);
        // Written by 2 workers, read back by 3.
        for w in 0..2 {
            let part = whole.for_worker(w, 2);
            store(dir.path(), spec, w, 2, &part, true).unwrap();
        }
        let back = load(dir.path(), spec, 9, 2).unwrap();
        assert_eq!(back, whole);
        let parts: Vec<OperatorState> = (0..3).map(|w| back.for_worker(w, 3)).collect();
        assert_eq!(parts.iter().filter(|p| p.personas.is_some()).count(), 1);
        assert_eq!(OperatorState::merge(9, parts).unwrap(), whole);
    }

    #[test]
    fn missing_foreign_and_overlapping_states_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let spec = WindowSpec::default();
        store(dir.path(), spec, 0, 2, &state(4, &["a"], true), false).unwrap();
        let err = load(dir.path(), spec, 4, 2).unwrap_err().to_string();
        assert!(
            err.contains("w300000-001.state") && err.contains("operator state"),
            "{err}"
        );
        // Worker 1's file says it is worker 0's.
        let from = state_path(dir.path(), spec, 4, 0);
        std::fs::copy(&from, state_path(dir.path(), spec, 4, 1)).unwrap();
        let err = load(dir.path(), spec, 4, 2).unwrap_err().to_string();
        assert!(err.contains("holds worker 0 of 2"), "{err}");
        // Two parts holding the same user (or each a persona model) cannot be merged.
        let err = OperatorState::merge(4, vec![state(4, &["a"], false), state(4, &["a"], false)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"a\""), "{err}");
        let err = OperatorState::merge(4, vec![state(4, &[], true), state(4, &[], true)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("persona model"), "{err}");
        std::fs::write(state_path(dir.path(), spec, 4, 1), "{").unwrap();
        let err = load(dir.path(), spec, 4, 2).unwrap_err().to_string();
        assert!(err.contains("not a personaflow operator state"), "{err}");
        // A flipped byte or a cut file is found by the hash and the length.
        store(dir.path(), spec, 1, 2, &state(4, &["b"], false), false).unwrap();
        let path = state_path(dir.path(), spec, 4, 1);
        let good = std::fs::read(&path).unwrap();
        let mut flipped = good.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        std::fs::write(&path, &flipped).unwrap();
        let err = load(dir.path(), spec, 4, 2).unwrap_err().to_string();
        assert!(err.contains("hash does not match"), "{err}");
        std::fs::write(&path, &good[..good.len() - 3]).unwrap();
        let err = load(dir.path(), spec, 4, 2).unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
    }

    #[test]
    fn version_1_json_states_are_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let spec = WindowSpec::default();
        let whole = state(7, &["a", "b"], true);
        let file = StateFile {
            version: JSON_STATE_VERSION,
            worker: 0,
            workers: 1,
            state: whole.clone(),
        };
        let path = json_state_path(dir.path(), spec, 7, 0);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, serde_json::to_vec(&file).unwrap()).unwrap();
        assert_eq!(load(dir.path(), spec, 7, 1).unwrap(), whole);
    }

    #[test]
    fn version_2_states_without_sequence_rings_are_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let spec = WindowSpec::default();
        let whole = state(7, &["a", "b"], true);
        let file = StateFileV2 {
            version: V2_STATE_VERSION,
            worker: 0,
            workers: 1,
            state: OperatorStateV2 {
                window: whole.window,
                personas: whole.personas.clone(),
                pins: whole.pins.clone(),
                drift: whole.drift.clone(),
            },
        };
        let bytes = framed(V2_STATE_VERSION, &postcard::to_stdvec(&file).unwrap());
        let path = state_path(dir.path(), spec, 7, 0);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        let back = load(dir.path(), spec, 7, 1).unwrap();
        assert_eq!(back.sequences, None);
        assert_eq!(
            back,
            OperatorState {
                sequences: None,
                ..whole
            }
        );
    }

    #[test]
    fn version_3_states_with_whole_summaries_in_the_rings_are_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let spec = WindowSpec::default();
        let users = ["a", "b"];
        let whole = state(7, &users, true);
        let rings = users
            .iter()
            .map(|u| (u.to_string(), vec![(4, summary(u, 4)), (6, summary(u, 6))]))
            .collect();
        let file = StateFileV3 {
            version: V3_STATE_VERSION,
            worker: 0,
            workers: 1,
            state: OperatorStateV3 {
                window: whole.window,
                personas: whole.personas.clone(),
                pins: whole.pins.clone(),
                drift: whole.drift.clone(),
                sequences: Some(SequenceStateV3 {
                    users: rings,
                    swept: whole.sequences.as_ref().unwrap().swept,
                }),
            },
        };
        let bytes = framed(V3_STATE_VERSION, &postcard::to_stdvec(&file).unwrap());
        let path = state_path(dir.path(), spec, 7, 0);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(load(dir.path(), spec, 7, 1).unwrap(), whole);
    }

    #[test]
    fn the_binary_state_is_smaller_than_json() {
        let whole = state(40, &["a", "b", "c"], true);
        let file = StateFile {
            version: STATE_VERSION,
            worker: 0,
            workers: 1,
            state: whole,
        };
        let binary = encode(&file).unwrap().len();
        let json = serde_json::to_vec(&file).unwrap().len();
        assert!(binary * 2 < json, "binary {binary} bytes, JSON {json}");
    }

    #[test]
    fn superseded_state_files_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let spec = WindowSpec::default();
        for w in [3, 4, 5] {
            store(dir.path(), spec, 0, 1, &state(w, &["a"], false), false).unwrap();
        }
        assert_eq!(remove_before(dir.path(), spec.end_ms(4)).unwrap(), 1);
        assert!(!state_path(dir.path(), spec, 3, 0).exists());
        assert!(state_path(dir.path(), spec, 4, 0).exists());
        assert!(state_path(dir.path(), spec, 5, 0).exists());
    }
}
