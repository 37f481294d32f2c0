//! `canary init` and `canary validate` as a user runs them: each error class of the
//! configuration, rendered with file:line:col and a fix (snapshot-tested), the runbook encoded
//! exactly, variables resolved from `.env.canary`, and secrets never printed; and
//! `[evidence] commit = true` committing a real run's bundle.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is a test failure

mod support;

use std::path::Path;
use std::process::{Command, Output};

/// Every variable the runbook configuration references, with a recognisable fake value.
const VARIABLES: [&str; 21] = [
    "ALERTMANAGER_TOKEN",
    "ALERTMANAGER_URL",
    "API_TOKEN_USER_1",
    "API_TOKEN_USER_2",
    "API_TOKEN_USER_3",
    "API_TOKEN_USER_4",
    "API_TOKEN_USER_5",
    "CANARY_ALERT_TOKEN",
    "CANARY_SIGNING_KEY",
    "GRAFANA_TOKEN",
    "GRAFANA_URL",
    "LB_API_KEY",
    "LB_SERVICE",
    "PAGERDUTY_ROUTING_KEY",
    "PROD_API_URL",
    "PROMETHEUS_TOKEN",
    "PROMETHEUS_URL",
    "SLACK_ENGINEERING_WEBHOOK_URL",
    "SLACK_WEBHOOK_URL",
    "SMTP_PASSWORD",
    "SMTP_URL",
];

fn value_of(name: &str) -> String {
    if name.ends_with("_URL") {
        format!("https://{}.example.invalid/api/v1", name.to_lowercase())
    } else {
        format!("sEcReT-{name}-value")
    }
}

fn canary(dir: &Path, args: &[&str], env: &[(String, String)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_canary"));
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("NO_COLOR", "1")
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn template() -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = canary(dir.path(), &["init", "--out", "-"], &[]);
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

/// Validates `text` (as `canary.toml`) without variables and returns stderr.
fn validate_errors(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("canary.toml"), text).unwrap();
    let out = canary(
        dir.path(),
        &["validate", "--no-env", "-c", "canary.toml"],
        &[],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected a failure for:\n{text}"
    );
    String::from_utf8(out.stderr).unwrap()
}

fn edit(from: &str, to: &str) -> String {
    let t = template();
    assert!(t.contains(from), "template has no {from:?}");
    t.replacen(from, to, 1)
}

#[test]
fn every_error_class_points_at_the_file_and_says_how_to_fix_it() {
    let cases: Vec<(&str, String)> = vec![
        (
            "unknown_key",
            edit(
                "evaluation_interval = \"30s\"",
                "evalution_interval = \"30s\"",
            ),
        ),
        (
            "bad_duration",
            edit(
                "evaluation_interval = \"30s\"",
                "evaluation_interval = \"30 seconds\"",
            ),
        ),
        (
            "bad_comparator",
            edit("must = \"< 1500\"", "must = \"=< 1500\""),
        ),
        ("weight_out_of_range", edit("weight = 5", "weight = 150")),
        (
            "weights_not_increasing",
            edit(
                "weight = 5\nhold = \"60m\"",
                "weight = 25\nhold = \"30m\"\n\n[[steps]]\nweight = 5\nhold = \"30m\"",
            ),
        ),
        (
            "checkpoint_past_window",
            edit(
                "checkpoints = [\"15m\", \"30m\", \"60m\"]",
                "checkpoints = [\"15m\", \"30m\", \"90m\"]",
            ),
        ),
        (
            "promql_does_not_parse",
            edit(
                "query = 'sum(increase(memory_rls_policy_errors_total[5m]))'",
                "query = 'sum(increase(memory_rls_policy_errors_total[5m])'",
            ),
        ),
        (
            "unknown_on_breach",
            edit(
                "on_breach = \"security-rollback\"",
                "on_breach = \"security-rolback\"",
            ),
        ),
        (
            "unknown_notify_topic",
            edit(
                "on = [\"breach\", \"rollback\"]",
                "on = [\"breach\", \"rolback\"]",
            ),
        ),
        (
            "duration_mismatch",
            edit("duration = \"60m\"", "duration = \"45m\""),
        ),
        (
            "bad_selector",
            edit(
                "selector = '{version=\"r1\"}'",
                "selector = 'version=\"r1\"'",
            ),
        ),
        (
            "unknown_load_target",
            edit("target = \"lb\"", "target = \"canry\""),
        ),
        (
            "evidence_commit_outside_git",
            edit("commit = false", "commit = true"),
        ),
        (
            "several_errors_at_once",
            edit("must = \"< 200\"", "must = \"fast\"").replacen(
                "check_log_interval = \"5m\"",
                "check_log_interval = \"5mins\"",
                1,
            ),
        ),
    ];
    for (name, text) in cases {
        insta::assert_snapshot!(name, validate_errors(&text));
    }
}

/// The template without any `[[guardrails]]` table.
fn without_guardrails() -> String {
    let t = template();
    let first = t.find("[[guardrails]]").unwrap();
    let after = t.find("# People.").unwrap();
    format!("{}{}", &t[..first], &t[after..])
}

#[test]
fn plans_that_cannot_fail_or_test_nothing_are_refused() {
    let cases: Vec<(&str, String)> = vec![
        ("weight_zero", edit("weight = 5", "weight = 0")),
        (
            "threshold_infinite",
            edit("must = \"< 1500\"", "must = \"< inf\""),
        ),
        ("no_guardrails", without_guardrails()),
        (
            "only_warnings",
            template()
                .replace("on_breach = \"rollback\"", "on_breach = \"warn\"")
                .replace("on_breach = \"security-rollback\"", "on_breach = \"warn\"")
                .replace("on_breach = \"block-promotion\"", "on_breach = \"warn\""),
        ),
        (
            "service_name_unsafe",
            edit("service = \"relay\"", "service = \"../relay\""),
        ),
    ];
    for (name, text) in cases {
        insta::assert_snapshot!(name, validate_errors(&text));
    }
    // Every spelling of an unbounded threshold, and every kind of unsafe service name.
    for must in ["< 1e999", ">= -inf", "<= +infinity", "> -1e400"] {
        let errors = validate_errors(&edit("must = \"< 1500\"", &format!("must = \"{must}\"")));
        assert!(errors.contains("infinite number"), "{must}: {errors}");
    }
    for service in ["a/b", "..", "nul\\u0000", ".hidden", "tab\\tname"] {
        let errors = validate_errors(&edit(
            "service = \"relay\"",
            &format!("service = \"{service}\""),
        ));
        assert!(errors.contains("cannot name files"), "{service}: {errors}");
    }
}

#[test]
fn a_file_that_is_not_utf8_is_located_and_explained() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = template().into_bytes();
    // "relay" → "rel\xe9y": a Latin-1 é on line 12, column 15 (after `service = "rel`).
    let needle = b"service = \"relay\"";
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap();
    bytes[at + 14] = 0xe9;
    std::fs::write(dir.path().join("canary.toml"), bytes).unwrap();
    let out = canary(
        dir.path(),
        &["validate", "--no-env", "-c", "canary.toml"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    insta::assert_snapshot!("not_utf8", stderr);
}

#[test]
fn every_missing_variable_is_listed_in_one_error() {
    let dir = tempfile::tempdir().unwrap();
    assert!(canary(dir.path(), &["init"], &[]).status.success());
    let set: Vec<(String, String)> = VARIABLES
        .iter()
        .filter(|v| !v.starts_with("API_TOKEN") && !v.starts_with("SLACK"))
        .map(|v| (v.to_string(), value_of(v)))
        .collect();
    let out = canary(dir.path(), &["validate", "-c", "canary.toml"], &set);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    insta::assert_snapshot!("missing_variables", stderr);
    for (_, v) in &set {
        assert!(!stderr.contains(v.as_str()), "a value leaked: {v}");
    }
}

#[test]
fn the_init_file_encodes_the_runbook_exactly() {
    let dir = tempfile::tempdir().unwrap();
    assert!(canary(dir.path(), &["init"], &[]).status.success());
    // A second init does not clobber the file.
    let again = canary(dir.path(), &["init"], &[]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));

    let env: Vec<(String, String)> = VARIABLES
        .iter()
        .map(|v| (v.to_string(), value_of(v)))
        .collect();
    let out = canary(
        dir.path(),
        &["validate", "-c", "canary.toml", "--output", "json"],
        &env,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    for (_, v) in &env {
        assert!(
            !stdout.contains(v.as_str()),
            "a value leaked into validate's output"
        );
    }
    let summary: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let vars: Vec<&str> = summary["variables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(vars, VARIABLES.to_vec());
    insta::assert_json_snapshot!("runbook_plan", summary["plan"]);

    let plan = &summary["plan"];
    assert_eq!(
        plan["steps"],
        serde_json::json!([{ "weight": 5, "hold": "1h" }])
    );
    assert_eq!(plan["arms"]["baseline"]["selector"], "{version=\"r0.5\"}");
    assert_eq!(plan["arms"]["canary"]["selector"], "{version=\"r1\"}");
    assert_eq!(plan["checkpoints"], serde_json::json!(["15m", "30m", "1h"]));
    assert_eq!(plan["check_log_interval"], "5m");
    assert_eq!(plan["burst"]["at"], "5m");
    let rules: Vec<(String, String, String, String)> = plan["guardrails"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["name"].as_str().unwrap().to_owned(),
                format!(
                    "{} {}",
                    g["must"]["op"].as_str().unwrap(),
                    g["must"]["value"]
                ),
                g["for"].as_str().unwrap().to_owned(),
                g["on_breach"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expect = [
        ("ttfv_p95", "< 1500.0", "5m", "rollback"),
        ("rls_errors", "== 0.0", "0s", "rollback"),
        ("sse_success", ">= 99.6", "5m", "rollback"),
        ("cross_tenant", "== 0.0", "0s", "security-rollback"),
        ("ann_p95", "< 200.0", "0s", "block-promotion"),
        ("db_pool", "< 80.0", "0s", "block-promotion"),
    ];
    assert_eq!(
        rules,
        expect
            .iter()
            .map(|(a, b, c, d)| (a.to_string(), b.to_string(), c.to_string(), d.to_string()))
            .collect::<Vec<_>>()
    );

    // The text summary names the burst from the runbook: 5 users × 20 requests, 100 ms pause.
    let out = canary(dir.path(), &["validate", "-c", "canary.toml"], &env);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("5 users × 20 requests, 100ms pause"),
        "{text}"
    );
    assert!(text.contains("cooldown after a rollback: 1d"), "{text}");
}

#[test]
fn variables_come_from_env_canary_with_warnings_about_its_safety() {
    let dir = tempfile::tempdir().unwrap();
    assert!(canary(dir.path(), &["init"], &[]).status.success());
    let file: String = VARIABLES
        .iter()
        .map(|v| format!("{v}={}\n", value_of(v)))
        .collect();
    let env_file = dir.path().join(".env.canary");
    std::fs::write(&env_file, &file).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&env_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let git = |args: &[&str]| {
        let ok = Command::new("git")
            .current_dir(dir.path())
            .args(args)
            .output()
            .unwrap();
        assert!(
            ok.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&ok.stderr)
        );
    };
    git(&["init", "-q"]);
    git(&["add", ".env.canary"]);

    let out = canary(dir.path(), &["validate", "-c", "canary.toml"], &[]);
    let stderr = String::from_utf8(out.stderr).unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("readable by group or others (mode 644)"),
        "{stderr}"
    );
    assert!(stderr.contains("chmod 600"), "{stderr}");
    assert!(stderr.contains("is tracked by git"), "{stderr}");
    for v in VARIABLES {
        assert!(
            !stderr.contains(&value_of(v)) && !stdout.contains(&value_of(v)),
            "{v} leaked"
        );
    }

    // The environment wins over the file; an empty value counts as missing.
    let out = canary(
        dir.path(),
        &["validate", "-c", "canary.toml"],
        &[("GRAFANA_TOKEN".into(), String::new())],
    );
    assert!(
        out.status.success(),
        "an empty environment value falls back to the file"
    );
}

#[test]
fn a_missing_file_says_how_to_create_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = canary(dir.path(), &["validate", "-c", "nope.toml"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("nope.toml: cannot read the configuration"),
        "{stderr}"
    );
    assert!(stderr.contains("canary init"), "{stderr}");
}

#[test]
fn evidence_commit_in_the_configuration_commits_the_bundle_of_a_run() {
    let rig = support::rig();
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .current_dir(rig.dir.path())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    git(&["init", "-q"]);
    git(&["config", "user.email", "canary@example.invalid"]);
    git(&["config", "user.name", "canary test"]);
    let config = rig.dir.path().join("canary.toml");
    let key = "signing_key = \"${CANARY_SIGNING_KEY}\"";
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains(key));
    std::fs::write(
        &config,
        text.replacen(key, &format!("{key}\ncommit = true"), 1),
    )
    .unwrap();

    // No `--commit`: the configuration names the repository (the one holding `evidence`).
    let mut run = rig.run(&[]);
    let status = rig.wait_running(&mut run, 3_000);
    let run_id = status["run_id"].as_str().unwrap().to_owned();
    let kill = Command::new("kill")
        .args(["-TERM", &run.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let (code, stdout, stderr) = support::finish(run);
    assert_eq!(code, 3, "{stdout}\n{stderr}");
    let log = git(&["log", "--oneline", "--name-only"]);
    assert!(
        log.contains(&format!("canary evidence: {run_id} ROLLBACK")),
        "{log}"
    );
    assert!(
        log.contains(&format!("evidence/{run_id}/manifest.sig")),
        "{log}"
    );
}

#[test]
fn the_alertmanager_route_escalates_to_the_configured_webhook_by_name() {
    let dir = tempfile::tempdir().unwrap();
    assert!(canary(dir.path(), &["init"], &[]).status.success());
    // No variable is set: the route names the webhook's variable, never its value.
    let out = canary(
        dir.path(),
        &["render", "alertmanager", "-c", "canary.toml"],
        &[],
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("canary-escalation"), "{stdout}");
    assert!(stdout.contains("${ALERT_WEBHOOK_URL}"), "{stdout}");

    let literal = edit(
        "webhook_url = \"${ALERT_WEBHOOK_URL}\"",
        "webhook_url = \"https://hooks.slack.com/services/T0/B0/x\"",
    );
    let errors = validate_errors(&literal);
    assert!(
        errors.contains("webhook_url must name a variable"),
        "{errors}"
    );
    assert!(
        !errors.contains("hooks.slack.com/services/T0/B0/x\n"),
        "{errors}"
    );
}
