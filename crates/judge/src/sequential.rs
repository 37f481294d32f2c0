//! Tests that stay valid however often they are looked at.
//!
//! The engine evaluates every 30 s, 120 times in an hour's run. A fixed-sample test checked at
//! every look rejects a healthy canary far more often than its nominal α (the A/A simulation in
//! `tests/simulation.rs` shows it). Each test here is a mixture sequential probability ratio
//! test: its e-value — a mixture of likelihood ratios over the alternatives — is a nonnegative
//! (super)martingale with mean at most 1 under the null hypothesis, so by Ville's inequality
//! P(the e-value ever reaches 1/α) ≤ α over the whole run, however it is stopped. Stopping as
//! soon as it crosses is allowed, and a clear regression crosses early.
//!
//! - [`BetaMixture`] — a stream of successes and failures with null probability p₀; the
//!   alternative is mixed over a Beta prior centred on p₀ (Lindon & Malek, "Anytime-valid
//!   inference for multinomial count data", NeurIPS 2022, in the two-category case). One-sided
//!   nulls (θ ≤ p₀ or θ ≥ p₀) truncate the prior to the other side, which keeps the mixture a
//!   supermartingale under every θ of the null. Inverting the two-sided mixture over p₀ gives a
//!   confidence sequence for θ.
//! - [`SignSequence`] — continuous readings, one canary and one baseline reading per look: a
//!   look counts against the canary when its reading is above the baseline's moved by the
//!   allowed effect, for it when below, and not at all on a tie. Under "the canary is no worse
//!   than allowed" a look counts against it with probability at most ½, so a [`BetaMixture`] at
//!   p₀ = ½ tests it. This is a sequential *sign test* of stochastic order on paired readings —
//!   the idea of Lindon, Sanden & Shirikian ("Rapid Regression Detection in Software
//!   Deployments through Sequential Testing", KDD 2022), in a much simpler form: it uses only
//!   the sign of each pair, not the whole distributions, so it needs more looks than their test
//!   for small effects; in exchange it is exact, needs no tuning, and is immune to load changes
//!   that move both arms together.
//! - [`CountSequence`] — events out of exposure per look (errors out of requests). Under "the
//!   canary's rate is ρ₀ times the baseline's" each event of a look is the canary's with
//!   probability ρ₀t₁/(ρ₀t₁ + t₂). A Beta mixture needs that probability fixed, but the
//!   exposures change with every traffic step and every look; so the mixture is taken over the
//!   log rate ratio instead, with a discrete normal prior on a fine grid. A discrete prior is a
//!   genuine mixing distribution, so the e-value is an exact (super)martingale and Ville's bound
//!   holds without approximation; inverting it over ρ gives a confidence sequence for the rate
//!   ratio.
//!
//! `Either` directions run the two one-sided tests and use the mean of their e-values, itself
//! an e-process under the intersection of both nulls.

use serde::{Deserialize, Serialize};

use crate::counts::Counts;
use crate::judge::{
    Classification, Comparison, Direction, Effect, EstimateKind, Evidence, Judgement, Samples,
};
use crate::special::{ln_add_exp, ln_beta, ln_beta_tails};
use crate::{Alternative, Arm, Error, Interval, check_alpha};

/// Bisection to the precision of f64 for a monotone condition on [lo, hi]: returns the boundary
/// where `inside` turns from false (at lo) to true (at hi).
fn boundary(mut lo: f64, mut hi: f64, inside: impl Fn(f64) -> bool) -> f64 {
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi {
            break;
        }
        if inside(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    0.5 * (lo + hi)
}

/// The mixture SPRT for a Bernoulli stream with null success probability p₀ (see the module
/// documentation). Fed counts of successes and failures, one look at a time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BetaMixture {
    null: f64,
    a: f64,
    b: f64,
    side: Alternative,
    alpha: f64,
    successes: u64,
    failures: u64,
    looks: u64,
    first_crossing: Option<u64>,
}

impl BetaMixture {
    /// A test of θ = p₀ (`TwoSided`), θ ≤ p₀ (`Greater`: evidence only when successes are too
    /// many) or θ ≥ p₀ (`Less`), at level α. The prior is Beta(c·p₀, c·(1 − p₀)), truncated to
    /// the alternative's side; `concentration` c sets which effects are found fastest — small c
    /// (2 is uniform at p₀ = ½) favours large effects, large c small ones.
    pub fn new(
        null: f64,
        concentration: f64,
        side: Alternative,
        alpha: f64,
    ) -> Result<BetaMixture, Error> {
        if !(null > 0.0 && null < 1.0) {
            return Err(Error::OutOfRange {
                name: "the null probability p₀",
                value: null,
                range: "(0, 1)",
            });
        }
        if !(concentration > 0.0 && concentration.is_finite()) {
            return Err(Error::OutOfRange {
                name: "the prior concentration",
                value: concentration,
                range: "(0, ∞)",
            });
        }
        Ok(BetaMixture {
            null,
            a: concentration * null,
            b: concentration * (1.0 - null),
            side,
            alpha: check_alpha(alpha)?,
            successes: 0,
            failures: 0,
            looks: 0,
            first_crossing: None,
        })
    }

    /// Adds one look's successes and failures.
    pub fn observe(&mut self, successes: u64, failures: u64) {
        self.successes += successes;
        self.failures += failures;
        self.looks += 1;
        if self.first_crossing.is_none() && self.ln_e_value() >= -self.alpha.ln() {
            self.first_crossing = Some(self.looks);
        }
    }

    /// ln of the e-value (the mixture Bayes factor against the null).
    pub fn ln_e_value(&self) -> f64 {
        let (s, f) = (self.successes as f64, self.failures as f64);
        let (a, b, p0) = (self.a, self.b, self.null);
        let ln_null = s * p0.ln() + f * (1.0 - p0).ln();
        let mixture = match self.side {
            Alternative::TwoSided => ln_beta(a + s, b + f) - ln_beta(a, b),
            // ∫ over θ > p₀ of θ^s (1 − θ)^f under the truncated prior.
            Alternative::Greater => {
                ln_beta(a + s, b + f) + ln_beta_tails(a + s, b + f, p0, 1.0 - p0).1
                    - ln_beta(a, b)
                    - ln_beta_tails(a, b, p0, 1.0 - p0).1
            }
            Alternative::Less => {
                ln_beta(a + s, b + f) + ln_beta_tails(a + s, b + f, p0, 1.0 - p0).0
                    - ln_beta(a, b)
                    - ln_beta_tails(a, b, p0, 1.0 - p0).0
            }
        };
        mixture - ln_null
    }

    /// The e-value: how many times more likely the data are under the mixture than the null.
    pub fn e_value(&self) -> f64 {
        self.ln_e_value().exp()
    }

    /// The look at which the e-value first reached 1/α, if it has.
    pub fn first_crossing(&self) -> Option<u64> {
        self.first_crossing
    }

    /// Whether the null hypothesis has been rejected (the e-value reached 1/α at some look).
    pub fn rejected(&self) -> bool {
        self.first_crossing.is_some()
    }

    /// Successes so far.
    pub fn successes(&self) -> u64 {
        self.successes
    }

    /// Failures so far.
    pub fn failures(&self) -> u64 {
        self.failures
    }

    /// Looks so far.
    pub fn looks(&self) -> u64 {
        self.looks
    }

    /// The confidence sequence for θ at level 1 − α: every θ that the two-sided mixture (with
    /// this test's prior) does not reject. It covers the true θ at every look at once with
    /// probability at least 1 − α.
    pub fn confidence_sequence(&self) -> Interval {
        let (s, f) = (self.successes as f64, self.failures as f64);
        if s + f == 0.0 {
            return Interval {
                lower: 0.0,
                upper: 1.0,
            };
        }
        let threshold = ln_beta(self.a + s, self.b + f) - ln_beta(self.a, self.b) + self.alpha.ln();
        let ln_likelihood = |p: f64| s * p.ln() + f * (1.0 - p).ln();
        let inside = |p: f64| ln_likelihood(p) > threshold;
        let mle = s / (s + f);
        let lower = if s == 0.0 || inside(0.0) {
            0.0
        } else {
            boundary(0.0, mle, inside)
        };
        let upper = if f == 0.0 || inside(1.0) {
            1.0
        } else {
            boundary(mle, 1.0, |p| !inside(p))
        };
        Interval { lower, upper }
    }
}

/// The sequential sign test of "the canary's readings are no worse than the baseline's, up to
/// the allowed effect" (see the module documentation). Feed it one canary and one baseline
/// reading per look.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SignSequence {
    direction: Direction,
    effect: Effect,
    alpha: f64,
    /// Looks where the canary was above the allowance (successes) or below it (failures).
    high: Option<BetaMixture>,
    /// Looks where the canary was below the allowance (successes) or above it (failures).
    low: Option<BetaMixture>,
    looks: u64,
    ties: u64,
    first_crossing: Option<(u64, Classification)>,
}

/// The Beta(1, 1) prior: the sign test's mixture over P(the canary is worse) on (½, 1).
const SIGN_CONCENTRATION: f64 = 2.0;

/// The e-value of an `Either` test: the mean of the sides'; of a one-sided test, its side's.
fn ln_combined(high: Option<f64>, low: Option<f64>) -> f64 {
    match (high, low) {
        (Some(h), Some(l)) => ln_add_exp(h, l) - std::f64::consts::LN_2,
        (Some(h), None) => h,
        (None, Some(l)) => l,
        (None, None) => 0.0,
    }
}

/// Which side crossed: the one with the larger e-value.
fn crossed_side(high: Option<f64>, low: Option<f64>) -> Classification {
    match (high, low) {
        (Some(h), Some(l)) if l > h => Classification::Low,
        (Some(_), _) => Classification::High,
        _ => Classification::Low,
    }
}

impl SignSequence {
    /// A sign test for `direction` with the allowed `effect`, at level α over the whole run.
    pub fn new(direction: Direction, effect: Effect, alpha: f64) -> Result<SignSequence, Error> {
        let alpha = check_alpha(alpha)?;
        let effect = effect.check(direction)?;
        let side = |bad: bool| {
            bad.then(|| BetaMixture::new(0.5, SIGN_CONCENTRATION, Alternative::Greater, alpha))
                .transpose()
        };
        Ok(SignSequence {
            direction,
            effect,
            alpha,
            high: side(direction.increase_is_bad())?,
            low: side(direction.decrease_is_bad())?,
            looks: 0,
            ties: 0,
            first_crossing: None,
        })
    }

    /// Adds one look: the canary's and the baseline's reading for the same interval. Each
    /// look's readings must cover their own interval: readings over overlapping ranges (a
    /// 5-minute quantile evaluated every 30 s) make successive looks dependent, and the
    /// whole-run guarantee assumes they are not.
    pub fn observe(&mut self, canary: f64, baseline: f64) -> Result<(), Error> {
        for (arm, value) in [(Arm::Canary, canary), (Arm::Baseline, baseline)] {
            if !value.is_finite() {
                return Err(Error::NotFinite {
                    arm,
                    index: self.looks as usize,
                    value,
                });
            }
        }
        self.looks += 1;
        let mut tied = true;
        if let Some(high) = &mut self.high {
            let limit = self.effect.upper(baseline);
            if canary != limit {
                tied = false;
                high.observe(u64::from(canary > limit), u64::from(canary < limit));
            }
        }
        if let Some(low) = &mut self.low {
            let limit = self.effect.lower(baseline);
            if canary != limit {
                tied = false;
                low.observe(u64::from(canary < limit), u64::from(canary > limit));
            }
        }
        if tied {
            self.ties += 1;
        }
        if self.first_crossing.is_none() && self.ln_e_value() >= -self.alpha.ln() {
            let side = crossed_side(
                self.high.as_ref().map(BetaMixture::ln_e_value),
                self.low.as_ref().map(BetaMixture::ln_e_value),
            );
            self.first_crossing = Some((self.looks, side));
        }
        Ok(())
    }

    /// ln of the e-value against "the canary is no worse than allowed".
    pub fn ln_e_value(&self) -> f64 {
        ln_combined(
            self.high.as_ref().map(BetaMixture::ln_e_value),
            self.low.as_ref().map(BetaMixture::ln_e_value),
        )
    }

    /// The look at which the e-value first reached 1/α and the side it found worse, if it has.
    pub fn first_crossing(&self) -> Option<(u64, Classification)> {
        self.first_crossing
    }

    /// Looks so far, and how many of them were ties (dropped).
    pub fn looks(&self) -> (u64, u64) {
        (self.looks, self.ties)
    }

    /// The test of "higher than allowed", when an increase is bad: its confidence sequence is
    /// for P(the canary's reading is above the allowance | not a tie).
    pub fn high(&self) -> Option<&BetaMixture> {
        self.high.as_ref()
    }

    /// The test of "lower than allowed", when a decrease is bad.
    pub fn low(&self) -> Option<&BetaMixture> {
        self.low.as_ref()
    }

    /// The judgement so far: `High`/`Low` once the e-value has crossed 1/α (and from then on),
    /// `Pass` before, `NoData` before any look. The estimate is the share of looks with the
    /// canary above the allowance (below it, for `Decrease`), with its confidence sequence.
    pub fn judgement(&self, comparison: &Comparison) -> Judgement {
        let samples = Samples {
            canary: self.looks,
            baseline: self.looks,
        };
        if self.looks == 0 {
            return Judgement::no_data(comparison, samples);
        }
        let classification = match self.first_crossing {
            Some((_, side)) => side,
            None => Classification::Pass,
        };
        let shown = self.high.as_ref().or(self.low.as_ref());
        let estimate = shown.and_then(|m| {
            let n = m.successes() + m.failures();
            (n > 0).then(|| m.successes() as f64 / n as f64)
        });
        let of = if self.high.is_some() {
            EstimateKind::LooksAbove
        } else {
            EstimateKind::LooksBelow
        };
        Judgement::new(
            comparison,
            classification,
            estimate,
            shown.map(BetaMixture::confidence_sequence),
            Evidence::EValue {
                e_value: self.ln_e_value().exp(),
                alpha: self.alpha,
            },
            samples,
        )
        .of(of)
    }
}

/// One look's events, by the log of its exposure ratio t₁/t₂ (looks with the same ratio are
/// merged: the likelihood depends on them only through the sums).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Window {
    ln_odds: f64,
    canary_events: u64,
    events: u64,
}

impl Window {
    /// ln of this window's likelihood at log rate ratio β:
    /// k₁ ln p + k₂ ln(1 − p) with logit p = ln(t₁/t₂) + β.
    fn ln_likelihood(&self, beta: f64) -> f64 {
        let x = self.ln_odds + beta;
        self.canary_events as f64 * x - self.events as f64 * ln_one_plus_exp(x)
    }
}

/// ln(1 + eˣ).
fn ln_one_plus_exp(x: f64) -> f64 {
    if x > 0.0 {
        x + (-x).exp().ln_1p()
    } else {
        x.exp().ln_1p()
    }
}

/// The grid of log rate ratios the count mixture puts its prior on: ±`GRID_HALF_WIDTH` around
/// the null in steps of `GRID_STEP` (ratios from 1/400 to 400 times the null).
const GRID_STEP: f64 = 0.02;
const GRID_HALF_WIDTH: usize = 300;

/// One side of the count mixture: the prior's support (log rate ratios β on one side of the
/// null), its log weights, and Σ over looks of ln L(β) − ln L(β₀) at each point.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct RateMixture {
    null: f64,
    support: Vec<f64>,
    ln_weights: Vec<f64>,
    ln_ratio: Vec<f64>,
}

impl RateMixture {
    /// `side`: `Greater` puts the prior above the null (evidence of a higher canary rate),
    /// `Less` below, `TwoSided` on both.
    fn new(null: f64, scale: f64, side: Alternative) -> RateMixture {
        let mut support = Vec::new();
        let mut ln_weights = Vec::new();
        let half = GRID_HALF_WIDTH as i64;
        for j in -half..=half {
            let keep = match side {
                Alternative::Greater => j > 0,
                Alternative::Less => j < 0,
                Alternative::TwoSided => true,
            };
            if keep {
                let offset = j as f64 * GRID_STEP;
                support.push(null + offset);
                ln_weights.push(-0.5 * (offset / scale).powi(2));
            }
        }
        let total = ln_weights
            .iter()
            .fold(f64::NEG_INFINITY, |acc, &w| ln_add_exp(acc, w));
        for w in &mut ln_weights {
            *w -= total;
        }
        let ln_ratio = vec![0.0; support.len()];
        RateMixture {
            null,
            support,
            ln_weights,
            ln_ratio,
        }
    }

    fn observe(&mut self, window: &Window) {
        let at_null = window.ln_likelihood(self.null);
        for (ratio, &beta) in self.ln_ratio.iter_mut().zip(&self.support) {
            *ratio += window.ln_likelihood(beta) - at_null;
        }
    }

    fn ln_e_value(&self) -> f64 {
        self.ln_weights
            .iter()
            .zip(&self.ln_ratio)
            .fold(f64::NEG_INFINITY, |acc, (w, r)| ln_add_exp(acc, w + r))
    }
}

/// The sequential test of the canary's event rate against the baseline's (see the module
/// documentation). Feed it each look's events and exposures per arm.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CountSequence {
    alpha: f64,
    scale: f64,
    high: Option<RateMixture>,
    low: Option<RateMixture>,
    windows: Vec<Window>,
    looks: u64,
    /// Looks where both arms had exposure: data, even without a single event.
    #[serde(default)]
    exposed_looks: u64,
    canary_events: u64,
    baseline_events: u64,
    first_crossing: Option<(u64, Classification)>,
}

impl CountSequence {
    /// A sequential rate test for `direction` at level α over the whole run: an increase is
    /// bad when the canary's rate exceeds (1 + δ) times the baseline's, a decrease when it falls
    /// below (1 − δ) times, for `Effect::Relative(δ)`. The prior on the log rate ratio is normal
    /// with standard deviation `prior_scale` around the null (1.0 suits ratios up to about 5,
    /// e.g. 0.1 % → 0.5 % errors), truncated to the bad side.
    pub fn new(
        direction: Direction,
        effect: Effect,
        alpha: f64,
        prior_scale: f64,
    ) -> Result<CountSequence, Error> {
        let alpha = check_alpha(alpha)?;
        let Effect::Relative(delta) = effect.check(direction)? else {
            return Err(Error::Unsupported(
                "an absolute allowed effect cannot be applied to a rate ratio: give counts a \
                 relative one (0.1 lets the canary's rate be 10 % higher)",
            ));
        };
        if !(prior_scale > 0.0 && prior_scale.is_finite()) {
            return Err(Error::OutOfRange {
                name: "the prior scale",
                value: prior_scale,
                range: "(0, ∞)",
            });
        }
        let high = direction
            .increase_is_bad()
            .then(|| RateMixture::new((1.0 + delta).ln(), prior_scale, Alternative::Greater));
        let low = direction
            .decrease_is_bad()
            .then(|| RateMixture::new((1.0 - delta).ln(), prior_scale, Alternative::Less));
        Ok(CountSequence {
            alpha,
            scale: prior_scale,
            high,
            low,
            windows: Vec::new(),
            looks: 0,
            exposed_looks: 0,
            canary_events: 0,
            baseline_events: 0,
            first_crossing: None,
        })
    }

    /// Adds one look: each arm's events and exposure over the same interval — the increase
    /// since the previous look, never a running or overlapping total. A look where an
    /// arm had no exposure carries no information about the ratio and only counts as a look;
    /// events without exposure are an error.
    pub fn observe(&mut self, canary: Counts, baseline: Counts) -> Result<(), Error> {
        for (arm, c) in [(Arm::Canary, canary), (Arm::Baseline, baseline)] {
            let valid = c.exposure.is_finite() && c.exposure >= 0.0;
            if !valid || (c.exposure == 0.0 && c.events > 0) {
                return Err(Error::Exposure {
                    arm,
                    value: c.exposure,
                });
            }
        }
        self.looks += 1;
        if canary.exposure > 0.0 && baseline.exposure > 0.0 {
            self.exposed_looks += 1;
        }
        self.canary_events += canary.events;
        self.baseline_events += baseline.events;
        let events = canary.events + baseline.events;
        if events > 0 && canary.exposure > 0.0 && baseline.exposure > 0.0 {
            let window = Window {
                ln_odds: (canary.exposure / baseline.exposure).ln(),
                canary_events: canary.events,
                events,
            };
            for mixture in [&mut self.high, &mut self.low].into_iter().flatten() {
                mixture.observe(&window);
            }
            match self.windows.last_mut() {
                Some(last) if last.ln_odds == window.ln_odds => {
                    last.canary_events += window.canary_events;
                    last.events += window.events;
                }
                _ => self.windows.push(window),
            }
        }
        if self.first_crossing.is_none() && self.ln_e_value() >= -self.alpha.ln() {
            let side = crossed_side(
                self.high.as_ref().map(RateMixture::ln_e_value),
                self.low.as_ref().map(RateMixture::ln_e_value),
            );
            self.first_crossing = Some((self.looks, side));
        }
        Ok(())
    }

    /// ln of the e-value against "the canary's rate is within the allowance".
    pub fn ln_e_value(&self) -> f64 {
        ln_combined(
            self.high.as_ref().map(RateMixture::ln_e_value),
            self.low.as_ref().map(RateMixture::ln_e_value),
        )
    }

    /// The look at which the e-value first reached 1/α and the side it found worse, if it has.
    pub fn first_crossing(&self) -> Option<(u64, Classification)> {
        self.first_crossing
    }

    /// Looks so far.
    pub fn looks(&self) -> u64 {
        self.looks
    }

    /// The confidence sequence for the rate ratio at level 1 − α: every ratio ρ that a
    /// two-sided mixture (normal prior of this test's scale around ratio 1, on the grid) does
    /// not reject given all looks so far. Unbounded on a side the data cannot bound (no
    /// canary events: no lower bound above 0; no baseline events: no upper bound).
    pub fn confidence_sequence(&self) -> Interval {
        self.fit().1
    }

    /// The maximum-likelihood rate ratio over all looks (0 with no canary event, infinite
    /// with no baseline event) and the confidence sequence.
    fn fit(&self) -> (f64, Interval) {
        if self.windows.is_empty() {
            return (
                f64::NAN,
                Interval {
                    lower: 0.0,
                    upper: f64::INFINITY,
                },
            );
        }
        let ln_likelihood =
            |beta: f64| -> f64 { self.windows.iter().map(|w| w.ln_likelihood(beta)).sum() };
        let mixture = RateMixture::new(0.0, self.scale, Alternative::TwoSided);
        let ln_marginal = mixture
            .support
            .iter()
            .zip(&mixture.ln_weights)
            .fold(f64::NEG_INFINITY, |acc, (&b, w)| {
                ln_add_exp(acc, w + ln_likelihood(b))
            });
        let threshold = ln_marginal + self.alpha.ln();
        let inside = |beta: f64| ln_likelihood(beta) > threshold;
        // The log-likelihood is concave in β: find its maximum (where its decreasing slope
        // changes sign), then each end of the set where it stays above the threshold.
        const REACH: f64 = 40.0;
        let slope = |beta: f64| -> f64 {
            self.windows
                .iter()
                .map(|w| {
                    let p = 1.0 / (1.0 + (-(w.ln_odds + beta)).exp());
                    w.canary_events as f64 - w.events as f64 * p
                })
                .sum()
        };
        let top = boundary(-REACH, REACH, |b| slope(b) < 0.0);
        let mle = if self.canary_events_in_windows() == 0 {
            0.0
        } else if self.windows.iter().all(|w| w.canary_events == w.events) {
            f64::INFINITY
        } else {
            top.exp()
        };
        let lower = if inside(-REACH) {
            0.0
        } else {
            boundary(-REACH, top, inside).exp()
        };
        let upper = if inside(REACH) {
            f64::INFINITY
        } else {
            boundary(top, REACH, |b| !inside(b)).exp()
        };
        (mle, Interval { lower, upper })
    }

    fn canary_events_in_windows(&self) -> u64 {
        self.windows.iter().map(|w| w.canary_events).sum()
    }

    /// The judgement so far: `High`/`Low` once the e-value has crossed 1/α (and from then on),
    /// `Pass` before, `NoData` until both arms have had exposure in one look. No event in
    /// either arm is data — neither is worse — and passes without an estimate. The estimate
    /// is the maximum-likelihood rate ratio over all looks, with the confidence sequence.
    pub fn judgement(&self, comparison: &Comparison) -> Judgement {
        let samples = Samples {
            canary: self.canary_events,
            baseline: self.baseline_events,
        };
        if self.exposed_looks == 0 {
            return Judgement::no_data(comparison, samples);
        }
        let classification = match self.first_crossing {
            Some((_, side)) => side,
            None => Classification::Pass,
        };
        let (estimate, interval) = self.fit();
        Judgement::new(
            comparison,
            classification,
            (!self.windows.is_empty()).then_some(estimate),
            Some(interval),
            Evidence::EValue {
                e_value: self.ln_e_value().exp(),
                alpha: self.alpha,
            },
            samples,
        )
        .of(EstimateKind::RateRatio)
    }
}
