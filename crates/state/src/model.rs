//! What the store holds, as the rest of canary sees it: runs, cooldowns, run locks.

use std::path::PathBuf;

use canary_core::Millis;

/// A run as it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunStart {
    pub run_id: String,
    pub service: String,
    pub started: Millis,
    /// The bundle directory, on `host`.
    pub bundle: PathBuf,
    /// The machine the controller runs on.
    pub host: String,
    /// Who started it (the user name).
    pub operator: String,
    /// When the run went ahead despite a cooldown: why, whose cooldown, who and from where.
    pub cooldown_override: Option<Override>,
}

/// An overridden cooldown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    /// The operator's `--reason`.
    pub reason: String,
    /// The run whose cooldown it overrode.
    pub overridden_run: String,
    /// Who overrode it; `None` in histories written before canary recorded it.
    pub by: Option<String>,
    /// From which machine; `None` in histories written before canary recorded it.
    pub host: Option<String>,
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
    /// The bundle directory, on `host`.
    pub bundle: PathBuf,
    /// `None` for runs recorded before canary kept the host.
    pub host: Option<String>,
    /// `None` for runs recorded before canary kept the operator.
    pub operator: Option<String>,
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

/// Who holds, or asks for, a service's run lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub run_id: String,
    /// The controller's machine.
    pub host: String,
    /// Who started the run.
    pub operator: String,
    /// The controller's process id on `host`.
    pub pid: u32,
    /// When the run started (the controller's clock).
    pub started: Millis,
}

/// A run lock this controller holds until `expires` (the store's clock) unless renewed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub service: String,
    pub run_id: String,
    /// Grows by one each time the lock changes hands (taken, taken over, released): a lease
    /// whose generation is no longer the lock's has been lost.
    pub generation: i64,
    /// When this holder took the lock (the store's clock).
    pub since: Millis,
    /// When the lease lapses unless renewed (the store's clock).
    pub expires: Millis,
}

/// A lock someone else holds, with a lease that has not lapsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub service: String,
    pub holder: Holder,
    /// Since when (the store's clock).
    pub since: Millis,
    /// When the lease lapses unless its holder renews it (the store's clock).
    pub expires: Millis,
    /// The store's clock when this was read: `expires - at` is how long the lease has left,
    /// whatever this machine's clock says.
    pub at: Millis,
}

/// What [`crate::Store::acquire`] got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquired {
    /// The lock is this controller's: it was free, released, or its last lease had lapsed.
    Lease(Lease),
    /// Someone holds it.
    Held(Held),
}
