//! The running controller's local API: status for `canary status` and the live page, operator
//! commands (`canary abort`, `canary approve`), and the Alertmanager webhook. [`RunStatus`] is
//! the one shape of that status, from the controller to the terminal, the API and its clients.
//!
//! The server binds to loopback by default. There, reads (`GET /`, `GET /api/status`) need no
//! credential: they carry no secret and only this machine reaches them. Bound to any other
//! address, reads need the run's operator token too (a bearer token, or the cookie the live page
//! sets when opened as `/?token=TOKEN`). Writes always need the operator token, which only the
//! controller and the owner of the state directory (mode 600 file) know. The Alertmanager
//! webhook takes its own token (or, without one, the operator token), so Alertmanager's
//! credential cannot abort, approve or read.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::{Json, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use canary_core::engine::Severity;
use canary_core::{OnBreach, Secret};
use canary_providers::alertmanager::parse_webhook;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

/// What the API asks the runtime to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Abort {
        by: String,
        reason: String,
    },
    Approve {
        by: String,
    },
    /// An alert labelled with this run that Alertmanager reports firing, with its guardrail
    /// and action labels: the engine applies that guardrail's `on_breach` from the plan.
    Alert {
        alert: String,
        security: bool,
        guardrail: Option<String>,
        action: Option<OnBreach>,
    },
}

/// A running canary as people see it: phase, time, split, each guardrail against its
/// threshold, the verdict once made, the latest notifications. The controller publishes it,
/// the terminal draws it, `GET /api/status` serves it as JSON (the live page reads that) and
/// `canary status` reads it back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunStatus {
    pub run_id: String,
    pub service: String,
    /// `starting` until the controller runs the engine, then the engine's phase: `ready`,
    /// `running`, `awaiting-approval`, `decided`.
    pub phase: String,
    pub elapsed_ms: i64,
    pub window_ms: i64,
    /// The canary's share of traffic, as last verified on the load balancer.
    pub canary_weight: u8,
    /// Evaluation intervals elapsed: the live page adds a point per guardrail when it changes.
    pub round: i64,
    /// `PROMOTE`, `ROLLBACK`, `INCONCLUSIVE` or `PROMOTION_FAILED`, once decided.
    pub verdict: Option<String>,
    /// The decision's reasons, one line each, once decided.
    pub reasons: Option<Vec<String>>,
    pub guardrails: Vec<GuardrailStatus>,
    /// Each comparison with the baseline so far (absent without comparisons).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub comparisons: Vec<ComparisonStatus>,
    /// The comparisons' score so far: `100 (pass)`, `62.5 (fail)`, `none (nothing judged)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<String>,
    /// The latest notifications, oldest first.
    pub events: Vec<RecentEvent>,
    /// The evidence bundle's directory.
    pub bundle: String,
}

impl RunStatus {
    /// Before the controller has run the engine: only who it is.
    pub fn starting(run_id: &str, service: &str) -> RunStatus {
        RunStatus {
            run_id: run_id.to_owned(),
            service: service.to_owned(),
            phase: "starting".to_owned(),
            elapsed_ms: 0,
            window_ms: 0,
            canary_weight: 0,
            round: 0,
            verdict: None,
            reasons: None,
            guardrails: Vec::new(),
            comparisons: Vec::new(),
            score: None,
            events: Vec::new(),
            bundle: String::new(),
        }
    }
}

/// One comparison in a [`RunStatus`], as people read it
/// ([`canary_core::comparisons::describe`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComparisonStatus {
    pub name: String,
    pub group: String,
    /// `PASS`, `HIGH`, `LOW`, `NO DATA` or `NO DATA (required)`.
    pub status: String,
    /// The canary against the baseline at the median look (`×1.31`, `+312`), or `-`.
    #[serde(default)]
    pub typical: String,
    pub estimate: String,
    pub interval: String,
    pub evidence: String,
    pub samples: String,
    pub critical: bool,
}

impl ComparisonStatus {
    pub fn of(j: &canary_core::judge::Judgement) -> ComparisonStatus {
        let d = canary_core::comparisons::describe(j);
        ComparisonStatus {
            name: j.name.clone(),
            group: j.group.clone(),
            status: d.status.to_owned(),
            typical: d.typical,
            estimate: d.estimate,
            interval: d.interval,
            evidence: d.evidence,
            samples: d.samples,
            critical: j.critical,
        }
    }
}

/// A score as [`RunStatus::score`] shows it.
pub fn score_text(score: &canary_core::judge::Score) -> String {
    use canary_core::judge::ScoreVerdict;
    let verdict = match score.verdict {
        ScoreVerdict::Pass => "pass",
        ScoreVerdict::Marginal => "marginal",
        ScoreVerdict::Fail => "fail",
    };
    match score.score {
        Some(v) => format!("{} ({verdict})", canary_core::verdict::fmt_value(v)),
        None => format!("none: nothing judged yet ({verdict})"),
    }
}

/// One guardrail in a [`RunStatus`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuardrailStatus {
    pub name: String,
    /// `PASS`, `FAIL`, `NO DATA`, `ERROR` or `NOT EVALUATED`.
    pub status: String,
    /// The last canary value, when it was a finite number.
    pub canary: Option<f64>,
    /// The last baseline value, when it was a finite number.
    pub baseline: Option<f64>,
    /// The threshold as written, e.g. `< 1500`.
    pub must: String,
    /// The threshold's value, for the live page's threshold line.
    pub threshold: f64,
    pub on_breach: OnBreach,
}

/// A recent notification in a [`RunStatus`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecentEvent {
    /// Since the run started.
    pub elapsed_ms: i64,
    pub severity: Severity,
    pub message: String,
}

/// Where a running controller can be reached: written to the state directory for the CLI.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ControlFile {
    pub run_id: String,
    pub service: String,
    pub url: String,
    /// The operator token (the file is mode 600).
    pub token: String,
    pub pid: u32,
}

impl ControlFile {
    /// `<state_dir>/active/<service>.json`.
    pub fn path(state_dir: &Path, service: &str) -> PathBuf {
        state_dir.join("active").join(format!("{service}.json"))
    }

    /// Writes the file readable by its owner only.
    pub fn write(&self, state_dir: &Path) -> anyhow::Result<PathBuf> {
        let path = Self::path(state_dir, &self.service);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let text = serde_json::to_vec_pretty(self)?;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts
            .open(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        std::io::Write::write_all(&mut f, &text)?;
        Ok(path)
    }

    pub fn read(state_dir: &Path, service: &str) -> anyhow::Result<ControlFile> {
        let path = Self::path(state_dir, service);
        let text = std::fs::read(&path).with_context(|| {
            format!(
                "no running canary of {service} found ({} does not exist): is `canary run` running with this state_dir?",
                path.display()
            )
        })?;
        serde_json::from_slice(&text)
            .with_context(|| format!("{} is not a control file", path.display()))
    }
}

#[derive(Clone)]
struct AppState {
    commands: mpsc::Sender<Command>,
    status: watch::Receiver<RunStatus>,
    operator_token: Arc<Secret>,
    alert_token: Option<Arc<Secret>>,
    run_id: Arc<str>,
    /// Bound to loopback: reads need no token.
    open_reads: bool,
}

/// A running control API.
pub struct ControlServer {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl ControlServer {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the API on `listen`. Commands arrive on `commands`; `status` is what reads return.
pub async fn start(
    listen: SocketAddr,
    run_id: &str,
    operator_token: Secret,
    alert_token: Option<Secret>,
    commands: mpsc::Sender<Command>,
    status: watch::Receiver<RunStatus>,
) -> anyhow::Result<ControlServer> {
    let state = AppState {
        commands,
        status,
        operator_token: Arc::new(operator_token),
        alert_token: alert_token.map(Arc::new),
        run_id: Arc::from(run_id),
        open_reads: listen.ip().is_loopback(),
    };
    let app = Router::new()
        .route("/", get(live_page))
        .route("/api/status", get(status_handler))
        .route("/api/abort", post(abort))
        .route("/api/approve", post(approve))
        .route("/api/alertmanager", post(alertmanager))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} for the control API"))?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "control API stopped");
        }
    });
    Ok(ControlServer { addr, task })
}

/// The cookie the live page's own requests carry the operator token in.
const TOKEN_COOKIE: &str = "canary_token";

/// Whether a read may proceed: on loopback always, elsewhere with the operator token as a bearer
/// token or the live page's cookie.
fn may_read(s: &AppState, headers: &HeaderMap) -> bool {
    if s.open_reads || authorised(headers, &s.operator_token) {
        return true;
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().strip_prefix(TOKEN_COOKIE)?.strip_prefix('='))
        .any(|given| constant_time_eq(given.as_bytes(), s.operator_token.expose().as_bytes()))
}

/// A read without the operator token on a non-loopback address.
fn unauthorised_read() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "this controller listens beyond loopback, so reads need the run's operator token (the `token` in <state_dir>/active/<service>.json on the controller's machine): send it as a bearer token, or open /?token=TOKEN in a browser\n",
    )
        .into_response()
}

fn authorised(headers: &HeaderMap, token: &Secret) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(given) = value.strip_prefix("Bearer ") else {
        return false;
    };
    constant_time_eq(given.as_bytes(), token.expose().as_bytes())
}

/// Compares without leaking, through timing, how much of the token matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn unauthorised() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "a bearer token is required: use `canary abort` / `canary approve` on this machine\n",
    )
        .into_response()
}

async fn status_handler(State(s): State<AppState>, headers: HeaderMap) -> Response {
    if !may_read(&s, &headers) {
        return unauthorised_read();
    }
    let status = s.status.borrow().clone();
    Json(status).into_response()
}

#[derive(Deserialize)]
struct AbortBody {
    by: String,
    reason: String,
}

async fn abort(
    State(s): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<AbortBody>,
) -> Response {
    let command = Command::Abort {
        by: body.by,
        reason: body.reason,
    };
    operator_command(&s, &headers, command, "abort accepted: rolling back\n").await
}

#[derive(Deserialize)]
struct ApproveBody {
    by: String,
}

async fn approve(
    State(s): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<ApproveBody>,
) -> Response {
    let command = Command::Approve { by: body.by };
    operator_command(&s, &headers, command, "approval recorded\n").await
}

/// Hands an operator's command to the controller: 202 with `accepted`, 401 without the operator
/// token, 410 once the run has finished.
async fn operator_command(
    s: &AppState,
    headers: &HeaderMap,
    command: Command,
    accepted: &'static str,
) -> Response {
    if !authorised(headers, &s.operator_token) {
        return unauthorised();
    }
    match s.commands.send(command).await {
        Ok(()) => (StatusCode::ACCEPTED, accepted).into_response(),
        Err(_) => (StatusCode::GONE, "the run has finished\n").into_response(),
    }
}

/// Alertmanager's webhook (payload version 4, parsed by canary-providers): every firing alert
/// labelled `canary_run=<this run>` goes to the engine with its `guardrail` and `action`
/// labels, where it acts as that guardrail's own `on_breach` from the plan (a rollback
/// guardrail's alert rolls back, a promotion gate's fails the gate at the decision, a warn's
/// notifies); an alert naming no guardrail of the plan rolls back.
async fn alertmanager(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    match &s.alert_token {
        Some(token) if !authorised(&headers, token) => return unauthorised(),
        None if !authorised(&headers, &s.operator_token) => return unauthorised(),
        _ => {}
    }
    let alerts = match parse_webhook(&body) {
        Ok(alerts) => alerts,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    let mut accepted = 0;
    for alert in alerts {
        if !alert.fires_for(&s.run_id) {
            continue;
        }
        let command = Command::Alert {
            alert: alert.alertname.clone(),
            security: alert.is_security(),
            guardrail: alert.guardrail().map(str::to_owned),
            action: alert.action(),
        };
        if s.commands.send(command).await.is_ok() {
            accepted += 1;
        }
    }
    (
        StatusCode::OK,
        format!("{accepted} firing alert(s) for this run\n"),
    )
        .into_response()
}

/// The live page. Beyond loopback, `/?token=TOKEN` with the operator token sets the cookie its
/// requests carry from then on and sends the browser back to `/`, out of the address bar.
async fn live_page(State(s): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    if may_read(&s, &headers) {
        return Html(include_str!("live.html")).into_response();
    }
    let given = uri
        .query()
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix("token="));
    match given {
        Some(token) if constant_time_eq(token.as_bytes(), s.operator_token.expose().as_bytes()) => {
            let cookie = format!("{TOKEN_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/");
            (
                StatusCode::SEE_OTHER,
                [
                    (header::LOCATION, "/".to_owned()),
                    (header::SET_COOKIE, cookie),
                ],
            )
                .into_response()
        }
        _ => unauthorised_read(),
    }
}

/// A client of a running controller (`canary status|abort|approve`).
pub struct ControlClient {
    file: ControlFile,
    http: reqwest::Client,
}

impl ControlClient {
    pub fn new(file: ControlFile) -> Self {
        ControlClient {
            file,
            http: reqwest::Client::new(),
        }
    }

    pub fn run_id(&self) -> &str {
        &self.file.run_id
    }

    pub async fn status(&self) -> anyhow::Result<RunStatus> {
        let resp = self
            .http
            .get(format!("{}/api/status", self.file.url))
            .bearer_auth(&self.file.token)
            .send()
            .await
            .with_context(|| {
                format!(
                    "the controller of run {} does not answer at {}",
                    self.file.run_id, self.file.url
                )
            })?;
        resp.error_for_status()?.json().await.with_context(|| {
            format!(
                "the controller of run {} sent no run status",
                self.file.run_id
            )
        })
    }

    async fn post(&self, path: &str, body: serde_json::Value) -> anyhow::Result<String> {
        let resp = self
            .http
            .post(format!("{}{path}", self.file.url))
            .bearer_auth(&self.file.token)
            .json(&body)
            .send()
            .await
            .with_context(|| {
                format!(
                    "the controller of run {} does not answer at {}",
                    self.file.run_id, self.file.url
                )
            })?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            anyhow::bail!("the controller refused ({status}): {}", text.trim());
        }
        Ok(text)
    }

    pub async fn abort(&self, by: &str, reason: &str) -> anyhow::Result<String> {
        self.post(
            "/api/abort",
            serde_json::json!({"by": by, "reason": reason}),
        )
        .await
    }

    pub async fn approve(&self, by: &str) -> anyhow::Result<String> {
        self.post("/api/approve", serde_json::json!({"by": by}))
            .await
    }
}

/// `user@host` of whoever runs this command, for the evidence.
pub fn operator() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!("{user}@{}", host())
}

/// This machine's name in run history and run locks: `CANARY_HOST` when set (containers and CI
/// runners, whose hostnames are random), else the hostname.
pub fn host() -> String {
    std::env::var("CANARY_HOST")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// A run at T+5m12s, one guardrail breaching, decided.
    fn decided() -> RunStatus {
        RunStatus {
            run_id: "relay-20261202T120000Z".to_owned(),
            service: "relay".to_owned(),
            phase: "decided".to_owned(),
            elapsed_ms: 312_000,
            window_ms: 3_600_000,
            canary_weight: 0,
            round: 10,
            verdict: Some("ROLLBACK".to_owned()),
            reasons: Some(vec!["ttfv_p95 breached".to_owned()]),
            guardrails: vec![GuardrailStatus {
                name: "ttfv_p95".to_owned(),
                status: "FAIL".to_owned(),
                canary: Some(1812.5),
                baseline: None,
                must: "< 1500".to_owned(),
                threshold: 1500.0,
                on_breach: OnBreach::Rollback,
            }],
            comparisons: vec![ComparisonStatus {
                name: "ttfv_vs_baseline".to_owned(),
                group: "latency".to_owned(),
                status: "HIGH".to_owned(),
                typical: "×1.42".to_owned(),
                estimate: "91 % of looks above".to_owned(),
                interval: "[49 %, 100 %]".to_owned(),
                evidence: "e 30.9 (fails at 20)".to_owned(),
                samples: "11 / 11 looks".to_owned(),
                critical: true,
            }],
            score: Some("0 (fail)".to_owned()),
            events: vec![RecentEvent {
                elapsed_ms: 300_000,
                severity: Severity::Critical,
                message: "ROLLBACK".to_owned(),
            }],
            bundle: "/evidence/relay-20261202T120000Z".to_owned(),
        }
    }

    #[test]
    fn the_status_json_is_what_the_live_page_and_canary_status_read() {
        let status = decided();
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "run_id": "relay-20261202T120000Z",
                "service": "relay",
                "phase": "decided",
                "elapsed_ms": 312_000,
                "window_ms": 3_600_000,
                "canary_weight": 0,
                "round": 10,
                "verdict": "ROLLBACK",
                "reasons": ["ttfv_p95 breached"],
                "guardrails": [{
                    "name": "ttfv_p95",
                    "status": "FAIL",
                    "canary": 1812.5,
                    "baseline": null,
                    "must": "< 1500",
                    "threshold": 1500.0,
                    "on_breach": "rollback",
                }],
                "comparisons": [{
                    "name": "ttfv_vs_baseline",
                    "group": "latency",
                    "status": "HIGH",
                    "typical": "×1.42",
                    "estimate": "91 % of looks above",
                    "interval": "[49 %, 100 %]",
                    "evidence": "e 30.9 (fails at 20)",
                    "samples": "11 / 11 looks",
                    "critical": true,
                }],
                "score": "0 (fail)",
                "events": [{"elapsed_ms": 300_000, "severity": "critical", "message": "ROLLBACK"}],
                "bundle": "/evidence/relay-20261202T120000Z",
            })
        );
        assert_eq!(serde_json::from_value::<RunStatus>(json).unwrap(), status);
    }

    #[test]
    fn a_starting_run_says_who_it_is_and_reads_back() {
        let status = RunStatus::starting("relay-1", "relay");
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["run_id"], "relay-1");
        assert_eq!(json["service"], "relay");
        assert_eq!(json["phase"], "starting");
        assert_eq!(json["verdict"], serde_json::Value::Null);
        assert_eq!(serde_json::from_value::<RunStatus>(json).unwrap(), status);
    }

    /// What each endpoint answers without a token, with the wrong one and with the right one,
    /// on loopback and beyond it: `(method, path, no token, wrong token, operator token)`.
    #[tokio::test]
    async fn beyond_loopback_every_endpoint_needs_a_token() {
        let firing = serde_json::json!({"version": "4", "status": "firing", "alerts": []});
        let cases = [
            ("GET", "/api/status", 200, 200, 200),
            ("GET", "/", 200, 200, 200),
            ("POST", "/api/abort", 401, 401, 202),
            ("POST", "/api/approve", 401, 401, 202),
            ("POST", "/api/alertmanager", 401, 401, 401),
        ];
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        for listen in ["127.0.0.1:0", "0.0.0.0:0"] {
            let beyond = listen.starts_with("0.0.0.0");
            let (commands, mut received) = mpsc::channel(16);
            let (_status_tx, status) = watch::channel(RunStatus::starting("relay-1", "relay"));
            let server = start(
                listen.parse().unwrap(),
                "relay-1",
                Secret::new("operator-token".to_owned()),
                Some(Secret::new("alert-token".to_owned())),
                commands,
                status,
            )
            .await
            .unwrap();
            tokio::spawn(async move { while received.recv().await.is_some() {} });
            let base = format!("http://127.0.0.1:{}", server.addr.port());
            let send = |method: &str, path: &str, token: Option<&str>| {
                let url = format!("{base}{path}");
                let mut req = match method {
                    "GET" => http.get(url),
                    _ => http.post(url).json(&match path {
                        "/api/alertmanager" => firing.clone(),
                        _ => serde_json::json!({"by": "ops", "reason": "test"}),
                    }),
                };
                if let Some(t) = token {
                    req = req.bearer_auth(t);
                }
                req.send()
            };
            for (method, path, open, wrong, operator) in cases {
                let (open, wrong) = if beyond && method == "GET" {
                    (401, 401)
                } else {
                    (open, wrong)
                };
                for (token, expect) in [
                    (None, open),
                    (Some("wrong"), wrong),
                    (Some("operator-token"), operator),
                ] {
                    let got = send(method, path, token).await.unwrap().status().as_u16();
                    assert_eq!(got, expect, "{listen} {method} {path} with {token:?}");
                }
            }
            // Alertmanager's own token opens the webhook only.
            for (method, path, expect) in [
                ("POST", "/api/alertmanager", 200),
                ("POST", "/api/abort", 401),
                ("GET", "/api/status", if beyond { 401 } else { 200 }),
            ] {
                let got = send(method, path, Some("alert-token")).await.unwrap();
                assert_eq!(got.status().as_u16(), expect, "{listen} {path}");
            }
            if beyond {
                // A browser opens /?token=..., is sent back to / with the token in a cookie, and
                // the page's own status requests carry it.
                let opened = http
                    .get(format!("{base}/?token=operator-token"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(opened.status().as_u16(), 303);
                let cookie = opened.headers()[header::SET_COOKIE].to_str().unwrap();
                assert!(cookie.contains("HttpOnly"), "{cookie}");
                let cookie = cookie.split(';').next().unwrap().to_owned();
                for path in ["/", "/api/status"] {
                    let got = http
                        .get(format!("{base}{path}"))
                        .header(header::COOKIE, &cookie)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(got.status().as_u16(), 200, "{path} with the cookie");
                }
                let wrong = http.get(format!("{base}/?token=wrong")).send().await;
                assert_eq!(wrong.unwrap().status().as_u16(), 401);
            }
        }
    }
}
