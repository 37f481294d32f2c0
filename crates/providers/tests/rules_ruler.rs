//! Installing rules through a Mimir/Cortex ruler API, against a stand-in implementing Mimir's
//! documented ruler configuration endpoints (no Mimir is installable here): the stand-in checks
//! the bearer token and tenant and that the body is a valid rule group.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rules_support;

use std::time::Duration;

use canary_core::Secret;
use canary_providers::rules::{
    CanaryRules, MIMIR_RULES_PREFIX, RulerClient, RulerConfig, RulesError,
};
use canary_testkit::ruler::{Ruler, TOKEN};
use rules_support::{RUN_ID, runbook_plan};

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
    let stand = tokio::task::spawn_blocking(Ruler::start).await.unwrap();
    let url = stand.url().to_owned();
    let ruler = client(&url, TOKEN);
    let rules = CanaryRules::generate(&runbook_plan(), RUN_ID).unwrap();
    assert!(!ruler.is_loaded(&rules.group().name).await.unwrap());

    let installed = ruler.install(&rules).await.unwrap();
    assert_eq!(installed.namespace, "canary");
    assert_eq!(installed.group, format!("canary-{RUN_ID}"));
    assert_eq!(installed.alerts.len(), 6);
    {
        let groups = stand.groups();
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
    assert!(stand.groups().is_empty());
    assert!(!ruler.is_loaded(&installed.group).await.unwrap());
    // Removing twice is harmless.
    ruler.remove(&installed).await.unwrap();
}

#[tokio::test]
async fn a_refused_token_is_reported_without_the_token() {
    let stand = tokio::task::spawn_blocking(Ruler::start).await.unwrap();
    let url = stand.url().to_owned();
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
