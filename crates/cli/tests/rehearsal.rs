//! The production rehearsal (`canary_testkit::rehearsal`, `scripts/rehearse.sh`): `canary run`,
//! not the demo, against relay-demo r0.5 and r1 behind a real HAProxy, a real Prometheus loading
//! the run's rules, a real Alertmanager configured by `canary render alertmanager`, the Grafana
//! stand-in — with `canary init`'s template edited as a team edits it and a `.env.canary` holding
//! only the runbook's variables and what `canary init` generated. On a clock 60 times faster.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is a test failure

use std::path::{Path, PathBuf};
use std::time::Duration;

use canary_testkit::rehearsal::{
    CHANNEL_VARIABLES, INIT_VARIABLES, Lb, Options, Outcome, RUNBOOK_VARIABLES, Rehearsal,
};
use canary_testkit::wait_for;

/// Every artifact the runbook names, present in every run (placeholders where not reached).
const ARTIFACTS: [&str; 12] = [
    "CANARY_ALERTS_",
    "CANARY_DASHBOARDS_",
    "CANARY_DECISION_FINAL.txt",
    "CANARY_LB_DIFF_",
    "CANARY_LOAD_SUMMARY_",
    "CANARY_METRICS_CHECK_",
    "CANARY_SNAPSHOT_T15_",
    "CANARY_SNAPSHOT_T30_",
    "CANARY_SNAPSHOT_T60_",
    "canary_load_burst_",
    "report.html",
    "manifest.sig",
];

/// Stands the rehearsal up with `configure`d options, runs `canary run`, and checks what every
/// rehearsal must show: a finished run, a bundle `canary verify` accepts with every runbook
/// artifact, HAProxy's weights read back at 0 % or 100 %, and a `.env.canary` holding nothing
/// but the runbook's variables, what `canary init` generated and (with channels) what the
/// template says enabling them needs.
fn rehearse(configure: impl FnOnce(&mut Options)) -> (Rehearsal, Outcome, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut options = Options::new(
        PathBuf::from(env!("CARGO_BIN_EXE_canary")),
        dir.path().to_path_buf(),
    );
    configure(&mut options);
    let channels = options.channels;
    let rehearsal = Rehearsal::start(options);
    let outcome = rehearsal.run();
    assert!(
        !outcome.bundle.as_os_str().is_empty(),
        "the run did not start (exit {}):\n{}",
        outcome.code,
        outcome.stderr
    );
    let (code, verified) = rehearsal.verify(&outcome.bundle);
    assert_eq!(code, 0, "canary verify: {verified}");
    for artifact in ARTIFACTS {
        assert!(
            has_artifact(&outcome.bundle, artifact),
            "{artifact} missing from {}",
            outcome.bundle.display()
        );
    }
    assert!(
        matches!(outcome.weights, (0, 100) | (100, 0)),
        "HAProxy left the traffic split: {:?}",
        outcome.weights
    );
    for (name, _) in &rehearsal.env {
        assert!(
            RUNBOOK_VARIABLES.contains(&name.as_str())
                || INIT_VARIABLES.contains(&name.as_str())
                || (channels && CHANNEL_VARIABLES.contains(&name.as_str())),
            "{name} in .env.canary is neither the runbook's nor canary init's"
        );
    }
    // No secret of .env.canary reaches the run's output or the evidence.
    let evidence = all_text(&outcome.bundle);
    for (name, value) in &rehearsal.env {
        if name.contains("TOKEN") || name.contains("KEY") || name.contains("PASSWORD") {
            assert!(
                !outcome.stderr.contains(value.as_str()),
                "{name} in the log"
            );
            assert!(!evidence.contains(value.as_str()), "{name} in the evidence");
        }
    }
    (rehearsal, outcome, dir)
}

fn has_artifact(bundle: &Path, prefix: &str) -> bool {
    std::fs::read_dir(bundle)
        .unwrap()
        .any(|e| e.unwrap().file_name().to_string_lossy().starts_with(prefix))
}

fn artifact(bundle: &Path, prefix: &str) -> String {
    let path = std::fs::read_dir(bundle)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} in {}", bundle.display()));
    std::fs::read_to_string(path).unwrap()
}

fn all_text(bundle: &Path) -> String {
    std::fs::read_dir(bundle)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned())
        .collect()
}

#[test]
fn a_healthy_canary_behind_haproxy_is_promoted_with_every_artifact() {
    // With the template's example comparison enabled too: a canary like its baseline passes it.
    let (rehearsal, outcome, _dir) = rehearse(|o| o.compare = true);
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    assert_eq!(
        outcome.weights,
        (100, 0),
        "HAProxy: main 100 / r0.5-hotfix 0"
    );
    assert!(has_artifact(&outcome.bundle, "CANARY_PROMOTION_FINAL.txt"));
    let decision = artifact(&outcome.bundle, "CANARY_DECISION_FINAL.txt");
    assert!(decision.contains("DECISION: PROMOTE"), "{decision}");
    let comparisons = decision
        .split("COMPARISONS")
        .nth(1)
        .unwrap_or_else(|| panic!("no COMPARISONS in {decision}"));
    assert!(
        comparisons.contains("PASS    ann_p95_vs_baseline"),
        "{comparisons}"
    );
    assert!(comparisons.contains("score 100 — pass"), "{comparisons}");
    // The preflight said which path guards each guardrail: both, the rules being armed.
    assert!(
        outcome
            .stderr
            .contains("guarded by both: the engine, and its alert through Alertmanager"),
        "{}",
        outcome.stderr
    );
    // The run's dashboard went to Grafana with the runbook's panels; its rules were armed in
    // Prometheus' rules directory and are gone again.
    let dashboards = artifact(&outcome.bundle, "CANARY_DASHBOARDS_");
    assert!(dashboards.contains(rehearsal.grafana.url()), "{dashboards}");
    for panel in [
        "TTFV Protection",
        "RLS Enforcement",
        "SSE Health",
        "ANN Performance",
    ] {
        assert!(dashboards.contains(panel), "{panel}: {dashboards}");
    }
    let alerts = artifact(&outcome.bundle, "CANARY_ALERTS_");
    assert!(alerts.contains("CanaryRlsErrors"), "{alerts}");
    let rules = rehearsal.options.work.join("rules");
    assert_eq!(std::fs::read_dir(rules).unwrap().count(), 0);
}

/// A rollback guardrail's fault: ROLLBACK naming the guardrail, by whichever path acted first
/// (the engine's own evaluation or the alert through Alertmanager), recorded as such.
fn rolls_back(fault: &str, guardrail: &str, on_breach: &str) {
    let (_rehearsal, outcome, _dir) = rehearse(|o| o.fault = Some(fault.to_owned()));
    assert_eq!(outcome.code, 3, "{fault}: {}", outcome.stderr);
    assert_eq!(
        outcome.weights,
        (0, 100),
        "HAProxy: main 0 / r0.5-hotfix 100"
    );
    let decision = artifact(&outcome.bundle, "CANARY_DECISION_FINAL.txt");
    assert!(decision.contains("DECISION: ROLLBACK"), "{decision}");
    let reasons = decision
        .split("REASONS")
        .nth(1)
        .and_then(|r| r.split("GUARDRAILS").next())
        .unwrap();
    let by_engine = reasons.contains(&format!("{guardrail}: canary value"));
    let by_alert = reasons.contains(&format!("{guardrail}: Alertmanager alert"));
    assert!(by_engine || by_alert, "{fault}: {reasons}");
    assert!(reasons.contains(on_breach), "{fault}: {reasons}");
    assert!(has_artifact(&outcome.bundle, "CANARY_ROLLBACK_FINAL.txt"));
}

#[test]
fn rls_errors_roll_back_through_haproxy() {
    rolls_back("rls-errors", "rls_errors", "(rollback)");
}

#[test]
fn a_tenant_leak_is_a_security_rollback() {
    rolls_back("tenant-leak", "cross_tenant", "security-rollback");
}

#[test]
fn a_slow_ttfv_rolls_back_after_its_five_minutes() {
    rolls_back("slow-ttfv", "ttfv_p95", "for 5m");
}

#[test]
fn a_slow_ann_gate_is_not_promoted_and_its_alert_does_not_roll_back() {
    let (rehearsal, outcome, _dir) = rehearse(|o| o.fault = Some("slow-ann".into()));
    assert_eq!(outcome.code, 3, "{}", outcome.stderr);
    assert_eq!(outcome.weights, (0, 100));
    let decision = artifact(&outcome.bundle, "CANARY_DECISION_FINAL.txt");
    assert!(
        decision.contains("ann_p95: canary value") && decision.contains("at the decision"),
        "{decision}"
    );
    // The canary kept its 5 % to the end: the decision came at T+60, with the T+60 snapshot
    // taken (not a placeholder), although the gate's alert fired long before.
    let t60 = artifact(&outcome.bundle, "CANARY_SNAPSHOT_T60_");
    assert!(!t60.contains("not reached"), "{t60}");
    let escalated = rehearsal.escalations.lock().unwrap().clone();
    let fired = escalated.iter().any(|(_, body)| {
        body["alerts"].as_array().is_some_and(|alerts| {
            alerts.iter().any(|a| {
                a["labels"]["alertname"] == "CanaryAnnP95"
                    && a["labels"]["canary_run"] == outcome.run_id.as_str()
            })
        })
    });
    assert!(
        fired,
        "Alertmanager escalated no CanaryAnnP95 alert of {}: {escalated:?}",
        outcome.run_id
    );
    assert!(
        decision.contains("ann_p95: Alertmanager alert CanaryAnnP95 fired"),
        "{decision}"
    );
}

#[test]
fn a_critical_comparison_rolls_a_slow_ann_canary_back_long_before_the_gate_would() {
    // The ANN guardrail only blocks the promotion at T+60; judged against the baseline, the
    // canary's ANN p95 fails the critical comparison within a few looks and rolls back.
    let (_rehearsal, outcome, _dir) = rehearse(|o| {
        o.compare = true;
        o.fault = Some("slow-ann".into());
    });
    assert_eq!(outcome.code, 3, "{}", outcome.stderr);
    assert_eq!(outcome.weights, (0, 100));
    let decision = artifact(&outcome.bundle, "CANARY_DECISION_FINAL.txt");
    assert!(
        decision.contains("ann_p95_vs_baseline: canary higher than the baseline allows"),
        "{decision}"
    );
    assert!(
        decision.contains("HIGH    ann_p95_vs_baseline"),
        "{decision}"
    );
    // Decided inside the window: the T+60 snapshot was never reached.
    let t60 = artifact(&outcome.bundle, "CANARY_SNAPSHOT_T60_");
    assert!(t60.contains("not reached"), "{t60}");
}

#[test]
fn the_runbooks_railway_provider_rolls_back_and_pages_through_every_channel() {
    let (rehearsal, outcome, _dir) = rehearse(|o| {
        o.lb = Lb::Railway;
        o.channels = true;
        o.fault = Some("rls-errors".into());
    });
    assert_eq!(outcome.code, 3, "{}", outcome.stderr);
    // The platform CLI stand-in set HAProxy's weights: read back there, not from the CLI.
    assert_eq!(outcome.weights, (0, 100));
    // PagerDuty: triggered for the run, and resolved with the same key once the rollback was
    // verified.
    let pages = rehearsal.pagerduty.lock().unwrap().clone();
    let key = format!("canary-{}", outcome.run_id);
    let actions: Vec<&str> = pages
        .iter()
        .filter(|(_, b)| b["dedup_key"] == key.as_str())
        .filter_map(|(_, b)| b["event_action"].as_str())
        .collect();
    assert!(actions.contains(&"trigger"), "{pages:?}");
    assert!(actions.contains(&"resolve"), "{pages:?}");
    let breach = pages
        .iter()
        .find(|(_, b)| b["payload"]["custom_details"]["guardrail"] == "rls_errors")
        .unwrap_or_else(|| panic!("no page names rls_errors: {pages:?}"));
    assert!(breach.1["payload"]["custom_details"]["canary_value"].is_number());
    // Slack #canary-live heard the breach, #engineering the decision; the deployment lead got
    // the decision by email through a real SMTP server.
    let slack = rehearsal.slack.lock().unwrap().clone();
    assert!(
        slack
            .iter()
            .any(|(p, b)| p == "/services/live" && b.to_string().contains("rls_errors")),
        "{slack:?}"
    );
    assert!(
        slack
            .iter()
            .any(|(p, b)| p == "/services/engineering" && b.to_string().contains("ROLLBACK")),
        "{slack:?}"
    );
    let mail = rehearsal.smtp.as_ref().unwrap().messages();
    assert!(
        mail.iter()
            .any(|m| m["to"][0] == "deployment-lead@company.com"
                && m["data"].as_str().unwrap().contains("ROLLBACK")),
        "{mail:?}"
    );
}

#[test]
fn a_controller_killed_mid_rehearsal_is_resumed_on_its_clock_and_finishes_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options::new(
        PathBuf::from(env!("CARGO_BIN_EXE_canary")),
        dir.path().to_path_buf(),
    );
    let rehearsal = Rehearsal::start(options);
    let mut running = rehearsal.start_run();
    // The split is on HAProxy and the run has written its T+5m check: kill -9 the controller.
    let run_id = wait_for("the run to be under way", Duration::from_secs(60), || {
        let run_id = rehearsal.active_run_id()?;
        let bundle = dir.path().join("canary-evidence").join(&run_id);
        let checks = std::fs::read_dir(&bundle)
            .ok()?
            .filter_map(Result::ok)
            .find(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("CANARY_METRICS_CHECK_")
            })?;
        let text = std::fs::read_to_string(checks.path()).ok()?;
        (rehearsal.haproxy.weight("main") == 5 && text.contains("T+")).then_some(run_id)
    });
    running.kill_9();
    // HAProxy has no lease: the split stays where the dead controller left it.
    assert_eq!(rehearsal.haproxy.weight("main"), 5);

    // `canary resume` rebuilds the run from its journal on the journal's clock (time scale 60,
    // with the configuration as written) and finishes it.
    let outcome = rehearsal.finish(rehearsal.start_resume(&run_id));
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    assert_eq!(outcome.run_id, run_id);
    assert_eq!(outcome.weights, (100, 0));
    let (code, verified) = rehearsal.verify(&outcome.bundle);
    assert_eq!(code, 0, "{verified}");
    let journal = std::fs::read_to_string(outcome.bundle.join("journal.jsonl")).unwrap();
    assert!(
        journal.contains(r#"{"input":"resume""#),
        "no resume in the journal"
    );
    let decision = artifact(&outcome.bundle, "CANARY_DECISION_FINAL.txt");
    assert!(decision.contains("DECISION: PROMOTE"), "{decision}");
}

#[test]
fn a_time_scale_below_one_is_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["0.5", "0", "-3", "NaN", "inf", "sixty"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_canary"))
            .args(["run", "-c", "canary.toml"])
            .arg(format!("--time-scale={bad}"))
            .current_dir(dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {stderr}");
        assert!(stderr.contains("is not a time scale"), "{bad}: {stderr}");
        assert!(stderr.contains("at least 1"), "{bad}: {stderr}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
