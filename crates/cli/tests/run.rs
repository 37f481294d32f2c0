//! `canary run`, `canary resume`, `canary abort` and the cooldown, against real processes: two
//! relay-demo services (`canary relay-demo serve`), the proxy (`canary proxy`), background load
//! (`canary load`), all on loopback, with a 30-second plan.
//!
//! - `kill -9` of the controller mid-run: the proxy's lease returns traffic to the baseline by
//!   itself; `canary resume` replays the journal, re-applies the split and completes the run
//!   with a bundle that verifies.
//! - `canary abort` rolls back and records the operator; the cooldown then refuses a new run
//!   until it is overridden, and the override is recorded in the evidence.
//! - With `[grafana]` (a stand-in for its HTTP API), the run's dashboard is pushed and annotated
//!   at the start, each checkpoint and the decision.
//! - Notifications reach the channels subscribed to their kind: a rollback verdict goes to
//!   `decision`, the verified return to the baseline to `rollback`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is a test failure

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use canary_testkit::grafana::{Grafana, TOKEN};
use canary_testkit::wait_for;
use support::{
    artifact_text, canary, embedded_metrics, finish, rig, rig_with, verify, webhook_receiver,
};

#[test]
fn kill_9_mid_run_falls_back_by_lease_and_resume_completes_the_run() {
    // The run lock's lease: `canary resume` takes a dead controller's run over once it lapses.
    let rig = rig_with(embedded_metrics, |_, _| "[state]\nlease = \"3s\"\n".into());
    let mut run = rig.run(&[]);
    let status = rig.wait_running(&mut run, 12_000);
    let run_id = status["run_id"].as_str().unwrap().to_owned();
    assert_eq!(rig.canary_weight(), 5, "the run set 5 % before the kill");

    // kill -9: no rollback by the controller; the proxy's dead man's switch must act.
    run.kill().unwrap();
    let killed = Instant::now();
    let _ = run.wait();
    wait_for("the lease to lapse", Duration::from_secs(10), || {
        (rig.canary_weight() == 0).then_some(())
    });
    let fell_back = killed.elapsed();
    assert!(
        fell_back < Duration::from_secs(3) + Duration::from_millis(1500),
        "fell back after {fell_back:?}"
    );

    // A configuration that is not the run's is refused, naming what differs: the journal's
    // plan is the truth.
    let config = std::fs::read_to_string(rig.dir.path().join("canary.toml")).unwrap();
    let other = config
        .replacen("must = \"< 1500\"", "must = \"< 2000\"", 1)
        .replacen("name = \"rls_errors\"", "name = \"rls_policy\"", 1);
    std::fs::write(rig.dir.path().join("other.toml"), other).unwrap();
    let out = canary()
        .current_dir(rig.dir.path())
        .args(["resume", &run_id, "-c", "other.toml"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for difference in [
        "guardrails in the journal but not in the configuration: rls_errors",
        "guardrails in the configuration but not in the journal: rls_policy",
        "guardrail ttfv_p95.must.value: 1500.0 in the journal, 2000.0 in the configuration",
    ] {
        assert!(stderr.contains(difference), "{stderr}");
    }
    assert_eq!(
        rig.canary_weight(),
        0,
        "a refused resume touches no traffic"
    );

    // Resume from the journal: the split is re-applied and the run completes.
    let resumed = canary()
        .current_dir(rig.dir.path())
        .args(["resume", &run_id, "-c", "canary.toml"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The live page's charts start with the rounds before the kill, read from the journal.
    let before_kill = status["elapsed_ms"].as_i64().unwrap();
    let charted = wait_for("the resumed run's status", Duration::from_secs(30), || {
        let s = rig.status()?;
        (s["run_id"] == run_id.as_str() && s["phase"] != "starting").then_some(s)
    });
    let ttfv = charted["guardrails"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "ttfv_p95")
        .unwrap();
    let early = ttfv["series"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["elapsed_ms"].as_i64().unwrap() <= before_kill)
        .count();
    assert!(
        early >= 5,
        "charted before the kill: {early} points: {ttfv}"
    );
    let out = resumed.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "resume:\n{stdout}\n{stderr}");
    assert!(stdout.contains("PROMOTE"), "{stdout}");
    let bundle = rig.bundle(&run_id);
    let (code, report) = verify(&bundle);
    assert_eq!(code, 0, "{report}");
    let diff = artifact_text(&bundle, "CANARY_LB_DIFF_");
    // 5 % at the start, 5 % again on resume (from 0 after the lease lapsed), then 100 %.
    assert_eq!(diff.matches("== change").count(), 3, "{diff}");
    assert!(diff.contains("0 % -> 5 %"), "{diff}");
    assert!(diff.contains("-> 100 % (promote)"), "{diff}");
    assert_eq!(rig.canary_weight(), 100);
}

#[test]
fn abort_rolls_back_and_the_cooldown_holds_until_overridden() {
    let rig = rig();
    let mut run = rig.run(&[]);
    rig.wait_running(&mut run, 3_000);
    let abort = canary()
        .current_dir(rig.dir.path())
        .args([
            "abort",
            "-c",
            "canary.toml",
            "--reason",
            "pager storm in eu-west",
        ])
        .output()
        .unwrap();
    assert!(
        abort.status.success(),
        "{}",
        String::from_utf8_lossy(&abort.stderr)
    );
    let (code, stdout, stderr) = finish(run);
    assert_eq!(code, 3, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("aborted by") && stdout.contains("pager storm in eu-west"),
        "{stdout}"
    );
    assert_eq!(rig.canary_weight(), 0);

    // The cooldown refuses the next run before touching anything.
    let (code, _, stderr) = finish(rig.run(&[]));
    assert_eq!(code, 1);
    assert!(stderr.contains("cooldown"), "{stderr}");
    assert_eq!(rig.canary_weight(), 0);

    // Overridden with a reason: the run goes ahead and the evidence records why.
    let mut run = rig.run(&[
        "--override-cooldown",
        "--reason",
        "fix verified in staging (INC-42)",
    ]);
    let status = rig.wait_running(&mut run, 2_000);
    let run_id = status["run_id"].as_str().unwrap().to_owned();
    let abort = canary()
        .current_dir(rig.dir.path())
        .args(["abort", "-c", "canary.toml"])
        .output()
        .unwrap();
    assert!(abort.status.success());
    let (code, _, _) = finish(run);
    assert_eq!(code, 3);
    let decision =
        std::fs::read_to_string(rig.bundle(&run_id).join("CANARY_DECISION_FINAL.txt")).unwrap();
    assert!(
        decision.contains("fix verified in staging (INC-42)"),
        "{decision}"
    );
    let (code, report) = verify(&rig.bundle(&run_id));
    assert_eq!(code, 0, "{report}");
    // What verified, for people: the verdict, who, and the recorded override.
    assert!(
        report.contains("verdict      ROLLBACK by ")
            && report.contains("cooldown     overridden: fix verified in staging (INC-42)")
            && !report.contains("VerifyReport"),
        "{report}"
    );
}

#[test]
fn traffic_show_and_set_go_through_the_configured_load_balancer() {
    let rig = rig();
    let traffic = |args: &[&str]| rig.cli(&[&["traffic"], args, &["-c", "canary.toml"]].concat());
    assert!(traffic(&["show"]).contains("canary 0 % / baseline 100 %"));
    assert!(traffic(&["set", "30"]).contains("canary 30 % / baseline 70 %, verified"));
    assert_eq!(rig.canary_weight(), 30);
    let json: serde_json::Value =
        serde_json::from_str(&traffic(&["show", "--output", "json"])).unwrap();
    assert_eq!(json["canary"], 30);
    assert_eq!(json["provider"], "embedded");
    assert!(
        !json.to_string().contains(support::PROXY_TOKEN),
        "the admin token leaked"
    );
    traffic(&["set", "0"]);
    assert_eq!(rig.canary_weight(), 0);
}

#[test]
fn sigterm_rolls_back_writes_the_evidence_and_commits_it() {
    let rig = rig();
    rig.git_init();
    let git = |args: &[&str]| rig.git(args);
    let mut run = rig.run(&["--commit", "."]);
    let status = rig.wait_running(&mut run, 3_000);
    let run_id = status["run_id"].as_str().unwrap().to_owned();
    let kill = Command::new("kill")
        .args(["-TERM", &run.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let (code, stdout, stderr) = finish(run);
    assert_eq!(code, 3, "{stdout}\n{stderr}");
    assert!(stdout.contains("controller received SIGTERM"), "{stdout}");
    assert_eq!(rig.canary_weight(), 0);
    assert_eq!(verify(&rig.bundle(&run_id)).0, 0);
    let log = git(&["log", "--oneline", "--name-only"]);
    assert!(
        log.contains(&format!("canary evidence: {run_id} ROLLBACK")),
        "{log}"
    );
    assert!(
        log.contains("CANARY_ROLLBACK_FINAL.txt") && log.contains("manifest.sig"),
        "{log}"
    );
}

#[test]
fn manual_approval_waits_for_canary_approve_and_records_the_approver() {
    let rig = rig();
    let config = rig.dir.path().join("canary.toml");
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "state_dir = \"state\"",
        "state_dir = \"state\"\napproval = \"manual\"\napproval_timeout = \"1m\"",
        1,
    );
    std::fs::write(&config, text).unwrap();
    let mut run = rig.run(&[]);
    rig.wait_running(&mut run, 1_000);
    // Approving early does nothing: the decision comes at the end of the window.
    let approve = || {
        canary()
            .current_dir(rig.dir.path())
            .env("USER", "release-lead")
            .args(["approve", "-c", "canary.toml"])
            .output()
            .unwrap()
    };
    assert!(approve().status.success());
    let status = wait_for(
        "the run to wait for approval",
        Duration::from_secs(60),
        || rig.status().filter(|s| s["phase"] == "awaiting-approval"),
    );
    assert_eq!(status["canary_weight"], 5, "the split holds while waiting");
    // `canary status` reads the same status back, as text and as JSON.
    let canary_status = |args: &[&str]| rig.cli(&[&["status", "-c", "canary.toml"], args].concat());
    let text = canary_status(&[]);
    assert!(
        text.contains(": awaiting-approval — T+") && text.contains("canary weight 5 %"),
        "{text}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&canary_status(&["--output", "json"])).unwrap();
    assert_eq!(json["phase"], "awaiting-approval", "{json}");
    assert_eq!(json["run_id"], status["run_id"], "{json}");
    assert!(approve().status.success());
    let (code, stdout, stderr) = finish(run);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let run_id = status["run_id"].as_str().unwrap();
    let decision =
        std::fs::read_to_string(rig.bundle(run_id).join("CANARY_DECISION_FINAL.txt")).unwrap();
    assert!(decision.contains("release-lead@"), "{decision}");
    assert_eq!(rig.canary_weight(), 100);
}

#[test]
fn the_dashboard_goes_to_grafana_and_is_annotated_at_start_checkpoints_and_decision() {
    let grafana = Grafana::start();
    let rig = rig_with(embedded_metrics, |_, _| {
        format!(
            "[grafana]\nurl = \"{}\"\ntoken = \"${{GRAFANA_TOKEN}}\"\n",
            grafana.url()
        )
    });
    let env = rig.dir.path().join(".env.canary");
    let mut text = std::fs::read_to_string(&env).unwrap();
    text.push_str(&format!("GRAFANA_TOKEN={TOKEN}\n"));
    std::fs::write(&env, text).unwrap();

    let mut run = rig.run(&[]);
    let status = rig.wait_running(&mut run, 1_000);
    let run_id = status["run_id"].as_str().unwrap().to_owned();
    let (code, stdout, stderr) = finish(run);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let state = grafana.state();
    assert_eq!(state.dashboards.len(), 1, "one dashboard per run");
    let uid = state.dashboards[0].1.clone();
    // They are sent concurrently (the last checkpoint and the decision fall on the same round),
    // so they arrive in any order: Grafana places them by their time.
    let mut marks: Vec<(i64, &str, &str)> = state
        .annotations
        .iter()
        .map(|a| {
            assert_eq!(a["dashboardUID"], uid.as_str());
            assert!(
                a["tags"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|t| *t == format!("canary-run:{run_id}"))
            );
            (
                a["time"].as_i64().unwrap(),
                a["tags"][2].as_str().unwrap(),
                a["text"].as_str().unwrap(),
            )
        })
        .collect();
    // Kinds in their natural order break ties of time (a checkpoint before the decision).
    let rank = |kind: &str| {
        ["start", "checkpoint", "decision"]
            .iter()
            .position(|k| *k == kind)
    };
    marks.sort_by_key(|(time, kind, _)| (*time, rank(kind)));
    let kinds: Vec<&str> = marks.iter().map(|m| m.1).collect();
    assert_eq!(
        kinds,
        [
            "start",
            "checkpoint",
            "checkpoint",
            "checkpoint",
            "decision"
        ],
        "{marks:?}"
    );
    let mut checkpoints: Vec<&str> = marks[1..4].iter().map(|m| m.2).collect();
    assert!(
        checkpoints.iter().all(|t| t.ends_with(" snapshot")),
        "{checkpoints:?}"
    );
    checkpoints.dedup();
    assert_eq!(checkpoints.len(), 3, "one annotation per checkpoint");
    assert!(marks[4].2.starts_with("PROMOTE"), "{marks:?}");
    // The artifact names the dashboard, and the token is nowhere in the bundle.
    let bundle = rig.bundle(&run_id);
    let mut found = false;
    for entry in std::fs::read_dir(&bundle).unwrap() {
        let path = entry.unwrap().path();
        let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
        assert!(
            !text.contains(TOKEN),
            "{} holds the Grafana token",
            path.display()
        );
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("CANARY_DASHBOARDS_") {
            assert!(
                text.contains(&uid) && text.contains(grafana.url()),
                "{text}"
            );
            found = true;
        }
    }
    assert!(found, "no CANARY_DASHBOARDS artifact");
    assert_eq!(verify(&bundle).0, 0);
}

#[test]
fn a_rollback_reaches_decision_and_rollback_subscribers_each_with_its_kind() {
    let (hook, received) = webhook_receiver();
    let rig = rig_with(embedded_metrics, |_, _| {
        format!(
            "[[notify]]\nkind = \"webhook\"\nurl = \"{hook}/decision\"\non = [\"decision\"]\n\n\
             [[notify]]\nkind = \"webhook\"\nurl = \"{hook}/rollback\"\non = [\"rollback\"]\n\n\
             [[notify]]\nkind = \"webhook\"\nurl = \"{hook}/start\"\non = [\"start\"]\n"
        )
    });
    let mut run = rig.run(&[]);
    rig.wait_running(&mut run, 2_000);
    let abort = canary()
        .current_dir(rig.dir.path())
        .args(["abort", "-c", "canary.toml", "--reason", "bad deploy"])
        .output()
        .unwrap();
    assert!(abort.status.success());
    let (code, stdout, stderr) = finish(run);
    assert_eq!(code, 3, "{stdout}\n{stderr}");

    // The controller waits for deliveries before it exits: everything has arrived.
    let received = received.lock().unwrap();
    let at = |path: &str| -> Vec<&serde_json::Value> {
        received
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, j)| j)
            .collect()
    };
    let text = |j: &serde_json::Value| j.to_string();
    let start = at("/start");
    assert_eq!(start.len(), 1, "{received:?}");
    assert_eq!(start[0]["kind"], "start");
    let decision = at("/decision");
    assert_eq!(decision.len(), 1, "{received:?}");
    assert_eq!(decision[0]["kind"], "decision");
    assert!(text(decision[0]).contains("ROLLBACK"), "{}", decision[0]);
    // Rollback subscribers hear it start (why: an operator's abort is a warning, not a page)
    // and end verified, which resolves the run's incidents.
    let rollback = at("/rollback");
    assert_eq!(rollback.len(), 2, "{received:?}");
    assert!(rollback.iter().all(|r| r["kind"] == "rollback"));
    assert!(
        text(rollback[0]).contains("ROLLBACK: rolling back")
            && text(rollback[0]).contains("bad deploy"),
        "{}",
        rollback[0]
    );
    assert_eq!(rollback[0]["severity"], "warning");
    assert!(
        text(rollback[1]).contains("traffic back on the baseline"),
        "{}",
        rollback[1]
    );
    assert_eq!(rollback[1]["incident"]["state"], "resolved");
}

/// The bundle's artifact kinds: names with their timestamps and checkpoint minutes taken out.
fn artifact_kinds(bundle: &std::path::Path) -> std::collections::BTreeSet<String> {
    std::fs::read_dir(bundle)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .map(|name| {
            let mut kind = String::new();
            let mut chars = name.chars().peekable();
            while let Some(c) = chars.next() {
                if c.is_ascii_digit() {
                    while chars.peek().is_some_and(|c| c.is_ascii_alphanumeric()) {
                        chars.next();
                    }
                    kind.push('#');
                } else {
                    kind.push(c);
                }
            }
            kind
        })
        .collect()
}

/// `canary demo` is `canary run` on settings it writes itself: a run configured by hand, as a
/// team would, against the same kind of services leaves the same artifacts, preflight and
/// arming behind.
#[test]
fn a_run_configured_by_hand_and_the_demo_go_through_one_path() {
    let demo_dir = tempfile::tempdir().unwrap();
    let demo = canary()
        .current_dir(demo_dir.path())
        .args(["demo", "--output", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let rig = rig();
    let (code, stdout, run_stderr) = finish(rig.run(&[]));
    assert_eq!(code, 0, "{stdout}\n{run_stderr}");
    let run_id = stdout.split_whitespace().next().unwrap();
    let run_bundle = rig.bundle(run_id);
    let (code, stdout, demo_stderr) = finish(demo);
    assert_eq!(code, 0, "{stdout}\n{demo_stderr}");
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let demo_bundle = demo_dir.path().join(summary["bundle"].as_str().unwrap());

    assert_eq!(artifact_kinds(&run_bundle), artifact_kinds(&demo_bundle));
    for stderr in [&run_stderr, &demo_stderr] {
        for check in [
            "credentials",
            "signing key",
            "load balancer",
            "metrics",
            "api token",
            "guardrail",
            "cooldown",
        ] {
            assert!(
                stderr.contains(&format!("PASS  {check}")),
                "no passed {check} check in the preflight:\n{stderr}"
            );
        }
    }
    for bundle in [&run_bundle, &demo_bundle] {
        assert!(
            artifact_text(bundle, "CANARY_DASHBOARDS_")
                .contains("the controller served the live dashboard")
        );
        assert!(
            artifact_text(bundle, "CANARY_ALERTS_")
                .contains("the engine evaluated every guardrail itself")
        );
        let probes = artifact_text(bundle, "CANARY_ISOLATION_PROBES_");
        assert!(probes.contains("\"verdict\""), "{probes}");
        assert_eq!(verify(bundle).0, 0);
    }
}

/// Behind a load balancer that reports nothing about the arms (a hosting platform's CLI through
/// the `command` provider), the canary's own health check still catches it going away: the run
/// rolls back at once, naming the check, with the split read back at 0 %.
#[test]
fn a_canary_that_dies_behind_a_command_provider_rolls_back_by_its_health_check() {
    let mut rig = rig();
    let config = std::fs::read_to_string(rig.dir.path().join("canary.toml")).unwrap();
    let traffic = config
        .split("[traffic]")
        .nth(1)
        .and_then(|rest| rest.split("\n\n").next())
        .unwrap();
    let platform = r#"
provider = "command"
set = "echo {canary} > split.txt"
verify = "cat split.txt"
verify_regex = '^(?P<canary>\d+)'
timeout = "5s""#;
    std::fs::write(
        rig.dir.path().join("platform.toml"),
        config.replacen(traffic, platform, 1),
    )
    .unwrap();
    std::fs::write(rig.dir.path().join("split.txt"), "0\n").unwrap();
    let run = canary()
        .current_dir(rig.dir.path())
        .args(["run", "-c", "platform.toml"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the split at 5 %", Duration::from_secs(60), || {
        let split = std::fs::read_to_string(rig.dir.path().join("split.txt")).ok()?;
        (split.trim() == "5").then_some(())
    });
    rig.stop_canary();
    let (code, stdout, stderr) = finish(run);
    assert_eq!(code, 3, "{stdout}\n{stderr}");
    assert!(stdout.contains("canary unhealthy"), "{stdout}");
    assert!(
        stdout.contains("/healthz"),
        "the reason names the check: {stdout}"
    );
    let split = std::fs::read_to_string(rig.dir.path().join("split.txt")).unwrap();
    assert_eq!(split.trim(), "0");
}

#[test]
fn a_run_that_fails_before_touching_traffic_gives_the_service_back_at_once() {
    let rig = rig();
    // The evidence directory cannot be made (a file is in its place): the run fails after
    // taking the service's lock and before touching traffic.
    let evidence = rig.dir.path().join("evidence");
    std::fs::write(&evidence, "not a directory").unwrap();
    let (code, _, stderr) = finish(rig.run(&[]));
    assert_eq!(code, 1, "{stderr}");
    assert!(
        !stderr.contains("preflight failed"),
        "it failed after taking the lock: {stderr}"
    );
    assert!(stderr.contains("evidence"), "{stderr}");
    assert_eq!(rig.canary_weight(), 0);
    // At once, not after the 30 s lease: the next run is not refused by that lock.
    std::fs::remove_file(&evidence).unwrap();
    let mut run = rig.run(&[]);
    let status = rig.wait_running(&mut run, 1_000);
    assert!(status["run_id"].as_str().is_some());
    rig.cli(&["abort", "-c", "canary.toml", "--reason", "test over"]);
    let (code, _, stderr) = finish(run);
    assert_eq!(code, 3, "{stderr}");
    assert!(!stderr.contains("is being canaried by"), "{stderr}");
}

#[test]
fn a_guardrail_without_baseline_data_fails_the_preflight_after_reading_it_again() {
    let rig = rig();
    let path = rig.dir.path().join("canary.toml");
    let config = std::fs::read_to_string(&path).unwrap();
    let misspelt = config.replacen(
        "memory_rls_policy_errors_total",
        "memory_rls_policy_error_total",
        1,
    );
    assert_ne!(
        config, misspelt,
        "the rig's configuration has the runbook's RLS query"
    );
    std::fs::write(&path, misspelt).unwrap();
    let (code, _, stderr) = finish(rig.run(&[]));
    assert_eq!(code, 1, "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("FAIL") && l.contains("rls_errors"))
        .unwrap_or_else(|| panic!("no failed rls_errors row: {stderr}"));
    // Read more than once, so a window that was empty for a moment does not fail a run, and
    // the line still says what to check.
    assert!(
        line.contains("no data for the baseline (read 3 times"),
        "{line}"
    );
    assert!(line.contains("check the metric names"), "{line}");
    assert!(stderr.contains("preflight failed"), "{stderr}");
    assert_eq!(rig.canary_weight(), 0);
}
