//! The run dashboard and the Grafana client: the dashboard JSON is snapshot-tested and checked
//! for everything Grafana requires; the client pushes it, annotates it and runs preflight checks
//! against a stand-in implementing Grafana's documented HTTP API (Grafana is not installable
//! here), which checks the bearer token and validates every dashboard it is sent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rules_support;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use canary_core::Secret;
use canary_providers::grafana::{
    Annotation, Dashboard, DashboardOptions, Datasource, GrafanaClient, GrafanaConfig,
    GrafanaError, runbook_panels,
};
use rules_support::{RUN_ID, runbook_plan};
use serde_json::{Value, json};

const TOKEN: &str = "glsa_test_token_7d1e";

/// Everything Grafana needs of a dashboard model (and what would make it reject or mangle one).
fn validate_dashboard(d: &Value) -> Result<(), String> {
    let title = d["title"].as_str().ok_or("dashboard.title is required")?;
    if title.trim().is_empty() {
        return Err("dashboard.title must not be empty".into());
    }
    let uid = d["uid"].as_str().ok_or("dashboard.uid must be a string")?;
    if uid.is_empty()
        || uid.len() > 40
        || !uid
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!("dashboard.uid {uid:?} is not a valid UID"));
    }
    if !d["id"].is_null() {
        return Err("dashboard.id must be null for a dashboard saved by UID".into());
    }
    let schema = d["schemaVersion"]
        .as_u64()
        .ok_or("dashboard.schemaVersion is required")?;
    if schema < 30 {
        return Err(format!("schemaVersion {schema} would be migrated"));
    }
    let panels = d["panels"]
        .as_array()
        .ok_or("dashboard.panels must be an array")?;
    if panels.is_empty() {
        return Err("dashboard.panels is empty".into());
    }
    let variables: HashSet<&str> = d["templating"]["list"]
        .as_array()
        .map(|l| l.iter().filter_map(|v| v["name"].as_str()).collect())
        .unwrap_or_default();
    let mut ids = HashSet::new();
    for p in panels {
        let id = p["id"].as_u64().ok_or("panels[].id is required")?;
        if !ids.insert(id) {
            return Err(format!("panel id {id} is used twice"));
        }
        p["type"].as_str().ok_or("panels[].type is required")?;
        p["title"].as_str().ok_or("panels[].title is required")?;
        let g = &p["gridPos"];
        let (h, w, x, y) = (
            g["h"].as_u64(),
            g["w"].as_u64(),
            g["x"].as_u64(),
            g["y"].as_u64(),
        );
        let (Some(h), Some(w), Some(x), Some(_)) = (h, w, x, y) else {
            return Err(format!("panel {id}: gridPos needs numeric h, w, x, y"));
        };
        if h == 0 || w == 0 || x + w > 24 {
            return Err(format!(
                "panel {id}: gridPos does not fit the 24-column grid"
            ));
        }
        let targets = p["targets"]
            .as_array()
            .ok_or("panels[].targets is required")?;
        if targets.is_empty() {
            return Err(format!("panel {id} has no targets"));
        }
        let mut refs = HashSet::new();
        for t in targets {
            let r = t["refId"].as_str().ok_or("targets[].refId is required")?;
            if !refs.insert(r) {
                return Err(format!("panel {id}: refId {r} is used twice"));
            }
            let expr = t["expr"].as_str().ok_or("targets[].expr is required")?;
            canary_promql::rewrite::parse(expr).map_err(|e| format!("panel {id}: {e}"))?;
            for ds in [&t["datasource"], &p["datasource"]] {
                let kind = ds["type"].as_str().ok_or("datasource.type is required")?;
                let uid = ds["uid"].as_str().ok_or("datasource.uid is required")?;
                if kind != "prometheus" {
                    return Err(format!("panel {id}: datasource type {kind}"));
                }
                if let Some(var) = uid.strip_prefix("${").and_then(|u| u.strip_suffix('}'))
                    && !variables.contains(var)
                {
                    return Err(format!(
                        "panel {id}: datasource variable {var} is not defined"
                    ));
                }
            }
        }
        let steps = p["fieldConfig"]["defaults"]["thresholds"]["steps"]
            .as_array()
            .ok_or("thresholds.steps is required")?;
        if steps.first().is_none_or(|s| !s["value"].is_null()) {
            return Err(format!(
                "panel {id}: the first threshold step must have value null"
            ));
        }
    }
    Ok(())
}

#[derive(Default)]
struct Stand {
    dashboards: Vec<(u64, String, Value, u64, Option<String>)>,
    annotations: Vec<Value>,
    database: String,
}

type Shared = Arc<Mutex<Stand>>;

fn authorised(headers: &HeaderMap) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {TOKEN}"))
}

fn reject(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"message": message}))).into_response()
}

/// A stand-in for Grafana's HTTP API: /api/health, /api/org, /api/dashboards/db,
/// /api/annotations, /api/search.
async fn grafana() -> (String, Shared) {
    let state: Shared = Arc::new(Mutex::new(Stand {
        database: "ok".into(),
        ..Stand::default()
    }));
    let app = Router::new()
        .route(
            "/api/health",
            get(|State(s): State<Shared>| async move {
                Json(json!({"commit": "abc123", "database": s.lock().unwrap().database, "version": "10.4.1"}))
            }),
        )
        .route(
            "/api/org",
            get(|headers: HeaderMap| async move {
                if !authorised(&headers) {
                    return reject(StatusCode::UNAUTHORIZED, "invalid API key");
                }
                Json(json!({"id": 1, "name": "Main Org."})).into_response()
            }),
        )
        .route(
            "/api/dashboards/db",
            post(|State(s): State<Shared>, headers: HeaderMap, Json(body): Json<Value>| async move {
                if !authorised(&headers) {
                    return reject(StatusCode::UNAUTHORIZED, "invalid API key");
                }
                if let Err(e) = validate_dashboard(&body["dashboard"]) {
                    return reject(StatusCode::BAD_REQUEST, &e);
                }
                let folder = body["folderUid"].as_str().map(str::to_owned);
                if folder.as_deref().is_some_and(|f| f != "canary-runs") {
                    return reject(StatusCode::BAD_REQUEST, "folder not found");
                }
                let uid = body["dashboard"]["uid"].as_str().unwrap().to_owned();
                let mut s = s.lock().unwrap();
                let next_id = s.dashboards.len() as u64 + 1;
                let (id, version) = match s.dashboards.iter_mut().find(|d| d.1 == uid) {
                    Some(existing) => {
                        if body["overwrite"] != json!(true) {
                            return (StatusCode::PRECONDITION_FAILED, Json(json!({"message": "A dashboard with the same uid already exists", "status": "name-exists"}))).into_response();
                        }
                        existing.2 = body["dashboard"].clone();
                        existing.3 += 1;
                        existing.4 = folder;
                        (existing.0, existing.3)
                    }
                    None => {
                        s.dashboards.push((next_id, uid.clone(), body["dashboard"].clone(), 1, folder));
                        (next_id, 1)
                    }
                };
                Json(json!({"id": id, "uid": uid, "url": format!("/d/{uid}/canary-run"), "status": "success", "version": version, "slug": "canary-run"})).into_response()
            }),
        )
        .route(
            "/api/annotations",
            post(|State(s): State<Shared>, headers: HeaderMap, Json(body): Json<Value>| async move {
                if !authorised(&headers) {
                    return reject(StatusCode::UNAUTHORIZED, "invalid API key");
                }
                let mut s = s.lock().unwrap();
                let uid = body["dashboardUID"].as_str().unwrap_or_default();
                if !s.dashboards.iter().any(|d| d.1 == uid) {
                    return reject(StatusCode::NOT_FOUND, "Dashboard not found");
                }
                if body["time"].as_i64().is_none_or(|t| t <= 0) || body["text"].as_str().is_none_or(str::is_empty) {
                    return reject(StatusCode::BAD_REQUEST, "time and text are required");
                }
                s.annotations.push(body);
                Json(json!({"message": "Annotation added", "id": s.annotations.len()})).into_response()
            }),
        )
        .route(
            "/api/search",
            get(|State(s): State<Shared>, headers: HeaderMap, Query(q): Query<Vec<(String, String)>>| async move {
                if !authorised(&headers) {
                    return reject(StatusCode::UNAUTHORIZED, "invalid API key");
                }
                let param = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
                let tag = param("tag");
                let text = param("query").unwrap_or_default().to_lowercase();
                let s = s.lock().unwrap();
                let hits: Vec<Value> = s
                    .dashboards
                    .iter()
                    .filter(|d| d.2["title"].as_str().unwrap().to_lowercase().contains(&text))
                    .filter(|d| tag.as_ref().is_none_or(|t| d.2["tags"].as_array().unwrap().iter().any(|x| x == t.as_str())))
                    .map(|d| json!({"id": d.0, "uid": d.1, "title": d.2["title"], "url": format!("/d/{}/canary-run", d.1), "type": "dash-db", "tags": d.2["tags"]}))
                    .collect();
                Json(hits).into_response()
            }),
        )
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, state)
}

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

#[test]
fn the_runbook_dashboard_snapshot() {
    let d = runbook_dashboard(&DashboardOptions::default());
    validate_dashboard(&d.model).unwrap();
    insta::assert_json_snapshot!("runbook_dashboard", d.model);
}

#[test]
fn six_panels_canary_against_baseline_with_the_guardrails_thresholds() {
    let d = runbook_dashboard(&DashboardOptions {
        datasource: Datasource::Uid("prom-main".into()),
        ..DashboardOptions::default()
    });
    validate_dashboard(&d.model).unwrap();
    assert_eq!(d.uid, format!("canary-{RUN_ID}"));
    let panels = d.model["panels"].as_array().unwrap();
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
    let expr = d.model["panels"][0]["targets"][0]["expr"].as_str().unwrap();
    assert!(expr.contains("[5s]"), "{expr}");
    let expr = d.model["panels"][1]["targets"][1]["expr"].as_str().unwrap();
    assert!(expr.contains("[1s]"), "{expr}");
}

#[tokio::test]
async fn push_annotate_and_find_the_run_dashboard() {
    let (url, state) = grafana().await;
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
        state.lock().unwrap().dashboards[0].4.as_deref(),
        Some("canary-runs")
    );

    let t0 = 1_760_875_200_000;
    for (kind, at, text) in [
        ("start", t0, "canary started: 5 % to main"),
        ("checkpoint", t0 + 900_000, "T15 snapshot"),
        ("decision", t0 + 3_600_000, "PROMOTE"),
    ] {
        let id = grafana
            .annotate(&Annotation::for_run(RUN_ID, kind, at, text))
            .await
            .unwrap();
        assert!(id > 0);
    }
    {
        let s = state.lock().unwrap();
        assert_eq!(s.annotations.len(), 3);
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
    let (url, state) = grafana().await;
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
    broken.model["panels"][2]["gridPos"] = json!({"h": 8, "w": 30, "x": 0, "y": 0});
    let err = client(&url, TOKEN, None)
        .push_dashboard(&broken, "x")
        .await
        .unwrap_err();
    assert!(
        matches!(err, GrafanaError::Rejected { status: 400, .. }),
        "{err:?}"
    );

    state.lock().unwrap().database = "failing".into();
    let err = wrong.health().await.unwrap_err();
    assert!(matches!(err, GrafanaError::Unhealthy { .. }), "{err:?}");

    let port = canary_testkit::free_port();
    let err = client(&format!("http://127.0.0.1:{port}"), TOKEN, None)
        .health()
        .await
        .unwrap_err();
    assert!(matches!(err, GrafanaError::Unreachable { .. }), "{err:?}");
}
