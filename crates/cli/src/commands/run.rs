//! `canary preflight`, `canary run`, `canary resume`: the runbook against real infrastructure.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context, bail};
use canary_core::Plan;
use canary_core::engine::Reading;
use canary_evidence::render::alerts::{AlertRule as EvidenceRule, AlertmanagerAlerts, Alerts};
use canary_evidence::render::dashboards::{Dashboards, GrafanaDashboard};
use canary_evidence::{Bundle, History, Signer};
use canary_providers::rules::{
    CanaryRules, InstalledRules, RuleFileInstaller, RuleFileInstallerConfig,
};

use canary_providers::grafana::GrafanaClient;
use canary_providers::metrics::MetricSource;
use canary_providers::traffic::TrafficRouter;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::commands::load::{pin_proof, pins_by_header, probe_spec, scenario};
use crate::commands::validate::load_config;
use crate::config::settings::MetricsSettings;
use crate::config::{Config, Needs};
use crate::observe::{ScopedGuardrail, observe, scope_guardrails};
use crate::output::Format;
use crate::run::delegates::LoadDelegates;
use crate::run::wiring::{self, health_watch, lease_keeper};
use crate::run::{self, RunOptions, Wiring};

/// Check everything a run needs before touching traffic: credentials present (never shown),
/// each endpoint reachable and accepting its credential, each guardrail returning data for the
/// baseline, no cooldown. Prints a PASS/FAIL table; exits 1 on any FAIL.
#[derive(clap::Args)]
#[command(after_help = "Example:\n  canary preflight -c canary.toml")]
pub struct PreflightArgs {
    #[arg(short, long, default_value = "canary.toml")]
    config: PathBuf,
    #[arg(long, value_enum, default_value_t)]
    output: Format,
}

/// Run the canary: preflight, 5/95 split (verified), burst at T+5, guardrails every interval,
/// check log, snapshots, decision, promotion or rollback (verified), signed evidence bundle.
#[derive(clap::Args)]
#[command(after_help = "Examples:
  canary run -c canary.toml
  canary run -c canary.toml --commit .            commit the evidence bundle to this git repo
  canary run -c canary.toml --override-cooldown --reason \"fix verified in staging (INC-42)\"

While it runs: `canary status`, `canary abort --reason ...`, `canary approve` (manual approval).
Exit codes: 0 PROMOTE, 3 ROLLBACK, 4 INCONCLUSIVE, 1 error (traffic left as it was, or rolled back).")]
pub struct RunArgs {
    #[arg(short, long, default_value = "canary.toml")]
    config: PathBuf,
    /// Run even though the cooldown after a rollback is active.
    #[arg(long, requires = "reason")]
    override_cooldown: bool,
    /// Why the cooldown is overridden; recorded in the evidence.
    #[arg(long)]
    reason: Option<String>,
    /// Commit the sealed bundle to the git repository at this path.
    #[arg(long, value_name = "REPO")]
    commit: Option<PathBuf>,
}

/// Continue a run whose controller died, from its journal: the engine is rebuilt by replaying
/// every recorded input, the split re-applied and verified, and the run goes on — or rolls back
/// if its window has passed.
#[derive(clap::Args)]
#[command(after_help = "Examples:
  canary resume relay-20261126T101500Z-3f2a -c canary.toml
  canary resume relay-20261126T101500Z-3f2a          a demo run, from where `canary demo` ran")]
pub struct ResumeArgs {
    /// The run id (its evidence directory's name).
    run_id: String,
    #[arg(short, long, default_value = "canary.toml")]
    config: PathBuf,
    /// Where a demo run's state is (`canary demo --state-dir`); a demo run is resumed by
    /// starting its services again. A configured run's state directory is in its configuration.
    #[arg(long, default_value = crate::commands::demo::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    #[arg(long, value_enum, default_value_t)]
    output: Format,
}

/// One row of the preflight table.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub check: String,
    pub target: String,
    pub pass: bool,
    pub detail: String,
}

impl Check {
    fn new(check: &str, target: impl Into<String>, result: Result<String, String>) -> Check {
        let (pass, detail) = match result {
            Ok(d) => (true, d),
            Err(d) => (false, d),
        };
        Check {
            check: check.to_owned(),
            target: target.into(),
            pass,
            detail,
        }
    }
}

/// The integrations a run uses, built from the configuration.
struct Integrations {
    router: Arc<dyn TrafficRouter>,
    embedded: Option<Arc<canary_providers::traffic::EmbeddedRouter>>,
    source: Arc<dyn MetricSource>,
    scraper: Option<canary_providers::scrape::Scraper>,
    guardrails: Vec<ScopedGuardrail>,
}

fn integrations(config: &Config) -> anyhow::Result<Integrations> {
    let traffic = config.traffic.as_ref().context(
        "the configuration has no [traffic] section: canary needs a load balancer to split traffic",
    )?;
    let metrics = config
        .metrics
        .as_ref()
        .context("the configuration has no [metrics] section: guardrails need a metric source")?;
    let (router, embedded) = wiring::router(traffic)?;
    let (source, scraper) = wiring::source(metrics, &config.plan)?;
    let guardrails = scope_guardrails(&config.plan, None)?;
    Ok(Integrations {
        router,
        embedded,
        source,
        scraper,
        guardrails,
    })
}

/// Runs the preflight checks. Touches no traffic.
async fn preflight(config: &Config, integrations: &mut Integrations) -> Vec<Check> {
    let mut checks = Vec::new();
    checks.push(Check::new(
        "credentials",
        format!("{} variables", config.variables.len()),
        Ok("all set (values not shown)".into()),
    ));
    checks.push(Check::new(
        "signing key",
        "[evidence] signing_key",
        match config
            .evidence
            .as_ref()
            .and_then(|e| e.signing_key.as_ref())
        {
            None => {
                Err("not configured: run `canary keygen` and set [evidence] signing_key".into())
            }
            Some(k) => Signer::from_secret(k)
                .map(|s| format!("public key {}", s.public_hex()))
                .map_err(|e| e.to_string()),
        },
    ));
    checks.push(Check::new(
        "load balancer",
        integrations.router.name(),
        match integrations.router.get().await {
            Ok(split) if split.canary == 0 => Ok(format!("reachable: {split}")),
            Ok(split) => Err(format!(
                "the load balancer already sends {} % to the canary: finish or roll back that canary first (`canary traffic set 0`)",
                split.canary
            )),
            Err(e) => Err(e.to_string()),
        },
    ));
    // Metrics: Prometheus answers buildinfo; the embedded store needs one scrape.
    let metrics_target = match &config.metrics {
        Some(MetricsSettings::Prometheus { url, .. }) => url.clone(),
        Some(MetricsSettings::Embedded { targets, .. }) => {
            format!("{} scrape targets", targets.len())
        }
        None => "-".into(),
    };
    let metrics_check = match (&config.metrics, integrations.scraper.as_mut()) {
        (Some(m), _) if matches!(m, MetricsSettings::Prometheus { .. }) => {
            match wiring::prometheus(m) {
                Ok(Some(p)) => p
                    .build_info()
                    .await
                    .map(|b| format!("Prometheus API {}", b.version))
                    .map_err(|e| e.to_string()),
                Ok(None) => Err("not a Prometheus source".into()),
                Err(e) => Err(e.to_string()),
            }
        }
        (_, Some(scraper)) => {
            // Rates need more than one sample: scrape a few times, one interval apart.
            let interval = match &config.metrics {
                Some(MetricsSettings::Embedded {
                    scrape_interval, ..
                }) => *scrape_interval,
                _ => Duration::from_secs(1),
            };
            let mut reports = scraper.scrape_once().await;
            for _ in 0..3 {
                tokio::time::sleep(interval.min(Duration::from_secs(5))).await;
                reports = scraper.scrape_once().await;
            }
            let down: Vec<String> = reports
                .iter()
                .filter(|r| !r.up)
                .map(|r| format!("{} ({})", r.url, r.error.clone().unwrap_or_default()))
                .collect();
            if down.is_empty() {
                Ok(format!("{} targets up", reports.len()))
            } else {
                Err(format!("down: {}", down.join(", ")))
            }
        }
        _ => Err("no metric source".into()),
    };
    checks.push(Check::new("metrics", metrics_target, metrics_check));
    if let Some(g) = &config.grafana {
        let client = canary_providers::grafana::GrafanaClient::new(
            canary_providers::grafana::GrafanaConfig {
                url: g.url.clone(),
                token: g.token.clone(),
                folder_uid: g.folder.clone(),
                timeout: Duration::from_secs(10),
            },
        );
        let result = match client {
            Ok(c) => match c.health().await {
                Ok(_) => c
                    .check_auth()
                    .await
                    .map(|_| "healthy, token accepted".to_owned())
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            },
            Err(e) => Err(e.to_string()),
        };
        checks.push(Check::new("grafana", g.url.clone(), result));
    }
    if let Some(a) = &config.alertmanager {
        let http = reqwest::Client::new();
        let mut req = http.get(format!("{}/-/ready", a.url.trim_end_matches('/')));
        if let Some(t) = &a.token {
            req = req.bearer_auth(t.expose());
        }
        let result = match req.timeout(Duration::from_secs(10)).send().await {
            Ok(r) if r.status().is_success() => Ok("ready".to_owned()),
            Ok(r) => Err(format!("answered {}", r.status())),
            Err(e) => Err(format!("unreachable: {e}")),
        };
        checks.push(Check::new("alertmanager", a.url.clone(), result));
    }
    if let Some(load) = &config.load {
        let http = reqwest::Client::new();
        for u in &load.users {
            let body = load.body.replace("{{user}}", &u.name).replace(
                "{{query}}",
                load.queries.first().map_or("preflight", String::as_str),
            );
            let result = http
                .request(
                    reqwest::Method::from_bytes(load.method.as_bytes())
                        .unwrap_or(reqwest::Method::POST),
                    format!("{}{}", load.url.trim_end_matches('/'), load.path),
                )
                .bearer_auth(u.token.expose())
                .header("accept", "application/json")
                .header("content-type", "application/json")
                .body(body)
                .timeout(Duration::from_secs(15))
                .send()
                .await;
            let result = match result {
                Ok(r) if r.status().as_u16() == load.expect_status => {
                    Ok(format!("{} as expected", r.status()))
                }
                Ok(r) => Err(format!(
                    "answered {} (expected {})",
                    r.status(),
                    load.expect_status
                )),
                Err(e) => Err(format!("unreachable: {e}")),
            };
            checks.push(Check::new("api token", u.name.clone(), result));
        }
    }
    let round = observe(
        integrations.source.as_ref(),
        &integrations.guardrails,
        run::controller::now_ms(),
    )
    .await;
    for r in &round.readings {
        let result = match &r.baseline {
            Reading::Value { value, .. } if value.is_finite() => Ok(format!(
                "baseline value {}",
                canary_core::verdict::fmt_value(*value)
            )),
            Reading::Value { .. } => Err("the baseline's value is NaN (no traffic?)".into()),
            Reading::NoData => Err(
                "no data for the baseline: check the metric names and the baseline selector".into(),
            ),
            Reading::Error { message } => Err(message.clone()),
        };
        checks.push(Check::new("guardrail", r.guardrail.clone(), result));
    }
    let cooldown = History::open(&config.state_dir)
        .map_err(anyhow::Error::from)
        .and_then(|h| {
            Ok(h.cooldown_active(
                &config.plan.service,
                run::controller::now_ms(),
                config.cooldown,
            )?)
        });
    checks.push(Check::new(
        "cooldown",
        config.plan.service.clone(),
        match cooldown {
            Ok(None) => Ok("not active".into()),
            Ok(Some(c)) => Err(format!(
                "active after the {} of {} until {}",
                c.verdict,
                c.run_id,
                canary_evidence::stamp::rfc3339(c.until)
            )),
            Err(e) => Err(e.to_string()),
        },
    ));
    checks
}

fn print_table(checks: &[Check]) {
    let w0 = checks.iter().map(|c| c.check.len()).max().unwrap_or(5);
    let w1 = checks
        .iter()
        .map(|c| c.target.chars().count())
        .max()
        .unwrap_or(6)
        .min(48);
    for c in checks {
        eprintln!(
            "  {}  {:<w0$}  {:<w1$}  {}",
            if c.pass { "PASS" } else { "FAIL" },
            c.check,
            c.target,
            c.detail
        );
    }
}

pub async fn preflight_cmd(args: PreflightArgs) -> anyhow::Result<i32> {
    let config = load_config(&args.config, Needs::ALL)?;
    let mut integrations = integrations(&config)?;
    let checks = preflight(&config, &mut integrations).await;
    let failed = checks.iter().filter(|c| !c.pass).count();
    match args.output {
        Format::Json => outln!("{}", serde_json::to_string_pretty(&checks)?),
        Format::Text => {
            print_table(&checks);
            eprintln!(
                "{}",
                if failed == 0 {
                    "preflight: PASS — nothing was changed".to_owned()
                } else {
                    format!("preflight: FAIL ({failed} check(s)) — nothing was changed")
                }
            );
        }
    }
    Ok(if failed == 0 { 0 } else { 1 })
}

/// Everything but the plan-specific parts of a run's wiring, shared by `run` and `resume`.
async fn wiring_for(
    config: &Config,
    mut integrations: Integrations,
    plan: &Plan,
) -> anyhow::Result<Wiring> {
    let evidence = config.evidence.as_ref().context("no evidence settings")?;
    let key = evidence
        .signing_key
        .as_ref()
        .context("no signing key: run `canary keygen` and set [evidence] signing_key")?;
    let signer = Signer::from_secret(key)?;
    let mut background = Vec::new();
    if let Some(scraper) = integrations.scraper.take() {
        background.push(tokio::spawn(scraper.run(std::future::pending::<()>())));
    }
    let (events_tx, events_rx) = mpsc::channel(16);
    // What the run arms and must disarm afterwards: the proxy's lease, the installed rules.
    let lease_router = integrations.embedded.clone();
    if let Some(embedded) = &integrations.embedded {
        let lease = match &config.traffic {
            Some(crate::config::settings::TrafficSettings::Embedded { lease, .. }) => *lease,
            _ => Duration::from_secs(15),
        };
        background.push(lease_keeper(embedded.clone(), lease));
        background.push(health_watch(embedded.clone(), events_tx));
    }
    let installed: Arc<std::sync::Mutex<Option<(RuleFileInstaller, InstalledRules)>>> =
        Arc::default();
    let installed_for_teardown = installed.clone();
    let teardown: run::Teardown = Box::new(move || {
        Box::pin(async move {
            if let Some(router) = lease_router
                && let Err(err) = router.release_lease().await
            {
                tracing::warn!(error = %err, "cannot release the proxy lease");
            }
            let rules = installed_for_teardown
                .lock()
                .ok()
                .and_then(|mut g| g.take());
            if let Some((installer, rules)) = rules {
                match installer.remove(&rules).await {
                    Ok(()) => {
                        tracing::info!(target: "canary", group = %rules.group, "alert rules removed")
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "cannot remove the run's alert rules: remove {} by hand", rules.path.display())
                    }
                }
            }
        })
    });
    let rules_installer = match (&config.alertmanager, &config.metrics) {
        (
            Some(am),
            Some(MetricsSettings::Prometheus {
                url,
                token,
                timeout,
            }),
        ) => am
            .rules_dir
            .as_ref()
            .map(|dir| {
                RuleFileInstaller::new(RuleFileInstallerConfig {
                    dir: dir.clone(),
                    prometheus_url: url.clone(),
                    token: token.clone(),
                    timeout: *timeout,
                })
            })
            .transpose()?,
        _ => None,
    };
    let alertmanager = config.alertmanager.clone();
    let notifier = wiring::notifier(&config.notify)?.map(Arc::new);
    let load = config.load.as_ref();
    let pins = load.is_some_and(|l| pins_by_header(config, l, l.target, plan.probes));
    let proof = pin_proof(integrations.embedded.as_deref(), pins).await?;
    let grafana = config.grafana.clone();
    let dashboard: Arc<OnceLock<GrafanaClient>> = Arc::default();
    let plan_for_setup = plan.clone();
    Ok(Wiring {
        plan: plan.clone(),
        guardrails: integrations.guardrails,
        router: integrations.router,
        source: integrations.source,
        delegates: Arc::new(LoadDelegates {
            scenario: load.map(|l| scenario(config, l, proof.as_ref())),
            probes: load.and_then(|l| probe_spec(config, l, proof.as_ref())),
            notify: notifier.map(|n| wiring::notify_fn(n, config.plan.service.clone(), None)),
            dashboard: dashboard.clone(),
        }),
        signer,
        evidence_dir: evidence.dir.clone(),
        state_dir: config.state_dir.clone(),
        cooldown: config.cooldown,
        config_sha256: config.sha256.clone(),
        // Alertmanager must reach the controller at a known address; otherwise any free port.
        control_listen: config
            .alertmanager
            .as_ref()
            .map_or_else(|| "127.0.0.1:0".parse(), |a| Ok(a.callback_listen))?,
        alert_token: config
            .alertmanager
            .as_ref()
            .and_then(|a| a.callback_token.clone()),
        background,
        setup: Box::new(move |run_id, control_url| {
            Box::pin(async move {
                let dashboards = match &grafana {
                    None => Dashboards::Live {
                        url: format!("{control_url}/"),
                        why: "no [grafana] section in canary.toml; the controller served the live dashboard".into(),
                    },
                    Some(g) => match push_dashboard(g, &plan_for_setup, &run_id).await {
                        Ok((d, client)) => {
                            let _ = dashboard.set(client);
                            Dashboards::Grafana {
                                grafana_url: g.url.clone(),
                                dashboards: vec![d],
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %format!("{e:#}"), "cannot push the Grafana dashboard");
                            Dashboards::Live {
                                url: format!("{control_url}/"),
                                why: format!("pushing the dashboard to {} failed ({e:#}); the controller served the live dashboard", g.url),
                            }
                        }
                    },
                };
                let alerts = arm_alerts(
                    alertmanager.as_ref(),
                    rules_installer,
                    &plan_for_setup,
                    &run_id,
                    &installed,
                )
                .await;
                Ok((dashboards, alerts))
            })
        }),
        events: Some(events_rx),
        teardown: Some(teardown),
    })
}

/// Installs the run's alert rules when Alertmanager and a rules directory are configured, and
/// says what was armed. The engine evaluates every guardrail in any case; the rules add
/// Prometheus' own evaluation and Alertmanager's routing (escalation, callback).
async fn arm_alerts(
    alertmanager: Option<&crate::config::settings::AlertmanagerSettings>,
    installer: Option<RuleFileInstaller>,
    plan: &Plan,
    run_id: &str,
    installed: &std::sync::Mutex<Option<(RuleFileInstaller, InstalledRules)>>,
) -> Alerts {
    let engine = |why: String| Alerts::Engine {
        why,
        guardrails: plan.guardrails.clone(),
    };
    let Some(am) = alertmanager else {
        return engine("no [alertmanager] section in canary.toml: the engine evaluated every guardrail itself at its evaluation interval".into());
    };
    let Some(installer) = installer else {
        return engine(format!(
            "Alertmanager at {} is configured but no [alertmanager] rules_dir (and Prometheus metrics source) to install rules into: the engine evaluated every guardrail itself; `canary render rules` prints the rules",
            am.url
        ));
    };
    let rules = match CanaryRules::generate(plan, run_id) {
        Ok(r) => r,
        Err(e) => {
            return engine(format!(
                "the alert rules could not be generated ({e}); the engine evaluated every guardrail itself"
            ));
        }
    };
    match installer.install(&rules).await {
        Ok(done) => {
            let armed = Alerts::Alertmanager(AlertmanagerAlerts {
                alertmanager_url: am.url.clone(),
                rules_location: done.path.display().to_string(),
                rules: rules
                    .group()
                    .rules
                    .iter()
                    .map(|r| EvidenceRule {
                        alert: r.alert.clone(),
                        id: Some(format!("{}/{}", done.group, r.alert)),
                        guardrail: r.labels.get("guardrail").cloned().unwrap_or_default(),
                        expr: r.expr.clone(),
                        for_: r.for_,
                        severity: r.labels.get("severity").cloned().unwrap_or_default(),
                        action: r.labels.get("action").cloned().unwrap_or_default(),
                    })
                    .collect(),
                receiver: format!("canary webhook at {}/api/alertmanager", am.callback_listen),
                route: format!("canary_run=\"{run_id}\""),
            });
            if let Ok(mut slot) = installed.lock() {
                *slot = Some((installer, done));
            }
            armed
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
    g: &crate::config::settings::GrafanaSettings,
    plan: &Plan,
    run_id: &str,
) -> anyhow::Result<(GrafanaDashboard, GrafanaClient)> {
    use canary_providers::grafana::{
        Dashboard, DashboardOptions, Datasource, GrafanaConfig, runbook_panels,
    };
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
    let panels = dashboard.model["panels"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter_map(|p| p["title"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
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

pub async fn run_cmd(args: RunArgs) -> anyhow::Result<i32> {
    let config = load_config(&args.config, Needs::ALL)?;
    let mut integrations = integrations(&config)?;
    let checks = preflight(&config, &mut integrations).await;
    print_table(&checks);
    let failed: Vec<&Check> = checks
        .iter()
        .filter(|c| !(c.pass || (c.check == "cooldown" && args.override_cooldown)))
        .collect();
    if !failed.is_empty() {
        bail!(
            "preflight failed ({} check(s)); no traffic was touched",
            failed.len()
        );
    }
    let plan = config.plan.clone();
    let wiring = wiring_for(&config, integrations, &plan).await?;
    let options = RunOptions {
        override_cooldown: if args.override_cooldown {
            args.reason.clone()
        } else {
            None
        },
        commit: args.commit.clone(),
    };
    let finished = run::execute(wiring, options).await?;
    print_finished(&finished, Format::Text);
    Ok(finished.verdict.exit_code())
}

pub async fn resume_cmd(args: ResumeArgs) -> anyhow::Result<i32> {
    if crate::commands::demo::is_demo_run(&args.state_dir, &args.run_id) {
        return crate::commands::demo::resume(&args.state_dir, &args.run_id, args.output).await;
    }
    let config = load_config(&args.config, Needs::ALL)?;
    let evidence = config.evidence.as_ref().context("no evidence settings")?;
    let history = History::open(&config.state_dir)?;
    let dir = match history.get(&args.run_id)? {
        Some(r) => r
            .bundle
            .parent()
            .map(PathBuf::from)
            .unwrap_or_else(|| evidence.dir.clone()),
        None => evidence.dir.clone(),
    };
    let (bundle, journal_writer, journal) = Bundle::resume(&dir, &args.run_id)
        .with_context(|| format!("cannot resume run {}", args.run_id))?;
    let plan = journal.header.plan.clone();
    // The journal's plan is what the run enforces; wiring built from a configuration that says
    // otherwise would query guardrails the engine does not know, or miss ones it does.
    let differences = plan.differences(&config.plan);
    if !differences.is_empty() {
        bail!(
            "{} is not the configuration run {} started with; its plan differs from the one in the journal:\n  - {}\nresume with the configuration the run started with (the bundle's journal.jsonl holds its plan)",
            args.config.display(),
            args.run_id,
            differences.join("\n  - ")
        );
    }
    // Replayed before anything is touched: a decided run is refused here.
    let mut resumed = run::Resumed::rebuild(bundle, journal_writer, &journal)?;
    let integrations = integrations(&config)?;
    resumed.current_weight = integrations.router.get().await.map_or(0, |s| s.canary);
    let wiring = wiring_for(&config, integrations, &plan).await?;
    let finished = run::resume(wiring, resumed).await?;
    print_finished(&finished, args.output);
    Ok(finished.verdict.exit_code())
}

/// The end of a run for people (verdict, reasons, evidence) or as JSON.
fn print_finished(finished: &run::Finished, output: Format) {
    match output {
        Format::Json => outln!("{}", finished.json()),
        Format::Text => {
            outln!(
                "{} {} — evidence {}",
                finished.run_id,
                finished.verdict.name(),
                finished.bundle.display()
            );
            for r in finished.verdict.reasons() {
                outln!("  - {r}");
            }
        }
    }
}
