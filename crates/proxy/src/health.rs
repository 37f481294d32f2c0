//! Active health checks: each arm is probed with `GET <upstream><path>` every interval, and
//! the result drives readiness (the data path's fallback) and `GET /healthz`.

use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::arm::Arm;
use crate::config::{HealthCheck, Timeouts, Upstream};
use crate::control::Control;
use crate::error::chain_text;

/// The client health checks use: its own small keep-alive pool, the connect timeout.
pub(crate) fn probe_client(timeouts: &Timeouts) -> Client<HttpConnector, Empty<Bytes>> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(timeouts.connect));
    Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector)
}

/// Probes one arm until `cancel`.
pub(crate) async fn probe(
    control: Arc<Control>,
    arm: Arm,
    upstream: Upstream,
    policy: HealthCheck,
    client: Client<HttpConnector, Empty<Bytes>>,
    cancel: CancellationToken,
) {
    let uri = match http::uri::PathAndQuery::try_from(policy.path.as_str())
        .map_err(http::Error::from)
        .and_then(|pq| upstream.uri_for(Some(&pq)))
    {
        Ok(uri) => uri,
        Err(err) => {
            tracing::error!(arm = arm.as_str(), path = %policy.path, error = %err, "health-check path is not a valid URI path; health checks are off");
            return;
        }
    };
    let mut ticker = tokio::time::interval(policy.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        // Cancellation first: after a slow probe the next tick is already due, and an unbiased
        // select would start another probe half the time instead of stopping.
        tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let request = Request::get(uri.clone())
            .header(http::header::USER_AGENT, "canary-proxy-health-check")
            .body(Empty::new());
        let Ok(request) = request else { return };
        // A probe in flight does not hold up shutdown.
        let answered = tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            answered = tokio::time::timeout(policy.timeout, client.request(request)) => answered,
        };
        let result = match answered {
            Ok(Ok(resp)) if resp.status().is_success() => Ok(()),
            Ok(Ok(resp)) => Err(format!("GET {uri} answered {}", resp.status())),
            Ok(Err(err)) => Err(format!("GET {uri}: {}", chain_text(&err))),
            Err(_) => Err(format!(
                "GET {uri}: no answer within {} ms",
                policy.timeout.as_millis()
            )),
        };
        control.record_probe(arm, result, &policy);
    }
}
