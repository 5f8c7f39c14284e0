//! Files replaced whole: written under a temporary name in the same directory, then renamed,
//! optionally with fsyncs, so a reader or a restart after a crash sees the old content or the
//! new, never a part.

use crate::writer::writer_properties_for;
use crate::{Error, Result};
use arrow_array::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::KeyValue;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename, so a
/// reader (or a restart after a crash) sees the old content or the new, never a part.
pub fn write_atomically(path: &Path, bytes: &[u8], fsync: bool) -> Result<()> {
    let tmp = tmp_path(path);
    let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    f.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
    if fsync {
        f.sync_all().map_err(|e| Error::io(&tmp, e))?;
    }
    drop(f);
    rename_durably(&tmp, path, fsync)
}

/// The temporary name `path` is written under before its rename (a dot file, so readers that
/// skip hidden files never see it).
pub fn tmp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

/// Renames `tmp` to `path`, fsyncing the directory when `fsync`.
pub fn rename_durably(tmp: &Path, path: &Path, fsync: bool) -> Result<()> {
    std::fs::rename(tmp, path).map_err(|e| Error::io(path, e))?;
    if fsync {
        if let Some(dir) = path.parent() {
            let d = std::fs::File::open(dir).map_err(|e| Error::io(dir, e))?;
            d.sync_all().map_err(|e| Error::io(dir, e))?;
        }
    }
    Ok(())
}

/// Writes `batch` as the Parquet file `path` (a temporary file, fsynced when `fsync`, renamed
/// into place): readers and restarts see the whole file or none.
pub fn write_parquet_atomically(
    path: &Path,
    batch: &RecordBatch,
    row_group_rows: usize,
    fsync: bool,
) -> Result<()> {
    write_parquet_atomically_with(path, batch, row_group_rows, fsync, &[])
}

/// Like [`write_parquet_atomically`], with `key_value` in the file's key-value metadata.
pub fn write_parquet_atomically_with(
    path: &Path,
    batch: &RecordBatch,
    row_group_rows: usize,
    fsync: bool,
    key_value: &[(&str, String)],
) -> Result<()> {
    let dir = path.parent().expect("window files live in a directory");
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let tmp = tmp_path(path);
    let file = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let mut writer = ArrowWriter::try_new(
        file,
        batch.schema(),
        Some(writer_properties_for(&batch.schema(), row_group_rows)),
    )
    .map_err(|e| Error::parquet(&tmp, e))?;
    for (key, value) in key_value {
        writer.append_key_value_metadata(KeyValue::new(key.to_string(), value.clone()));
    }
    writer.write(batch).map_err(|e| Error::parquet(&tmp, e))?;
    let file = writer.into_inner().map_err(|e| Error::parquet(&tmp, e))?;
    if fsync {
        file.sync_all().map_err(|e| Error::io(&tmp, e))?;
    }
    drop(file);
    rename_durably(&tmp, path, fsync)
}
