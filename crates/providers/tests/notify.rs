//! Notifications against real receivers: Slack / PagerDuty / webhook payloads checked by local
//! HTTP receivers, email through a real SMTP server (Python's aiosmtpd) with authentication, and
//! the notifier's filtering, retries and timeouts — which never fail the caller and never leak a
//! secret into what they report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use canary_core::engine::{GuardrailSummary, Status, Topic};
use canary_core::{OnBreach, Reading, Secret, Severity};
use canary_providers::notify::{
    Channel, Email, EmailConfig, Incident, Message, Notifier, Outcome, PagerDuty, RetryPolicy,
    Slack, Webhook,
};
use canary_testkit::free_port;
use canary_testkit::smtp::Smtp;
use serde_json::Value;

const RUN: &str = "relay-20251019T120000Z";
const AT: i64 = 1_760_875_200_000;

/// A receiver answering `script[i]` to the i-th request (the last entry thereafter); a status of
/// 0 means "never answer".
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<(HeaderMap, Value)>>>,
    calls: Arc<AtomicU32>,
}

async fn receiver(script: Vec<u16>) -> (String, Receiver) {
    let r = Receiver::default();
    let app = Router::new()
        .route(
            "/hook/{*rest}",
            post(
                |State((r, script)): State<(Receiver, Arc<Vec<u16>>)>,
                 headers: HeaderMap,
                 body: axum::body::Bytes| async move {
                    let i = r.calls.fetch_add(1, Ordering::SeqCst) as usize;
                    let status = script[i.min(script.len() - 1)];
                    if status == 0 {
                        std::future::pending::<()>().await;
                    }
                    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    r.got.lock().unwrap().push((headers, json));
                    (
                        StatusCode::from_u16(status).unwrap(),
                        if status < 300 { "ok" } else { "no_service" },
                    )
                },
            ),
        )
        .with_state((r.clone(), Arc::new(script)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/hook/T000/B000/s3cr3t-path",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, r)
}

fn message(kind: Topic, severity: Severity, title: &str) -> Message {
    Message::new(
        kind,
        severity,
        "relay",
        RUN,
        title,
        "ttfv_p95 canary 1830 ms (must be < 1500)\nbaseline 410 ms",
        AT,
    )
    .with_link("https://grafana.internal/d/canary-run")
}

fn quick() -> RetryPolicy {
    RetryPolicy {
        attempts: 3,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(20),
    }
}

#[tokio::test]
async fn slack_gets_an_incoming_webhook_message() {
    let (url, rx) = receiver(vec![200]).await;
    let slack = Slack::new(Secret::new(url.clone()), Some("#canary-live".into())).unwrap();
    assert!(!format!("{slack:?}").contains("s3cr3t"));
    let mut n = Notifier::new(Duration::from_secs(5), quick());
    n.subscribe(Box::new(slack), &[Topic::Check, Topic::Breach]);
    let out = n
        .notify(&message(
            Topic::Breach,
            Severity::Critical,
            "relay canary: ttfv_p95 breaching",
        ))
        .await;
    assert_eq!(out.len(), 1);
    assert!(out[0].delivered(), "{out:?}");
    assert_eq!(
        (out[0].channel.as_str(), out[0].kind, out[0].attempts),
        ("slack #canary-live", "slack", 1)
    );
    let got = rx.got.lock().unwrap();
    let body = &got[0].1;
    assert_eq!(body["channel"], "#canary-live");
    assert_eq!(
        body["text"],
        ":rotating_light: relay canary: ttfv_p95 breaching"
    );
    let blocks = body["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "section");
    assert_eq!(blocks[0]["text"]["type"], "mrkdwn");
    assert!(
        blocks[1]["text"]["text"]
            .as_str()
            .unwrap()
            .contains("(must be &lt; 1500)")
    );
    let context = blocks[2]["elements"][0]["text"].as_str().unwrap();
    assert!(
        context.contains(RUN)
            && context.contains("2025-10-19T12:00:00Z")
            && context.contains("<https://grafana.internal/d/canary-run|dashboard>"),
        "{context}"
    );
}

#[tokio::test]
async fn pagerduty_triggers_on_breach_and_rollback_and_resolves_on_promotion() {
    let (url, rx) = receiver(vec![202]).await;
    let pd = PagerDuty::new(
        Secret::new("R0UTINGKEY123"),
        Some(url.replace("/hook/T000/B000/s3cr3t-path", "/hook/v2/enqueue")),
    )
    .unwrap();
    assert!(!format!("{pd:?}").contains("R0UTINGKEY123"));
    let mut n = Notifier::new(Duration::from_secs(5), quick());
    n.subscribe(
        Box::new(pd),
        &[Topic::Breach, Topic::Rollback, Topic::Decision],
    );

    // Not subscribed: no request at all.
    assert!(
        n.notify(&message(Topic::Check, Severity::Info, "T+5 check"))
            .await
            .is_empty()
    );
    for (kind, severity, expected) in [
        (Topic::Breach, Severity::Page, "critical"),
        (Topic::Rollback, Severity::Critical, "error"),
        (Topic::Breach, Severity::Warning, "warning"),
    ] {
        let out = n
            .notify(&message(kind, severity, "cross_tenant breached"))
            .await;
        assert!(out[0].delivered(), "{out:?}");
        let got = rx.got.lock().unwrap();
        let body = &got.last().unwrap().1;
        assert_eq!(body["routing_key"], "R0UTINGKEY123");
        assert_eq!(body["event_action"], "trigger");
        assert_eq!(body["dedup_key"], format!("canary-{RUN}"));
        assert_eq!(body["payload"]["summary"], "cross_tenant breached");
        assert_eq!(body["payload"]["severity"], expected);
        assert_eq!(body["payload"]["source"], "canary/relay");
        assert_eq!(body["payload"]["timestamp"], "2025-10-19T12:00:00Z");
        assert_eq!(body["payload"]["custom_details"]["run_id"], RUN);
        assert_eq!(
            body["links"][0]["href"],
            "https://grafana.internal/d/canary-run"
        );
    }
    let promoted =
        message(Topic::Decision, Severity::Info, "PROMOTE").with_outcome(Outcome::Promote);
    assert!(n.notify(&promoted).await[0].delivered());
    let rolled_back =
        message(Topic::Decision, Severity::Critical, "ROLLBACK").with_outcome(Outcome::Rollback);
    assert!(n.notify(&rolled_back).await[0].delivered());
    let got = rx.got.lock().unwrap();
    let resolve = &got[got.len() - 2].1;
    assert_eq!(resolve["event_action"], "resolve");
    assert_eq!(resolve["dedup_key"], format!("canary-{RUN}"));
    assert_eq!(resolve["routing_key"], "R0UTINGKEY123");
    assert_eq!(got[got.len() - 1].1["event_action"], "trigger");
}

#[tokio::test]
async fn a_generic_webhook_gets_the_message_as_json_with_its_token() {
    let (url, rx) = receiver(vec![204]).await;
    let hook = Webhook::new(Secret::new(url), Some(Secret::new("hook-token"))).unwrap();
    let mut n = Notifier::new(Duration::from_secs(5), quick());
    n.subscribe(Box::new(hook), Topic::ALL);
    let msg = message(Topic::Decision, Severity::Info, "PROMOTE").with_outcome(Outcome::Promote);
    assert!(n.notify(&msg).await[0].delivered());
    let got = rx.got.lock().unwrap();
    let (headers, body) = &got[0];
    assert_eq!(headers["authorization"], "Bearer hook-token");
    assert_eq!(body["kind"], "decision");
    assert_eq!(body["severity"], "info");
    assert_eq!(body["service"], "relay");
    assert_eq!(body["run_id"], RUN);
    assert_eq!(body["title"], "PROMOTE");
    assert_eq!(body["outcome"], "promote");
    assert_eq!(body["at"], AT);
    assert_eq!(body["timestamp"], "2025-10-19T12:00:00Z");
}

#[tokio::test]
async fn the_notifier_filters_retries_times_out_and_never_fails() {
    let (flaky_url, flaky) = receiver(vec![503, 429, 200]).await;
    let (refusing_url, refusing) = receiver(vec![404]).await;
    let (hanging_url, hanging) = receiver(vec![0]).await;
    let (decision_url, decision_only) = receiver(vec![200]).await;
    let closed = format!("http://127.0.0.1:{}/hook/T1/B1/s3cr3t-closed", free_port());

    let mut n = Notifier::new(Duration::from_millis(300), quick());
    n.subscribe(
        Box::new(Slack::new(Secret::new(flaky_url), Some("#flaky".into())).unwrap()),
        Topic::ALL,
    )
    .subscribe(
        Box::new(Slack::new(Secret::new(refusing_url), Some("#archived".into())).unwrap()),
        Topic::ALL,
    )
    .subscribe(
        Box::new(Webhook::new(Secret::new(hanging_url), None).unwrap()),
        Topic::ALL,
    )
    .subscribe(
        Box::new(Slack::new(Secret::new(decision_url), Some("#engineering".into())).unwrap()),
        &[Topic::Decision],
    )
    .subscribe(
        Box::new(Webhook::new(Secret::new(closed), None).unwrap()),
        &[Topic::Rollback],
    );
    assert_eq!(n.channels().len(), 5);

    let out = n
        .notify(&message(
            Topic::Rollback,
            Severity::Critical,
            "ROLLBACK: ttfv_p95",
        ))
        .await;
    let by = |name: &str| {
        out.iter()
            .find(|d| d.channel == name)
            .unwrap_or_else(|| panic!("{name}: {out:?}"))
    };
    assert_eq!(out.len(), 4, "{out:?}");
    // 503 and 429 are retried; the third attempt lands.
    assert!(by("slack #flaky").delivered());
    assert_eq!(by("slack #flaky").attempts, 3);
    assert_eq!(flaky.calls.load(Ordering::SeqCst), 3);
    // A 404 is permanent: one attempt, the status and body reported.
    let refused = by("slack #archived");
    assert_eq!(refused.attempts, 1);
    assert!(
        refused.error.as_deref().unwrap().contains("HTTP 404")
            && refused.error.as_deref().unwrap().contains("no_service"),
        "{refused:?}"
    );
    assert_eq!(refusing.calls.load(Ordering::SeqCst), 1);
    // A channel that never answers times out on every attempt.
    let hung: Vec<_> = out.iter().filter(|d| d.kind == "webhook").collect();
    let timed_out = hung
        .iter()
        .find(|d| d.error.as_deref().unwrap().contains("did not answer"))
        .unwrap();
    assert_eq!(timed_out.attempts, 3);
    assert_eq!(hanging.calls.load(Ordering::SeqCst), 3);
    // Nothing listening: unreachable, retried, reported.
    let unreachable = hung
        .iter()
        .find(|d| d.error.as_deref().unwrap().contains("unreachable"))
        .unwrap();
    assert_eq!(unreachable.attempts, 3);
    // The decision-only channel heard nothing.
    assert_eq!(decision_only.calls.load(Ordering::SeqCst), 0);

    // No secret (webhook paths) in anything reported.
    let report = serde_json::to_string(&out).unwrap();
    assert!(!report.contains("s3cr3t"), "{report}");
}

fn email(port: u16, password: &str) -> Email {
    Email::new(EmailConfig {
        smtp_url: format!("smtp://canary@127.0.0.1:{port}?tls=none"),
        password: Some(Secret::new(password)),
        from: "canary <canary@company.com>".into(),
        to: vec!["deployment-lead@company.com".into()],
        timeout: Duration::from_secs(10),
    })
    .unwrap()
}

#[tokio::test]
async fn email_goes_through_a_real_smtp_server_with_authentication() {
    let smtp = tokio::task::spawn_blocking(Smtp::start).await.unwrap();
    let channel = email(smtp.port, canary_testkit::smtp::PASSWORD);
    assert!(!format!("{channel:?}").contains(canary_testkit::smtp::PASSWORD));
    assert_eq!(channel.name(), "email deployment-lead@company.com");
    let mut n = Notifier::new(Duration::from_secs(10), quick());
    n.subscribe(Box::new(channel), &[Topic::Decision]);
    let msg = message(
        Topic::Decision,
        Severity::Info,
        "PROMOTE: every guardrail passed",
    )
    .with_outcome(Outcome::Promote);
    let out = n.notify(&msg).await;
    assert!(out[0].delivered(), "{out:?}");

    let got = smtp.messages().into_iter().next().unwrap();
    assert_eq!(got["from"], "canary@company.com");
    assert_eq!(
        got["to"],
        serde_json::json!(["deployment-lead@company.com"])
    );
    let data = got["data"].as_str().unwrap();
    assert!(
        data.contains("Subject: [canary relay] PROMOTE: every guardrail passed"),
        "{data}"
    );
    assert!(data.contains("To: deployment-lead@company.com"), "{data}");
    assert!(data.contains(&format!("run:      {RUN}")), "{data}");
    assert!(data.contains("decision: Promote"), "{data}");
    assert!(data.contains("ttfv_p95 canary 1830 ms"), "{data}");

    // A wrong password is a permanent SMTP refusal: one attempt, reported without the password.
    let mut n = Notifier::new(Duration::from_secs(10), quick());
    n.subscribe(Box::new(email(smtp.port, "wrong-pa55")), &[Topic::Decision]);
    let out = n.notify(&msg).await;
    assert_eq!(out[0].attempts, 1, "{out:?}");
    let error = out[0].error.as_deref().unwrap();
    assert!(
        error.contains("535") || error.to_lowercase().contains("auth"),
        "{error}"
    );
    assert!(!error.contains("wrong-pa55"));
    assert_eq!(smtp.messages().len(), 1);
}

/// A guardrail as the engine reports it in a breach.
fn breached(
    name: &str,
    must: &str,
    on_breach: OnBreach,
    canary: f64,
    baseline: f64,
) -> GuardrailSummary {
    GuardrailSummary {
        name: name.into(),
        on_breach,
        must: must.parse().unwrap(),
        for_: Duration::ZERO,
        status: Status::Breach,
        canary: Some(Reading::value(canary)),
        baseline: Some(Reading::value(baseline)),
        breached_since: Some(AT),
        evaluations: 12,
        breaches: 1,
        triggered: true,
        worst: Some(canary),
        time_scale: 1.0,
        unit: None,
    }
}

#[tokio::test]
async fn pagerduty_names_the_guardrail_pages_security_critical_and_resolves_when_traffic_is_safe() {
    let (url, rx) = receiver(vec![202]).await;
    let (slack_url, slack_rx) = receiver(vec![200]).await;
    let pd = PagerDuty::new(
        Secret::new("R0UTINGKEY123"),
        Some(url.replace("/hook/T000/B000/s3cr3t-path", "/hook/v2/enqueue")),
    )
    .unwrap();
    let mut n = Notifier::new(Duration::from_secs(5), quick());
    // The template's subscription: breaches and rollbacks, not decisions.
    n.subscribe(Box::new(pd), &[Topic::Breach, Topic::Rollback]);
    n.subscribe(
        Box::new(Slack::new(Secret::new(slack_url), None).unwrap()),
        &[Topic::Breach],
    );
    let bodies = || {
        rx.got
            .lock()
            .unwrap()
            .iter()
            .map(|(_, b)| b.clone())
            .collect::<Vec<_>>()
    };

    // A `for = 0` security guardrail: the breach itself pages, critical, naming the guardrail
    // and both values, on the run's incident.
    let leak = breached("cross_tenant", "== 0", OnBreach::SecurityRollback, 3.0, 0.0);
    let msg = message(
        Topic::Breach,
        Severity::Page,
        "relay canary: cross_tenant: canary value 3 breached `== 0` for 0s (security-rollback); baseline 0: rolling back",
    )
    .with_guardrails(vec![leak.clone()]);
    assert!(n.notify(&msg).await.iter().all(|d| d.delivered()));
    let body = bodies().last().unwrap().clone();
    assert_eq!(body["event_action"], "trigger");
    assert_eq!(body["dedup_key"], format!("canary-{RUN}"));
    assert_eq!(body["payload"]["severity"], "critical");
    assert!(
        body["payload"]["summary"]
            .as_str()
            .unwrap()
            .contains("cross_tenant: canary value 3 breached `== 0`"),
        "{body}"
    );
    let details = &body["payload"]["custom_details"];
    assert_eq!(details["run_id"], RUN);
    assert_eq!(details["guardrail"], "cross_tenant");
    assert_eq!(details["canary_value"], 3.0);
    assert_eq!(details["baseline_value"], 0.0);
    assert_eq!(details["threshold"], "== 0");
    assert_eq!(details["on_breach"], "security-rollback");
    assert_eq!(details["guardrails"][0]["guardrail"], "cross_tenant");

    // A breach still counting its `for`: a warning on the guardrail's own incident, so the
    // rollback that may follow is not swallowed by it.
    let mut slow = breached("ttfv_p95", "< 1500", OnBreach::Rollback, 1830.0, 410.0);
    slow.for_ = Duration::from_secs(300);
    let msg = message(Topic::Breach, Severity::Warning, "ttfv_p95 breaching")
        .with_guardrails(vec![slow.clone()])
        .with_incident(Incident::Guardrail {
            name: "ttfv_p95".into(),
        });
    n.notify(&msg).await;
    let body = bodies().last().unwrap().clone();
    assert_eq!(body["dedup_key"], format!("canary-{RUN}-ttfv_p95"));
    assert_eq!(body["payload"]["severity"], "warning");
    assert_eq!(body["payload"]["custom_details"]["canary_value"], 1830.0);
    assert_eq!(body["payload"]["custom_details"]["baseline_value"], 410.0);
    assert_eq!(body["payload"]["custom_details"]["threshold"], "< 1500");
    assert_eq!(body["payload"]["custom_details"]["for"], "5m");

    // Traffic verified back on the baseline: the run's incident and every guardrail's are
    // resolved, each by its dedup key.
    let before = bodies().len();
    let msg = message(
        Topic::Rollback,
        Severity::Critical,
        "traffic back on the baseline",
    )
    .with_incident(Incident::Resolved {
        guardrails: vec!["ttfv_p95".into(), "cross_tenant".into()],
    });
    n.notify(&msg).await;
    let resolves: Vec<(String, String)> = bodies()[before..]
        .iter()
        .map(|b| {
            assert_eq!(b["routing_key"], "R0UTINGKEY123");
            (
                b["event_action"].as_str().unwrap().to_owned(),
                b["dedup_key"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        resolves,
        [
            ("resolve".to_owned(), format!("canary-{RUN}")),
            ("resolve".to_owned(), format!("canary-{RUN}-ttfv_p95")),
            ("resolve".to_owned(), format!("canary-{RUN}-cross_tenant")),
        ]
    );

    // A verified promotion is told on `decision`, which PagerDuty does not hear here — but a
    // resolution reaches the pager that opened incidents; Slack on `breach` does not get it.
    let slack_before = slack_rx.got.lock().unwrap().len();
    let before = bodies().len();
    let msg = message(Topic::Decision, Severity::Info, "promotion verified")
        .with_outcome(Outcome::Promote)
        .with_incident(Incident::Resolved {
            guardrails: vec!["ttfv_p95".into()],
        });
    let out = n.notify(&msg).await;
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].kind, "pagerduty");
    assert_eq!(bodies().len(), before + 2);
    assert!(
        bodies()[before..]
            .iter()
            .all(|b| b["event_action"] == "resolve")
    );
    assert_eq!(slack_rx.got.lock().unwrap().len(), slack_before);
}
