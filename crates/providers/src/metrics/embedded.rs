//! The `embedded` metric source: PromQL evaluated in process over the store the scraper feeds.
//!
//! Same answers as a Prometheus 2.42 on the same samples (the differential suite in
//! `crates/promql/tests/differential.rs` proves it), so the engine cannot tell the two apart.

use std::time::Duration;

use canary_promql::eval::{Engine, EvalError, EvalOptions};
use canary_promql::{Millis, Value};

use super::{MetricSource, MetricsError};
use crate::BoxFuture;
use crate::scrape::SharedStore;

/// Evaluates queries against a shared store.
#[derive(Debug, Clone)]
pub struct EmbeddedSource {
    store: SharedStore,
    engine: Engine,
}

impl EmbeddedSource {
    /// Prometheus' defaults: 5-minute lookback, 1-minute default subquery step.
    pub fn new(store: SharedStore) -> Self {
        Self::with_options(store, EvalOptions::default())
    }

    /// With explicit evaluation settings, e.g. a lookback delta divided by the demo's time
    /// compression.
    pub fn with_options(store: SharedStore, options: EvalOptions) -> Self {
        EmbeddedSource {
            store,
            engine: Engine::new(options),
        }
    }

    /// The store queries read.
    pub fn store(&self) -> SharedStore {
        self.store.clone()
    }

    /// Instant query at `at`.
    pub fn query(&self, query: &str, at: Millis) -> Result<Value, MetricsError> {
        let store = self.store.read().unwrap_or_else(|p| p.into_inner());
        self.engine
            .instant(&*store, query, at)
            .map_err(to_metrics_error)
    }

    /// Range query from `start` to `end` (inclusive) every `step`.
    pub fn query_range(
        &self,
        query: &str,
        start: Millis,
        end: Millis,
        step: Duration,
    ) -> Result<Value, MetricsError> {
        let step = i64::try_from(step.as_millis()).unwrap_or(i64::MAX);
        let store = self.store.read().unwrap_or_else(|p| p.into_inner());
        self.engine
            .range(&*store, query, start, end, step)
            .map_err(to_metrics_error)
    }
}

fn to_metrics_error(e: EvalError) -> MetricsError {
    match e {
        EvalError::Execution(message) => MetricsError::Execution { message },
        other => MetricsError::BadQuery {
            message: other.to_string(),
        },
    }
}

impl MetricSource for EmbeddedSource {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    fn instant_query<'a>(
        &'a self,
        query: &'a str,
        at: Millis,
    ) -> BoxFuture<'a, Result<Value, MetricsError>> {
        Box::pin(async move { self.query(query, at) })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, RwLock};

    use canary_promql::{Labels, Store};

    use super::*;
    use crate::metrics::{Scalar, single_value};

    #[tokio::test]
    async fn answers_through_the_trait_and_reports_bad_queries() {
        let mut store = Store::new();
        let labels = Labels::from_pairs([
            ("__name__", "db_connection_pool_utilization"),
            ("version", "r1"),
        ]);
        store.append(&labels, 1_000, 42.0).unwrap();
        let source: Box<dyn MetricSource> =
            Box::new(EmbeddedSource::new(Arc::new(RwLock::new(store))));
        assert_eq!(source.kind(), "embedded");
        let v = source
            .instant_query("max(db_connection_pool_utilization)", 2_000)
            .await
            .unwrap();
        assert_eq!(single_value(&v), Scalar::Value(42.0));
        let err = source.instant_query("max(", 2_000).await.unwrap_err();
        assert_eq!(err.kind(), "bad_query");
        let err = source
            .instant_query(
                "sort_by_label(db_connection_pool_utilization, \"x\")",
                2_000,
            )
            .await
            .unwrap_err();
        assert!(err.to_string().contains("sort_by_label"), "{err}");
    }
}
