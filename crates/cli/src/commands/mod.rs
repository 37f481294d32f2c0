//! One module per `canary` subcommand: its arguments and what it does.

pub mod backtest;
pub mod demo;
pub mod evidence;
pub mod import;
pub mod init;
pub mod load;
pub mod operator;
pub mod proxy;
pub mod query;
pub mod render;
pub mod run;
pub mod traffic;
pub mod validate;
