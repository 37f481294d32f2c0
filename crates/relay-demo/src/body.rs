//! Reading a request body under two bounds: its size (nginx's `client_max_body_size`) and the
//! time the client has to send it. Handlers call this only after authenticating the request on
//! its head, so a caller without valid credentials never gets a byte of its body read.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, header};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

/// How much a request body may hold, and how long it may take to arrive.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyLimits {
    /// Largest body, in bytes.
    pub max_bytes: usize,
    /// Time from the first attempt to read the body to its end: a deadline, not an idle
    /// timer, so a client trickling a byte at a time is cut off too.
    pub timeout: Duration,
}

/// Why a body was not read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    /// The body is, or was announced to be, over the limit.
    #[error("request body exceeds {limit} bytes; send a smaller body")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// The body did not arrive in time.
    #[error("request body did not arrive within {} ms", timeout.as_millis())]
    TimedOut {
        /// The time it had.
        timeout: Duration,
    },
    /// The connection failed or broke the framing mid-body.
    #[error("request body could not be read: {0}")]
    Unreadable(String),
}

/// Reads the whole of `body`. A body whose `Content-Length` is over the limit is refused before
/// any of it is read; one without a length is refused at the first byte over the limit.
pub(crate) async fn read(
    headers: &HeaderMap,
    body: Body,
    limits: BodyLimits,
) -> Result<Bytes, BodyError> {
    let too_large = BodyError::TooLarge {
        limit: limits.max_bytes,
    };
    // hyper has already refused a malformed or contradictory Content-Length.
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|length| length > limits.max_bytes as u64) {
        return Err(too_large);
    }
    let deadline = tokio::time::Instant::now() + limits.timeout;
    let mut frames = body.into_data_stream();
    let mut collected = BytesMut::new();
    loop {
        let frame = tokio::time::timeout_at(deadline, frames.next())
            .await
            .map_err(|_| BodyError::TimedOut {
                timeout: limits.timeout,
            })?;
        match frame {
            None => return Ok(collected.freeze()),
            Some(Ok(data)) if collected.len() + data.len() > limits.max_bytes => {
                return Err(too_large);
            }
            Some(Ok(data)) => collected.extend_from_slice(&data),
            Some(Err(error)) => return Err(BodyError::Unreadable(error.to_string())),
        }
    }
}
