//! `GET /metrics`: Prometheus text format.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

/// Upper bounds of the request latency histogram, seconds.
const LATENCY_BUCKETS_S: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Request counters and the latency histogram.
#[derive(Default)]
pub struct Metrics {
    /// `(path, status)` → requests.
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    buckets: [AtomicU64; LATENCY_BUCKETS_S.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Metrics {
    pub fn record(&self, path: &str, status: u16, took: Duration) {
        // Only known routes get their own series: a client cannot grow the map.
        let path = match path {
            "/sql" | "/auth/login" | "/health" | "/metrics" => path,
            _ => "other",
        };
        *self
            .requests
            .lock()
            .entry((path.to_string(), status))
            .or_default() += 1;
        let seconds = took.as_secs_f64();
        for (bound, bucket) in LATENCY_BUCKETS_S.iter().zip(&self.buckets) {
            if seconds <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn render(&self, uptime: Duration, storage: Option<&kalamdb_core::StorageMetrics>) -> String {
        let mut out = String::new();
        if let Some(s) = storage {
            let metrics: [(&str, &str, &str, u64); 9] = [
                (
                    "kalamdb_hot_rows",
                    "gauge",
                    "Hot row versions in RocksDB.",
                    s.hot_rows,
                ),
                (
                    "kalamdb_cold_files",
                    "gauge",
                    "Parquet segments of USER tables.",
                    s.cold_files,
                ),
                (
                    "kalamdb_cold_bytes",
                    "gauge",
                    "Bytes of Parquet segments.",
                    s.cold_bytes,
                ),
                (
                    "kalamdb_cold_rows",
                    "gauge",
                    "Row versions in Parquet segments.",
                    s.cold_rows,
                ),
                (
                    "kalamdb_flush_rows_total",
                    "counter",
                    "Row versions written to Parquet by flush jobs.",
                    s.flushed_rows_total,
                ),
                (
                    "kalamdb_flush_bytes_total",
                    "counter",
                    "Parquet bytes written by flush jobs.",
                    s.flushed_bytes_total,
                ),
                (
                    "kalamdb_flush_files_total",
                    "counter",
                    "Parquet files written by flush jobs.",
                    s.flushed_files_total,
                ),
                (
                    "kalamdb_point_reads_total",
                    "counter",
                    "SELECTs by primary key answered without query planning.",
                    s.point_reads_total,
                ),
                (
                    "kalamdb_reused_plans_total",
                    "counter",
                    "Statements that name no table and call only immutable functions, run from a plan kept from an earlier run.",
                    s.reused_plans_total,
                ),
            ];
            for (name, kind, help, value) in metrics {
                out.push_str(&format!(
                    "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
                ));
            }
            out.push_str("# HELP kalamdb_jobs Jobs in system.jobs by status.\n# TYPE kalamdb_jobs gauge\n");
            for status in ["queued", "running", "completed", "failed", "cancelled"] {
                let n = s.jobs_by_status.get(status).copied().unwrap_or(0);
                out.push_str(&format!("kalamdb_jobs{{status=\"{status}\"}} {n}\n"));
            }
        }
        out.push_str("# HELP kalamdb_uptime_seconds Seconds since the server started.\n");
        out.push_str("# TYPE kalamdb_uptime_seconds gauge\n");
        out.push_str(&format!("kalamdb_uptime_seconds {}\n", uptime.as_secs()));
        out.push_str("# HELP kalamdb_http_requests_total HTTP requests by path and status.\n");
        out.push_str("# TYPE kalamdb_http_requests_total counter\n");
        for ((path, status), n) in self.requests.lock().iter() {
            out.push_str(&format!(
                "kalamdb_http_requests_total{{path=\"{path}\",status=\"{status}\"}} {n}\n"
            ));
        }
        out.push_str("# HELP kalamdb_http_request_duration_seconds HTTP request latency.\n");
        out.push_str("# TYPE kalamdb_http_request_duration_seconds histogram\n");
        for (bound, bucket) in LATENCY_BUCKETS_S.iter().zip(&self.buckets) {
            out.push_str(&format!(
                "kalamdb_http_request_duration_seconds_bucket{{le=\"{bound}\"}} {}\n",
                bucket.load(Ordering::Relaxed)
            ));
        }
        let count = self.count.load(Ordering::Relaxed);
        out.push_str(&format!(
            "kalamdb_http_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}\n"
        ));
        out.push_str(&format!(
            "kalamdb_http_request_duration_seconds_sum {}\n",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        ));
        out.push_str(&format!("kalamdb_http_request_duration_seconds_count {count}\n"));
        out
    }
}
