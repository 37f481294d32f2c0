//! `CANARY_DASHBOARDS_<ts>.txt`: where people watched the run — the Grafana dashboards canary
//! pushed (UIDs and URLs), or, without Grafana, the live dashboard the controller served.

use super::{RunContext, table};

/// One Grafana dashboard pushed for the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrafanaDashboard {
    pub uid: String,
    pub title: String,
    /// The dashboard's URL (as Grafana returned it, made absolute).
    pub url: String,
    /// Panel titles, in order.
    pub panels: Vec<String>,
}

/// Where the run's dashboards are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dashboards {
    /// Pushed to Grafana at `grafana_url`.
    Grafana {
        grafana_url: String,
        dashboards: Vec<GrafanaDashboard>,
    },
    /// No Grafana configured: the controller's own live dashboard. `why` says why Grafana was
    /// not used (e.g. "no [grafana] section in canary.toml").
    Live { url: String, why: String },
}

/// Renders the dashboards artifact.
pub fn dashboards(ctx: &RunContext, d: &Dashboards) -> String {
    let mut out = ctx.header("CANARY DASHBOARDS — where this run was watched");
    match d {
        Dashboards::Grafana {
            grafana_url,
            dashboards,
        } => {
            out.push_str(&format!(
                "grafana   {grafana_url}\ncount     {} dashboard(s)\n",
                dashboards.len()
            ));
            for db in dashboards {
                out.push_str(&format!(
                    "\n== {} ==\nuid       {}\nurl       {}\n",
                    db.title, db.uid, db.url
                ));
                if !db.panels.is_empty() {
                    out.push_str("panels:\n");
                    let rows: Vec<Vec<String>> = db
                        .panels
                        .iter()
                        .enumerate()
                        .map(|(i, p)| vec![format!("{}.", i + 1), p.clone()])
                        .collect();
                    out.push_str(&table(&rows));
                }
            }
        }
        Dashboards::Live { url, why } => {
            out.push_str(&format!(
                "grafana   not used: {why}\nlive dashboard (served by the canary controller while the run lasted):\n  {url}\n\nThe live dashboard showed every guardrail's canary and baseline values against its\nthreshold; report.html in this bundle keeps the same charts after the run.\n"
            ));
        }
    }
    out
}
