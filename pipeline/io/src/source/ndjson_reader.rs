//! NDJSON reader: one JSON object per line. Blank lines are skipped; a line that is not a
//! JSON object is a reject. Rows (of events and rejects) are line numbers in the file, blank
//! lines counted, so that `sed -n 'ROWp'` shows the line. Source columns are top-level keys, or dotted paths into nested
//! objects (`"id.orig_h"` finds the key `id.orig_h`, else `{"id": {"orig_h": ..}}`).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use personaflow_operators::Event;
use serde_json::{Map, Value};

use super::convert::{Cell, Cells};
use super::mapping::Compiled;
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

/// One JSON object (a line of a file, or a Kafka message) to an event through the mapping.
/// An object with a key twice is rejected: which value is meant is ambiguous.
pub(crate) fn decode_object(
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
