//! Builds the integrations a configuration names: the traffic router (with the embedded
//! proxy's lease and health watch), the metric source (with the embedded scraper), and the
//! notifiers.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use canary_core::engine::Severity;
use canary_core::{ArmRole, Event};
use canary_promql::{ArmSelector, EvalOptions, Store};
use canary_providers::metrics::MetricSource;
use canary_providers::metrics::embedded::EmbeddedSource;
use canary_providers::metrics::prometheus::{PrometheusConfig, PrometheusSource};
use canary_providers::notify::{self, EventKind, Notifier};
use canary_providers::scrape::{ScrapeConfig, ScrapeTarget, Scraper};
use canary_providers::traffic::{
    CommandConfig, CommandRouter, EmbeddedRouter, EmbeddedRouterConfig, HaproxyConfig,
    HaproxyRouter, NginxConfig, NginxRouter, TrafficRouter,
};
use tokio::sync::mpsc;

use crate::config::settings::{
    MetricsSettings, NotifyChannel, NotifyOn, NotifySettings, TrafficSettings,
};
use canary_core::Plan;

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
        TrafficSettings::Haproxy {
            endpoint,
            backend,
            canary_server,
            baseline_server,
        } => (
            Arc::new(HaproxyRouter::new(HaproxyConfig {
                endpoint: endpoint.clone(),
                backend: backend.clone(),
                canary_server: canary_server.clone(),
                baseline_server: baseline_server.clone(),
            })?),
            None,
        ),
        TrafficSettings::Nginx {
            upstream_file,
            upstream,
            canary_addr,
            baseline_addr,
            test_command,
            reload_command,
        } => (
            Arc::new(NginxRouter::new(NginxConfig {
                upstream_file: upstream_file.clone(),
                upstream_name: upstream.clone(),
                canary_addr: canary_addr.clone(),
                baseline_addr: baseline_addr.clone(),
                test_command: test_command.clone(),
                reload_command: reload_command.clone(),
            })?),
            None,
        ),
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
        MetricsSettings::Prometheus {
            url,
            token,
            timeout,
        } => Some(PrometheusSource::new(PrometheusConfig {
            url: url.clone(),
            token: token.clone(),
            timeout: *timeout,
        })?),
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
        let on: Vec<EventKind> =
            s.on.iter()
                .map(|o| match o {
                    NotifyOn::Start => EventKind::Start,
                    NotifyOn::Check => EventKind::Check,
                    NotifyOn::Breach => EventKind::Breach,
                    NotifyOn::Rollback => EventKind::Rollback,
                    NotifyOn::Decision => EventKind::Decision,
                })
                .collect();
        let channel: Box<dyn notify::Channel> = match &s.channel {
            NotifyChannel::Slack { webhook, channel } => {
                Box::new(notify::Slack::new(webhook.clone(), channel.clone())?)
            }
            NotifyChannel::PagerDuty { routing_key } => {
                Box::new(notify::PagerDuty::new(routing_key.clone(), None)?)
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
        n.subscribe(channel, &on);
    }
    Ok(Some(n))
}

/// A delegate `notify` function sending through `notifier` for the run `run_id` of `service`.
pub fn notify_fn(
    notifier: Arc<Notifier>,
    service: String,
    link: Option<String>,
) -> super::delegates::Notify {
    Arc::new(
        move |run_id: &str, severity: Severity, kind: EventKind, text: String| {
            let notifier = notifier.clone();
            let title = format!(
                "{service} canary: {}",
                text.lines().next().unwrap_or_default()
            );
            let mut message = notify::Message::new(
                kind,
                severity,
                service.clone(),
                run_id,
                title,
                text,
                super::controller::now_ms(),
            );
            if let Some(link) = &link {
                message = message.with_link(link.clone());
            }
            Box::pin(async move {
                for d in notifier.notify(&message).await {
                    tracing::debug!(delivery = ?d, "notification");
                }
            })
        },
    )
}

/// Renews the proxy's dead man's switch every third of `ttl` while the run lives.
pub fn lease_keeper(router: Arc<EmbeddedRouter>, ttl: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let holder = format!("canary-{}", std::process::id());
        loop {
            if let Err(e) = router.renew_lease(&holder, ttl).await {
                tracing::warn!(error = %e, "cannot renew the proxy lease");
            }
            tokio::time::sleep(ttl / 3).await;
        }
    })
}

/// Polls the proxy's health checks; an arm that turns unhealthy becomes an `ArmUnhealthy`
/// event (once, until it recovers).
pub fn health_watch(
    router: Arc<EmbeddedRouter>,
    events: mpsc::Sender<Event>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut reported = [false, false];
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let Ok(health) = router.health().await else {
                continue;
            };
            for (i, (arm, state)) in [
                (ArmRole::Baseline, &health.baseline),
                (ArmRole::Canary, &health.canary),
            ]
            .into_iter()
            .enumerate()
            {
                let unhealthy = state.is_unhealthy();
                if unhealthy && !reported[i] {
                    let detail = state
                        .last_error
                        .clone()
                        .unwrap_or_else(|| "failing health checks".into());
                    if events
                        .send(Event::ArmUnhealthy { arm, detail })
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                reported[i] = unhealthy;
            }
        }
    })
}
