//! Fault injection: the `--fault KIND[:rate][@onset]` knobs that make a relay-demo instance
//! misbehave the way a bad release would, and the runtime schedule that decides which requests a
//! fault strikes.
//!
//! Every fault is a real behaviour change in the request path (a delay that really happens, a
//! stream that is really cut, a read that really runs without tenant context, rows of another
//! tenant that really pass the store filter, connections that are really held), so each one moves
//! exactly the metric a guardrail watches for it and nothing else.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What a fault breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// The first result of an affected stream is delayed by [`SLOW_TTFV_DELAY`]
    /// (moves `ttfv_ms` past the runbook's 1500 ms threshold).
    SlowTtfv,
    /// An affected stream is cut (connection aborted) before its `done` event
    /// (moves `sse_complete_total` away from `sse_total`).
    SseDrop,
    /// An affected read is issued without tenant context; the store refuses it
    /// (moves `memory_rls_policy_errors_total`; the request fails with 500).
    RlsErrors,
    /// An affected read runs under a broken row policy that lets other tenants' rows through; the
    /// final check catches only a share of them (`ServeOptions::leak_catch_share`), counts those in
    /// `memory_cross_tenant_attempts_total`, and the rest reach the client.
    TenantLeak,
    /// An affected ANN search takes [`SLOW_ANN_DELAY`] longer, holding its pool connection
    /// (moves `memory_ann_query_latency_ms` past 200 ms while TTFV stays under 1500 ms).
    SlowAnn,
    /// A runaway job holds a share of the connection pool (the fault's rate, always leaving one
    /// connection free) from the onset on (moves `db_connection_pool_utilization` up).
    PoolSaturation,
}

/// Delay added before the first result of a stream struck by [`FaultKind::SlowTtfv`].
pub const SLOW_TTFV_DELAY: Duration = Duration::from_millis(1800);
/// Delay added to an ANN search struck by [`FaultKind::SlowAnn`].
pub const SLOW_ANN_DELAY: Duration = Duration::from_millis(400);

impl FaultKind {
    /// Every kind, in the order the CLI documents them.
    pub const ALL: [FaultKind; 6] = [
        FaultKind::SlowTtfv,
        FaultKind::SseDrop,
        FaultKind::RlsErrors,
        FaultKind::TenantLeak,
        FaultKind::SlowAnn,
        FaultKind::PoolSaturation,
    ];

    /// The name used on the command line (`slow-ttfv`, `sse-drop`, ...).
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::SlowTtfv => "slow-ttfv",
            FaultKind::SseDrop => "sse-drop",
            FaultKind::RlsErrors => "rls-errors",
            FaultKind::TenantLeak => "tenant-leak",
            FaultKind::SlowAnn => "slow-ann",
            FaultKind::PoolSaturation => "pool-saturation",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FaultKind {
    type Err = FaultParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FaultKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| FaultParseError::UnknownKind(s.to_owned()))
    }
}

/// One fault: what breaks, for which share of requests, from when on.
///
/// Parsed from `KIND[:rate][@onset]`: `rate` is a fraction in `0..=1` (default 1) and `onset` a
/// duration after process start (`90s`, `5m`, `1.5s`, `250ms`; default `0s`). For
/// `pool-saturation` the rate is the share of pool connections the runaway job holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fault {
    /// What breaks.
    pub kind: FaultKind,
    /// Fraction of requests struck once active (for `pool-saturation`: share of the pool held).
    pub rate: f64,
    /// Delay after the service starts before the fault begins.
    pub onset: Duration,
}

impl Fault {
    /// A fault that strikes every request from the start.
    pub fn always(kind: FaultKind) -> Self {
        Fault {
            kind,
            rate: 1.0,
            onset: Duration::ZERO,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}@{}ms",
            self.kind,
            self.rate,
            self.onset.as_millis()
        )
    }
}

/// Why a `--fault` argument was rejected; each message says what a valid one looks like.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FaultParseError {
    /// The kind is not one of the six known kinds.
    #[error(
        "unknown fault kind `{0}`; expected one of slow-ttfv, sse-drop, rls-errors, tenant-leak, slow-ann, pool-saturation"
    )]
    UnknownKind(String),
    /// The rate is not a number in `0..=1`.
    #[error("invalid fault rate `{0}`; expected a fraction between 0 and 1, e.g. `sse-drop:0.05`")]
    InvalidRate(String),
    /// The onset is not a duration.
    #[error(
        "invalid fault onset `{0}`; expected a duration such as `90s`, `5m`, `1.5s` or `250ms`, e.g. `slow-ttfv@90s`"
    )]
    InvalidOnset(String),
}

impl FromStr for Fault {
    type Err = FaultParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (head, onset) = match s.split_once('@') {
            Some((head, onset)) => (
                head,
                parse_duration(onset)
                    .ok_or_else(|| FaultParseError::InvalidOnset(onset.to_owned()))?,
            ),
            None => (s, Duration::ZERO),
        };
        let (kind, rate) = match head.split_once(':') {
            Some((kind, rate)) => {
                let value: f64 = rate
                    .parse()
                    .map_err(|_| FaultParseError::InvalidRate(rate.to_owned()))?;
                if !(0.0..=1.0).contains(&value) {
                    return Err(FaultParseError::InvalidRate(rate.to_owned()));
                }
                (kind, value)
            }
            None => (head, 1.0),
        };
        Ok(Fault {
            kind: kind.parse()?,
            rate,
            onset,
        })
    }
}

/// Parses `1.5s`, `90s`, `5m`, `2h`, `250ms` into a duration (fractions allowed, unit required).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().ok()?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(seconds).ok()
}

/// The faults of one running instance, with the clock they are scheduled against.
///
/// Which requests a fault strikes is deterministic: with rate `r`, the `n`-th request seen while
/// the fault is active is struck iff `floor((n+1)·r) > floor(n·r)`, so exactly a share `r` of
/// requests is struck (every one at `r = 1`, every tenth at `r = 0.1`).
#[derive(Debug)]
pub struct FaultSchedule {
    started: Instant,
    entries: Vec<ScheduledFault>,
}

#[derive(Debug)]
struct ScheduledFault {
    fault: Fault,
    seen: AtomicU64,
}

impl FaultSchedule {
    /// Schedules `faults` against a clock that starts at `started`.
    pub fn new(faults: &[Fault], started: Instant) -> Self {
        FaultSchedule {
            started,
            entries: faults
                .iter()
                .map(|&fault| ScheduledFault {
                    fault,
                    seen: AtomicU64::new(0),
                })
                .collect(),
        }
    }

    /// Whether a fault of `kind` strikes the current request. Advances that fault's counter when
    /// the fault is active, so call it once per request and decision.
    pub fn strikes(&self, kind: FaultKind) -> bool {
        let elapsed = self.started.elapsed();
        let mut struck = false;
        for entry in self.entries.iter().filter(|e| e.fault.kind == kind) {
            if elapsed < entry.fault.onset {
                continue;
            }
            let n = entry.seen.fetch_add(1, Ordering::Relaxed) as f64;
            let rate = entry.fault.rate;
            if ((n + 1.0) * rate).floor() > (n * rate).floor() {
                struck = true;
            }
        }
        struck
    }

    /// The configured faults of `kind` (used by the pool-saturation job).
    pub fn of_kind(&self, kind: FaultKind) -> impl Iterator<Item = Fault> + '_ {
        self.entries
            .iter()
            .map(|e| e.fault)
            .filter(move |f| f.kind == kind)
    }

    /// When the schedule's clock started (the process start for a served instance).
    pub fn started(&self) -> Instant {
        self.started
    }
}

/// Decides, row by row, whether the degraded final check catches a foreign row under
/// [`FaultKind::TenantLeak`]: a deterministic share `catch_share` of foreign rows is caught.
#[derive(Debug)]
pub struct LeakCatcher {
    catch_share: f64,
    seen: AtomicU64,
}

impl LeakCatcher {
    /// A catcher that stops `catch_share` (clamped to `0..=1`) of the foreign rows it sees.
    pub fn new(catch_share: f64) -> Self {
        LeakCatcher {
            catch_share: catch_share.clamp(0.0, 1.0),
            seen: AtomicU64::new(0),
        }
    }

    /// Whether the next foreign row is caught.
    pub fn catches_next(&self) -> bool {
        let n = self.seen.fetch_add(1, Ordering::Relaxed) as f64;
        ((n + 1.0) * self.catch_share).floor() > (n * self.catch_share).floor()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        let cases = [
            ("slow-ttfv", FaultKind::SlowTtfv, 1.0, 0),
            ("sse-drop:0.05", FaultKind::SseDrop, 0.05, 0),
            ("rls-errors@90s", FaultKind::RlsErrors, 1.0, 90_000),
            ("tenant-leak:0.5@5m", FaultKind::TenantLeak, 0.5, 300_000),
            ("slow-ann:1@1.5s", FaultKind::SlowAnn, 1.0, 1_500),
            (
                "pool-saturation:0.9@250ms",
                FaultKind::PoolSaturation,
                0.9,
                250,
            ),
        ];
        for (text, kind, rate, onset_ms) in cases {
            let fault: Fault = text.parse().unwrap();
            assert_eq!(fault.kind, kind, "{text}");
            assert_eq!(fault.rate, rate, "{text}");
            assert_eq!(fault.onset, Duration::from_millis(onset_ms), "{text}");
        }
    }

    #[test]
    fn rejects_bad_forms_with_a_useful_message() {
        assert!(matches!(
            "slow".parse::<Fault>(),
            Err(FaultParseError::UnknownKind(_))
        ));
        assert!(matches!(
            "sse-drop:1.5".parse::<Fault>(),
            Err(FaultParseError::InvalidRate(_))
        ));
        assert!(matches!(
            "sse-drop:x".parse::<Fault>(),
            Err(FaultParseError::InvalidRate(_))
        ));
        assert!(matches!(
            "sse-drop@90".parse::<Fault>(),
            Err(FaultParseError::InvalidOnset(_))
        ));
        let message = "sse-drop@soon".parse::<Fault>().unwrap_err().to_string();
        assert!(message.contains("90s"), "{message}");
    }

    #[test]
    fn strikes_exactly_the_configured_share() {
        let fault: Fault = "sse-drop:0.25".parse().unwrap();
        let schedule = FaultSchedule::new(&[fault], Instant::now());
        let struck = (0..1000)
            .filter(|_| schedule.strikes(FaultKind::SseDrop))
            .count();
        assert_eq!(struck, 250);
        assert!(!schedule.strikes(FaultKind::SlowAnn));
    }

    #[test]
    fn does_not_strike_before_onset() {
        let fault: Fault = "slow-ann@1h".parse().unwrap();
        let schedule = FaultSchedule::new(&[fault], Instant::now());
        assert!((0..100).all(|_| !schedule.strikes(FaultKind::SlowAnn)));
    }

    #[test]
    fn leak_catcher_catches_its_share() {
        let catcher = LeakCatcher::new(0.5);
        let caught = (0..10).filter(|_| catcher.catches_next()).count();
        assert_eq!(caught, 5);
        let none = LeakCatcher::new(0.0);
        assert!((0..10).all(|_| !none.catches_next()));
    }
}
