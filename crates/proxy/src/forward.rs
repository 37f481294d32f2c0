//! The data path, as a sequence of phases (Pingora's shape): choose the arm, build the upstream
//! request, exchange with the arm under the response-head timeout, filter the response head,
//! stream the body back observed. Every failure becomes a response attributed to its arm.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, Version};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::arm::Arm;
use crate::body::ResponseBody;
use crate::config::{ProxyConfig, Timeouts, Upstream};
use crate::control::Control;
use crate::distribute::{self, Decision, Reason, Splitter};
use crate::error::{FailureKind, ForwardError};
use crate::headers;
use crate::link::UpstreamBody;
use crate::pool::ArmPool;
use crate::server::Handler;

pub(crate) struct Forwarder {
    control: Arc<Control>,
    pools: [Arc<ArmPool>; 2],
    upstreams: [Upstream; 2],
    splitter: Arc<Splitter>,
    pin_header: HeaderName,
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
                ArmPool::new(arm, upstream.dial_target(), cfg.timeouts.connect)
            }),
            upstreams: [cfg.baseline.clone(), cfg.canary.clone()],
            splitter,
            pin_header: cfg.pin_header.clone(),
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

    /// Phase 1: the arm for this request (pin header, then ticket and readiness).
    fn choose_arm(&self, req: &Request<Incoming>) -> Result<Decision, ForwardError> {
        let pin = match req.headers().get(&self.pin_header) {
            None => None,
            Some(value) => {
                let text = value.to_str().unwrap_or("");
                Some(text.parse::<Arm>().map_err(|e| {
                    ForwardError::new(
                        None,
                        FailureKind::BadRequest,
                        format!("header {}: {e}", self.pin_header),
                    )
                })?)
            }
        };
        let caller = if pin.is_none() && self.splitter.mode() == distribute::SplitMode::Sticky {
            req.headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        } else {
            None
        };
        let ticket = self.splitter.ticket(caller);
        let decision =
            distribute::choose(self.control.weight(), ticket, pin, self.control.readiness());
        if decision.reason == Reason::Fallback {
            self.control.metrics.count_fallback(decision.arm);
        }
        Ok(decision)
    }

    /// Phase 2: the request as the arm receives it.
    fn upstream_request(
        &self,
        req: Request<Incoming>,
        arm: Arm,
        client: SocketAddr,
    ) -> Result<Request<Incoming>, ForwardError> {
        let (mut parts, body) = req.into_parts();
        let original_host = parts.headers.get(header::HOST).cloned().or_else(|| {
            parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        let upstream = &self.upstreams[arm.index()];
        parts.uri = upstream
            .origin_form(parts.uri.path_and_query())
            .map_err(|e| ForwardError::new(Some(arm), FailureKind::Internal, e.to_string()))?;
        parts.version = Version::HTTP_11;
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
        started: Instant,
    ) -> Response<ResponseBody> {
        let (mut parts, body) = resp.into_parts();
        let event_stream = headers::prepare_response(&mut parts.headers);
        parts.headers.insert(
            self.arm_header.clone(),
            self.arm_values[arm.index()].clone(),
        );
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

    /// The response for a request that could not be forwarded; logged and counted per arm.
    fn failure(&self, err: ForwardError, started: Instant) -> Response<ResponseBody> {
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
        let mut resp = Response::new(ResponseBody::local(Bytes::from(format!(
            "{} {}: {err}\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        ))));
        *resp.status_mut() = status;
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if let Some(arm) = err.arm {
            headers.insert(
                self.arm_header.clone(),
                self.arm_values[arm.index()].clone(),
            );
        }
        resp
    }
}

impl Handler for Forwarder {
    async fn handle(&self, req: Request<Incoming>, client: SocketAddr) -> Response<ResponseBody> {
        let started = Instant::now();
        let decision = match self.choose_arm(&req) {
            Ok(decision) => decision,
            Err(err) => return self.failure(err, started),
        };
        let arm = decision.arm;
        let upstream_req = match self.upstream_request(req, arm, client) {
            Ok(req) => req,
            Err(err) => return self.failure(err, started),
        };
        // Phase 3: the exchange. Only the response head is under a deadline; the body is
        // under the idle timeout, so streams can run for as long as they keep talking.
        let exchange = self.pools[arm.index()].send(upstream_req);
        match tokio::time::timeout(self.timeouts.response_head, exchange).await {
            Ok(Ok(resp)) => self.downstream_response(resp, arm, started),
            Ok(Err(err)) => self.failure(err, started),
            Err(_) => self.failure(
                ForwardError::new(
                    Some(arm),
                    FailureKind::HeadTimeout,
                    format!(
                        "no response head within {} ms",
                        self.timeouts.response_head.as_millis()
                    ),
                ),
                started,
            ),
        }
    }
}
