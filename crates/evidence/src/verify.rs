//! `canary verify DIR`: is this bundle complete for its outcome, unchanged since it was signed,
//! signed by the expected key, and does its decision follow from its journal?
//!
//! A step the run never reached still has its file, stating why (a checkpoint's snapshot after
//! an early rollback, the burst's files when it never started, ...): those files are required,
//! and where the journal alone determines their text, they must hold exactly that text.
//!
//! Every check runs and every problem is reported, each naming its file; the error's kind is
//! the most serious one found, in this order: [`ProblemKind::BadSignature`] (nothing signed can
//! be trusted), [`ProblemKind::Tampered`], [`ProblemKind::Incomplete`],
//! [`ProblemKind::DecisionMismatch`].

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use canary_core::Verdict;

use crate::artifact::{Artifact, JOURNAL, MANIFEST, SIGNATURE};
use crate::bundle;
use crate::facts::RunFacts;
use crate::journal_file;
use crate::manifest::{Manifest, sha256_hex};
use crate::signing::{self, parse_public_key};
use crate::stamp;

/// What kind of problem a bundle has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProblemKind {
    /// The signature is missing, malformed, invalid, or by another key than the pinned one.
    BadSignature,
    /// A file differs from its hash, or a file is present that the manifest does not list.
    Tampered,
    /// A file the outcome requires is missing, or the run never finished (no manifest).
    Incomplete,
    /// The journal does not replay to the manifest's decision (verdict, reasons, authoriser),
    /// or the bundle's files contradict it.
    DecisionMismatch,
}

impl ProblemKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemKind::BadSignature => "bad signature",
            ProblemKind::Tampered => "tampered",
            ProblemKind::Incomplete => "incomplete",
            ProblemKind::DecisionMismatch => "decision does not follow from the journal",
        }
    }
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem, naming the file it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub kind: ProblemKind,
    pub file: String,
    pub detail: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} ({})", self.file, self.detail, self.kind)
    }
}

/// Why a bundle failed verification.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("cannot read the bundle directory {dir}: {source}; check the path")]
    Unreadable { dir: PathBuf, source: io::Error },
    #[error("{}", failed_message(.dir, .problems))]
    Failed {
        dir: PathBuf,
        /// Every problem found, most serious first. Never empty.
        problems: Vec<Problem>,
    },
}

fn failed_message(dir: &Path, problems: &[Problem]) -> String {
    let kind = problems.first().map_or("failed", |p| p.kind.as_str());
    let mut s = format!(
        "the evidence bundle {} failed verification ({kind}):",
        dir.display()
    );
    for p in problems {
        s.push_str(&format!("\n  - {p}"));
    }
    s
}

impl VerifyError {
    /// The most serious kind of problem found (`None` when the directory was unreadable).
    pub fn kind(&self) -> Option<ProblemKind> {
        match self {
            VerifyError::Unreadable { .. } => None,
            VerifyError::Failed { problems, .. } => problems.first().map(|p| p.kind),
        }
    }

    /// Every problem found.
    pub fn problems(&self) -> &[Problem] {
        match self {
            VerifyError::Unreadable { .. } => &[],
            VerifyError::Failed { problems, .. } => problems,
        }
    }

    /// Whether any problem is of `kind`.
    pub fn has(&self, kind: ProblemKind) -> bool {
        self.problems().iter().any(|p| p.kind == kind)
    }
}

/// What a valid signature proves about who signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SignerTrust {
    /// The bundle is signed by the public key the verifier pinned: the publisher signed it.
    Pinned,
    /// No key was pinned: the signature matches the key the manifest itself names, which anyone
    /// who re-signs a changed bundle with their own key can also achieve. Consistent, not
    /// proven.
    SelfConsistent,
}

/// A bundle that verified.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct VerifyReport {
    pub run_id: String,
    pub service: String,
    pub verdict: Verdict,
    pub authorised_by: String,
    pub started: String,
    pub finished: String,
    pub public_key: String,
    pub fingerprint: String,
    /// Whether the signer was checked against a pinned key.
    pub signer_trust: SignerTrust,
    /// Files whose hashes matched (every file but the manifest and its signature).
    pub files: usize,
    /// Checkpoints the run reached, whose snapshots are present.
    pub checkpoints: Vec<String>,
    pub cooldown_override: Option<String>,
}

/// Verifies the bundle in `dir`. With `expected_public_key` (64 hex characters), the signature
/// must also be by that key; without it the report says the signer is only self-consistent
/// ([`SignerTrust::SelfConsistent`]). A bundle holds regular files only: a symbolic link, a
/// directory or anything else in it is a problem, and nothing is read through a link.
pub fn verify(dir: &Path, expected_public_key: Option<&str>) -> Result<VerifyReport, VerifyError> {
    let mut found = Found::default();

    let (present, irregular) = list_files(dir).map_err(|source| VerifyError::Unreadable {
        dir: dir.to_path_buf(),
        source,
    })?;
    for (name, what) in &irregular {
        found.add(
            ProblemKind::Tampered,
            name,
            format!("is {what}, not a regular file: a bundle holds only the files it signed"),
        );
    }
    if irregular
        .iter()
        .any(|(n, _)| n == MANIFEST || n == SIGNATURE)
    {
        return Err(found.into_error(dir));
    }

    // The manifest.
    let Some(manifest_bytes) = read_optional(dir, MANIFEST) else {
        found.add(
            ProblemKind::Incomplete,
            MANIFEST,
            "missing: the run never finished sealing its bundle (it crashed or is still running); finish it with `canary resume RUN_ID`".to_owned(),
        );
        return Err(found.into_error(dir));
    };
    let manifest = match Manifest::parse(&manifest_bytes) {
        Ok(m) => m,
        Err(e) => {
            found.add(
                ProblemKind::Tampered,
                MANIFEST,
                format!("does not parse as a canary manifest ({e}): it was changed or replaced"),
            );
            return Err(found.into_error(dir));
        }
    };

    // The signature.
    let signer_key = parse_public_key(&manifest.signer.public_key, "the manifest's signer key");
    match (&signer_key, read_optional(dir, SIGNATURE)) {
        (Err(e), _) => found.add(ProblemKind::BadSignature, MANIFEST, e.to_string()),
        (Ok(_), None) => found.add(
            ProblemKind::BadSignature,
            SIGNATURE,
            "missing: the manifest is unsigned".to_owned(),
        ),
        (Ok(key), Some(sig)) => match std::str::from_utf8(&sig) {
            Err(_) => found.add(
                ProblemKind::BadSignature,
                SIGNATURE,
                signing::SignatureError::Malformed.to_string(),
            ),
            Ok(sig) => {
                if let Err(e) = signing::verify_hex(key, &manifest_bytes, sig) {
                    found.add(ProblemKind::BadSignature, SIGNATURE, e.to_string());
                }
            }
        },
    }
    if let (Some(expected), Ok(key)) = (expected_public_key, &signer_key) {
        match parse_public_key(expected, "the expected public key") {
            Err(e) => found.add(ProblemKind::BadSignature, SIGNATURE, e.to_string()),
            Ok(expected_key) if expected_key != *key => found.add(
                ProblemKind::BadSignature,
                SIGNATURE,
                format!(
                    "signed by key {} ({}), not by the expected key {}",
                    manifest.signer.public_key,
                    manifest.signer.fingerprint,
                    expected.trim().to_lowercase()
                ),
            ),
            Ok(_) => {}
        }
    }

    // Hashes, and nothing unlisted.
    let mut listed = BTreeSet::new();
    for entry in &manifest.files {
        if !is_plain_name(&entry.name) || entry.name == MANIFEST || entry.name == SIGNATURE {
            found.add(
                ProblemKind::Tampered,
                MANIFEST,
                format!(
                    "lists {:?}, which cannot be a file of the bundle",
                    entry.name
                ),
            );
            continue;
        }
        listed.insert(entry.name.clone());
        if irregular.iter().any(|(n, _)| *n == entry.name) {
            continue;
        }
        match fs::read(dir.join(&entry.name)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => found.add(
                ProblemKind::Incomplete,
                &entry.name,
                "missing: the manifest lists it but it is not in the bundle".to_owned(),
            ),
            Err(e) => found.add(
                ProblemKind::Incomplete,
                &entry.name,
                format!("cannot be read: {e}"),
            ),
            Ok(bytes) => {
                let actual = sha256_hex(&bytes);
                if actual != entry.sha256 {
                    found.add(
                        ProblemKind::Tampered,
                        &entry.name,
                        format!(
                            "changed after signing: SHA-256 is {actual}, the manifest says {}",
                            entry.sha256
                        ),
                    );
                }
            }
        }
    }
    for name in &present {
        let reported = irregular.iter().any(|(n, _)| n == name);
        if name != MANIFEST && name != SIGNATURE && !listed.contains(name) && !reported {
            found.add(
                ProblemKind::Tampered,
                name,
                "not listed in the manifest: it was added after signing".to_owned(),
            );
        }
    }

    // The journal, replayed.
    let stamp = stamp::run_stamp(manifest.started_ms);
    let mut checkpoints = Vec::new();
    // What the journal says the run never reached, and the text each such file must hold.
    let mut placeholders: Vec<(Artifact, String)> = Vec::new();
    let mut probes_planned = false;
    let verdict = manifest_verdict(&manifest);
    let journal_bytes = if irregular.iter().any(|(n, _)| n == JOURNAL) {
        Err(io::Error::other("not a regular file"))
    } else {
        fs::read(dir.join(JOURNAL))
    };
    match journal_bytes {
        Err(_) => found.add(
            ProblemKind::Incomplete,
            JOURNAL,
            "missing or unreadable: the decision cannot be re-derived".to_owned(),
        ),
        Ok(bytes) => match journal_file::parse_bytes(&dir.join(JOURNAL), &bytes) {
            Err(e) => found.add(
                ProblemKind::DecisionMismatch,
                JOURNAL,
                format!("does not parse, so the decision cannot be re-derived: {e}"),
            ),
            Ok(journal) if journal.torn_tail => found.add(
                ProblemKind::Incomplete,
                JOURNAL,
                "ends with a torn line: the run crashed mid-write and was never resumed".to_owned(),
            ),
            Ok(journal) => match RunFacts::derive(&journal) {
                Err(e) => found.add(
                    ProblemKind::DecisionMismatch,
                    JOURNAL,
                    format!("the engine refuses its inputs on replay: {e}"),
                ),
                Ok(facts) => {
                    checkpoints = facts.checkpoint_labels();
                    probes_planned = facts.plan.probes;
                    placeholders = bundle::journal_placeholders(&facts);
                    check_decision(&manifest, &facts, &mut found);
                }
            },
        },
    }

    // Completeness for the outcome.
    match (&stamp, &verdict) {
        (None, _) => found.add(
            ProblemKind::Tampered,
            MANIFEST,
            format!("its start time {} is not a valid time", manifest.started_ms),
        ),
        (_, None) => found.add(
            ProblemKind::Tampered,
            MANIFEST,
            format!("unknown verdict {:?}", manifest.decision.verdict),
        ),
        (Some(stamp), Some(verdict)) => {
            // Every planned checkpoint has its snapshot: reached, or stating why not.
            let mut snapshots = checkpoints.clone();
            for (artifact, _) in &placeholders {
                if let Artifact::Snapshot(label) = artifact {
                    snapshots.push(label.clone());
                }
            }
            let mut required = Artifact::required(verdict, &snapshots);
            if probes_planned {
                required.push(Artifact::IsolationProbes);
            }
            for artifact in required {
                let name = artifact.file_name(stamp);
                if !present.contains(&name) && !listed.contains(&name) {
                    found.add(
                        ProblemKind::Incomplete,
                        &name,
                        format!("missing: every {} bundle must have it", verdict.name()),
                    );
                }
            }
            let readable =
                |name: &str| present.contains(name) && !irregular.iter().any(|(n, _)| n == name);
            for (artifact, text) in &placeholders {
                let name = artifact.file_name(stamp);
                if readable(&name) && fs::read(dir.join(&name)).is_ok_and(|b| b != text.as_bytes())
                {
                    found.add(
                        ProblemKind::DecisionMismatch,
                        &name,
                        "differs from what its journal determines: the run was decided before this step, so the file must say so, as sealing writes it from the journal".to_owned(),
                    );
                }
            }
            for label in &checkpoints {
                let name = Artifact::Snapshot(label.clone()).file_name(stamp);
                if readable(&name) && says_not_reached(&dir.join(&name)) {
                    found.add(
                        ProblemKind::DecisionMismatch,
                        &name,
                        format!("says {label} was not reached, but the journal reached it"),
                    );
                }
            }
            let wrong = match verdict {
                Verdict::Promote => Artifact::RollbackFinal,
                _ => Artifact::PromotionFinal,
            };
            let wrong = wrong.file_name(stamp);
            if present.contains(&wrong) {
                found.add(
                    ProblemKind::DecisionMismatch,
                    &wrong,
                    format!("present, but the verdict is {}", verdict.name()),
                );
            }
        }
    }

    if !found.0.is_empty() {
        return Err(found.into_error(dir));
    }
    Ok(VerifyReport {
        run_id: manifest.run_id.clone(),
        service: manifest.service.clone(),
        // An unknown verdict name was reported as a problem above, so `verdict` is known here.
        verdict: verdict.unwrap_or(Verdict::Inconclusive { reasons: vec![] }),
        authorised_by: manifest.decision.authorised_by.clone(),
        started: manifest.started.clone(),
        finished: manifest.finished.clone(),
        public_key: manifest.signer.public_key.clone(),
        fingerprint: manifest.signer.fingerprint.clone(),
        signer_trust: if expected_public_key.is_some() {
            SignerTrust::Pinned
        } else {
            SignerTrust::SelfConsistent
        },
        files: manifest.files.len(),
        checkpoints,
        cooldown_override: manifest.cooldown_override.clone(),
    })
}

/// The problems found so far.
#[derive(Default)]
struct Found(Vec<Problem>);

impl Found {
    fn add(&mut self, kind: ProblemKind, file: &str, detail: String) {
        self.0.push(Problem {
            kind,
            file: file.to_owned(),
            detail,
        });
    }

    /// The error, most serious problems first (stable within a kind).
    fn into_error(mut self, dir: &Path) -> VerifyError {
        self.0.sort_by_key(|p| p.kind);
        VerifyError::Failed {
            dir: dir.to_path_buf(),
            problems: self.0,
        }
    }
}

/// The manifest's verdict as a `Verdict`, when its name is known.
fn manifest_verdict(m: &Manifest) -> Option<Verdict> {
    Verdict::from_name(&m.decision.verdict, m.decision.reasons.clone())
}

/// Compares the replayed decision with the manifest's.
fn check_decision(m: &Manifest, facts: &RunFacts, found: &mut Found) {
    let mismatch = ProblemKind::DecisionMismatch;
    if facts.run_id != m.run_id {
        found.add(
            mismatch,
            JOURNAL,
            format!(
                "belongs to run {:?}, the manifest to run {:?}",
                facts.run_id, m.run_id
            ),
        );
    }
    if facts.plan.service != m.service || facts.plan.arms != m.arms {
        found.add(
            mismatch,
            JOURNAL,
            "its plan's service or arms differ from the manifest's".to_owned(),
        );
    }
    if facts.started != Some(m.started_ms) {
        found.add(
            mismatch,
            JOURNAL,
            format!(
                "the run starts at {} but the manifest says {}",
                facts
                    .started
                    .map_or_else(|| "no Start input".to_owned(), stamp::rfc3339),
                m.started
            ),
        );
    }
    let Some(d) = &facts.decision else {
        found.add(
            mismatch,
            JOURNAL,
            format!(
                "replays to no decision, but the manifest records {}",
                m.decision.verdict
            ),
        );
        return;
    };
    if d.verdict.name() != m.decision.verdict {
        found.add(
            mismatch,
            JOURNAL,
            format!(
                "replays to {} but the manifest records {}",
                d.verdict.name(),
                m.decision.verdict
            ),
        );
        return;
    }
    // Compare reasons as JSON: NaN values (a guardrail without a value) compare equal there.
    let as_json = |r: &[canary_core::Reason]| serde_json::to_value(r).ok();
    if as_json(d.verdict.reasons()) != as_json(&m.decision.reasons) {
        let replayed: Vec<String> = d
            .verdict
            .reasons()
            .iter()
            .map(ToString::to_string)
            .collect();
        found.add(
            mismatch,
            JOURNAL,
            format!(
                "replays to the reasons [{}] but the manifest records [{}]",
                replayed.join("; "),
                m.decision.reasons_text.join("; ")
            ),
        );
    }
    if d.authorised_by != m.decision.authorised_by {
        found.add(
            mismatch,
            JOURNAL,
            format!(
                "replays to a decision authorised by {:?}, the manifest says {:?}",
                d.authorised_by, m.decision.authorised_by
            ),
        );
    }
    if d.at != m.decision.at_ms {
        found.add(
            mismatch,
            JOURNAL,
            format!(
                "replays to a decision at {}, the manifest says {}",
                stamp::rfc3339(d.at),
                m.decision.at
            ),
        );
    }
}

/// Whether the snapshot at `path` is the placeholder of a checkpoint not reached.
fn says_not_reached(path: &Path) -> bool {
    fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .is_some_and(|v| v["reached"] == serde_json::Value::Bool(false))
}

/// A bare file name: no separators, not `.` or `..`.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0'])
}

fn read_optional(dir: &Path, name: &str) -> Option<Vec<u8>> {
    fs::read(dir.join(name)).ok()
}

/// Entries that are not regular files, with what each is instead (`a symbolic link`, ...).
type Irregular = Vec<(String, &'static str)>;

/// Every entry in `dir` (files, directories, anything), by name, and those that are not
/// regular files with what they are instead (the link itself is looked at, never followed);
/// names that are not UTF-8 are shown lossily (and can never match the manifest).
fn list_files(dir: &Path) -> io::Result<(BTreeSet<String>, Irregular)> {
    let mut names = BTreeSet::new();
    let mut irregular = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let kind = entry.file_type()?;
        if !kind.is_file() {
            let what = if kind.is_symlink() {
                "a symbolic link"
            } else if kind.is_dir() {
                "a directory"
            } else {
                "a special file"
            };
            irregular.push((name.clone(), what));
        }
        names.insert(name);
    }
    Ok((names, irregular))
}
