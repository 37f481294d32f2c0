//! Differential test: the fixed-sample statistics against SciPy (`tests/reference.py`).
//!
//! Data sets are generated here with a seeded PRNG — small samples (1..8 readings), ties,
//! all-equal samples, shifted and widened samples, zero counts, large samples — sent to the
//! reference in one run, and every number compared.
//!
//! Agreement is to 1e-9, relative (or 1e-15 absolute for values that are zero on one side up to
//! rounding). The one looser comparison is against `proportion_ci(method="exact")`, whose ends
//! SciPy finds with `brentq(xtol=2e-12)`: those are compared to 4e-12 absolute, and the same ends
//! are also compared to 1e-9 relative against `scipy.special.betaincinv`, which is exact to
//! double precision.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is a test failure

use std::io::Write;
use std::process::{Command, Stdio};

use canary_judge::counts::{self, Counts, RateOutcome};
use canary_judge::dispersion;
use canary_judge::rank::{self, Method};
use canary_judge::sequential::BetaMixture;
use canary_judge::{Alternative, Interval};
use serde_json::{Value, json};

use canary_judge::rng::SplitMix64 as Rng;

/// The kinds of data a comparison meets.
#[derive(Clone, Copy, Debug)]
enum Shape {
    /// Log-normal latencies, no ties.
    Latency,
    /// Latencies rounded to whole milliseconds on a coarse scale: many ties.
    Rounded,
    /// Small integers: heavy ties.
    Levels,
    /// Every reading the same value.
    Constant,
}

fn sample(rng: &mut Rng, shape: Shape, n: usize, shift: f64, spread: f64) -> Vec<f64> {
    (0..n)
        .map(|_| match shape {
            Shape::Latency => (5.0 + 0.3 * spread * rng.normal()).exp() * (1.0 + shift),
            Shape::Rounded => {
                ((5.0 + 0.2 * spread * rng.normal()).exp() * (1.0 + shift) / 10.0).round()
            }
            Shape::Levels => rng.below(4) as f64 + if shift > 0.0 { 1.0 } else { 0.0 },
            Shape::Constant => 7.0,
        })
        .collect()
}

fn alternative_name(a: Alternative) -> &'static str {
    match a {
        Alternative::TwoSided => "two-sided",
        Alternative::Greater => "greater",
        Alternative::Less => "less",
    }
}

fn method_name(m: Method) -> &'static str {
    match m {
        Method::Auto => "auto",
        Method::Exact => "exact",
        Method::Asymptotic => "asymptotic",
    }
}

const ALTERNATIVES: [Alternative; 3] = [
    Alternative::TwoSided,
    Alternative::Greater,
    Alternative::Less,
];

/// One case: its JSON for the reference and the Rust side's numbers, by the reference's keys.
struct Case {
    input: Value,
    ours: Vec<(&'static str, f64, Tolerance)>,
}

#[derive(Clone, Copy)]
enum Tolerance {
    /// 1e-9 relative.
    Tight,
    /// SciPy's brentq (xtol = 2e-12): 4e-12 absolute.
    Brentq,
    /// Exactly equal (an order statistic index).
    Exact,
    /// A logarithm, to 1e-9 absolute: the number itself to 1e-9 relative.
    Log,
}

fn reference(cases: &[Value]) -> Vec<Value> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/reference.py");
    let child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => panic!(
            "cannot run python3 ({e}): the SciPy reference needs python3 with scipy; \
             scripts/test.sh --install installs them"
        ),
    };
    let input = serde_json::to_vec(cases).unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the SciPy reference failed — is scipy installed? scripts/test.sh --install installs \
         it.\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn number(v: &Value) -> f64 {
    match v {
        Value::String(s) if s == "+Inf" => f64::INFINITY,
        Value::String(s) if s == "-Inf" => f64::NEG_INFINITY,
        Value::String(s) if s == "NaN" => f64::NAN,
        v => v.as_f64().unwrap(),
    }
}

/// The deviation of `ours` from `theirs` in the tolerance's own unit (≤ 1 passes).
fn deviation(ours: f64, theirs: f64, tolerance: Tolerance) -> f64 {
    if ours == theirs || (ours.is_nan() && theirs.is_nan()) {
        return 0.0;
    }
    let diff = (ours - theirs).abs();
    match tolerance {
        Tolerance::Exact => f64::INFINITY,
        Tolerance::Brentq => diff / 4e-12,
        Tolerance::Log => diff / 1e-9,
        Tolerance::Tight => diff / (1e-9 * ours.abs().max(theirs.abs())),
    }
}

fn interval_parts(i: Interval) -> (f64, f64) {
    (i.lower, i.upper)
}

fn rank_cases(rng: &mut Rng, cases: &mut Vec<Case>) {
    let sizes = [
        (1, 1),
        (1, 5),
        (2, 2),
        (2, 3),
        (3, 3),
        (4, 7),
        (5, 5),
        (6, 8),
        (8, 8),
        (3, 40),
        (8, 25),
        (9, 9),
        (10, 12),
        (20, 30),
        (60, 45),
        (300, 250),
    ];
    let shapes = [
        Shape::Latency,
        Shape::Rounded,
        Shape::Levels,
        Shape::Constant,
    ];
    for &(n1, n2) in &sizes {
        for &shape in &shapes {
            for (shift, spread) in [(0.0, 1.0), (0.3, 1.0), (0.0, 2.0)] {
                let x = sample(rng, shape, n1, shift, spread);
                let y = sample(rng, shape, n2, 0.0, 1.0);
                let mut methods = vec![Method::Auto, Method::Asymptotic];
                if n1.min(n2) <= 8 || n1 * n2 <= 400 {
                    methods.push(Method::Exact);
                }
                for &method in &methods {
                    for &alternative in &ALTERNATIVES {
                        let r = rank::mann_whitney(&x, &y, alternative, method).unwrap();
                        cases.push(Case {
                            input: json!({"kind": "mwu", "x": x, "y": y,
                                "alternative": alternative_name(alternative),
                                "method": method_name(method)}),
                            ours: vec![
                                ("u", r.u, Tolerance::Tight),
                                ("p", r.p_value, Tolerance::Tight),
                            ],
                        });
                    }
                    for confidence in [0.95, 0.9] {
                        let s = rank::hodges_lehmann(&x, &y, confidence, method).unwrap();
                        let (lower, upper) = interval_parts(s.interval);
                        cases.push(Case {
                            input: json!({"kind": "hl", "x": x, "y": y,
                                "confidence": confidence, "method": method_name(method)}),
                            ours: vec![
                                ("estimate", s.estimate, Tolerance::Tight),
                                ("lower", lower, Tolerance::Tight),
                                ("upper", upper, Tolerance::Tight),
                                ("order", s.order as f64, Tolerance::Exact),
                            ],
                        });
                    }
                }
            }
        }
    }
}

fn rate_cases(rng: &mut Rng, cases: &mut Vec<Case>) {
    let mut counts: Vec<(u64, f64, u64, f64)> = vec![
        (0, 1000.0, 5, 1000.0),
        (5, 1000.0, 0, 1000.0),
        (0, 50.0, 1, 5000.0),
        (1, 1.0, 1, 1.0),
        (3, 100.0, 3, 100.0),
        (7, 250.0, 2, 4750.0),
        (12, 500.0, 40, 9500.0),
        (4500, 1.0e6, 3000, 1.0e6),
        (25_000, 5.0e6, 180_000, 4.0e7),
        (0, 3.0, 40, 7.0),
        (40, 3.0, 0, 7.0),
    ];
    for _ in 0..30 {
        let t1 = 100.0 + rng.below(100_000) as f64;
        let t2 = 100.0 + rng.below(100_000) as f64;
        let rate = 0.001 + rng.uniform() * 0.02;
        let worse = 1.0 + rng.uniform() * 2.0;
        let k1 = (t1 * rate * worse * (0.5 + rng.uniform())) as u64;
        let k2 = (t2 * rate * (0.5 + rng.uniform())) as u64;
        counts.push((k1, t1, k2, t2));
    }
    for (k1, t1, k2, t2) in counts {
        for null_ratio in [1.0, 1.1, 0.8] {
            for &alternative in &ALTERNATIVES {
                for confidence in [0.95, 0.99] {
                    let outcome = counts::rate_ratio(
                        Counts::new(k1, t1),
                        Counts::new(k2, t2),
                        null_ratio,
                        alternative,
                        confidence,
                    )
                    .unwrap();
                    let RateOutcome::Tested(t) = outcome else {
                        panic!("events were counted, yet no test ran")
                    };
                    cases.push(Case {
                        input: json!({"kind": "rate", "k1": k1, "t1": t1, "k2": k2, "t2": t2,
                            "null_ratio": null_ratio,
                            "alternative": alternative_name(alternative),
                            "confidence": confidence}),
                        ours: vec![
                            ("p", t.p_value, Tolerance::Tight),
                            ("ci_low", t.share_interval.lower, Tolerance::Brentq),
                            ("ci_high", t.share_interval.upper, Tolerance::Brentq),
                            ("share_low", t.share_interval.lower, Tolerance::Tight),
                            ("share_high", t.share_interval.upper, Tolerance::Tight),
                            ("ratio_low", t.interval.lower, Tolerance::Tight),
                            ("ratio_high", t.interval.upper, Tolerance::Tight),
                            ("rate_ratio", t.rate_ratio, Tolerance::Tight),
                        ],
                    });
                }
            }
        }
    }
}

fn spread_cases(rng: &mut Rng, cases: &mut Vec<Case>) {
    let sizes = [
        (2, 2),
        (3, 4),
        (5, 5),
        (8, 8),
        (12, 9),
        (30, 30),
        (120, 120),
        (400, 350),
    ];
    for &(n1, n2) in &sizes {
        for &shape in &[Shape::Latency, Shape::Rounded, Shape::Levels] {
            for spread in [1.0, 2.5] {
                let x = sample(rng, shape, n1, 0.0, spread);
                let y = sample(rng, shape, n2, 0.0, 1.0);
                let tests: Vec<_> = ALTERNATIVES
                    .iter()
                    .map(|&a| dispersion::brown_forsythe(&x, &y, a).unwrap())
                    .collect();
                if tests[0].statistic == 0.0 || tests[0].statistic.is_infinite() {
                    // Degenerate (SciPy: NaN or a division by zero); covered in tests/judge.rs.
                    continue;
                }
                cases.push(Case {
                    input: json!({"kind": "levene", "x": x, "y": y}),
                    ours: vec![
                        ("w", tests[0].statistic, Tolerance::Tight),
                        ("p", tests[0].p_value, Tolerance::Tight),
                        ("p_greater", tests[1].p_value, Tolerance::Tight),
                        ("p_less", tests[2].p_value, Tolerance::Tight),
                        ("spread_ratio", tests[0].spread_ratio, Tolerance::Tight),
                    ],
                });
            }
        }
    }
}

fn mixture_cases(cases: &mut Vec<Case>) {
    for (s, f) in [
        (0, 0),
        (1, 0),
        (0, 1),
        (7, 1),
        (30, 28),
        (80, 20),
        (5, 60),
        (400, 380),
    ] {
        for p0 in [0.5, 0.1, 0.73] {
            for c in [2.0, 10.0] {
                for (side, name) in [
                    (Alternative::TwoSided, "two-sided"),
                    (Alternative::Greater, "greater"),
                    (Alternative::Less, "less"),
                ] {
                    let mut m = BetaMixture::new(p0, c, side, 0.05).unwrap();
                    m.observe(s, f);
                    cases.push(Case {
                        input: json!({"kind": "beta_mixture", "s": s, "f": f, "p0": p0,
                            "c": c, "side": name}),
                        ours: vec![("ln_e", m.ln_e_value(), Tolerance::Log)],
                    });
                }
            }
        }
    }
}

#[test]
fn statistics_agree_with_scipy() {
    let mut rng = Rng(0x5EED_CA7A_2026);
    let mut cases = Vec::new();
    rank_cases(&mut rng, &mut cases);
    rate_cases(&mut rng, &mut cases);
    spread_cases(&mut rng, &mut cases);
    mixture_cases(&mut cases);
    let inputs: Vec<Value> = cases.iter().map(|c| c.input.clone()).collect();
    let answers = reference(&inputs);
    assert_eq!(answers.len(), cases.len());

    let mut failures = Vec::new();
    let mut worst: std::collections::BTreeMap<&str, (f64, String)> = Default::default();
    let mut compared = 0;
    for (case, answer) in cases.iter().zip(&answers) {
        for &(key, ours, tolerance) in &case.ours {
            let theirs = number(&answer[key]);
            let d = deviation(ours, theirs, tolerance);
            compared += 1;
            let entry = worst.entry(key).or_insert((0.0, String::new()));
            if d > entry.0 {
                *entry = (d, format!("ours {ours:e}, SciPy {theirs:e}"));
            }
            if d > 1.0 {
                failures.push(format!(
                    "{key}: ours {ours:e}, SciPy {theirs:e}\n  case {}",
                    case.input
                ));
            }
        }
    }
    eprintln!("{} cases, {compared} numbers compared", cases.len());
    for (key, (d, example)) in &worst {
        eprintln!("  {key:>12}: largest deviation {d:.3e} of its tolerance ({example})");
    }
    assert!(
        failures.is_empty(),
        "{} of {compared} numbers disagree with SciPy:\n{}",
        failures.len(),
        failures[..failures.len().min(25)].join("\n")
    );
}
