//! The PostgreSQL backend, for a team: every runner that names the same database shares one
//! history, one cooldown per service, one lock per service and every run's journal.
//!
//! One connection per [`Store`] handle, opened (and the schema migrated) on first use and again
//! after it broke — PostgreSQL restarting mid-run costs the calls made while it is down, which
//! fail as [`StoreError::Unreachable`], not the handle. Every statement is prepared once per
//! connection, right after the migrations, so a call is one round trip, not two (parse, then
//! bind and execute). Every write is one statement, so statements from many tasks share the
//! connection (tokio-postgres pipelines them); only the migrations run in a transaction, under
//! an advisory lock so two runners upgrading one database at once take turns. Lease expiry is
//! computed by the database (`clock_timestamp()`), never from a runner's clock: runners whose
//! clocks disagree still agree on who holds a lock.
//!
//! No TLS yet: the connection is plain TCP (`NoTls`), and a URL with `sslmode=require` is
//! refused rather than silently downgraded. The store is meant for loopback or a private
//! network today; rustls through `tokio-rustls` and `rustls-platform-verifier` (both already in
//! the workspace) is the way to add it.
//!
//! [`Store`]: crate::Store

use std::sync::Arc;
use std::time::Duration;

use canary_core::{Millis, Secret};
use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, NoTls, Row, Statement};

use crate::model::{Holder, Lease, Override, RunRecord, RunStart};
use crate::url::RedactedUrl;
use crate::{JournalInsert, LockRow, StoreError};

/// Schema migrations, in order; migration *i* brings the schema to version *i + 1*, the same
/// versions as the embedded store's.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: runs.
    "CREATE TABLE runs (
        run_id          TEXT PRIMARY KEY NOT NULL,
        service         TEXT NOT NULL,
        started_ms      BIGINT NOT NULL,
        finished_ms     BIGINT,
        verdict         TEXT,
        reasons         TEXT NOT NULL DEFAULT '',
        bundle          TEXT NOT NULL,
        override_reason TEXT,
        overridden_run  TEXT
    );
    CREATE INDEX runs_by_service ON runs (service, finished_ms);
    CREATE INDEX runs_by_start ON runs (started_ms);",
    // 2: who and where per run and override; run locks; journals.
    "ALTER TABLE runs ADD COLUMN host TEXT,
                     ADD COLUMN operator TEXT,
                     ADD COLUMN override_by TEXT,
                     ADD COLUMN override_host TEXT;
    CREATE TABLE run_locks (
        service     TEXT PRIMARY KEY NOT NULL,
        run_id      TEXT NOT NULL,
        host        TEXT NOT NULL,
        operator    TEXT NOT NULL,
        pid         BIGINT NOT NULL,
        started_ms  BIGINT NOT NULL,
        since_ms    BIGINT NOT NULL,
        expires_ms  BIGINT NOT NULL,
        generation  BIGINT NOT NULL
    );
    CREATE TABLE journal (
        run_id TEXT NOT NULL,
        seq    BIGINT NOT NULL,
        line   TEXT NOT NULL,
        PRIMARY KEY (run_id, seq)
    );",
];

/// The database's clock in milliseconds since the epoch, for lease expiry.
const NOW_MS: &str = "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT";

/// Key of the advisory lock migrations hold (any constant unique to canary).
const MIGRATION_LOCK: i64 = 0x63_616e_6172_7900; // "canary\0"

/// How long a connection attempt may take when the URL does not say (`connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The PostgreSQL backend.
pub(crate) struct Postgres {
    config: Config,
    url: RedactedUrl,
    connection: tokio::sync::Mutex<Option<Arc<Connection>>>,
}

/// An open connection and its prepared statements (which live as long as it does).
struct Connection {
    client: Client,
    statements: Statements,
}

/// Every statement the backend runs after the migrations, prepared on the connection.
struct Statements {
    insert_run: Statement,
    finish_run: Statement,
    last_finished: Statement,
    get_run: Statement,
    list_runs: Statement,
    take_lock: Statement,
    lock_row: Statement,
    renew_lock: Statement,
    release_lock: Statement,
    insert_journal: Statement,
    journal_line: Statement,
    journal_next: Statement,
    journal_lines: Statement,
    last_seq: Statement,
}

impl Statements {
    /// Prepares every statement, pipelined: one round trip's wait, not fourteen.
    async fn prepare(client: &Client) -> Result<Statements, tokio_postgres::Error> {
        let get_run_sql = format!("{SELECT_RUN} WHERE run_id = $1");
        let list_runs_sql = format!("{SELECT_RUN} ORDER BY started_ms DESC, run_id DESC LIMIT $1");
        // ON CONFLICT locks the existing row and re-checks the WHERE against its latest
        // version: of two takers of a lapsed lease, the second sees the first's fresh expiry.
        let take_lock_sql = format!(
            "INSERT INTO run_locks AS l
                (service, run_id, host, operator, pid, started_ms, since_ms, expires_ms, generation)
             SELECT $1, $2, $3, $4, $5, $6, n.now, n.now + $7, 1 FROM (SELECT {NOW_MS} AS now) n
             ON CONFLICT (service) DO UPDATE SET
                run_id = excluded.run_id, host = excluded.host,
                operator = excluded.operator, pid = excluded.pid,
                started_ms = excluded.started_ms, since_ms = excluded.since_ms,
                expires_ms = excluded.expires_ms, generation = l.generation + 1
             WHERE l.expires_ms <= excluded.since_ms
             RETURNING generation, since_ms, expires_ms"
        );
        let lock_row_sql = format!(
            "SELECT run_id, host, operator, pid, started_ms, since_ms, expires_ms, {NOW_MS}
             FROM run_locks WHERE service = $1"
        );
        let renew_lock_sql = format!(
            "UPDATE run_locks SET expires_ms = {NOW_MS} + $4
             WHERE service = $1 AND run_id = $2 AND generation = $3
             RETURNING expires_ms"
        );
        let release_lock_sql = format!(
            "UPDATE run_locks SET expires_ms = {NOW_MS}, generation = generation + 1
             WHERE service = $1 AND run_id = $2 AND generation = $3"
        );
        let (
            insert_run,
            finish_run,
            last_finished,
            get_run,
            list_runs,
            take_lock,
            lock_row,
            renew_lock,
            release_lock,
            insert_journal,
            journal_line,
            journal_next,
            journal_lines,
            last_seq,
        ) = tokio::try_join!(
            client.prepare(
                "INSERT INTO runs (run_id, service, started_ms, bundle, host, operator,
                                   override_reason, overridden_run, override_by, override_host)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                 ON CONFLICT (run_id) DO NOTHING",
            ),
            client.prepare(
                "UPDATE runs SET finished_ms = $2, verdict = $3, reasons = $4 WHERE run_id = $1",
            ),
            client.prepare(
                "SELECT run_id, verdict, finished_ms FROM runs
                 WHERE service = $1 AND finished_ms IS NOT NULL AND verdict IS NOT NULL
                 ORDER BY finished_ms DESC, started_ms DESC LIMIT 1",
            ),
            client.prepare(&get_run_sql),
            client.prepare(&list_runs_sql),
            client.prepare(&take_lock_sql),
            client.prepare(&lock_row_sql),
            client.prepare(&renew_lock_sql),
            client.prepare(&release_lock_sql),
            // Stored only at the end of the run's journal; a key already taken is left alone
            // (ON CONFLICT waits for a concurrent writer of the same key to commit first).
            client.prepare(
                "INSERT INTO journal (run_id, seq, line)
                 SELECT $1, $2, $3
                 WHERE $2 = (SELECT COALESCE(MAX(seq) + 1, 0) FROM journal WHERE run_id = $1)
                 ON CONFLICT (run_id, seq) DO NOTHING",
            ),
            client.prepare("SELECT line FROM journal WHERE run_id = $1 AND seq = $2"),
            client.prepare("SELECT COALESCE(MAX(seq) + 1, 0) FROM journal WHERE run_id = $1"),
            client.prepare("SELECT line FROM journal WHERE run_id = $1 ORDER BY seq"),
            client.prepare("SELECT MAX(seq) FROM journal WHERE run_id = $1"),
        )?;
        Ok(Statements {
            insert_run,
            finish_run,
            last_finished,
            get_run,
            list_runs,
            take_lock,
            lock_row,
            renew_lock,
            release_lock,
            insert_journal,
            journal_line,
            journal_next,
            journal_lines,
            last_seq,
        })
    }
}

/// Picks one of a connection's [`Statements`].
type Pick = fn(&Statements) -> &Statement;

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres").field("url", &self.url).finish()
    }
}

impl Postgres {
    /// Parses `url`, connects and migrates: an unreachable server, wrong credentials, a missing
    /// database or a newer schema fail here, each with its own error.
    pub(crate) async fn connect(url: &Secret) -> Result<Postgres, StoreError> {
        let redacted = RedactedUrl::new(url.expose());
        let scheme_ok = ["postgres://", "postgresql://"]
            .iter()
            .any(|s| url.expose().starts_with(s));
        if !scheme_ok {
            return Err(StoreError::BadUrl {
                url: redacted,
                detail: "it does not start with postgres://".into(),
            });
        }
        let mut config: Config = url
            .expose()
            .parse()
            // The URL parser's messages name options and byte offsets, never values.
            .map_err(|e: tokio_postgres::Error| StoreError::BadUrl {
                url: redacted.clone(),
                detail: source_text(&e),
            })?;
        if config.get_ssl_mode() == SslMode::Require {
            return Err(StoreError::TlsUnsupported { url: redacted });
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("canary");
        }
        let store = Postgres {
            config,
            url: redacted,
            connection: tokio::sync::Mutex::new(None),
        };
        store.connection().await?;
        Ok(store)
    }

    pub(crate) fn url(&self) -> &RedactedUrl {
        &self.url
    }

    /// The open connection, or a new one (migrated, statements prepared) when there is none or
    /// it broke.
    async fn connection(&self) -> Result<Arc<Connection>, StoreError> {
        let mut slot = self.connection.lock().await;
        if let Some(open) = slot.as_ref().filter(|c| !c.client.is_closed()) {
            return Ok(open.clone());
        }
        let (mut client, connection) = self
            .config
            .connect(NoTls)
            .await
            .map_err(|e| self.connect_error(e))?;
        let url = self.url.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(store = %url, error = %e, "state store connection closed");
            }
        });
        migrate(&mut client, &self.url).await?;
        let statements = Statements::prepare(&client)
            .await
            .map_err(|e| self.op_error(e))?;
        let open = Arc::new(Connection { client, statements });
        *slot = Some(open.clone());
        Ok(open)
    }

    /// One clear error per cause of a failed connection.
    fn connect_error(&self, e: tokio_postgres::Error) -> StoreError {
        let user = self.config.get_user().unwrap_or_default().to_owned();
        match e.code() {
            Some(code)
                if *code == SqlState::INVALID_PASSWORD
                    || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION =>
            {
                return StoreError::Authentication {
                    url: self.url.clone(),
                    user,
                    detail: db_message(&e),
                };
            }
            Some(code) if *code == SqlState::INVALID_CATALOG_NAME => {
                return StoreError::NoDatabase {
                    url: self.url.clone(),
                    database: self
                        .config
                        .get_dbname()
                        .map_or_else(|| user.clone(), str::to_owned),
                };
            }
            _ => {}
        }
        // The client refuses before asking the server when the server wants a password the
        // URL does not have.
        if e.as_db_error().is_none() && e.to_string() == "invalid configuration" {
            return StoreError::Authentication {
                url: self.url.clone(),
                user,
                detail: source_text(&e),
            };
        }
        self.op_error(e)
    }

    /// The error of a statement: the server gone is [`StoreError::Unreachable`] (the next call
    /// connects again).
    fn op_error(&self, e: tokio_postgres::Error) -> StoreError {
        if e.as_db_error().is_none() {
            let io = std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
            let text = e.to_string();
            if e.is_closed()
                || io
                || text.starts_with("error connecting")
                || text.starts_with("timeout")
            {
                return StoreError::Unreachable {
                    url: self.url.clone(),
                    detail: source_text(&e),
                };
            }
        }
        if let Some(code) = e.code()
            && (*code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW)
        {
            return StoreError::Unreachable {
                url: self.url.clone(),
                detail: db_message(&e),
            };
        }
        StoreError::Postgres {
            url: self.url.clone(),
            source: e,
        }
    }

    async fn query_opt(
        &self,
        pick: Pick,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, StoreError> {
        let c = self.connection().await?;
        c.client
            .query_opt(pick(&c.statements), params)
            .await
            .map_err(|e| self.op_error(e))
    }

    async fn query(
        &self,
        pick: Pick,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        let c = self.connection().await?;
        c.client
            .query(pick(&c.statements), params)
            .await
            .map_err(|e| self.op_error(e))
    }

    async fn execute(&self, pick: Pick, params: &[&(dyn ToSql + Sync)]) -> Result<u64, StoreError> {
        let c = self.connection().await?;
        c.client
            .execute(pick(&c.statements), params)
            .await
            .map_err(|e| self.op_error(e))
    }

    pub(crate) async fn insert_run(&self, run: &RunStart) -> Result<bool, StoreError> {
        let o = run.cooldown_override.as_ref();
        let bundle = run.bundle.to_string_lossy();
        let result = self
            .execute(
                |s| &s.insert_run,
                &[
                    &run.run_id,
                    &run.service,
                    &run.started,
                    &bundle.as_ref(),
                    &run.host,
                    &run.operator,
                    &o.map(|o| o.reason.as_str()),
                    &o.map(|o| o.overridden_run.as_str()),
                    &o.and_then(|o| o.by.as_deref()),
                    &o.and_then(|o| o.host.as_deref()),
                ],
            )
            .await?;
        Ok(result == 1)
    }

    pub(crate) async fn finish_run(
        &self,
        run_id: &str,
        finished: Millis,
        verdict: &'static str,
        reasons: String,
    ) -> Result<bool, StoreError> {
        let changed = self
            .execute(|s| &s.finish_run, &[&run_id, &finished, &verdict, &reasons])
            .await?;
        Ok(changed > 0)
    }

    pub(crate) async fn last_finished(
        &self,
        service: &str,
    ) -> Result<Option<(String, String, Millis)>, StoreError> {
        let row = self.query_opt(|s| &s.last_finished, &[&service]).await?;
        row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .transpose()
            .map_err(|e| self.op_error(e))
    }

    pub(crate) async fn get_run(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
        let row = self.query_opt(|s| &s.get_run, &[&run_id]).await?;
        row.as_ref()
            .map(row_to_record)
            .transpose()
            .map_err(|e| self.op_error(e))
    }

    pub(crate) async fn list_runs(&self, limit: i64) -> Result<Vec<RunRecord>, StoreError> {
        let rows = self.query(|s| &s.list_runs, &[&limit]).await?;
        rows.iter()
            .map(row_to_record)
            .collect::<Result<_, _>>()
            .map_err(|e| self.op_error(e))
    }

    pub(crate) async fn take_lock(
        &self,
        service: &str,
        holder: &Holder,
        ttl_ms: i64,
    ) -> Result<Option<Lease>, StoreError> {
        let row = self
            .query_opt(
                |s| &s.take_lock,
                &[
                    &service,
                    &holder.run_id,
                    &holder.host,
                    &holder.operator,
                    &i64::from(holder.pid),
                    &holder.started,
                    &ttl_ms,
                ],
            )
            .await?;
        row.map(|r| {
            Ok(Lease {
                service: service.to_owned(),
                run_id: holder.run_id.clone(),
                generation: r.try_get(0)?,
                since: r.try_get(1)?,
                expires: r.try_get(2)?,
            })
        })
        .transpose()
        .map_err(|e| self.op_error(e))
    }

    pub(crate) async fn lock_row(&self, service: &str) -> Result<Option<LockRow>, StoreError> {
        let row = self.query_opt(|s| &s.lock_row, &[&service]).await?;
        row.map(|r| {
            let pid: i64 = r.try_get(3)?;
            Ok(LockRow {
                holder: Holder {
                    run_id: r.try_get(0)?,
                    host: r.try_get(1)?,
                    operator: r.try_get(2)?,
                    pid: u32::try_from(pid).unwrap_or(u32::MAX),
                    started: r.try_get(4)?,
                },
                since: r.try_get(5)?,
                expires: r.try_get(6)?,
                now: r.try_get(7)?,
            })
        })
        .transpose()
        .map_err(|e| self.op_error(e))
    }

    pub(crate) async fn renew_lock(
        &self,
        lease: &Lease,
        ttl_ms: i64,
    ) -> Result<Option<Millis>, StoreError> {
        let row = self
            .query_opt(
                |s| &s.renew_lock,
                &[&lease.service, &lease.run_id, &lease.generation, &ttl_ms],
            )
            .await?;
        row.map(|r| r.try_get(0))
            .transpose()
            .map_err(|e| self.op_error(e))
    }

    pub(crate) async fn release_lock(&self, lease: &Lease) -> Result<bool, StoreError> {
        let changed = self
            .execute(
                |s| &s.release_lock,
                &[&lease.service, &lease.run_id, &lease.generation],
            )
            .await?;
        Ok(changed > 0)
    }

    pub(crate) async fn insert_journal(
        &self,
        run_id: &str,
        seq: i64,
        line: &str,
    ) -> Result<JournalInsert, StoreError> {
        let inserted = self
            .execute(|s| &s.insert_journal, &[&run_id, &seq, &line])
            .await?;
        if inserted == 1 {
            return Ok(JournalInsert::Stored);
        }
        let stored = self
            .query_opt(|s| &s.journal_line, &[&run_id, &seq])
            .await?;
        if let Some(row) = stored {
            return row
                .try_get(0)
                .map(JournalInsert::Exists)
                .map_err(|e| self.op_error(e));
        }
        let next = self.query_opt(|s| &s.journal_next, &[&run_id]).await?;
        let expected = next
            .map(|r| r.try_get(0))
            .transpose()
            .map_err(|e| self.op_error(e))?
            .unwrap_or(0);
        Ok(JournalInsert::Gap { expected })
    }

    pub(crate) async fn journal_lines(&self, run_id: &str) -> Result<Vec<String>, StoreError> {
        let rows = self.query(|s| &s.journal_lines, &[&run_id]).await?;
        rows.iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()
            .map_err(|e| self.op_error(e))
    }

    pub(crate) async fn last_seq(&self, run_id: &str) -> Result<Option<i64>, StoreError> {
        let row = self.query_opt(|s| &s.last_seq, &[&run_id]).await?;
        Ok(row.and_then(|r| r.try_get(0).ok().flatten()))
    }
}

/// Brings the database's schema to [`MIGRATIONS`]' version, or refuses a newer one.
async fn migrate(client: &mut Client, url: &RedactedUrl) -> Result<(), StoreError> {
    let pg = |source| StoreError::Postgres {
        url: url.clone(),
        source,
    };
    let known = MIGRATIONS.len() as i64;
    let tx = client.transaction().await.map_err(pg)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg)?;
    // Checked before creating: a user without CREATE on the schema can still use a store an
    // administrator migrated.
    let exists: bool = tx
        .query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[])
        .await
        .and_then(|r| r.try_get(0))
        .map_err(pg)?;
    let version: i64 = if exists {
        tx.query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])
            .await
            .and_then(|r| r.try_get(0))
            .map_err(pg)?
    } else {
        tx.batch_execute(
            "CREATE TABLE schema_version (
                version    BIGINT PRIMARY KEY NOT NULL,
                applied_ms BIGINT NOT NULL
            );",
        )
        .await
        .map_err(pg)?;
        0
    };
    if version > known {
        return Err(StoreError::TooNew {
            store: url.to_string(),
            found: version,
            known,
        });
    }
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        let v = i as i64 + 1;
        tx.batch_execute(migration).await.map_err(pg)?;
        tx.execute(
            &format!("INSERT INTO schema_version (version, applied_ms) VALUES ($1, {NOW_MS})"),
            &[&v],
        )
        .await
        .map_err(pg)?;
    }
    tx.commit().await.map_err(pg)
}

const SELECT_RUN: &str = "SELECT run_id, service, started_ms, finished_ms, verdict, reasons, bundle, \
     host, operator, override_reason, overridden_run, override_by, override_host FROM runs";

fn row_to_record(r: &Row) -> Result<RunRecord, tokio_postgres::Error> {
    let reason: Option<String> = r.try_get(9)?;
    let overridden: Option<String> = r.try_get(10)?;
    Ok(RunRecord {
        run_id: r.try_get(0)?,
        service: r.try_get(1)?,
        started: r.try_get(2)?,
        finished: r.try_get(3)?,
        verdict: r.try_get(4)?,
        reasons: r.try_get(5)?,
        bundle: r.try_get::<_, String>(6)?.into(),
        host: r.try_get(7)?,
        operator: r.try_get(8)?,
        cooldown_override: match reason {
            Some(reason) => Some(Override {
                reason,
                overridden_run: overridden.unwrap_or_default(),
                by: r.try_get(11)?,
                host: r.try_get(12)?,
            }),
            None => None,
        },
    })
}

/// The server's own words for a database error ("FATAL: password authentication failed for
/// user ..."), or the error's.
fn db_message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map_or_else(|| source_text(e), |db| db.message().to_owned())
}

/// "error connecting to server: Connection refused (os error 111)".
fn source_text(e: &tokio_postgres::Error) -> String {
    match std::error::Error::source(e) {
        Some(source) => format!("{e}: {source}"),
        None => e.to_string(),
    }
}
