//! How long the engine takes to run a whole canary: the runbook's six guardrails over a
//! 60-minute window at a 1 s evaluation interval (3,600 rounds), healthy to the end.
//!
//! `cargo bench -p canary-core --bench engine_run` — prints the median of 30 runs.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is a test failure

use std::time::{Duration, Instant};

use canary_core::Engine;
use canary_core::engine::{Action, GuardrailReading, Input, Reading};
use canary_core::plan::{
    Approval, Arm, Arms, Guardrail, OnBreach, OnInconclusive, OnNoData, Plan, Step,
};

fn plan() -> Plan {
    let g = |name: &str, must: &str, for_s: u64, on_breach| Guardrail {
        name: name.into(),
        query: "q".into(),
        must: must.parse().unwrap(),
        for_: Duration::from_secs(for_s),
        on_breach,
        on_no_data: OnNoData::Inconclusive,
        min_samples: None,
        samples_query: None,
        unit: None,
    };
    Plan {
        service: "relay".into(),
        arms: Arms {
            baseline: Arm {
                name: "r0.5-hotfix".into(),
                selector: "{version=\"r0.5\"}".into(),
            },
            canary: Arm {
                name: "main".into(),
                selector: "{version=\"r1\"}".into(),
            },
        },
        steps: vec![Step {
            weight: 5,
            hold: Duration::from_secs(3600),
        }],
        evaluation_interval: Duration::from_secs(1),
        check_log_interval: Duration::from_secs(300),
        checkpoints: vec![
            Duration::from_secs(900),
            Duration::from_secs(1800),
            Duration::from_secs(3600),
        ],
        guardrails: vec![
            g("ttfv_p95", "< 1500", 300, OnBreach::Rollback),
            g("rls_errors", "== 0", 0, OnBreach::Rollback),
            g("sse_success", ">= 99.6", 300, OnBreach::Rollback),
            g("cross_tenant", "== 0", 0, OnBreach::SecurityRollback),
            g("ann_p95", "< 200", 0, OnBreach::BlockPromotion),
            g("db_pool", "< 80", 0, OnBreach::BlockPromotion),
        ],
        burst: None,
        probes: false,
        approval: Approval::Auto,
        on_inconclusive: OnInconclusive::Rollback,
        max_query_errors: 5,
        time_scale: 1.0,
        comparisons: Vec::new(),
        scoring: Default::default(),
    }
}

fn run_once(plan: &Plan) -> (usize, Duration) {
    let values = [800.0, 0.0, 99.9, 0.0, 120.0, 40.0];
    let names: Vec<String> = plan.guardrails.iter().map(|g| g.name.clone()).collect();
    let started = Instant::now();
    let mut engine = Engine::new(plan.clone()).unwrap();
    let t0 = 1_760_000_000_000;
    let mut actions = engine.apply(&Input::Start { at: t0 }).unwrap();
    let mut rounds = 0;
    loop {
        let mut next = Vec::new();
        for a in actions.drain(..) {
            if let Action::Evaluate { round } = a {
                rounds += 1;
                let readings = names
                    .iter()
                    .zip(values)
                    .map(|(n, v)| GuardrailReading {
                        guardrail: n.clone(),
                        canary: Reading::value(v),
                        baseline: Reading::value(v),
                    })
                    .collect();
                next.extend(
                    engine
                        .apply(&Input::Observations {
                            at: round,
                            round,
                            readings,
                            comparisons: Vec::new(),
                        })
                        .unwrap(),
                );
            }
        }
        actions = next;
        if engine.is_decided() {
            break;
        }
        if actions.is_empty() {
            match engine.next_wakeup() {
                Some(t) => actions = engine.apply(&Input::Tick { at: t }).unwrap(),
                None => break,
            }
        }
    }
    assert!(engine.is_decided());
    (rounds, started.elapsed())
}

fn main() {
    let plan = plan();
    let mut times: Vec<Duration> = Vec::new();
    let mut rounds = 0;
    for _ in 0..30 {
        let (r, t) = run_once(&plan);
        rounds = r;
        times.push(t);
    }
    times.sort();
    let median = times[times.len() / 2];
    println!(
        "engine: {rounds} rounds × 6 guardrails, 60-minute window at 1 s: median {:.2} ms (min {:.2}, max {:.2}) over {} runs; target < 50 ms",
        median.as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3,
        times.len()
    );
}
