//! The run history in a real SQLite file: runs, verdicts, cooldowns and overrides.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use canary_core::verdict::{NoDataCause, Reason};
use canary_core::{Millis, Verdict};
use canary_evidence::history::{self, Cooldown, History, HistoryError, Override, RunStart};

const HOUR: Millis = 3_600_000;
const T0: Millis = 1_760_882_400_000;
const DAY: Duration = Duration::from_secs(24 * 3600);

fn start(history: &History, run_id: &str, service: &str, started: Millis) {
    history
        .record_start(&RunStart {
            run_id: run_id.into(),
            service: service.into(),
            started,
            bundle: PathBuf::from(format!("/evidence/{run_id}")),
            cooldown_override: None,
        })
        .unwrap();
}

fn rollback() -> Verdict {
    Verdict::Rollback {
        reasons: vec![Reason::Aborted {
            by: "alice".into(),
            reason: "wrong build".into(),
        }],
    }
}

fn promotion_failed() -> Verdict {
    Verdict::PromotionFailed {
        reasons: vec![Reason::PromotionFailed {
            detail: "weight read back 5, expected 100".into(),
        }],
    }
}

fn inconclusive() -> Verdict {
    Verdict::Inconclusive {
        reasons: vec![Reason::NoData {
            guardrail: "db_pool".into(),
            cause: NoDataCause::Empty,
        }],
    }
}

/// `(run id, service, finished hours after T0, verdict)`; each run started an hour earlier.
type Past = (&'static str, &'static str, i64, Verdict);

fn history_with(dir: &Path, past: &[Past]) -> History {
    let history = History::open(dir).unwrap();
    for (run_id, service, finished_h, verdict) in past {
        let finished = T0 + finished_h * HOUR;
        start(&history, run_id, service, finished - HOUR);
        history.record_finish(run_id, finished, verdict).unwrap();
    }
    history
}

/// `(case, past runs, now in hours after T0, expected cooldown: (run id, until in hours))`.
type CooldownCase = (&'static str, Vec<Past>, i64, Option<(&'static str, i64)>);

#[test]
fn cooldown_table() {
    let cases: Vec<CooldownCase> = vec![
        ("no history", vec![], 0, None),
        (
            "rollback 1 h ago",
            vec![("a", "relay", 0, rollback())],
            1,
            Some(("a", 24)),
        ),
        (
            "inconclusive also cools down",
            vec![("a", "relay", 0, inconclusive())],
            23,
            Some(("a", 24)),
        ),
        (
            "exactly at the end of the window",
            vec![("a", "relay", 0, rollback())],
            24,
            None,
        ),
        (
            "after the window",
            vec![("a", "relay", 0, rollback())],
            30,
            None,
        ),
        (
            "a failed promotion cools down like a rollback",
            vec![("a", "relay", 0, promotion_failed())],
            2,
            Some(("a", 24)),
        ),
        (
            "a later promote ends a failed promotion's cooldown",
            vec![
                ("a", "relay", 0, promotion_failed()),
                ("b", "relay", 3, Verdict::Promote),
            ],
            4,
            None,
        ),
        (
            "a promote does not cool down",
            vec![("a", "relay", 0, Verdict::Promote)],
            1,
            None,
        ),
        (
            "a later promote ends the cooldown",
            vec![
                ("a", "relay", 0, rollback()),
                ("b", "relay", 5, Verdict::Promote),
            ],
            6,
            None,
        ),
        (
            "the latest rollback counts",
            vec![
                ("a", "relay", 0, rollback()),
                ("b", "relay", 10, rollback()),
            ],
            25,
            Some(("b", 34)),
        ),
        (
            "other services do not count",
            vec![("a", "billing", 0, rollback())],
            1,
            None,
        ),
    ];
    for (case, past, now_h, expected) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let history = history_with(tmp.path(), &past);
        let got = history
            .cooldown_active("relay", T0 + now_h * HOUR, DAY)
            .unwrap()
            .map(|c| (c.run_id.clone(), (c.until - T0) / HOUR));
        let expected = expected.map(|(id, until)| (id.to_owned(), until));
        assert_eq!(got, expected, "{case}");
    }
}

#[test]
fn an_unfinished_run_does_not_start_a_cooldown_and_appears_in_the_list() {
    let tmp = tempfile::tempdir().unwrap();
    let history = history_with(tmp.path(), &[("a", "relay", 0, Verdict::Promote)]);
    start(&history, "b", "relay", T0 + HOUR);
    assert_eq!(
        history
            .cooldown_active("relay", T0 + 2 * HOUR, DAY)
            .unwrap(),
        None
    );
    let list = history.list(10).unwrap();
    assert_eq!(
        list.iter().map(|r| r.run_id.as_str()).collect::<Vec<_>>(),
        ["b", "a"]
    );
    assert_eq!(list[0].verdict, None);
    assert_eq!(list[0].finished, None);
    assert_eq!(list[1].verdict.as_deref(), Some("PROMOTE"));
    assert_eq!(history.list(1).unwrap().len(), 1);
}

#[test]
fn an_override_is_recorded_with_the_run_and_its_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let history = history_with(tmp.path(), &[("a", "relay", 0, rollback())]);
    let cooldown = history
        .cooldown_active("relay", T0 + HOUR, DAY)
        .unwrap()
        .unwrap();
    assert_eq!(
        cooldown,
        Cooldown {
            run_id: "a".into(),
            verdict: "ROLLBACK".into(),
            finished: T0,
            until: T0 + 24 * HOUR,
        }
    );
    history
        .record_start(&RunStart {
            run_id: "b".into(),
            service: "relay".into(),
            started: T0 + HOUR,
            bundle: "/evidence/b".into(),
            cooldown_override: Some(Override {
                reason: "hotfix for the RLS regression, approved by bob".into(),
                overridden_run: cooldown.run_id.clone(),
            }),
        })
        .unwrap();
    history
        .record_finish("b", T0 + 2 * HOUR, &rollback())
        .unwrap();
    let b = history.get("b").unwrap().unwrap();
    assert_eq!(
        b.cooldown_override,
        Some(Override {
            reason: "hotfix for the RLS regression, approved by bob".into(),
            overridden_run: "a".into(),
        })
    );
    assert_eq!(b.reasons, "aborted by alice: wrong build");
    assert_eq!(b.bundle, PathBuf::from("/evidence/b"));
    // The overridden run's own rollback starts a new cooldown.
    let again = history
        .cooldown_active("relay", T0 + 3 * HOUR, DAY)
        .unwrap()
        .unwrap();
    assert_eq!(again.run_id, "b");
}

#[test]
fn runs_survive_reopening_and_ids_are_unique() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let history = history_with(tmp.path(), &[("a", "relay", 0, inconclusive())]);
        let err = history
            .record_start(&RunStart {
                run_id: "a".into(),
                service: "relay".into(),
                started: T0,
                bundle: "/x".into(),
                cooldown_override: None,
            })
            .unwrap_err();
        assert!(matches!(err, HistoryError::Duplicate { .. }), "{err}");
        let err = history.record_finish("zzz", T0, &rollback()).unwrap_err();
        assert!(matches!(err, HistoryError::Unknown { .. }), "{err}");
    }
    let history = History::open(tmp.path()).unwrap();
    assert_eq!(history.path(), tmp.path().join(history::FILE));
    let a = history.get("a").unwrap().unwrap();
    assert_eq!(a.verdict.as_deref(), Some("INCONCLUSIVE"));
    assert_eq!(
        a.reasons,
        "db_pool: no data at the decision (the query returned no series)"
    );
    // The schema version is recorded.
    let conn = rusqlite::Connection::open(tmp.path().join(history::FILE)).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 1);
}

#[test]
fn a_history_from_a_newer_canary_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let conn = rusqlite::Connection::open(tmp.path().join(history::FILE)).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = History::open(tmp.path()).unwrap_err();
    assert!(
        matches!(err, HistoryError::TooNew { found: 99, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("upgrade canary"));
}

#[test]
fn a_failed_promotion_is_its_own_entry_with_its_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let history = history_with(tmp.path(), &[("a", "relay", 0, promotion_failed())]);
    let run = history.get("a").unwrap().unwrap();
    assert_eq!(run.verdict.as_deref(), Some("PROMOTION_FAILED"));
    assert!(
        run.reasons.contains("weight read back 5, expected 100")
            && run.reasons.contains("traffic returned to the baseline"),
        "{}",
        run.reasons
    );
    let cooldown = history
        .cooldown_active("relay", T0 + HOUR, DAY)
        .unwrap()
        .unwrap();
    assert_eq!(cooldown.verdict, "PROMOTION_FAILED");
}
