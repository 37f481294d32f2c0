//! The production rehearsal: a production-like stack on loopback, built from Debian's packages and
//! the project's own binaries, and `canary run` (not `demo`) against it the way a team runs it on
//! release day — `canary init`'s template edited where a team edits it, and a `.env.canary`
//! holding only the runbook's variables plus what `canary init` generated.
//!
//! - baseline r0.5 and canary r1: two `relay-demo` services (the canary optionally with a fault);
//! - HAProxy balancing them, driven through its runtime API (`LB_PROVIDER=haproxy`), or through
//!   a small `railway` script that behaves like a hosting platform's CLI
//!   (`LB_PROVIDER=railway`, the runbook's own choice, which the template maps to commands);
//! - Prometheus scraping both services and HAProxy's exporter, loading the run's rules from a
//!   rules directory (canary reloads it through its API);
//! - Alertmanager configured with what `canary render alertmanager` prints: the run's alerts to
//!   the controller's callback, escalations to a receiver standing for `ALERT_WEBHOOK_URL`;
//! - the Grafana stand-in; with `channels`, Slack and PagerDuty receivers and a real SMTP server,
//!   enabled as the template's comments say (uncommented, their variables added);
//! - production traffic: `hey` sending the runbook's query through HAProxy as each user, and a
//!   stream straight to the canary standing for the volume a 5 % share of production carries
//!   (a compressed clock shrinks every window; without it the canary's windows are nearly empty).
//!
//! Everything stays in one work directory (configuration, logs, evidence) for people to read;
//! `scripts/rehearse.sh` runs it from the command line, `crates/cli/tests/rehearsal.rs` asserts it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::grafana::{self, Grafana};
use crate::haproxy::Haproxy;
use crate::receiver::{Received, webhook_receiver_logged};
use crate::smtp::{self, Smtp};
use crate::{Alertmanager, Process, Prometheus, free_port, http_get, wait_for};

/// HAProxy's server names for the two arms, as the runbook names the branches.
pub const CANARY_SERVER: &str = "main";
pub const BASELINE_SERVER: &str = "r0.5-hotfix";

/// The variables the runbook's `.env.canary` stages (CANARY_DEVOPS_COORDINATION.md).
pub const RUNBOOK_VARIABLES: [&str; 21] = [
    "LB_PROVIDER",
    "LB_API_KEY",
    "LB_SERVICE",
    "PROMETHEUS_URL",
    "PROMETHEUS_TOKEN",
    "GRAFANA_URL",
    "GRAFANA_TOKEN",
    "ALERTMANAGER_URL",
    "ALERTMANAGER_TOKEN",
    "ALERT_WEBHOOK_URL",
    "PROD_API_URL",
    "API_TOKEN_USER_1",
    "API_TOKEN_USER_2",
    "API_TOKEN_USER_3",
    "API_TOKEN_USER_4",
    "API_TOKEN_USER_5",
    "CANARY_TRAFFIC_NEW",
    "CANARY_TRAFFIC_OLD",
    "CANARY_DURATION_MINUTES",
    "CANARY_ROLLBACK_THRESHOLD_TTFV_MS",
    "CANARY_ROLLBACK_THRESHOLD_SSE_PERCENT",
];

/// What `canary init` generates into `.env.canary`.
pub const INIT_VARIABLES: [&str; 2] = ["CANARY_SIGNING_KEY", "CANARY_ALERT_TOKEN"];

/// What the template's commented channels need, added only with [`Options::channels`] (the
/// PagerDuty endpoint because the stand-in is local).
pub const CHANNEL_VARIABLES: [&str; 6] = [
    "SLACK_WEBHOOK_URL",
    "PAGERDUTY_ROUTING_KEY",
    "PAGERDUTY_EVENTS_URL",
    "SMTP_URL",
    "SMTP_PASSWORD",
    "SLACK_ENGINEERING_WEBHOOK_URL",
];

/// How canary reaches the load balancer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lb {
    /// `LB_PROVIDER=haproxy`: canary's runtime-API provider.
    Haproxy,
    /// `LB_PROVIDER=railway`: the template's commands, run by a `railway` CLI stand-in on PATH.
    Railway,
}

/// Which of canary's two paths may act on a breach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// Both, as the template arms them: the engine's own evaluation and Prometheus' alert rules
    /// routed back by Alertmanager. Whichever acts first rolls back.
    Both,
    /// The engine alone (no `rules_dir`).
    Engine,
    /// The alert path first: the engine evaluates only every 10 runbook minutes, while the
    /// rules are evaluated every 30 runbook seconds (`[alertmanager] rule_interval`).
    Alerts,
}

/// A rehearsal's settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `canary` binary.
    pub canary: PathBuf,
    /// Where everything goes (created; kept).
    pub work: PathBuf,
    pub lb: Lb,
    /// `KIND[:rate][@onset]` for the canary service; the onset in runbook time (`@10m`),
    /// counted from the service's start.
    pub fault: Option<String>,
    /// How many times faster than the runbook the rehearsal runs.
    pub time_scale: f64,
    /// Enable the template's Slack, PagerDuty and email channels.
    pub channels: bool,
    pub guard: Guard,
    /// Add the template's example comparisons (canary judged against the baseline): the ANN
    /// p95, critical.
    pub compare: bool,
    /// Requests per second through the load balancer (spread over the five users).
    pub lb_rps: f64,
    /// Requests per second straight to the canary.
    pub canary_rps: f64,
}

impl Options {
    pub fn new(canary: PathBuf, work: PathBuf) -> Options {
        Options {
            canary,
            work,
            lb: Lb::Haproxy,
            fault: None,
            time_scale: 60.0,
            channels: false,
            guard: Guard::Both,
            compare: false,
            lb_rps: 20.0,
            canary_rps: 8.0,
        }
    }
}

/// The running stack.
pub struct Rehearsal {
    pub options: Options,
    pub haproxy: Haproxy,
    pub prometheus: Prometheus,
    pub alertmanager: Alertmanager,
    pub grafana: Grafana,
    /// What reached `ALERT_WEBHOOK_URL` (Alertmanager's escalation).
    pub escalations: Received,
    pub slack: Received,
    pub pagerduty: Received,
    pub smtp: Option<Smtp>,
    /// The canary service's address (its health check and direct traffic).
    pub canary_addr: SocketAddr,
    /// When the canary service was started: its fault's onset counts from here.
    pub canary_started: SystemTime,
    /// `.env.canary` as written: `(name, value)`.
    pub env: Vec<(String, String)>,
    _services: Vec<Process>,
    traffic: Vec<Process>,
}

/// A `canary` run or resume in progress.
pub struct Running {
    child: std::process::Child,
    stdout: PathBuf,
    stderr: PathBuf,
    started: Instant,
}

impl Running {
    /// `kill -9`: the controller dies without rolling back or sealing anything.
    pub fn kill_9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How a `canary run` of the rehearsal ended.
#[derive(Debug)]
pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub run_id: String,
    pub bundle: PathBuf,
    /// HAProxy's weights read back after the run: `(canary, baseline)`.
    pub weights: (u32, u32),
}

impl Outcome {
    /// When the run decided and when its final traffic change was verified (ms since the
    /// epoch), and which path acted, read from `CANARY_DECISION_FINAL.txt`.
    pub fn timeline(&self) -> Option<Timeline> {
        let decision =
            std::fs::read_to_string(self.bundle.join("CANARY_DECISION_FINAL.txt")).ok()?;
        let stamp = |after: &str| -> Option<u64> {
            let at = decision.find(after)? + after.len();
            let text = decision[at..].trim_start();
            epoch_ms(text.split_whitespace().next()?)
        };
        let reasons = decision
            .split("REASONS")
            .nth(1)?
            .split("GUARDRAILS")
            .next()?;
        Some(Timeline {
            decided_ms: stamp("\ndecided")?,
            verified_ms: stamp("verified")?,
            by_alert: reasons.contains("Alertmanager alert") && !reasons.contains("canary value"),
        })
    }
}

/// What [`Outcome::timeline`] reads.
#[derive(Debug, Clone, Copy)]
pub struct Timeline {
    pub decided_ms: u64,
    pub verified_ms: u64,
    /// The alert path acted (the engine had not breached by itself).
    pub by_alert: bool,
}

/// `2026-12-03T01:06:22.740Z` as milliseconds since the epoch.
fn epoch_ms(text: &str) -> Option<u64> {
    let (date, time) = text.trim_end_matches('Z').split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':');
    let (h, min) = (
        t.next()?.parse::<i64>().ok()?,
        t.next()?.parse::<i64>().ok()?,
    );
    let sec: f64 = t.next()?.parse().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let ms = ((days * 86_400 + h * 3600 + min * 60) as f64 + sec) * 1000.0;
    Some(ms.round() as u64)
}

/// A random hex token (test secrets: the standard library's hasher keys are random per process).
fn token(bytes: usize) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::new();
    while out.len() < bytes * 2 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_usize(out.len());
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out.truncate(bytes * 2);
    out
}

/// `KIND[:rate][@onset][~ramp]` with the onset and the ramp in runbook time (a bare number is
/// minutes), for a service on a clock `scale` times faster: both divided, in milliseconds.
pub fn wall_fault(fault: &str, scale: f64) -> String {
    let (rest, ramp) = match fault.split_once('~') {
        Some((rest, ramp)) => (rest, Some(ramp)),
        None => (fault, None),
    };
    let (head, onset) = match rest.split_once('@') {
        Some((head, onset)) => (head, Some(onset)),
        None => (rest, None),
    };
    let mut out = head.to_owned();
    if let Some(onset) = onset {
        out.push_str(&format!("@{}ms", wall_ms(onset, scale)));
    }
    if let Some(ramp) = ramp {
        out.push_str(&format!("~{}ms", wall_ms(ramp, scale)));
    }
    out
}

/// A runbook duration (`10m`, `90s`, `1.5s`, `500ms`, `1h`, a bare number in minutes) in wall
/// milliseconds on a clock `scale` times faster.
fn wall_ms(runbook: &str, scale: f64) -> u64 {
    let (number, unit) = runbook.split_at(
        runbook
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(runbook.len()),
    );
    let value: f64 = number
        .parse()
        .unwrap_or_else(|_| panic!("fault time {runbook:?}: expected e.g. 10m, 90s"));
    let seconds = match unit {
        "" | "m" => value * 60.0,
        "s" => value,
        "ms" => value / 1000.0,
        "h" => value * 3600.0,
        other => panic!("fault time unit {other:?}: use ms, s, m or h"),
    };
    (seconds * 1000.0 / scale).round() as u64
}

impl Rehearsal {
    /// Stands the stack up and writes `canary.toml` and `.env.canary` into the work directory.
    /// Returns once Prometheus has scraped both services a few times and traffic flows.
    pub fn start(options: Options) -> Rehearsal {
        let work = options.work.clone();
        for d in ["bin", "rules", "logs"] {
            std::fs::create_dir_all(work.join(d)).expect("create the work directory");
        }
        let logs = work.join("logs");
        let scale = options.time_scale;

        // The services' own secrets (not canary's: canary sees only the users' tokens).
        let jwt = token(32);
        let data_key = token(32);
        let relay = |name: &str, version: &str, fault: Option<&str>| {
            let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
            let mut cmd = Command::new(&options.canary);
            cmd.args(["relay-demo", "serve", "--seed", "--listen"])
                .arg(addr.to_string())
                .args(["--version-label", version])
                .env("RELAY_JWT_SECRET", &jwt)
                .env("RELAY_DATA_KEY", &data_key)
                .env("RUST_LOG", "warn");
            if let Some(f) = fault {
                cmd.arg("--fault").arg(wall_fault(f, scale));
            }
            (Process::spawn(name, &logs, cmd), addr)
        };
        let (mut baseline, baseline_addr) = relay("relay-r0.5", "r0.5", None);
        let canary_started = SystemTime::now();
        let (mut canary, canary_addr) = relay("relay-r1", "r1", options.fault.as_deref());
        for (p, addr) in [(&mut baseline, baseline_addr), (&mut canary, canary_addr)] {
            wait_for(
                "relay-demo to answer /healthz",
                Duration::from_secs(120),
                || {
                    p.assert_running();
                    matches!(http_get(addr, "/healthz"), Ok((200, _))).then_some(())
                },
            );
        }
        let tokens = Command::new(&options.canary)
            .args(["relay-demo", "tokens"])
            .env("RELAY_JWT_SECRET", &jwt)
            .output()
            .expect("canary relay-demo tokens");
        let tokens: Vec<(String, String)> = String::from_utf8_lossy(&tokens.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        assert_eq!(tokens.len(), 5, "relay-demo tokens: {tokens:?}");

        let haproxy = Haproxy::start(
            &logs,
            (BASELINE_SERVER, baseline_addr),
            (CANARY_SERVER, canary_addr),
        );
        let grafana = Grafana::start();
        let (escalation_url, escalations) =
            webhook_receiver_logged(logs.join("alert-webhook.jsonl"));
        let (slack_url, slack) = webhook_receiver_logged(logs.join("slack.jsonl"));
        let (pagerduty_url, pagerduty) = webhook_receiver_logged(logs.join("pagerduty.jsonl"));
        let smtp = options.channels.then(|| Smtp::start_in(&logs));

        // Prometheus: the services (labelled with their version, as a team's scrape config
        // would), HAProxy's exporter, the rules directory, Alertmanager. 15 s scrapes in runbook
        // time.
        let rules_dir = work.join("rules");
        // Comparisons need several samples inside each evaluation interval (their windows are
        // one interval long): every 5 runbook seconds then, as a team would scrape those series.
        let scrape = if options.compare { 5_000.0 } else { 15_000.0 };
        let interval = format!("{}ms", ((scrape / scale).round() as u64).max(50));
        let alertmanager_port = free_port();
        let prometheus_config = format!(
            r#"global:
  scrape_interval: {interval}
  evaluation_interval: {interval}
rule_files:
  - {rules}/*.yml
alerting:
  alertmanagers:
    - static_configs:
        - targets: ["127.0.0.1:{alertmanager_port}"]
scrape_configs:
  - job_name: relay
    static_configs:
      - targets: ["{baseline_addr}"]
        labels: {{version: r0.5}}
      - targets: ["{canary_addr}"]
        labels: {{version: r1}}
  - job_name: haproxy
    static_configs:
      - targets: ["{haproxy_metrics}"]
"#,
            rules = rules_dir.display(),
            haproxy_metrics = haproxy.metrics,
        );
        let prometheus_dir = tempfile::tempdir_in(&work).expect("tempdir");
        let data = prometheus_dir.path().join("data");
        // An alert firing in the seconds after a reload (the rules' install) is sent again only
        // after the resend delay, 1m by default.
        let prometheus = Prometheus::start_with_flags(
            prometheus_dir,
            &data,
            &prometheus_config,
            &["--rules.alert.resend-delay=1s"],
        );

        // The team's canary.toml: `canary init`, then the edits the template's comments ask for.
        let init = Command::new(&options.canary)
            .args(["init", "--out", "canary.toml"])
            .current_dir(&work)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .output()
            .expect("canary init");
        assert!(
            init.status.success(),
            "canary init: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        // Not yet bound either: keep it apart from Alertmanager's.
        let callback_port = std::iter::repeat_with(free_port)
            .find(|p| *p != alertmanager_port)
            .expect("a free port");
        let mut toml = std::fs::read_to_string(work.join("canary.toml")).expect("canary.toml");
        edit(
            &mut toml,
            "# url = \"${CANARY_URL}\"\n# health = \"/healthz\"",
            &format!("url = \"http://{canary_addr}\"\nhealth = \"/healthz\""),
        );
        edit(
            &mut toml,
            "callback_listen = \"127.0.0.1:9977\"",
            &format!("callback_listen = \"127.0.0.1:{callback_port}\""),
        );
        if options.guard != Guard::Engine {
            edit(
                &mut toml,
                "# rules_dir = \"/etc/prometheus/rules.d\"",
                &format!("rules_dir = \"{}\"", rules_dir.display()),
            );
        }
        if options.guard == Guard::Alerts {
            edit(
                &mut toml,
                "evaluation_interval = \"30s\"",
                "evaluation_interval = \"10m\"",
            );
            edit(
                &mut toml,
                "callback_token = \"${CANARY_ALERT_TOKEN}\"",
                "callback_token = \"${CANARY_ALERT_TOKEN}\"\nrule_interval = \"30s\"",
            );
        }
        if options.lb == Lb::Haproxy {
            let start = toml
                .find("provider = \"${LB_PROVIDER")
                .expect("[traffic] provider");
            let end = start
                + toml[start..]
                    .find("timeout = \"30s\"")
                    .expect("[traffic] timeout");
            toml.replace_range(
                start..end,
                &format!(
                    "provider = \"${{LB_PROVIDER:-railway}}\"\nsocket = \"{}\"\nbackend = \"{}\"\ncanary_server = \"{CANARY_SERVER}\"\nbaseline_server = \"{BASELINE_SERVER}\"\n",
                    haproxy.socket.display(),
                    crate::haproxy::BACKEND,
                ),
            );
        }
        if options.channels {
            let start = toml.find("# [[notify]]").expect("the template's channels");
            let end = start + toml[start..].find("\n\n").expect("the end of the channels");
            let enabled: String = toml[start..end]
                .lines()
                .map(|l| l.strip_prefix("# ").unwrap_or(l))
                .filter(|l| *l != "#")
                .filter(|l| !l.starts_with("url = \"https://events.eu"))
                .map(|l| format!("{l}\n"))
                .collect();
            let enabled = enabled.replace(
                "routing_key = \"${PAGERDUTY_ROUTING_KEY}\"",
                "routing_key = \"${PAGERDUTY_ROUTING_KEY}\"\nurl = \"${PAGERDUTY_EVENTS_URL}\"",
            );
            toml.replace_range(start..end, &enabled);
        }
        if options.compare {
            // The template's commented example, uncommented as a team would.
            let start = toml
                .find("# [[compare]]")
                .expect("the template's comparisons");
            let end = start
                + toml[start..]
                    .find("\n#\n")
                    .expect("the first comparison's end");
            let enabled: String = toml[start..end]
                .lines()
                .map(|l| format!("{}\n", l.strip_prefix("# ").unwrap_or(l)))
                .collect();
            toml.replace_range(start..end, &enabled);
        }
        std::fs::write(work.join("canary.toml"), &toml).expect("write canary.toml");

        // Alertmanager, configured with what `canary render alertmanager` prints, its
        // variables substituted as the header says (envsubst).
        let rendered = render_alertmanager(
            &options.canary,
            &work,
            &format!("http://127.0.0.1:{callback_port}/api/alertmanager"),
        );
        let generated = read_env(&work.join(".env.canary"));
        let alert_token = generated
            .iter()
            .find(|(k, _)| k == "CANARY_ALERT_TOKEN")
            .map(|(_, v)| v.clone())
            .expect("canary init generated CANARY_ALERT_TOKEN");
        let alertmanager_yml = envsubst(
            &rendered,
            &[
                ("ALERT_WEBHOOK_URL", &format!("{escalation_url}/alerts")),
                ("CANARY_ALERT_TOKEN", &alert_token),
            ],
        );
        let alertmanager = Alertmanager::start_on(alertmanager_port, &alertmanager_yml);

        // The runbook's .env.canary, after what `canary init` generated.
        let mut env: Vec<(String, String)> = vec![
            (
                "LB_PROVIDER".into(),
                match options.lb {
                    Lb::Haproxy => "haproxy",
                    Lb::Railway => "railway",
                }
                .into(),
            ),
            ("LB_API_KEY".into(), token(16)),
            ("LB_SERVICE".into(), "relay".into()),
            (
                "PROMETHEUS_URL".into(),
                format!("{}/api/v1", prometheus.url()),
            ),
            ("PROMETHEUS_TOKEN".into(), token(16)),
            ("GRAFANA_URL".into(), grafana.url().to_owned()),
            ("GRAFANA_TOKEN".into(), grafana::TOKEN.into()),
            ("ALERTMANAGER_URL".into(), alertmanager.url()),
            ("ALERTMANAGER_TOKEN".into(), token(16)),
            (
                "ALERT_WEBHOOK_URL".into(),
                format!("{escalation_url}/alerts"),
            ),
            ("PROD_API_URL".into(), format!("http://{}", haproxy.addr)),
        ];
        env.extend(tokens.iter().cloned());
        env.extend(
            [
                ("CANARY_TRAFFIC_NEW", "5"),
                ("CANARY_TRAFFIC_OLD", "95"),
                ("CANARY_DURATION_MINUTES", "60"),
                ("CANARY_ROLLBACK_THRESHOLD_TTFV_MS", "1500"),
                ("CANARY_ROLLBACK_THRESHOLD_SSE_PERCENT", "99.6"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        if options.channels {
            env.extend(
                [
                    ("SLACK_WEBHOOK_URL", format!("{slack_url}/services/live")),
                    ("PAGERDUTY_ROUTING_KEY", token(16)),
                    (
                        "PAGERDUTY_EVENTS_URL",
                        format!("{pagerduty_url}/v2/enqueue"),
                    ),
                    (
                        "SMTP_URL",
                        format!(
                            "smtp://{}@127.0.0.1:{}?tls=none",
                            smtp::LOGIN,
                            smtp.as_ref().map_or(0, |s| s.port)
                        ),
                    ),
                    ("SMTP_PASSWORD", smtp::PASSWORD.to_owned()),
                    (
                        "SLACK_ENGINEERING_WEBHOOK_URL",
                        format!("{slack_url}/services/engineering"),
                    ),
                ]
                .map(|(k, v)| (k.to_owned(), v)),
            );
        }
        let mut text = std::fs::read_to_string(work.join(".env.canary")).unwrap_or_default();
        text.push_str("\n# The runbook's variables (CANARY_DEVOPS_COORDINATION.md)\n");
        for (k, v) in &env {
            text.push_str(&format!("{k}={v}\n"));
        }
        std::fs::write(work.join(".env.canary"), text).expect("write .env.canary");
        let mut all = generated;
        all.extend(env);

        if options.lb == Lb::Railway {
            let lb_key = all
                .iter()
                .find(|(k, _)| k == "LB_API_KEY")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            write_railway_cli(&work.join("bin"), &haproxy.socket, &lb_key);
        }

        // Prometheus has a few scrapes of both services before the baseline has a rate.
        wait_for(
            "Prometheus to have scraped both services",
            Duration::from_secs(60),
            || {
                let (code, body) = http_get(
                    prometheus.addr,
                    "/api/v1/query?query=count(up%7Bjob%3D%22relay%22%7D%3D%3D1)",
                )
                .ok()?;
                (code == 200 && body.contains("\"2\"")).then_some(())
            },
        );

        let mut rehearsal = Rehearsal {
            options,
            haproxy,
            prometheus,
            alertmanager,
            grafana,
            escalations,
            slack,
            pagerduty,
            smtp,
            canary_addr,
            canary_started,
            env: all,
            _services: vec![baseline, canary],
            traffic: Vec::new(),
        };
        rehearsal.start_traffic(&tokens);
        // The preflight asks each guardrail for the baseline's value: traffic must have filled
        // one 5-minute window (compressed) first, as production's would have.
        let window = format!("{}ms", (300_000.0 / scale).round() as u64);
        let query = format!(
            "/api/v1/query?query=sum(increase(ttfv_ms_count%7Bversion%3D%22r0.5%22%7D%5B{window}%5D))%3E0"
        );
        wait_for(
            "the baseline to have a window of traffic in Prometheus",
            Duration::from_secs(60),
            || {
                let (code, body) = http_get(rehearsal.prometheus.addr, &query).ok()?;
                (code == 200 && body.contains("\"value\"")).then_some(())
            },
        );
        rehearsal
    }

    /// Production traffic: each user through HAProxy, and a stream straight to the canary.
    fn start_traffic(&mut self, tokens: &[(String, String)]) {
        let logs = self.options.work.join("logs");
        let seconds = (3600.0 / self.options.time_scale).ceil() as u64 + 120;
        let lb = format!("http://{}/api/v1/memory/query", self.haproxy.addr);
        let canary = format!("http://{}/api/v1/memory/query", self.canary_addr);
        let per_user = self.options.lb_rps / tokens.len() as f64;
        let mut streams: Vec<(String, &str, &str, f64)> = tokens
            .iter()
            .enumerate()
            .map(|(i, (_, t))| {
                (
                    format!("traffic-user_{}", i + 1),
                    t.as_str(),
                    lb.as_str(),
                    per_user,
                )
            })
            .collect();
        if self.options.canary_rps > 0.0 {
            streams.push((
                "traffic-canary".into(),
                tokens[0].1.as_str(),
                canary.as_str(),
                self.options.canary_rps,
            ));
        }
        // hey's workers in one process fire in step (every 1/q from the same start), so a
        // stream is one single-worker process per request per second, started 1/rate apart:
        // requests spread evenly, as production's do, not in bursts a short window misses.
        let mut workers = Vec::new();
        for (i, (name, token, url, rate)) in streams.into_iter().enumerate() {
            if rate <= 0.0 {
                continue;
            }
            let user = format!("user_{}", (i % tokens.len()) + 1);
            let body = format!(
                r#"{{"query": "What are my recent notes about project alpha?", "user_id": "{user}", "top_k": 24, "timeout_ms": 2000}}"#
            );
            let n = rate.ceil().max(1.0) as u32;
            for k in 0..n {
                let mut cmd = Command::new("hey");
                cmd.arg("-z")
                    .arg(format!("{seconds}s"))
                    .args(["-c", "1", "-q"])
                    .arg(format!("{:.3}", rate / f64::from(n)))
                    .args(["-m", "POST", "-T", "application/json", "-H"])
                    .arg(format!("Authorization: Bearer {token}"))
                    .arg("-d")
                    .arg(&body)
                    .arg(url);
                let offset = Duration::from_secs_f64(f64::from(k) / rate);
                workers.push((offset, format!("{name}-{k}"), cmd));
            }
        }
        workers.sort_by_key(|(offset, _, _)| *offset);
        let started = Instant::now();
        for (offset, name, cmd) in workers {
            if let Some(wait) = offset.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
            self.traffic.push(Process::spawn(&name, &logs, cmd));
        }
    }

    /// `canary run -c canary.toml --time-scale N` in the work directory, with nothing in its
    /// environment but `PATH` (the `railway` stand-in first) and `HOME`: everything else comes
    /// from `.env.canary`. Bounded by the run's window plus two minutes.
    pub fn run(&self) -> Outcome {
        let running = self.start_run();
        self.finish(running)
    }

    /// Starts `canary run` as [`Rehearsal::run`] does, without waiting for it.
    pub fn start_run(&self) -> Running {
        let scale = self.options.time_scale.to_string();
        self.canary(
            &["run", "-c", "canary.toml", "--time-scale", &scale],
            "canary-run",
        )
    }

    /// `canary resume RUN_ID -c canary.toml`, as an operator on the same machine would after
    /// the controller died.
    pub fn start_resume(&self, run_id: &str) -> Running {
        self.canary(&["resume", run_id, "-c", "canary.toml"], "canary-resume")
    }

    fn canary(&self, args: &[&str], log: &str) -> Running {
        let work = &self.options.work;
        let path = format!(
            "{}:{}",
            work.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let stdout = work.join(format!("logs/{log}.stdout"));
        let stderr = work.join(format!("logs/{log}.stderr"));
        let child = Command::new(&self.options.canary)
            .args(args)
            .current_dir(work)
            .env_clear()
            .env("PATH", path)
            .env("HOME", work)
            .env("RUST_LOG", "canary=info,warn")
            .stdout(std::fs::File::create(&stdout).expect("stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("canary");
        Running {
            child,
            stdout,
            stderr,
            started: Instant::now(),
        }
    }

    /// The id of the run whose controller is (or was) active, from the state directory.
    pub fn active_run_id(&self) -> Option<String> {
        let path = self.options.work.join(".canary/active/relay.json");
        let file: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
        file["run_id"].as_str().map(str::to_owned)
    }

    /// Waits for `running` to end (bounded by the run's window plus two minutes) and reads
    /// HAProxy's weights back.
    pub fn finish(&self, mut running: Running) -> Outcome {
        let limit =
            Duration::from_secs_f64(3600.0 / self.options.time_scale) + Duration::from_secs(120);
        let status = loop {
            if let Some(status) = running.child.try_wait().expect("wait for canary") {
                break status;
            }
            if running.started.elapsed() > limit {
                let _ = running.child.kill();
                panic!(
                    "canary did not finish within {limit:?}:\n{}",
                    std::fs::read_to_string(&running.stderr).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let out = std::fs::read_to_string(&running.stdout).unwrap_or_default();
        let err = std::fs::read_to_string(&running.stderr).unwrap_or_default();
        // "RUN_ID VERDICT — evidence PATH"
        let first = out.lines().next().unwrap_or_default();
        let run_id = first
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned();
        let bundle = first
            .split_once("evidence ")
            .map(|(_, p)| self.options.work.join(p.trim()))
            .unwrap_or_default();
        Outcome {
            code: status.code().unwrap_or(-1),
            stdout: out,
            stderr: err,
            run_id,
            bundle,
            weights: (
                self.haproxy.weight(CANARY_SERVER),
                self.haproxy.weight(BASELINE_SERVER),
            ),
        }
    }

    /// `canary verify BUNDLE`: its exit code and output.
    pub fn verify(&self, bundle: &Path) -> (i32, String) {
        let out = Command::new(&self.options.canary)
            .arg("verify")
            .arg(bundle)
            .current_dir(&self.options.work)
            .output()
            .expect("canary verify");
        (
            out.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// Milliseconds since the epoch at which the canary's fault began (its onset in runbook
    /// time, compressed), for latency measurements.
    pub fn fault_onset_ms(&self) -> Option<u64> {
        let fault = self.options.fault.as_deref()?;
        let wall = wall_fault(fault, self.options.time_scale);
        let onset_ms: u64 = wall
            .split_once('@')
            .map(|(_, o)| o.trim_end_matches("ms").parse().unwrap_or(0))
            .unwrap_or(0);
        let started = self
            .canary_started
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        Some(started + onset_ms)
    }

    /// Stops the traffic (the services stop when the rehearsal drops).
    pub fn stop_traffic(&mut self) {
        self.traffic.clear();
    }
}

/// `canary render alertmanager -c canary.toml --standalone --callback-url URL` in `dir`: the
/// alertmanager.yml it prints, its `${VARIABLE}`s left for [`envsubst`].
pub fn render_alertmanager(canary: &Path, dir: &Path, callback_url: &str) -> String {
    let out = Command::new(canary)
        .args([
            "render",
            "alertmanager",
            "-c",
            "canary.toml",
            "--standalone",
        ])
        .arg("--callback-url")
        .arg(callback_url)
        .current_dir(dir)
        .output()
        .expect("canary render alertmanager");
    assert!(
        out.status.success(),
        "canary render alertmanager: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `${NAME}` replaced by its value, as `envsubst` does with the variables given.
pub fn envsubst(text: &str, vars: &[(&str, &str)]) -> String {
    vars.iter().fold(text.to_owned(), |t, (name, value)| {
        t.replace(&format!("${{{name}}}"), value)
    })
}

/// Replaces the one occurrence of `from` in the template; panics if the template changed.
fn edit(toml: &mut String, from: &str, to: &str) {
    assert!(
        toml.contains(from),
        "the canary init template no longer has {from:?}"
    );
    *toml = toml.replacen(from, to, 1);
}

/// `NAME=value` lines of an env file.
fn read_env(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// A `railway` CLI stand-in on PATH: `railway service update SERVICE --traffic-split
/// main:N,r0.5-hotfix:M` and `railway service list SERVICE`, refusing without the right
/// `LB_API_KEY` — the platform's traffic split is HAProxy's weights behind it.
fn write_railway_cli(bin: &Path, socket: &Path, key: &str) {
    let backend = crate::haproxy::BACKEND;
    let script = format!(
        r#"#!/bin/sh
# A hosting platform's CLI, as far as canary's `command` provider sees it.
set -eu
[ "${{LB_API_KEY:-}}" = "{key}" ] || {{ echo "railway: Unauthorized. Run railway login or set LB_API_KEY." >&2; exit 1; }}
sock="{socket}"
runtime() {{ echo "$1" | socat stdio "unix-connect:$sock"; }}
case "${{1:-}} ${{2:-}}" in
  "service update")
    [ "${{4:-}}" = "--traffic-split" ] || {{ echo "railway: usage: service update SERVICE --traffic-split A:N,B:M" >&2; exit 2; }}
    for part in $(echo "$5" | tr ',' ' '); do
      name="${{part%%:*}}"; weight="${{part##*:}}"
      out=$(runtime "set weight {backend}/$name $weight")
      [ -z "$out" ] || {{ echo "railway: $out" >&2; exit 1; }}
    done
    echo "Traffic split updated for $3" ;;
  "service list")
    main=$(runtime "get weight {backend}/{CANARY_SERVER}" | cut -d' ' -f1)
    base=$(runtime "get weight {backend}/{BASELINE_SERVER}" | cut -d' ' -f1)
    echo "$3 traffic: {CANARY_SERVER}:$main {BASELINE_SERVER}:$base" ;;
  *) echo "railway: unknown command $*" >&2; exit 2 ;;
esac
"#,
        socket = socket.display(),
    );
    let path = bin.join("railway");
    std::fs::write(&path, script).expect("write the railway stand-in");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .expect("chmod the railway stand-in");
}

#[cfg(test)]
mod tests {
    use super::wall_fault;

    #[test]
    fn a_fault_reads_in_runbook_time_and_runs_on_the_wall_clock() {
        assert_eq!(wall_fault("slow-ttfv", 60.0), "slow-ttfv");
        assert_eq!(wall_fault("slow-ttfv@10m", 60.0), "slow-ttfv@10000ms");
        assert_eq!(
            wall_fault("sse-drop:0.05@90s", 60.0),
            "sse-drop:0.05@1500ms"
        );
        assert_eq!(
            wall_fault("slow-ttfv@10m~5m", 60.0),
            "slow-ttfv@10000ms~5000ms"
        );
        assert_eq!(wall_fault("slow-ann~10", 60.0), "slow-ann~10000ms");
        assert_eq!(wall_fault("slow-ttfv@2m~0", 1.0), "slow-ttfv@120000ms~0ms");
    }
}
