//! The comparisons' operating characteristics and cost (issue 17's report in docs/BENCHMARKS.md).
//!
//! `cargo bench -p canary-core --bench judge` prints, on seeded simulated runs:
//!
//! 1. Latency: per regression size (0 %, the A/A case, then 5, 10, 20, 50 %), how often a run
//!    is rolled back and how soon, by the engine's sequential sign test and by Kayenta's way —
//!    a Mann–Whitney U test of all readings so far, judged at every interval — on the same runs.
//!    Also the Mann–Whitney test judged once, at the end of the hour (valid, but an hour late).
//! 2. Errors: the baseline fails 0.1 % of its requests, the canary 0.1 % (A/A), 0.2 % or 0.5 %:
//!    the engine's sequential count test against a Mann–Whitney of per-interval error rates
//!    judged every interval (Kayenta) and the exact rate test judged every interval.
//! 3. Cost: one judging round for 20 comparisons (10 continuous, 10 counts) in the engine.
//!
//! A run is an hour at one look every 30 s (120 looks) at a 5 % split, α = 0.05 for every test.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench: a failure is a failure

use std::time::{Duration, Instant};

use canary_core::Engine;
use canary_core::engine::{
    Action, ComparisonReading, GuardrailReading, Input, Measurement, Reading,
};
use canary_core::judge::counts::{self, Counts, RateOutcome};
use canary_core::judge::rank::{self, Method};
use canary_core::judge::rng::SplitMix64 as Rng;
use canary_core::judge::sequential::{CountSequence, SignSequence};
use canary_core::judge::{Alternative, Direction, Effect, Scoring};
use canary_core::plan::{
    Approval, Arm, Arms, CompareSpec, Guardrail, Measure, OnBreach, OnInconclusive, OnNoData, Plan,
    Step,
};

const LOOKS: usize = 120;
const ALPHA: f64 = 0.05;

/// When each method first rolled back, per run (`None`: never in the hour).
#[derive(Default)]
struct Method3 {
    sequential: Vec<Option<usize>>,
    every_look: Vec<Option<usize>>,
    once: Vec<Option<usize>>,
    /// Latency only: Mann–Whitney judged every interval at α / 120 (Bonferroni: valid, and
    /// what fixing Kayenta's way naively costs).
    bonferroni: Vec<Option<usize>>,
}

/// `rate % (median minute, 90th percentile minute)` of the runs a method rolled back.
fn summary(looks: &[Option<usize>]) -> String {
    let mut caught: Vec<usize> = looks.iter().flatten().copied().collect();
    caught.sort_unstable();
    let rate = 100.0 * caught.len() as f64 / looks.len() as f64;
    if caught.is_empty() {
        return format!("{rate:.1} %");
    }
    let at = |q: f64| caught[((caught.len() - 1) as f64 * q).round() as usize] as f64 / 2.0;
    format!("{rate:.1} % (T+{:.1}m, p90 T+{:.1}m)", at(0.5), at(0.9))
}

/// One run of per-interval latency readings (a p95 per 30 s): log-normal around 800 ms with
/// `noise` (its log standard deviation), a slow load drift both arms share, the canary `worse`.
fn latency_runs(seed: u64, runs: usize, worse: f64, noise: f64) -> Method3 {
    let mut rng = Rng(seed);
    let mut out = Method3::default();
    for _ in 0..runs {
        let mut sign = SignSequence::new(Direction::Increase, Effect::NONE, ALPHA).unwrap();
        let (mut canary, mut baseline) = (Vec::new(), Vec::new());
        let (mut sequential, mut every_look, mut bonferroni) = (None, None, None);
        let phase = rng.uniform() * 6.3;
        for look in 1..=LOOKS {
            let load = 1.0 + 0.3 * (phase + look as f64 / 20.0).sin();
            let c = 800.0 * load * worse * (noise * rng.normal()).exp();
            let b = 800.0 * load * (noise * rng.normal()).exp();
            canary.push(c);
            baseline.push(b);
            sign.observe(c, b).unwrap();
            if sequential.is_none() && sign.first_crossing().is_some() {
                sequential = Some(look);
            }
            if every_look.is_none() || bonferroni.is_none() {
                let p = mwu_greater(&canary, &baseline);
                if every_look.is_none() && p <= ALPHA {
                    every_look = Some(look);
                }
                if bonferroni.is_none() && p <= ALPHA / LOOKS as f64 {
                    bonferroni = Some(look);
                }
            }
        }
        let once = (mwu_greater(&canary, &baseline) <= ALPHA).then_some(LOOKS);
        out.sequential.push(sequential);
        out.every_look.push(every_look);
        out.once.push(once);
        out.bonferroni.push(bonferroni);
    }
    out
}

fn mwu_greater(canary: &[f64], baseline: &[f64]) -> f64 {
    rank::mann_whitney(canary, baseline, Alternative::Greater, Method::Auto)
        .unwrap()
        .p_value
}

/// One run of errors out of requests: 2,000 requests per 30 s (±20 %), 5 % to the canary.
fn error_runs(seed: u64, runs: usize, canary_rate: f64) -> Method3 {
    let baseline_rate = 0.001;
    let mut rng = Rng(seed);
    let mut out = Method3::default();
    for _ in 0..runs {
        let mut sequence =
            CountSequence::new(Direction::Increase, Effect::NONE, ALPHA, 1.0).unwrap();
        let (mut rates_c, mut rates_b) = (Vec::new(), Vec::new());
        let (mut k1, mut t1, mut k2, mut t2) = (0u64, 0.0, 0u64, 0.0);
        let (mut sequential, mut kayenta, mut exact) = (None, None, None);
        for look in 1..=LOOKS {
            let total = 2000.0 * (1.0 + 0.2 * rng.normal()).max(0.2);
            let (r1, r2) = ((total * 0.05).round(), (total * 0.95).round());
            let (e1, e2) = (
                rng.poisson(r1 * canary_rate),
                rng.poisson(r2 * baseline_rate),
            );
            sequence
                .observe(Counts::new(e1, r1), Counts::new(e2, r2))
                .unwrap();
            if sequential.is_none() && sequence.first_crossing().is_some() {
                sequential = Some(look);
            }
            rates_c.push(e1 as f64 / r1);
            rates_b.push(e2 as f64 / r2);
            if kayenta.is_none() && mwu_greater(&rates_c, &rates_b) <= ALPHA {
                kayenta = Some(look);
            }
            (k1, t1, k2, t2) = (k1 + e1, t1 + r1, k2 + e2, t2 + r2);
            if exact.is_none() {
                let outcome = counts::rate_ratio(
                    Counts::new(k1, t1),
                    Counts::new(k2, t2),
                    1.0,
                    Alternative::Greater,
                    0.95,
                )
                .unwrap();
                if let RateOutcome::Tested(t) = outcome
                    && t.p_value <= ALPHA
                {
                    exact = Some(look);
                }
            }
        }
        out.sequential.push(sequential);
        out.every_look.push(kayenta);
        // The third column for errors: the exact rate test judged at every look.
        out.once.push(exact);
    }
    out
}

/// The runbook's window at 30 s with one gating guardrail and `n` comparisons of each kind.
fn plan(n: usize) -> Plan {
    let continuous = (0..n).map(|i| CompareSpec {
        name: format!("latency_{i}"),
        measure: Measure::Continuous { query: "q".into() },
        direction: canary_core::plan::Direction::Increase,
        effect: Effect::Relative(0.1),
        critical: false,
        weight: 1.0,
        group: "latency".into(),
        alpha: ALPHA,
        must_have_data: false,
    });
    let counts = (0..n).map(|i| CompareSpec {
        name: format!("errors_{i}"),
        measure: Measure::Counts {
            events: "e".into(),
            exposure: "x".into(),
        },
        direction: canary_core::plan::Direction::Increase,
        effect: Effect::Relative(0.5),
        critical: false,
        weight: 1.0,
        group: "errors".into(),
        alpha: ALPHA,
        must_have_data: false,
    });
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
        evaluation_interval: Duration::from_secs(30),
        check_log_interval: Duration::from_secs(300),
        checkpoints: vec![],
        guardrails: vec![Guardrail {
            name: "ttfv_p95".into(),
            query: "q".into(),
            must: "< 1500".parse().unwrap(),
            for_: Duration::from_secs(300),
            on_breach: OnBreach::Rollback,
            on_no_data: OnNoData::Inconclusive,
            min_samples: None,
            samples_query: None,
            unit: None,
        }],
        burst: None,
        probes: false,
        approval: Approval::Auto,
        on_inconclusive: OnInconclusive::Rollback,
        max_query_errors: 5,
        time_scale: 1.0,
        comparisons: continuous.chain(counts).collect(),
        scoring: Scoring::default(),
    }
}

/// A healthy hour through the engine; returns the time spent in applying observations and
/// the number of rounds.
fn engine_run(plan: &Plan, rng: &mut Rng) -> (Duration, usize) {
    let mut engine = Engine::new(plan.clone()).unwrap();
    let t0 = 1_760_000_000_000;
    let mut actions = engine.apply(&Input::Start { at: t0 }).unwrap();
    let (mut spent, mut rounds) = (Duration::ZERO, 0);
    let mut requests = 0.0;
    loop {
        let mut next = Vec::new();
        for a in actions.drain(..) {
            if let Action::Evaluate { round } = a {
                rounds += 1;
                requests += 2000.0;
                let comparisons = plan
                    .comparisons
                    .iter()
                    .map(|c| {
                        let mut arm = |share: f64| match c.measure {
                            Measure::Counts { .. } => Measurement::Counts {
                                events: Reading::value((requests * share * 0.001).round()),
                                exposure: Reading::value(requests * share),
                            },
                            _ => Measurement::Continuous {
                                value: Reading::value(800.0 * (0.25 * rng.normal()).exp()),
                            },
                        };
                        ComparisonReading {
                            comparison: c.name.clone(),
                            canary: arm(0.05),
                            baseline: arm(0.95),
                        }
                    })
                    .collect();
                let input = Input::Observations {
                    at: round,
                    round,
                    readings: vec![GuardrailReading {
                        guardrail: "ttfv_p95".into(),
                        canary: Reading::value(800.0),
                        baseline: Reading::value(800.0),
                    }],
                    comparisons,
                };
                let started = Instant::now();
                next.extend(engine.apply(&input).unwrap());
                spent += started.elapsed();
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
    (spent, rounds)
}

fn main() {
    let runs: usize = std::env::var("JUDGE_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    println!("seeded simulations, {runs} runs of {LOOKS} looks (an hour at 30 s), α = {ALPHA}");
    for noise in [0.25, 0.10] {
        println!(
            "\nlatency, per-interval p95 with ±{:.0} % noise (log sd {noise}): rolled back (median, p90 minute of detection)",
            noise * 100.0
        );
        println!(
            "| canary worse by | sequential sign test (canary) | Mann–Whitney judged every interval (Kayenta) | Mann–Whitney every interval at α/120 | Mann–Whitney once at T+60 |"
        );
        println!("|---|---|---|---|---|");
        for (i, worse) in [1.0, 1.05, 1.10, 1.20, 1.50].into_iter().enumerate() {
            let m = latency_runs(0x5EED_0000 + i as u64, runs, worse, noise);
            println!(
                "| {:.0} % | {} | {} | {} | {} |",
                (worse - 1.0) * 100.0,
                summary(&m.sequential),
                summary(&m.every_look),
                summary(&m.bonferroni),
                summary(&m.once)
            );
        }
    }
    println!("\nerrors, baseline 0.1 % of 1,900 requests per 30 s, canary 5 % of traffic");
    println!(
        "| canary error rate | sequential count test (canary) | Mann–Whitney of per-interval rates judged every interval (Kayenta) | exact rate test judged every interval |"
    );
    println!("|---|---|---|---|");
    for (i, rate) in [0.001, 0.002, 0.005].into_iter().enumerate() {
        let m = error_runs(0xE_0000 + i as u64, runs, rate);
        println!(
            "| {:.1} % | {} | {} | {} |",
            rate * 100.0,
            summary(&m.sequential),
            summary(&m.every_look),
            summary(&m.once)
        );
    }

    let with = plan(10);
    let without = plan(0);
    let mut rng = Rng(0xC057);
    let mut per_round = Vec::new();
    for _ in 0..30 {
        let (spent_with, rounds) = engine_run(&with, &mut rng);
        let (spent_without, _) = engine_run(&without, &mut rng);
        per_round
            .push((spent_with.as_secs_f64() - spent_without.as_secs_f64()) / rounds as f64 * 1e6);
    }
    per_round.sort_by(f64::total_cmp);
    println!(
        "\ncost: one judging round of 20 comparisons (10 continuous, 10 counts) in the engine: median {:.1} µs (min {:.1}, max {:.1}) over 30 healthy hours of 120 rounds",
        per_round[per_round.len() / 2],
        per_round[0],
        per_round[per_round.len() - 1]
    );
}
