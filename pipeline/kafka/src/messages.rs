//! A window's rows of a table as output messages with `stream.output_message = "key"`
//! ([`OutputMessage::Key`]; the default is a row per message): the rows grouped by their key
//! ([`key_groups`]) and each group sent as one JSON array of the row objects
//! ([`send_arrays`]).
//!
//! A key's rows are one message, so a compacted topic keeps a key's whole latest window, and
//! the job sends a message per user, not per row: the five default topics carried 1,369,177
//! rows in 499,998 messages on the stream bench's events (BENCHMARKS.md, "A message per key and
//! window"). A message would only be split where it passes [`MAX_MESSAGE_BYTES`] (the rows of
//! a table without a key column, all under one key).
//!
//! ```
//! use personaflow_kafka::messages::{key_groups, send_arrays, MAX_MESSAGE_BYTES};
//!
//! let keys = ["u1", "u2", "u1"];
//! let groups = key_groups(keys.len(), |r| keys[r].as_bytes());
//! let mut sent = Vec::new();
//! let messages = send_arrays(
//!     &groups,
//!     |row, out| out.extend_from_slice(format!("{{\"row\":{row}}}").as_bytes()),
//!     MAX_MESSAGE_BYTES,
//!     |first, payload| -> Result<(), ()> {
//!         sent.push((keys[first], String::from_utf8(payload.to_vec()).unwrap()));
//!         Ok(())
//!     },
//! )
//! .unwrap();
//! assert_eq!(messages, 2);
//! assert_eq!(
//!     sent,
//!     [("u1", r#"[{"row":0},{"row":2}]"#.to_string()), ("u2", r#"[{"row":1}]"#.to_string())]
//! );
//! ```
//!
//! With `stream.output_message = "arrow"` ([`OutputMessage::Arrow`]) a window's rows are
//! instead Arrow IPC streams ([`ipc_messages`]): the table's schema and a record batch of as
//! many rows as fit in [`MAX_MESSAGE_BYTES`], each message readable alone (`pyarrow.ipc
//! .open_stream(message.value())`).
//!
//! [`OutputMessage::Key`]: personaflow_dataflow::config::OutputMessage::Key
//! [`OutputMessage::Arrow`]: personaflow_dataflow::config::OutputMessage::Arrow

use arrow_array::RecordBatch;
use arrow_ipc::writer::StreamWriter;
use arrow_schema::ArrowError;
use std::collections::{HashMap, HashSet};

/// Most bytes of one message that holds several rows: a key's rows that would pass it go on
/// in the next message (a row larger than this alone is a message of its own). Half of
/// Kafka's default `message.max.bytes` (1 MB), with room for the record's framing.
pub const MAX_MESSAGE_BYTES: usize = 512 * 1024;

/// The rows of a batch grouped by key: the groups in the order their keys first appear, each
/// group's rows in batch order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyGroups {
    /// Row indices, group after group.
    order: Vec<usize>,
    /// Where each group starts in `order`, and `order.len()` last.
    starts: Vec<usize>,
}

impl KeyGroups {
    /// The groups, each as its rows.
    pub fn iter(&self) -> impl Iterator<Item = &[usize]> {
        self.starts.windows(2).map(|w| &self.order[w[0]..w[1]])
    }

    /// How many groups.
    pub fn len(&self) -> usize {
        self.starts.len().saturating_sub(1)
    }

    /// No rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Groups rows `0..rows` by `key(row)`. The sinks' rows of one key follow each other (a
/// user's resonance per segment, forecasts per horizon): that is checked with a hash per run
/// of equal keys and costs nothing else; otherwise the rows are ordered by group (a hash per
/// row and a stable sort).
pub fn key_groups<'k>(rows: usize, key: impl Fn(usize) -> &'k [u8]) -> KeyGroups {
    let mut starts = Vec::new();
    let mut seen: HashSet<&[u8]> = HashSet::new();
    let mut runs_are_groups = true;
    for row in 0..rows {
        let k = key(row);
        if row == 0 || key(row - 1) != k {
            if !seen.insert(k) {
                runs_are_groups = false;
                break;
            }
            starts.push(row);
        }
    }
    if runs_are_groups {
        starts.push(rows);
        return KeyGroups {
            order: (0..rows).collect(),
            starts,
        };
    }
    let mut ids: HashMap<&[u8], usize> = HashMap::new();
    let group: Vec<usize> = (0..rows)
        .map(|row| {
            let next = ids.len();
            *ids.entry(key(row)).or_insert(next)
        })
        .collect();
    let mut order: Vec<usize> = (0..rows).collect();
    order.sort_by_key(|&row| group[row]);
    let mut starts: Vec<usize> = (0..rows)
        .filter(|&i| i == 0 || group[order[i - 1]] != group[order[i]])
        .collect();
    starts.push(rows);
    KeyGroups { order, starts }
}

/// Sends each group as a JSON array of its rows, `[row,row,...]`, each row as `encode`
/// appends it; a group whose array would pass `max_bytes` goes on in the next message.
/// `send` gets the first row of the message (its key is the group's) and the payload.
/// Returns the number of messages sent; stops at `send`'s first error.
pub fn send_arrays<E>(
    groups: &KeyGroups,
    mut encode: impl FnMut(usize, &mut Vec<u8>),
    max_bytes: usize,
    mut send: impl FnMut(usize, &[u8]) -> Result<(), E>,
) -> Result<u64, E> {
    let mut message = Vec::new();
    let mut row_json = Vec::new();
    let mut messages = 0;
    for group in groups.iter() {
        let mut first = group[0];
        message.clear();
        message.push(b'[');
        for &row in group {
            row_json.clear();
            encode(row, &mut row_json);
            // `[` alone means no row yet; a row and its `,` or `]` must fit.
            if message.len() > 1 && message.len() + 1 + row_json.len() + 1 > max_bytes {
                message.push(b']');
                send(first, &message)?;
                messages += 1;
                message.clear();
                message.push(b'[');
                first = row;
            }
            if message.len() > 1 {
                message.push(b',');
            }
            message.extend_from_slice(&row_json);
        }
        message.push(b']');
        send(first, &message)?;
        messages += 1;
    }
    Ok(messages)
}

/// `batch` as Arrow IPC streams, each the schema and one record batch of consecutive rows,
/// in order: as few as keep each within `max_bytes` (a row larger alone is a stream of its
/// own). Returns each stream with its first row.
pub fn ipc_messages(
    batch: &RecordBatch,
    max_bytes: usize,
) -> Result<Vec<(usize, Vec<u8>)>, ArrowError> {
    let mut out = Vec::new();
    let rows = batch.num_rows();
    if rows == 0 {
        return Ok(out);
    }
    let whole = ipc_stream(batch)?;
    if whole.len() <= max_bytes || rows == 1 {
        out.push((0, whole));
        return Ok(out);
    }
    // Slices of about the rows that fit, each halved while its stream does not.
    let per = (rows as u128 * max_bytes as u128 / whole.len() as u128).max(1) as usize;
    let mut start = 0;
    while start < rows {
        let mut len = per.min(rows - start);
        loop {
            let stream = ipc_stream(&batch.slice(start, len))?;
            if stream.len() <= max_bytes || len == 1 {
                out.push((start, stream));
                break;
            }
            len /= 2;
        }
        start += len;
    }
    Ok(out)
}

/// One Arrow IPC stream: `batch`'s schema, the batch, the end marker.
fn ipc_stream(batch: &RecordBatch) -> Result<Vec<u8>, ArrowError> {
    let mut w = StreamWriter::try_new(Vec::new(), batch.schema_ref())?;
    w.write(batch)?;
    w.finish()?;
    w.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// From scratch: for each distinct key in order of first appearance, its rows in order.
    fn oracle(keys: &[String]) -> Vec<Vec<usize>> {
        let mut distinct: Vec<&String> = Vec::new();
        for k in keys {
            if !distinct.contains(&k) {
                distinct.push(k);
            }
        }
        distinct
            .iter()
            .map(|d| (0..keys.len()).filter(|&r| &keys[r] == *d).collect())
            .collect()
    }

    /// Seeded random keys: runs of one key (as the sinks write them), or any order, or one key.
    fn random_keys(rng: &mut impl Rng) -> Vec<String> {
        let n = rng.random_range(0..40);
        let distinct = rng.random_range(1..8);
        match rng.random_range(0..3) {
            0 => {
                let mut keys = Vec::new();
                let mut k = 0;
                while keys.len() < n {
                    let run = rng.random_range(1..5);
                    keys.extend(std::iter::repeat_n(format!("u{k}"), run));
                    k += 1;
                }
                keys.truncate(n);
                keys
            }
            1 => (0..n)
                .map(|_| format!("u{}", rng.random_range(0..distinct)))
                .collect(),
            _ => vec![String::new(); n],
        }
    }

    #[test]
    fn groups_are_each_keys_rows_in_order_whatever_the_order_of_the_rows() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(21);
        for _ in 0..2_000 {
            let keys = random_keys(&mut rng);
            let groups = key_groups(keys.len(), |r| keys[r].as_bytes());
            let got: Vec<Vec<usize>> = groups.iter().map(<[usize]>::to_vec).collect();
            assert_eq!(got, oracle(&keys), "{keys:?}");
            assert_eq!(groups.len(), got.len());
        }
    }

    #[test]
    fn arrays_hold_each_groups_rows_and_split_only_past_the_limit() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(22);
        for _ in 0..2_000 {
            let keys = random_keys(&mut rng);
            let rows: Vec<String> = (0..keys.len())
                .map(|r| {
                    format!(
                        "{{\"r\":{r},\"pad\":\"{}\"}}",
                        "x".repeat(rng.random_range(0..30))
                    )
                })
                .collect();
            let max = rng.random_range(1..200);
            let groups = key_groups(keys.len(), |r| keys[r].as_bytes());
            let mut sent: Vec<(usize, Vec<u8>)> = Vec::new();
            let n = send_arrays(
                &groups,
                |r, out| out.extend_from_slice(rows[r].as_bytes()),
                max,
                |first, payload| -> Result<(), ()> {
                    sent.push((first, payload.to_vec()));
                    Ok(())
                },
            )
            .unwrap();
            assert_eq!(n as usize, sent.len());
            // Each message is a JSON array of whole rows of one key, within the limit unless
            // it holds one row; read back in order they are each group's rows in order.
            let mut read: Vec<Vec<usize>> = Vec::new();
            let mut last_key: Option<&str> = None;
            for (i, (first, payload)) in sent.iter().enumerate() {
                let values: Vec<serde_json::Value> = serde_json::from_slice(payload).unwrap();
                let ids: Vec<usize> = values
                    .iter()
                    .map(|v| v["r"].as_u64().unwrap() as usize)
                    .collect();
                assert_eq!(ids[0], *first);
                assert!(ids.iter().all(|&r| keys[r] == keys[*first]), "one key");
                assert!(payload.len() <= max || ids.len() == 1, "split past {max}");
                let key = keys[*first].as_str();
                if last_key == Some(key) {
                    // A continuation: the previous message could not take this one's first row.
                    let prev = &sent[i - 1].1;
                    assert!(prev.len() + 1 + rows[ids[0]].len() > max);
                    read.last_mut().unwrap().extend(ids);
                } else {
                    read.push(ids);
                }
                last_key = Some(key);
            }
            assert_eq!(read, oracle(&keys));
        }
    }

    #[test]
    fn a_failed_send_stops_the_rest() {
        let keys = ["a", "b", "c"];
        let groups = key_groups(3, |r| keys[r].as_bytes());
        let mut tries = 0;
        let r = send_arrays(
            &groups,
            |_, out| out.extend_from_slice(b"{}"),
            MAX_MESSAGE_BYTES,
            |first, _| {
                tries += 1;
                if first == 1 {
                    Err("refused")
                } else {
                    Ok(())
                }
            },
        );
        assert_eq!(r, Err("refused"));
        assert_eq!(tries, 2);
    }

    /// Read back, the streams are the batch's rows in order, each within the limit unless it
    /// holds one row.
    #[test]
    fn ipc_streams_read_back_to_the_batch_and_keep_within_the_limit() {
        use arrow_array::{ArrayRef, Float32Array, StringArray};
        use std::sync::Arc;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(23);
        for _ in 0..60 {
            let rows = rng.random_range(0..400);
            let users: Vec<String> = (0..rows)
                .map(|r| format!("u{r}-{}", "x".repeat(rng.random_range(0..40))))
                .collect();
            let values: Vec<Option<f32>> = (0..rows)
                .map(|_| rng.random_bool(0.9).then(|| rng.random()))
                .collect();
            let batch = RecordBatch::try_from_iter([
                ("user_id", Arc::new(StringArray::from(users)) as ArrayRef),
                ("value", Arc::new(Float32Array::from(values)) as ArrayRef),
            ])
            .unwrap();
            let max = rng.random_range(200..20_000);
            let streams = ipc_messages(&batch, max).unwrap();
            let mut next = 0;
            let mut back = Vec::new();
            for (first, bytes) in &streams {
                assert_eq!(*first, next, "in order, none left out");
                let reader =
                    arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
                        .unwrap();
                let read: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
                assert_eq!(read.len(), 1, "one batch a stream");
                assert!(
                    bytes.len() <= max || read[0].num_rows() == 1,
                    "{} > {max}",
                    bytes.len()
                );
                next += read[0].num_rows();
                back.push(read[0].clone());
            }
            assert_eq!(next, rows);
            if rows > 0 {
                let back = arrow_select::concat::concat_batches(&batch.schema(), &back).unwrap();
                assert_eq!(back, batch);
            }
        }
    }
}
