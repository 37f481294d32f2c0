//! `canary init`: write the commented runbook configuration.

use std::path::PathBuf;

use anyhow::Context;

use crate::config::INIT_TEMPLATE;

/// Write canary.toml encoding the runbook: 5/95 split for 60 minutes, six guardrails,
/// T+15/30/60 snapshots, the 100-query burst at T+5, 24 h cooldown.
#[derive(clap::Args)]
#[command(after_help = "Examples:
  canary init                      writes ./canary.toml
  canary init --out prod.toml      another path
  canary init --out -              print to stdout")]
pub struct InitArgs {
    /// Where to write it (`-` for stdout).
    #[arg(long, short, default_value = "canary.toml")]
    out: PathBuf,
    /// Overwrite an existing file.
    #[arg(long)]
    force: bool,
}

pub fn run(args: InitArgs) -> anyhow::Result<i32> {
    if args.out.as_os_str() == "-" {
        crate::output::write_stdout_bytes(INIT_TEMPLATE.as_bytes());
        return Ok(0);
    }
    if args.out.exists() && !args.force {
        anyhow::bail!(
            "{} already exists: pass --force to overwrite it, or --out to write elsewhere",
            args.out.display()
        );
    }
    std::fs::write(&args.out, INIT_TEMPLATE)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    eprintln!(
        "wrote {}: the relay runbook (5 % canary for 60m, 6 guardrails, burst at T+5).\nnext: put credentials in .env.canary (chmod 600), then `canary validate -c {}`",
        args.out.display(),
        args.out.display()
    );
    Ok(0)
}
