//! The run history: every run, its verdict and reasons, in `history.sqlite` under the state
//! directory, and the cooldown it implies.
//!
//! After a ROLLBACK, an INCONCLUSIVE or a PROMOTION_FAILED verdict, a new run of the same
//! service is refused until the cooldown has passed since that run finished — unless the
//! operator overrides it with a reason, which is recorded with the new run. A later PROMOTE ends
//! the cooldown: what counts is the service's most recent finished run.
//!
//! A failed promotion holds the cooldown too, although the canary passed: traffic was moved
//! back under a load balancer that just misbehaved, and the next attempt should come from
//! someone who fixed it and says so (`--override-cooldown --reason`), not from a retry loop.
//!
//! Times are passed in; nothing here reads the clock. The schema is versioned with
//! `PRAGMA user_version` and migrated on open.

use std::path::{Path, PathBuf};
use std::time::Duration;

use canary_core::{Millis, Verdict};
use rusqlite::{Connection, OptionalExtension, params};

/// The database's file name inside the state directory.
pub const FILE: &str = "history.sqlite";

/// Schema migrations, in order; `user_version` counts those applied.
const MIGRATIONS: &[&str] = &[
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
];

/// Why the history could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error(
        "cannot create the state directory {path}: {source}; set a writable state directory in canary.toml"
    )]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the run history {path} cannot be used: {source}; check its permissions, or move it aside to start a new history"
    )]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "the run history {path} has schema version {found}, newer than this canary understands ({known}); upgrade canary"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: usize,
    },
    #[error("run {run_id:?} is already in the history: every run needs its own id")]
    Duplicate { run_id: String },
    #[error("run {run_id:?} is not in the history: record its start before its finish")]
    Unknown { run_id: String },
}

/// A run as it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunStart {
    pub run_id: String,
    pub service: String,
    pub started: Millis,
    /// The bundle directory.
    pub bundle: PathBuf,
    /// When the run went ahead despite a cooldown: the operator's reason and the run whose
    /// cooldown it overrode.
    pub cooldown_override: Option<Override>,
}

/// An overridden cooldown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    pub reason: String,
    pub overridden_run: String,
}

/// A run in the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecord {
    pub run_id: String,
    pub service: String,
    pub started: Millis,
    /// `None` while running, or when the controller died and the run was never resumed.
    pub finished: Option<Millis>,
    /// `PROMOTE`, `ROLLBACK`, `INCONCLUSIVE`, `PROMOTION_FAILED`; `None` while unfinished.
    pub verdict: Option<String>,
    /// The reasons, one per line.
    pub reasons: String,
    pub bundle: PathBuf,
    pub cooldown_override: Option<Override>,
}

/// An active cooldown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cooldown {
    /// The run that started it.
    pub run_id: String,
    pub verdict: String,
    pub finished: Millis,
    /// When a new run may start.
    pub until: Millis,
}

/// The history database.
#[derive(Debug)]
pub struct History {
    conn: Connection,
    path: PathBuf,
}

impl History {
    /// Opens (creating if needed) `<state_dir>/history.sqlite` and migrates it.
    pub fn open(state_dir: &Path) -> Result<History, HistoryError> {
        std::fs::create_dir_all(state_dir).map_err(|source| HistoryError::StateDir {
            path: state_dir.to_path_buf(),
            source,
        })?;
        let path = state_dir.join(FILE);
        let sql = |source| HistoryError::Sqlite {
            path: path.clone(),
            source,
        };
        let conn = Connection::open(&path).map_err(sql)?;
        // Another canary (`canary history` during a run) may hold the lock briefly.
        conn.busy_timeout(Duration::from_secs(5)).map_err(sql)?;
        let mut history = History { conn, path };
        history.migrate()?;
        Ok(history)
    }

    /// Where the database is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sql(&self) -> impl Fn(rusqlite::Error) -> HistoryError + '_ {
        move |source| HistoryError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn migrate(&mut self) -> Result<(), HistoryError> {
        let path = self.path.clone();
        let sql = |source| HistoryError::Sqlite {
            path: path.clone(),
            source,
        };
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(sql)?;
        if version > MIGRATIONS.len() as i64 {
            return Err(HistoryError::TooNew {
                path,
                found: version,
                known: MIGRATIONS.len(),
            });
        }
        for (i, migration) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
            let tx = self.conn.transaction().map_err(sql)?;
            tx.execute_batch(migration).map_err(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)
                .map_err(sql)?;
            tx.commit().map_err(sql)?;
        }
        Ok(())
    }

    /// Records a run as it starts.
    pub fn record_start(&self, run: &RunStart) -> Result<(), HistoryError> {
        let result = self.conn.execute(
            "INSERT INTO runs (run_id, service, started_ms, bundle, override_reason, overridden_run)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                run.run_id,
                run.service,
                run.started,
                run.bundle.to_string_lossy(),
                run.cooldown_override.as_ref().map(|o| o.reason.as_str()),
                run.cooldown_override
                    .as_ref()
                    .map(|o| o.overridden_run.as_str()),
            ],
        );
        match result {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(HistoryError::Duplicate {
                    run_id: run.run_id.clone(),
                })
            }
            other => other.map(|_| ()).map_err(self.sql()),
        }
    }

    /// Records a run's verdict when it finishes (after the final traffic change).
    pub fn record_finish(
        &self,
        run_id: &str,
        finished: Millis,
        verdict: &Verdict,
    ) -> Result<(), HistoryError> {
        let reasons: Vec<String> = verdict.reasons().iter().map(ToString::to_string).collect();
        let changed = self
            .conn
            .execute(
                "UPDATE runs SET finished_ms = ?2, verdict = ?3, reasons = ?4 WHERE run_id = ?1",
                params![run_id, finished, verdict.name(), reasons.join("\n")],
            )
            .map_err(self.sql())?;
        if changed == 0 {
            return Err(HistoryError::Unknown {
                run_id: run_id.to_owned(),
            });
        }
        Ok(())
    }

    /// The cooldown in force for `service` at `now`: the service's most recent finished run
    /// ended in anything but PROMOTE (ROLLBACK, INCONCLUSIVE, PROMOTION_FAILED) less than
    /// `cooldown` ago. `None` when a new run may go
    /// ahead.
    pub fn cooldown_active(
        &self,
        service: &str,
        now: Millis,
        cooldown: Duration,
    ) -> Result<Option<Cooldown>, HistoryError> {
        let last: Option<(String, String, Millis)> = self
            .conn
            .query_row(
                "SELECT run_id, verdict, finished_ms FROM runs
                 WHERE service = ?1 AND finished_ms IS NOT NULL AND verdict IS NOT NULL
                 ORDER BY finished_ms DESC, started_ms DESC LIMIT 1",
                params![service],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(self.sql())?;
        let Some((run_id, verdict, finished)) = last else {
            return Ok(None);
        };
        if verdict == "PROMOTE" {
            return Ok(None);
        }
        let until =
            finished.saturating_add(i64::try_from(cooldown.as_millis()).unwrap_or(i64::MAX));
        Ok((now < until).then_some(Cooldown {
            run_id,
            verdict,
            finished,
            until,
        }))
    }

    /// One run by id.
    pub fn get(&self, run_id: &str) -> Result<Option<RunRecord>, HistoryError> {
        self.conn
            .query_row(
                &format!("{SELECT_RUN} WHERE run_id = ?1"),
                params![run_id],
                row_to_record,
            )
            .optional()
            .map_err(self.sql())
    }

    /// The most recent runs first (by start), at most `limit`.
    pub fn list(&self, limit: usize) -> Result<Vec<RunRecord>, HistoryError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "{SELECT_RUN} ORDER BY started_ms DESC, run_id DESC LIMIT ?1"
            ))
            .map_err(self.sql())?;
        let rows = stmt
            .query_map(
                params![i64::try_from(limit).unwrap_or(i64::MAX)],
                row_to_record,
            )
            .map_err(self.sql())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.sql())
    }
}

const SELECT_RUN: &str = "SELECT run_id, service, started_ms, finished_ms, verdict, reasons, bundle, override_reason, overridden_run FROM runs";

fn row_to_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRecord> {
    let reason: Option<String> = r.get(7)?;
    let overridden: Option<String> = r.get(8)?;
    Ok(RunRecord {
        run_id: r.get(0)?,
        service: r.get(1)?,
        started: r.get(2)?,
        finished: r.get(3)?,
        verdict: r.get(4)?,
        reasons: r.get(5)?,
        bundle: PathBuf::from(r.get::<_, String>(6)?),
        cooldown_override: reason.map(|reason| Override {
            reason,
            overridden_run: overridden.unwrap_or_default(),
        }),
    })
}
