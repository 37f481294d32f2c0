//! Benchmark (not a test): CPU the scraper spends scraping 20 targets every second into the
//! embedded store, as a percentage of one core.
//!
//! The 20 targets are axum servers on 127.0.0.1 running on their own named thread
//! (`bench-targets`), each exposing a relay-like body of ~300 series; the scraper runs on a
//! separate runtime. The scraper's CPU is the process's CPU time (from `/proc/self/task/*/stat`)
//! minus the target thread's. `scripts/bench-promql.sh` runs it.

#![allow(clippy::expect_used)] // a benchmark that cannot set up should stop loudly

use std::fmt::Write;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use canary_promql::Store;
use canary_providers::scrape::{ScrapeConfig, ScrapeTarget, Scraper};

const TARGETS: usize = 20;

/// A body like relay-demo's: counters, histograms and gauges, ~300 series.
fn body(step: u64) -> String {
    let mut out = String::new();
    for (name, help) in [
        ("ttfv_ms", "time to first value"),
        ("memory_ann_query_latency_ms", "ANN latency"),
        ("db_query_latency_ms", "DB latency"),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for route in 0..4 {
            let mut cum = 0;
            for le in [
                "5", "10", "25", "50", "100", "250", "500", "1000", "2500", "5000", "10000", "+Inf",
            ] {
                cum += step % 7 + 1;
                let _ = writeln!(
                    out,
                    "{name}_bucket{{route=\"/r{route}\",le=\"{le}\"}} {cum}"
                );
            }
            let _ = writeln!(out, "{name}_sum{{route=\"/r{route}\"}} {}.5", cum * 37);
            let _ = writeln!(out, "{name}_count{{route=\"/r{route}\"}} {cum}");
        }
    }
    for name in [
        "sse_total",
        "sse_complete_total",
        "sse_stream_timeout_total",
        "memory_rls_policy_errors_total",
        "memory_cross_tenant_attempts_total",
        "memory_rerank_skipped_total",
    ] {
        let _ = writeln!(out, "# TYPE {name} counter");
        for code in ["2xx", "4xx", "5xx"] {
            let _ = writeln!(out, "{name}{{code=\"{code}\"}} {}", step * 3);
        }
    }
    for i in 0..100 {
        let _ = writeln!(
            out,
            "go_gc_like_gauge{{slot=\"{i}\"}} {}",
            (step * i) % 1000
        );
    }
    let _ = writeln!(out, "db_connection_pool_utilization {}", 20 + step % 60);
    out
}

fn thread_cpu_seconds() -> (f64, f64) {
    // (all threads, the target servers' thread), from utime+stime in clock ticks.
    let tick = 100.0; // USER_HZ on Linux
    let mut total = 0.0;
    let mut targets = 0.0;
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for entry in dir.flatten() {
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            // Fields after the ")" that closes the command name: utime is the 12th, stime 13th.
            let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
            let f: Vec<&str> = after.split_whitespace().collect();
            let secs = (f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
                + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0))
                / tick;
            total += secs;
            if comm.trim() == "bench-targets" {
                targets += secs;
            }
        }
    }
    (total, targets)
}

fn main() {
    let seconds: u64 = std::env::var("SCRAPE_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    // Targets on their own thread and runtime.
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("bench-targets".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("target runtime");
            rt.block_on(async move {
                for _ in 0..TARGETS {
                    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
                    let app = axum::Router::new().route(
                        "/metrics",
                        axum::routing::get(move || {
                            let step = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            async move {
                                (
                                    [(
                                        axum::http::header::CONTENT_TYPE,
                                        "text/plain; version=0.0.4",
                                    )],
                                    body(step),
                                )
                            }
                        }),
                    );
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                        .await
                        .expect("bind");
                    addr_tx
                        .send(listener.local_addr().expect("addr"))
                        .expect("send addr");
                    tokio::spawn(async move { axum::serve(listener, app).await });
                }
                std::future::pending::<()>().await;
            });
        })
        .expect("spawn targets");
    let targets: Vec<ScrapeTarget> = (0..TARGETS)
        .map(|i| ScrapeTarget {
            url: format!("http://{}/metrics", addr_rx.recv().expect("target address")),
            labels: vec![
                (
                    "version".into(),
                    if i % 2 == 0 { "r0.5" } else { "r1" }.into(),
                ),
                ("job".into(), "relay".into()),
            ],
        })
        .collect();
    let store = Arc::new(RwLock::new(Store::new()));
    let scraper = Scraper::new(
        ScrapeConfig {
            targets,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            retention: Some(Duration::from_secs(3600)),
        },
        store.clone(),
    )
    .expect("scraper");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("scraper runtime");
    let (cpu0, targets0) = thread_cpu_seconds();
    let wall = Instant::now();
    rt.block_on(async {
        scraper
            .run(tokio::time::sleep(Duration::from_secs(seconds)))
            .await
    });
    let elapsed = wall.elapsed().as_secs_f64();
    let (cpu1, targets1) = thread_cpu_seconds();
    let scraper_cpu = (cpu1 - cpu0) - (targets1 - targets0);
    let stats = store.read().map(|s| s.stats()).unwrap_or_default();
    println!("# canary scrape benchmark");
    println!(
        "{TARGETS} targets every 1 s for {elapsed:.1} s: {} series, {} samples stored",
        stats.series, stats.samples
    );
    println!(
        "scraper CPU {:.3} s = {:.2} % of one core (target servers {:.3} s, excluded)",
        scraper_cpu,
        100.0 * scraper_cpu / elapsed,
        targets1 - targets0
    );
}
