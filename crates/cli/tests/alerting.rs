//! `canary run` against a real Prometheus (metrics and alert rules) and a real Alertmanager
//! (callback): the run installs one alert rule per guardrail into Prometheus' rules directory and
//! removes them afterwards; a firing alert labelled with the run, routed by Alertmanager to the
//! controller's webhook, rolls the canary back.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is a test failure

mod support;

use std::time::Duration;

use canary_testkit::{Alertmanager, Prometheus, free_port, http_get, http_request, wait_for};
use support::{ALERT_TOKEN, finish, rig_with, verify};

#[test]
fn an_alertmanager_alert_for_the_run_rolls_back_and_the_rules_come_and_go() {
    let rules_dir = tempfile::tempdir().unwrap();
    let callback_port = free_port();
    let alertmanager = Alertmanager::start(&format!(
        r#"
route:
  receiver: canary
  group_by: [alertname, canary_run]
  group_wait: 100ms
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: canary
    webhook_configs:
      - url: http://127.0.0.1:{callback_port}/api/alertmanager
        send_resolved: false
        http_config:
          authorization:
            credentials: {ALERT_TOKEN}
"#
    ));
    // Prometheus is started once the services' addresses are known (inside rig_with).
    let mut prometheus: Option<Prometheus> = None;
    let rig = rig_with(
        |baseline, canary_url| {
            let target = |u: &str| u.trim_start_matches("http://").to_owned();
            let config = format!(
                r#"
global:
  scrape_interval: 250ms
  evaluation_interval: 250ms
rule_files:
  - {rules}/*.rules.yml
alerting:
  alertmanagers:
    - static_configs:
        - targets: ["{am}"]
scrape_configs:
  - job_name: relay
    static_configs:
      - targets: ["{b}"]
        labels: {{arm: baseline}}
      - targets: ["{c}"]
        labels: {{arm: canary}}
"#,
                rules = rules_dir.path().display(),
                am = alertmanager.addr,
                b = target(baseline),
                c = target(canary_url),
            );
            let dir = tempfile::tempdir().unwrap();
            let data = dir.path().join("data");
            let p = Prometheus::start(dir, &data, &config);
            let section = format!(
                "[metrics]\nsource = \"prometheus\"\nurl = \"{}/api/v1\"\ntimeout = \"5s\"\n",
                p.url()
            );
            prometheus = Some(p);
            section
        },
        |_, _| {
            format!(
                r#"[alertmanager]
url = "{am}"
callback_listen = "127.0.0.1:{callback_port}"
callback_token = "${{CANARY_ALERT_TOKEN}}"
rules_dir = "{rules}"
"#,
                am = alertmanager.url(),
                rules = rules_dir.path().display(),
            )
        },
    );
    let prometheus = prometheus.unwrap();
    // Prometheus needs a few scrapes before the guardrails have a rate to compute.
    wait_for(
        "Prometheus to have a few scrapes of both services",
        Duration::from_secs(30),
        || {
            let (code, body) = http_get(
                prometheus.addr,
                "/api/v1/query?query=min(count_over_time(up%5B5s%5D))",
            )
            .ok()?;
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            let n: f64 = v["data"]["result"][0]["value"][1].as_str()?.parse().ok()?;
            (code == 200 && n >= 4.0).then_some(())
        },
    );

    let mut run = rig.run(&[]);
    let status = rig.wait_running(&mut run, 3_000);
    let run_id = status["run_id"].as_str().unwrap().to_owned();

    // The run's rules are loaded in Prometheus, one per guardrail, labelled with the run.
    let (_, rules) = http_get(prometheus.addr, "/api/v1/rules").unwrap();
    let rules: serde_json::Value = serde_json::from_str(&rules).unwrap();
    let group = rules["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["rules"][0]["labels"]["canary_run"] == run_id.as_str())
        .unwrap_or_else(|| panic!("no rule group for {run_id}: {rules:#}"));
    assert_eq!(group["rules"].as_array().unwrap().len(), 4, "{group:#}");

    // Another team's alert, labelled with this run, goes through Alertmanager to the controller.
    let alert = serde_json::json!([{
        "labels": {
            "alertname": "RelayErrorBudgetBurn",
            "canary_run": run_id,
            "action": "rollback",
            "severity": "critical",
        },
        "annotations": {"summary": "error budget burning on the canary"},
    }]);
    let (code, body) = http_request(
        alertmanager.addr,
        "POST",
        "/api/v2/alerts",
        &[("Content-Type", "application/json")],
        alert.to_string().as_bytes(),
    )
    .unwrap();
    assert_eq!(code, 200, "{body}");

    let (code, stdout, stderr) = finish(run);
    assert_eq!(code, 3, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("Alertmanager alert RelayErrorBudgetBurn fired"),
        "{stdout}"
    );
    assert_eq!(rig.canary_weight(), 0);
    let bundle = rig.bundle(&run_id);
    assert_eq!(verify(&bundle).0, 0);
    let alerts_artifact = std::fs::read_dir(&bundle)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("CANARY_ALERTS_")
        })
        .unwrap();
    let text = std::fs::read_to_string(alerts_artifact).unwrap();
    assert!(
        text.contains(&alertmanager.url()) && text.contains("ttfv_p95"),
        "{text}"
    );
    assert!(
        !text.contains(ALERT_TOKEN),
        "the callback token leaked into the evidence"
    );

    // After the run the rules are gone again.
    wait_for(
        "the run's rules to be removed",
        Duration::from_secs(10),
        || {
            let (_, body) = http_get(prometheus.addr, "/api/v1/rules").ok()?;
            (!body.contains(&run_id)).then_some(())
        },
    );
    assert_eq!(std::fs::read_dir(rules_dir.path()).unwrap().count(), 0);
}
