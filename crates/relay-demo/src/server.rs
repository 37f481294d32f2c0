//! Starting and stopping a relay-demo instance: options, seeding, the pool-saturation job, the
//! connections (each given a bounded time to send its request heads), and graceful shutdown
//! that lets open streams finish.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use hyper::body::Incoming;
use hyper::service::{Service as _, service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::{AppState, BodyLimits, router};
use crate::auth::{Authenticator, DEVELOPMENT_JWT_SECRET};
use crate::fault::{Fault, FaultKind, FaultSchedule, LeakCatcher};
use crate::metrics::RelayMetrics;
use crate::pool::ConnectionPool;
use crate::profile::{Profile, Sampler};
use crate::seed::{DEFAULT_MEMORIES_PER_USER, seed_memories};
use crate::store::{MemoryStore, StoreError};
use crate::tenancy::TenantKeys;

/// Data secret used when `RELAY_DATA_KEY` is not set. Development only.
pub const DEVELOPMENT_DATA_SECRET: &str = "relay-demo-development-data-key-not-for-production";

/// How to run an instance.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Address to listen on (`127.0.0.1:0` picks a free port).
    pub listen: SocketAddr,
    /// Value of the `version` label on every metric and of the `x-relay-version` header.
    pub version_label: String,
    /// Load the seed users, memories and markers at start.
    pub seed: bool,
    /// Memories per seeded user (the first holds the user's marker).
    pub seed_memories_per_user: usize,
    /// How the pipeline's stages spend their time: like production (`Realistic`) or not at all
    /// (`Fast`).
    pub profile: Profile,
    /// Faults to inject.
    pub faults: Vec<Fault>,
    /// HS256 signing secret; `None` uses [`DEVELOPMENT_JWT_SECRET`] with a warning.
    pub jwt_secret: Option<String>,
    /// Secret the user-hash and at-rest keys derive from; `None` uses
    /// [`DEVELOPMENT_DATA_SECRET`] with a warning.
    pub data_secret: Option<String>,
    /// Queries in flight at once; beyond it the service answers 503.
    pub max_concurrency: usize,
    /// Store connections ([`Profile::pool_size`] by default).
    pub pool_size: usize,
    /// Longest wait for a store connection before answering 503.
    pub pool_acquire_timeout: Duration,
    /// Time budget of the reranker ([`Profile::rerank_budget`] by default).
    pub rerank_budget: Duration,
    /// Share of foreign rows the final check still catches under the `tenant-leak` fault.
    pub leak_catch_share: f64,
    /// When the fault onsets are counted from; `None` means when the instance starts.
    pub started_at: Option<Instant>,
    /// Longest time a client may take to send a request head, counted from the connection's
    /// start or, on a kept-alive connection, from the end of the previous response; past it the
    /// connection is closed without an answer (nginx's `client_header_timeout`).
    pub header_timeout: Duration,
    /// Longest time a client may take to send a request body once its head has arrived; past
    /// it the request is answered 408 and the connection closed. A deadline for the whole body,
    /// not an idle timer, so a client trickling a byte at a time is cut off too.
    pub body_timeout: Duration,
}

/// Default of [`ServeOptions::header_timeout`]: hyper's own default, and what canary's proxy
/// gives its clients.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Default of [`ServeOptions::body_timeout`]: request bodies here are a few kilobytes of JSON,
/// so 30 s is generous for any real client and short enough that a stalled one is let go.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// The options of an instance in this process: the [`Profile::Fast`] profile, since instances
/// embedded in a program are tests' (`relay-demo serve` runs [`crate::DEFAULT_PROFILE`]).
impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions::for_profile(Profile::Fast)
    }
}

impl ServeOptions {
    /// The default options with `profile` and its pool size and rerank budget.
    pub fn for_profile(profile: Profile) -> Self {
        ServeOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            version_label: "r1".to_owned(),
            seed: false,
            seed_memories_per_user: DEFAULT_MEMORIES_PER_USER,
            profile,
            faults: Vec::new(),
            jwt_secret: None,
            data_secret: None,
            max_concurrency: 256,
            pool_size: profile.pool_size(),
            pool_acquire_timeout: Duration::from_secs(2),
            rerank_budget: profile.rerank_budget(),
            leak_catch_share: 0.5,
            started_at: None,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
        }
    }
}

/// Why an instance could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}; pick another --listen address")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// Accepting or serving connections failed.
    #[error("server I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// Seeding the store failed.
    #[error("seeding the store failed: {0}")]
    Seed(#[from] StoreError),
    /// A background task panicked or was cancelled.
    #[error("server task failed: {0}")]
    Task(String),
}

/// Serves until `shutdown` resolves, then stops accepting, lets open streams finish, and returns.
pub async fn serve(
    opts: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let listener = bind(opts.listen).await?;
    run(listener, opts, shutdown, None).await
}

/// An instance running in this process (tests, the canary demo).
pub struct RunningServer {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServeError>>>,
}

impl RunningServer {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, waits for open streams to finish, and returns how the server ended.
    pub async fn shutdown(mut self) -> Result<(), ServeError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(task) => task.await.map_err(|e| ServeError::Task(e.to_string()))?,
            None => Ok(()),
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Starts an instance on a background task of the current runtime. Returns once it is seeded and
/// accepting connections.
pub async fn spawn(opts: ServeOptions) -> Result<RunningServer, ServeError> {
    let listener = bind(opts.listen).await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = oneshot::channel::<()>();
    let (ready_tx, ready_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(run(
        listener,
        opts,
        async move {
            let _ = rx.await;
        },
        Some(ready_tx),
    ));
    if ready_rx.await.is_err() {
        // The task ended before it was ready: report its error.
        return match task.await {
            Ok(Err(e)) => Err(e),
            Ok(Ok(())) => Err(ServeError::Task("server stopped during start".to_owned())),
            Err(e) => Err(ServeError::Task(e.to_string())),
        };
    }
    Ok(RunningServer {
        addr,
        shutdown: Some(tx),
        task: Some(task),
    })
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

async fn run(
    listener: TcpListener,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
    ready: Option<oneshot::Sender<()>>,
) -> Result<(), ServeError> {
    let started = opts.started_at.unwrap_or_else(Instant::now);
    let jwt_secret = opts.jwt_secret.clone().unwrap_or_else(|| {
        tracing::warn!("RELAY_JWT_SECRET not set: using the fixed development signing secret");
        DEVELOPMENT_JWT_SECRET.to_owned()
    });
    let data_secret = opts.data_secret.clone().unwrap_or_else(|| {
        tracing::warn!("RELAY_DATA_KEY not set: using the fixed development data key");
        DEVELOPMENT_DATA_SECRET.to_owned()
    });
    let metrics = RelayMetrics::new(&opts.version_label);
    let store = Arc::new(MemoryStore::new(TenantKeys::derive(data_secret.as_bytes())));
    if opts.seed {
        let per_user = opts.seed_memories_per_user;
        let seed_store = Arc::clone(&store);
        let report = tokio::task::spawn_blocking(move || seed_store.load(seed_memories(per_user)))
            .await
            .map_err(|e| ServeError::Task(e.to_string()))??;
        tracing::info!(
            rows = report.rows,
            ingest_ms = report.ingest.as_millis() as u64,
            index_build_ms = report.index_build.as_millis() as u64,
            "seed data loaded"
        );
    }
    metrics
        .memory_chunks_row_count
        .set(store.row_count() as i64);
    let pool = ConnectionPool::new(
        opts.pool_size,
        opts.pool_acquire_timeout,
        metrics.db_connection_pool_utilization.clone(),
        opts.profile.pool_gauge(),
    );
    let faults = FaultSchedule::new(&opts.faults, started);
    let stop_jobs = CancellationToken::new();
    for fault in faults.of_kind(FaultKind::PoolSaturation) {
        tokio::spawn(hold_pool(pool.clone(), fault, started, stop_jobs.clone()));
    }
    let state = Arc::new(AppState {
        version: opts.version_label.clone(),
        store,
        auth: Authenticator::new(&jwt_secret),
        metrics,
        pool,
        admission: Arc::new(Semaphore::new(opts.max_concurrency.max(1))),
        faults,
        leak_catcher: LeakCatcher::new(opts.leak_catch_share),
        profile: opts.profile,
        sampler: Sampler::new(sampler_seed(&opts.version_label)),
        rerank_budget: opts.rerank_budget,
        body_limits: BodyLimits {
            max_bytes: crate::api::MAX_BODY_BYTES,
            timeout: opts.body_timeout,
        },
    });
    let addr = listener.local_addr()?;
    tracing::info!(
        %addr,
        version = %opts.version_label,
        profile = %opts.profile,
        pool_size = opts.pool_size,
        faults = %opts.faults.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
        header_timeout_ms = opts.header_timeout.as_millis() as u64,
        body_timeout_ms = opts.body_timeout.as_millis() as u64,
        "relay-demo listening"
    );
    if let Some(ready) = ready {
        let _ = ready.send(());
    }
    serve_connections(listener, router(state), opts.header_timeout, shutdown).await;
    stop_jobs.cancel();
    tracing::info!(%addr, "relay-demo stopped");
    Ok(())
}

/// Serves HTTP/1.1, and HTTP/2 by prior knowledge, on `listener` until `shutdown` resolves; then
/// stops accepting and waits for every open connection to finish its requests.
///
/// Not `axum::serve`, which takes no configuration: without a timer hyper never times out a
/// request head, so a client could hold a connection forever by never finishing one.
async fn serve_connections(
    mut listener: TcpListener,
    app: Router,
    header_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // axum's listener retries failed accepts (out of descriptors and the like) itself.
        let (stream, client) = tokio::select! {
            accepted = axum::serve::Listener::accept(&mut listener) => accepted,
            () = &mut shutdown => break,
        };
        // SSE events are small writes: without TCP_NODELAY, Nagle's algorithm holds each one
        // until the client's delayed ACK (~40 ms), which would show up as time to first value.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let first_request = CancellationToken::new();
        let service = {
            let first_request = first_request.clone();
            let app = TowerToHyperService::new(app.clone());
            service_fn(move |request: http::Request<Incoming>| {
                first_request.cancel();
                app.call(request)
            })
        };
        let connection = graceful.watch(
            builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned(),
        );
        tokio::spawn(async move {
            tokio::select! {
                result = connection => {
                    if let Err(error) = result {
                        tracing::debug!(%client, %error, "connection ended with an error");
                    }
                }
                () = first_request_overdue(first_request, header_timeout) => {
                    tracing::debug!(%client, "no request within the header timeout; connection closed");
                }
            }
        });
    }
    graceful.shutdown().await;
}

/// Resolves when a connection has gone `timeout` without its first request arriving, and never
/// once it has arrived. hyper's header timeout covers HTTP/1.1 heads, but not the bytes read
/// before the connection's protocol is known (whether they open HTTP/2's preface), nor an
/// HTTP/2 connection that never sends a request.
async fn first_request_overdue(first_request: CancellationToken, timeout: Duration) {
    if tokio::time::timeout(timeout, first_request.cancelled())
        .await
        .is_ok()
    {
        std::future::pending::<()>().await;
    }
}

/// Each instance draws its own stage waits: the two arms of a demo are not in lockstep.
fn sampler_seed(version: &str) -> u64 {
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    version.bytes().fold(clock, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The `pool-saturation` fault: from its onset, a runaway job holds `rate × size` connections
/// (at most `size − 1`, so the service degrades instead of stopping) until shutdown — taken all
/// at once, or one by one over the fault's ramp.
async fn hold_pool(pool: ConnectionPool, fault: Fault, started: Instant, stop: CancellationToken) {
    const FOREVER: Duration = Duration::from_secs(24 * 3600);
    let size = pool.size();
    let full = ((fault.rate * size as f64).round() as usize).min(size.saturating_sub(1));
    if full == 0 {
        tracing::warn!(
            size,
            rate = fault.rate,
            "pool-saturation holds no connection at this pool size and rate"
        );
        return;
    }
    // The k-th connection is taken when the ramp's level reaches (k − ½) / full, i.e. when
    // `level × full` rounds to k; without a ramp, all of them at the onset.
    let mut held = Vec::with_capacity(full);
    let mut count = 0;
    while count < full {
        let (take, due) = if fault.ramp.is_zero() {
            (full, started + fault.onset)
        } else {
            let level = (count as f64 + 0.5) / full as f64;
            (1, started + fault.onset + fault.ramp.mul_f64(level))
        };
        let connections = tokio::select! {
            () = stop.cancelled() => return,
            c = async {
                tokio::time::sleep_until(due.into()).await;
                pool.acquire_many(take, FOREVER).await
            } => c,
        };
        match connections {
            Ok(connections) => held.push(connections),
            Err(error) => {
                tracing::warn!(%error, "pool-saturation job could not take connections");
                return;
            }
        }
        let first = count == 0;
        count += take;
        if first || count == full {
            tracing::warn!(
                held = count,
                full,
                size,
                "pool-saturation fault active: runaway job holds connections"
            );
        }
    }
    stop.cancelled().await;
    drop(held);
}
