//! The load client under benchmark, for `scripts/bench-load.sh`. Not a test: it measures.
//!
//! ```text
//! bench_load http URL CONNECTIONS REQUESTS_PER_CONNECTION
//!     closed loop, no pause: CONNECTIONS users, each on its own keep-alive connection, GET URL
//!     REQUESTS_PER_CONNECTION times, as `canary load` does; prints one JSON line of figures
//! bench_load serve-sse ADDR FIRST_VALUE_MS HOLD_MS
//!     an event-stream server: each POST answers headers at once, `event: result` after
//!     FIRST_VALUE_MS, then holds the stream HOLD_MS before `event: done`; prints its address
//! bench_load sse URL STREAMS
//!     STREAMS users at once, one streamed request each; prints figures and the peak number
//!     of streams held open at the same time
//! ```
//!
//! Runs on a two-thread runtime, like `wrk -t2`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark driver: failing loudly is right

use std::time::{Duration, Instant};

use bytes::Bytes;
use canary_core::Secret;
use canary_load::{Scenario, User, run_burst};
use serde_json::json;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let usage = "usage: bench_load http URL CONNECTIONS REQUESTS | serve-sse ADDR FIRST_VALUE_MS HOLD_MS | sse URL STREAMS";
    match args.first().map(String::as_str) {
        Some("http") if args.len() == 4 => runtime.block_on(http(
            &args[1],
            args[2].parse().expect("CONNECTIONS"),
            args[3].parse().expect("REQUESTS"),
        )),
        Some("serve-sse") if args.len() == 4 => runtime.block_on(serve_sse(
            &args[1],
            Duration::from_millis(args[2].parse().expect("FIRST_VALUE_MS")),
            Duration::from_millis(args[3].parse().expect("HOLD_MS")),
        )),
        Some("sse") if args.len() == 3 => {
            runtime.block_on(sse(&args[1], args[2].parse().expect("STREAMS")))
        }
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    }
}

fn users(n: usize) -> Vec<User> {
    (1..=n)
        .map(|i| User {
            name: format!("user_{i}"),
            token: Secret::new(format!("bench-token-{i}")),
        })
        .collect()
}

async fn http(url: &str, connections: usize, requests: u32) {
    let (base, path) = split(url);
    let mut s = Scenario::runbook(base, users(connections));
    s.method = "GET".into();
    s.path = path;
    s.body = None;
    s.requests_per_user = requests;
    s.pause = Duration::ZERO;
    s.threads = 2;
    let report = run_burst(&s, None).await.unwrap();
    let o = &report.overall;
    let lat = o.latency.unwrap();
    println!(
        "{}",
        json!({
            "requests": o.total,
            "failed": o.failed,
            "seconds": report.elapsed.as_secs_f64(),
            "requests_per_second": report.requests_per_second(),
            "p50_ms": lat.p50,
            "p99_ms": lat.p99,
        })
    );
}

async fn sse(url: &str, streams: usize) {
    let (base, path) = split(url);
    let mut s = Scenario::runbook(base, users(streams));
    s.path = path;
    s.requests_per_user = 1;
    s.pause = Duration::ZERO;
    s.request_timeout = Duration::from_secs(120);
    let report = run_burst(&s, None).await.unwrap();
    // Peak overlap of [sent, sent + total) over all streams.
    let mut edges: Vec<(Duration, i64)> = report
        .records
        .iter()
        .flat_map(|r| [(r.sent_at, 1), (r.sent_at + r.total, -1)])
        .collect();
    edges.sort();
    let (mut open, mut peak) = (0i64, 0i64);
    for (_, d) in edges {
        open += d;
        peak = peak.max(open);
    }
    let o = &report.overall;
    let ttfv = o.ttfv.unwrap();
    println!(
        "{}",
        json!({
            "streams": o.total,
            "complete": o.streams_complete,
            "failed": o.failed,
            "errors": o.errors.iter().map(|(k, v)| (k.as_str(), *v)).collect::<std::collections::BTreeMap<_, _>>(),
            "peak_concurrent": peak,
            "ttfv_count": ttfv.count,
            "ttfv_p50_ms": ttfv.p50,
            "ttfv_p99_ms": ttfv.p99,
            "ttfv_max_ms": ttfv.max,
            "seconds": report.elapsed.as_secs_f64(),
        })
    );
}

/// `http://host:port/path` → (`http://host:port`, `/path`).
fn split(url: &str) -> (String, String) {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find('/') {
        Some(i) => (
            url[..after_scheme + i].to_owned(),
            url[after_scheme + i..].to_owned(),
        ),
        None => (url.to_owned(), "/".to_owned()),
    }
}

async fn serve_sse(addr: &str, first_value: Duration, hold: Duration) {
    // A backlog for thousands of connections arriving at once (the default 1024 would make
    // some clients retry their SYN after a second).
    let addr: std::net::SocketAddr = addr.parse().expect("ADDR such as 127.0.0.1:0");
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind(addr).unwrap();
    let listener = socket.listen(8192).unwrap();
    println!("{}", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(move || async move {
        let started = Instant::now();
        let steps = [
            (first_value, "event: result\ndata: {\"id\":1}\n\n"),
            (hold, "event: done\ndata: {\"count\":1}\n\n"),
        ];
        let stream = futures_util::stream::unfold(0usize, move |i| async move {
            let (after, chunk) = *steps.get(i)?;
            tokio::time::sleep_until((started + after).into()).await;
            Some((
                Ok::<_, std::convert::Infallible>(Bytes::from_static(chunk.as_bytes())),
                i + 1,
            ))
        });
        axum::response::Response::builder()
            .header("content-type", "text/event-stream")
            .header("cache-control", "no-cache")
            .body(axum::body::Body::from_stream(stream))
            .unwrap()
    });
    axum::serve(listener, app).await.unwrap();
}
