//! Upstream failures become 502/503/504 attributed to their arm, and the proxy keeps serving.
//! Also: request bodies stream to the upstream without being collected.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::{Backend, RawUpstream, client, config, get, metric, read_head, send};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

async fn pinned_to_canary(
    client: &support::HttpClient,
    proxy: &canary_proxy::ProxyHandle,
) -> support::Answer {
    let req = Request::get(format!("http://{}/q", proxy.data_addr()))
        .header("x-canary", "canary")
        .header("x-canary-token", support::PIN_TOKEN)
        .body(Full::default())
        .unwrap();
    send(client, req).await
}

#[tokio::test]
async fn upstream_failures_become_gateway_errors_attributed_to_the_arm() {
    let baseline = Backend::start("baseline").await;
    let refused = format!("http://{}", support::refused_addr().await);
    let reset = RawUpstream::start(|mut s: TcpStream| async move {
        read_head(&mut s).await;
        s.set_zero_linger().unwrap();
    })
    .await;
    let closed = RawUpstream::start(|mut s: TcpStream| async move {
        read_head(&mut s).await;
    })
    .await;
    let slow = RawUpstream::start(|mut s: TcpStream| async move {
        read_head(&mut s).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    })
    .await;
    let garbage = RawUpstream::start(|mut s: TcpStream| async move {
        read_head(&mut s).await;
        let _ = s.write_all(b"SSH-2.0-OpenSSH_9.2\r\n\r\n").await;
    })
    .await;

    let cases = [
        (refused, 503, "connect_failed"),
        (reset.url(), 502, "reset"),
        (closed.url(), 502, "reset"),
        (slow.url(), 504, "head_timeout"),
        (garbage.url(), 502, "protocol"),
    ];
    let client = client();
    for (canary_url, status, kind) in cases {
        let mut cfg = config(&baseline.url(), &canary_url, 50);
        cfg.timeouts.response_head = Duration::from_millis(300);
        let proxy = canary_proxy::start(cfg).await.unwrap();
        let answer = pinned_to_canary(&client, &proxy).await;
        assert_eq!(answer.status, status, "{kind}: {}", answer.body);
        assert_eq!(answer.header("x-canary-arm"), "canary", "{kind}");
        assert!(
            answer.body.contains("canary arm"),
            "{kind}: {}",
            answer.body
        );
        assert_eq!(
            metric(
                &proxy,
                &format!("canary_proxy_upstream_errors_total{{arm=\"canary\",kind=\"{kind}\"}}")
            ),
            1.0,
            "{kind}"
        );
        assert_eq!(
            metric(
                &proxy,
                "canary_proxy_requests_total{arm=\"canary\",code_class=\"5xx\"}"
            ),
            1.0,
            "{kind}"
        );
        assert_eq!(
            metric(
                &proxy,
                "canary_proxy_requests_total{arm=\"baseline\",code_class=\"5xx\"}"
            ),
            0.0
        );
        // The proxy keeps serving: the baseline answers, and so does the next canary request
        // (with the same error).
        for _ in 0..5 {
            let ok = send(
                &client,
                Request::get(format!("http://{}/q", proxy.data_addr()))
                    .header("x-canary", "baseline")
                    .header("x-canary-token", support::PIN_TOKEN)
                    .body(Full::default())
                    .unwrap(),
            )
            .await;
            assert_eq!(ok.status, 200, "{kind}");
        }
        assert_eq!(
            pinned_to_canary(&client, &proxy).await.status,
            status,
            "{kind}"
        );
        proxy.shutdown().await;
    }
}

#[tokio::test]
async fn request_bodies_stream_to_the_upstream_without_being_collected() {
    // The upstream signals as soon as it has the first chunk; the client sends the second
    // chunk only after that signal. A proxy that collected the body would deadlock here.
    let (first_seen_tx, first_seen_rx) = tokio::sync::oneshot::channel::<()>();
    let first_seen = Arc::new(Mutex::new(Some(first_seen_tx)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let first_seen = first_seen.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let first_seen = first_seen.clone();
                        async move {
                            let mut body = req.into_body();
                            let mut received = 0usize;
                            while let Some(Ok(frame)) = body.frame().await {
                                if let Some(data) = frame.data_ref() {
                                    received += data.len();
                                    if let Some(tx) = first_seen.lock().unwrap().take() {
                                        let _ = tx.send(());
                                    }
                                }
                            }
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(
                                received.to_string(),
                            ))))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    let baseline = Backend::start("baseline").await;
    let proxy = canary_proxy::start(config(
        &baseline.url(),
        &format!("http://{upstream_addr}"),
        100,
    ))
    .await
    .unwrap();

    let (chunks_tx, chunks_rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let body = ChannelBody(chunks_rx);
    let client: Client<_, ChannelBody> = Client::builder(TokioExecutor::new()).build_http();
    let request = Request::post(format!("http://{}/api/v1/memory", proxy.data_addr()))
        .header("x-canary-token", support::PIN_TOKEN)
        .body(body)
        .unwrap();
    let response = tokio::spawn(async move { client.request(request).await });
    chunks_tx.send(Bytes::from(vec![b'a'; 1000])).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), first_seen_rx)
        .await
        .expect("the upstream never saw the first chunk: the proxy is holding the body")
        .unwrap();
    chunks_tx.send(Bytes::from(vec![b'b'; 500])).await.unwrap();
    drop(chunks_tx);
    let response = response.await.unwrap().unwrap();
    assert_eq!(response.headers()["x-canary-arm"], "canary");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"1500");
}

#[tokio::test]
async fn an_upstream_answering_before_the_body_ends_is_answered_at_once() {
    // The upstream refuses on the head alone (as a server does with 413 or 401) while the
    // client is still sending: the answer must reach the client, not wait for a body that may
    // never end and turn into a 504.
    let upstream = RawUpstream::start(|mut s: TcpStream| async move {
        read_head(&mut s).await;
        let _ = s
            .write_all(b"HTTP/1.1 413 Content Too Large\r\ncontent-length: 9\r\n\r\ntoo large")
            .await;
        // Keep the connection open without reading: the body stays unread.
        tokio::time::sleep(Duration::from_secs(10)).await;
    })
    .await;
    let baseline = Backend::start("baseline").await;
    let mut cfg = config(&baseline.url(), &upstream.url(), 100);
    cfg.timeouts.response_head = Duration::from_secs(3);
    let proxy = canary_proxy::start(cfg).await.unwrap();

    let (chunks_tx, chunks_rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let client: Client<_, ChannelBody> = Client::builder(TokioExecutor::new()).build_http();
    let request = Request::post(format!("http://{}/upload", proxy.data_addr()))
        .header("x-canary-token", support::PIN_TOKEN)
        .body(ChannelBody(chunks_rx))
        .unwrap();
    let response = tokio::spawn(async move { client.request(request).await });
    chunks_tx.send(Bytes::from(vec![b'a'; 1000])).await.unwrap();
    // The client never finishes its body; the sender stays open until the answer is in.
    let response = response.await.unwrap().unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(response.headers()["x-canary-arm"], "canary");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"too large");
    drop(chunks_tx);
    assert_eq!(
        metric(
            &proxy,
            "canary_proxy_requests_total{arm=\"canary\",code_class=\"4xx\"}"
        ),
        1.0
    );
}

/// A request body fed chunk by chunk from a channel.
struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }
}

#[tokio::test]
async fn baseline_keeps_serving_while_the_canary_fails() {
    let baseline = Backend::start("baseline").await;
    let refused = format!("http://{}", support::refused_addr().await);
    let mut cfg = config(&baseline.url(), &refused, 50);
    // Health checks slower than the test, so weighted requests really hit the dead canary.
    cfg.health.interval = Duration::from_secs(60);
    let proxy = canary_proxy::start(cfg).await.unwrap();
    let client = client();
    let (mut ok, mut unavailable) = (0, 0);
    for _ in 0..200 {
        match get(&client, &proxy, "/q").await.status.as_u16() {
            200 => ok += 1,
            503 => unavailable += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((ok, unavailable), (100, 100), "two full decks at 50 %");
    assert_eq!(
        metric(
            &proxy,
            "canary_proxy_upstream_errors_total{arm=\"canary\",kind=\"connect_failed\"}"
        ),
        100.0
    );
    assert_eq!(
        metric(
            &proxy,
            "canary_proxy_requests_total{arm=\"baseline\",code_class=\"2xx\"}"
        ),
        100.0
    );
}

#[tokio::test]
async fn upstream_connections_are_reused_and_stale_ones_replaced() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let baseline = Backend::start("baseline").await;

    // A keep-alive upstream: sequential requests share one connection.
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let keep_alive = RawUpstream::start(move |s: TcpStream| {
        counter.fetch_add(1, Ordering::Relaxed);
        support::answer_ok(s)
    })
    .await;
    // An upstream that closes every connection after one answer, without saying so: the
    // pooled connection is stale by the next request.
    let closing = RawUpstream::start(|mut s: TcpStream| async move {
        read_head(&mut s).await;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .await;
    })
    .await;

    let client = client();
    let mut cfg = config(&baseline.url(), &keep_alive.url(), 100);
    cfg.health.interval = Duration::from_secs(600);
    let proxy = canary_proxy::start(cfg).await.unwrap();
    for _ in 0..50 {
        assert_eq!(get(&client, &proxy, "/q").await.status, 200);
    }
    // One connection for the requests, at most one more for the health check.
    assert!(
        accepted.load(Ordering::Relaxed) <= 2,
        "{} connections",
        accepted.load(Ordering::Relaxed)
    );

    let mut cfg = config(&baseline.url(), &closing.url(), 100);
    cfg.health.interval = Duration::from_secs(600);
    let proxy = canary_proxy::start(cfg).await.unwrap();
    for i in 0..30 {
        let answer = get(&client, &proxy, "/q").await;
        assert_eq!(answer.status, 200, "request {i}: {}", answer.body);
    }
    assert_eq!(
        metric(
            &proxy,
            "canary_proxy_requests_total{arm=\"canary\",code_class=\"5xx\"}"
        ),
        0.0
    );
}
