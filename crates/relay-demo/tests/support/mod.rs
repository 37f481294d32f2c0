//! Shared test support: a real relay-demo instance on 127.0.0.1:0, real HTTP clients (reqwest),
//! a real SSE parser (eventsource-stream), and a parser for the metrics exposition.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use eventsource_stream::{Event, Eventsource};
use futures_util::StreamExt;
use relay_demo::{RunningServer, ServeOptions, mint_token};
use serde_json::Value;

/// Signing secret of every test instance.
pub const SECRET: &str = "test-signing-secret";

/// Starts a seeded instance with `per_user` memories per user, adjusted by `adjust`.
pub async fn start(per_user: usize, adjust: impl FnOnce(&mut ServeOptions)) -> RunningServer {
    let mut opts = ServeOptions {
        seed: true,
        seed_memories_per_user: per_user,
        jwt_secret: Some(SECRET.to_owned()),
        data_secret: Some("test-data-secret".to_owned()),
        ..ServeOptions::default()
    };
    adjust(&mut opts);
    relay_demo::spawn(opts).await.expect("relay-demo starts")
}

/// A valid token for `user`.
pub fn token(user: &str) -> String {
    mint_token(SECRET, user, Duration::from_secs(600)).unwrap()
}

/// A client that never reuses a cut connection in a confusing way.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// What an SSE query produced, as a real client saw it.
#[derive(Debug)]
pub struct SseOutcome {
    pub status: u16,
    pub content_type: String,
    pub events: Vec<Event>,
    /// The stream ended with a transport error (cut) rather than cleanly.
    pub cut: bool,
    pub elapsed: Duration,
}

impl SseOutcome {
    pub fn results(&self) -> Vec<Value> {
        self.events
            .iter()
            .filter(|e| e.event == "result")
            .map(|e| serde_json::from_str(&e.data).unwrap())
            .collect()
    }

    pub fn last_event(&self) -> Option<&str> {
        self.events.last().map(|e| e.event.as_str())
    }

    pub fn body_text(&self) -> String {
        self.events
            .iter()
            .map(|e| e.data.clone())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// POSTs a query with SSE (the default) and parses the stream with eventsource-stream.
pub async fn query_sse(base: &str, token: Option<&str>, body: Value) -> SseOutcome {
    let started = Instant::now();
    let mut request = client()
        .post(format!("{base}/api/v1/memory/query"))
        .header("accept", "text/event-stream")
        .json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let mut events = Vec::new();
    let mut cut = false;
    let mut stream = response.bytes_stream().eventsource();
    while let Some(item) = stream.next().await {
        match item {
            Ok(event) => events.push(event),
            Err(_) => {
                cut = true;
                break;
            }
        }
    }
    SseOutcome {
        status,
        content_type,
        events,
        cut,
        elapsed: started.elapsed(),
    }
}

/// POSTs a query with `Accept: application/json`; returns status, headers and JSON body.
pub async fn query_json(
    base: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request = client()
        .post(format!("{base}/api/v1/memory/query"))
        .header("accept", "application/json")
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, headers, value)
}

/// The text exposition of `/metrics`.
pub async fn metrics_text(base: &str) -> String {
    client()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Samples of the text exposition: `name{labels}` → value.
pub fn parse_samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_owned(), value.parse::<f64>().unwrap())
        })
        .collect()
}

/// Sum of every sample of `name` (any labels) whose label text contains `filter`.
pub fn sample(samples: &BTreeMap<String, f64>, name: &str, filter: &str) -> f64 {
    samples
        .iter()
        .filter(|(series, _)| series.split('{').next() == Some(name) && series.contains(filter))
        .map(|(_, v)| v)
        .sum()
}

/// The guardrail-level signals a canary would see in these metrics: each is `true` when the
/// corresponding metric moved away from clean.
pub fn dirty_signals(samples: &BTreeMap<String, f64>) -> Vec<&'static str> {
    let mut dirty = Vec::new();
    let ttfv_slow =
        sample(samples, "ttfv_ms_count", "") - sample(samples, "ttfv_ms_bucket", "le=\"1500.0\"");
    if ttfv_slow > 0.0 {
        dirty.push("ttfv_ms>1500");
    }
    if sample(samples, "sse_total", "") != sample(samples, "sse_complete_total", "") {
        dirty.push("sse_incomplete");
    }
    if sample(samples, "sse_stream_timeout_total", "") > 0.0 {
        dirty.push("sse_stream_timeout_total");
    }
    if sample(samples, "memory_rls_policy_errors_total", "") > 0.0 {
        dirty.push("memory_rls_policy_errors_total");
    }
    if sample(samples, "memory_cross_tenant_attempts_total", "") > 0.0 {
        dirty.push("memory_cross_tenant_attempts_total");
    }
    if sample(samples, "memory_tenant_mismatch_total", "") > 0.0 {
        dirty.push("memory_tenant_mismatch_total");
    }
    let ann_slow = sample(samples, "memory_ann_query_latency_ms_count", "")
        - sample(
            samples,
            "memory_ann_query_latency_ms_bucket",
            "le=\"200.0\"",
        );
    if ann_slow > 0.0 {
        dirty.push("memory_ann_query_latency_ms>200");
    }
    if sample(samples, "memory_rerank_skipped_total", "") > 0.0 {
        dirty.push("memory_rerank_skipped_total");
    }
    if sample(samples, "db_connection_pool_utilization", "") >= 80.0 {
        dirty.push("db_connection_pool_utilization>=80");
    }
    dirty
}

/// `histogram_quantile(q, name)` over the cumulative buckets of `name` in `samples`, the way
/// Prometheus interpolates it: linearly inside the bucket where the rank falls. Also returns
/// that bucket's bounds.
pub fn histogram_quantile(
    samples: &BTreeMap<String, f64>,
    name: &str,
    q: f64,
) -> (f64, (f64, f64)) {
    let bucket = format!("{name}_bucket");
    let mut buckets: Vec<(f64, f64)> = samples
        .iter()
        .filter(|(series, _)| series.split('{').next() == Some(bucket.as_str()))
        .map(|(series, count)| {
            let le = series
                .split("le=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap();
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            };
            (le, *count)
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last().expect("a histogram").1;
    assert!(total > 0.0, "{name} has no observations");
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for (upper, cumulative) in buckets {
        if cumulative >= rank {
            if upper.is_infinite() {
                return (lower, (lower, upper));
            }
            let value = lower + (upper - lower) * (rank - below) / (cumulative - below);
            return (value, (lower, upper));
        }
        (lower, below) = (upper, cumulative);
    }
    unreachable!("the +Inf bucket holds every observation")
}

/// Polls `check` until it returns `Some`, failing after `deadline`.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let until = Instant::now() + deadline;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A client on a bare TCP socket, for what no HTTP library would send: a request that stops
/// half-way, or a body that is announced and never comes.
pub mod raw {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use relay_demo::RunningServer;
    use serde_json::Value;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// How long a test waits for the server to answer or close; far above any timeout the tests
    /// configure, so only a server that never gives up misses it.
    pub const PATIENCE: Duration = Duration::from_secs(10);

    /// A connection to `server` that has sent nothing yet.
    pub async fn connect(server: &RunningServer) -> TcpStream {
        TcpStream::connect(server.addr()).await.unwrap()
    }

    /// The head of a `POST path` carrying `headers` (`"name: value"` each), ending in the blank
    /// line.
    pub fn post_head(path: &str, headers: &[String]) -> String {
        let mut head = format!("POST {path} HTTP/1.1\r\nhost: relay\r\n");
        for header in headers {
            head.push_str(header);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        head
    }

    /// Reads until the server closes the connection (or resets it) and returns what it sent;
    /// fails the test if the connection is still open after [`PATIENCE`].
    pub async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
        let mut received = Vec::new();
        let mut buf = [0u8; 8192];
        let closed = tokio::time::timeout(PATIENCE, async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => received.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        assert!(
            closed.is_ok(),
            "the server kept the connection open for {PATIENCE:?}; it sent {:?}",
            String::from_utf8_lossy(&received)
        );
        received
    }

    /// Sends `bytes` one at a time, one per `every`, until the server closes the connection,
    /// and returns what the server sent; fails the test if the connection is still open after
    /// [`PATIENCE`]. Sending stops at the first byte received, so an answer is read before the
    /// connection goes away — but a byte already under way can still make the server's kernel
    /// reset the connection, which may discard that answer: callers get an empty answer then.
    pub async fn trickle_until_closed(
        stream: TcpStream,
        mut bytes: impl Iterator<Item = u8>,
        every: Duration,
    ) -> Vec<u8> {
        let (mut reader, mut writer) = stream.into_split();
        let mut received = Vec::new();
        let mut buf = [0u8; 8192];
        let mut tick = tokio::time::interval(every);
        let mut sending = true;
        let closed = tokio::time::timeout(PATIENCE, async {
            loop {
                tokio::select! {
                    biased;
                    read = reader.read(&mut buf) => match read {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            received.extend_from_slice(&buf[..n]);
                            sending = false;
                        }
                    },
                    _ = tick.tick(), if sending => match bytes.next() {
                        Some(byte) => sending = writer.write_all(&[byte]).await.is_ok(),
                        None => sending = false,
                    },
                }
            }
        })
        .await;
        assert!(
            closed.is_ok(),
            "the server kept a trickling connection open for {PATIENCE:?}; it sent {:?}",
            String::from_utf8_lossy(&received)
        );
        received
    }

    /// A response read off the wire.
    #[derive(Debug)]
    pub struct RawResponse {
        pub status: u16,
        /// Lower-case names.
        pub headers: BTreeMap<String, String>,
        pub body: Value,
    }

    impl RawResponse {
        /// Parses one HTTP/1.1 response with a `Content-Length` body, which must be JSON.
        pub fn parse(bytes: &[u8]) -> RawResponse {
            let text = String::from_utf8_lossy(bytes);
            let (head, rest) = text
                .split_once("\r\n\r\n")
                .unwrap_or_else(|| panic!("no complete response head in {text:?}"));
            let mut lines = head.split("\r\n");
            let status_line = lines.next().unwrap();
            let status = status_line
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
            let headers: BTreeMap<String, String> = lines
                .map(|line| {
                    let (name, value) = line.split_once(':').unwrap();
                    (name.trim().to_lowercase(), value.trim().to_owned())
                })
                .collect();
            let length: usize = headers
                .get("content-length")
                .unwrap_or_else(|| panic!("no content-length in {head:?}"))
                .parse()
                .unwrap();
            let body = &rest.as_bytes()[..length];
            let body = serde_json::from_slice(body).unwrap_or_else(|e| {
                panic!(
                    "body is not JSON ({e}): {:?}",
                    String::from_utf8_lossy(body)
                )
            });
            RawResponse {
                status,
                headers,
                body,
            }
        }

        /// Asserts the shape every error of the service has: a JSON object with an `error` code
        /// and a `message`, sent as `application/json`.
        pub fn assert_json_error(&self, status: u16, code: &str) {
            assert_eq!(self.status, status, "{self:?}");
            assert!(
                self.headers["content-type"].starts_with("application/json"),
                "{self:?}"
            );
            assert_eq!(self.body["error"], code, "{self:?}");
            assert!(self.body["message"].is_string(), "{self:?}");
        }
    }
}
