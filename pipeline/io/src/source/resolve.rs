//! Turning the inputs a user gives (files, directories, globs) into a sorted list of files.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::{Format, IngestMapping, InputFile};
use crate::{Error, InputErrorKind, Result};

/// Characters that make an input a glob pattern (when no file has that exact name).
const GLOB_CHARS: [char; 3] = ['*', '?', '['];

/// Resolves inputs into files, sorted by path with duplicates removed.
///
/// Each input is a file, a directory or a glob pattern (`*`, `?`, `[...]`, `**`):
/// - a file is taken as given; its format is the mapping's `format`, else its extension's,
///   else it is an [`Error::BadInput`];
/// - a directory is walked recursively; hidden entries (`.name`) and entries starting with
///   `_` (`_SUCCESS`, `_metadata`, `_temporary/`) are skipped, and so are files whose
///   extension is not an input format (unless the mapping sets `format`, which then applies
///   to every remaining file);
/// - glob matches are treated like directory entries (files filtered the same way,
///   directories walked).
///
/// Path order is time order for the usual time-partitioned layouts (`date=2024-01-02/...`,
/// `part-00001...`). An input that matches no file is [`Error::NoInputs`]; a missing path is
/// [`Error::Io`].
pub fn resolve_inputs(inputs: &[String], mapping: &IngestMapping) -> Result<Vec<InputFile>> {
    if inputs.is_empty() {
        return Err(Error::NoInputs { input: None });
    }
    let mut files = Vec::new();
    for input in inputs {
        let before = files.len();
        let path = Path::new(input);
        if input.contains(GLOB_CHARS) && !path.exists() {
            expand_glob(input, mapping, &mut files)?;
        } else {
            let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
            if meta.is_dir() {
                walk_dir(path, mapping, &mut HashSet::new(), &mut files)?;
            } else {
                let format = mapping
                    .format
                    .or_else(|| Format::from_path(path))
                    .ok_or_else(|| Error::bad_input(path, InputErrorKind::UnknownFormat))?;
                files.push(InputFile {
                    path: path.to_path_buf(),
                    format,
                    size_bytes: meta.len(),
                });
            }
        }
        if files.len() == before {
            return Err(Error::NoInputs {
                input: Some(input.clone()),
            });
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files.dedup_by(|a, b| a.path == b.path);
    Ok(files)
}

/// Whether a directory entry's name marks it as not data (hidden, or `_`-prefixed).
fn is_skipped_name(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.') || n.starts_with('_'))
}

/// Adds `path` (a non-directory) if its name and format qualify.
fn add_candidate(path: PathBuf, mapping: &IngestMapping, files: &mut Vec<InputFile>) -> Result<()> {
    if is_skipped_name(&path) {
        return Ok(());
    }
    let Some(format) = mapping.format.or_else(|| Format::from_path(&path)) else {
        return Ok(());
    };
    let meta = std::fs::metadata(&path).map_err(|e| Error::io(&path, e))?;
    if meta.is_file() {
        files.push(InputFile {
            path,
            format,
            size_bytes: meta.len(),
        });
    }
    Ok(())
}

/// Walks a directory recursively (following links, each directory once).
fn walk_dir(
    dir: &Path,
    mapping: &IngestMapping,
    visited: &mut HashSet<PathBuf>,
    files: &mut Vec<InputFile>,
) -> Result<()> {
    let canonical = dir.canonicalize().map_err(|e| Error::io(dir, e))?;
    if !visited.insert(canonical) {
        return Ok(());
    }
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        if is_skipped_name(&path) {
            continue;
        }
        if path.is_dir() {
            walk_dir(&path, mapping, visited, files)?;
        } else {
            add_candidate(path, mapping, files)?;
        }
    }
    Ok(())
}

fn expand_glob(pattern: &str, mapping: &IngestMapping, files: &mut Vec<InputFile>) -> Result<()> {
    let options = glob::MatchOptions {
        require_literal_leading_dot: true,
        ..glob::MatchOptions::new()
    };
    let paths = glob::glob_with(pattern, options)
        .map_err(|e| Error::bad_input(pattern, InputErrorKind::Glob(e)))?;
    let mut visited = HashSet::new();
    for entry in paths {
        let path = entry.map_err(|e| {
            let path = e.path().to_path_buf();
            Error::io(path, e.into())
        })?;
        if path.is_dir() {
            if !is_skipped_name(&path) {
                walk_dir(&path, mapping, &mut visited, files)?;
            }
        } else {
            add_candidate(path, mapping, files)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(root: &Path, rel: &str) {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"x").unwrap();
    }

    fn rel_paths(root: &Path, files: &[InputFile]) -> Vec<String> {
        files
            .iter()
            .map(|f| f.path.strip_prefix(root).unwrap().display().to_string())
            .collect()
    }

    #[test]
    fn directories_are_walked_in_path_order_skipping_hidden_and_markers() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for rel in [
            "date=2024-01-02/part-1.parquet",
            "date=2024-01-01/part-2.parquet",
            "date=2024-01-01/part-1.parquet",
            "date=2024-01-01/_SUCCESS",
            "date=2024-01-01/.part-1.parquet.crc",
            ".hidden/part-0.parquet",
            "_temporary/part-0.parquet",
            "notes.md",
            "b.csv",
            "a.jsonl",
            "z.log",
        ] {
            touch(root, rel);
        }
        let files =
            resolve_inputs(&[root.display().to_string()], &IngestMapping::identity()).unwrap();
        assert_eq!(
            rel_paths(root, &files),
            [
                "a.jsonl",
                "b.csv",
                "date=2024-01-01/part-1.parquet",
                "date=2024-01-01/part-2.parquet",
                "date=2024-01-02/part-1.parquet",
                "z.log",
            ]
        );
        let formats: Vec<Format> = files.iter().map(|f| f.format).collect();
        assert_eq!(
            formats,
            [
                Format::Ndjson,
                Format::Csv,
                Format::Parquet,
                Format::Parquet,
                Format::Parquet,
                Format::Zeek
            ]
        );
        assert!(files.iter().all(|f| f.size_bytes == 1));
    }

    #[test]
    fn globs_expand_sorted_and_mixed_inputs_are_merged_in_path_order() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for rel in [
            "in/c.csv",
            "in/a.csv",
            "in/b.tsv",
            "in/_x.csv",
            "in/sub/d.csv",
            "e.csv",
        ] {
            touch(root, rel);
        }
        let glob = format!("{}/in/*.csv", root.display());
        let files =
            resolve_inputs(std::slice::from_ref(&glob), &IngestMapping::identity()).unwrap();
        assert_eq!(rel_paths(root, &files), ["in/a.csv", "in/c.csv"]);

        let recursive = format!("{}/**/*.csv", root.display());
        let explicit = root.join("in/b.tsv").display().to_string();
        let again = root.join("in/a.csv").display().to_string();
        let files =
            resolve_inputs(&[explicit, recursive, again], &IngestMapping::identity()).unwrap();
        assert_eq!(
            rel_paths(root, &files),
            ["e.csv", "in/a.csv", "in/b.tsv", "in/c.csv", "in/sub/d.csv"]
        );
    }

    #[test]
    fn mapping_format_applies_to_every_file() {
        let dir = tempfile::tempdir().unwrap();
        touch(dir.path(), "x/CDNOW_master.txt");
        touch(dir.path(), "x/_SUCCESS");
        let mut mapping = IngestMapping::identity();
        mapping.format = Some(Format::Whitespace);
        let files = resolve_inputs(&[dir.path().display().to_string()], &mapping).unwrap();
        assert_eq!(rel_paths(dir.path(), &files), ["x/CDNOW_master.txt"]);
        assert_eq!(files[0].format, Format::Whitespace);
    }

    #[test]
    fn unusable_inputs_are_errors_naming_them() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        touch(root, "notes.txt");
        touch(root, "empty/readme.md");
        let identity = IngestMapping::identity();

        let txt = root.join("notes.txt").display().to_string();
        match resolve_inputs(&[txt], &identity) {
            Err(Error::BadInput {
                path,
                kind: InputErrorKind::UnknownFormat,
            }) => {
                assert!(path.ends_with("notes.txt"));
            }
            other => panic!("{other:?}"),
        }
        let empty = root.join("empty").display().to_string();
        match resolve_inputs(std::slice::from_ref(&empty), &identity) {
            Err(Error::NoInputs { input }) => assert_eq!(input, Some(empty)),
            other => panic!("{other:?}"),
        }
        let missing = root.join("missing.csv").display().to_string();
        match resolve_inputs(&[missing], &identity) {
            Err(e @ Error::Io { .. }) => assert!(e.to_string().contains("missing.csv")),
            other => panic!("{other:?}"),
        }
        let nothing = format!("{}/*.parquet", root.display());
        assert!(matches!(
            resolve_inputs(&[nothing], &identity),
            Err(Error::NoInputs { .. })
        ));
        assert!(matches!(
            resolve_inputs(&[], &identity),
            Err(Error::NoInputs { .. })
        ));
    }
}
