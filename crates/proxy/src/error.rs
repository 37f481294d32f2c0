//! Errors: [`ProxyError`] for starting the proxy, [`ForwardError`] for one request that could
//! not be forwarded — recording who is to blame, whether a retry is safe, and which status the
//! client gets.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::net::SocketAddr;

use http::StatusCode;

use crate::arm::Arm;

/// The proxy could not start (or its configuration is unusable).
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// A configuration value is unusable; the message says which and how to fix it.
    #[error("proxy configuration: {0}")]
    Config(String),
    /// An upstream URL is unusable.
    #[error("upstream `{url}`: {reason}")]
    InvalidUpstream {
        /// The URL as given.
        url: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// A listening socket could not be bound.
    #[error("cannot listen for the {role} on {addr}: {source} (is the port in use?)")]
    Bind {
        /// `data port` or `admin API`.
        role: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's reason.
        source: io::Error,
    },
    /// A data-path thread could not be started (or pinned to its CPU).
    #[error("cannot start data-path thread {index}: {step}: {source}")]
    DataThread {
        /// The thread's number, from 0.
        index: usize,
        /// What failed, e.g. `pinning it to CPU 3`.
        step: String,
        /// The operating system's reason.
        source: io::Error,
    },
}

/// Who caused a failed request (Pingora's split), so per-arm error metrics only count what the
/// arm did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blame {
    /// The arm's upstream failed or misbehaved.
    Upstream,
    /// The client sent something the proxy cannot forward.
    Downstream,
    /// The proxy itself failed.
    Internal,
}

/// What went wrong forwarding one request. Each kind maps to one status and one metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// The upstream could not be connected to (refused, unreachable): 503.
    ConnectFailed,
    /// Connecting took longer than the connect timeout: 504.
    ConnectTimeout,
    /// The connection was closed or reset before a complete response head: 502.
    Reset,
    /// No response head within the response-head timeout: 504.
    HeadTimeout,
    /// The upstream answered with something that is not HTTP: 502.
    Protocol,
    /// The request cannot be forwarded as sent (for example an unknown pin value; a missing,
    /// repeated or malformed `Host`; a body cut short): 400.
    BadRequest,
    /// The method is not one a reverse proxy forwards (`CONNECT` asks for a tunnel): 405.
    MethodNotAllowed,
    /// The client stopped sending its request body for longer than the client-body timeout: 408.
    ClientTimeout,
    /// The proxy failed to build the upstream request: 500.
    Internal,
}

impl FailureKind {
    /// All kinds, in metric order.
    pub const ALL: [FailureKind; 9] = [
        FailureKind::ConnectFailed,
        FailureKind::ConnectTimeout,
        FailureKind::Reset,
        FailureKind::HeadTimeout,
        FailureKind::Protocol,
        FailureKind::BadRequest,
        FailureKind::MethodNotAllowed,
        FailureKind::ClientTimeout,
        FailureKind::Internal,
    ];

    /// The status the client receives.
    pub const fn status(self) -> StatusCode {
        match self {
            FailureKind::ConnectFailed => StatusCode::SERVICE_UNAVAILABLE,
            FailureKind::ConnectTimeout | FailureKind::HeadTimeout => StatusCode::GATEWAY_TIMEOUT,
            FailureKind::Reset | FailureKind::Protocol => StatusCode::BAD_GATEWAY,
            FailureKind::BadRequest => StatusCode::BAD_REQUEST,
            FailureKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            FailureKind::ClientTimeout => StatusCode::REQUEST_TIMEOUT,
            FailureKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Who is to blame.
    pub const fn blame(self) -> Blame {
        match self {
            FailureKind::BadRequest
            | FailureKind::MethodNotAllowed
            | FailureKind::ClientTimeout => Blame::Downstream,
            FailureKind::Internal => Blame::Internal,
            _ => Blame::Upstream,
        }
    }

    /// Whether retrying the request elsewhere is safe whatever its method: true only when the
    /// upstream never saw it.
    pub const fn retry_safe(self) -> bool {
        matches!(
            self,
            FailureKind::ConnectFailed | FailureKind::ConnectTimeout
        )
    }

    /// The metric label (`kind` of `canary_proxy_upstream_errors_total`, or of
    /// `canary_proxy_client_errors_total` for the kinds blamed on the client).
    pub const fn as_str(self) -> &'static str {
        match self {
            FailureKind::ConnectFailed => "connect_failed",
            FailureKind::ConnectTimeout => "connect_timeout",
            FailureKind::Reset => "reset",
            FailureKind::HeadTimeout => "head_timeout",
            FailureKind::Protocol => "protocol",
            FailureKind::BadRequest => "bad_request",
            FailureKind::MethodNotAllowed => "method_not_allowed",
            FailureKind::ClientTimeout => "client_timeout",
            FailureKind::Internal => "internal",
        }
    }

    pub(crate) const fn index(self) -> usize {
        self as usize
    }

    fn describe(self) -> &'static str {
        match self {
            FailureKind::ConnectFailed => "could not connect to the upstream",
            FailureKind::ConnectTimeout => "connecting to the upstream timed out",
            FailureKind::Reset => "the upstream closed the connection before a complete response",
            FailureKind::HeadTimeout => "the upstream sent no response head in time",
            FailureKind::Protocol => "the upstream's response is not valid HTTP",
            FailureKind::BadRequest => "the request cannot be forwarded",
            FailureKind::MethodNotAllowed => "the proxy does not forward this method",
            FailureKind::ClientTimeout => "the client stopped sending its request body",
            FailureKind::Internal => "the proxy failed to build the upstream request",
        }
    }
}

/// One request that could not be forwarded.
#[derive(Debug)]
pub struct ForwardError {
    /// The arm it was meant for (none when it failed before an arm was chosen).
    pub arm: Option<Arm>,
    /// What went wrong.
    pub kind: FailureKind,
    /// The underlying cause, flattened to text for the log (never a metric label).
    pub detail: String,
}

impl ForwardError {
    /// A failure of `kind` with a human detail.
    pub fn new(arm: Option<Arm>, kind: FailureKind, detail: impl Into<String>) -> Self {
        ForwardError {
            arm,
            kind,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for ForwardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.arm {
            Some(arm) => write!(f, "{arm} arm: {}: {}", self.kind.describe(), self.detail),
            None => write!(f, "{}: {}", self.kind.describe(), self.detail),
        }
    }
}

impl StdError for ForwardError {}

/// `outer: inner: innermost`, each message once.
pub(crate) fn chain_text(err: &(dyn StdError + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let message = e.to_string();
        if !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_one_status_blame_and_label() {
        let expected = [
            (FailureKind::ConnectFailed, 503, Blame::Upstream, true),
            (FailureKind::ConnectTimeout, 504, Blame::Upstream, true),
            (FailureKind::Reset, 502, Blame::Upstream, false),
            (FailureKind::HeadTimeout, 504, Blame::Upstream, false),
            (FailureKind::Protocol, 502, Blame::Upstream, false),
            (FailureKind::BadRequest, 400, Blame::Downstream, false),
            (FailureKind::MethodNotAllowed, 405, Blame::Downstream, false),
            (FailureKind::ClientTimeout, 408, Blame::Downstream, false),
            (FailureKind::Internal, 500, Blame::Internal, false),
        ];
        for (i, (kind, status, blame, retry)) in expected.into_iter().enumerate() {
            assert_eq!(FailureKind::ALL[i], kind);
            assert_eq!(kind.index(), i);
            assert_eq!(kind.status().as_u16(), status, "{kind:?}");
            assert_eq!(kind.blame(), blame, "{kind:?}");
            assert_eq!(kind.retry_safe(), retry, "{kind:?}");
        }
    }
}
