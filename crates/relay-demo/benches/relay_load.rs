//! relay-demo benchmark (not a test). Two modes:
//!
//! `index`: builds the per-tenant HNSW indexes over the seed corpus in-process and reports build
//! time, ANN vs exact search latency, and recall@10 of the ANN against exact search.
//!
//! `load`: drives a running relay-demo with N concurrent SSE query streams for a fixed time and
//! reports throughput and p50/p95/p99 of query latency (request to `done`) and TTFV (request to
//! the first complete `result` event), measured by a real SSE parser.
//!
//! ```text
//! cargo bench -p relay-demo --bench relay_load -- index --per-user 20000 --queries 200
//! cargo bench -p relay-demo --bench relay_load -- load --url http://127.0.0.1:8080 \
//!     --concurrency 32 --duration 20s
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use relay_demo::ann::TenantIndex;
use relay_demo::embedding::Embedding;
use relay_demo::seed::{seed_memories, seed_queries};

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let flag = |name: &str, default: &str| -> String {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or_else(|| default.to_owned())
    };
    match args.first().map(String::as_str) {
        Some("index") => index(
            flag("--per-user", "20000").parse().unwrap(),
            flag("--queries", "200").parse().unwrap(),
            flag("--users", "5").parse().unwrap(),
        ),
        Some("load") => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(load(
                flag("--url", "http://127.0.0.1:8080"),
                flag("--concurrency", "32").parse().unwrap(),
                relay_demo::fault::parse_duration(&flag("--duration", "20s")).unwrap(),
                args.iter().any(|a| a == "--json"),
            ));
        }
        _ => eprintln!(
            "usage: relay_load index [--per-user N] [--queries N] [--users N] | load --url URL [--concurrency N] [--duration D] [--json]"
        ),
    }
}

fn index(per_user: usize, queries_per_tenant: usize, users: usize) {
    let corpus = seed_memories(per_user);
    let started = Instant::now();
    let mut by_user: HashMap<String, Vec<(u64, Embedding)>> = HashMap::new();
    for (i, m) in corpus.iter().enumerate() {
        by_user
            .entry(m.user_id.clone())
            .or_default()
            .push((i as u64, Embedding::of_text(&m.text)));
    }
    println!(
        "embedded {} memories in {:.2} s",
        corpus.len(),
        started.elapsed().as_secs_f64()
    );
    let queries: Vec<Embedding> = seed_queries(queries_per_tenant)
        .iter()
        .map(|q| Embedding::of_text(q))
        .collect();
    let mut tenants: Vec<_> = by_user.into_iter().collect();
    tenants.sort_by(|a, b| a.0.cmp(&b.0));
    tenants.truncate(users);
    let mut total_build = Duration::ZERO;
    let (mut hit, mut possible) = (0usize, 0usize);
    let mut ann_us = Histogram::<u64>::new(3).unwrap();
    let mut exact_us = Histogram::<u64>::new(3).unwrap();
    for (user, entries) in tenants {
        let rows = entries.len();
        let t = Instant::now();
        let index = TenantIndex::build(entries);
        let build = t.elapsed();
        total_build += build;
        for q in &queries {
            let t = Instant::now();
            let ann = index.search(q, 10);
            ann_us.record(t.elapsed().as_micros() as u64).unwrap();
            let t = Instant::now();
            let exact = index.search_exact(q, 10);
            exact_us.record(t.elapsed().as_micros() as u64).unwrap();
            // Ties at the 10th similarity make several exact answers equally right: count an ANN
            // hit as correct if its similarity reaches the exact 10th-best.
            let floor = exact.last().map_or(f32::MIN, |n| n.similarity) - 1e-6;
            hit += ann
                .iter()
                .filter(|n| n.similarity >= floor)
                .count()
                .min(exact.len());
            possible += exact.len();
        }
        println!(
            "{user}: {rows} rows, graph built in {:.2} s",
            build.as_secs_f64()
        );
    }
    println!("index build total: {:.2} s", total_build.as_secs_f64());
    println!(
        "recall@10 (ANN vs exact, {} queries x {users} tenants): {:.4}",
        queries.len(),
        hit as f64 / possible as f64
    );
    println!(
        "ANN search   p50 {} us  p95 {} us  p99 {} us",
        ann_us.value_at_quantile(0.5),
        ann_us.value_at_quantile(0.95),
        ann_us.value_at_quantile(0.99)
    );
    println!(
        "exact search p50 {} us  p95 {} us  p99 {} us",
        exact_us.value_at_quantile(0.5),
        exact_us.value_at_quantile(0.95),
        exact_us.value_at_quantile(0.99)
    );
    if let Some(rss) = peak_rss_kib() {
        println!("peak RSS of the index process: {} MiB", rss / 1024);
    }
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[derive(Default)]
struct WorkerStats {
    total_us: Vec<u64>,
    ttfv_us: Vec<u64>,
    ok: u64,
    failed: u64,
}

async fn load(url: String, concurrency: usize, duration: Duration, json_mode: bool) {
    let secret = std::env::var(relay_demo::JWT_SECRET_ENV)
        .unwrap_or_else(|_| relay_demo::DEVELOPMENT_JWT_SECRET.to_owned());
    let tokens = relay_demo::tokens(&secret);
    let queries = seed_queries(500);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap();
    let endpoint = format!("{url}/api/v1/memory/query");
    let started = Instant::now();
    let until = started + duration;
    let mut workers = Vec::new();
    for w in 0..concurrency {
        let client = client.clone();
        let endpoint = endpoint.clone();
        let (user, token) = tokens[w % tokens.len()].clone();
        let queries = queries.clone();
        workers.push(tokio::spawn(async move {
            let mut stats = WorkerStats::default();
            let mut n = w;
            while Instant::now() < until {
                n += concurrency;
                let body = serde_json::json!({
                    "query": queries[n % queries.len()],
                    "user_id": user,
                    "top_k": 24,
                    "timeout_ms": 5000,
                });
                let t0 = Instant::now();
                let request = client
                    .post(&endpoint)
                    .bearer_auth(&token)
                    .header(
                        "accept",
                        if json_mode {
                            "application/json"
                        } else {
                            "text/event-stream"
                        },
                    )
                    .json(&body);
                let Ok(response) = request.send().await else {
                    stats.failed += 1;
                    continue;
                };
                if !response.status().is_success() {
                    stats.failed += 1;
                    continue;
                }
                if json_mode {
                    if response.bytes().await.is_ok() {
                        let us = t0.elapsed().as_micros() as u64;
                        stats.total_us.push(us);
                        stats.ttfv_us.push(us);
                        stats.ok += 1;
                    } else {
                        stats.failed += 1;
                    }
                    continue;
                }
                let mut events = response.bytes_stream().eventsource();
                let mut ttfv = None;
                let mut done = false;
                while let Some(event) = events.next().await {
                    let Ok(event) = event else { break };
                    if ttfv.is_none() && (event.event == "result" || event.event == "done") {
                        ttfv = Some(t0.elapsed());
                    }
                    if event.event == "done" {
                        done = true;
                        break;
                    }
                }
                match (done, ttfv) {
                    (true, Some(ttfv)) => {
                        stats.total_us.push(t0.elapsed().as_micros() as u64);
                        stats.ttfv_us.push(ttfv.as_micros() as u64);
                        stats.ok += 1;
                    }
                    _ => stats.failed += 1,
                }
            }
            stats
        }));
    }
    let mut total = Histogram::<u64>::new(3).unwrap();
    let mut ttfv = Histogram::<u64>::new(3).unwrap();
    let (mut ok, mut failed) = (0, 0);
    for w in workers {
        let s = w.await.unwrap();
        ok += s.ok;
        failed += s.failed;
        s.total_us.iter().for_each(|v| total.record(*v).unwrap());
        s.ttfv_us.iter().for_each(|v| ttfv.record(*v).unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "mode {} concurrency {concurrency} duration {:.1} s: {ok} ok, {failed} failed, {:.0} queries/s",
        if json_mode { "json" } else { "sse" },
        elapsed,
        ok as f64 / elapsed
    );
    println!(
        "query latency ms  p50 {:.2}  p95 {:.2}  p99 {:.2}  max {:.2}",
        ms(&total, 0.5),
        ms(&total, 0.95),
        ms(&total, 0.99),
        total.max() as f64 / 1000.0
    );
    println!(
        "TTFV ms           p50 {:.2}  p95 {:.2}  p99 {:.2}  max {:.2}",
        ms(&ttfv, 0.5),
        ms(&ttfv, 0.95),
        ms(&ttfv, 0.99),
        ttfv.max() as f64 / 1000.0
    );
}
