//! The OpenAPI 3.1 document of the API (`GET /openapi.json`), generated from the code: the
//! routes from [`crate::api::ROUTES`] and their parameters and limits from the
//! constants the handlers use, the record schemas from the tables' Arrow schemas (one
//! definition per table), so the document cannot drift from what is served.
//!
//! ```
//! let doc = personaflow_serve::openapi::document();
//! assert_eq!(doc["openapi"], "3.1.0");
//! assert!(doc["paths"]["/v1/users/{id}"]["get"].is_object());
//! assert!(doc["components"]["schemas"]["Policy"]["properties"]["allocated_bps"].is_object());
//! ```

use crate::api::{MAX_BATCH_IDS, MAX_USER_ID_BYTES, ROUTES};
use crate::download::{Format, MAX_LIMIT};
use crate::store::USER_TABLES;
use arrow_schema::{DataType, Field};
use personaflow_io::tables::Table;
use serde_json::{json, Map, Value};

/// The JSON Schema of one Arrow field's values as the API renders them (timestamps as epoch
/// milliseconds; floats may be null, as a non-finite value is rendered).
fn field_schema(field: &Field) -> Value {
    let base = match field.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 => json!({"type": "string"}),
        DataType::Boolean => json!({"type": "boolean"}),
        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => {
            json!({"type": "integer", "minimum": 0})
        }
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::Timestamp(..) => json!({"type": "integer"}),
        DataType::Float16 | DataType::Float32 | DataType::Float64 => {
            json!({"type": ["number", "null"]})
        }
        DataType::List(item) | DataType::LargeList(item) => {
            json!({"type": "array", "items": field_schema(item)})
        }
        _ => json!({}),
    };
    if field.is_nullable() {
        nullable(base)
    } else {
        base
    }
}

/// `schema` or null.
fn nullable(schema: Value) -> Value {
    match schema.get("type") {
        Some(Value::String(t)) => {
            let mut s = schema.clone();
            s["type"] = json!([t, "null"]);
            s
        }
        Some(Value::Array(_)) => schema,
        _ => json!({"anyOf": [schema, {"type": "null"}]}),
    }
}

/// A table's row as an object schema, without the columns `leave_out`.
pub fn row_schema(table: Table, leave_out: &[&str]) -> Value {
    let schema = table.schema();
    let mut props = Map::new();
    let mut required = Vec::new();
    for f in schema.fields() {
        if leave_out.contains(&f.name().as_str()) {
            continue;
        }
        props.insert(f.name().clone(), field_schema(f));
        required.push(json!(f.name()));
    }
    json!({
        "type": "object",
        "description": format!("A row of `{}`.", table.name()),
        "properties": props,
        "required": required,
    })
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn json_response(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

fn error_responses(codes: &[u16]) -> Map<String, Value> {
    let mut m = Map::new();
    for c in codes {
        let what = match c {
            400 => "A parameter is invalid (the error names it).",
            401 => "The bearer token is missing or wrong.",
            404 => "No such user, table or route.",
            413 => "The body is over the limit.",
            503 => "Too many requests in flight, or not ready.",
            _ => "Error.",
        };
        m.insert(c.to_string(), json_response(what, schema_ref("Error")));
    }
    m
}

fn responses(ok: (u16, &str, Value), errors: &[u16]) -> Value {
    let mut m = error_responses(errors);
    m.insert(ok.0.to_string(), json_response(ok.1, ok.2));
    Value::Object(m)
}

/// A user id: 1 to [`MAX_USER_ID_BYTES`] bytes, no control characters.
fn user_id_schema() -> Value {
    json!({
        "type": "string", "minLength": 1, "maxLength": MAX_USER_ID_BYTES,
        "pattern": "^[^\\u0000-\\u001F\\u007F-\\u009F]+$",
    })
}

fn user_id_parameter(example: Option<&str>) -> Value {
    let mut p = json!({
        "name": "id", "in": "path", "required": true,
        "description": "The user id.",
        "schema": user_id_schema(),
    });
    if let Some(e) = example {
        p["example"] = json!(e);
    }
    p
}

/// A time: epoch milliseconds or RFC 3339.
fn time_schema() -> Value {
    json!({"anyOf": [
        {"type": "string", "pattern": "^-?[0-9]{1,18}$"},
        {"type": "string", "format": "date-time"},
    ]})
}

fn time_parameter(name: &str, what: &str) -> Value {
    json!({
        "name": name, "in": "query", "required": false,
        "description": format!("{what}: epoch milliseconds or RFC 3339."),
        "schema": time_schema(),
    })
}

fn user_view_schema() -> Value {
    let mut props = Map::new();
    props.insert("user_id".into(), json!({"type": "string"}));
    props.insert(
        "window_end".into(),
        json!({"type": "integer", "description": "The latest window with any record, epoch ms."}),
    );
    for (table, part) in USER_TABLES {
        let schema = match table {
            Table::Resonance => json!({
                "type": "object",
                "properties": {
                    "top_segment": {"type": ["string", "null"]},
                    "segments": {"type": "array", "items": schema_ref("Resonance")},
                },
                "required": ["top_segment", "segments"],
            }),
            Table::Forecasts => json!({"type": "array", "items": schema_ref("Forecast")}),
            _ => schema_ref(component_name(table)),
        };
        props.insert(part.to_string(), nullable_ref(schema));
    }
    let required: Vec<Value> = props.keys().map(|k| json!(k)).collect();
    json!({"type": "object", "properties": props, "required": required})
}

fn nullable_ref(schema: Value) -> Value {
    if schema.get("$ref").is_some() {
        json!({"anyOf": [schema, {"type": "null"}]})
    } else {
        nullable(schema)
    }
}

/// The component schema named for a user table's part.
fn component_name(table: Table) -> &'static str {
    match table {
        Table::Profiles => "Profile",
        Table::Resonance => "Resonance",
        Table::PersonaAssignments => "PersonaAssignment",
        Table::Policies => "Policy",
        Table::SocketProfiles => "SocketProfile",
        Table::Forecasts => "Forecast",
        _ => "Row",
    }
}

/// The document.
pub fn document() -> Value {
    document_with_example(None)
}

/// The document, with `user` as the example user id (a user the store holds, so that
/// clients and fuzzers reach real records).
pub fn document_with_example(user: Option<&str>) -> Value {
    let mut schemas = Map::new();
    for (table, _) in USER_TABLES {
        schemas.insert(
            component_name(table).into(),
            row_schema(table, &["user_id", "window_end"]),
        );
    }
    schemas.insert("UserView".into(), user_view_schema());
    schemas.insert("Segment".into(), row_schema(Table::SegmentProfiles, &[]));
    schemas.insert("Persona".into(), row_schema(Table::Personas, &[]));
    schemas.insert("Drift".into(), row_schema(Table::Drift, &[]));
    schemas.insert("Scaling".into(), row_schema(Table::Scaling, &[]));
    schemas.insert(
        "Error".into(),
        json!({
            "type": "object",
            "properties": {"error": {
                "type": "object",
                "properties": {
                    "status": {"type": "integer"},
                    "parameter": {"type": ["string", "null"]},
                    "message": {"type": "string"},
                },
                "required": ["status", "parameter", "message"],
            }},
            "required": ["error"],
        }),
    );
    let list = |key: &str, item: &str| json!({"type": "object", "properties": {key: {"type": "array", "items": schema_ref(item)}}, "required": [key]});
    let formats: Vec<&str> = Format::ALL.iter().map(|(n, _)| *n).collect();
    let tables: Vec<&str> = Table::ALL.iter().map(|t| t.name()).collect();
    let download_content: Map<String, Value> = Format::ALL
        .iter()
        .map(|(_, f)| {
            (
                f.content_type().to_string(),
                json!({"schema": {"type": "string", "format": "binary"}}),
            )
        })
        .collect();
    let page = |what: &str, content_type: &str| {
        json!({"get": {
            "summary": what, "security": [],
            "responses": {"200": {"description": what,
                "content": {content_type: {"schema": {"type": "string"}}}}},
        }})
    };
    let values = json!({"type": "array", "items": {"type": ["number", "null"]}});
    let named = json!({
        "type": "object",
        "properties": {
            "window_end": {"type": "array", "items": {"type": "integer"}, "description": "Each point's last window end (epoch ms)."},
            "series": {"type": "array", "items": {"type": "object", "properties": {
                "name": {"type": "string"}, "values": values}, "required": ["name", "values"]}},
        },
        "required": ["window_end", "series"],
    });
    let timeline = json!({
        "type": "object",
        "properties": {
            "windows": {"type": "integer", "minimum": 0},
            "bucket_windows": {"type": "integer", "minimum": 1},
            "latest_window_end": {"type": ["integer", "null"]},
            "users": {"type": "integer", "minimum": 0},
            "example_user": {"type": ["string", "null"]},
            "resonance": {"type": "object", "properties": {
                "window_end": {"type": "array", "items": {"type": "integer"}},
                "series": {"type": "array", "items": {"type": "object", "properties": {
                    "name": {"type": "string"},
                    "mean_probability": values,
                    "top_share": values,
                }, "required": ["name", "mean_probability", "top_share"]}},
            }, "required": ["window_end", "series"]},
            "segment_sizes": named,
            "forecast_error": named,
            "persona_map": {"type": "object", "properties": {
                "window_end": {"type": ["integer", "null"]},
                "explained": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
                "personas": {"type": "array", "items": {"type": "object", "properties": {
                    "persona_id": {"type": "integer", "minimum": 0},
                    "size": {"type": "integer", "minimum": 0},
                    "x": {"type": "number"},
                    "y": {"type": "number"},
                    "top_features": {"type": "array", "items": {"type": "string"}},
                }, "required": ["persona_id", "size", "x", "y", "top_features"]}},
            }, "required": ["window_end", "explained", "personas"]},
        },
        "required": ["windows", "bucket_windows", "latest_window_end", "users", "example_user",
            "resonance", "segment_sizes", "forecast_error", "persona_map"],
    });
    let paths = json!({
        "/": page("The dashboard.", "text/html"),
        "/dashboard.js": page("The dashboard's script.", "text/javascript"),
        "/dashboard.css": page("The dashboard's style.", "text/css"),
        "/healthz": {"get": {
            "summary": "The process is up.", "security": [],
            "responses": {"200": json_response("Up.", json!({"type": "object"}))},
        }},
        "/readyz": {"get": {
            "summary": "The store is loaded.", "security": [],
            "responses": responses((200, "Ready.", json!({"type": "object"})), &[503]),
        }},
        "/metrics": {"get": {
            "summary": "Prometheus metrics: requests and latency per route.", "security": [],
            "responses": {"200": {"description": "The text exposition.",
                "content": {"text/plain": {"schema": {"type": "string"}}}}},
        }},
        "/openapi.json": {"get": {
            "summary": "This document.", "security": [],
            "responses": {"200": json_response("OpenAPI 3.1.", json!({"type": "object"}))},
        }},
        "/v1/users/{id}": {"get": {
            "summary": "A user's latest records: profile, resonance, persona, policy, socket profile, forecast.",
            "parameters": [user_id_parameter(user)],
            "responses": responses((200, "The user's latest view.", schema_ref("UserView")), &[400, 401, 404, 503]),
        }},
        "/v1/users/{id}/history": {"get": {
            "summary": "The user's kept windows (the last `history_windows`) in a time range.",
            "parameters": [user_id_parameter(user), time_parameter("from", "From (inclusive)"), time_parameter("to", "To (inclusive)")],
            "responses": responses((200, "The windows, oldest first.", json!({
                "type": "object",
                "properties": {
                    "user_id": {"type": "string"},
                    "history_windows": {"type": "integer", "minimum": 1},
                    "windows": {"type": "array", "items": schema_ref("UserView")},
                },
                "required": ["user_id", "history_windows", "windows"],
            })), &[400, 401, 404, 503]),
        }},
        "/v1/users/{id}/feedback": {"post": {
            "summary": "Another service's report of the user, appended to `service_feedback`.",
            "parameters": [user_id_parameter(user)],
            "requestBody": {"required": true, "content": {"application/json": {"schema": {
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "source": {"type": "string", "minLength": 1, "maxLength": crate::feedback::MAX_SOURCE_BYTES,
                        "pattern": "^[^\\u0000-\\u001F\\u007F-\\u009F]+$"},
                    "observed_at": {"anyOf": [
                        {"type": "integer", "minimum": 0, "maximum": 253_402_300_799_999_i64},
                        {"type": "string", "format": "date-time"},
                    ], "description": "Epoch ms or RFC 3339, 1970 to 9999 (default: now)."},
                    "observed_bytes": {"type": "integer", "minimum": 0},
                    "observed_requests": {"type": "integer", "minimum": 0},
                    "qoe": {"type": "number", "minimum": 0, "maximum": 1},
                    "latency_ms": {"type": "number", "minimum": 0},
                },
                "required": ["source"],
                "anyOf": [
                    {"required": ["observed_bytes"]}, {"required": ["observed_requests"]},
                    {"required": ["qoe"]}, {"required": ["latency_ms"]},
                ],
            }}}},
            "responses": responses((202, "Accepted (written within a second).", json!({
                "type": "object", "properties": {"accepted": {"type": "boolean"}}, "required": ["accepted"]
            })), &[400, 401, 404, 413, 503]),
        }},
        "/v1/users:batchGet": {"post": {
            "summary": "Several users' latest views.",
            "requestBody": {"required": true, "content": {"application/json": {"schema": {
                "type": "object",
                "additionalProperties": false,
                "properties": {"ids": {"type": "array", "maxItems": MAX_BATCH_IDS,
                    "items": user_id_schema()}},
                "required": ["ids"],
            }}}},
            "responses": responses((200, "Found and missing users.", json!({
                "type": "object",
                "properties": {
                    "users": {"type": "array", "items": schema_ref("UserView")},
                    "missing": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["users", "missing"],
            })), &[400, 401, 413, 503]),
        }},
        "/v1/segments": {"get": {
            "summary": "Each segment's latest profile.",
            "responses": responses((200, "Segments.", list("segments", "Segment")), &[401, 503]),
        }},
        "/v1/personas": {"get": {
            "summary": "The latest window's personas.",
            "responses": responses((200, "Personas.", list("personas", "Persona")), &[401, 503]),
        }},
        "/v1/drift": {"get": {
            "summary": "Drift events and their scaling recommendations in a time range.",
            "parameters": [time_parameter("from", "From (inclusive)"), time_parameter("to", "To (inclusive)")],
            "responses": responses((200, "Drift and scaling.", json!({
                "type": "object",
                "properties": {
                    "drift": {"type": "array", "items": schema_ref("Drift")},
                    "scaling": {"type": "array", "items": schema_ref("Scaling")},
                },
                "required": ["drift", "scaling"],
            })), &[400, 401, 503]),
        }},
        "/v1/timeline": {"get": {
            "summary": "The dashboard's series: per segment resonance and size, per forecaster error, per window in at most `points` buckets; the latest personas on a plane.",
            "parameters": [{"name": "points", "in": "query", "required": false,
                "schema": {"type": "integer", "minimum": 1, "maximum": crate::timeline::MAX_POINTS,
                    "default": crate::timeline::DEFAULT_POINTS}}],
            "responses": responses((200, "The series.", timeline), &[400, 401, 503]),
        }},
        "/v1/tables": {"get": {
            "summary": "The tables, their columns, and whether this run has them.",
            "responses": responses((200, "Tables.", json!({"type": "object", "properties": {"tables": {"type": "array", "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "available": {"type": "boolean"},
                    "columns": {"type": "array", "items": {"type": "object", "properties": {
                        "name": {"type": "string"}, "type": {"type": "string"}}, "required": ["name", "type"]}},
                },
                "required": ["name", "available", "columns"],
            }}}, "required": ["tables"]})), &[401, 503]),
        }},
        "/v1/tables/{table}": {"get": {
            "summary": "A table, filtered and streamed (never held whole).",
            "parameters": [
                {"name": "table", "in": "path", "required": true, "schema": {"type": "string", "enum": tables}},
                time_parameter("from", "Rows from this time (inclusive; the table's time column)"),
                time_parameter("to", "Rows up to this time (inclusive)"),
                {"name": "user", "in": "query", "required": false, "schema": {"type": "string"}},
                {"name": "segment", "in": "query", "required": false, "schema": {"type": "string"}},
                {"name": "columns", "in": "query", "required": false, "description": "Comma-separated column names.", "schema": {"type": "string"}},
                {"name": "format", "in": "query", "required": false, "schema": {"type": "string", "enum": formats, "default": "parquet"}},
                {"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 0, "maximum": MAX_LIMIT}},
            ],
            "responses": {
                "200": {"description": "The rows, in the format asked for.", "content": download_content},
                "400": json_response("A parameter is invalid (the error names it).", schema_ref("Error")),
                "401": json_response("The bearer token is missing or wrong.", schema_ref("Error")),
                "404": json_response("No such table.", schema_ref("Error")),
                "503": json_response("Too many downloads in flight.", schema_ref("Error")),
            },
        }},
    });
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "personaflow",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Per-user profiles, resonance, personas, policies and forecasts, and the run's tables.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    })
}

/// The routes the document describes that the router does not serve, and those it serves
/// that the document lacks (both empty: they agree).
pub fn undocumented_routes() -> (Vec<String>, Vec<String>) {
    let doc = document();
    let documented: Vec<String> = doc["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .cloned()
        .collect();
    let served: Vec<String> = ROUTES.iter().map(|r| r.to_string()).collect();
    (
        documented
            .iter()
            .filter(|d| !served.contains(d))
            .cloned()
            .collect(),
        served
            .iter()
            .filter(|s| !documented.contains(s))
            .cloned()
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_describes_exactly_the_routes_served() {
        let (extra, missing) = undocumented_routes();
        assert!(extra.is_empty(), "documented, not served: {extra:?}");
        assert!(missing.is_empty(), "served, not documented: {missing:?}");
    }

    #[test]
    fn every_user_table_part_has_its_rows_schema() {
        let doc = document();
        let view = &doc["components"]["schemas"]["UserView"]["properties"];
        for (_, part) in USER_TABLES {
            assert!(view[part].is_object(), "{part}");
        }
        let policy = &doc["components"]["schemas"]["Policy"];
        assert_eq!(policy["properties"]["personas"]["type"], "array");
        assert!(policy["properties"].get("user_id").is_none());
    }
}
