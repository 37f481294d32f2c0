//! The engine's comparisons of the canary with the baseline: each round's readings turned into
//! looks of a sequential test, one test per comparison (DESIGN §14).
//!
//! The tests are `canary-judge`'s always-valid ones, so judging at every evaluation keeps the
//! chance of failing a canary that is no worse than allowed at the comparison's α over the
//! whole run. Everything here is derived from the journalled readings alone: a replay feeds
//! the same looks in the same order and reaches the same judgements bit for bit.

use canary_judge::{CountSequence, Counts, Evidence, Judgement, SignSequence};
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
        })
    }

    /// The judgement so far.
    pub(crate) fn judgement(&self) -> Judgement {
        let comparison = self.spec.comparison();
        match &self.test {
            Test::Sign(test) | Test::Spread { test, .. } => test.judgement(&comparison),
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
        let looked = match (&mut self.test, reading) {
            (Test::Sign(test), Some(r)) => match (continuous(&r.canary), continuous(&r.baseline)) {
                (Some(canary), Some(baseline)) => test.observe(canary, baseline).is_ok(),
                _ => false,
            },
            (Test::Spread { test, first }, Some(r)) => {
                match (continuous(&r.canary), continuous(&r.baseline)) {
                    (Some(canary), Some(baseline)) => match first.take() {
                        None => {
                            *first = Some((canary, baseline));
                            false
                        }
                        Some((c, b)) => test
                            .observe((canary - c).abs(), (baseline - b).abs())
                            .is_ok(),
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
