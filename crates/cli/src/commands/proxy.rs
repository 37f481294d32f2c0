//! `canary proxy`: the embedded weighted proxy on its own.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use canary_proxy::{
    AdminToken, CanaryWeight, PinToken, ProxyConfig, ReadyFile, SplitMode, Upstream,
};

/// Run the embedded weighted proxy alone: split traffic between a baseline and a canary, with an
/// admin API (weights, lease, health, pin token, metrics) on a loopback port. The admin token
/// comes from CANARY_PROXY_TOKEN, or is generated and printed once on stdout.
///
/// Pinning a request to an arm (`X-Canary: canary`) needs proof: the pin token in
/// `X-Canary-Token`, from CANARY_PROXY_PIN_TOKEN or generated (read it with `GET /pin` on the
/// admin API). Without it the pin header is ignored, and only callers with the token are told
/// which arm answered (`X-Canary-Arm`). After a rollback the canary refuses pins until it gets
/// traffic again or `PUT /pin {"canary_fenced": false}` lifts the fence.
#[derive(clap::Args)]
#[command(after_help = "Example:
  CANARY_PROXY_TOKEN=... canary proxy --listen 127.0.0.1:8080 \\
      --baseline http://127.0.0.1:8081 --canary http://127.0.0.1:8082 --weight 5 --admin 127.0.0.1:9901
  curl -H \"Authorization: Bearer $CANARY_PROXY_TOKEN\" http://127.0.0.1:9901/weights
  PIN=$(curl -s -H \"Authorization: Bearer $CANARY_PROXY_TOKEN\" http://127.0.0.1:9901/pin | jq -r .token)
  curl -H 'X-Canary: canary' -H \"X-Canary-Token: $PIN\" http://127.0.0.1:8080/healthz")]
pub struct ProxyArgs {
    /// Where clients connect.
    #[arg(long)]
    listen: SocketAddr,
    /// The baseline arm's URL (http://host:port).
    #[arg(long)]
    baseline: String,
    /// The canary arm's URL.
    #[arg(long)]
    canary: String,
    /// Percent of traffic to the canary at start.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=100))]
    weight: u8,
    /// The admin API's address (loopback only).
    #[arg(long, default_value = "127.0.0.1:9901")]
    admin: SocketAddr,
    /// sticky: one bearer token always reaches the same arm.
    #[arg(long, value_enum, default_value = "random")]
    split: Split,
    /// Data-path threads (default: one per CPU).
    #[arg(long)]
    threads: Option<usize>,
    /// Pin data-path thread i to the i-th CPU this process may use (Linux), like nginx's
    /// `worker_cpu_affinity auto`. Off by default: it cuts the p99 at saturation, but at
    /// partial load a pinned thread cannot leave a core a neighbour keeps busy (measured in
    /// docs/BENCHMARKS.md).
    #[arg(long)]
    pin_threads: bool,
    /// Write `{"data": ADDR, "admin": ADDR}` here once listening (for scripts that use port 0).
    #[arg(long, value_name = "FILE")]
    ready_file: Option<PathBuf>,
    /// Stop when standard input closes: a supervisor that holds the pipe takes the proxy with
    /// it when it dies, even by kill -9 (canary demo does).
    #[arg(long)]
    exit_on_stdin_close: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Split {
    Random,
    Sticky,
}

pub async fn run(args: ProxyArgs) -> anyhow::Result<i32> {
    let token = match std::env::var("CANARY_PROXY_TOKEN") {
        Ok(t) if !t.is_empty() => AdminToken::new(t),
        _ => {
            let t = AdminToken::generate();
            outln!(
                "admin token (set CANARY_PROXY_TOKEN to choose one): {}",
                t.expose()
            );
            t
        }
    };
    let mut cfg = ProxyConfig::new(
        Upstream::parse(&args.baseline).context("--baseline")?,
        Upstream::parse(&args.canary).context("--canary")?,
        token,
    );
    if let Ok(pin) = std::env::var("CANARY_PROXY_PIN_TOKEN")
        && !pin.is_empty()
    {
        cfg.pin_token = PinToken::new(pin);
    }
    cfg.listen = args.listen;
    cfg.admin_listen = args.admin;
    cfg.initial_weight = CanaryWeight::new(args.weight)?;
    cfg.split = match args.split {
        Split::Random => SplitMode::Random,
        Split::Sticky => SplitMode::Sticky,
    };
    if let Some(threads) = args.threads {
        cfg.workers = threads;
    }
    cfg.pin_threads = args.pin_threads;
    let ready_file = args.ready_file.clone();
    let mut ready_error = None;
    canary_proxy::run_standalone(
        cfg,
        |handle| {
            eprintln!(
                "canary proxy: listening on {} (admin {}), canary weight {} %",
                handle.data_addr(),
                handle.admin_addr(),
                handle.weight().canary()
            );
            if let Some(path) = &ready_file {
                let ready = ReadyFile {
                    data: handle.data_addr(),
                    admin: handle.admin_addr(),
                };
                if let Err(e) = ready.write(path) {
                    ready_error = Some(e);
                }
            }
        },
        shutdown(args.exit_on_stdin_close),
    )
    .await?;
    if let Some(e) = ready_error {
        return Err(e).context("cannot write --ready-file");
    }
    Ok(0)
}

async fn shutdown(on_stdin_close: bool) {
    tokio::select! {
        () = signalled() => {}
        () = relay_demo::stdin_closed(), if on_stdin_close => {}
    }
}

async fn signalled() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
