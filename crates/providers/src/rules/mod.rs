//! Prometheus alerting rules generated from a plan's guardrails.
//!
//! One alert per guardrail fires when the guardrail's query, scoped to the canary arm, breaches
//! its `must` for the guardrail's `for` — the same rule the engine applies, so Alertmanager can
//! drive the rollback (DESIGN §8). Every alert carries `canary_run`, `severity`, `action` and
//! `guardrail` labels ([`AlertLabels`]). The group renders as a Prometheus rules file, a `PrometheusRule` manifest
//! (Prometheus Operator) or JSON for a Cortex/Mimir ruler; [`RuleFileInstaller`] installs it into
//! a running Prometheus and [`RulerClient`] into a Mimir/Cortex ruler, and both remove it after
//! the run; [`CanaryRules::promtool_tests`] writes
//! `promtool test rules` unit tests that prove each alert fires on a breach and stays quiet on a
//! healthy canary.

mod install;
mod promtool;
mod ruler;

use std::collections::BTreeMap;
use std::time::Duration;

use canary_core::duration;
use canary_core::engine::Severity;
use canary_core::plan::{Arms, Comparator, Guardrail, OnBreach, OnNoData, Plan};
use canary_promql::rewrite::{self, ArmSelector, RewriteError};
use promql_parser::parser::value::ValueType;
use serde::Serialize;

pub use install::{InstalledRules, RuleFileInstaller, RuleFileInstallerConfig};
pub use promtool::{PromtoolTests, UncoveredGuardrail};
pub use ruler::{InstalledRuleGroup, MIMIR_RULES_PREFIX, RulerClient, RulerConfig};

/// Why rules could not be generated, rendered, installed or removed.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("guardrail {guardrail:?}: {source}; fix its query in canary.toml")]
    Query {
        guardrail: String,
        #[source]
        source: RewriteError,
    },
    #[error("the {arm} arm's selector: {source}; fix [arms.{arm}] selector in canary.toml")]
    Selector {
        arm: &'static str,
        #[source]
        source: RewriteError,
    },
    #[error(
        "the alert expression generated for guardrail {guardrail:?} does not parse ({detail}); this is a bug in canary: report it with the guardrail's query"
    )]
    Generated { guardrail: String, detail: String },
    #[error("cannot render {what}: {detail}")]
    Render { what: &'static str, detail: String },
    #[error(
        "cannot write the rules file {path}: {detail}; check that the directory exists and that canary may write to it"
    )]
    Write {
        path: std::path::PathBuf,
        detail: String,
    },
    #[error(
        "cannot remove the rules file {path}: {detail}; remove it by hand and reload Prometheus"
    )]
    Remove {
        path: std::path::PathBuf,
        detail: String,
    },
    #[error("Prometheus at {url} is unreachable: {detail}; check the URL and that it is running")]
    Unreachable { url: String, detail: String },
    #[error("Prometheus at {url} refused the credential (HTTP {status}): check the token")]
    Unauthorized { url: String, status: u16 },
    #[error(
        "Prometheus at {url} refused the reload (HTTP {status}: {body}): start Prometheus with --web.enable-lifecycle"
    )]
    ReloadDisabled {
        url: String,
        status: u16,
        body: String,
    },
    #[error(
        "Prometheus at {url} could not reload its configuration (HTTP {status}: {body}); the rules file was taken out again"
    )]
    ReloadFailed {
        url: String,
        status: u16,
        body: String,
    },
    #[error(
        "Prometheus reloaded but did not load rule group {group:?} from {path}: add a rule_files glob matching that file to prometheus.yml (rule files it loads now: {loaded})"
    )]
    NotLoaded {
        group: String,
        path: std::path::PathBuf,
        loaded: String,
    },
    #[error(
        "Prometheus still evaluates rule group {group:?} after {path} was removed and it reloaded: check for a copy of the file in another rule_files directory"
    )]
    NotRemoved {
        group: String,
        path: std::path::PathBuf,
    },
    #[error("Prometheus at {url} answered something unexpected: {detail}")]
    Protocol { url: String, detail: String },
    #[error("the ruler at {url} refused the request (HTTP {status}): {body}")]
    RulerRejected {
        url: String,
        status: u16,
        body: String,
    },
    #[error(
        "the ruler at {url} accepted rule group {group:?} but does not list it in namespace {namespace:?}: check the tenant (X-Scope-OrgID) and the API prefix"
    )]
    RulerMissing {
        url: String,
        namespace: String,
        group: String,
    },
    #[error(
        "the ruler at {url} still lists rule group {group:?} in namespace {namespace:?} after deleting it: delete it by hand (mimirtool rules delete)"
    )]
    RulerStillHas {
        url: String,
        namespace: String,
        group: String,
    },
}

/// One Prometheus alerting rule, as it appears in a rules file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertRule {
    /// The alert name (`CanaryTtfvP95`): a valid metric name, unique in the group.
    pub alert: String,
    /// Fires with one alert per result sample: the guardrail's canary value breaching `must`.
    pub expr: String,
    #[serde(rename = "for", serialize_with = "serialize_duration")]
    pub for_: Duration,
    pub labels: AlertLabels,
    pub annotations: BTreeMap<String, String>,
}

/// The labels every canary alert carries, typed; rendered as the rule's `labels:` map (see
/// [`AlertLabels::to_map`]), which is how Alertmanager routes the alert and how canary reads a
/// firing alert back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertLabels {
    /// `canary_run`: the run the alert belongs to.
    pub run_id: String,
    /// `guardrail`: the guardrail's name.
    pub guardrail: String,
    /// `action`: what the engine does when the guardrail breaches.
    pub action: OnBreach,
    /// `severity`: how loud the alert is ([`alert_severity`] of the action).
    pub severity: Severity,
    /// `service`: the service under test.
    pub service: String,
}

impl AlertLabels {
    /// The labels as Prometheus sees them, by label name.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (RUN_LABEL.to_owned(), self.run_id.clone()),
            (GUARDRAIL_LABEL.to_owned(), self.guardrail.clone()),
            (ACTION_LABEL.to_owned(), self.action.as_str().to_owned()),
            (
                SEVERITY_LABEL.to_owned(),
                severity_label(self.severity).to_owned(),
            ),
            (SERVICE_LABEL.to_owned(), self.service.clone()),
        ])
    }
}

impl Serialize for AlertLabels {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_map().serialize(s)
    }
}

/// A rule group: what a rules file, a `PrometheusRule` and a ruler namespace hold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleGroup {
    pub name: String,
    /// The plan's evaluation interval, so `for` counts evaluations as the engine does.
    #[serde(serialize_with = "serialize_duration")]
    pub interval: Duration,
    pub rules: Vec<AlertRule>,
}

fn serialize_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&duration::format(*d))
}

/// The alerting rules of one run: the rule group plus what the unit-test generator needs.
#[derive(Debug, Clone)]
pub struct CanaryRules {
    run_id: String,
    group: RuleGroup,
    sources: Vec<RuleSource>,
    arms: Arms,
}

/// Where one rule came from.
#[derive(Debug, Clone)]
struct RuleSource {
    guardrail: Guardrail,
    /// The guardrail's query scoped to the canary arm.
    canary_query: String,
}

/// Label added to every alert: the run it belongs to.
pub const RUN_LABEL: &str = "canary_run";
/// Label added to every alert: what the engine does when it fires (`OnBreach` text).
pub const ACTION_LABEL: &str = "action";
/// Label added to every alert: the guardrail's name.
pub const GUARDRAIL_LABEL: &str = "guardrail";
/// Label added to every alert: how loud it is ([`severity_label`]).
pub const SEVERITY_LABEL: &str = "severity";
/// Label added to every alert: the service under test.
pub const SERVICE_LABEL: &str = "service";

/// The severity of a guardrail's alert: `Page` for a security rollback, `Critical` for a
/// rollback, `Warning` for a promotion gate or a warning.
pub fn alert_severity(on_breach: OnBreach) -> Severity {
    match on_breach {
        OnBreach::SecurityRollback => Severity::Page,
        OnBreach::Rollback => Severity::Critical,
        OnBreach::BlockPromotion | OnBreach::Warn => Severity::Warning,
    }
}

/// The `severity` label's value for a severity, as Alertmanager routes on it: `info`,
/// `warning`, `critical`, `page`.
pub fn severity_label(severity: Severity) -> &'static str {
    match severity {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Critical => "critical",
        Severity::Page => "page",
    }
}

impl CanaryRules {
    /// One alert per guardrail of `plan`, labelled with `run_id`.
    ///
    /// Each `expr` is the guardrail's query scoped to the canary arm and compared with the
    /// negation of `must` (`< 1500` → `>= 1500`, `== 0` → `< 0 or > 0`). A NaN value never fires,
    /// as the engine counts NaN as no data; with `on_no_data = "fail"` no data (NaN or an empty
    /// result) fires too. With `min_samples`, a breach counts only while the samples query
    /// reaches the minimum, again as in the engine.
    pub fn generate(plan: &Plan, run_id: &str) -> Result<CanaryRules, RulesError> {
        let canary = ArmSelector::parse(&plan.arms.canary.selector).map_err(|source| {
            RulesError::Selector {
                arm: "canary",
                source,
            }
        })?;
        ArmSelector::parse(&plan.arms.baseline.selector).map_err(|source| {
            RulesError::Selector {
                arm: "baseline",
                source,
            }
        })?;
        let mut rules = Vec::with_capacity(plan.guardrails.len());
        let mut sources = Vec::with_capacity(plan.guardrails.len());
        for g in &plan.guardrails {
            let query_err = |source| RulesError::Query {
                guardrail: g.name.clone(),
                source,
            };
            let canary_query = as_vector(&g.query, &canary, plan.time_scale).map_err(query_err)?;
            let samples = match (&g.samples_query, g.min_samples) {
                (Some(q), Some(min)) => Some((
                    as_vector(q, &canary, plan.time_scale).map_err(query_err)?,
                    min,
                )),
                _ => None,
            };
            let expr = breach_expr(&canary_query, g, samples.as_ref());
            rewrite::parse(&expr).map_err(|e| RulesError::Generated {
                guardrail: g.name.clone(),
                detail: e.to_string(),
            })?;
            let mut alert = alert_name(&g.name);
            if rules.iter().any(|r: &AlertRule| r.alert == alert) {
                alert = format!("{alert}{}", rules.len() + 1);
            }
            rules.push(AlertRule {
                alert,
                expr,
                for_: g.for_,
                labels: AlertLabels {
                    run_id: run_id.to_owned(),
                    guardrail: g.name.clone(),
                    action: g.on_breach,
                    severity: alert_severity(g.on_breach),
                    service: plan.service.clone(),
                },
                annotations: annotations(plan, run_id, g, &canary_query),
            });
            sources.push(RuleSource {
                guardrail: g.clone(),
                canary_query,
            });
        }
        Ok(CanaryRules {
            run_id: run_id.to_owned(),
            group: RuleGroup {
                name: format!("canary-{run_id}"),
                interval: plan.evaluation_interval,
                rules,
            },
            sources,
            arms: plan.arms.clone(),
        })
    }

    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The rules evaluated every `interval` instead of the plan's evaluation interval.
    pub fn every(mut self, interval: Duration) -> CanaryRules {
        self.group.interval = interval;
        self
    }

    pub fn group(&self) -> &RuleGroup {
        &self.group
    }

    /// The rules file's name: `canary-<run id>.rules.yml`, the run id reduced to
    /// `[a-z0-9-]` so it is safe in any directory and matches a `*.rules.yml` glob.
    pub fn file_name(&self) -> String {
        format!("canary-{}.rules.yml", dns_label(&self.run_id, 200))
    }

    /// A Prometheus rules file (`rule_files:`), checked by `promtool check rules`.
    pub fn to_rules_file(&self) -> Result<String, RulesError> {
        #[derive(Serialize)]
        struct File<'a> {
            groups: [&'a RuleGroup; 1],
        }
        let yaml = to_yaml(
            "the rules file",
            &File {
                groups: [&self.group],
            },
        )?;
        Ok(format!(
            "# Generated by canary for run {}: one alert per guardrail, on the canary arm.\n# canary installs this file for the run and removes it afterwards.\n{yaml}",
            self.run_id
        ))
    }

    /// A `PrometheusRule` (monitoring.coreos.com/v1) for the Prometheus Operator. `meta.labels`
    /// must include whatever the Prometheus resource's `ruleSelector` matches.
    pub fn to_prometheus_rule(&self, meta: &PrometheusRuleMeta) -> Result<String, RulesError> {
        #[derive(Serialize)]
        struct Manifest<'a> {
            #[serde(rename = "apiVersion")]
            api_version: &'static str,
            kind: &'static str,
            metadata: Metadata<'a>,
            spec: Spec<'a>,
        }
        #[derive(Serialize)]
        struct Metadata<'a> {
            name: String,
            #[serde(skip_serializing_if = "Option::is_none")]
            namespace: Option<&'a str>,
            labels: BTreeMap<String, String>,
        }
        #[derive(Serialize)]
        struct Spec<'a> {
            groups: [&'a RuleGroup; 1],
        }
        let mut labels = BTreeMap::from([
            (
                "app.kubernetes.io/managed-by".to_owned(),
                "canary".to_owned(),
            ),
            ("canary-run".to_owned(), dns_label(&self.run_id, 63)),
        ]);
        labels.extend(meta.labels.clone());
        to_yaml(
            "the PrometheusRule manifest",
            &Manifest {
                api_version: "monitoring.coreos.com/v1",
                kind: "PrometheusRule",
                metadata: Metadata {
                    name: format!("canary-{}", dns_label(&self.run_id, 63 - "canary-".len())),
                    namespace: meta.namespace.as_deref(),
                    labels,
                },
                spec: Spec {
                    groups: [&self.group],
                },
            },
        )
    }

    /// The rule group as JSON, the body a Cortex/Mimir ruler accepts at
    /// `POST <ruler>/prometheus/config/v1/rules/<namespace>` (JSON is valid YAML there).
    pub fn to_ruler_json(&self) -> String {
        // Invariant: a RuleGroup is strings, durations as strings and string maps; serde_json
        // cannot fail on it.
        serde_json::to_string_pretty(&self.group).unwrap_or_default()
    }

    /// `promtool test rules` unit tests for the rules file named `rules_file` (relative to where
    /// the tests file is written): per guardrail, input series that breach on the canary for the
    /// guardrail's `for` and the alert firing at exactly the evaluation it should (and not one
    /// evaluation earlier), and a healthy canary — with a breaching baseline — that fires nothing.
    ///
    /// Input series are synthesised from the query's selectors and checked with the embedded
    /// evaluator; a guardrail whose query defeats that is listed in
    /// [`PromtoolTests::uncovered`] with the reason, never silently dropped.
    pub fn promtool_tests(&self, rules_file: &str) -> Result<PromtoolTests, RulesError> {
        promtool::generate(self, rules_file)
    }
}

/// Metadata of a rendered `PrometheusRule`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PrometheusRuleMeta {
    pub namespace: Option<String>,
    /// Extra labels, e.g. `release: prometheus` for a kube-prometheus-stack `ruleSelector`.
    pub labels: BTreeMap<String, String>,
}

fn to_yaml<T: Serialize>(what: &'static str, value: &T) -> Result<String, RulesError> {
    serde_norway::to_string(value).map_err(|e| RulesError::Render {
        what,
        detail: e.to_string(),
    })
}

/// The query scoped to `arm` on the run's clock (range windows compressed like the engine's),
/// as an instant-vector expression (a scalar query is wrapped in `vector()` so that
/// comparisons filter instead of failing to parse).
fn as_vector(query: &str, arm: &ArmSelector, time_scale: f64) -> Result<String, RewriteError> {
    let parsed = rewrite::scope_on_clock(query, arm, time_scale)?;
    let scoped = parsed.to_string();
    Ok(match parsed.value_type() {
        ValueType::Scalar => format!("vector({scoped})"),
        _ => scoped,
    })
}

/// A threshold as PromQL reads it.
fn number(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        format!("{v}")
    }
}

/// The condition under which the canary breaches: the negation of `must`, NaN excluded.
fn breach_expr(query: &str, g: &Guardrail, samples: Option<&(String, f64)>) -> String {
    let v = number(g.must.value);
    let q = format!("({query})");
    let mut expr = match g.must.op {
        Comparator::Lt => format!("{q} >= {v}"),
        Comparator::Le => format!("{q} > {v}"),
        Comparator::Gt => format!("{q} <= {v}"),
        Comparator::Ge => format!("{q} < {v}"),
        // `!= v` would fire on NaN (NaN != v is true); `< v or > v` is false for NaN.
        Comparator::Eq => format!("{q} < {v} or {q} > {v}"),
        Comparator::Ne => format!("{q} == {v}"),
    };
    if let Some((s, min)) = samples {
        expr = format!("({expr}) and on() (({s}) >= {})", number(*min));
    }
    if g.on_no_data == OnNoData::Fail {
        // No data is a breach: NaN, an empty result, or too few samples.
        expr = format!("({expr}) or on() ({q} != {q}) or on() absent({query})");
        if let Some((s, min)) = samples {
            expr = format!(
                "{expr} or on() (({s}) < {}) or on() absent({s})",
                number(*min)
            );
        }
    }
    expr
}

/// `ttfv_p95` → `CanaryTtfvP95`: a valid metric name (what Prometheus requires of an alert name).
pub fn alert_name(guardrail: &str) -> String {
    let mut out = String::from("Canary");
    for word in guardrail.split(|c: char| !c.is_ascii_alphanumeric()) {
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            out.push(first.to_ascii_uppercase());
            out.extend(chars);
        }
    }
    out
}

fn action_text(on_breach: OnBreach) -> &'static str {
    match on_breach {
        OnBreach::Rollback => "rolls back at once",
        OnBreach::SecurityRollback => "rolls back at once and pages (security)",
        OnBreach::BlockPromotion => "will not promote unless it passes at the decision",
        OnBreach::Warn => "only warns",
    }
}

fn annotations(
    plan: &Plan,
    run_id: &str,
    g: &Guardrail,
    canary_query: &str,
) -> BTreeMap<String, String> {
    let held = if g.for_.is_zero() {
        String::new()
    } else {
        format!(" for {}", duration::format(g.for_))
    };
    BTreeMap::from([
        (
            "summary".to_owned(),
            format!(
                "{} canary {}: {} breached{held} (must be {})",
                plan.service, plan.arms.canary.name, g.name, g.must
            ),
        ),
        (
            "description".to_owned(),
            format!(
                "Guardrail {} of canary run {run_id} must be {} on the canary arm {} {}; it breached{held}, so canary {}. Query: {canary_query}",
                g.name,
                g.must,
                plan.arms.canary.name,
                plan.arms.canary.selector,
                action_text(g.on_breach)
            ),
        ),
    ])
}

/// `text` reduced to a DNS label: lowercase `[a-z0-9-]`, no leading/trailing `-`, at most `max`
/// characters; never empty.
fn dns_label(text: &str, max: usize) -> String {
    let mut out: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    out.truncate(max);
    let trimmed = out.trim_matches('-');
    if trimmed.is_empty() {
        "run".to_owned()
    } else {
        trimmed.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_names_are_metric_names() {
        assert_eq!(alert_name("ttfv_p95"), "CanaryTtfvP95");
        assert_eq!(alert_name("db-pool utilisation"), "CanaryDbPoolUtilisation");
        assert_eq!(
            dns_label("2025-10-19T12:00:00Z_ab", 63),
            "2025-10-19t12-00-00z-ab"
        );
        assert_eq!(dns_label("___", 63), "run");
    }
}
