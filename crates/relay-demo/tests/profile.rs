//! The latency profiles, seen from `/metrics` as a canary's queries see them: `realistic` looks
//! like production (a time to first value of a few hundred milliseconds with a tail, interpolated
//! inside narrow buckets; ANN well under its threshold; a pool whose use follows load), `fast`
//! stays fast, and a fault with a ramp drifts in.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use relay_demo::{Profile, RunningServer, ServeOptions, seed_users};
use serde_json::json;
use support::*;

/// The runbook's request.
fn runbook_query() -> serde_json::Value {
    json!({"query": "What are my recent notes about project alpha?", "top_k": 24, "timeout_ms": 2000})
}

/// A realistic instance (40 memories per user) as `relay-demo serve` runs it, adjusted by
/// `adjust`.
async fn realistic(adjust: impl FnOnce(&mut ServeOptions)) -> RunningServer {
    start(40, |o| {
        o.profile = Profile::Realistic;
        o.pool_size = Profile::Realistic.pool_size();
        o.rerank_budget = Profile::Realistic.rerank_budget();
        adjust(o);
    })
    .await
}

/// `requests` runbook queries from `concurrency` users at a time, each user sending its share
/// one after another; every stream must complete.
async fn queries(url: &str, concurrency: usize, requests: usize) {
    let users = seed_users();
    let outcomes = join_all((0..concurrency).map(|worker| {
        let user = users[worker % users.len()].clone();
        let share = requests / concurrency + usize::from(worker < requests % concurrency);
        async move {
            let t = token(&user);
            let mut outcomes = Vec::with_capacity(share);
            for _ in 0..share {
                outcomes.push(query_sse(url, Some(&t), runbook_query()).await);
            }
            outcomes
        }
    }))
    .await;
    let outcomes: Vec<SseOutcome> = outcomes.into_iter().flatten().collect();
    assert_eq!(outcomes.len(), requests);
    for o in &outcomes {
        assert_eq!(o.last_event(), Some("done"), "{o:?}");
    }
}

async fn samples(url: &str) -> BTreeMap<String, f64> {
    parse_samples(&metrics_text(url).await)
}

#[tokio::test]
async fn realistic_time_to_first_value_and_ann_latency_look_like_production() {
    let server = realistic(|_| {}).await;
    // 150 streams: the p95's rank (142.5) is never a whole count, so it cannot land on a
    // bucket's edge by coincidence; only a histogram whose buckets are too coarse puts it there.
    queries(&server.url(), 30, 150).await;
    let samples = samples(&server.url()).await;
    assert_eq!(sample(&samples, "ttfv_ms_count", ""), 150.0);

    let (p95, (lower, upper)) = histogram_quantile(&samples, "ttfv_ms", 0.95);
    assert!((300.0..1200.0).contains(&p95), "TTFV p95 {p95} ms");
    assert!(
        p95 > lower + 0.5 && p95 < upper - 0.5,
        "TTFV p95 {p95} ms sits on an edge of ({lower}, {upper}]"
    );
    assert!(
        upper - lower <= 0.2 * p95,
        "TTFV p95 {p95} ms in a bucket too wide to say much: ({lower}, {upper}]"
    );
    let (p50, _) = histogram_quantile(&samples, "ttfv_ms", 0.5);
    assert!(
        (150.0..p95).contains(&p50),
        "TTFV p50 {p50} ms, p95 {p95} ms"
    );

    let (ann_p95, (lower, upper)) =
        histogram_quantile(&samples, "memory_ann_query_latency_ms", 0.95);
    assert!((20.0..200.0).contains(&ann_p95), "ANN p95 {ann_p95} ms");
    assert!(
        upper - lower <= 25.0,
        "ANN p95 {ann_p95} ms in ({lower}, {upper}]"
    );
    // The row read held its connection for the store's own time.
    let held = sample(&samples, "db_query_latency_ms_sum", "") / 150.0;
    assert!(held >= 5.0, "mean connection hold {held} ms");
    // A healthy reranker answers within its budget: nothing skipped.
    assert_eq!(sample(&samples, "memory_rerank_skipped_total", ""), 0.0);
    server.shutdown().await.unwrap();
}

/// Closed-loop load from `concurrency` users until `until`, then the pool gauge as a scrape
/// reads it while the load still runs.
async fn pool_utilization_under(url: &str, concurrency: usize, until: Instant) -> f64 {
    let users = seed_users();
    let load = join_all((0..concurrency).map(|worker| {
        let t = token(&users[worker % users.len()]);
        async move {
            while Instant::now() < until {
                let o = query_sse(url, Some(&t), runbook_query()).await;
                assert_eq!(o.last_event(), Some("done"), "{o:?}");
            }
        }
    }));
    let reading = async {
        tokio::time::sleep_until(until.into()).await;
        sample(&samples(url).await, "db_connection_pool_utilization", "")
    };
    let ((), reading) = tokio::join!(
        async {
            load.await;
        },
        reading
    );
    reading
}

#[tokio::test]
async fn realistic_pool_utilization_follows_load() {
    let server = realistic(|_| {}).await;
    let url = server.url();
    assert_eq!(
        sample(&samples(&url).await, "db_connection_pool_utilization", ""),
        0.0,
        "idle"
    );
    let start = Instant::now();
    let light = pool_utilization_under(&url, 2, start + Duration::from_millis(1500)).await;
    let heavy =
        pool_utilization_under(&url, 24, Instant::now() + Duration::from_millis(1500)).await;
    assert!(
        light > 0.0,
        "two users keep the pool busy some of the time: {light} %"
    );
    assert!(
        heavy > light,
        "more users, more of the pool in use: {light} % then {heavy} %"
    );
    assert!(heavy < 80.0, "24 users are no saturation: {heavy} %");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_ramped_slow_ttfv_fault_drifts_in() {
    // Three instances at three points of one fault's 20 s ramp: before it (no fault), half-way,
    // past its end. Each instance's clock is set back rather than waited for.
    let ago = |secs| {
        Instant::now()
            .checked_sub(Duration::from_secs(secs))
            .unwrap()
    };
    let (healthy, mid, full) = tokio::join!(
        realistic(|_| {}),
        realistic(|o| {
            o.faults = vec!["slow-ttfv~20s".parse().unwrap()];
            o.started_at = Some(ago(10));
        }),
        realistic(|o| {
            o.faults = vec!["slow-ttfv~20s".parse().unwrap()];
            o.started_at = Some(ago(40));
        }),
    );
    let urls = [healthy.url(), mid.url(), full.url()];
    join_all(urls.iter().map(|url| queries(url, 10, 30))).await;
    let p50 = |s: &BTreeMap<String, f64>| histogram_quantile(s, "ttfv_ms", 0.5).0;
    let healthy_p50 = p50(&samples(&healthy.url()).await);
    let mid_samples = samples(&mid.url()).await;
    let mid_p50 = p50(&mid_samples);
    let full_samples = samples(&full.url()).await;
    let full_p50 = p50(&full_samples);
    // Half-way the slow call answers after about 900 ms; at the end after 1800 ms.
    assert!(
        healthy_p50 + 300.0 < mid_p50 && mid_p50 + 300.0 < full_p50,
        "TTFV p50: healthy {healthy_p50} ms, mid-ramp {mid_p50} ms, full {full_p50} ms"
    );
    let (mid_p95, _) = histogram_quantile(&mid_samples, "ttfv_ms", 0.95);
    assert!(
        mid_p95 < 1500.0,
        "mid-ramp p95 {mid_p95} ms: not yet over the threshold"
    );
    let (full_p95, _) = histogram_quantile(&full_samples, "ttfv_ms", 0.95);
    assert!(
        full_p95 > 1500.0,
        "full fault p95 {full_p95} ms: over the threshold"
    );
    // Under the runbook's 2 s timeout throughout: the fault moves TTFV, not stream completion.
    for s in [&mid_samples, &full_samples] {
        assert_eq!(sample(s, "sse_stream_timeout_total", ""), 0.0);
    }
    for server in [healthy, mid, full] {
        server.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn the_fast_profile_stays_fast() {
    let server = start(40, |o| {
        assert_eq!(o.profile, Profile::Fast, "the library default")
    })
    .await;
    queries(&server.url(), 10, 50).await;
    let samples = samples(&server.url()).await;
    let (p95, _) = histogram_quantile(&samples, "ttfv_ms", 0.95);
    assert!(p95 < 150.0, "fast TTFV p95 {p95} ms");
    let (ann_p95, _) = histogram_quantile(&samples, "memory_ann_query_latency_ms", 0.95);
    assert!(ann_p95 < 50.0, "fast ANN p95 {ann_p95} ms");
    server.shutdown().await.unwrap();
}
