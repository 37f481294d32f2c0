//! The running controller's local API: status for `canary status` and the live page, operator
//! commands (`canary abort`, `canary approve`), and the Alertmanager webhook. [`RunStatus`] is
//! the one shape of that status, from the controller to the terminal, the API and its clients.
//!
//! The live page (`GET /`, static: no run data in it) follows the run through `GET /api/stream`
//! (Server-Sent Events, one `status` event per change of the published status, at most four a
//! second, then `end` when the controller is gone).
//!
//! The server binds to loopback by default. There, reads (`GET /api/status`, `GET /api/stream`)
//! need no credential: they carry no secret and only this machine reaches them. Bound to any
//! other address, reads need a credential too. Writes (abort, approve) always do. Credentials:
//! - the run's operator token as a bearer token (the CLI; only the controller and the owner of the
//!   state directory's mode-600 control file know it);
//! - the live page's session cookie, which a browser gets by spending a one-time operator link
//!   (`/#grant=CODE`, printed on the terminal; the code travels in the fragment, so no server log
//!   sees it, and is spent on first use) or, beyond loopback, by opening `/?token=TOKEN`. The
//!   cookie holds a random session secret, never the operator token; writes take it only with
//!   `Content-Type: application/json`, which no cross-site form can send.
//!
//! Codes and the session secret live in this process's memory only. The Alertmanager webhook
//! takes its own token (or, without one, the operator token), so Alertmanager's credential
//! cannot abort, approve or read.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::{Json, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
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
    /// How many times faster than the runbook's clock the run goes (the plan's `time_scale`:
    /// 1 in production, 60 in the demo). Runbook time is `elapsed_ms × time_scale`.
    #[serde(default = "real_time")]
    pub time_scale: f64,
    /// Wall clock (ms since the epoch) of T+0, once the run has started.
    #[serde(default)]
    pub started_at_ms: Option<i64>,
    /// The runbook's timeline: setup, burst, checks, each checkpoint, decision.
    #[serde(default)]
    pub phases: Vec<PhaseStatus>,
    /// The load burst's results, once it finished.
    #[serde(default)]
    pub burst: Option<BurstStatus>,
    /// The isolation probes' results so far, once a probe run reported.
    #[serde(default)]
    pub probes: Option<ProbesStatus>,
}

fn real_time() -> f64 {
    1.0
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
            time_scale: 1.0,
            started_at_ms: None,
            phases: Vec::new(),
            burst: None,
            probes: None,
        }
    }
}

/// One step of the runbook's timeline in a [`RunStatus`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseStatus {
    /// `setup`, `burst`, `checks`, a checkpoint (`T+15`), `decision`.
    pub name: String,
    /// When it begins, planned, in elapsed wall-clock ms since T+0.
    pub at_ms: i64,
    pub state: PhaseState,
}

/// Whether the run is past a phase, in it, or not there yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PhaseState {
    Done,
    Current,
    Pending,
}

/// One evaluation round of a guardrail: both arms' values (`None`: no finite value).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub elapsed_ms: i64,
    pub canary: Option<f64>,
    pub baseline: Option<f64>,
}

/// The load burst's results in a [`RunStatus`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BurstStatus {
    pub total: u64,
    pub successful: u64,
    /// The success rate the burst had to reach, in percent.
    pub min_success_percent: f64,
    /// Baseline, canary, then answers no arm was named for.
    pub arms: Vec<BurstArm>,
    /// Why the burst could not run, when it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One arm's share of the burst.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BurstArm {
    /// `baseline`, `canary` or `unknown`.
    pub arm: String,
    pub requests: u64,
    pub errors: u64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

impl BurstStatus {
    /// From the burst's summary (`CANARY_LOAD_SUMMARY_<ts>.json`, written by canary-load):
    /// its totals and each arm's requests, failures and latency percentiles.
    pub fn from_summary(summary: &serde_json::Value, min_success_percent: f64) -> BurstStatus {
        let count = |v: &serde_json::Value, key: &str| v[key].as_u64().unwrap_or(0);
        let order = |arm: &str| match arm {
            "baseline" => 0,
            "canary" => 1,
            _ => 2,
        };
        let mut arms: Vec<BurstArm> = summary["per_arm"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(arm, s)| BurstArm {
                arm: arm.clone(),
                requests: count(s, "total_queries"),
                errors: count(s, "failed"),
                p50_ms: s["latency_ms"]["p50"].as_f64(),
                p95_ms: s["latency_ms"]["p95"].as_f64(),
                p99_ms: s["latency_ms"]["p99"].as_f64(),
            })
            .collect();
        arms.sort_by_key(|a| order(&a.arm));
        BurstStatus {
            total: count(summary, "total_queries"),
            successful: count(summary, "successful"),
            min_success_percent,
            arms,
            error: summary["error"].as_str().map(str::to_owned),
        }
    }
}

/// The isolation probes' results so far in a [`RunStatus`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProbesStatus {
    /// Probe runs reported, including those that could not run.
    pub runs: u32,
    /// Runs that proved isolation (clean over at least one pair of users).
    pub clean_runs: u32,
    /// Runs that could not probe (the error is in the evidence).
    pub failed_runs: u32,
    /// User pairs checked over all runs.
    pub pairs: u64,
    /// Every leak seen: one user's data shown to another.
    pub leaks: Vec<ProbeLeak>,
}

/// One user's data seen by another, and which arm answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeLeak {
    pub observer: String,
    pub owner: String,
    pub arm: String,
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
    /// What the values are measured in (`ms`, `%`), from the plan.
    #[serde(default)]
    pub unit: Option<String>,
    /// How long a breach must last before it triggers (`for`), in wall-clock ms.
    #[serde(default)]
    pub for_ms: i64,
    /// Elapsed ms at which the breach now counting began; `None` while none is.
    #[serde(default)]
    pub breaching_since_ms: Option<i64>,
    /// Every evaluation round so far (thinned to about [`SERIES_CAP`] points).
    #[serde(default)]
    pub series: Vec<Point>,
}

/// How many points a guardrail's series keeps before it is thinned.
pub const SERIES_CAP: usize = 400;

/// Appends `point`; at [`SERIES_CAP`] points every other older point goes, so a series covers
/// the whole run, denser where it is recent.
pub fn push_point(series: &mut Vec<Point>, point: Point) {
    if series.len() >= SERIES_CAP {
        let mut index = 0;
        series.retain(|_| {
            index += 1;
            index % 2 == 1
        });
    }
    series.push(point);
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

/// The credentials the API accepts, held in this process's memory only.
struct Credentials {
    operator_token: Secret,
    alert_token: Option<Secret>,
    /// The live page's session cookie value: random, never the operator token.
    session: Secret,
    /// Operator links' one-time codes not yet spent, oldest first.
    grants: Mutex<Vec<Secret>>,
}

/// At most this many unspent operator links at once; a new one retires the oldest.
const MAX_GRANTS: usize = 8;

impl Credentials {
    /// A fresh one-time code, remembered until spent.
    fn new_grant(&self) -> anyhow::Result<Secret> {
        let code = Secret::new(random_hex(16)?);
        let mut grants = self.grants.lock().unwrap_or_else(|e| e.into_inner());
        if grants.len() >= MAX_GRANTS {
            grants.remove(0);
        }
        grants.push(code.clone());
        Ok(code)
    }

    /// Spends `given` if it is an unspent code: true once, false ever after.
    fn spend_grant(&self, given: &str) -> bool {
        let mut grants = self.grants.lock().unwrap_or_else(|e| e.into_inner());
        // Compare with every code, so the time taken says nothing about which one matched.
        let found = grants.iter().fold(None, |found, code| {
            let hit = constant_time_eq(given.as_bytes(), code.expose().as_bytes());
            found.or(hit.then(|| code.clone()))
        });
        match found {
            Some(code) => {
                grants.retain(|c| *c != code);
                true
            }
            None => false,
        }
    }
}

/// `bytes` random bytes from the kernel, hex-encoded. No fallback: a credential without
/// entropy is worse than none.
fn random_hex(bytes: usize) -> anyhow::Result<String> {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .context("cannot read /dev/urandom for the live page's credentials")?;
    Ok(hex::encode(buf))
}

#[derive(Clone)]
struct AppState {
    commands: mpsc::Sender<Command>,
    status: watch::Receiver<RunStatus>,
    credentials: Arc<Credentials>,
    run_id: Arc<str>,
    /// `http://ADDR`, for the operator links it hands out.
    url: Arc<str>,
    /// Bound to loopback: reads need no credential.
    open_reads: bool,
    /// Status streams open now.
    streams: Arc<AtomicUsize>,
}

/// A running control API.
pub struct ControlServer {
    pub addr: SocketAddr,
    credentials: Arc<Credentials>,
    streams: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

/// How long the end of a run waits for open live pages to receive the last status.
const FINISH_GRACE: Duration = Duration::from_secs(2);

impl ControlServer {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A new one-time operator link: `http://ADDR/#grant=CODE`. Opened in a browser, the live
    /// page spends the code for a session cookie that lets it abort and approve.
    pub fn operator_link(&self) -> anyhow::Result<String> {
        let code = self.credentials.new_grant()?;
        Ok(operator_link(&self.url(), &code))
    }

    /// Stops the API once the controller is gone (its status sender dropped): first lets every
    /// open stream send the last status and its `end` (bounded by [`FINISH_GRACE`]), so a live
    /// page shows the verdict, not a lost connection.
    pub async fn finish(self) {
        let deadline = tokio::time::Instant::now() + FINISH_GRACE;
        let watched = self.streams.load(Ordering::SeqCst) > 0;
        while self.streams.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if watched {
            // The last frames leave the socket after the stream ended.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn operator_link(url: &str, code: &Secret) -> String {
    format!("{url}/#grant={}", code.expose())
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the API on `listen`. Commands arrive on `commands`; `status` is what reads return
/// and the stream pushes.
pub async fn start(
    listen: SocketAddr,
    run_id: &str,
    operator_token: Secret,
    alert_token: Option<Secret>,
    commands: mpsc::Sender<Command>,
    status: watch::Receiver<RunStatus>,
) -> anyhow::Result<ControlServer> {
    let credentials = Arc::new(Credentials {
        operator_token,
        alert_token,
        session: Secret::new(random_hex(32)?),
        grants: Mutex::new(Vec::new()),
    });
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} for the control API"))?;
    let addr = listener.local_addr()?;
    let state = AppState {
        commands,
        status,
        credentials: credentials.clone(),
        run_id: Arc::from(run_id),
        url: Arc::from(format!("http://{addr}")),
        open_reads: listen.ip().is_loopback(),
        streams: Arc::new(AtomicUsize::new(0)),
    };
    let streams = state.streams.clone();
    let app = Router::new()
        .route("/", get(live_page))
        .route("/api/status", get(status_handler))
        .route("/api/stream", get(stream))
        .route("/api/grant", post(grant))
        .route("/api/grant/new", post(new_grant))
        .route("/api/abort", post(abort))
        .route("/api/approve", post(approve))
        .route("/api/alertmanager", post(alertmanager))
        .with_state(state);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "control API stopped");
        }
    });
    Ok(ControlServer {
        addr,
        credentials,
        streams,
        task,
    })
}

/// The live page's session cookie.
const SESSION_COOKIE: &str = "canary_operator";

/// Whether the request carries the live page's session cookie.
fn has_session(s: &AppState, headers: &HeaderMap) -> bool {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().strip_prefix(SESSION_COOKIE)?.strip_prefix('='))
        .any(|given| constant_time_eq(given.as_bytes(), s.credentials.session.expose().as_bytes()))
}

/// The `Set-Cookie` value that opens a session.
fn session_cookie(s: &AppState) -> String {
    format!(
        "{SESSION_COOKIE}={}; HttpOnly; SameSite=Strict; Path=/",
        s.credentials.session.expose()
    )
}

/// Whether a read may proceed: on loopback always, elsewhere with the operator token as a bearer
/// token or the live page's session cookie.
fn may_read(s: &AppState, headers: &HeaderMap) -> bool {
    s.open_reads || authorised(headers, &s.credentials.operator_token) || has_session(s, headers)
}

/// Whether an operator command may proceed: the operator token as a bearer token, or the
/// session cookie on a JSON request (a cross-site form cannot send JSON; the cookie is
/// `SameSite=Strict` besides).
fn may_command(s: &AppState, headers: &HeaderMap) -> bool {
    if authorised(headers, &s.credentials.operator_token) {
        return true;
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    json && has_session(s, headers)
}

/// A read without a credential on a non-loopback address.
fn unauthorised_read() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "this controller listens beyond loopback, so reads need a credential: the run's operator token (the `token` in <state_dir>/active/<service>.json on the controller's machine) as a bearer token, or, in a browser, the operator link the run printed (`canary status --link` makes another)\n",
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

/// A refusal as JSON: `{"error": "..."}`.
fn refused(status: StatusCode, why: &str) -> Response {
    let mut response = (status, Json(serde_json::json!({ "error": why }))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    response
}

fn unauthorised() -> Response {
    refused(
        StatusCode::UNAUTHORIZED,
        "an operator credential is required: `canary abort` / `canary approve` on the controller's machine, or the live page opened through the run's operator link",
    )
}

async fn status_handler(State(s): State<AppState>, headers: HeaderMap) -> Response {
    if !may_read(&s, &headers) {
        return unauthorised_read();
    }
    let status = s.status.borrow().clone();
    Json(status).into_response()
}

/// The least time between two pushed statuses: the page redraws at most four times a second.
const STREAM_THROTTLE: Duration = Duration::from_millis(250);
/// A comment this often keeps proxies and browsers from closing a quiet stream.
const STREAM_KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Server-Sent Events: `status` with the current status at once and after every change
/// (throttled), then `end` once the controller is gone, and the stream closes.
async fn stream(State(s): State<AppState>, headers: HeaderMap) -> Response {
    if !may_read(&s, &headers) {
        return unauthorised_read();
    }
    let open = OpenStream::new(&s.streams);
    let events = futures_util::stream::unfold(
        (s.status.clone(), Pushed::Nothing, open),
        |(mut status, pushed, open)| async move {
            match pushed {
                Pushed::End => return None,
                Pushed::Status => {
                    if status.changed().await.is_err() {
                        let end = SseEvent::default()
                            .event("end")
                            .data("the run has finished");
                        return Some((
                            Ok::<_, std::convert::Infallible>(end),
                            (status, Pushed::End, open),
                        ));
                    }
                    tokio::time::sleep(STREAM_THROTTLE).await;
                }
                Pushed::Nothing => {}
            }
            let current = status.borrow_and_update().clone();
            let event = SseEvent::default()
                .event("status")
                .json_data(&current)
                .unwrap_or_else(|e| SseEvent::default().comment(format!("status not sent: {e}")));
            Some((Ok(event), (status, Pushed::Status, open)))
        },
    );
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(STREAM_KEEP_ALIVE))
        .into_response()
}

/// Counts a status stream as open for as long as it lives (see [`ControlServer::finish`]).
struct OpenStream(Arc<AtomicUsize>);

impl OpenStream {
    fn new(count: &Arc<AtomicUsize>) -> OpenStream {
        count.fetch_add(1, Ordering::SeqCst);
        OpenStream(count.clone())
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What a status stream has sent so far.
enum Pushed {
    Nothing,
    Status,
    End,
}

#[derive(Deserialize)]
struct GrantBody {
    code: String,
}

/// Spends an operator link's one-time code for the session cookie.
async fn grant(State(s): State<AppState>, body: axum::body::Bytes) -> Response {
    let Ok(GrantBody { code }) = serde_json::from_slice(&body) else {
        return refused(StatusCode::BAD_REQUEST, "send {\"code\": \"...\"}");
    };
    if !s.credentials.spend_grant(&code) {
        return refused(
            StatusCode::UNAUTHORIZED,
            "this operator link was already used or is not this run's: `canary status --link` on the controller's machine makes a new one",
        );
    }
    (
        StatusCode::OK,
        [(header::SET_COOKIE, session_cookie(&s))],
        Json(serde_json::json!({ "operator": true })),
    )
        .into_response()
}

/// A new operator link, for the operator token only (`canary status --link`).
async fn new_grant(State(s): State<AppState>, headers: HeaderMap) -> Response {
    if !authorised(&headers, &s.credentials.operator_token) {
        return unauthorised();
    }
    match s.credentials.new_grant() {
        Ok(code) => (
            StatusCode::CREATED,
            Json(serde_json::json!({ "link": operator_link(&s.url, &code) })),
        )
            .into_response(),
        Err(e) => refused(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e:#}")),
    }
}

/// Who, when the body does not say.
fn live_page_operator() -> String {
    "operator (live page)".to_owned()
}

#[derive(Deserialize)]
struct AbortBody {
    #[serde(default = "live_page_operator")]
    by: String,
    #[serde(default)]
    reason: String,
}

async fn abort(State(s): State<AppState>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if !may_command(&s, &headers) {
        return unauthorised();
    }
    let Ok(body) = serde_json::from_slice::<AbortBody>(&body) else {
        return refused(
            StatusCode::BAD_REQUEST,
            "send {\"by\": \"who\", \"reason\": \"why\"}",
        );
    };
    let reason = match body.reason.trim() {
        "" => "aborted by an operator".to_owned(),
        _ => body.reason,
    };
    let command = Command::Abort {
        by: body.by,
        reason,
    };
    operator_command(&s, command, "abort accepted: rolling back\n").await
}

#[derive(Deserialize)]
struct ApproveBody {
    #[serde(default = "live_page_operator")]
    by: String,
}

async fn approve(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if !may_command(&s, &headers) {
        return unauthorised();
    }
    let Ok(body) = serde_json::from_slice::<ApproveBody>(&body) else {
        return refused(StatusCode::BAD_REQUEST, "send {\"by\": \"who\"}");
    };
    let command = Command::Approve { by: body.by };
    operator_command(&s, command, "approval recorded\n").await
}

/// Hands an authorised operator's command to the controller: 202 with `accepted`, 410 once the
/// run has finished.
async fn operator_command(s: &AppState, command: Command, accepted: &'static str) -> Response {
    match s.commands.send(command).await {
        Ok(()) => (StatusCode::ACCEPTED, accepted).into_response(),
        Err(_) => refused(StatusCode::GONE, "the run has finished"),
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
    let credentials = &s.credentials;
    match &credentials.alert_token {
        Some(token) if !authorised(&headers, token) => return unauthorised(),
        None if !authorised(&headers, &credentials.operator_token) => return unauthorised(),
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

/// The live page: static, so served to anyone who reaches the server (its data comes from the
/// reads above, with their credentials). Beyond loopback, `/?token=TOKEN` with the operator
/// token sets the session cookie and sends the browser back to `/`, out of the address bar.
async fn live_page(State(s): State<AppState>, uri: Uri) -> Response {
    let given = uri
        .query()
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix("token="));
    match given {
        None => Html(include_str!("live.html")).into_response(),
        Some(token)
            if constant_time_eq(
                token.as_bytes(),
                s.credentials.operator_token.expose().as_bytes(),
            ) =>
        {
            (
                StatusCode::SEE_OTHER,
                [
                    (header::LOCATION, "/".to_owned()),
                    (header::SET_COOKIE, session_cookie(&s)),
                ],
            )
                .into_response()
        }
        Some(_) => unauthorised_read(),
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
            let why = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or(text);
            anyhow::bail!("the controller refused ({status}): {}", why.trim());
        }
        Ok(text)
    }

    /// A new one-time operator link to the live page.
    pub async fn operator_link(&self) -> anyhow::Result<String> {
        let answer = self.post("/api/grant/new", serde_json::json!({})).await?;
        let answer: serde_json::Value =
            serde_json::from_str(&answer).context("the controller sent no operator link")?;
        answer["link"]
            .as_str()
            .map(str::to_owned)
            .context("the controller sent no operator link")
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
                unit: Some("ms".to_owned()),
                for_ms: 300_000,
                breaching_since_ms: Some(12_000),
                series: vec![Point {
                    elapsed_ms: 12_000,
                    canary: Some(1812.5),
                    baseline: None,
                }],
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
            time_scale: 60.0,
            started_at_ms: Some(1_764_676_800_000),
            phases: vec![
                PhaseStatus {
                    name: "setup".to_owned(),
                    at_ms: 0,
                    state: PhaseState::Done,
                },
                PhaseStatus {
                    name: "decision".to_owned(),
                    at_ms: 3_600_000,
                    state: PhaseState::Current,
                },
            ],
            burst: Some(BurstStatus {
                total: 100,
                successful: 99,
                min_success_percent: 99.0,
                arms: vec![BurstArm {
                    arm: "canary".to_owned(),
                    requests: 6,
                    errors: 1,
                    p50_ms: Some(210.5),
                    p95_ms: Some(402.0),
                    p99_ms: None,
                }],
                error: None,
            }),
            probes: Some(ProbesStatus {
                runs: 2,
                clean_runs: 1,
                failed_runs: 0,
                pairs: 40,
                leaks: vec![ProbeLeak {
                    observer: "user_2".to_owned(),
                    owner: "user_1".to_owned(),
                    arm: "canary".to_owned(),
                }],
            }),
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
                    "unit": "ms",
                    "for_ms": 300_000,
                    "breaching_since_ms": 12_000,
                    "series": [{"elapsed_ms": 12_000, "canary": 1812.5, "baseline": null}],
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
                "time_scale": 60.0,
                "started_at_ms": 1_764_676_800_000i64,
                "phases": [
                    {"name": "setup", "at_ms": 0, "state": "done"},
                    {"name": "decision", "at_ms": 3_600_000, "state": "current"},
                ],
                "burst": {
                    "total": 100,
                    "successful": 99,
                    "min_success_percent": 99.0,
                    "arms": [{
                        "arm": "canary", "requests": 6, "errors": 1,
                        "p50_ms": 210.5, "p95_ms": 402.0, "p99_ms": null,
                    }],
                },
                "probes": {
                    "runs": 2, "clean_runs": 1, "failed_runs": 0, "pairs": 40,
                    "leaks": [{"observer": "user_2", "owner": "user_1", "arm": "canary"}],
                },
            })
        );
        assert_eq!(serde_json::from_value::<RunStatus>(json).unwrap(), status);
    }

    /// A status written before the timeline, series, units, burst and probes existed (an older
    /// controller answering a newer `canary status`) still reads, on a real-time clock.
    #[test]
    fn an_older_status_still_reads() {
        let mut json = serde_json::to_value(decided()).unwrap();
        let object = json.as_object_mut().unwrap();
        for field in ["time_scale", "started_at_ms", "phases", "burst", "probes"] {
            object.remove(field);
        }
        for field in ["unit", "for_ms", "breaching_since_ms", "series"] {
            object["guardrails"][0]
                .as_object_mut()
                .unwrap()
                .remove(field);
        }
        let status: RunStatus = serde_json::from_value(json).unwrap();
        assert_eq!(status.time_scale, 1.0);
        assert_eq!(status.phases, Vec::new());
        assert_eq!((status.burst, status.probes), (None, None));
        let g = &status.guardrails[0];
        assert_eq!(
            (g.unit.as_deref(), g.for_ms, g.breaching_since_ms),
            (None, 0, None)
        );
        assert!(g.series.is_empty());
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

    /// A series keeps the whole run: past the cap, older points are thinned, the first and
    /// the newest stay.
    #[test]
    fn a_long_series_is_thinned_not_cut() {
        let mut series = Vec::new();
        for i in 0..1000 {
            push_point(
                &mut series,
                Point {
                    elapsed_ms: i,
                    canary: Some(i as f64),
                    baseline: None,
                },
            );
            assert!(series.len() <= SERIES_CAP, "{} points", series.len());
        }
        assert_eq!(series.first().unwrap().elapsed_ms, 0);
        assert_eq!(series.last().unwrap().elapsed_ms, 999);
        assert!(series.len() > SERIES_CAP / 2, "{} points", series.len());
        assert!(series.windows(2).all(|w| w[0].elapsed_ms < w[1].elapsed_ms));
    }

    #[test]
    fn the_burst_summary_gives_each_arm_baseline_first() {
        let summary = serde_json::json!({
            "total_queries": 100, "successful": 98, "failed": 2,
            "per_arm": {
                "canary": {"total_queries": 6, "failed": 1,
                           "latency_ms": {"p50": 210.5, "p95": 402.0, "p99": 410.0}},
                "baseline": {"total_queries": 94, "failed": 1, "latency_ms": null},
            },
        });
        let burst = BurstStatus::from_summary(&summary, 99.0);
        assert_eq!((burst.total, burst.successful), (100, 98));
        let arms: Vec<_> = burst
            .arms
            .iter()
            .map(|a| (a.arm.as_str(), a.requests, a.errors, a.p95_ms))
            .collect();
        assert_eq!(
            arms,
            [("baseline", 94, 1, None), ("canary", 6, 1, Some(402.0))]
        );
        let failed = serde_json::json!({"total_queries": 0, "successful": 0, "error": "no users"});
        let failed = BurstStatus::from_summary(&failed, 99.0);
        assert_eq!(failed.error.as_deref(), Some("no users"));
        assert!(failed.arms.is_empty());
    }

    /// A control API on `listen` with the operator token `operator-token`, and what it hands the
    /// controller.
    struct Api {
        server: ControlServer,
        base: String,
        commands: mpsc::Receiver<Command>,
        status: watch::Sender<RunStatus>,
        http: reqwest::Client,
    }

    impl Api {
        async fn start(listen: &str) -> Api {
            let (commands_tx, commands) = mpsc::channel(16);
            let (status, status_rx) = watch::channel(RunStatus::starting("relay-1", "relay"));
            let server = start(
                listen.parse().unwrap(),
                "relay-1",
                Secret::new("operator-token".to_owned()),
                Some(Secret::new("alert-token".to_owned())),
                commands_tx,
                status_rx,
            )
            .await
            .unwrap();
            let base = format!("http://127.0.0.1:{}", server.addr.port());
            let http = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap();
            Api {
                server,
                base,
                commands,
                status,
                http,
            }
        }

        /// Spends the code of a fresh operator link; the answer's status and `name=value` cookie.
        async fn spend(&self, link: &str) -> (u16, Option<String>) {
            let code = link.split_once("#grant=").unwrap().1;
            let answer = self
                .http
                .post(format!("{}/api/grant", self.base))
                .json(&serde_json::json!({ "code": code }))
                .send()
                .await
                .unwrap();
            let cookie = answer
                .headers()
                .get(header::SET_COOKIE)
                .map(|c| c.to_str().unwrap().to_owned());
            (answer.status().as_u16(), cookie)
        }

        /// A session cookie, from a fresh operator link.
        async fn session(&self) -> String {
            let link = self.server.operator_link().unwrap();
            let (status, cookie) = self.spend(&link).await;
            assert_eq!(status, 200);
            cookie.unwrap().split(';').next().unwrap().to_owned()
        }

        /// `POST /api/abort` with `cookie`, as JSON or as a form's text.
        async fn abort_with(&self, cookie: Option<&str>, json: bool) -> reqwest::Response {
            let mut request = self.http.post(format!("{}/api/abort", self.base));
            let body = r#"{"by": "ops", "reason": "from the page"}"#;
            request = match json {
                true => request.header(header::CONTENT_TYPE, "application/json"),
                false => request.header(header::CONTENT_TYPE, "text/plain"),
            }
            .body(body);
            if let Some(cookie) = cookie {
                request = request.header(header::COOKIE, cookie);
            }
            request.send().await.unwrap()
        }

        /// Nothing reached the controller.
        fn nothing_commanded(&mut self) {
            assert_eq!(
                self.commands.try_recv().err(),
                Some(mpsc::error::TryRecvError::Empty)
            );
        }
    }

    /// What each endpoint answers without a token, with the wrong one and with the right one,
    /// on loopback and beyond it: `(method, path, no token, wrong token, operator token)`.
    #[tokio::test]
    async fn beyond_loopback_every_endpoint_needs_a_token() {
        let firing = serde_json::json!({"version": "4", "status": "firing", "alerts": []});
        let cases = [
            ("GET", "/api/status", 200, 200, 200),
            ("GET", "/api/stream", 200, 200, 200),
            ("POST", "/api/abort", 401, 401, 202),
            ("POST", "/api/approve", 401, 401, 202),
            ("POST", "/api/alertmanager", 401, 401, 401),
            ("POST", "/api/grant/new", 401, 401, 201),
        ];
        for listen in ["127.0.0.1:0", "0.0.0.0:0"] {
            let beyond = listen.starts_with("0.0.0.0");
            let Api {
                server,
                base,
                mut commands,
                status: _status,
                http,
            } = Api::start(listen).await;
            tokio::spawn(async move { while commands.recv().await.is_some() {} });
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
                    let got = send(method, path, token).await.unwrap();
                    assert_eq!(
                        got.status().as_u16(),
                        expect,
                        "{listen} {method} {path} with {token:?}"
                    );
                    if expect == 401 && method == "POST" {
                        let body: serde_json::Value = got.json().await.unwrap();
                        assert!(body["error"].is_string(), "{path}: {body}");
                    }
                }
            }
            // The page itself is static: it loads anywhere, its data does not.
            let page = send("GET", "/", None).await.unwrap();
            assert_eq!(page.status().as_u16(), 200);
            assert!(page.text().await.unwrap().contains("EventSource"));
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
                // A browser opens /?token=..., is sent back to / with a session cookie (not
                // the token), and the page's own reads carry it.
                let opened = http
                    .get(format!("{base}/?token=operator-token"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(opened.status().as_u16(), 303);
                let cookie = opened.headers()[header::SET_COOKIE].to_str().unwrap();
                assert!(cookie.contains("HttpOnly"), "{cookie}");
                assert!(!cookie.contains("operator-token"), "{cookie}");
                let cookie = cookie.split(';').next().unwrap().to_owned();
                for path in ["/api/status", "/api/stream"] {
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
                // An operator link works beyond loopback too: its cookie reads.
                let link = server.operator_link().unwrap();
                assert!(link.starts_with(&server.url()), "{link}");
            }
        }
    }

    /// The operator link's code buys one session cookie, once; the cookie holds neither the
    /// code nor the operator token.
    #[tokio::test]
    async fn an_operator_link_works_once() {
        let api = Api::start("127.0.0.1:0").await;
        let link = api.server.operator_link().unwrap();
        let code = link.split_once("#grant=").unwrap().1;
        assert_eq!(code.len(), 32, "128 bits in hex: {code}");
        assert!(code.bytes().all(|b| b.is_ascii_hexdigit()), "{code}");

        let (status, cookie) = api.spend(&link).await;
        assert_eq!(status, 200);
        let cookie = cookie.unwrap();
        for part in ["canary_operator=", "HttpOnly", "SameSite=Strict", "Path=/"] {
            assert!(cookie.contains(part), "{part} in {cookie}");
        }
        assert!(!cookie.contains(code) && !cookie.contains("operator-token"));

        let (again, cookie) = api.spend(&link).await;
        assert_eq!((again, cookie), (401, None), "a spent code is refused");
        let (made_up, _) = api.spend("#grant=00112233445566778899aabbccddeeff").await;
        assert_eq!(made_up, 401);

        // Each link is its own code: a second one still works after the first was spent.
        let other = api.server.operator_link().unwrap();
        assert_ne!(other, link);
        assert_eq!(api.spend(&other).await.0, 200);
    }

    /// `canary status --link`: the operator token buys a fresh link, which then works once.
    #[tokio::test]
    async fn the_operator_token_makes_new_links() {
        let api = Api::start("127.0.0.1:0").await;
        let client = ControlClient::new(ControlFile {
            run_id: "relay-1".to_owned(),
            service: "relay".to_owned(),
            url: api.base.clone(),
            token: "operator-token".to_owned(),
            pid: 0,
        });
        let link = client.operator_link().await.unwrap();
        assert!(link.starts_with(&api.server.url()), "{link}");
        assert_eq!(api.spend(&link).await.0, 200);
        assert_eq!(api.spend(&link).await.0, 401);
    }

    /// Abort and approve from the page: the session cookie on a JSON request is accepted and
    /// reaches the controller; without a credential, or with the cookie on a request a
    /// cross-site form could send, they are refused and nothing reaches it.
    #[tokio::test]
    async fn operator_commands_need_the_token_or_the_cookie_with_json() {
        let mut api = Api::start("127.0.0.1:0").await;
        let session = api.session().await;

        let refused = api.abort_with(None, true).await;
        assert_eq!(refused.status().as_u16(), 401);
        let body: serde_json::Value = refused.json().await.unwrap();
        assert!(
            body["error"].as_str().unwrap().contains("operator link"),
            "{body}"
        );
        api.nothing_commanded();

        let not_json = api.abort_with(Some(&session), false).await;
        assert_eq!(not_json.status().as_u16(), 401, "cookie without JSON");
        api.nothing_commanded();

        let forged = api
            .abort_with(Some("canary_operator=operator-token"), true)
            .await;
        assert_eq!(forged.status().as_u16(), 401, "the token is not a session");
        api.nothing_commanded();

        let accepted = api.abort_with(Some(&session), true).await;
        assert_eq!(accepted.status().as_u16(), 202);
        assert!(accepted.text().await.unwrap().contains("accepted"));
        assert_eq!(
            api.commands.try_recv().unwrap(),
            Command::Abort {
                by: "ops".to_owned(),
                reason: "from the page".to_owned()
            }
        );

        let approved = api
            .http
            .post(format!("{}/api/approve", api.base))
            .header(header::COOKIE, &session)
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(approved.status().as_u16(), 202);
        assert_eq!(
            api.commands.try_recv().unwrap(),
            Command::Approve {
                by: live_page_operator()
            }
        );

        // Once the controller is gone, a command is refused as too late.
        let Api {
            commands,
            http,
            base,
            ..
        } = api;
        drop(commands);
        let gone = http
            .post(format!("{base}/api/approve"))
            .bearer_auth("operator-token")
            .json(&serde_json::json!({"by": "ops"}))
            .send()
            .await
            .unwrap();
        assert_eq!(gone.status().as_u16(), 410);
    }

    /// Reads `response`'s body until `done` holds for what arrived, or fails after 10 s.
    async fn read_until(
        response: &mut reqwest::Response,
        text: &mut String,
        done: impl Fn(&str) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !done(text) {
            let chunk = tokio::time::timeout_at(deadline, response.chunk())
                .await
                .unwrap_or_else(|_| panic!("the stream sent only {text:?}"))
                .unwrap();
            match chunk {
                Some(bytes) => text.push_str(&String::from_utf8_lossy(&bytes)),
                None => panic!("the stream ended after {text:?}"),
            }
        }
    }

    /// The statuses an SSE transcript carries, in order.
    fn statuses(text: &str) -> Vec<RunStatus> {
        text.split("\n\n")
            .filter(|event| event.lines().any(|l| l == "event: status"))
            .filter_map(|event| event.lines().find_map(|l| l.strip_prefix("data: ")))
            .map(|data| serde_json::from_str(data).unwrap())
            .collect()
    }

    /// The stream sends the current status at once, a new one when the controller publishes,
    /// then `end` and closes when the controller is gone.
    #[tokio::test]
    async fn the_stream_pushes_each_change_then_ends() {
        let Api {
            server: _server,
            base,
            status,
            http,
            ..
        } = Api::start("127.0.0.1:0").await;
        let mut response = http.get(format!("{base}/api/stream")).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let content_type = response.headers()[header::CONTENT_TYPE].to_str().unwrap();
        assert_eq!(content_type, "text/event-stream");
        let mut text = String::new();
        read_until(&mut response, &mut text, |t| statuses(t).len() == 1).await;
        assert_eq!(statuses(&text)[0].phase, "starting");

        let mut running = decided();
        running.phase = "running".to_owned();
        running.verdict = None;
        status.send(running.clone()).unwrap();
        read_until(&mut response, &mut text, |t| statuses(t).len() == 2).await;
        assert_eq!(statuses(&text)[1], running);

        // The last status before the controller goes is pushed, then the end.
        status.send(decided()).unwrap();
        drop(status);
        read_until(&mut response, &mut text, |t| t.contains("event: end")).await;
        assert_eq!(statuses(&text).last(), Some(&decided()));
        let rest = tokio::time::timeout(Duration::from_secs(10), response.chunk())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rest, None, "the stream closes after its end");
    }
}
