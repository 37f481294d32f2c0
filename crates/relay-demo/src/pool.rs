//! The store's bounded connection pool: every store operation holds one connection for as long as
//! it runs, so `db_connection_pool_utilization` is a real measure of how much of the pool is busy.
//! A caller that cannot get a connection within the acquire timeout gets [`PoolError::Exhausted`]
//! (the service answers 503).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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
    acquire_timeout: Duration,
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
    /// A pool of `size` (at least 1) connections that reports its utilization into `utilization`.
    pub fn new(size: usize, acquire_timeout: Duration, utilization: Gauge<f64, AtomicU64>) -> Self {
        let size = size.max(1);
        let pool = ConnectionPool {
            semaphore: Arc::new(Semaphore::new(size)),
            size,
            in_use: Arc::new(AtomicUsize::new(0)),
            utilization,
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

    fn publish(&self, in_use: usize) {
        self.utilization
            .set(100.0 * in_use as f64 / self.size as f64);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn utilization_tracks_checked_out_connections() {
        let gauge: Gauge<f64, AtomicU64> = Gauge::default();
        let pool = ConnectionPool::new(4, Duration::from_millis(20), gauge.clone());
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
}
