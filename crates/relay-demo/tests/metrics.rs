//! The metrics contract: names, types and labels exactly as DESIGN §10 and the runbook's
//! guardrail queries expect them (snapshot-tested), valid in both exposition formats, and
//! scraped and queried by a real Prometheus with the canary's six guardrail queries.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use support::*;

/// DESIGN §10's metric list, plus `memory_tenant_mismatch_total` (named in §10's 403 rule), as
/// the series names a Prometheus query uses.
const DESIGN_METRICS: [(&str, &str); 14] = [
    ("ttfv_ms", "histogram"),
    ("sse_total", "counter"),
    ("sse_complete_total", "counter"),
    ("sse_stream_timeout_total", "counter"),
    ("sse_bytes_transmitted", "gauge"),
    ("memory_rls_policy_errors_total", "counter"),
    ("memory_cross_tenant_attempts_total", "counter"),
    ("memory_ann_query_latency_ms", "histogram"),
    ("memory_rerank_skipped_total", "counter"),
    ("memory_rerank_timeout_total", "counter"),
    ("db_connection_pool_utilization", "gauge"),
    ("db_query_latency_ms", "histogram"),
    ("memory_chunks_row_count", "gauge"),
    ("memory_tenant_mismatch_total", "counter"),
];

/// One line per metric family: `name type sample-names {label keys}` (values stripped).
fn contract(text: &str) -> String {
    let mut families: BTreeMap<String, (String, BTreeSet<String>, BTreeSet<String>)> =
        BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            families.entry(name.to_owned()).or_default().0 = kind.to_owned();
        }
    }
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let series = line.rsplit_once(' ').unwrap().0;
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        let family = families
            .keys()
            .filter(|f| {
                name == f.as_str()
                    || name
                        .strip_prefix(f.as_str())
                        .is_some_and(|s| ["_bucket", "_sum", "_count"].contains(&s))
            })
            .max_by_key(|f| f.len())
            .unwrap_or_else(|| panic!("sample {name} has no # TYPE"))
            .clone();
        let entry = families.get_mut(&family).unwrap();
        entry.1.insert(name.to_owned());
        for pair in labels
            .trim_end_matches('}')
            .split(',')
            .filter(|p| !p.is_empty())
        {
            entry.2.insert(pair.split('=').next().unwrap().to_owned());
        }
    }
    families
        .iter()
        .map(|(name, (kind, samples, labels))| {
            format!(
                "{name} {kind} [{}] {{{}}}",
                samples.iter().cloned().collect::<Vec<_>>().join(" "),
                labels.iter().cloned().collect::<Vec<_>>().join(",")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn names_types_and_labels_match_the_design() {
    let server = start(10, |o| o.version_label = "r0.5".into()).await;
    let text = metrics_text(&server.url()).await;
    insta::assert_snapshot!("metric_contract", contract(&text));

    let exposed: BTreeMap<String, String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let (n, t) = l.split_once(' ').unwrap();
            (n.to_owned(), t.to_owned())
        })
        .collect();
    let expected: BTreeMap<String, String> = DESIGN_METRICS
        .iter()
        .map(|(n, t)| ((*n).to_owned(), (*t).to_owned()))
        .collect();
    assert_eq!(exposed, expected);
    // Every sample carries the version label.
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        assert!(line.contains("version=\"r0.5\""), "{line}");
    }
    // Histogram buckets resolve the runbook's thresholds exactly.
    assert!(text.contains("ttfv_ms_bucket{version=\"r0.5\",le=\"1500.0\"}"));
    assert!(text.contains("memory_ann_query_latency_ms_bucket{version=\"r0.5\",le=\"200.0\"}"));
}

#[tokio::test]
async fn openmetrics_is_served_to_clients_that_ask_for_it() {
    let server = start(10, |_| {}).await;
    let response = client()
        .get(format!("{}/metrics", server.url()))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .send()
        .await
        .unwrap();
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = response.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"));
    assert!(text.contains("# TYPE sse counter\n"));
    assert!(text.contains("\nsse_total{version=\"r1\"} 0\n"));
    assert!(text.contains("# TYPE sse_bytes_transmitted gauge\n"));
    let plain = metrics_text(&server.url()).await;
    assert!(!plain.contains("# EOF"));
    assert!(plain.contains("# TYPE sse_total counter\n"));
}

#[tokio::test]
async fn promtool_parses_the_text_exposition() {
    let server = start(10, |_| {}).await;
    query_sse(&server.url(), Some(&token("user_1")), json!({"query": "x"})).await;
    let text = metrics_text(&server.url()).await;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (scripts/test.sh --install)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // promtool's naming linter objects to the abbreviated unit in `*_ms` and to the `_count`
    // suffix of the gauge `memory_chunks_row_count`; those names are the runbook's and cannot
    // change. Any other finding — above all a parse error — fails the test.
    let naming_lints = [
        "metric names should not contain abbreviated units",
        "non-histogram and non-summary metrics should not have \"_count\" suffix",
    ];
    for line in report.lines().filter(|l| !l.trim().is_empty()) {
        let runbook_name = DESIGN_METRICS
            .iter()
            .any(|(name, _)| line.starts_with(&format!("{name} ")));
        let naming = naming_lints.iter().any(|lint| line.ends_with(lint));
        assert!(runbook_name && naming, "promtool: {line}\n{report}");
    }
}

/// A Prometheus server on a loopback port, killed on drop.
struct Prometheus {
    child: Child,
    url: String,
    _dir: TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let path = std::env::temp_dir().join(format!("relay-demo-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_prometheus(target: &str) -> Prometheus {
    let dir = TempDir::new("prometheus");
    let config = dir.0.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: relay\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.0.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus is installed (scripts/test.sh --install)");
    Prometheus {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    }
}

async fn instant_query(prometheus: &str, expr: &str) -> Option<Vec<Value>> {
    let reply: Value = client()
        .get(format!("{prometheus}/api/v1/query"))
        .query(&[("query", expr)])
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    assert_eq!(reply["status"], "success", "{expr}: {reply}");
    Some(reply["data"]["result"].as_array()?.clone())
}

fn scalar(result: &[Value]) -> Option<f64> {
    result.first()?["value"][1].as_str()?.parse().ok()
}

#[tokio::test]
async fn real_prometheus_evaluates_the_six_guardrail_queries() {
    let server = start(40, |_| {}).await;
    let prometheus = start_prometheus(&server.addr().to_string());
    let p = prometheus.url.clone();
    eventually(Duration::from_secs(60), "the first scrape", || async {
        let up = instant_query(&p, "up{job=\"relay\"}").await?;
        (scalar(&up) == Some(1.0)).then_some(())
    })
    .await;
    for (user, _) in relay_demo::seed_markers() {
        let outcome = query_sse(
            &server.url(),
            Some(&token(&user)),
            json!({"query": "trip", "top_k": 5}),
        )
        .await;
        assert_eq!(outcome.last_event(), Some("done"));
    }
    eventually(
        Duration::from_secs(30),
        "the streams to be scraped",
        || async {
            let total = instant_query(&p, "sum(sse_total{version=\"r1\"})").await?;
            (scalar(&total) == Some(5.0)).then_some(())
        },
    )
    .await;
    let guardrails = [
        (
            "histogram_quantile(0.95, sum by (le) (rate(ttfv_ms_bucket[5m])))",
            0.0,
            1500.0,
        ),
        (
            "sum(increase(memory_rls_policy_errors_total[5m]))",
            0.0,
            0.0,
        ),
        (
            "100 * sum(rate(sse_complete_total[5m])) / sum(rate(sse_total[5m]))",
            99.999,
            100.0,
        ),
        (
            "sum(increase(memory_cross_tenant_attempts_total[1m]))",
            0.0,
            0.0,
        ),
        (
            "histogram_quantile(0.95, sum by (le) (rate(memory_ann_query_latency_ms_bucket[5m])))",
            0.0,
            200.0,
        ),
        ("max(db_connection_pool_utilization)", 0.0, 80.0),
    ];
    for (expr, low, high) in guardrails {
        let value = instant_query(&p, expr)
            .await
            .and_then(|r| scalar(&r))
            .unwrap_or_else(|| panic!("no data for {expr}"));
        assert!((low..=high).contains(&value), "{expr} = {value}");
    }
}
