//! `CANARY_SNAPSHOT_<label>_<ts>.json`: a checkpoint (T+15, T+30, T+60) — every guardrail's
//! state and readings, and the raw query results behind them for each arm, in the Prometheus
//! HTTP API's JSON shape (`{"status": "success", "data": {"resultType": …, "result": […]}}`).
//!
//! A checkpoint the run never reached (it was decided first) still has its file: `"reached":
//! false` and why — the decision, when, and its reasons — so every run holds every snapshot the
//! runbook asks for.

use canary_core::comparisons::describe;
use canary_core::engine::GuardrailSummary;
use canary_core::judge::Judgement;
use canary_core::{ArmRole, Decision, Millis};
use serde::Serialize;

use super::RunContext;
use crate::stamp;

/// Version of the snapshot format.
pub const SNAPSHOT_FORMAT: u32 = 1;

/// What one query returned for one arm, as the metric source answered it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RawQuery {
    pub guardrail: String,
    pub arm: ArmRole,
    /// The query as sent (scoped to the arm).
    pub query: String,
    /// The response in the Prometheus API's shape, or `{"status": "error", "error": …}`.
    pub response: serde_json::Value,
}

/// One checkpoint's contents.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot<'a> {
    /// The engine's checkpoint label (`T15`).
    pub label: &'a str,
    /// The evaluation round the snapshot shows.
    pub round: Millis,
    /// The engine's guardrail summaries at that round.
    pub guardrails: &'a [GuardrailSummary],
    /// The engine's comparison judgements at that round.
    pub comparisons: &'a [Judgement],
    /// Raw results of that round, any order.
    pub raw: &'a [RawQuery],
    /// Said when something is missing (e.g. raw results lost to a controller restart).
    pub note: Option<&'a str>,
}

#[derive(Serialize)]
struct Doc<'a> {
    artifact: &'static str,
    format: u32,
    run_id: &'a str,
    label: &'a str,
    started: String,
    reached: bool,
    /// On a compressed clock, how to read the times (absent in production).
    #[serde(skip_serializing_if = "Option::is_none")]
    clock: Option<String>,
    round: String,
    round_ms: Millis,
    /// In the runbook's time (`15m`); `offset_ms` is the wall clock's.
    offset: String,
    offset_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<&'a str>,
    guardrails: Vec<GuardrailDoc<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    comparisons: Vec<ComparisonDoc<'a>>,
    /// Raw results for guardrails not in the summaries (e.g. sample-count queries' owners
    /// renamed): kept rather than dropped.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    other_raw: Vec<&'a RawQuery>,
}

#[derive(Serialize)]
struct GuardrailDoc<'a> {
    name: &'a str,
    status: &'static str,
    summary: &'a GuardrailSummary,
    raw: ByArm<'a>,
}

#[derive(Serialize)]
struct ComparisonDoc<'a> {
    name: &'a str,
    status: &'static str,
    /// The estimate, its interval and evidence as people read them.
    reads: String,
    judgement: &'a Judgement,
    raw: ByArm<'a>,
}

#[derive(Serialize)]
struct ByArm<'a> {
    canary: Vec<RawEntry<'a>>,
    baseline: Vec<RawEntry<'a>>,
}

#[derive(Serialize)]
struct RawEntry<'a> {
    query: &'a str,
    response: &'a serde_json::Value,
}

/// Renders a snapshot as pretty JSON with a trailing newline.
pub fn snapshot_json(ctx: &RunContext, s: &Snapshot<'_>) -> String {
    let offset_ms = s.round.saturating_sub(ctx.started);
    let entries = |name: &str, arm: ArmRole| -> Vec<RawEntry<'_>> {
        s.raw
            .iter()
            .filter(|r| r.guardrail == name && r.arm == arm)
            .map(|r| RawEntry {
                query: &r.query,
                response: &r.response,
            })
            .collect()
    };
    let doc = Doc {
        artifact: "CANARY_SNAPSHOT",
        format: SNAPSHOT_FORMAT,
        run_id: &ctx.run_id,
        label: s.label,
        started: stamp::rfc3339(ctx.started),
        reached: true,
        clock: ctx.clock(),
        round: stamp::rfc3339(s.round),
        round_ms: s.round,
        offset: ctx
            .duration(std::time::Duration::from_millis(offset_ms.max(0) as u64))
            .to_string(),
        offset_ms,
        note: s.note,
        guardrails: s
            .guardrails
            .iter()
            .map(|g| GuardrailDoc {
                name: &g.name,
                status: g.status.label(),
                summary: g,
                raw: ByArm {
                    canary: entries(&g.name, ArmRole::Canary),
                    baseline: entries(&g.name, ArmRole::Baseline),
                },
            })
            .collect(),
        comparisons: s
            .comparisons
            .iter()
            .map(|j| {
                let d = describe(j);
                ComparisonDoc {
                    name: &j.name,
                    status: d.status,
                    reads: format!(
                        "{} {}, {}, {}",
                        d.estimate, d.interval, d.evidence, d.samples
                    ),
                    judgement: j,
                    raw: ByArm {
                        canary: entries(&j.name, ArmRole::Canary),
                        baseline: entries(&j.name, ArmRole::Baseline),
                    },
                }
            })
            .collect(),
        other_raw: s
            .raw
            .iter()
            .filter(|r| {
                !s.guardrails.iter().any(|g| g.name == r.guardrail)
                    && !s.comparisons.iter().any(|j| j.name == r.guardrail)
            })
            .collect(),
    };
    // Summaries serialise their floats through `json_float` and raw results are JSON values
    // already: serialisation cannot fail.
    let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    text.push('\n');
    text
}

/// A checkpoint the run never reached: what its snapshot file says instead.
#[derive(Debug, Clone, Copy)]
pub struct NotReached<'a> {
    /// The engine's checkpoint label (`T30`).
    pub label: &'a str,
    /// When the checkpoint was due.
    pub due: Millis,
    /// When it was due in runbook time (`T+30m`).
    pub due_offset: &'a str,
    /// Why, on one line: `not reached: rolled back at T+8m (ROLLBACK: …)`.
    pub why: &'a str,
    /// The decision that ended the run first.
    pub decision: &'a Decision,
    /// When it was taken in runbook time (`T+8m`).
    pub decided_offset: &'a str,
}

#[derive(Serialize)]
struct NotReachedDoc<'a> {
    artifact: &'static str,
    format: u32,
    run_id: &'a str,
    label: &'a str,
    started: String,
    reached: bool,
    /// On a compressed clock, how to read the times (absent in production).
    #[serde(skip_serializing_if = "Option::is_none")]
    clock: Option<String>,
    not_reached: &'a str,
    due: String,
    due_ms: Millis,
    due_offset: &'a str,
    decision: DecisionDoc<'a>,
    /// Always empty: no evaluation round belongs to this checkpoint.
    guardrails: [(); 0],
}

#[derive(Serialize)]
struct DecisionDoc<'a> {
    verdict: &'static str,
    reasons: Vec<String>,
    authorised_by: &'a str,
    at: String,
    at_ms: Millis,
    offset: &'a str,
}

/// Renders the snapshot of a checkpoint the run never reached as pretty JSON with a trailing
/// newline.
pub fn not_reached_json(ctx: &RunContext, n: &NotReached<'_>) -> String {
    let doc = NotReachedDoc {
        artifact: "CANARY_SNAPSHOT",
        format: SNAPSHOT_FORMAT,
        run_id: &ctx.run_id,
        label: n.label,
        started: stamp::rfc3339(ctx.started),
        reached: false,
        clock: ctx.clock(),
        not_reached: n.why,
        due: stamp::rfc3339(n.due),
        due_ms: n.due,
        due_offset: n.due_offset,
        decision: DecisionDoc {
            verdict: n.decision.verdict.name(),
            reasons: n
                .decision
                .verdict
                .reasons()
                .iter()
                .map(ToString::to_string)
                .collect(),
            authorised_by: &n.decision.authorised_by,
            at: stamp::rfc3339(n.decision.at),
            at_ms: n.decision.at,
            offset: n.decided_offset,
        },
        guardrails: [],
    };
    // Strings and integers only: serialisation cannot fail.
    let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    text.push('\n');
    text
}
