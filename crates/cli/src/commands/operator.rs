//! `canary status`, `canary abort`, `canary approve`: talk to the running controller.

use std::path::PathBuf;

use canary_core::verdict::fmt_value;

use crate::commands::validate::load_config;
use crate::config::Needs;
use crate::control::{ControlClient, ControlFile, operator};
use crate::output::Format;

/// Which run to talk to: the one of the config's service, found through its state directory.
#[derive(clap::Args)]
pub struct Target {
    /// The configuration of the running canary (for its service and state_dir).
    #[arg(short, long, default_value = "canary.toml")]
    config: PathBuf,
}

impl Target {
    fn client(&self) -> anyhow::Result<ControlClient> {
        let config = load_config(&self.config, Needs::PLAN)?;
        let file = ControlFile::read(&config.state_dir, &config.plan.service)?;
        Ok(ControlClient::new(file))
    }
}

/// Show the running canary: phase, time left, split, each guardrail against its threshold.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  canary status -c canary.toml\n  canary status -c canary.toml --output json\n  canary status -c canary.toml --link"
)]
pub struct StatusArgs {
    #[command(flatten)]
    target: Target,
    #[arg(long, value_enum, default_value_t)]
    output: Format,
    /// Print a new one-time operator link to the live page instead (its abort and approve
    /// controls work in the browser that opens it first).
    #[arg(long)]
    link: bool,
}

/// Roll the running canary back now (traffic to 0 % canary, verified), recording who and why.
#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  canary abort -c canary.toml --reason \"pager storm in eu-west\""
)]
pub struct AbortArgs {
    #[command(flatten)]
    target: Target,
    /// Why; recorded in the evidence.
    #[arg(long, default_value = "aborted by an operator")]
    reason: String,
}

/// Approve the promotion a run is waiting for (approval = "manual", or on_inconclusive = "hold").
#[derive(clap::Args)]
#[command(after_help = "Example:\n  canary approve -c canary.toml")]
pub struct ApproveArgs {
    #[command(flatten)]
    target: Target,
}

pub async fn status(args: StatusArgs) -> anyhow::Result<i32> {
    let client = args.target.client()?;
    if args.link {
        outln!("{}", client.operator_link().await?);
        return Ok(0);
    }
    let s = client.status().await?;
    match args.output {
        Format::Json => outln!("{}", serde_json::to_string_pretty(&s)?),
        Format::Text => {
            let secs = |ms: i64| crate::terminal::runbook_secs(ms, s.time_scale);
            let clock = if canary_core::duration::is_real_time(&s.time_scale) {
                String::new()
            } else {
                format!(
                    " (runbook time; compressed {}×: T+{}s of {}s wall)",
                    s.time_scale,
                    s.elapsed_ms.max(0) / 1000,
                    s.window_ms.max(0) / 1000
                )
            };
            outln!(
                "run {} of {}: {} — T+{}s of {}s{clock}, canary weight {} %{}",
                s.run_id,
                s.service,
                s.phase,
                secs(s.elapsed_ms),
                secs(s.window_ms),
                s.canary_weight,
                s.verdict
                    .as_deref()
                    .map(|v| format!(", verdict {v}"))
                    .unwrap_or_default()
            );
            let value = |v: Option<f64>| v.map_or("-".to_owned(), fmt_value);
            for g in &s.guardrails {
                outln!(
                    "  {:<14} {:<13} canary {:>10}  baseline {:>10}  must {}",
                    g.name,
                    g.status,
                    value(g.canary),
                    value(g.baseline),
                    g.must
                );
            }
            for c in &s.comparisons {
                outln!(
                    "  {:<14} {:<13} {} {} {}  {}  {}{}",
                    c.name,
                    c.status,
                    c.typical,
                    c.estimate,
                    c.interval,
                    c.evidence,
                    c.samples,
                    if c.critical { ", critical" } else { "" }
                );
            }
            if let Some(score) = &s.score {
                outln!("  comparison score {score}");
            }
        }
    }
    Ok(0)
}

pub async fn abort(args: AbortArgs) -> anyhow::Result<i32> {
    let client = args.target.client()?;
    let answer = client.abort(&operator(), &args.reason).await?;
    eprintln!("run {}: {}", client.run_id(), answer.trim());
    Ok(0)
}

pub async fn approve(args: ApproveArgs) -> anyhow::Result<i32> {
    let client = args.target.client()?;
    let answer = client.approve(&operator()).await?;
    eprintln!("run {}: {}", client.run_id(), answer.trim());
    Ok(0)
}
