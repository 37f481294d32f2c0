//! One suite, two backends: every test below runs against the embedded store (SQLite in a
//! temporary state directory) and against a real PostgreSQL started for it. Two `Store`
//! handles on one database stand for two machines. Then what only one backend has: an old
//! `history.sqlite` migrated forward; PostgreSQL's wrong password, wrong database, unreachable
//! port and restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use canary_core::verdict::{NoDataCause, Reason};
use canary_core::{Millis, Secret, Verdict};
use canary_state::{
    Acquired, Cooldown, Holder, Location, Override, RunStart, SCHEMA_VERSION, Store, StoreError,
};
use canary_testkit::postgres::{self as pg_server, Postgres};

const HOUR: Millis = 3_600_000;
const T0: Millis = 1_760_882_400_000;
const DAY: Duration = Duration::from_secs(24 * 3600);

// --- the two backends ------------------------------------------------------------------------

/// A database both handles of a test open.
enum Backend {
    Embedded(tempfile::TempDir),
    Postgres(Postgres),
}

impl Backend {
    fn embedded() -> Backend {
        Backend::Embedded(tempfile::tempdir().unwrap())
    }

    fn postgres() -> Backend {
        Backend::Postgres(Postgres::start())
    }

    fn location(&self) -> Location {
        match self {
            Backend::Embedded(dir) => Location::new(None, dir.path()),
            Backend::Postgres(pg) => Location::new(Some(Secret::new(pg.url())), Path::new("/-")),
        }
    }

    /// A new handle on the database: another machine.
    async fn open(&self) -> Store {
        Store::open(&self.location()).await.unwrap()
    }

    /// Writes schema version `version` into the database, as a newer canary would.
    async fn stamp_schema_version(&self, version: i64) {
        match self {
            Backend::Embedded(dir) => {
                let conn = rusqlite::Connection::open(dir.path().join(canary_state::FILE)).unwrap();
                conn.execute(
                    "INSERT INTO schema_version (version, applied_ms) VALUES (?1, 0)",
                    [version],
                )
                .unwrap();
                conn.pragma_update(None, "user_version", version).unwrap();
            }
            Backend::Postgres(pg) => {
                let client = pg_client(&pg.url()).await;
                client
                    .execute(
                        "INSERT INTO schema_version (version, applied_ms) VALUES ($1, 0)",
                        &[&version],
                    )
                    .await
                    .unwrap();
            }
        }
    }

    /// Creates the store as canary 0.1 left it: schema version 1, the runs table alone, with
    /// one finished run whose cooldown was overridden.
    async fn create_version_1(&self) {
        match self {
            Backend::Embedded(dir) => {
                // The history before the shared store: `PRAGMA user_version`, no table for it.
                let conn = rusqlite::Connection::open(dir.path().join(canary_state::FILE)).unwrap();
                conn.execute_batch(&format!("{OLD_RUNS_SQLITE}\nPRAGMA user_version = 1;"))
                    .unwrap();
                conn.execute_batch(OLD_ROWS).unwrap();
            }
            Backend::Postgres(pg) => {
                let client = pg_client(&pg.url()).await;
                client
                    .batch_execute(&format!(
                        "CREATE TABLE schema_version (version BIGINT PRIMARY KEY NOT NULL, applied_ms BIGINT NOT NULL);
                         INSERT INTO schema_version VALUES (1, 0);
                         {}
                         {OLD_ROWS}",
                        OLD_RUNS_SQLITE.replace("INTEGER", "BIGINT")
                    ))
                    .await
                    .unwrap();
            }
        }
    }
}

/// The runs table of schema version 1, as canary 0.1 created it.
const OLD_RUNS_SQLITE: &str = "CREATE TABLE runs (
        run_id          TEXT PRIMARY KEY NOT NULL,
        service         TEXT NOT NULL,
        started_ms      INTEGER NOT NULL,
        finished_ms     INTEGER,
        verdict         TEXT,
        reasons         TEXT NOT NULL DEFAULT '',
        bundle          TEXT NOT NULL,
        override_reason TEXT,
        overridden_run  TEXT
    );
    CREATE INDEX runs_by_service ON runs (service, finished_ms);
    CREATE INDEX runs_by_start ON runs (started_ms);";

const OLD_ROWS: &str = "INSERT INTO runs VALUES
    ('old-a', 'relay', 1760878800000, 1760882400000, 'ROLLBACK', 'aborted by alice: wrong build', '/evidence/old-a', NULL, NULL),
    ('old-b', 'relay', 1760886000000, 1760889600000, 'ROLLBACK', 'aborted by alice: again', '/evidence/old-b', 'hotfix (by bob@ci-7)', 'old-a');";

async fn pg_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

/// Each test, once per backend: `embedded::NAME` and `postgres::NAME`.
macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        mod embedded {
            $(
                #[test]
                fn $test() {
                    super::run(super::Backend::embedded(), super::$test);
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                fn $test() {
                    super::run(super::Backend::postgres(), super::$test);
                }
            )*
        }
    };
}

on_both_backends!(
    history_round_trip,
    cooldown_table,
    a_cooldown_holds_on_every_machine_and_its_override_is_recorded,
    one_lock_per_service_among_racing_controllers,
    a_lapsed_lease_is_taken_over_by_exactly_one,
    renewing_keeps_the_lock_and_releasing_frees_it,
    journal_lines_are_stored_once_in_order,
    a_version_1_store_is_migrated_forward,
    a_newer_schema_is_refused_naming_both_versions,
    first_opens_at_once_migrate_once,
);

/// Runs `test` on a multi-threaded runtime; the backend is stopped after it.
fn run(backend: Backend, test: impl AsyncFnOnce(&Backend)) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(test(&backend));
}

impl Backend {
    /// The schema versions the database records as applied.
    async fn schema_versions(&self) -> Vec<i64> {
        match self {
            Backend::Embedded(dir) => {
                let conn = rusqlite::Connection::open(dir.path().join(canary_state::FILE)).unwrap();
                let user_version: i64 = conn
                    .query_row("PRAGMA user_version", [], |r| r.get(0))
                    .unwrap();
                // An older canary reads `user_version` and refuses what it does not know.
                assert_eq!(user_version, SCHEMA_VERSION);
                let mut stmt = conn
                    .prepare("SELECT version FROM schema_version ORDER BY version")
                    .unwrap();
                stmt.query_map([], |r| r.get(0))
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap()
            }
            Backend::Postgres(pg) => pg_client(&pg.url())
                .await
                .query("SELECT version FROM schema_version ORDER BY version", &[])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect(),
        }
    }
}

// --- helpers ---------------------------------------------------------------------------------

fn start(run_id: &str, service: &str, started: Millis, host: &str) -> RunStart {
    RunStart {
        run_id: run_id.into(),
        service: service.into(),
        started,
        bundle: PathBuf::from(format!("/evidence/{run_id}")),
        host: host.into(),
        operator: "alice".into(),
        cooldown_override: None,
    }
}

fn holder(run_id: &str, host: &str) -> Holder {
    Holder {
        run_id: run_id.into(),
        host: host.into(),
        operator: "alice".into(),
        pid: 4242,
        started: T0,
    }
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

/// Polls `condition` until it returns `Some`, failing after `timeout`.
async fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut condition: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = condition().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `n` acquisitions of `service` at once, alternating between `stores`, each for its own run.
async fn race(stores: &[Store], service: &str, n: usize, ttl: Duration) -> Vec<Acquired> {
    let mut tasks = tokio::task::JoinSet::new();
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(n));
    for i in 0..n {
        let store = stores[i % stores.len()].clone();
        let (service, barrier) = (service.to_owned(), barrier.clone());
        tasks.spawn(async move {
            barrier.wait().await;
            store
                .acquire(
                    &service,
                    &holder(&format!("run-{i}"), &format!("machine-{}", i % 2)),
                    ttl,
                )
                .await
                .unwrap()
        });
    }
    tasks.join_all().await
}

/// The one lease among `results`; every other result is held by its run.
fn exactly_one_lease(results: Vec<Acquired>) -> canary_state::Lease {
    let (leases, held): (Vec<_>, Vec<_>) = results
        .into_iter()
        .partition(|a| matches!(a, Acquired::Lease(_)));
    assert_eq!(leases.len(), 1, "exactly one lease: {leases:?}");
    let Some(Acquired::Lease(lease)) = leases.into_iter().next() else {
        unreachable!()
    };
    for h in held {
        let Acquired::Held(h) = h else { unreachable!() };
        assert_eq!(h.holder.run_id, lease.run_id, "{h:?}");
        assert_eq!((h.since, h.expires), (lease.since, lease.expires));
    }
    lease
}

// --- the suite -------------------------------------------------------------------------------

async fn history_round_trip(b: &Backend) {
    let store = b.open().await;
    store
        .record_start(&start("a", "relay", T0, "ci-1"))
        .await
        .unwrap();
    store
        .record_finish("a", T0 + HOUR, &promotion_failed())
        .await
        .unwrap();
    store
        .record_start(&start("b", "relay", T0 + 2 * HOUR, "ci-2"))
        .await
        .unwrap();

    let a = store.get("a").await.unwrap().unwrap();
    assert_eq!(
        (a.service.as_str(), a.started, a.finished),
        ("relay", T0, Some(T0 + HOUR))
    );
    assert_eq!(a.verdict.as_deref(), Some("PROMOTION_FAILED"));
    assert!(
        a.reasons.contains("weight read back 5, expected 100")
            && a.reasons.contains("traffic returned to the baseline"),
        "{}",
        a.reasons
    );
    assert_eq!(a.bundle, PathBuf::from("/evidence/a"));
    assert_eq!(
        (a.host.as_deref(), a.operator.as_deref()),
        (Some("ci-1"), Some("alice"))
    );
    assert_eq!(a.cooldown_override, None);

    // Newest first; an unfinished run is listed without a verdict.
    let list = store.list(10).await.unwrap();
    assert_eq!(
        list.iter().map(|r| r.run_id.as_str()).collect::<Vec<_>>(),
        ["b", "a"]
    );
    assert_eq!((list[0].verdict.as_ref(), list[0].finished), (None, None));
    assert_eq!(store.list(1).await.unwrap().len(), 1);
    assert_eq!(store.get("zzz").await.unwrap(), None);

    // Ids are unique; a finish needs a start.
    let err = store
        .record_start(&start("a", "relay", T0, "ci-1"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Duplicate { .. }), "{err}");
    let err = store
        .record_finish("zzz", T0, &rollback())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unknown { .. }), "{err}");

    // Another handle (after a restart, or on another machine) reads the same.
    drop(store);
    let again = b.open().await;
    assert_eq!(again.get("a").await.unwrap(), Some(a));
}

/// `(case, past runs: (run id, service, finished hours after T0, verdict), now in hours after
/// T0, expected cooldown: (run id, until in hours))`. Each case has its own services.
type CooldownCase = (
    &'static str,
    Vec<(&'static str, &'static str, i64, Verdict)>,
    i64,
    Option<(&'static str, i64)>,
);

async fn cooldown_table(b: &Backend) {
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
    let store = b.open().await;
    for (i, (case, past, now_h, expected)) in cases.into_iter().enumerate() {
        let id = |run: &str| format!("{i}-{run}");
        for (run_id, service, finished_h, verdict) in &past {
            let finished = T0 + finished_h * HOUR;
            store
                .record_start(&start(
                    &id(run_id),
                    &format!("{service}-{i}"),
                    finished - HOUR,
                    "ci-1",
                ))
                .await
                .unwrap();
            store
                .record_finish(&id(run_id), finished, verdict)
                .await
                .unwrap();
        }
        let got = store
            .cooldown_active(&format!("relay-{i}"), T0 + now_h * HOUR, DAY)
            .await
            .unwrap()
            .map(|c| (c.run_id.clone(), (c.until - T0) / HOUR));
        let expected = expected.map(|(run, until)| (id(run), until));
        assert_eq!(got, expected, "{case}");
    }
}

async fn a_cooldown_holds_on_every_machine_and_its_override_is_recorded(b: &Backend) {
    let (machine_a, machine_b) = (b.open().await, b.open().await);
    machine_a
        .record_start(&start("r1", "relay", T0 - HOUR, "machine-a"))
        .await
        .unwrap();
    machine_a
        .record_finish("r1", T0, &rollback())
        .await
        .unwrap();

    let cooldown = machine_b
        .cooldown_active("relay", T0 + HOUR, DAY)
        .await
        .unwrap();
    assert_eq!(
        cooldown,
        Some(Cooldown {
            run_id: "r1".into(),
            verdict: "ROLLBACK".into(),
            finished: T0,
            until: T0 + 24 * HOUR,
        })
    );

    let overridden = Override {
        reason: "hotfix for the RLS regression, approved by bob".into(),
        overridden_run: "r1".into(),
        by: Some("bob".into()),
        host: Some("machine-b".into()),
    };
    machine_b
        .record_start(&RunStart {
            operator: "bob".into(),
            cooldown_override: Some(overridden.clone()),
            ..start("r2", "relay", T0 + HOUR, "machine-b")
        })
        .await
        .unwrap();
    machine_b
        .record_finish("r2", T0 + 2 * HOUR, &Verdict::Promote)
        .await
        .unwrap();

    let r2 = machine_a.get("r2").await.unwrap().unwrap();
    assert_eq!(r2.cooldown_override, Some(overridden));
    assert_eq!(
        (r2.host.as_deref(), r2.operator.as_deref()),
        (Some("machine-b"), Some("bob"))
    );
    // The promote ended the cooldown for everyone.
    assert_eq!(
        machine_a
            .cooldown_active("relay", T0 + 3 * HOUR, DAY)
            .await
            .unwrap(),
        None
    );
    let hosts: Vec<_> = machine_a
        .list(10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.host.unwrap_or_default())
        .collect();
    assert_eq!(hosts, ["machine-b", "machine-a"]);
}

async fn one_lock_per_service_among_racing_controllers(b: &Backend) {
    let stores = [b.open().await, b.open().await];
    let lease = exactly_one_lease(race(&stores, "relay", 16, Duration::from_secs(60)).await);
    assert_eq!(lease.service, "relay");

    // Whoever asks later is told who holds it, since when, from where.
    let held = stores[1].holder("relay").await.unwrap().unwrap();
    assert_eq!(held.holder.run_id, lease.run_id);
    assert_eq!(held.holder.operator, "alice");
    assert_eq!(held.holder.pid, 4242);
    assert!(held.holder.host.starts_with("machine-"), "{held:?}");
    assert_eq!((held.since, held.expires), (lease.since, lease.expires));
    assert!(held.at >= held.since && held.expires - held.at <= 60_000);

    // Other services are independent.
    for (store, service) in stores.iter().zip(["billing", "search"]) {
        let got = store
            .acquire(
                service,
                &holder(&format!("{service}-run"), "machine-c"),
                Duration::from_secs(60),
            )
            .await
            .unwrap();
        assert!(matches!(got, Acquired::Lease(_)), "{service}: {got:?}");
    }
    assert_eq!(stores[0].holder("unknown").await.unwrap(), None);
}

async fn a_lapsed_lease_is_taken_over_by_exactly_one(b: &Backend) {
    let (machine_a, machine_b) = (b.open().await, b.open().await);
    let Acquired::Lease(first) = machine_a
        .acquire(
            "relay",
            &holder("run-a", "machine-a"),
            Duration::from_secs(60),
        )
        .await
        .unwrap()
    else {
        panic!("the lock was free")
    };
    let got = machine_b
        .acquire(
            "relay",
            &holder("run-b", "machine-b"),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert!(
        matches!(&got, Acquired::Held(h) if h.holder.run_id == "run-a" && h.holder.host == "machine-a"),
        "{got:?}"
    );

    // Machine A stops renewing (its last renewal asked for little): the lease lapses on the
    // store's clock, and machine B takes the lock over.
    let short = machine_a
        .renew(&first, Duration::from_millis(200))
        .await
        .unwrap();
    let taken = eventually(
        "the lease to lapse",
        Duration::from_secs(20),
        async || match machine_b
            .acquire(
                "relay",
                &holder("run-b", "machine-b"),
                Duration::from_secs(60),
            )
            .await
            .unwrap()
        {
            Acquired::Lease(lease) => Some(lease),
            Acquired::Held(_) => None,
        },
    )
    .await;
    assert!(taken.generation > first.generation);
    assert!(taken.since >= short.expires, "{taken:?} {short:?}");

    // Machine A's lease is gone: renewing says who has it now; releasing frees nothing.
    let err = machine_a
        .renew(&first, Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err}");
    assert!(
        err.to_string().contains("run-b") && err.to_string().contains("machine-b"),
        "{err}"
    );
    assert!(!machine_a.release(&first).await.unwrap());

    // A lapsed lease with many takers at once: exactly one wins.
    machine_b
        .renew(&taken, Duration::from_millis(100))
        .await
        .unwrap();
    eventually("the lease to lapse", Duration::from_secs(20), async || {
        machine_a
            .holder("relay")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    let stores = [machine_a, machine_b];
    let winner = exactly_one_lease(race(&stores, "relay", 16, Duration::from_secs(60)).await);
    assert_eq!(winner.generation, taken.generation + 1);
}

async fn renewing_keeps_the_lock_and_releasing_frees_it(b: &Backend) {
    let (machine_a, machine_b) = (b.open().await, b.open().await);
    let Acquired::Lease(lease) = machine_a
        .acquire(
            "relay",
            &holder("run-a", "machine-a"),
            Duration::from_millis(500),
        )
        .await
        .unwrap()
    else {
        panic!("the lock was free")
    };
    let renewed = machine_a
        .renew(&lease, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        (renewed.generation, renewed.since),
        (lease.generation, lease.since)
    );
    assert!(renewed.expires > lease.expires);

    // Past the first lease's expiry (on the store's clock) the lock is still run-a's.
    let held = eventually(
        "the store's clock to pass the first expiry",
        Duration::from_secs(20),
        async || {
            machine_b
                .holder("relay")
                .await
                .unwrap()
                .filter(|h| h.at > lease.expires)
        },
    )
    .await;
    assert_eq!(held.holder.run_id, "run-a");
    assert_eq!(held.expires, renewed.expires);
    let got = machine_b
        .acquire(
            "relay",
            &holder("run-b", "machine-b"),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert!(
        matches!(&got, Acquired::Held(h) if h.holder.run_id == "run-a"),
        "{got:?}"
    );

    // Released: the next controller gets it at once; the released lease is no longer valid.
    assert!(machine_a.release(&renewed).await.unwrap());
    let got = machine_b
        .acquire(
            "relay",
            &holder("run-b", "machine-b"),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    let Acquired::Lease(next) = got else {
        panic!("released, yet {got:?}")
    };
    assert!(next.generation > renewed.generation);
    let err = machine_a
        .renew(&renewed, Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err}");
    assert!(!machine_a.release(&renewed).await.unwrap());
}

async fn journal_lines_are_stored_once_in_order(b: &Backend) {
    let (machine_a, machine_b) = (b.open().await, b.open().await);
    let line = |i: u64| format!(r#"{{"seq":{i},"input":"Tick","note":"é \"quoted\""}}"#);
    assert_eq!(machine_a.last_seq("run-1").await.unwrap(), None);
    for seq in 0..12 {
        machine_a.append("run-1", seq, &line(seq)).await.unwrap();
    }
    // The same line again (a controller catching up after an outage): nothing changes.
    machine_a.append("run-1", 2, &line(2)).await.unwrap();
    machine_b.append("run-1", 11, &line(11)).await.unwrap();
    // A different line where one is stored; a line past the end.
    let err = machine_b
        .append("run-1", 2, "something else")
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::JournalConflict { seq: 2, .. }),
        "{err}"
    );
    let err = machine_b.append("run-1", 14, &line(14)).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::JournalGap {
                seq: 14,
                expected: 12,
                ..
            }
        ),
        "{err}"
    );
    // Another machine carries on where the store ends.
    assert_eq!(machine_b.last_seq("run-1").await.unwrap(), Some(11));
    machine_b.append("run-1", 12, &line(12)).await.unwrap();

    let expected: Vec<String> = (0..13).map(line).collect();
    assert_eq!(machine_a.journal("run-1").await.unwrap(), expected);
    assert_eq!(
        machine_a.journal("run-2").await.unwrap(),
        Vec::<String>::new()
    );

    // Many writers of the same line: one row; of different lines: one wins, the rest conflict.
    let stores = [machine_a, machine_b];
    let mut same = tokio::task::JoinSet::new();
    let mut different = tokio::task::JoinSet::new();
    for i in 0..8 {
        let store = stores[i % 2].clone();
        same.spawn(async move { store.append("run-3", 0, "same").await });
        let store = stores[i % 2].clone();
        different.spawn(async move { store.append("run-4", 0, &format!("line {i}")).await });
    }
    assert!(same.join_all().await.iter().all(Result::is_ok));
    assert_eq!(stores[0].journal("run-3").await.unwrap(), ["same"]);
    let results = different.join_all().await;
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    assert!(
        results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| matches!(e, StoreError::JournalConflict { .. })),
        "{results:?}"
    );
}

async fn a_version_1_store_is_migrated_forward(b: &Backend) {
    b.create_version_1().await;
    let store = b.open().await;
    assert_eq!(
        b.schema_versions().await,
        (1..=SCHEMA_VERSION).collect::<Vec<_>>()
    );

    // The old runs read as before, without host or operator, and still cool the service down.
    let old_a = store.get("old-a").await.unwrap().unwrap();
    assert_eq!(old_a.verdict.as_deref(), Some("ROLLBACK"));
    assert_eq!((old_a.host, old_a.operator), (None, None));
    let old_b = store.get("old-b").await.unwrap().unwrap();
    assert_eq!(
        old_b.cooldown_override,
        Some(Override {
            reason: "hotfix (by bob@ci-7)".into(),
            overridden_run: "old-a".into(),
            by: None,
            host: None,
        })
    );
    let cooldown = store
        .cooldown_active("relay", T0 + 5 * HOUR, DAY)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (cooldown.run_id.as_str(), cooldown.until),
        ("old-b", T0 + 26 * HOUR)
    );

    // What the new schema adds works on the migrated store.
    store
        .record_start(&start("new", "relay", T0 + 30 * HOUR, "ci-9"))
        .await
        .unwrap();
    let listed: Vec<_> = store
        .list(10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.run_id)
        .collect();
    assert_eq!(listed, ["new", "old-b", "old-a"]);
    assert!(matches!(
        store
            .acquire("relay", &holder("new", "ci-9"), Duration::from_secs(60))
            .await
            .unwrap(),
        Acquired::Lease(_)
    ));
    store.append("new", 0, "{}").await.unwrap();

    // Opening again migrates nothing.
    drop(store);
    b.open().await;
    assert_eq!(
        b.schema_versions().await,
        (1..=SCHEMA_VERSION).collect::<Vec<_>>()
    );
}

async fn a_newer_schema_is_refused_naming_both_versions(b: &Backend) {
    drop(b.open().await);
    let newer = SCHEMA_VERSION + 97;
    b.stamp_schema_version(newer).await;
    let err = Store::open(&b.location()).await.unwrap_err();
    assert!(
        matches!(err, StoreError::TooNew { found, known, .. } if found == newer && known == SCHEMA_VERSION),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains(&format!("schema version {newer}"))
            && text.contains(&format!("understands ({SCHEMA_VERSION})"))
            && text.contains("upgrade canary"),
        "{text}"
    );
    assert!(!text.contains(pg_server::PASSWORD), "{text}");
}

async fn first_opens_at_once_migrate_once(b: &Backend) {
    let mut opens = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let location = b.location();
        opens.spawn(async move { Store::open(&location).await });
    }
    for store in opens.join_all().await {
        store.unwrap();
    }
    assert_eq!(
        b.schema_versions().await,
        (1..=SCHEMA_VERSION).collect::<Vec<_>>()
    );
}

// --- the embedded store only -----------------------------------------------------------------

#[test]
fn an_old_style_history_from_a_newer_canary_is_refused() {
    // A file another build marked with `user_version` only.
    let dir = tempfile::tempdir().unwrap();
    let conn = rusqlite::Connection::open(dir.path().join(canary_state::FILE)).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let err = runtime.block_on(Store::embedded(dir.path())).unwrap_err();
    assert!(matches!(err, StoreError::TooNew { found: 99, .. }), "{err}");
    assert!(err.to_string().contains("upgrade canary"), "{err}");
}

#[test]
fn the_embedded_store_is_history_sqlite_in_the_state_directory() {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state/nested");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let store = runtime.block_on(Store::embedded(&state_dir)).unwrap();
    assert_eq!(
        store.describe(),
        state_dir.join(canary_state::FILE).display().to_string()
    );
    assert!(state_dir.join("history.sqlite").exists());
    // Write-ahead log: one synced append per commit (the mode is stored in the file).
    let conn = rusqlite::Connection::open(state_dir.join("history.sqlite")).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

// --- PostgreSQL only: the store's faults -----------------------------------------------------

/// Every way an error can be shown, none with the password in it.
fn shown(err: &StoreError) -> String {
    let text = format!("{err}\n{err:?}");
    for secret in [pg_server::PASSWORD, "not-the-Pa55word"] {
        assert!(!text.contains(secret), "the password shows: {text}");
    }
    text
}

fn block_on<T>(f: impl Future<Output = T>) -> T {
    tokio::runtime::Runtime::new().unwrap().block_on(f)
}

#[test]
fn postgres_wrong_password_is_refused_clearly() {
    let pg = Postgres::start();
    for user in [pg_server::USER, "nobody"] {
        let url = Secret::new(pg.url_for(user, "not-the-Pa55word", pg_server::DATABASE));
        let err = block_on(Store::postgres(&url)).unwrap_err();
        let text = shown(&err);
        assert!(
            matches!(&err, StoreError::Authentication { user: u, .. } if u == user),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "postgres://{user}:***@127.0.0.1:{}/canary",
                pg.port
            )) && text.contains("password"),
            "{text}"
        );
    }
}

#[test]
fn postgres_wrong_database_is_refused_clearly() {
    let pg = Postgres::start();
    let url = Secret::new(pg.url_for(pg_server::USER, pg_server::PASSWORD, "no_such_db"));
    let err = block_on(Store::postgres(&url)).unwrap_err();
    let text = shown(&err);
    assert!(
        matches!(&err, StoreError::NoDatabase { database, .. } if database == "no_such_db"),
        "{text}"
    );
    assert!(text.contains("createdb"), "{text}");
}

#[test]
fn postgres_unreachable_is_refused_clearly() {
    // Nothing listens on a port just released.
    let port = canary_testkit::free_port();
    let url = Secret::new(format!(
        "postgres://canary:{}@127.0.0.1:{port}/canary",
        pg_server::PASSWORD
    ));
    let err = block_on(Store::postgres(&url)).unwrap_err();
    let text = shown(&err);
    assert!(matches!(err, StoreError::Unreachable { .. }), "{text}");
    assert!(
        text.contains(&format!("postgres://canary:***@127.0.0.1:{port}/canary"))
            && text.contains("refused"),
        "{text}"
    );
}

#[test]
fn postgres_urls_canary_cannot_use_are_refused_without_connecting() {
    let cases = [
        (
            format!("mysql://canary:{}@127.0.0.1/canary", pg_server::PASSWORD),
            "postgres://",
        ),
        (
            format!(
                "postgres://canary:{}@127.0.0.1/canary?sslmode=require",
                pg_server::PASSWORD
            ),
            "TLS",
        ),
        (
            format!(
                "postgres://canary:{}@127.0.0.1/canary?sslmode=bogus",
                pg_server::PASSWORD
            ),
            "sslmode",
        ),
    ];
    for (url, says) in cases {
        let err = block_on(Store::postgres(&Secret::new(url.clone()))).unwrap_err();
        let text = shown(&err);
        assert!(
            matches!(
                err,
                StoreError::BadUrl { .. } | StoreError::TlsUnsupported { .. }
            ),
            "{text}"
        );
        assert!(text.contains(says), "{url}: {text}");
    }
}

#[test]
fn postgres_restarting_costs_calls_not_the_handle() {
    let mut pg = Postgres::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let store = runtime
        .block_on(Store::postgres(&Secret::new(pg.url())))
        .unwrap();
    assert!(!format!("{store:?} {}", store.describe()).contains(pg_server::PASSWORD));
    runtime.block_on(store.append("run-1", 0, "a")).unwrap();

    pg.stop();
    let err = runtime.block_on(store.append("run-1", 1, "b")).unwrap_err();
    let text = shown(&err);
    assert!(matches!(err, StoreError::Unreachable { .. }), "{text}");

    pg.restart();
    runtime.block_on(store.append("run-1", 1, "b")).unwrap();
    assert_eq!(
        runtime.block_on(store.journal("run-1")).unwrap(),
        ["a", "b"]
    );
}
