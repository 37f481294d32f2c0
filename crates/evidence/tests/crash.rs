//! Crashes: a whole-file write interrupted before its rename, a journal line cut short, and a
//! controller that dies mid-run and is resumed from its journal.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs::{self, OpenOptions};
use std::io::Write;

use canary_core::engine;
use canary_core::journal::{self, Header};
use canary_core::{Engine, Verdict};
use canary_evidence::artifact::{self, Artifact};
use canary_evidence::durable::{self, Staged};
use canary_evidence::journal_file::{self, JournalFileError};
use canary_evidence::{Bundle, BundleError, JournalWriter, ProblemKind, verify};
use common::*;

#[test]
fn a_crash_between_temp_write_and_rename_leaves_no_partial_artifact() {
    let tmp = tempfile::tempdir().unwrap();
    let mut runner = Runner::start(tmp.path(), Scenario::healthy());
    assert!(!runner.run_until(40.0));
    let dir = runner.bundle.dir().to_path_buf();
    let decision = Artifact::DecisionFinal.file_name(runner.bundle.stamp());
    let snapshot = dir.join(Artifact::Snapshot("T30".into()).file_name(runner.bundle.stamp()));
    let snapshot_before = fs::read(&snapshot).unwrap();

    // The controller dies while writing: a new file, and a replacement of an existing one.
    let staged = Staged::write(&dir, &decision, b"CANARY DECISION FINAL\npartial").unwrap();
    drop(staged);
    let staged = Staged::write(
        &dir,
        snapshot.file_name().unwrap().to_str().unwrap(),
        b"{\"half",
    )
    .unwrap();
    drop(staged);
    drop(runner);

    assert!(
        !dir.join(&decision).exists(),
        "a partial artifact appeared under its final name"
    );
    assert_eq!(
        fs::read(&snapshot).unwrap(),
        snapshot_before,
        "the old snapshot was damaged"
    );
    assert!(dir.join(durable::temp_name(&decision)).exists());

    // Such a bundle is incomplete, never complete.
    let err = verify(&dir, None).unwrap_err();
    assert_eq!(err.kind(), Some(ProblemKind::Incomplete), "{err}");
    assert!(err.to_string().contains("manifest.json: missing"));
}

#[test]
fn journal_append_crash_mid_line_resume_drops_the_torn_line_and_replays_the_same() {
    // The reference run, written whole.
    let tmp = tempfile::tempdir().unwrap();
    let mut reference = Runner::start(&tmp.path().join("a"), Scenario::healthy());
    assert!(reference.run_until(200.0));
    let inputs = reference.inputs.clone();
    let plan = reference.engine.plan().clone();
    let expected = engine::replay(plan.clone(), inputs.iter()).unwrap();
    assert_eq!(
        expected.decision.as_ref().unwrap().verdict,
        Verdict::Promote
    );

    for (case, cut) in [("mid-line", 0.5), ("before-newline", 1.0)] {
        let path = tmp.path().join(format!("{case}.jsonl"));
        let header = Header {
            format: journal::FORMAT,
            run_id: "r1".into(),
            plan: plan.clone(),
        };
        let mut writer = JournalWriter::create(&path, &header).unwrap();
        let split = inputs.len() / 2;
        for input in &inputs[..split] {
            writer.append(input).unwrap();
        }
        drop(writer);
        // The crash: part of the next line reaches the disk, without its newline.
        let line = journal::line(&inputs[split]);
        let keep = ((line.len() - 1) as f64 * cut) as usize;
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(&line.as_bytes()[..keep])
            .unwrap();
        let read = journal_file::read(&path).unwrap();
        assert!(read.torn_tail, "{case}");
        assert_eq!(read.inputs.len(), split, "{case}");

        let (mut writer, journal) = JournalWriter::resume(&path).unwrap();
        assert!(journal.torn_tail, "{case}: resume reports the dropped line");
        assert_eq!(journal.inputs, inputs[..split], "{case}");
        assert_eq!(writer.inputs(), split);
        // The resumed engine is the replayed one; the runtime re-sends the lost input.
        for input in &inputs[split..] {
            writer.append(input).unwrap();
        }
        let resumed = journal_file::read(&path).unwrap();
        assert!(!resumed.torn_tail);
        assert_eq!(resumed.inputs, inputs, "{case}");
        let replayed = engine::replay(plan.clone(), resumed.inputs.iter()).unwrap();
        assert_eq!(replayed, expected, "{case}");
    }
}

#[test]
fn a_controller_killed_mid_run_resumes_into_a_consistent_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    let mut runner = Runner::start(tmp.path(), Scenario::healthy());
    assert!(!runner.run_until(32.0));
    let dir = runner.bundle.dir().to_path_buf();
    let journal_path = dir.join(artifact::JOURNAL);
    // Die mid-append and mid-write of an artifact.
    drop(runner);
    OpenOptions::new()
        .append(true)
        .open(&journal_path)
        .unwrap()
        .write_all(b"{\"input\":\"tick\",\"at\":17")
        .unwrap();
    Staged::write(&dir, "CANARY_DECISION_FINAL.txt", b"partial").unwrap();
    assert_eq!(
        verify(&dir, None).unwrap_err().kind(),
        Some(ProblemKind::Incomplete)
    );

    // `canary resume`: reopen, drop the torn line, rebuild the engine by replay, continue.
    let (bundle, journal_writer, journal) =
        Bundle::resume(tmp.path(), "relay-20251019T140000Z").unwrap();
    assert_eq!(bundle.started(), T0);
    assert_eq!(bundle.stamp(), "20251019T140000Z");
    assert!(
        !dir.join(durable::temp_name("CANARY_DECISION_FINAL.txt"))
            .exists()
    );
    assert!(journal.torn_tail);
    let mut engine = Engine::new(journal.header.plan.clone()).unwrap();
    for input in &journal.inputs {
        engine.apply(input).unwrap();
    }
    let mut resumed = Runner::resume(bundle, journal_writer, engine, journal.inputs.clone());
    assert!(resumed.run_until(200.0));
    let sealed = resumed.seal(&fixed_signer(), None);
    assert_eq!(sealed.verdict, Verdict::Promote);
    let report = verify(&dir, Some(&fixed_signer().public_hex())).unwrap();
    assert_eq!(report.checkpoints, ["T15", "T30", "T60"]);

    // A sealed bundle cannot be reopened.
    assert!(matches!(
        Bundle::resume(tmp.path(), "relay-20251019T140000Z"),
        Err(BundleError::AlreadySealed { .. })
    ));
    assert!(matches!(
        Bundle::resume(tmp.path(), "no-such-run"),
        Err(BundleError::NotFound { .. })
    ));
}

#[test]
fn a_journal_that_never_got_its_header_cannot_be_resumed() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("journal.jsonl");
    fs::write(&path, b"{\"format\":1,\"run_id\":\"r").unwrap();
    let err = JournalWriter::resume(&path).unwrap_err();
    assert!(matches!(err, JournalFileError::TornHeader { .. }), "{err}");
    assert!(err.to_string().contains("start a new run"));
    // And an existing journal is never overwritten by a new run.
    let header = Header {
        format: journal::FORMAT,
        run_id: "r".into(),
        plan: plan(),
    };
    let err = JournalWriter::create(&path, &header).unwrap_err();
    assert!(matches!(err, JournalFileError::Exists { .. }));
}

#[test]
fn a_run_that_crashed_before_its_start_cannot_be_resumed() {
    let tmp = tempfile::tempdir().unwrap();
    let mut bundle = Bundle::create(tmp.path(), "r2", T0).unwrap();
    drop(bundle.create_journal(&plan()).unwrap());
    let err = Bundle::resume(tmp.path(), "r2").unwrap_err();
    assert!(matches!(err, BundleError::NeverStarted { .. }), "{err}");
    assert!(err.to_string().contains("start a new run"));
}
