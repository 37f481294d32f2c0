//! `report.html`: one self-contained page for people — the decision and its reasons on top,
//! every guardrail's table row, one chart per guardrail (canary vs baseline over time, the
//! threshold line, the checkpoints and the decision), burst and probe results, and the artifact
//! list with hashes.
//!
//! Inline CSS and inline SVG only: no script, no external fetch, so the page renders the same
//! from a git checkout years later. Every piece of text from the run is HTML-escaped.

use std::fmt::Write as _;

use canary_core::engine::GuardrailSummary;
use canary_core::escape::escaped;
use canary_core::plan::Threshold;
use canary_core::verdict::fmt_value;
use canary_core::{Decision, Millis, Verdict};

use crate::facts::{RunFacts, Series};
use crate::manifest::FileEntry;
use crate::render::RunContext;
use crate::render::decision::{burst_line, probe_line};
use crate::render::traffic::FinalTraffic;
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
h2{border-bottom:1px solid #d0d7de;padding-bottom:4px;margin-top:28px}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:3px 8px;border-bottom:1px solid #eaeef2;vertical-align:top}
td.num{text-align:right;font-variant-numeric:tabular-nums}code,.hash{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px;word-break:break-all}
.PASS{color:#1a7f37;font-weight:600}.FAIL{color:#cf222e;font-weight:600}.other{color:#9a6700;font-weight:600}
figure{margin:16px 0}figcaption{font-weight:600;margin-bottom:4px}
svg text{font:11px system-ui,sans-serif;fill:#57606a}
.legend span{display:inline-block;margin-right:16px}.sw{display:inline-block;width:18px;height:3px;vertical-align:middle;margin-right:4px}";

const CANARY_COLOUR: &str = "#d9480f";
const BASELINE_COLOUR: &str = "#1c7ed6";
const THRESHOLD_COLOUR: &str = "#cf222e";

/// Renders the report.
pub fn report_html(ctx: &RunContext, r: &ReportInput<'_>) -> String {
    let plan = &r.facts.plan;
    let d = r.decision;
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
        "<header class=\"verdict {class}\">\n<h1>{}</h1>\n<p>{}: canary <b>{}</b> vs baseline <b>{}</b> · run <code>{}</code></p>\n<p>started {} · decided {} · authorised by {}</p>\n</header>\n",
        d.verdict.name(),
        escape(&plan.service),
        escape(&plan.arms.canary.name),
        escape(&plan.arms.baseline.name),
        escape(&ctx.run_id),
        escape(&stamp::rfc3339(ctx.started)),
        escape(&ctx.when(d.at)),
        escape(&escaped(&d.authorised_by)),
    );

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
        escape(&r.traffic.verification.describe(ctx))
    );
    if let Some(why) = r.cooldown_override {
        let _ = writeln!(h, "<p>Cooldown overridden: {}</p>", escape(&escaped(why)));
    }
    h.push_str("</section>\n");

    h.push_str("<section>\n<h2>Guardrails</h2>\n<table>\n<tr><th>status</th><th>guardrail</th><th>canary</th><th>baseline</th><th>must</th><th>for</th><th>on breach</th><th>evaluations</th><th>breaches</th></tr>\n");
    for g in &d.guardrails {
        let _ = writeln!(h, "{}", guardrail_row(g));
    }
    h.push_str("</table>\n</section>\n");

    h.push_str(&comparisons(d));

    h.push_str("<section>\n<h2>Charts</h2>\n<p class=\"legend\">");
    let _ = write!(
        h,
        "<span><i class=\"sw\" style=\"background:{CANARY_COLOUR}\"></i>canary</span><span><i class=\"sw\" style=\"background:{BASELINE_COLOUR}\"></i>baseline</span><span><i class=\"sw\" style=\"background:{THRESHOLD_COLOUR}\"></i>threshold</span><span>dotted: checkpoints · solid: decision</span>"
    );
    h.push_str("</p>\n");
    for (series, guardrail) in r.facts.series.iter().zip(&plan.guardrails) {
        let _ = write!(
            h,
            "<figure>\n<figcaption>{} — must {}{} ({})</figcaption>\n{}\n</figure>\n",
            escape(&series.guardrail),
            escape(&guardrail.must.to_string()),
            if guardrail.for_.is_zero() {
                String::new()
            } else {
                format!(" for {}", canary_core::duration::Human(guardrail.for_))
            },
            guardrail.on_breach.as_str(),
            chart(ctx, r, series, guardrail.must)
        );
    }
    h.push_str("</section>\n");

    h.push_str("<section>\n<h2>Load burst and isolation probes</h2>\n");
    let _ = writeln!(
        h,
        "<p>Burst: {}</p>\n<p>Probes: {}</p>",
        escape(&burst_line(ctx, &r.facts.burst)),
        escape(&probe_line(&r.facts.probes))
    );
    if !r.facts.probes.leaks.is_empty() {
        h.push_str("<ul>\n");
        for leak in &r.facts.probes.leaks {
            let _ = writeln!(
                h,
                "<li>{}: {} received {}'s data from the {} arm</li>",
                escape(&ctx.when(leak.at)),
                escape(&leak.observer),
                escape(&leak.owner),
                leak.arm
            );
        }
        h.push_str("</ul>\n");
    }
    h.push_str("</section>\n");

    h.push_str("<section>\n<h2>Artifacts</h2>\n<table>\n<tr><th>file</th><th>bytes</th><th>SHA-256</th></tr>\n");
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

fn guardrail_row(g: &GuardrailSummary) -> String {
    let label = g.status.label();
    let class = match label {
        "PASS" | "FAIL" => label,
        _ => "other",
    };
    let show = |r: &Option<canary_core::Reading>| {
        r.as_ref()
            .map_or_else(|| "-".to_owned(), ToString::to_string)
    };
    format!(
        "<tr><td class=\"{class}\">{label}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
        escape(&g.name),
        escape(&show(&g.canary)),
        escape(&show(&g.baseline)),
        escape(&g.must.to_string()),
        canary_core::duration::Human(g.for_),
        g.on_breach.as_str(),
        g.evaluations,
        g.breaches
    )
}

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 18.0;
const BOTTOM: f64 = 30.0;

/// One guardrail's chart as inline SVG.
fn chart(ctx: &RunContext, r: &ReportInput<'_>, series: &Series, must: Threshold) -> String {
    let start = ctx.started;
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

    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |t: Millis| LEFT + plot_w * ((t - start) as f64 / (end - start) as f64);
    let y = |v: f64| TOP + plot_h * (1.0 - (v - lo) / (hi - lo));

    let mut s = String::new();
    let _ = write!(
        s,
        "<svg viewBox=\"0 0 {WIDTH} {HEIGHT}\" width=\"100%\" role=\"img\" aria-label=\"{} canary and baseline over time\">",
        escape(&series.guardrail)
    );
    let _ = write!(
        s,
        "<rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{plot_w}\" height=\"{plot_h}\" fill=\"#f6f8fa\" stroke=\"#d0d7de\"/>"
    );
    // Y ticks.
    for i in 0..=4 {
        let v = lo + (hi - lo) * f64::from(i) / 4.0;
        let yy = y(v);
        let _ = write!(
            s,
            "<line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#eaeef2\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LEFT + plot_w,
            LEFT - 6.0,
            yy + 4.0,
            escape(&tick_value(v, hi - lo))
        );
    }
    // X ticks: six, as offsets; the last one ends at the plot's edge.
    for i in 0..=5 {
        let t = start + (end - start) * i / 5;
        let anchor = if i == 5 { "end" } else { "middle" };
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\">{}</text>",
            x(t),
            HEIGHT - 10.0,
            stamp::offset(start, t)
        );
    }
    // Threshold.
    let ty = y(must.value);
    let _ = write!(
        s,
        "<line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{ty:.1}\" y2=\"{ty:.1}\" stroke=\"{THRESHOLD_COLOUR}\" stroke-dasharray=\"6 4\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" style=\"fill:{THRESHOLD_COLOUR}\">must {}</text>",
        LEFT + plot_w,
        LEFT + plot_w - 4.0,
        ty - 4.0,
        escape(&must.to_string())
    );
    // Checkpoints.
    for c in &r.facts.checkpoints {
        let cx = x(c.round);
        let _ = write!(
            s,
            "<line x1=\"{cx:.1}\" x2=\"{cx:.1}\" y1=\"{TOP}\" y2=\"{:.1}\" stroke=\"#8c959f\" stroke-dasharray=\"2 3\"/><text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            TOP + plot_h,
            cx + 3.0,
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
        "<line x1=\"{dx:.1}\" x2=\"{dx:.1}\" y1=\"{TOP}\" y2=\"{:.1}\" stroke=\"{colour}\" stroke-width=\"2\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" style=\"fill:{colour};font-weight:600\">{}</text>",
        TOP + plot_h,
        dx - 3.0,
        TOP + 24.0,
        r.decision.verdict.name()
    );
    // Series: polylines broken at gaps, plus a dot per point.
    for (pick, colour) in [(0usize, BASELINE_COLOUR), (1usize, CANARY_COLOUR)] {
        let value = |p: &crate::facts::Point| if pick == 0 { p.baseline } else { p.canary };
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
        for run in runs.iter().filter(|r| !r.is_empty()) {
            if run.len() > 1 {
                let pts: Vec<String> = run.iter().map(|(a, b)| format!("{a:.1},{b:.1}")).collect();
                let _ = write!(
                    s,
                    "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.8\" points=\"{}\"/>",
                    pts.join(" ")
                );
            }
            for (a, b) in run {
                let _ = write!(
                    s,
                    "<circle cx=\"{a:.1}\" cy=\"{b:.1}\" r=\"2.2\" fill=\"{colour}\"/>"
                );
            }
        }
    }
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

/// A tick label with about three significant digits for the axis span.
fn tick_value(v: f64, span: f64) -> String {
    let decimals = if span >= 100.0 {
        0
    } else if span >= 1.0 {
        2
    } else {
        4
    };
    let rounded = format!("{v:.decimals$}");
    fmt_value(rounded.parse().unwrap_or(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_everything_that_could_open_markup() {
        assert_eq!(
            escape(r#"<script>alert("x") & 'y'</script>"#),
            "&lt;script&gt;alert(&quot;x&quot;) &amp; &#39;y&#39;&lt;/script&gt;"
        );
    }
}
