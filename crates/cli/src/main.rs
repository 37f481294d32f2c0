//! `canary`: the binary — commands, configuration files, the terminal, and the runtime that
//! drives the engine.
#![forbid(unsafe_code)]

mod commands;
mod config;
mod observe;
mod output;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Runs a production canary release end to end: traffic split, guardrails, decision, evidence.
#[derive(Parser)]
#[command(name = "canary", version, about, long_about = None, propagate_version = true)]
#[command(after_help = "Examples:
  canary init                          write canary.toml encoding the runbook
  canary validate -c canary.toml       check it, and the variables it needs
  canary backtest -c canary.toml --prometheus http://prometheus:9090 --from 2026-11-17T14:00:00Z

Exit codes: 0 PROMOTE (or success), 1 error, 3 ROLLBACK, 4 INCONCLUSIVE.")]
struct Cli {
    /// More log output on stderr (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Init(commands::init::InitArgs),
    Validate(commands::validate::ValidateArgs),
    Backtest(commands::backtest::BacktestArgs),
}

fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn,canary=info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let ansi = std::env::var_os("NO_COLOR").is_none()
        && std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Init(args) => commands::init::run(args),
            Command::Validate(args) => commands::validate::run(args),
            Command::Backtest(args) => commands::backtest::run(args).await,
        }
    });
    match result {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            output::print_error(&e);
            ExitCode::from(1)
        }
    }
}
