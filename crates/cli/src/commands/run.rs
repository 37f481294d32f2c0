//! `canary preflight`, `canary run`, `canary resume`: the runbook against real infrastructure.

use std::path::PathBuf;

use crate::commands::validate::load_config;
use crate::config::Needs;
use crate::output::Format;
use crate::run::preflight::{blocking, preflight, print_table};
use crate::run::wiring::Integrations;
use crate::run::{self, RunOptions};

/// Check everything a run needs before touching traffic: credentials present (never shown),
/// each endpoint reachable and accepting its credential, each guardrail returning data for the
/// baseline, no cooldown. Prints a PASS/FAIL table; exits 1 on any FAIL.
#[derive(clap::Args)]
#[command(after_help = "Example:\n  canary preflight -c canary.toml")]
pub struct PreflightArgs {
    #[arg(short, long, default_value = "canary.toml")]
    config: PathBuf,
    #[arg(long, value_enum, default_value_t)]
    output: Format,
}

/// Run the canary: preflight, 5/95 split (verified), burst at T+5, guardrails every interval,
/// check log, snapshots, decision, promotion or rollback (verified), signed evidence bundle.
#[derive(clap::Args)]
#[command(after_help = "Examples:
  canary run -c canary.toml
  canary run -c canary.toml --commit .            commit the evidence bundle to this git repo
  canary run -c canary.toml --time-scale 60       a rehearsal: the 60-minute window in a minute
  canary run -c canary.toml --override-cooldown --reason \"fix verified in staging (INC-42)\"
  canary run -c canary.toml --wait                another controller runs relay: wait for it
  canary run -c canary.toml --standby             on a second machine: take the run over if its
                                                  controller dies (needs a shared [state] url)

While it runs: `canary status`, `canary abort --reason ...`, `canary approve` (manual approval).
Exit codes: 0 PROMOTE, 3 ROLLBACK, 4 INCONCLUSIVE, 5 PROMOTION_FAILED (the canary passed, but the
load balancer did not take 100 %: traffic back on the baseline, paged, cooldown as after a
rollback), 1 error (traffic left as it was, or rolled back).")]
pub struct RunArgs {
    #[arg(short, long, default_value = "canary.toml")]
    config: PathBuf,
    /// Run even though the cooldown after a rollback is active.
    #[arg(long, requires = "reason")]
    override_cooldown: bool,
    /// Why the cooldown is overridden; recorded in the evidence.
    #[arg(long)]
    reason: Option<String>,
    /// Commit the sealed bundle to the git repository at this path (overrides `[evidence]
    /// commit`, which commits to the repository holding the evidence directory).
    #[arg(long, value_name = "REPO")]
    commit: Option<PathBuf>,
    /// Rehearse on a clock this many times faster than the runbook's: every duration of the
    /// plan (steps, burst, `for` windows, checkpoints, approval, cooldown) and every PromQL range
    /// window is divided by it. Artifacts still speak runbook time. Production runs use 1.
    #[arg(long, default_value_t = 1.0, value_parser = time_scale)]
    time_scale: f64,
    /// When another controller (on any machine sharing the state store) runs this service:
    /// wait for it to finish instead of refusing. The cooldown is checked again after the wait.
    #[arg(long, conflicts_with = "standby")]
    wait: bool,
    /// Stand by for the run of this service another controller drives: when that controller
    /// dies (its lease lapses), take its run over from the state store's journal and finish it;
    /// when it finishes, exit without starting a run. Waits for a run to start if none has.
    #[arg(long)]
    standby: bool,
}

/// `--time-scale`: a finite factor of at least 1.
pub fn time_scale(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(f) if f.is_finite() && f >= 1.0 => Ok(f),
        _ => Err(format!(
            "{text:?} is not a time scale: give a number of at least 1 (60 runs the 60-minute window in a minute)"
        )),
    }
}

/// Continue a run whose controller died, from its journal: the engine is rebuilt by replaying
/// every recorded input, the split re-applied and verified, and the run goes on — or rolls back
/// if its window has passed.
#[derive(clap::Args)]
#[command(after_help = "Examples:
  canary resume relay-20261126T101500Z-3f2a -c canary.toml
  canary resume relay-20261126T101500Z-3f2a          a demo run, from where `canary demo` ran")]
pub struct ResumeArgs {
    /// The run id (its evidence directory's name).
    run_id: String,
    #[arg(short, long, default_value = "canary.toml")]
    config: PathBuf,
    /// Where a demo run's state is (`canary demo --state-dir`); a demo run is resumed by
    /// starting its services again. A configured run's state directory is in its configuration.
    #[arg(long, default_value = crate::config::Config::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    #[arg(long, value_enum, default_value_t)]
    output: Format,
}

pub async fn preflight_cmd(args: PreflightArgs) -> anyhow::Result<i32> {
    let config = load_config(&args.config, Needs::ALL)?;
    let mut integrations = Integrations::new(&config).await?;
    let checks = preflight(&config, &mut integrations).await;
    let failed = blocking(&checks, false, false).len();
    match args.output {
        Format::Json => outln!("{}", serde_json::to_string_pretty(&checks)?),
        Format::Text => {
            print_table(&checks);
            eprintln!(
                "{}",
                if failed == 0 {
                    "preflight: PASS — nothing was changed".to_owned()
                } else {
                    format!("preflight: FAIL ({failed} check(s)) — nothing was changed")
                }
            );
        }
    }
    Ok(if failed == 0 { 0 } else { 1 })
}

pub async fn run_cmd(args: RunArgs) -> anyhow::Result<i32> {
    let config = load_config(&args.config, Needs::ALL)?.compressed(args.time_scale);
    if args.standby {
        return standby(config).await;
    }
    let options = RunOptions {
        override_cooldown: if args.override_cooldown {
            args.reason.clone()
        } else {
            None
        },
        commit: args
            .commit
            .clone()
            .or_else(|| config.evidence.as_ref().and_then(|e| e.commit.clone())),
        wait: args.wait,
        ..RunOptions::default()
    };
    let finished = run::launch(&config, options).await?;
    print_finished(&finished, Format::Text);
    Ok(finished.verdict.exit_code())
}

/// `canary run --standby`: waits on the service's lock; takes the run over when its controller
/// dies, or exits when the run finishes.
async fn standby(mut config: crate::config::Config) -> anyhow::Result<i32> {
    use canary_state::Store;
    let service = config.plan.service.clone();
    let store = Store::open(&config.state()).await?;
    if matches!(config.state(), canary_state::Location::Embedded { .. }) {
        eprintln!(
            "canary: warning: --standby with the embedded store stands by only for controllers on this machine; set [state] url (or CANARY_STATE_URL) to a shared PostgreSQL"
        );
    }
    eprintln!("canary: standing by for {service} ({})", store.describe());
    // A run to stand by for: the one holding the lock now, or the next to take it.
    let watched = loop {
        if let Some(held) = store.holder(&service).await? {
            break held;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    eprintln!(
        "canary: standing by for run {} of {}",
        watched.holder.run_id,
        run::lock::describe_holder(&watched)
    );
    run::lock::RunLock::wait_until_free(&store, &service).await?;
    let run_id = watched.holder.run_id.clone();
    let record = store.get(&run_id).await?;
    if let Some(verdict) = record
        .as_ref()
        .and_then(|r| r.finished.and(r.verdict.clone()))
    {
        eprintln!(
            "canary: run {run_id} finished ({verdict}) under its own controller: nothing to take over"
        );
        return Ok(0);
    }
    eprintln!(
        "canary: the controller of run {run_id} ({}) stopped renewing its lease: taking the run over",
        run::lock::describe_holder(&watched)
    );
    let resumed = run::Resumed::open(&mut config, &run_id).await?;
    let finished = run::resume_configured(&config, resumed).await?;
    print_finished(&finished, Format::Text);
    Ok(finished.verdict.exit_code())
}

pub async fn resume_cmd(args: ResumeArgs) -> anyhow::Result<i32> {
    if crate::commands::demo::is_demo_run(&args.state_dir, &args.run_id) {
        return crate::commands::demo::resume(&args.state_dir, &args.run_id, args.output).await;
    }
    let mut config = load_config(&args.config, Needs::ALL)?;
    let resumed = run::Resumed::open(&mut config, &args.run_id).await?;
    let finished = run::resume_configured(&config, resumed).await?;
    print_finished(&finished, args.output);
    Ok(finished.verdict.exit_code())
}

/// The end of a run for people (verdict, reasons, evidence) or as JSON.
fn print_finished(finished: &run::Finished, output: Format) {
    match output {
        Format::Json => outln!("{}", finished.json()),
        Format::Text => {
            outln!(
                "{} {} — evidence {}",
                finished.run_id,
                finished.verdict.name(),
                finished.bundle.display()
            );
            for r in finished.verdict.reasons() {
                outln!("  - {r}");
            }
        }
    }
}
