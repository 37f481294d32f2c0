//! Response bodies as the client receives them: upstream bodies streamed frame by frame —
//! never collected — under an idle timeout, with first-byte, duration and stream-outcome
//! accounting; or a short body the proxy wrote itself.

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::arm::Arm;
use crate::control::Control;
use crate::link::UpstreamBody;
use crate::metrics::StreamOutcome;

/// Error type of [`ResponseBody`].
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// The upstream sent nothing for longer than the idle timeout.
#[derive(Debug, thiserror::Error)]
#[error("the {arm} arm sent nothing for {idle:?} (idle timeout); the response was cut")]
pub struct IdleTimeout {
    /// The arm that went silent.
    pub arm: Arm,
    /// The idle timeout that elapsed.
    pub idle: Duration,
}

/// The body of every response the proxy sends.
pub struct ResponseBody {
    kind: Kind,
}

enum Kind {
    Upstream(Box<Observed>),
    Local(Option<Bytes>),
}

impl ResponseBody {
    /// A body the proxy wrote itself (errors, admin API).
    pub(crate) fn local(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        ResponseBody {
            kind: Kind::Local((!bytes.is_empty()).then_some(bytes)),
        }
    }

    /// An upstream body, observed on its way through.
    pub(crate) fn upstream(
        inner: UpstreamBody,
        arm: Arm,
        event_stream: bool,
        started: Instant,
        idle: Duration,
        control: Arc<Control>,
    ) -> Self {
        ResponseBody {
            kind: Kind::Upstream(Box::new(Observed {
                inner,
                arm,
                event_stream,
                started,
                idle,
                last_activity: Instant::now(),
                timer: None,
                first_byte_seen: false,
                finished: false,
                control,
            })),
        }
    }
}

struct Observed {
    /// Read off the upstream connection, which goes back to its pool when the body has ended.
    inner: UpstreamBody,
    arm: Arm,
    event_stream: bool,
    started: Instant,
    idle: Duration,
    last_activity: Instant,
    /// Armed lazily, only when the upstream makes us wait: most small bodies never need it.
    timer: Option<Pin<Box<Sleep>>>,
    first_byte_seen: bool,
    finished: bool,
    control: Arc<Control>,
}

impl Observed {
    fn finish(&mut self, outcome: StreamOutcome) {
        if self.finished {
            return;
        }
        self.finished = true;
        let metrics = &self.control.metrics;
        let elapsed = self.started.elapsed();
        if !self.first_byte_seen && outcome == StreamOutcome::Complete {
            metrics.observe_first_byte(self.arm, elapsed);
        }
        metrics.observe_duration(self.arm, elapsed);
        if self.event_stream {
            metrics.count_stream(self.arm, outcome);
        }
        match outcome {
            StreamOutcome::Complete => {}
            StreamOutcome::ClientClosed => tracing::debug!(
                arm = self.arm.as_str(),
                elapsed_ms = elapsed.as_millis() as u64,
                "client closed the response before it ended"
            ),
            StreamOutcome::UpstreamError | StreamOutcome::Timeout => tracing::warn!(
                arm = self.arm.as_str(),
                outcome = outcome.as_str(),
                elapsed_ms = elapsed.as_millis() as u64,
                event_stream = self.event_stream,
                "response cut short"
            ),
        }
    }

    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = self.last_activity + self.idle;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        timer.as_mut().poll(cx)
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        let outcome = if self.inner.is_end_stream() {
            StreamOutcome::Complete
        } else {
            StreamOutcome::ClientClosed
        };
        self.finish(outcome);
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match &mut this.kind {
            Kind::Local(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Upstream(observed) => {
                let observed = observed.as_mut();
                if observed.finished {
                    return Poll::Ready(None);
                }
                match Pin::new(&mut observed.inner).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        observed.last_activity = Instant::now();
                        if !observed.first_byte_seen
                            && frame.data_ref().is_some_and(|d| !d.is_empty())
                        {
                            observed.first_byte_seen = true;
                            let elapsed = observed.last_activity - observed.started;
                            observed
                                .control
                                .metrics
                                .observe_first_byte(observed.arm, elapsed);
                        }
                        Poll::Ready(Some(Ok(frame)))
                    }
                    Poll::Ready(Some(Err(err))) => {
                        observed.finish(StreamOutcome::UpstreamError);
                        Poll::Ready(Some(Err(Box::new(err))))
                    }
                    Poll::Ready(None) => {
                        observed.finish(StreamOutcome::Complete);
                        Poll::Ready(None)
                    }
                    Poll::Pending => {
                        ready!(observed.poll_idle(cx));
                        observed.finish(StreamOutcome::Timeout);
                        let err = IdleTimeout {
                            arm: observed.arm,
                            idle: observed.idle,
                        };
                        Poll::Ready(Some(Err(Box::new(err))))
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Local(bytes) => bytes.is_none(),
            Kind::Upstream(observed) => observed.finished || observed.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Local(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            Kind::Local(None) => SizeHint::with_exact(0),
            Kind::Upstream(observed) => observed.inner.size_hint(),
        }
    }
}
