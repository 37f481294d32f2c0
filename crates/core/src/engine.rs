//! The decision engine: a pure state machine from inputs to actions.
//!
//! Inputs are clock ticks, guardrail observations and external events, each stamped with the time
//! the runtime received it. Outputs are actions for the runtime to carry out: set the traffic
//! split, evaluate the guardrails, write a check-log line, take a snapshot, start the burst, run
//! isolation probes, notify people, decide. Nothing here reads a clock, sleeps or touches the
//! network, so a run is fully determined by its inputs: replaying a journal reproduces every
//! action and the verdict bit for bit ([`replay`]).
//!
//! Rules (DESIGN §4):
//! - Every evaluation gives each guardrail a value per arm, no data, or an error. The canary's
//!   value is judged; the baseline's is recorded beside it.
//! - `for` is consecutive: a breach triggers only when every evaluation across `for` breached.
//!   A passing evaluation, or no data (unless `on_no_data = "fail"`), resets it. An error leaves
//!   it as it was; `max_query_errors` errors in a row roll back.
//! - `rollback` and `security-rollback` act at once; `block-promotion` must pass at the decision;
//!   `warn` only notifies. An Alertmanager alert for this run acts as its guardrail's own
//!   `on_breach`, taken from the plan ([`Event::AlertFired`]): a gate's alert fails the gate at
//!   the decision, it does not roll back.
//! - At the end of the window, PROMOTE iff nothing triggered, every guardrail that gates
//!   promotion has data and passes, the burst met its bar and a probe run came back clean.
//!   Missing evidence is INCONCLUSIVE, never PROMOTE.
//! - A PROMOTE the load balancer does not take ([`Event::PromotionFailed`], after the decision)
//!   becomes PROMOTION_FAILED: traffic back to the baseline, paged, its own exit code.
//! - Comparisons (DESIGN §14, [`crate::comparisons`]): every evaluation feeds each comparison's
//!   sequential test one look. A critical comparison that fails rolls back at once; one that
//!   is not critical is told and counts at the decision, where the comparisons' score below
//!   `marginal` rolls back, below `pass` (or nothing judged, or a critical one without data)
//!   is INCONCLUSIVE, and from `pass` on lets the guardrails decide. Without comparisons
//!   nothing of this applies: the engine acts exactly as before they existed.

use std::time::Duration;

use canary_judge::{Judgement, Score};
use serde::{Deserialize, Serialize};

use crate::comparisons::{ComparisonState, Look};
use crate::duration::{Runbook, runbook_with_wall};
use crate::escape::Escaped;
use crate::plan::{
    Approval, ArmRole, Guardrail, OnBreach, OnInconclusive, OnNoData, Plan, PlanError, Threshold,
};
use crate::verdict::{Decision, NoDataCause, ProbeRun, Reason, Verdict, fmt_in, fmt_value};

pub use crate::comparisons::{ComparisonReading, Measurement};

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// What one query returned for one arm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reading {
    /// A single value, and the number of samples behind it when the guardrail counts them.
    Value {
        #[serde(with = "crate::json_float")]
        value: f64,
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            with = "crate::json_float::option"
        )]
        samples: Option<f64>,
    },
    /// The query returned nothing.
    NoData,
    /// The query failed.
    Error { message: String },
}

impl Reading {
    pub fn value(value: f64) -> Self {
        Reading::Value {
            value,
            samples: None,
        }
    }

    /// The value, when there is one.
    pub fn as_value(&self) -> Option<f64> {
        match self {
            Reading::Value { value, .. } => Some(*value),
            _ => None,
        }
    }
}

impl std::fmt::Display for Reading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reading::Value { value, .. } => f.write_str(&fmt_value(*value)),
            Reading::NoData => f.write_str("no data"),
            Reading::Error { .. } => f.write_str("error"),
        }
    }
}

/// One guardrail's readings in an evaluation round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuardrailReading {
    pub guardrail: String,
    pub canary: Reading,
    pub baseline: Reading,
}

/// Something that happened outside the evaluation loop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// An Alertmanager alert labelled with this run fired. It acts as its guardrail's own
    /// `on_breach`, taken from the plan (DESIGN §8): `rollback` and `security-rollback` roll
    /// back at once, a `block-promotion` gate fails at the decision, `warn` only notifies. The
    /// plan is the authority, not the alert's labels: an `action` that disagrees with the plan
    /// is reported and the plan's applies. An alert that names no guardrail of the plan (none,
    /// as in journals written before alerts carried one, or an unknown name, reported) rolls
    /// back, as an alert for this run always did: returning traffic to the baseline is the safe
    /// side of an alert canary cannot place.
    AlertFired {
        alert: String,
        /// What the alert's labels say (`action = "security-rollback"` or `severity = "page"`);
        /// only used for an alert that names no guardrail of the plan.
        security: bool,
        /// The alert's `guardrail` label.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        guardrail: Option<String>,
        /// The alert's `action` label, when it names an `on_breach`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        action: Option<OnBreach>,
    },
    /// An isolation probe found another tenant's marker in a response.
    IsolationLeak {
        observer: String,
        owner: String,
        arm: ArmRole,
    },
    /// A probe run finished; each leak it found came before as an [`Event::IsolationLeak`].
    ProbesCompleted(ProbeRun),
    /// An arm failed its health checks.
    ArmUnhealthy { arm: ArmRole, detail: String },
    /// The load burst finished.
    BurstCompleted { total: u64, successful: u64 },
    /// `canary abort`.
    Abort { by: String, reason: String },
    /// `canary approve`.
    Approve { by: String },
    /// SIGINT / SIGTERM.
    Signal { signal: String },
    /// A traffic change could not be applied or verified.
    TrafficFailed { detail: String },
    /// The promotion the engine decided could not be applied or verified on the load balancer.
    /// The decision becomes [`Verdict::PromotionFailed`] and traffic goes back to the baseline;
    /// journalled like every event, so a replay reaches the same outcome.
    PromotionFailed { detail: String },
}

/// An input to the engine. Every input carries the time it was received; time never goes back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "input", rename_all = "snake_case")]
pub enum Input {
    /// T+0: the run starts.
    Start { at: Millis },
    /// The clock moved.
    Tick { at: Millis },
    /// The results of the evaluation the engine asked for at `round`.
    Observations {
        at: Millis,
        round: Millis,
        readings: Vec<GuardrailReading>,
        /// Each comparison's readings per arm (absent from journals written before
        /// comparisons existed, and from plans without any).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        comparisons: Vec<ComparisonReading>,
    },
    /// An external event.
    Event { at: Millis, event: Event },
    /// The controller came back (`canary resume`) after the inputs before this one: the engine
    /// puts the split back, asks again for what was outstanding, or — when the window ended
    /// while the controller was down — rolls back.
    Resume { at: Millis },
}

impl Input {
    pub fn at(&self) -> Millis {
        match self {
            Input::Start { at }
            | Input::Tick { at }
            | Input::Observations { at, .. }
            | Input::Event { at, .. }
            | Input::Resume { at } => *at,
        }
    }
}

/// Why the canary weight changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "why", rename_all = "snake_case")]
pub enum WeightChange {
    /// Entering step `index` of the plan.
    Step {
        index: usize,
    },
    Promote,
    Rollback,
}

/// How loud a notification is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
    /// Security: the highest severity, pages.
    Page,
}

crate::choice! {
    /// What a notification is about, so that people can subscribe to some topics only
    /// (`on = ["breach", "decision"]`); the notifiers route on it.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
    #[serde(try_from = "String", into = "&'static str")]
    pub enum Topic {
        /// The run started: split applied, guardrails armed.
        Start = "start",
        /// Progress: a step, a periodic check (the runbook's 5-minute update), an operator
        /// action that changed nothing.
        Check = "check",
        /// Something is wrong but not yet decided: a breach began, a warn-only guardrail
        /// triggered, the baseline is unhealthy.
        Breach = "breach",
        /// Traffic is going back to the baseline (why, as the rollback starts), is back
        /// (verified), or is not verified yet: the controller's, from what the load balancer
        /// answers (the engine decides, it does not see traffic).
        Rollback = "rollback",
        /// The verdict, or a decision waiting for an operator.
        Decision = "decision",
    }
}

/// Where a guardrail stands after an evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Status {
    NotEvaluated,
    Pass,
    Breach,
    NoData { cause: NoDataCause },
    Error { message: String },
}

impl Status {
    /// The check-log mark: ✓ pass, ✗ breach, ? anything else.
    pub fn mark(&self) -> char {
        match self {
            Status::Pass => '✓',
            Status::Breach => '✗',
            _ => '?',
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
            Status::NotEvaluated => "NOT EVALUATED",
            Status::Pass => "PASS",
            Status::Breach => "FAIL",
            Status::NoData { .. } => "NO DATA",
            Status::Error { .. } => "ERROR",
        }
    }
}

/// One guardrail's state, as reported in check logs, snapshots and the decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuardrailSummary {
    pub name: String,
    pub on_breach: OnBreach,
    pub must: Threshold,
    #[serde(rename = "for", with = "crate::duration::serde_text")]
    pub for_: Duration,
    pub status: Status,
    /// The last readings (canary judged, baseline for comparison).
    pub canary: Option<Reading>,
    pub baseline: Option<Reading>,
    /// When the current run of breached evaluations began.
    pub breached_since: Option<Millis>,
    pub evaluations: u32,
    pub breaches: u32,
    pub triggered: bool,
    /// The canary value furthest on the wrong side of the threshold seen so far.
    #[serde(default, with = "crate::json_float::option")]
    pub worst: Option<f64>,
    /// The plan's `time_scale`: `for_` is on the run's clock, which went this many times faster
    /// than the runbook's; people read it in the runbook's time ([`Self::runbook_for`]). Absent
    /// (1) in production.
    #[serde(
        default = "crate::duration::real_time",
        skip_serializing_if = "crate::duration::is_real_time"
    )]
    pub time_scale: f64,
    /// What the value is measured in (`ms`, `%`), when the guardrail says (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

impl GuardrailSummary {
    /// The guardrail's `for` in the runbook's time (`5m`, even when a compressed run held it
    /// for 5 seconds).
    pub fn runbook_for(&self) -> Runbook {
        Runbook(self.for_, self.time_scale)
    }

    /// A reading as people read it: with the guardrail's unit when it has one (`658.1 ms`, see
    /// [`fmt_in`]), as [`Reading`] displays it otherwise; `-` when there is none yet.
    pub fn show(&self, reading: Option<&Reading>) -> String {
        match (reading, self.unit.as_deref()) {
            (Some(Reading::Value { value, .. }), Some(unit)) if value.is_finite() => {
                fmt_in(*value, Some(unit))
            }
            (Some(r), _) => r.to_string(),
            (None, _) => "-".to_owned(),
        }
    }

    /// The threshold, with the guardrail's unit when it has one: `< 1500 ms`.
    pub fn must_text(&self) -> String {
        match self.unit.as_deref() {
            Some(unit) => format!("{} {unit}", self.must),
            None => self.must.to_string(),
        }
    }

    /// One check-log line: `✓ ttfv_p95  canary 812.5 ms  baseline 790 ms  (must < 1500 ms for
    /// 5m, rollback)`, its values in their unit and its `for` in the runbook's time.
    pub fn check_line(&self) -> String {
        let mut line = format!(
            "{} {:<14} canary {:>10}  baseline {:>10}  (must {}",
            self.status.mark(),
            self.name,
            self.show(self.canary.as_ref()),
            self.show(self.baseline.as_ref()),
            self.must_text()
        );
        if !self.for_.is_zero() {
            line.push_str(&format!(" for {}", self.runbook_for()));
        }
        line.push_str(&format!(", {})", self.on_breach.as_str()));
        match &self.status {
            Status::Breach => line.push_str(" BREACH"),
            Status::NoData { cause } => line.push_str(&format!(" NO DATA: {cause}")),
            Status::Error { message } => line.push_str(&format!(" ERROR: {message}")),
            _ => {}
        }
        line
    }
}

/// What the runtime must do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Set the canary's share of traffic and verify it.
    SetWeight { canary: u8, change: WeightChange },
    /// Evaluate every guardrail and every comparison for both arms at `round` and answer with
    /// [`Input::Observations`].
    Evaluate { round: Millis },
    /// Append one line per guardrail to the check log.
    CheckLog {
        round: Millis,
        guardrails: Vec<GuardrailSummary>,
        /// Each comparison's judgement at that round (absent without comparisons).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        comparisons: Vec<Judgement>,
    },
    /// Write the checkpoint snapshot (`T15`, `T30`, `T60`) with the raw results of `round`.
    Snapshot {
        label: String,
        round: Millis,
        guardrails: Vec<GuardrailSummary>,
        /// Each comparison's judgement at that round (absent without comparisons).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        comparisons: Vec<Judgement>,
    },
    /// Start the load burst; answer with [`Event::BurstCompleted`].
    StartBurst,
    /// Run the isolation probes; answer with [`Event::ProbesCompleted`] (and a leak event per
    /// leak).
    RunProbes,
    /// Tell people.
    Notify {
        topic: Topic,
        severity: Severity,
        message: String,
        /// The guardrails the message is about, with their values and thresholds (a breach,
        /// the triggers of a rollback), for channels that show them field by field.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        guardrails: Vec<GuardrailSummary>,
    },
    /// Wait for `canary approve` / `canary abort` until `deadline`.
    AwaitApproval { deadline: Millis, reason: String },
    /// The verdict. Followed by the final [`Action::SetWeight`].
    Decide(Decision),
}

/// An input the engine cannot take.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    #[error("the plan is invalid: {0}")]
    Plan(#[from] PlanError),
    #[error("input at {at} is earlier than the previous input at {now}: time must not go back")]
    TimeWentBack { at: Millis, now: Millis },
    #[error("the run has not started: the first input must be Start")]
    NotStarted,
    #[error("the run already started")]
    AlreadyStarted,
    #[error("observations for round {round} were not asked for (expected {expected:?})")]
    UnexpectedRound {
        round: Millis,
        expected: Option<Millis>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Ready,
    Running,
    /// Waiting for an operator: approval of a passing canary, or of an inconclusive one.
    Awaiting {
        deadline: Millis,
        since: Millis,
        inconclusive: bool,
    },
    Decided,
}

#[derive(Debug, Clone, PartialEq)]
enum Burst {
    NotPlanned,
    Pending,
    Running,
    Done { total: u64, successful: u64 },
}

#[derive(Debug, Clone)]
struct GuardrailState {
    spec: Guardrail,
    status: Status,
    canary: Option<Reading>,
    baseline: Option<Reading>,
    breached_since: Option<Millis>,
    consecutive_errors: u32,
    evaluations: u32,
    breaches: u32,
    triggered: bool,
    worst: Option<f64>,
    /// The first Alertmanager alert of this guardrail, for a gate: it fails at the decision.
    alerted: Option<String>,
}

impl GuardrailState {
    fn new(spec: Guardrail) -> Self {
        GuardrailState {
            spec,
            status: Status::NotEvaluated,
            canary: None,
            baseline: None,
            breached_since: None,
            consecutive_errors: 0,
            evaluations: 0,
            breaches: 0,
            triggered: false,
            worst: None,
            alerted: None,
        }
    }

    fn summary(&self, time_scale: f64) -> GuardrailSummary {
        GuardrailSummary {
            name: self.spec.name.clone(),
            on_breach: self.spec.on_breach,
            must: self.spec.must,
            for_: self.spec.for_,
            status: self.status.clone(),
            canary: self.canary.clone(),
            baseline: self.baseline.clone(),
            breached_since: self.breached_since,
            evaluations: self.evaluations,
            breaches: self.breaches,
            triggered: self.triggered,
            worst: self.worst,
            time_scale,
            unit: self.spec.unit.clone(),
        }
    }

    /// Judges the canary reading. NaN and too few samples are no data.
    fn judge(&self, reading: &Reading) -> Status {
        match reading {
            Reading::Value { value, samples } => {
                if value.is_nan() {
                    return Status::NoData {
                        cause: NoDataCause::NotANumber,
                    };
                }
                if let Some(need) = self.spec.min_samples {
                    let got = samples.unwrap_or(0.0);
                    if got.is_nan() || got < need {
                        return Status::NoData {
                            cause: NoDataCause::InsufficientSamples { got, need },
                        };
                    }
                }
                if self.spec.must.passes(*value) {
                    Status::Pass
                } else {
                    Status::Breach
                }
            }
            Reading::NoData => Status::NoData {
                cause: NoDataCause::Empty,
            },
            Reading::Error { message } => Status::Error {
                message: message.clone(),
            },
        }
    }

    fn note_worst(&mut self, value: f64) {
        use crate::plan::Comparator::*;
        let worse = |a: f64, b: f64| match self.spec.must.op {
            Lt | Le => a > b,
            Gt | Ge => a < b,
            Eq | Ne => (a - self.spec.must.value).abs() > (b - self.spec.must.value).abs(),
        };
        if self.worst.is_none_or(|w| worse(value, w)) {
            self.worst = Some(value);
        }
    }
}

/// What one evaluation of one guardrail led to.
enum Outcome {
    Quiet,
    BreachStarted,
    Triggered(Reason),
    TooManyErrors(Reason),
}

/// The engine. Feed it inputs with [`Engine::apply`]; carry out the actions it returns.
#[derive(Debug, Clone)]
pub struct Engine {
    plan: Plan,
    phase: Phase,
    start: Millis,
    now: Millis,
    /// Offset of the last evaluation round asked for.
    last_round: Option<Duration>,
    pending_round: Option<Millis>,
    step: usize,
    weight: u8,
    checkpoints_done: usize,
    next_check_log: Duration,
    burst: Burst,
    clean_probe_runs: u32,
    /// Probe runs asked for and not yet reported.
    probes_running: u32,
    guardrails: Vec<GuardrailState>,
    comparisons: Vec<ComparisonState>,
    decision: Option<Decision>,
}

/// What the engine asked for and has not heard back about: what a resumed controller must do
/// again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Outstanding {
    /// The evaluation round waiting for observations.
    pub round: Option<Millis>,
    /// The burst was started and never reported.
    pub burst: bool,
    /// Probe runs asked for and never reported.
    pub probes: u32,
}

/// A read-only view of a running engine, for the terminal and `canary status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EngineStatus {
    pub phase: &'static str,
    pub elapsed_ms: i64,
    pub window_ms: i64,
    pub canary_weight: u8,
    pub step: usize,
    pub guardrails: Vec<GuardrailSummary>,
    pub verdict: Option<&'static str>,
    /// Each comparison's judgement so far, in the plan's order (empty without comparisons).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub comparisons: Vec<Judgement>,
    /// Their score so far (absent without comparisons).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<Score>,
}

fn ms(d: Duration) -> i64 {
    d.as_millis() as i64
}

impl Engine {
    /// An engine for `plan`, waiting for [`Input::Start`].
    pub fn new(plan: Plan) -> Result<Engine, EngineError> {
        plan.check()?;
        let guardrails = plan
            .guardrails
            .iter()
            .cloned()
            .map(GuardrailState::new)
            .collect();
        let comparisons = plan
            .comparisons
            .iter()
            .map(ComparisonState::new)
            .collect::<Result<Vec<_>, _>>()?;
        let burst = if plan.burst.is_some() {
            Burst::Pending
        } else {
            Burst::NotPlanned
        };
        Ok(Engine {
            next_check_log: plan.check_log_interval,
            plan,
            phase: Phase::Ready,
            start: 0,
            now: Millis::MIN,
            last_round: None,
            pending_round: None,
            step: 0,
            weight: 0,
            checkpoints_done: 0,
            burst,
            clean_probe_runs: 0,
            probes_running: 0,
            guardrails,
            comparisons,
            decision: None,
        })
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The decision, once made.
    pub fn decision(&self) -> Option<&Decision> {
        self.decision.as_ref()
    }

    /// Each comparison's judgement so far, in the plan's order: what a status view shows.
    /// Derived from the observations applied, nothing else, so a replay gives the same.
    pub fn judgements(&self) -> Vec<Judgement> {
        self.comparisons
            .iter()
            .map(ComparisonState::judgement)
            .collect()
    }

    /// The comparisons' score so far; `None` for a plan without comparisons.
    pub fn score(&self) -> Option<Score> {
        (!self.comparisons.is_empty()).then(|| self.plan.scoring.score(&self.judgements()))
    }

    pub fn is_decided(&self) -> bool {
        self.phase == Phase::Decided
    }

    /// When the run started (T+0), once it has.
    pub fn started_at(&self) -> Option<Millis> {
        (self.phase != Phase::Ready).then_some(self.start)
    }

    /// The evaluation round waiting for observations, if any.
    pub fn pending_round(&self) -> Option<Millis> {
        self.pending_round
    }

    /// What was asked for and never reported.
    pub fn outstanding(&self) -> Outstanding {
        Outstanding {
            round: self.pending_round,
            burst: self.burst == Burst::Running,
            probes: self.probes_running,
        }
    }

    /// The next time at which a [`Input::Tick`] will produce actions. `None` before the start,
    /// after the decision, or while an evaluation round is outstanding and nothing else is due.
    pub fn next_wakeup(&self) -> Option<Millis> {
        let mut times: Vec<Millis> = Vec::new();
        match self.phase {
            Phase::Ready | Phase::Decided => return None,
            Phase::Awaiting { deadline, .. } => times.push(deadline),
            Phase::Running => {}
        }
        if self.step + 1 < self.plan.steps.len() {
            times.push(self.start + ms(self.step_end(self.step)));
        }
        if let (Burst::Pending, Some(b)) = (&self.burst, &self.plan.burst) {
            times.push(self.start + ms(b.at));
        }
        if self.pending_round.is_none() {
            times.push(self.start + ms(self.next_round_offset()));
        }
        times.into_iter().min()
    }

    pub fn status(&self) -> EngineStatus {
        EngineStatus {
            phase: match self.phase {
                Phase::Ready => "ready",
                Phase::Running => "running",
                Phase::Awaiting { .. } => "awaiting-approval",
                Phase::Decided => "decided",
            },
            elapsed_ms: if self.phase == Phase::Ready {
                0
            } else {
                self.now - self.start
            },
            window_ms: ms(self.plan.window()),
            canary_weight: self.weight,
            step: self.step,
            guardrails: self.summaries(),
            verdict: self.decision.as_ref().map(|d| d.verdict.name()),
            comparisons: self.judgements(),
            score: self.score(),
        }
    }

    /// Takes one input and returns the actions it causes, in order.
    pub fn apply(&mut self, input: &Input) -> Result<Vec<Action>, EngineError> {
        let at = input.at();
        if at < self.now {
            return Err(EngineError::TimeWentBack { at, now: self.now });
        }
        let last_input = self.now;
        self.now = at;
        let mut out = Vec::new();
        match input {
            Input::Start { at } => {
                if self.phase != Phase::Ready {
                    return Err(EngineError::AlreadyStarted);
                }
                self.start = *at;
                self.phase = Phase::Running;
                let first = self.plan.steps[0].weight;
                self.weight = first;
                out.push(Action::SetWeight {
                    canary: first,
                    change: WeightChange::Step { index: 0 },
                });
                out.push(Action::Notify {
                    guardrails: Vec::new(),
                    topic: Topic::Start,
                    severity: Severity::Info,
                    message: format!(
                        "canary of {} started: {} % to {} ({}), {} % to {} ({}), window {}",
                        self.plan.service,
                        first,
                        self.plan.arms.canary.name,
                        self.plan.arms.canary.selector,
                        100 - first,
                        self.plan.arms.baseline.name,
                        self.plan.arms.baseline.selector,
                        runbook_with_wall(self.plan.window(), self.plan.time_scale)
                    ),
                });
                self.on_tick(&mut out);
            }
            Input::Tick { .. } => {
                self.require_started()?;
                self.on_tick(&mut out);
            }
            Input::Observations {
                round,
                readings,
                comparisons,
                ..
            } => {
                self.require_started()?;
                if self.phase == Phase::Decided {
                    return Ok(out);
                }
                if self.pending_round != Some(*round) {
                    return Err(EngineError::UnexpectedRound {
                        round: *round,
                        expected: self.pending_round,
                    });
                }
                self.pending_round = None;
                self.on_observations(*round, readings, comparisons, &mut out);
                self.on_tick(&mut out);
            }
            Input::Resume { at } => {
                self.require_started()?;
                self.on_resume(last_input, *at, &mut out);
            }
            Input::Event { event, .. } => {
                self.on_event(event, &mut out);
                if self.phase != Phase::Ready {
                    self.on_tick(&mut out);
                }
            }
        }
        Ok(out)
    }

    fn require_started(&self) -> Result<(), EngineError> {
        if self.phase == Phase::Ready {
            Err(EngineError::NotStarted)
        } else {
            Ok(())
        }
    }

    fn offset(&self) -> Duration {
        Duration::from_millis((self.now - self.start).max(0) as u64)
    }

    /// Offset at which step `index` ends.
    fn step_end(&self, index: usize) -> Duration {
        self.plan.steps[..=index].iter().map(|s| s.hold).sum()
    }

    /// Offset of the next evaluation round: every interval, with the end of the window always a
    /// round of its own; after the window (while awaiting approval) every interval again.
    fn next_round_offset(&self) -> Duration {
        let window = self.plan.window();
        let interval = self.plan.evaluation_interval;
        match self.last_round {
            None => interval.min(window),
            Some(last) if last < window => (last + interval).min(window),
            Some(last) => last + interval,
        }
    }

    /// The latest evaluation round due at `offset`, skipping rounds a late runtime missed — but
    /// never the round at the end of the window, which the decision rests on.
    fn due_round(&self, offset: Duration) -> Option<Duration> {
        let next = self.next_round_offset();
        if offset < next {
            return None;
        }
        let window = self.plan.window();
        let interval = self.plan.evaluation_interval.as_millis().max(1);
        let latest = |from: Duration| {
            let periods = (offset - from).as_millis() / interval;
            from + Duration::from_millis((periods * interval) as u64)
        };
        Some(if next < window {
            if offset >= window {
                window
            } else {
                latest(Duration::ZERO)
            }
        } else if next == window {
            window
        } else {
            latest(window)
        })
    }

    fn on_tick(&mut self, out: &mut Vec<Action>) {
        if matches!(self.phase, Phase::Ready | Phase::Decided) {
            return;
        }
        let offset = self.offset();
        if self.phase == Phase::Running {
            while self.step + 1 < self.plan.steps.len() && offset >= self.step_end(self.step) {
                self.step += 1;
                let weight = self.plan.steps[self.step].weight;
                self.weight = weight;
                out.push(Action::SetWeight {
                    canary: weight,
                    change: WeightChange::Step { index: self.step },
                });
                out.push(Action::Notify {
                    guardrails: Vec::new(),
                    topic: Topic::Check,
                    severity: Severity::Info,
                    message: format!("step {}: canary weight {} %", self.step + 1, weight),
                });
            }
        }
        if let (Burst::Pending, Some(b)) = (&self.burst, &self.plan.burst)
            && offset >= b.at
        {
            self.burst = Burst::Running;
            out.push(Action::StartBurst);
            if self.plan.probes {
                self.probes_running += 1;
                out.push(Action::RunProbes);
            }
        }
        if self.pending_round.is_none()
            && let Some(next) = self.due_round(offset)
        {
            let round = self.start + ms(next);
            self.last_round = Some(next);
            self.pending_round = Some(round);
            out.push(Action::Evaluate { round });
        }
        if let Phase::Awaiting {
            deadline,
            since,
            inconclusive,
        } = self.phase
            && self.now >= deadline
        {
            let timed_out = Reason::ApprovalTimedOut {
                waited: Duration::from_millis((deadline - since).max(0) as u64),
                time_scale: self.plan.time_scale,
            };
            if inconclusive {
                let mut reasons = self.inconclusive_reasons();
                reasons.push(timed_out);
                self.decide(Verdict::Inconclusive { reasons }, "engine", out);
            } else {
                self.decide(
                    Verdict::Rollback {
                        reasons: vec![timed_out],
                    },
                    "engine",
                    out,
                );
            }
        }
    }

    fn on_observations(
        &mut self,
        round: Millis,
        readings: &[GuardrailReading],
        comparisons: &[ComparisonReading],
        out: &mut Vec<Action>,
    ) {
        let max_errors = self.plan.max_query_errors;
        let time_scale = self.plan.time_scale;
        let mut triggered: Vec<Reason> = Vec::new();
        for g in &mut self.guardrails {
            let reading = readings.iter().find(|r| r.guardrail == g.spec.name);
            let (canary, baseline) = match reading {
                Some(r) => (r.canary.clone(), r.baseline.clone()),
                None => {
                    let missing = Reading::Error {
                        message: "not evaluated by the runtime".to_owned(),
                    };
                    (missing.clone(), missing)
                }
            };
            let outcome = evaluate(g, round, canary, baseline, max_errors, time_scale);
            match outcome {
                Outcome::Quiet => {}
                Outcome::BreachStarted => out.push(Action::Notify {
                    guardrails: vec![g.summary(time_scale)],
                    topic: Topic::Breach,
                    severity: Severity::Warning,
                    message: format!(
                        "{} breaching: canary {}, baseline {} (must {}){}",
                        g.spec.name,
                        show(&g.canary),
                        show(&g.baseline),
                        g.spec.must,
                        if g.spec.for_.is_zero() || g.spec.on_breach == OnBreach::BlockPromotion {
                            String::new()
                        } else {
                            format!(
                                "; rolls back if it lasts {}",
                                Runbook(g.spec.for_, time_scale)
                            )
                        }
                    ),
                }),
                Outcome::Triggered(reason) | Outcome::TooManyErrors(reason) => {
                    if g.spec.on_breach == OnBreach::Warn
                        && matches!(reason, Reason::GuardrailTriggered { .. })
                    {
                        out.push(Action::Notify {
                            guardrails: vec![g.summary(time_scale)],
                            topic: Topic::Breach,
                            severity: Severity::Warning,
                            message: format!(
                                "warning only: {reason}; baseline {}",
                                show(&g.baseline)
                            ),
                        });
                    } else {
                        // The breach is told on its own, with both arms' values, whatever its
                        // `for`: with `for = 0` it triggers on its first evaluation and no
                        // "breaching" message came before.
                        out.push(Action::Notify {
                            guardrails: vec![g.summary(time_scale)],
                            topic: Topic::Breach,
                            severity: if g.spec.on_breach == OnBreach::SecurityRollback {
                                Severity::Page
                            } else {
                                Severity::Critical
                            },
                            message: format!(
                                "{reason}; baseline {}: rolling back",
                                show(&g.baseline)
                            ),
                        });
                        triggered.push(reason);
                    }
                }
            }
        }

        triggered.extend(self.judge_comparisons(comparisons, out));

        let offset = Duration::from_millis((round - self.start).max(0) as u64);
        if offset >= self.next_check_log {
            while self.next_check_log <= offset {
                self.next_check_log += self.plan.check_log_interval;
            }
            out.push(Action::CheckLog {
                round,
                guardrails: self.summaries(),
                comparisons: self.judgements(),
            });
            // Probes run with the burst, then at every check interval strictly inside the window
            // when the last run has answered: on a compressed clock a run can outlast the
            // interval, and runs piling up would load the canary far beyond its share.
            let after_burst = self.plan.burst.as_ref().is_none_or(|b| offset > b.at);
            if self.plan.probes
                && self.probes_running == 0
                && after_burst
                && self.phase == Phase::Running
                && offset < self.plan.window()
            {
                self.probes_running += 1;
                out.push(Action::RunProbes);
            }
        }
        while self.checkpoints_done < self.plan.checkpoints.len()
            && self.plan.checkpoints[self.checkpoints_done] <= offset
        {
            let at = self.plan.checkpoints[self.checkpoints_done];
            self.checkpoints_done += 1;
            out.push(Action::Snapshot {
                label: self.plan.checkpoint_label(at),
                round,
                guardrails: self.summaries(),
                comparisons: self.judgements(),
            });
        }

        if !triggered.is_empty() {
            self.decide(Verdict::Rollback { reasons: triggered }, "engine", out);
        } else if self.phase == Phase::Running && offset >= self.plan.window() {
            self.decide_at_end(out);
        }
    }

    /// Feeds each comparison its look of this round. A comparison that has just failed is
    /// told; a critical one returns the reason to roll back.
    fn judge_comparisons(
        &mut self,
        readings: &[ComparisonReading],
        out: &mut Vec<Action>,
    ) -> Vec<Reason> {
        let mut triggered = Vec::new();
        for c in &mut self.comparisons {
            let reading = readings.iter().find(|r| r.comparison == c.spec.name);
            if c.observe(reading) != Look::JustFailed {
                continue;
            }
            let reason = c.failure();
            if c.spec.critical {
                out.push(Action::Notify {
                    guardrails: Vec::new(),
                    topic: Topic::Breach,
                    severity: Severity::Critical,
                    message: format!("{reason}; critical comparison: rolling back"),
                });
                triggered.push(reason);
            } else {
                out.push(Action::Notify {
                    guardrails: Vec::new(),
                    topic: Topic::Breach,
                    severity: Severity::Warning,
                    message: format!(
                        "{reason}; it counts against the comparisons' score at the decision"
                    ),
                });
            }
        }
        triggered
    }

    /// The comparisons' part of the decision: reasons that roll back (the score below
    /// `marginal`), and reasons that make it INCONCLUSIVE (the score below `pass`, nothing
    /// judged, a critical comparison without data). Nothing without comparisons.
    fn comparison_reasons(&self) -> (Vec<Reason>, Vec<Reason>) {
        let (mut failed, mut inconclusive) = (Vec::new(), Vec::new());
        let Some(score) = self.score() else {
            return (failed, inconclusive);
        };
        let scoring = &self.plan.scoring;
        for c in &self.comparisons {
            if score.failed_critical.contains(&c.spec.name) {
                failed.push(c.failure());
            }
        }
        let judgements = self.judgements();
        match score.score {
            Some(value) if value < scoring.marginal => failed.push(Reason::ScoreBelowMarginal {
                score: value,
                marginal: scoring.marginal,
                failed: judgements
                    .iter()
                    .filter(|j| j.failed())
                    .map(|j| j.name.clone())
                    .collect(),
            }),
            Some(value) if value < scoring.pass => inconclusive.push(Reason::ScoreMarginal {
                score: Some(value),
                marginal: scoring.marginal,
                pass: scoring.pass,
            }),
            Some(_) => {}
            None => inconclusive.push(Reason::ScoreMarginal {
                score: None,
                marginal: scoring.marginal,
                pass: scoring.pass,
            }),
        }
        inconclusive.extend(
            score
                .critical_without_data
                .into_iter()
                .map(|comparison| Reason::CriticalComparisonNoData { comparison }),
        );
        (failed, inconclusive)
    }

    /// The controller is back after being down since `last_input`: inside the window the split
    /// is put back where the engine has it and whatever was outstanding is asked for again;
    /// past the window nothing the canary did in between was watched, so it rolls back.
    fn on_resume(&mut self, last_input: Millis, at: Millis, out: &mut Vec<Action>) {
        if self.phase == Phase::Decided {
            return;
        }
        if at > self.start + ms(self.plan.window()) {
            let reason = Reason::ControllerDown {
                since: last_input,
                resumed: at,
                time_scale: self.plan.time_scale,
            };
            self.decide(
                Verdict::Rollback {
                    reasons: vec![reason],
                },
                "engine",
                out,
            );
            return;
        }
        out.push(Action::SetWeight {
            canary: self.weight,
            change: WeightChange::Step { index: self.step },
        });
        let outstanding = self.outstanding();
        if let Some(round) = outstanding.round {
            out.push(Action::Evaluate { round });
        }
        if outstanding.burst {
            out.push(Action::StartBurst);
        }
        if outstanding.probes > 0 {
            // One run answers for all: the ones asked for before are not coming.
            self.probes_running = 1;
            out.push(Action::RunProbes);
        }
        out.push(Action::Notify {
            guardrails: Vec::new(),
            topic: Topic::Check,
            severity: Severity::Warning,
            message: format!(
                "the controller is back after {} without it; the split is put back to {} %",
                self.plan
                    .runbook(Duration::from_millis((at - last_input).max(0) as u64)),
                self.weight
            ),
        });
        self.on_tick(out);
    }

    fn on_event(&mut self, event: &Event, out: &mut Vec<Action>) {
        if let Event::PromotionFailed { detail } = event {
            self.promotion_failed(detail, out);
            return;
        }
        if self.phase == Phase::Decided {
            return;
        }
        let rollback = |reason: Reason| Verdict::Rollback {
            reasons: vec![reason],
        };
        match event {
            Event::AlertFired {
                alert,
                security,
                guardrail,
                action,
            } => self.on_alert(alert, *security, guardrail.as_deref(), *action, out),
            Event::IsolationLeak {
                observer,
                owner,
                arm,
            } => self.decide(
                rollback(Reason::IsolationLeak {
                    observer: observer.clone(),
                    owner: owner.clone(),
                    arm: *arm,
                }),
                "engine",
                out,
            ),
            Event::ProbesCompleted(run) => {
                self.probes_running = self.probes_running.saturating_sub(1);
                if run.proves_isolation() {
                    self.clean_probe_runs += 1;
                }
            }
            Event::ArmUnhealthy {
                arm: ArmRole::Canary,
                detail,
            } => self.decide(
                rollback(Reason::CanaryUnhealthy {
                    detail: detail.clone(),
                }),
                "engine",
                out,
            ),
            Event::ArmUnhealthy {
                arm: ArmRole::Baseline,
                detail,
            } => out.push(Action::Notify {
                guardrails: Vec::new(),
                topic: Topic::Breach,
                severity: Severity::Critical,
                message: format!(
                    "the baseline is unhealthy ({detail}); the canary continues, but comparisons with the baseline are unreliable"
                ),
            }),
            Event::BurstCompleted { total, successful } => {
                self.burst = Burst::Done {
                    total: *total,
                    successful: *successful,
                };
                if let Some(reason) = self.burst_shortfall() {
                    // The verdict can no longer be PROMOTE: keeping users on the canary for the
                    // rest of the window would expose them for nothing.
                    self.decide(rollback(reason), "engine", out);
                }
            }
            Event::Abort { by, reason } => self.decide(
                rollback(Reason::Aborted {
                    by: by.clone(),
                    reason: reason.clone(),
                }),
                by,
                out,
            ),
            Event::Approve { by } => match self.phase {
                Phase::Awaiting { .. } => self.decide(Verdict::Promote, by, out),
                _ => out.push(Action::Notify {
                    guardrails: Vec::new(),
                    topic: Topic::Check,
                    severity: Severity::Info,
                    message: format!(
                        "{} approved, but nothing is waiting for approval",
                        Escaped(by)
                    ),
                }),
            },
            Event::Signal { signal } => self.decide(
                rollback(Reason::Signal {
                    signal: signal.clone(),
                }),
                "engine",
                out,
            ),
            Event::TrafficFailed { detail } => self.decide(
                rollback(Reason::TrafficFailed {
                    detail: detail.clone(),
                }),
                "engine",
                out,
            ),
            // Handled above: it comes after the decision.
            Event::PromotionFailed { .. } => {}
        }
    }

    /// The promotion decided could not be applied: the decision becomes PROMOTION_FAILED (same
    /// guardrails, same authoriser — the canary passed), traffic goes back to the baseline and
    /// people are paged. Anything but a decided PROMOTE is left as it is.
    fn promotion_failed(&mut self, detail: &str, out: &mut Vec<Action>) {
        let Some(promoted) = self
            .decision
            .as_ref()
            .filter(|d| d.verdict == Verdict::Promote)
        else {
            return;
        };
        let decision = Decision {
            verdict: Verdict::PromotionFailed {
                reasons: vec![Reason::PromotionFailed {
                    detail: detail.to_owned(),
                }],
            },
            at: self.now,
            authorised_by: promoted.authorised_by.clone(),
            guardrails: promoted.guardrails.clone(),
            comparisons: promoted.comparisons.clone(),
            score: promoted.score.clone(),
        };
        self.decision = Some(decision.clone());
        self.weight = 0;
        out.push(Action::Decide(decision));
        out.push(Action::SetWeight {
            canary: 0,
            change: WeightChange::Rollback,
        });
        out.push(Action::Notify {
            guardrails: Vec::new(),
            topic: Topic::Decision,
            severity: Severity::Page,
            message: format!(
                "PROMOTION_FAILED: {} passed, but the load balancer did not take 100 % ({}); traffic back to {} — the release is NOT out, check the load balancer",
                self.plan.arms.canary.name,
                Escaped(detail),
                self.plan.arms.baseline.name
            ),
        });
    }

    /// An Alertmanager alert for this run: its guardrail's `on_breach` from the plan (see
    /// [`Event::AlertFired`]).
    fn on_alert(
        &mut self,
        alert: &str,
        security: bool,
        guardrail: Option<&str>,
        action: Option<OnBreach>,
        out: &mut Vec<Action>,
    ) {
        let known =
            guardrail.and_then(|name| self.guardrails.iter().position(|g| g.spec.name == name));
        let Some(index) = known else {
            if let Some(name) = guardrail {
                out.push(Action::Notify {
                    guardrails: Vec::new(),
                    topic: Topic::Breach,
                    severity: Severity::Critical,
                    message: format!(
                        "Alertmanager alert {} names guardrail {}, which is not in this run's plan: it rolls back as an alert for this run",
                        Escaped(alert),
                        Escaped(name)
                    ),
                });
            }
            let reason = Reason::AlertFired {
                alert: alert.to_owned(),
                security,
                guardrail: None,
            };
            self.decide(
                Verdict::Rollback {
                    reasons: vec![reason],
                },
                "engine",
                out,
            );
            return;
        };
        let name = self.guardrails[index].spec.name.clone();
        let on_breach = self.guardrails[index].spec.on_breach;
        if let Some(claimed) = action.filter(|a| *a != on_breach) {
            out.push(Action::Notify {
                guardrails: Vec::new(),
                topic: Topic::Breach,
                severity: Severity::Warning,
                message: format!(
                    "Alertmanager alert {} for {name} says `{claimed}`, but the plan says `{on_breach}`: the plan's applies (are the installed rules from another configuration?)",
                    Escaped(alert)
                ),
            });
        }
        match on_breach {
            OnBreach::Rollback | OnBreach::SecurityRollback => {
                let reason = Reason::AlertFired {
                    alert: alert.to_owned(),
                    security: on_breach == OnBreach::SecurityRollback,
                    guardrail: Some(name),
                };
                self.decide(
                    Verdict::Rollback {
                        reasons: vec![reason],
                    },
                    "engine",
                    out,
                );
            }
            OnBreach::BlockPromotion => {
                let first = self.guardrails[index].alerted.is_none();
                if first {
                    self.guardrails[index].alerted = Some(alert.to_owned());
                }
                if let Phase::Awaiting { .. } = self.phase {
                    // The decision is pending now: the gate fails it.
                    let reason = Reason::AlertFailedGate {
                        guardrail: name,
                        alert: alert.to_owned(),
                    };
                    self.decide(
                        Verdict::Rollback {
                            reasons: vec![reason],
                        },
                        "engine",
                        out,
                    );
                } else if first {
                    out.push(Action::Notify {
                        guardrails: Vec::new(),
                        topic: Topic::Breach,
                        severity: Severity::Warning,
                        message: format!(
                            "Alertmanager alert {} fired for the promotion gate {name}: the canary keeps its traffic, but {name} fails at the decision",
                            Escaped(alert)
                        ),
                    });
                }
            }
            OnBreach::Warn => out.push(Action::Notify {
                guardrails: Vec::new(),
                topic: Topic::Breach,
                severity: Severity::Warning,
                message: format!(
                    "warning only: Alertmanager alert {} fired for {name}",
                    Escaped(alert)
                ),
            }),
        }
    }

    fn burst_shortfall(&self) -> Option<Reason> {
        match (&self.burst, &self.plan.burst) {
            (Burst::Done { total, successful }, Some(plan)) => {
                let percent = if *total == 0 {
                    0.0
                } else {
                    100.0 * *successful as f64 / *total as f64
                };
                (percent < plan.min_success_percent).then_some(Reason::BurstBelowBar {
                    successful: *successful,
                    total: *total,
                    required_percent: plan.min_success_percent,
                })
            }
            _ => None,
        }
    }

    /// Reasons that make the end-of-window verdict INCONCLUSIVE.
    fn inconclusive_reasons(&self) -> Vec<Reason> {
        let mut reasons = Vec::new();
        for g in self
            .guardrails
            .iter()
            .filter(|g| g.spec.on_breach.gates_promotion())
        {
            let cause = match &g.status {
                Status::NotEvaluated => Some(NoDataCause::NeverEvaluated),
                Status::NoData { cause } if g.spec.on_no_data == OnNoData::Inconclusive => {
                    Some(cause.clone())
                }
                Status::Error { message } => Some(NoDataCause::QueryError {
                    message: message.clone(),
                }),
                _ => None,
            };
            if let Some(cause) = cause {
                reasons.push(Reason::NoData {
                    guardrail: g.spec.name.clone(),
                    cause,
                });
            }
        }
        if matches!(self.burst, Burst::Pending | Burst::Running) {
            reasons.push(Reason::BurstMissing);
        }
        if self.plan.probes && self.clean_probe_runs == 0 {
            reasons.push(Reason::ProbesMissing);
        }
        reasons.extend(self.comparison_reasons().1);
        reasons
    }

    fn decide_at_end(&mut self, out: &mut Vec<Action>) {
        let mut failed = Vec::new();
        for g in self
            .guardrails
            .iter()
            .filter(|g| g.spec.on_breach.gates_promotion())
        {
            if g.status == Status::Breach {
                failed.push(Reason::FailedAtDecision {
                    guardrail: g.spec.name.clone(),
                    on_breach: g.spec.on_breach,
                    value: g
                        .canary
                        .as_ref()
                        .and_then(Reading::as_value)
                        .unwrap_or(f64::NAN),
                    must: g.spec.must,
                });
            }
            if let Some(alert) = &g.alerted {
                failed.push(Reason::AlertFailedGate {
                    guardrail: g.spec.name.clone(),
                    alert: alert.clone(),
                });
            }
        }
        failed.extend(self.burst_shortfall());
        failed.extend(self.comparison_reasons().0);
        let inconclusive = self.inconclusive_reasons();
        if !failed.is_empty() {
            failed.extend(inconclusive);
            self.decide(Verdict::Rollback { reasons: failed }, "engine", out);
            return;
        }
        let end = self.start + ms(self.plan.window());
        if !inconclusive.is_empty() {
            match self.plan.on_inconclusive {
                OnInconclusive::Rollback => self.decide(
                    Verdict::Inconclusive {
                        reasons: inconclusive,
                    },
                    "engine",
                    out,
                ),
                OnInconclusive::Hold { timeout } => {
                    let deadline = end + ms(timeout);
                    self.phase = Phase::Awaiting {
                        deadline,
                        since: self.now,
                        inconclusive: true,
                    };
                    let why = inconclusive
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ");
                    out.push(Action::AwaitApproval {
                        deadline,
                        reason: format!("inconclusive: {why}"),
                    });
                    out.push(Action::Notify {
                        guardrails: Vec::new(),
                        topic: Topic::Decision,
                        severity: Severity::Critical,
                        message: format!(
                            "canary is INCONCLUSIVE ({why}); holding the split: `canary approve` to promote or `canary abort` to roll back within {}",
                            self.plan.runbook(timeout)
                        ),
                    });
                }
            }
            return;
        }
        match self.plan.approval {
            Approval::Auto => self.decide(Verdict::Promote, "engine", out),
            Approval::Manual { timeout } => {
                let deadline = end + ms(timeout);
                self.phase = Phase::Awaiting {
                    deadline,
                    since: self.now,
                    inconclusive: false,
                };
                out.push(Action::AwaitApproval {
                    deadline,
                    reason: "every guardrail passed; manual approval required".to_owned(),
                });
                out.push(Action::Notify {
                    guardrails: Vec::new(),
                    topic: Topic::Decision,
                    severity: Severity::Warning,
                    message: format!(
                        "canary passed every guardrail: `canary approve` within {} to promote",
                        self.plan.runbook(timeout)
                    ),
                });
            }
        }
    }

    fn decide(&mut self, verdict: Verdict, by: &str, out: &mut Vec<Action>) {
        if self.phase == Phase::Decided {
            return;
        }
        self.phase = Phase::Decided;
        self.pending_round = None;
        let severity = match &verdict {
            Verdict::Promote => Severity::Info,
            v if v.is_security() => Severity::Page,
            _ => Severity::Critical,
        };
        let weight = verdict.final_weight();
        let message = match &verdict {
            Verdict::Promote => format!(
                "PROMOTE: {} goes to 100 % (authorised by {})",
                self.plan.arms.canary.name,
                Escaped(by)
            ),
            v => format!(
                "{}: traffic back to {} — {}",
                v.name(),
                self.plan.arms.baseline.name,
                v.reasons()
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        };
        // The guardrails behind the verdict, for channels that show them field by field.
        let named: Vec<&str> = verdict
            .reasons()
            .iter()
            .filter_map(Reason::guardrail)
            .collect();
        let guardrails = self
            .guardrails
            .iter()
            .filter(|g| named.contains(&g.spec.name.as_str()))
            .map(|g| g.summary(self.plan.time_scale))
            .collect();
        let decision = Decision {
            verdict,
            at: self.now,
            authorised_by: by.to_owned(),
            guardrails: self.summaries(),
            comparisons: self.judgements(),
            score: self.score(),
        };
        self.decision = Some(decision.clone());
        out.push(Action::Decide(decision));
        self.weight = weight;
        out.push(Action::SetWeight {
            canary: weight,
            change: if weight == 100 {
                WeightChange::Promote
            } else {
                WeightChange::Rollback
            },
        });
        out.push(Action::Notify {
            guardrails,
            topic: Topic::Decision,
            severity,
            message,
        });
    }

    fn summaries(&self) -> Vec<GuardrailSummary> {
        self.guardrails
            .iter()
            .map(|g| g.summary(self.plan.time_scale))
            .collect()
    }
}

/// A reading for people, `-` when there is none yet.
fn show(reading: &Option<Reading>) -> String {
    reading
        .as_ref()
        .map_or_else(|| "-".to_owned(), ToString::to_string)
}

/// Applies one evaluation to one guardrail's state.
fn evaluate(
    g: &mut GuardrailState,
    round: Millis,
    canary: Reading,
    baseline: Reading,
    max_errors: u32,
    time_scale: f64,
) -> Outcome {
    let mut status = g.judge(&canary);
    if matches!(status, Status::NoData { .. }) {
        match g.spec.on_no_data {
            OnNoData::Fail => status = Status::Breach,
            OnNoData::Ignore => status = Status::Pass,
            OnNoData::Inconclusive => {}
        }
    }
    g.evaluations += 1;
    g.canary = Some(canary);
    g.baseline = Some(baseline);
    let outcome = match &status {
        Status::Error { message } => {
            g.consecutive_errors += 1;
            if max_errors > 0 && g.consecutive_errors >= max_errors {
                Outcome::TooManyErrors(Reason::QueryErrors {
                    guardrail: g.spec.name.clone(),
                    consecutive: g.consecutive_errors,
                    last_error: message.clone(),
                })
            } else {
                Outcome::Quiet
            }
        }
        Status::Breach => {
            g.consecutive_errors = 0;
            g.breaches += 1;
            let value = g.canary.as_ref().and_then(Reading::as_value);
            if let Some(v) = value {
                g.note_worst(v);
            }
            let started = g.breached_since.is_none();
            let since = *g.breached_since.get_or_insert(round);
            let lasted = Duration::from_millis((round - since).max(0) as u64);
            let triggers = matches!(
                g.spec.on_breach,
                OnBreach::Rollback | OnBreach::SecurityRollback | OnBreach::Warn
            ) && lasted >= g.spec.for_;
            if triggers && !g.triggered {
                g.triggered = true;
                Outcome::Triggered(Reason::GuardrailTriggered {
                    guardrail: g.spec.name.clone(),
                    on_breach: g.spec.on_breach,
                    value: value.unwrap_or(f64::NAN),
                    must: g.spec.must,
                    breached_for: lasted,
                    at: round,
                    time_scale,
                })
            } else if started {
                Outcome::BreachStarted
            } else {
                Outcome::Quiet
            }
        }
        Status::Pass | Status::NoData { .. } | Status::NotEvaluated => {
            g.consecutive_errors = 0;
            g.breached_since = None;
            // A warn-class guardrail may warn again on its next breach.
            if g.spec.on_breach == OnBreach::Warn {
                g.triggered = false;
            }
            if let (Status::Pass, Some(v)) =
                (&status, g.canary.as_ref().and_then(Reading::as_value))
            {
                g.note_worst(v);
            }
            Outcome::Quiet
        }
    };
    g.status = status;
    outcome
}

/// Every action of a replayed run, and its decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Replay {
    /// `(index of the input that caused it, action)`.
    pub actions: Vec<(usize, Action)>,
    pub decision: Option<Decision>,
}

/// Runs `inputs` through a fresh engine for `plan`.
pub fn replay<'a>(
    plan: Plan,
    inputs: impl IntoIterator<Item = &'a Input>,
) -> Result<Replay, EngineError> {
    let mut engine = Engine::new(plan)?;
    let mut actions = Vec::new();
    for (i, input) in inputs.into_iter().enumerate() {
        for action in engine.apply(input)? {
            actions.push((i, action));
        }
    }
    Ok(Replay {
        actions,
        decision: engine.decision,
    })
}
