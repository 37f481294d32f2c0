//! A generic JSON webhook: the [`Message`] as JSON, optionally with a bearer token.

use canary_core::Secret;

use super::{Channel, Message, NotifyError, http_client, post_json};
use crate::BoxFuture;

/// Posts every message as JSON (`kind`, `severity`, `service`, `run_id`, `title`, `text`, `at`,
/// `timestamp`, `outcome`, `link`) to a URL, which is treated as a credential.
#[derive(Clone)]
pub struct Webhook {
    url: Secret,
    token: Option<Secret>,
    http: reqwest::Client,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &self.url)
            .field("token", &self.token)
            .finish()
    }
}

impl Webhook {
    pub fn new(url: Secret, token: Option<Secret>) -> Result<Self, NotifyError> {
        let u = url.expose();
        if !(u.starts_with("https://") || u.starts_with("http://")) {
            return Err(NotifyError::Config {
                channel: "webhook".into(),
                detail: "the URL must start with http:// or https://".into(),
            });
        }
        Ok(Webhook {
            url,
            token,
            http: http_client("webhook")?,
        })
    }

    /// The JSON the webhook receives.
    pub fn payload(message: &Message) -> serde_json::Value {
        let mut body = serde_json::to_value(message).unwrap_or_default();
        body["timestamp"] = serde_json::Value::String(message.timestamp());
        body
    }
}

impl Channel for Webhook {
    fn kind(&self) -> &'static str {
        "webhook"
    }

    fn name(&self) -> String {
        "webhook".into()
    }

    fn send<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, Result<(), NotifyError>> {
        Box::pin(async move {
            post_json(
                &self.http,
                self.name(),
                self.url.expose(),
                self.token.as_ref().map(Secret::expose),
                &Self::payload(message),
            )
            .await
        })
    }
}
