//! A promotion the load balancer does not take: its own outcome in every artifact, re-derived
//! from the journal by `canary verify`, never "PROMOTED TO 100%".

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;

use canary_core::{Event, Input, Verdict};
use canary_evidence::artifact;
use canary_evidence::render::decision::{PROMOTED_LINE, PROMOTION_FAILED_LINE};
use canary_evidence::{Manifest, verify};
use common::*;

#[test]
fn a_failed_promotion_leaves_a_rollback_bundle_that_verifies_with_its_own_verdict() {
    let tmp = tempfile::tempdir().unwrap();
    let mut runner = Runner::start(tmp.path(), Scenario::healthy());
    assert!(runner.run_until(200.0));
    assert_eq!(runner.engine.decision().unwrap().verdict, Verdict::Promote);
    // The controller's report: the load balancer did not take 100 %.
    runner.feed(Input::Event {
        at: at_min(60.1),
        event: Event::PromotionFailed {
            detail: "haproxy answered weight 5 for main, expected 100".into(),
        },
    });
    let dir = runner.bundle.dir().to_path_buf();
    let sealed = runner.seal(&fixed_signer(), None);
    assert!(matches!(sealed.verdict, Verdict::PromotionFailed { .. }));
    assert_eq!(sealed.verdict.exit_code(), 5);

    // `canary verify` replays the journal to the same outcome.
    let report = verify(&dir, Some(&fixed_signer().public_hex())).unwrap();
    assert_eq!(report.verdict, sealed.verdict);
    let manifest = Manifest::parse(&fs::read(dir.join(artifact::MANIFEST)).unwrap()).unwrap();
    assert_eq!(manifest.decision.verdict, "PROMOTION_FAILED");

    // Traffic went back to the baseline: the rollback file, saying why, never "promoted".
    assert!(!dir.join(artifact::PROMOTION_FINAL).exists());
    let outcome = fs::read_to_string(dir.join(artifact::ROLLBACK_FINAL)).unwrap();
    assert_eq!(outcome.lines().next(), Some(PROMOTION_FAILED_LINE));
    assert!(
        outcome.contains("verdict   PROMOTION_FAILED")
            && outcome.contains("haproxy answered weight 5")
            && outcome.contains("The release is NOT out"),
        "{outcome}"
    );
    let decision = fs::read_to_string(dir.join(artifact::DECISION_FINAL)).unwrap();
    assert!(
        decision.contains("DECISION: PROMOTION_FAILED")
            && decision.contains("could not be applied or verified"),
        "{decision}"
    );
    for text in [&outcome, &decision] {
        assert!(!text.contains(PROMOTED_LINE), "{text}");
        assert!(!text.contains("PROMOTED TO 100%"), "{text}");
    }
}
