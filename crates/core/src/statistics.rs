//! How much evidence a guardrail needs before its value means anything.
//!
//! At 5 % of traffic a 100-request burst gives the canary about five streams: no basis for a
//! p95 or a 99.6 % success claim. These rules say how many samples are enough; the engine treats a
//! guardrail below them as having no data.

/// Samples needed before an empirical `q`-quantile is more than the maximum: `ceil(1 / (1 - q))`
/// (p95 → 20, p99 → 100). Below that the "p95" is just the largest value seen.
pub fn min_samples_for_quantile(q: f64) -> u64 {
    if !(0.0..1.0).contains(&q) {
        return u64::MAX;
    }
    (1.0 / (1.0 - q) - 1e-9).ceil() as u64
}

/// Clean trials needed to claim a success rate of at least `bar_percent` with 95 % confidence
/// when none failed — the rule of three: `ceil(3 / (1 - p))` (99.6 % → 750).
pub fn min_samples_for_success_rate(bar_percent: f64) -> u64 {
    let p = bar_percent / 100.0;
    if !(0.0..1.0).contains(&p) {
        return u64::MAX;
    }
    (3.0 / (1.0 - p) - 1e-9).ceil() as u64
}

/// Lower bound of the Wilson score interval for `successes` out of `n` at normal quantile `z`
/// (1.96 for 95 %). 0 when `n` is 0.
pub fn wilson_lower_bound(successes: u64, n: u64, z: f64) -> f64 {
    if n == 0 {
        return 0.0;
    }
    let n_f = n as f64;
    let p = successes as f64 / n_f;
    let z2 = z * z;
    let centre = p + z2 / (2.0 * n_f);
    let margin = z * ((p * (1.0 - p) + z2 / (4.0 * n_f)) / n_f).sqrt();
    ((centre - margin) / (1.0 + z2 / n_f)).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runbooks_sample_rules() {
        assert_eq!(min_samples_for_quantile(0.95), 20);
        assert_eq!(min_samples_for_quantile(0.99), 100);
        assert_eq!(min_samples_for_quantile(0.5), 2);
        assert_eq!(min_samples_for_success_rate(99.6), 750);
        assert_eq!(min_samples_for_success_rate(99.0), 300);
    }

    #[test]
    fn wilson_bounds_are_sane() {
        assert_eq!(wilson_lower_bound(0, 0, 1.96), 0.0);
        let lb = wilson_lower_bound(750, 750, 1.96);
        assert!(lb > 0.99 && lb < 1.0, "{lb}");
        let lb = wilson_lower_bound(95, 100, 1.96);
        assert!((lb - 0.8882).abs() < 1e-3, "{lb}");
    }
}
