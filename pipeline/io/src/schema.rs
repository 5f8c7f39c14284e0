//! The canonical event schema as Arrow, and conversions between [`Event`]s and record batches.
//!
//! | column | Arrow type | required | meaning |
//! |---|---|---|---|
//! | `ts` | `Timestamp(Millisecond, "UTC")` | yes | event time |
//! | `user_id` | `Utf8` | yes | user, host or customer |
//! | `session_id` | `Utf8` | no | session |
//! | `authenticated` | `Boolean` | no (null = false) | user was authenticated |
//! | `segment` | `Utf8` | no | known segment of an authenticated user |
//! | `action` | `Utf8` | yes | what the user did |
//! | `category` | `Utf8` | no | coarser class of the action |
//! | `bytes_in` | `UInt64` | no | bytes received by the user |
//! | `bytes_out` | `UInt64` | no | bytes sent by the user |
//! | `latency_ms` | `Float64` | no | latency or duration, ms |
//! | `status` | `Int32` | no | status code, >= 400 is an error |
//! | `device` | `Utf8` | no | device class |
//! | `os` | `Utf8` | no | operating system |
//! | `country` | `Utf8` | no | country code |

use std::sync::{Arc, OnceLock};

use arrow_array::builder::{
    BooleanBuilder, Float64Builder, Int32Builder, StringBuilder, TimestampMillisecondBuilder,
    UInt64Builder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use personaflow_operators::Event;

/// Columns that every input must provide (directly or through an ingest mapping).
pub const REQUIRED_COLUMNS: [&str; 3] = ["ts", "user_id", "action"];

/// All canonical column names, in schema order.
pub const CANONICAL_COLUMNS: [&str; 14] = [
    "ts",
    "user_id",
    "session_id",
    "authenticated",
    "segment",
    "action",
    "category",
    "bytes_in",
    "bytes_out",
    "latency_ms",
    "status",
    "device",
    "os",
    "country",
];

/// The canonical event schema.
pub fn event_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(vec![
                Field::new(
                    "ts",
                    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                    false,
                ),
                Field::new("user_id", DataType::Utf8, false),
                Field::new("session_id", DataType::Utf8, true),
                Field::new("authenticated", DataType::Boolean, true),
                Field::new("segment", DataType::Utf8, true),
                Field::new("action", DataType::Utf8, false),
                Field::new("category", DataType::Utf8, true),
                Field::new("bytes_in", DataType::UInt64, true),
                Field::new("bytes_out", DataType::UInt64, true),
                Field::new("latency_ms", DataType::Float64, true),
                Field::new("status", DataType::Int32, true),
                Field::new("device", DataType::Utf8, true),
                Field::new("os", DataType::Utf8, true),
                Field::new("country", DataType::Utf8, true),
            ]))
        })
        .clone()
}

/// Builds a canonical record batch from events.
pub fn events_to_batch(events: &[Event]) -> RecordBatch {
    let n = events.len();
    let mut ts = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut user = StringBuilder::with_capacity(n, n * 8);
    let mut session = StringBuilder::with_capacity(n, n * 8);
    let mut auth = BooleanBuilder::with_capacity(n);
    let mut segment = StringBuilder::with_capacity(n, n * 8);
    let mut action = StringBuilder::with_capacity(n, n * 8);
    let mut category = StringBuilder::with_capacity(n, n * 8);
    let mut bytes_in = UInt64Builder::with_capacity(n);
    let mut bytes_out = UInt64Builder::with_capacity(n);
    let mut latency = Float64Builder::with_capacity(n);
    let mut status = Int32Builder::with_capacity(n);
    let mut device = StringBuilder::with_capacity(n, n * 4);
    let mut os = StringBuilder::with_capacity(n, n * 4);
    let mut country = StringBuilder::with_capacity(n, n * 2);
    for e in events {
        ts.append_value(e.ts_ms);
        user.append_value(&e.user_id);
        session.append_option(e.session_id.as_deref());
        auth.append_value(e.authenticated);
        segment.append_option(e.segment.as_deref());
        action.append_value(&e.action);
        category.append_option(e.category.as_deref());
        bytes_in.append_option(e.bytes_in);
        bytes_out.append_option(e.bytes_out);
        latency.append_option(e.latency_ms);
        status.append_option(e.status);
        device.append_option(e.device.as_deref());
        os.append_option(e.os.as_deref());
        country.append_option(e.country.as_deref());
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(ts.finish()),
        Arc::new(user.finish()),
        Arc::new(session.finish()),
        Arc::new(auth.finish()),
        Arc::new(segment.finish()),
        Arc::new(action.finish()),
        Arc::new(category.finish()),
        Arc::new(bytes_in.finish()),
        Arc::new(bytes_out.finish()),
        Arc::new(latency.finish()),
        Arc::new(status.finish()),
        Arc::new(device.finish()),
        Arc::new(os.finish()),
        Arc::new(country.finish()),
    ];
    RecordBatch::try_new(event_schema(), columns).expect("canonical columns match the schema")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_lists_every_canonical_column_once() {
        let schema = event_schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, CANONICAL_COLUMNS);
        for required in REQUIRED_COLUMNS {
            assert!(!schema.field_with_name(required).unwrap().is_nullable());
        }
    }

    #[test]
    fn batch_has_one_row_per_event() {
        let mut e = Event::new(1_000, "u1", "page_view");
        e.bytes_in = Some(10);
        let batch = events_to_batch(&[e.clone(), Event::new(2_000, "u2", "click")]);
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch.schema(), event_schema());
    }
}
