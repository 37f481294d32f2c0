//! The HTTP API: routes, authentication and validation of each request, the query pipeline
//! (embedding → pool connection → store read under RLS and row fetch → rerank → final tenant
//! check → first token), and the two response shapes — an SSE stream by default, one JSON body
//! with `Accept: application/json`. Every error, an unknown route included, is one JSON shape:
//! `{error, message, field?}`.
//!
//! Each stage waits as long as the instance's latency profile draws for the request (nothing
//! under `fast`), asleep on the request's task; the row read holds its pool connection while it
//! waits, the index search (the tenant's own, in this process) holds none.
//!
//! A request is authenticated on its head before its body is read: a caller without valid
//! credentials gets its 401 without the service reading (or waiting for) a byte of the body.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::auth::{AuthError, Authenticator, Principal};
pub(crate) use crate::body::BodyLimits;
use crate::body::{self, BodyError};
use crate::embedding::Embedding;
use crate::fault::{FaultKind, FaultSchedule, LeakCatcher, SLOW_ANN_DELAY, SLOW_TTFV_DELAY};
use crate::metrics::{OPENMETRICS_CONTENT_TYPE, RelayMetrics, TEXT_CONTENT_TYPE, millis};
use crate::pool::{ConnectionPool, PoolError};
use crate::profile::{Profile, Sampler, StageWaits};
use crate::rerank::{RerankOutcome, keep_ann_order, rerank};
use crate::sse::{RETRY_MS, event_block};
use crate::store::{FoundRow, MemoryStore, RowPolicy, SimilarityRead, StoreError};
use crate::tenancy::TenantContext;

/// Default `top_k`.
pub const DEFAULT_TOP_K: usize = 24;
/// Largest `top_k`.
pub const MAX_TOP_K: usize = 100;
/// Default `timeout_ms`.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
/// Largest `timeout_ms`.
pub const MAX_TIMEOUT_MS: u64 = 120_000;
/// Largest request body (axum's default limit, which applied before bodies were read here).
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;
/// Pause before an `sse-drop` cut, so the events before it are flushed to the client.
const STREAM_CUT_PAUSE: Duration = Duration::from_millis(20);
/// How much later than [`SLOW_TTFV_DELAY`] a struck stream's first value may come (the slow
/// call's own jitter), as a share of it.
const SLOW_TTFV_JITTER: f64 = 0.05;
const MAX_QUERY_CHARS: usize = 2_000;
const MAX_TEXT_CHARS: usize = 8_000;
const MAX_TAGS: usize = 32;
const MAX_TAG_CHARS: usize = 64;

/// Everything a request handler needs.
pub(crate) struct AppState {
    pub version: String,
    pub store: Arc<MemoryStore>,
    pub auth: Authenticator,
    pub metrics: RelayMetrics,
    pub pool: ConnectionPool,
    pub admission: Arc<Semaphore>,
    pub faults: FaultSchedule,
    pub leak_catcher: LeakCatcher,
    pub profile: Profile,
    pub sampler: Sampler,
    pub rerank_budget: Duration,
    pub body_limits: BodyLimits,
}

/// The service's routes.
pub(crate) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/api/v1/memory/query", post(query))
        .route("/api/v1/memory", post(ingest))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn not_found(uri: Uri) -> Response {
    ApiError::NotFound(uri.path().to_owned()).into_response()
}

/// axum adds the `Allow` header to this response.
async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    ApiError::MethodNotAllowed {
        method,
        path: uri.path().to_owned(),
    }
    .into_response()
}

/// A request that could not be served, mapped to its status and a JSON body.
#[derive(Debug)]
enum ApiError {
    NotFound(String),
    MethodNotAllowed {
        method: Method,
        path: String,
    },
    Unauthorized(AuthError),
    /// The body could not be read; the connection is closed after the answer, since what is
    /// left of the body on it was never read.
    Body(BodyError),
    TenantMismatch,
    MalformedBody(String),
    InvalidField {
        field: &'static str,
        message: String,
    },
    Overloaded(&'static str),
    Timeout(u64),
    RlsPolicy,
    Internal(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message, field) = match &self {
            ApiError::NotFound(path) => (
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no route for {path}"),
                None,
            ),
            ApiError::MethodNotAllowed { method, path } => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{method} is not allowed on {path}"),
                None,
            ),
            ApiError::Body(e) => (
                match e {
                    BodyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                    BodyError::TimedOut { .. } => StatusCode::REQUEST_TIMEOUT,
                    BodyError::Unreadable(_) => StatusCode::BAD_REQUEST,
                },
                match e {
                    BodyError::TooLarge { .. } => "payload_too_large",
                    BodyError::TimedOut { .. } => "request_timeout",
                    BodyError::Unreadable(_) => "unreadable_body",
                },
                e.to_string(),
                None,
            ),
            ApiError::Unauthorized(e) => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                e.to_string(),
                None,
            ),
            ApiError::TenantMismatch => (
                StatusCode::FORBIDDEN,
                "tenant_mismatch",
                "user_id names another user than the bearer token".to_owned(),
                Some("user_id"),
            ),
            ApiError::MalformedBody(m) => (
                StatusCode::BAD_REQUEST,
                "malformed_body",
                format!("request body is not valid JSON: {m}"),
                None,
            ),
            ApiError::InvalidField { field, message } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_field",
                message.clone(),
                Some(*field),
            ),
            ApiError::Overloaded(why) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                (*why).to_owned(),
                None,
            ),
            ApiError::Timeout(ms) => (
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                format!("query did not finish within timeout_ms={ms}"),
                None,
            ),
            ApiError::RlsPolicy => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "rls_policy_error",
                "the store refused a read without tenant context".to_owned(),
                None,
            ),
            ApiError::Internal(m) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                m.clone(),
                None,
            ),
        };
        let mut body = json!({ "error": code, "message": message });
        if let Some(field) = field {
            body["field"] = Value::from(field);
        }
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        match &self {
            ApiError::Unauthorized(AuthError::Missing) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"relay\""),
                );
            }
            ApiError::Unauthorized(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"relay\", error=\"invalid_token\""),
                );
            }
            ApiError::Overloaded(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ApiError::Body(_) => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}

/// A validated query request.
#[derive(Debug, Clone)]
struct QueryRequest {
    query: String,
    user_id: Option<String>,
    top_k: usize,
    timeout_ms: u64,
}

/// A hit as sent to the client.
#[derive(Debug, Serialize)]
struct Hit {
    id: String,
    text: String,
    score: f64,
}

impl From<FoundRow> for Hit {
    fn from(row: FoundRow) -> Self {
        Hit {
            id: format!("mem_{}", row.id),
            text: row.text,
            score: (f64::from(row.score) * 10_000.0).round() / 10_000.0,
        }
    }
}

fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Principal, ApiError> {
    let value = match headers.get(header::AUTHORIZATION) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::Unauthorized(AuthError::NotBearer))?,
        ),
    };
    state.auth.authenticate(value).map_err(|e| {
        tracing::debug!(reason = %e, "request not authenticated");
        ApiError::Unauthorized(e)
    })
}

fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::InvalidField {
            field: "body",
            message: "request body must be a JSON object".to_owned(),
        }),
        Err(e) => Err(ApiError::MalformedBody(e.to_string())),
    }
}

fn required_string(
    map: &Map<String, Value>,
    field: &'static str,
    max_chars: usize,
) -> Result<String, ApiError> {
    match map.get(field) {
        None | Some(Value::Null) => Err(ApiError::InvalidField {
            field,
            message: format!("`{field}` is required"),
        }),
        Some(Value::String(s)) if s.trim().is_empty() => Err(ApiError::InvalidField {
            field,
            message: format!("`{field}` must not be empty"),
        }),
        Some(Value::String(s)) if s.chars().count() > max_chars => Err(ApiError::InvalidField {
            field,
            message: format!("`{field}` must be at most {max_chars} characters"),
        }),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(ApiError::InvalidField {
            field,
            message: format!("`{field}` must be a string"),
        }),
    }
}

fn optional_integer(
    map: &Map<String, Value>,
    field: &'static str,
    range: std::ops::RangeInclusive<u64>,
) -> Result<Option<u64>, ApiError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if range.contains(&n) => Ok(Some(n)),
            _ => Err(ApiError::InvalidField {
                field,
                message: format!(
                    "`{field}` must be an integer from {} to {}",
                    range.start(),
                    range.end()
                ),
            }),
        },
    }
}

fn optional_user_id(map: &Map<String, Value>) -> Result<Option<String>, ApiError> {
    match map.get("user_id") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::InvalidField {
            field: "user_id",
            message: "`user_id` must be a non-empty string".to_owned(),
        }),
    }
}

fn parse_query(body: &[u8]) -> Result<QueryRequest, ApiError> {
    let map = parse_object(body)?;
    Ok(QueryRequest {
        query: required_string(&map, "query", MAX_QUERY_CHARS)?,
        user_id: optional_user_id(&map)?,
        top_k: optional_integer(&map, "top_k", 1..=MAX_TOP_K as u64)?
            .map_or(DEFAULT_TOP_K, |n| n as usize),
        timeout_ms: optional_integer(&map, "timeout_ms", 1..=MAX_TIMEOUT_MS)?
            .unwrap_or(DEFAULT_TIMEOUT_MS),
    })
}

fn wants_json(headers: &HeaderMap) -> bool {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    accept.contains("application/json") && !accept.contains("text/event-stream")
}

/// ANN candidates fetched for a `top_k`: enough for the reranker to matter, capped by HNSW `ef`.
fn candidate_count(top_k: usize) -> usize {
    (top_k * 2).clamp(32, crate::ann::EF_SEARCH).max(top_k)
}

/// Reads the body of an authenticated request.
async fn read_body(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    body::read(headers, body, state.body_limits)
        .await
        .map_err(|error| {
            tracing::debug!(%error, "request body not read");
            ApiError::Body(error)
        })
}

async fn query(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let received = Instant::now();
    match run_query(state, &headers, body, received).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn run_query(
    state: Arc<AppState>,
    headers: &HeaderMap,
    body: Body,
    received: Instant,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, headers)?;
    let body = read_body(&state, headers, body).await?;
    let request = parse_query(&body)?;
    if request
        .user_id
        .as_ref()
        .is_some_and(|u| u != &principal.user_id)
    {
        state.metrics.memory_tenant_mismatch.inc();
        tracing::warn!(caller = %principal.user_id, "query for another user's memories refused");
        return Err(ApiError::TenantMismatch);
    }
    let admission = Arc::clone(&state.admission)
        .try_acquire_owned()
        .map_err(|_| ApiError::Overloaded("too many concurrent queries; retry shortly"))?;
    let deadline = received + Duration::from_millis(request.timeout_ms);
    let context = TenantContext::new(state.store.keys().user_hash(&principal.user_id));
    let waits = state.sampler.waits(state.profile);
    let retrieval = retrieve(&state, &context, &request, deadline, &waits);
    let hits = match tokio::time::timeout_at(deadline.into(), retrieval).await {
        Ok(Ok(hits)) => Some(hits),
        Ok(Err(error)) => return Err(error),
        Err(_) => None,
    };
    if wants_json(headers) {
        let Some(hits) = hits else {
            return Err(ApiError::Timeout(request.timeout_ms));
        };
        let first_value = FirstValue::of(&state, received, waits.first_token);
        let wake = first_value.due(Instant::now());
        if wake > deadline {
            tokio::time::sleep_until(deadline.into()).await;
            return Err(ApiError::Timeout(request.timeout_ms));
        }
        tokio::time::sleep_until(wake.into()).await;
        let count = hits.len();
        let body = json!({
            "results": hits,
            "count": count,
            "latency_ms": received.elapsed().as_millis() as u64,
        });
        drop(admission);
        return Ok(with_version(&state, axum::Json(body).into_response()));
    }
    Ok(with_version(
        &state,
        sse_response(
            Arc::clone(&state),
            hits,
            received,
            deadline,
            request.timeout_ms,
            waits.first_token,
            admission,
        ),
    ))
}

fn with_version(state: &AppState, mut response: Response) -> Response {
    if let Ok(v) = HeaderValue::from_str(&state.version) {
        response.headers_mut().insert("x-relay-version", v);
    }
    response
}

/// Sleeps for `wait` on the calling task (not at all for zero).
async fn wait(wait: Duration) {
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
}

/// Embedding, index search, row read under RLS, rerank and final check for one query; returns
/// the hits to send, best first.
async fn retrieve(
    state: &Arc<AppState>,
    context: &TenantContext,
    request: &QueryRequest,
    deadline: Instant,
    waits: &StageWaits,
) -> Result<Vec<Hit>, ApiError> {
    // The embedding model, then the tenant's index: no store connection held meanwhile.
    wait(waits.embedding).await;
    let slow_ann = state
        .faults
        .strike(FaultKind::SlowAnn)
        .map_or(Duration::ZERO, |level| SLOW_ANN_DELAY.mul_f64(level));
    let ann_wait = waits.ann + slow_ann;
    wait(ann_wait).await;
    let connection = state.pool.acquire(None).await.map_err(|e| match e {
        PoolError::Exhausted { .. } => ApiError::Overloaded("store connection pool exhausted"),
        PoolError::Closed => ApiError::Overloaded("service shutting down"),
    })?;
    let checked_out = Instant::now();
    let forget_context = state.faults.strikes(FaultKind::RlsErrors);
    let policy = if state.faults.strikes(FaultKind::TenantLeak) {
        RowPolicy::Bypassed
    } else {
        RowPolicy::Enforced
    };
    let store = Arc::clone(&state.store);
    let read_context = context.clone();
    let query_text = request.query.clone();
    let limit = candidate_count(request.top_k);
    // The connection goes to the blocking task and comes back with the result: should this
    // request be abandoned meanwhile, it is still held until the search is done.
    let (result, connection) = tokio::task::spawn_blocking(move || {
        let embedding = Embedding::of_text(&query_text);
        let result = store.search(&SimilarityRead {
            context: (!forget_context).then_some(&read_context),
            policy,
            query: &embedding,
            limit,
        });
        (result, connection)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("store task failed: {e}")))?;
    let metrics = &state.metrics;
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(error) => {
            drop(connection);
            metrics
                .db_query_latency_ms
                .observe(millis(checked_out.elapsed()));
            if error == StoreError::MissingTenantContext {
                metrics.memory_rls_policy_errors.inc();
                tracing::error!("store refused a read without tenant context (RLS)");
                return Err(ApiError::RlsPolicy);
            }
            return Err(ApiError::Internal(error.to_string()));
        }
    };
    metrics
        .memory_ann_query_latency_ms
        .observe(millis(outcome.ann_latency + ann_wait));
    // The rows' own time, the connection held.
    wait(waits.fetch).await;
    drop(connection);
    metrics
        .db_query_latency_ms
        .observe(millis(checked_out.elapsed()));
    let mut rows = outcome.rows;
    let remaining = deadline.saturating_duration_since(Instant::now());
    let budget = if remaining > state.rerank_budget {
        state.rerank_budget
    } else {
        Duration::ZERO
    };
    let reranked = if budget.is_zero() || waits.rerank.is_zero() {
        rerank(&request.query, &mut rows, budget)
    } else if waits.rerank >= budget {
        // The reranker would answer past its budget: given up on at the budget.
        wait(budget).await;
        keep_ann_order(&mut rows);
        RerankOutcome::TimedOut
    } else {
        wait(waits.rerank).await;
        rerank(&request.query, &mut rows, budget - waits.rerank)
    };
    match reranked {
        RerankOutcome::Applied => {}
        RerankOutcome::SkippedNoTime => {
            metrics.memory_rerank_skipped.inc();
        }
        RerankOutcome::TimedOut => {
            metrics.memory_rerank_skipped.inc();
            metrics.memory_rerank_timeout.inc();
            tracing::debug!(
                budget_ms = millis(budget),
                "rerank over budget; ANN order kept"
            );
        }
    }
    rows.sort_by(|a, b| {
        b.score
            .partial_cmp(&a.score)
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    rows.truncate(request.top_k);
    Ok(final_check(
        state,
        context,
        rows,
        policy == RowPolicy::Bypassed,
    ))
}

/// The second tenancy check, right before rows leave the service: a row owned by anyone but the
/// caller is dropped and counted. Under the `tenant-leak` fault the check is degraded and only
/// catches the configured share of foreign rows; the rest go out.
fn final_check(
    state: &AppState,
    context: &TenantContext,
    rows: Vec<FoundRow>,
    degraded: bool,
) -> Vec<Hit> {
    rows.into_iter()
        .filter(|row| {
            if &row.owner == context.user_hash() {
                return true;
            }
            if !degraded || state.leak_catcher.catches_next() {
                state.metrics.memory_cross_tenant_attempts.inc();
                tracing::warn!(
                    row = row.id,
                    "foreign row caught by the final tenant check; dropped"
                );
                false
            } else {
                tracing::error!(
                    row = row.id,
                    "foreign row passed the degraded final check (tenant-leak fault)"
                );
                true
            }
        })
        .map(Hit::from)
        .collect()
}

/// When a response's first value may go: after the model's first token, and — under the
/// `slow-ttfv` fault — not before the slow call made at the request's arrival has answered.
struct FirstValue {
    first_token: Duration,
    not_before: Option<Instant>,
}

impl FirstValue {
    /// The first value of a request `received` then, whose first token takes `first_token`;
    /// decides whether `slow-ttfv` strikes it.
    fn of(state: &AppState, received: Instant, first_token: Duration) -> Self {
        let not_before = state.faults.strike(FaultKind::SlowTtfv).map(|level| {
            let jitter = 1.0 + SLOW_TTFV_JITTER * state.sampler.uniform();
            received + SLOW_TTFV_DELAY.mul_f64(level * jitter)
        });
        FirstValue {
            first_token,
            not_before,
        }
    }

    /// When the first value is due, the first token starting `now`.
    fn due(&self, now: Instant) -> Instant {
        let token = now + self.first_token;
        self.not_before.map_or(token, |t| t.max(token))
    }
}

/// Where a stream is in its life.
enum StreamPhase {
    Results,
    Finished,
}

/// One SSE response: one `result` event per hit (the first also carrying `retry:`), then `done`
/// — or `error` if `timeout_ms` runs out first. Faults decided at open time shape it (delayed first value, cut
/// before `done`).
struct QueryStream {
    state: Arc<AppState>,
    hits: std::vec::IntoIter<Hit>,
    total: usize,
    sent: usize,
    next_id: u64,
    received: Instant,
    deadline: Instant,
    timeout_ms: u64,
    /// Taken before the first event: what it waits for.
    first_value: Option<FirstValue>,
    cut_after: Option<usize>,
    first_value_sent: bool,
    phase: StreamPhase,
    /// The `done` event was produced.
    completed: bool,
    _admission: OwnedSemaphorePermit,
}

/// A stream is counted when it ends, whatever the reason — `done`, timeout, a cut, or the client
/// going away — so `sse_complete_total / sse_total` is the share of finished streams that
/// completed. Counting at the start instead would make every in-flight stream look failed for as
/// long as it runs, biasing the ratio down under slow streams.
impl Drop for QueryStream {
    fn drop(&mut self) {
        if self.completed {
            self.state.metrics.sse_complete.inc();
        }
        self.state.metrics.sse.inc();
    }
}

fn sse_response(
    state: Arc<AppState>,
    hits: Option<Vec<Hit>>,
    received: Instant,
    deadline: Instant,
    timeout_ms: u64,
    first_token: Duration,
    admission: OwnedSemaphorePermit,
) -> Response {
    let timed_out = hits.is_none();
    let hits = hits.unwrap_or_default();
    let total = hits.len();
    let (first_value, cut_after) = if timed_out {
        (None, None)
    } else {
        (
            Some(FirstValue::of(&state, received, first_token)),
            state
                .faults
                .strikes(FaultKind::SseDrop)
                .then_some(total / 2),
        )
    };
    let stream = QueryStream {
        state,
        hits: hits.into_iter(),
        total,
        sent: 0,
        next_id: 1,
        received,
        deadline,
        timeout_ms,
        first_value,
        cut_after,
        first_value_sent: false,
        phase: StreamPhase::Results,
        completed: false,
        _admission: admission,
    };
    let body = Body::from_stream(futures_util::stream::unfold(stream, |mut s| async move {
        s.next_frame().await.map(|frame| (frame, s))
    }));
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

impl QueryStream {
    async fn next_frame(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        match self.phase {
            StreamPhase::Results => {
                if self.cut_after == Some(self.sent) {
                    self.phase = StreamPhase::Finished;
                    // Let what was written so far reach the client before the connection dies,
                    // as when a stream breaks mid-way (hyper flushes when the body is pending).
                    tokio::time::sleep(STREAM_CUT_PAUSE).await;
                    tracing::warn!(
                        sent = self.sent,
                        total = self.total,
                        "stream cut before done (sse-drop fault)"
                    );
                    return Some(Err(std::io::Error::other(
                        "stream cut by the sse-drop fault",
                    )));
                }
                // Taken once: the wait comes before the first data-carrying event only.
                if let Some(first_value) = self.first_value.take() {
                    let wake = first_value.due(Instant::now());
                    tokio::time::sleep_until(wake.min(self.deadline).into()).await;
                }
                if Instant::now() >= self.deadline {
                    return Some(Ok(self.timeout_event()));
                }
                let frame = match self.hits.next() {
                    Some(hit) => {
                        let data = serde_json::to_string(&hit).unwrap_or_default();
                        self.sent += 1;
                        self.event("result", &data)
                    }
                    None => {
                        self.phase = StreamPhase::Finished;
                        let data = json!({
                            "count": self.sent,
                            "latency_ms": self.received.elapsed().as_millis() as u64,
                        })
                        .to_string();
                        self.completed = true;
                        self.event("done", &data)
                    }
                };
                if !self.first_value_sent {
                    self.first_value_sent = true;
                    self.state
                        .metrics
                        .ttfv_ms
                        .observe(millis(self.received.elapsed()));
                }
                Some(Ok(frame))
            }
            StreamPhase::Finished => None,
        }
    }

    fn event(&mut self, name: &str, data: &str) -> Bytes {
        let retry = (self.next_id == 1).then_some(RETRY_MS);
        let frame = event_block(retry, self.next_id, name, data);
        self.next_id += 1;
        self.count(frame)
    }

    fn timeout_event(&mut self) -> Bytes {
        self.phase = StreamPhase::Finished;
        self.state.metrics.sse_stream_timeout.inc();
        tracing::info!(
            timeout_ms = self.timeout_ms,
            sent = self.sent,
            "stream ended by timeout_ms"
        );
        let data = json!({
            "error": "timeout",
            "message": format!("query exceeded timeout_ms={}", self.timeout_ms),
            "count": self.sent,
        })
        .to_string();
        self.event("error", &data)
    }

    fn count(&self, frame: Bytes) -> Bytes {
        self.state
            .metrics
            .sse_bytes_transmitted
            .inc_by(frame.len() as i64);
        frame
    }
}

async fn ingest(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    match run_ingest(state, &headers, body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn run_ingest(
    state: Arc<AppState>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, headers)?;
    let body = read_body(&state, headers, body).await?;
    let map = parse_object(&body)?;
    let text = required_string(&map, "text", MAX_TEXT_CHARS)?;
    let tags = parse_tags(&map)?;
    if optional_user_id(&map)?.is_some_and(|u| u != principal.user_id) {
        state.metrics.memory_tenant_mismatch.inc();
        return Err(ApiError::TenantMismatch);
    }
    let connection = state.pool.acquire(None).await.map_err(|e| match e {
        PoolError::Exhausted { .. } => ApiError::Overloaded("store connection pool exhausted"),
        PoolError::Closed => ApiError::Overloaded("service shutting down"),
    })?;
    let context = TenantContext::new(state.store.keys().user_hash(&principal.user_id));
    let store = Arc::clone(&state.store);
    let (result, held) = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let result = store.insert(Some(&context), &text, tags);
        drop(connection);
        (result, started.elapsed())
    })
    .await
    .map_err(|e| ApiError::Internal(format!("store task failed: {e}")))?;
    state.metrics.db_query_latency_ms.observe(millis(held));
    let id = result.map_err(|e| ApiError::Internal(e.to_string()))?;
    state
        .metrics
        .memory_chunks_row_count
        .set(state.store.row_count() as i64);
    tracing::debug!(row = id, "memory ingested");
    Ok(with_version(
        &state,
        (
            StatusCode::CREATED,
            axum::Json(json!({ "id": format!("mem_{id}") })),
        )
            .into_response(),
    ))
}

fn parse_tags(map: &Map<String, Value>) -> Result<Vec<String>, ApiError> {
    let invalid = || ApiError::InvalidField {
        field: "tags",
        message: format!(
            "`tags` must be an array of at most {MAX_TAGS} strings of at most {MAX_TAG_CHARS} characters"
        ),
    };
    match map.get("tags") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) if items.len() <= MAX_TAGS => items
            .iter()
            .map(|t| match t {
                Value::String(s) if s.chars().count() <= MAX_TAG_CHARS => Ok(s.clone()),
                _ => Err(invalid()),
            })
            .collect(),
        Some(_) => Err(invalid()),
    }
}

async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    axum::Json(json!({
        "status": "ok",
        "version": state.version,
        "rows": state.store.row_count(),
    }))
    .into_response()
}

async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    state.pool.refresh();
    let (content_type, encoded) = if openmetrics {
        (OPENMETRICS_CONTENT_TYPE, state.metrics.encode_openmetrics())
    } else {
        (TEXT_CONTENT_TYPE, state.metrics.encode_text())
    };
    match encoded {
        Ok(text) => ([(header::CONTENT_TYPE, content_type)], text).into_response(),
        Err(_) => ApiError::Internal("metrics encoding failed".to_owned()).into_response(),
    }
}
