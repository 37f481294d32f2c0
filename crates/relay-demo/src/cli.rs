//! The `relay-demo` command line (`serve`, `tokens`, `markers`), shared with the `canary` binary,
//! which embeds it to start demo instances of itself.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::auth::{DEFAULT_TOKEN_TTL, DEVELOPMENT_JWT_SECRET, MintError, mint_token};
use crate::fault::{Fault, parse_duration};
use crate::profile::Profile;
use crate::seed::{DEFAULT_MEMORIES_PER_USER, seed_markers, seed_users};
use crate::server::{ServeError, ServeOptions, serve};

/// Environment variable holding the JWT signing secret.
pub const JWT_SECRET_ENV: &str = "RELAY_JWT_SECRET";
/// Environment variable holding the data secret (user hashes, at-rest encryption).
pub const DATA_SECRET_ENV: &str = "RELAY_DATA_KEY";
/// The profile `relay-demo serve` runs without `--profile`: `realistic`, so `canary demo` and
/// the rehearsal watch a service whose charts sit where production's do. Benchmarks of the
/// server itself and tests about the run's mechanics ask for `fast`.
pub const DEFAULT_PROFILE: Profile = Profile::Realistic;

const EXAMPLES: &str = "\
Examples:
  relay-demo serve --seed --listen 127.0.0.1:8080 --version-label r0.5
  relay-demo serve --seed --version-label r1 --fault slow-ttfv@90s~5m --fault sse-drop:0.05
  relay-demo serve --seed --profile fast  # no stage waits: as fast as the machine allows
  relay-demo tokens > .env.tokens        # API_TOKEN_USER_1=... for user_1..user_5
  relay-demo markers                     # the secret marker of each seeded user

Profiles (--profile, default realistic): realistic waits at each stage like production's
dependencies: embedding, ANN search, row read (holding a pool connection), rerank, first token;
TTFV p50 about 340 ms, p95 about 680 ms; ANN p95 about 65 ms. fast waits for nothing.

Faults (--fault KIND[:rate][@onset][~ramp], repeatable; rate 0..1, default 1; onset e.g. 90s,
1.5s, 5m; ramp: the time the fault takes to grow to its full effect, default 0s = at once):
  slow-ttfv        first result not before 1800 ms after arrival (ramp: 0 -> 1800 ms)
  sse-drop         stream cut before its done event (ramp: share of streams 0 -> rate)
  rls-errors       store read issued without tenant context (500, counted)
  tenant-leak      other tenants' rows pass the store filter; the final check catches
                   --leak-catch-share of them, the rest reach the client
  slow-ann         ANN search 400 ms slower (ramp: 0 -> 400 ms)
  pool-saturation  a runaway job holds rate x pool-size connections (at most size-1;
                   ramp: taken one by one)

Secrets come from the environment only: RELAY_JWT_SECRET (token signing) and RELAY_DATA_KEY
(user hashes and at-rest encryption); unset, fixed development values are used with a warning.";

/// `relay-demo`: the reference Relay memory-query service.
#[derive(Debug, Parser)]
#[command(name = "relay-demo", version, about, after_help = EXAMPLES)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service.
    #[command(after_help = EXAMPLES)]
    Serve(ServeArgs),
    /// Print a bearer token for each seeded user as `API_TOKEN_USER_N=<jwt>` lines.
    #[command(
        after_help = "Examples:\n  relay-demo tokens > .env.tokens\n  RELAY_JWT_SECRET=s3cret relay-demo tokens --ttl 24h"
    )]
    Tokens(TokensArgs),
    /// Print each seeded user's secret marker as `user_N <marker>` lines.
    #[command(
        after_help = "Example:\n  relay-demo markers    # user_1 MARKER-user_1-8a078cfbc6a7 ..."
    )]
    Markers,
}

/// Options of `relay-demo serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The `version` label on every metric (e.g. r0.5 for the baseline, r1 for the canary).
    #[arg(long, default_value = "r1")]
    pub version_label: String,
    /// Load user_1..user_5 with memories and one secret marker each.
    #[arg(long)]
    pub seed: bool,
    /// Memories per seeded user.
    #[arg(long, default_value_t = DEFAULT_MEMORIES_PER_USER)]
    pub seed_per_user: usize,
    /// How the pipeline's stages spend their time: like production, or not at all.
    #[arg(long, value_enum, default_value_t = DEFAULT_PROFILE)]
    pub profile: Profile,
    /// Inject a fault: KIND[:rate][@onset][~ramp] (repeatable).
    #[arg(long = "fault", value_name = "KIND[:rate][@onset][~ramp]")]
    pub faults: Vec<Fault>,
    /// Queries in flight at once before answering 503.
    #[arg(long, default_value_t = 256)]
    pub max_concurrency: usize,
    /// Store connection pool size [default: 8 with --profile realistic, 16 with fast].
    #[arg(long)]
    pub pool_size: Option<usize>,
    /// Longest wait for a store connection before answering 503.
    #[arg(long, default_value = "2s", value_parser = duration_arg)]
    pub pool_timeout: Duration,
    /// Reranker time budget [default: 250ms with --profile realistic, 25ms with fast].
    #[arg(long, value_parser = duration_arg)]
    pub rerank_budget: Option<Duration>,
    /// Share of foreign rows the final check catches under the tenant-leak fault.
    #[arg(long, default_value_t = 0.5)]
    pub leak_catch_share: f64,
    /// Longest time a client may take to send a request head (or, kept alive, to start the
    /// next one) before the connection is closed.
    #[arg(long, default_value = "30s", value_parser = timeout_arg)]
    pub header_timeout: Duration,
    /// Longest time a client may take to send a request body before it is answered 408.
    #[arg(long, default_value = "30s", value_parser = timeout_arg)]
    pub body_timeout: Duration,
    /// Stop when standard input closes: a supervisor that holds the pipe takes the service
    /// with it when it dies, even by kill -9 (canary demo does).
    #[arg(long)]
    pub exit_on_stdin_close: bool,
}

/// Options of `relay-demo tokens`.
#[derive(Debug, Clone, Args)]
pub struct TokensArgs {
    /// Token lifetime.
    #[arg(long, default_value = "720h", value_parser = duration_arg)]
    pub ttl: Duration,
}

fn duration_arg(text: &str) -> Result<Duration, String> {
    parse_duration(text).ok_or_else(|| format!("`{text}` is not a duration such as 250ms, 2s, 5m"))
}

fn timeout_arg(text: &str) -> Result<Duration, String> {
    match duration_arg(text)? {
        Duration::ZERO => Err(format!(
            "`{text}` would time out every request; give a duration above zero such as 300ms or 30s"
        )),
        timeout => Ok(timeout),
    }
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The server failed.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// A token could not be minted.
    #[error(transparent)]
    Mint(#[from] MintError),
    /// Standard output could not be written.
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

impl ServeArgs {
    /// The serve options these arguments describe, with secrets from the environment.
    pub fn to_options(&self) -> ServeOptions {
        ServeOptions {
            listen: self.listen,
            version_label: self.version_label.clone(),
            seed: self.seed,
            seed_memories_per_user: self.seed_per_user,
            profile: self.profile,
            faults: self.faults.clone(),
            jwt_secret: secret_from_env(JWT_SECRET_ENV),
            data_secret: secret_from_env(DATA_SECRET_ENV),
            max_concurrency: self.max_concurrency,
            pool_size: self.pool_size.unwrap_or(self.profile.pool_size()),
            pool_acquire_timeout: self.pool_timeout,
            rerank_budget: self.rerank_budget.unwrap_or(self.profile.rerank_budget()),
            leak_catch_share: self.leak_catch_share,
            started_at: None,
            header_timeout: self.header_timeout,
            body_timeout: self.body_timeout,
        }
    }
}

fn secret_from_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|s| !s.is_empty())
}

/// `(user_id, jwt)` for each seeded user (`user_1`..`user_5`), signed with `secret`, valid for
/// 30 days — what `relay-demo tokens` prints as `API_TOKEN_USER_N=<jwt>`.
///
/// HS256 signing with an in-memory key has no failure mode in practice; should the JWT library
/// refuse anyway, the error is logged and the list is empty (callers then fail on a missing token).
pub fn tokens(secret: &str) -> Vec<(String, String)> {
    tokens_with_ttl(secret, DEFAULT_TOKEN_TTL).unwrap_or_else(|error| {
        tracing::error!(%error, "could not mint seed-user tokens");
        Vec::new()
    })
}

fn tokens_with_ttl(secret: &str, ttl: Duration) -> Result<Vec<(String, String)>, MintError> {
    seed_users()
        .into_iter()
        .map(|user| {
            let token = mint_token(secret, &user, ttl)?;
            Ok((user, token))
        })
        .collect()
}

/// The runbook's variable name for a seeded user's token (`user_3` → `API_TOKEN_USER_3`).
pub fn token_variable(user_id: &str) -> String {
    format!("API_TOKEN_{}", user_id.to_uppercase())
}

/// Runs a parsed command line until it finishes (for `serve`: until SIGINT or SIGTERM).
pub async fn run(cli: Cli) -> Result<(), CliError> {
    use std::io::Write;
    match cli.command {
        Command::Serve(args) => {
            let on_stdin_close = args.exit_on_stdin_close;
            let stop = async move {
                tokio::select! {
                    () = shutdown_signal() => {}
                    () = stdin_closed(), if on_stdin_close => {}
                }
            };
            serve(args.to_options(), stop).await?;
            Ok(())
        }
        Command::Tokens(args) => {
            let secret = secret_from_env(JWT_SECRET_ENV).unwrap_or_else(|| {
                eprintln!(
                    "warning: {JWT_SECRET_ENV} not set; signing with the fixed development secret"
                );
                DEVELOPMENT_JWT_SECRET.to_owned()
            });
            let mut out = std::io::stdout().lock();
            for (user, token) in tokens_with_ttl(&secret, args.ttl)? {
                writeln!(out, "{}={token}", token_variable(&user))?;
            }
            Ok(())
        }
        Command::Markers => {
            let mut out = std::io::stdout().lock();
            for (user, marker) in seed_markers() {
                writeln!(out, "{user} {marker}")?;
            }
            Ok(())
        }
    }
}

/// Resolves when standard input reaches its end (or fails): the writer — a supervising
/// process holding the pipe — closed it or died. Read on a thread of its own, which a blocked
/// read cannot keep the runtime from shutting down.
pub async fn stdin_closed() {
    let (closed, wait) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        use std::io::Read;
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; 256];
        while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
        let _ = closed.send(());
    });
    let _ = wait.await;
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
    tracing::info!("shutdown requested; finishing open streams");
}

/// The whole `relay-demo` program: logging to stderr, argument parsing, a runtime, the command.
pub fn cli_main() -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("relay-demo: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("relay-demo: {e}");
            ExitCode::FAILURE
        }
    }
}
