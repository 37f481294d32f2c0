//! `canary-core`: the resolved run plan, the decision engine and its verdicts.
//!
//! Pure: no I/O, no sockets, no wall clock. Time arrives as input, so a 60-minute canary runs in
//! milliseconds under test and a journal of inputs replays to the same verdict.
#![forbid(unsafe_code)]

/// The statistics the comparisons are judged with, for callers that build or show them.
pub use canary_judge as judge;

pub mod comparisons;
pub mod duration;
pub mod engine;
pub mod escape;
pub mod journal;
pub mod json_float;
pub mod plan;
pub mod secret;
pub mod statistics;
pub mod verdict;

pub use engine::{Action, Engine, EngineError, Event, Input, Millis, Reading, Severity};
pub use escape::Escaped;
pub use plan::{ArmRole, CompareSpec, Guardrail, Measure, OnBreach, OnNoData, Plan};
pub use secret::Secret;
pub use verdict::{Decision, Reason, Verdict};
