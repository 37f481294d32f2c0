//! Tenant-isolation probes: every ordered pair of test users (A, B), A asks with A's own token
//! for B's secret marker in several ways — the whole marker as the query, each half of it, the
//! owner's name with words a marker note would hold — at several `top_k`, as an event stream
//! and as JSON. Any other user's marker in any answer is a [`Leak`], recorded with who saw
//! whose marker, how it was asked for (never the marker itself) and the arm that answered.
//!
//! Each user first asks for its *own* marker (the self-check): if a user cannot find its own
//! marker the probes could not find a foreign one either, and isolation is unproven rather
//! than clean.
//!
//! A service that echoed the query back would show the asked-for marker in its answer; the
//! half-marker probes cannot be mistaken that way, and each leak says whether the request
//! itself carried the marker found.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use canary_core::verdict::{ProbeRun, ProbeVerdict};
use canary_core::{ArmRole, Secret};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request};
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::burst::pin_header;
use crate::connect::{Connector, Endpoint, RequestBody};
use crate::error::LoadError;
use crate::exchange::Caller;
use crate::report::ErrorKind;
use crate::scenario::{
    CanaryRoute, DEFAULT_ARM_HEADER, DEFAULT_PIN_HEADER, PinProof, render, require_proof,
};
use crate::sse::event_payloads;

/// A test user with the secret marker only its own data holds.
#[derive(Debug, Clone)]
pub struct ProbeUser {
    pub name: String,
    pub token: Secret,
    pub marker: Secret,
}

/// What the probes ask and where.
#[derive(Debug, Clone)]
pub struct ProbeSpec {
    /// The load balancer's URL.
    pub base_url: String,
    /// `Some`: pin every probe to the canary (the pin header, or the canary's own URL).
    /// `None`: through the load balancer as it is.
    pub canary: Option<CanaryRoute>,
    pub method: String,
    pub path: String,
    /// Extra request headers (not secret).
    pub headers: Vec<(String, String)>,
    /// JSON body template: `{{user}}` (the asking user), `{{query}}`, and `{{top_k}}`. A
    /// template without `{{top_k}}` whose JSON has a `top_k` field gets that field replaced.
    pub body: String,
    pub users: Vec<ProbeUser>,
    /// The `top_k` values each way of asking is tried with.
    pub top_k: Vec<u32>,
    pub pin_header: String,
    pub arm_header: String,
    /// The embedded proxy's pin token, sent with every probe when set (required to pin by
    /// header; see [`PinProof`]).
    pub pin_proof: Option<PinProof>,
    /// Probes in flight at once (one connection each).
    pub concurrency: usize,
    pub request_timeout: Duration,
}

impl ProbeSpec {
    /// Probes against relay's query API at `base_url`, pinned to the canary by the pin header,
    /// with `top_k` 1, 24 and 100, four at a time.
    pub fn new(base_url: impl Into<String>, users: Vec<ProbeUser>) -> Self {
        ProbeSpec {
            base_url: base_url.into(),
            canary: Some(CanaryRoute::PinHeader),
            method: "POST".to_owned(),
            path: "/api/v1/memory/query".to_owned(),
            headers: Vec::new(),
            body: r#"{"query": "{{query}}", "user_id": "{{user}}", "top_k": {{top_k}}, "timeout_ms": 5000}"#
                .to_owned(),
            users,
            top_k: vec![1, 24, 100],
            pin_header: DEFAULT_PIN_HEADER.to_owned(),
            arm_header: DEFAULT_ARM_HEADER.to_owned(),
            pin_proof: None,
            concurrency: 4,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// A foreign marker in an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leak {
    /// The user who received it (who asked).
    pub observer: String,
    /// The user whose marker it is.
    pub owner: String,
    /// The user whose marker the request asked for (usually the owner).
    pub asked_about: String,
    /// How it was asked, e.g. `query=marker top_k=24 accept=event-stream` (never the marker).
    pub request: String,
    /// The request itself carried the marker found (an echoing service would show it too).
    pub request_carried_marker: bool,
    /// The arm that answered.
    pub arm: Option<ArmRole>,
    pub status: Option<u16>,
}

/// Whether a user could find its own marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelfCheck {
    pub user: String,
    pub found: bool,
    pub arm: Option<ArmRole>,
    pub status: Option<u16>,
}

/// What probing one owner's data as one observer gave: one cell of the report's user × user
/// matrix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairResult {
    /// The user who asked.
    pub observer: String,
    /// The user whose marker was asked for.
    pub owner: String,
    /// Probe requests sent for this pair.
    pub requests: u64,
    /// Of those, requests that got no answer to inspect.
    pub failed: u64,
    /// Answers per arm (`baseline` / `canary` / `unknown`).
    pub arms: BTreeMap<String, u64>,
    /// The owner's markers the observer received (any of the observer's requests).
    pub leaks: u64,
}

/// What the probes found.
#[derive(Debug, Clone)]
pub struct ProbeReport {
    pub started_at: jiff::Timestamp,
    pub elapsed: Duration,
    /// `pinned to canary via pin-header` / `... via direct-url` / `through the load balancer`.
    pub route: String,
    /// Ordered pairs of users probed.
    pub pairs: usize,
    /// Probe requests sent (self-checks included).
    pub requests: usize,
    /// Probe requests that got no 2xx answer read to its end, by kind.
    pub failed: BTreeMap<String, u64>,
    /// Answers per arm (`baseline` / `canary` / `unknown`).
    pub arms: BTreeMap<String, u64>,
    pub self_checks: Vec<SelfCheck>,
    pub leaks: Vec<Leak>,
    /// Every ordered pair of users, observer by observer, in the users' order.
    pub pair_results: Vec<PairResult>,
}

impl ProbeReport {
    /// Leaked on any leak; unproven when a probe failed or a user could not find its own
    /// marker; clean otherwise.
    pub fn verdict(&self) -> ProbeVerdict {
        if !self.leaks.is_empty() {
            ProbeVerdict::Leaked
        } else if self.failed.values().sum::<u64>() > 0 || self.self_checks.iter().any(|c| !c.found)
        {
            ProbeVerdict::Unproven
        } else {
            ProbeVerdict::Clean
        }
    }

    /// This run as the engine hears it: verdict, pairs probed, leaks found.
    pub fn run(&self) -> ProbeRun {
        ProbeRun {
            verdict: self.verdict(),
            pairs: u32::try_from(self.pairs).unwrap_or(u32::MAX),
            leaks: u32::try_from(self.leaks.len()).unwrap_or(u32::MAX),
        }
    }

    /// Leaks attributed to `arm`.
    pub fn leaks_on(&self, arm: ArmRole) -> usize {
        self.leaks.iter().filter(|l| l.arm == Some(arm)).count()
    }
}

/// How a probe asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ask {
    /// The whole marker as the query.
    Marker,
    /// Its first half.
    MarkerHead,
    /// Its second half.
    MarkerTail,
    /// The owner's name and words a marker note would hold.
    OwnerPhrase,
}

impl Ask {
    fn as_str(self) -> &'static str {
        match self {
            Ask::Marker => "marker",
            Ask::MarkerHead => "marker-first-half",
            Ask::MarkerTail => "marker-second-half",
            Ask::OwnerPhrase => "owner-phrase",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Accept {
    EventStream,
    Json,
}

impl Accept {
    fn header(self) -> &'static str {
        match self {
            Accept::EventStream => "text/event-stream",
            Accept::Json => "application/json",
        }
    }
    fn as_str(self) -> &'static str {
        match self {
            Accept::EventStream => "event-stream",
            Accept::Json => "json",
        }
    }
}

/// One probe request.
#[derive(Debug, Clone)]
struct Probe {
    observer: usize,
    /// `None` for a self-check.
    about: Option<usize>,
    ask: Ask,
    top_k: u32,
    accept: Accept,
}

impl Probe {
    fn describe(&self) -> String {
        format!(
            "query={} top_k={} accept={}",
            self.ask.as_str(),
            self.top_k,
            self.accept.as_str()
        )
    }
}

/// Splits a marker in two halves at a character boundary (for markers of 8+ characters).
fn halves(marker: &str) -> Option<(&str, &str)> {
    let chars = marker.chars().count();
    if chars < 8 {
        return None;
    }
    let mid = marker
        .char_indices()
        .nth(chars / 2)
        .map_or(marker.len(), |(i, _)| i);
    Some(marker.split_at(mid))
}

fn plan(spec: &ProbeSpec) -> Vec<Probe> {
    let mut top_k = spec.top_k.clone();
    if top_k.is_empty() {
        top_k.push(24);
    }
    top_k.sort_unstable();
    top_k.dedup();
    let largest = top_k.last().copied().unwrap_or(24);
    let n = spec.users.len();
    let mut probes = Vec::new();
    for a in 0..n {
        probes.push(Probe {
            observer: a,
            about: None,
            ask: Ask::Marker,
            top_k: largest,
            accept: Accept::EventStream,
        });
    }
    for a in 0..n {
        for b in (0..n).filter(|&b| b != a) {
            let mut asks = vec![Ask::Marker];
            if halves(spec.users[b].marker.expose()).is_some() {
                asks.extend([Ask::MarkerHead, Ask::MarkerTail]);
            }
            asks.push(Ask::OwnerPhrase);
            for &ask in &asks {
                for &k in &top_k {
                    probes.push(Probe {
                        observer: a,
                        about: Some(b),
                        ask,
                        top_k: k,
                        accept: Accept::EventStream,
                    });
                }
            }
            probes.push(Probe {
                observer: a,
                about: Some(b),
                ask: Ask::Marker,
                top_k: largest,
                accept: Accept::Json,
            });
        }
    }
    probes
}

/// The probe's query text. Secret: sent, never shown.
fn query_text(spec: &ProbeSpec, probe: &Probe) -> String {
    let target = probe.about.unwrap_or(probe.observer);
    let user = &spec.users[target];
    let marker = user.marker.expose();
    match probe.ask {
        Ask::Marker => marker.to_owned(),
        Ask::MarkerHead => halves(marker).map_or(marker, |h| h.0).to_owned(),
        Ask::MarkerTail => halves(marker).map_or(marker, |h| h.1).to_owned(),
        Ask::OwnerPhrase => format!(
            "{} private note secret marker recovery reference",
            user.name
        ),
    }
}

fn body_for(spec: &ProbeSpec, observer: &str, query: &str, top_k: u32) -> String {
    let top_k_text = top_k.to_string();
    let rendered = render(
        &spec.body,
        &[("user", observer), ("query", query), ("top_k", &top_k_text)],
        true,
    );
    if spec.body.contains("{{top_k}}") {
        return rendered;
    }
    match serde_json::from_str::<Value>(&rendered) {
        Ok(Value::Object(mut fields)) if fields.contains_key("top_k") => {
            fields.insert("top_k".to_owned(), json!(top_k));
            Value::Object(fields).to_string()
        }
        _ => rendered,
    }
}

/// Every string inside the answer: the raw text, plus the decoded strings of a JSON body or
/// of each event's JSON data (so an escaped marker is found too).
fn answer_text(body: &[u8]) -> String {
    let raw = String::from_utf8_lossy(body);
    let mut out = raw.to_string();
    let mut values: Vec<Value> = Vec::new();
    match serde_json::from_str::<Value>(&raw) {
        Ok(v) => values.push(v),
        Err(_) => values.extend(
            event_payloads(&raw)
                .iter()
                .filter_map(|d| serde_json::from_str::<Value>(d).ok()),
        ),
    }
    fn strings(v: &Value, out: &mut String) {
        match v {
            Value::String(s) => {
                out.push('\n');
                out.push_str(s);
            }
            Value::Array(items) => items.iter().for_each(|i| strings(i, out)),
            Value::Object(fields) => fields.iter().for_each(|(k, v)| {
                out.push('\n');
                out.push_str(k);
                strings(v, out);
            }),
            _ => {}
        }
    }
    for v in &values {
        strings(v, &mut out);
    }
    out
}

/// Runs every probe of `spec` and reports what reached whom.
pub async fn run_probes(spec: &ProbeSpec) -> Result<ProbeReport, LoadError> {
    if spec.users.len() < 2 {
        return Err(LoadError::InvalidScenario(
            "isolation probes need at least two users with markers".to_owned(),
        ));
    }
    if spec.users.iter().any(|u| u.marker.is_empty()) {
        return Err(LoadError::InvalidScenario(
            "a probe user has an empty marker: give every user the marker only its data holds"
                .to_owned(),
        ));
    }
    require_proof(spec.canary.as_ref(), spec.pin_proof.as_ref())?;
    let (url, pin, route) = match &spec.canary {
        None => (
            spec.base_url.clone(),
            false,
            "through the load balancer".to_owned(),
        ),
        Some(CanaryRoute::PinHeader) => (
            spec.base_url.clone(),
            true,
            "pinned to the canary via the pin header".to_owned(),
        ),
        Some(CanaryRoute::Url(url)) => (
            url.clone(),
            false,
            "pinned to the canary via its own URL".to_owned(),
        ),
    };
    let direct = matches!(spec.canary, Some(CanaryRoute::Url(_)));
    let endpoint = Endpoint::parse(&url)?;
    let uri = endpoint.uri(&spec.path)?;
    let method = Method::from_bytes(spec.method.as_bytes()).map_err(|_| {
        LoadError::InvalidScenario(format!("{:?} is not an HTTP method", spec.method))
    })?;
    let mut common = HeaderMap::new();
    common.insert(header::HOST, endpoint.authority.clone());
    common.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    common.insert(
        header::USER_AGENT,
        HeaderValue::from_static(concat!("canary-load-probe/", env!("CARGO_PKG_VERSION"))),
    );
    for (name, value) in &spec.headers {
        let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| LoadError::InvalidHeader {
            name: name.clone(),
            reason: "not a valid header name".to_owned(),
        })?;
        let v = HeaderValue::from_str(value).map_err(|_| LoadError::InvalidHeader {
            name: name.clone(),
            reason: "the value holds characters a header cannot carry".to_owned(),
        })?;
        common.append(n, v);
    }
    if let Some(proof) = &spec.pin_proof {
        let (name, value) = proof.header_pair()?;
        common.insert(name, value);
    }
    if pin {
        common.insert(
            pin_header(&spec.pin_header)?,
            HeaderValue::from_static("canary"),
        );
    }
    let arm_header = pin_header(&spec.arm_header)?;
    let mut auth = Vec::with_capacity(spec.users.len());
    for user in &spec.users {
        let mut v =
            HeaderValue::from_str(&format!("Bearer {}", user.token.expose())).map_err(|_| {
                LoadError::InvalidHeader {
                    name: format!("authorization (user {})", user.name),
                    reason: "the token holds characters a header cannot carry".to_owned(),
                }
            })?;
        v.set_sensitive(true);
        auth.push(v);
    }
    let connector = Connector::new(endpoint)?;
    let probes = Arc::new(plan(spec));
    let shared = Arc::new(Shared {
        spec: spec.clone(),
        method,
        uri,
        common,
        auth,
    });
    let started_at = crate::report::now_millis();
    let start = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut set = JoinSet::new();
    for _ in 0..spec.concurrency.clamp(1, probes.len().max(1)) {
        let probes = probes.clone();
        let shared = shared.clone();
        let next = next.clone();
        let mut caller = Caller::new(
            connector.clone(),
            arm_header.clone(),
            "done".to_owned(),
            spec.request_timeout,
            direct.then_some(ArmRole::Canary),
        );
        set.spawn(async move {
            let mut outcomes = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(probe) = probes.get(i) else { break };
                outcomes.push((i, shared.run(&mut caller, probe).await));
            }
            outcomes
        });
    }
    let mut outcomes = Vec::with_capacity(probes.len());
    while let Some(joined) = set.join_next().await {
        outcomes.extend(joined.map_err(|e| LoadError::Worker(e.to_string()))?);
    }
    outcomes.sort_by_key(|(i, _)| *i);
    let n = spec.users.len();
    let mut report = ProbeReport {
        started_at,
        elapsed: start.elapsed(),
        route,
        pairs: n * (n - 1),
        requests: outcomes.len(),
        failed: BTreeMap::new(),
        arms: BTreeMap::new(),
        self_checks: Vec::new(),
        leaks: Vec::new(),
        pair_results: Vec::new(),
    };
    let mut pairs: BTreeMap<(usize, usize), PairResult> = BTreeMap::new();
    for (i, outcome) in outcomes {
        let probe = &probes[i];
        *report
            .arms
            .entry(arm_name(outcome.arm).to_owned())
            .or_default() += 1;
        if let Some(kind) = &outcome.failure {
            *report.failed.entry(kind.clone()).or_default() += 1;
        }
        match probe.about {
            None => report.self_checks.push(SelfCheck {
                user: spec.users[probe.observer].name.clone(),
                found: outcome.found.contains(&probe.observer),
                arm: outcome.arm,
                status: outcome.status,
            }),
            Some(about) => {
                let asked = pair_result(&mut pairs, &spec.users, probe.observer, about);
                asked.requests += 1;
                if outcome.failure.is_some() {
                    asked.failed += 1;
                }
                *asked
                    .arms
                    .entry(arm_name(outcome.arm).to_owned())
                    .or_default() += 1;
                for &owner in outcome.found.iter().filter(|&&o| o != probe.observer) {
                    pair_result(&mut pairs, &spec.users, probe.observer, owner).leaks += 1;
                    report.leaks.push(Leak {
                        observer: spec.users[probe.observer].name.clone(),
                        owner: spec.users[owner].name.clone(),
                        asked_about: spec.users[about].name.clone(),
                        request: probe.describe(),
                        request_carried_marker: owner == about && probe.ask == Ask::Marker,
                        arm: outcome.arm,
                        status: outcome.status,
                    });
                }
            }
        }
    }
    report.pair_results = pairs.into_values().collect();
    for leak in &report.leaks {
        tracing::error!(
            observer = %leak.observer,
            owner = %leak.owner,
            request = %leak.request,
            arm = arm_name(leak.arm),
            "isolation probe: a foreign marker reached a user"
        );
    }
    Ok(report)
}

/// The result of `observer` probing `owner`'s data, started empty on first use.
fn pair_result<'a>(
    pairs: &'a mut BTreeMap<(usize, usize), PairResult>,
    users: &[ProbeUser],
    observer: usize,
    owner: usize,
) -> &'a mut PairResult {
    pairs
        .entry((observer, owner))
        .or_insert_with(|| PairResult {
            observer: users[observer].name.clone(),
            owner: users[owner].name.clone(),
            requests: 0,
            failed: 0,
            arms: BTreeMap::new(),
            leaks: 0,
        })
}

struct Shared {
    spec: ProbeSpec,
    method: Method,
    uri: http::Uri,
    common: HeaderMap,
    auth: Vec<HeaderValue>,
}

struct Outcome {
    status: Option<u16>,
    arm: Option<ArmRole>,
    /// Users whose marker the answer held.
    found: Vec<usize>,
    failure: Option<String>,
}

impl Shared {
    async fn run(&self, caller: &mut Caller, probe: &Probe) -> Outcome {
        let observer = &self.spec.users[probe.observer];
        let query = query_text(&self.spec, probe);
        let body = body_for(&self.spec, &observer.name, &query, probe.top_k);
        let mut request = Request::new(RequestBody::new(Bytes::from(body)));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        let headers = request.headers_mut();
        *headers = self.common.clone();
        headers.insert(header::AUTHORIZATION, self.auth[probe.observer].clone());
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static(probe.accept.header()),
        );
        let mut answer = Vec::new();
        // Any 2xx is an answer to inspect; the burst's expected status does not apply here.
        let m = caller
            .call(request, Instant::now(), 200, Some(&mut answer))
            .await;
        let text = answer_text(&answer);
        let found = self
            .spec
            .users
            .iter()
            .enumerate()
            .filter(|(_, u)| text.contains(u.marker.expose()))
            .map(|(i, _)| i)
            .collect();
        let answered = m.status.is_some_and(|s| (200..300).contains(&s));
        let failure = match (m.error, m.status) {
            (None, _) => None,
            // Another 2xx, read to its end, is an answer too.
            (Some(ErrorKind::UnexpectedStatus), _) if answered => None,
            (Some(ErrorKind::UnexpectedStatus), Some(status)) => Some(format!("status-{status}")),
            (Some(kind), _) => Some(kind.as_str().to_owned()),
        };
        Outcome {
            status: m.status,
            arm: m.arm,
            found,
            failure,
        }
    }
}

fn arm_name(arm: Option<ArmRole>) -> &'static str {
    match arm {
        Some(ArmRole::Canary) => "canary",
        Some(ArmRole::Baseline) => "baseline",
        None => "unknown",
    }
}

fn verdict_name(v: ProbeVerdict) -> &'static str {
    match v {
        ProbeVerdict::Clean => "clean",
        ProbeVerdict::Leaked => "LEAKED",
        ProbeVerdict::Unproven => "unproven",
    }
}

/// The probe report as text for the transcript and the evidence: totals, self-checks, and one
/// line per leak. Holds no token and no marker.
pub fn probe_text(report: &ProbeReport) -> String {
    let mut out = String::new();
    let failed: u64 = report.failed.values().sum();
    let _ = writeln!(
        out,
        "# isolation probes {}: {} pairs, {} requests, {}, {} failed, {} leak(s): {}",
        report.started_at,
        report.pairs,
        report.requests,
        report.route,
        failed,
        report.leaks.len(),
        verdict_name(report.verdict())
    );
    if failed > 0 {
        let kinds: Vec<String> = report
            .failed
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(out, "# failed probes by kind: {}", kinds.join(", "));
    }
    let arms: Vec<String> = report
        .arms
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    let _ = writeln!(out, "# answered by: {}", arms.join(", "));
    for c in &report.self_checks {
        let _ = writeln!(
            out,
            "{} self-check {}: own marker {} (arm {})",
            if c.found { '✓' } else { '✗' },
            c.user,
            if c.found {
                "found"
            } else {
                "NOT found: probes cannot prove isolation for this user"
            },
            arm_name(c.arm)
        );
    }
    for l in &report.leaks {
        let _ = writeln!(
            out,
            "✗ LEAK {} received {}'s marker asking about {} ({}{}) status {} arm {}",
            l.observer,
            l.owner,
            l.asked_about,
            l.request,
            if l.request_carried_marker {
                ", the request carried that marker"
            } else {
                ""
            },
            l.status.map_or_else(|| "-".to_owned(), |s| s.to_string()),
            arm_name(l.arm)
        );
    }
    out
}

/// The probe report as JSON for the evidence. Holds no token and no marker.
pub fn probe_json(report: &ProbeReport) -> Value {
    json!({
        "timestamp": report.started_at.to_string(),
        "duration_ms": (report.elapsed.as_secs_f64() * 1000.0).round(),
        "route": report.route,
        "verdict": verdict_name(report.verdict()).to_ascii_lowercase(),
        "pairs": report.pairs,
        "requests": report.requests,
        "failed": report.failed,
        "answered_by": report.arms,
        "self_checks": report.self_checks.iter().map(|c| json!({
            "user": c.user, "found": c.found, "arm": arm_name(c.arm), "status": c.status,
        })).collect::<Vec<_>>(),
        "leaks": report.leaks.iter().map(|l| json!({
            "observer": l.observer,
            "owner": l.owner,
            "asked_about": l.asked_about,
            "request": l.request,
            "request_carried_marker": l.request_carried_marker,
            "arm": arm_name(l.arm),
            "status": l.status,
        })).collect::<Vec<_>>(),
        "pair_results": report.pair_results.iter().map(|p| json!({
            "observer": p.observer,
            "owner": p.owner,
            "requests": p.requests,
            "failed": p.failed,
            "answered_by": p.arms,
            "leaks": p.leaks,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, marker: &str) -> ProbeUser {
        ProbeUser {
            name: name.into(),
            token: Secret::new(format!("token-{name}")),
            marker: Secret::new(marker),
        }
    }

    #[test]
    fn every_ordered_pair_is_asked_in_every_way() {
        let spec = ProbeSpec::new(
            "http://127.0.0.1:1",
            vec![
                user("a", "MARKER-a-0123456789ab"),
                user("b", "MARKER-b-0123456789ab"),
                user("c", "short"),
            ],
        );
        let probes = plan(&spec);
        let self_checks = probes.iter().filter(|p| p.about.is_none()).count();
        assert_eq!(self_checks, 3);
        // Pairs about a or b: 4 asks × 3 top_k + 1 JSON; about c (a short marker): 2 asks × 3 + 1.
        let about = |b: usize| probes.iter().filter(|p| p.about == Some(b)).count();
        assert_eq!((about(0), about(1), about(2)), (2 * 13, 2 * 13, 2 * 7));
        for p in &probes {
            assert!(!p.describe().contains("MARKER"), "{}", p.describe());
        }
    }

    #[test]
    fn bodies_take_top_k_from_the_template_or_the_json() {
        let mut spec = ProbeSpec::new("http://127.0.0.1:1", vec![user("a", "m1"), user("b", "m2")]);
        assert_eq!(
            body_for(&spec, "a", "q\"x", 7),
            r#"{"query": "q\"x", "user_id": "a", "top_k": 7, "timeout_ms": 5000}"#
        );
        spec.body = r#"{"query": "{{query}}", "user_id": "{{user}}", "top_k": 24}"#.into();
        let v: Value = serde_json::from_str(&body_for(&spec, "a", "q", 100)).unwrap();
        assert_eq!(v["top_k"], 100);
        assert_eq!(v["user_id"], "a");
    }

    #[test]
    fn markers_are_found_raw_and_escaped() {
        let sse = b"event: result\ndata: {\"text\":\"ref \\u004dARKER-b-1\"}\n\nevent: done\ndata: {}\n\n";
        assert!(answer_text(sse).contains("MARKER-b-1"));
        let json = br#"{"results":[{"text":"x MARKER-c-2 y"}]}"#;
        assert!(answer_text(json).contains("MARKER-c-2"));
        assert!(!answer_text(b"nothing here").contains("MARKER"));
        assert_eq!(halves("MARKER-a-0123"), Some(("MARKER", "-a-0123")));
        assert_eq!(halves("short"), None);
    }

    #[test]
    fn verdicts_follow_leaks_failures_and_self_checks() {
        let mut r = ProbeReport {
            started_at: jiff::Timestamp::UNIX_EPOCH,
            elapsed: Duration::ZERO,
            route: "x".into(),
            pairs: 2,
            requests: 2,
            failed: BTreeMap::new(),
            arms: BTreeMap::new(),
            self_checks: vec![SelfCheck {
                user: "a".into(),
                found: true,
                arm: None,
                status: Some(200),
            }],
            leaks: Vec::new(),
            pair_results: Vec::new(),
        };
        assert_eq!(r.verdict(), ProbeVerdict::Clean);
        r.self_checks[0].found = false;
        assert_eq!(r.verdict(), ProbeVerdict::Unproven);
        r.leaks.push(Leak {
            observer: "a".into(),
            owner: "b".into(),
            asked_about: "b".into(),
            request: "query=marker top_k=1 accept=json".into(),
            request_carried_marker: true,
            arm: Some(ArmRole::Canary),
            status: Some(200),
        });
        assert_eq!(r.verdict(), ProbeVerdict::Leaked);
        assert_eq!(r.leaks_on(ArmRole::Canary), 1);
        let text = probe_text(&r);
        assert!(text.contains("LEAK a received b's marker"), "{text}");
        assert_eq!(probe_json(&r)["verdict"], "leaked");
    }
}
