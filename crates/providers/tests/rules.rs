//! Generated Prometheus alerting rules: the runbook's six guardrails pass `promtool check rules`
//! and their generated `promtool test rules` unit tests (which fail when a rule is broken);
//! NaN and no-data semantics match the engine; a real Prometheus loads an installed rules file
//! and drops it on removal.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rules_support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use canary_core::Secret;
use canary_core::plan::{OnBreach, OnNoData};
use canary_promql::{Engine, Labels, Store, Value};
use canary_providers::rules::{
    CanaryRules, PrometheusRuleMeta, RuleFileInstaller, RuleFileInstallerConfig, RulesError,
    severity_label,
};
use canary_testkit::Prometheus;
use rules_support::{RUN_ID, guardrail, minutes, plan_with, runbook_plan};

fn promtool(args: &[&str], dir: &Path) -> (bool, String) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool is installed (scripts/test.sh --install)");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Writes the rules and their generated tests into a fresh directory.
fn write_rules_and_tests(
    rules: &CanaryRules,
) -> (tempfile::TempDir, canary_providers::rules::PromtoolTests) {
    let dir = tempfile::tempdir().unwrap();
    let file = rules.file_name();
    std::fs::write(dir.path().join(&file), rules.to_rules_file().unwrap()).unwrap();
    let tests = rules.promtool_tests(&file).unwrap();
    std::fs::write(dir.path().join("tests.yml"), &tests.yaml).unwrap();
    (dir, tests)
}

#[test]
fn runbook_rules_render_as_a_rules_file_a_prometheus_rule_and_ruler_json() {
    let rules = CanaryRules::generate(&runbook_plan(), RUN_ID).unwrap();
    insta::assert_snapshot!("runbook_rules_file", rules.to_rules_file().unwrap());
    let meta = PrometheusRuleMeta {
        namespace: Some("monitoring".into()),
        labels: [("release".to_owned(), "prometheus".to_owned())].into(),
    };
    insta::assert_snapshot!(
        "runbook_prometheus_rule",
        rules.to_prometheus_rule(&meta).unwrap()
    );
    let json: serde_json::Value = serde_json::from_str(&rules.to_ruler_json()).unwrap();
    assert_eq!(json["name"], format!("canary-{RUN_ID}"));
    assert_eq!(json["interval"], "30s");
    assert_eq!(json["rules"].as_array().unwrap().len(), 6);
    assert_eq!(json["rules"][3]["labels"]["severity"], "page");
    assert_eq!(json["rules"][3]["labels"]["action"], "security-rollback");
}

#[test]
fn promtool_accepts_the_rules_file_and_the_manifest_groups() {
    let rules = CanaryRules::generate(&runbook_plan(), RUN_ID).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.yml"), rules.to_rules_file().unwrap()).unwrap();
    let (ok, out) = promtool(&["check", "rules", "rules.yml"], dir.path());
    assert!(ok, "{out}");
    assert!(out.contains("SUCCESS: 6 rules found"), "{out}");

    // The PrometheusRule's spec.groups is a valid rules file too.
    let manifest: serde_json::Value = serde_norway::from_str(
        &rules
            .to_prometheus_rule(&PrometheusRuleMeta::default())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(manifest["kind"], "PrometheusRule");
    let name = manifest["metadata"]["name"].as_str().unwrap();
    assert!(
        name.len() <= 63
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
        "{name}"
    );
    let groups = serde_json::json!({"groups": manifest["spec"]["groups"]});
    std::fs::write(
        dir.path().join("from-manifest.yml"),
        serde_norway::to_string(&groups).unwrap(),
    )
    .unwrap();
    let (ok, out) = promtool(&["check", "rules", "from-manifest.yml"], dir.path());
    assert!(ok, "{out}");

    // And so is the ruler JSON (a rule group; YAML is a superset of JSON).
    std::fs::write(
        dir.path().join("ruler.yml"),
        format!(
            "groups:\n- {}\n",
            rules.to_ruler_json().replace('\n', "\n  ")
        ),
    )
    .unwrap();
    let (ok, out) = promtool(&["check", "rules", "ruler.yml"], dir.path());
    assert!(ok, "{out}");
}

#[test]
fn each_alert_is_the_negated_guardrail_on_the_canary_with_the_runbook_labels() {
    let rules = CanaryRules::generate(&runbook_plan(), RUN_ID).unwrap();
    let by_name = |g: &str| {
        rules
            .group()
            .rules
            .iter()
            .find(|r| r.labels.guardrail == g)
            .unwrap()
            .clone()
    };
    let ttfv = by_name("ttfv_p95");
    assert_eq!(ttfv.alert, "CanaryTtfvP95");
    assert_eq!(
        ttfv.expr,
        r#"(histogram_quantile(0.95, sum by (le) (rate(ttfv_ms_bucket{version="r1"}[5m])))) >= 1500"#
    );
    assert_eq!(ttfv.for_, minutes(5));
    for (g, severity, action) in [
        ("ttfv_p95", "critical", "rollback"),
        ("rls_errors", "critical", "rollback"),
        ("sse_success", "critical", "rollback"),
        ("cross_tenant", "page", "security-rollback"),
        ("ann_p95", "warning", "block-promotion"),
        ("db_pool", "warning", "block-promotion"),
    ] {
        let r = by_name(g);
        let labels = r.labels.to_map();
        assert_eq!(labels["severity"], severity, "{g}");
        assert_eq!(labels["action"], action, "{g}");
        assert_eq!(labels["canary_run"], RUN_ID, "{g}");
        assert_eq!(severity_label(r.labels.severity), severity, "{g}");
        assert_eq!(r.labels.action.as_str(), action, "{g}");
        assert_eq!(r.labels.run_id, RUN_ID, "{g}");
        assert!(
            r.expr.contains(r#"version="r1""#) && !r.expr.contains("r0.5"),
            "{g}: {}",
            r.expr
        );
        assert!(r.annotations["summary"].contains(g), "{g}");
    }
    // `== 0` breaches on `< 0 or > 0`, never on NaN (`!= 0` would fire on NaN).
    assert!(
        by_name("rls_errors").expr.contains(" < 0 or "),
        "{}",
        by_name("rls_errors").expr
    );
    assert!(by_name("sse_success").expr.ends_with(" < 99.6"));
}

#[test]
fn on_a_compressed_clock_the_rules_hold_and_look_back_as_the_engine_does() {
    // `canary run --time-scale 60`: the plan's `for` and interval are divided, and each rule's
    // range windows with them, exactly as the engine's own queries are.
    let rules = CanaryRules::generate(&runbook_plan().compressed(60.0), RUN_ID).unwrap();
    let ttfv = rules
        .group()
        .rules
        .iter()
        .find(|r| r.labels.guardrail == "ttfv_p95")
        .unwrap();
    assert_eq!(
        ttfv.expr,
        r#"(histogram_quantile(0.95, sum by (le) (rate(ttfv_ms_bucket{version="r1"}[5s])))) >= 1500"#
    );
    assert_eq!(ttfv.for_, Duration::from_secs(5));
    assert_eq!(
        rules.group().interval,
        runbook_plan().evaluation_interval / 60
    );
    // `[alertmanager] rule_interval` sets how often Prometheus evaluates them.
    let every = rules.every(Duration::from_millis(250));
    assert_eq!(every.group().interval, Duration::from_millis(250));
    assert!(every.to_rules_file().unwrap().contains("interval: 250ms"));
}

#[test]
fn generated_promtool_tests_pass_for_the_runbook_guardrails() {
    let rules = CanaryRules::generate(&runbook_plan(), RUN_ID).unwrap();
    let (dir, tests) = write_rules_and_tests(&rules);
    assert_eq!(
        tests.covered,
        [
            "ttfv_p95",
            "rls_errors",
            "sse_success",
            "cross_tenant",
            "ann_p95",
            "db_pool"
        ]
    );
    assert!(tests.uncovered.is_empty(), "{:?}", tests.uncovered);
    // The breach of a 5-minute guardrail is checked at the firing evaluation and one before.
    assert!(
        tests.yaml.contains("alertname: CanaryTtfvP95"),
        "{}",
        tests.yaml
    );
    let (ok, out) = promtool(&["test", "rules", "tests.yml"], dir.path());
    assert!(
        ok,
        "promtool test rules failed:\n{out}\n---\n{}",
        tests.yaml
    );
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn generated_promtool_tests_catch_broken_rules() {
    let rules = CanaryRules::generate(&runbook_plan(), RUN_ID).unwrap();
    let (dir, _) = write_rules_and_tests(&rules);
    let file = dir.path().join(rules.file_name());
    let good: serde_json::Value =
        serde_norway::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    type Mutation = fn(&mut serde_json::Value);
    let mutations: [(&str, Mutation); 4] = [
        ("a shorter for", |r| r["for"] = "1m".into()),
        ("a longer for", |r| r["for"] = "10m".into()),
        ("a threshold that never breaches", |r| {
            r["expr"] = r["expr"]
                .as_str()
                .unwrap()
                .replace(">= 1500", ">= 1500000")
                .into()
        }),
        ("the baseline instead of the canary", |r| {
            r["expr"] = r["expr"].as_str().unwrap().replace("r1", "r0.5").into()
        }),
    ];
    for (what, mutate) in mutations {
        let mut broken = good.clone();
        mutate(&mut broken["groups"][0]["rules"][0]);
        assert_ne!(broken, good, "{what}");
        std::fs::write(&file, serde_norway::to_string(&broken).unwrap()).unwrap();
        let (ok, out) = promtool(&["test", "rules", "tests.yml"], dir.path());
        assert!(!ok, "{what}: promtool still passed:\n{out}");
    }
}

/// A counter: name, labels, increase per second.
type Series<'a> = (&'a str, &'a [(&'a str, &'a str)], f64);

/// Evaluates the alert of `plan`'s only guardrail over `series` at 10 minutes.
fn fires(rules: &CanaryRules, series: &[Series]) -> bool {
    let mut store = Store::new();
    for (name, labels, per_second) in series {
        let mut pairs = vec![("__name__".to_owned(), (*name).to_owned())];
        pairs.extend(
            labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let labels = Labels::from_pairs(pairs);
        for i in 0..=20 {
            store
                .append(&labels, i * 30_000, per_second * 30.0 * i as f64)
                .unwrap();
        }
    }
    let expr = &rules.group().rules[0].expr;
    match Engine::default().instant(&store, expr, 600_000).unwrap() {
        Value::Vector(v) => !v.is_empty(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn nan_never_fires_unless_no_data_fails() {
    let sse = guardrail(
        "sse_success",
        "100 * sum(rate(sse_complete_total[5m])) / sum(rate(sse_total[5m]))",
        ">= 99.6",
        minutes(5),
        OnBreach::Rollback,
    );
    let idle: &[Series] = &[
        ("sse_complete_total", &[("version", "r1")], 0.0),
        ("sse_total", &[("version", "r1")], 0.0),
    ];
    let failing: &[Series] = &[
        ("sse_complete_total", &[("version", "r1")], 1.0),
        ("sse_total", &[("version", "r1")], 2.0),
    ];
    // 0/0 is NaN: the engine calls it no data, and so does the alert.
    let rules = CanaryRules::generate(&plan_with(vec![sse.clone()]), RUN_ID).unwrap();
    assert!(!fires(&rules, idle));
    assert!(fires(&rules, failing));
    // With on_no_data = "fail", NaN and an empty result fire.
    let mut strict = sse;
    strict.on_no_data = OnNoData::Fail;
    let rules = CanaryRules::generate(&plan_with(vec![strict]), RUN_ID).unwrap();
    assert!(fires(&rules, idle));
    assert!(fires(&rules, &[]));
    assert!(fires(&rules, failing));
    let healthy: &[Series] = &[
        ("sse_complete_total", &[("version", "r1")], 1.0),
        ("sse_total", &[("version", "r1")], 1.0),
    ];
    assert!(!fires(&rules, healthy));
}

#[test]
fn varied_guardrails_get_checked_rules_and_passing_tests() {
    let mut with_samples = guardrail(
        "ttfv_p95_sampled",
        "histogram_quantile(0.95, sum by (le) (rate(ttfv_ms_bucket[5m])))",
        "<= 1500",
        minutes(2),
        OnBreach::Rollback,
    );
    with_samples.min_samples = Some(20.0);
    with_samples.samples_query = Some("sum(increase(ttfv_ms_count[5m]))".into());
    let mut strict = guardrail(
        "error_ratio",
        r#"sum(rate(http_requests_total{code=~"5.."}[1m])) / sum(rate(http_requests_total[1m]))"#,
        "< 0.01",
        minutes(1),
        OnBreach::Warn,
    );
    strict.on_no_data = OnNoData::Fail;
    let plan = plan_with(vec![
        with_samples,
        strict,
        guardrail(
            "heartbeat",
            "sum(up)",
            "!= 0",
            Duration::ZERO,
            OnBreach::Rollback,
        ),
        guardrail(
            "queue",
            "max(queue_depth)",
            "> 2",
            Duration::from_secs(90),
            OnBreach::BlockPromotion,
        ),
        guardrail(
            "constant",
            "vector(1)",
            "== 1",
            Duration::ZERO,
            OnBreach::Warn,
        ),
    ]);
    let rules = CanaryRules::generate(&plan, RUN_ID).unwrap();
    let (dir, tests) = write_rules_and_tests(&rules);
    let (ok, out) = promtool(&["check", "rules", &rules.file_name()], dir.path());
    assert!(ok, "{out}");
    // `vector(1)` reads no series: nothing to synthesise, and the generator says so.
    assert_eq!(tests.uncovered.len(), 1, "{:?}", tests.uncovered);
    assert_eq!(tests.uncovered[0].guardrail, "constant");
    assert!(
        tests
            .yaml
            .contains("# not covered: constant: the query reads no series")
    );
    assert_eq!(
        tests.covered,
        ["ttfv_p95_sampled", "error_ratio", "heartbeat", "queue"]
    );
    let (ok, out) = promtool(&["test", "rules", "tests.yml"], dir.path());
    assert!(
        ok,
        "promtool test rules failed:\n{out}\n---\n{}",
        tests.yaml
    );
}

#[test]
fn a_query_that_does_not_parse_names_the_guardrail() {
    let plan = plan_with(vec![guardrail(
        "broken",
        "sum(rate(x[5m])",
        "< 1",
        Duration::ZERO,
        OnBreach::Rollback,
    )]);
    let err = CanaryRules::generate(&plan, RUN_ID).unwrap_err();
    assert!(matches!(err, RulesError::Query { .. }), "{err:?}");
    assert!(err.to_string().contains("\"broken\""), "{err}");
}

fn start_prometheus(rules_glob: &str) -> Prometheus {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    Prometheus::start(
        dir,
        &data,
        &format!("global:\n  evaluation_interval: 30s\nrule_files:\n  - {rules_glob}\n"),
    )
}

fn installer(dir: &Path, url: String) -> RuleFileInstaller {
    RuleFileInstaller::new(RuleFileInstallerConfig {
        dir: dir.to_owned(),
        prometheus_url: format!("{url}/api/v1"),
        token: Some(Secret::new("not-checked-by-prometheus")),
        timeout: Duration::from_secs(10),
    })
    .unwrap()
}

async fn loaded_alerts(url: &str) -> Vec<String> {
    let body: serde_json::Value = reqwest::get(format!("{url}/api/v1/rules?type=alert"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().clone())
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_real_prometheus_loads_installed_rules_and_drops_removed_ones() {
    let rules_dir = tempfile::tempdir().unwrap();
    let prometheus = tokio::task::spawn_blocking({
        let glob = format!("{}/*.rules.yml", rules_dir.path().display());
        move || start_prometheus(&glob)
    })
    .await
    .unwrap();
    let installer = installer(rules_dir.path(), prometheus.url());
    let rules = CanaryRules::generate(&runbook_plan(), RUN_ID).unwrap();
    assert!(!installer.is_loaded(&rules.group().name).await.unwrap());

    let installed = installer.install(&rules).await.unwrap();
    assert_eq!(installed.path, rules_dir.path().join(rules.file_name()));
    assert!(installed.path.exists());
    assert!(installer.is_loaded(&installed.group).await.unwrap());
    let alerts = loaded_alerts(&prometheus.url()).await;
    for name in [
        "CanaryTtfvP95",
        "CanaryRlsErrors",
        "CanarySseSuccess",
        "CanaryCrossTenant",
        "CanaryAnnP95",
        "CanaryDbPool",
    ] {
        assert!(
            alerts.iter().any(|a| a == name),
            "{name} not loaded: {alerts:?}"
        );
    }
    // Nothing but the finished file is left in the directory.
    let names: Vec<String> = std::fs::read_dir(rules_dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, [rules.file_name()]);

    installer.remove(&installed).await.unwrap();
    assert!(!installed.path.exists());
    assert!(!installer.is_loaded(&installed.group).await.unwrap());
    assert!(loaded_alerts(&prometheus.url()).await.is_empty());
    // Removing twice is harmless.
    installer.remove(&installed).await.unwrap();
}

#[tokio::test]
async fn a_directory_prometheus_does_not_read_is_reported_with_the_fix() {
    let watched = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let prometheus = tokio::task::spawn_blocking({
        let glob = format!("{}/*.rules.yml", watched.path().display());
        move || start_prometheus(&glob)
    })
    .await
    .unwrap();
    let installer = installer(elsewhere.path(), prometheus.url());
    let rules = CanaryRules::generate(&runbook_plan(), RUN_ID).unwrap();
    let err = installer.install(&rules).await.unwrap_err();
    assert!(matches!(err, RulesError::NotLoaded { .. }), "{err:?}");
    assert!(err.to_string().contains("rule_files"), "{err}");
    // The stray file is taken out again.
    assert!(!elsewhere.path().join(rules.file_name()).exists());
}
