//! The Parquet writer of the output tables: files laid out in Hive-style date partitions
//! (`resonance/date=2026-01-05/part-000-00000.parquet`), readable as they are by DuckDB,
//! Polars and pyarrow, and the sinks the dataflow writes each table's windows to.
//!
//! Writers only ever write inside the run's staging directory; the backfill renames the whole
//! directory into place when the run succeeds, so a failed run leaves no partial output.

use crate::tables::Table;
use crate::{Error, Result};
use arrow_array::RecordBatch;
use arrow_schema::Schema;
use parquet::arrow::{ArrowSchemaConverter, ArrowWriter};
use parquet::basic::{Compression, LogicalType};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use std::fs::File;
use std::path::{Path, PathBuf};

/// Where one table's rows go, window by window, on one worker. The dataflow's sinks call
/// [`write_window`](WindowSink::write_window) with each complete window's rows and
/// [`advance`](WindowSink::advance) as the frontier moves; the backfill writes date-partitioned
/// files, the continuous job atomic window files ([`crate::window_file`]) and Kafka messages.
pub trait WindowSink {
    /// The table.
    fn table(&self) -> Table;
    /// Writes the rows of `window`, which is complete; returns the rows written (a sink may
    /// skip a window, e.g. one already emitted before a restart, and return 0).
    fn write_window(&mut self, window: u64, batch: &RecordBatch) -> Result<u64>;
    /// Writes the rows of several complete windows, in window order, given as one batch:
    /// `windows` names each window and its number of rows, which follow each other in
    /// `batch`. Returns the rows written. By default each window's rows (a zero-copy slice of
    /// `batch`) go to [`write_window`](Self::write_window) in turn.
    fn write_windows(&mut self, windows: &[(u64, usize)], batch: &RecordBatch) -> Result<u64> {
        let mut offset = 0;
        let mut written = 0;
        for &(window, rows) in windows {
            written += self.write_window(window, &batch.slice(offset, rows))?;
            offset += rows;
        }
        Ok(written)
    }
    /// Every window before `frontier` has been passed to `write_window` (or had no rows);
    /// `None`: the input ended and every window has.
    fn advance(&mut self, frontier: Option<u64>) -> Result<()>;
}

/// Watches every complete window a job's sinks write (the persona store of `run --serve`
/// does: it keeps each user's latest records). Called from the sinks' workers, so it must be
/// shareable; an error stops the job like a failed write.
pub trait WindowObserver: Send + Sync + std::fmt::Debug {
    /// `batch` is `table`'s rows of `window` from one worker (a window's rows of one table
    /// may come in one batch per worker).
    fn window(&self, table: Table, window: u64, batch: &RecordBatch) -> Result<()>;
}

/// Several observers, each shown every window in turn (the first error stops the rest).
#[derive(Debug, Default)]
pub struct Observers(pub Vec<std::sync::Arc<dyn WindowObserver>>);

impl WindowObserver for Observers {
    fn window(&self, table: Table, window: u64, batch: &RecordBatch) -> Result<()> {
        self.0
            .iter()
            .try_for_each(|o| o.window(table, window, batch))
    }
}

/// Creates the sinks of a dataflow.
pub trait SinkFactory {
    /// The sink of `table` on worker `worker`.
    fn sink(&self, table: Table, worker: usize) -> Box<dyn WindowSink>;
}

/// The backfill's sinks: a [`PartitionedWriter`] per table and worker under `root`.
#[derive(Clone, Debug)]
pub struct PartitionedSinks {
    /// The output (staging) directory.
    pub root: PathBuf,
    /// Windows, for the date partitions.
    pub spec: personaflow_operators::WindowSpec,
    /// Rows per row group.
    pub row_group_rows: usize,
    /// Also shown every window written (`None`: nothing is).
    pub observer: Option<std::sync::Arc<dyn WindowObserver>>,
}

impl SinkFactory for PartitionedSinks {
    fn sink(&self, table: Table, worker: usize) -> Box<dyn WindowSink> {
        Box::new(PartitionedSink {
            writer: PartitionedWriter::new(&self.root, table, worker, self.row_group_rows),
            spec: self.spec,
            observer: self.observer.clone(),
        })
    }
}

#[derive(Debug)]
struct PartitionedSink {
    writer: PartitionedWriter,
    spec: personaflow_operators::WindowSpec,
    observer: Option<std::sync::Arc<dyn WindowObserver>>,
}

impl WindowSink for PartitionedSink {
    fn table(&self) -> Table {
        self.writer.table()
    }

    fn write_window(&mut self, window: u64, batch: &RecordBatch) -> Result<u64> {
        self.write_windows(&[(window, batch.num_rows())], batch)
    }

    /// The windows of each date partition go to the writer as one slice of `batch` (a run of
    /// short windows costs about what one window of all their rows does); then the observer
    /// is shown each window's own rows.
    fn write_windows(&mut self, windows: &[(u64, usize)], batch: &RecordBatch) -> Result<u64> {
        let spec = self.spec;
        let day = |w: u64| spec.start_ms(w).div_euclid(MS_PER_DAY);
        let mut offset = 0;
        for run in windows.chunk_by(|a, b| day(a.0) == day(b.0)) {
            let rows: usize = run.iter().map(|(_, n)| n).sum();
            let partition = date_partition(spec.start_ms(run[0].0));
            self.writer
                .write(Some(&partition), &batch.slice(offset, rows))?;
            offset += rows;
        }
        if let Some(o) = &self.observer {
            let mut start = 0;
            for &(window, rows) in windows {
                o.window(self.writer.table(), window, &batch.slice(start, rows))?;
                start += rows;
            }
        }
        Ok(offset as u64)
    }

    fn advance(&mut self, frontier: Option<u64>) -> Result<()> {
        if frontier.is_none() {
            self.writer.finish()?;
        }
        Ok(())
    }
}

/// Milliseconds in a (UTC) day: windows starting on the same day (`start_ms / MS_PER_DAY`)
/// share a date partition.
const MS_PER_DAY: i64 = 86_400_000;

/// The partition of the empty file of a table without rows when the run had no window:
/// `date=1970-01-01` (readers infer a partition column's type from its values, and pyarrow
/// refuses a table whose only partition is Hive's null, `__HIVE_DEFAULT_PARTITION__`).
pub const EPOCH_PARTITION: &str = "1970-01-01";

/// Gives every table of `tables` without a file under `root` one Parquet file with no rows
/// and the table's schema, in the date partition `partition`, so that every table exists for
/// readers (DuckDB's, Polars' and pyarrow's globs and datasets) even when it has no rows.
/// Returns the tables that got one.
pub fn write_empty_tables(
    root: &Path,
    tables: &[Table],
    partition: &str,
    row_group_rows: usize,
) -> Result<Vec<Table>> {
    let mut written = Vec::new();
    for &table in tables {
        let dir = root.join(table.name());
        if dir.is_dir() && has_parquet_file(&dir).map_err(|e| Error::io(&dir, e))? {
            continue;
        }
        let mut writer = PartitionedWriter::new(root, table, 0, row_group_rows);
        writer.write_empty(partition)?;
        written.push(table);
    }
    Ok(written)
}

/// Whether `dir` holds a `.parquet` file, at any depth.
fn has_parquet_file(dir: &Path) -> std::io::Result<bool> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            if has_parquet_file(&path)? {
                return Ok(true);
            }
        } else if path.extension().is_some_and(|e| e == "parquet") {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The (last) window end encoded in a window file's name (`w{window_end_ms}-{worker}.parquet`,
/// `w{first_end_ms}-{last_end_ms}-{worker}.parquet`, and the operator-state files
/// `w{window_end_ms}-{worker}.state`): see [`crate::window_file`].
pub fn window_end_of_file(name: &str) -> Option<i64> {
    crate::window_file::window_range_of_file(name).map(|(_, last)| last)
}

/// The `date=YYYY-MM-DD` partition of a window, by the window's start (UTC).
pub fn date_partition(window_start_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(window_start_ms)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| "unknown".to_string())
}

/// The compression of every output file's column chunks: Snappy, what pyarrow and Spark write
/// by default and every Parquet reader reads.
///
/// Not zstd: the `parquet` crate makes a zstd compressor and decompressor for every column chunk
/// it writes, and each asks the CPU for its features (`cpuid`, three times), which a virtual
/// machine traps: 7.7 µs a `cpuid` on the 2-core KVM machine of `BENCHMARKS.md`, about 45 µs a
/// column chunk. A backfill over many days writes a file per table, worker and day, and a
/// catching-up continuous job one per table and worker every poll: on the CDNOW log over 546
/// days 40% of a 1-day-window backfill's CPU went to making zstd contexts, and Snappy took it
/// from 4.6 to 1.8 s. On one dense day the files are about a third larger than zstd's
/// (189 against 143 MB) and the run 4% faster, with 60 MB less peak RSS.
pub const OUTPUT_COMPRESSION: Compression = Compression::SNAPPY;

/// The Parquet writer properties of `table`'s files: [`OUTPUT_COMPRESSION`], `row_group_rows`
/// rows per group.
pub fn writer_properties(table: Table, row_group_rows: usize) -> WriterProperties {
    writer_properties_for(&table.schema(), row_group_rows)
}

/// The Parquet writer properties of files of `schema`: [`OUTPUT_COMPRESSION`], `row_group_rows`
/// rows per group, dictionaries for string columns, in lists too.
pub fn writer_properties_for(schema: &Schema, row_group_rows: usize) -> WriterProperties {
    // Dictionary encoding pays off for the repetitive string columns (users, segments,
    // context, reasons, the persona names and app classes of a policy's lists), not for
    // floats, where it only costs time. On the dense day's policies, dictionaries for the
    // three lists of strings took writing from 0.60 to 0.54 s and the files from 59 to 49 MB
    // (BENCHMARKS.md, "Lists of strings as dictionaries").
    let mut props = WriterProperties::builder()
        .set_compression(OUTPUT_COMPRESSION)
        .set_max_row_group_row_count(Some(row_group_rows.max(1)))
        .set_dictionary_enabled(false);
    for path in string_leaves(schema) {
        props = props.set_column_dictionary_enabled(path, true);
    }
    props.build()
}

/// The Parquet paths of `schema`'s string leaves (`user_id`; `personas.list.item` for a list
/// of strings), as the Arrow writer names them.
fn string_leaves(schema: &Schema) -> Vec<ColumnPath> {
    // The paths come from the writer's own conversion: a list's leaf is named by it, not here.
    let Ok(parquet) = ArrowSchemaConverter::new().convert(schema) else {
        // A schema the writer cannot convert fails when a file is opened, with its path.
        return Vec::new();
    };
    parquet
        .columns()
        .iter()
        .filter(|c| matches!(c.logical_type_ref(), Some(LogicalType::String)))
        .map(|c| c.path().clone())
        .collect()
}

/// Rows a [`PartitionedWriter`] gathers from small batches before it hands them to the
/// Parquet writer as one: each hand-over costs the same per column whatever its rows (levels,
/// encoder calls), and a window's batch of a sparse run holds a row or two, so without
/// gathering the sinks of a run of short windows cost in proportion to its windows.
pub const WRITE_BATCH_ROWS: usize = 1_024;

/// Small batches a [`PartitionedWriter`] holds at most before writing them (a small batch
/// keeps whole buffers: this bounds the memory they hold).
pub const WRITE_BATCH_PARTS: usize = 64;

/// Writes one table of one worker: one Parquet file per date partition it sees, named
/// `part-{worker:03}-{seq:05}.parquet`, compressed with [`OUTPUT_COMPRESSION`]. Small batches
/// are gathered (up to [`WRITE_BATCH_ROWS`] rows or [`WRITE_BATCH_PARTS`] batches) and written
/// as one; a file is complete only when it is closed either way.
#[derive(Debug)]
pub struct PartitionedWriter {
    dir: PathBuf,
    table: Table,
    worker: usize,
    props: WriterProperties,
    current: Option<(String, PathBuf, ArrowWriter<File>)>,
    pending: Vec<RecordBatch>,
    pending_rows: usize,
    seq: usize,
    rows: u64,
    files: Vec<PathBuf>,
}

impl PartitionedWriter {
    /// A writer for `table` under `root/<table>/`.
    pub fn new(root: &Path, table: Table, worker: usize, row_group_rows: usize) -> Self {
        let props = writer_properties(table, row_group_rows);
        PartitionedWriter {
            dir: root.join(table.name()),
            table,
            worker,
            props,
            current: None,
            pending: Vec::new(),
            pending_rows: 0,
            seq: 0,
            rows: 0,
            files: Vec::new(),
        }
    }

    /// Appends a batch to partition `partition` (`None`: the table is not partitioned).
    pub fn write(&mut self, partition: Option<&str>, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let key = partition.unwrap_or("");
        if self.current.as_ref().map(|c| c.0.as_str()) != Some(key) {
            self.close_current()?;
            let dir = match partition {
                Some(p) => self.dir.join(format!("date={p}")),
                None => self.dir.clone(),
            };
            std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
            let path = dir.join(format!("part-{:03}-{:05}.parquet", self.worker, self.seq));
            self.seq += 1;
            let file = File::create(&path).map_err(|e| Error::io(&path, e))?;
            let writer = ArrowWriter::try_new(file, self.table.schema(), Some(self.props.clone()))
                .map_err(|e| Error::parquet(&path, e))?;
            self.current = Some((key.to_string(), path, writer));
        }
        self.rows += batch.num_rows() as u64;
        if batch.num_rows() >= WRITE_BATCH_ROWS {
            self.flush_pending()?;
            return self.write_current(batch);
        }
        self.pending.push(batch.clone());
        self.pending_rows += batch.num_rows();
        if self.pending_rows >= WRITE_BATCH_ROWS || self.pending.len() >= WRITE_BATCH_PARTS {
            self.flush_pending()?;
        }
        Ok(())
    }

    /// Writes the gathered batches to the open file as one.
    fn flush_pending(&mut self) -> Result<()> {
        let batch = match self.pending.len() {
            0 => return Ok(()),
            1 => self.pending.pop().expect("one batch"),
            _ => {
                let schema = self.pending[0].schema();
                let batch = arrow_select::concat::concat_batches(&schema, &self.pending);
                let path = self.current.as_ref().map_or(&self.dir, |c| &c.1);
                batch.map_err(|source| Error::Arrow {
                    path: path.clone(),
                    source,
                })?
            }
        };
        self.pending.clear();
        self.pending_rows = 0;
        self.write_current(&batch)
    }

    fn write_current(&mut self, batch: &RecordBatch) -> Result<()> {
        let (_, path, writer) = self.current.as_mut().expect("a file is open");
        writer
            .write(batch)
            .map_err(|e| Error::parquet(path.as_path(), e))
    }

    fn close_current(&mut self) -> Result<()> {
        if self.current.is_some() {
            self.flush_pending()?;
        }
        if let Some((_, path, writer)) = self.current.take() {
            writer.close().map_err(|e| Error::parquet(&path, e))?;
            self.files.push(path);
        }
        Ok(())
    }

    /// Closes the open file; returns rows written.
    pub fn finish(&mut self) -> Result<u64> {
        self.close_current()?;
        Ok(self.rows)
    }

    /// Like [`finish`](Self::finish), but writes a file with no rows (and the table's schema)
    /// if nothing was written, so the table always exists for readers.
    pub fn finish_unpartitioned(&mut self) -> Result<u64> {
        if self.rows == 0 && self.current.is_none() && self.files.is_empty() {
            let dir = self.dir.clone();
            self.write_empty_file(&dir)?;
        }
        self.finish()
    }

    /// Writes a file with no rows (and the table's schema) into partition `partition`.
    pub fn write_empty(&mut self, partition: &str) -> Result<()> {
        self.close_current()?;
        let dir = self.dir.join(format!("date={partition}"));
        self.write_empty_file(&dir)
    }

    fn write_empty_file(&mut self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let path = dir.join(format!("part-{:03}-{:05}.parquet", self.worker, self.seq));
        self.seq += 1;
        let file = File::create(&path).map_err(|e| Error::io(&path, e))?;
        let writer = ArrowWriter::try_new(file, self.table.schema(), Some(self.props.clone()))
            .map_err(|e| Error::parquet(&path, e))?;
        writer.close().map_err(|e| Error::parquet(&path, e))?;
        self.files.push(path);
        Ok(())
    }

    /// The table written.
    pub fn table(&self) -> Table {
        self.table
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Files completed so far.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::{ResonanceRow, TableRow};
    use arrow_schema::DataType;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use personaflow_operators::WindowSpec;
    use std::collections::BTreeMap;

    /// A resonance row of `user` at `window_end`.
    fn resonance_row(window_end: i64, user: &str) -> ResonanceRow {
        ResonanceRow {
            window_end,
            user_id: user.into(),
            segment: "gamer".into(),
            cosine: 0.5,
            probability: 0.9,
            resonating: true,
            top: true,
            cold_start: false,
        }
    }

    #[test]
    fn small_batches_are_gathered_and_every_row_written_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = PartitionedWriter::new(dir.path(), Table::Resonance, 0, 500);
        let row = |we: i64| resonance_row(we, &format!("u{we}"));
        // One- to three-row batches in three partitions, a large batch among them, more
        // batches than one write gathers.
        let mut expected: Vec<Vec<i64>> = vec![Vec::new(); 3];
        let mut we = 0i64;
        for (p, day) in ["2026-01-05", "2026-01-06", "2026-01-07"]
            .iter()
            .enumerate()
        {
            for i in 0..(WRITE_BATCH_PARTS * 3 + 7) {
                let n = if i == 50 {
                    WRITE_BATCH_ROWS + 3
                } else {
                    1 + i % 3
                };
                let rows: Vec<ResonanceRow> = (0..n)
                    .map(|_| {
                        we += 1;
                        expected[p].push(we);
                        row(we)
                    })
                    .collect();
                w.write(Some(day), &ResonanceRow::to_batch(&rows)).unwrap();
            }
        }
        let total: usize = expected.iter().map(Vec::len).sum();
        assert_eq!(w.finish().unwrap(), total as u64);
        let files = w.files().to_vec();
        assert_eq!(files.len(), 3);
        for (file, want) in files.iter().zip(&expected) {
            let f = File::open(file).unwrap();
            let got: Vec<i64> = ParquetRecordBatchReaderBuilder::try_new(f)
                .unwrap()
                .build()
                .unwrap()
                .flat_map(|b| {
                    let b = b.unwrap();
                    let ends = arrow_cast::cast(b.column(0), &DataType::Int64).unwrap();
                    let ends = ends
                        .as_any()
                        .downcast_ref::<arrow_array::Int64Array>()
                        .unwrap()
                        .values()
                        .to_vec();
                    ends
                })
                .collect();
            assert_eq!(&got, want, "{}", file.display());
        }
    }

    #[test]
    fn string_columns_and_lists_of_strings_are_dictionary_encoded_and_nothing_else() {
        for table in Table::ALL {
            let schema = table.schema();
            let props = writer_properties(table, 1_024);
            let parquet = ArrowSchemaConverter::new().convert(&schema).unwrap();
            for column in parquet.columns() {
                let text = column.physical_type() == parquet::basic::Type::BYTE_ARRAY;
                assert_eq!(
                    props.dictionary_enabled(column.path()),
                    text,
                    "{}: {}",
                    table.name(),
                    column.path()
                );
            }
        }
        // In a file: the policy's lists of names are dictionaries, its probabilities are not.
        let dir = tempfile::tempdir().unwrap();
        let mut w = PartitionedWriter::new(dir.path(), Table::Policies, 0, 1_024);
        let row = crate::tables::PolicyRow {
            window_end: 60_000,
            user_id: "u1".into(),
            persona: "gamer".into(),
            personas: vec!["gamer".into(), "default".into()],
            probabilities: vec![0.9, 0.1],
            diffserv_class: "real-time-interactive".into(),
            dscp: 34,
            endpoint_class: "game-server".into(),
            floor_bps: 1,
            guaranteed_bps: 2,
            ceiling_bps: 3,
            allocated_bps: 2,
            sized_for_bps: 2,
            burst_bytes: 4,
            priority_weight: 1.0,
            latency_target_ms: 50.0,
            rate_limit_rps: 5.0,
            request_limit_rps: 10.0,
            send_buffer_min: 4_096,
            send_buffer_max: 65_536,
            receive_buffer_min: 4_096,
            receive_buffer_max: 65_536,
            authentication: "password",
            inspection: "metadata",
            allowed_app_classes: vec!["gaming".into(), "web".into()],
            allowed_ports: vec!["443".into()],
            vpn_required: false,
            current_bytes: 10,
            current_requests: 1,
        };
        let rows = vec![row; 3];
        w.write(
            Some("1970-01-01"),
            &crate::tables::PolicyRow::to_batch(&rows),
        )
        .unwrap();
        w.finish().unwrap();
        let f = File::open(&w.files()[0]).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(f).unwrap();
        let group = &reader.metadata().row_groups()[0];
        let dictionary = |leaf: &str| {
            let column = group
                .columns()
                .iter()
                .find(|c| c.column_path().string() == leaf)
                .unwrap_or_else(|| panic!("no column {leaf}"));
            column.dictionary_page_offset().is_some()
        };
        for leaf in [
            "user_id",
            "personas.list.item",
            "allowed_app_classes.list.item",
        ] {
            assert!(dictionary(leaf), "{leaf}");
        }
        for leaf in ["probabilities.list.item", "floor_bps"] {
            assert!(!dictionary(leaf), "{leaf}");
        }
    }

    #[test]
    fn partitioned_writer_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = PartitionedWriter::new(dir.path(), Table::Resonance, 1, 1024);
        let row = |we: i64| resonance_row(we, "u");
        w.write(
            Some("2026-01-05"),
            &ResonanceRow::to_batch(&[row(1), row(2)]),
        )
        .unwrap();
        w.write(Some("2026-01-06"), &ResonanceRow::to_batch(&[row(3)]))
            .unwrap();
        assert_eq!(w.finish().unwrap(), 3);
        let files = w.files().to_vec();
        assert_eq!(files.len(), 2);
        assert!(files[0].ends_with("resonance/date=2026-01-05/part-001-00000.parquet"));
        let f = File::open(&files[0]).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(f).unwrap();
        for group in reader.metadata().row_groups() {
            for column in group.columns() {
                assert_eq!(column.compression(), OUTPUT_COMPRESSION);
            }
        }
        let rows: usize = reader.build().unwrap().map(|b| b.unwrap().num_rows()).sum();
        assert_eq!(rows, 2);
    }

    /// Records every window an observer is shown, with its rows' window ends.
    #[derive(Debug, Default)]
    struct Seen(std::sync::Mutex<Vec<(u64, Vec<i64>)>>);

    impl WindowObserver for Seen {
        fn window(&self, _: Table, window: u64, batch: &RecordBatch) -> Result<()> {
            self.0.lock().unwrap().push((window, window_ends(batch)));
            Ok(())
        }
    }

    fn window_ends(batch: &RecordBatch) -> Vec<i64> {
        let ends = arrow_cast::cast(batch.column(0), &DataType::Int64).unwrap();
        let ends = ends.as_any().downcast_ref::<arrow_array::Int64Array>();
        ends.unwrap().values().to_vec()
    }

    /// Each partition's files under `root`, and the window ends of their rows in order.
    fn partition_rows(root: &Path) -> BTreeMap<String, Vec<i64>> {
        let mut out = BTreeMap::new();
        for day in std::fs::read_dir(root.join("resonance")).unwrap() {
            let day = day.unwrap().path();
            let mut files: Vec<PathBuf> = std::fs::read_dir(&day)
                .unwrap()
                .map(|f| f.unwrap().path())
                .collect();
            files.sort();
            let rows: Vec<i64> = files
                .iter()
                .flat_map(|f| {
                    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(f).unwrap());
                    let batches = reader.unwrap().build().unwrap();
                    batches.flat_map(|b| window_ends(&b.unwrap()))
                })
                .collect();
            let name = day.file_name().unwrap().to_string_lossy().into_owned();
            out.insert(name, rows);
        }
        out
    }

    #[test]
    fn windows_written_together_land_as_when_written_one_by_one() {
        // 5-hour windows over four days, one to four rows each, some windows without rows.
        let spec = WindowSpec::try_new(5 * 3_600_000).unwrap();
        let windows: Vec<(u64, usize)> = (0..20).map(|w| (w, (w as usize * 7) % 5)).collect();
        let windows: Vec<(u64, usize)> = windows.into_iter().filter(|(_, n)| *n > 0).collect();
        let rows: Vec<ResonanceRow> = windows
            .iter()
            .flat_map(|&(w, n)| {
                (0..n).map(move |i| resonance_row(spec.end_ms(w), &format!("u{i}")))
            })
            .collect();
        let batch = ResonanceRow::to_batch(&rows);
        let (one, together) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let seen = std::sync::Arc::new(Seen::default());
        let sinks = |root: &Path, observer: Option<std::sync::Arc<dyn WindowObserver>>| {
            PartitionedSinks {
                root: root.into(),
                spec,
                row_group_rows: 4,
                observer,
            }
            .sink(Table::Resonance, 0)
        };
        let mut by_one = sinks(one.path(), None);
        let mut offset = 0;
        for &(w, n) in &windows {
            by_one.write_window(w, &batch.slice(offset, n)).unwrap();
            offset += n;
        }
        by_one.advance(None).unwrap();
        let mut at_once = sinks(together.path(), Some(seen.clone()));
        assert_eq!(
            at_once.write_windows(&windows, &batch).unwrap(),
            rows.len() as u64
        );
        at_once.advance(None).unwrap();

        let expected = partition_rows(one.path());
        assert_eq!(
            expected.keys().collect::<Vec<_>>(),
            [
                "date=1970-01-01",
                "date=1970-01-02",
                "date=1970-01-03",
                "date=1970-01-04"
            ]
        );
        assert_eq!(partition_rows(together.path()), expected);
        // The observer is shown each window with its own rows.
        let shown = seen.0.lock().unwrap().clone();
        let want: Vec<(u64, Vec<i64>)> = windows
            .iter()
            .map(|&(w, n)| (w, vec![spec.end_ms(w); n]))
            .collect();
        assert_eq!(shown, want);
    }

    #[test]
    fn partitions_follow_the_window_start_date() {
        assert_eq!(date_partition(0), "1970-01-01");
        assert_eq!(date_partition(86_400_000 - 1), "1970-01-01");
        assert_eq!(date_partition(86_400_000), "1970-01-02");
    }
}
