//! `canary demo`: the whole runbook on one machine with no infrastructure.
//!
//! Starts its [`Stack`] — two `relay-demo` processes (baseline r0.5, canary r1, seeded, the
//! canary with any `--fault`), the embedded proxy as its own process (so it outlives a dead
//! controller and its lease can lapse), steady background traffic from the seeded users — then
//! points the `canary init` runbook at it, on a clock compressed `--time-scale` times, and hands
//! that configuration to `run::launch`, exactly what `canary run` does with a file.

mod stack;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use canary_core::{Secret, Verdict};
use canary_evidence::{Signer, verify};

use self::stack::Stack;
use crate::config::settings::EvidenceSettings;
use crate::config::{self, Config, INIT_TEMPLATE, Needs, env::Env};
use crate::output::Format;
use crate::run::{self, RunOptions};
/// Run the whole runbook against two local relay-demo services (baseline r0.5, canary r1)
/// behind the embedded proxy, with embedded metrics, on a compressed clock: the 60-minute
/// canary takes about a minute. Ends with PROMOTE — or, with --fault, ROLLBACK for the right
/// reason — and a signed evidence bundle.
#[derive(clap::Args)]
#[command(after_help = "Examples:
  canary demo                               healthy canary: PROMOTE in about a minute
  canary demo --fault slow-ttfv             TTFV p95 over 1500 ms for 5 runbook minutes: ROLLBACK
  canary demo --fault tenant-leak@20m       a cross-tenant leak from T+20: SECURITY ROLLBACK
  canary demo --fault slow-ann@10m~20m      ANN slower from T+10, fully by T+30: promotion blocked
  canary demo --fault sse-drop:0.2 --time-scale 30

Faults: slow-ttfv, sse-drop, rls-errors, tenant-leak, slow-ann, pool-saturation, as
KIND[:rate][@onset][~ramp] with the onset and the ramp in runbook time (20m = T+20; a bare
number is minutes). A fault grows to its full effect over its ramp, 10m unless given (~0 for a
step), so its guardrail drifts across the threshold as a real regression would.
Exit codes: 0 PROMOTE, 3 ROLLBACK, 4 INCONCLUSIVE, 5 PROMOTION_FAILED, 1 error.")]
pub struct DemoArgs {
    /// Make the canary misbehave: KIND[:rate][@onset][~ramp] (repeatable).
    #[arg(long = "fault", value_name = "KIND[:rate][@onset][~ramp]")]
    faults: Vec<String>,
    /// How many times faster than real time the runbook runs (every duration, including PromQL
    /// range windows, is divided by it).
    #[arg(long, default_value_t = 60.0, value_parser = crate::commands::run::time_scale)]
    time_scale: f64,
    /// Where the evidence bundle goes.
    #[arg(long, default_value = EvidenceSettings::DEFAULT_DIR)]
    evidence_dir: PathBuf,
    /// Run history, cooldowns, the demo's signing key and its runs' records (for resume).
    #[arg(long, default_value = Config::DEFAULT_STATE_DIR)]
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

/// How long a demo fault takes to grow to its full effect, in runbook time, unless its `~ramp`
/// says: long enough that its guardrail is seen drifting across the threshold, short enough
/// that a fault from T+0 is caught well before T+30.
const DEMO_FAULT_RAMP: Duration = Duration::from_secs(10 * 60);

/// Parses a demo fault, with the onset and the ramp in runbook time (a bare number means
/// minutes; no ramp means [`DEMO_FAULT_RAMP`]), and returns it with both compressed for the
/// service's wall clock.
fn demo_fault(text: &str, time_scale: f64) -> anyhow::Result<relay_demo::Fault> {
    let minutes = |d: &str| match d.parse::<f64>() {
        Ok(_) => format!("{d}m"),
        Err(_) => d.to_owned(),
    };
    let (head, ramp) = match text.split_once('~') {
        Some((head, ramp)) => (head, Some(minutes(ramp))),
        None => (text, None),
    };
    let mut text = match head.split_once('@') {
        Some((kind, onset)) => format!("{kind}@{}", minutes(onset)),
        None => head.to_owned(),
    };
    if let Some(ramp) = &ramp {
        text = format!("{text}~{ramp}");
    }
    let mut fault: relay_demo::Fault = text
        .parse()
        .map_err(|e| anyhow::anyhow!("--fault {text:?}: {e}"))?;
    if ramp.is_none() {
        fault.ramp = DEMO_FAULT_RAMP;
    }
    let wall = |runbook: Duration| Duration::from_secs_f64(runbook.as_secs_f64() / time_scale);
    fault.onset = wall(fault.onset);
    fault.ramp = wall(fault.ramp);
    Ok(fault)
}

/// The demo's signing key: made once and kept (mode 600) in the state directory, so every demo
/// bundle is signed by the same key.
fn demo_key(state_dir: &Path) -> anyhow::Result<Secret> {
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
    Ok(Secret::new(text.trim()))
}

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

/// The runbook exactly as `canary init` writes it, its variables left for the stack to fill:
/// on the demo's compressed clock (the cooldown compressed alike), with isolation probes (the
/// seeded users carry secret markers), the demo's state and evidence directories and key.
fn demo_config(record: &DemoRecord, state_dir: &Path) -> anyhow::Result<Config> {
    let needs = Needs {
        load: true,
        ..Needs::PLAN
    };
    let mut config = config::resolve_text(
        "the canary init runbook (canary demo)",
        INIT_TEMPLATE,
        Path::new("."),
        needs,
        Env::offline(),
    )?;
    config.file = PathBuf::from("the canary init runbook (canary demo)");
    let mut config = config.compressed(record.time_scale);
    config.plan.probes = true;
    config.state_dir = state_dir.to_path_buf();
    config.evidence = Some(EvidenceSettings {
        dir: record.evidence_dir.clone(),
        signing_key: Some(demo_key(state_dir)?),
        commit: None,
    });
    Ok(config)
}

pub async fn run(args: DemoArgs) -> anyhow::Result<i32> {
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
    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("cannot create {}", args.state_dir.display()))?;
    let base = demo_config(&record, &args.state_dir)?;
    let state_dir = args.state_dir.clone();
    let written = record.clone();
    let options = RunOptions {
        override_cooldown: if args.override_cooldown {
            args.reason.clone()
        } else {
            None
        },
        // The services are fresh: the baseline has data after a few scrapes.
        preflight_patience: Duration::from_secs(30),
        started: Some(Box::new(move |run_id: &str| {
            // Without the record the run goes on; only its resume would not find it.
            if let Err(e) = written.write(&state_dir, run_id) {
                tracing::warn!(error = %e, "cannot record the demo run: it cannot be resumed");
            }
        })),
        ..RunOptions::default()
    };
    // Refuse before starting anything.
    run::check_cooldown(
        &canary_state::Store::open(&base.state()).await?,
        &base.plan.service,
        base.cooldown,
        &options,
    )
    .await?;
    let mut stack = Stack::start(&record, &args.state_dir, Duration::ZERO).await?;
    let config = stack.configure(&base)?;
    let finished = match stack
        .start_traffic(&config, &record, &config.plan, Duration::ZERO)
        .await
    {
        Ok(()) => run::launch(&config, options).await,
        Err(e) => Err(e),
    };
    stack.stop().await;
    summarise(finished?, &config, args.output)
}

/// `canary resume RUN_ID` of a demo run: starts the demo's services again (they died with the
/// controller), rebuilds the run from its journal and finishes it.
pub async fn resume(state_dir: &Path, run_id: &str, output: Format) -> anyhow::Result<i32> {
    let record = DemoRecord::read(state_dir, run_id)?
        .with_context(|| format!("{run_id} is not a demo run of {}", state_dir.display()))?;
    let mut base = demo_config(&record, state_dir)?;
    // Replayed before any service starts: a decided run is refused here.
    let resumed = run::Resumed::open(&mut base, run_id).await?;
    let started = resumed.engine.started_at().unwrap_or(resumed.last_input);
    let elapsed =
        Duration::from_millis(u64::try_from(run::controller::now_ms() - started).unwrap_or(0));
    let mut stack = Stack::start(&record, state_dir, elapsed).await?;
    let config = stack.configure(&base)?;
    let finished = match stack
        .start_traffic(&config, &record, &config.plan, elapsed)
        .await
    {
        Ok(()) => run::resume_configured(&config, resumed).await,
        Err(e) => Err(e),
    };
    stack.stop().await;
    summarise(finished?, &config, output)
}

/// Verifies the bundle against the demo's key and prints the summary; the verdict's exit code.
fn summarise(finished: run::Finished, config: &Config, output: Format) -> anyhow::Result<i32> {
    let key = config
        .evidence
        .as_ref()
        .and_then(|e| e.signing_key.as_ref());
    let public_key = &key
        .map(Signer::from_secret)
        .transpose()?
        .map(|s| s.public_hex())
        .unwrap_or_default();
    let report = verify(&finished.bundle, Some(public_key));
    let verified = match &report {
        Ok(_) => "verified".to_owned(),
        Err(e) => format!("VERIFY FAILED: {e}"),
    };
    match output {
        Format::Json => {
            let mut json = finished.json();
            json["verified"] = report.is_ok().into();
            json["public_key"] = public_key.as_str().into();
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn demo_faults_are_in_runbook_time_and_drift_in_unless_told() {
        let ms = |d: Duration| d.as_millis();
        let cases = [
            // (fault, onset ms, ramp ms) on the wall clock at 60x
            ("slow-ttfv", 0, 10_000),
            ("slow-ttfv@20m", 20_000, 10_000),
            ("slow-ttfv@20", 20_000, 10_000),
            ("slow-ann@10m~20m", 10_000, 20_000),
            ("slow-ann@10~20", 10_000, 20_000),
            ("sse-drop:0.2~5m", 0, 5_000),
            ("rls-errors~0", 0, 0),
        ];
        for (text, onset, ramp) in cases {
            let fault = demo_fault(text, 60.0).unwrap();
            assert_eq!((ms(fault.onset), ms(fault.ramp)), (onset, ramp), "{text}");
        }
        assert_eq!(demo_fault("sse-drop:0.2~5m", 60.0).unwrap().rate, 0.2);
        let error = demo_fault("slow-ttfv~soon", 60.0).unwrap_err().to_string();
        assert!(error.contains("ramp"), "{error}");
    }
}
