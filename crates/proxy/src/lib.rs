//! `canary-proxy`: the embedded weighted reverse proxy and its admin API.
//!
//! The proxy sits in front of two upstreams — the *baseline* and the *canary* arm — and sends
//! each request to one of them: weighted (`random`, or `sticky` by the caller's bearer token),
//! or pinned by a request header. It never collects a body: requests and responses stream
//! both ways, and `text/event-stream` responses pass through event by event with
//! `X-Accel-Buffering: no`. Streams are bounded by an idle timeout, never a whole-response
//! timeout. An upstream failure becomes a 502/503/504 attributed to its arm. Hop-by-hop headers
//! are removed as RFC 9110 §7.6.1 says; `X-Forwarded-For`, `X-Forwarded-Proto`,
//! `X-Forwarded-Host` and `Via` are added. A response names its arm in `X-Canary-Arm` only to a
//! caller that presented the pin token.
//!
//! # Data port
//!
//! By default the data port is served by one thread per CPU, each with its own single-threaded
//! runtime and its own upstream connections; one acceptor deals connections out in turn
//! ([`ProxyConfig::workers`]; 0 serves on the caller's runtime instead). Clients speak HTTP/1.1
//! or h2c to hyper's server; upstreams are spoken to in HTTP/1.1 by the request itself, on its
//! own thread, with no task or channel in between. Upstream connections are kept alive and
//! reused once a response body has been forwarded to its end; a body that runs until the
//! upstream closes, or is cut short, closes its connection. A bodiless idempotent request whose
//! kept-alive connection turns out to have been closed by the upstream is sent once more on a
//! new connection; nothing else is re-sent. A chunked body's trailers are forwarded both ways
//! (to h2c clients and HTTP/1.1 clients that accept them; from clients to the upstream when the
//! request body goes chunked), except fields that must not be trailers.
//!
//! | request header | effect |
//! |---|---|
//! | `X-Canary-Token: <pin token>` (name configurable) | proof: the caller may pin, and is told the arm in `X-Canary-Arm` |
//! | `X-Canary: canary` / `baseline` (name configurable) | with proof, pins the request to that arm whatever the weight (any other value → 400); without proof, ignored and counted |
//! | `Authorization: Bearer <token>` | in `sticky` mode, the token decides the arm |
//!
//! Pinning is for canary's own probes and for operators. The pin and proof headers never reach
//! an arm. After a rollback — the canary's weight went from above 0 to 0, or the lease lapsed —
//! the canary is *fenced*: a proven pin onto it gets `403` and is not forwarded, until the canary
//! is given traffic again or an operator lifts the fence (`PUT /pin`).
//!
//! | status made by the proxy | meaning (the arm is in `X-Canary-Arm` and the metrics) |
//! |---|---|
//! | 403 | a proven pin named the canary while it is fenced after a rollback |
//! | 502 | the arm closed or reset the connection, or answered with something that is not HTTP |
//! | 503 | the arm could not be connected to |
//! | 504 | connecting, or waiting for the response head, took too long |
//!
//! Requests whose form or body the client got wrong reach no arm: the proxy answers them, counts
//! them against the client (`canary_proxy_client_errors_total{kind}`), never against an arm, and
//! on HTTP/1.x closes the connection after the answer.
//!
//! | status made by the proxy | the client's request |
//! |---|---|
//! | 400 | has more than one `Host`, a `Host` that is not `host[:port]`, or none on HTTP/1.1 (RFC 9112 §3.2; HTTP/1.0 may omit it); or its body ended early. An absolute-form target's authority is the host asked for, not `Host` (§3.2.2) |
//! | 405 | is a `CONNECT`: a reverse proxy opens no tunnels (nginx answers the same); `Allow` lists the methods forwarded |
//! | 408 | stalled: nothing more of its body for the client-body timeout ([`Timeouts::client_body`], 60 s by default). The arm is not timed while it waits for that body |
//!
//! # Admin API
//!
//! Served on its own loopback port. Every request needs `Authorization: Bearer <admin token>`;
//! without it the answer is `401` with `WWW-Authenticate: Bearer`. Bodies are JSON; errors are
//! `{"error": "<what is wrong and how to fix it>"}`.
//!
//! | route | body | answer |
//! |---|---|---|
//! | `GET /weights` | — | `200 {"canary": 5, "baseline": 95}` |
//! | `PUT /weights` | `{"canary": 5}` (`"baseline"` optional, must make 100) | `200` with the new weights; `422` out of range |
//! | `GET /healthz` | — | `200 {"status": "ok" \| "degraded", "weights": {..}, "arms": {"baseline": {..}, "canary": {..}}, "lease": null \| {..}}`; each arm has `upstream`, `status` (`unknown` \| `healthy` \| `unhealthy`), `consecutive_failures`, `consecutive_passes`, `last_error`, `last_checked_unix_ms` |
//! | `PUT /lease` | `{"ttl_ms": 5000, "holder": "run-42"}` | `200 {"holder", "ttl_ms", "expires_in_ms"}`; renews or takes the lease |
//! | `GET /lease` | — | `200` with the lease, or `null` |
//! | `DELETE /lease` | — | `204`; gives the lease up without tripping the switch |
//! | `GET /pin` | — | `200 {"header": "x-canary", "proof_header": "x-canary-token", "token": "<pin token>", "canary_fenced": false}` |
//! | `PUT /pin` | `{"canary_fenced": false}` | `200` as `GET /pin`; lifts (or sets) the fence explicitly |
//! | `GET /metrics` | — | Prometheus text format 0.0.4 |
//!
//! **Dead man's switch.** While a lease is held, the controller must renew it (`PUT /lease`)
//! before `ttl_ms` runs out. If it lapses, the proxy sets the canary weight to 0 by itself —
//! within milliseconds of expiry — logs a warning, drops `canary_proxy_lease_held` to 0 and
//! counts `canary_proxy_lease_expirations_total`, and fences the canary against pinned requests.
//!
//! **Health.** Both arms are probed with `GET <upstream>/healthz` (configurable) every
//! interval; an arm is unhealthy after `fall` failures in a row. An unhealthy arm is skipped
//! for weighted requests when the other arm is ready and has a non-zero weight, and is
//! reported in `/healthz` and `canary_proxy_arm_healthy` so the controller can roll back.
//!
//! # Metrics
//!
//! `canary_proxy_requests_total{arm,code_class}`, `canary_proxy_request_duration_seconds{arm}`,
//! `canary_proxy_first_byte_seconds{arm}`, `canary_proxy_sse_streams_total{arm,outcome}`
//! (`complete` | `client_closed` | `upstream_error` | `timeout`), `canary_proxy_weight{arm}`,
//! plus `canary_proxy_upstream_errors_total{arm,kind}`, `canary_proxy_fallback_requests_total{arm}`,
//! `canary_proxy_client_errors_total{kind}` (`bad_request` | `method_not_allowed` |
//! `client_timeout`), `canary_proxy_bad_requests_total` (its `bad_request`),
//! `canary_proxy_pins_refused_total{reason}`
//! (`unauthenticated` | `rolled_back`), `canary_proxy_canary_fenced`, `canary_proxy_arm_healthy{arm}`,
//! `canary_proxy_lease_held` and `canary_proxy_lease_expirations_total`. `arm` is `baseline` or
//! `canary`.
#![forbid(unsafe_code)]
// Tests may unwrap: a panic there is the failure report.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod admin;
mod affinity;
mod arm;
mod body;
mod config;
mod control;
mod distribute;
mod error;
mod forward;
mod headers;
mod health;
mod lease;
mod link;
mod metrics;
mod pin;
mod pool;
mod server;
mod workers;

use std::future::Future;
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use admin::{PinView, WeightsView};
pub use arm::{Arm, UnknownArm};
pub use body::{BoxError, IdleTimeout, ResponseBody};
pub use config::{AdminToken, HealthCheck, ProxyConfig, Timeouts, Upstream};
pub use control::{ArmHealth, HealthStatus};
pub use distribute::{
    CanaryWeight, Decision, InvalidWeight, Readiness, Reason, Refusal, SplitMode, SplitState,
    Splitter, Ticket, choose,
};
pub use error::{Blame, FailureKind, ForwardError, ProxyError};
pub use lease::LeaseView;
pub use metrics::{PinRefusal, StreamOutcome};
pub use pin::{BadPin, Credentials, PinToken};

use crate::admin::AdminApi;
use crate::control::Control;
use crate::forward::Forwarder;
use crate::server::Connections;

/// What a proxy started for a script or a supervisor reports once both ports listen
/// (`canary proxy --ready-file`): where its data port and its admin API are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReadyFile {
    /// The data port's address.
    pub data: SocketAddr,
    /// The admin API's address.
    pub admin: SocketAddr,
}

impl ReadyFile {
    /// Writes the file whole: to a temporary name beside it, then renamed, so a reader never
    /// sees half of it.
    pub fn write(&self, path: &std::path::Path) -> std::io::Result<()> {
        let body = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        std::fs::write(&tmp, body)?;
        std::fs::rename(&tmp, path)
    }

    /// The file at `path`, once a proxy has written it.
    pub fn read(path: &std::path::Path) -> Option<ReadyFile> {
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }
}

/// A running proxy. Dropping the handle stops it (without draining); prefer
/// [`ProxyHandle::shutdown`].
pub struct ProxyHandle {
    data_addr: SocketAddr,
    admin_addr: SocketAddr,
    control: Arc<Control>,
    cancel: CancellationToken,
    tasks: JoinSet<()>,
    /// One receiver per data-path thread, resolved when it has stopped.
    data_threads: Vec<tokio::sync::oneshot::Receiver<()>>,
}

impl ProxyHandle {
    /// The address clients connect to.
    pub fn data_addr(&self) -> SocketAddr {
        self.data_addr
    }

    /// The admin API's address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The current canary weight.
    pub fn weight(&self) -> CanaryWeight {
        self.control.weight()
    }

    /// The current split: weight, and whether the canary is fenced after a rollback.
    pub fn split(&self) -> SplitState {
        self.control.split()
    }

    /// What health checks currently know about `arm`.
    pub fn arm_health(&self, arm: Arm) -> ArmHealth {
        self.control.arm_health(arm)
    }

    /// The current metrics in Prometheus text format (what `GET /metrics` answers).
    pub fn metrics_text(&self) -> String {
        self.control.metrics.render(&self.control.gauges())
    }

    /// Stops accepting, lets in-flight requests finish for up to the drain timeout, cuts the
    /// rest, and returns when every task has ended.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        while self.tasks.join_next().await.is_some() {}
        for stopped in self.data_threads.drain(..) {
            let _ = stopped.await;
        }
    }
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl std::fmt::Debug for ProxyHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyHandle")
            .field("data_addr", &self.data_addr)
            .field("admin_addr", &self.admin_addr)
            .field("weight", &self.weight())
            .finish_non_exhaustive()
    }
}

/// Validates `cfg`, binds both ports and starts serving, health checks and the lease
/// watchdog on the current tokio runtime. Returns once both ports accept connections.
pub async fn start(cfg: ProxyConfig) -> Result<ProxyHandle, ProxyError> {
    cfg.validate()?;
    let admin = bind(cfg.admin_listen, "admin API").await?;
    let admin_addr = local_addr(&admin, cfg.admin_listen, "admin API")?;

    let control = Arc::new(Control::new(cfg.initial_weight));
    let cancel = CancellationToken::new();
    let seed = std::collections::hash_map::RandomState::new().hash_one(admin_addr);
    let splitter = Arc::new(Splitter::new(cfg.split, seed));
    let mut tasks = JoinSet::new();
    let mut data_threads = Vec::new();
    let data = bind(cfg.listen, "data port").await?;
    let data_addr = local_addr(&data, cfg.listen, "data port")?;
    if cfg.workers == 0 {
        let forwarder = Arc::new(Forwarder::new(&cfg, control.clone(), splitter));
        tasks.spawn(server::serve(
            Connections::Listener(data),
            forwarder,
            "data port",
            cancel.clone(),
            cfg.drain_timeout,
        ));
    } else {
        let (acceptor, stopped) = workers::spawn(
            &cfg,
            cfg.workers,
            data,
            control.clone(),
            splitter,
            cancel.clone(),
        )?;
        tasks.spawn(acceptor);
        data_threads = stopped;
    }

    let admin_api = Arc::new(AdminApi::new(control.clone(), &cfg));
    tasks.spawn(server::serve(
        Connections::Listener(admin),
        admin_api,
        "admin API",
        cancel.clone(),
        cfg.drain_timeout,
    ));
    tasks.spawn(lease::watch(control.clone(), cancel.clone()));
    let probe_client = health::probe_client(&cfg.timeouts);
    for (arm, upstream) in [(Arm::Baseline, &cfg.baseline), (Arm::Canary, &cfg.canary)] {
        tasks.spawn(health::probe(
            control.clone(),
            arm,
            upstream.clone(),
            cfg.health.clone(),
            probe_client.clone(),
            cancel.clone(),
        ));
    }
    tracing::info!(
        %data_addr,
        %admin_addr,
        baseline = %cfg.baseline,
        canary = %cfg.canary,
        canary_weight = cfg.initial_weight.canary(),
        split = ?cfg.split,
        data_threads = cfg.workers,
        pinned = cfg.pin_threads,
        "canary proxy listening"
    );
    Ok(ProxyHandle {
        data_addr,
        admin_addr,
        control,
        cancel,
        tasks,
        data_threads,
    })
}

/// Runs the proxy until `shutdown` resolves (the `canary proxy` command passes Ctrl-C /
/// SIGTERM), then drains and stops. `on_ready` is called once both ports are bound, with the
/// handle, so the caller can print the addresses.
pub async fn run_standalone(
    cfg: ProxyConfig,
    on_ready: impl FnOnce(&ProxyHandle),
    shutdown: impl Future<Output = ()>,
) -> Result<(), ProxyError> {
    let handle = start(cfg).await?;
    on_ready(&handle);
    shutdown.await;
    tracing::info!("shutting down: draining open requests");
    handle.shutdown().await;
    Ok(())
}

async fn bind(addr: SocketAddr, role: &'static str) -> Result<TcpListener, ProxyError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ProxyError::Bind { role, addr, source })
}

fn local_addr(
    listener: &TcpListener,
    addr: SocketAddr,
    role: &'static str,
) -> Result<SocketAddr, ProxyError> {
    listener
        .local_addr()
        .map_err(|source| ProxyError::Bind { role, addr, source })
}
