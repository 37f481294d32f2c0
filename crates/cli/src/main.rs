//! `canary`: the binary — commands, configuration files, the terminal, and the runtime that
//! drives the engine.
#![forbid(unsafe_code)]

fn main() {}
