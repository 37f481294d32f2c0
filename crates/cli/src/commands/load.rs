//! `canary load`: the runbook's load burst and the tenant-isolation probes, standalone, built
//! from `[load]` by the same wiring the run uses (`run::wiring`).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use canary_load::{BurstReport, Mode, OpenLoop, ProbeReport, ProbeVerdict, Progress, Targeting};

use crate::commands::validate::load_config;
use crate::config::Needs;
use crate::config::settings::LoadTarget;
use crate::output::Format;
use crate::run::wiring::{canary_route, pin_proof, pins_by_header, probe_spec, scenario};

/// Run the load burst and the isolation probes alone, and write the runbook's two artifacts:
/// the transcript `canary_load_burst_<ts>.log` and the summary `CANARY_LOAD_SUMMARY_<ts>.json`.
///
/// The burst follows `[load]`: each user sends `requests_per_user` requests with `pause`
/// between them (the runbook: 5 users × 20, 100 ms). Probes run alongside when users have
/// markers: every user asks for every other user's marker, pinned to the canary.
#[derive(clap::Args)]
#[command(after_help = "Examples:
  canary load -c canary.toml                        the runbook's burst + probes, artifacts in .
  canary load -c canary.toml --target canary        all requests pinned to the canary
  canary load -c canary.toml --rate 200 --duration 60s --concurrency 64
                                                    open loop: 200 requests/s for a minute

Exit codes: 0 the burst met min_success_rate and the probes found isolation intact; 3 the burst
missed its bar, a probe found a leak, or the probes could not prove isolation; 1 error.")]
pub struct LoadArgs {
    /// The configuration file.
    #[arg(short, long, default_value = "canary.toml")]
    config: PathBuf,
    /// Directory the transcript and the summary are written to.
    #[arg(long, default_value = ".")]
    out: PathBuf,
    /// Where the burst goes, instead of [load] target: lb, canary or both.
    #[arg(long, value_enum)]
    target: Option<TargetArg>,
    /// Requests per user, instead of [load] requests_per_user.
    #[arg(long)]
    requests_per_user: Option<u32>,
    /// Pause between a user's requests, instead of [load] pause (e.g. 100ms, 0s).
    #[arg(long)]
    pause: Option<String>,
    /// Open loop: send this many requests per second (with --duration) whatever the server
    /// does; latency counts from each request's due time.
    #[arg(long, requires = "duration")]
    rate: Option<f64>,
    /// Open loop: how long to keep sending (e.g. 60s).
    #[arg(long, requires = "rate")]
    duration: Option<String>,
    /// Open loop: most requests in flight (one connection each).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Load threads, each with its own runtime (like `wrk -t`). Default: one per CPU for an
    /// open loop or more than 16 users, else the command's own runtime.
    #[arg(long)]
    threads: Option<usize>,
    /// Skip the isolation probes.
    #[arg(long)]
    no_probes: bool,
    #[arg(long, value_enum, default_value_t)]
    output: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum TargetArg {
    Lb,
    Canary,
    Both,
}

/// `YYYYMMDDTHHMMSSZ` in UTC, as the artifacts' names carry it.
pub fn artifact_stamp(t: jiff::Timestamp) -> String {
    t.strftime("%Y%m%dT%H%M%SZ").to_string()
}

pub async fn run(args: LoadArgs) -> anyhow::Result<i32> {
    let mut needs = Needs {
        load: true,
        ..Needs::PLAN
    };
    let mut config = load_config(&args.config, needs)?;
    let Some(load) = config.load.clone() else {
        anyhow::bail!(
            "{} has no [load] section: add one (`canary init` writes the runbook's burst)",
            args.config.display()
        );
    };
    let target = match args.target {
        None => load.target,
        Some(TargetArg::Lb) => LoadTarget::Lb,
        Some(TargetArg::Canary) => LoadTarget::Canary,
        Some(TargetArg::Both) => LoadTarget::Both,
    };
    // Pinning goes through the embedded proxy, whose pin token its admin API holds: only then
    // does this command need [traffic] (and its variables).
    let mut embedded = None;
    let pins = pins_by_header(&config, &load, target, !args.no_probes);
    if pins {
        needs.traffic = true;
        config = load_config(&args.config, needs)?;
        if let Some(traffic) = &config.traffic {
            embedded = crate::run::wiring::router(traffic)?.1;
        }
    }
    let proof = pin_proof(embedded.as_deref(), pins).await?;
    let load = &load;
    let mut scenario = scenario(&config, load, proof.as_ref());
    scenario.targeting = match target {
        LoadTarget::Lb => Targeting::Lb,
        LoadTarget::Canary => Targeting::Canary(canary_route(&config)),
        LoadTarget::Both => Targeting::Both(canary_route(&config)),
    };
    if let Some(n) = args.requests_per_user {
        scenario.requests_per_user = n;
    }
    if let Some(p) = &args.pause {
        scenario.pause =
            canary_core::duration::parse(p).map_err(|e| anyhow::anyhow!("--pause {p:?}: {e}"))?;
    }
    if let (Some(rate), Some(d)) = (args.rate, &args.duration) {
        let duration = canary_core::duration::parse(d)
            .map_err(|e| anyhow::anyhow!("--duration {d:?}: {e}"))?;
        scenario.mode = Mode::OpenLoop(OpenLoop::new(rate, duration, args.concurrency));
    }
    scenario.threads = args.threads.unwrap_or_else(|| {
        if matches!(scenario.mode, Mode::OpenLoop(_)) || scenario.users.len() > 16 {
            std::thread::available_parallelism().map_or(1, usize::from)
        } else {
            0
        }
    });
    let probes = if args.no_probes {
        None
    } else {
        let spec = probe_spec(&config, load, proof.as_ref());
        if spec.is_none() {
            eprintln!(
                "note: isolation probes skipped: give at least two [[load.users]] a `marker` (relay-demo: `relay-demo markers`)"
            );
        }
        spec
    };

    let (tx, bar) = progress_bar();
    let burst = canary_load::run_burst(&scenario, tx);
    let probing = async {
        match &probes {
            Some(spec) => canary_load::run_probes(spec).await.map(Some),
            None => Ok(None),
        }
    };
    let (burst, probe_report) = tokio::join!(burst, probing);
    if let Some(bar) = bar {
        let _ = bar.await;
    }
    let burst = burst.context("the load burst could not run")?;
    let probe_report = probe_report.context("the isolation probes could not run")?;

    let (log, summary) = write_artifacts(&args.out, &burst, probe_report.as_ref())?;
    let met = burst.meets(load.min_success_rate);
    let verdict = probe_report.as_ref().map(ProbeReport::verdict);
    let code = if met && matches!(verdict, None | Some(ProbeVerdict::Clean)) {
        0
    } else {
        3
    };
    match args.output {
        Format::Json => {
            let out = serde_json::json!({
                "burst": canary_load::summary_json(&burst),
                "isolation": probe_report.as_ref().map(canary_load::probe_json),
                "min_success_rate": load.min_success_rate,
                "met": met,
                "transcript": log.display().to_string(),
                "summary": summary.display().to_string(),
                "exit_code": code,
            });
            outln!("{}", serde_json::to_string_pretty(&out)?);
        }
        Format::Text => print_text(
            &burst,
            probe_report.as_ref(),
            load.min_success_rate,
            &log,
            &summary,
        ),
    }
    Ok(code)
}

/// Writes the transcript (burst lines, then the probe report) and the summary (with the probe
/// report under `isolation`). Returns their paths.
fn write_artifacts(
    dir: &Path,
    burst: &BurstReport,
    probes: Option<&ProbeReport>,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let stamp = artifact_stamp(burst.started_at);
    let log = dir.join(format!("canary_load_burst_{stamp}.log"));
    let summary = dir.join(format!("CANARY_LOAD_SUMMARY_{stamp}.json"));
    let mut text = canary_load::transcript(burst);
    let mut json = canary_load::summary_json(burst);
    if let Some(p) = probes {
        text.push_str(&canary_load::probe_text(p));
        json["isolation"] = canary_load::probe_json(p);
    }
    std::fs::write(&log, text).with_context(|| format!("cannot write {}", log.display()))?;
    std::fs::write(&summary, serde_json::to_string_pretty(&json)? + "\n")
        .with_context(|| format!("cannot write {}", summary.display()))?;
    Ok((log, summary))
}

fn print_text(
    burst: &BurstReport,
    probes: Option<&ProbeReport>,
    bar: f64,
    log: &Path,
    summary: &Path,
) {
    let o = &burst.overall;
    let rate = o.success_rate_percent.unwrap_or(0.0);
    outln!(
        "burst: {} queries, {} successful, {} failed: {rate:.1} % (bar {bar} %) {}",
        o.total,
        o.successful,
        o.failed,
        if burst.meets(bar) { "met" } else { "MISSED" }
    );
    let line = |name: &str, s: &canary_load::Summary| {
        let pct = |p: Option<canary_load::Percentiles>| {
            p.map_or_else(
                || "-".to_owned(),
                |p| format!("{:.0}/{:.0}/{:.0} ms", p.p50, p.p95, p.p99),
            )
        };
        outln!(
            "  {name:<9} {:>5} requests  {:>6}  latency p50/p95/p99 {}  ttfv {}  streams complete {}/{}",
            s.total,
            s.success_rate_percent
                .map_or_else(|| "-".to_owned(), |r| format!("{r:.1} %")),
            pct(s.latency),
            pct(s.ttfv),
            s.streams_complete,
            s.event_streams
        );
    };
    line("all", o);
    for t in &burst.per_target {
        line(&format!("→ {}", t.target), &t.summary);
    }
    for a in &burst.per_arm {
        let name = a
            .arm
            .map_or_else(|| "unknown".to_owned(), |r| r.to_string());
        line(&name, &a.summary);
    }
    let pinned = !matches!(burst.targeting, Targeting::Lb);
    if pinned && burst.per_arm.iter().all(|a| a.arm.is_none()) {
        outln!(
            "  note: no answer named its arm: the pin header only works through canary's embedded proxy; set [arms.canary] url to reach the canary directly"
        );
    }
    for c in &burst.sufficiency {
        outln!("  {}: {}", c.guardrail, c.recommendation);
    }
    if let Some(p) = probes {
        let verdict = match p.verdict() {
            ProbeVerdict::Clean => "isolation intact".to_owned(),
            ProbeVerdict::Leaked => format!(
                "{} LEAK(S): a user received another user's marker (security)",
                p.leaks.len()
            ),
            ProbeVerdict::Unproven => {
                "isolation NOT proven: probes failed or a user cannot find its own marker"
                    .to_owned()
            }
        };
        outln!(
            "probes: {} pairs, {} requests, {}: {verdict}",
            p.pairs,
            p.requests,
            p.route
        );
        for l in &p.leaks {
            outln!(
                "  LEAK {} received {}'s marker ({}) arm {}",
                l.observer,
                l.owner,
                l.request,
                l.arm
                    .map_or_else(|| "unknown".to_owned(), |r| r.to_string())
            );
        }
    }
    outln!("wrote {}", log.display());
    outln!("wrote {}", summary.display());
}

/// A progress line on stderr while the burst runs, when stderr is a terminal. The returned
/// task ends when the burst drops its sender.
fn progress_bar() -> (
    Option<tokio::sync::mpsc::Sender<Progress>>,
    Option<tokio::task::JoinHandle<()>>,
) {
    if !std::io::stderr().is_terminal() {
        return (None, None);
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Progress>(256);
    let task = tokio::spawn(async move {
        let mut last = std::time::Instant::now() - Duration::from_secs(1);
        let mut shown = false;
        while let Some(p) = rx.recv().await {
            // At most ~20 redraws a second, and always the last one.
            if last.elapsed() < Duration::from_millis(50) && p.completed < p.total {
                continue;
            }
            last = std::time::Instant::now();
            let width = 30usize;
            let filled = if p.total == 0 {
                width
            } else {
                (p.completed as usize * width / p.total as usize).min(width)
            };
            let mut err = std::io::stderr().lock();
            let _ = write!(
                err,
                "\r{} [{}{}] {}/{} failed {}   ",
                p.target,
                "#".repeat(filled),
                ".".repeat(width - filled),
                p.completed,
                p.total,
                p.failed
            );
            let _ = err.flush();
            shown = true;
        }
        if shown {
            let _ = write!(std::io::stderr().lock(), "\r{}\r", " ".repeat(60));
        }
    });
    (Some(tx), Some(task))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const JWT: &str = "cli-load-test-signing-secret";

    async fn relay(version: &str, faults: &[&str]) -> relay_demo::RunningServer {
        relay_demo::spawn(relay_demo::ServeOptions {
            version_label: version.to_owned(),
            seed: true,
            seed_memories_per_user: 60,
            faults: faults.iter().map(|f| f.parse().unwrap()).collect(),
            jwt_secret: Some(JWT.to_owned()),
            data_secret: Some("cli-load-test-data-secret".to_owned()),
            ..relay_demo::ServeOptions::default()
        })
        .await
        .unwrap()
    }

    /// The runbook configuration pointed at `lb` (and at `canary` as the canary's own URL),
    /// with markers, 4 requests per user and no pause; tokens and markers in `.env.canary`.
    fn write_config(dir: &Path, lb: &str, canary: &str) -> PathBuf {
        let mut text = crate::config::INIT_TEMPLATE
            .replace("${PROD_API_URL}", lb)
            .replace("requests_per_user = 20", "requests_per_user = 4")
            .replace("pause = \"100ms\"", "pause = \"0s\"")
            .replace(
                "selector = '{version=\"r1\"}'",
                &format!("selector = '{{version=\"r1\"}}'\nurl = \"{canary}\""),
            );
        let mut env = String::new();
        for (user, marker) in relay_demo::seed_markers() {
            let n = user.trim_start_matches("user_");
            text = text.replace(
                &format!("token = \"${{API_TOKEN_USER_{n}}}\""),
                &format!("token = \"${{API_TOKEN_USER_{n}}}\"\nmarker = \"${{MARKER_USER_{n}}}\""),
            );
            let token = relay_demo::mint_token(JWT, &user, Duration::from_secs(3600)).unwrap();
            env.push_str(&format!(
                "API_TOKEN_USER_{n}={token}\nMARKER_USER_{n}={marker}\n"
            ));
        }
        std::fs::write(dir.join(".env.canary"), env).unwrap();
        let path = dir.join("canary.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn args(config: PathBuf, out: PathBuf) -> LoadArgs {
        LoadArgs {
            config,
            out,
            target: None,
            requests_per_user: None,
            pause: None,
            rate: None,
            duration: None,
            concurrency: 64,
            threads: None,
            no_probes: false,
            output: Format::Json,
        }
    }

    fn artifacts(dir: &Path) -> (String, serde_json::Value) {
        let mut log = None;
        let mut summary = None;
        for entry in std::fs::read_dir(dir).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            let stamp = |prefix: &str, suffix: &str| {
                name.strip_prefix(prefix)
                    .and_then(|n| n.strip_suffix(suffix))
                    .filter(|ts| ts.len() == 16 && ts.as_bytes()[8] == b'T' && ts.ends_with('Z'))
                    .is_some()
            };
            if stamp("canary_load_burst_", ".log") {
                log = Some(std::fs::read_to_string(dir.join(&name)).unwrap());
            } else if stamp("CANARY_LOAD_SUMMARY_", ".json") {
                summary = Some(
                    serde_json::from_str(&std::fs::read_to_string(dir.join(&name)).unwrap())
                        .unwrap(),
                );
            }
        }
        (
            log.expect("transcript written"),
            summary.expect("summary written"),
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn canary_load_writes_the_two_artifacts_and_exits_by_the_verdict() {
        let baseline = relay("r0.5", &[]).await;
        let clean = relay("r1", &[]).await;
        let leaky = relay("r1", &["tenant-leak"]).await;
        let dir = tempfile::tempdir().unwrap();
        let secrets: Vec<String> = std::fs::read_to_string({
            write_config(dir.path(), &baseline.url(), &clean.url());
            dir.path().join(".env.canary")
        })
        .unwrap()
        .lines()
        .filter_map(|l| Some(l.split_once('=')?.1.to_owned()))
        .collect();

        // Clean: 5 users × 4 through the load balancer, probes at the canary's own URL.
        let out = dir.path().join("clean");
        let code = run(args(dir.path().join("canary.toml"), out.clone()))
            .await
            .unwrap();
        assert_eq!(code, 0);
        let (log, summary) = artifacts(&out);
        assert_eq!(
            log.lines().filter(|l| l.starts_with("✓ user_")).count(),
            20,
            "{log}"
        );
        assert!(log.contains("self-check user_1: own marker found"), "{log}");
        assert_eq!(summary["total_queries"], 20);
        assert_eq!(summary["success_rate_percent"], 100.0);
        assert_eq!(summary["isolation"]["verdict"], "clean");
        assert_eq!(summary["isolation"]["answered_by"]["canary"], 265);
        // The plan's percentile and ratio guardrails are judged at the first step's 5 %.
        let checks: Vec<&str> = summary["sufficiency"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["guardrail"].as_str().unwrap())
            .collect();
        assert_eq!(checks, ["ttfv_p95", "sse_success", "ann_p95"]);
        assert_eq!(summary["sufficiency"][0]["canary_share_percent"], 5.0);

        // A canary that leaks tenants' rows: exit 3, the leak in both artifacts, on the canary.
        let dir2 = tempfile::tempdir().unwrap();
        let config = write_config(dir2.path(), &baseline.url(), &leaky.url());
        let out = dir2.path().join("leaky");
        let code = run(args(config, out.clone())).await.unwrap();
        assert_eq!(code, 3);
        let (log, summary) = artifacts(&out);
        assert!(log.contains("✗ LEAK user_"), "{log}");
        assert_eq!(summary["isolation"]["verdict"], "leaked");
        let leaks = summary["isolation"]["leaks"].as_array().unwrap();
        assert!(!leaks.is_empty() && leaks.iter().all(|l| l["arm"] == "canary"));

        let written = format!("{log}{summary}");
        for secret in &secrets {
            assert!(
                !written.contains(secret.as_str()),
                "a secret reached an artifact"
            );
        }
        baseline.shutdown().await.unwrap();
        clean.shutdown().await.unwrap();
        leaky.shutdown().await.unwrap();
    }

    #[test]
    fn artifact_stamps_are_utc_basic_format() {
        let t: jiff::Timestamp = "2026-11-26T09:05:07.9Z".parse().unwrap();
        assert_eq!(artifact_stamp(t), "20261126T090507Z");
    }
}
