//! Scoring, classification, no-data handling and degenerate inputs, through the public API.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is a test failure

use canary_judge::counts::{self, Counts, RateOutcome};
use canary_judge::dispersion;
use canary_judge::judge::{
    Classification, Comparison, Direction, Effect, Evidence, Judgement, Samples, ScoreVerdict,
    Scoring, judge_counts, judge_readings, judge_spread,
};
use canary_judge::rank::{self, Method};
use canary_judge::sequential::{BetaMixture, CountSequence, SignSequence};
use canary_judge::{Alternative, Arm, Error, Interval};

fn comparison(name: &str, group: &str, direction: Direction) -> Comparison {
    Comparison {
        name: name.to_string(),
        group: group.to_string(),
        direction,
        effect: Effect::NONE,
        critical: false,
        weight: 1.0,
        must_have_data: false,
    }
}

fn judged(name: &str, group: &str, classification: Classification) -> Judgement {
    Judgement::new(
        &comparison(name, group, Direction::Increase),
        classification,
        None,
        None,
        Evidence::None,
        Samples {
            canary: 10,
            baseline: 10,
        },
    )
}

/// One scoring case: judgements as (name, group, classification, critical, weight).
fn check_score(
    judgements: &[(&str, &str, Classification, bool, f64)],
    scoring: &Scoring,
    expect_score: Option<f64>,
    expect: ScoreVerdict,
) {
    let judgements: Vec<Judgement> = judgements
        .iter()
        .map(|&(name, group, c, critical, weight)| {
            let mut j = judged(name, group, c);
            j.critical = critical;
            j.weight = weight;
            j
        })
        .collect();
    let score = scoring.score(&judgements);
    match (score.score, expect_score) {
        (Some(got), Some(want)) => assert!((got - want).abs() < 1e-9, "score {got}, want {want}"),
        (got, want) => assert_eq!(got, want),
    }
    assert_eq!(score.verdict, expect, "{score:?}");
}

use Classification::{High, Low, NoData, Pass};

#[test]
fn scoring_follows_kayenta() {
    let default = Scoring::default();
    let weighted = Scoring {
        group_weights: [("latency".to_string(), 3.0), ("errors".to_string(), 1.0)]
            .into_iter()
            .collect(),
        ..Scoring::default()
    };
    // All pass.
    check_score(
        &[("a", "g", Pass, false, 1.0), ("b", "g", Pass, false, 1.0)],
        &default,
        Some(100.0),
        ScoreVerdict::Pass,
    );
    // One of four fails: 75 is marginal (at the marginal threshold, below pass).
    check_score(
        &[
            ("a", "g", Pass, false, 1.0),
            ("b", "g", Pass, false, 1.0),
            ("c", "g", Pass, false, 1.0),
            ("d", "g", High, false, 1.0),
        ],
        &default,
        Some(75.0),
        ScoreVerdict::Marginal,
    );
    // One of three fails: 66.7 < 75 fails.
    check_score(
        &[
            ("a", "g", Pass, false, 1.0),
            ("b", "g", Pass, false, 1.0),
            ("c", "g", Low, false, 1.0),
        ],
        &default,
        Some(200.0 / 3.0),
        ScoreVerdict::Fail,
    );
    // Group weights: latency (weight 3) all pass, errors (weight 1) half pass → 87.5.
    check_score(
        &[
            ("p95", "latency", Pass, false, 1.0),
            ("p99", "latency", Pass, false, 1.0),
            ("5xx", "errors", Pass, false, 1.0),
            ("sse", "errors", High, false, 1.0),
        ],
        &weighted,
        Some(87.5),
        ScoreVerdict::Marginal,
    );
    // Comparison weights inside a group: the failing one weighs 1 of 20 → 95 passes.
    check_score(
        &[
            ("big", "g", Pass, false, 19.0),
            ("small", "g", High, false, 1.0),
        ],
        &default,
        Some(95.0),
        ScoreVerdict::Pass,
    );
    // A failed critical comparison fails whatever the score.
    check_score(
        &[
            ("a", "g", Pass, false, 1.0),
            ("b", "g", Pass, false, 50.0),
            ("crit", "g", High, true, 1.0),
        ],
        &default,
        Some(100.0 * 51.0 / 52.0),
        ScoreVerdict::Fail,
    );
    // No data is left out of the share; a critical comparison without data cannot pass.
    check_score(
        &[("a", "g", Pass, false, 1.0), ("b", "g", NoData, false, 1.0)],
        &default,
        Some(100.0),
        ScoreVerdict::Pass,
    );
    check_score(
        &[
            ("a", "g", Pass, false, 1.0),
            ("crit", "g", NoData, true, 1.0),
        ],
        &default,
        Some(100.0),
        ScoreVerdict::Marginal,
    );
    // Nothing judged at all: no score, no verdict either way.
    check_score(
        &[("a", "g", NoData, false, 1.0)],
        &default,
        None,
        ScoreVerdict::Marginal,
    );
    // A group with no data does not dilute the others.
    check_score(
        &[("a", "g", Pass, false, 1.0), ("b", "h", NoData, false, 1.0)],
        &weighted,
        Some(100.0),
        ScoreVerdict::Pass,
    );
}

#[test]
fn score_reports_groups_and_critical_names() {
    let judgements = vec![
        {
            let mut j = judged("crit", "latency", High);
            j.critical = true;
            j
        },
        judged("ok", "latency", Pass),
        judged("quiet", "errors", NoData),
    ];
    let score = Scoring::default().score(&judgements);
    assert_eq!(score.failed_critical, vec!["crit".to_string()]);
    assert_eq!(score.groups.len(), 2);
    let errors = &score.groups[0];
    assert_eq!(
        (errors.group.as_str(), errors.no_data, errors.score),
        ("errors", 1, None)
    );
    let latency = &score.groups[1];
    assert_eq!((latency.passed, latency.failed), (1, 1));
    assert!(
        Scoring {
            marginal: 96.0,
            ..Scoring::default()
        }
        .check()
        .is_err()
    );
}

#[test]
fn no_data_counts_as_failed_where_the_comparison_must_have_data() {
    let must = |name: &str, critical: bool| {
        let mut j = judged(name, "errors", NoData);
        j.must_have_data = true;
        j.critical = critical;
        j
    };
    // Left out of the share without must_have_data: the score is the latency group's alone.
    let optional = vec![
        judged("ok", "latency", Pass),
        judged("quiet", "errors", NoData),
    ];
    let score = Scoring::default().score(&optional);
    assert_eq!(
        (score.score, score.verdict),
        (Some(100.0), ScoreVerdict::Pass)
    );
    // Counted as failed with it (Kayenta's NodataFailMetric): the errors group scores 0.
    let required = vec![judged("ok", "latency", Pass), must("quiet", false)];
    let score = Scoring::default().score(&required);
    assert_eq!(
        (score.score, score.verdict),
        (Some(50.0), ScoreVerdict::Fail)
    );
    assert_eq!((score.groups[0].failed, score.groups[0].no_data), (1, 0));
    assert!(required[1].failed() && required[1].missing_required_data());
    // Critical and required: a failed critical comparison, not one merely without data.
    let critical = vec![judged("ok", "latency", Pass), must("quiet", true)];
    let score = Scoring::default().score(&critical);
    assert_eq!(score.failed_critical, vec!["quiet".to_string()]);
    assert!(score.critical_without_data.is_empty());
    assert_eq!(score.verdict, ScoreVerdict::Fail);
}

#[test]
fn readings_are_classified_by_direction_and_allowed_effect() {
    let baseline: Vec<f64> = (0..30).map(|i| 100.0 + i as f64).collect();
    let slower: Vec<f64> = baseline.iter().map(|v| v * 1.3).collect();
    let faster: Vec<f64> = baseline.iter().map(|v| v * 0.7).collect();
    let cases = [
        (Direction::Increase, Effect::NONE, &slower, High),
        (Direction::Increase, Effect::NONE, &faster, Pass),
        (Direction::Decrease, Effect::NONE, &faster, Low),
        (Direction::Decrease, Effect::NONE, &slower, Pass),
        (Direction::Either, Effect::NONE, &slower, High),
        (Direction::Either, Effect::NONE, &faster, Low),
        (Direction::Either, Effect::NONE, &baseline, Pass),
        // 30 % slower is within an allowance of 50 %, or of 60 ms (the shift is 30–39 ms).
        (Direction::Increase, Effect::Relative(0.5), &slower, Pass),
        (Direction::Increase, Effect::Absolute(60.0), &slower, Pass),
        (Direction::Increase, Effect::Absolute(10.0), &slower, High),
    ];
    for (direction, effect, canary, expect) in cases {
        let mut c = comparison("p95", "latency", direction);
        c.effect = effect;
        let j = judge_readings(&c, canary, &baseline, 0.05).unwrap();
        assert_eq!(j.classification, expect, "{direction:?} {effect:?}: {j:?}");
        assert_eq!(
            j.samples,
            Samples {
                canary: 30,
                baseline: 30
            }
        );
        let interval = j.interval.unwrap();
        assert!(interval.contains(j.estimate.unwrap()), "{j:?}");
    }
}

#[test]
fn no_data_is_a_classification_not_an_error() {
    let c = comparison("p95", "latency", Direction::Increase);
    let j = judge_readings(&c, &[], &[1.0, 2.0], 0.05).unwrap();
    assert_eq!(j.classification, NoData);
    assert_eq!(j.evidence, Evidence::None);
    let j = judge_spread(&c, &[1.0], &[], 0.05).unwrap();
    assert_eq!(j.classification, NoData);
    // No event in either arm, both exposed: neither is worse, nothing to estimate.
    let j = judge_counts(&c, Counts::new(0, 500.0), Counts::new(0, 9500.0), 0.05).unwrap();
    assert_eq!((j.classification, j.estimate), (Pass, None));
    assert_eq!(
        counts::rate_ratio(
            Counts::new(0, 1.0),
            Counts::new(0, 1.0),
            1.0,
            Alternative::TwoSided,
            0.95
        )
        .unwrap(),
        RateOutcome::NoEvents
    );
    let sequence = SignSequence::new(Direction::Increase, Effect::NONE, 0.05).unwrap();
    assert_eq!(sequence.judgement(&c).classification, NoData);
    let mut counts = CountSequence::new(Direction::Increase, Effect::NONE, 0.05, 1.0).unwrap();
    counts
        .observe(Counts::new(0, 0.0), Counts::new(0, 0.0))
        .unwrap();
    assert_eq!(counts.judgement(&c).classification, NoData);
    // Requests in both arms and no error in either: a quiet pass, not a missing metric.
    counts
        .observe(Counts::new(0, 100.0), Counts::new(0, 1900.0))
        .unwrap();
    let j = counts.judgement(&c);
    assert_eq!((j.classification, j.estimate), (Pass, None));
}

#[test]
fn counts_are_judged_on_their_rates() {
    let c = comparison("5xx", "errors", Direction::Increase);
    // Canary: 30 errors in 5000 requests; baseline: 95 in 95000 — six times the rate.
    let j = judge_counts(&c, Counts::new(30, 5000.0), Counts::new(95, 95000.0), 0.05).unwrap();
    assert_eq!(j.classification, High);
    assert!((j.estimate.unwrap() - 6.0).abs() < 1e-12);
    assert!(j.interval.unwrap().contains(6.0));
    // Zero canary errors: a pass, with an interval starting at 0.
    let j = judge_counts(&c, Counts::new(0, 5000.0), Counts::new(95, 95000.0), 0.05).unwrap();
    assert_eq!(j.classification, Pass);
    assert_eq!(j.interval.unwrap().lower, 0.0);
    // Zero baseline errors: the ratio and its upper end are infinite, not NaN.
    let j = judge_counts(&c, Counts::new(8, 5000.0), Counts::new(0, 95000.0), 0.05).unwrap();
    assert_eq!(j.classification, High);
    assert_eq!(j.estimate, Some(f64::INFINITY));
    assert_eq!(j.interval.unwrap().upper, f64::INFINITY);
    let mut absolute = c.clone();
    absolute.effect = Effect::Absolute(0.01);
    assert!(matches!(
        judge_counts(&absolute, Counts::new(1, 1.0), Counts::new(1, 1.0), 0.05),
        Err(Error::Unsupported(_))
    ));
}

#[test]
fn degenerate_inputs() {
    // Empty samples and non-finite readings are errors that name the arm.
    assert_eq!(
        rank::mann_whitney(&[], &[1.0], Alternative::TwoSided, Method::Auto),
        Err(Error::Empty { arm: Arm::Canary })
    );
    let nan = rank::mann_whitney(
        &[1.0],
        &[2.0, f64::NAN],
        Alternative::TwoSided,
        Method::Auto,
    );
    assert!(matches!(
        nan,
        Err(Error::NotFinite {
            arm: Arm::Baseline,
            index: 1,
            ..
        })
    ));
    let c = comparison("p95", "latency", Direction::Increase);
    assert!(matches!(
        judge_readings(&c, &[f64::INFINITY], &[], 0.05),
        Err(Error::NotFinite {
            arm: Arm::Canary,
            ..
        })
    ));
    assert!(matches!(
        judge_readings(&c, &[1.0], &[1.0], 1.5),
        Err(Error::OutOfRange { .. })
    ));

    // One reading each: U is 0, ½ or 1; the exact p-value is 1 two-sided, the interval unbounded.
    let one = rank::mann_whitney(&[2.0], &[1.0], Alternative::TwoSided, Method::Auto).unwrap();
    assert_eq!((one.u, one.p_value, one.method), (1.0, 1.0, Method::Exact));
    let shift = rank::hodges_lehmann(&[2.0], &[1.0], 0.95, Method::Auto).unwrap();
    assert_eq!(
        (shift.estimate, shift.interval, shift.order),
        (1.0, Interval::UNBOUNDED, 0)
    );

    // All readings equal: no evidence of anything, and no NaN anywhere.
    let same = [5.0; 12];
    let all_tied = rank::mann_whitney(&same, &same, Alternative::Greater, Method::Auto).unwrap();
    assert_eq!((all_tied.u, all_tied.p_value), (72.0, 1.0));
    let shift = rank::hodges_lehmann(&same, &same, 0.95, Method::Auto).unwrap();
    assert_eq!(
        (shift.estimate, shift.interval.lower, shift.interval.upper),
        (0.0, 0.0, 0.0)
    );
    let spread = dispersion::brown_forsythe(&same, &same, Alternative::TwoSided).unwrap();
    assert_eq!(
        (spread.statistic, spread.p_value, spread.spread_ratio),
        (0.0, 1.0, 1.0)
    );
    // Spread within arms constant but different between them: infinitely clear.
    let spread = dispersion::brown_forsythe(
        &[1.0, 3.0, 1.0, 3.0],
        &[2.0, 2.0, 2.0],
        Alternative::Greater,
    )
    .unwrap();
    assert_eq!((spread.statistic, spread.p_value), (f64::INFINITY, 0.0));
    assert_eq!(spread.spread_ratio, f64::INFINITY);
    assert!(matches!(
        dispersion::brown_forsythe(&[1.0], &[2.0], Alternative::TwoSided),
        Err(Error::TooFew { .. })
    ));

    // Exposures must be positive; confidence levels inside (0, 1).
    assert!(matches!(
        counts::rate_ratio(
            Counts::new(1, 0.0),
            Counts::new(1, 1.0),
            1.0,
            Alternative::TwoSided,
            0.95
        ),
        Err(Error::Exposure {
            arm: Arm::Canary,
            ..
        })
    ));
    assert!(matches!(
        rank::hodges_lehmann(&[1.0], &[2.0], 1.0, Method::Auto),
        Err(Error::OutOfRange { .. })
    ));
    let mut sequence = CountSequence::new(Direction::Increase, Effect::NONE, 0.05, 1.0).unwrap();
    assert!(
        sequence
            .observe(Counts::new(3, 0.0), Counts::new(1, 10.0))
            .is_err()
    );
    let mut signs = SignSequence::new(Direction::Increase, Effect::NONE, 0.05).unwrap();
    assert!(signs.observe(f64::NAN, 1.0).is_err());
    assert!(BetaMixture::new(1.0, 2.0, Alternative::Greater, 0.05).is_err());
}

#[test]
fn sign_sequence_drops_ties_and_counts_only_the_bad_side() {
    let mut s = SignSequence::new(Direction::Increase, Effect::Absolute(10.0), 0.05).unwrap();
    s.observe(110.0, 100.0).unwrap(); // exactly at the allowance: a tie
    s.observe(90.0, 100.0).unwrap(); // better: evidence for the canary
    s.observe(150.0, 100.0).unwrap(); // worse
    assert_eq!(s.looks(), (3, 1));
    let high = s.high().unwrap();
    assert_eq!((high.successes(), high.failures()), (1, 1));
    assert!(s.low().is_none());
    // Canary always better: the e-value only shrinks and never crosses.
    let mut s = SignSequence::new(Direction::Increase, Effect::NONE, 0.05).unwrap();
    for i in 0..200 {
        s.observe(90.0, 100.0 + f64::from(i)).unwrap();
    }
    assert!(s.ln_e_value() < 0.0 && s.first_crossing().is_none());
}

#[test]
fn confidence_sequences_cover_the_truth() {
    // 70 successes in 100 at p0 = ½: the sequence for θ covers 0.7 and excludes ½ once the
    // test has rejected.
    let mut m = BetaMixture::new(0.5, 2.0, Alternative::TwoSided, 0.05).unwrap();
    m.observe(70, 30);
    let cs = m.confidence_sequence();
    assert!(cs.contains(0.7) && !cs.contains(0.5), "{cs:?}");
    assert!(m.rejected());
    // Nothing observed: the whole range.
    let m = BetaMixture::new(0.5, 2.0, Alternative::TwoSided, 0.05).unwrap();
    assert_eq!(
        m.confidence_sequence(),
        Interval {
            lower: 0.0,
            upper: 1.0
        }
    );

    // Rates: the canary at 3 times the baseline's rate, with changing traffic shares.
    let mut s = CountSequence::new(Direction::Increase, Effect::NONE, 0.05, 1.0).unwrap();
    for share in [0.05, 0.25, 0.5]
        .into_iter()
        .flat_map(|s| std::iter::repeat_n(s, 20))
    {
        let (t1, t2) = (2000.0 * share, 2000.0 * (1.0 - share));
        // Expected counts, rounded: 0.3 % errors on the canary, 0.1 % on the baseline.
        s.observe(
            Counts::new((t1 * 0.003_f64).round() as u64, t1),
            Counts::new((t2 * 0.001_f64).round() as u64, t2),
        )
        .unwrap();
    }
    let cs = s.confidence_sequence();
    let j = s.judgement(&comparison("5xx", "errors", Direction::Increase));
    assert!(cs.contains(j.estimate.unwrap()), "{cs:?} {j:?}");
    assert!(
        cs.lower > 1.0,
        "a threefold rate is excluded from 1: {cs:?}"
    );
    assert_eq!(j.classification, High);
}

#[test]
fn judgements_round_trip_through_json_with_infinite_ends() {
    let c = comparison("5xx", "errors", Direction::Increase);
    let j = judge_counts(&c, Counts::new(8, 5000.0), Counts::new(0, 95000.0), 0.05).unwrap();
    let text = serde_json::to_string(&j).unwrap();
    assert!(text.contains("\"+Inf\""), "{text}");
    // serde_json (without its `float_roundtrip` feature) may move a float's last bit when
    // parsing (3.9062500000000175e-11 comes back as 3.906250000000018e-11): finite numbers are
    // compared to 1e-15, the infinities exactly.
    let mut back: Judgement = serde_json::from_str(&text).unwrap();
    assert_eq!(back.estimate, Some(f64::INFINITY));
    assert_eq!(back.interval.unwrap().upper, f64::INFINITY);
    let (
        Evidence::PValue { p_value: ours, .. },
        Evidence::PValue {
            p_value: theirs, ..
        },
    ) = (j.evidence, back.evidence)
    else {
        panic!("the evidence changed kind: {back:?}")
    };
    assert!((ours - theirs).abs() <= 1e-15 * ours);
    back.evidence = j.evidence;
    assert_eq!(back, j);
    let score = Scoring::default().score(&[j]);
    let text = serde_json::to_string(&score).unwrap();
    let back: canary_judge::Score = serde_json::from_str(&text).unwrap();
    assert_eq!(back, score);
}
