//! The split on real requests: weighted share, sticky users, pinned requests, the arm header,
//! forwarding headers, and per-arm counts in the metrics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use canary_proxy::SplitMode;
use http::Request;
use http_body_util::Full;
use support::{Backend, admin, client, config, get, metric, send};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_requests_at_five_percent_split_within_tolerance() {
    let baseline = Backend::start("baseline").await;
    let canary = Backend::start("canary").await;
    let proxy = canary_proxy::start(config(&baseline.url(), &canary.url(), 5))
        .await
        .unwrap();
    let proxy = Arc::new(proxy);

    const TOTAL: usize = 20_000;
    const WORKERS: usize = 16;
    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        let proxy = proxy.clone();
        workers.push(tokio::spawn(async move {
            let client = client();
            let mut mismatched = 0;
            let mut by_arm: HashMap<String, usize> = HashMap::new();
            for _ in 0..TOTAL / WORKERS {
                let answer = get(&client, &proxy, "/api/v1/memory/query").await;
                assert_eq!(answer.status, 200);
                let arm = answer.header("x-canary-arm").to_owned();
                if answer.header("x-backend") != arm {
                    mismatched += 1;
                }
                *by_arm.entry(arm).or_default() += 1;
            }
            (by_arm, mismatched)
        }));
    }
    let mut by_arm: HashMap<String, usize> = HashMap::new();
    for worker in workers {
        let (counts, mismatched) = worker.await.unwrap();
        assert_eq!(
            mismatched, 0,
            "X-Canary-Arm must name the arm that answered"
        );
        for (arm, n) in counts {
            *by_arm.entry(arm).or_default() += n;
        }
    }
    let canary_n = by_arm.get("canary").copied().unwrap_or(0);
    let baseline_n = by_arm.get("baseline").copied().unwrap_or(0);
    assert_eq!(canary_n + baseline_n, TOTAL, "{by_arm:?}");
    let share = canary_n as f64 * 100.0 / TOTAL as f64;
    eprintln!("end-to-end split at 5 %: canary {canary_n} / {TOTAL} = {share:.3} %");
    assert!((share - 5.0).abs() <= 0.6, "canary share {share} %");
    assert_eq!(canary.hits() as usize, canary_n);
    assert_eq!(baseline.hits() as usize, baseline_n);

    assert_eq!(
        metric(
            &proxy,
            "canary_proxy_requests_total{arm=\"canary\",code_class=\"2xx\"}"
        ),
        canary_n as f64
    );
    assert_eq!(
        metric(
            &proxy,
            "canary_proxy_requests_total{arm=\"baseline\",code_class=\"2xx\"}"
        ),
        baseline_n as f64
    );
    assert_eq!(
        metric(
            &proxy,
            "canary_proxy_request_duration_seconds_count{arm=\"canary\"}"
        ),
        canary_n as f64
    );
    assert_eq!(metric(&proxy, "canary_proxy_weight{arm=\"canary\"}"), 5.0);
    assert_eq!(
        metric(&proxy, "canary_proxy_weight{arm=\"baseline\"}"),
        95.0
    );
}

#[tokio::test]
async fn sticky_split_keeps_each_token_on_one_arm() {
    let baseline = Backend::start("baseline").await;
    let canary = Backend::start("canary").await;
    let mut cfg = config(&baseline.url(), &canary.url(), 30);
    cfg.split = SplitMode::Sticky;
    let proxy = canary_proxy::start(cfg).await.unwrap();
    let client = client();

    let mut arms_seen = HashMap::new();
    for user in 0..60 {
        let token = format!("user-{user}-jwt");
        let mut arms = std::collections::BTreeSet::new();
        for _ in 0..8 {
            let req = Request::get(format!("http://{}/q", proxy.data_addr()))
                .header("authorization", format!("Bearer {token}"))
                .header("x-canary-token", support::PIN_TOKEN)
                .body(Full::default())
                .unwrap();
            arms.insert(send(&client, req).await.header("x-canary-arm").to_owned());
        }
        assert_eq!(arms.len(), 1, "{token} saw {arms:?}");
        *arms_seen.entry(arms.pop_first().unwrap()).or_insert(0) += 1;
    }
    // 60 users at 30 %: both arms get users (the chance of either being empty is < 1e-9).
    assert!(
        arms_seen.get("canary").copied().unwrap_or(0) > 0,
        "{arms_seen:?}"
    );
    assert!(
        arms_seen.get("baseline").copied().unwrap_or(0) > 0,
        "{arms_seen:?}"
    );

    // Raising the weight keeps canary users on the canary.
    let canary_users: Vec<String> = {
        let mut v = Vec::new();
        for user in 0..60 {
            let token = format!("user-{user}-jwt");
            let req = Request::get(format!("http://{}/q", proxy.data_addr()))
                .header("authorization", format!("Bearer {token}"))
                .header("x-canary-token", support::PIN_TOKEN)
                .body(Full::default())
                .unwrap();
            if send(&client, req).await.header("x-canary-arm") == "canary" {
                v.push(token);
            }
        }
        v
    };
    assert_eq!(
        admin(&client, &proxy, "PUT", "/weights", r#"{"canary":60}"#)
            .await
            .status,
        200
    );
    for token in canary_users {
        let req = Request::get(format!("http://{}/q", proxy.data_addr()))
            .header("authorization", format!("Bearer {token}"))
            .header("x-canary-token", support::PIN_TOKEN)
            .body(Full::default())
            .unwrap();
        assert_eq!(
            send(&client, req).await.header("x-canary-arm"),
            "canary",
            "{token}"
        );
    }
}

#[tokio::test]
async fn a_proven_pin_overrides_the_split() {
    let baseline = Backend::start("baseline").await;
    let canary = Backend::start("canary").await;
    let proxy = canary_proxy::start(config(&baseline.url(), &canary.url(), 0))
        .await
        .unwrap();
    let client = client();
    let pinned = |arm: &str| {
        Request::get(format!("http://{}/q", proxy.data_addr()))
            .header("x-canary", arm)
            .header("x-canary-token", support::PIN_TOKEN)
            .body(Full::<Bytes>::default())
            .unwrap()
    };
    for _ in 0..20 {
        let answer = send(&client, pinned("canary")).await;
        assert_eq!(answer.header("x-canary-arm"), "canary");
        assert!(answer.body.starts_with("canary\n"));
    }
    admin(&client, &proxy, "PUT", "/weights", r#"{"canary":100}"#).await;
    for _ in 0..20 {
        assert_eq!(
            send(&client, pinned("baseline"))
                .await
                .header("x-canary-arm"),
            "baseline"
        );
        assert_eq!(
            get(&client, &proxy, "/q").await.header("x-canary-arm"),
            "canary"
        );
    }
    let bad = send(&client, pinned("staging")).await;
    assert_eq!(bad.status, 400);
    assert!(
        bad.body.contains("expected `canary` or `baseline`"),
        "{}",
        bad.body
    );
    assert_eq!(canary.hits(), 40);
    assert_eq!(baseline.hits(), 20);
}

#[tokio::test]
async fn forwarding_headers_are_added_and_hop_by_hop_headers_dropped() {
    let baseline = Backend::start("baseline").await;
    let canary = Backend::start("canary").await;
    // Served on the test's own runtime rather than dedicated threads: both layouts forward.
    let mut cfg = config(&baseline.url(), &canary.url(), 0);
    cfg.workers = 0;
    let proxy = canary_proxy::start(cfg).await.unwrap();
    let client = client();
    let req = Request::get(format!("http://{}/q", proxy.data_addr()))
        .header("x-forwarded-for", "203.0.113.7")
        .header("connection", "x-hop")
        .header("x-hop", "must not pass")
        .body(Full::default())
        .unwrap();
    let answer = send(&client, req).await;
    assert!(
        answer.body.contains("xff=203.0.113.7, 127.0.0.1\n"),
        "{}",
        answer.body
    );
    assert!(answer.body.contains("xfp=http\n"), "{}", answer.body);
    assert!(
        answer.body.contains(&format!("host={}\n", baseline.addr)),
        "{}",
        answer.body
    );
    assert!(answer.body.contains("connection=-\n"), "{}", answer.body);
    // The backend's own `Keep-Alive` header is about its hop, not ours.
    assert!(answer.headers.get("keep-alive").is_none());
    assert_eq!(answer.header("via"), "1.1 canary");
}

#[tokio::test]
async fn admin_api_requires_the_token_and_validates_weights() {
    let baseline = Backend::start("baseline").await;
    let canary = Backend::start("canary").await;
    let proxy = canary_proxy::start(config(&baseline.url(), &canary.url(), 5))
        .await
        .unwrap();
    let client = client();
    for (path, method) in [
        ("/weights", "GET"),
        ("/metrics", "GET"),
        ("/weights", "PUT"),
    ] {
        let req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", proxy.admin_addr()))
            .header("authorization", "Bearer wrong")
            .body(Full::default())
            .unwrap();
        let answer = send(&client, req).await;
        assert_eq!(answer.status, 401, "{method} {path}");
        assert!(answer.header("www-authenticate").starts_with("Bearer"));
        assert!(!answer.body.contains(support::TOKEN));
    }
    let weights = admin(&client, &proxy, "GET", "/weights", "").await;
    assert_eq!(weights.body, r#"{"canary":5,"baseline":95}"#);
    let set = admin(
        &client,
        &proxy,
        "PUT",
        "/weights",
        r#"{"canary":50,"baseline":50}"#,
    )
    .await;
    assert_eq!(
        (set.status.as_u16(), set.body.as_str()),
        (200, r#"{"canary":50,"baseline":50}"#)
    );
    for bad in [
        r#"{"canary":101}"#,
        r#"{"canary":5,"baseline":90}"#,
        r#"{"weight":5}"#,
        "nope",
    ] {
        let answer = admin(&client, &proxy, "PUT", "/weights", bad).await;
        assert_eq!(answer.status, 422, "{bad}: {}", answer.body);
        assert!(answer.body.contains("\"error\""));
    }
    assert_eq!(proxy.weight().canary(), 50);
    assert_eq!(
        admin(&client, &proxy, "POST", "/weights", "").await.status,
        405
    );
    assert_eq!(admin(&client, &proxy, "GET", "/nope", "").await.status, 404);
    let metrics = admin(&client, &proxy, "GET", "/metrics", "").await;
    assert!(
        metrics
            .header("content-type")
            .starts_with("text/plain; version=0.0.4")
    );
    assert!(
        metrics
            .body
            .contains("canary_proxy_weight{arm=\"canary\"} 50")
    );
}

#[tokio::test]
async fn unhealthy_canary_is_reported_and_skipped_until_it_recovers() {
    let baseline = Backend::start("baseline").await;
    let canary_addr = support::refused_addr().await;
    let proxy = canary_proxy::start(config(
        &baseline.url(),
        &format!("http://{canary_addr}"),
        50,
    ))
    .await
    .unwrap();
    let client = client();
    support::wait_until("canary reported unhealthy", Duration::from_secs(5), || {
        proxy.arm_health(canary_proxy::Arm::Canary).status == canary_proxy::HealthStatus::Unhealthy
    })
    .await;
    let health = admin(&client, &proxy, "GET", "/healthz", "").await;
    let json: serde_json::Value = serde_json::from_str(&health.body).unwrap();
    assert_eq!(json["status"], "degraded");
    assert_eq!(json["arms"]["canary"]["status"], "unhealthy");
    assert_eq!(json["arms"]["baseline"]["status"], "healthy");
    assert!(
        json["arms"]["canary"]["last_error"]
            .as_str()
            .unwrap()
            .contains(&canary_addr.to_string())
    );
    assert_eq!(
        metric(&proxy, "canary_proxy_arm_healthy{arm=\"canary\"}"),
        0.0
    );

    // Weighted traffic falls back to the baseline while the canary is down. About half of the
    // requests wanted the canary; 200 keep the count far from the bound (hypergeometric sd ≈ 5).
    for _ in 0..200 {
        assert_eq!(get(&client, &proxy, "/q").await.status, 200);
    }
    assert_eq!(baseline.hits(), 200);
    assert!(
        metric(
            &proxy,
            "canary_proxy_fallback_requests_total{arm=\"baseline\"}"
        ) >= 60.0
    );

    // The canary comes up on that very port: health recovers and it gets traffic again.
    let _canary = support::RawUpstream::bind(canary_addr, support::answer_ok).await;
    support::wait_until("canary healthy again", Duration::from_secs(5), || {
        proxy.arm_health(canary_proxy::Arm::Canary).status == canary_proxy::HealthStatus::Healthy
    })
    .await;
    let mut canary_answers = 0;
    for _ in 0..100 {
        if get(&client, &proxy, "/q").await.header("x-canary-arm") == "canary" {
            canary_answers += 1;
        }
    }
    assert!(
        (25..=75).contains(&canary_answers),
        "{canary_answers} of 100 at 50 %"
    );
}

#[tokio::test]
async fn shutdown_does_not_wait_for_a_health_check_in_flight() {
    // Both arms accept connections and never answer: every probe hangs until its timeout.
    let silent = support::RawUpstream::start(|stream: tokio::net::TcpStream| async move {
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(stream);
    })
    .await;
    let mut cfg = config(&silent.url(), &silent.url(), 0);
    cfg.health.timeout = Duration::from_secs(30);
    let proxy = canary_proxy::start(cfg).await.unwrap();
    // Let the first probes start and hang.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopped = tokio::time::timeout(Duration::from_secs(5), proxy.shutdown()).await;
    assert!(
        stopped.is_ok(),
        "shutdown waited for a health check that hangs for 30 s"
    );
}

#[tokio::test]
async fn shutdown_stops_serving_and_releases_the_ports() {
    let baseline = Backend::start("baseline").await;
    let canary = Backend::start("canary").await;
    let proxy = canary_proxy::start(config(&baseline.url(), &canary.url(), 5))
        .await
        .unwrap();
    let (data, admin) = (proxy.data_addr(), proxy.admin_addr());
    assert_eq!(get(&client(), &proxy, "/q").await.status, 200);
    proxy.shutdown().await;
    assert!(tokio::net::TcpStream::connect(data).await.is_err());
    assert!(tokio::net::TcpStream::connect(admin).await.is_err());
    // The same ports can be taken again at once.
    let mut cfg = config(&baseline.url(), &canary.url(), 5);
    cfg.listen = data;
    cfg.admin_listen = admin;
    let again = canary_proxy::start(cfg).await.unwrap();
    assert_eq!(get(&client(), &again, "/q").await.status, 200);
}
