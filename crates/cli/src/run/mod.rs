//! `canary run` — and everything that runs a canary the same way (`demo`, `resume`): preflight,
//! the evidence bundle, the control API, the controller loop, sealing, history.

mod arm;
pub mod controller;
pub mod delegates;
pub mod lock;
pub mod preflight;
pub mod replica;
pub mod wiring;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use canary_core::engine::{Action, Input};
use canary_core::{Engine, Millis, Plan, Secret, Verdict};
use canary_evidence::render::alerts::Alerts;
use canary_evidence::render::dashboards::Dashboards;
use canary_evidence::{Bundle, JournalWriter, Seal, Signer};
use canary_providers::metrics::MetricSource;
use canary_providers::traffic::TrafficRouter;
use canary_state::{Override, RunStart, Store};
use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::control::{self, ControlFile};
use canary_providers::metrics::observe::ScopedGuardrail;
use controller::{Controller, Delegates, now_ms};
use wiring::Integrations;

/// Everything a run needs, built from a configuration (production) or by the demo.
pub struct Wiring {
    pub plan: Plan,
    pub guardrails: Vec<ScopedGuardrail>,
    /// `[[compare]]`, scoped to each arm like the guardrails.
    pub comparisons: Vec<canary_providers::metrics::observe::ScopedComparison>,
    pub router: Arc<dyn TrafficRouter>,
    pub source: Arc<dyn MetricSource>,
    pub delegates: Arc<dyn Delegates>,
    pub signer: Signer,
    pub evidence_dir: PathBuf,
    pub state_dir: PathBuf,
    /// Where history, cooldowns, the run lock and the journal's copy live.
    pub state: canary_state::Location,
    /// How long the run's lock lasts unless renewed.
    pub lease: Duration,
    pub cooldown: Duration,
    pub config_sha256: String,
    /// Where the control API listens (port 0: any).
    pub control_listen: SocketAddr,
    /// The Alertmanager webhook's token, when Alertmanager calls back.
    pub alert_token: Option<Secret>,
    /// Background tasks tied to the run (lease renewal, health checks, scraping); aborted at
    /// the end.
    pub background: Vec<tokio::task::JoinHandle<()>>,
    /// Arms dashboards and alerts once the run id and the control API exist; what it returns is
    /// written to the bundle (`CANARY_DASHBOARDS_<ts>.txt`, `CANARY_ALERTS_<ts>.txt`).
    pub setup: Setup,
    /// Sends events (arm health, ...) into the run; given to the wiring's background tasks.
    pub events: Option<mpsc::Receiver<canary_core::Event>>,
    /// Runs once the final traffic change is verified (e.g. release the proxy's lease, so the
    /// dead man's switch does not undo a promotion).
    pub teardown: Option<Teardown>,
}

/// Given the run id and the control API's URL, pushes dashboards and arms alerts; says where.
pub type Setup = Box<
    dyn FnOnce(
            String,
            String,
        )
            -> canary_providers::BoxFuture<'static, anyhow::Result<(Dashboards, Alerts)>>
        + Send,
>;

/// Undoes what the run armed (rules, leases) once its final traffic change is verified.
pub type Teardown = Box<dyn FnOnce() -> canary_providers::BoxFuture<'static, ()> + Send>;

/// Options of `canary run` that are not configuration.
#[derive(Default)]
pub struct RunOptions {
    /// Run even though a cooldown is active; the reason is recorded.
    pub override_cooldown: Option<String>,
    /// Commit the sealed bundle to this git repository.
    pub commit: Option<PathBuf>,
    /// How long failing preflight checks are retried before the run is refused (the demo's
    /// fresh services have no baseline data yet). Zero: checked once.
    pub preflight_patience: Duration,
    /// Told the run's id once its bundle and journal exist.
    pub started: Option<OnStarted>,
    /// When another controller runs the service: wait for it instead of refusing.
    pub wait: bool,
}

/// Told the id of a run that has started.
pub type OnStarted = Box<dyn FnOnce(&str) + Send>;

/// How a run ended, for the caller's summary.
pub struct Finished {
    pub run_id: String,
    pub verdict: Verdict,
    pub bundle: PathBuf,
    pub authorised_by: String,
    /// From the decision to the final split verified on the load balancer.
    pub decision_to_verified_ms: Option<f64>,
}

impl Finished {
    /// The end of the run as `--output json` prints it.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "run_id": self.run_id,
            "verdict": self.verdict.name(),
            "reasons": self.verdict.reasons().iter().map(ToString::to_string).collect::<Vec<_>>(),
            "authorised_by": self.authorised_by,
            "bundle": self.bundle.display().to_string(),
            "decision_to_verified_ms": self.decision_to_verified_ms,
        })
    }
}

/// `<service>-<stamp>-<4 hex>`: sortable, unique, safe as a directory name.
pub fn new_run_id(service: &str, started: Millis) -> String {
    let stamp = canary_evidence::stamp::run_stamp(started).unwrap_or_else(|| started.to_string());
    let mut bytes = [0u8; 2];
    let _ = getrandom(&mut bytes);
    let service: String = service
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("{service}-{stamp}-{}", hex::encode(bytes))
}

fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

/// Who runs this canary and on which machine, for the run history: [`control::operator`]'s
/// `user@host`, apart.
pub fn operator_and_host() -> (String, String) {
    let operator = control::operator();
    match operator.rsplit_once('@') {
        Some((user, host)) => (user.to_owned(), host.to_owned()),
        None => (operator, "unknown".to_owned()),
    }
}

/// A random bearer token for the control API.
pub fn random_token() -> Secret {
    let mut bytes = [0u8; 24];
    if getrandom(&mut bytes).is_err() {
        // Fall back to time-derived entropy only if /dev/urandom is unavailable.
        let t = now_ms().to_le_bytes();
        bytes[..8].copy_from_slice(&t);
    }
    Secret::new(hex::encode(bytes))
}

/// Runs a canary from T+0 to a sealed, signed bundle. Preflight must have passed.
async fn execute(wiring: Wiring, options: RunOptions) -> anyhow::Result<Finished> {
    let plan = wiring.plan.clone();
    let store = Store::open(&wiring.state).await?;
    // One canary per service: take its lock, or say who holds it (or wait for it). The
    // cooldown is checked again after a wait: the run waited for may have rolled back.
    let (lock, started, run_id, active) = loop {
        let started = now_ms();
        let active = check_cooldown(&store, &plan.service, wiring.cooldown, &options).await?;
        let run_id = new_run_id(&plan.service, started);
        let holder = lock::holder(&run_id, started);
        match lock::RunLock::try_take(&store, &plan.service, &holder, wiring.lease).await? {
            Ok(lock) => break (lock, started, run_id, active),
            Err(held) if options.wait => {
                lock::RunLock::wait_until_free(&store, &plan.service).await?;
                let _ = held;
            }
            Err(held) => bail!(lock::held_message(&held)),
        }
    };

    // Until the controller drives the run, nothing has touched traffic: a failure here gives
    // the service's lock back at once rather than at the lease's end.
    let ready = async {
        let mut bundle = Bundle::create(&wiring.evidence_dir, &run_id, started)?;
        let journal = bundle.create_journal(&plan)?;
        let replica = replica::Replica::start(store.clone(), &run_id, journal.path()).await?;
        if let Some(started) = options.started {
            started(&run_id);
        }
        let (operator, host) = operator_and_host();
        store
            .record_start(&RunStart {
                run_id: run_id.clone(),
                service: plan.service.clone(),
                started,
                // Absolute: the history is read from other directories and other machines.
                bundle: std::path::absolute(bundle.dir())
                    .unwrap_or_else(|_| bundle.dir().to_path_buf()),
                cooldown_override: match (&options.override_cooldown, &active) {
                    (Some(reason), Some(active)) => Some(Override {
                        reason: reason.clone(),
                        overridden_run: active.run_id.clone(),
                        by: Some(operator.clone()),
                        host: Some(host.clone()),
                    }),
                    _ => None,
                },
                host,
                operator,
            })
            .await?;
        let engine = Engine::new(plan.clone())?;
        let mut controller = Controller::new(engine, journal, bundle, &wiring, 0);
        controller.replica = Some(replica);
        Ok::<_, anyhow::Error>(controller)
    }
    .await;
    let controller = match ready {
        Ok(controller) => controller,
        Err(e) => {
            lock.release().await;
            return Err(e);
        }
    };
    let cooldown_override = active.as_ref().and(options.override_cooldown.clone());
    drive_to_end(
        wiring,
        controller,
        Start::Fresh(Input::Start { at: started }),
        Held {
            store,
            lock,
            rebuilt: None,
        },
        options.commit,
        cooldown_override,
    )
    .await
}

/// The run's place in the state store: where it records history and its journal's copy, and
/// the service's lock it holds.
struct Held {
    store: Store,
    lock: lock::RunLock,
    /// The bundle was rebuilt from the store's journal (a takeover): the manifest says so.
    rebuilt: Option<String>,
}

/// Preflight, then the run: what `canary run` does, and `canary demo` on its own stack.
pub async fn launch(config: &Config, options: RunOptions) -> anyhow::Result<Finished> {
    if options.wait {
        // The running canary's split would fail this run's preflight: wait for it first.
        let store = Store::open(&config.state()).await?;
        lock::RunLock::wait_until_free(&store, &config.plan.service).await?;
    }
    let mut integrations = Integrations::new(config).await?;
    let overriding = options.override_cooldown.is_some();
    // Waiting for the baseline's first data is waiting for a condition, bounded.
    let deadline = Instant::now() + options.preflight_patience;
    let checks = loop {
        let checks = preflight::preflight(config, &mut integrations).await;
        if preflight::blocking(&checks, overriding, options.wait).is_empty()
            || Instant::now() >= deadline
        {
            break checks;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    preflight::print_table(&checks);
    let failed = preflight::blocking(&checks, overriding, options.wait).len();
    if failed > 0 {
        bail!("preflight failed ({failed} check(s)); no traffic was touched");
    }
    let wiring = integrations.wire(config, &config.plan)?;
    execute(wiring, options).await
}

/// `canary resume` of a run [`Resumed::open`] found: reads the split back and lets the engine
/// say what to do again, on the wiring `config` names.
pub async fn resume_configured(config: &Config, resumed: Resumed) -> anyhow::Result<Finished> {
    let integrations = Integrations::new(config).await?;
    let current_weight = integrations.router.get().await.map_or(0, |s| s.canary);
    let plan = resumed.engine.plan().clone();
    let wiring = integrations.wire(config, &plan)?;
    let commit = config.evidence.as_ref().and_then(|e| e.commit.clone());
    resume(wiring, resumed, current_weight, commit).await
}

/// A run rebuilt from its journal (`canary resume`).
pub struct Resumed {
    pub engine: Engine,
    pub bundle: Bundle,
    pub journal: JournalWriter,
    /// Time of the last journaled input.
    pub last_input: Millis,
    /// Set when the bundle was rebuilt here from the state store's journal (its controller's
    /// machine is not this one): what the manifest says about it.
    pub rebuilt: Option<String>,
    /// The service's run lock, taken over from the controller that died.
    lock: Option<(Store, lock::RunLock)>,
    /// The journal's evaluation rounds, so the live page's charts start with the whole run.
    rounds: Vec<(Millis, Vec<canary_core::engine::GuardrailReading>)>,
}

impl Resumed {
    /// Takes the run's lock over (refused while its controller lives), finds run `run_id`'s
    /// bundle (where the history says, on this machine; else in `config`'s evidence directory;
    /// else rebuilt there from the state store's journal), replays its journal — a decided run
    /// is refused before anything is touched — and checks that `config` describes the run's
    /// plan. A run rehearsed on a compressed clock
    /// (`--time-scale`) is resumed on the same clock: `config` is compressed like the journal's plan.
    pub async fn open(config: &mut Config, run_id: &str) -> anyhow::Result<Resumed> {
        config.evidence.as_ref().context("no [evidence] settings")?;
        let store = Store::open(&config.state()).await?;
        let record = store.get(run_id).await?;
        // Take the run over first: refused while a live controller drives it, and nothing is
        // read or rebuilt before this controller holds it.
        let service = record
            .as_ref()
            .map_or_else(|| config.plan.service.clone(), |r| r.service.clone());
        let started = record.as_ref().map_or_else(now_ms, |r| r.started);
        let holder = lock::holder(run_id, started);
        // A controller that died still holds the lock until its lease lapses (the store cannot
        // tell a dead controller from a slow one before that): wait for it, saying so once.
        let mut told = false;
        let taken = loop {
            match lock::RunLock::try_take(&store, &service, &holder, config.lease).await? {
                Ok(taken) => break taken,
                Err(held) if held.holder.run_id == run_id => {
                    if !told {
                        eprintln!(
                            "canary: run {run_id} is held by its controller {} until {}: taking it over when that lease lapses (if that controller is alive, stop it: two controllers would fight over the split)",
                            lock::describe_holder(&held),
                            canary_evidence::stamp::rfc3339(held.expires)
                        );
                        told = true;
                    }
                    let left = (held.expires - held.at).max(0) as u64;
                    tokio::time::sleep(Duration::from_millis(left.clamp(100, 2_000))).await;
                }
                Err(held) => bail!(lock::held_message(&held)),
            }
        };
        match Resumed::open_locked(config, run_id, &store, record.as_ref()).await {
            Ok(mut resumed) => {
                resumed.lock = Some((store, taken));
                Ok(resumed)
            }
            Err(e) => {
                // Nothing was touched: give the run back at once rather than at the lease's end.
                taken.release().await;
                Err(e)
            }
        }
    }

    /// [`Resumed::open`] once the run's lock is held: find or rebuild the bundle, replay.
    async fn open_locked(
        config: &mut Config,
        run_id: &str,
        store: &Store,
        record: Option<&canary_state::RunRecord>,
    ) -> anyhow::Result<Resumed> {
        let evidence = config.evidence.as_ref().context("no [evidence] settings")?;
        // The history's bundle path is on the machine that recorded it.
        let (_, here) = operator_and_host();
        let on_this_machine = record.is_some_and(|r| r.host.as_ref().is_none_or(|h| *h == here));
        let mut dir = record
            .filter(|_| on_this_machine)
            .and_then(|r| r.bundle.parent().map(PathBuf::from))
            .unwrap_or_else(|| evidence.dir.clone());
        let mut rebuilt = None;
        if !dir.join(run_id).is_dir() {
            // Not on this machine: the run's controller ran elsewhere (its disk may be gone).
            // The store's journal is the run; rebuild the bundle from it here.
            let lines = store.journal(run_id).await?;
            if lines.is_empty() {
                bail!(
                    "cannot resume run {run_id}: no bundle in {} and the state store ({}) has no journal of it",
                    dir.join(run_id).display(),
                    store.describe()
                );
            }
            dir = evidence.dir.clone();
            canary_evidence::rebuild_journal(&dir, run_id, &lines)
                .with_context(|| format!("cannot rebuild the bundle of run {run_id}"))?;
            let host = &here;
            let from = record
                .and_then(|r| r.host.clone())
                .unwrap_or_else(|| "another machine".to_owned());
            rebuilt = Some(format!(
                "taken over on {host} from the state store's journal ({} lines) after the controller on {from} stopped: artifacts written there before the takeover are not in this bundle; every input is, and what the journal determines was re-derived from it",
                lines.len()
            ));
            eprintln!(
                "canary: run {run_id} is not on this machine: rebuilt its bundle from the state store's journal"
            );
        }
        let (bundle, journal_writer, journal) =
            Bundle::resume(&dir, run_id).with_context(|| format!("cannot resume run {run_id}"))?;
        let recorded = journal.header.plan.time_scale;
        if recorded.is_finite() && recorded > config.plan.time_scale {
            let factor = recorded / config.plan.time_scale;
            *config = config.clone().compressed(factor);
        }
        // The journal's plan is what the run enforces; wiring built from a configuration that
        // says otherwise would query guardrails the engine does not know, or miss ones it does.
        let differences = journal.header.plan.differences(&config.plan);
        if !differences.is_empty() {
            bail!(
                "{} is not the configuration run {run_id} started with; its plan differs from the one in the journal:\n  - {}\nresume with the configuration the run started with (the bundle's journal.jsonl holds its plan)",
                config.file.display(),
                differences.join("\n  - ")
            );
        }
        let mut resumed = Resumed::rebuild(bundle, journal_writer, &journal)?;
        resumed.rebuilt = rebuilt;
        Ok(resumed)
    }

    /// Rebuilds a run from its journal: the engine replays every recorded input. Fails when
    /// the run already reached its decision.
    fn rebuild(
        bundle: Bundle,
        journal: JournalWriter,
        recorded: &canary_core::journal::Journal,
    ) -> anyhow::Result<Resumed> {
        let mut engine = Engine::new(recorded.header.plan.clone())?;
        for input in &recorded.inputs {
            engine.apply(input)?;
        }
        if engine.is_decided() {
            bail!(
                "run {} already reached its decision; check its bundle with `canary verify`",
                bundle.run_id()
            );
        }
        let started = engine
            .started_at()
            .context("the journal has no Start input")?;
        eprintln!(
            "canary: resuming run {} ({}, {} inputs replayed)",
            bundle.run_id(),
            canary_evidence::stamp::runbook_offset(
                started,
                now_ms(),
                recorded.header.plan.time_scale
            ),
            recorded.inputs.len()
        );
        let rounds = recorded
            .inputs
            .iter()
            .filter_map(|input| match input {
                Input::Observations {
                    round, readings, ..
                } => Some((*round, readings.clone())),
                _ => None,
            })
            .collect();
        Ok(Resumed {
            engine,
            bundle,
            journal,
            last_input: recorded.inputs.last().map_or(started, Input::at),
            rebuilt: None,
            lock: None,
            rounds,
        })
    }
}

/// Continues a resumed run to its sealed bundle. `current_weight` is the canary's share the
/// load balancer reports now (the proxy's lease may have reset it); the journaled `Resume`
/// input lets the engine put the split back and ask again for what was outstanding — or roll
/// back when the window passed while the controller was down.
async fn resume(
    wiring: Wiring,
    r: Resumed,
    current_weight: u8,
    commit: Option<PathBuf>,
) -> anyhow::Result<Finished> {
    let run_id = r.bundle.run_id().to_owned();
    let (store, lock) = r
        .lock
        .context("internal: a resumed run holds its lock from Resumed::open")?;
    let replica = replica::Replica::start(store.clone(), &run_id, r.journal.path()).await?;
    let mut controller = Controller::new(r.engine, r.journal, r.bundle, &wiring, current_weight);
    controller.last_input = r.last_input;
    for (round, readings) in &r.rounds {
        controller.record_round(*round, readings);
    }
    controller.replica = Some(replica);
    let start = Start::Input(Input::Resume {
        at: now_ms().max(r.last_input),
    });
    let held = Held {
        store,
        lock,
        rebuilt: r.rebuilt,
    };
    drive_to_end(wiring, controller, start, held, commit, None).await
}

/// How the controller loop begins.
enum Start {
    /// A new run: journal and apply its `Start` input; write the setup artifacts.
    Fresh(Input),
    /// A resumed run: journal and apply this input first.
    Input(Input),
}

/// Serves the control API, drives the controller to its decision, seals the bundle, records the
/// run in the history.
async fn drive_to_end(
    mut wiring: Wiring,
    mut controller: Controller,
    start: Start,
    held: Held,
    commit: Option<PathBuf>,
    cooldown_override: Option<String>,
) -> anyhow::Result<Finished> {
    let Held {
        store,
        lock,
        rebuilt,
    } = held;
    let run_id = controller.bundle.run_id().to_owned();
    let service = wiring.plan.service.clone();
    // The control API: status for people, abort/approve for operators, Alertmanager's callback.
    let (status_tx, status_rx) = watch::channel(control::RunStatus::starting(&run_id, &service));
    let status_line = crate::terminal::interactive()
        .then(|| crate::terminal::spawn_status_line(status_tx.subscribe()));
    controller.status = Some(status_tx);
    let (commands_tx, commands_rx) = mpsc::channel(64);
    let token = random_token();
    let server = control::start(
        wiring.control_listen,
        &run_id,
        token.clone(),
        wiring.alert_token.take(),
        commands_tx,
        status_rx,
    )
    .await?;
    let control_file = ControlFile {
        run_id: run_id.clone(),
        service,
        url: server.url(),
        token: token.expose().to_owned(),
        pid: std::process::id(),
    };
    let control_path = control_file.write(&wiring.state_dir)?;
    // On a compressed clock everything the run shows is in the runbook's time: the one place
    // the wall clock appears is here, beside the window.
    let plan = controller.engine.plan();
    let clock = if canary_core::duration::is_real_time(&plan.time_scale) {
        String::new()
    } else {
        format!(
            " — window {}",
            canary_core::duration::runbook_with_wall(plan.window(), plan.time_scale)
        )
    };
    eprintln!(
        "canary: run {run_id}{clock} — live dashboard {}/ — evidence {}",
        server.url(),
        controller.bundle.dir().display()
    );
    // The link carries a one-time code for the page's operator controls; it goes to the
    // terminal only, never to a log or a file.
    eprintln!(
        "canary: operator link (works once): {}",
        server.operator_link()?
    );
    // Events from the wiring's background tasks (arm health) join the controller's messages.
    if let Some(mut events) = wiring.events.take() {
        let sender = controller.sender.clone();
        wiring.background.push(tokio::spawn(async move {
            while let Some(e) = events.recv().await {
                if sender.send(controller::Message::Event(e)).await.is_err() {
                    break;
                }
            }
        }));
    }
    let first = match start {
        Start::Fresh(input) => {
            let setup = std::mem::replace(
                &mut wiring.setup,
                Box::new(|_, _| Box::pin(async { anyhow::bail!("setup ran twice") })),
            );
            let (dashboards, alerts) = setup(run_id.clone(), server.url()).await?;
            controller.bundle.write_dashboards(&dashboards)?;
            controller.bundle.write_alerts(&alerts)?;
            let started = input.at();
            let actions = controller.start(input).await?;
            let annotation = controller.delegates.annotate(
                &run_id,
                canary_providers::grafana::AnnotationKind::Start,
                started,
                format!("canary {run_id} started"),
            );
            controller.deliver(annotation);
            actions
        }
        Start::Input(input) => controller.feed(input).await?,
    };
    let signals = spawn_signal_listener();
    // A controller whose lock another one took over (it could not renew it) stops at once,
    // touching nothing more: the other one drives the run now.
    let result = tokio::select! {
        result = controller.drive(first, commands_rx, signals) => result,
        why = lock.lost() => {
            if let Some(task) = status_line {
                task.abort();
                crate::terminal::clear();
            }
            for task in &wiring.background {
                task.abort();
            }
            let _ = std::fs::remove_file(&control_path);
            bail!(why);
        }
    };
    if let Some(task) = status_line {
        task.abort();
        crate::terminal::clear();
    }
    if let Some(teardown) = wiring.teardown.take() {
        teardown().await;
    }
    for task in &wiring.background {
        task.abort();
    }
    // The controller is gone: live pages get the last status, then the API stops.
    server.finish().await;
    let _ = std::fs::remove_file(&control_path);
    let (outcome, bundle, journal, mut replica) = result?;
    if let Some(replica) = replica.as_mut()
        && let Some(missing) = replica.finish(Duration::from_secs(10)).await
    {
        eprintln!("canary: warning: {missing}");
    }

    let sealed = bundle.seal(
        journal,
        &Seal {
            config_sha256: &wiring.config_sha256,
            finished: now_ms(),
            traffic: &outcome.traffic,
            cooldown_override: cooldown_override.as_deref(),
            rebuilt: rebuilt.as_deref(),
            signer: &wiring.signer,
        },
    )?;
    store
        .record_finish(&run_id, now_ms(), &outcome.decision.verdict)
        .await?;
    lock.release().await;
    if let Some(repo) = &commit {
        commit_bundle(repo, &sealed.dir, &run_id, &outcome.decision.verdict)?;
    }
    Ok(Finished {
        run_id,
        verdict: outcome.decision.verdict,
        bundle: sealed.dir,
        authorised_by: outcome.decision.authorised_by,
        decision_to_verified_ms: outcome.decision_to_verified_ms,
    })
}

/// Refuses a run while the service's cooldown after a rollback is active, unless overridden
/// (the override is logged here and recorded in the evidence by the caller).
pub async fn check_cooldown(
    store: &Store,
    service: &str,
    cooldown: Duration,
    options: &RunOptions,
) -> anyhow::Result<Option<canary_state::Cooldown>> {
    let active = store.cooldown_active(service, now_ms(), cooldown).await?;
    if let Some(active) = &active {
        match &options.override_cooldown {
            Some(reason) => tracing::warn!(
                target: "canary",
                "cooldown after run {} active until {}; overridden: {reason}",
                active.run_id,
                canary_evidence::stamp::rfc3339(active.until)
            ),
            None => bail!(
                "{service} is in its cooldown after the {} of run {} until {}: fix the cause and wait, or pass --override-cooldown --reason \"...\" (recorded in the evidence)",
                active.verdict,
                active.run_id,
                canary_evidence::stamp::rfc3339(active.until)
            ),
        }
    }
    Ok(active)
}

/// SIGINT / SIGTERM become `Signal` events: the run rolls back, verifies, and writes its
/// evidence before exiting.
fn spawn_signal_listener() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut int), Ok(mut term)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) else {
                tracing::error!("cannot listen for SIGINT/SIGTERM");
                return;
            };
            loop {
                let name = tokio::select! {
                    _ = int.recv() => "SIGINT",
                    _ = term.recv() => "SIGTERM",
                };
                tracing::warn!(target: "canary", "{name}: rolling back before exiting");
                if tx.send(name.to_owned()).await.is_err() {
                    break;
                }
            }
        }
    });
    rx
}

/// `git add` + `git commit` of the sealed bundle (the runbook: "Evidence bundle committed to
/// repo").
fn commit_bundle(
    repo: &std::path::Path,
    dir: &std::path::Path,
    run_id: &str,
    verdict: &Verdict,
) -> anyhow::Result<()> {
    let git = |args: &[&str]| -> anyhow::Result<()> {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(args)
            .output()
            .context("cannot run git")?;
        if !out.status.success() {
            bail!(
                "git {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    };
    let dir = dir.canonicalize()?;
    let dir_str = dir.to_string_lossy();
    git(&["add", "--", &dir_str])?;
    git(&[
        "commit",
        "-m",
        &format!("canary evidence: {run_id} {}", verdict.name()),
        "--",
        &dir_str,
    ])?;
    Ok(())
}

impl Controller {
    /// Journals and applies the run's first input.
    pub async fn start(&mut self, input: Input) -> anyhow::Result<Vec<Action>> {
        self.last_input = input.at();
        self.feed(input).await
    }
}
