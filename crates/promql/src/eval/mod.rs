//! PromQL evaluation with the semantics of Prometheus 2.42.
//!
//! The [`Engine`] evaluates a parsed expression against any [`SeriesSource`] (the [`Store`] in
//! practice) at a time the caller gives: it never reads the clock. Instant vector selectors take
//! the newest sample within the lookback delta (5 minutes by default), `[t - lookback, t]`
//! inclusive, and see nothing past a staleness marker; range selectors take `[t - range, t]`
//! inclusive without staleness markers; subqueries evaluate on steps aligned to multiples of
//! their step. Range queries evaluate the expression at every step. Results come back as
//! [`Value`], exactly what the Prometheus HTTP API returns.
//!
//! Submodules: [`functions`] (calls), [`aggregate`] (`sum`, `topk`, ...), [`binary`] (operators
//! and vector matching), [`float`] (Go-exact numeric kernels), [`calendar`] (Go's date arithmetic
//! for `year`, `month`, ...).

mod aggregate;
mod binary;
mod calendar;
pub mod float;
mod functions;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, SystemTime};

use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::function::{Function, register_extra_functions};
use promql_parser::parser::value::ValueType;
use promql_parser::parser::{self, AtModifier, Expr, Offset, VectorSelector};

use crate::store::{Store, is_stale};
use crate::value::{Labels, Millis, Point, Sample, Series, Value};

/// Why a query produced no result.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EvalError {
    #[error("PromQL does not parse: {0}")]
    Parse(String),
    #[error(
        "function {0}() is not supported by the embedded evaluator — use a Prometheus metrics source for it"
    )]
    UnsupportedFunction(String),
    #[error("{0} is not supported by the embedded evaluator (Prometheus 2.42 semantics)")]
    Unsupported(String),
    /// A runtime error Prometheus reports too (duplicate series, many-to-many matching, ...).
    #[error("{0}")]
    Execution(String),
    #[error("invalid range query: {0}")]
    InvalidRange(String),
}

/// Parses PromQL as Prometheus 2.42 does. `promql-parser` follows Prometheus 3, which renamed
/// `holt_winters(range, sf, tf)` to `double_exponential_smoothing`; the 2.42 name is added to
/// the parser's function table (process-wide) before the first parse.
pub fn parse(query: &str) -> Result<Expr, String> {
    static PROMETHEUS_2_FUNCTIONS: std::sync::Once = std::sync::Once::new();
    PROMETHEUS_2_FUNCTIONS.call_once(|| {
        // An error only means a later parser version knows the name itself, which is as good.
        let _ = register_extra_functions(vec![Function::new(
            "holt_winters",
            vec![ValueType::Matrix, ValueType::Scalar, ValueType::Scalar],
            0,
            ValueType::Vector,
            false,
        )]);
    });
    parser::parse(query)
}

/// Where the evaluator reads series from.
pub trait SeriesSource {
    /// Series matching every matcher, with their samples in `[mint, maxt]` (staleness markers
    /// included), ordered by labels; series without samples there are left out.
    fn select(&self, matchers: &[Matcher], mint: Millis, maxt: Millis) -> Vec<Series>;

    /// Series matching every matcher, each with its newest sample in `[mint, maxt]` (possibly a
    /// staleness marker), ordered by labels.
    fn select_latest(
        &self,
        matchers: &[Matcher],
        mint: Millis,
        maxt: Millis,
    ) -> Vec<(Labels, Point)> {
        self.select(matchers, mint, maxt)
            .into_iter()
            .filter_map(|s| s.points.last().copied().map(|p| (s.metric, p)))
            .collect()
    }
}

impl SeriesSource for Store {
    fn select(&self, matchers: &[Matcher], mint: Millis, maxt: Millis) -> Vec<Series> {
        Store::select(self, matchers, mint, maxt)
    }

    fn select_latest(
        &self,
        matchers: &[Matcher],
        mint: Millis,
        maxt: Millis,
    ) -> Vec<(Labels, Point)> {
        Store::select_latest(self, matchers, mint, maxt)
    }
}

/// Evaluation settings that Prometheus takes from its command line and configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvalOptions {
    /// `--query.lookback-delta` (default 5 minutes).
    pub lookback_delta: Millis,
    /// The step of subqueries written without one: the global `evaluation_interval` (default
    /// 1 minute).
    pub default_subquery_step: Millis,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            lookback_delta: 300_000,
            default_subquery_step: 60_000,
        }
    }
}

/// Evaluates PromQL.
#[derive(Debug, Clone, Copy, Default)]
pub struct Engine {
    pub options: EvalOptions,
}

impl Engine {
    pub fn new(options: EvalOptions) -> Self {
        Engine { options }
    }

    /// `GET /api/v1/query?query=…&time=at`.
    pub fn instant<S: SeriesSource + ?Sized>(
        &self,
        source: &S,
        query: &str,
        at: Millis,
    ) -> Result<Value, EvalError> {
        let expr = parse(query).map_err(EvalError::Parse)?;
        self.instant_expr(source, &expr, at)
    }

    /// [`Engine::instant`] on a parsed expression (e.g. one scoped to an arm).
    pub fn instant_expr<S: SeriesSource + ?Sized>(
        &self,
        source: &S,
        expr: &Expr,
        at: Millis,
    ) -> Result<Value, EvalError> {
        let ev = Evaluator {
            source,
            options: self.options,
            start: at,
            end: at,
        };
        Ok(match ev.eval(expr, at)? {
            Val::Scalar(v) => Value::Scalar(Point { t: at, v }),
            Val::Str(v) => Value::String { t: at, v },
            Val::Vector(elems) => Value::Vector(
                elems
                    .into_iter()
                    .map(|e| Sample {
                        metric: e.metric,
                        point: Point { t: at, v: e.v },
                    })
                    .collect(),
            ),
            Val::Matrix(series) => Value::Matrix(series),
        })
    }

    /// `GET /api/v1/query_range?query=…&start=…&end=…&step=…`: a matrix, series ordered by
    /// labels, a scalar expression giving one series without labels.
    pub fn range<S: SeriesSource + ?Sized>(
        &self,
        source: &S,
        query: &str,
        start: Millis,
        end: Millis,
        step: Millis,
    ) -> Result<Value, EvalError> {
        let expr = parse(query).map_err(EvalError::Parse)?;
        self.range_expr(source, &expr, start, end, step)
    }

    /// [`Engine::range`] on a parsed expression.
    pub fn range_expr<S: SeriesSource + ?Sized>(
        &self,
        source: &S,
        expr: &Expr,
        start: Millis,
        end: Millis,
        step: Millis,
    ) -> Result<Value, EvalError> {
        if step <= 0 {
            return Err(EvalError::InvalidRange(
                "the step must be a positive duration".into(),
            ));
        }
        if end < start {
            return Err(EvalError::InvalidRange(
                "the end time must not be before the start time".into(),
            ));
        }
        if (end - start) / step > 11_000 {
            return Err(EvalError::InvalidRange(
                "exceeded maximum resolution of 11,000 points per timeseries: try decreasing the query resolution (?step=XX)".into(),
            ));
        }
        match expr.value_type() {
            parser::value::ValueType::Scalar | parser::value::ValueType::Vector => {}
            other => {
                return Err(EvalError::InvalidRange(format!(
                    "invalid expression type \"{}\" for range query, must be Scalar or instant Vector",
                    match other {
                        parser::value::ValueType::Matrix => "range vector",
                        _ => "string",
                    }
                )));
            }
        }
        let ev = Evaluator {
            source,
            options: self.options,
            start,
            end,
        };
        let mut series: BTreeMap<Labels, Vec<Point>> = BTreeMap::new();
        let mut t = start;
        loop {
            match ev.eval(expr, t)? {
                Val::Scalar(v) => series
                    .entry(Labels::default())
                    .or_default()
                    .push(Point { t, v }),
                Val::Vector(elems) => {
                    for e in elems {
                        series
                            .entry(e.metric)
                            .or_default()
                            .push(Point { t, v: e.v });
                    }
                }
                _ => {
                    return Err(EvalError::InvalidRange(
                        "the expression must be a scalar or an instant vector".into(),
                    ));
                }
            }
            match t.checked_add(step) {
                Some(next) if next <= end => t = next,
                _ => break,
            }
        }
        Ok(Value::Matrix(
            series
                .into_iter()
                .map(|(metric, points)| Series { metric, points })
                .collect(),
        ))
    }
}

/// An instant-vector element. `t` is the sample's own time for vector selectors (what
/// `timestamp()` reports) and the evaluation time otherwise.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Elem {
    pub metric: Labels,
    pub v: f64,
    pub t: Millis,
}

/// An intermediate value.
#[derive(Debug, Clone)]
pub(crate) enum Val {
    Scalar(f64),
    Str(String),
    Vector(Vec<Elem>),
    Matrix(Vec<Series>),
}

/// The argument of a range function: series and the window they were selected for.
pub(crate) struct RangeArg {
    pub series: Vec<Series>,
    /// The window is `[end - range, end]`.
    pub end: Millis,
    pub range: Millis,
}

pub(crate) struct Evaluator<'a, S: ?Sized> {
    source: &'a S,
    options: EvalOptions,
    /// The query's start and end, what `@ start()` and `@ end()` mean.
    start: Millis,
    end: Millis,
}

/// A bound on one subquery's inner evaluations, so a query like `x[1y:1ms]` fails instead of
/// running for hours (Prometheus bounds it through its 50 million samples limit).
const MAX_SUBQUERY_STEPS: i64 = 1_000_000;

pub(crate) fn millis(d: &Duration) -> Millis {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn offset_millis(o: &Option<Offset>) -> Millis {
    match o {
        None => 0,
        Some(Offset::Pos(d)) => millis(d),
        Some(Offset::Neg(d)) => -millis(d),
    }
}

/// The label matchers of a selector, the metric name included as a `__name__` matcher. With
/// `or` alternatives, one list per alternative.
pub(crate) fn selector_matchers(vs: &VectorSelector) -> Vec<Vec<Matcher>> {
    let name = vs
        .name
        .as_ref()
        .map(|n| Matcher::new(MatchOp::Equal, "__name__", n));
    let with_name = |ms: &[Matcher]| -> Vec<Matcher> {
        let mut out: Vec<Matcher> = name.iter().cloned().collect();
        out.extend(ms.iter().cloned());
        out
    };
    if vs.matchers.or_matchers.is_empty() {
        vec![with_name(&vs.matchers.matchers)]
    } else {
        vs.matchers
            .or_matchers
            .iter()
            .map(|alt| with_name(alt))
            .collect()
    }
}

/// Drops `__name__`, as most functions and arithmetic do.
pub(crate) fn drop_name(mut l: Labels) -> Labels {
    l.remove("__name__");
    l
}

/// Prometheus' check after every step: two elements with one label set is an error.
pub(crate) fn check_unique(elems: &[Elem]) -> Result<(), EvalError> {
    if elems.len() < 2 {
        return Ok(());
    }
    let mut seen = HashSet::with_capacity(elems.len());
    for e in elems {
        if !seen.insert(&e.metric) {
            return Err(EvalError::Execution(
                "vector cannot contain metrics with the same labelset".into(),
            ));
        }
    }
    Ok(())
}

impl<S: SeriesSource + ?Sized> Evaluator<'_, S> {
    fn at_time(&self, at: &Option<AtModifier>, ts: Millis) -> Millis {
        match at {
            None => ts,
            Some(AtModifier::Start) => self.start,
            Some(AtModifier::End) => self.end,
            Some(AtModifier::At(t)) => match t.duration_since(SystemTime::UNIX_EPOCH) {
                Ok(d) => millis(&d),
                Err(e) => -millis(&e.duration()),
            },
        }
    }

    pub(crate) fn eval(&self, e: &Expr, ts: Millis) -> Result<Val, EvalError> {
        match e {
            Expr::NumberLiteral(n) => Ok(Val::Scalar(n.val)),
            Expr::StringLiteral(s) => Ok(Val::Str(s.val.clone())),
            Expr::Paren(p) => self.eval(&p.expr, ts),
            Expr::Unary(u) => match self.eval(&u.expr, ts)? {
                Val::Scalar(v) => Ok(Val::Scalar(-v)),
                Val::Vector(elems) => {
                    let out: Vec<Elem> = elems
                        .into_iter()
                        .map(|e| Elem {
                            metric: drop_name(e.metric),
                            v: -e.v,
                            t: ts,
                        })
                        .collect();
                    check_unique(&out)?;
                    Ok(Val::Vector(out))
                }
                _ => Err(EvalError::Execution(
                    "unary minus needs a scalar or an instant vector".into(),
                )),
            },
            Expr::VectorSelector(vs) => Ok(Val::Vector(self.vector_selector(vs, ts))),
            Expr::MatrixSelector(_) | Expr::Subquery(_) => {
                Ok(Val::Matrix(self.range_arg(e, ts)?.series))
            }
            Expr::Call(call) => functions::call(self, call, ts),
            Expr::Aggregate(agg) => aggregate::aggregate(self, agg, ts),
            Expr::Binary(b) => binary::binary(self, b, ts),
            Expr::Extension(_) => Err(EvalError::Unsupported("extension expressions".into())),
        }
    }

    /// Newest non-stale sample of each matching series within the lookback delta.
    fn vector_selector(&self, vs: &VectorSelector, ts: Millis) -> Vec<Elem> {
        let t = self
            .at_time(&vs.at, ts)
            .saturating_sub(offset_millis(&vs.offset));
        let mint = t.saturating_sub(self.options.lookback_delta);
        let alternatives = selector_matchers(vs);
        let mut out: Vec<Elem> = Vec::new();
        let several = alternatives.len() > 1;
        for matchers in alternatives {
            for (metric, p) in self.source.select_latest(&matchers, mint, t) {
                if is_stale(p.v) || (several && out.iter().any(|e| e.metric == metric)) {
                    continue;
                }
                out.push(Elem {
                    metric,
                    v: p.v,
                    t: p.t,
                });
            }
        }
        if several {
            out.sort_by(|a, b| a.metric.cmp(&b.metric));
        }
        out
    }

    /// Evaluates a matrix selector or subquery (possibly in parentheses) at `ts`.
    pub(crate) fn range_arg(&self, e: &Expr, ts: Millis) -> Result<RangeArg, EvalError> {
        match e {
            Expr::Paren(p) => self.range_arg(&p.expr, ts),
            Expr::MatrixSelector(ms) => {
                let end = self
                    .at_time(&ms.vs.at, ts)
                    .saturating_sub(offset_millis(&ms.vs.offset));
                let range = millis(&ms.range);
                let alternatives = selector_matchers(&ms.vs);
                let several = alternatives.len() > 1;
                let mut series: Vec<Series> = Vec::new();
                for matchers in alternatives {
                    for mut s in self
                        .source
                        .select(&matchers, end.saturating_sub(range), end)
                    {
                        s.points.retain(|p| !is_stale(p.v));
                        if s.points.is_empty()
                            || (several && series.iter().any(|x| x.metric == s.metric))
                        {
                            continue;
                        }
                        series.push(s);
                    }
                }
                if several {
                    series.sort_by(|a, b| a.metric.cmp(&b.metric));
                }
                Ok(RangeArg { series, end, range })
            }
            Expr::Subquery(sq) => {
                let end = self
                    .at_time(&sq.at, ts)
                    .saturating_sub(offset_millis(&sq.offset));
                let range = millis(&sq.range);
                let step = sq
                    .step
                    .as_ref()
                    .map(millis)
                    .unwrap_or(self.options.default_subquery_step);
                if step <= 0 {
                    return Err(EvalError::Execution(
                        "subquery step must be positive".into(),
                    ));
                }
                // The first step-aligned time after end - range (Go's truncating division).
                let from = end.saturating_sub(range);
                let mut t = step * (from / step);
                if t < from {
                    t = t.saturating_add(step);
                }
                let steps = if t > end { 0 } else { (end - t) / step + 1 };
                if steps > MAX_SUBQUERY_STEPS {
                    return Err(EvalError::Execution(format!(
                        "the subquery would evaluate {steps} steps (more than {MAX_SUBQUERY_STEPS}): use a larger step"
                    )));
                }
                let mut by_labels: BTreeMap<Labels, Vec<Point>> = BTreeMap::new();
                for _ in 0..steps {
                    match self.eval(&sq.expr, t)? {
                        Val::Vector(elems) => {
                            for e in elems {
                                by_labels
                                    .entry(e.metric)
                                    .or_default()
                                    .push(Point { t, v: e.v });
                            }
                        }
                        Val::Scalar(v) => by_labels
                            .entry(Labels::default())
                            .or_default()
                            .push(Point { t, v }),
                        _ => {
                            return Err(EvalError::Execution(
                                "a subquery needs an instant vector".into(),
                            ));
                        }
                    }
                    t = t.saturating_add(step);
                }
                Ok(RangeArg {
                    series: by_labels
                        .into_iter()
                        .map(|(metric, points)| Series { metric, points })
                        .collect(),
                    end,
                    range,
                })
            }
            _ => Err(EvalError::Execution(
                "expected a range vector (a selector with [range] or a subquery)".into(),
            )),
        }
    }

    /// Evaluates an expression that must give an instant vector.
    pub(crate) fn vector(&self, e: &Expr, ts: Millis) -> Result<Vec<Elem>, EvalError> {
        match self.eval(e, ts)? {
            Val::Vector(v) => Ok(v),
            other => Err(expected("an instant vector", &other)),
        }
    }

    /// Evaluates an expression that must give a scalar.
    pub(crate) fn scalar(&self, e: &Expr, ts: Millis) -> Result<f64, EvalError> {
        match self.eval(e, ts)? {
            Val::Scalar(v) => Ok(v),
            other => Err(expected("a scalar", &other)),
        }
    }

    /// Evaluates an expression that must give a string.
    pub(crate) fn string(&self, e: &Expr, ts: Millis) -> Result<String, EvalError> {
        match self.eval(e, ts)? {
            Val::Str(s) => Ok(s),
            other => Err(expected("a string", &other)),
        }
    }
}

/// The error for a value of the wrong type where `what` was needed.
fn expected(what: &str, got: &Val) -> EvalError {
    EvalError::Execution(format!("expected {what}, got {}", type_name(got)))
}

fn type_name(v: &Val) -> &'static str {
    match v {
        Val::Scalar(_) => "scalar",
        Val::Str(_) => "string",
        Val::Vector(_) => "instant vector",
        Val::Matrix(_) => "range vector",
    }
}

#[cfg(test)]
mod tests;
