//! The `nginx` router against a real nginx 1.22 started by the test: rewrite the upstream
//! include file, `nginx -t`, reload, measure the split on real requests; refuse a broken file;
//! catch a file edited behind canary's back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod traffic_support;

use canary_providers::traffic::{
    NginxConfig, NginxRouter, RetryPolicy, Split, Step, TrafficError, TrafficRouter, set_verified,
    verify,
};
use traffic_support::{Backend, Nginx, canary_share};

fn router(nginx: &Nginx, canary_addr: String, baseline_addr: String) -> NginxRouter {
    NginxRouter::new(NginxConfig {
        upstream_file: nginx.upstream_file.clone(),
        upstream_name: "relay".into(),
        canary_addr,
        baseline_addr,
        test_command: nginx.command("-t -q"),
        reload_command: nginx.command("-s reload"),
    })
    .unwrap()
}

#[tokio::test]
async fn weights_written_to_the_upstream_file_split_real_traffic() {
    let baseline = Backend::start("baseline").await;
    let canary = Backend::start("canary").await;
    let nginx = Nginx::start(&baseline, &canary).await;
    let router = router(&nginx, canary.addr.to_string(), baseline.addr.to_string());

    assert_eq!(router.get().await.unwrap(), Split::with_canary(0).unwrap());
    assert_eq!(canary_share(&nginx.url(), 50).await, 0.0);
    for pct in [5u8, 50, 100, 0] {
        let workers = nginx.workers();
        let split = set_verified(&router, pct, &RetryPolicy::default())
            .await
            .unwrap();
        assert_eq!(split.canary, pct);
        nginx.wait_for_reload(&workers).await;
        let share = canary_share(&nginx.url(), 400).await;
        eprintln!("nginx at {pct} %: measured canary share {share:.2} % of 400 requests");
        assert!(
            (share - f64::from(pct)).abs() <= 1.0,
            "set {pct} %, measured {share} %"
        );
    }
    let file = std::fs::read_to_string(&nginx.upstream_file).unwrap();
    assert!(
        file.contains(&format!("server {} down;", canary.addr)),
        "{file}"
    );
    let text = router.describe().await.unwrap();
    assert!(
        text.contains("split: canary 0 % / baseline 100 %"),
        "{text}"
    );
}

#[tokio::test]
async fn a_file_nginx_rejects_is_never_left_in_place() {
    let baseline = Backend::start("baseline").await;
    let canary = Backend::start("canary").await;
    let nginx = Nginx::start(&baseline, &canary).await;
    let good = router(&nginx, canary.addr.to_string(), baseline.addr.to_string());
    let workers = nginx.workers();
    set_verified(&good, 50, &RetryPolicy::default())
        .await
        .unwrap();
    nginx.wait_for_reload(&workers).await;
    let before = std::fs::read_to_string(&nginx.upstream_file).unwrap();

    // A port nginx cannot parse: `nginx -t` fails, the file is put back, nginx keeps serving.
    let broken = router(&nginx, "127.0.0.1:99999".into(), baseline.addr.to_string());
    let policy = RetryPolicy {
        attempts: 2,
        initial_backoff: std::time::Duration::from_millis(10),
        max_backoff: std::time::Duration::from_millis(10),
    };
    let err = set_verified(&broken, 5, &policy).await.unwrap_err();
    assert_eq!(err.step(), Some(Step::Set), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("-t -q"),
        "names the test command: {message}"
    );
    assert!(
        message.contains("invalid port"),
        "carries nginx's stderr: {message}"
    );
    assert_eq!(
        std::fs::read_to_string(&nginx.upstream_file).unwrap(),
        before
    );
    assert_eq!(good.get().await.unwrap().canary, 50);
    let share = canary_share(&nginx.url(), 200).await;
    assert!((share - 50.0).abs() <= 1.0, "still 50 %: {share}");
}

#[tokio::test]
async fn verification_catches_a_file_edited_behind_canarys_back() {
    let baseline = Backend::start("baseline").await;
    let canary = Backend::start("canary").await;
    let nginx = Nginx::start(&baseline, &canary).await;
    let router = router(&nginx, canary.addr.to_string(), baseline.addr.to_string());
    set_verified(&router, 5, &RetryPolicy::default())
        .await
        .unwrap();
    verify(&router, 5).await.unwrap();

    let file = std::fs::read_to_string(&nginx.upstream_file).unwrap();
    std::fs::write(&nginx.upstream_file, file.replace("weight=95", "weight=45")).unwrap();
    match verify(&router, 5).await.unwrap_err() {
        TrafficError::Drift { actual, .. } => assert_eq!(actual.canary, 10, "5 / (5 + 45)"),
        other => panic!("expected drift, got {other}"),
    }
}
