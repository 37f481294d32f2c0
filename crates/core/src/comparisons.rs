//! The engine's comparisons of the canary with the baseline: each round's readings turned into
//! looks of a sequential test, one test per comparison (DESIGN §14).
//!
//! The tests are `canary-judge`'s always-valid ones, so judging at every evaluation keeps the
//! chance of failing a canary that is no worse than allowed at the comparison's α over the
//! whole run. Everything here is derived from the journalled readings alone: a replay feeds
//! the same looks in the same order and reaches the same judgements bit for bit.

use canary_judge::{
    Classification, CountSequence, Counts, Effect, EstimateKind, Evidence, Interval, Judgement,
    SignSequence, Typical,
};
use serde::{Deserialize, Serialize};

use crate::engine::Reading;
use crate::plan::{CompareSpec, Measure, MeasureKind, PlanError};
use crate::verdict::Reason;

/// The prior scale of the count test's mixture over the log rate ratio: suits ratios up to
/// about 5 (an error rate going from 0.1 % to 0.5 %), per `CountSequence::new`.
const COUNT_PRIOR_SCALE: f64 = 1.0;

/// One comparison's readings in an evaluation round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComparisonReading {
    pub comparison: String,
    pub canary: Measurement,
    pub baseline: Measurement,
}

/// What one arm's queries of a comparison returned, by the comparison's kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "measure", rename_all = "snake_case")]
pub enum Measurement {
    /// A continuous or spread comparison's value over the last evaluation interval.
    Continuous { value: Reading },
    /// A counts comparison's cumulative counters: its events and its exposure.
    Counts { events: Reading, exposure: Reading },
}

/// Cumulative counters of one arm at one round.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Counters {
    events: f64,
    exposure: f64,
}

/// A comparison's sequential test, and for counts the counters the next increase is taken
/// from.
#[derive(Debug, Clone)]
enum Test {
    Sign(SignSequence),
    /// The sign test on each arm's distance between two successive readings.
    Spread {
        test: SignSequence,
        /// The first round of the pair being formed: (canary, baseline).
        first: Option<(f64, f64)>,
    },
    Counts {
        test: CountSequence,
        /// The canary's and the baseline's counters at the last round they were read.
        since: Option<(Counters, Counters)>,
    },
}

/// What a round did to a comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Look {
    /// Its test took a look, and the comparison still passes or had failed before.
    Taken,
    /// No look: a reading missing or unusable, the first counters, a counter reset.
    Skipped,
    /// This look made it fail (the e-value crossed 1/α): the one round that says so.
    JustFailed,
}

/// One comparison in the engine.
#[derive(Debug, Clone)]
pub(crate) struct ComparisonState {
    pub(crate) spec: CompareSpec,
    test: Test,
    /// Continuous and spread: each look's canary over (relative allowance) or minus (absolute)
    /// the baseline, for the typical difference people read beside the test.
    looks: Vec<f64>,
}

impl ComparisonState {
    pub(crate) fn new(spec: &CompareSpec) -> Result<ComparisonState, PlanError> {
        let direction = spec.direction.into();
        let problem = |e: canary_judge::Error| PlanError::ComparisonEffect {
            name: spec.name.clone(),
            problem: e.to_string(),
        };
        let test = match spec.measure {
            Measure::Continuous { .. } => {
                Test::Sign(SignSequence::new(direction, spec.effect, spec.alpha).map_err(problem)?)
            }
            Measure::Spread { .. } => Test::Spread {
                test: SignSequence::new(direction, spec.effect, spec.alpha).map_err(problem)?,
                first: None,
            },
            Measure::Counts { .. } => Test::Counts {
                test: CountSequence::new(direction, spec.effect, spec.alpha, COUNT_PRIOR_SCALE)
                    .map_err(problem)?,
                since: None,
            },
        };
        Ok(ComparisonState {
            spec: spec.clone(),
            test,
            looks: Vec::new(),
        })
    }

    /// The judgement so far.
    pub(crate) fn judgement(&self) -> Judgement {
        let mut j = self.test_judgement();
        j.typical = self.typical();
        j
    }

    /// The median look's canary against the baseline, when there are looks to pair.
    fn typical(&self) -> Option<Typical> {
        let mut looks = self.looks.clone();
        if looks.is_empty() {
            return None;
        }
        let mid = looks.len() / 2;
        let (below, upper, _) = looks.select_nth_unstable_by(mid, f64::total_cmp);
        let median = if self.looks.len() % 2 == 1 {
            *upper
        } else {
            let lower = below
                .iter()
                .copied()
                .max_by(f64::total_cmp)
                .unwrap_or(*upper);
            (lower + *upper) / 2.0
        };
        Some(match self.spec.effect {
            Effect::Relative(_) => Typical::Ratio(median),
            Effect::Absolute(_) => Typical::Difference(median),
        })
    }

    /// Records a look's pair for [`Self::typical`]; a ratio needs a positive baseline.
    fn record(&mut self, canary: f64, baseline: f64) {
        let value = match self.spec.effect {
            Effect::Relative(_) if baseline > 0.0 => canary / baseline,
            Effect::Relative(_) => return,
            Effect::Absolute(_) => canary - baseline,
        };
        if value.is_finite() {
            self.looks.push(value);
        }
    }

    fn test_judgement(&self) -> Judgement {
        let comparison = self.spec.comparison();
        match &self.test {
            Test::Sign(test) => test.judgement(&comparison),
            // The sign test's looks are pairs of rounds, compared on their distances.
            Test::Spread { test, .. } => {
                let j = test.judgement(&comparison);
                let of = match j.estimate_of {
                    Some(EstimateKind::LooksBelow) => EstimateKind::PairsNarrower,
                    _ => EstimateKind::PairsWider,
                };
                j.of(of)
            }
            Test::Counts { test, .. } => test.judgement(&comparison),
        }
    }

    fn failed(&self) -> bool {
        match &self.test {
            Test::Sign(test) | Test::Spread { test, .. } => test.first_crossing().is_some(),
            Test::Counts { test, .. } => test.first_crossing().is_some(),
        }
    }

    /// Takes this round's readings (none when the runtime did not evaluate the comparison).
    pub(crate) fn observe(&mut self, reading: Option<&ComparisonReading>) -> Look {
        let failed_before = self.failed();
        let mut pair = None;
        let looked = match (&mut self.test, reading) {
            (Test::Sign(test), Some(r)) => match (continuous(&r.canary), continuous(&r.baseline)) {
                (Some(canary), Some(baseline)) => {
                    pair = Some((canary, baseline));
                    test.observe(canary, baseline).is_ok()
                }
                _ => false,
            },
            (Test::Spread { test, first }, Some(r)) => {
                match (continuous(&r.canary), continuous(&r.baseline)) {
                    (Some(canary), Some(baseline)) => match first.take() {
                        None => {
                            *first = Some((canary, baseline));
                            false
                        }
                        Some((c, b)) => {
                            let distances = ((canary - c).abs(), (baseline - b).abs());
                            pair = Some(distances);
                            test.observe(distances.0, distances.1).is_ok()
                        }
                    },
                    _ => false,
                }
            }
            (Test::Counts { test, since }, Some(r)) => look_at_counts(test, since, r),
            (_, None) => false,
        };
        if !looked {
            return Look::Skipped;
        }
        if let Some((canary, baseline)) = pair {
            self.record(canary, baseline);
        }
        if !failed_before && self.failed() {
            Look::JustFailed
        } else {
            Look::Taken
        }
    }

    /// The reason a failed comparison gives, with its judgement's figures.
    pub(crate) fn failure(&self) -> Reason {
        let j = self.judgement();
        if j.missing_required_data() {
            return Reason::RequiredComparisonNoData { comparison: j.name };
        }
        let (e_value, alpha) = match j.evidence {
            Evidence::EValue { e_value, alpha } => (e_value, alpha),
            Evidence::PValue { alpha, .. } => (f64::NAN, alpha),
            Evidence::None => (f64::NAN, self.spec.alpha),
        };
        Reason::ComparisonFailed {
            comparison: j.name,
            measure: self.spec.measure.kind(),
            direction: self.spec.direction,
            classification: j.classification,
            estimate: j.estimate,
            interval: j.interval,
            e_value,
            alpha,
            samples: j.samples,
            looks: self.looks(),
        }
    }

    /// Looks its test has taken.
    fn looks(&self) -> u64 {
        match &self.test {
            Test::Sign(test) | Test::Spread { test, .. } => test.looks().0,
            Test::Counts { test, .. } => test.looks(),
        }
    }
}

/// A continuous reading's value, when it is a finite number.
fn continuous(m: &Measurement) -> Option<f64> {
    match m {
        Measurement::Continuous {
            value: Reading::Value { value, .. },
        } if value.is_finite() => Some(*value),
        _ => None,
    }
}

/// One arm's counters this round. `previous_events` is the events counter at the last round
/// read: an events query with no series counts 0 while nothing was counted before (error
/// counters appear with their first error), and is missing data once something was.
fn counters(m: &Measurement, previous_events: Option<f64>) -> Option<Counters> {
    let Measurement::Counts { events, exposure } = m else {
        return None;
    };
    let usable = |v: f64| (v.is_finite() && v >= 0.0).then_some(v);
    let exposure = usable(exposure.as_value()?)?;
    let events = match events {
        Reading::Value { value, .. } => usable(*value)?,
        Reading::NoData if previous_events.is_none_or(|e| e == 0.0) => 0.0,
        _ => return None,
    };
    Some(Counters { events, exposure })
}

/// Takes the increase of the counters since the last round they were read as one look.
/// Returns whether the test took a look. A round with a reading missing keeps the old
/// counters, so the next look covers both intervals; a counter that went down (a restart)
/// starts again from its new value; events counted in an arm whose exposure has not moved
/// yet (the two counters scraped apart) wait for the next round.
fn look_at_counts(
    test: &mut CountSequence,
    since: &mut Option<(Counters, Counters)>,
    reading: &ComparisonReading,
) -> bool {
    let previous = |pick: fn(&(Counters, Counters)) -> Counters| since.map(|s| pick(&s).events);
    let canary = counters(&reading.canary, previous(|s| s.0));
    let baseline = counters(&reading.baseline, previous(|s| s.1));
    let (Some(canary), Some(baseline)) = (canary, baseline) else {
        return false;
    };
    let Some((canary_before, baseline_before)) = *since else {
        *since = Some((canary, baseline));
        return false;
    };
    let increase = |now: Counters, before: Counters| {
        let events = now.events - before.events;
        let exposure = now.exposure - before.exposure;
        (events >= 0.0 && exposure >= 0.0).then_some((events, exposure))
    };
    let (Some(c), Some(b)) = (
        increase(canary, canary_before),
        increase(baseline, baseline_before),
    ) else {
        *since = Some((canary, baseline));
        return false;
    };
    let counts = |(events, exposure): (f64, f64)| Counts::new(events.round() as u64, exposure);
    let (c, b) = (counts(c), counts(b));
    if (c.events > 0 && c.exposure == 0.0) || (b.events > 0 && b.exposure == 0.0) {
        return false;
    }
    *since = Some((canary, baseline));
    test.observe(c, b).is_ok()
}

impl Measurement {
    /// The kind of comparison this measurement is for (a spread comparison reads continuous
    /// values).
    pub fn kind(&self) -> MeasureKind {
        match self {
            Measurement::Continuous { .. } => MeasureKind::Continuous,
            Measurement::Counts { .. } => MeasureKind::Counts,
        }
    }
}

/// A judgement as people read it — in the decision, the check log, the report, `canary
/// status` and the backtest — each part with its meaning and unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Described {
    /// `✓`, `✗` or `?`.
    pub mark: &'static str,
    /// `PASS`, `HIGH`, `LOW`, `NO DATA`, or `NO DATA (required)` where no data fails it.
    pub status: &'static str,
    /// The canary against the baseline at the median look: `×1.31`, `+312`, `scatter ×3.9`,
    /// or `-` (counts, or no look yet).
    pub typical: String,
    /// `+12.3`, `rate ×1.8`, `41 % of looks above`, or `-`.
    pub estimate: String,
    /// `[+4.1, +20.2]`, `[×0.9, ×3.6]`, `[28 %, 55 %]`, or `-`.
    pub interval: String,
    /// `e 3.2 (fails at 20)`, `p 0.003 (α 0.05)`, or `-`.
    pub evidence: String,
    /// `24 / 24 looks`, `3 / 57 events`.
    pub samples: String,
}

/// Describes a judgement for people (see [`Described`]).
pub fn describe(j: &Judgement) -> Described {
    let (mark, status) = match j.classification {
        Classification::Pass => ("✓", "PASS"),
        Classification::High => ("✗", "HIGH"),
        Classification::Low => ("✗", "LOW"),
        Classification::NoData if j.must_have_data => ("✗", "NO DATA (required)"),
        Classification::NoData => ("?", "NO DATA"),
    };
    let kind = j.estimate_of;
    let estimate = match (kind, j.estimate) {
        (_, None)
            if kind == Some(EstimateKind::RateRatio)
                && j.classification == Classification::Pass =>
        {
            "no events".to_owned()
        }
        (_, None) => "-".to_owned(),
        (Some(k), Some(v)) => format!("{}{}", value_in(k, v), share_of(k)),
        (None, Some(v)) => crate::verdict::fmt_value(v),
    };
    let interval = match j.interval {
        None => "-".to_owned(),
        // Nothing bounds it yet (no event in either arm).
        Some(Interval { lower, upper }) if lower == 0.0 && upper == f64::INFINITY => "-".to_owned(),
        Some(Interval { lower, upper }) => match kind {
            Some(k) => format!("[{}, {}]", value_in(k, lower), value_in(k, upper)),
            None => format!(
                "[{}, {}]",
                crate::verdict::fmt_value(lower),
                crate::verdict::fmt_value(upper)
            ),
        },
    };
    let evidence = match j.evidence {
        Evidence::EValue { e_value, alpha } => {
            format!(
                "e {} (fails at {})",
                significant(e_value),
                significant(1.0 / alpha)
            )
        }
        Evidence::PValue { p_value, alpha } => {
            format!("p {} (α {})", significant(p_value), significant(alpha))
        }
        Evidence::None => "-".to_owned(),
    };
    let unit = match kind {
        Some(EstimateKind::RateRatio) => "events",
        Some(EstimateKind::LooksAbove | EstimateKind::LooksBelow) => "looks",
        Some(EstimateKind::PairsWider | EstimateKind::PairsNarrower) => "pairs",
        _ => "readings",
    };
    let spread = matches!(
        kind,
        Some(EstimateKind::PairsWider | EstimateKind::PairsNarrower)
    );
    let typical = match j.typical {
        None => "-".to_owned(),
        Some(Typical::Ratio(r)) => format!("×{}", significant(r)),
        Some(Typical::Difference(d)) => {
            let s = significant(d);
            if d > 0.0 { format!("+{s}") } else { s }
        }
    };
    let typical = if spread && typical != "-" {
        format!("scatter {typical}")
    } else {
        typical
    };
    Described {
        mark,
        status,
        typical,
        estimate,
        interval,
        evidence,
        samples: format!("{} / {} {unit}", j.samples.canary, j.samples.baseline),
    }
}

/// One line of the check log, the terminal and `canary status`:
/// `✓ ann_vs_baseline  PASS  41 % of looks above [28 %, 55 %]  e 0.8 (fails at 20)  24 / 24 looks`.
pub fn check_line(j: &Judgement) -> String {
    let d = describe(j);
    let critical = if j.critical { ", critical" } else { "" };
    let typical = if d.typical == "-" {
        String::new()
    } else {
        format!("{}  ", d.typical)
    };
    format!(
        "{} {:<14} {:<7} {typical}{} {}  {}  {} (comparison{critical})",
        d.mark,
        crate::Escaped(&j.name).to_string(),
        d.status,
        d.estimate,
        d.interval,
        d.evidence,
        d.samples
    )
}

/// A value of an estimate or its interval in its unit: shares as whole percentages, ratios
/// with a `×`, shifts signed.
fn value_in(kind: EstimateKind, v: f64) -> String {
    match kind {
        EstimateKind::Shift => {
            let s = significant(v);
            if v > 0.0 { format!("+{s}") } else { s }
        }
        EstimateKind::RateRatio | EstimateKind::SpreadRatio => format!("×{}", significant(v)),
        _ => format!("{:.0} %", v * 100.0),
    }
}

/// What a share of looks counts, after its percentage.
fn share_of(kind: EstimateKind) -> &'static str {
    match kind {
        EstimateKind::LooksAbove => " of looks above",
        EstimateKind::LooksBelow => " of looks below",
        EstimateKind::PairsWider => " of pairs wider",
        EstimateKind::PairsNarrower => " of pairs narrower",
        _ => "",
    }
}

/// Three significant digits (no exponent below a million), `∞` for infinity.
pub fn significant(v: f64) -> String {
    if v.is_infinite() {
        return if v > 0.0 { "∞" } else { "-∞" }.to_owned();
    }
    if v == 0.0 || !v.is_finite() {
        return crate::verdict::fmt_value(v);
    }
    if v.abs() >= 1e6 {
        return format!("{v:.2e}");
    }
    let digits = (2 - v.abs().log10().floor() as i32).clamp(0, 6) as usize;
    let s = format!("{v:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}
