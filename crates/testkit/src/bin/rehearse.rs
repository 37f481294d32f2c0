//! `rehearse`: stands up the production rehearsal (see `canary_testkit::rehearsal`) and runs
//! `canary run` against it; `scripts/rehearse.sh` builds and calls it.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test support: a failure is a failure

use std::path::PathBuf;

use canary_testkit::rehearsal::{Guard, Lb, Options, Rehearsal};

#[derive(clap::Parser)]
#[command(
    name = "rehearse",
    about = "Rehearse a production canary on loopback: relay-demo r0.5 and r1 behind HAProxy, \
             Prometheus, Alertmanager, the Grafana stand-in; `canary run` with the runbook's .env.canary.",
    after_help = "Examples:
  scripts/rehearse.sh                               healthy canary, HAProxy runtime API → PROMOTE
  scripts/rehearse.sh --fault rls-errors@10m        RLS errors from T+10m → ROLLBACK
  scripts/rehearse.sh --lb railway --channels       the runbook's LB_PROVIDER=railway, Slack/PagerDuty/email on
  scripts/rehearse.sh --time-scale 1                the real 60 minutes"
)]
struct Args {
    /// The canary binary.
    #[arg(long, default_value = "target/release/canary")]
    canary: PathBuf,
    /// Where everything goes: canary.toml, .env.canary, logs/, canary-evidence/.
    #[arg(long, default_value = "target/rehearsal")]
    work: PathBuf,
    /// haproxy (runtime API) or railway (the template's commands, a platform CLI stand-in).
    #[arg(long, default_value = "haproxy")]
    lb: String,
    /// A fault for the canary: KIND[:rate][@onset] (slow-ttfv, sse-drop, rls-errors,
    /// tenant-leak, slow-ann, pool-saturation). The onset is in runbook time and counts from the
    /// canary service's start, which is some 5–10 runbook-minutes before the run's T+0 (the
    /// stack starts and fills a window of traffic first); without one the fault is there from
    /// the start.
    #[arg(long)]
    fault: Option<String>,
    /// How many times faster than the runbook (60: the hour in a minute).
    #[arg(long, default_value_t = 60.0)]
    time_scale: f64,
    /// Enable the template's Slack, PagerDuty and email channels (local receivers, real SMTP).
    #[arg(long)]
    channels: bool,
    /// Enable the template's example comparison: the canary's ANN p95 judged against the
    /// baseline's (critical).
    #[arg(long)]
    compare: bool,
    /// both (the template's arming), engine (no alert rules), alerts (the alert path first).
    #[arg(long, default_value = "both")]
    guard: String,
}

fn main() {
    let args: Args = clap::Parser::parse();
    let _ = std::fs::remove_dir_all(&args.work);
    std::fs::create_dir_all(&args.work).expect("create the work directory");
    let work = std::fs::canonicalize(&args.work).expect("work directory");
    let canary = std::fs::canonicalize(&args.canary).unwrap_or_else(|_| {
        panic!(
            "no canary binary at {}: cargo build --release",
            args.canary.display()
        )
    });
    let mut options = Options::new(canary, work.clone());
    options.lb = match args.lb.as_str() {
        "haproxy" => Lb::Haproxy,
        "railway" => Lb::Railway,
        other => panic!("--lb {other}: use haproxy or railway"),
    };
    options.guard = match args.guard.as_str() {
        "both" => Guard::Both,
        "engine" => Guard::Engine,
        "alerts" => Guard::Alerts,
        other => panic!("--guard {other}: use both, engine or alerts"),
    };
    options.fault = args.fault;
    options.time_scale = args.time_scale;
    options.channels = args.channels;
    options.compare = args.compare;
    eprintln!("rehearse: standing up the stack in {}", work.display());
    let rehearsal = Rehearsal::start(options);
    eprintln!(
        "rehearse: HAProxy http://{} (runtime API {}), Prometheus {}, Alertmanager {}, Grafana {}",
        rehearsal.haproxy.addr,
        rehearsal.haproxy.socket.display(),
        rehearsal.prometheus.url(),
        rehearsal.alertmanager.url(),
        rehearsal.grafana.url()
    );
    eprintln!(
        "rehearse: canary run -c {}/canary.toml --time-scale {}",
        work.display(),
        args.time_scale
    );
    let outcome = rehearsal.run();
    eprint!("{}", outcome.stderr);
    print!("{}", outcome.stdout);
    let (code, verified) = if outcome.bundle.as_os_str().is_empty() {
        (1, "no bundle (the run did not start)".to_owned())
    } else {
        rehearsal.verify(&outcome.bundle)
    };
    eprintln!(
        "rehearse: exit {}; HAProxy weights read back: {} {} / {} {}; canary verify: {}",
        outcome.code,
        canary_testkit::rehearsal::CANARY_SERVER,
        outcome.weights.0,
        canary_testkit::rehearsal::BASELINE_SERVER,
        outcome.weights.1,
        if code == 0 { "OK".to_owned() } else { verified },
    );
    if let (Some(onset), Some(t)) = (rehearsal.fault_onset_ms(), outcome.timeline()) {
        // One JSON line for scripts/bench-rehearsal.sh: fault onset → decision → verified.
        println!(
            "{{\"fault\":{:?},\"guard\":{:?},\"acted\":\"{}\",\"onset_to_decision_ms\":{},\"onset_to_verified_ms\":{},\"decision_to_verified_ms\":{}}}",
            rehearsal.options.fault.clone().unwrap_or_default(),
            args.guard,
            if t.by_alert { "alert" } else { "engine" },
            t.decided_ms as i64 - onset as i64,
            t.verified_ms as i64 - onset as i64,
            t.verified_ms as i64 - t.decided_ms as i64,
        );
    }
    eprintln!("rehearse: logs in {}/logs", work.display());
    // The stack's processes stop when it drops; `exit` would skip that.
    drop(rehearsal);
    std::process::exit(outcome.code);
}
