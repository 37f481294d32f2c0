//! The load burst's and isolation probes' artifacts when they did not produce them:
//! `canary_load_burst_<ts>.log`, `CANARY_LOAD_SUMMARY_<ts>.json` and
//! `CANARY_ISOLATION_PROBES_<ts>.json` stating why. (When the burst and the probes run, the load
//! crate writes the transcript lines and the reports; the bundle stores them as given.)

use serde::Serialize;

use super::RunContext;

/// The transcript's single line when no burst request was recorded: `# load burst {why}`, `why`
/// saying what happened (`not reached: rolled back at T+2m, …`).
pub fn transcript_not_run(why: &str) -> String {
    format!("# load burst {why}")
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

/// The isolation-probe report when no probe run was recorded: no runs, and why.
pub fn probes_not_run(ctx: &RunContext, why: &str) -> String {
    #[derive(Serialize)]
    struct NotRun<'a> {
        artifact: &'static str,
        run_id: &'a str,
        ran: bool,
        why: &'a str,
        runs: [(); 0],
    }
    let value = NotRun {
        artifact: "CANARY_ISOLATION_PROBES",
        run_id: &ctx.run_id,
        ran: false,
        why,
        runs: [],
    };
    // Strings, a bool and an empty list always serialise.
    let mut text = serde_json::to_string_pretty(&value).unwrap_or_default();
    text.push('\n');
    text
}
