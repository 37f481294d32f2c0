//! `report.html`: one self-contained page for people — the decision and its reasons on top,
//! every guardrail's table row, one chart per guardrail (canary and baseline over the window in
//! runbook time, the threshold, the checkpoints, the decision, any breach with its `for`
//! window), the burst's latency per arm, the isolation probes' user × user matrix, the run's
//! timeline, and the artifact list with hashes.
//!
//! Inline CSS and inline SVG only: no script, no external fetch, so the page renders the same
//! from a git checkout years later. Every piece of text from the run is HTML-escaped.
//!
//! Times read as the runbook writes them (`T+15m`): a plan on a compressed clock
//! (`time_scale`, the demo's 60×) is shown in the runbook's time, with the wall clock beside.

use std::fmt::Write as _;
use std::time::Duration;

use canary_core::duration::{Human, Runbook};
use canary_core::engine::{GuardrailSummary, Severity};
use canary_core::escape::escaped;
use canary_core::plan::Threshold;
use canary_core::verdict::{fmt_in, fmt_value};
use canary_core::{Decision, Millis, Verdict};

use crate::facts::{
    ArmRequests, BurstDetail, LoadDetail, ProbeMatrix, RunFacts, Series, TimelineEntry,
    TimelineKind, quantile,
};
use crate::manifest::FileEntry;
use crate::render::RunContext;
use crate::render::decision::{burst_line, probe_line};
use crate::render::traffic::{FinalTraffic, Verification};
use crate::stamp;

/// What the report shows.
#[derive(Debug, Clone, Copy)]
pub struct ReportInput<'a> {
    pub facts: &'a RunFacts,
    pub decision: &'a Decision,
    pub traffic: &'a FinalTraffic,
    /// The bundle's other files and their hashes (not the report, manifest or signature).
    pub artifacts: &'a [FileEntry],
    pub signer_fingerprint: &'a str,
    pub cooldown_override: Option<&'a str>,
    /// The burst's requests and the probes' pairs, from the bundle's load files.
    pub detail: &'a LoadDetail,
}

/// Escapes text for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0 auto;max-width:980px;padding:16px 24px;color:#1f2328;background:#fff}
header.verdict{border-radius:8px;padding:12px 20px;margin-bottom:16px;color:#fff}
header.promote{background:#1a7f37}header.rollback{background:#cf222e}header.inconclusive{background:#9a6700}
header h1{margin:0;font-size:28px}header p{margin:4px 0 0}
h2{border-bottom:1px solid #d0d7de;padding-bottom:4px;margin-top:28px}h3{margin:18px 0 6px;font-size:15px}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:3px 8px;border-bottom:1px solid #eaeef2;vertical-align:top}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}code,.hash{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px;word-break:break-all}
.PASS{color:#1a7f37;font-weight:600}.FAIL{color:#cf222e;font-weight:600}.other{color:#9a6700;font-weight:600}
figure{margin:16px 0}figcaption{font-weight:600;margin-bottom:4px}
svg text{font:11px system-ui,sans-serif;fill:#57606a}
.legend span{display:inline-block;margin-right:16px}.sw{display:inline-block;width:18px;height:3px;vertical-align:middle;margin-right:4px}
.note{color:#57606a}
table.matrix th,table.matrix td{border:1px solid #d0d7de;text-align:center;font-size:12px;padding:4px 6px}
table.matrix th.observer{text-align:right}
td.clean{background:#dafbe1}td.leak{background:#ffd8d3;color:#82071e;font-weight:600}td.unproven{background:#fff1c2}td.self{background:#f6f8fa;color:#57606a}td.none{background:#fff;color:#8c959f}
table.timeline td{font-size:13px}table.timeline td.when{white-space:nowrap;font-variant-numeric:tabular-nums}
tr.sev-info td:first-child{border-left:4px solid #8c959f}tr.sev-good td:first-child{border-left:4px solid #1a7f37}
tr.sev-warning td:first-child{border-left:4px solid #bf8700}tr.sev-critical td:first-child{border-left:4px solid #cf222e}
tr.sev-page td:first-child{border-left:4px solid #82071e}tr.sev-page{background:#fff0ee}
.sev{font-size:11px;font-weight:600;text-transform:uppercase;letter-spacing:.03em}
.sev.info{color:#57606a}.sev.good{color:#1a7f37}.sev.warning{color:#9a6700}.sev.critical{color:#cf222e}.sev.page{color:#82071e}";

const CANARY_COLOUR: &str = "#d9480f";
const BASELINE_COLOUR: &str = "#1c7ed6";
const THRESHOLD_COLOUR: &str = "#cf222e";

/// Runbook time for this run: offsets from T+0 on the runbook's clock, and the wall clock
/// beside when the plan is compressed.
#[derive(Debug, Clone, Copy)]
struct Clock {
    start: Millis,
    scale: f64,
}

impl Clock {
    fn new(ctx: &RunContext, facts: &RunFacts) -> Clock {
        let scale = facts.plan.time_scale;
        Clock {
            start: ctx.started,
            scale: if scale.is_finite() && scale > 0.0 {
                scale
            } else {
                1.0
            },
        }
    }

    fn compressed(self) -> bool {
        (self.scale - 1.0).abs() > f64::EPSILON
    }

    /// `T+15m`.
    fn offset(self, at: Millis) -> String {
        stamp::runbook_offset(self.start, at, self.scale)
    }

    /// `2025-10-19T14:15:00Z (T+15m)`; compressed: `T+15m (wall 2025-10-19T14:00:15Z, T+00:15)`.
    fn when(self, at: Millis) -> String {
        if self.compressed() {
            format!(
                "{} (wall {}, {})",
                self.offset(at),
                stamp::rfc3339(at),
                stamp::offset(self.start, at)
            )
        } else {
            format!("{} ({})", stamp::rfc3339(at), self.offset(at))
        }
    }

    /// A plan duration on the runbook's clock: `5m`.
    fn duration(self, d: Duration) -> Runbook {
        Runbook(d, self.scale)
    }
}

/// `< 1500 ms`: a threshold with the guardrail's unit, as [`GuardrailSummary::must_text`]
/// writes it.
fn threshold_in(t: Threshold, unit: Option<&str>) -> String {
    match unit {
        Some(unit) => format!("{t} {unit}"),
        None => t.to_string(),
    }
}

/// Renders the report.
pub fn report_html(ctx: &RunContext, r: &ReportInput<'_>) -> String {
    let plan = &r.facts.plan;
    let d = r.decision;
    let clock = Clock::new(ctx, r.facts);
    let class = match d.verdict {
        Verdict::Promote => "promote",
        Verdict::Rollback { .. } => "rollback",
        Verdict::Inconclusive { .. } => "inconclusive",
        Verdict::PromotionFailed { .. } => "rollback",
    };
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>canary {} — {}</title>\n<style>\n{STYLE}\n</style>\n</head>\n<body>\n",
        escape(&ctx.run_id),
        d.verdict.name()
    );
    let _ = write!(
        h,
        "<header class=\"verdict {class}\">\n<h1>{}</h1>\n<p>{}: canary <b>{}</b> vs baseline <b>{}</b> · run <code>{}</code></p>\n<p>started {} · decided {} · authorised by {}</p>\n",
        d.verdict.name(),
        escape(&plan.service),
        escape(&plan.arms.canary.name),
        escape(&plan.arms.baseline.name),
        escape(&ctx.run_id),
        escape(&stamp::rfc3339(ctx.started)),
        escape(&clock.when(d.at)),
        escape(&escaped(&d.authorised_by)),
    );
    if clock.compressed() {
        let _ = writeln!(
            h,
            "<p>Runbook clock compressed {}×: the {} window took {} of wall time. Times read in the runbook's time (T+15m), the wall clock beside.</p>",
            fmt_value(clock.scale),
            clock.duration(plan.window()),
            Human(plan.window())
        );
    }
    h.push_str("</header>\n");

    h.push_str("<section>\n<h2>Reasons</h2>\n<ul>\n");
    if d.verdict.reasons().is_empty() {
        h.push_str("<li>None: every guardrail that gates promotion had data and passed.</li>\n");
    }
    for reason in d.verdict.reasons() {
        let _ = writeln!(h, "<li>{}</li>", escape(&reason.to_string()));
    }
    h.push_str("</ul>\n");
    let _ = writeln!(
        h,
        "<p>Traffic: {} {} % — {}</p>",
        escape(&plan.arms.canary.name),
        r.traffic.canary_percent,
        escape(&verification(clock, &r.traffic.verification))
    );
    if let Some(why) = r.cooldown_override {
        let _ = writeln!(h, "<p>Cooldown overridden: {}</p>", escape(&escaped(why)));
    }
    h.push_str("</section>\n");

    h.push_str("<section>\n<h2>Guardrails</h2>\n<table>\n<tr><th>status</th><th>guardrail</th><th class=\"num\">canary</th><th class=\"num\">baseline</th><th>must</th><th>for</th><th>on breach</th><th class=\"num\">evaluations</th><th class=\"num\">breaches</th></tr>\n");
    for g in &d.guardrails {
        let _ = writeln!(h, "{}", guardrail_row(g));
    }
    h.push_str("</table>\n</section>\n");

    h.push_str(&comparisons(d));

    h.push_str("<section>\n<h2>Charts</h2>\n<p class=\"legend\">");
    let _ = write!(
        h,
        "<span><i class=\"sw\" style=\"background:{CANARY_COLOUR}\"></i>canary {}</span><span><i class=\"sw\" style=\"background:{BASELINE_COLOUR};height:6px;opacity:.45\"></i>baseline {}</span><span><i class=\"sw\" style=\"background:{THRESHOLD_COLOUR}\"></i>threshold</span><span><i class=\"sw\" style=\"background:{THRESHOLD_COLOUR};opacity:.25;height:10px\"></i>breach: its <i>for</i> window, then triggered</span><span>dotted: checkpoints · solid: decision</span>",
        escape(&plan.arms.canary.name),
        escape(&plan.arms.baseline.name)
    );
    h.push_str("</p>\n");
    if clock.compressed() {
        let _ = writeln!(
            h,
            "<p class=\"note\">The time axis is the runbook's: T+60m is {} of wall time at {}×.</p>",
            Human(Duration::from_secs_f64(3600.0 / clock.scale)),
            fmt_value(clock.scale)
        );
    }
    for (series, guardrail) in r.facts.series.iter().zip(&plan.guardrails) {
        let unit = guardrail.unit.as_deref();
        let _ = write!(
            h,
            "<figure>\n<figcaption>{} — must {}{} ({})</figcaption>\n{}\n</figure>\n",
            escape(&series.guardrail),
            escape(&threshold_in(guardrail.must, unit)),
            if guardrail.for_.is_zero() {
                String::new()
            } else {
                format!(" for {}", clock.duration(guardrail.for_))
            },
            guardrail.on_breach.as_str(),
            chart(
                clock,
                r,
                series,
                &ChartSpec {
                    must: guardrail.must,
                    for_: guardrail.for_,
                    unit,
                }
            )
        );
    }
    h.push_str("</section>\n");

    h.push_str(&burst_section(ctx, r));
    h.push_str(&probe_section(clock, r));
    h.push_str(&timeline_section(clock, r));

    h.push_str("<section>\n<h2>Artifacts</h2>\n<table>\n<tr><th>file</th><th class=\"num\">bytes</th><th>SHA-256</th></tr>\n");
    for f in r.artifacts {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"hash\">{}</td></tr>",
            escape(&f.name),
            f.bytes,
            escape(&f.sha256)
        );
    }
    let _ = write!(
        h,
        "</table>\n<p>manifest.json lists these hashes (and this report's); manifest.sig is its Ed25519 signature by key <code>{}</code>. Check the bundle with <code>canary verify --key &lt;publisher&#39;s public key&gt;</code>: a key named inside a bundle proves nothing by itself.</p>\n</section>\n</body>\n</html>\n",
        escape(r.signer_fingerprint)
    );
    h
}

/// Whether a traffic change was read back, in runbook time.
fn verification(clock: Clock, v: &Verification) -> String {
    match v {
        Verification::Verified { at, observed } => {
            format!("verified {}: {observed}", clock.when(*at))
        }
        Verification::Failed { at, detail } => {
            format!("NOT VERIFIED {}: {detail}", clock.when(*at))
        }
        Verification::NotChecked { why } => format!("not verified: {why}"),
    }
}

/// The comparisons of the canary against the baseline and their score (DESIGN §14); nothing
/// without comparisons.
fn comparisons(d: &Decision) -> String {
    use canary_core::comparisons::describe;
    use canary_core::judge::ScoreVerdict;
    if d.comparisons.is_empty() {
        return String::new();
    }
    let mut h = String::from(
        "<section>\n<h2>Comparisons with the baseline</h2>\n<p>Each comparison's sequential test looks at every evaluation and stays valid however often it looks: a healthy canary fails it at most at its level α over the whole run. Typical look: the canary's reading over (or minus) the baseline's at the median look. Estimates: the share of looks with the canary beyond its allowance (with its confidence sequence), or the canary's rate over the baseline's.</p>\n<table>\n<tr><th>status</th><th>comparison</th><th>group</th><th>typical look</th><th>estimate</th><th>interval</th><th>evidence</th><th>samples</th><th>critical</th></tr>\n",
    );
    for j in &d.comparisons {
        let c = describe(j);
        let class = match c.mark {
            "✓" => "PASS",
            "✗" => "FAIL",
            _ => "other",
        };
        let _ = writeln!(
            h,
            "<tr><td class=\"{class}\">{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            c.status,
            escape(&escaped(&j.name)),
            escape(&escaped(&j.group)),
            escape(&c.typical),
            escape(&c.estimate),
            escape(&c.interval),
            escape(&c.evidence),
            escape(&c.samples),
            if j.critical { "yes" } else { "no" }
        );
    }
    h.push_str("</table>\n");
    if let Some(score) = &d.score {
        let verdict = match score.verdict {
            ScoreVerdict::Pass => "pass",
            ScoreVerdict::Marginal => "marginal",
            ScoreVerdict::Fail => "fail",
        };
        let _ = write!(
            h,
            "<p>Score <b>{}</b> ({verdict})",
            score
                .score
                .map_or_else(|| "none: nothing could be judged".to_owned(), fmt_value)
        );
        for g in &score.groups {
            let _ = write!(
                h,
                " · {} {} (weight {}, {} passed, {} failed, {} without data)",
                escape(&escaped(&g.group)),
                g.score.map_or_else(|| "-".to_owned(), fmt_value),
                fmt_value(g.weight),
                g.passed,
                g.failed,
                g.no_data
            );
        }
        h.push_str("</p>\n");
    }
    h.push_str("</section>\n");
    h
}

/// One row of the guardrail table: values with their unit, the `for` in the runbook's time, as
/// the engine's summary shows them everywhere else.
fn guardrail_row(g: &GuardrailSummary) -> String {
    let label = g.status.label();
    let class = match label {
        "PASS" | "FAIL" => label,
        _ => "other",
    };
    format!(
        "<tr><td class=\"{class}\">{label}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
        escape(&g.name),
        escape(&g.show(g.canary.as_ref())),
        escape(&g.show(g.baseline.as_ref())),
        escape(&g.must_text()),
        g.runbook_for(),
        g.on_breach.as_str(),
        g.evaluations,
        g.breaches
    )
}

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 240.0;
const LEFT: f64 = 72.0;
const RIGHT: f64 = 24.0;
const TOP: f64 = 26.0;
const BOTTOM: f64 = 30.0;

/// What a guardrail's chart needs from the plan.
struct ChartSpec<'a> {
    must: Threshold,
    for_: Duration,
    unit: Option<&'a str>,
}

/// A breach as the chart shows it: the first and last evaluation round whose canary value
/// failed the threshold, in a row.
#[derive(Debug, Clone, Copy, PartialEq)]
struct BreachSpan {
    from: Millis,
    to: Millis,
}

/// The runs of consecutive rounds whose canary value fails `must` (rounds without a value end
/// a run, as they end a breach in the engine).
fn breach_spans(series: &Series, must: Threshold) -> Vec<BreachSpan> {
    let mut spans = Vec::new();
    let mut current: Option<BreachSpan> = None;
    for p in &series.points {
        match p.canary {
            Some(v) if !must.passes(v) => {
                current = Some(match current {
                    Some(s) => BreachSpan {
                        from: s.from,
                        to: p.round,
                    },
                    None => BreachSpan {
                        from: p.round,
                        to: p.round,
                    },
                });
            }
            _ => spans.extend(current.take()),
        }
    }
    spans.extend(current);
    spans
}

/// Runbook-time ticks: a round step (`1m`, `5m`, `10m`, …) giving at most eight labels.
fn time_ticks(clock: Clock, start: Millis, end: Millis) -> Vec<Millis> {
    const STEPS_S: [f64; 16] = [
        1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0,
        21600.0, 86400.0,
    ];
    let span_s = (end - start) as f64 / 1000.0 * clock.scale;
    let step_s = STEPS_S
        .iter()
        .copied()
        .find(|s| span_s / s <= 8.0)
        .unwrap_or(span_s.max(1.0));
    let step_ms = step_s * 1000.0 / clock.scale;
    let mut ticks = Vec::new();
    let mut k = 0.0;
    while ticks.len() < 64 {
        let t = start + (k * step_ms).round() as i64;
        if t > end {
            break;
        }
        ticks.push(t);
        k += 1.0;
    }
    ticks
}

/// One guardrail's chart as inline SVG.
fn chart(clock: Clock, r: &ReportInput<'_>, series: &Series, spec: &ChartSpec<'_>) -> String {
    let must = spec.must;
    let start = clock.start;
    let window_end = start + r.facts.plan.window().as_millis() as i64;
    let last_point = series.points.last().map_or(start, |p| p.round);
    let end = window_end.max(r.decision.at).max(last_point).max(start + 1);

    let mut lo = must.value;
    let mut hi = must.value;
    for p in &series.points {
        for v in [p.canary, p.baseline].into_iter().flatten() {
            lo = lo.min(v);
            hi = hi.max(v);
        }
    }
    if !lo.is_finite() || !hi.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    let nonnegative = lo >= 0.0;
    let (mut lo, hi) = if hi > lo {
        let pad = (hi - lo) * 0.08;
        (lo - pad, hi + pad)
    } else {
        let pad = lo.abs().max(1.0) * 0.5;
        (lo - pad, hi + pad)
    };
    // Counts, percentages and latencies never go below zero: neither does their axis.
    if nonnegative && lo < 0.0 {
        lo = 0.0;
    }
    // Round ticks: the axis widens to whole steps of 1, 2, 2.5 or 5 × 10ⁿ.
    let step = nice_step((hi - lo) / 4.0);
    let (lo, hi) = ((lo / step).floor() * step, (hi / step).ceil() * step);

    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let right = LEFT + plot_w;
    let bottom = TOP + plot_h;
    let x = |t: Millis| LEFT + plot_w * ((t - start) as f64 / (end - start) as f64);
    let y = |v: f64| TOP + plot_h * (1.0 - (v - lo) / (hi - lo));

    let mut s = String::new();
    let _ = write!(
        s,
        "<svg viewBox=\"0 0 {WIDTH} {HEIGHT}\" width=\"100%\" role=\"img\" aria-label=\"{} canary and baseline over runbook time\">",
        escape(&series.guardrail)
    );
    let _ = write!(
        s,
        "<rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{plot_w}\" height=\"{plot_h}\" fill=\"#f6f8fa\" stroke=\"#d0d7de\"/>"
    );
    // Breaches: the `for` window while the breach counts, then the span it held past it.
    let round_ms = r.facts.plan.evaluation_interval.as_millis() as i64;
    for b in breach_spans(series, must) {
        let for_ms = spec.for_.as_millis() as i64;
        let counted_to = (b.from + for_ms).min(b.to + round_ms.max(1)).min(end);
        let (x0, x1) = (x(b.from), x(counted_to).max(x(b.from) + 2.0));
        let _ = write!(
            s,
            "<rect class=\"breach-for\" x=\"{x0:.1}\" y=\"{TOP}\" width=\"{:.1}\" height=\"{plot_h}\" fill=\"{THRESHOLD_COLOUR}\" fill-opacity=\"0.10\"><title>breach counting: its for window ({})</title></rect>",
            x1 - x0,
            clock.duration(spec.for_)
        );
        if b.to >= b.from + for_ms {
            let x2 = x(b.to.min(end)).max(x1 + 2.0);
            let _ = write!(
                s,
                "<rect class=\"breach-held\" x=\"{x1:.1}\" y=\"{TOP}\" width=\"{:.1}\" height=\"{plot_h}\" fill=\"{THRESHOLD_COLOUR}\" fill-opacity=\"0.22\"><title>breach held past its for window</title></rect>",
                x2 - x1
            );
        }
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" style=\"fill:{THRESHOLD_COLOUR}\">breach {}{}</text>",
            x0 + 3.0,
            bottom - 5.0,
            escape(&clock.offset(b.from)),
            if for_ms > 0 {
                format!(" · for {}", clock.duration(spec.for_))
            } else {
                String::new()
            }
        );
    }
    // Y ticks on round values; the unit once, above the axis.
    let mut v = lo;
    while v <= hi + step / 2.0 {
        let yy = y(v);
        let _ = write!(
            s,
            "<line x1=\"{LEFT}\" x2=\"{right:.1}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#eaeef2\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LEFT - 6.0,
            yy + 4.0,
            escape(&tick_value(v, step))
        );
        v += step;
    }
    if let Some(unit) = spec.unit.filter(|u| !u.is_empty()) {
        let _ = write!(
            s,
            "<text class=\"unit\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LEFT - 6.0,
            TOP - 8.0,
            escape(unit)
        );
    }
    // X ticks in runbook time.
    for t in time_ticks(clock, start, end) {
        let xx = x(t);
        let anchor = if xx > right - 20.0 { "end" } else { "middle" };
        let _ = write!(
            s,
            "<line x1=\"{xx:.1}\" x2=\"{xx:.1}\" y1=\"{bottom:.1}\" y2=\"{:.1}\" stroke=\"#8c959f\"/><text class=\"tick\" x=\"{xx:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\">{}</text>",
            bottom + 4.0,
            HEIGHT - 10.0,
            escape(&clock.offset(t))
        );
    }
    // Threshold.
    let ty = y(must.value);
    let _ = write!(
        s,
        "<line x1=\"{LEFT}\" x2=\"{right:.1}\" y1=\"{ty:.1}\" y2=\"{ty:.1}\" stroke=\"{THRESHOLD_COLOUR}\" stroke-dasharray=\"6 4\"/><text x=\"{:.1}\" y=\"{:.1}\" style=\"fill:{THRESHOLD_COLOUR}\">must {}</text>",
        LEFT + 4.0,
        if ty < TOP + 14.0 { ty + 12.0 } else { ty - 4.0 },
        escape(&threshold_in(must, spec.unit))
    );
    // Checkpoints.
    for c in &r.facts.checkpoints {
        let cx = x(c.round);
        let (tx, anchor) = if cx > right - 30.0 {
            (cx - 3.0, "end")
        } else {
            (cx + 3.0, "start")
        };
        let _ = write!(
            s,
            "<line x1=\"{cx:.1}\" x2=\"{cx:.1}\" y1=\"{TOP}\" y2=\"{bottom:.1}\" stroke=\"#8c959f\" stroke-dasharray=\"2 3\"/><text x=\"{tx:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\">{}</text>",
            TOP + 11.0,
            escape(&c.label)
        );
    }
    // Decision.
    let dx = x(r.decision.at);
    let colour = match r.decision.verdict {
        Verdict::Promote => "#1a7f37",
        _ => THRESHOLD_COLOUR,
    };
    let _ = write!(
        s,
        "<line x1=\"{dx:.1}\" x2=\"{dx:.1}\" y1=\"{TOP}\" y2=\"{bottom:.1}\" stroke=\"{colour}\" stroke-width=\"2\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" style=\"fill:{colour};font-weight:600\">{} {}</text>",
        dx - 3.0,
        TOP + 24.0,
        r.decision.verdict.name(),
        escape(&clock.offset(r.decision.at))
    );
    // Series: the baseline wide and pale underneath, the canary thin on top, so both stay
    // visible where they coincide. Polylines break at gaps; a dot per point.
    for (arm, colour, width, opacity, dot) in [
        ("baseline", BASELINE_COLOUR, 5.0, 0.45, 3.0),
        ("canary", CANARY_COLOUR, 1.8, 1.0, 2.2),
    ] {
        let value = |p: &crate::facts::Point| {
            if arm == "baseline" {
                p.baseline
            } else {
                p.canary
            }
        };
        let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
        for p in &series.points {
            match value(p) {
                Some(v) => runs.last_mut().map_or((), |r| r.push((x(p.round), y(v)))),
                None => {
                    if runs.last().is_some_and(|r| !r.is_empty()) {
                        runs.push(Vec::new());
                    }
                }
            }
        }
        let _ = write!(s, "<g class=\"series {arm}\" opacity=\"{opacity}\">");
        for run in runs.iter().filter(|r| !r.is_empty()) {
            if run.len() > 1 {
                let pts: Vec<String> = run.iter().map(|(a, b)| format!("{a:.1},{b:.1}")).collect();
                let _ = write!(
                    s,
                    "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"{width}\" stroke-linejoin=\"round\" stroke-linecap=\"round\" points=\"{}\"/>",
                    pts.join(" ")
                );
            }
            // Dots only where there are few enough points to tell apart.
            if series.points.len() <= 150 || run.len() == 1 {
                for (a, b) in run {
                    let _ = write!(
                        s,
                        "<circle cx=\"{a:.1}\" cy=\"{b:.1}\" r=\"{dot}\" fill=\"{colour}\"/>"
                    );
                }
            }
        }
        s.push_str("</g>");
    }
    // The legend, inside the chart so a screenshot of one chart still says which line is which.
    let _ = write!(
        s,
        "<g class=\"legend\"><line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"11\" y2=\"11\" stroke=\"{CANARY_COLOUR}\" stroke-width=\"2\"/><text x=\"{:.1}\" y=\"15\">canary {}</text><line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"11\" y2=\"11\" stroke=\"{BASELINE_COLOUR}\" stroke-width=\"5\" opacity=\"0.45\"/><text x=\"{:.1}\" y=\"15\">baseline {}</text><line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"11\" y2=\"11\" stroke=\"{THRESHOLD_COLOUR}\" stroke-dasharray=\"6 4\"/><text x=\"{:.1}\" y=\"15\">threshold</text></g>",
        LEFT + 18.0,
        LEFT + 22.0,
        escape(&r.facts.plan.arms.canary.name),
        LEFT + 200.0,
        LEFT + 218.0,
        LEFT + 222.0,
        escape(&r.facts.plan.arms.baseline.name),
        LEFT + 400.0,
        LEFT + 418.0,
        LEFT + 422.0,
    );
    if series
        .points
        .iter()
        .all(|p| p.canary.is_none() && p.baseline.is_none())
    {
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">no data</text>",
            LEFT + plot_w / 2.0,
            TOP + plot_h / 2.0
        );
    }
    s.push_str("</svg>");
    s
}

/// The burst: its line, then per arm its requests, errors and latency percentiles, and the
/// latency distributions as cumulative curves.
fn burst_section(ctx: &RunContext, r: &ReportInput<'_>) -> String {
    let mut h = String::from("<section>\n<h2>Load burst</h2>\n");
    let _ = writeln!(h, "<p>{}</p>", escape(&burst_line(ctx, &r.facts.burst)));
    let Some(burst) = &r.detail.burst else {
        h.push_str("<p class=\"note\">No request of the burst is recorded in its transcript: there is no per-arm latency to show.</p>\n</section>\n");
        return h;
    };
    let plan = &r.facts.plan;
    let arm_label = |arm: &str| match arm {
        "canary" => format!("canary {}", plan.arms.canary.name),
        "baseline" => format!("baseline {}", plan.arms.baseline.name),
        other => format!("{other} (no arm header)"),
    };
    h.push_str("<p class=\"note\">Per arm, from the burst transcript's request lines (latencies as it rounds them). Errors: requests the burst counted as failed.</p>\n");
    h.push_str("<table class=\"burst\">\n<tr><th>arm</th><th class=\"num\">requests</th><th class=\"num\">errors</th><th>measure</th><th class=\"num\">p50</th><th class=\"num\">p90</th><th class=\"num\">p95</th><th class=\"num\">p99</th><th class=\"num\">max</th></tr>\n");
    for a in &burst.arms {
        let mut first = true;
        for (measure, values) in [("latency", &a.latency_ms), ("TTFV", &a.ttfv_ms)] {
            let cell = |q: f64| {
                quantile(values, q).map_or_else(|| "-".to_owned(), |v| fmt_in(v, Some("ms")))
            };
            let lead = if first {
                format!(
                    "<td rowspan=\"2\">{}</td><td class=\"num\" rowspan=\"2\">{}</td><td class=\"num\" rowspan=\"2\">{}</td>",
                    escape(&arm_label(&a.arm)),
                    a.requests,
                    a.errors
                )
            } else {
                String::new()
            };
            first = false;
            let _ = writeln!(
                h,
                "<tr class=\"arm-{}\">{lead}<td>{measure}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                escape(&a.arm),
                escape(&cell(0.5)),
                escape(&cell(0.9)),
                escape(&cell(0.95)),
                escape(&cell(0.99)),
                escape(&cell(1.0)),
            );
        }
    }
    h.push_str("</table>\n");
    let _ = writeln!(
        h,
        "<figure>\n<figcaption>Latency and time to first value per arm, cumulative: the share of requests at or under each time</figcaption>\n{}\n</figure>",
        cdf_chart(burst, &arm_label)
    );
    h.push_str("</section>\n");
    h
}

const CDF_W: f64 = 900.0;
const CDF_H: f64 = 250.0;

/// Which of an arm's measures a panel shows.
type Measure = fn(&ArmRequests) -> &Vec<f64>;

/// Two panels (latency, TTFV), each arm's empirical CDF as a step line.
fn cdf_chart(burst: &BurstDetail, arm_label: &dyn Fn(&str) -> String) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg viewBox=\"0 0 {CDF_W} {CDF_H}\" width=\"100%\" role=\"img\" aria-label=\"burst latency distribution per arm\">"
    );
    let panel_w = (CDF_W - 40.0) / 2.0;
    let panels: [(&str, Measure); 2] = [("latency", |a| &a.latency_ms), ("TTFV", |a| &a.ttfv_ms)];
    for (i, (measure, pick)) in panels.into_iter().enumerate() {
        let left = 56.0 + i as f64 * (panel_w + 40.0);
        let (top, w, hgt) = (30.0, panel_w - 56.0, CDF_H - 70.0);
        let widest = burst
            .arms
            .iter()
            .filter_map(|a| pick(a).last().copied())
            .fold(0.0_f64, f64::max);
        let step = nice_step(widest.max(0.001) * 1.02 / 4.0);
        let max = (widest.max(0.001) * 1.02 / step).ceil() * step;
        let x = |v: f64| left + w * (v / max);
        let y = |share: f64| top + hgt * (1.0 - share);
        let _ = write!(
            s,
            "<rect x=\"{left:.1}\" y=\"{top}\" width=\"{w:.1}\" height=\"{hgt:.1}\" fill=\"#f6f8fa\" stroke=\"#d0d7de\"/><text x=\"{left:.1}\" y=\"{:.1}\" style=\"font-weight:600\">{measure}</text>",
            top - 8.0
        );
        for k in 0..=4 {
            let share = f64::from(k) / 4.0;
            let yy = y(share);
            let _ = write!(
                s,
                "<line x1=\"{left:.1}\" x2=\"{:.1}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#eaeef2\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{} %</text>",
                left + w,
                left - 4.0,
                yy + 4.0,
                k * 25
            );
        }
        let mut v = 0.0;
        while v <= max + step / 2.0 {
            let _ = write!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"{}\">{} ms</text>",
                x(v),
                top + hgt + 16.0,
                if v + step > max + step / 2.0 {
                    "end"
                } else {
                    "middle"
                },
                escape(&tick_value(v, step))
            );
            v += step;
        }
        // p95 guide.
        let _ = write!(
            s,
            "<line x1=\"{left:.1}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#8c959f\" stroke-dasharray=\"2 3\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">p95</text>",
            left + w,
            y(0.95),
            y(0.95),
            left + w - 3.0,
            y(0.95) - 3.0
        );
        for (row, a) in burst.arms.iter().enumerate() {
            let values = pick(a);
            let colour = match a.arm.as_str() {
                "canary" => CANARY_COLOUR,
                "baseline" => BASELINE_COLOUR,
                _ => "#8c959f",
            };
            if !values.is_empty() {
                let n = values.len() as f64;
                let mut pts = vec![format!("{:.1},{:.1}", x(0.0), y(0.0))];
                for (j, v) in values.iter().enumerate() {
                    pts.push(format!("{:.1},{:.1}", x(*v), y(j as f64 / n)));
                    pts.push(format!("{:.1},{:.1}", x(*v), y((j + 1) as f64 / n)));
                }
                let width = if a.arm == "baseline" { 3.5 } else { 1.8 };
                let _ = write!(
                    s,
                    "<polyline class=\"cdf {}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"{width}\" stroke-opacity=\"{}\" points=\"{}\"/>",
                    escape(&a.arm),
                    if a.arm == "baseline" { 0.6 } else { 1.0 },
                    pts.join(" ")
                );
            }
            let ly = top + hgt + 34.0 + row as f64 * 0.0;
            let lx = left + row as f64 * (w / 3.0);
            let _ = write!(
                s,
                "<line x1=\"{lx:.1}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"{colour}\" stroke-width=\"3\"/><text x=\"{:.1}\" y=\"{ly:.1}\">{} (n={})</text>",
                lx + 16.0,
                ly - 4.0,
                ly - 4.0,
                lx + 20.0,
                escape(&arm_label(&a.arm)),
                values.len()
            );
        }
    }
    s.push_str("</svg>");
    s
}

/// The isolation probes: their line, the leaks, and the observer × owner matrix.
fn probe_section(clock: Clock, r: &ReportInput<'_>) -> String {
    let mut h = String::from("<section>\n<h2>Isolation probes</h2>\n");
    let _ = writeln!(h, "<p>{}</p>", escape(&probe_line(&r.facts.probes)));
    if !r.facts.probes.leaks.is_empty() {
        h.push_str("<ul>\n");
        for leak in &r.facts.probes.leaks {
            let _ = writeln!(
                h,
                "<li>{}: {} received {}'s data from the {} arm</li>",
                escape(&clock.when(leak.at)),
                escape(&escaped(&leak.observer)),
                escape(&escaped(&leak.owner)),
                leak.arm
            );
        }
        h.push_str("</ul>\n");
    }
    match &r.detail.probes {
        Some(m) if m.users.is_empty() => h.push_str(
            "<p class=\"note\">The probe report names no users: there is no user × user matrix to show.</p>\n",
        ),
        Some(m) => h.push_str(&probe_matrix(m)),
        None if r.facts.probes.planned => h.push_str(
            "<p class=\"note\">The probe report records no probe run: there is no user × user matrix to show.</p>\n",
        ),
        None => {}
    }
    h.push_str("</section>\n");
    h
}

/// Rows: the user who asked (observer); columns: the user whose data was asked for (owner).
fn probe_matrix(m: &ProbeMatrix) -> String {
    let mut h = String::new();
    let _ = writeln!(
        h,
        "<h3>Who could read whose data</h3>\n<p class=\"note\">Rows: the user who asked (observer); columns: the user whose marker was asked for (owner). Each cell: the probe runs that probed the pair{}, and the leaks — the owner's marker in an answer to the observer — per arm. On the diagonal, each user's self-check (its own marker found). {} probe run(s) reported{}.</p>",
        if m.per_pair_recorded {
            ", the probe requests and the arm that answered them"
        } else {
            " (this report does not record requests per pair or the arm answering them)"
        },
        m.runs,
        if m.failed_runs > 0 {
            format!(", {} failed before reporting", m.failed_runs)
        } else {
            String::new()
        }
    );
    h.push_str("<table class=\"matrix\">\n<tr><th>observer ↓ · owner →</th>");
    for owner in &m.users {
        let _ = write!(h, "<th>{}</th>", escape(&escaped(owner)));
    }
    h.push_str("</tr>\n");
    for observer in &m.users {
        let _ = write!(
            h,
            "<tr><th class=\"observer\">{}</th>",
            escape(&escaped(observer))
        );
        for owner in &m.users {
            if observer == owner {
                let (found, checked) = m.self_checks.get(observer).copied().unwrap_or((0, 0));
                let class = if found == checked && checked > 0 {
                    "self"
                } else {
                    "unproven"
                };
                let _ = write!(
                    h,
                    "<td class=\"{class}\">own marker found {found}/{checked}</td>"
                );
                continue;
            }
            let Some(cell) = m.cell(observer, owner) else {
                h.push_str("<td class=\"none\">not probed</td>");
                continue;
            };
            let leaks = cell.leak_total();
            let class = if leaks > 0 {
                "leak"
            } else if cell.failed > 0 || cell.runs == 0 {
                "unproven"
            } else {
                "clean"
            };
            let mut text = format!("{} run(s)", cell.runs);
            if m.per_pair_recorded {
                let _ = write!(text, " · {} probe(s)", cell.requests);
                if cell.failed > 0 {
                    let _ = write!(text, ", {} failed", cell.failed);
                }
                let arms: Vec<String> = cell
                    .answered_by
                    .iter()
                    .map(|(arm, n)| format!("{arm} {n}"))
                    .collect();
                if !arms.is_empty() {
                    let _ = write!(text, "<br>answered: {}", escape(&arms.join(", ")));
                }
            }
            if leaks == 0 {
                text.push_str("<br>0 leaks");
            } else {
                let per_arm: Vec<String> = cell
                    .leaks
                    .iter()
                    .map(|(arm, n)| format!("{n} on {arm}"))
                    .collect();
                let _ = write!(text, "<br>{leaks} LEAK(S): {}", escape(&per_arm.join(", ")));
            }
            let _ = write!(
                h,
                "<td class=\"{class}\" title=\"{} asked for {}&#39;s data\">{text}</td>",
                escape(&escaped(observer)),
                escape(&escaped(owner))
            );
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</table>\n");
    h
}

/// The severity class of a timeline entry: the engine's severity, except that a promotion and
/// a clean step read as good news.
fn severity_class(e: &TimelineEntry) -> &'static str {
    match e.severity {
        Severity::Info
            if e.kind == TimelineKind::Decision
                || (e.kind == TimelineKind::Traffic && e.text.ends_with("(promote)")) =>
        {
            "good"
        }
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Critical => "critical",
        Severity::Page => "page",
    }
}

/// The run's moments, in runbook time (the wall clock beside when compressed), coloured by
/// severity, ending with the traffic the run left behind.
fn timeline_section(clock: Clock, r: &ReportInput<'_>) -> String {
    let mut entries: Vec<TimelineEntry> = r.facts.timeline.clone();
    let (at, severity, text) = match &r.traffic.verification {
        Verification::Verified { at, observed } => (
            *at,
            Severity::Info,
            format!(
                "final traffic: {} {} %, verified on the load balancer: {observed}",
                r.facts.plan.arms.canary.name, r.traffic.canary_percent
            ),
        ),
        Verification::Failed { at, detail } => (
            *at,
            Severity::Critical,
            format!(
                "final traffic: {} {} % NOT VERIFIED: {detail}",
                r.facts.plan.arms.canary.name, r.traffic.canary_percent
            ),
        ),
        Verification::NotChecked { why } => (
            r.decision.at,
            Severity::Warning,
            format!(
                "final traffic: {} {} %, not verified: {why}",
                r.facts.plan.arms.canary.name, r.traffic.canary_percent
            ),
        ),
    };
    entries.push(TimelineEntry {
        at: at.max(r.decision.at),
        kind: TimelineKind::Traffic,
        severity,
        text,
    });

    let mut h = String::from("<section>\n<h2>Timeline</h2>\n<table class=\"timeline\">\n<tr>");
    h.push_str("<th>runbook time</th>");
    if clock.compressed() {
        h.push_str("<th>wall clock</th>");
    }
    h.push_str("<th>severity</th><th>what</th><th>event</th></tr>\n");
    for e in &entries {
        let class = severity_class(e);
        let _ = write!(
            h,
            "<tr class=\"sev-{class}\"><td class=\"when\">{}</td>",
            escape(&clock.offset(e.at))
        );
        if clock.compressed() {
            let _ = write!(
                h,
                "<td class=\"when\">{} <span class=\"note\">({})</span></td>",
                escape(&wall_clock(e.at)),
                escape(&stamp::offset(clock.start, e.at))
            );
        }
        let _ = writeln!(
            h,
            "<td><span class=\"sev {class}\">{}</span></td><td>{}</td><td>{}</td></tr>",
            match class {
                "good" => "ok",
                other => other,
            },
            e.kind.as_str(),
            escape(&e.text)
        );
    }
    h.push_str("</table>\n</section>\n");
    h
}

/// `14:00:15Z`: the time of day of `at`, UTC (the header gives the date).
fn wall_clock(at: Millis) -> String {
    let full = stamp::rfc3339(at);
    match full.split_once('T') {
        Some((_, time)) => time.to_owned(),
        None => full,
    }
}

/// A round step near `raw`: 1, 2, 2.5 or 5 × 10ⁿ (1 for anything not positive and finite).
fn nice_step(raw: f64) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let magnitude = 10f64.powf(raw.log10().floor());
    let fraction = raw / magnitude;
    let nice = [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .find(|n| fraction <= *n + 1e-9)
        .unwrap_or(10.0);
    nice * magnitude
}

/// A tick label with as many decimals as its step needs.
fn tick_value(v: f64, step: f64) -> String {
    let decimals = (0..9)
        .find(|d| {
            let scaled = step * 10f64.powi(*d);
            (scaled - scaled.round()).abs() < 1e-6 * scaled.max(1.0)
        })
        .unwrap_or(9) as usize;
    let rounded = format!("{v:.decimals$}");
    fmt_value(rounded.parse().unwrap_or(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::Point;

    #[test]
    fn escapes_everything_that_could_open_markup() {
        assert_eq!(
            escape(r#"<script>alert("x") & 'y'</script>"#),
            "&lt;script&gt;alert(&quot;x&quot;) &amp; &#39;y&#39;&lt;/script&gt;"
        );
    }

    #[test]
    fn breaches_are_runs_of_failing_rounds() {
        let point = |round, canary| Point {
            round,
            canary,
            baseline: Some(1.0),
        };
        let series = Series {
            guardrail: "g".into(),
            points: vec![
                point(0, Some(1.0)),
                point(10, Some(9.0)),
                point(20, Some(9.5)),
                point(30, None),
                point(40, Some(9.0)),
                point(50, Some(1.0)),
                point(60, Some(7.0)),
            ],
        };
        let must: Threshold = "< 5".parse().unwrap();
        assert_eq!(
            breach_spans(&series, must),
            [
                BreachSpan { from: 10, to: 20 },
                BreachSpan { from: 40, to: 40 },
                BreachSpan { from: 60, to: 60 },
            ]
        );
    }

    #[test]
    fn value_ticks_are_round() {
        let cases = [
            (0.125, 0.2),
            (395.0, 500.0),
            (21.5, 25.0),
            (1.0, 1.0),
            (0.0, 1.0),
        ];
        for (raw, step) in cases {
            assert!(
                (nice_step(raw) - step).abs() < 1e-12,
                "{raw}: {}",
                nice_step(raw)
            );
        }
        assert_eq!(tick_value(0.75, 0.25), "0.75");
        assert_eq!(tick_value(1500.0, 500.0), "1500");
        assert_eq!(tick_value(0.6000000001, 0.2), "0.6");
    }

    #[test]
    fn time_ticks_fall_on_round_runbook_minutes() {
        // 60 runbook minutes compressed 60×: one wall minute, a tick every 10 runbook minutes.
        let clock = Clock {
            start: 0,
            scale: 60.0,
        };
        let labels: Vec<String> = time_ticks(clock, 0, 60_000)
            .into_iter()
            .map(|t| clock.offset(t))
            .collect();
        assert_eq!(
            labels,
            ["T+0s", "T+10m", "T+20m", "T+30m", "T+40m", "T+50m", "T+60m"]
        );
        let real = Clock {
            start: 0,
            scale: 1.0,
        };
        assert_eq!(time_ticks(real, 0, 3_600_000).len(), 7);
    }
}
