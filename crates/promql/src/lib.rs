//! `canary-promql`: exposition parsing, the sample store and PromQL evaluation.
//!
//! Pure: no I/O, no wall clock. Callers pass samples in and an evaluation time.
#![forbid(unsafe_code)]

pub mod rewrite;
pub mod value;

pub use rewrite::{ArmSelector, RewriteError};
pub use value::{Labels, Millis, Point, Sample, Series, Value};
