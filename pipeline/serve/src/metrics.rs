//! Prometheus metrics of the API: requests and latency per route, lock-free (atomics in a table
//! fixed when the router is built).
//!
//! ```
//! use personaflow_serve::metrics::RouteMetrics;
//! let m = RouteMetrics::new(&["/v1/users/{id}"]);
//! m.observe("/v1/users/{id}", 200, 0.0004);
//! m.observe("/v1/users/{id}", 404, 0.0011);
//! let text = m.render();
//! assert!(text.contains("personaflow_http_requests_total{route=\"/v1/users/{id}\",status=\"404\"} 1"));
//! assert!(text.contains("personaflow_http_request_duration_seconds_bucket{route=\"/v1/users/{id}\",le=\"0.0005\"} 1"));
//! ```

use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of the latency histogram's buckets, seconds.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
];

/// Status codes counted one by one; any other is counted as `other`.
pub const STATUSES: [u16; 9] = [200, 400, 401, 404, 405, 413, 415, 500, 503];

/// The route name of requests that matched none.
pub const UNMATCHED: &str = "unmatched";

#[derive(Debug)]
struct Route {
    name: String,
    by_status: [AtomicU64; STATUSES.len() + 1],
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    /// Sum of latencies, microseconds.
    sum_us: AtomicU64,
    count: AtomicU64,
}

/// Counters and latency histograms per route.
#[derive(Debug)]
pub struct RouteMetrics {
    routes: Vec<Route>,
}

impl RouteMetrics {
    /// Metrics of `routes` (and of [`UNMATCHED`]).
    pub fn new(routes: &[&str]) -> Self {
        let route = |name: &str| Route {
            name: name.to_string(),
            by_status: Default::default(),
            buckets: Default::default(),
            sum_us: AtomicU64::new(0),
            count: AtomicU64::new(0),
        };
        let mut all: Vec<Route> = routes.iter().map(|r| route(r)).collect();
        all.push(route(UNMATCHED));
        RouteMetrics { routes: all }
    }

    /// Counts a request to `route` (a route pattern; an unknown one counts as unmatched)
    /// answered with `status` in `secs`.
    pub fn observe(&self, route: &str, status: u16, secs: f64) {
        let r = self
            .routes
            .iter()
            .find(|r| r.name == route)
            .unwrap_or_else(|| self.routes.last().expect("unmatched is always there"));
        let s = STATUSES
            .iter()
            .position(|&x| x == status)
            .unwrap_or(STATUSES.len());
        r.by_status[s].fetch_add(1, Ordering::Relaxed);
        if let Some(b) = LATENCY_BUCKETS.iter().position(|&le| secs <= le) {
            r.buckets[b].fetch_add(1, Ordering::Relaxed);
        }
        r.sum_us
            .fetch_add((secs * 1e6).round() as u64, Ordering::Relaxed);
        r.count.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP personaflow_http_requests_total HTTP requests answered, by route and status.\n",
        );
        out.push_str("# TYPE personaflow_http_requests_total counter\n");
        for r in &self.routes {
            for (i, n) in r.by_status.iter().enumerate() {
                let n = n.load(Ordering::Relaxed);
                if n == 0 {
                    continue;
                }
                let status = STATUSES
                    .get(i)
                    .map_or("other".to_string(), |s| s.to_string());
                out.push_str(&format!(
                    "personaflow_http_requests_total{{route=\"{}\",status=\"{status}\"}} {n}\n",
                    r.name
                ));
            }
        }
        out.push_str(
            "# HELP personaflow_http_request_duration_seconds Time to answer, by route.\n",
        );
        out.push_str("# TYPE personaflow_http_request_duration_seconds histogram\n");
        for r in &self.routes {
            let count = r.count.load(Ordering::Relaxed);
            if count == 0 {
                continue;
            }
            let mut cumulative = 0;
            for (le, n) in LATENCY_BUCKETS.iter().zip(&r.buckets) {
                cumulative += n.load(Ordering::Relaxed);
                out.push_str(&format!(
                    "personaflow_http_request_duration_seconds_bucket{{route=\"{}\",le=\"{le}\"}} {cumulative}\n",
                    r.name
                ));
            }
            out.push_str(&format!(
                "personaflow_http_request_duration_seconds_bucket{{route=\"{}\",le=\"+Inf\"}} {count}\n",
                r.name
            ));
            out.push_str(&format!(
                "personaflow_http_request_duration_seconds_sum{{route=\"{}\"}} {}\n",
                r.name,
                r.sum_us.load(Ordering::Relaxed) as f64 / 1e6
            ));
            out.push_str(&format!(
                "personaflow_http_request_duration_seconds_count{{route=\"{}\"}} {count}\n",
                r.name
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_other_statuses_counted() {
        let m = RouteMetrics::new(&["/a"]);
        m.observe("/a", 200, 0.003);
        m.observe("/a", 418, 10.0);
        m.observe("/nowhere", 404, 0.0001);
        let t = m.render();
        assert!(t.contains("route=\"/a\",le=\"0.002\"} 0"), "{t}");
        assert!(t.contains("route=\"/a\",le=\"0.005\"} 1"), "{t}");
        assert!(t.contains("route=\"/a\",le=\"+Inf\"} 2"), "{t}");
        assert!(t.contains("{route=\"/a\",status=\"other\"} 1"), "{t}");
        assert!(t.contains("{route=\"unmatched\",status=\"404\"} 1"), "{t}");
    }
}
