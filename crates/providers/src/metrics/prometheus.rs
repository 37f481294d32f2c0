//! A Prometheus HTTP API v1 client: instant and range queries, build info, with a bearer token.
//!
//! Works with anything that speaks the API: Prometheus, Thanos, Mimir, VictoriaMetrics.

use std::time::Duration;

use canary_core::Secret;
use canary_promql::value::QueryData;
use canary_promql::{Millis, Value};
use serde::Deserialize;

use super::{MetricSource, MetricsError};
use crate::BoxFuture;

/// Where and how to reach the API.
#[derive(Debug, Clone)]
pub struct PrometheusConfig {
    /// Base URL, with or without a trailing `/api/v1` (the runbook's `PROMETHEUS_URL` has it).
    pub url: String,
    pub token: Option<Secret>,
    /// Per-request timeout; also sent as the query's own `timeout`.
    pub timeout: Duration,
}

/// A client for one Prometheus-compatible API.
#[derive(Debug, Clone)]
pub struct PrometheusSource {
    base: String,
    token: Option<Secret>,
    timeout: Duration,
    http: reqwest::Client,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope<T> {
    status: String,
    data: Option<T>,
    error_type: Option<String>,
    error: Option<String>,
}

/// `/api/v1/status/buildinfo`'s data.
#[derive(Debug, Clone, Deserialize)]
pub struct BuildInfo {
    pub version: String,
    #[serde(default)]
    pub revision: String,
}

impl PrometheusSource {
    pub fn new(cfg: PrometheusConfig) -> Result<Self, MetricsError> {
        let trimmed = cfg.url.trim_end_matches('/');
        let base = trimmed
            .strip_suffix("/api/v1")
            .unwrap_or(trimmed)
            .to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(MetricsError::Unreachable {
                url: cfg.url,
                detail: "the URL must start with http:// or https://".into(),
            });
        }
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout + Duration::from_secs(1))
            .build()
            .map_err(|e| MetricsError::Unreachable {
                url: base.clone(),
                detail: e.to_string(),
            })?;
        Ok(PrometheusSource {
            base,
            token: cfg.token,
            timeout: cfg.timeout,
            http,
        })
    }

    /// The base URL (without `/api/v1`).
    pub fn url(&self) -> &str {
        &self.base
    }

    /// `GET /api/v1/status/buildinfo`: proves the endpoint answers and accepts the credential.
    pub async fn build_info(&self) -> Result<BuildInfo, MetricsError> {
        self.call("status/buildinfo", &[]).await
    }

    /// `POST /api/v1/query` at `at`.
    pub async fn query(&self, query: &str, at: Millis) -> Result<Value, MetricsError> {
        let time = seconds(at);
        let timeout = format!("{}s", self.timeout.as_secs_f64());
        let data: QueryData = self
            .call(
                "query",
                &[("query", query), ("time", &time), ("timeout", &timeout)],
            )
            .await?;
        Ok(data.0)
    }

    /// `POST /api/v1/query_range`.
    pub async fn query_range(
        &self,
        query: &str,
        start: Millis,
        end: Millis,
        step: Duration,
    ) -> Result<Value, MetricsError> {
        let (start, end) = (seconds(start), seconds(end));
        let step = format!("{}", step.as_secs_f64());
        let timeout = format!("{}s", self.timeout.as_secs_f64());
        let data: QueryData = self
            .call(
                "query_range",
                &[
                    ("query", query),
                    ("start", &start),
                    ("end", &end),
                    ("step", &step),
                    ("timeout", &timeout),
                ],
            )
            .await?;
        Ok(data.0)
    }

    async fn call<T: for<'de> Deserialize<'de>>(
        &self,
        endpoint: &str,
        form: &[(&str, &str)],
    ) -> Result<T, MetricsError> {
        let url = format!("{}/api/v1/{endpoint}", self.base);
        let mut req = if form.is_empty() {
            self.http.get(&url)
        } else {
            self.http.post(&url).form(form)
        };
        if let Some(token) = &self.token {
            req = req.bearer_auth(token.expose());
        }
        let resp = req.send().await.map_err(|e| {
            if e.is_timeout() {
                MetricsError::Timeout {
                    seconds: self.timeout.as_secs_f64(),
                }
            } else {
                MetricsError::Unreachable {
                    url: self.base.clone(),
                    detail: error_chain(&e),
                }
            }
        })?;
        let status = resp.status().as_u16();
        if status == 401 || status == 403 {
            return Err(MetricsError::Unauthorized {
                url: self.base.clone(),
                status,
            });
        }
        let body = resp.bytes().await.map_err(|e| MetricsError::Unreachable {
            url: self.base.clone(),
            detail: error_chain(&e),
        })?;
        let envelope: Envelope<T> =
            serde_json::from_slice(&body).map_err(|e| MetricsError::Protocol {
                url: url.clone(),
                detail: format!(
                    "HTTP {status}, body is not the Prometheus API's JSON ({e}): {}",
                    String::from_utf8_lossy(&body[..body.len().min(200)])
                ),
            })?;
        if envelope.status != "success" {
            let message = envelope.error.unwrap_or_default();
            return Err(match envelope.error_type.as_deref() {
                Some("bad_data") => MetricsError::BadQuery { message },
                Some("timeout") | Some("canceled") => MetricsError::Timeout {
                    seconds: self.timeout.as_secs_f64(),
                },
                _ => MetricsError::Execution { message },
            });
        }
        envelope.data.ok_or_else(|| MetricsError::Protocol {
            url,
            detail: "success without data".into(),
        })
    }
}

impl MetricSource for PrometheusSource {
    fn kind(&self) -> &'static str {
        "prometheus"
    }

    fn instant_query<'a>(
        &'a self,
        query: &'a str,
        at: Millis,
    ) -> BoxFuture<'a, Result<Value, MetricsError>> {
        Box::pin(self.query(query, at))
    }
}

fn seconds(t: Millis) -> String {
    format!("{:.3}", t as f64 / 1000.0)
}

/// The innermost cause of an HTTP client error — "Connection refused (os error 111)" rather
/// than reqwest's whole chain — prefixed with what failed.
fn error_chain(e: &reqwest::Error) -> String {
    let mut root: &dyn std::error::Error = e;
    while let Some(next) = root.source() {
        root = next;
    }
    let what = if e.is_connect() {
        "connect"
    } else if e.is_body() || e.is_decode() {
        "read"
    } else {
        "request"
    };
    format!("{what}: {root}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_accepts_the_runbooks_api_suffix() {
        for url in [
            "https://prometheus.prod.internal/api/v1",
            "https://prometheus.prod.internal/api/v1/",
            "https://prometheus.prod.internal",
        ] {
            let s = PrometheusSource::new(PrometheusConfig {
                url: url.into(),
                token: None,
                timeout: Duration::from_secs(5),
            })
            .unwrap();
            assert_eq!(s.url(), "https://prometheus.prod.internal");
        }
        assert!(
            PrometheusSource::new(PrometheusConfig {
                url: "prometheus:9090".into(),
                token: None,
                timeout: Duration::from_secs(5),
            })
            .is_err()
        );
        assert_eq!(seconds(1_700_000_000_123), "1700000000.123");
        assert_eq!(seconds(-1), "-0.001");
    }
}
