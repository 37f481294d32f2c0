//! The run dashboard and the Grafana client: the dashboard JSON is snapshot-tested and checked
//! for everything Grafana requires; the client pushes it, annotates it and runs preflight checks
//! against a stand-in implementing Grafana's documented HTTP API (Grafana is not installable
//! here), which checks the bearer token and validates every dashboard it is sent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rules_support;

use std::time::Duration;

use canary_core::Secret;
use canary_providers::grafana::{
    Annotation, AnnotationKind, Dashboard, DashboardOptions, Datasource, GrafanaClient,
    GrafanaConfig, GrafanaError, RUNBOOK_DASHBOARDS, runbook_panels,
};
use canary_testkit::grafana::{Grafana, TOKEN, validate_dashboard};
use rules_support::{RUN_ID, runbook_plan};
use serde_json::json;

fn client(url: &str, token: &str, folder: Option<&str>) -> GrafanaClient {
    GrafanaClient::new(GrafanaConfig {
        url: format!("{url}/"),
        token: Secret::new(token),
        folder_uid: folder.map(str::to_owned),
        timeout: Duration::from_secs(5),
    })
    .unwrap()
}

fn runbook_dashboard(options: &DashboardOptions) -> Dashboard {
    Dashboard::build(&runbook_plan(), RUN_ID, &runbook_panels(), options).unwrap()
}

/// The JSON Grafana is sent.
fn model(d: &Dashboard) -> serde_json::Value {
    serde_json::to_value(d).unwrap()
}

#[test]
fn the_runbook_dashboard_snapshot() {
    let d = runbook_dashboard(&DashboardOptions::default());
    validate_dashboard(&model(&d)).unwrap();
    insta::assert_json_snapshot!("runbook_dashboard", d);
}

#[test]
fn six_panels_canary_against_baseline_with_the_guardrails_thresholds() {
    let d = runbook_dashboard(&DashboardOptions {
        datasource: Datasource::Uid("prom-main".into()),
        ..DashboardOptions::default()
    });
    let model = model(&d);
    validate_dashboard(&model).unwrap();
    assert_eq!(d.uid, format!("canary-{RUN_ID}"));
    assert_eq!(model["uid"], d.uid);
    // The runbook's six dashboards by name, each followed by the guardrails it shows.
    let titles: Vec<&str> = d.panel_titles().collect();
    assert_eq!(
        titles,
        [
            "TTFV Protection · ttfv_p95 < 1500",
            "RLS Enforcement · rls_errors == 0, cross_tenant == 0",
            "SSE Health · sse_success >= 99.6",
            "ANN Performance · ann_p95 < 200",
            "Reranker Status",
            "Database Health · db_pool < 80",
        ]
    );
    for (title, name) in titles.iter().zip(RUNBOOK_DASHBOARDS) {
        assert!(title.starts_with(name), "{title} is not {name}");
    }
    let panels = model["panels"].as_array().unwrap();
    assert_eq!(panels.len(), 6);
    for p in panels {
        assert_eq!(p["datasource"]["uid"], "prom-main");
        let targets = p["targets"].as_array().unwrap();
        let canary = targets
            .iter()
            .filter(|t| t["expr"].as_str().unwrap().contains(r#"version="r1""#))
            .count();
        let baseline = targets
            .iter()
            .filter(|t| t["expr"].as_str().unwrap().contains(r#"version="r0.5""#))
            .count();
        assert!(canary > 0 && canary == baseline, "{p}");
        assert!(targets.iter().all(|t| {
            let legend = t["legendFormat"].as_str().unwrap();
            legend.starts_with("canary main ") || legend.starts_with("baseline r0.5-hotfix ")
        }));
    }
    let steps = |i: usize| panels[i]["fieldConfig"]["defaults"]["thresholds"]["steps"].clone();
    let style = |i: usize| {
        panels[i]["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"].clone()
    };
    assert_eq!(
        steps(0),
        json!([{"color": "green", "value": null}, {"color": "red", "value": 1500.0}])
    );
    assert_eq!(
        steps(1),
        json!([{"color": "green", "value": null}, {"color": "red", "value": 0.0}])
    );
    assert_eq!(
        steps(2),
        json!([{"color": "red", "value": null}, {"color": "green", "value": 99.6}])
    );
    assert_eq!(
        steps(3),
        json!([{"color": "green", "value": null}, {"color": "red", "value": 200.0}])
    );
    assert_eq!(
        steps(5),
        json!([{"color": "green", "value": null}, {"color": "red", "value": 80.0}])
    );
    // No guardrail reads the reranker's metric: no threshold line.
    assert_eq!(style(4), "off");
    assert_eq!(style(0), "line");
    let ann: Vec<&str> = panels[3]["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["legendFormat"].as_str().unwrap())
        .collect();
    assert_eq!(
        ann,
        [
            "canary main p50",
            "canary main p95",
            "canary main p99",
            "baseline r0.5-hotfix p50",
            "baseline r0.5-hotfix p95",
            "baseline r0.5-hotfix p99"
        ]
    );
    assert!(
        panels[4]["targets"][0]["expr"]
            .as_str()
            .unwrap()
            .contains("memory_rerank_skipped_total")
    );
}

#[test]
fn the_demo_clock_compresses_panel_windows() {
    let d = runbook_dashboard(&DashboardOptions {
        time_compression: Some(60.0),
        ..DashboardOptions::default()
    });
    let expr = &d.panels[0].targets[0].expr;
    assert!(expr.contains("[5s]"), "{expr}");
    let expr = &d.panels[1].targets[1].expr;
    assert!(expr.contains("[1s]"), "{expr}");
}

#[tokio::test]
async fn push_annotate_and_find_the_run_dashboard() {
    let stand = Grafana::start();
    let url = stand.url().to_owned();
    let grafana = client(&url, TOKEN, Some("canary-runs"));
    let health = grafana.health().await.unwrap();
    assert_eq!(health.version, "10.4.1");
    assert_eq!(grafana.check_auth().await.unwrap().name, "Main Org.");

    let dashboard = runbook_dashboard(&DashboardOptions::default());
    let pushed = grafana
        .push_dashboard(&dashboard, "canary run start")
        .await
        .unwrap();
    assert_eq!(pushed.uid, dashboard.uid);
    assert_eq!(pushed.url, format!("{url}/d/{}/canary-run", dashboard.uid));
    assert_eq!(pushed.version, 1);
    // Pushing again overwrites the same dashboard.
    let again = grafana
        .push_dashboard(&dashboard, "canary run decision")
        .await
        .unwrap();
    assert_eq!((again.id, again.version), (pushed.id, 2));
    assert_eq!(
        stand.state().dashboards[0].4.as_deref(),
        Some("canary-runs")
    );

    let t0 = 1_760_875_200_000;
    for (kind, at, text) in [
        (AnnotationKind::Start, t0, "canary started: 5 % to main"),
        (AnnotationKind::Checkpoint, t0 + 900_000, "T15 snapshot"),
        (AnnotationKind::Decision, t0 + 3_600_000, "PROMOTE"),
    ] {
        let id = grafana
            .annotate(&Annotation::for_run(RUN_ID, kind, at, text))
            .await
            .unwrap();
        assert!(id > 0);
    }
    {
        let s = stand.state();
        assert_eq!(s.annotations.len(), 3);
        assert_eq!(s.annotations[0]["tags"][2], "start");
        assert_eq!(s.annotations[1]["tags"][2], "checkpoint");
        assert_eq!(s.annotations[1]["dashboardUID"], dashboard.uid);
        assert_eq!(s.annotations[1]["time"], t0 + 900_000);
        assert_eq!(
            s.annotations[2]["tags"],
            json!(["canary", format!("canary-run:{RUN_ID}"), "decision"])
        );
        assert_eq!(s.annotations[2]["text"], "PROMOTE");
    }
    let hits = grafana
        .search("", Some(&format!("canary-run:{RUN_ID}")))
        .await
        .unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].uid, dashboard.uid);
    assert!(
        grafana
            .search("", Some("canary-run:other"))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn preflight_failures_say_what_to_fix_without_the_token() {
    let stand = Grafana::start();
    let url = stand.url().to_owned();
    let wrong = client(&url, "glsa_wrong", None);
    // Health needs no credential; the auth check does.
    wrong.health().await.unwrap();
    let err = wrong.check_auth().await.unwrap_err();
    assert!(matches!(err, GrafanaError::Unauthorized { .. }), "{err:?}");
    assert!(err.to_string().contains("GRAFANA_TOKEN") && !err.to_string().contains("glsa_wrong"));
    let dashboard = runbook_dashboard(&DashboardOptions::default());
    assert!(matches!(
        wrong.push_dashboard(&dashboard, "x").await,
        Err(GrafanaError::Unauthorized { .. })
    ));

    // An unknown folder is Grafana's 400, passed on with its message.
    let err = client(&url, TOKEN, Some("nope"))
        .push_dashboard(&dashboard, "x")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("folder not found"), "{err}");
    // A dashboard Grafana would refuse is refused by the stand-in too.
    let mut broken = dashboard.clone();
    broken.panels[2].grid_pos.w = 30;
    let err = client(&url, TOKEN, None)
        .push_dashboard(&broken, "x")
        .await
        .unwrap_err();
    assert!(
        matches!(err, GrafanaError::Rejected { status: 400, .. }),
        "{err:?}"
    );

    stand.state().database = "failing".into();
    let err = wrong.health().await.unwrap_err();
    assert!(matches!(err, GrafanaError::Unhealthy { .. }), "{err:?}");

    let port = canary_testkit::free_port();
    let err = client(&format!("http://127.0.0.1:{port}"), TOKEN, None)
        .health()
        .await
        .unwrap_err();
    assert!(matches!(err, GrafanaError::Unreachable { .. }), "{err:?}");
}
