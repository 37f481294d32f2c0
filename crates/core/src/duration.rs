//! Durations written as people and Prometheus write them: `60m`, `1h30m`, `100ms`, `24h`.

use std::fmt;
use std::time::Duration;

/// Why a duration did not parse. The message says what a valid one looks like.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration: write a number and a unit, such as \"5m\" or \"30s\"")]
    Empty,
    #[error(
        "{input:?} is not a duration: write a whole number followed by a unit (ms, s, m, h, d, w), units from largest to smallest, such as \"90s\", \"1h30m\" or \"100ms\""
    )]
    Invalid { input: String },
}

const UNITS: [(&str, u64); 7] = [
    ("y", 365 * 24 * 3_600_000),
    ("w", 7 * 24 * 3_600_000),
    ("d", 24 * 3_600_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

/// Parses a Prometheus-style duration: one or more `<integer><unit>` groups, units in decreasing
/// order, each at most once (`1h30m`, `5m`, `250ms`). `0` alone means zero.
pub fn parse(input: &str) -> Result<Duration, DurationError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let invalid = || DurationError::Invalid {
        input: input.to_owned(),
    };
    let bytes = s.as_bytes();
    let mut total: u64 = 0;
    let mut i = 0;
    let mut last_unit = usize::MAX; // index into UNITS of the previous group
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return Err(invalid());
        }
        let n: u64 = s[start..i].parse().map_err(|_| invalid())?;
        let unit_start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit = &s[unit_start..i];
        let idx = UNITS
            .iter()
            .position(|(u, _)| *u == unit)
            .ok_or_else(invalid)?;
        if last_unit != usize::MAX && idx <= last_unit {
            return Err(invalid());
        }
        last_unit = idx;
        total = n
            .checked_mul(UNITS[idx].1)
            .and_then(|ms| total.checked_add(ms))
            .ok_or_else(invalid)?;
    }
    Ok(Duration::from_millis(total))
}

/// Formats a duration the way [`parse`] reads it, largest units first (`1h30m`, `500ms`, `0s`).
/// Sub-millisecond parts are dropped.
pub fn format(d: Duration) -> String {
    let mut ms = d.as_millis() as u64;
    if ms == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, size) in UNITS.iter().skip(1) {
        // Years are not used for output: they are ambiguous to read in a runbook.
        if ms >= *size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}

/// A duration that prints as [`format`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Human(pub Duration);

impl fmt::Display for Human {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format(self.0))
    }
}

/// How long `wall` — a span on a run's clock — lasts in the runbook's time, for a plan that runs
/// `time_scale` times faster than the runbook ([`crate::plan::Plan::time_scale`]: 1 in
/// production, 60 in the demo). Every duration and offset shown to people goes through here, so
/// a compressed run's 5-second `for` reads as the runbook's `5m` wherever it is shown.
///
/// At scale 1 `wall` comes back unchanged. Otherwise the product is rounded to whole seconds
/// (whole milliseconds below one second): compressing rounded each duration to the millisecond,
/// and undoing it must give the runbook's `15m` back, not `14m59s997ms`. A scale that is not a
/// positive finite number counts as 1.
pub fn runbook(wall: Duration, time_scale: f64) -> Duration {
    if time_scale == 1.0 || !time_scale.is_finite() || time_scale <= 0.0 {
        return wall;
    }
    // Saturating float-to-int conversion: an absurd product is a large duration, never a panic.
    let ms = (wall.as_secs_f64() * 1000.0 * time_scale).round() as u64;
    if ms < 1000 {
        Duration::from_millis(ms)
    } else {
        Duration::from_secs(ms.saturating_add(500) / 1000)
    }
}

/// [`runbook`] of `wall`, printed as [`Human`] prints: `5m`, `1h`, `30s`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Runbook(pub Duration, pub f64);

impl fmt::Display for Runbook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format(runbook(self.0, self.1)))
    }
}

/// `wall` in the runbook's time, with the wall time beside it when the clock is compressed: `1h`
/// in production, `1h (runbook time; compressed 60×: 1m of wall time)` otherwise. For the one
/// place of a view that states the clock (the run's window, at its start).
pub fn runbook_with_wall(wall: Duration, time_scale: f64) -> String {
    let said = Runbook(wall, time_scale).to_string();
    if runbook(wall, time_scale) == wall {
        return said;
    }
    format!(
        "{said} (runbook time; compressed {time_scale}×: {} of wall time)",
        format(wall)
    )
}

/// The time scale of a run on the runbook's own clock: the serde default of `time_scale` fields,
/// which production runs (and journals written before compression existed) leave out.
pub fn real_time() -> f64 {
    1.0
}

/// Whether `time_scale` is the runbook's own clock (serde `skip_serializing_if`).
pub fn is_real_time(time_scale: &f64) -> bool {
    *time_scale == 1.0
}

/// `#[serde(with = "crate::duration::serde_text")]`: a duration as its text form (`"5m"`).
pub mod serde_text {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        super::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Like [`serde_text`] for a list of durations.
pub mod serde_text_vec {
    use serde::ser::SerializeSeq;
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(ds: &[Duration], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(ds.len()))?;
        for d in ds {
            seq.serialize_element(&super::format(*d))?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        let v = Vec::<String>::deserialize(d)?;
        v.iter()
            .map(|s| super::parse(s).map_err(serde::de::Error::custom))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats_round_trip() {
        for (text, ms) in [
            ("0", 0),
            ("100ms", 100),
            ("30s", 30_000),
            ("5m", 300_000),
            ("1h30m", 5_400_000),
            ("24h", 86_400_000),
            ("1d2h3m4s5ms", 93_784_005),
        ] {
            let d = parse(text).unwrap();
            assert_eq!(d.as_millis() as u64, ms, "{text}");
            assert_eq!(parse(&format(d)).unwrap(), d);
        }
        assert_eq!(format(Duration::from_secs(5400)), "1h30m");
    }

    #[test]
    fn runbook_time_undoes_the_compression() {
        let min = |m: u64| Duration::from_secs(m * 60);
        let compress = |d: Duration, scale: f64| {
            Duration::from_millis((d.as_secs_f64() * 1000.0 / scale).round() as u64)
        };
        // Production: nothing changes, milliseconds included.
        assert_eq!(
            runbook(Duration::from_millis(1_500), 1.0),
            Duration::from_millis(1_500)
        );
        assert_eq!(runbook(min(5), 1.0), min(5));
        // The demo's 60-times compressed clock.
        assert_eq!(runbook(Duration::from_secs(5), 60.0), min(5));
        assert_eq!(
            runbook(Duration::from_millis(500), 60.0),
            Duration::from_secs(30)
        );
        assert_eq!(
            runbook(Duration::from_millis(5), 60.0),
            Duration::from_millis(300)
        );
        // Odd scales: every runbook duration of the template comes back whole.
        for scale in [7.0, 7.5, 13.0, 60.0, 1000.0] {
            for d in [Duration::from_secs(30), min(5), min(15), min(30), min(60)] {
                assert_eq!(runbook(compress(d, scale), scale), d, "{d:?} at {scale}");
            }
        }
        assert_eq!(runbook(Duration::from_secs(8), 7.5), min(1));
        // A scale that means nothing counts as 1.
        for bad in [0.0, -60.0, f64::NAN, f64::INFINITY] {
            assert_eq!(runbook(Duration::from_secs(5), bad), Duration::from_secs(5));
        }
        assert_eq!(
            runbook(Duration::MAX, 60.0),
            Duration::from_secs(u64::MAX / 1000)
        );
        assert_eq!(Runbook(Duration::from_secs(5), 60.0).to_string(), "5m");
        assert_eq!(Runbook(Duration::from_secs(60), 60.0).to_string(), "1h");
        assert_eq!(Runbook(Duration::from_secs(300), 1.0).to_string(), "5m");
        assert_eq!(runbook_with_wall(min(60), 1.0), "1h");
        assert_eq!(
            runbook_with_wall(min(1), 60.0),
            "1h (runbook time; compressed 60×: 1m of wall time)"
        );
        assert_eq!(
            runbook_with_wall(Duration::from_secs(480), 7.5),
            "1h (runbook time; compressed 7.5×: 8m of wall time)"
        );
    }

    #[test]
    fn rejects_what_prometheus_rejects() {
        for bad in [
            "", "5", "m", "5 m", "1.5m", "30m1h", "5mm", "5m5m", "-5m", "5x",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should not parse");
        }
    }
}
