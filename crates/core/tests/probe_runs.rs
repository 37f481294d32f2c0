//! An isolation-probe run as the engine hears it: its verdict travels as a type, one rule says
//! whether a run proves isolation, and journals written before the verdict was recorded still
//! read and replay to the decision they were written with.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is a test failure

use std::time::Duration;

use canary_core::engine::{Action, GuardrailReading, Input, Reading, replay};
use canary_core::journal::{self, FORMAT, Header};
use canary_core::plan::{
    Approval, Arm, Arms, Guardrail, OnBreach, OnInconclusive, OnNoData, Plan, Step,
};
use canary_core::verdict::{ProbeRun, ProbeVerdict};
use canary_core::{Engine, Event};

const T0: i64 = 1_760_000_000_000;

fn run(verdict: ProbeVerdict, pairs: u32, leaks: u32) -> ProbeRun {
    ProbeRun {
        verdict,
        pairs,
        leaks,
    }
}

#[test]
fn a_probe_event_reads_with_or_without_its_verdict() {
    use ProbeVerdict::*;
    let cases = [
        // Before the verdict was recorded: `pairs` was 0 unless the run was clean.
        (
            r#"{"event":"probes_completed","pairs":20,"leaks":0}"#,
            run(Clean, 20, 0),
        ),
        (
            r#"{"event":"probes_completed","pairs":0,"leaks":0}"#,
            run(Unproven, 0, 0),
        ),
        (
            r#"{"event":"probes_completed","pairs":0,"leaks":2}"#,
            run(Leaked, 0, 2),
        ),
        // With it.
        (
            r#"{"event":"probes_completed","verdict":"clean","pairs":20,"leaks":0}"#,
            run(Clean, 20, 0),
        ),
        (
            r#"{"event":"probes_completed","verdict":"unproven","pairs":20,"leaks":0}"#,
            run(Unproven, 20, 0),
        ),
        (
            r#"{"event":"probes_completed","verdict":"leaked","pairs":20,"leaks":1}"#,
            run(Leaked, 20, 1),
        ),
    ];
    for (json, expected) in cases {
        let event: Event = serde_json::from_str(json).unwrap();
        assert_eq!(event, Event::ProbesCompleted(expected), "{json}");
    }
}

#[test]
fn a_probe_event_is_written_with_its_verdict() {
    let event = Event::ProbesCompleted(run(ProbeVerdict::Unproven, 20, 0));
    let json = serde_json::to_string(&event).unwrap();
    assert_eq!(
        json,
        r#"{"event":"probes_completed","verdict":"unproven","pairs":20,"leaks":0}"#
    );
    assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), event);
}

#[test]
fn an_unknown_probe_verdict_names_the_accepted_ones() {
    let err = serde_json::from_str::<Event>(
        r#"{"event":"probes_completed","verdict":"fine","pairs":20,"leaks":0}"#,
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("\"fine\" is not one of clean, leaked, unproven"),
        "{err}"
    );
}

#[test]
fn only_a_clean_run_over_some_pairs_proves_isolation() {
    use ProbeVerdict::*;
    let cases = [
        (run(Clean, 20, 0), true),
        (run(Clean, 0, 0), false),
        (run(Unproven, 20, 0), false),
        (run(Leaked, 20, 1), false),
        // A contradiction (clean yet leaking) never proves anything.
        (run(Clean, 20, 1), false),
    ];
    for (probe_run, proves) in cases {
        assert_eq!(probe_run.proves_isolation(), proves, "{probe_run:?}");
    }
}

/// Two minutes at 5 %, one guardrail, probes and no burst.
fn plan() -> Plan {
    Plan {
        service: "relay".into(),
        arms: Arms {
            baseline: Arm {
                name: "stable".into(),
                selector: r#"{version="r0"}"#.into(),
            },
            canary: Arm {
                name: "next".into(),
                selector: r#"{version="r1"}"#.into(),
            },
        },
        steps: vec![Step {
            weight: 5,
            hold: Duration::from_secs(120),
        }],
        evaluation_interval: Duration::from_secs(30),
        check_log_interval: Duration::from_secs(60),
        checkpoints: vec![],
        guardrails: vec![Guardrail {
            name: "errors".into(),
            query: "q".into(),
            must: "< 1".parse().unwrap(),
            for_: Duration::ZERO,
            on_breach: OnBreach::Rollback,
            on_no_data: OnNoData::Inconclusive,
            min_samples: None,
            samples_query: None,
            unit: None,
        }],
        burst: None,
        probes: true,
        approval: Approval::Auto,
        on_inconclusive: OnInconclusive::Rollback,
        max_query_errors: 5,
        time_scale: 1.0,
        comparisons: Vec::new(),
        scoring: Default::default(),
    }
}

/// Runs the plan on a one-second clock, answering every evaluation with a passing reading and
/// every probe request, five seconds later, with `probe_event` (an event's JSON, journalled as
/// given). Returns the journal's text.
fn journal_with(probe_event: &str) -> String {
    journal_answering(plan(), probe_event, 5_000).text
}

/// A run of [`journal_with`]'s kind, on `plan`, each probe request answered `after_ms` later.
struct Answered {
    text: String,
    /// Probe runs asked for.
    requests: usize,
    /// The most probe runs in flight at once.
    most_in_flight: usize,
}

fn journal_answering(plan: Plan, probe_event: &str, after_ms: i64) -> Answered {
    let window = plan.window().as_millis() as i64;
    let mut requests = 0;
    let mut most_in_flight = 0;
    let mut engine = Engine::new(plan.clone()).unwrap();
    let mut text = journal::line(&Header {
        format: FORMAT,
        run_id: "r1".into(),
        plan,
    });
    let mut due: Vec<i64> = Vec::new();
    let mut feed = |engine: &mut Engine, input: Input, line: String, due: &mut Vec<i64>| {
        text.push_str(&line);
        let mut actions = engine.apply(&input).unwrap();
        while let Some(action) = actions.pop() {
            match action {
                Action::Evaluate { round } => {
                    let answer = Input::Observations {
                        at: input.at(),
                        round,
                        readings: vec![GuardrailReading {
                            guardrail: "errors".into(),
                            canary: Reading::value(0.0),
                            baseline: Reading::value(0.0),
                        }],
                        comparisons: Vec::new(),
                    };
                    text.push_str(&journal::line(&answer));
                    actions.extend(engine.apply(&answer).unwrap());
                }
                Action::RunProbes => {
                    due.push(input.at() + after_ms);
                    requests += 1;
                    most_in_flight = most_in_flight.max(due.len());
                }
                _ => {}
            }
        }
    };
    let start = Input::Start { at: T0 };
    feed(&mut engine, start.clone(), journal::line(&start), &mut due);
    let mut now = T0;
    while !engine.is_decided() && now < T0 + window + 180_000 {
        now += 1_000;
        if let Some(i) = due.iter().position(|t| *t <= now) {
            due.remove(i);
            let line = format!("{{\"input\":\"event\",\"at\":{now},\"event\":{probe_event}}}\n");
            let input: Input = serde_json::from_str(&line).unwrap();
            feed(&mut engine, input, line, &mut due);
        }
        let tick = Input::Tick { at: now };
        feed(&mut engine, tick.clone(), journal::line(&tick), &mut due);
    }
    assert!(engine.is_decided(), "the run did not end");
    Answered {
        text,
        requests,
        most_in_flight,
    }
}

fn verdict_of(journal_text: &str) -> &'static str {
    let journal = journal::parse(journal_text).unwrap();
    replay(journal.header.plan, &journal.inputs)
        .unwrap()
        .decision
        .unwrap()
        .verdict
        .name()
}

#[test]
fn journals_without_the_probe_verdict_replay_to_their_decision() {
    let cases = [
        // (the event as written before the verdict was recorded, the decision then)
        (
            r#"{"event":"probes_completed","pairs":20,"leaks":0}"#,
            "PROMOTE",
        ),
        // An unproven run was written with no pairs.
        (
            r#"{"event":"probes_completed","pairs":0,"leaks":0}"#,
            "INCONCLUSIVE",
        ),
    ];
    for (old, decision) in cases {
        let old_journal = journal_with(old);
        assert!(old_journal.contains(old), "{old_journal}");
        assert_eq!(verdict_of(&old_journal), decision, "{old}");
    }
}

#[test]
fn the_probe_verdict_decides_whether_a_run_counts() {
    let cases = [
        (
            r#"{"event":"probes_completed","verdict":"clean","pairs":20,"leaks":0}"#,
            "PROMOTE",
        ),
        // Pairs were probed, but the run could not prove isolation.
        (
            r#"{"event":"probes_completed","verdict":"unproven","pairs":20,"leaks":0}"#,
            "INCONCLUSIVE",
        ),
    ];
    for (event, decision) in cases {
        assert_eq!(verdict_of(&journal_with(event)), decision, "{event}");
    }
}

#[test]
fn a_probe_run_that_outlasts_the_check_interval_is_not_joined_by_another() {
    // Ten minutes with a check every minute: nine probe runs when each answers in seconds.
    let mut long = plan();
    long.steps[0].hold = Duration::from_secs(600);
    let clean = r#"{"event":"probes_completed","verdict":"clean","pairs":20,"leaks":0}"#;
    let quick = journal_answering(long.clone(), clean, 5_000);
    assert_eq!((quick.requests, quick.most_in_flight), (9, 1));
    // Each run takes 90 s, longer than the interval: the next waits for the check after it
    // answered (T+1m, T+3m, T+5m, T+7m, T+9m), and the run still promotes.
    let slow = journal_answering(long, clean, 90_000);
    assert_eq!((slow.requests, slow.most_in_flight), (5, 1));
    assert_eq!(verdict_of(&slow.text), "PROMOTE");
}
