//! `canary init` and `canary validate` as a user runs them: each error class of the
//! configuration, rendered with file:line:col and a fix (snapshot-tested), the runbook encoded
//! exactly, variables resolved from `.env.canary`, and secrets never printed; and
//! `[evidence] commit = true` committing a real run's bundle.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is a test failure

mod support;

use std::path::Path;
use std::process::{Command, Output};

/// Every variable the runbook configuration references, with a recognisable fake value.
const VARIABLES: [&str; 22] = [
    "ALERTMANAGER_TOKEN",
    "ALERTMANAGER_URL",
    "API_TOKEN_USER_1",
    "API_TOKEN_USER_2",
    "API_TOKEN_USER_3",
    "API_TOKEN_USER_4",
    "API_TOKEN_USER_5",
    "CANARY_ALERT_TOKEN",
    "CANARY_DURATION_MINUTES",
    "CANARY_ROLLBACK_THRESHOLD_SSE_PERCENT",
    "CANARY_ROLLBACK_THRESHOLD_TTFV_MS",
    "CANARY_SIGNING_KEY",
    "CANARY_TRAFFIC_NEW",
    "CANARY_TRAFFIC_OLD",
    "GRAFANA_TOKEN",
    "GRAFANA_URL",
    "LB_API_KEY",
    "LB_PROVIDER",
    "LB_SERVICE",
    "PROD_API_URL",
    "PROMETHEUS_TOKEN",
    "PROMETHEUS_URL",
];

/// The runbook's `.env.canary`, exactly as its "Credential Staging" step writes it.
const RUNBOOK_ENV_CANARY: &str = "# Load Balancer
LB_PROVIDER=railway
LB_API_KEY=your_lb_token_here
LB_SERVICE=relay

# Prometheus
PROMETHEUS_URL=https://prometheus.prod.internal/api/v1
PROMETHEUS_TOKEN=your_prometheus_token_here

# Grafana
GRAFANA_URL=https://grafana.prod.internal
GRAFANA_TOKEN=your_grafana_token_here

# Alertmanager
ALERTMANAGER_URL=https://alertmanager.prod.internal
ALERTMANAGER_TOKEN=your_alertmanager_token_here
ALERT_WEBHOOK_URL=https://your-webhook-endpoint.com/alerts

# Production API
PROD_API_URL=https://relay.production.com
API_TOKEN_USER_1=bearer_token_user_1
API_TOKEN_USER_2=bearer_token_user_2
API_TOKEN_USER_3=bearer_token_user_3
API_TOKEN_USER_4=bearer_token_user_4
API_TOKEN_USER_5=bearer_token_user_5

# Canary Configuration
CANARY_TRAFFIC_NEW=5
CANARY_TRAFFIC_OLD=95
CANARY_DURATION_MINUTES=60
CANARY_ROLLBACK_THRESHOLD_TTFV_MS=1500
CANARY_ROLLBACK_THRESHOLD_SSE_PERCENT=99.6

";

/// A recognisable fake value for a credential; the runbook's value for its canary settings.
fn value_of(name: &str) -> String {
    let runbook = RUNBOOK_ENV_CANARY
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix('='));
    match runbook {
        Some(value) if name.starts_with("CANARY_") || name == "LB_PROVIDER" => value.to_owned(),
        _ if name.ends_with("_URL") => {
            format!("https://{}.example.invalid/api/v1", name.to_lowercase())
        }
        _ => format!("sEcReT-{name}-value"),
    }
}

/// Whether `value_of(name)` is a fake secret whose value must never be printed.
fn is_secret(name: &str) -> bool {
    value_of(name).starts_with("sEcReT")
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

/// The template's traffic plan: one step, from the runbook's variables.
const STEP: &str = "weight = \"${CANARY_TRAFFIC_NEW:-5}\"\nbaseline_weight = \"${CANARY_TRAFFIC_OLD:-95}\"\nhold = \"${CANARY_DURATION_MINUTES:-60}m\"";
/// The template's TTFV threshold.
const TTFV_MUST: &str = "must = \"< ${CANARY_ROLLBACK_THRESHOLD_TTFV_MS:-1500}\"";

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
        ("bad_comparator", edit(TTFV_MUST, "must = \"=< 1500\"")),
        (
            "unit_not_a_label",
            edit("unit = \"ms\"\nmust = \"< $", "unit = \"\"\nmust = \"< $"),
        ),
        (
            "weight_out_of_range",
            edit(STEP, "weight = 150\nhold = \"60m\""),
        ),
        (
            "weights_not_increasing",
            edit(
                STEP,
                "weight = 25\nhold = \"30m\"\n\n[[steps]]\nweight = 5\nhold = \"30m\"",
            ),
        ),
        (
            "checkpoint_past_window",
            edit(
                "checkpoints = [\"15m\", \"30m\", \"${CANARY_DURATION_MINUTES:-60}m\"]",
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
            template()
                + "\n[[notify]]\nkind = \"webhook\"\nurl = \"${ALERT_WEBHOOK_URL}\"\non = [\"breach\", \"rolback\"]\n",
        ),
        (
            "duration_mismatch",
            edit(
                "duration = \"${CANARY_DURATION_MINUTES:-60}m\"",
                "duration = \"45m\"",
            ),
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
        ("weight_zero", edit(STEP, "weight = 0\nhold = \"60m\"")),
        ("threshold_infinite", edit(TTFV_MUST, "must = \"< inf\"")),
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
        let errors = validate_errors(&edit(TTFV_MUST, &format!("must = \"{must}\"")));
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
        .filter(|v| !v.starts_with("API_TOKEN") && !v.starts_with("LB_"))
        .map(|v| (v.to_string(), value_of(v)))
        .collect();
    let out = canary(dir.path(), &["validate", "-c", "canary.toml"], &set);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    insta::assert_snapshot!("missing_variables", stderr);
    for (name, v) in &set {
        assert!(
            !is_secret(name) || !stderr.contains(v.as_str()),
            "a value leaked: {v}"
        );
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
    for (name, v) in &env {
        assert!(
            !is_secret(name) || !stdout.contains(v.as_str()),
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
        ("rerank_skips", "< 1.0", "0s", "warn"),
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
    // `canary init` had git ignore it: someone adds it anyway.
    git(&["add", "-f", ".env.canary"]);

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
    for v in VARIABLES.into_iter().filter(|v| is_secret(v)) {
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
    rig.git_init();
    let git = |args: &[&str]| rig.git(args);
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

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The runbook's `.env.canary` and nothing else, plus what `canary init` generates: the run
/// validates, with the runbook's plan. `init` generates the signing key and the callback token
/// once, says so, and keeps what canary writes out of git without repeating a line.
#[test]
fn the_runbooks_env_file_and_what_init_generates_validate() {
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join(".env.canary");
    std::fs::write(&env_file, RUNBOOK_ENV_CANARY).unwrap();
    // The runbook's own `echo ".env.canary" >> .gitignore`.
    std::fs::write(dir.path().join(".gitignore"), "target\n.env.canary\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&env_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let init = canary(dir.path(), &["init"], &[]);
    assert!(init.status.success());
    let said = String::from_utf8(init.stderr).unwrap();
    assert!(
        said.contains("generated the evidence signing key as CANARY_SIGNING_KEY"),
        "{said}"
    );
    assert!(
        said.contains("generated the Alertmanager callback token as CANARY_ALERT_TOKEN"),
        "{said}"
    );
    assert!(
        said.contains("added .canary/, canary-evidence/ to"),
        "{said}"
    );

    let staged = std::fs::read_to_string(&env_file).unwrap();
    assert!(
        staged.starts_with(RUNBOOK_ENV_CANARY),
        "the runbook's lines are kept"
    );
    let generated: Vec<&str> = staged[RUNBOOK_ENV_CANARY.len()..]
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    assert_eq!(generated, ["CANARY_SIGNING_KEY", "CANARY_ALERT_TOKEN"]);
    for line in staged
        .lines()
        .filter(|l| l.starts_with("CANARY_SIGNING_KEY="))
    {
        assert!(
            !said.contains(&line["CANARY_SIGNING_KEY=".len()..]),
            "the key was printed"
        );
    }

    let out = canary(
        dir.path(),
        &["validate", "-c", "canary.toml", "--output", "json"],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("readable by group"), "{stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        summary["plan"]["steps"],
        serde_json::json!([{ "weight": 5, "hold": "1h" }])
    );

    // Again: nothing generated twice, no line repeated.
    let again = canary(dir.path(), &["init", "--force"], &[]);
    let said = String::from_utf8(again.stderr).unwrap();
    assert!(!said.contains("generated"), "{said}");
    assert!(!said.contains("added"), "{said}");
    assert_eq!(std::fs::read_to_string(&env_file).unwrap(), staged);
    assert_eq!(
        std::fs::read_to_string(dir.path().join(".gitignore")).unwrap(),
        "target\n.env.canary\n# canary: credentials, run state and evidence bundles\n.canary/\ncanary-evidence/\n"
    );

    // The runbook's `cat > .env.canary` after `canary init` loses what init generated: the
    // error says how to make each again.
    std::fs::write(&env_file, RUNBOOK_ENV_CANARY).unwrap();
    let out = canary(dir.path(), &["validate", "-c", "canary.toml"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("2 variables are not set"), "{stderr}");
    assert!(
        stderr.contains("`canary keygen >> .env.canary`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("CANARY_ALERT_TOKEN: any long random string"),
        "{stderr}"
    );

    // In an empty directory, the file is created readable by its owner only, and git ignores
    // everything canary writes there.
    let fresh = tempfile::tempdir().unwrap();
    assert!(canary(fresh.path(), &["init"], &[]).status.success());
    #[cfg(unix)]
    assert_eq!(mode(&fresh.path().join(".env.canary")), 0o600);
    let git = |args: &[&str]| {
        Command::new("git")
            .current_dir(fresh.path())
            .args(args)
            .output()
            .unwrap()
    };
    assert!(git(&["init", "-q"]).status.success());
    for written in [
        ".env.canary",
        ".canary/history.db",
        "canary-evidence/run/manifest.json",
    ] {
        let ignored = git(&["check-ignore", "-q", written]);
        assert!(ignored.status.success(), "{written} is not ignored");
    }
    let ignored = git(&["check-ignore", "-q", "canary.toml"]);
    assert!(
        !ignored.status.success(),
        "the configuration itself is not ignored"
    );
}

/// The runbook's canary settings in `.env.canary` drive the plan: split, window, snapshots,
/// thresholds, provider. A bad value is reported where it is used, naming its variable.
#[test]
fn the_runbooks_canary_variables_drive_the_plan_and_are_checked_where_used() {
    let dir = tempfile::tempdir().unwrap();
    assert!(canary(dir.path(), &["init"], &[]).status.success());
    let generated = std::fs::read_to_string(dir.path().join(".env.canary")).unwrap();
    let run = |edits: &[(&str, &str)]| {
        let mut env = RUNBOOK_ENV_CANARY.to_owned();
        for (from, to) in edits {
            assert!(env.contains(from), "{from}");
            env = env.replacen(from, to, 1);
        }
        std::fs::write(dir.path().join(".env.canary"), env + &generated).unwrap();
        canary(
            dir.path(),
            &["validate", "-c", "canary.toml", "--output", "json"],
            &[],
        )
    };

    let out = run(&[
        ("CANARY_TRAFFIC_NEW=5", "CANARY_TRAFFIC_NEW=10"),
        ("CANARY_TRAFFIC_OLD=95", "CANARY_TRAFFIC_OLD=90"),
        ("CANARY_DURATION_MINUTES=60", "CANARY_DURATION_MINUTES=30"),
        ("THRESHOLD_TTFV_MS=1500", "THRESHOLD_TTFV_MS=1200"),
        ("THRESHOLD_SSE_PERCENT=99.6", "THRESHOLD_SSE_PERCENT=99.9"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["plan"].clone();
    assert_eq!(
        plan["steps"],
        serde_json::json!([{ "weight": 10, "hold": "30m" }])
    );
    assert_eq!(plan["checkpoints"], serde_json::json!(["15m", "30m"]));
    assert_eq!(plan["guardrails"][0]["must"]["value"], 1200.0);
    assert_eq!(plan["guardrails"][2]["must"]["value"], 99.9);

    // Each bad value, at the place it is used, as a literal would be, naming its variable.
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (
            "variable_not_a_number",
            vec![("CANARY_TRAFFIC_NEW=5", "CANARY_TRAFFIC_NEW=five")],
        ),
        (
            "variable_split_not_100",
            vec![("CANARY_TRAFFIC_NEW=5", "CANARY_TRAFFIC_NEW=10")],
        ),
        (
            "variable_not_minutes",
            vec![("CANARY_DURATION_MINUTES=60", "CANARY_DURATION_MINUTES=1h")],
        ),
        (
            "variable_not_a_threshold",
            vec![("THRESHOLD_TTFV_MS=1500", "THRESHOLD_TTFV_MS=1.5s")],
        ),
        (
            "variable_unknown_provider",
            vec![("LB_PROVIDER=railway", "LB_PROVIDER=heroku")],
        ),
        (
            "variable_provider_needs_its_keys",
            vec![("LB_PROVIDER=railway", "LB_PROVIDER=haproxy")],
        ),
    ];
    for (name, edits) in cases {
        let out = run(&edits);
        assert_eq!(out.status.code(), Some(1), "{name}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        for v in VARIABLES.into_iter().filter(|v| is_secret(v)) {
            assert!(!stderr.contains(&value_of(v)), "{v} leaked");
        }
        insta::assert_snapshot!(name, stderr);
    }
}

/// `--no-env` checks typed values through their defaults, and says which it cannot check.
#[test]
fn without_the_environment_typed_values_need_a_default() {
    let text = edit(
        "weight = \"${CANARY_TRAFFIC_NEW:-5}\"",
        "weight = \"${CANARY_TRAFFIC_NEW}\"",
    );
    let errors = validate_errors(&text);
    assert!(
        errors.contains("cannot be checked without its variables"),
        "{errors}"
    );
    assert!(errors.contains("${CANARY_TRAFFIC_NEW:-...}"), "{errors}");
    // Booleans and numbers written as text are typed like literals.
    let errors = validate_errors(&edit("commit = false", "commit = \"maybe\""));
    assert!(
        errors.contains("commit \"maybe\" is not true or false"),
        "{errors}"
    );
    let errors = validate_errors(&edit("requests_per_user = 20", "requests_per_user = true"));
    assert!(
        errors.contains("a whole number, or a string with ${VARIABLE}s"),
        "{errors}"
    );
}

#[test]
fn an_arms_health_check_needs_somewhere_to_go() {
    let canary_arm = "selector = '{version=\"r1\"}'";
    let no_url = validate_errors(&edit(
        canary_arm,
        &format!("{canary_arm}\nhealth = \"/healthz\""),
    ));
    assert!(
        no_url.contains("health is a path but [arms.canary] has no url to check it on")
            && no_url.contains("add `url = \"http://...\"` to [arms.canary]"),
        "{no_url}"
    );
    let neither = validate_errors(&edit(
        canary_arm,
        &format!("{canary_arm}\nhealth = \"healthz\""),
    ));
    assert!(
        neither.contains("is neither a path nor an http(s) URL"),
        "{neither}"
    );
}

#[test]
fn validate_lists_the_comparisons_and_what_their_critical_ones_risk() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = template();
    text.push_str(
        r#"
[[compare]]
name = "ttfv_vs_baseline"
query = 'histogram_quantile(0.95, sum by (le) (rate(ttfv_ms_bucket[30s])))'
effect = "10%"
critical = true

[[compare]]
name = "ttfv_spread"
kind = "spread"
query = 'histogram_quantile(0.95, sum by (le) (rate(ttfv_ms_bucket[30s])))'
critical = true
alpha = 0.01

[[compare]]
name = "errors_vs_baseline"
kind = "counts"
events = 'sum(sse_total) - sum(sse_complete_total)'
exposure = 'sum(sse_total)'
effect = "50%"
"#,
    );
    std::fs::write(dir.path().join("canary.toml"), text).unwrap();
    let env: Vec<(String, String)> = VARIABLES
        .iter()
        .map(|v| (v.to_string(), value_of(v)))
        .collect();
    let out = canary(dir.path(), &["validate", "-c", "canary.toml"], &env);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("comparisons against the baseline: 3"),
        "{stdout}"
    );
    assert!(
        stdout.contains("rolled back by a critical comparison in at most 6 % of runs"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "ttfv_spread    spread, increase is bad, allowed 0 % of the baseline, critical"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("allowed 50 % of the baseline, alpha 0.05"),
        "{stdout}"
    );
}
