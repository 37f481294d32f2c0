//! The controller's delegates for real runs: the burst and probes through `canary-load`,
//! people through the configured notifiers, and the run's Grafana dashboard annotated.

use std::sync::{Arc, OnceLock};

use anyhow::bail;
use canary_core::{ArmRole, Millis};
use canary_evidence::durable::AppendLog;
use canary_load::{ProbeSpec, Scenario};
use canary_providers::BoxFuture;
use canary_providers::grafana::{Annotation, AnnotationKind, GrafanaClient};

use super::controller::{BurstOutcome, Delegates, Notice, ProbeOutcome};

/// Sends a notice for a run to people; returns nothing because a notification never fails a
/// run.
pub type Notify = Arc<dyn Fn(&str, Notice) -> BoxFuture<'static, ()> + Send + Sync>;

/// Burst, probes and notifications as a configuration (or the demo) describes them.
pub struct LoadDelegates {
    pub scenario: Option<Scenario>,
    pub probes: Option<ProbeSpec>,
    pub notify: Option<Notify>,
    /// Set once the run's dashboard is in Grafana: from then on its moments are annotated.
    pub dashboard: Arc<OnceLock<GrafanaClient>>,
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
                run: report.run(),
                leaks,
                report: canary_load::probe_json(&report),
            })
        })
    }

    fn notify(&self, run_id: &str, notice: Notice) -> BoxFuture<'static, ()> {
        match &self.notify {
            Some(notify) => notify(run_id, notice),
            None => Box::pin(async {}),
        }
    }

    fn annotate(
        &self,
        run_id: &str,
        kind: AnnotationKind,
        at: Millis,
        text: String,
    ) -> BoxFuture<'static, ()> {
        let Some(client) = self.dashboard.get().cloned() else {
            return Box::pin(async {});
        };
        let annotation = Annotation::for_run(run_id, kind, at, text);
        Box::pin(async move {
            if let Err(e) = client.annotate(&annotation).await {
                let kind = kind.tag();
                tracing::warn!(kind, error = %e, "cannot annotate the Grafana dashboard");
            }
        })
    }
}
