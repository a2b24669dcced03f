//! An HTTP/1.1 client connection: read a request head, hand the request to the handler,
//! write the response, repeat while keep-alive allows.
//!
//! The connection owns its socket and read buffer. A request body is read by whoever
//! consumes the request (usually the upstream writer), which borrows the connection and
//! gives it back when the body ends or is dropped. While idle between requests the
//! connection holds no buffer at all, so idle keep-alive clients cost little memory.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, HOST, HeaderValue, TRANSFER_ENCODING};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body as _;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::WriteAbort;
use tower::{Service, ServiceExt};

use crate::body::{Body, H1Body, Pace, Paced, Source};
use crate::error::Termination;
use crate::handler::{ConnCtx, Done, service};
use crate::http1::Framing;
use crate::http1::decode::Decoder;
use crate::http1::encode::{write_chunk_size, write_last_chunk, write_response_head};
use crate::http1::parse::{RequestHead, parse_request};
use crate::io::{ClientIo, Park as _, read_buf};
use crate::path::future::box_in_place;
use crate::upstream::h1::{Reason, UpgradedConn};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

/// A client connection and what has been read from it.
pub struct ClientConn {
    pub io: ClientIo,
    pub rbuf: BytesMut,
    /// No request has been read from it yet: the first is due within `http_request` of
    /// the accept, and may be the HTTP/2 preface. (Here rather than in the connection's
    /// task, whose size every idle connection pays; the box has room for it.)
    first: bool,
    /// The idle wait's timer stands at [`PARK_AFTER`], for the connection to be set
    /// aside (or, if it cannot be, to let its TLS keys go), rather than at the
    /// keep-alive timeout.
    park_due: bool,
}

/// How long a keep-alive connection waits idle in its task before it is set aside in its
/// worker's lot until its next request ([`super::lot`]), or, when it cannot be, lets its
/// TLS keys go (see [`crate::tls::records`]): long enough that a client sending request
/// after request never pays for either.
pub const PARK_AFTER: Duration = Duration::from_secs(1);

impl ClientConn {
    pub fn new(io: ClientIo, rbuf: BytesMut) -> Self {
        ClientConn {
            io,
            rbuf,
            first: true,
            park_due: false,
        }
    }

    /// A kept connection taken back from its worker's lot, before its next request.
    pub(crate) fn resumed(io: ClientIo) -> Self {
        ClientConn {
            io,
            rbuf: BytesMut::new(),
            first: false,
            park_due: false,
        }
    }

    /// Whether the connection is between requests with nothing read, and over TLS the
    /// stream protects the records itself: all of it but its socket (and its keys) can
    /// go.
    pub(crate) fn parks_whole(&self) -> bool {
        !self.first
            && self.rbuf.is_empty()
            && match &self.io {
                ClientIo::Plain(_) => true,
                ClientIo::Tls(s) => s.parks(),
            }
    }

    pub(crate) fn into_io(self) -> ClientIo {
        self.io
    }
}

/// A client connection coming back from a request body.
pub struct Returned {
    pub conn: Box<ClientConn>,
    /// The body was read to its end.
    pub complete: bool,
    /// Bytes of a `Content-Length` body not read yet.
    pub remaining: Option<u64>,
}

/// A read head, and when its first bytes arrived if it took more than one read.
// Returned by value on the stack: boxing the head would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
enum Head {
    Request(RequestHead, Option<Instant>),
    /// The client went away, stayed idle too long, or the proxy is stopping.
    Closed,
    Refused(StatusCode, Termination, Option<Instant>),
}

/// Unread request bodies up to this size are drained so the connection can be kept.
const MAX_DRAIN: u64 = 256 * 1024;
/// Responses up to this size are written with their head in one write.
const COALESCE: usize = 16 * 1024;

async fn read_head(conn: &mut ClientConn, cx: &ConnCtx, first: bool) -> Head {
    let accepted = cx.accepted;
    // The clock is read only when a head is incomplete or a wait begins: a head that
    // arrives in one read counts as taking no time to receive.
    let mut started = if first { Some(accepted) } else { None };
    let mut deadline = if first {
        Some(accepted + cx.frontend.timeouts.http_request)
    } else {
        None
    };
    loop {
        if !conn.rbuf.is_empty() {
            match parse_request(&mut conn.rbuf, &cx.frontend.head_limits) {
                Ok(Some(h)) => return Head::Request(h, started),
                Ok(None) => {}
                Err(e) => return Head::Refused(e.status(), Termination::REFUSED, started),
            }
            if started.is_none() {
                let now = Instant::now();
                started = Some(now);
                deadline = Some(now + cx.frontend.timeouts.http_request);
            }
        } else if conn.rbuf.capacity() > 0 {
            // Idle: keep no buffer.
            crate::io::give_buf(std::mem::take(&mut conn.rbuf));
        }
        let idle = conn.rbuf.is_empty();
        let until =
            *deadline.get_or_insert_with(|| Instant::now() + cx.frontend.timeouts.keep_alive);
        match wait_read(conn, cx, idle, until).await {
            Wait::Read => {}
            Wait::Timeout if idle => return Head::Closed,
            Wait::Timeout => {
                let term = Termination::CLIENT_TIMEOUT_REQUEST;
                return Head::Refused(StatusCode::REQUEST_TIMEOUT, term, started);
            }
            Wait::Closed => return Head::Closed,
        }
    }
}

/// How a wait for request bytes ended.
enum Wait {
    /// Bytes were read into the buffer.
    Read,
    /// The deadline passed.
    Timeout,
    /// The client closed or failed, or the frontend is stopping and the connection idle.
    Closed,
}

/// Reads more of a request head, until `until`.
async fn wait_read(conn: &mut ClientConn, cx: &ConnCtx, idle: bool, until: Instant) -> Wait {
    let sleep = tokio::time::sleep_until(until);
    let mut sleep = std::pin::pin!(sleep);
    let w = std::future::poll_fn(|task| poll_wait(conn, cx, idle, sleep.as_mut(), task)).await;
    if idle {
        cx.session.end_idle();
    }
    w
}

/// One poll of a wait for request bytes, until `timer`. This is where an idle keep-alive
/// connection waits: it holds no buffer until the socket is readable. Stopping closes an
/// idle connection at once (the stop wakes it through its session); a reload lets the
/// client send its next request and closes after that response, so no request races the
/// close.
fn poll_wait(
    conn: &mut ClientConn,
    cx: &ConnCtx,
    idle: bool,
    timer: Pin<&mut tokio::time::Sleep>,
    task: &mut Context<'_>,
) -> Poll<Wait> {
    if idle
        && (cx.session.poll_idle(task)
            || *cx.frontend.retire.borrow() == crate::snapshot::Retire::Stopping)
    {
        return Poll::Ready(Wait::Closed);
    }
    let readable = if idle {
        conn.io.poll_readable(task)
    } else {
        Poll::Ready(Ok(()))
    };
    let read = match readable {
        Poll::Ready(Ok(())) => crate::io::poll_read_buf(&mut conn.io, task, &mut conn.rbuf),
        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        Poll::Pending => Poll::Pending,
    };
    match read {
        Poll::Ready(Ok(0) | Err(_)) => Poll::Ready(Wait::Closed),
        Poll::Ready(Ok(_)) => Poll::Ready(Wait::Read),
        Poll::Pending => {
            if conn.rbuf.is_empty() && conn.rbuf.capacity() > 0 {
                // Readable, but not a whole TLS record yet: still nothing to hold.
                crate::io::give_buf(std::mem::take(&mut conn.rbuf));
            }
            timer.poll(task).map(|()| Wait::Timeout)
        }
    }
}

/// How long writes may wait for the client: `idle` each, and all of them together
/// within the response's pace.
struct Sending {
    idle: Duration,
    paced: Option<Paced>,
}

impl Sending {
    fn new(idle: Duration, pace: Option<Pace>) -> Self {
        Sending {
            idle,
            paced: pace.map(Paced::new),
        }
    }
}

async fn write_all(
    io: &mut ClientIo,
    data: &[u8],
    s: &mut Sending,
    written: &mut u64,
) -> Result<(), WriteAbort> {
    write_part(io, data, s, written, false).await
}

/// [`write_all`]; with `more`, the message goes on after `data` (see
/// [`ClientIo::poll_write_more`]).
async fn write_part(
    io: &mut ClientIo,
    data: &[u8],
    s: &mut Sending,
    written: &mut u64,
    more: bool,
) -> Result<(), WriteAbort> {
    let abort = |term: Termination, slow| WriteAbort {
        bytes: *written,
        term,
        slow,
    };
    // What the socket takes at once needs no timer and says nothing of the client.
    let mut off = 0;
    let first = std::future::poll_fn(|cx| {
        while off < data.len() {
            let wrote = if more {
                io.poll_write_more(cx, &data[off..])
            } else {
                std::pin::Pin::new(&mut *io).poll_write(cx, &data[off..])
            };
            match wrote {
                std::task::Poll::Ready(Ok(0)) => {
                    return std::task::Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                std::task::Poll::Ready(Ok(n)) => off += n,
                std::task::Poll::Ready(Err(e)) => return std::task::Poll::Ready(Err(e)),
                std::task::Poll::Pending => break,
            }
        }
        std::task::Poll::Ready(Ok::<(), std::io::Error>(()))
    })
    .await;
    if first.is_err() {
        return Err(abort(Termination::CLIENT_ABORT_DATA, false));
    }
    if off < data.len() {
        // Waiting for the client: within `idle`, and within its pace.
        let idle = Instant::now() + s.idle;
        let paced = s.paced.as_mut().map(Paced::deadline);
        let deadline = paced.map_or(idle, |p| p.min(idle));
        match tokio::time::timeout_at(deadline, io.write_all(&data[off..])).await {
            Ok(Ok(())) => {
                if let Some(p) = &mut s.paced {
                    p.got(data.len() - off);
                }
            }
            Ok(Err(_)) => return Err(abort(Termination::CLIENT_ABORT_DATA, false)),
            Err(_) => {
                return Err(abort(
                    Termination::CLIENT_TIMEOUT_DATA,
                    paced.is_some_and(|p| p < idle),
                ));
            }
        }
    }
    *written += data.len() as u64;
    Ok(())
}

/// Writes `resp`; returns bytes written and whether the connection may be kept.
async fn write_response(
    io: &mut ClientIo,
    resp: Response<Body>,
    is_head: bool,
    mut keep: bool,
    version: Version,
    t: &mut Sending,
) -> Result<(u64, bool), WriteAbort> {
    let (mut parts, mut body) = resp.into_parts();
    let framing = response_framing(&mut parts, &body, is_head, &mut keep, version);
    let reason = parts.extensions.get::<Reason>().map(|r| r.0.clone());
    let mut out = crate::io::take_vec();
    write_response_head(&mut out, parts.status, reason.as_deref(), &parts.headers);
    crate::io::give_map(std::mem::take(&mut parts.headers));
    let mut written = 0u64;

    if framing == Framing::Empty || body.as_bytes().is_some() {
        let b = if framing == Framing::Empty {
            Bytes::new()
        } else {
            body.take_bytes().unwrap_or_default()
        };
        if b.len() <= COALESCE {
            out.extend_from_slice(&b);
            write_all(io, &out, t, &mut written).await?;
        } else {
            write_part(io, &out, t, &mut written, true).await?;
            write_all(io, &b, t, &mut written).await?;
        }
        crate::io::give_vec(out);
        let _ = io.flush().await;
        return Ok((written, keep));
    }
    stream_body(io, body, framing, out, t, &mut written).await?;
    Ok((written, keep))
}

/// How a response is framed towards the client, with its head fields set to match:
/// no body (HEAD, 1xx, 204, 304, an upgrade), its length, chunked, or (HTTP/1.0 clients)
/// until close.
fn response_framing(
    parts: &mut http::response::Parts,
    body: &Body,
    is_head: bool,
    keep: &mut bool,
    version: Version,
) -> Framing {
    let status = parts.status;
    let no_body = is_head
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let h = &mut parts.headers;
    let framing = if status == StatusCode::SWITCHING_PROTOCOLS {
        Framing::Empty
    } else if no_body {
        if status == StatusCode::NO_CONTENT || status.is_informational() {
            h.remove(CONTENT_LENGTH);
        }
        h.remove(TRANSFER_ENCODING);
        Framing::Empty
    } else if let (Some(n), true) = (
        body.size_hint().exact(),
        body.as_bytes().is_some() || h.contains_key(CONTENT_LENGTH),
    ) {
        h.insert(CONTENT_LENGTH, HeaderValue::from(n));
        Framing::Length(n)
    } else if version == Version::HTTP_10 {
        h.remove(CONTENT_LENGTH);
        *keep = false;
        Framing::Close
    } else {
        h.remove(CONTENT_LENGTH);
        h.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        Framing::Chunked
    };
    if status != StatusCode::SWITCHING_PROTOCOLS {
        if !*keep {
            h.insert(CONNECTION, HeaderValue::from_static("close"));
        } else if version == Version::HTTP_10 {
            h.insert(CONNECTION, HeaderValue::from_static("keep-alive"));
        }
    }
    framing
}

/// Streams a body: the head (`out`) goes with whatever the body has ready, then frame by
/// frame, with chunk framing and trailers when chunked.
async fn stream_body(
    io: &mut ClientIo,
    mut body: Body,
    framing: Framing,
    out: Vec<u8>,
    t: &mut Sending,
    written: &mut u64,
) -> Result<(), WriteAbort> {
    let mut sent_body = 0u64;
    let mut head = Some(out);
    let mut trailers_sent = false;
    loop {
        let frame = if head.is_some() {
            let ready =
                std::future::poll_fn(|cx| match std::pin::Pin::new(&mut body).poll_frame(cx) {
                    std::task::Poll::Ready(f) => std::task::Poll::Ready(Some(f)),
                    std::task::Poll::Pending => std::task::Poll::Ready(None),
                })
                .await;
            match ready {
                Some(f) => f,
                None => {
                    if let Some(h) = head.take() {
                        write_all(io, &h, t, written).await?;
                        let _ = io.flush().await;
                    }
                    continue;
                }
            }
        } else {
            std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
        };
        let mut buf = head.take().unwrap_or_default();
        match frame {
            None => {
                if framing == Framing::Chunked && !trailers_sent {
                    write_last_chunk(&mut buf, None);
                }
                if !buf.is_empty() {
                    write_all(io, &buf, t, written).await?;
                }
                let _ = io.flush().await;
                if let Framing::Length(n) = framing
                    && sent_body != n
                {
                    // The server sent less than it announced: the client must not reuse this.
                    return Err(WriteAbort::new(*written, Termination::SERVER_DATA));
                }
                return Ok(());
            }
            Some(Err(e)) => {
                if !buf.is_empty() {
                    let _ = write_all(io, &buf, t, written).await;
                }
                return Err(WriteAbort::new(*written, e.data_termination()));
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    sent_body += data.len() as u64;
                    // More of a body of known length is still to come.
                    let more = matches!(framing, Framing::Length(n) if sent_body < n);
                    write_data(io, buf, &data, framing, more, t, written).await?;
                }
                Err(frame) => {
                    if let (Ok(tr), Framing::Chunked) = (frame.into_trailers(), framing) {
                        write_last_chunk(&mut buf, Some(&tr));
                        trailers_sent = true;
                    }
                    if !buf.is_empty() {
                        write_all(io, &buf, t, written).await?;
                    }
                }
            },
        }
    }
}

/// Writes one data frame after `buf` (the head, or nothing), chunk-framed when chunked;
/// small frames are coalesced into one write. `more`: the body goes on after this frame
/// (a body of known length; a chunked body may be a stream of events, which must not
/// wait for the next one).
async fn write_data(
    io: &mut ClientIo,
    mut buf: Vec<u8>,
    data: &[u8],
    framing: Framing,
    more: bool,
    t: &mut Sending,
    written: &mut u64,
) -> Result<(), WriteAbort> {
    if data.is_empty() {
        if !buf.is_empty() {
            write_all(io, &buf, t, written).await?;
        }
        return Ok(());
    }
    if framing == Framing::Chunked {
        write_chunk_size(&mut buf, data.len());
        if data.len() <= COALESCE {
            buf.extend_from_slice(data);
            buf.extend_from_slice(b"\r\n");
            write_all(io, &buf, t, written).await?;
        } else {
            write_all(io, &buf, t, written).await?;
            write_all(io, data, t, written).await?;
            write_all(io, b"\r\n", t, written).await?;
        }
    } else if buf.len() + data.len() <= COALESCE {
        buf.extend_from_slice(data);
        write_part(io, &buf, t, written, more).await?;
    } else {
        if !buf.is_empty() {
            write_part(io, &buf, t, written, true).await?;
        }
        write_part(io, data, t, written, more).await?;
    }
    Ok(())
}

/// Reads and discards up to `n` bytes of an unread body, so the connection can be kept.
async fn drain(conn: &mut ClientConn, mut n: u64, t: Duration) -> bool {
    let work = async {
        loop {
            let take = (conn.rbuf.len() as u64).min(n) as usize;
            let _ = conn.rbuf.split_to(take);
            n -= take as u64;
            if n == 0 {
                return true;
            }
            match read_buf(&mut conn.io, &mut conn.rbuf).await {
                Ok(0) | Err(_) => return false,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(t, work).await.unwrap_or(false)
}

/// Relays bytes both ways after a `101 Switching Protocols`.
async fn tunnel(mut client: Box<ClientConn>, up: UpgradedConn) {
    let taken = up.0.lock().ok().and_then(|mut g| g.take());
    let Some(mut server) = taken else { return };
    if !client.rbuf.is_empty() && server.io.write_all(&client.rbuf).await.is_err() {
        return;
    }
    if !server.rbuf.is_empty() && client.io.write_all(&server.rbuf).await.is_err() {
        return;
    }
    client.rbuf = BytesMut::new();
    server.rbuf = BytesMut::new();
    let _ = tokio::io::copy_bidirectional(&mut client.io, &mut server.io).await;
}

/// What follows an exchange on a connection.
enum Next {
    /// The first bytes were the HTTP/2 preface: the connection speaks h2c.
    H2c(Box<ClientConn>),
    /// Keep the connection for the next request.
    Keep(Box<ClientConn>),
    /// The connection is done (closed, or given up).
    Close,
    /// Relay bytes both ways (after `101 Switching Protocols`).
    Tunnel(Box<ClientConn>, UpgradedConn),
}

pin_project_lite::pin_project! {
    /// Serves requests on one HTTP/1.1 connection until it closes. Between requests the
    /// task holds only the connection, its context and a timer (an idle keep-alive
    /// connection costs that much); each exchange runs boxed (one allocation per
    /// request) and is freed when it ends.
    pub struct Serve {
        cx: Arc<ConnCtx>,
        // The idle deadline: one timer for the connection's life, moved later after each
        // response. Moving a timer's deadline later is an atomic store (the timer wheel
        // finds the new deadline when the old one comes), where a new timer per request
        // costs an insertion into the wheel and a removal.
        #[pin]
        timer: tokio::time::Sleep,
        #[pin]
        state: State,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State {
        /// Waiting for the first bytes of the next request, until the keep-alive timeout
        /// (or for the first request, `http_request` after the accept); `None` once the
        /// connection is done.
        Idle { conn: Option<Box<ClientConn>> },
        /// Reading a request head and serving the request, or relaying an upgraded
        /// connection. (Two variants, the second's null pointer telling them apart, keep
        /// the state at 16 bytes.)
        Busy { exchange: Pin<Box<dyn Future<Output = Next> + Send>> },
    }
}

impl Serve {
    /// Serves `conn`, which may hold bytes read already. Until the first bytes of a
    /// request arrive, a connection costs no more than an idle one.
    pub fn new(conn: Box<ClientConn>, cx: Arc<ConnCtx>) -> Self {
        let timer = tokio::time::sleep_until(cx.accepted + cx.frontend.timeouts.http_request);
        let state = if conn.rbuf.is_empty() {
            State::Idle { conn: Some(conn) }
        } else {
            State::Busy {
                exchange: box_in_place(|| next_request(conn, cx.clone())),
            }
        };
        Self { cx, timer, state }
    }

    /// Serves a kept connection taken back from its worker's lot: it waits for its next
    /// request until `until`, its keep-alive timeout.
    pub(crate) fn resume(conn: Box<ClientConn>, cx: Arc<ConnCtx>, until: Instant) -> Self {
        Self {
            cx,
            timer: tokio::time::sleep_until(until),
            state: State::Idle { conn: Some(conn) },
        }
    }
}

/// A cleartext connection handed to the HTTP/2 server, with the bytes read already.
pub type H2c = (super::Rewind<crate::io::ClientIo>, Arc<ConnCtx>);

impl Future for Serve {
    /// `Some` when the client turned out to speak h2c.
    type Output = Option<H2c>;

    fn poll(self: Pin<&mut Self>, task: &mut Context<'_>) -> Poll<Option<H2c>> {
        let mut this = self.project();
        let cx = &*this.cx;
        loop {
            let next = match this.state.as_mut().project() {
                StateProj::Idle { conn } => {
                    let Some(c) = conn.as_deref_mut() else {
                        return Poll::Ready(None);
                    };
                    let w = ready!(poll_wait(c, cx, true, this.timer.as_mut(), task));
                    if matches!(w, Wait::Timeout) && c.park_due {
                        // Idle for PARK_AFTER: the connection is set aside until its
                        // next request, and its task ends; or, if it cannot be, its TLS
                        // keys go and the wait goes on to the keep-alive timeout.
                        c.park_due = false;
                        let rest = cx.frontend.timeouts.keep_alive.saturating_sub(PARK_AFTER);
                        let until = this.timer.deadline() + rest;
                        let Some(kept) = conn
                            .take()
                            .and_then(|c| super::lot::park(c, this.cx, until))
                        else {
                            return Poll::Ready(None);
                        };
                        let c = conn.insert(kept);
                        c.io.park();
                        this.timer.as_mut().reset(until);
                        continue;
                    }
                    cx.session.end_idle();
                    match (w, conn.take()) {
                        (Wait::Read, Some(c)) => State::Busy {
                            exchange: box_in_place(|| next_request(c, this.cx.clone())),
                        },
                        _ => State::Idle { conn: None },
                    }
                }
                StateProj::Busy { exchange } => match ready!(exchange.as_mut().poll(task)) {
                    Next::Keep(c) => after_response(c, this.cx, this.timer.as_mut()),
                    Next::Close => State::Idle { conn: None },
                    Next::H2c(c) => {
                        let io = super::Rewind {
                            pre: c.rbuf,
                            inner: c.io,
                        };
                        return Poll::Ready(Some((io, this.cx.clone())));
                    }
                    Next::Tunnel(c, up) => State::Busy {
                        exchange: Box::pin(async move {
                            tunnel(c, up).await;
                            Next::Close
                        }),
                    },
                },
            };
            this.state.set(next);
        }
    }
}

/// A kept connection after its response: the next request if its bytes are already
/// read (pipelining), otherwise an idle wait without a buffer.
fn after_response(
    mut conn: Box<ClientConn>,
    cx: &Arc<ConnCtx>,
    timer: Pin<&mut tokio::time::Sleep>,
) -> State {
    if !conn.rbuf.is_empty() {
        return State::Busy {
            exchange: box_in_place(|| next_request(conn, cx.clone())),
        };
    }
    if conn.rbuf.capacity() > 0 {
        crate::io::give_buf(std::mem::take(&mut conn.rbuf));
    }
    let keep_alive = cx.frontend.timeouts.keep_alive;
    conn.park_due = keep_alive > PARK_AFTER;
    let wait = if conn.park_due {
        PARK_AFTER
    } else {
        keep_alive
    };
    timer.reset(Instant::now() + wait);
    State::Idle { conn: Some(conn) }
}

/// Reads the next request's head and serves the request. The first bytes of a
/// cleartext connection may be the HTTP/2 preface instead (h2c with prior knowledge).
async fn next_request(mut conn: Box<ClientConn>, cx: Arc<ConnCtx>) -> Next {
    let first = std::mem::replace(&mut conn.first, false);
    if first && !cx.info.tls && cx.frontend.h2 {
        let deadline = cx.accepted + cx.frontend.timeouts.http_request;
        loop {
            match super::h2c_preface(&conn.rbuf) {
                Some(true) => return Next::H2c(conn),
                Some(false) => break,
                None => {}
            }
            let read = tokio::time::timeout_at(deadline, read_buf(&mut conn.io, &mut conn.rbuf));
            match read.await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return Next::Close,
                Ok(Ok(_)) => {}
            }
        }
    }
    let head = read_head(&mut conn, &cx, first).await;
    if let Head::Closed = head {
        return Next::Close;
    }
    exchange(conn, head, &cx).await
}

/// Answers a request whose head could not be accepted, then closes.
async fn refuse(
    mut conn: Box<ClientConn>,
    cx: &Arc<ConnCtx>,
    status: StatusCode,
    term: Termination,
    t_request: Duration,
    is_head: bool,
    version: Version,
) -> Next {
    let done = Done::refused(cx, status, term, t_request);
    let resp = crate::error::error_response(status);
    let r = write_response(
        &mut conn.io,
        resp,
        is_head,
        false,
        version,
        &mut Sending::new(cx.frontend.timeouts.client, cx.frontend.timeouts.send_pace),
    )
    .await;
    done.finish(r.as_ref().map_or(0, |(b, _)| *b), None);
    let _ = conn.io.shutdown().await;
    Next::Close
}

/// Serves one request on the connection: its body, the handler, and the response.
async fn exchange(conn: Box<ClientConn>, head: Head, cx: &Arc<ConnCtx>) -> Next {
    let fe = &cx.frontend;
    let t = fe.timeouts;
    let (head, started) = match head {
        Head::Request(h, s) => (h, s),
        Head::Closed => return Next::Close,
        Head::Refused(status, term, s) => {
            let t_request = s.map_or(Duration::ZERO, |s| s.elapsed());
            return refuse(conn, cx, status, term, t_request, false, Version::HTTP_11).await;
        }
    };
    let t_request = match (started, fe.log.is_some()) {
        (Some(s), true) => s.elapsed(),
        _ => Duration::ZERO,
    };
    let is_head = head.method == Method::HEAD;
    let version = head.version;
    let mut keep = head.keep_alive;
    if head.framing != Framing::Empty && matches!(head.method, Method::CONNECT) {
        keep = false;
    }
    if let (Framing::Length(n), Some(max)) = (head.framing, fe.max_request_body)
        && n > max
    {
        return refuse(
            conn,
            cx,
            StatusCode::PAYLOAD_TOO_LARGE,
            Termination::REFUSED,
            t_request,
            is_head,
            version,
        )
        .await;
    }
    if let Framing::Length(n) = head.framing {
        fe.live
            .bytes_in
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }
    let (req, mut held, ret) = request(conn, head, cx);
    if let Some(c) = held.as_mut().filter(|c| c.rbuf.is_empty()) {
        // Nothing more read: no buffer is held while the request is served.
        crate::io::give_buf(std::mem::take(&mut c.rbuf));
    }
    // `ready` then `call` in place, not `oneshot`: the request's future is built once, not
    // built and then moved into a `Oneshot`.
    let mut svc = service(cx, t_request);
    let Ok(svc) = svc.ready().await;
    let Ok((resp, done)) = svc.call(req).await;

    // Take the connection back from the body.
    let conn = match (held, ret) {
        (Some(c), _) => c,
        (None, Some(rx)) => match take_back(rx, t.client, &mut keep).await {
            Some(c) => c,
            None => {
                done.finish(0, Some(Termination::CLIENT_ABORT_DATA));
                return Next::Close;
            }
        },
        (None, None) => return Next::Close,
    };
    if *cx.frontend.retire.borrow() != crate::snapshot::Retire::Live {
        keep = false;
    }
    respond(conn, cx, resp, done, is_head, keep, version).await
}

/// The request of a parsed head, with its body: nothing, already buffered (the
/// connection stays here), or read from the connection by its consumer (the connection
/// comes back through the receiver).
fn request(
    conn: Box<ClientConn>,
    head: RequestHead,
    cx: &ConnCtx,
) -> (
    Request<Body>,
    Option<Box<ClientConn>>,
    Option<oneshot::Receiver<Returned>>,
) {
    let fe = &cx.frontend;
    let mut held = Some(conn);
    let mut ret = None;
    let body = match head.framing {
        Framing::Empty => Body::empty(),
        Framing::Length(n) if held.as_ref().is_some_and(|c| c.rbuf.len() as u64 >= n) => {
            let c = held
                .as_mut()
                .map(|c| c.rbuf.split_to(n as usize).freeze())
                .unwrap_or_default();
            Body::full(c)
        }
        framing => {
            let (tx, rx) = oneshot::channel();
            ret = Some(rx);
            let source = Source::Client {
                conn: held.take(),
                ret: Some(tx),
                send_continue: head.expect_continue,
                continue_written: 0,
            };
            let t = &fe.timeouts;
            Body::h1(
                H1Body::new(Decoder::new(framing, fe.max_request_body), source, t.client)
                    .paced(t.body_pace),
            )
        }
    };
    let mut req = Request::new(body);
    *req.method_mut() = head.method;
    *req.version_mut() = head.version;
    *req.headers_mut() = head.headers;
    // An absolute-form target names the host (RFC 9112 section 3.2.2).
    if let Some(a) = head.uri.authority()
        && let Ok(v) = HeaderValue::from_str(a.as_str())
    {
        req.headers_mut().insert(HOST, v);
    }
    *req.uri_mut() = head.uri;
    (req, held, ret)
}

/// The connection back from a request body that read it, with what the body left unread
/// drained (up to `MAX_DRAIN`) or the connection marked not to be kept.
async fn take_back(
    rx: oneshot::Receiver<Returned>,
    client: Duration,
    keep: &mut bool,
) -> Option<Box<ClientConn>> {
    let r = tokio::time::timeout(client, rx).await.ok()?.ok()?;
    let mut c = r.conn;
    if !r.complete {
        let drained = match r.remaining {
            Some(n) if n <= MAX_DRAIN => drain(&mut c, n, client).await,
            _ => false,
        };
        *keep &= drained;
    }
    Some(c)
}

/// Writes the response and completes the request's record; then the connection is kept,
/// closed, or becomes a tunnel (after `101`).
async fn respond(
    mut conn: Box<ClientConn>,
    cx: &ConnCtx,
    mut resp: Response<Body>,
    done: Done,
    is_head: bool,
    mut keep: bool,
    version: Version,
) -> Next {
    let fe = &cx.frontend;
    let t = fe.timeouts;
    let upgraded = if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        resp.extensions_mut().remove::<UpgradedConn>()
    } else {
        None
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS && upgraded.is_none() {
        // A 101 without a connection to relay to cannot be honoured.
        resp = crate::error::error_response(StatusCode::BAD_GATEWAY);
    }
    let mut sending = Sending::new(t.client, t.send_pace);
    match write_response(&mut conn.io, resp, is_head, keep, version, &mut sending).await {
        Ok((bytes, k)) => {
            done.finish(bytes, None);
            keep = k;
        }
        Err(a) => {
            if a.slow {
                fe.live.refused.count(crate::state::Refusal::SlowReader);
            }
            if a.term == Termination::CLIENT_TIMEOUT_DATA {
                // The client does not read: what is queued for it is dropped, not trickled.
                conn.io.reset_on_close();
            }
            done.finish(a.bytes, Some(a.term));
            return Next::Close;
        }
    }
    if let Some(up) = upgraded {
        return Next::Tunnel(conn, up);
    }
    if !keep {
        let _ = conn.io.shutdown().await;
        return Next::Close;
    }
    Next::Keep(conn)
}
