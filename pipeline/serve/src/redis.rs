//! The Redis sink (`[sinks.redis]`): each user's latest persona, resonance and policy as a
//! hash `<key_prefix><user>`, written every window with one pipelined round trip per table
//! batch. Speaks RESP2 over TCP itself (the handful of commands it needs: `AUTH`, `SELECT`,
//! `PING`, `SCRIPT LOAD`, `EVALSHA`), so it needs no client library.
//!
//! Each table's fields are written only if they are not older than what the hash holds (a
//! server-side script, [`LATEST_SCRIPT`], compares the table's `*_window_end` field and sets
//! the fields in one step): the job's workers write their windows independently, and a
//! restarted job replays windows, so a user's older window may arrive after a newer one.
//!
//! Fields: from `persona_assignments`, `persona_id`, `persona_distance`,
//! `persona_probabilities` (a JSON object, persona id to probability) and
//! `persona_window_end`; from `resonance`, `top_segment`, `resonance` (a JSON object, segment to
//! probability) and `resonance_window_end`; from `policies`, `policy` (the row as JSON),
//! `catalogue_persona`, `dscp`, `allocated_bps`, `ceiling_bps`, `rate_limit_rps` and
//! `policy_window_end`. Times are epoch milliseconds.
//!
//! ```
//! use personaflow_serve::redis::{encode, parse_url};
//! assert_eq!(encode(&[b"PING".to_vec()]), b"*1\r\n$4\r\nPING\r\n");
//! let u = parse_url("redis://:s3cret@10.0.0.7:6380/2").unwrap();
//! assert_eq!((u.addr.as_str(), u.password.as_deref(), u.db), ("10.0.0.7:6380", Some("s3cret"), Some(2)));
//! ```

use crate::store::rows_json;
use crate::{Error, Result};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, TimestampMillisecondType, UInt32Type, UInt64Type};
use arrow_array::RecordBatch;
use personaflow_io::tables::Table;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// The script each user's write runs: `KEYS[1]` the hash, `ARGV[1]` the table's window
/// field, `ARGV[2]` the window; the rest, field-value pairs, are set unless the hash holds a
/// later window of that table. Returns 1 when it wrote, 0 when the write was older.
pub const LATEST_SCRIPT: &str = "local cur = redis.call('HGET', KEYS[1], ARGV[1]) \
     if cur and tonumber(cur) > tonumber(ARGV[2]) then return 0 end \
     redis.call('HSET', KEYS[1], ARGV[1], ARGV[2], unpack(ARGV, 3)) return 1";

/// How long connecting, reading or writing may take before the sink fails.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A parsed `redis://` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisUrl {
    /// `host:port` (port 6379 when not given).
    pub addr: String,
    /// `AUTH` password, if any.
    pub password: Option<String>,
    /// Database to `SELECT`, if not 0.
    pub db: Option<u32>,
}

/// Parses `redis://[:password@]host[:port][/db]`.
pub fn parse_url(url: &str) -> Result<RedisUrl> {
    let bad = |reason: &str| Error::Redis {
        addr: url.to_string(),
        reason: reason.to_string(),
    };
    let rest = url
        .strip_prefix("redis://")
        .ok_or_else(|| bad("expected redis://[:password@]host[:port][/db]"))?;
    let (auth, rest) = match rest.rsplit_once('@') {
        Some((a, r)) => (Some(a), r),
        None => (None, rest),
    };
    let password = auth.map(|a| a.strip_prefix(':').unwrap_or(a).to_string());
    let (host, db) = match rest.split_once('/') {
        Some((h, "")) => (h, None),
        Some((h, d)) => (
            h,
            Some(
                d.parse::<u32>()
                    .map_err(|_| bad("the database is a number"))?,
            ),
        ),
        None => (rest, None),
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let addr = if host
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        host.to_string()
    } else {
        format!("{host}:6379")
    };
    Ok(RedisUrl {
        addr,
        password,
        db: db.filter(|d| *d != 0),
    })
}

/// One command as RESP: an array of bulk strings.
pub fn encode(args: &[Vec<u8>]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A RESP reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`.
    Status(String),
    /// `-ERR ...`.
    Error(String),
    /// `:n`.
    Int(i64),
    /// `$n` (`None`: nil).
    Bulk(Option<Vec<u8>>),
    /// `*n` (`None`: nil).
    Array(Option<Vec<Reply>>),
}

fn protocol(reason: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, reason.into())
}

/// Reads one reply.
pub fn read_reply(r: &mut impl BufRead) -> std::io::Result<Reply> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let line = line.trim_end_matches("\r\n");
    let (kind, rest) = line
        .split_at_checked(1)
        .ok_or_else(|| protocol("empty reply"))?;
    let n = || {
        rest.parse::<i64>()
            .map_err(|_| protocol(format!("bad length {rest:?}")))
    };
    Ok(match kind {
        "+" => Reply::Status(rest.to_string()),
        "-" => Reply::Error(rest.to_string()),
        ":" => Reply::Int(n()?),
        "$" => {
            let len = n()?;
            if len < 0 {
                Reply::Bulk(None)
            } else {
                let mut buf = vec![0u8; len as usize + 2];
                r.read_exact(&mut buf)?;
                buf.truncate(len as usize);
                Reply::Bulk(Some(buf))
            }
        }
        "*" => {
            let len = n()?;
            if len < 0 {
                Reply::Array(None)
            } else {
                let mut items = Vec::with_capacity(len as usize);
                for _ in 0..len {
                    items.push(read_reply(r)?);
                }
                Reply::Array(Some(items))
            }
        }
        other => return Err(protocol(format!("unknown reply type {other:?}"))),
    })
}

/// A connection to one Redis server.
#[derive(Debug)]
pub struct RespClient {
    url: RedisUrl,
    stream: BufReader<TcpStream>,
}

impl RespClient {
    /// Connects, authenticates and selects the database.
    pub fn connect(url: &RedisUrl) -> Result<Self> {
        let fail = |e: &dyn std::fmt::Display| Error::Redis {
            addr: url.addr.clone(),
            reason: e.to_string(),
        };
        let addrs: Vec<std::net::SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(&url.addr)
            .map_err(|e| fail(&e))?
            .collect();
        let first = addrs.first().ok_or_else(|| fail(&"no address"))?;
        let tcp = TcpStream::connect_timeout(first, IO_TIMEOUT).map_err(|e| fail(&e))?;
        tcp.set_read_timeout(Some(IO_TIMEOUT)).ok();
        tcp.set_write_timeout(Some(IO_TIMEOUT)).ok();
        tcp.set_nodelay(true).ok();
        let mut c = RespClient {
            url: url.clone(),
            stream: BufReader::new(tcp),
        };
        let mut hello = Vec::new();
        if let Some(p) = &url.password {
            hello.push(vec![b"AUTH".to_vec(), p.as_bytes().to_vec()]);
        }
        if let Some(db) = url.db {
            hello.push(vec![b"SELECT".to_vec(), db.to_string().into_bytes()]);
        }
        hello.push(vec![b"PING".to_vec()]);
        for reply in c.pipeline(&hello)? {
            if let Reply::Error(e) = reply {
                return Err(fail(&e));
            }
        }
        Ok(c)
    }

    /// Sends `commands` in one write and reads their replies.
    pub fn pipeline(&mut self, commands: &[Vec<Vec<u8>>]) -> Result<Vec<Reply>> {
        let fail = |e: std::io::Error| Error::Redis {
            addr: self.url.addr.clone(),
            reason: e.to_string(),
        };
        let mut out = Vec::new();
        for c in commands {
            out.extend(encode(c));
        }
        self.stream.get_mut().write_all(&out).map_err(fail)?;
        let mut replies = Vec::with_capacity(commands.len());
        for _ in commands {
            replies.push(read_reply(&mut self.stream).map_err(fail)?);
        }
        Ok(replies)
    }

    /// `HGETALL key` as a map.
    pub fn hgetall(&mut self, key: &str) -> Result<BTreeMap<String, String>> {
        let reply = self.pipeline(&[vec![b"HGETALL".to_vec(), key.as_bytes().to_vec()]])?;
        let mut out = BTreeMap::new();
        if let Some(Reply::Array(Some(items))) = reply.into_iter().next() {
            for pair in items.chunks(2) {
                if let [Reply::Bulk(Some(k)), Reply::Bulk(Some(v))] = pair {
                    out.insert(
                        String::from_utf8_lossy(k).into_owned(),
                        String::from_utf8_lossy(v).into_owned(),
                    );
                }
            }
        }
        Ok(out)
    }
}

/// The Redis sink: an observer of the job's windows.
#[derive(Debug)]
pub struct RedisSink {
    url: RedisUrl,
    prefix: String,
    /// The connection and the SHA-1 of [`LATEST_SCRIPT`] as it loaded it.
    client: Mutex<Option<(RespClient, Vec<u8>)>>,
    users_written: AtomicU64,
}

/// One user's write of one table's fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserWrite {
    /// The hash.
    pub key: String,
    /// The table's window field (`policy_window_end`, ...).
    pub window_field: String,
    /// The window (epoch ms).
    pub window: i64,
    /// The other fields and their values.
    pub fields: Vec<(String, String)>,
}

impl UserWrite {
    /// `EVALSHA sha 1 key window_field window field value ...`.
    pub fn command(&self, sha: &[u8]) -> Vec<Vec<u8>> {
        let mut cmd = Vec::with_capacity(6 + 2 * self.fields.len());
        cmd.push(b"EVALSHA".to_vec());
        cmd.push(sha.to_vec());
        cmd.push(b"1".to_vec());
        cmd.push(self.key.as_bytes().to_vec());
        cmd.push(self.window_field.as_bytes().to_vec());
        cmd.push(self.window.to_string().into_bytes());
        for (k, v) in &self.fields {
            cmd.push(k.as_bytes().to_vec());
            cmd.push(v.as_bytes().to_vec());
        }
        cmd
    }
}

/// Connects and loads [`LATEST_SCRIPT`]; returns the connection and the script's SHA-1.
fn connect_with_script(url: &RedisUrl) -> Result<(RespClient, Vec<u8>)> {
    let mut c = RespClient::connect(url)?;
    let reply = c.pipeline(&[vec![
        b"SCRIPT".to_vec(),
        b"LOAD".to_vec(),
        LATEST_SCRIPT.as_bytes().to_vec(),
    ]])?;
    match reply.into_iter().next() {
        Some(Reply::Bulk(Some(sha))) => Ok((c, sha)),
        other => Err(Error::Redis {
            addr: url.addr.clone(),
            reason: format!("SCRIPT LOAD answered {other:?}"),
        }),
    }
}

impl RedisSink {
    /// Connects to `url` (so that a wrong URL or a server that is down fails at start).
    pub fn connect(url: &str, key_prefix: &str) -> Result<Self> {
        let url = parse_url(url)?;
        let client = connect_with_script(&url)?;
        Ok(RedisSink {
            url,
            prefix: key_prefix.to_string(),
            client: Mutex::new(Some(client)),
            users_written: AtomicU64::new(0),
        })
    }

    /// User-table writes so far (one per user and table batch; a write older than what the
    /// hash holds counts too, though the script leaves the hash as it was).
    pub fn users_written(&self) -> u64 {
        self.users_written.load(Ordering::Relaxed)
    }

    /// The writes of a table's batch, one per user: `(key, window field, window, fields)`
    /// (none for tables the sink does not mirror).
    pub fn writes(&self, table: Table, batch: &RecordBatch) -> Result<Vec<UserWrite>> {
        let col = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| Error::column(name, "missing"))
        };
        let users = col("user_id")?
            .as_string_opt::<i32>()
            .ok_or_else(|| Error::column("user_id", "not a string"))?
            .clone();
        let windows = col("window_end")?
            .as_primitive_opt::<TimestampMillisecondType>()
            .ok_or_else(|| Error::column("window_end", "not a timestamp"))?
            .clone();
        // user -> (window end, fields), in the batch's order of users.
        let mut per_user: BTreeMap<String, (i64, Vec<(String, String)>)> = BTreeMap::new();
        match table {
            Table::PersonaAssignments => {
                let id = col("persona_id")?.as_primitive::<UInt32Type>().clone();
                let dist = col("distance")?.as_primitive::<Float32Type>().clone();
                let ids = col("persona_ids")?.as_list::<i32>().clone();
                let probs = col("probabilities")?.as_list::<i32>().clone();
                for i in 0..batch.num_rows() {
                    let ids = ids.value(i);
                    let probs = probs.value(i);
                    let (ids, probs) = (
                        ids.as_primitive::<UInt32Type>(),
                        probs.as_primitive::<Float32Type>(),
                    );
                    let dist_map: serde_json::Map<String, serde_json::Value> = (0..ids.len())
                        .map(|k| (ids.value(k).to_string(), serde_json::json!(probs.value(k))))
                        .collect();
                    per_user.insert(
                        users.value(i).to_string(),
                        (
                            windows.value(i),
                            vec![
                                ("persona_id".into(), id.value(i).to_string()),
                                ("persona_distance".into(), dist.value(i).to_string()),
                                (
                                    "persona_probabilities".into(),
                                    serde_json::Value::Object(dist_map).to_string(),
                                ),
                                ("persona_window_end".into(), windows.value(i).to_string()),
                            ],
                        ),
                    );
                }
            }
            Table::Resonance => {
                let seg = col("segment")?.as_string::<i32>().clone();
                let prob = col("probability")?.as_primitive::<Float32Type>().clone();
                let top = col("top")?.as_boolean().clone();
                let mut dists: BTreeMap<
                    String,
                    (i64, serde_json::Map<String, serde_json::Value>, String),
                > = BTreeMap::new();
                for i in 0..batch.num_rows() {
                    let e = dists.entry(users.value(i).to_string()).or_insert_with(|| {
                        (windows.value(i), serde_json::Map::new(), String::new())
                    });
                    e.1.insert(seg.value(i).to_string(), serde_json::json!(prob.value(i)));
                    if top.value(i) {
                        e.2 = seg.value(i).to_string();
                    }
                }
                for (user, (w, dist, top)) in dists {
                    per_user.insert(
                        user,
                        (
                            w,
                            vec![
                                ("top_segment".into(), top),
                                (
                                    "resonance".into(),
                                    serde_json::Value::Object(dist).to_string(),
                                ),
                                ("resonance_window_end".into(), w.to_string()),
                            ],
                        ),
                    );
                }
            }
            Table::Policies => {
                let json = rows_json(batch, &["user_id", "window_end"])?;
                let persona = col("persona")?.as_string::<i32>().clone();
                let dscp = col("dscp")?.as_primitive::<UInt32Type>().clone();
                let alloc = col("allocated_bps")?.as_primitive::<UInt64Type>().clone();
                let ceil = col("ceiling_bps")?.as_primitive::<UInt64Type>().clone();
                let rate = col("rate_limit_rps")?.as_primitive::<Float32Type>().clone();
                for (i, row) in json.iter().enumerate() {
                    per_user.insert(
                        users.value(i).to_string(),
                        (
                            windows.value(i),
                            vec![
                                ("policy".into(), row.to_string()),
                                ("catalogue_persona".into(), persona.value(i).to_string()),
                                ("dscp".into(), dscp.value(i).to_string()),
                                ("allocated_bps".into(), alloc.value(i).to_string()),
                                ("ceiling_bps".into(), ceil.value(i).to_string()),
                                ("rate_limit_rps".into(), rate.value(i).to_string()),
                                ("policy_window_end".into(), windows.value(i).to_string()),
                            ],
                        ),
                    );
                }
            }
            _ => {}
        }
        Ok(per_user
            .into_iter()
            .map(|(user, (window, mut fields))| {
                // The window field goes first, as the script's ARGV[1] and ARGV[2].
                let at = fields
                    .iter()
                    .position(|(k, _)| k.ends_with("_window_end"))
                    .expect("every table's fields name its window");
                let (window_field, _) = fields.remove(at);
                UserWrite {
                    key: format!("{}{user}", self.prefix),
                    window_field,
                    window,
                    fields,
                }
            })
            .collect())
    }

    /// Writes `table`'s batch (one pipelined round trip), reconnecting once if the
    /// connection broke.
    pub fn write(&self, table: Table, batch: &RecordBatch) -> Result<()> {
        if !matches!(
            table,
            Table::PersonaAssignments | Table::Resonance | Table::Policies
        ) || batch.num_rows() == 0
        {
            return Ok(());
        }
        let writes = self.writes(table, batch)?;
        let mut guard = self.client.lock().expect("not poisoned");
        let mut result = Err(Error::Redis {
            addr: self.url.addr.clone(),
            reason: "not connected".into(),
        });
        for _attempt in 0..2 {
            if guard.is_none() {
                match connect_with_script(&self.url) {
                    Ok(c) => *guard = Some(c),
                    Err(e) => {
                        result = Err(e);
                        continue;
                    }
                }
            }
            let (client, sha) = guard.as_mut().expect("connected");
            let commands: Vec<Vec<Vec<u8>>> = writes.iter().map(|w| w.command(sha)).collect();
            match client.pipeline(&commands) {
                Ok(replies) => {
                    if let Some(Reply::Error(e)) =
                        replies.iter().find(|r| matches!(r, Reply::Error(_)))
                    {
                        let e = Error::Redis {
                            addr: self.url.addr.clone(),
                            reason: e.clone(),
                        };
                        if e.to_string().contains("NOSCRIPT") {
                            // The server lost its scripts (restarted, flushed): load it again.
                            *guard = None;
                            result = Err(e);
                            continue;
                        }
                        return Err(e);
                    }
                    self.users_written
                        .fetch_add(commands.len() as u64, Ordering::Relaxed);
                    return Ok(());
                }
                Err(e) => {
                    *guard = None;
                    result = Err(e);
                }
            }
        }
        result
    }
}

impl personaflow_io::writer::WindowObserver for RedisSink {
    fn window(
        &self,
        table: Table,
        _window: u64,
        batch: &RecordBatch,
    ) -> personaflow_io::Result<()> {
        self.write(table, batch)
            .map_err(|e| e.into_sink(format!("{} (redis)", table.name())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_defaults() {
        let u = parse_url("redis://127.0.0.1").unwrap();
        assert_eq!(
            (u.addr.as_str(), u.password, u.db),
            ("127.0.0.1:6379", None, None)
        );
        assert_eq!(parse_url("redis://h:7000/0").unwrap().db, None);
        assert!(parse_url("http://h").is_err());
        assert!(parse_url("redis://h/x").is_err());
        assert!(parse_url("redis://").is_err());
    }

    #[test]
    fn replies_parse() {
        let mut r = std::io::Cursor::new(
            b"+OK\r\n:3\r\n$5\r\nhello\r\n$-1\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n-ERR no\r\n".to_vec(),
        );
        assert_eq!(read_reply(&mut r).unwrap(), Reply::Status("OK".into()));
        assert_eq!(read_reply(&mut r).unwrap(), Reply::Int(3));
        assert_eq!(
            read_reply(&mut r).unwrap(),
            Reply::Bulk(Some(b"hello".to_vec()))
        );
        assert_eq!(read_reply(&mut r).unwrap(), Reply::Bulk(None));
        assert_eq!(
            read_reply(&mut r).unwrap(),
            Reply::Array(Some(vec![
                Reply::Bulk(Some(b"a".to_vec())),
                Reply::Bulk(Some(b"b".to_vec()))
            ]))
        );
        assert_eq!(read_reply(&mut r).unwrap(), Reply::Error("ERR no".into()));
        assert!(read_reply(&mut r).is_err());
    }
}
