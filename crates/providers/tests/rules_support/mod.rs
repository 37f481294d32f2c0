//! The runbook's plan (DESIGN §3: six guardrails, 5 % for 60 minutes), shared by the rules,
//! Alertmanager and Grafana tests.
#![allow(dead_code)]

use std::time::Duration;

use canary_core::plan::{
    Approval, Arm, Arms, Guardrail, OnBreach, OnInconclusive, OnNoData, Plan, Step,
};

pub const RUN_ID: &str = "relay-20251019T120000Z";

pub fn minutes(m: u64) -> Duration {
    Duration::from_secs(60 * m)
}

pub fn guardrail(name: &str, query: &str, must: &str, for_: Duration, on: OnBreach) -> Guardrail {
    Guardrail {
        name: name.into(),
        query: query.into(),
        must: must.parse().unwrap(),
        for_,
        on_breach: on,
        on_no_data: OnNoData::Inconclusive,
        min_samples: None,
        samples_query: None,
        unit: None,
    }
}

/// The runbook's six guardrails, as `canary init` writes them.
pub fn runbook_guardrails() -> Vec<Guardrail> {
    vec![
        guardrail(
            "ttfv_p95",
            "histogram_quantile(0.95, sum by (le) (rate(ttfv_ms_bucket[5m])))",
            "< 1500",
            minutes(5),
            OnBreach::Rollback,
        ),
        guardrail(
            "rls_errors",
            "sum(increase(memory_rls_policy_errors_total[5m]))",
            "== 0",
            Duration::ZERO,
            OnBreach::Rollback,
        ),
        guardrail(
            "sse_success",
            "100 * sum(rate(sse_complete_total[5m])) / sum(rate(sse_total[5m]))",
            ">= 99.6",
            minutes(5),
            OnBreach::Rollback,
        ),
        guardrail(
            "cross_tenant",
            "sum(increase(memory_cross_tenant_attempts_total[1m]))",
            "== 0",
            Duration::ZERO,
            OnBreach::SecurityRollback,
        ),
        guardrail(
            "ann_p95",
            "histogram_quantile(0.95, sum by (le) (rate(memory_ann_query_latency_ms_bucket[5m])))",
            "< 200",
            Duration::ZERO,
            OnBreach::BlockPromotion,
        ),
        guardrail(
            "db_pool",
            "max(db_connection_pool_utilization)",
            "< 80",
            Duration::ZERO,
            OnBreach::BlockPromotion,
        ),
    ]
}

pub fn plan_with(guardrails: Vec<Guardrail>) -> Plan {
    let plan = Plan {
        service: "relay".into(),
        arms: Arms {
            baseline: Arm {
                name: "r0.5-hotfix".into(),
                selector: r#"{version="r0.5"}"#.into(),
            },
            canary: Arm {
                name: "main".into(),
                selector: r#"{version="r1"}"#.into(),
            },
        },
        steps: vec![Step {
            weight: 5,
            hold: minutes(60),
        }],
        evaluation_interval: Duration::from_secs(30),
        check_log_interval: minutes(5),
        checkpoints: vec![minutes(15), minutes(30), minutes(60)],
        guardrails,
        burst: None,
        probes: false,
        approval: Approval::Auto,
        on_inconclusive: OnInconclusive::Rollback,
        max_query_errors: 3,
        time_scale: 1.0,
        comparisons: Vec::new(),
        scoring: Default::default(),
    };
    plan.check().unwrap();
    plan
}

pub fn runbook_plan() -> Plan {
    plan_with(runbook_guardrails())
}
