//! PagerDuty Events API v2: breaches and rollbacks trigger (one incident per run, deduplicated
//! by run id), a promotion resolves it.

use canary_core::engine::Topic;
use canary_core::{Secret, Severity};
use serde_json::json;

use super::{Channel, Message, NotifyError, Outcome, http_client, post_json};
use crate::BoxFuture;

/// PagerDuty's Events API v2 endpoint.
pub const DEFAULT_EVENTS_URL: &str = "https://events.pagerduty.com/v2/enqueue";

/// A PagerDuty service, reached by its integration (routing) key.
#[derive(Clone)]
pub struct PagerDuty {
    routing_key: Secret,
    url: String,
    http: reqwest::Client,
}

impl std::fmt::Debug for PagerDuty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PagerDuty")
            .field("routing_key", &self.routing_key)
            .field("url", &self.url)
            .finish()
    }
}

impl PagerDuty {
    /// `url`: the Events API endpoint; `None` is [`DEFAULT_EVENTS_URL`].
    pub fn new(routing_key: Secret, url: Option<String>) -> Result<Self, NotifyError> {
        let url = url.unwrap_or_else(|| DEFAULT_EVENTS_URL.to_owned());
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(NotifyError::Config {
                channel: "pagerduty".into(),
                detail: format!("the events URL {url:?} must start with http:// or https://"),
            });
        }
        if routing_key.is_empty() {
            return Err(NotifyError::Config {
                channel: "pagerduty".into(),
                detail: "the routing key is empty: set PAGERDUTY_ROUTING_KEY".into(),
            });
        }
        Ok(PagerDuty {
            routing_key,
            url,
            http: http_client("pagerduty")?,
        })
    }

    /// The incident key of a run: every event of the run lands in one incident.
    pub fn dedup_key(run_id: &str) -> String {
        format!("canary-{run_id}")
    }

    /// The Events API v2 body for `message`: `resolve` for a promotion, `trigger` otherwise.
    /// The routing key is added when sending, so this value is safe to log.
    pub fn event(message: &Message) -> serde_json::Value {
        let dedup_key = Self::dedup_key(&message.run_id);
        if message.kind == Topic::Decision && message.outcome == Some(Outcome::Promote) {
            return json!({"event_action": "resolve", "dedup_key": dedup_key});
        }
        let severity = match message.severity {
            Severity::Page => "critical",
            Severity::Critical => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        };
        // PagerDuty truncates summaries at 1024 characters; cut on a character boundary.
        let summary: String = message.title.chars().take(1024).collect();
        let mut event = json!({
            "event_action": "trigger",
            "dedup_key": dedup_key,
            "client": "canary",
            "payload": {
                "summary": summary,
                "source": format!("canary/{}", message.service),
                "severity": severity,
                "timestamp": message.timestamp(),
                "component": message.service,
                "group": "canary",
                "class": message.kind.as_str(),
                "custom_details": {
                    "run_id": message.run_id,
                    "event": message.kind.as_str(),
                    "details": message.text,
                },
            },
        });
        if let Some(link) = &message.link {
            event["links"] = json!([{"href": link, "text": "canary dashboard"}]);
        }
        event
    }
}

impl Channel for PagerDuty {
    fn kind(&self) -> &'static str {
        "pagerduty"
    }

    fn name(&self) -> String {
        "pagerduty".into()
    }

    fn send<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, Result<(), NotifyError>> {
        Box::pin(async move {
            let mut body = Self::event(message);
            body["routing_key"] = json!(self.routing_key.expose());
            post_json(&self.http, self.name(), &self.url, None, &body).await
        })
    }
}
