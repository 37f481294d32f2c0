//! Traffic routers: setting and reading back the canary's share of traffic on a load balancer
//! — the embedded proxy, HAProxy, nginx, or any CLI — and applying a change so that it is
//! retried, read back and verified.
//!
//! Weights are integer percent of traffic to the canary (`0..=100`); the baseline gets the
//! rest. Every router can [`TrafficRouter::get`] the split back from the load balancer itself,
//! which is what [`set_verified`] and [`verify`] check against. No router puts a secret (admin
//! token, environment values) in its `Debug` output, logs, errors or `describe` text.

// Tests may unwrap: a panic there is the failure report.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod command;
mod embedded;
mod haproxy;
mod nginx;
mod process;

use std::fmt;
use std::time::Duration;

pub use crate::BoxFuture;
pub use command::{CommandConfig, CommandRouter};
pub use embedded::{ArmState, EmbeddedRouter, EmbeddedRouterConfig, PinAccess, ProxyHealth};
pub use haproxy::{HaproxyConfig, HaproxyEndpoint, HaproxyRouter};
pub use nginx::{NginxConfig, NginxRouter};

/// The split as a load balancer reports it, in percent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Split {
    /// Percent of traffic to the canary.
    pub canary: u8,
    /// Percent of traffic to the baseline.
    pub baseline: u8,
}

impl Split {
    /// The split that sends `canary_pct` percent to the canary; fails above 100.
    pub fn with_canary(canary_pct: u8) -> Result<Split, TrafficError> {
        if canary_pct > 100 {
            return Err(TrafficError::InvalidWeight(canary_pct));
        }
        Ok(Split {
            canary: canary_pct,
            baseline: 100 - canary_pct,
        })
    }

    /// The split of two relative weights, rounded to whole percent; `None` when both are 0
    /// (no traffic flows at all).
    pub fn from_weights(canary: u64, baseline: u64) -> Option<Split> {
        let total = canary.checked_add(baseline)?;
        if total == 0 {
            return None;
        }
        // Round half up; lossless: the quotient is at most 100.
        let pct = ((canary * 200 + total) / (total * 2)) as u8;
        Some(Split {
            canary: pct,
            baseline: 100 - pct,
        })
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "canary {} % / baseline {} %", self.canary, self.baseline)
    }
}

/// A load balancer that can split traffic between the baseline and the canary.
pub trait TrafficRouter: Send + Sync {
    /// The provider name: `embedded`, `haproxy`, `nginx` or `command`.
    fn name(&self) -> &'static str;

    /// Asks the load balancer to send `canary_pct` percent to the canary. Success means the
    /// load balancer accepted the change, not that it is in effect: use [`set_verified`].
    fn set(&self, canary_pct: u8) -> BoxFuture<'_, Result<(), TrafficError>>;

    /// Reads the split back from the load balancer.
    fn get(&self) -> BoxFuture<'_, Result<Split, TrafficError>>;

    /// Human-readable state of the load balancer (for the `CANARY_LB_DIFF` artifact). Never
    /// contains a secret.
    fn describe(&self) -> BoxFuture<'_, Result<String, TrafficError>>;
}

/// How [`set_verified`] retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total (at least 1).
    pub attempts: u32,
    /// Wait after the first failed attempt; doubles after each further one.
    pub initial_backoff: Duration,
    /// Longest wait between two attempts.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// Five attempts, waiting 250 ms, 500 ms, 1 s, 2 s between them.
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt number `attempt` (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// Which step of applying a change failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Asking the load balancer to change.
    Set,
    /// Reading the split back.
    ReadBack,
    /// The split read back differs from the one asked for.
    Verify,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Set => "set",
            Step::ReadBack => "read back",
            Step::Verify => "verify",
        })
    }
}

/// Why a traffic operation failed. Messages name the router, the step and what to check.
#[derive(Debug, thiserror::Error)]
pub enum TrafficError {
    /// The weight is not a percentage.
    #[error("canary weight {0} is out of range: give a percentage from 0 to 100")]
    InvalidWeight(u8),
    /// The router's configuration is unusable.
    #[error("{router} router configuration: {reason}")]
    Config {
        /// The router.
        router: &'static str,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// The load balancer could not be reached.
    #[error("{router}: cannot reach {endpoint}: {reason}")]
    Unreachable {
        /// The router.
        router: &'static str,
        /// Where it tried.
        endpoint: String,
        /// The transport's reason.
        reason: String,
    },
    /// The load balancer refused the credentials.
    #[error("{router}: {endpoint} refused the credentials (HTTP 401): check the admin token")]
    Unauthorized {
        /// The router.
        router: &'static str,
        /// Where it tried.
        endpoint: String,
    },
    /// The load balancer refused the request.
    #[error("{router}: {what} was refused: {detail}")]
    Rejected {
        /// The router.
        router: &'static str,
        /// The request.
        what: String,
        /// The load balancer's answer.
        detail: String,
    },
    /// The load balancer's answer could not be understood.
    #[error("{router}: cannot read {what}: {detail}")]
    Unreadable {
        /// The router.
        router: &'static str,
        /// What was being read.
        what: String,
        /// What is wrong with it.
        detail: String,
    },
    /// A shell command failed.
    #[error("{router}: `{command}` failed ({status}){}", stderr_suffix(.stderr))]
    Command {
        /// The router.
        router: &'static str,
        /// The command line, secrets scrubbed.
        command: String,
        /// Exit status or signal.
        status: String,
        /// Its standard error (tail), secrets scrubbed.
        stderr: String,
    },
    /// An operation took too long.
    #[error("{router}: {what} did not finish within {} ms", .after.as_millis())]
    Timeout {
        /// The router.
        router: &'static str,
        /// The operation.
        what: String,
        /// The limit.
        after: Duration,
    },
    /// Reading or writing a local file failed.
    #[error("{router}: {what}: {source}")]
    Io {
        /// The router.
        router: &'static str,
        /// The operation and path.
        what: String,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The load balancer's split is not the expected one.
    #[error("{router}: the load balancer reports {actual}, expected {expected}")]
    Drift {
        /// The router.
        router: &'static str,
        /// What `canary` set.
        expected: Split,
        /// What the load balancer reports.
        actual: Split,
    },
    /// A change could not be applied and verified.
    #[error(
        "{router}: setting the canary to {target} % failed at step `{step}` after {attempts} attempt(s): {last}"
    )]
    NotApplied {
        /// The router.
        router: &'static str,
        /// The canary percent asked for.
        target: u8,
        /// The step of the last attempt that failed.
        step: Step,
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error.
        last: Box<TrafficError>,
    },
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.trim().is_empty() {
        String::new()
    } else {
        format!(": {}", stderr.trim())
    }
}

impl TrafficError {
    /// Whether trying again could help (configuration and range errors cannot).
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            TrafficError::InvalidWeight(_)
                | TrafficError::Config { .. }
                | TrafficError::Unauthorized { .. }
        )
    }

    /// The failed step, for [`TrafficError::NotApplied`].
    pub fn step(&self) -> Option<Step> {
        match self {
            TrafficError::NotApplied { step, .. } => Some(*step),
            _ => None,
        }
    }
}

/// Sets the canary to `canary_pct` and verifies it by reading the split back, retrying the
/// whole set-and-read with backoff. Returns the split read back.
///
/// Errors: [`TrafficError::InvalidWeight`] at once for a weight above 100; otherwise
/// [`TrafficError::NotApplied`] naming the step of the last failed attempt (`set`,
/// `read back` or `verify`) and its cause. Non-retryable errors (configuration, credentials)
/// stop at the first attempt. A rollback that cannot be verified is the caller's to escalate.
pub async fn set_verified(
    router: &dyn TrafficRouter,
    canary_pct: u8,
    policy: &RetryPolicy,
) -> Result<Split, TrafficError> {
    let expected = Split::with_canary(canary_pct)?;
    let attempts = policy.attempts.max(1);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (step, err) = match router.set(canary_pct).await {
            Err(err) => (Step::Set, err),
            Ok(()) => match router.get().await {
                Err(err) => (Step::ReadBack, err),
                Ok(actual) if actual == expected => {
                    tracing::info!(
                        router = router.name(),
                        canary = actual.canary,
                        baseline = actual.baseline,
                        attempt,
                        "traffic split set and verified"
                    );
                    return Ok(actual);
                }
                Ok(actual) => (
                    Step::Verify,
                    TrafficError::Drift {
                        router: router.name(),
                        expected,
                        actual,
                    },
                ),
            },
        };
        let give_up = attempt >= attempts || !err.is_retryable();
        tracing::warn!(
            router = router.name(),
            target = canary_pct,
            attempt,
            attempts,
            step = %step,
            error = %err,
            will_retry = !give_up,
            "traffic change not applied"
        );
        if give_up {
            return Err(TrafficError::NotApplied {
                router: router.name(),
                target: canary_pct,
                step,
                attempts: attempt,
                last: Box::new(err),
            });
        }
        tokio::time::sleep(policy.backoff(attempt)).await;
    }
}

/// Reads the split back and checks it is still `canary_pct` — the check that catches a weight
/// changed behind `canary`'s back. Returns the split, or [`TrafficError::Drift`].
pub async fn verify(router: &dyn TrafficRouter, canary_pct: u8) -> Result<Split, TrafficError> {
    let expected = Split::with_canary(canary_pct)?;
    let actual = router.get().await?;
    if actual == expected {
        Ok(actual)
    } else {
        tracing::warn!(
            router = router.name(),
            expected_canary = expected.canary,
            actual_canary = actual.canary,
            "traffic split changed outside canary"
        );
        Err(TrafficError::Drift {
            router: router.name(),
            expected,
            actual,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_round_to_whole_percent() {
        let table = [
            ((5, 95), Some(5)),
            ((13, 243), Some(5)),
            ((5, 50), Some(9)),
            ((1, 1), Some(50)),
            ((0, 7), Some(0)),
            ((7, 0), Some(100)),
            ((0, 0), None),
        ];
        for ((c, b), pct) in table {
            assert_eq!(Split::from_weights(c, b).map(|s| s.canary), pct, "{c}/{b}");
        }
        assert!(Split::with_canary(101).is_err());
        assert_eq!(
            Split::with_canary(5).unwrap().to_string(),
            "canary 5 % / baseline 95 %"
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let policy = RetryPolicy::default();
        let waits: Vec<u128> = (1..=6).map(|a| policy.backoff(a).as_millis()).collect();
        assert_eq!(waits, [250, 500, 1000, 2000, 4000, 5000]);
    }
}
