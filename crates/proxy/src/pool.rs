//! Keep-alive connections to one arm: check out an idle HTTP/1.1 connection or dial a new
//! one, send the request, and take the connection back only once its response body has been
//! forwarded to the end — so a connection is never shared by two requests at once and no
//! background task is needed per request.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::arm::Arm;
use crate::error::{FailureKind, ForwardError, chain_text, classify_exchange};

/// Idle connections kept per arm beyond which returned connections are closed.
const MAX_IDLE: usize = 1024;

/// The connections to one arm's upstream.
pub(crate) struct ArmPool {
    arm: Arm,
    /// `host:port` to dial.
    target: String,
    connect_timeout: Duration,
    idle: Mutex<Vec<SendRequest<Incoming>>>,
}

/// A connection checked out for one exchange. Give it back with [`Connection::release`]
/// when the response body has ended cleanly; dropping it closes it instead.
pub(crate) struct Connection {
    sender: SendRequest<Incoming>,
    pool: Arc<ArmPool>,
}

impl Connection {
    /// Returns the connection to its pool for the next request.
    pub fn release(self) {
        if self.sender.is_closed() {
            return;
        }
        let mut idle = self.pool.idle();
        if idle.len() < MAX_IDLE {
            idle.push(self.sender);
        }
    }
}

impl ArmPool {
    pub fn new(arm: Arm, target: String, connect_timeout: Duration) -> Arc<Self> {
        Arc::new(ArmPool {
            arm,
            target,
            connect_timeout,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Sends `req` on an idle connection, or a new one. A request the upstream never saw (an
    /// idle connection the upstream had just closed) is sent again on a fresh connection.
    pub async fn send(
        self: &Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<(Response<Incoming>, Connection), ForwardError> {
        let mut conn = match self.checkout_idle().await {
            Some(conn) => conn,
            None => self.dial().await?,
        };
        match conn.sender.try_send_request(req).await {
            Ok(resp) => Ok((resp, conn)),
            Err(mut err) => match err.take_message() {
                Some(req) => {
                    tracing::debug!(
                        arm = self.arm.as_str(),
                        "idle connection was gone; sending on a new one"
                    );
                    let mut conn = self.dial().await?;
                    conn.sender
                        .try_send_request(req)
                        .await
                        .map(|resp| (resp, conn))
                        .map_err(|err| self.exchange_error(err.error()))
                }
                None => Err(self.exchange_error(err.error())),
            },
        }
    }

    fn exchange_error(&self, err: &hyper::Error) -> ForwardError {
        ForwardError::new(Some(self.arm), classify_exchange(err), chain_text(err))
    }

    async fn checkout_idle(self: &Arc<Self>) -> Option<Connection> {
        loop {
            let mut sender = self.idle().pop()?;
            if sender.is_closed() {
                continue;
            }
            if !sender.is_ready() && sender.ready().await.is_err() {
                continue;
            }
            return Some(Connection {
                sender,
                pool: self.clone(),
            });
        }
    }

    async fn dial(self: &Arc<Self>) -> Result<Connection, ForwardError> {
        let fail = |kind, detail: String| ForwardError::new(Some(self.arm), kind, detail);
        let stream = match tokio::time::timeout(
            self.connect_timeout,
            TcpStream::connect(&self.target),
        )
        .await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) if err.kind() == std::io::ErrorKind::TimedOut => {
                return Err(fail(
                    FailureKind::ConnectTimeout,
                    format!("connecting to {}: {err}", self.target),
                ));
            }
            Ok(Err(err)) => {
                return Err(fail(
                    FailureKind::ConnectFailed,
                    format!("connecting to {}: {err}", self.target),
                ));
            }
            Err(_) => {
                return Err(fail(
                    FailureKind::ConnectTimeout,
                    format!(
                        "connecting to {} took over {} ms",
                        self.target,
                        self.connect_timeout.as_millis()
                    ),
                ));
            }
        };
        let _ = stream.set_nodelay(true);
        let (sender, driver) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|err| fail(FailureKind::ConnectFailed, chain_text(&err)))?;
        let arm = self.arm;
        tokio::spawn(async move {
            if let Err(err) = driver.await {
                tracing::debug!(arm = arm.as_str(), error = %err, "upstream connection ended with an error");
            }
        });
        Ok(Connection {
            sender,
            pool: self.clone(),
        })
    }

    fn idle(&self) -> MutexGuard<'_, Vec<SendRequest<Incoming>>> {
        // Pushes and pops only: a poisoned lock still holds a valid list.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
