//! Fault injection: the `--fault KIND[:rate][@onset][~ramp]` knobs that make a relay-demo
//! instance misbehave the way a bad release would, and the runtime schedule that decides which
//! requests a fault strikes and how hard.
//!
//! Every fault is a real behaviour change in the request path (a delay that really happens, a
//! stream that is really cut, a read that really runs without tenant context, rows of another
//! tenant that really pass the store filter, connections that are really held), so each one moves
//! exactly the metric a guardrail watches for it and nothing else.
//!
//! A fault with a ramp does not switch on at its onset: it grows over the ramp, the way a real
//! regression drifts in (a cache going cold, a queue filling, a rollout reaching more nodes), so
//! its metric crosses the threshold as a drift rather than a step. What grows is the fault's
//! effect ([`FaultKind::ramp_grows`]): the delay of the slow faults, the share of requests struck
//! of the others, the connections the pool-saturation job holds.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What a fault breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// The first result of an affected stream waits for a call made when the request arrived
    /// that now answers only after [`SLOW_TTFV_DELAY`] (up to 5 % more): the stream's time to
    /// first value is at least that (moves `ttfv_ms` past the runbook's 1500 ms threshold, while
    /// staying under the runbook's 2 s request timeout).
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
    /// An affected ANN search takes [`SLOW_ANN_DELAY`] longer (moves
    /// `memory_ann_query_latency_ms` past 200 ms while TTFV stays under 1500 ms). The index is
    /// the service's own, so the store's pool is not held meanwhile.
    SlowAnn,
    /// A runaway job holds a share of the connection pool (the fault's rate, always leaving one
    /// connection free) from the onset on (moves `db_connection_pool_utilization` up).
    PoolSaturation,
}

/// Time after arrival before which a stream struck by [`FaultKind::SlowTtfv`] sends no result.
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

    /// What the fault's ramp grows.
    pub fn ramp_grows(self) -> RampGrows {
        match self {
            FaultKind::SlowTtfv | FaultKind::SlowAnn | FaultKind::PoolSaturation => {
                RampGrows::Intensity
            }
            FaultKind::SseDrop | FaultKind::RlsErrors | FaultKind::TenantLeak => RampGrows::Share,
        }
    }

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

/// What a fault's ramp grows from nothing to the full fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RampGrows {
    /// The effect on each struck request (a delay) or on the pool (connections held); the share
    /// of requests struck is the rate throughout.
    Intensity,
    /// The share of requests struck, up to the rate; each struck request fails fully.
    Share,
}

/// One fault: what breaks, for which share of requests, from when on, how fast it grows.
///
/// Parsed from `KIND[:rate][@onset][~ramp]`: `rate` is a fraction in `0..=1` (default 1),
/// `onset` a duration after process start (`90s`, `5m`, `1.5s`, `250ms`; default `0s`) and
/// `ramp` how long the fault takes to grow to its full effect after the onset (default `0s`: all
/// at once). For `pool-saturation` the rate is the share of pool connections the runaway job
/// holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fault {
    /// What breaks.
    pub kind: FaultKind,
    /// Fraction of requests struck once active (for `pool-saturation`: share of the pool held).
    pub rate: f64,
    /// Delay after the service starts before the fault begins.
    pub onset: Duration,
    /// Time from the onset to the full effect; zero switches the fault on at once.
    pub ramp: Duration,
}

impl Fault {
    /// A fault that strikes every request from the start.
    pub fn always(kind: FaultKind) -> Self {
        Fault {
            kind,
            rate: 1.0,
            onset: Duration::ZERO,
            ramp: Duration::ZERO,
        }
    }

    /// How far the fault has grown `elapsed` after the service started: `None` before its
    /// onset, then from 0 to 1 (the full fault) over its ramp.
    pub fn level(&self, elapsed: Duration) -> Option<f64> {
        let since_onset = elapsed.checked_sub(self.onset)?;
        if since_onset >= self.ramp {
            return Some(1.0);
        }
        Some(since_onset.as_secs_f64() / self.ramp.as_secs_f64())
    }

    /// The fault for a service started `elapsed` into the schedule it should follow (a service
    /// restarted mid-run): the onset comes `elapsed` sooner; a fault already growing starts again
    /// from nothing and ends its ramp when the original would have.
    pub fn advanced_by(self, elapsed: Duration) -> Fault {
        let end = self.onset + self.ramp;
        Fault {
            onset: self.onset.saturating_sub(elapsed),
            ramp: end.saturating_sub(elapsed.max(self.onset)),
            ..self
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
        )?;
        if !self.ramp.is_zero() {
            write!(f, "~{}ms", self.ramp.as_millis())?;
        }
        Ok(())
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
    /// The ramp is not a duration.
    #[error(
        "invalid fault ramp `{0}`; expected a duration such as `5m`, `30s` or `0s` after `~`, e.g. `slow-ttfv@90s~5m`"
    )]
    InvalidRamp(String),
}

impl FromStr for Fault {
    type Err = FaultParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (s, ramp) = match s.split_once('~') {
            Some((head, ramp)) => (
                head,
                parse_duration(ramp)
                    .ok_or_else(|| FaultParseError::InvalidRamp(ramp.to_owned()))?,
            ),
            None => (s, Duration::ZERO),
        };
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
            ramp,
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
/// Which requests a fault strikes is deterministic: each request seen while the fault is active
/// adds its current share `s` (the rate, or for a fault whose ramp grows the share, the rate
/// times its level) to a running sum, and is struck iff that sum passes a whole number — so
/// exactly a share `s` of requests is struck (every one at `s = 1`, every tenth at `s = 0.1`),
/// evenly spread while the share grows.
#[derive(Debug)]
pub struct FaultSchedule {
    started: Instant,
    entries: Vec<ScheduledFault>,
}

#[derive(Debug)]
struct ScheduledFault {
    fault: Fault,
    /// The running sum of shares, as `f64` bits.
    struck_sum: AtomicU64,
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
                    struck_sum: AtomicU64::new(0f64.to_bits()),
                })
                .collect(),
        }
    }

    /// Whether a fault of `kind` strikes the current request. Advances that fault's count when
    /// the fault is active, so call it once per request and decision.
    pub fn strikes(&self, kind: FaultKind) -> bool {
        self.strike(kind).is_some()
    }

    /// Whether a fault of `kind` strikes the current request, and how hard: `Some(intensity)`,
    /// from 0 to 1 — the level its ramp has reached for a fault whose ramp grows the intensity,
    /// always 1 for one whose ramp grows the share struck. Advances that fault's count when the
    /// fault is active, so call it once per request and decision.
    pub fn strike(&self, kind: FaultKind) -> Option<f64> {
        let elapsed = self.started.elapsed();
        let mut struck: Option<f64> = None;
        for entry in self.entries.iter().filter(|e| e.fault.kind == kind) {
            let Some(level) = entry.fault.level(elapsed) else {
                continue;
            };
            let (share, intensity) = match kind.ramp_grows() {
                RampGrows::Intensity => (entry.fault.rate, level),
                RampGrows::Share => (entry.fault.rate * level, 1.0),
            };
            if entry.passes_a_whole_number(share) {
                struck = Some(struck.map_or(intensity, |s| s.max(intensity)));
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

impl ScheduledFault {
    /// Adds `share` to the running sum; whether the sum passed a whole number.
    fn passes_a_whole_number(&self, share: f64) -> bool {
        let mut passed = false;
        let _ = self
            .struck_sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                let before = f64::from_bits(bits);
                let after = before + share;
                passed = after.floor() > before.floor();
                Some(after.to_bits())
            });
        passed
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
            assert_eq!(
                fault.ramp,
                Duration::ZERO,
                "{text}: a step unless a ramp is given"
            );
            assert_eq!(fault.to_string().parse::<Fault>().unwrap(), fault, "{text}");
        }
    }

    #[test]
    fn parses_a_ramp_after_the_onset() {
        let cases = [
            ("slow-ttfv~5m", 1.0, 0, 300_000),
            ("slow-ttfv@90s~5m", 1.0, 90_000, 300_000),
            ("sse-drop:0.2@1m~30s", 0.2, 60_000, 30_000),
            ("slow-ann~0s", 1.0, 0, 0),
        ];
        for (text, rate, onset_ms, ramp_ms) in cases {
            let fault: Fault = text.parse().unwrap();
            assert_eq!(fault.rate, rate, "{text}");
            assert_eq!(fault.onset, Duration::from_millis(onset_ms), "{text}");
            assert_eq!(fault.ramp, Duration::from_millis(ramp_ms), "{text}");
            assert_eq!(fault.to_string().parse::<Fault>().unwrap(), fault, "{text}");
        }
        let message = "slow-ttfv@1m~soon".parse::<Fault>().unwrap_err();
        assert!(matches!(message, FaultParseError::InvalidRamp(_)));
        assert!(message.to_string().contains("~5m"), "{message}");
    }

    #[test]
    fn level_grows_over_the_ramp() {
        let fault: Fault = "slow-ttfv@10s~20s".parse().unwrap();
        let at = |s: u64| fault.level(Duration::from_secs(s));
        assert_eq!(at(9), None);
        assert_eq!(at(10), Some(0.0));
        assert_eq!(at(15), Some(0.25));
        assert_eq!(at(20), Some(0.5));
        assert_eq!(at(30), Some(1.0));
        assert_eq!(at(3600), Some(1.0));
        let step: Fault = "slow-ttfv@10s".parse().unwrap();
        assert_eq!(step.level(Duration::from_secs(10)), Some(1.0));
    }

    #[test]
    fn a_restarted_service_keeps_the_schedule() {
        let fault: Fault = "slow-ttfv@10s~20s".parse().unwrap();
        let secs = |f: Fault| (f.onset.as_secs(), f.ramp.as_secs());
        // Before the onset: the same fault, sooner.
        assert_eq!(secs(fault.advanced_by(Duration::from_secs(4))), (6, 20));
        // Mid-ramp: grows again over what is left of the ramp.
        assert_eq!(secs(fault.advanced_by(Duration::from_secs(25))), (0, 5));
        // Past the ramp: full from the start.
        assert_eq!(secs(fault.advanced_by(Duration::from_secs(60))), (0, 0));
    }

    #[test]
    fn a_ramp_grows_the_share_struck_or_the_intensity() {
        // Far into a 1 h ramp's first half: about a quarter of sse-drop's rate of 1.
        let started = Instant::now()
            .checked_sub(Duration::from_secs(15 * 60))
            .unwrap();
        let share: Fault = "sse-drop~1h".parse().unwrap();
        let schedule = FaultSchedule::new(&[share], started);
        let struck = (0..1000)
            .filter(|_| schedule.strike(FaultKind::SseDrop) == Some(1.0))
            .count();
        assert!((245..=260).contains(&struck), "{struck}");
        // slow-ann strikes every request, a quarter as hard.
        let intensity: Fault = "slow-ann~1h".parse().unwrap();
        let schedule = FaultSchedule::new(&[intensity], started);
        for _ in 0..10 {
            let level = schedule.strike(FaultKind::SlowAnn).unwrap();
            assert!((0.25..0.26).contains(&level), "{level}");
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
