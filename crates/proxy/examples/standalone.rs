//! Runs the embedded proxy alone, as `canary proxy` does, for benchmarks and manual checks:
//!
//! ```text
//! cargo run --release -p canary-proxy --example standalone -- \
//!     --listen 127.0.0.1:8080 --baseline http://127.0.0.1:8081 --canary http://127.0.0.1:8082 \
//!     --weight 5 [--admin 127.0.0.1:9901] [--threads N]
//! ```
//!
//! The admin token comes from `CANARY_PROXY_TOKEN`, or is generated and printed once.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use canary_proxy::{AdminToken, CanaryWeight, ProxyConfig, Upstream};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("standalone: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let (mut listen, mut baseline, mut canary, mut weight, mut admin, mut threads) = (
        None,
        None,
        None,
        0u8,
        None,
        std::thread::available_parallelism().map_or(1, usize::from),
    );
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => listen = Some(value()?),
            "--baseline" => baseline = Some(value()?),
            "--canary" => canary = Some(value()?),
            "--weight" => weight = value()?.parse().map_err(|e| format!("--weight: {e}"))?,
            "--admin" => admin = Some(value()?),
            "--threads" => threads = value()?.parse().map_err(|e| format!("--threads: {e}"))?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    let token = match std::env::var("CANARY_PROXY_TOKEN") {
        Ok(t) if !t.is_empty() => AdminToken::new(t),
        _ => {
            let t = AdminToken::generate();
            println!("admin token: {}", t.expose());
            t
        }
    };
    let upstream = |url: Option<String>, name: &str| {
        Upstream::parse(&url.ok_or(format!("--{name} is required"))?).map_err(|e| e.to_string())
    };
    let mut cfg = ProxyConfig::new(
        upstream(baseline, "baseline")?,
        upstream(canary, "canary")?,
        token,
    );
    cfg.listen = listen
        .ok_or("--listen is required")?
        .parse()
        .map_err(|e| format!("--listen: {e}"))?;
    if let Some(admin) = admin {
        cfg.admin_listen = admin.parse().map_err(|e| format!("--admin: {e}"))?;
    }
    cfg.initial_weight = CanaryWeight::new(weight).map_err(|e| e.to_string())?;
    cfg.workers = threads;

    // The data path runs on its own threads; this runtime only serves the admin API,
    // health checks and the lease watchdog.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime
        .block_on(canary_proxy::run_standalone(
            cfg,
            |handle| {
                println!(
                    "listening on {} (admin {}), canary weight {}",
                    handle.data_addr(),
                    handle.admin_addr(),
                    handle.weight().canary()
                );
            },
            async {
                let _ = tokio::signal::ctrl_c().await;
            },
        ))
        .map_err(|e| e.to_string())
}
