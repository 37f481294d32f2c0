//! `canary verify`, `canary keygen`, `canary history`: the evidence side of the CLI.

use std::path::PathBuf;

use canary_core::Escaped;
use canary_evidence::{SignerTrust, generate_keypair, verify};
use canary_state::Store;

use crate::commands::validate::load_config;
use crate::config::Needs;
use crate::output::Format;

/// Check an evidence bundle: every artifact its outcome requires is present, no byte changed,
/// the signature is valid, and the decision follows from the journal when it is replayed
/// through the engine.
///
/// Give the publisher's public key (`--key`, or CANARY_VERIFY_KEY): only then does a valid
/// signature prove who signed. Without it the signature is only self-consistent — it matches
/// the key the bundle names itself, which anyone who changes a bundle and re-signs it with
/// their own key also achieves — and the output says so.
#[derive(clap::Args)]
#[command(after_help = "Examples:
  canary verify --key 6a1f...c3 canary-evidence/relay-20261126T101500Z-3f2a
  CANARY_VERIFY_KEY=6a1f...c3 canary verify DIR

The public key is what `canary keygen` printed when the signing key was made.

Exit codes: 0 verified, 1 not (the reason names the file and the problem).")]
pub struct VerifyArgs {
    /// The bundle directory.
    dir: PathBuf,
    /// The publisher's public key (64 hex characters) the bundle must be signed by.
    #[arg(long, env = "CANARY_VERIFY_KEY")]
    key: Option<String>,
    #[arg(long, value_enum, default_value_t)]
    output: Format,
}

/// What a verified bundle holds, one fact per line.
fn print_report(dir: &std::path::Path, r: &canary_evidence::VerifyReport) {
    match r.signer_trust {
        SignerTrust::Pinned => outln!("{}: verified, signed by the pinned key", dir.display()),
        SignerTrust::SelfConsistent => outln!(
            "{}: verified, but the signer is NOT checked: the signature only matches the key the \
             bundle names itself; pass --key <publisher's public key> to prove who signed",
            dir.display()
        ),
    }
    outln!("  run          {} ({})", r.run_id, r.service);
    outln!(
        "  verdict      {} by {}",
        r.verdict.name(),
        Escaped(&r.authorised_by)
    );
    for reason in r.verdict.reasons() {
        outln!("  reason       {reason}");
    }
    outln!("  window       {} .. {}", r.started, r.finished);
    outln!(
        "  signed by    {} (Ed25519 {})",
        r.fingerprint,
        r.public_key
    );
    outln!("  files        {} hashes match the manifest", r.files);
    if !r.checkpoints.is_empty() {
        outln!("  checkpoints  {}", r.checkpoints.join(", "));
    }
    if let Some(why) = &r.cooldown_override {
        outln!("  cooldown     overridden: {}", Escaped(why));
    }
}

pub fn verify_cmd(args: VerifyArgs) -> anyhow::Result<i32> {
    match verify(&args.dir, args.key.as_deref()) {
        Ok(report) => {
            match args.output {
                Format::Json => outln!(
                    "{}",
                    serde_json::json!({"verified": true, "dir": args.dir.display().to_string(), "report": report})
                ),
                Format::Text => print_report(&args.dir, &report),
            }
            Ok(0)
        }
        Err(e) => {
            match args.output {
                Format::Json => outln!(
                    "{}",
                    serde_json::json!({"verified": false, "dir": args.dir.display().to_string(), "error": e.to_string()})
                ),
                Format::Text => eprintln!("{e}"),
            }
            Ok(1)
        }
    }
}

/// Make an Ed25519 key pair for signing evidence bundles. The secret goes to stdout once:
/// store it as the variable [evidence] signing_key names (CANARY_SIGNING_KEY); publish the
/// public key so anyone can `canary verify --key` your bundles.
#[derive(clap::Args)]
#[command(after_help = "Example:\n  canary keygen >> .env.canary && chmod 600 .env.canary")]
pub struct KeygenArgs {}

pub fn keygen(_args: KeygenArgs) -> anyhow::Result<i32> {
    let pair = generate_keypair()?;
    outln!("CANARY_SIGNING_KEY={}", pair.secret_hex.expose());
    eprintln!(
        "public key (publish it; `canary verify --key` checks against it): {}",
        pair.public_hex
    );
    Ok(0)
}

/// Past runs of this configuration's state directory, newest first, and any active cooldown.
#[derive(clap::Args)]
#[command(after_help = "Example:\n  canary history -c canary.toml --limit 10")]
pub struct HistoryArgs {
    #[arg(short, long, default_value = "canary.toml")]
    config: PathBuf,
    /// State directory, instead of the config's run.state_dir.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    #[arg(long, default_value_t = 20)]
    limit: usize,
    #[arg(long, value_enum, default_value_t)]
    output: Format,
}

pub fn history(args: HistoryArgs) -> anyhow::Result<i32> {
    // `--state-dir` without a configuration: CANARY_STATE_URL, when set, is the store.
    let location = match args.state_dir {
        Some(d) => {
            let url = std::env::var(crate::config::Config::STATE_URL_VAR)
                .ok()
                .filter(|u| !u.is_empty())
                .map(canary_core::Secret::new);
            canary_state::Location::new(url, &d)
        }
        None => load_config(&args.config, Needs::PLAN)?.state(),
    };
    let (runs, where_) = on_a_runtime_of_its_own(async {
        let store = Store::open(&location).await?;
        Ok::<_, canary_state::StoreError>((store.list(args.limit).await?, store.describe()))
    })??;
    match args.output {
        Format::Json => {
            let rows: Vec<serde_json::Value> = runs
                .iter()
                .map(|r| {
                    serde_json::json!({
                        "run_id": r.run_id,
                        "service": r.service,
                        "started": canary_evidence::stamp::rfc3339(r.started),
                        "finished": r.finished.map(canary_evidence::stamp::rfc3339),
                        "verdict": r.verdict,
                        "reasons": r.reasons,
                        "bundle": r.bundle.display().to_string(),
                        "host": r.host,
                        "operator": r.operator,
                        "cooldown_override": r.cooldown_override.as_ref().map(|o| serde_json::json!({
                            "reason": o.reason,
                            "overridden_run": o.overridden_run,
                            "by": o.by,
                            "host": o.host,
                        })),
                    })
                })
                .collect();
            outln!("{}", serde_json::to_string_pretty(&rows)?);
        }
        Format::Text => {
            if runs.is_empty() {
                outln!("no runs recorded in {where_}");
            }
            for r in &runs {
                let by = match (&r.operator, &r.host) {
                    (Some(operator), Some(host)) => format!("  {operator}@{host}"),
                    _ => String::new(),
                };
                outln!(
                    "{}  {:<12} {:<13} {}{by}",
                    canary_evidence::stamp::rfc3339(r.started),
                    r.service,
                    r.verdict.as_deref().unwrap_or("(unfinished)"),
                    r.run_id
                );
                for reason in r.reasons.lines().filter(|l| !l.is_empty()) {
                    outln!("    - {}", canary_core::Escaped(reason));
                }
                if let Some(o) = &r.cooldown_override {
                    let who = match (&o.by, &o.host) {
                        (Some(by), Some(host)) => format!(" by {by}@{host}"),
                        _ => String::new(),
                    };
                    outln!(
                        "    cooldown of {} overridden{who}: {}",
                        o.overridden_run,
                        canary_core::Escaped(&o.reason)
                    );
                }
                let on = r
                    .host
                    .as_deref()
                    .map(|h| format!(" on {h}"))
                    .unwrap_or_default();
                outln!("    bundle {}{on}", r.bundle.display());
            }
        }
    }
    Ok(0)
}

/// Runs `work` to completion on a current-thread runtime in a scoped thread. `canary history`
/// is dispatched as a synchronous command from inside `main`'s runtime, where blocking on a
/// future directly would panic; the store's API is async.
fn on_a_runtime_of_its_own<T: Send>(
    work: impl std::future::Future<Output = T> + Send,
) -> anyhow::Result<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                Ok(runtime.block_on(work))
            })
            .join()
            .map_err(|_| anyhow::anyhow!("reading the run history panicked"))?
    })
}
