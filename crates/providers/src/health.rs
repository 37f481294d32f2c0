//! Health checks of an arm straight at its own address, for load balancers that do not report
//! the arms' health to canary (HAProxy through a command, nginx, a hosting platform's CLI): the
//! runbook's "unrecoverable error in canary → rollback" must not depend on the embedded proxy.
//!
//! Like HAProxy's `check fall N rise M`: an arm turns unhealthy after `fall` failed checks in a
//! row (no answer within the timeout, or a status other than 2xx), and healthy again after
//! `rise` good ones. Each turn to unhealthy is one [`Event::ArmUnhealthy`].

use std::time::Duration;

use canary_core::{ArmRole, Event};
use tokio::sync::mpsc;

use crate::error_text::error_chain;

/// One arm's health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub arm: ArmRole,
    /// What is fetched with `GET`, such as `http://10.0.0.7:8080/healthz`.
    pub url: String,
    pub interval: Duration,
    pub timeout: Duration,
    /// Failed checks in a row that make the arm unhealthy.
    pub fall: u32,
    /// Good checks in a row that make it healthy again.
    pub rise: u32,
}

impl HealthCheck {
    /// HAProxy's defaults: every 2 s, unhealthy after 3 failures, healthy after 2 successes.
    pub fn new(arm: ArmRole, url: impl Into<String>) -> HealthCheck {
        HealthCheck {
            arm,
            url: url.into(),
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(2),
            fall: 3,
            rise: 2,
        }
    }

    /// Checks until the task is aborted or `events` closes; sends one `ArmUnhealthy` each time
    /// the arm turns unhealthy.
    pub fn watch(self, events: mpsc::Sender<Event>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            // A fresh connection per check, as HAProxy's checks do: a kept-alive connection can
            // outlive the listener that accepted it and hide a service that is gone.
            let client = match reqwest::Client::builder()
                .timeout(self.timeout)
                .pool_max_idle_per_host(0)
                .no_proxy()
                .build()
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "cannot build the health-check client");
                    return;
                }
            };
            let mut state = Streak::default();
            loop {
                let result = match client.get(&self.url).send().await {
                    Ok(r) if r.status().is_success() => Ok(()),
                    Ok(r) => Err(format!("GET {} answered {}", self.url, r.status())),
                    Err(e) => Err(format!("GET {} failed: {}", self.url, error_chain(&e))),
                };
                if let Some(detail) = state.record(result, self.fall, self.rise) {
                    let detail = format!("{detail} ({} failed checks in a row)", self.fall);
                    let event = Event::ArmUnhealthy {
                        arm: self.arm,
                        detail,
                    };
                    if events.send(event).await.is_err() {
                        return;
                    }
                }
                tokio::time::sleep(self.interval).await;
            }
        })
    }
}

/// Consecutive results of one arm's checks.
#[derive(Debug, Default)]
struct Streak {
    failed: u32,
    passed: u32,
    unhealthy: bool,
}

impl Streak {
    /// Takes one check's result; returns the failure's detail when the arm just turned
    /// unhealthy.
    fn record(&mut self, result: Result<(), String>, fall: u32, rise: u32) -> Option<String> {
        match result {
            Ok(()) => {
                self.failed = 0;
                self.passed += 1;
                if self.unhealthy && self.passed >= rise {
                    self.unhealthy = false;
                }
                None
            }
            Err(detail) => {
                self.passed = 0;
                self.failed += 1;
                if !self.unhealthy && self.failed >= fall {
                    self.unhealthy = true;
                    return Some(detail);
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail() -> Result<(), String> {
        Err("GET http://a/healthz answered 503".into())
    }

    #[test]
    fn an_arm_turns_unhealthy_after_fall_failures_in_a_row_and_once_only() {
        let mut s = Streak::default();
        assert_eq!(s.record(fail(), 3, 2), None);
        assert_eq!(s.record(fail(), 3, 2), None);
        assert_eq!(
            s.record(Ok(()), 3, 2),
            None,
            "a good check resets the count"
        );
        assert_eq!(s.record(fail(), 3, 2), None);
        assert_eq!(s.record(fail(), 3, 2), None);
        assert!(s.record(fail(), 3, 2).is_some(), "the third in a row");
        assert_eq!(s.record(fail(), 3, 2), None, "reported once");
    }

    #[test]
    fn an_arm_must_rise_before_it_can_turn_unhealthy_again() {
        let mut s = Streak::default();
        for _ in 0..3 {
            s.record(fail(), 3, 2);
        }
        assert!(s.unhealthy);
        s.record(Ok(()), 3, 2);
        assert!(s.unhealthy, "one good check is not enough");
        s.record(Ok(()), 3, 2);
        assert!(!s.unhealthy);
        for _ in 0..2 {
            assert_eq!(s.record(fail(), 3, 2), None);
        }
        assert!(s.record(fail(), 3, 2).is_some());
    }
}
