//! `canary-load`: the load burst, the SSE-aware client and the tenant-isolation probes.
//!
//! The runbook's Phase 2 sends 100 queries from 5 users and records success and latency. This
//! crate does that and measures what the guardrails are about:
//!
//! - **[`run_burst`]** drives a [`Scenario`]: a closed loop per user (each user sends its
//!   requests one after another with a pause, users concurrently — the runbook's mode) or an
//!   open loop (a constant arrival rate with a concurrency cap; latency counts from the
//!   *intended* send time, so a stalled server shows up in the percentiles instead of being
//!   hidden by coordinated omission). Each request becomes a [`RequestRecord`]: status, time to
//!   first byte, **time to first value** (the first complete SSE event carrying data; the first
//!   body byte otherwise), total time, events, bytes, whether the terminal event arrived, the
//!   error kind, and the arm that answered (from the proxy's `X-Canary-Arm` header, which the
//!   embedded proxy sends only to requests carrying its pin token, [`PinProof`]).
//! - **Targeting**: through the load balancer as the runbook does, at the canary only (the
//!   proxy's pin header with its pin token, or a direct canary URL), or both, reported
//!   separately.
//! - **[`BurstReport`]** holds every record and the summaries overall, per arm and per target
//!   (HDR histograms → p50/p95/p99); [`transcript`] and [`summary_json`] render the runbook's
//!   two artifacts.
//! - **Sample sufficiency** ([`sufficiency`]): whether the canary arm got enough samples for each
//!   percentile or success-rate guardrail, by the rules of `canary_core::statistics`, and how
//!   much canary-targeted load would make it so.
//! - **Isolation probes** ([`run_probes`]): every ordered pair of users, user A asking with A's
//!   own token for B's secret marker in several ways; any foreign marker in any answer is a
//!   [`Leak`], attributed to the arm that answered.
//!
//! Secrets (tokens, markers) are [`canary_core::Secret`]s: they go on the wire and nowhere
//! else — no record, report, rendering, log line or error carries one.
//!
//! Code map: `scenario` (what to send), `connect` (TCP/TLS connections driven in the calling
//! task), `sse` (incremental event framing), `exchange` (one measured request), `burst` (the
//! closed and open loops), `report` (records, summaries, renderings), `sufficiency`, `probe`.
#![forbid(unsafe_code)]
// Tests may unwrap: a panic there is the failure report.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod burst;
mod connect;
mod error;
mod exchange;
mod probe;
mod report;
mod scenario;
mod sse;
pub mod sufficiency;

pub use burst::{Progress, UserCheck, check_users, run_burst};
pub use canary_core::verdict::{ProbeRun, ProbeVerdict};
pub use error::LoadError;
pub use probe::{
    Leak, PairResult, ProbeReport, ProbeSpec, ProbeUser, SelfCheck, probe_json, probe_text,
    run_probes,
};
pub use report::{
    ArmSummary, BurstReport, ErrorKind, Percentiles, RequestRecord, Summary, TargetSummary,
    summary_json, transcript,
};
pub use scenario::{
    CanaryRoute, DEFAULT_ARM_HEADER, DEFAULT_PIN_HEADER, DEFAULT_PROOF_HEADER, Mode, OpenLoop,
    PinProof, Scenario, Target, Targeting, User,
};
pub use sufficiency::{SampleKind, SampleRule, SufficiencyCheck};
