//! Every rendered artifact, snapshot-tested byte for byte (insta). The runs behind them are real
//! engine runs on a virtual clock, so a change in the engine's output shows up here too.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use canary_core::engine::Reading;
use canary_core::journal;
use canary_core::{ArmRole, Event};
use canary_evidence::facts::{LoadDetail, RunFacts};
use canary_evidence::manifest::FileEntry;
use canary_evidence::render::alerts::{AlertRule, AlertmanagerAlerts, Alerts, alerts};
use canary_evidence::render::check_log::{check_lines, no_check_due};
use canary_evidence::render::dashboards::{Dashboards, GrafanaDashboard, dashboards};
use canary_evidence::render::decision::{DecisionRecord, decision_final, outcome_final};
use canary_evidence::render::load::{probes_not_run, summary_not_run, transcript_not_run};
use canary_evidence::render::snapshot::{NotReached, Snapshot, not_reached_json, snapshot_json};
use canary_evidence::render::traffic::lb_diff;
use canary_evidence::report::{ReportInput, report_html};
use canary_evidence::{FinalTraffic, RawQuery, RunContext, TrafficChange, Verification};
use common::*;

fn ctx() -> RunContext {
    RunContext {
        run_id: "relay-20251019T140000Z".into(),
        started: T0,
        time_scale: 1.0,
    }
}

/// Runs `scenario` (without sealing) and returns the facts its journal yields.
fn facts_of(scenario: Scenario) -> RunFacts {
    let tmp = tempfile::tempdir().unwrap();
    let mut runner = Runner::start(tmp.path(), scenario);
    assert!(runner.run_until(200.0));
    let text = std::fs::read_to_string(runner.bundle.dir().join("journal.jsonl")).unwrap();
    RunFacts::derive(&journal::parse(&text).unwrap()).unwrap()
}

fn ttfv_breach() -> Scenario {
    Scenario::healthy()
        .canary(|g, m| (g == "ttfv_p95" && m >= 20.0).then(|| Reading::value(2400.0)))
}

fn verified(canary: u8, at: i64) -> Verification {
    Verification::Verified {
        at,
        observed: format!("canary {canary} % / baseline {} %", 100 - canary),
    }
}

#[test]
fn lb_diff_artifact() {
    let describe = |w: u8| {
        format!(
            "backend relay\n  server main weight {w}\n  server r0.5-hotfix weight {}\n  option httpchk GET /healthz\n",
            100 - w
        )
    };
    let changes = [
        TrafficChange {
            provider: "haproxy".into(),
            from_percent: 0,
            to_percent: 5,
            why: "step 1".into(),
            before: describe(0),
            after: describe(5),
            applied_at: T0 + 120,
            verification: verified(5, T0 + 340),
        },
        TrafficChange {
            provider: "haproxy".into(),
            from_percent: 5,
            to_percent: 0,
            why: "rollback".into(),
            before: describe(5),
            after: describe(5),
            applied_at: at_min(25.0),
            verification: Verification::Failed {
                at: at_min(25.5),
                detail: "read back canary 5 % after 5 attempts (socket /run/haproxy.sock refused)"
                    .into(),
            },
        },
    ];
    insta::assert_snapshot!("lb_diff", lb_diff(&ctx(), &changes));
}

#[test]
fn dashboards_artifact_with_grafana_and_without() {
    let grafana = Dashboards::Grafana {
        grafana_url: "https://grafana.prod.internal".into(),
        dashboards: vec![GrafanaDashboard {
            uid: "canary-relay-20251019t140000z".into(),
            title: "canary relay main vs r0.5-hotfix".into(),
            url: "https://grafana.prod.internal/d/canary-relay-20251019t140000z/canary-relay"
                .into(),
            // The runbook's six dashboards, as the pushed dashboard's panels are titled.
            panels: vec![
                "TTFV Protection · ttfv_p95 < 1500".into(),
                "RLS Enforcement · rls_errors == 0, cross_tenant == 0".into(),
                "SSE Health · sse_success >= 99.6".into(),
                "ANN Performance · ann_p95 < 200".into(),
                "Reranker Status".into(),
                "Database Health · db_pool < 80".into(),
            ],
        }],
    };
    insta::assert_snapshot!("dashboards_grafana", dashboards(&ctx(), &grafana));
    let live = Dashboards::Live {
        url: "http://127.0.0.1:9464/".into(),
        why: "no [grafana] section in canary.toml".into(),
    };
    insta::assert_snapshot!("dashboards_live", dashboards(&ctx(), &live));
}

#[test]
fn alerts_artifact_with_alertmanager_and_without() {
    let am = Alerts::Alertmanager(AlertmanagerAlerts {
        alertmanager_url: "https://alertmanager.prod.internal".into(),
        rules_location: "/etc/prometheus/rules/canary-relay-20251019T140000Z.yml".into(),
        rules: vec![
            AlertRule {
                alert: "CanaryTtfvP95Breach".into(),
                id: Some("canary-relay/CanaryTtfvP95Breach".into()),
                guardrail: "ttfv_p95".into(),
                expr: r#"histogram_quantile(0.95, sum by (le) (rate(ttfv_ms_bucket{version="r1"}[5m]))) >= 1500"#.into(),
                for_: Duration::from_secs(300),
                severity: "critical".into(),
                action: "rollback".into(),
            },
            AlertRule {
                alert: "CanaryCrossTenant".into(),
                id: None,
                guardrail: "cross_tenant".into(),
                expr: r#"sum(increase(memory_cross_tenant_attempts_total{version="r1"}[1m])) != 0"#.into(),
                for_: Duration::ZERO,
                severity: "page".into(),
                action: "security-rollback".into(),
            },
        ],
        receiver: "canary-relay-20251019T140000Z".into(),
        route: r#"canary_run="relay-20251019T140000Z""#.into(),
    });
    insta::assert_snapshot!("alerts_alertmanager", alerts(&ctx(), &am));
    let engine = Alerts::Engine {
        why: "no [alertmanager] section in canary.toml".into(),
        guardrails: plan().guardrails,
    };
    insta::assert_snapshot!("alerts_engine", alerts(&ctx(), &engine));
}

#[test]
fn check_log_lines() {
    let facts = facts_of(ttfv_breach());
    let mut text = String::new();
    for c in &facts.checks {
        for line in check_lines(&ctx(), c.round, &c.guardrails, &c.comparisons) {
            text.push_str(&line);
            text.push('\n');
        }
    }
    text.push_str(&no_check_due(
        &ctx(),
        at_min(2.0),
        "rolled back at T+2m, before the first check at T+5m (ROLLBACK: aborted by alice: wrong build)",
    ));
    insta::assert_snapshot!("check_log", text);
}

#[test]
fn load_artifacts_when_the_burst_did_not_run() {
    let why = "not reached: rolled back at T+2m, before the burst was due at T+5m (ROLLBACK: aborted by alice: wrong build)";
    let probes_why = "not reached: rolled back at T+2m, before the first isolation probe run (ROLLBACK: aborted by alice: wrong build)";
    insta::assert_snapshot!(
        "load_not_run",
        format!(
            "{}\n---\n{}---\n{}",
            transcript_not_run(why),
            summary_not_run(&ctx(), why),
            probes_not_run(&ctx(), probes_why)
        )
    );
}

#[test]
fn snapshot_of_a_checkpoint_not_reached_names_the_decision_that_ended_the_run() {
    let facts = facts_of(Scenario::healthy().event(
        8.0,
        Event::Abort {
            by: "alice".into(),
            reason: "wrong build".into(),
        },
    ));
    assert!(facts.checkpoints.is_empty());
    let decision = facts.decision.unwrap();
    insta::assert_snapshot!(
        "snapshot_not_reached",
        not_reached_json(
            &ctx(),
            &NotReached {
                label: "T30",
                due: at_min(30.0),
                due_offset: "T+30m",
                why: "not reached: rolled back at T+8m, before T+30m (ROLLBACK: aborted by alice: wrong build)",
                decision: &decision,
                decided_offset: "T+8m",
            },
        )
    );
}

#[test]
fn snapshot_artifact_holds_summaries_and_raw_results_per_arm() {
    let facts = facts_of(Scenario::healthy());
    let checkpoint = &facts.checkpoints[0];
    assert_eq!(checkpoint.label, "T15");
    let mut raw = Vec::new();
    for g in &checkpoint.guardrails {
        for (arm, reading) in [
            (ArmRole::Canary, g.canary.clone().unwrap()),
            (ArmRole::Baseline, g.baseline.clone().unwrap()),
        ] {
            raw.push(RawQuery {
                guardrail: g.name.clone(),
                arm,
                query: format!("{}{{arm={arm}}}", g.name),
                response: prometheus_response(&reading, checkpoint.round),
            });
        }
    }
    raw.push(RawQuery {
        guardrail: "retired_guardrail".into(),
        arm: ArmRole::Canary,
        query: "up".into(),
        response: serde_json::json!({"error": "bad_data: parse error", "status": "error"}),
    });
    let text = snapshot_json(
        &ctx(),
        &Snapshot {
            label: &checkpoint.label,
            round: checkpoint.round,
            guardrails: &checkpoint.guardrails,
            comparisons: &checkpoint.comparisons,
            raw: &raw,
            note: None,
        },
    );
    let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(parsed["offset"], "15m");
    assert_eq!(
        parsed["guardrails"][0]["raw"]["canary"][0]["response"]["status"],
        "success"
    );
    insta::assert_snapshot!("snapshot_t15", text);
}

/// Two judgements as the engine gives them: a latency comparison failing, an error comparison
/// passing.
fn judgements() -> Vec<canary_core::judge::Judgement> {
    use canary_core::judge::{CountSequence, Counts, Direction, Effect, SignSequence};
    let comparison = |name: &str, critical: bool| canary_core::judge::Comparison {
        name: name.into(),
        group: "default".into(),
        direction: Direction::Increase,
        effect: Effect::Relative(0.1),
        critical,
        weight: 1.0,
        must_have_data: false,
    };
    let mut sign = SignSequence::new(Direction::Increase, Effect::Relative(0.1), 0.05).unwrap();
    for _ in 0..8 {
        sign.observe(900.0, 600.0).unwrap();
    }
    let mut counts =
        CountSequence::new(Direction::Increase, Effect::Relative(0.1), 0.05, 1.0).unwrap();
    counts
        .observe(Counts::new(1, 500.0), Counts::new(20, 9500.0))
        .unwrap();
    vec![
        sign.judgement(&comparison("ttfv_vs_baseline", true)),
        counts.judgement(&comparison("errors_vs_baseline", false)),
    ]
}

#[test]
fn checks_and_snapshots_show_each_comparison_with_its_raw_results() {
    let facts = facts_of(Scenario::healthy());
    let checkpoint = &facts.checkpoints[0];
    let comparisons = judgements();
    let lines = check_lines(
        &ctx(),
        checkpoint.round,
        &checkpoint.guardrails,
        &comparisons,
    );
    assert_eq!(lines.len(), checkpoint.guardrails.len() + 2);
    let last = &lines[lines.len() - 2..];
    assert!(
        last[0].contains("✗ ttfv_vs_baseline HIGH    100 % of looks above"),
        "{}",
        last[0]
    );
    assert!(
        last[0].ends_with("8 / 8 looks (comparison, critical)"),
        "{}",
        last[0]
    );
    assert!(
        last[1]
            .contains("✓ errors_vs_baseline PASS    ×0.95 [×0.0123, ×6.66]  e 0.588 (fails at 20)"),
        "{}",
        last[1]
    );
    assert!(
        last[1].ends_with("1 / 20 events (comparison)"),
        "{}",
        last[1]
    );

    let raw: Vec<RawQuery> = [ArmRole::Canary, ArmRole::Baseline]
        .map(|arm| RawQuery {
            guardrail: "ttfv_vs_baseline".into(),
            arm,
            query: format!("p95{{arm={arm}}}"),
            response: serde_json::json!({"status": "success"}),
        })
        .into();
    let text = snapshot_json(
        &ctx(),
        &Snapshot {
            label: &checkpoint.label,
            round: checkpoint.round,
            guardrails: &checkpoint.guardrails,
            comparisons: &comparisons,
            raw: &raw,
            note: None,
        },
    );
    let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ttfv = &parsed["comparisons"][0];
    assert_eq!(ttfv["name"], "ttfv_vs_baseline");
    assert_eq!(ttfv["status"], "HIGH");
    assert_eq!(ttfv["judgement"]["estimate_of"], "looks_above");
    assert_eq!(ttfv["raw"]["baseline"][0]["query"], "p95{arm=baseline}");
    assert!(ttfv["reads"].as_str().unwrap().contains("of looks above"));
    assert!(parsed.get("other_raw").is_none(), "{text}");
}

fn record_files<'a>(
    facts: &'a RunFacts,
    traffic: &'a FinalTraffic,
    signer: &'a (String, String),
    cooldown_override: Option<&'a str>,
) -> DecisionRecord<'a> {
    DecisionRecord {
        facts,
        decision: facts.decision.as_ref().unwrap(),
        traffic,
        config_sha256: CONFIG_SHA,
        signer_fingerprint: &signer.0,
        signer_public_key: &signer.1,
        cooldown_override,
    }
}

fn signer_ids() -> (String, String) {
    let s = fixed_signer();
    (s.fingerprint(), s.public_hex())
}

#[test]
fn decision_and_promotion_files_after_a_promote() {
    let facts = facts_of(Scenario::healthy());
    let traffic = FinalTraffic {
        canary_percent: 100,
        verification: verified(100, at_min(60.0) + 220),
    };
    let ids = signer_ids();
    let record = record_files(&facts, &traffic, &ids, None);
    insta::assert_snapshot!("decision_promote", decision_final(&ctx(), &record));
    insta::assert_snapshot!("promotion_final", outcome_final(&ctx(), &record));
}

#[test]
fn decision_and_rollback_files_after_a_rollback() {
    let facts = facts_of(ttfv_breach());
    let traffic = FinalTraffic {
        canary_percent: 0,
        verification: verified(0, at_min(25.0) + 220),
    };
    let ids = signer_ids();
    let record = record_files(
        &facts,
        &traffic,
        &ids,
        Some("hotfix for the RLS regression, approved by bob"),
    );
    insta::assert_snapshot!("decision_rollback", decision_final(&ctx(), &record));
    insta::assert_snapshot!("rollback_final", outcome_final(&ctx(), &record));
}

#[test]
fn rollback_file_after_an_inconclusive_verdict_and_an_unverified_rollback() {
    let facts = facts_of(
        Scenario::healthy().canary(|g, m| (g == "db_pool" && m >= 55.0).then_some(Reading::NoData)),
    );
    let traffic = FinalTraffic {
        canary_percent: 0,
        verification: Verification::Failed {
            at: at_min(61.0),
            detail: "the load balancer still reports canary 5 %".into(),
        },
    };
    let ids = signer_ids();
    let record = record_files(&facts, &traffic, &ids, None);
    insta::assert_snapshot!(
        "rollback_final_inconclusive",
        outcome_final(&ctx(), &record)
    );
}

#[test]
fn operator_text_cannot_forge_a_line_in_any_artifact() {
    // `canary abort --reason $'x\nverdict      PROMOTE\e[31m'`: stored as given in the journal,
    // shown escaped on one line everywhere a person reads it.
    let forged = "x\nverdict      PROMOTE\u{1b}[31m";
    let scenario = Scenario::healthy().event(
        20.0,
        Event::Abort {
            by: "mallory\nauthorised by: ops-lead".into(),
            reason: forged.into(),
        },
    );
    let tmp = tempfile::tempdir().unwrap();
    let mut runner = Runner::start(tmp.path(), scenario);
    assert!(runner.run_until(200.0));
    let journal = std::fs::read_to_string(runner.bundle.dir().join("journal.jsonl")).unwrap();
    assert!(
        journal.contains(r#"x\nverdict      PROMOTE\u001b[31m"#),
        "the journal keeps the text as given"
    );
    let facts = RunFacts::derive(&journal::parse(&journal).unwrap()).unwrap();
    let traffic = FinalTraffic {
        canary_percent: 0,
        verification: verified(0, at_min(20.0) + 220),
    };
    let ids = signer_ids();
    let record = record_files(&facts, &traffic, &ids, Some("urgent\nDECISION: PROMOTE"));
    let html = report_html(
        &ctx(),
        &ReportInput {
            facts: &facts,
            decision: facts.decision.as_ref().unwrap(),
            traffic: &traffic,
            artifacts: &[],
            signer_fingerprint: &ids.0,
            cooldown_override: Some("urgent\nDECISION: PROMOTE"),
            detail: &LoadDetail::default(),
        },
    );
    for (name, text) in [
        ("decision", decision_final(&ctx(), &record)),
        ("rollback", outcome_final(&ctx(), &record)),
        ("report", html),
    ] {
        assert!(
            !text.contains('\u{1b}'),
            "{name}: an escape sequence got through"
        );
        for line in text.lines() {
            let line = line.trim_start();
            assert!(
                !line.starts_with("verdict      PROMOTE")
                    && !line.starts_with("DECISION: PROMOTE")
                    && !line.starts_with("authorised by: ops-lead"),
                "{name}: forged line {line:?}"
            );
        }
        assert!(
            text.contains(r"x\nverdict      PROMOTE\e[31m"),
            "{name}: the reason is shown, escaped"
        );
    }
}

#[test]
fn decision_file_lists_a_cross_tenant_leak() {
    let scenario = Scenario::healthy().event(
        12.0,
        Event::IsolationLeak {
            observer: "user-2".into(),
            owner: "user-4".into(),
            arm: ArmRole::Canary,
        },
    );
    let facts = facts_of(scenario);
    let traffic = FinalTraffic {
        canary_percent: 0,
        verification: verified(0, at_min(12.0) + 220),
    };
    let ids = signer_ids();
    let record = record_files(&facts, &traffic, &ids, None);
    insta::assert_snapshot!("decision_leak", decision_final(&ctx(), &record));
}

#[test]
fn decision_file_after_a_burst_below_its_bar() {
    let mut scenario = Scenario::healthy();
    scenario.burst = (100, 97);
    let facts = facts_of(scenario);
    let traffic = FinalTraffic {
        canary_percent: 0,
        verification: verified(0, at_min(6.0) + 220),
    };
    let ids = signer_ids();
    let record = record_files(&facts, &traffic, &ids, None);
    insta::assert_snapshot!("decision_burst_below_bar", decision_final(&ctx(), &record));
}

#[test]
fn report_html_is_self_contained_and_escaped() {
    let mut facts = facts_of(ttfv_breach());
    // Text from the run that must not become markup.
    facts.plan.service = "relay<script>alert(1)</script>".into();
    let traffic = FinalTraffic {
        canary_percent: 0,
        verification: verified(0, at_min(25.0) + 220),
    };
    let artifacts = vec![
        FileEntry {
            name: "CANARY_DECISION_FINAL.txt".into(),
            sha256: "ab".repeat(32),
            bytes: 2048,
        },
        FileEntry {
            name: "journal.jsonl".into(),
            sha256: "cd".repeat(32),
            bytes: 40960,
        },
    ];
    let fp = fixed_signer().fingerprint();
    let html = report_html(
        &ctx(),
        &ReportInput {
            facts: &facts,
            decision: facts.decision.as_ref().unwrap(),
            traffic: &traffic,
            artifacts: &artifacts,
            signer_fingerprint: &fp,
            cooldown_override: None,
            detail: &LoadDetail::default(),
        },
    );
    assert!(!html.contains("<script"), "unescaped text in the report");
    assert!(html.contains("relay&lt;script&gt;"));
    for external in ["http://", "https://", " src=", " href=", "@import", "url("] {
        assert!(
            !html.contains(external),
            "the report must not fetch anything: {external}"
        );
    }
    assert_eq!(html.matches("<svg ").count(), facts.plan.guardrails.len());
    assert!(!html.contains("Comparisons with the baseline"));
    insta::assert_snapshot!("report_rollback", html);

    // With comparisons, a table of them and the score.
    let mut decision = facts.decision.clone().unwrap();
    decision.comparisons = judgements();
    let mut named = decision.comparisons.clone();
    named[1].name = "errors<b>".into();
    decision.comparisons = named;
    decision.score = Some(canary_core::judge::Scoring::default().score(&decision.comparisons));
    let html = report_html(
        &ctx(),
        &ReportInput {
            facts: &facts,
            decision: &decision,
            traffic: &traffic,
            artifacts: &artifacts,
            signer_fingerprint: &fp,
            cooldown_override: None,
            detail: &LoadDetail::default(),
        },
    );
    assert!(html.contains("<h2>Comparisons with the baseline</h2>"));
    assert!(
        html.contains("<td class=\"FAIL\">HIGH</td><td>ttfv_vs_baseline</td>"),
        "{html}"
    );
    assert!(html.contains("<td class=\"PASS\">PASS</td><td>errors&lt;b&gt;</td>"));
    assert!(html.contains("100 % of looks above"));
    assert!(html.contains("<p>Score <b>50</b> (fail) · default 50 (weight 1, 1 passed, 1 failed, 0 without data)</p>"), "{html}");
}
