//! What a journal says about the isolation probes: a run counts as clean by the engine's own
//! rule, and journals written before the probe verdict was recorded tell the same facts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use canary_core::journal;
use canary_evidence::facts::RunFacts;
use canary_evidence::render::decision::probe_line;
use common::*;

/// The journal of a healthy run, as written today.
fn healthy_journal() -> String {
    let tmp = tempfile::tempdir().unwrap();
    let mut runner = Runner::start(tmp.path(), Scenario::healthy());
    assert!(runner.run_until(200.0));
    std::fs::read_to_string(runner.bundle.dir().join("journal.jsonl")).unwrap()
}

fn facts(text: &str) -> RunFacts {
    RunFacts::derive(&journal::parse(text).unwrap()).unwrap()
}

const CLEAN: &str = r#""event":"probes_completed","verdict":"clean","pairs":20,"leaks":0"#;

#[test]
fn probe_runs_count_as_clean_by_their_verdict() {
    let text = healthy_journal();
    let runs = text.matches(CLEAN).count();
    assert!(runs > 0, "the healthy run has clean probe runs:\n{text}");

    let clean = facts(&text);
    assert_eq!(clean.probes.completed as usize, runs);
    assert_eq!(clean.probes.clean as usize, runs);
    assert_eq!(clean.probes.pairs, 20 * runs as u64);
    assert_eq!(clean.decision.unwrap().verdict.name(), "PROMOTE");

    // The same pairs probed, but isolation not proven: no clean run, no promotion.
    let unproven = facts(&text.replace(
        CLEAN,
        r#""event":"probes_completed","verdict":"unproven","pairs":20,"leaks":0"#,
    ));
    assert_eq!(unproven.probes.completed as usize, runs);
    assert_eq!(unproven.probes.clean, 0);
    assert_eq!(unproven.probes.pairs, 20 * runs as u64);
    assert!(
        probe_line(&unproven.probes).ends_with("NO CLEAN RUN"),
        "{}",
        probe_line(&unproven.probes)
    );
    assert_eq!(unproven.decision.unwrap().verdict.name(), "INCONCLUSIVE");
}

#[test]
fn a_journal_without_probe_verdicts_tells_the_same_facts() {
    let text = healthy_journal();
    let old = text.replace(CLEAN, r#""event":"probes_completed","pairs":20,"leaks":0"#);
    assert_ne!(old, text);
    let (new, old) = (facts(&text), facts(&old));
    assert_eq!(old.probes, new.probes);
    assert_eq!(old.decision, new.decision);
    assert_eq!(old.checks, new.checks);
}
