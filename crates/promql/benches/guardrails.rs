//! Benchmark (not a test): the runbook's six guardrails, scoped per arm, over a store of 10,000
//! series holding one hour of 1-second samples; memory per stored sample; and, with
//! `-- --prometheus`, the same guardrails against a real Prometheus 2.42 on the same data (a
//! shorter history, see the report), reported as a ratio.
//!
//! `scripts/bench-promql.sh` runs it; `docs/benchmarks/promql.md` records the figures.

#![allow(clippy::expect_used)] // a benchmark that cannot set up should stop loudly

use std::time::{Duration, Instant};

use canary_promql::rewrite::{self, ArmSelector};
use canary_promql::{Engine, Labels, Store};

const GUARDRAILS: [&str; 6] = [
    "histogram_quantile(0.95, sum by (le) (rate(ttfv_ms_bucket[5m])))",
    "sum(increase(memory_rls_policy_errors_total[5m]))",
    "100 * sum(rate(sse_complete_total[5m])) / sum(rate(sse_total[5m]))",
    "sum(increase(memory_cross_tenant_attempts_total[1m]))",
    "histogram_quantile(0.95, sum by (le) (rate(memory_ann_query_latency_ms_bucket[5m])))",
    "max(db_connection_pool_utilization)",
];

const T0: i64 = 1_700_000_000_000;
const TTFV: [&str; 12] = [
    "25", "50", "100", "250", "500", "750", "1000", "1500", "2500", "5000", "10000", "+Inf",
];
const ANN: [&str; 11] = [
    "1", "2", "5", "10", "25", "50", "100", "200", "400", "800", "+Inf",
];

/// xorshift64*: deterministic data without a dependency.
struct Rng(u64);
impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Shape {
    /// 40 targets (2 arms x 20 instances) with relay's guardrail metrics (1,280 series), the
    /// rest of the 10,000 being other series of the same targets (`http_requests_total` by
    /// route and code) that the guardrails do not select.
    Realistic,
    /// All 10,000 series are guardrail inputs (ttfv buckets per route): the worst case.
    AllSelected,
}

/// Series of the dataset, each with the kind of values it gets.
fn series(shape: Shape) -> Vec<(Labels, bool)> {
    let mut out = Vec::new();
    for version in ["r0.5", "r1"] {
        for i in 0..20 {
            let base = [
                ("job", "relay".to_owned()),
                ("instance", format!("10.0.{i}.1:8080")),
                ("version", version.to_owned()),
            ];
            let with = |name: &str, extra: &[(&str, &str)]| {
                let mut l =
                    Labels::from_pairs(base.iter().map(|(k, v)| (k.to_string(), v.clone())));
                l.set("__name__".into(), name.into());
                for (k, v) in extra {
                    l.set(k.to_string(), v.to_string());
                }
                l
            };
            let routes: Vec<String> = match shape {
                Shape::Realistic => vec![String::new()],
                Shape::AllSelected => (0..20).map(|r| format!("/api/v1/r{r}")).collect(),
            };
            for route in &routes {
                for le in TTFV {
                    out.push((
                        with("ttfv_ms_bucket", &[("le", le), ("route", route)]),
                        true,
                    ));
                }
            }
            if shape == Shape::AllSelected {
                continue;
            }
            out.push((with("ttfv_ms_sum", &[]), true));
            out.push((with("ttfv_ms_count", &[]), true));
            for le in ANN {
                out.push((
                    with("memory_ann_query_latency_ms_bucket", &[("le", le)]),
                    true,
                ));
            }
            out.push((with("memory_ann_query_latency_ms_sum", &[]), true));
            out.push((with("memory_ann_query_latency_ms_count", &[]), true));
            for name in [
                "sse_total",
                "sse_complete_total",
                "memory_rls_policy_errors_total",
                "memory_cross_tenant_attempts_total",
            ] {
                out.push((with(name, &[]), true));
            }
            out.push((with("db_connection_pool_utilization", &[]), false));
        }
    }
    let mut n = 0;
    while out.len() < 10_000 {
        let l = Labels::from_pairs([
            ("__name__".to_owned(), "http_requests_total".to_owned()),
            ("job".to_owned(), "relay".to_owned()),
            ("instance".to_owned(), format!("10.0.{}.1:8080", n % 20)),
            (
                "version".to_owned(),
                if n % 40 < 20 { "r0.5" } else { "r1" }.to_owned(),
            ),
            ("route".to_owned(), format!("/api/v1/route{}", n / 40)),
            ("code".to_owned(), ["200", "404", "500"][n % 3].to_owned()),
        ]);
        out.push((l, true));
        n += 1;
    }
    out.truncate(10_000);
    out
}

/// A series and its last minutes of samples, kept to load the same data into Prometheus.
type KeptSeries = (Labels, Vec<(i64, f64)>);

/// Fills a store: `seconds` of samples every second (with a few ms of scrape jitter), series
/// interleaved as a scraper appends them.
fn build(shape: Shape, seconds: i64) -> (Store, Vec<KeptSeries>, i64) {
    let series = series(shape);
    let mut store = Store::new();
    let ids: Vec<_> = series.iter().map(|(l, _)| store.series_id(l)).collect();
    let mut rng = Rng(0x5eed);
    let mut values: Vec<f64> = series.iter().map(|_| 0.0).collect();
    let mut kept: Vec<KeptSeries> = Vec::new();
    let keep_from = T0 + (seconds - 360).max(0) * 1000; // the last 6 minutes, for Prometheus
    for (l, _) in &series {
        kept.push((l.clone(), Vec::new()));
    }
    for s in 0..seconds {
        for (i, (_, counter)) in series.iter().enumerate() {
            let t = T0 + s * 1000 + (rng.unit() * 5.0) as i64;
            values[i] = if *counter {
                values[i] + (rng.unit() * 4.0).floor()
            } else {
                (20.0 + 60.0 * rng.unit()).round()
            };
            // Cumulative buckets: a bucket is at least the one below; good enough here since
            // histogram_quantile flattens non-monotonic buckets anyway.
            let _ = store.append_to(ids[i], t, values[i]);
            if t >= keep_from {
                kept[i].1.push((t, values[i]));
            }
        }
    }
    (store, kept, T0 + seconds * 1000)
}

fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<usize>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

fn scoped_queries() -> Vec<promql_parser::parser::Expr> {
    let mut out = Vec::new();
    for arm in [r#"{version="r1"}"#, r#"{version="r0.5"}"#] {
        let arm = ArmSelector::parse(arm).expect("arm selector");
        for q in GUARDRAILS {
            out.push(rewrite::scope(
                &rewrite::parse(q).expect("guardrail parses"),
                &arm,
            ));
        }
    }
    out
}

/// Median and 99th percentile of `rounds` full rounds (12 queries).
fn time_rounds(store: &Store, at: i64, rounds: usize) -> (Duration, Duration) {
    let engine = Engine::default();
    let queries = scoped_queries();
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let start = Instant::now();
        for q in &queries {
            let v = engine
                .instant_expr(store, q, at)
                .expect("guardrail evaluates");
            std::hint::black_box(v);
        }
        times.push(start.elapsed());
    }
    times.sort();
    (times[rounds / 2], times[rounds * 99 / 100])
}

fn main() {
    let with_prometheus = std::env::args().any(|a| a == "--prometheus");
    println!("# canary-promql guardrail benchmark");
    // BENCH_SHAPE=realistic|worst limits the run to one dataset (e.g. under a profiler).
    let only = std::env::var("BENCH_SHAPE").unwrap_or_default();
    for shape in [Shape::Realistic, Shape::AllSelected] {
        if (only == "realistic" && shape != Shape::Realistic)
            || (only == "worst" && shape != Shape::AllSelected)
        {
            continue;
        }
        let name = match shape {
            Shape::Realistic => "realistic: 1,280 guardrail series + 8,720 others",
            Shape::AllSelected => "worst case: all 10,000 series are guardrail inputs",
        };
        let rss_before = rss_bytes();
        let began = Instant::now();
        let (store, kept, end) = build(shape, 3600);
        let build_time = began.elapsed();
        let rss_after = rss_bytes();
        let stats = store.stats();
        let kept_bytes: usize = kept.iter().map(|(_, p)| p.capacity() * 16).sum();
        println!("\n## {name}");
        println!(
            "store: {} series, {} samples, built in {:.1} s",
            stats.series,
            stats.samples,
            build_time.as_secs_f64()
        );
        println!(
            "memory: {:.2} bytes/sample accounted ({} MiB; chunk data alone {:.2} bytes/sample); RSS grew {:.2} bytes/sample",
            stats.bytes_per_sample(),
            stats.total_bytes >> 20,
            stats.chunk_bytes as f64 / stats.samples as f64,
            rss_after
                .saturating_sub(rss_before)
                .saturating_sub(kept_bytes) as f64
                / stats.samples as f64
        );
        let rounds = std::env::var("BENCH_ROUNDS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(200);
        let (median, p99) = time_rounds(&store, end, rounds);
        println!(
            "guardrail round (6 guardrails x 2 arms = 12 queries): median {:.3} ms, p99 {:.3} ms",
            median.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3
        );
        drop(store);
        if with_prometheus {
            versus_prometheus(&kept, end);
        }
    }
}

/// The same guardrails on the last 6 minutes of the same series, in the embedded store and in
/// a real Prometheus (engine time from its `stats=all`, and wall time over HTTP).
fn versus_prometheus(kept: &[KeptSeries], end: i64) {
    use std::fmt::Write;
    let mut om = String::with_capacity(kept.len() * 600 * 90);
    let mut small = Store::new();
    for (labels, points) in kept {
        let name = labels.get("__name__").unwrap_or("x");
        let rest: Vec<String> = labels
            .iter()
            .filter(|l| l.name != "__name__")
            .map(|l| format!("{}=\"{}\"", l.name, l.value))
            .collect();
        let id = small.series_id(labels);
        for &(t, v) in points {
            let _ = writeln!(
                om,
                "{name}{{{}}} {v} {}.{:03}",
                rest.join(","),
                t / 1000,
                t % 1000
            );
            let _ = small.append_to(id, t, v);
        }
    }
    om.push_str("# EOF\n");
    let began = Instant::now();
    let prom = canary_testkit::Prometheus::with_history(&om);
    println!(
        "prometheus 2.42 on the last 6 minutes ({} samples, blocks built and server ready in {:.1} s):",
        small.stats().samples,
        began.elapsed().as_secs_f64()
    );
    let (ours, _) = time_rounds(&small, end, 100);
    let queries = scoped_queries();
    let encode = |s: &str| -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    };
    let mut wall = Vec::new();
    let mut engine_time = Vec::new();
    for _ in 0..30 {
        let start = Instant::now();
        let mut eval = 0.0;
        for q in &queries {
            let path = format!(
                "/api/v1/query?query={}&time={}.{:03}&stats=all",
                encode(&q.to_string()),
                end / 1000,
                end % 1000
            );
            let (status, body) = canary_testkit::http_get(prom.addr, &path).expect("query");
            assert_eq!(status, 200, "{body}");
            let json: serde_json::Value = serde_json::from_str(&body).expect("json");
            eval += json["data"]["stats"]["timings"]["execTotalTime"]
                .as_f64()
                .unwrap_or(f64::NAN);
        }
        wall.push(start.elapsed().as_secs_f64());
        engine_time.push(eval);
    }
    wall.sort_by(f64::total_cmp);
    engine_time.sort_by(f64::total_cmp);
    let (wall, engine_time) = (wall[wall.len() / 2], engine_time[engine_time.len() / 2]);
    println!(
        "  embedded: {:.3} ms per round | prometheus: {:.3} ms engine time (execTotalTime), {:.3} ms over HTTP | ratio embedded/prometheus engine: {:.2}",
        ours.as_secs_f64() * 1e3,
        engine_time * 1e3,
        wall * 1e3,
        ours.as_secs_f64() / engine_time
    );
}
