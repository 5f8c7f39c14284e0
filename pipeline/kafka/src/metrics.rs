//! The continuous job's metrics, served in the Prometheus text format on `/metrics`.
//!
//! Counters and gauges are atomics updated by the workers; the window close-to-output latency
//! (from the moment the watermark closes a window to the moment its outputs are durable) is a
//! histogram that also keeps its samples' quantiles for the job's summary.

use crate::{Error, Result};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Upper bounds (seconds) of the close-to-output latency histogram's buckets.
pub const LATENCY_BUCKETS_SECS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The job's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Messages consumed (every message, replays included).
    pub messages: AtomicU64,
    /// Events that entered the dataflow for the first time (not replays).
    pub events: AtomicU64,
    /// Events read again on restart to rebuild the windowed state.
    pub replayed: AtomicU64,
    /// Malformed messages (sent to the dead-letter topic).
    pub rejects: AtomicU64,
    /// Events later than the watermark (written to `late`).
    pub late: AtomicU64,
    /// Windows whose outputs are durable (emitted by this run).
    pub windows_emitted: AtomicU64,
    /// Messages published to output topics.
    pub published: AtomicU64,
    /// Offset commits.
    pub commits: AtomicU64,
    /// Operator state files stored (one per worker and checkpoint).
    pub state_files: AtomicU64,
    /// Bytes of operator state stored.
    pub state_bytes: AtomicU64,
    /// The job's watermark, ms (`i64::MIN`: none yet).
    pub watermark_ms: AtomicI64,
    /// Consumer lag per partition (high watermark minus position).
    pub lag: Mutex<BTreeMap<i32, i64>>,
    latency: Mutex<Latency>,
}

#[derive(Debug, Default)]
struct Latency {
    buckets: [u64; LATENCY_BUCKETS_SECS.len()],
    count: u64,
    sum: f64,
    samples: Vec<f64>,
}

/// Most samples kept for the summary's quantiles (the histogram counts every one).
const MAX_SAMPLES: usize = 1 << 20;

impl Metrics {
    /// New metrics, shared.
    pub fn new() -> Arc<Metrics> {
        let m = Metrics::default();
        m.watermark_ms.store(i64::MIN, Ordering::Relaxed);
        Arc::new(m)
    }

    /// Records one stored operator state file of `bytes`.
    pub fn count_state(&self, bytes: u64) {
        self.state_files.fetch_add(1, Ordering::Relaxed);
        self.state_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Records one window's close-to-output latency.
    pub fn observe_latency(&self, secs: f64) {
        let mut l = self.latency.lock().expect("latency lock");
        for (b, bound) in l.buckets.iter_mut().zip(LATENCY_BUCKETS_SECS) {
            if secs <= bound {
                *b += 1;
            }
        }
        l.count += 1;
        l.sum += secs;
        if l.samples.len() < MAX_SAMPLES {
            l.samples.push(secs);
        }
    }

    /// Quantile `q` (0..=1) of the close-to-output latencies seen, seconds.
    pub fn latency_quantile(&self, q: f64) -> Option<f64> {
        let l = self.latency.lock().expect("latency lock");
        if l.samples.is_empty() {
            return None;
        }
        let mut s = l.samples.clone();
        s.sort_by(f64::total_cmp);
        let i = ((s.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
        Some(s[i])
    }

    /// The metrics in the Prometheus text exposition format, at processing time `now_ms`.
    pub fn render(&self, now_ms: i64) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
        counter(
            &mut out,
            "personaflow_messages_consumed_total",
            "Messages consumed, replays included.",
            c(&self.messages),
        );
        counter(
            &mut out,
            "personaflow_events_consumed_total",
            "Events that entered the dataflow (not counting replays after a restart).",
            c(&self.events),
        );
        counter(
            &mut out,
            "personaflow_events_replayed_total",
            "Events read again after a restart to rebuild the windowed state.",
            c(&self.replayed),
        );
        counter(
            &mut out,
            "personaflow_rejects_total",
            "Malformed messages, sent to the dead-letter topic.",
            c(&self.rejects),
        );
        counter(
            &mut out,
            "personaflow_late_events_total",
            "Events later than the watermark, written to the late table.",
            c(&self.late),
        );
        counter(
            &mut out,
            "personaflow_windows_emitted_total",
            "Windows whose outputs became durable.",
            c(&self.windows_emitted),
        );
        counter(
            &mut out,
            "personaflow_output_messages_total",
            "Messages published to output topics.",
            c(&self.published),
        );
        counter(
            &mut out,
            "personaflow_offset_commits_total",
            "Consumer offset commits.",
            c(&self.commits),
        );
        counter(
            &mut out,
            "personaflow_state_files_written_total",
            "Operator state files (persona model, pins, drift detectors) stored, one per worker and checkpoint.",
            c(&self.state_files),
        );
        counter(
            &mut out,
            "personaflow_state_bytes_written_total",
            "Bytes of operator state stored.",
            c(&self.state_bytes),
        );
        let _ = writeln!(
            out,
            "# HELP personaflow_consumer_lag Messages behind the partition's end.\n\
             # TYPE personaflow_consumer_lag gauge"
        );
        for (p, lag) in self.lag.lock().expect("lag lock").iter() {
            let _ = writeln!(out, "personaflow_consumer_lag{{partition=\"{p}\"}} {lag}");
        }
        let wm = self.watermark_ms.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP personaflow_watermark_delay_seconds Processing time minus the job's event-time watermark.\n\
             # TYPE personaflow_watermark_delay_seconds gauge"
        );
        if wm != i64::MIN {
            let _ = writeln!(
                out,
                "personaflow_watermark_delay_seconds {}",
                (now_ms - wm) as f64 / 1000.0
            );
        }
        let l = self.latency.lock().expect("latency lock");
        let name = "personaflow_window_close_to_output_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} From the watermark closing a window to its outputs being durable.\n\
             # TYPE {name} histogram"
        );
        for (b, bound) in l.buckets.iter().zip(LATENCY_BUCKETS_SECS) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {b}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", l.count);
        let _ = writeln!(out, "{name}_sum {}", l.sum);
        let _ = writeln!(out, "{name}_count {}", l.count);
        out
    }
}

/// A running `/metrics` endpoint; stops when dropped.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MetricsServer {
    /// Serves `metrics` on `addr` (`HOST:PORT`; port 0 picks a free one).
    pub fn start(addr: &str, metrics: Arc<Metrics>) -> Result<MetricsServer> {
        let listener = TcpListener::bind(addr).map_err(|source| Error::Metrics {
            addr: addr.to_string(),
            source,
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|source| Error::Metrics {
                addr: addr.to_string(),
                source,
            })?;
        let local = listener.local_addr().map_err(|source| Error::Metrics {
            addr: addr.to_string(),
            source,
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("personaflow-metrics".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let _ = serve(stream, &metrics);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(50)),
                    }
                }
            })
            .map_err(|source| Error::Metrics {
                addr: addr.to_string(),
                source,
            })?;
        Ok(MetricsServer {
            addr: local,
            stop,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(stream: std::net::TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    // Skip the headers.
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        line.clear();
    }
    let path = request.split_whitespace().nth(1).unwrap_or("");
    let mut stream = stream;
    if path == "/metrics" {
        let body = metrics.render(chrono::Utc::now().timestamp_millis());
        write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    } else {
        let body = "not found: the metrics are on /metrics\n";
        write!(
            stream,
            "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn metrics_render_and_are_served() {
        let m = Metrics::new();
        m.events.fetch_add(5, Ordering::Relaxed);
        m.lag.lock().unwrap().insert(2, 40);
        m.watermark_ms.store(1_000, Ordering::Relaxed);
        m.observe_latency(0.02);
        m.observe_latency(3.0);
        let text = m.render(3_000);
        assert!(
            text.contains("personaflow_events_consumed_total 5"),
            "{text}"
        );
        assert!(text.contains("personaflow_consumer_lag{partition=\"2\"} 40"));
        assert!(text.contains("personaflow_watermark_delay_seconds 2"));
        assert!(text.contains("personaflow_window_close_to_output_seconds_bucket{le=\"0.025\"} 1"));
        assert!(text.contains("personaflow_window_close_to_output_seconds_count 2"));
        assert_eq!(m.latency_quantile(0.0), Some(0.02));
        assert_eq!(m.latency_quantile(1.0), Some(3.0));

        let server = MetricsServer::start("127.0.0.1:0", m).unwrap();
        let get = |path: &str| {
            let mut s = std::net::TcpStream::connect(server.addr()).unwrap();
            write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut body = String::new();
            s.read_to_string(&mut body).unwrap();
            body
        };
        let ok = get("/metrics");
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.contains("personaflow_late_events_total 0"));
        assert!(get("/").starts_with("HTTP/1.1 404"));
    }
}
