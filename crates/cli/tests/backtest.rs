//! `canary backtest` against a real Prometheus serving history built by promtool.
//!
//! The history holds three 75-minute windows of the runbook's metrics for both arms. In the
//! first, the canary's time to first value degrades from minute 20; in the second, both arms are
//! healthy; in the third, the canary is slower than the baseline from the start but stays under
//! the runbook's 1500 ms. The runbook's own configuration (`canary init`) is replayed over each.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is a test failure

use std::fmt::Write;
use std::process::Command;

use canary_testkit::Prometheus;

/// 2026-11-02T00:00:00Z: an incident window.
const INCIDENT: i64 = 1_793_577_600;
/// Two hours later: a healthy window.
const HEALTHY: i64 = INCIDENT + 7200;
/// Two hours after that: a canary slower than its baseline, under the threshold.
const SLOWER: i64 = HEALTHY + 7200;
const SCRAPE: i64 = 15;
const TTFV_BUCKETS: [f64; 8] = [100.0, 250.0, 500.0, 1000.0, 1500.0, 2000.0, 3000.0, 5000.0];
const ANN_BUCKETS: [f64; 6] = [10.0, 25.0, 50.0, 100.0, 200.0, 500.0];

/// One arm's cumulative state.
#[derive(Default, Clone)]
struct Arm {
    ttfv: Vec<f64>, // cumulative bucket counts, +Inf last
    ttfv_sum: f64,
    ann: Vec<f64>,
    ann_sum: f64,
    sse: f64,
    sse_complete: f64,
}

fn observe(buckets: &[f64], counts: &mut Vec<f64>, sum: &mut f64, value: f64, n: f64) {
    if counts.is_empty() {
        *counts = vec![0.0; buckets.len() + 1];
    }
    for (i, le) in buckets.iter().enumerate() {
        if value <= *le {
            counts[i] += n;
        }
    }
    *counts.last_mut().unwrap() += n;
    *sum += value * n;
}

/// Samples of every series at every scrape, for both windows.
fn history() -> String {
    // series name -> lines, so each metric family is written contiguously.
    let mut families: Vec<(String, &str, Vec<String>)> = vec![
        ("ttfv_ms".into(), "histogram", vec![]),
        ("memory_ann_query_latency_ms".into(), "histogram", vec![]),
        ("sse".into(), "counter", vec![]),
        ("sse_complete".into(), "counter", vec![]),
        ("memory_rls_policy_errors".into(), "counter", vec![]),
        ("memory_cross_tenant_attempts".into(), "counter", vec![]),
        ("db_connection_pool_utilization".into(), "gauge", vec![]),
    ];
    for (window, degrade, slower) in [
        (INCIDENT, true, false),
        (HEALTHY, false, false),
        (SLOWER, false, true),
    ] {
        for (version, per_scrape) in [("r0.5", 20.0), ("r1", 4.0)] {
            let mut arm = Arm::default();
            let mut t = window - 600; // ten minutes of history before T+0
            while t <= window + 75 * 60 {
                let degraded = degrade && version == "r1" && t > window + 20 * 60;
                let ttfv = match (degraded, slower && version == "r1") {
                    (true, _) => 1800.0,
                    // In (1000, 1500]: a p95 of 1475 against the baseline's 975.
                    (false, true) => 1200.0,
                    _ => 700.0,
                };
                observe(
                    &TTFV_BUCKETS,
                    &mut arm.ttfv,
                    &mut arm.ttfv_sum,
                    ttfv,
                    per_scrape,
                );
                observe(
                    &ANN_BUCKETS,
                    &mut arm.ann,
                    &mut arm.ann_sum,
                    40.0,
                    per_scrape,
                );
                arm.sse += per_scrape;
                arm.sse_complete += per_scrape;
                let l = format!("version=\"{version}\"");
                let hist = |out: &mut Vec<String>,
                            name: &str,
                            buckets: &[f64],
                            counts: &[f64],
                            sum: f64| {
                    for (i, le) in buckets.iter().enumerate() {
                        out.push(format!(
                            "{name}_bucket{{{l},le=\"{le}\"}} {} {t}",
                            counts[i]
                        ));
                    }
                    let total = counts[buckets.len()];
                    out.push(format!("{name}_bucket{{{l},le=\"+Inf\"}} {total} {t}"));
                    out.push(format!("{name}_count{{{l}}} {total} {t}"));
                    out.push(format!("{name}_sum{{{l}}} {sum} {t}"));
                };
                hist(
                    &mut families[0].2,
                    "ttfv_ms",
                    &TTFV_BUCKETS,
                    &arm.ttfv,
                    arm.ttfv_sum,
                );
                hist(
                    &mut families[1].2,
                    "memory_ann_query_latency_ms",
                    &ANN_BUCKETS,
                    &arm.ann,
                    arm.ann_sum,
                );
                families[2]
                    .2
                    .push(format!("sse_total{{{l}}} {} {t}", arm.sse));
                families[3].2.push(format!(
                    "sse_complete_total{{{l}}} {} {t}",
                    arm.sse_complete
                ));
                families[4]
                    .2
                    .push(format!("memory_rls_policy_errors_total{{{l}}} 0 {t}"));
                families[5]
                    .2
                    .push(format!("memory_cross_tenant_attempts_total{{{l}}} 0 {t}"));
                families[6]
                    .2
                    .push(format!("db_connection_pool_utilization{{{l}}} 35 {t}"));
                t += SCRAPE;
            }
        }
    }
    let mut out = String::new();
    for (name, kind, mut lines) in families {
        writeln!(out, "# TYPE {name} {kind}").unwrap();
        // Within a family, group by series (stable: lines of one series stay in time order).
        lines.sort_by(|a, b| a.split(' ').next().cmp(&b.split(' ').next()));
        for line in lines {
            writeln!(out, "{line}").unwrap();
        }
    }
    out.push_str("# EOF\n");
    out
}

fn backtest(prom: &Prometheus, from: i64, dir: &std::path::Path) -> (i32, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_canary"))
        .current_dir(dir)
        .args(["backtest", "-c", "canary.toml", "--prometheus"])
        .arg(prom.url())
        .arg("--from")
        .arg(from.to_string())
        .args(["--output", "json"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "backtest printed no JSON ({e}):\nstdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap(), report)
}

#[test]
fn backtest_catches_the_ttfv_incident_and_promotes_the_healthy_window() {
    let prom = Prometheus::with_history(&history());
    let dir = tempfile::tempdir().unwrap();
    let init = Command::new(env!("CARGO_BIN_EXE_canary"))
        .current_dir(dir.path())
        .arg("init")
        .output()
        .unwrap();
    assert!(init.status.success());

    // Incident: breaching from the 20:30 evaluation on (the first whose 5-minute rate window
    // holds degraded observations), for 5 minutes → rollback at 25:30.
    let (code, report) = backtest(&prom, INCIDENT, dir.path());
    assert_eq!(report["verdict"], "ROLLBACK", "{report:#}");
    assert_eq!(code, 3);
    assert_eq!(report["triggered_at"], 1530.0, "{report:#}");
    assert_eq!(report["reasons"][0]["guardrail"], "ttfv_p95");
    assert_eq!(report["reasons"][0]["kind"], "guardrail_triggered");
    // The canary's p95 at the trigger is interpolated in the (1500, 2000] bucket.
    let value = report["reasons"][0]["value"].as_f64().unwrap();
    assert!(value > 1500.0 && value <= 2000.0, "{value}");
    // The baseline stayed healthy all along: its p95 is in the (500, 1000] bucket.
    let last = report["timeline"].as_array().unwrap().last().unwrap();
    let ttfv = &last["guardrails"][0];
    assert_eq!(ttfv["name"], "ttfv_p95");
    assert!(ttfv["baseline"].as_f64().unwrap() <= 1000.0, "{ttfv}");

    // Healthy window: every guardrail has data and passes for the whole hour.
    let (code, report) = backtest(&prom, HEALTHY, dir.path());
    assert_eq!(report["verdict"], "PROMOTE", "{report:#}");
    assert_eq!(code, 0);
    assert_eq!(report["triggered_at"], serde_json::Value::Null);
    assert_eq!(report["decided_at"], 3600.0);
    assert_eq!(report["timeline"].as_array().unwrap().len(), 120);

    // The text report shows the strips and the verdict.
    let out = Command::new(env!("CARGO_BIN_EXE_canary"))
        .current_dir(dir.path())
        .args(["backtest", "-c", "canary.toml", "--prometheus"])
        .arg(prom.url())
        .args(["--from", "2026-11-02T00:00:00Z"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("verdict: ROLLBACK at T+25m30s"), "{text}");
    assert!(text.contains("ttfv_p95"), "{text}");
}

#[test]
fn backtest_errors_clearly_when_prometheus_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_canary"))
        .current_dir(dir.path())
        .arg("init")
        .output()
        .unwrap();
    let port = canary_testkit::free_port();
    let out = Command::new(env!("CARGO_BIN_EXE_canary"))
        .current_dir(dir.path())
        .args(["backtest", "-c", "canary.toml", "--prometheus"])
        .arg(format!("http://127.0.0.1:{port}"))
        .args(["--from", "1793577600", "--step", "10m", "--output", "json"])
        .output()
        .unwrap();
    // An unreachable API is an error (exit 1), not a verdict about the canary.
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot reach http://127.0.0.1:{port}")),
        "{err}"
    );
    assert!(err.contains("Connection refused"), "{err}");

    let out = Command::new(env!("CARGO_BIN_EXE_canary"))
        .current_dir(dir.path())
        .args([
            "backtest",
            "-c",
            "canary.toml",
            "--prometheus",
            "http://127.0.0.1:1",
            "--from",
            "yesterday",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not a time"), "{err}");
}

#[test]
fn backtest_judges_the_canary_against_the_baseline_with_the_comparisons_too() {
    let prom = Prometheus::with_history(&history());
    let dir = tempfile::tempdir().unwrap();
    let init = Command::new(env!("CARGO_BIN_EXE_canary"))
        .current_dir(dir.path())
        .arg("init")
        .output()
        .unwrap();
    assert!(init.status.success());
    // The runbook's guardrails alone promote the slower canary.
    let (code, report) = backtest(&prom, SLOWER, dir.path());
    assert_eq!(
        (code, &report["verdict"]),
        (0, &serde_json::json!("PROMOTE"))
    );
    let path = dir.path().join("canary.toml");
    let mut config = std::fs::read_to_string(&path).unwrap();
    config.push_str(
        r#"
[[compare]]
name = "ttfv_vs_baseline"
query = 'histogram_quantile(0.95, sum by (le) (rate(ttfv_ms_bucket[30s])))'
effect = "10%"
critical = true

[[compare]]
name = "sse_failures_vs_baseline"
kind = "counts"
events = 'sum(sse_total) - sum(sse_complete_total)'
exposure = 'sum(sse_total)'
effect = "50%"
"#,
    );
    std::fs::write(&path, config).unwrap();

    // A canary 50 % slower than its baseline from the start, under 1500 ms: the guardrail
    // passes it (the runbook alone would promote), the critical comparison rolls it back
    // within minutes.
    let (code, report) = backtest(&prom, SLOWER, dir.path());
    assert_eq!(report["verdict"], "ROLLBACK", "{report:#}");
    assert_eq!(code, 3);
    assert_eq!(
        report["reasons"][0]["kind"], "comparison_failed",
        "{report:#}"
    );
    assert_eq!(report["reasons"][0]["comparison"], "ttfv_vs_baseline");
    let decided = report["decided_at"].as_f64().unwrap();
    assert!(decided <= 600.0, "decided at {decided} s");
    let timeline = report["timeline"].as_array().unwrap();
    assert!(
        timeline
            .iter()
            .all(|r| r["comparisons"].as_array().unwrap().len() == 2)
    );
    assert!(
        timeline
            .iter()
            .all(|r| r["guardrails"][0]["status"] == "PASS"),
        "{report:#}"
    );
    assert_eq!(
        timeline.last().unwrap()["comparisons"][0]["classification"],
        "high"
    );
    assert_eq!(report["comparisons"][0]["classification"], "high");
    // No stream failed in either arm: a quiet pass, not missing data.
    assert_eq!(report["comparisons"][1]["classification"], "pass");
    assert_eq!(
        report["comparisons"][1]["estimate"],
        serde_json::Value::Null
    );

    // The incident that starts at minute 20 is still the guardrail's: 40 healthy looks came
    // first, and the comparison's evidence over the whole run is not yet enough when the TTFV
    // guardrail's five minutes are up.
    let (_, report) = backtest(&prom, INCIDENT, dir.path());
    assert_eq!(report["verdict"], "ROLLBACK", "{report:#}");
    assert_eq!(report["reasons"][0]["guardrail"], "ttfv_p95");
    assert_eq!(report["decided_at"], 1530.0);

    // Healthy window: the arms read alike and the canary is promoted.
    let (code, report) = backtest(&prom, HEALTHY, dir.path());
    assert_eq!(report["verdict"], "PROMOTE", "{report:#}");
    assert_eq!(code, 0);
    assert_eq!(report["score"]["score"], 100.0, "{report:#}");

    // The text report has a strip per comparison and their state at the decision.
    let out = Command::new(env!("CARGO_BIN_EXE_canary"))
        .current_dir(dir.path())
        .args(["backtest", "-c", "canary.toml", "--prometheus"])
        .arg(prom.url())
        .arg("--from")
        .arg(SLOWER.to_string())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("ttfv_vs_baseline")
            && text.contains("vs baseline: increase is bad beyond 10 % of the baseline"),
        "{text}"
    );
    assert!(text.contains("comparisons at the decision:"), "{text}");
    assert!(text.contains("✗ ttfv_vs_baseline HIGH"), "{text}");
    assert!(
        text.contains("✓ sse_failures_vs_baseline PASS    no events"),
        "{text}"
    );
}
