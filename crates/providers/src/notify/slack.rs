//! Slack incoming webhooks: a `text` fallback plus blocks (title, details, run context).

use canary_core::{Secret, Severity};
use serde_json::json;

use super::{Channel, Message, NotifyError, http_client, post_json};
use crate::BoxFuture;

/// A Slack incoming webhook. The webhook URL is a credential and is never printed.
#[derive(Clone)]
pub struct Slack {
    webhook: Secret,
    channel: Option<String>,
    http: reqwest::Client,
}

impl std::fmt::Debug for Slack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slack")
            .field("webhook", &self.webhook)
            .field("channel", &self.channel)
            .finish()
    }
}

impl Slack {
    /// `channel` (`#canary-live`) is sent as the payload's `channel` and names the channel in
    /// logs; webhooks created for one channel post there whatever it says.
    pub fn new(webhook: Secret, channel: Option<String>) -> Result<Self, NotifyError> {
        let name = channel_name(channel.as_deref());
        let url = webhook.expose();
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(NotifyError::Config {
                channel: name,
                detail: "the webhook must be an http(s) URL (Slack's start with https://hooks.slack.com/)".into(),
            });
        }
        Ok(Slack {
            webhook,
            channel,
            http: http_client(&name)?,
        })
    }

    /// The JSON Slack receives for `message`.
    pub fn payload(&self, message: &Message) -> serde_json::Value {
        let icon = match message.severity {
            Severity::Info => ":information_source:",
            Severity::Warning => ":warning:",
            Severity::Critical => ":rotating_light:",
            Severity::Page => ":rotating_light: :lock:",
        };
        let mut context = format!(
            "run `{}` · {} · {} · {}",
            message.run_id,
            message.kind,
            severity_text(message.severity),
            message.timestamp()
        );
        if let Some(link) = &message.link {
            context.push_str(&format!(" · <{link}|dashboard>"));
        }
        let mut body = json!({
            "text": format!("{icon} {}", message.title),
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": format!("{icon} *{}*", escape(&message.title))}},
                {"type": "section", "text": {"type": "mrkdwn", "text": escape(&message.text)}},
                {"type": "context", "elements": [{"type": "mrkdwn", "text": context}]},
            ],
        });
        if message.text.is_empty()
            && let Some(blocks) = body["blocks"].as_array_mut()
        {
            blocks.remove(1);
        }
        if let Some(channel) = &self.channel {
            body["channel"] = json!(channel);
        }
        body
    }
}

fn channel_name(channel: Option<&str>) -> String {
    match channel {
        Some(c) => format!("slack {c}"),
        None => "slack".to_owned(),
    }
}

fn severity_text(s: Severity) -> &'static str {
    match s {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Critical => "critical",
        Severity::Page => "page",
    }
}

/// Slack's mrkdwn escapes: `&`, `<`, `>`.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

impl Channel for Slack {
    fn kind(&self) -> &'static str {
        "slack"
    }

    fn name(&self) -> String {
        channel_name(self.channel.as_deref())
    }

    fn send<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, Result<(), NotifyError>> {
        Box::pin(async move {
            post_json(
                &self.http,
                self.name(),
                self.webhook.expose(),
                None,
                &self.payload(message),
            )
            .await
        })
    }
}
