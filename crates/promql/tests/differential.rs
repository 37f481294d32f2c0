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
use canary_promql::{Engine, Store};
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
    format!("{}.{:03}", t.div_euclid(1000), t.rem_euclid(1000))
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
