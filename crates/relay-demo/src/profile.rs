//! The latency profile: how long each stage of the query pipeline waits on what production would
//! call — the embedding model, the vector index, the store's row read, the reranker, the model's
//! first token — so that an instance either looks like production (`realistic`) or answers as
//! fast as the machine allows (`fast`).
//!
//! Only the row read holds a store connection: the ANN index is the service's own, per tenant
//! (DESIGN §10). That keeps the pool's use proportional to the request rate and short enough that
//! the one connection `pool-saturation` leaves free still serves a demo canary's traffic, and a
//! slower index (`slow-ann`) shows on ANN latency, not on the pool.
//!
//! The waits are spent asleep on the request's task (`tokio::time::sleep`), never computing:
//! a thousand requests in flight cost timers, not cores. Each stage's wait is log-normal around
//! its median, clipped at three standard deviations (a real dependency has timeouts and retries,
//! so its tail ends somewhere); their sum gives a time to first value of a few hundred
//! milliseconds with a right tail that stays under the runbook's 2 s request timeout.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How an instance spends its time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Profile {
    /// Stages wait like production's dependencies: time to first value p50 ≈ 340 ms, p95 ≈
    /// 680 ms; ANN search p50 ≈ 30 ms, p95 ≈ 65 ms; a store connection held for the row read
    /// (≈ 11 ms), from a pool of 8; `db_connection_pool_utilization` averaged over about a
    /// second, so it follows load rather than flickering between requests.
    Realistic,
    /// No waits: only the work itself (a few milliseconds). A pool of 16 and an instantaneous
    /// utilization gauge. For tests that need speed and for throughput benchmarks.
    Fast,
}

impl Profile {
    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Realistic => "realistic",
            Profile::Fast => "fast",
        }
    }

    /// Store connections when `--pool-size` is not given: small enough under `realistic` that
    /// ordinary traffic shows on `db_connection_pool_utilization`.
    pub fn pool_size(self) -> usize {
        match self {
            Profile::Realistic => 8,
            Profile::Fast => 16,
        }
    }

    /// The reranker's time budget when `--rerank-budget` is not given: above the `realistic`
    /// reranker's longest wait, so a healthy instance never skips.
    pub fn rerank_budget(self) -> Duration {
        match self {
            Profile::Realistic => Duration::from_millis(250),
            Profile::Fast => Duration::from_millis(25),
        }
    }

    /// How `db_connection_pool_utilization` reads the pool.
    pub(crate) fn pool_gauge(self) -> PoolGauge {
        match self {
            Profile::Realistic => PoolGauge::Averaged(POOL_GAUGE_TIME_CONSTANT),
            Profile::Fast => PoolGauge::Instantaneous,
        }
    }

    /// The stage waits of this profile, `None` when it has none.
    pub(crate) fn stages(self) -> Option<&'static Stages> {
        match self {
            Profile::Realistic => Some(&REALISTIC),
            Profile::Fast => None,
        }
    }
}

impl std::fmt::Display for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Time constant of the averaged pool gauge: a scrape sees roughly the last second's use.
const POOL_GAUGE_TIME_CONSTANT: Duration = Duration::from_secs(1);

/// How the utilization gauge reads the pool.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum PoolGauge {
    /// Connections in use at the moment of reading.
    Instantaneous,
    /// Connections in use averaged over time: an exponentially weighted moving average with this
    /// time constant, exact for the step function that use is.
    Averaged(Duration),
}

/// One stage's wait: log-normal with this median and shape, clipped at ±3σ.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stage {
    median_ms: f64,
    sigma: f64,
}

impl Stage {
    fn wait(self, z: f64) -> Duration {
        let z = z.clamp(-3.0, 3.0);
        Duration::from_secs_f64(self.median_ms * (self.sigma * z).exp() / 1000.0)
    }
}

/// The stages of a query, in the order they run.
#[derive(Debug)]
pub(crate) struct Stages {
    /// The query's embedding (a model call; no store connection held).
    embedding: Stage,
    /// The ANN search in the tenant's index (no store connection held).
    ann: Stage,
    /// Reading the hit rows from the store (a pool connection held).
    fetch: Stage,
    /// The reranker (a model call, under the rerank budget).
    rerank: Stage,
    /// The first token of the answer, before the first result is sent.
    first_token: Stage,
}

const REALISTIC: Stages = Stages {
    embedding: Stage {
        median_ms: 40.0,
        sigma: 0.3,
    },
    ann: Stage {
        median_ms: 30.0,
        sigma: 0.45,
    },
    fetch: Stage {
        median_ms: 10.0,
        sigma: 0.4,
    },
    rerank: Stage {
        median_ms: 50.0,
        sigma: 0.35,
    },
    first_token: Stage {
        median_ms: 200.0,
        sigma: 0.6,
    },
};

/// What one request waits at each stage (zero everywhere under `fast`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct StageWaits {
    pub embedding: Duration,
    pub ann: Duration,
    pub fetch: Duration,
    pub rerank: Duration,
    pub first_token: Duration,
}

/// Draws each request's waits (and the jitter of fault delays) from one stream of SplitMix64
/// numbers: lock-free, and the same sequence for the same seed.
#[derive(Debug)]
pub(crate) struct Sampler {
    state: AtomicU64,
}

impl Sampler {
    /// A sampler starting at `seed`.
    pub fn new(seed: u64) -> Self {
        Sampler {
            state: AtomicU64::new(seed),
        }
    }

    /// Uniform in `[0, 1)`.
    pub fn uniform(&self) -> f64 {
        let mut z = self
            .state
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    fn normal(&self) -> f64 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// One request's waits under `profile`.
    pub fn waits(&self, profile: Profile) -> StageWaits {
        let Some(stages) = profile.stages() else {
            return StageWaits::default();
        };
        StageWaits {
            embedding: stages.embedding.wait(self.normal()),
            ann: stages.ann.wait(self.normal()),
            fetch: stages.fetch.wait(self.normal()),
            rerank: stages.rerank.wait(self.normal()),
            first_token: stages.first_token.wait(self.normal()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quantile(mut values: Vec<f64>, q: f64) -> f64 {
        values.sort_by(f64::total_cmp);
        values[((values.len() - 1) as f64 * q).round() as usize]
    }

    #[test]
    fn fast_waits_for_nothing() {
        let sampler = Sampler::new(1);
        assert_eq!(sampler.waits(Profile::Fast), StageWaits::default());
    }

    #[test]
    fn realistic_stages_add_up_to_a_production_like_time_to_first_value() {
        let sampler = Sampler::new(7);
        let waits: Vec<StageWaits> = (0..20_000)
            .map(|_| sampler.waits(Profile::Realistic))
            .collect();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let ttfv: Vec<f64> = waits
            .iter()
            .map(|w| ms(w.embedding + w.ann + w.fetch + w.rerank + w.first_token))
            .collect();
        let ann: Vec<f64> = waits.iter().map(|w| ms(w.ann)).collect();
        let (p50, p95) = (quantile(ttfv.clone(), 0.5), quantile(ttfv.clone(), 0.95));
        assert!((250.0..450.0).contains(&p50), "TTFV p50 {p50}");
        assert!((600.0..900.0).contains(&p95), "TTFV p95 {p95}");
        // Clipped tails: even with the slow-ann fault's 400 ms on top, nothing reaches the
        // runbook's 2 s request timeout.
        let longest = quantile(ttfv, 1.0);
        assert!(longest + 400.0 < 2000.0, "longest TTFV {longest}");
        let ann_p95 = quantile(ann.clone(), 0.95);
        assert!((40.0..90.0).contains(&ann_p95), "ANN p95 {ann_p95}");
        assert!(
            waits
                .iter()
                .all(|w| w.rerank < Profile::Realistic.rerank_budget()),
            "a healthy rerank never runs past its budget"
        );
    }

    #[test]
    fn uniform_stays_in_the_unit_interval_and_spreads() {
        let sampler = Sampler::new(3);
        let draws: Vec<f64> = (0..10_000).map(|_| sampler.uniform()).collect();
        assert!(draws.iter().all(|u| (0.0..1.0).contains(u)));
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
    }
}
