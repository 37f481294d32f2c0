//! Rewrites of parsed PromQL: scoping a query to one arm, and compressing its time windows.
//!
//! Guardrail queries are written once, unscoped. [`scope`] injects an arm's label matchers into
//! every vector selector of the AST, so the same query yields a canary and a baseline value
//! without templates. [`compress_time`] divides every range, offset and subquery step by a factor,
//! which is how the demo runs a 60-minute runbook in one minute with the same queries.

use std::time::Duration;

use promql_parser::label::{MatchOp, Matcher, Matchers};
use promql_parser::parser::{self, Expr};

use crate::walk::walk_mut;

/// A PromQL error, with the parser's own message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RewriteError {
    #[error("PromQL does not parse: {0}")]
    Parse(String),
    #[error(
        "selector {selector:?} must be a label matcher set like '{{version=\"r1\"}}': {reason}"
    )]
    Selector { selector: String, reason: String },
    #[error("time compression factor must be a finite number > 0, got {0}")]
    Factor(f64),
}

/// Parses a PromQL expression as Prometheus 2.42 does (see [`crate::eval::parse`]), keeping the
/// parser's message on failure.
pub fn parse(query: &str) -> Result<Expr, RewriteError> {
    crate::eval::parse(query).map_err(RewriteError::Parse)
}

/// The label matchers of an arm, parsed from a selector such as `{version="r1", region=~"eu.*"}`.
#[derive(Debug, Clone)]
pub struct ArmSelector {
    matchers: Vec<Matcher>,
}

impl ArmSelector {
    /// Parses `{...}` (a bare matcher list, no metric name, no `or`).
    pub fn parse(selector: &str) -> Result<Self, RewriteError> {
        let err = |reason: &str| RewriteError::Selector {
            selector: selector.to_owned(),
            reason: reason.to_owned(),
        };
        let trimmed = selector.trim();
        if !trimmed.starts_with('{') {
            return Err(err("it must start with '{'"));
        }
        match crate::eval::parse(trimmed) {
            Ok(Expr::VectorSelector(vs)) => {
                if vs.name.is_some() || vs.matchers.matchers.iter().any(|m| m.name == "__name__") {
                    return Err(err("it must not name a metric"));
                }
                if !vs.matchers.or_matchers.is_empty() {
                    return Err(err("'or' is not allowed in an arm selector"));
                }
                if vs.offset.is_some() || vs.at.is_some() {
                    return Err(err("offset and @ are not allowed in an arm selector"));
                }
                Ok(ArmSelector {
                    matchers: vs.matchers.matchers,
                })
            }
            Ok(_) => Err(err("it is not a plain label matcher set")),
            Err(e) => Err(err(&e)),
        }
    }

    /// The label names this selector constrains.
    pub fn label_names(&self) -> impl Iterator<Item = &str> {
        self.matchers.iter().map(|m| m.name.as_str())
    }

    /// Whether a label set satisfies every matcher.
    pub fn matches(&self, labels: &crate::value::Labels) -> bool {
        self.matchers
            .iter()
            .all(|m| m.is_match(labels.get(&m.name).unwrap_or("")))
    }

    /// The `name=value` pairs of the equality matchers — the labels a scraper attaches to an
    /// arm's targets so that this selector selects them.
    pub fn equality_labels(&self) -> Vec<(String, String)> {
        self.matchers
            .iter()
            .filter(|m| matches!(m.op, MatchOp::Equal))
            .map(|m| (m.name.clone(), m.value.clone()))
            .collect()
    }
}

impl std::fmt::Display for ArmSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{{{}}}", Matchers::new(self.matchers.clone()))
    }
}

/// Returns `query` with the arm's matchers injected into every vector selector.
///
/// A matcher on a label the arm constrains is replaced by the arm's, so a query cannot escape its
/// arm by naming the label itself. In `{a="1" or b="2"}` every alternative gets the matchers.
pub fn scope(query: &Expr, arm: &ArmSelector) -> Expr {
    let mut expr = query.clone();
    walk_selectors(&mut expr, &mut |matchers| inject(matchers, arm));
    expr
}

/// [`scope`] on source text, printed back as PromQL.
pub fn scope_str(query: &str, arm: &ArmSelector) -> Result<String, RewriteError> {
    Ok(scope(&parse(query)?, arm).to_string())
}

/// A plan's query as one arm sees it on the run's clock: parsed, its range windows compressed
/// by `time_scale` when the run is faster than the runbook (a rehearsal, the demo), then
/// [`scope`]d to `arm`. The engine, the alert rules and the dashboards all scope this way.
pub fn scope_on_clock(
    query: &str,
    arm: &ArmSelector,
    time_scale: f64,
) -> Result<Expr, RewriteError> {
    let mut expr = parse(query)?;
    if time_scale > 1.0 {
        expr = compress_time(&expr, time_scale)?;
    }
    Ok(scope(&expr, arm))
}

fn inject(matchers: &mut Matchers, arm: &ArmSelector) {
    let apply = |list: &mut Vec<Matcher>| {
        list.retain(|m| !arm.matchers.iter().any(|a| a.name == m.name));
        list.extend(arm.matchers.iter().cloned());
    };
    if matchers.or_matchers.is_empty() {
        apply(&mut matchers.matchers);
    } else {
        for alternative in &mut matchers.or_matchers {
            apply(alternative);
        }
    }
}

/// Returns `query` with every range, offset, subquery range and step divided by `factor`, rounded
/// to whole milliseconds (never below 1 ms).
pub fn compress_time(query: &Expr, factor: f64) -> Result<Expr, RewriteError> {
    if !(factor.is_finite() && factor > 0.0) {
        return Err(RewriteError::Factor(factor));
    }
    let scale = |d: Duration| -> Duration {
        let ms = (d.as_secs_f64() * 1000.0 / factor).round().max(1.0);
        Duration::from_millis(ms as u64)
    };
    let mut expr = query.clone();
    walk_mut(&mut expr, (), &mut |node, ()| match node {
        Expr::MatrixSelector(ms) => {
            ms.range = scale(ms.range);
            scale_offset(&mut ms.vs.offset, &scale);
        }
        Expr::VectorSelector(vs) => scale_offset(&mut vs.offset, &scale),
        Expr::Subquery(sq) => {
            sq.range = scale(sq.range);
            sq.step = sq.step.map(&scale);
            scale_offset(&mut sq.offset, &scale);
        }
        _ => {}
    });
    Ok(expr)
}

fn scale_offset(offset: &mut Option<parser::Offset>, scale: &impl Fn(Duration) -> Duration) {
    *offset = match offset.take() {
        Some(parser::Offset::Pos(d)) => Some(parser::Offset::Pos(scale(d))),
        Some(parser::Offset::Neg(d)) => Some(parser::Offset::Neg(scale(d))),
        None => None,
    };
}

fn walk_selectors(expr: &mut Expr, f: &mut impl FnMut(&mut Matchers)) {
    walk_mut(expr, (), &mut |node, ()| match node {
        Expr::VectorSelector(vs) => f(&mut vs.matchers),
        Expr::MatrixSelector(ms) => f(&mut ms.vs.matchers),
        _ => {}
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_scope(query: &str, selector: &str, expect: &str) {
        let arm = ArmSelector::parse(selector).unwrap();
        let scoped = scope_str(query, &arm).unwrap();
        assert_eq!(scoped, expect, "scoping {query} with {selector}");
        // The printed query parses again to the same tree: the rewrite is lossless.
        let reparsed = parse(&scoped).unwrap();
        assert_eq!(reparsed, scope(&parse(query).unwrap(), &arm));
    }

    #[test]
    fn scoping_reaches_every_selector_of_the_runbook_guardrails() {
        let r1 = r#"{version="r1"}"#;
        for (query, expect) in [
            (
                "histogram_quantile(0.95, sum by (le) (rate(ttfv_ms_bucket[5m])))",
                r#"histogram_quantile(0.95, sum by (le) (rate(ttfv_ms_bucket{version="r1"}[5m])))"#,
            ),
            (
                "sum(increase(memory_rls_policy_errors_total[5m]))",
                r#"sum(increase(memory_rls_policy_errors_total{version="r1"}[5m]))"#,
            ),
            (
                "100 * sum(rate(sse_complete_total[5m])) / sum(rate(sse_total[5m]))",
                r#"100 * sum(rate(sse_complete_total{version="r1"}[5m])) / sum(rate(sse_total{version="r1"}[5m]))"#,
            ),
            (
                "max(db_connection_pool_utilization)",
                r#"max(db_connection_pool_utilization{version="r1"})"#,
            ),
        ] {
            check_scope(query, r1, expect);
        }
    }

    #[test]
    fn scoping_replaces_the_arms_labels_and_keeps_the_rest() {
        check_scope(
            r#"up{version="r0.5", job="relay"} offset 5m"#,
            r#"{version="r1"}"#,
            r#"up{job="relay",version="r1"} offset 5m"#,
        );
        check_scope(
            r#"max_over_time(rate(x{a=~"b.*"}[1m])[10m:30s])"#,
            r#"{version="r1", zone!="eu"}"#,
            r#"max_over_time(rate(x{a=~"b.*",version="r1",zone!="eu"}[1m])[10m:30s])"#,
        );
        check_scope(
            r#"label_replace(x, "d", "$1", "s", "(.*)") and on (i) y"#,
            r#"{version="r1"}"#,
            r#"label_replace(x{version="r1"}, "d", "$1", "s", "(.*)") and on (i) y{version="r1"}"#,
        );
    }

    #[test]
    fn arm_selectors_must_be_plain_matcher_sets() {
        for bad in [
            "version=\"r1\"",
            "up{version=\"r1\"}",
            "{version=\"r1\"} offset 1m",
            "{",
        ] {
            assert!(ArmSelector::parse(bad).is_err(), "{bad} should be rejected");
        }
        let arm = ArmSelector::parse(r#"{version="r1", zone=~"eu.*"}"#).unwrap();
        assert_eq!(arm.equality_labels(), vec![("version".into(), "r1".into())]);
        assert_eq!(arm.to_string(), r#"{version="r1",zone=~"eu.*"}"#);
    }

    #[test]
    fn time_compression_divides_every_window() {
        let q = parse("sum(rate(x[5m] offset 1h)) + max_over_time(y[30m:1m])").unwrap();
        let c = compress_time(&q, 60.0).unwrap().to_string();
        assert_eq!(c, "sum(rate(x[5s] offset 1m)) + max_over_time(y[30s:1s])");
        assert!(compress_time(&q, 0.0).is_err());
    }
}
