//! Installing rules through a Mimir/Cortex ruler API, against a stand-in implementing Mimir's
//! documented ruler configuration endpoints (no Mimir is installable here): the stand-in checks
//! the bearer token and tenant and that the body is a valid rule group.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rules_support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use canary_core::Secret;
use canary_providers::rules::{
    CanaryRules, MIMIR_RULES_PREFIX, RulerClient, RulerConfig, RulesError,
};
use rules_support::{RUN_ID, runbook_plan};
use serde_json::Value;

const TOKEN: &str = "mimir-token-91ab";

/// Rule groups by (tenant, namespace, group).
type Groups = Arc<Mutex<BTreeMap<(String, String, String), Value>>>;

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

async fn ruler() -> (String, Groups) {
    let groups: Groups = Arc::default();
    let app = Router::new()
        .route(
            "/prometheus/config/v1/rules/{namespace}",
            post(
                |State(g): State<Groups>,
                 Path(ns): Path<String>,
                 headers: HeaderMap,
                 body: String| async move {
                    let tenant = match tenant(&headers) {
                        Ok(t) => t,
                        Err(s) => return (s, String::new()),
                    };
                    if headers.get("content-type").and_then(|v| v.to_str().ok())
                        != Some("application/yaml")
                    {
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
                    g.lock().unwrap().insert((tenant, ns, name), group);
                    (StatusCode::ACCEPTED, "{}".into())
                },
            ),
        )
        .route(
            "/prometheus/config/v1/rules/{namespace}/{group}",
            get(
                |State(g): State<Groups>,
                 Path((ns, name)): Path<(String, String)>,
                 headers: HeaderMap| async move {
                    let tenant = match tenant(&headers) {
                        Ok(t) => t,
                        Err(s) => return (s, String::new()),
                    };
                    match g.lock().unwrap().get(&(tenant, ns, name)) {
                        Some(v) => (StatusCode::OK, serde_norway::to_string(v).unwrap()),
                        None => (StatusCode::NOT_FOUND, "group does not exist".into()),
                    }
                },
            )
            .delete(
                |State(g): State<Groups>,
                 Path((ns, name)): Path<(String, String)>,
                 headers: HeaderMap| async move {
                    let tenant = match tenant(&headers) {
                        Ok(t) => t,
                        Err(s) => return (s, String::new()),
                    };
                    match g.lock().unwrap().remove(&(tenant, ns, name)) {
                        Some(_) => (StatusCode::ACCEPTED, "{}".into()),
                        None => (StatusCode::NOT_FOUND, "group does not exist".into()),
                    }
                },
            ),
        )
        .with_state(groups.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, groups)
}

fn client(url: &str, token: &str) -> RulerClient {
    RulerClient::new(RulerConfig {
        url: url.into(),
        prefix: MIMIR_RULES_PREFIX.into(),
        namespace: "canary".into(),
        tenant: Some("team-relay".into()),
        token: Some(Secret::new(token)),
        timeout: Duration::from_secs(5),
    })
    .unwrap()
}

#[tokio::test]
async fn rules_go_into_the_ruler_namespace_and_come_out_again() {
    let (url, groups) = ruler().await;
    let ruler = client(&url, TOKEN);
    let rules = CanaryRules::generate(&runbook_plan(), RUN_ID).unwrap();
    assert!(!ruler.is_loaded(&rules.group().name).await.unwrap());

    let installed = ruler.install(&rules).await.unwrap();
    assert_eq!(installed.namespace, "canary");
    assert_eq!(installed.group, format!("canary-{RUN_ID}"));
    assert_eq!(installed.alerts.len(), 6);
    {
        let groups = groups.lock().unwrap();
        let stored = &groups[&(
            "team-relay".to_owned(),
            "canary".to_owned(),
            installed.group.clone(),
        )];
        assert_eq!(stored["interval"], "30s");
        assert_eq!(stored["rules"][0]["alert"], "CanaryTtfvP95");
        assert_eq!(stored["rules"][0]["labels"]["canary_run"], RUN_ID);
    }
    assert!(ruler.is_loaded(&installed.group).await.unwrap());

    ruler.remove(&installed).await.unwrap();
    assert!(groups.lock().unwrap().is_empty());
    assert!(!ruler.is_loaded(&installed.group).await.unwrap());
    // Removing twice is harmless.
    ruler.remove(&installed).await.unwrap();
}

#[tokio::test]
async fn a_refused_token_is_reported_without_the_token() {
    let (url, _) = ruler().await;
    let rules = CanaryRules::generate(&runbook_plan(), RUN_ID).unwrap();
    let err = client(&url, "wrong-token-77")
        .install(&rules)
        .await
        .unwrap_err();
    assert!(
        matches!(err, RulesError::Unauthorized { status: 401, .. }),
        "{err:?}"
    );
    assert!(!err.to_string().contains("wrong-token-77"));
}
