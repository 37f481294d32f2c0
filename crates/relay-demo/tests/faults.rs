//! Each fault moves exactly the metric its guardrail watches, and every other stays clean; rates
//! and onsets behave as documented.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use futures_util::future::join_all;
use relay_demo::{Fault, FaultKind, seed_markers};
use serde_json::json;
use support::*;

/// A small burst like the canary's: every seeded user queries once for another user's marker
/// (so a broken row filter has foreign rows to leak), concurrently, over SSE.
async fn burst(url: &str) -> Vec<SseOutcome> {
    let markers = seed_markers();
    join_all(markers.iter().enumerate().map(|(i, (user, _))| {
        let (_, foreign) = &markers[(i + 1) % markers.len()];
        let body = json!({"query": foreign, "user_id": user, "top_k": 10, "timeout_ms": 5000});
        let t = token(user);
        async move { query_sse(url, Some(&t), body).await }
    }))
    .await
}

async fn signals_after_burst(faults: &[&str]) -> (Vec<&'static str>, Vec<SseOutcome>) {
    let faults: Vec<Fault> = faults.iter().map(|f| f.parse().unwrap()).collect();
    let saturates_now = faults
        .iter()
        .any(|f| f.kind == FaultKind::PoolSaturation && f.onset.is_zero());
    let server = start(60, |o| o.faults = faults).await;
    let url = server.url();
    if saturates_now {
        // The runaway job takes its connections right after start; wait for it, don't race it.
        eventually(Duration::from_secs(5), "pool saturation", || async {
            let s = parse_samples(&metrics_text(&url).await);
            (sample(&s, "db_connection_pool_utilization", "") >= 80.0).then_some(())
        })
        .await;
    }
    let outcomes = burst(&url).await;
    let samples = parse_samples(&metrics_text(&url).await);
    (dirty_signals(&samples), outcomes)
}

#[tokio::test]
async fn without_faults_every_signal_is_clean() {
    let (dirty, outcomes) = signals_after_burst(&[]).await;
    assert_eq!(dirty, Vec::<&str>::new());
    assert!(outcomes.iter().all(|o| o.last_event() == Some("done")));
}

#[tokio::test]
async fn slow_ttfv_moves_only_ttfv() {
    let (dirty, outcomes) = signals_after_burst(&["slow-ttfv"]).await;
    assert_eq!(dirty, ["ttfv_ms>1500"]);
    assert!(
        outcomes
            .iter()
            .all(|o| o.elapsed >= Duration::from_millis(1800))
    );
}

#[tokio::test]
async fn sse_drop_moves_only_stream_completion() {
    let (dirty, outcomes) = signals_after_burst(&["sse-drop"]).await;
    assert_eq!(dirty, ["sse_incomplete"]);
    for o in &outcomes {
        assert!(o.cut, "the client sees a cut stream");
        assert_ne!(o.last_event(), Some("done"));
    }
}

#[tokio::test]
async fn rls_errors_move_only_the_rls_counter() {
    let (dirty, outcomes) = signals_after_burst(&["rls-errors"]).await;
    assert_eq!(dirty, ["memory_rls_policy_errors_total"]);
    assert!(outcomes.iter().all(|o| o.status == 500));
}

#[tokio::test]
async fn tenant_leak_moves_only_cross_tenant_attempts() {
    let (dirty, outcomes) = signals_after_burst(&["tenant-leak"]).await;
    assert_eq!(dirty, ["memory_cross_tenant_attempts_total"]);
    assert!(outcomes.iter().all(|o| o.last_event() == Some("done")));
}

#[tokio::test]
async fn slow_ann_moves_only_ann_latency() {
    let (dirty, outcomes) = signals_after_burst(&["slow-ann"]).await;
    assert_eq!(dirty, ["memory_ann_query_latency_ms>200"]);
    assert!(outcomes.iter().all(|o| o.last_event() == Some("done")));
}

#[tokio::test]
async fn pool_saturation_moves_only_pool_utilization() {
    let (dirty, outcomes) = signals_after_burst(&["pool-saturation"]).await;
    assert_eq!(dirty, ["db_connection_pool_utilization>=80"]);
    assert!(
        outcomes.iter().all(|o| o.last_event() == Some("done")),
        "degraded, not down"
    );
}

#[tokio::test]
async fn rate_strikes_exactly_that_share_of_streams() {
    let server = start(20, |o| o.faults = vec!["sse-drop:0.5".parse().unwrap()]).await;
    let mut cut = 0;
    for _ in 0..10 {
        let o = query_sse(
            &server.url(),
            Some(&token("user_1")),
            json!({"query": "x", "top_k": 4}),
        )
        .await;
        if o.cut {
            cut += 1;
        }
    }
    assert_eq!(cut, 5);
    let samples = parse_samples(&metrics_text(&server.url()).await);
    assert_eq!(sample(&samples, "sse_total", ""), 10.0);
    assert_eq!(sample(&samples, "sse_complete_total", ""), 5.0);
}

#[tokio::test]
async fn a_fault_begins_at_its_onset() {
    let server = start(20, |o| o.faults = vec!["rls-errors@1s".parse().unwrap()]).await;
    let url = server.url();
    let t = token("user_2");
    let (before, _, _) = query_json(&url, Some(&t), r#"{"query":"x"}"#).await;
    assert_eq!(before, 200, "not active before its onset");
    eventually(Duration::from_secs(10), "the fault to begin", || async {
        let (status, _, _) = query_json(&url, Some(&t), r#"{"query":"x"}"#).await;
        (status == 500).then_some(())
    })
    .await;
    let samples = parse_samples(&metrics_text(&url).await);
    assert!(sample(&samples, "memory_rls_policy_errors_total", "") >= 1.0);
}

#[tokio::test]
async fn a_late_onset_leaves_the_service_clean() {
    let (dirty, _) = signals_after_burst(&[
        "slow-ttfv@1h",
        "sse-drop@1h",
        "rls-errors@1h",
        "tenant-leak@1h",
        "slow-ann@1h",
        "pool-saturation@1h",
    ])
    .await;
    assert_eq!(dirty, Vec::<&str>::new());
}
