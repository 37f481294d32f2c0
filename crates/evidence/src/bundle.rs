//! The bundle writer: `<evidence dir>/<run id>/` and everything in it.
//!
//! The runtime drives it in the order of the run:
//!
//! 1. [`Bundle::create`] then [`Bundle::create_journal`] — or, for `canary resume`,
//!    [`Bundle::resume`], replaying the journal it returns into a fresh engine. Append every
//!    engine input to the journal before acting on it.
//! 2. As the run goes: [`Bundle::record_traffic_change`] after each traffic change,
//!    [`Bundle::write_dashboards`], [`Bundle::write_alerts`], [`Bundle::burst_transcript`] and
//!    [`Bundle::write_load_summary`] for the burst, [`Bundle::append_check`] for each
//!    `CheckLog` action, [`Bundle::write_snapshot`] for each `Snapshot` action.
//! 3. After the decision and the final traffic change: [`Bundle::seal`]. It replays the journal,
//!    fills in any runbook artifact the run never reached (stating why), writes the decision
//!    files and `report.html`, then `manifest.sig` and, last, `manifest.json`.
//!
//! Whole files are written atomically and logs append fsynced lines ([`crate::durable`]), so a
//! crash at any point leaves a bundle without a manifest, which `canary verify` calls incomplete.
//! No method takes a secret except through [`Signer`], which never writes its key.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use canary_core::engine::{GuardrailSummary, Input};
use canary_core::journal::{self, Header, Journal};
use canary_core::plan::Plan;
use canary_core::{Decision, EngineError, Millis, Verdict};
use serde::Serialize;

use crate::artifact::{Artifact, MANIFEST, SIGNATURE};
use crate::durable::{self, AppendLog};
use crate::facts::{BurstResult, LoadDetail, RunFacts};
use crate::journal_file::{self, JournalFileError, JournalWriter};
use crate::manifest::{self, MANIFEST_FORMAT, Manifest, ManifestDecision, ManifestSigner};
use crate::render::alerts::{self, Alerts};
use crate::render::check_log;
use crate::render::dashboards::{self, Dashboards};
use crate::render::decision::{self, DecisionRecord};
use crate::render::load;
use crate::render::snapshot::{self, NotReached, Snapshot};
use crate::render::traffic::{self, FinalTraffic, TrafficChange};
use crate::render::{self, RunContext};
use crate::report::{self, ReportInput};
use crate::signing::Signer;
use crate::stamp;

/// Why the bundle could not be written.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error(
        "cannot {action} {path}: {source}; check that the evidence directory is writable and the disk is not full"
    )]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "the bundle directory {path} already holds files: every run needs a fresh directory (a new run id); to continue an interrupted run use `canary resume RUN_ID`"
    )]
    NotEmpty { path: PathBuf },
    #[error("there is no bundle to resume at {path}: check the run id and the evidence directory")]
    NotFound { path: PathBuf },
    #[error(
        "the run in {path} crashed before it started (its journal has no Start input): nothing was changed; delete the directory and start a new run"
    )]
    NeverStarted { path: PathBuf },
    #[error(
        "the bundle {path} is already sealed (it has manifest.json): that run is finished; check it with `canary verify`"
    )]
    AlreadySealed { path: PathBuf },
    #[error(
        "{what} {value:?} cannot be part of a file name: use letters, digits, '-', '_' and '.', not starting with '.'"
    )]
    BadName { what: &'static str, value: String },
    #[error(
        "the start time {at} (ms since the epoch) is outside the years 1-9999: the controller's clock is wrong"
    )]
    BadTime { at: Millis },
    #[error(transparent)]
    Journal(#[from] JournalFileError),
    #[error(
        "the journal {path} ends with a torn line: resume the run with `Bundle::resume` (which drops the line) before sealing"
    )]
    TornJournal { path: PathBuf },
    #[error(
        "the journal {path} cannot be replayed ({source}): it was not written by this engine's run; the bundle cannot be sealed"
    )]
    Replay { path: PathBuf, source: EngineError },
    #[error(
        "the journal {path} ends before the engine decided: feed the engine until it decides (abort and signals roll back) before sealing"
    )]
    Undecided { path: PathBuf },
    #[error(
        "the journal belongs to run {journal:?} but the bundle to run {bundle:?}: each run writes its own bundle"
    )]
    RunMismatch { journal: String, bundle: String },
    #[error(
        "the journal starts at {journal:?} but the bundle was created for a start at {bundle} ms: the artifact names would not match; create the bundle with the time of the Start input"
    )]
    StartMismatch {
        journal: Option<Millis>,
        bundle: Millis,
    },
    #[error("cannot write {what} as JSON: {source}")]
    Json {
        what: &'static str,
        source: serde_json::Error,
    },
}

fn io_error<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> BundleError + 'a {
    move |source| BundleError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Checks that `value` is safe as (part of) a file name.
fn check_name(what: &'static str, value: &str) -> Result<(), BundleError> {
    let ok = !value.is_empty()
        && value.len() <= 200
        && !value.starts_with('.')
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(BundleError::BadName {
            what,
            value: value.to_owned(),
        })
    }
}

/// What sealing needs beyond the journal.
#[derive(Debug, Clone, Copy)]
pub struct Seal<'a> {
    /// SHA-256 (hex) of the configuration file.
    pub config_sha256: &'a str,
    /// When the final traffic change was verified (or given up on).
    pub finished: Millis,
    /// The split the run left behind.
    pub traffic: &'a FinalTraffic,
    /// The operator's reason for running during a cooldown, if they did.
    pub cooldown_override: Option<&'a str>,
    /// Set when the bundle was rebuilt from the state store's journal on another machine.
    pub rebuilt: Option<&'a str>,
    pub signer: &'a Signer,
}

/// A sealed bundle.
#[derive(Debug, Clone)]
pub struct Sealed {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub verdict: Verdict,
}

/// An open bundle directory.
#[derive(Debug)]
pub struct Bundle {
    dir: PathBuf,
    run_id: String,
    started: Millis,
    stamp: String,
    /// The plan's `time_scale`, once the journal is created or resumed (artifacts written in
    /// the runbook's time).
    time_scale: f64,
    check_log: Option<AppendLog>,
}

impl Bundle {
    /// Creates `<evidence_dir>/<run_id>/` for a run that starts (T+0) at `started`. An existing
    /// empty directory is taken; one with files in it is refused.
    pub fn create(
        evidence_dir: &Path,
        run_id: &str,
        started: Millis,
    ) -> Result<Bundle, BundleError> {
        check_name("the run id", run_id)?;
        let stamp = stamp::run_stamp(started).ok_or(BundleError::BadTime { at: started })?;
        fs::create_dir_all(evidence_dir).map_err(io_error("create", evidence_dir))?;
        let dir = evidence_dir.join(run_id);
        match fs::create_dir(&dir) {
            Ok(()) => durable::sync_dir(evidence_dir).map_err(io_error("sync", evidence_dir))?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let mut entries = fs::read_dir(&dir).map_err(io_error("read", &dir))?;
                if entries.next().is_some() {
                    return Err(BundleError::NotEmpty { path: dir });
                }
            }
            Err(e) => return Err(io_error("create", &dir)(e)),
        }
        Ok(Bundle {
            dir,
            run_id: run_id.to_owned(),
            started,
            stamp,
            time_scale: 1.0,
            check_log: None,
        })
    }

    /// Reopens the unsealed bundle of an interrupted run for `canary resume`: drops a torn last
    /// journal line and temporary files left by the crash, and returns the bundle, the journal
    /// writer to continue with, and the journal to replay into a fresh engine. T+0 (and so the
    /// artifact names) comes from the journal's `Start` input. A sealed bundle is refused.
    pub fn resume(
        evidence_dir: &Path,
        run_id: &str,
    ) -> Result<(Bundle, JournalWriter, Journal), BundleError> {
        check_name("the run id", run_id)?;
        let dir = evidence_dir.join(run_id);
        if !dir.is_dir() {
            return Err(BundleError::NotFound { path: dir });
        }
        if dir.join(MANIFEST).exists() {
            return Err(BundleError::AlreadySealed { path: dir });
        }
        let journal_path = dir.join(Artifact::Journal.file_name(""));
        let (writer, journal) = JournalWriter::resume(&journal_path)?;
        if journal.header.run_id != run_id {
            return Err(BundleError::RunMismatch {
                journal: journal.header.run_id.clone(),
                bundle: run_id.to_owned(),
            });
        }
        let started = journal
            .inputs
            .iter()
            .find_map(|i| match i {
                Input::Start { at } => Some(*at),
                _ => None,
            })
            .ok_or(BundleError::NeverStarted { path: dir.clone() })?;
        let stamp = stamp::run_stamp(started).ok_or(BundleError::BadTime { at: started })?;
        let bundle = Bundle {
            dir,
            run_id: run_id.to_owned(),
            started,
            stamp,
            time_scale: journal.header.plan.time_scale,
            check_log: None,
        };
        bundle.remove_temp_files()?;
        Ok((bundle, writer, journal))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// T+0.
    pub fn started(&self) -> Millis {
        self.started
    }

    /// The run stamp in artifact names (`20251019T140000Z`).
    pub fn stamp(&self) -> &str {
        &self.stamp
    }

    /// What every artifact of this run says about it.
    pub fn context(&self) -> RunContext {
        RunContext {
            run_id: self.run_id.clone(),
            started: self.started,
            time_scale: self.time_scale,
        }
    }

    /// Where `artifact` lives in this bundle.
    pub fn path_of(&self, artifact: &Artifact) -> PathBuf {
        self.dir.join(artifact.file_name(&self.stamp))
    }

    /// Creates `journal.jsonl` with its header (format, run id, plan). The artifacts written
    /// from here on speak the plan's runbook time.
    pub fn create_journal(&mut self, plan: &Plan) -> Result<JournalWriter, BundleError> {
        self.time_scale = plan.time_scale;
        let header = Header {
            format: journal::FORMAT,
            run_id: self.run_id.clone(),
            plan: plan.clone(),
        };
        Ok(JournalWriter::create(
            &self.path_of(&Artifact::Journal),
            &header,
        )?)
    }

    fn write(&self, artifact: &Artifact, bytes: &[u8]) -> Result<(), BundleError> {
        let name = artifact.file_name(&self.stamp);
        durable::write_atomic(&self.dir, &name, bytes)
            .map_err(io_error("write", &self.dir.join(&name)))
    }

    /// Adds a traffic change to `CANARY_LB_DIFF_<ts>.txt` (call after each change is applied
    /// and verified, or given up on). The file is rewritten atomically with the new block at the
    /// end, so the changes before a controller restart are kept.
    pub fn record_traffic_change(&self, change: &TrafficChange) -> Result<(), BundleError> {
        let path = self.path_of(&Artifact::LbDiff);
        let ctx = self.context();
        let mut text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => traffic::lb_diff_header(&ctx),
            Err(e) => return Err(io_error("read", &path)(e)),
        };
        let number = traffic::count_changes(&text) + 1;
        text.push_str(&traffic::lb_change_block(&ctx, number, change));
        self.write(&Artifact::LbDiff, text.as_bytes())
    }

    /// Writes `CANARY_DASHBOARDS_<ts>.txt`.
    pub fn write_dashboards(&self, d: &Dashboards) -> Result<(), BundleError> {
        let text = dashboards::dashboards(&self.context(), d);
        self.write(&Artifact::Dashboards, text.as_bytes())
    }

    /// Writes `CANARY_ALERTS_<ts>.txt`.
    pub fn write_alerts(&self, a: &Alerts) -> Result<(), BundleError> {
        let text = alerts::alerts(&self.context(), a);
        self.write(&Artifact::Alerts, text.as_bytes())
    }

    /// Writes `CANARY_LOAD_SUMMARY_<ts>.json`: the load burst's summary as pretty JSON.
    pub fn write_load_summary<T: Serialize + ?Sized>(
        &self,
        summary: &T,
    ) -> Result<(), BundleError> {
        let mut bytes = serde_json::to_vec_pretty(summary).map_err(|source| BundleError::Json {
            what: "the load summary",
            source,
        })?;
        bytes.push(b'\n');
        self.write(&Artifact::LoadSummary, &bytes)
    }

    /// Writes `CANARY_ISOLATION_PROBES_<ts>.json`: the probe runs so far (rewritten after each
    /// run, atomically).
    pub fn write_probe_report<T: Serialize + ?Sized>(&self, report: &T) -> Result<(), BundleError> {
        let mut bytes = serde_json::to_vec_pretty(report).map_err(|source| BundleError::Json {
            what: "the isolation probe report",
            source,
        })?;
        bytes.push(b'\n');
        self.write(&Artifact::IsolationProbes, &bytes)
    }

    /// Opens `canary_load_burst_<ts>.log` for the burst's transcript, one fsynced line per
    /// request. The log is independent of the bundle (it can move to the burst's task).
    pub fn burst_transcript(&self) -> Result<AppendLog, BundleError> {
        let path = self.path_of(&Artifact::BurstTranscript);
        AppendLog::open(&path).map_err(io_error("open", &path))
    }

    /// Appends one check (a `CheckLog` action) to `CANARY_METRICS_CHECK_<ts>.log`: one ✓/✗ line
    /// per guardrail and per comparison, each fsynced.
    pub fn append_check(
        &mut self,
        round: Millis,
        guardrails: &[GuardrailSummary],
        comparisons: &[canary_core::judge::Judgement],
    ) -> Result<(), BundleError> {
        let path = self.path_of(&Artifact::CheckLog);
        if self.check_log.is_none() {
            self.check_log = Some(AppendLog::open(&path).map_err(io_error("open", &path))?);
        }
        let lines = check_log::check_lines(&self.context(), round, guardrails, comparisons);
        if let Some(log) = self.check_log.as_mut() {
            log.append_lines(lines.iter().map(String::as_str))
                .map_err(io_error("append to", &path))?;
        }
        Ok(())
    }

    /// Writes `CANARY_SNAPSHOT_<label>_<ts>.json` for a `Snapshot` action, with the raw results
    /// of its round.
    pub fn write_snapshot(&self, s: &Snapshot<'_>) -> Result<(), BundleError> {
        check_name("the checkpoint label", s.label)?;
        let text = snapshot::snapshot_json(&self.context(), s);
        self.write(&Artifact::Snapshot(s.label.to_owned()), text.as_bytes())
    }

    fn remove_temp_files(&self) -> Result<(), BundleError> {
        let mut removed = false;
        for entry in fs::read_dir(&self.dir).map_err(io_error("read", &self.dir))? {
            let entry = entry.map_err(io_error("read", &self.dir))?;
            if let Some(name) = entry.file_name().to_str()
                && durable::is_temp(name)
            {
                fs::remove_file(entry.path()).map_err(io_error("remove", &entry.path()))?;
                removed = true;
            }
        }
        if removed {
            durable::sync_dir(&self.dir).map_err(io_error("sync", &self.dir))?;
        }
        Ok(())
    }

    /// Seals the bundle after the decision (see the module docs). Consumes the bundle and the
    /// journal writer: nothing may be written or appended after the manifest.
    pub fn seal(mut self, journal: JournalWriter, seal: &Seal<'_>) -> Result<Sealed, BundleError> {
        drop(journal);
        // Close the check log before hashing it.
        self.check_log = None;
        let journal_path = self.path_of(&Artifact::Journal);
        let journal = journal_file::read(&journal_path)?;
        if journal.torn_tail {
            return Err(BundleError::TornJournal { path: journal_path });
        }
        if journal.header.run_id != self.run_id {
            return Err(BundleError::RunMismatch {
                journal: journal.header.run_id.clone(),
                bundle: self.run_id.clone(),
            });
        }
        let facts = RunFacts::derive(&journal).map_err(|source| BundleError::Replay {
            path: journal_path.clone(),
            source,
        })?;
        if facts.started != Some(self.started) {
            return Err(BundleError::StartMismatch {
                journal: facts.started,
                bundle: self.started,
            });
        }
        let decision = facts
            .decision
            .clone()
            .ok_or(BundleError::Undecided { path: journal_path })?;
        // The journal's plan is the truth about the run's clock.
        self.time_scale = facts.plan.time_scale;
        let ctx = self.context();

        self.fill_missing(&ctx, &facts, &decision)?;

        let record = DecisionRecord {
            facts: &facts,
            decision: &decision,
            traffic: seal.traffic,
            config_sha256: seal.config_sha256,
            signer_fingerprint: &seal.signer.fingerprint(),
            signer_public_key: &seal.signer.public_hex(),
            cooldown_override: seal.cooldown_override,
        };
        self.write(
            &Artifact::DecisionFinal,
            decision::decision_final(&ctx, &record).as_bytes(),
        )?;
        let outcome = Artifact::outcome(&decision.verdict);
        let other = match outcome {
            Artifact::PromotionFinal => Artifact::RollbackFinal,
            _ => Artifact::PromotionFinal,
        };
        let other_path = self.path_of(&other);
        if other_path.exists() {
            fs::remove_file(&other_path).map_err(io_error("remove", &other_path))?;
        }
        self.write(&outcome, decision::outcome_final(&ctx, &record).as_bytes())?;
        self.remove_temp_files()?;

        let report_name = Artifact::Report.file_name(&self.stamp);
        let artifacts = manifest::hash_bundle(&self.dir, &[report_name.as_str()])
            .map_err(io_error("hash the files of", &self.dir))?;
        let html = report::report_html(
            &ctx,
            &ReportInput {
                facts: &facts,
                decision: &decision,
                traffic: seal.traffic,
                artifacts: &artifacts,
                signer_fingerprint: &seal.signer.fingerprint(),
                cooldown_override: seal.cooldown_override,
                detail: &LoadDetail::read(&self.dir, &self.stamp),
            },
        );
        self.write(&Artifact::Report, html.as_bytes())?;

        let files = manifest::hash_bundle(&self.dir, &[])
            .map_err(io_error("hash the files of", &self.dir))?;
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            run_id: self.run_id.clone(),
            service: facts.plan.service.clone(),
            arms: facts.plan.arms.clone(),
            config_sha256: seal.config_sha256.to_owned(),
            started: stamp::rfc3339(self.started),
            started_ms: self.started,
            finished: stamp::rfc3339(seal.finished),
            finished_ms: seal.finished,
            decision: ManifestDecision {
                verdict: decision.verdict.name().to_owned(),
                reasons: decision.verdict.reasons().to_vec(),
                reasons_text: decision
                    .verdict
                    .reasons()
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
                authorised_by: decision.authorised_by.clone(),
                at: stamp::rfc3339(decision.at),
                at_ms: decision.at,
            },
            cooldown_override: seal.cooldown_override.map(str::to_owned),
            rebuilt: seal.rebuilt.map(str::to_owned),
            signer: ManifestSigner {
                algorithm: "ed25519".to_owned(),
                public_key: seal.signer.public_hex(),
                fingerprint: seal.signer.fingerprint(),
                signature: format!(
                    "{SIGNATURE}: hex of the 64-byte Ed25519 signature of the exact bytes of {MANIFEST}"
                ),
            },
            files,
        };
        let bytes = manifest.to_bytes();
        let mut signature = seal.signer.sign_hex(&bytes);
        signature.push('\n');
        // The signature first, the manifest last: a crash between them leaves no manifest.
        durable::write_atomic(&self.dir, SIGNATURE, signature.as_bytes())
            .map_err(io_error("write", &self.dir.join(SIGNATURE)))?;
        durable::write_atomic(&self.dir, MANIFEST, &bytes)
            .map_err(io_error("write", &self.dir.join(MANIFEST)))?;
        Ok(Sealed {
            dir: self.dir.clone(),
            manifest,
            verdict: decision.verdict,
        })
    }

    /// Writes every runbook artifact the run did not, stating why: first those the journal
    /// alone determines ([`journal_placeholders`]), then the ones the runtime should have
    /// written (the LB diff, dashboards, alerts, a burst or probe report it did not record, the
    /// snapshot of a reached checkpoint), the last rebuilt from the engine's own summaries.
    fn fill_missing(
        &self,
        ctx: &RunContext,
        facts: &RunFacts,
        decision: &Decision,
    ) -> Result<(), BundleError> {
        let exists = |a: &Artifact| self.path_of(a).exists();
        let check_log_empty = |path: &Path| fs::metadata(path).map_or(true, |m| m.len() == 0);
        for (artifact, text) in journal_placeholders(facts) {
            let missing = match &artifact {
                Artifact::CheckLog => check_log_empty(&self.path_of(&artifact)),
                a => !exists(a),
            };
            if missing {
                if let Artifact::Snapshot(label) = &artifact {
                    check_name("the checkpoint label", label)?;
                }
                self.write(&artifact, text.as_bytes())?;
            }
        }

        let ended = Ended::of(facts, decision);
        if !exists(&Artifact::LbDiff) {
            let text = format!(
                "{}\nNOT RECORDED: {}\n",
                traffic::lb_diff_header(ctx),
                ended.before("a traffic change was recorded")
            );
            self.write(&Artifact::LbDiff, text.as_bytes())?;
        }
        if !exists(&Artifact::Dashboards) {
            let text = render::not_recorded(
                ctx,
                "CANARY DASHBOARDS — where this run was watched",
                &ended.before("the dashboards were recorded"),
            );
            self.write(&Artifact::Dashboards, text.as_bytes())?;
        }
        if !exists(&Artifact::Alerts) {
            let text = render::not_recorded(
                ctx,
                "CANARY ALERTS — what was armed to roll the canary back",
                &ended.before("the alerting was recorded"),
            );
            self.write(&Artifact::Alerts, text.as_bytes())?;
        }
        // The burst started (the journal says so) but its files were not recorded.
        let unrecorded = match &facts.burst {
            BurstResult::NoResult { started } => format!(
                "not recorded: the burst started at {} and had not reported: {}",
                stamp::runbook_offset(self.started, *started, facts.plan.time_scale),
                ended.before("it finished")
            ),
            _ => "not recorded: the burst ran but the controller did not record this file (it restarted?)"
                .to_owned(),
        };
        if !exists(&Artifact::BurstTranscript) {
            let line = load::transcript_not_run(&unrecorded);
            self.write(&Artifact::BurstTranscript, format!("{line}\n").as_bytes())?;
        }
        if !exists(&Artifact::LoadSummary) {
            self.write(
                &Artifact::LoadSummary,
                load::summary_not_run(ctx, &unrecorded).as_bytes(),
            )?;
        }
        if facts.plan.probes && !exists(&Artifact::IsolationProbes) {
            let p = &facts.probes;
            let why = if p.completed == 0 {
                format!(
                    "not recorded: {}",
                    ended.before("an isolation probe run reported")
                )
            } else {
                format!(
                    "not recorded: {} probe run(s) reported to the engine ({} proving isolation, {} leak(s)) but the controller did not record this file (it restarted?)",
                    p.completed,
                    p.clean,
                    p.leaks.len()
                )
            };
            self.write(
                &Artifact::IsolationProbes,
                load::probes_not_run(ctx, &why).as_bytes(),
            )?;
        }
        if check_log_empty(&self.path_of(&Artifact::CheckLog)) {
            // The engine asked for checks the controller did not record: rebuild them from
            // the journal (the same summaries the engine produced).
            let mut text = String::new();
            for c in &facts.checks {
                let lines = check_log::check_lines(ctx, c.round, &c.guardrails, &c.comparisons);
                for line in lines {
                    text.push_str(&line);
                    text.push('\n');
                }
            }
            self.write(&Artifact::CheckLog, text.as_bytes())?;
        }
        for c in &facts.checkpoints {
            let artifact = Artifact::Snapshot(c.label.clone());
            if !exists(&artifact) {
                check_name("the checkpoint label", &c.label)?;
                let text = snapshot::snapshot_json(
                    ctx,
                    &Snapshot {
                        label: &c.label,
                        round: c.round,
                        guardrails: &c.guardrails,
                        comparisons: &c.comparisons,
                        raw: &[],
                        note: Some(
                            "raw query results were not captured (the controller restarted before writing this snapshot); the guardrail summaries are the engine's, re-derived from the journal",
                        ),
                    },
                );
                self.write(&artifact, text.as_bytes())?;
            }
        }
        Ok(())
    }
}

/// How a decided run ended, in the runbook's time (the plan's `time_scale` undone).
struct Ended {
    /// `rolled back at T+8m`.
    head: String,
    /// `ROLLBACK: ttfv_p95: canary value 2400 breached …` (the verdict and its reasons).
    detail: String,
}

impl Ended {
    fn of(facts: &RunFacts, decision: &Decision) -> Ended {
        let started = facts.started.unwrap_or(decision.at);
        // Anything but a promotion leaves the canary at 0 %.
        let action = if matches!(decision.verdict, Verdict::Promote) {
            "promoted"
        } else {
            "rolled back"
        };
        let reasons: Vec<String> = decision
            .verdict
            .reasons()
            .iter()
            .map(ToString::to_string)
            .collect();
        let name = decision.verdict.name();
        Ended {
            head: format!(
                "{action} at {}",
                stamp::runbook_offset(started, decision.at, facts.plan.time_scale)
            ),
            detail: if reasons.is_empty() {
                name.to_owned()
            } else {
                format!("{name}: {}", reasons.join("; "))
            },
        }
    }

    /// `rolled back at T+8m, before {what} (ROLLBACK: …)`.
    fn before(&self, what: &str) -> String {
        format!("{}, before {what} ({})", self.head, self.detail)
    }
}

/// A plan offset (wall time) in the runbook's time: `T+30m`.
fn runbook_at(plan: &Plan, offset: Duration) -> String {
    let wall = i64::try_from(offset.as_millis()).unwrap_or(i64::MAX);
    stamp::runbook_offset(0, wall, plan.time_scale)
}

/// The artifacts whose contents the journal alone determines, because the run was decided before
/// the step that writes them: the snapshot of every checkpoint it did not reach, the burst's
/// transcript and summary when the burst never started (or is not planned), the isolation-probe
/// report when no probe run was asked for, and the check log when no check was due. Each comes
/// with the text that says why, naming the decision and when it was taken in runbook time
/// (`not reached: rolled back at T+8m, before T+30m (ROLLBACK: …)`).
///
/// Sealing writes these where the run left no file, and `canary verify` re-derives the same list
/// and requires the bundle's files to say exactly this. Empty for an undecided journal.
pub(crate) fn journal_placeholders(facts: &RunFacts) -> Vec<(Artifact, String)> {
    let (Some(started), Some(decision)) = (facts.started, &facts.decision) else {
        return Vec::new();
    };
    let ctx = RunContext {
        run_id: facts.run_id.clone(),
        started,
        time_scale: facts.plan.time_scale,
    };
    let plan = &facts.plan;
    let ended = Ended::of(facts, decision);
    let decided_offset = stamp::runbook_offset(started, decision.at, plan.time_scale);
    let mut out: Vec<(Artifact, String)> = Vec::new();

    let reached = facts.checkpoint_labels();
    for at in &plan.checkpoints {
        let label = plan.checkpoint_label(*at);
        let artifact = Artifact::Snapshot(label.clone());
        if reached.contains(&label) || out.iter().any(|(a, _)| *a == artifact) {
            continue;
        }
        let due_offset = runbook_at(plan, *at);
        let why = format!("not reached: {}", ended.before(&due_offset));
        let due = started.saturating_add(i64::try_from(at.as_millis()).unwrap_or(i64::MAX));
        let text = snapshot::not_reached_json(
            &ctx,
            &NotReached {
                label: &label,
                due,
                due_offset: &due_offset,
                why: &why,
                decision,
                decided_offset: &decided_offset,
            },
        );
        out.push((artifact, text));
    }

    let burst_why = match &facts.burst {
        BurstResult::NotPlanned => Some("not run: the plan has no load burst".to_owned()),
        BurstResult::NotStarted { due } => Some(format!(
            "not reached: {}",
            ended.before(&format!("the burst was due at {}", runbook_at(plan, *due)))
        )),
        BurstResult::NoResult { .. } | BurstResult::Done { .. } => None,
    };
    if let Some(why) = burst_why {
        let line = load::transcript_not_run(&why);
        out.push((Artifact::BurstTranscript, format!("{line}\n")));
        out.push((Artifact::LoadSummary, load::summary_not_run(&ctx, &why)));
    }

    if plan.probes && facts.probes.requested == 0 {
        let why = format!(
            "not reached: {}",
            ended.before("the first isolation probe run")
        );
        out.push((Artifact::IsolationProbes, load::probes_not_run(&ctx, &why)));
    }

    if facts.checks.is_empty() {
        let why = ended.before(&format!(
            "the first check at {}",
            runbook_at(plan, plan.check_log_interval)
        ));
        let mut text = check_log::no_check_due(&ctx, decision.at, &why);
        text.push('\n');
        out.push((Artifact::CheckLog, text));
    }
    out
}

/// Writes `<evidence_dir>/<run_id>/journal.jsonl` from the state store's copy of a run's journal
/// (its lines, header first), for a run taken over on a machine that never had its bundle.
/// Refuses a directory that already exists: a bundle here is resumed as it is.
pub fn rebuild_journal(
    evidence_dir: &Path,
    run_id: &str,
    lines: &[String],
) -> Result<(), BundleError> {
    check_name("the run id", run_id)?;
    let dir = evidence_dir.join(run_id);
    std::fs::create_dir_all(evidence_dir).map_err(io_error("create", evidence_dir))?;
    std::fs::create_dir(&dir).map_err(io_error("create", &dir))?;
    let mut text = String::new();
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
    // Parse before writing: a journal that does not read would only fail later, half-resumed.
    canary_core::journal::parse(&text).map_err(|source| {
        BundleError::Journal(crate::JournalFileError::Parse {
            path: dir.join(Artifact::Journal.file_name("")),
            source,
        })
    })?;
    let name = Artifact::Journal.file_name("");
    durable::write_atomic(&dir, &name, text.as_bytes()).map_err(io_error("write", &dir))?;
    Ok(())
}
