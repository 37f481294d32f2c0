//! Bundles built from real engine runs: complete for their outcome, verified, and honest about
//! steps the run never reached.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::path::Path;

use canary_core::engine::Reading;
use canary_core::{ArmRole, Event, Verdict};
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
            "CANARY_ISOLATION_PROBES_20251019T140000Z.json",
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
    assert_eq!(report.files, 14);
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
    assert_eq!(manifest.files.len(), 14);
    assert_eq!(manifest.config_sha256, CONFIG_SHA);
    assert_eq!(manifest.signer.public_key, fixed_signer().public_hex());
    assert_eq!(manifest.decision.verdict, "PROMOTE");
    assert_eq!(manifest.started, "2025-10-19T14:00:00Z");
    assert!(manifest.files.windows(2).all(|w| w[0].name < w[1].name));
}

/// The snapshot `label` of the bundle in `dir`, parsed.
fn snapshot(dir: &Path, label: &str) -> serde_json::Value {
    let path = dir.join(format!("CANARY_SNAPSHOT_{label}_20251019T140000Z.json"));
    serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap()
}

#[test]
fn a_rollback_keeps_the_snapshots_it_reached_and_says_why_the_others_were_not() {
    let tmp = tempfile::tempdir().unwrap();
    let scenario = Scenario::healthy()
        .canary(|g, m| (g == "ttfv_p95" && m >= 20.0).then(|| Reading::value(2400.0)));
    let (dir, sealed) = run_and_seal(tmp.path(), scenario, &fixed_signer());
    let Verdict::Rollback { reasons } = &sealed.verdict else {
        panic!("expected a rollback, got {:?}", sealed.verdict);
    };
    assert_eq!(reasons[0].guardrail(), Some("ttfv_p95"));
    let reason = reasons[0].to_string();

    let report = verify(&dir, None).unwrap();
    assert_eq!(report.checkpoints, ["T15"]);
    let t15 = snapshot(&dir, "T15");
    assert_eq!(t15["reached"], true);
    assert_eq!(t15["guardrails"].as_array().unwrap().len(), 3);
    // T30 and T60 were never reached: their files say so, with the decision that ended the run.
    for (label, due) in [("T30", "T+30m"), ("T60", "T+60m")] {
        let s = snapshot(&dir, label);
        assert_eq!(s["reached"], false, "{s:#}");
        assert_eq!(s["label"], label);
        assert_eq!(s["due_offset"], due);
        assert_eq!(
            s["not_reached"],
            format!("not reached: rolled back at T+25m, before {due} (ROLLBACK: {reason})"),
            "{s:#}"
        );
        assert_eq!(s["decision"]["verdict"], "ROLLBACK");
        assert_eq!(s["decision"]["offset"], "T+25m");
        assert_eq!(s["decision"]["at"], "2025-10-19T14:25:00Z");
        assert_eq!(s["guardrails"], serde_json::json!([]));
    }
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
fn a_rollback_at_t8_still_has_all_three_snapshots_saying_they_were_not_reached() {
    let tmp = tempfile::tempdir().unwrap();
    let scenario = Scenario::healthy().event(
        8.0,
        Event::IsolationLeak {
            observer: "user_2".into(),
            owner: "user_1".into(),
            arm: ArmRole::Canary,
        },
    );
    let (dir, sealed) = run_and_seal(tmp.path(), scenario, &fixed_signer());
    assert_eq!(sealed.verdict.name(), "ROLLBACK");
    let reason = sealed.verdict.reasons()[0].to_string();

    let report = verify(&dir, Some(&fixed_signer().public_hex())).unwrap();
    assert!(report.checkpoints.is_empty(), "{:?}", report.checkpoints);
    for (label, due) in [("T15", "T+15m"), ("T30", "T+30m"), ("T60", "T+60m")] {
        let s = snapshot(&dir, label);
        assert_eq!(s["reached"], false, "{s:#}");
        assert_eq!(
            s["not_reached"],
            format!("not reached: rolled back at T+8m, before {due} (ROLLBACK: {reason})"),
            "{s:#}"
        );
        assert_eq!(s["decision"]["offset"], "T+8m");
    }
    assert_eq!(snapshot(&dir, "T15")["due"], "2025-10-19T14:15:00Z");
    assert_eq!(snapshot(&dir, "T60")["due"], "2025-10-19T15:00:00Z");
    // The burst and the first probes ran at T+5: their own files, not placeholders.
    let summary =
        fs::read_to_string(dir.join("CANARY_LOAD_SUMMARY_20251019T140000Z.json")).unwrap();
    assert!(summary.contains("\"successful\": 100"), "{summary}");
    let probes =
        fs::read_to_string(dir.join("CANARY_ISOLATION_PROBES_20251019T140000Z.json")).unwrap();
    assert!(probes.contains("\"verdict\": \"clean\""), "{probes}");
}

#[test]
fn on_a_compressed_clock_the_placeholders_speak_runbook_time() {
    let tmp = tempfile::tempdir().unwrap();
    // The demo's 60-times clock: 8 wall seconds are T+8 in the runbook.
    let scenario = Scenario::healthy().plan(plan().compressed(60.0)).event(
        8.0 / 60.0,
        Event::Abort {
            by: "alice".into(),
            reason: "wrong build".into(),
        },
    );
    let (dir, _) = run_and_seal(tmp.path(), scenario, &fixed_signer());
    verify(&dir, None).unwrap();
    let t15 = snapshot(&dir, "T15");
    assert_eq!(
        t15["not_reached"],
        "not reached: rolled back at T+8m, before T+15m (ROLLBACK: aborted by alice: wrong build)"
    );
    // Due 15 wall seconds after the start.
    assert_eq!(t15["due"], "2025-10-19T14:00:15Z");
    assert_eq!(t15["decision"]["at"], "2025-10-19T14:00:08Z");
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

    let why = "(ROLLBACK: aborted by alice: wrong build)";
    let burst = fs::read_to_string(dir.join("canary_load_burst_20251019T140000Z.log")).unwrap();
    assert_eq!(
        burst,
        format!(
            "# load burst not reached: rolled back at T+2m, before the burst was due at T+5m {why}\n"
        )
    );
    let summary =
        fs::read_to_string(dir.join("CANARY_LOAD_SUMMARY_20251019T140000Z.json")).unwrap();
    assert!(summary.contains("\"ran\": false"));
    let probes: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(dir.join("CANARY_ISOLATION_PROBES_20251019T140000Z.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(probes["ran"], false);
    assert_eq!(
        probes["why"],
        format!("not reached: rolled back at T+2m, before the first isolation probe run {why}")
    );
    let checks = fs::read_to_string(dir.join("CANARY_METRICS_CHECK_20251019T140000Z.log")).unwrap();
    assert_eq!(
        checks,
        format!(
            "T+02:00 2025-10-19T14:02:00Z no check was due: rolled back at T+2m, before the first check at T+5m {why}\n"
        )
    );
    for label in ["T15", "T30", "T60"] {
        let s = snapshot(&dir, label);
        assert_eq!(s["reached"], false, "{s:#}");
        assert!(
            s["not_reached"]
                .as_str()
                .unwrap()
                .starts_with("not reached: rolled back at T+2m, before T+"),
            "{s:#}"
        );
    }
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
    let mut bundle = Bundle::create(tmp.path(), "run-1", T0).unwrap();
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
                rebuilt: None,
                signer: &signer,
            },
        )
        .unwrap_err();
    assert!(matches!(err, BundleError::Undecided { .. }), "{err}");
    assert!(err.to_string().contains("before the engine decided"));
}

#[test]
fn a_compressed_run_writes_its_artifacts_in_the_runbooks_time() {
    // The runbook on the demo's 60-times compressed clock: a wall second is a runbook minute.
    // ttfv_p95 breaches from the runbook's T+12 and rolls back after its `for` of 5 runbook
    // minutes, at T+20 (the first 5-minute evaluation after T+15).
    let tmp = tempfile::tempdir().unwrap();
    let scenario = Scenario::healthy()
        .plan(plan().compressed(60.0))
        .canary(|g, m| (g == "ttfv_p95" && m >= 12.0 / 60.0).then(|| Reading::value(2400.0)));
    let (dir, sealed) = run_and_seal(tmp.path(), scenario, &fixed_signer());
    assert!(matches!(sealed.verdict, Verdict::Rollback { .. }));
    let read = |name: &str| fs::read_to_string(dir.join(name)).unwrap();
    let clock = "clock     compressed 60×: T+ offsets and durations are runbook time, instants wall-clock time\n";

    let checks = read("CANARY_METRICS_CHECK_20251019T140000Z.log");
    let offsets: Vec<&str> = checks
        .lines()
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert_eq!(
        offsets.iter().step_by(3).copied().collect::<Vec<_>>(),
        ["T+05:00", "T+10:00", "T+15:00", "T+20:00"],
        "{checks}"
    );
    // Beside each runbook offset, the wall-clock instant: 5 seconds after the start.
    assert!(
        checks.starts_with("T+05:00 2025-10-19T14:00:05Z ✓ ttfv_p95"),
        "{checks}"
    );
    assert!(
        checks.contains("(must < 1500 for 5m, rollback)"),
        "{checks}"
    );
    assert!(!checks.contains("for 5s"), "{checks}");

    let decision = read(artifact::DECISION_FINAL);
    assert!(decision.contains(clock), "{decision}");
    assert!(
        decision.contains("window    1h (runbook time; compressed 60×: 1m of wall time)\n"),
        "{decision}"
    );
    assert!(
        decision.contains("1. ttfv_p95: canary value 2400 breached `< 1500` for 5m (rollback)"),
        "{decision}"
    );
    assert!(
        decision.contains("decided   2025-10-19T14:00:20Z (T+20:00)"),
        "{decision}"
    );
    assert!(decision.contains("T15 at T+15:00"), "{decision}");
    assert!(!decision.contains("5s"), "{decision}");
    let outcome = read(artifact::ROLLBACK_FINAL);
    assert!(outcome.contains("for 5m (rollback)"), "{outcome}");

    let t15 = snapshot(&dir, "T15");
    assert_eq!(t15["offset"], "15m");
    assert_eq!(t15["offset_ms"], 15_000);
    assert_eq!(t15["clock"], clock["clock     ".len()..].trim_end());
    assert_eq!(t15["guardrails"][0]["summary"]["for"], "5s");
    assert_eq!(t15["guardrails"][0]["summary"]["time_scale"], 60.0);
    let t30 = snapshot(&dir, "T30");
    assert_eq!(t30["reached"], false);
    assert_eq!(t30["due_offset"], "T+30m");
    assert_eq!(t30["decision"]["offset"], "T+20m");
    assert_eq!(
        t30["decision"]["reasons"][0],
        "ttfv_p95: canary value 2400 breached `< 1500` for 5m (rollback)"
    );
    for name in [
        artifact::DECISION_FINAL,
        "CANARY_LB_DIFF_20251019T140000Z.txt",
    ] {
        assert!(read(name).contains(clock), "{name}");
    }

    // The manifest keeps the engine's reason as data (on the run's clock) and its text in the
    // runbook's time; the bundle verifies, placeholders and all.
    let manifest = Manifest::parse(&fs::read(dir.join(artifact::MANIFEST)).unwrap()).unwrap();
    let reason = serde_json::to_value(&manifest.decision.reasons[0]).unwrap();
    assert_eq!(reason["breached_for"], "5s");
    assert_eq!(reason["time_scale"], 60.0);
    assert!(manifest.decision.reasons_text[0].ends_with("for 5m (rollback)"));
    let report = verify(&dir, Some(&fixed_signer().public_hex())).unwrap();
    assert!(matches!(report.verdict, Verdict::Rollback { .. }));
}
