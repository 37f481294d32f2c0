//! One evaluation round: every guardrail and every comparison, scoped to each arm, queried at
//! one instant, turned into the engine's readings — with the raw results kept for snapshots.

use std::time::Duration;

use super::{MetricSource, Scalar, single_value};
use canary_core::engine::{ComparisonReading, GuardrailReading, Measurement, Reading};
use canary_core::plan::Measure;
use canary_core::{ArmRole, Millis, Plan};
use canary_promql::analyze;
use canary_promql::rewrite::{self, ArmSelector};
use canary_promql::{RewriteError, Value};
use futures_util::future::{join, join_all};
use serde::Serialize;

/// A guardrail's queries for both arms, rewritten once per run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScopedGuardrail {
    pub name: String,
    pub canary: String,
    pub baseline: String,
    pub canary_samples: Option<String>,
    pub baseline_samples: Option<String>,
}

impl ScopedGuardrail {
    pub fn query(&self, arm: ArmRole) -> &str {
        match arm {
            ArmRole::Canary => &self.canary,
            ArmRole::Baseline => &self.baseline,
        }
    }

    fn samples(&self, arm: ArmRole) -> Option<&str> {
        match arm {
            ArmRole::Canary => self.canary_samples.as_deref(),
            ArmRole::Baseline => self.baseline_samples.as_deref(),
        }
    }
}

/// Scopes every guardrail query (and sample query) of `plan` to each arm. On a compressed
/// clock (the demo's `time_scale`), range windows are divided by the same factor.
pub fn scope_guardrails(plan: &Plan) -> Result<Vec<ScopedGuardrail>, RewriteError> {
    let canary = ArmSelector::parse(&plan.arms.canary.selector)?;
    let baseline = ArmSelector::parse(&plan.arms.baseline.selector)?;
    let scope = |query: &str, arm: &ArmSelector| -> Result<String, RewriteError> {
        Ok(rewrite::scope_on_clock(query, arm, plan.time_scale)?.to_string())
    };
    plan.guardrails
        .iter()
        .map(|g| {
            Ok(ScopedGuardrail {
                name: g.name.clone(),
                canary: scope(&g.query, &canary)?,
                baseline: scope(&g.query, &baseline)?,
                canary_samples: g
                    .samples_query
                    .as_deref()
                    .map(|q| scope(q, &canary))
                    .transpose()?,
                baseline_samples: g
                    .samples_query
                    .as_deref()
                    .map(|q| scope(q, &baseline))
                    .transpose()?,
            })
        })
        .collect()
}

/// A comparison's queries for both arms, rewritten once per run like the guardrails'.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScopedComparison {
    pub name: String,
    pub canary: ScopedMeasure,
    pub baseline: ScopedMeasure,
}

/// One arm's queries of a comparison, by its kind.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ScopedMeasure {
    Continuous { query: String },
    Counts { events: String, exposure: String },
}

impl ScopedComparison {
    pub fn measure(&self, arm: ArmRole) -> &ScopedMeasure {
        match arm {
            ArmRole::Canary => &self.canary,
            ArmRole::Baseline => &self.baseline,
        }
    }
}

/// Scopes every comparison query of `plan` to each arm, on the plan's clock as
/// [`scope_guardrails`] does.
pub fn scope_comparisons(plan: &Plan) -> Result<Vec<ScopedComparison>, RewriteError> {
    let canary = ArmSelector::parse(&plan.arms.canary.selector)?;
    let baseline = ArmSelector::parse(&plan.arms.baseline.selector)?;
    let scope = |measure: &Measure, arm: &ArmSelector| -> Result<ScopedMeasure, RewriteError> {
        let one = |query: &str| -> Result<String, RewriteError> {
            Ok(rewrite::scope_on_clock(query, arm, plan.time_scale)?.to_string())
        };
        Ok(match measure {
            Measure::Continuous { query } | Measure::Spread { query } => {
                ScopedMeasure::Continuous { query: one(query)? }
            }
            Measure::Counts { events, exposure } => ScopedMeasure::Counts {
                events: one(events)?,
                exposure: one(exposure)?,
            },
        })
    };
    plan.comparisons
        .iter()
        .map(|c| {
            Ok(ScopedComparison {
                name: c.name.clone(),
                canary: scope(&c.measure, &canary)?,
                baseline: scope(&c.measure, &baseline)?,
            })
        })
        .collect()
}

/// A comparison query whose successive evaluations would read the same samples, which the
/// sequential tests' run-wide guarantee does not allow (see [`Measure`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Overlap {
    /// A continuous query whose windows reach further back than one evaluation interval.
    #[error(
        "comparison {comparison:?}: its query reads {} back, more than the evaluation interval ({}): successive evaluations would share samples; use a window of the evaluation interval, e.g. [{}]",
        fmt_duration(*reach),
        fmt_duration(*interval),
        fmt_duration(*interval)
    )]
    Window {
        comparison: String,
        reach: Duration,
        interval: Duration,
    },
    /// A counts query that reads through a range (`increase`, `rate`) instead of the counter.
    #[error(
        "comparison {comparison:?}: {field} reads a range ({query}); a counts comparison takes the cumulative counter itself, e.g. sum(http_requests_total), and the engine takes its increase between evaluations"
    )]
    Range {
        comparison: String,
        field: &'static str,
        query: String,
    },
}

fn fmt_duration(d: Duration) -> String {
    canary_core::duration::format(d)
}

/// The comparisons of `plan` whose queries would make successive looks overlap: a
/// continuous query reaching further back than one evaluation interval, or a counts query
/// reading through a range. The configuration should refuse them (or at least warn).
pub fn overlapping_comparisons(plan: &Plan) -> Result<Vec<Overlap>, RewriteError> {
    let mut out = Vec::new();
    for c in &plan.comparisons {
        for (field, query) in c.measure.queries() {
            let mut expr = rewrite::parse(query)?;
            if plan.time_scale > 1.0 {
                expr = rewrite::compress_time(&expr, plan.time_scale)?;
            }
            match c.measure {
                Measure::Continuous { .. } | Measure::Spread { .. } => {
                    let reach = analyze::reach(&expr);
                    if reach > plan.evaluation_interval {
                        out.push(Overlap::Window {
                            comparison: c.name.clone(),
                            reach,
                            interval: plan.evaluation_interval,
                        });
                    }
                }
                Measure::Counts { .. } => {
                    if analyze::selectors(&expr).iter().any(|s| s.in_range) {
                        out.push(Overlap::Range {
                            comparison: c.name.clone(),
                            field,
                            query: query.to_owned(),
                        });
                    }
                }
            }
        }
    }
    Ok(out)
}

/// What one query returned, as it goes into a snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct RawResult {
    pub guardrail: String,
    pub arm: ArmRole,
    pub query: String,
    #[serde(serialize_with = "serialize_result")]
    pub result: Result<Value, String>,
}

fn serialize_result<S: serde::Serializer>(
    r: &Result<Value, String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(2))?;
    match r {
        Ok(v) => {
            map.serialize_entry("status", "success")?;
            map.serialize_entry("data", &canary_promql::value::QueryData(v.clone()))?;
        }
        Err(e) => {
            map.serialize_entry("status", "error")?;
            map.serialize_entry("error", e)?;
        }
    }
    map.end()
}

/// The readings of one round and the raw results behind them.
#[derive(Debug, Clone)]
pub struct Round {
    pub readings: Vec<GuardrailReading>,
    pub raw: Vec<RawResult>,
    /// Each comparison's readings per arm, for [`canary_core::Input::Observations`]'s
    /// `comparisons` (empty from [`observe`], which evaluates guardrails only).
    pub comparisons: Vec<ComparisonReading>,
    /// The raw results behind them; `guardrail` holds the comparison's name.
    pub comparison_raw: Vec<RawResult>,
}

/// Queries every guardrail for both arms at `at`, concurrently.
pub async fn observe(
    source: &dyn MetricSource,
    guardrails: &[ScopedGuardrail],
    at: Millis,
) -> Round {
    observe_round(source, guardrails, &[], at).await
}

/// Queries every guardrail and every comparison for both arms at `at`, all concurrently.
pub async fn observe_round(
    source: &dyn MetricSource,
    guardrails: &[ScopedGuardrail],
    comparisons: &[ScopedComparison],
    at: Millis,
) -> Round {
    let (mut round, (readings, raw)) = join(
        observe_guardrails(source, guardrails, at),
        observe_comparisons(source, comparisons, at),
    )
    .await;
    round.comparisons = readings;
    round.comparison_raw = raw;
    round
}

/// Queries every comparison for both arms at `at`, concurrently.
async fn observe_comparisons(
    source: &dyn MetricSource,
    comparisons: &[ScopedComparison],
    at: Millis,
) -> (Vec<ComparisonReading>, Vec<RawResult>) {
    let jobs = comparisons.iter().map(|c| async move {
        let (canary, baseline) = join(
            measure(source, c, ArmRole::Canary, at),
            measure(source, c, ArmRole::Baseline, at),
        )
        .await;
        (c, canary, baseline)
    });
    let mut readings = Vec::with_capacity(comparisons.len());
    let mut raw = Vec::new();
    for (c, (canary, canary_raw), (baseline, baseline_raw)) in join_all(jobs).await {
        readings.push(ComparisonReading {
            comparison: c.name.clone(),
            canary,
            baseline,
        });
        raw.extend(canary_raw);
        raw.extend(baseline_raw);
    }
    (readings, raw)
}

/// One arm's measurement of a comparison, and the raw results behind it.
async fn measure(
    source: &dyn MetricSource,
    c: &ScopedComparison,
    arm: ArmRole,
    at: Millis,
) -> (Measurement, Vec<RawResult>) {
    let query = |query: &str| {
        let query = query.to_owned();
        async move {
            let result = source
                .instant_query(&query, at)
                .await
                .map_err(|e| e.to_string());
            RawResult {
                guardrail: c.name.clone(),
                arm,
                query,
                result,
            }
        }
    };
    match c.measure(arm) {
        ScopedMeasure::Continuous { query: q } => {
            let value = query(q).await;
            let reading = to_reading(&value.result);
            (Measurement::Continuous { value: reading }, vec![value])
        }
        ScopedMeasure::Counts { events, exposure } => {
            let (events, exposure) = join(query(events), query(exposure)).await;
            let measurement = Measurement::Counts {
                events: to_reading(&events.result),
                exposure: to_reading(&exposure.result),
            };
            (measurement, vec![events, exposure])
        }
    }
}

/// Queries every guardrail for both arms at `at`, concurrently.
async fn observe_guardrails(
    source: &dyn MetricSource,
    guardrails: &[ScopedGuardrail],
    at: Millis,
) -> Round {
    let arms = [ArmRole::Canary, ArmRole::Baseline];
    let jobs = guardrails.iter().flat_map(|g| {
        arms.iter().map(move |arm| async move {
            let value = source.instant_query(g.query(*arm), at).await;
            let samples = match g.samples(*arm) {
                Some(q) => Some(source.instant_query(q, at).await),
                None => None,
            };
            (g, *arm, value, samples)
        })
    });
    let results = join_all(jobs).await;
    let mut readings: Vec<GuardrailReading> = Vec::with_capacity(guardrails.len());
    let mut raw = Vec::with_capacity(results.len());
    for (g, arm, value, samples) in results {
        let mut reading = to_reading(&value.clone().map_err(|e| e.to_string()));
        if let (Reading::Value { samples: slot, .. }, Some(samples)) = (&mut reading, &samples) {
            *slot = match samples {
                Ok(v) => match single_value(v) {
                    Scalar::Value(n) => Some(n),
                    _ => Some(0.0),
                },
                Err(_) => None,
            };
        }
        raw.push(RawResult {
            guardrail: g.name.clone(),
            arm,
            query: g.query(arm).to_owned(),
            result: value.map_err(|e| e.to_string()),
        });
        let index = match readings.iter().position(|r| r.guardrail == g.name) {
            Some(i) => i,
            None => {
                readings.push(GuardrailReading {
                    guardrail: g.name.clone(),
                    canary: Reading::NoData,
                    baseline: Reading::NoData,
                });
                readings.len() - 1
            }
        };
        let entry = &mut readings[index];
        match arm {
            ArmRole::Canary => entry.canary = reading,
            ArmRole::Baseline => entry.baseline = reading,
        }
    }
    Round {
        readings,
        raw,
        comparisons: Vec::new(),
        comparison_raw: Vec::new(),
    }
}

/// The engine's reading of a query result.
pub fn to_reading(result: &Result<Value, String>) -> Reading {
    match result {
        Err(message) => Reading::Error {
            message: message.clone(),
        },
        Ok(v) => match single_value(v) {
            Scalar::Value(value) => Reading::value(value),
            Scalar::Empty => Reading::NoData,
            Scalar::Ambiguous(n) => Reading::Error {
                message: format!(
                    "the query returned {n} series; a guardrail needs one value: aggregate it (sum, max, histogram_quantile over sum by (le))"
                ),
            },
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a failure is a test failure

    use std::sync::{Arc, RwLock};
    use std::time::Duration;

    use canary_core::judge::{Classification, Effect, Scoring};
    use canary_core::plan::{Approval, Arm, Arms, CompareSpec, Direction, OnInconclusive, Step};
    use canary_core::{Engine, Input};
    use canary_promql::{Labels, Store};

    use super::*;
    use crate::metrics::embedded::EmbeddedSource;

    fn compare(name: &str, measure: Measure) -> CompareSpec {
        CompareSpec {
            name: name.into(),
            measure,
            direction: Direction::Increase,
            effect: Effect::NONE,
            critical: true,
            weight: 1.0,
            group: "default".into(),
            alpha: 0.05,
            must_have_data: false,
        }
    }

    fn plan(comparisons: Vec<CompareSpec>) -> Plan {
        Plan {
            service: "relay".into(),
            arms: Arms {
                baseline: Arm {
                    name: "r0.5".into(),
                    selector: r#"{version="r0.5"}"#.into(),
                },
                canary: Arm {
                    name: "r1".into(),
                    selector: r#"{version="r1"}"#.into(),
                },
            },
            steps: vec![Step {
                weight: 5,
                hold: Duration::from_secs(600),
            }],
            evaluation_interval: Duration::from_secs(30),
            check_log_interval: Duration::from_secs(300),
            checkpoints: vec![],
            guardrails: vec![],
            burst: None,
            probes: false,
            approval: Approval::Auto,
            on_inconclusive: OnInconclusive::Rollback,
            max_query_errors: 5,
            time_scale: 1.0,
            comparisons,
            scoring: Scoring::default(),
        }
    }

    fn runbook_comparisons() -> Vec<CompareSpec> {
        vec![
            compare(
                "latency",
                Measure::Continuous {
                    query: "max(latency_ms)".into(),
                },
            ),
            compare(
                "error_rate",
                Measure::Counts {
                    events: r#"sum(requests_total{code="500"})"#.into(),
                    exposure: "sum(requests_total)".into(),
                },
            ),
        ]
    }

    /// Every 15 s: the canary (r1) serves 10 requests and fails 2, the baseline 190 and 1; the
    /// canary's latency is twice the baseline's.
    fn store(until: Millis) -> Store {
        let mut store = Store::new();
        let series = |name: &str, version: &str, code: Option<&str>| {
            let mut pairs = vec![("__name__", name), ("version", version)];
            if let Some(code) = code {
                pairs.push(("code", code));
            }
            Labels::from_pairs(pairs)
        };
        for (i, t) in (0..=until).step_by(15_000).enumerate() {
            let n = i as f64;
            for (version, ok, failed, latency) in
                [("r1", 8.0, 2.0, 400.0), ("r0.5", 189.0, 1.0, 200.0)]
            {
                let s = |code| series("requests_total", version, Some(code));
                store.append(&s("200"), t, ok * n).unwrap();
                store.append(&s("500"), t, failed * n).unwrap();
                store
                    .append(&series("latency_ms", version, None), t, latency + n)
                    .unwrap();
            }
        }
        store
    }

    #[tokio::test]
    async fn a_round_reads_every_comparison_for_each_arm_and_the_engine_judges_it() {
        let plan = plan(runbook_comparisons());
        let scoped = scope_comparisons(&plan).unwrap();
        assert_eq!(
            scoped[1].canary,
            ScopedMeasure::Counts {
                events: r#"sum(requests_total{code="500",version="r1"})"#.into(),
                exposure: r#"sum(requests_total{version="r1"})"#.into(),
            }
        );
        let source = EmbeddedSource::new(Arc::new(RwLock::new(store(600_000))));
        let mut engine = Engine::new(plan).unwrap();
        engine.apply(&Input::Start { at: 0 }).unwrap();
        let mut first = None;
        while !engine.is_decided() {
            let round = match engine.pending_round() {
                Some(round) => round,
                None => {
                    let at = engine.next_wakeup().unwrap();
                    engine.apply(&Input::Tick { at }).unwrap();
                    continue;
                }
            };
            let observed = observe_round(&source, &[], &scoped, round).await;
            first.get_or_insert(observed.clone());
            engine
                .apply(&Input::Observations {
                    at: round,
                    round,
                    readings: observed.readings,
                    comparisons: observed.comparisons,
                })
                .unwrap();
        }
        // At T+30 s (two scrapes in): each arm's value, and its counters.
        let first = first.unwrap();
        assert_eq!(
            first.comparisons[0].canary,
            Measurement::Continuous {
                value: Reading::value(402.0)
            }
        );
        assert_eq!(
            first.comparisons[1].baseline,
            Measurement::Counts {
                events: Reading::value(2.0),
                exposure: Reading::value(380.0)
            }
        );
        let queries: Vec<&str> = first
            .comparison_raw
            .iter()
            .map(|r| r.query.as_str())
            .collect();
        assert_eq!(
            queries,
            [
                r#"max(latency_ms{version="r1"})"#,
                r#"max(latency_ms{version="r0.5"})"#,
                r#"sum(requests_total{code="500",version="r1"})"#,
                r#"sum(requests_total{version="r1"})"#,
                r#"sum(requests_total{code="500",version="r0.5"})"#,
                r#"sum(requests_total{version="r0.5"})"#,
            ]
        );
        // The canary is slower and fails 20 % against 0.5 %: both comparisons fail.
        let decision = engine.decision().unwrap();
        assert_eq!(decision.verdict.name(), "ROLLBACK");
        assert!(
            decision
                .comparisons
                .iter()
                .any(|j| j.classification == Classification::High),
            "{decision:?}"
        );
        // The guardrails-only round asks no comparison.
        assert!(observe(&source, &[], 30_000).await.comparisons.is_empty());
    }

    #[test]
    fn comparisons_whose_looks_would_overlap_are_named() {
        let mut comparisons = runbook_comparisons();
        comparisons.push(compare(
            "ttfv",
            Measure::Continuous {
                query: "histogram_quantile(0.95, sum by (le) (rate(ttfv_ms_bucket[5m])))".into(),
            },
        ));
        comparisons.push(compare(
            "ttfv_30s",
            Measure::Continuous {
                query: "histogram_quantile(0.95, sum by (le) (rate(ttfv_ms_bucket[30s])))".into(),
            },
        ));
        comparisons.push(compare(
            "streams",
            Measure::Counts {
                events: "sum(increase(sse_failed_total[30s]))".into(),
                exposure: "sum(sse_total)".into(),
            },
        ));
        let p = plan(comparisons);
        let found = overlapping_comparisons(&p).unwrap();
        assert_eq!(
            found,
            [
                Overlap::Window {
                    comparison: "ttfv".into(),
                    reach: Duration::from_secs(300),
                    interval: Duration::from_secs(30),
                },
                Overlap::Range {
                    comparison: "streams".into(),
                    field: "events",
                    query: "sum(increase(sse_failed_total[30s]))".into(),
                },
            ]
        );
        assert!(found[0].to_string().contains("e.g. [30s]"), "{}", found[0]);
        // On a compressed clock the windows and the interval shrink together.
        let fast = p.compressed(60.0);
        assert_eq!(overlapping_comparisons(&fast).unwrap().len(), 2);
        assert_eq!(
            scope_comparisons(&fast).unwrap()[3].canary,
            ScopedMeasure::Continuous {
                query: r#"histogram_quantile(0.95, sum by (le) (rate(ttfv_ms_bucket{version="r1"}[500ms])))"#.into()
            }
        );
    }
}
