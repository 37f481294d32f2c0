//! Invariants of the store and evaluator, checked on generated data: answers do not depend on
//! the order series were inserted in; `rate`, `increase` and `irate` of a monotonic counter are
//! never negative; the exposition parsers never panic and locate every error inside the input.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failure here is a test (or benchmark) failure

use canary_promql::exposition::{self, Format};
use canary_promql::value::api_response_json;
use canary_promql::{Engine, Labels, Store, Value};
use proptest::prelude::*;

type GenSeries = (Vec<(String, String)>, Vec<(i64, f64)>);

fn series_strategy() -> impl Strategy<Value = Vec<GenSeries>> {
    let labels = (0..3usize, 0..2usize, 0..3usize).prop_map(|(name, arm, inst)| {
        vec![
            (
                "__name__".to_owned(),
                ["a_total", "b", "h_bucket"][name].to_owned(),
            ),
            ("version".to_owned(), ["r0.5", "r1"][arm].to_owned()),
            ("instance".to_owned(), ["x", "y", "z"][inst].to_owned()),
            ("le".to_owned(), ["1", "5", "+Inf"][inst].to_owned()),
        ]
    });
    let points =
        proptest::collection::vec((1i64..30_000, -5.0f64..50.0), 1..40).prop_map(|steps| {
            let mut t = 1_000_000i64;
            steps
                .into_iter()
                .map(|(dt, v)| {
                    t += dt;
                    (t, v)
                })
                .collect::<Vec<_>>()
        });
    proptest::collection::vec((labels, points), 1..12).prop_map(|mut v| {
        // One entry per label set.
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v.dedup_by(|a, b| a.0 == b.0);
        v
    })
}

const QUERIES: &[&str] = &[
    "a_total",
    "rate(a_total[1m])",
    "sum by (version) (increase(a_total[2m]))",
    "histogram_quantile(0.9, sum by (le) (rate(h_bucket[5m])))",
    "topk(2, b)",
    "b > on(instance) group_left b{version=\"r1\"}",
    "max_over_time(b[3m:20s])",
    "count_values(\"v\", round(b))",
    "b or a_total",
    "sort_desc(b)",
];

fn answers(store: &Store, at: i64) -> Vec<String> {
    let engine = Engine::default();
    QUERIES
        .iter()
        .map(|q| match engine.instant(store, q, at) {
            Ok(v) => normalise(v),
            Err(e) => format!("error: {e}"),
        })
        .collect()
}

/// The answer as JSON, with series sorted where PromQL leaves their order open (aggregation
/// groups follow the input order, which is what insertion order could influence).
fn normalise(v: Value) -> String {
    match v {
        Value::Vector(mut samples) => {
            samples.sort_by(|a, b| a.metric.cmp(&b.metric));
            api_response_json(&Value::Vector(samples))
        }
        other => api_response_json(&other),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn answers_do_not_depend_on_insertion_order(
        series in series_strategy(),
        rotate in 0usize..12,
        at_offset in 0i64..600_000,
    ) {
        let build = |order: &[GenSeries], interleave: bool| {
            let mut store = Store::new();
            if interleave {
                // Round-robin over series, one sample each, as a scraper appends.
                let longest = order.iter().map(|s| s.1.len()).max().unwrap_or(0);
                for i in 0..longest {
                    for (labels, points) in order {
                        if let Some(&(t, v)) = points.get(i) {
                            store.append(&Labels::from_pairs(labels.clone()), t, v).unwrap();
                        }
                    }
                }
            } else {
                for (labels, points) in order {
                    for &(t, v) in points {
                        store.append(&Labels::from_pairs(labels.clone()), t, v).unwrap();
                    }
                }
            }
            store
        };
        let mut reordered = series.clone();
        let n = reordered.len();
        reordered.rotate_left(rotate % n);
        reordered.reverse();
        let at = 1_000_000 + at_offset;
        let a = answers(&build(&series, false), at);
        let b = answers(&build(&reordered, true), at);
        prop_assert_eq!(a, b);
    }

    #[test]
    fn rate_of_a_monotonic_counter_is_never_negative(
        steps in proptest::collection::vec((1i64..20_000, 0.0f64..1e6), 1..80),
        start in 0.0f64..1e9,
        window_s in 1i64..600,
        at_offset in 0i64..900_000,
    ) {
        let mut store = Store::new();
        let labels = Labels::from_pairs([("__name__", "c_total")]);
        let (mut t, mut v) = (10_000_000i64, start);
        for (dt, inc) in steps {
            t += dt;
            v += inc;
            store.append(&labels, t, v).unwrap();
        }
        let at = 10_000_000 + at_offset;
        for f in ["rate", "increase", "irate"] {
            let q = format!("{f}(c_total[{window_s}s])");
            if let Value::Vector(samples) = Engine::default().instant(&store, &q, at).unwrap() {
                for s in samples {
                    prop_assert!(s.point.v >= 0.0, "{} = {}", q, s.point.v);
                }
            }
        }
    }

    #[test]
    fn parsers_never_panic_on_bytes(body in proptest::collection::vec(any::<u8>(), 0..400)) {
        for format in [Format::Text, Format::OpenMetrics] {
            check_error_position(&body, format);
        }
    }

    #[test]
    fn parsers_never_panic_on_near_valid_text(
        body in "([a-z_]{1,6}(\\{([a-z]{1,3}=\"[a-z\\\\\"\n]{0,4}\"(,)?){0,3}\\})? ?[-+0-9.eEInfNa]{0,8}( [0-9.]{0,6})?( # \\{\\} 1)?\n|# (TYPE|HELP|UNIT|EOF) [a-z]{0,5} ?[a-z]{0,8}\n){0,8}",
    ) {
        for format in [Format::Text, Format::OpenMetrics] {
            check_error_position(body.as_bytes(), format);
        }
    }
}

/// Parses `body`; an error must point at an existing line, and at most one past its last byte.
fn check_error_position(body: &[u8], format: Format) {
    if let Err(e) = exposition::parse(body, format) {
        let lines: Vec<&[u8]> = body.split(|&b| b == b'\n').collect();
        assert!(e.line >= 1 && e.line <= lines.len(), "{e} for {body:?}");
        assert!(
            e.column >= 1 && e.column <= lines[e.line - 1].len() + 1,
            "{e} for {body:?}"
        );
    }
}
