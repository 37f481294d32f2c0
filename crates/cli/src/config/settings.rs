//! Stage two, infrastructure half: the resolved, typed settings of each integration, with
//! secrets resolved into [`Secret`]s. The plan half is `canary_core::Plan`.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use canary_core::engine::Topic;
use canary_core::{ArmRole, Secret, choice};
pub use canary_providers::metrics::prometheus::PrometheusConfig;
pub use canary_providers::traffic::{HaproxyConfig, HaproxyEndpoint, NginxConfig};

choice! {
    /// `[traffic] provider`: which kind of load balancer [`TrafficSettings`] drives.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum TrafficProvider {
        Embedded = "embedded",
        Haproxy = "haproxy",
        Nginx = "nginx",
        Command = "command",
    }
}

choice! {
    /// Hosting platforms whose split canary changes through their own CLI, with the `command`
    /// provider: `provider = "railway"` (the runbook's `LB_PROVIDER=railway`) resolves to
    /// [`TrafficProvider::Command`], whose `set`/`verify` commands are that platform's.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum CommandPlatform {
        Railway = "railway",
    }
}

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
    Haproxy(HaproxyConfig),
    /// An nginx upstream include file, tested and reloaded.
    Nginx(NginxConfig),
    /// canary's own proxy (`canary proxy`), through its admin API.
    Embedded {
        admin: SocketAddr,
        token: Secret,
        /// The lease the controller holds; the proxy falls back to the baseline when it lapses.
        lease: Duration,
    },
}

impl TrafficSettings {
    /// How long a provider's command or request may take, unless `timeout` says.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
    /// The embedded proxy's admin API, unless `admin` says (`canary proxy`'s default).
    pub const DEFAULT_ADMIN: SocketAddr =
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9901));
    /// The embedded proxy's lease, unless `lease` says: long enough to ride out a few missed
    /// renewals, short enough that a dead controller's split does not linger.
    pub const DEFAULT_LEASE: Duration = Duration::from_secs(15);
    /// nginx's configuration test and reload, unless `test_command`/`reload_command` say.
    pub const DEFAULT_NGINX_TEST: &str = "nginx -t";
    pub const DEFAULT_NGINX_RELOAD: &str = "nginx -s reload";

    pub fn provider(&self) -> TrafficProvider {
        match self {
            TrafficSettings::Command { .. } => TrafficProvider::Command,
            TrafficSettings::Haproxy { .. } => TrafficProvider::Haproxy,
            TrafficSettings::Nginx { .. } => TrafficProvider::Nginx,
            TrafficSettings::Embedded { .. } => TrafficProvider::Embedded,
        }
    }
}

choice! {
    /// `[metrics] source`: where guardrail queries run ([`MetricsSettings`]).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum MetricsSource {
        Prometheus = "prometheus",
        Embedded = "embedded",
    }
}

/// Where guardrail queries run.
#[derive(Debug, Clone)]
pub enum MetricsSettings {
    Prometheus(PrometheusConfig),
    Embedded {
        scrape_interval: Duration,
        targets: Vec<ScrapeTarget>,
    },
}

impl MetricsSettings {
    /// How long a Prometheus query may take, unless `timeout` says.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
    /// How often the embedded store scrapes its targets, unless `scrape_interval` says.
    pub const DEFAULT_SCRAPE_INTERVAL: Duration = Duration::from_secs(5);
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
    pub callback_listen: SocketAddr,
    pub callback_token: Option<Secret>,
    pub rules_dir: Option<PathBuf>,
    /// How often Prometheus evaluates the run's rules; `None`: as often as the engine evaluates
    /// (`[run] evaluation_interval`).
    pub rule_interval: Option<Duration>,
    /// A Mimir/Cortex ruler the rules go into instead of `rules_dir`.
    pub ruler: Option<RulerSettings>,
}

/// `[alertmanager] ruler*`: where a Grafana Mimir (or Cortex) ruler takes the run's rules. The
/// ruler is authenticated with `[metrics] token` (Mimir's querier and ruler sit behind one
/// gateway).
#[derive(Debug, Clone)]
pub struct RulerSettings {
    pub url: String,
    pub namespace: String,
    pub tenant: Option<String>,
    pub api: String,
}

impl RulerSettings {
    /// The namespace canary's rule groups go into, unless `ruler_namespace` says.
    pub const DEFAULT_NAMESPACE: &str = "canary";
}

impl AlertmanagerSettings {
    /// Where the controller listens for Alertmanager's webhook, unless `callback_listen` says.
    pub const DEFAULT_CALLBACK_LISTEN: SocketAddr =
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9977));
}

choice! {
    /// `[load] target`: which way the burst is sent.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum LoadTarget {
        /// Through the load balancer, as the runbook does.
        Lb = "lb",
        /// At the canary only.
        Canary = "canary",
        /// Both, reported separately.
        Both = "both",
    }
}

#[derive(Debug, Clone)]
pub struct LoadUser {
    pub name: String,
    pub token: Secret,
    pub marker: Option<Secret>,
}

/// The runbook's burst: what it sends. When it runs is the plan's
/// ([`canary_core::plan::BurstPlan`]).
#[derive(Debug, Clone)]
pub struct LoadSettings {
    pub url: String,
    pub method: String,
    pub path: String,
    pub requests_per_user: u32,
    pub pause: Duration,
    pub target: LoadTarget,
    /// The percentage of requests that must succeed: the plan's burst's, for `canary load`.
    pub min_success_rate: f64,
    pub expect_status: u16,
    pub body: String,
    pub queries: Vec<String>,
    pub users: Vec<LoadUser>,
}

choice! {
    /// `[[notify]] kind`: which [`NotifyChannel`] a notifier is.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum NotifyKind {
        Slack = "slack",
        PagerDuty = "pagerduty",
        Email = "email",
        Webhook = "webhook",
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
        /// The Events API v2 endpoint: `None` is PagerDuty's default (US service region).
        url: Option<String>,
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
    /// The topics it is told about (`on = [...]`).
    pub on: Vec<Topic>,
}

#[derive(Debug, Clone)]
pub struct EvidenceSettings {
    /// Where each run's bundle directory is written.
    pub dir: PathBuf,
    pub signing_key: Option<Secret>,
    /// `commit = true`: the git repository the sealed bundle is committed to — the one that
    /// contains `dir`, found when the configuration is resolved. `canary run --commit REPO`
    /// overrides it.
    pub commit: Option<PathBuf>,
}

impl EvidenceSettings {
    /// Where bundles go, relative to the configuration file, unless `dir` says.
    pub const DEFAULT_DIR: &str = "canary-evidence";
}
