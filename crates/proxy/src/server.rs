//! Serving connections (HTTP/1.1 with keep-alive, and h2c by prior
//! knowledge) until shutdown, then draining in-flight requests for a bounded time.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::body::ResponseBody;

/// Something that answers requests: the data path or the admin API.
pub(crate) trait Handler: Send + Sync + 'static {
    fn handle(
        &self,
        req: Request<Incoming>,
        client: SocketAddr,
    ) -> impl Future<Output = Response<ResponseBody>> + Send;
}

/// Where connections come from: a listening socket, or an acceptor on another thread that
/// hands accepted connections over.
pub(crate) enum Connections {
    Listener(TcpListener),
    Handoff(mpsc::UnboundedReceiver<(std::net::TcpStream, SocketAddr)>),
}

impl Connections {
    async fn next(&mut self) -> std::io::Result<(TcpStream, SocketAddr)> {
        match self {
            Connections::Listener(listener) => listener.accept().await,
            Connections::Handoff(rx) => match rx.recv().await {
                Some((stream, client)) => Ok((TcpStream::from_std(stream)?, client)),
                // The acceptor is gone: nothing more will come; wait for shutdown.
                None => std::future::pending().await,
            },
        }
    }
}

/// Serves `connections` with `handler` until `cancel`, then waits up to `drain` for open
/// connections to finish and cuts the rest.
pub(crate) async fn serve<H: Handler>(
    mut connections: Connections,
    handler: Arc<H>,
    role: &'static str,
    cancel: CancellationToken,
    drain: Duration,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(Duration::from_secs(30));
    let graceful = GracefulShutdown::new();
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            accepted = connections.next() => match accepted {
                Ok((stream, client)) => {
                    // Latency over batching: events must leave as soon as they are written.
                    let _ = stream.set_nodelay(true);
                    let handler = handler.clone();
                    let service = service_fn(move |req| {
                        let handler = handler.clone();
                        async move { Ok::<_, Infallible>(handler.handle(req, client).await) }
                    });
                    let conn = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .into_owned();
                    let conn = graceful.watch(conn);
                    tasks.spawn(async move {
                        if let Err(err) = conn.await {
                            tracing::debug!(role, %client, error = %err, "connection ended with an error");
                        }
                    });
                }
                Err(err) => {
                    // Out of file descriptors and the like: say so, and give the system a
                    // moment instead of spinning on the error.
                    tracing::warn!(role, error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            () = cancel.cancelled() => break,
        }
    }
    drop(connections);
    let open = tasks.len();
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(drain) => {
            tracing::warn!(role, open, drain_ms = drain.as_millis() as u64, "drain timeout: cutting open connections");
        }
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    tracing::debug!(role, "stopped");
}
