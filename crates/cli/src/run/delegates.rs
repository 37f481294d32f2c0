//! The controller's delegates for real runs: the burst and probes through `canary-load`, and
//! people through the configured notifiers.

use std::sync::Arc;

use anyhow::bail;
use canary_core::ArmRole;
use canary_core::engine::Severity;
use canary_evidence::durable::AppendLog;
use canary_load::{ProbeSpec, ProbeVerdict, Scenario};
use canary_providers::BoxFuture;

use super::controller::{BurstOutcome, Delegates, EventKind, ProbeOutcome};

/// Sends a message to people; returns nothing because a notification never fails a run.
pub type Notify =
    Arc<dyn Fn(&str, Severity, EventKind, String) -> BoxFuture<'static, ()> + Send + Sync>;

/// Burst, probes and notifications as a configuration (or the demo) describes them.
pub struct LoadDelegates {
    pub scenario: Option<Scenario>,
    pub probes: Option<ProbeSpec>,
    pub notify: Option<Notify>,
}

impl Delegates for LoadDelegates {
    fn burst(&self, mut transcript: AppendLog) -> BoxFuture<'static, anyhow::Result<BurstOutcome>> {
        let scenario = self.scenario.clone();
        Box::pin(async move {
            let Some(scenario) = scenario else {
                bail!("no [load] section: there is no burst to run");
            };
            let report = canary_load::run_burst(&scenario, None).await?;
            for line in canary_load::transcript(&report).lines() {
                transcript.append_line(line)?;
            }
            Ok(BurstOutcome {
                total: report.overall.total,
                successful: report.overall.successful,
                summary: canary_load::summary_json(&report),
            })
        })
    }

    fn probes(&self) -> BoxFuture<'static, anyhow::Result<ProbeOutcome>> {
        let spec = self.probes.clone();
        Box::pin(async move {
            let Some(spec) = spec else {
                bail!("isolation probes need at least two [[load.users]] with a `marker`");
            };
            let report = canary_load::run_probes(&spec).await?;
            let verdict = report.verdict();
            let leaks = report
                .leaks
                .iter()
                .map(|l| {
                    // Probes are pinned to the canary: an answer without an arm header came
                    // from it.
                    (
                        l.observer.clone(),
                        l.owner.clone(),
                        l.arm.unwrap_or(ArmRole::Canary),
                    )
                })
                .collect();
            Ok(ProbeOutcome {
                // Only a clean run proves isolation; an unproven one counts as no pairs.
                pairs: if verdict == ProbeVerdict::Clean {
                    report.pairs as u32
                } else {
                    0
                },
                leaks,
                report: canary_load::probe_json(&report),
            })
        })
    }

    fn notify(
        &self,
        run_id: &str,
        severity: Severity,
        kind: EventKind,
        message: String,
    ) -> BoxFuture<'static, ()> {
        match &self.notify {
            Some(notify) => notify(run_id, severity, kind, message),
            None => Box::pin(async {}),
        }
    }
}
