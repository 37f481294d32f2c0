//! Health checks straight at an arm, as the run uses them behind HAProxy, nginx or a command
//! provider: a real HAProxy splits traffic, the canary's own address is checked, and the canary
//! going away becomes one `ArmUnhealthy` event for the canary — while HAProxy itself, which
//! canary cannot ask about the arms through a command provider, keeps answering.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod traffic_support;

use std::time::Duration;

use canary_core::{ArmRole, Event};
use canary_providers::health::HealthCheck;
use tokio::sync::mpsc;
use traffic_support::{Backend, Haproxy};

fn quick(arm: ArmRole, url: String) -> HealthCheck {
    HealthCheck {
        interval: Duration::from_millis(50),
        timeout: Duration::from_millis(500),
        ..HealthCheck::new(arm, url)
    }
}

#[tokio::test]
async fn a_canary_that_goes_away_is_reported_unhealthy_once_and_the_baseline_is_not() {
    let baseline = Backend::start("baseline").await;
    let canary = Backend::start("canary").await;
    let haproxy = Haproxy::start(&baseline, &canary).await;
    let (tx, mut events) = mpsc::channel(8);
    let watches = [
        quick(ArmRole::Baseline, format!("{}/healthz", baseline.url())).watch(tx.clone()),
        quick(ArmRole::Canary, format!("{}/healthz", canary.url())).watch(tx),
    ];

    // Healthy arms: nothing for a dozen checks each.
    let quiet = tokio::time::timeout(Duration::from_millis(600), events.recv()).await;
    assert!(quiet.is_err(), "no event while both arms answer: {quiet:?}");

    let canary_url = canary.url();
    drop(canary);
    let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("the canary is reported within 10 s")
        .unwrap();
    match event {
        Event::ArmUnhealthy { arm, detail } => {
            assert_eq!(arm, ArmRole::Canary);
            assert!(detail.contains(&canary_url), "{detail}");
            assert!(detail.contains("3 failed checks in a row"), "{detail}");
        }
        other => panic!("expected ArmUnhealthy, got {other:?}"),
    }
    // Once, not at every failed check after it.
    let again = tokio::time::timeout(Duration::from_millis(500), events.recv()).await;
    assert!(again.is_err(), "reported once: {again:?}");
    // The load balancer in front still answers: only a direct check sees the canary is gone.
    let front = reqwest::get(format!("http://{}/", haproxy.frontend))
        .await
        .unwrap();
    assert!(front.status().is_success());
    for w in watches {
        w.abort();
    }
}
