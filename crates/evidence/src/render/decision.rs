//! `CANARY_DECISION_FINAL.txt` (every guardrail's status and values, the metric summary, burst
//! and probe results, the decision, every reason, who authorised it, the signer) and the final
//! outcome file: `CANARY_PROMOTION_FINAL.txt` or `CANARY_ROLLBACK_FINAL.txt`, whose first line
//! is the runbook's.

use canary_core::duration::runbook_with_wall;
use canary_core::verdict::fmt_value;
use canary_core::{Decision, Escaped, Verdict};

use super::traffic::FinalTraffic;
use super::{RunContext, table};
use crate::facts::{BurstResult, ProbeResult, RunFacts};
use crate::stamp;

/// The runbook's first line of `CANARY_PROMOTION_FINAL.txt`.
pub const PROMOTED_LINE: &str = "CANARY PASSED - PROMOTED TO 100% TRAFFIC";
/// The runbook's first line of `CANARY_ROLLBACK_FINAL.txt`.
pub const ROLLED_BACK_LINE: &str = "CANARY FAILED - AUTO-ROLLBACK EXECUTED";
/// The first line of `CANARY_ROLLBACK_FINAL.txt` after a promotion the load balancer did not
/// take: the canary passed, the release is not out, traffic is back on the baseline.
pub const PROMOTION_FAILED_LINE: &str =
    "CANARY PASSED - PROMOTION FAILED - TRAFFIC RETURNED TO BASELINE";

/// Everything the decision files state.
#[derive(Debug, Clone, Copy)]
pub struct DecisionRecord<'a> {
    pub facts: &'a RunFacts,
    pub decision: &'a Decision,
    pub traffic: &'a FinalTraffic,
    pub config_sha256: &'a str,
    pub signer_fingerprint: &'a str,
    pub signer_public_key: &'a str,
    pub cooldown_override: Option<&'a str>,
}

fn signed(v: f64) -> String {
    if v > 0.0 {
        format!("+{}", fmt_value(v))
    } else {
        fmt_value(v)
    }
}

fn traffic_line(ctx: &RunContext, r: &DecisionRecord<'_>) -> String {
    let arms = &r.facts.plan.arms;
    format!(
        "{} {} % / {} {} % — {}",
        arms.canary.name,
        r.traffic.canary_percent,
        arms.baseline.name,
        100u8.saturating_sub(r.traffic.canary_percent),
        r.traffic.verification.describe(ctx)
    )
}

/// What the burst did, in one line.
pub fn burst_line(ctx: &RunContext, burst: &BurstResult) -> String {
    match burst {
        BurstResult::NotPlanned => "not planned (the plan has no load burst)".to_owned(),
        BurstResult::NotStarted { due } => format!(
            "not run: the run ended before the burst was due at {}",
            stamp::clock_offset(0, due.as_millis() as i64, ctx.time_scale)
        ),
        BurstResult::NoResult { started } => format!(
            "started {}, no result before the decision",
            ctx.when(*started)
        ),
        BurstResult::Done {
            total,
            successful,
            required_percent,
            ..
        } => {
            let pct = burst.success_percent().unwrap_or(0.0);
            let met = if pct >= *required_percent {
                "MET"
            } else {
                "BELOW THE BAR"
            };
            format!(
                "{successful}/{total} requests succeeded ({} %), bar {} % — {met}",
                fmt_value(pct),
                fmt_value(*required_percent)
            )
        }
    }
}

/// What the isolation probes found, in one line (leaks listed after it by the caller).
pub fn probe_line(probes: &ProbeResult) -> String {
    if !probes.planned {
        return "not planned (the plan has no isolation probes)".to_owned();
    }
    let state = if !probes.leaks.is_empty() {
        "CROSS-TENANT LEAK"
    } else if probes.clean > 0 {
        "CLEAN"
    } else {
        "NO CLEAN RUN"
    };
    format!(
        "probe runs: {} requested, {} completed, {} clean; {} observer/owner pairs checked; {} leaks — {state}",
        probes.requested,
        probes.completed,
        probes.clean,
        probes.pairs,
        probes.leaks.len()
    )
}

/// Renders `CANARY_DECISION_FINAL.txt`.
pub fn decision_final(ctx: &RunContext, r: &DecisionRecord<'_>) -> String {
    let plan = &r.facts.plan;
    let d = r.decision;
    let mut out = ctx.header("CANARY DECISION FINAL");
    out.push_str(&format!(
        "service   {}\ncanary    {} {}\nbaseline  {} {}\nconfig    sha256 {}\nwindow    {}\ndecided   {}\n",
        plan.service,
        plan.arms.canary.name,
        plan.arms.canary.selector,
        plan.arms.baseline.name,
        plan.arms.baseline.selector,
        r.config_sha256,
        runbook_with_wall(plan.window(), plan.time_scale),
        ctx.when(d.at),
    ));
    if let Some(reason) = r.cooldown_override {
        out.push_str(&format!("cooldown  OVERRIDDEN: {}\n", Escaped(reason)));
    }

    out.push_str(&format!(
        "\nDECISION: {}\nauthorised by: {}\ntraffic:  {}\n",
        d.verdict.name(),
        Escaped(&d.authorised_by),
        traffic_line(ctx, r)
    ));

    out.push_str("\nREASONS\n");
    match &d.verdict {
        Verdict::Promote => out.push_str(
            "  none: nothing triggered, every guardrail that gates promotion had data and passed,\n  the load burst met its bar and the isolation probes came back clean\n",
        ),
        v => {
            for (i, reason) in v.reasons().iter().enumerate() {
                out.push_str(&format!("  {}. {reason}\n", i + 1));
            }
        }
    }

    out.push_str("\nGUARDRAILS (canary judged; baseline for comparison; last evaluation)\n");
    let show = |r: &Option<canary_core::Reading>| {
        r.as_ref()
            .map_or_else(|| "-".to_owned(), ToString::to_string)
    };
    let mut rows = vec![
        [
            "status",
            "guardrail",
            "canary",
            "baseline",
            "threshold",
            "for",
            "on breach",
            "evals",
            "breaches",
            "triggered",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for g in &d.guardrails {
        rows.push(vec![
            g.status.label().to_owned(),
            g.name.clone(),
            g.show(g.canary.as_ref()),
            g.show(g.baseline.as_ref()),
            g.must_text(),
            g.runbook_for().to_string(),
            g.on_breach.as_str().to_owned(),
            g.evaluations.to_string(),
            g.breaches.to_string(),
            if g.triggered { "yes" } else { "no" }.to_owned(),
        ]);
    }
    out.push_str(&table(&rows));
    let notes: Vec<String> = d
        .guardrails
        .iter()
        .filter_map(|g| match &g.status {
            canary_core::engine::Status::NoData { cause } => {
                Some(format!("  {}: no data ({cause})", g.name))
            }
            canary_core::engine::Status::Error { message } => {
                Some(format!("  {}: query error ({message})", g.name))
            }
            _ => None,
        })
        .collect();
    if !notes.is_empty() {
        out.push_str(&notes.join("\n"));
        out.push('\n');
    }

    out.push_str("\nMETRIC SUMMARY (canary vs baseline at the last evaluation)\n");
    let mut rows = vec![
        [
            "guardrail",
            "canary",
            "baseline",
            "delta",
            "delta %",
            "worst canary",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for g in &d.guardrails {
        let c = g.canary.as_ref().and_then(canary_core::Reading::as_value);
        let b = g.baseline.as_ref().and_then(canary_core::Reading::as_value);
        let (delta, pct) = match (c, b) {
            (Some(c), Some(b)) if c.is_finite() && b.is_finite() => (
                signed(c - b),
                if b == 0.0 {
                    "-".to_owned()
                } else {
                    format!("{:+.1} %", 100.0 * (c - b) / b.abs())
                },
            ),
            _ => ("-".to_owned(), "-".to_owned()),
        };
        rows.push(vec![
            g.name.clone(),
            show(&g.canary),
            show(&g.baseline),
            delta,
            pct,
            g.worst.map_or_else(|| "-".to_owned(), fmt_value),
        ]);
    }
    out.push_str(&table(&rows));
    out.push_str(&comparisons(d));

    out.push_str(&format!(
        "\nLOAD BURST\n  {}\n",
        burst_line(ctx, &r.facts.burst)
    ));
    out.push_str(&format!(
        "\nISOLATION PROBES\n  {}\n",
        probe_line(&r.facts.probes)
    ));
    for leak in &r.facts.probes.leaks {
        out.push_str(&format!(
            "  LEAK {}: {} received {}'s data from the {} arm\n",
            ctx.when(leak.at),
            leak.observer,
            leak.owner,
            leak.arm
        ));
    }

    out.push_str(&format!(
        "\nCHECKPOINTS\n  {}\n",
        if r.facts.checkpoints.is_empty() {
            "none reached".to_owned()
        } else {
            r.facts
                .checkpoints
                .iter()
                .map(|c| format!("{} at {}", c.label, ctx.offset(c.round)))
                .collect::<Vec<_>>()
                .join(", ")
        }
    ));

    out.push_str(&format!(
        "\nSIGNATURE\n  signer    Ed25519 key {}\n  public    {}\n  manifest.json lists the SHA-256 of this file and of every other file in the bundle;\n  manifest.sig is the signer's signature of manifest.json. Check with\n  `canary verify --key <publisher's public key> <bundle>`: a key named inside a bundle proves\n  nothing by itself, since whoever changes a bundle can re-sign it and rename the key.\n",
        r.signer_fingerprint, r.signer_public_key
    ));
    out
}

/// Renders the final outcome file: `CANARY_PROMOTION_FINAL.txt` after PROMOTE,
/// `CANARY_ROLLBACK_FINAL.txt` (stating the verdict, ROLLBACK, INCONCLUSIVE or
/// PROMOTION_FAILED) otherwise.
pub fn outcome_final(ctx: &RunContext, r: &DecisionRecord<'_>) -> String {
    let d = r.decision;
    let plan = &r.facts.plan;
    let mut out = String::new();
    match &d.verdict {
        Verdict::Promote => {
            out.push_str(PROMOTED_LINE);
            out.push('\n');
            out.push_str(&format!(
                "verdict   PROMOTE: {} takes 100 % of {}'s traffic\n",
                plan.arms.canary.name, plan.service
            ));
        }
        Verdict::PromotionFailed { reasons } => {
            out.push_str(PROMOTION_FAILED_LINE);
            out.push('\n');
            out.push_str(&format!(
                "verdict   PROMOTION_FAILED: {} passed every check, but the load balancer did not take 100 %; traffic went back to {}. The release is NOT out.\n",
                plan.arms.canary.name, plan.arms.baseline.name
            ));
            for reason in reasons {
                out.push_str(&format!("Reason: {reason}\n"));
            }
        }
        v => {
            out.push_str(ROLLED_BACK_LINE);
            out.push('\n');
            match v {
                Verdict::Inconclusive { .. } => out.push_str(&format!(
                    "verdict   INCONCLUSIVE: not enough evidence to promote, so traffic went back to {}\n",
                    plan.arms.baseline.name
                )),
                _ => out.push_str(&format!(
                    "verdict   ROLLBACK: traffic went back to {}\n",
                    plan.arms.baseline.name
                )),
            }
            for reason in v.reasons() {
                out.push_str(&format!("Reason: {reason}\n"));
            }
        }
    }
    out.push_str(&format!(
        "run       {}\nservice   {}\ndecided   {}\nauthorised by: {}\ntraffic   {}\n",
        ctx.run_id,
        plan.service,
        ctx.when(d.at),
        Escaped(&d.authorised_by),
        traffic_line(ctx, r)
    ));
    if !r.traffic.verification.is_verified() {
        out.push_str(
            "WARNING   the final traffic split was NOT verified: check the load balancer by hand now\n",
        );
    }
    match d.verdict {
        Verdict::Promote => {}
        Verdict::PromotionFailed { .. } => out.push_str(
            "next      fix the load balancer (the reason above), then run the canary again: the cooldown holds as after a rollback; `--override-cooldown --reason` once it is fixed\n",
        ),
        _ => out.push_str(
            "next      investigate the reason above, fix it, and retry after the cooldown\n",
        ),
    }
    out
}

/// The comparisons of the canary against the baseline (DESIGN §14) and their score; empty for a
/// plan without any.
fn comparisons(d: &Decision) -> String {
    use canary_core::comparisons::describe;
    use canary_core::judge::ScoreVerdict;
    if d.comparisons.is_empty() {
        return String::new();
    }
    let mut out =
        String::from("\nCOMPARISONS (canary judged against the baseline, sequential tests)\n");
    let mut rows = vec![
        [
            "status",
            "comparison",
            "group",
            "typical",
            "estimate",
            "interval",
            "evidence",
            "samples",
            "critical",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for j in &d.comparisons {
        let c = describe(j);
        rows.push(vec![
            c.status.to_owned(),
            Escaped(&j.name).to_string(),
            Escaped(&j.group).to_string(),
            c.typical,
            c.estimate,
            c.interval,
            c.evidence,
            c.samples,
            if j.critical { "yes" } else { "no" }.to_owned(),
        ]);
    }
    out.push_str(&table(&rows));
    if let Some(score) = &d.score {
        out.push_str(&format!(
            "  score {} — {}",
            score
                .score
                .map_or_else(|| "none (nothing judged)".to_owned(), fmt_value),
            match score.verdict {
                ScoreVerdict::Pass => "pass",
                ScoreVerdict::Marginal => "marginal",
                ScoreVerdict::Fail => "fail",
            }
        ));
        let groups: Vec<String> = score
            .groups
            .iter()
            .map(|g| {
                format!(
                    "{} {} (weight {})",
                    Escaped(&g.group),
                    g.score.map_or_else(|| "-".to_owned(), fmt_value),
                    fmt_value(g.weight)
                )
            })
            .collect();
        if groups.len() > 1 {
            out.push_str(&format!("; groups: {}", groups.join(", ")));
        }
        out.push('\n');
    }
    out
}
