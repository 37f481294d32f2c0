//! Metric sources: where guardrail queries are evaluated.
//!
//! The engine never knows which source answers. [`MetricSource`] is an instant query at a time;
//! implementations are [`prometheus::PrometheusSource`] (HTTP API v1: Prometheus, Thanos, Mimir,
//! VictoriaMetrics) and the embedded store.

pub mod embedded;
pub mod observe;
pub mod prometheus;

use canary_promql::{Millis, Value};

use crate::BoxFuture;

/// Why a query did not produce a result. Each message says what to check.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot reach {url}: {detail} — check the URL and that the server is up")]
    Unreachable { url: String, detail: String },
    #[error(
        "{url} refused the credential (HTTP {status}) — check the token variable and its permissions"
    )]
    Unauthorized { url: String, status: u16 },
    #[error("the query was rejected: {message}")]
    BadQuery { message: String },
    #[error("the query failed while executing: {message}")]
    Execution { message: String },
    #[error("the query timed out after {seconds} s")]
    Timeout { seconds: f64 },
    #[error("unexpected answer from {url}: {detail}")]
    Protocol { url: String, detail: String },
}

impl MetricsError {
    /// A short, bounded label for the error's kind (for metrics and journals).
    pub fn kind(&self) -> &'static str {
        match self {
            MetricsError::Unreachable { .. } => "unreachable",
            MetricsError::Unauthorized { .. } => "unauthorized",
            MetricsError::BadQuery { .. } => "bad_query",
            MetricsError::Execution { .. } => "execution",
            MetricsError::Timeout { .. } => "timeout",
            MetricsError::Protocol { .. } => "protocol",
        }
    }
}

/// Somewhere PromQL can be evaluated.
pub trait MetricSource: Send + Sync {
    /// `prometheus` or `embedded`, for logs and artifacts.
    fn kind(&self) -> &'static str;

    /// Evaluates `query` at `at` (milliseconds since the epoch), like `GET /api/v1/query`.
    fn instant_query<'a>(
        &'a self,
        query: &'a str,
        at: Millis,
    ) -> BoxFuture<'a, Result<Value, MetricsError>>;
}

/// The single number a guardrail query produced, or why there is none.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Value(f64),
    /// An empty vector.
    Empty,
    /// More than one series: the query must aggregate (e.g. `sum(...)`, `max(...)`).
    Ambiguous(usize),
}

/// Reduces a query result to the one value a guardrail compares.
pub fn single_value(value: &Value) -> Scalar {
    match value {
        Value::Scalar(p) => Scalar::Value(p.v),
        Value::Vector(samples) => match samples.as_slice() {
            [] => Scalar::Empty,
            [one] => Scalar::Value(one.point.v),
            many => Scalar::Ambiguous(many.len()),
        },
        Value::Matrix(series) if series.is_empty() => Scalar::Empty,
        Value::Matrix(series) => Scalar::Ambiguous(series.len()),
        Value::String { .. } => Scalar::Ambiguous(0),
    }
}
