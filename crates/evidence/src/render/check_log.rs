//! `CANARY_METRICS_CHECK_<ts>.log`: the runbook's periodic check, one ✓/✗ line per guardrail and
//! per comparison per check, each stamped with its offset (in the runbook's time) and instant
//! (on the wall clock).

use canary_core::Millis;
use canary_core::comparisons::check_line;
use canary_core::engine::GuardrailSummary;
use canary_core::judge::Judgement;

use super::RunContext;
use crate::stamp;

/// The lines of one check (no newlines): `T+05:00 2025-10-19T14:05:00Z ✓ ttfv_p95 canary …`,
/// the guardrails' then the comparisons'. A compressed run's check at 5 wall seconds is
/// `T+05:00`, and its guardrails hold `for 5m`: the runbook's time.
pub fn check_lines(
    ctx: &RunContext,
    round: Millis,
    guardrails: &[GuardrailSummary],
    comparisons: &[Judgement],
) -> Vec<String> {
    let when = format!("{} {}", ctx.offset(round), stamp::rfc3339(round));
    guardrails
        .iter()
        .map(|g| g.check_line())
        .chain(comparisons.iter().map(check_line))
        .map(|line| format!("{when} {line}"))
        .collect()
}

/// The line a check log holds when the run ended (at `ended`) before its first check was due:
/// `T+02:00 2025-10-19T14:02:00Z no check was due: {why}`.
pub fn no_check_due(ctx: &RunContext, ended: Millis, why: &str) -> String {
    format!(
        "{} {} no check was due: {why}",
        ctx.offset(ended),
        stamp::rfc3339(ended),
    )
}
