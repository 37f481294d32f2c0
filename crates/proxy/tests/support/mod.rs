//! Real servers and clients for the proxy's integration tests: backends on 127.0.0.1 ports
//! they pick, raw TCP upstreams for failure shapes, an HTTP client, condition waits.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use canary_proxy::{
    AdminToken, HealthCheck, PinToken, ProxyConfig, ProxyHandle, Timeouts, Upstream,
};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub const TOKEN: &str = "test-admin-token";
/// The pin token of test proxies: requests that carry it in `x-canary-token` may pin and are
/// told which arm answered.
pub const PIN_TOKEN: &str = "test-pin-token";

/// An HTTP backend that answers every request `200 <name>` (and `/healthz`), counting hits.
pub struct Backend {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Backend {
    pub async fn start(name: &'static str) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicU64::new(0));
        let counter = hits.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let counter = counter.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let counter = counter.clone();
                        async move {
                            if req.uri().path() != "/healthz" {
                                counter.fetch_add(1, Ordering::Relaxed);
                            }
                            let echo = format!(
                                "{name}\nxff={}\nxfp={}\nhost={}\nconnection={}\n",
                                header(&req, "x-forwarded-for"),
                                header(&req, "x-forwarded-proto"),
                                header(&req, "host"),
                                header(&req, "x-hop"),
                            );
                            let resp = Response::builder()
                                .header("x-backend", name)
                                .header("keep-alive", "timeout=5")
                                .body(Full::new(Bytes::from(echo)))
                                .unwrap();
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Backend { addr, hits, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn header(req: &Request<Incoming>, name: &str) -> String {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned()
}

/// A TCP upstream whose connections are handled by `on_connection` (for failure shapes and
/// hand-written streams).
pub struct RawUpstream {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl RawUpstream {
    pub async fn start<F, Fut>(on_connection: F) -> RawUpstream
    where
        F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Self::bind("127.0.0.1:0".parse().unwrap(), on_connection).await
    }

    pub async fn bind<F, Fut>(addr: SocketAddr, on_connection: F) -> RawUpstream
    where
        F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let on_connection = Arc::new(on_connection);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(on_connection(stream));
            }
        });
        RawUpstream { addr, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one request head (up to the blank line) from `stream`.
pub async fn read_head(stream: &mut TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// A keep-alive connection handler answering every request `200 ok`.
pub async fn answer_ok(mut stream: TcpStream) {
    use tokio::io::AsyncWriteExt;
    loop {
        if read_head(&mut stream).await.is_empty() {
            return;
        }
        if stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .await
            .is_err()
        {
            return;
        }
    }
}

/// A keep-alive upstream that answers every request with `response` (a whole HTTP/1.1 answer)
/// and keeps each request head, lower-cased, in `heads`.
pub async fn recording_upstream(
    response: &'static [u8],
    heads: Arc<std::sync::Mutex<Vec<String>>>,
) -> RawUpstream {
    use tokio::io::AsyncWriteExt;
    RawUpstream::start(move |mut s: TcpStream| {
        let heads = heads.clone();
        async move {
            loop {
                let head = read_head(&mut s).await;
                if head.is_empty() {
                    return;
                }
                heads.lock().unwrap().push(head.to_ascii_lowercase());
                if s.write_all(response).await.is_err() {
                    return;
                }
            }
        }
    })
    .await
}

/// A free loopback address with nothing listening on it.
pub async fn refused_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// A proxy configuration for tests: short health checks, test token.
pub fn config(baseline: &str, canary: &str, weight: u8) -> ProxyConfig {
    let mut cfg = ProxyConfig::new(
        Upstream::parse(baseline).unwrap(),
        Upstream::parse(canary).unwrap(),
        AdminToken::new(TOKEN),
    );
    cfg.pin_token = PinToken::new(PIN_TOKEN);
    cfg.initial_weight = canary_proxy::CanaryWeight::new(weight).unwrap();
    cfg.health = HealthCheck {
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(500),
        ..HealthCheck::default()
    };
    cfg.timeouts = Timeouts {
        connect: Duration::from_secs(1),
        response_head: Duration::from_secs(5),
        idle: Duration::from_secs(30),
        client_body: Duration::from_secs(30),
    };
    cfg
}

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(64)
        .build_http()
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// Sends one request and collects the answer.
pub async fn send(client: &HttpClient, req: Request<Full<Bytes>>) -> Answer {
    let resp = client.request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// A bodiless `GET` of `path` on the proxy's data port, with the pin token (so the answer
/// names its arm).
pub fn get_request(proxy: &ProxyHandle, path: &str) -> Request<Full<Bytes>> {
    Request::get(format!("http://{}{path}", proxy.data_addr()))
        .header("x-canary-token", PIN_TOKEN)
        .body(Full::default())
        .unwrap()
}

pub async fn get(client: &HttpClient, proxy: &ProxyHandle, path: &str) -> Answer {
    send(client, get_request(proxy, path)).await
}

/// Calls the admin API with the test token.
pub async fn admin(
    client: &HttpClient,
    proxy: &ProxyHandle,
    method: &str,
    path: &str,
    body: &str,
) -> Answer {
    let req = Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", proxy.admin_addr()))
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    send(client, req).await
}

/// The value of one sample line of the proxy's metrics, or 0 if absent.
pub fn metric(proxy: &ProxyHandle, series: &str) -> f64 {
    proxy
        .metrics_text()
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Polls `condition` every 5 ms until it holds or `within` passes; panics with `what` then.
pub async fn wait_until(what: &str, within: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
