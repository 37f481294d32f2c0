//! Installs a run's rules through a Grafana Mimir (or Cortex) ruler: the rule group is posted
//! into a namespace (`POST <prefix>/<namespace>`), read back before the install counts, and
//! deleted after the run. Multi-tenant rulers get the tenant in `X-Scope-OrgID`.

use std::time::Duration;

use canary_core::Secret;

use super::{CanaryRules, RulesError};

/// Mimir's ruler configuration API; Cortex also serves it at `/api/v1/rules`.
pub const MIMIR_RULES_PREFIX: &str = "/prometheus/config/v1/rules";

/// Where the ruler is and whose rules canary writes.
#[derive(Debug, Clone)]
pub struct RulerConfig {
    /// The ruler's (or gateway's) base URL.
    pub url: String,
    /// The API path before `/<namespace>`: [`MIMIR_RULES_PREFIX`], or `/api/v1/rules` for Cortex.
    pub prefix: String,
    /// The rule namespace canary's groups live in (e.g. `canary`).
    pub namespace: String,
    /// `X-Scope-OrgID`, for a multi-tenant ruler.
    pub tenant: Option<String>,
    pub token: Option<Secret>,
    pub timeout: Duration,
}

/// A ruler API client.
#[derive(Debug, Clone)]
pub struct RulerClient {
    base: String,
    prefix: String,
    namespace: String,
    tenant: Option<String>,
    token: Option<Secret>,
    http: reqwest::Client,
}

/// A rule group canary put into a ruler; hand it back to [`RulerClient::remove`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledRuleGroup {
    pub namespace: String,
    pub group: String,
    pub alerts: Vec<String>,
}

impl RulerClient {
    pub fn new(cfg: RulerConfig) -> Result<Self, RulesError> {
        let base = cfg.url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(RulesError::Unreachable {
                url: cfg.url,
                detail: "the URL must start with http:// or https://".into(),
            });
        }
        if cfg.namespace.is_empty() || cfg.namespace.contains('/') {
            return Err(RulesError::Render {
                what: "the ruler namespace",
                detail: format!("{:?} must be a non-empty name without '/'", cfg.namespace),
            });
        }
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .build()
            .map_err(|e| RulesError::Unreachable {
                url: base.clone(),
                detail: e.to_string(),
            })?;
        Ok(RulerClient {
            base,
            prefix: format!("/{}", cfg.prefix.trim_matches('/')),
            namespace: cfg.namespace,
            tenant: cfg.tenant,
            token: cfg.token,
            http,
        })
    }

    fn group_url(&self, group: &str) -> String {
        format!(
            "{}{}/{}/{}",
            self.base,
            self.prefix,
            encode(&self.namespace),
            encode(group)
        )
    }

    /// Posts the run's rule group into the namespace and reads it back.
    pub async fn install(&self, rules: &CanaryRules) -> Result<InstalledRuleGroup, RulesError> {
        let url = format!("{}{}/{}", self.base, self.prefix, encode(&self.namespace));
        let req = self
            .http
            .post(&url)
            .header("content-type", "application/yaml")
            .body(rules.to_ruler_json());
        let (status, body) = self.send(req).await?;
        if !(200..300).contains(&status) {
            return Err(RulesError::RulerRejected {
                url: self.base.clone(),
                status,
                body,
            });
        }
        let group = rules.group().name.clone();
        if !self.is_loaded(&group).await? {
            return Err(RulesError::RulerMissing {
                url: self.base.clone(),
                namespace: self.namespace.clone(),
                group,
            });
        }
        tracing::info!(ruler = %self.base, namespace = %self.namespace, group = %group, "alert rules installed in the ruler");
        Ok(InstalledRuleGroup {
            namespace: self.namespace.clone(),
            group,
            alerts: rules
                .group()
                .rules
                .iter()
                .map(|r| r.alert.clone())
                .collect(),
        })
    }

    /// Deletes the group (already gone is fine) and checks it is gone.
    pub async fn remove(&self, installed: &InstalledRuleGroup) -> Result<(), RulesError> {
        let (status, body) = self
            .send(self.http.delete(self.group_url(&installed.group)))
            .await?;
        if !((200..300).contains(&status) || status == 404) {
            return Err(RulesError::RulerRejected {
                url: self.base.clone(),
                status,
                body,
            });
        }
        if self.is_loaded(&installed.group).await? {
            return Err(RulesError::RulerStillHas {
                url: self.base.clone(),
                namespace: installed.namespace.clone(),
                group: installed.group.clone(),
            });
        }
        Ok(())
    }

    /// Whether the namespace holds a group of this name (`GET <prefix>/<namespace>/<group>`).
    pub async fn is_loaded(&self, group: &str) -> Result<bool, RulesError> {
        let (status, body) = self.send(self.http.get(self.group_url(group))).await?;
        match status {
            200..=299 => Ok(true),
            404 => Ok(false),
            _ => Err(RulesError::RulerRejected {
                url: self.base.clone(),
                status,
                body,
            }),
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<(u16, String), RulesError> {
        let mut req = req;
        if let Some(tenant) = &self.tenant {
            req = req.header("X-Scope-OrgID", tenant);
        }
        if let Some(token) = &self.token {
            req = req.bearer_auth(token.expose());
        }
        let resp = req.send().await.map_err(|e| RulesError::Unreachable {
            url: self.base.clone(),
            detail: e.without_url().to_string(),
        })?;
        let status = resp.status().as_u16();
        if status == 401 || status == 403 {
            return Err(RulesError::Unauthorized {
                url: self.base.clone(),
                status,
            });
        }
        let body = resp.text().await.unwrap_or_default();
        Ok((status, body.trim().chars().take(500).collect()))
    }
}

/// Percent-encodes a path segment.
fn encode(segment: &str) -> String {
    let mut out = String::new();
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
