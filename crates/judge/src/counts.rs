//! Counts out of exposure — errors out of requests, failed out of started streams: is the
//! canary's rate higher than the baseline's?
//!
//! The conditional exact test of two Poisson rates: given n = k₁ + k₂ events in all, under the
//! null hypothesis "the canary's rate is ρ₀ times the baseline's" each event is the canary's
//! with probability p₀ = ρ₀t₁ / (ρ₀t₁ + t₂), so k₁ ~ Binomial(n, p₀). The p-value is
//! `scipy.stats.binomtest(k₁, n, p₀, alternative)` (two-sided: the probabilities no larger than
//! the observed one, with SciPy's relative tolerance 1 + 1e-7), and the rate ratio's interval
//! is the exact Clopper–Pearson interval for the proportion (`proportion_ci(method="exact")`,
//! one-sided for a one-sided alternative, as SciPy does) mapped through ρ = p/(1 − p) · t₂/t₁.
//!
//! A rank test on per-interval error counts, mostly zeros, sees almost nothing; this test uses
//! every event.

use serde::{Deserialize, Serialize};

use crate::special::{Tail, beta_quantile, binomial_cdf, binomial_pmf, binomial_sf_inclusive};
use crate::{Alternative, Arm, Error, Interval, check_alpha, json_float};

/// Events counted in one arm over an exposure (requests, stream starts, seconds of traffic).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    /// The events: errors, failed streams.
    pub events: u64,
    /// What the events are out of; positive and finite.
    pub exposure: f64,
}

impl Counts {
    /// `events` out of `exposure`.
    pub fn new(events: u64, exposure: f64) -> Counts {
        Counts { events, exposure }
    }
}

/// The outcome of comparing two rates.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum RateOutcome {
    /// Neither arm had a single event: nothing to compare (not a pass, not a failure).
    NoEvents,
    /// The test ran.
    Tested(RateTest),
}

/// The exact test of the canary's rate against the baseline's.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RateTest {
    /// The canary's rate over the baseline's, (k₁/t₁)/(k₂/t₂); infinite when the baseline had
    /// no event.
    #[serde(with = "json_float")]
    pub rate_ratio: f64,
    /// The exact interval for the rate ratio at the requested confidence.
    pub interval: Interval,
    /// The p-value for the alternative, against the null ratio.
    pub p_value: f64,
    /// The alternative the p-value is for.
    pub alternative: Alternative,
    /// The rate ratio under the null hypothesis (1 + the allowed relative effect).
    pub null_ratio: f64,
    /// The canary's share of the events, k₁ / n.
    pub share: f64,
    /// The exact (Clopper–Pearson) interval for that share.
    pub share_interval: Interval,
    /// The share expected under the null hypothesis, p₀.
    pub null_share: f64,
    /// The canary's events and exposure.
    pub canary: Counts,
    /// The baseline's events and exposure.
    pub baseline: Counts,
}

fn check_exposure(arm: Arm, counts: Counts) -> Result<(), Error> {
    if counts.exposure > 0.0 && counts.exposure.is_finite() {
        Ok(())
    } else {
        Err(Error::Exposure {
            arm,
            value: counts.exposure,
        })
    }
}

/// The exact conditional test of the canary's rate against `null_ratio` times the baseline's
/// (1.0 for "the same rate"), with the rate ratio's interval at `confidence`.
pub fn rate_ratio(
    canary: Counts,
    baseline: Counts,
    null_ratio: f64,
    alternative: Alternative,
    confidence: f64,
) -> Result<RateOutcome, Error> {
    check_exposure(Arm::Canary, canary)?;
    check_exposure(Arm::Baseline, baseline)?;
    if !(null_ratio > 0.0 && null_ratio.is_finite()) {
        return Err(Error::OutOfRange {
            name: "the null rate ratio",
            value: null_ratio,
            range: "(0, ∞)",
        });
    }
    let alpha = check_alpha(1.0 - confidence).map_err(|_| Error::OutOfRange {
        name: "the confidence level",
        value: confidence,
        range: "(0, 1)",
    })?;
    let n = canary.events + baseline.events;
    if n == 0 {
        return Ok(RateOutcome::NoEvents);
    }
    let k = canary.events;
    let (t1, t2) = (canary.exposure, baseline.exposure);
    let p0 = if null_ratio == 1.0 {
        t1 / (t1 + t2)
    } else {
        null_ratio * t1 / (null_ratio * t1 + t2)
    };
    let p_value = binomial_test(k, n, p0, alternative);
    let share_interval = clopper_pearson(k, n, alpha, alternative);
    let to_ratio = |p: f64| {
        if p >= 1.0 {
            f64::INFINITY
        } else {
            p / (1.0 - p) * (t2 / t1)
        }
    };
    Ok(RateOutcome::Tested(RateTest {
        rate_ratio: if baseline.events == 0 {
            f64::INFINITY
        } else {
            (k as f64 / t1) / (baseline.events as f64 / t2)
        },
        interval: Interval {
            lower: to_ratio(share_interval.lower),
            upper: to_ratio(share_interval.upper),
        },
        p_value,
        alternative,
        null_ratio,
        share: k as f64 / n as f64,
        share_interval,
        null_share: p0,
        canary,
        baseline,
    }))
}

/// `scipy.stats.binomtest(k, n, p, alternative).pvalue`, step for step.
fn binomial_test(k: u64, n: u64, p: f64, alternative: Alternative) -> f64 {
    match alternative {
        Alternative::Less => binomial_cdf(k, n, p),
        Alternative::Greater => binomial_sf_inclusive(k, n, p),
        Alternative::TwoSided => {
            let d = binomial_pmf(k, n, p);
            let rerr = 1.0 + 1e-7;
            let (kf, nf) = (k as f64, n as f64);
            let pmf = |i: i64| binomial_pmf(i as u64, n, p);
            let pval = if kf == p * nf {
                1.0
            } else if kf < p * nf {
                // The first index past the mode whose probability is ≤ d·rerr.
                let ix = search(|i| -pmf(i), -d * rerr, (p * nf).ceil() as i64, n as i64);
                let y = n as i64 - ix + i64::from(d * rerr == pmf(ix));
                binomial_cdf(k, n, p) + binomial_sf_inclusive((n as i64 - y + 1) as u64, n, p)
            } else {
                let ix = search(pmf, d * rerr, 0, (p * nf).floor() as i64);
                let y = ix + 1;
                let lower = if y >= 1 {
                    binomial_cdf((y - 1) as u64, n, p)
                } else {
                    0.0
                };
                lower + binomial_sf_inclusive(k, n, p)
            };
            pval.min(1.0)
        }
    }
}

/// SciPy's `_binary_search_for_binom_tst`: the i in [lo, hi] with a(i) ≤ d < a(i + 1), for a
/// function `a` ascending over the range.
fn search(a: impl Fn(i64) -> f64, d: f64, mut lo: i64, mut hi: i64) -> i64 {
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let value = a(mid);
        if value < d {
            lo = mid + 1;
        } else if value > d {
            hi = mid - 1;
        } else {
            return mid;
        }
    }
    if a(lo) <= d { lo } else { lo - 1 }
}

/// The exact interval for a binomial proportion, SciPy's `proportion_ci(method="exact")`:
/// two-sided with α/2 in each tail, or one-sided with α in one tail.
fn clopper_pearson(k: u64, n: u64, alpha: f64, alternative: Alternative) -> Interval {
    let (kf, nf) = (k as f64, n as f64);
    // P(X ≥ k | p) = I_p(k, n − k + 1) = tail → the lower end.
    let lower = |tail: f64| {
        if k == 0 {
            0.0
        } else {
            beta_quantile(kf, nf - kf + 1.0, tail, Tail::Lower)
        }
    };
    // P(X ≤ k | p) = 1 − I_p(k + 1, n − k) = tail → the upper end.
    let upper = |tail: f64| {
        if k == n {
            1.0
        } else {
            beta_quantile(kf + 1.0, nf - kf, tail, Tail::Upper)
        }
    };
    match alternative {
        Alternative::TwoSided => Interval {
            lower: lower(alpha / 2.0),
            upper: upper(alpha / 2.0),
        },
        Alternative::Less => Interval {
            lower: 0.0,
            upper: upper(alpha),
        },
        Alternative::Greater => Interval {
            lower: lower(alpha),
            upper: 1.0,
        },
    }
}
