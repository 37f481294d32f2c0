//! How the evidence writes time: the run stamp in artifact names, RFC 3339 instants, and the
//! runbook's `T+mm:ss` offsets from the start of the window.
//!
//! Every time arrives as [`Millis`] (milliseconds since the Unix epoch) from the caller; nothing
//! here reads a clock. Instants are the wall clock's; offsets are said in the runbook's time,
//! the plan's `time_scale` undone ([`canary_core::duration::runbook`]).

use std::time::Duration;

use canary_core::Millis;
use canary_core::duration::runbook;
use jiff::Timestamp;

/// The run stamp used in artifact names: the run's start in UTC as `YYYYMMDDTHHMMSSZ`
/// (`20251019T140000Z`). `None` when `at` is outside the years 0001–9999.
pub fn run_stamp(at: Millis) -> Option<String> {
    let ts = Timestamp::from_millisecond(at).ok()?;
    Some(ts.strftime("%Y%m%dT%H%M%SZ").to_string())
}

/// `at` as RFC 3339 in UTC: `2025-10-19T14:00:00Z`, or `2025-10-19T14:00:00.120Z` when the
/// milliseconds are not zero. Outside the representable range it falls back to
/// `<ms> ms since the epoch`, so a renderer never fails on a bad clock.
pub fn rfc3339(at: Millis) -> String {
    match Timestamp::from_millisecond(at) {
        Ok(ts) if at.rem_euclid(1000) == 0 => ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        Ok(ts) => ts.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        Err(_) => format!("{at} ms since the epoch"),
    }
}

/// The offset from `start` to `at` on the runbook's own clock: [`clock_offset`] at scale 1.
pub fn offset(start: Millis, at: Millis) -> String {
    clock_offset(start, at, 1.0)
}

/// The offset from `start` to `at` in the runbook's time, as a clock shows it: `T+05:00`,
/// `T+60:00`, `T+75:30` (minutes are not wrapped into hours; sub-second parts are dropped).
/// Before the start: `T-00:05`. A plan runs `time_scale` times faster than the runbook's clock
/// (1 in production, the demo's compressed clock otherwise): 5 wall seconds at 60 are `T+05:00`.
pub fn clock_offset(start: Millis, at: Millis, time_scale: f64) -> String {
    let (sign, d) = runbook_delta(start, at, time_scale);
    let secs = d.as_secs();
    format!("T{sign}{:02}:{:02}", secs / 60, secs % 60)
}

/// The signed offset from `start` to `at`, in the runbook's time.
fn runbook_delta(start: Millis, at: Millis, time_scale: f64) -> (char, Duration) {
    let delta = at.saturating_sub(start);
    let sign = if delta < 0 { '-' } else { '+' };
    (
        sign,
        runbook(Duration::from_millis(delta.unsigned_abs()), time_scale),
    )
}

/// The offset from `start` to `at` in the runbook's time, as the runbook names its checkpoints:
/// `T+8m`, `T+8m30s`, `T+45s`, `T+60m` (minutes are not wrapped into hours), rounded to whole
/// seconds. A plan runs `time_scale` times faster than the runbook's clock (1 in production,
/// the demo's compressed clock otherwise).
pub fn runbook_offset(start: Millis, at: Millis, time_scale: f64) -> String {
    let (sign, d) = runbook_delta(start, at, time_scale);
    let secs = d.as_millis().saturating_add(500) / 1000;
    let sign = if secs == 0 { '+' } else { sign };
    match (secs / 60, secs % 60) {
        (0, s) => format!("T{sign}{s}s"),
        (m, 0) => format!("T{sign}{m}m"),
        (m, s) => format!("T{sign}{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Millis = 1_760_882_400_000; // 2025-10-19T14:00:00Z

    #[test]
    fn stamps_and_offsets_read_as_the_runbook_writes_them() {
        assert_eq!(run_stamp(T0).as_deref(), Some("20251019T140000Z"));
        assert_eq!(run_stamp(T0 + 1_999).as_deref(), Some("20251019T140001Z"));
        assert_eq!(run_stamp(i64::MAX), None);
        assert_eq!(rfc3339(T0), "2025-10-19T14:00:00Z");
        assert_eq!(rfc3339(T0 + 250), "2025-10-19T14:00:00.250Z");
        assert_eq!(rfc3339(T0 - 1), "2025-10-19T13:59:59.999Z");
        assert_eq!(
            rfc3339(i64::MAX),
            format!("{} ms since the epoch", i64::MAX)
        );
        assert_eq!(offset(T0, T0), "T+00:00");
        assert_eq!(offset(T0, T0 + 5 * 60_000 + 999), "T+05:00");
        assert_eq!(offset(T0, T0 + 75 * 60_000 + 30_000), "T+75:30");
        assert_eq!(offset(T0, T0 - 5_000), "T-00:05");
        assert_eq!(runbook_offset(T0, T0 + 8 * 60_000, 1.0), "T+8m");
        assert_eq!(runbook_offset(T0, T0 + 60 * 60_000, 1.0), "T+60m");
        assert_eq!(runbook_offset(T0, T0 + 510_400, 1.0), "T+8m30s");
        assert_eq!(runbook_offset(T0, T0, 1.0), "T+0s");
        // The demo's 60-times compressed clock: 8 wall seconds are 8 runbook minutes.
        assert_eq!(runbook_offset(T0, T0 + 8_000, 60.0), "T+8m");
        assert_eq!(runbook_offset(T0, T0 + 750, 60.0), "T+45s");
        assert_eq!(runbook_offset(T0, T0 - 5_000, 1.0), "T-5s");
        // An odd scale: the compression's rounding to the millisecond does not show.
        assert_eq!(runbook_offset(T0, T0 + 120_000, 7.5), "T+15m");
        assert_eq!(runbook_offset(T0, T0 + 6_667, 7.5), "T+50s");
        // As a clock shows it.
        assert_eq!(clock_offset(T0, T0 + 5_000, 60.0), "T+05:00");
        assert_eq!(clock_offset(T0, T0 + 60_000, 60.0), "T+60:00");
        assert_eq!(clock_offset(T0, T0 + 500, 60.0), "T+00:30");
        assert_eq!(clock_offset(T0, T0 + 120_000, 7.5), "T+15:00");
        assert_eq!(clock_offset(T0, T0 - 1_000, 60.0), "T-01:00");
        assert_eq!(clock_offset(T0, T0 + 5 * 60_000 + 999, 1.0), "T+05:00");
    }
}
