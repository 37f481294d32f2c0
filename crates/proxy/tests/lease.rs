//! The dead man's switch end to end: a lapsed lease sends all traffic to the baseline within
//! one second of expiry, says so in the metrics, and leaves pinned requests alone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use support::{Backend, admin, client, config, get, metric, wait_until};
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lapsed_lease_returns_traffic_to_the_baseline_within_a_second() {
    let baseline = Backend::start("baseline").await;
    let canary = Backend::start("canary").await;
    let proxy = canary_proxy::start(config(&baseline.url(), &canary.url(), 50))
        .await
        .unwrap();
    let client = client();

    // Renewals keep the weight.
    let ttl = Duration::from_millis(400);
    for _ in 0..3 {
        let lease = admin(
            &client,
            &proxy,
            "PUT",
            "/lease",
            r#"{"ttl_ms":400,"holder":"run-7"}"#,
        )
        .await;
        assert_eq!(lease.status, 200, "{}", lease.body);
        assert!(lease.body.contains("\"holder\":\"run-7\""));
    }
    // The lease was granted at the latest when the last answer arrived.
    let expiry = Instant::now() + ttl;
    assert_eq!(proxy.weight().canary(), 50);
    assert_eq!(metric(&proxy, "canary_proxy_lease_held"), 1.0);
    let held = admin(&client, &proxy, "GET", "/healthz", "").await;
    assert!(held.body.contains("\"holder\":\"run-7\""), "{}", held.body);

    wait_until(
        "weight back to 0 after the lease lapsed",
        Duration::from_secs(5),
        || proxy.weight().canary() == 0,
    )
    .await;
    let late = Instant::now().saturating_duration_since(expiry);
    eprintln!("lease lapse → 0 % canary: {late:?} after expiry");
    assert!(
        late <= Duration::from_secs(1),
        "switched {late:?} after expiry"
    );

    assert_eq!(metric(&proxy, "canary_proxy_lease_expirations_total"), 1.0);
    assert_eq!(metric(&proxy, "canary_proxy_lease_held"), 0.0);
    assert_eq!(metric(&proxy, "canary_proxy_weight{arm=\"canary\"}"), 0.0);
    let weights = admin(&client, &proxy, "GET", "/weights", "").await;
    assert_eq!(weights.body, r#"{"canary":0,"baseline":100}"#);
    let before = canary.hits();
    for _ in 0..100 {
        assert_eq!(
            get(&client, &proxy, "/q").await.header("x-canary-arm"),
            "baseline"
        );
    }
    assert_eq!(canary.hits(), before);
}

#[tokio::test]
async fn released_lease_never_trips_and_bad_leases_are_refused() {
    let baseline = Backend::start("baseline").await;
    let canary = Backend::start("canary").await;
    let proxy = canary_proxy::start(config(&baseline.url(), &canary.url(), 5))
        .await
        .unwrap();
    let client = client();
    for bad in [
        r#"{"ttl_ms":0}"#,
        r#"{"ttl_ms":999999999999}"#,
        r#"{"ttl":"5s"}"#,
    ] {
        assert_eq!(
            admin(&client, &proxy, "PUT", "/lease", bad).await.status,
            422,
            "{bad}"
        );
    }
    assert_eq!(
        admin(&client, &proxy, "PUT", "/lease", r#"{"ttl_ms":150}"#)
            .await
            .status,
        200
    );
    assert_eq!(
        admin(&client, &proxy, "DELETE", "/lease", "").await.status,
        204
    );
    assert_eq!(
        admin(&client, &proxy, "GET", "/lease", "").await.body,
        "null"
    );
    // Well past the TTL: still 5 %, nothing expired.
    let deadline = Instant::now() + Duration::from_millis(600);
    while Instant::now() < deadline {
        assert_eq!(proxy.weight().canary(), 5);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(metric(&proxy, "canary_proxy_lease_expirations_total"), 0.0);
}
