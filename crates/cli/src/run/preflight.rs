//! The preflight: everything a run needs, checked before any traffic is touched. Each
//! integration answers its own check (the router reads the split back, the metric source
//! answers, Grafana and Alertmanager their health, canary-load sends the burst's own request
//! once per user); this module only collects the answers into a typed table.

use std::time::Duration;

use canary_core::engine::Reading;
use canary_core::{OnBreach, OnNoData, choice};
use canary_evidence::Signer;
use canary_providers::alertmanager::AlertmanagerClient;
use canary_providers::grafana::{GrafanaClient, GrafanaConfig};
use canary_state::Store;
use serde::Serialize;

use super::arm::AlertPath;
use super::controller::now_ms;
use super::wiring::{self, Integrations};
use crate::config::Config;
use crate::config::settings::MetricsSettings;
use canary_providers::metrics::observe::observe;

choice! {
    /// What a preflight row checks.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
    #[serde(into = "&'static str")]
    pub enum CheckKind {
        Credentials = "credentials",
        SigningKey = "signing key",
        LoadBalancer = "load balancer",
        Metrics = "metrics",
        Grafana = "grafana",
        Alertmanager = "alertmanager",
        ApiToken = "api token",
        Guardrail = "guardrail",
        State = "state store",
        RunLock = "run lock",
        Cooldown = "cooldown",
    }
}

/// One row of the preflight table.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub check: CheckKind,
    pub target: String,
    pub pass: bool,
    pub detail: String,
}

impl Check {
    fn new(check: CheckKind, target: impl Into<String>, result: Result<String, String>) -> Check {
        let (pass, detail) = match result {
            Ok(d) => (true, d),
            Err(d) => (false, d),
        };
        Check {
            check,
            target: target.into(),
            pass,
            detail,
        }
    }
}

/// The checks that stop a run: every failed one, except an active cooldown the operator
/// overrides, and a held run lock the run will wait for (`--wait`).
pub fn blocking(checks: &[Check], override_cooldown: bool, waiting: bool) -> Vec<&Check> {
    checks
        .iter()
        .filter(|c| {
            !(c.pass
                || (c.check == CheckKind::Cooldown && override_cooldown)
                || (c.check == CheckKind::RunLock && waiting))
        })
        .collect()
}

/// Runs the preflight checks. Touches no traffic.
pub async fn preflight(config: &Config, integrations: &mut Integrations) -> Vec<Check> {
    let mut checks = vec![
        Check::new(
            CheckKind::Credentials,
            format!("{} variables", config.variables.len()),
            Ok("all set (values not shown)".into()),
        ),
        signing_key(config),
        load_balancer(integrations).await,
        metrics(config, integrations).await,
    ];
    if let Some(g) = &config.grafana {
        let result = match GrafanaClient::new(GrafanaConfig {
            url: g.url.clone(),
            token: g.token.clone(),
            folder_uid: g.folder.clone(),
            timeout: Duration::from_secs(10),
        }) {
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
        checks.push(Check::new(CheckKind::Grafana, g.url.clone(), result));
    }
    let path = AlertPath::of(config);
    if let Some(a) = &config.alertmanager {
        let result = match AlertmanagerClient::new(&a.url, a.token.clone(), Duration::from_secs(10))
        {
            Ok(client) => match client.ready().await {
                Ok(()) => rules_ready(config, &path).await,
                Err(e) => Err(e.to_string()),
            },
            Err(e) => Err(e.to_string()),
        };
        checks.push(Check::new(CheckKind::Alertmanager, a.url.clone(), result));
    }
    checks.extend(api_tokens(integrations).await);
    checks.extend(guardrails(config, integrations, &path).await);
    checks.extend(state(config).await);
    checks
}

fn signing_key(config: &Config) -> Check {
    let key = config
        .evidence
        .as_ref()
        .and_then(|e| e.signing_key.as_ref());
    Check::new(
        CheckKind::SigningKey,
        "[evidence] signing_key",
        match key {
            None => {
                Err("not configured: run `canary keygen` and set [evidence] signing_key".into())
            }
            Some(k) => Signer::from_secret(k)
                .map(|s| format!("public key {}", s.public_hex()))
                .map_err(|e| e.to_string()),
        },
    )
}

async fn load_balancer(integrations: &Integrations) -> Check {
    Check::new(
        CheckKind::LoadBalancer,
        integrations.router.name(),
        match integrations.router.get().await {
            Ok(split) if split.canary == 0 => Ok(format!("reachable: {split}")),
            Ok(split) => Err(format!(
                "the load balancer already sends {} % to the canary: finish or roll back that canary first (`canary traffic set 0`)",
                split.canary
            )),
            Err(e) => Err(e.to_string()),
        },
    )
}

/// Prometheus answers its build info; the embedded store needs a few scrapes (rates need more
/// than one sample), one interval apart.
async fn metrics(config: &Config, integrations: &mut Integrations) -> Check {
    let (target, result) = match (&config.metrics, integrations.scraper.is_some()) {
        (Some(settings @ MetricsSettings::Prometheus(config)), _) => {
            let result = match wiring::prometheus(settings) {
                Ok(Some(p)) => p
                    .build_info()
                    .await
                    .map(|b| format!("Prometheus API {}", b.version))
                    .map_err(|e| e.to_string()),
                Ok(None) => Err("not a Prometheus source".into()),
                Err(e) => Err(e.to_string()),
            };
            (config.url.clone(), result)
        }
        (
            Some(MetricsSettings::Embedded {
                scrape_interval,
                targets,
            }),
            true,
        ) => {
            let reports = scrape(integrations, *scrape_interval, 4).await;
            let down: Vec<String> = reports
                .iter()
                .filter(|r| !r.up)
                .map(|r| format!("{} ({})", r.url, r.error.clone().unwrap_or_default()))
                .collect();
            let result = if down.is_empty() {
                Ok(format!("{} targets up", reports.len()))
            } else {
                Err(format!("down: {}", down.join(", ")))
            };
            (format!("{} scrape targets", targets.len()), result)
        }
        _ => ("-".into(), Err("no metric source".into())),
    };
    Check::new(CheckKind::Metrics, target, result)
}

/// Scrapes the embedded store's targets `times` times, `interval` apart; the last reports.
async fn scrape(
    integrations: &mut Integrations,
    interval: Duration,
    times: usize,
) -> Vec<canary_providers::scrape::TargetReport> {
    let Some(scraper) = integrations.scraper.as_mut() else {
        return Vec::new();
    };
    let mut reports = scraper.scrape_once().await;
    for _ in 1..times {
        tokio::time::sleep(interval.min(Duration::from_secs(5))).await;
        reports = scraper.scrape_once().await;
    }
    reports
}

/// The burst's own request, once per user: every token must be accepted.
async fn api_tokens(integrations: &Integrations) -> Vec<Check> {
    let Some(scenario) = &integrations.scenario else {
        return Vec::new();
    };
    let mut once = scenario.clone();
    once.targeting = canary_load::Targeting::Lb;
    once.request_timeout = Duration::from_secs(15);
    match canary_load::check_users(&once).await {
        Ok(users) => users
            .into_iter()
            .map(|u| {
                let result = match (u.status, u.error) {
                    (Some(status), None) => Ok(format!("{status} as expected")),
                    (Some(status), Some(_)) if status != once.expect_status => Err(format!(
                        "answered {status} (expected {})",
                        once.expect_status
                    )),
                    (_, Some(error)) => Err(format!("failed: {}", error.as_str())),
                    (None, None) => Err("no answer".into()),
                };
                Check::new(CheckKind::ApiToken, u.user, result)
            })
            .collect(),
        Err(e) => vec![Check::new(
            CheckKind::ApiToken,
            once.base_url,
            Err(e.to_string()),
        )],
    }
}

/// Where the run's alert rules go: the rules directory must exist, the ruler must accept the
/// credential.
async fn rules_ready(config: &Config, path: &AlertPath) -> Result<String, String> {
    match path {
        AlertPath::Ruler(url) => match super::arm::rules_installer(config) {
            Ok(Some(installer)) => match installer.check().await {
                Ok(()) => Ok(format!(
                    "ready; the run's alert rules go into the ruler at {url} (the engine evaluates every guardrail too)"
                )),
                Err(e) => Err(format!("ready, but the ruler at {url} refused: {e}")),
            },
            Ok(None) => Err(format!(
                "the ruler at {url} needs [metrics] source = \"prometheus\""
            )),
            Err(e) => Err(format!("{e:#}")),
        },
        AlertPath::RulesDir(dir) if dir.is_dir() => Ok(format!(
            "ready; the run's alert rules go into {} (the engine evaluates every guardrail too)",
            dir.display()
        )),
        AlertPath::RulesDir(dir) => Err(format!(
            "ready, but the rules directory {} does not exist: create it (Prometheus' rule_files must match *.rules.yml in it) or fix [alertmanager] rules_dir",
            dir.display()
        )),
        AlertPath::EngineOnly(why) => Ok(format!(
            "ready; no alert rules armed ({why}): the engine alone guards every guardrail"
        )),
    }
}

/// How many times a missing baseline is read before the preflight fails on it.
const PREFLIGHT_READS: u32 = 3;

/// Every guardrail must return data for the baseline; each row says which path guards it
/// (the engine, or both the engine and its alert through Alertmanager).
async fn guardrails(
    config: &Config,
    integrations: &mut Integrations,
    path: &AlertPath,
) -> Vec<Check> {
    // The embedded store was scraped before the checks above, which take as long as the
    // service answers: two fresh samples, so a window shorter than that (a minute on the demo's
    // compressed clock) still holds data.
    if let Some(MetricsSettings::Embedded {
        scrape_interval, ..
    }) = &config.metrics
    {
        scrape(integrations, *scrape_interval, 2).await;
    }
    // A guardrail whose missing data counts for nothing does not hold the run up.
    let optional = |name: &str| {
        config.plan.guardrails.iter().any(|g| {
            g.name == name && (g.on_no_data == OnNoData::Ignore || g.on_breach == OnBreach::Warn)
        })
    };
    let missing = |r: &canary_core::engine::GuardrailReading| {
        !optional(&r.guardrail)
            && match &r.baseline {
                Reading::Value { value, .. } => !value.is_finite(),
                Reading::NoData => true,
                Reading::Error { .. } => false,
            }
    };
    // A window of sparse traffic can hold no sample for a moment: a missing baseline is read
    // again, a few times over an evaluation interval (at most 10 s apart), before it fails
    // the preflight. A wrong metric name still fails, a little later.
    let pause = config
        .plan
        .evaluation_interval
        .min(Duration::from_secs(10))
        .max(Duration::from_millis(200));
    let mut reads = 1;
    let mut round = observe(
        integrations.source.as_ref(),
        &integrations.guardrails,
        now_ms(),
    )
    .await;
    while reads < PREFLIGHT_READS && round.readings.iter().any(missing) {
        tokio::time::sleep(pause).await;
        if let Some(MetricsSettings::Embedded {
            scrape_interval, ..
        }) = &config.metrics
        {
            scrape(integrations, *scrape_interval, 1).await;
        }
        round = observe(
            integrations.source.as_ref(),
            &integrations.guardrails,
            now_ms(),
        )
        .await;
        reads += 1;
    }
    let again = if reads > 1 {
        format!(
            " (read {reads} times, {} apart)",
            canary_core::duration::Human(pause)
        )
    } else {
        String::new()
    };
    round
        .readings
        .iter()
        .map(|r| {
            let guardrail = config
                .plan
                .guardrails
                .iter()
                .find(|g| g.name == r.guardrail);
            let optional = optional(&r.guardrail);
            let result = match &r.baseline {
                Reading::Value { value, .. } if value.is_finite() => Ok(format!(
                    "baseline value {}",
                    canary_core::verdict::fmt_in(*value, guardrail.and_then(|g| g.unit.as_deref()))
                )),
                Reading::Value { .. } | Reading::NoData if optional => Ok(format!(
                    "no data for the baseline yet; it does not hold the run up ({})",
                    guardrail.map_or(String::new(), |g| if g.on_breach == OnBreach::Warn {
                        "on_breach = \"warn\"".to_owned()
                    } else {
                        "on_no_data = \"ignore\"".to_owned()
                    })
                )),
                Reading::Value { .. } => {
                    Err(format!("the baseline's value is NaN (no traffic?){again}"))
                }
                Reading::NoData => Err(format!(
                    "no data for the baseline{again}: check the metric names and the baseline selector"
                )),
                Reading::Error { message } => Err(message.clone()),
            };
            let guards = guardrail
                .map(|g| format!("; {}", path.guards(g.on_breach)))
                .unwrap_or_default();
            let result = result
                .map(|detail| format!("{detail}{guards}"))
                .map_err(|detail| format!("{detail}{guards}"));
            Check::new(CheckKind::Guardrail, r.guardrail.clone(), result)
        })
        .collect()
}

/// The run state store: reachable with its schema, and the service's run lock free.
async fn state(config: &Config) -> Vec<Check> {
    let location = config.state();
    let store = match Store::open(&location).await {
        Ok(store) => store,
        Err(e) => {
            let target = match &location {
                canary_state::Location::Embedded { state_dir } => {
                    state_dir.join(canary_state::FILE).display().to_string()
                }
                canary_state::Location::Postgres { .. } => "PostgreSQL".to_owned(),
            };
            return vec![Check::new(CheckKind::State, target, Err(e.to_string()))];
        }
    };
    let opened = Check::new(
        CheckKind::State,
        store.describe(),
        Ok(format!(
            "reachable, schema version {}",
            canary_state::SCHEMA_VERSION
        )),
    );
    let lock = Check::new(
        CheckKind::RunLock,
        config.plan.service.clone(),
        match store.holder(&config.plan.service).await {
            Ok(None) => Ok("free: no other controller runs this service".to_owned()),
            Ok(Some(held)) => Err(crate::run::lock::held_message(&held)),
            Err(e) => Err(e.to_string()),
        },
    );
    vec![opened, lock, cooldown(config, &store).await]
}

async fn cooldown(config: &Config, store: &Store) -> Check {
    let active = store
        .cooldown_active(&config.plan.service, now_ms(), config.cooldown)
        .await;
    Check::new(
        CheckKind::Cooldown,
        config.plan.service.clone(),
        match active {
            Ok(None) => Ok("not active".into()),
            Ok(Some(c)) => Err(format!(
                "active after the {} of {} until {}",
                c.verdict,
                c.run_id,
                canary_evidence::stamp::rfc3339(c.until)
            )),
            Err(e) => Err(e.to_string()),
        },
    )
}

/// The table on stderr, one row per check.
pub fn print_table(checks: &[Check]) {
    let w0 = checks
        .iter()
        .map(|c| c.check.as_str().len())
        .max()
        .unwrap_or(5);
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
            c.check.as_str(),
            c.target,
            c.detail
        );
    }
}
