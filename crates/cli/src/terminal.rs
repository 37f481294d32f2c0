//! The terminal while a run is going: on a TTY, one status line kept at the bottom and updated
//! in place (phase, time, split, each guardrail against its threshold), with log lines scrolling
//! above it; otherwise plain log lines only.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;

use crate::control::RunStatus;

/// The status line currently shown, if any.
static STATUS: Mutex<Option<String>> = Mutex::new(None);

/// Whether stderr can carry an in-place status line.
pub fn interactive() -> bool {
    std::io::stderr().is_terminal() && std::env::var("TERM").map_or(true, |t| t != "dumb")
}

/// A `tracing` writer that keeps the status line below the log lines it writes.
pub struct StatusAwareStderr;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for StatusAwareStderr {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter(Vec::new())
    }
}

/// Buffers one log event and writes it above the status line on drop.
pub struct LineWriter(Vec<u8>);

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        let status = STATUS.lock().map(|s| s.clone()).unwrap_or(None);
        let mut err = std::io::stderr().lock();
        match status {
            Some(line) => {
                let _ = err.write_all(b"\r\x1b[2K");
                let _ = err.write_all(&self.0);
                let _ = err.write_all(line.as_bytes());
            }
            None => {
                let _ = err.write_all(&self.0);
            }
        }
        let _ = err.flush();
    }
}

/// One line from the controller's status: `running T+312s/3600s canary 5% | ✓ ttfv_p95 812.5 < 1500`,
/// its times in the runbook's (a compressed run says so once, on the run's first line).
pub fn status_line(s: &RunStatus) -> String {
    let secs = |ms: i64| runbook_secs(ms, s.time_scale);
    let mut line = format!(
        "{} T+{}s/{}s canary {}%",
        s.phase,
        secs(s.elapsed_ms),
        secs(s.window_ms),
        s.canary_weight
    );
    for g in &s.guardrails {
        let mark = match g.status.as_str() {
            "PASS" => "✓",
            "FAIL" => "✗",
            _ => "?",
        };
        let value = g
            .canary
            .map_or("-".to_owned(), canary_core::verdict::fmt_value);
        line.push_str(&format!(" | {mark} {} {value} {}", g.name, g.must));
    }
    if let Some(v) = &s.verdict {
        line.push_str(&format!(" | {v}"));
    }
    // Keep it on one line of the terminal.
    let width = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse::<usize>().ok())
        .unwrap_or(160);
    line.chars().take(width.saturating_sub(1)).collect()
}

/// Whole seconds of runbook time in `wall_ms` of a run whose clock went `time_scale` times faster
/// than the runbook's.
pub fn runbook_secs(wall_ms: i64, time_scale: f64) -> u64 {
    canary_core::duration::runbook(
        Duration::from_millis(wall_ms.max(0).unsigned_abs()),
        time_scale,
    )
    .as_secs()
}

/// Redraws the status line whenever the controller's status changes (at most every 250 ms),
/// until the channel closes; then clears it.
pub fn spawn_status_line(mut status: watch::Receiver<RunStatus>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let line = status_line(&status.borrow_and_update());
            draw(line);
            tokio::time::sleep(Duration::from_millis(250)).await;
            if status.changed().await.is_err() {
                break;
            }
        }
        clear();
    })
}

fn draw(line: String) {
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "\r\x1b[2K{line}");
    let _ = err.flush();
    if let Ok(mut s) = STATUS.lock() {
        *s = Some(line);
    }
}

/// Removes the status line.
pub fn clear() {
    if let Ok(mut s) = STATUS.lock()
        && s.take().is_some()
    {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(b"\r\x1b[2K");
        let _ = err.flush();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::control::{GuardrailStatus, RunStatus};
    use canary_core::OnBreach;

    fn guardrail(name: &str, status: &str, canary: Option<f64>, must: &str) -> GuardrailStatus {
        GuardrailStatus {
            name: name.to_owned(),
            status: status.to_owned(),
            canary,
            baseline: None,
            must: must.to_owned(),
            threshold: 0.0,
            on_breach: OnBreach::Rollback,
            unit: None,
            for_ms: 0,
            breaching_since_ms: None,
            series: Vec::new(),
        }
    }

    #[test]
    fn the_status_line_shows_phase_time_split_and_each_guardrail() {
        let mut status = RunStatus::starting("r", "relay");
        assert_eq!(status_line(&status), "starting T+0s/0s canary 0%");
        status.phase = "running".to_owned();
        status.elapsed_ms = 312_400;
        status.window_ms = 3_600_000;
        status.canary_weight = 5;
        status.guardrails = vec![
            guardrail("ttfv", "PASS", Some(812.5), "< 1500"),
            guardrail("rls", "FAIL", Some(2.0), "== 0"),
            guardrail("pool", "NO DATA", None, "< 80"),
        ];
        assert_eq!(
            status_line(&status),
            "running T+312s/3600s canary 5% | ✓ ttfv 812.5 < 1500 | ✗ rls 2 == 0 | ? pool - < 80"
        );
        status.verdict = Some("ROLLBACK".to_owned());
        assert!(status_line(&status).ends_with(" | ROLLBACK"));

        // On the demo's compressed clock the line speaks the runbook's time: 5.2 wall seconds
        // into a 60-second window are T+312s of 3600s.
        status.time_scale = 60.0;
        status.elapsed_ms = 5_200;
        status.window_ms = 60_000;
        assert!(
            status_line(&status).starts_with("running T+312s/3600s canary 5% | "),
            "{}",
            status_line(&status)
        );
        status.time_scale = 7.5;
        status.elapsed_ms = 6_667;
        status.window_ms = 480_000;
        assert!(status_line(&status).starts_with("running T+50s/3600s "));
    }
}
