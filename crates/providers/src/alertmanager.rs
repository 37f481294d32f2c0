//! Alertmanager: the receivers and routes canary needs in alertmanager.yml (`canary render
//! alertmanager`), the webhook payload (version 4) Alertmanager sends canary when a run's alert
//! fires, and the readiness check preflight runs.
//!
//! Rendered configuration never contains a secret value: the bearer credential Alertmanager
//! presents to canary is referenced as a `credentials_file` (or a `${VAR}` placeholder for the
//! operator to substitute), and so is the escalation webhook's URL, which for Slack or PagerDuty
//! is itself a credential.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use canary_core::duration;
use canary_core::engine::{Event, Severity};
use canary_core::plan::OnBreach;
use canary_core::{Millis, Secret};
use serde::{Deserialize, Serialize};

use crate::rules::{ACTION_LABEL, GUARDRAIL_LABEL, RUN_LABEL, SEVERITY_LABEL, severity_label};

/// How Alertmanager finds a credential it must present, without the value itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialRef {
    /// A file on the Alertmanager host holding the value (`credentials_file`, `url_file`).
    File(PathBuf),
    /// `${VARIABLE}` written in place of the value: the operator substitutes it (e.g. with
    /// `envsubst`) when merging the snippet; Alertmanager rejects the file until then.
    Placeholder { variable: String },
}

/// What `canary render alertmanager` renders.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertmanagerRender {
    /// Where canary receives Alertmanager's webhook, e.g. `https://canary.internal:9464/alerts`.
    pub callback_url: String,
    /// The bearer credential Alertmanager presents to canary's webhook endpoint.
    pub callback_credentials: CredentialRef,
    /// The runbook's escalation webhook (`ALERT_WEBHOOK_URL`: Slack, PagerDuty, ...).
    pub escalation_url: Option<CredentialRef>,
    /// How long Alertmanager waits to group a new alert before the first notification; small,
    /// because a rollback waits on it.
    pub group_wait: Duration,
    pub group_interval: Duration,
    pub repeat_interval: Duration,
}

impl AlertmanagerRender {
    /// Defaults for everything but the callback: `group_wait` 1s, `group_interval` 10s,
    /// `repeat_interval` 1h, no escalation.
    pub fn new(callback_url: impl Into<String>, callback_credentials: CredentialRef) -> Self {
        AlertmanagerRender {
            callback_url: callback_url.into(),
            callback_credentials,
            escalation_url: None,
            group_wait: Duration::from_secs(1),
            group_interval: Duration::from_secs(10),
            repeat_interval: Duration::from_secs(3600),
        }
    }
}

/// Name of the receiver that calls canary back.
pub const CANARY_RECEIVER: &str = "canary";
/// Name of the receiver that escalates to the runbook's webhook.
pub const ESCALATION_RECEIVER: &str = "canary-escalation";
/// The matcher every canary route uses: any alert labelled with a run.
pub const RUN_MATCHER: &str = "canary_run=~\".+\"";

#[derive(Serialize)]
struct Receiver {
    name: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    webhook_configs: Vec<WebhookConfig>,
}

#[derive(Serialize)]
struct WebhookConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    url_file: Option<String>,
    send_resolved: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    http_config: Option<HttpConfig>,
}

#[derive(Serialize)]
struct HttpConfig {
    authorization: Authorization,
}

#[derive(Serialize)]
struct Authorization {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    credentials: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    credentials_file: Option<String>,
}

#[derive(Serialize)]
struct Route {
    receiver: String,
    matchers: Vec<String>,
    group_by: Vec<String>,
    group_wait: String,
    group_interval: String,
    repeat_interval: String,
    #[serde(rename = "continue")]
    continue_: bool,
}

#[derive(Serialize)]
struct RootRoute {
    #[serde(skip_serializing_if = "Option::is_none")]
    receiver: Option<String>,
    routes: Vec<Route>,
}

#[derive(Serialize)]
struct Config {
    route: RootRoute,
    receivers: Vec<Receiver>,
}

/// Why rendering failed.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error(
        "the callback URL {0:?} must be an http:// or https:// URL where Alertmanager reaches canary"
    )]
    CallbackUrl(String),
    #[error("cannot render the Alertmanager configuration: {0}")]
    Yaml(String),
}

impl AlertmanagerRender {
    fn parts(&self, with_default: bool) -> Result<Config, RenderError> {
        if !(self.callback_url.starts_with("http://") || self.callback_url.starts_with("https://"))
        {
            return Err(RenderError::CallbackUrl(self.callback_url.clone()));
        }
        let (credentials, credentials_file) = reference(&self.callback_credentials);
        let mut receivers = vec![Receiver {
            name: CANARY_RECEIVER.into(),
            webhook_configs: vec![WebhookConfig {
                url: Some(self.callback_url.clone()),
                url_file: None,
                send_resolved: true,
                http_config: Some(HttpConfig {
                    authorization: Authorization {
                        kind: "Bearer",
                        credentials,
                        credentials_file,
                    },
                }),
            }],
        }];
        let route = |receiver: &str, continue_: bool| Route {
            receiver: receiver.into(),
            matchers: vec![RUN_MATCHER.into()],
            group_by: vec!["alertname".into(), RUN_LABEL.into()],
            group_wait: duration::format(self.group_wait),
            group_interval: duration::format(self.group_interval),
            repeat_interval: duration::format(self.repeat_interval),
            continue_,
        };
        let mut routes = vec![route(CANARY_RECEIVER, true)];
        if let Some(escalation) = &self.escalation_url {
            let (url, url_file) = reference(escalation);
            receivers.push(Receiver {
                name: ESCALATION_RECEIVER.into(),
                webhook_configs: vec![WebhookConfig {
                    url,
                    url_file,
                    send_resolved: true,
                    http_config: None,
                }],
            });
            // The last canary route continues too: the operator's own routes still see the
            // alerts.
            routes.push(route(ESCALATION_RECEIVER, true));
        }
        if with_default {
            receivers.push(Receiver {
                name: "default".into(),
                webhook_configs: Vec::new(),
            });
        }
        Ok(Config {
            route: RootRoute {
                receiver: with_default.then(|| "default".to_owned()),
                routes,
            },
            receivers,
        })
    }

    fn header(&self) -> String {
        let mut text = String::from(
            "# Generated by `canary render alertmanager`.\n# Alerts labelled canary_run go to canary's webhook",
        );
        if self.escalation_url.is_some() {
            text.push_str(" and to the escalation webhook");
        }
        text.push_str(
            ".\n# canary applies each alert's guardrail's on_breach from its plan: a rollback guardrail's\n# alert rolls back, a promotion gate's fails the decision, a warning's only notifies.\n",
        );
        let mut placeholders = Vec::new();
        for r in std::iter::once(&self.callback_credentials).chain(self.escalation_url.as_ref()) {
            if let CredentialRef::Placeholder { variable } = r {
                placeholders.push(format!("${{{variable}}}"));
            }
        }
        if !placeholders.is_empty() {
            text.push_str(&format!(
                "# Substitute {} before loading (e.g. `envsubst < this.yml`); canary never writes secret values.\n",
                placeholders.join(" and ")
            ));
        }
        if matches!(self.escalation_url, Some(CredentialRef::File(_))) {
            text.push_str("# url_file in webhook_configs needs Alertmanager 0.26 or later.\n");
        }
        text
    }

    /// The receivers and the routes to add: merge `receivers` into alertmanager.yml's, and put
    /// the `route.routes` entries first in its `route.routes` (the canary route has
    /// `continue: true`, so later routes still see the alerts).
    pub fn snippet(&self) -> Result<String, RenderError> {
        let yaml = serde_norway::to_string(&self.parts(false)?)
            .map_err(|e| RenderError::Yaml(e.to_string()))?;
        Ok(format!("{}{yaml}", self.header()))
    }

    /// A complete alertmanager.yml holding only canary's routes and a do-nothing default
    /// receiver: for a dedicated Alertmanager, and what `amtool check-config` can check.
    pub fn standalone(&self) -> Result<String, RenderError> {
        let yaml = serde_norway::to_string(&self.parts(true)?)
            .map_err(|e| RenderError::Yaml(e.to_string()))?;
        Ok(format!("{}{yaml}", self.header()))
    }
}

/// `(inline value, file)` for a reference; the inline value is only ever a placeholder.
fn reference(r: &CredentialRef) -> (Option<String>, Option<String>) {
    match r {
        CredentialRef::File(path) => (None, Some(path.display().to_string())),
        CredentialRef::Placeholder { variable } => (Some(format!("${{{variable}}}")), None),
    }
}

/// An alert's state in a webhook payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

/// One alert of an Alertmanager webhook payload.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FiringAlert {
    pub alertname: String,
    pub status: AlertStatus,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// When the alert started firing, milliseconds since the Unix epoch.
    pub starts_at: Millis,
    pub fingerprint: Option<String>,
}

impl FiringAlert {
    /// The `canary_run` label: which run the alert belongs to.
    pub fn run_id(&self) -> Option<&str> {
        self.labels.get(RUN_LABEL).map(String::as_str)
    }

    /// The `guardrail` label.
    pub fn guardrail(&self) -> Option<&str> {
        self.labels.get(GUARDRAIL_LABEL).map(String::as_str)
    }

    /// The `action` label as the engine's breach class; `None` when absent or unknown.
    pub fn action(&self) -> Option<OnBreach> {
        self.labels.get(ACTION_LABEL)?.parse().ok()
    }

    /// A security alert: action `security-rollback`, or severity `page`.
    pub fn is_security(&self) -> bool {
        self.action() == Some(OnBreach::SecurityRollback)
            || self
                .labels
                .get(SEVERITY_LABEL)
                .is_some_and(|s| s == severity_label(Severity::Page))
    }

    /// Whether this alert is firing for run `run_id` (its `canary_run` label): what the run's
    /// webhook hands to the engine, which applies the alert's guardrail's `on_breach` from the
    /// plan — the labels do not decide.
    pub fn fires_for(&self, run_id: &str) -> bool {
        self.status == AlertStatus::Firing && self.run_id() == Some(run_id)
    }

    /// The engine input this alert becomes: its name, its `guardrail` and `action` labels, and
    /// whether its labels mark it a security alert (used only when it names no guardrail of the
    /// plan).
    pub fn to_event(&self) -> Event {
        Event::AlertFired {
            alert: self.alertname.clone(),
            security: self.is_security(),
            guardrail: self.guardrail().map(str::to_owned),
            action: self.action(),
        }
    }
}

/// Why a webhook body was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WebhookError {
    #[error(
        "the body is not an Alertmanager webhook payload ({0}); point only Alertmanager's webhook_configs at this endpoint"
    )]
    NotAPayload(String),
    #[error(
        "webhook payload version {0:?} is not supported: canary reads version \"4\" (Alertmanager 0.x)"
    )]
    Version(String),
    #[error("alert {alertname:?} has startsAt {value:?}, which is not an RFC 3339 time")]
    StartsAt { alertname: String, value: String },
}

#[derive(Deserialize)]
struct Payload {
    version: String,
    #[serde(default)]
    alerts: Vec<RawAlert>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawAlert {
    status: AlertStatus,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    starts_at: String,
    #[serde(default)]
    fingerprint: Option<String>,
}

/// Parses Alertmanager's webhook payload (version 4) into its alerts, firing and resolved, in
/// the payload's order. Use [`FiringAlert::fires_for`] to pick those of a run.
pub fn parse_webhook(body: &[u8]) -> Result<Vec<FiringAlert>, WebhookError> {
    let payload: Payload =
        serde_json::from_slice(body).map_err(|e| WebhookError::NotAPayload(e.to_string()))?;
    if payload.version != "4" {
        return Err(WebhookError::Version(payload.version));
    }
    payload
        .alerts
        .into_iter()
        .map(|a| {
            let alertname = a.labels.get("alertname").cloned().unwrap_or_default();
            let starts_at = a
                .starts_at
                .parse::<jiff::Timestamp>()
                .map_err(|_| WebhookError::StartsAt {
                    alertname: alertname.clone(),
                    value: a.starts_at.clone(),
                })?
                .as_millisecond();
            Ok(FiringAlert {
                alertname,
                status: a.status,
                labels: a.labels,
                annotations: a.annotations,
                starts_at,
                fingerprint: a.fingerprint.filter(|f| !f.is_empty()),
            })
        })
        .collect()
}

/// Whether an `Authorization` header carries `Bearer <token>`; compares in constant time so the
/// endpoint does not leak the token through timing.
pub fn authorized(header: Option<&str>, token: &Secret) -> bool {
    let Some(given) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
        return false;
    };
    let (a, b) = (given.trim().as_bytes(), token.expose().as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why an Alertmanager call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AlertmanagerError {
    #[error("Alertmanager at {url} is unreachable: {detail}; check the URL and that it runs")]
    Unreachable { url: String, detail: String },
    #[error(
        "Alertmanager at {url} refused the credential (HTTP {status}): check ALERTMANAGER_TOKEN"
    )]
    Unauthorized { url: String, status: u16 },
    #[error(
        "Alertmanager at {url} is not ready (HTTP {status}: {body}): it answers 200 once it has loaded its configuration; check its log"
    )]
    NotReady {
        url: String,
        status: u16,
        body: String,
    },
    #[error("Alertmanager at {url} rejected the alerts (HTTP {status}): {body}")]
    Rejected {
        url: String,
        status: u16,
        body: String,
    },
}

/// One alert to post to `/api/v2/alerts`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PostableAlert {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generator_url: Option<String>,
}

/// A client for Alertmanager's HTTP API.
#[derive(Debug, Clone)]
pub struct AlertmanagerClient {
    base: String,
    token: Option<Secret>,
    http: reqwest::Client,
}

impl AlertmanagerClient {
    /// A client for the Alertmanager at `url` (`http://` or `https://`, a trailing `/` is
    /// ignored), presenting `token` as a bearer credential when given; every request gives up
    /// after `timeout`.
    pub fn new(
        url: &str,
        token: Option<Secret>,
        timeout: Duration,
    ) -> Result<Self, AlertmanagerError> {
        let base = url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(AlertmanagerError::Unreachable {
                url: url.to_owned(),
                detail: "the URL must start with http:// or https://".into(),
            });
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| AlertmanagerError::Unreachable {
                url: base.clone(),
                detail: e.to_string(),
            })?;
        Ok(AlertmanagerClient { base, token, http })
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    /// `GET /-/ready`: `Ok` once Alertmanager has loaded its configuration. Fails with
    /// [`AlertmanagerError::Unreachable`] when nothing answers in time,
    /// [`AlertmanagerError::Unauthorized`] on 401/403 and [`AlertmanagerError::NotReady`] on any
    /// other status outside 2xx.
    pub async fn ready(&self) -> Result<(), AlertmanagerError> {
        let (status, body) = self
            .call(self.http.get(format!("{}/-/ready", self.base)))
            .await?;
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(AlertmanagerError::NotReady {
                url: self.base.clone(),
                status,
                body,
            })
        }
    }

    /// `POST /api/v2/alerts`: raises alerts directly (what Prometheus does when a rule fires).
    pub async fn post_alerts(&self, alerts: &[PostableAlert]) -> Result<(), AlertmanagerError> {
        let (status, body) = self
            .call(
                self.http
                    .post(format!("{}/api/v2/alerts", self.base))
                    .json(alerts),
            )
            .await?;
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(AlertmanagerError::Rejected {
                url: self.base.clone(),
                status,
                body,
            })
        }
    }

    async fn call(&self, req: reqwest::RequestBuilder) -> Result<(u16, String), AlertmanagerError> {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t.expose()),
            None => req,
        };
        let resp = req
            .send()
            .await
            .map_err(|e| AlertmanagerError::Unreachable {
                url: self.base.clone(),
                // The cause (connection refused, timed out) is in the source chain.
                detail: crate::error_text::error_chain(&e.without_url()),
            })?;
        let status = resp.status().as_u16();
        if status == 401 || status == 403 {
            return Err(AlertmanagerError::Unauthorized {
                url: self.base.clone(),
                status,
            });
        }
        let body = resp.text().await.unwrap_or_default();
        Ok((status, body.trim().chars().take(500).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_check_is_exact() {
        let token = Secret::new("s3cret");
        assert!(authorized(Some("Bearer s3cret"), &token));
        for bad in [
            None,
            Some("Bearer s3cre"),
            Some("s3cret"),
            Some("Bearer s3cretx"),
        ] {
            assert!(!authorized(bad, &token), "{bad:?}");
        }
    }
}
