//! The controller: drives the engine through a run on the wall clock and carries out its actions.
//!
//! One loop owns the engine. Everything else — evaluation rounds, the burst, probes, health
//! checks, operator commands, Alertmanager callbacks, signals — runs as tasks that send a
//! [`Message`]; the loop turns each into an engine input, journals it (fsynced) before applying
//! it, and executes the actions that come out. A slow query therefore never delays an abort: the
//! round's result is just another message.
//!
//! Traffic changes are applied and verified before the loop goes on. A rollback that cannot be
//! verified is retried until it is, escalating at the highest severity — the controller does not
//! exit while traffic may still be split.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use canary_core::engine::{
    Action, ComparisonReading, Event, GuardrailReading, GuardrailSummary, Input, Severity, Topic,
    WeightChange,
};
use canary_core::verdict::{ProbeRun, Reason};
use canary_core::{ArmRole, Decision, Engine, Escaped, Millis, Verdict};
use canary_evidence::durable::AppendLog;
use canary_evidence::render::traffic::{FinalTraffic, TrafficChange, Verification};
use canary_evidence::{Bundle, JournalWriter, RawQuery};
use canary_providers::BoxFuture;
use canary_providers::grafana::AnnotationKind;
use canary_providers::metrics::MetricSource;
use canary_providers::notify::{Incident, Outcome as Announced};
use canary_providers::traffic::{RetryPolicy, TrafficRouter, set_verified};
use tokio::sync::{mpsc, watch};

use crate::control::{
    BurstStatus, Command, GuardrailStatus, PhaseState, PhaseStatus, Point, ProbeLeak, ProbesStatus,
    RecentEvent, RunStatus,
};
use canary_providers::metrics::observe::{ScopedComparison, ScopedGuardrail, observe_round};

/// Milliseconds since the epoch, now.
pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as Millis)
}

/// What the load burst reports back.
#[derive(Debug, Clone)]
pub struct BurstOutcome {
    pub total: u64,
    pub successful: u64,
    /// `CANARY_LOAD_SUMMARY_<ts>.json`'s content.
    pub summary: serde_json::Value,
}

/// What one isolation-probe run reports back.
#[derive(Debug, Clone)]
pub struct ProbeOutcome {
    /// Its verdict, pairs and leak count, as the engine hears them.
    pub run: ProbeRun,
    /// Each leak: observer, owner, the arm that answered.
    pub leaks: Vec<(String, String, ArmRole)>,
    /// This run's report, for `CANARY_ISOLATION_PROBES_<ts>.json`.
    pub report: serde_json::Value,
}

/// The work the controller delegates, so the same loop drives production, the demo and tests.
pub trait Delegates: Send + Sync {
    /// Runs the burst, appending one transcript line per request to `transcript`.
    fn burst(&self, transcript: AppendLog) -> BoxFuture<'static, anyhow::Result<BurstOutcome>>;
    /// Runs one round of isolation probes against the canary.
    fn probes(&self) -> BoxFuture<'static, anyhow::Result<ProbeOutcome>>;
    /// Tells people (Slack, PagerDuty, email, webhooks). Never fails the run.
    fn notify(&self, run_id: &str, notice: Notice) -> BoxFuture<'static, ()>;
    /// Marks a moment (`start`, `checkpoint`, `decision`) on the run's dashboard, when one was
    /// pushed. Never fails the run.
    fn annotate(
        &self,
        run_id: &str,
        kind: AnnotationKind,
        at: Millis,
        text: String,
    ) -> BoxFuture<'static, ()>;
}

/// One notification as the controller hands it to the delegates.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub topic: Topic,
    pub severity: Severity,
    /// The text; its first line is the title.
    pub text: String,
    /// The guardrails it is about, with their values and thresholds.
    pub guardrails: Vec<GuardrailSummary>,
    /// The incident it opens, adds to or closes (for pagers).
    pub incident: Incident,
    /// The verdict a decision message announces.
    pub outcome: Option<Announced>,
}

impl Notice {
    /// A notice about the run as a whole, naming no guardrail.
    pub fn new(topic: Topic, severity: Severity, text: impl Into<String>) -> Notice {
        Notice {
            topic,
            severity,
            text: text.into(),
            guardrails: Vec::new(),
            incident: Incident::Run,
            outcome: None,
        }
    }

    /// The engine's notification: a breach that decides nothing yet (a warning about one
    /// guardrail) is that guardrail's incident; everything else is the run's.
    fn from_engine(
        topic: Topic,
        severity: Severity,
        text: String,
        guardrails: Vec<GuardrailSummary>,
    ) -> Notice {
        let incident = match &guardrails[..] {
            [g] if topic == Topic::Breach && severity <= Severity::Warning => Incident::Guardrail {
                name: g.name.clone(),
            },
            _ => Incident::Run,
        };
        Notice {
            guardrails,
            incident,
            ..Notice::new(topic, severity, text)
        }
    }
}

/// The verdict as a decision message announces it.
fn announced(verdict: &Verdict) -> Announced {
    match verdict {
        Verdict::Promote => Announced::Promote,
        Verdict::Rollback { .. } => Announced::Rollback,
        Verdict::Inconclusive { .. } => Announced::Inconclusive,
        Verdict::PromotionFailed { .. } => Announced::PromotionFailed,
    }
}

/// An input for the loop, from one of its tasks.
#[derive(Debug)]
pub enum Message {
    Round {
        round: Millis,
        readings: Vec<GuardrailReading>,
        comparisons: Vec<ComparisonReading>,
        raw: Vec<RawQuery>,
    },
    Event(Event),
    Burst(anyhow::Result<BurstOutcome>),
    Probes(anyhow::Result<ProbeOutcome>),
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub decision: Decision,
    pub traffic: FinalTraffic,
    /// From the decision (the trigger evaluated) to the final split verified on the load
    /// balancer.
    pub decision_to_verified_ms: Option<f64>,
}

/// Everything the loop needs.
pub struct Controller {
    pub engine: Engine,
    pub journal: JournalWriter,
    /// The journal's copy in the state store, when the run has one.
    pub replica: Option<super::replica::Replica>,
    pub bundle: Bundle,
    pub router: Arc<dyn TrafficRouter>,
    pub source: Arc<dyn MetricSource>,
    pub guardrails: Arc<Vec<ScopedGuardrail>>,
    pub comparisons: Arc<Vec<ScopedComparison>>,
    pub delegates: Arc<dyn Delegates>,
    pub retry: RetryPolicy,
    /// Where the live status goes (the control API), once it is served.
    pub status: Option<watch::Sender<RunStatus>>,
    /// Messages from tasks; the controller keeps a sender to give new tasks.
    pub messages: mpsc::Receiver<Message>,
    pub sender: mpsc::Sender<Message>,
    /// The canary weight the load balancer is at, as last verified.
    pub weight: u8,
    raw_rounds: HashMap<Millis, Vec<RawQuery>>,
    recent: VecDeque<RecentEvent>,
    final_traffic: Option<FinalTraffic>,
    /// Time of the last input, so inputs never go back in time.
    pub(crate) last_input: Millis,
    probe_runs: Vec<serde_json::Value>,
    /// When the engine decided, for the decision-to-verified-traffic figure.
    decided: Option<std::time::Instant>,
    /// Time from the decision to the final traffic change verified.
    pub decision_to_verified_ms: Option<f64>,
    /// Notifications and annotations on their way.
    deliveries: Vec<tokio::task::JoinHandle<()>>,
    /// The burst and probe runs in flight: stopped before the bundle is sealed, so nothing is
    /// written into it after its manifest (a run aborted mid-burst).
    load_tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The verdict of the last decision carried out, which the decision's message announces.
    announced: Option<Verdict>,
    /// What the live status shows beyond the engine's own view: each guardrail's readings
    /// round by round, the burst's and the probes' results.
    shown: Shown,
}

/// The run's history as the live status shows it, kept from what the controller sees.
#[derive(Default)]
struct Shown {
    /// Per guardrail, both arms' values of every evaluation round (thinned).
    series: HashMap<String, Vec<Point>>,
    /// Elapsed ms at which the burst started and finished.
    burst_started: Option<i64>,
    burst_finished: Option<i64>,
    burst: Option<BurstStatus>,
    probes: Option<ProbesStatus>,
}

/// How long notifications and annotations still in flight at the end of a run (the decision's)
/// may take to land before the controller exits without them.
const DELIVERY_GRACE: Duration = Duration::from_secs(10);

impl Controller {
    /// A controller for `engine`, recording into `bundle` and `journal`, acting through
    /// `wiring`'s router, metric source and delegates; the load balancer is at `weight` now.
    pub fn new(
        engine: Engine,
        journal: JournalWriter,
        bundle: Bundle,
        wiring: &super::Wiring,
        weight: u8,
    ) -> Controller {
        let (sender, messages) = mpsc::channel(1024);
        Controller {
            engine,
            journal,
            replica: None,
            bundle,
            router: wiring.router.clone(),
            source: wiring.source.clone(),
            guardrails: Arc::new(wiring.guardrails.clone()),
            comparisons: Arc::new(wiring.comparisons.clone()),
            delegates: wiring.delegates.clone(),
            retry: RetryPolicy::default(),
            status: None,
            messages,
            sender,
            weight,
            raw_rounds: HashMap::new(),
            recent: VecDeque::new(),
            final_traffic: None,
            last_input: 0,
            probe_runs: Vec::new(),
            decided: None,
            decision_to_verified_ms: None,
            deliveries: Vec::new(),
            load_tasks: Vec::new(),
            announced: None,
            shown: Shown::default(),
        }
    }

    /// Elapsed ms since T+0 (0 before the start).
    fn elapsed(&self, at: Millis) -> i64 {
        self.engine.started_at().map_or(0, |start| at - start)
    }

    /// Keeps an event for the live page's list (the latest 50).
    fn remember(&mut self, severity: Severity, message: String) {
        let elapsed_ms = now_ms() - self.bundle.started();
        self.recent.push_back(RecentEvent {
            elapsed_ms,
            severity,
            message,
        });
        while self.recent.len() > 50 {
            self.recent.pop_front();
        }
    }

    /// Adds a round's readings to the guardrails' series (a resume adds the journal's first).
    pub(super) fn record_round(&mut self, round: Millis, readings: &[GuardrailReading]) {
        let elapsed_ms = self.elapsed(round);
        let finite = |r: &canary_core::Reading| r.as_value().filter(|v| v.is_finite());
        for r in readings {
            let series = self.shown.series.entry(r.guardrail.clone()).or_default();
            crate::control::push_point(
                series,
                Point {
                    elapsed_ms,
                    canary: finite(&r.canary),
                    baseline: finite(&r.baseline),
                },
            );
        }
    }

    /// Journals `input` (fsynced, then into the state store), applies it, and returns the
    /// engine's actions.
    pub(crate) async fn feed(&mut self, input: Input) -> anyhow::Result<Vec<Action>> {
        self.journal
            .append(&input)
            .context("cannot append to the journal: refusing to act on an unrecorded input")?;
        if let Some(replica) = self.replica.as_mut() {
            replica
                .push(canary_core::journal::line(&input).trim_end_matches('\n'))
                .await;
        }
        let actions = self.engine.apply(&input)?;
        Ok(actions)
    }

    /// Starts the run at `at` (or continues a resumed one with `resume_actions`) and drives it to
    /// a decision with the final traffic applied.
    pub async fn drive(
        mut self,
        first: Vec<Action>,
        mut commands: mpsc::Receiver<Command>,
        mut signals: mpsc::Receiver<String>,
    ) -> anyhow::Result<(
        Outcome,
        Bundle,
        JournalWriter,
        Option<super::replica::Replica>,
    )> {
        let mut queue: VecDeque<Action> = first.into();
        loop {
            while let Some(action) = queue.pop_front() {
                let more = self.execute(action).await?;
                queue.extend(more);
            }
            self.publish_status();
            if self.engine.is_decided() {
                break;
            }
            let wake = self.engine.next_wakeup();
            let sleep = match wake {
                Some(at) => Duration::from_millis((at - now_ms()).max(0) as u64),
                None => Duration::from_secs(3600),
            };
            enum Incoming {
                Tick,
                Message(Message),
                Command(Command),
                Signal(String),
            }
            let incoming = tokio::select! {
                _ = tokio::time::sleep(sleep) => Incoming::Tick,
                Some(message) = self.messages.recv() => Incoming::Message(message),
                Some(c) = commands.recv() => Incoming::Command(c),
                Some(signal) = signals.recv() => Incoming::Signal(signal),
            };
            // The wall clock may step back (NTP); the engine's time must not.
            let at = now_ms().max(self.last_input);
            self.last_input = at;
            let input = match incoming {
                Incoming::Tick => Input::Tick { at },
                Incoming::Message(Message::Round {
                    round,
                    readings,
                    comparisons,
                    raw,
                }) => {
                    self.raw_rounds.insert(round, raw);
                    self.record_round(round, &readings);
                    Input::Observations {
                        at,
                        round,
                        readings,
                        comparisons,
                    }
                }
                Incoming::Message(Message::Event(event)) => Input::Event { at, event },
                Incoming::Message(Message::Burst(result)) => {
                    let event = self.burst_done(result)?;
                    Input::Event { at, event }
                }
                Incoming::Message(Message::Probes(result)) => {
                    let events = self.probes_done(result)?;
                    // Leaks first: each is a security rollback on its own.
                    let mut last = None;
                    for event in events {
                        if let Some(previous) = last.replace(event) {
                            let actions = self
                                .feed(Input::Event {
                                    at,
                                    event: previous,
                                })
                                .await?;
                            queue.extend(actions);
                        }
                    }
                    match last {
                        Some(event) => Input::Event { at, event },
                        None => continue,
                    }
                }
                Incoming::Command(c) => Input::Event {
                    at,
                    event: command_event(c),
                },
                Incoming::Signal(signal) => Input::Event {
                    at,
                    event: Event::Signal { signal },
                },
            };
            let actions = self.feed(input).await?;
            queue.extend(actions);
        }
        // A burst or probe run still going belongs to no decision now: stop it, and wait until it
        // has, so that it writes nothing into the bundle once the bundle is sealed.
        for task in &self.load_tasks {
            task.abort();
        }
        let _ = futures_util::future::join_all(std::mem::take(&mut self.load_tasks)).await;
        // The decision is acted on; let what tells people about it land (bounded).
        let deliveries = std::mem::take(&mut self.deliveries);
        if tokio::time::timeout(DELIVERY_GRACE, futures_util::future::join_all(deliveries))
            .await
            .is_err()
        {
            tracing::warn!("notifications or annotations still pending after 10 s were dropped");
        }
        let decision = self
            .engine
            .decision()
            .cloned()
            .context("the engine stopped without a decision")?;
        let traffic = self.final_traffic.clone().unwrap_or(FinalTraffic {
            canary_percent: self.weight,
            verification: Verification::NotChecked {
                why: "no final traffic change was made".into(),
            },
        });
        Ok((
            Outcome {
                decision,
                traffic,
                decision_to_verified_ms: self.decision_to_verified_ms,
            },
            self.bundle,
            self.journal,
            self.replica,
        ))
    }

    /// Sends a notification or annotation in the background; the end of the run waits for it.
    pub(crate) fn deliver(&mut self, task: BoxFuture<'static, ()>) {
        self.deliveries.retain(|t| !t.is_finished());
        self.deliveries.push(tokio::spawn(task));
    }

    /// Carries out one action; returns actions caused by inputs it produced itself (traffic
    /// failures).
    async fn execute(&mut self, action: Action) -> anyhow::Result<Vec<Action>> {
        match action {
            Action::SetWeight { canary, change } => return self.set_weight(canary, change).await,
            Action::Evaluate { round } => self.evaluate(round),
            Action::CheckLog {
                round,
                guardrails,
                comparisons,
            } => {
                self.bundle.append_check(round, &guardrails, &comparisons)?;
                let lines: Vec<String> = guardrails
                    .iter()
                    .map(|g| g.check_line())
                    .chain(comparisons.iter().map(canary_core::comparisons::check_line))
                    .collect();
                // In the runbook's time, as the check log and the runbook say it: `T+5m`.
                let at = canary_evidence::stamp::runbook_offset(
                    self.bundle.started(),
                    round,
                    self.engine.plan().time_scale,
                );
                let message = format!("check at {at}:\n{}", lines.join("\n"));
                tracing::info!(target: "canary", "{message}");
                let outside: Vec<&str> = guardrails
                    .iter()
                    .filter(|g| g.status != canary_core::engine::Status::Pass)
                    .map(|g| g.name.as_str())
                    .collect();
                if outside.is_empty() {
                    self.remember(
                        Severity::Info,
                        format!("check at {at}: all {} guardrails pass", guardrails.len()),
                    );
                } else {
                    self.remember(
                        Severity::Warning,
                        format!("check at {at}: not passing: {}", outside.join(", ")),
                    );
                }
                self.deliver(self.delegates.notify(
                    self.bundle.run_id(),
                    Notice::new(Topic::Check, Severity::Info, message),
                ));
                // Keep only rounds a snapshot may still need.
                self.raw_rounds.retain(|r, _| *r >= round);
            }
            Action::Snapshot {
                label,
                round,
                guardrails,
                comparisons,
            } => self.snapshot(&label, round, &guardrails, &comparisons)?,
            Action::StartBurst => {
                let transcript = self.bundle.burst_transcript()?;
                self.shown.burst_started = Some(self.elapsed(now_ms()));
                let task = self.delegates.burst(transcript);
                let sender = self.sender.clone();
                tracing::info!(target: "canary", "load burst started");
                self.load_tasks.push(tokio::spawn(async move {
                    let _ = sender.send(Message::Burst(task.await)).await;
                }));
            }
            Action::RunProbes => {
                let task = self.delegates.probes();
                let sender = self.sender.clone();
                self.load_tasks.push(tokio::spawn(async move {
                    let _ = sender.send(Message::Probes(task.await)).await;
                }));
            }
            Action::Notify {
                topic,
                severity,
                message,
                guardrails,
            } => {
                match severity {
                    Severity::Info => tracing::info!(target: "canary", "{message}"),
                    Severity::Warning => tracing::warn!(target: "canary", "{message}"),
                    Severity::Critical | Severity::Page => {
                        tracing::error!(target: "canary", "{message}")
                    }
                }
                self.remember(severity, message.clone());
                let mut notice = Notice::from_engine(topic, severity, message, guardrails);
                if topic == Topic::Decision {
                    notice.outcome = self.announced.as_ref().map(announced);
                }
                self.deliver(self.delegates.notify(self.bundle.run_id(), notice));
            }
            Action::AwaitApproval { deadline, reason } => {
                let left = Duration::from_millis((deadline - now_ms()).max(0) as u64);
                tracing::warn!(
                    target: "canary",
                    "waiting for an operator ({reason}): `canary approve` or `canary abort` within {}",
                    self.engine.plan().runbook(left)
                );
            }
            Action::Decide(decision) => self.decided(&decision),
        }
        Ok(Vec::new())
    }

    /// Queries both arms for `round` on a task of its own; the readings come back as a message.
    fn evaluate(&self, round: Millis) {
        let source = self.source.clone();
        let guardrails = self.guardrails.clone();
        let comparisons = self.comparisons.clone();
        let sender = self.sender.clone();
        tokio::spawn(async move {
            let result = observe_round(source.as_ref(), &guardrails, &comparisons, round).await;
            let raw = result
                .raw
                .into_iter()
                .chain(result.comparison_raw)
                .map(|r| RawQuery {
                    guardrail: r.guardrail,
                    arm: r.arm,
                    query: r.query,
                    response: match r.result {
                        Ok(v) => serde_json::json!({
                            "status": "success",
                            "data": canary_promql::value::QueryData(v),
                        }),
                        Err(e) => serde_json::json!({"status": "error", "error": e}),
                    },
                })
                .collect();
            let _ = sender
                .send(Message::Round {
                    round,
                    readings: result.readings,
                    comparisons: result.comparisons,
                    raw,
                })
                .await;
        });
    }

    /// Writes the checkpoint's snapshot from the round's kept raw results, and marks it on the
    /// dashboard.
    fn snapshot(
        &mut self,
        label: &str,
        round: Millis,
        guardrails: &[canary_core::engine::GuardrailSummary],
        comparisons: &[canary_core::judge::Judgement],
    ) -> anyhow::Result<()> {
        let raw = self.raw_rounds.get(&round).cloned().unwrap_or_default();
        let note = raw
            .is_empty()
            .then_some("the raw results of this round were not kept (controller restarted)");
        self.bundle
            .write_snapshot(&canary_evidence::render::snapshot::Snapshot {
                label,
                round,
                guardrails,
                comparisons,
                raw: &raw,
                note,
            })?;
        tracing::info!(target: "canary", checkpoint = %label, "snapshot written");
        self.remember(Severity::Info, format!("{label} snapshot written"));
        self.deliver(self.delegates.annotate(
            self.bundle.run_id(),
            AnnotationKind::Checkpoint,
            round,
            format!("{label} snapshot"),
        ));
        Ok(())
    }

    /// Notes the decision's moment (for decision → verified) and marks it on the dashboard.
    fn decided(&mut self, decision: &Decision) {
        self.decided = Some(std::time::Instant::now());
        self.announced = Some(decision.verdict.clone());
        let mut text = format!(
            "{} by {}",
            decision.verdict.name(),
            Escaped(&decision.authorised_by)
        );
        for reason in decision.verdict.reasons() {
            text.push_str(&format!("\n{reason}"));
        }
        self.deliver(self.delegates.annotate(
            self.bundle.run_id(),
            AnnotationKind::Decision,
            now_ms(),
            text,
        ));
        tracing::info!(
            target: "canary",
            verdict = decision.verdict.name(),
            by = %decision.authorised_by,
            "decision"
        );
    }

    /// Records the burst's summary and turns its result into the engine's event. A burst that
    /// could not run counts as 0 of 0 (below any bar), with the reason in the summary.
    fn burst_done(&mut self, result: anyhow::Result<BurstOutcome>) -> anyhow::Result<Event> {
        self.shown.burst_finished = Some(self.elapsed(now_ms()));
        let min_success_percent = self
            .engine
            .plan()
            .burst
            .as_ref()
            .map_or(0.0, |b| b.min_success_percent);
        Ok(match result {
            Ok(o) => {
                self.shown.burst = Some(BurstStatus::from_summary(&o.summary, min_success_percent));
                self.bundle.write_load_summary(&o.summary)?;
                tracing::info!(target: "canary", total = o.total, successful = o.successful, "load burst finished");
                let met = o.total > 0
                    && 100.0 * o.successful as f64 / o.total as f64 >= min_success_percent;
                self.remember(
                    if met {
                        Severity::Info
                    } else {
                        Severity::Warning
                    },
                    format!(
                        "load burst: {} of {} requests succeeded (must reach {} %)",
                        o.successful,
                        o.total,
                        canary_core::verdict::fmt_value(min_success_percent)
                    ),
                );
                Event::BurstCompleted {
                    total: o.total,
                    successful: o.successful,
                }
            }
            Err(e) => {
                let why = format!("{e:#}");
                tracing::error!(target: "canary", error = %why, "the load burst failed");
                self.remember(Severity::Critical, format!("the load burst failed: {why}"));
                let summary = serde_json::json!({
                    "total_queries": 0,
                    "successful": 0,
                    "failed": 0,
                    "error": why,
                });
                self.shown.burst = Some(BurstStatus::from_summary(&summary, min_success_percent));
                self.bundle.write_load_summary(&summary)?;
                Event::BurstCompleted {
                    total: 0,
                    successful: 0,
                }
            }
        })
    }

    /// Records a probe run and returns its events: one per leak, then `ProbesCompleted`.
    fn probes_done(&mut self, result: anyhow::Result<ProbeOutcome>) -> anyhow::Result<Vec<Event>> {
        let shown = self.shown.probes.get_or_insert_with(ProbesStatus::default);
        shown.runs += 1;
        match &result {
            Ok(o) => {
                shown.clean_runs += u32::from(o.run.proves_isolation());
                shown.pairs += u64::from(o.run.pairs);
                shown
                    .leaks
                    .extend(o.leaks.iter().map(|(observer, owner, arm)| ProbeLeak {
                        observer: observer.clone(),
                        owner: owner.clone(),
                        arm: arm.as_str().to_owned(),
                    }));
            }
            Err(_) => shown.failed_runs += 1,
        }
        match result {
            Ok(o) => {
                let (severity, what) = if !o.leaks.is_empty() {
                    (Severity::Critical, format!("{} leak(s)", o.leaks.len()))
                } else if o.run.proves_isolation() {
                    (Severity::Info, "clean".to_owned())
                } else {
                    (Severity::Warning, "isolation not proven".to_owned())
                };
                self.remember(
                    severity,
                    format!("isolation probes: {what}, {} user pairs", o.run.pairs),
                );
                self.probe_runs.push(o.report.clone());
                self.bundle
                    .write_probe_report(&serde_json::json!({ "runs": self.probe_runs }))?;
                let mut events: Vec<Event> = o
                    .leaks
                    .iter()
                    .map(|(observer, owner, arm)| Event::IsolationLeak {
                        observer: observer.clone(),
                        owner: owner.clone(),
                        arm: *arm,
                    })
                    .collect();
                events.push(Event::ProbesCompleted(o.run));
                Ok(events)
            }
            Err(e) => {
                let why = format!("{e:#}");
                tracing::error!(target: "canary", error = %why, "isolation probes failed");
                self.remember(
                    Severity::Critical,
                    format!("isolation probes failed: {why}"),
                );
                self.probe_runs.push(serde_json::json!({ "error": why }));
                self.bundle
                    .write_probe_report(&serde_json::json!({ "runs": self.probe_runs }))?;
                Ok(Vec::new())
            }
        }
    }

    /// Applies a weight through the provider and verifies it. A failed step becomes a
    /// `TrafficFailed` event (which rolls back), a failed promotion a `PromotionFailed` event
    /// (the engine's own outcome, which returns traffic to the baseline); a failed rollback is
    /// retried until verified. A rollback is told as it starts (why, at the decision's severity)
    /// and once verified, which resolves the run's incidents — except after a failed
    /// promotion, whose incident stays open until someone fixes the load balancer.
    async fn set_weight(
        &mut self,
        canary: u8,
        change: WeightChange,
    ) -> anyhow::Result<Vec<Action>> {
        let before = self
            .router
            .describe()
            .await
            .unwrap_or_else(|e| format!("(could not describe the load balancer: {e})"));
        let why = match change {
            WeightChange::Step { index } => format!("step {}", index + 1),
            WeightChange::Promote => "promote".to_owned(),
            WeightChange::Rollback => "rollback".to_owned(),
        };
        let record = TrafficChange {
            provider: self.router.name().to_owned(),
            from_percent: self.weight,
            to_percent: canary,
            why: why.clone(),
            before,
            after: String::new(),
            applied_at: now_ms(),
            verification: Verification::Failed {
                at: 0,
                detail: String::new(),
            },
        };
        if change == WeightChange::Rollback {
            let notice = self.rolling_back();
            self.deliver(self.delegates.notify(self.bundle.run_id(), notice));
        }
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            match set_verified(self.router.as_ref(), canary, &self.retry).await {
                Ok(split) => {
                    self.weight = canary;
                    let after =
                        self.router.describe().await.unwrap_or_else(|e| {
                            format!("(could not describe the load balancer: {e})")
                        });
                    let verification = Verification::Verified {
                        at: now_ms(),
                        observed: split.to_string(),
                    };
                    self.record_change(&record, after, verification.clone())?;
                    tracing::info!(target: "canary", provider = self.router.name(), "traffic: {split} ({why}), verified");
                    if matches!(change, WeightChange::Promote | WeightChange::Rollback) {
                        if let Some(decided) = self.decided {
                            let ms = decided.elapsed().as_secs_f64() * 1000.0;
                            self.decision_to_verified_ms = Some(ms);
                            tracing::info!(target: "canary", decision_to_verified_ms = ms, "final traffic verified {ms:.1} ms after the decision");
                        }
                        self.final_traffic = Some(FinalTraffic {
                            canary_percent: canary,
                            verification,
                        });
                    }
                    match change {
                        WeightChange::Rollback => {
                            // The verdict went to the `decision` subscribers; those on call for
                            // rollbacks hear that traffic is back on the baseline.
                            let failed_promotion = matches!(
                                self.engine.decision().map(|d| &d.verdict),
                                Some(Verdict::PromotionFailed { .. })
                            );
                            let notice = if failed_promotion {
                                Notice::new(
                                    Topic::Rollback,
                                    Severity::Page,
                                    format!(
                                        "traffic back on the baseline ({why}): {split}, verified — the promotion failed, the release is NOT out: fix the load balancer, then run again"
                                    ),
                                )
                            } else {
                                Notice {
                                    incident: self.resolved(),
                                    ..Notice::new(
                                        Topic::Rollback,
                                        Severity::Critical,
                                        format!(
                                            "traffic back on the baseline ({why}): {split}, verified"
                                        ),
                                    )
                                }
                            };
                            self.deliver(self.delegates.notify(self.bundle.run_id(), notice));
                        }
                        WeightChange::Promote => {
                            let notice = Notice {
                                incident: self.resolved(),
                                outcome: Some(Announced::Promote),
                                ..Notice::new(
                                    Topic::Decision,
                                    Severity::Info,
                                    format!("promotion verified on the load balancer: {split}"),
                                )
                            };
                            self.deliver(self.delegates.notify(self.bundle.run_id(), notice));
                        }
                        WeightChange::Step { .. } => {}
                    }
                    return Ok(Vec::new());
                }
                Err(e) => {
                    let detail = e.to_string();
                    tracing::error!(target: "canary", attempt, "traffic change to {canary} % failed: {detail}");
                    // The LB diff records the first failure of each change (retries of a
                    // rollback are in the log and the escalations).
                    if attempt == 1 {
                        let after = self.router.describe().await.unwrap_or_default();
                        let failed = Verification::Failed {
                            at: now_ms(),
                            detail: detail.clone(),
                        };
                        self.record_change(&record, after, failed)?;
                    }
                    match change {
                        WeightChange::Rollback => {
                            // Never give up on a rollback: escalate and keep trying.
                            if attempt == 1 || attempt.is_multiple_of(5) {
                                self.deliver(self.delegates.notify(
                                    self.bundle.run_id(),
                                    Notice::new(
                                        Topic::Rollback,
                                        Severity::Page,
                                        format!(
                                            "ROLLBACK NOT VERIFIED after {attempt} attempt(s): {detail}. Traffic may still reach the canary; canary keeps retrying — check the load balancer now."
                                        ),
                                    ),
                                ));
                            }
                            let pause = self.retry.backoff(attempt).max(Duration::from_millis(500));
                            tokio::time::sleep(pause).await;
                        }
                        WeightChange::Promote => {
                            // Not a PROMOTE: the engine records its own outcome (journalled,
                            // so `canary verify` re-derives it) and sends traffic back to the
                            // baseline rather than leaving it split.
                            let at = now_ms().max(self.last_input);
                            self.last_input = at;
                            return self
                                .feed(Input::Event {
                                    at,
                                    event: Event::PromotionFailed { detail },
                                })
                                .await;
                        }
                        WeightChange::Step { .. } => {
                            let at = now_ms().max(self.last_input);
                            self.last_input = at;
                            return self
                                .feed(Input::Event {
                                    at,
                                    event: Event::TrafficFailed { detail },
                                })
                                .await;
                        }
                    }
                }
            }
        }
    }

    /// The rollback as it starts, for `rollback` subscribers: the verdict and its reasons, the
    /// guardrails behind them, paging for a security matter or a failed promotion, a warning
    /// only for an operator's abort or a signal.
    fn rolling_back(&self) -> Notice {
        let baseline = &self.engine.plan().arms.baseline.name;
        let Some(decision) = self.engine.decision() else {
            return Notice::new(
                Topic::Rollback,
                Severity::Critical,
                format!("rolling back to {baseline}"),
            );
        };
        let reasons = decision.verdict.reasons();
        let severity = if decision.verdict.is_security()
            || matches!(decision.verdict, Verdict::PromotionFailed { .. })
        {
            Severity::Page
        } else if !reasons.is_empty()
            && reasons
                .iter()
                .all(|r| matches!(r, Reason::Aborted { .. } | Reason::Signal { .. }))
        {
            Severity::Warning
        } else {
            Severity::Critical
        };
        let named: Vec<&str> = reasons.iter().filter_map(Reason::guardrail).collect();
        Notice {
            guardrails: decision
                .guardrails
                .iter()
                .filter(|g| named.contains(&g.name.as_str()))
                .cloned()
                .collect(),
            ..Notice::new(
                Topic::Rollback,
                severity,
                format!(
                    "{}: rolling back to {baseline} — {}",
                    decision.verdict.name(),
                    reasons
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            )
        }
    }

    /// Closes the run's incident and those of every guardrail that breached in it.
    fn resolved(&self) -> Incident {
        Incident::Resolved {
            guardrails: self
                .engine
                .status()
                .guardrails
                .into_iter()
                .filter(|g| g.breaches > 0)
                .map(|g| g.name)
                .collect(),
        }
    }

    /// Records one change in the LB diff: what `change` set out to do, the load balancer's
    /// description after it, and how it was verified.
    fn record_change(
        &self,
        change: &TrafficChange,
        after: String,
        verification: Verification,
    ) -> anyhow::Result<()> {
        self.bundle.record_traffic_change(&TrafficChange {
            after,
            verification,
            ..change.clone()
        })?;
        Ok(())
    }

    /// Publishes the run as people see it: the engine's view, the plan's timeline and units,
    /// and what the controller kept (series, burst, probes).
    fn publish_status(&self) {
        let Some(status) = &self.status else {
            return;
        };
        let engine = self.engine.status();
        let plan = self.engine.plan();
        let started = self.engine.started_at();
        let finite = |r: &Option<canary_core::Reading>| {
            r.as_ref()
                .and_then(|r| r.as_value())
                .filter(|v| v.is_finite())
        };
        let guardrails = engine
            .guardrails
            .iter()
            .map(|g| GuardrailStatus {
                name: g.name.clone(),
                status: g.status.label().to_owned(),
                canary: finite(&g.canary),
                baseline: finite(&g.baseline),
                must: g.must.to_string(),
                threshold: g.must.value,
                on_breach: g.on_breach,
                unit: plan
                    .guardrails
                    .iter()
                    .find(|p| p.name == g.name)
                    .and_then(|p| p.unit.clone()),
                for_ms: g.for_.as_millis() as i64,
                breaching_since_ms: match (&g.status, g.breached_since, started) {
                    (canary_core::engine::Status::Breach, Some(since), Some(start)) => {
                        Some(since - start)
                    }
                    _ => None,
                },
                series: self.shown.series.get(&g.name).cloned().unwrap_or_default(),
            })
            .collect();
        let interval_ms = plan.evaluation_interval.as_millis().max(1) as i64;
        let _ = status.send(RunStatus {
            run_id: self.bundle.run_id().to_owned(),
            service: plan.service.clone(),
            phase: engine.phase.to_owned(),
            elapsed_ms: engine.elapsed_ms,
            window_ms: engine.window_ms,
            canary_weight: self.weight,
            round: engine.elapsed_ms / interval_ms,
            verdict: engine.verdict.map(str::to_owned),
            reasons: self.engine.decision().map(|d| {
                d.verdict
                    .reasons()
                    .iter()
                    .map(ToString::to_string)
                    .collect()
            }),
            guardrails,
            comparisons: engine
                .comparisons
                .iter()
                .map(crate::control::ComparisonStatus::of)
                .collect(),
            score: engine.score.as_ref().map(crate::control::score_text),
            events: self.recent.iter().cloned().collect(),
            bundle: self.bundle.dir().display().to_string(),
            time_scale: plan.time_scale,
            started_at_ms: started,
            phases: timeline(plan, engine.phase, engine.elapsed_ms, &self.shown),
            burst: self.shown.burst.clone(),
            probes: self.shown.probes.clone(),
        });
    }
}

/// The runbook's timeline for the live status: `setup` from T+0, `burst` at its planned time
/// until it reports, `checks` from then on, each checkpoint at its offset (named in runbook
/// time, `T+15`), and `decision` at the end of the window. Every phase the run has reached is
/// done except the one it is in; after the decision, the decision is done and what the run
/// never reached (a rollback before T+60) stays pending.
fn timeline(
    plan: &canary_core::Plan,
    phase: &str,
    elapsed: i64,
    shown: &Shown,
) -> Vec<PhaseStatus> {
    let ms = |d: Duration| d.as_millis() as i64;
    let window = ms(plan.window());
    // (name, planned start, reached)
    let mut steps: Vec<(String, i64, bool)> = vec![("setup".to_owned(), 0, phase != "starting")];
    match &plan.burst {
        Some(b) => {
            let at = ms(b.at);
            steps.push((
                "burst".to_owned(),
                at,
                shown.burst_started.is_some() || elapsed >= at,
            ));
            steps.push((
                "checks".to_owned(),
                shown.burst_finished.unwrap_or(at),
                shown.burst_finished.is_some(),
            ));
        }
        None => steps.push((
            "checks".to_owned(),
            0,
            phase != "starting" && phase != "ready",
        )),
    }
    for &checkpoint in &plan.checkpoints {
        let at = ms(checkpoint);
        let label = plan.checkpoint_label(checkpoint);
        let name = match label.strip_prefix('T') {
            Some(rest) => format!("T+{rest}"),
            None => label,
        };
        steps.push((name, at.min(window), elapsed >= at));
    }
    // The checkpoints may sit anywhere in the window; the order is the clock's.
    steps.sort_by_key(|(_, at, _)| *at);
    let decided = phase == "decided";
    let deciding = decided || phase == "awaiting-approval";
    steps.push(("decision".to_owned(), window, deciding));
    let current = if decided {
        None
    } else {
        steps.iter().rposition(|(_, _, reached)| *reached)
    };
    steps
        .into_iter()
        .enumerate()
        .map(|(i, (name, at_ms, reached))| PhaseStatus {
            name,
            at_ms,
            state: match (Some(i) == current, reached) {
                (true, _) => PhaseState::Current,
                (false, true) => PhaseState::Done,
                (false, false) => PhaseState::Pending,
            },
        })
        .collect()
}

fn command_event(c: Command) -> Event {
    match c {
        Command::Abort { by, reason } => Event::Abort { by, reason },
        Command::Approve { by } => Event::Approve { by },
        Command::Alert {
            alert,
            security,
            guardrail,
            action,
        } => Event::AlertFired {
            alert,
            security,
            guardrail,
            action,
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::config::{INIT_TEMPLATE, Needs, env::Env, resolve_text};

    /// The runbook's plan (`canary init`'s template) on the demo's clock: burst at T+5,
    /// checkpoints T+15/30/60, window 60 runbook minutes = 60 s.
    fn plan() -> canary_core::Plan {
        let dir = tempfile::tempdir().unwrap();
        let config = resolve_text(
            "canary.toml",
            INIT_TEMPLATE,
            dir.path(),
            Needs::PLAN,
            Env::offline(),
        )
        .unwrap();
        config.compressed(60.0).plan
    }

    /// Where the timeline puts a run: `(engine phase, elapsed ms, burst started / finished at,
    /// each phase's state in order)`.
    #[test]
    fn the_timeline_follows_the_run() {
        let plan = plan();
        let cases = [
            ("ready", 0, None, None, "C P P P P P P"),
            ("running", 2_000, None, None, "C P P P P P P"),
            ("running", 5_100, Some(5_000), None, "D C P P P P P"),
            ("running", 9_000, Some(5_000), Some(8_000), "D D C P P P P"),
            ("running", 31_000, Some(5_000), Some(8_000), "D D D D C P P"),
            (
                "awaiting-approval",
                60_000,
                Some(5_000),
                Some(8_000),
                "D D D D D D C",
            ),
            // Rolled back at T+20: what it never reached stays pending.
            ("decided", 20_000, Some(5_000), Some(8_000), "D D D D P P D"),
        ];
        for (phase, elapsed, started, finished, expect) in cases {
            let shown = Shown {
                burst_started: started,
                burst_finished: finished,
                ..Shown::default()
            };
            let phases = timeline(&plan, phase, elapsed, &shown);
            let names: Vec<&str> = phases.iter().map(|p| p.name.as_str()).collect();
            assert_eq!(
                names,
                [
                    "setup", "burst", "checks", "T+15", "T+30", "T+60", "decision"
                ]
            );
            let states: Vec<&str> = phases
                .iter()
                .map(|p| match p.state {
                    PhaseState::Done => "D",
                    PhaseState::Current => "C",
                    PhaseState::Pending => "P",
                })
                .collect();
            assert_eq!(states.join(" "), expect, "{phase} at {elapsed} ms");
        }
        let at: Vec<i64> = timeline(&plan, "ready", 0, &Shown::default())
            .iter()
            .map(|p| p.at_ms)
            .collect();
        assert_eq!(at, [0, 5_000, 5_000, 15_000, 30_000, 60_000, 60_000]);
    }
}
