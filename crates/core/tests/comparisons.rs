//! Comparisons in the engine: the canary judged against the baseline at every evaluation, on a
//! virtual clock, with readings from a seeded generator.
//!
//! Each case is a plan and what each comparison reads per arm at every look; `run` plays it
//! through the engine the way the runtime does and returns the journal and what happened.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is a test failure

use std::collections::BTreeMap;
use std::time::Duration;

use canary_core::engine::{
    Action, ComparisonReading, GuardrailReading, Input, Measurement, Reading, Severity, Topic,
    replay,
};
use canary_core::journal::{self, FORMAT, Header};
use canary_core::plan::{
    Approval, Arm, Arms, CompareSpec, Direction, Guardrail, Measure, OnBreach, OnInconclusive,
    OnNoData, Plan, Step,
};
use canary_core::verdict::{Decision, Reason, Verdict};
use canary_core::{Engine, Event};
use canary_judge::{Classification, Effect, Evidence, Scoring};

const T0: i64 = 1_760_000_000_000;

use canary_judge::rng::SplitMix64 as Rng;

fn latency(name: &str, critical: bool) -> CompareSpec {
    CompareSpec {
        name: name.into(),
        measure: Measure::Continuous {
            query: "histogram_quantile(0.95, sum by (le) (rate(ttfv_ms_bucket[30s])))".into(),
        },
        direction: Direction::Increase,
        effect: Effect::Relative(0.1),
        critical,
        weight: CompareSpec::DEFAULT_WEIGHT,
        group: "latency".into(),
        alpha: CompareSpec::DEFAULT_ALPHA,
        must_have_data: false,
    }
}

fn error_rate(name: &str, critical: bool) -> CompareSpec {
    CompareSpec {
        name: name.into(),
        measure: Measure::Counts {
            events: r#"sum(http_requests_total{code=~"5.."})"#.into(),
            exposure: "sum(http_requests_total)".into(),
        },
        direction: Direction::Increase,
        effect: Effect::NONE,
        critical,
        weight: CompareSpec::DEFAULT_WEIGHT,
        group: "errors".into(),
        alpha: CompareSpec::DEFAULT_ALPHA,
        must_have_data: false,
    }
}

/// 5 % for 60 minutes, evaluated every 30 s (120 looks), one gating guardrail that always
/// passes, and `comparisons`.
fn plan(comparisons: Vec<CompareSpec>) -> Plan {
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
            hold: Duration::from_secs(3600),
        }],
        evaluation_interval: Duration::from_secs(30),
        check_log_interval: Duration::from_secs(300),
        checkpoints: vec![],
        guardrails: vec![Guardrail {
            name: "ann_p95".into(),
            query: "q".into(),
            must: "< 200".parse().unwrap(),
            for_: Duration::ZERO,
            on_breach: OnBreach::BlockPromotion,
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
        comparisons,
        scoring: Scoring::default(),
    }
}

/// What a comparison reads at a look (1 for the first evaluation): `(canary, baseline)`.
type Readings = Box<dyn FnMut(&str, u64) -> (Measurement, Measurement)>;

/// Continuous readings: per-interval p95s around 800 ms that move together with the load
/// (as both arms do under one load balancer), each with its own noise; the canary's scaled
/// by `slower[name]` (1 when absent).
fn latencies(seed: u64, slower: BTreeMap<&'static str, f64>) -> Readings {
    let mut rng = Rng(seed);
    Box::new(move |name, _look| {
        let load = (0.2 * rng.normal()).exp();
        let factor = slower.get(name).copied().unwrap_or(1.0);
        let baseline = 800.0 * load * (0.25 * rng.normal()).exp();
        let canary = 800.0 * load * factor * (0.25 * rng.normal()).exp();
        (
            Measurement::Continuous {
                value: Reading::value(canary),
            },
            Measurement::Continuous {
                value: Reading::value(baseline),
            },
        )
    })
}

/// Cumulative request and error counters per arm at a 5 % split of 50 requests/s, sampled
/// every 30 s. The baseline fails 0.1 % of its requests, the canary `canary_rate`. Like real
/// exporters, the canary's error counter has no series until its first error, the baseline's
/// counters start from what they counted before the run, and the baseline restarts (its
/// counters drop to 0) at look 50.
fn error_counts(seed: u64, canary_rate: f64) -> Readings {
    let mut rng = Rng(seed);
    let (mut canary_requests, mut canary_errors) = (0u64, 0u64);
    let (mut baseline_requests, mut baseline_errors) = (2_000_000u64, 2_100u64);
    Box::new(move |_name, look| {
        let requests = 1500;
        let canary = rng.binomial(requests, 0.05);
        canary_requests += canary;
        canary_errors += rng.binomial(canary, canary_rate);
        if look == 50 {
            (baseline_requests, baseline_errors) = (0, 0);
        }
        let baseline = requests - canary;
        baseline_requests += baseline;
        baseline_errors += rng.binomial(baseline, 0.001);
        let counters = |events: u64, exposure: u64, lazy: bool| Measurement::Counts {
            events: if lazy && events == 0 {
                Reading::NoData
            } else {
                Reading::value(events as f64)
            },
            exposure: Reading::value(exposure as f64),
        };
        (
            counters(canary_errors, canary_requests, true),
            counters(baseline_errors, baseline_requests, false),
        )
    })
}

/// Both at once: latency comparisons read `latencies`, counts comparisons `counts`.
fn mixed(mut latencies: Readings, mut counts: Readings) -> Readings {
    Box::new(move |name, look| {
        if name.starts_with("error") {
            counts(name, look)
        } else {
            latencies(name, look)
        }
    })
}

struct Outcome {
    inputs: Vec<Input>,
    actions: Vec<Action>,
    decision: Decision,
    engine: Engine,
}

impl Outcome {
    fn minute(&self) -> f64 {
        (self.decision.at - T0) as f64 / 60_000.0
    }

    fn judgement(&self, name: &str) -> &canary_judge::Judgement {
        self.decision
            .comparisons
            .iter()
            .find(|j| j.name == name)
            .unwrap()
    }

    fn notices(&self, severity: Severity) -> Vec<&str> {
        self.actions
            .iter()
            .filter_map(|a| match a {
                Action::Notify {
                    topic: Topic::Breach,
                    severity: s,
                    message,
                    ..
                } if *s == severity => Some(message.as_str()),
                _ => None,
            })
            .collect()
    }
}

/// Plays `plan` through the engine: every evaluation answered at once with the guardrail
/// passing and `readings` for each comparison; an operator approves whatever waits.
fn run(plan: Plan, mut readings: Readings) -> Outcome {
    let mut engine = Engine::new(plan.clone()).unwrap();
    let mut inputs = vec![Input::Start { at: T0 }];
    let mut actions = Vec::new();
    let mut todo = engine.apply(&inputs[0]).unwrap();
    let mut looks = 0;
    while !engine.is_decided() {
        let mut next = Vec::new();
        for action in todo.drain(..) {
            match &action {
                Action::Evaluate { round } => {
                    looks += 1;
                    let input = Input::Observations {
                        at: *round,
                        round: *round,
                        readings: vec![GuardrailReading {
                            guardrail: "ann_p95".into(),
                            canary: Reading::value(120.0),
                            baseline: Reading::value(118.0),
                        }],
                        comparisons: plan
                            .comparisons
                            .iter()
                            .map(|c| {
                                let (canary, baseline) = readings(&c.name, looks);
                                ComparisonReading {
                                    comparison: c.name.clone(),
                                    canary,
                                    baseline,
                                }
                            })
                            .collect(),
                    };
                    next.extend(engine.apply(&input).unwrap());
                    inputs.push(input);
                }
                Action::AwaitApproval { .. } => {
                    let input = Input::Event {
                        at: engine.status().elapsed_ms + T0,
                        event: Event::Approve {
                            by: "sre@example.com".into(),
                        },
                    };
                    next.extend(engine.apply(&input).unwrap());
                    inputs.push(input);
                }
                _ => {}
            }
            actions.push(action);
        }
        todo = next;
        if todo.is_empty() && !engine.is_decided() {
            let at = engine
                .next_wakeup()
                .expect("an undecided engine wakes up again");
            let input = Input::Tick { at };
            todo = engine.apply(&input).unwrap();
            inputs.push(input);
        }
    }
    actions.extend(todo);
    Outcome {
        inputs,
        actions,
        decision: engine.decision().cloned().unwrap(),
        engine,
    }
}

#[test]
fn a_canary_like_its_baseline_is_promoted_with_every_comparison_passing() {
    let o = run(
        plan(vec![
            latency("ttfv_p95", true),
            error_rate("error_rate", true),
        ]),
        mixed(latencies(7, BTreeMap::new()), error_counts(11, 0.001)),
    );
    assert_eq!(o.decision.verdict, Verdict::Promote);
    assert_eq!(o.minute(), 60.0);
    let ttfv = o.judgement("ttfv_p95");
    assert_eq!(ttfv.classification, Classification::Pass);
    assert_eq!((ttfv.samples.canary, ttfv.samples.baseline), (120, 120));
    // The estimate is the share of looks with the canary above the allowance (10 % above
    // the baseline); its confidence sequence covers the true chance, Φ(−ln 1.1 / (0.25 √2)).
    let share = ttfv.interval.unwrap();
    assert!(share.contains(0.3938), "{share:?}");
    assert!(matches!(ttfv.evidence, Evidence::EValue { e_value, alpha } if e_value < 1.0 / alpha));
    let errors = o.judgement("error_rate");
    assert_eq!(errors.classification, Classification::Pass);
    assert!(
        errors.samples.canary > 0 && errors.samples.baseline > 50,
        "{errors:?}"
    );
    let interval = errors.interval.unwrap();
    assert!(interval.contains(1.0), "{interval:?}");
    let score = o.decision.score.as_ref().unwrap();
    assert_eq!(score.score, Some(100.0));
    assert_eq!(score.verdict, canary_judge::ScoreVerdict::Pass);
    // The status view shows the same judgements.
    assert_eq!(o.engine.judgements(), o.decision.comparisons);
    assert_eq!(o.engine.status().comparisons, o.decision.comparisons);
    assert!(o.notices(Severity::Warning).is_empty());
}

#[test]
fn a_canary_forty_percent_slower_is_rolled_back_early_by_its_critical_comparison() {
    let o = run(
        plan(vec![latency("ttfv_p95", true), latency("ann_shift", false)]),
        latencies(7, BTreeMap::from([("ttfv_p95", 1.4)])),
    );
    let reasons = o.decision.verdict.reasons().to_vec();
    assert_eq!(o.decision.verdict.name(), "ROLLBACK");
    assert!(o.minute() < 20.0, "decided at T+{}", o.minute());
    let [
        Reason::ComparisonFailed {
            comparison,
            classification,
            e_value,
            alpha,
            looks,
            ..
        },
    ] = &reasons[..]
    else {
        panic!("{reasons:?}")
    };
    assert_eq!(comparison, "ttfv_p95");
    assert_eq!(*classification, Classification::High);
    assert!(*e_value >= 1.0 / alpha);
    assert_eq!(*looks as f64, o.minute() * 2.0);
    // One line, naming the comparison and its evidence.
    let line = reasons[0].to_string();
    assert!(!line.contains('\n'));
    assert!(
        line.starts_with(
            "ttfv_p95: canary higher than the baseline allows: above the allowance in "
        ),
        "{line}"
    );
    assert!(line.contains("≥ 20 after"), "{line}");
    assert_eq!(reasons[0].comparison(), Some("ttfv_p95"));
    let critical = o.notices(Severity::Critical);
    assert!(
        critical
            .iter()
            .any(|m| m.contains("; critical comparison: rolling back")),
        "{critical:?}"
    );
    // The decision carries every comparison's state at that moment.
    assert_eq!(
        o.judgement("ann_shift").classification,
        Classification::Pass
    );
    assert_eq!(
        o.decision.score.as_ref().unwrap().failed_critical,
        ["ttfv_p95"]
    );
}

/// Per-interval p95s around 800 ms: the baseline's scatter ±10 % (log-normal), the canary's
/// `wider` times as much — at the same median.
fn scattered(seed: u64, wider: f64) -> Readings {
    let mut rng = Rng(seed);
    Box::new(move |_name, _look| {
        let baseline = 800.0 * (0.1 * rng.normal()).exp();
        let canary = 800.0 * (0.1 * wider * rng.normal()).exp();
        let value = |v: f64| Measurement::Continuous {
            value: Reading::value(v),
        };
        (value(canary), value(baseline))
    })
}

#[test]
fn a_wider_tail_at_the_same_median_is_caught_by_a_spread_comparison_and_passed_by_location() {
    let spread = |name: &str| CompareSpec {
        measure: Measure::Spread {
            query: "histogram_quantile(0.95, sum by (le) (rate(ttfv_ms_bucket[30s])))".into(),
        },
        ..latency(name, true)
    };
    // The same readings, judged two ways: the location comparison (10 % allowed) sees a canary
    // no more often above the baseline than below and passes; the spread comparison sees its
    // readings scatter four times as far and rolls back.
    let o = run(
        plan(vec![latency("ttfv_p95", false), spread("ttfv_spread")]),
        scattered(5, 4.0),
    );
    assert_eq!(o.judgement("ttfv_p95").classification, Classification::Pass);
    assert_eq!(
        o.judgement("ttfv_spread").classification,
        Classification::High
    );
    assert!(o.minute() < 30.0, "decided at T+{}", o.minute());
    let line = o.decision.verdict.reasons()[0].to_string();
    assert!(
        line.starts_with(
            "ttfv_spread: canary's spread higher than the baseline allows: above the allowance in "
        ),
        "{line}"
    );
    assert!(line.contains("% of pairs of looks"), "{line}");
    // Each look of the spread test takes two rounds.
    let looks = o.judgement("ttfv_spread").samples.canary;
    assert_eq!(looks, o.judgement("ttfv_p95").samples.canary / 2);

    // The same scatter in both arms: promoted, both pass.
    let o = run(
        plan(vec![latency("ttfv_p95", false), spread("ttfv_spread")]),
        scattered(5, 1.0),
    );
    assert_eq!(o.decision.verdict, Verdict::Promote);
    assert_eq!(o.judgement("ttfv_spread").samples.canary, 60);
}

#[test]
fn spread_comparisons_of_arms_that_scatter_alike_roll_back_at_most_at_their_level() {
    // A/A: 400 runs of 120 rounds each, judged at every round as the engine does.
    let runs = 400;
    let spread = CompareSpec {
        measure: Measure::Spread { query: "q".into() },
        ..latency("ttfv_spread", true)
    };
    let rolled_back = (0..runs)
        .filter(|&seed| {
            let o = run(plan(vec![spread.clone()]), scattered(1000 + seed, 1.0));
            o.decision.verdict != Verdict::Promote
        })
        .count();
    // α = 0.05, plus three standard errors of a 400-run estimate.
    let bound = 0.05 + 3.0 * (0.05_f64 * 0.95 / runs as f64).sqrt();
    let rate = rolled_back as f64 / runs as f64;
    assert!(rate <= bound, "{rolled_back}/{runs} rolled back");
}

#[test]
fn judgements_read_with_their_meaning_and_unit_in_check_lines() {
    use canary_core::comparisons::{check_line, describe};
    let o = run(
        plan(vec![
            latency("ttfv_p95", true),
            error_rate("error_rate", false),
        ]),
        mixed(
            latencies(7, BTreeMap::from([("ttfv_p95", 1.4)])),
            error_counts(11, 0.001),
        ),
    );
    let ttfv = describe(o.judgement("ttfv_p95"));
    assert_eq!((ttfv.mark, ttfv.status), ("✗", "HIGH"));
    // 40 % slower: the median look's canary over baseline says so.
    let Some(canary_judge::Typical::Ratio(r)) = o.judgement("ttfv_p95").typical else {
        panic!("{ttfv:?}")
    };
    assert!((1.2..1.6).contains(&r), "{r}");
    assert!(ttfv.typical.starts_with('×'), "{ttfv:?}");
    assert!(ttfv.estimate.ends_with(" % of looks above"), "{ttfv:?}");
    assert!(
        ttfv.interval.starts_with('[') && ttfv.interval.contains(" %, "),
        "{ttfv:?}"
    );
    assert!(ttfv.evidence.starts_with("e ") && ttfv.evidence.ends_with("(fails at 20)"));
    assert!(ttfv.samples.ends_with(" looks"), "{ttfv:?}");
    let errors = describe(o.judgement("error_rate"));
    assert_eq!(errors.status, "PASS");
    assert_eq!(errors.typical, "-", "counts compare rates, not looks");
    assert!(errors.estimate.starts_with('×'), "{errors:?}");
    assert!(errors.samples.ends_with(" events"), "{errors:?}");
    let line = check_line(o.judgement("ttfv_p95"));
    assert!(line.starts_with("✗ ttfv_p95       HIGH    ×1."), "{line}");
    assert!(line.ends_with("looks (comparison, critical)"), "{line}");

    // Every check the engine asks for carries the comparisons at that round.
    let checks: Vec<&Vec<canary_judge::Judgement>> = o
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::CheckLog { comparisons, .. } => Some(comparisons),
            _ => None,
        })
        .collect();
    assert!(!checks.is_empty());
    assert!(checks.iter().all(|c| c.len() == 2));

    // A spread comparison reads in pairs; no event in either arm reads as such.
    let spread = CompareSpec {
        measure: Measure::Spread { query: "q".into() },
        ..latency("ttfv_spread", false)
    };
    let o = run(plan(vec![spread]), scattered(5, 4.0));
    let d = describe(o.judgement("ttfv_spread"));
    assert!(d.estimate.ends_with(" % of pairs wider"), "{d:?}");
    assert!(d.typical.starts_with("scatter ×"), "{d:?}");
    assert!(d.samples.ends_with(" pairs"), "{d:?}");
    let o = run(plan(vec![error_rate("error_rate", true)]), no_errors());
    assert_eq!(describe(o.judgement("error_rate")).estimate, "no events");
}

#[test]
fn a_failing_comparison_that_is_not_critical_counts_in_the_score_as_the_thresholds_say() {
    // Four latency comparisons; `a` is 40 % slower and fails. Score = the weighted share of
    // passes: 75 with equal weights, 50 when `a` weighs 3.
    type Case = (f64, f64, f64, &'static str);
    let table: [Case; 5] = [
        // (marginal, pass, weight of a) → verdict
        (75.0, 95.0, 1.0, "INCONCLUSIVE"),
        (80.0, 95.0, 1.0, "ROLLBACK"),
        (50.0, 75.0, 1.0, "PROMOTE"),
        (75.0, 95.0, 3.0, "ROLLBACK"),
        (0.0, 50.0, 3.0, "PROMOTE"),
    ];
    for (marginal, pass, weight, expected) in table {
        let mut comparisons: Vec<CompareSpec> =
            ["a", "b", "c", "d"].map(|n| latency(n, false)).into();
        comparisons[0].weight = weight;
        let mut p = plan(comparisons);
        p.scoring.marginal = marginal;
        p.scoring.pass = pass;
        let o = run(p, latencies(3, BTreeMap::from([("a", 1.4)])));
        let case = format!("marginal {marginal}, pass {pass}, weight {weight}");
        assert_eq!(
            o.decision.verdict.name(),
            expected,
            "{case}: {:?}",
            o.decision
        );
        // It never rolls back early: it counts at the decision.
        assert_eq!(o.minute(), 60.0, "{case}");
        let score = o.decision.score.as_ref().unwrap().score.unwrap();
        assert_eq!(score, 100.0 * 3.0 / (3.0 + weight), "{case}");
        assert_eq!(o.judgement("a").classification, Classification::High);
        let reasons = o.decision.verdict.reasons();
        match expected {
            "ROLLBACK" => assert!(
                matches!(reasons, [Reason::ScoreBelowMarginal { failed, .. }] if failed == &["a"]),
                "{case}: {reasons:?}"
            ),
            "INCONCLUSIVE" => assert!(
                matches!(reasons, [Reason::ScoreMarginal { score: Some(s), .. }] if *s == score),
                "{case}: {reasons:?}"
            ),
            _ => assert!(reasons.is_empty()),
        }
        // The failure was told once, as a warning that it counts at the decision.
        let warned = o.notices(Severity::Warning);
        assert_eq!(warned.len(), 1, "{case}: {warned:?}");
        assert!(warned[0].starts_with("a: canary higher"), "{}", warned[0]);
    }
}

#[test]
fn an_inconclusive_score_follows_on_inconclusive_and_an_operator_may_promote() {
    let mut comparisons: Vec<CompareSpec> = ["a", "b", "c", "d"].map(|n| latency(n, false)).into();
    comparisons[3].group = "other".into();
    let mut p = plan(comparisons);
    p.on_inconclusive = OnInconclusive::Hold {
        timeout: Duration::from_secs(600),
    };
    let o = run(p, latencies(3, BTreeMap::from([("a", 1.4)])));
    // Groups: latency (a fails, b, c pass) scores 66.7, other 100: 83.3 between 75 and 95.
    let waited = o
        .actions
        .iter()
        .find_map(|a| match a {
            Action::AwaitApproval { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .unwrap();
    assert!(
        waited.contains("comparison score 83.3333 is between the marginal threshold 75 and the pass threshold 95"),
        "{waited}"
    );
    assert_eq!(o.decision.verdict, Verdict::Promote);
    assert_eq!(o.decision.authorised_by, "sre@example.com");
    assert_eq!(o.judgement("a").classification, Classification::High);
}

/// Cumulative counters with requests in both arms and not one error: the error counters have
/// no series, as real exporters' do until their first error.
fn no_errors() -> Readings {
    let mut requests = 0.0;
    Box::new(move |_name, _look| {
        requests += 750.0;
        let counters = |exposure: f64| Measurement::Counts {
            events: Reading::NoData,
            exposure: Reading::value(exposure),
        };
        (counters(requests * 0.05), counters(requests * 0.95))
    })
}

#[test]
fn no_error_in_either_arm_passes_and_a_comparison_that_must_have_data_fails_without_it() {
    // Zero errors in both arms over the whole run is evidence (neither is worse), not missing
    // data: the critical error comparison passes and the canary is promoted.
    let o = run(plan(vec![error_rate("error_rate", true)]), no_errors());
    assert_eq!(o.decision.verdict, Verdict::Promote);
    let j = o.judgement("error_rate");
    assert_eq!((j.classification, j.estimate), (Classification::Pass, None));

    // No exposure read at all: no data. Left out of the score by default (INCONCLUSIVE: a
    // critical comparison without data); failed when it must have data (ROLLBACK).
    let silent = || -> Readings {
        Box::new(|_name, _look| {
            let nothing = || Measurement::Counts {
                events: Reading::NoData,
                exposure: Reading::NoData,
            };
            (nothing(), nothing())
        })
    };
    let o = run(plan(vec![error_rate("error_rate", true)]), silent());
    assert!(
        matches!(&o.decision.verdict, Verdict::Inconclusive { reasons }
            if reasons.iter().any(|r| matches!(r, Reason::CriticalComparisonNoData { .. }))),
        "{:?}",
        o.decision.verdict
    );
    let mut required = error_rate("error_rate", true);
    required.must_have_data = true;
    let o = run(plan(vec![required]), silent());
    let Verdict::Rollback { reasons } = &o.decision.verdict else {
        panic!("{:?}", o.decision.verdict);
    };
    assert_eq!(
        reasons.iter().map(ToString::to_string).collect::<Vec<_>>(),
        vec![
            "error_rate: critical comparison without data at the decision, and it must have data",
            "comparison score 0 is below the marginal threshold 75 (failed: error_rate)"
        ]
    );
    assert_eq!(o.minute(), 60.0);
}

#[test]
fn comparisons_passing_do_not_promote_a_canary_whose_guardrail_fails() {
    let p = plan(vec![latency("ttfv_p95", false)]);
    let mut engine = Engine::new(p).unwrap();
    let mut rng = latencies(5, BTreeMap::new());
    engine.apply(&Input::Start { at: T0 }).unwrap();
    let mut look = 0;
    while !engine.is_decided() {
        let round = next_round(&mut engine);
        look += 1;
        let (canary, baseline) = rng("ttfv_p95", look);
        engine
            .apply(&Input::Observations {
                at: round,
                round,
                readings: vec![GuardrailReading {
                    guardrail: "ann_p95".into(),
                    canary: Reading::value(if look == 120 { 250.0 } else { 120.0 }),
                    baseline: Reading::value(118.0),
                }],
                comparisons: vec![ComparisonReading {
                    comparison: "ttfv_p95".into(),
                    canary,
                    baseline,
                }],
            })
            .unwrap();
    }
    let decision = engine.decision().unwrap();
    assert_eq!(decision.verdict.name(), "ROLLBACK");
    assert!(matches!(
        decision.verdict.reasons(),
        [Reason::FailedAtDecision { guardrail, .. }] if guardrail == "ann_p95"
    ));
    assert_eq!(decision.score.as_ref().unwrap().score, Some(100.0));
}

#[test]
fn errors_five_times_the_baseline_at_a_five_percent_split_are_caught() {
    // 0.1 % → 0.5 %: the canary sees about 75 requests and 0.4 errors per 30 s, so most of
    // its intervals have no error at all. Every one of 20 runs is caught inside the window.
    for seed in 1..=20 {
        let o = run(
            plan(vec![error_rate("error_rate", true)]),
            error_counts(seed, 0.005),
        );
        assert_eq!(o.decision.verdict.name(), "ROLLBACK", "seed {seed}");
        assert!(
            o.minute() < 60.0,
            "seed {seed}: decided at T+{}",
            o.minute()
        );
        assert_eq!(
            o.decision.verdict.reasons()[0].comparison(),
            Some("error_rate")
        );
    }
    let o = run(
        plan(vec![error_rate("error_rate", true)]),
        error_counts(11, 0.005),
    );
    let [
        Reason::ComparisonFailed {
            comparison,
            estimate: Some(ratio),
            interval: Some(interval),
            samples,
            ..
        },
    ] = o.decision.verdict.reasons()
    else {
        panic!("{:?}", o.decision.verdict)
    };
    assert_eq!(comparison, "error_rate");
    assert!(interval.lower > 1.0, "{interval:?}");
    assert!(interval.contains(*ratio));
    // Sparse: fewer canary errors than looks taken.
    let looks = (o.minute() * 2.0) as u64;
    assert!(samples.canary < looks, "{samples:?} in {looks} looks");
    let line = o.decision.verdict.reasons()[0].to_string();
    assert!(
        line.starts_with("error_rate: canary's rate higher than the baseline allows: rate ratio "),
        "{line}"
    );
}

/// The counts a comparison judged are exactly the increases of the counters between the
/// evaluations that read them: a missing reading merges its interval into the next look, a
/// counter that went down starts again, an events counter without a series counts 0 until
/// it has counted something.
#[test]
fn count_looks_are_the_counters_increases_between_evaluations() {
    let counters = |events: Option<f64>, exposure: Option<f64>| Measurement::Counts {
        events: events.map_or(Reading::NoData, Reading::value),
        exposure: exposure.map_or(Reading::NoData, Reading::value),
    };
    // (canary events, canary exposure, baseline events, baseline exposure) per look, with
    // the (canary, baseline) events judged so far after it.
    type Look = (
        Option<f64>,
        Option<f64>,
        Option<f64>,
        Option<f64>,
        (u64, u64),
    );
    let table: [Look; 9] = [
        // The first reading is where counting starts.
        (None, Some(10.0), Some(500.0), Some(1e6), (0, 0)),
        (None, Some(90.0), Some(503.0), Some(1.0016e6), (0, 3)),
        (Some(2.0), Some(170.0), Some(505.0), Some(1.0032e6), (2, 5)),
        // The baseline's exposure is missing: no look; the next one covers both intervals.
        (Some(3.0), Some(250.0), Some(507.0), None, (2, 5)),
        (Some(3.0), Some(330.0), Some(511.0), Some(1.0064e6), (3, 11)),
        // The baseline restarted: its counters went down, so this interval is no look for
        // either arm (the canary's error in it too) and counting starts again.
        (Some(4.0), Some(410.0), Some(1.0), Some(1500.0), (3, 11)),
        (Some(4.0), Some(490.0), Some(3.0), Some(3100.0), (3, 13)),
        // The canary's events series vanished after counting: missing, not zero.
        (None, Some(570.0), Some(4.0), Some(4700.0), (3, 13)),
        (Some(6.0), Some(650.0), Some(4.0), Some(6300.0), (5, 14)),
    ];
    let p = plan(vec![error_rate("error_rate", false)]);
    let mut engine = Engine::new(p).unwrap();
    engine.apply(&Input::Start { at: T0 }).unwrap();
    for (i, (ce, cx, be, bx, (canary, baseline))) in table.into_iter().enumerate() {
        let round = next_round(&mut engine);
        engine
            .apply(&Input::Observations {
                at: round,
                round,
                readings: ann(),
                comparisons: vec![ComparisonReading {
                    comparison: "error_rate".into(),
                    canary: counters(ce, cx),
                    baseline: counters(be, bx),
                }],
            })
            .unwrap();
        let judged = &engine.judgements()[0];
        assert_eq!(
            (judged.samples.canary, judged.samples.baseline),
            (canary, baseline),
            "look {}",
            i + 1
        );
    }
    // A round whose readings did not come (the runtime did not evaluate the comparison) is
    // no look either: the next one covers both intervals.
    for comparisons in [
        vec![],
        vec![ComparisonReading {
            comparison: "error_rate".into(),
            canary: counters(Some(9.0), Some(810.0)),
            baseline: counters(Some(10.0), Some(9500.0)),
        }],
    ] {
        let round = next_round(&mut engine);
        engine
            .apply(&Input::Observations {
                at: round,
                round,
                readings: ann(),
                comparisons,
            })
            .unwrap();
    }
    let judged = &engine.judgements()[0];
    assert_eq!((judged.samples.canary, judged.samples.baseline), (8, 20));
}

/// The passing guardrail's readings.
fn ann() -> Vec<GuardrailReading> {
    vec![GuardrailReading {
        guardrail: "ann_p95".into(),
        canary: Reading::value(120.0),
        baseline: Reading::value(118.0),
    }]
}

/// The next evaluation round the engine asks for, ticking its clock to it when none is
/// outstanding.
fn next_round(engine: &mut Engine) -> i64 {
    if engine.pending_round().is_none() {
        let at = engine.next_wakeup().unwrap();
        engine.apply(&Input::Tick { at }).unwrap();
    }
    engine.pending_round().unwrap()
}

fn journal_text(plan: &Plan, inputs: &[Input]) -> String {
    let mut text = journal::line(&Header {
        format: FORMAT,
        run_id: "r1".into(),
        plan: plan.clone(),
    });
    for input in inputs {
        text.push_str(&journal::line(input));
    }
    text
}

#[test]
fn a_replayed_journal_reproduces_every_judgement_bit_for_bit() {
    for (plan, readings) in [
        (
            plan(vec![
                latency("ttfv_p95", true),
                error_rate("error_rate", false),
            ]),
            mixed(latencies(7, BTreeMap::new()), error_counts(11, 0.001)),
        ),
        (
            plan(vec![error_rate("error_rate", true)]),
            error_counts(11, 0.005),
        ),
    ] {
        let o = run(plan.clone(), readings);
        let parsed = journal::parse(&journal_text(&plan, &o.inputs)).unwrap();
        assert_eq!(parsed.inputs, o.inputs);
        let replayed = replay(parsed.header.plan, &parsed.inputs).unwrap();
        let decision = replayed.decision.unwrap();
        assert_eq!(decision, o.decision);
        assert_eq!(
            serde_json::to_string(&decision).unwrap(),
            serde_json::to_string(&o.decision).unwrap()
        );
        let actions: Vec<Action> = replayed.actions.into_iter().map(|(_, a)| a).collect();
        assert_eq!(actions, o.actions);
    }
}

/// Readings whose shortest decimal form needs all 17 digits must read back as the same bits,
/// or a replay judges other numbers than the run did (serde_json's `float_roundtrip`).
#[test]
fn journalled_readings_read_back_as_the_same_bits() {
    let mut rng = Rng(42);
    let mut values = vec![
        3.906_250_000_000_017_5e-11,
        0.1 + 0.2,
        5e-324,
        f64::MAX,
        1.0 / 3.0,
        812.500_000_000_000_1,
    ];
    values.extend((0..234).map(|_| {
        let mantissa = 1.0 + rng.uniform();
        let exponent = (rng.next_u64() % 600) as i32 - 300;
        mantissa * 10f64.powi(exponent)
    }));
    let p = plan(vec![latency("ttfv_p95", false)]);
    let mut engine = Engine::new(p.clone()).unwrap();
    let mut inputs = vec![Input::Start { at: T0 }];
    engine.apply(&inputs[0]).unwrap();
    for pair in values.chunks(2) {
        if engine.pending_round().is_none() {
            let Some(at) = engine.next_wakeup() else {
                break;
            };
            let tick = Input::Tick { at };
            engine.apply(&tick).unwrap();
            inputs.push(tick);
        }
        let Some(round) = engine.pending_round() else {
            break;
        };
        let input = Input::Observations {
            at: round,
            round,
            readings: ann(),
            comparisons: vec![ComparisonReading {
                comparison: "ttfv_p95".into(),
                canary: Measurement::Continuous {
                    value: Reading::value(pair[0]),
                },
                baseline: Measurement::Continuous {
                    value: Reading::value(pair[1]),
                },
            }],
        };
        engine.apply(&input).unwrap();
        inputs.push(input);
    }
    let parsed = journal::parse(&journal_text(&p, &inputs)).unwrap();
    let bits = |inputs: &[Input]| -> Vec<u64> {
        inputs
            .iter()
            .flat_map(|i| match i {
                Input::Observations { comparisons, .. } => comparisons.clone(),
                _ => vec![],
            })
            .flat_map(|c| [c.canary, c.baseline])
            .map(|m| match m {
                Measurement::Continuous {
                    value: Reading::Value { value, .. },
                } => value.to_bits(),
                other => panic!("{other:?}"),
            })
            .collect()
    };
    let (written, read) = (bits(&inputs), bits(&parsed.inputs));
    // Every value went in: 120 rounds, two arms.
    assert_eq!(written.len(), values.len());
    assert_eq!(written, read);
    let mut again = Engine::new(p).unwrap();
    for input in &parsed.inputs {
        again.apply(input).unwrap();
    }
    assert_eq!(again.judgements(), engine.judgements());
}

/// The journals in `tests/journals/` were written, with the actions they caused, by the
/// engine before comparisons existed (runs that PROMOTE, ROLLBACK, and go INCONCLUSIVE then
/// approved). They still read, replay to exactly the same actions, and a journal written
/// today for the same inputs is the same text, byte for byte.
#[test]
fn a_plan_without_comparisons_acts_exactly_as_before_comparisons_existed() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/journals");
    for (name, verdict) in [
        ("promote", "PROMOTE"),
        ("rollback", "ROLLBACK"),
        ("inconclusive", "PROMOTE"),
    ] {
        let text = std::fs::read_to_string(dir.join(format!("{name}.jsonl"))).unwrap();
        let expected = std::fs::read_to_string(dir.join(format!("{name}.actions.jsonl"))).unwrap();
        assert!(!text.contains("comparisons") && !text.contains("scoring"));
        let parsed = journal::parse(&text).unwrap();
        assert!(parsed.header.plan.comparisons.is_empty(), "{name}");
        assert_eq!(parsed.header.plan.scoring, Scoring::default());
        assert_eq!(
            journal_text_with(&parsed.header, &parsed.inputs),
            text,
            "{name}"
        );
        let replayed = replay(parsed.header.plan.clone(), &parsed.inputs).unwrap();
        let mut actions = String::new();
        for (i, a) in &replayed.actions {
            actions.push_str(&journal::line(
                &serde_json::json!({"input": i, "action": a}),
            ));
        }
        assert_eq!(actions, expected, "{name}");
        let decision = replayed.decision.unwrap();
        assert_eq!(decision.verdict.name(), verdict, "{name}");
        assert!(decision.comparisons.is_empty() && decision.score.is_none());
        // The decision's JSON has no comparison fields either.
        let json = serde_json::to_string(&decision).unwrap();
        assert!(
            !json.contains("comparisons") && !json.contains("score"),
            "{json}"
        );
    }
}

fn journal_text_with(header: &Header, inputs: &[Input]) -> String {
    let mut text = journal::line(header);
    for input in inputs {
        text.push_str(&journal::line(input));
    }
    text
}

#[test]
fn an_observation_line_from_before_comparisons_reads_with_none() {
    let line = r#"{"input":"observations","at":1760000031500,"round":1760000030000,"readings":[{"guardrail":"ttfv_p95","canary":{"kind":"value","value":808.08},"baseline":{"kind":"value","value":800.0}}]}"#;
    let input: Input = serde_json::from_str(line).unwrap();
    let Input::Observations { comparisons, .. } = &input else {
        panic!("{input:?}")
    };
    assert!(comparisons.is_empty());
    assert_eq!(journal::line(&input), format!("{line}\n"));
    // With comparisons, each arm's reading says what it measured.
    let with = Input::Observations {
        at: 1,
        round: 1,
        readings: vec![],
        comparisons: vec![ComparisonReading {
            comparison: "error_rate".into(),
            canary: Measurement::Counts {
                events: Reading::NoData,
                exposure: Reading::value(75.0),
            },
            baseline: Measurement::Counts {
                events: Reading::value(3.0),
                exposure: Reading::value(1425.0),
            },
        }],
    };
    let json = serde_json::to_value(&with).unwrap();
    assert_eq!(
        json["comparisons"][0]["canary"],
        serde_json::json!({"measure": "counts", "events": {"kind": "no_data"}, "exposure": {"kind": "value", "value": 75.0}})
    );
    assert_eq!(serde_json::from_value::<Input>(json).unwrap(), with);
}

#[test]
fn a_comparison_is_written_in_the_plan_as_configured() {
    let c = error_rate("error_rate", true);
    let json = serde_json::to_value(&c).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "name": "error_rate",
            "kind": "counts",
            "events": "sum(http_requests_total{code=~\"5..\"})",
            "exposure": "sum(http_requests_total)",
            "direction": "increase",
            "effect": {"relative": 0.0},
            "critical": true,
            "weight": 1.0,
            "group": "errors",
            "alpha": 0.05,
        })
    );
    assert_eq!(serde_json::from_value::<CompareSpec>(json).unwrap(), c);
    let mut p = plan(vec![c, latency("ttfv_p95", false)]);
    p.scoring.group_weights.insert("errors".into(), 2.0);
    let back: Plan = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
    assert_eq!(back, p);
}
