//! One HTTP/1.1 connection to an arm's upstream, driven by the request that holds it.
//!
//! A request checks a [`Link`] out of its arm's pool, writes its head (and streams its body),
//! reads the response head, and hands the link to the [`UpstreamBody`], which reads the body
//! straight off the socket as the client takes it and returns the link to the pool at the end.
//! No task per connection and no channel sits between the socket and the client (the shape of
//! HAProxy's and nginx's loops): a request costs one task wake-up, not three.
//!
//! Framing follows RFC 9112 §6: no body for `HEAD`, 1xx, 204 and 304; `Transfer-Encoding`
//! ending in `chunked` is decoded (and wins over `Content-Length`, which is then dropped);
//! other transfer codings and bodies without a length run until the upstream closes, and such a
//! connection is never reused. Conflicting `Content-Length` values are a protocol error. A
//! chunked body's trailer fields become a trailers frame; a client's trailers end a chunked
//! request body.
//!
//! Each side is timed for what it owes: the client its request body (no silence longer than the
//! client-body timeout), the upstream its part (taking the request, and answering within the
//! response-head timeout once the request has gone out). An upstream waiting for a body the
//! client is slow to send is not late.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version, request, response};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::io::poll_read_buf;

use crate::config::Timeouts;
use crate::headers;
use crate::pool::ArmPool;

/// A response head larger than this is refused (HAProxy's default `tune.bufsize` is 16 KiB).
const MAX_HEAD: usize = 64 * 1024;
/// Header fields accepted in one response head.
const MAX_HEADERS: usize = 128;
/// A chunk-size line or trailer section longer than this is refused.
const MAX_LINE: usize = 8 * 1024;
/// Read buffer growth step: the first read of a response, and of a body.
const READ_STEP: usize = 8 * 1024;
/// A body whose reads keep filling the buffer is read in steps doubling up to this (hyper's
/// adaptive read strategy), so large downloads move in large frames.
const MAX_READ_STEP: usize = 256 * 1024;

/// What went wrong exchanging one request with the upstream.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ExchangeError {
    /// The connection failed (reset, broken pipe) while sending or receiving.
    #[error("{during}: {source}")]
    Io {
        during: &'static str,
        #[source]
        source: io::Error,
    },
    /// The upstream closed the connection before a complete response head.
    #[error("the connection closed after {received} bytes of the response head")]
    Closed { received: usize },
    /// The upstream answered with something that is not HTTP/1.x.
    #[error("{0}")]
    Protocol(String),
    /// The client's request body failed while it was being forwarded.
    #[error("reading the request body from the client: {0}")]
    RequestBody(String),
    /// The client sent nothing more of its request body for the client-body timeout.
    #[error(
        "the client sent nothing more of its request body for {} ms",
        .0.as_millis()
    )]
    ClientBodyTimeout(Duration),
    /// The request went out, and no response head came within the response-head timeout.
    #[error(
        "no response head within {} ms of the request being sent",
        .0.as_millis()
    )]
    HeadTimeout(Duration),
}

impl ExchangeError {
    /// Whether the upstream saw nothing of the request worth keeping, so a bodiless request can
    /// be sent again on a fresh connection: a kept-alive connection the upstream had closed.
    pub fn stale_connection(&self) -> bool {
        match self {
            ExchangeError::Closed { received } => *received == 0,
            ExchangeError::Io { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionAborted
            ),
            ExchangeError::Protocol(_)
            | ExchangeError::RequestBody(_)
            | ExchangeError::ClientBodyTimeout(_)
            | ExchangeError::HeadTimeout(_) => false,
        }
    }

    /// Whether a failure to send the body ends the exchange at once, without waiting for a
    /// response head: the client's failures, and an upstream that stopped taking the request
    /// (an answer it had sent would have been read meanwhile).
    fn ends_exchange(&self) -> bool {
        match self {
            ExchangeError::RequestBody(_) | ExchangeError::ClientBodyTimeout(_) => true,
            ExchangeError::Io { source, .. } => source.kind() == io::ErrorKind::TimedOut,
            _ => false,
        }
    }
}

/// A connection to one upstream, idle in a pool or held by one request.
pub(crate) struct Link {
    io: TcpStream,
    /// Bytes read but not yet consumed. Empty whenever the link is idle.
    buf: BytesMut,
    /// Whether it has carried a request before (only reused links are retried).
    reused: bool,
}

/// The request as it goes upstream: its head already encoded, its body (if any) to stream.
pub(crate) struct Outgoing {
    head: Vec<u8>,
    body: Option<Incoming>,
    framing: RequestFraming,
    method: Method,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum RequestFraming {
    /// No body, or a body the client framed with `Content-Length`: bytes pass as they are.
    AsIs,
    /// A body of unknown length: sent chunked.
    Chunked,
}

impl Outgoing {
    /// Encodes `parts` (already prepared for the upstream: origin-form URI, hop-by-hop headers
    /// removed) and keeps `body` to stream after the head.
    pub fn new(parts: &request::Parts, body: Incoming) -> Self {
        let body = (!body.is_end_stream()).then_some(body);
        let framing = if body.is_some() && !parts.headers.contains_key(header::CONTENT_LENGTH) {
            RequestFraming::Chunked
        } else {
            RequestFraming::AsIs
        };
        Outgoing {
            head: encode_head(parts, framing),
            body,
            framing,
            method: parts.method.clone(),
        }
    }

    /// Whether the request may be sent a second time: it has no body to replay and sending it
    /// twice means the same as once (RFC 9110 §9.2.2), as nginx's `proxy_next_upstream` assumes.
    pub fn replayable(&self) -> bool {
        self.body.is_none() && self.method.is_idempotent()
    }
}

/// The HTTP/1.1 request head for `parts`, with `Transfer-Encoding: chunked` when the body is
/// sent chunked.
fn encode_head(parts: &request::Parts, framing: RequestFraming) -> Vec<u8> {
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(parts.method.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(target.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    put_fields(&mut head, &parts.headers);
    if framing == RequestFraming::Chunked {
        head.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// Appends a `name: value` line for every field (a head's headers, a chunked body's trailers).
fn put_fields(out: &mut Vec<u8>, fields: &HeaderMap) {
    for (name, value) in fields {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// A parsed response head and how its body is framed.
pub(crate) struct ResponseHead {
    pub parts: response::Parts,
    framing: BodyFraming,
    keep_alive: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum BodyFraming {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

impl Link {
    pub fn new(io: TcpStream) -> Self {
        Link {
            io,
            buf: BytesMut::new(),
            reused: false,
        }
    }

    pub fn reused(&self) -> bool {
        self.reused
    }

    /// Whether an idle link can carry another request: the upstream has neither closed it nor
    /// sent anything unasked. Costs a system call only when the socket was seen readable.
    pub fn is_usable(&self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        match self.io.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => matches!(
                self.io.try_read(&mut [0u8; 1]),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock
            ),
        }
    }

    /// Sends `req` (its head, then its body as the client sends it) and reads the response head,
    /// under `timeouts` (`response_head` and `client_body`). A bodiless request is left intact,
    /// so it can be sent again on another connection.
    pub async fn exchange(
        &mut self,
        req: &mut Outgoing,
        timeouts: &Timeouts,
    ) -> Result<ResponseHead, ExchangeError> {
        let head_timeout = timeouts.response_head;
        write_upstream(
            &mut self.io,
            &req.head,
            head_timeout,
            "sending the request head",
        )
        .await?;
        let head = match req.body.as_mut() {
            None => timeout(
                head_timeout,
                read_head(&mut self.io, &mut self.buf, &req.method),
            )
            .await
            .map_err(|_| ExchangeError::HeadTimeout(head_timeout))??,
            Some(body) => {
                // The upstream may answer before it has read the whole body (a 413, a 401): the
                // body is sent while the head is awaited, and the answer wins, as in nginx.
                let (mut reader, mut writer) = self.io.split();
                let sending = send_body(&mut writer, body, req.framing, timeouts);
                let receiving = read_head(&mut reader, &mut self.buf, &req.method);
                tokio::pin!(sending, receiving);
                let mut sent = None;
                // The head is due once the body has gone out: until then the upstream may be
                // waiting for the client, which the client-body timeout bounds.
                let mut due = None;
                loop {
                    tokio::select! {
                        result = &mut sending, if sent.is_none() => match result {
                            Err(err) if err.ends_exchange() => return Err(err),
                            other => {
                                sent = Some(other);
                                due = Some(Instant::now() + head_timeout);
                            }
                        },
                        () = sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                            return Err(ExchangeError::HeadTimeout(head_timeout));
                        }
                        head = &mut receiving => match (head, sent) {
                            (Ok(head), Some(Ok(()))) => break head,
                            // Answered early: the rest of the body was never sent, so the
                            // connection cannot carry another request.
                            (Ok(mut head), _) => {
                                head.keep_alive = false;
                                break head;
                            }
                            // A failed send explains a failed read better than the read does.
                            (Err(_), Some(Err(send_err))) => return Err(send_err),
                            (Err(err), _) => return Err(err),
                        },
                    }
                }
            }
        };
        self.reused = true;
        Ok(head)
    }
}

/// Writes `bytes` to the upstream, which must take them within `within`: an upstream that
/// takes nothing for that long fails with `TimedOut` (it is late, as with a response head).
async fn write_upstream<W: AsyncWrite + Unpin>(
    io: &mut W,
    bytes: &[u8],
    within: Duration,
    during: &'static str,
) -> Result<(), ExchangeError> {
    let source = match timeout(within, io.write_all(bytes)).await {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(source)) => source,
        Err(_) => io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the upstream took none of it for {} ms", within.as_millis()),
        ),
    };
    Err(ExchangeError::Io { during, source })
}

/// Streams the client's request body to the upstream. A chunked body ends with the client's
/// trailer fields (minus those that must not be trailers); a `Content-Length` body has no place
/// for them, so they are dropped there. A client silent for longer than the client-body
/// timeout fails it with [`ExchangeError::ClientBodyTimeout`].
async fn send_body<W: AsyncWrite + Unpin>(
    io: &mut W,
    body: &mut Incoming,
    framing: RequestFraming,
    timeouts: &Timeouts,
) -> Result<(), ExchangeError> {
    const DURING: &str = "sending the request body";
    let within = timeouts.response_head;
    let mut trailers = HeaderMap::new();
    loop {
        let frame = match timeout(timeouts.client_body, body.frame()).await {
            Ok(Some(frame)) => frame.map_err(|e| ExchangeError::RequestBody(e.to_string()))?,
            Ok(None) => break,
            Err(_) => return Err(ExchangeError::ClientBodyTimeout(timeouts.client_body)),
        };
        let data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => {
                if let Ok(fields) = frame.into_trailers() {
                    for (name, value) in &fields {
                        if may_be_trailer(name) {
                            trailers.append(name.clone(), value.clone());
                        }
                    }
                }
                continue;
            }
        };
        if data.is_empty() {
            continue;
        }
        if framing == RequestFraming::Chunked {
            // One write per chunk (size line, data, CRLF), not three small packets.
            let mut chunk = Vec::with_capacity(data.len() + 20);
            chunk.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
            chunk.extend_from_slice(&data);
            chunk.extend_from_slice(b"\r\n");
            write_upstream(io, &chunk, within, DURING).await?;
        } else {
            write_upstream(io, &data, within, DURING).await?;
        }
    }
    if framing == RequestFraming::Chunked {
        let mut last = b"0\r\n".to_vec();
        put_fields(&mut last, &trailers);
        last.extend_from_slice(b"\r\n");
        write_upstream(io, &last, within, DURING).await?;
    }
    Ok(())
}

/// Reads until `buf` holds a complete response head, and parses it off the front of `buf`.
async fn read_head<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut BytesMut,
    method: &Method,
) -> Result<ResponseHead, ExchangeError> {
    loop {
        if !buf.is_empty()
            && let Some(head) = parse_head(buf, method)?
        {
            return Ok(head);
        }
        if buf.len() >= MAX_HEAD {
            return Err(ExchangeError::Protocol(format!(
                "response head over {} KiB",
                MAX_HEAD / 1024
            )));
        }
        buf.reserve(READ_STEP);
        let n = io.read_buf(buf).await.map_err(|source| ExchangeError::Io {
            during: "reading the response head",
            source,
        })?;
        if n == 0 {
            return Err(ExchangeError::Closed {
                received: buf.len(),
            });
        }
    }
}

/// Parses a complete response head off the front of `buf` (skipping 1xx interim responses),
/// or returns `None` when more bytes are needed.
fn parse_head(buf: &mut BytesMut, method: &Method) -> Result<Option<ResponseHead>, ExchangeError> {
    loop {
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut fields);
        let len = match parsed.parse(buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(err) => {
                return Err(ExchangeError::Protocol(format!(
                    "invalid response head: {err}"
                )));
            }
        };
        let code = parsed.code.unwrap_or(0);
        let status = StatusCode::from_u16(code)
            .map_err(|_| ExchangeError::Protocol(format!("invalid status code {code}")))?;
        if status.is_informational() {
            if status == StatusCode::SWITCHING_PROTOCOLS {
                return Err(ExchangeError::Protocol(
                    "the upstream switched protocols, which the proxy does not forward".into(),
                ));
            }
            buf.advance(len);
            continue;
        }
        let upstream_version = if parsed.version == Some(0) {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };
        // Field positions, so the values can share the head's bytes instead of copying them.
        let base = buf.as_ptr() as usize;
        let spans: Vec<(usize, usize, usize, usize)> = parsed
            .headers
            .iter()
            .map(|f| {
                let name = f.name.as_ptr() as usize - base;
                let value = f.value.as_ptr() as usize - base;
                (name, name + f.name.len(), value, value + f.value.len())
            })
            .collect();
        let head = buf.split_to(len).freeze();
        let mut headers = HeaderMap::with_capacity(spans.len());
        for (n0, n1, v0, v1) in spans {
            let name = HeaderName::from_bytes(&head[n0..n1])
                .map_err(|_| ExchangeError::Protocol("invalid header name".into()))?;
            let value = HeaderValue::from_maybe_shared(head.slice(v0..v1))
                .map_err(|_| ExchangeError::Protocol(format!("invalid value of header {name}")))?;
            headers.append(name, value);
        }
        let framing = body_framing(method, status, &mut headers)?;
        let keep_alive =
            framing != BodyFraming::UntilClose && keeps_alive(upstream_version, &headers);
        // The version is the client connection's business, not the upstream's.
        let mut parts = response::Response::new(()).into_parts().0;
        parts.status = status;
        parts.headers = headers;
        return Ok(Some(ResponseHead {
            parts,
            framing,
            keep_alive,
        }));
    }
}

/// RFC 9112 §6.3: how the body of this response is delimited.
fn body_framing(
    method: &Method,
    status: StatusCode,
    headers: &mut HeaderMap,
) -> Result<BodyFraming, ExchangeError> {
    if method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(BodyFraming::Empty);
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        // Transfer-Encoding overrides Content-Length, which must not be forwarded with it.
        headers.remove(header::CONTENT_LENGTH);
        let last = headers::tokens(headers, &header::TRANSFER_ENCODING)
            .filter(|coding| !coding.is_empty())
            .last();
        return Ok(match last {
            Some(coding) if coding.eq_ignore_ascii_case("chunked") => BodyFraming::Chunked,
            _ => BodyFraming::UntilClose,
        });
    }
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for item in value.to_str().unwrap_or("").split(',') {
            let item = item.trim();
            let parsed = (!item.is_empty() && item.bytes().all(|b| b.is_ascii_digit()))
                .then(|| item.parse::<u64>().ok())
                .flatten()
                .ok_or_else(|| {
                    ExchangeError::Protocol(format!("invalid Content-Length {item:?}"))
                })?;
            if length.is_some_and(|l| l != parsed) {
                return Err(ExchangeError::Protocol(
                    "conflicting Content-Length values".into(),
                ));
            }
            length = Some(parsed);
        }
    }
    Ok(length.map_or(BodyFraming::UntilClose, BodyFraming::Length))
}

/// Whether the upstream keeps the connection open after this response.
fn keeps_alive(version: Version, headers: &HeaderMap) -> bool {
    let has = |token: &str| {
        headers::tokens(headers, &header::CONNECTION).any(|t| t.eq_ignore_ascii_case(token))
    };
    if version == Version::HTTP_10 {
        has("keep-alive")
    } else {
        !has("close")
    }
}

/// A response body read straight off the upstream connection as the client takes it. The
/// connection goes back to its pool once the body has ended cleanly; dropped early, it closes.
pub(crate) struct UpstreamBody {
    link: Option<Link>,
    state: State,
    keep_alive: bool,
    pool: Arc<ArmPool>,
    /// Trailer fields of a chunked body, gathered until its end.
    trailers: HeaderMap,
    /// How much room the next read gets.
    read_step: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    /// `remaining` bytes to go.
    Length(u64),
    /// Chunked, in the given phase.
    Chunked(Chunked),
    /// Until the upstream closes.
    UntilClose,
    Done,
}

impl UpstreamBody {
    pub fn new(head: &ResponseHead, link: Link, pool: Arc<ArmPool>) -> Self {
        let state = match head.framing {
            BodyFraming::Empty | BodyFraming::Length(0) => State::Done,
            BodyFraming::Length(n) => State::Length(n),
            BodyFraming::Chunked => State::Chunked(Chunked::Size),
            BodyFraming::UntilClose => State::UntilClose,
        };
        let mut body = UpstreamBody {
            link: Some(link),
            state,
            keep_alive: head.keep_alive,
            pool,
            trailers: HeaderMap::new(),
            read_step: READ_STEP,
        };
        body.release_if_done();
        body
    }

    /// Gives the connection back once the body is complete (and the upstream keeps it alive).
    fn release_if_done(&mut self) {
        if self.state != State::Done {
            return;
        }
        if let Some(link) = self.link.take()
            && self.keep_alive
            && link.buf.is_empty()
        {
            self.pool.release(link);
        }
    }

    fn read_more(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Some(link) = self.link.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        if link.buf.capacity() - link.buf.len() < self.read_step {
            link.buf.reserve(self.read_step);
        }
        let room = link.buf.capacity() - link.buf.len();
        let read = poll_read_buf(Pin::new(&mut link.io), cx, &mut link.buf);
        if let Poll::Ready(Ok(n)) = read
            && n == room
        {
            self.read_step = (self.read_step * 2).min(MAX_READ_STEP);
        }
        read
    }

    /// The next piece of body data (or a chunked body's trailers), or `None` at its end.
    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        loop {
            if self.state == State::Done {
                self.release_if_done();
                return Poll::Ready(None);
            }
            let Some(link) = self.link.as_mut() else {
                return Poll::Ready(None);
            };
            if !link.buf.is_empty() {
                match take_buffered(&mut self.state, &mut link.buf, &mut self.trailers) {
                    Ok(Some(frame)) => {
                        self.release_if_done();
                        return Poll::Ready(Some(Ok(frame)));
                    }
                    // The buffer holds no whole piece, or the body just ended.
                    Ok(None) if self.state == State::Done => continue,
                    Ok(None) => {}
                    Err(msg) => {
                        self.link = None;
                        let err = io::Error::new(io::ErrorKind::InvalidData, msg);
                        return Poll::Ready(Some(Err(err)));
                    }
                }
            }
            match ready!(self.read_more(cx)) {
                Ok(0) if self.state == State::UntilClose => {
                    self.state = State::Done;
                    self.link = None;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    self.link = None;
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the upstream closed the connection before the end of the response body",
                    ))));
                }
                Ok(_) => {}
                Err(err) => {
                    self.link = None;
                    return Poll::Ready(Some(Err(err)));
                }
            }
        }
    }
}

/// Takes the next piece of a body in `state` off the front of `buf`: data, trailers at the end
/// of a chunked body, or `None` when `buf` holds no whole piece (or the body just ended).
fn take_buffered(
    state: &mut State,
    buf: &mut BytesMut,
    trailers: &mut HeaderMap,
) -> Result<Option<Frame<Bytes>>, String> {
    match *state {
        State::Done => Ok(None),
        State::Length(remaining) => {
            let take = usize::try_from(remaining)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            let left = remaining - take as u64;
            *state = if left == 0 {
                State::Done
            } else {
                State::Length(left)
            };
            Ok(Some(Frame::data(buf.split_to(take).freeze())))
        }
        State::UntilClose => Ok(Some(Frame::data(buf.split().freeze()))),
        State::Chunked(phase) => {
            let (next, frame) = decode_chunked(phase, buf, trailers)?;
            *state = next;
            Ok(frame)
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.get_mut().poll_data(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.state == State::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Done => SizeHint::with_exact(0),
            State::Length(n) => SizeHint::with_exact(n),
            State::Chunked(_) | State::UntilClose => SizeHint::default(),
        }
    }
}

/// Where a chunked body's decoder is (RFC 9112 §7.1).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Chunked {
    /// Expecting a chunk-size line.
    Size,
    /// Inside chunk data, this many bytes to go.
    Data(u64),
    /// Expecting the CRLF after chunk data.
    DataEnd,
    /// After the last chunk: trailer lines until an empty line.
    Trailers,
}

/// Decodes what it can of a chunked body from the front of `buf`: the next state and, when
/// chunk data was available, that data (or, at the end, the trailers gathered in `trailers`).
/// Returns the same state and no frame when `buf` holds too little to progress.
fn decode_chunked(
    phase: Chunked,
    buf: &mut BytesMut,
    trailers: &mut HeaderMap,
) -> Result<(State, Option<Frame<Bytes>>), String> {
    let mut phase = phase;
    loop {
        match phase {
            Chunked::Data(remaining) => {
                if buf.is_empty() {
                    return Ok((State::Chunked(phase), None));
                }
                let take = usize::try_from(remaining)
                    .unwrap_or(usize::MAX)
                    .min(buf.len());
                let data = buf.split_to(take).freeze();
                let left = remaining - take as u64;
                let next = if left == 0 {
                    Chunked::DataEnd
                } else {
                    Chunked::Data(left)
                };
                return Ok((State::Chunked(next), Some(Frame::data(data))));
            }
            Chunked::DataEnd => {
                if buf.len() < 2 {
                    return Ok((State::Chunked(phase), None));
                }
                if &buf[..2] != b"\r\n" {
                    return Err("chunked body: chunk data not followed by CRLF".into());
                }
                buf.advance(2);
                phase = Chunked::Size;
            }
            Chunked::Size => {
                let Some(line) = take_line(buf)? else {
                    return Ok((State::Chunked(phase), None));
                };
                let digits = line[..]
                    .split(|&b| b == b';')
                    .next()
                    .unwrap_or_default()
                    .trim_ascii();
                // 1 to 15 hex digits (from_str_radix alone would take a sign), so it fits.
                let size = std::str::from_utf8(digits)
                    .ok()
                    .filter(|hex| {
                        (1..=15).contains(&hex.len()) && hex.bytes().all(|b| b.is_ascii_hexdigit())
                    })
                    .and_then(|hex| u64::from_str_radix(hex, 16).ok());
                let Some(size) = size else {
                    // The line itself is the upstream's data: not echoed into logs.
                    return Err(format!(
                        "chunked body: invalid chunk-size line ({} bytes)",
                        line.len()
                    ));
                };
                phase = if size == 0 {
                    Chunked::Trailers
                } else {
                    Chunked::Data(size)
                };
            }
            Chunked::Trailers => {
                let Some(line) = take_line(buf)? else {
                    return Ok((State::Chunked(phase), None));
                };
                if line.is_empty() {
                    let frame =
                        (!trailers.is_empty()).then(|| Frame::trailers(std::mem::take(trailers)));
                    return Ok((State::Done, frame));
                }
                if trailers.len() >= MAX_HEADERS {
                    return Err(format!("chunked body: over {MAX_HEADERS} trailer fields"));
                }
                add_trailer(trailers, &line);
            }
        }
    }
}

/// Keeps one `name: value` trailer line, unless it is malformed or a field that must not be
/// sent as a trailer (framing, routing, hop-by-hop: RFC 9110 §6.5.1).
fn add_trailer(trailers: &mut HeaderMap, line: &[u8]) {
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return;
    };
    let (Ok(name), Ok(value)) = (
        HeaderName::from_bytes(line[..colon].trim_ascii()),
        HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
    ) else {
        return;
    };
    if may_be_trailer(&name) {
        trailers.append(name, value);
    }
}

/// Whether a field may travel as a trailer: not framing, routing or connection control
/// (RFC 9110 §6.5.1).
fn may_be_trailer(name: &HeaderName) -> bool {
    ![
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::HOST,
        header::CONNECTION,
        header::TE,
        header::TRAILER,
    ]
    .contains(name)
}

/// Takes one CRLF-terminated line (without the CRLF) off the front of `buf`.
fn take_line(buf: &mut BytesMut) -> Result<Option<BytesMut>, String> {
    match buf.iter().position(|&b| b == b'\n') {
        Some(end) => {
            let mut line = buf.split_to(end + 1);
            line.truncate(end);
            if line.last() == Some(&b'\r') {
                line.truncate(end - 1);
            }
            Ok(Some(line))
        }
        None if buf.len() > MAX_LINE => {
            Err(format!("chunked body: a line over {} KiB", MAX_LINE / 1024))
        }
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What decoding a chunked body produced.
    struct Decoded {
        data: Vec<u8>,
        trailers: Option<HeaderMap>,
        done: bool,
        left: usize,
    }

    /// Decodes `wire` fed in pieces of `step` bytes.
    fn decode_in_steps(wire: &[u8], step: usize) -> Result<Decoded, String> {
        let mut buf = BytesMut::new();
        let mut state = State::Chunked(Chunked::Size);
        let mut gathered = HeaderMap::new();
        let mut out = Decoded {
            data: Vec::new(),
            trailers: None,
            done: false,
            left: 0,
        };
        for piece in wire.chunks(step) {
            buf.extend_from_slice(piece);
            while let State::Chunked(phase) = state {
                let (next, frame) = decode_chunked(phase, &mut buf, &mut gathered)?;
                let stuck = next == state && frame.is_none();
                state = next;
                match frame.map(Frame::into_data) {
                    Some(Ok(data)) => out.data.extend_from_slice(&data),
                    Some(Err(frame)) => out.trailers = frame.into_trailers().ok(),
                    None => {}
                }
                if stuck {
                    break;
                }
            }
        }
        out.done = state == State::Done;
        out.left = buf.len();
        Ok(out)
    }

    #[test]
    fn chunked_bodies_decode_however_the_bytes_arrive() {
        let wire = b"5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-checksum: abc\r\ncontent-length: 9\r\nbad line\r\n\r\nNEXT";
        for step in 1..=wire.len() {
            let decoded = decode_in_steps(wire, step).unwrap();
            assert_eq!(
                decoded.data, b"helloabcdefghijklmnopqrstuvwxyz",
                "step {step}"
            );
            assert!(decoded.done, "step {step}");
            // Trailers pass, except fields that must not be trailers and malformed lines.
            let trailers = decoded.trailers.expect("trailers");
            assert_eq!(trailers.len(), 1, "step {step}: {trailers:?}");
            assert_eq!(trailers["x-checksum"], "abc");
            // Bytes after the body stay in the buffer (they make the connection unusable).
            assert_eq!(decoded.left, "NEXT".len(), "step {step}");
        }
        let plain = decode_in_steps(b"2\r\nok\r\n0\r\n\r\n", 3).unwrap();
        assert!(plain.done && plain.trailers.is_none());
    }

    #[test]
    fn malformed_chunked_bodies_are_refused() {
        for wire in [
            &b"zz\r\nhello\r\n0\r\n\r\n"[..],
            b"+5\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"\r\n",
            b"10000000000000000\r\n",
        ] {
            assert!(decode_in_steps(wire, wire.len()).is_err(), "{wire:?}");
        }
        let long = vec![b'1'; MAX_LINE + 10];
        assert!(decode_in_steps(&long, long.len()).is_err());
    }

    fn head(text: &str, method: Method) -> Result<Option<ResponseHead>, ExchangeError> {
        parse_head(&mut BytesMut::from(text.as_bytes()), &method)
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        use BodyFraming::{Chunked, Empty, Length, UntilClose};
        // (response head, request method, framing, connection kept)
        #[rustfmt::skip]
        let cases = [
            ("HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n", Method::GET, Length(7), true),
            ("HTTP/1.1 200 OK\r\ncontent-length: 7, 7\r\n\r\n", Method::GET, Length(7), true),
            ("HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n", Method::HEAD, Empty, true),
            ("HTTP/1.1 204 No Content\r\n\r\n", Method::GET, Empty, true),
            ("HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n", Method::GET, Empty, true),
            ("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n", Method::GET, Chunked, true),
            ("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n", Method::GET, UntilClose, false),
            ("HTTP/1.1 200 OK\r\n\r\n", Method::GET, UntilClose, false),
            ("HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\n", Method::GET, Length(1), false),
            ("HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n", Method::GET, Length(1), false),
            ("HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 1\r\n\r\n", Method::GET, Length(1), true),
            ("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n", Method::POST, Length(2), true),
        ];
        for (text, method, framing, keep_alive) in cases {
            let parsed = head(text, method).unwrap().unwrap();
            assert_eq!(parsed.framing, framing, "{text:?}");
            assert_eq!(parsed.keep_alive, keep_alive, "{text:?}");
        }
        let chunked = head(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n",
            Method::GET,
        )
        .unwrap()
        .unwrap();
        assert!(!chunked.parts.headers.contains_key(header::CONTENT_LENGTH));
    }

    #[test]
    fn bad_or_partial_heads_are_told_apart() {
        assert!(
            head("HTTP/1.1 200 OK\r\ncontent-le", Method::GET)
                .unwrap()
                .is_none()
        );
        for text in [
            "SSH-2.0-OpenSSH_9.2\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 7, 8\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n",
        ] {
            assert!(
                matches!(head(text, Method::GET), Err(ExchangeError::Protocol(_))),
                "{text:?}"
            );
        }
    }

    #[test]
    fn request_heads_are_encoded_with_their_framing() {
        let parts = http::Request::post("/api?q=1")
            .header("host", "relay")
            .header("x-forwarded-for", "127.0.0.1")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        assert_eq!(
            String::from_utf8(encode_head(&parts, RequestFraming::AsIs)).unwrap(),
            "POST /api?q=1 HTTP/1.1\r\nhost: relay\r\nx-forwarded-for: 127.0.0.1\r\n\r\n"
        );
        assert!(
            String::from_utf8(encode_head(&parts, RequestFraming::Chunked))
                .unwrap()
                .ends_with("x-forwarded-for: 127.0.0.1\r\ntransfer-encoding: chunked\r\n\r\n")
        );
    }
}
