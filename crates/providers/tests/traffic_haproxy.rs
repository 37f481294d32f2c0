//! The `haproxy` router against a real HAProxy 2.6 started by the test: set 5 / 50 / 100 / 0
//! and measure the split on real requests; catch weights changed behind canary's back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod traffic_support;

use std::time::Duration;

use canary_providers::traffic::{
    HaproxyConfig, HaproxyEndpoint, HaproxyRouter, RetryPolicy, Split, Step, TrafficError,
    TrafficRouter, set_verified, verify,
};
use traffic_support::{Backend, Haproxy, canary_share};

fn router(endpoint: HaproxyEndpoint) -> HaproxyRouter {
    HaproxyRouter::new(HaproxyConfig {
        endpoint,
        backend: "app".into(),
        canary_server: "canary".into(),
        baseline_server: "baseline".into(),
    })
    .unwrap()
}

fn quick_retries() -> RetryPolicy {
    RetryPolicy {
        attempts: 3,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(50),
    }
}

#[tokio::test]
async fn weights_set_through_the_runtime_api_split_real_traffic() {
    let baseline = Backend::start("baseline").await;
    let canary = Backend::start("canary").await;
    let haproxy = Haproxy::start(&baseline, &canary).await;
    let unix = router(HaproxyEndpoint::Unix(haproxy.socket.clone()));
    let tcp = router(format!("tcp:{}", haproxy.admin_tcp).parse().unwrap());

    assert_eq!(unix.get().await.unwrap(), Split::with_canary(0).unwrap());
    for (pct, via) in [(5u8, &unix), (50, &tcp), (100, &unix), (0, &tcp)] {
        let split = set_verified(via, pct, &RetryPolicy::default())
            .await
            .unwrap();
        assert_eq!(split, Split::with_canary(pct).unwrap());
        let share = canary_share(&haproxy.url(), 400).await;
        eprintln!("haproxy at {pct} %: measured canary share {share:.2} % of 400 requests");
        assert!(
            (share - f64::from(pct)).abs() <= 1.0,
            "set {pct} %, measured {share} %"
        );
    }
    // HAProxy itself agrees: `show servers state` via socat shows the weights canary wrote.
    let state = haproxy.socat("show servers state app");
    assert!(state.contains(" canary "), "{state}");

    let text = unix.describe().await.unwrap();
    assert!(text.contains("backend app"), "{text}");
    assert!(
        text.contains("split: canary 0 % / baseline 100 %"),
        "{text}"
    );
}

#[tokio::test]
async fn verification_catches_weights_changed_behind_canarys_back() {
    let baseline = Backend::start("baseline").await;
    let canary = Backend::start("canary").await;
    let haproxy = Haproxy::start(&baseline, &canary).await;
    let router = router(HaproxyEndpoint::Unix(haproxy.socket.clone()));

    set_verified(&router, 5, &quick_retries()).await.unwrap();
    verify(&router, 5).await.unwrap();

    // An operator changes the baseline's weight by hand.
    assert_eq!(haproxy.socat("set weight app/baseline 50").trim(), "");
    let err = verify(&router, 5).await.unwrap_err();
    match &err {
        TrafficError::Drift {
            expected, actual, ..
        } => {
            assert_eq!(expected.canary, 5);
            assert_eq!(actual.canary, 9, "5 / (5 + 50)");
        }
        other => panic!("expected drift, got {other}"),
    }
    assert!(err.to_string().contains("reports canary 9 %"), "{err}");
    let share = canary_share(&haproxy.url(), 550).await;
    assert!((share - 9.09).abs() <= 1.0, "the drift is real: {share} %");

    // A canary server put in maintenance takes no traffic whatever its weight: set() is
    // accepted but verification fails, and the error names the step.
    assert_eq!(haproxy.socat("disable server app/canary").trim(), "");
    let err = set_verified(&router, 50, &quick_retries())
        .await
        .unwrap_err();
    assert_eq!(err.step(), Some(Step::Verify), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("failed at step `verify` after 3 attempt(s)"),
        "{message}"
    );
    assert!(message.contains("reports canary 0 %"), "{message}");
    assert!(router.describe().await.unwrap().contains("maintenance"));
}

#[tokio::test]
async fn runtime_api_errors_name_the_failed_step() {
    let baseline = Backend::start("baseline").await;
    let canary = Backend::start("canary").await;
    let haproxy = Haproxy::start(&baseline, &canary).await;
    let wrong_server = HaproxyRouter::new(HaproxyConfig {
        endpoint: HaproxyEndpoint::Unix(haproxy.socket.clone()),
        backend: "app".into(),
        canary_server: "canary-v2".into(),
        baseline_server: "baseline".into(),
    })
    .unwrap();
    let err = set_verified(&wrong_server, 5, &quick_retries())
        .await
        .unwrap_err();
    assert_eq!(err.step(), Some(Step::Set), "{err}");
    assert!(err.to_string().contains("No such server"), "{err}");

    let nowhere = router(HaproxyEndpoint::Unix(haproxy.dir.join("missing.sock")));
    let err = nowhere.get().await.unwrap_err();
    assert!(matches!(err, TrafficError::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains("missing.sock"), "{err}");
}
