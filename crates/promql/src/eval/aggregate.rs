//! Aggregation operators (`sum avg min max count group stddev stdvar topk bottomk quantile
//! count_values`) with `by`/`without`, as Prometheus 2.42's `aggregation`: groups in the order
//! their first element appears, `without` also dropping the metric name.

use std::collections::HashMap;

use promql_parser::parser::token::{
    T_AVG, T_BOTTOMK, T_COUNT, T_COUNT_VALUES, T_GROUP, T_MAX, T_MIN, T_QUANTILE, T_STDDEV,
    T_STDVAR, T_SUM, T_TOPK,
};
use promql_parser::parser::{AggregateExpr, LabelModifier};

use super::float::quantile;
use super::{Elem, EvalError, Evaluator, SeriesSource, Val};
use crate::value::{Labels, Millis, format_value};

struct Group {
    labels: Labels,
    value: f64,
    mean: f64,
    count: u64,
    members: Vec<Elem>,
}

pub(crate) fn aggregate<S: SeriesSource + ?Sized>(
    ev: &Evaluator<'_, S>,
    agg: &AggregateExpr,
    ts: Millis,
) -> Result<Val, EvalError> {
    let op = agg.op.id();
    let mut k = 0i64;
    let mut q = 0.0;
    let mut value_label = None;
    if let Some(param) = agg.param.as_deref() {
        match op {
            T_TOPK | T_BOTTOMK => {
                let f = ev.scalar(param, ts)?;
                if !(f >= i64::MIN as f64 && f <= i64::MAX as f64) {
                    return Err(EvalError::Execution(format!(
                        "Scalar value {} overflows int64",
                        format_value(f)
                    )));
                }
                k = f as i64;
            }
            T_QUANTILE => q = ev.scalar(param, ts)?,
            T_COUNT_VALUES => {
                let l = ev.string(param, ts)?;
                if !is_label_name(&l) {
                    return Err(EvalError::Execution(format!("invalid label name {l:?}")));
                }
                value_label = Some(l);
            }
            _ => {
                return Err(EvalError::Unsupported(format!("aggregation {}", agg.op)));
            }
        }
    }
    let input = ev.vector(&agg.expr, ts)?;
    if matches!(op, T_TOPK | T_BOTTOMK) && k < 1 {
        return Ok(Val::Vector(Vec::new()));
    }
    if !matches!(
        op,
        T_SUM
            | T_AVG
            | T_COUNT
            | T_MIN
            | T_MAX
            | T_GROUP
            | T_STDDEV
            | T_STDVAR
            | T_TOPK
            | T_BOTTOMK
            | T_QUANTILE
            | T_COUNT_VALUES
    ) {
        return Err(EvalError::Unsupported(format!("aggregation {}", agg.op)));
    }
    let (without, mut grouping): (bool, Vec<String>) = match &agg.modifier {
        None => (false, Vec::new()),
        Some(LabelModifier::Include(l)) => (false, l.labels.clone()),
        Some(LabelModifier::Exclude(l)) => (true, l.labels.clone()),
    };
    if let (Some(vl), false) = (&value_label, without) {
        grouping.push(vl.clone());
    }

    let mut groups: Vec<Group> = Vec::new();
    let mut index: HashMap<Labels, usize> = HashMap::new();
    for mut e in input {
        if let Some(vl) = &value_label {
            e.metric.set(vl.clone(), format_value(e.v));
        }
        let key = group_labels(&e.metric, &grouping, without);
        let gi = match index.get(&key) {
            Some(&i) => i,
            None => {
                index.insert(key.clone(), groups.len());
                groups.push(Group {
                    labels: key,
                    value: match op {
                        T_STDDEV | T_STDVAR => 0.0,
                        T_GROUP | T_COUNT | T_COUNT_VALUES => 1.0,
                        _ => e.v,
                    },
                    mean: e.v,
                    count: 1,
                    members: Vec::new(),
                });
                let g = groups.len() - 1;
                if matches!(op, T_TOPK | T_BOTTOMK | T_QUANTILE) {
                    groups[g].members.push(e);
                }
                continue;
            }
        };
        let g = &mut groups[gi];
        let v = e.v;
        match op {
            T_SUM => g.value += v,
            T_AVG => {
                g.count += 1;
                let n = g.count as f64;
                if g.mean.is_infinite() {
                    if v.is_infinite() && (g.mean > 0.0) == (v > 0.0) {
                        continue;
                    }
                    if !v.is_infinite() && !v.is_nan() {
                        continue;
                    }
                }
                g.mean += v / n - g.mean / n;
            }
            T_MAX if g.value < v || g.value.is_nan() => g.value = v,
            T_MIN if g.value > v || g.value.is_nan() => g.value = v,
            T_COUNT | T_COUNT_VALUES => g.count += 1,
            T_STDDEV | T_STDVAR => {
                g.count += 1;
                let delta = v - g.mean;
                g.mean += delta / g.count as f64;
                g.value += delta * (v - g.mean);
            }
            T_TOPK | T_BOTTOMK | T_QUANTILE => g.members.push(e),
            _ => {} // group
        }
    }

    let mut out = Vec::with_capacity(groups.len());
    for mut g in groups {
        let value = match op {
            T_AVG => g.mean,
            T_COUNT | T_COUNT_VALUES => g.count as f64,
            T_STDVAR => g.value / g.count as f64,
            T_STDDEV => (g.value / g.count as f64).sqrt(),
            T_QUANTILE => {
                let mut vals: Vec<f64> = g.members.iter().map(|e| e.v).collect();
                quantile(q, &mut vals)
            }
            T_TOPK | T_BOTTOMK => {
                // NaN is the least wanted either way; ties keep input order.
                let mut members = std::mem::take(&mut g.members);
                let descending = op == T_TOPK;
                members.sort_by(|a, b| nan_last(a.v, b.v, descending));
                members.truncate(usize::try_from(k).unwrap_or(usize::MAX));
                for e in members {
                    out.push(Elem { t: ts, ..e });
                }
                continue;
            }
            _ => g.value,
        };
        out.push(Elem {
            metric: g.labels,
            v: value,
            t: ts,
        });
    }
    Ok(Val::Vector(out))
}

/// The group's label set: `by` keeps only the listed labels, `without` drops them and the name.
fn group_labels(metric: &Labels, grouping: &[String], without: bool) -> Labels {
    if without {
        let mut l = metric.clone();
        for name in grouping {
            l.remove(name);
        }
        l.remove("__name__");
        l
    } else {
        Labels::from_pairs(
            metric
                .iter()
                .filter(|l| grouping.contains(&l.name))
                .map(|l| (l.name.clone(), l.value.clone())),
        )
    }
}

/// Value order for `topk` (descending) and `bottomk` (ascending), NaN last either way.
fn nan_last(a: f64, b: f64, descending: bool) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        _ if descending => b.partial_cmp(&a).unwrap_or(Ordering::Equal),
        _ => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
