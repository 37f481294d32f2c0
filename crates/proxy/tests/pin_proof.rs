//! Pinning needs proof: a pin header without the pin token steers nothing and tells nothing,
//! the pin and proof headers never reach an arm, and a rolled-back canary is fenced even
//! against proven pins until it gets traffic again or an operator lifts the fence.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use support::{
    Answer, Backend, PIN_TOKEN, admin, client, config, metric, recording_upstream, send, wait_until,
};

fn request(proxy: &canary_proxy::ProxyHandle, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut req = Request::get(format!("http://{}/x", proxy.data_addr()));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.body(Full::default()).unwrap()
}

async fn pinned_with_proof(
    client: &support::HttpClient,
    proxy: &canary_proxy::ProxyHandle,
) -> Answer {
    send(
        client,
        request(
            proxy,
            &[("x-canary", "canary"), ("x-canary-token", PIN_TOKEN)],
        ),
    )
    .await
}

#[tokio::test]
async fn a_pin_header_without_the_token_is_ignored_at_zero_percent() {
    // The adversarial repro: `--weight 0`, then `curl -H 'X-Canary: canary'` reached the canary.
    let baseline = Backend::start("baseline").await;
    let canary = Backend::start("canary").await;
    let proxy = canary_proxy::start(config(&baseline.url(), &canary.url(), 0))
        .await
        .unwrap();
    let client = client();
    let forged: [&[(&str, &str)]; 5] = [
        &[("x-canary", "canary")],
        &[("X-Canary", "CANARY")],
        &[("x-canary", "canary"), ("x-canary-token", "guess")],
        &[("x-canary", "canary"), ("x-canary-token", "")],
        &[
            ("x-canary", "canary"),
            ("authorization", "Bearer test-pin-token"),
        ],
    ];
    for headers in forged {
        for _ in 0..10 {
            let answer = send(&client, request(&proxy, headers)).await;
            assert_eq!(answer.status, 200, "{headers:?}");
            assert!(answer.body.starts_with("baseline\n"), "{headers:?}");
            assert_eq!(answer.headers.get("x-canary-arm"), None, "{headers:?}");
        }
    }
    assert_eq!(canary.hits(), 0, "no unproven pin may reach the canary");
    assert_eq!(
        metric(
            &proxy,
            "canary_proxy_pins_refused_total{reason=\"unauthenticated\"}"
        ),
        50.0
    );
    // With the token the same pin is honoured (the canary never had traffic: no fence).
    let answer = pinned_with_proof(&client, &proxy).await;
    assert!(answer.body.starts_with("canary\n"), "{}", answer.body);
    assert_eq!(answer.header("x-canary-arm"), "canary");
}

#[tokio::test]
async fn the_arm_header_is_only_for_callers_with_the_token() {
    // The arm itself sends an `x-canary-arm` too: an anonymous client must not see it either.
    let upstream = recording_upstream(
        b"HTTP/1.1 200 OK\r\nx-canary-arm: canary\r\ncontent-length: 2\r\n\r\nok",
        Arc::default(),
    )
    .await;
    let baseline = Backend::start("baseline").await;
    let proxy = canary_proxy::start(config(&baseline.url(), &upstream.url(), 100))
        .await
        .unwrap();
    let client = client();
    let anonymous = send(&client, request(&proxy, &[])).await;
    assert_eq!(anonymous.status, 200);
    assert_eq!(anonymous.headers.get("x-canary-arm"), None);
    let trusted = send(&client, request(&proxy, &[("x-canary-token", PIN_TOKEN)])).await;
    assert_eq!(trusted.header("x-canary-arm"), "canary");
}

#[tokio::test]
async fn pin_and_proof_headers_never_reach_an_arm() {
    let heads = Arc::new(Mutex::new(Vec::<String>::new()));
    let upstream = recording_upstream(
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        heads.clone(),
    )
    .await;
    let baseline = Backend::start("baseline").await;
    let proxy = canary_proxy::start(config(&baseline.url(), &upstream.url(), 0))
        .await
        .unwrap();
    let client = client();
    assert_eq!(pinned_with_proof(&client, &proxy).await.status, 200);
    // Health checks reach the upstream too; the forwarded request is `GET /x`.
    let heads: Vec<String> = heads
        .lock()
        .unwrap()
        .iter()
        .filter(|h| h.starts_with("get /x "))
        .cloned()
        .collect();
    assert_eq!(heads.len(), 1);
    assert!(!heads[0].contains("x-canary"), "{}", heads[0]);
    assert!(!heads[0].contains(PIN_TOKEN), "{}", heads[0]);
}

#[tokio::test]
async fn a_rolled_back_canary_is_fenced_until_the_operator_says_otherwise() {
    let baseline = Backend::start("baseline").await;
    let canary = Backend::start("canary").await;
    let proxy = canary_proxy::start(config(&baseline.url(), &canary.url(), 5))
        .await
        .unwrap();
    let client = client();
    let weights = |pct: u8| format!(r#"{{"canary":{pct}}}"#);

    // The rollback: 5 % → 0 %.
    assert_eq!(
        admin(&client, &proxy, "PUT", "/weights", &weights(0))
            .await
            .status,
        200
    );
    let hits_before = canary.hits();
    let refused = pinned_with_proof(&client, &proxy).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(refused.body.contains("rolled back"), "{}", refused.body);
    assert_eq!(canary.hits(), hits_before, "a refused pin is not forwarded");
    assert_eq!(
        metric(
            &proxy,
            "canary_proxy_pins_refused_total{reason=\"rolled_back\"}"
        ),
        1.0
    );
    assert_eq!(metric(&proxy, "canary_proxy_canary_fenced"), 1.0);
    let pin = admin(&client, &proxy, "GET", "/pin", "").await;
    assert!(pin.body.contains(r#""canary_fenced":true"#), "{}", pin.body);
    assert!(pin.body.contains(PIN_TOKEN), "{}", pin.body);

    // The operator lifts the fence explicitly: proven pins reach the canary at 0 %.
    let lifted = admin(&client, &proxy, "PUT", "/pin", r#"{"canary_fenced":false}"#).await;
    assert_eq!(lifted.status, 200, "{}", lifted.body);
    assert!(
        pinned_with_proof(&client, &proxy)
            .await
            .body
            .starts_with("canary\n")
    );

    // Traffic again, then a second rollback: fenced again.
    admin(&client, &proxy, "PUT", "/weights", &weights(25)).await;
    assert_eq!(metric(&proxy, "canary_proxy_canary_fenced"), 0.0);
    admin(&client, &proxy, "PUT", "/weights", &weights(0)).await;
    assert_eq!(pinned_with_proof(&client, &proxy).await.status, 403);
    // A proven pin to the baseline still works.
    let baseline_pin = send(
        &client,
        request(
            &proxy,
            &[("x-canary", "baseline"), ("x-canary-token", PIN_TOKEN)],
        ),
    )
    .await;
    assert_eq!(baseline_pin.header("x-canary-arm"), "baseline");
}

#[tokio::test]
async fn a_lapsed_lease_fences_the_canary() {
    let baseline = Backend::start("baseline").await;
    let canary = Backend::start("canary").await;
    let proxy = canary_proxy::start(config(&baseline.url(), &canary.url(), 5))
        .await
        .unwrap();
    let client = client();
    let lease = admin(&client, &proxy, "PUT", "/lease", r#"{"ttl_ms":50}"#).await;
    assert_eq!(lease.status, 200);
    wait_until("the lease to lapse", Duration::from_secs(5), || {
        proxy.split().canary_fenced
    })
    .await;
    assert_eq!(proxy.weight().canary(), 0);
    assert_eq!(pinned_with_proof(&client, &proxy).await.status, 403);
}
