//! The data path, as a sequence of phases (Pingora's shape): refuse what cannot be forwarded
//! (`CONNECT`, a bad `Host`), choose the arm (a pin counts only with proof), build the upstream
//! request (pin and proof headers removed), exchange with the arm under the response-head
//! timeout, filter the response head (the arm named only to callers with proof), stream the
//! body back observed. Every failure becomes a response attributed to its arm, or to the client.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::arm::Arm;
use crate::body::ResponseBody;
use crate::config::{ProxyConfig, Timeouts, Upstream};
use crate::control::Control;
use crate::distribute::{
    self, Decision, Readiness, Reason, Refusal, SplitMode, SplitState, Splitter,
};
use crate::error::{Blame, FailureKind, ForwardError};
use crate::headers;
use crate::link::UpstreamBody;
use crate::metrics::PinRefusal;
use crate::pin::PinPolicy;
use crate::pool::ArmPool;
use crate::server::Handler;

pub(crate) struct Forwarder {
    control: Arc<Control>,
    pools: [Arc<ArmPool>; 2],
    upstreams: [Upstream; 2],
    splitter: Arc<Splitter>,
    pins: PinPolicy,
    arm_header: HeaderName,
    arm_values: [HeaderValue; 2],
    /// `Host` sent to each arm: its upstream's authority.
    host_values: [HeaderValue; 2],
    timeouts: Timeouts,
}

impl Forwarder {
    pub fn new(cfg: &ProxyConfig, control: Arc<Control>, splitter: Arc<Splitter>) -> Self {
        Forwarder {
            control,
            pools: Arm::ALL.map(|arm| {
                let upstream = if arm == Arm::Canary {
                    &cfg.canary
                } else {
                    &cfg.baseline
                };
                ArmPool::new(arm, upstream.dial_target(), cfg.timeouts)
            }),
            upstreams: [cfg.baseline.clone(), cfg.canary.clone()],
            splitter,
            pins: PinPolicy::new(
                cfg.pin_header.clone(),
                cfg.proof_header.clone(),
                cfg.pin_token.clone(),
            ),
            arm_header: cfg.arm_header.clone(),
            arm_values: Arm::ALL.map(|arm| HeaderValue::from_static(arm.as_str())),
            host_values: [&cfg.baseline, &cfg.canary].map(|u| {
                // An authority is always a valid header value.
                HeaderValue::from_str(u.authority().as_str())
                    .unwrap_or(HeaderValue::from_static("localhost"))
            }),
            timeouts: cfg.timeouts,
        }
    }

    /// Phase 1: the arm for this request, counted in the metrics.
    fn choose_arm(&self, req: &Request<Incoming>) -> Result<Routed, Rejected> {
        let metrics = &self.control.metrics;
        let routed = route(
            &self.pins,
            req.headers(),
            self.control.split(),
            self.control.readiness(),
            &self.splitter,
        );
        match &routed {
            Ok(r) => {
                if r.ignored_pin {
                    metrics.count_pin_refused(PinRefusal::Unauthenticated);
                }
                if r.decision.reason == Reason::Fallback {
                    metrics.count_fallback(r.decision.arm);
                }
            }
            Err(Rejected::Refused(_)) => metrics.count_pin_refused(PinRefusal::RolledBack),
            Err(Rejected::Failed(_)) => {}
        }
        routed
    }

    /// Phase 2: the request as the arm receives it.
    fn upstream_request(
        &self,
        req: Request<Incoming>,
        arm: Arm,
        client: SocketAddr,
    ) -> Result<Request<Incoming>, ForwardError> {
        let (mut parts, body) = req.into_parts();
        let original_host = headers::original_host(&parts.uri, &parts.headers);
        let upstream = &self.upstreams[arm.index()];
        parts.uri = upstream
            .origin_form(parts.uri.path_and_query())
            .map_err(|e| ForwardError::new(Some(arm), FailureKind::Internal, e.to_string()))?;
        parts.version = Version::HTTP_11;
        self.pins.strip(&mut parts.headers);
        headers::prepare_request(&mut parts.headers, client.ip(), original_host);
        parts
            .headers
            .insert(header::HOST, self.host_values[arm.index()].clone());
        Ok(Request::from_parts(parts, body))
    }

    /// Phase 4: the response head as the client receives it, body wrapped for streaming.
    fn downstream_response(
        &self,
        resp: Response<UpstreamBody>,
        arm: Arm,
        trusted: bool,
        started: Instant,
    ) -> Response<ResponseBody> {
        let (mut parts, body) = resp.into_parts();
        let event_stream = headers::prepare_response(&mut parts.headers);
        self.name_arm(&mut parts.headers, arm, trusted);
        self.control.metrics.count_response(arm, parts.status);
        let body = ResponseBody::upstream(
            body,
            arm,
            event_stream,
            started,
            self.timeouts.idle,
            self.control.clone(),
        );
        Response::from_parts(parts, body)
    }

    /// Tells a trusted caller which arm answered; anyone else learns nothing (an arm header
    /// the arm itself sent is removed too).
    fn name_arm(&self, headers: &mut HeaderMap, arm: Arm, trusted: bool) {
        if trusted {
            headers.insert(
                self.arm_header.clone(),
                self.arm_values[arm.index()].clone(),
            );
        } else {
            headers.remove(&self.arm_header);
        }
    }

    /// The response for a request that could not be forwarded; logged and counted per arm.
    fn failure(
        &self,
        err: ForwardError,
        trusted: bool,
        started: Instant,
    ) -> Response<ResponseBody> {
        let status = err.kind.status();
        let metrics = &self.control.metrics;
        metrics.count_failure(err.arm, err.kind);
        if let Some(arm) = err.arm {
            metrics.count_response(arm, status);
            metrics.observe_duration(arm, started.elapsed());
        }
        tracing::warn!(
            arm = err.arm.map_or("none", Arm::as_str),
            kind = err.kind.as_str(),
            blame = ?err.kind.blame(),
            retry_safe = err.kind.retry_safe(),
            status = status.as_u16(),
            error = %err.detail,
            "request not forwarded"
        );
        let mut resp = local_response(status, &err);
        if let Some(arm) = err.arm {
            self.name_arm(resp.headers_mut(), arm, trusted);
        }
        resp
    }

    /// The answer to a proven pin onto a rolled-back arm: 403, nothing forwarded.
    fn refusal(&self, refusal: Refusal) -> Response<ResponseBody> {
        tracing::warn!(error = %refusal, "pinned request refused");
        local_response(StatusCode::FORBIDDEN, &refusal)
    }
}

/// Where a request goes and what its caller proved.
#[derive(Debug)]
pub(crate) struct Routed {
    decision: Decision,
    /// The caller holds the pin token: it may pin and is told the arm.
    trusted: bool,
    /// A pin header came without proof and was ignored.
    ignored_pin: bool,
}

/// Why a request goes nowhere.
#[derive(Debug)]
pub(crate) enum Rejected {
    Failed(ForwardError),
    Refused(Refusal),
}

/// The arm for a request with `headers`: a proven pin, else the ticket (sticky by bearer token
/// when so configured) and readiness. Pure apart from drawing the ticket.
pub(crate) fn route(
    pins: &PinPolicy,
    headers: &HeaderMap,
    split: SplitState,
    ready: Readiness,
    splitter: &Splitter,
) -> Result<Routed, Rejected> {
    let credentials = pins.read(headers).map_err(|e| {
        Rejected::Failed(ForwardError::new(
            None,
            FailureKind::BadRequest,
            e.to_string(),
        ))
    })?;
    let caller = if credentials.pin.is_none() && splitter.mode() == SplitMode::Sticky {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
    } else {
        None
    };
    let decision = distribute::choose(split, splitter.ticket(caller), credentials.pin, ready)
        .map_err(Rejected::Refused)?;
    Ok(Routed {
        decision,
        trusted: credentials.trusted,
        ignored_pin: credentials.ignored_pin,
    })
}

/// A plain-text response made by the proxy itself.
fn local_response(status: StatusCode, why: &dyn std::fmt::Display) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::local(Bytes::from(format!(
        "{} {}: {why}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    ))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// Methods the proxy forwards, for `Allow` (RFC 9110 §15.5.6): all but `CONNECT`.
const FORWARDED_METHODS: &str = "GET, HEAD, POST, PUT, DELETE, OPTIONS, TRACE, PATCH";

/// Phase 0: whether the request may be forwarded at all, before any arm is involved. `CONNECT`
/// asks for a tunnel, which a reverse proxy does not open (405, as nginx answers); RFC 9112
/// §3.2 wants a missing (HTTP/1.1), repeated or malformed `Host` answered with 400.
fn check_form(req: &Request<Incoming>) -> Result<(), ForwardError> {
    if req.method() == Method::CONNECT {
        return Err(ForwardError::new(
            None,
            FailureKind::MethodNotAllowed,
            "CONNECT asks for a tunnel; this is a reverse proxy",
        ));
    }
    match headers::host_problem(req.version(), req.headers()) {
        Some(problem) => Err(ForwardError::new(None, FailureKind::BadRequest, problem)),
        None => Ok(()),
    }
}

/// Finishes the answer to a request the client got wrong (its form, or its body): a 405 says
/// which methods are forwarded, and on HTTP/1.x the connection closes after it, as nginx and
/// HAProxy do: what the client sends next (tunnel bytes after a `CONNECT`, the rest of a
/// stalled body) cannot be read as a request. RFC 9110 §15.5.9 asks this of a 408.
fn closing(mut resp: Response<ResponseBody>, version: Version) -> Response<ResponseBody> {
    let refused_method = resp.status() == StatusCode::METHOD_NOT_ALLOWED;
    let headers = resp.headers_mut();
    if refused_method {
        headers.insert(header::ALLOW, HeaderValue::from_static(FORWARDED_METHODS));
    }
    if version < Version::HTTP_2 {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

impl Handler for Forwarder {
    async fn handle(&self, req: Request<Incoming>, client: SocketAddr) -> Response<ResponseBody> {
        let started = Instant::now();
        let version = req.version();
        if let Err(err) = check_form(&req) {
            return closing(self.failure(err, false, started), version);
        }
        let Routed {
            decision, trusted, ..
        } = match self.choose_arm(&req) {
            Ok(routed) => routed,
            Err(Rejected::Failed(err)) => return self.failure(err, false, started),
            Err(Rejected::Refused(refusal)) => return self.refusal(refusal),
        };
        let arm = decision.arm;
        let upstream_req = match self.upstream_request(req, arm, client) {
            Ok(req) => req,
            Err(err) => return self.failure(err, trusted, started),
        };
        // Phase 3: the exchange. The arm owes a response head within its timeout once the
        // request has gone out, the client its body without a long silence (the pool's link
        // times both); the response body is under the idle timeout, so streams can run for as
        // long as they keep talking.
        match self.pools[arm.index()].send(upstream_req).await {
            Ok(resp) => self.downstream_response(resp, arm, trusted, started),
            Err(err) if err.kind.blame() == Blame::Downstream => {
                closing(self.failure(err, trusted, started), version)
            }
            Err(err) => self.failure(err, trusted, started),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{Control, WeightCause};
    use crate::distribute::CanaryWeight;
    use crate::pin::PinToken;
    use proptest::prelude::*;

    const TOKEN: &str = "0123456789abcdef-pin";

    fn policy() -> PinPolicy {
        PinPolicy::new(
            HeaderName::from_static("x-canary"),
            HeaderName::from_static("x-canary-token"),
            PinToken::new(TOKEN),
        )
    }

    /// Header names a client might send, the pin and proof headers among them.
    fn any_name() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "x-canary",
            "X-Canary",
            "X-CANARY",
            "x-canary-token",
            "X-Canary-Token",
            "x-canary-arm",
            "authorization",
            "cookie",
            "x-forwarded-for",
        ])
    }

    /// Values a client might send: arm names in any case, near-misses of the token, noise.
    fn any_value() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec!["canary", "Canary", "CANARY", "baseline", " canary"])
                .prop_map(str::to_owned),
            prop::sample::select(vec![
                &TOKEN[1..],
                &TOKEN[..TOKEN.len() - 1],
                "0123456789abcdef-piN",
                "0123456789ABCDEF-pin",
                "",
            ])
            .prop_map(str::to_owned),
            Just(format!("{TOKEN} ")),
            Just(format!("Bearer {TOKEN}")),
            "[ -~]{0,40}",
        ]
    }

    fn headers_from(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            if let Ok(value) = HeaderValue::from_str(value) {
                // `from_bytes` lower-cases, as a header name on the wire is case-insensitive.
                map.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), value);
            }
        }
        map
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// After any sequence of weight changes that ends in a rollback (the weight to 0, or
        /// the lease lapsing), no request reaches the canary — whatever headers it carries,
        /// with or without the pin token — until the fence is lifted.
        #[test]
        fn nothing_reaches_a_rolled_back_canary(
            weights in prop::collection::vec(0u8..=100, 0..8),
            lease_lapsed: bool,
            headers in prop::collection::vec((any_name(), any_value()), 0..6),
            with_proof: bool,
            sticky: bool,
            seed: u64,
            ready_baseline: bool,
            ready_canary: bool,
        ) {
            let control = Control::new(CanaryWeight::new(5).unwrap());
            for pct in weights {
                control.set_weight(CanaryWeight::new(pct).unwrap(), WeightCause::Admin);
            }
            control.set_weight(CanaryWeight::new(5).unwrap(), WeightCause::Admin);
            let cause = if lease_lapsed { WeightCause::LeaseExpired } else { WeightCause::Admin };
            control.set_weight(CanaryWeight::ZERO, cause);

            let mut pairs = headers;
            if with_proof {
                pairs.push(("x-canary-token", TOKEN.to_owned()));
            }
            let map = headers_from(&pairs);
            let mode = if sticky { SplitMode::Sticky } else { SplitMode::Random };
            let splitter = Splitter::new(mode, seed);
            let ready = Readiness { baseline: ready_baseline, canary: ready_canary };
            for _ in 0..100 {
                if let Ok(routed) = route(&policy(), &map, control.split(), ready, &splitter) {
                    prop_assert_eq!(routed.decision.arm, Arm::Baseline, "{:?}", pairs);
                }
            }
        }

        /// Without the pin token, a canary at 0 % gets nothing, and whatever the weight, a
        /// request is neither pinned nor told its arm.
        #[test]
        fn without_the_token_headers_do_not_steer(
            pct in 0u8..=100,
            headers in prop::collection::vec((any_name(), any_value()), 0..6),
            seed: u64,
        ) {
            let control = Control::new(CanaryWeight::new(pct).unwrap());
            let map = headers_from(&headers);
            let splitter = Splitter::new(SplitMode::Random, seed);
            let routed = route(&policy(), &map, control.split(), Readiness::ALL, &splitter);
            let routed = routed.map_err(|e| format!("{e:?}"));
            prop_assert!(routed.is_ok(), "{:?}", routed);
            let routed = routed.unwrap();
            prop_assert!(!routed.trusted);
            prop_assert_ne!(routed.decision.reason, Reason::Pinned);
            if pct == 0 {
                prop_assert_eq!(routed.decision.arm, Arm::Baseline);
            }
        }
    }
}
