//! The bundle's file names: the runbook's artifacts under the runbook's names, plus the files
//! `canary` adds (journal, report, manifest, signature), and which of them an outcome requires.

use std::fmt;

use canary_core::Verdict;

/// The journal of engine inputs.
pub const JOURNAL: &str = "journal.jsonl";
/// The self-contained HTML report.
pub const REPORT: &str = "report.html";
/// The manifest: hashes of every other file, run facts, signer. Written last.
pub const MANIFEST: &str = "manifest.json";
/// The Ed25519 signature of the exact bytes of [`MANIFEST`], as lowercase hex on one line.
pub const SIGNATURE: &str = "manifest.sig";
/// The decision record.
pub const DECISION_FINAL: &str = "CANARY_DECISION_FINAL.txt";
/// Written after a PROMOTE.
pub const PROMOTION_FINAL: &str = "CANARY_PROMOTION_FINAL.txt";
/// Written after a ROLLBACK or an INCONCLUSIVE verdict (which also rolls back).
pub const ROLLBACK_FINAL: &str = "CANARY_ROLLBACK_FINAL.txt";

/// One artifact of the bundle. Names that carry the run stamp take it from [`Artifact::file_name`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Artifact {
    /// `CANARY_LB_DIFF_<ts>.txt`: load balancer before/after and when each change was applied.
    LbDiff,
    /// `CANARY_DASHBOARDS_<ts>.txt`: Grafana dashboard UIDs and URLs, or the live dashboard.
    Dashboards,
    /// `CANARY_ALERTS_<ts>.txt`: alert rules and Alertmanager routing, or the engine's own guards.
    Alerts,
    /// `canary_load_burst_<ts>.log`: one line per burst request.
    BurstTranscript,
    /// `CANARY_LOAD_SUMMARY_<ts>.json`: the burst's summary.
    LoadSummary,
    /// `CANARY_METRICS_CHECK_<ts>.log`: one ✓/✗ line per guardrail per check.
    CheckLog,
    /// `CANARY_SNAPSHOT_<label>_<ts>.json` for a checkpoint label such as `T15`.
    Snapshot(String),
    /// `CANARY_DECISION_FINAL.txt`.
    DecisionFinal,
    /// `CANARY_PROMOTION_FINAL.txt`.
    PromotionFinal,
    /// `CANARY_ROLLBACK_FINAL.txt`.
    RollbackFinal,
    /// `journal.jsonl`.
    Journal,
    /// `report.html`.
    Report,
    /// `CANARY_ISOLATION_PROBES_<ts>.json`: every isolation-probe run and any leak it found.
    /// Present when the plan runs probes.
    IsolationProbes,
}

impl Artifact {
    /// The artifact's file name for a run stamped `stamp` (see [`crate::stamp::run_stamp`]).
    pub fn file_name(&self, stamp: &str) -> String {
        match self {
            Artifact::LbDiff => format!("CANARY_LB_DIFF_{stamp}.txt"),
            Artifact::Dashboards => format!("CANARY_DASHBOARDS_{stamp}.txt"),
            Artifact::Alerts => format!("CANARY_ALERTS_{stamp}.txt"),
            Artifact::BurstTranscript => format!("canary_load_burst_{stamp}.log"),
            Artifact::LoadSummary => format!("CANARY_LOAD_SUMMARY_{stamp}.json"),
            Artifact::CheckLog => format!("CANARY_METRICS_CHECK_{stamp}.log"),
            Artifact::Snapshot(label) => format!("CANARY_SNAPSHOT_{label}_{stamp}.json"),
            Artifact::DecisionFinal => DECISION_FINAL.to_owned(),
            Artifact::PromotionFinal => PROMOTION_FINAL.to_owned(),
            Artifact::RollbackFinal => ROLLBACK_FINAL.to_owned(),
            Artifact::Journal => JOURNAL.to_owned(),
            Artifact::Report => REPORT.to_owned(),
            Artifact::IsolationProbes => format!("CANARY_ISOLATION_PROBES_{stamp}.json"),
        }
    }

    /// The artifacts every finished run has, whatever happened: a step that did not apply
    /// still has its file, stating why.
    pub const ALWAYS: [Artifact; 9] = [
        Artifact::LbDiff,
        Artifact::Dashboards,
        Artifact::Alerts,
        Artifact::BurstTranscript,
        Artifact::LoadSummary,
        Artifact::CheckLog,
        Artifact::DecisionFinal,
        Artifact::Journal,
        Artifact::Report,
    ];

    /// The final-outcome file for `verdict`: PROMOTION after PROMOTE, ROLLBACK otherwise —
    /// after a failed promotion too, since traffic went back to the baseline.
    pub fn outcome(verdict: &Verdict) -> Artifact {
        match verdict {
            Verdict::Promote => Artifact::PromotionFinal,
            Verdict::Rollback { .. }
            | Verdict::Inconclusive { .. }
            | Verdict::PromotionFailed { .. } => Artifact::RollbackFinal,
        }
    }

    /// Every artifact a finished run with `verdict` must hold, given the checkpoint labels the
    /// run reached (in order).
    pub fn required(verdict: &Verdict, checkpoints_reached: &[String]) -> Vec<Artifact> {
        let mut all: Vec<Artifact> = Artifact::ALWAYS.to_vec();
        all.extend(
            checkpoints_reached
                .iter()
                .map(|l| Artifact::Snapshot(l.clone())),
        );
        all.push(Artifact::outcome(verdict));
        all
    }
}

impl fmt::Display for Artifact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file_name("<ts>"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_runbook() {
        let ts = "20251019T140000Z";
        let names: Vec<String> = Artifact::required(
            &Verdict::Inconclusive { reasons: vec![] },
            &["T15".to_owned()],
        )
        .iter()
        .map(|a| a.file_name(ts))
        .collect();
        assert_eq!(
            names,
            [
                "CANARY_LB_DIFF_20251019T140000Z.txt",
                "CANARY_DASHBOARDS_20251019T140000Z.txt",
                "CANARY_ALERTS_20251019T140000Z.txt",
                "canary_load_burst_20251019T140000Z.log",
                "CANARY_LOAD_SUMMARY_20251019T140000Z.json",
                "CANARY_METRICS_CHECK_20251019T140000Z.log",
                "CANARY_DECISION_FINAL.txt",
                "journal.jsonl",
                "report.html",
                "CANARY_SNAPSHOT_T15_20251019T140000Z.json",
                "CANARY_ROLLBACK_FINAL.txt",
            ]
        );
        assert_eq!(
            Artifact::outcome(&Verdict::Promote).file_name(ts),
            "CANARY_PROMOTION_FINAL.txt"
        );
    }
}
