//! One module per `canary` subcommand: its arguments and what it does.

pub mod backtest;
pub mod init;
pub mod validate;
