//! One canary per service at a time, across machines (DESIGN §13): the run holds the service's
//! lock in the state store by a lease it renews; a second controller is refused with who holds
//! it, or waits (`--wait`, `--standby`); a lease that lapsed — its controller died — can be
//! taken over.

use std::time::Duration;

use canary_core::Millis;
use canary_state::{Acquired, Held, Holder, Lease, Store, StoreError};
use tokio::sync::watch;

/// `alice@ci-7 (pid 4242)`.
pub fn describe_holder(held: &Held) -> String {
    format!(
        "{}@{} (pid {})",
        held.holder.operator, held.holder.host, held.holder.pid
    )
}

/// Why a run cannot start while another controller holds the service, and what to do.
pub fn held_message(held: &Held) -> String {
    let left = Duration::from_millis((held.expires - held.at).max(0) as u64);
    format!(
        "{} is being canaried by run {} of {} since {} (lease renewed until {}, {} from now): one canary per service at a time. Wait for it with `canary run --wait`, or, if that controller died, take its run over with `canary resume {}` once the lease lapses",
        held.service,
        held.holder.run_id,
        describe_holder(held),
        canary_evidence::stamp::rfc3339(held.since),
        canary_evidence::stamp::rfc3339(held.expires),
        canary_core::duration::Human(left),
        held.holder.run_id
    )
}

/// The service's lock, held by this controller and renewed in the background.
pub struct RunLock {
    store: Store,
    lease: watch::Receiver<Lease>,
    /// Set when the lease was lost to another controller: this one must stop acting.
    lost: watch::Receiver<Option<String>>,
    renewal: tokio::task::JoinHandle<()>,
}

impl RunLock {
    /// Takes `service`'s lock for `holder`'s run, for `ttl` at a time; or says who holds it.
    pub async fn try_take(
        store: &Store,
        service: &str,
        holder: &Holder,
        ttl: Duration,
    ) -> Result<Result<RunLock, Held>, StoreError> {
        Ok(match store.acquire(service, holder, ttl).await? {
            Acquired::Lease(lease) => Ok(RunLock::renewing(store.clone(), lease, ttl)),
            Acquired::Held(held) => Err(held),
        })
    }

    /// Waits until `service`'s lock is released or its lease lapsed (`--wait`, `--standby`),
    /// saying once per holder whom it waits for. Which of the two it was, the run's history
    /// says: a run without a finish lost its controller.
    pub async fn wait_until_free(store: &Store, service: &str) -> Result<(), StoreError> {
        let mut told: Option<String> = None;
        loop {
            let Some(held) = store.holder(service).await? else {
                return Ok(());
            };
            if told.as_deref() != Some(held.holder.run_id.as_str()) {
                eprintln!(
                    "canary: waiting for {service}: run {} of {} holds it (lease until {})",
                    held.holder.run_id,
                    describe_holder(&held),
                    canary_evidence::stamp::rfc3339(held.expires)
                );
                told = Some(held.holder.run_id.clone());
            }
            let left = (held.expires - held.at).max(0) as u64;
            tokio::time::sleep(Duration::from_millis(left.clamp(200, 2_000))).await;
        }
    }

    /// Keeps `lease` alive: renews it every third of `ttl`. A store that does not answer is
    /// retried (the lease may lapse meanwhile; nobody else can take it without the store);
    /// a lease another controller took over sets [`RunLock::lost`].
    fn renewing(store: Store, lease: Lease, ttl: Duration) -> RunLock {
        let (lease_tx, lease_rx) = watch::channel(lease);
        let (lost_tx, lost_rx) = watch::channel(None);
        let renewer = store.clone();
        let renewal = tokio::spawn(async move {
            let every = ttl / 3;
            let mut warned = false;
            loop {
                tokio::time::sleep(every).await;
                let current = lease_tx.borrow().clone();
                match renewer.renew(&current, ttl).await {
                    Ok(renewed) => {
                        if warned {
                            tracing::info!(target: "canary", "state store back: run lock renewed");
                            warned = false;
                        }
                        let _ = lease_tx.send(renewed);
                    }
                    Err(StoreError::LeaseLost { .. }) => {
                        let _ = lost_tx.send(Some(format!(
                            "the run lock on {} was taken over by another controller while this one could not renew it: this controller stops without touching traffic",
                            current.service
                        )));
                        return;
                    }
                    Err(e) if !warned => {
                        tracing::warn!(target: "canary", error = %e, "cannot renew the run lock; still deciding on the local journal, retrying");
                        warned = true;
                    }
                    Err(_) => {}
                }
            }
        });
        RunLock {
            store,
            lease: lease_rx,
            lost: lost_rx,
            renewal,
        }
    }

    /// Resolves when the lease was lost, with why.
    pub async fn lost(&self) -> String {
        let mut lost = self.lost.clone();
        loop {
            if let Some(why) = lost.borrow().clone() {
                return why;
            }
            if lost.changed().await.is_err() {
                // The renewal task ended without losing the lease: never resolves.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Gives the lock back (the run ended).
    pub async fn release(self) {
        self.renewal.abort();
        let lease = self.lease.borrow().clone();
        if let Err(e) = self.store.release(&lease).await {
            tracing::warn!(target: "canary", error = %e, "cannot release the run lock: it lapses by itself");
        }
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        self.renewal.abort();
    }
}

/// The holder this controller is, for `run_id` started at `started`.
pub fn holder(run_id: &str, started: Millis) -> Holder {
    let (operator, host) = crate::run::operator_and_host();
    Holder {
        run_id: run_id.to_owned(),
        host,
        operator,
        pid: std::process::id(),
        started,
    }
}
