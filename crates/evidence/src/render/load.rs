//! The load burst's artifacts when the burst did not produce them: `canary_load_burst_<ts>.log`
//! and `CANARY_LOAD_SUMMARY_<ts>.json` stating why. (When the burst runs, the load crate writes
//! the transcript lines and the summary; the bundle stores them as given.)

use serde::Serialize;

use super::RunContext;

/// The transcript's single line when no burst request was sent.
pub fn transcript_not_run(why: &str) -> String {
    format!("# no load burst request was sent: {why}")
}

/// The summary when the burst did not run or did not report.
pub fn summary_not_run(ctx: &RunContext, why: &str) -> String {
    #[derive(Serialize)]
    struct NotRun<'a> {
        artifact: &'static str,
        run_id: &'a str,
        ran: bool,
        why: &'a str,
    }
    let value = NotRun {
        artifact: "CANARY_LOAD_SUMMARY",
        run_id: &ctx.run_id,
        ran: false,
        why,
    };
    // Strings and a bool always serialise.
    let mut text = serde_json::to_string_pretty(&value).unwrap_or_default();
    text.push('\n');
    text
}
