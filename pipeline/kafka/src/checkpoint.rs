//! The continuous job's checkpoint: which windows it has emitted, and where each partition
//! must be read again from to rebuild the windowed state, written atomically into the output
//! directory (`_checkpoint.json`) before offsets are committed.
//!
//! On restart the job reads it, removes window files of windows it does not cover (a crash
//! can leave some windows half-written: they are written again, whole), resumes the operator
//! state stored as of `emitted_through` ([`personaflow_dataflow::snapshot`]), rewinds every partition to its
//! rewind offset, and never writes a window at or before `emitted_through` again.

use crate::{Error, Result};
use personaflow_io::atomic_file::write_atomically;
use personaflow_io::window_file::{cut_window_file, window_range_of_file};
use personaflow_io::InputErrorKind;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// File name of the checkpoint in the output directory.
pub const CHECKPOINT_FILE: &str = "_checkpoint.json";
/// Version of the checkpoint format.
pub const CHECKPOINT_VERSION: u32 = 1;

/// Where one partition stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionCheckpoint {
    /// The offset committed to the group: the first message whose effect is not yet in
    /// durable output.
    pub committed: i64,
    /// The first offset to read again on restart: the smallest offset of an event in a window
    /// the state of the next window depends on (`committed` when there is none).
    pub rewind: i64,
}

/// The checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Format version.
    pub version: u32,
    /// Input topic.
    pub topic: String,
    /// Consumer group.
    pub group: String,
    /// Window length, ms: a checkpoint of another window length is refused.
    pub window_ms: i64,
    /// Every window up to this index (inclusive) has been emitted; `None`: none yet.
    pub emitted_through: Option<u64>,
    /// End of the last emitted window, RFC 3339 (for people).
    pub emitted_through_end: Option<String>,
    /// The job's watermark when written, ms.
    pub watermark_ms: Option<i64>,
    /// Partitions by number.
    pub partitions: BTreeMap<i32, PartitionCheckpoint>,
    /// Workers whose operator state files (`_state/`, one per worker) hold the state as of
    /// `emitted_through`; `None` in checkpoints of versions that stored no operator state.
    #[serde(default)]
    pub state_workers: Option<usize>,
}

impl Checkpoint {
    /// The checkpoint in `dir` (`None` when there is none).
    pub fn load(dir: &Path) -> Result<Option<Checkpoint>> {
        let path = dir.join(CHECKPOINT_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&path, e)),
        };
        let c: Checkpoint = serde_json::from_str(&text).map_err(|e| {
            personaflow_io::Error::bad_input(
                &path,
                InputErrorKind::NotA {
                    what: "personaflow checkpoint",
                    reason: e.to_string(),
                },
            )
        })?;
        if c.version != CHECKPOINT_VERSION {
            let kind = InputErrorKind::Version {
                what: "checkpoint",
                found: c.version,
                expected: CHECKPOINT_VERSION,
            };
            return Err(personaflow_io::Error::bad_input(path, kind).into());
        }
        Ok(Some(c))
    }

    /// Writes the checkpoint into `dir` atomically (a temporary file renamed over the old
    /// one), fsyncing the file and the directory when `fsync`.
    pub fn store(&self, dir: &Path, fsync: bool) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).expect("checkpoint serialises");
        Ok(write_atomically(&dir.join(CHECKPOINT_FILE), &json, fsync)?)
    }
}

/// Removes, under `dir`, the windows ending after `emitted_through_end_ms` (all of them when
/// `None`) and leftover temporary files: what a crash may have left half-done. A window file
/// of windows on both sides is cut at `emitted_through_end_ms`
/// ([`cut_window_file`]). Returns the files removed or cut.
pub fn remove_unemitted(dir: &Path, emitted_through_end_ms: Option<i64>) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(removed);
    };
    // Listed first: a cut writes a file into the directory being read.
    let entries = entries
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| Error::io(dir, e))?;
    for path in entries {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        if path.is_dir() {
            removed.extend(remove_unemitted(&path, emitted_through_end_ms)?);
            continue;
        }
        if name.starts_with('.') && name.ends_with(".tmp") {
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
            removed.push(path);
            continue;
        }
        let Some((first, last)) = window_range_of_file(&name) else {
            continue;
        };
        match emitted_through_end_ms {
            Some(e) if last <= e => {}
            Some(e) if first <= e && name.ends_with(".parquet") => {
                cut_window_file(&path, e, true)?;
                removed.push(path);
            }
            _ => {
                std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
                removed.push(path);
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names of the files in `dir`, sorted.
    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn checkpoints_round_trip_atomically() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Checkpoint::load(dir.path()).unwrap(), None);
        let c = Checkpoint {
            version: CHECKPOINT_VERSION,
            topic: "events".into(),
            group: "g".into(),
            window_ms: 60_000,
            emitted_through: Some(7),
            emitted_through_end: None,
            watermark_ms: Some(480_000),
            partitions: [(
                0,
                PartitionCheckpoint {
                    committed: 10,
                    rewind: 3,
                },
            )]
            .into(),
            state_workers: Some(2),
        };
        c.store(dir.path(), true).unwrap();
        assert_eq!(Checkpoint::load(dir.path()).unwrap(), Some(c));
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![CHECKPOINT_FILE], "no temporary file is left");
        std::fs::write(dir.path().join(CHECKPOINT_FILE), "{").unwrap();
        let err = Checkpoint::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains(CHECKPOINT_FILE), "{err}");
    }

    #[test]
    fn unemitted_window_files_and_temporaries_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("profiles/date=2026-01-05");
        std::fs::create_dir_all(&part).unwrap();
        for name in [
            "w60000-000.parquet",
            "w120000-001.parquet",
            "w180000-000.parquet",
            ".w180000-001.parquet.tmp",
            "notes.txt",
        ] {
            std::fs::write(part.join(name), b"x").unwrap();
        }
        let removed = remove_unemitted(dir.path(), Some(120_000)).unwrap();
        assert_eq!(removed.len(), 2);
        assert_eq!(
            names_in(&part),
            vec!["notes.txt", "w120000-001.parquet", "w60000-000.parquet"]
        );
    }

    #[test]
    fn window_files_of_several_windows_are_cut_at_the_checkpoint() {
        use crate::output::tests::resonance_batch;
        use personaflow_io::window_file::write_window_file;
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("resonance/date=1970-01-01");
        let window = |end: i64| (end, resonance_batch(end, "u", 2));
        let windows: Vec<_> = [60_000, 120_000, 180_000].map(window).into();
        write_window_file(&part, 0, &windows[..2], 10, false).unwrap();
        write_window_file(&part, 1, &windows, 10, false).unwrap();
        write_window_file(&part, 2, &windows[2..], 10, false).unwrap();
        let removed = remove_unemitted(dir.path(), Some(120_000)).unwrap();
        assert_eq!(removed.len(), 2, "{removed:?}");
        assert_eq!(
            names_in(&part),
            vec!["w60000-120000-000.parquet", "w60000-120000-001.parquet"],
            "the straddling file is cut, the later one removed, the earlier one kept"
        );
        let rows = |name: &str| {
            let f = std::fs::File::open(part.join(name)).unwrap();
            parquet::file::reader::FileReader::metadata(
                &parquet::file::reader::SerializedFileReader::new(f).unwrap(),
            )
            .file_metadata()
            .num_rows()
        };
        assert_eq!(rows("w60000-120000-001.parquet"), 4);
        assert!(remove_unemitted(dir.path(), Some(120_000))
            .unwrap()
            .is_empty());
    }
}
