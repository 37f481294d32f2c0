//! Why the store could not answer, each cause once, saying what to do. A PostgreSQL address
//! appears only as a [`RedactedUrl`]: no message and no `Debug` shows its password.

use std::path::PathBuf;

use crate::url::RedactedUrl;

/// Why the run state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot create the state directory {path}: {source}; set a writable state directory in canary.toml"
    )]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the run history {path} cannot be used: {source}; {}",
        sqlite_advice(source)
    )]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "the state store URL {url} is not usable: {detail}; write it as postgres://USER:PASSWORD@HOST:PORT/DATABASE"
    )]
    BadUrl { url: RedactedUrl, detail: String },
    #[error(
        "the state store {url} asks for TLS (sslmode=require), which this canary does not speak yet; reach PostgreSQL over loopback or a private network (sslmode=disable or prefer)"
    )]
    TlsUnsupported { url: RedactedUrl },
    #[error(
        "cannot reach the state store {url}: {detail}; check that PostgreSQL runs there and accepts TCP connections from this machine (listen_addresses, port, firewall)"
    )]
    Unreachable { url: RedactedUrl, detail: String },
    #[error(
        "the state store {url} refused user {user:?}: {detail}; check the user and password in [state] url or CANARY_STATE_URL (the password is not shown here)"
    )]
    Authentication {
        url: RedactedUrl,
        user: String,
        detail: String,
    },
    #[error(
        "the state store {url} has no database {database:?}; create it (createdb -O USER {database}) or fix the database name in [state] url or CANARY_STATE_URL"
    )]
    NoDatabase { url: RedactedUrl, database: String },
    #[error("the state store {url} failed: {source}")]
    Postgres {
        url: RedactedUrl,
        source: tokio_postgres::Error,
    },
    #[error(
        "the state store {store} has schema version {found}, newer than this canary understands ({known}); upgrade canary — every runner sharing this store needs one that knows version {found}"
    )]
    TooNew {
        store: String,
        found: i64,
        known: i64,
    },
    #[error("run {run_id:?} is already in the history: every run needs its own id")]
    Duplicate { run_id: String },
    #[error("run {run_id:?} is not in the history: record its start before its finish")]
    Unknown { run_id: String },
    #[error(
        "the run lock on {service} is no longer run {run_id}'s: {now}; stop acting on this run"
    )]
    LeaseLost {
        service: String,
        run_id: String,
        /// Who holds it now, in words.
        now: String,
    },
    #[error(
        "the run lock on {service} kept changing hands while run {run_id} asked for it; try again"
    )]
    LockContended { service: String, run_id: String },
    #[error(
        "journal line {seq} of run {run_id} is already stored with different content: two controllers wrote this run, or its journal was edited"
    )]
    JournalConflict { run_id: String, seq: u64 },
    #[error(
        "journal line {seq} of run {run_id} would leave a gap: the store holds lines up to {expected} (exclusive); store the missing lines first, in order"
    )]
    JournalGap {
        run_id: String,
        seq: u64,
        expected: u64,
    },
    #[error("the state store's worker stopped: {detail}")]
    Worker { detail: String },
}

/// What to do about an SQLite error: a file another process kept busy is not broken.
fn sqlite_advice(source: &rusqlite::Error) -> &'static str {
    match source.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            "other canary processes on this machine kept it busy past the wait: retry; for many concurrent runs, share one PostgreSQL ([state] url)"
        }
        _ => "check its permissions, or move it aside to start a new history",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_history_is_not_called_broken() {
        let busy = StoreError::Sqlite {
            path: PathBuf::from("/s/history.sqlite"),
            source: rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                None,
            ),
        }
        .to_string();
        assert!(busy.contains("kept it busy past the wait: retry"), "{busy}");
        assert!(!busy.contains("permissions"), "{busy}");
        let broken = StoreError::Sqlite {
            path: PathBuf::from("/s/history.sqlite"),
            source: rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                None,
            ),
        }
        .to_string();
        assert!(broken.contains("check its permissions"), "{broken}");
    }
}
