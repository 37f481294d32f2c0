//! What a parsed PromQL expression reads: its selectors (and whether each is read through a
//! range), its metric names, how far back in time it reaches, and a label set satisfying a
//! selector's matchers.
//!
//! Used wherever canary reasons about a query without evaluating it: which guardrails a
//! dashboard panel shows, which series a `promtool` test must synthesise and for how long.

use std::time::Duration;

use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::{Expr, Offset, VectorSelector};

use crate::value::Labels;
use crate::walk::walk;

/// A vector selector an expression reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Selector {
    /// The metric name an equality matcher fixes (`x` in `x{a="b"}` or `{__name__="x"}`);
    /// `None` when no matcher fixes it.
    pub metric: Option<String>,
    /// The matchers, the metric name included as `__name__="x"`. Of a selector with `or`
    /// alternatives, the first alternative's.
    pub matchers: Vec<Matcher>,
    /// Read through a range: in a range selector (`x[5m]`) or anywhere inside a subquery.
    pub in_range: bool,
}

/// Every vector selector of `expr`, in order of appearance (range selectors included).
pub fn selectors(expr: &Expr) -> Vec<Selector> {
    let mut out = Vec::new();
    walk(expr, false, &mut |node, in_range| match node {
        Expr::VectorSelector(vs) => {
            out.push(selector(vs, in_range));
            in_range
        }
        Expr::MatrixSelector(ms) => {
            out.push(selector(&ms.vs, true));
            in_range
        }
        Expr::Subquery(_) => true,
        _ => in_range,
    });
    out
}

fn selector(vs: &VectorSelector, in_range: bool) -> Selector {
    let mut matchers = vs
        .matchers
        .or_matchers
        .first()
        .cloned()
        .unwrap_or_else(|| vs.matchers.matchers.clone());
    if let Some(name) = &vs.name {
        matchers.push(Matcher::new(MatchOp::Equal, "__name__", name));
    }
    let metric = matchers
        .iter()
        .find(|m| m.name == "__name__" && matches!(m.op, MatchOp::Equal) && !m.value.is_empty())
        .map(|m| m.value.clone());
    Selector {
        metric,
        matchers,
        in_range,
    }
}

/// The metric names `expr` reads (`ttfv_ms_bucket`, ...), in order of appearance, each once.
pub fn metric_names(expr: &Expr) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for metric in selectors(expr).into_iter().filter_map(|s| s.metric) {
        if !names.contains(&metric) {
            names.push(metric);
        }
    }
    names
}

/// How far back before the evaluation time `expr` reads samples: the longest path of range
/// windows, subquery windows and (positive) offsets. The lookback of an instant selector is not
/// included; `@` modifiers are ignored.
pub fn reach(expr: &Expr) -> Duration {
    let offset = |o: &Option<Offset>| match o {
        Some(Offset::Pos(d)) => *d,
        _ => Duration::ZERO,
    };
    let mut longest = Duration::ZERO;
    // The context is how far back the enclosing subqueries already reach.
    walk(expr, Duration::ZERO, &mut |node, outer| match node {
        Expr::Subquery(s) => outer + s.range + offset(&s.offset),
        Expr::VectorSelector(vs) => {
            longest = longest.max(outer + offset(&vs.offset));
            outer
        }
        Expr::MatrixSelector(ms) => {
            longest = longest.max(outer + ms.range + offset(&ms.vs.offset));
            outer
        }
        _ => outer,
    });
    longest
}

/// A label set satisfying every matcher, one value per label the matchers name, or `None` when
/// no value tried satisfies some label's matchers. Values tried: the equality matchers' values,
/// literal readings of regex alternatives (`5..` → `500`), then `""`, `x` and `canary-test`.
pub fn satisfying_labels(matchers: &[Matcher]) -> Option<Labels> {
    let mut names: Vec<&str> = matchers.iter().map(|m| m.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let mut pairs = Vec::new();
    for name in names {
        let on_name: Vec<&Matcher> = matchers.iter().filter(|m| m.name == name).collect();
        let value = candidates(&on_name)
            .into_iter()
            .find(|v| on_name.iter().all(|m| m.is_match(v)))?;
        pairs.push((name.to_owned(), value));
    }
    Some(Labels::from_pairs(pairs))
}

/// Label values worth trying for the matchers of one label: equality values first, then
/// literal readings of regex alternatives, then generic values.
fn candidates(matchers: &[&Matcher]) -> Vec<String> {
    let mut out = Vec::new();
    for m in matchers {
        match &m.op {
            MatchOp::Equal => out.push(m.value.clone()),
            MatchOp::Re(_) => {
                for alt in m.value.split('|') {
                    out.push(literal_reading(alt));
                }
            }
            MatchOp::NotEqual | MatchOp::NotRe(_) => {}
        }
    }
    out.extend(["", "x", "canary-test"].map(String::from));
    out
}

/// A string a simple regex alternative matches: `5..` → `500`, `api-.*` → `api-`.
fn literal_reading(alt: &str) -> String {
    alt.replace(".+", "x")
        .replace(".*", "")
        .replace("\\d", "0")
        .replace('.', "0")
        .chars()
        .filter(|c| !"^$()[]{}?*+\\".contains(*c))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewrite::parse;

    /// `(metric, in_range)` of every selector of `query`.
    fn check_selectors(query: &str, expect: &[(Option<&str>, bool)]) {
        let got: Vec<(Option<String>, bool)> = selectors(&parse(query).unwrap())
            .into_iter()
            .map(|s| (s.metric, s.in_range))
            .collect();
        let expect: Vec<(Option<String>, bool)> = expect
            .iter()
            .map(|(m, r)| (m.map(str::to_owned), *r))
            .collect();
        assert_eq!(got, expect, "{query}");
    }

    #[test]
    fn selectors_know_whether_they_are_read_through_a_range() {
        for (query, expect) in [
            ("up", &[(Some("up"), false)][..]),
            ("rate(x_total[5m])", &[(Some("x_total"), true)]),
            (
                "histogram_quantile(0.95, sum by (le) (rate(ttfv_ms_bucket[5m])))",
                &[(Some("ttfv_ms_bucket"), true)],
            ),
            (
                "max_over_time(g[10m:1m]) / on() group_left h",
                &[(Some("g"), true), (Some("h"), false)],
            ),
            (
                "-(topk(2, a) or b offset 1m)",
                &[(Some("a"), false), (Some("b"), false)],
            ),
            (
                r#"{__name__="n", job="j"} + {job="k"}"#,
                &[(Some("n"), false), (None, false)],
            ),
            ("sum(vector(1)) + scalar(s)", &[(Some("s"), false)]),
            (
                r#"label_replace(v, "d", "$1", "s", "(.*)")"#,
                &[(Some("v"), false)],
            ),
        ] {
            check_selectors(query, expect);
        }
    }

    #[test]
    fn selectors_carry_the_name_and_the_first_or_alternative() {
        let s = selectors(&parse(r#"x{a="1" or b=~"2|3"}"#).unwrap());
        assert_eq!(s.len(), 1);
        let text: Vec<String> = s[0].matchers.iter().map(|m| m.to_string()).collect();
        assert_eq!(text, [r#"a="1""#, r#"__name__="x""#]);
    }

    #[test]
    fn metric_names_in_order_of_appearance_each_once() {
        for (query, expect) in [
            (
                "100 * sum(rate(sse_complete_total[5m])) / sum(rate(sse_total[5m]))",
                &["sse_complete_total", "sse_total"][..],
            ),
            ("a + b + a + {job=\"x\"}", &["a", "b"]),
            ("vector(1)", &[]),
        ] {
            assert_eq!(metric_names(&parse(query).unwrap()), expect, "{query}");
        }
    }

    #[test]
    fn reach_is_the_longest_path_of_windows_and_offsets() {
        let minutes = |m: u64| Duration::from_secs(60 * m);
        for (query, expect) in [
            ("up", Duration::ZERO),
            ("up offset 5m", minutes(5)),
            ("up offset -5m", Duration::ZERO),
            ("rate(x[5m]) + rate(y[10m])", minutes(10)),
            ("rate(x[5m] offset 1h)", minutes(65)),
            ("max_over_time(rate(x[5m])[30m:1m])", minutes(35)),
            ("max_over_time(rate(x[5m])[30m:1m] offset 10m)", minutes(45)),
            (
                "max_over_time((y offset 2m)[30m:1m]) + max_over_time(z[1h:])",
                minutes(60),
            ),
            ("vector(1)", Duration::ZERO),
        ] {
            assert_eq!(reach(&parse(query).unwrap()), expect, "{query}");
        }
    }

    fn check_labels(selector: &str, expect: Option<&[(&str, &str)]>) {
        let matchers = selectors(&parse(selector).unwrap()).remove(0).matchers;
        let got = satisfying_labels(&matchers);
        let expect = expect.map(|pairs| {
            Labels::from_pairs(
                pairs
                    .iter()
                    .map(|(n, v)| ((*n).to_owned(), (*v).to_owned())),
            )
        });
        assert_eq!(got, expect, "{selector}");
        if let Some(labels) = got {
            assert!(
                matchers
                    .iter()
                    .all(|m| m.is_match(labels.get(&m.name).unwrap_or(""))),
                "{selector}: {labels:?}"
            );
        }
    }

    #[test]
    fn satisfying_labels_pick_values_every_matcher_accepts() {
        check_labels(
            r#"http_requests_total{code=~"5..", path=~"api-.*", version="r1"}"#,
            Some(&[
                ("__name__", "http_requests_total"),
                ("code", "500"),
                ("path", "api-"),
                ("version", "r1"),
            ]),
        );
        check_labels(
            r#"x{zone!="eu", tier!~"a|b", env=~"prod|staging", env!="prod"}"#,
            Some(&[
                ("__name__", "x"),
                ("env", "staging"),
                ("tier", ""),
                ("zone", ""),
            ]),
        );
        check_labels(r#"x{pod=~".+"}"#, Some(&[("__name__", "x"), ("pod", "x")]));
        check_labels(r#"x{a="1", a="2"}"#, None);
    }
}
