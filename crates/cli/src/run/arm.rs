//! What a run arms once its id and control API exist, and disarms when its final traffic change
//! is verified: the Grafana dashboard, the Prometheus alert rules routed through Alertmanager,
//! the embedded proxy's lease.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use canary_core::{OnBreach, Plan};
use canary_evidence::render::alerts::{AlertRule as EvidenceRule, AlertmanagerAlerts, Alerts};
use canary_evidence::render::dashboards::{Dashboards, GrafanaDashboard};
use canary_providers::grafana::{
    Dashboard, DashboardOptions, Datasource, GrafanaClient, GrafanaConfig, runbook_panels,
};
use canary_providers::rules::{
    CanaryRules, InstalledRuleGroup, InstalledRules, RuleFileInstaller, RuleFileInstallerConfig,
    RulerClient, RulerConfig, RulesError, severity_label,
};
use canary_providers::traffic::EmbeddedRouter;

use super::{Setup, Teardown};
use crate::config::Config;
use crate::config::settings::{AlertmanagerSettings, GrafanaSettings, MetricsSettings};

/// The rules a run installed, to remove when it ends.
pub type Armed = Arc<Mutex<Option<(Installer, Installed)>>>;

/// Where a run's rules go: a rules directory Prometheus loads, or a Mimir/Cortex ruler.
pub enum Installer {
    Dir(RuleFileInstaller),
    Ruler { client: RulerClient, url: String },
}

/// A run's installed rules, to hand back to [`Installer::remove`].
pub enum Installed {
    Dir(InstalledRules),
    Ruler {
        group: InstalledRuleGroup,
        url: String,
    },
}

impl Installer {
    async fn install(&self, rules: &CanaryRules) -> Result<Installed, RulesError> {
        Ok(match self {
            Installer::Dir(i) => Installed::Dir(i.install(rules).await?),
            Installer::Ruler { client, url } => Installed::Ruler {
                group: client.install(rules).await?,
                url: url.clone(),
            },
        })
    }

    async fn remove(&self, installed: &Installed) -> Result<(), RulesError> {
        match (self, installed) {
            (Installer::Dir(i), Installed::Dir(rules)) => i.remove(rules).await,
            (Installer::Ruler { client, .. }, Installed::Ruler { group, .. }) => {
                client.remove(group).await?;
                tracing::info!(namespace = %group.namespace, group = %group.group, "alert rules removed from the ruler");
                Ok(())
            }
            // One installer installs one kind.
            _ => Ok(()),
        }
    }

    /// Whether a ruler accepts the credential (a rules directory's existence is the
    /// preflight's own check).
    pub async fn check(&self) -> Result<(), RulesError> {
        match self {
            Installer::Dir(_) => Ok(()),
            Installer::Ruler { client, .. } => {
                client.is_loaded("canary-preflight").await.map(|_| ())
            }
        }
    }
}

impl Installed {
    /// Where the rules are, for the evidence and the log.
    fn location(&self) -> String {
        match self {
            Installed::Dir(rules) => rules.path.display().to_string(),
            Installed::Ruler { group, url } => {
                format!("ruler {url}, namespace {}", group.namespace)
            }
        }
    }

    fn group(&self) -> &str {
        match self {
            Installed::Dir(rules) => &rules.group,
            Installed::Ruler { group, .. } => &group.group,
        }
    }
}

/// The run's setup: push the dashboard (or say the live page serves instead) and arm the alert
/// rules (or say the engine evaluates every guardrail itself). The Grafana client that
/// annotates the dashboard goes into `dashboard`.
pub fn setup(
    config: &Config,
    plan: &Plan,
    armed: Armed,
    dashboard: Arc<OnceLock<GrafanaClient>>,
) -> anyhow::Result<Setup> {
    let installer = rules_installer(config)?;
    let path = AlertPath::of(config);
    let grafana = config.grafana.clone();
    let alertmanager = config.alertmanager.clone();
    let file = config.file.display().to_string();
    let plan = plan.clone();
    Ok(Box::new(move |run_id, control_url| {
        Box::pin(async move {
            let live = |why: String| Dashboards::Live {
                url: format!("{control_url}/"),
                why,
            };
            let dashboards = match &grafana {
                None => live(format!(
                    "no [grafana] section in {file}; the controller served the live dashboard"
                )),
                Some(g) => match push_dashboard(g, &plan, &run_id).await {
                    Ok((d, client)) => {
                        let _ = dashboard.set(client);
                        Dashboards::Grafana {
                            grafana_url: g.url.clone(),
                            dashboards: vec![d],
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "cannot push the Grafana dashboard");
                        live(format!(
                            "pushing the dashboard to {} failed ({e:#}); the controller served the live dashboard",
                            g.url
                        ))
                    }
                },
            };
            let alerts = arm_alerts(
                alertmanager.as_ref(),
                installer,
                &path,
                &plan,
                &run_id,
                &armed,
            )
            .await;
            Ok((dashboards, alerts))
        })
    }))
}

/// What undoes the run's arming once its final traffic change is verified: the proxy's lease
/// is released (so the dead man's switch does not undo a promotion), the rules removed.
pub fn teardown(lease: Option<Arc<EmbeddedRouter>>, armed: Armed) -> Teardown {
    Box::new(move || {
        Box::pin(async move {
            if let Some(router) = lease
                && let Err(err) = router.release_lease().await
            {
                tracing::warn!(error = %err, "cannot release the proxy lease");
            }
            let rules = armed.lock().ok().and_then(|mut g| g.take());
            if let Some((installer, rules)) = rules {
                // The installer logs the removal itself.
                if let Err(err) = installer.remove(&rules).await {
                    tracing::warn!(error = %err, "cannot remove the run's alert rules: remove group {} from {} by hand", rules.group(), rules.location())
                }
            }
        })
    })
}

/// Whether a run arms its alert rules, and where they go. The engine evaluates every guardrail
/// in any case; armed rules add Prometheus' own evaluation, routed by Alertmanager to the run's
/// webhook (where each alert acts as its guardrail's `on_breach`) and to the escalation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlertPath {
    /// Rules go into this directory, which the configured Prometheus loads (`rule_files`).
    RulesDir(std::path::PathBuf),
    /// Rules go into this Mimir/Cortex ruler.
    Ruler(String),
    /// No rules: the engine alone guards, for this reason.
    EngineOnly(String),
}

impl AlertPath {
    /// Rules are armed whenever Alertmanager and a Prometheus metric source are configured
    /// and there is somewhere to install them: `[alertmanager] rules_dir` or `ruler`.
    pub fn of(config: &Config) -> AlertPath {
        let Some(am) = &config.alertmanager else {
            return AlertPath::EngineOnly(format!(
                "no [alertmanager] section in {}",
                config.file.display()
            ));
        };
        if !matches!(config.metrics, Some(MetricsSettings::Prometheus(_))) {
            return AlertPath::EngineOnly(
                "the metric source is not Prometheus, which would evaluate the rules".into(),
            );
        }
        match (&am.rules_dir, &am.ruler) {
            (Some(dir), _) => AlertPath::RulesDir(dir.clone()),
            (None, Some(ruler)) => AlertPath::Ruler(ruler.url.clone()),
            (None, None) => AlertPath::EngineOnly(
                "no [alertmanager] rules_dir or ruler to install the rules into (`canary render rules` prints them)"
                    .into(),
            ),
        }
    }

    /// How a guardrail is guarded, for the preflight: `both (...)` when rules are armed, else
    /// `engine (...)`.
    pub fn guards(&self, on_breach: OnBreach) -> String {
        match self {
            AlertPath::RulesDir(_) | AlertPath::Ruler(_) => format!(
                "guarded by both: the engine, and its alert through Alertmanager ({})",
                match on_breach {
                    OnBreach::Rollback => "rolls back",
                    OnBreach::SecurityRollback => "rolls back and pages",
                    OnBreach::BlockPromotion => "fails the gate at the decision, no rollback",
                    OnBreach::Warn => "notifies only",
                }
            ),
            AlertPath::EngineOnly(_) => "guarded by the engine only (no alert rule armed)".into(),
        }
    }
}

/// The installer for the run's rules, when [`AlertPath::of`] arms them.
pub(super) fn rules_installer(config: &Config) -> anyhow::Result<Option<Installer>> {
    let Some(MetricsSettings::Prometheus(prometheus)) = &config.metrics else {
        return Ok(None);
    };
    let ruler = config.alertmanager.as_ref().and_then(|a| a.ruler.as_ref());
    Ok(match (AlertPath::of(config), ruler) {
        (AlertPath::RulesDir(dir), _) => Some(Installer::Dir(RuleFileInstaller::new(
            RuleFileInstallerConfig {
                dir,
                prometheus_url: prometheus.url.clone(),
                token: prometheus.token.clone(),
                timeout: prometheus.timeout,
            },
        )?)),
        (AlertPath::Ruler(url), Some(r)) => Some(Installer::Ruler {
            client: RulerClient::new(RulerConfig {
                url: r.url.clone(),
                prefix: r.api.clone(),
                namespace: r.namespace.clone(),
                tenant: r.tenant.clone(),
                token: prometheus.token.clone(),
                timeout: prometheus.timeout,
            })?,
            url,
        }),
        _ => None,
    })
}

/// Installs the run's alert rules when [`AlertPath::of`] arms them, and says what was armed. The engine evaluates every guardrail in any case; the rules add
/// Prometheus' own evaluation and Alertmanager's routing (escalation, callback).
async fn arm_alerts(
    alertmanager: Option<&AlertmanagerSettings>,
    installer: Option<Installer>,
    path: &AlertPath,
    plan: &Plan,
    run_id: &str,
    armed: &Armed,
) -> Alerts {
    let engine = |why: String| Alerts::Engine {
        why,
        guardrails: plan.guardrails.clone(),
    };
    let (Some(am), Some(installer)) = (alertmanager, installer) else {
        let why = match path {
            AlertPath::EngineOnly(why) => why.as_str(),
            AlertPath::RulesDir(_) | AlertPath::Ruler(_) => "no rules installer",
        };
        return engine(format!(
            "{why}: the engine evaluated every guardrail itself at its evaluation interval"
        ));
    };
    let rules = match CanaryRules::generate(plan, run_id) {
        Ok(r) => match am.rule_interval {
            Some(every) => r.every(every),
            None => r,
        },
        Err(e) => {
            return engine(format!(
                "the alert rules could not be generated ({e}); the engine evaluated every guardrail itself"
            ));
        }
    };
    match installer.install(&rules).await {
        Ok(done) => {
            let armed_alerts = Alerts::Alertmanager(AlertmanagerAlerts {
                alertmanager_url: am.url.clone(),
                rules_location: done.location(),
                rules: rules
                    .group()
                    .rules
                    .iter()
                    .map(|r| EvidenceRule {
                        alert: r.alert.clone(),
                        id: Some(format!("{}/{}", done.group(), r.alert)),
                        guardrail: r.labels.guardrail.clone(),
                        expr: r.expr.clone(),
                        for_: r.for_,
                        severity: severity_label(r.labels.severity).to_owned(),
                        action: r.labels.action.as_str().to_owned(),
                    })
                    .collect(),
                receiver: format!("canary webhook at {}/api/alertmanager", am.callback_listen),
                route: format!("canary_run=\"{run_id}\""),
            });
            if let Ok(mut slot) = armed.lock() {
                *slot = Some((installer, done));
            }
            armed_alerts
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot install the alert rules");
            engine(format!(
                "installing the alert rules failed ({e}); the engine evaluated every guardrail itself"
            ))
        }
    }
}

/// Pushes the run's dashboard (the runbook's six panels) to Grafana; returns it with the client
/// that annotates it.
async fn push_dashboard(
    g: &GrafanaSettings,
    plan: &Plan,
    run_id: &str,
) -> anyhow::Result<(GrafanaDashboard, GrafanaClient)> {
    let client = GrafanaClient::new(GrafanaConfig {
        url: g.url.clone(),
        token: g.token.clone(),
        folder_uid: g.folder.clone(),
        timeout: Duration::from_secs(15),
    })?;
    let dashboard = Dashboard::build(
        plan,
        run_id,
        &runbook_panels(),
        &DashboardOptions {
            datasource: Datasource::Variable,
            time_compression: (plan.time_scale > 1.0).then_some(plan.time_scale),
            refresh: Duration::from_secs(10),
        },
    )?;
    let pushed = client
        .push_dashboard(&dashboard, &format!("canary run {run_id}"))
        .await?;
    let panels = dashboard.panel_titles().map(str::to_owned).collect();
    Ok((
        GrafanaDashboard {
            uid: pushed.uid,
            title: dashboard.title,
            url: pushed.url,
            panels,
        },
        client,
    ))
}
