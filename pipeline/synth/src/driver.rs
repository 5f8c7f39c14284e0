//! The HTTP load driver: synthetic events replayed as requests against a service, at their
//! synthetic times scaled by a speed-up, over keep-alive connections, bounded in count and
//! in time; reports the achieved rate, latency percentiles and errors.
//!
//! An event becomes `POST <base>/<category>/<action>` with a body of `bytes_out` bytes (at
//! most [`MAX_BODY_BYTES`]) when it sent bytes, else `GET <base>/<category>/<action>`; the
//! user is in `X-Personaflow-User`. A request's latency counts from the time it was due (a
//! slow service delays the requests queued behind it, and that counts: no coordinated
//! omission). Any answer other than 2xx, and any connection failure, is an error. HTTP/1.1
//! only (plain TCP, no TLS), answers with `Content-Length` or chunked bodies.
//!
//! ```
//! use personaflow_synth::driver::HttpTarget;
//! let t = HttpTarget::parse("http://127.0.0.1:8080/load").unwrap();
//! assert_eq!((t.addr.as_str(), t.base.as_str()), ("127.0.0.1:8080", "/load"));
//! assert!(HttpTarget::parse("https://example.com").is_err());
//! ```

use crate::{Error, Result};
use personaflow_operators::Event;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The largest request body sent (an event's `bytes_out` beyond it is cut).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Connections by default.
pub const DEFAULT_CONNECTIONS: usize = 16;
/// How long one request may take before it counts as an error.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where requests go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpTarget {
    /// `host:port`.
    pub addr: String,
    /// Path prefix (no trailing `/`).
    pub base: String,
    /// The `Host` header.
    pub host: String,
}

impl HttpTarget {
    /// Parses `http://host[:port][/base]`.
    pub fn parse(url: &str) -> Result<Self> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            Error::Input(format!(
                "--http {url:?}: expected http://host[:port][/path]"
            ))
        })?;
        let (hostport, base) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if hostport.is_empty() {
            return Err(Error::Input(format!("--http {url:?}: no host")));
        }
        let addr = if hostport.contains(':') {
            hostport.to_string()
        } else {
            format!("{hostport}:80")
        };
        Ok(HttpTarget {
            addr,
            base: base.to_string(),
            host: hostport.to_string(),
        })
    }

    /// The request of `event`.
    pub fn request(&self, e: &Event) -> Vec<u8> {
        let seg = |s: &str| -> String {
            s.bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect()
        };
        let body = (e.bytes_out.unwrap_or(0) as usize).min(MAX_BODY_BYTES);
        let method = if body > 0 { "POST" } else { "GET" };
        let mut r = format!(
            "{method} {}/{}/{} HTTP/1.1\r\nHost: {}\r\nX-Personaflow-User: {}\r\n",
            self.base,
            seg(e.category.as_deref().unwrap_or("none")),
            seg(&e.action),
            self.host,
            seg(&e.user_id),
        );
        if body > 0 {
            r.push_str(&format!(
                "Content-Type: application/octet-stream\r\nContent-Length: {body}\r\n"
            ));
        }
        r.push_str("\r\n");
        let mut bytes = r.into_bytes();
        bytes.resize(bytes.len() + body, b'x');
        bytes
    }
}

/// How to drive.
#[derive(Clone, Debug, PartialEq)]
pub struct DriveOptions {
    /// Synthetic seconds per wall-clock second (1: real pace).
    pub speedup: f64,
    /// Requests at most.
    pub limit: Option<u64>,
    /// Wall-clock time at most.
    pub max_wall: Duration,
    /// Keep-alive connections.
    pub connections: usize,
}

/// What a drive did.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct DriveReport {
    /// Requests sent.
    pub sent: u64,
    /// Answered 2xx.
    pub ok: u64,
    /// Not 2xx, or failed.
    pub errors: u64,
    /// Wall-clock seconds.
    pub elapsed_secs: f64,
    /// Requests answered per second.
    pub achieved_rate: f64,
    /// Latency percentiles, ms (from the due time).
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest.
    pub max_ms: f64,
}

#[derive(Debug)]
struct Job {
    due: Instant,
    request: Vec<u8>,
}

/// A running drive: [`HttpDriver::send`] each event (in time order), then
/// [`HttpDriver::finish`].
#[derive(Debug)]
pub struct HttpDriver {
    target: HttpTarget,
    options: DriveOptions,
    start_wall: Instant,
    start_ms: i64,
    senders: Vec<mpsc::SyncSender<Job>>,
    workers: Vec<std::thread::JoinHandle<(Vec<Duration>, u64, u64)>>,
    sent: u64,
}

impl HttpDriver {
    /// Starts the connections' workers; synthetic time `start_ms` is now.
    pub fn start(target: HttpTarget, options: DriveOptions, start_ms: i64) -> Self {
        let mut senders = Vec::new();
        let mut workers = Vec::new();
        for _ in 0..options.connections.max(1) {
            let (tx, rx) = mpsc::sync_channel::<Job>(1_024);
            let addr = target.addr.clone();
            senders.push(tx);
            workers.push(std::thread::spawn(move || worker(&addr, rx)));
        }
        HttpDriver {
            target,
            options,
            start_wall: Instant::now(),
            start_ms,
            senders,
            workers,
            sent: 0,
        }
    }

    /// Whether the drive is over (the limit reached, or the wall time spent).
    pub fn done(&self) -> bool {
        self.options.limit.is_some_and(|l| self.sent >= l)
            || self.start_wall.elapsed() >= self.options.max_wall
    }

    /// Requests handed to the connections so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Sends `e` when it is due (waiting until then); returns false once the drive is over.
    pub fn send(&mut self, e: &Event) -> bool {
        if self.done() {
            return false;
        }
        let offset = (e.ts_ms - self.start_ms).max(0) as f64 / 1000.0 / self.options.speedup;
        let due = self.start_wall + Duration::from_secs_f64(offset);
        if due > self.start_wall + self.options.max_wall {
            return false;
        }
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let c = (self.sent % self.senders.len() as u64) as usize;
        let job = Job {
            due,
            request: self.target.request(e),
        };
        if self.senders[c].send(job).is_err() {
            return false;
        }
        self.sent += 1;
        true
    }

    /// Waits for every answer and reports.
    pub fn finish(self) -> DriveReport {
        drop(self.senders);
        let mut latencies = Vec::new();
        let (mut ok, mut errors) = (0, 0);
        for w in self.workers {
            let (l, o, e) = w.join().unwrap_or_default();
            latencies.extend(l);
            ok += o;
            errors += e;
        }
        latencies.sort();
        let q = |p: f64| {
            latencies
                .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
                .map_or(0.0, |d| d.as_secs_f64() * 1e3)
        };
        let elapsed = self.start_wall.elapsed().as_secs_f64();
        DriveReport {
            sent: self.sent,
            ok,
            errors,
            elapsed_secs: elapsed,
            achieved_rate: (ok + errors) as f64 / elapsed.max(1e-9),
            p50_ms: q(0.5),
            p99_ms: q(0.99),
            max_ms: latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
        }
    }
}

fn connect(addr: &str) -> Option<BufReader<TcpStream>> {
    let s = TcpStream::connect(addr).ok()?;
    s.set_nodelay(true).ok();
    s.set_read_timeout(Some(REQUEST_TIMEOUT)).ok();
    s.set_write_timeout(Some(REQUEST_TIMEOUT)).ok();
    Some(BufReader::new(s))
}

/// One connection: its jobs in turn; returns the latencies, answers 2xx and errors.
fn worker(addr: &str, jobs: mpsc::Receiver<Job>) -> (Vec<Duration>, u64, u64) {
    let mut conn: Option<BufReader<TcpStream>> = None;
    let (mut latencies, mut ok, mut errors) = (Vec::new(), 0, 0);
    for job in jobs {
        if conn.is_none() {
            conn = connect(addr);
        }
        let answer = conn.as_mut().and_then(|c| exchange(c, &job.request));
        match answer {
            Some((status, keep)) => {
                if (200..300).contains(&status) {
                    ok += 1;
                } else {
                    errors += 1;
                }
                if !keep {
                    conn = None;
                }
            }
            None => {
                errors += 1;
                conn = None;
            }
        }
        latencies.push(job.due.elapsed());
    }
    (latencies, ok, errors)
}

/// Writes `request` and reads the answer: its status and whether the connection stays open.
fn exchange(c: &mut BufReader<TcpStream>, request: &[u8]) -> Option<(u16, bool)> {
    c.get_mut().write_all(request).ok()?;
    let mut line = String::new();
    c.read_line(&mut line).ok()?;
    let status: u16 = line.split_whitespace().nth(1)?.parse().ok()?;
    let (mut length, mut chunked, mut close) = (None, false, false);
    loop {
        let mut h = String::new();
        if c.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (name, value) = h.split_once(':')?;
        let (name, value) = (
            name.trim().to_ascii_lowercase(),
            value.trim().to_ascii_lowercase(),
        );
        match name.as_str() {
            "content-length" => length = value.parse::<u64>().ok(),
            "transfer-encoding" => chunked = value.contains("chunked"),
            "connection" => close = value.contains("close"),
            _ => {}
        }
    }
    if chunked {
        loop {
            let mut size = String::new();
            c.read_line(&mut size).ok()?;
            let n = u64::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
            std::io::copy(&mut c.by_ref().take(n + 2), &mut std::io::sink()).ok()?;
            if n == 0 {
                break;
            }
        }
    } else if let Some(n) = length {
        std::io::copy(&mut c.by_ref().take(n), &mut std::io::sink()).ok()?;
    } else {
        // Neither: the body runs to the end of the connection.
        std::io::copy(c, &mut std::io::sink()).ok()?;
        close = true;
    }
    Some((status, !close))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    /// A server answering every request 200 (or 503 for paths with `fail`), recording them.
    fn server() -> (String, Arc<Mutex<Vec<String>>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(conn) = conn else { break };
                let s = s.clone();
                std::thread::spawn(move || {
                    let mut r = BufReader::new(conn);
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let mut length = 0;
                        loop {
                            let mut h = String::new();
                            r.read_line(&mut h).unwrap();
                            if h.trim().is_empty() {
                                break;
                            }
                            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:")
                            {
                                length = v.trim().parse().unwrap();
                            }
                        }
                        let mut body = vec![0; length];
                        r.read_exact(&mut body).unwrap();
                        s.lock()
                            .unwrap()
                            .push(format!("{} {}", line.trim(), length));
                        let answer = if line.contains("fail") {
                            "HTTP/1.1 503 Busy\r\nContent-Length: 4\r\n\r\nbusy"
                        } else {
                            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
                        };
                        r.get_mut().write_all(answer.as_bytes()).unwrap();
                    }
                });
            }
        });
        (addr, seen)
    }

    fn event(ts: i64, action: &str, bytes_out: u64) -> Event {
        let mut e = Event::new(ts, "u 1", action);
        e.category = Some("web".into());
        e.bytes_out = Some(bytes_out);
        e
    }

    #[test]
    fn events_become_requests_paced_and_counted() {
        let (addr, seen) = server();
        let target = HttpTarget::parse(&format!("http://{addr}/load/")).unwrap();
        let options = DriveOptions {
            speedup: 100.0,
            limit: Some(40),
            max_wall: Duration::from_secs(60),
            connections: 3,
        };
        let mut d = HttpDriver::start(target, options, 0);
        let started = Instant::now();
        for i in 0..50 {
            // 50 events over 10 synthetic seconds: 0.1 s of wall time at 100x.
            let action = if i % 10 == 9 { "fail" } else { "view" };
            if !d.send(&event(i * 200, action, (i % 3) as u64 * 100)) {
                break;
            }
        }
        let report = d.finish();
        assert_eq!(report.sent, 40, "the limit");
        assert_eq!(report.ok + report.errors, 40);
        assert_eq!(report.errors, 4, "the 503s");
        // The 40th event was due 7.8 synthetic seconds in: 78 ms of wall time.
        assert!(started.elapsed() >= Duration::from_millis(78));
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 40);
        assert!(
            seen.contains(&"GET /load/web/view HTTP/1.1 0".to_string()),
            "{seen:?}"
        );
        assert!(
            seen.contains(&"POST /load/web/view HTTP/1.1 100".to_string()),
            "{seen:?}"
        );
        assert!(report.p99_ms >= report.p50_ms && report.max_ms >= report.p99_ms);
    }

    #[test]
    fn a_service_that_is_not_there_is_all_errors() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let target = HttpTarget::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        let options = DriveOptions {
            speedup: 1e6,
            limit: None,
            max_wall: Duration::from_secs(30),
            connections: 2,
        };
        let mut d = HttpDriver::start(target, options, 0);
        for i in 0..5 {
            d.send(&event(i, "x", 0));
        }
        let r = d.finish();
        assert_eq!((r.sent, r.ok, r.errors), (5, 0, 5));
    }
}
