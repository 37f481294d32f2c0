//! Binary operators: arithmetic, comparison (filtering or `bool`) and set operators, between
//! scalars and instant vectors, with `on`/`ignoring` matching and `group_left`/`group_right`
//! cardinality — Prometheus 2.42's `VectorBinop`, `VectorAnd/Or/Unless` and `VectorscalarBinop`.

use std::collections::{HashMap, HashSet};

use promql_parser::parser::token::{
    T_ADD, T_ATAN2, T_DIV, T_EQLC, T_GTE, T_GTR, T_LAND, T_LOR, T_LSS, T_LTE, T_LUNLESS, T_MOD,
    T_MUL, T_NEQ, T_POW, T_SUB, TokenId,
};
use promql_parser::parser::{BinaryExpr, LabelModifier, VectorMatchCardinality};

use super::{Elem, EvalError, Evaluator, SeriesSource, Val, check_unique, drop_name};
use crate::value::{Labels, Millis};

pub(crate) fn binary<S: SeriesSource + ?Sized>(
    ev: &Evaluator<'_, S>,
    b: &BinaryExpr,
    ts: Millis,
) -> Result<Val, EvalError> {
    let op = b.op.id();
    let modifier = b.modifier.as_ref();
    if modifier.is_some_and(|m| m.fill_values.lhs.is_some() || m.fill_values.rhs.is_some()) {
        return Err(EvalError::Unsupported("fill() modifiers".into()));
    }
    let return_bool = modifier.is_some_and(|m| m.return_bool);
    let lhs = ev.eval(&b.lhs, ts)?;
    let rhs = ev.eval(&b.rhs, ts)?;
    let out = match (lhs, rhs) {
        (Val::Scalar(l), Val::Scalar(r)) => {
            let (v, keep) = elem_op(op, l, r)?;
            // Comparisons between scalars need `bool`: 1 or 0.
            let v = if is_comparison(op) {
                f64::from(u8::from(keep))
            } else {
                v
            };
            return Ok(Val::Scalar(v));
        }
        (Val::Vector(l), Val::Scalar(r)) => vector_scalar(op, l, r, false, return_bool, ts)?,
        (Val::Scalar(l), Val::Vector(r)) => vector_scalar(op, r, l, true, return_bool, ts)?,
        (Val::Vector(l), Val::Vector(r)) => {
            let (on, names) = match modifier.and_then(|m| m.matching.as_ref()) {
                Some(LabelModifier::Include(l)) => (true, l.labels.clone()),
                Some(LabelModifier::Exclude(l)) => (false, l.labels.clone()),
                None => (false, Vec::new()),
            };
            let card = modifier
                .map(|m| m.card.clone())
                .unwrap_or(VectorMatchCardinality::OneToOne);
            let matching = Matching { on, names, card };
            match op {
                T_LAND => and(l, r, &matching),
                T_LOR => or(l, r, &matching),
                T_LUNLESS => unless(l, r, &matching),
                _ => vector_vector(op, l, r, &matching, return_bool, ts)?,
            }
        }
        _ => {
            return Err(EvalError::Execution(
                "binary operators work on scalars and instant vectors only".into(),
            ));
        }
    };
    check_unique(&out)?;
    Ok(Val::Vector(out))
}

struct Matching {
    on: bool,
    names: Vec<String>,
    card: VectorMatchCardinality,
}

impl Matching {
    /// The labels two elements must share to match.
    fn signature(&self, metric: &Labels) -> Labels {
        Labels::from_pairs(
            metric
                .iter()
                .filter(|l| {
                    if self.on {
                        self.names.contains(&l.name)
                    } else {
                        l.name != "__name__" && !self.names.contains(&l.name)
                    }
                })
                .map(|l| (l.name.clone(), l.value.clone())),
        )
    }
}

fn is_comparison(op: TokenId) -> bool {
    matches!(op, T_EQLC | T_NEQ | T_GTR | T_LSS | T_GTE | T_LTE)
}

/// The operators that drop the metric name (Prometheus 2.42's `IsArithmetic`: not `atan2`).
fn is_arithmetic(op: TokenId) -> bool {
    matches!(op, T_ADD | T_SUB | T_MUL | T_DIV | T_MOD | T_POW)
}

/// `(value, keep)`: comparisons keep the left value when they hold.
fn elem_op(op: TokenId, l: f64, r: f64) -> Result<(f64, bool), EvalError> {
    Ok(match op {
        T_ADD => (l + r, true),
        T_SUB => (l - r, true),
        T_MUL => (l * r, true),
        T_DIV => (l / r, true),
        T_POW => (l.powf(r), true),
        T_MOD => (l % r, true),
        T_ATAN2 => (l.atan2(r), true),
        T_EQLC => (l, l == r),
        T_NEQ => (l, l != r),
        T_GTR => (l, l > r),
        T_LSS => (l, l < r),
        T_GTE => (l, l >= r),
        T_LTE => (l, l <= r),
        other => {
            return Err(EvalError::Unsupported(format!(
                "operator {}",
                promql_parser::parser::token::TokenType::new(other)
            )));
        }
    })
}

fn vector_scalar(
    op: TokenId,
    v: Vec<Elem>,
    s: f64,
    swap: bool,
    return_bool: bool,
    ts: Millis,
) -> Result<Vec<Elem>, EvalError> {
    let mut out = Vec::with_capacity(v.len());
    for e in v {
        let (l, r) = if swap { (s, e.v) } else { (e.v, s) };
        let (mut value, mut keep) = elem_op(op, l, r)?;
        if is_comparison(op) && swap {
            value = r;
        }
        if return_bool {
            value = f64::from(u8::from(keep));
            keep = true;
        }
        if keep {
            let metric = if is_arithmetic(op) || return_bool {
                drop_name(e.metric)
            } else {
                e.metric
            };
            out.push(Elem {
                metric,
                v: value,
                t: ts,
            });
        }
    }
    Ok(out)
}

fn vector_vector(
    op: TokenId,
    lhs: Vec<Elem>,
    rhs: Vec<Elem>,
    m: &Matching,
    return_bool: bool,
    ts: Millis,
) -> Result<Vec<Elem>, EvalError> {
    if lhs.is_empty() || rhs.is_empty() {
        return Ok(Vec::new());
    }
    let one_to_many = matches!(m.card, VectorMatchCardinality::OneToMany(_));
    let include: Vec<String> = match &m.card {
        VectorMatchCardinality::ManyToOne(l) | VectorMatchCardinality::OneToMany(l) => {
            l.labels.clone()
        }
        _ => Vec::new(),
    };
    // The "many" side drives; the "one" side is looked up by signature.
    let (many, one) = if one_to_many { (rhs, lhs) } else { (lhs, rhs) };
    let mut one_by_sig: HashMap<Labels, &Elem> = HashMap::with_capacity(one.len());
    for e in &one {
        let sig = m.signature(&e.metric);
        if let Some(dup) = one_by_sig.get(&sig) {
            let side = if one_to_many { "left" } else { "right" };
            let matched: Labels = if m.on {
                Labels::from_pairs(
                    e.metric
                        .iter()
                        .filter(|l| m.names.contains(&l.name))
                        .map(|l| (l.name.clone(), l.value.clone())),
                )
            } else {
                sig.clone()
            };
            return Err(EvalError::Execution(format!(
                "found duplicate series for the match group {matched} on the {side} hand-side of the operation: [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                e.metric, dup.metric
            )));
        }
        one_by_sig.insert(sig, e);
    }
    let one_to_one = matches!(m.card, VectorMatchCardinality::OneToOne);
    let mut matched: HashMap<Labels, HashSet<Labels>> = HashMap::new();
    let mut out = Vec::new();
    for e in &many {
        let sig = m.signature(&e.metric);
        let Some(o) = one_by_sig.get(&sig) else {
            continue;
        };
        let (l, r) = if one_to_many { (o.v, e.v) } else { (e.v, o.v) };
        let (mut value, keep) = elem_op(op, l, r)?;
        if return_bool {
            value = f64::from(u8::from(keep));
        } else if !keep {
            continue;
        }
        let mut metric = result_metric(&e.metric, &o.metric, op, m, &include);
        if return_bool {
            metric = drop_name(metric);
        }
        match matched.get_mut(&sig) {
            Some(_) if one_to_one => {
                return Err(EvalError::Execution(
                    "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)".into(),
                ));
            }
            Some(seen) => {
                if !seen.insert(metric.clone()) {
                    return Err(EvalError::Execution(
                        "multiple matches for labels: grouping labels must ensure unique matches"
                            .into(),
                    ));
                }
            }
            None => {
                let mut seen = HashSet::new();
                if !one_to_one {
                    seen.insert(metric.clone());
                }
                matched.insert(sig, seen);
            }
        }
        out.push(Elem {
            metric,
            v: value,
            t: ts,
        });
    }
    Ok(out)
}

/// The result's labels: the "many" side's, without the name for arithmetic, reduced to the
/// `on` labels (or without the `ignoring` ones) for one-to-one matching, plus the `group_x`
/// labels copied from the "one" side.
fn result_metric(
    many: &Labels,
    one: &Labels,
    op: TokenId,
    m: &Matching,
    include: &[String],
) -> Labels {
    let mut l = many.clone();
    if is_arithmetic(op) {
        l.remove("__name__");
    }
    if matches!(m.card, VectorMatchCardinality::OneToOne) {
        if m.on {
            let names: Vec<String> = l
                .iter()
                .filter(|x| !m.names.contains(&x.name))
                .map(|x| x.name.clone())
                .collect();
            for n in names {
                l.remove(&n);
            }
        } else {
            for n in &m.names {
                l.remove(n);
            }
        }
    }
    for name in include {
        match one.get(name) {
            Some(v) => l.set(name.clone(), v.to_owned()),
            None => {
                l.remove(name);
            }
        }
    }
    l
}

fn and(lhs: Vec<Elem>, rhs: Vec<Elem>, m: &Matching) -> Vec<Elem> {
    if lhs.is_empty() || rhs.is_empty() {
        return Vec::new();
    }
    let right: HashSet<Labels> = rhs.iter().map(|e| m.signature(&e.metric)).collect();
    lhs.into_iter()
        .filter(|e| right.contains(&m.signature(&e.metric)))
        .collect()
}

fn or(lhs: Vec<Elem>, rhs: Vec<Elem>, m: &Matching) -> Vec<Elem> {
    if lhs.is_empty() {
        return rhs;
    }
    if rhs.is_empty() {
        return lhs;
    }
    let left: HashSet<Labels> = lhs.iter().map(|e| m.signature(&e.metric)).collect();
    let mut out = lhs;
    out.extend(
        rhs.into_iter()
            .filter(|e| !left.contains(&m.signature(&e.metric))),
    );
    out
}

fn unless(lhs: Vec<Elem>, rhs: Vec<Elem>, m: &Matching) -> Vec<Elem> {
    if rhs.is_empty() {
        return lhs;
    }
    let right: HashSet<Labels> = rhs.iter().map(|e| m.signature(&e.metric)).collect();
    lhs.into_iter()
        .filter(|e| !right.contains(&m.signature(&e.metric)))
        .collect()
}
