//! Reading a run's tables back: every Parquet file of a table, batch by batch, and the
//! stored policies of one user (for `personaflow policy render` and the shaping evaluation).

use crate::{Error, Result};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, TimestampMillisecondType, UInt32Type, UInt64Type};
use arrow_array::{Array, RecordBatch};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;
use personaflow_operators::policies::catalogue::{Authentication, Inspection, PortRange};
use personaflow_operators::policies::socket::{SecurityLevel, REQUEST_TYPES};
use personaflow_operators::policies::{Policy, SocketProfile};
use personaflow_operators::vector::Score;
use std::fs::File;
use std::path::{Path, PathBuf};

/// Every `.parquet` file under `dir`, recursively, sorted.
pub fn parquet_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(|e| Error::io(&d, e))? {
            let path = entry.map_err(|e| Error::io(&d, e))?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Streams the named top-level columns of a Parquet file (in that order) batch by batch.
pub fn for_each_batch(
    path: &Path,
    columns: &[&str],
    mut f: impl FnMut(&RecordBatch),
) -> Result<()> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| Error::parquet(path, e))?;
    // Top-level columns (roots), so that list columns are found by their own name.
    let fields = builder.schema().fields().clone();
    let mut indices = Vec::new();
    for c in columns {
        let idx =
            fields
                .iter()
                .position(|f| f.name() == c)
                .ok_or_else(|| Error::MissingColumn {
                    path: path.to_path_buf(),
                    column: c.to_string(),
                    hint: String::new(),
                })?;
        indices.push(idx);
    }
    let mask = ProjectionMask::roots(builder.parquet_schema(), indices.iter().copied());
    let reader = builder
        .with_projection(mask)
        .build()
        .map_err(|e| Error::parquet(path, e))?;
    for batch in reader {
        let batch = batch.map_err(|e| Error::Arrow {
            path: path.to_path_buf(),
            source: e,
        })?;
        // Projection keeps file order; put the columns in the order asked for.
        let schema = batch.schema();
        let cols: Vec<_> = columns
            .iter()
            .map(|c| batch.column(schema.index_of(c).expect("projected")).clone())
            .collect();
        let fields: Vec<_> = columns
            .iter()
            .map(|c| schema.field_with_name(c).expect("projected").clone())
            .collect();
        let batch =
            RecordBatch::try_new(std::sync::Arc::new(arrow_schema::Schema::new(fields)), cols)
                .expect("same columns");
        f(&batch);
    }
    Ok(())
}

/// One user's policy of one window, as stored, with its socket profile when that table has it.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredPolicy {
    /// Window end, ms.
    pub window_end: i64,
    /// The policy.
    pub policy: Policy,
    /// The socket profile of the same user and window.
    pub socket: Option<SocketProfile>,
}

const POLICY_COLUMNS: [&str; 29] = [
    "window_end",
    "user_id",
    "persona",
    "personas",
    "probabilities",
    "diffserv_class",
    "dscp",
    "endpoint_class",
    "floor_bps",
    "guaranteed_bps",
    "ceiling_bps",
    "allocated_bps",
    "sized_for_bps",
    "burst_bytes",
    "priority_weight",
    "latency_target_ms",
    "rate_limit_rps",
    "request_limit_rps",
    "send_buffer_min",
    "send_buffer_max",
    "receive_buffer_min",
    "receive_buffer_max",
    "authentication",
    "inspection",
    "allowed_app_classes",
    "allowed_ports",
    "vpn_required",
    "current_bytes",
    "current_requests",
];

const SOCKET_COLUMNS: [&str; 12] = [
    "window_end",
    "user_id",
    "predicted_bytes_per_s",
    "predicted_requests_per_s",
    "request_type",
    "risk",
    "rtt_ms",
    "send_buffer",
    "receive_buffer",
    "rate_limit_bytes_per_s",
    "security_level",
    "endpoint",
];

fn bad_value(path: &Path, column: &str, value: &str) -> Error {
    Error::MissingColumn {
        path: path.to_path_buf(),
        column: column.to_string(),
        hint: format!(" (unreadable value {value:?})"),
    }
}

/// Every stored policy of `user` under the run output `output` (its `policies` and
/// `socket_profiles` tables), in window order. Empty when the user has none.
pub fn read_policies(output: &Path, user: &str) -> Result<Vec<StoredPolicy>> {
    let mut out: Vec<StoredPolicy> = Vec::new();
    let dir = output.join("policies");
    if !dir.is_dir() {
        return Ok(out);
    }
    for path in parquet_files(&dir)? {
        let mut err = None;
        for_each_batch(&path, &POLICY_COLUMNS, |b| {
            if err.is_none() {
                if let Err(e) = policies_of_batch(&path, b, user, &mut out) {
                    err = Some(e);
                }
            }
        })?;
        if let Some(e) = err {
            return Err(e);
        }
    }
    out.sort_by_key(|p| p.window_end);
    let dir = output.join("socket_profiles");
    if dir.is_dir() {
        for path in parquet_files(&dir)? {
            let mut err = None;
            for_each_batch(&path, &SOCKET_COLUMNS, |b| {
                if err.is_none() {
                    if let Err(e) = sockets_of_batch(&path, b, user, &mut out) {
                        err = Some(e);
                    }
                }
            })?;
            if let Some(e) = err {
                return Err(e);
            }
        }
    }
    Ok(out)
}

fn strings(a: &dyn Array, i: usize) -> Vec<String> {
    let l = a.as_list::<i32>().value(i);
    let s = l.as_string::<i32>();
    (0..s.len()).map(|j| s.value(j).to_string()).collect()
}

fn policies_of_batch(
    path: &Path,
    b: &RecordBatch,
    user: &str,
    out: &mut Vec<StoredPolicy>,
) -> Result<()> {
    let c = b.columns();
    let users = c[1].as_string::<i32>();
    let u64s = |k: usize, i: usize| c[k].as_primitive::<UInt64Type>().value(i);
    let f32s = |k: usize, i: usize| Score(c[k].as_primitive::<Float32Type>().value(i));
    let text = |k: usize, i: usize| c[k].as_string::<i32>().value(i).to_string();
    for i in 0..b.num_rows() {
        if users.value(i) != user {
            continue;
        }
        let names = strings(c[3].as_ref(), i);
        let probs = c[4].as_list::<i32>().value(i);
        let probs = probs.as_primitive::<Float32Type>();
        let authentication = match text(22, i).as_str() {
            "none" => Authentication::None,
            "password" => Authentication::Password,
            "mfa" => Authentication::Mfa,
            "certificate" => Authentication::Certificate,
            other => return Err(bad_value(path, "authentication", other)),
        };
        let inspection = match text(23, i).as_str() {
            "none" => Inspection::None,
            "metadata" => Inspection::Metadata,
            "full" => Inspection::Full,
            other => return Err(bad_value(path, "inspection", other)),
        };
        let ports = strings(c[25].as_ref(), i)
            .iter()
            .map(|p| {
                p.parse::<PortRange>()
                    .map_err(|_| bad_value(path, "allowed_ports", p))
            })
            .collect::<Result<Vec<_>>>()?;
        let dscp = c[6].as_primitive::<UInt32Type>().value(i);
        out.push(StoredPolicy {
            window_end: c[0].as_primitive::<TimestampMillisecondType>().value(i),
            policy: Policy {
                personas: names
                    .into_iter()
                    .enumerate()
                    .map(|(j, n)| (n.into(), Score(probs.value(j))))
                    .collect(),
                persona: text(2, i).into(),
                diffserv_class: text(5, i).into(),
                dscp: u8::try_from(dscp).map_err(|_| bad_value(path, "dscp", &dscp.to_string()))?,
                endpoint_class: text(7, i).into(),
                floor_bps: u64s(8, i),
                guaranteed_bps: u64s(9, i),
                ceiling_bps: u64s(10, i),
                allocated_bps: u64s(11, i),
                sized_for_bps: u64s(12, i),
                burst_bytes: u64s(13, i),
                priority_weight: f32s(14, i),
                latency_target_ms: f32s(15, i),
                rate_limit_rps: f32s(16, i),
                request_limit_rps: f32s(17, i),
                send_buffer: [u64s(18, i), u64s(19, i)],
                receive_buffer: [u64s(20, i), u64s(21, i)],
                authentication,
                inspection,
                allowed_app_classes: strings(c[24].as_ref(), i)
                    .into_iter()
                    .map(Into::into)
                    .collect(),
                allowed_ports: ports,
                vpn_required: c[26].as_boolean().value(i),
                current_bytes: u64s(27, i),
                current_requests: u64s(28, i),
            },
            socket: None,
        });
    }
    Ok(())
}

fn sockets_of_batch(
    path: &Path,
    b: &RecordBatch,
    user: &str,
    out: &mut [StoredPolicy],
) -> Result<()> {
    let c = b.columns();
    let users = c[1].as_string::<i32>();
    let f32s = |k: usize, i: usize| Score(c[k].as_primitive::<Float32Type>().value(i));
    let u64s = |k: usize, i: usize| c[k].as_primitive::<UInt64Type>().value(i);
    let text = |k: usize, i: usize| c[k].as_string::<i32>().value(i).to_string();
    for i in 0..b.num_rows() {
        if users.value(i) != user {
            continue;
        }
        let window_end = c[0].as_primitive::<TimestampMillisecondType>().value(i);
        let Ok(at) = out.binary_search_by_key(&window_end, |p| p.window_end) else {
            continue;
        };
        let request_type = REQUEST_TYPES
            .into_iter()
            .find(|t| t.name() == text(4, i))
            .ok_or_else(|| bad_value(path, "request_type", &text(4, i)))?;
        let security_level = [
            SecurityLevel::Standard,
            SecurityLevel::Elevated,
            SecurityLevel::Strict,
        ]
        .into_iter()
        .find(|l| l.name() == text(10, i))
        .ok_or_else(|| bad_value(path, "security_level", &text(10, i)))?;
        let risk = c[5].as_primitive::<Float32Type>();
        out[at].socket = Some(SocketProfile {
            predicted_bytes_per_s: f32s(2, i),
            predicted_requests_per_s: f32s(3, i),
            request_type,
            risk: risk.is_valid(i).then(|| Score(risk.value(i))),
            rtt_ms: f32s(6, i),
            send_buffer: u64s(7, i),
            receive_buffer: u64s(8, i),
            rate_limit_bytes_per_s: u64s(9, i),
            security_level,
            endpoint: text(11, i),
        });
    }
    Ok(())
}
