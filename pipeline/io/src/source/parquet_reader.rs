//! Parquet reader: streams record batches of at most `chunk_rows` rows (a row group at a
//! time), projecting only the columns the mapping needs, and coerces physical types:
//! timestamps of any unit and time zone, dates, integers of any width, floats and decimals,
//! strings (plain, large, view, dictionary-encoded, binary) and booleans.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, UInt64Type};
use arrow_array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray, UInt64Array,
};
use arrow_schema::{DataType, TimeUnit};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ProjectionMask;
use parquet::errors::ParquetError;

use super::convert::{Cell, Cells, MS_PER_DAY, N_FIELDS};
use super::mapping::Compiled;
use super::{locate_columns, null_cells, push_row, Chunk, EventReader};
use crate::schema::CANONICAL_COLUMNS;
use crate::{Error, InputErrorKind, Result};

/// What a source column is converted to before its rows are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// All nulls.
    Null,
    /// Text (cast to `Utf8`).
    Str,
    /// Signed integer (cast to `Int64`).
    Int,
    /// Unsigned integer (cast to `UInt64`).
    UInt,
    /// Float or decimal (cast to `Float64`).
    Float,
    /// Boolean.
    Bool,
    /// Timestamp or date: raw `Int64` values times `mul`, divided by `div` = milliseconds.
    Ts { mul: i64, div: i64 },
}

/// The target for an Arrow type, or `None` if it cannot feed a canonical column.
fn target(data_type: &DataType) -> Option<Target> {
    const MS_PER_S: i64 = 1_000;
    const US_PER_MS: i64 = 1_000;
    const NS_PER_MS: i64 = 1_000_000;
    use DataType as D;
    Some(match data_type {
        D::Null => Target::Null,
        D::Utf8 | D::LargeUtf8 | D::Utf8View | D::Binary | D::LargeBinary | D::BinaryView => {
            Target::Str
        }
        D::Int8 | D::Int16 | D::Int32 | D::Int64 => Target::Int,
        D::UInt8 | D::UInt16 | D::UInt32 | D::UInt64 => Target::UInt,
        D::Float16 | D::Float32 | D::Float64 | D::Decimal128(..) | D::Decimal256(..) => {
            Target::Float
        }
        D::Boolean => Target::Bool,
        D::Timestamp(unit, _) => match unit {
            TimeUnit::Second => Target::Ts {
                mul: MS_PER_S,
                div: 1,
            },
            TimeUnit::Millisecond => Target::Ts { mul: 1, div: 1 },
            TimeUnit::Microsecond => Target::Ts {
                mul: 1,
                div: US_PER_MS,
            },
            TimeUnit::Nanosecond => Target::Ts {
                mul: 1,
                div: NS_PER_MS,
            },
        },
        D::Date32 => Target::Ts {
            mul: MS_PER_DAY,
            div: 1,
        },
        D::Date64 => Target::Ts { mul: 1, div: 1 },
        D::Dictionary(_, values) => target(values)?,
        _ => return None,
    })
}

/// A batch column, converted for row access.
#[derive(Debug)]
enum ColumnView {
    Null,
    Str(StringArray),
    Int(Int64Array),
    UInt(UInt64Array),
    Float(Float64Array),
    Bool(BooleanArray),
    Ts {
        values: Int64Array,
        mul: i64,
        div: i64,
    },
}

impl ColumnView {
    fn new(
        array: &ArrayRef,
        target: Target,
    ) -> std::result::Result<Self, arrow_schema::ArrowError> {
        use arrow_cast::cast;
        Ok(match target {
            Target::Null => ColumnView::Null,
            Target::Str => {
                ColumnView::Str(cast(array, &DataType::Utf8)?.as_string::<i32>().clone())
            }
            Target::Int => ColumnView::Int(
                cast(array, &DataType::Int64)?
                    .as_primitive::<Int64Type>()
                    .clone(),
            ),
            Target::UInt => ColumnView::UInt(
                cast(array, &DataType::UInt64)?
                    .as_primitive::<UInt64Type>()
                    .clone(),
            ),
            Target::Float => ColumnView::Float(
                cast(array, &DataType::Float64)?
                    .as_primitive::<Float64Type>()
                    .clone(),
            ),
            Target::Bool => ColumnView::Bool(cast(array, &DataType::Boolean)?.as_boolean().clone()),
            Target::Ts { mul, div } => ColumnView::Ts {
                values: cast(array, &DataType::Int64)?
                    .as_primitive::<Int64Type>()
                    .clone(),
                mul,
                div,
            },
        })
    }

    fn cell(&self, row: usize) -> Cell<'_> {
        match self {
            ColumnView::Null => Cell::Null,
            ColumnView::Str(a) if a.is_valid(row) => Cell::Str(a.value(row)),
            ColumnView::Int(a) if a.is_valid(row) => Cell::Int(a.value(row)),
            ColumnView::UInt(a) if a.is_valid(row) => Cell::UInt(a.value(row)),
            ColumnView::Float(a) if a.is_valid(row) => Cell::Float(a.value(row)),
            ColumnView::Bool(a) if a.is_valid(row) => Cell::Bool(a.value(row)),
            ColumnView::Ts { values, mul, div } if values.is_valid(row) => values
                .value(row)
                .checked_mul(*mul)
                .map_or(Cell::Invalid("timestamp out of range"), |v| {
                    Cell::TsMs(v.div_euclid(*div))
                }),
            _ => Cell::Null,
        }
    }
}

/// A reader of one Parquet file.
pub(crate) struct ParquetReader {
    path: PathBuf,
    file_label: String,
    reader: ParquetRecordBatchReader,
    compiled: Compiled,
    /// Source column and its conversion, per canonical column present in the file.
    columns: [Option<(String, Target)>; N_FIELDS],
    rows: u64,
    done: bool,
    /// Rows and bytes of the whole file, for [`EventReader::bytes_read`].
    total_rows: u64,
    size_bytes: u64,
}

impl std::fmt::Debug for ParquetReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetReader")
            .field("path", &self.path)
            .field("columns", &self.columns)
            .field("rows", &self.rows)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

type Plan = [Option<(usize, Target)>; N_FIELDS];

impl ParquetReader {
    /// Opens the file and reads its footer (fails on corrupt or truncated files).
    fn builder(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| Error::parquet(path, e))
    }

    /// Which file column feeds each canonical column, and how it is converted.
    fn plan(path: &Path, compiled: &Compiled, schema: &arrow_schema::Schema) -> Result<Plan> {
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        let indices = locate_columns(path, compiled, &names, false)?;
        let mut plan: Plan = [None; N_FIELDS];
        for (i, idx) in indices.iter().enumerate() {
            let Some(idx) = *idx else { continue };
            let field = schema.field(idx);
            let target = target(field.data_type()).ok_or_else(|| {
                Error::bad_input(
                    path,
                    InputErrorKind::ColumnType {
                        column: field.name().to_string(),
                        canonical: CANONICAL_COLUMNS[i].to_string(),
                        data_type: field.data_type().to_string(),
                    },
                )
            })?;
            plan[i] = Some((idx, target));
        }
        Ok(plan)
    }

    /// Reads only the footer and checks the columns.
    pub(crate) fn check(path: &Path, compiled: &Compiled) -> Result<()> {
        let builder = Self::builder(path)?;
        Self::plan(path, compiled, builder.schema()).map(drop)
    }

    /// Opens a reader of batches of at most `chunk_rows` rows over the needed columns.
    pub(crate) fn open(path: &Path, compiled: Compiled, chunk_rows: usize) -> Result<Self> {
        let builder = Self::builder(path)?;
        let schema = builder.schema().clone();
        let plan = Self::plan(path, &compiled, &schema)?;
        let total_rows = u64::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0);
        let size_bytes = std::fs::metadata(path).map_or(0, |m| m.len());
        let roots: BTreeSet<usize> = plan.iter().flatten().map(|(idx, _)| *idx).collect();
        let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
        let reader = builder
            .with_projection(mask)
            .with_batch_size(chunk_rows)
            .build()
            .map_err(|e| Error::parquet(path, e))?;
        let columns = plan.map(|p| p.map(|(idx, t)| (schema.field(idx).name().clone(), t)));
        Ok(ParquetReader {
            path: path.to_path_buf(),
            file_label: path.display().to_string(),
            reader,
            compiled,
            columns,
            rows: 0,
            done: false,
            total_rows,
            size_bytes,
        })
    }
}

impl EventReader for ParquetReader {
    fn next_chunk(&mut self, chunk: &mut Chunk) -> Result<bool> {
        if self.done {
            return Ok(false);
        }
        let batch = match self.reader.next() {
            None => {
                self.done = true;
                return Ok(false);
            }
            Some(Err(e)) => {
                self.done = true;
                return Err(Error::parquet(
                    &self.path,
                    ParquetError::External(Box::new(e)),
                ));
            }
            Some(Ok(batch)) => batch,
        };
        let mut views: [Option<ColumnView>; N_FIELDS] = std::array::from_fn(|_| None);
        for (view, column) in views.iter_mut().zip(self.columns.iter()) {
            let Some((name, target)) = column else {
                continue;
            };
            let Some(array) = batch.column_by_name(name) else {
                continue;
            };
            *view = Some(
                ColumnView::new(array, *target).map_err(|source| Error::Arrow {
                    path: self.path.clone(),
                    source,
                })?,
            );
        }
        chunk.events.reserve(batch.num_rows());
        for row in 0..batch.num_rows() {
            let mut cells: Cells<'_> = null_cells();
            for (cell, view) in cells.iter_mut().zip(views.iter()) {
                if let Some(view) = view {
                    *cell = view.cell(row);
                }
            }
            self.rows += 1;
            let result = self.compiled.converter.event(&cells);
            push_row(result, &self.file_label, self.rows, chunk);
        }
        Ok(true)
    }

    fn rows_read(&self) -> u64 {
        self.rows
    }

    fn bytes_read(&self) -> u64 {
        if self.total_rows == 0 {
            return 0;
        }
        (self.size_bytes as f64 * self.rows as f64 / self.total_rows as f64) as u64
    }
}
