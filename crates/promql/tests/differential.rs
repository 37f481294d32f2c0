//! The embedded evaluator against a real Prometheus 2.42 on the same data.
//!
//! One generated history (see `support/history.rs`) is loaded into the embedded [`Store`] and,
//! through `promtool tsdb create-blocks-from openmetrics`, into one Prometheus. Every query of
//! the table is then evaluated at several instants by both, and the two `/api/v1/query` JSON
//! answers must agree: same result type, same series with the same labels, same timestamps,
//! values equal within 1e-9 relative (NaN matching NaN). Order is compared too where PromQL
//! defines it (`sort`, `sort_desc`). A few range queries go through `/api/v1/query_range`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failure here is a test (or benchmark) failure

#[path = "support/history.rs"]
mod history;

use std::collections::BTreeMap;

use canary_promql::rewrite::{self, ArmSelector};
use canary_promql::value::api_response_json;
use canary_promql::{Engine, EvalError, Store};
use canary_testkit::Prometheus;
use history::{INTERVAL, LATE_START, SCRAPES, T0, flaky_last};
use serde_json::Value as Json;

/// The runbook's six guardrails.
const GUARDRAILS: [&str; 6] = [
    "histogram_quantile(0.95, sum by (le) (rate(ttfv_ms_bucket[5m])))",
    "sum(increase(memory_rls_policy_errors_total[5m]))",
    "100 * sum(rate(sse_complete_total[5m])) / sum(rate(sse_total[5m]))",
    "sum(increase(memory_cross_tenant_attempts_total[1m]))",
    "histogram_quantile(0.95, sum by (le) (rate(memory_ann_query_latency_ms_bucket[5m])))",
    "max(db_connection_pool_utilization)",
];

/// Every function and operator of the issue, plus edge cases.
const QUERIES: &[&str] = &[
    // Selectors and matchers.
    "db_connection_pool_utilization",
    r#"db_connection_pool_utilization{version="r1"}"#,
    r#"db_connection_pool_utilization{version!="r1"}"#,
    r#"db_connection_pool_utilization{instance=~"a|c"}"#,
    r#"db_connection_pool_utilization{instance!~"a"}"#,
    r#"{__name__=~"sse.*", instance="a"}"#,
    "sse_total[2m]",
    "db_connection_pool_utilization offset 7m",
    "db_connection_pool_utilization offset -2m",
    "db_connection_pool_utilization @ 1700000600",
    "rate(sse_total[5m] @ 1700001000)",
    "db_connection_pool_utilization @ end()",
    "flaky_gauge",
    "nan_gauge",
    "late_counter_total",
    // Range functions.
    "rate(sse_total[5m])",
    "increase(sse_total[5m])",
    "rate(sse_total[1m])",
    "rate(sse_total[20s])",
    "increase(late_counter_total[5m])",
    "rate(late_counter_total[10m])",
    "increase(sse_total[90s] offset 1m)",
    "delta(db_connection_pool_utilization[5m])",
    "irate(sse_total[5m])",
    "idelta(db_connection_pool_utilization[5m])",
    "deriv(db_connection_pool_utilization[10m])",
    "deriv(sse_total[5m])",
    "predict_linear(db_connection_pool_utilization[10m], 600)",
    "predict_linear(sse_total[5m], 3600)",
    "resets(sse_total[30m])",
    "changes(db_connection_pool_utilization[10m])",
    "changes(nan_gauge[10m])",
    "avg_over_time(db_connection_pool_utilization[10m])",
    "min_over_time(db_connection_pool_utilization[10m])",
    "max_over_time(db_connection_pool_utilization[10m])",
    "sum_over_time(db_connection_pool_utilization[10m])",
    "count_over_time(db_connection_pool_utilization[10m])",
    "last_over_time(db_connection_pool_utilization[10m])",
    "quantile_over_time(0.9, db_connection_pool_utilization[10m])",
    "stddev_over_time(db_connection_pool_utilization[10m])",
    "stdvar_over_time(db_connection_pool_utilization[10m])",
    "present_over_time(flaky_gauge[10m])",
    "absent_over_time(flaky_gauge[2m])",
    r#"absent_over_time(nonexistent{job="relay"}[5m])"#,
    "max_over_time(nan_gauge[5m])",
    "min_over_time(nan_gauge[5m])",
    "avg_over_time(nan_gauge[5m])",
    "sum_over_time(nan_gauge[1m])",
    // Subqueries.
    "max_over_time(rate(sse_total[1m])[10m:1m])",
    "avg_over_time(db_connection_pool_utilization[5m:30s])",
    "sum_over_time(db_connection_pool_utilization[10m:] offset 5m)",
    "rate(sse_total[5m] offset 10m)",
    "min_over_time(sum by (version) (rate(sse_total[2m]))[15m:45s])",
    // histogram_quantile.
    "histogram_quantile(0.5, rate(ttfv_ms_bucket[5m]))",
    "histogram_quantile(0.99, sum by (le, version) (rate(memory_ann_query_latency_ms_bucket[5m])))",
    "histogram_quantile(0.9, ttfv_ms_bucket)",
    "histogram_quantile(0.5, inf_only_bucket)",
    "histogram_quantile(1.5, sum by (le) (ttfv_ms_bucket))",
    "histogram_quantile(-1, sum by (le) (ttfv_ms_bucket))",
    "histogram_quantile(0, sum by (le) (rate(ttfv_ms_bucket[5m])))",
    r#"histogram_quantile(0.95, sum by (le) (rate(ttfv_ms_bucket{version="none"}[5m])))"#,
    // Aggregations.
    "sum by (version) (db_connection_pool_utilization)",
    "avg by (version) (db_connection_pool_utilization)",
    "min without (instance) (db_connection_pool_utilization)",
    "max by (instance) (db_connection_pool_utilization)",
    "count by (version) (db_connection_pool_utilization)",
    "group by (version) (db_connection_pool_utilization)",
    "stddev by (version) (db_connection_pool_utilization)",
    "stdvar(db_connection_pool_utilization)",
    "topk(2, db_connection_pool_utilization)",
    "bottomk(1, db_connection_pool_utilization) by (version)",
    "topk by (instance) (1, rate(sse_total[5m]))",
    "quantile(0.3, db_connection_pool_utilization)",
    "quantile by (version) (0.75, rate(sse_total[5m]))",
    r#"count_values("pool", round(db_connection_pool_utilization / 10))"#,
    r#"count_values without (instance) ("pool", round(db_connection_pool_utilization / 20))"#,
    "sum without (instance) (rate(sse_total[5m]))",
    r#"count by (__name__) ({__name__=~"sse.*"})"#,
    "sum(nan_gauge)",
    "max(nan_gauge)",
    "avg(nan_gauge)",
    // Binary operators.
    "sse_complete_total / sse_total",
    "sse_total - on(version, instance) sse_complete_total",
    "sse_total - ignoring(job) sse_complete_total",
    "sse_total > 1000",
    "sse_total > bool 1000",
    "2 * db_connection_pool_utilization",
    "100 - db_connection_pool_utilization",
    "db_connection_pool_utilization < 50",
    "50 > db_connection_pool_utilization",
    "50 >= bool db_connection_pool_utilization",
    "db_connection_pool_utilization != 0",
    "sse_total == bool sse_complete_total",
    "sse_total >= on(version, instance) sse_complete_total",
    "sse_total and on(instance, version) flaky_gauge",
    "flaky_gauge or db_connection_pool_utilization",
    "flaky_gauge or on(instance) nan_gauge",
    "db_connection_pool_utilization unless on(version) flaky_gauge",
    "rate(sse_total[5m]) / on(version) group_left sum by (version) (rate(sse_total[5m]))",
    "sum by (version) (rate(sse_total[5m])) / on(version) group_right rate(sse_total[5m])",
    "db_connection_pool_utilization * on(instance, version) group_left(le) inf_only_bucket",
    "sse_total % 7",
    "db_connection_pool_utilization ^ 2",
    "db_connection_pool_utilization atan2 10",
    "sse_total atan2 on(instance, version) sse_complete_total",
    "-db_connection_pool_utilization",
    "1 + 2 * 3 - 4 / 8",
    "2 ^ 3 ^ 2",
    "5 % 3 > bool 1",
    "nan_gauge + 1",
    "nan_gauge == nan_gauge",
    "sse_total + on() group_left sum(sse_total)",
    // Math, labels, time and the rest.
    "abs(-db_connection_pool_utilization)",
    "ceil(db_connection_pool_utilization)",
    "floor(db_connection_pool_utilization)",
    "round(db_connection_pool_utilization)",
    "round(db_connection_pool_utilization, 5)",
    "round(db_connection_pool_utilization, 0.1)",
    "clamp(db_connection_pool_utilization, 30, 60)",
    "clamp(db_connection_pool_utilization, 60, 30)",
    "clamp_min(db_connection_pool_utilization, 50)",
    "clamp_max(db_connection_pool_utilization, 50)",
    "exp(db_connection_pool_utilization / 100)",
    "ln(db_connection_pool_utilization)",
    "log2(nan_gauge)",
    "log10(db_connection_pool_utilization)",
    "sqrt(nan_gauge)",
    "sgn(nan_gauge)",
    "time()",
    "scalar(sum(db_connection_pool_utilization))",
    "scalar(db_connection_pool_utilization)",
    "vector(1)",
    "vector(time()) - 1700000000",
    "timestamp(db_connection_pool_utilization)",
    "timestamp(flaky_gauge)",
    "timestamp(sum(flaky_gauge))",
    "absent(flaky_gauge)",
    r#"absent(nonexistent{job="relay", x=~"y", job="other", version="r1"})"#,
    r#"label_replace(db_connection_pool_utilization, "host", "$1-x", "instance", "(.*)")"#,
    r#"label_replace(db_connection_pool_utilization, "foo", "bar", "nope", "x+")"#,
    r#"label_replace(db_connection_pool_utilization, "version", "", "version", ".*")"#,
    r#"label_join(db_connection_pool_utilization, "id", "-", "version", "instance")"#,
    "sort(db_connection_pool_utilization)",
    "sort_desc(db_connection_pool_utilization)",
    "sort_desc(sum by (version) (rate(sse_total[5m])))",
    // Errors both must report.
    r#"label_replace(db_connection_pool_utilization, "instance", "x", "", "") * 1"#,
    "sse_total + on() sse_complete_total",
    "sse_total + ignoring(instance) sse_complete_total",
];

/// Instants: early data, a series' first sample, a counter reset, the lookback boundary of a
/// vanished series (inclusive, then 1 ms past), a counter's start, and after the data ends.
fn instants() -> Vec<i64> {
    vec![
        T0 + 5 * 60_000 + 7,
        T0 + 20 * 60_000 + 10_000,
        T0 + 30 * 60_000 + 3_000,
        flaky_last() + 300_000,
        flaky_last() + 300_001,
        T0 + LATE_START * INTERVAL + 40_000,
        T0 + SCRAPES * INTERVAL + 120_000,
    ]
}

fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn seconds(t: i64) -> String {
    let sign = if t < 0 { "-" } else { "" };
    let ms = t.unsigned_abs();
    format!("{sign}{}.{:03}", ms / 1000, ms % 1000)
}

/// Prometheus' answer: `Ok((json, body text))` on success, `Err(error)` otherwise.
fn prometheus(prom: &Prometheus, path: &str) -> Result<(Json, String), String> {
    let (status, body) = canary_testkit::http_get(prom.addr, path).expect("query prometheus");
    let json: Json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
    if status == 200 && json["status"] == "success" {
        Ok((json, body))
    } else {
        Err(json["error"].as_str().unwrap_or_default().to_owned())
    }
}

fn values_equal(a: &str, b: &str) -> bool {
    let (x, y) = (
        canary_promql::value::parse_value(a),
        canary_promql::value::parse_value(b),
    );
    match (x, y) {
        (Some(x), Some(y)) if x.is_nan() || y.is_nan() => x.is_nan() && y.is_nan(),
        (Some(x), Some(y)) if x == y => true,
        (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()),
        _ => false,
    }
}

/// Compares two `data` objects; `ordered` also compares series order.
fn compare(ours: &Json, theirs: &Json, ordered: bool) -> Result<(), String> {
    if ours["resultType"] != theirs["resultType"] {
        return Err(format!(
            "result type {} vs {}",
            ours["resultType"], theirs["resultType"]
        ));
    }
    let point = |p: &Json| -> (String, String) {
        // Timestamps are compared as the JSON text Prometheus wrote.
        (
            p[0].to_string(),
            p[1].as_str().unwrap_or_default().to_owned(),
        )
    };
    let points_equal = |a: &Json, b: &Json| -> bool {
        let (ta, va) = point(a);
        let (tb, vb) = point(b);
        ta == tb && values_equal(&va, &vb)
    };
    match ours["resultType"].as_str() {
        Some("scalar") | Some("string") => {
            if points_equal(&ours["result"], &theirs["result"])
                || ours["result"] == theirs["result"]
            {
                Ok(())
            } else {
                Err(format!("{} vs {}", ours["result"], theirs["result"]))
            }
        }
        _ => {
            let series = |d: &Json| -> Vec<(String, Json)> {
                d["result"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|s| {
                        let metric: BTreeMap<String, String> =
                            serde_json::from_value(s["metric"].clone()).unwrap_or_default();
                        let points = if s.get("values").is_some() {
                            s["values"].clone()
                        } else {
                            Json::Array(vec![s["value"].clone()])
                        };
                        (format!("{metric:?}"), points)
                    })
                    .collect()
            };
            let (mut a, mut b) = (series(ours), series(theirs));
            if !ordered {
                a.sort_by(|x, y| x.0.cmp(&y.0));
                b.sort_by(|x, y| x.0.cmp(&y.0));
            }
            let names = |v: &[(String, Json)]| v.iter().map(|s| s.0.clone()).collect::<Vec<_>>();
            if names(&a) != names(&b) {
                return Err(format!(
                    "series differ:\n  ours:       {:?}\n  prometheus: {:?}",
                    names(&a),
                    names(&b)
                ));
            }
            for ((name, pa), (_, pb)) in a.iter().zip(&b) {
                let (pa, pb) = (
                    pa.as_array().cloned().unwrap_or_default(),
                    pb.as_array().cloned().unwrap_or_default(),
                );
                if pa.len() != pb.len() || !pa.iter().zip(&pb).all(|(x, y)| points_equal(x, y)) {
                    return Err(format!("{name}: {pa:?} vs {pb:?}"));
                }
            }
            Ok(())
        }
    }
}

struct Case {
    query: String,
    /// The embedded side evaluates this expression (e.g. the scoped AST) rather than re-parsing.
    expr: promql_parser::parser::Expr,
}

fn cases() -> Vec<Case> {
    let mut cases = plain_cases(QUERIES);
    cases.extend(plain_cases(&GUARDRAILS));
    for arm in [r#"{version="r1"}"#, r#"{version="r0.5"}"#] {
        let arm = ArmSelector::parse(arm).unwrap();
        for q in GUARDRAILS {
            let scoped = rewrite::scope(&rewrite::parse(q).unwrap(), &arm);
            cases.push(Case {
                query: scoped.to_string(),
                expr: scoped,
            });
        }
    }
    cases
}

/// Evaluates every case at every instant on both sides; returns (comparisons, byte-identical
/// answers) and appends a line per disagreement to `failures`.
fn compare_table(
    prom: &Prometheus,
    store: &Store,
    cases: &[Case],
    instants: &[i64],
    failures: &mut Vec<String>,
) -> (usize, usize) {
    let engine = Engine::default();
    let (mut compared, mut byte_identical) = (0, 0);
    for &at in instants {
        for case in cases {
            let path = format!(
                "/api/v1/query?query={}&time={}",
                encode(&case.query),
                seconds(at)
            );
            let theirs = prometheus(prom, &path);
            let ours = engine.instant_expr(store, &case.expr, at);
            compared += 1;
            match (ours, theirs) {
                (Ok(value), Ok((theirs, body))) => {
                    let text = api_response_json(&value);
                    let ours: Json = serde_json::from_str(&text).unwrap();
                    let ordered = case.query.starts_with("sort");
                    if let Err(e) = compare(&ours["data"], &theirs["data"], ordered) {
                        failures.push(format!("{} @ {}: {e}", case.query, seconds(at)));
                    } else if text == body.trim_end() {
                        byte_identical += 1;
                    } else if std::env::var_os("DIFF_VERBOSE").is_some() {
                        eprintln!(
                            "not byte-identical: {} @ {}\n  ours: {text}\n  prom: {}",
                            case.query,
                            seconds(at),
                            body.trim_end()
                        );
                    }
                }
                (Err(_), Err(_)) => {}
                (Ok(v), Err(e)) => failures.push(format!(
                    "{} @ {}: Prometheus failed ({e}), we answered {}",
                    case.query,
                    seconds(at),
                    api_response_json(&v)
                )),
                (Err(e), Ok((_, t))) => failures.push(format!(
                    "{} @ {}: we failed ({e}), Prometheus answered {t}",
                    case.query,
                    seconds(at)
                )),
            }
        }
    }
    (compared, byte_identical)
}

fn plain_cases(queries: &[&str]) -> Vec<Case> {
    queries
        .iter()
        .map(|q| Case {
            query: q.to_string(),
            expr: rewrite::parse(q).unwrap_or_else(|e| panic!("{q}: {e}")),
        })
        .collect()
}

/// Series with staleness markers, written after the history (remote write keeps the marker's
/// bit pattern; OpenMetrics history cannot carry one). `stale_gauge{case="a"}` and
/// `stale_counter_total` go stale at `S0 + 315 s` and come back at `S0 + 450/600 s`.
const S0: i64 = T0 + 3_900_000;

fn stale_series() -> Vec<canary_testkit::RemoteSeries> {
    let labels = |name: &str, case: &str| {
        vec![
            ("__name__".to_owned(), name.to_owned()),
            ("case".to_owned(), case.to_owned()),
        ]
    };
    let stale = canary_promql::store::stale_nan();
    let at = |k: i64| S0 + k * 15_000;
    let mut gauge_a: Vec<(i64, f64)> = (0..21).map(|k| (at(k), k as f64 * 1.5)).collect();
    gauge_a.push((at(21), stale));
    gauge_a.extend((40..51).map(|k| (at(k), k as f64)));
    let gauge_b: Vec<(i64, f64)> = (0..51).map(|k| (at(k), 100.0 - k as f64)).collect();
    let mut counter: Vec<(i64, f64)> = (0..21).map(|k| (at(k), k as f64 * 3.0)).collect();
    counter.push((at(21), stale));
    counter.extend((30..51).map(|k| (at(k), k as f64 * 3.0)));
    vec![
        (labels("stale_gauge", "a"), gauge_a),
        (labels("stale_gauge", "b"), gauge_b),
        (labels("stale_counter_total", "a"), counter),
    ]
}

const STALE_QUERIES: &[&str] = &[
    "stale_gauge",
    "count(stale_gauge)",
    "stale_gauge offset 1m",
    "timestamp(stale_gauge)",
    r#"absent(stale_gauge{case="a"})"#,
    "rate(stale_counter_total[5m])",
    "increase(stale_counter_total[10m])",
    "irate(stale_counter_total[5m])",
    "resets(stale_counter_total[10m])",
    "present_over_time(stale_counter_total[1m])",
    "count_over_time(stale_gauge[10m])",
    "last_over_time(stale_gauge[2m])",
    "changes(stale_gauge[10m])",
    "max_over_time(stale_gauge[10m:1m])",
    "sum(stale_gauge) + on() group_left count(stale_counter_total)",
];

#[test]
fn embedded_evaluator_matches_prometheus() {
    let om = history::generate().openmetrics();
    let mut store = Store::from_openmetrics(&om).expect("history loads");
    let prom = Prometheus::with_history_writable(&om);
    let engine = Engine::default();
    let cases = cases();
    assert!(cases.len() >= 80 + 18, "{} cases", cases.len());

    let mut failures = Vec::new();
    let (mut compared, mut byte_identical) =
        compare_table(&prom, &store, &cases, &instants(), &mut failures);

    // Staleness markers, through remote write on their side and appends on ours.
    let stale = stale_series();
    prom.remote_write(&stale);
    for (labels, points) in &stale {
        let labels = canary_promql::Labels::from_pairs(labels.iter().cloned());
        for &(t, v) in points {
            store.append(&labels, t, v).expect("append");
        }
    }
    let marker = S0 + 21 * 15_000;
    let stale_instants = [
        marker - 1,
        marker,
        marker + 1,
        marker + 100_000,
        S0 + 620_000,
        S0 + 760_000,
    ];
    let (c, b) = compare_table(
        &prom,
        &store,
        &plain_cases(STALE_QUERIES),
        &stale_instants,
        &mut failures,
    );
    compared += c;
    byte_identical += b;

    assert!(
        failures.is_empty(),
        "{} of {compared} comparisons differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // serde_json prints an object's keys sorted, as Prometheus prints label sets; most answers
    // are the very same bytes (the rest differ in the last digit of a transcendental function
    // or in the order of series that Prometheus takes from a hash map).
    eprintln!("{compared} comparisons, {byte_identical} byte-identical");
    assert!(
        byte_identical > compared * 9 / 10,
        "{byte_identical} of {compared} byte-identical"
    );

    // Range queries through /api/v1/query_range.
    for (query, start, end, step) in [
        (
            GUARDRAILS[0].to_owned(),
            T0 + 600_000,
            T0 + 1_800_000,
            60_000,
        ),
        (
            GUARDRAILS[2].to_owned(),
            T0 + 1_700_000,
            T0 + 2_000_000,
            15_000,
        ),
        (
            "flaky_gauge".to_owned(),
            T0 + 1_150_000,
            T0 + 2_500_000,
            30_000,
        ),
        (
            "rate(sse_total[1m])".to_owned(),
            T0 + 1_790_000,
            T0 + 1_830_000,
            1_000,
        ),
        (
            "max_over_time(db_connection_pool_utilization[5m:1m])".to_owned(),
            T0,
            T0 + 900_000,
            70_000,
        ),
        ("time()".to_owned(), T0, T0 + 60_000, 20_000),
        ("stale_gauge".to_owned(), S0, S0 + 800_000, 15_000),
        (
            "rate(stale_counter_total[1m])".to_owned(),
            S0,
            S0 + 800_000,
            10_000,
        ),
    ] {
        let path = format!(
            "/api/v1/query_range?query={}&start={}&end={}&step={}",
            encode(&query),
            seconds(start),
            seconds(end),
            seconds(step)
        );
        let (theirs, _) = prometheus(&prom, &path).unwrap_or_else(|e| panic!("{query}: {e}"));
        let ours = engine.range(&store, &query, start, end, step).unwrap();
        let ours: Json = serde_json::from_str(&api_response_json(&ours)).unwrap();
        assert!(
            !ours["data"]["result"].as_array().unwrap().is_empty(),
            "range {query} should have data"
        );
        compare(&ours["data"], &theirs["data"], true)
            .unwrap_or_else(|e| panic!("range {query}: {e}"));
    }
}

/// A history of the given series only, loaded into a store and into a Prometheus.
fn with_history(series: &[Series<'_>]) -> (Store, Prometheus) {
    let mut h = history::History::default();
    for (family, labels, points) in series {
        h.series(family, "gauge", labels, points);
    }
    let om = h.openmetrics();
    let store = Store::from_openmetrics(&om).expect("history loads");
    (store, Prometheus::with_history(&om))
}

/// A gauge's family, labels and samples `(t ms, value)`.
type Series<'a> = (&'a str, Vec<(&'a str, &'a str)>, Vec<(i64, f64)>);

/// `value` every 15 s over the 10 minutes after `T0`.
fn constant(value: f64) -> Vec<(i64, f64)> {
    (0..=40).map(|k| (T0 + k * 15_000, value)).collect()
}

/// Fails the test with every disagreement on `queries` at `instants`. Prometheus must answer
/// every query but those in `errors` (which it must refuse), so that no comparison passes
/// because both sides failed.
fn assert_agree(
    prom: &Prometheus,
    store: &Store,
    queries: &[&str],
    errors: &[&str],
    instants: &[i64],
) {
    for &at in instants {
        for &query in queries {
            let path = format!("/api/v1/query?query={}&time={}", encode(query), seconds(at));
            let answered = prometheus(prom, &path);
            assert_eq!(
                answered.is_err(),
                errors.contains(&query),
                "{query} @ {}: Prometheus answered {answered:?}",
                seconds(at)
            );
        }
    }
    let mut failures = Vec::new();
    let (compared, identical) =
        compare_table(prom, store, &plain_cases(queries), instants, &mut failures);
    assert!(
        failures.is_empty(),
        "{} of {compared} comparisons differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("{compared} comparisons, {identical} byte-identical");
}

/// `query_range` on both sides must agree, and must have data.
fn assert_range_agrees(
    prom: &Prometheus,
    store: &Store,
    query: &str,
    (start, end, step): (i64, i64, i64),
) {
    let path = format!(
        "/api/v1/query_range?query={}&start={}&end={}&step={}",
        encode(query),
        seconds(start),
        seconds(end),
        seconds(step)
    );
    let (theirs, _) = prometheus(prom, &path).unwrap_or_else(|e| panic!("{query}: {e}"));
    let ours = Engine::default()
        .range(store, query, start, end, step)
        .unwrap_or_else(|e| panic!("{query}: {e}"));
    let ours: Json = serde_json::from_str(&api_response_json(&ours)).unwrap();
    assert!(
        !ours["data"]["result"].as_array().unwrap().is_empty(),
        "range {query} should have data"
    );
    compare(&ours["data"], &theirs["data"], true).unwrap_or_else(|e| panic!("range {query}: {e}"));
}

/// Milliseconds of a UTC calendar instant, for readability: (Unix seconds, milliseconds).
const fn utc(unix_seconds: i64, ms: i64) -> i64 {
    unix_seconds * 1000 + ms
}

const DATE_FUNCTIONS: [&str; 8] = [
    "year",
    "month",
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "hour",
    "minute",
    "days_in_month",
];

#[test]
fn date_functions_match_prometheus() {
    // Sample values read as Unix seconds: the last second of leap days and years, a century
    // that is not a leap year and one that is, before 1970 and before year 1, a fraction (Go
    // truncates toward zero), and values that are no time at all.
    let events: &[(&str, f64)] = &[
        ("leap_day_last_second", 1_709_251_199.0),
        ("after_leap_day", 1_709_251_200.0),
        ("new_years_eve", 1_704_067_199.0),
        ("new_year", 1_704_067_200.0),
        ("february_2023_end", 1_677_628_799.0),
        ("february_2100_end", 4_107_542_399.0),
        ("march_2100", 4_107_542_400.0),
        ("leap_day_2000", 951_825_600.0),
        ("leap_year_last_second", 1_735_689_599.0),
        ("january_end_fraction", 1_706_745_599.9),
        ("before_epoch", -1.5),
        ("half_before_epoch", -0.5),
        ("year_one", -62_135_596_800.0),
        ("before_year_one", -62_135_596_801.0),
        ("nan", f64::NAN),
        ("inf", f64::INFINITY),
        ("negative_inf", f64::NEG_INFINITY),
        ("huge", 1e20),
    ];
    let series: Vec<Series<'_>> = events
        .iter()
        .map(|&(event, v)| {
            (
                "event_time_seconds",
                vec![("event", event), ("job", "relay")],
                constant(v),
            )
        })
        .collect();
    let (store, prom) = with_history(&series);

    // With a vector argument: every event, inside the history.
    let mut queries: Vec<String> = Vec::new();
    for f in DATE_FUNCTIONS {
        queries.push(format!("{f}(event_time_seconds)"));
        queries.push(format!("{f}()"));
    }
    queries.push(r#"day_of_week(timestamp(event_time_seconds{event="nan"}))"#.into());
    queries.push("days_in_month(event_time_seconds + 86400 * 31)".into());
    queries.push(r#"hour(event_time_seconds) * 60 + minute(event_time_seconds) > 1000"#.into());
    queries.push(r#"year(vector(1709251199)) - year()"#.into());
    let queries: Vec<&str> = queries.iter().map(String::as_str).collect();
    assert_agree(&prom, &store, &queries, &[], &[T0 + 300_000, T0 + 570_500]);

    // Without an argument: the evaluation time, at month and year boundaries, on leap days
    // and around 1970 (where Go's division truncates toward zero).
    let mut queries: Vec<String> = Vec::new();
    for f in DATE_FUNCTIONS {
        queries.push(format!("{f}()"));
        queries.push(format!("{f}(vector(time()))"));
    }
    let queries: Vec<&str> = queries.iter().map(String::as_str).collect();
    let boundaries = [
        utc(1_709_251_199, 999), // 2024-02-29 23:59:59.999
        utc(1_709_251_200, 0),   // 2024-03-01 00:00:00
        utc(1_704_067_199, 999), // 2023-12-31 23:59:59.999
        utc(1_704_067_200, 0),   // 2024-01-01 00:00:00
        utc(1_677_628_799, 999), // 2023-02-28 23:59:59.999
        utc(4_107_542_399, 999), // 2100-02-28 23:59:59.999, no leap day
        utc(951_868_799, 999),   // 2000-02-29 23:59:59.999, a leap day
        utc(1_735_689_599, 0),   // 2024-12-31 23:59:59, day 366
        utc(1_682_899_140, 0),   // 2023-04-30 23:59:00
        -500,
        -1_500,
    ];
    assert_agree(&prom, &store, &queries, &[], &boundaries);

    // Range queries step across February's end and across a new year.
    for query in [
        "day_of_month()",
        "days_in_month()",
        "month()",
        "day_of_year()",
    ] {
        assert_range_agrees(
            &prom,
            &store,
            query,
            (utc(1_709_121_600, 0), utc(1_709_294_400, 0), 21_600_000),
        );
    }
    for query in ["year()", "day_of_week()", "hour()"] {
        assert_range_agrees(
            &prom,
            &store,
            query,
            (utc(1_703_959_200, 0), utc(1_704_153_600, 0), 10_800_000),
        );
    }
}

#[test]
fn holt_winters_matches_prometheus() {
    let mut rng = history::Rng::new(0x4017);
    let at = |k: i64| T0 + k * 15_000;
    // A slow wave on a slope, noise, a counter that resets, a series with NaN and +Inf, and
    // one sampled every 2 minutes (a 1-minute window holds at most one sample).
    let smooth: Vec<(i64, f64)> = (0..240)
        .map(|k| {
            (
                at(k),
                100.0 + 0.05 * k as f64 + 4.0 * (k as f64 / 12.0).sin(),
            )
        })
        .collect();
    let noisy = |rng: &mut history::Rng| -> Vec<(i64, f64)> {
        (0..240)
            .map(|k| {
                (
                    at(k) + (rng.unit() * 400.0) as i64,
                    rng.unit() * 100.0 - 20.0,
                )
            })
            .collect()
    };
    let (noisy_a, noisy_b) = (noisy(&mut rng), noisy(&mut rng));
    let counter: Vec<(i64, f64)> = (0..240).map(|k| (at(k), ((k % 100) * 7) as f64)).collect();
    let spiky: Vec<(i64, f64)> = (0..240)
        .map(|k| {
            let v = match k % 50 {
                10 => f64::NAN,
                30 => f64::INFINITY,
                _ => k as f64,
            };
            (at(k), v)
        })
        .collect();
    let sparse: Vec<(i64, f64)> = (0..30).map(|k| (at(8 * k), k as f64 * 2.5)).collect();
    let (store, prom) = with_history(&[
        ("smooth_gauge", vec![("instance", "a")], smooth),
        ("noisy_gauge", vec![("instance", "a")], noisy_a),
        ("noisy_gauge", vec![("instance", "b")], noisy_b),
        ("reset_counter_total", vec![("instance", "a")], counter),
        ("spiky_gauge", vec![("instance", "a")], spiky),
        ("sparse_gauge", vec![("instance", "a")], sparse),
    ]);

    let errors = [
        "holt_winters(smooth_gauge[5m], 1, 0.5)",
        "holt_winters(smooth_gauge[5m], 0.5, 0)",
    ];
    let queries = [
        "holt_winters(smooth_gauge[5m], 0.5, 0.5)",
        "holt_winters(smooth_gauge[10m], 0.1, 0.9)",
        "holt_winters(smooth_gauge[30m], 0.9, 0.1)",
        "holt_winters(smooth_gauge[5m] offset 10m, 0.3, 0.25 + 0.25)",
        "holt_winters(noisy_gauge[5m], 0.3, 0.3)",
        "holt_winters(noisy_gauge[15m], 0.01, 0.99)",
        "holt_winters(noisy_gauge[2m], 0.99, 0.01)",
        "sum(holt_winters(noisy_gauge[5m], 0.5, 0.5))",
        "holt_winters(reset_counter_total[10m], 0.2, 0.4)",
        "holt_winters(rate(reset_counter_total[1m])[10m:1m], 0.4, 0.6)",
        "holt_winters(spiky_gauge[5m], 0.5, 0.5)",
        "holt_winters(spiky_gauge[20m], 0.5, 0.5)",
        "holt_winters(sparse_gauge[1m], 0.5, 0.5)",
        "holt_winters(sparse_gauge[5m], 0.5, 0.5)",
        "holt_winters(noisy_gauge[5m], NaN, 0.5)",
        // No series to smooth: Prometheus does not look at the factors.
        "holt_winters(nonexistent[5m], 2, 0.5)",
        // Factors out of range: errors (compared word for word below).
        errors[0],
        errors[1],
    ];
    let instants = [
        T0 + 300_000,
        T0 + 1_200_000 + 7_500,
        T0 + 2_700_000 + 1,
        T0 + 3_600_000,
    ];
    assert_agree(&prom, &store, &queries, &errors, &instants);
    assert_range_agrees(
        &prom,
        &store,
        "holt_winters(smooth_gauge[5m], 0.5, 0.5)",
        (T0 + 600_000, T0 + 1_800_000, 60_000),
    );

    // Out-of-range factors: Prometheus' execution error, word for word; the smoothing factor
    // is checked first; a single sample in the window is enough to be checked.
    for (query, at) in [
        ("holt_winters(smooth_gauge[5m], 1, 0.5)", T0 + 300_000),
        ("holt_winters(smooth_gauge[5m], 0.5, 0)", T0 + 300_000),
        ("holt_winters(smooth_gauge[5m], 1.5, 3)", T0 + 300_000),
        ("holt_winters(smooth_gauge[5m], -Inf, 0.5)", T0 + 300_000),
        ("holt_winters(smooth_gauge[5m], 0.5, 1e20)", T0 + 300_000),
        (
            "holt_winters(smooth_gauge[5m], 0.5, -0.0000001)",
            T0 + 300_000,
        ),
        (
            "holt_winters(sparse_gauge[1m], 2, 0.5)",
            T0 + 8 * 15_000 + 30_000,
        ),
    ] {
        let path = format!("/api/v1/query?query={}&time={}", encode(query), seconds(at));
        let (status, body) = canary_testkit::http_get(prom.addr, &path).unwrap();
        let theirs: Json = serde_json::from_str(&body).unwrap();
        assert_eq!(
            (status, theirs["errorType"].as_str()),
            (422, Some("execution")),
            "{query}: {body}"
        );
        match Engine::default().instant(&store, query, at) {
            Err(EvalError::Execution(ours)) => {
                assert_eq!(Some(ours.as_str()), theirs["error"].as_str(), "{query}")
            }
            other => panic!("{query}: we answered {other:?}, Prometheus {body}"),
        }
    }
}

#[test]
fn sort_puts_nan_last_like_prometheus() {
    // Ties, two NaNs, a negative; and a vector longer than 12 (where Go's sort switches from
    // insertion sort to pdqsort) with distinct values and one NaN.
    let small = [
        ("a", 3.0),
        ("b", f64::NAN),
        ("c", 1.0),
        ("d", 3.0),
        ("e", f64::NAN),
        ("f", -2.0),
    ];
    let mut series: Vec<Series<'_>> = small
        .iter()
        .map(|&(slot, v)| ("slot_gauge", vec![("slot", slot)], constant(v)))
        .collect();
    let names: Vec<String> = (0..20).map(|i| format!("s{i:02}")).collect();
    for (i, name) in names.iter().enumerate() {
        let v = if i == 7 {
            f64::NAN
        } else {
            ((i * 37) % 20) as f64 - 4.5
        };
        series.push(("wide_gauge", vec![("slot", name.as_str())], constant(v)));
    }
    let (store, prom) = with_history(&series);
    let queries = [
        "sort(slot_gauge)",
        "sort_desc(slot_gauge)",
        "sort(-slot_gauge)",
        "sort_desc(slot_gauge * 0)",
        r#"sort(slot_gauge{slot=~"b|e"})"#,
        r#"sort_desc(slot_gauge{slot=~"a|b|c"})"#,
        r#"sort(slot_gauge{slot="b"} or slot_gauge{slot="c"})"#,
        "sort(wide_gauge)",
        "sort_desc(wide_gauge)",
        "sort(nonexistent)",
    ];
    assert_agree(&prom, &store, &queries, &[], &[T0 + 300_000]);
}
