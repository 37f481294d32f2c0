//! Seeded simulations of whole canary runs: why the engine needs sequential tests, and that the
//! tests find what they are for.
//!
//! A run is 120 looks (an hour at one look every 30 s). At each look each arm gives one reading
//! (a per-interval latency quantile) and its errors out of its requests. The numbers are
//! deterministic (SplitMix64 with fixed seeds); the Monte-Carlo margins are three binomial
//! standard errors.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is a test failure

use canary_judge::Alternative;
use canary_judge::counts::{self, Counts, RateOutcome};
use canary_judge::dispersion;
use canary_judge::judge::{Classification, Direction, Effect};
use canary_judge::rank::{self, Method};
use canary_judge::sequential::{CountSequence, SignSequence};

const LOOKS: usize = 120;
const ALPHA: f64 = 0.05;

use canary_judge::rng::SplitMix64 as Rng;

/// One look's latency reading: log-normal around 200 ms, with a load factor both arms share.
fn latency(rng: &mut Rng, load: f64, worse: f64) -> f64 {
    200.0 * load * worse * (0.25 * rng.normal()).exp()
}

/// Three binomial standard errors above `rate` for `runs` runs.
fn margin(rate: f64, runs: usize) -> f64 {
    rate + 3.0 * (rate * (1.0 - rate) / runs as f64).sqrt()
}

/// What happened over one simulated run of latency readings.
struct LatencyRun {
    /// The first look at which the fixed-sample MWU (all readings so far) rejected at α.
    fixed: Option<usize>,
    /// The first look at which the sequential sign test crossed 1/α.
    sequential: Option<usize>,
}

fn latency_run(rng: &mut Rng, worse: f64, check_fixed: bool) -> LatencyRun {
    let mut canary = Vec::with_capacity(LOOKS);
    let mut baseline = Vec::with_capacity(LOOKS);
    let mut sequence = SignSequence::new(Direction::Increase, Effect::NONE, ALPHA).unwrap();
    let mut fixed = None;
    let mut sequential = None;
    for look in 1..=LOOKS {
        // Load drifts slowly through the run, the same for both arms.
        let load = 1.0 + 0.3 * (look as f64 / 20.0).sin();
        let c = latency(rng, load, worse);
        let b = latency(rng, load, 1.0);
        canary.push(c);
        baseline.push(b);
        sequence.observe(c, b).unwrap();
        if sequential.is_none() && sequence.first_crossing().is_some() {
            sequential = Some(look);
        }
        if check_fixed && fixed.is_none() {
            let p = rank::mann_whitney(&canary, &baseline, Alternative::Greater, Method::Auto)
                .unwrap()
                .p_value;
            if p <= ALPHA {
                fixed = Some(look);
            }
        }
    }
    LatencyRun { fixed, sequential }
}

#[test]
fn healthy_canary_checked_every_look_fixed_test_cries_wolf_sequential_does_not() {
    let runs = 1000;
    let mut rng = Rng(0x0AA_2026);
    let (mut fixed, mut sequential) = (0, 0);
    for _ in 0..runs {
        let run = latency_run(&mut rng, 1.0, true);
        fixed += usize::from(run.fixed.is_some());
        sequential += usize::from(run.sequential.is_some());
    }
    let fixed_rate = fixed as f64 / runs as f64;
    let sequential_rate = sequential as f64 / runs as f64;
    eprintln!(
        "A/A latency, {runs} runs of {LOOKS} looks at α = {ALPHA}: fixed-sample MWU at every \
         look rejects {:.1} %, sequential sign test {:.1} %",
        100.0 * fixed_rate,
        100.0 * sequential_rate
    );
    assert!(
        fixed_rate > 3.0 * ALPHA,
        "the fixed-sample test checked {LOOKS} times should reject a healthy canary far more \
         often than α; it did in {:.1} % of runs",
        100.0 * fixed_rate
    );
    assert!(
        sequential_rate <= margin(ALPHA, runs),
        "the sequential test rejected {:.1} % of healthy runs, above α = {ALPHA} plus the \
         Monte-Carlo margin",
        100.0 * sequential_rate
    );
}

#[test]
fn latency_forty_percent_worse_is_caught_within_bounded_looks() {
    let runs = 300;
    let mut rng = Rng(0xB_2026);
    let mut looks: Vec<usize> = Vec::new();
    for _ in 0..runs {
        if let Some(look) = latency_run(&mut rng, 1.4, false).sequential {
            looks.push(look);
        }
    }
    looks.sort_unstable();
    let caught = looks.len();
    let median = looks.get(caught / 2).copied().unwrap_or(usize::MAX);
    let worst = looks.last().copied().unwrap_or(usize::MAX);
    eprintln!(
        "latency +40 %: caught in {caught} of {runs} runs; median look {median}, latest {worst}"
    );
    assert_eq!(
        caught, runs,
        "every run with a 40 % slower canary must be caught"
    );
    assert!(
        median <= 20,
        "median detection at look {median}, expected within 20 looks"
    );
    assert!(
        worst <= 100,
        "latest detection at look {worst}, expected within 100 looks"
    );
}

#[test]
fn latency_regressions_of_five_to_fifty_percent_are_caught_and_bigger_ones_sooner() {
    // Per-interval p95s of a busy service scatter about ±10 % (log sd 0.1); at ±25 % a 5 or
    // 10 % regression is beyond any valid test in an hour (docs/BENCHMARKS.md has both).
    let runs = 300;
    let mut medians = Vec::new();
    for (worse, at_least) in [(1.05, 0.5), (1.10, 0.95), (1.20, 0.99), (1.50, 1.0)] {
        let mut rng = Rng(0x90_2026 + (worse * 100.0) as u64);
        let mut looks: Vec<usize> = Vec::new();
        for _ in 0..runs {
            let mut sequence = SignSequence::new(Direction::Increase, Effect::NONE, ALPHA).unwrap();
            for look in 1..=LOOKS {
                let load = 1.0 + 0.3 * (look as f64 / 20.0).sin();
                let c = 200.0 * load * worse * (0.1 * rng.normal()).exp();
                let b = 200.0 * load * (0.1 * rng.normal()).exp();
                sequence.observe(c, b).unwrap();
                if sequence.first_crossing().is_some() {
                    looks.push(look);
                    break;
                }
            }
        }
        looks.sort_unstable();
        let caught = looks.len() as f64 / runs as f64;
        let median = looks.get(looks.len() / 2).copied().unwrap_or(usize::MAX);
        eprintln!(
            "latency +{:.0} %: caught in {:.1} % of {runs} runs, median look {median}",
            (worse - 1.0) * 100.0,
            caught * 100.0
        );
        assert!(
            caught >= at_least,
            "+{:.0} %: caught in {:.1} % of runs, expected at least {:.0} %",
            (worse - 1.0) * 100.0,
            caught * 100.0,
            at_least * 100.0
        );
        medians.push(median);
    }
    // Bigger regressions are caught sooner.
    assert!(medians.windows(2).all(|w| w[0] >= w[1]), "{medians:?}");
}

/// One run of errors out of requests: the canary's share of traffic steps up as the runbook
/// does (5 %, 25 %, 50 %), requests vary per look.
fn count_run(
    rng: &mut Rng,
    canary_rate: f64,
    baseline_rate: f64,
) -> (Option<usize>, Option<usize>) {
    let mut sequence = CountSequence::new(Direction::Increase, Effect::NONE, ALPHA, 1.0).unwrap();
    let (mut k1, mut t1, mut k2, mut t2) = (0u64, 0.0, 0u64, 0.0);
    let (mut fixed, mut sequential) = (None, None);
    for look in 1..=LOOKS {
        let share = match look {
            1..=40 => 0.05,
            41..=80 => 0.25,
            _ => 0.5,
        };
        let total = 2000.0 * (1.0 + 0.2 * rng.normal()).max(0.2);
        let (r1, r2) = ((total * share).round(), (total * (1.0 - share)).round());
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
        k1 += e1;
        k2 += e2;
        t1 += r1;
        t2 += r2;
        if fixed.is_none() {
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
                fixed = Some(look);
            }
        }
    }
    (fixed, sequential)
}

#[test]
fn healthy_error_counts_checked_every_look_stay_within_alpha_sequentially() {
    let runs = 400;
    let mut rng = Rng(0xC_2026);
    let (mut fixed, mut sequential) = (0, 0);
    for _ in 0..runs {
        let (f, s) = count_run(&mut rng, 0.002, 0.002);
        fixed += usize::from(f.is_some());
        sequential += usize::from(s.is_some());
    }
    let fixed_rate = fixed as f64 / runs as f64;
    let sequential_rate = sequential as f64 / runs as f64;
    eprintln!(
        "A/A errors (0.2 %), {runs} runs: exact rate test at every look rejects {:.1} %, \
         sequential count test {:.1} %",
        100.0 * fixed_rate,
        100.0 * sequential_rate
    );
    assert!(
        fixed_rate > 2.0 * ALPHA,
        "fixed test rejected only {:.1} %",
        100.0 * fixed_rate
    );
    assert!(
        sequential_rate <= margin(ALPHA, runs),
        "the sequential count test rejected {:.1} % of healthy runs",
        100.0 * sequential_rate
    );
}

#[test]
fn error_rate_from_a_tenth_to_half_a_percent_is_caught() {
    let runs = 200;
    let mut rng = Rng(0xD_2026);
    let mut looks: Vec<usize> = (0..runs)
        .filter_map(|_| count_run(&mut rng, 0.005, 0.001).1)
        .collect();
    looks.sort_unstable();
    let caught = looks.len();
    let median = looks.get(caught / 2).copied().unwrap_or(usize::MAX);
    eprintln!("errors 0.1 % → 0.5 %: caught in {caught} of {runs} runs, median look {median}");
    assert_eq!(caught, runs, "every run must be caught");
    assert!(
        median <= 40,
        "median detection at look {median}, expected within 40 looks"
    );
}

#[test]
fn spread_regression_is_caught_by_the_dispersion_test_and_missed_by_mann_whitney() {
    // Same median, the canary's readings three times as spread: a location test sees nothing.
    let datasets = 200;
    let mut rng = Rng(0xE_2026);
    let (mut spread_caught, mut location_caught) = (0, 0);
    for _ in 0..datasets {
        let baseline: Vec<f64> = (0..LOOKS).map(|_| 200.0 + 10.0 * rng.normal()).collect();
        let canary: Vec<f64> = (0..LOOKS).map(|_| 200.0 + 30.0 * rng.normal()).collect();
        let spread = dispersion::brown_forsythe(&canary, &baseline, Alternative::Greater).unwrap();
        let location =
            rank::mann_whitney(&canary, &baseline, Alternative::Greater, Method::Auto).unwrap();
        spread_caught += usize::from(spread.p_value <= ALPHA);
        location_caught += usize::from(location.p_value <= ALPHA);
    }
    eprintln!(
        "spread ×3, same median, {datasets} data sets of {LOOKS} readings: Brown–Forsythe \
         catches {spread_caught}, Mann–Whitney {location_caught}"
    );
    assert!(
        spread_caught >= datasets * 95 / 100,
        "Brown–Forsythe caught {spread_caught}"
    );
    assert!(
        location_caught as f64 / datasets as f64 <= margin(ALPHA, datasets),
        "Mann–Whitney should see no more than its false-alarm rate; it caught {location_caught}"
    );
}

#[test]
fn sparse_error_regression_is_caught_by_the_rate_test_where_mann_whitney_on_rates_misses() {
    // The canary takes 5 % of 2000 requests per look for 40 looks; errors go from 0.1 % to
    // 0.5 %. Per look the canary's error rate is mostly 0 (100 requests), the baseline's rarely
    // (1900): compared look by look, as Kayenta compares per-interval rates, the canary even
    // looks better. Counted out of its exposure, it is five times worse.
    let datasets = 200;
    let mut rng = Rng(0xF_2026);
    let (mut rate_caught, mut rank_caught) = (0, 0);
    for _ in 0..datasets {
        let canary: Vec<u64> = (0..40).map(|_| rng.poisson(100.0 * 0.005)).collect();
        let baseline: Vec<u64> = (0..40).map(|_| rng.poisson(1900.0 * 0.001)).collect();
        let per_look = |v: &[u64], requests: f64| -> Vec<f64> {
            v.iter().map(|&e| e as f64 / requests).collect()
        };
        let rate = counts::rate_ratio(
            Counts::new(canary.iter().sum(), 40.0 * 100.0),
            Counts::new(baseline.iter().sum(), 40.0 * 1900.0),
            1.0,
            Alternative::Greater,
            0.95,
        )
        .unwrap();
        let p_rate = match rate {
            RateOutcome::Tested(t) => t.p_value,
            RateOutcome::NoEvents => 1.0,
        };
        let p_rank = rank::mann_whitney(
            &per_look(&canary, 100.0),
            &per_look(&baseline, 1900.0),
            Alternative::Greater,
            Method::Auto,
        )
        .unwrap()
        .p_value;
        rate_caught += usize::from(p_rate <= ALPHA);
        rank_caught += usize::from(p_rank <= ALPHA);
    }
    eprintln!(
        "sparse errors 0.1 % → 0.5 % at a 5 % share, {datasets} data sets of 40 looks: exact \
         rate test catches {rate_caught}, Mann–Whitney on per-look rates {rank_caught}"
    );
    assert!(
        rate_caught >= datasets * 9 / 10,
        "the rate test caught only {rate_caught}"
    );
    assert!(
        rank_caught <= datasets / 10,
        "Mann–Whitney caught {rank_caught}"
    );
}

#[test]
fn sequential_judgement_reports_the_side_and_stays_failed() {
    let mut sequence = SignSequence::new(Direction::Either, Effect::Relative(0.05), ALPHA).unwrap();
    let mut rng = Rng(7);
    for _ in 0..LOOKS {
        let b = latency(&mut rng, 1.0, 1.0);
        sequence.observe(b * 0.6, b).unwrap();
    }
    let (look, side) = sequence.first_crossing().expect("a 40 % drop must cross");
    assert_eq!(side, Classification::Low);
    assert!(
        look <= 12,
        "all looks below the allowance: crossed at look {look}"
    );
}
