//! Prometheus metrics kept in process: request counts and latency histograms per route,
//! inference batch sizes and durations; rendered in the text exposition format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Upper bounds (seconds) of the latency buckets.
const LATENCY_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Upper bounds of the batch-size buckets.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

/// A cumulative histogram.
#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self { bounds, counts: vec![0; bounds.len()], sum: 0.0, count: 0 }
    }

    fn observe(&mut self, v: f64) {
        for (b, c) in self.bounds.iter().zip(&mut self.counts) {
            if v <= *b {
                *c += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {c}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", self.count);
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

#[derive(Debug)]
struct Inner {
    /// (route, method, status) -> count
    requests: BTreeMap<(String, String, u16), u64>,
    /// route -> latency
    latency: BTreeMap<String, Histogram>,
    batch_size: Histogram,
    inference_seconds: Histogram,
}

/// The server's metrics registry.
#[derive(Debug)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

/// Gauges read at render time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    pub images: usize,
    pub graph_points: usize,
    pub tombstones: usize,
    /// API requests being answered (against `http.max_in_flight`).
    pub in_flight: usize,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Inner {
                requests: BTreeMap::new(),
                latency: BTreeMap::new(),
                batch_size: Histogram::new(BATCH_BUCKETS),
                inference_seconds: Histogram::new(LATENCY_BUCKETS),
            }),
        }
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Metrics {
    /// Counts one answered request (`route` is the matched pattern, not the raw path).
    pub fn record_request(&self, route: &str, method: &str, status: u16, seconds: f64) {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        *m.requests.entry((route.to_string(), method.to_string(), status)).or_insert(0) += 1;
        m.latency.entry(route.to_string()).or_insert_with(|| Histogram::new(LATENCY_BUCKETS)).observe(seconds);
    }

    /// Records one inference call of `size` images.
    pub fn observe_batch(&self, size: usize, seconds: f64) {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        m.batch_size.observe(size as f64);
        m.inference_seconds.observe(seconds);
    }

    /// The Prometheus text exposition of everything recorded.
    pub fn render(&self, gauges: Gauges) -> String {
        let m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        out.push_str("# HELP stml_http_requests_total HTTP requests answered, by route, method and status.\n");
        out.push_str("# TYPE stml_http_requests_total counter\n");
        for ((route, method, status), n) in &m.requests {
            let _ = writeln!(
                out,
                "stml_http_requests_total{{route=\"{}\",method=\"{}\",status=\"{status}\"}} {n}",
                escape(route),
                escape(method)
            );
        }
        out.push_str("# HELP stml_http_request_duration_seconds HTTP request latency, by route.\n");
        out.push_str("# TYPE stml_http_request_duration_seconds histogram\n");
        for (route, h) in &m.latency {
            h.render(&mut out, "stml_http_request_duration_seconds", &format!("route=\"{}\"", escape(route)));
        }
        out.push_str("# HELP stml_inference_batch_size Images per inference call.\n");
        out.push_str("# TYPE stml_inference_batch_size histogram\n");
        m.batch_size.render(&mut out, "stml_inference_batch_size", "");
        out.push_str("# HELP stml_inference_duration_seconds Duration of one inference call.\n");
        out.push_str("# TYPE stml_inference_duration_seconds histogram\n");
        m.inference_seconds.render(&mut out, "stml_inference_duration_seconds", "");
        for (name, help, v) in [
            ("stml_index_images", "Images in the index.", gauges.images),
            ("stml_index_graph_points", "Points in the HNSW graph, deleted ones included.", gauges.graph_points),
            ("stml_index_tombstones", "Deleted points awaiting a graph rebuild.", gauges.tombstones),
            ("stml_http_in_flight", "API requests being answered (http.max_in_flight caps them).", gauges.in_flight),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_cumulative_buckets() {
        let m = Metrics::default();
        m.record_request("/search", "POST", 200, 0.003);
        m.record_request("/search", "POST", 200, 0.2);
        m.observe_batch(3, 0.01);
        let text = m.render(Gauges { images: 7, ..Gauges::default() });
        assert!(text.contains("stml_http_requests_total{route=\"/search\",method=\"POST\",status=\"200\"} 2"));
        assert!(text.contains("stml_http_request_duration_seconds_bucket{route=\"/search\",le=\"0.005\"} 1"));
        assert!(text.contains("stml_http_request_duration_seconds_bucket{route=\"/search\",le=\"0.25\"} 2"));
        assert!(text.contains("stml_inference_batch_size_bucket{le=\"4\"} 1"));
        assert!(text.contains("stml_inference_batch_size_bucket{le=\"2\"} 0"));
        assert!(text.contains("stml_index_images 7"));
    }
}
