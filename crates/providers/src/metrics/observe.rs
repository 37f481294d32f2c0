//! One evaluation round: every guardrail, scoped to each arm, queried at one instant, turned into
//! the engine's readings — with the raw results kept for snapshots.

use super::{MetricSource, Scalar, single_value};
use canary_core::engine::{GuardrailReading, Reading};
use canary_core::{ArmRole, Millis, Plan};
use canary_promql::rewrite::{self, ArmSelector};
use canary_promql::{RewriteError, Value};
use futures_util::future::join_all;
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
}

/// Queries every guardrail for both arms at `at`, concurrently.
pub async fn observe(
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
    Round { readings, raw }
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
