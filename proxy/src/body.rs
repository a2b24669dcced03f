//! The one body type that flows through the proxy, in both directions.
//!
//! Small bodies are `Full`; an HTTP/2 stream is hyper's `Incoming`; an HTTP/1 body is read
//! straight from the connection that carries it (the client's, for a request body, or the
//! server's, for a response body) by whoever consumes the body, with no task or channel
//! in between. When an HTTP/1 body ends, its connection goes back to its owner: the
//! client connection to its connection task, the server connection to its pool.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::io::AsyncWrite;
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};

use crate::error::{ErrorKind, ProxyError, Side};
use crate::http1::decode::{DecodeError, Decoded, Decoder};
use crate::io::poll_read_buf;
use crate::server::h1::{ClientConn, Returned};
use crate::upstream::pool::{Pool, UpConn};

/// A request or response body.
pub struct Body(Kind);

enum Kind {
    Empty,
    Full(Option<Bytes>),
    Incoming(hyper::body::Incoming, Side),
    H1(Box<H1Body>),
    /// A request body on an HTTP/2 stream served by rampart's own HTTP/2 server.
    H2(Box<H2Recv>),
    /// A server's body compressed on its way (`compression`).
    Compressed(Box<crate::compress::Compressed>),
}

/// An HTTP/2 stream's data, handing flow-control credit back as it is consumed.
pub(crate) struct H2Recv {
    stream: h2::RecvStream,
    data_done: bool,
    paced: Option<Paced>,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Body {
    pub fn empty() -> Self {
        Body(Kind::Empty)
    }

    /// `inner` compressed by `enc` as it streams, counted in `counters`.
    pub(crate) fn compressed(
        inner: Body,
        enc: crate::compress::Encoder,
        counters: [Arc<crate::compress::Counters>; 2],
    ) -> Self {
        Body(Kind::Compressed(Box::new(crate::compress::Compressed {
            inner,
            enc: Some(enc),
            trailers: None,
            counters,
        })))
    }

    pub fn full(b: impl Into<Bytes>) -> Self {
        let b = b.into();
        if b.is_empty() {
            Body(Kind::Empty)
        } else {
            Body(Kind::Full(Some(b)))
        }
    }

    /// An HTTP/2 body; `side` says whose stream it is, for errors.
    pub fn incoming(b: hyper::body::Incoming, side: Side) -> Self {
        Body(Kind::Incoming(b, side))
    }

    pub(crate) fn h1(b: H1Body) -> Self {
        Body(Kind::H1(Box::new(b)))
    }

    /// A request body read from an HTTP/2 stream.
    /// A request body on an HTTP/2 stream, which must keep `pace`.
    pub(crate) fn h2(stream: h2::RecvStream, pace: Option<Pace>) -> Self {
        if stream.is_end_stream() {
            return Body::empty();
        }
        Body(Kind::H2(Box::new(H2Recv {
            stream,
            data_done: false,
            paced: pace.map(Paced::new),
            sleep: None,
        })))
    }

    /// The whole body when it is already in memory (empty or full), so it can be resent.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match &self.0 {
            Kind::Empty => Some(&[]),
            Kind::Full(b) => Some(b.as_deref().unwrap_or(&[])),
            _ => None,
        }
    }

    /// A copy of the body when it is in memory (sharing its bytes), for a request sent
    /// again.
    pub fn try_clone(&self) -> Option<Body> {
        match &self.0 {
            Kind::Empty => Some(Body::empty()),
            Kind::Full(b) => Some(Body(Kind::Full(b.clone()))),
            _ => None,
        }
    }

    /// Moves the bytes out when the body is in memory.
    pub fn take_bytes(&mut self) -> Option<Bytes> {
        match &mut self.0 {
            Kind::Empty => Some(Bytes::new()),
            Kind::Full(b) => Some(b.take().unwrap_or_default()),
            _ => None,
        }
    }
}

impl Default for Body {
    fn default() -> Self {
        Body::empty()
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Kind::Empty => f.write_str("Body::Empty"),
            Kind::Full(b) => write!(f, "Body::Full({})", b.as_ref().map_or(0, Bytes::len)),
            Kind::Incoming(..) => f.write_str("Body::Incoming"),
            Kind::H1(_) => f.write_str("Body::H1"),
            Kind::Compressed(_) => f.write_str("Body::Compressed"),
            Kind::H2(_) => f.write_str("Body::H2"),
        }
    }
}

fn hyper_error(e: hyper::Error, side: Side) -> ProxyError {
    let kind = if side == Side::Client {
        ErrorKind::ClientAbort
    } else {
        ErrorKind::BadResponse
    };
    ProxyError::on(side, kind, e.to_string())
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = ProxyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ProxyError>>> {
        let mut polled = match &mut self.get_mut().0 {
            Kind::Empty => return Poll::Ready(None),
            Kind::Full(b) => return Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Kind::Incoming(b, side) => {
                let side = *side;
                Pin::new(b)
                    .poll_frame(cx)
                    .map(|o| o.map(|r| r.map_err(|e| hyper_error(e, side))))
            }
            Kind::H1(b) => b.poll_frame(cx),
            Kind::H2(b) => b.poll_frame(cx),
            Kind::Compressed(c) => return poll_compressed(c, cx),
        };
        if let Poll::Ready(Some(Ok(frame))) = &mut polled
            && let Some(t) = frame.trailers_mut()
        {
            crate::http1::drop_forbidden_trailers(t);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Empty => true,
            Kind::Full(b) => b.is_none(),
            Kind::Incoming(b, _) => b.is_end_stream(),
            Kind::H1(b) => b.decoder.is_done(),
            Kind::H2(b) => b.stream.is_end_stream(),
            Kind::Compressed(c) => c.enc.is_none() && c.trailers.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Incoming(b, _) => b.size_hint(),
            Kind::H1(b) => match b.decoder.remaining() {
                Some(n) => SizeHint::with_exact(n),
                None => SizeHint::default(),
            },
            Kind::H2(_) | Kind::Compressed(_) => SizeHint::default(),
        }
    }
}

/// The next frame of a compressed body: compressed data as the encoder has it ready, the
/// rest when the server's body ends, then its trailers.
fn poll_compressed(c: &mut crate::compress::Compressed, cx: &mut Context<'_>) -> PollFrame {
    let fail = |e: std::io::Error| {
        ProxyError::on(
            Side::Server,
            ErrorKind::BadResponse,
            format!("compression: {e}"),
        )
    };
    loop {
        if c.enc.is_none() {
            return Poll::Ready(c.trailers.take().map(|t| Ok(Frame::trailers(t))));
        }
        match std::task::ready!(http_body::Body::poll_frame(Pin::new(&mut c.inner), cx)) {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(d) => {
                    let d: Bytes = d;
                    let Some(enc) = c.enc.as_mut() else { continue };
                    let out = enc.feed(&d).map_err(fail)?;
                    c.count(d.len(), out.len());
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                    }
                    continue;
                }
                Err(frame) => {
                    if let Ok(t) = frame.into_trailers() {
                        c.trailers = Some(t);
                    }
                }
            },
            Some(Err(e)) => return Poll::Ready(Some(Err(e))),
            None => {}
        }
        // The server's body ended (or sent its trailers): the encoder's last bytes.
        let Some(enc) = c.enc.take() else { continue };
        let rest = enc.finish().map_err(fail)?;
        c.count(0, rest.len());
        if !rest.is_empty() {
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from(rest)))));
        }
    }
}

type PollFrame = Poll<Option<Result<Frame<Bytes>, ProxyError>>>;

impl H2Recv {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> PollFrame {
        let err =
            |e: h2::Error| ProxyError::on(Side::Client, ErrorKind::ClientAbort, e.to_string());
        if !self.data_done {
            let polled = self.stream.poll_data(cx);
            if polled.is_pending()
                && let Some(p) = &mut self.paced
            {
                ready!(armed(&mut self.sleep, p.deadline()).poll(cx));
                return Poll::Ready(Some(Err(ProxyError::on(
                    Side::Client,
                    ErrorKind::ClientTimeout,
                    "the request body came too slowly",
                ))));
            }
            match ready!(polled) {
                Some(Ok(b)) => {
                    if let Some(p) = &mut self.paced {
                        p.got(b.len());
                    }
                    // Give the client credit for what has been taken.
                    let _ = self.stream.flow_control().release_capacity(b.len());
                    return Poll::Ready(Some(Ok(Frame::data(b))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(err(e)))),
                None => self.data_done = true,
            }
        }
        match ready!(self.stream.poll_trailers(cx)) {
            Ok(Some(t)) => Poll::Ready(Some(Ok(Frame::trailers(t)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(err(e)))),
        }
    }
}

/// The timer in `slot`, created or moved to fire at `deadline`.
fn armed(slot: &mut Option<Pin<Box<Sleep>>>, deadline: Instant) -> Pin<&mut Sleep> {
    let sleep = slot.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
    if sleep.deadline() != deadline {
        sleep.as_mut().reset(deadline);
    }
    sleep.as_mut()
}

/// Where an HTTP/1 body is read from.
pub(crate) enum Source {
    /// A request body on a client connection; the connection goes back through `ret`.
    Client {
        conn: Option<Box<ClientConn>>,
        ret: Option<oneshot::Sender<Returned>>,
        /// `100 Continue` still has to be sent before reading.
        send_continue: bool,
        continue_written: usize,
    },
    /// A response body on a server connection; the connection goes back to `pool` when
    /// the body ends cleanly and the server allows reuse.
    Server {
        conn: Option<UpConn>,
        pool: Arc<Pool>,
        reusable: bool,
    },
}

/// The pace a request body must keep, as Apache's `RequestReadTimeout body=20,MinRate=500`:
/// `allowance` for the body, and one second more for each `rate` bytes received (with
/// `rate` 0, the body must be complete within `allowance`). A client that trickles its
/// body a few bytes at a time holds its connection no longer than that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    pub allowance: Duration,
    pub rate: u64,
}

/// A pace being kept. Only the time spent waiting for the client counts: while the
/// server is slow to take the body, the client is held back and not to blame. The same
/// holds for a response: only the time the proxy waits for the client to take it counts,
/// and only what the client takes during those waits earns it more time (what a socket
/// buffer takes at once says nothing of the client).
pub(crate) struct Paced {
    pace: Pace,
    received: u64,
    waited: Duration,
    waiting_since: Option<Instant>,
}

impl Paced {
    pub(crate) fn new(pace: Pace) -> Self {
        Paced {
            pace,
            received: 0,
            waited: Duration::ZERO,
            waiting_since: None,
        }
    }

    /// Data arrived (or was taken): the wait (if any) ends.
    pub(crate) fn got(&mut self, n: usize) {
        self.received += n as u64;
        if let Some(since) = self.waiting_since.take() {
            self.waited += since.elapsed();
        }
    }

    /// Waiting for the client from now (or since the wait began): when it is late.
    pub(crate) fn deadline(&mut self) -> Instant {
        let since = *self.waiting_since.get_or_insert_with(Instant::now);
        let earned = match self.pace.rate {
            0 => Duration::ZERO,
            r => Duration::from_secs_f64(self.received as f64 / r as f64),
        };
        since + (self.pace.allowance + earned).saturating_sub(self.waited)
    }
}

/// An HTTP/1 body being read from its connection.
pub(crate) struct H1Body {
    decoder: Decoder,
    source: Source,
    /// Inactivity allowed between reads.
    idle: Duration,
    deadline: Instant,
    sleep: Option<Pin<Box<Sleep>>>,
    paced: Option<Paced>,
}

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

impl H1Body {
    pub(crate) fn new(decoder: Decoder, source: Source, idle: Duration) -> Self {
        Self {
            decoder,
            source,
            idle,
            deadline: Instant::now() + idle,
            sleep: None,
            paced: None,
        }
    }

    /// The body must keep `pace` (request bodies).
    pub(crate) fn paced(mut self, pace: Option<Pace>) -> Self {
        self.paced = pace.map(Paced::new);
        self
    }

    fn side(&self) -> Side {
        match self.source {
            Source::Client { .. } => Side::Client,
            Source::Server { .. } => Side::Server,
        }
    }

    /// Gives the connection back; `clean` when the body was read to its end.
    fn release(&mut self, clean: bool) {
        let remaining = self.decoder.remaining();
        self.release_with(clean, remaining);
    }

    /// [`Self::release`], telling how much of the body is left to drain (`None`: the
    /// connection cannot be used again).
    fn release_with(&mut self, clean: bool, remaining: Option<u64>) {
        match &mut self.source {
            Source::Client { conn, ret, .. } => {
                if let (Some(conn), Some(ret)) = (conn.take(), ret.take()) {
                    let _ = ret.send(Returned {
                        conn,
                        complete: clean,
                        remaining,
                    });
                }
            }
            Source::Server {
                conn,
                pool,
                reusable,
            } => {
                if let Some(c) = conn.take()
                    && clean
                    && *reusable
                    && c.rbuf.is_empty()
                {
                    pool.put(c);
                }
            }
        }
    }

    fn fail(
        &mut self,
        kind: ErrorKind,
        detail: impl Into<String>,
    ) -> Poll<Option<Result<Frame<Bytes>, ProxyError>>> {
        let side = self.side();
        // A body that failed is not drained: the connection closes after the answer.
        self.release_with(false, None);
        Poll::Ready(Some(Err(ProxyError::on(side, kind, detail))))
    }

    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ProxyError>>> {
        if let Some(p) = self.poll_continue(cx) {
            return p;
        }
        loop {
            let Some((rbuf, io)) = conn_parts(&mut self.source) else {
                return Poll::Ready(None);
            };
            let read = match self.decoder.decode(rbuf) {
                Ok(Decoded::Data(b)) => {
                    self.deadline = Instant::now() + self.idle;
                    if let Some(p) = &mut self.paced {
                        p.got(b.len());
                    }
                    if self.decoder.is_done() {
                        // Give the connection back before the last bytes are even used.
                        self.release(true);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(b))));
                }
                Ok(Decoded::Trailers(t)) => {
                    self.release(true);
                    return Poll::Ready(Some(Ok(Frame::trailers(t))));
                }
                Ok(Decoded::Done) => {
                    self.release(true);
                    return Poll::Ready(None);
                }
                Err(DecodeError::TooLarge) => {
                    return self.fail(
                        ErrorKind::PayloadTooLarge,
                        "request body larger than allowed",
                    );
                }
                Err(e) => {
                    let kind = self.by_side(ErrorKind::BadRequest, ErrorKind::BadResponse);
                    return self.fail(kind, e.to_string());
                }
                Ok(Decoded::NeedMore) => poll_read_buf(io, cx, rbuf),
            };
            match read {
                Poll::Ready(Ok(0)) => {
                    if self.decoder.on_eof() {
                        self.release(false);
                        return Poll::Ready(None);
                    }
                    let kind = self.by_side(ErrorKind::ClientAbort, ErrorKind::BadResponse);
                    return self.fail(kind, "connection closed before the end of the body");
                }
                Poll::Ready(Ok(_)) => {
                    self.deadline = Instant::now() + self.idle;
                    if let Some(p) = &mut self.paced {
                        p.got(0);
                    }
                }
                Poll::Ready(Err(e)) => {
                    let kind = self.by_side(ErrorKind::ClientAbort, ErrorKind::BadResponse);
                    return self.fail(kind, e.to_string());
                }
                Poll::Pending => {
                    // Arm (or move) the inactivity timer, or the pace's if sooner.
                    let paced = self.paced.as_mut().map(Paced::deadline);
                    let deadline = paced.map_or(self.deadline, |p| p.min(self.deadline));
                    ready!(armed(&mut self.sleep, deadline).poll(cx));
                    let kind = self.by_side(ErrorKind::ClientTimeout, ErrorKind::ResponseTimeout);
                    if paced.is_some_and(|p| p < self.deadline) {
                        return self.fail(kind, "the request body came too slowly");
                    }
                    return self.fail(kind, "timed out reading the body");
                }
            }
        }
    }

    fn by_side(&self, client: ErrorKind, server: ErrorKind) -> ErrorKind {
        if self.side() == Side::Client {
            client
        } else {
            server
        }
    }

    /// Sends `100 Continue` once, when the body is first wanted and the client is waiting.
    fn poll_continue(&mut self, cx: &mut Context<'_>) -> Option<PollFrame> {
        let Source::Client {
            conn: Some(conn),
            send_continue,
            continue_written,
            ..
        } = &mut self.source
        else {
            return None;
        };
        if !conn.rbuf.is_empty() {
            *send_continue = false;
        }
        while *send_continue {
            match Pin::new(&mut conn.io).poll_write(cx, &CONTINUE[*continue_written..]) {
                Poll::Ready(Ok(n)) if n > 0 => {
                    *continue_written += n;
                    *send_continue = *continue_written < CONTINUE.len();
                }
                Poll::Ready(_) => {
                    return Some(
                        self.fail(ErrorKind::ClientAbort, "client closed before 100 Continue"),
                    );
                }
                Poll::Pending => return Some(Poll::Pending),
            }
        }
        None
    }
}

impl Drop for H1Body {
    fn drop(&mut self) {
        // A body dropped before its end leaves its connection unusable for another message
        // (client connections still go back, so the response can be written and the
        // connection closed).
        let done = self.decoder.is_done();
        self.release(done);
    }
}

fn conn_parts(
    source: &mut Source,
) -> Option<(
    &mut bytes::BytesMut,
    &mut (dyn tokio::io::AsyncRead + Unpin + Send),
)> {
    match source {
        Source::Client { conn: Some(c), .. } => {
            let c = &mut **c;
            Some((&mut c.rbuf, &mut c.io))
        }
        Source::Server { conn: Some(c), .. } => Some((&mut c.rbuf, &mut c.io)),
        _ => None,
    }
}
