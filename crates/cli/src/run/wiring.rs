//! The run's wiring, all of it: from a configuration to the integrations it names (the
//! traffic router with the embedded proxy's lease and health watch, the metric source with the
//! embedded scraper, the burst and the probes from `[load]`, the notifiers), and from those to
//! the [`Wiring`] the controller runs on. `canary run`, `canary resume`, `canary demo` and
//! `canary load` all build through here.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use canary_core::ArmRole;
use canary_evidence::Signer;
use canary_load::{
    CanaryRoute, PinProof, ProbeSpec, ProbeUser, SampleRule, Scenario, Targeting, User,
};
use canary_promql::{ArmSelector, EvalOptions, Store};
use canary_providers::metrics::MetricSource;
use canary_providers::metrics::embedded::EmbeddedSource;
use canary_providers::metrics::prometheus::PrometheusSource;
use canary_providers::notify::{self, Notifier};
use canary_providers::scrape::{ScrapeConfig, ScrapeTarget, Scraper};
use canary_providers::traffic::{
    CommandConfig, CommandRouter, EmbeddedRouter, EmbeddedRouterConfig, HaproxyRouter, NginxRouter,
    TrafficRouter,
};
use tokio::sync::mpsc;

use super::Wiring;
use super::delegates::LoadDelegates;
use crate::config::Config;
use crate::config::settings::{
    LoadSettings, LoadTarget, MetricsSettings, NotifyChannel, NotifySettings, TrafficSettings,
};
use canary_core::Plan;
use canary_providers::metrics::observe::{
    ScopedComparison, ScopedGuardrail, scope_comparisons, scope_guardrails,
};

/// A router, and the embedded proxy's concrete router when that is what it is.
pub type Routers = (Arc<dyn TrafficRouter>, Option<Arc<EmbeddedRouter>>);

/// The router for `settings`. For the embedded proxy, the concrete router is returned too (the
/// controller renews its lease and watches arm health through it).
pub fn router(settings: &TrafficSettings) -> anyhow::Result<Routers> {
    Ok(match settings {
        TrafficSettings::Command {
            set,
            verify,
            verify_regex,
            env,
            timeout,
        } => (
            Arc::new(CommandRouter::new(CommandConfig {
                set_template: set.clone(),
                verify_template: verify.clone(),
                verify_regex: verify_regex.clone(),
                timeout: *timeout,
                env: env
                    .iter()
                    .map(|(k, v)| (k.clone(), v.expose().to_owned()))
                    .collect(),
            })?),
            None,
        ),
        TrafficSettings::Haproxy(config) => (Arc::new(HaproxyRouter::new(config.clone())?), None),
        TrafficSettings::Nginx(config) => (Arc::new(NginxRouter::new(config.clone())?), None),
        TrafficSettings::Embedded { admin, token, .. } => {
            let router = Arc::new(EmbeddedRouter::new(EmbeddedRouterConfig {
                admin_url: format!("http://{admin}"),
                token: token.expose().to_owned(),
            })?);
            (router.clone() as Arc<dyn TrafficRouter>, Some(router))
        }
    })
}

/// The Prometheus-compatible source for `settings`, when it is one.
pub fn prometheus(settings: &MetricsSettings) -> anyhow::Result<Option<PrometheusSource>> {
    Ok(match settings {
        MetricsSettings::Prometheus(config) => Some(PrometheusSource::new(config.clone())?),
        MetricsSettings::Embedded { .. } => None,
    })
}

/// The metric source for `settings`. The embedded one comes with its scraper, which the caller
/// runs for the length of the run (`time_scale` compresses the lookback delta like the plan).
pub fn source(
    settings: &MetricsSettings,
    plan: &Plan,
) -> anyhow::Result<(Arc<dyn MetricSource>, Option<Scraper>)> {
    if let Some(p) = prometheus(settings)? {
        return Ok((Arc::new(p), None));
    }
    let MetricsSettings::Embedded {
        scrape_interval,
        targets,
    } = settings
    else {
        anyhow::bail!("unknown metrics source");
    };
    let labels_of = |arm: Option<ArmRole>| -> anyhow::Result<Vec<(String, String)>> {
        let Some(arm) = arm else {
            return Ok(Vec::new());
        };
        let selector = ArmSelector::parse(&plan.arms.get(arm).selector)?;
        let mut labels = selector.equality_labels();
        labels.push(("arm".into(), arm.to_string()));
        Ok(labels)
    };
    let mut scrape_targets = Vec::new();
    for t in targets {
        let mut labels = labels_of(t.arm)?;
        if !t.job.is_empty() {
            labels.push(("job".into(), t.job.clone()));
        }
        scrape_targets.push(ScrapeTarget {
            url: t.url.clone(),
            labels,
        });
    }
    let store = Arc::new(RwLock::new(Store::default()));
    let scraper = Scraper::new(
        ScrapeConfig {
            targets: scrape_targets,
            interval: *scrape_interval,
            timeout: (*scrape_interval).clamp(Duration::from_millis(200), Duration::from_secs(10)),
            retention: Some(plan.window() * 2 + Duration::from_secs(3600)),
        },
        store.clone(),
    )?;
    let scale = plan.time_scale.max(1.0);
    let source = EmbeddedSource::with_options(
        store,
        EvalOptions {
            lookback_delta: (300_000.0 / scale) as i64,
            default_subquery_step: (60_000.0 / scale).max(1.0) as i64,
        },
    );
    Ok((Arc::new(source), Some(scraper)))
}

/// The notifier for the configured channels; `None` without any.
pub fn notifier(settings: &[NotifySettings]) -> anyhow::Result<Option<Notifier>> {
    if settings.is_empty() {
        return Ok(None);
    }
    let mut n = Notifier::new(Duration::from_secs(10), notify::RetryPolicy::default());
    for s in settings {
        let channel: Box<dyn notify::Channel> = match &s.channel {
            NotifyChannel::Slack { webhook, channel } => {
                Box::new(notify::Slack::new(webhook.clone(), channel.clone())?)
            }
            NotifyChannel::PagerDuty { routing_key, url } => {
                Box::new(notify::PagerDuty::new(routing_key.clone(), url.clone())?)
            }
            NotifyChannel::Email {
                smtp,
                password,
                from,
                to,
            } => Box::new(notify::Email::new(notify::EmailConfig {
                smtp_url: smtp.clone(),
                password: password.clone(),
                from: from.clone(),
                to: to.clone(),
                timeout: Duration::from_secs(15),
            })?),
            NotifyChannel::Webhook { url } => Box::new(notify::Webhook::new(url.clone(), None)?),
        };
        n.subscribe(channel, &s.on);
    }
    Ok(Some(n))
}

/// A delegate `notify` function sending through `notifier` for the run `run_id` of `service`.
pub fn notify_fn(
    notifier: Arc<Notifier>,
    service: String,
    link: Option<String>,
) -> super::delegates::Notify {
    Arc::new(move |run_id: &str, notice: super::controller::Notice| {
        let notifier = notifier.clone();
        let title = format!(
            "{service} canary: {}",
            notice.text.lines().next().unwrap_or_default()
        );
        let mut message = notify::Message::new(
            notice.topic,
            notice.severity,
            service.clone(),
            run_id,
            title,
            notice.text,
            super::controller::now_ms(),
        )
        .with_guardrails(notice.guardrails)
        .with_incident(notice.incident);
        if let Some(outcome) = notice.outcome {
            message = message.with_outcome(outcome);
        }
        if let Some(link) = &link {
            message = message.with_link(link.clone());
        }
        Box::pin(async move {
            for d in notifier.notify(&message).await {
                tracing::debug!(delivery = ?d, "notification");
            }
        })
    })
}

/// The integrations a run uses, built from its configuration: what the preflight checks and
/// the run then drives.
pub struct Integrations {
    pub router: Arc<dyn TrafficRouter>,
    /// The embedded proxy's router with the lease the controller holds on it.
    pub embedded: Option<(Arc<EmbeddedRouter>, Duration)>,
    pub source: Arc<dyn MetricSource>,
    /// The embedded store's scraper; runs for the length of the run.
    pub scraper: Option<Scraper>,
    pub guardrails: Vec<ScopedGuardrail>,
    /// `[[compare]]`, scoped to each arm.
    pub comparisons: Vec<ScopedComparison>,
    /// The runbook's burst and the isolation probes, as `[load]` describes them.
    pub scenario: Option<Scenario>,
    pub probes: Option<ProbeSpec>,
}

impl Integrations {
    /// Builds every integration `config` names. Touches no traffic: the embedded proxy is
    /// only asked for its pin token, when load is pinned to the canary through it.
    pub async fn new(config: &Config) -> anyhow::Result<Integrations> {
        let traffic = config.traffic.as_ref().context(
            "the configuration has no [traffic] section: canary needs a load balancer to split traffic",
        )?;
        let metrics = config.metrics.as_ref().context(
            "the configuration has no [metrics] section: guardrails need a metric source",
        )?;
        let (router, embedded) = router(traffic)?;
        let (source, scraper) = source(metrics, &config.plan)?;
        let guardrails = scope_guardrails(&config.plan)?;
        let comparisons = scope_comparisons(&config.plan)?;
        let load = config.load.as_ref();
        let pins = load.is_some_and(|l| pins_by_header(config, l, l.target, config.plan.probes));
        let proof = pin_proof(embedded.as_deref(), pins).await?;
        let lease = match traffic {
            TrafficSettings::Embedded { lease, .. } => Some(*lease),
            _ => None,
        };
        Ok(Integrations {
            router,
            embedded: embedded.zip(lease),
            source,
            scraper,
            guardrails,
            comparisons,
            scenario: load.map(|l| scenario(config, l, proof.as_ref())),
            probes: load.and_then(|l| probe_spec(config, l, proof.as_ref())),
        })
    }

    /// The run's wiring over these integrations for `plan` (the configuration's, or the
    /// journal's on a resume): background tasks (scraping, the proxy's lease and health),
    /// notifiers, the evidence signer, and the setup that pushes dashboards and arms alerts.
    pub fn wire(mut self, config: &Config, plan: &Plan) -> anyhow::Result<Wiring> {
        let evidence = config.evidence.as_ref().context("no [evidence] settings")?;
        let key = evidence
            .signing_key
            .as_ref()
            .context("no signing key: run `canary keygen` and set [evidence] signing_key")?;
        let signer = Signer::from_secret(key)?;
        let mut background = Vec::new();
        if let Some(scraper) = self.scraper.take() {
            background.push(tokio::spawn(scraper.run(std::future::pending::<()>())));
        }
        let (events_tx, events_rx) = mpsc::channel(16);
        for check in &config.health {
            background.push(check.clone().watch(events_tx.clone()));
        }
        if let Some((embedded, lease)) = &self.embedded {
            background.push(embedded.clone().keep_lease(*lease));
            background.push(embedded.clone().watch_health(events_tx));
        }
        let armed = super::arm::Armed::default();
        let dashboard = Arc::default();
        let notifier = notifier(&config.notify)?.map(Arc::new);
        Ok(Wiring {
            plan: plan.clone(),
            guardrails: self.guardrails,
            comparisons: self.comparisons,
            router: self.router,
            source: self.source,
            delegates: Arc::new(LoadDelegates {
                scenario: self.scenario,
                probes: self.probes,
                notify: notifier.map(|n| notify_fn(n, plan.service.clone(), None)),
                dashboard: Arc::clone(&dashboard),
            }),
            signer,
            evidence_dir: evidence.dir.clone(),
            state_dir: config.state_dir.clone(),
            state: config.state(),
            lease: config.lease,
            cooldown: config.cooldown,
            config_sha256: config.sha256.clone(),
            // Alertmanager must reach the controller at a known address; otherwise any port.
            control_listen: config
                .alertmanager
                .as_ref()
                .map_or_else(|| "127.0.0.1:0".parse(), |a| Ok(a.callback_listen))?,
            alert_token: config
                .alertmanager
                .as_ref()
                .and_then(|a| a.callback_token.clone()),
            background,
            setup: super::arm::setup(config, plan, armed.clone(), dashboard)?,
            events: Some(events_rx),
            teardown: Some(super::arm::teardown(
                self.embedded.map(|(router, _)| router),
                armed,
            )),
        })
    }
}

/// How canary-targeted load reaches the canary: its own URL (`[arms.canary] url`) when
/// configured, else the embedded proxy's pin header (with its pin token) on the load
/// balancer's URL.
pub fn canary_route(config: &Config) -> CanaryRoute {
    match &config.canary_url {
        Some(url) => CanaryRoute::Url(url.clone()),
        None => CanaryRoute::PinHeader,
    }
}

/// The embedded proxy's pin token, from its admin API, when traffic goes through it: with it
/// pins count and every answer names its arm. Fails when load must be pinned to the canary by
/// header (`pins`, see [`pins_by_header`]) and there is no embedded proxy to pin through.
pub async fn pin_proof(
    embedded: Option<&EmbeddedRouter>,
    pins: bool,
) -> anyhow::Result<Option<PinProof>> {
    let Some(router) = embedded else {
        if pins {
            anyhow::bail!(
                "canary-targeted load and isolation probes are pinned to the canary through the \
                 embedded proxy, and [traffic] is not the embedded proxy: give the canary's own \
                 URL in [arms.canary] url, or send the burst with target = \"lb\""
            );
        }
        return Ok(None);
    };
    let access = router
        .pin_access()
        .await
        .context("cannot read the embedded proxy's pin token (admin API GET /pin)")?;
    Ok(Some(PinProof {
        header: access.proof_header,
        token: access.token,
    }))
}

/// Whether the burst or the probes pin requests to the canary by header: canary targeting, or
/// isolation probes, without the canary's own URL.
pub fn pins_by_header(
    config: &Config,
    load: &LoadSettings,
    target: LoadTarget,
    probes: bool,
) -> bool {
    let probing = probes && load.users.iter().filter(|u| u.marker.is_some()).count() >= 2;
    config.canary_url.is_none() && (target != LoadTarget::Lb || probing)
}

/// The runbook's burst as `[load]` describes it, judging sample sufficiency for the plan's
/// percentile and ratio guardrails at the first step's canary weight.
pub fn scenario(config: &Config, load: &LoadSettings, proof: Option<&PinProof>) -> Scenario {
    let users = load
        .users
        .iter()
        .map(|u| User {
            name: u.name.clone(),
            token: u.token.clone(),
        })
        .collect();
    let mut s = Scenario::runbook(load.url.clone(), users);
    s.method = load.method.clone();
    s.path = load.path.clone();
    s.body = Some(load.body.clone());
    s.queries = load.queries.clone();
    s.requests_per_user = load.requests_per_user;
    s.pause = load.pause;
    s.expect_status = load.expect_status;
    s.targeting = match load.target {
        LoadTarget::Lb => Targeting::Lb,
        LoadTarget::Canary => Targeting::Canary(canary_route(config)),
        LoadTarget::Both => Targeting::Both(canary_route(config)),
    };
    s.sample_rules = config
        .plan
        .guardrails
        .iter()
        .filter_map(SampleRule::for_guardrail)
        .collect();
    s.canary_weight_percent = config.plan.steps.first().map(|st| f64::from(st.weight));
    s.pin_proof = proof.cloned();
    s
}

/// The isolation probes for the `[load]` users that have markers, pinned to the canary; `None`
/// when fewer than two users have one.
pub fn probe_spec(
    config: &Config,
    load: &LoadSettings,
    proof: Option<&PinProof>,
) -> Option<ProbeSpec> {
    let users: Vec<ProbeUser> = load
        .users
        .iter()
        .filter_map(|u| {
            Some(ProbeUser {
                name: u.name.clone(),
                token: u.token.clone(),
                marker: u.marker.clone()?,
            })
        })
        .collect();
    if users.len() < 2 {
        return None;
    }
    let mut spec = ProbeSpec::new(load.url.clone(), users);
    spec.canary = Some(canary_route(config));
    spec.method = load.method.clone();
    spec.path = load.path.clone();
    spec.body = load.body.clone();
    spec.pin_proof = proof.cloned();
    Some(spec)
}
