//! The admin API on its own loopback port: weights, health, the lease and metrics, behind a
//! bearer token. The routes and bodies are documented in the crate docs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};

use crate::arm::Arm;
use crate::body::ResponseBody;
use crate::config::{AdminToken, ProxyConfig, Upstream};
use crate::control::{ArmHealth, Control, HealthStatus, WeightCause};
use crate::distribute::CanaryWeight;
use crate::lease::LeaseView;
use crate::pin::PinToken;
use crate::server::Handler;

/// Largest admin request body accepted.
const MAX_BODY: usize = 16 * 1024;
/// Longest lease accepted: a lease is a heartbeat, not a parking permit.
const MAX_LEASE: Duration = Duration::from_secs(24 * 60 * 60);

/// `GET /weights` and `PUT /weights` (answer): the split in percent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightsView {
    /// Percent to the canary.
    pub canary: u8,
    /// Percent to the baseline (`100 - canary`).
    pub baseline: u8,
}

impl From<CanaryWeight> for WeightsView {
    fn from(w: CanaryWeight) -> Self {
        WeightsView {
            canary: w.canary(),
            baseline: w.baseline(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WeightsRequest {
    canary: u32,
    baseline: Option<u32>,
}

/// `GET /pin` and `PUT /pin` (answer): how to pin a request, and whether the canary is fenced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinView {
    /// The request header that pins (`canary` | `baseline`).
    pub header: String,
    /// The request header that carries the token.
    pub proof_header: String,
    /// The pin token. Only admin-token holders see it.
    pub token: String,
    /// The canary was rolled back: pinned requests to it are refused.
    pub canary_fenced: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PinRequest {
    canary_fenced: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaseRequest {
    ttl_ms: u64,
    #[serde(default)]
    holder: Option<String>,
}

#[derive(Serialize)]
struct ArmReport<'a> {
    upstream: String,
    #[serde(flatten)]
    health: &'a ArmHealth,
}

#[derive(Serialize)]
struct HealthReport<'a> {
    status: &'static str,
    weights: WeightsView,
    arms: ArmsReport<'a>,
    lease: Option<LeaseView>,
}

#[derive(Serialize)]
struct ArmsReport<'a> {
    baseline: ArmReport<'a>,
    canary: ArmReport<'a>,
}

pub(crate) struct AdminApi {
    control: Arc<Control>,
    token: AdminToken,
    upstreams: [Upstream; 2],
    pin_header: String,
    proof_header: String,
    pin_token: PinToken,
}

impl AdminApi {
    pub fn new(control: Arc<Control>, cfg: &ProxyConfig) -> Self {
        AdminApi {
            control,
            token: cfg.admin_token.clone(),
            upstreams: [cfg.baseline.clone(), cfg.canary.clone()],
            pin_header: cfg.pin_header.to_string(),
            proof_header: cfg.proof_header.to_string(),
            pin_token: cfg.pin_token.clone(),
        }
    }

    fn pin_view(&self) -> PinView {
        PinView {
            header: self.pin_header.clone(),
            proof_header: self.proof_header.clone(),
            token: self.pin_token.expose().to_owned(),
            canary_fenced: self.control.split().canary_fenced,
        }
    }

    async fn put_pin(&self, req: Request<Incoming>) -> Response<ResponseBody> {
        let body: PinRequest = match read_json(req).await {
            Ok(body) => body,
            Err(resp) => return resp,
        };
        self.control.set_canary_fence(body.canary_fenced);
        json(StatusCode::OK, &self.pin_view())
    }

    async fn route(&self, req: Request<Incoming>) -> Response<ResponseBody> {
        let path = req.uri().path().to_owned();
        let method = req.method().clone();
        match (&method, path.as_str()) {
            (&Method::GET, "/weights") => {
                json(StatusCode::OK, &WeightsView::from(self.control.weight()))
            }
            (&Method::PUT, "/weights") => self.put_weights(req).await,
            (&Method::GET, "/healthz") => self.healthz(),
            (&Method::GET, "/pin") => json(StatusCode::OK, &self.pin_view()),
            (&Method::PUT, "/pin") => self.put_pin(req).await,
            (&Method::GET, "/lease") => json(StatusCode::OK, &self.control.lease.view()),
            (&Method::PUT, "/lease") => self.put_lease(req).await,
            (&Method::DELETE, "/lease") => {
                let held = self.control.lease.release();
                tracing::info!(held, "lease released by the controller");
                let mut resp = Response::new(ResponseBody::local(Bytes::new()));
                *resp.status_mut() = StatusCode::NO_CONTENT;
                resp
            }
            (&Method::GET, "/metrics") => {
                let text = self.control.metrics.render(&self.control.gauges());
                let mut resp = Response::new(ResponseBody::local(text));
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                resp
            }
            (_, "/weights" | "/pin") => not_allowed("GET, PUT"),
            (_, "/lease") => not_allowed("GET, PUT, DELETE"),
            (_, "/healthz" | "/metrics") => not_allowed("GET"),
            _ => problem(
                StatusCode::NOT_FOUND,
                format!("no admin route {path}: use /weights, /healthz, /lease, /pin or /metrics"),
            ),
        }
    }

    async fn put_weights(&self, req: Request<Incoming>) -> Response<ResponseBody> {
        let body: WeightsRequest = match read_json(req).await {
            Ok(body) => body,
            Err(resp) => return resp,
        };
        let Some(weight) = u8::try_from(body.canary)
            .ok()
            .and_then(|pct| CanaryWeight::new(pct).ok())
        else {
            return problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "canary weight {} is out of range: give 0 to 100",
                    body.canary
                ),
            );
        };
        if let Some(baseline) = body.baseline
            && baseline != u32::from(weight.baseline())
        {
            return problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "canary {} + baseline {baseline} is not 100: give baseline {} or leave it out",
                    weight.canary(),
                    weight.baseline()
                ),
            );
        }
        self.control.set_weight(weight, WeightCause::Admin);
        json(StatusCode::OK, &WeightsView::from(weight))
    }

    async fn put_lease(&self, req: Request<Incoming>) -> Response<ResponseBody> {
        let body: LeaseRequest = match read_json(req).await {
            Ok(body) => body,
            Err(resp) => return resp,
        };
        let ttl = Duration::from_millis(body.ttl_ms);
        if ttl.is_zero() || ttl > MAX_LEASE {
            return problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "lease ttl_ms {} is out of range: give 1 to {}",
                    body.ttl_ms,
                    MAX_LEASE.as_millis()
                ),
            );
        }
        let holder = body.holder.unwrap_or_else(|| "controller".into());
        let view = self.control.lease.renew(holder, ttl);
        tracing::debug!(holder = %view.holder, ttl_ms = view.ttl_ms, "lease renewed");
        json(StatusCode::OK, &view)
    }

    fn healthz(&self) -> Response<ResponseBody> {
        let baseline = self.control.arm_health(Arm::Baseline);
        let canary = self.control.arm_health(Arm::Canary);
        let degraded = [&baseline, &canary]
            .iter()
            .any(|h| h.status == HealthStatus::Unhealthy);
        let report = HealthReport {
            status: if degraded { "degraded" } else { "ok" },
            weights: WeightsView::from(self.control.weight()),
            arms: ArmsReport {
                baseline: ArmReport {
                    upstream: self.upstreams[0].to_string(),
                    health: &baseline,
                },
                canary: ArmReport {
                    upstream: self.upstreams[1].to_string(),
                    health: &canary,
                },
            },
            lease: self.control.lease.view(),
        };
        json(StatusCode::OK, &report)
    }
}

impl Handler for AdminApi {
    async fn handle(&self, req: Request<Incoming>, client: SocketAddr) -> Response<ResponseBody> {
        let authorization = req
            .headers()
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes);
        if !self.token.authorizes(authorization) {
            tracing::warn!(%client, path = req.uri().path(), "admin request without a valid bearer token");
            let mut resp = problem(
                StatusCode::UNAUTHORIZED,
                "send `Authorization: Bearer <admin token>`".into(),
            );
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"canary-proxy\""),
            );
            return resp;
        }
        self.route(req).await
    }
}

async fn read_json<T: for<'de> Deserialize<'de>>(
    req: Request<Incoming>,
) -> Result<T, Response<ResponseBody>> {
    let bytes = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) => {
            return Err(problem(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {err}"),
            ));
        }
    };
    serde_json::from_slice(&bytes).map_err(|err| {
        problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("invalid JSON body: {err}"),
        )
    })
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<ResponseBody> {
    match serde_json::to_vec(value) {
        Ok(bytes) => {
            let mut resp = Response::new(ResponseBody::local(bytes));
            *resp.status_mut() = status;
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            resp
        }
        Err(err) => {
            let mut resp = Response::new(ResponseBody::local(format!("{{\"error\":\"{err}\"}}")));
            *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            resp
        }
    }
}

fn problem(status: StatusCode, message: String) -> Response<ResponseBody> {
    json(status, &serde_json::json!({ "error": message }))
}

fn not_allowed(allow: &'static str) -> Response<ResponseBody> {
    let mut resp = problem(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method not allowed here; allowed: {allow}"),
    );
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    resp
}
