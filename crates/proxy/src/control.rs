//! The control state shared by the data path and the admin API: the split (canary weight and
//! rollback fence), each arm's health, the lease, and the metrics. Reads on the data path are
//! single atomic loads.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::arm::Arm;
use crate::config::HealthCheck;
use crate::distribute::{CanaryWeight, Readiness, SplitState};
use crate::lease::LeaseBook;
use crate::metrics::{Gauges, Metrics};

/// Why the weight changed; goes to the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WeightCause {
    /// `PUT /weights`.
    Admin,
    /// The lease lapsed (dead man's switch).
    LeaseExpired,
}

/// The fence bit of the split byte; the low seven bits hold the canary weight.
const FENCED: u8 = 0x80;

fn encode(split: SplitState) -> u8 {
    split.weight.canary() | if split.canary_fenced { FENCED } else { 0 }
}

fn decode(byte: u8) -> SplitState {
    SplitState {
        // Only `encode` stores, and it stores a validated weight.
        weight: CanaryWeight::new(byte & !FENCED).unwrap_or(CanaryWeight::ZERO),
        canary_fenced: byte & FENCED != 0,
    }
}

impl WeightCause {
    fn as_str(self) -> &'static str {
        match self {
            WeightCause::Admin => "admin",
            WeightCause::LeaseExpired => "lease_expired",
        }
    }
}

/// What active health checks know about one arm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Not checked yet (treated as ready).
    Unknown,
    /// The last `rise` checks passed.
    Healthy,
    /// The last `fall` checks failed.
    Unhealthy,
}

/// One arm's health, as reported by `GET /healthz` and [`crate::ProxyHandle::arm_health`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ArmHealth {
    /// The current verdict.
    pub status: HealthStatus,
    /// Failed checks in a row.
    pub consecutive_failures: u32,
    /// Passed checks in a row.
    pub consecutive_passes: u32,
    /// Why the last failed check failed.
    pub last_error: Option<String>,
    /// When the arm was last checked, in milliseconds since the Unix epoch.
    pub last_checked_unix_ms: Option<u64>,
}

impl ArmHealth {
    const UNKNOWN: ArmHealth = ArmHealth {
        status: HealthStatus::Unknown,
        consecutive_failures: 0,
        consecutive_passes: 0,
        last_error: None,
        last_checked_unix_ms: None,
    };
}

pub(crate) struct Control {
    /// The split: weight and fence in one byte, so the data path reads both at once.
    split: AtomicU8,
    /// 0 = Unknown, 1 = Healthy, 2 = Unhealthy, per arm; the data path's readiness.
    status: [AtomicU8; 2],
    health: Mutex<[ArmHealth; 2]>,
    pub lease: LeaseBook,
    pub metrics: Metrics,
}

impl Control {
    pub fn new(weight: CanaryWeight) -> Self {
        Control {
            split: AtomicU8::new(weight.canary()),
            status: [AtomicU8::new(0), AtomicU8::new(0)],
            health: Mutex::new([ArmHealth::UNKNOWN, ArmHealth::UNKNOWN]),
            lease: LeaseBook::default(),
            metrics: Metrics::default(),
        }
    }

    pub fn split(&self) -> SplitState {
        decode(self.split.load(Ordering::Relaxed))
    }

    pub fn weight(&self) -> CanaryWeight {
        self.split().weight
    }

    /// Sets the weight and logs the change; returns the previous weight. A canary that loses
    /// all its traffic is fenced (see [`SplitState::with_weight`]); a lapsed lease fences it
    /// whatever its weight was, since the controller that owned the run is gone.
    pub fn set_weight(&self, weight: CanaryWeight, cause: WeightCause) -> CanaryWeight {
        let update = |byte: u8| {
            let mut next = decode(byte).with_weight(weight);
            if cause == WeightCause::LeaseExpired {
                next.canary_fenced = true;
            }
            Some(encode(next))
        };
        // The closure always returns `Some`, so both arms hold the previous value.
        let (Ok(before) | Err(before)) =
            self.split
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, update);
        let (before, after) = (decode(before), self.split());
        if before != after {
            tracing::info!(
                from = before.weight.canary(),
                to = after.weight.canary(),
                canary_fenced = after.canary_fenced,
                cause = cause.as_str(),
                "canary weight changed"
            );
        }
        before.weight
    }

    /// Fences the canary against pinned requests, or lifts the fence (an operator's explicit
    /// choice); returns whether it was fenced before.
    pub fn set_canary_fence(&self, fenced: bool) -> bool {
        let previous = if fenced {
            self.split.fetch_or(FENCED, Ordering::Relaxed)
        } else {
            self.split.fetch_and(!FENCED, Ordering::Relaxed)
        };
        let was = previous & FENCED != 0;
        if was != fenced {
            tracing::warn!(
                canary_fenced = fenced,
                "canary pin fence changed by the admin API"
            );
        }
        was
    }

    pub fn readiness(&self) -> Readiness {
        let ready = |arm: Arm| self.status[arm.index()].load(Ordering::Relaxed) != 2;
        Readiness {
            baseline: ready(Arm::Baseline),
            canary: ready(Arm::Canary),
        }
    }

    pub fn arm_health(&self, arm: Arm) -> ArmHealth {
        self.health_table()[arm.index()].clone()
    }

    /// Records one health-check result and applies `fall`/`rise`.
    pub fn record_probe(&self, arm: Arm, result: Result<(), String>, policy: &HealthCheck) {
        let mut table = self.health_table();
        let health = &mut table[arm.index()];
        let before = health.status;
        health.last_checked_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        match result {
            Ok(()) => {
                health.consecutive_passes = health.consecutive_passes.saturating_add(1);
                health.consecutive_failures = 0;
                health.last_error = None;
                if before != HealthStatus::Healthy
                    && (before == HealthStatus::Unknown || health.consecutive_passes >= policy.rise)
                {
                    health.status = HealthStatus::Healthy;
                }
            }
            Err(why) => {
                health.consecutive_failures = health.consecutive_failures.saturating_add(1);
                health.consecutive_passes = 0;
                if health.consecutive_failures >= policy.fall {
                    health.status = HealthStatus::Unhealthy;
                }
                health.last_error = Some(why);
            }
        }
        let after = health.status;
        let code = match after {
            HealthStatus::Unknown => 0,
            HealthStatus::Healthy => 1,
            HealthStatus::Unhealthy => 2,
        };
        self.status[arm.index()].store(code, Ordering::Relaxed);
        if before != after {
            match after {
                HealthStatus::Unhealthy => tracing::warn!(
                    arm = arm.as_str(),
                    failures = health.consecutive_failures,
                    error = health.last_error.as_deref().unwrap_or(""),
                    "arm is unhealthy"
                ),
                _ => tracing::info!(arm = arm.as_str(), status = ?after, "arm health changed"),
            }
        }
    }

    pub fn gauges(&self) -> Gauges {
        let table = self.health_table();
        let split = self.split();
        Gauges {
            weight: split.weight,
            canary_fenced: split.canary_fenced,
            health: [table[0].status, table[1].status],
            lease_held: self.lease.view().is_some(),
        }
    }

    fn health_table(&self) -> MutexGuard<'_, [ArmHealth; 2]> {
        // A panic while holding this lock cannot leave the table inconsistent (plain stores).
        self.health.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Milliseconds, saturating, for JSON.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fall_and_rise_drive_readiness() {
        let control = Control::new(CanaryWeight::ZERO);
        let policy = HealthCheck {
            fall: 2,
            rise: 2,
            ..HealthCheck::default()
        };
        let steps: [(Result<(), String>, HealthStatus, bool); 6] = [
            (Err("refused".into()), HealthStatus::Unknown, true),
            (Err("refused".into()), HealthStatus::Unhealthy, false),
            (Ok(()), HealthStatus::Unhealthy, false),
            (Ok(()), HealthStatus::Healthy, true),
            (Err("503".into()), HealthStatus::Healthy, true),
            (Ok(()), HealthStatus::Healthy, true),
        ];
        for (i, (result, status, ready)) in steps.into_iter().enumerate() {
            control.record_probe(Arm::Canary, result, &policy);
            assert_eq!(control.arm_health(Arm::Canary).status, status, "step {i}");
            assert_eq!(control.readiness().canary, ready, "step {i}");
            assert!(control.readiness().baseline);
        }
    }
}
