//! `canary-state`: a run's state beyond its evidence bundle — the history of runs and the
//! cooldowns it implies, the lock that allows one canary per service at a time, and the run's
//! journal — behind one [`Store`] with two backends (DESIGN §13):
//!
//! - embedded (the default): SQLite in `<state dir>/history.sqlite`, nothing to set up, one
//!   machine's view — the file canary has always kept its history in, migrated forward;
//! - PostgreSQL (`postgres://` URL): one view for a team and its CI runners.
//!
//! Both answer every question alike; `tests/store.rs` runs one suite against each.
//!
//! Invariants:
//! - Schemas are versioned in a `schema_version` table and migrated by the code on open; a
//!   store whose schema is newer than this build is refused ([`StoreError::TooNew`]), naming
//!   both versions — never read with the wrong idea of its tables.
//! - A lease's expiry is the store's clock (PostgreSQL's `clock_timestamp()`, SQLite's
//!   `unixepoch`), never a runner's: taking over a lapsed lock is one atomic statement, so of
//!   two takers exactly one wins.
//! - A journal line is stored once per `(run, seq)`, at the end of the run's journal: storing
//!   it again is a no-op, a different line there is an error, a gap is an error.
//! - History times (a run's start and finish, the cooldown's `now`) are passed in; only lease
//!   expiry reads a clock, the store's.
//! - A PostgreSQL URL is a [`Secret`]; messages and `Debug` show it redacted ([`RedactedUrl`]).
#![forbid(unsafe_code)]

mod embedded;
mod error;
mod model;
mod postgres;
mod url;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use canary_core::{Millis, Secret, Verdict};

pub use embedded::FILE;
pub use error::StoreError;
pub use model::{Acquired, Cooldown, Held, Holder, Lease, Override, RunRecord, RunStart};
pub use url::RedactedUrl;

use embedded::Embedded;
use postgres::Postgres;

/// The schema version this build writes and understands (the same on both backends).
pub const SCHEMA_VERSION: i64 = embedded::MIGRATIONS.len() as i64;

const _: () = assert!(
    embedded::MIGRATIONS.len() == postgres::MIGRATIONS.len(),
    "both backends migrate to the same schema version"
);

/// Where the run state lives.
#[derive(Debug, Clone)]
pub enum Location {
    /// SQLite in this state directory ([`FILE`]).
    Embedded { state_dir: PathBuf },
    /// PostgreSQL at this `postgres://` URL (which may hold a password).
    Postgres { url: Secret },
}

impl Location {
    /// PostgreSQL when a URL is given (`[state] url`, `CANARY_STATE_URL`), else the embedded
    /// store in `state_dir`.
    pub fn new(url: Option<Secret>, state_dir: &Path) -> Location {
        match url {
            Some(url) => Location::Postgres { url },
            None => Location::Embedded {
                state_dir: state_dir.to_path_buf(),
            },
        }
    }
}

/// The run state. Cheap to clone: clones share the connection. Every call needs a tokio
/// runtime; the embedded backend's work runs on its blocking pool.
#[derive(Debug, Clone)]
pub struct Store {
    backend: Backend,
}

#[derive(Debug, Clone)]
enum Backend {
    Embedded(Embedded),
    Postgres(Arc<Postgres>),
}

/// Calls the same primitive on whichever backend this store has.
macro_rules! on_backend {
    ($store:expr, $method:ident($($arg:expr),*)) => {
        match &$store.backend {
            Backend::Embedded(b) => b.$method($($arg),*).await,
            Backend::Postgres(b) => b.$method($($arg),*).await,
        }
    };
}

/// A lock's row as a backend reads it, with the store's clock at the read.
#[derive(Debug)]
pub(crate) struct LockRow {
    pub holder: Holder,
    pub since: Millis,
    pub expires: Millis,
    pub now: Millis,
}

/// What storing one journal line found.
#[derive(Debug)]
pub(crate) enum JournalInsert {
    Stored,
    /// A line was already stored at that seq: this one.
    Exists(String),
    /// The seq is past the end of the stored journal; the next one is `expected`.
    Gap {
        expected: i64,
    },
}

impl Store {
    /// Opens the store at `location`: creates or migrates the embedded file, or connects to
    /// PostgreSQL and migrates its schema.
    pub async fn open(location: &Location) -> Result<Store, StoreError> {
        match location {
            Location::Embedded { state_dir } => Store::embedded(state_dir).await,
            Location::Postgres { url } => Store::postgres(url).await,
        }
    }

    /// The embedded store: `<state_dir>/history.sqlite`, created (with the directory) if
    /// missing, migrated if older.
    pub async fn embedded(state_dir: &Path) -> Result<Store, StoreError> {
        let state_dir = state_dir.to_path_buf();
        let backend = tokio::task::spawn_blocking(move || Embedded::open_blocking(&state_dir))
            .await
            .map_err(|e| StoreError::Worker {
                detail: e.to_string(),
            })??;
        Ok(Store {
            backend: Backend::Embedded(backend),
        })
    }

    /// PostgreSQL at `url` (`postgres://USER:PASSWORD@HOST:PORT/DATABASE`): connected and
    /// migrated before this returns, so an unreachable server, wrong credentials, a missing
    /// database or a newer schema fail here.
    pub async fn postgres(url: &Secret) -> Result<Store, StoreError> {
        Ok(Store {
            backend: Backend::Postgres(Arc::new(Postgres::connect(url).await?)),
        })
    }

    /// Where the state is, for people: the SQLite file, or the URL without its password.
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Embedded(b) => b.path().display().to_string(),
            Backend::Postgres(b) => b.url().to_string(),
        }
    }

    // --- history ---------------------------------------------------------------------------

    /// Records a run as it starts. A run id already recorded is [`StoreError::Duplicate`].
    pub async fn record_start(&self, run: &RunStart) -> Result<(), StoreError> {
        if on_backend!(self, insert_run(run))? {
            Ok(())
        } else {
            Err(StoreError::Duplicate {
                run_id: run.run_id.clone(),
            })
        }
    }

    /// Records a run's verdict when it finishes (after the final traffic change).
    pub async fn record_finish(
        &self,
        run_id: &str,
        finished: Millis,
        verdict: &Verdict,
    ) -> Result<(), StoreError> {
        let reasons: Vec<String> = verdict.reasons().iter().map(ToString::to_string).collect();
        if on_backend!(
            self,
            finish_run(run_id, finished, verdict.name(), reasons.join("\n"))
        )? {
            Ok(())
        } else {
            Err(StoreError::Unknown {
                run_id: run_id.to_owned(),
            })
        }
    }

    /// The cooldown in force for `service` at `now`: the service's most recent finished run
    /// ended in anything but PROMOTE (ROLLBACK, INCONCLUSIVE, PROMOTION_FAILED) less than
    /// `cooldown` ago. `None` when a new run may go ahead.
    ///
    /// A failed promotion holds the cooldown too, although the canary passed: traffic was
    /// moved back under a load balancer that just misbehaved, and the next attempt should come
    /// from someone who fixed it and says so (`--override-cooldown --reason`), not from a
    /// retry loop. A later PROMOTE ends the cooldown.
    pub async fn cooldown_active(
        &self,
        service: &str,
        now: Millis,
        cooldown: Duration,
    ) -> Result<Option<Cooldown>, StoreError> {
        let Some((run_id, verdict, finished)) = on_backend!(self, last_finished(service))? else {
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
    pub async fn get(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
        on_backend!(self, get_run(run_id))
    }

    /// The most recent runs first (by start), at most `limit`.
    pub async fn list(&self, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        on_backend!(self, list_runs(i64::try_from(limit).unwrap_or(i64::MAX)))
    }

    // --- run locks -------------------------------------------------------------------------

    /// Takes `service`'s run lock for `holder`, with a lease of `ttl` on the store's clock: when
    /// nobody holds it, when its holder released it, or when its holder's lease lapsed
    /// (taking it over). Otherwise says who holds it, since when and until when. Atomic: of
    /// several controllers asking at once, on any machines, exactly one gets the lease.
    pub async fn acquire(
        &self,
        service: &str,
        holder: &Holder,
        ttl: Duration,
    ) -> Result<Acquired, StoreError> {
        let ttl_ms = millis(ttl);
        // The lock can change hands between the failed take and the read of its holder (it
        // lapsed or was released just then): look again.
        for _ in 0..8 {
            if let Some(lease) = on_backend!(self, take_lock(service, holder, ttl_ms))? {
                return Ok(Acquired::Lease(lease));
            }
            if let Some(row) = on_backend!(self, lock_row(service))?
                && row.expires > row.now
            {
                return Ok(Acquired::Held(held(service, row)));
            }
        }
        Err(StoreError::LockContended {
            service: service.to_owned(),
            run_id: holder.run_id.clone(),
        })
    }

    /// Extends `lease` to `ttl` from now (the store's clock). Succeeds while the lock is still
    /// this lease's — even after it lapsed, as long as nobody took it over (a controller cut
    /// off from the store by an outage gets it back); once taken over or released,
    /// [`StoreError::LeaseLost`] saying who holds it now.
    pub async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Lease, StoreError> {
        match on_backend!(self, renew_lock(lease, millis(ttl)))? {
            Some(expires) => Ok(Lease {
                expires,
                ..lease.clone()
            }),
            None => Err(self.lost(lease).await),
        }
    }

    /// Frees the lock `lease` holds, so the next [`Store::acquire`] of the service gets it at
    /// once. `false` when the lock was no longer this lease's (taken over, or released before).
    pub async fn release(&self, lease: &Lease) -> Result<bool, StoreError> {
        on_backend!(self, release_lock(lease))
    }

    /// Who holds `service`'s lock with a lease that has not lapsed; `None` when it is free.
    pub async fn holder(&self, service: &str) -> Result<Option<Held>, StoreError> {
        Ok(on_backend!(self, lock_row(service))?
            .filter(|row| row.expires > row.now)
            .map(|row| held(service, row)))
    }

    async fn lost(&self, lease: &Lease) -> StoreError {
        let now = match on_backend!(self, lock_row(&lease.service)) {
            Ok(Some(row)) if row.expires > row.now => format!(
                "run {} from {} (operator {}) holds it",
                row.holder.run_id, row.holder.host, row.holder.operator
            ),
            Ok(Some(_)) | Ok(None) => "it was released".to_owned(),
            Err(e) => format!("and the store cannot say who holds it ({e})"),
        };
        StoreError::LeaseLost {
            service: lease.service.clone(),
            run_id: lease.run_id.clone(),
            now,
        }
    }

    // --- journals --------------------------------------------------------------------------

    /// Stores line `seq` (from 0) of `run_id`'s journal. Idempotent: the same line at the same
    /// seq again is a no-op; a different line there is [`StoreError::JournalConflict`]; a seq
    /// past the end of the stored journal is [`StoreError::JournalGap`] — lines are stored in
    /// order, none skipped.
    pub async fn append(&self, run_id: &str, seq: u64, line: &str) -> Result<(), StoreError> {
        let at = i64::try_from(seq).unwrap_or(i64::MAX);
        match on_backend!(self, insert_journal(run_id, at, line))? {
            JournalInsert::Stored => Ok(()),
            JournalInsert::Exists(stored) if stored == line => Ok(()),
            JournalInsert::Exists(_) => Err(StoreError::JournalConflict {
                run_id: run_id.to_owned(),
                seq,
            }),
            JournalInsert::Gap { expected } => Err(StoreError::JournalGap {
                run_id: run_id.to_owned(),
                seq,
                expected: u64::try_from(expected).unwrap_or(0),
            }),
        }
    }

    /// `run_id`'s stored journal, in order.
    pub async fn journal(&self, run_id: &str) -> Result<Vec<String>, StoreError> {
        on_backend!(self, journal_lines(run_id))
    }

    /// The highest seq stored for `run_id` (`None`: nothing yet): a controller that kept
    /// journaling locally while the store was away appends from the next one.
    pub async fn last_seq(&self, run_id: &str) -> Result<Option<u64>, StoreError> {
        Ok(on_backend!(self, last_seq(run_id))?.and_then(|s| u64::try_from(s).ok()))
    }
}

fn held(service: &str, row: LockRow) -> Held {
    Held {
        service: service.to_owned(),
        holder: row.holder,
        since: row.since,
        expires: row.expires,
        at: row.now,
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
