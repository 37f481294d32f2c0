//! `canary traffic show|set`: read or change the split through the configured provider.

use std::path::PathBuf;

use canary_providers::traffic::{RetryPolicy, set_verified};

use crate::commands::validate::load_config;
use crate::config::Needs;
use crate::output::Format;
use crate::run::wiring;

/// Read or set the canary's share of traffic through the configured load balancer.
#[derive(clap::Args)]
#[command(after_help = "Examples:
  canary traffic show -c canary.toml
  canary traffic set 0 -c canary.toml      send everything back to the baseline, verified")]
pub struct TrafficArgs {
    #[command(subcommand)]
    action: TrafficAction,
}

#[derive(clap::Subcommand)]
enum TrafficAction {
    /// Show the split as the load balancer reports it, and its configuration.
    Show {
        #[arg(short, long, default_value = "canary.toml")]
        config: PathBuf,
        #[arg(long, value_enum, default_value_t)]
        output: Format,
    },
    /// Set the canary's percentage (0-100), retried and verified by reading it back.
    Set {
        /// Percent of traffic to the canary.
        #[arg(value_parser = clap::value_parser!(u8).range(0..=100))]
        percent: u8,
        #[arg(short, long, default_value = "canary.toml")]
        config: PathBuf,
    },
}

pub async fn run(args: TrafficArgs) -> anyhow::Result<i32> {
    let needs = Needs {
        traffic: true,
        ..Needs::PLAN
    };
    match args.action {
        TrafficAction::Show { config, output } => {
            let config = load_config(&config, needs)?;
            let settings = config.traffic.as_ref().ok_or_else(|| {
                anyhow::anyhow!("{} has no [traffic] section", config.file.display())
            })?;
            let (router, _) = wiring::router(settings)?;
            let split = router.get().await?;
            let described = router.describe().await?;
            match output {
                Format::Json => outln!(
                    "{}",
                    serde_json::json!({
                        "provider": router.name(),
                        "canary": split.canary,
                        "baseline": split.baseline,
                        "description": described,
                    })
                ),
                Format::Text => {
                    outln!("{} ({}): {split}", config.plan.service, router.name());
                    outln!("{}", described.trim_end());
                }
            }
            Ok(0)
        }
        TrafficAction::Set { percent, config } => {
            let config = load_config(&config, needs)?;
            let settings = config.traffic.as_ref().ok_or_else(|| {
                anyhow::anyhow!("{} has no [traffic] section", config.file.display())
            })?;
            let (router, _) = wiring::router(settings)?;
            let split = set_verified(router.as_ref(), percent, &RetryPolicy::default()).await?;
            outln!(
                "{} ({}): {split}, verified",
                config.plan.service,
                router.name()
            );
            Ok(0)
        }
    }
}
