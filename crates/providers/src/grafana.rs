//! Grafana: one dashboard per run with the runbook's six panels, canary against baseline, the
//! guardrails' thresholds drawn as lines; annotations for the start, each checkpoint and the
//! decision; and the health and credential checks preflight runs.
//!
//! The dashboard is a typed value ([`Dashboard`]) built from [`PanelSpec`]s that serialises to
//! Grafana's JSON model, so it can be printed (`canary render dashboards`), snapshot-tested and
//! pushed with `POST /api/dashboards/db`. Every panel query is written once, unscoped, and scoped
//! to each arm with the same rewrite the engine uses.

use std::time::Duration;

use canary_core::plan::{Comparator, Guardrail, Plan};
use canary_core::{Millis, Secret};
use canary_promql::analyze;
use canary_promql::rewrite::{self, ArmSelector, RewriteError};
use serde::{Deserialize, Serialize};

/// One panel: a title, a Grafana unit and unscoped queries, each drawn per arm.
#[derive(Debug, Clone, PartialEq)]
pub struct PanelSpec {
    pub title: String,
    /// A Grafana unit id: `ms`, `percent`, `short`, `ops`.
    pub unit: String,
    pub queries: Vec<PanelQuery>,
}

/// One query of a panel; its legend becomes `<arm> <legend>`.
#[derive(Debug, Clone, PartialEq)]
pub struct PanelQuery {
    pub legend: String,
    pub expr: String,
}

fn panel(title: &str, unit: &str, queries: &[(&str, &str)]) -> PanelSpec {
    PanelSpec {
        title: title.into(),
        unit: unit.into(),
        queries: queries
            .iter()
            .map(|(legend, expr)| PanelQuery {
                legend: (*legend).into(),
                expr: (*expr).into(),
            })
            .collect(),
    }
}

/// The runbook's six dashboards ("Real-time dashboards"), by the runbook's names, in its order.
pub const RUNBOOK_DASHBOARDS: [&str; 6] = [
    "TTFV Protection",
    "RLS Enforcement",
    "SSE Health",
    "ANN Performance",
    "Reranker Status",
    "Database Health",
];

/// The runbook's six dashboards as panels titled [`RUNBOOK_DASHBOARDS`], over relay's metric
/// names: TTFV p50/p95, RLS errors with the cross-tenant attempts the security guardrail watches,
/// SSE success, ANN latency p50/p95/p99, reranker skips and the DB pool's utilisation.
pub fn runbook_panels() -> Vec<PanelSpec> {
    let quantiles = |metric: &str, qs: &[(&str, &str)]| -> Vec<PanelQuery> {
        qs.iter()
            .map(|(legend, q)| PanelQuery {
                legend: (*legend).to_owned(),
                expr: format!("histogram_quantile({q}, sum by (le) (rate({metric}_bucket[5m])))"),
            })
            .collect()
    };
    vec![
        PanelSpec {
            title: RUNBOOK_DASHBOARDS[0].into(),
            unit: "ms".into(),
            queries: quantiles("ttfv_ms", &[("p50", "0.5"), ("p95", "0.95")]),
        },
        panel(
            RUNBOOK_DASHBOARDS[1],
            "short",
            &[
                (
                    "RLS errors",
                    "sum(increase(memory_rls_policy_errors_total[5m]))",
                ),
                (
                    "cross-tenant attempts",
                    "sum(increase(memory_cross_tenant_attempts_total[1m]))",
                ),
            ],
        ),
        panel(
            RUNBOOK_DASHBOARDS[2],
            "percent",
            &[(
                "success",
                "100 * sum(rate(sse_complete_total[5m])) / sum(rate(sse_total[5m]))",
            )],
        ),
        PanelSpec {
            title: RUNBOOK_DASHBOARDS[3].into(),
            unit: "ms".into(),
            queries: quantiles(
                "memory_ann_query_latency_ms",
                &[("p50", "0.5"), ("p95", "0.95"), ("p99", "0.99")],
            ),
        },
        panel(
            RUNBOOK_DASHBOARDS[4],
            "ops",
            &[("skips/s", "sum(rate(memory_rerank_skipped_total[5m]))")],
        ),
        panel(
            RUNBOOK_DASHBOARDS[5],
            "percent",
            &[("max", "max(db_connection_pool_utilization)")],
        ),
    ]
}

/// Which Prometheus data source the panels query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datasource {
    /// A `datasource` template variable offering every Prometheus data source (defaulting to the
    /// default one): works on any Grafana.
    Variable,
    /// A data source by UID.
    Uid(String),
}

/// How the dashboard is built.
#[derive(Debug, Clone, PartialEq)]
pub struct DashboardOptions {
    pub datasource: Datasource,
    /// Divide every range window by this (the demo's compressed clock); `None` leaves queries
    /// as written.
    pub time_compression: Option<f64>,
    pub refresh: Duration,
}

impl Default for DashboardOptions {
    fn default() -> Self {
        DashboardOptions {
            datasource: Datasource::Variable,
            time_compression: None,
            refresh: Duration::from_secs(30),
        }
    }
}

/// Why a dashboard could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DashboardError {
    #[error("panel {panel:?}, query {legend:?}: {source}")]
    Query {
        panel: String,
        legend: String,
        #[source]
        source: RewriteError,
    },
    #[error("the {arm} arm's selector: {source}; fix [arms.{arm}] selector in canary.toml")]
    Selector {
        arm: &'static str,
        #[source]
        source: RewriteError,
    },
}

/// A run's dashboard: the `dashboard` object Grafana stores, serialised as Grafana's JSON
/// model. Fields are declared in alphabetical order of their JSON names here and in every part,
/// so the JSON's keys come out sorted, as Grafana exports them.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Dashboard {
    pub annotations: AnnotationList,
    pub description: String,
    pub editable: bool,
    /// `1`: a shared crosshair across panels.
    pub graph_tooltip: u8,
    /// Always `None` (`null`): the dashboard is saved by UID.
    pub id: Option<u64>,
    pub panels: Vec<Panel>,
    /// Auto-refresh interval, e.g. `10s`.
    pub refresh: String,
    pub schema_version: u32,
    pub tags: Vec<String>,
    pub templating: Templating,
    pub time: TimeRange,
    pub timezone: String,
    pub title: String,
    pub uid: String,
    pub version: u64,
}

/// The dashboard's annotation queries: Grafana's built-in one, which shows the annotations
/// canary adds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnnotationList {
    pub list: Vec<AnnotationQuery>,
}

/// One annotation query of a dashboard.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AnnotationQuery {
    pub built_in: u8,
    pub datasource: DatasourceRef,
    pub enable: bool,
    pub hide: bool,
    pub icon_color: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
}

/// A data source by type and UID (`${datasource}` for the template variable).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DatasourceRef {
    #[serde(rename = "type")]
    pub kind: String,
    pub uid: String,
}

/// One time-series panel: its queries drawn per arm, the guardrails' thresholds as lines.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Panel {
    pub datasource: DatasourceRef,
    /// The guardrails it shows, or that none reads its metrics.
    pub description: String,
    pub field_config: FieldConfig,
    pub grid_pos: GridPos,
    /// Unique in the dashboard, from 1.
    pub id: u32,
    pub options: PanelOptions,
    pub targets: Vec<Target>,
    /// The spec's title followed by its guardrails: `TTFV Protection · ttfv_p95 < 1500`.
    pub title: String,
    #[serde(rename = "type")]
    pub kind: String,
}

/// Where a panel sits on Grafana's 24-column grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct GridPos {
    pub h: u32,
    pub w: u32,
    pub x: u32,
    pub y: u32,
}

/// One query of a panel, scoped to one arm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    pub datasource: DatasourceRef,
    pub expr: String,
    pub instant: bool,
    /// `<role> <arm name> <legend>`: `canary main p95`.
    pub legend_format: String,
    pub range: bool,
    pub ref_id: String,
}

/// A panel's field configuration: unit, thresholds, line style, per-arm colours.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldConfig {
    pub defaults: FieldDefaults,
    pub overrides: Vec<FieldOverride>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldDefaults {
    pub custom: FieldStyle,
    pub thresholds: Thresholds,
    /// A Grafana unit id: `ms`, `percent`, ...
    pub unit: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FieldStyle {
    pub draw_style: String,
    pub line_width: u32,
    pub show_points: String,
    pub span_nulls: bool,
    pub thresholds_style: ThresholdsStyle,
}

/// `line` when the panel shows a guardrail's threshold, `off` otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ThresholdsStyle {
    pub mode: String,
}

/// Threshold steps whose boundaries are the guardrails' thresholds: red on the breaching side.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Thresholds {
    pub mode: String,
    pub steps: Vec<ThresholdStep>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ThresholdStep {
    pub color: String,
    /// `None` (`null`) for the base step, below every bound.
    pub value: Option<f64>,
}

/// A colour for the series of one arm, matched by legend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldOverride {
    pub matcher: OverrideMatcher,
    pub properties: Vec<OverrideProperty>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OverrideMatcher {
    pub id: String,
    pub options: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OverrideProperty {
    pub id: String,
    pub value: FixedColour,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FixedColour {
    pub fixed_color: String,
    pub mode: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PanelOptions {
    pub legend: Legend,
    pub tooltip: Tooltip,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Legend {
    pub calcs: Vec<String>,
    pub display_mode: String,
    pub placement: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tooltip {
    pub mode: String,
    pub sort: String,
}

/// The dashboard's template variables: the `datasource` variable, or none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Templating {
    pub list: Vec<TemplateVariable>,
}

/// A data-source variable offering every data source of one type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TemplateVariable {
    /// Empty: Grafana picks the default data source.
    pub current: Current,
    pub hide: u8,
    pub label: String,
    pub name: String,
    /// Empty: Grafana lists the data sources itself.
    pub options: Vec<String>,
    /// The data source type offered: `prometheus`.
    pub query: String,
    /// `1`: refresh on dashboard load.
    pub refresh: u8,
    #[serde(rename = "type")]
    pub kind: String,
}

/// A variable's current value; empty (`{}`) leaves the choice to Grafana.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Current {}

/// The dashboard's default time range, e.g. `now-1h5m` to `now`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TimeRange {
    pub from: String,
    pub to: String,
}

impl Dashboard {
    /// The panels' titles, in order.
    pub fn panel_titles(&self) -> impl Iterator<Item = &str> {
        self.panels.iter().map(|p| p.title.as_str())
    }
}

/// The dashboard's UID for a run: `canary-<run id>`, reduced to Grafana's UID alphabet and
/// 40 characters.
pub fn dashboard_uid(run_id: &str) -> String {
    let cleaned: String = run_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let mut uid = format!("canary-{cleaned}");
    uid.truncate(40);
    uid
}

/// The Grafana schema version the generated model follows (Grafana 10).
pub const SCHEMA_VERSION: u32 = 39;

impl Dashboard {
    /// The run's dashboard: one time-series panel per spec, two columns, each query drawn for
    /// the canary and the baseline, with the thresholds of every guardrail that reads one of the
    /// panel's metrics drawn as lines.
    pub fn build(
        plan: &Plan,
        run_id: &str,
        panels: &[PanelSpec],
        options: &DashboardOptions,
    ) -> Result<Dashboard, DashboardError> {
        let canary = ArmSelector::parse(&plan.arms.canary.selector).map_err(|source| {
            DashboardError::Selector {
                arm: "canary",
                source,
            }
        })?;
        let baseline = ArmSelector::parse(&plan.arms.baseline.selector).map_err(|source| {
            DashboardError::Selector {
                arm: "baseline",
                source,
            }
        })?;
        let datasource = DatasourceRef {
            kind: "prometheus".into(),
            uid: match &options.datasource {
                Datasource::Variable => "${datasource}".into(),
                Datasource::Uid(uid) => uid.clone(),
            },
        };
        let mut out = Vec::with_capacity(panels.len());
        for (i, spec) in panels.iter().enumerate() {
            let mut targets = Vec::new();
            let mut metrics = Vec::new();
            for (arm_name, role, selector) in [
                (&plan.arms.canary.name, "canary", &canary),
                (&plan.arms.baseline.name, "baseline", &baseline),
            ] {
                for q in &spec.queries {
                    let err = |source| DashboardError::Query {
                        panel: spec.title.clone(),
                        legend: q.legend.clone(),
                        source,
                    };
                    let clock = options.time_compression.unwrap_or(1.0);
                    let expr = rewrite::scope_on_clock(&q.expr, selector, clock).map_err(err)?;
                    for m in analyze::metric_names(&expr) {
                        if !metrics.contains(&m) {
                            metrics.push(m);
                        }
                    }
                    targets.push(Target {
                        datasource: datasource.clone(),
                        expr: expr.to_string(),
                        instant: false,
                        legend_format: format!("{role} {arm_name} {}", q.legend),
                        range: true,
                        ref_id: ref_id(targets.len()),
                    });
                }
            }
            let guardrails: Vec<&Guardrail> = plan
                .guardrails
                .iter()
                .filter(|g| {
                    rewrite::parse(&g.query)
                        .map(|e| {
                            analyze::metric_names(&e)
                                .iter()
                                .any(|m| metrics.contains(m))
                        })
                        .unwrap_or(false)
                })
                .collect();
            let threshold_style = if guardrails.is_empty() { "off" } else { "line" };
            let column = u32::try_from(i % 2).unwrap_or(0);
            let row = u32::try_from(i / 2).unwrap_or(u32::MAX / 8);
            out.push(Panel {
                datasource: datasource.clone(),
                description: describe(&guardrails),
                field_config: FieldConfig {
                    defaults: FieldDefaults {
                        custom: FieldStyle {
                            draw_style: "line".into(),
                            line_width: 2,
                            show_points: "never".into(),
                            span_nulls: false,
                            thresholds_style: ThresholdsStyle {
                                mode: threshold_style.into(),
                            },
                        },
                        thresholds: thresholds(&guardrails),
                        unit: spec.unit.clone(),
                    },
                    overrides: vec![
                        arm_colour("canary", "orange"),
                        arm_colour("baseline", "blue"),
                    ],
                },
                grid_pos: GridPos {
                    h: 8,
                    w: 12,
                    x: column * 12,
                    y: row * 8,
                },
                id: u32::try_from(i + 1).unwrap_or(u32::MAX),
                options: PanelOptions {
                    legend: Legend {
                        calcs: vec!["lastNotNull".into(), "max".into()],
                        display_mode: "table".into(),
                        placement: "bottom".into(),
                    },
                    tooltip: Tooltip {
                        mode: "multi".into(),
                        sort: "none".into(),
                    },
                },
                targets,
                title: titled(&spec.title, &guardrails),
                kind: "timeseries".into(),
            });
        }
        let uid = dashboard_uid(run_id);
        let title = format!(
            "canary {} {run_id}: {} vs {}",
            plan.service, plan.arms.canary.name, plan.arms.baseline.name
        );
        let window = plan.window();
        let templating = Templating {
            list: match options.datasource {
                Datasource::Variable => vec![TemplateVariable {
                    current: Current {},
                    hide: 0,
                    label: "Prometheus".into(),
                    name: "datasource".into(),
                    options: Vec::new(),
                    query: "prometheus".into(),
                    refresh: 1,
                    kind: "datasource".into(),
                }],
                Datasource::Uid(_) => Vec::new(),
            },
        };
        Ok(Dashboard {
            annotations: AnnotationList {
                list: vec![AnnotationQuery {
                    built_in: 1,
                    datasource: DatasourceRef {
                        kind: "grafana".into(),
                        uid: "-- Grafana --".into(),
                    },
                    enable: true,
                    hide: true,
                    icon_color: "rgba(0, 211, 255, 1)".into(),
                    name: "Annotations & Alerts".into(),
                    kind: "dashboard".into(),
                }],
            },
            description: format!(
                "canary run {run_id} of {}: guardrails on the canary arm, baseline for comparison",
                plan.service
            ),
            editable: true,
            graph_tooltip: 1,
            id: None,
            panels: out,
            refresh: canary_core::duration::format(options.refresh),
            schema_version: SCHEMA_VERSION,
            tags: vec![
                "canary".into(),
                plan.service.clone(),
                format!("canary-run:{run_id}"),
            ],
            templating,
            time: TimeRange {
                from: format!(
                    "now-{}",
                    canary_core::duration::format(window + window / 12)
                ),
                to: "now".into(),
            },
            timezone: "utc".into(),
            title,
            uid,
            version: 0,
        })
    }
}

fn ref_id(i: usize) -> String {
    let letters = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut s = String::new();
    let mut n = i;
    loop {
        s.insert(0, char::from(letters[n % 26]));
        if n < 26 {
            break;
        }
        n = n / 26 - 1;
    }
    s
}

fn arm_colour(role: &str, colour: &str) -> FieldOverride {
    FieldOverride {
        matcher: OverrideMatcher {
            id: "byRegexp".into(),
            options: format!("^{role} .*"),
        },
        properties: vec![OverrideProperty {
            id: "color".into(),
            value: FixedColour {
                fixed_color: colour.into(),
                mode: "fixed".into(),
            },
        }],
    }
}

/// The panel title followed by the guardrails it shows: `TTFV Protection · ttfv_p95 < 1500`.
fn titled(title: &str, guardrails: &[&Guardrail]) -> String {
    if guardrails.is_empty() {
        return title.to_owned();
    }
    let rules: Vec<String> = guardrails
        .iter()
        .map(|g| format!("{} {}", g.name, g.must))
        .collect();
    format!("{title} · {}", rules.join(", "))
}

fn describe(guardrails: &[&Guardrail]) -> String {
    if guardrails.is_empty() {
        return "No guardrail reads these metrics; shown for context.".into();
    }
    let parts: Vec<String> = guardrails
        .iter()
        .map(|g| format!("{} must be {} ({})", g.name, g.must, g.on_breach.as_str()))
        .collect();
    format!("Guardrails: {}.", parts.join("; "))
}

/// Threshold steps whose boundaries are the guardrails' thresholds: red on the breaching side.
fn thresholds(guardrails: &[&Guardrail]) -> Thresholds {
    let mut bounds: Vec<(f64, Comparator)> = guardrails
        .iter()
        .map(|g| (g.must.value, g.must.op))
        .filter(|(v, _)| v.is_finite())
        .collect();
    bounds.sort_by(|a, b| a.0.total_cmp(&b.0));
    bounds.dedup_by(|a, b| a.0 == b.0);
    // Below the lowest bound: breaching only for a guardrail that must stay above it.
    let base = match bounds.first() {
        Some((_, Comparator::Gt | Comparator::Ge)) => "red",
        _ => "green",
    };
    let mut steps = vec![ThresholdStep {
        color: base.into(),
        value: None,
    }];
    for (value, op) in bounds {
        let colour = match op {
            Comparator::Gt | Comparator::Ge => "green",
            _ => "red",
        };
        steps.push(ThresholdStep {
            color: colour.into(),
            value: Some(value),
        });
    }
    Thresholds {
        mode: "absolute".into(),
        steps,
    }
}

/// Where and how to reach Grafana.
#[derive(Debug, Clone)]
pub struct GrafanaConfig {
    pub url: String,
    /// A service-account token (Editor, to create dashboards and annotations).
    pub token: Secret,
    /// Folder UID for the dashboards; `None` puts them in General.
    pub folder_uid: Option<String>,
    pub timeout: Duration,
}

/// Why a Grafana call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GrafanaError {
    #[error("Grafana at {url} is unreachable: {detail}; check GRAFANA_URL and that Grafana runs")]
    Unreachable { url: String, detail: String },
    #[error("Grafana at {url} refused the token (HTTP 401): check GRAFANA_TOKEN")]
    Unauthorized { url: String },
    #[error(
        "Grafana at {url} does not allow this token to {action} (HTTP 403): give its service account the Editor role"
    )]
    Forbidden { url: String, action: &'static str },
    #[error("Grafana at {url} is unhealthy: its database reports {database:?}")]
    Unhealthy { url: String, database: String },
    #[error("Grafana at {url} rejected {action} (HTTP {status}): {message}")]
    Rejected {
        url: String,
        action: &'static str,
        status: u16,
        message: String,
    },
    #[error("Grafana at {url} answered {action} with something unexpected: {detail}")]
    Protocol {
        url: String,
        action: &'static str,
        detail: String,
    },
}

/// `GET /api/health`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct GrafanaHealth {
    pub database: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub commit: String,
}

/// The organisation the token belongs to (`GET /api/org`): proof the token works.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct GrafanaOrg {
    pub id: u64,
    pub name: String,
}

/// A pushed dashboard, as recorded in `CANARY_DASHBOARDS_<ts>.txt`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushedDashboard {
    pub id: u64,
    pub uid: String,
    /// Absolute URL of the dashboard.
    pub url: String,
    pub version: u64,
}

/// A point (or span) on the run's dashboard.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Annotation {
    #[serde(rename = "dashboardUID")]
    pub dashboard_uid: String,
    /// Milliseconds since the Unix epoch.
    pub time: Millis,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_end: Option<Millis>,
    pub tags: Vec<String>,
    pub text: String,
}

/// What an annotation marks on the run's dashboard; its tag tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AnnotationKind {
    /// The run started: the first split applied.
    Start,
    /// A checkpoint's snapshot was taken.
    Checkpoint,
    /// The verdict.
    Decision,
}

impl AnnotationKind {
    /// The annotation's tag: `start`, `checkpoint`, `decision`.
    pub fn tag(self) -> &'static str {
        match self {
            AnnotationKind::Start => "start",
            AnnotationKind::Checkpoint => "checkpoint",
            AnnotationKind::Decision => "decision",
        }
    }
}

impl std::fmt::Display for AnnotationKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.tag())
    }
}

impl Annotation {
    /// An annotation of the run's dashboard tagged `canary`, `canary-run:<id>` and the kind's
    /// [`AnnotationKind::tag`].
    pub fn for_run(
        run_id: &str,
        kind: AnnotationKind,
        time: Millis,
        text: impl Into<String>,
    ) -> Self {
        Annotation {
            dashboard_uid: dashboard_uid(run_id),
            time,
            time_end: None,
            tags: vec![
                "canary".into(),
                format!("canary-run:{run_id}"),
                kind.tag().to_owned(),
            ],
            text: text.into(),
        }
    }
}

/// One hit of `GET /api/search`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct SearchHit {
    pub uid: String,
    pub title: String,
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// A client for Grafana's HTTP API.
#[derive(Debug, Clone)]
pub struct GrafanaClient {
    base: String,
    token: Secret,
    folder_uid: Option<String>,
    http: reqwest::Client,
}

impl GrafanaClient {
    pub fn new(cfg: GrafanaConfig) -> Result<Self, GrafanaError> {
        let base = cfg.url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(GrafanaError::Unreachable {
                url: cfg.url,
                detail: "the URL must start with http:// or https://".into(),
            });
        }
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .build()
            .map_err(|e| GrafanaError::Unreachable {
                url: base.clone(),
                detail: e.to_string(),
            })?;
        Ok(GrafanaClient {
            base,
            token: cfg.token,
            folder_uid: cfg.folder_uid,
            http,
        })
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    /// `GET /api/health`: Grafana answers and its database is `ok`.
    pub async fn health(&self) -> Result<GrafanaHealth, GrafanaError> {
        let health: GrafanaHealth = self
            .call("check health", self.http.get(self.endpoint("/api/health")))
            .await?;
        if health.database != "ok" {
            return Err(GrafanaError::Unhealthy {
                url: self.base.clone(),
                database: health.database,
            });
        }
        Ok(health)
    }

    /// `GET /api/org` with the token: the token is valid and names an organisation.
    pub async fn check_auth(&self) -> Result<GrafanaOrg, GrafanaError> {
        self.call(
            "read its organisation",
            self.authed(self.http.get(self.endpoint("/api/org"))),
        )
        .await
    }

    /// `POST /api/dashboards/db` with `overwrite: true` into the configured folder: creates or
    /// replaces the run's dashboard; returns its UID and absolute URL.
    pub async fn push_dashboard(
        &self,
        dashboard: &Dashboard,
        message: &str,
    ) -> Result<PushedDashboard, GrafanaError> {
        #[derive(Deserialize)]
        struct Saved {
            id: u64,
            uid: String,
            url: String,
            #[serde(default)]
            version: u64,
        }
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Save<'a> {
            dashboard: &'a Dashboard,
            #[serde(skip_serializing_if = "Option::is_none")]
            folder_uid: Option<&'a str>,
            message: &'a str,
            overwrite: bool,
        }
        let body = Save {
            dashboard,
            folder_uid: self.folder_uid.as_deref(),
            message,
            overwrite: true,
        };
        let saved: Saved = self
            .call(
                "save the dashboard",
                self.authed(
                    self.http
                        .post(self.endpoint("/api/dashboards/db"))
                        .json(&body),
                ),
            )
            .await?;
        let url = if saved.url.starts_with("http://") || saved.url.starts_with("https://") {
            saved.url
        } else {
            format!("{}{}", self.base, saved.url)
        };
        Ok(PushedDashboard {
            id: saved.id,
            uid: saved.uid,
            url,
            version: saved.version,
        })
    }

    /// `POST /api/annotations`: returns the annotation's id.
    pub async fn annotate(&self, annotation: &Annotation) -> Result<u64, GrafanaError> {
        #[derive(Deserialize)]
        struct Added {
            id: u64,
        }
        let added: Added = self
            .call(
                "add an annotation",
                self.authed(
                    self.http
                        .post(self.endpoint("/api/annotations"))
                        .json(annotation),
                ),
            )
            .await?;
        Ok(added.id)
    }

    /// `GET /api/search?type=dash-db&query=…&tag=…`: dashboards by title text and tag.
    pub async fn search(
        &self,
        query: &str,
        tag: Option<&str>,
    ) -> Result<Vec<SearchHit>, GrafanaError> {
        let mut params = vec![("type", "dash-db"), ("query", query)];
        if let Some(tag) = tag {
            params.push(("tag", tag));
        }
        self.call(
            "search dashboards",
            self.authed(self.http.get(self.endpoint("/api/search")).query(&params)),
        )
        .await
    }

    fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn authed(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        req.bearer_auth(self.token.expose())
    }

    async fn call<T: for<'de> Deserialize<'de>>(
        &self,
        action: &'static str,
        req: reqwest::RequestBuilder,
    ) -> Result<T, GrafanaError> {
        let resp = req.send().await.map_err(|e| GrafanaError::Unreachable {
            url: self.base.clone(),
            detail: e.without_url().to_string(),
        })?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map_err(|e| GrafanaError::Unreachable {
            url: self.base.clone(),
            detail: e.without_url().to_string(),
        })?;
        match status {
            200..=299 => serde_json::from_slice(&body).map_err(|e| GrafanaError::Protocol {
                url: self.base.clone(),
                action,
                detail: format!(
                    "{e}: {}",
                    String::from_utf8_lossy(&body[..body.len().min(200)])
                ),
            }),
            401 => Err(GrafanaError::Unauthorized {
                url: self.base.clone(),
            }),
            403 => Err(GrafanaError::Forbidden {
                url: self.base.clone(),
                action,
            }),
            _ => {
                #[derive(Deserialize)]
                struct Message {
                    message: String,
                }
                let message = serde_json::from_slice::<Message>(&body)
                    .map(|m| m.message)
                    .unwrap_or_else(|_| {
                        String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned()
                    });
                Err(GrafanaError::Rejected {
                    url: self.base.clone(),
                    action,
                    status,
                    message,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ref_ids_continue_past_z() {
        assert_eq!(ref_id(0), "A");
        assert_eq!(ref_id(25), "Z");
        assert_eq!(ref_id(26), "AA");
        assert_eq!(ref_id(27), "AB");
    }

    #[test]
    fn uids_fit_grafana() {
        let uid = dashboard_uid("2025-10-19T12:00:00Z/with spaces and a very long tail");
        assert!(uid.len() <= 40);
        assert!(
            uid.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
    }
}
