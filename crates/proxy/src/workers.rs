//! Dedicated data-path threads: one single-threaded runtime per thread, each serving the
//! connections handed to it and keeping its own upstream connections — the thread-per-core
//! layout of HAProxy and nginx. One acceptor deals connections out in turn, so the threads
//! carry equal numbers of connections, and a request never hops between threads: the data path
//! pays for no cross-thread wakeups.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::ProxyConfig;
use crate::control::Control;
use crate::distribute::Splitter;
use crate::error::ProxyError;
use crate::forward::Forwarder;
use crate::server::{self, Connections};

type Handoff = mpsc::UnboundedSender<(std::net::TcpStream, SocketAddr)>;

/// Starts `count` data-path threads and returns, for each, a receiver resolved when it has
/// stopped. `listener` is served by an acceptor task on the caller's runtime (returned too).
pub(crate) fn spawn(
    cfg: &ProxyConfig,
    count: usize,
    listener: TcpListener,
    control: Arc<Control>,
    splitter: Arc<Splitter>,
    cancel: CancellationToken,
) -> Result<(impl Future<Output = ()> + use<>, Vec<oneshot::Receiver<()>>), ProxyError> {
    let addr = cfg.listen;
    let mut handoffs = Vec::with_capacity(count);
    let mut stopped = Vec::with_capacity(count);
    for index in 0..count {
        let (tx, rx) = mpsc::unbounded_channel();
        let (stopped_tx, stopped_rx) = oneshot::channel::<()>();
        let forwarder = Arc::new(Forwarder::new(cfg, control.clone(), splitter.clone()));
        let worker_cancel = cancel.clone();
        let drain = cfg.drain_timeout;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| ProxyError::Bind {
                role: "data port",
                addr,
                source,
            })?;
        std::thread::Builder::new()
            .name(format!("canary-proxy-{index}"))
            .spawn(move || {
                runtime.block_on(server::serve(
                    Connections::Handoff(rx),
                    forwarder,
                    "data port",
                    worker_cancel,
                    drain,
                ));
                let _ = stopped_tx.send(());
            })
            .map_err(|source| {
                cancel.cancel();
                ProxyError::Bind {
                    role: "data port",
                    addr,
                    source,
                }
            })?;
        handoffs.push(tx);
        stopped.push(stopped_rx);
    }
    Ok((deal(listener, handoffs, cancel), stopped))
}

/// Accepts connections and hands them to the threads in turn until `cancel`.
async fn deal(listener: TcpListener, handoffs: Vec<Handoff>, cancel: CancellationToken) {
    let mut next = 0usize;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, client)) => {
                    let _ = stream.set_nodelay(true);
                    match stream.into_std() {
                        Ok(stream) => {
                            if handoffs[next % handoffs.len()].send((stream, client)).is_err() {
                                tracing::error!("a data-path thread is gone; connection dropped");
                            }
                            next = next.wrapping_add(1);
                        }
                        Err(err) => tracing::warn!(error = %err, "cannot hand a connection over"),
                    }
                }
                Err(err) => {
                    // Out of file descriptors and the like: say so, and give the system a
                    // moment instead of spinning on the error.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = cancel.cancelled() => return,
        }
    }
}
