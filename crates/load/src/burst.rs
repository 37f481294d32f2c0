//! Running a [`Scenario`]: requests prepared once (headers per user, bodies per user and
//! query), then a closed loop (one task and one connection per user) or an open loop (a
//! schedule of due times served by a capped set of workers), pass by pass, into a
//! [`BurstReport`].
//!
//! The hot path allocates nothing a benchmark would notice: bodies are shared buffers, each
//! worker's records go into a vector sized up front, and histograms are built once at the end.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use canary_core::ArmRole;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Uri};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use crate::connect::{Connector, Endpoint, RequestBody};
use crate::error::LoadError;
use crate::exchange::{Caller, Measured};
use crate::report::{ArmSummary, BurstReport, ErrorKind, RequestRecord, Summary, TargetSummary};
use crate::scenario::{Mode, OpenLoop, Pass, Scenario, Target, is_json_body, render};
use crate::sufficiency;

/// Where a running burst is. Sent after each request when a progress channel is given;
/// dropped, never waited for, when the channel is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// The pass under way.
    pub target: Target,
    /// Requests finished in this pass.
    pub completed: u64,
    /// Requests this pass will send.
    pub total: u64,
    /// Requests that failed in this pass so far.
    pub failed: u64,
}

/// Runs `scenario` and reports every request and the summaries. Individual request failures
/// are part of the report; an `Err` means the burst could not run at all (invalid scenario or
/// URL, TLS setup).
pub async fn run_burst(
    scenario: &Scenario,
    progress: Option<mpsc::Sender<Progress>>,
) -> Result<BurstReport, LoadError> {
    scenario.validate()?;
    let passes = scenario.passes();
    // Everything that can be wrong with the URLs and headers is found before sending.
    let mut prepared = Vec::with_capacity(passes.len());
    for pass in &passes {
        prepared.push(Arc::new(Prepared::new(scenario, pass)?));
    }
    let started_at = crate::report::now_millis();
    let start = Instant::now();
    let mut by_pass = Vec::with_capacity(passes.len());
    for (pass, prepared) in passes.iter().zip(prepared) {
        by_pass.push(match &scenario.mode {
            Mode::ClosedLoop => {
                closed_loop(scenario, pass, prepared, start, progress.clone()).await?
            }
            Mode::OpenLoop(o) => {
                open_loop(scenario, o, pass, prepared, start, progress.clone()).await?
            }
        });
    }
    // The measured span ends with the last answer; ordering and summing up come after it.
    let elapsed = start.elapsed();
    let mut records = Vec::with_capacity(by_pass.iter().map(Vec::len).sum());
    for mut pass_records in by_pass {
        pass_records.sort_by_key(|r| r.sent_at);
        records.append(&mut pass_records);
    }
    Ok(report(scenario, passes.len(), started_at, elapsed, records))
}

fn report(
    scenario: &Scenario,
    passes: usize,
    started_at: jiff::Timestamp,
    elapsed: Duration,
    records: Vec<RequestRecord>,
) -> BurstReport {
    let late_after = BurstReport::late_after(&scenario.mode);
    let overall = Summary::of(&records, late_after);
    let per_arm: Vec<ArmSummary> = [Some(ArmRole::Baseline), Some(ArmRole::Canary), None]
        .into_iter()
        .filter(|arm| records.iter().any(|r| r.arm == *arm))
        .map(|arm| ArmSummary {
            arm,
            summary: Summary::of(records.iter().filter(|r| r.arm == arm), late_after),
        })
        .collect();
    let per_target = if passes > 1 {
        [Target::Lb, Target::Canary]
            .into_iter()
            .map(|target| TargetSummary {
                target,
                summary: Summary::of(records.iter().filter(|r| r.target == target), late_after),
            })
            .collect()
    } else {
        Vec::new()
    };
    // The canary's share of load-balancer traffic: configured, else as observed.
    let lb: Vec<&RequestRecord> = records.iter().filter(|r| r.target == Target::Lb).collect();
    let observed_share = (!lb.is_empty()).then(|| {
        100.0 * lb.iter().filter(|r| r.arm == Some(ArmRole::Canary)).count() as f64
            / lb.len() as f64
    });
    let share = scenario.canary_weight_percent.or(observed_share);
    let canary = per_arm
        .iter()
        .find(|a| a.arm == Some(ArmRole::Canary))
        .map(|a| &a.summary);
    let sufficiency = sufficiency::assess(&scenario.sample_rules, canary, share);
    BurstReport {
        started_at,
        elapsed,
        mode: scenario.mode.clone(),
        targeting: scenario.targeting.clone(),
        users: scenario.users.iter().map(|u| u.name.clone()).collect(),
        requests_per_user: scenario.requests_per_user,
        pause: scenario.pause,
        expect_status: scenario.expect_status,
        records,
        overall,
        per_arm,
        per_target,
        sufficiency,
    }
}

/// The requests of one pass, built once.
pub(crate) struct Prepared {
    method: Method,
    uri: Uri,
    users: Vec<PreparedUser>,
    queries: usize,
    connector: Connector,
    arm_header: HeaderName,
    fallback_arm: Option<ArmRole>,
    target: Target,
}

struct PreparedUser {
    name: Arc<str>,
    headers: HeaderMap,
    /// One body per query (one in all when the template has no `{{query}}`).
    bodies: Vec<Bytes>,
}

impl Prepared {
    fn new(scenario: &Scenario, pass: &Pass) -> Result<Self, LoadError> {
        let endpoint = Endpoint::parse(&pass.url)?;
        let uri = endpoint.uri(&scenario.path)?;
        let method = Method::from_bytes(scenario.method.as_bytes()).map_err(|_| {
            LoadError::InvalidScenario(format!(
                "{:?} is not an HTTP method: use GET, POST, ...",
                scenario.method
            ))
        })?;
        let mut common = HeaderMap::new();
        common.insert(header::HOST, endpoint.authority.clone());
        common.insert(
            header::USER_AGENT,
            HeaderValue::from_static(concat!("canary-load/", env!("CARGO_PKG_VERSION"))),
        );
        for (name, value) in &scenario.headers {
            let header_name =
                HeaderName::from_bytes(name.as_bytes()).map_err(|_| LoadError::InvalidHeader {
                    name: name.clone(),
                    reason: "not a valid header name".to_owned(),
                })?;
            let header_value =
                HeaderValue::from_str(value).map_err(|_| LoadError::InvalidHeader {
                    name: name.clone(),
                    reason: "the value holds characters a header cannot carry".to_owned(),
                })?;
            common.append(header_name, header_value);
        }
        let content_type = common
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let json = scenario
            .body
            .as_deref()
            .is_some_and(|b| is_json_body(b, content_type.as_deref()));
        if scenario.body.is_some() && content_type.is_none() {
            common.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(if json {
                    "application/json"
                } else {
                    "text/plain; charset=utf-8"
                }),
            );
        }
        if let Some(proof) = &scenario.pin_proof {
            let (name, value) = proof.header_pair()?;
            common.insert(name, value);
        }
        if pass.pin {
            let pin = pin_header(&scenario.pin_header)?;
            common.insert(pin, HeaderValue::from_static("canary"));
        }
        let uses_query = scenario
            .body
            .as_deref()
            .is_some_and(|b| b.contains("{{query}}") || b.contains("{{ query }}"));
        let queries = if uses_query {
            scenario.queries.len()
        } else {
            1
        };
        let mut users = Vec::with_capacity(scenario.users.len());
        for user in &scenario.users {
            let mut headers = common.clone();
            let mut auth = HeaderValue::from_str(&format!("Bearer {}", user.token.expose()))
                .map_err(|_| LoadError::InvalidHeader {
                    name: format!("authorization (user {})", user.name),
                    reason: "the token holds characters a header cannot carry".to_owned(),
                })?;
            auth.set_sensitive(true);
            headers.insert(header::AUTHORIZATION, auth);
            let bodies = (0..queries)
                .map(|q| match &scenario.body {
                    None => Bytes::new(),
                    Some(template) => {
                        let query = scenario.queries.get(q).map_or("", String::as_str);
                        Bytes::from(render(
                            template,
                            &[("user", &user.name), ("query", query)],
                            json,
                        ))
                    }
                })
                .collect();
            users.push(PreparedUser {
                name: Arc::from(user.name.as_str()),
                headers,
                bodies,
            });
        }
        let arm_header = HeaderName::from_bytes(scenario.arm_header.as_bytes()).map_err(|_| {
            LoadError::InvalidHeader {
                name: scenario.arm_header.clone(),
                reason: "not a valid header name".to_owned(),
            }
        })?;
        Ok(Prepared {
            method,
            uri,
            users,
            queries,
            connector: Connector::new(endpoint)?,
            arm_header,
            fallback_arm: pass.direct.then_some(ArmRole::Canary),
            target: pass.target,
        })
    }

    /// User `user`'s request with query `query` (taken modulo the queries).
    fn request(&self, user: usize, query: usize) -> Request<RequestBody> {
        let u = &self.users[user];
        let body = u.bodies[query % self.queries.max(1)].clone();
        let mut request = Request::new(RequestBody::new(body));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = u.headers.clone();
        request
    }

    fn caller(&self, terminal: &str, timeout: Duration) -> Caller {
        Caller::new(
            self.connector.clone(),
            self.arm_header.clone(),
            terminal.to_owned(),
            timeout,
            self.fallback_arm,
        )
    }

    fn record(
        &self,
        user: usize,
        index: u32,
        sent_at: Duration,
        late_by: Duration,
        m: Measured,
    ) -> RequestRecord {
        RequestRecord {
            user: self.users[user].name.clone(),
            index,
            target: self.target,
            sent_at,
            late_by,
            status: m.status,
            ttfb: m.ttfb,
            ttfv: m.ttfv,
            total: m.total,
            events: m.events,
            bytes: m.bytes,
            event_stream: m.event_stream,
            terminal_seen: m.terminal_seen,
            error: m.error,
            arm: m.arm,
        }
    }
}

pub(crate) fn pin_header(name: &str) -> Result<HeaderName, LoadError> {
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| LoadError::InvalidHeader {
        name: name.to_owned(),
        reason: "not a valid header name".to_owned(),
    })
}

/// Progress counters of one pass, shared by its workers.
struct Tally {
    target: Target,
    total: u64,
    completed: AtomicU64,
    failed: AtomicU64,
    tx: Option<mpsc::Sender<Progress>>,
}

impl Tally {
    fn new(target: Target, total: u64, tx: Option<mpsc::Sender<Progress>>) -> Arc<Self> {
        Arc::new(Tally {
            target,
            total,
            completed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            tx,
        })
    }

    fn done(&self, failed: bool) {
        let Some(tx) = &self.tx else { return };
        let completed = self.completed.fetch_add(1, Ordering::Relaxed) + 1;
        let failed =
            self.failed.fetch_add(u64::from(failed), Ordering::Relaxed) + u64::from(failed);
        let _ = tx.try_send(Progress {
            target: self.target,
            completed,
            total: self.total,
            failed,
        });
    }
}

/// Runs `task(0..tasks)` and collects their records: on the caller's runtime when `threads`
/// is 0, else spread over `threads` dedicated OS threads, each with its own single-threaded
/// runtime (like `wrk -t`): no work stealing and no cross-thread wake-ups between a request and
/// its connection.
async fn run_tasks<F, Fut>(
    tasks: usize,
    threads: usize,
    task: F,
) -> Result<Vec<RequestRecord>, LoadError>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Vec<RequestRecord>> + Send + 'static,
{
    let mut records = Vec::new();
    if threads == 0 {
        let mut set = JoinSet::new();
        for i in 0..tasks {
            set.spawn(task(i));
        }
        while let Some(joined) = set.join_next().await {
            records.append(&mut joined.map_err(|e| LoadError::Worker(e.to_string()))?);
        }
        return Ok(records);
    }
    let task = Arc::new(task);
    let threads = threads.min(tasks).max(1);
    let mut results = Vec::with_capacity(threads);
    for t in 0..threads {
        let (tx, rx) = oneshot::channel::<Result<Vec<RequestRecord>, String>>();
        let task = task.clone();
        std::thread::Builder::new()
            .name(format!("canary-load-{t}"))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(format!("cannot start a runtime: {e}")));
                        return;
                    }
                };
                let out = runtime.block_on(async move {
                    let mut set = JoinSet::new();
                    for i in (t..tasks).step_by(threads) {
                        set.spawn(task(i));
                    }
                    let mut records = Vec::new();
                    while let Some(joined) = set.join_next().await {
                        records.append(&mut joined.map_err(|e| e.to_string())?);
                    }
                    Ok(records)
                });
                let _ = tx.send(out);
            })
            .map_err(|e| LoadError::Worker(format!("cannot start a load thread: {e}")))?;
        results.push(rx);
    }
    for rx in results {
        let mut part = rx
            .await
            .map_err(|_| LoadError::Worker("a load thread ended without its records".to_owned()))?
            .map_err(LoadError::Worker)?;
        records.append(&mut part);
    }
    Ok(records)
}

/// How one user's request answered in [`check_users`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserCheck {
    pub user: String,
    /// The answer's status, when one came.
    pub status: Option<u16>,
    /// What went wrong: `None` when the request succeeded as the burst counts success.
    pub error: Option<ErrorKind>,
}

/// Sends one request per user, exactly as the burst's first pass would send it (method, path,
/// body, token, pin), one user after another: the preflight's proof that every token is
/// accepted before any load is sent.
pub async fn check_users(scenario: &Scenario) -> Result<Vec<UserCheck>, LoadError> {
    scenario.validate()?;
    let passes = scenario.passes();
    let Some(pass) = passes.first() else {
        return Ok(Vec::new());
    };
    let prepared = Prepared::new(scenario, pass)?;
    let mut caller = prepared.caller(&scenario.terminal_event, scenario.request_timeout);
    let mut checks = Vec::with_capacity(scenario.users.len());
    for (index, user) in scenario.users.iter().enumerate() {
        let m = caller
            .call(
                prepared.request(index, index),
                Instant::now(),
                scenario.expect_status,
                None,
            )
            .await;
        checks.push(UserCheck {
            user: user.name.clone(),
            status: m.status,
            error: m.error,
        });
    }
    Ok(checks)
}

/// Each user on its own task and connection: request, pause, request, ...
async fn closed_loop(
    scenario: &Scenario,
    pass: &Pass,
    prepared: Arc<Prepared>,
    start: Instant,
    progress: Option<mpsc::Sender<Progress>>,
) -> Result<Vec<RequestRecord>, LoadError> {
    let per_user = scenario.requests_per_user;
    let users = scenario.users.len();
    let tally = Tally::new(pass.target, u64::from(per_user) * users as u64, progress);
    let pause = scenario.pause;
    let expect = scenario.expect_status;
    let (terminal, timeout) = (scenario.terminal_event.clone(), scenario.request_timeout);
    run_tasks(users, scenario.threads, move |user| {
        let prepared = prepared.clone();
        let tally = tally.clone();
        let mut caller = prepared.caller(&terminal, timeout);
        async move {
            let mut records = Vec::with_capacity(per_user as usize);
            for index in 0..per_user {
                if index > 0 && !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
                let request = prepared.request(user, user + index as usize);
                let sent = Instant::now();
                let m = caller.call(request, sent, expect, None).await;
                tally.done(m.error.is_some());
                records.push(prepared.record(user, index, sent - start, Duration::ZERO, m));
            }
            records
        }
    })
    .await
}

/// Request `i` is due at `pass start + i / rate` and goes to user `i mod users`; at most
/// `max_concurrency` workers, each with its own connection, take due requests in order.
async fn open_loop(
    scenario: &Scenario,
    open: &OpenLoop,
    pass: &Pass,
    prepared: Arc<Prepared>,
    start: Instant,
    progress: Option<mpsc::Sender<Progress>>,
) -> Result<Vec<RequestRecord>, LoadError> {
    let scheduled = open.scheduled();
    let workers = (open.max_concurrency as u64).min(scheduled).max(1) as usize;
    let users = scenario.users.len() as u64;
    let rate = open.rate_per_second;
    let tally = Tally::new(pass.target, scheduled, progress);
    let next = Arc::new(AtomicU64::new(0));
    let expect = scenario.expect_status;
    let (terminal, timeout) = (scenario.terminal_event.clone(), scenario.request_timeout);
    let pass_start = Instant::now();
    run_tasks(workers, scenario.threads, move |_| {
        let prepared = prepared.clone();
        let tally = tally.clone();
        let next = next.clone();
        let mut caller = prepared.caller(&terminal, timeout);
        async move {
            let mut records = Vec::with_capacity((scheduled as usize).div_ceil(workers));
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= scheduled {
                    break;
                }
                let due = pass_start + Duration::from_secs_f64(i as f64 / rate);
                if Instant::now() < due {
                    tokio::time::sleep_until(due.into()).await;
                }
                let late_by = Instant::now().saturating_duration_since(due);
                let user = (i % users) as usize;
                let index = (i / users) as u32;
                let request = prepared.request(user, i as usize);
                // Measured from the due time: waiting for a free worker is part of latency.
                let m = caller.call(request, due, expect, None).await;
                tally.done(m.error.is_some());
                records.push(prepared.record(user, index, due - start, late_by, m));
            }
            records
        }
    })
    .await
}
