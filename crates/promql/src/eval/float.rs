//! The numeric kernels of PromQL, written to give bit-for-bit the answers of Prometheus 2.42's Go
//! code: Go's `math.Max`/`math.Min` (NaN and signed-zero rules differ from Rust's), Kahan-Neumaier
//! summation, `quantile`, `histogram_quantile`'s bucket interpolation, and the least-squares fit
//! behind `deriv` and `predict_linear`.

use crate::value::{Millis, Point};

/// Go's `math.Max`: +Inf wins over NaN, NaN wins over numbers, +0 wins over -0.
pub fn go_max(x: f64, y: f64) -> f64 {
    if x == f64::INFINITY || y == f64::INFINITY {
        f64::INFINITY
    } else if x.is_nan() || y.is_nan() {
        f64::NAN
    } else if x == 0.0 && x == y {
        if x.is_sign_negative() { y } else { x }
    } else if x > y {
        x
    } else {
        y
    }
}

/// Go's `math.Min`: -Inf wins over NaN, NaN wins over numbers, -0 wins over +0.
pub fn go_min(x: f64, y: f64) -> f64 {
    if x == f64::NEG_INFINITY || y == f64::NEG_INFINITY {
        f64::NEG_INFINITY
    } else if x.is_nan() || y.is_nan() {
        f64::NAN
    } else if x == 0.0 && x == y {
        if x.is_sign_negative() { x } else { y }
    } else if x < y {
        x
    } else {
        y
    }
}

/// One step of Kahan-Neumaier summation: returns the new sum and compensation.
pub fn kahan_sum_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

/// Orders values as Prometheus' `vectorByValueHeap`: NaN before everything, then ascending.
pub fn nan_first_ascending(a: f64, b: f64) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        _ => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

/// The φ-quantile of `values` (sorted here), interpolating between neighbours: PromQL's
/// `quantile` and `quantile_over_time`.
pub fn quantile(q: f64, values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    values.sort_by(|a, b| nan_first_ascending(*a, *b));
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = go_max(0.0, rank.floor());
    let upper = go_min(n - 1.0, lower + 1.0);
    let weight = rank - rank.floor();
    // A NaN `q` makes both indexes NaN; Go would index with an undefined integer there, we
    // answer NaN.
    if lower.is_nan() || upper.is_nan() {
        return f64::NAN;
    }
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

/// A classic histogram bucket: upper bound and cumulative count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub upper_bound: f64,
    pub count: f64,
}

/// The φ-quantile from cumulative buckets, interpolated linearly inside the bucket that holds
/// it (Prometheus 2.42 `bucketQuantile`): NaN without a `+Inf` bucket, with fewer than two
/// buckets or without observations; the upper bound of the second-highest bucket when the rank
/// falls into `+Inf`; non-monotonic counts are flattened first.
pub fn bucket_quantile(q: f64, buckets: &mut Vec<Bucket>) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    buckets.sort_by(|a, b| {
        a.upper_bound
            .partial_cmp(&b.upper_bound)
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    match buckets.last() {
        Some(b) if b.upper_bound == f64::INFINITY => {}
        _ => return f64::NAN,
    }
    coalesce(buckets);
    ensure_monotonic(buckets);
    if buckets.len() < 2 {
        return f64::NAN;
    }
    let observations = buckets[buckets.len() - 1].count;
    if observations == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * observations;
    // sort.Search over all but the last bucket: the first with count >= rank.
    let b = buckets[..buckets.len() - 1]
        .iter()
        .position(|x| x.count >= rank)
        .unwrap_or(buckets.len() - 1);
    if b == buckets.len() - 1 {
        return buckets[buckets.len() - 2].upper_bound;
    }
    if b == 0 && buckets[0].upper_bound <= 0.0 {
        return buckets[0].upper_bound;
    }
    let mut bucket_start = 0.0;
    let bucket_end = buckets[b].upper_bound;
    let mut count = buckets[b].count;
    if b > 0 {
        bucket_start = buckets[b - 1].upper_bound;
        count -= buckets[b - 1].count;
        rank -= buckets[b - 1].count;
    }
    bucket_start + (bucket_end - bucket_start) * (rank / count)
}

/// Merges buckets with equal upper bounds (summing counts), as `coalesceBuckets`.
fn coalesce(buckets: &mut Vec<Bucket>) {
    let mut out: Vec<Bucket> = Vec::with_capacity(buckets.len());
    for b in buckets.iter() {
        match out.last_mut() {
            Some(last) if last.upper_bound == b.upper_bound => last.count += b.count,
            _ => out.push(*b),
        }
    }
    *buckets = out;
}

/// Raises any count below its predecessor's maximum, as `ensureMonotonic`.
fn ensure_monotonic(buckets: &mut [Bucket]) {
    let mut max = f64::NEG_INFINITY;
    for b in buckets.iter_mut() {
        if b.count > max {
            max = b.count;
        } else if b.count < max {
            b.count = max;
        }
    }
}

/// Least-squares slope and intercept of `points`, time measured in seconds from
/// `intercept_time` (Prometheus' `linearRegression`, Kahan-summed).
pub fn linear_regression(points: &[Point], intercept_time: Millis) -> (f64, f64) {
    let Some(first) = points.first() else {
        return (f64::NAN, f64::NAN);
    };
    let init_y = first.v;
    let mut const_y = true;
    let (mut n, mut sum_x, mut c_x, mut sum_y, mut c_y) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let (mut sum_xy, mut c_xy, mut sum_x2, mut c_x2) = (0.0, 0.0, 0.0, 0.0);
    for (i, p) in points.iter().enumerate() {
        if const_y && i > 0 && p.v != init_y {
            const_y = false;
        }
        n += 1.0;
        let x = (p.t - intercept_time) as f64 / 1e3;
        (sum_x, c_x) = kahan_sum_inc(x, sum_x, c_x);
        (sum_y, c_y) = kahan_sum_inc(p.v, sum_y, c_y);
        (sum_xy, c_xy) = kahan_sum_inc(x * p.v, sum_xy, c_xy);
        (sum_x2, c_x2) = kahan_sum_inc(x * x, sum_x2, c_x2);
    }
    if const_y {
        if init_y.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init_y);
    }
    let sum_x = sum_x + c_x;
    let sum_y = sum_y + c_y;
    let sum_xy = sum_xy + c_xy;
    let sum_x2 = sum_x2 + c_x2;
    let cov_xy = sum_xy - sum_x * sum_y / n;
    let var_x = sum_x2 - sum_x * sum_x / n;
    let slope = cov_xy / var_x;
    let intercept = sum_y / n - slope * sum_x / n;
    (slope, intercept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_min_max_edge_cases() {
        assert!(go_max(f64::NAN, 1.0).is_nan());
        assert_eq!(go_max(f64::NAN, f64::INFINITY), f64::INFINITY);
        assert_eq!(go_min(f64::NAN, f64::NEG_INFINITY), f64::NEG_INFINITY);
        assert!(go_max(0.0, -0.0).is_sign_positive());
        assert!(go_min(0.0, -0.0).is_sign_negative());
        assert_eq!(go_max(1.0, 2.0), 2.0);
    }

    fn b(upper_bound: f64, count: f64) -> Bucket {
        Bucket { upper_bound, count }
    }

    #[test]
    fn bucket_quantile_cases() {
        let mut v = vec![b(1.0, 10.0), b(2.0, 20.0), b(f64::INFINITY, 20.0)];
        assert_eq!(bucket_quantile(0.5, &mut v), 1.0);
        let mut v = vec![b(f64::INFINITY, 20.0), b(2.0, 20.0), b(1.0, 10.0)];
        assert_eq!(bucket_quantile(0.75, &mut v), 1.5);
        assert!(bucket_quantile(0.5, &mut vec![b(f64::INFINITY, 5.0)]).is_nan());
        assert!(bucket_quantile(0.5, &mut vec![b(1.0, 5.0)]).is_nan());
        assert!(bucket_quantile(0.5, &mut vec![b(1.0, 0.0), b(f64::INFINITY, 0.0)]).is_nan());
        // Rank in +Inf: the highest finite bound.
        let mut v = vec![b(1.0, 1.0), b(f64::INFINITY, 10.0)];
        assert_eq!(bucket_quantile(0.9, &mut v), 1.0);
        // Non-monotonic counts are flattened.
        let mut v = vec![b(1.0, 10.0), b(2.0, 5.0), b(f64::INFINITY, 10.0)];
        assert_eq!(bucket_quantile(0.5, &mut v), 0.5);
        assert_eq!(bucket_quantile(-1.0, &mut v), f64::NEG_INFINITY);
    }

    #[test]
    fn quantile_interpolates() {
        assert_eq!(quantile(0.5, &mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(quantile(1.0, &mut [4.0, 1.0]), 4.0);
        assert!(quantile(0.5, &mut []).is_nan());
    }

    #[test]
    fn regression_of_a_line() {
        let pts: Vec<Point> = (0..10)
            .map(|i| Point {
                t: i * 1000,
                v: 3.0 + 2.0 * i as f64,
            })
            .collect();
        let (slope, intercept) = linear_regression(&pts, 0);
        assert!((slope - 2.0).abs() < 1e-12 && (intercept - 3.0).abs() < 1e-12);
        let flat = [Point { t: 0, v: 5.0 }, Point { t: 1000, v: 5.0 }];
        assert_eq!(linear_regression(&flat, 0), (0.0, 5.0));
    }
}
