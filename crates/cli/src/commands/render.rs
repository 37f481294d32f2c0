//! `canary render rules|dashboards|alertmanager`: print what canary generates from a plan, for
//! review or for GitOps.

use std::path::PathBuf;
use std::time::Duration;

use canary_providers::alertmanager::{AlertmanagerRender, CredentialRef};
use canary_providers::grafana::{Dashboard, DashboardOptions, Datasource, runbook_panels};
use canary_providers::rules::{CanaryRules, PrometheusRuleMeta};

use crate::commands::validate::load_config;
use crate::config::Needs;

/// Print the Prometheus alerting rules, the Grafana dashboard or the Alertmanager receiver and
/// route canary generates for this configuration.
#[derive(clap::Args)]
#[command(after_help = "Examples:
  canary render rules -c canary.toml > canary-rules.yml && promtool check rules canary-rules.yml
  canary render rules -c canary.toml --format prometheus-rule    a PrometheusRule manifest
  canary render dashboards -c canary.toml > dashboard.json
  canary render alertmanager -c canary.toml --callback-url https://canary.internal:9977/api/alertmanager")]
pub struct RenderArgs {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// One alert per guardrail, scoped to the canary, with its `for` and the labels Alertmanager
    /// routes on (canary_run, severity, action) and the guardrail canary applies it as.
    Rules {
        #[arg(short, long, default_value = "canary.toml")]
        config: PathBuf,
        /// The run id the rules are labelled with (a real run uses its own).
        #[arg(long, default_value = "preview")]
        run_id: String,
        #[arg(long, value_enum, default_value = "rules")]
        format: RulesFormat,
        /// `promtool test rules` unit tests for the rules file instead.
        #[arg(long)]
        tests: bool,
    },
    /// The run's Grafana dashboard: the runbook's six panels, canary vs baseline.
    Dashboards {
        #[arg(short, long, default_value = "canary.toml")]
        config: PathBuf,
        #[arg(long, default_value = "preview")]
        run_id: String,
    },
    /// The receivers and routes to add to alertmanager.yml: firing canary alerts call the run
    /// back, and go to the escalation webhook (`[alertmanager] webhook_url`) when configured.
    Alertmanager {
        #[arg(short, long, default_value = "canary.toml")]
        config: PathBuf,
        /// Where Alertmanager reaches the controller's webhook.
        #[arg(long, default_value = "http://127.0.0.1:9977/api/alertmanager")]
        callback_url: String,
        /// The variable the bearer token is substituted from when merging.
        #[arg(long, default_value = "CANARY_ALERT_TOKEN")]
        token_variable: String,
        /// A complete alertmanager.yml instead of a snippet.
        #[arg(long)]
        standalone: bool,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum RulesFormat {
    /// A Prometheus rules file.
    Rules,
    /// A PrometheusRule custom resource (prometheus-operator).
    PrometheusRule,
    /// JSON for a Cortex/Mimir ruler API.
    RulerJson,
}

pub fn run(args: RenderArgs) -> anyhow::Result<i32> {
    let text = match args.what {
        What::Rules {
            config,
            run_id,
            format,
            tests,
        } => {
            let config = load_config(&config, Needs::PLAN)?;
            let rules = CanaryRules::generate(&config.plan, &run_id)?;
            if tests {
                rules.promtool_tests(&rules.file_name())?.yaml
            } else {
                match format {
                    RulesFormat::Rules => rules.to_rules_file()?,
                    RulesFormat::PrometheusRule => {
                        rules.to_prometheus_rule(&PrometheusRuleMeta::default())?
                    }
                    RulesFormat::RulerJson => rules.to_ruler_json(),
                }
            }
        }
        What::Dashboards { config, run_id } => {
            let config = load_config(&config, Needs::PLAN)?;
            let dashboard = Dashboard::build(
                &config.plan,
                &run_id,
                &runbook_panels(),
                &DashboardOptions {
                    datasource: Datasource::Variable,
                    time_compression: None,
                    refresh: Duration::from_secs(10),
                },
            )?;
            serde_json::to_string_pretty(&dashboard)?
        }
        What::Alertmanager {
            config,
            callback_url,
            token_variable,
            standalone,
        } => {
            let config = load_config(&config, Needs::PLAN)?;
            let mut render = AlertmanagerRender::new(
                callback_url,
                CredentialRef::Placeholder {
                    variable: token_variable,
                },
            );
            render.escalation_url = config.escalation.clone();
            if standalone {
                render.standalone()?
            } else {
                render.snippet()?
            }
        }
    };
    out!("{text}");
    if !text.ends_with('\n') {
        outln!();
    }
    Ok(0)
}
