//! `canary backtest`: run the engine over historical Prometheus data and report what it would
//! have decided, and when.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use canary_core::duration::{self, Human};
use canary_core::engine::{Action, Input, Status};
use canary_core::plan::{Approval, OnInconclusive, Step};
use canary_core::verdict::Reason;
use canary_core::{Decision, Engine, Millis, Plan, Secret, Verdict};
use canary_providers::metrics::MetricSource;
use canary_providers::metrics::prometheus::{PrometheusConfig, PrometheusSource};
use serde::Serialize;

use crate::commands::validate::load_config;
use crate::config::settings::MetricsSettings;
use crate::config::{Config, Needs};
use crate::output::Format;
use canary_providers::metrics::observe::{observe_round, scope_comparisons, scope_guardrails};

/// Replay a guardrail plan over history: "would this plan have caught last Tuesday's incident,
/// and when?" Evaluates each guardrail per arm at every step and prints the timeline and the
/// verdict. The burst, probes and approvals do not apply to history and are left out.
#[derive(clap::Args)]
#[command(after_help = "Examples:
  canary backtest -c canary.toml --prometheus http://prometheus:9090 --from 2026-11-17T14:00:00Z
  canary backtest -c canary.toml --from 1763388000 --to 1763391600 --step 1m --output json

Exit codes as `canary run`: 0 PROMOTE, 3 ROLLBACK, 4 INCONCLUSIVE, 1 error (5 PROMOTION_FAILED
needs a load balancer: a backtest never sees one).")]
pub struct BacktestArgs {
    /// The configuration file (its plan and guardrails are replayed).
    #[arg(short, long, default_value = "canary.toml")]
    config: PathBuf,
    /// Prometheus API to read history from (default: the config's [metrics] url and token).
    #[arg(long)]
    prometheus: Option<String>,
    /// Environment variable holding a bearer token for --prometheus.
    #[arg(long, value_name = "VAR")]
    token_env: Option<String>,
    /// Start of the window: RFC 3339 (2026-11-17T14:00:00Z) or unix seconds.
    #[arg(long)]
    from: String,
    /// End of the window (default: --from plus the plan's duration).
    #[arg(long)]
    to: Option<String>,
    /// Evaluation step (default: the plan's evaluation_interval).
    #[arg(long)]
    step: Option<String>,
    /// Per-query timeout.
    #[arg(long, default_value = "30s")]
    timeout: String,
    #[arg(long, value_enum, default_value_t)]
    output: Format,
}

/// Parses RFC 3339 or unix seconds into milliseconds since the epoch.
pub fn parse_time(s: &str) -> anyhow::Result<Millis> {
    if let Ok(secs) = s.parse::<f64>()
        && secs.is_finite()
    {
        return Ok((secs * 1000.0).round() as Millis);
    }
    let ts: jiff::Timestamp = s.parse().with_context(|| {
        format!("{s:?} is not a time: use RFC 3339 (2026-11-17T14:00:00Z) or unix seconds")
    })?;
    Ok(ts.as_millisecond())
}

fn rfc3339(t: Millis) -> String {
    jiff::Timestamp::from_millisecond(t).map_or_else(|_| t.to_string(), |ts| ts.to_string())
}

#[derive(Serialize)]
struct GuardrailPoint {
    name: String,
    status: &'static str,
    #[serde(with = "canary_core::json_float::option")]
    canary: Option<f64>,
    #[serde(with = "canary_core::json_float::option")]
    baseline: Option<f64>,
}

/// A comparison at one round: its classification so far and the test's evidence.
#[derive(Serialize)]
struct ComparisonPoint {
    name: String,
    classification: canary_core::judge::Classification,
    #[serde(with = "canary_core::json_float::option")]
    estimate: Option<f64>,
    #[serde(with = "canary_core::json_float::option")]
    e_value: Option<f64>,
}

#[derive(Serialize)]
struct TimelineRound {
    /// Seconds from --from.
    t: f64,
    guardrails: Vec<GuardrailPoint>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    comparisons: Vec<ComparisonPoint>,
}

#[derive(Serialize)]
struct EventLine {
    t: f64,
    severity: canary_core::Severity,
    message: String,
}

#[derive(Serialize)]
struct ReasonOut {
    message: String,
    #[serde(flatten)]
    reason: Reason,
}

#[derive(Serialize)]
struct Report {
    service: String,
    prometheus: String,
    from: String,
    to: String,
    step: String,
    verdict: &'static str,
    reasons: Vec<ReasonOut>,
    /// Seconds from --from at which a rollback condition was met, or null.
    triggered_at: Option<f64>,
    /// Seconds from --from at which the engine decided.
    decided_at: Option<f64>,
    events: Vec<EventLine>,
    /// Each comparison's judgement at the decision (absent without comparisons).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    comparisons: Vec<canary_core::judge::Judgement>,
    #[serde(skip_serializing_if = "Option::is_none")]
    score: Option<canary_core::judge::Score>,
    timeline: Vec<TimelineRound>,
}

pub async fn run(args: BacktestArgs) -> anyhow::Result<i32> {
    let needs = Needs {
        metrics: args.prometheus.is_none(),
        ..Needs::PLAN
    };
    let config = load_config(&args.config, needs)?;
    let source = history_source(&args, &config)?;
    let from = parse_time(&args.from).context("--from")?;
    // An unreachable or unauthorised API is an error, not a verdict about the canary.
    let info = source.build_info().await?;
    tracing::debug!(prometheus = %source.url(), version = %info.version, "history source");
    let to = match &args.to {
        Some(t) => parse_time(t).context("--to")?,
        None => from + config.plan.window().as_millis() as Millis,
    };
    if to <= from {
        bail!("--to must be after --from");
    }
    let plan = history_plan(&config.plan, args.step.as_deref(), from, to)?;
    let replayed = replay_history(&plan, &source, from, to).await?;
    let decision = replayed.decision;
    let secs = |t: Millis| (t - from) as f64 / 1000.0;
    let triggered_at = match &decision.verdict {
        Verdict::Rollback { reasons } => Some(
            reasons
                .iter()
                .filter_map(|r| match r {
                    Reason::GuardrailTriggered { at, .. } => Some(secs(*at)),
                    _ => None,
                })
                .fold(secs(decision.at), f64::min),
        ),
        _ => None,
    };
    let report = Report {
        service: plan.service.clone(),
        prometheus: source.url().to_owned(),
        from: rfc3339(from),
        to: rfc3339(to),
        step: duration::format(plan.evaluation_interval),
        verdict: decision.verdict.name(),
        reasons: decision
            .verdict
            .reasons()
            .iter()
            .map(|r| ReasonOut {
                message: r.to_string(),
                reason: r.clone(),
            })
            .collect(),
        triggered_at,
        decided_at: Some(secs(decision.at)),
        events: replayed.events,
        comparisons: decision.comparisons.clone(),
        score: decision.score.clone(),
        timeline: replayed.timeline,
    };
    match args.output {
        Format::Json => outln!("{}", serde_json::to_string_pretty(&report)?),
        Format::Text => out!("{}", render_text(&report, &plan)),
    }
    Ok(decision.verdict.exit_code())
}

/// The Prometheus API history is read from: `--prometheus`, else the configuration's.
fn history_source(args: &BacktestArgs, config: &Config) -> anyhow::Result<PrometheusSource> {
    let timeout = duration::parse(&args.timeout).context("--timeout")?;
    let (url, token) = match (&args.prometheus, &config.metrics) {
        (Some(url), _) => {
            let token = match &args.token_env {
                Some(var) => {
                    Some(Secret::new(std::env::var(var).with_context(|| {
                        format!("--token-env {var}: the variable is not set")
                    })?))
                }
                None => None,
            };
            (url.clone(), token)
        }
        (None, Some(MetricsSettings::Prometheus(p))) => (p.url.clone(), p.token.clone()),
        (None, _) => bail!(
            "backtest reads history from a Prometheus API: pass --prometheus URL (the config's [metrics] source is not prometheus)"
        ),
    };
    Ok(PrometheusSource::new(PrometheusConfig {
        url,
        token,
        timeout,
    })?)
}

/// `plan` for a window of history: one step over `from..to`, evaluated every `step` (default:
/// the plan's interval). History has no burst, no probes and no operator: the guardrails are
/// judged alone.
fn history_plan(plan: &Plan, step: Option<&str>, from: Millis, to: Millis) -> anyhow::Result<Plan> {
    let mut plan = plan.clone();
    if let Some(step) = step {
        plan.evaluation_interval = duration::parse(step).context("--step")?;
        if plan.evaluation_interval.is_zero() {
            bail!("--step must be longer than 0");
        }
    }
    let window = Duration::from_millis((to - from) as u64);
    plan.steps = vec![Step {
        weight: plan.steps[0].weight,
        hold: window,
    }];
    plan.checkpoints.retain(|c| *c <= window);
    plan.burst = None;
    plan.probes = false;
    plan.approval = Approval::Auto;
    plan.on_inconclusive = OnInconclusive::Rollback;
    plan.check_log_interval = plan.check_log_interval.min(window);
    Ok(plan)
}

/// What the engine decided over history, with every round's readings and every notification.
struct Replayed {
    decision: Decision,
    timeline: Vec<TimelineRound>,
    events: Vec<EventLine>,
}

/// Drives the engine over `from..to` on history's clock: each evaluation queries `source` at
/// the round's time.
async fn replay_history(
    plan: &Plan,
    source: &PrometheusSource,
    from: Millis,
    to: Millis,
) -> anyhow::Result<Replayed> {
    let guardrails = scope_guardrails(plan)?;
    let comparisons = scope_comparisons(plan)?;
    let mut engine = Engine::new(plan.clone())?;
    let secs = |t: Millis| (t - from) as f64 / 1000.0;
    let mut timeline = Vec::new();
    let mut events = Vec::new();
    let mut queue = engine.apply(&Input::Start { at: from })?;
    let max_rounds =
        (plan.window().as_millis() / plan.evaluation_interval.as_millis().max(1)) as usize + 2;
    let mut rounds = 0usize;
    loop {
        while !queue.is_empty() {
            match queue.remove(0) {
                Action::Evaluate { round } => {
                    rounds += 1;
                    if rounds > max_rounds {
                        bail!("internal: more evaluation rounds than the window holds");
                    }
                    let result = observe_round(
                        source as &dyn MetricSource,
                        &guardrails,
                        &comparisons,
                        round,
                    )
                    .await;
                    for r in &result.raw {
                        if let Err(e) = &r.result {
                            tracing::debug!(guardrail = %r.guardrail, arm = %r.arm, error = %e, "query failed");
                        }
                    }
                    queue.extend(engine.apply(&Input::Observations {
                        at: round,
                        round,
                        readings: result.readings,
                        comparisons: result.comparisons,
                    })?);
                    let status = engine.status();
                    timeline.push(TimelineRound {
                        t: secs(round),
                        comparisons: status
                            .comparisons
                            .iter()
                            .map(|j| ComparisonPoint {
                                name: j.name.clone(),
                                classification: j.classification,
                                estimate: j.estimate,
                                e_value: match j.evidence {
                                    canary_core::judge::Evidence::EValue { e_value, .. } => {
                                        Some(e_value)
                                    }
                                    _ => None,
                                },
                            })
                            .collect(),
                        guardrails: status
                            .guardrails
                            .into_iter()
                            .map(|g| GuardrailPoint {
                                status: g.status.label(),
                                canary: g.canary.as_ref().and_then(|r| r.as_value()),
                                baseline: g.baseline.as_ref().and_then(|r| r.as_value()),
                                name: g.name,
                            })
                            .collect(),
                    });
                }
                Action::Notify {
                    severity, message, ..
                } => events.push(EventLine {
                    t: secs(engine.status().elapsed_ms + from),
                    severity,
                    message,
                }),
                _ => {}
            }
        }
        if engine.is_decided() {
            break;
        }
        match engine.next_wakeup() {
            Some(next) if next <= to => queue = engine.apply(&Input::Tick { at: next })?,
            _ => break,
        }
    }
    let decision = engine
        .decision()
        .cloned()
        .context("the engine did not reach a decision within the window")?;
    Ok(Replayed {
        decision,
        timeline,
        events,
    })
}

fn offset(t: f64) -> String {
    format!("T+{}", Human(Duration::from_millis((t * 1000.0) as u64)))
}

/// The timeline as one strip per guardrail (✓ pass, ✗ breach, ? no data/error), the events,
/// and the verdict.
fn render_text(report: &Report, plan: &canary_core::Plan) -> String {
    let mut out = format!(
        "backtest of {} over {} → {} (every {}, {} rounds) from {}\n\n",
        report.service,
        report.from,
        report.to,
        report.step,
        report.timeline.len(),
        report.prometheus
    );
    const WIDTH: usize = 60;
    let name = plan
        .guardrails
        .iter()
        .map(|g| g.name.len())
        .chain(plan.comparisons.iter().map(|c| c.name.len()))
        .fold(14, usize::max);
    let n = report.timeline.len().max(1);
    let per_col = n.div_ceil(WIDTH);
    for (i, g) in plan.guardrails.iter().enumerate() {
        let mut strip = String::new();
        for chunk in report.timeline.chunks(per_col) {
            // The worst status in each column: breach, then no data/error, then pass.
            let statuses: Vec<&str> = chunk
                .iter()
                .filter_map(|r| r.guardrails.get(i).map(|p| p.status))
                .collect();
            let mark = if statuses.contains(&Status::Breach.label()) {
                '✗'
            } else if statuses.iter().all(|s| *s == Status::Pass.label()) {
                '✓'
            } else {
                '?'
            };
            strip.push(mark);
        }
        out.push_str(&format!("  {:<name$} {strip}  must {}\n", g.name, g.must));
    }
    for (i, c) in plan.comparisons.iter().enumerate() {
        use canary_core::judge::Classification;
        let strip: String = report
            .timeline
            .chunks(per_col)
            .map(|chunk| {
                // A comparison's classification only worsens: the column's last round says it.
                match chunk.last().and_then(|r| r.comparisons.get(i)) {
                    Some(p) if p.classification.failed() => '✗',
                    Some(p) if p.classification == Classification::Pass => '✓',
                    _ => '?',
                }
            })
            .collect();
        out.push_str(&format!(
            "  {:<name$} {strip}  vs baseline: {} is bad beyond {}\n",
            c.name,
            c.direction,
            canary_core::plan::format_effect(c.effect)
        ));
    }
    out.push_str(&format!(
        "  {:<name$} one mark per {} ({} per column)\n",
        "", report.step, per_col
    ));
    if !report.events.is_empty() {
        out.push_str("\nevents:\n");
        for e in &report.events {
            out.push_str(&format!("  {:<10} {}\n", offset(e.t), e.message));
        }
    }
    out.push_str(&format!(
        "\nverdict: {}{}\n",
        report.verdict,
        report
            .decided_at
            .map_or(String::new(), |t| format!(" at {}", offset(t)))
    ));
    for r in &report.reasons {
        out.push_str(&format!("  - {}\n", r.message));
    }
    if !report.comparisons.is_empty() {
        out.push_str("\ncomparisons at the decision:\n");
        for j in &report.comparisons {
            out.push_str(&format!("  {}\n", canary_core::comparisons::check_line(j)));
        }
        if let Some(score) = &report.score {
            out.push_str(&format!("  score {}\n", crate::control::score_text(score)));
        }
    }
    if let Some(t) = report.triggered_at {
        out.push_str(&format!("  triggered at {}\n", offset(t)));
    }
    out
}
