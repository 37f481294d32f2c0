//! Verdicts and the reasons behind them.

use std::fmt;
use std::time::Duration;

use canary_judge::{Classification, Interval, Judgement, Samples, Score};
use serde::{Deserialize, Serialize};

use crate::duration::Runbook;
use crate::engine::{GuardrailSummary, Millis};
use crate::escape::Escaped;
use crate::plan::{ArmRole, Direction, MeasureKind, OnBreach, Threshold};

/// The outcome of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Verdict {
    /// Every rule passed; traffic goes to 100 % canary.
    Promote,
    /// Something failed or triggered; traffic goes back to 0 % canary.
    Rollback { reasons: Vec<Reason> },
    /// Not enough evidence either way; never promotes.
    Inconclusive { reasons: Vec<Reason> },
    /// The run decided PROMOTE, but the load balancer did not take 100 % (or it could not be
    /// verified): traffic goes back to 0 % canary and people are paged. Not a PROMOTE — the
    /// release is not out — and not a ROLLBACK — the canary passed (DESIGN §4).
    PromotionFailed { reasons: Vec<Reason> },
}

impl Verdict {
    /// The process exit code `canary run` and `canary backtest` use: 0 PROMOTE, 3 ROLLBACK,
    /// 4 INCONCLUSIVE, 5 PROMOTION_FAILED (1 is left for errors, 2 for usage errors).
    pub fn exit_code(&self) -> i32 {
        match self {
            Verdict::Promote => 0,
            Verdict::Rollback { .. } => 3,
            Verdict::Inconclusive { .. } => 4,
            Verdict::PromotionFailed { .. } => 5,
        }
    }

    /// The verdict's name in artifacts, the manifest, the history and on the terminal.
    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Promote => "PROMOTE",
            Verdict::Rollback { .. } => "ROLLBACK",
            Verdict::Inconclusive { .. } => "INCONCLUSIVE",
            Verdict::PromotionFailed { .. } => "PROMOTION_FAILED",
        }
    }

    /// The verdict named `name` (as [`Verdict::name`] writes it) with `reasons`.
    pub fn from_name(name: &str, reasons: Vec<Reason>) -> Option<Verdict> {
        match name {
            "PROMOTE" => Some(Verdict::Promote),
            "ROLLBACK" => Some(Verdict::Rollback { reasons }),
            "INCONCLUSIVE" => Some(Verdict::Inconclusive { reasons }),
            "PROMOTION_FAILED" => Some(Verdict::PromotionFailed { reasons }),
            _ => None,
        }
    }

    pub fn reasons(&self) -> &[Reason] {
        match self {
            Verdict::Promote => &[],
            Verdict::Rollback { reasons }
            | Verdict::Inconclusive { reasons }
            | Verdict::PromotionFailed { reasons } => reasons,
        }
    }

    /// The canary weight this verdict leaves behind.
    pub fn final_weight(&self) -> u8 {
        match self {
            Verdict::Promote => 100,
            _ => 0,
        }
    }

    /// Whether any reason is a security matter (pages at the highest severity).
    pub fn is_security(&self) -> bool {
        self.reasons().iter().any(Reason::is_security)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why there is no data for a guardrail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NoDataCause {
    /// The query returned no series.
    Empty,
    /// The query returned NaN (e.g. a ratio of two zero rates: no traffic).
    NotANumber,
    /// Fewer samples than the guardrail's `min_samples`.
    InsufficientSamples { got: f64, need: f64 },
    /// The query failed.
    QueryError { message: String },
    /// The guardrail was never evaluated.
    NeverEvaluated,
}

impl fmt::Display for NoDataCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoDataCause::Empty => f.write_str("the query returned no series"),
            NoDataCause::NotANumber => f.write_str("the query returned NaN (no traffic?)"),
            NoDataCause::InsufficientSamples { got, need } => {
                write!(f, "{got} samples, {need} needed")
            }
            NoDataCause::QueryError { message } => {
                write!(f, "query failed: {}", Escaped(message))
            }
            NoDataCause::NeverEvaluated => f.write_str("never evaluated"),
        }
    }
}

/// One reason behind a ROLLBACK or INCONCLUSIVE verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reason {
    /// A rollback-class guardrail breached for its whole `for` span during the window.
    GuardrailTriggered {
        guardrail: String,
        on_breach: OnBreach,
        #[serde(with = "crate::json_float")]
        value: f64,
        must: Threshold,
        /// How long the breach lasted, on the run's clock.
        #[serde(with = "crate::duration::serde_text")]
        breached_for: Duration,
        at: Millis,
        /// The plan's `time_scale`: durations here are on the run's clock, read in the
        /// runbook's time. Absent (1) in production.
        #[serde(
            default = "crate::duration::real_time",
            skip_serializing_if = "crate::duration::is_real_time"
        )]
        time_scale: f64,
    },
    /// A guardrail that gates promotion did not pass at the decision.
    FailedAtDecision {
        guardrail: String,
        on_breach: OnBreach,
        #[serde(with = "crate::json_float")]
        value: f64,
        must: Threshold,
    },
    /// A guardrail had no usable data at the decision.
    NoData {
        guardrail: String,
        cause: NoDataCause,
    },
    /// A guardrail's query failed too many times in a row.
    QueryErrors {
        guardrail: String,
        consecutive: u32,
        last_error: String,
    },
    /// An Alertmanager alert for this run fired: its guardrail rolls back, or it named no
    /// guardrail of the plan (`guardrail` absent).
    AlertFired {
        alert: String,
        security: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        guardrail: Option<String>,
    },
    /// An Alertmanager alert fired for a `block-promotion` gate during the window: the gate
    /// fails at the decision (it never rolls back by itself).
    AlertFailedGate { guardrail: String, alert: String },
    /// An isolation probe saw another tenant's data.
    IsolationLeak {
        observer: String,
        owner: String,
        arm: ArmRole,
    },
    /// The canary is down or failing health checks.
    CanaryUnhealthy { detail: String },
    /// An operator aborted the run.
    Aborted { by: String, reason: String },
    /// The controller was asked to stop.
    Signal { signal: String },
    /// The controller was down from `since` (its last input) until `resumed`, past the end of
    /// the window: nothing watched the canary at the end, so it cannot be promoted.
    ControllerDown {
        since: Millis,
        resumed: Millis,
        /// The plan's `time_scale`: durations here are on the run's clock, read in the
        /// runbook's time. Absent (1) in production.
        #[serde(
            default = "crate::duration::real_time",
            skip_serializing_if = "crate::duration::is_real_time"
        )]
        time_scale: f64,
    },
    /// The load burst missed its success bar.
    BurstBelowBar {
        successful: u64,
        total: u64,
        required_percent: f64,
    },
    /// The load burst never reported.
    BurstMissing,
    /// No isolation probe run completed cleanly.
    ProbesMissing,
    /// Manual approval was required and did not come in time.
    ApprovalTimedOut {
        /// How long the approval was waited for, on the run's clock.
        #[serde(with = "crate::duration::serde_text")]
        waited: Duration,
        /// The plan's `time_scale`: durations here are on the run's clock, read in the
        /// runbook's time. Absent (1) in production.
        #[serde(
            default = "crate::duration::real_time",
            skip_serializing_if = "crate::duration::is_real_time"
        )]
        time_scale: f64,
    },
    /// The traffic split could not be applied or verified.
    TrafficFailed { detail: String },
    /// The promotion to 100 % could not be applied or verified; traffic went back to the
    /// baseline.
    PromotionFailed { detail: String },
    /// A comparison found the canary worse than the baseline beyond its allowed effect: its
    /// sequential test's e-value reached 1/α. A critical one rolls back at once.
    ComparisonFailed {
        comparison: String,
        measure: MeasureKind,
        direction: Direction,
        /// `high` or `low`: the side found worse.
        classification: Classification,
        /// Continuous: the share of looks with the canary beyond the allowance (above it when
        /// an increase is bad, below it for `decrease`). Counts: the canary's rate over the
        /// baseline's.
        #[serde(default, with = "crate::json_float::option")]
        estimate: Option<f64>,
        /// The estimate's confidence sequence.
        interval: Option<Interval>,
        #[serde(with = "crate::json_float")]
        e_value: f64,
        alpha: f64,
        /// Looks for continuous readings, events for counts, per arm.
        samples: Samples,
        /// Evaluations the test took a look at.
        looks: u64,
    },
    /// The comparisons' score is below `marginal`.
    ScoreBelowMarginal {
        score: f64,
        marginal: f64,
        /// The comparisons that failed.
        failed: Vec<String>,
    },
    /// The comparisons' score is below `pass` (or nothing could be judged, `score` absent):
    /// not enough to promote, not bad enough to roll back.
    ScoreMarginal {
        #[serde(default, with = "crate::json_float::option")]
        score: Option<f64>,
        marginal: f64,
        pass: f64,
    },
    /// A critical comparison had no data at the decision: it can neither pass nor fail.
    CriticalComparisonNoData { comparison: String },
    /// A critical comparison that must have data (`must_have_data`, Kayenta's `mustHaveData`)
    /// had none at the decision: it fails.
    RequiredComparisonNoData { comparison: String },
}

impl Reason {
    pub fn is_security(&self) -> bool {
        match self {
            Reason::GuardrailTriggered { on_breach, .. }
            | Reason::FailedAtDecision { on_breach, .. } => {
                *on_breach == OnBreach::SecurityRollback
            }
            Reason::AlertFired { security, .. } => *security,
            Reason::IsolationLeak { .. } => true,
            _ => false,
        }
    }

    /// The guardrail this reason is about, if any.
    pub fn guardrail(&self) -> Option<&str> {
        match self {
            Reason::GuardrailTriggered { guardrail, .. }
            | Reason::FailedAtDecision { guardrail, .. }
            | Reason::NoData { guardrail, .. }
            | Reason::QueryErrors { guardrail, .. }
            | Reason::AlertFailedGate { guardrail, .. } => Some(guardrail),
            Reason::AlertFired { guardrail, .. } => guardrail.as_deref(),
            _ => None,
        }
    }

    /// The comparison this reason is about, if any.
    pub fn comparison(&self) -> Option<&str> {
        match self {
            Reason::ComparisonFailed { comparison, .. }
            | Reason::CriticalComparisonNoData { comparison }
            | Reason::RequiredComparisonNoData { comparison } => Some(comparison),
            _ => None,
        }
    }
}

/// One line per reason, whatever text from outside it carries (operators, Alertmanager, the
/// services): free-text fields are shown [`Escaped`]; the journal keeps them as given.
impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::GuardrailTriggered {
                guardrail,
                on_breach,
                value,
                must,
                breached_for,
                time_scale,
                ..
            } => write!(
                f,
                "{guardrail}: canary value {} breached `{must}` for {} ({})",
                fmt_value(*value),
                Runbook(*breached_for, *time_scale),
                on_breach.as_str()
            ),
            Reason::FailedAtDecision {
                guardrail,
                value,
                must,
                ..
            } => write!(
                f,
                "{guardrail}: canary value {} does not satisfy `{must}` at the decision",
                fmt_value(*value)
            ),
            Reason::NoData { guardrail, cause } => {
                write!(f, "{guardrail}: no data at the decision ({cause})")
            }
            Reason::QueryErrors {
                guardrail,
                consecutive,
                last_error,
            } => write!(
                f,
                "{guardrail}: {consecutive} consecutive query errors (last: {})",
                Escaped(last_error)
            ),
            Reason::AlertFired {
                alert,
                security,
                guardrail,
            } => {
                let kind = if *security { "security alert" } else { "alert" };
                match guardrail {
                    Some(g) => write!(
                        f,
                        "{g}: Alertmanager {kind} {} fired for this run",
                        Escaped(alert)
                    ),
                    None => write!(
                        f,
                        "Alertmanager {kind} {} fired for this run",
                        Escaped(alert)
                    ),
                }
            }
            Reason::AlertFailedGate { guardrail, alert } => write!(
                f,
                "{guardrail}: Alertmanager alert {} fired during the window (block-promotion: the gate fails at the decision)",
                Escaped(alert)
            ),
            Reason::IsolationLeak {
                observer,
                owner,
                arm,
            } => write!(
                f,
                "SECURITY: {} received {}'s data from the {arm} arm (cross-tenant leak)",
                Escaped(observer),
                Escaped(owner)
            ),
            Reason::CanaryUnhealthy { detail } => {
                write!(f, "canary unhealthy: {}", Escaped(detail))
            }
            Reason::Aborted { by, reason } => {
                write!(f, "aborted by {}: {}", Escaped(by), Escaped(reason))
            }
            Reason::Signal { signal } => write!(f, "controller received {}", Escaped(signal)),
            Reason::ControllerDown {
                since,
                resumed,
                time_scale,
            } => write!(
                f,
                "the controller was down for {} until after the end of the window: the canary's end was not watched",
                Runbook(
                    Duration::from_millis((resumed - since).max(0) as u64),
                    *time_scale
                )
            ),
            Reason::BurstBelowBar {
                successful,
                total,
                required_percent,
            } => write!(
                f,
                "load burst: {successful}/{total} succeeded, below the {required_percent}% bar"
            ),
            Reason::BurstMissing => f.write_str("the load burst did not complete"),
            Reason::ProbesMissing => f.write_str("no isolation probe run completed"),
            Reason::ApprovalTimedOut { waited, time_scale } => {
                write!(f, "no approval within {}", Runbook(*waited, *time_scale))
            }
            Reason::TrafficFailed { detail } => {
                write!(f, "traffic change failed: {}", Escaped(detail))
            }
            Reason::PromotionFailed { detail } => write!(
                f,
                "the promotion to 100 % could not be applied or verified ({}); traffic returned to the baseline",
                Escaped(detail)
            ),
            Reason::ComparisonFailed {
                comparison,
                measure,
                direction,
                classification,
                estimate,
                interval,
                e_value,
                alpha,
                samples,
                looks,
            } => {
                let side = match classification {
                    Classification::Low => "lower",
                    _ => "higher",
                };
                let subject = match measure {
                    MeasureKind::Continuous => "canary",
                    MeasureKind::Counts => "canary's rate",
                    MeasureKind::Spread => "canary's spread",
                };
                write!(
                    f,
                    "{}: {subject} {side} than the baseline allows",
                    Escaped(comparison)
                )?;
                let range = |i: &Option<Interval>, scale: f64, unit: &str| {
                    i.map_or(String::new(), |i| {
                        format!(
                            " (confidence sequence {}{unit}–{}{unit})",
                            crate::comparisons::significant(i.lower * scale),
                            crate::comparisons::significant(i.upper * scale)
                        )
                    })
                };
                match (measure, estimate) {
                    (MeasureKind::Continuous | MeasureKind::Spread, Some(share)) => {
                        // The share shown is of the side an increase makes bad, unless only
                        // a decrease is.
                        let beyond = if *direction == Direction::Decrease {
                            "below"
                        } else {
                            "above"
                        };
                        if *direction != Direction::Either
                            || *classification == Classification::High
                        {
                            let of = match measure {
                                MeasureKind::Spread => "pairs of looks",
                                _ => "looks",
                            };
                            write!(
                                f,
                                ": {beyond} the allowance in {} % of {of}{}",
                                crate::comparisons::significant(share * 100.0),
                                range(interval, 100.0, " %")
                            )?;
                        }
                    }
                    (MeasureKind::Counts, Some(ratio)) => write!(
                        f,
                        ": rate ratio {}{}, {} canary and {} baseline events",
                        fmt_value(*ratio),
                        range(interval, 1.0, ""),
                        samples.canary,
                        samples.baseline
                    )?,
                    (_, None) => {}
                }
                write!(
                    f,
                    "; e-value {} ≥ {} after {looks} looks",
                    fmt_evidence(*e_value),
                    fmt_value(1.0 / alpha)
                )
            }
            Reason::ScoreBelowMarginal {
                score,
                marginal,
                failed,
            } => {
                write!(
                    f,
                    "comparison score {} is below the marginal threshold {}",
                    fmt_value(*score),
                    fmt_value(*marginal)
                )?;
                if !failed.is_empty() {
                    let names: Vec<String> =
                        failed.iter().map(|n| Escaped(n).to_string()).collect();
                    write!(f, " (failed: {})", names.join(", "))?;
                }
                Ok(())
            }
            Reason::ScoreMarginal {
                score: Some(score),
                marginal,
                pass,
            } => write!(
                f,
                "comparison score {} is between the marginal threshold {} and the pass threshold {}",
                fmt_value(*score),
                fmt_value(*marginal),
                fmt_value(*pass)
            ),
            Reason::ScoreMarginal { score: None, .. } => f.write_str(
                "no comparison could be judged: no data in either arm, so no comparison score",
            ),
            Reason::CriticalComparisonNoData { comparison } => write!(
                f,
                "{}: critical comparison without data at the decision",
                Escaped(comparison)
            ),
            Reason::RequiredComparisonNoData { comparison } => write!(
                f,
                "{}: critical comparison without data at the decision, and it must have data",
                Escaped(comparison)
            ),
        }
    }
}

/// An e-value for people: as [`fmt_value`], in scientific notation from a million on.
fn fmt_evidence(e: f64) -> String {
    if e.is_finite() && e >= 1e6 {
        format!("{e:.3e}")
    } else {
        fmt_value(e)
    }
}

/// Formats a guardrail value for people: at most 4 decimals, no trailing zeros.
pub fn fmt_value(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_owned()
    } else {
        s.to_owned()
    }
}

/// A value as people read it, with its unit when the guardrail has one: four significant
/// digits at most, trailing zeros dropped (`658.1 ms`, `99.58 %`, `0 errors`, `12346 ms`).
/// Four digits keep a value apart from a threshold like `99.6` that it sits just below.
pub fn fmt_in(v: f64, unit: Option<&str>) -> String {
    let number = fmt_significant(v, 4);
    match unit {
        Some(unit) if !unit.is_empty() && v.is_finite() => format!("{number} {unit}"),
        _ => number,
    }
}

/// `v` to `digits` significant digits, without trailing zeros; integers past that many digits
/// are shown whole.
fn fmt_significant(v: f64, digits: i32) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    if v == 0.0 {
        return "0".to_owned();
    }
    let magnitude = v.abs().log10().floor() as i32;
    let decimals = (digits - 1 - magnitude).clamp(0, 9) as usize;
    let s = format!("{v:.decimals$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s.as_str()
    };
    if s == "-0" {
        "0".to_owned()
    } else {
        s.to_owned()
    }
}

/// The decision of a run: the verdict, when, who authorised it, and every guardrail's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    #[serde(flatten)]
    pub verdict: Verdict,
    pub at: Millis,
    /// `engine` for automatic decisions; the operator for approvals and aborts.
    pub authorised_by: String,
    pub guardrails: Vec<GuardrailSummary>,
    /// Each comparison's judgement at the decision, in the plan's order (absent without
    /// comparisons).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub comparisons: Vec<Judgement>,
    /// The comparisons' score at the decision (absent without comparisons).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<Score>,
}

crate::choice! {
    /// What one run of the isolation probes concluded.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
    #[serde(try_from = "String", into = "&'static str")]
    pub enum ProbeVerdict {
        /// No foreign marker anywhere, every probe answered, every user found its own marker.
        Clean = "clean",
        /// At least one foreign marker reached a user: a security event.
        Leaked = "leaked",
        /// No leak seen, but the probes could not prove isolation (failed probes, or a user
        /// who cannot find its own marker).
        Unproven = "unproven",
    }
}

/// One isolation-probe run as the engine hears it: its verdict, the ordered user pairs it
/// probed and how many leaks it found (each also reported as its own
/// [`Event::IsolationLeak`](crate::engine::Event::IsolationLeak)).
///
/// Journals written before the verdict was recorded hold only `pairs` and `leaks`, with
/// `pairs` 0 unless the run was clean; the verdict is derived from them on reading, so those
/// journals replay to the decision they were written with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "ProbeRunRecord")]
pub struct ProbeRun {
    pub verdict: ProbeVerdict,
    pub pairs: u32,
    pub leaks: u32,
}

impl ProbeRun {
    /// Whether this run proves that the canary keeps tenants apart: clean, over at least one
    /// pair of users. The one rule behind the engine's "a probe run came back clean" and the
    /// evidence's count of clean runs.
    pub fn proves_isolation(&self) -> bool {
        self.verdict == ProbeVerdict::Clean && self.pairs > 0 && self.leaks == 0
    }
}

/// [`ProbeRun`] as a journal holds it, with or without its verdict.
#[derive(Deserialize)]
struct ProbeRunRecord {
    #[serde(default)]
    verdict: Option<ProbeVerdict>,
    pairs: u32,
    leaks: u32,
}

impl From<ProbeRunRecord> for ProbeRun {
    fn from(r: ProbeRunRecord) -> Self {
        // Before the verdict was recorded, only a clean run reported its pairs.
        let verdict = r.verdict.unwrap_or(if r.leaks > 0 {
            ProbeVerdict::Leaked
        } else if r.pairs > 0 {
            ProbeVerdict::Clean
        } else {
            ProbeVerdict::Unproven
        });
        ProbeRun {
            verdict,
            pairs: r.pairs,
            leaks: r.leaks,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fmt_in;

    #[test]
    fn values_read_with_their_unit_and_four_significant_digits() {
        assert_eq!(fmt_in(658.123_4, Some("ms")), "658.1 ms");
        assert_eq!(fmt_in(99.583_333, Some("%")), "99.58 %");
        assert_eq!(fmt_in(4.75, Some("ms")), "4.75 ms");
        assert_eq!(fmt_in(0.240_942_028, None), "0.2409");
        assert_eq!(fmt_in(1500.0, Some("ms")), "1500 ms");
        assert_eq!(fmt_in(12_345.6, Some("ms")), "12346 ms");
        assert_eq!(fmt_in(0.0, Some("errors")), "0 errors");
        assert_eq!(fmt_in(-0.000_01, None), "-0.00001");
        assert_eq!(fmt_in(100.0, Some("%")), "100 %");
        assert_eq!(fmt_in(f64::NAN, Some("ms")), "NaN");
        assert_eq!(fmt_in(3.0, Some("")), "3");
    }
}
