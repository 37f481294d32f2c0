//! Response framings an upstream may use reach the client intact, and decide whether the
//! upstream connection is kept: chunked (with extensions and trailers), `HEAD`, 204, interim
//! 1xx responses, `Transfer-Encoding` with `Content-Length`, and bodies that run until close.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use support::{Backend, RawUpstream, client, config, get, get_request, metric, read_head, send};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// The upstream's answer to `head`, and whether it closes the connection after it.
fn answer(head: &str) -> (&'static [u8], bool) {
    let line = head.lines().next().unwrap_or("");
    match line.split(' ').take(2).collect::<Vec<_>>()[..] {
        ["GET", "/chunked"] => (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: 1\r\n\r\n",
            false,
        ),
        ["HEAD", "/head"] => (b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", false),
        ["GET", "/empty"] => (b"HTTP/1.1 204 No Content\r\n\r\n", false),
        ["GET", "/interim"] => (
            b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
            false,
        ),
        ["GET", "/both"] => (
            b"HTTP/1.1 200 OK\r\ncontent-length: 30\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            false,
        ),
        ["GET", "/until-close"] => (b"HTTP/1.1 200 OK\r\n\r\nread until the upstream closes", true),
        _ => (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", false),
    }
}

#[tokio::test]
async fn framings_reach_the_client_and_decide_connection_reuse() {
    let baseline = Backend::start("baseline").await;
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let upstream = RawUpstream::start(move |mut s: TcpStream| {
        counter.fetch_add(1, Ordering::Relaxed);
        async move {
            loop {
                let head = read_head(&mut s).await;
                if head.is_empty() {
                    return;
                }
                let (bytes, close) = answer(&head);
                if s.write_all(bytes).await.is_err() || close {
                    return;
                }
            }
        }
    })
    .await;
    let mut cfg = config(&baseline.url(), &upstream.url(), 100);
    cfg.health.interval = Duration::from_secs(600);
    // One data-path thread: one pool, so upstream connections count reuse exactly.
    cfg.workers = 1;
    let proxy = canary_proxy::start(cfg).await.unwrap();
    let client = client();
    let connections = || accepted.load(Ordering::Relaxed);

    let chunked = get(&client, &proxy, "/chunked").await;
    assert_eq!(
        (chunked.status.as_u16(), chunked.body.as_str()),
        (200, "hello world")
    );
    // An h2c client receives the chunked body's trailers as HTTP/2 trailers.
    let h2c: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let resp = h2c.request(get_request(&proxy, "/chunked")).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("trailers forwarded");
    assert_eq!(trailers["x-trailer"], "1");
    assert_eq!(&collected.to_bytes()[..], b"hello world");
    let head = send(
        &client,
        Request::head(format!("http://{}/head", proxy.data_addr()))
            .body(Full::<Bytes>::default())
            .unwrap(),
    )
    .await;
    assert_eq!((head.status.as_u16(), head.body.as_str()), (200, ""));
    assert_eq!(
        head.header("content-length"),
        "5",
        "HEAD keeps the length of the GET"
    );
    let empty = get(&client, &proxy, "/empty").await;
    assert_eq!((empty.status.as_u16(), empty.body.as_str()), (204, ""));
    let interim = get(&client, &proxy, "/interim").await;
    assert_eq!(
        (interim.status.as_u16(), interim.body.as_str()),
        (200, "ok")
    );
    let both = get(&client, &proxy, "/both").await;
    assert_eq!((both.status.as_u16(), both.body.as_str()), (200, "ok"));
    assert_ne!(
        both.header("content-length"),
        "30",
        "Transfer-Encoding wins"
    );
    // All of these were delimited, so one kept-alive connection carried them (plus, at most,
    // the health check's own).
    assert!(
        connections() <= 2,
        "{} connections for five delimited responses",
        connections()
    );

    let before = connections();
    let until_close = get(&client, &proxy, "/until-close").await;
    assert_eq!(until_close.status, 200);
    assert_eq!(until_close.body, "read until the upstream closes");
    // That connection ended with its body, so the next request needs a new one, and gets it.
    let next = get(&client, &proxy, "/chunked").await;
    assert_eq!(next.body, "hello world");
    assert_eq!(connections() - before, 1);
    assert_eq!(
        metric(
            &proxy,
            "canary_proxy_requests_total{arm=\"canary\",code_class=\"5xx\"}"
        ),
        0.0
    );
}

#[tokio::test]
async fn a_body_cut_short_by_the_upstream_fails_the_response_and_the_connection() {
    let baseline = Backend::start("baseline").await;
    let upstream = RawUpstream::start(|mut s: TcpStream| {
        async move {
            loop {
                let head = read_head(&mut s).await;
                if head.is_empty() {
                    return;
                }
                if head.starts_with("GET /short") {
                    // Promises 100 bytes, sends 5, and closes.
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nhello")
                        .await;
                    return;
                }
                let (bytes, _) = answer(&head);
                if s.write_all(bytes).await.is_err() {
                    return;
                }
            }
        }
    })
    .await;
    let mut cfg = config(&baseline.url(), &upstream.url(), 100);
    cfg.health.interval = Duration::from_secs(600);
    let proxy = canary_proxy::start(cfg).await.unwrap();
    let client = client();

    let req = get_request(&proxy, "/short");
    // Depending on whether the head left before the cut was seen, the client gets a response
    // whose body fails, or a connection closed before the head; never a body that ends.
    if let Ok(resp) = client.request(req).await {
        let body = resp.into_body().collect().await;
        assert!(body.is_err(), "the client must see the body fail, not end");
    }
    // The proxy keeps serving, on a new connection.
    let ok = get(&client, &proxy, "/chunked").await;
    assert_eq!(ok.body, "hello world");
}

#[tokio::test]
async fn large_bodies_arrive_byte_for_byte_in_both_framings() {
    // 4 MiB of a pattern that never repeats at a read boundary, as one Content-Length body and
    // as 1000-byte chunks: the reads grow past the first 8 KiB, and nothing is lost or moved.
    let payload: Arc<Vec<u8>> =
        Arc::new((0..4 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect());
    let served = payload.clone();
    let upstream = RawUpstream::start(move |mut s: TcpStream| {
        let payload = served.clone();
        async move {
            loop {
                let head = read_head(&mut s).await;
                if head.is_empty() {
                    return;
                }
                let mut wire = Vec::with_capacity(payload.len() + 64 * 1024);
                if head.starts_with("GET /length") {
                    wire.extend_from_slice(
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
                            payload.len()
                        )
                        .as_bytes(),
                    );
                    wire.extend_from_slice(&payload);
                } else {
                    wire.extend_from_slice(
                        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
                    );
                    for chunk in payload.chunks(1000) {
                        wire.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                        wire.extend_from_slice(chunk);
                        wire.extend_from_slice(b"\r\n");
                    }
                    wire.extend_from_slice(b"0\r\n\r\n");
                }
                if s.write_all(&wire).await.is_err() {
                    return;
                }
            }
        }
    })
    .await;
    let baseline = Backend::start("baseline").await;
    let mut cfg = config(&baseline.url(), &upstream.url(), 100);
    cfg.health.interval = Duration::from_secs(600);
    let proxy = canary_proxy::start(cfg).await.unwrap();
    let client = client();
    for path in ["/length", "/chunked", "/length"] {
        let resp = client.request(get_request(&proxy, path)).await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body.len(), payload.len(), "{path}");
        assert!(body[..] == payload[..], "{path}: the bytes differ");
    }
}

#[tokio::test]
async fn a_clients_chunked_request_trailers_reach_the_upstream() {
    use tokio::io::AsyncReadExt;
    // Echoes a chunked request body exactly as it arrived on the wire (chunk lines and
    // trailers); answers anything else (the health checks) `200 ok`.
    let upstream = RawUpstream::start(|mut stream: TcpStream| async move {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
            if let Some(head_end) = head_end {
                let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
                if !head.contains("transfer-encoding: chunked") {
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await;
                    buf.drain(..head_end);
                    continue;
                }
                let body = &buf[head_end..];
                if body.ends_with(b"\r\n\r\n") && body.windows(5).any(|w| w == b"\r\n0\r\n") {
                    let answer =
                        format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
                    let _ = stream.write_all(answer.as_bytes()).await;
                    let _ = stream.write_all(body).await;
                    return;
                }
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    let proxy = canary_proxy::start(config(&upstream.url(), &upstream.url(), 0))
        .await
        .unwrap();

    let mut client = TcpStream::connect(proxy.data_addr()).await.unwrap();
    client
        .write_all(
            b"POST /upload HTTP/1.1\r\nhost: app\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n\
              5\r\nhello\r\n0\r\nx-checksum: 1234\r\ncontent-length: 99\r\n\r\n",
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    client.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{answer}");
    // The field that must not be a trailer (content-length) is dropped on the way.
    assert_eq!(body, "5\r\nhello\r\n0\r\nx-checksum: 1234\r\n\r\n");
    proxy.shutdown().await;
}
