//! `canary-core`: the resolved run plan, the decision engine and its verdicts.
//!
//! Pure: no I/O, no sockets, no wall clock. Time arrives as input.
#![forbid(unsafe_code)]
