//! Stage one of the configuration: `canary.toml` as written, with the span of every value so
//! that each later error can point at file:line:col. No interpretation happens here beyond TOML
//! types; unknown keys are rejected (with a did-you-mean, see `diagnostic`). Every scalar may be
//! written with `${VAR}`s: text fields as they are, numbers and booleans as a [`Scalar`].

use serde::Deserialize;
use toml::Spanned;

pub type Text = Spanned<String>;
/// A number or a boolean as written: itself, or text with `${VAR}`s typed when resolved.
pub type Typed<T> = Spanned<Scalar<T>>;

/// A scalar written as itself (`weight = 5`) or as text that `${VAR}`s expand to one
/// (`weight = "${CANARY_TRAFFIC_NEW:-5}"`); the resolver types the text and reports a bad value
/// as it would a bad literal.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar<T> {
    Value(T),
    Text(String),
}

/// The scalar types a [`Scalar`] holds.
pub trait ScalarType: Sized + std::str::FromStr {
    /// What a value must be, for errors: "a whole number".
    const EXPECTED: &'static str;
    fn from_i64(_: i64) -> Option<Self> {
        None
    }
    fn from_f64(_: f64) -> Option<Self> {
        None
    }
    fn from_bool(_: bool) -> Option<Self> {
        None
    }
}

impl ScalarType for i64 {
    const EXPECTED: &'static str = "a whole number";
    fn from_i64(v: i64) -> Option<Self> {
        Some(v)
    }
}

impl ScalarType for f64 {
    const EXPECTED: &'static str = "a number";
    fn from_i64(v: i64) -> Option<Self> {
        Some(v as f64)
    }
    fn from_f64(v: f64) -> Option<Self> {
        Some(v)
    }
}

impl ScalarType for bool {
    const EXPECTED: &'static str = "true or false";
    fn from_bool(v: bool) -> Option<Self> {
        Some(v)
    }
}

impl<'de, T: ScalarType> Deserialize<'de> for Scalar<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor<T>(std::marker::PhantomData<T>);
        impl<T: ScalarType> Visitor<T> {
            fn value<E: serde::de::Error>(
                v: Option<T>,
                unexp: serde::de::Unexpected,
            ) -> Result<Scalar<T>, E> {
                v.map(Scalar::Value)
                    .ok_or_else(|| E::invalid_type(unexp, &Self(std::marker::PhantomData)))
            }
        }
        impl<T: ScalarType> serde::de::Visitor<'_> for Visitor<T> {
            type Value = Scalar<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                write!(f, "{}, or a string with ${{VARIABLE}}s", T::EXPECTED)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Scalar<T>, E> {
                Self::value(T::from_i64(v), serde::de::Unexpected::Signed(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Scalar<T>, E> {
                let signed = i64::try_from(v).ok().and_then(T::from_i64);
                Self::value(signed, serde::de::Unexpected::Unsigned(v))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Scalar<T>, E> {
                Self::value(T::from_f64(v), serde::de::Unexpected::Float(v))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Scalar<T>, E> {
                Self::value(T::from_bool(v), serde::de::Unexpected::Bool(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Scalar<T>, E> {
                Ok(Scalar::Text(v.to_owned()))
            }
        }
        deserializer.deserialize_any(Visitor(std::marker::PhantomData))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub run: Spanned<RawRun>,
    pub arms: Spanned<RawArms>,
    #[serde(default)]
    pub steps: Vec<Spanned<RawStep>>,
    pub traffic: Option<Spanned<RawTraffic>>,
    pub metrics: Option<Spanned<RawMetrics>>,
    pub grafana: Option<Spanned<RawGrafana>>,
    pub alertmanager: Option<Spanned<RawAlertmanager>>,
    pub load: Option<Spanned<RawLoad>>,
    #[serde(default)]
    pub guardrails: Vec<Spanned<RawGuardrail>>,
    /// Comparisons of the canary against the baseline (DESIGN §14).
    #[serde(default)]
    pub compare: Vec<Spanned<RawCompare>>,
    pub scoring: Option<Spanned<RawScoring>>,
    #[serde(default)]
    pub notify: Vec<Spanned<RawNotify>>,
    pub evidence: Option<Spanned<RawEvidence>>,
    /// Where run state lives beyond this machine (DESIGN §13).
    pub state: Option<Spanned<RawState>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawState {
    /// `postgres://...` (a secret: `${CANARY_STATE_URL}`); absent: the embedded store.
    pub url: Option<Text>,
    /// How long a controller's hold on the service lasts without renewal.
    pub lease: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRun {
    pub service: Text,
    pub duration: Option<Text>,
    pub evaluation_interval: Option<Text>,
    pub check_log_interval: Option<Text>,
    pub checkpoints: Option<Spanned<Vec<Text>>>,
    pub cooldown: Option<Text>,
    pub approval: Option<Text>,
    pub approval_timeout: Option<Text>,
    pub on_inconclusive: Option<Text>,
    pub hold_timeout: Option<Text>,
    pub max_query_errors: Option<Typed<i64>>,
    pub state_dir: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawArms {
    pub baseline: Spanned<RawArm>,
    pub canary: Spanned<RawArm>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawArm {
    pub name: Text,
    pub selector: Text,
    /// The arm's own address, bypassing the load balancer: the canary's is how canary-targeted
    /// load and isolation probes reach it; either's is where `health` is checked.
    pub url: Option<Text>,
    /// The arm's health check, straight at it: a path on `url` or a full URL.
    pub health: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStep {
    pub weight: Typed<i64>,
    /// The baseline's share (the runbook's `CANARY_TRAFFIC_OLD`): only checked, it must be
    /// 100 − `weight`.
    pub baseline_weight: Option<Typed<i64>>,
    pub hold: Text,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTraffic {
    pub provider: Text,
    pub timeout: Option<Text>,
    // command
    pub set: Option<Text>,
    pub verify: Option<Text>,
    pub verify_regex: Option<Text>,
    #[serde(default)]
    pub env: Vec<Text>,
    // haproxy
    pub socket: Option<Text>,
    pub address: Option<Text>,
    pub backend: Option<Text>,
    pub canary_server: Option<Text>,
    pub baseline_server: Option<Text>,
    // nginx
    pub upstream_file: Option<Text>,
    pub upstream: Option<Text>,
    pub canary_addr: Option<Text>,
    pub baseline_addr: Option<Text>,
    pub test_command: Option<Text>,
    pub reload_command: Option<Text>,
    // embedded (a running `canary proxy`)
    pub admin: Option<Text>,
    pub token: Option<Text>,
    /// The dead man's switch: the proxy returns to 0 % canary if the controller does not renew
    /// its lease within this long.
    pub lease: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    pub source: Text,
    pub url: Option<Text>,
    pub token: Option<Text>,
    pub timeout: Option<Text>,
    pub scrape_interval: Option<Text>,
    #[serde(default)]
    pub targets: Vec<Spanned<RawTarget>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    pub url: Text,
    /// `baseline` or `canary`: the arm's selector labels are attached to its samples.
    pub arm: Option<Text>,
    pub job: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGrafana {
    pub url: Text,
    pub token: Text,
    pub folder: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlertmanager {
    pub url: Text,
    pub token: Option<Text>,
    /// The escalation webhook of the rendered route, as `${VARIABLE}`.
    pub webhook_url: Option<Text>,
    /// Where the controller listens for Alertmanager's webhook (and its operator API).
    pub callback_listen: Option<Text>,
    /// The bearer token Alertmanager sends with the webhook.
    pub callback_token: Option<Text>,
    /// A directory Prometheus loads rules from (a `rule_files` glob): canary installs one alert
    /// per guardrail there for the run, reloads Prometheus, and removes them afterwards.
    pub rules_dir: Option<Text>,
    /// How often Prometheus evaluates the run's rules (default: `[run] evaluation_interval`).
    pub rule_interval: Option<Text>,
    /// Instead of `rules_dir`: a Grafana Mimir (or Cortex) ruler's base URL.
    pub ruler: Option<Text>,
    /// The ruler's rule namespace for canary's groups (default "canary").
    pub ruler_namespace: Option<Text>,
    /// `X-Scope-OrgID` for a multi-tenant ruler.
    pub ruler_tenant: Option<Text>,
    /// The ruler's configuration API path (default Mimir's; Cortex: "/api/v1/rules").
    pub ruler_api: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLoad {
    pub at: Option<Text>,
    pub url: Text,
    pub method: Option<Text>,
    pub path: Option<Text>,
    pub requests_per_user: Option<Typed<i64>>,
    pub pause: Option<Text>,
    pub target: Option<Text>,
    pub min_success_rate: Option<Typed<f64>>,
    pub expect_status: Option<Typed<i64>>,
    pub body: Option<Text>,
    #[serde(default)]
    pub queries: Vec<Text>,
    #[serde(default)]
    pub users: Vec<Spanned<RawUser>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUser {
    pub name: Text,
    pub token: Text,
    /// A secret marker only this user's memories contain (isolation probes).
    pub marker: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGuardrail {
    pub name: Text,
    pub query: Text,
    pub must: Text,
    #[serde(rename = "for")]
    pub for_: Option<Text>,
    pub on_breach: Option<Text>,
    pub on_no_data: Option<Text>,
    pub min_samples: Option<Typed<f64>>,
    pub samples: Option<Text>,
    /// What the value is measured in, for people (`ms`, `%`).
    pub unit: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCompare {
    pub name: Text,
    /// continuous (default: `query`) | counts (`events` out of `exposure`) | spread (`query`,
    /// judged on its scatter).
    pub kind: Option<Text>,
    pub query: Option<Text>,
    pub events: Option<Text>,
    pub exposure: Option<Text>,
    /// increase (default) | decrease | either: which way is bad.
    pub direction: Option<Text>,
    /// How much worse the canary may be: "10%" (relative) or "50" (absolute). Default "0%".
    pub effect: Option<Text>,
    pub critical: Option<Typed<bool>>,
    pub weight: Option<Typed<f64>>,
    pub group: Option<Text>,
    pub alpha: Option<Typed<f64>>,
    /// No data at the decision counts as a failure (Kayenta's mustHaveData). Default false.
    pub must_have_data: Option<Typed<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScoring {
    pub marginal: Option<Typed<f64>>,
    pub pass: Option<Typed<f64>>,
    /// Each group's weight, by group name.
    #[serde(default)]
    pub groups: std::collections::BTreeMap<String, Typed<f64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotify {
    pub kind: Text,
    #[serde(default)]
    pub on: Vec<Text>,
    // slack
    pub webhook: Option<Text>,
    pub channel: Option<Text>,
    // pagerduty (and `url`: its Events API endpoint)
    pub routing_key: Option<Text>,
    // email
    pub smtp: Option<Text>,
    pub password: Option<Text>,
    pub from: Option<Text>,
    #[serde(default)]
    pub to: Vec<Text>,
    // webhook; pagerduty's Events API endpoint
    pub url: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEvidence {
    pub dir: Option<Text>,
    pub signing_key: Option<Text>,
    pub commit: Option<Typed<bool>>,
}
