//! `canary-promql`: exposition parsing, the sample store and PromQL evaluation.
//!
//! Pure: no I/O, no wall clock. Callers pass samples in and an evaluation time.
#![forbid(unsafe_code)]
