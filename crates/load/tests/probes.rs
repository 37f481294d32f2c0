//! Tenant-isolation probes against relay-demo through the embedded proxy: a canary that leaks
//! tenants' rows is caught and the leak is attributed to the canary; a clean service yields
//! no leak and every user finds its own marker.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use canary_core::ArmRole;
use canary_load::{ProbeVerdict, probe_json, probe_text, run_probes};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_leak_on_the_canary_is_caught_and_attributed_to_the_canary() {
    // The canary returns other tenants' rows; no load-balancer traffic goes to it, so only the
    // pinned probes can see it.
    let stack = Stack::start(&["tenant-leak"], 0).await;
    let report = run_probes(&stack.probes()).await.unwrap();
    assert_eq!(report.verdict(), ProbeVerdict::Leaked);
    assert_eq!(report.pairs, 20);
    assert!(!report.leaks.is_empty());
    assert_eq!(
        report.leaks_on(ArmRole::Canary),
        report.leaks.len(),
        "every leak is the canary's"
    );
    for leak in &report.leaks {
        assert_ne!(leak.observer, leak.owner);
        assert_eq!(leak.arm, Some(ArmRole::Canary));
        assert_eq!(leak.status, Some(200));
    }
    // The probes that cannot be an echo of the query (half markers, the owner phrase) see it too.
    assert!(
        report.leaks.iter().any(|l| !l.request_carried_marker),
        "{:?}",
        report.leaks
    );
    assert_eq!(
        report.arms.get("canary").copied(),
        Some(report.requests as u64)
    );
    // Per pair: every ordered pair asked 13 ways, answered by the canary, and each leak counted
    // on the pair of who received whose marker.
    assert_eq!(report.pair_results.len(), 20);
    for p in &report.pair_results {
        assert_ne!(p.observer, p.owner);
        assert_eq!((p.requests, p.failed), (13, 0), "{p:?}");
        assert_eq!(p.arms.get("canary").copied(), Some(13), "{p:?}");
        let leaks = report
            .leaks
            .iter()
            .filter(|l| l.observer == p.observer && l.owner == p.owner)
            .count();
        assert_eq!(p.leaks, leaks as u64, "{p:?}");
    }

    let text = probe_text(&report);
    let json = probe_json(&report);
    assert!(text.contains("✗ LEAK user_"), "{text}");
    assert!(text.contains("arm canary"));
    assert_eq!(json["verdict"], "leaked");
    assert_eq!(json["leaks"].as_array().unwrap().len(), report.leaks.len());
    assert_eq!(json["pair_results"].as_array().unwrap().len(), 20);
    let leaks: u64 = json["pair_results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["leaks"].as_u64().unwrap())
        .sum();
    assert_eq!(leaks, report.leaks.len() as u64);
    let rendered = format!("{text}{json}");
    for secret in secrets() {
        assert!(
            !rendered.contains(&secret),
            "a secret reached the probe report"
        );
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_service_yields_no_leak() {
    let stack = Stack::start(&[], 5).await;
    let report = run_probes(&stack.probes()).await.unwrap();
    assert!(report.leaks.is_empty(), "{:?}", report.leaks);
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.self_checks.len(), 5);
    assert!(
        report
            .self_checks
            .iter()
            .all(|c| c.found && c.arm == Some(ArmRole::Canary))
    );
    // 5 self-checks + 20 pairs × (4 ways × 3 top_k + 1 JSON).
    assert_eq!(report.requests, 5 + 20 * 13);
    assert_eq!(report.verdict(), ProbeVerdict::Clean);
    assert_eq!(stack.proxy_requests("canary"), report.requests as f64);
    let text = probe_text(&report);
    assert!(text.contains("0 leak(s): clean"), "{text}");
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("✓ self-check"))
            .count(),
        5
    );
    stack.stop().await;
}
