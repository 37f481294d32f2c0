//! `relay-demo`: the reference Relay memory service (DESIGN §10).
#![forbid(unsafe_code)]
