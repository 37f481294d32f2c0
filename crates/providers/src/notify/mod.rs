//! Telling people: Slack, PagerDuty, email and generic webhooks, fanned out by a [`Notifier`]
//! that sends each message to the channels subscribed to its [`Topic`] (the engine's).
//!
//! Channels that keep incidents (PagerDuty) group messages by [`Incident`]: the run's own
//! incident (its rollback, its decision), one per guardrail for a breach that has not decided
//! anything yet, and a resolution once traffic is verified safe again.
//!
//! Notification never decides a run: a channel that is down, slow or refuses the message is
//! retried within a per-channel timeout, then logged and reported in the returned
//! [`Delivery`]s (for the evidence) — [`Notifier::notify`] cannot fail. Channel names and errors
//! never contain a secret: webhook URLs and keys live in `Secret`s and errors are stripped of
//! URLs.

mod email;
mod pagerduty;
mod slack;
mod webhook;

use crate::error_text::error_chain;
use std::time::Duration;

use canary_core::engine::{GuardrailSummary, Topic};
use canary_core::{Millis, Severity};
use serde::{Deserialize, Serialize};

use crate::BoxFuture;

pub use email::{Email, EmailConfig, SmtpSecurity};
pub use pagerduty::{DEFAULT_EVENTS_URL, PagerDuty};
pub use slack::Slack;
pub use webhook::Webhook;

/// The verdict a decision message announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Promote,
    Rollback,
    Inconclusive,
    PromotionFailed,
}

/// Which incident a message belongs to, for channels that keep incidents (PagerDuty's dedup
/// key): a pager adds later messages to an open incident without raising it, so a warning that
/// may clear and a rollback are kept apart.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Incident {
    /// The run's own: its rollback, its decision, a traffic failure, an escalation.
    #[default]
    Run,
    /// One guardrail breaching that has decided nothing yet (counting its `for`, or warn-only).
    Guardrail { name: String },
    /// Traffic is verified safe again (back on the baseline, or promoted): closes the run's
    /// incident and those of these guardrails.
    Resolved { guardrails: Vec<String> },
}

/// One notification, rendered by each channel in its own format.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Message {
    /// What it is about; channels subscribe to topics. `kind` on the wire.
    pub kind: Topic,
    pub severity: Severity,
    pub service: String,
    pub run_id: String,
    /// One line, e.g. `relay canary ROLLBACK: ttfv_p95 breached for 5m`.
    pub title: String,
    /// Details; plain text, may span lines.
    pub text: String,
    /// When it happened, milliseconds since the Unix epoch.
    pub at: Millis,
    /// Set on decisions.
    pub outcome: Option<Outcome>,
    /// Where to look (dashboard, live page).
    pub link: Option<String>,
    /// The guardrails the message is about, with both arms' values and the threshold.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub guardrails: Vec<GuardrailSummary>,
    /// The incident it opens, adds to or closes.
    pub incident: Incident,
}

impl Message {
    pub fn new(
        kind: Topic,
        severity: Severity,
        service: impl Into<String>,
        run_id: impl Into<String>,
        title: impl Into<String>,
        text: impl Into<String>,
        at: Millis,
    ) -> Self {
        Message {
            kind,
            severity,
            service: service.into(),
            run_id: run_id.into(),
            title: title.into(),
            text: text.into(),
            at,
            outcome: None,
            link: None,
            guardrails: Vec::new(),
            incident: Incident::Run,
        }
    }

    pub fn with_guardrails(mut self, guardrails: Vec<GuardrailSummary>) -> Self {
        self.guardrails = guardrails;
        self
    }

    pub fn with_incident(mut self, incident: Incident) -> Self {
        self.incident = incident;
        self
    }

    pub fn with_outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = Some(outcome);
        self
    }

    pub fn with_link(mut self, link: impl Into<String>) -> Self {
        self.link = Some(link.into());
        self
    }

    /// `at` as RFC 3339 (UTC).
    pub fn timestamp(&self) -> String {
        jiff::Timestamp::from_millisecond(self.at)
            .map(|t| t.to_string())
            .unwrap_or_default()
    }
}

/// Why one delivery attempt failed. Never carries a URL or a credential.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NotifyError {
    #[error("{channel} is misconfigured: {detail}")]
    Config { channel: String, detail: String },
    #[error("{channel} is unreachable: {detail}")]
    Unreachable { channel: String, detail: String },
    #[error("{channel} refused the message (HTTP {status}): {body}")]
    Rejected {
        channel: String,
        status: u16,
        body: String,
    },
    #[error("{channel} did not answer within {after:?}")]
    Timeout { channel: String, after: Duration },
    #[error("{channel}: the mail server refused the message: {detail}")]
    Smtp {
        channel: String,
        detail: String,
        permanent: bool,
    },
}

impl NotifyError {
    /// Whether trying again may succeed: network trouble, timeouts, HTTP 429 and 5xx,
    /// transient SMTP replies.
    pub fn retryable(&self) -> bool {
        match self {
            NotifyError::Config { .. } => false,
            NotifyError::Unreachable { .. } | NotifyError::Timeout { .. } => true,
            NotifyError::Rejected { status, .. } => *status == 429 || *status >= 500,
            NotifyError::Smtp { permanent, .. } => !permanent,
        }
    }
}

/// A place messages go.
pub trait Channel: Send + Sync {
    /// `slack`, `pagerduty`, `email`, `webhook`.
    fn kind(&self) -> &'static str;
    /// A name for logs and evidence (`slack #canary-live`); never a secret.
    fn name(&self) -> String;
    /// One delivery attempt.
    fn send<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, Result<(), NotifyError>>;
    /// Whether the channel keeps incidents open until told they are resolved (a pager). Such a
    /// channel hears every resolution as long as it hears the topics that open incidents.
    fn keeps_incidents(&self) -> bool {
        false
    }
}

/// How often and how patiently a channel is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, at least 1.
    pub attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// Three attempts, 500 ms then 1 s apart.
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// What happened to one message on one channel: the evidence of a notification.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Delivery {
    pub channel: String,
    pub kind: &'static str,
    pub event: Topic,
    pub attempts: u32,
    /// `None` when delivered; the last error otherwise.
    pub error: Option<String>,
}

impl Delivery {
    pub fn delivered(&self) -> bool {
        self.error.is_none()
    }
}

struct Subscription {
    channel: Box<dyn Channel>,
    on: Vec<Topic>,
}

/// Sends each message to every channel subscribed to its topic, concurrently, each within its
/// timeout and retry policy.
pub struct Notifier {
    subscriptions: Vec<Subscription>,
    timeout: Duration,
    retry: RetryPolicy,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("channels", &self.channels())
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .finish()
    }
}

impl Notifier {
    /// A notifier without channels; `timeout` bounds each attempt on each channel.
    pub fn new(timeout: Duration, retry: RetryPolicy) -> Self {
        Notifier {
            subscriptions: Vec::new(),
            timeout,
            retry,
        }
    }

    /// Sends messages on these topics to `channel`.
    pub fn subscribe(&mut self, channel: Box<dyn Channel>, on: &[Topic]) -> &mut Self {
        self.subscriptions.push(Subscription {
            channel,
            on: on.to_vec(),
        });
        self
    }

    /// Each channel's name and the topics it receives.
    pub fn channels(&self) -> Vec<(String, Vec<Topic>)> {
        self.subscriptions
            .iter()
            .map(|s| (s.channel.name(), s.on.clone()))
            .collect()
    }

    /// Delivers `message` to every subscribed channel, concurrently. Never fails: each
    /// channel's outcome (attempts, last error) is returned, in subscription order, and failures
    /// are logged. Channels not subscribed to the message's topic are left out — except that a
    /// resolution also reaches the channels keeping incidents that hear `breach` or `rollback`
    /// (which open them), so nothing they opened stays open.
    pub async fn notify(&self, message: &Message) -> Vec<Delivery> {
        let resolves = matches!(message.incident, Incident::Resolved { .. });
        let sends = self
            .subscriptions
            .iter()
            .filter(|s| {
                s.on.contains(&message.kind)
                    || (resolves
                        && s.channel.keeps_incidents()
                        && s.on
                            .iter()
                            .any(|t| matches!(t, Topic::Breach | Topic::Rollback)))
            })
            .map(|s| self.deliver(s.channel.as_ref(), message));
        futures_util::future::join_all(sends).await
    }

    async fn deliver(&self, channel: &dyn Channel, message: &Message) -> Delivery {
        let attempts_allowed = self.retry.attempts.max(1);
        let mut backoff = self.retry.initial_backoff;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let result = match tokio::time::timeout(self.timeout, channel.send(message)).await {
                Ok(r) => r,
                Err(_) => Err(NotifyError::Timeout {
                    channel: channel.name(),
                    after: self.timeout,
                }),
            };
            match result {
                Ok(()) => {
                    tracing::debug!(channel = %channel.name(), event = %message.kind, attempts, "notification delivered");
                    return Delivery {
                        channel: channel.name(),
                        kind: channel.kind(),
                        event: message.kind,
                        attempts,
                        error: None,
                    };
                }
                Err(e) if e.retryable() && attempts < attempts_allowed => {
                    tracing::info!(channel = %channel.name(), event = %message.kind, attempt = attempts, error = %e, "notification failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.retry.max_backoff);
                }
                Err(e) => {
                    tracing::warn!(channel = %channel.name(), event = %message.kind, attempts, error = %e, "notification not delivered");
                    return Delivery {
                        channel: channel.name(),
                        kind: channel.kind(),
                        event: message.kind,
                        attempts,
                        error: Some(e.to_string()),
                    };
                }
            }
        }
    }
}

/// An HTTP client for the HTTP channels; the notifier's timeout bounds each attempt, this one
/// is a backstop.
fn http_client(channel: &str) -> Result<reqwest::Client, NotifyError> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| NotifyError::Config {
            channel: channel.to_owned(),
            detail: e.to_string(),
        })
}

/// Posts JSON and maps the answer: 2xx is delivered, anything else is an error with (a bounded
/// piece of) the body.
async fn post_json(
    http: &reqwest::Client,
    channel: String,
    url: &str,
    token: Option<&str>,
    body: &serde_json::Value,
) -> Result<(), NotifyError> {
    let mut req = http.post(url).json(body);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.map_err(|e| NotifyError::Unreachable {
        channel: channel.clone(),
        detail: error_chain(&e.without_url()),
    })?;
    let status = resp.status().as_u16();
    if (200..300).contains(&status) {
        return Ok(());
    }
    let text = resp.text().await.unwrap_or_default();
    Err(NotifyError::Rejected {
        channel,
        status,
        body: text.trim().chars().take(300).collect(),
    })
}
