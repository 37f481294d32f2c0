//! `canary import kayenta` as a user runs it: a canary config in Kayenta's documented format
//! (docs/canary-config.md, `PrometheusCanaryMetricSetQueryConfig`) becomes exactly the expected
//! `[[compare]]` sections and `[scoring]`, with every change and loss named in the output's
//! header and on stderr; appended to `canary init`'s configuration it passes `canary validate`;
//! bad inputs fail with exit 1 and nothing written.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is a test failure

use std::path::Path;
use std::process::{Command, Output};

fn canary(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_canary"))
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("NO_COLOR", "1")
        .args(args)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// A Kayenta canary config as Spinnaker stores it: a latency from a complete PromQL template
/// using `${scope}`; a metricName with labelBindings and a filter template using `${scope}` and
/// `${location}`; an error ratio that is critical and must have data, whose query holds both
/// quote kinds and backslashes; a Datadog metric; a throughput stored with Kayenta's escaped
/// `$\{scope}`; two groups of a metric, and the classifier's group weights.
const KAYENTA: &str = r##"{
  "id": "my-app-golden-signals",
  "name": "my-app golden signals",
  "description": "Canary config for my-app",
  "configVersion": "1",
  "applications": ["my-app"],
  "judge": {"name": "NetflixACAJudge-v1.0", "judgeConfigurations": {}},
  "metrics": [
    {
      "name": "Latency p99",
      "query": {
        "type": "prometheus",
        "serviceType": "prometheus",
        "customInlineTemplate": "PromQL:histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{job=\"my-app\", ${scope}}[5m])))"
      },
      "groups": ["Latency"],
      "analysisConfigurations": {
        "canary": {"direction": "increase", "nanStrategy": "remove", "effectSize": {"allowedIncrease": 1.1}}
      },
      "scopeName": "default"
    },
    {
      "name": "Memory",
      "query": {
        "type": "prometheus",
        "metricName": "process_resident_memory_bytes",
        "labelBindings": ["job=\"my-app\""],
        "customFilterTemplate": "pod-in-region",
        "groupByFields": ["pod"]
      },
      "groups": ["Saturation", "Latency"],
      "analysisConfigurations": {
        "canary": {
          "effectSize": {"allowedIncrease": 1.2, "allowedDecrease": 0.9},
          "outliers": {"strategy": "remove", "outlierFactor": 3.0}
        }
      },
      "scopeName": "default"
    },
    {
      "name": "HTTP error ratio",
      "query": {
        "type": "prometheus",
        "customInlineTemplate": "PromQL:sum(rate(http_requests_total{code=~\"5\\\\d\\\\d\", path!~'/health.*', ${scope}}[1m])) / sum(rate(http_requests_total{path!~'/health.*', ${scope}}[1m]))"
      },
      "groups": ["Errors"],
      "analysisConfigurations": {
        "canary": {
          "direction": "increase",
          "critical": true,
          "mustHaveData": true,
          "nanStrategy": "replace",
          "effectSize": {"allowedIncrease": 1.5, "criticalIncrease": 5.0}
        }
      },
      "scopeName": "default"
    },
    {
      "name": "Datadog 5xx",
      "query": {"type": "datadog", "metricName": "trace.http.request.errors", "customFilter": "service:my-app"},
      "groups": ["Errors"],
      "analysisConfigurations": {"canary": {"direction": "increase"}},
      "scopeName": "default"
    },
    {
      "name": "Requests per second",
      "query": {
        "type": "prometheus",
        "customInlineTemplate": "PromQL:sum(rate(http_requests_total{$\\{scope}}[30s]))"
      },
      "groups": ["Throughput"],
      "analysisConfigurations": {
        "canary": {"direction": "decrease", "effectSize": {"allowedDecrease": 0.8, "measure": "meanRatio"}}
      },
      "scopeName": "default"
    }
  ],
  "templates": {"pod-in-region": "pod=~\"${scope}-.*\",namespace=\"${location}\""},
  "classifier": {"groupWeights": {"Latency": 40, "Saturation": 10, "Errors": 40, "Throughput": 10}}
}"##;

/// What [`KAYENTA`] must become, as canary reads it.
const EXPECTED: &str = r#"
[[compare]]
name = "latency_p99"
query = 'histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{job="my-app"}[30s])))'
direction = "increase"
effect = "10%"
group = "Latency"

[[compare]]
name = "memory"
query = 'avg(process_resident_memory_bytes{job="my-app"})'
direction = "either"
effect = "20%"
group = "Saturation"

[[compare]]
name = "http_error_ratio"
query = '''sum(rate(http_requests_total{code=~"5\\d\\d", path!~'/health.*'}[30s])) / sum(rate(http_requests_total{path!~'/health.*'}[30s]))'''
direction = "increase"
effect = "50%"
critical = true
must_have_data = true
group = "Errors"

[[compare]]
name = "requests_per_second"
query = 'sum(rate(http_requests_total[30s]))'
direction = "decrease"
effect = "20%"
group = "Throughput"

[scoring.groups]
Latency = 40.0
Saturation = 10.0
Errors = 40.0
Throughput = 10.0
"#;

/// Every change and loss [`KAYENTA`]'s import must name.
const NOTES: [&str; 15] = [
    r#"metric "Latency p99": dropped the matcher ${scope} (Kayenta's scope placeholders"#,
    r#"metric "Latency p99": range window [5m] shortened to [30s], the evaluation interval"#,
    r#"metric "Latency p99": named "latency_p99""#,
    r#"metric "Memory": groupByFields (pod) is not carried"#,
    r#"metric "Memory": dropped the matchers pod=~"${scope}-.*", namespace="${location}""#,
    r#"metric "Memory": effectSize allows 20% more and 10% less; canary has one effect for both sides of either: took the larger, 20%"#,
    r#"metric "Memory": outliers (strategy "remove") is not carried"#,
    r#"metric "Memory": in 2 groups: a comparison is in one, the first ("Saturation"); not in "Latency""#,
    r#"metric "HTTP error ratio": dropped the matcher ${scope}"#,
    r#"metric "HTTP error ratio": range window [1m] shortened to [30s]"#,
    r#"metric "HTTP error ratio": effectSize.criticalIncrease 5 is not carried"#,
    r#"metric "HTTP error ratio": nanStrategy "replace" (missing values as 0) is not carried"#,
    r#"metric "Datadog 5xx": its store is datadog, not Prometheus (canary reads PromQL): skipped"#,
    r#"metric "Requests per second": dropped the matcher ${scope}"#,
    r#"metric "Requests per second": its query sums over the arm, so it scales with each arm's share of traffic"#,
];

fn import(dir: &Path, json: &str, args: &[&str]) -> Output {
    std::fs::write(dir.join("kayenta.json"), json).unwrap();
    let mut all = vec!["import", "kayenta", "kayenta.json"];
    all.extend_from_slice(args);
    canary(dir, &all)
}

#[test]
fn a_kayenta_config_becomes_the_expected_comparisons_and_names_every_loss() {
    let dir = tempfile::tempdir().unwrap();
    let out = import(dir.path(), KAYENTA, &[]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stderr}");

    let imported: toml::Table = toml::from_str(&stdout).unwrap();
    let expected: toml::Table = toml::from_str(EXPECTED).unwrap();
    assert_eq!(imported, expected, "{stdout}");

    let notes: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("note: "))
        .collect();
    for note in NOTES {
        assert!(
            notes.iter().any(|n| n.starts_with(note)),
            "stderr lacks {note:?}:\n{stderr}"
        );
    }
    assert_eq!(notes.len(), 18, "{stderr}"); // NOTES and three renames
    for note in &notes {
        assert!(
            stdout.contains(&format!("#   - {note}\n")),
            "the header lacks {note:?}"
        );
    }
    assert!(stderr.ends_with("imported 4 of 5 Kayenta metrics as [[compare]] sections\n"));
    // The error ratio, and it alone, is pointed at kind = "counts".
    assert_eq!(
        stdout.matches("looks like an error rate or ratio").count(),
        1
    );
    let hint = stdout
        .find("http_error_ratio looks like an error rate")
        .unwrap();
    assert!(hint < stdout.find("name = \"http_error_ratio\"").unwrap());
    insta::assert_snapshot!("kayenta_golden_signals", stdout);
}

/// The forms of a Prometheus query Kayenta accepts, each as a metric: what canary reads, or why
/// the metric is skipped.
#[test]
fn each_form_of_a_kayenta_prometheus_query_is_carried_or_skipped_with_its_reason() {
    let cases: [(&str, &str, Result<&str, &str>); 11] = [
        (
            "lower-case prefix",
            r#"{"type": "prometheus", "customInlineTemplate": "promql: max(up{job=\"a\"})"}"#,
            Ok(r#"max(up{job="a"})"#),
        ),
        (
            "inline filter",
            r#"{"type": "prometheus", "metricName": "up", "customInlineTemplate": "job=\"a\",instance=~\"${scope}.*\""}"#,
            Ok(r#"avg(up{job="a"})"#),
        ),
        (
            "deprecated customFilter",
            r#"{"type": "prometheus", "metricName": "up", "customFilter": "job=\"a\""}"#,
            Ok(r#"avg(up{job="a"})"#),
        ),
        (
            "resource type only",
            r#"{"type": "prometheus", "metricName": "up", "resourceType": "gce_instance"}"#,
            Ok("avg(up)"),
        ),
        (
            "a comma inside a matcher's regex",
            r#"{"type": "prometheus", "customInlineTemplate": "PromQL:max(up{job=~\"a,b\",${scope}})"}"#,
            Ok(r#"max(up{job=~"a,b"})"#),
        ),
        (
            "a subquery keeps its range",
            r#"{"type": "prometheus", "customInlineTemplate": "PromQL:max_over_time(up[10m:1m])"}"#,
            Err(
                "reads 10m back (a subquery or an offset), more than the evaluation interval (30s)",
            ),
        ),
        (
            "placeholder outside a matcher",
            r#"{"type": "prometheus", "customInlineTemplate": "PromQL:rate(up[${interval}])"}"#,
            Err("uses the Kayenta placeholder ${interval} outside a label matcher"),
        ),
        (
            "unknown template",
            r#"{"type": "prometheus", "metricName": "up", "customFilterTemplate": "nope"}"#,
            Err(r#"its customFilterTemplate "nope" is not in the config's templates"#),
        ),
        (
            "not PromQL",
            r#"{"type": "prometheus", "customInlineTemplate": "PromQL:sum(rate(up[1m])"}"#,
            Err("is not PromQL canary reads"),
        ),
        (
            "no metric",
            r#"{"type": "prometheus", "labelBindings": ["job=\"a\""]}"#,
            Err("it has neither a \"PromQL:\" customInlineTemplate nor a metricName"),
        ),
        (
            "stackdriver",
            r#"{"type": "stackdriver", "metricType": "compute.googleapis.com/instance/cpu/utilization"}"#,
            Err("its store is stackdriver, not Prometheus"),
        ),
    ];
    let metrics: Vec<String> = cases
        .iter()
        .map(|(name, query, _)| format!(r#"{{"name": "{name}", "query": {query}}}"#))
        .collect();
    let json = format!(r#"{{"metrics": [{}]}}"#, metrics.join(",\n"));
    let dir = tempfile::tempdir().unwrap();
    let out = import(dir.path(), &json, &[]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let imported: toml::Table = toml::from_str(&stdout).unwrap();
    let compares = imported["compare"].as_array().unwrap();
    let mut carried = compares.iter();
    for (name, _, expect) in cases {
        match expect {
            Ok(query) => {
                let c = carried.next().unwrap();
                assert_eq!(c["query"].as_str(), Some(query), "{name}");
                assert_eq!(c["direction"].as_str(), Some("either"), "{name}");
            }
            Err(reason) => {
                let line = stderr
                    .lines()
                    .find(|l| l.starts_with(&format!("note: metric \"{name}\": ")))
                    .unwrap_or_else(|| panic!("{name}: no note in\n{stderr}"));
                assert!(
                    line.contains(reason) && line.ends_with(": skipped"),
                    "{name}: {line}"
                );
            }
        }
    }
    assert!(carried.next().is_none());
    assert!(stderr.contains(r#"note: metric "resource type only": resourceType "gce_instance" (Kayenta's own scope and zone matchers) is not carried"#), "{stderr}");
}

#[test]
fn names_are_made_usable_and_unique() {
    let query = r#"{"type": "prometheus", "customInlineTemplate": "PromQL:max(up)"}"#;
    let json = format!(
        r#"{{"metrics": [{{"name": "HTTP latency", "query": {query}}}, {{"name": "http-latency", "query": {query}}}, {{"query": {query}}}, {{"name": "ünïcode", "query": {query}}}, {{"name": "up", "query": {query}}}]}}"#
    );
    let dir = tempfile::tempdir().unwrap();
    let out = import(dir.path(), &json, &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let imported: toml::Table = toml::from_str(&text(&out.stdout)).unwrap();
    let names: Vec<&str> = imported["compare"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["http_latency", "http_latency_2", "metric_3", "n_code", "up"]
    );
    assert!(stderr.contains(r#"note: metric "http-latency": named "http_latency_2""#));
    assert!(stderr.contains(r#"note: metric #3: named "metric_3""#));
    assert!(
        !stderr.contains(r#"metric "up""#),
        "an unchanged name is not noted"
    );
}

/// The output is accepted by the real loader: appended to the configuration `canary init`
/// writes, `canary validate` reads every comparison and the scoring.
#[test]
fn the_import_appended_to_canary_inits_configuration_validates() {
    let dir = tempfile::tempdir().unwrap();
    assert!(canary(dir.path(), &["init"]).status.success());
    let out = import(dir.path(), KAYENTA, &["--marginal", "80", "--pass", "90"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let path = dir.path().join("canary.toml");
    let mut config = std::fs::read_to_string(&path).unwrap();
    config.push('\n');
    config.push_str(&text(&out.stdout));
    std::fs::write(&path, config).unwrap();

    let validate = canary(
        dir.path(),
        &[
            "validate",
            "--no-env",
            "-c",
            "canary.toml",
            "--output",
            "json",
        ],
    );
    assert_eq!(
        validate.status.code(),
        Some(0),
        "{}",
        text(&validate.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&validate.stdout).unwrap();
    let plan = &summary["plan"];
    let names: Vec<&str> = plan["comparisons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "latency_p99",
            "memory",
            "http_error_ratio",
            "requests_per_second"
        ]
    );
    let error_ratio = &plan["comparisons"][2];
    assert_eq!(error_ratio["critical"], true);
    assert_eq!(error_ratio["must_have_data"], true, "{error_ratio}");
    assert_eq!(plan["scoring"]["marginal"], 80.0);
    assert_eq!(plan["scoring"]["pass"], 90.0);
    assert_eq!(plan["scoring"]["group_weights"]["Errors"], 40.0);
}

#[test]
fn score_thresholds_come_from_the_flags_then_the_config_and_are_checked() {
    let with_thresholds = KAYENTA.replace(
        r#""classifier": {"#,
        r#""classifier": {"scoreThresholds": {"pass": 90, "marginal": 50}, "#,
    );
    let dir = tempfile::tempdir().unwrap();
    let scoring = |json: &str, args: &[&str]| {
        let out = import(dir.path(), json, args);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let t: toml::Table = toml::from_str(&text(&out.stdout)).unwrap();
        let s = t["scoring"].as_table().unwrap().clone();
        (
            s.get("marginal").and_then(toml::Value::as_float),
            s.get("pass").and_then(toml::Value::as_float),
        )
    };
    assert_eq!(scoring(KAYENTA, &[]), (None, None), "canary's defaults");
    assert_eq!(scoring(&with_thresholds, &[]), (Some(50.0), Some(90.0)));
    assert_eq!(
        scoring(&with_thresholds, &["--pass", "97"]),
        (None, Some(97.0)),
        "the flags win"
    );
    for args in [&["--marginal", "90", "--pass", "80"][..], &["--pass", "70"]] {
        let out = import(dir.path(), KAYENTA, args);
        assert_eq!(out.status.code(), Some(1));
        assert!(out.stdout.is_empty());
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("give 0 ≤ --marginal ≤ --pass ≤ 100"),
            "{stderr}"
        );
    }
}

/// Each bad input exits 1 saying what to give instead, and writes nothing.
#[test]
fn bad_inputs_fail_with_a_clear_message_and_nothing_written() {
    let only_others = r#"{"metrics": [
        {"name": "a", "query": {"type": "atlas", "q": "name,errors,:eq"}},
        {"name": "b", "query": {"type": "newrelic", "select": "SELECT count(*) FROM Transaction"}}
    ], "classifier": {"groupWeights": {"g": 100}}}"#;
    let cases: [(&str, Option<&str>, &[&str]); 6] = [
        (
            "missing file",
            None,
            &["cannot read kayenta.json: give the path of a Kayenta canary config saved as JSON"],
        ),
        (
            "not JSON",
            Some(r#"{"metrics": ["#),
            &["kayenta.json is not JSON (", "GET /canaryConfig/ID"],
        ),
        (
            "JSON, not a canary config",
            Some(r#"{"apiVersion": "argoproj.io/v1alpha1", "kind": "AnalysisTemplate"}"#),
            &["kayenta.json is not a Kayenta canary config: it has no \"metrics\" list"],
        ),
        (
            "an execution request",
            Some(r#"{"canaryConfig": {"metrics": []}, "executionRequest": {}}"#),
            &["this looks like an execution request — save its \"canaryConfig\" object"],
        ),
        (
            "a metric of the wrong shape",
            Some(r#"{"metrics": [{"name": "a", "groups": "Latency"}]}"#),
            &["is not a Kayenta canary config Kayenta would accept: invalid type"],
        ),
        (
            "only other stores",
            Some(only_others),
            &[
                "note: metric \"a\": its store is atlas, not Prometheus (canary reads PromQL): skipped",
                "note: metric \"b\": its store is newrelic",
                "error: nothing to import from kayenta.json: none of its 2 metrics",
            ],
        ),
    ];
    for (case, json, says) in cases {
        let dir = tempfile::tempdir().unwrap();
        if let Some(json) = json {
            std::fs::write(dir.path().join("kayenta.json"), json).unwrap();
        }
        let out = canary(
            dir.path(),
            &["import", "kayenta", "kayenta.json", "-o", "compare.toml"],
        );
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{case}: {stderr}");
        for s in says {
            assert!(stderr.contains(s), "{case}: {s:?} not in\n{stderr}");
        }
        assert!(out.stdout.is_empty(), "{case}");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n != "kayenta.json")
            .collect();
        assert!(left.is_empty(), "{case}: wrote {left:?}");
    }
}

#[test]
fn an_existing_out_file_is_refused_unchanged_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("compare.toml");
    std::fs::write(&target, "# mine\n").unwrap();
    let out = import(dir.path(), KAYENTA, &["-o", "compare.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("compare.toml already exists: pass --force to overwrite it"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "# mine\n");

    let forced = import(dir.path(), KAYENTA, &["-o", "compare.toml", "--force"]);
    assert_eq!(forced.status.code(), Some(0), "{}", text(&forced.stderr));
    assert!(forced.stdout.is_empty(), "the TOML went to the file");
    let written = std::fs::read_to_string(&target).unwrap();
    let stdout = text(&import(dir.path(), KAYENTA, &[]).stdout);
    assert_eq!(written, stdout, "-o writes what stdout would show");
    let mut files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(
        files,
        ["compare.toml", "kayenta.json"],
        "no temporary file left"
    );
}
