//! A comparison's result and the score of a set of them.
//!
//! A [`Comparison`] says what is bad (its [`Direction`] beyond an allowed [`Effect`]), whether a
//! failure is [`critical`](Comparison::critical), and where it counts in the score (`group`,
//! `weight`). Judging it gives a [`Judgement`]: [`Classification::Pass`], `High` or `Low` (the
//! canary is worse in that direction), or `NoData`, with the estimate, its interval, the evidence
//! and the sample counts.
//!
//! [`Scoring::score`] is Kayenta's: in each group the weighted share of passing comparisons
//! (those with no data left out, or counted as failed when they must have data), the groups
//! weighted into a 0–100 score, `Fail` below `marginal`, `Marginal` below `pass`, `Pass` from
//! `pass` on; a failed critical comparison fails whatever the score.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::counts::{self, Counts, RateOutcome};
use crate::dispersion;
use crate::rank::{self, Method};
use crate::{Alternative, Arm, Error, Interval, check_alpha, check_sample, json_float, median};

/// Which way a change in the canary is bad.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Higher is worse (latency, error rate).
    Increase,
    /// Lower is worse (throughput, success rate).
    Decrease,
    /// Any change is worse.
    Either,
}

impl Direction {
    /// Whether an increase counts as bad.
    pub fn increase_is_bad(self) -> bool {
        matches!(self, Direction::Increase | Direction::Either)
    }

    /// Whether a decrease counts as bad.
    pub fn decrease_is_bad(self) -> bool {
        matches!(self, Direction::Decrease | Direction::Either)
    }
}

/// How far the canary may move in the bad direction before it counts as worse.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// A fraction of the baseline: `Relative(0.1)` lets the canary be up to 10 % worse
    /// (readings are assumed positive, as latencies and rates are). Where a decrease is bad it
    /// must stay below 1 (a canary cannot be more than 100 % lower).
    Relative(f64),
    /// An amount in the metric's unit: `Absolute(50.0)` lets a latency be 50 ms worse.
    Absolute(f64),
}

impl Effect {
    /// No allowance: any significant change in the bad direction is a failure.
    pub const NONE: Effect = Effect::Relative(0.0);

    /// Checks the allowance is finite and not negative, and a relative one below 1 when a
    /// decrease is bad.
    pub fn check(self, direction: Direction) -> Result<Effect, Error> {
        let (value, range, ok) = match self {
            Effect::Relative(v) if direction.decrease_is_bad() => {
                (v, "[0, 1) where a decrease is bad", (0.0..1.0).contains(&v))
            }
            Effect::Relative(v) | Effect::Absolute(v) => (v, "[0, ∞)", v >= 0.0 && v.is_finite()),
        };
        if ok {
            Ok(self)
        } else {
            Err(Error::OutOfRange {
                name: "the allowed effect",
                value,
                range,
            })
        }
    }

    /// The highest canary reading that is still not worse than this baseline reading, when an
    /// increase is bad.
    pub fn upper(self, baseline: f64) -> f64 {
        match self {
            Effect::Relative(d) => baseline * (1.0 + d),
            Effect::Absolute(d) => baseline + d,
        }
    }

    /// The lowest canary reading that is still not worse than this baseline reading, when a
    /// decrease is bad.
    pub fn lower(self, baseline: f64) -> f64 {
        match self {
            Effect::Relative(d) => baseline * (1.0 - d),
            Effect::Absolute(d) => baseline - d,
        }
    }
}

/// One canary-versus-baseline comparison as configured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// Its name, shown wherever the result is.
    pub name: String,
    /// The scoring group it counts in.
    pub group: String,
    /// Which way is bad.
    pub direction: Direction,
    /// How much worse the canary may be.
    pub effect: Effect,
    /// A failed critical comparison fails the run whatever the score.
    pub critical: bool,
    /// Its weight inside its group (1 unless configured).
    pub weight: f64,
    /// No data counts as a failure (Kayenta's `mustHaveData`) instead of leaving the
    /// comparison out of the score.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub must_have_data: bool,
}

/// The outcome of one comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Classification {
    /// No evidence that the canary is worse than allowed.
    Pass,
    /// The canary is higher than allowed, and higher is bad.
    High,
    /// The canary is lower than allowed, and lower is bad.
    Low,
    /// An arm had nothing to judge (no readings, no events).
    NoData,
}

impl Classification {
    /// Whether this outcome fails the comparison.
    pub fn failed(self) -> bool {
        matches!(self, Classification::High | Classification::Low)
    }
}

/// How strong the evidence is, in the form the test gives it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Evidence {
    /// A fixed-sample test: significant when `p_value ≤ alpha`. Valid for one look only.
    PValue { p_value: f64, alpha: f64 },
    /// A sequential test: significant when `e_value ≥ 1/alpha`; valid however often it is
    /// looked at.
    EValue {
        #[serde(with = "json_float")]
        e_value: f64,
        alpha: f64,
    },
    /// Nothing was tested.
    None,
}

impl Evidence {
    /// Whether the evidence reaches its significance level.
    pub fn significant(self) -> bool {
        match self {
            Evidence::PValue { p_value, alpha } => p_value <= alpha,
            Evidence::EValue { e_value, alpha } => e_value >= 1.0 / alpha,
            Evidence::None => false,
        }
    }
}

/// What a judgement's estimate (and its interval) measures, so that it can be shown with its
/// meaning and unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EstimateKind {
    /// The Hodges–Lehmann shift, canary minus baseline, in the readings' unit.
    Shift,
    /// The canary's event rate over the baseline's.
    RateRatio,
    /// The canary's spread (median absolute deviation) over the baseline's.
    SpreadRatio,
    /// The share of looks with the canary above the allowance (sequential sign test).
    LooksAbove,
    /// The share of looks with the canary below the allowance.
    LooksBelow,
    /// The share of pairs of looks with the canary's readings further apart than the
    /// baseline's allow (sequential spread test).
    PairsWider,
    /// The share of pairs of looks with the canary's readings closer together than allowed.
    PairsNarrower,
}

/// How the canary typically compares with the baseline, look by look: the median over looks of
/// the canary's reading over (or minus) the baseline's at the same look. Descriptive — the
/// decision rests on the test's evidence — but what people ask first: how much slower?
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Typical {
    /// canary ÷ baseline (a relative allowance).
    Ratio(#[serde(with = "json_float")] f64),
    /// canary − baseline, in the readings' unit (an absolute allowance).
    Difference(#[serde(with = "json_float")] f64),
}

/// How many readings (or events) each arm contributed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Samples {
    /// From the canary.
    pub canary: u64,
    /// From the baseline.
    pub baseline: u64,
}

/// A judged comparison: what the engine records and every report shows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Judgement {
    /// The comparison's name.
    pub name: String,
    /// Its scoring group.
    pub group: String,
    /// Whether its failure fails the run.
    pub critical: bool,
    /// Its weight inside the group.
    pub weight: f64,
    /// Whether no data counts as a failure.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub must_have_data: bool,
    /// The outcome.
    pub classification: Classification,
    /// The estimate of the difference (a shift, a rate ratio, a spread ratio), if any.
    #[serde(default, with = "json_float_option")]
    pub estimate: Option<f64>,
    /// Its interval, if any.
    pub interval: Option<Interval>,
    /// What the estimate measures (absent from judgements recorded before it was).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate_of: Option<EstimateKind>,
    /// The canary against the baseline look by look, where the test pairs looks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typical: Option<Typical>,
    /// The evidence behind the classification.
    pub evidence: Evidence,
    /// What each arm contributed.
    pub samples: Samples,
}

impl Judgement {
    /// Whether it counts as failed: the canary worse than allowed, or no data where the
    /// comparison must have data.
    pub fn failed(&self) -> bool {
        self.classification.failed() || self.missing_required_data()
    }

    /// Whether it had no data although it must have data.
    pub fn missing_required_data(&self) -> bool {
        self.must_have_data && self.classification == Classification::NoData
    }

    /// A judgement with no data: nothing to classify.
    pub fn no_data(comparison: &Comparison, samples: Samples) -> Judgement {
        Judgement::new(
            comparison,
            Classification::NoData,
            None,
            None,
            Evidence::None,
            samples,
        )
    }

    /// A judgement of `comparison` with the given outcome and evidence.
    pub fn new(
        comparison: &Comparison,
        classification: Classification,
        estimate: Option<f64>,
        interval: Option<Interval>,
        evidence: Evidence,
        samples: Samples,
    ) -> Judgement {
        Judgement {
            name: comparison.name.clone(),
            group: comparison.group.clone(),
            critical: comparison.critical,
            weight: comparison.weight,
            must_have_data: comparison.must_have_data,
            classification,
            estimate,
            interval,
            estimate_of: None,
            typical: None,
            evidence,
            samples,
        }
    }

    /// The same judgement, saying what its estimate measures.
    pub fn of(self, kind: EstimateKind) -> Judgement {
        Judgement {
            estimate_of: Some(kind),
            ..self
        }
    }
}

/// The two one-sided questions a direction asks: is the canary higher than allowed, lower than
/// allowed? With `Either` each is asked at α/2.
struct Sides {
    high: Option<f64>,
    low: Option<f64>,
}

fn sides(direction: Direction, alpha: f64) -> Sides {
    match direction {
        Direction::Increase => Sides {
            high: Some(alpha),
            low: None,
        },
        Direction::Decrease => Sides {
            high: None,
            low: Some(alpha),
        },
        Direction::Either => Sides {
            high: Some(alpha / 2.0),
            low: Some(alpha / 2.0),
        },
    }
}

/// Classifies from the one-sided p-values, returning the classification and the p-value
/// reported (for `Either`, twice the smaller one, capped at 1).
fn classify(sides: &Sides, p_high: f64, p_low: f64) -> (Classification, f64) {
    let high = sides.high.is_some_and(|a| p_high <= a);
    let low = sides.low.is_some_and(|a| p_low <= a);
    let classification = match (high, low) {
        (true, false) => Classification::High,
        (false, true) => Classification::Low,
        (true, true) if p_high <= p_low => Classification::High,
        (true, true) => Classification::Low,
        (false, false) => Classification::Pass,
    };
    let p = match (sides.high, sides.low) {
        (Some(_), Some(_)) => (2.0 * p_high.min(p_low)).min(1.0),
        (Some(_), None) => p_high,
        _ => p_low,
    };
    (classification, p)
}

/// Judges continuous readings with Mann–Whitney U (SciPy's `method="auto"`): `High` when the
/// canary sits above the baseline moved up by the allowed effect, at level α (α/2 a side for
/// `Either`). The estimate is the Hodges–Lehmann shift canary − baseline with its interval at
/// 1 − α. An arm with no readings gives `NoData`; a reading that is not finite is an error.
///
/// A fixed-sample test: valid for one look at the data, not for checking every interval (use
/// [`crate::SignSequence`] for that).
pub fn judge_readings(
    comparison: &Comparison,
    canary: &[f64],
    baseline: &[f64],
    alpha: f64,
) -> Result<Judgement, Error> {
    let alpha = check_alpha(alpha)?;
    let effect = comparison.effect.check(comparison.direction)?;
    let samples = Samples {
        canary: canary.len() as u64,
        baseline: baseline.len() as u64,
    };
    if canary.is_empty() || baseline.is_empty() {
        for (arm, sample) in [(Arm::Canary, canary), (Arm::Baseline, baseline)] {
            if !sample.is_empty() {
                check_sample(arm, sample)?;
            }
        }
        return Ok(Judgement::no_data(comparison, samples));
    }
    let sides = sides(comparison.direction, alpha);
    let p_high = match sides.high {
        Some(_) => {
            let moved: Vec<f64> = baseline.iter().map(|&y| effect.upper(y)).collect();
            rank::mann_whitney(canary, &moved, Alternative::Greater, Method::Auto)?.p_value
        }
        None => 1.0,
    };
    let p_low = match sides.low {
        Some(_) => {
            let moved: Vec<f64> = baseline.iter().map(|&y| effect.lower(y)).collect();
            rank::mann_whitney(canary, &moved, Alternative::Less, Method::Auto)?.p_value
        }
        None => 1.0,
    };
    let (classification, p_value) = classify(&sides, p_high, p_low);
    let shift = rank::hodges_lehmann(canary, baseline, 1.0 - alpha, Method::Auto)?;
    Ok(Judgement::new(
        comparison,
        classification,
        Some(shift.estimate),
        Some(shift.interval),
        Evidence::PValue { p_value, alpha },
        samples,
    )
    .of(EstimateKind::Shift))
}

/// Judges counts out of exposure with the exact rate-ratio test: `High` when the canary's rate
/// is significantly above (1 + allowed effect) times the baseline's. The estimate is the rate
/// ratio with its two-sided exact interval at 1 − α. No event in either arm passes without an
/// estimate: both had exposure and neither is worse.
/// Only a relative allowance can be expressed on a ratio; an absolute one is an error.
pub fn judge_counts(
    comparison: &Comparison,
    canary: Counts,
    baseline: Counts,
    alpha: f64,
) -> Result<Judgement, Error> {
    let alpha = check_alpha(alpha)?;
    let Effect::Relative(delta) = comparison.effect.check(comparison.direction)? else {
        return Err(Error::Unsupported(
            "an absolute allowed effect cannot be applied to a rate ratio: give counts a \
             relative one (0.1 lets the canary's rate be 10 % higher)",
        ));
    };
    let samples = Samples {
        canary: canary.events,
        baseline: baseline.events,
    };
    let sides = sides(comparison.direction, alpha);
    let overall = counts::rate_ratio(canary, baseline, 1.0, Alternative::TwoSided, 1.0 - alpha)?;
    let RateOutcome::Tested(overall) = overall else {
        let evidence = Evidence::PValue {
            p_value: 1.0,
            alpha,
        };
        let pass = Classification::Pass;
        return Ok(
            Judgement::new(comparison, pass, None, None, evidence, samples)
                .of(EstimateKind::RateRatio),
        );
    };
    let one_sided = |null: f64, alternative: Alternative| -> Result<f64, Error> {
        Ok(
            match counts::rate_ratio(canary, baseline, null, alternative, 1.0 - alpha)? {
                RateOutcome::Tested(t) => t.p_value,
                RateOutcome::NoEvents => 1.0,
            },
        )
    };
    let p_high = match sides.high {
        Some(_) => one_sided(1.0 + delta, Alternative::Greater)?,
        None => 1.0,
    };
    let p_low = match sides.low {
        Some(_) => one_sided(1.0 - delta, Alternative::Less)?,
        None => 1.0,
    };
    let (classification, p_value) = classify(&sides, p_high, p_low);
    Ok(Judgement::new(
        comparison,
        classification,
        Some(overall.rate_ratio),
        Some(overall.interval),
        Evidence::PValue { p_value, alpha },
        samples,
    )
    .of(EstimateKind::RateRatio))
}

/// Judges the spread of continuous readings with the Brown–Forsythe test: `High` when the
/// canary scatters significantly wider than the baseline's readings spread out by the allowed
/// relative effect around their median (`Decrease`: narrower is bad, rarely wanted). The
/// estimate is the ratio of median absolute deviations. An absolute allowance is an error.
pub fn judge_spread(
    comparison: &Comparison,
    canary: &[f64],
    baseline: &[f64],
    alpha: f64,
) -> Result<Judgement, Error> {
    let alpha = check_alpha(alpha)?;
    let Effect::Relative(delta) = comparison.effect.check(comparison.direction)? else {
        return Err(Error::Unsupported(
            "an absolute allowed effect cannot be applied to a spread ratio: give spread \
             comparisons a relative one",
        ));
    };
    let samples = Samples {
        canary: canary.len() as u64,
        baseline: baseline.len() as u64,
    };
    if canary.is_empty() || baseline.is_empty() {
        return Ok(Judgement::no_data(comparison, samples));
    }
    check_sample(Arm::Canary, canary)?;
    check_sample(Arm::Baseline, baseline)?;
    let sides = sides(comparison.direction, alpha);
    let centre = median(baseline);
    let spread = |factor: f64| -> Vec<f64> {
        baseline
            .iter()
            .map(|y| centre + (y - centre) * factor)
            .collect()
    };
    let p_high = match sides.high {
        Some(_) => {
            dispersion::brown_forsythe(canary, &spread(1.0 + delta), Alternative::Greater)?.p_value
        }
        None => 1.0,
    };
    let p_low = match sides.low {
        Some(_) => {
            dispersion::brown_forsythe(canary, &spread(1.0 - delta), Alternative::Less)?.p_value
        }
        None => 1.0,
    };
    let (classification, p_value) = classify(&sides, p_high, p_low);
    let overall = dispersion::brown_forsythe(canary, baseline, Alternative::TwoSided)?;
    Ok(Judgement::new(
        comparison,
        classification,
        Some(overall.spread_ratio),
        None,
        Evidence::PValue { p_value, alpha },
        samples,
    )
    .of(EstimateKind::SpreadRatio))
}

/// Kayenta's scoring thresholds and group weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scoring {
    /// Below this score the verdict is `Fail` (Kayenta's default 75).
    pub marginal: f64,
    /// From this score on the verdict is `Pass` (Kayenta's default 95).
    pub pass: f64,
    /// Each group's weight; a group not listed weighs 1.
    pub group_weights: BTreeMap<String, f64>,
}

impl Default for Scoring {
    fn default() -> Scoring {
        Scoring {
            marginal: 75.0,
            pass: 95.0,
            group_weights: BTreeMap::new(),
        }
    }
}

/// The verdict of a score.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScoreVerdict {
    /// Below `marginal`, or a critical comparison failed: roll back.
    Fail,
    /// Between the thresholds, or nothing could be judged, or a critical comparison had no data:
    /// neither promote nor roll back on this evidence.
    Marginal,
    /// At or above `pass`, no critical comparison failed or lacked data.
    Pass,
}

/// One group's part of the score.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupScore {
    /// The group.
    pub group: String,
    /// Its weight in the score.
    pub weight: f64,
    /// The weighted share of its judged comparisons that passed, 0–100; `None` when none had
    /// data.
    #[serde(default, with = "json_float_option")]
    pub score: Option<f64>,
    /// Comparisons that passed.
    pub passed: usize,
    /// Comparisons that failed (no data counts as failed where the comparison must have it).
    pub failed: usize,
    /// Comparisons with no data left out of the share.
    pub no_data: usize,
}

/// The score of a set of judgements.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Score {
    /// 0–100; `None` when no comparison had data.
    #[serde(default, with = "json_float_option")]
    pub score: Option<f64>,
    /// The verdict.
    pub verdict: ScoreVerdict,
    /// Per group, in name order.
    pub groups: Vec<GroupScore>,
    /// The critical comparisons that failed, by name.
    pub failed_critical: Vec<String>,
    /// The critical comparisons that had no data, by name.
    pub critical_without_data: Vec<String>,
}

impl Scoring {
    /// Checks 0 ≤ marginal ≤ pass ≤ 100 and that group weights are finite and not negative.
    pub fn check(&self) -> Result<&Scoring, Error> {
        if !(0.0..=100.0).contains(&self.pass) {
            return Err(Error::OutOfRange {
                name: "the pass threshold",
                value: self.pass,
                range: "[0, 100]",
            });
        }
        if !(0.0 <= self.marginal && self.marginal <= self.pass) {
            return Err(Error::OutOfRange {
                name: "the marginal threshold",
                value: self.marginal,
                range: "[0, the pass threshold]",
            });
        }
        for weight in self.group_weights.values() {
            if !(*weight >= 0.0 && weight.is_finite()) {
                return Err(Error::OutOfRange {
                    name: "a group weight",
                    value: *weight,
                    range: "[0, ∞)",
                });
            }
        }
        Ok(self)
    }

    /// Scores judgements: per group the weighted share of passes among comparisons with data,
    /// then the groups' weighted mean, as a percentage.
    pub fn score(&self, judgements: &[Judgement]) -> Score {
        let mut by_group: BTreeMap<&str, Vec<&Judgement>> = BTreeMap::new();
        for j in judgements {
            by_group.entry(j.group.as_str()).or_default().push(j);
        }
        let mut groups = Vec::new();
        let (mut weighted, mut total_weight) = (0.0, 0.0);
        for (group, members) in by_group {
            let weight = self.group_weights.get(group).copied().unwrap_or(1.0);
            let judged: Vec<&&Judgement> = members
                .iter()
                .filter(|j| j.classification != Classification::NoData || j.must_have_data)
                .collect();
            let passed = judged
                .iter()
                .filter(|j| j.classification == Classification::Pass)
                .count();
            let member_weight: f64 = judged.iter().map(|j| j.weight).sum();
            let passed_weight: f64 = judged
                .iter()
                .filter(|j| j.classification == Classification::Pass)
                .map(|j| j.weight)
                .sum();
            let score = (member_weight > 0.0).then(|| 100.0 * passed_weight / member_weight);
            if let Some(s) = score {
                weighted += weight * s;
                total_weight += weight;
            }
            groups.push(GroupScore {
                group: group.to_string(),
                weight,
                score,
                passed,
                failed: judged.len() - passed,
                no_data: members.len() - judged.len(),
            });
        }
        let score = (total_weight > 0.0).then(|| weighted / total_weight);
        let names = |keep: fn(&Judgement) -> bool| -> Vec<String> {
            judgements
                .iter()
                .filter(|j| j.critical && keep(j))
                .map(|j| j.name.clone())
                .collect()
        };
        let failed_critical = names(|j| j.failed());
        let critical_without_data =
            names(|j| j.classification == Classification::NoData && !j.must_have_data);
        let verdict = match score {
            _ if !failed_critical.is_empty() => ScoreVerdict::Fail,
            None => ScoreVerdict::Marginal,
            Some(s) if s < self.marginal => ScoreVerdict::Fail,
            Some(s) if s < self.pass || !critical_without_data.is_empty() => ScoreVerdict::Marginal,
            Some(_) => ScoreVerdict::Pass,
        };
        Score {
            score,
            verdict,
            groups,
            failed_critical,
            critical_without_data,
        }
    }
}

/// `Option<f64>` through [`json_float`].
mod json_float_option {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => super::json_float::serialize(v, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        #[derive(Deserialize)]
        struct W(#[serde(with = "super::json_float")] f64);
        Ok(Option::<W>::deserialize(d)?.map(|W(v)| v))
    }
}
