//! The output directory of a batch run: checked before any input is read, written through a
//! staging directory, and committed so that a crash at any moment leaves either the old output
//! or the new one in place, never a mix and never nothing.
//!
//! Beside the output `DIR/NAME` a run keeps, all in `DIR`:
//!
//! - `.NAME.lock`: an exclusive lock held for the whole run (a second run into the same output
//!   is refused at once); removed at the end of the run;
//! - `.NAME.staging-RUN`: the run's tables, renamed into place at the commit; its
//!   [`MARKER`] file is written last, so a staging directory with a marker is complete;
//! - `.NAME.old-RUN`: the previous output, during the commit only.
//!
//! The commit ([`StagedOutput::commit`]): write `run.json` and the marker into the staging
//! directory; rename the old output (if any) to `.NAME.old-RUN`; rename the staging directory
//! to `NAME`; remove the old output. Under the lock, the next run recovers from a crash between
//! any two of these steps ([`recover`]): a staging directory without a marker is removed; an
//! old output whose replacement is in place is removed; an old output whose replacement never
//! got there is replaced now by its complete staging directory (or put back, if there is
//! none); a complete staging directory that never replaced anything is kept, as
//! `NAME.finished-RUN`, and reported. A commit that fails (a full disk, a permission) keeps
//! the finished output the same way and says where it is.
//!
//! `--overwrite` replaces only a directory that a personaflow run committed (it holds the
//! marker) or an empty one. An output that is, contains or lies inside an input is refused, and
//! so is a mount point (a finished run is renamed into place; a mount point cannot be
//! replaced), all before any input is read.

use crate::{Error, OldOutput, OutputErrorKind, Result};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::Write as _;
use std::path::{Component, Path, PathBuf};

/// The file a committed output holds: it says that personaflow wrote the directory (so
/// `--overwrite` may replace it) and which run. Hidden, so readers of the tables skip it.
pub const MARKER: &str = ".personaflow-output";
/// Environment variable of the crash test hook: set to one of [`CRASH_POINTS`], the process
/// aborts at that step of the commit (as a SIGKILL would stop it), for the recovery tests.
pub const CRASH_AT_ENV: &str = "PERSONAFLOW_TEST_CRASH_AT";
/// The steps of the commit at which [`CRASH_AT_ENV`] can stop the process.
pub const CRASH_POINTS: [&str; 3] = ["commit:staged", "commit:old-moved", "commit:new-in-place"];
/// Environment variable of the failure test hook: set to one of [`FAIL_POINTS`], that step
/// of the commit fails with an injected I/O error (as a full disk or a permission would).
pub const FAIL_AT_ENV: &str = "PERSONAFLOW_TEST_FAIL_AT";
/// The steps of the commit that [`FAIL_AT_ENV`] can make fail.
pub const FAIL_POINTS: [&str; 4] = [
    "commit:run-json",
    "commit:move-old",
    "commit:rename",
    "commit:remove-old",
];

/// What the marker file holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    /// `personaflow backfill`.
    pub written_by: String,
    /// The personaflow version.
    pub version: String,
    /// The run's id (also in the names of its staging and old directories).
    pub run_id: String,
}

/// Something the recovery of an earlier, interrupted run found and did, in words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovered(pub String);

/// A run's output: the lock, the staging directory, what was recovered. Dropping it without
/// [`commit`](Self::commit) removes the staging directory and releases the lock.
#[derive(Debug)]
pub struct StagedOutput {
    output: PathBuf,
    parent: PathBuf,
    name: String,
    run_id: String,
    staging: PathBuf,
    lock: Option<OutputLock>,
    recovered: Vec<Recovered>,
    done: bool,
}

/// Where a path given by the user really is: its absolute form with symbolic links of its
/// existing part resolved (the rest taken lexically).
pub fn resolved(path: &Path) -> Result<PathBuf> {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        let cwd = std::env::current_dir().map_err(|e| Error::io(path, e))?;
        cwd.join(path)
    };
    // The longest existing prefix, canonicalised, then the rest lexically.
    let components: Vec<Component<'_>> = absolute.components().collect();
    for split in (1..=components.len()).rev() {
        let head: PathBuf = components[..split].iter().collect();
        if let Ok(canonical) = head.canonicalize() {
            let mut out = canonical;
            for c in &components[split..] {
                match c {
                    Component::ParentDir => {
                        out.pop();
                    }
                    Component::CurDir => {}
                    other => out.push(other.as_os_str()),
                }
            }
            return Ok(out);
        }
    }
    Ok(absolute)
}

/// Refuses an output that is, contains or lies inside one of `inputs` (files or directories,
/// as given and as resolved).
pub fn check_not_overlapping(output: &Path, inputs: &[PathBuf]) -> Result<()> {
    let out = resolved(output)?;
    for input in inputs {
        let Ok(inp) = resolved(input) else { continue };
        let relation = if out == inp {
            "is also an input"
        } else if out.starts_with(&inp) {
            "lies inside the input"
        } else if inp.starts_with(&out) {
            "contains the input"
        } else {
            continue;
        };
        let input = input.clone();
        return Err(Error::output(
            output,
            OutputErrorKind::OverlapsInput { relation, input },
        ));
    }
    Ok(())
}

/// Whether `dir` is a mount point (it is on another device than its parent, or the kernel
/// lists it in `/proc/self/mountinfo`).
pub fn is_mount_point(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(real) = dir.canonicalize() else {
        return false;
    };
    let Some(parent) = real.parent() else {
        return true; // the root
    };
    if let (Ok(a), Ok(b)) = (std::fs::metadata(&real), std::fs::metadata(parent)) {
        if a.dev() != b.dev() {
            return true;
        }
    }
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| Path::new(&unescape_mountinfo(m)) == real)
}

/// Undoes the octal escapes (`\040` for a space) of a `/proc/self/mountinfo` path.
fn unescape_mountinfo(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            if let Some(v) = s
                .get(i + 1..i + 4)
                .and_then(|o| u8::from_str_radix(o, 8).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads the marker of a committed output (`None`: there is none, or it is not ours).
pub fn read_marker(dir: &Path) -> Option<Marker> {
    let text = std::fs::read(dir.join(MARKER)).ok()?;
    serde_json::from_slice(&text).ok()
}

/// An exclusive lock on `.NAME.lock` beside the output, held for a run; the file is removed
/// when the lock is released.
#[derive(Debug)]
struct OutputLock {
    path: PathBuf,
    file: File,
}

impl OutputLock {
    /// Takes the lock, or fails at once if another run holds it.
    fn acquire(path: PathBuf, output: &Path) -> Result<Self> {
        use std::os::unix::fs::MetadataExt as _;
        // The file may be removed by its holder between our open and our lock: then we hold
        // a lock on a file nobody else will see, so check that the path is still our file.
        for _ in 0..LOCK_ATTEMPTS {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| Error::io(&path, e))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    let holder = std::fs::read_to_string(&path).unwrap_or_default();
                    let holder = holder.trim().to_owned();
                    let lock = path.clone();
                    return Err(Error::output(
                        output,
                        OutputErrorKind::Locked { holder, lock },
                    ));
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&path, e)),
            }
            let same = match (file.metadata(), std::fs::metadata(&path)) {
                (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
                _ => false,
            };
            if same {
                let mut f = &file;
                let _ = f.set_len(0);
                let _ = writeln!(f, "pid {}", std::process::id());
                return Ok(OutputLock { path, file });
            }
        }
        Err(Error::output(
            output,
            OutputErrorKind::LockNotTaken { lock: path },
        ))
    }
}

impl Drop for OutputLock {
    /// Removes the lock file, then releases the lock (a run that takes the lock in between
    /// sees that the path is no longer its file, and tries again).
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = self.file.unlock();
    }
}

/// Attempts at taking the lock when its file keeps being replaced under us.
const LOCK_ATTEMPTS: usize = 8;

impl StagedOutput {
    /// Prepares the output `output` of a run before any input is read: refuses an existing
    /// output that is not a directory, is a mount point, or is not empty (unless `overwrite`,
    /// and then only one a personaflow run committed); takes the lock; recovers what an
    /// interrupted earlier run left ([`recover`]); creates the staging directory.
    pub fn prepare(output: &Path, overwrite: bool) -> Result<StagedOutput> {
        let real = resolved(output)?;
        let (Some(parent), Some(name)) = (real.parent(), real.file_name()) else {
            return Err(Error::output(output, OutputErrorKind::Root));
        };
        let name = name.to_string_lossy().into_owned();
        let parent = parent.to_path_buf();
        std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
        let lock = OutputLock::acquire(parent.join(format!(".{name}.lock")), output)?;
        let recovered = recover(&parent, &name)?;
        check_replaceable(output, &real, overwrite)?;
        let run_id = run_id();
        let staging = parent.join(format!(".{name}.staging-{run_id}"));
        std::fs::create_dir(&staging).map_err(|e| Error::io(&staging, e))?;
        Ok(StagedOutput {
            output: output.to_path_buf(),
            parent,
            name,
            run_id,
            staging,
            lock: Some(lock),
            recovered,
            done: false,
        })
    }

    /// The staging directory the run writes its tables into.
    pub fn staging(&self) -> &Path {
        &self.staging
    }

    /// What was recovered from interrupted earlier runs.
    pub fn recovered(&self) -> &[Recovered] {
        &self.recovered
    }

    /// Commits the run: writes `run.json` (its summary) and the marker, and renames the
    /// staging directory into place, replacing the old output. If a step fails, the finished
    /// output is kept as `DIR/NAME.finished-RUN` (the staging directory, renamed: visible, and
    /// never removed by a later run) and the error says where it is.
    pub fn commit(mut self, run_json: &[u8]) -> Result<()> {
        let real = self.parent.join(&self.name);
        let old = self
            .parent
            .join(format!(".{}.old-{}", self.name, self.run_id));
        // From here on the staging directory is the run's result: never removed on an error.
        self.done = true;
        let staging = self.staging.clone();
        let failed = |during: &'static str, e: Error, old: Option<OldOutput>| {
            let kept = self
                .parent
                .join(format!("{}.finished-{}", self.name, self.run_id));
            let at = match std::fs::rename(&staging, &kept) {
                Ok(()) => kept,
                Err(_) => staging.clone(),
            };
            Error::output(
                &self.output,
                OutputErrorKind::AfterRun {
                    during,
                    cause: Box::new(e),
                    finished: at,
                    old,
                },
            )
        };
        self.stage_summary(run_json)
            .map_err(|e| failed("writing its summary", e, None))?;
        crash_point("commit:staged");
        let has_old = match std::fs::symlink_metadata(&real) {
            Ok(_) => {
                // Checked before the run; checked again, as it may have changed since.
                check_replaceable(&self.output, &real, true)
                    .map_err(|e| failed("replacing the output", e, None))?;
                let empty = std::fs::read_dir(&real)
                    .map(|mut d| d.next().is_none())
                    .unwrap_or(false);
                if empty {
                    // rename(2) replaces an empty directory atomically.
                    false
                } else {
                    injected_failure("commit:move-old")
                        .and_then(|()| std::fs::rename(&real, &old))
                        .map_err(|e| {
                            failed("moving the old output aside", Error::io(&real, e), None)
                        })?;
                    crash_point("commit:old-moved");
                    true
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(failed("looking at the output", Error::io(&real, e), None)),
        };
        let renamed =
            injected_failure("commit:rename").and_then(|()| std::fs::rename(&staging, &real));
        if let Err(e) = renamed {
            let old_output = if !has_old {
                None
            } else if std::fs::rename(&old, &real).is_ok() {
                Some(OldOutput::Restored)
            } else {
                Some(OldOutput::At(old.clone()))
            };
            return Err(failed(
                "renaming it into place",
                Error::io(&real, e),
                old_output,
            ));
        }
        let _ = sync_dir(&self.parent);
        crash_point("commit:new-in-place");
        if has_old {
            let removed =
                injected_failure("commit:remove-old").and_then(|()| std::fs::remove_dir_all(&old));
            removed.map_err(|e| {
                Error::output(
                    &self.output,
                    OutputErrorKind::OldNotRemoved {
                        cause: Box::new(Error::io(&old, e)),
                        old: old.clone(),
                    },
                )
            })?;
        }
        self.lock.take();
        Ok(())
    }

    /// Writes `run.json` and the marker into the staging directory, durably.
    fn stage_summary(&self, run_json: &[u8]) -> Result<()> {
        let path = self.staging.join("run.json");
        injected_failure("commit:run-json").map_err(|e| Error::io(&path, e))?;
        write_synced(&path, run_json)?;
        let marker = Marker {
            written_by: "personaflow backfill".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            run_id: self.run_id.clone(),
        };
        let json = serde_json::to_vec_pretty(&marker).expect("the marker serialises");
        write_synced(&self.staging.join(MARKER), &json)?;
        sync_dir(&self.staging)
    }

    /// Removes the staging directory and releases the lock (what dropping does).
    pub fn abandon(&mut self) {
        if !self.done {
            let _ = std::fs::remove_dir_all(&self.staging);
            self.done = true;
        }
        self.lock.take();
    }
}

impl Drop for StagedOutput {
    fn drop(&mut self) {
        self.abandon();
    }
}

/// Refuses an existing `real` output (named `output` in messages) that cannot be replaced.
fn check_replaceable(output: &Path, real: &Path, overwrite: bool) -> Result<()> {
    let refuse = |kind: OutputErrorKind| Error::output(output, kind);
    let meta = match std::fs::symlink_metadata(real) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(output, e)),
    };
    if !meta.is_dir() {
        return Err(refuse(OutputErrorKind::NotADirectory));
    }
    if is_mount_point(real) {
        return Err(refuse(OutputErrorKind::MountPoint));
    }
    let empty = std::fs::read_dir(real)
        .map_err(|e| Error::io(output, e))?
        .next()
        .is_none();
    if empty {
        return Ok(());
    }
    if !overwrite {
        return Err(refuse(OutputErrorKind::NotEmpty));
    }
    if read_marker(real).is_none() {
        return Err(refuse(OutputErrorKind::NotPersonaflowOutput {
            marker: MARKER,
        }));
    }
    Ok(())
}

/// Recovers, under the output's lock, from a run into `parent/name` that was interrupted
/// (killed, or its machine stopped): see the [module docs](self). Returns what it did.
pub fn recover(parent: &Path, name: &str) -> Result<Vec<Recovered>> {
    let staging_prefix = format!(".{name}.staging-");
    let old_prefix = format!(".{name}.old-");
    let mut stagings = Vec::new();
    let mut olds = Vec::new();
    for entry in std::fs::read_dir(parent).map_err(|e| Error::io(parent, e))? {
        let entry = entry.map_err(|e| Error::io(parent, e))?;
        let file_name = entry.file_name().to_string_lossy().into_owned();
        if let Some(id) = file_name.strip_prefix(&staging_prefix) {
            stagings.push(id.to_owned());
        } else if let Some(id) = file_name.strip_prefix(&old_prefix) {
            olds.push(id.to_owned());
        }
    }
    stagings.sort();
    olds.sort();
    let output = parent.join(name);
    let staging = |id: &str| parent.join(format!("{staging_prefix}{id}"));
    let mut done = Vec::new();
    for id in &olds {
        let old = parent.join(format!("{old_prefix}{id}"));
        if !output.exists() {
            // Interrupted between the two renames of its commit.
            let s = staging(id);
            if read_marker(&s).is_some() {
                std::fs::rename(&s, &output).map_err(|e| Error::io(&output, e))?;
                done.push(Recovered(format!(
                    "finished the commit of an interrupted run: its output {} is now in place",
                    output.display()
                )));
            } else {
                std::fs::rename(&old, &output).map_err(|e| Error::io(&output, e))?;
                done.push(Recovered(format!(
                    "put back the output {} that an interrupted run had moved aside",
                    output.display()
                )));
                continue;
            }
        }
        std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
        done.push(Recovered(format!(
            "removed {}, the output an interrupted run had replaced",
            old.display()
        )));
    }
    for id in &stagings {
        let s = staging(id);
        if !s.exists() {
            continue; // put in place above
        }
        if read_marker(&s).is_some() {
            let kept = parent.join(format!("{name}.finished-{id}"));
            let at = match std::fs::rename(&s, &kept) {
                Ok(()) => kept,
                Err(_) => s.clone(),
            };
            done.push(Recovered(format!(
                "an interrupted run finished but did not put its output in place: it is kept in \
                 {} (move it to {} or remove it)",
                at.display(),
                output.display()
            )));
        } else {
            std::fs::remove_dir_all(&s).map_err(|e| Error::io(&s, e))?;
            done.push(Recovered(format!(
                "removed {}, the unfinished output of an interrupted run",
                s.display()
            )));
        }
    }
    Ok(done)
}

/// A run id: unique among the runs into one output (process id and time).
fn run_id() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "{}-{}{:09}",
        std::process::id(),
        now.as_secs(),
        now.subsec_nanos()
    )
}

/// Writes a file and fsyncs it.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = File::create(path).map_err(|e| Error::io(path, e))?;
    f.write_all(bytes).map_err(|e| Error::io(path, e))?;
    f.sync_all().map_err(|e| Error::io(path, e))
}

/// Fsyncs a directory (its entries).
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// The failure test hook: an I/O error at `point` when [`FAIL_AT_ENV`] names it.
fn injected_failure(point: &str) -> std::io::Result<()> {
    if std::env::var(FAIL_AT_ENV).is_ok_and(|p| p == point) {
        return Err(std::io::Error::other(format!(
            "injected failure ({FAIL_AT_ENV}={point})"
        )));
    }
    Ok(())
}

/// The crash test hook: aborts the process at `point` when [`CRASH_AT_ENV`] names it.
fn crash_point(point: &str) {
    if std::env::var(CRASH_AT_ENV).is_ok_and(|p| p == point) {
        eprintln!("personaflow: {CRASH_AT_ENV}={point}: aborting here");
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn committed(parent: &Path, name: &str, content: &str) {
        let staged = StagedOutput::prepare(&parent.join(name), true).unwrap();
        std::fs::write(staged.staging().join("t.txt"), content).unwrap();
        staged.commit(b"{}").unwrap();
    }

    #[test]
    fn commits_replace_only_personaflow_outputs_and_leave_nothing_beside() {
        let dir = tempfile::tempdir().unwrap();
        committed(dir.path(), "out", "one");
        committed(dir.path(), "out", "two");
        assert_eq!(names(dir.path()), ["out"]);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("out/t.txt")).unwrap(),
            "two"
        );
        assert!(read_marker(&dir.path().join("out")).is_some());
        // Someone else's directory is refused, and left alone.
        let other = dir.path().join("other");
        std::fs::create_dir(&other).unwrap();
        std::fs::write(other.join("mine.txt"), "x").unwrap();
        let err = StagedOutput::prepare(&other, true).unwrap_err().to_string();
        assert!(err.contains("not written by personaflow"), "{err}");
        assert!(other.join("mine.txt").exists());
        assert_eq!(names(dir.path()), ["other", "out"]);
    }

    #[test]
    fn a_second_run_into_the_same_output_is_refused_while_the_first_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let first = StagedOutput::prepare(&out, false).unwrap();
        let err = StagedOutput::prepare(&out, false).unwrap_err().to_string();
        assert!(err.contains("another personaflow run"), "{err}");
        drop(first);
        assert_eq!(names(dir.path()), Vec::<String>::new());
        let again = StagedOutput::prepare(&out, false).unwrap();
        again.commit(b"{}").unwrap();
    }

    #[test]
    fn recovery_handles_every_step_of_an_interrupted_commit() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        let marker = |d: &Path| {
            std::fs::create_dir_all(d).unwrap();
            std::fs::write(
                d.join(MARKER),
                br#"{"written_by":"t","version":"0","run_id":"1"}"#,
            )
            .unwrap();
        };
        // Killed mid-run: an incomplete staging directory is removed.
        std::fs::create_dir(p.join(".out.staging-1")).unwrap();
        let r = recover(p, "out").unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(names(p), Vec::<String>::new());
        // Killed between the renames: the complete staging is put in place.
        marker(&p.join(".out.old-2"));
        marker(&p.join(".out.staging-2"));
        std::fs::write(p.join(".out.staging-2/new"), "").unwrap();
        recover(p, "out").unwrap();
        assert_eq!(names(p), ["out"]);
        assert!(p.join("out/new").exists());
        // Killed before removing the old output: it is removed.
        marker(&p.join(".out.old-3"));
        recover(p, "out").unwrap();
        assert_eq!(names(p), ["out"]);
        // An old output without its staging directory is put back.
        std::fs::rename(p.join("out"), p.join(".out.old-4")).unwrap();
        recover(p, "out").unwrap();
        assert_eq!(names(p), ["out"]);
        assert!(p.join("out/new").exists());
        // A complete staging directory that replaced nothing is kept, visibly, and reported.
        marker(&p.join(".out.staging-5"));
        let r = recover(p, "out").unwrap();
        assert!(r[0].0.contains("out.finished-5"), "{r:?}");
        assert_eq!(names(p), ["out", "out.finished-5"]);
    }

    #[test]
    fn overlaps_with_inputs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("d");
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("e.tsv"), "x").unwrap();
        let inputs = [d.clone()];
        for (out, what) in [
            (d.clone(), "is also an input"),
            (d.join("out"), "lies inside"),
            (dir.path().to_path_buf(), "contains"),
        ] {
            let err = check_not_overlapping(&out, &inputs)
                .unwrap_err()
                .to_string();
            assert!(err.contains(what), "{err}");
        }
        let file = [d.join("e.tsv")];
        assert!(check_not_overlapping(&d, &file).is_err());
        assert!(check_not_overlapping(&dir.path().join("d2"), &file).is_ok());
        // Through `..` and a symbolic link.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&d, &link).unwrap();
        assert!(check_not_overlapping(&link.join("x/../out"), &inputs).is_err());
    }

    #[test]
    fn mountinfo_paths_unescape() {
        assert_eq!(unescape_mountinfo("/mnt/a\\040b"), "/mnt/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert!(is_mount_point(Path::new("/")));
        assert!(is_mount_point(Path::new("/proc")));
    }
}
