//! Request forms the proxy must not forward (RFC 9112 §3.2 `Host` rules; `CONNECT`, which asks
//! a reverse proxy for a tunnel) are refused before any arm sees them, and a client that stalls
//! in the middle of its body is answered 408, charged to the client rather than to the arm.
//! Raw TCP clients send what a well-behaved HTTP client library would refuse to.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use canary_proxy::ProxyHandle;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use support::{Backend, RawUpstream, config, metric, read_head, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long a client waits for the proxy before the test calls it hung: generous, so a slow
/// machine is never mistaken for a hang.
const PATIENCE: Duration = Duration::from_secs(10);

/// One response as a raw client reads it.
struct RawAnswer {
    status: u16,
    head: String,
    body: String,
}

impl RawAnswer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (field, value) = line.split_once(':')?;
            field.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

/// Sends `request` as bytes on a new connection to the data port and reads one response,
/// failing the test if none comes within [`PATIENCE`]. Returns the connection too.
async fn send_raw(proxy: &ProxyHandle, request: &[u8]) -> (RawAnswer, TcpStream) {
    let mut stream = TcpStream::connect(proxy.data_addr()).await.unwrap();
    stream.write_all(request).await.unwrap();
    let answer = tokio::time::timeout(PATIENCE, read_response(&mut stream))
        .await
        .unwrap_or_else(|_| panic!("no response within {PATIENCE:?}: the client hangs"));
    (answer, stream)
}

async fn read_response(stream: &mut TcpStream) -> RawAnswer {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed before a response head: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let mut body = buf.split_off(head_end);
    let answer = RawAnswer {
        status,
        head,
        body: String::new(),
    };
    match answer.header("content-length") {
        Some(length) => {
            let length: usize = length.parse().unwrap();
            while body.len() < length {
                let mut chunk = [0u8; 4096];
                let n = stream.read(&mut chunk).await.unwrap();
                assert!(n > 0, "closed inside the body");
                body.extend_from_slice(&chunk[..n]);
            }
        }
        None => {
            stream.read_to_end(&mut body).await.unwrap();
        }
    }
    RawAnswer {
        body: String::from_utf8_lossy(&body).into_owned(),
        ..answer
    }
}

/// Whether the proxy closes `stream` (end of stream or reset) within [`PATIENCE`].
async fn closes(stream: &mut TcpStream) -> bool {
    let mut rest = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut rest))
        .await
        .is_ok()
}

/// An upstream that answers every request `200 ok` and records each request head (health
/// checks aside): what the arm saw.
async fn recording_upstream() -> (RawUpstream, Arc<Mutex<Vec<String>>>) {
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    let upstream = RawUpstream::start(move |mut stream: TcpStream| {
        let seen = seen.clone();
        async move {
            loop {
                let head = read_head(&mut stream).await;
                if head.is_empty() {
                    return;
                }
                if !head.starts_with("GET /healthz ") {
                    seen.lock().unwrap().push(head);
                }
                let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                if stream.write_all(ok).await.is_err() {
                    return;
                }
            }
        }
    })
    .await;
    (upstream, heads)
}

/// The request lines the upstream saw, in order.
fn request_lines(heads: &Mutex<Vec<String>>) -> Vec<String> {
    heads
        .lock()
        .unwrap()
        .iter()
        .map(|head| head.lines().next().unwrap_or("").to_owned())
        .collect()
}

#[tokio::test]
async fn host_rules_follow_rfc_9112() {
    let baseline = Backend::start("baseline").await;
    let (canary, heads) = recording_upstream().await;
    let proxy = canary_proxy::start(config(&baseline.url(), &canary.url(), 100))
        .await
        .unwrap();
    // (case, request, status; a refused request is never forwarded and ends its connection)
    let cases: [(&str, &[u8], u16); 6] = [
        (
            "two Host lines",
            b"GET /two HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
            400,
        ),
        ("HTTP/1.1 without Host", b"GET /none HTTP/1.1\r\n\r\n", 400),
        (
            "a Host that is not host[:port]",
            b"GET /bad HTTP/1.1\r\nHost: a b\r\n\r\n",
            400,
        ),
        (
            "absolute-form without Host",
            b"GET http://target.example/nohost HTTP/1.1\r\n\r\n",
            400,
        ),
        ("HTTP/1.0 without Host", b"GET /old HTTP/1.0\r\n\r\n", 200),
        (
            "absolute-form, Host ignored",
            b"GET http://target.example/abs?q=1 HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n",
            200,
        ),
    ];
    for (case, request, status) in cases {
        let (answer, mut stream) = send_raw(&proxy, request).await;
        assert_eq!(
            answer.status, status,
            "{case}: {}{}",
            answer.head, answer.body
        );
        if status == 400 {
            assert!(answer.body.contains("Host"), "{case}: {}", answer.body);
            assert_eq!(answer.header("connection"), Some("close"), "{case}");
            assert!(
                closes(&mut stream).await,
                "{case}: the connection stays open"
            );
        }
    }
    // Only the acceptable requests reached the arm, in origin-form.
    assert_eq!(
        request_lines(&heads),
        ["GET /old HTTP/1.1", "GET /abs?q=1 HTTP/1.1"]
    );
    // RFC 9112 §3.2.2: the absolute-form's authority is the host asked for, not `Host`.
    let absolute = heads.lock().unwrap()[1].to_lowercase();
    assert!(
        absolute.contains("\r\nx-forwarded-host: target.example\r\n"),
        "{absolute}"
    );
    assert!(
        absolute.contains(&format!("\r\nhost: {}\r\n", canary.addr)),
        "{absolute}"
    );
    // Charged to the client, not to an arm.
    assert_eq!(
        metric(
            &proxy,
            "canary_proxy_client_errors_total{kind=\"bad_request\"}"
        ),
        4.0
    );
    assert_eq!(metric(&proxy, "canary_proxy_bad_requests_total"), 4.0);
    assert_eq!(
        metric(
            &proxy,
            "canary_proxy_requests_total{arm=\"canary\",code_class=\"4xx\"}"
        ),
        0.0
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn connect_is_refused_at_once_and_never_forwarded() {
    let baseline = Backend::start("baseline").await;
    let (canary, heads) = recording_upstream().await;
    let proxy = canary_proxy::start(config(&baseline.url(), &canary.url(), 100))
        .await
        .unwrap();
    for request in [
        &b"CONNECT relay.example:443 HTTP/1.1\r\nHost: relay.example:443\r\n\r\n"[..],
        b"CONNECT / HTTP/1.1\r\nHost: relay.example\r\n\r\n",
        b"CONNECT relay.example:443 HTTP/1.0\r\n\r\n",
    ] {
        let text = String::from_utf8_lossy(request);
        let (answer, mut stream) = send_raw(&proxy, request).await;
        assert_eq!(answer.status, 405, "{text}: {}{}", answer.head, answer.body);
        let allow = answer.header("allow").unwrap_or_default();
        assert!(
            allow.contains("GET") && allow.contains("POST") && !allow.contains("CONNECT"),
            "{text}: allow {allow:?}"
        );
        assert!(
            closes(&mut stream).await,
            "{text}: the connection stays open"
        );
    }
    assert_eq!(request_lines(&heads), Vec::<String>::new());
    assert_eq!(baseline.hits(), 0);
    assert_eq!(
        metric(
            &proxy,
            "canary_proxy_client_errors_total{kind=\"method_not_allowed\"}"
        ),
        3.0
    );
    proxy.shutdown().await;
}

/// What an upstream that reads whole request bodies made of the one it was sent.
#[derive(Clone, Debug, PartialEq, Eq)]
enum BodySeen {
    Whole(usize),
    Cut,
}

/// An upstream that reads each request body to its end before answering, recording how it
/// ended (health checks aside).
async fn body_reading_upstream() -> (String, Arc<Mutex<Vec<BodySeen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let record = record.clone();
                    async move {
                        let health = req.uri().path() == "/healthz";
                        let body = req.into_body().collect().await;
                        if !health {
                            record.lock().unwrap().push(match body {
                                Ok(body) => BodySeen::Whole(body.to_bytes().len()),
                                Err(_) => BodySeen::Cut,
                            });
                        }
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("ok"))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (url, seen)
}

#[tokio::test]
async fn a_client_that_stalls_mid_body_gets_408_charged_to_it() {
    let baseline = Backend::start("baseline").await;
    let (canary, seen) = body_reading_upstream().await;
    let mut cfg = config(&baseline.url(), &canary, 100);
    // The response-head timeout is the shorter: were the arm timed while it waits for the
    // client's body, the answer would be a 504 blamed on the arm.
    cfg.timeouts.response_head = Duration::from_millis(200);
    cfg.timeouts.client_body = Duration::from_millis(600);
    let proxy = canary_proxy::start(cfg).await.unwrap();

    // (how the client fails, status, client error kind)
    let cases = [
        ("stalls", 408, "client_timeout"),
        ("hangs up", 400, "bad_request"),
    ];
    for (i, (case, status, kind)) in cases.into_iter().enumerate() {
        let mut stream = TcpStream::connect(proxy.data_addr()).await.unwrap();
        stream
            .write_all(
                b"POST /upload HTTP/1.1\r\nHost: relay.example\r\nContent-Length: 10\r\n\r\nabc",
            )
            .await
            .unwrap();
        if case == "hangs up" {
            stream.shutdown().await.unwrap();
        }
        let answer = tokio::time::timeout(PATIENCE, read_response(&mut stream))
            .await
            .unwrap_or_else(|_| panic!("{case}: no response within {PATIENCE:?}"));
        assert_eq!(
            answer.status, status,
            "{case}: {}{}",
            answer.head, answer.body
        );
        assert_eq!(answer.header("connection"), Some("close"), "{case}");
        assert!(
            closes(&mut stream).await,
            "{case}: the connection stays open"
        );
        assert_eq!(
            metric(
                &proxy,
                &format!("canary_proxy_client_errors_total{{kind=\"{kind}\"}}")
            ),
            1.0,
            "{case}"
        );
        // The arm saw the request begin and end cut short: its connection was not kept.
        wait_until(
            &format!("{case}: the arm's request to be cut"),
            PATIENCE,
            || seen.lock().unwrap().len() == i + 1,
        )
        .await;
        assert_eq!(seen.lock().unwrap()[i], BodySeen::Cut, "{case}");
    }
    // Nothing is charged to either arm.
    for arm in ["baseline", "canary"] {
        for upstream_kind in ["head_timeout", "reset"] {
            assert_eq!(
                metric(
                    &proxy,
                    &format!(
                        "canary_proxy_upstream_errors_total{{arm=\"{arm}\",kind=\"{upstream_kind}\"}}"
                    )
                ),
                0.0,
                "{arm} {upstream_kind}"
            );
        }
        assert_eq!(
            metric(
                &proxy,
                &format!("canary_proxy_requests_total{{arm=\"{arm}\",code_class=\"5xx\"}}")
            ),
            0.0,
            "{arm}"
        );
    }
    // A client that sends its whole body is forwarded as before.
    let whole = send_raw(
        &proxy,
        b"POST /upload HTTP/1.1\r\nHost: relay.example\r\nContent-Length: 10\r\nConnection: close\r\n\r\n0123456789",
    )
    .await
    .0;
    assert_eq!(whole.status, 200, "{}{}", whole.head, whole.body);
    assert_eq!(seen.lock().unwrap()[2], BodySeen::Whole(10));
    proxy.shutdown().await;
}

#[tokio::test]
async fn an_arm_silent_after_the_whole_body_is_still_late() {
    // The contrast to a stalling client: the body has all gone out, the arm owes the answer.
    let received = Arc::new(Mutex::new(None));
    let record = received.clone();
    let silent = RawUpstream::start(move |mut stream: TcpStream| {
        let record = record.clone();
        async move {
            let head = read_head(&mut stream).await;
            if head.starts_with("GET /healthz ") {
                let healthy = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
                let _ = stream.write_all(healthy).await;
                return;
            }
            let early = head
                .split_once("\r\n\r\n")
                .map_or(0, |(_, body)| body.len());
            // Read, never answer, until the proxy gives up on the connection.
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest).await;
            *record.lock().unwrap() = Some(early + rest.len());
        }
    })
    .await;
    let baseline = Backend::start("baseline").await;
    let mut cfg = config(&baseline.url(), &silent.url(), 100);
    cfg.timeouts.response_head = Duration::from_millis(200);
    cfg.timeouts.client_body = Duration::from_secs(30);
    let proxy = canary_proxy::start(cfg).await.unwrap();
    let (answer, _) = send_raw(
        &proxy,
        b"POST /upload HTTP/1.1\r\nHost: relay.example\r\nContent-Length: 10\r\n\r\n0123456789",
    )
    .await;
    assert_eq!(answer.status, 504, "{}{}", answer.head, answer.body);
    assert_eq!(
        metric(
            &proxy,
            "canary_proxy_upstream_errors_total{arm=\"canary\",kind=\"head_timeout\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &proxy,
            "canary_proxy_client_errors_total{kind=\"client_timeout\"}"
        ),
        0.0
    );
    wait_until("the arm's connection to close", PATIENCE, || {
        received.lock().unwrap().is_some()
    })
    .await;
    assert_eq!(*received.lock().unwrap(), Some(10));
    proxy.shutdown().await;
}
