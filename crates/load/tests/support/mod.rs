//! Real servers for the load crate's integration tests: two relay-demo instances (baseline
//! r0.5, canary r1) behind the embedded proxy, small axum servers with scripted answers, and a
//! plain HTTP GET for reading metrics. Everything on 127.0.0.1 ports the test picks.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use canary_core::Secret;
use canary_load::{PinProof, ProbeSpec, ProbeUser, User};
use canary_proxy::{AdminToken, CanaryWeight, PinToken, ProxyConfig, ProxyHandle, Upstream};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use relay_demo::{Fault, RunningServer, ServeOptions};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// JWT signing secret of every test instance.
pub const SECRET: &str = "canary-load-test-signing-secret";
/// The proxy's pin token: requests carrying it may pin and are told their arm.
pub const PIN_TOKEN: &str = "canary-load-test-pin-token";

/// A relay-demo instance: seeded (60 memories per user), with `faults`.
pub async fn relay(version: &str, faults: &[&str]) -> RunningServer {
    relay_demo::spawn(ServeOptions {
        version_label: version.to_owned(),
        seed: true,
        seed_memories_per_user: 60,
        faults: faults.iter().map(|f| f.parse::<Fault>().unwrap()).collect(),
        jwt_secret: Some(SECRET.to_owned()),
        data_secret: Some("canary-load-test-data-secret".to_owned()),
        ..ServeOptions::default()
    })
    .await
    .expect("relay-demo starts")
}

/// Baseline (r0.5) and canary (r1) relay-demo instances behind the embedded proxy.
pub struct Stack {
    pub baseline: RunningServer,
    pub canary: RunningServer,
    pub proxy: ProxyHandle,
}

impl Stack {
    /// Starts the stack with `canary_faults` on the canary and `weight` % to the canary.
    pub async fn start(canary_faults: &[&str], weight: u8) -> Stack {
        let baseline = relay("r0.5", &[]).await;
        let canary = relay("r1", canary_faults).await;
        let mut cfg = ProxyConfig::new(
            Upstream::parse(&baseline.url()).unwrap(),
            Upstream::parse(&canary.url()).unwrap(),
            AdminToken::new("load-test-admin-token"),
        );
        cfg.initial_weight = CanaryWeight::new(weight).unwrap();
        cfg.pin_token = PinToken::new(PIN_TOKEN);
        // Serve on the test's runtime: no extra threads on a two-core machine.
        cfg.workers = 0;
        let proxy = canary_proxy::start(cfg).await.expect("proxy starts");
        Stack {
            baseline,
            canary,
            proxy,
        }
    }

    /// The proxy's pin token, as canary hands it to the load crate.
    pub fn proof(&self) -> PinProof {
        PinProof::new(Secret::new(PIN_TOKEN))
    }

    /// Probes of the seeded users through the proxy, pinned to the canary with the token.
    pub fn probes(&self) -> ProbeSpec {
        let mut spec = ProbeSpec::new(self.url(), probe_users());
        spec.pin_proof = Some(self.proof());
        spec
    }

    /// The load balancer's URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.proxy.data_addr())
    }

    /// The proxy's count of requests it sent to `arm` (all code classes).
    pub fn proxy_requests(&self, arm: &str) -> f64 {
        let text = self.proxy.metrics_text();
        sum_metric(
            &text,
            "canary_proxy_requests_total",
            &format!("arm=\"{arm}\""),
        )
    }

    pub async fn stop(self) {
        self.proxy.shutdown().await;
        self.baseline.shutdown().await.unwrap();
        self.canary.shutdown().await.unwrap();
    }
}

/// Sum of the samples of `name` whose labels contain `label`.
pub fn sum_metric(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// GET `url` and return the body as text.
pub async fn get_text(url: &str) -> String {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let response = client.get(url.parse().unwrap()).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

/// The seeded users user_1..user_5 with valid tokens.
pub fn users() -> Vec<User> {
    relay_demo::seed_users()
        .into_iter()
        .map(|name| User {
            token: Secret::new(token(&name)),
            name,
        })
        .collect()
}

/// The seeded users with their tokens and markers.
pub fn probe_users() -> Vec<ProbeUser> {
    relay_demo::seed_markers()
        .into_iter()
        .map(|(name, marker)| ProbeUser {
            token: Secret::new(token(&name)),
            marker: Secret::new(marker),
            name,
        })
        .collect()
}

pub fn token(user: &str) -> String {
    relay_demo::mint_token(SECRET, user, Duration::from_secs(3600)).unwrap()
}

/// Every secret the tests use: none may appear in any rendering.
pub fn secrets() -> Vec<String> {
    let mut all: Vec<String> = relay_demo::seed_users().iter().map(|u| token(u)).collect();
    all.extend(relay_demo::seed_markers().into_iter().map(|(_, m)| m));
    all
}

/// An axum app on 127.0.0.1:0, stopped by [`AppServer::stop`].
pub struct AppServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl AppServer {
    pub async fn start(app: axum::Router) -> AppServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        AppServer {
            addr,
            stop: Some(tx),
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        (&mut self.task).await.unwrap();
    }
}

impl Drop for AppServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// A streamed answer: each `(delay, chunk)` is written after its delay.
pub fn scripted_body(script: Vec<(Duration, &'static str)>) -> axum::body::Body {
    let stream = futures_util::stream::unfold(script.into_iter(), |mut steps| async move {
        let (delay, chunk) = steps.next()?;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Some((
            Ok::<_, std::convert::Infallible>(Bytes::from_static(chunk.as_bytes())),
            steps,
        ))
    });
    axum::body::Body::from_stream(stream)
}
