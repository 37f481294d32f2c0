//! Whether the canary got enough samples for a guardrail to mean anything, and how much
//! canary-targeted load would make it so.
//!
//! At 5 % of traffic the runbook's 100 queries give the canary about five streams: no basis
//! for a p95 or a 99.6 % success claim. The rules, from `canary_core::statistics`:
//!
//! - **Percentile** `q`: `n ≥ ceil(1 / (1 − q))` samples per evaluation window (p95 → 20,
//!   p99 → 100). With fewer, the "p95" is just the largest value seen.
//! - **Success rate** of at least `bar` %: with zero failures, `n ≥ ceil(3 / (1 − bar))` clean
//!   trials (the rule of three: 99.6 % → 750). With `f` failures the same one-sided 95 %
//!   Poisson bound generalises it: `n ≥ U(f) / (1 − bar)` where `U(f)` is the upper 95 % bound
//!   of a Poisson mean with `f` observed (`U(0) ≈ 3`, `U(1) ≈ 4.74`, `U(2) ≈ 6.30`).
//!
//! Samples are the canary arm's: for a percentile, its requests that delivered a first value
//! (TTFV); for a success rate, all its requests, a failed request counting as a failed trial.
//! The engine treats an insufficient guardrail as no data, never as passed.

use std::time::Duration;

use canary_core::Guardrail;
use canary_core::plan::Comparator;
use canary_core::statistics::{min_samples_for_quantile, min_samples_for_success_rate};

use crate::report::Summary;

/// What a guardrail measures, as far as sample sizes are concerned.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SampleKind {
    /// An empirical quantile, `q` in `0..1` (0.95 for a p95).
    Quantile { q: f64 },
    /// A success ratio that must be at least `bar_percent` (99.6).
    SuccessRate { bar_percent: f64 },
}

/// A guardrail whose sample sufficiency a burst judges.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleRule {
    /// The guardrail's name, as in the plan.
    pub guardrail: String,
    pub kind: SampleKind,
    /// The guardrail's evaluation window (the range of its `rate(...[5m])`), when known: the
    /// samples are needed within each such window.
    pub window: Option<Duration>,
}

impl SampleRule {
    /// The runbook's two: `ttfv_p95` (p95 over 5 m) and `sse_success` (≥ 99.6 % over 5 m).
    pub fn runbook() -> Vec<SampleRule> {
        vec![
            SampleRule {
                guardrail: "ttfv_p95".to_owned(),
                kind: SampleKind::Quantile { q: 0.95 },
                window: Some(Duration::from_secs(300)),
            },
            SampleRule {
                guardrail: "sse_success".to_owned(),
                kind: SampleKind::SuccessRate { bar_percent: 99.6 },
                window: Some(Duration::from_secs(300)),
            },
        ]
    }

    /// The rule for a plan guardrail, read from its query and threshold: a
    /// `histogram_quantile(q, ...)` is a quantile; a ratio (a query with `/`) that must be
    /// `>=` or `>` a value is a success rate (a value ≤ 1 is read as a fraction). Anything else
    /// — counters that must stay 0, gauges — needs no sample count: `None`.
    pub fn for_guardrail(g: &Guardrail) -> Option<SampleRule> {
        let query = g.query.as_str();
        let kind = if let Some(q) = quantile_of(query) {
            SampleKind::Quantile { q }
        } else if matches!(g.must.op, Comparator::Ge | Comparator::Gt)
            && query.contains('/')
            && g.must.value > 0.0
            && g.must.value <= 100.0
        {
            let bar_percent = if g.must.value <= 1.0 {
                g.must.value * 100.0
            } else {
                g.must.value
            };
            SampleKind::SuccessRate { bar_percent }
        } else {
            return None;
        };
        Some(SampleRule {
            guardrail: g.name.clone(),
            kind,
            window: window_of(query),
        })
    }
}

/// `q` of the first `histogram_quantile(q, ...)` in `query`.
fn quantile_of(query: &str) -> Option<f64> {
    let start = query.find("histogram_quantile(")? + "histogram_quantile(".len();
    let rest = &query[start..];
    let q: f64 = rest[..rest.find(',')?].trim().parse().ok()?;
    (q > 0.0 && q < 1.0).then_some(q)
}

/// The first range selector's duration (`[5m]`, or the range of a subquery `[30m:1m]`).
fn window_of(query: &str) -> Option<Duration> {
    let open = query.find('[')?;
    let close = open + query[open..].find(']')?;
    let range = query[open + 1..close].split(':').next()?.trim();
    canary_core::duration::parse(range).ok()
}

/// The verdict for one guardrail.
#[derive(Debug, Clone, PartialEq)]
pub struct SufficiencyCheck {
    pub guardrail: String,
    pub kind: SampleKind,
    /// The rule applied, in words.
    pub rule: String,
    /// The canary's samples in this burst.
    pub samples: u64,
    /// Failed trials among them (success rates only; 0 for quantiles).
    pub failures: u64,
    /// Samples the rule needs (per window, when the window is known).
    pub needed: u64,
    pub sufficient: bool,
    pub window: Option<Duration>,
    /// Canary-targeted requests still needed (per window): `needed − samples`, or 0.
    pub more_canary_requests: u64,
    /// The same through the load balancer at the canary's share, if the share is known and
    /// not zero.
    pub via_lb_requests: Option<u64>,
    /// The canary's share of load-balancer traffic used for `via_lb_requests`, in percent.
    pub canary_share_percent: Option<f64>,
    /// One sentence for the transcript and the decision record.
    pub recommendation: String,
}

/// Judges each rule against the canary arm's summary (`None`: the canary answered nothing).
/// `canary_share_percent` is the canary's share of load-balancer traffic, if known.
pub fn assess(
    rules: &[SampleRule],
    canary: Option<&Summary>,
    canary_share_percent: Option<f64>,
) -> Vec<SufficiencyCheck> {
    rules
        .iter()
        .map(|rule| check(rule, canary, canary_share_percent))
        .collect()
}

fn check(
    rule: &SampleRule,
    canary: Option<&Summary>,
    canary_share_percent: Option<f64>,
) -> SufficiencyCheck {
    let (samples, failures, needed, rule_text) = match rule.kind {
        SampleKind::Quantile { q } => {
            let samples = canary.and_then(|s| s.ttfv).map_or(0, |p| p.count);
            let needed = min_samples_for_quantile(q);
            (
                samples,
                0,
                needed,
                format!(
                    "p{} needs n ≥ {needed} = ceil(1/(1−q)) samples per window; with fewer it is just the maximum",
                    fmt_q(q)
                ),
            )
        }
        SampleKind::SuccessRate { bar_percent } => {
            let samples = canary.map_or(0, |s| s.total);
            let failures = canary.map_or(0, |s| s.failed);
            let needed = min_samples_for_success_rate_with_failures(bar_percent, failures);
            let text = if failures == 0 {
                format!(
                    "≥ {bar_percent} % success needs n ≥ {needed} clean trials (rule of three: 3/(1−p))"
                )
            } else {
                format!(
                    "≥ {bar_percent} % success with {failures} failure(s) needs n ≥ {needed} trials (95 % Poisson bound U(f)/(1−p); rule of three when f = 0)"
                )
            };
            (samples, failures, needed, text)
        }
    };
    let sufficient = samples >= needed;
    let more = needed.saturating_sub(samples);
    let share = canary_share_percent.filter(|s| s.is_finite() && *s > 0.0);
    let via_lb = share.map(|s| (more as f64 * 100.0 / s).ceil() as u64);
    let per_window = rule
        .window
        .map(|w| format!(" per {} window", canary_core::duration::Human(w)))
        .unwrap_or_default();
    let mut recommendation = if sufficient {
        format!("sufficient: {samples} canary samples, {needed} needed{per_window} ({rule_text})")
    } else {
        let mut r = format!(
            "insufficient: {samples} canary samples, {needed} needed{per_window} ({rule_text}); send {more} more canary-targeted requests{per_window} (target canary)"
        );
        match (via_lb, share) {
            (Some(n), Some(s)) => {
                r.push_str(&format!(
                    ", or about {n} through the load balancer at a {s:.1} % canary share"
                ));
            }
            _ => r.push_str(
                "; the canary's share of load-balancer traffic is unknown or zero, so only canary-targeted load can supply them",
            ),
        }
        r
    };
    if let (SampleKind::SuccessRate { bar_percent }, Some(s)) = (rule.kind, canary)
        && let Some(rate) = s.success_rate_percent
        && rate < bar_percent
    {
        recommendation.push_str(&format!(
            "; the canary's observed {rate:.2} % is already below the bar"
        ));
    }
    SufficiencyCheck {
        guardrail: rule.guardrail.clone(),
        kind: rule.kind,
        rule: rule_text,
        samples,
        failures,
        needed,
        sufficient,
        window: rule.window,
        more_canary_requests: more,
        via_lb_requests: via_lb,
        canary_share_percent: share,
        recommendation,
    }
}

fn fmt_q(q: f64) -> String {
    let p = q * 100.0;
    if (p - p.round()).abs() < 1e-9 {
        format!("{p:.0}")
    } else {
        format!("{p}")
    }
}

/// Trials needed to claim a success rate of at least `bar_percent` with 95 % confidence when
/// `failures` failed: `ceil(U(f) / (1 − p))`, `U` the upper one-sided 95 % bound of a Poisson
/// mean with `f` observed. For `f = 0` this is core's rule of three (750 for 99.6 %).
pub fn min_samples_for_success_rate_with_failures(bar_percent: f64, failures: u64) -> u64 {
    if failures == 0 {
        return min_samples_for_success_rate(bar_percent);
    }
    let p = bar_percent / 100.0;
    if !(0.0..1.0).contains(&p) {
        return u64::MAX;
    }
    let needed = (poisson_upper_95(failures) / (1.0 - p)).ceil();
    // At least the failures plus the zero-failure count: never fewer than without failures.
    (needed as u64).max(min_samples_for_success_rate(bar_percent) + failures)
}

/// The λ at which observing at most `f` events has probability 5 %.
fn poisson_upper_95(f: u64) -> f64 {
    let f = f.min(1_000_000);
    let cdf = |lambda: f64| {
        // Σ_{k=0}^{f} e^{−λ} λ^k / k!, summed in log space term by term.
        let mut log_term = -lambda;
        let mut sum = log_term.exp();
        for k in 1..=f {
            log_term += lambda.ln() - (k as f64).ln();
            sum += log_term.exp();
        }
        sum
    };
    let (mut lo, mut hi) = (f as f64, f as f64 + 10.0 + 10.0 * (f as f64).sqrt());
    for _ in 0..100 {
        let mid = (lo + hi) / 2.0;
        if cdf(mid) > 0.05 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::report::Percentiles;

    fn canary(total: u64, failed: u64, ttfv: u64) -> Summary {
        Summary {
            total,
            successful: total - failed,
            failed,
            success_rate_percent: (total > 0)
                .then(|| 100.0 * (total - failed) as f64 / total as f64),
            avg_latency_ms: None,
            latency: None,
            ttfb: None,
            ttfv: (ttfv > 0).then_some(Percentiles {
                count: ttfv,
                p50: 1.0,
                p95: 1.0,
                p99: 1.0,
                max: 1.0,
                mean: 1.0,
            }),
            event_streams: total,
            streams_complete: total - failed,
            stream_completion_percent: None,
            errors: BTreeMap::new(),
            statuses: BTreeMap::new(),
            late_sends: 0,
            max_late_ms: 0.0,
        }
    }

    #[test]
    fn poisson_bounds_generalise_the_rule_of_three() {
        assert!(
            (poisson_upper_95(1) - 4.744).abs() < 0.01,
            "{}",
            poisson_upper_95(1)
        );
        assert!((poisson_upper_95(2) - 6.296).abs() < 0.01);
        assert!((poisson_upper_95(10) - 17.0).abs() < 0.1);
        assert_eq!(min_samples_for_success_rate_with_failures(99.6, 0), 750);
        assert_eq!(min_samples_for_success_rate_with_failures(99.6, 1), 1186);
        assert_eq!(
            min_samples_for_success_rate_with_failures(100.0, 0),
            u64::MAX
        );
    }

    #[test]
    fn the_runbooks_five_percent_burst_is_not_enough() {
        // 100 queries at 5 %: five canary streams, all clean.
        let s = canary(5, 0, 5);
        let checks = assess(&SampleRule::runbook(), Some(&s), Some(5.0));
        type Row<'a> = (&'a str, u64, u64, bool, u64, Option<u64>);
        let table: Vec<Row> = checks
            .iter()
            .map(|c| {
                (
                    c.guardrail.as_str(),
                    c.samples,
                    c.needed,
                    c.sufficient,
                    c.more_canary_requests,
                    c.via_lb_requests,
                )
            })
            .collect();
        assert_eq!(
            table,
            vec![
                ("ttfv_p95", 5, 20, false, 15, Some(300)),
                ("sse_success", 5, 750, false, 745, Some(14900)),
            ]
        );
        assert!(
            checks[0].recommendation.contains("per 5m window"),
            "{}",
            checks[0].recommendation
        );
    }

    #[test]
    fn enough_canary_samples_are_sufficient_and_failures_raise_the_bar() {
        let s = canary(800, 0, 800);
        assert!(
            assess(&SampleRule::runbook(), Some(&s), None)
                .iter()
                .all(|c| c.sufficient)
        );
        let s = canary(800, 2, 798);
        let c = &assess(&SampleRule::runbook(), Some(&s), None)[1];
        assert!(!c.sufficient);
        assert_eq!(c.needed, 1574);
        assert!(c.recommendation.contains("only canary-targeted load"));
        let none = assess(&SampleRule::runbook(), None, Some(5.0));
        assert!(none.iter().all(|c| !c.sufficient && c.samples == 0));
    }

    #[test]
    fn rules_are_read_from_the_runbooks_guardrails() {
        use canary_core::plan::{OnBreach, OnNoData, Threshold};
        let g = |name: &str, query: &str, must: &str| Guardrail {
            name: name.into(),
            query: query.into(),
            must: must.parse::<Threshold>().unwrap(),
            for_: Duration::ZERO,
            on_breach: OnBreach::Rollback,
            on_no_data: OnNoData::Inconclusive,
            min_samples: None,
            samples_query: None,
            unit: None,
        };
        let five_m = Some(Duration::from_secs(300));
        let table = [
            (
                g(
                    "ttfv_p95",
                    "histogram_quantile(0.95, sum by (le) (rate(ttfv_ms_bucket[5m])))",
                    "< 1500",
                ),
                Some((SampleKind::Quantile { q: 0.95 }, five_m)),
            ),
            (
                g(
                    "sse_success",
                    "100 * sum(rate(sse_complete_total[5m])) / sum(rate(sse_total[5m]))",
                    ">= 99.6",
                ),
                Some((SampleKind::SuccessRate { bar_percent: 99.6 }, five_m)),
            ),
            (
                g(
                    "ratio",
                    "sum(rate(ok[1m:10s])) / sum(rate(all[1m:10s]))",
                    "> 0.99",
                ),
                Some((
                    SampleKind::SuccessRate { bar_percent: 99.0 },
                    Some(Duration::from_secs(60)),
                )),
            ),
            (
                g(
                    "rls_errors",
                    "sum(increase(memory_rls_policy_errors_total[5m]))",
                    "== 0",
                ),
                None,
            ),
            (
                g("db_pool", "max(db_connection_pool_utilization)", "< 80"),
                None,
            ),
        ];
        for (guardrail, expected) in table {
            let got = SampleRule::for_guardrail(&guardrail).map(|r| (r.kind, r.window));
            assert_eq!(got, expected, "{}", guardrail.name);
        }
    }
}
