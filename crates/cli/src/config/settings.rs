//! Stage two, infrastructure half: the resolved, typed settings of each integration, with
//! secrets resolved into [`Secret`]s. The plan half is `canary_core::Plan`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use canary_core::{ArmRole, Secret};
pub use canary_providers::traffic::HaproxyEndpoint;

/// How the traffic split is changed and read back.
#[derive(Debug, Clone)]
pub enum TrafficSettings {
    /// Shell templates with `{canary}` / `{baseline}` percentages.
    Command {
        set: String,
        verify: String,
        /// Must capture the canary's percentage in a group named `canary`.
        verify_regex: String,
        /// Passed to the commands' environment.
        env: Vec<(String, Secret)>,
        timeout: Duration,
    },
    /// HAProxy's runtime API.
    Haproxy {
        endpoint: HaproxyEndpoint,
        backend: String,
        canary_server: String,
        baseline_server: String,
    },
    /// An nginx upstream include file, tested and reloaded.
    Nginx {
        upstream_file: PathBuf,
        upstream: String,
        canary_addr: String,
        baseline_addr: String,
        test_command: String,
        reload_command: String,
    },
    /// canary's own proxy (`canary proxy`), through its admin API.
    Embedded {
        admin: SocketAddr,
        token: Secret,
        /// The lease the controller holds; the proxy falls back to the baseline when it lapses.
        lease: Duration,
    },
}

impl TrafficSettings {
    pub fn provider(&self) -> &'static str {
        match self {
            TrafficSettings::Command { .. } => "command",
            TrafficSettings::Haproxy { .. } => "haproxy",
            TrafficSettings::Nginx { .. } => "nginx",
            TrafficSettings::Embedded { .. } => "embedded",
        }
    }
}

/// Where guardrail queries run.
#[derive(Debug, Clone)]
pub enum MetricsSettings {
    Prometheus {
        url: String,
        token: Option<Secret>,
        timeout: Duration,
    },
    Embedded {
        scrape_interval: Duration,
        targets: Vec<ScrapeTarget>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ScrapeTarget {
    pub url: String,
    pub arm: Option<ArmRole>,
    pub job: String,
}

#[derive(Debug, Clone)]
pub struct GrafanaSettings {
    pub url: String,
    pub token: Secret,
    pub folder: Option<String>,
}

#[derive(Debug, Clone)]
pub struct AlertmanagerSettings {
    pub url: String,
    pub token: Option<Secret>,
    pub webhook_url: Option<Secret>,
    pub callback_listen: SocketAddr,
    pub callback_token: Option<Secret>,
    pub rules_dir: Option<PathBuf>,
}

/// Which way the burst is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadTarget {
    /// Through the load balancer, as the runbook does.
    Lb,
    /// At the canary only.
    Canary,
    /// Both, reported separately.
    Both,
}

#[derive(Debug, Clone)]
pub struct LoadUser {
    pub name: String,
    pub token: Secret,
    pub marker: Option<Secret>,
}

/// The runbook's burst.
#[derive(Debug, Clone)]
pub struct LoadSettings {
    pub at: Duration,
    pub url: String,
    pub method: String,
    pub path: String,
    pub requests_per_user: u32,
    pub pause: Duration,
    pub target: LoadTarget,
    pub min_success_rate: f64,
    pub expect_status: u16,
    pub body: String,
    pub queries: Vec<String>,
    pub users: Vec<LoadUser>,
}

/// When a notifier is told something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyOn {
    Start,
    Check,
    Breach,
    Rollback,
    Decision,
}

impl NotifyOn {
    pub const NAMES: [&'static str; 5] = ["start", "check", "breach", "rollback", "decision"];

    pub fn parse(s: &str) -> Option<NotifyOn> {
        Some(match s {
            "start" => NotifyOn::Start,
            "check" => NotifyOn::Check,
            "breach" => NotifyOn::Breach,
            "rollback" => NotifyOn::Rollback,
            "decision" => NotifyOn::Decision,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone)]
pub enum NotifyChannel {
    Slack {
        webhook: Secret,
        channel: Option<String>,
    },
    PagerDuty {
        routing_key: Secret,
    },
    Email {
        smtp: String,
        password: Option<Secret>,
        from: String,
        to: Vec<String>,
    },
    Webhook {
        url: Secret,
    },
}

#[derive(Debug, Clone)]
pub struct NotifySettings {
    pub channel: NotifyChannel,
    pub on: Vec<NotifyOn>,
}

#[derive(Debug, Clone)]
pub struct EvidenceSettings {
    pub dir: PathBuf,
    pub signing_key: Option<Secret>,
    pub commit: bool,
}
