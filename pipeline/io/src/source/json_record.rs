//! One JSON record (a Kafka message's payload) to an event: the format half of a streaming
//! connector, the same conversion as the NDJSON reader's, through the same ingest mappings.

use personaflow_operators::Event;
use serde_json::{json, Map, Value};
use std::fmt;

use super::mapping::{Compiled, IngestMapping};
use super::ndjson_reader::{decode_object, decode_object_value};
use crate::Result;

/// Why a record was refused: the canonical field (`None`: the record as a whole) and the
/// reason, as in `rejects`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordError {
    /// The canonical column that failed.
    pub field: Option<String>,
    /// Why.
    pub reason: String,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{field}: {}", self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

impl std::error::Error for RecordError {}

/// Decodes JSON records with a mapping (canonical field names with the identity mapping;
/// `ts` as epoch milliseconds or an RFC 3339 string).
#[derive(Clone, Debug)]
pub struct JsonRecordDecoder {
    compiled: Compiled,
}

impl JsonRecordDecoder {
    /// A decoder for `mapping` (an error if the mapping is invalid).
    ///
    /// ```
    /// use personaflow_io::source::{IngestMapping, JsonRecordDecoder};
    /// let d = JsonRecordDecoder::new(&IngestMapping::identity()).unwrap();
    /// let e = d.decode(br#"{"ts": "2026-01-05T00:00:01Z", "user_id": "u", "action": "a"}"#).unwrap();
    /// assert_eq!((e.ts_ms, e.user_id.as_str()), (1_767_571_201_000, "u"));
    /// assert_eq!(d.decode(b"{").unwrap_err().field, None);
    /// ```
    pub fn new(mapping: &IngestMapping) -> Result<Self> {
        Ok(JsonRecordDecoder {
            compiled: mapping.compile()?,
        })
    }

    /// Decodes one record (field by field: no `serde_json::Value` is built unless a source
    /// column is a dotted path).
    pub fn decode(&self, payload: &[u8]) -> std::result::Result<Event, RecordError> {
        decode_object(payload, &self.compiled).map_err(record_error)
    }

    /// Decodes one record through a `serde_json::Value`, the reference [`decode`](Self::decode)
    /// is tested against (the same event or the same error): slower, kept for that oracle and
    /// for `cargo bench --bench decode`.
    ///
    /// ```
    /// use personaflow_io::source::{IngestMapping, JsonRecordDecoder};
    /// let d = JsonRecordDecoder::new(&IngestMapping::identity()).unwrap();
    /// let line = br#"{"ts": 1, "user_id": "u", "action": "a", "bytes_in": 5}"#;
    /// assert_eq!(d.decode(line), d.decode_with_value(line));
    /// ```
    pub fn decode_with_value(&self, payload: &[u8]) -> std::result::Result<Event, RecordError> {
        decode_object_value(payload, &self.compiled).map_err(record_error)
    }
}

fn record_error(e: super::convert::FieldError) -> RecordError {
    RecordError {
        field: e.field.map(str::to_owned),
        reason: e.reason,
    }
}

/// An event as the canonical JSON object the continuous job reads (`ts` in epoch ms; absent
/// optional fields are left out).
pub fn event_json(e: &Event) -> Value {
    let mut m = Map::new();
    m.insert("ts".into(), json!(e.ts_ms));
    m.insert("user_id".into(), json!(e.user_id));
    m.insert("authenticated".into(), json!(e.authenticated));
    m.insert("action".into(), json!(e.action));
    let opt = |m: &mut Map<String, Value>, k: &str, v: Option<Value>| {
        if let Some(v) = v {
            m.insert(k.into(), v);
        }
    };
    opt(
        &mut m,
        "session_id",
        e.session_id.as_ref().map(|v| json!(v)),
    );
    opt(&mut m, "segment", e.segment.as_ref().map(|v| json!(v)));
    opt(&mut m, "category", e.category.as_ref().map(|v| json!(v)));
    opt(&mut m, "bytes_in", e.bytes_in.map(|v| json!(v)));
    opt(&mut m, "bytes_out", e.bytes_out.map(|v| json!(v)));
    opt(&mut m, "latency_ms", e.latency_ms.map(|v| json!(v)));
    opt(&mut m, "status", e.status.map(|v| json!(v)));
    opt(&mut m, "device", e.device.as_ref().map(|v| json!(v)));
    opt(&mut m, "os", e.os.as_ref().map(|v| json!(v)));
    opt(&mut m, "country", e.country.as_ref().map(|v| json!(v)));
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_decode_like_ndjson_lines_and_bad_ones_name_their_field() {
        let d = JsonRecordDecoder::new(&IngestMapping::identity()).unwrap();
        let e = d
            .decode(br#"{"ts": 1767571201000, "user_id": "u", "action": "a", "bytes_in": 10}"#)
            .unwrap();
        assert_eq!((e.ts_ms, e.bytes_in), (1_767_571_201_000, Some(10)));
        let err = d
            .decode(br#"{"ts": 1, "user_id": "u", "action": "a", "bytes_in": -5}"#)
            .unwrap_err();
        assert_eq!(err.field.as_deref(), Some("bytes_in"), "{err}");
        let err = d.decode(br#"{"ts": 1, "action": "a"}"#).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("user_id"), "{err}");
        let err = d.decode(b"[1, 2]").unwrap_err();
        assert_eq!(err.to_string(), "not a JSON object");
    }
}
