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

use crate::affinity;
use crate::config::ProxyConfig;
use crate::control::Control;
use crate::distribute::Splitter;
use crate::error::ProxyError;
use crate::forward::Forwarder;
use crate::server::{self, Connections};

type Handoff = mpsc::UnboundedSender<(std::net::TcpStream, SocketAddr)>;

/// Starts `count` data-path threads and returns, for each, a receiver resolved when it has
/// stopped. `listener` is served by an acceptor task on the caller's runtime (returned too).
/// With `cfg.pin_threads`, each thread is bound to its CPU before it serves anything, and a
/// thread that cannot be bound fails the start.
pub(crate) fn spawn(
    cfg: &ProxyConfig,
    count: usize,
    listener: TcpListener,
    control: Arc<Control>,
    splitter: Arc<Splitter>,
    cancel: CancellationToken,
) -> Result<(impl Future<Output = ()> + use<>, Vec<oneshot::Receiver<()>>), ProxyError> {
    let allowed = if cfg.pin_threads {
        affinity::allowed_cpus().map_err(|source| ProxyError::DataThread {
            index: 0,
            step: "reading the CPUs this process may use".into(),
            source,
        })?
    } else {
        Vec::new()
    };
    let mut handoffs = Vec::with_capacity(count);
    let mut stopped = Vec::with_capacity(count);
    for index in 0..count {
        let started = start_thread(
            cfg,
            index,
            affinity::cpu_for(index, &allowed),
            control.clone(),
            splitter.clone(),
            cancel.clone(),
        );
        match started {
            Ok((handoff, stopped_rx)) => {
                handoffs.push(handoff);
                stopped.push(stopped_rx);
            }
            Err(err) => {
                // The threads already running see the cancellation and end.
                cancel.cancel();
                return Err(err);
            }
        }
    }
    Ok((deal(listener, handoffs, cancel), stopped))
}

/// Starts data-path thread `index` (bound to `cpu` when given) and waits until it is ready to
/// serve (a thread start: microseconds, so the caller's runtime is not held up).
fn start_thread(
    cfg: &ProxyConfig,
    index: usize,
    cpu: Option<usize>,
    control: Arc<Control>,
    splitter: Arc<Splitter>,
    cancel: CancellationToken,
) -> Result<(Handoff, oneshot::Receiver<()>), ProxyError> {
    let failed = |step: String, source| ProxyError::DataThread {
        index,
        step,
        source,
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let (stopped_tx, stopped_rx) = oneshot::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel::<std::io::Result<()>>(1);
    let forwarder = Arc::new(Forwarder::new(cfg, control, splitter));
    let drain = cfg.drain_timeout;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| failed("building its runtime".into(), e))?;
    std::thread::Builder::new()
        .name(format!("canary-proxy-{index}"))
        .spawn(move || {
            let pinned = cpu.map_or(Ok(()), affinity::pin_current_thread);
            let ok = pinned.is_ok();
            let _ = ready_tx.send(pinned);
            if !ok {
                return;
            }
            if let Some(cpu) = cpu {
                tracing::info!(thread = index, cpu, "data-path thread pinned");
            }
            runtime.block_on(server::serve(
                Connections::Handoff(rx),
                forwarder,
                "data port",
                cancel,
                drain,
            ));
            let _ = stopped_tx.send(());
        })
        .map_err(|e| failed("spawning the thread".into(), e))?;
    let ready = ready_rx
        .recv()
        .unwrap_or_else(|_| Err(std::io::Error::other("it ended before it was ready")));
    ready.map_err(|e| match cpu {
        Some(cpu) => failed(format!("pinning it to CPU {cpu}"), e),
        None => failed("starting it".into(), e),
    })?;
    Ok((tx, stopped_rx))
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
