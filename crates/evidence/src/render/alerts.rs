//! `CANARY_ALERTS_<ts>.txt`: what was armed to roll the canary back — the alert rules canary
//! installed and the Alertmanager route/receiver that calls it back, or, without Alertmanager,
//! the guardrails the engine enforced itself.

use std::time::Duration;

use canary_core::duration::Human;
use canary_core::plan::{Guardrail, OnNoData};

use super::{RunContext, table};

/// One alert rule canary installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertRule {
    /// The alert's name (`CanaryTtfvP95Breach`).
    pub alert: String,
    /// The rule's id where the ruler gives one (group/name, ruler id).
    pub id: Option<String>,
    pub guardrail: String,
    /// The rule's PromQL, scoped to the canary.
    pub expr: String,
    pub for_: Duration,
    pub severity: String,
    /// What a firing alert does: `rollback`, `security-rollback`, ...
    pub action: String,
}

/// Alerting through Prometheus rules and Alertmanager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertmanagerAlerts {
    pub alertmanager_url: String,
    /// Where the rules went: a rules file path, a ruler namespace, ...
    pub rules_location: String,
    pub rules: Vec<AlertRule>,
    /// The receiver that calls canary back.
    pub receiver: String,
    /// The route's matchers (`canary_run="..."`).
    pub route: String,
}

/// What was armed to roll the canary back.
#[derive(Debug, Clone, PartialEq)]
pub enum Alerts {
    Alertmanager(AlertmanagerAlerts),
    /// No Alertmanager: the engine evaluated the guardrails itself. `why` says why.
    Engine {
        why: String,
        guardrails: Vec<Guardrail>,
    },
}

/// Renders the alerts artifact.
pub fn alerts(ctx: &RunContext, a: &Alerts) -> String {
    let mut out = ctx.header("CANARY ALERTS — what was armed to roll the canary back");
    match a {
        Alerts::Alertmanager(am) => {
            out.push_str(&format!(
                "alertmanager  {}\nreceiver      {}\nroute         {}\nrules         {} ({} rules)\n\n",
                am.alertmanager_url,
                am.receiver,
                am.route,
                am.rules_location,
                am.rules.len()
            ));
            let mut rows = vec![vec![
                "alert".to_owned(),
                "id".to_owned(),
                "guardrail".to_owned(),
                "for".to_owned(),
                "severity".to_owned(),
                "action".to_owned(),
            ]];
            rows.extend(am.rules.iter().map(|r| {
                vec![
                    r.alert.clone(),
                    r.id.clone().unwrap_or_else(|| "-".to_owned()),
                    r.guardrail.clone(),
                    Human(r.for_).to_string(),
                    r.severity.clone(),
                    r.action.clone(),
                ]
            }));
            out.push_str(&table(&rows));
            out.push_str("\nrule expressions:\n");
            for r in &am.rules {
                out.push_str(&format!("  {}: {}\n", r.alert, r.expr));
            }
        }
        Alerts::Engine { why, guardrails } => {
            out.push_str(&format!(
                "alertmanager  not used: {why}\narmed by      the canary engine itself, evaluating every guardrail for both arms\n\n"
            ));
            let mut rows = vec![vec![
                "guardrail".to_owned(),
                "must".to_owned(),
                "for".to_owned(),
                "action".to_owned(),
                "no data".to_owned(),
            ]];
            rows.extend(guardrails.iter().map(|g| {
                vec![
                    g.name.clone(),
                    g.must.to_string(),
                    Human(g.for_).to_string(),
                    g.on_breach.as_str().to_owned(),
                    match g.on_no_data {
                        OnNoData::Inconclusive => "inconclusive",
                        OnNoData::Fail => "fail",
                        OnNoData::Ignore => "ignore",
                    }
                    .to_owned(),
                ]
            }));
            out.push_str(&table(&rows));
            out.push_str("\nqueries (unscoped; evaluated once per arm):\n");
            for g in guardrails {
                out.push_str(&format!("  {}: {}\n", g.name, g.query));
            }
        }
    }
    out
}
