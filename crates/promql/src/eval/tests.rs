//! Hand-computed cases for the evaluator: one `check(store, query, at, expect)` helper, the
//! expectation written as Prometheus' API JSON result. The differential suite
//! (`tests/differential.rs`) compares everything else against a real Prometheus.

use super::*;
use crate::store::stale_nan;
use crate::value::api_response_json;

fn store() -> Store {
    let mut s = Store::new();
    let l = |pairs: &[(&str, &str)]| Labels::from_pairs(pairs.iter().copied());
    // A counter every 10 s from t=10 s to t=100 s: 0, 10, 20, ... with a reset at t=60 s.
    for i in 1..=10i64 {
        let v = if i < 6 {
            (i - 1) as f64 * 10.0
        } else {
            (i - 6) as f64 * 5.0
        };
        s.append(&l(&[("__name__", "c"), ("arm", "canary")]), i * 10_000, v)
            .unwrap();
    }
    // A gauge that goes stale at t=50 s.
    for i in 1..=4i64 {
        s.append(
            &l(&[("__name__", "g"), ("arm", "canary")]),
            i * 10_000,
            i as f64,
        )
        .unwrap();
    }
    s.append(
        &l(&[("__name__", "g"), ("arm", "canary")]),
        50_000,
        stale_nan(),
    )
    .unwrap();
    s.append(&l(&[("__name__", "g"), ("arm", "baseline")]), 10_000, 7.0)
        .unwrap();
    s
}

fn check(query: &str, at: Millis, expect: &str) {
    let got = Engine::default()
        .instant(&store(), query, at)
        .unwrap_or_else(|e| panic!("{query}: {e}"));
    let json = api_response_json(&got);
    let data = json
        .strip_prefix(r#"{"status":"success","data":"#)
        .and_then(|s| s.strip_suffix('}'))
        .unwrap_or(&json);
    assert_eq!(data, expect, "{query} @ {at}");
}

fn check_error(query: &str, contains: &str) {
    let err = Engine::default()
        .instant(&store(), query, 100_000)
        .unwrap_err();
    assert!(err.to_string().contains(contains), "{query}: {err}");
}

#[test]
fn rate_extrapolates_and_corrects_resets() {
    // Samples in [40 s, 100 s]: 30 40 | 0 5 10 15 20 -> increase 10 + 20 = 30 over the 60 s
    // sampled, both edges on the window: no extrapolation needed.
    check(
        "increase(c[60s])",
        100_000,
        r#"{"resultType":"vector","result":[{"metric":{"arm":"canary"},"value":[100,"30"]}]}"#,
    );
    check(
        "rate(c[60s])",
        100_000,
        r#"{"resultType":"vector","result":[{"metric":{"arm":"canary"},"value":[100,"0.5"]}]}"#,
    );
    // Window [45 s, 105 s]: samples 50..100 (6), 5 s to start, 5 s to end: 50 sampled + 10.
    check(
        "resets(c[60s]) + changes(c[60s])",
        105_000,
        r#"{"resultType":"vector","result":[{"metric":{"arm":"canary"},"value":[105,"6"]}]}"#,
    );
    check(
        "irate(c[1m])",
        100_000,
        r#"{"resultType":"vector","result":[{"metric":{"arm":"canary"},"value":[100,"0.5"]}]}"#,
    );
}

#[test]
fn staleness_and_lookback() {
    check(
        "g",
        45_000,
        r#"{"resultType":"vector","result":[{"metric":{"__name__":"g","arm":"baseline"},"value":[45,"7"]},{"metric":{"__name__":"g","arm":"canary"},"value":[45,"4"]}]}"#,
    );
    // The marker at 50 s hides the canary at once; the baseline lasts 5 minutes (inclusive).
    check(
        "g",
        310_000,
        r#"{"resultType":"vector","result":[{"metric":{"__name__":"g","arm":"baseline"},"value":[310,"7"]}]}"#,
    );
    check("g", 310_001, r#"{"resultType":"vector","result":[]}"#);
    check(
        "timestamp(g)",
        55_500,
        r#"{"resultType":"vector","result":[{"metric":{"arm":"baseline"},"value":[55.500,"10"]}]}"#,
    );
    check(
        "count_over_time(g[1m])",
        60_000,
        r#"{"resultType":"vector","result":[{"metric":{"arm":"baseline"},"value":[60,"1"]},{"metric":{"arm":"canary"},"value":[60,"4"]}]}"#,
    );
}

#[test]
fn modifiers_and_subqueries() {
    check(
        r#"g{arm="canary"} offset 20s"#,
        40_000,
        r#"{"resultType":"vector","result":[{"metric":{"__name__":"g","arm":"canary"},"value":[40,"2"]}]}"#,
    );
    check(
        r#"g{arm="canary"} @ 30"#,
        1_000_000,
        r#"{"resultType":"vector","result":[{"metric":{"__name__":"g","arm":"canary"},"value":[1000,"3"]}]}"#,
    );
    // Steps at 20, 40, 60 s (aligned to 20 s): 2, 4, and nothing after the marker.
    check(
        r#"sum_over_time(g{arm="canary"}[60s:20s])"#,
        60_000,
        r#"{"resultType":"vector","result":[{"metric":{"arm":"canary"},"value":[60,"6"]}]}"#,
    );
    check(
        r#"g{arm="canary"}[25s]"#,
        40_000,
        r#"{"resultType":"matrix","result":[{"metric":{"__name__":"g","arm":"canary"},"values":[[20,"2"],[30,"3"],[40,"4"]]}]}"#,
    );
}

#[test]
fn operators_and_aggregations() {
    check(
        "sum(g) * 2",
        40_000,
        r#"{"resultType":"vector","result":[{"metric":{},"value":[40,"22"]}]}"#,
    );
    check(
        "g > bool 5",
        40_000,
        r#"{"resultType":"vector","result":[{"metric":{"arm":"baseline"},"value":[40,"1"]},{"metric":{"arm":"canary"},"value":[40,"0"]}]}"#,
    );
    check(
        r#"g unless on(arm) c"#,
        40_000,
        r#"{"resultType":"vector","result":[{"metric":{"__name__":"g","arm":"baseline"},"value":[40,"7"]}]}"#,
    );
    check(
        "1 < bool 2",
        0,
        r#"{"resultType":"scalar","result":[0,"1"]}"#,
    );
    check(
        r#"absent(nope{job="relay", arm=~"c.*"})"#,
        0,
        r#"{"resultType":"vector","result":[{"metric":{"job":"relay"},"value":[0,"1"]}]}"#,
    );
}

#[test]
fn errors_name_the_problem() {
    check_error(
        r#"sort_by_label(g, "arm")"#,
        "function sort_by_label() is not supported",
    );
    check_error(
        r#"c + on() {__name__=~"c|g"}"#,
        "many-to-many matching not allowed",
    );
    check_error(
        r#"label_replace({__name__=~"c|g"}, "arm", "x", "", "") * 1"#,
        "same labelset",
    );
    check_error("rate(", "does not parse");
    check_error("max_over_time(g[1y:1ms])", "use a larger step");
    // A step longer than the range can leave no step inside it.
    check(
        r#"count_over_time(g[5s:1m])"#,
        45_000,
        r#"{"resultType":"vector","result":[]}"#,
    );
}

#[test]
fn range_queries_evaluate_every_step() {
    let v = Engine::default()
        .range(&store(), r#"g{arm="canary"}"#, 30_000, 60_000, 10_000)
        .unwrap();
    assert_eq!(
        api_response_json(&v),
        r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"__name__":"g","arm":"canary"},"values":[[30,"3"],[40,"4"]]}]}}"#
    );
    assert!(Engine::default().range(&store(), "g[1m]", 0, 1, 1).is_err());
}
