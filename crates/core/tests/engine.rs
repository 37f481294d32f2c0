//! The engine's rules, driven through its public API on a virtual clock.
//!
//! Every case is data: a plan, what each guardrail reads over time, and events at given minutes.
//! `run` plays it through the engine the way the runtime would and returns what happened.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is a test failure

use std::time::Duration;

use canary_core::engine::{
    Action, GuardrailReading, Input, Reading, Severity, Topic, WeightChange,
};
use canary_core::plan::{
    Approval, Arm, Arms, BurstPlan, Guardrail, OnBreach, OnInconclusive, OnNoData, Plan, Step,
};
use canary_core::verdict::{NoDataCause, ProbeRun, ProbeVerdict, Reason, Verdict};
use canary_core::{ArmRole, Engine, Event, journal};

const T0: i64 = 1_760_000_000_000;

fn min(m: f64) -> Duration {
    Duration::from_millis((m * 60_000.0) as u64)
}

fn guardrail(name: &str, query: &str, must: &str, for_min: f64, on_breach: OnBreach) -> Guardrail {
    Guardrail {
        name: name.into(),
        query: query.into(),
        must: must.parse().unwrap(),
        for_: min(for_min),
        on_breach,
        on_no_data: OnNoData::Inconclusive,
        min_samples: None,
        samples_query: None,
        unit: None,
    }
}

/// The runbook: 5 % for 60 minutes, six guardrails, 30 s evaluations, 5-minute check log,
/// snapshots at T+15/30/60, burst at T+5.
fn runbook() -> Plan {
    Plan {
        service: "relay".into(),
        arms: Arms {
            baseline: Arm {
                name: "r0.5-hotfix".into(),
                selector: r#"{version="r0.5"}"#.into(),
            },
            canary: Arm {
                name: "main".into(),
                selector: r#"{version="r1"}"#.into(),
            },
        },
        steps: vec![Step {
            weight: 5,
            hold: min(60.0),
        }],
        evaluation_interval: Duration::from_secs(30),
        check_log_interval: min(5.0),
        checkpoints: vec![min(15.0), min(30.0), min(60.0)],
        guardrails: vec![
            guardrail("ttfv_p95", "q1", "< 1500", 5.0, OnBreach::Rollback),
            guardrail("rls_errors", "q2", "== 0", 0.0, OnBreach::Rollback),
            guardrail("sse_success", "q3", ">= 99.6", 5.0, OnBreach::Rollback),
            guardrail(
                "cross_tenant",
                "q4",
                "== 0",
                0.0,
                OnBreach::SecurityRollback,
            ),
            guardrail("ann_p95", "q5", "< 200", 0.0, OnBreach::BlockPromotion),
            guardrail("db_pool", "q6", "< 80", 0.0, OnBreach::BlockPromotion),
        ],
        burst: Some(BurstPlan {
            at: min(5.0),
            min_success_percent: 99.0,
        }),
        probes: true,
        approval: Approval::Auto,
        on_inconclusive: OnInconclusive::Rollback,
        max_query_errors: 5,
        time_scale: 1.0,
        comparisons: Vec::new(),
        scoring: Default::default(),
    }
}

/// Healthy values for each guardrail.
fn healthy(name: &str) -> f64 {
    match name {
        "ttfv_p95" => 800.0,
        "rls_errors" | "cross_tenant" => 0.0,
        "sse_success" => 99.9,
        "ann_p95" => 120.0,
        "db_pool" => 40.0,
        "errors_warn" => 1.0,
        other => panic!("unknown guardrail {other}"),
    }
}

type Override = Box<dyn Fn(&str, f64) -> Option<Reading>>;

/// One scenario.
struct Case {
    plan: Plan,
    /// `(guardrail, minute) -> reading` overriding the healthy value.
    canary: Override,
    /// Events at minutes.
    events: Vec<(f64, Event)>,
    /// Burst result `(total, successful)`, reported one minute after the burst starts.
    burst: Option<(u64, u64)>,
    /// Probe runs come back clean.
    probes_clean: bool,
    /// The runtime only wakes at these minutes after the start (simulating a late runtime);
    /// `None` wakes exactly when the engine asks.
    wake_every: Option<f64>,
    /// Stop after this many minutes even if undecided.
    horizon: f64,
}

impl Case {
    fn new() -> Self {
        Case {
            plan: runbook(),
            canary: Box::new(|_, _| None),
            events: vec![],
            burst: Some((100, 100)),
            probes_clean: true,
            wake_every: None,
            horizon: 200.0,
        }
    }

    fn canary(mut self, f: impl Fn(&str, f64) -> Option<Reading> + 'static) -> Self {
        self.canary = Box::new(f);
        self
    }

    fn event(mut self, minute: f64, e: Event) -> Self {
        self.events.push((minute, e));
        self
    }
}

struct Outcome {
    inputs: Vec<Input>,
    actions: Vec<(i64, Action)>,
    verdict: Option<Verdict>,
    decided_at_min: Option<f64>,
    authorised_by: Option<String>,
}

impl Outcome {
    fn weights(&self) -> Vec<(f64, u8)> {
        self.actions
            .iter()
            .filter_map(|(t, a)| match a {
                Action::SetWeight { canary, .. } => Some(((t - T0) as f64 / 60_000.0, *canary)),
                _ => None,
            })
            .collect()
    }

    fn count(&self, pred: impl Fn(&Action) -> bool) -> usize {
        self.actions.iter().filter(|(_, a)| pred(a)).count()
    }

    fn reasons(&self) -> Vec<Reason> {
        self.verdict
            .as_ref()
            .map(|v| v.reasons().to_vec())
            .unwrap_or_default()
    }
}

fn at_min(m: f64) -> i64 {
    T0 + (m * 60_000.0).round() as i64
}

/// Plays a case through the engine the way the runtime does.
fn run(case: Case) -> Outcome {
    let mut engine = Engine::new(case.plan.clone()).unwrap();
    let mut inputs: Vec<Input> = Vec::new();
    let mut actions: Vec<(i64, Action)> = Vec::new();
    let mut queue: Vec<(i64, Input)> = case
        .events
        .iter()
        .map(|(m, e)| {
            (
                at_min(*m),
                Input::Event {
                    at: at_min(*m),
                    event: e.clone(),
                },
            )
        })
        .collect();
    let feed = |engine: &mut Engine,
                input: Input,
                inputs: &mut Vec<Input>,
                actions: &mut Vec<(i64, Action)>|
     -> Vec<Action> {
        let at = input.at();
        let out = engine.apply(&input).unwrap();
        inputs.push(input);
        for a in &out {
            actions.push((at, a.clone()));
        }
        out
    };
    let mut todo = feed(
        &mut engine,
        Input::Start { at: T0 },
        &mut inputs,
        &mut actions,
    );
    let horizon = at_min(case.horizon);
    let mut now = T0;
    let mut guard = 0;
    loop {
        guard += 1;
        assert!(guard < 100_000, "simulation did not end");
        // Carry out what the engine asked for, in order.
        while !todo.is_empty() {
            let action = todo.remove(0);
            match action {
                Action::Evaluate { round } => {
                    let minute = (round - T0) as f64 / 60_000.0;
                    let readings = case
                        .plan
                        .guardrails
                        .iter()
                        .map(|g| GuardrailReading {
                            guardrail: g.name.clone(),
                            canary: (case.canary)(&g.name, minute)
                                .unwrap_or_else(|| Reading::value(healthy(&g.name))),
                            baseline: Reading::value(healthy(&g.name)),
                        })
                        .collect();
                    let more = feed(
                        &mut engine,
                        Input::Observations {
                            at: now,
                            round,
                            readings,
                            comparisons: Vec::new(),
                        },
                        &mut inputs,
                        &mut actions,
                    );
                    todo.extend(more);
                }
                Action::StartBurst => {
                    if let Some((total, successful)) = case.burst {
                        queue.push((
                            now + 60_000,
                            Input::Event {
                                at: now + 60_000,
                                event: Event::BurstCompleted { total, successful },
                            },
                        ));
                    }
                }
                Action::RunProbes if case.probes_clean => {
                    queue.push((
                        now + 10_000,
                        Input::Event {
                            at: now + 10_000,
                            event: Event::ProbesCompleted(ProbeRun {
                                verdict: ProbeVerdict::Clean,
                                pairs: 20,
                                leaks: 0,
                            }),
                        },
                    ));
                }
                _ => {}
            }
        }
        if engine.is_decided() {
            break;
        }
        queue.sort_by_key(|(t, _)| *t);
        let wake = match case.wake_every {
            Some(every) => {
                let step = (every * 60_000.0) as i64;
                Some(now + step)
            }
            None => engine.next_wakeup(),
        };
        let next_event = queue.first().map(|(t, _)| *t);
        let next = match (wake, next_event) {
            (Some(w), Some(e)) => w.min(e),
            (Some(w), None) => w,
            (None, Some(e)) => e,
            (None, None) => break,
        };
        if next > horizon {
            break;
        }
        now = next.max(now);
        if next_event == Some(next) {
            let (_, input) = queue.remove(0);
            todo = feed(&mut engine, input, &mut inputs, &mut actions);
        } else {
            todo = feed(
                &mut engine,
                Input::Tick { at: now },
                &mut inputs,
                &mut actions,
            );
        }
    }
    let decision = engine.decision().cloned();
    Outcome {
        inputs,
        actions,
        decided_at_min: decision.as_ref().map(|d| (d.at - T0) as f64 / 60_000.0),
        authorised_by: decision.as_ref().map(|d| d.authorised_by.clone()),
        verdict: decision.map(|d| d.verdict),
    }
}

fn breach_from(
    name: &'static str,
    value: f64,
    from: f64,
    to: f64,
) -> impl Fn(&str, f64) -> Option<Reading> {
    move |g, m| (g == name && m >= from && m <= to).then(|| Reading::value(value))
}

#[test]
fn healthy_canary_is_promoted_at_the_end_of_the_window() {
    let out = run(Case::new());
    assert_eq!(out.verdict, Some(Verdict::Promote));
    assert_eq!(out.decided_at_min, Some(60.0));
    assert_eq!(out.authorised_by.as_deref(), Some("engine"));
    assert_eq!(out.weights(), vec![(0.0, 5), (60.0, 100)]);
    // 120 evaluations of 30 s, a check-log entry every 5 minutes, the runbook's snapshots.
    assert_eq!(out.count(|a| matches!(a, Action::Evaluate { .. })), 120);
    assert_eq!(out.count(|a| matches!(a, Action::CheckLog { .. })), 12);
    let snapshots: Vec<(f64, String)> = out
        .actions
        .iter()
        .filter_map(|(t, a)| match a {
            Action::Snapshot { label, .. } => Some(((t - T0) as f64 / 60_000.0, label.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        snapshots,
        vec![
            (15.0, "T15".into()),
            (30.0, "T30".into()),
            (60.0, "T60".into())
        ]
    );
    let burst_at: Vec<i64> = out
        .actions
        .iter()
        .filter(|(_, a)| matches!(a, Action::StartBurst))
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(burst_at, vec![at_min(5.0)]);
    // Probes with the burst and at every check interval after it.
    assert_eq!(out.count(|a| matches!(a, Action::RunProbes)), 1 + 10);
}

#[test]
fn a_breach_that_recovers_one_evaluation_before_for_elapses_does_not_trigger() {
    // Breached from 20:00 to 24:30 (ten evaluations, 4m30s); 25:00 passes.
    let out = run(Case::new().canary(breach_from("ttfv_p95", 1800.0, 20.0, 24.5)));
    assert_eq!(out.verdict, Some(Verdict::Promote));
    assert_eq!(
        out.count(|a| matches!(a, Action::Notify { topic: Topic::Breach, severity: Severity::Warning, message, .. } if message.contains("ttfv_p95 breaching"))),
        1
    );
}

#[test]
fn a_sustained_breach_triggers_exactly_when_for_has_elapsed() {
    let out = run(Case::new().canary(breach_from("ttfv_p95", 1800.0, 20.0, 60.0)));
    assert_eq!(out.decided_at_min, Some(25.0));
    match &out.reasons()[..] {
        [
            Reason::GuardrailTriggered {
                guardrail,
                value,
                breached_for,
                on_breach: OnBreach::Rollback,
                ..
            },
        ] => {
            assert_eq!(guardrail, "ttfv_p95");
            assert_eq!(*value, 1800.0);
            assert_eq!(*breached_for, min(5.0));
        }
        other => panic!("unexpected reasons {other:?}"),
    }
    assert_eq!(out.weights(), vec![(0.0, 5), (25.0, 0)]);
    assert!(matches!(out.verdict, Some(Verdict::Rollback { .. })));
}

#[test]
fn for_zero_triggers_on_the_first_breached_evaluation() {
    let out = run(Case::new().canary(breach_from("rls_errors", 1.0, 33.0, 33.0)));
    assert_eq!(out.decided_at_min, Some(33.0));
    assert_eq!(out.reasons()[0].guardrail(), Some("rls_errors"));
}

#[test]
fn a_security_trigger_at_minute_59_rolls_back_and_pages() {
    let out = run(Case::new().canary(breach_from("cross_tenant", 2.0, 59.0, 59.0)));
    assert_eq!(out.decided_at_min, Some(59.0));
    let verdict = out.verdict.clone().unwrap();
    assert!(verdict.is_security());
    assert_eq!(verdict.exit_code(), 3);
    assert_eq!(
        out.count(|a| matches!(
            a,
            Action::Notify {
                topic: Topic::Decision,
                severity: Severity::Page,
                ..
            }
        )),
        1
    );
    assert_eq!(out.weights().last(), Some(&(59.0, 0)));
}

#[test]
fn no_data_at_the_decision_is_inconclusive_never_promote() {
    // No traffic to compute a ratio from: NaN from 50 minutes on.
    let out = run(Case::new()
        .canary(|g, m| (g == "sse_success" && m >= 50.0).then(|| Reading::value(f64::NAN))));
    match out.verdict {
        Some(Verdict::Inconclusive { ref reasons }) => assert_eq!(
            reasons,
            &vec![Reason::NoData {
                guardrail: "sse_success".into(),
                cause: NoDataCause::NotANumber
            }]
        ),
        ref other => panic!("expected INCONCLUSIVE, got {other:?}"),
    }
    assert_eq!(out.verdict.as_ref().unwrap().exit_code(), 4);
    assert_eq!(out.weights().last(), Some(&(60.0, 0)));
}

#[test]
fn a_block_promotion_gate_failing_only_at_the_end_blocks_without_rolling_back_early() {
    let out = run(Case::new().canary(breach_from("ann_p95", 260.0, 60.0, 60.0)));
    assert_eq!(out.decided_at_min, Some(60.0));
    match &out.reasons()[..] {
        [
            Reason::FailedAtDecision {
                guardrail,
                on_breach,
                value,
                ..
            },
        ] => {
            assert_eq!(guardrail, "ann_p95");
            assert_eq!(*on_breach, OnBreach::BlockPromotion);
            assert_eq!(*value, 260.0);
        }
        other => panic!("unexpected reasons {other:?}"),
    }
}

#[test]
fn a_gate_that_breaches_mid_window_and_recovers_does_not_block() {
    let out = run(Case::new().canary(breach_from("db_pool", 95.0, 10.0, 40.0)));
    assert_eq!(out.verdict, Some(Verdict::Promote));
}

#[test]
fn an_abort_during_the_burst_rolls_back_and_records_the_operator() {
    let out = run(Case::new().event(
        5.5,
        Event::Abort {
            by: "alice".into(),
            reason: "pager storm".into(),
        },
    ));
    assert_eq!(out.decided_at_min, Some(5.5));
    assert_eq!(out.authorised_by.as_deref(), Some("alice"));
    assert_eq!(
        out.reasons(),
        vec![Reason::Aborted {
            by: "alice".into(),
            reason: "pager storm".into()
        }]
    );
    assert_eq!(out.weights(), vec![(0.0, 5), (5.5, 0)]);
}

#[test]
fn external_triggers_roll_back_at_once() {
    let cases: Vec<(Event, Reason, bool)> = vec![
        (
            Event::AlertFired {
                alert: "CanaryTtfvP95".into(),
                security: false,
                guardrail: None,
                action: None,
            },
            Reason::AlertFired {
                alert: "CanaryTtfvP95".into(),
                security: false,
                guardrail: None,
            },
            false,
        ),
        (
            Event::AlertFired {
                alert: "CanaryCrossTenant".into(),
                security: true,
                guardrail: None,
                action: None,
            },
            Reason::AlertFired {
                alert: "CanaryCrossTenant".into(),
                security: true,
                guardrail: None,
            },
            true,
        ),
        (
            Event::IsolationLeak {
                observer: "user_1".into(),
                owner: "user_2".into(),
                arm: ArmRole::Canary,
            },
            Reason::IsolationLeak {
                observer: "user_1".into(),
                owner: "user_2".into(),
                arm: ArmRole::Canary,
            },
            true,
        ),
        (
            Event::ArmUnhealthy {
                arm: ArmRole::Canary,
                detail: "connection refused".into(),
            },
            Reason::CanaryUnhealthy {
                detail: "connection refused".into(),
            },
            false,
        ),
        (
            Event::Signal {
                signal: "SIGTERM".into(),
            },
            Reason::Signal {
                signal: "SIGTERM".into(),
            },
            false,
        ),
        (
            Event::TrafficFailed {
                detail: "verify: weight is 7".into(),
            },
            Reason::TrafficFailed {
                detail: "verify: weight is 7".into(),
            },
            false,
        ),
    ];
    for (event, reason, security) in cases {
        let out = run(Case::new().event(42.0, event.clone()));
        assert_eq!(out.decided_at_min, Some(42.0), "{event:?}");
        assert_eq!(out.reasons(), vec![reason], "{event:?}");
        assert_eq!(out.verdict.unwrap().is_security(), security, "{event:?}");
    }
}

#[test]
fn an_unhealthy_baseline_only_notifies() {
    let out = run(Case::new().event(
        20.0,
        Event::ArmUnhealthy {
            arm: ArmRole::Baseline,
            detail: "503".into(),
        },
    ));
    assert_eq!(out.verdict, Some(Verdict::Promote));
    assert_eq!(
        out.count(|a| matches!(
            a,
            Action::Notify {
                topic: Topic::Breach,
                severity: Severity::Critical,
                ..
            }
        )),
        1
    );
}

#[test]
fn consecutive_query_errors_roll_back_but_interrupted_ones_do_not() {
    let err = || Reading::Error {
        message: "timeout".into(),
    };
    let out =
        run(Case::new()
            .canary(move |g, m| (g == "ttfv_p95" && (10.0..=12.0).contains(&m)).then(err)));
    assert_eq!(out.decided_at_min, Some(12.0)); // 10:00, 10:30, 11:00, 11:30, 12:00
    assert!(matches!(
        &out.reasons()[..],
        [Reason::QueryErrors { consecutive: 5, .. }]
    ));

    let out = run(Case::new().canary(move |g, m| {
        (g == "ttfv_p95" && ((10.0..=11.5).contains(&m) || (12.5..=14.0).contains(&m))).then(|| {
            Reading::Error {
                message: "timeout".into(),
            }
        })
    }));
    assert_eq!(out.verdict, Some(Verdict::Promote));
}

#[test]
fn errors_do_not_reset_a_breach_streak() {
    // Breach 20:00–22:00, errors 22:30–23:00, breach again from 23:30: triggers at 25:00.
    let out = run(Case::new().canary(|g, m| {
        if g != "ttfv_p95" || m < 20.0 {
            None
        } else if (22.5..=23.0).contains(&m) {
            Some(Reading::Error {
                message: "503".into(),
            })
        } else {
            Some(Reading::value(1700.0))
        }
    }));
    assert_eq!(out.decided_at_min, Some(25.0));
}

#[test]
fn no_data_handling_follows_on_no_data() {
    let none = |g: &str, m: f64| (g == "sse_success" && m >= 30.0).then_some(Reading::NoData);
    // fail: no data is a breach, and the 5-minute for applies.
    let mut case = Case::new().canary(none);
    case.plan.guardrails[2].on_no_data = OnNoData::Fail;
    let out = run(case);
    assert_eq!(out.decided_at_min, Some(35.0));
    assert_eq!(out.reasons()[0].guardrail(), Some("sse_success"));
    // ignore: no data passes.
    let mut case = Case::new().canary(none);
    case.plan.guardrails[2].on_no_data = OnNoData::Ignore;
    assert_eq!(run(case).verdict, Some(Verdict::Promote));
}

#[test]
fn too_few_samples_count_as_no_data() {
    let mut case = Case::new().canary(|g, _| {
        (g == "ttfv_p95").then_some(Reading::Value {
            value: 900.0,
            samples: Some(5.0),
        })
    });
    case.plan.guardrails[0].min_samples = Some(20.0);
    case.plan.guardrails[0].samples_query = Some("count".into());
    let out = run(case);
    assert_eq!(
        out.reasons(),
        vec![Reason::NoData {
            guardrail: "ttfv_p95".into(),
            cause: NoDataCause::InsufficientSamples {
                got: 5.0,
                need: 20.0
            }
        }]
    );
}

#[test]
fn the_burst_must_meet_its_bar_and_must_happen() {
    let mut case = Case::new();
    case.burst = Some((100, 93));
    let out = run(case);
    assert_eq!(out.decided_at_min, Some(6.0)); // reported one minute after T+5
    assert!(matches!(
        &out.reasons()[..],
        [Reason::BurstBelowBar {
            successful: 93,
            total: 100,
            ..
        }]
    ));

    let mut case = Case::new();
    case.burst = None;
    let out = run(case);
    assert!(matches!(out.verdict, Some(Verdict::Inconclusive { .. })));
    assert_eq!(out.reasons(), vec![Reason::BurstMissing]);
}

#[test]
fn isolation_probes_must_have_run_clean() {
    let mut case = Case::new();
    case.probes_clean = false;
    let out = run(case);
    assert_eq!(out.reasons(), vec![Reason::ProbesMissing]);
    assert!(matches!(out.verdict, Some(Verdict::Inconclusive { .. })));
}

#[test]
fn manual_approval_promotes_with_the_approver_or_times_out() {
    let mut case = Case::new().event(61.0, Event::Approve { by: "bob".into() });
    case.plan.approval = Approval::Manual { timeout: min(30.0) };
    let out = run(case);
    assert_eq!(out.verdict, Some(Verdict::Promote));
    assert_eq!(out.authorised_by.as_deref(), Some("bob"));
    assert_eq!(out.decided_at_min, Some(61.0));
    assert_eq!(out.count(|a| matches!(a, Action::AwaitApproval { .. })), 1);

    let mut case = Case::new();
    case.plan.approval = Approval::Manual { timeout: min(30.0) };
    let out = run(case);
    assert_eq!(out.decided_at_min, Some(90.0));
    assert_eq!(
        out.reasons(),
        vec![Reason::ApprovalTimedOut {
            waited: min(30.0),
            time_scale: 1.0
        }]
    );

    // A breach while waiting still rolls back.
    let mut case = Case::new().canary(breach_from("rls_errors", 3.0, 70.0, 70.0));
    case.plan.approval = Approval::Manual { timeout: min(30.0) };
    let out = run(case);
    assert_eq!(out.decided_at_min, Some(70.0));
    assert_eq!(out.reasons()[0].guardrail(), Some("rls_errors"));
}

#[test]
fn holding_an_inconclusive_canary_waits_for_an_operator() {
    let nan = |g: &str, m: f64| (g == "sse_success" && m >= 55.0).then(|| Reading::value(f64::NAN));
    let mut case = Case::new()
        .canary(nan)
        .event(65.0, Event::Approve { by: "carol".into() });
    case.plan.on_inconclusive = OnInconclusive::Hold { timeout: min(15.0) };
    let out = run(case);
    assert_eq!(out.verdict, Some(Verdict::Promote));
    assert_eq!(out.authorised_by.as_deref(), Some("carol"));

    let mut case = Case::new().canary(nan);
    case.plan.on_inconclusive = OnInconclusive::Hold { timeout: min(15.0) };
    let out = run(case);
    assert_eq!(out.decided_at_min, Some(75.0));
    assert!(matches!(out.verdict, Some(Verdict::Inconclusive { .. })));
    assert!(out.reasons().contains(&Reason::ApprovalTimedOut {
        waited: min(15.0),
        time_scale: 1.0
    }));
    assert_eq!(out.weights().last(), Some(&(75.0, 0)));
}

#[test]
fn progressive_steps_change_weight_at_each_boundary() {
    let mut case = Case::new();
    case.plan.steps = vec![
        Step {
            weight: 5,
            hold: min(20.0),
        },
        Step {
            weight: 25,
            hold: min(20.0),
        },
        Step {
            weight: 50,
            hold: min(20.0),
        },
    ];
    let out = run(case);
    assert_eq!(
        out.weights(),
        vec![(0.0, 5), (20.0, 25), (40.0, 50), (60.0, 100)]
    );
    let changes: Vec<WeightChange> = out
        .actions
        .iter()
        .filter_map(|(_, a)| match a {
            Action::SetWeight { change, .. } => Some(*change),
            _ => None,
        })
        .collect();
    assert_eq!(
        changes,
        vec![
            WeightChange::Step { index: 0 },
            WeightChange::Step { index: 1 },
            WeightChange::Step { index: 2 },
            WeightChange::Promote
        ]
    );
}

#[test]
fn a_late_runtime_skips_missed_rounds_but_never_the_final_one() {
    let mut case = Case::new();
    case.wake_every = Some(7.0); // wakes at 7, 14, ..., 56, 63
    let out = run(case);
    assert_eq!(out.verdict, Some(Verdict::Promote));
    let rounds: Vec<f64> = out
        .actions
        .iter()
        .filter_map(|(_, a)| match a {
            Action::Evaluate { round } => Some((round - T0) as f64 / 60_000.0),
            _ => None,
        })
        .collect();
    assert_eq!(rounds.last(), Some(&60.0));
    assert!(rounds.windows(2).all(|w| w[0] < w[1]));
    // Snapshots still cover every checkpoint, each from the first round at or after it.
    assert_eq!(out.count(|a| matches!(a, Action::Snapshot { .. })), 3);
}

#[test]
fn warnings_never_change_the_verdict() {
    let mut case = Case::new().canary(breach_from("errors_warn", 9.0, 10.0, 20.0));
    case.plan
        .guardrails
        .push(guardrail("errors_warn", "q7", "< 5", 1.0, OnBreach::Warn));
    let out = run(case);
    assert_eq!(out.verdict, Some(Verdict::Promote));
    assert!(
        out.count(
            |a| matches!(a, Action::Notify { topic: Topic::Breach, message, .. } if message.starts_with("warning only"))
        ) >= 1
    );
}

#[test]
fn the_journal_replays_to_the_same_actions_and_verdict_bit_for_bit() {
    for case in [
        Case::new(),
        Case::new().canary(breach_from("ttfv_p95", 1800.0, 20.0, 60.0)),
        Case::new()
            .canary(|g, m| (g == "sse_success" && m >= 50.0).then(|| Reading::value(f64::NAN))),
        Case::new().event(
            5.5,
            Event::Abort {
                by: "alice".into(),
                reason: "x".into(),
            },
        ),
    ] {
        let plan = case.plan.clone();
        let out = run(case);
        let mut text = journal::line(&journal::Header {
            format: journal::FORMAT,
            run_id: "r1".into(),
            plan: plan.clone(),
        });
        for input in &out.inputs {
            text.push_str(&journal::line(input));
        }
        let parsed = journal::parse(&text).unwrap();
        assert!(!parsed.torn_tail);
        assert_eq!(parsed.header.plan, plan);
        let replayed = canary_core::engine::replay(parsed.header.plan, &parsed.inputs).unwrap();
        let original: Vec<String> = out.actions.iter().map(|(_, a)| journal::line(a)).collect();
        let again: Vec<String> = replayed
            .actions
            .iter()
            .map(|(_, a)| journal::line(a))
            .collect();
        assert_eq!(original, again);
        assert_eq!(replayed.decision.map(|d| d.verdict), out.verdict);
    }
}

#[test]
fn a_torn_last_line_is_reported_not_fatal() {
    let mut text = journal::line(&journal::Header {
        format: journal::FORMAT,
        run_id: "r1".into(),
        plan: runbook(),
    });
    text.push_str(&journal::line(&Input::Start { at: T0 }));
    text.push_str("{\"input\":\"tick\",\"at\":17600");
    let parsed = journal::parse(&text).unwrap();
    assert!(parsed.torn_tail);
    assert_eq!(parsed.inputs.len(), 1);
    // A bad line in the middle is an error with its line number.
    let bad = text.replace("{\"input\":\"start\"", "{\"input\":\"stort\"") + "\n";
    let err = journal::parse(&bad).unwrap_err().to_string();
    assert!(err.starts_with("journal line 2:"), "{err}");
}

#[test]
fn time_never_goes_back_and_the_run_must_start_first() {
    let mut e = Engine::new(runbook()).unwrap();
    assert!(e.apply(&Input::Tick { at: T0 }).is_err());
    e.apply(&Input::Start { at: T0 }).unwrap();
    assert!(e.apply(&Input::Tick { at: T0 - 1 }).is_err());
    assert!(e.apply(&Input::Start { at: T0 }).is_err());
    let err = e
        .apply(&Input::Observations {
            at: T0 + 1,
            round: T0 + 7,
            readings: vec![],
            comparisons: vec![],
        })
        .unwrap_err();
    assert!(err.to_string().contains("not asked for"), "{err}");
}

#[test]
fn invalid_plans_are_refused() {
    let mut p = runbook();
    p.steps = vec![
        Step {
            weight: 50,
            hold: min(10.0),
        },
        Step {
            weight: 25,
            hold: min(10.0),
        },
    ];
    assert!(
        Engine::new(p)
            .unwrap_err()
            .to_string()
            .contains("does not increase")
    );
    let mut p = runbook();
    p.checkpoints.push(min(90.0));
    assert!(
        Engine::new(p)
            .unwrap_err()
            .to_string()
            .contains("past the end of the window")
    );
    // Never promotes without evidence: a plan whose guardrails cannot block the promotion (none,
    // or only warnings) is refused whatever it would be fed; so is a step that tests nothing.
    let mut p = runbook();
    p.guardrails.clear();
    assert!(
        Engine::new(p)
            .unwrap_err()
            .to_string()
            .contains("no guardrail can block the promotion")
    );
    let mut p = runbook();
    for g in &mut p.guardrails {
        g.on_breach = OnBreach::Warn;
    }
    assert!(Engine::new(p).is_err());
    let mut p = runbook();
    p.steps[0].weight = 0;
    assert!(
        Engine::new(p)
            .unwrap_err()
            .to_string()
            .contains("sends nothing to the canary")
    );
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    /// A reading for guardrail `g` chosen by `choice`: mostly healthy, sometimes breaching,
    /// missing, NaN or failing.
    fn reading(g: &str, choice: u8) -> Option<Reading> {
        match choice % 10 {
            0..=5 => None,
            6 => Some(Reading::value(match g {
                "ttfv_p95" => 2500.0,
                "sse_success" => 90.0,
                "ann_p95" => 400.0,
                "db_pool" => 95.0,
                _ => 1.0,
            })),
            7 => Some(Reading::NoData),
            8 => Some(Reading::value(f64::NAN)),
            _ => Some(Reading::Error {
                message: "boom".into(),
            }),
        }
    }

    fn case_from(table: Vec<Vec<u8>>) -> Case {
        let names: Vec<String> = runbook()
            .guardrails
            .iter()
            .map(|g| g.name.clone())
            .collect();
        Case::new().canary(move |g, m| {
            let round = (m * 2.0).round() as usize; // one row per 30 s round
            let col = names.iter().position(|n| n == g)?;
            table
                .get(round % table.len().max(1))
                .and_then(|row| row.get(col))
                .and_then(|c| reading(g, *c))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn replay_reproduces_every_run(table in prop::collection::vec(prop::collection::vec(0u8..40, 6), 1..150)) {
            let plan = runbook();
            let out = run(case_from(table));
            let replayed = canary_core::engine::replay(plan, &out.inputs).unwrap();
            let original: Vec<String> = out.actions.iter().map(|(_, a)| journal::line(a)).collect();
            let again: Vec<String> = replayed.actions.iter().map(|(_, a)| journal::line(a)).collect();
            prop_assert_eq!(original, again);
            prop_assert_eq!(replayed.decision.map(|d| d.verdict), out.verdict);
        }

        #[test]
        fn promote_means_every_gate_passed_at_the_end(table in prop::collection::vec(prop::collection::vec(0u8..40, 6), 1..150)) {
            let mut engine_out = run(case_from(table));
            if engine_out.verdict == Some(Verdict::Promote) {
                let decision = engine_out.actions.drain(..).find_map(|(_, a)| match a {
                    Action::Decide(d) => Some(d),
                    _ => None,
                }).unwrap();
                for g in &decision.guardrails {
                    prop_assert_eq!(&g.status, &canary_core::engine::Status::Pass, "{} did not pass", g.name);
                    prop_assert!(!g.triggered);
                }
            }
        }
    }
}

/// Drives `plan` to minute `m` on a virtual clock without answering anything (the controller
/// dies with the burst, its probes and one evaluation round outstanding).
fn started_and_abandoned_at(plan: Plan, m: f64) -> Engine {
    let mut engine = Engine::new(plan).unwrap();
    engine.apply(&Input::Start { at: T0 }).unwrap();
    engine.apply(&Input::Tick { at: at_min(m) }).unwrap();
    engine
}

#[test]
fn a_resume_inside_the_window_restores_the_split_and_asks_again_for_what_was_outstanding() {
    let mut engine = started_and_abandoned_at(runbook(), 6.0);
    let outstanding = engine.outstanding();
    assert!(
        outstanding.burst,
        "the burst started at T+5 and never reported"
    );
    assert_eq!(outstanding.probes, 1);
    let round = outstanding.round.expect("a round was asked for");

    let actions = engine.apply(&Input::Resume { at: at_min(8.0) }).unwrap();
    assert_eq!(
        actions[0],
        Action::SetWeight {
            canary: 5,
            change: WeightChange::Step { index: 0 }
        }
    );
    assert!(actions.contains(&Action::Evaluate { round }));
    assert!(actions.contains(&Action::StartBurst));
    assert_eq!(
        actions.iter().filter(|a| **a == Action::RunProbes).count(),
        1
    );
    assert!(!engine.is_decided());

    // Once answered, nothing is outstanding any more.
    engine
        .apply(&Input::Event {
            at: at_min(8.5),
            event: Event::BurstCompleted {
                total: 100,
                successful: 100,
            },
        })
        .unwrap();
    assert!(!engine.outstanding().burst);
}

#[test]
fn a_resume_past_the_window_rolls_back_for_the_controller_being_down() {
    let mut engine = started_and_abandoned_at(runbook(), 30.0);
    engine.apply(&Input::Resume { at: at_min(75.0) }).unwrap();
    let decision = engine.decision().expect("decided");
    assert_eq!(decision.authorised_by, "engine");
    match &decision.verdict {
        Verdict::Rollback { reasons } => {
            assert_eq!(
                reasons,
                &vec![Reason::ControllerDown {
                    since: at_min(30.0),
                    resumed: at_min(75.0),
                    time_scale: 1.0
                }]
            );
            assert!(reasons[0].to_string().contains("45m"), "{}", reasons[0]);
        }
        other => panic!("expected a rollback, got {other:?}"),
    }
}

#[test]
fn a_journal_with_a_resume_replays_to_the_same_decision() {
    let plan = runbook();
    let inputs = vec![
        Input::Start { at: T0 },
        Input::Tick { at: at_min(30.0) },
        Input::Resume { at: at_min(75.0) },
    ];
    let mut engine = Engine::new(plan.clone()).unwrap();
    for input in &inputs {
        engine.apply(input).unwrap();
    }
    let replayed = canary_core::engine::replay(plan, inputs.iter()).unwrap();
    assert_eq!(replayed.decision.as_ref(), engine.decision());
}

/// The actions and decision after `inputs` and then `event` at `minute`, replayed from the
/// journal's text as `canary verify` does.
fn replay_with(
    plan: &Plan,
    inputs: &[Input],
    minute: f64,
    event: Event,
) -> (Vec<Action>, canary_core::Decision) {
    let mut text = journal::line(&journal::Header {
        format: journal::FORMAT,
        run_id: "r1".into(),
        plan: plan.clone(),
    });
    let last = Input::Event {
        at: at_min(minute),
        event,
    };
    for input in inputs.iter().chain([&last]) {
        text.push_str(&journal::line(input));
    }
    let parsed = journal::parse(&text).unwrap();
    let replayed = canary_core::engine::replay(plan.clone(), &parsed.inputs).unwrap();
    let index = parsed.inputs.len() - 1;
    let caused = replayed
        .actions
        .into_iter()
        .filter(|(i, _)| *i == index)
        .map(|(_, a)| a)
        .collect();
    (caused, replayed.decision.unwrap())
}

#[test]
fn a_promotion_the_load_balancer_does_not_take_is_its_own_outcome_and_replays() {
    let plan = runbook();
    let out = run(Case::new());
    assert_eq!(out.verdict, Some(Verdict::Promote));
    let failed = Event::PromotionFailed {
        detail: "haproxy: weight read back 5, expected 100".into(),
    };
    let (actions, decision) = replay_with(&plan, &out.inputs, 60.1, failed.clone());
    let Verdict::PromotionFailed { reasons } = &decision.verdict else {
        panic!("{decision:?}");
    };
    assert_eq!(
        reasons,
        &vec![Reason::PromotionFailed {
            detail: "haproxy: weight read back 5, expected 100".into()
        }]
    );
    assert_eq!(decision.verdict.exit_code(), 5);
    assert_eq!(decision.verdict.name(), "PROMOTION_FAILED");
    assert_eq!(decision.verdict.final_weight(), 0);
    assert!(!decision.verdict.is_security());
    assert_eq!(decision.at, at_min(60.1));
    // The canary passed: who authorised the promotion and every guardrail's state stay.
    assert_eq!(decision.authorised_by, "engine");
    assert!(
        decision
            .guardrails
            .iter()
            .all(|g| g.status.label() == "PASS")
    );
    assert_eq!(
        Verdict::from_name("PROMOTION_FAILED", reasons.clone()),
        Some(decision.verdict.clone())
    );
    // The new decision, traffic back to the baseline, a page.
    match &actions[..] {
        [
            Action::Decide(d),
            Action::SetWeight {
                canary: 0,
                change: WeightChange::Rollback,
            },
            Action::Notify {
                topic: Topic::Decision,
                severity: Severity::Page,
                message,
                ..
            },
        ] => {
            assert_eq!(d, &decision);
            assert!(
                message.starts_with("PROMOTION_FAILED")
                    && message.contains("weight read back 5")
                    && message.contains("r0.5-hotfix"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    // Bit for bit again.
    let (again, decision_again) = replay_with(&plan, &out.inputs, 60.1, failed);
    assert_eq!(again, actions);
    assert_eq!(decision_again, decision);
}

#[test]
fn a_failed_promotion_changes_no_other_verdict_and_comes_once() {
    let plan = runbook();
    let failed = || Event::PromotionFailed {
        detail: "refused".into(),
    };
    // After a rollback there was no promotion to fail.
    let out = run(Case::new().canary(breach_from("rls_errors", 1.0, 33.0, 33.0)));
    let (actions, decision) = replay_with(&plan, &out.inputs, 34.0, failed());
    assert!(actions.is_empty(), "{actions:?}");
    assert!(matches!(decision.verdict, Verdict::Rollback { .. }));
    // Before the decision it means nothing either.
    let mut engine = Engine::new(plan.clone()).unwrap();
    engine.apply(&Input::Start { at: T0 }).unwrap();
    let actions = engine
        .apply(&Input::Event {
            at: T0 + 1,
            event: failed(),
        })
        .unwrap();
    assert!(!actions.iter().any(|a| matches!(a, Action::Decide(_))));
    assert!(engine.decision().is_none());
    // A second failure report leaves the first outcome.
    let out = run(Case::new());
    let mut inputs = out.inputs.clone();
    inputs.push(Input::Event {
        at: at_min(60.1),
        event: failed(),
    });
    let (actions, decision) = replay_with(&plan, &inputs, 60.2, failed());
    assert!(actions.is_empty(), "{actions:?}");
    assert_eq!(decision.at, at_min(60.1));
}

/// A notification's severity, message and the guardrails it names field by field.
type Notice = (Severity, String, Vec<String>);

/// The notifications on `topic`.
fn notices(out: &Outcome, topic: Topic) -> Vec<Notice> {
    out.actions
        .iter()
        .filter_map(|(_, a)| match a {
            Action::Notify {
                topic: t,
                severity,
                message,
                guardrails,
            } if *t == topic => Some((
                *severity,
                message.clone(),
                guardrails.iter().map(|g| g.name.clone()).collect(),
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn a_for_zero_breach_is_told_with_both_values_and_a_security_one_pages() {
    // rls_errors has `for = 0`: it triggers on its first breached evaluation, and is told as a
    // breach with both arms' values before the rollback.
    let out = run(Case::new().canary(breach_from("rls_errors", 3.0, 33.0, 33.0)));
    let breaches = notices(&out, Topic::Breach);
    assert_eq!(breaches.len(), 1, "{breaches:?}");
    let (severity, message, guardrails) = &breaches[0];
    assert_eq!(*severity, Severity::Critical);
    assert_eq!(guardrails, &vec!["rls_errors".to_owned()]);
    assert!(
        message.contains("rls_errors: canary value 3 breached `== 0`")
            && message.contains("baseline 0")
            && message.contains("rolling back"),
        "{message}"
    );
    let decisions = notices(&out, Topic::Decision);
    assert_eq!(decisions.len(), 1);
    assert_eq!(decisions[0].2, vec!["rls_errors".to_owned()]);
    let guardrail = out
        .actions
        .iter()
        .find_map(|(_, a)| match a {
            Action::Notify { guardrails, .. } if !guardrails.is_empty() => {
                Some(guardrails[0].clone())
            }
            _ => None,
        })
        .unwrap();
    assert_eq!(guardrail.canary, Some(Reading::value(3.0)));
    assert_eq!(guardrail.baseline, Some(Reading::value(0.0)));
    assert_eq!(guardrail.must.to_string(), "== 0");

    // A security-rollback guardrail pages at the highest severity, on the breach and the verdict.
    let out = run(Case::new().canary(breach_from("cross_tenant", 2.0, 40.0, 40.0)));
    let breaches = notices(&out, Topic::Breach);
    assert_eq!(breaches.len(), 1, "{breaches:?}");
    assert_eq!(breaches[0].0, Severity::Page);
    assert_eq!(breaches[0].2, vec!["cross_tenant".to_owned()]);
    assert_eq!(notices(&out, Topic::Decision)[0].0, Severity::Page);

    // With `for`, the breach is told when it begins (a warning naming the guardrail), then
    // again when it triggers.
    let out = run(Case::new().canary(breach_from("ttfv_p95", 1800.0, 20.0, 60.0)));
    let breaches = notices(&out, Topic::Breach);
    assert_eq!(
        breaches
            .iter()
            .map(|(s, _, g)| (*s, g.clone()))
            .collect::<Vec<_>>(),
        vec![
            (Severity::Warning, vec!["ttfv_p95".to_owned()]),
            (Severity::Critical, vec!["ttfv_p95".to_owned()]),
        ]
    );
    assert!(
        breaches[0]
            .1
            .contains("canary 1800, baseline 800 (must < 1500)"),
        "{}",
        breaches[0].1
    );
}

/// An Alertmanager alert at minute 10 naming `guardrail` with the `action` label.
fn alert(name: &str, guardrail: Option<&str>, action: Option<OnBreach>, security: bool) -> Event {
    Event::AlertFired {
        alert: name.into(),
        security,
        guardrail: guardrail.map(Into::into),
        action,
    }
}

fn notified(out: &Outcome, text: &str) -> bool {
    out.count(|a| matches!(a, Action::Notify { message, .. } if message.contains(text))) > 0
}

#[test]
fn an_alert_acts_as_its_guardrails_own_on_breach_from_the_plan() {
    let with_warn = || {
        let mut plan = runbook();
        plan.guardrails
            .push(guardrail("errors_warn", "q7", "< 5", 0.0, OnBreach::Warn));
        plan
    };
    let rolled_back = |reason: Reason| {
        (
            Some(10.0),
            Some(Verdict::Rollback {
                reasons: vec![reason],
            }),
        )
    };
    // (alert, verdict's minute and verdict, a notification that must be there)
    // The minute of the decision and the verdict.
    type Decided = (Option<f64>, Option<Verdict>);
    let cases: Vec<(Event, Decided, Option<&str>)> = vec![
        // A rollback guardrail's alert rolls back at once, naming the guardrail.
        (
            alert(
                "CanaryTtfvP95",
                Some("ttfv_p95"),
                Some(OnBreach::Rollback),
                false,
            ),
            rolled_back(Reason::AlertFired {
                alert: "CanaryTtfvP95".into(),
                security: false,
                guardrail: Some("ttfv_p95".into()),
            }),
            None,
        ),
        // Security comes from the plan, not from the labels.
        (
            alert("CanaryCrossTenant", Some("cross_tenant"), None, false),
            rolled_back(Reason::AlertFired {
                alert: "CanaryCrossTenant".into(),
                security: true,
                guardrail: Some("cross_tenant".into()),
            }),
            None,
        ),
        // A label claiming a gate does not stop a rollback guardrail; the mismatch is reported.
        (
            alert(
                "CanaryTtfvP95",
                Some("ttfv_p95"),
                Some(OnBreach::BlockPromotion),
                false,
            ),
            rolled_back(Reason::AlertFired {
                alert: "CanaryTtfvP95".into(),
                security: false,
                guardrail: Some("ttfv_p95".into()),
            }),
            Some("says `block-promotion`, but the plan says `rollback`"),
        ),
        // A gate's alert does not roll back: the gate fails at the decision, at T+60.
        (
            alert(
                "CanaryAnnP95",
                Some("ann_p95"),
                Some(OnBreach::BlockPromotion),
                false,
            ),
            (
                Some(60.0),
                Some(Verdict::Rollback {
                    reasons: vec![Reason::AlertFailedGate {
                        guardrail: "ann_p95".into(),
                        alert: "CanaryAnnP95".into(),
                    }],
                }),
            ),
            Some("fired for the promotion gate ann_p95: the canary keeps its traffic"),
        ),
        // Nor does a gate's alert whose label claims a rollback.
        (
            alert(
                "CanaryDbPool",
                Some("db_pool"),
                Some(OnBreach::Rollback),
                true,
            ),
            (
                Some(60.0),
                Some(Verdict::Rollback {
                    reasons: vec![Reason::AlertFailedGate {
                        guardrail: "db_pool".into(),
                        alert: "CanaryDbPool".into(),
                    }],
                }),
            ),
            Some("says `rollback`, but the plan says `block-promotion`"),
        ),
        // A warn guardrail's alert only notifies.
        (
            alert(
                "CanaryErrorsWarn",
                Some("errors_warn"),
                Some(OnBreach::Warn),
                false,
            ),
            (Some(60.0), Some(Verdict::Promote)),
            Some("warning only: Alertmanager alert CanaryErrorsWarn fired for errors_warn"),
        ),
        // An alert naming no guardrail of the plan rolls back, whatever its action label says,
        // and the unknown name is reported.
        (
            alert("Foreign", Some("nope"), Some(OnBreach::Warn), false),
            rolled_back(Reason::AlertFired {
                alert: "Foreign".into(),
                security: false,
                guardrail: None,
            }),
            Some("names guardrail nope, which is not in this run's plan"),
        ),
        (
            alert("RelayErrorBudgetBurn", None, None, true),
            rolled_back(Reason::AlertFired {
                alert: "RelayErrorBudgetBurn".into(),
                security: true,
                guardrail: None,
            }),
            None,
        ),
    ];
    for (event, (minute, verdict), note) in cases {
        let mut case = Case::new().event(10.0, event.clone());
        case.plan = with_warn();
        let out = run(case);
        assert_eq!(
            (out.decided_at_min, out.verdict.clone()),
            (minute, verdict),
            "{event:?}"
        );
        if minute == Some(60.0) {
            // The canary kept its 5 % until the decision.
            assert_eq!(out.weights().first(), Some(&(0.0, 5)), "{event:?}");
            assert_eq!(out.weights().len(), 2, "{event:?}: {:?}", out.weights());
        }
        if let Some(note) = note {
            assert!(notified(&out, note), "{event:?}: no notification {note:?}");
        }
        if let Some(Verdict::Rollback { reasons }) = &out.verdict {
            let security = reasons.iter().any(Reason::is_security);
            let paged = out.count(|a| {
                matches!(
                    a,
                    Action::Notify {
                        topic: Topic::Decision,
                        severity: Severity::Page,
                        ..
                    }
                )
            });
            assert_eq!(paged > 0, security, "{event:?}");
        }
    }
}

#[test]
fn a_gates_alert_is_a_reason_beside_its_own_failure_and_fails_a_pending_approval() {
    // The gate breaches at the decision too: both the value and the alert are evidence.
    let out = run(Case::new()
        .canary(breach_from("ann_p95", 450.0, 55.0, 60.0))
        .event(10.0, alert("CanaryAnnP95", Some("ann_p95"), None, false)));
    assert_eq!(out.decided_at_min, Some(60.0));
    let reasons = out.reasons();
    assert!(
        matches!(&reasons[..], [Reason::FailedAtDecision { guardrail: a, .. }, Reason::AlertFailedGate { guardrail: b, .. }] if a == "ann_p95" && b == "ann_p95"),
        "{reasons:?}"
    );
    assert_eq!(reasons[1].guardrail(), Some("ann_p95"));
    assert_eq!(
        reasons[1].to_string(),
        "ann_p95: Alertmanager alert CanaryAnnP95 fired during the window (block-promotion: the gate fails at the decision)"
    );

    // Waiting for manual approval, the decision is pending: the gate's alert fails it at once.
    let mut case = Case::new().event(61.0, alert("CanaryDbPool", Some("db_pool"), None, false));
    case.plan.approval = Approval::Manual { timeout: min(30.0) };
    let out = run(case);
    assert_eq!(out.decided_at_min, Some(61.0));
    assert_eq!(
        out.verdict,
        Some(Verdict::Rollback {
            reasons: vec![Reason::AlertFailedGate {
                guardrail: "db_pool".into(),
                alert: "CanaryDbPool".into(),
            }],
        })
    );
}

#[test]
fn a_journal_from_before_alerts_named_their_guardrail_replays_to_the_same_decision() {
    // Written by an earlier canary: the alert carries only its name and `security`.
    let mut text = journal::line(&journal::Header {
        format: journal::FORMAT,
        run_id: "r1".into(),
        plan: runbook(),
    });
    text.push_str(&journal::line(&Input::Start { at: T0 }));
    text.push_str(&format!(
        "{{\"input\":\"event\",\"at\":{},\"event\":{{\"event\":\"alert_fired\",\"alert\":\"CanaryAnnP95\",\"security\":true}}}}\n",
        at_min(7.0)
    ));
    let parsed = journal::parse(&text).unwrap();
    let replayed = canary_core::engine::replay(parsed.header.plan, &parsed.inputs).unwrap();
    let decision = replayed.decision.unwrap();
    assert_eq!(decision.at, at_min(7.0));
    assert_eq!(
        decision.verdict,
        Verdict::Rollback {
            reasons: vec![Reason::AlertFired {
                alert: "CanaryAnnP95".into(),
                security: true,
                guardrail: None,
            }],
        }
    );
    // The decision's text is what that canary wrote.
    let reason = serde_json::to_string(&decision.verdict.reasons()[0]).unwrap();
    assert_eq!(
        reason,
        r#"{"kind":"alert_fired","alert":"CanaryAnnP95","security":true}"#
    );
    // And a new journal line keeps the old shape for such an alert.
    let line = journal::line(&Input::Event {
        at: 1,
        event: alert("X", None, None, false),
    });
    assert_eq!(
        line.trim_end(),
        r#"{"input":"event","at":1,"event":{"event":"alert_fired","alert":"X","security":false}}"#
    );
}

/// The check-log lines of guardrail `name`, in order.
fn check_lines_of(out: &Outcome, name: &str) -> Vec<String> {
    out.actions
        .iter()
        .filter_map(|(_, a)| match a {
            Action::CheckLog { guardrails, .. } => guardrails
                .iter()
                .find(|g| g.name == name)
                .map(|g| g.check_line()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_compressed_run_speaks_the_runbooks_time() {
    // The same plan on the runbook's clock, the demo's 60-times compressed one and an odd 7.5:
    // what people read is the runbook's `for 5m`, `window 1h`, never the wall clock's seconds.
    for (scale, wall_window) in [(1.0, None), (60.0, Some("1m")), (7.5, Some("8m"))] {
        let plan = runbook().compressed(scale);
        // ttfv_p95 breaches from the runbook's T+12m: it triggers at T+17m, after its `for`.
        let from = 12.0 / scale;
        let out = run(Case {
            plan: plan.clone(),
            ..Case::new().canary(breach_from("ttfv_p95", 1800.0, from, 60.0))
        });
        let started = &notices(&out, Topic::Start)[0].1;
        match wall_window {
            None => assert!(started.ends_with("window 1h"), "{started}"),
            Some(wall) => assert!(
                started.ends_with(&format!(
                    "window 1h (runbook time; compressed {scale}×: {wall} of wall time)"
                )),
                "{started}"
            ),
        }
        let breaches = notices(&out, Topic::Breach);
        assert!(
            breaches[0].1.ends_with("; rolls back if it lasts 5m"),
            "{scale}: {}",
            breaches[0].1
        );
        let reason = out.reasons()[0].to_string();
        assert_eq!(
            reason, "ttfv_p95: canary value 1800 breached `< 1500` for 5m (rollback)",
            "at {scale}"
        );
        assert!(breaches[1].1.starts_with(&reason), "{}", breaches[1].1);
        let lines = check_lines_of(&out, "ttfv_p95");
        assert_eq!(lines.len(), 3, "T+5m, T+10m, T+15m: {lines:?}");
        for line in &lines {
            assert!(line.contains("(must < 1500 for 5m, rollback)"), "{line}");
        }
        // The summaries keep the plan's own `for` (the run's clock) and say which clock it is.
        let guardrail = out
            .actions
            .iter()
            .find_map(|(_, a)| match a {
                Action::Decide(d) => d.guardrails.iter().find(|g| g.name == "ttfv_p95").cloned(),
                _ => None,
            })
            .unwrap();
        assert_eq!(guardrail.for_, plan.guardrails[0].for_);
        assert_eq!(guardrail.runbook_for().to_string(), "5m");
        // The decision's reasons serialise as before in production (no `time_scale`).
        let json = serde_json::to_value(&out.reasons()[0]).unwrap();
        assert_eq!(json.get("time_scale").is_some(), scale != 1.0, "{json}");
    }
}

#[test]
fn a_compressed_approval_is_waited_for_in_the_runbooks_time() {
    let mut plan = runbook();
    plan.burst = None;
    plan.probes = false;
    plan.approval = Approval::Manual { timeout: min(30.0) };
    let plan = plan.compressed(60.0);
    let out = run(Case {
        plan,
        ..Case::new()
    });
    assert!(
        notified(&out, "`canary approve` within 30m to promote"),
        "{:?}",
        notices(&out, Topic::Decision)
    );
    assert_eq!(out.reasons()[0].to_string(), "no approval within 30m");

    // The controller down past the window: how long, in the runbook's time.
    let mut engine = started_and_abandoned_at(runbook().compressed(60.0), 0.5);
    engine.apply(&Input::Resume { at: at_min(1.25) }).unwrap();
    let reason = engine.decision().expect("decided").verdict.reasons()[0].to_string();
    assert!(
        reason.starts_with("the controller was down for 45m until after the end"),
        "{reason}"
    );
}

#[test]
fn check_lines_show_values_and_thresholds_in_their_unit() {
    let mut plan = runbook();
    plan.guardrails[0].unit = Some("ms".into());
    plan.guardrails[2].unit = Some("%".into());
    let out = run(Case {
        plan,
        ..Case::new().canary(|g, m| (g == "ttfv_p95" && m >= 7.0).then(|| Reading::value(812.5)))
    });
    assert_eq!(
        check_lines_of(&out, "ttfv_p95")[..2],
        [
            "✓ ttfv_p95       canary     800 ms  baseline     800 ms  (must < 1500 ms for 5m, rollback)",
            "✓ ttfv_p95       canary   812.5 ms  baseline     800 ms  (must < 1500 ms for 5m, rollback)",
        ]
    );
    assert!(
        check_lines_of(&out, "sse_success")[0]
            .contains("canary     99.9 %  baseline     99.9 %  (must >= 99.6 % for 5m"),
        "{:?}",
        check_lines_of(&out, "sse_success")
    );
    // Without a unit, as before.
    assert!(
        check_lines_of(&out, "db_pool")[0]
            .contains("canary         40  baseline         40  (must < 80, block-promotion)")
    );
}
