//! Bundles built from real engine runs: complete for their outcome, verified, and honest about
//! steps the run never reached.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;

use canary_core::engine::Reading;
use canary_core::{Event, Verdict};
use canary_evidence::artifact::{self, Artifact};
use canary_evidence::render::decision::{PROMOTED_LINE, ROLLED_BACK_LINE};
use canary_evidence::{Bundle, BundleError, Manifest, verify};
use common::*;

#[test]
fn a_healthy_run_leaves_a_complete_promote_bundle_that_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, sealed) = run_and_seal(tmp.path(), Scenario::healthy(), &fixed_signer());
    assert_eq!(sealed.verdict, Verdict::Promote);

    let names: Vec<String> = files(&dir).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "CANARY_ALERTS_20251019T140000Z.txt",
            "CANARY_DASHBOARDS_20251019T140000Z.txt",
            "CANARY_DECISION_FINAL.txt",
            "CANARY_LB_DIFF_20251019T140000Z.txt",
            "CANARY_LOAD_SUMMARY_20251019T140000Z.json",
            "CANARY_METRICS_CHECK_20251019T140000Z.log",
            "CANARY_PROMOTION_FINAL.txt",
            "CANARY_SNAPSHOT_T15_20251019T140000Z.json",
            "CANARY_SNAPSHOT_T30_20251019T140000Z.json",
            "CANARY_SNAPSHOT_T60_20251019T140000Z.json",
            "canary_load_burst_20251019T140000Z.log",
            "journal.jsonl",
            "manifest.json",
            "manifest.sig",
            "report.html",
        ]
    );

    let report = verify(&dir, Some(&fixed_signer().public_hex())).unwrap();
    assert_eq!(report.verdict, Verdict::Promote);
    assert_eq!(report.authorised_by, "engine");
    assert_eq!(report.checkpoints, ["T15", "T30", "T60"]);
    assert_eq!(report.files, 13);
    assert_eq!(report.fingerprint, fixed_signer().fingerprint());

    let promotion = fs::read_to_string(dir.join(artifact::PROMOTION_FINAL)).unwrap();
    assert_eq!(promotion.lines().next(), Some(PROMOTED_LINE));
    // 60 minutes of 5-minute checks, three guardrails each.
    let checks = fs::read_to_string(dir.join("CANARY_METRICS_CHECK_20251019T140000Z.log")).unwrap();
    assert_eq!(checks.lines().count(), 12 * 3);
    assert!(checks.lines().all(|l| l.contains(" ✓ ")), "{checks}");
    assert!(checks.starts_with("T+05:00 2025-10-19T14:05:00Z ✓ ttfv_p95"));
    // The burst transcript has one line per request.
    let burst = fs::read_to_string(dir.join("canary_load_burst_20251019T140000Z.log")).unwrap();
    assert_eq!(burst.lines().count(), 100);
    // The manifest lists every other file and its signer.
    let manifest = Manifest::parse(&fs::read(dir.join(artifact::MANIFEST)).unwrap()).unwrap();
    assert_eq!(manifest.files.len(), 13);
    assert_eq!(manifest.config_sha256, CONFIG_SHA);
    assert_eq!(manifest.signer.public_key, fixed_signer().public_hex());
    assert_eq!(manifest.decision.verdict, "PROMOTE");
    assert_eq!(manifest.started, "2025-10-19T14:00:00Z");
    assert!(manifest.files.windows(2).all(|w| w[0].name < w[1].name));
}

#[test]
fn a_rollback_keeps_only_the_snapshots_it_reached_and_states_its_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let scenario = Scenario::healthy()
        .canary(|g, m| (g == "ttfv_p95" && m >= 20.0).then(|| Reading::value(2400.0)));
    let (dir, sealed) = run_and_seal(tmp.path(), scenario, &fixed_signer());
    let Verdict::Rollback { reasons } = &sealed.verdict else {
        panic!("expected a rollback, got {:?}", sealed.verdict);
    };
    assert_eq!(reasons[0].guardrail(), Some("ttfv_p95"));

    let report = verify(&dir, None).unwrap();
    assert_eq!(report.checkpoints, ["T15"]);
    assert!(
        dir.join("CANARY_SNAPSHOT_T15_20251019T140000Z.json")
            .exists()
    );
    assert!(
        !dir.join("CANARY_SNAPSHOT_T30_20251019T140000Z.json")
            .exists()
    );
    assert!(!dir.join(artifact::PROMOTION_FINAL).exists());

    let rollback = fs::read_to_string(dir.join(artifact::ROLLBACK_FINAL)).unwrap();
    let mut lines = rollback.lines();
    assert_eq!(lines.next(), Some(ROLLED_BACK_LINE));
    assert!(rollback.contains("Reason: ttfv_p95: canary value 2400 breached `< 1500` for 5m"));
    let decision = fs::read_to_string(dir.join(artifact::DECISION_FINAL)).unwrap();
    assert!(decision.contains("DECISION: ROLLBACK"));
    assert!(decision.contains("FAIL    ttfv_p95"), "{decision}");
    // The check log shows the breach as ✗.
    let checks = fs::read_to_string(dir.join("CANARY_METRICS_CHECK_20251019T140000Z.log")).unwrap();
    assert!(
        checks
            .lines()
            .any(|l| l.starts_with("T+20:00") && l.contains("✗ ttfv_p95"))
    );
}

#[test]
fn an_early_abort_still_has_every_runbook_artifact_stating_why_a_step_did_not_apply() {
    let tmp = tempfile::tempdir().unwrap();
    let scenario = Scenario::healthy().event(
        2.0,
        Event::Abort {
            by: "alice".into(),
            reason: "wrong build".into(),
        },
    );
    let (dir, sealed) = run_and_seal(tmp.path(), scenario, &fixed_signer());
    assert_eq!(sealed.verdict.name(), "ROLLBACK");
    let report = verify(&dir, None).unwrap();
    assert_eq!(report.authorised_by, "alice");
    assert!(report.checkpoints.is_empty());

    let burst = fs::read_to_string(dir.join("canary_load_burst_20251019T140000Z.log")).unwrap();
    assert_eq!(
        burst,
        "# no load burst request was sent: the run ended (ROLLBACK) at T+02:00, before the burst was due at T+05:00\n"
    );
    let summary =
        fs::read_to_string(dir.join("CANARY_LOAD_SUMMARY_20251019T140000Z.json")).unwrap();
    assert!(summary.contains("\"ran\": false"));
    let checks = fs::read_to_string(dir.join("CANARY_METRICS_CHECK_20251019T140000Z.log")).unwrap();
    assert_eq!(
        checks,
        "T+02:00 2025-10-19T14:02:00Z no check was due: the run ended at T+02:00 before the first check at T+05:00\n"
    );
    let rollback = fs::read_to_string(dir.join(artifact::ROLLBACK_FINAL)).unwrap();
    assert!(rollback.contains("Reason: aborted by alice: wrong build"));
    assert!(rollback.contains("authorised by: alice"));
}

#[test]
fn an_inconclusive_run_rolls_back_with_a_rollback_file_that_says_inconclusive() {
    let tmp = tempfile::tempdir().unwrap();
    // db_pool (block-promotion) has no data at the decision.
    let scenario =
        Scenario::healthy().canary(|g, m| (g == "db_pool" && m >= 55.0).then_some(Reading::NoData));
    let (dir, sealed) = run_and_seal(tmp.path(), scenario, &fixed_signer());
    assert_eq!(sealed.verdict.name(), "INCONCLUSIVE");
    verify(&dir, None).unwrap();
    let rollback = fs::read_to_string(dir.join(artifact::ROLLBACK_FINAL)).unwrap();
    assert!(rollback.starts_with(ROLLED_BACK_LINE));
    assert!(rollback.contains("verdict   INCONCLUSIVE"));
    assert!(rollback.contains("Reason: db_pool: no data at the decision"));
}

#[test]
fn a_bundle_directory_is_never_reused_and_names_are_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = Bundle::create(tmp.path(), "run-1", T0).unwrap();
    bundle.create_journal(&plan()).unwrap();
    assert!(matches!(
        Bundle::create(tmp.path(), "run-1", T0),
        Err(BundleError::NotEmpty { .. })
    ));
    // An empty directory left by a failed start is fine.
    fs::create_dir(tmp.path().join("run-2")).unwrap();
    Bundle::create(tmp.path(), "run-2", T0).unwrap();
    for bad in ["", "../escape", ".hidden", "a/b", "run 1"] {
        let err = Bundle::create(tmp.path(), bad, T0).unwrap_err();
        assert!(matches!(err, BundleError::BadName { .. }), "{bad:?}: {err}");
        assert!(err.to_string().contains("letters, digits"));
    }
    assert!(matches!(
        Bundle::create(tmp.path(), "run-3", i64::MAX),
        Err(BundleError::BadTime { .. })
    ));
    assert_eq!(
        bundle.path_of(&Artifact::Snapshot("T15".into())),
        tmp.path()
            .join("run-1/CANARY_SNAPSHOT_T15_20251019T140000Z.json")
    );
}

#[test]
fn sealing_an_undecided_run_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut runner = Runner::start(tmp.path(), Scenario::healthy());
    assert!(!runner.run_until(20.0));
    let traffic = canary_evidence::FinalTraffic {
        canary_percent: 5,
        verification: canary_evidence::Verification::NotChecked { why: "test".into() },
    };
    let signer = fixed_signer();
    let err = runner
        .bundle
        .seal(
            runner.journal,
            &canary_evidence::Seal {
                config_sha256: CONFIG_SHA,
                finished: at_min(20.0),
                traffic: &traffic,
                cooldown_override: None,
                signer: &signer,
            },
        )
        .unwrap_err();
    assert!(matches!(err, BundleError::Undecided { .. }), "{err}");
    assert!(err.to_string().contains("before the engine decided"));
}
