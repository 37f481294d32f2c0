//! The load burst end to end: the runbook's burst against relay-demo through the embedded
//! proxy (counts, per-arm attribution, the two artifacts, sample sufficiency), canary
//! targeting, time to first value measured to the first event, incomplete streams, and an
//! open loop that shows a server stall instead of hiding it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use axum::http::header;
use axum::response::Response;
use axum::routing::{get, post};
use canary_core::ArmRole;
use canary_load::{
    CanaryRoute, ErrorKind, Mode, OpenLoop, Scenario, Target, Targeting, run_burst, summary_json,
    transcript,
};
use support::*;

/// The runbook's burst through the stack's proxy, with its pin token (so every answer names
/// its arm and pins count).
fn runbook(stack: &Stack) -> Scenario {
    let mut s = Scenario::runbook(stack.url(), users());
    s.queries = relay_demo::seed_queries(4);
    s.pin_proof = Some(stack.proof());
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runbook_burst_counts_and_attributes_every_request() {
    let stack = Stack::start(&[], 50).await;
    let scenario = runbook(&stack);
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    let report = run_burst(&scenario, Some(tx)).await.unwrap();

    // 5 users × 20, each user's requests numbered 0..20, all answered in full.
    assert_eq!(report.records.len(), 100);
    let mut per_user: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for r in &report.records {
        per_user.entry(&r.user).or_default().push(r.index);
    }
    assert_eq!(per_user.len(), 5);
    for indices in per_user.values_mut() {
        indices.sort_unstable();
        assert_eq!(*indices, (0..20).collect::<Vec<u32>>());
    }
    for r in &report.records {
        assert!(r.succeeded(), "{r:?}");
        assert_eq!(r.status, Some(200));
        assert!(r.event_stream && r.terminal_seen, "{r:?}");
        assert!(r.events >= 2, "results then done: {r:?}");
        assert!(r.bytes > 0);
        let (ttfb, ttfv) = (r.ttfb.unwrap(), r.ttfv.unwrap());
        assert!(ttfb <= ttfv && ttfv <= r.total, "{r:?}");
        assert!(r.arm.is_some(), "every answer names its arm: {r:?}");
        assert_eq!(r.target, Target::Lb);
    }
    let o = &report.overall;
    assert_eq!((o.total, o.successful, o.failed), (100, 100, 0));
    assert_eq!(o.success_rate_percent, Some(100.0));
    assert_eq!((o.event_streams, o.streams_complete), (100, 100));
    assert!(report.meets(99.0));

    // Per-arm attribution agrees with the proxy's own counts and with each relay instance's.
    let canary = report.arm(ArmRole::Canary).map_or(0, |s| s.total);
    let baseline = report.arm(ArmRole::Baseline).map_or(0, |s| s.total);
    assert_eq!(canary + baseline, 100);
    assert!(canary > 0 && baseline > 0, "a 50 % split reaches both arms");
    assert_eq!(stack.proxy_requests("canary"), canary as f64);
    assert_eq!(stack.proxy_requests("baseline"), baseline as f64);
    let sse_total = |url: String| async move {
        sum_metric(&get_text(&format!("{url}/metrics")).await, "sse_total", "")
    };
    assert_eq!(sse_total(stack.canary.url()).await, canary as f64);
    assert_eq!(sse_total(stack.baseline.url()).await, baseline as f64);

    // Progress reached the end.
    let mut last = None;
    while let Ok(p) = rx.try_recv() {
        last = Some(p);
    }
    let last = last.unwrap();
    assert_eq!((last.completed, last.total, last.failed), (100, 100, 0));

    // The transcript: a header, one runbook line per request, the totals; no secret.
    let text = transcript(&report);
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with('✓')).collect();
    assert_eq!(lines.len(), 100, "{text}");
    assert!(!text.lines().any(|l| l.starts_with('✗')));
    let first = lines[0];
    assert!(
        first.starts_with("✓ user_") && first.contains("_q1: 200 ("),
        "{first}"
    );
    assert!(
        first.contains("ms) ttfv ") && first.contains(" arm "),
        "{first}"
    );
    assert!(text.contains("# total: 100 queries, 100 successful, 0 failed, success rate 100.0 %"));

    // The summary: the runbook's fields, percentiles, per arm, sufficiency.
    let json = summary_json(&report);
    for field in [
        "timestamp",
        "total_queries",
        "successful",
        "failed",
        "success_rate_percent",
        "avg_latency_ms",
    ] {
        assert!(json.get(field).is_some(), "{field} missing: {json}");
    }
    assert_eq!(json["total_queries"], 100);
    assert_eq!(json["successful"], 100);
    assert_eq!(json["success_rate_percent"], 100.0);
    assert!(json["latency_ms"]["p95"].as_f64().unwrap() > 0.0);
    assert!(json["ttfv_ms"]["p99"].as_f64().unwrap() > 0.0);
    assert_eq!(json["streams"]["completion_percent"], 100.0);
    assert_eq!(json["per_arm"]["canary"]["total_queries"], canary);
    assert_eq!(json["per_arm"]["baseline"]["total_queries"], baseline);

    // Sufficiency: judged on the canary's samples by the stated rules.
    let checks = &report.sufficiency;
    assert_eq!(checks.len(), 2);
    assert_eq!(
        (
            checks[0].guardrail.as_str(),
            checks[0].samples,
            checks[0].needed
        ),
        ("ttfv_p95", canary, 20)
    );
    assert_eq!(checks[0].sufficient, canary >= 20);
    assert_eq!(
        (
            checks[1].guardrail.as_str(),
            checks[1].needed,
            checks[1].sufficient
        ),
        ("sse_success", 750, false)
    );
    assert_eq!(checks[1].more_canary_requests, 750 - canary);
    // At the observed share, through the load balancer it takes about twice as many.
    assert!(checks[1].via_lb_requests.unwrap() >= 750 - canary);
    assert_eq!(json["sufficiency"][1]["sufficient"], false);
    assert!(
        text.contains("# sufficiency sse_success: insufficient"),
        "{text}"
    );

    let rendered = format!("{text}{json}");
    for secret in secrets() {
        assert!(!rendered.contains(&secret), "a secret reached a rendering");
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_targeting_pins_every_request_and_both_reports_each_pass() {
    // All load-balancer traffic to the baseline: only pinning can reach the canary.
    let stack = Stack::start(&[], 0).await;
    let mut scenario = runbook(&stack);
    scenario.users.truncate(2);
    scenario.requests_per_user = 5;
    scenario.pause = Duration::ZERO;
    scenario.targeting = Targeting::Both(CanaryRoute::PinHeader);
    let report = run_burst(&scenario, None).await.unwrap();
    assert_eq!(report.records.len(), 20);
    let lb = report.target(Target::Lb).unwrap();
    let pinned = report.target(Target::Canary).unwrap();
    assert_eq!(
        (lb.total, lb.successful, pinned.total, pinned.successful),
        (10, 10, 10, 10)
    );
    for r in &report.records {
        let expected = match r.target {
            Target::Lb => ArmRole::Baseline,
            Target::Canary => ArmRole::Canary,
        };
        assert_eq!(r.arm, Some(expected), "{r:?}");
    }
    assert_eq!(stack.proxy_requests("canary"), 10.0);
    let json = summary_json(&report);
    assert_eq!(json["per_target"]["canary"]["successful"], 10);
    assert_eq!(json["target"]["kind"], "both");
    assert!(transcript(&report).contains(" target canary"));
    // The canary share seen through the load balancer is 0 %: only pinned load can help.
    assert_eq!(report.sufficiency[0].via_lb_requests, None);

    // A direct canary URL: the canary answers without an arm header, and is named anyway.
    // (Run on two dedicated load threads, as heavy bursts are.)
    scenario.targeting = Targeting::Canary(CanaryRoute::Url(stack.canary.url()));
    scenario.threads = 2;
    let direct = run_burst(&scenario, None).await.unwrap();
    assert_eq!(direct.records.len(), 10);
    assert_eq!(direct.arm(ArmRole::Canary).unwrap().successful, 10);
    assert!(direct.per_target.is_empty());
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_to_first_value_waits_for_the_first_complete_event() {
    let app = axum::Router::new()
        .route(
            "/sse",
            post(|| async {
                // Headers, a comment and an event without data at once; the first data event
                // starts after 300 ms and completes 100 ms later.
                Response::builder()
                    .header(header::CONTENT_TYPE, "text/event-stream")
                    .body(scripted_body(vec![
                        (Duration::ZERO, ": connected\n\nevent: ping\n\n"),
                        (Duration::from_millis(300), "event: result\ndata: {\"x\""),
                        (Duration::from_millis(100), ":1}\n\n"),
                        (Duration::ZERO, "event: done\ndata: {}\n\n"),
                    ]))
                    .unwrap()
            }),
        )
        .route(
            "/plain",
            post(|| async {
                Response::builder()
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(scripted_body(vec![
                        (Duration::from_millis(200), "{\"ok\":"),
                        (Duration::ZERO, "true}"),
                    ]))
                    .unwrap()
            }),
        );
    let server = AppServer::start(app).await;
    let mut scenario = Scenario::runbook(server.url(), users());
    scenario.users.truncate(1);
    scenario.requests_per_user = 2;
    scenario.path = "/sse".into();
    let report = run_burst(&scenario, None).await.unwrap();
    for r in &report.records {
        assert!(r.succeeded() && r.terminal_seen, "{r:?}");
        assert_eq!(
            r.events, 2,
            "the comment and the data-less ping are not events"
        );
        let (ttfb, ttfv) = (r.ttfb.unwrap(), r.ttfv.unwrap());
        assert!(
            ttfv >= Duration::from_millis(400),
            "ttfv {ttfv:?} must wait for the whole first event"
        );
        assert!(ttfb <= ttfv);
        assert_eq!(r.arm, None, "no proxy, no arm");
    }

    // Not an event stream: the first body byte is the first value.
    scenario.path = "/plain".into();
    let report = run_burst(&scenario, None).await.unwrap();
    for r in &report.records {
        assert!(r.succeeded() && !r.event_stream, "{r:?}");
        assert!(r.ttfv.unwrap() >= Duration::from_millis(200), "{r:?}");
        assert_eq!(r.bytes, 11);
    }
    server.stop().await;
}

#[tokio::test]
async fn pinning_by_header_without_the_proxy_token_is_refused_before_anything_is_sent() {
    // The proxy ignores a pin without its token: the "canary" pass would measure whichever arm
    // the split chose. So the scenario and the probes refuse to run that way.
    let mut scenario = Scenario::runbook("http://127.0.0.1:9".to_owned(), users());
    scenario.targeting = Targeting::Canary(CanaryRoute::PinHeader);
    let err = run_burst(&scenario, None).await.unwrap_err().to_string();
    assert!(err.contains("pin token"), "{err}");
    let probes = canary_load::ProbeSpec::new("http://127.0.0.1:9", probe_users());
    let err = canary_load::run_probes(&probes)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("pin token"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_ends_before_done_is_incomplete() {
    // relay-demo's sse-drop fault on the canary: streams are cut half-way, through the proxy.
    let stack = Stack::start(&["sse-drop"], 0).await;
    let mut scenario = runbook(&stack);
    scenario.users.truncate(2);
    scenario.requests_per_user = 3;
    scenario.pause = Duration::ZERO;
    scenario.targeting = Targeting::Canary(CanaryRoute::PinHeader);
    let report = run_burst(&scenario, None).await.unwrap();
    assert_eq!(report.records.len(), 6);
    for r in &report.records {
        assert_eq!(r.arm, Some(ArmRole::Canary));
        assert!(!r.terminal_seen, "{r:?}");
        assert!(
            matches!(r.error, Some(ErrorKind::StreamCut | ErrorKind::Incomplete)),
            "{r:?}"
        );
        assert!(r.events >= 1, "results arrived before the cut: {r:?}");
    }
    let canary = report.arm(ArmRole::Canary).unwrap();
    assert_eq!((canary.failed, canary.streams_complete), (6, 0));
    assert_eq!(canary.stream_completion_percent, Some(0.0));
    assert!(!report.meets(99.0));
    assert_eq!(
        transcript(&report)
            .lines()
            .filter(|l| l.starts_with('✗'))
            .count(),
        6
    );
    stack.stop().await;

    // A stream that ends cleanly without its terminal event is incomplete too.
    let app = axum::Router::new().route(
        "/",
        post(|| async {
            Response::builder()
                .header(header::CONTENT_TYPE, "text/event-stream")
                .body(scripted_body(vec![(
                    Duration::ZERO,
                    "event: result\ndata: 1\n\n",
                )]))
                .unwrap()
        }),
    );
    let server = AppServer::start(app).await;
    let mut scenario = Scenario::runbook(server.url(), users());
    scenario.path = "/".into();
    scenario.users.truncate(1);
    scenario.requests_per_user = 1;
    let report = run_burst(&scenario, None).await.unwrap();
    let r = &report.records[0];
    assert_eq!(
        (r.error, r.events, r.terminal_seen),
        (Some(ErrorKind::Incomplete), 1, false)
    );
    assert_eq!(summary_json(&report)["errors"]["incomplete"], 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_loop_shows_a_server_stall_in_its_latencies() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    // The tenth request stalls the server for a second; the rest answer at once.
    let seen = Arc::new(AtomicU64::new(0));
    let app = axum::Router::new().route(
        "/",
        get(move || {
            let seen = seen.clone();
            async move {
                if seen.fetch_add(1, Ordering::SeqCst) == 9 {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                "ok"
            }
        }),
    );
    let server = AppServer::start(app).await;
    let mut scenario = Scenario::runbook(server.url(), users());
    scenario.users.truncate(1);
    scenario.method = "GET".into();
    scenario.path = "/".into();
    scenario.body = None;
    // 100 requests/s for 2 s over one connection: everything due during the stall waits.
    scenario.mode = Mode::OpenLoop(OpenLoop::new(100.0, Duration::from_secs(2), 1));
    let report = run_burst(&scenario, None).await.unwrap();
    assert_eq!(report.records.len(), 200);
    assert_eq!(report.overall.successful, 200);
    let latency = report.overall.latency.unwrap();
    // The stalled request itself...
    assert!(latency.max >= 1000.0, "{latency:?}");
    // ...and the ~100 requests due behind it, each charged its wait from its due time: a
    // closed-loop client would have shown one slow request and a clean p95.
    assert!(latency.p95 >= 500.0, "{latency:?}");
    let waited = report
        .records
        .iter()
        .filter(|r| r.total >= Duration::from_millis(500))
        .count();
    assert!(waited >= 40, "{waited} requests carry the stall");
    let served_slowly = report
        .records
        .iter()
        .filter(|r| r.total.saturating_sub(r.late_by) >= Duration::from_millis(900))
        .count();
    assert!(served_slowly >= 1 && served_slowly < waited);
    assert!(
        report.overall.late_sends >= 50,
        "late sends {}",
        report.overall.late_sends
    );
    let json = summary_json(&report);
    assert_eq!(json["mode"]["kind"], "open-loop");
    assert!(json["late_sends"].as_u64().unwrap() >= 50);
    assert!(transcript(&report).contains(" late "));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_an_answer_times_out() {
    use std::sync::Arc;
    // The server holds every request until the test releases it.
    let release = Arc::new(tokio::sync::Notify::new());
    let held = release.clone();
    let app = axum::Router::new().route(
        "/",
        post(move || {
            let held = held.clone();
            async move {
                held.notified().await;
                "late"
            }
        }),
    );
    let server = AppServer::start(app).await;
    let mut scenario = Scenario::runbook(server.url(), users());
    scenario.path = "/".into();
    scenario.users.truncate(1);
    scenario.requests_per_user = 2;
    scenario.pause = Duration::ZERO;
    scenario.request_timeout = Duration::from_millis(200);
    let report = run_burst(&scenario, None).await.unwrap();
    for r in &report.records {
        assert_eq!(
            (r.error, r.status),
            (Some(ErrorKind::Timeout), None),
            "{r:?}"
        );
        assert!(r.total >= Duration::from_millis(200));
    }
    assert_eq!(summary_json(&report)["errors"]["timeout"], 2);
    release.notify_waiters();
    server.stop().await;
}
