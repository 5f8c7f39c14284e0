//! NDJSON reader: one JSON object per line. Blank lines are skipped; a line that is not a
//! JSON object is a reject. Rows (of events and rejects) are line numbers in the file, blank
//! lines counted, so that `sed -n 'ROWp'` shows the line. Source columns are top-level keys, or dotted paths into nested
//! objects (`"id.orig_h"` finds the key `id.orig_h`, else `{"id": {"orig_h": ..}}`).

use std::borrow::Cow;
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use personaflow_operators::Event;
use serde_json::{Map, Value};

use super::convert::{Cell, Cells, N_FIELDS};
use super::mapping::{Compiled, SourceColumn};
use super::{
    missing_column, null_cells, open_text, push_row, record_error, Chunk, EventReader, FieldError,
};
use crate::schema::{CANONICAL_COLUMNS, REQUIRED_COLUMNS};
use crate::{Error, InputErrorKind, Result};

/// How many non-blank lines [`check`] reads at most to find a JSON object to check.
pub(crate) const NDJSON_CHECK_LINES: usize = 100;
/// The UTF-8 byte order mark.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Looks a source column up in an object: the exact key, else a dotted path.
fn lookup<'v>(object: &'v Map<String, Value>, key: &str) -> Option<&'v Value> {
    if let Some(v) = object.get(key) {
        return Some(v);
    }
    if !key.contains('.') {
        return None;
    }
    let mut parts = key.split('.');
    let mut current = object.get(parts.next()?)?;
    for part in parts {
        current = current.as_object()?.get(part)?;
    }
    Some(current)
}

fn json_cell(value: &Value) -> Cell<'_> {
    match value {
        Value::Null => Cell::Null,
        Value::Bool(b) => Cell::Bool(*b),
        Value::Number(n) => {
            if let Some(v) = n.as_i64() {
                Cell::Int(v)
            } else if let Some(v) = n.as_u64() {
                Cell::UInt(v)
            } else {
                n.as_f64()
                    .map_or(Cell::Invalid("unrepresentable number"), Cell::Float)
            }
        }
        Value::String(s) => Cell::Str(s),
        Value::Array(_) => Cell::Invalid("expected a scalar value, found a JSON array"),
        Value::Object(_) => Cell::Invalid("expected a scalar value, found a JSON object"),
    }
}

/// A top-level JSON object, with the first key it has twice (`serde_json`'s `Value` would
/// silently keep the last value). Anything but an object fails to deserialize with a data
/// error (valid JSON of another type).
struct TopObject {
    object: Map<String, Value>,
    duplicate: Option<String>,
}

impl<'de> serde::Deserialize<'de> for TopObject {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = TopObject;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<TopObject, A::Error> {
                let mut object = Map::new();
                let mut duplicate = None;
                while let Some((key, value)) = map.next_entry::<String, Value>()? {
                    if duplicate.is_none() && object.contains_key(&key) {
                        duplicate = Some(key.clone());
                    }
                    object.insert(key, value);
                }
                Ok(TopObject { object, duplicate })
            }
        }
        d.deserialize_map(Visitor)
    }
}

/// A JSON value as the converter reads it: scalars (strings borrowed from the input where
/// they hold no escapes), arrays and objects only as what they are. Every value is parsed in
/// full, as `serde_json::Value` parses it (the same errors for the same input), but nothing
/// is kept of arrays and objects and no map is built.
#[derive(Clone, Debug)]
enum Scalar<'de> {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(Cow<'de, str>),
    Array,
    Object,
}

impl Scalar<'_> {
    /// The cell [`json_cell`] makes of the same value.
    fn cell(&self) -> Cell<'_> {
        match self {
            Scalar::Null => Cell::Null,
            Scalar::Bool(b) => Cell::Bool(*b),
            Scalar::Int(v) => Cell::Int(*v),
            Scalar::UInt(v) => Cell::UInt(*v),
            Scalar::Float(v) => Cell::Float(*v),
            Scalar::Str(s) => Cell::Str(s),
            Scalar::Array => Cell::Invalid("expected a scalar value, found a JSON array"),
            Scalar::Object => Cell::Invalid("expected a scalar value, found a JSON object"),
        }
    }
}

struct ScalarVisitor;

impl<'de> serde::de::Visitor<'de> for ScalarVisitor {
    type Value = Scalar<'de>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> std::result::Result<Scalar<'de>, E> {
        Ok(Scalar::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> std::result::Result<Scalar<'de>, E> {
        Ok(Scalar::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> std::result::Result<Scalar<'de>, E> {
        // As `Number::as_i64` first, then `as_u64`.
        Ok(i64::try_from(v).map_or(Scalar::UInt(v), Scalar::Int))
    }
    fn visit_f64<E>(self, v: f64) -> std::result::Result<Scalar<'de>, E> {
        // `Value` makes a non-finite number null (JSON text cannot hold one).
        Ok(if v.is_finite() {
            Scalar::Float(v)
        } else {
            Scalar::Null
        })
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> std::result::Result<Scalar<'de>, E> {
        Ok(Scalar::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> std::result::Result<Scalar<'de>, E> {
        Ok(Scalar::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> std::result::Result<Scalar<'de>, E> {
        Ok(Scalar::Str(Cow::Owned(v)))
    }
    fn visit_unit<E>(self) -> std::result::Result<Scalar<'de>, E> {
        Ok(Scalar::Null)
    }
    fn visit_none<E>(self) -> std::result::Result<Scalar<'de>, E> {
        Ok(Scalar::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<Scalar<'de>, A::Error> {
        while seq.next_element::<Scalar<'de>>()?.is_some() {}
        Ok(Scalar::Array)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Scalar<'de>, A::Error> {
        while map
            .next_entry::<serde::de::IgnoredAny, Scalar<'de>>()?
            .is_some()
        {}
        Ok(Scalar::Object)
    }
}

impl<'de> serde::Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

/// A top-level key, borrowed from the input where it holds no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> std::result::Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> std::result::Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> std::result::Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(Visitor)
    }
}

/// Keys a [`Fields`] object compares linearly before it keeps a set of them.
const FIELDS_LINEAR_KEYS: usize = 32;

/// The values of a top-level object under the mapping's source names (each canonical column
/// gets the value of its source, if present), and the first key the object has twice, as
/// [`TopObject`] finds it. For mappings whose sources are all top-level keys.
struct Fields<'de> {
    values: [Option<Scalar<'de>>; N_FIELDS],
    duplicate: Option<String>,
}

/// Deserializes [`Fields`] for a mapping's source columns (indexed like `CANONICAL_COLUMNS`).
struct FieldsSeed<'n>(&'n [Option<SourceColumn>; N_FIELDS]);

impl<'de> serde::de::DeserializeSeed<'de> for FieldsSeed<'_> {
    type Value = Fields<'de>;
    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<Fields<'de>, D::Error> {
        struct Visitor<'n>(&'n [Option<SourceColumn>; N_FIELDS]);
        impl<'de> serde::de::Visitor<'de> for Visitor<'_> {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Fields<'de>, A::Error> {
                let mut fields = Fields {
                    values: std::array::from_fn(|_| None),
                    duplicate: None,
                };
                let mut seen: Vec<Cow<'de, str>> = Vec::new();
                let mut seen_set: HashSet<Cow<'de, str>> = HashSet::new();
                while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                    let value: Scalar<'de> = map.next_value()?;
                    if fields.duplicate.is_none() {
                        let again = if seen_set.is_empty() {
                            seen.contains(&key)
                        } else {
                            seen_set.contains(&key)
                        };
                        if again {
                            fields.duplicate = Some(key.to_string());
                        }
                    }
                    for (slot, source) in fields.values.iter_mut().zip(self.0) {
                        if source.as_ref().is_some_and(|s| s.name == *key) {
                            *slot = Some(value.clone());
                        }
                    }
                    if fields.duplicate.is_none() {
                        if seen_set.is_empty() && seen.len() < FIELDS_LINEAR_KEYS {
                            seen.push(key);
                        } else {
                            seen_set.extend(seen.drain(..));
                            seen_set.insert(key);
                        }
                    }
                }
                Ok(fields)
            }
        }
        d.deserialize_map(Visitor(self.0))
    }
}

/// One JSON object to an event through `compiled`, without a `serde_json::Value`: the same
/// event or the same error as [`decode_object_value`] (an oracle test compares them), for a
/// mapping whose source names hold no `.` (dotted paths look into nested objects: those go
/// through the `Value`).
fn decode_object_fields(
    bytes: &[u8],
    compiled: &Compiled,
) -> std::result::Result<Event, FieldError> {
    use serde::de::DeserializeSeed;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let fields = FieldsSeed(&compiled.sources)
        .deserialize(&mut de)
        .and_then(|f| de.end().map(|_| f));
    match fields {
        Ok(Fields {
            duplicate: Some(key),
            ..
        }) => Err(record_error(format!(
            "the key `{}` appears twice in the object: which value is meant is ambiguous",
            super::printable(key.as_bytes())
        ))),
        Ok(Fields { values, .. }) => {
            let mut cells: Cells<'_> = null_cells();
            for (cell, value) in cells.iter_mut().zip(values.iter()) {
                if let Some(v) = value {
                    *cell = v.cell();
                }
            }
            compiled.converter.event(&cells)
        }
        Err(e) if e.classify() == serde_json::error::Category::Data => {
            Err(record_error("not a JSON object".to_owned()))
        }
        Err(e) => Err(record_error(format!("invalid JSON: {e}"))),
    }
}

/// One JSON object (a line of a file, or a Kafka message) to an event through the mapping.
/// An object with a key twice is rejected: which value is meant is ambiguous.
pub(crate) fn decode_object(
    bytes: &[u8],
    compiled: &Compiled,
) -> std::result::Result<Event, FieldError> {
    if compiled.dotted_sources {
        decode_object_value(bytes, compiled)
    } else {
        decode_object_fields(bytes, compiled)
    }
}

/// [`decode_object`] through a `serde_json::Value` (any mapping, dotted paths included).
pub(crate) fn decode_object_value(
    bytes: &[u8],
    compiled: &Compiled,
) -> std::result::Result<Event, FieldError> {
    match serde_json::from_slice::<TopObject>(bytes) {
        Ok(TopObject {
            duplicate: Some(key),
            ..
        }) => Err(record_error(format!(
            "the key `{}` appears twice in the object: which value is meant is ambiguous",
            super::printable(key.as_bytes())
        ))),
        Ok(TopObject { object, .. }) => {
            let mut cells: Cells<'_> = null_cells();
            for (cell, source) in cells.iter_mut().zip(compiled.sources.iter()) {
                if let Some(value) = source.as_ref().and_then(|s| lookup(&object, &s.name)) {
                    *cell = json_cell(value);
                }
            }
            compiled.converter.event(&cells)
        }
        Err(e) if e.classify() == serde_json::error::Category::Data => {
            Err(record_error("not a JSON object".to_owned()))
        }
        Err(e) => Err(record_error(format!("invalid JSON: {e}"))),
    }
}

/// Reads one line into `line` without its terminator (and without a leading BOM on the
/// first line); `false` at the end of the file.
fn read_line(
    reader: &mut BufReader<Box<dyn Read + Send>>,
    line: &mut Vec<u8>,
    first: bool,
    path: &Path,
) -> Result<bool> {
    line.clear();
    if reader
        .read_until(b'\n', line)
        .map_err(|e| Error::io(path, e))?
        == 0
    {
        return Ok(false);
    }
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    if first && line.starts_with(BOM) {
        line.drain(..BOM.len());
    }
    Ok(true)
}

fn is_blank(line: &[u8]) -> bool {
    line.iter().all(u8::is_ascii_whitespace)
}

/// Checks the first JSON object among the first [`NDJSON_CHECK_LINES`] non-blank lines for
/// the required columns. An empty file passes; a file that starts like a JSON array, or
/// whose first lines hold no JSON object, is [`Error::BadInput`].
pub(crate) fn check(path: &Path, compiled: &Compiled) -> Result<()> {
    let (file, _) = open_text(path)?;
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    let mut seen = 0;
    let mut first = true;
    while seen < NDJSON_CHECK_LINES && read_line(&mut reader, &mut line, first, path)? {
        first = false;
        if is_blank(&line) {
            continue;
        }
        if seen == 0 && line.trim_ascii_start().starts_with(b"[") {
            return Err(Error::bad_input(path, InputErrorKind::JsonArray));
        }
        seen += 1;
        let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(&line) else {
            continue;
        };
        for (i, source) in compiled.sources.iter().enumerate() {
            let canonical = CANONICAL_COLUMNS[i];
            let Some(source) = source else { continue };
            if REQUIRED_COLUMNS.contains(&canonical) && lookup(&object, &source.name).is_none() {
                let keys: Vec<&str> = object.keys().map(String::as_str).collect();
                return Err(missing_column(
                    path,
                    compiled,
                    canonical,
                    &source.name,
                    &keys,
                ));
            }
        }
        return Ok(());
    }
    if seen == 0 {
        Ok(())
    } else {
        Err(Error::bad_input(path, InputErrorKind::NoJsonObject(seen)))
    }
}

/// A reader of one NDJSON file.
pub(crate) struct NdjsonReader {
    path: PathBuf,
    file_label: String,
    reader: BufReader<Box<dyn Read + Send>>,
    bytes: Arc<AtomicU64>,
    line: Vec<u8>,
    compiled: Compiled,
    chunk_rows: usize,
    rows: u64,
    lines: u64,
    done: bool,
}

impl NdjsonReader {
    /// Opens the file (call [`check`] first to check its columns).
    pub(crate) fn open(path: &Path, compiled: Compiled, chunk_rows: usize) -> Result<Self> {
        let (file, bytes) = open_text(path)?;
        Ok(Self::from_input(path, file, bytes, compiled, chunk_rows))
    }

    /// A reader of `file` (named `path` in messages), whose bytes read `bytes` counts.
    pub(crate) fn from_input(
        path: &Path,
        file: Box<dyn Read + Send>,
        bytes: Arc<AtomicU64>,
        compiled: Compiled,
        chunk_rows: usize,
    ) -> Self {
        NdjsonReader {
            path: path.to_path_buf(),
            file_label: path.display().to_string(),
            reader: BufReader::new(file),
            bytes,
            line: Vec::new(),
            compiled,
            chunk_rows,
            rows: 0,
            lines: 0,
            done: false,
        }
    }
}

impl std::fmt::Debug for NdjsonReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NdjsonReader")
            .field("path", &self.path)
            .field("lines", &self.lines)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl EventReader for NdjsonReader {
    fn next_chunk(&mut self, chunk: &mut Chunk) -> Result<bool> {
        if self.done {
            return Ok(false);
        }
        let mut taken = 0;
        while taken < self.chunk_rows {
            let first = self.lines == 0;
            if !read_line(&mut self.reader, &mut self.line, first, &self.path)? {
                self.done = true;
                break;
            }
            self.lines += 1;
            if is_blank(&self.line) {
                continue;
            }
            self.rows += 1;
            taken += 1;
            let result = decode_object(&self.line, &self.compiled);
            push_row(result, &self.file_label, self.lines, chunk);
        }
        Ok(taken > 0 || !self.done)
    }

    fn rows_read(&self) -> u64 {
        self.rows
    }

    fn bytes_read(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_are_found_exactly_or_by_dotted_path() {
        let value = json!({"id.orig_h": "a", "id": {"resp_h": "b", "deep": {"x": 1}}});
        let object = value.as_object().unwrap();
        assert_eq!(lookup(object, "id.orig_h"), Some(&json!("a")));
        assert_eq!(lookup(object, "id.resp_h"), Some(&json!("b")));
        assert_eq!(lookup(object, "id.deep.x"), Some(&json!(1)));
        assert_eq!(lookup(object, "id.missing"), None);
        assert_eq!(lookup(object, "nope"), None);
    }

    #[test]
    fn objects_with_a_key_twice_and_other_json_are_rejected_with_a_reason() {
        let compiled = super::super::IngestMapping::identity().compile().unwrap();
        let ok = decode_object(br#"{"ts": 1, "user_id": "u", "action": "a"}"#, &compiled);
        assert!(ok.is_ok());
        let twice = br#"{"ts": 1, "user_id": "u", "action": "a", "user_id": "v"}"#;
        let err = decode_object(twice, &compiled).unwrap_err();
        assert!(err.reason.contains("`user_id` appears twice"), "{err:?}");
        for (bytes, reason) in [
            (&b"[1, 2]"[..], "not a JSON object"),
            (b"\"text\"", "not a JSON object"),
            (b"null", "not a JSON object"),
            (b"{\"ts\": ", "invalid JSON"),
            (b"{} x", "invalid JSON"),
        ] {
            let err = decode_object(bytes, &compiled).unwrap_err();
            assert!(err.reason.starts_with(reason), "{bytes:?}: {err:?}");
        }
    }

    /// A random JSON-ish text: mostly objects with canonical, mapped, unknown, repeated and
    /// escaped keys and values of every kind (numbers at the integer types' edges and out of
    /// range, strings with escapes, surrogates and raw bytes, deep nesting), and now and then
    /// a broken one (truncated, trailing text, another top-level type).
    fn random_json(rng: &mut impl rand::Rng) -> Vec<u8> {
        fn value(rng: &mut impl rand::Rng, depth: usize, out: &mut String) {
            match rng.random_range(0..16) {
                0 => out.push_str("null"),
                1 => out.push_str(if rng.random() { "true" } else { "false" }),
                2 => out.push_str(&rng.random::<i64>().to_string()),
                3 => out.push_str(&rng.random::<u64>().to_string()),
                4 => out.push_str(
                    [
                        "9223372036854775807",
                        "9223372036854775808",
                        "-9223372036854775808",
                        "18446744073709551616",
                        "-0",
                        "1e400",
                        "-1e-400",
                        "0.1",
                        "1E2",
                        "01",
                        "1.",
                        "123456789012345678901234567890",
                    ][rng.random_range(0..12)],
                ),
                5 => out.push_str(&format!("{}", rng.random::<f64>() * 1e6 - 5e5)),
                6 => out.push_str(&format!("{}", rng.random_range(0..2_000_000_000_000i64))),
                7 | 8 => {
                    let s = [
                        "mobile",
                        "u1",
                        r"a\\b",
                        r"\u00e9t\u00e9",
                        r"\ud83d\ude00",
                        r"\ud800",
                        r"tab\there",
                        "",
                        "  7 ",
                        "2026-01-05T00:00:01Z",
                        "1767571201000",
                        r"\x",
                        "true",
                        "NaN",
                    ][rng.random_range(0..14)];
                    out.push('"');
                    out.push_str(s);
                    out.push('"');
                }
                9 if depth < 3 => {
                    out.push('[');
                    for i in 0..rng.random_range(0..4) {
                        if i > 0 {
                            out.push(',');
                        }
                        value(rng, depth + 1, out);
                    }
                    out.push(']');
                }
                10 if depth < 3 => object(rng, depth + 1, out),
                11 => {
                    let n = rng.random_range(100..140);
                    out.push_str(&"[".repeat(n));
                    out.push_str(&"]".repeat(n));
                }
                _ => out.push_str(&rng.random_range(0..500).to_string()),
            }
        }
        fn object(rng: &mut impl rand::Rng, depth: usize, out: &mut String) {
            // The canonical names, source names of the test's other mapping, unknown,
            // escaped and dotted keys.
            const OTHER_KEYS: [&str; 6] = ["uid", "when", "extra", r"user\u005fid", "a.b", ""];
            let keys: Vec<&str> = CANONICAL_COLUMNS
                .iter()
                .chain(&OTHER_KEYS)
                .copied()
                .collect();
            out.push('{');
            for i in 0..rng.random_range(0..14) {
                if i > 0 {
                    out.push(',');
                }
                out.push('"');
                out.push_str(keys[rng.random_range(0..keys.len())]);
                out.push_str("\":");
                value(rng, depth, out);
            }
            out.push('}');
        }
        let mut out = String::new();
        // Usually a well-formed event, so that the converter's checks are reached too.
        if rng.random_range(0..3) == 0 {
            out.push_str(r#"{"ts": 1767571201000, "user_id": "u", "action": "a", "bytes_in": "#);
            value(rng, 0, &mut out);
            out.push('}');
        } else {
            object(rng, 0, &mut out);
        }
        let mut bytes = out.into_bytes();
        match rng.random_range(0..20) {
            0 => bytes.truncate(rng.random_range(0..bytes.len().max(1))),
            1 => bytes.extend_from_slice(b" x"),
            2 => bytes.extend_from_slice(b"  \n"),
            3 => bytes = b"[1, 2]".to_vec(),
            4 if !bytes.is_empty() => {
                let at = rng.random_range(0..bytes.len());
                bytes[at] = [0xff, 0xc3, b'"', b'\\'][rng.random_range(0..4)];
            }
            _ => {}
        }
        bytes
    }

    /// The field-wise decoder against the `Value` one, on seeded random input under several
    /// mappings: the same event, or the same error (field and reason), every time.
    #[test]
    fn objects_decode_field_wise_exactly_as_through_a_value() {
        use rand::SeedableRng;
        let mappings = [
            super::super::IngestMapping::identity(),
            super::super::IngestMapping::from_toml_str(
                "[columns]\nuser_id = \"uid\"\nsession_id = \"uid\"\nts = \"when\"\n",
                std::path::Path::new("m.toml"),
            )
            .unwrap(),
        ];
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let (mut ok, mut refused) = (0, 0);
        for _ in 0..20_000 {
            let bytes = random_json(&mut rng);
            for mapping in &mappings {
                let compiled = mapping.compile().unwrap();
                let fast = decode_object_fields(&bytes, &compiled);
                let slow = decode_object_value(&bytes, &compiled);
                assert_eq!(fast, slow, "{}", String::from_utf8_lossy(&bytes));
                assert_eq!(fast, decode_object(&bytes, &compiled));
                if fast.is_ok() {
                    ok += 1;
                } else {
                    refused += 1;
                }
            }
        }
        // Both outcomes are exercised, often.
        assert!(
            ok > 2_000 && refused > 2_000,
            "{ok} decoded, {refused} refused"
        );
    }

    #[test]
    fn scalars_become_the_cells_values_become() {
        for text in [
            "null",
            "true",
            "false",
            "0",
            "-0",
            "7",
            "-7",
            "9223372036854775807",
            "9223372036854775808",
            "18446744073709551615",
            "-9223372036854775808",
            "0.5",
            "1e300",
            "-2.5e-3",
            "123456789012345678901234567890",
            r#""""#,
            r#""a""#,
            r#""\u00e9\n""#,
            "[]",
            "[1, [2]]",
            "{}",
            r#"{"a": {"b": [null]}}"#,
        ] {
            let scalar: Scalar<'_> = serde_json::from_str(text).unwrap();
            let value: Value = serde_json::from_str(text).unwrap();
            assert_eq!(scalar.cell(), json_cell(&value), "{text}");
        }
    }

    #[test]
    fn a_dotted_source_goes_through_the_value() {
        let mapping = super::super::IngestMapping::from_toml_str(
            "[columns]\nuser_id = \"id.orig_h\"\n",
            std::path::Path::new("m.toml"),
        )
        .unwrap();
        let compiled = mapping.compile().unwrap();
        let e = decode_object(
            br#"{"ts": 1, "id": {"orig_h": "h"}, "action": "a"}"#,
            &compiled,
        )
        .unwrap();
        assert_eq!(e.user_id, "h");
    }

    #[test]
    fn json_values_become_cells() {
        assert_eq!(json_cell(&json!(null)), Cell::Null);
        assert_eq!(json_cell(&json!(-3)), Cell::Int(-3));
        assert_eq!(json_cell(&json!(u64::MAX)), Cell::UInt(u64::MAX));
        assert_eq!(json_cell(&json!(1.5)), Cell::Float(1.5));
        assert_eq!(json_cell(&json!("x")), Cell::Str("x"));
        assert!(matches!(json_cell(&json!([1])), Cell::Invalid(_)));
    }
}
