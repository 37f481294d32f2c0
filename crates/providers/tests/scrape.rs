//! The scraper against real HTTP servers on 127.0.0.1: text 0.0.4 and OpenMetrics bodies,
//! target labels attached, `up`, staleness when a series vanishes or a scrape fails, and the
//! whole thing answered through the embedded metric source.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failure here is a test (or benchmark) failure

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use canary_promql::{Store, Value};
use canary_providers::metrics::embedded::EmbeddedSource;
use canary_providers::scrape::{ScrapeConfig, ScrapeTarget, Scraper, now_millis};

/// What the test server answers: status, content type, body.
type Exposed = Arc<Mutex<(StatusCode, &'static str, String)>>;

const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

async fn serve(exposed: Exposed) -> String {
    async fn metrics(State(exposed): State<Exposed>) -> impl IntoResponse {
        let (status, ct, body) = exposed.lock().unwrap().clone();
        (status, [(header::CONTENT_TYPE, ct)], body)
    }
    let app = Router::new()
        .route("/metrics", get(metrics))
        .with_state(exposed);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/metrics")
}

fn exposed(ct: &'static str, body: &str) -> Exposed {
    Arc::new(Mutex::new((StatusCode::OK, ct, body.to_owned())))
}

/// Evaluates now (or at the newest sample, should a scrape have been stamped a millisecond
/// ahead of the clock to keep a target's scrapes strictly ordered).
fn vector(source: &EmbeddedSource, query: &str) -> Vec<(String, f64)> {
    let newest = source.store().read().unwrap().max_time().unwrap_or(0);
    match source.query(query, now_millis().max(newest)).unwrap() {
        Value::Vector(samples) => samples
            .into_iter()
            .map(|s| (s.metric.to_string(), s.point.v))
            .collect(),
        other => panic!("{query}: {other:?}"),
    }
}

#[tokio::test]
async fn scrapes_both_formats_with_labels_up_and_staleness() {
    let text = exposed(
        TEXT,
        "# TYPE sse_total counter\nsse_total{version=\"inner\"} 10\nrequests_total{code=\"2xx\"} 5\n",
    );
    let om = exposed(
        OPENMETRICS,
        "# TYPE ttfv_ms histogram\nttfv_ms_bucket{le=\"100\"} 1\nttfv_ms_bucket{le=\"+Inf\"} 2\nttfv_ms_count 2\nttfv_ms_sum 150\n# EOF\n",
    );
    let text_url = serve(text.clone()).await;
    let om_url = serve(om.clone()).await;
    let store = Arc::new(RwLock::new(Store::new()));
    let mut scraper = Scraper::new(
        ScrapeConfig {
            targets: vec![
                ScrapeTarget {
                    url: text_url.clone(),
                    labels: vec![
                        ("version".into(), "r1".into()),
                        ("arm".into(), "canary".into()),
                    ],
                },
                ScrapeTarget {
                    url: om_url.clone(),
                    labels: vec![
                        ("version".into(), "r0.5".into()),
                        ("job".into(), "relay".into()),
                    ],
                },
            ],
            interval: Duration::from_millis(250),
            timeout: Duration::from_secs(2),
            retention: None,
        },
        store.clone(),
    )
    .unwrap();
    let source = EmbeddedSource::new(store.clone());

    let reports = scraper.scrape_once().await;
    assert!(reports.iter().all(|r| r.up), "{reports:?}");
    assert_eq!(reports[0].ingest.scraped, 2);
    assert_eq!(reports[1].ingest.scraped, 4);

    let text_instance = text_url
        .trim_start_matches("http://")
        .trim_end_matches("/metrics");
    assert_eq!(
        vector(&source, "sse_total"),
        vec![(
            format!(
                r#"sse_total{{arm="canary", exported_version="inner", instance="{text_instance}", job="canary", version="r1"}}"#
            ),
            10.0
        )]
    );
    assert_eq!(
        vector(
            &source,
            r#"histogram_quantile(0.5, ttfv_ms_bucket{version="r0.5", job="relay"})"#
        )[0]
        .1,
        100.0
    );
    let up = vector(&source, "up");
    assert_eq!(up.len(), 2);
    assert!(up.iter().all(|(_, v)| *v == 1.0), "{up:?}");
    assert_eq!(
        vector(&source, r#"scrape_samples_scraped{version="r0.5"}"#)[0].1,
        4.0
    );
    assert!(
        vector(&source, "scrape_duration_seconds")
            .iter()
            .all(|(_, v)| *v > 0.0 && *v < 2.0)
    );

    // requests_total vanishes from the text target: stale at the next scrape.
    text.lock().unwrap().2 = "sse_total{version=\"inner\"} 12\n".into();
    let reports = scraper.scrape_once().await;
    assert_eq!(reports[0].ingest.stale_marked, 1);
    assert!(vector(&source, "requests_total").is_empty());
    assert_eq!(vector(&source, "sse_total")[0].1, 12.0);

    // The OpenMetrics target fails: up 0, all its series stale; the text target is unaffected.
    om.lock().unwrap().0 = StatusCode::INTERNAL_SERVER_ERROR;
    let reports = scraper.scrape_once().await;
    assert!(!reports[1].up);
    assert!(
        reports[1].error.as_deref().unwrap().contains("500"),
        "{reports:?}"
    );
    assert!(vector(&source, "ttfv_ms_count").is_empty());
    assert_eq!(vector(&source, r#"up{version="r0.5"}"#)[0].1, 0.0);
    assert_eq!(vector(&source, r#"up{version="r1"}"#)[0].1, 1.0);

    // A malformed body is a failed scrape whose error says where.
    om.lock().unwrap().0 = StatusCode::OK;
    om.lock().unwrap().2 = "ttfv_ms_count 2\n".into(); // no # EOF
    let reports = scraper.scrape_once().await;
    assert!(!reports[1].up);
    assert!(
        reports[1].error.as_deref().unwrap().contains("line 2"),
        "{reports:?}"
    );
}

#[tokio::test]
async fn run_scrapes_on_a_sub_second_interval_and_marks_everything_stale_on_shutdown() {
    let target = exposed(TEXT, "db_connection_pool_utilization 42\n");
    let url = serve(target).await;
    let store = Arc::new(RwLock::new(Store::new()));
    let scraper = Scraper::new(
        ScrapeConfig {
            targets: vec![ScrapeTarget {
                url,
                labels: vec![("version".into(), "r1".into())],
            }],
            interval: Duration::from_millis(50),
            timeout: Duration::from_secs(1),
            retention: Some(Duration::from_secs(60)),
        },
        store.clone(),
    )
    .unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(scraper.run(async {
        let _ = stop_rx.await;
    }));
    let source = EmbeddedSource::new(store.clone());
    // Wait (with a deadline) until at least four scrapes landed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let n = vector(&source, "count_over_time(up[10s])");
        if n.first().is_some_and(|(_, v)| *v >= 4.0) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "scrapes did not land: {n:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        vector(&source, "max(db_connection_pool_utilization)")[0].1,
        42.0
    );
    stop_tx.send(()).unwrap();
    task.await.unwrap();
    assert!(vector(&source, "db_connection_pool_utilization").is_empty());
    assert!(
        vector(&source, "up").is_empty(),
        "up is stale after shutdown"
    );
    assert!(!vector(&source, "last_over_time(up[10s])").is_empty());
}

#[test]
fn bad_targets_are_rejected_before_scraping() {
    let store = Arc::new(RwLock::new(Store::new()));
    let config = |url: &str| ScrapeConfig {
        targets: vec![ScrapeTarget {
            url: url.into(),
            labels: vec![],
        }],
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(1),
        retention: None,
    };
    assert!(Scraper::new(config("ftp://x/metrics"), store.clone()).is_err());
    assert!(Scraper::new(config("not a url"), store.clone()).is_err());
    let mut zero = config("http://127.0.0.1:1/metrics");
    zero.interval = Duration::ZERO;
    assert!(Scraper::new(zero, store).is_err());
}
