//! `canary-judge`: is the canary worse than the baseline? The statistics that answer it.
//!
//! Every guardrail compares the canary with a fixed number; this crate compares the canary with
//! the baseline running beside it, with the test that fits the data:
//!
//! - [`rank`] — latencies and other continuous readings: Mann–Whitney U (exact for small
//!   samples without ties, the tie-corrected normal approximation otherwise) and the
//!   Hodges–Lehmann shift with its distribution-free interval — Kayenta's method.
//! - [`counts`] — errors out of requests: the conditional exact test of two Poisson rates and
//!   the rate ratio with its exact interval, because a rank test on sparse counts sees nothing.
//! - [`dispersion`] — a wider spread at the same median (Brown–Forsythe), which a location test
//!   passes.
//! - [`sequential`] — the engine looks every 30 s; these tests stay valid however often they are
//!   looked at, so a healthy canary is rolled back at most at the configured rate over a run.
//! - [`judge`] — a comparison's classification and Kayenta-style scoring into a verdict.
//!
//! Pure: no I/O, no clock, no randomness. The fixed-sample tests agree with SciPy 1.17 to 1e-9
//! (`tests/scipy.rs` runs the reference in `tests/reference.py`).
#![forbid(unsafe_code)]

pub mod counts;
pub mod dispersion;
pub mod judge;
pub mod rank;
pub mod rng;
pub mod sequential;
mod special;

use serde::{Deserialize, Serialize};

pub use counts::{Counts, RateOutcome, RateTest};
pub use dispersion::SpreadTest;
pub use judge::{
    Classification, Comparison, Direction, Effect, EstimateKind, Evidence, GroupScore, Judgement,
    Samples, Score, ScoreVerdict, Scoring, Typical, judge_counts, judge_readings, judge_spread,
};
pub use rank::{Method, RankTest, Shift};
pub use sequential::{BetaMixture, CountSequence, SignSequence};

/// Which arm a reading belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arm {
    /// The new version under test.
    Canary,
    /// The current version, running beside it.
    Baseline,
}

impl std::fmt::Display for Arm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Arm::Canary => "canary",
            Arm::Baseline => "baseline",
        })
    }
}

/// The alternative hypothesis, always stated for the canary against the baseline (SciPy's
/// `alternative` with the canary as the first sample).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Alternative {
    /// The canary differs from the baseline, either way.
    TwoSided,
    /// The canary is larger (stochastically, or its rate, or its spread).
    Greater,
    /// The canary is smaller.
    Less,
}

/// What went wrong with the input; each says what to change.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// A sample was empty where the test needs readings from both arms.
    #[error("the {arm} sample is empty: a comparison needs at least one reading from each arm")]
    Empty { arm: Arm },
    /// A reading was NaN or infinite; no order or distance can be built on it.
    #[error(
        "the {arm} reading at position {index} is {value}: drop readings that are not finite \
         before judging (a missing reading is no data, not a number)"
    )]
    NotFinite { arm: Arm, index: usize, value: f64 },
    /// Too few readings for the test to have any degrees of freedom.
    #[error("{test} needs at least {needed} readings in all, got {got}")]
    TooFew {
        test: &'static str,
        needed: usize,
        got: usize,
    },
    /// An exposure (requests, stream starts, seconds) that is not a positive finite number.
    #[error(
        "the {arm} exposure is {value}: exposures must be positive and finite (an arm with no \
         traffic has no data to judge)"
    )]
    Exposure { arm: Arm, value: f64 },
    /// A significance level, confidence level or effect outside its range.
    #[error("{name} is {value}, which is outside {range}")]
    OutOfRange {
        name: &'static str,
        value: f64,
        range: &'static str,
    },
    /// A combination the test cannot express.
    #[error("{0}")]
    Unsupported(&'static str),
}

/// A confidence interval or confidence sequence. Either end may be infinite (an interval that
/// the data cannot bound on that side); in JSON such ends are written `"-Inf"` / `"+Inf"`, as
/// Prometheus and the engine's journal do.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// The lower end.
    #[serde(with = "json_float")]
    pub lower: f64,
    /// The upper end.
    #[serde(with = "json_float")]
    pub upper: f64,
}

impl Interval {
    /// The whole line: what a sample too small to bound anything gives.
    pub const UNBOUNDED: Interval = Interval {
        lower: f64::NEG_INFINITY,
        upper: f64::INFINITY,
    };

    /// Whether `value` lies inside, ends included.
    pub fn contains(&self, value: f64) -> bool {
        self.lower <= value && value <= self.upper
    }
}

/// Checks a significance level: 0 < α < 1.
pub(crate) fn check_alpha(alpha: f64) -> Result<f64, Error> {
    if alpha > 0.0 && alpha < 1.0 {
        Ok(alpha)
    } else {
        Err(Error::OutOfRange {
            name: "the significance level α",
            value: alpha,
            range: "(0, 1)",
        })
    }
}

/// Checks every reading of one arm is finite, and that there is at least one.
pub(crate) fn check_sample(arm: Arm, sample: &[f64]) -> Result<(), Error> {
    if sample.is_empty() {
        return Err(Error::Empty { arm });
    }
    match sample.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(Error::NotFinite {
            arm,
            index,
            value: sample[index],
        }),
        None => Ok(()),
    }
}

/// The median of a non-empty sample (the mean of the two middle values when the count is even,
/// as NumPy's `median`).
pub(crate) fn median(sample: &[f64]) -> f64 {
    let mut v = sample.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// `#[serde(with = "json_float")]`: an `f64` whose infinities and NaN survive JSON, written as
/// Prometheus writes them (`"+Inf"`, `"-Inf"`, `"NaN"`). canary-core's journal uses this one
/// (canary-core depends on this crate).
pub mod json_float {
    use serde::de::{self, Deserializer};
    use serde::{Deserialize, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_nan() {
            s.serialize_str("NaN")
        } else if *v == f64::INFINITY {
            s.serialize_str("+Inf")
        } else if *v == f64::NEG_INFINITY {
            s.serialize_str("-Inf")
        } else {
            s.serialize_f64(*v)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Num {
            N(f64),
            S(String),
        }
        match Num::deserialize(d)? {
            Num::N(v) => Ok(v),
            Num::S(s) => match s.as_str() {
                "NaN" => Ok(f64::NAN),
                "+Inf" | "Inf" => Ok(f64::INFINITY),
                "-Inf" => Ok(f64::NEG_INFINITY),
                other => Err(de::Error::custom(format!("not a number: {other:?}"))),
            },
        }
    }
}
