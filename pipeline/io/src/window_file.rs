//! Window files: the continuous job's output files, each holding one or more consecutive
//! complete windows of one table from one worker, written atomically under a name that says
//! which windows (`w{window_end_ms}-{worker}.parquet` for one window,
//! `w{first_end_ms}-{last_end_ms}-{worker}.parquet` for several). A file of several windows
//! records each window's rows in its Parquet key-value metadata ([`WINDOW_ROWS_KEY`]), so a
//! restart that must forget the windows after its checkpoint can cut the file at a window
//! ([`cut_window_file`]).
//!
//! A job that catches up closes many windows at once; one file per window then costs a file
//! creation, an fsync and a Parquet writer (its column writers, a footer) per table, worker
//! and window, whatever its rows. Writing the windows a sink completes together as one file is the
//! group commit of the continuous job.
//!
//! ```
//! use personaflow_io::window_file::{window_file_name, window_range_of_file};
//! assert_eq!(window_file_name(60_000, 60_000, 1), "w60000-001.parquet");
//! assert_eq!(window_file_name(60_000, 180_000, 1), "w60000-180000-001.parquet");
//! assert_eq!(window_range_of_file("w60000-180000-001.parquet"), Some((60_000, 180_000)));
//! assert_eq!(window_range_of_file("w60000-001.state"), Some((60_000, 60_000)));
//! assert_eq!(window_range_of_file("part-000-00000.parquet"), None);
//! ```

use crate::atomic_file::write_parquet_atomically_with;
use crate::{Error, Result};
use arrow_array::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::errors::ParquetError;
use std::path::{Path, PathBuf};

/// Key of the Parquet key-value metadata of a file of several windows: each window's end (ms)
/// and rows, in file order, `end:rows` joined by commas (`60000:12,120000:9`).
pub const WINDOW_ROWS_KEY: &str = "personaflow.window_rows";

/// The name of the file of the windows ending `first_end_ms` through `last_end_ms` of
/// `worker`.
pub fn window_file_name(first_end_ms: i64, last_end_ms: i64, worker: usize) -> String {
    if first_end_ms == last_end_ms {
        format!("w{last_end_ms}-{worker:03}.parquet")
    } else {
        format!("w{first_end_ms}-{last_end_ms}-{worker:03}.parquet")
    }
}

/// The first and last window end of a window file's name (also of the operator-state files,
/// `w{window_end_ms}-{worker}.state`, which name one window); `None` for other names.
pub fn window_range_of_file(name: &str) -> Option<(i64, i64)> {
    let rest = name.strip_prefix('w')?;
    let (stem, _) = rest.split_once('.')?;
    let parts: Vec<&str> = stem.split('-').collect();
    let end = |s: &str| s.parse::<i64>().ok();
    match parts.as_slice() {
        [last, worker] if worker.parse::<usize>().is_ok() => end(last).map(|l| (l, l)),
        [first, last, worker] if worker.parse::<usize>().is_ok() => {
            let (f, l) = (end(first)?, end(last)?);
            (f <= l).then_some((f, l))
        }
        _ => None,
    }
}

/// Writes the windows `windows` (window end in ms and the window's rows, in window order,
/// every batch of one schema) as the window file of `worker` in `dir`, atomically (a
/// temporary file, fsynced when `fsync`, renamed into place). Returns its path.
pub fn write_window_file(
    dir: &Path,
    worker: usize,
    windows: &[(i64, RecordBatch)],
    row_group_rows: usize,
    fsync: bool,
) -> Result<PathBuf> {
    let (Some((first, _)), Some((last, _))) = (windows.first(), windows.last()) else {
        return Err(Error::parquet(
            dir,
            ParquetError::General("a window file needs at least one window".into()),
        ));
    };
    let path = dir.join(window_file_name(*first, *last, worker));
    if windows.len() == 1 {
        write_parquet_atomically_with(&path, &windows[0].1, row_group_rows, fsync, &[])?;
        return Ok(path);
    }
    let schema = windows[0].1.schema();
    let batch = arrow_select::concat::concat_batches(&schema, windows.iter().map(|(_, b)| b))
        .map_err(|source| Error::Arrow {
            path: path.clone(),
            source,
        })?;
    let rows = window_rows_value(windows.iter().map(|(end, b)| (*end, b.num_rows())));
    write_parquet_atomically_with(
        &path,
        &batch,
        row_group_rows,
        fsync,
        &[(WINDOW_ROWS_KEY, rows)],
    )?;
    Ok(path)
}

fn window_rows_value(windows: impl Iterator<Item = (i64, usize)>) -> String {
    windows
        .map(|(end, rows)| format!("{end}:{rows}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn parse_window_rows(value: &str) -> Option<Vec<(i64, usize)>> {
    value
        .split(',')
        .map(|part| {
            let (end, rows) = part.split_once(':')?;
            Some((end.parse().ok()?, rows.parse().ok()?))
        })
        .collect()
}

/// Cuts the window file `path` after the window ending `through_end_ms`: its windows ending
/// later are forgotten. A file of windows all ending later is removed, one of windows all
/// ending at or before is kept as it is; a file that straddles is replaced by the file of its
/// windows through `through_end_ms` (written atomically before the original is removed, so a
/// crash in between leaves both, and the next cut ends the same). Returns the file that holds
/// the kept windows, if any.
pub fn cut_window_file(path: &Path, through_end_ms: i64, fsync: bool) -> Result<Option<PathBuf>> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let corrupt = |reason: String| Error::parquet(path, ParquetError::General(reason));
    let (first, last) = window_range_of_file(&name)
        .ok_or_else(|| corrupt(format!("{name} is not the name of a window file")))?;
    if last <= through_end_ms {
        return Ok(Some(path.to_path_buf()));
    }
    if first > through_end_ms {
        std::fs::remove_file(path).map_err(|e| Error::io(path, e))?;
        return Ok(None);
    }
    let worker = name
        .trim_end_matches(".parquet")
        .rsplit('-')
        .next()
        .and_then(|w| w.parse::<usize>().ok())
        .ok_or_else(|| corrupt(format!("{name}: no worker in the name")))?;
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| Error::parquet(path, e))?;
    let windows = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|kv| kv.key == WINDOW_ROWS_KEY))
        .and_then(|kv| kv.value.as_deref())
        .and_then(parse_window_rows)
        .ok_or_else(|| corrupt(format!("no valid {WINDOW_ROWS_KEY} metadata")))?;
    let schema = builder.schema().clone();
    let batches = builder
        .build()
        .map_err(|e| Error::parquet(path, e))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|source| Error::Arrow {
            path: path.to_path_buf(),
            source,
        })?;
    let all =
        arrow_select::concat::concat_batches(&schema, &batches).map_err(|source| Error::Arrow {
            path: path.to_path_buf(),
            source,
        })?;
    if windows.iter().map(|w| w.1).sum::<usize>() != all.num_rows() {
        return Err(corrupt(format!(
            "{WINDOW_ROWS_KEY} counts other rows than the file's {}",
            all.num_rows()
        )));
    }
    let mut kept = Vec::new();
    let mut offset = 0;
    for (end, rows) in windows {
        if end > through_end_ms {
            break;
        }
        kept.push((end, all.slice(offset, rows)));
        offset += rows;
    }
    let dir = path.parent().expect("window files live in a directory");
    let cut = if kept.is_empty() {
        None
    } else {
        Some(write_window_file(dir, worker, &kept, offset.max(1), fsync)?)
    };
    // The cut's name ends at or before `through_end_ms`, the original's after it: never the
    // same file.
    std::fs::remove_file(path).map_err(|e| Error::io(path, e))?;
    Ok(cut)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::{ResonanceRow, TableRow};
    use arrow_array::{Array, TimestampMillisecondArray};

    fn window(end: i64, rows: usize) -> (i64, RecordBatch) {
        let rows: Vec<ResonanceRow> = (0..rows)
            .map(|i| ResonanceRow {
                window_end: end,
                user_id: format!("u{i}").into(),
                segment: "gamer".into(),
                cosine: 0.5,
                probability: 0.9,
                resonating: true,
                top: i == 0,
                cold_start: false,
            })
            .collect();
        (end, ResonanceRow::to_batch(&rows))
    }

    fn ends_in(path: &Path) -> Vec<i64> {
        let f = std::fs::File::open(path).unwrap();
        ParquetRecordBatchReaderBuilder::try_new(f)
            .unwrap()
            .build()
            .unwrap()
            .flat_map(|b| {
                let b = b.unwrap();
                let c = b.column(0);
                let c = c
                    .as_any()
                    .downcast_ref::<TimestampMillisecondArray>()
                    .unwrap();
                (0..c.len()).map(|i| c.value(i)).collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn names_round_trip_and_other_names_are_not_window_files() {
        for (f, l, w) in [(60_000, 60_000, 0), (60_000, 600_000, 3), (0, 1, 12)] {
            assert_eq!(
                window_range_of_file(&window_file_name(f, l, w)),
                Some((f, l))
            );
        }
        for name in [
            "part-000-00000.parquet",
            "w-1.parquet",
            "wx-000.parquet",
            "w9-8-000.parquet",
        ] {
            assert_eq!(window_range_of_file(name), None, "{name}");
        }
    }

    #[test]
    fn cuts_keep_exactly_the_windows_through_the_checkpoint() {
        // Every cut point of a file of five windows (one of them empty), before, inside
        // and after it: the kept file holds exactly the rows of the windows through the cut.
        let windows = [
            window(60, 2),
            window(120, 0),
            window(180, 3),
            window(240, 1),
            window(300, 4),
        ];
        for through in [0, 60, 90, 120, 180, 239, 240, 300, 400] {
            let dir = tempfile::tempdir().unwrap();
            let path = write_window_file(dir.path(), 1, &windows, 100, false).unwrap();
            assert!(path.ends_with("w60-300-001.parquet"));
            let cut = cut_window_file(&path, through, false).unwrap();
            let want: Vec<i64> = windows
                .iter()
                .filter(|(end, _)| *end <= through)
                .flat_map(|(end, b)| std::iter::repeat_n(*end, b.num_rows()))
                .collect();
            let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
            match cut {
                None => {
                    assert!(want.is_empty(), "through {through}");
                    assert!(files.is_empty(), "through {through}: {files:?}");
                }
                Some(cut) => {
                    assert_eq!(ends_in(&cut), want, "through {through}");
                    assert_eq!(files.len(), 1, "through {through}: {files:?}");
                    // Cutting again at the same point changes nothing.
                    assert_eq!(
                        cut_window_file(&cut, through, false).unwrap(),
                        Some(cut.clone())
                    );
                    assert_eq!(ends_in(&cut), want);
                }
            }
        }
    }

    #[test]
    fn a_straddling_file_without_its_window_rows_is_an_error_not_a_guess() {
        let dir = tempfile::tempdir().unwrap();
        let (_, batch) = window(60, 2);
        let path = dir.path().join(window_file_name(60, 120, 0));
        write_parquet_atomically_with(&path, &batch, 10, false, &[]).unwrap();
        let err = cut_window_file(&path, 60, false).unwrap_err();
        let source = std::error::Error::source(&err).map(|e| e.to_string());
        assert!(err.to_string().contains("w60-120-000.parquet"), "{err}");
        assert!(
            source.as_deref().unwrap_or("").contains(WINDOW_ROWS_KEY),
            "{source:?}"
        );
        assert!(path.is_file(), "nothing removed");
    }
}
