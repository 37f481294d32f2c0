//! The dead man's switch: a controller holds a lease with a TTL; when a held lease lapses
//! without renewal, the proxy sends all traffic back to the baseline by itself, logs it and
//! counts it in `canary_proxy_lease_expirations_total`.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::control::{Control, WeightCause, millis};
use crate::distribute::CanaryWeight;

struct Lease {
    holder: String,
    ttl: Duration,
    expires_at: Instant,
}

/// A held lease, as the admin API reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LeaseView {
    /// Who holds it (free text from the controller, such as its run id).
    pub holder: String,
    /// The TTL of the last renewal, in milliseconds.
    pub ttl_ms: u64,
    /// Time left before it lapses, in milliseconds.
    pub expires_in_ms: u64,
}

/// The lease slot and the signal that wakes the watchdog when it changes.
#[derive(Default)]
pub(crate) struct LeaseBook {
    slot: Mutex<Option<Lease>>,
    changed: Notify,
}

impl LeaseBook {
    /// Takes or renews the lease for `ttl` from now.
    pub fn renew(&self, holder: String, ttl: Duration) -> LeaseView {
        let view = {
            let mut slot = self.slot();
            let lease = Lease {
                holder,
                ttl,
                expires_at: Instant::now() + ttl,
            };
            let view = view_of(&lease);
            *slot = Some(lease);
            view
        };
        self.changed.notify_one();
        view
    }

    /// Gives the lease up without tripping the switch; returns whether one was held.
    pub fn release(&self) -> bool {
        let held = self.slot().take().is_some();
        self.changed.notify_one();
        held
    }

    pub fn view(&self) -> Option<LeaseView> {
        self.slot().as_ref().map(view_of)
    }

    fn deadline(&self) -> Option<Instant> {
        self.slot().as_ref().map(|l| l.expires_at)
    }

    /// Removes the lease if it has lapsed by `now`.
    fn take_lapsed(&self, now: Instant) -> Option<Lease> {
        let mut slot = self.slot();
        if slot.as_ref().is_some_and(|l| l.expires_at <= now) {
            slot.take()
        } else {
            None
        }
    }

    fn slot(&self) -> MutexGuard<'_, Option<Lease>> {
        // Plain stores under the lock: a poisoned lock still holds a consistent value.
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn view_of(lease: &Lease) -> LeaseView {
    LeaseView {
        holder: lease.holder.clone(),
        ttl_ms: millis(lease.ttl),
        expires_in_ms: millis(lease.expires_at.saturating_duration_since(Instant::now())),
    }
}

/// Runs the watchdog until `cancel`: sleeps until the lease's deadline (re-armed on every
/// renewal) and trips the switch when it passes.
pub(crate) async fn watch(control: Arc<Control>, cancel: CancellationToken) {
    loop {
        let changed = control.lease.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        match control.lease.deadline() {
            None => tokio::select! {
                () = &mut changed => {}
                () = cancel.cancelled() => return,
            },
            Some(deadline) => tokio::select! {
                () = tokio::time::sleep_until(deadline) => trip(&control),
                () = &mut changed => {}
                () = cancel.cancelled() => return,
            },
        }
    }
}

fn trip(control: &Control) {
    let Some(lease) = control.lease.take_lapsed(Instant::now()) else {
        return;
    };
    let previous = control.set_weight(CanaryWeight::ZERO, WeightCause::LeaseExpired);
    control.metrics.count_lease_expiration();
    tracing::warn!(
        holder = %lease.holder,
        ttl_ms = millis(lease.ttl),
        previous_canary_weight = previous.canary(),
        "lease expired without renewal: dead man's switch sent all traffic to the baseline"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn lapsed_lease_returns_traffic_to_baseline_and_renewal_postpones_it() {
        let control = Arc::new(Control::new(CanaryWeight::new(50).unwrap()));
        let cancel = CancellationToken::new();
        let watchdog = tokio::spawn(watch(control.clone(), cancel.clone()));

        control.lease.renew("run-1".into(), Duration::from_secs(10));
        tokio::time::sleep(Duration::from_secs(8)).await;
        control.lease.renew("run-1".into(), Duration::from_secs(10));
        tokio::time::sleep(Duration::from_secs(8)).await;
        assert_eq!(control.weight().canary(), 50, "renewed lease still held");

        tokio::time::sleep(Duration::from_millis(2_001)).await;
        assert_eq!(control.weight(), CanaryWeight::ZERO);
        assert!(control.lease.view().is_none());
        assert!(
            control
                .metrics
                .render(&control.gauges())
                .contains("canary_proxy_lease_expirations_total 1")
        );

        // A released lease never trips.
        control.set_weight(CanaryWeight::new(5).unwrap(), WeightCause::Admin);
        control.lease.renew("run-2".into(), Duration::from_secs(1));
        assert!(control.lease.release());
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(control.weight().canary(), 5);

        cancel.cancel();
        watchdog.await.unwrap();
    }
}
