//! Mann–Whitney U and the Hodges–Lehmann shift: does the canary's distribution sit above or
//! below the baseline's, and by how much?
//!
//! The U statistic and its p-values follow `scipy.stats.mannwhitneyu` (SciPy 1.17) exactly: the
//! canary is the first sample, U is the canary's (R₁ − n₁(n₁+1)/2 with midranks), the exact
//! p-value comes from the permutation distribution of U, the asymptotic one from the normal
//! approximation with the tie-corrected variance and a continuity correction of ½.
//!
//! The Hodges–Lehmann estimate is the median of the n₁·n₂ differences canary − baseline, and its
//! interval at confidence 1 − α is [d₍ₖ₎, d₍ₙ₁ₙ₂₊₁₋ₖ₎] (Moses; Bauer 1972), with k chosen as:
//!
//! - exact (no ties and the smaller sample ≤ 8, or forced): k is the largest integer ≥ 1 with
//!   P(U ≤ k − 1) ≤ α/2 under the null, P taken from the exact distribution of U; the comparison
//!   allows a relative slack of 1e-12 so that rounding cannot move k;
//! - asymptotic: k = ⌊n₁n₂/2 + ½ − z·σ⌋ with z = `norm.isf(α/2)` and σ the tie-corrected
//!   standard deviation of U (the same σ as the p-value's);
//!
//! and when no k ≥ 1 exists (samples too small for the level) the interval is unbounded.

use serde::{Deserialize, Serialize};

use crate::special::{normal_isf, normal_sf};
use crate::{Alternative, Arm, Error, Interval, check_alpha, check_sample};

/// How the p-value (and the interval's k) is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// SciPy's `method="auto"`: exact when there are no ties and at least one sample has at
    /// most 8 readings, asymptotic otherwise.
    Auto,
    /// The exact permutation distribution of U. Ties are ignored, as in SciPy (a half-integer U
    /// is truncated, as SciPy's cast does). Cost grows as min(n₁, n₂)·n₁·n₂.
    Exact,
    /// The normal approximation with tie correction and continuity correction.
    Asymptotic,
}

/// The result of a Mann–Whitney U test of the canary against the baseline.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RankTest {
    /// The canary's U: how many (canary, baseline) pairs have the canary larger, ties counting ½.
    pub u: f64,
    /// The p-value for `alternative`.
    pub p_value: f64,
    /// The alternative the p-value is for.
    pub alternative: Alternative,
    /// The method used: `Exact` or `Asymptotic`, never `Auto`.
    pub method: Method,
    /// Readings from the canary.
    pub n_canary: usize,
    /// Readings from the baseline.
    pub n_baseline: usize,
}

/// The Hodges–Lehmann estimate of the shift canary − baseline and its confidence interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Shift {
    /// The median of all pairwise differences canary − baseline.
    pub estimate: f64,
    /// [d₍ₖ₎, d₍ₙ₁ₙ₂₊₁₋ₖ₎]; unbounded when `order` is 0.
    pub interval: Interval,
    /// k, the order of the difference that bounds the interval (1-based); 0 when none exists.
    pub order: usize,
    /// The confidence level 1 − α the interval was built for.
    pub confidence: f64,
    /// How k was chosen: `Exact` or `Asymptotic`.
    pub method: Method,
}

/// Ranks of the pooled sample, what the tests need of them.
struct Ranked {
    /// Sum of the canary's midranks.
    canary_rank_sum: f64,
    /// Σ (t³ − t) over groups of tied values.
    tie_term: f64,
    /// Whether any value occurs more than once.
    ties: bool,
}

fn rank(canary: &[f64], baseline: &[f64]) -> Ranked {
    let mut pooled: Vec<(f64, bool)> = canary
        .iter()
        .map(|&v| (v, true))
        .chain(baseline.iter().map(|&v| (v, false)))
        .collect();
    pooled.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut canary_rank_sum = 0.0;
    let mut tie_term = 0.0;
    let mut ties = false;
    let mut start = 0;
    while start < pooled.len() {
        let mut end = start + 1;
        // -0.0 and 0.0 are one value, as for SciPy.
        while end < pooled.len() && pooled[end].0 == pooled[start].0 {
            end += 1;
        }
        let t = (end - start) as f64;
        // Ranks start+1 ..= end share their average.
        let midrank = (start + 1 + end) as f64 / 2.0;
        canary_rank_sum += midrank * pooled[start..end].iter().filter(|p| p.1).count() as f64;
        if end - start > 1 {
            ties = true;
            tie_term += t * t * t - t;
        }
        start = end;
    }
    Ranked {
        canary_rank_sum,
        tie_term,
        ties,
    }
}

fn resolve(method: Method, n1: usize, n2: usize, ties: bool) -> Method {
    match method {
        Method::Auto if (n1 > 8 && n2 > 8) || ties => Method::Asymptotic,
        Method::Auto => Method::Exact,
        chosen => chosen,
    }
}

/// The standard deviation of U under the null, corrected for ties (SciPy's `_get_mwu_z`).
fn sigma(n1: usize, n2: usize, tie_term: f64) -> f64 {
    let (n1, n2) = (n1 as f64, n2 as f64);
    let n = n1 + n2;
    let variance = n1 * n2 / 12.0 * ((n + 1.0) - tie_term / (n * (n - 1.0)));
    variance.max(0.0).sqrt()
}

/// The exact null distribution of U for sample sizes n₁ and n₂ (no ties): P(U = u) for
/// u = 0 ..= n₁n₂.
///
/// The counts of rank arrangements with U = u are the coefficients of the Gaussian binomial
/// ∏ᵢ₌₁ᵐ (1 − q^{n+i}) / (1 − qⁱ) with m = min, n = max; each factor is applied as one
/// multiplication and one running sum, scaled by i / (n + i) so that the polynomial stays a
/// probability distribution instead of overflowing.
pub(crate) struct UDistribution {
    pmf: Vec<f64>,
}

impl UDistribution {
    pub(crate) fn new(n1: usize, n2: usize) -> UDistribution {
        let (m, n) = (n1.min(n2), n1.max(n2));
        let mut p = vec![0.0; m * n + 1];
        p[0] = 1.0;
        for i in 1..=m {
            let degree = i * n;
            // Multiply by (1 − q^{n+i}): top down, so each read is of the previous polynomial.
            for u in (n + i..=degree).rev() {
                p[u] -= p[u - n - i];
            }
            // Divide by (1 − qⁱ): a running sum with stride i.
            for u in i..=degree {
                p[u] += p[u - i];
            }
            let scale = i as f64 / (n + i) as f64;
            for v in &mut p[..=degree] {
                *v = (*v * scale).max(0.0);
            }
        }
        UDistribution { pmf: p }
    }

    /// P(U ≤ u), summed from the left as SciPy does.
    pub(crate) fn cdf(&self, u: usize) -> f64 {
        self.pmf[..=u.min(self.pmf.len() - 1)].iter().sum()
    }

    /// P(U ≥ u), computed as SciPy's `_MWU.sf`: from the left by symmetry.
    pub(crate) fn sf(&self, u: usize) -> f64 {
        let total = self.pmf.len() - 1;
        let complement = total.saturating_sub(u);
        if u < complement {
            1.0 - self.cdf(u) + self.pmf[u]
        } else {
            self.cdf(complement)
        }
    }
}

/// Mann–Whitney U test of the canary against the baseline.
///
/// Agrees with `scipy.stats.mannwhitneyu(canary, baseline, use_continuity=True,
/// alternative=..., method=...)`. When every reading is the same value the asymptotic p-value
/// is 1 (SciPy's arithmetic gives the same through an infinite z).
pub fn mann_whitney(
    canary: &[f64],
    baseline: &[f64],
    alternative: Alternative,
    method: Method,
) -> Result<RankTest, Error> {
    check_sample(Arm::Canary, canary)?;
    check_sample(Arm::Baseline, baseline)?;
    let (n1, n2) = (canary.len(), baseline.len());
    let ranked = rank(canary, baseline);
    let n1f = n1 as f64;
    let u1 = ranked.canary_rank_sum - n1f * (n1f + 1.0) / 2.0;
    let u2 = n1f * n2 as f64 - u1;
    let (u, factor) = match alternative {
        Alternative::Greater => (u1, 1.0),
        Alternative::Less => (u2, 1.0),
        Alternative::TwoSided => (u1.max(u2), 2.0),
    };
    let method = resolve(method, n1, n2, ranked.ties);
    let p = match method {
        Method::Exact => UDistribution::new(n1, n2).sf(u.trunc() as usize),
        _ => {
            let s = sigma(n1, n2, ranked.tie_term);
            let numerator = u - n1f * n2 as f64 / 2.0 - 0.5;
            if s > 0.0 {
                normal_sf(numerator / s)
            } else if numerator < 0.0 {
                1.0
            } else {
                0.0
            }
        }
    };
    Ok(RankTest {
        u: u1,
        p_value: (p * factor).clamp(0.0, 1.0),
        alternative,
        method,
        n_canary: n1,
        n_baseline: n2,
    })
}

/// The Hodges–Lehmann shift canary − baseline with its interval at `confidence` (e.g. 0.95);
/// k is chosen as the module documentation says, with `method` deciding exact or asymptotic as
/// for [`mann_whitney`].
pub fn hodges_lehmann(
    canary: &[f64],
    baseline: &[f64],
    confidence: f64,
    method: Method,
) -> Result<Shift, Error> {
    check_sample(Arm::Canary, canary)?;
    check_sample(Arm::Baseline, baseline)?;
    let alpha = check_alpha(1.0 - confidence).map_err(|_| Error::OutOfRange {
        name: "the confidence level",
        value: confidence,
        range: "(0, 1)",
    })?;
    let (n1, n2) = (canary.len(), baseline.len());
    let ranked = rank(canary, baseline);
    let method = resolve(method, n1, n2, ranked.ties);
    let order = interval_order(n1, n2, ranked.tie_term, alpha, method);

    let mut differences: Vec<f64> = canary
        .iter()
        .flat_map(|x| baseline.iter().map(move |y| x - y))
        .collect();
    differences.sort_by(f64::total_cmp);
    let total = differences.len();
    let estimate = if total % 2 == 1 {
        differences[total / 2]
    } else {
        (differences[total / 2 - 1] + differences[total / 2]) / 2.0
    };
    let interval = if order == 0 {
        Interval::UNBOUNDED
    } else {
        Interval {
            lower: differences[order - 1],
            upper: differences[total - order],
        }
    };
    Ok(Shift {
        estimate,
        interval,
        order,
        confidence,
        method,
    })
}

/// k for the interval [d₍ₖ₎, d₍ₙ₁ₙ₂₊₁₋ₖ₎]; 0 when no k ≥ 1 reaches the confidence level.
fn interval_order(n1: usize, n2: usize, tie_term: f64, alpha: f64, method: Method) -> usize {
    let total = n1 * n2;
    let half = alpha / 2.0 * (1.0 + 1e-12);
    match method {
        Method::Exact => {
            let distribution = UDistribution::new(n1, n2);
            let mut cumulative = 0.0;
            let mut order = 0;
            // k − 1 runs over 0, 1, …; P(U ≤ k − 1) ≤ α/2 < ½ keeps k below the median.
            for (j, p) in distribution.pmf.iter().enumerate() {
                cumulative += p;
                if cumulative > half {
                    break;
                }
                order = j + 1;
            }
            order.min(total.div_ceil(2))
        }
        _ => {
            let z = normal_isf(alpha / 2.0);
            let k = (total as f64 / 2.0 + 0.5 - z * sigma(n1, n2, tie_term)).floor();
            if k < 1.0 {
                0
            } else {
                (k as usize).min(total.div_ceil(2))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_distribution_is_symmetric_and_sums_to_one() {
        let d = UDistribution::new(3, 5);
        let total: f64 = d.pmf.iter().sum();
        assert!((total - 1.0).abs() < 1e-14);
        for u in 0..=15 {
            assert!((d.pmf[u] - d.pmf[15 - u]).abs() < 1e-15);
        }
        // 56 arrangements of 3 among 8; one has U = 0.
        assert!((d.pmf[0] - 1.0 / 56.0).abs() < 1e-16);
    }
}
