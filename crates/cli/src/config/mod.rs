//! `canary.toml`: parse (stage one, [`raw`]), then resolve into the engine's [`Plan`] and the
//! typed settings of each integration (stage two, [`settings`]).
//!
//! Every problem is collected before reporting, each with file:line:col and a fix; all missing
//! variables are listed together. A command resolves only the sections it needs ([`Needs`]), so
//! `canary backtest` never asks for a Grafana token.

pub mod diagnostic;
pub mod env;
pub mod raw;
pub mod settings;

use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use canary_core::engine::Topic;
use canary_core::plan::{
    Approval, ApprovalMode, Arm, Arms, BurstPlan, Comparator, CompareSpec, Guardrail,
    InconclusiveMode, Measure, MeasureKind, OnBreach, OnInconclusive, OnNoData, Plan, PlanError,
    Step, Threshold, ThresholdError, UnknownName,
};
use canary_core::{ArmRole, duration};
use canary_load::Scenario;
use canary_promql::ArmSelector;
use canary_providers::alertmanager::CredentialRef;
use canary_providers::health::HealthCheck;
use toml::Spanned;

use diagnostic::{ConfigErrors, Diagnostic, did_you_mean};
use env::Env;
use raw::{RawConfig, Scalar, ScalarType, Text, Typed};
use settings::*;

/// The commented runbook configuration `canary init` writes.
pub const INIT_TEMPLATE: &str = include_str!("canary.init.toml");

/// Which sections a command resolves (and therefore which variables it needs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    pub traffic: bool,
    pub metrics: bool,
    pub grafana: bool,
    pub alertmanager: bool,
    pub load: bool,
    pub notify: bool,
    pub evidence: bool,
}

impl Needs {
    pub const ALL: Needs = Needs {
        traffic: true,
        metrics: true,
        grafana: true,
        alertmanager: true,
        load: true,
        notify: true,
        evidence: true,
    };
    /// The plan only.
    pub const PLAN: Needs = Needs {
        traffic: false,
        metrics: false,
        grafana: false,
        alertmanager: false,
        load: false,
        notify: false,
        evidence: false,
    };
}

/// A resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub file: PathBuf,
    /// SHA-256 of the file's bytes, recorded in the evidence.
    pub sha256: String,
    pub plan: Plan,
    pub cooldown: Duration,
    pub state_dir: PathBuf,
    /// Where history, cooldowns, run locks and journals live: `[state] url` or
    /// `CANARY_STATE_URL` (PostgreSQL), else the embedded store in `state_dir`.
    pub state_url: Option<canary_core::Secret>,
    /// How long a controller's lock on the service lasts unless renewed: a standby takes the run
    /// over this long after its controller died.
    pub lease: Duration,
    /// The canary's own address, bypassing the load balancer, when configured.
    pub canary_url: Option<String>,
    /// Health checks straight at the arms (`[arms.*] health`), for load balancers that do not
    /// report the arms' health.
    pub health: Vec<HealthCheck>,
    pub traffic: Option<TrafficSettings>,
    pub metrics: Option<MetricsSettings>,
    pub grafana: Option<GrafanaSettings>,
    pub alertmanager: Option<AlertmanagerSettings>,
    /// `[alertmanager] webhook_url`: the escalation webhook of the Alertmanager route `canary
    /// render alertmanager` writes, as the variable the operator substitutes (it is a
    /// credential: canary never writes its value). Needs no variable set.
    pub escalation: Option<CredentialRef>,
    pub load: Option<LoadSettings>,
    pub notify: Vec<NotifySettings>,
    pub evidence: Option<EvidenceSettings>,
    /// Things worth saying that do not stop the command.
    pub warnings: Vec<String>,
    /// Every variable the resolved sections referenced.
    pub variables: Vec<String>,
}

impl Config {
    /// After a ROLLBACK, how long a new run of the service waits, unless `cooldown` says.
    pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(24 * 3600);
    /// Run history and cooldowns, relative to the configuration file, unless `state_dir` says.
    pub const DEFAULT_STATE_DIR: &str = ".canary";
    /// The variable that points every command at a shared store when `[state] url` is absent.
    pub const STATE_URL_VAR: &str = "CANARY_STATE_URL";
    /// A controller's lock on its service, unless `[state] lease` says.
    pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
    /// The shortest lease a compressed clock gives (`--time-scale`, the demo).
    pub const MIN_COMPRESSED_LEASE: Duration = Duration::from_secs(2);

    /// Where this configuration's run state lives.
    pub fn state(&self) -> canary_state::Location {
        canary_state::Location::new(self.state_url.clone(), &self.state_dir)
    }

    /// The run on a clock `factor` times faster than the runbook's (a rehearsal, the demo):
    /// every duration of the plan, the cooldown and the run lock's lease (not below 2 s)
    /// divided by `factor`; range windows in
    /// queries are compressed where they are evaluated (engine, alert rules, dashboard).
    pub fn compressed(mut self, factor: f64) -> Config {
        if factor != 1.0 {
            self.plan = self.plan.compressed(factor);
            self.cooldown = Duration::from_secs_f64(self.cooldown.as_secs_f64() / factor);
            // A dead controller's run is taken over after its lease: on the run's clock too,
            // but not below what a store round trip and its renewals (every third) allow.
            self.lease = Duration::from_secs_f64(self.lease.as_secs_f64() / factor)
                .max(Config::MIN_COMPRESSED_LEASE)
                .min(self.lease);
            if let Some(am) = &mut self.alertmanager
                && let Some(every) = &mut am.rule_interval
            {
                *every = Duration::from_secs_f64(every.as_secs_f64() / factor);
            }
        }
        self
    }
}

/// Loads and resolves `path`. `env` supplies variables (see [`Env::load`]).
pub fn load(path: &Path, needs: Needs, env: Env) -> Result<Config, ConfigErrors> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| ConfigErrors {
        file: file.clone(),
        source: String::new(),
        diagnostics: vec![Diagnostic {
            span: None,
            message: format!("cannot read the configuration: {e}"),
            help: Some("create one with `canary init --out canary.toml`".into()),
        }],
    })?;
    let source = String::from_utf8(bytes).map_err(|e| not_utf8(&file, &e))?;
    let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let mut config = resolve_text(&file, &source, &base, needs, env)?;
    config.file = path.to_path_buf();
    Ok(config)
}

/// The error for a file that is not UTF-8 (TOML must be), pointing at the first bad byte.
fn not_utf8(file: &str, e: &std::string::FromUtf8Error) -> ConfigErrors {
    let at = e.utf8_error().valid_up_to();
    let byte = e.as_bytes()[at];
    // Up to `at` the text is valid, so the lossy text has the same offsets there, and the bad
    // byte shows as U+FFFD (3 bytes) in the excerpt.
    let source = String::from_utf8_lossy(e.as_bytes()).into_owned();
    ConfigErrors {
        file: file.to_owned(),
        source,
        diagnostics: vec![Diagnostic {
            span: Some(at..at + '\u{FFFD}'.len_utf8()),
            message: format!("byte 0x{byte:02x} is not UTF-8: a TOML file must be UTF-8 text"),
            help: Some(format!(
                "save the file as UTF-8 (from Latin-1: `iconv -f latin1 -t utf-8 {file}`)"
            )),
        }],
    }
}

/// Resolves configuration text; `base` is the directory relative paths are taken from.
pub fn resolve_text(
    file: &str,
    source: &str,
    base: &Path,
    needs: Needs,
    env: Env,
) -> Result<Config, ConfigErrors> {
    let fail = |diagnostics: Vec<Diagnostic>| ConfigErrors {
        file: file.to_owned(),
        source: source.to_owned(),
        diagnostics,
    };
    let raw: RawConfig =
        toml::from_str(source).map_err(|e| fail(vec![diagnostic::from_toml(&e)]))?;
    let mut r = Resolver {
        env,
        diagnostics: Vec::new(),
        base: base.to_path_buf(),
    };
    let config = r.resolve(&raw, needs, source);
    if !r.env.missing().is_empty() {
        // One error for all of them, each with where it is first used.
        let missing = r.env.missing();
        let width = missing.keys().map(String::len).max().unwrap_or(0);
        let mut message = format!(
            "{} variable{} not set{}:",
            missing.len(),
            if missing.len() == 1 { " is" } else { "s are" },
            r.env.file.as_ref().map_or(String::new(), |f| format!(
                " (in the environment or {})",
                f.display()
            ))
        );
        for (name, spans) in missing {
            let (line, col) = spans
                .first()
                .map_or((0, 0), |s| diagnostic::line_col(source, s.start));
            message.push_str(&format!(
                "\n    {name:<width$}  used at {file}:{line}:{col}"
            ));
        }
        r.diagnostics.push(Diagnostic {
            span: None,
            message,
            help: Some(format!(
                "export them, or put NAME=value lines in {} next to the config (chmod 600, never commit it){}",
                env::ENV_FILE,
                generated_help(missing.keys())
            )),
        });
    }
    match config {
        Some(config) if r.diagnostics.is_empty() => Ok(config),
        _ => Err(fail(r.diagnostics)),
    }
}

/// For the variables the runbook does not stage and `canary init` generates (lost when
/// `.env.canary` is written over), how to make them again.
fn generated_help<'a>(missing: impl Iterator<Item = &'a String>) -> String {
    let mut help = String::new();
    for name in missing {
        match name.as_str() {
            "CANARY_SIGNING_KEY" => {
                help.push_str("; CANARY_SIGNING_KEY: `canary keygen >> .env.canary`")
            }
            "CANARY_ALERT_TOKEN" => help.push_str(
                "; CANARY_ALERT_TOKEN: any long random string, e.g. `echo CANARY_ALERT_TOKEN=$(openssl rand -hex 24) >> .env.canary`",
            ),
            _ => {}
        }
    }
    help
}

struct Resolver {
    env: Env,
    diagnostics: Vec<Diagnostic>,
    base: PathBuf,
}

fn span_of<T>(s: &Spanned<T>) -> Range<usize> {
    s.span()
}

impl Resolver {
    fn error(&mut self, span: Range<usize>, message: impl Into<String>, help: impl Into<String>) {
        self.diagnostics
            .push(Diagnostic::at(span, message).help(help));
    }

    /// `text` with its `${VAR}`s expanded, for a value typed next, and where it came from for
    /// its errors (` (from ${VAR})`, empty for a literal). `None` when a variable has no value:
    /// missing variables are reported together, and offline (`validate --no-env`) such a value
    /// cannot be checked, which is an error.
    fn typed_text(&mut self, text: &Text) -> Option<(String, String)> {
        let expanded = self.env.expand_typed(text);
        if !expanded.complete {
            if self.env.is_offline() {
                let name = expanded.variables.first().cloned().unwrap_or_default();
                self.error(
                    span_of(text),
                    format!(
                        "{:?} cannot be checked without its variables, which --no-env does not read",
                        text.get_ref()
                    ),
                    format!(
                        "give the variable a default, such as \"${{{name}:-...}}\", or validate with the variables set"
                    ),
                );
            }
            return None;
        }
        let origin = if expanded.variables.is_empty() {
            String::new()
        } else {
            let names: Vec<String> = expanded
                .variables
                .iter()
                .map(|v| format!("${{{v}}}"))
                .collect();
            format!(" (from {})", names.join(", "))
        };
        Some((expanded.text, origin))
    }

    /// A number or boolean written as itself or as text with `${VAR}`s, with where it came from
    /// (see [`Resolver::typed_text`]). A value that is not a `T` is an error at its span.
    fn scalar<T: ScalarType + Copy>(
        &mut self,
        s: &Typed<T>,
        key: &str,
        help: &str,
    ) -> Option<(T, String)> {
        match s.get_ref() {
            Scalar::Value(v) => Some((*v, String::new())),
            Scalar::Text(t) => {
                let text = Spanned::new(span_of(s), t.clone());
                let (value, origin) = self.typed_text(&text)?;
                match value.trim().parse::<T>() {
                    Ok(v) => Some((v, origin)),
                    Err(_) => {
                        self.error(
                            span_of(s),
                            format!("{key} {value:?}{origin} is not {}", T::EXPECTED),
                            help,
                        );
                        None
                    }
                }
            }
        }
    }

    fn duration(&mut self, text: &Text) -> Option<Duration> {
        let (value, origin) = self.typed_text(text)?;
        match duration::parse(&value) {
            Ok(d) => Some(d),
            Err(e) => {
                let mut help = match e {
                    duration::DurationError::Empty => {
                        "write a number and a unit, such as \"5m\" or \"30s\"".to_owned()
                    }
                    duration::DurationError::Invalid { .. } => {
                        "write a whole number followed by a unit (ms, s, m, h, d, w), largest unit first, such as \"90s\", \"1h30m\" or \"100ms\"".to_owned()
                    }
                };
                if !origin.is_empty() {
                    help.push_str(&format!(
                        "; the value is {:?} with each variable's value put in",
                        text.get_ref()
                    ));
                    if text.get_ref().ends_with("}m") {
                        help.push_str(
                            " (a variable before \"m\" counts whole minutes, such as 60)",
                        );
                    }
                }
                self.error(
                    span_of(text),
                    format!("{value:?}{origin} is not a duration"),
                    help,
                );
                None
            }
        }
    }

    fn duration_or(&mut self, text: &Option<Text>, default: Duration) -> Option<Duration> {
        match text {
            Some(t) => self.duration(t),
            None => Some(default),
        }
    }

    /// The choice `text` names (a [`canary_core::choice!`] enum); otherwise an error listing
    /// the choice's names, with a did-you-mean.
    fn choose<T: FromStr<Err = UnknownName>>(&mut self, text: &Text, what: &str) -> Option<T> {
        let (value, origin) = self.typed_text(text)?;
        match value.parse() {
            Ok(choice) => Some(choice),
            Err(UnknownName { expected, .. }) => {
                self.unknown(text, (&value, &origin), what, expected, "");
                None
            }
        }
    }

    /// `text`, which expanded to `value` (from `origin`), is none of `names`: says so, with a
    /// did-you-mean; `more` ends the help.
    fn unknown(
        &mut self,
        text: &Text,
        (value, origin): (&str, &str),
        what: &str,
        names: &[&str],
        more: &str,
    ) {
        let help = match did_you_mean(value, names.iter().copied()) {
            Some(best) => format!(
                "did you mean \"{best}\"? ({what} is one of {}{more})",
                names.join(", ")
            ),
            None => format!("{what} is one of {}{more}", names.join(", ")),
        };
        self.error(
            span_of(text),
            format!("unknown {what} {value:?}{origin}"),
            help,
        );
    }

    /// `[traffic] provider`: a provider, or a hosting platform driven through its CLI by the
    /// `command` provider ([`CommandPlatform`]: the runbook's `LB_PROVIDER=railway`).
    /// Also says where it came from (see [`Resolver::typed_text`]).
    fn traffic_provider(&mut self, text: &Text) -> Option<(TrafficProvider, String)> {
        let (value, origin) = self.typed_text(text)?;
        if let Ok(provider) = value.parse() {
            return Some((provider, origin));
        }
        if value.parse::<CommandPlatform>().is_ok() {
            return Some((TrafficProvider::Command, origin));
        }
        let more = format!(
            "; a platform driven by the `command` provider's set/verify commands: {}",
            CommandPlatform::NAMES.join(", ")
        );
        self.unknown(
            text,
            (&value, &origin),
            "traffic provider",
            TrafficProvider::NAMES,
            &more,
        );
        None
    }

    /// A key that `context` requires.
    fn require<'t>(
        &mut self,
        value: &'t Option<Text>,
        table_span: &Range<usize>,
        key: &str,
        context: &str,
    ) -> Option<&'t Text> {
        if value.is_none() {
            self.error(
                table_span.clone(),
                format!("{context} needs `{key}`"),
                format!("add `{key} = \"...\"` to this table"),
            );
        }
        value.as_ref()
    }

    fn path(&mut self, text: &Text) -> PathBuf {
        let p = PathBuf::from(self.env.expand(text));
        if p.is_absolute() {
            p
        } else {
            self.base.join(p)
        }
    }

    fn socket_addr(&mut self, text: &Text) -> Option<SocketAddr> {
        let (value, origin) = self.typed_text(text)?;
        match value.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.error(
                    span_of(text),
                    format!("{value:?}{origin} is not an address"),
                    "write IP:PORT, such as \"127.0.0.1:8080\"",
                );
                None
            }
        }
    }

    fn url(&mut self, text: &Text) -> String {
        let value = self.env.expand(text);
        // An empty value comes from a missing variable, which is reported on its own.
        if !(value.is_empty() || value.starts_with("http://") || value.starts_with("https://")) {
            self.error(
                span_of(text),
                format!("{value:?} is not an http(s) URL"),
                "write a URL starting with http:// or https://",
            );
        }
        value
    }

    /// Each arm's `health`: a full URL, or a path on the arm's `url`.
    fn health_checks(&mut self, arms: &raw::RawArms) -> Vec<HealthCheck> {
        let mut checks = Vec::new();
        for (arm, a) in [
            (ArmRole::Baseline, arms.baseline.get_ref()),
            (ArmRole::Canary, arms.canary.get_ref()),
        ] {
            let Some(health) = &a.health else { continue };
            let value = self.env.expand(health);
            let url = if value.starts_with("http://") || value.starts_with("https://") {
                value
            } else if !value.starts_with('/') {
                self.error(
                    span_of(health),
                    format!("health {value:?} is neither a path nor an http(s) URL"),
                    "write a path on the arm's url, such as \"/healthz\", or a full URL",
                );
                continue;
            } else if let Some(base) = &a.url {
                format!("{}{value}", self.url(base).trim_end_matches('/'))
            } else {
                self.error(
                    span_of(health),
                    format!("health is a path but [arms.{arm}] has no url to check it on"),
                    format!(
                        "add `url = \"http://...\"` to [arms.{arm}], or give health as a full URL"
                    ),
                );
                continue;
            };
            checks.push(HealthCheck::new(arm, url));
        }
        checks
    }

    fn resolve(&mut self, raw: &RawConfig, needs: Needs, source: &str) -> Option<Config> {
        let plan = self.plan(raw);
        let run = raw.run.get_ref();
        let cooldown = self.duration_or(&run.cooldown, Config::DEFAULT_COOLDOWN);
        let state_dir = match &run.state_dir {
            Some(t) => self.path(t),
            None => self.base.join(Config::DEFAULT_STATE_DIR),
        };
        let state = raw.state.as_ref().map(|s| s.get_ref());
        let state_url = match state.and_then(|s| s.url.as_ref()) {
            Some(url) => {
                let secret = self.env.secret(url);
                let text = secret.expose();
                let postgres = text.starts_with("postgres://") || text.starts_with("postgresql://");
                if !(text.is_empty() || postgres) {
                    self.error(
                        span_of(url),
                        "[state] url is not a PostgreSQL URL".to_owned(),
                        "write url = \"${CANARY_STATE_URL}\" and put postgres://USER:PASSWORD@HOST:5432/DATABASE in .env.canary (it holds a password), or remove [state] url for the embedded store",
                    );
                }
                (!text.is_empty()).then_some(secret)
            }
            None => self.env.optional(Config::STATE_URL_VAR),
        };
        let lease = self.duration_or(&state.and_then(|s| s.lease.clone()), Config::DEFAULT_LEASE);
        let arms = raw.arms.get_ref();
        let canary_url = arms.canary.get_ref().url.as_ref().map(|u| self.url(u));
        let health = self.health_checks(arms);

        let traffic = match (&raw.traffic, needs.traffic) {
            (Some(t), true) => self.traffic(t),
            _ => None,
        };
        let metrics = match (&raw.metrics, needs.metrics) {
            (Some(m), true) => self.metrics(m),
            _ => None,
        };
        let grafana = match (&raw.grafana, needs.grafana) {
            (Some(g), true) => {
                let g = g.get_ref();
                Some(GrafanaSettings {
                    url: self.url(&g.url),
                    token: self.env.secret(&g.token),
                    folder: g.folder.as_ref().map(|f| self.env.expand(f)),
                })
            }
            _ => None,
        };
        let alertmanager = match (&raw.alertmanager, needs.alertmanager) {
            (Some(a), true) => {
                let a = a.get_ref();
                let callback_listen = match &a.callback_listen {
                    Some(l) => self.socket_addr(l),
                    None => Some(AlertmanagerSettings::DEFAULT_CALLBACK_LISTEN),
                };
                let rule_interval = match &a.rule_interval {
                    Some(d) => Some(self.duration(d)?),
                    None => None,
                };
                if let (Some(_), Some(ruler)) = (&a.rules_dir, &a.ruler) {
                    self.error(
                        span_of(ruler),
                        "[alertmanager] has both rules_dir and ruler",
                        "keep one: rules_dir for a Prometheus that loads a rules directory, ruler for a Mimir/Cortex ruler",
                    );
                    return None;
                }
                let ruler = a.ruler.as_ref().map(|url| RulerSettings {
                    url: self.url(url),
                    namespace: a.ruler_namespace.as_ref().map_or_else(
                        || RulerSettings::DEFAULT_NAMESPACE.to_owned(),
                        |n| self.env.expand(n),
                    ),
                    tenant: a.ruler_tenant.as_ref().map(|t| self.env.expand(t)),
                    api: a.ruler_api.as_ref().map_or_else(
                        || canary_providers::rules::MIMIR_RULES_PREFIX.to_owned(),
                        |p| self.env.expand(p),
                    ),
                });
                Some(AlertmanagerSettings {
                    url: self.url(&a.url),
                    token: a.token.as_ref().map(|t| self.env.secret(t)),
                    callback_listen: callback_listen?,
                    callback_token: a.callback_token.as_ref().map(|t| self.env.secret(t)),
                    rules_dir: a.rules_dir.as_ref().map(|d| self.path(d)),
                    rule_interval,
                    ruler,
                })
            }
            _ => None,
        };
        let load = match (&raw.load, needs.load) {
            (Some(l), true) => self.load(l, plan.as_ref()),
            _ => None,
        };
        let notify = if needs.notify {
            raw.notify.iter().filter_map(|n| self.notify(n)).collect()
        } else {
            Vec::new()
        };
        let evidence = if needs.evidence {
            let e = raw.evidence.as_ref().map(|e| e.get_ref());
            let dir = match e.and_then(|e| e.dir.as_ref()) {
                Some(d) => self.path(d),
                None => self.base.join(EvidenceSettings::DEFAULT_DIR),
            };
            let commit = match e.and_then(|e| e.commit.as_ref()) {
                Some(c) => match self.scalar(c, "commit", "write true or false") {
                    Some((true, _)) => self.commit_repo(span_of(c), &dir),
                    _ => None,
                },
                None => None,
            };
            Some(EvidenceSettings {
                signing_key: e
                    .and_then(|e| e.signing_key.as_ref())
                    .map(|k| self.env.secret(k)),
                dir,
                commit,
            })
        } else {
            None
        };

        let mut plan = plan?;
        plan.probes = raw.load.as_ref().is_some_and(|l| {
            l.get_ref()
                .users
                .iter()
                .filter(|u| u.get_ref().marker.is_some())
                .count()
                >= 2
        });
        let escalation = raw
            .alertmanager
            .as_ref()
            .and_then(|a| a.get_ref().webhook_url.as_ref())
            .and_then(|w| self.escalation(w));
        let mut warnings = std::mem::take(&mut self.env.warnings);
        let baseline = arms.baseline.get_ref();
        if baseline.url.is_some() && baseline.health.is_none() {
            warnings.push(
                "[arms.baseline] url is used only for its health check, and it has none: add `health = \"/healthz\"` or remove the url".to_owned(),
            );
        }
        let watched = health.iter().any(|h| h.arm == ArmRole::Canary);
        if let Some(t) = &traffic
            && t.provider() != TrafficProvider::Embedded
            && !watched
        {
            warnings.push(format!(
                "nothing watches the canary's health: the {} provider does not report it; give [arms.canary] a `url` and `health = \"/healthz\"` so a canary that goes down rolls back at once",
                t.provider()
            ));
        }
        if raw.load.is_some() && !plan.probes {
            warnings.push(
                "no isolation probes: give at least two [[load.users]] a `marker` (a secret string only that user's data contains) to prove tenant isolation actively".to_owned(),
            );
        }
        Some(Config {
            file: PathBuf::new(),
            sha256: sha256_hex(source.as_bytes()),
            plan,
            cooldown: cooldown?,
            state_dir,
            state_url,
            lease: lease?,
            canary_url,
            health,
            traffic,
            metrics,
            grafana,
            alertmanager,
            escalation,
            load,
            notify,
            evidence,
            warnings,
            variables: self.env.used.iter().cloned().collect(),
        })
    }

    /// `[alertmanager] webhook_url`, which must be a lone `${VARIABLE}`: the rendered route
    /// names the variable and never holds the URL (for Slack or PagerDuty, a credential).
    fn escalation(&mut self, text: &Text) -> Option<CredentialRef> {
        let value = text.get_ref().trim();
        match value
            .strip_prefix("${")
            .and_then(|v| v.strip_suffix('}'))
            .filter(|name| env::is_var_name(name))
        {
            Some(variable) => Some(CredentialRef::Placeholder {
                variable: variable.to_owned(),
            }),
            None => {
                self.error(
                    span_of(text),
                    "webhook_url must name a variable: the rendered Alertmanager route refers to it and never holds the URL, which is a credential",
                    "write it as \"${ALERT_WEBHOOK_URL}\" and substitute the variable when merging `canary render alertmanager`'s output",
                );
                None
            }
        }
    }

    /// `[evidence] commit = true`: the git repository that holds the evidence directory `dir`
    /// (which need not exist yet), refusing one that ignores it.
    fn commit_repo(&mut self, at: Range<usize>, dir: &Path) -> Option<PathBuf> {
        let shown = dir.display().to_string();
        let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        let no = "set commit = false, or name the repository with `canary run --commit REPO`";
        let git = |cwd: &Path, args: &[&str]| {
            std::process::Command::new("git")
                .arg("-C")
                .arg(cwd)
                .args(args)
                .stdin(std::process::Stdio::null())
                .output()
        };
        // `git -C` needs a directory that exists: the nearest one up from `dir`.
        let existing = dir.ancestors().find(|a| a.is_dir()).unwrap_or(&dir);
        let top = match git(existing, &["rev-parse", "--show-toplevel"]) {
            Err(e) => {
                self.error(
                    at,
                    format!("commit = true, but git cannot run: {e}"),
                    format!("install git, or {no}"),
                );
                return None;
            }
            Ok(out) if !out.status.success() => {
                self.error(
                    at,
                    format!("commit = true, but the evidence directory {shown} is not in a git repository"),
                    format!("run `git init` where the evidence should be kept, or {no}"),
                );
                return None;
            }
            Ok(out) => PathBuf::from(String::from_utf8_lossy(&out.stdout).trim_end()),
        };
        // A file of a bundle, so that both `dir` and `dir/` patterns match, whether or not the
        // directory exists yet.
        let inside = dir.join("manifest.json");
        if let Ok(out) = git(
            &top,
            &["check-ignore", "-q", "--", &inside.to_string_lossy()],
        ) && out.status.success()
        {
            self.error(
                at,
                format!("commit = true, but git ignores the evidence directory {shown}"),
                format!(
                    "stop ignoring it (`git check-ignore -v {shown}/manifest.json` names the rule), or {no}"
                ),
            );
            return None;
        }
        Some(top)
    }

    fn plan(&mut self, raw: &RawConfig) -> Option<Plan> {
        let run = raw.run.get_ref();
        let service = self
            .typed_text(&run.service)
            .map(|(s, _)| s.trim().to_owned());
        // Unresolved, an error is already reported and no configuration comes out: any name
        // keeps the other checks going.
        let service = service.unwrap_or_else(|| "unresolved".to_owned());
        if service.is_empty() {
            self.error(
                span_of(&run.service),
                "the service name is empty",
                "name the service being canaried, e.g. service = \"relay\"",
            );
        } else if !canary_core::plan::is_file_safe_name(&service) {
            self.error(
                span_of(&run.service),
                format!("service name {service:?} cannot name files in the state directory"),
                "use 1 to 64 letters, digits, '.', '_' or '-', not starting with '.', e.g. \"relay\"",
            );
        }
        let evaluation_interval =
            self.duration_or(&run.evaluation_interval, Duration::from_secs(30));
        let check_log_interval =
            self.duration_or(&run.check_log_interval, Duration::from_secs(300));
        let arms = self.arms(raw);
        let steps = self.steps(raw);
        let window: Option<Duration> = steps.as_ref().map(|s| s.iter().map(|s| s.hold).sum());

        if let (Some(text), Some(window)) = (&run.duration, window)
            && let Some(d) = self.duration(text)
            && d != window
        {
            self.error(
                span_of(text),
                format!(
                    "run.duration is {} but the steps hold for {} in total",
                    duration::format(d),
                    duration::format(window)
                ),
                "make the [[steps]] holds add up to the duration (or drop `duration`)",
            );
        }

        let checkpoints = self.checkpoints(run, window);

        let (approval, on_inconclusive) = self.decision_policy(run);
        let range = "use 0 (never roll back on query errors) up to 1000";
        let max_query_errors = match &run.max_query_errors {
            None => Some(5),
            Some(n) => match self.scalar(n, "max_query_errors", range) {
                Some((v, _)) if (0..=1000).contains(&v) => Some(v as u32),
                Some((v, origin)) => {
                    self.error(
                        span_of(n),
                        format!("max_query_errors {v}{origin} is out of range"),
                        range,
                    );
                    None
                }
                None => None,
            },
        };
        let guardrails = self.guardrails(raw);
        let comparisons = self.comparisons(raw);
        let scoring = self.scoring(raw);
        let burst = match &raw.load {
            Some(load) => self.burst(load, window),
            None => Some(None),
        };

        let plan = Plan {
            service,
            arms: arms?,
            steps: steps?,
            evaluation_interval: evaluation_interval?,
            check_log_interval: check_log_interval?,
            checkpoints,
            guardrails: guardrails?,
            burst: burst?,
            probes: false,
            approval: approval?,
            on_inconclusive: on_inconclusive?,
            max_query_errors: max_query_errors?,
            time_scale: 1.0,
            comparisons: comparisons?,
            scoring: scoring?,
        };
        let plan = self.engine_rules(raw, plan)?;
        self.independent_looks(raw, plan)
    }

    /// The snapshot offsets, each inside the window, sorted, without repeats.
    fn checkpoints(&mut self, run: &raw::RawRun, window: Option<Duration>) -> Vec<Duration> {
        let mut checkpoints = Vec::new();
        if let Some(list) = &run.checkpoints {
            for c in list.get_ref() {
                let Some(at) = self.duration(c) else { continue };
                if let Some(window) = window
                    && at > window
                {
                    self.error(
                        span_of(c),
                        format!(
                            "checkpoint {} is past the end of the window ({})",
                            duration::format(at),
                            duration::format(window)
                        ),
                        format!(
                            "use an offset up to {}, or lengthen the steps",
                            duration::format(window)
                        ),
                    );
                }
                checkpoints.push(at);
            }
            checkpoints.sort();
            checkpoints.dedup();
        }

        checkpoints
    }

    /// Who decides at the end (`approval`) and what an inconclusive verdict does.
    fn decision_policy(&mut self, run: &raw::RawRun) -> (Option<Approval>, Option<OnInconclusive>) {
        let approval = match run.approval.as_ref().map(|t| self.choose(t, "approval")) {
            None => Some(Approval::Auto),
            Some(None) => None,
            Some(Some(ApprovalMode::Auto)) => Some(Approval::Auto),
            Some(Some(ApprovalMode::Manual)) => self
                .duration_or(&run.approval_timeout, Approval::DEFAULT_TIMEOUT)
                .map(|timeout| Approval::Manual { timeout }),
        };
        let on_inconclusive = match run
            .on_inconclusive
            .as_ref()
            .map(|t| self.choose(t, "on_inconclusive"))
        {
            None => Some(OnInconclusive::Rollback),
            Some(None) => None,
            Some(Some(InconclusiveMode::Rollback)) => Some(OnInconclusive::Rollback),
            Some(Some(InconclusiveMode::Hold)) => self
                .duration_or(&run.hold_timeout, OnInconclusive::DEFAULT_HOLD_TIMEOUT)
                .map(|timeout| OnInconclusive::Hold { timeout }),
        };
        (approval, on_inconclusive)
    }

    /// The engine's own rules (`Plan::check`) on a plan whose fields all resolved, reported at
    /// the line that causes them.
    fn engine_rules(&mut self, raw: &RawConfig, plan: Plan) -> Option<Plan> {
        let run = raw.run.get_ref();
        if !self.diagnostics.is_empty() {
            return None;
        }
        // Whatever the field checks above let through, the engine's own rules still apply.
        if let Err(e) = plan.check() {
            let span = match &e {
                PlanError::ZeroInterval => run.evaluation_interval.as_ref().map(span_of),
                PlanError::ZeroCheckLogInterval => run.check_log_interval.as_ref().map(span_of),
                PlanError::NoGatingGuardrail => raw.guardrails.first().map(|g| {
                    let g = g.get_ref();
                    g.on_breach
                        .as_ref()
                        .map_or_else(|| span_of(&g.name), span_of)
                }),
                _ => None,
            }
            .unwrap_or_else(|| span_of(&raw.run));
            let help = match e {
                PlanError::NoGatingGuardrail => {
                    "`canary init --out -` prints the runbook's guardrails to start from"
                }
                _ => "fix the value and run `canary validate` again",
            };
            self.error(span, e.to_string(), help);
            return None;
        }
        Some(plan)
    }

    fn arms(&mut self, raw: &RawConfig) -> Option<Arms> {
        let arms = raw.arms.get_ref();
        let mut arm = |role: ArmRole, a: &Spanned<raw::RawArm>| -> Option<Arm> {
            let a = a.get_ref();
            if let Err(e) = ArmSelector::parse(a.selector.get_ref()) {
                self.error(
                    span_of(&a.selector),
                    format!("the {role} selector does not parse: {e}"),
                    "write label matchers in braces, such as '{version=\"r1\"}'",
                );
                return None;
            }
            Some(Arm {
                name: self.env.expand(&a.name),
                selector: a.selector.get_ref().clone(),
            })
        };
        let baseline = arm(ArmRole::Baseline, &arms.baseline);
        let canary = arm(ArmRole::Canary, &arms.canary);
        let (baseline, canary) = (baseline?, canary?);
        if baseline.selector.replace(' ', "") == canary.selector.replace(' ', "") {
            self.error(
                span_of(&arms.canary.get_ref().selector),
                "the canary and the baseline have the same selector",
                "each arm must select its own series, e.g. {version=\"r1\"} and {version=\"r0.5\"}",
            );
            return None;
        }
        Some(Arms { baseline, canary })
    }

    fn steps(&mut self, raw: &RawConfig) -> Option<Vec<Step>> {
        if raw.steps.is_empty() {
            self.error(
                span_of(&raw.run),
                "the traffic plan has no steps",
                "add a [[steps]] table with `weight = 5` and `hold = \"60m\"`",
            );
            return None;
        }
        let mut steps = Vec::new();
        let mut ok = true;
        let mut previous: Option<i64> = None;
        for s in &raw.steps {
            let st = s.get_ref();
            let Some((weight, origin)) = self.scalar(
                &st.weight,
                "weight",
                "write the canary's percentage of traffic, such as 5",
            ) else {
                ok = false;
                continue;
            };
            if let Some(b) = &st.baseline_weight {
                ok &= self.baseline_weight(b, (weight, &origin));
            }
            if !(0..=100).contains(&weight) {
                self.error(
                    span_of(&st.weight),
                    format!("weight {weight}{origin} is outside 0–100"),
                    "weights are the percentage of traffic sent to the canary, from 0 to 100",
                );
                ok = false;
            } else if weight == 0 {
                self.error(
                    span_of(&st.weight),
                    "weight 0 sends nothing to the canary, so the step tests nothing",
                    "give the canary at least 1 % (the runbook's step is 5)",
                );
                ok = false;
            } else if let Some(p) = previous
                && weight <= p
            {
                self.error(
                    span_of(&st.weight),
                    format!("weight {weight}{origin} does not increase on the previous step's {p}"),
                    "steps must increase, e.g. 5, 25, 50; the decision comes after the last one",
                );
                ok = false;
            }
            previous = Some(weight);
            match self.duration(&st.hold) {
                Some(hold) if hold.is_zero() => {
                    self.error(
                        span_of(&st.hold),
                        "a step's hold must be longer than 0",
                        "hold for at least one evaluation interval, e.g. \"5m\"",
                    );
                    ok = false;
                }
                Some(hold) => steps.push(Step {
                    weight: weight.clamp(0, 100) as u8,
                    hold,
                }),
                None => ok = false,
            }
        }
        ok.then_some(steps)
    }

    /// `baseline_weight` (the runbook's `CANARY_TRAFFIC_OLD`) beside a step's `weight` (from
    /// `origin`): the two arms share all traffic.
    fn baseline_weight(&mut self, b: &Typed<i64>, (weight, origin): (i64, &str)) -> bool {
        let Some((baseline, from)) = self.scalar(
            b,
            "baseline_weight",
            "write the baseline's percentage of traffic, 100 minus the step's weight",
        ) else {
            return false;
        };
        if baseline + weight == 100 {
            return true;
        }
        self.error(
            span_of(b),
            format!(
                "baseline_weight {baseline}{from} and weight {weight}{origin} add up to {}, not 100",
                baseline + weight
            ),
            format!(
                "the arms share all traffic: make the baseline's share {} (the runbook: CANARY_TRAFFIC_OLD = 100 - CANARY_TRAFFIC_NEW), or drop baseline_weight",
                100 - weight
            ),
        );
        false
    }

    fn guardrails(&mut self, raw: &RawConfig) -> Option<Vec<Guardrail>> {
        let mut out = Vec::new();
        let mut ok = true;
        for g in &raw.guardrails {
            let gr = g.get_ref();
            let name = gr.name.get_ref().clone();
            if out.iter().any(|o: &Guardrail| o.name == name) {
                self.error(
                    span_of(&gr.name),
                    format!("a second guardrail is named {name:?}"),
                    "guardrail names must be unique: they name alerts, panels and artifacts",
                );
                ok = false;
            }
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                self.error(
                    span_of(&gr.name),
                    format!("{name:?} is not a usable guardrail name"),
                    "use letters, digits, '_' and '-', e.g. \"ttfv_p95\"",
                );
                ok = false;
            }
            let query_ok = self.promql(&gr.query, "query");
            let samples_ok = gr
                .samples
                .as_ref()
                .is_none_or(|s| self.promql(s, "samples"));
            let must = self.threshold(&gr.must);
            let for_ = self.duration_or(&gr.for_, Duration::ZERO);
            let on_breach = match &gr.on_breach {
                None => Some(OnBreach::Rollback),
                Some(t) => self.choose(t, "on_breach"),
            };
            let on_no_data = match &gr.on_no_data {
                None => Some(OnNoData::Inconclusive),
                Some(t) => self.choose(t, "on_no_data"),
            };
            if gr.min_samples.is_some() != gr.samples.is_some() {
                let span = gr
                    .min_samples
                    .as_ref()
                    .map(span_of)
                    .or_else(|| gr.samples.as_ref().map(span_of))
                    .unwrap_or_else(|| span_of(g));
                self.error(
                    span,
                    "min_samples and samples go together",
                    "`samples` is a PromQL query counting the observations behind the value (e.g. 'sum(increase(ttfv_ms_count[5m]))'); `min_samples` the count below which the value counts as no data",
                );
                ok = false;
            }
            let min_samples = match &gr.min_samples {
                None => None,
                Some(m) => match self.scalar(m, "min_samples", "e.g. min_samples = 20 for a p95") {
                    Some((v, _)) if v >= 0.0 => Some(v),
                    Some((_, origin)) => {
                        self.error(
                            span_of(m),
                            format!("min_samples{origin} must be 0 or more"),
                            "e.g. min_samples = 20 for a p95",
                        );
                        ok = false;
                        None
                    }
                    None => {
                        ok = false;
                        None
                    }
                },
            };
            let unit = match &gr.unit {
                None => None,
                Some(u) => {
                    let text = u.get_ref().trim();
                    if text.is_empty()
                        || text.chars().count() > 16
                        || text.chars().any(char::is_control)
                    {
                        self.error(
                            span_of(u),
                            "unit must be a short label",
                            "what the value is measured in, at most 16 characters: e.g. unit = \"ms\" or unit = \"%\"",
                        );
                        ok = false;
                    }
                    Some(text.to_owned())
                }
            };
            match (must, for_, on_breach, on_no_data) {
                (Some(must), Some(for_), Some(on_breach), Some(on_no_data))
                    if query_ok && samples_ok =>
                {
                    out.push(Guardrail {
                        name,
                        query: gr.query.get_ref().clone(),
                        must,
                        for_,
                        on_breach,
                        on_no_data,
                        min_samples,
                        samples_query: gr.samples.as_ref().map(|s| s.get_ref().clone()),
                        unit,
                    })
                }
                _ => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// `[[compare]]`: the canary judged against the baseline (DESIGN §14).
    fn comparisons(&mut self, raw: &RawConfig) -> Option<Vec<CompareSpec>> {
        let mut out = Vec::new();
        let mut ok = true;
        for c in &raw.compare {
            let span = span_of(c);
            let c = c.get_ref();
            let name = c.name.get_ref().clone();
            let clash = out.iter().any(|o: &CompareSpec| o.name == name)
                || raw
                    .guardrails
                    .iter()
                    .any(|g| *g.get_ref().name.get_ref() == name);
            if clash {
                self.error(
                    span_of(&c.name),
                    format!("{name:?} already names a comparison or a guardrail"),
                    "comparison names must be unique among comparisons and guardrails: they name results and artifacts",
                );
                ok = false;
            }
            let kind = match &c.kind {
                None => Some(MeasureKind::Continuous),
                Some(k) => self.choose(k, "comparison kind"),
            };
            let mut query = |key: &str, text: &Option<Text>, kind: &str| -> Option<String> {
                match text {
                    Some(t) if self.promql(t, key) => Some(t.get_ref().clone()),
                    Some(_) => None,
                    None => {
                        self.error(
                            span.clone(),
                            format!("a {kind} comparison needs `{key}`"),
                            match kind {
                                "counts" => "events and exposure are cumulative counters, e.g. events = 'sum(sse_total) - sum(sse_complete_total)', exposure = 'sum(sse_total)'",
                                _ => "query is one reading per evaluation, e.g. 'histogram_quantile(0.95, sum by (le) (rate(ttfv_ms_bucket[30s])))'",
                            },
                        );
                        None
                    }
                }
            };
            let measure = match kind {
                Some(MeasureKind::Continuous) => query("query", &c.query, "continuous")
                    .map(|query| Measure::Continuous { query }),
                Some(MeasureKind::Spread) => {
                    query("query", &c.query, "spread").map(|query| Measure::Spread { query })
                }
                Some(MeasureKind::Counts) => {
                    let events = query("events", &c.events, "counts");
                    let exposure = query("exposure", &c.exposure, "counts");
                    events
                        .zip(exposure)
                        .map(|(events, exposure)| Measure::Counts { events, exposure })
                }
                None => None,
            };
            let direction = match &c.direction {
                None => Some(canary_core::plan::Direction::Increase),
                Some(d) => self.choose(d, "comparison direction"),
            };
            let effect = match &c.effect {
                None => Some(canary_core::judge::Effect::Relative(0.0)),
                Some(e) => self.typed_text(e).and_then(|(text, origin)| {
                    match canary_core::plan::parse_effect(&text) {
                        Ok(effect) => Some(effect),
                        Err(err) => {
                            self.error(
                                span_of(e),
                                format!("{err}{origin}"),
                                "write how much worse the canary may be: \"10%\" of the baseline, or an absolute amount such as \"50\"",
                            );
                            None
                        }
                    }
                }),
            };
            let critical = match &c.critical {
                None => Some(false),
                Some(b) => self.scalar(b, "critical", "true or false").map(|(v, _)| v),
            };
            let must_have_data = match &c.must_have_data {
                None => Some(false),
                Some(b) => self
                    .scalar(b, "must_have_data", "true or false")
                    .map(|(v, _)| v),
            };
            let weight = match &c.weight {
                None => Some(CompareSpec::DEFAULT_WEIGHT),
                Some(w) => self
                    .scalar(w, "weight", "a positive number, e.g. 1")
                    .map(|(v, _)| v),
            };
            let alpha = match &c.alpha {
                None => Some(CompareSpec::DEFAULT_ALPHA),
                Some(a) => self
                    .scalar(a, "alpha", "a level between 0 and 1, e.g. 0.05")
                    .map(|(v, _)| v),
            };
            let group = c.group.as_ref().map_or_else(
                || CompareSpec::DEFAULT_GROUP.to_owned(),
                |g| self.env.expand(g),
            );
            match (
                measure,
                direction,
                effect,
                critical,
                weight,
                alpha,
                must_have_data,
            ) {
                (
                    Some(measure),
                    Some(direction),
                    Some(effect),
                    Some(critical),
                    Some(weight),
                    Some(alpha),
                    Some(must_have_data),
                ) => out.push(CompareSpec {
                    name,
                    measure,
                    direction,
                    effect,
                    critical,
                    weight,
                    group,
                    alpha,
                    must_have_data,
                }),
                _ => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// `[scoring]`: Kayenta's thresholds and group weights for the comparisons.
    fn scoring(&mut self, raw: &RawConfig) -> Option<canary_core::judge::Scoring> {
        let mut scoring = canary_core::judge::Scoring::default();
        let Some(s) = &raw.scoring else {
            return Some(scoring);
        };
        let s = s.get_ref();
        let help = "a score from 0 to 100 (Kayenta's defaults: marginal 75, pass 95)";
        let mut ok = true;
        if let Some(m) = &s.marginal {
            match self.scalar(m, "marginal", help) {
                Some((v, _)) => scoring.marginal = v,
                None => ok = false,
            }
        }
        if let Some(p) = &s.pass {
            match self.scalar(p, "pass", help) {
                Some((v, _)) => scoring.pass = v,
                None => ok = false,
            }
        }
        for (group, w) in &s.groups {
            match self.scalar(w, "group weight", "a positive number, e.g. 1") {
                Some((v, _)) => {
                    scoring.group_weights.insert(group.clone(), v);
                }
                None => ok = false,
            }
        }
        ok.then_some(scoring)
    }

    /// The comparisons' looks must be independent: a query whose successive evaluations read
    /// the same samples voids the sequential tests' run-wide bound, so it is refused.
    fn independent_looks(&mut self, raw: &RawConfig, plan: Plan) -> Option<Plan> {
        match canary_providers::metrics::observe::overlapping_comparisons(&plan) {
            Ok(overlaps) if overlaps.is_empty() => Some(plan),
            Ok(overlaps) => {
                for o in overlaps {
                    let name = match &o {
                        canary_providers::metrics::observe::Overlap::Window {
                            comparison, ..
                        }
                        | canary_providers::metrics::observe::Overlap::Range {
                            comparison, ..
                        } => comparison.clone(),
                    };
                    let span = raw
                        .compare
                        .iter()
                        .find(|c| *c.get_ref().name.get_ref() == name)
                        .map_or_else(|| span_of(&raw.run), span_of);
                    self.error(
                        span,
                        o.to_string(),
                        "each evaluation must be its own look (DESIGN §14)",
                    );
                }
                None
            }
            Err(e) => {
                self.error(
                    span_of(&raw.run),
                    format!("a comparison query does not parse: {e}"),
                    "fix the query and run `canary validate` again",
                );
                None
            }
        }
    }

    /// A guardrail's `must`, such as "< 1500" or "< ${CANARY_ROLLBACK_THRESHOLD_TTFV_MS:-1500}".
    fn threshold(&mut self, must: &Text) -> Option<Threshold> {
        let (value, origin) = self.typed_text(must)?;
        match value.parse::<Threshold>() {
            Ok(t) => Some(t),
            Err(ThresholdError::NotFinite { input }) => {
                self.error(
                    span_of(must),
                    format!(
                        "{input:?}{origin} compares with an infinite number: it can never fail"
                    ),
                    "give the finite bound the guardrail protects, such as \"< 1500\"",
                );
                None
            }
            Err(ThresholdError::NotACondition { input }) => {
                let ops: Vec<&str> = Comparator::ALL.iter().map(|c| c.symbol()).collect();
                self.error(
                    span_of(must),
                    format!("{input:?}{origin} is not a condition"),
                    format!(
                        "write a comparator ({}) and a number, such as \"< 1500\" or \">= 99.6\"",
                        ops.join(" ")
                    ),
                );
                None
            }
        }
    }

    fn promql(&mut self, text: &Text, key: &str) -> bool {
        match canary_promql::rewrite::parse(text.get_ref()) {
            Ok(_) => true,
            Err(e) => {
                let msg = match e {
                    canary_promql::RewriteError::Parse(m) => m,
                    other => other.to_string(),
                };
                self.error(
                    span_of(text),
                    format!("the {key} is not valid PromQL: {msg}"),
                    "check it in Prometheus' expression browser or with `canary query`",
                );
                false
            }
        }
    }

    fn burst(
        &mut self,
        load: &Spanned<raw::RawLoad>,
        window: Option<Duration>,
    ) -> Option<Option<BurstPlan>> {
        let l = load.get_ref();
        let at = self.duration_or(&l.at, BurstPlan::RUNBOOK.at)?;
        if let Some(window) = window
            && at >= window
        {
            let span = l.at.as_ref().map_or_else(|| span_of(load), span_of);
            self.error(
                span,
                format!(
                    "the burst at {} starts after the window ends ({})",
                    duration::format(at),
                    duration::format(window)
                ),
                "the runbook runs it at T+5: at = \"5m\"",
            );
            return None;
        }
        let percent = "use a number from 0 to 100, e.g. 99.0";
        let min_success_percent = match &l.min_success_rate {
            None => BurstPlan::RUNBOOK.min_success_percent,
            Some(r) => match self.scalar(r, "min_success_rate", percent)? {
                (v, _) if (0.0..=100.0).contains(&v) => v,
                (v, origin) => {
                    self.error(
                        span_of(r),
                        format!("min_success_rate {v}{origin} is not a percentage"),
                        percent,
                    );
                    return None;
                }
            },
        };
        Some(Some(BurstPlan {
            at,
            min_success_percent,
        }))
    }

    fn traffic(&mut self, t: &Spanned<raw::RawTraffic>) -> Option<TrafficSettings> {
        let span = span_of(t);
        let t = t.get_ref();
        let (provider, origin) = self.traffic_provider(&t.provider)?;
        let timeout = self.duration_or(&t.timeout, TrafficSettings::DEFAULT_TIMEOUT)?;
        let ctx = format!("provider \"{provider}\"{origin}");
        match provider {
            TrafficProvider::Command => self.command_traffic(t, &span, &ctx, timeout),
            TrafficProvider::Haproxy => {
                let endpoint = match (&t.socket, &t.address) {
                    (Some(s), None) => HaproxyEndpoint::Unix(self.path(s)),
                    (None, Some(a)) => HaproxyEndpoint::Tcp(self.env.expand(a)),
                    _ => {
                        self.error(
                            span,
                            format!("{ctx} needs exactly one of `socket` (a unix socket path) or `address` (host:port of the runtime API)"),
                            "e.g. socket = \"/run/haproxy/admin.sock\" with `stats socket ... level admin` in haproxy.cfg",
                        );
                        return None;
                    }
                };
                let backend = self
                    .require(&t.backend, &span, "backend", &ctx)
                    .map(|v| self.env.expand(v));
                let canary_server = self
                    .require(&t.canary_server, &span, "canary_server", &ctx)
                    .map(|v| self.env.expand(v));
                let baseline_server = self
                    .require(&t.baseline_server, &span, "baseline_server", &ctx)
                    .map(|v| self.env.expand(v));
                Some(TrafficSettings::Haproxy(HaproxyConfig {
                    endpoint,
                    backend: backend?,
                    canary_server: canary_server?,
                    baseline_server: baseline_server?,
                }))
            }
            TrafficProvider::Nginx => {
                let file = self
                    .require(&t.upstream_file, &span, "upstream_file", &ctx)
                    .map(|v| self.path(v));
                let upstream = self
                    .require(&t.upstream, &span, "upstream", &ctx)
                    .map(|v| self.env.expand(v));
                let canary_addr = self
                    .require(&t.canary_addr, &span, "canary_addr", &ctx)
                    .map(|v| self.env.expand(v));
                let baseline_addr = self
                    .require(&t.baseline_addr, &span, "baseline_addr", &ctx)
                    .map(|v| self.env.expand(v));
                Some(TrafficSettings::Nginx(NginxConfig {
                    upstream_file: file?,
                    upstream_name: upstream?,
                    canary_addr: canary_addr?,
                    baseline_addr: baseline_addr?,
                    test_command: t.test_command.as_ref().map_or_else(
                        || TrafficSettings::DEFAULT_NGINX_TEST.to_owned(),
                        |c| self.env.expand(c),
                    ),
                    reload_command: t.reload_command.as_ref().map_or_else(
                        || TrafficSettings::DEFAULT_NGINX_RELOAD.to_owned(),
                        |c| self.env.expand(c),
                    ),
                }))
            }
            TrafficProvider::Embedded => {
                let admin = match &t.admin {
                    Some(a) => self.socket_addr(a),
                    None => Some(TrafficSettings::DEFAULT_ADMIN),
                };
                let token = self
                    .require(&t.token, &span, "token", &ctx)
                    .map(|k| self.env.secret(k));
                let lease = self.duration_or(&t.lease, TrafficSettings::DEFAULT_LEASE);
                Some(TrafficSettings::Embedded {
                    admin: admin?,
                    token: token?,
                    lease: lease?,
                })
            }
        }
    }

    /// `provider = "command"`: shell templates that set the split and read it back.
    fn command_traffic(
        &mut self,
        t: &raw::RawTraffic,
        span: &Range<usize>,
        ctx: &str,
        timeout: Duration,
    ) -> Option<TrafficSettings> {
        let set = self.require(&t.set, span, "set", ctx)?;
        let set_text = self.env.expand(set);
        if !set_text.contains("{canary}") {
            self.error(
                span_of(set),
                "the set command never mentions {canary}",
                "put {canary} (and {baseline}) where the percentages go, e.g. --traffic-split main:{canary},r0.5-hotfix:{baseline}",
            );
        }
        let verify = self
            .require(&t.verify, span, "verify", ctx)
            .map(|v| self.env.expand(v));
        let verify_regex = self.require(&t.verify_regex, span, "verify_regex", ctx).map(|r| {
            let text = self.env.expand(r);
            match regex::Regex::new(&text) {
                Err(e) => self.error(
                    span_of(r),
                    format!("verify_regex is not a regular expression: {e}"),
                    "see https://docs.rs/regex for the syntax",
                ),
                Ok(re) if !re.capture_names().any(|n| n == Some("canary")) => self.error(
                    span_of(r),
                    "verify_regex has no group named `canary`",
                    "capture the canary's percentage from the verify command's output, e.g. 'main:(?P<canary>\\d+)'",
                ),
                Ok(_) => {}
            }
            text
        });
        let env = t
            .env
            .iter()
            .map(|name| {
                let var = Spanned::new(span_of(name), format!("${{{}}}", name.get_ref()));
                (name.get_ref().clone(), self.env.secret(&var))
            })
            .collect();
        Some(TrafficSettings::Command {
            set: set_text,
            verify: verify?,
            verify_regex: verify_regex?,
            env,
            timeout,
        })
    }

    fn metrics(&mut self, m: &Spanned<raw::RawMetrics>) -> Option<MetricsSettings> {
        let span = span_of(m);
        let m = m.get_ref();
        match self.choose(&m.source, "metrics source")? {
            MetricsSource::Prometheus => {
                let url = self.require(&m.url, &span, "url", "source \"prometheus\"")?;
                let url = self.url(url);
                Some(MetricsSettings::Prometheus(PrometheusConfig {
                    url,
                    token: m.token.as_ref().map(|t| self.env.secret(t)),
                    timeout: self.duration_or(&m.timeout, MetricsSettings::DEFAULT_TIMEOUT)?,
                }))
            }
            MetricsSource::Embedded => {
                let scrape_interval =
                    self.duration_or(&m.scrape_interval, MetricsSettings::DEFAULT_SCRAPE_INTERVAL)?;
                let mut targets = Vec::new();
                for t in &m.targets {
                    let tt = t.get_ref();
                    let arm = match &tt.arm {
                        None => None,
                        Some(a) => Some(self.choose::<ArmRole>(a, "arm")?),
                    };
                    targets.push(ScrapeTarget {
                        url: self.url(&tt.url),
                        arm,
                        job: tt
                            .job
                            .as_ref()
                            .map_or_else(String::new, |j| self.env.expand(j)),
                    });
                }
                Some(MetricsSettings::Embedded {
                    scrape_interval,
                    targets,
                })
            }
        }
    }

    /// `[load]`; what it leaves out is the runbook's request ([`Scenario::runbook`]).
    fn load(&mut self, l: &Spanned<raw::RawLoad>, plan: Option<&Plan>) -> Option<LoadSettings> {
        let span = span_of(l);
        let l = l.get_ref();
        let runbook = Scenario::runbook(String::new(), Vec::new());
        let target = match &l.target {
            None => Some(LoadTarget::Lb),
            Some(t) => self.choose(t, "load target"),
        };
        let per_user = format!("use 1 or more (the runbook: {})", runbook.requests_per_user);
        let requests_per_user = match &l.requests_per_user {
            None => Some(runbook.requests_per_user),
            Some(n) => match self.scalar(n, "requests_per_user", &per_user) {
                Some((v, _)) if (1..=1_000_000).contains(&v) => Some(v as u32),
                Some((v, origin)) => {
                    self.error(
                        span_of(n),
                        format!("requests_per_user {v}{origin} is out of range"),
                        per_user,
                    );
                    None
                }
                None => None,
            },
        };
        let status = "use a status code such as 200";
        let expect_status = match &l.expect_status {
            None => Some(runbook.expect_status),
            Some(n) => match self.scalar(n, "expect_status", status) {
                Some((v, _)) if (100..=599).contains(&v) => Some(v as u16),
                Some((v, origin)) => {
                    self.error(
                        span_of(n),
                        format!("{v}{origin} is not an HTTP status"),
                        status,
                    );
                    None
                }
                None => None,
            },
        };
        if l.users.is_empty() {
            self.error(
                span.clone(),
                "the load burst has no users",
                "add [[load.users]] tables with `name` and `token` (the runbook: five users, API_TOKEN_USER_1..5)",
            );
        }
        let users: Vec<LoadUser> = l
            .users
            .iter()
            .map(|u| {
                let u = u.get_ref();
                LoadUser {
                    name: self.env.expand(&u.name),
                    token: self.env.secret(&u.token),
                    marker: u.marker.as_ref().map(|m| self.env.secret(m)),
                }
            })
            .collect();
        let pause = self.duration_or(&l.pause, runbook.pause);
        let url = self.url(&l.url);
        Some(LoadSettings {
            url,
            method: l
                .method
                .as_ref()
                .map_or(runbook.method, |m| self.env.expand(m).to_ascii_uppercase()),
            path: l.path.as_ref().map_or(runbook.path, |p| self.env.expand(p)),
            requests_per_user: requests_per_user?,
            pause: pause?,
            target: target?,
            min_success_rate: plan
                .and_then(|p| p.burst.as_ref())
                .unwrap_or(&BurstPlan::RUNBOOK)
                .min_success_percent,
            expect_status: expect_status?,
            body: match &l.body {
                Some(b) => self.env.expand(b),
                None => runbook.body.unwrap_or_default(),
            },
            queries: if l.queries.is_empty() {
                runbook.queries
            } else {
                l.queries.iter().map(|q| self.env.expand(q)).collect()
            },
            users,
        })
    }

    fn notify(&mut self, n: &Spanned<raw::RawNotify>) -> Option<NotifySettings> {
        let span = span_of(n);
        let n = n.get_ref();
        let kind: NotifyKind = self.choose(&n.kind, "notifier kind")?;
        let mut on: Vec<Topic> =
            n.on.iter()
                .filter_map(|o| self.choose(o, "notification event"))
                .collect();
        if n.on.is_empty() {
            on = vec![Topic::Breach, Topic::Decision];
        }
        let ctx = format!("notifier \"{kind}\"");
        let channel = match kind {
            NotifyKind::Slack => NotifyChannel::Slack {
                webhook: self
                    .require(&n.webhook, &span, "webhook", &ctx)
                    .map(|w| self.env.secret(w))?,
                channel: n.channel.as_ref().map(|c| self.env.expand(c)),
            },
            NotifyKind::PagerDuty => NotifyChannel::PagerDuty {
                routing_key: self
                    .require(&n.routing_key, &span, "routing_key", &ctx)
                    .map(|k| self.env.secret(k))?,
                url: n.url.as_ref().map(|u| self.env.expand(u)),
            },
            NotifyKind::Email => {
                let smtp = self
                    .require(&n.smtp, &span, "smtp", &ctx)
                    .map(|s| self.env.expand(s));
                let from = self
                    .require(&n.from, &span, "from", &ctx)
                    .map(|s| self.env.expand(s));
                if n.to.is_empty() {
                    self.error(
                        span.clone(),
                        "notifier \"email\" needs `to`",
                        "add to = [\"deployment-lead@company.com\"]",
                    );
                }
                NotifyChannel::Email {
                    smtp: smtp?,
                    password: n.password.as_ref().map(|p| self.env.secret(p)),
                    from: from?,
                    to: n.to.iter().map(|t| self.env.expand(t)).collect(),
                }
            }
            NotifyKind::Webhook => NotifyChannel::Webhook {
                url: self
                    .require(&n.url, &span, "url", &ctx)
                    .map(|u| self.env.secret(u))?,
            },
        };
        Some(NotifySettings { channel, on })
    }
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is a test failure

    use super::*;

    fn resolve(text: &str, base: &Path) -> Result<Config, ConfigErrors> {
        resolve_text("canary.toml", text, base, Needs::ALL, Env::offline())
    }

    /// A configuration with every choice written once, and every key each of a choice's
    /// values needs (a provider's, a notifier's), so that any value resolves.
    const EVERY_CHOICE: &str = r#"
[run]
service = "relay"
approval = "auto"
on_inconclusive = "rollback"

[arms.baseline]
name = "r0.5"
selector = '{version="r0.5"}'

[arms.canary]
name = "r1"
selector = '{version="r1"}'

[[steps]]
weight = 5
hold = "10m"

[traffic]
provider = "command"
set = "lb set {canary} {baseline}"
verify = "lb get"
verify_regex = 'canary:(?P<canary>\d+)'
socket = "/run/haproxy/admin.sock"
backend = "relay"
canary_server = "r1"
baseline_server = "r0.5"
upstream_file = "upstream.conf"
upstream = "relay"
canary_addr = "127.0.0.1:8082"
baseline_addr = "127.0.0.1:8081"
token = "proxy-token"

[metrics]
source = "prometheus"
url = "http://127.0.0.1:9090"

[[metrics.targets]]
url = "http://127.0.0.1:8082/metrics"
arm = "canary"

[load]
url = "http://127.0.0.1:8080"
target = "lb"

[[load.users]]
name = "user_1"
token = "t1"

[[guardrails]]
name = "g"
query = "up"
must = "< 1"
on_breach = "rollback"
on_no_data = "inconclusive"

[[guardrails]]
name = "gate"
query = "up"
must = "< 1"
on_breach = "block-promotion"

[[notify]]
kind = "slack"
webhook = "https://hooks.example/slack"
routing_key = "key"
smtp = "smtp://mail.example:587"
from = "canary@example.com"
to = ["lead@example.com"]
url = "https://hooks.example/webhook"
"#;

    /// Each choice: where it is written (`key = "value"` in [`EVERY_CHOICE`]), what errors
    /// call it, its names, and the name of what a configuration resolved it to.
    type Resolved = fn(&Config) -> String;
    fn choices() -> [(
        &'static str,
        &'static str,
        &'static [&'static str],
        Resolved,
    ); 9] {
        [
            (
                "on_breach = \"rollback\"",
                "on_breach",
                OnBreach::NAMES,
                |c| c.plan.guardrails[0].on_breach.to_string(),
            ),
            (
                "on_no_data = \"inconclusive\"",
                "on_no_data",
                OnNoData::NAMES,
                |c| c.plan.guardrails[0].on_no_data.to_string(),
            ),
            (
                "approval = \"auto\"",
                "approval",
                ApprovalMode::NAMES,
                |c| c.plan.approval.mode().to_string(),
            ),
            (
                "on_inconclusive = \"rollback\"",
                "on_inconclusive",
                InconclusiveMode::NAMES,
                |c| c.plan.on_inconclusive.mode().to_string(),
            ),
            ("target = \"lb\"", "load target", LoadTarget::NAMES, |c| {
                c.load.as_ref().unwrap().target.to_string()
            }),
            (
                "provider = \"command\"",
                "traffic provider",
                TrafficProvider::NAMES,
                |c| c.traffic.as_ref().unwrap().provider().to_string(),
            ),
            (
                "source = \"prometheus\"",
                "metrics source",
                MetricsSource::NAMES,
                |c| match c.metrics.as_ref().unwrap() {
                    MetricsSettings::Prometheus(_) => "prometheus".into(),
                    MetricsSettings::Embedded { .. } => "embedded".into(),
                },
            ),
            ("arm = \"canary\"", "arm", ArmRole::NAMES, |c| {
                match c.metrics.as_ref().unwrap() {
                    MetricsSettings::Embedded { targets, .. } => {
                        targets[0].arm.unwrap().to_string()
                    }
                    MetricsSettings::Prometheus(_) => unreachable!("source is embedded"),
                }
            }),
            (
                "kind = \"slack\"",
                "notifier kind",
                NotifyKind::NAMES,
                |c| match &c.notify[0].channel {
                    NotifyChannel::Slack { .. } => "slack".into(),
                    NotifyChannel::PagerDuty { .. } => "pagerduty".into(),
                    NotifyChannel::Email { .. } => "email".into(),
                    NotifyChannel::Webhook { .. } => "webhook".into(),
                },
            ),
        ]
    }

    #[test]
    fn config_choices_resolve_to_the_value_they_name_or_list_the_names() {
        let dir = tempfile::tempdir().unwrap();
        for (at, what, names, resolved) in choices() {
            let (key, _) = at.split_once(" = ").unwrap();
            let mut base = EVERY_CHOICE.to_owned();
            if key == "arm" {
                // Targets are scraped by the embedded source.
                base = base.replace("source = \"prometheus\"", "source = \"embedded\"");
            }
            assert!(base.contains(at), "{at}");
            for name in names {
                let text = base.replacen(at, &format!("{key} = \"{name}\""), 1);
                let config =
                    resolve(&text, dir.path()).unwrap_or_else(|e| panic!("{what} = {name:?}: {e}"));
                assert_eq!(resolved(&config), *name, "{what}");
            }
            let typo = format!("{}x", names[0]);
            let text = base.replacen(at, &format!("{key} = \"{typo}\""), 1);
            let errors: Vec<String> = resolve(&text, dir.path())
                .unwrap_err()
                .diagnostics
                .iter()
                .map(|d| format!("{} | {}", d.message, d.help.as_deref().unwrap_or("")))
                .collect();
            // A provider may also be a platform driven through the `command` provider.
            let more = if what == "traffic provider" {
                format!(
                    "; a platform driven by the `command` provider's set/verify commands: {}",
                    CommandPlatform::NAMES.join(", ")
                )
            } else {
                String::new()
            };
            assert_eq!(
                errors,
                [format!(
                    "unknown {what} {typo:?} | did you mean \"{}\"? ({what} is one of {}{more})",
                    names[0],
                    names.join(", ")
                )],
            );
        }
        for platform in CommandPlatform::NAMES {
            let text = EVERY_CHOICE.replacen(
                "provider = \"command\"",
                &format!("provider = \"{platform}\""),
                1,
            );
            let config = resolve(&text, dir.path()).unwrap();
            assert_eq!(config.traffic.unwrap().provider(), TrafficProvider::Command);
        }
    }

    /// `[state] url` or `CANARY_STATE_URL` picks PostgreSQL; without either the embedded store.
    #[test]
    fn the_state_store_comes_from_state_url_or_canary_state_url() {
        let dir = tempfile::tempdir().unwrap();
        let with_env = |pairs: &[(&str, &str)]| {
            let text: String = pairs.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
            std::fs::write(dir.path().join(env::ENV_FILE), text).unwrap();
            Env::load(dir.path()).unwrap()
        };
        let load =
            |text: &str, env: Env| resolve_text("canary.toml", text, dir.path(), Needs::ALL, env);

        let embedded = load(EVERY_CHOICE, with_env(&[])).unwrap();
        assert!(matches!(
            embedded.state(),
            canary_state::Location::Embedded { .. }
        ));
        assert_eq!(embedded.lease, Config::DEFAULT_LEASE);

        let url = "postgres://canary:s3cret@db:5432/canary";
        let from_env = load(EVERY_CHOICE, with_env(&[("CANARY_STATE_URL", url)])).unwrap();
        assert_eq!(from_env.state_url.as_ref().unwrap().expose(), url);
        assert!(from_env.variables.contains(&"CANARY_STATE_URL".to_owned()));

        let text = format!("{EVERY_CHOICE}\n[state]\nurl = \"${{DB_URL}}\"\nlease = \"45s\"\n");
        let configured = load(&text, with_env(&[("DB_URL", url)])).unwrap();
        assert_eq!(configured.state_url.as_ref().unwrap().expose(), url);
        assert_eq!(configured.lease, Duration::from_secs(45));
        assert!(matches!(
            configured.state(),
            canary_state::Location::Postgres { .. }
        ));

        let text =
            format!("{EVERY_CHOICE}\n[state]\nurl = \"mysql://db/canary\"\nlease = \"soon\"\n");
        let err = load(&text, with_env(&[])).unwrap_err().to_string();
        assert!(err.contains("[state] url is not a PostgreSQL URL"), "{err}");
        assert!(err.contains("soon"), "{err}");
    }

    /// Every scalar may come from a variable: typed where it is used, its errors naming the
    /// variable, `${VAR:-default}` when unset.
    #[test]
    fn config_scalars_from_variables_are_typed_where_they_are_used() {
        let dir = tempfile::tempdir().unwrap();
        let vars = |pairs: &[(&str, &str)]| {
            let text: String = pairs.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
            std::fs::write(dir.path().join(env::ENV_FILE), text).unwrap();
            Env::load(dir.path()).unwrap()
        };
        let text = EVERY_CHOICE
            .replacen("weight = 5", "weight = \"${W}\"", 1)
            .replacen("hold = \"10m\"", "hold = \"${M:-10}m\"", 1)
            .replacen("must = \"< 1\"", "must = \"< ${T}\"", 1)
            .replacen("approval = \"auto\"", "approval = \"${A}\"", 1)
            .replacen("target = \"lb\"", "target = \"${TARGET:-canary}\"", 1)
            + "\n[evidence]\ncommit = \"${C}\"\n";
        let ok = vars(&[("W", "7"), ("T", "2.5"), ("A", "manual"), ("C", "false")]);
        let config = resolve_text("canary.toml", &text, dir.path(), Needs::ALL, ok).unwrap();
        assert_eq!(config.plan.steps[0].weight, 7);
        assert_eq!(config.plan.steps[0].hold, Duration::from_secs(600));
        assert_eq!(config.plan.guardrails[0].must.value, 2.5);
        assert_eq!(config.plan.approval.mode(), ApprovalMode::Manual);
        assert_eq!(config.load.unwrap().target, LoadTarget::Canary);
        assert_eq!(config.evidence.unwrap().commit, None);

        let bad = vars(&[("W", "x"), ("T", "y"), ("A", "later"), ("C", "no")]);
        let errors: Vec<String> = resolve_text("canary.toml", &text, dir.path(), Needs::ALL, bad)
            .unwrap_err()
            .diagnostics
            .iter()
            .map(|d| d.message.clone())
            .collect();
        assert_eq!(
            errors,
            [
                "weight \"x\" (from ${W}) is not a whole number",
                "unknown approval \"later\" (from ${A})",
                "\"< y\" (from ${T}) is not a condition",
                "commit \"no\" (from ${C}) is not true or false",
            ]
        );
    }

    /// What `[load]` and the burst leave out is the runbook's, from the crates that own it; the
    /// template spells out the same values.
    #[test]
    fn config_defaults_come_from_their_owners() {
        let dir = tempfile::tempdir().unwrap();
        let minimal = resolve(EVERY_CHOICE, dir.path()).unwrap();
        let template = resolve(INIT_TEMPLATE, dir.path()).unwrap();
        let runbook = Scenario::runbook(String::new(), Vec::new());
        for (config, queries) in [
            (&minimal, runbook.queries.clone()),
            (&template, template.load.as_ref().unwrap().queries.clone()),
        ] {
            let load = config.load.as_ref().unwrap();
            assert_eq!(
                (
                    load.method.as_str(),
                    load.path.as_str(),
                    Some(load.body.clone()),
                    load.requests_per_user,
                    load.pause,
                    load.expect_status,
                    &load.queries,
                ),
                (
                    runbook.method.as_str(),
                    runbook.path.as_str(),
                    runbook.body.clone(),
                    runbook.requests_per_user,
                    runbook.pause,
                    runbook.expect_status,
                    &queries,
                )
            );
            assert_eq!(config.plan.burst, Some(BurstPlan::RUNBOOK));
            assert_eq!(
                load.min_success_rate,
                BurstPlan::RUNBOOK.min_success_percent
            );
        }
        assert_eq!(minimal.cooldown, Config::DEFAULT_COOLDOWN);
        assert_eq!(
            minimal.state_dir,
            dir.path().join(Config::DEFAULT_STATE_DIR)
        );
        let evidence = minimal.evidence.as_ref().unwrap();
        assert_eq!(evidence.dir, dir.path().join(EvidenceSettings::DEFAULT_DIR));
        assert_eq!(evidence.commit, None);

        let embedded = resolve(
            &EVERY_CHOICE.replace("provider = \"command\"", "provider = \"embedded\""),
            dir.path(),
        )
        .unwrap();
        let Some(TrafficSettings::Embedded { admin, lease, .. }) = embedded.traffic else {
            panic!("not the embedded provider");
        };
        assert_eq!(
            (admin, lease),
            (
                TrafficSettings::DEFAULT_ADMIN,
                TrafficSettings::DEFAULT_LEASE
            )
        );
        // The template's comment on the embedded proxy states the same defaults.
        assert!(INIT_TEMPLATE.contains(&format!(
            "admin = \"{}\", token = \"${{CANARY_PROXY_TOKEN}}\", lease = \"{}\"",
            TrafficSettings::DEFAULT_ADMIN,
            duration::format(TrafficSettings::DEFAULT_LEASE)
        )));
    }

    /// `[evidence] commit = true` names the git repository holding the evidence directory, and
    /// refuses a directory git would not commit.
    #[test]
    fn config_evidence_commit_finds_the_repository_of_the_evidence() {
        let git = |dir: &Path, args: &[&str]| {
            let out = std::process::Command::new("git")
                .arg("-C")
                .arg(dir)
                .args(args)
                .output()
                .unwrap();
            assert!(out.status.success(), "git {args:?}");
        };
        let committing =
            EVERY_CHOICE.to_owned() + "\n[evidence]\ndir = \"evidence/bundles\"\ncommit = true\n";
        let messages = |base: &Path| -> Vec<String> {
            match resolve(&committing, base) {
                Ok(_) => Vec::new(),
                Err(e) => e.diagnostics.iter().map(|d| d.message.clone()).collect(),
            }
        };

        let outside = tempfile::tempdir().unwrap();
        let errors = messages(outside.path());
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].contains("is not in a git repository"),
            "{errors:?}"
        );

        // The repository is found from the configuration's directory down, though the evidence
        // directory does not exist yet.
        let repo = tempfile::tempdir().unwrap();
        git(repo.path(), &["init", "-q"]);
        let config_dir = repo.path().join("deploy");
        std::fs::create_dir(&config_dir).unwrap();
        let config = resolve(&committing, &config_dir).unwrap();
        let found = config.evidence.unwrap().commit.unwrap();
        assert_eq!(
            found.canonicalize().unwrap(),
            repo.path().canonicalize().unwrap()
        );
        let off = resolve(
            &committing.replace("commit = true", "commit = false"),
            &config_dir,
        );
        assert_eq!(off.unwrap().evidence.unwrap().commit, None);

        std::fs::write(repo.path().join(".gitignore"), "evidence/\n").unwrap();
        let errors = messages(&config_dir);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].contains("git ignores the evidence directory"),
            "{errors:?}"
        );
    }

    #[test]
    fn the_rules_go_to_a_directory_or_a_ruler_and_a_rehearsal_compresses_their_interval() {
        let dir = tempfile::tempdir().unwrap();
        let with = |alertmanager: &str| {
            let text = EVERY_CHOICE.replacen(
                "[[guardrails]]",
                &format!("[alertmanager]\nurl = \"http://127.0.0.1:9093\"\n{alertmanager}\n\n[[guardrails]]"),
                1,
            );
            resolve(&text, dir.path())
        };
        let config = with(
            "ruler = \"https://mimir.internal\"\nruler_tenant = \"relay\"\nrule_interval = \"30s\"",
        )
        .unwrap();
        let am = config.alertmanager.clone().unwrap();
        let ruler = am.ruler.unwrap();
        assert_eq!(ruler.url, "https://mimir.internal");
        assert_eq!(ruler.namespace, RulerSettings::DEFAULT_NAMESPACE);
        assert_eq!(ruler.tenant.as_deref(), Some("relay"));
        assert_eq!(ruler.api, canary_providers::rules::MIMIR_RULES_PREFIX);
        assert_eq!(am.rule_interval, Some(Duration::from_secs(30)));
        // `canary run --time-scale 60`: the plan, the cooldown and the rules' interval alike.
        let fast = config.clone().compressed(60.0);
        assert_eq!(
            fast.alertmanager.unwrap().rule_interval,
            Some(Duration::from_millis(500))
        );
        assert_eq!(fast.cooldown, config.cooldown / 60);
        assert_eq!(
            fast.lease,
            Config::MIN_COMPRESSED_LEASE,
            "30 s / 60, not below 2 s"
        );
        assert_eq!(fast.plan, config.plan.compressed(60.0));

        let err = with("rules_dir = \"rules.d\"\nruler = \"https://mimir.internal\"").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("both rules_dir and ruler"), "{text}");
        assert!(text.contains("keep one"), "{text}");
    }

    #[test]
    fn comparisons_resolve_into_the_plan_and_overlapping_looks_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let with = |compare: &str| {
            let text =
                EVERY_CHOICE.replacen("[[guardrails]]", &format!("{compare}\n\n[[guardrails]]"), 1);
            resolve(&text, dir.path())
        };
        let config = with(
            r#"[[compare]]
name = "ttfv_vs_baseline"
query = 'histogram_quantile(0.95, sum by (le) (rate(ttfv_ms_bucket[30s])))'
effect = "10%"
critical = true

[[compare]]
name = "errors_vs_baseline"
kind = "counts"
events = 'sum(sse_total) - sum(sse_complete_total)'
exposure = 'sum(sse_total)'
direction = "increase"
effect = "50%"
weight = 2
group = "streams"
alpha = 0.01
must_have_data = true

[[compare]]
name = "ttfv_spread"
kind = "spread"
query = 'histogram_quantile(0.95, sum by (le) (rate(ttfv_ms_bucket[30s])))'

[scoring]
marginal = 60
pass = 90
groups = { streams = 3 }"#,
        )
        .unwrap();
        let [ttfv, errors, spread] = &config.plan.comparisons[..] else {
            panic!("{:?}", config.plan.comparisons)
        };
        assert_eq!(ttfv.measure.kind(), MeasureKind::Continuous);
        assert_eq!(ttfv.effect, canary_core::judge::Effect::Relative(0.1));
        assert!(ttfv.critical);
        assert_eq!(ttfv.alpha, CompareSpec::DEFAULT_ALPHA);
        assert_eq!(ttfv.group, CompareSpec::DEFAULT_GROUP);
        assert_eq!(errors.measure.kind(), MeasureKind::Counts);
        assert_eq!((errors.weight, errors.alpha), (2.0, 0.01));
        assert_eq!(errors.group, "streams");
        assert!(errors.must_have_data && !ttfv.must_have_data);
        assert_eq!(spread.measure.kind(), MeasureKind::Spread);
        assert_eq!(config.plan.scoring.marginal, 60.0);
        assert_eq!(config.plan.scoring.pass, 90.0);
        assert_eq!(config.plan.scoring.group_weights["streams"], 3.0);

        // A window longer than the evaluation interval makes looks share samples: refused, at
        // the comparison, saying which window to use.
        let text = with(
            r#"[[compare]]
name = "slow"
query = 'histogram_quantile(0.95, sum by (le) (rate(ttfv_ms_bucket[5m])))'"#,
        )
        .unwrap_err()
        .to_string();
        assert!(text.contains("comparison \"slow\""), "{text}");
        assert!(
            text.contains("use a window of the evaluation interval"),
            "{text}"
        );
        // A counts comparison reads counters, not rates.
        let text = with(
            r#"[[compare]]
name = "rated"
kind = "counts"
events = 'sum(rate(sse_total[30s]))'
exposure = 'sum(sse_total)'"#,
        )
        .unwrap_err()
        .to_string();
        assert!(text.contains("reads a range"), "{text}");
        // Missing queries, unknown choices, an effect that is not one, a name taken.
        let text = with(
            r#"[[compare]]
name = "g"
kind = "counts"
direction = "up"
effect = "lots"
must_have_data = "yes""#,
        )
        .unwrap_err()
        .to_string();
        for expected in [
            "needs `events`",
            "needs `exposure`",
            "up",
            "lots",
            "must_have_data",
            "already names a comparison or a guardrail",
        ] {
            assert!(text.contains(expected), "{expected}: {text}");
        }
    }
}
