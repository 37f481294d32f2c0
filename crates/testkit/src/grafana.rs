//! A stand-in for Grafana's documented HTTP API (Grafana cannot be installed here): `/api/health`,
//! `/api/org`, `/api/dashboards/db`, `/api/annotations`, `/api/search`. It checks the bearer token,
//! validates every dashboard it is sent as Grafana would, and records what it was given. It serves
//! on 127.0.0.1 from a thread of its own, so synchronous and async tests can both use it.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

/// The token the stand-in accepts.
pub const TOKEN: &str = "glsa_test_token_7d1e";

/// What the stand-in holds.
#[derive(Default)]
pub struct Stand {
    /// (id, uid, dashboard model, version, folder uid) per saved dashboard.
    pub dashboards: Vec<(u64, String, Value, u64, Option<String>)>,
    /// Every annotation accepted, as sent.
    pub annotations: Vec<Value>,
    /// What `/api/health` reports as the database state ("ok" unless a test changes it).
    pub database: String,
}

type Shared = Arc<Mutex<Stand>>;

/// A running stand-in; stopped when dropped.
pub struct Grafana {
    served: crate::Served,
    state: Shared,
}

impl Grafana {
    /// Starts the stand-in on a free loopback port.
    pub fn start() -> Grafana {
        let state: Shared = Arc::new(Mutex::new(Stand {
            database: "ok".into(),
            ..Stand::default()
        }));
        Grafana {
            served: crate::Served::start("the Grafana stand-in", router(state.clone())),
            state,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.served.url
    }

    /// What it holds, to inspect or to change (e.g. `database`).
    pub fn state(&self) -> MutexGuard<'_, Stand> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Everything Grafana needs of a dashboard model (and what would make it reject or mangle one).
pub fn validate_dashboard(d: &Value) -> Result<(), String> {
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
            promql_parser::parser::parse(expr).map_err(|e| format!("panel {id}: {e}"))?;
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

fn authorised(headers: &HeaderMap) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {TOKEN}"))
}

fn reject(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"message": message}))).into_response()
}

fn router(state: Shared) -> Router {
    Router::new()
        .route(
            "/api/health",
            get(|State(s): State<Shared>| async move {
                Json(json!({"commit": "abc123", "database": s.lock().unwrap_or_else(PoisonError::into_inner).database, "version": "10.4.1"}))
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
                let mut s = s.lock().unwrap_or_else(PoisonError::into_inner);
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
                let mut s = s.lock().unwrap_or_else(PoisonError::into_inner);
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
                let s = s.lock().unwrap_or_else(PoisonError::into_inner);
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
        .with_state(state)
}
