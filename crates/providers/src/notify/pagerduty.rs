//! PagerDuty Events API v2. A run has one incident for its rollback and decision (deduplicated
//! by run id) and one per guardrail for a breach that has decided nothing yet (a warning that
//! may clear must not swallow a later rollback: PagerDuty adds a trigger on an open key to the
//! incident without raising it). A security rollback triggers at `critical`; the summary and
//! custom details name the guardrail with both arms' values, the threshold and the run. A
//! rollback or promotion verified on the load balancer resolves them all.

use canary_core::engine::{GuardrailSummary, Reading, Topic};
use canary_core::{Secret, Severity};
use serde_json::json;

use super::{Channel, Incident, Message, NotifyError, Outcome, http_client, post_json};
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

    /// The run's incident key: its rollback, its decision, escalations.
    pub fn dedup_key(run_id: &str) -> String {
        format!("canary-{run_id}")
    }

    /// The incident key of one guardrail's breach in a run, while it has decided nothing (at
    /// most 255 characters, PagerDuty's limit).
    pub fn guardrail_dedup_key(run_id: &str, guardrail: &str) -> String {
        format!("canary-{run_id}-{guardrail}")
            .chars()
            .take(255)
            .collect()
    }

    /// The Events API v2 bodies for `message`, sent in order: `resolve` for the run's incident
    /// and each named guardrail's when traffic is verified safe (or on a promotion), one
    /// `trigger` otherwise — on the guardrail's own key for a breach that decided nothing yet,
    /// on the run's key for everything else. The routing key is added when sending, so these
    /// values are safe to log.
    pub fn events(message: &Message) -> Vec<serde_json::Value> {
        let run_key = Self::dedup_key(&message.run_id);
        let resolve = |key: String| json!({"event_action": "resolve", "dedup_key": key});
        match &message.incident {
            Incident::Resolved { guardrails } => {
                return std::iter::once(run_key)
                    .chain(
                        guardrails
                            .iter()
                            .map(|g| Self::guardrail_dedup_key(&message.run_id, g)),
                    )
                    .map(resolve)
                    .collect();
            }
            _ if message.kind == Topic::Decision && message.outcome == Some(Outcome::Promote) => {
                return vec![resolve(run_key)];
            }
            _ => {}
        }
        let dedup_key = match &message.incident {
            Incident::Guardrail { name } => Self::guardrail_dedup_key(&message.run_id, name),
            _ => run_key,
        };
        let severity = match message.severity {
            Severity::Page => "critical",
            Severity::Critical => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        };
        // PagerDuty truncates summaries at 1024 characters; cut on a character boundary.
        let summary: String = message.title.chars().take(1024).collect();
        let mut details = json!({
            "run_id": message.run_id,
            "event": message.kind.as_str(),
            "details": message.text,
        });
        if let [g] = &message.guardrails[..] {
            // One guardrail: its facts at the top, where PagerDuty's incident view shows them.
            for (key, value) in guardrail_details(g) {
                details[key] = value;
            }
        }
        if !message.guardrails.is_empty() {
            details["guardrails"] = message
                .guardrails
                .iter()
                .map(|g| {
                    serde_json::Value::Object(
                        guardrail_details(g)
                            .into_iter()
                            .map(|(k, v)| (k.to_owned(), v))
                            .collect(),
                    )
                })
                .collect();
        }
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
                "custom_details": details,
            },
        });
        if let Some(link) = &message.link {
            event["links"] = json!([{"href": link, "text": "canary dashboard"}]);
        }
        vec![event]
    }
}

/// One guardrail as PagerDuty's custom details show it: name, both arms' last values, the
/// threshold, its `for` (in the runbook's time) and what a breach does.
fn guardrail_details(g: &GuardrailSummary) -> Vec<(&'static str, serde_json::Value)> {
    vec![
        ("guardrail", json!(g.name)),
        ("canary_value", reading(g.canary.as_ref())),
        ("baseline_value", reading(g.baseline.as_ref())),
        ("threshold", json!(g.must.to_string())),
        ("for", json!(g.runbook_for().to_string())),
        ("on_breach", json!(g.on_breach.as_str())),
        ("status", json!(g.status.label())),
    ]
}

/// A reading as JSON: a finite value as a number, anything else as words.
fn reading(r: Option<&Reading>) -> serde_json::Value {
    match r {
        Some(Reading::Value { value, .. }) if value.is_finite() => json!(value),
        Some(r) => json!(r.to_string()),
        None => serde_json::Value::Null,
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
            // A retry sends every event again: resolving twice, or triggering an open key
            // again, changes nothing at PagerDuty.
            for mut body in Self::events(message) {
                body["routing_key"] = json!(self.routing_key.expose());
                post_json(&self.http, self.name(), &self.url, None, &body).await?;
            }
            Ok(())
        })
    }

    fn keeps_incidents(&self) -> bool {
        true
    }
}
