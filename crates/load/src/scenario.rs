//! What a burst sends: the target, the request (method, path, headers, body template), the
//! users and their tokens, how requests are paced, and which way they go (load balancer,
//! canary, or both). Plain data: the runtime maps its configuration into a [`Scenario`].

use std::time::Duration;

use canary_core::Secret;
use serde::Serialize;

use crate::error::LoadError;
use crate::sufficiency::SampleRule;

/// The request header that pins a request to an arm on the embedded proxy.
pub const DEFAULT_PIN_HEADER: &str = "X-Canary";
/// The response header in which the embedded proxy names the arm that answered.
pub const DEFAULT_ARM_HEADER: &str = "X-Canary-Arm";
/// The request header that carries the embedded proxy's pin token.
pub const DEFAULT_PROOF_HEADER: &str = "X-Canary-Token";

/// The embedded proxy's pin token and the header that carries it. The proxy honours a pin
/// header, and names the arm that answered, only for requests that carry it; it never passes
/// either header on to an arm.
#[derive(Debug, Clone)]
pub struct PinProof {
    /// The request header the token goes in (`X-Canary-Token` by default).
    pub header: String,
    /// The token (the proxy's admin API hands it out: `GET /pin`).
    pub token: Secret,
}

impl PinProof {
    /// The token in the default header.
    pub fn new(token: Secret) -> Self {
        PinProof {
            header: DEFAULT_PROOF_HEADER.to_owned(),
            token,
        }
    }

    /// The header and its value, marked sensitive so no debug output shows it.
    pub(crate) fn header_pair(&self) -> Result<(http::HeaderName, http::HeaderValue), LoadError> {
        let name = http::HeaderName::from_bytes(self.header.as_bytes()).map_err(|_| {
            LoadError::InvalidHeader {
                name: self.header.clone(),
                reason: "not a valid header name".to_owned(),
            }
        })?;
        let mut value = http::HeaderValue::from_str(self.token.expose()).map_err(|_| {
            LoadError::InvalidHeader {
                name: self.header.clone(),
                reason: "the pin token holds characters a header cannot carry".to_owned(),
            }
        })?;
        value.set_sensitive(true);
        Ok((name, value))
    }
}

/// Refuses a pin-header route without the token: the proxy would ignore the pin and the
/// "canary" results would come from whichever arm the split chose.
pub(crate) fn require_proof(
    route: Option<&CanaryRoute>,
    proof: Option<&PinProof>,
) -> Result<(), LoadError> {
    if matches!(route, Some(CanaryRoute::PinHeader)) && proof.is_none() {
        return Err(LoadError::InvalidScenario(
            "pinning to the canary through the load balancer needs the embedded proxy's pin token \
             (its admin API's GET /pin): give it, or give the canary's own URL"
                .to_owned(),
        ));
    }
    Ok(())
}

/// A test user: a name (used as `{{user}}` in the body and in the transcript) and the bearer
/// token the user's requests carry.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub token: Secret,
}

/// How requests are paced.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// The runbook's mode: each user sends [`Scenario::requests_per_user`] requests one after
    /// another, waiting [`Scenario::pause`] between them; users run concurrently, each on its
    /// own keep-alive connection. Latency counts from the moment a request is sent.
    ClosedLoop,
    /// A constant arrival rate, whatever the server does.
    OpenLoop(OpenLoop),
}

/// Open-loop pacing: request `i` is due at `start + i / rate`. Latency counts from that due
/// time, so a request that could not be sent on time (every connection busy behind a stalled
/// server) carries its wait in its latency — coordinated omission corrected, as in wrk2.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenLoop {
    /// Requests per second, across all users (request `i` goes to user `i mod users`).
    pub rate_per_second: f64,
    /// How long requests keep being scheduled.
    pub duration: Duration,
    /// At most this many requests in flight (one connection each).
    pub max_concurrency: usize,
    /// A request sent more than this after its due time counts as a late send.
    pub late_after: Duration,
}

impl OpenLoop {
    /// `rate_per_second` for `duration` with at most `max_concurrency` in flight; a send more
    /// than 5 ms behind schedule counts as late.
    pub fn new(rate_per_second: f64, duration: Duration, max_concurrency: usize) -> Self {
        OpenLoop {
            rate_per_second,
            duration,
            max_concurrency,
            late_after: Duration::from_millis(5),
        }
    }

    /// How many requests the schedule holds.
    pub fn scheduled(&self) -> u64 {
        (self.rate_per_second * self.duration.as_secs_f64()).floor() as u64
    }
}

/// How canary-targeted requests reach the canary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CanaryRoute {
    /// Through the load balancer with the pin header (`X-Canary: canary` by default) — the
    /// embedded proxy honours it only with the pin token ([`PinProof`]).
    PinHeader,
    /// The canary's own address, bypassing the load balancer.
    Url(String),
}

/// Which way the burst goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Targeting {
    /// Through the load balancer as it is (the runbook's burst): the split decides the arm.
    Lb,
    /// At the canary only.
    Canary(CanaryRoute),
    /// The whole scenario through the load balancer, then again at the canary; reported
    /// separately.
    Both(CanaryRoute),
}

/// One pass of a burst: where its requests went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// Through the load balancer.
    Lb,
    /// Pinned to, or sent directly at, the canary.
    Canary,
}

impl Target {
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Lb => "lb",
            Target::Canary => "canary",
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything a burst needs. Build it with [`Scenario::runbook`] and adjust the fields.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The load balancer's URL (`http://` or `https://`, optionally with a path prefix).
    pub base_url: String,
    /// HTTP method, such as `POST`.
    pub method: String,
    /// Request path appended to the base URL's path, such as `/api/v1/memory/query`.
    pub path: String,
    /// Extra request headers (not secret: tokens go in [`User::token`]).
    pub headers: Vec<(String, String)>,
    /// Body template; `{{user}}` becomes the user's name and `{{query}}` the next query. When
    /// the body is JSON (it starts with `{` or `[`, or a JSON content type is set) the values
    /// are JSON-escaped. `None` sends no body.
    pub body: Option<String>,
    /// Queries `{{query}}` cycles through.
    pub queries: Vec<String>,
    pub users: Vec<User>,
    /// Requests each user sends in [`Mode::ClosedLoop`].
    pub requests_per_user: u32,
    /// Wait between two requests of one user in [`Mode::ClosedLoop`].
    pub pause: Duration,
    /// The status a successful request answers with.
    pub expect_status: u16,
    pub mode: Mode,
    pub targeting: Targeting,
    /// Request header that pins a request to the canary (value `canary`).
    pub pin_header: String,
    /// Response header naming the arm that answered (`canary` | `baseline`).
    pub arm_header: String,
    /// The embedded proxy's pin token: sent on every request when set, so pins count and every
    /// answer names its arm. Required by [`CanaryRoute::PinHeader`].
    pub pin_proof: Option<PinProof>,
    /// Name of the event that ends a complete stream (relay: `done`). An event stream that
    /// ends without it is incomplete. Empty: event streams need no terminal event.
    pub terminal_event: String,
    /// Longest a request may take, from its send (or due) time to the end of its body.
    pub request_timeout: Duration,
    /// The guardrails whose sample sufficiency the report judges (see [`crate::sufficiency`]).
    pub sample_rules: Vec<SampleRule>,
    /// 0: run on the caller's tokio runtime (enough for the runbook's burst). N: run on N
    /// dedicated threads, each with its own single-threaded runtime, users (or open-loop
    /// workers) spread over them — for heavy load, like `wrk -t N`.
    pub threads: usize,
    /// The canary's share of load-balancer traffic in percent, when known: used to say how
    /// much load through the load balancer would give the canary enough samples. When `None`
    /// the share observed in the burst is used.
    pub canary_weight_percent: Option<f64>,
}

impl Scenario {
    /// The runbook's burst against `base_url` (`canary_load_burst.sh` in its execution guide):
    /// `POST /api/v1/memory/query` with relay's body (`top_k` 24, `timeout_ms` 2000) asking the
    /// runbook's query, 20 requests per user with 100 ms between them, expecting 200, through
    /// the load balancer, judging the runbook's TTFV p95 and SSE-success guardrails.
    pub fn runbook(base_url: impl Into<String>, users: Vec<User>) -> Self {
        Scenario {
            base_url: base_url.into(),
            method: "POST".to_owned(),
            path: "/api/v1/memory/query".to_owned(),
            headers: Vec::new(),
            body: Some(
                r#"{"query": "{{query}}", "user_id": "{{user}}", "top_k": 24, "timeout_ms": 2000}"#
                    .to_owned(),
            ),
            queries: vec!["What are my recent notes about project alpha?".to_owned()],
            users,
            requests_per_user: 20,
            pause: Duration::from_millis(100),
            expect_status: 200,
            mode: Mode::ClosedLoop,
            targeting: Targeting::Lb,
            pin_header: DEFAULT_PIN_HEADER.to_owned(),
            arm_header: DEFAULT_ARM_HEADER.to_owned(),
            pin_proof: None,
            terminal_event: "done".to_owned(),
            request_timeout: Duration::from_secs(30),
            sample_rules: SampleRule::runbook(),
            threads: 0,
            canary_weight_percent: None,
        }
    }

    /// Checks what the types cannot; every message says how to fix it.
    pub fn validate(&self) -> Result<(), LoadError> {
        let invalid = |m: &str| Err(LoadError::InvalidScenario(m.to_owned()));
        if self.users.is_empty() {
            return invalid("no users: give at least one user with a token");
        }
        if self.users.iter().any(|u| u.name.is_empty()) {
            return invalid(
                "a user has an empty name: name every user (the runbook: user_1..user_5)",
            );
        }
        if !(100..=599).contains(&self.expect_status) {
            return invalid("expect_status must be an HTTP status (100..=599), such as 200");
        }
        if self.request_timeout.is_zero() {
            return invalid("request_timeout must be longer than zero");
        }
        if self.queries.is_empty()
            && self
                .body
                .as_deref()
                .is_some_and(|b| b.contains("{{query}}"))
        {
            return invalid("the body uses {{query}} but no queries are given: add at least one");
        }
        match &self.mode {
            Mode::ClosedLoop => {
                if self.requests_per_user == 0 {
                    return invalid("requests_per_user must be at least 1 (the runbook: 20)");
                }
            }
            Mode::OpenLoop(o) => {
                if !(o.rate_per_second.is_finite() && o.rate_per_second > 0.0) {
                    return invalid(
                        "the open-loop rate must be a positive number of requests per second",
                    );
                }
                if o.max_concurrency == 0 {
                    return invalid("the open-loop concurrency cap must be at least 1");
                }
                if o.scheduled() == 0 {
                    return invalid(
                        "the open-loop schedule holds no request: raise the rate or the duration",
                    );
                }
            }
        }
        let route = match &self.targeting {
            Targeting::Lb => None,
            Targeting::Canary(route) | Targeting::Both(route) => Some(route),
        };
        require_proof(route, self.pin_proof.as_ref())?;
        if let Some(proof) = &self.pin_proof {
            proof.header_pair()?;
        }
        for name in [&self.pin_header, &self.arm_header] {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(LoadError::InvalidHeader {
                    name: name.clone(),
                    reason: "not a valid header name".to_owned(),
                });
            }
        }
        Ok(())
    }

    /// The passes this scenario runs, in order, each with its target URL and whether it
    /// carries the pin header.
    pub(crate) fn passes(&self) -> Vec<Pass> {
        let canary = |route: &CanaryRoute| match route {
            CanaryRoute::PinHeader => Pass {
                target: Target::Canary,
                url: self.base_url.clone(),
                pin: true,
                direct: false,
            },
            CanaryRoute::Url(url) => Pass {
                target: Target::Canary,
                url: url.clone(),
                pin: false,
                direct: true,
            },
        };
        let lb = Pass {
            target: Target::Lb,
            url: self.base_url.clone(),
            pin: false,
            direct: false,
        };
        match &self.targeting {
            Targeting::Lb => vec![lb],
            Targeting::Canary(route) => vec![canary(route)],
            Targeting::Both(route) => vec![lb, canary(route)],
        }
    }
}

/// One pass of the scenario.
#[derive(Debug, Clone)]
pub(crate) struct Pass {
    pub target: Target,
    pub url: String,
    /// Add the pin header (`<pin_header>: canary`).
    pub pin: bool,
    /// Sent straight at the canary: a response without an arm header is the canary's.
    pub direct: bool,
}

/// Whether a body template is JSON, so substituted values must be JSON-escaped.
pub(crate) fn is_json_body(template: &str, content_type: Option<&str>) -> bool {
    match content_type {
        Some(ct) => ct.to_ascii_lowercase().contains("json"),
        None => matches!(template.trim_start().as_bytes().first(), Some(b'{' | b'[')),
    }
}

/// Renders a template: every `{{name}}` with a value in `vars` is replaced (JSON-escaped when
/// `json`); other text, including unknown placeholders, is kept as is.
pub(crate) fn render(template: &str, vars: &[(&str, &str)], json: bool) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            out.push_str(&rest[open..]);
            return out;
        };
        let name = after[..close].trim();
        match vars.iter().find(|(k, _)| *k == name) {
            Some((_, value)) if json => push_json_escaped(&mut out, value),
            Some((_, value)) => out.push_str(value),
            None => out.push_str(&rest[open..open + 2 + close + 2]),
        }
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    out
}

fn push_json_escaped(out: &mut String, value: &str) {
    let quoted = serde_json::Value::String(value.to_owned()).to_string();
    // `quoted` is a JSON string literal: drop its surrounding quotes.
    out.push_str(&quoted[1..quoted.len() - 1]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_render_with_escaping() {
        let t = r#"{"query": "{{query}}", "user_id": "{{ user }}", "x": "{{other}}"}"#;
        assert_eq!(
            render(t, &[("query", "say \"hi\"\n"), ("user", "user_1")], true),
            r#"{"query": "say \"hi\"\n", "user_id": "user_1", "x": "{{other}}"}"#
        );
        assert_eq!(
            render(
                "q={{query}}&u={{user}}",
                &[("query", "a\"b"), ("user", "u")],
                false
            ),
            "q=a\"b&u=u"
        );
        assert_eq!(
            render("unclosed {{query", &[("query", "x")], false),
            "unclosed {{query"
        );
        assert!(is_json_body(" {\"a\":1}", None));
        assert!(!is_json_body("q=1", None));
        assert!(is_json_body("q=1", Some("application/json; charset=utf-8")));
    }

    #[test]
    fn the_runbook_scenario_is_valid_and_bad_ones_say_why() {
        let users = vec![User {
            name: "user_1".into(),
            token: Secret::new("t"),
        }];
        let s = Scenario::runbook("http://127.0.0.1:1", users.clone());
        s.validate().unwrap();
        let mut bad = s.clone();
        bad.users.clear();
        assert!(bad.validate().unwrap_err().to_string().contains("no users"));
        let mut bad = s.clone();
        bad.queries.clear();
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("{{query}}")
        );
        let mut bad = s.clone();
        bad.mode = Mode::OpenLoop(OpenLoop::new(0.5, Duration::from_secs(1), 1));
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("no request")
        );
        let mut both = s;
        both.targeting = Targeting::Both(CanaryRoute::Url("http://127.0.0.1:2".into()));
        let passes = both.passes();
        assert_eq!(passes.len(), 2);
        assert_eq!((passes[0].target, passes[0].pin), (Target::Lb, false));
        assert_eq!((passes[1].target, passes[1].direct), (Target::Canary, true));
    }
}
