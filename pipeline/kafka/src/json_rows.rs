//! Rows of a table as JSON objects (an output message holds one, or a key's rows in an array:
//! [`crate::messages`]): the bytes Arrow's JSON writer gives for each row
//! (`arrow_json::LineDelimitedWriter` over the batch with its timestamps relabelled `+00:00`,
//! nulls left out), encoded row by row without the writer's per-value dispatch, the copy of
//! the batch it needs and the split of its lines. A window's rows share their `window_end`, so
//! a timestamp is formatted once per value met, not once per row.
//!
//! The column types of personaflow's tables are encoded here; a batch with any other type is
//! refused by [`JsonRows::try_new`] (the caller then uses Arrow's writer).

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int32Type, Int64Type, TimestampMillisecondType, UInt32Type,
    UInt64Type,
};
use arrow_array::{Array, PrimitiveArray, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use chrono::{DateTime, SecondsFormat};

/// Encodes the rows of one batch.
///
/// ```
/// use arrow_array::{ArrayRef, Float32Array, RecordBatch, StringArray};
/// use personaflow_kafka::json_rows::JsonRows;
/// use std::sync::Arc;
///
/// let batch = RecordBatch::try_from_iter([
///     ("user_id", Arc::new(StringArray::from(vec!["u1", "u2"])) as ArrayRef),
///     ("cosine", Arc::new(Float32Array::from(vec![Some(0.5), None])) as ArrayRef),
/// ])
/// .unwrap();
/// let mut rows = JsonRows::try_new(&batch).unwrap();
/// let mut out = Vec::new();
/// rows.encode(1, &mut out);
/// assert_eq!(out, br#"{"user_id":"u2"}"#);
/// ```
#[derive(Debug)]
pub struct JsonRows<'a> {
    fields: Vec<FieldJson<'a>>,
}

#[derive(Debug)]
struct FieldJson<'a> {
    /// `"name":`, escaped as a JSON string.
    prefix: Vec<u8>,
    column: &'a dyn Array,
    value: ValueJson<'a>,
}

#[derive(Debug)]
enum ValueJson<'a> {
    Utf8(&'a arrow_array::StringArray),
    Boolean(&'a arrow_array::BooleanArray),
    UInt64(&'a PrimitiveArray<UInt64Type>),
    UInt32(&'a PrimitiveArray<UInt32Type>),
    Int64(&'a PrimitiveArray<Int64Type>),
    Int32(&'a PrimitiveArray<Int32Type>),
    Float32(&'a PrimitiveArray<Float32Type>),
    Float64(&'a PrimitiveArray<Float64Type>),
    /// Milliseconds, UTC; the last value formatted and its text.
    Timestamp(
        &'a PrimitiveArray<TimestampMillisecondType>,
        Option<(i64, Vec<u8>)>,
    ),
    /// A list (offsets into the values) of values of one of the other kinds.
    List(
        &'a arrow_array::ListArray,
        &'a dyn Array,
        Box<ValueJson<'a>>,
    ),
}

impl<'a> JsonRows<'a> {
    /// An encoder of `batch`'s rows; `None` if a column's type is not one it encodes.
    pub fn try_new(batch: &'a RecordBatch) -> Option<JsonRows<'a>> {
        let schema = batch.schema_ref();
        let mut fields = Vec::with_capacity(batch.num_columns());
        for (field, column) in schema.fields().iter().zip(batch.columns()) {
            let column = column.as_ref();
            let value = ValueJson::try_new(column)?;
            let mut prefix = Vec::with_capacity(field.name().len() + 3);
            string(field.name(), &mut prefix);
            prefix.push(b':');
            fields.push(FieldJson {
                prefix,
                column,
                value,
            });
        }
        Some(JsonRows { fields })
    }

    /// Appends row `row` to `out` as one JSON object (null fields left out).
    pub fn encode(&mut self, row: usize, out: &mut Vec<u8>) {
        out.push(b'{');
        let mut first = true;
        for f in &mut self.fields {
            if f.column.is_null(row) {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(&f.prefix);
            f.value.encode(row, out);
        }
        out.push(b'}');
    }
}

impl<'a> ValueJson<'a> {
    /// The encoder of `column`'s values; `None` for a type it does not know.
    fn try_new(column: &'a dyn Array) -> Option<ValueJson<'a>> {
        Some(match column.data_type() {
            DataType::Utf8 => ValueJson::Utf8(column.as_string::<i32>()),
            DataType::Boolean => ValueJson::Boolean(column.as_boolean()),
            DataType::UInt64 => ValueJson::UInt64(column.as_primitive()),
            DataType::UInt32 => ValueJson::UInt32(column.as_primitive()),
            DataType::Int64 => ValueJson::Int64(column.as_primitive()),
            DataType::Int32 => ValueJson::Int32(column.as_primitive()),
            DataType::Float32 => ValueJson::Float32(column.as_primitive()),
            DataType::Float64 => ValueJson::Float64(column.as_primitive()),
            DataType::Timestamp(TimeUnit::Millisecond, Some(tz))
                if matches!(tz.as_ref(), "UTC" | "+00:00") =>
            {
                ValueJson::Timestamp(column.as_primitive(), None)
            }
            DataType::List(_) => {
                let list = column.as_list::<i32>();
                let values = list.values().as_ref();
                ValueJson::List(list, values, Box::new(ValueJson::try_new(values)?))
            }
            _ => return None,
        })
    }

    fn encode(&mut self, row: usize, out: &mut Vec<u8>) {
        match self {
            ValueJson::Utf8(a) => string(a.value(row), out),
            ValueJson::Boolean(a) => {
                out.extend_from_slice(if a.value(row) { b"true" } else { b"false" })
            }
            ValueJson::UInt64(a) => integer(a.value(row), out),
            ValueJson::UInt32(a) => integer(a.value(row), out),
            ValueJson::Int64(a) => integer(a.value(row), out),
            ValueJson::Int32(a) => integer(a.value(row), out),
            ValueJson::Float32(a) => float(a.value(row), a.value(row).is_finite(), out),
            ValueJson::Float64(a) => float(a.value(row), a.value(row).is_finite(), out),
            ValueJson::Timestamp(a, last) => {
                let ms = a.value(row);
                if last.as_ref().is_none_or(|(m, _)| *m != ms) {
                    *last = Some((ms, timestamp(ms)));
                }
                if let Some((_, text)) = last {
                    out.extend_from_slice(text);
                }
            }
            ValueJson::List(list, values, value) => {
                let (start, end) = (
                    list.value_offsets()[row] as usize,
                    list.value_offsets()[row + 1] as usize,
                );
                out.push(b'[');
                for i in start..end {
                    if i != start {
                        out.push(b',');
                    }
                    if values.is_null(i) {
                        out.extend_from_slice(b"null");
                    } else {
                        value.encode(i, out);
                    }
                }
                out.push(b']');
            }
        }
    }
}

/// A JSON string, escaped as `serde_json` (and Arrow's writer) escape it.
fn string(s: &str, out: &mut Vec<u8>) {
    serde_json::to_writer(out, s).expect("writing to a Vec cannot fail");
}

fn integer<N: lexical_core::ToLexical>(n: N, out: &mut Vec<u8>) {
    let mut buf = [0u8; lexical_core::BUFFER_SIZE];
    out.extend_from_slice(lexical_core::write(n, &mut buf));
}

/// A float in the shortest form that reads back the same when `finite`; `null` otherwise.
fn float<N: lexical_core::ToLexical>(n: N, finite: bool, out: &mut Vec<u8>) {
    if finite {
        let mut buf = [0u8; lexical_core::BUFFER_SIZE];
        out.extend_from_slice(lexical_core::write(n, &mut buf));
    } else {
        out.extend_from_slice(b"null");
    }
}

/// A UTC timestamp in milliseconds as Arrow's writer formats it, unquoted: RFC 3339 with as
/// many fractional digits as needed, `+00:00`.
pub(crate) fn timestamp_text(ms: i64) -> String {
    match DateTime::from_timestamp_millis(ms) {
        Some(t) => t
            .with_timezone(&chrono::FixedOffset::east_opt(0).expect("zero offset"))
            .to_rfc3339_opts(SecondsFormat::AutoSi, true),
        None => format!("ERROR: timestamp {ms} out of range"),
    }
}

/// A UTC timestamp in milliseconds as Arrow's writer formats it, quoted: RFC 3339 with as
/// many fractional digits as needed.
fn timestamp(ms: i64) -> Vec<u8> {
    let text = timestamp_text(ms);
    let mut out = Vec::with_capacity(text.len() + 2);
    string(&text, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::builder::{
        BooleanBuilder, Float32Builder, Float64Builder, Int32Builder, Int64Builder, ListBuilder,
        StringBuilder, TimestampMillisecondBuilder, UInt32Builder, UInt64Builder,
    };
    use arrow_array::ArrayRef;
    use arrow_schema::{Field, Schema};
    use rand::{Rng, SeedableRng};
    use std::sync::Arc;

    /// Arrow's writer: the lines of `batch` with its timestamps relabelled `+00:00`.
    fn arrow_lines(batch: &RecordBatch) -> Vec<Vec<u8>> {
        let batch = personaflow_io::tables::utc_offset_timestamps(batch);
        let mut w = arrow_json::LineDelimitedWriter::new(Vec::new());
        w.write(&batch).unwrap();
        w.finish().unwrap();
        w.into_inner()
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect()
    }

    fn ours(batch: &RecordBatch) -> Vec<Vec<u8>> {
        let mut rows = JsonRows::try_new(batch).expect("encodable");
        (0..batch.num_rows())
            .map(|r| {
                let mut out = Vec::new();
                rows.encode(r, &mut out);
                out
            })
            .collect()
    }

    fn f32_of(rng: &mut impl Rng) -> f32 {
        match rng.random_range(0..10) {
            0 => f32::NAN,
            1 => f32::INFINITY,
            2 => f32::NEG_INFINITY,
            3 => 0.0,
            4 => -0.0,
            5 => rng.random_range(-1e30f32..1e30),
            6 => rng.random_range(-1e-30f32..1e-30),
            7 => f32::from_bits(rng.random()),
            _ => rng.random_range(-10.0f32..10.0),
        }
    }

    fn text_of(rng: &mut impl Rng) -> String {
        const PIECES: [&str; 9] = ["u", "ä", "\"", "\\", "\n", "\u{1}", "😀", "/", " "];
        (0..rng.random_range(0..6))
            .map(|_| PIECES[rng.random_range(0..PIECES.len())])
            .collect()
    }

    /// A batch of every type the tables use, nulls where a field allows them.
    fn random_batch(rng: &mut impl Rng, rows: usize) -> RecordBatch {
        let null = |rng: &mut dyn rand::RngCore| rng.random_bool(0.2);
        let mut ts = TimestampMillisecondBuilder::new().with_timezone("UTC");
        let mut text = StringBuilder::new();
        let mut opt_text = StringBuilder::new();
        let mut b = BooleanBuilder::new();
        let (mut u64s, mut u32s) = (UInt64Builder::new(), UInt32Builder::new());
        let (mut i64s, mut i32s) = (Int64Builder::new(), Int32Builder::new());
        let (mut f32s, mut opt_f32s) = (Float32Builder::new(), Float32Builder::new());
        let mut f64s = Float64Builder::new();
        let mut list = ListBuilder::new(Float32Builder::new());
        let mut texts = ListBuilder::new(StringBuilder::new());
        let mut ids = ListBuilder::new(UInt32Builder::new());
        let shared_end = rng.random_range(-10_000_000_000_000i64..10_000_000_000_000);
        for _ in 0..rows {
            let ms = match rng.random_range(0..4) {
                0 => shared_end,
                1 => shared_end - shared_end.rem_euclid(60_000),
                _ => rng.random_range(-10_000_000_000_000i64..10_000_000_000_000),
            };
            ts.append_value(ms);
            text.append_value(text_of(rng));
            if null(rng) {
                opt_text.append_null();
            } else {
                opt_text.append_value(text_of(rng));
            }
            b.append_value(rng.random());
            u64s.append_value(rng.random());
            u32s.append_value(rng.random());
            i64s.append_value(rng.random());
            i32s.append_value(rng.random());
            f32s.append_value(f32_of(rng));
            if null(rng) {
                opt_f32s.append_null();
            } else {
                opt_f32s.append_value(f32_of(rng));
            }
            f64s.append_value(match rng.random_range(0..4) {
                0 => f64::NAN,
                1 => f64::from_bits(rng.random()),
                _ => rng.random_range(-1e6..1e6),
            });
            if null(rng) {
                list.append_null();
            } else {
                for _ in 0..rng.random_range(0..5) {
                    if rng.random_bool(0.1) {
                        list.values().append_null();
                    } else {
                        list.values().append_value(f32_of(rng));
                    }
                }
                list.append(true);
            }
            for _ in 0..rng.random_range(0..3) {
                texts.values().append_value(text_of(rng));
                ids.values().append_value(rng.random());
            }
            texts.append(true);
            ids.append(true);
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(ts.finish()),
            Arc::new(text.finish()),
            Arc::new(opt_text.finish()),
            Arc::new(b.finish()),
            Arc::new(u64s.finish()),
            Arc::new(u32s.finish()),
            Arc::new(i64s.finish()),
            Arc::new(i32s.finish()),
            Arc::new(f32s.finish()),
            Arc::new(opt_f32s.finish()),
            Arc::new(f64s.finish()),
            Arc::new(list.finish()),
            Arc::new(texts.finish()),
            Arc::new(ids.finish()),
        ];
        let names = [
            "window_end",
            "user_id",
            "se\"gment",
            "top",
            "events",
            "windows",
            "profiles",
            "k",
            "cosine",
            "anomaly_score",
            "mean",
            "embedding",
            "top_features",
            "persona_ids",
        ];
        let fields: Vec<Field> = names
            .iter()
            .zip(&columns)
            .map(|(n, c)| Field::new(*n, c.data_type().clone(), true))
            .collect();
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
    }

    #[test]
    fn rows_are_the_bytes_of_arrows_writer() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(17);
        for _ in 0..200 {
            let rows = rng.random_range(0..40);
            let batch = random_batch(&mut rng, rows);
            let (a, o) = (arrow_lines(&batch), ours(&batch));
            assert_eq!(a.len(), o.len());
            for (a, o) in a.iter().zip(&o) {
                assert_eq!(
                    String::from_utf8_lossy(o),
                    String::from_utf8_lossy(a),
                    "row differs"
                );
            }
        }
    }

    #[test]
    fn every_published_table_is_encoded_as_arrows_writer_encodes_it() {
        use personaflow_io::tables::Table;
        for table in Table::ALL {
            let batch = RecordBatch::new_empty(table.schema());
            assert!(
                JsonRows::try_new(&batch).is_some(),
                "{} has a column type the row encoder does not know",
                table.name()
            );
        }
    }

    #[test]
    fn other_types_are_refused() {
        let a: ArrayRef = Arc::new(arrow_array::Date32Array::from(vec![1]));
        let batch = RecordBatch::try_from_iter([("d", a)]).unwrap();
        assert!(JsonRows::try_new(&batch).is_none());
    }
}
