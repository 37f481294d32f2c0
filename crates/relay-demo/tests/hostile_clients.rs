//! Clients that misbehave on the wire, through a bare TCP socket against a real instance on
//! 127.0.0.1:0: a request head or body that stops or trickles is cut off within the configured
//! timeout, a request without valid credentials is refused before its body is read, and an
//! oversized body is refused — every answer in the JSON shape of the service's other errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use relay_demo::{MAX_BODY_BYTES, RunningServer};
use support::raw::{self, RawResponse};
use support::{start, token};
use tokio::io::AsyncWriteExt;

/// The header and body timeouts of [`short_timeouts`]; [`raw::PATIENCE`] is far longer.
const SHORT: Duration = Duration::from_millis(300);
/// Between two bytes of a trickle: well inside [`SHORT`], so only a deadline stops it.
const TRICKLE: Duration = Duration::from_millis(50);

const QUERY: &str = "/api/v1/memory/query";
const INGEST: &str = "/api/v1/memory";

async fn short_timeouts() -> RunningServer {
    start(10, |o| {
        o.header_timeout = SHORT;
        o.body_timeout = SHORT;
    })
    .await
}

fn bearer(user: &str) -> String {
    format!("authorization: Bearer {}", token(user))
}

/// Closed without an answer, or with a 408 (what nginx and hyper do with a head that does not
/// arrive).
fn assert_cut_off(received: &[u8]) {
    assert!(
        received.is_empty() || received.starts_with(b"HTTP/1.1 408 "),
        "{:?}",
        String::from_utf8_lossy(received)
    );
}

#[tokio::test]
async fn a_request_head_that_never_completes_is_cut_off() {
    let server = short_timeouts().await;

    let mut silent = raw::connect(&server).await;
    assert_cut_off(&raw::read_until_closed(&mut silent).await);

    let mut stalled = raw::connect(&server).await;
    stalled
        .write_all(b"POST /api/v1/memory/query HTTP/1.1\r\nhost: relay\r\ncontent-ty")
        .await
        .unwrap();
    assert_cut_off(&raw::read_until_closed(&mut stalled).await);

    // A head that keeps coming and never ends: the timeout is a deadline, not an idle timer.
    let endless = b"POST /api/v1/memory/query HTTP/1.1\r\nhost: relay\r\nx-padding: "
        .iter()
        .copied()
        .chain(std::iter::repeat(b'a'));
    let trickled = raw::trickle_until_closed(raw::connect(&server).await, endless, TRICKLE).await;
    assert_cut_off(&trickled);
}

#[tokio::test]
async fn a_kept_alive_connection_left_idle_is_closed_after_the_header_timeout() {
    let server = short_timeouts().await;
    let mut stream = raw::connect(&server).await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: relay\r\n\r\n")
        .await
        .unwrap();
    let answer = RawResponse::parse(&raw::read_until_closed(&mut stream).await);
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body["status"], "ok");
}

#[tokio::test]
async fn a_body_that_stops_is_answered_408_in_json() {
    let server = short_timeouts().await;
    for path in [QUERY, INGEST] {
        let mut stream = raw::connect(&server).await;
        let head = raw::post_head(
            path,
            &[
                bearer("user_1"),
                "content-type: application/json".to_owned(),
                "content-length: 64".to_owned(),
            ],
        );
        stream
            .write_all(format!("{head}{{\"query\":").as_bytes())
            .await
            .unwrap();
        let answer = RawResponse::parse(&raw::read_until_closed(&mut stream).await);
        answer.assert_json_error(408, "request_timeout");
        assert_eq!(answer.headers["connection"], "close", "{path}");
    }
}

#[tokio::test]
async fn a_body_that_trickles_past_the_timeout_is_cut_off() {
    let server = short_timeouts().await;
    let mut stream = raw::connect(&server).await;
    let head = raw::post_head(
        QUERY,
        &[
            bearer("user_1"),
            "content-type: application/json".to_owned(),
            "content-length: 1000".to_owned(),
        ],
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // 1000 bytes at one per 50 ms would take 50 s; the deadline ends it long before.
    let body = std::iter::repeat_n(b' ', 1000);
    let received = raw::trickle_until_closed(stream, body, TRICKLE).await;
    // The answer can be lost to a reset when a byte was under way as the server closed.
    if !received.is_empty() {
        RawResponse::parse(&received).assert_json_error(408, "request_timeout");
    }
}

#[tokio::test]
async fn a_request_without_valid_credentials_is_refused_before_its_body_is_read() {
    // The server would wait a minute for these bodies: only a refusal on the head alone answers
    // within the test's patience. 1 MB is under the size limit, so it cannot be refused for size.
    const LENGTHS: [usize; 2] = [50_000_000, 1_000_000];
    assert!(LENGTHS[1] < MAX_BODY_BYTES);
    let server = start(10, |o| o.body_timeout = Duration::from_secs(60)).await;
    for path in [QUERY, INGEST] {
        for length in LENGTHS {
            for credentials in [None, Some("authorization: Bearer not-a-jwt")] {
                let mut headers = vec![
                    "content-type: application/json".to_owned(),
                    format!("content-length: {length}"),
                ];
                headers.extend(credentials.map(str::to_owned));
                let mut stream = raw::connect(&server).await;
                let head = raw::post_head(path, &headers);
                stream
                    .write_all(format!("{head}{{\"query\":\"").as_bytes())
                    .await
                    .unwrap();
                let answer = RawResponse::parse(&raw::read_until_closed(&mut stream).await);
                answer.assert_json_error(401, "unauthorized");
                assert!(
                    answer.headers["www-authenticate"].starts_with("Bearer"),
                    "{path} {length} {credentials:?}: {answer:?}"
                );
            }
        }
    }
}

#[tokio::test]
async fn an_oversized_body_is_refused_with_413_in_json() {
    let server = start(10, |_| {}).await;
    // Announced too large: refused on the head, before a byte of it is read.
    for path in [QUERY, INGEST] {
        let mut stream = raw::connect(&server).await;
        let head = raw::post_head(
            path,
            &[
                bearer("user_1"),
                "content-type: application/json".to_owned(),
                format!("content-length: {}", MAX_BODY_BYTES + 1),
            ],
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let answer = RawResponse::parse(&raw::read_until_closed(&mut stream).await);
        answer.assert_json_error(413, "payload_too_large");
        assert_eq!(answer.headers["connection"], "close", "{path}");
    }
    // Chunked, with no length announced: counted as it arrives. The limit itself is read (and
    // then judged as JSON); one byte more is refused.
    for (size, status, code) in [
        (MAX_BODY_BYTES, 400, "malformed_body"),
        (MAX_BODY_BYTES + 1, 413, "payload_too_large"),
    ] {
        let mut stream = raw::connect(&server).await;
        let head = raw::post_head(
            QUERY,
            &[
                bearer("user_1"),
                "content-type: application/json".to_owned(),
                "transfer-encoding: chunked".to_owned(),
                "connection: close".to_owned(),
            ],
        );
        let mut request = format!("{head}{size:x}\r\n").into_bytes();
        request.resize(request.len() + size, b' ');
        if size <= MAX_BODY_BYTES {
            request.extend_from_slice(b"\r\n0\r\n\r\n");
        }
        stream.write_all(&request).await.unwrap();
        let answer = RawResponse::parse(&raw::read_until_closed(&mut stream).await);
        answer.assert_json_error(status, code);
    }
}
