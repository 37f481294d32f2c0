//! A generated, deterministic OpenMetrics history shaped like relay's metrics: two arms
//! (`version="r0.5"`, `version="r1"`), two instances each, counters with a reset, gauges,
//! classic histograms (one with only a `+Inf` bucket), NaN values, series that appear and
//! vanish, and jittered scrape timestamps so that rate extrapolation meets real edges.

use std::collections::BTreeMap;
use std::fmt::Write;

/// The history's first sample time (ms).
pub const T0: i64 = 1_700_000_000_000;
/// Scrape interval (ms).
pub const INTERVAL: i64 = 15_000;
/// Scrapes in the history (one hour).
pub const SCRAPES: i64 = 240;
/// `flaky_gauge` exists for scrapes `FLAKY.0..FLAKY.1`, without jitter.
pub const FLAKY: (i64, i64) = (80, 140);
/// `late_counter_total` starts at this scrape.
pub const LATE_START: i64 = 200;

/// The time of `flaky_gauge`'s last sample.
pub fn flaky_last() -> i64 {
    T0 + (FLAKY.1 - 1) * INTERVAL
}

/// A small deterministic generator (xorshift64*).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

type SeriesKey = (String, Vec<(String, String)>);
/// A family: name, type, and its series' samples.
type Family = (String, &'static str, BTreeMap<SeriesKey, Vec<(i64, f64)>>);

/// Families in declaration order, each with its series' samples `(t ms, value)`.
#[derive(Default)]
pub struct History {
    families: Vec<Family>,
}

impl History {
    fn family(
        &mut self,
        name: &str,
        kind: &'static str,
    ) -> &mut BTreeMap<SeriesKey, Vec<(i64, f64)>> {
        if let Some(i) = self.families.iter().position(|(n, _, _)| n == name) {
            return &mut self.families[i].2;
        }
        self.families.push((name.to_owned(), kind, BTreeMap::new()));
        &mut self.families.last_mut().unwrap().2
    }

    fn push(
        &mut self,
        family: &str,
        kind: &'static str,
        sample_name: &str,
        labels: &[(&str, &str)],
        t: i64,
        v: f64,
    ) {
        let key = (
            sample_name.to_owned(),
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        self.family(family, kind)
            .entry(key)
            .or_default()
            .push((t, v));
    }

    /// Adds a series of `family` (of type `kind`, the family's name as the sample name) with
    /// `points` `(t ms, value)`.
    pub fn series(
        &mut self,
        family: &str,
        kind: &'static str,
        labels: &[(&str, &str)],
        points: &[(i64, f64)],
    ) {
        for &(t, v) in points {
            self.push(family, kind, family, labels, t, v);
        }
    }

    /// The OpenMetrics text, as `promtool tsdb create-blocks-from openmetrics` reads it.
    pub fn openmetrics(&self) -> String {
        let mut out = String::new();
        for (family, kind, series) in &self.families {
            writeln!(out, "# TYPE {family} {kind}").unwrap();
            for ((name, labels), points) in series {
                let labels = labels
                    .iter()
                    .map(|(k, v)| format!("{k}=\"{v}\""))
                    .collect::<Vec<_>>()
                    .join(",");
                for (t, v) in points {
                    let value = if v.is_nan() {
                        "NaN".to_owned()
                    } else if v.is_infinite() {
                        if *v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
                    } else {
                        format!("{v}")
                    };
                    writeln!(
                        out,
                        "{name}{{{labels}}} {value} {}.{:03}",
                        t / 1000,
                        t % 1000
                    )
                    .unwrap();
                }
            }
        }
        out.push_str("# EOF\n");
        out
    }
}

const TTFV_BOUNDS: [&str; 9] = [
    "50", "100", "250", "500", "1000", "1500", "2500", "5000", "+Inf",
];
const ANN_BOUNDS: [&str; 8] = ["5", "10", "25", "50", "100", "200", "400", "+Inf"];

fn observe(counts: &mut [f64], bounds: &[&str], value: f64) {
    for (c, b) in counts.iter_mut().zip(bounds) {
        let bound: f64 = if *b == "+Inf" {
            f64::INFINITY
        } else {
            b.parse().unwrap()
        };
        if value <= bound {
            *c += 1.0;
        }
    }
}

/// Generates the history.
pub fn generate() -> History {
    let mut h = History::default();
    let mut rng = Rng::new(0x5eed);
    let arms = [("r0.5", 1.0), ("r1", 1.3)];
    let instances = ["a", "b"];
    for (version, slowness) in arms {
        for instance in instances {
            let labels = [
                ("instance", instance),
                ("job", "relay"),
                ("version", version),
            ];
            let (mut sse, mut complete, mut rls, mut cross, mut late) = (0.0, 0.0, 0.0, 0.0, 0.0);
            let mut ttfv = [0.0; 9];
            let (mut ttfv_sum, mut ttfv_count) = (0.0, 0.0);
            let mut ann = [0.0; 8];
            let mut inf_only = 0.0;
            for k in 0..SCRAPES {
                let jitter = (rng.unit() * 400.0) as i64;
                let t = T0 + k * INTERVAL + jitter;
                // Counters: streams and completions; r1/b restarts at 30 minutes.
                let streams = (rng.unit() * 20.0).floor();
                sse += streams;
                complete += streams
                    - if rng.unit() < 0.1 {
                        1.0f64.min(streams)
                    } else {
                        0.0
                    };
                if version == "r1" && instance == "b" && k == 120 {
                    sse = 3.0;
                    complete = 2.0;
                }
                h.push("sse", "counter", "sse_total", &labels, t, sse);
                h.push(
                    "sse_complete",
                    "counter",
                    "sse_complete_total",
                    &labels,
                    t,
                    complete,
                );
                if version == "r1" && k % 50 == 49 {
                    rls += 1.0;
                }
                h.push(
                    "memory_rls_policy_errors",
                    "counter",
                    "memory_rls_policy_errors_total",
                    &labels,
                    t,
                    rls,
                );
                if version == "r1" && instance == "a" && k == 170 {
                    cross += 1.0;
                }
                h.push(
                    "memory_cross_tenant_attempts",
                    "counter",
                    "memory_cross_tenant_attempts_total",
                    &labels,
                    t,
                    cross,
                );
                // Histograms.
                for _ in 0..streams as usize {
                    let v = (rng.unit() * rng.unit() * 3000.0 + 20.0) * slowness;
                    observe(&mut ttfv, &TTFV_BOUNDS, v);
                    ttfv_sum += v;
                    ttfv_count += 1.0;
                    observe(&mut ann, &ANN_BOUNDS, rng.unit() * 250.0 * slowness);
                    inf_only += 1.0;
                }
                for (b, c) in TTFV_BOUNDS.iter().zip(ttfv) {
                    let mut l = labels.to_vec();
                    l.insert(1, ("le", b));
                    h.push("ttfv_ms", "histogram", "ttfv_ms_bucket", &l, t, c);
                }
                h.push("ttfv_ms", "histogram", "ttfv_ms_sum", &labels, t, ttfv_sum);
                h.push(
                    "ttfv_ms",
                    "histogram",
                    "ttfv_ms_count",
                    &labels,
                    t,
                    ttfv_count,
                );
                for (b, c) in ANN_BOUNDS.iter().zip(ann) {
                    let mut l = labels.to_vec();
                    l.insert(1, ("le", b));
                    h.push(
                        "memory_ann_query_latency_ms",
                        "histogram",
                        "memory_ann_query_latency_ms_bucket",
                        &l,
                        t,
                        c,
                    );
                }
                let mut l = labels.to_vec();
                l.insert(1, ("le", "+Inf"));
                h.push("inf_only", "histogram", "inf_only_bucket", &l, t, inf_only);
                // Gauges.
                let pool = 20.0 + 60.0 * rng.unit() + if version == "r1" { 3.0 } else { 0.0 };
                h.push(
                    "db_connection_pool_utilization",
                    "gauge",
                    "db_connection_pool_utilization",
                    &labels,
                    t,
                    pool,
                );
                if instance == "a" {
                    let v = if k % 7 == 3 {
                        f64::NAN
                    } else {
                        rng.unit() * 10.0 - 5.0
                    };
                    h.push("nan_gauge", "gauge", "nan_gauge", &labels, t, v);
                }
                if (FLAKY.0..FLAKY.1).contains(&k) {
                    let v = (k - FLAKY.0) as f64
                        + if version == "r1" { 0.5 } else { 0.0 }
                        + if instance == "b" { 0.25 } else { 0.0 };
                    h.push(
                        "flaky_gauge",
                        "gauge",
                        "flaky_gauge",
                        &labels,
                        T0 + k * INTERVAL,
                        v,
                    );
                }
                if version == "r1" && k >= LATE_START {
                    late += 1.0 + (rng.unit() * 5.0).floor();
                    h.push(
                        "late_counter",
                        "counter",
                        "late_counter_total",
                        &labels,
                        t,
                        late,
                    );
                }
            }
        }
    }
    h
}
