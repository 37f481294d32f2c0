//! Installs a run's rules into a running Prometheus: the rules file is written atomically into a
//! directory that `rule_files` covers, Prometheus is told to reload (`POST /-/reload`, which needs
//! `--web.enable-lifecycle`), and `GET /api/v1/rules` must show the group before the install
//! counts. Removal is the same in reverse.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use canary_core::Secret;
use serde::Deserialize;

use super::{CanaryRules, RulesError};

/// Where the rules go and how to reach Prometheus.
#[derive(Debug, Clone)]
pub struct RuleFileInstallerConfig {
    /// A directory matched by a `rule_files` glob in prometheus.yml (e.g.
    /// `/etc/prometheus/rules.d/*.rules.yml`).
    pub dir: PathBuf,
    /// Prometheus' base URL, with or without a trailing `/api/v1`.
    pub prometheus_url: String,
    pub token: Option<Secret>,
    /// Per-request timeout, and how long to wait for the group to appear or go.
    pub timeout: Duration,
}

/// Writes rules files and makes Prometheus load or drop them.
#[derive(Debug, Clone)]
pub struct RuleFileInstaller {
    dir: PathBuf,
    base: String,
    token: Option<Secret>,
    timeout: Duration,
    http: reqwest::Client,
}

/// A rules file canary installed; hand it back to [`RuleFileInstaller::remove`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledRules {
    pub path: PathBuf,
    pub group: String,
    /// Alert names in the group, for the evidence.
    pub alerts: Vec<String>,
}

#[derive(Deserialize)]
struct Envelope {
    status: String,
    data: Option<RulesData>,
    error: Option<String>,
}

#[derive(Deserialize)]
struct RulesData {
    groups: Vec<LoadedGroup>,
}

#[derive(Deserialize)]
struct LoadedGroup {
    name: String,
    file: String,
}

impl RuleFileInstaller {
    pub fn new(cfg: RuleFileInstallerConfig) -> Result<Self, RulesError> {
        let trimmed = cfg.prometheus_url.trim_end_matches('/');
        let base = trimmed
            .strip_suffix("/api/v1")
            .unwrap_or(trimmed)
            .to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(RulesError::Unreachable {
                url: cfg.prometheus_url,
                detail: "the URL must start with http:// or https://".into(),
            });
        }
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .build()
            .map_err(|e| RulesError::Unreachable {
                url: base.clone(),
                detail: e.to_string(),
            })?;
        Ok(RuleFileInstaller {
            dir: cfg.dir,
            base,
            token: cfg.token,
            timeout: cfg.timeout,
            http,
        })
    }

    /// Writes `rules` as `<dir>/<rules.file_name()>` (temp file + rename), reloads Prometheus
    /// and waits until `/api/v1/rules` lists the group from that file. When the reload fails or
    /// the group does not appear, the file is taken out again (a broken file would fail every
    /// later reload of Prometheus).
    pub async fn install(&self, rules: &CanaryRules) -> Result<InstalledRules, RulesError> {
        let path = self.dir.join(rules.file_name());
        let text = rules.to_rules_file()?;
        write_atomically(&path, &text).await?;
        if let Err(e) = self.reload().await {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(e);
        }
        let group = rules.group().name.clone();
        let deadline = Instant::now() + self.timeout;
        loop {
            let loaded = self.loaded_groups().await?;
            if loaded
                .iter()
                .any(|g| g.name == group && same_file(&g.file, &path))
            {
                break;
            }
            if Instant::now() >= deadline {
                // Not read by this Prometheus: do not leave the file behind.
                let _ = tokio::fs::remove_file(&path).await;
                let mut files: Vec<&str> = loaded.iter().map(|g| g.file.as_str()).collect();
                files.sort_unstable();
                files.dedup();
                return Err(RulesError::NotLoaded {
                    group,
                    path,
                    loaded: if files.is_empty() {
                        "none".into()
                    } else {
                        files.join(", ")
                    },
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tracing::info!(file = %path.display(), group = %group, "alert rules installed");
        Ok(InstalledRules {
            path,
            group,
            alerts: rules
                .group()
                .rules
                .iter()
                .map(|r| r.alert.clone())
                .collect(),
        })
    }

    /// Deletes the rules file (already gone is fine), reloads Prometheus and waits until the
    /// group is no longer loaded.
    pub async fn remove(&self, installed: &InstalledRules) -> Result<(), RulesError> {
        match tokio::fs::remove_file(&installed.path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(RulesError::Remove {
                    path: installed.path.clone(),
                    detail: e.to_string(),
                });
            }
        }
        self.reload().await?;
        let deadline = Instant::now() + self.timeout;
        while self.is_loaded(&installed.group).await? {
            if Instant::now() >= deadline {
                return Err(RulesError::NotRemoved {
                    group: installed.group.clone(),
                    path: installed.path.clone(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tracing::info!(file = %installed.path.display(), group = %installed.group, "alert rules removed");
        Ok(())
    }

    /// Whether Prometheus currently evaluates a rule group of this name.
    pub async fn is_loaded(&self, group: &str) -> Result<bool, RulesError> {
        Ok(self.loaded_groups().await?.iter().any(|g| g.name == group))
    }

    /// `POST /-/reload`.
    pub async fn reload(&self) -> Result<(), RulesError> {
        let url = format!("{}/-/reload", self.base);
        let resp = self.send(self.http.post(&url)).await?;
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        let body = body.trim().chars().take(500).collect::<String>();
        match status {
            200..=299 => Ok(()),
            401 => Err(RulesError::Unauthorized {
                url: self.base.clone(),
                status,
            }),
            403 if body.to_ascii_lowercase().contains("lifecycle") => {
                Err(RulesError::ReloadDisabled {
                    url: self.base.clone(),
                    status,
                    body,
                })
            }
            403 => Err(RulesError::Unauthorized {
                url: self.base.clone(),
                status,
            }),
            _ => Err(RulesError::ReloadFailed {
                url: self.base.clone(),
                status,
                body,
            }),
        }
    }

    async fn loaded_groups(&self) -> Result<Vec<LoadedGroup>, RulesError> {
        let url = format!("{}/api/v1/rules", self.base);
        let resp = self
            .send(self.http.get(&url).query(&[("type", "alert")]))
            .await?;
        let status = resp.status().as_u16();
        if status == 401 || status == 403 {
            return Err(RulesError::Unauthorized {
                url: self.base.clone(),
                status,
            });
        }
        let body = resp.bytes().await.map_err(|e| RulesError::Unreachable {
            url: self.base.clone(),
            detail: e.without_url().to_string(),
        })?;
        let envelope: Envelope =
            serde_json::from_slice(&body).map_err(|e| RulesError::Protocol {
                url: url.clone(),
                detail: format!(
                    "HTTP {status}, not the rules API's JSON ({e}): {}",
                    String::from_utf8_lossy(&body[..body.len().min(200)])
                ),
            })?;
        match (envelope.status.as_str(), envelope.data) {
            ("success", Some(data)) => Ok(data.groups),
            _ => Err(RulesError::Protocol {
                url,
                detail: envelope.error.unwrap_or_else(|| "no data".into()),
            }),
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, RulesError> {
        let req = match &self.token {
            Some(token) => req.bearer_auth(token.expose()),
            None => req,
        };
        req.send().await.map_err(|e| RulesError::Unreachable {
            url: self.base.clone(),
            detail: e.without_url().to_string(),
        })
    }
}

/// Whether Prometheus' `file` (as its `rule_files` glob expanded it, maybe relative) is `path`.
/// The file name carries the run id, so equal names are the same file.
fn same_file(file: &str, path: &Path) -> bool {
    let file = Path::new(file);
    file == path || file.file_name() == path.file_name()
}

/// Writes `text` to a hidden temp file beside `path` (outside any `*.yml` glob), fsyncs, renames.
async fn write_atomically(path: &Path, text: &str) -> Result<(), RulesError> {
    let err = |e: std::io::Error| RulesError::Write {
        path: path.to_owned(),
        detail: e.to_string(),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    {
        use tokio::io::AsyncWriteExt;
        let mut f = tokio::fs::File::create(&tmp).await.map_err(err)?;
        f.write_all(text.as_bytes()).await.map_err(err)?;
        f.sync_all().await.map_err(err)?;
    }
    tokio::fs::rename(&tmp, path).await.map_err(err)
}
