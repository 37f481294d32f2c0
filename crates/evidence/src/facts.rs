//! What a journal says happened: the decision, the checkpoints reached, the burst and probe
//! results, and every guardrail's readings over time.
//!
//! Everything here is re-derived by replaying the journal through the engine, so the decision
//! file, the report and `canary verify` all rest on the same facts the engine decided on.

use std::time::Duration;

use canary_core::engine::{self, Action, EngineError, GuardrailSummary, Input, Replay};
use canary_core::journal::Journal;
use canary_core::judge::Judgement;
use canary_core::plan::Plan;
use canary_core::{ArmRole, Decision, Event, Millis};

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
        })
    }

    /// The labels of the checkpoints reached, in order.
    pub fn checkpoint_labels(&self) -> Vec<String> {
        self.checkpoints.iter().map(|c| c.label.clone()).collect()
    }
}
