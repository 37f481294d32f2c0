//! `canary validate`: parse, resolve every variable, compile every PromQL query.

use std::path::{Path, PathBuf};

use canary_core::duration::Human;
use canary_core::plan::Approval;

use crate::config::{self, Config, Needs, env::Env};
use crate::output::{self, Format};

/// Check a configuration: syntax, types, PromQL, variables. Lists every problem at once, each at
/// file:line:col with how to fix it. Touches nothing.
#[derive(clap::Args)]
#[command(after_help = "Examples:
  canary validate -c canary.toml
  canary validate -c canary.toml --no-env     check everything but the variables (e.g. in CI)")]
pub struct ValidateArgs {
    /// The configuration file.
    #[arg(short, long, default_value = "canary.toml")]
    config: PathBuf,
    /// Do not resolve ${VAR}s: check structure and queries only.
    #[arg(long)]
    no_env: bool,
    #[arg(long, value_enum, default_value_t)]
    output: Format,
}

/// Loads `path` for a command: `.env.canary` next to it, then the sections `needs` names.
pub fn load_config(path: &Path, needs: Needs) -> anyhow::Result<Config> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let env = Env::load(dir).map_err(anyhow::Error::msg)?;
    let config = config::load(path, needs, env)?;
    output::print_warnings(&config.warnings);
    Ok(config)
}

pub fn run(args: ValidateArgs) -> anyhow::Result<i32> {
    let config = if args.no_env {
        let config = config::load(&args.config, Needs::ALL, Env::offline())?;
        output::print_warnings(&config.warnings);
        config
    } else {
        load_config(&args.config, Needs::ALL)?
    };
    let plan = &config.plan;
    match args.output {
        Format::Json => {
            let summary = serde_json::json!({
                "valid": true,
                "file": config.file.display().to_string(),
                "sha256": config.sha256,
                "variables": config.variables,
                "variables_checked": !args.no_env,
                "plan": plan,
            });
            outln!("{}", serde_json::to_string_pretty(&summary)?);
        }
        Format::Text => {
            outln!("{} is valid.", config.file.display());
            outln!(
                "  service {}: canary {} {} vs baseline {} {}",
                plan.service,
                plan.arms.canary.name,
                plan.arms.canary.selector,
                plan.arms.baseline.name,
                plan.arms.baseline.selector
            );
            let steps: Vec<String> = plan
                .steps
                .iter()
                .map(|s| format!("{} % for {}", s.weight, Human(s.hold)))
                .collect();
            outln!("  traffic: {} then decide", steps.join(", then "));
            outln!(
                "  guardrails: {} evaluated every {}, check log every {}, snapshots at {}",
                plan.guardrails.len(),
                Human(plan.evaluation_interval),
                Human(plan.check_log_interval),
                plan.checkpoints
                    .iter()
                    .map(|c| format!("T+{}", Human(*c)))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            for g in &plan.guardrails {
                let for_ = if g.for_.is_zero() {
                    String::new()
                } else {
                    format!(" for {}", Human(g.for_))
                };
                outln!(
                    "    {:<14} must {}{for_}, on breach {}",
                    g.name,
                    g.must,
                    g.on_breach.as_str()
                );
            }
            if !plan.comparisons.is_empty() {
                outln!(
                    "  comparisons against the baseline: {} (score: below {} rolls back, from {} passes)",
                    plan.comparisons.len(),
                    plan.scoring.marginal,
                    plan.scoring.pass
                );
                let critical_alpha: f64 = plan
                    .comparisons
                    .iter()
                    .filter(|c| c.critical)
                    .map(|c| c.alpha)
                    .sum();
                if critical_alpha > 0.0 {
                    outln!(
                        "    a canary no worse than allowed is rolled back by a critical comparison in at most {} % of runs (the sum of their alphas)",
                        canary_core::verdict::fmt_value((critical_alpha * 100.0).min(100.0))
                    );
                }
                for c in &plan.comparisons {
                    let allowed = canary_core::plan::format_effect(c.effect);
                    outln!(
                        "    {:<14} {}, {} is bad, allowed {allowed}{}, alpha {}",
                        c.name,
                        c.measure.kind().as_str(),
                        c.direction.as_str(),
                        if c.critical {
                            ", critical: rolls back at once"
                        } else {
                            ""
                        },
                        c.alpha
                    );
                }
            }
            if let (Some(burst), Some(load)) = (&plan.burst, &config.load) {
                outln!(
                    "  burst at T+{}: {} users × {} requests, {} pause, bar {} %{}",
                    Human(burst.at),
                    load.users.len(),
                    load.requests_per_user,
                    Human(load.pause),
                    burst.min_success_percent,
                    if plan.probes {
                        ", with isolation probes"
                    } else {
                        ""
                    }
                );
            }
            if let Approval::Manual { timeout } = plan.approval {
                outln!(
                    "  promotion needs `canary approve` within {}",
                    Human(timeout)
                );
            }
            outln!("  cooldown after a rollback: {}", Human(config.cooldown));
            if let Some(t) = &config.traffic {
                outln!("  traffic provider: {}", t.provider());
            }
            if args.no_env {
                outln!("  variables (not checked): {}", config.variables.join(", "));
            } else {
                outln!(
                    "  variables: {} referenced, all set (values not shown)",
                    config.variables.len()
                );
            }
        }
    }
    Ok(0)
}
