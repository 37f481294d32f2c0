//! The embedded backend: SQLite in `<state dir>/history.sqlite`, one connection per [`Store`]
//! handle, each call on tokio's blocking pool.
//!
//! Several handles (another canary, `canary history` during a run) may open the same file:
//! SQLite serialises writers, each write here is one statement or one `IMMEDIATE` transaction,
//! and a busy file is waited for. The file is in WAL mode with `synchronous = FULL`
//! (`durable_wal`): a commit is one synced append to `history.sqlite-wal`, durable when the
//! call returns. The `-wal` and `-shm` files beside it are part of the store while a handle is
//! open (the last handle to close folds the WAL back in). Histories written before the shared
//! store (`PRAGMA user_version` = 1, no `schema_version` table) are migrated forward on open;
//! `user_version` keeps following the schema version so that an older canary refuses a newer
//! file.
//!
//! [`Store`]: crate::Store

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use canary_core::Millis;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::model::{Holder, Lease, Override, RunRecord, RunStart};
use crate::{JournalInsert, LockRow, StoreError};

/// The database's file name inside the state directory.
pub const FILE: &str = "history.sqlite";

/// Schema migrations, in order; migration *i* brings the schema to version *i + 1*. Version 1
/// is the history as canary kept it before the shared store, so its text must not change.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: runs.
    "CREATE TABLE runs (
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
    CREATE INDEX runs_by_start ON runs (started_ms);",
    // 2: who and where per run and override; run locks; journals.
    "ALTER TABLE runs ADD COLUMN host TEXT;
    ALTER TABLE runs ADD COLUMN operator TEXT;
    ALTER TABLE runs ADD COLUMN override_by TEXT;
    ALTER TABLE runs ADD COLUMN override_host TEXT;
    CREATE TABLE run_locks (
        service     TEXT PRIMARY KEY NOT NULL,
        run_id      TEXT NOT NULL,
        host        TEXT NOT NULL,
        operator    TEXT NOT NULL,
        pid         INTEGER NOT NULL,
        started_ms  INTEGER NOT NULL,
        since_ms    INTEGER NOT NULL,
        expires_ms  INTEGER NOT NULL,
        generation  INTEGER NOT NULL
    );
    CREATE TABLE journal (
        run_id TEXT NOT NULL,
        seq    INTEGER NOT NULL,
        line   TEXT NOT NULL,
        PRIMARY KEY (run_id, seq)
    ) WITHOUT ROWID;",
];

/// The database's clock in milliseconds since the epoch, for lease expiry.
const NOW_MS: &str = "CAST(unixepoch('subsec') * 1000 AS INTEGER)";

/// The SQLite backend.
#[derive(Clone)]
pub(crate) struct Embedded {
    conn: Arc<Mutex<Connection>>,
    path: Arc<PathBuf>,
}

impl std::fmt::Debug for Embedded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedded")
            .field("path", &self.path)
            .finish()
    }
}

impl Embedded {
    /// Opens (creating if needed) `<state_dir>/history.sqlite` and migrates it. Blocking.
    pub(crate) fn open_blocking(state_dir: &Path) -> Result<Embedded, StoreError> {
        std::fs::create_dir_all(state_dir).map_err(|source| StoreError::StateDir {
            path: state_dir.to_path_buf(),
            source,
        })?;
        let path = state_dir.join(FILE);
        let sql = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let mut conn = Connection::open(&path).map_err(sql)?;
        // Another canary (`canary history` during a run, a second controller) may hold the
        // write lock briefly.
        conn.busy_timeout(Duration::from_secs(5)).map_err(sql)?;
        durable_wal(&conn, &path)?;
        migrate(&mut conn, &path)?;
        Ok(Embedded {
            conn: Arc::new(Mutex::new(conn)),
            path: Arc::new(path),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the connection on the blocking pool.
    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = self.conn.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut conn).map_err(|source| StoreError::Sqlite {
                path: path.to_path_buf(),
                source,
            })
        })
        .await
        .map_err(|e| StoreError::Worker {
            detail: e.to_string(),
        })?
    }

    pub(crate) async fn insert_run(&self, run: &RunStart) -> Result<bool, StoreError> {
        let run = run.clone();
        self.call(move |c| {
            let o = run.cooldown_override.as_ref();
            let result = c.execute(
                "INSERT INTO runs (run_id, service, started_ms, bundle, host, operator,
                                   override_reason, overridden_run, override_by, override_host)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    run.run_id,
                    run.service,
                    run.started,
                    run.bundle.to_string_lossy(),
                    run.host,
                    run.operator,
                    o.map(|o| o.reason.as_str()),
                    o.map(|o| o.overridden_run.as_str()),
                    o.and_then(|o| o.by.as_deref()),
                    o.and_then(|o| o.host.as_deref()),
                ],
            );
            match result {
                Ok(_) => Ok(true),
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    Ok(false)
                }
                Err(e) => Err(e),
            }
        })
        .await
    }

    pub(crate) async fn finish_run(
        &self,
        run_id: &str,
        finished: Millis,
        verdict: &'static str,
        reasons: String,
    ) -> Result<bool, StoreError> {
        let run_id = run_id.to_owned();
        self.call(move |c| {
            c.execute(
                "UPDATE runs SET finished_ms = ?2, verdict = ?3, reasons = ?4 WHERE run_id = ?1",
                params![run_id, finished, verdict, reasons],
            )
            .map(|changed| changed > 0)
        })
        .await
    }

    pub(crate) async fn last_finished(
        &self,
        service: &str,
    ) -> Result<Option<(String, String, Millis)>, StoreError> {
        let service = service.to_owned();
        self.call(move |c| {
            c.query_row(
                "SELECT run_id, verdict, finished_ms FROM runs
                 WHERE service = ?1 AND finished_ms IS NOT NULL AND verdict IS NOT NULL
                 ORDER BY finished_ms DESC, started_ms DESC LIMIT 1",
                params![service],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
        })
        .await
    }

    pub(crate) async fn get_run(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
        let run_id = run_id.to_owned();
        self.call(move |c| {
            c.query_row(
                &format!("{SELECT_RUN} WHERE run_id = ?1"),
                params![run_id],
                row_to_record,
            )
            .optional()
        })
        .await
    }

    pub(crate) async fn list_runs(&self, limit: i64) -> Result<Vec<RunRecord>, StoreError> {
        self.call(move |c| {
            let mut stmt = c.prepare(&format!(
                "{SELECT_RUN} ORDER BY started_ms DESC, run_id DESC LIMIT ?1"
            ))?;
            let rows = stmt.query_map(params![limit], row_to_record)?;
            rows.collect()
        })
        .await
    }

    pub(crate) async fn take_lock(
        &self,
        service: &str,
        holder: &Holder,
        ttl_ms: i64,
    ) -> Result<Option<Lease>, StoreError> {
        let (service, holder) = (service.to_owned(), holder.clone());
        self.call(move |c| {
            c.query_row(
                &format!(
                    "INSERT INTO run_locks AS l
                        (service, run_id, host, operator, pid, started_ms, since_ms, expires_ms, generation)
                     SELECT ?1, ?2, ?3, ?4, ?5, ?6, n.now, n.now + ?7, 1 FROM (SELECT {NOW_MS} AS now) n
                     WHERE true
                     ON CONFLICT (service) DO UPDATE SET
                        run_id = excluded.run_id, host = excluded.host,
                        operator = excluded.operator, pid = excluded.pid,
                        started_ms = excluded.started_ms, since_ms = excluded.since_ms,
                        expires_ms = excluded.expires_ms, generation = l.generation + 1
                     WHERE l.expires_ms <= excluded.since_ms
                     RETURNING generation, since_ms, expires_ms"
                ),
                params![
                    service,
                    holder.run_id,
                    holder.host,
                    holder.operator,
                    holder.pid,
                    holder.started,
                    ttl_ms
                ],
                |r| {
                    Ok(Lease {
                        service: service.clone(),
                        run_id: holder.run_id.clone(),
                        generation: r.get(0)?,
                        since: r.get(1)?,
                        expires: r.get(2)?,
                    })
                },
            )
            .optional()
        })
        .await
    }

    pub(crate) async fn lock_row(&self, service: &str) -> Result<Option<LockRow>, StoreError> {
        let service = service.to_owned();
        self.call(move |c| {
            c.query_row(
                &format!(
                    "SELECT run_id, host, operator, pid, started_ms, since_ms, expires_ms, {NOW_MS}
                     FROM run_locks WHERE service = ?1"
                ),
                params![service],
                |r| {
                    Ok(LockRow {
                        holder: Holder {
                            run_id: r.get(0)?,
                            host: r.get(1)?,
                            operator: r.get(2)?,
                            pid: r.get(3)?,
                            started: r.get(4)?,
                        },
                        since: r.get(5)?,
                        expires: r.get(6)?,
                        now: r.get(7)?,
                    })
                },
            )
            .optional()
        })
        .await
    }

    pub(crate) async fn renew_lock(
        &self,
        lease: &Lease,
        ttl_ms: i64,
    ) -> Result<Option<Millis>, StoreError> {
        let lease = lease.clone();
        self.call(move |c| {
            c.query_row(
                &format!(
                    "UPDATE run_locks SET expires_ms = {NOW_MS} + ?4
                     WHERE service = ?1 AND run_id = ?2 AND generation = ?3
                     RETURNING expires_ms"
                ),
                params![lease.service, lease.run_id, lease.generation, ttl_ms],
                |r| r.get(0),
            )
            .optional()
        })
        .await
    }

    pub(crate) async fn release_lock(&self, lease: &Lease) -> Result<bool, StoreError> {
        let lease = lease.clone();
        self.call(move |c| {
            c.execute(
                &format!(
                    "UPDATE run_locks SET expires_ms = {NOW_MS}, generation = generation + 1
                     WHERE service = ?1 AND run_id = ?2 AND generation = ?3"
                ),
                params![lease.service, lease.run_id, lease.generation],
            )
            .map(|changed| changed > 0)
        })
        .await
    }

    pub(crate) async fn insert_journal(
        &self,
        run_id: &str,
        seq: i64,
        line: &str,
    ) -> Result<JournalInsert, StoreError> {
        let (run_id, line) = (run_id.to_owned(), line.to_owned());
        self.call(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let stored: Option<String> = tx
                .query_row(
                    "SELECT line FROM journal WHERE run_id = ?1 AND seq = ?2",
                    params![run_id, seq],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(stored) = stored {
                return Ok(JournalInsert::Exists(stored));
            }
            let next: i64 = tx.query_row(
                "SELECT COALESCE(MAX(seq) + 1, 0) FROM journal WHERE run_id = ?1",
                params![run_id],
                |r| r.get(0),
            )?;
            if seq != next {
                return Ok(JournalInsert::Gap { expected: next });
            }
            tx.execute(
                "INSERT INTO journal (run_id, seq, line) VALUES (?1, ?2, ?3)",
                params![run_id, seq, line],
            )?;
            tx.commit()?;
            Ok(JournalInsert::Stored)
        })
        .await
    }

    pub(crate) async fn journal_lines(&self, run_id: &str) -> Result<Vec<String>, StoreError> {
        let run_id = run_id.to_owned();
        self.call(move |c| {
            let mut stmt = c.prepare("SELECT line FROM journal WHERE run_id = ?1 ORDER BY seq")?;
            let rows = stmt.query_map(params![run_id], |r| r.get(0))?;
            rows.collect()
        })
        .await
    }

    pub(crate) async fn last_seq(&self, run_id: &str) -> Result<Option<i64>, StoreError> {
        let run_id = run_id.to_owned();
        self.call(move |c| {
            c.query_row(
                "SELECT MAX(seq) FROM journal WHERE run_id = ?1",
                params![run_id],
                |r| r.get(0),
            )
        })
        .await
    }
}

/// Puts the file in write-ahead-log mode and makes every commit durable before it returns.
///
/// WAL: a commit appends its pages to `history.sqlite-wal` and syncs that one file, where the
/// rollback journal created, synced and deleted a journal file and synced the database per
/// transaction — several times the cost of a journal append. `synchronous = FULL` syncs the WAL
/// at every commit (and its directory when the WAL is created), so an append that returned is
/// on disk across a power loss, before the engine applies the input; `NORMAL` syncs only at
/// checkpoints, so commits that returned could vanish with the power. (`EXTRA` adds a directory
/// sync that only the rollback journal's delete needs.) The mode is stored in the file: every canary that opens it
/// afterwards, older ones included, uses the WAL. Where the file system cannot have one (no
/// shared memory, e.g. some network file systems), the store stays in the rollback journal,
/// still synchronous.
fn durable_wal(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let sql = |source| StoreError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(sql)?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(
            store = %path.display(),
            journal_mode = %mode,
            "the state file cannot use a write-ahead log here; every append still syncs"
        );
    }
    conn.pragma_update(None, "synchronous", "FULL").map_err(sql)
}

/// Brings the file's schema to [`MIGRATIONS`]' version, or refuses a newer one.
fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let sql = |source| StoreError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    let known = MIGRATIONS.len() as i64;
    // IMMEDIATE: two canaries opening a fresh file at once migrate it one after the other.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql)?;
    let user_version: i64 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(sql)?;
    let has_table: bool = tx
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version')",
            [],
            |r| r.get(0),
        )
        .map_err(sql)?;
    let recorded: i64 = if has_table {
        tx.query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_version",
            [],
            |r| r.get(0),
        )
        .map_err(sql)?
    } else {
        0
    };
    let version = recorded.max(user_version);
    if version > known {
        return Err(StoreError::TooNew {
            store: path.display().to_string(),
            found: version,
            known,
        });
    }
    if version == known && has_table {
        return Ok(());
    }
    if !has_table {
        tx.execute_batch(
            "CREATE TABLE schema_version (
                version    INTEGER PRIMARY KEY NOT NULL,
                applied_ms INTEGER NOT NULL
            );",
        )
        .map_err(sql)?;
        // A history from before the table: its `user_version` says what it holds.
        for v in 1..=version {
            tx.execute(
                &format!("INSERT INTO schema_version (version, applied_ms) VALUES (?1, {NOW_MS})"),
                params![v],
            )
            .map_err(sql)?;
        }
    }
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        let v = i as i64 + 1;
        tx.execute_batch(migration).map_err(sql)?;
        tx.execute(
            &format!("INSERT INTO schema_version (version, applied_ms) VALUES (?1, {NOW_MS})"),
            params![v],
        )
        .map_err(sql)?;
        tx.pragma_update(None, "user_version", v).map_err(sql)?;
    }
    tx.commit().map_err(sql)
}

const SELECT_RUN: &str = "SELECT run_id, service, started_ms, finished_ms, verdict, reasons, bundle, \
     host, operator, override_reason, overridden_run, override_by, override_host FROM runs";

fn row_to_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRecord> {
    let reason: Option<String> = r.get(9)?;
    let overridden: Option<String> = r.get(10)?;
    let by: Option<String> = r.get(11)?;
    let override_host: Option<String> = r.get(12)?;
    Ok(RunRecord {
        run_id: r.get(0)?,
        service: r.get(1)?,
        started: r.get(2)?,
        finished: r.get(3)?,
        verdict: r.get(4)?,
        reasons: r.get(5)?,
        bundle: PathBuf::from(r.get::<_, String>(6)?),
        host: r.get(7)?,
        operator: r.get(8)?,
        cooldown_override: reason.map(|reason| Override {
            reason,
            overridden_run: overridden.unwrap_or_default(),
            by,
            host: override_host,
        }),
    })
}
