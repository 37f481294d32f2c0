//! The demo's running parts: two relay-demo services and the embedded proxy as child processes
//! (they stop when the demo's process goes: they watch their stdin), and the steady background
//! traffic a production service would have. What canary needs to know about them is an ordinary
//! configuration ([`Stack::configure`]); the run itself goes through `run::launch`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use canary_core::{ArmRole, Plan, Secret};
use canary_load::{CanaryRoute, Mode, OpenLoop, Targeting};
use canary_proxy::ReadyFile;
use tokio::process::{Child, Command};

use super::{DemoRecord, demo_fault};
use crate::config::Config;
use crate::config::settings::{MetricsSettings, ScrapeTarget, TrafficSettings};
use crate::run::random_token;
use crate::run::wiring::{pin_proof, router, scenario};

/// How long the controller's lease on the demo's proxy lasts: a controller killed mid-run
/// gives the baseline all traffic back within it.
const LEASE: Duration = Duration::from_secs(3);

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

/// The demo's services, the proxy, and the secrets they were started with.
pub struct Stack {
    services: Vec<Service>,
    baseline_url: String,
    canary_url: String,
    proxy: ReadyFile,
    proxy_token: Secret,
    jwt_secret: Secret,
    traffic: Vec<tokio::task::JoinHandle<()>>,
}

impl Stack {
    /// Starts the services and the proxy and waits until they answer. `elapsed` is how far into
    /// the run this is (a resume): faults keep their onset and the end of their ramp from the
    /// run's start.
    pub async fn start(
        record: &DemoRecord,
        state_dir: &Path,
        elapsed: Duration,
    ) -> anyhow::Result<Stack> {
        let faults = record
            .faults
            .iter()
            .map(|f| Ok(demo_fault(f, record.time_scale)?.advanced_by(elapsed)))
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
            "canary demo: starting relay-demo r0.5 (baseline) and r1 (canary) and the proxy…"
        );
        let relay = |name, version: &str, faults: &[relay_demo::Fault]| -> anyhow::Result<_> {
            let addr = free_addr()?;
            let mut args: Vec<String> = [
                "relay-demo",
                "serve",
                "--seed",
                "--seed-per-user",
                &record.seed_per_user.to_string(),
                "--listen",
                &addr.to_string(),
                "--version-label",
                version,
                "--exit-on-stdin-close",
            ]
            .map(str::to_owned)
            .to_vec();
            for f in faults {
                args.extend(["--fault".to_owned(), f.to_string()]);
            }
            Ok((
                spawn(name, &work, &args, &child_env)?,
                format!("http://{addr}"),
            ))
        };
        let (mut baseline, baseline_url) = relay("relay-r0.5", "r0.5", &[])?;
        let (mut canary, canary_url) = relay("relay-r1", "r1", &faults)?;
        let ready_file = work.join("proxy.ready");
        let _ = std::fs::remove_file(&ready_file);
        let proxy_args = [
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
            &ready_file.display().to_string(),
        ]
        .map(str::to_owned);
        let mut proxy = spawn(
            "proxy",
            &work,
            &proxy_args,
            &[("CANARY_PROXY_TOKEN", proxy_token.expose())],
        )?;
        let ready = Duration::from_secs(120);
        wait_ready(&mut baseline, &format!("{baseline_url}/healthz"), ready).await?;
        wait_ready(&mut canary, &format!("{canary_url}/healthz"), ready).await?;
        let proxy_ready = wait_proxy_ready(&mut proxy, &ready_file).await?;
        eprintln!(
            "canary demo: baseline {baseline_url}, canary {canary_url}{}, proxy http://{}",
            if record.faults.is_empty() {
                String::new()
            } else {
                format!(" with {}", record.faults.join(", "))
            },
            proxy_ready.data
        );
        Ok(Stack {
            services: vec![baseline, canary, proxy],
            baseline_url,
            canary_url,
            proxy: proxy_ready,
            proxy_token,
            jwt_secret,
            traffic: Vec::new(),
        })
    }

    /// `base` (the `canary init` runbook on the demo's clock) pointed at this stack, as a team
    /// would write it for its own: the embedded proxy, the embedded store scraping both
    /// services every 15 runbook seconds, and the seeded users with their tokens and markers
    /// sending the runbook's burst through the proxy.
    pub fn configure(&self, base: &Config) -> anyhow::Result<Config> {
        let mut config = base.clone();
        config.traffic = Some(TrafficSettings::Embedded {
            admin: self.proxy.admin,
            token: self.proxy_token.clone(),
            lease: LEASE,
        });
        let target = |url: &str, arm| ScrapeTarget {
            url: format!("{url}/metrics"),
            arm: Some(arm),
            job: "relay".into(),
        };
        config.metrics = Some(MetricsSettings::Embedded {
            scrape_interval: Duration::from_secs_f64((15.0 / base.plan.time_scale).max(0.05)),
            targets: vec![
                target(&self.baseline_url, ArmRole::Baseline),
                target(&self.canary_url, ArmRole::Canary),
            ],
        });
        if let Some(load) = &mut config.load {
            load.url = format!("http://{}", self.proxy.data);
            let tokens = relay_demo::tokens(self.jwt_secret.expose());
            let markers = relay_demo::seed_markers();
            for user in &mut load.users {
                let find = |list: &[(String, String)]| {
                    list.iter()
                        .find(|(name, _)| *name == user.name)
                        .map(|(_, v)| Secret::new(v.clone()))
                };
                user.token = find(&tokens).with_context(|| {
                    format!(
                        "the template's user {} is not a seeded user of relay-demo",
                        user.name
                    )
                })?;
                user.marker = find(&markers);
            }
        }
        Ok(config)
    }

    /// Steady traffic for the rest of the window (`plan`'s, less `elapsed`), from the seeded
    /// users with the runbook's request: through the split at `background_rps`, and pinned to
    /// the canary at `canary_rps` so its percentiles rest on enough samples at a 5 % split.
    pub async fn start_traffic(
        &mut self,
        config: &Config,
        record: &DemoRecord,
        plan: &Plan,
        elapsed: Duration,
    ) -> anyhow::Result<()> {
        let (Some(traffic), Some(load)) = (&config.traffic, &config.load) else {
            bail!("the demo's configuration has no [traffic] or [load]");
        };
        let (_, embedded) = router(traffic)?;
        let proof = pin_proof(embedded.as_deref(), true).await?;
        let window = plan.window().saturating_sub(elapsed) + Duration::from_secs(10);
        for (rate, targeting) in [
            (record.background_rps, Targeting::Lb),
            (record.canary_rps, Targeting::Canary(CanaryRoute::PinHeader)),
        ] {
            let mut s = scenario(config, load, proof.as_ref());
            s.mode = Mode::OpenLoop(OpenLoop::new(rate, window, 64));
            s.targeting = targeting;
            self.traffic.push(tokio::spawn(async move {
                let _ = canary_load::run_burst(&s, None).await;
            }));
        }
        Ok(())
    }

    /// Stops the traffic, then the services (the run released the lease).
    pub async fn stop(self) {
        for t in &self.traffic {
            t.abort();
        }
        drop(self.services);
    }
}

/// Waits for the proxy's ready file; fails with its output if it exits first.
async fn wait_proxy_ready(proxy: &mut Service, ready_file: &Path) -> anyhow::Result<ReadyFile> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(ready) = ReadyFile::read(ready_file) {
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
