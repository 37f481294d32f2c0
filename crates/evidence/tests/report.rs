//! `report.html` as a sealed bundle holds it: both arms in every guardrail chart with the
//! breach and its `for` window, runbook time on a compressed clock, the burst's latency per
//! arm, the probes' user × user matrix, the timeline — and markup that closes what it opens.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use canary_core::engine::Reading;
use canary_core::{ArmRole, Event};
use canary_evidence::facts::{BurstDetail, ProbeMatrix, quantile};
use canary_evidence::verify;
use common::*;
use serde_json::json;

/// The HTML's elements nest and close: every opened tag is closed in order (void elements and
/// self-closed SVG elements excepted). Returns the number of elements seen.
fn check_well_formed(html: &str) -> usize {
    const VOID: [&str; 4] = ["meta", "br", "hr", "img"];
    let mut stack: Vec<String> = Vec::new();
    let mut elements = 0;
    let mut rest = html;
    while let Some(open) = rest.find('<') {
        rest = &rest[open + 1..];
        let close = rest.find('>').expect("a tag is closed by >");
        let tag = &rest[..close];
        rest = &rest[close + 1..];
        assert!(!tag.contains('<'), "a tag holds '<': {tag:?}");
        if tag.starts_with('!') {
            continue;
        }
        let self_closed = tag.ends_with('/');
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        assert!(!name.is_empty(), "a tag without a name: {tag:?}");
        if let Some(closing) = tag.strip_prefix('/') {
            let closing = closing.trim();
            let top = stack
                .pop()
                .unwrap_or_else(|| panic!("</{closing}> closes nothing"));
            assert_eq!(top, closing, "</{closing}> closes <{top}>");
        } else {
            elements += 1;
            if !self_closed && !VOID.contains(&name.as_str()) {
                stack.push(name);
            }
        }
    }
    assert!(stack.is_empty(), "never closed: {stack:?}");
    elements
}

fn report(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("report.html")).unwrap()
}

/// Lines as `canary-load` writes its burst transcript.
fn transcript() -> String {
    let mut t = String::from(
        "# canary load burst 2025-10-19T14:05:00Z: 5 users × 4 requests, closed loop, 100ms pause, target lb, expecting 200\n",
    );
    // Canary: 10 requests 110..=200 ms, one failed; baseline: 10 requests 10.5..=19.5 ms.
    for i in 0..10 {
        let mark = if i == 9 { '✗' } else { '✓' };
        let status = if i == 9 { "503" } else { "200" };
        t.push_str(&format!(
            "{mark} user_{}_q{}: {status} ({}ms) ttfv {}ms arm canary events 25 done{}\n",
            i % 5 + 1,
            i / 5 + 1,
            110 + 10 * i,
            100 + 10 * i,
            if i == 9 {
                " error unexpected-status"
            } else {
                ""
            }
        ));
        t.push_str(&format!(
            "✓ user_{}_q{}: 200 ({:.1}ms) ttfv {:.1}ms arm baseline events 25 done\n",
            i % 5 + 1,
            i / 5 + 3,
            10.5 + f64::from(i),
            9.5 + f64::from(i)
        ));
    }
    t.push_str("# total: 20 queries, 19 successful, 1 failed\n");
    t
}

const USERS: [&str; 3] = ["user_1", "user_2", "user_3"];

/// A probe report as the controller writes it: one run, per-pair results, user_2 seeing
/// user_3's marker on the canary.
fn probe_report() -> serde_json::Value {
    let mut pairs = Vec::new();
    for observer in USERS {
        for owner in USERS.iter().filter(|o| **o != observer) {
            pairs.push(json!({
                "observer": observer, "owner": owner, "requests": 13, "failed": 0,
                "answered_by": {"canary": 13},
                "leaks": u64::from(observer == "user_2" && *owner == "user_3") * 2,
            }));
        }
    }
    json!({"runs": [{
        "verdict": "leaked", "pairs": 6, "requests": 81, "failed": {},
        "answered_by": {"canary": 81},
        "self_checks": USERS.iter().map(|u| json!({"user": u, "found": true, "arm": "canary", "status": 200})).collect::<Vec<_>>(),
        "leaks": [
            {"observer": "user_2", "owner": "user_3", "asked_about": "user_3", "request": "query=marker top_k=24 accept=event-stream", "request_carried_marker": true, "arm": "canary", "status": 200},
            {"observer": "user_2", "owner": "user_3", "asked_about": "user_3", "request": "query=owner-phrase top_k=24 accept=json", "request_carried_marker": false, "arm": "canary", "status": 200},
        ],
        "pair_results": pairs,
    }]})
}

#[test]
fn charts_show_both_arms_the_breach_and_runbook_time_on_a_compressed_clock() {
    // The runbook compressed 60×, as in the demo: TTFV drifts over its threshold at 24
    // runbook minutes (0.4 wall minutes) and holds past its 5-minute `for` window.
    let scenario = Scenario::healthy()
        .plan(plan().compressed(60.0))
        .canary(|g, m| (g == "ttfv_p95" && m >= 0.4).then(|| Reading::value(1800.0)));
    let tmp = tempfile::tempdir().unwrap();
    let (dir, sealed) = run_and_seal(tmp.path(), scenario, &fixed_signer());
    verify(&dir, Some(&fixed_signer().public_hex())).unwrap();
    assert_eq!(sealed.verdict.name(), "ROLLBACK");
    let html = report(&dir);
    check_well_formed(&html);

    // Every chart has both lines and a legend naming both arms.
    let charts = plan().guardrails.len();
    assert_eq!(html.matches("<g class=\"series baseline\"").count(), charts);
    assert_eq!(html.matches("<g class=\"series canary\"").count(), charts);
    assert_eq!(
        html.matches("<text x=\"94.0\" y=\"15\">canary main</text>")
            .count(),
        charts
    );
    assert_eq!(html.matches(">baseline r0.5-hotfix</text>").count(), charts);
    // Runbook time on the axis, not the wall clock's T+00:12.
    for label in ["T+10m", "T+20m", "T+30m"] {
        assert!(
            html.contains(&format!("text-anchor=\"middle\">{label}</text>")),
            "no {label} tick"
        );
    }
    assert!(!html.contains(">T+00:12<"), "a wall-time tick is left");
    assert!(html.contains("Runbook clock compressed 60×: the 1h window took 1m of wall time"));
    // The breach: its `for` window shaded, then the span it held, labelled in runbook time.
    assert_eq!(html.matches("class=\"breach-for\"").count(), 1, "{html}");
    assert_eq!(html.matches("class=\"breach-held\"").count(), 1);
    assert!(html.contains(">breach T+25m · for 5m</text>"), "{html}");
    // The guardrail table in runbook time: the `for` reads 5m, not 5s.
    assert!(html.contains("<td>ttfv_p95</td>"));
    assert!(
        html.contains("<td>&lt; 1500</td><td>5m</td><td>rollback</td>"),
        "{html}"
    );

    // The timeline: runbook time first, the wall clock beside, severity by colour.
    let timeline = &html[html.find("<h2>Timeline</h2>").unwrap()..];
    for (when, wall, class, text) in [
        (
            "T+0s",
            "14:00:00Z",
            "info",
            "canary of relay started: main against r0.5-hotfix, window 1h",
        ),
        (
            "T+0s",
            "14:00:00Z",
            "info",
            "traffic: main 5 % / r0.5-hotfix 95 % (step 1)",
        ),
        ("T+5m", "14:00:05Z", "info", "load burst started"),
        (
            "T+15m",
            "14:00:15Z",
            "info",
            "checkpoint T15: snapshot taken, 3 of 3 guardrail(s) passing",
        ),
        (
            "T+30m",
            "14:00:30Z",
            "critical",
            "decision: ROLLBACK (authorised by engine)",
        ),
        (
            "T+30m",
            "14:00:30Z",
            "critical",
            "traffic: main 0 % / r0.5-hotfix 100 % (rollback)",
        ),
    ] {
        let row = format!(
            "<tr class=\"sev-{class}\"><td class=\"when\">{when}</td><td class=\"when\">{wall} <span class=\"note\">"
        );
        assert!(
            timeline
                .lines()
                .any(|line| line.starts_with(&row) && line.contains(text)),
            "no timeline row {row}…{text}:\n{timeline}"
        );
    }
    assert!(
        timeline.contains("<td>breach</td>"),
        "the breach is in the timeline"
    );
    assert!(timeline.contains("final traffic: main 0 %, verified on the load balancer"));
}

#[test]
fn burst_latency_per_arm_and_the_probe_matrix_come_from_the_bundle() {
    let scenario = Scenario::healthy().event(
        12.0,
        Event::IsolationLeak {
            observer: "user_2".into(),
            owner: "user_3".into(),
            arm: ArmRole::Canary,
        },
    );
    let tmp = tempfile::tempdir().unwrap();
    let mut runner = Runner::start(tmp.path(), scenario);
    assert!(runner.run_until(200.0));
    let dir = runner.bundle.dir().to_path_buf();
    // The burst's transcript and the probe report as canary-load and the controller write them.
    let name = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|n| n.starts_with("canary_load_burst_"))
        .unwrap();
    std::fs::write(dir.join(&name), transcript()).unwrap();
    runner.bundle.write_probe_report(&probe_report()).unwrap();
    let sealed = runner.seal(&fixed_signer(), None);
    verify(&sealed.dir, Some(&fixed_signer().public_hex())).unwrap();
    let html = report(&sealed.dir);
    check_well_formed(&html);

    // Per arm: requests, errors, and p50/p90/p95/p99/max of latency and TTFV.
    assert!(
        html.contains("<td rowspan=\"2\">canary main</td><td class=\"num\" rowspan=\"2\">10</td><td class=\"num\" rowspan=\"2\">1</td><td>latency</td><td class=\"num\">150 ms</td><td class=\"num\">190 ms</td><td class=\"num\">200 ms</td><td class=\"num\">200 ms</td><td class=\"num\">200 ms</td>"),
        "{html}"
    );
    assert!(
        html.contains("<td rowspan=\"2\">baseline r0.5-hotfix</td><td class=\"num\" rowspan=\"2\">10</td><td class=\"num\" rowspan=\"2\">0</td><td>latency</td><td class=\"num\">14.5 ms</td><td class=\"num\">18.5 ms</td>"),
        "{html}"
    );
    // The distributions, one curve per arm in each panel.
    assert_eq!(html.matches("<polyline class=\"cdf canary\"").count(), 2);
    assert_eq!(html.matches("<polyline class=\"cdf baseline\"").count(), 2);

    // The matrix: rows observers, columns owners; the leak in red, clean pairs green, the
    // self-checks on the diagonal.
    let matrix = &html[html.find("<table class=\"matrix\">").unwrap()..];
    let matrix = &matrix[..matrix.find("</table>").unwrap()];
    assert!(matrix.contains(
        "<tr><th>observer ↓ · owner →</th><th>user_1</th><th>user_2</th><th>user_3</th></tr>"
    ));
    assert_eq!(
        matrix
            .matches("<td class=\"self\">own marker found 1/1</td>")
            .count(),
        3
    );
    assert_eq!(matrix.matches("<td class=\"clean\"").count(), 5);
    assert_eq!(matrix.matches("<td class=\"leak\"").count(), 1);
    let leak = &matrix[matrix.find("<td class=\"leak\"").unwrap()..];
    assert!(
        leak.starts_with("<td class=\"leak\" title=\"user_2 asked for user_3&#39;s data\">1 run(s) · 13 probe(s)<br>answered: canary 13<br>2 LEAK(S): 2 on canary</td>"),
        "{leak}"
    );
    // user_2's row: user_1 clean, self, user_3 leaked.
    let row = &matrix[matrix.find("<th class=\"observer\">user_2</th>").unwrap()..];
    let row = &row[..row.find("</tr>").unwrap()];
    let cells: Vec<&str> = row
        .split("<td class=\"")
        .skip(1)
        .map(|c| &c[..c.find('"').unwrap()])
        .collect();
    assert_eq!(cells, ["clean", "self", "leak"]);
    // And the leak is in the timeline, paging.
    assert!(
        html.contains(
            "isolation LEAK: user_2 received user_3&#39;s data from the canary arm (main)"
        )
    );
    assert!(html.contains("<tr class=\"sev-page\">"));
}

#[test]
fn transcripts_and_probe_reports_parse_as_the_load_crate_writes_them() {
    let burst = BurstDetail::parse(&transcript()).unwrap();
    let arms: Vec<(&str, u64, u64)> = burst
        .arms
        .iter()
        .map(|a| (a.arm.as_str(), a.requests, a.errors))
        .collect();
    assert_eq!(arms, [("canary", 10, 1), ("baseline", 10, 0)]);
    let canary = burst.arm("canary").unwrap();
    assert_eq!(quantile(&canary.latency_ms, 0.5), Some(150.0));
    assert_eq!(quantile(&canary.latency_ms, 0.9), Some(190.0));
    assert_eq!(quantile(&canary.latency_ms, 1.0), Some(200.0));
    assert_eq!(quantile(&canary.ttfv_ms, 0.99), Some(190.0));
    assert_eq!(quantile(&[], 0.5), None);
    // No request line: nothing to show.
    assert_eq!(
        BurstDetail::parse("# load burst not reached: rolled back\n"),
        None
    );
    // A request that never answered has no TTFV.
    let lost =
        BurstDetail::parse("✗ user_1_q1: no response (30000ms) ttfv - arm unknown error timeout\n")
            .unwrap();
    assert_eq!(lost.arms[0].arm, "unknown");
    assert_eq!(lost.arms[0].latency_ms, [30000.0]);
    assert!(lost.arms[0].ttfv_ms.is_empty());

    let m = ProbeMatrix::parse(&probe_report().to_string()).unwrap();
    assert_eq!(m.users, USERS);
    assert!(m.per_pair_recorded);
    assert_eq!(m.cell("user_2", "user_3").unwrap().leak_total(), 2);
    assert_eq!(m.cell("user_1", "user_2").unwrap().requests, 13);
    // A report written before per-pair results: every ordered pair of the run's users was
    // probed, the leaks come from the leak list.
    let mut old = probe_report();
    old["runs"][0]
        .as_object_mut()
        .unwrap()
        .remove("pair_results");
    old["runs"]
        .as_array_mut()
        .unwrap()
        .push(json!({"error": "connection refused"}));
    let m = ProbeMatrix::parse(&old.to_string()).unwrap();
    assert!(!m.per_pair_recorded);
    assert_eq!((m.runs, m.failed_runs), (1, 1));
    assert_eq!(m.pairs.len(), 6);
    assert_eq!(m.cell("user_2", "user_3").unwrap().leaks["canary"], 2);
    assert_eq!(m.cell("user_3", "user_2").unwrap().runs, 1);
    // The placeholder of probes that never ran.
    assert_eq!(
        ProbeMatrix::parse(
            r#"{"artifact":"CANARY_ISOLATION_PROBES","ran":false,"why":"x","runs":[]}"#
        ),
        None
    );
}

#[test]
fn run_text_in_the_matrix_and_timeline_is_escaped() {
    let scenario = Scenario::healthy().event(
        20.0,
        Event::Abort {
            by: "<img src=x onerror=alert(1)>".into(),
            reason: "</td></tr><script>".into(),
        },
    );
    let tmp = tempfile::tempdir().unwrap();
    let mut runner = Runner::start(tmp.path(), scenario);
    assert!(runner.run_until(200.0));
    let mut probes = probe_report();
    probes["runs"][0]["self_checks"][0]["user"] = json!("<b>eve</b>");
    runner.bundle.write_probe_report(&probes).unwrap();
    let sealed = runner.seal(&fixed_signer(), None);
    let html = report(&sealed.dir);
    check_well_formed(&html);
    assert!(!html.contains("<script"));
    assert!(!html.contains("<img"));
    assert!(!html.contains("<b>eve"));
    assert!(html.contains("&lt;b&gt;eve&lt;/b&gt;"));
    assert!(html.contains(
        "aborted by &lt;img src=x onerror=alert(1)&gt;: &lt;/td&gt;&lt;/tr&gt;&lt;script&gt;"
    ));
}
