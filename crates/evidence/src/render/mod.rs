//! The bundle's artifacts as text: pure functions from run facts to file contents.
//!
//! Nothing here touches files or clocks: every time is an argument, so each artifact is
//! snapshot-tested byte for byte. The bundle writer ([`crate::bundle`]) decides where they go.

pub mod alerts;
pub mod check_log;
pub mod dashboards;
pub mod decision;
pub mod load;
pub mod snapshot;
pub mod traffic;

use canary_core::Millis;

use crate::stamp;

/// What every artifact says about the run it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct RunContext {
    pub run_id: String,
    /// T+0.
    pub started: Millis,
    /// The plan's `time_scale`: how many times faster than the runbook the run's clock went (1
    /// in production). Offsets and durations are written in the runbook's time.
    pub time_scale: f64,
}

impl RunContext {
    /// The header lines of a text artifact: its title, then the run and its start — and, on a
    /// compressed clock, which clock the artifact speaks.
    pub(crate) fn header(&self, title: &str) -> String {
        let mut out = format!(
            "{title}\nrun       {}\nstarted   {} (T+00:00)\n",
            self.run_id,
            stamp::rfc3339(self.started)
        );
        if let Some(clock) = self.clock() {
            out.push_str(&format!("clock     {clock}\n"));
        }
        out
    }

    /// On a compressed clock, the one line that says so: `compressed 60×: T+ offsets and
    /// durations are runbook time, instants wall-clock time`. `None` in production.
    pub fn clock(&self) -> Option<String> {
        (!canary_core::duration::is_real_time(&self.time_scale)).then(|| {
            format!(
                "compressed {}×: T+ offsets and durations are runbook time, instants wall-clock time",
                self.time_scale
            )
        })
    }

    /// The offset of `at` in the runbook's time: `T+05:00`.
    pub(crate) fn offset(&self, at: Millis) -> String {
        stamp::clock_offset(self.started, at, self.time_scale)
    }

    /// `2025-10-19T14:05:00Z (T+05:00)`: the instant, and its offset in the runbook's time.
    pub(crate) fn when(&self, at: Millis) -> String {
        format!("{} ({})", stamp::rfc3339(at), self.offset(at))
    }

    /// A duration on the run's clock in the runbook's time: `5m`.
    pub(crate) fn duration(&self, wall: std::time::Duration) -> canary_core::duration::Runbook {
        canary_core::duration::Runbook(wall, self.time_scale)
    }
}

/// A text artifact for a step that did not happen, stating why. Used when the run ended before
/// the runtime recorded the artifact (the runbook wants every artifact in every run).
pub fn not_recorded(ctx: &RunContext, title: &str, why: &str) -> String {
    format!("{}\nNOT RECORDED: {why}\n", ctx.header(title))
}

/// Left-aligned columns, two spaces apart; the last column is not padded.
pub(crate) fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::from("  ");
        for (c, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if c + 1 < row.len() {
                let pad = widths[c] - cell.chars().count() + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}
