//! A stand-in for Grafana Mimir's documented ruler configuration API (Mimir cannot be installed
//! here): `POST /prometheus/config/v1/rules/{namespace}` (a YAML rule group),
//! `GET`/`DELETE .../{namespace}/{group}`. It checks the bearer token and the tenant
//! (`X-Scope-OrgID`), refuses what Mimir would (wrong content type, not YAML, a group without a
//! name, a rule without `alert` and `expr`), and keeps what it was given.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use serde_json::Value;

/// The token the stand-in accepts.
pub const TOKEN: &str = "mimir-token-91ab";

/// Rule groups by (tenant, namespace, group).
pub type Groups = BTreeMap<(String, String, String), Value>;

type Shared = Arc<Mutex<Groups>>;

/// A running stand-in; stopped when dropped.
pub struct Ruler {
    served: crate::Served,
    groups: Shared,
}

impl Ruler {
    pub fn start() -> Ruler {
        let groups: Shared = Arc::default();
        Ruler {
            served: crate::Served::start("the Mimir ruler stand-in", router(groups.clone())),
            groups,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.served.url
    }

    /// The rule groups it holds.
    pub fn groups(&self) -> MutexGuard<'_, Groups> {
        self.groups.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn tenant(headers: &HeaderMap) -> Result<String, StatusCode> {
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(format!("Bearer {TOKEN}").as_str())
    {
        return Err(StatusCode::UNAUTHORIZED);
    }
    headers
        .get("x-scope-orgid")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .ok_or(StatusCode::UNAUTHORIZED)
}

fn lock(g: &Shared) -> MutexGuard<'_, Groups> {
    g.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn set_group(
    State(g): State<Shared>,
    Path(ns): Path<String>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, String) {
    let tenant = match tenant(&headers) {
        Ok(t) => t,
        Err(s) => return (s, String::new()),
    };
    if headers.get("content-type").and_then(|v| v.to_str().ok()) != Some("application/yaml") {
        return (
            StatusCode::BAD_REQUEST,
            "content type must be application/yaml".into(),
        );
    }
    let group: Value = match serde_norway::from_str(&body) {
        Ok(v) => v,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("not YAML: {e}")),
    };
    let Some(name) = group["name"].as_str().map(str::to_owned) else {
        return (StatusCode::BAD_REQUEST, "rule group has no name".into());
    };
    let rules = group["rules"].as_array().cloned().unwrap_or_default();
    if rules.is_empty()
        || rules
            .iter()
            .any(|r| r["alert"].as_str().is_none() || r["expr"].as_str().is_none())
    {
        return (
            StatusCode::BAD_REQUEST,
            "every rule needs alert and expr".into(),
        );
    }
    lock(&g).insert((tenant, ns, name), group);
    (StatusCode::ACCEPTED, "{}".into())
}

async fn get_group(
    State(g): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> (StatusCode, String) {
    let tenant = match tenant(&headers) {
        Ok(t) => t,
        Err(s) => return (s, String::new()),
    };
    match lock(&g).get(&(tenant, ns, name)) {
        Some(v) => (
            StatusCode::OK,
            serde_norway::to_string(v).unwrap_or_default(),
        ),
        None => (StatusCode::NOT_FOUND, "group does not exist".into()),
    }
}

async fn delete_group(
    State(g): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> (StatusCode, String) {
    let tenant = match tenant(&headers) {
        Ok(t) => t,
        Err(s) => return (s, String::new()),
    };
    match lock(&g).remove(&(tenant, ns, name)) {
        Some(_) => (StatusCode::ACCEPTED, "{}".into()),
        None => (StatusCode::NOT_FOUND, "group does not exist".into()),
    }
}

fn router(groups: Shared) -> Router {
    Router::new()
        .route("/prometheus/config/v1/rules/{namespace}", post(set_group))
        .route(
            "/prometheus/config/v1/rules/{namespace}/{group}",
            get(get_group).delete(delete_group),
        )
        .with_state(groups)
}
