//! Verdicts and the reasons behind them.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::duration::Human;
use crate::engine::{GuardrailSummary, Millis};
use crate::escape::Escaped;
use crate::plan::{ArmRole, OnBreach, Threshold};

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
        #[serde(with = "crate::duration::serde_text")]
        breached_for: Duration,
        at: Millis,
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
    ControllerDown { since: Millis, resumed: Millis },
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
        #[serde(with = "crate::duration::serde_text")]
        waited: Duration,
    },
    /// The traffic split could not be applied or verified.
    TrafficFailed { detail: String },
    /// The promotion to 100 % could not be applied or verified; traffic went back to the
    /// baseline.
    PromotionFailed { detail: String },
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
                ..
            } => write!(
                f,
                "{guardrail}: canary value {} breached `{must}` for {} ({})",
                fmt_value(*value),
                Human(*breached_for),
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
            Reason::ControllerDown { since, resumed } => write!(
                f,
                "the controller was down for {} until after the end of the window: the canary's end was not watched",
                Human(Duration::from_millis((resumed - since).max(0) as u64))
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
            Reason::ApprovalTimedOut { waited } => {
                write!(f, "no approval within {}", Human(*waited))
            }
            Reason::TrafficFailed { detail } => {
                write!(f, "traffic change failed: {}", Escaped(detail))
            }
            Reason::PromotionFailed { detail } => write!(
                f,
                "the promotion to 100 % could not be applied or verified ({}); traffic returned to the baseline",
                Escaped(detail)
            ),
        }
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

/// The decision of a run: the verdict, when, who authorised it, and every guardrail's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    #[serde(flatten)]
    pub verdict: Verdict,
    pub at: Millis,
    /// `engine` for automatic decisions; the operator for approvals and aborts.
    pub authorised_by: String,
    pub guardrails: Vec<GuardrailSummary>,
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
