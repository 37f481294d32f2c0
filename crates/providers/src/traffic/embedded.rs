//! The `embedded` router: the admin API of `canary`'s own proxy (`canary-proxy`) — weights,
//! the dead man's switch lease and arm health.

use crate::error_text::error_chain;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use canary_core::{ArmRole, Event, Secret};
use serde::Deserialize;
use tokio::sync::mpsc;

use super::{BoxFuture, Split, TrafficError, TrafficRouter};

const ROUTER: &str = "embedded";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the embedded proxy's admin API is and its bearer token.
#[derive(Clone)]
pub struct EmbeddedRouterConfig {
    /// Base URL of the admin API, such as `http://127.0.0.1:9901`.
    pub admin_url: String,
    /// The admin API's bearer token. Never printed.
    pub token: String,
}

impl fmt::Debug for EmbeddedRouterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedRouterConfig")
            .field("admin_url", &self.admin_url)
            .field("token", &"***")
            .finish()
    }
}

/// One arm's health as the proxy's active checks see it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct ArmState {
    /// The arm's upstream URL.
    pub upstream: String,
    /// `unknown`, `healthy` or `unhealthy`.
    pub status: String,
    /// Why the last failed check failed.
    pub last_error: Option<String>,
}

impl ArmState {
    /// Whether checks report the arm unhealthy (an unknown arm is not).
    pub fn is_unhealthy(&self) -> bool {
        self.status == "unhealthy"
    }
}

/// What `GET /healthz` reports: both arms and the current split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyHealth {
    /// The baseline arm.
    pub baseline: ArmState,
    /// The canary arm.
    pub canary: ArmState,
    /// The split now in force.
    pub split: Split,
    /// Who holds the lease, if anyone.
    pub lease_holder: Option<String>,
}

/// How to pin a request on the proxy's data port: the pin header, and the header and token
/// that prove the caller may (canary's probes; the proxy ignores pins without it).
#[derive(Clone, Debug)]
pub struct PinAccess {
    /// The request header that pins (`x-canary`).
    pub header: String,
    /// The request header that carries the token (`x-canary-token`).
    pub proof_header: String,
    /// The pin token. Never printed.
    pub token: Secret,
    /// The canary was rolled back: the proxy refuses pins onto it.
    pub canary_fenced: bool,
}

#[derive(Deserialize)]
struct PinBody {
    header: String,
    proof_header: String,
    token: String,
    canary_fenced: bool,
}

#[derive(Deserialize)]
struct WeightsBody {
    canary: u8,
    baseline: u8,
}

#[derive(Deserialize)]
struct HealthBody {
    weights: WeightsBody,
    arms: ArmsBody,
    lease: Option<LeaseBody>,
}

#[derive(Deserialize)]
struct ArmsBody {
    baseline: ArmState,
    canary: ArmState,
}

#[derive(Deserialize)]
struct LeaseBody {
    holder: String,
    expires_in_ms: u64,
}

/// The `embedded` router.
#[derive(Debug)]
pub struct EmbeddedRouter {
    cfg: EmbeddedRouterConfig,
    base: String,
    client: reqwest::Client,
}

impl EmbeddedRouter {
    /// A router for the proxy at `cfg.admin_url`; fails on a URL that is not `http(s)://`.
    pub fn new(cfg: EmbeddedRouterConfig) -> Result<Self, TrafficError> {
        let config = |reason: String| TrafficError::Config {
            router: ROUTER,
            reason,
        };
        let base = cfg.admin_url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(config(format!(
                "admin_url `{base}` is not a URL: give one like http://127.0.0.1:9901"
            )));
        }
        if base.contains('@') {
            return Err(config(
                "admin_url must not carry credentials: put the token in `token`".into(),
            ));
        }
        if cfg.token.is_empty() {
            return Err(config("the admin token is empty".into()));
        }
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .no_proxy()
            .build()
            .map_err(|e| config(format!("cannot build an HTTP client: {e}")))?;
        Ok(EmbeddedRouter { cfg, base, client })
    }

    /// Takes or renews the dead man's switch lease for `ttl`. If it is not renewed in time the
    /// proxy returns all traffic to the baseline by itself.
    pub async fn renew_lease(&self, holder: &str, ttl: Duration) -> Result<(), TrafficError> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let body = serde_json::json!({ "ttl_ms": ttl_ms, "holder": holder });
        self.call(reqwest::Method::PUT, "/lease", Some(body))
            .await
            .map(|_| ())
    }

    /// Gives the lease up without tripping the switch (a run that ended cleanly).
    pub async fn release_lease(&self) -> Result<(), TrafficError> {
        self.call(reqwest::Method::DELETE, "/lease", None)
            .await
            .map(|_| ())
    }

    /// Renews the lease every third of `ttl`, as `canary-<pid>`, until the task is aborted:
    /// the controller holds it while it lives, and a dead controller's lease lapses.
    pub fn keep_lease(self: Arc<Self>, ttl: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let holder = format!("canary-{}", std::process::id());
            loop {
                if let Err(e) = self.renew_lease(&holder, ttl).await {
                    tracing::warn!(error = %e, "cannot renew the proxy lease");
                }
                tokio::time::sleep(ttl / 3).await;
            }
        })
    }

    /// Polls the proxy's health checks every half second until the task is aborted (or
    /// `events` closes): an arm that turns unhealthy becomes one `ArmUnhealthy` event, again
    /// only after it recovered.
    pub fn watch_health(
        self: Arc<Self>,
        events: mpsc::Sender<Event>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut reported = [false, false];
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let Ok(health) = self.health().await else {
                    continue;
                };
                let arms = [
                    (ArmRole::Baseline, &health.baseline),
                    (ArmRole::Canary, &health.canary),
                ];
                for (i, (arm, state)) in arms.into_iter().enumerate() {
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

    /// Both arms' health, the split and the lease holder.
    pub async fn health(&self) -> Result<ProxyHealth, TrafficError> {
        let body: HealthBody = self.fetch("/healthz").await?;
        Ok(ProxyHealth {
            baseline: body.arms.baseline,
            canary: body.arms.canary,
            split: split_of(&body.weights, &self.base)?,
            lease_holder: body.lease.map(|l| l.holder),
        })
    }

    /// The pin header, its proof header and the pin token (`GET /pin`).
    pub async fn pin_access(&self) -> Result<PinAccess, TrafficError> {
        let body: PinBody = self.fetch("/pin").await?;
        Ok(PinAccess {
            header: body.header,
            proof_header: body.proof_header,
            token: Secret::new(body.token),
            canary_fenced: body.canary_fenced,
        })
    }

    /// `GET path`, its JSON answer parsed.
    async fn fetch<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, TrafficError> {
        let text = self.call(reqwest::Method::GET, path, None).await?;
        serde_json::from_str(&text).map_err(|e| TrafficError::Unreadable {
            router: ROUTER,
            what: format!("{}{path}", self.base),
            detail: e.to_string(),
        })
    }

    /// One admin call; returns the body of a 2xx answer.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<String, TrafficError> {
        let url = format!("{}{path}", self.base);
        let mut request = self
            .client
            .request(method.clone(), &url)
            .bearer_auth(&self.cfg.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| {
            if e.is_timeout() {
                TrafficError::Timeout {
                    router: ROUTER,
                    what: format!("{method} {url}"),
                    after: REQUEST_TIMEOUT,
                }
            } else {
                TrafficError::Unreachable {
                    router: ROUTER,
                    endpoint: url.clone(),
                    reason: error_chain(&e),
                }
            }
        })?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| TrafficError::Unreachable {
                router: ROUTER,
                endpoint: url.clone(),
                reason: error_chain(&e),
            })?;
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(TrafficError::Unauthorized {
                router: ROUTER,
                endpoint: url,
            });
        }
        if !status.is_success() {
            return Err(TrafficError::Rejected {
                router: ROUTER,
                what: format!("{method} {url}"),
                detail: format!("HTTP {status}: {}", text.trim()),
            });
        }
        Ok(text)
    }
}

fn split_of(weights: &WeightsBody, base: &str) -> Result<Split, TrafficError> {
    match Split::with_canary(weights.canary) {
        Ok(split) if split.baseline == weights.baseline => Ok(split),
        _ => Err(TrafficError::Unreadable {
            router: ROUTER,
            what: format!("{base}/weights"),
            detail: format!(
                "canary {} and baseline {} do not make 100",
                weights.canary, weights.baseline
            ),
        }),
    }
}

impl TrafficRouter for EmbeddedRouter {
    fn name(&self) -> &'static str {
        ROUTER
    }

    fn set(&self, canary_pct: u8) -> BoxFuture<'_, Result<(), TrafficError>> {
        Box::pin(async move {
            let split = Split::with_canary(canary_pct)?;
            let body = serde_json::json!({ "canary": split.canary, "baseline": split.baseline });
            self.call(reqwest::Method::PUT, "/weights", Some(body))
                .await
                .map(|_| ())
        })
    }

    fn get(&self) -> BoxFuture<'_, Result<Split, TrafficError>> {
        Box::pin(async move {
            let weights: WeightsBody = self.fetch("/weights").await?;
            split_of(&weights, &self.base)
        })
    }

    fn describe(&self) -> BoxFuture<'_, Result<String, TrafficError>> {
        Box::pin(async move {
            let body: HealthBody = self.fetch("/healthz").await?;
            let split = split_of(&body.weights, &self.base)?;
            let arm = |name: &str, a: &ArmState| {
                let why = a
                    .last_error
                    .as_deref()
                    .map(|e| format!(" (last error: {e})"))
                    .unwrap_or_default();
                format!("{name:<8} {} — {}{why}\n", a.upstream, a.status)
            };
            let lease = match &body.lease {
                Some(l) => format!("held by {}, {} ms left", l.holder, l.expires_in_ms),
                None => "none".into(),
            };
            Ok(format!(
                "embedded proxy, admin API {}\nsplit: {split}\n{}{}lease: {lease}\n",
                self.base,
                arm("baseline", &body.arms.baseline),
                arm("canary", &body.arms.canary),
            ))
        })
    }
}
