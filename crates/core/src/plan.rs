//! The resolved run plan: what the engine enforces, typed and validated.
//!
//! The CLI turns `canary.toml` into a [`Plan`]; the engine never sees TOML, environment
//! variables or secrets. A plan is serialisable so that the journal of a run carries the exact
//! plan it ran, and `canary verify` can replay it.

use std::fmt;
use std::time::Duration;

use canary_judge::{Comparison, Effect, Scoring};
use serde::{Deserialize, Serialize};

use crate::duration::{self, Human};

/// A name that is none of a [`choice!`](crate::choice)'s names: a configuration typo, or a
/// journal written by a canary that knew a value this one does not.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not one of {}", expected.join(", "))]
pub struct UnknownName {
    pub value: String,
    /// Every accepted name, in the order they are documented.
    pub expected: &'static [&'static str],
}

/// Declares a choice: an enum whose variants each have one name, written once next to the
/// variant. That one list is what parsing (`FromStr`), its error ([`UnknownName`], which lists
/// the names), `Display`, `NAMES`/`ALL` and — with
/// `#[serde(try_from = "String", into = "&'static str")]` — serde use, so a new variant cannot
/// be spelled differently in two places, nor be parsed as another.
///
/// ```
/// canary_core::choice! {
///     /// Where the burst goes.
///     #[derive(Debug, Clone, Copy, PartialEq, Eq)]
///     pub enum Target {
///         Lb = "lb",
///         Canary = "canary",
///     }
/// }
/// assert_eq!("canary".parse::<Target>(), Ok(Target::Canary));
/// assert_eq!(Target::NAMES, ["lb", "canary"]);
/// assert_eq!(
///     "cnary".parse::<Target>().unwrap_err().to_string(),
///     "\"cnary\" is not one of lb, canary"
/// );
/// ```
#[macro_export]
macro_rules! choice {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        $vis enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every value, in the order of `NAMES`.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];
            /// The name of each value: the one list parsing, its errors and display use.
            pub const NAMES: &'static [&'static str] = &[$($text,)+];

            /// This value's name.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::plan::UnknownName;

            fn from_str(s: &str) -> ::std::result::Result<Self, Self::Err> {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|c| c.as_str() == s)
                    .ok_or_else(|| $crate::plan::UnknownName {
                        value: s.to_owned(),
                        expected: Self::NAMES,
                    })
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::convert::From<$name> for &'static str {
            fn from(c: $name) -> Self {
                c.as_str()
            }
        }

        impl ::std::convert::TryFrom<::std::string::String> for $name {
            type Error = $crate::plan::UnknownName;

            fn try_from(s: ::std::string::String) -> ::std::result::Result<Self, Self::Error> {
                s.parse()
            }
        }
    };
}

choice! {
    /// Which side of the split.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
    #[serde(try_from = "String", into = "&'static str")]
    pub enum ArmRole {
        Baseline = "baseline",
        Canary = "canary",
    }
}

/// One version under comparison: a human name and the label matchers that select its series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Arm {
    /// The deployment's name, as the load balancer knows it (`main`, `r0.5-hotfix`).
    pub name: String,
    /// PromQL label matchers, e.g. `{version="r1"}`.
    pub selector: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Arms {
    pub baseline: Arm,
    pub canary: Arm,
}

impl Arms {
    pub fn get(&self, role: ArmRole) -> &Arm {
        match role {
            ArmRole::Baseline => &self.baseline,
            ArmRole::Canary => &self.canary,
        }
    }
}

/// One step of the traffic plan: send `weight` % to the canary, then hold.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// Percent of traffic to the canary, 1..=100 (a step must send the canary something).
    pub weight: u8,
    #[serde(with = "duration::serde_text")]
    pub hold: Duration,
}

/// How a guardrail's value is compared with its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Comparator {
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "==")]
    Eq,
    #[serde(rename = "!=")]
    Ne,
}

impl Comparator {
    pub const ALL: [Comparator; 6] = [
        Comparator::Le,
        Comparator::Ge,
        Comparator::Eq,
        Comparator::Ne,
        Comparator::Lt,
        Comparator::Gt,
    ];

    pub fn symbol(self) -> &'static str {
        match self {
            Comparator::Lt => "<",
            Comparator::Le => "<=",
            Comparator::Gt => ">",
            Comparator::Ge => ">=",
            Comparator::Eq => "==",
            Comparator::Ne => "!=",
        }
    }

    /// Whether `value <op> threshold` holds. NaN satisfies nothing.
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Comparator::Lt => value < threshold,
            Comparator::Le => value <= threshold,
            Comparator::Gt => value > threshold,
            Comparator::Ge => value >= threshold,
            Comparator::Eq => value == threshold,
            Comparator::Ne => value != threshold,
        }
    }
}

/// What a guardrail's canary value must satisfy, e.g. `< 1500`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    pub op: Comparator,
    pub value: f64,
}

/// Why a threshold text did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ThresholdError {
    #[error(
        "{input:?} is not a condition: write a comparator (<, <=, >, >=, ==, !=) and a number, such as \"< 1500\" or \">= 99.6\""
    )]
    NotACondition { input: String },
    /// `< inf`, `>= -inf`, `< 1e999`: a bound no reading can cross guards nothing.
    #[error(
        "{input:?} compares with an infinite number, so it can never fail: give a finite bound, such as \"< 1500\""
    )]
    NotFinite { input: String },
}

impl std::str::FromStr for Threshold {
    type Err = ThresholdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let not_a_condition = || ThresholdError::NotACondition {
            input: s.to_owned(),
        };
        let t = s.trim();
        // Longest symbols first so "<=" is not read as "<".
        let op = Comparator::ALL
            .into_iter()
            .find(|op| t.starts_with(op.symbol()))
            .ok_or_else(not_a_condition)?;
        let value: f64 = t[op.symbol().len()..]
            .trim()
            .parse()
            .map_err(|_| not_a_condition())?;
        if value.is_nan() {
            return Err(not_a_condition());
        }
        if value.is_infinite() {
            return Err(ThresholdError::NotFinite {
                input: s.to_owned(),
            });
        }
        Ok(Threshold { op, value })
    }
}

impl Threshold {
    pub fn passes(&self, value: f64) -> bool {
        self.op.holds(value, self.value)
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.op.symbol(), self.value)
    }
}

choice! {
    /// What a triggered guardrail does (DESIGN §4).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
    #[serde(try_from = "String", into = "&'static str")]
    pub enum OnBreach {
        /// Roll back at once, at any time in the window.
        Rollback = "rollback",
        /// Roll back at once and page at the highest severity.
        SecurityRollback = "security-rollback",
        /// Never rolls back by itself; must pass at the decision.
        BlockPromotion = "block-promotion",
        /// Notify only.
        Warn = "warn",
    }
}

impl OnBreach {
    /// Whether this class must have data and pass for a PROMOTE.
    pub fn gates_promotion(self) -> bool {
        !matches!(self, OnBreach::Warn)
    }
}

choice! {
    /// What a guardrail without data means.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(try_from = "String", into = "&'static str")]
    pub enum OnNoData {
        /// No data does not breach, but a guardrail without data at the decision makes the
        /// verdict INCONCLUSIVE.
        Inconclusive = "inconclusive",
        /// No data counts as a breach.
        Fail = "fail",
        /// No data counts as passing.
        Ignore = "ignore",
    }
}

/// One guardrail: an unscoped PromQL query evaluated per arm, and a rule for the canary's value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Guardrail {
    pub name: String,
    /// Unscoped PromQL; the runtime scopes it to each arm.
    pub query: String,
    pub must: Threshold,
    /// The breach must hold for every evaluation across this span before it triggers.
    #[serde(rename = "for", with = "duration::serde_text")]
    pub for_: Duration,
    pub on_breach: OnBreach,
    pub on_no_data: OnNoData,
    /// With a sample-count query: below this many samples the value counts as no data.
    pub min_samples: Option<f64>,
    /// PromQL returning the number of samples behind the value (scoped like `query`).
    pub samples_query: Option<String>,
    /// What the query's value is measured in (`ms`, `%`, `errors`), for people: the live page,
    /// the check log, the report. Absent in plans written before units existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

choice! {
    /// Which way a change in the canary is bad, for a comparison (`direction`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
    #[serde(try_from = "String", into = "&'static str")]
    pub enum Direction {
        /// Higher is worse: latencies, error rates.
        Increase = "increase",
        /// Lower is worse: throughput, success rates.
        Decrease = "decrease",
        /// Any change is worse.
        Either = "either",
    }
}

impl From<Direction> for canary_judge::Direction {
    fn from(d: Direction) -> Self {
        match d {
            Direction::Increase => canary_judge::Direction::Increase,
            Direction::Decrease => canary_judge::Direction::Decrease,
            Direction::Either => canary_judge::Direction::Either,
        }
    }
}

choice! {
    /// [`Measure`] by name, without its queries (a comparison's `kind`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
    #[serde(try_from = "String", into = "&'static str")]
    pub enum MeasureKind {
        Continuous = "continuous",
        Counts = "counts",
        Spread = "spread",
    }
}

/// What a comparison reads from each arm at every evaluation, and so which sequential test
/// judges it. Queries are unscoped PromQL, scoped to each arm by the runtime like guardrails.
///
/// The sequential tests count every evaluation as an independent look, so two looks must not
/// read the same samples:
///
/// - `Continuous`: `query` must cover one evaluation interval and no more — a window equal to
///   `evaluation_interval`, e.g. `histogram_quantile(0.95, sum by (le)
///   (rate(ttfv_ms_bucket[30s])))` when evaluating every 30 s. A longer window (`[5m]`) makes
///   ten successive looks share most of their samples, and the run-wide false-rollback bound
///   no longer holds. Judged by the sequential sign test of stochastic order
///   ([`canary_judge::SignSequence`]): each look pairs the canary's value with the baseline's.
///   A round where either arm has no finite value (no data, NaN, an error) is no look.
/// - `Counts`: `events` and `exposure` are cumulative counters summed per arm, with no range
///   window: `sum(http_requests_total{code=~"5.."})` out of `sum(http_requests_total)`. The
///   engine takes the increase of each since the last evaluation that read them all (the
///   first only sets where counting starts), so looks never overlap and together count
///   exactly what the run served, whatever the scrape alignment — where `increase(...[30s])`
///   would extrapolate and lose what falls between windows. A counter that went down (a
///   restart) makes that interval no look for either arm and counting starts again; an
///   events counter with no series yet (no error so far) counts 0. Judged by the sequential
///   rate-ratio test ([`canary_judge::CountSequence`]).
/// - `Spread`: `query` as for `Continuous` (one interval's reading), judged on how widely the
///   canary's readings scatter rather than where they sit: a tail that grew at the same median
///   passes a location test. Successive looks are paired — each pair of rounds gives each arm
///   the distance between its two readings — and the sign test judges the canary's distances
///   against the baseline's (wider is `increase`). Under the same scatter the two distances
///   are exchangeable, so the run-wide bound holds; each comparison look takes two rounds.
///
/// `canary_providers::metrics::observe::overlapping_comparisons` finds queries that break
/// these rules (a window longer than the interval, a counts query read through a range).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Measure {
    /// One reading per arm per evaluation: a latency quantile, a per-interval rate.
    Continuous { query: String },
    /// The same readings, judged on their scatter between evaluations.
    Spread { query: String },
    /// Events out of exposure per arm, both cumulative counters: errors out of requests,
    /// failed out of started streams.
    Counts { events: String, exposure: String },
}

impl Measure {
    /// Its `kind` name.
    pub fn kind(&self) -> MeasureKind {
        match self {
            Measure::Continuous { .. } => MeasureKind::Continuous,
            Measure::Counts { .. } => MeasureKind::Counts,
            Measure::Spread { .. } => MeasureKind::Spread,
        }
    }

    /// Its queries, each with the name of the field that holds it.
    pub fn queries(&self) -> Vec<(&'static str, &str)> {
        match self {
            Measure::Continuous { query } | Measure::Spread { query } => vec![("query", query)],
            Measure::Counts { events, exposure } => {
                vec![("events", events), ("exposure", exposure)]
            }
        }
    }
}

/// One canary-versus-baseline comparison (DESIGN §14): what to read per arm, which way is
/// bad and by how much, and how its result counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompareSpec {
    /// Unique among comparisons and guardrails: it names the result everywhere.
    pub name: String,
    /// What is read and which test judges it (`kind` and its queries, flattened).
    #[serde(flatten)]
    pub measure: Measure,
    /// Which way is bad.
    pub direction: Direction,
    /// How much worse the canary may be before it counts as worse: relative (a fraction of
    /// the baseline) or absolute (in the query's unit; continuous comparisons only).
    pub effect: Effect,
    /// A critical comparison that fails rolls back at once, whatever the score.
    pub critical: bool,
    /// Its weight inside its group; positive.
    pub weight: f64,
    /// The scoring group it counts in.
    pub group: String,
    /// The chance that a canary no worse than allowed fails this comparison at some look of
    /// the whole run (the sequential test's level), in (0, 1).
    pub alpha: f64,
    /// No data at the decision counts as a failure (Kayenta's `mustHaveData`) instead of
    /// leaving the comparison out of the score.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub must_have_data: bool,
}

impl CompareSpec {
    /// A comparison's level when the configuration does not give one.
    pub const DEFAULT_ALPHA: f64 = 0.05;
    /// A comparison's weight when the configuration does not give one.
    pub const DEFAULT_WEIGHT: f64 = 1.0;
    /// The group of a comparison the configuration puts in none.
    pub const DEFAULT_GROUP: &'static str = "default";

    /// The comparison as the judge sees it.
    pub fn comparison(&self) -> Comparison {
        Comparison {
            name: self.name.clone(),
            group: self.group.clone(),
            direction: self.direction.into(),
            effect: self.effect,
            critical: self.critical,
            weight: self.weight,
            must_have_data: self.must_have_data,
        }
    }

    fn check(&self) -> Result<(), PlanError> {
        let name = || self.name.clone();
        if let Some((field, _)) = self
            .measure
            .queries()
            .into_iter()
            .find(|(_, q)| q.trim().is_empty())
        {
            return Err(PlanError::ComparisonQueryEmpty {
                name: name(),
                field,
            });
        }
        if !(self.weight > 0.0 && self.weight.is_finite()) {
            return Err(PlanError::ComparisonWeight {
                name: name(),
                weight: self.weight,
            });
        }
        if !(self.alpha > 0.0 && self.alpha < 1.0) {
            return Err(PlanError::ComparisonAlpha {
                name: name(),
                alpha: self.alpha,
            });
        }
        if let Err(e) = self.effect.check(self.direction.into()) {
            return Err(PlanError::ComparisonEffect {
                name: name(),
                problem: format!(
                    "{e}: give a relative effect as a fraction (0.1 lets the canary be 10 % worse) or an absolute one in the query's unit"
                ),
            });
        }
        if self.measure.kind() == MeasureKind::Counts && matches!(self.effect, Effect::Absolute(_))
        {
            return Err(PlanError::ComparisonEffect {
                name: name(),
                problem: "a counts comparison judges the ratio of the arms' rates, so its allowed effect must be relative (0.1 lets the canary's rate be 10 % higher), not absolute".to_owned(),
            });
        }
        Ok(())
    }
}

/// Why an allowed effect's text did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{input:?} is not an allowed effect: write a percentage of the baseline (\"10%\") or an amount in the query's unit (\"50\"), not negative"
)]
pub struct EffectError {
    pub input: String,
}

/// Reads an allowed effect as a configuration writes it: `"10%"` is relative (the canary may
/// be 10 % worse than the baseline), a plain number (`"50"`) is absolute, in the query's unit.
/// `"0"` and `"0%"` allow nothing.
pub fn parse_effect(text: &str) -> Result<Effect, EffectError> {
    let error = || EffectError {
        input: text.to_owned(),
    };
    let t = text.trim();
    let (number, relative) = match t.strip_suffix('%') {
        Some(n) => (n.trim(), true),
        None => (t, false),
    };
    let value: f64 = number.parse().map_err(|_| error())?;
    if !(value >= 0.0 && value.is_finite()) {
        return Err(error());
    }
    Ok(if relative {
        Effect::Relative(value / 100.0)
    } else {
        Effect::Absolute(value)
    })
}

/// An allowed effect as people read it: `10 % of the baseline`, `50 in the query's unit`.
pub fn format_effect(effect: Effect) -> String {
    match effect {
        Effect::Relative(f) => {
            format!("{} % of the baseline", crate::verdict::fmt_value(f * 100.0))
        }
        Effect::Absolute(v) => format!("{} in the query's unit", crate::verdict::fmt_value(v)),
    }
}

/// The runbook's load burst.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BurstPlan {
    /// Offset from the start of the window (the runbook: T+5).
    #[serde(with = "duration::serde_text")]
    pub at: Duration,
    /// Success rate the burst must reach, in percent.
    pub min_success_percent: f64,
}

impl BurstPlan {
    /// The runbook's burst: at T+5, and 99 % of its requests must succeed.
    pub const RUNBOOK: BurstPlan = BurstPlan {
        at: Duration::from_secs(5 * 60),
        min_success_percent: 99.0,
    };
}

choice! {
    /// [`Approval`] by name, without its timeout.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum ApprovalMode {
        Auto = "auto",
        Manual = "manual",
    }
}

/// Who must say yes before a promotion.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Approval {
    /// The engine promotes by itself when every rule passes.
    Auto,
    /// An operator must run `canary approve` within `timeout`, or the canary rolls back.
    Manual {
        #[serde(with = "duration::serde_text")]
        timeout: Duration,
    },
}

impl Approval {
    /// How long an operator has to approve when the plan does not say.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

    /// The approval `mode` names.
    pub fn mode(self) -> ApprovalMode {
        match self {
            Approval::Auto => ApprovalMode::Auto,
            Approval::Manual { .. } => ApprovalMode::Manual,
        }
    }
}

choice! {
    /// [`OnInconclusive`] by name, without its timeout.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum InconclusiveMode {
        Rollback = "rollback",
        Hold = "hold",
    }
}

/// What an INCONCLUSIVE decision does.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum OnInconclusive {
    /// Traffic back to the baseline at once.
    Rollback,
    /// Keep the split and wait for `canary approve` or `canary abort` until `timeout`, then roll
    /// back.
    Hold {
        #[serde(with = "duration::serde_text")]
        timeout: Duration,
    },
}

impl OnInconclusive {
    /// How long an INCONCLUSIVE split is held when the plan does not say.
    pub const DEFAULT_HOLD_TIMEOUT: Duration = Duration::from_secs(30 * 60);

    /// The `mode` this value names.
    pub fn mode(self) -> InconclusiveMode {
        match self {
            OnInconclusive::Rollback => InconclusiveMode::Rollback,
            OnInconclusive::Hold { .. } => InconclusiveMode::Hold,
        }
    }
}

/// Everything the engine needs to run one canary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub service: String,
    pub arms: Arms,
    /// The traffic plan; after the last hold comes the decision.
    pub steps: Vec<Step>,
    #[serde(with = "duration::serde_text")]
    pub evaluation_interval: Duration,
    #[serde(with = "duration::serde_text")]
    pub check_log_interval: Duration,
    /// Offsets from the start at which a snapshot is taken (the runbook: 15m, 30m, 60m).
    #[serde(with = "duration::serde_text_vec")]
    pub checkpoints: Vec<Duration>,
    pub guardrails: Vec<Guardrail>,
    pub burst: Option<BurstPlan>,
    /// Run tenant-isolation probes with the burst and at every check-log interval after it.
    pub probes: bool,
    pub approval: Approval,
    pub on_inconclusive: OnInconclusive,
    /// Consecutive query errors of one guardrail that roll back (the source is not trustworthy).
    pub max_query_errors: u32,
    /// How many times faster than the runbook's clock this plan runs (1 in production; the
    /// demo's compressed clock otherwise). Names that follow the runbook — checkpoint labels
    /// such as `T15` — are in runbook time.
    #[serde(default = "real_time")]
    pub time_scale: f64,
    /// Canary-versus-baseline comparisons, judged at every evaluation beside the guardrails.
    /// Absent from journals written before comparisons existed (and from plans without any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub comparisons: Vec<CompareSpec>,
    /// How the comparisons' results make a 0–100 score and its verdict (Kayenta's `marginal`
    /// 75 / `pass` 95 and group weights by default).
    #[serde(default, skip_serializing_if = "is_default_scoring")]
    pub scoring: Scoring,
}

fn real_time() -> f64 {
    1.0
}

fn is_default_scoring(scoring: &Scoring) -> bool {
    *scoring == Scoring::default()
}

/// A plan that contradicts itself. The CLI reports these with file positions; the engine refuses
/// to start on one.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    #[error(
        "service name {0:?} cannot name files: use 1 to 64 letters, digits, '.', '_' or '-', not starting with '.' (e.g. \"relay\")"
    )]
    InvalidServiceName(String),
    #[error("the traffic plan has no steps: add at least one [[steps]] with a weight and a hold")]
    NoSteps,
    #[error("step {index}: weight {weight} is outside 0..=100")]
    WeightRange { index: usize, weight: u8 },
    #[error(
        "step {index}: weight 0 sends nothing to the canary, so nothing is tested: give it at least 1 (the runbook: 5)"
    )]
    ZeroWeight { index: usize },
    #[error(
        "step {index}: weight {weight} does not increase on the previous step's {previous}; steps must go up, e.g. 5, 25, 50"
    )]
    WeightsNotIncreasing {
        index: usize,
        weight: u8,
        previous: u8,
    },
    #[error("step {index}: hold must be longer than 0")]
    ZeroHold { index: usize },
    #[error("evaluation_interval must be longer than 0")]
    ZeroInterval,
    #[error("check_log_interval must be longer than 0")]
    ZeroCheckLogInterval,
    #[error(
        "checkpoint {at} is past the end of the window ({window}); use an offset up to {window}"
    )]
    CheckpointPastWindow { at: Human, window: Human },
    #[error("the load burst at {at} starts after the window ends ({window})")]
    BurstPastWindow { at: Human, window: Human },
    #[error("two guardrails are named {0:?}: names must be unique")]
    DuplicateGuardrail(String),
    #[error(
        "guardrail {0:?}: min_samples needs a samples query, and a samples query needs min_samples"
    )]
    SamplesWithoutMinimum(String),
    #[error(
        "no guardrail can block the promotion: without evidence canary never promotes; add a guardrail with on_breach = \"rollback\", \"security-rollback\" or \"block-promotion\" (warn only notifies)"
    )]
    NoGatingGuardrail,
    #[error("guardrail {name:?}: `{must}` compares with an infinite number and can never fail")]
    NonFiniteThreshold { name: String, must: Threshold },
    #[error("two comparisons are named {0:?}: names must be unique")]
    DuplicateComparison(String),
    #[error(
        "comparison {0:?} has the name of a guardrail: rename one (a name identifies one result in the journal, the decision and the report)"
    )]
    ComparisonNamedLikeGuardrail(String),
    #[error("comparison {name:?}: {field} is empty: give the PromQL to evaluate for each arm")]
    ComparisonQueryEmpty { name: String, field: &'static str },
    #[error(
        "comparison {name:?}: weight {weight} must be a positive number (1 unless this comparison should count more in its group)"
    )]
    ComparisonWeight { name: String, weight: f64 },
    #[error(
        "comparison {name:?}: alpha {alpha} must lie strictly between 0 and 1, e.g. 0.05 (the chance that a canary no worse than allowed fails it over the whole run)"
    )]
    ComparisonAlpha { name: String, alpha: f64 },
    #[error("comparison {name:?}: {problem}")]
    ComparisonEffect { name: String, problem: String },
    #[error(
        "scoring: {problem}; use 0 <= marginal <= pass <= 100 (Kayenta's defaults: marginal 75, pass 95) and group weights of 0 or more"
    )]
    Scoring { problem: String },
    #[error(
        "scoring gives group {0:?} a weight, but no comparison is in that group: fix the group's name or drop its weight"
    )]
    UnknownScoringGroup(String),
}

impl Plan {
    /// `wall` — one of this plan's durations, or a span of its run — said in the runbook's time
    /// ([`duration::runbook`]): a compressed run's 5-second `for` is the runbook's `5m`.
    pub fn runbook(&self, wall: Duration) -> duration::Runbook {
        duration::Runbook(wall, self.time_scale)
    }

    /// The active window: the sum of the steps' holds.
    pub fn window(&self) -> Duration {
        self.steps.iter().map(|s| s.hold).sum()
    }

    /// Checks the rules the engine relies on.
    pub fn check(&self) -> Result<(), PlanError> {
        if !is_file_safe_name(&self.service) {
            return Err(PlanError::InvalidServiceName(self.service.clone()));
        }
        if self.steps.is_empty() {
            return Err(PlanError::NoSteps);
        }
        let mut previous: Option<u8> = None;
        for (index, step) in self.steps.iter().enumerate() {
            if step.weight > 100 {
                return Err(PlanError::WeightRange {
                    index,
                    weight: step.weight,
                });
            }
            if step.weight == 0 {
                return Err(PlanError::ZeroWeight { index });
            }
            if let Some(previous) = previous
                && step.weight <= previous
            {
                return Err(PlanError::WeightsNotIncreasing {
                    index,
                    weight: step.weight,
                    previous,
                });
            }
            if step.hold.is_zero() {
                return Err(PlanError::ZeroHold { index });
            }
            previous = Some(step.weight);
        }
        if self.evaluation_interval.is_zero() {
            return Err(PlanError::ZeroInterval);
        }
        if self.check_log_interval.is_zero() {
            return Err(PlanError::ZeroCheckLogInterval);
        }
        let window = self.window();
        if let Some(at) = self.checkpoints.iter().find(|c| **c > window) {
            return Err(PlanError::CheckpointPastWindow {
                at: Human(*at),
                window: Human(window),
            });
        }
        if let Some(burst) = &self.burst
            && burst.at >= window
        {
            return Err(PlanError::BurstPastWindow {
                at: Human(burst.at),
                window: Human(window),
            });
        }
        for (i, g) in self.guardrails.iter().enumerate() {
            if self.guardrails[..i].iter().any(|o| o.name == g.name) {
                return Err(PlanError::DuplicateGuardrail(g.name.clone()));
            }
            if g.min_samples.is_some() != g.samples_query.is_some() {
                return Err(PlanError::SamplesWithoutMinimum(g.name.clone()));
            }
            if !g.must.value.is_finite() {
                return Err(PlanError::NonFiniteThreshold {
                    name: g.name.clone(),
                    must: g.must,
                });
            }
        }
        self.check_comparisons()?;
        // A comparison gates the promotion too: PROMOTE needs its score to pass.
        if self.comparisons.is_empty()
            && !self
                .guardrails
                .iter()
                .any(|g| g.on_breach.gates_promotion())
        {
            return Err(PlanError::NoGatingGuardrail);
        }
        Ok(())
    }

    fn check_comparisons(&self) -> Result<(), PlanError> {
        for (i, c) in self.comparisons.iter().enumerate() {
            if self.comparisons[..i].iter().any(|o| o.name == c.name) {
                return Err(PlanError::DuplicateComparison(c.name.clone()));
            }
            if self.guardrails.iter().any(|g| g.name == c.name) {
                return Err(PlanError::ComparisonNamedLikeGuardrail(c.name.clone()));
            }
            c.check()?;
        }
        if let Err(e) = self.scoring.check() {
            return Err(PlanError::Scoring {
                problem: e.to_string(),
            });
        }
        if let Some(group) = self
            .scoring
            .group_weights
            .keys()
            .find(|g| !self.comparisons.iter().any(|c| &c.group == *g))
        {
            return Err(PlanError::UnknownScoringGroup(group.clone()));
        }
        Ok(())
    }

    /// The plan with every duration divided by `factor` (the demo's compressed clock), rounded to
    /// whole milliseconds and never below 1 ms. Queries are left alone: compress their range
    /// windows with `canary_promql::rewrite::compress_time`.
    pub fn compressed(&self, factor: f64) -> Plan {
        let scale = |d: Duration| {
            if d.is_zero() {
                d
            } else {
                Duration::from_millis(((d.as_secs_f64() * 1000.0 / factor).round() as u64).max(1))
            }
        };
        let mut plan = self.clone();
        plan.time_scale = self.time_scale * factor;
        for step in &mut plan.steps {
            step.hold = scale(step.hold);
        }
        plan.evaluation_interval = scale(plan.evaluation_interval);
        plan.check_log_interval = scale(plan.check_log_interval);
        plan.checkpoints = plan.checkpoints.iter().map(|c| scale(*c)).collect();
        for g in &mut plan.guardrails {
            g.for_ = scale(g.for_);
        }
        if let Some(b) = &mut plan.burst {
            b.at = scale(b.at);
        }
        plan.approval = match plan.approval {
            Approval::Manual { timeout } => Approval::Manual {
                timeout: scale(timeout),
            },
            a => a,
        };
        plan.on_inconclusive = match plan.on_inconclusive {
            OnInconclusive::Hold { timeout } => OnInconclusive::Hold {
                timeout: scale(timeout),
            },
            o => o,
        };
        plan
    }

    /// Where `other` (a configuration's plan) differs from this one (a journal's), one line per
    /// difference (`steps[0].weight: 5 in the journal, 25 in the configuration`), guardrails
    /// and comparisons matched by name. Empty when they are the same plan. Resume uses it: the
    /// journal's plan is the truth, and a configuration that says otherwise is refused with the
    /// differences named.
    pub fn differences(&self, other: &Plan) -> Vec<String> {
        let mut out = Vec::new();
        let named = |p: &Plan| -> Vec<(String, serde_json::Value)> {
            p.guardrails
                .iter()
                .map(|g| (g.name.clone(), to_value(g)))
                .collect()
        };
        diff_named(
            "guardrail",
            "guardrails",
            &named(self),
            &named(other),
            &mut out,
        );
        let named = |p: &Plan| -> Vec<(String, serde_json::Value)> {
            p.comparisons
                .iter()
                .map(|c| (c.name.clone(), to_value(c)))
                .collect()
        };
        diff_named(
            "comparison",
            "comparisons",
            &named(self),
            &named(other),
            &mut out,
        );
        let rest = |p: &Plan| {
            let mut v = to_value(p);
            if let Some(map) = v.as_object_mut() {
                map.remove("guardrails");
                map.remove("comparisons");
                // Written only when not the default; compared field by field all the same.
                map.insert("scoring".into(), to_value(&p.scoring));
            }
            v
        };
        let (rest, other_rest) = (rest(self), rest(other));
        diff_values("", &rest, &other_rest, &mut out);
        out
    }

    /// The runbook's checkpoint label for an offset of this plan: `T15` for 15 runbook minutes
    /// (15 minutes, or 15 seconds on a 60-times compressed clock).
    pub fn checkpoint_label(&self, offset: Duration) -> String {
        let offset = Duration::from_secs_f64(offset.as_secs_f64() * self.time_scale).as_millis();
        let offset = Duration::from_millis(((offset as f64 / 1000.0).round() * 1000.0) as u64);
        let secs = offset.as_secs();
        if secs.is_multiple_of(60) {
            format!("T{}", secs / 60)
        } else {
            format!("T{}", duration::format(offset))
        }
    }
}

/// The differences between two lists of named items (the journal's, the configuration's):
/// the names only one has, then every field that differs in an item both have.
fn diff_named(
    item: &str,
    items: &str,
    mine: &[(String, serde_json::Value)],
    theirs: &[(String, serde_json::Value)],
    out: &mut Vec<String>,
) {
    let missing: Vec<&String> = mine
        .iter()
        .map(|(n, _)| n)
        .filter(|n| !theirs.iter().any(|(o, _)| o == *n))
        .collect();
    let extra: Vec<&String> = theirs
        .iter()
        .map(|(n, _)| n)
        .filter(|n| !mine.iter().any(|(o, _)| o == *n))
        .collect();
    if !missing.is_empty() {
        out.push(format!(
            "{items} in the journal but not in the configuration: {}",
            join(&missing)
        ));
    }
    if !extra.is_empty() {
        out.push(format!(
            "{items} in the configuration but not in the journal: {}",
            join(&extra)
        ));
    }
    for (name, value) in mine {
        if let Some((_, o)) = theirs.iter().find(|(o, _)| o == name) {
            diff_values(&format!("{item} {name}"), value, o, out);
        }
    }
}

fn join(names: &[&String]) -> String {
    names
        .iter()
        .map(|n| n.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn to_value<T: Serialize>(value: &T) -> serde_json::Value {
    // Plan types serialise to JSON without fail: no maps with non-string keys, no
    // non-finite floats in a checked plan.
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}

/// Appends `path: a here, b there` for every leaf where `a` and `b` differ.
fn diff_values(path: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    let at = |key: &str| {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        }
    };
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for key in keys {
                let null = Value::Null;
                diff_values(
                    &at(key),
                    x.get(key).unwrap_or(&null),
                    y.get(key).unwrap_or(&null),
                    out,
                );
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                diff_values(&format!("{path}[{i}]"), p, q, out);
            }
        }
        _ if a != b => out.push(format!(
            "{path}: {a} in the journal, {b} in the configuration"
        )),
        _ => {}
    }
}

/// Whether `name` can name a file or directory as it is: the service names run state, locks
/// and evidence. No separators, no `.`/`..`, no control characters.
pub fn is_file_safe_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_parse_longest_operator_first() {
        let t: Threshold = "<= 80".parse().unwrap();
        assert_eq!(t.op, Comparator::Le);
        assert_eq!(t.value, 80.0);
        let t: Threshold = ">=99.6".parse().unwrap();
        assert_eq!((t.op, t.value), (Comparator::Ge, 99.6));
        for bad in ["80", "=< 3", "< fast", "", "< NaN", "~ 3"] {
            assert!(
                matches!(
                    bad.parse::<Threshold>(),
                    Err(ThresholdError::NotACondition { .. })
                ),
                "{bad:?}"
            );
        }
        // Always-true (or never-true) bounds guard nothing.
        for bad in ["< inf", "< 1e999", ">= -inf", "<= +infinity", "!= -1e400"] {
            assert!(
                matches!(
                    bad.parse::<Threshold>(),
                    Err(ThresholdError::NotFinite { .. })
                ),
                "{bad:?}"
            );
        }
        assert!(!t.passes(f64::NAN));
    }

    fn plan_with(steps: &[u8], guardrails: &[OnBreach]) -> Plan {
        Plan {
            service: "relay".into(),
            arms: Arms {
                baseline: Arm {
                    name: "r0.5".into(),
                    selector: r#"{version="r0.5"}"#.into(),
                },
                canary: Arm {
                    name: "r1".into(),
                    selector: r#"{version="r1"}"#.into(),
                },
            },
            steps: steps
                .iter()
                .map(|&weight| Step {
                    weight,
                    hold: Duration::from_secs(600),
                })
                .collect(),
            evaluation_interval: Duration::from_secs(30),
            check_log_interval: Duration::from_secs(300),
            checkpoints: vec![],
            guardrails: guardrails
                .iter()
                .enumerate()
                .map(|(i, &on_breach)| Guardrail {
                    name: format!("g{i}"),
                    query: "up".into(),
                    must: "< 1".parse().unwrap(),
                    for_: Duration::ZERO,
                    on_breach,
                    on_no_data: OnNoData::Inconclusive,
                    min_samples: None,
                    samples_query: None,
                    unit: None,
                })
                .collect(),
            burst: None,
            probes: false,
            approval: Approval::Auto,
            on_inconclusive: OnInconclusive::Rollback,
            max_query_errors: 5,
            time_scale: 1.0,
            comparisons: Vec::new(),
            scoring: Default::default(),
        }
    }

    #[test]
    fn a_plan_promotes_only_on_evidence_and_only_if_it_sends_the_canary_traffic() {
        // (steps, guardrails) → the plan's verdict on itself
        type Case<'a> = (&'a [u8], &'a [OnBreach], Result<(), PlanError>);
        let table: [Case; 7] = [
            (&[5], &[OnBreach::Rollback], Ok(())),
            (&[5], &[OnBreach::BlockPromotion], Ok(())),
            (
                &[5, 25],
                &[OnBreach::Warn, OnBreach::SecurityRollback],
                Ok(()),
            ),
            (&[5], &[], Err(PlanError::NoGatingGuardrail)),
            (
                &[5],
                &[OnBreach::Warn, OnBreach::Warn],
                Err(PlanError::NoGatingGuardrail),
            ),
            (
                &[0],
                &[OnBreach::Rollback],
                Err(PlanError::ZeroWeight { index: 0 }),
            ),
            (
                &[0, 5],
                &[OnBreach::Rollback],
                Err(PlanError::ZeroWeight { index: 0 }),
            ),
        ];
        for (steps, guardrails, expected) in table {
            assert_eq!(
                plan_with(steps, guardrails).check(),
                expected,
                "{steps:?} {guardrails:?}"
            );
        }
        for bad in [
            "",
            "../etc",
            "a/b",
            "..",
            ".hidden",
            "nul\0byte",
            "tab\tname",
            "é",
        ] {
            let mut p = plan_with(&[5], &[OnBreach::Rollback]);
            p.service = bad.into();
            assert_eq!(
                p.check(),
                Err(PlanError::InvalidServiceName(bad.into())),
                "{bad:?}"
            );
        }
        for good in ["relay", "relay-api_v2", "relay.eu"] {
            let mut p = plan_with(&[5], &[OnBreach::Rollback]);
            p.service = good.into();
            assert_eq!(p.check(), Ok(()), "{good:?}");
        }
        let mut infinite = plan_with(&[5], &[OnBreach::Rollback]);
        infinite.guardrails[0].must.value = f64::INFINITY;
        assert!(matches!(
            infinite.check(),
            Err(PlanError::NonFiniteThreshold { .. })
        ));
    }

    /// Every choice parses from its names and nothing else, and writes (in journals, with
    /// serde) exactly the name it parses from.
    #[test]
    fn a_choice_has_one_list_of_names() {
        fn check<T>(names: &[&str])
        where
            T: Copy + std::str::FromStr<Err = UnknownName> + fmt::Display + fmt::Debug + PartialEq,
        {
            for name in names {
                let value: T = name.parse().unwrap();
                assert_eq!(value.to_string(), *name);
            }
            let err = "rolback".parse::<T>().unwrap_err();
            assert_eq!(err.expected, names);
            assert_eq!(
                err.to_string(),
                format!("\"rolback\" is not one of {}", names.join(", "))
            );
            // Names are exact: no case folding, no trimming.
            assert!(names[0].to_uppercase().parse::<T>().is_err());
            assert!(format!(" {}", names[0]).parse::<T>().is_err());
        }
        check::<ArmRole>(ArmRole::NAMES);
        check::<OnBreach>(OnBreach::NAMES);
        check::<OnNoData>(OnNoData::NAMES);
        check::<ApprovalMode>(ApprovalMode::NAMES);
        check::<InconclusiveMode>(InconclusiveMode::NAMES);
        assert_eq!(
            OnBreach::NAMES,
            ["rollback", "security-rollback", "block-promotion", "warn"]
        );

        fn json<T: Serialize>(v: &T) -> serde_json::Value {
            serde_json::to_value(v).unwrap()
        }
        for v in OnBreach::ALL {
            assert_eq!(json(v), serde_json::json!(v.as_str()));
            assert_eq!(serde_json::from_value::<OnBreach>(json(v)).unwrap(), *v);
        }
        for v in OnNoData::ALL {
            assert_eq!(json(v), serde_json::json!(v.as_str()));
            assert_eq!(serde_json::from_value::<OnNoData>(json(v)).unwrap(), *v);
        }
        for v in ArmRole::ALL {
            assert_eq!(json(v), serde_json::json!(v.as_str()));
            assert_eq!(serde_json::from_value::<ArmRole>(json(v)).unwrap(), *v);
        }
        let bad = serde_json::from_value::<OnBreach>(serde_json::json!("page")).unwrap_err();
        assert!(
            bad.to_string().contains("rollback, security-rollback"),
            "{bad}"
        );
        // The tagged plan enums write their mode's name.
        let timeout = Duration::from_secs(60);
        for a in [Approval::Auto, Approval::Manual { timeout }] {
            assert_eq!(json(&a)["mode"], a.mode().as_str());
        }
        for o in [OnInconclusive::Rollback, OnInconclusive::Hold { timeout }] {
            assert_eq!(json(&o)["mode"], o.mode().as_str());
        }
    }

    #[test]
    fn differences_name_every_field_that_disagrees() {
        let journal = plan_with(&[5], &[OnBreach::Rollback, OnBreach::BlockPromotion]);
        assert!(journal.differences(&journal.clone()).is_empty());
        let mut config = journal.clone();
        config.guardrails.truncate(1);
        config.guardrails[0].must = "< 2".parse().unwrap();
        config.steps[0].weight = 25;
        config.service = "other".into();
        assert_eq!(
            journal.differences(&config),
            [
                "guardrails in the journal but not in the configuration: g1",
                "guardrail g0.must.value: 1.0 in the journal, 2.0 in the configuration",
                "service: \"relay\" in the journal, \"other\" in the configuration",
                "steps[0].weight: 5 in the journal, 25 in the configuration",
            ]
        );
    }

    fn comparison(name: &str) -> CompareSpec {
        CompareSpec {
            name: name.into(),
            measure: Measure::Continuous {
                query: "histogram_quantile(0.95, sum by (le) (rate(ttfv_ms_bucket[30s])))".into(),
            },
            direction: Direction::Increase,
            effect: Effect::Relative(0.1),
            critical: false,
            weight: CompareSpec::DEFAULT_WEIGHT,
            group: CompareSpec::DEFAULT_GROUP.into(),
            alpha: CompareSpec::DEFAULT_ALPHA,
            must_have_data: false,
        }
    }

    #[test]
    fn comparisons_are_checked_and_the_error_says_what_to_do() {
        type Change = fn(&mut Plan);
        let table: [(Change, Result<(), PlanError>, &str); 12] = [
            (|_| {}, Ok(()), ""),
            (
                |p| p.comparisons.push(comparison("c0")),
                Err(PlanError::DuplicateComparison("c0".into())),
                "names must be unique",
            ),
            (
                |p| p.comparisons[0].name = "g0".into(),
                Err(PlanError::ComparisonNamedLikeGuardrail("g0".into())),
                "rename one",
            ),
            (
                |p| p.comparisons[0].weight = 0.0,
                Err(PlanError::ComparisonWeight {
                    name: "c0".into(),
                    weight: 0.0,
                }),
                "must be a positive number",
            ),
            (
                |p| p.comparisons[0].alpha = 1.0,
                Err(PlanError::ComparisonAlpha {
                    name: "c0".into(),
                    alpha: 1.0,
                }),
                "e.g. 0.05",
            ),
            (
                |p| {
                    p.comparisons[0].direction = Direction::Decrease;
                    p.comparisons[0].effect = Effect::Relative(1.5);
                },
                Err(PlanError::ComparisonEffect {
                    name: "c0".into(),
                    problem: String::new(),
                }),
                "give a relative effect as a fraction",
            ),
            (
                |p| {
                    p.comparisons[0].measure = Measure::Counts {
                        events: "sum(errors_total)".into(),
                        exposure: "sum(requests_total)".into(),
                    };
                    p.comparisons[0].effect = Effect::Absolute(3.0);
                },
                Err(PlanError::ComparisonEffect {
                    name: "c0".into(),
                    problem: String::new(),
                }),
                "must be relative",
            ),
            (
                |p| {
                    p.comparisons[0].measure = Measure::Counts {
                        events: " ".into(),
                        exposure: "sum(requests_total)".into(),
                    }
                },
                Err(PlanError::ComparisonQueryEmpty {
                    name: "c0".into(),
                    field: "events",
                }),
                "events is empty",
            ),
            (
                |p| p.scoring.marginal = 96.0,
                Err(PlanError::Scoring {
                    problem: String::new(),
                }),
                "0 <= marginal <= pass <= 100",
            ),
            (
                |p| {
                    p.scoring.group_weights.insert("latency".into(), 2.0);
                },
                Err(PlanError::UnknownScoringGroup("latency".into())),
                "fix the group's name",
            ),
            (
                |p| {
                    p.scoring
                        .group_weights
                        .insert(CompareSpec::DEFAULT_GROUP.into(), 2.0);
                },
                Ok(()),
                "",
            ),
            // A comparison gates the promotion: a plan with only warn guardrails may rest on it.
            (|p| p.guardrails[0].on_breach = OnBreach::Warn, Ok(()), ""),
        ];
        for (i, (change, expected, says)) in table.into_iter().enumerate() {
            let mut p = plan_with(&[5], &[OnBreach::Rollback]);
            p.comparisons.push(comparison("c0"));
            change(&mut p);
            let got = p.check();
            // Variants whose text carries the judge's wording are matched by kind.
            let same = match (&got, &expected) {
                (
                    Err(PlanError::ComparisonEffect { name: a, .. }),
                    Err(PlanError::ComparisonEffect { name: b, .. }),
                ) => a == b,
                (Err(PlanError::Scoring { .. }), Err(PlanError::Scoring { .. })) => true,
                _ => got == expected,
            };
            assert!(same, "case {i}: {got:?}");
            if let Err(e) = got {
                assert!(e.to_string().contains(says), "case {i}: {e}");
            }
        }
        let mut p = plan_with(&[5], &[OnBreach::Warn]);
        assert_eq!(p.check(), Err(PlanError::NoGatingGuardrail));
        p.comparisons.push(comparison("c0"));
        assert_eq!(p.check(), Ok(()));
    }

    #[test]
    fn differences_name_the_comparisons_that_disagree() {
        let mut journal = plan_with(&[5], &[OnBreach::Rollback]);
        journal.comparisons = vec![comparison("ttfv"), comparison("errors")];
        let mut config = journal.clone();
        config.comparisons.remove(1);
        config.comparisons.push(comparison("pool"));
        config.comparisons[0].critical = true;
        config.scoring.pass = 90.0;
        assert_eq!(
            journal.differences(&config),
            [
                "comparisons in the journal but not in the configuration: errors",
                "comparisons in the configuration but not in the journal: pool",
                "comparison ttfv.critical: false in the journal, true in the configuration",
                "scoring.pass: 95.0 in the journal, 90.0 in the configuration",
            ]
        );
        // A journal written before comparisons existed is the same plan as a configuration
        // without any.
        let old = plan_with(&[5], &[OnBreach::Rollback]);
        let mut json = to_value(&old);
        assert!(json.get("comparisons").is_none() && json.get("scoring").is_none());
        json.as_object_mut().unwrap().remove("time_scale");
        let read: Plan = serde_json::from_value(json).unwrap();
        assert!(read.differences(&old).is_empty());
    }

    #[test]
    fn an_allowed_effect_reads_as_a_percentage_or_an_amount() {
        let table: [(&str, Option<Effect>); 9] = [
            ("10%", Some(Effect::Relative(0.1))),
            (" 2.5 % ", Some(Effect::Relative(0.025))),
            ("0%", Some(Effect::NONE)),
            ("50", Some(Effect::Absolute(50.0))),
            ("0", Some(Effect::Absolute(0.0))),
            ("-5%", None),
            ("inf", None),
            ("ten", None),
            ("%", None),
        ];
        for (text, expected) in table {
            match (parse_effect(text), expected) {
                (Ok(got), Some(want)) => assert_eq!(got, want, "{text:?}"),
                (Err(e), None) => assert!(e.to_string().contains("\"10%\""), "{e}"),
                (got, want) => panic!("{text:?}: {got:?}, expected {want:?}"),
            }
        }
    }

    /// The configuration's names for a direction and a kind are the ones the journal (and the
    /// judge) write.
    #[test]
    fn comparison_choices_name_what_the_journal_writes() {
        for d in Direction::ALL {
            let judge: canary_judge::Direction = (*d).into();
            assert_eq!(serde_json::to_value(judge).unwrap(), d.as_str());
            assert_eq!(serde_json::to_value(d).unwrap(), d.as_str());
        }
        let measures = [
            Measure::Continuous { query: "q".into() },
            Measure::Counts {
                events: "e".into(),
                exposure: "x".into(),
            },
            Measure::Spread { query: "q".into() },
        ];
        for m in measures {
            assert_eq!(to_value(&m)["kind"], m.kind().as_str());
        }
        assert_eq!(MeasureKind::NAMES, ["continuous", "counts", "spread"]);
    }
}
