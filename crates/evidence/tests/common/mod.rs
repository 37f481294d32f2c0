//! A miniature runtime for tests: drives `canary_core::Engine` on a virtual clock through a
//! small runbook plan and writes the bundle exactly as the real runtime would (journal first,
//! then the actions' artifacts), then seals it.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use canary_core::engine::{Action, GuardrailReading, Input, Reading};
use canary_core::plan::{
    Approval, Arm, Arms, BurstPlan, Guardrail, OnBreach, OnInconclusive, OnNoData, Plan, Step,
};
use canary_core::verdict::{ProbeRun, ProbeVerdict};
use canary_core::{ArmRole, Engine, Event, Millis, Secret};
use canary_evidence::render::alerts::Alerts;
use canary_evidence::render::dashboards::Dashboards;
use canary_evidence::render::snapshot::Snapshot;
use canary_evidence::{
    Bundle, FinalTraffic, JournalWriter, RawQuery, Seal, Sealed, Signer, TrafficChange,
    Verification,
};
use serde_json::json;

/// 2025-10-19T14:00:00Z.
pub const T0: Millis = 1_760_882_400_000;
pub const CONFIG_SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

/// A fixed signing key for snapshot-stable tests (the seed is 32 bytes of 0x2a).
pub fn fixed_secret() -> Secret {
    Secret::new("2a".repeat(32))
}

pub fn fixed_signer() -> Signer {
    Signer::from_secret(&fixed_secret()).unwrap()
}

pub fn min(m: f64) -> Duration {
    Duration::from_millis((m * 60_000.0) as u64)
}

pub fn at_min(m: f64) -> Millis {
    T0 + (m * 60_000.0).round() as i64
}

fn guardrail(name: &str, query: &str, must: &str, for_min: f64, on_breach: OnBreach) -> Guardrail {
    Guardrail {
        name: name.into(),
        query: query.into(),
        must: must.parse().unwrap(),
        for_: min(for_min),
        on_breach,
        on_no_data: OnNoData::Inconclusive,
        min_samples: None,
        samples_query: None,
        unit: None,
    }
}

/// The runbook, shortened to three guardrails and 5-minute evaluations.
pub fn plan() -> Plan {
    Plan {
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
            hold: min(60.0),
        }],
        evaluation_interval: min(5.0),
        check_log_interval: min(5.0),
        checkpoints: vec![min(15.0), min(30.0), min(60.0)],
        guardrails: vec![
            guardrail(
                "ttfv_p95",
                "histogram_quantile(0.95, sum by (le) (rate(ttfv_ms_bucket[5m])))",
                "< 1500",
                5.0,
                OnBreach::Rollback,
            ),
            guardrail(
                "rls_errors",
                "sum(increase(memory_rls_policy_errors_total[5m]))",
                "== 0",
                0.0,
                OnBreach::Rollback,
            ),
            guardrail(
                "db_pool",
                "max(db_connection_pool_utilization)",
                "< 80",
                0.0,
                OnBreach::BlockPromotion,
            ),
        ],
        burst: Some(BurstPlan {
            at: min(5.0),
            min_success_percent: 99.0,
        }),
        probes: true,
        approval: Approval::Auto,
        on_inconclusive: OnInconclusive::Rollback,
        max_query_errors: 3,
        time_scale: 1.0,
        comparisons: Vec::new(),
        scoring: Default::default(),
    }
}

pub fn healthy(name: &str, arm: ArmRole) -> f64 {
    match (name, arm) {
        ("ttfv_p95", ArmRole::Canary) => 812.5,
        ("ttfv_p95", ArmRole::Baseline) => 790.0,
        ("rls_errors", _) => 0.0,
        ("db_pool", ArmRole::Canary) => 41.0,
        ("db_pool", ArmRole::Baseline) => 38.5,
        (other, _) => panic!("unknown guardrail {other}"),
    }
}

/// `(guardrail, minute) -> reading` overriding the canary's healthy value.
pub type CanaryOverride = Box<dyn Fn(&str, f64) -> Option<Reading>>;

/// One scenario.
pub struct Scenario {
    /// The plan the run follows (the shortened runbook, [`plan`], unless changed).
    pub plan: Plan,
    pub canary: CanaryOverride,
    pub events: Vec<(f64, Event)>,
    pub burst: (u64, u64),
    pub run_id: String,
}

impl Scenario {
    pub fn healthy() -> Scenario {
        Scenario {
            plan: plan(),
            canary: Box::new(|_, _| None),
            events: vec![],
            burst: (100, 100),
            run_id: "relay-20251019T140000Z".into(),
        }
    }

    pub fn canary(mut self, f: impl Fn(&str, f64) -> Option<Reading> + 'static) -> Self {
        self.canary = Box::new(f);
        self
    }

    pub fn event(mut self, minute: f64, e: Event) -> Self {
        self.events.push((minute, e));
        self
    }

    pub fn plan(mut self, plan: Plan) -> Self {
        self.plan = plan;
        self
    }
}

/// A run in progress: the engine, its bundle, its journal, and what is queued.
pub struct Runner {
    pub engine: Engine,
    pub bundle: Bundle,
    pub journal: JournalWriter,
    pub inputs: Vec<Input>,
    scenario: Scenario,
    queue: Vec<(Millis, Input)>,
    raw: BTreeMap<Millis, Vec<RawQuery>>,
    probe_runs: Vec<serde_json::Value>,
    now: Millis,
    weight: u8,
    pub final_traffic: Option<FinalTraffic>,
}

fn describe(weight: u8) -> String {
    format!(
        "backend relay (embedded proxy 127.0.0.1:8080)\n  server main        weight {weight}\n  server r0.5-hotfix weight {}\n",
        100 - weight
    )
}

impl Runner {
    /// Creates the bundle and journal and starts the run at T0.
    pub fn start(evidence_dir: &Path, scenario: Scenario) -> Runner {
        let plan = scenario.plan.clone();
        let mut bundle = Bundle::create(evidence_dir, &scenario.run_id, T0).unwrap();
        let journal = bundle.create_journal(&plan).unwrap();
        bundle
            .write_dashboards(&Dashboards::Live {
                url: "http://127.0.0.1:9464/".into(),
                why: "no [grafana] section in canary.toml".into(),
            })
            .unwrap();
        bundle
            .write_alerts(&Alerts::Engine {
                why: "no [alertmanager] section in canary.toml".into(),
                guardrails: plan.guardrails.clone(),
            })
            .unwrap();
        let queue = scenario
            .events
            .iter()
            .map(|(m, e)| {
                (
                    at_min(*m),
                    Input::Event {
                        at: at_min(*m),
                        event: e.clone(),
                    },
                )
            })
            .collect();
        let mut runner = Runner {
            engine: Engine::new(plan).unwrap(),
            bundle,
            journal,
            inputs: Vec::new(),
            scenario,
            queue,
            raw: BTreeMap::new(),
            probe_runs: Vec::new(),
            now: T0,
            weight: 0,
            final_traffic: None,
        };
        runner.feed(Input::Start { at: T0 });
        runner
    }

    /// A runner for a resumed run: `engine` has replayed `inputs` (the journal); actions of
    /// replayed inputs are not carried out again.
    pub fn resume(
        bundle: Bundle,
        journal: JournalWriter,
        engine: Engine,
        inputs: Vec<Input>,
    ) -> Runner {
        let now = inputs.last().map_or(T0, Input::at);
        let weight = engine.status().canary_weight;
        Runner {
            engine,
            bundle,
            journal,
            inputs,
            scenario: Scenario::healthy(),
            queue: Vec::new(),
            raw: BTreeMap::new(),
            probe_runs: Vec::new(),
            now,
            weight,
            final_traffic: None,
        }
    }

    /// Journal first, then apply, then carry out the actions.
    pub fn feed(&mut self, input: Input) {
        self.journal.append(&input).unwrap();
        self.inputs.push(input.clone());
        let actions = self.engine.apply(&input).unwrap();
        self.carry_out(actions);
    }

    /// Feeds an input to a resumed engine (after replay) without carrying out actions again.
    pub fn carry_out(&mut self, actions: Vec<Action>) {
        let mut todo = actions;
        while !todo.is_empty() {
            let action = todo.remove(0);
            match action {
                Action::SetWeight { canary, change } => {
                    let from = self.weight;
                    let before = describe(from);
                    self.weight = canary;
                    let at = self.now + 120;
                    let change = TrafficChange {
                        provider: "embedded".into(),
                        from_percent: from,
                        to_percent: canary,
                        why: match change {
                            canary_core::engine::WeightChange::Step { index } => {
                                format!("step {}", index + 1)
                            }
                            canary_core::engine::WeightChange::Promote => "promote".into(),
                            canary_core::engine::WeightChange::Rollback => "rollback".into(),
                        },
                        before,
                        after: describe(canary),
                        applied_at: self.now + 100,
                        verification: Verification::Verified {
                            at,
                            observed: format!("canary {canary} % / baseline {} %", 100 - canary),
                        },
                    };
                    self.bundle.record_traffic_change(&change).unwrap();
                    if self.engine.is_decided() {
                        self.final_traffic = Some(FinalTraffic {
                            canary_percent: canary,
                            verification: Verification::Verified {
                                at,
                                observed: format!(
                                    "canary {canary} % / baseline {} %",
                                    100 - canary
                                ),
                            },
                        });
                    }
                }
                Action::Evaluate { round } => {
                    let minute = (round - T0) as f64 / 60_000.0;
                    let plan = self.engine.plan().clone();
                    let mut raw = Vec::new();
                    let readings = plan
                        .guardrails
                        .iter()
                        .map(|g| {
                            let canary =
                                (self.scenario.canary)(&g.name, minute).unwrap_or_else(|| {
                                    Reading::value(healthy(&g.name, ArmRole::Canary))
                                });
                            let baseline = Reading::value(healthy(&g.name, ArmRole::Baseline));
                            for (arm, reading, selector) in [
                                (ArmRole::Canary, &canary, &plan.arms.canary.selector),
                                (ArmRole::Baseline, &baseline, &plan.arms.baseline.selector),
                            ] {
                                raw.push(RawQuery {
                                    guardrail: g.name.clone(),
                                    arm,
                                    query: format!("{} /* scoped to {selector} */", g.query),
                                    response: prometheus_response(reading, round),
                                });
                            }
                            GuardrailReading {
                                guardrail: g.name.clone(),
                                canary,
                                baseline,
                            }
                        })
                        .collect();
                    self.raw.insert(round, raw);
                    let input = Input::Observations {
                        at: self.now,
                        round,
                        readings,
                        comparisons: Vec::new(),
                    };
                    self.journal.append(&input).unwrap();
                    self.inputs.push(input.clone());
                    todo.extend(self.engine.apply(&input).unwrap());
                }
                Action::CheckLog {
                    round,
                    guardrails,
                    comparisons,
                } => {
                    self.bundle
                        .append_check(round, &guardrails, &comparisons)
                        .unwrap();
                }
                Action::Snapshot {
                    label,
                    round,
                    guardrails,
                    comparisons,
                } => {
                    let raw = self.raw.get(&round).cloned().unwrap_or_default();
                    self.bundle
                        .write_snapshot(&Snapshot {
                            label: &label,
                            round,
                            guardrails: &guardrails,
                            comparisons: &comparisons,
                            raw: &raw,
                            note: None,
                        })
                        .unwrap();
                }
                Action::StartBurst => {
                    let (total, successful) = self.scenario.burst;
                    let mut log = self.bundle.burst_transcript().unwrap();
                    for i in 0..total {
                        let ok = i < successful;
                        log.append_line(&format!(
                            "{} user={} arm={} status={} ttfv_ms={} events=24",
                            i + 1,
                            i % 5 + 1,
                            if i % 20 == 0 { "canary" } else { "baseline" },
                            if ok { 200 } else { 503 },
                            300 + i
                        ))
                        .unwrap();
                    }
                    self.bundle
                        .write_load_summary(&json!({
                            "total": total,
                            "successful": successful,
                            "users": 5,
                        }))
                        .unwrap();
                    let at = self.now + 60_000;
                    self.queue.push((
                        at,
                        Input::Event {
                            at,
                            event: Event::BurstCompleted { total, successful },
                        },
                    ));
                }
                Action::RunProbes => {
                    // As the controller: the report holds every probe run so far.
                    self.probe_runs
                        .push(json!({"verdict": "clean", "pairs": 20, "leaks": []}));
                    self.bundle
                        .write_probe_report(&json!({ "runs": self.probe_runs }))
                        .unwrap();
                    let at = self.now + 10_000;
                    self.queue.push((
                        at,
                        Input::Event {
                            at,
                            event: Event::ProbesCompleted(ProbeRun {
                                verdict: ProbeVerdict::Clean,
                                pairs: 20,
                                leaks: 0,
                            }),
                        },
                    ));
                }
                _ => {}
            }
        }
    }

    /// Steps the virtual clock until the engine decides or `until_min` passes. Returns whether
    /// the run is decided.
    pub fn run_until(&mut self, until_min: f64) -> bool {
        let horizon = at_min(until_min);
        let mut guard = 0;
        while !self.engine.is_decided() {
            guard += 1;
            assert!(guard < 10_000, "simulation did not end");
            self.queue.sort_by_key(|(t, _)| *t);
            let wake = self.engine.next_wakeup();
            let next_event = self.queue.first().map(|(t, _)| *t);
            let next = match (wake, next_event) {
                (Some(w), Some(e)) => w.min(e),
                (Some(w), None) => w,
                (None, Some(e)) => e,
                (None, None) => break,
            };
            if next > horizon {
                break;
            }
            self.now = next.max(self.now);
            if next_event == Some(next) {
                let (_, input) = self.queue.remove(0);
                self.feed(input);
            } else {
                self.feed(Input::Tick { at: self.now });
            }
        }
        self.engine.is_decided()
    }

    /// Seals the bundle (the run must be decided).
    pub fn seal(self, signer: &Signer, cooldown_override: Option<&str>) -> Sealed {
        let traffic = self.final_traffic.clone().expect("the run is decided");
        let finished = self.now + 500;
        self.bundle
            .seal(
                self.journal,
                &Seal {
                    config_sha256: CONFIG_SHA,
                    finished,
                    traffic: &traffic,
                    cooldown_override,
                    rebuilt: None,
                    signer,
                },
            )
            .unwrap()
    }
}

/// A reading as the Prometheus API would have answered it (keys in sorted order, so the JSON
/// text does not depend on serde_json's `preserve_order`).
pub fn prometheus_response(reading: &Reading, round: Millis) -> serde_json::Value {
    let t = round as f64 / 1000.0;
    match reading {
        Reading::Value { value, .. } => json!({
            "data": {"result": [{"metric": {}, "value": [t, canary_core::verdict::fmt_value(*value)]}], "resultType": "vector"},
            "status": "success",
        }),
        Reading::NoData => json!({
            "data": {"result": [], "resultType": "vector"},
            "status": "success",
        }),
        Reading::Error { message } => json!({"error": message, "status": "error"}),
    }
}

/// Runs `scenario` to its decision and seals the bundle with `signer`.
pub fn run_and_seal(evidence_dir: &Path, scenario: Scenario, signer: &Signer) -> (PathBuf, Sealed) {
    let mut runner = Runner::start(evidence_dir, scenario);
    assert!(runner.run_until(200.0), "the run must decide");
    let sealed = runner.seal(signer, None);
    (sealed.dir.clone(), sealed)
}

/// Every file in `dir` with its bytes, sorted by name.
pub fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Copies a bundle directory (files only) to a fresh directory under `to`.
pub fn copy_bundle(from: &Path, to: &Path) -> PathBuf {
    let dest = to.join(from.file_name().unwrap());
    std::fs::create_dir_all(&dest).unwrap();
    for (name, bytes) in files(from) {
        std::fs::write(dest.join(name), bytes).unwrap();
    }
    dest
}
