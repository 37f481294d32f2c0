//! `canary`: the binary — commands, configuration files, the terminal, and the runtime that
//! drives the engine.
#![forbid(unsafe_code)]
// Results go through `outln!`/`out!` (see `output`), which survive a closed stdout.
#![deny(clippy::print_stdout)]

#[macro_use]
mod output;
mod commands;
mod config;
mod control;
mod run;
mod terminal;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Runs a production canary release end to end: traffic split, guardrails, decision, evidence.
#[derive(Parser)]
#[command(name = "canary", version, about, long_about = None, propagate_version = true)]
#[command(after_help = "Examples:
  canary init                          write canary.toml encoding the runbook
  canary validate -c canary.toml       check it, and the variables it needs
  canary backtest -c canary.toml --prometheus http://prometheus:9090 --from 2026-11-17T14:00:00Z
  canary import kayenta my-app.json >> canary.toml   a Kayenta canary config as [[compare]]

Exit codes: 0 PROMOTE (or success), 1 error, 3 ROLLBACK, 4 INCONCLUSIVE, 5 PROMOTION_FAILED
(the canary passed but the load balancer did not take 100 %: traffic back on the baseline, paged).")]
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
    Preflight(commands::run::PreflightArgs),
    Run(commands::run::RunArgs),
    Demo(commands::demo::DemoArgs),
    Resume(commands::run::ResumeArgs),
    Status(commands::operator::StatusArgs),
    Abort(commands::operator::AbortArgs),
    Approve(commands::operator::ApproveArgs),
    Backtest(commands::backtest::BacktestArgs),
    Query(commands::query::QueryArgs),
    Traffic(commands::traffic::TrafficArgs),
    Proxy(commands::proxy::ProxyArgs),
    Load(commands::load::LoadArgs),
    Render(commands::render::RenderArgs),
    Verify(commands::evidence::VerifyArgs),
    Keygen(commands::evidence::KeygenArgs),
    History(commands::evidence::HistoryArgs),
    Import(commands::import::ImportArgs),
    /// Run the reference Relay memory service (what `canary demo` canaries).
    #[command(name = "relay-demo", subcommand)]
    RelayDemo(relay_demo::Command),
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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_target(false);
    if terminal::interactive() {
        builder.with_writer(terminal::StatusAwareStderr).init();
    } else {
        builder.with_writer(std::io::stderr).init();
    }
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
            Command::Preflight(args) => commands::run::preflight_cmd(args).await,
            Command::Run(args) => commands::run::run_cmd(args).await,
            Command::Resume(args) => commands::run::resume_cmd(args).await,
            Command::Status(args) => commands::operator::status(args).await,
            Command::Abort(args) => commands::operator::abort(args).await,
            Command::Approve(args) => commands::operator::approve(args).await,
            Command::Backtest(args) => commands::backtest::run(args).await,
            Command::Query(args) => commands::query::run(args).await,
            Command::Traffic(args) => commands::traffic::run(args).await,
            Command::Proxy(args) => commands::proxy::run(args).await,
            Command::Load(args) => commands::load::run(args).await,
            Command::Render(args) => commands::render::run(args),
            Command::Demo(args) => commands::demo::run(args).await,
            Command::Verify(args) => commands::evidence::verify_cmd(args),
            Command::Keygen(args) => commands::evidence::keygen(args),
            Command::History(args) => commands::evidence::history(args),
            Command::Import(args) => commands::import::run(args),
            Command::RelayDemo(command) => relay_demo::run_cli(relay_demo::Cli { command })
                .await
                .map(|()| 0)
                .map_err(anyhow::Error::from),
        }
    });
    let code = match result {
        Ok(code) => code as u8,
        // The reader of our output went away (`canary ... | head`): nothing to say.
        Err(e) if output::is_closed_pipe(&e) => 0,
        Err(e) => {
            output::print_error(&e);
            1
        }
    };
    if let Some(e) = output::stdout_error() {
        eprintln!("error: cannot write the output: {e}");
        return ExitCode::from(1);
    }
    ExitCode::from(code)
}
