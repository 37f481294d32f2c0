//! The store's bounded connection pool: every store operation holds one connection for as long as
//! it runs, so `db_connection_pool_utilization` is a real measure of how much of the pool is busy.
//! A caller that cannot get a connection within the acquire timeout gets [`PoolError::Exhausted`]
//! (the service answers 503).
//!
//! The gauge reads the pool either at the instant of reading or averaged over the last second or
//! so ([`PoolGauge`]): connections are held for tens of milliseconds, so a scrape every few
//! seconds of an instantaneous gauge mostly sees 0 and now and then a spike, while the average
//! rises and falls with the request rate.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::profile::PoolGauge;

/// Why no connection was handed out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// Every connection stayed busy for the whole acquire timeout.
    #[error("connection pool exhausted: all {size} connections busy for {waited_ms} ms")]
    Exhausted {
        /// Pool size.
        size: usize,
        /// How long the caller waited.
        waited_ms: u128,
    },
    /// The pool was closed (the service is shutting down).
    #[error("connection pool closed")]
    Closed,
}

/// A fixed-size pool of store connections.
#[derive(Clone)]
pub struct ConnectionPool {
    semaphore: Arc<Semaphore>,
    size: usize,
    in_use: Arc<AtomicUsize>,
    utilization: Gauge<f64, AtomicU64>,
    average: Option<Arc<Mutex<Average>>>,
    acquire_timeout: Duration,
}

/// Connections in use, averaged: an exponentially weighted moving average with time constant
/// `tau`, advanced exactly over each interval in which use was constant.
#[derive(Debug)]
struct Average {
    tau: f64,
    value: f64,
    in_use: usize,
    at: Instant,
}

impl Average {
    /// Advances to `now` with the use so far, then records `in_use` from now on; the average.
    fn advance(&mut self, now: Instant, in_use: usize) -> f64 {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        let level = self.in_use as f64;
        self.value = level + (self.value - level) * (-dt / self.tau).exp();
        self.in_use = in_use;
        self.at = now;
        self.value
    }
}

/// Connections checked out of the pool; returned when dropped.
pub struct PooledConnection {
    _permit: OwnedSemaphorePermit,
    count: usize,
    pool: ConnectionPool,
}

impl Drop for PooledConnection {
    fn drop(&mut self) {
        let now = self.pool.in_use.fetch_sub(self.count, Ordering::AcqRel) - self.count;
        self.pool.publish(now);
    }
}

impl ConnectionPool {
    /// A pool of `size` (at least 1) connections that reports its utilization into `utilization`,
    /// read as `gauge` says.
    pub fn new(
        size: usize,
        acquire_timeout: Duration,
        utilization: Gauge<f64, AtomicU64>,
        gauge: PoolGauge,
    ) -> Self {
        let size = size.max(1);
        let average = match gauge {
            PoolGauge::Instantaneous => None,
            PoolGauge::Averaged(tau) => Some(Arc::new(Mutex::new(Average {
                tau: tau.as_secs_f64().max(1e-3),
                value: 0.0,
                in_use: 0,
                at: Instant::now(),
            }))),
        };
        let pool = ConnectionPool {
            semaphore: Arc::new(Semaphore::new(size)),
            size,
            in_use: Arc::new(AtomicUsize::new(0)),
            utilization,
            average,
            acquire_timeout,
        };
        pool.publish(0);
        pool
    }

    /// Pool size.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Checks out one connection, waiting at most the acquire timeout (or `limit`, if sooner).
    pub async fn acquire(&self, limit: Option<Duration>) -> Result<PooledConnection, PoolError> {
        let wait = limit.map_or(self.acquire_timeout, |l| l.min(self.acquire_timeout));
        self.acquire_many(1, wait).await
    }

    /// Checks out `count` connections at once, waiting at most `wait`.
    pub async fn acquire_many(
        &self,
        count: usize,
        wait: Duration,
    ) -> Result<PooledConnection, PoolError> {
        let count = count.clamp(1, self.size);
        let n = u32::try_from(count).map_err(|_| PoolError::Closed)?;
        let permit =
            match tokio::time::timeout(wait, self.semaphore.clone().acquire_many_owned(n)).await {
                Ok(Ok(permit)) => permit,
                Ok(Err(_)) => return Err(PoolError::Closed),
                Err(_) => {
                    return Err(PoolError::Exhausted {
                        size: self.size,
                        waited_ms: wait.as_millis(),
                    });
                }
            };
        let now = self.in_use.fetch_add(count, Ordering::AcqRel) + count;
        self.publish(now);
        Ok(PooledConnection {
            _permit: permit,
            count,
            pool: self.clone(),
        })
    }

    /// Brings the gauge up to now (an averaged gauge decays towards the current use between
    /// checkouts); called before the metrics are read.
    pub fn refresh(&self) {
        self.publish(self.in_use.load(Ordering::Acquire));
    }

    fn publish(&self, in_use: usize) {
        let connections = match &self.average {
            None => in_use as f64,
            Some(average) => average
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .advance(Instant::now(), in_use),
        };
        self.utilization.set(100.0 * connections / self.size as f64);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn utilization_tracks_checked_out_connections() {
        let gauge: Gauge<f64, AtomicU64> = Gauge::default();
        let pool = ConnectionPool::new(
            4,
            Duration::from_millis(20),
            gauge.clone(),
            PoolGauge::Instantaneous,
        );
        let a = pool.acquire(None).await.unwrap();
        assert_eq!(gauge.get(), 25.0);
        let b = pool
            .acquire_many(3, Duration::from_millis(20))
            .await
            .unwrap();
        assert_eq!(gauge.get(), 100.0);
        assert!(matches!(
            pool.acquire(None).await,
            Err(PoolError::Exhausted { size: 4, .. })
        ));
        drop(a);
        drop(b);
        assert_eq!(gauge.get(), 0.0);
    }

    #[test]
    fn the_average_follows_use_with_its_time_constant() {
        let start = Instant::now();
        let mut average = Average {
            tau: 1.0,
            value: 0.0,
            in_use: 0,
            at: start,
        };
        // Two connections from the start: after one time constant 1 − 1/e of the way there.
        average.advance(start, 2);
        let one_tau = average.advance(start + Duration::from_secs(1), 2);
        assert!(
            (one_tau - 2.0 * (1.0 - (-1.0f64).exp())).abs() < 1e-9,
            "{one_tau}"
        );
        // Long after, it is the use itself; and it decays once the connections are back.
        let settled = average.advance(start + Duration::from_secs(30), 0);
        assert!((settled - 2.0).abs() < 1e-9, "{settled}");
        let decayed = average.advance(start + Duration::from_secs(31), 0);
        assert!(decayed < settled && decayed > 0.0, "{decayed}");
    }

    #[tokio::test]
    async fn an_averaged_gauge_rises_while_connections_are_held() {
        let gauge: Gauge<f64, AtomicU64> = Gauge::default();
        let pool = ConnectionPool::new(
            4,
            Duration::from_millis(20),
            gauge.clone(),
            PoolGauge::Averaged(Duration::from_millis(50)),
        );
        assert_eq!(gauge.get(), 0.0);
        let held = pool.acquire(None).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        pool.refresh();
        let while_held = gauge.get();
        assert!(while_held > 20.0 && while_held <= 25.0, "{while_held}");
        drop(held);
        tokio::time::sleep(Duration::from_millis(200)).await;
        pool.refresh();
        assert!(gauge.get() < while_held, "{}", gauge.get());
    }
}
