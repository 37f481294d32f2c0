//! One measured request: send it on a kept-alive connection (opening one if needed), read the
//! answer to its end, and note status, time to first byte, time to first value, events, bytes,
//! how the answer ended and which arm gave it.

use std::pin::{Pin, pin};
use std::time::{Duration, Instant};

use canary_core::ArmRole;
use http::{HeaderName, Request, header};
use http_body_util::BodyExt;
use tokio::time::Sleep;

use crate::connect::{ConnectFailure, Connector, Link, RequestBody};
use crate::report::ErrorKind;
use crate::sse::SseScanner;

/// Most bytes of one answer kept for inspection (probes); the rest is measured, not kept.
pub(crate) const MAX_COLLECTED: usize = 8 << 20;

/// What one request measured. Durations count from the request's origin: its send time, or
/// its due time in an open loop.
#[derive(Debug, Clone, Default)]
pub(crate) struct Measured {
    pub status: Option<u16>,
    pub ttfb: Option<Duration>,
    pub ttfv: Option<Duration>,
    pub total: Duration,
    pub events: u32,
    pub bytes: u64,
    pub event_stream: bool,
    pub terminal_seen: bool,
    pub error: Option<ErrorKind>,
    pub arm: Option<ArmRole>,
}

/// Sends requests to one endpoint over one connection at a time, reconnecting when the
/// previous connection ended. One per concurrent user or worker.
pub(crate) struct Caller {
    connector: Connector,
    link: Option<Link>,
    arm_header: HeaderName,
    terminal: String,
    timeout: Duration,
    /// The arm of an answer without an arm header (a direct canary URL: the canary).
    fallback_arm: Option<ArmRole>,
    /// The request timeout, kept from one request to the next: moving a registered timer's
    /// deadline later costs an atomic update, registering a new one a trip through the wheel.
    timer: Option<Pin<Box<Sleep>>>,
}

impl Caller {
    pub fn new(
        connector: Connector,
        arm_header: HeaderName,
        terminal: String,
        timeout: Duration,
        fallback_arm: Option<ArmRole>,
    ) -> Self {
        Caller {
            connector,
            link: None,
            arm_header,
            terminal,
            timeout,
            fallback_arm,
            timer: None,
        }
    }

    /// Sends `request` and reads the answer to its end (or until `origin + timeout`). A
    /// successful answer has status `expect`, a body read to its end and — for an event
    /// stream — the terminal event. With `collect`, up to [`MAX_COLLECTED`] bytes of the body
    /// are appended to it.
    pub async fn call(
        &mut self,
        request: Request<RequestBody>,
        origin: Instant,
        expect: u16,
        collect: Option<&mut Vec<u8>>,
    ) -> Measured {
        let mut m = Measured::default();
        let deadline = tokio::time::Instant::from_std(origin + self.timeout);
        let mut timer = match self.timer.take() {
            Some(mut timer) => {
                timer.as_mut().reset(deadline);
                timer
            }
            None => Box::pin(tokio::time::sleep_until(deadline)),
        };
        let timed_out = {
            let exchange = pin!(self.exchange(request, origin, expect, &mut m, collect));
            tokio::select! {
                biased;
                () = exchange => false,
                () = timer.as_mut() => true,
            }
        };
        if timed_out {
            // The connection was mid-request: dropping its link (with the future) ends it.
            m.error = Some(ErrorKind::Timeout);
        }
        self.timer = Some(timer);
        m.total = origin.elapsed();
        if m.arm.is_none() {
            m.arm = self.fallback_arm;
        }
        m
    }

    async fn exchange(
        &mut self,
        request: Request<RequestBody>,
        origin: Instant,
        expect: u16,
        m: &mut Measured,
        mut collect: Option<&mut Vec<u8>>,
    ) {
        let mut link = match self.ready_link().await {
            Ok(link) => link,
            Err(failure) => {
                m.error = Some(match failure {
                    ConnectFailure::Tcp | ConnectFailure::Http => ErrorKind::Connect,
                    ConnectFailure::Tls => ErrorKind::Tls,
                });
                return;
            }
        };
        let response = match link.sender.send_request(request).await {
            Ok(response) => response,
            Err(error) => {
                tracing::debug!(%error, "request failed before a response");
                m.error = Some(ErrorKind::Request);
                return;
            }
        };
        m.ttfb = Some(origin.elapsed());
        m.status = Some(response.status().as_u16());
        m.arm = response
            .headers()
            .get(&self.arm_header)
            .and_then(|v| parse_arm(v.as_bytes()));
        m.event_stream = response
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| is_event_stream(v.as_bytes()));
        let mut scanner = m.event_stream.then(|| SseScanner::new(&self.terminal));
        let mut body = response.into_body();
        let mut cut = false;
        loop {
            match body.frame().await {
                None => break,
                Some(Ok(frame)) => {
                    let Some(data) = frame.data_ref() else {
                        continue;
                    };
                    if data.is_empty() {
                        continue;
                    }
                    m.bytes += data.len() as u64;
                    if let Some(sink) = collect.as_deref_mut() {
                        let room = MAX_COLLECTED.saturating_sub(sink.len());
                        sink.extend_from_slice(&data[..data.len().min(room)]);
                    }
                    let first_value = match &mut scanner {
                        Some(s) => s.feed(data) > 0,
                        None => true,
                    };
                    if first_value && m.ttfv.is_none() {
                        m.ttfv = Some(origin.elapsed());
                    }
                }
                Some(Err(error)) => {
                    tracing::debug!(%error, "response body broke off");
                    cut = true;
                    break;
                }
            }
        }
        if let Some(s) = &scanner {
            m.events = s.events;
            m.terminal_seen = s.terminal_seen;
        }
        m.error = if m.status != Some(expect) {
            Some(ErrorKind::UnexpectedStatus)
        } else if cut {
            Some(ErrorKind::StreamCut)
        } else if m.event_stream && !self.terminal.is_empty() && !m.terminal_seen {
            Some(ErrorKind::Incomplete)
        } else {
            None
        };
        if !cut && link.is_open() {
            self.link = Some(link);
        }
    }

    /// The kept-alive connection if it can take a request, else a new one.
    async fn ready_link(&mut self) -> Result<Link, ConnectFailure> {
        if let Some(mut link) = self.link.take()
            && link.is_open()
            && (link.sender.is_ready() || link.sender.ready().await.is_ok())
        {
            return Ok(link);
        }
        let mut link = self.connector.connect().await?;
        link.sender
            .ready()
            .await
            .map_err(|_| ConnectFailure::Http)?;
        Ok(link)
    }
}

/// `canary` / `baseline` (any case) → the arm; anything else names no arm.
pub(crate) fn parse_arm(value: &[u8]) -> Option<ArmRole> {
    let value = value.trim_ascii();
    if value.eq_ignore_ascii_case(b"canary") {
        Some(ArmRole::Canary)
    } else if value.eq_ignore_ascii_case(b"baseline") {
        Some(ArmRole::Baseline)
    } else {
        None
    }
}

fn is_event_stream(content_type: &[u8]) -> bool {
    const SSE: &[u8] = b"text/event-stream";
    content_type.len() >= SSE.len() && content_type[..SSE.len()].eq_ignore_ascii_case(SSE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arms_and_content_types_are_recognised() {
        assert_eq!(parse_arm(b"canary"), Some(ArmRole::Canary));
        assert_eq!(parse_arm(b" Baseline "), Some(ArmRole::Baseline));
        assert_eq!(parse_arm(b"main"), None);
        assert!(is_event_stream(b"text/event-stream; charset=utf-8"));
        assert!(is_event_stream(b"Text/Event-Stream"));
        assert!(!is_event_stream(b"application/json"));
    }
}
