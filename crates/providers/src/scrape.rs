//! Scraping targets' `/metrics` into the embedded store, as Prometheus does.
//!
//! Each target is scraped on its own ticker (`interval`, sub-second allowed) with a `timeout`;
//! the body is parsed as OpenMetrics or text 0.0.4 according to its `Content-Type`, the target's
//! labels are attached (`honor_labels: false`), and `up`, `scrape_duration_seconds`,
//! `scrape_samples_scraped`, `scrape_samples_post_metric_relabeling` and `scrape_series_added`
//! are recorded. Series that vanish, and every series of a failed scrape, get staleness markers;
//! when the scraper stops, all its series do. Samples are stamped with the scrape's start time
//! (the one place that reads the wall clock: the store never does).

use crate::error_text::error_chain;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use canary_promql::exposition::{self, Format};
use canary_promql::ingest::{IngestReport, ScrapeOutcome, TargetSeries};
use canary_promql::{Labels, Millis, Store};

/// The store the scraper feeds and the embedded metric source reads.
pub type SharedStore = Arc<RwLock<Store>>;

/// Largest body accepted from a target (Prometheus' `body_size_limit` is unlimited by default;
/// a bound keeps one misbehaving target from exhausting memory).
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// One endpoint to scrape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrapeTarget {
    /// Full URL of the metrics endpoint, e.g. `http://127.0.0.1:9101/metrics`.
    pub url: String,
    /// Labels attached to every series, e.g. `version="r1"`, `arm="canary"`. `job` defaults to
    /// `canary` and `instance` to the URL's `host:port` when absent.
    pub labels: Vec<(String, String)>,
}

/// What to scrape and how often.
#[derive(Debug, Clone, PartialEq)]
pub struct ScrapeConfig {
    pub targets: Vec<ScrapeTarget>,
    pub interval: Duration,
    pub timeout: Duration,
    /// Samples older than this are dropped from the store (checked every few seconds).
    pub retention: Option<Duration>,
}

/// Why the scraper cannot start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScrapeError {
    #[error("scrape target {url:?} is not a valid http(s) URL: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("the scrape interval must be positive")]
    ZeroInterval,
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// The outcome of one target's scrape, for logs and the CLI.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetReport {
    pub url: String,
    pub up: bool,
    /// Why the scrape failed, when it did (status, timeout, parse error with line and column).
    pub error: Option<String>,
    pub ingest: IngestReport,
}

/// Scrapes a set of targets into a [`SharedStore`].
#[derive(Debug)]
pub struct Scraper {
    config: ScrapeConfig,
    store: SharedStore,
    http: reqwest::Client,
    targets: Vec<(ScrapeTarget, TargetSeries)>,
}

/// Milliseconds since the epoch, now.
pub fn now_millis() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Scraper {
    /// Validates the targets; nothing is fetched yet.
    pub fn new(config: ScrapeConfig, store: SharedStore) -> Result<Self, ScrapeError> {
        if config.interval.is_zero() {
            return Err(ScrapeError::ZeroInterval);
        }
        let mut targets = Vec::with_capacity(config.targets.len());
        for t in &config.targets {
            targets.push((t.clone(), TargetSeries::new(target_labels(t)?)));
        }
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| ScrapeError::Client(e.to_string()))?;
        Ok(Scraper {
            config,
            store,
            http,
            targets,
        })
    }

    /// The store this scraper feeds.
    pub fn store(&self) -> SharedStore {
        self.store.clone()
    }

    /// Scrapes every target once, concurrently, each stamped with its own start time.
    pub async fn scrape_once(&mut self) -> Vec<TargetReport> {
        let fetches: Vec<_> = self
            .targets
            .iter()
            .map(|(t, _)| {
                let http = self.http.clone();
                let url = t.url.clone();
                let timeout = self.config.timeout;
                tokio::spawn(async move {
                    let start = now_millis();
                    (start, fetch(&http, &url, timeout).await)
                })
            })
            .collect();
        let mut reports = Vec::with_capacity(fetches.len());
        for ((target, series), handle) in self.targets.iter_mut().zip(fetches) {
            let (start, result) = match handle.await {
                Ok(r) => r,
                Err(e) => (
                    now_millis(),
                    Fetched::failed(Duration::ZERO, format!("scrape task failed: {e}")),
                ),
            };
            reports.push(ingest(&self.store, target, series, result, start));
        }
        reports
    }

    /// Scrapes every target on its own ticker until `shutdown` completes, then marks all their
    /// series stale. Retention is enforced every few seconds.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        for (target, series) in self.targets {
            let http = self.http.clone();
            let store = self.store.clone();
            let interval = self.config.interval;
            let timeout = self.config.timeout;
            let mut stop = stop_rx.clone();
            tasks.push(tokio::spawn(async move {
                let mut series = series;
                let mut ticker = tokio::time::interval(interval);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                loop {
                    tokio::select! {
                        _ = ticker.tick() => {}
                        _ = stop.changed() => break,
                    }
                    let start = now_millis();
                    let fetched = tokio::select! {
                        f = fetch(&http, &target.url, timeout) => f,
                        _ = stop.changed() => break,
                    };
                    let report = ingest(&store, &target, &mut series, fetched, start);
                    if let Some(error) = &report.error {
                        tracing::debug!(url = %target.url, %error, "scrape failed");
                    }
                }
                if let Ok(mut store) = store.write() {
                    series.stop(&mut store, now_millis());
                }
            }));
        }
        if let Some(retention) = self.config.retention {
            let store = self.store.clone();
            let mut stop = stop_rx.clone();
            let every = Duration::from_secs(5).max(self.config.interval);
            let keep = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
            tasks.push(tokio::spawn(async move {
                let mut ticker = tokio::time::interval(every);
                loop {
                    tokio::select! {
                        _ = ticker.tick() => {}
                        _ = stop.changed() => break,
                    }
                    if let Ok(mut store) = store.write() {
                        store.drop_before(now_millis().saturating_sub(keep));
                    }
                }
            }));
        }
        shutdown.await;
        let _ = stop_tx.send(true);
        for t in tasks {
            let _ = t.await;
        }
    }
}

/// The target's labels: its own, plus `job="canary"` and `instance="host:port"` when missing.
fn target_labels(t: &ScrapeTarget) -> Result<Labels, ScrapeError> {
    let bad = |reason: &str| ScrapeError::BadUrl {
        url: t.url.clone(),
        reason: reason.to_owned(),
    };
    let url = reqwest::Url::parse(&t.url).map_err(|e| bad(&e.to_string()))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(bad("the scheme must be http or https"));
    }
    let host = url.host_str().ok_or_else(|| bad("it has no host"))?;
    let port = url.port_or_known_default().unwrap_or(80);
    let mut labels = Labels::from_pairs([
        ("job", "canary".to_owned()),
        ("instance", format!("{host}:{port}")),
    ]);
    for (k, v) in &t.labels {
        labels.set(k.clone(), v.clone());
    }
    Ok(labels)
}

/// A fetched and parsed body, or why there is none.
struct Fetched {
    duration: Duration,
    result: Result<exposition::Exposition, String>,
}

impl Fetched {
    fn failed(duration: Duration, error: String) -> Self {
        Fetched {
            duration,
            result: Err(error),
        }
    }
}

async fn fetch(http: &reqwest::Client, url: &str, timeout: Duration) -> Fetched {
    let began = Instant::now();
    let response = http
        .get(url)
        .header(reqwest::header::ACCEPT, Format::ACCEPT_HEADER)
        .header(
            "X-Prometheus-Scrape-Timeout-Seconds",
            format!("{}", timeout.as_secs_f64()),
        )
        .send()
        .await;
    let response = match response {
        Ok(r) => r,
        Err(e) if e.is_timeout() => {
            return Fetched::failed(began.elapsed(), format!("timed out after {timeout:?}"));
        }
        Err(e) => return Fetched::failed(began.elapsed(), error_chain(&e)),
    };
    let status = response.status();
    if !status.is_success() {
        return Fetched::failed(
            began.elapsed(),
            format!("server returned HTTP status {status}"),
        );
    }
    let format = Format::from_content_type(
        response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    );
    if response
        .content_length()
        .is_some_and(|n| n > MAX_BODY_BYTES as u64)
    {
        return Fetched::failed(began.elapsed(), "body exceeds 64 MiB".into());
    }
    let body = match response.bytes().await {
        Ok(b) if b.len() > MAX_BODY_BYTES => {
            return Fetched::failed(began.elapsed(), "body exceeds 64 MiB".into());
        }
        Ok(b) => b,
        Err(e) if e.is_timeout() => {
            return Fetched::failed(began.elapsed(), format!("timed out after {timeout:?}"));
        }
        Err(e) => return Fetched::failed(began.elapsed(), error_chain(&e)),
    };
    let result = exposition::parse(&body, format).map_err(|e| format!("bad exposition: {e}"));
    Fetched {
        duration: began.elapsed(),
        result,
    }
}

fn ingest(
    store: &SharedStore,
    target: &ScrapeTarget,
    series: &mut TargetSeries,
    fetched: Fetched,
    start: Millis,
) -> TargetReport {
    let (outcome, error) = match fetched.result {
        Ok(exposition) => (
            ScrapeOutcome::Success {
                exposition,
                duration: fetched.duration,
            },
            None,
        ),
        Err(e) => (
            ScrapeOutcome::Failure {
                duration: fetched.duration,
            },
            Some(e),
        ),
    };
    let up = error.is_none();
    // A poisoned lock means a writer panicked mid-append; the store itself is still
    // consistent (appends are single pushes), so keep scraping into it.
    let mut store = store
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let report = series.ingest(&mut store, outcome, start);
    TargetReport {
        url: target.url.clone(),
        up,
        error,
        ingest: report,
    }
}
