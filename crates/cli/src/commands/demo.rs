//! `canary demo`: the whole runbook on one machine with no infrastructure.
//!
//! Starts two `relay-demo` processes (baseline r0.5, canary r1, seeded, the canary with any
//! `--fault`), the embedded proxy as its own process (so it outlives a dead controller and its
//! lease can lapse), the embedded metrics store scraping both services, and steady background
//! traffic from the seeded users; then runs the `canary init` runbook through the same code path
//! as `canary run`, on a clock compressed `--time-scale` times.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use canary_core::{Plan, Secret, Verdict};
use canary_evidence::render::alerts::Alerts;
use canary_evidence::render::dashboards::Dashboards;
use canary_evidence::{Signer, verify};
use canary_load::{CanaryRoute, Mode, OpenLoop, ProbeSpec, ProbeUser, Scenario, Targeting, User};
use canary_promql::{EvalOptions, Store};
use canary_providers::metrics::MetricSource;
use canary_providers::metrics::embedded::EmbeddedSource;
use canary_providers::scrape::{ScrapeConfig, ScrapeTarget, Scraper};
use canary_providers::traffic::{EmbeddedRouter, EmbeddedRouterConfig, TrafficRouter};
use canary_proxy::ReadyFile;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::config::{self, INIT_TEMPLATE, Needs, env::Env};
use crate::observe::scope_guardrails;
use crate::output::Format;
use crate::run::delegates::LoadDelegates;
use crate::run::wiring::{health_watch, lease_keeper};
use crate::run::{self, RunOptions, Wiring, random_token};

/// Run the whole runbook against two local relay-demo services (baseline r0.5, canary r1)
/// behind the embedded proxy, with embedded metrics, on a compressed clock: the 60-minute
/// canary takes about a minute. Ends with PROMOTE — or, with --fault, ROLLBACK for the right
/// reason — and a signed evidence bundle.
#[derive(clap::Args)]
#[command(after_help = "Examples:
  canary demo                               healthy canary: PROMOTE in about a minute
  canary demo --fault slow-ttfv             TTFV p95 over 1500 ms for 5 runbook minutes: ROLLBACK
  canary demo --fault tenant-leak@20m       a cross-tenant leak from T+20: SECURITY ROLLBACK
  canary demo --fault sse-drop:0.2 --time-scale 30

Faults: slow-ttfv, sse-drop, rls-errors, tenant-leak, slow-ann, pool-saturation, as
KIND[:rate][@onset] with the onset in runbook time (20m = T+20).
Exit codes: 0 PROMOTE, 3 ROLLBACK, 4 INCONCLUSIVE, 1 error.")]
pub struct DemoArgs {
    /// Make the canary misbehave: KIND[:rate][@onset] (repeatable).
    #[arg(long = "fault", value_name = "KIND[:rate][@onset]")]
    faults: Vec<String>,
    /// How many times faster than real time the runbook runs (every duration, including PromQL
    /// range windows, is divided by it).
    #[arg(long, default_value_t = 60.0)]
    time_scale: f64,
    /// Where the evidence bundle goes.
    #[arg(long, default_value = "canary-evidence")]
    evidence_dir: PathBuf,
    /// Run history, cooldowns, the demo's signing key and its runs' records (for resume).
    #[arg(long, default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Background traffic through the proxy, requests per second (on top of the burst).
    #[arg(long, default_value_t = 16.0)]
    background_rps: f64,
    /// Background traffic pinned to the canary, requests per second, so that its percentiles
    /// rest on enough samples at a 5 % split.
    #[arg(long, default_value_t = 8.0)]
    canary_rps: f64,
    /// Memories seeded per user in each service.
    #[arg(long, default_value_t = 200)]
    seed_per_user: usize,
    /// Run even though the cooldown after an earlier rollback is active (demo runs share the
    /// state directory's history; the demo's cooldown is compressed like its clock).
    #[arg(long, requires = "reason")]
    override_cooldown: bool,
    /// Why the cooldown is overridden; recorded in the evidence.
    #[arg(long)]
    reason: Option<String>,
    #[arg(long, value_enum, default_value_t)]
    output: Format,
}

/// A child process of the demo, killed when dropped, and stopping by itself when the demo's
/// process is gone (its stdin, whose write end is `_lifeline`, closes).
struct Service {
    name: &'static str,
    child: Child,
    log: PathBuf,
    _lifeline: Option<tokio::process::ChildStdin>,
}

impl Service {
    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn free_addr() -> anyhow::Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(l.local_addr()?)
}

fn spawn(
    name: &'static str,
    work: &Path,
    args: &[String],
    env: &[(&str, &str)],
) -> anyhow::Result<Service> {
    let exe = std::env::current_exe().context("cannot find the canary executable")?;
    let log = work.join(format!("{name}.log"));
    let out =
        std::fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
    let err = out.try_clone()?;
    let mut cmd = Command::new(exe);
    // The child reads its stdin until it closes (`--exit-on-stdin-close`): the pipe's write end
    // lives in this process, so the child stops when the demo ends — or dies, even by kill -9.
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true)
        .env("RUST_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {name}"))?;
    let lifeline = child.stdin.take();
    Ok(Service {
        name,
        child,
        log,
        _lifeline: lifeline,
    })
}

/// Waits until `url` answers 200, the process is still alive, or fails after `timeout`.
async fn wait_ready(service: &mut Service, url: &str, timeout: Duration) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = service.child.try_wait()? {
            bail!(
                "{} exited ({status}) while starting:\n{}",
                service.name,
                service.output()
            );
        }
        if let Ok(r) = http.get(url).timeout(Duration::from_secs(2)).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{} did not become ready at {url} within {timeout:?}:\n{}",
                service.name,
                service.output()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Parses a demo fault, with the onset in runbook time (a bare number means minutes), and
/// returns it with the onset compressed for the service's wall clock.
fn demo_fault(text: &str, time_scale: f64) -> anyhow::Result<relay_demo::Fault> {
    let text = match text.split_once('@') {
        Some((head, onset)) if onset.parse::<f64>().is_ok() => format!("{head}@{onset}m"),
        _ => text.to_owned(),
    };
    let mut fault: relay_demo::Fault = text
        .parse()
        .map_err(|e| anyhow::anyhow!("--fault {text:?}: {e}"))?;
    fault.onset = Duration::from_secs_f64(fault.onset.as_secs_f64() / time_scale);
    Ok(fault)
}

/// The demo's signing key: made once and kept (mode 600) in the state directory, so every demo
/// bundle is signed by the same key.
fn demo_signer(state_dir: &Path) -> anyhow::Result<Signer> {
    let path = state_dir.join("demo-signing.key");
    if !path.exists() {
        std::fs::create_dir_all(state_dir)?;
        let pair = canary_evidence::generate_keypair()?;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts
            .open(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        std::io::Write::write_all(&mut f, pair.secret_hex.expose().as_bytes())?;
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Signer::from_secret(&Secret::new(text.trim()))?)
}

/// Where the demo keeps its state unless told otherwise.
pub const DEFAULT_STATE_DIR: &str = ".canary";

/// What a demo run was started with, kept in the state directory (`demo/runs/<run id>.json`,
/// nothing secret) so that `canary resume RUN_ID` can start the same services again: the
/// demo's services die with the controller that started them.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct DemoRecord {
    faults: Vec<String>,
    time_scale: f64,
    evidence_dir: PathBuf,
    background_rps: f64,
    canary_rps: f64,
    seed_per_user: usize,
}

impl DemoRecord {
    fn path(state_dir: &Path, run_id: &str) -> PathBuf {
        state_dir
            .join("demo")
            .join("runs")
            .join(format!("{run_id}.json"))
    }

    fn write(&self, state_dir: &Path, run_id: &str) -> anyhow::Result<()> {
        let path = Self::path(state_dir, run_id);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("cannot write {}", path.display()))
    }

    fn read(state_dir: &Path, run_id: &str) -> anyhow::Result<Option<DemoRecord>> {
        let path = Self::path(state_dir, run_id);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
                format!("{} is not a demo run record", path.display())
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }
}

/// Whether `run_id` is a demo run recorded in `state_dir`.
pub fn is_demo_run(state_dir: &Path, run_id: &str) -> bool {
    DemoRecord::path(state_dir, run_id).is_file()
}

/// The runbook exactly as `canary init` writes it, on the demo's compressed clock, with
/// isolation probes (the seeded users carry secret markers), and the cooldown compressed alike.
struct DemoPlan {
    plan: Plan,
    cooldown: Duration,
    config_sha256: String,
}

impl DemoPlan {
    fn new(time_scale: f64) -> anyhow::Result<DemoPlan> {
        let template = config::resolve_text(
            "canary init",
            INIT_TEMPLATE,
            Path::new("."),
            Needs::PLAN,
            Env::offline(),
        )?;
        let mut plan: Plan = template.plan.compressed(time_scale);
        plan.probes = true;
        Ok(DemoPlan {
            plan,
            cooldown: Duration::from_secs_f64(template.cooldown.as_secs_f64() / time_scale),
            config_sha256: template.sha256,
        })
    }
}

pub async fn run(args: DemoArgs) -> anyhow::Result<i32> {
    if !(args.time_scale.is_finite() && args.time_scale >= 1.0) {
        bail!("--time-scale must be 1 or more (60 runs the 60-minute window in a minute)");
    }
    let record = DemoRecord {
        faults: args.faults.clone(),
        time_scale: args.time_scale,
        evidence_dir: args.evidence_dir.clone(),
        background_rps: args.background_rps,
        canary_rps: args.canary_rps,
        seed_per_user: args.seed_per_user,
    };
    // Faults are checked before anything starts.
    for f in &record.faults {
        demo_fault(f, record.time_scale)?;
    }
    let demo = DemoPlan::new(record.time_scale)?;
    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("cannot create {}", args.state_dir.display()))?;
    let options = RunOptions {
        override_cooldown: if args.override_cooldown {
            args.reason.clone()
        } else {
            None
        },
        commit: None,
    };
    // Refuse before starting anything.
    run::check_cooldown(
        &canary_evidence::History::open(&args.state_dir)?,
        &demo.plan.service,
        demo.cooldown,
        &options,
    )?;
    let stack = Stack::start(&record, &args.state_dir, &demo.plan, Duration::ZERO).await?;
    stack
        .drive(
            &demo,
            &record,
            &args.state_dir,
            args.output,
            async |wiring| run::execute(wiring, options).await,
        )
        .await
}

/// `canary resume RUN_ID` of a demo run: starts the demo's services again (they died with the
/// controller), rebuilds the run from its journal and finishes it.
pub async fn resume(state_dir: &Path, run_id: &str, output: Format) -> anyhow::Result<i32> {
    let record = DemoRecord::read(state_dir, run_id)?
        .with_context(|| format!("{run_id} is not a demo run of {}", state_dir.display()))?;
    let (bundle, journal_writer, journal) =
        canary_evidence::Bundle::resume(&record.evidence_dir, run_id)
            .with_context(|| format!("cannot resume run {run_id}"))?;
    let demo = DemoPlan::new(record.time_scale)?;
    let differences = journal.header.plan.differences(&demo.plan);
    if !differences.is_empty() {
        bail!(
            "run {run_id} was made by another version of the demo; its plan differs:\n  - {}",
            differences.join("\n  - ")
        );
    }
    // Replayed before any service starts: a decided run is refused here.
    let mut resumed = run::Resumed::rebuild(bundle, journal_writer, &journal)?;
    let started = resumed.engine.started_at().unwrap_or(resumed.last_input);
    let elapsed =
        Duration::from_millis(u64::try_from(run::controller::now_ms() - started).unwrap_or(0));
    let stack = Stack::start(&record, state_dir, &demo.plan, elapsed).await?;
    resumed.current_weight = stack.embedded.get().await.map_or(0, |s| s.canary);
    stack
        .drive(&demo, &record, state_dir, output, async |wiring| {
            run::resume(wiring, resumed).await
        })
        .await
}

/// The demo's running parts: the three services, the embedded proxy's admin API, the metrics
/// store and its scraper, the steady background traffic, and the burst and probes to run.
struct Stack {
    services: Vec<Service>,
    embedded: Arc<EmbeddedRouter>,
    source: Arc<dyn MetricSource>,
    scrape_stop: tokio::sync::oneshot::Sender<()>,
    scrape_task: tokio::task::JoinHandle<()>,
    traffic_tasks: Vec<tokio::task::JoinHandle<()>>,
    burst: Option<Scenario>,
    probes: Option<ProbeSpec>,
}

impl Stack {
    /// Starts the services, waits until they answer, and starts scraping and background
    /// traffic. `elapsed` is how far into the run this is (a resume): faults keep their onset
    /// from the run's start.
    async fn start(
        record: &DemoRecord,
        state_dir: &Path,
        plan: &Plan,
        elapsed: Duration,
    ) -> anyhow::Result<Stack> {
        let scale = record.time_scale;
        let faults = record
            .faults
            .iter()
            .map(|f| {
                let mut fault = demo_fault(f, scale)?;
                fault.onset = fault.onset.saturating_sub(elapsed);
                Ok(fault)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let work = state_dir.join("demo");
        std::fs::create_dir_all(&work)?;

        // Secrets of this demo: generated (or taken from the environment, so a test can check
        // none leaks), passed to children through the environment only.
        let secret = |name: &str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .map_or_else(random_token, Secret::new)
        };
        let jwt_secret = secret(relay_demo::JWT_SECRET_ENV);
        let data_key = secret(relay_demo::DATA_SECRET_ENV);
        let proxy_token = secret("CANARY_PROXY_TOKEN");
        let child_env = [
            (relay_demo::JWT_SECRET_ENV, jwt_secret.expose()),
            (relay_demo::DATA_SECRET_ENV, data_key.expose()),
        ];

        eprintln!(
            "canary demo: starting relay-demo r0.5 (baseline) and r1 (canary), the proxy and the metrics store…"
        );
        let baseline_addr = free_addr()?;
        let canary_addr = free_addr()?;
        let relay_args = |addr: SocketAddr, version: &str, faults: &[relay_demo::Fault]| {
            let mut a = vec![
                "relay-demo".to_owned(),
                "serve".to_owned(),
                "--seed".to_owned(),
                "--seed-per-user".to_owned(),
                record.seed_per_user.to_string(),
                "--listen".to_owned(),
                addr.to_string(),
                "--version-label".to_owned(),
                version.to_owned(),
                "--exit-on-stdin-close".to_owned(),
            ];
            for f in faults {
                a.push("--fault".to_owned());
                a.push(f.to_string());
            }
            a
        };
        let mut baseline = spawn(
            "relay-r0.5",
            &work,
            &relay_args(baseline_addr, "r0.5", &[]),
            &child_env,
        )?;
        let baseline_url = format!("http://{baseline_addr}");
        let canary_url = format!("http://{canary_addr}");

        let ready_file = work.join("proxy.ready");
        let _ = std::fs::remove_file(&ready_file);
        let proxy_args: Vec<String> = [
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--baseline",
            &baseline_url,
            "--canary",
            &canary_url,
            "--weight",
            "0",
            "--threads",
            "1",
            "--exit-on-stdin-close",
            "--ready-file",
        ]
        .iter()
        .map(|a| (*a).to_owned())
        .chain([ready_file.display().to_string()])
        .collect();
        let mut proxy = spawn(
            "proxy",
            &work,
            &proxy_args,
            &[("CANARY_PROXY_TOKEN", proxy_token.expose())],
        )?;
        wait_ready(
            &mut baseline,
            &format!("{baseline_url}/healthz"),
            Duration::from_secs(120),
        )
        .await?;
        let mut canary = spawn(
            "relay-r1",
            &work,
            &relay_args(canary_addr, "r1", &faults),
            &child_env,
        )?;
        wait_ready(
            &mut canary,
            &format!("{canary_url}/healthz"),
            Duration::from_secs(120),
        )
        .await?;
        let ready = wait_proxy_ready(&mut proxy, &ready_file).await?;
        let proxy_url = format!("http://{}", ready.data);

        // Metrics: the embedded store scrapes both services every 15 runbook seconds.
        let store = Arc::new(RwLock::new(Store::default()));
        let scrape_interval = Duration::from_secs_f64((15.0 / scale).max(0.05));
        let target = |url: &str, arm: &str| ScrapeTarget {
            url: format!("{url}/metrics"),
            labels: vec![("arm".into(), arm.into()), ("job".into(), "relay".into())],
        };
        let scraper = Scraper::new(
            ScrapeConfig {
                targets: vec![
                    target(&baseline_url, "baseline"),
                    target(&canary_url, "canary"),
                ],
                interval: scrape_interval,
                timeout: scrape_interval.max(Duration::from_millis(200)),
                retention: Some(Duration::from_secs(3600)),
            },
            store.clone(),
        )?;
        let source: Arc<dyn MetricSource> = Arc::new(EmbeddedSource::with_options(
            store,
            EvalOptions {
                lookback_delta: (300_000.0 / scale) as i64,
                default_subquery_step: (60_000.0 / scale).max(1.0) as i64,
            },
        ));
        let (scrape_stop, scrape_stopped) = tokio::sync::oneshot::channel::<()>();
        let scrape_task = tokio::spawn(scraper.run(async move {
            let _ = scrape_stopped.await;
        }));

        // The seeded users, their tokens and markers.
        let tokens = relay_demo::tokens(jwt_secret.expose());
        let markers = relay_demo::seed_markers();
        let users: Vec<User> = tokens
            .iter()
            .map(|(name, token)| User {
                name: name.clone(),
                token: Secret::new(token.clone()),
            })
            .collect();
        let probe_users: Vec<ProbeUser> = tokens
            .iter()
            .filter_map(|(name, token)| {
                let marker = markers.iter().find(|(u, _)| u == name)?.1.clone();
                Some(ProbeUser {
                    name: name.clone(),
                    token: Secret::new(token.clone()),
                    marker: Secret::new(marker),
                })
            })
            .collect();
        let queries = relay_demo::seed_queries(16);

        // Traffic: the embedded proxy's admin API; it honours pins, and names the arm that
        // answered, only for requests that carry its pin token.
        let embedded = Arc::new(EmbeddedRouter::new(EmbeddedRouterConfig {
            admin_url: format!("http://{}", ready.admin),
            token: proxy_token.expose().to_owned(),
        })?);
        let pin_proof = crate::commands::load::pin_proof(Some(&embedded), true).await?;

        // Steady background traffic for the whole window: through the split, and pinned to
        // the canary so its percentiles rest on enough samples.
        let window = plan.window().saturating_sub(elapsed) + Duration::from_secs(10);
        let background = |rate: f64, targeting: Targeting| {
            let mut s = Scenario::runbook(proxy_url.clone(), users.clone());
            s.queries = queries.clone();
            s.mode = Mode::OpenLoop(OpenLoop::new(rate, window, 64));
            s.targeting = targeting;
            s.pin_proof = pin_proof.clone();
            s
        };
        let traffic_tasks = [
            background(record.background_rps, Targeting::Lb),
            background(record.canary_rps, Targeting::Canary(CanaryRoute::PinHeader)),
        ]
        .into_iter()
        .map(|scenario| {
            tokio::spawn(async move {
                let _ = canary_load::run_burst(&scenario, None).await;
            })
        })
        .collect();

        // The runbook's burst and probes, through the proxy like production.
        let mut burst = Scenario::runbook(proxy_url.clone(), users);
        burst.queries = queries;
        burst.sample_rules = plan
            .guardrails
            .iter()
            .filter_map(canary_load::SampleRule::for_guardrail)
            .collect();
        burst.canary_weight_percent = plan.steps.first().map(|s| f64::from(s.weight));
        burst.pin_proof = pin_proof.clone();
        let mut probes = ProbeSpec::new(proxy_url.clone(), probe_users);
        probes.canary = Some(CanaryRoute::PinHeader);
        probes.pin_proof = pin_proof;

        eprintln!(
            "canary demo: baseline {baseline_url}, canary {canary_url}{}, proxy {proxy_url}; the 60-minute window runs in {:.0} s",
            if record.faults.is_empty() {
                String::new()
            } else {
                format!(" with {}", record.faults.join(", "))
            },
            plan.window().as_secs_f64()
        );
        Ok(Stack {
            services: vec![baseline, canary, proxy],
            embedded,
            source,
            scrape_stop,
            scrape_task,
            traffic_tasks,
            burst: Some(burst),
            probes: Some(probes),
        })
    }

    /// The run's wiring over this stack: the embedded proxy's lease renewed while the
    /// controller lives and its health checks turned into events, the live page as the
    /// dashboard, the engine as the alerting, and the demo's record written when the run
    /// starts.
    /// Wires the stack, lets `go` run the canary with it, stops the stack, and verifies and
    /// summarises the bundle: the demo's run and its resume differ only in `go`.
    async fn drive(
        self,
        demo: &DemoPlan,
        record: &DemoRecord,
        state_dir: &Path,
        output: Format,
        go: impl AsyncFnOnce(Wiring) -> anyhow::Result<run::Finished>,
    ) -> anyhow::Result<i32> {
        let signer = demo_signer(state_dir)?;
        let public_key = signer.public_hex();
        let (wiring, stack) = self.wiring(demo, record, state_dir, signer)?;
        let finished = go(wiring).await;
        stack.stop().await;
        summarise(finished?, &public_key, output)
    }

    fn wiring(
        mut self,
        demo: &DemoPlan,
        record: &DemoRecord,
        state_dir: &Path,
        signer: Signer,
    ) -> anyhow::Result<(Wiring, Stack)> {
        let plan = &demo.plan;
        let guardrails = scope_guardrails(plan, Some(plan.time_scale))?;
        let router: Arc<dyn TrafficRouter> = self.embedded.clone();
        let (events_tx, events_rx) = mpsc::channel(16);
        let background = vec![
            lease_keeper(self.embedded.clone(), Duration::from_secs(3)),
            health_watch(self.embedded.clone(), events_tx),
        ];
        let embedded = self.embedded.clone();
        let alert_guardrails = plan.guardrails.clone();
        let record_for_setup = record.clone();
        let state_for_setup = state_dir.to_path_buf();
        let wiring = Wiring {
            plan: plan.clone(),
            guardrails,
            router,
            source: self.source.clone(),
            delegates: Arc::new(LoadDelegates {
                scenario: self.burst.take(),
                probes: self.probes.take(),
                notify: None,
                dashboard: Arc::default(),
            }),
            signer,
            evidence_dir: record.evidence_dir.clone(),
            state_dir: state_dir.to_path_buf(),
            cooldown: demo.cooldown,
            config_sha256: demo.config_sha256.clone(),
            control_listen: "127.0.0.1:0".parse()?,
            alert_token: None,
            background,
            setup: Box::new(move |run_id, control_url| {
                Box::pin(async move {
                    // Without the record the run goes on; only its resume would not find it.
                    if let Err(e) = record_for_setup.write(&state_for_setup, &run_id) {
                        tracing::warn!(error = %e, "cannot record the demo run: it cannot be resumed");
                    }
                    Ok((
                        Dashboards::Live {
                            url: format!("{control_url}/"),
                            why: "demo: no Grafana configured; the controller served the live dashboard".into(),
                        },
                        Alerts::Engine {
                            why: "demo: no Alertmanager configured; the engine evaluated every guardrail itself".into(),
                            guardrails: alert_guardrails,
                        },
                    ))
                })
            }),
            events: Some(events_rx),
            teardown: Some(Box::new(move || {
                Box::pin(async move {
                    if let Err(e) = embedded.release_lease().await {
                        tracing::warn!(error = %e, "cannot release the proxy lease");
                    }
                })
            })),
        };
        Ok((wiring, self))
    }

    /// Stops the traffic and the scraper, then the services (the run released the lease).
    async fn stop(self) {
        for t in &self.traffic_tasks {
            t.abort();
        }
        let _ = self.scrape_stop.send(());
        let _ = self.scrape_task.await;
        drop(self.services);
    }
}

/// Waits for the proxy's ready file; fails with its output if it exits first.
async fn wait_proxy_ready(proxy: &mut Service, ready_file: &Path) -> anyhow::Result<ReadyFile> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(bytes) = std::fs::read(ready_file)
            && let Ok(ready) = serde_json::from_slice::<ReadyFile>(&bytes)
        {
            return Ok(ready);
        }
        if let Some(status) = proxy.child.try_wait()? {
            bail!("the proxy exited ({status}):\n{}", proxy.output());
        }
        if Instant::now() > deadline {
            bail!("the proxy did not start:\n{}", proxy.output());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Verifies the bundle against the demo's key and prints the summary; the verdict's exit code.
fn summarise(finished: run::Finished, public_key: &str, output: Format) -> anyhow::Result<i32> {
    let report = verify(&finished.bundle, Some(public_key));
    let verified = match &report {
        Ok(_) => "verified".to_owned(),
        Err(e) => format!("VERIFY FAILED: {e}"),
    };
    match output {
        Format::Json => {
            let mut json = finished.json();
            json["verified"] = report.is_ok().into();
            json["public_key"] = public_key.into();
            json["controller"] = controller_usage();
            outln!("{json}");
        }
        Format::Text => print_summary(
            &finished.verdict,
            &finished.bundle,
            &finished.run_id,
            &verified,
            public_key,
        ),
    }
    Ok(finished.verdict.exit_code())
}

/// CPU time and peak memory of this process (the controller, with the demo's in-process load
/// generator and metrics store), from /proc.
fn controller_usage() -> serde_json::Value {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may contain spaces) start at ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 (1-based); `rest` starts at field 3. Linux reports
    // them in USER_HZ, which is 100 on every architecture Rust supports.
    let cpu = (ticks(11) + ticks(12)) / 100.0;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
    };
    serde_json::json!({
        "cpu_seconds": cpu,
        "peak_rss_mib": kib("VmHWM:").map(|k| k / 1024.0),
    })
}

fn print_summary(verdict: &Verdict, bundle: &Path, run_id: &str, verified: &str, key: &str) {
    outln!();
    outln!("  run        {run_id}");
    outln!("  verdict    {}", verdict.name());
    for r in verdict.reasons() {
        outln!("  reason     {r}");
    }
    outln!("  evidence   {} ({verified})", bundle.display());
    outln!(
        "  decision   {}",
        bundle.join("CANARY_DECISION_FINAL.txt").display()
    );
    outln!("  report     {}", bundle.join("report.html").display());
    outln!(
        "  verify     canary verify --key {key} {}",
        bundle.display()
    );
}
