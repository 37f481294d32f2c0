//! `promtool test rules` unit tests generated for a run's alert rules.
//!
//! For each guardrail the generator synthesises input series from the selectors of its query —
//! counters for selectors under a range (`rate(x[5m])`), classic histograms for `*_bucket`,
//! gauges otherwise — and searches a small grid of levels (rates, values, observation sizes)
//! with the embedded evaluator for one level set that breaches and one that is healthy. The
//! tests then assert what Prometheus must do with them: the alert is not firing one evaluation
//! before the breach has lasted `for`, fires exactly when it has, and a healthy canary next to a
//! breaching baseline fires nothing (the query is scoped to the canary arm). promtool runs the
//! real Prometheus rule engine on them, so the evaluator's choice is checked independently.

use std::collections::BTreeMap;
use std::time::Duration;

use canary_core::duration;
use canary_core::plan::{Comparator, Guardrail};
use canary_promql::rewrite::{self, ArmSelector};
use canary_promql::{Engine, Labels, Millis, Store, Value, analyze};
use promql_parser::label::Matcher;
use promql_parser::parser::Expr;
use serde::Serialize;

use super::{AlertRule, CanaryRules, RuleSource, RulesError};

/// Generated unit tests and what they cover.
#[derive(Debug, Clone, PartialEq)]
pub struct PromtoolTests {
    /// The tests file (YAML) for `promtool test rules`.
    pub yaml: String,
    /// Guardrails with a breach test and a healthy test.
    pub covered: Vec<String>,
    /// Guardrails the generator could not build inputs for, with the reason.
    pub uncovered: Vec<UncoveredGuardrail>,
}

/// A guardrail without generated tests, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UncoveredGuardrail {
    pub guardrail: String,
    pub reason: String,
}

#[derive(Serialize)]
struct TestFile {
    rule_files: Vec<String>,
    evaluation_interval: String,
    tests: Vec<TestGroup>,
}

#[derive(Serialize)]
struct TestGroup {
    name: String,
    interval: String,
    input_series: Vec<InputSeries>,
    alert_rule_test: Vec<AlertTest>,
}

#[derive(Serialize)]
struct InputSeries {
    series: String,
    values: String,
}

#[derive(Serialize)]
struct AlertTest {
    eval_time: String,
    alertname: String,
    exp_alerts: Vec<ExpectedAlert>,
}

#[derive(Serialize)]
struct ExpectedAlert {
    exp_labels: BTreeMap<String, String>,
    exp_annotations: BTreeMap<String, String>,
}

/// Level grids. Counters: increase per second. Histograms: the size of every observation (one
/// per second). Gauges: the value, plus points around the threshold.
const COUNTER_RATES: [f64; 7] = [0.0, 0.1, 0.5, 1.0, 2.0, 10.0, 100.0];
const GAUGE_VALUES: [f64; 11] = [
    0.0, 0.5, 1.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0, 10000.0,
];
/// Most level combinations tried per guardrail.
const MAX_COMBINATIONS: usize = 4096;
/// Most samples per input series.
const MAX_STEPS: u64 = 5000;

pub(super) fn generate(rules: &CanaryRules, rules_file: &str) -> Result<PromtoolTests, RulesError> {
    let canary =
        ArmSelector::parse(&rules.arms.canary.selector).map_err(|source| RulesError::Selector {
            arm: "canary",
            source,
        })?;
    let baseline = ArmSelector::parse(&rules.arms.baseline.selector).map_err(|source| {
        RulesError::Selector {
            arm: "baseline",
            source,
        }
    })?;
    let step = evaluation_step(rules);
    let mut tests = Vec::new();
    let mut covered = Vec::new();
    let mut uncovered = Vec::new();
    for (rule, source) in rules.group.rules.iter().zip(&rules.sources) {
        match synthesise(rule, source, &canary, &baseline, step) {
            Ok(mut pair) => {
                tests.append(&mut pair);
                covered.push(source.guardrail.name.clone());
            }
            Err(reason) => uncovered.push(UncoveredGuardrail {
                guardrail: source.guardrail.name.clone(),
                reason,
            }),
        }
    }
    let step_text = duration::format(Duration::from_millis(step as u64));
    let mut yaml = format!(
        "# promtool test rules for canary run {}: per guardrail, a breach that fires exactly after `for`\n# and a healthy canary (next to a breaching baseline) that fires nothing.\n",
        rules.run_id
    );
    for u in &uncovered {
        yaml.push_str(&format!(
            "# not covered: {}: {}\n",
            u.guardrail,
            u.reason.replace('\n', " ")
        ));
    }
    yaml.push_str(
        &serde_norway::to_string(&TestFile {
            rule_files: vec![rules_file.to_owned()],
            evaluation_interval: step_text,
            tests,
        })
        .map_err(|e| RulesError::Render {
            what: "the promtool tests",
            detail: e.to_string(),
        })?,
    );
    Ok(PromtoolTests {
        yaml,
        covered,
        uncovered,
    })
}

/// The evaluation step of the tests: the group interval, refined so every `for` is a multiple.
fn evaluation_step(rules: &CanaryRules) -> Millis {
    let mut step = millis(rules.group.interval).max(1);
    for rule in &rules.group.rules {
        let f = millis(rule.for_);
        if f > 0 {
            step = gcd(step, f);
        }
    }
    step
}

fn millis(d: Duration) -> Millis {
    Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX)
}

fn gcd(a: Millis, b: Millis) -> Millis {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One series family the query reads, with a concrete label set per arm.
#[derive(Debug, Clone)]
struct Family {
    kind: Kind,
    /// Labels including `__name__` (without `le` for a histogram).
    canary: Labels,
    baseline: Option<Labels>,
    levels: Vec<f64>,
}

/// The bucket bounds of a synthesised histogram: 1-2-5 steps from 0.001 to 1e6.
fn bucket_bounds() -> Vec<f64> {
    let mut out = Vec::new();
    for exp in -3..=6 {
        for m in [1.0, 2.0, 5.0] {
            let v = m * 10f64.powi(exp);
            if v <= 1e6 {
                // Round away binary noise so the `le` text is short (0.002, not 0.0020000000000000005).
                out.push(format!("{v:.3}").parse::<f64>().unwrap_or(v));
            }
        }
    }
    out
}

/// Levels as they will be tried: breaches and healthy values are found among these.
fn levels(kind: Kind, threshold: f64) -> Vec<f64> {
    let mut out: Vec<f64> = match kind {
        Kind::Counter => COUNTER_RATES.to_vec(),
        Kind::Histogram => bucket_bounds(),
        Kind::Gauge => {
            let mut v = GAUGE_VALUES.to_vec();
            if threshold.is_finite() && threshold != 0.0 {
                v.extend([0.5, 0.9, 1.1, 2.0].map(|f| threshold * f));
            }
            v
        }
    };
    out.sort_by(f64::total_cmp);
    out.dedup();
    out
}

/// Builds the breach test group and the healthy test group of one rule, or says why not.
fn synthesise(
    rule: &AlertRule,
    source: &RuleSource,
    canary: &ArmSelector,
    baseline: &ArmSelector,
    step: Millis,
) -> Result<Vec<TestGroup>, String> {
    let g = &source.guardrail;
    let mut queries = vec![g.query.as_str()];
    queries.extend(g.samples_query.as_deref());
    let mut families: Vec<Family> = Vec::new();
    let mut warmup: Millis = 0;
    for q in queries {
        let parsed = rewrite::parse(q).map_err(|e| e.to_string())?;
        let on_canary = analyze::selectors(&rewrite::scope(&parsed, canary));
        let on_baseline = analyze::selectors(&rewrite::scope(&parsed, baseline));
        warmup = warmup.max(millis(analyze::reach(&parsed)));
        for (c, b) in on_canary.iter().zip(&on_baseline) {
            let name = c.metric.as_deref().unwrap_or_default();
            let kind = if name.ends_with("_bucket") {
                Kind::Histogram
            } else if c.in_range || name.ends_with("_total") || name.ends_with("_count") {
                Kind::Counter
            } else {
                Kind::Gauge
            };
            let labels = series_labels(&c.matchers, kind)
                .ok_or_else(|| format!("no label values satisfy the selector of {name}"))?;
            let base = series_labels(&b.matchers, kind).filter(|l| *l != labels);
            match families.iter_mut().find(|f| f.canary == labels) {
                Some(f) => {
                    if kind == Kind::Counter && f.kind == Kind::Gauge {
                        f.kind = Kind::Counter;
                        f.levels = levels(Kind::Counter, g.must.value);
                    }
                }
                None => families.push(Family {
                    kind,
                    levels: levels(kind, g.must.value),
                    canary: labels,
                    baseline: base,
                }),
            }
        }
    }
    if families.is_empty() {
        return Err("the query reads no series".into());
    }
    thin_out(&mut families);

    let engine = Engine::default();
    let parse = |q: &str| rewrite::parse(q).map_err(|e| e.to_string());
    let alert_expr = parse(&rule.expr)?;
    let value_expr = parse(&source.canary_query)?;
    let for_ = millis(rule.for_);
    let check_at = warmup + step;
    let end = warmup + for_ + 3 * step;
    let steps = u64::try_from(end / step).unwrap_or(u64::MAX);
    if steps > MAX_STEPS {
        return Err(format!(
            "its windows and `for` need {steps} samples per series at a {} step; more than {MAX_STEPS}",
            duration::format(rule_duration(step))
        ));
    }

    // Search the grid at one time after the windows filled.
    let mut breach: Option<(Vec<f64>, bool)> = None;
    let mut healthy: Option<(Vec<f64>, bool)> = None;
    for combo in combinations(&families) {
        let store = build_store(&families, &combo, None, step, check_at);
        let fires = !vector(&engine, &store, &alert_expr, check_at)?.is_empty();
        let values = vector(&engine, &store, &value_expr, check_at)?;
        let clear = !values.is_empty() && values.iter().all(|v| clear_of(g, *v));
        if fires {
            if breach
                .as_ref()
                .is_none_or(|(_, was_clear)| !was_clear && clear)
            {
                breach = Some((combo, clear));
            }
        } else if !values.is_empty()
            && values.iter().all(|v| !v.is_nan() && g.must.passes(*v))
            && healthy
                .as_ref()
                .is_none_or(|(_, was_clear)| !was_clear && clear)
        {
            healthy = Some((combo, clear));
        }
        if breach.as_ref().is_some_and(|b| b.1) && healthy.as_ref().is_some_and(|h| h.1) {
            break;
        }
    }
    let (breach, _) = breach.ok_or("no synthesised input made it breach")?;
    let (healthy, _) = healthy.ok_or("no synthesised input made it pass with data")?;

    // The breach scenario: canary breaching, baseline healthy. The alert fires first at
    // `fire_at`; the tests pin the firing set there and one evaluation earlier.
    let store = build_store(&families, &breach, Some(&healthy), step, end);
    let data_from = first_data(&engine, &store, &value_expr, step, end)?;
    let firing = simulate(&engine, &store, &alert_expr, step, end, for_)?;
    let fire_index = (0..firing.len())
        .find(|i| *i as Millis * step >= data_from + for_ && !firing[*i].is_empty())
        .ok_or("the synthesised breach does not last `for` within the series")?;
    let fire_at = fire_index as Millis * step;
    let expect = |labels: &[Labels]| -> Vec<ExpectedAlert> {
        labels
            .iter()
            .map(|l| {
                let mut exp_labels: BTreeMap<String, String> = l
                    .iter()
                    .map(|l| (l.name.clone(), l.value.clone()))
                    .collect();
                exp_labels.extend(rule.labels.to_map());
                ExpectedAlert {
                    exp_labels,
                    exp_annotations: rule.annotations.clone(),
                }
            })
            .collect()
    };
    let mut breach_checks = Vec::new();
    if fire_index > 0 {
        breach_checks.push(AlertTest {
            eval_time: duration::format(rule_duration(fire_at - step)),
            alertname: rule.alert.clone(),
            exp_alerts: expect(&firing[fire_index - 1]),
        });
    }
    breach_checks.push(AlertTest {
        eval_time: duration::format(rule_duration(fire_at)),
        alertname: rule.alert.clone(),
        exp_alerts: expect(&firing[fire_index]),
    });

    // The healthy scenario: canary healthy, baseline breaching; once the canary has data,
    // nothing may fire.
    let store = build_store(&families, &healthy, Some(&breach), step, end);
    let data_from = first_data(&engine, &store, &value_expr, step, end)?;
    let firing = simulate(&engine, &store, &alert_expr, step, end, for_)?;
    if let Some(i) = (0..firing.len())
        .find(|i| *i as Millis * step >= data_from + for_ && !firing[*i].is_empty())
    {
        return Err(format!(
            "a healthy canary next to a breaching baseline fires at {}: the query is not confined to the canary arm",
            duration::format(rule_duration(i as Millis * step))
        ));
    }
    let quiet_at: Vec<Millis> = [fire_at.max(data_from + for_), end]
        .into_iter()
        .filter(|t| *t <= end)
        .collect();
    let quiet = |t: Millis| AlertTest {
        eval_time: duration::format(rule_duration(t)),
        alertname: rule.alert.clone(),
        exp_alerts: Vec::new(),
    };
    let interval = duration::format(rule_duration(step));
    let held = if for_ > 0 {
        format!(" for {}", duration::format(rule.for_))
    } else {
        String::new()
    };
    Ok(vec![
        TestGroup {
            name: format!(
                "{}: canary breaching{held} fires {} at {}",
                g.name,
                rule.alert,
                duration::format(rule_duration(fire_at))
            ),
            interval: interval.clone(),
            input_series: input_series(&families, &breach, Some(&healthy), step, end),
            alert_rule_test: breach_checks,
        },
        TestGroup {
            name: format!(
                "{}: healthy canary, breaching baseline: {} stays quiet",
                g.name, rule.alert
            ),
            interval,
            input_series: input_series(&families, &healthy, Some(&breach), step, end),
            alert_rule_test: quiet_at.into_iter().map(quiet).collect(),
        },
    ])
}

/// The first evaluation time at which `expr` returns data.
fn first_data(
    engine: &Engine,
    store: &Store,
    expr: &Expr,
    step: Millis,
    end: Millis,
) -> Result<Millis, String> {
    for i in 0..=end / step {
        if !vector(engine, store, expr, i * step)?.is_empty() {
            return Ok(i * step);
        }
    }
    Err("the synthesised series never give the query a value".into())
}

/// Prometheus' alert state over the evaluations `0, step, ..., end`: per evaluation, the label
/// sets (without `__name__`) of the alerts firing — present at every evaluation for `for_`.
fn simulate(
    engine: &Engine,
    store: &Store,
    expr: &Expr,
    step: Millis,
    end: Millis,
    for_: Millis,
) -> Result<Vec<Vec<Labels>>, String> {
    let mut active: BTreeMap<Labels, Millis> = BTreeMap::new();
    let mut out = Vec::new();
    for i in 0..=end / step {
        let t = i * step;
        let present: Vec<Labels> = vector_samples(engine, store, expr, t)?
            .into_iter()
            .map(|mut l| {
                l.remove("__name__");
                l
            })
            .collect();
        active.retain(|l, _| present.contains(l));
        for l in present {
            active.entry(l).or_insert(t);
        }
        out.push(
            active
                .iter()
                .filter(|(_, since)| t - **since >= for_)
                .map(|(l, _)| l.clone())
                .collect(),
        );
    }
    Ok(out)
}

fn rule_duration(ms: Millis) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// Whether `v` is far enough from the threshold that two evaluators cannot disagree on it.
fn clear_of(g: &Guardrail, v: f64) -> bool {
    if v.is_nan() {
        return false;
    }
    let t = g.must.value;
    match g.must.op {
        // Equality is meant exactly: a healthy `== 0` is exactly 0.
        Comparator::Eq | Comparator::Ne if v == t => true,
        _ => (v - t).abs() >= 0.05 * t.abs().max(1.0),
    }
}

/// Fewer levels per family until the grid is small enough.
fn thin_out(families: &mut [Family]) {
    let size = |fs: &[Family]| {
        fs.iter()
            .map(|f| f.levels.len())
            .try_fold(1usize, |acc, n| acc.checked_mul(n))
            .unwrap_or(usize::MAX)
    };
    while size(families) > MAX_COMBINATIONS {
        let Some(widest) = families.iter_mut().max_by_key(|f| f.levels.len()) else {
            return;
        };
        if widest.levels.len() <= 2 {
            return;
        }
        widest.levels = widest.levels.iter().copied().step_by(2).collect();
    }
}

/// Every combination of one level per family, in a fixed order.
fn combinations(families: &[Family]) -> Vec<Vec<f64>> {
    let mut out: Vec<Vec<f64>> = vec![Vec::new()];
    for f in families {
        out = out
            .into_iter()
            .flat_map(|prefix| {
                f.levels.iter().map(move |l| {
                    let mut c = prefix.clone();
                    c.push(*l);
                    c
                })
            })
            .collect();
    }
    out
}

/// The samples of one series, as promtool expands `start+incxN`: cumulative additions.
fn expand(start: f64, inc: f64, n: u64) -> impl Iterator<Item = f64> {
    let mut v = start;
    (0..=n).map(move |_| {
        let out = v;
        v += inc;
        out
    })
}

/// One synthesised series: labels, start value and increment per step.
fn series_of(
    family: &Family,
    labels: &Labels,
    level: f64,
    step: Millis,
) -> Vec<(Labels, f64, f64)> {
    let secs = step as f64 / 1000.0;
    match family.kind {
        Kind::Counter => vec![(labels.clone(), 0.0, level * secs)],
        Kind::Gauge => vec![(labels.clone(), level, 0.0)],
        Kind::Histogram => bucket_bounds()
            .into_iter()
            .map(|le| (le, format!("{le}")))
            .chain(std::iter::once((f64::INFINITY, "+Inf".to_owned())))
            .map(|(le, text)| {
                let mut l = labels.clone();
                l.set("le".to_owned(), text);
                (l, 0.0, if le >= level { secs } else { 0.0 })
            })
            .collect(),
    }
}

/// Every series of a scenario: the canary at `canary_levels`, the baseline (when it has its own
/// series) at `baseline_levels`.
fn scenario(
    families: &[Family],
    canary_levels: &[f64],
    baseline_levels: Option<&[f64]>,
    step: Millis,
) -> Vec<(Labels, f64, f64)> {
    let mut out = Vec::new();
    for (i, f) in families.iter().enumerate() {
        out.extend(series_of(f, &f.canary, canary_levels[i], step));
        if let (Some(b), Some(levels)) = (&f.baseline, baseline_levels) {
            out.extend(series_of(f, b, levels[i], step));
        }
    }
    out
}

fn build_store(
    families: &[Family],
    canary_levels: &[f64],
    baseline_levels: Option<&Vec<f64>>,
    step: Millis,
    end: Millis,
) -> Store {
    let mut store = Store::new();
    let n = u64::try_from(end / step).unwrap_or(0);
    for (labels, start, inc) in scenario(
        families,
        canary_levels,
        baseline_levels.map(|v| v.as_slice()),
        step,
    ) {
        for (i, v) in expand(start, inc, n).enumerate() {
            // Appends are in time order on fresh series; an error would only drop a sample.
            let _ = store.append(&labels, i as Millis * step, v);
        }
    }
    store
}

fn input_series(
    families: &[Family],
    canary_levels: &[f64],
    baseline_levels: Option<&Vec<f64>>,
    step: Millis,
    end: Millis,
) -> Vec<InputSeries> {
    let n = end / step;
    scenario(
        families,
        canary_levels,
        baseline_levels.map(|v| v.as_slice()),
        step,
    )
    .into_iter()
    .map(|(labels, start, inc)| InputSeries {
        series: series_text(&labels),
        values: format!("{start}+{inc}x{n}"),
    })
    .collect()
}

/// `name{a="b",...}` in promtool's series notation.
fn series_text(labels: &Labels) -> String {
    let name = labels.get("__name__").unwrap_or_default();
    let rest: Vec<String> = labels
        .iter()
        .filter(|l| l.name != "__name__")
        .map(|l| {
            let v = l
                .value
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{}=\"{v}\"", l.name)
        })
        .collect();
    format!("{name}{{{}}}", rest.join(","))
}

/// The values of an instant query's result (a scalar counts as one value).
fn vector(engine: &Engine, store: &Store, expr: &Expr, at: Millis) -> Result<Vec<f64>, String> {
    match engine.instant_expr(store, expr, at) {
        Ok(Value::Vector(samples)) => Ok(samples.iter().map(|s| s.point.v).collect()),
        Ok(Value::Scalar(p)) => Ok(vec![p.v]),
        Ok(_) => Err("the query does not return an instant vector".into()),
        Err(e) => Err(format!("the embedded evaluator cannot run it: {e}")),
    }
}

/// The label sets of an instant query's result.
fn vector_samples(
    engine: &Engine,
    store: &Store,
    expr: &Expr,
    at: Millis,
) -> Result<Vec<Labels>, String> {
    match engine.instant_expr(store, expr, at) {
        Ok(Value::Vector(samples)) => Ok(samples.into_iter().map(|s| s.metric).collect()),
        Ok(Value::Scalar(_)) => Ok(vec![Labels::default()]),
        Ok(_) => Err("the alert expression does not return an instant vector".into()),
        Err(e) => Err(format!("the embedded evaluator cannot run it: {e}")),
    }
}

/// A label set for a synthesised series of `kind` satisfying `matchers` (`le` left out of a
/// histogram: the generator adds the buckets), or `None`.
fn series_labels(matchers: &[Matcher], kind: Kind) -> Option<Labels> {
    let kept: Vec<Matcher> = matchers
        .iter()
        .filter(|m| !(kind == Kind::Histogram && m.name == "le"))
        .cloned()
        .collect();
    analyze::satisfying_labels(&kept)
}
