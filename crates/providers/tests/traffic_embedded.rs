//! The `embedded` router against the real embedded proxy: set 5 / 50 / 100 / 0 through its
//! admin API and measure the split on real requests; lease, health, credentials.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod traffic_support;

use std::time::Duration;

use canary_providers::traffic::{
    EmbeddedRouter, EmbeddedRouterConfig, RetryPolicy, Split, Step, TrafficError, TrafficRouter,
    set_verified, verify,
};
use canary_proxy::{AdminToken, ProxyConfig, Upstream};
use traffic_support::{Backend, canary_share, wait_until};

const TOKEN: &str = "proxy-admin-s3cret";

async fn proxy(baseline: &str, canary: &str) -> canary_proxy::ProxyHandle {
    let mut cfg = ProxyConfig::new(
        Upstream::parse(baseline).unwrap(),
        Upstream::parse(canary).unwrap(),
        AdminToken::new(TOKEN),
    );
    cfg.health.interval = Duration::from_millis(100);
    canary_proxy::start(cfg).await.unwrap()
}

fn router(proxy: &canary_proxy::ProxyHandle, token: &str) -> EmbeddedRouter {
    EmbeddedRouter::new(EmbeddedRouterConfig {
        admin_url: format!("http://{}", proxy.admin_addr()),
        token: token.into(),
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_set_through_the_admin_api_split_real_traffic() {
    let baseline = Backend::start("baseline").await;
    let canary = Backend::start("canary").await;
    let proxy = proxy(&baseline.url(), &canary.url()).await;
    let router = router(&proxy, TOKEN);
    let url = format!("http://{}/", proxy.data_addr());
    for pct in [5u8, 50, 100, 0] {
        let split = set_verified(&router, pct, &RetryPolicy::default())
            .await
            .unwrap();
        assert_eq!(split, Split::with_canary(pct).unwrap());
        let share = canary_share(&url, 1_000).await;
        eprintln!("embedded at {pct} %: measured canary share {share:.2} % of 1000 requests");
        assert!(
            (share - f64::from(pct)).abs() <= 1.0,
            "set {pct} %, measured {share} %"
        );
    }
    let text = router.describe().await.unwrap();
    assert!(
        text.contains("split: canary 0 % / baseline 100 %"),
        "{text}"
    );
    assert!(text.contains(&canary.url()), "{text}");
    assert!(!text.contains(TOKEN));
}

#[tokio::test]
async fn lease_health_and_drift_are_visible_to_the_controller() {
    let baseline = Backend::start("baseline").await;
    let dead_canary = format!("http://127.0.0.1:{}", traffic_support::free_port());
    let proxy = proxy(&baseline.url(), &dead_canary).await;
    let router = router(&proxy, TOKEN);

    set_verified(&router, 50, &RetryPolicy::default())
        .await
        .unwrap();
    router
        .renew_lease("run-42", Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(
        router.health().await.unwrap().lease_holder.as_deref(),
        Some("run-42")
    );

    // The canary is down: health checks report it.
    wait_until(
        "canary reported unhealthy",
        Duration::from_secs(5),
        || async { router.health().await.unwrap().canary.is_unhealthy() },
    )
    .await;
    let health = router.health().await.unwrap();
    assert!(!health.baseline.is_unhealthy());
    assert!(health.canary.last_error.is_some());

    // The controller stops renewing: the proxy goes back to 0 % by itself, and verification
    // reports the drift.
    wait_until("lease lapse", Duration::from_secs(3), || async {
        router.get().await.unwrap().canary == 0
    })
    .await;
    match verify(&router, 50).await.unwrap_err() {
        TrafficError::Drift { actual, .. } => assert_eq!(actual.canary, 0),
        other => panic!("expected drift, got {other}"),
    }
    router
        .renew_lease("run-43", Duration::from_secs(60))
        .await
        .unwrap();
    router.release_lease().await.unwrap();
    assert_eq!(router.health().await.unwrap().lease_holder, None);
}

#[tokio::test]
async fn a_wrong_token_fails_at_once_without_leaking_the_token() {
    let baseline = Backend::start("baseline").await;
    let canary = Backend::start("canary").await;
    let proxy = proxy(&baseline.url(), &canary.url()).await;
    let wrong = router(&proxy, "wrong-token-value");
    let err = set_verified(&wrong, 5, &RetryPolicy::default())
        .await
        .unwrap_err();
    assert_eq!(err.step(), Some(Step::Set));
    let message = err.to_string();
    assert!(
        message.contains("after 1 attempt(s)"),
        "not retried: {message}"
    );
    assert!(message.contains("check the admin token"), "{message}");
    assert!(!message.contains("wrong-token-value"));
    let cfg = EmbeddedRouterConfig {
        admin_url: "http://127.0.0.1:1".into(),
        token: TOKEN.into(),
    };
    assert!(!format!("{cfg:?}").contains(TOKEN));
    assert!(!format!("{:?}", router(&proxy, TOKEN)).contains(TOKEN));
    assert_eq!(proxy.weight().canary(), 0);
}

#[tokio::test]
async fn the_pin_token_comes_from_the_admin_api_and_a_rollback_fences_the_canary() {
    let baseline = Backend::start("baseline").await;
    let canary = Backend::start("canary").await;
    let proxy = proxy(&baseline.url(), &canary.url()).await;
    let router = router(&proxy, TOKEN);
    let access = router.pin_access().await.unwrap();
    assert_eq!(
        (access.header.as_str(), access.proof_header.as_str()),
        ("x-canary", "x-canary-token")
    );
    assert!(!access.canary_fenced);
    assert_eq!(access.token.expose().len(), 64, "a generated 256-bit token");
    assert!(!format!("{access:?}").contains(access.token.expose()));

    // A proven pin reaches the canary at 0 %; after a rollback (5 % → 0 %) it does not.
    let pinned = || async {
        reqwest::Client::new()
            .get(format!("http://{}/", proxy.data_addr()))
            .header("x-canary", "canary")
            .header("x-canary-token", access.token.expose())
            .send()
            .await
            .unwrap()
    };
    assert_eq!(pinned().await.text().await.unwrap(), "canary");
    set_verified(&router, 5, &RetryPolicy::default())
        .await
        .unwrap();
    set_verified(&router, 0, &RetryPolicy::default())
        .await
        .unwrap();
    assert!(router.pin_access().await.unwrap().canary_fenced);
    assert_eq!(pinned().await.status(), 403);
}
