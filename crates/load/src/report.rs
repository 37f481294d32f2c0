//! What a burst measured: one record per request, summaries overall, per arm and per target
//! (HDR histograms → percentiles), the sample-sufficiency verdicts, and the runbook's two
//! renderings — the transcript (`canary_load_burst_<ts>.log`) and the summary
//! (`CANARY_LOAD_SUMMARY_<ts>.json`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use canary_core::ArmRole;
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{Value, json};

use crate::scenario::{CanaryRoute, Mode, Target, Targeting};
use crate::sufficiency::{SampleKind, SufficiencyCheck};

/// Why a request did not succeed. Kinds, never raw messages: they label summaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// No TCP connection (refused, unreachable, name not resolved).
    Connect,
    /// The TLS handshake failed.
    Tls,
    /// The request failed before a response head arrived (reset, closed, not HTTP).
    Request,
    /// No complete answer within the request timeout.
    Timeout,
    /// Answered with a status other than the expected one.
    UnexpectedStatus,
    /// The body broke off mid-way (the connection was cut or reset).
    StreamCut,
    /// The event stream ended cleanly but without its terminal event.
    Incomplete,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Tls => "tls",
            ErrorKind::Request => "request",
            ErrorKind::Timeout => "timeout",
            ErrorKind::UnexpectedStatus => "unexpected-status",
            ErrorKind::StreamCut => "stream-cut",
            ErrorKind::Incomplete => "incomplete",
        }
    }
}

/// One request of a burst. Durations count from the request's origin: the moment it was sent
/// (closed loop) or was due (open loop).
#[derive(Debug, Clone)]
pub struct RequestRecord {
    /// The user who sent it.
    pub user: Arc<str>,
    /// The user's request number, from 0 (the transcript shows it from 1: `user_1_q1`).
    pub index: u32,
    /// Where it went.
    pub target: Target,
    /// Origin, as an offset from the start of the burst.
    pub sent_at: Duration,
    /// How long after its due time it was actually sent (open loop; zero in a closed loop).
    pub late_by: Duration,
    /// The response status, if a response head arrived.
    pub status: Option<u16>,
    /// Time to the response head.
    pub ttfb: Option<Duration>,
    /// Time to first value: the first complete event carrying data for an event stream, the
    /// first body byte otherwise.
    pub ttfv: Option<Duration>,
    /// Time to the end of the body (or to the failure).
    pub total: Duration,
    /// Events dispatched (event streams only).
    pub events: u32,
    /// Body bytes received.
    pub bytes: u64,
    /// The answer was `text/event-stream`.
    pub event_stream: bool,
    /// The stream's terminal event arrived.
    pub terminal_seen: bool,
    /// `None` when the request succeeded.
    pub error: Option<ErrorKind>,
    /// The arm that answered (the arm header, or the canary for a direct canary URL).
    pub arm: Option<ArmRole>,
}

impl RequestRecord {
    pub fn succeeded(&self) -> bool {
        self.error.is_none()
    }

    /// The runbook's label: `user_1_q3` for user_1's third request.
    pub fn label(&self) -> String {
        format!("{}_q{}", self.user, self.index + 1)
    }
}

/// p50/p95/p99/max/mean of one measure, in milliseconds, over `count` values.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Option<Percentiles> {
        let ms = |us: u64| us as f64 / 1000.0;
        (!h.is_empty()).then(|| Percentiles {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.50)),
            p95: ms(h.value_at_quantile(0.95)),
            p99: ms(h.value_at_quantile(0.99)),
            max: ms(h.max()),
            mean: h.mean() / 1000.0,
        })
    }
}

/// Figures over a set of requests. Latency covers every request, failed ones included (a
/// timeout counts at its full length); TTFV covers the requests that delivered a value.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub total: u64,
    pub successful: u64,
    pub failed: u64,
    /// `None` without requests.
    pub success_rate_percent: Option<f64>,
    pub avg_latency_ms: Option<f64>,
    pub latency: Option<Percentiles>,
    pub ttfb: Option<Percentiles>,
    pub ttfv: Option<Percentiles>,
    /// Answers that were event streams, and those among them whose terminal event arrived.
    pub event_streams: u64,
    pub streams_complete: u64,
    /// `None` without event streams.
    pub stream_completion_percent: Option<f64>,
    pub errors: BTreeMap<ErrorKind, u64>,
    pub statuses: BTreeMap<u16, u64>,
    /// Open loop: requests sent later than the scheduler's tolerance.
    pub late_sends: u64,
    pub max_late_ms: f64,
}

impl Summary {
    /// Summarises `records`; `late_after` is the open loop's lateness tolerance.
    pub(crate) fn of<'a>(
        records: impl IntoIterator<Item = &'a RequestRecord>,
        late_after: Duration,
    ) -> Summary {
        let mut latency = histogram();
        let mut ttfb = histogram();
        let mut ttfv = histogram();
        let mut s = Summary {
            total: 0,
            successful: 0,
            failed: 0,
            success_rate_percent: None,
            avg_latency_ms: None,
            latency: None,
            ttfb: None,
            ttfv: None,
            event_streams: 0,
            streams_complete: 0,
            stream_completion_percent: None,
            errors: BTreeMap::new(),
            statuses: BTreeMap::new(),
            late_sends: 0,
            max_late_ms: 0.0,
        };
        let mut late_max = Duration::ZERO;
        for r in records {
            s.total += 1;
            match r.error {
                None => s.successful += 1,
                Some(kind) => {
                    s.failed += 1;
                    *s.errors.entry(kind).or_default() += 1;
                }
            }
            if let Some(status) = r.status {
                *s.statuses.entry(status).or_default() += 1;
            }
            latency.saturating_record(micros(r.total));
            if let Some(t) = r.ttfb {
                ttfb.saturating_record(micros(t));
            }
            if let Some(t) = r.ttfv {
                ttfv.saturating_record(micros(t));
            }
            if r.event_stream {
                s.event_streams += 1;
                s.streams_complete += u64::from(r.terminal_seen);
            }
            if r.late_by > late_after {
                s.late_sends += 1;
            }
            late_max = late_max.max(r.late_by);
        }
        s.max_late_ms = late_max.as_secs_f64() * 1000.0;
        if s.total > 0 {
            s.success_rate_percent = Some(100.0 * s.successful as f64 / s.total as f64);
        }
        if s.event_streams > 0 {
            s.stream_completion_percent =
                Some(100.0 * s.streams_complete as f64 / s.event_streams as f64);
        }
        s.latency = Percentiles::of(&latency);
        s.avg_latency_ms = s.latency.map(|p| p.mean);
        s.ttfb = Percentiles::of(&ttfb);
        s.ttfv = Percentiles::of(&ttfv);
        s
    }
}

/// Microsecond histogram from 1 µs to one hour at 3 significant digits.
fn histogram() -> Histogram<u64> {
    // Invariant: these bounds are valid (low ≥ 1, high ≥ 2 × low, sigfig ≤ 5).
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// The summary of the requests one arm answered (`None`: no arm named).
#[derive(Debug, Clone, PartialEq)]
pub struct ArmSummary {
    pub arm: Option<ArmRole>,
    pub summary: Summary,
}

/// The summary of one pass of a `both` burst.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetSummary {
    pub target: Target,
    pub summary: Summary,
}

/// Everything a burst measured.
#[derive(Debug, Clone)]
pub struct BurstReport {
    /// When the burst started (wall clock, UTC).
    pub started_at: jiff::Timestamp,
    /// From the first send to the end of the last answer.
    pub elapsed: Duration,
    pub mode: Mode,
    pub targeting: Targeting,
    /// User names, in scenario order.
    pub users: Vec<String>,
    pub requests_per_user: u32,
    pub pause: Duration,
    pub expect_status: u16,
    /// Every request, in the order they were sent (pass by pass).
    pub records: Vec<RequestRecord>,
    pub overall: Summary,
    /// Baseline, canary, then answers no arm was named for — those that occurred.
    pub per_arm: Vec<ArmSummary>,
    /// One per pass when the burst ran more than one (`both`); empty otherwise.
    pub per_target: Vec<TargetSummary>,
    /// Whether the canary arm got enough samples for each percentile or ratio guardrail.
    pub sufficiency: Vec<SufficiencyCheck>,
}

impl BurstReport {
    /// The summary of the requests `arm` answered, if it answered any.
    pub fn arm(&self, arm: ArmRole) -> Option<&Summary> {
        self.per_arm
            .iter()
            .find(|a| a.arm == Some(arm))
            .map(|a| &a.summary)
    }

    /// The summary of one pass of a `both` burst.
    pub fn target(&self, target: Target) -> Option<&Summary> {
        self.per_target
            .iter()
            .find(|t| t.target == target)
            .map(|t| &t.summary)
    }

    /// Requests completed per second of the burst.
    pub fn requests_per_second(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.overall.total as f64 / secs
        } else {
            0.0
        }
    }

    /// Whether the burst reached `min_success_percent` (a burst without requests does not).
    pub fn meets(&self, min_success_percent: f64) -> bool {
        self.overall
            .success_rate_percent
            .is_some_and(|r| r >= min_success_percent)
    }

    /// The open loop's lateness tolerance (zero for a closed loop).
    pub(crate) fn late_after(mode: &Mode) -> Duration {
        match mode {
            Mode::ClosedLoop => Duration::ZERO,
            Mode::OpenLoop(o) => o.late_after,
        }
    }
}

/// The wall clock, to the millisecond (artifacts do not need nanoseconds).
pub(crate) fn now_millis() -> jiff::Timestamp {
    let now = jiff::Timestamp::now();
    jiff::Timestamp::from_millisecond(now.as_millisecond()).unwrap_or(now)
}

fn arm_name(arm: Option<ArmRole>) -> &'static str {
    match arm {
        Some(ArmRole::Canary) => "canary",
        Some(ArmRole::Baseline) => "baseline",
        None => "unknown",
    }
}

fn targeting_name(t: &Targeting) -> &'static str {
    match t {
        Targeting::Lb => "lb",
        Targeting::Canary(_) => "canary",
        Targeting::Both(_) => "both",
    }
}

fn route_name(t: &Targeting) -> Option<&'static str> {
    match t {
        Targeting::Lb => None,
        Targeting::Canary(r) | Targeting::Both(r) => Some(match r {
            CanaryRoute::PinHeader => "pin-header",
            CanaryRoute::Url(_) => "direct-url",
        }),
    }
}

/// Milliseconds as the transcript writes them: whole above 10 ms, one decimal below.
fn ms(d: Duration) -> String {
    let v = d.as_secs_f64() * 1000.0;
    if v >= 10.0 {
        format!("{v:.0}ms")
    } else {
        format!("{v:.1}ms")
    }
}

fn describe_mode(report: &BurstReport) -> String {
    match &report.mode {
        Mode::ClosedLoop => format!(
            "{} users × {} requests, closed loop, {} pause",
            report.users.len(),
            report.requests_per_user,
            ms(report.pause)
        ),
        Mode::OpenLoop(o) => format!(
            "{} users, open loop at {} requests/s for {}, at most {} in flight",
            report.users.len(),
            o.rate_per_second,
            canary_core::duration::Human(o.duration),
            o.max_concurrency
        ),
    }
}

/// The runbook's transcript: a header, one line per request —
/// `✓ user_1_q3: 200 (142ms) ttfv 38ms arm canary` or `✗ ... error <kind>` — and the totals.
pub fn transcript(report: &BurstReport) -> String {
    let mut out = String::with_capacity(report.records.len() * 64 + 512);
    let _ = writeln!(
        out,
        "# canary load burst {}: {}, target {}{}, expecting {}",
        report.started_at,
        describe_mode(report),
        targeting_name(&report.targeting),
        route_name(&report.targeting)
            .map(|r| format!(" via {r}"))
            .unwrap_or_default(),
        report.expect_status
    );
    let several = report.per_target.len() > 1;
    for r in &report.records {
        let mark = if r.succeeded() { '✓' } else { '✗' };
        let status = r
            .status
            .map_or_else(|| "no response".to_owned(), |s| s.to_string());
        let _ = write!(out, "{mark} {}: {status} ({})", r.label(), ms(r.total));
        match r.ttfv {
            Some(t) => {
                let _ = write!(out, " ttfv {}", ms(t));
            }
            None => out.push_str(" ttfv -"),
        }
        let _ = write!(out, " arm {}", arm_name(r.arm));
        if several {
            let _ = write!(out, " target {}", r.target);
        }
        if r.event_stream {
            let _ = write!(
                out,
                " events {}{}",
                r.events,
                if r.terminal_seen { " done" } else { "" }
            );
        }
        if r.late_by > Duration::ZERO && !matches!(report.mode, Mode::ClosedLoop) {
            let _ = write!(out, " late {}", ms(r.late_by));
        }
        if let Some(e) = r.error {
            let _ = write!(out, " error {}", e.as_str());
        }
        out.push('\n');
    }
    let line = |out: &mut String, name: &str, s: &Summary| {
        let _ = write!(
            out,
            "# {name}: {} queries, {} successful, {} failed, success rate {}, avg latency {}",
            s.total,
            s.successful,
            s.failed,
            s.success_rate_percent
                .map_or_else(|| "-".to_owned(), |r| format!("{r:.1} %")),
            s.avg_latency_ms
                .map_or_else(|| "-".to_owned(), |v| format!("{v:.1} ms"))
        );
        if let Some(p) = s.latency {
            let _ = write!(
                out,
                "; latency p50/p95/p99 {:.1}/{:.1}/{:.1} ms",
                p.p50, p.p95, p.p99
            );
        }
        if let Some(p) = s.ttfv {
            let _ = write!(
                out,
                "; ttfv p50/p95/p99 {:.1}/{:.1}/{:.1} ms",
                p.p50, p.p95, p.p99
            );
        }
        if s.event_streams > 0 {
            let _ = write!(
                out,
                "; streams complete {}/{}",
                s.streams_complete, s.event_streams
            );
        }
        if s.late_sends > 0 {
            let _ = write!(
                out,
                "; late sends {} (max {:.1} ms)",
                s.late_sends, s.max_late_ms
            );
        }
        out.push('\n');
    };
    line(&mut out, "total", &report.overall);
    for t in &report.per_target {
        line(&mut out, &format!("target {}", t.target), &t.summary);
    }
    for a in &report.per_arm {
        line(&mut out, &format!("arm {}", arm_name(a.arm)), &a.summary);
    }
    for c in &report.sufficiency {
        let _ = writeln!(out, "# sufficiency {}: {}", c.guardrail, c.recommendation);
    }
    out
}

fn round(v: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (v * f).round() / f
}

fn percentiles_json(p: Option<Percentiles>) -> Value {
    match p {
        None => Value::Null,
        Some(p) => json!({
            "count": p.count,
            "p50": round(p.p50, 2),
            "p95": round(p.p95, 2),
            "p99": round(p.p99, 2),
            "max": round(p.max, 2),
            "mean": round(p.mean, 2),
        }),
    }
}

fn summary_fields(s: &Summary) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("total_queries".into(), json!(s.total));
    m.insert("successful".into(), json!(s.successful));
    m.insert("failed".into(), json!(s.failed));
    m.insert(
        "success_rate_percent".into(),
        json!(s.success_rate_percent.map(|v| round(v, 2))),
    );
    m.insert(
        "avg_latency_ms".into(),
        json!(s.avg_latency_ms.map(|v| round(v, 2))),
    );
    m.insert("latency_ms".into(), percentiles_json(s.latency));
    m.insert("ttfb_ms".into(), percentiles_json(s.ttfb));
    m.insert("ttfv_ms".into(), percentiles_json(s.ttfv));
    m.insert(
        "streams".into(),
        json!({
            "event_streams": s.event_streams,
            "complete": s.streams_complete,
            "completion_percent": s.stream_completion_percent.map(|v| round(v, 2)),
        }),
    );
    m.insert(
        "errors".into(),
        Value::Object(
            s.errors
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), json!(v)))
                .collect(),
        ),
    );
    m.insert(
        "statuses".into(),
        Value::Object(
            s.statuses
                .iter()
                .map(|(k, v)| (k.to_string(), json!(v)))
                .collect(),
        ),
    );
    m.insert("late_sends".into(), json!(s.late_sends));
    m.insert("max_late_ms".into(), json!(round(s.max_late_ms, 2)));
    m
}

/// The runbook's summary: `timestamp, total_queries, successful, failed,
/// success_rate_percent, avg_latency_ms` at the top level, plus percentiles of latency, TTFB
/// and TTFV, stream completion, errors by kind, the same per arm (and per target for `both`),
/// and the `sufficiency` verdicts. Times in milliseconds.
pub fn summary_json(report: &BurstReport) -> Value {
    let mut top = serde_json::Map::new();
    top.insert("timestamp".into(), json!(report.started_at.to_string()));
    top.extend(summary_fields(&report.overall));
    top.insert(
        "duration_ms".into(),
        json!(round(report.elapsed.as_secs_f64() * 1000.0, 1)),
    );
    top.insert(
        "requests_per_second".into(),
        json!(round(report.requests_per_second(), 1)),
    );
    let mode = match &report.mode {
        Mode::ClosedLoop => json!({
            "kind": "closed-loop",
            "users": report.users.len(),
            "requests_per_user": report.requests_per_user,
            "pause_ms": round(report.pause.as_secs_f64() * 1000.0, 1),
        }),
        Mode::OpenLoop(o) => json!({
            "kind": "open-loop",
            "users": report.users.len(),
            "rate_per_second": o.rate_per_second,
            "duration_ms": o.duration.as_millis() as u64,
            "max_concurrency": o.max_concurrency,
            "late_after_ms": round(o.late_after.as_secs_f64() * 1000.0, 1),
        }),
    };
    top.insert("mode".into(), mode);
    top.insert(
        "target".into(),
        json!({
            "kind": targeting_name(&report.targeting),
            "canary_route": route_name(&report.targeting),
        }),
    );
    top.insert("expect_status".into(), json!(report.expect_status));
    top.insert("users".into(), json!(report.users));
    top.insert(
        "per_arm".into(),
        Value::Object(
            report
                .per_arm
                .iter()
                .map(|a| {
                    (
                        arm_name(a.arm).to_owned(),
                        Value::Object(summary_fields(&a.summary)),
                    )
                })
                .collect(),
        ),
    );
    if !report.per_target.is_empty() {
        top.insert(
            "per_target".into(),
            Value::Object(
                report
                    .per_target
                    .iter()
                    .map(|t| {
                        (
                            t.target.as_str().to_owned(),
                            Value::Object(summary_fields(&t.summary)),
                        )
                    })
                    .collect(),
            ),
        );
    }
    top.insert(
        "sufficiency".into(),
        Value::Array(report.sufficiency.iter().map(sufficiency_json).collect()),
    );
    Value::Object(top)
}

fn sufficiency_json(c: &SufficiencyCheck) -> Value {
    let kind = match c.kind {
        SampleKind::Quantile { q } => json!({"kind": "quantile", "q": q}),
        SampleKind::SuccessRate { bar_percent } => {
            json!({"kind": "success-rate", "bar_percent": bar_percent})
        }
    };
    json!({
        "guardrail": c.guardrail,
        "measure": kind,
        "rule": c.rule,
        "canary_samples": c.samples,
        "canary_failures": c.failures,
        "needed": c.needed,
        "sufficient": c.sufficient,
        "window_s": c.window.map(|w| w.as_secs_f64()),
        "more_canary_requests": c.more_canary_requests,
        "via_lb_requests": c.via_lb_requests,
        "canary_share_percent": c.canary_share_percent.map(|v| round(v, 2)),
        "recommendation": c.recommendation,
    })
}
