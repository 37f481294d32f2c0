//! Keep-alive connections to one arm: check out an idle connection the upstream has not closed,
//! or dial a new one; a connection comes back only once its response body has been forwarded
//! to the end — so a connection is never shared by two requests at once and no background task
//! is needed per connection or per request.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use http::{Request, Response};
use hyper::body::Incoming;
use tokio::net::TcpStream;

use crate::arm::Arm;
use crate::config::Timeouts;
use crate::error::{FailureKind, ForwardError, chain_text};
use crate::link::{ExchangeError, Link, Outgoing, UpstreamBody};

/// Idle connections kept per arm beyond which returned connections are closed.
const MAX_IDLE: usize = 1024;

/// The connections to one arm's upstream (one pool per data-path thread and arm).
pub(crate) struct ArmPool {
    arm: Arm,
    /// `host:port` to dial.
    target: String,
    /// Connecting, and one exchange (response head, client body).
    timeouts: Timeouts,
    idle: Mutex<Vec<Link>>,
}

impl ArmPool {
    pub fn new(arm: Arm, target: String, timeouts: Timeouts) -> Arc<Self> {
        Arc::new(ArmPool {
            arm,
            target,
            timeouts,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Sends `req` on an idle connection, or a new one, and returns the response with its body
    /// still on the connection. A bodiless request whose kept-alive connection turns out to
    /// have been closed by the upstream is sent again on a fresh connection.
    pub async fn send(
        self: &Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<UpstreamBody>, ForwardError> {
        let (parts, body) = req.into_parts();
        let mut outgoing = Outgoing::new(&parts, body);
        let mut link = match self.checkout_idle() {
            Some(link) => link,
            None => self.dial().await?,
        };
        let head = match link.exchange(&mut outgoing, &self.timeouts).await {
            Ok(head) => head,
            Err(err) if link.reused() && outgoing.replayable() && err.stale_connection() => {
                tracing::debug!(arm = self.arm.as_str(), error = %err, "kept-alive connection was gone; sending on a new one");
                link = self.dial().await?;
                link.exchange(&mut outgoing, &self.timeouts)
                    .await
                    .map_err(|err| self.exchange_error(&err))?
            }
            Err(err) => return Err(self.exchange_error(&err)),
        };
        let body = UpstreamBody::new(&head, link, self.clone());
        Ok(Response::from_parts(head.parts, body))
    }

    /// Takes a connection back for the next request.
    pub(crate) fn release(&self, link: Link) {
        let mut idle = self.idle();
        if idle.len() < MAX_IDLE {
            idle.push(link);
        }
    }

    fn exchange_error(&self, err: &ExchangeError) -> ForwardError {
        let kind = match err {
            ExchangeError::Protocol(_) => FailureKind::Protocol,
            // The client's failures, not the arm's: counted against the client, not the arm.
            ExchangeError::RequestBody(_) => {
                return ForwardError::new(None, FailureKind::BadRequest, chain_text(err));
            }
            ExchangeError::ClientBodyTimeout(_) => {
                return ForwardError::new(None, FailureKind::ClientTimeout, chain_text(err));
            }
            ExchangeError::HeadTimeout(_) => FailureKind::HeadTimeout,
            ExchangeError::Io { source, .. } if source.kind() == std::io::ErrorKind::TimedOut => {
                FailureKind::HeadTimeout
            }
            ExchangeError::Io { .. } | ExchangeError::Closed { .. } => FailureKind::Reset,
        };
        ForwardError::new(Some(self.arm), kind, chain_text(err))
    }

    fn checkout_idle(&self) -> Option<Link> {
        let mut idle = self.idle();
        while let Some(link) = idle.pop() {
            if link.is_usable() {
                return Some(link);
            }
        }
        None
    }

    async fn dial(&self) -> Result<Link, ForwardError> {
        let fail = |kind, detail: String| ForwardError::new(Some(self.arm), kind, detail);
        let connecting = TcpStream::connect(&self.target);
        let stream = match tokio::time::timeout(self.timeouts.connect, connecting).await {
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
                        self.timeouts.connect.as_millis()
                    ),
                ));
            }
        };
        // Latency over batching: request heads and events must leave as soon as written.
        let _ = stream.set_nodelay(true);
        Ok(Link::new(stream))
    }

    fn idle(&self) -> MutexGuard<'_, Vec<Link>> {
        // Pushes and pops only: a poisoned lock still holds a valid list.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
