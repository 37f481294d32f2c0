//! The special functions the tests stand on: log-gamma, the normal distribution, the binomial
//! probability, the regularised incomplete beta function (both tails) and its inverse.
//!
//! Written here rather than taken from a crate because the judge must agree with SciPy to 1e-9
//! across the sizes a canary produces (thousands of events, hundreds of readings) and in the far
//! tails where p-values live: each tail is computed directly, never as `1 - (something near 1)`,
//! and the binomial and beta densities use Loader's saddle-point form (as R and Boost do) instead
//! of differences of log-gammas, which lose digits once the counts are large.

use std::f64::consts::{LN_2, PI};

/// ln √(2π).
const LN_SQRT_2PI: f64 = 0.918_938_533_204_672_8;
/// ln 2π.
const LN_2PI: f64 = 1.837_877_066_409_345_5;

/// ln Γ(x) for x > 0 (Lanczos, g = 7, nine terms; relative error about 1e-15).
pub(crate) fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x) Γ(1 - x) = π / sin(πx).
        return (PI / (PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    let t = x + G + 0.5;
    LN_SQRT_2PI + (x + 0.5) * t.ln() - t + a.ln()
}

/// ln B(a, b).
pub(crate) fn ln_beta(a: f64, b: f64) -> f64 {
    ln_gamma(a) + ln_gamma(b) - ln_gamma(a + b)
}

/// The error of Stirling's formula: ln Γ(n + 1) − ((n + ½) ln n − n + ln √(2π)).
fn stirling_error(n: f64) -> f64 {
    const S0: f64 = 1.0 / 12.0;
    const S1: f64 = 1.0 / 360.0;
    const S2: f64 = 1.0 / 1260.0;
    const S3: f64 = 1.0 / 1680.0;
    const S4: f64 = 1.0 / 1188.0;
    if n <= 15.0 {
        return ln_gamma(n + 1.0) - (n + 0.5) * n.ln() + n - LN_SQRT_2PI;
    }
    let nn = n * n;
    if n > 500.0 {
        (S0 - S1 / nn) / n
    } else if n > 80.0 {
        (S0 - (S1 - S2 / nn) / nn) / n
    } else if n > 35.0 {
        (S0 - (S1 - (S2 - S3 / nn) / nn) / nn) / n
    } else {
        (S0 - (S1 - (S2 - (S3 - S4 / nn) / nn) / nn) / nn) / n
    }
}

/// The deviance term x ln(x / m) + m − x, accurate when x is close to m (Loader 2000).
fn deviance(x: f64, m: f64) -> f64 {
    if (x - m).abs() < 0.1 * (x + m) {
        let mut v = (x - m) / (x + m);
        let mut s = (x - m) * v;
        if s.abs() < f64::MIN_POSITIVE {
            return s;
        }
        let mut ej = 2.0 * x * v;
        v *= v;
        for j in 1..1000 {
            ej *= v;
            let s1 = s + ej / f64::from(2 * j + 1);
            if s1 == s {
                return s1;
            }
            s = s1;
        }
    }
    x * (x / m).ln() + m - x
}

/// ln of the binomial probability C(n, x) pˣ qⁿ⁻ˣ with q = 1 − p given separately; x and n
/// need not be integers (Loader's saddle-point form; the beta density is written through it).
pub(crate) fn ln_binomial_density(x: f64, n: f64, p: f64, q: f64) -> f64 {
    if p == 0.0 {
        return if x == 0.0 { 0.0 } else { f64::NEG_INFINITY };
    }
    if q == 0.0 {
        return if x == n { 0.0 } else { f64::NEG_INFINITY };
    }
    if x == 0.0 {
        if n == 0.0 {
            return 0.0;
        }
        return if p < 0.1 {
            -deviance(n, n * q) - n * p
        } else {
            n * q.ln()
        };
    }
    if x == n {
        return if q < 0.1 {
            -deviance(n, n * p) - n * q
        } else {
            n * p.ln()
        };
    }
    if x < 0.0 || x > n {
        return f64::NEG_INFINITY;
    }
    let lc = stirling_error(n)
        - stirling_error(x)
        - stirling_error(n - x)
        - deviance(x, n * p)
        - deviance(n - x, n * q);
    let lf = LN_2PI + x.ln() + (-x / n).ln_1p();
    lc - 0.5 * lf
}

/// P(X = k) for X ~ Binomial(n, p).
pub(crate) fn binomial_pmf(k: u64, n: u64, p: f64) -> f64 {
    ln_binomial_density(k as f64, n as f64, p, 1.0 - p).exp()
}

/// P(X ≤ k) for X ~ Binomial(n, p).
pub(crate) fn binomial_cdf(k: u64, n: u64, p: f64) -> f64 {
    if k >= n {
        return 1.0;
    }
    // P(X ≤ k) = 1 − I_p(k + 1, n − k).
    beta_tails(k as f64 + 1.0, (n - k) as f64, p, 1.0 - p).1
}

/// P(X ≥ k) for X ~ Binomial(n, p).
pub(crate) fn binomial_sf_inclusive(k: u64, n: u64, p: f64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    if k > n {
        return 0.0;
    }
    // P(X ≥ k) = I_p(k, n − k + 1).
    beta_tails(k as f64, (n - k + 1) as f64, p, 1.0 - p).0
}

/// ln(1 − eᵘ) for u ≤ 0, without cancellation.
pub(crate) fn ln_one_minus_exp(u: f64) -> f64 {
    if u > -LN_2 {
        (-u.exp_m1()).ln()
    } else {
        (-u.exp()).ln_1p()
    }
}

/// ln(eᵃ + eᵇ).
pub(crate) fn ln_add_exp(a: f64, b: f64) -> f64 {
    let (hi, lo) = if a >= b { (a, b) } else { (b, a) };
    if hi == f64::NEG_INFINITY {
        return hi;
    }
    hi + (lo - hi).exp().ln_1p()
}

/// The continued fraction of I_x(a, b) (modified Lentz), valid for x < (a + 1) / (a + b + 2).
fn beta_fraction(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let qab = a + b;
    let qap = a + 1.0;
    let qam = a - 1.0;
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..100_000 {
        let m = f64::from(m);
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        let step = d * c;
        h *= step;
        if (step - 1.0).abs() <= f64::EPSILON {
            break;
        }
    }
    h
}

/// ln of I_x(a, b) and of 1 − I_x(a, b), with y = 1 − x passed by the caller so that neither
/// tail loses digits. Each tail is computed directly when it is the small one.
pub(crate) fn ln_beta_tails(a: f64, b: f64, x: f64, y: f64) -> (f64, f64) {
    if x <= 0.0 {
        return (f64::NEG_INFINITY, 0.0);
    }
    if y <= 0.0 {
        return (0.0, f64::NEG_INFINITY);
    }
    // xᵃ yᵇ / (a B(a, b)) = binomial density(a; a + b, x) · b / (a + b).
    let ln_front =
        |a: f64, b: f64, x: f64, y: f64| ln_binomial_density(a, a + b, x, y) + (b / (a + b)).ln();
    if x < (a + 1.0) / (a + b + 2.0) {
        let lower = ln_front(a, b, x, y) + beta_fraction(a, b, x).ln();
        let lower = lower.min(0.0);
        (lower, ln_one_minus_exp(lower))
    } else {
        let upper = ln_front(b, a, y, x) + beta_fraction(b, a, y).ln();
        let upper = upper.min(0.0);
        (ln_one_minus_exp(upper), upper)
    }
}

/// I_x(a, b) and 1 − I_x(a, b) (see [`ln_beta_tails`]).
pub(crate) fn beta_tails(a: f64, b: f64, x: f64, y: f64) -> (f64, f64) {
    let (lower, upper) = ln_beta_tails(a, b, x, y);
    (lower.exp(), upper.exp())
}

/// The beta density xᵃ⁻¹ (1 − x)ᵇ⁻¹ / B(a, b).
fn beta_density(a: f64, b: f64, x: f64) -> f64 {
    let y = 1.0 - x;
    if x <= 0.0 || y <= 0.0 {
        return 0.0;
    }
    (ln_binomial_density(a, a + b, x, y) + (a * b / (a + b)).ln() - x.ln() - y.ln()).exp()
}

/// Which tail of the beta distribution an inverse is asked of.
#[derive(Clone, Copy)]
pub(crate) enum Tail {
    /// Find x with I_x(a, b) = target.
    Lower,
    /// Find x with 1 − I_x(a, b) = target.
    Upper,
}

/// The x in (0, 1) where the given tail of Beta(a, b) equals `target` (Newton's method on the
/// log of that tail, kept inside a bisection bracket).
pub(crate) fn beta_quantile(a: f64, b: f64, target: f64, tail: Tail) -> f64 {
    if target <= 0.0 {
        return match tail {
            Tail::Lower => 0.0,
            Tail::Upper => 1.0,
        };
    }
    if target >= 1.0 {
        return match tail {
            Tail::Lower => 1.0,
            Tail::Upper => 0.0,
        };
    }
    let ln_target = target.ln();
    // g(x) = ln(tail(x)) − ln(target): increasing in x for the lower tail, decreasing for the upper.
    let g = |x: f64| {
        let (lo, up) = ln_beta_tails(a, b, x, 1.0 - x);
        match tail {
            Tail::Lower => lo - ln_target,
            Tail::Upper => up - ln_target,
        }
    };
    let (mut lo, mut hi) = (0.0_f64, 1.0_f64);
    let mut x = a / (a + b);
    for _ in 0..400 {
        let gx = g(x);
        if gx == 0.0 {
            return x;
        }
        let below = match tail {
            Tail::Lower => gx < 0.0,
            Tail::Upper => gx > 0.0,
        };
        if below {
            lo = x;
        } else {
            hi = x;
        }
        // d/dx ln(tail) = ±density / tail.
        let (ln_lower, ln_upper) = ln_beta_tails(a, b, x, 1.0 - x);
        let density = beta_density(a, b, x);
        let slope = match tail {
            Tail::Lower => density / ln_lower.exp(),
            Tail::Upper => -density / ln_upper.exp(),
        };
        let mut next = x - gx / slope;
        if !next.is_finite() || next <= lo || next >= hi {
            next = 0.5 * (lo + hi);
        }
        if (next - x).abs() <= 4.0 * f64::EPSILON * x.abs() || hi - lo <= f64::MIN_POSITIVE {
            return next;
        }
        x = next;
    }
    x
}

/// exp(−x²) for x ≥ 0 without the rounding of x² spoiling the result (Cephes' `expx2`).
fn exp_neg_square(x: f64) -> f64 {
    let m = (x * 128.0 + 0.5).floor() / 128.0;
    let f = x - m;
    let u = m * m;
    let u1 = 2.0 * m * f + f * f;
    (-u).exp() * (-u1).exp()
}

/// The complementary error function erfc(x), to about 1e-15 relative in both tails.
pub(crate) fn erfc(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x < 0.0 {
        return 2.0 - erfc(-x);
    }
    if x < 2.5 {
        return 1.0 - erf_series(x);
    }
    if x > 27.3 {
        return 0.0;
    }
    // erfc(x) = e^(−x²)/√π / (x + ½/(x + 1/(x + (3/2)/(x + …)))) (Laplace's continued fraction).
    const TINY: f64 = 1e-300;
    let mut f = x;
    let mut c = f;
    let mut d = 0.0;
    for j in 1..5000 {
        let aj = f64::from(j) / 2.0;
        d = x + aj * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = x + aj / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        let step = c * d;
        f *= step;
        if (step - 1.0).abs() <= f64::EPSILON {
            break;
        }
    }
    exp_neg_square(x) / (PI.sqrt() * f)
}

/// erf(x) for 0 ≤ x < 2.5 through the series with positive terms
/// erf(x) = 2/√π e^(−x²) Σ 2ⁿ x²ⁿ⁺¹ / (1·3·…·(2n+1)).
fn erf_series(x: f64) -> f64 {
    let x2 = 2.0 * x * x;
    let mut term = x;
    let mut sum = x;
    for n in 1..500 {
        term *= x2 / f64::from(2 * n + 1);
        sum += term;
        if term <= sum * f64::EPSILON * 0.25 {
            break;
        }
    }
    2.0 / PI.sqrt() * exp_neg_square(x) * sum
}

/// Φ(z), the standard normal distribution function (SciPy's `ndtr`).
pub(crate) fn normal_cdf(z: f64) -> f64 {
    let t = z * std::f64::consts::FRAC_1_SQRT_2;
    if z < 0.0 {
        0.5 * erfc(-t)
    } else {
        1.0 - 0.5 * erfc(t)
    }
}

/// 1 − Φ(z), computed without cancellation.
pub(crate) fn normal_sf(z: f64) -> f64 {
    normal_cdf(-z)
}

/// φ(z), the standard normal density.
fn normal_density(z: f64) -> f64 {
    exp_neg_square(z.abs() * std::f64::consts::FRAC_1_SQRT_2) / (2.0 * PI).sqrt()
}

/// The z with 1 − Φ(z) = q, for q in (0, 1) (SciPy's `norm.isf`).
pub(crate) fn normal_isf(q: f64) -> f64 {
    if q <= 0.0 {
        return f64::INFINITY;
    }
    if q >= 1.0 {
        return f64::NEG_INFINITY;
    }
    if q > 0.5 {
        return -normal_isf(1.0 - q);
    }
    // Solve Φ(−z) = q for z ≥ 0 by Newton's method from the tail asymptote, inside a bracket.
    let (mut lo, mut hi) = (0.0_f64, 40.0_f64);
    let t = (-2.0 * q.ln()).sqrt();
    let mut z = (t - (t.ln() + (2.0 * PI).ln() / 2.0) / t).clamp(0.0, 39.0);
    for _ in 0..200 {
        let gap = normal_sf(z) - q;
        if gap == 0.0 {
            return z;
        }
        if gap > 0.0 {
            lo = z;
        } else {
            hi = z;
        }
        let mut next = z + gap / normal_density(z);
        if !next.is_finite() || next <= lo || next >= hi {
            next = 0.5 * (lo + hi);
        }
        if (next - z).abs() <= 2.0 * f64::EPSILON * z.max(1.0) {
            return next;
        }
        z = next;
    }
    z
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * b.abs().max(f64::MIN_POSITIVE)
    }

    #[test]
    fn known_values() {
        // Values from closed forms: Γ(5) = 24, Γ(½) = √π, erfc(0) = 1, Φ(0) = ½,
        // I_x(1, 1) = x, I_x(a, 1) = xᵃ.
        assert!(close(ln_gamma(5.0), 24f64.ln(), 1e-14));
        assert!(close(ln_gamma(0.5), PI.sqrt().ln(), 1e-14));
        assert_eq!(erfc(0.0), 1.0);
        assert_eq!(normal_cdf(0.0), 0.5);
        assert!(close(beta_tails(1.0, 1.0, 0.3, 0.7).0, 0.3, 1e-14));
        assert!(close(beta_tails(3.0, 1.0, 0.2, 0.8).0, 0.008, 1e-13));
        assert!(close(beta_tails(3.0, 1.0, 0.2, 0.8).1, 0.992, 1e-14));
        assert!(close(normal_isf(0.025), 1.959_963_984_540_054, 1e-14));
        let x = beta_quantile(3.0, 5.0, 0.01, Tail::Lower);
        assert!(close(beta_tails(3.0, 5.0, x, 1.0 - x).0, 0.01, 1e-12));
        let x = beta_quantile(3.0, 5.0, 1e-9, Tail::Upper);
        assert!(close(beta_tails(3.0, 5.0, x, 1.0 - x).1, 1e-9, 1e-12));
    }

    #[test]
    fn binomial_probabilities_sum_to_one() {
        let (n, p) = (40, 0.3);
        let total: f64 = (0..=n).map(|k| binomial_pmf(k, n, p)).sum();
        assert!(close(total, 1.0, 1e-13));
        let cdf: f64 = (0..=12).map(|k| binomial_pmf(k, n, p)).sum();
        assert!(close(binomial_cdf(12, n, p), cdf, 1e-13));
        assert!(close(binomial_sf_inclusive(13, n, p), 1.0 - cdf, 1e-13));
    }
}
