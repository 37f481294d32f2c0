//! `canary run` against a real Prometheus (metrics and alert rules) and a real Alertmanager
//! configured with what `canary render alertmanager` prints (callback and escalation): the run
//! installs one alert rule per guardrail into Prometheus' rules directory and removes them
//! afterwards; a firing alert labelled with the run acts as its guardrail's own `on_breach` — a
//! rollback guardrail's alert rolls the canary back, a promotion gate's alert leaves the traffic
//! where it is and fails the gate at the decision — and reaches the escalation webhook too.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is a test failure

mod support;

use std::path::Path;
use std::time::Duration;

use canary_testkit::rehearsal::{envsubst, render_alertmanager};
use canary_testkit::{Alertmanager, Prometheus, free_port, http_get, http_request, wait_for};
use support::{
    ALERT_TOKEN, Received, Rig, artifact_text, finish, rig_with, verify, webhook_receiver,
};

/// alertmanager.yml as `canary render alertmanager --standalone` prints it for a configuration
/// with `[alertmanager] webhook_url = "${ALERT_WEBHOOK_URL}"`, with the variables substituted
/// the way its header says.
fn rendered_alertmanager(callback_port: u16, escalation_url: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let config = support::config_text(
        "http://127.0.0.1:1",
        "http://127.0.0.1:2",
        "http://127.0.0.1:3",
        "127.0.0.1:4".parse().unwrap(),
        &support::embedded_metrics("http://127.0.0.1:1", "http://127.0.0.1:2"),
        "[alertmanager]\nurl = \"http://127.0.0.1:5\"\nwebhook_url = \"${ALERT_WEBHOOK_URL}\"\n",
    );
    std::fs::write(dir.path().join("canary.toml"), config).unwrap();
    let yaml = render_alertmanager(
        Path::new(env!("CARGO_BIN_EXE_canary")),
        dir.path(),
        &format!("http://127.0.0.1:{callback_port}/api/alertmanager"),
    );
    // The escalation receiver is there, naming the variable, never a value.
    assert!(yaml.contains("name: canary-escalation"), "{yaml}");
    assert!(yaml.contains("url: ${ALERT_WEBHOOK_URL}"), "{yaml}");
    assert!(yaml.contains("receiver: canary-escalation"), "{yaml}");
    envsubst(
        &yaml,
        &[
            ("ALERT_WEBHOOK_URL", escalation_url),
            ("CANARY_ALERT_TOKEN", ALERT_TOKEN),
        ],
    )
}

/// The rig with Prometheus as the metric source, loading rules from a rules directory and
/// sending alerts to an Alertmanager configured by `canary render alertmanager`, whose
/// escalation webhook is a local receiver. `guardrails` are added to the rig's four.
struct Alerting {
    rig: Rig,
    prometheus: Prometheus,
    alertmanager: Alertmanager,
    rules_dir: tempfile::TempDir,
    escalations: Received,
}

fn alerting_rig(guardrails: &str) -> Alerting {
    alerting_rig_into(None, guardrails)
}

/// [`alerting_rig`] with the rules going into a Mimir ruler at `ruler` instead of Prometheus'
/// rules directory (Prometheus stands for Mimir's querier; the ruler stand-in takes the token).
fn alerting_rig_into(ruler: Option<&str>, guardrails: &str) -> Alerting {
    let rules_dir = tempfile::tempdir().unwrap();
    let callback_port = free_port();
    // A webhook receiver standing for the runbook's `ALERT_WEBHOOK_URL`.
    let (escalation_url, escalations) = webhook_receiver();
    let escalation_url = format!("{escalation_url}/alerts");
    let alertmanager = Alertmanager::start(&rendered_alertmanager(callback_port, &escalation_url));
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
            // An alert that fires while Prometheus' notifier has not yet discovered
            // Alertmanager (the first seconds after a start or a reload, such as the rules
            // install's) is dropped and sent again only after the resend delay, 1m by default.
            let p = Prometheus::start_with_flags(
                dir,
                &data,
                &config,
                &["--rules.alert.resend-delay=1s"],
            );
            let mut section = format!(
                "[metrics]\nsource = \"prometheus\"\nurl = \"{}/api/v1\"\ntimeout = \"5s\"\n",
                p.url()
            );
            if ruler.is_some() {
                section.push_str(&format!("token = \"{}\"\n", canary_testkit::ruler::TOKEN));
            }
            prometheus = Some(p);
            section
        },
        |_, _| {
            format!(
                r#"[alertmanager]
url = "{am}"
webhook_url = "${{ALERT_WEBHOOK_URL}}"
callback_listen = "127.0.0.1:{callback_port}"
callback_token = "${{CANARY_ALERT_TOKEN}}"
{rules}

{guardrails}
"#,
                am = alertmanager.url(),
                rules = match ruler {
                    Some(url) => format!(
                        "ruler = \"{url}\"\nruler_namespace = \"canary-runs\"\nruler_tenant = \"relay\""
                    ),
                    None => format!("rules_dir = \"{}\"", rules_dir.path().display()),
                },
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
    Alerting {
        rig,
        prometheus,
        alertmanager,
        rules_dir,
        escalations,
    }
}

impl Alerting {
    /// The run's rule group as Prometheus lists it.
    fn rule_group(&self, run_id: &str) -> serde_json::Value {
        let (_, rules) = http_get(self.prometheus.addr, "/api/v1/rules").unwrap();
        let rules: serde_json::Value = serde_json::from_str(&rules).unwrap();
        rules["data"]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["rules"][0]["labels"]["canary_run"] == run_id)
            .cloned()
            .unwrap_or_else(|| panic!("no rule group for {run_id}: {rules:#}"))
    }

    /// After the run the rules are gone again.
    fn assert_rules_removed(&self, run_id: &str) {
        wait_for(
            "the run's rules to be removed",
            Duration::from_secs(10),
            || {
                let (_, body) = http_get(self.prometheus.addr, "/api/v1/rules").ok()?;
                (!body.contains(run_id)).then_some(())
            },
        );
        assert_eq!(std::fs::read_dir(self.rules_dir.path()).unwrap().count(), 0);
    }

    /// Waits for the escalation webhook to get an alert of `run_id` named `alertname`.
    fn escalated(&self, run_id: &str, alertname: &str) -> serde_json::Value {
        wait_for(
            &format!("the escalation webhook to get a {alertname} alert for {run_id}"),
            Duration::from_secs(30),
            || {
                self.escalations
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|(_, payload)| payload)
                    .find(|payload| {
                        payload["alerts"].as_array().is_some_and(|alerts| {
                            alerts.iter().any(|a| {
                                a["labels"]["canary_run"] == run_id
                                    && a["labels"]["alertname"] == alertname
                            })
                        })
                    })
                    .cloned()
            },
        )
    }
}

/// Every file of the bundle but the journal, as text.
fn artifacts_text(bundle: &Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(bundle).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() && !path.ends_with("journal.jsonl") {
            text.push_str(&String::from_utf8_lossy(&std::fs::read(&path).unwrap()));
        }
    }
    text
}

#[test]
fn a_rollback_guardrails_alert_rolls_back_and_the_rules_come_and_go() {
    let a = alerting_rig("");
    let rig = &a.rig;
    let mut run = rig.run(&[]);
    let status = rig.wait_running(&mut run, 3_000);
    let run_id = status["run_id"].as_str().unwrap().to_owned();

    // The run's rules are loaded in Prometheus, one per guardrail, labelled with the run.
    let group = a.rule_group(&run_id);
    assert_eq!(group["rules"].as_array().unwrap().len(), 4, "{group:#}");
    let ttfv = group["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["labels"]["guardrail"] == "ttfv_p95")
        .unwrap();
    assert_eq!(ttfv["labels"]["action"], "rollback", "{ttfv:#}");

    // The ttfv_p95 rule's alert, as Prometheus raises it, goes through Alertmanager to the
    // controller (the engine, reading healthy values, would not roll back by itself).
    let alert = serde_json::json!([{
        "labels": {
            "alertname": "CanaryTtfvP95",
            "canary_run": run_id,
            "guardrail": "ttfv_p95",
            "action": "rollback",
            "severity": "critical",
        },
        "annotations": {"summary": "ttfv p95 above 1500 ms on the canary"},
    }]);
    let (code, body) = http_request(
        a.alertmanager.addr,
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
        stdout.contains("ttfv_p95: Alertmanager alert CanaryTtfvP95 fired for this run"),
        "{stdout}"
    );
    assert_eq!(rig.canary_weight(), 0);
    // The escalation webhook got it too.
    a.escalated(&run_id, "CanaryTtfvP95");

    let bundle = rig.bundle(&run_id);
    assert_eq!(verify(&bundle).0, 0);
    let text = artifact_text(&bundle, "CANARY_ALERTS_");
    assert!(
        text.contains(&a.alertmanager.url()) && text.contains("ttfv_p95"),
        "{text}"
    );
    assert!(
        !text.contains(ALERT_TOKEN),
        "the callback token leaked into the evidence"
    );
    a.assert_rules_removed(&run_id);
}

#[test]
fn a_promotion_gates_alert_keeps_the_traffic_and_fails_the_gate_at_the_decision() {
    // A gate that breaches on any canary traffic: its generated rule fires in Prometheus.
    let a = alerting_rig(
        r#"
[[guardrails]]
name = "db_pool"
query = 'max(db_connection_pool_utilization)'
must = "< 0"
on_breach = "block-promotion"
"#,
    );
    let rig = &a.rig;
    let mut run = rig.run(&[]);
    let status = rig.wait_running(&mut run, 1_000);
    let run_id = status["run_id"].as_str().unwrap().to_owned();
    let group = a.rule_group(&run_id);
    assert_eq!(group["rules"].as_array().unwrap().len(), 5, "{group:#}");

    // Prometheus fires the gate's alert; Alertmanager brings it to the controller, which keeps
    // the canary's traffic and says the gate will fail.
    let reached = |s: &serde_json::Value| {
        s["events"].as_array().is_some_and(|events| {
            events.iter().any(|e| {
                e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("fired for the promotion gate db_pool"))
            })
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        let status = rig.status();
        if let Some(s) = status.as_ref().filter(|s| reached(s)) {
            break s.clone();
        }
        if std::time::Instant::now() > deadline {
            let (_, alerts) = http_get(a.prometheus.addr, "/api/v1/alerts").unwrap();
            let (_, received) = http_get(a.alertmanager.addr, "/api/v2/alerts").unwrap();
            panic!(
                "the gate's alert did not reach the controller\nstatus: {status:#?}\nPrometheus' alerts: {alerts}\nAlertmanager's alerts: {received}\nAlertmanager: {}",
                a.alertmanager.output()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status["phase"], "running", "{status:#}");
    assert_eq!(rig.canary_weight(), 5);
    a.escalated(&run_id, "CanaryDbPool");

    let (code, stdout, stderr) = finish(run);
    assert_eq!(code, 3, "{stdout}\n{stderr}");
    assert!(!stdout.contains("PROMOTE"), "{stdout}");
    // The preflight said which path guards each guardrail, and where the rules go.
    let row = |name: &str| {
        stderr
            .lines()
            .find(|l| l.contains(" guardrail ") && l.contains(&format!(" {name} ")))
            .unwrap_or_else(|| panic!("no preflight row for {name}:\n{stderr}"))
            .to_owned()
    };
    assert!(
        row("db_pool").contains(
            "guarded by both: the engine, and its alert through Alertmanager (fails the gate at the decision, no rollback)"
        ),
        "{stderr}"
    );
    assert!(
        row("ttfv_p95").contains("its alert through Alertmanager (rolls back)"),
        "{stderr}"
    );
    assert!(
        row("cross_tenant").contains("(rolls back and pages)"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "ready; the run's alert rules go into {}",
            a.rules_dir.path().display()
        )),
        "{stderr}"
    );
    assert!(
        stdout.contains(
            "db_pool: Alertmanager alert CanaryDbPool fired during the window (block-promotion: the gate fails at the decision)"
        ),
        "{stdout}"
    );
    assert_eq!(rig.canary_weight(), 0);

    // The decision, at the end of the window, carries the gate's alert; the bundle verifies
    // (its journal replays to the same decision).
    let bundle = rig.bundle(&run_id);
    let (code, report) = verify(&bundle);
    assert_eq!(code, 0, "{report}");
    let journal = std::fs::read_to_string(bundle.join("journal.jsonl")).unwrap();
    assert!(
        journal.contains(r#""event":"alert_fired","alert":"CanaryDbPool""#)
            && journal.contains(r#""guardrail":"db_pool","action":"block-promotion""#),
        "{journal}"
    );
    assert!(
        artifacts_text(&bundle).contains("the gate fails at the decision"),
        "no artifact names the gate's alert"
    );
    a.assert_rules_removed(&run_id);
}

#[test]
fn with_a_mimir_ruler_the_rules_go_into_its_namespace_for_the_run_and_out_again() {
    let ruler = canary_testkit::ruler::Ruler::start();
    let a = alerting_rig_into(Some(ruler.url()), "");
    let rig = &a.rig;
    let mut run = rig.run(&[]);
    let status = rig.wait_running(&mut run, 3_000);
    let run_id = status["run_id"].as_str().unwrap().to_owned();
    // The run's group is in the ruler, under the tenant and namespace configured, one alert
    // per guardrail, each labelled with the run.
    let group = wait_for(
        "the run's group in the ruler",
        Duration::from_secs(10),
        || {
            ruler
                .groups()
                .get(&(
                    "relay".to_owned(),
                    "canary-runs".to_owned(),
                    format!("canary-{run_id}"),
                ))
                .cloned()
        },
    );
    let rules = group["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 4, "{group:#}");
    assert!(
        rules
            .iter()
            .all(|r| r["labels"]["canary_run"] == run_id.as_str())
    );
    // Nothing went into a rules directory.
    assert_eq!(std::fs::read_dir(a.rules_dir.path()).unwrap().count(), 0);

    rig.cli(&["abort", "--reason", "ruler rehearsal over"]);
    let (code, stdout, stderr) = finish(run);
    assert_eq!(code, 3, "{stdout}\n{stderr}");
    // The group left the ruler when the rollback was verified, and the evidence says where the
    // rules were.
    assert!(ruler.groups().is_empty(), "{:?}", ruler.groups());
    let bundle = rig.bundle(&run_id);
    assert_eq!(verify(&bundle).0, 0);
    let text = artifact_text(&bundle, "CANARY_ALERTS_");
    assert!(
        text.contains(&format!("ruler {}, namespace canary-runs", ruler.url())),
        "{text}"
    );
    assert!(!text.contains(canary_testkit::ruler::TOKEN), "{text}");
}
