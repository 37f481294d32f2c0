//! Alertmanager integration: the rendered receiver + route, checked by `amtool` and run by a
//! real Alertmanager whose webhook reaches a receiver in the test with the bearer credential;
//! the payload it sends (version 4) parses into this run's alerts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rules_support;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use canary_core::Secret;
use canary_core::engine::Event;
use canary_core::plan::OnBreach;
use canary_providers::alertmanager::{
    AlertStatus, AlertmanagerClient, AlertmanagerError, AlertmanagerRender, CredentialRef,
    PostableAlert, WebhookError, authorized, parse_webhook,
};
use canary_providers::rules::CanaryRules;
use canary_testkit::Alertmanager;
use rules_support::{RUN_ID, runbook_plan};
use tokio::sync::mpsc;

const TOKEN: &str = "am-to-canary-token-5f2c";

fn render() -> AlertmanagerRender {
    let mut r = AlertmanagerRender::new(
        "https://canary.internal:9464/alerts",
        CredentialRef::File("/etc/alertmanager/canary.token".into()),
    );
    r.escalation_url = Some(CredentialRef::Placeholder {
        variable: "ALERT_WEBHOOK_URL".into(),
    });
    r
}

#[test]
fn the_rendered_snippet_references_credentials_and_never_inlines_them() {
    let snippet = render().snippet().unwrap();
    insta::assert_snapshot!("alertmanager_snippet", snippet);
    assert!(snippet.contains("credentials_file: /etc/alertmanager/canary.token"));
    assert!(snippet.contains("${ALERT_WEBHOOK_URL}"));
    assert!(
        snippet.contains("canary_run=~\\\".+\\\"") || snippet.contains(r#"canary_run=~".+""#),
        "{snippet}"
    );

    let mut placeholders = render();
    placeholders.callback_credentials = CredentialRef::Placeholder {
        variable: "CANARY_ALERT_TOKEN".into(),
    };
    placeholders.escalation_url = Some(CredentialRef::File(
        "/etc/alertmanager/escalation.url".into(),
    ));
    let text = placeholders.standalone().unwrap();
    insta::assert_snapshot!("alertmanager_standalone_placeholders", text);
    assert!(
        text.contains("credentials: ${CANARY_ALERT_TOKEN}"),
        "{text}"
    );
    assert!(
        text.contains("url_file: /etc/alertmanager/escalation.url"),
        "{text}"
    );
}

#[test]
fn amtool_accepts_the_standalone_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("canary.token");
    std::fs::write(&token, TOKEN).unwrap();
    let mut r = AlertmanagerRender::new("http://127.0.0.1:9/alerts", CredentialRef::File(token));
    r.escalation_url = Some(CredentialRef::Placeholder {
        variable: "ALERT_WEBHOOK_URL".into(),
    });
    // The operator's substitution step.
    let text = r
        .standalone()
        .unwrap()
        .replace("${ALERT_WEBHOOK_URL}", "https://hooks.example.com/T0/B0/x");
    let cfg = dir.path().join("alertmanager.yml");
    std::fs::write(&cfg, &text).unwrap();
    let out = Command::new("amtool")
        .args(["check-config"])
        .arg(&cfg)
        .output()
        .expect("amtool is installed (prometheus-alertmanager)");
    assert!(
        out.status.success(),
        "{}{}\n---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bad_callback_urls_are_refused() {
    let r = AlertmanagerRender::new("canary.internal/alerts", CredentialRef::File("/t".into()));
    assert!(r.snippet().unwrap_err().to_string().contains("http://"));
}

/// What a receiver got: the Authorization header and the body.
type Received = (Option<String>, Bytes);

async fn receiver() -> (String, mpsc::UnboundedReceiver<Received>) {
    let (tx, rx) = mpsc::unbounded_channel::<Received>();
    let app = Router::new()
        .route(
            "/alerts",
            post(
                |State(tx): State<mpsc::UnboundedSender<Received>>,
                 headers: HeaderMap,
                 body: Bytes| async move {
                    let auth = headers
                        .get("authorization")
                        .map(|v| v.to_str().unwrap().to_owned());
                    let _ = tx.send((auth, body));
                    "ok"
                },
            ),
        )
        .with_state(tx);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/alerts", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, rx)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Received>, what: &str) -> Received {
    tokio::time::timeout(Duration::from_secs(60), rx.recv())
        .await
        .unwrap_or_else(|_| panic!("no webhook call reached {what} within 60 s"))
        .unwrap()
}

#[tokio::test]
async fn a_real_alertmanager_calls_canary_back_with_the_run_and_the_action() {
    let (canary_url, mut canary_rx) = receiver().await;
    let (escalation_url, mut escalation_rx) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("canary.token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let mut render = AlertmanagerRender::new(canary_url, CredentialRef::File(token_file));
    render.escalation_url = Some(CredentialRef::Placeholder {
        variable: "ALERT_WEBHOOK_URL".into(),
    });
    let config = render.standalone().unwrap();
    assert!(!config.contains(TOKEN));
    let config = config.replace("${ALERT_WEBHOOK_URL}", &escalation_url);
    let am = tokio::task::spawn_blocking(move || Alertmanager::start_in(dir, &config))
        .await
        .unwrap();

    let client = AlertmanagerClient::new(&am.url(), None, Duration::from_secs(5)).unwrap();
    client.ready().await.unwrap();

    // The labels Prometheus would attach when the generated cross-tenant alert fires.
    let rules = CanaryRules::generate(&runbook_plan(), RUN_ID).unwrap();
    let rule = rules
        .group()
        .rules
        .iter()
        .find(|r| r.labels.guardrail == "cross_tenant")
        .unwrap();
    let mut labels: BTreeMap<String, String> = rule.labels.to_map();
    labels.insert("alertname".into(), rule.alert.clone());
    client
        .post_alerts(&[PostableAlert {
            labels,
            annotations: rule.annotations.clone(),
            generator_url: Some("http://prometheus.example/graph".into()),
        }])
        .await
        .unwrap();

    let (auth, body) = next(&mut canary_rx, "canary's webhook").await;
    assert_eq!(auth.as_deref(), Some(format!("Bearer {TOKEN}").as_str()));
    assert!(authorized(auth.as_deref(), &Secret::new(TOKEN)));
    let raw: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(raw["version"], "4", "{raw}");
    assert_eq!(raw["receiver"], "canary");

    let alerts = parse_webhook(&body).unwrap();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let alert = &alerts[0];
    assert_eq!(alert.alertname, "CanaryCrossTenant");
    assert_eq!(alert.status, AlertStatus::Firing);
    assert_eq!(alert.run_id(), Some(RUN_ID));
    assert_eq!(alert.action(), Some(OnBreach::SecurityRollback));
    assert_eq!(alert.guardrail(), Some("cross_tenant"));
    assert!(alert.fires_for(RUN_ID));
    assert!(!alert.fires_for("another-run"));
    assert!(alert.starts_at > 1_600_000_000_000, "{}", alert.starts_at);
    assert_eq!(
        alert.to_event(),
        Event::AlertFired {
            alert: "CanaryCrossTenant".into(),
            security: true,
            guardrail: Some("cross_tenant".into()),
            action: Some(OnBreach::SecurityRollback),
        }
    );

    // The runbook's escalation webhook got it too, without canary's credential.
    let (auth, body) = next(&mut escalation_rx, "the escalation webhook").await;
    assert_eq!(auth, None);
    assert_eq!(parse_webhook(&body).unwrap()[0].run_id(), Some(RUN_ID));
    drop(am);
}

#[tokio::test]
async fn readiness_is_ok_from_a_running_alertmanager_and_says_what_is_wrong_otherwise() {
    let config = AlertmanagerRender::new(
        "http://127.0.0.1:9/alerts",
        CredentialRef::File("/t".into()),
    )
    .standalone()
    .unwrap();
    let am = tokio::task::spawn_blocking(move || Alertmanager::start(&config))
        .await
        .unwrap();
    // A trailing slash is fine, and a token Alertmanager does not ask for does no harm.
    let token = Secret::new("am-ready-token");
    AlertmanagerClient::new(
        &format!("{}/", am.url()),
        Some(token.clone()),
        Duration::from_secs(5),
    )
    .unwrap()
    .ready()
    .await
    .unwrap();

    // Nothing listening: unreachable, with the cause, never the token.
    let port = canary_testkit::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let err = AlertmanagerClient::new(&url, Some(token.clone()), Duration::from_secs(5))
        .unwrap()
        .ready()
        .await
        .unwrap_err();
    assert!(
        matches!(err, AlertmanagerError::Unreachable { .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains(&url) && text.contains("check the URL"),
        "{text}"
    );
    assert!(!text.contains("am-ready-token"), "{text}");

    // Something else answering: the status and what it said; a refused credential by name.
    for (status, want) in [(503, "not ready (HTTP 503"), (401, "ALERTMANAGER_TOKEN")] {
        let url = answering(status, "starting up").await;
        let err = AlertmanagerClient::new(&url, Some(token.clone()), Duration::from_secs(5))
            .unwrap()
            .ready()
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains(want), "{text}");
        assert!(!text.contains("am-ready-token"), "{text}");
    }
    assert!(matches!(
        AlertmanagerClient::new("alertmanager:9093", None, Duration::from_secs(5)),
        Err(AlertmanagerError::Unreachable { .. })
    ));
    drop(am);
}

/// A server answering every request with `status` and `body`; returns its URL.
async fn answering(status: u16, body: &'static str) -> String {
    let status = axum::http::StatusCode::from_u16(status).unwrap();
    let app = Router::new().fallback(move || async move { (status, body) });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

#[test]
fn payloads_parse_by_status_and_refuse_what_is_not_version_4() {
    let payload = br#"{
      "version": "4", "groupKey": "{}:{alertname=\"CanaryTtfvP95\"}", "truncatedAlerts": 0,
      "status": "firing", "receiver": "canary",
      "groupLabels": {"alertname": "CanaryTtfvP95"}, "commonLabels": {}, "commonAnnotations": {},
      "externalURL": "http://am:9093",
      "alerts": [
        {"status": "firing", "labels": {"alertname": "CanaryTtfvP95", "canary_run": "r-1", "action": "rollback", "severity": "critical", "guardrail": "ttfv_p95"},
         "annotations": {"summary": "ttfv"}, "startsAt": "2025-10-19T12:05:00.123Z", "endsAt": "0001-01-01T00:00:00Z",
         "generatorURL": "http://prom/graph", "fingerprint": "c0ffee"},
        {"status": "resolved", "labels": {"alertname": "CanaryDbPool", "canary_run": "r-1", "action": "block-promotion"},
         "annotations": {}, "startsAt": "2025-10-19T12:01:00Z", "endsAt": "2025-10-19T12:02:00Z",
         "generatorURL": "", "fingerprint": ""},
        {"status": "firing", "labels": {"alertname": "HighLoad"},
         "annotations": {}, "startsAt": "2025-10-19T12:01:00+02:00", "endsAt": "0001-01-01T00:00:00Z"}
      ]
    }"#;
    let alerts = parse_webhook(payload).unwrap();
    assert_eq!(alerts.len(), 3);
    assert_eq!(alerts[0].starts_at, 1_760_875_500_123);
    assert_eq!(alerts[0].fingerprint.as_deref(), Some("c0ffee"));
    assert!(alerts[0].fires_for("r-1"));
    assert!(!alerts[0].is_security());
    assert_eq!(alerts[0].guardrail(), Some("ttfv_p95"));
    assert_eq!(alerts[0].action(), Some(OnBreach::Rollback));
    assert_eq!(alerts[1].status, AlertStatus::Resolved);
    assert!(!alerts[1].fires_for("r-1"));
    assert_eq!(alerts[1].action(), Some(OnBreach::BlockPromotion));
    assert_eq!(alerts[1].fingerprint, None);
    assert_eq!(alerts[2].run_id(), None);
    assert!(!alerts[2].fires_for("r-1"));
    assert_eq!(
        alerts[2].to_event(),
        Event::AlertFired {
            alert: "HighLoad".into(),
            security: false,
            guardrail: None,
            action: None,
        }
    );
    assert_eq!(alerts[2].starts_at, 1_760_868_060_000);

    assert!(matches!(
        parse_webhook(br#"{"version": "3", "alerts": []}"#),
        Err(WebhookError::Version(v)) if v == "3"
    ));
    assert!(matches!(
        parse_webhook(b"<html>"),
        Err(WebhookError::NotAPayload(_))
    ));
    let bad_time = br#"{"version":"4","alerts":[{"status":"firing","labels":{"alertname":"A"},"startsAt":"yesterday"}]}"#;
    assert!(
        parse_webhook(bad_time)
            .unwrap_err()
            .to_string()
            .contains("\"A\"")
    );
}
