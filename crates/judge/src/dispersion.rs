//! A spread regression: the canary's median matches the baseline's but its readings scatter
//! wider (a slow tail, an intermittent stall). A location test such as Mann–Whitney passes it.
//!
//! The Brown–Forsythe test — Levene's test centred on the median, `scipy.stats.levene(canary,
//! baseline, center="median")` — compares the absolute deviations from each arm's median: W is
//! the one-way ANOVA F statistic on them, and its two-sided p-value is P(F(1, N − 2) ≥ W). With
//! two arms W is the square of the pooled two-sample t statistic on the deviations, so the
//! one-sided p-values are those of that t test (`scipy.stats.ttest_ind` on the deviations,
//! `alternative="greater"` or `"less"`), which is how "only a wider canary is bad" is asked.
//!
//! The estimate is the ratio of the median absolute deviations, canary over baseline.

use serde::{Deserialize, Serialize};

use crate::special::beta_tails;
use crate::{Alternative, Arm, Error, check_sample, json_float, median};

/// The result of the Brown–Forsythe test of the canary's spread against the baseline's.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpreadTest {
    /// Levene's W (with median centring); infinite when the deviations differ between arms but
    /// not at all within them.
    #[serde(with = "json_float")]
    pub statistic: f64,
    /// The p-value for `alternative`.
    pub p_value: f64,
    /// The alternative: `Greater` asks whether the canary spreads wider.
    pub alternative: Alternative,
    /// Median absolute deviation of the canary over the baseline's: 1 when both are 0, infinite
    /// when only the baseline's is.
    #[serde(with = "json_float")]
    pub spread_ratio: f64,
    /// Readings from the canary.
    pub n_canary: usize,
    /// Readings from the baseline.
    pub n_baseline: usize,
}

/// The Brown–Forsythe test of the canary's spread against the baseline's.
///
/// Needs at least three readings in all (one degree of freedom). Where SciPy returns NaN
/// because every deviation equals its arm's mean deviation and the two means agree (0/0), this
/// returns W = 0: no difference in spread is visible (two-sided p = 1, one-sided p = ½, as for
/// any t = 0).
pub fn brown_forsythe(
    canary: &[f64],
    baseline: &[f64],
    alternative: Alternative,
) -> Result<SpreadTest, Error> {
    check_sample(Arm::Canary, canary)?;
    check_sample(Arm::Baseline, baseline)?;
    let (n1, n2) = (canary.len(), baseline.len());
    let total = n1 + n2;
    if total < 3 {
        return Err(Error::TooFew {
            test: "the Brown–Forsythe test",
            needed: 3,
            got: total,
        });
    }
    let deviations = |sample: &[f64]| {
        let centre = median(sample);
        sample
            .iter()
            .map(|v| (v - centre).abs())
            .collect::<Vec<f64>>()
    };
    let (z1, z2) = (deviations(canary), deviations(baseline));
    let mean = |z: &[f64]| z.iter().sum::<f64>() / z.len() as f64;
    let (m1, m2) = (mean(&z1), mean(&z2));
    let grand = (z1.iter().sum::<f64>() + z2.iter().sum::<f64>()) / total as f64;
    let between = n1 as f64 * (m1 - grand).powi(2) + n2 as f64 * (m2 - grand).powi(2);
    let within = z1.iter().map(|z| (z - m1).powi(2)).sum::<f64>()
        + z2.iter().map(|z| (z - m2).powi(2)).sum::<f64>();
    let df = (total - 2) as f64;
    let statistic = if between == 0.0 {
        0.0
    } else if within == 0.0 {
        f64::INFINITY
    } else {
        df * between / within
    };
    // P(F(1, df) ≥ W) = 1 − I_x(½, df/2) with x = W / (W + df).
    let two_sided = if statistic == f64::INFINITY {
        0.0
    } else {
        beta_tails(
            0.5,
            df / 2.0,
            statistic / (statistic + df),
            df / (statistic + df),
        )
        .1
    };
    // t = ±√W, its sign that of the canary's mean deviation minus the baseline's.
    let canary_wider = m1 > m2;
    let p_value = match alternative {
        Alternative::TwoSided => two_sided,
        Alternative::Greater if canary_wider => two_sided / 2.0,
        Alternative::Greater => 1.0 - two_sided / 2.0,
        Alternative::Less if m1 < m2 => two_sided / 2.0,
        Alternative::Less => 1.0 - two_sided / 2.0,
    };
    let (mad1, mad2) = (median(&z1), median(&z2));
    let spread_ratio = if mad1 == 0.0 && mad2 == 0.0 {
        1.0
    } else {
        mad1 / mad2
    };
    Ok(SpreadTest {
        statistic,
        p_value,
        alternative,
        spread_ratio,
        n_canary: n1,
        n_baseline: n2,
    })
}
