//! The service's metrics under the runbook's exact names (DESIGN §10), every series labelled
//! `version`, and their exposition.
//!
//! Naming: prometheus-client's OpenMetrics encoder appends `_total` to counters, so counters are
//! registered without it (`sse` → `sse_total`). `sse_bytes_transmitted` is cumulative but is a
//! *gauge* on purpose: as a counter it would be exposed as `sse_bytes_transmitted_total`, which
//! is not the runbook's name; `rate()`/`increase()` still work on it since it only grows.
//!
//! Two formats are served: OpenMetrics 1.0 to clients that ask for it (Prometheus does), and the
//! Prometheus text format 0.0.4 otherwise (curl, promtool), where counter families are named with
//! their `_total` sample name and there is no `# EOF`.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Content type of OpenMetrics exposition.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of the Prometheus text format 0.0.4.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// TTFV buckets (ms): 50 ms apart up to 500 and 100 ms apart to 1500 — where healthy and drifting
/// TTFVs sit, so a p95 is interpolated within a narrow bucket — then dense around the runbook's
/// 1500 ms threshold and its 2 s request timeout.
const TTFV_BUCKETS: [f64; 32] = [
    5.0, 10.0, 25.0, 50.0, 100.0, 150.0, 200.0, 250.0, 300.0, 350.0, 400.0, 450.0, 500.0, 600.0,
    700.0, 800.0, 900.0, 1000.0, 1100.0, 1200.0, 1300.0, 1400.0, 1500.0, 1600.0, 1700.0, 1800.0,
    1900.0, 2000.0, 2500.0, 3000.0, 5000.0, 10000.0,
];
/// ANN latency buckets (ms): 10 ms apart from 20 to 100 where a healthy search sits, dense
/// around the runbook's 200 ms threshold, 50 ms apart to 500 where `slow-ann` takes it.
const ANN_BUCKETS: [f64; 30] = [
    0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0,
    125.0, 150.0, 175.0, 200.0, 225.0, 250.0, 300.0, 350.0, 400.0, 450.0, 500.0, 600.0, 750.0,
    1000.0,
];
/// Store query latency buckets (ms): a connection is held for the ANN search and the row fetch.
const DB_BUCKETS: [f64; 20] = [
    0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 75.0, 100.0, 150.0, 250.0, 500.0,
    1000.0, 2500.0, 5000.0, 10000.0,
];

/// Every metric of one relay-demo instance. Clones share the same series.
#[derive(Clone)]
pub struct RelayMetrics {
    registry: Arc<Registry>,
    /// `ttfv_ms`: time from request arrival to the first SSE event carrying data.
    pub ttfv_ms: Histogram,
    /// `sse_total`: SSE streams that ended, whatever the outcome (counted at the end so that
    /// in-flight streams never count as failures).
    pub sse: Counter,
    /// `sse_complete_total`: SSE streams that ended after delivering their `done` event.
    pub sse_complete: Counter,
    /// `sse_stream_timeout_total`: SSE streams ended by `timeout_ms`.
    pub sse_stream_timeout: Counter,
    /// `sse_bytes_transmitted`: bytes of SSE frames written (monotonic gauge, see module docs).
    pub sse_bytes_transmitted: Gauge,
    /// `memory_rls_policy_errors_total`: store reads refused for lack of tenant context.
    pub memory_rls_policy_errors: Counter,
    /// `memory_cross_tenant_attempts_total`: foreign rows caught by the final check.
    pub memory_cross_tenant_attempts: Counter,
    /// `memory_tenant_mismatch_total`: requests whose `user_id` named another user (403).
    pub memory_tenant_mismatch: Counter,
    /// `memory_ann_query_latency_ms`: ANN search latency.
    pub memory_ann_query_latency_ms: Histogram,
    /// `memory_rerank_skipped_total`: queries answered without reranking.
    pub memory_rerank_skipped: Counter,
    /// `memory_rerank_timeout_total`: reranks abandoned past their budget (also skipped).
    pub memory_rerank_timeout: Counter,
    /// `db_connection_pool_utilization`: connections in use, percent of the pool.
    pub db_connection_pool_utilization: Gauge<f64, AtomicU64>,
    /// `db_query_latency_ms`: time a store operation holds its connection.
    pub db_query_latency_ms: Histogram,
    /// `memory_chunks_row_count`: rows in the memory store.
    pub memory_chunks_row_count: Gauge,
}

impl RelayMetrics {
    /// Registers every metric with the constant label `version=<version>`.
    pub fn new(version: &str) -> Self {
        let mut registry =
            Registry::with_labels([("version".into(), version.to_owned().into())].into_iter());
        let ttfv_ms = Histogram::new(TTFV_BUCKETS);
        let sse = Counter::default();
        let sse_complete = Counter::default();
        let sse_stream_timeout = Counter::default();
        let sse_bytes_transmitted = Gauge::default();
        let memory_rls_policy_errors = Counter::default();
        let memory_cross_tenant_attempts = Counter::default();
        let memory_tenant_mismatch = Counter::default();
        let memory_ann_query_latency_ms = Histogram::new(ANN_BUCKETS);
        let memory_rerank_skipped = Counter::default();
        let memory_rerank_timeout = Counter::default();
        let db_connection_pool_utilization = Gauge::<f64, AtomicU64>::default();
        let db_query_latency_ms = Histogram::new(DB_BUCKETS);
        let memory_chunks_row_count = Gauge::default();

        registry.register(
            "ttfv_ms",
            "Time to first value: request arrival to the first SSE event carrying data, in milliseconds",
            ttfv_ms.clone(),
        );
        registry.register(
            "sse",
            "SSE streams that ended, whatever the outcome",
            sse.clone(),
        );
        registry.register(
            "sse_complete",
            "SSE streams that ended after delivering their done event",
            sse_complete.clone(),
        );
        registry.register(
            "sse_stream_timeout",
            "SSE streams ended with an error event because timeout_ms elapsed",
            sse_stream_timeout.clone(),
        );
        registry.register(
            "sse_bytes_transmitted",
            "Bytes of SSE frames written since start (monotonic; a gauge so the name carries no _total)",
            sse_bytes_transmitted.clone(),
        );
        registry.register(
            "memory_rls_policy_errors",
            "Store reads refused because they carried no tenant context",
            memory_rls_policy_errors.clone(),
        );
        registry.register(
            "memory_cross_tenant_attempts",
            "Rows of another tenant caught and dropped by the final check before sending",
            memory_cross_tenant_attempts.clone(),
        );
        registry.register(
            "memory_tenant_mismatch",
            "Queries rejected with 403 because user_id named another user than the token",
            memory_tenant_mismatch.clone(),
        );
        registry.register(
            "memory_ann_query_latency_ms",
            "ANN index search latency in milliseconds",
            memory_ann_query_latency_ms.clone(),
        );
        registry.register(
            "memory_rerank_skipped",
            "Queries answered in ANN order because the reranker was skipped or abandoned",
            memory_rerank_skipped.clone(),
        );
        registry.register(
            "memory_rerank_timeout",
            "Reranks abandoned because they ran past their time budget",
            memory_rerank_timeout.clone(),
        );
        registry.register(
            "db_connection_pool_utilization",
            "Store connections in use, percent of the pool size",
            db_connection_pool_utilization.clone(),
        );
        registry.register(
            "db_query_latency_ms",
            "Time a store operation holds its connection, in milliseconds",
            db_query_latency_ms.clone(),
        );
        registry.register(
            "memory_chunks_row_count",
            "Rows in the memory store",
            memory_chunks_row_count.clone(),
        );
        RelayMetrics {
            registry: Arc::new(registry),
            ttfv_ms,
            sse,
            sse_complete,
            sse_stream_timeout,
            sse_bytes_transmitted,
            memory_rls_policy_errors,
            memory_cross_tenant_attempts,
            memory_tenant_mismatch,
            memory_ann_query_latency_ms,
            memory_rerank_skipped,
            memory_rerank_timeout,
            db_connection_pool_utilization,
            db_query_latency_ms,
            memory_chunks_row_count,
        }
    }

    /// The exposition as OpenMetrics 1.0 text (ends with `# EOF`).
    pub fn encode_openmetrics(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(8 * 1024);
        encode(&mut out, &self.registry)?;
        Ok(out)
    }

    /// The exposition as Prometheus text format 0.0.4.
    pub fn encode_text(&self) -> Result<String, std::fmt::Error> {
        Ok(openmetrics_to_text(&self.encode_openmetrics()?))
    }
}

/// Rewrites OpenMetrics exposition as text format 0.0.4: counter families take their sample name
/// (`sse` → `sse_total`) in `# HELP`/`# TYPE`, and `# EOF` is dropped. Sample lines are identical
/// in both formats for the metric types used here.
fn openmetrics_to_text(openmetrics: &str) -> String {
    let counters: Vec<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(&name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Milliseconds of a duration as a float, for histogram observations.
pub fn millis(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
