//! What a journal says happened: the decision, the checkpoints reached, the burst and probe
//! results, every guardrail's readings over time, and the run's timeline for people.
//!
//! Everything in [`RunFacts`] is re-derived by replaying the journal through the engine, so the
//! decision file, the report and `canary verify` all rest on the same facts the engine decided
//! on. [`LoadDetail`] adds what only the bundle's load files hold (the burst's per-request
//! transcript, the probes' per-pair report): signed with the bundle, read for the report.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use canary_core::duration::Runbook;
use canary_core::engine::{
    self, Action, EngineError, GuardrailSummary, Input, Replay, Severity, Topic, WeightChange,
};
use canary_core::escape::escaped;
use canary_core::journal::Journal;
use canary_core::judge::Judgement;
use canary_core::plan::Plan;
use canary_core::{ArmRole, Decision, Event, Millis, Verdict};

use crate::artifact::Artifact;

/// The facts of one run.
#[derive(Debug, Clone)]
pub struct RunFacts {
    pub run_id: String,
    pub plan: Plan,
    /// T+0 (the `Start` input), when the run started.
    pub started: Option<Millis>,
    pub decision: Option<Decision>,
    /// Checkpoints the engine asked a snapshot for, in order.
    pub checkpoints: Vec<Checkpoint>,
    pub burst: BurstResult,
    pub probes: ProbeResult,
    /// One series per guardrail of the plan, in plan order.
    pub series: Vec<Series>,
    /// The check-log blocks the engine asked for.
    pub checks: Vec<Check>,
    /// What a person wants to see of the run, in order (see [`TimelineEntry`]).
    pub timeline: Vec<TimelineEntry>,
}

/// One moment of the run that matters to a person: the start, each traffic change, the burst,
/// each probe run and leak, alerts, breaches, checkpoints, operators, the controller coming
/// back, and the decision. Ticks and evaluations are not moments.
#[derive(Debug, Clone, PartialEq)]
pub struct TimelineEntry {
    /// Wall time (the runbook's time is `stamp::runbook_offset` of it).
    pub at: Millis,
    pub kind: TimelineKind,
    pub severity: Severity,
    /// One line for people. Text from outside (operators, alerts, users) is shown by
    /// [`canary_core::escape::Escaped`]; HTML-escaping is the renderer's.
    pub text: String,
}

canary_core::choice! {
    /// What a timeline entry is about.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum TimelineKind {
        Start = "start",
        Traffic = "traffic",
        Burst = "burst",
        Probes = "probes",
        Leak = "leak",
        Alert = "alert",
        Breach = "breach",
        Health = "health",
        Checkpoint = "checkpoint",
        Operator = "operator",
        Controller = "controller",
        Decision = "decision",
    }
}

/// One check-log block: a round's guardrail summaries and comparison judgements.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub round: Millis,
    pub guardrails: Vec<GuardrailSummary>,
    pub comparisons: Vec<Judgement>,
}

/// A checkpoint the run reached.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// `T15`, `T30`, `T60`.
    pub label: String,
    pub round: Millis,
    pub guardrails: Vec<GuardrailSummary>,
    pub comparisons: Vec<Judgement>,
}

/// The load burst, as far as the journal tells.
#[derive(Debug, Clone, PartialEq)]
pub enum BurstResult {
    /// The plan has no burst.
    NotPlanned,
    /// The run ended before the burst was due.
    NotStarted { due: Duration },
    /// The burst started and never reported.
    NoResult { started: Millis },
    Done {
        at: Millis,
        total: u64,
        successful: u64,
        required_percent: f64,
    },
}

impl BurstResult {
    /// Success rate in percent, when the burst reported.
    pub fn success_percent(&self) -> Option<f64> {
        match self {
            BurstResult::Done {
                total, successful, ..
            } => Some(if *total == 0 {
                0.0
            } else {
                100.0 * *successful as f64 / *total as f64
            }),
            _ => None,
        }
    }
}

/// A cross-tenant leak an isolation probe saw.
#[derive(Debug, Clone, PartialEq)]
pub struct Leak {
    pub at: Millis,
    pub observer: String,
    pub owner: String,
    pub arm: ArmRole,
}

/// The isolation probes, as far as the journal tells.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProbeResult {
    pub planned: bool,
    /// Probe runs the engine asked for.
    pub requested: u32,
    /// Probe runs that reported.
    pub completed: u32,
    /// Completed runs that prove isolation ([`ProbeRun::proves_isolation`](canary_core::verdict::ProbeRun::proves_isolation)).
    pub clean: u32,
    /// Observer/owner pairs probed, over all runs. (Journals written before the probe verdict
    /// was recorded counted the pairs of clean runs only.)
    pub pairs: u64,
    pub leaks: Vec<Leak>,
}

/// One guardrail's readings, one point per evaluation round.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub guardrail: String,
    pub points: Vec<Point>,
}

/// One round's values; `None` for no data, an error, or a non-finite value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub round: Millis,
    pub canary: Option<f64>,
    pub baseline: Option<f64>,
}

impl RunFacts {
    /// Replays `journal` and collects its facts. Fails when the engine refuses an input (a
    /// journal the engine could not have written).
    pub fn derive(journal: &Journal) -> Result<RunFacts, EngineError> {
        let plan = journal.header.plan.clone();
        let replay: Replay = engine::replay(plan.clone(), journal.inputs.iter())?;
        let started = journal.inputs.iter().find_map(|i| match i {
            Input::Start { at } => Some(*at),
            _ => None,
        });

        let mut checkpoints = Vec::new();
        let mut checks = Vec::new();
        let mut burst_started: Option<Millis> = None;
        let mut probes = ProbeResult {
            planned: plan.probes,
            ..ProbeResult::default()
        };
        for (index, action) in &replay.actions {
            match action {
                Action::Snapshot {
                    label,
                    round,
                    guardrails,
                    comparisons,
                } => checkpoints.push(Checkpoint {
                    label: label.clone(),
                    round: *round,
                    guardrails: guardrails.clone(),
                    comparisons: comparisons.clone(),
                }),
                Action::CheckLog {
                    round,
                    guardrails,
                    comparisons,
                } => checks.push(Check {
                    round: *round,
                    guardrails: guardrails.clone(),
                    comparisons: comparisons.clone(),
                }),
                Action::StartBurst => {
                    burst_started.get_or_insert(journal.inputs[*index].at());
                }
                Action::RunProbes => probes.requested += 1,
                _ => {}
            }
        }

        // Inputs after the one that decided were ignored by the engine: not part of the run.
        let decided_by = replay
            .actions
            .iter()
            .find(|(_, a)| matches!(a, Action::Decide(_)))
            .map_or(journal.inputs.len(), |(i, _)| i + 1);

        let mut burst_done = None;
        let mut series: Vec<Series> = plan
            .guardrails
            .iter()
            .map(|g| Series {
                guardrail: g.name.clone(),
                points: Vec::new(),
            })
            .collect();
        for input in &journal.inputs[..decided_by] {
            match input {
                Input::Event { at, event } => match event {
                    Event::BurstCompleted { total, successful } => {
                        burst_done.get_or_insert((*at, *total, *successful));
                    }
                    Event::ProbesCompleted(run) => {
                        probes.completed += 1;
                        probes.pairs += u64::from(run.pairs);
                        if run.proves_isolation() {
                            probes.clean += 1;
                        }
                    }
                    Event::IsolationLeak {
                        observer,
                        owner,
                        arm,
                    } => probes.leaks.push(Leak {
                        at: *at,
                        observer: observer.clone(),
                        owner: owner.clone(),
                        arm: *arm,
                    }),
                    _ => {}
                },
                Input::Observations {
                    round, readings, ..
                } => {
                    for s in &mut series {
                        let r = readings.iter().find(|r| r.guardrail == s.guardrail);
                        let finite = |v: Option<f64>| v.filter(|v| v.is_finite());
                        s.points.push(Point {
                            round: *round,
                            canary: finite(r.and_then(|r| r.canary.as_value())),
                            baseline: finite(r.and_then(|r| r.baseline.as_value())),
                        });
                    }
                }
                _ => {}
            }
        }

        let timeline = timeline(&plan, journal, &replay, decided_by);

        let burst = match (&plan.burst, burst_started, burst_done) {
            (None, _, _) => BurstResult::NotPlanned,
            (Some(b), _, Some((at, total, successful))) => BurstResult::Done {
                at,
                total,
                successful,
                required_percent: b.min_success_percent,
            },
            (Some(_), Some(started), None) => BurstResult::NoResult { started },
            (Some(b), None, None) => BurstResult::NotStarted { due: b.at },
        };

        Ok(RunFacts {
            run_id: journal.header.run_id.clone(),
            plan,
            started,
            decision: replay.decision,
            checkpoints,
            burst,
            probes,
            series,
            checks,
            timeline,
        })
    }

    /// The labels of the checkpoints reached, in order.
    pub fn checkpoint_labels(&self) -> Vec<String> {
        self.checkpoints.iter().map(|c| c.label.clone()).collect()
    }
}

/// The run's moments, from its inputs and the actions the engine answered with. Inputs after
/// the decision count only when the engine acted on them (a failed promotion).
fn timeline(
    plan: &Plan,
    journal: &Journal,
    replay: &Replay,
    decided_by: usize,
) -> Vec<TimelineEntry> {
    let canary = &plan.arms.canary.name;
    let baseline = &plan.arms.baseline.name;
    let runbook = |d: Duration| Runbook(d, plan.time_scale);
    let mut out = Vec::new();
    let mut actions = replay.actions.iter().peekable();
    for (i, input) in journal.inputs.iter().enumerate() {
        let at = input.at();
        let acted = actions.peek().is_some_and(|(index, _)| *index == i);
        let mut push = |kind, severity, text: String| {
            out.push(TimelineEntry {
                at,
                kind,
                severity,
                text,
            });
        };
        if i < decided_by || acted {
            match input {
                Input::Start { .. } => push(
                    TimelineKind::Start,
                    Severity::Info,
                    format!(
                        "canary of {} started: {} against {}, window {}",
                        plan.service,
                        canary,
                        baseline,
                        runbook(plan.window())
                    ),
                ),
                Input::Resume { .. } => push(
                    TimelineKind::Controller,
                    Severity::Warning,
                    "the controller came back (canary resume) and took the run over again"
                        .to_owned(),
                ),
                Input::Event { event, .. } => {
                    if let Some((kind, severity, text)) = event_entry(plan, event) {
                        push(kind, severity, text);
                    }
                }
                Input::Tick { .. } | Input::Observations { .. } => {}
            }
        }
        while let Some((_, action)) = actions.next_if(|(index, _)| *index == i) {
            if let Some((kind, severity, text)) = action_entry(plan, action) {
                push(kind, severity, text);
            }
        }
    }
    out
}

/// The timeline entry of an event, if it is one.
fn event_entry(plan: &Plan, event: &Event) -> Option<(TimelineKind, Severity, String)> {
    let arm_name = |arm: ArmRole| plan.arms.get(arm).name.clone();
    Some(match event {
        Event::AlertFired {
            alert, guardrail, ..
        } => (
            TimelineKind::Alert,
            Severity::Critical,
            match guardrail {
                Some(g) => format!(
                    "Alertmanager alert {} fired for guardrail {}",
                    escaped(alert),
                    escaped(g)
                ),
                None => format!("Alertmanager alert {} fired", escaped(alert)),
            },
        ),
        Event::IsolationLeak {
            observer,
            owner,
            arm,
        } => (
            TimelineKind::Leak,
            Severity::Page,
            format!(
                "isolation LEAK: {} received {}'s data from the {} arm ({})",
                escaped(observer),
                escaped(owner),
                arm.as_str(),
                arm_name(*arm)
            ),
        ),
        Event::ProbesCompleted(run) => {
            let severity = match run.verdict {
                canary_core::verdict::ProbeVerdict::Clean if run.proves_isolation() => {
                    Severity::Info
                }
                canary_core::verdict::ProbeVerdict::Leaked => Severity::Page,
                _ => Severity::Warning,
            };
            (
                TimelineKind::Probes,
                severity,
                format!(
                    "isolation probes {}: {} user pair(s), {} leak(s)",
                    run.verdict.as_str(),
                    run.pairs,
                    run.leaks
                ),
            )
        }
        Event::ArmUnhealthy { arm, detail } => (
            TimelineKind::Health,
            Severity::Critical,
            format!(
                "the {} arm ({}) is unhealthy: {}",
                arm.as_str(),
                arm_name(*arm),
                escaped(detail)
            ),
        ),
        Event::BurstCompleted { total, successful } => {
            let required = plan.burst.as_ref().map_or(0.0, |b| b.min_success_percent);
            let percent = if *total == 0 {
                0.0
            } else {
                100.0 * *successful as f64 / *total as f64
            };
            let met = *total > 0 && percent >= required;
            (
                TimelineKind::Burst,
                if met {
                    Severity::Info
                } else {
                    Severity::Critical
                },
                format!(
                    "load burst done: {successful} of {total} successful ({}, needs ≥ {} %)",
                    canary_core::verdict::fmt_in(percent, Some("%")),
                    canary_core::verdict::fmt_value(required)
                ),
            )
        }
        Event::Abort { by, reason } => (
            TimelineKind::Operator,
            Severity::Critical,
            format!("aborted by {}: {}", escaped(by), escaped(reason)),
        ),
        Event::Approve { by } => (
            TimelineKind::Operator,
            Severity::Info,
            format!("approved by {}", escaped(by)),
        ),
        Event::Signal { signal } => (
            TimelineKind::Controller,
            Severity::Critical,
            format!("the controller received {}", escaped(signal)),
        ),
        Event::TrafficFailed { detail } => (
            TimelineKind::Traffic,
            Severity::Critical,
            format!("a traffic change failed: {}", escaped(detail)),
        ),
        Event::PromotionFailed { detail } => (
            TimelineKind::Traffic,
            Severity::Page,
            format!(
                "the load balancer did not take the promotion: {}",
                escaped(detail)
            ),
        ),
    })
}

/// The timeline entry of an engine action, if it is one. Breaches are told as the engine told
/// people (its `Breach` notifications); a step, the start and the decision have their own
/// entries, so their notifications are not repeated.
fn action_entry(plan: &Plan, action: &Action) -> Option<(TimelineKind, Severity, String)> {
    Some(match action {
        Action::SetWeight { canary, change } => {
            let (why, severity) = match change {
                WeightChange::Step { index } => (format!("step {}", index + 1), Severity::Info),
                WeightChange::Promote => ("promote".to_owned(), Severity::Info),
                WeightChange::Rollback => ("rollback".to_owned(), Severity::Critical),
            };
            (
                TimelineKind::Traffic,
                severity,
                format!(
                    "traffic: {} {canary} % / {} {} % ({why})",
                    plan.arms.canary.name,
                    plan.arms.baseline.name,
                    100u8.saturating_sub(*canary)
                ),
            )
        }
        Action::StartBurst => (
            TimelineKind::Burst,
            Severity::Info,
            "load burst started".to_owned(),
        ),
        Action::Snapshot {
            label, guardrails, ..
        } => {
            let passing = guardrails
                .iter()
                .filter(|g| g.status == engine::Status::Pass)
                .count();
            (
                TimelineKind::Checkpoint,
                if passing == guardrails.len() {
                    Severity::Info
                } else {
                    Severity::Warning
                },
                format!(
                    "checkpoint {label}: snapshot taken, {passing} of {} guardrail(s) passing",
                    guardrails.len()
                ),
            )
        }
        Action::Notify {
            topic: Topic::Breach,
            severity,
            message,
            ..
        } => (TimelineKind::Breach, *severity, message.clone()),
        Action::AwaitApproval { reason, .. } => (
            TimelineKind::Decision,
            Severity::Warning,
            format!("waiting for an operator: {reason}"),
        ),
        Action::Decide(d) => {
            let severity = match &d.verdict {
                Verdict::Promote => Severity::Info,
                v if v.is_security() => Severity::Page,
                _ => Severity::Critical,
            };
            let mut text = format!(
                "decision: {} (authorised by {})",
                d.verdict.name(),
                escaped(&d.authorised_by)
            );
            let reasons: Vec<String> = d
                .verdict
                .reasons()
                .iter()
                .map(ToString::to_string)
                .collect();
            if !reasons.is_empty() {
                text.push_str(": ");
                text.push_str(&reasons.join("; "));
            }
            (TimelineKind::Decision, severity, text)
        }
        _ => return None,
    })
}

/// What the bundle's load files say in more detail than the journal: the burst's requests per
/// arm and the probes' results per pair of users. Each is `None` when its file is absent, says
/// the step did not run, or cannot be read (the report then says so).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadDetail {
    pub burst: Option<BurstDetail>,
    pub probes: Option<ProbeMatrix>,
}

impl LoadDetail {
    /// Reads the burst transcript and the probe report of the bundle in `dir` (run stamp
    /// `stamp`). Only reads; a file that is missing or unreadable gives `None`.
    pub fn read(dir: &Path, stamp: &str) -> LoadDetail {
        let read = |a: Artifact| std::fs::read_to_string(dir.join(a.file_name(stamp))).ok();
        LoadDetail {
            burst: read(Artifact::BurstTranscript).and_then(|t| BurstDetail::parse(&t)),
            probes: read(Artifact::IsolationProbes).and_then(|t| ProbeMatrix::parse(&t)),
        }
    }
}

/// The burst's requests, per arm that answered, as its transcript records them
/// (`canary_load_burst_<ts>.log`: one line per request with its latency, TTFV and arm).
#[derive(Debug, Clone, PartialEq)]
pub struct BurstDetail {
    /// Canary first, then baseline, then answers without an arm header (`unknown`), each only
    /// when it answered at least one request.
    pub arms: Vec<ArmRequests>,
}

/// One arm's burst requests.
#[derive(Debug, Clone, PartialEq)]
pub struct ArmRequests {
    /// `canary`, `baseline` or `unknown`.
    pub arm: String,
    pub requests: u64,
    /// Requests the burst counted as failed (✗).
    pub errors: u64,
    /// Each request's whole latency, in milliseconds, ascending (as the transcript rounds
    /// them: 0.1 ms below 10 ms, whole milliseconds above).
    pub latency_ms: Vec<f64>,
    /// Each request's time to first value, in milliseconds, ascending (requests that never
    /// got one are not in it).
    pub ttfv_ms: Vec<f64>,
}

/// The nearest-rank `q` quantile (0 < q ≤ 1) of ascending `sorted` values; `None` when empty.
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted.get(rank.min(sorted.len()) - 1).copied()
}

impl BurstDetail {
    /// Parses a burst transcript; `None` when it holds no request line (the burst did not
    /// run). Lines read `✓ user_1_q3: 200 (412ms) ttfv 398ms arm canary …`; comment lines
    /// (`#`) and lines in any other shape are skipped.
    pub fn parse(transcript: &str) -> Option<BurstDetail> {
        let mut by_arm: BTreeMap<String, ArmRequests> = BTreeMap::new();
        for line in transcript.lines() {
            let Some(request) = parse_request(line) else {
                continue;
            };
            let entry = by_arm
                .entry(request.arm.to_owned())
                .or_insert_with(|| ArmRequests {
                    arm: request.arm.to_owned(),
                    requests: 0,
                    errors: 0,
                    latency_ms: Vec::new(),
                    ttfv_ms: Vec::new(),
                });
            entry.requests += 1;
            if !request.ok {
                entry.errors += 1;
            }
            entry.latency_ms.push(request.latency_ms);
            entry.ttfv_ms.extend(request.ttfv_ms);
        }
        if by_arm.is_empty() {
            return None;
        }
        let mut arms = Vec::new();
        for name in ["canary", "baseline", "unknown"] {
            if let Some(mut a) = by_arm.remove(name) {
                a.latency_ms.sort_by(f64::total_cmp);
                a.ttfv_ms.sort_by(f64::total_cmp);
                arms.push(a);
            }
        }
        Some(BurstDetail { arms })
    }

    /// The arm named `arm`, if it answered.
    pub fn arm(&self, arm: &str) -> Option<&ArmRequests> {
        self.arms.iter().find(|a| a.arm == arm)
    }
}

struct RequestLine<'a> {
    ok: bool,
    latency_ms: f64,
    ttfv_ms: Option<f64>,
    arm: &'a str,
}

/// `12ms` or `7.9ms` as milliseconds.
fn parse_ms(text: &str) -> Option<f64> {
    text.strip_suffix("ms")?
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
}

fn parse_request(line: &str) -> Option<RequestLine<'_>> {
    let (ok, rest) = if let Some(rest) = line.strip_prefix("✓ ") {
        (true, rest)
    } else {
        (false, line.strip_prefix("✗ ")?)
    };
    // `label: status (latency)`; the latency is the first parenthesised `…ms` after the label.
    let (_, rest) = rest.split_once(": ")?;
    let open = rest.find(" (")?;
    let after = &rest[open + 2..];
    let close = after.find(')')?;
    let latency_ms = parse_ms(&after[..close])?;
    let mut words = after[close + 1..].split_whitespace();
    let mut ttfv_ms = None;
    let mut arm = None;
    while let Some(word) = words.next() {
        match word {
            "ttfv" => ttfv_ms = words.next().and_then(parse_ms),
            "arm" => arm = words.next(),
            _ => {}
        }
    }
    Some(RequestLine {
        ok,
        latency_ms,
        ttfv_ms,
        arm: arm?,
    })
}

/// The isolation probes' results per ordered pair of users, over every probe run the bundle's
/// report (`CANARY_ISOLATION_PROBES_<ts>.json`) records.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProbeMatrix {
    /// The probe users, in the order the report names them.
    pub users: Vec<String>,
    /// Probe runs that reported results.
    pub runs: u32,
    /// Probe runs that failed before reporting results.
    pub failed_runs: u32,
    /// Whether the report records each pair's requests and answering arms (reports written
    /// before it did hold the pairs' leaks only).
    pub per_pair_recorded: bool,
    /// `(observer, owner)` → what probing the owner's data as the observer found.
    pub pairs: BTreeMap<(String, String), PairCell>,
    /// Each user's self-checks: runs in which it found its own marker, of runs that checked.
    pub self_checks: BTreeMap<String, (u32, u32)>,
}

/// One observer × owner cell of the matrix.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PairCell {
    /// Probe runs that probed this pair.
    pub runs: u32,
    /// Probe requests sent for it (when recorded).
    pub requests: u64,
    /// Of those, requests that got no answer to inspect.
    pub failed: u64,
    /// Answers per arm (`canary`, `baseline`, `unknown`; when recorded).
    pub answered_by: BTreeMap<String, u64>,
    /// The owner's markers the observer received, per arm that answered.
    pub leaks: BTreeMap<String, u64>,
}

impl PairCell {
    pub fn leak_total(&self) -> u64 {
        self.leaks.values().sum()
    }
}

impl ProbeMatrix {
    /// Parses the probe report; `None` when it records no run (the probes did not run) or is
    /// not JSON in the report's shape.
    pub fn parse(json: &str) -> Option<ProbeMatrix> {
        use serde_json::Value;
        let value: Value = serde_json::from_str(json).ok()?;
        let runs = value.get("runs")?.as_array()?;
        if runs.is_empty() {
            return None;
        }
        let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned);
        let mut m = ProbeMatrix::default();
        let add_user = |m: &mut ProbeMatrix, user: &str| {
            if !m.users.iter().any(|u| u == user) {
                m.users.push(user.to_owned());
            }
        };
        for run in runs {
            if run.get("error").is_some() {
                m.failed_runs += 1;
                continue;
            }
            m.runs += 1;
            let mut run_users = Vec::new();
            for check in run
                .get("self_checks")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let Some(user) = text(check, "user") else {
                    continue;
                };
                add_user(&mut m, &user);
                let found = check.get("found").and_then(Value::as_bool) == Some(true);
                let cell = m.self_checks.entry(user.clone()).or_default();
                cell.1 += 1;
                if found {
                    cell.0 += 1;
                }
                run_users.push(user);
            }
            let recorded = run.get("pair_results").and_then(Value::as_array);
            if let Some(results) = recorded {
                m.per_pair_recorded = true;
                for r in results {
                    let (Some(observer), Some(owner)) = (text(r, "observer"), text(r, "owner"))
                    else {
                        continue;
                    };
                    add_user(&mut m, &observer);
                    add_user(&mut m, &owner);
                    let cell = m.pairs.entry((observer, owner)).or_default();
                    cell.runs += 1;
                    cell.requests += r.get("requests").and_then(Value::as_u64).unwrap_or(0);
                    cell.failed += r.get("failed").and_then(Value::as_u64).unwrap_or(0);
                    if let Some(arms) = r.get("answered_by").and_then(Value::as_object) {
                        for (arm, n) in arms {
                            *cell.answered_by.entry(arm.clone()).or_default() +=
                                n.as_u64().unwrap_or(0);
                        }
                    }
                }
            } else {
                // Every ordered pair of the run's users was probed.
                for observer in &run_users {
                    for owner in run_users.iter().filter(|o| *o != observer) {
                        m.pairs
                            .entry((observer.clone(), owner.clone()))
                            .or_default()
                            .runs += 1;
                    }
                }
            }
            for leak in run
                .get("leaks")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let (Some(observer), Some(owner)) = (text(leak, "observer"), text(leak, "owner"))
                else {
                    continue;
                };
                add_user(&mut m, &observer);
                add_user(&mut m, &owner);
                let arm = text(leak, "arm").unwrap_or_else(|| "unknown".to_owned());
                *m.pairs
                    .entry((observer, owner))
                    .or_default()
                    .leaks
                    .entry(arm)
                    .or_default() += 1;
            }
        }
        if m.runs == 0 && m.failed_runs == 0 {
            return None;
        }
        Some(m)
    }

    /// The cell of `observer` probing `owner`'s data.
    pub fn cell(&self, observer: &str, owner: &str) -> Option<&PairCell> {
        self.pairs.get(&(observer.to_owned(), owner.to_owned()))
    }
}
