//! PromQL function calls, each as Prometheus 2.42 computes it: range functions (`rate`,
//! `increase`, `*_over_time`, `holt_winters`, ...), per-element math, label manipulation,
//! `histogram_quantile`, `absent`, sorting, time and date functions.

use std::collections::HashMap;

use promql_parser::label::MatchOp;
use promql_parser::parser::{Call, Expr};

use super::calendar::{DatePart, go_seconds};
use super::float::{
    Bucket, bucket_quantile, go_max, go_min, kahan_sum_inc, linear_regression, quantile,
};
use super::{
    Elem, EvalError, Evaluator, RangeArg, SeriesSource, Val, check_unique, drop_name,
    selector_matchers,
};
use crate::value::{Labels, Millis, Point};

/// Evaluates `call` at `ts`.
pub(crate) fn call<S: SeriesSource + ?Sized>(
    ev: &Evaluator<'_, S>,
    call: &Call,
    ts: Millis,
) -> Result<Val, EvalError> {
    let name = call.func.name;
    let args: Vec<&Expr> = call.args.args.iter().map(|a| unwrap_parens(a)).collect();
    let arg = |i: usize| -> Result<&Expr, EvalError> {
        args.get(i)
            .copied()
            .ok_or_else(|| EvalError::Execution(format!("{name}() is missing argument {}", i + 1)))
    };
    let out = match name {
        // Range functions.
        "rate" | "increase" | "delta" | "irate" | "idelta" | "deriv" | "resets" | "changes"
        | "avg_over_time" | "min_over_time" | "max_over_time" | "sum_over_time"
        | "count_over_time" | "last_over_time" | "stddev_over_time" | "stdvar_over_time"
        | "present_over_time" => {
            let range = ev.range_arg(arg(0)?, ts)?;
            range_function(name, range, ts)?
        }
        "quantile_over_time" => {
            let q = ev.scalar(arg(0)?, ts)?;
            let range = ev.range_arg(arg(1)?, ts)?;
            per_series(range, true, |pts| {
                let mut vals: Vec<f64> = pts.iter().map(|p| p.v).collect();
                Some(quantile(q, &mut vals))
            })
        }
        "predict_linear" => {
            let range = ev.range_arg(arg(0)?, ts)?;
            let duration = ev.scalar(arg(1)?, ts)?;
            per_series(range, true, |pts| {
                if pts.len() < 2 {
                    return None;
                }
                let (slope, intercept) = linear_regression(pts, ts);
                Some(slope * duration + intercept)
            })
        }
        "holt_winters" => {
            let range = ev.range_arg(arg(0)?, ts)?;
            let smoothing = ev.scalar(arg(1)?, ts)?;
            let trend = ev.scalar(arg(2)?, ts)?;
            // Prometheus checks the factors only when it has a series to smooth.
            if !range.series.is_empty() {
                check_factor("smoothing factor", "sf", smoothing)?;
                check_factor("trend factor", "tf", trend)?;
            }
            per_series(range, true, |pts| holt_winters(pts, smoothing, trend))
        }
        "absent_over_time" => {
            let range = ev.range_arg(arg(0)?, ts)?;
            if range.series.is_empty() {
                vec![Elem {
                    metric: absent_labels(arg(0)?),
                    v: 1.0,
                    t: ts,
                }]
            } else {
                Vec::new()
            }
        }
        "absent" => {
            let v = ev.vector(arg(0)?, ts)?;
            if v.is_empty() {
                vec![Elem {
                    metric: absent_labels(arg(0)?),
                    v: 1.0,
                    t: ts,
                }]
            } else {
                Vec::new()
            }
        }
        "histogram_quantile" => {
            let q = ev.scalar(arg(0)?, ts)?;
            let v = ev.vector(arg(1)?, ts)?;
            histogram_quantile(q, v, ts)
        }
        // Per-element math; every one drops the metric name.
        "abs" | "ceil" | "floor" | "exp" | "ln" | "log2" | "log10" | "sqrt" | "sgn" | "acos"
        | "acosh" | "asin" | "asinh" | "atan" | "atanh" | "cos" | "cosh" | "sin" | "sinh"
        | "tan" | "tanh" | "deg" | "rad" => {
            let f = math_function(name);
            map_values(ev.vector(arg(0)?, ts)?, ts, f)
        }
        "round" => {
            let to_nearest = match args.get(1) {
                Some(e) => ev.scalar(e, ts)?,
                None => 1.0,
            };
            let inverse = 1.0 / to_nearest;
            map_values(ev.vector(arg(0)?, ts)?, ts, |v| {
                (v * inverse + 0.5).floor() / inverse
            })
        }
        "clamp" => {
            let v = ev.vector(arg(0)?, ts)?;
            let (min, max) = (ev.scalar(arg(1)?, ts)?, ev.scalar(arg(2)?, ts)?);
            if max < min {
                Vec::new()
            } else {
                map_values(v, ts, |x| go_max(min, go_min(max, x)))
            }
        }
        "clamp_min" => {
            let v = ev.vector(arg(0)?, ts)?;
            let min = ev.scalar(arg(1)?, ts)?;
            map_values(v, ts, |x| go_max(min, x))
        }
        "clamp_max" => {
            let v = ev.vector(arg(0)?, ts)?;
            let max = ev.scalar(arg(1)?, ts)?;
            map_values(v, ts, |x| go_min(max, x))
        }
        "timestamp" => {
            let from_selector = matches!(arg(0)?, Expr::VectorSelector(_));
            ev.vector(arg(0)?, ts)?
                .into_iter()
                .map(|e| Elem {
                    metric: drop_name(e.metric),
                    v: if from_selector { e.t } else { ts } as f64 / 1000.0,
                    t: ts,
                })
                .collect()
        }
        "scalar" => {
            let v = ev.vector(arg(0)?, ts)?;
            return Ok(Val::Scalar(match v.as_slice() {
                [one] => one.v,
                _ => f64::NAN,
            }));
        }
        "vector" => vec![Elem {
            metric: Labels::default(),
            v: ev.scalar(arg(0)?, ts)?,
            t: ts,
        }],
        "time" => return Ok(Val::Scalar(ts as f64 / 1000.0)),
        "year" | "month" | "day_of_month" | "day_of_week" | "day_of_year" | "hour" | "minute"
        | "days_in_month" => {
            let Some(part) = DatePart::from_function(name) else {
                return Err(EvalError::UnsupportedFunction(name.to_owned()));
            };
            match args.first() {
                // `vector(time())`, in whole seconds truncated toward zero as Go divides.
                None => vec![Elem {
                    metric: Labels::default(),
                    v: part.of(ts / 1000),
                    t: ts,
                }],
                Some(e) => map_values(ev.vector(e, ts)?, ts, |v| part.of(go_seconds(v))),
            }
        }
        "pi" => return Ok(Val::Scalar(std::f64::consts::PI)),
        "sort" | "sort_desc" => {
            let v: Vec<Elem> = ev
                .vector(arg(0)?, ts)?
                .into_iter()
                .map(|e| Elem { t: ts, ..e })
                .collect();
            sort_by_value(v, name == "sort_desc")
        }
        "label_replace" => {
            let v = ev.vector(arg(0)?, ts)?;
            let dst = ev.string(arg(1)?, ts)?;
            let replacement = ev.string(arg(2)?, ts)?;
            let src = ev.string(arg(3)?, ts)?;
            let regex_text = ev.string(arg(4)?, ts)?;
            label_replace(v, &dst, &replacement, &src, &regex_text, ts)?
        }
        "label_join" => {
            let v = ev.vector(arg(0)?, ts)?;
            let dst = ev.string(arg(1)?, ts)?;
            let sep = ev.string(arg(2)?, ts)?;
            let mut src = Vec::new();
            for e in args.iter().skip(3) {
                let l = ev.string(e, ts)?;
                if !is_label_name(&l) {
                    return Err(EvalError::Execution(format!(
                        "invalid source label name in label_join(): {l}"
                    )));
                }
                src.push(l);
            }
            if !is_label_name(&dst) {
                return Err(EvalError::Execution(format!(
                    "invalid destination label name in label_join(): {dst}"
                )));
            }
            v.into_iter()
                .map(|e| {
                    let joined = src
                        .iter()
                        .map(|l| e.metric.get(l).unwrap_or(""))
                        .collect::<Vec<_>>()
                        .join(&sep);
                    let mut metric = e.metric;
                    metric.set(dst.clone(), joined);
                    Elem {
                        metric,
                        v: e.v,
                        t: ts,
                    }
                })
                .collect()
        }
        other => return Err(EvalError::UnsupportedFunction(other.to_owned())),
    };
    check_unique(&out)?;
    Ok(Val::Vector(out))
}

fn unwrap_parens(e: &Expr) -> &Expr {
    match e {
        Expr::Paren(p) => unwrap_parens(&p.expr),
        other => other,
    }
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn math_function(name: &str) -> fn(f64) -> f64 {
    match name {
        "abs" => f64::abs,
        "ceil" => f64::ceil,
        "floor" => f64::floor,
        "exp" => f64::exp,
        "ln" => f64::ln,
        "log2" => f64::log2,
        "log10" => f64::log10,
        "sqrt" => f64::sqrt,
        "sgn" => |v: f64| {
            if v < 0.0 {
                -1.0
            } else if v > 0.0 {
                1.0
            } else {
                v
            }
        },
        "acos" => f64::acos,
        "acosh" => f64::acosh,
        "asin" => f64::asin,
        "asinh" => f64::asinh,
        "atan" => f64::atan,
        "atanh" => f64::atanh,
        "cos" => f64::cos,
        "cosh" => f64::cosh,
        "sin" => f64::sin,
        "sinh" => f64::sinh,
        "tan" => f64::tan,
        "tanh" => f64::tanh,
        "deg" => |v: f64| v * 180.0 / std::f64::consts::PI,
        _ => |v: f64| v * std::f64::consts::PI / 180.0, // rad
    }
}

fn map_values(v: Vec<Elem>, ts: Millis, f: impl Fn(f64) -> f64) -> Vec<Elem> {
    v.into_iter()
        .map(|e| Elem {
            metric: drop_name(e.metric),
            v: f(e.v),
            t: ts,
        })
        .collect()
}

/// Applies `f` to each series' points; `drop` removes the metric name from the result.
fn per_series(range: RangeArg, drop: bool, f: impl Fn(&[Point]) -> Option<f64>) -> Vec<Elem> {
    range
        .series
        .into_iter()
        .filter_map(|s| {
            let v = f(&s.points)?;
            let metric = if drop { drop_name(s.metric) } else { s.metric };
            Some(Elem { metric, v, t: 0 })
        })
        .collect()
}

fn range_function(name: &str, range: RangeArg, ts: Millis) -> Result<Vec<Elem>, EvalError> {
    let window = (range.end, range.range);
    let mut out = match name {
        "rate" => per_series(range, true, |p| extrapolated_rate(p, window, true, true)),
        "increase" => per_series(range, true, |p| extrapolated_rate(p, window, true, false)),
        "delta" => per_series(range, true, |p| extrapolated_rate(p, window, false, false)),
        "irate" => per_series(range, true, |p| instant_value(p, true)),
        "idelta" => per_series(range, true, |p| instant_value(p, false)),
        "deriv" => per_series(range, true, |p| {
            if p.len() < 2 {
                return None;
            }
            Some(linear_regression(p, p[0].t).0)
        }),
        "resets" => per_series(range, true, |p| {
            Some(p.windows(2).filter(|w| w[1].v < w[0].v).count() as f64)
        }),
        "changes" => per_series(range, true, |p| {
            Some(
                p.windows(2)
                    .filter(|w| w[1].v != w[0].v && !(w[1].v.is_nan() && w[0].v.is_nan()))
                    .count() as f64,
            )
        }),
        "avg_over_time" => per_series(range, true, |p| Some(avg_over_time(p))),
        "min_over_time" => per_series(range, true, |p| {
            let mut min = p.first()?.v;
            for x in p {
                if x.v < min || min.is_nan() {
                    min = x.v;
                }
            }
            Some(min)
        }),
        "max_over_time" => per_series(range, true, |p| {
            let mut max = p.first()?.v;
            for x in p {
                if x.v > max || max.is_nan() {
                    max = x.v;
                }
            }
            Some(max)
        }),
        "sum_over_time" => per_series(range, true, |p| {
            let (mut sum, mut c) = (0.0, 0.0);
            for x in p {
                (sum, c) = kahan_sum_inc(x.v, sum, c);
            }
            Some(if sum.is_infinite() { sum } else { sum + c })
        }),
        "count_over_time" => per_series(range, true, |p| Some(p.len() as f64)),
        "last_over_time" => per_series(range, false, |p| p.last().map(|x| x.v)),
        "present_over_time" => per_series(range, true, |_| Some(1.0)),
        "stddev_over_time" => per_series(range, true, |p| Some(variance(p).sqrt())),
        "stdvar_over_time" => per_series(range, true, |p| Some(variance(p))),
        other => return Err(EvalError::UnsupportedFunction(other.to_owned())),
    };
    for e in &mut out {
        e.t = ts;
    }
    Ok(out)
}

/// `holt_winters`: double exponential smoothing of the samples with smoothing factor `sf` and
/// trend factor `tf` (Prometheus 2.42 `funcHoltWinters`); nothing with fewer than two samples.
fn holt_winters(points: &[Point], sf: f64, tf: f64) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    // s0 and s1: the two latest smoothed values; b: the trend.
    let (mut s0, mut s1) = (0.0, points[0].v);
    let mut b = points[1].v - points[0].v;
    for (i, p) in points.iter().enumerate().skip(1) {
        if i > 1 {
            b = tf * (s1 - s0) + (1.0 - tf) * b;
        }
        let smoothed = sf * p.v + (1.0 - sf) * (s1 + b);
        (s0, s1) = (s1, smoothed);
    }
    Some(s1)
}

/// `holt_winters`' factors must lie strictly between 0 and 1 (NaN passes, as in Prometheus);
/// the error is Prometheus' own words.
fn check_factor(what: &str, symbol: &str, v: f64) -> Result<(), EvalError> {
    if v <= 0.0 || v >= 1.0 {
        return Err(EvalError::Execution(format!(
            "invalid {what}. Expected: 0 < {symbol} < 1, got: {}",
            go_percent_f(v)
        )));
    }
    Ok(())
}

/// Go's `fmt` verb `%f`: six decimals, `NaN`, `+Inf`, `-Inf`.
fn go_percent_f(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        format!("{v:.6}")
    }
}

/// `sort` and `sort_desc`: by value, NaN last in both. Equal values keep their input order and
/// NaNs come in reverse input order — what Go's `sort.Sort` does with Prometheus' comparators
/// on up to 12 elements (an insertion sort); on more, Prometheus' order among equal values is
/// whatever its unstable sort leaves, which PromQL does not define.
fn sort_by_value(v: Vec<Elem>, descending: bool) -> Vec<Elem> {
    let (mut numbers, nans): (Vec<Elem>, Vec<Elem>) = v.into_iter().partition(|e| !e.v.is_nan());
    numbers.sort_by(|a, b| {
        let order = a.v.partial_cmp(&b.v).unwrap_or(std::cmp::Ordering::Equal);
        if descending { order.reverse() } else { order }
    });
    numbers.extend(nans.into_iter().rev());
    numbers
}

/// `rate`, `increase` and `delta`: the change over the samples, corrected for counter resets,
/// extrapolated towards the window's edges (Prometheus 2.42 `extrapolatedRate`).
fn extrapolated_rate(
    points: &[Point],
    (range_end, range): (Millis, Millis),
    is_counter: bool,
    is_rate: bool,
) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let first = points[0];
    let last = points[points.len() - 1];
    let range_start = range_end - range;
    let mut result = last.v - first.v;
    if is_counter {
        let mut prev = first.v;
        for p in &points[1..] {
            if p.v < prev {
                result += prev;
            }
            prev = p.v;
        }
    }
    let mut duration_to_start = (first.t - range_start) as f64 / 1000.0;
    let duration_to_end = (range_end - last.t) as f64 / 1000.0;
    let sampled_interval = (last.t - first.t) as f64 / 1000.0;
    let average_between = sampled_interval / (points.len() - 1) as f64;
    if is_counter && result > 0.0 && first.v >= 0.0 {
        let duration_to_zero = sampled_interval * (first.v / result);
        if duration_to_zero < duration_to_start {
            duration_to_start = duration_to_zero;
        }
    }
    let threshold = average_between * 1.1;
    let mut extrapolate_to = sampled_interval;
    extrapolate_to += if duration_to_start < threshold {
        duration_to_start
    } else {
        average_between / 2.0
    };
    extrapolate_to += if duration_to_end < threshold {
        duration_to_end
    } else {
        average_between / 2.0
    };
    let mut factor = extrapolate_to / sampled_interval;
    if is_rate {
        factor /= range as f64 / 1000.0;
    }
    Some(result * factor)
}

/// `irate` and `idelta`: from the last two samples.
fn instant_value(points: &[Point], is_rate: bool) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let last = points[points.len() - 1];
    let prev = points[points.len() - 2];
    let mut result = if is_rate && last.v < prev.v {
        last.v
    } else {
        last.v - prev.v
    };
    let interval = last.t - prev.t;
    if interval == 0 {
        return None;
    }
    if is_rate {
        result /= interval as f64 / 1000.0;
    }
    Some(result)
}

fn avg_over_time(points: &[Point]) -> f64 {
    let (mut mean, mut count, mut c) = (0.0f64, 0.0f64, 0.0f64);
    for p in points {
        count += 1.0;
        if mean.is_infinite() {
            if p.v.is_infinite() && (mean > 0.0) == (p.v > 0.0) {
                continue;
            }
            if !p.v.is_infinite() && !p.v.is_nan() {
                continue;
            }
        }
        (mean, c) = kahan_sum_inc(p.v / count - mean / count, mean, c);
    }
    if mean.is_infinite() { mean } else { mean + c }
}

fn variance(points: &[Point]) -> f64 {
    let (mut count, mut mean, mut c_mean, mut aux, mut c_aux) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for p in points {
        count += 1.0;
        let delta = p.v - (mean + c_mean);
        (mean, c_mean) = kahan_sum_inc(delta / count, mean, c_mean);
        (aux, c_aux) = kahan_sum_inc(delta * (p.v - (mean + c_mean)), aux, c_aux);
    }
    (aux + c_aux) / count
}

/// The labels `absent()` reports: the selector's equality matchers, except `__name__` and any
/// label matched more than once or by another operator.
fn absent_labels(arg: &Expr) -> Labels {
    let vs = match arg {
        Expr::VectorSelector(vs) => vs,
        Expr::MatrixSelector(ms) => &ms.vs,
        _ => return Labels::default(),
    };
    let alternatives = selector_matchers(vs);
    let [matchers] = alternatives.as_slice() else {
        return Labels::default();
    };
    let mut labels = Labels::default();
    let mut has = std::collections::HashSet::new();
    for m in matchers {
        if m.name == "__name__" {
            continue;
        }
        if matches!(m.op, MatchOp::Equal) && !has.contains(&m.name) {
            labels.set(m.name.clone(), m.value.clone());
            has.insert(m.name.clone());
        } else {
            labels.remove(&m.name);
        }
    }
    labels
}

fn histogram_quantile(q: f64, v: Vec<Elem>, ts: Millis) -> Vec<Elem> {
    // Grouped by all labels but `le` (the name included), reported without `le` and name.
    let mut order: Vec<Labels> = Vec::new();
    let mut groups: HashMap<Labels, (Labels, Vec<Bucket>)> = HashMap::new();
    for e in v {
        let Some(upper_bound) = e.metric.get("le").and_then(parse_go_float) else {
            continue;
        };
        let mut key = e.metric;
        key.remove("le");
        let entry = groups.entry(key.clone()).or_insert_with(|| {
            order.push(key.clone());
            (drop_name(key), Vec::new())
        });
        entry.1.push(Bucket {
            upper_bound,
            count: e.v,
        });
    }
    order
        .into_iter()
        .filter_map(|key| {
            let (metric, mut buckets) = groups.remove(&key)?;
            Some(Elem {
                metric,
                v: bucket_quantile(q, &mut buckets),
                t: ts,
            })
        })
        .collect()
}

/// `strconv.ParseFloat` for bucket bounds.
fn parse_go_float(s: &str) -> Option<f64> {
    crate::exposition::parse_float(s)
}

fn label_replace(
    v: Vec<Elem>,
    dst: &str,
    replacement: &str,
    src: &str,
    regex_text: &str,
    ts: Millis,
) -> Result<Vec<Elem>, EvalError> {
    let re = regex::Regex::new(&format!("^(?:{regex_text})$")).map_err(|_| {
        EvalError::Execution(format!(
            "invalid regular expression in label_replace(): {regex_text}"
        ))
    })?;
    if !is_label_name(dst) {
        return Err(EvalError::Execution(format!(
            "invalid destination label name in label_replace(): {dst}"
        )));
    }
    Ok(v.into_iter()
        .map(|e| {
            let value = e.metric.get(src).unwrap_or("");
            let metric = match re.captures(value) {
                None => e.metric,
                Some(caps) => {
                    let mut res = String::new();
                    caps.expand(replacement, &mut res);
                    let mut m = e.metric.clone();
                    m.set(dst.to_owned(), res);
                    m
                }
            };
            Elem {
                metric,
                v: e.v,
                t: ts,
            }
        })
        .collect())
}
