//! An HTTP/2 client connection, served with the `h2` crate: every stream runs the same
//! handler as HTTP/1.1, inside the connection's own task (a [`StreamSet`]) rather than a
//! task per stream. Idle connections close after the keep-alive timeout, and a stopping
//! proxy sends GOAWAY and lets open streams finish.

use std::convert::Infallible;
use std::future::poll_fn;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use http::header::{HOST, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body::Body as _;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::WriteAbort;
use super::h1::PARK_AFTER;
use super::streams::StreamSet;

use crate::body::{Body, Pace, Paced};
use crate::error::Termination;
use crate::handler::{ConnCtx, Done, handle_stream, strip_hop_by_hop};
use crate::io::Park;
use crate::path::future::box_in_place;
use crate::state::Refusal;

/// Flow-control windows offered to clients (hyper's defaults): large enough that a
/// single stream is not throttled on a fast link.
const STREAM_WINDOW: u32 = 1 << 20;
const CONN_WINDOW: u32 = 1 << 20;
/// Response bytes buffered per stream before waiting for the client.
const SEND_BUFFER: usize = 400 * 1024;

// A short-lived value on the stack; boxing the stream would cost an allocation each.
#[allow(clippy::large_enum_variant)]
enum Event {
    Stream(Request<RecvStream>, SendResponse<Bytes>),
    /// No more streams will come.
    Closed,
    Error(h2::Error),
    /// Stop taking streams: the proxy stops, or the connection was idle too long.
    GoAway,
}

/// The connection as the `h2` crate reads and writes it, with a way for the serving loop
/// (which does not hold it) to have it park ([`Park`]) at its next read that waits: a
/// flag shared with the loop, only on connections that can park.
struct Parking<I> {
    io: I,
    asked: Option<Arc<AtomicBool>>,
}

impl<I: AsyncRead + Park + Unpin> AsyncRead for Parking<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        if r.is_pending() && this.asked.as_ref().is_some_and(|a| a.swap(false, Relaxed)) {
            this.io.park();
        }
        r
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Parking<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Serves HTTP/2 on `io` until the client or the proxy ends the connection.
/// The HTTP/2 connection preface and settings, within the frontend's request timeout.
async fn handshake<I>(
    io: Parking<I>,
    cx: &ConnCtx,
) -> Option<h2::server::Connection<Parking<I>, Bytes>>
where
    I: AsyncRead + AsyncWrite + Park + Unpin + Send + 'static,
{
    let fe = &cx.frontend;
    let mut builder = h2::server::Builder::new();
    builder
        .max_concurrent_streams(fe.h2_max_streams)
        .max_header_list_size(fe.head_limits.max_head as u32)
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONN_WINDOW)
        .max_send_buffer_size(SEND_BUFFER);
    match tokio::time::timeout(fe.timeouts.http_request, builder.handshake::<_, Bytes>(io)).await {
        Ok(Ok(c)) => Some(c),
        Ok(Err(e)) => {
            tracing::debug!(client = %cx.info.client(), "HTTP/2 handshake failed: {e}");
            None
        }
        Err(_) => None,
    }
}

pub async fn serve<I>(io: I, cx: Arc<ConnCtx>)
where
    I: AsyncRead + AsyncWrite + Park + Unpin + Send + 'static,
{
    let fe = cx.frontend.clone();
    let asked = io.parks().then(|| Arc::new(AtomicBool::new(false)));
    let io = Parking {
        io,
        asked: asked.clone(),
    };
    let mut shutdown = fe.retire.subscribe();
    // Boxed: the handshake's future is as large as the connection it makes, and inline it
    // would add its room to the connection's future for the connection's whole life.
    let Some(mut conn) = Box::pin(handshake(io, &cx)).await else {
        return;
    };
    let keep_alive = fe.timeouts.keep_alive;
    // An idle connection's wait stops at PARK_AFTER to let its buffers (and over TLS its
    // keys) go, then goes on to the keep-alive timeout.
    let two_stage = keep_alive > PARK_AFTER;
    let first_wait = if two_stage { PARK_AFTER } else { keep_alive };
    let mut park_due = two_stage;
    let mut streams = StreamSet::default();
    let mut stop = pin!(async move {
        while *shutdown.borrow() == crate::snapshot::Retire::Live {
            if shutdown.changed().await.is_err() {
                return;
            }
        }
    });
    let mut idle = pin!(tokio::time::sleep(first_wait));
    let mut busy = false;
    let mut going_away = false;
    loop {
        let ev = poll_fn(|tcx| {
            let empty = streams.poll(tcx).is_ready();
            if busy && empty {
                busy = false;
                park_due = two_stage;
                idle.as_mut().reset(Instant::now() + first_wait);
            }
            if !going_away {
                if stop.as_mut().poll(tcx).is_ready() {
                    return Poll::Ready(Event::GoAway);
                }
                if empty && idle.as_mut().poll(tcx).is_ready() {
                    if !park_due {
                        return Poll::Ready(Event::GoAway);
                    }
                    // The codec's buffers go now; the read below, finding nothing, parks
                    // the connection's stream.
                    park_due = false;
                    conn.release_idle_buffers();
                    if let Some(a) = &asked {
                        a.store(true, Relaxed);
                    }
                    let until = idle.deadline() + (keep_alive - PARK_AFTER);
                    idle.as_mut().reset(until);
                    let _ = idle.as_mut().poll(tcx);
                }
            }
            match conn.poll_accept(tcx) {
                Poll::Ready(Some(Ok((req, resp)))) => Poll::Ready(Event::Stream(req, resp)),
                Poll::Ready(Some(Err(e))) => Poll::Ready(Event::Error(e)),
                Poll::Ready(None) => Poll::Ready(Event::Closed),
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
        match ev {
            Event::Stream(req, resp) => {
                busy = true;
                if let Some((req, resp)) = admit(&cx, req, resp) {
                    streams.push(box_in_place(|| serve_stream(cx.clone(), req, resp)));
                }
            }
            Event::GoAway => {
                going_away = true;
                conn.graceful_shutdown();
            }
            Event::Error(e) => {
                tracing::debug!(client = %cx.info.client(), "HTTP/2 connection ended: {e}");
                return;
            }
            // Out of the match, whose event would otherwise be kept across the wait below
            // and make every connection's future larger.
            Event::Closed => break,
        }
    }
    // Finish the open streams while the connection winds down.
    poll_fn(|tcx| {
        let _ = streams.poll(tcx);
        conn.poll_closed(tcx).map(|_| ())
    })
    .await;
}

/// At most one Host, and the same as :authority when both are present (compared without
/// case, and without the scheme's default port).
fn host_agrees<B>(req: &Request<B>) -> bool {
    let mut hosts = req.headers().get_all(HOST).iter();
    let (Some(host), None) = (hosts.next(), hosts.next()) else {
        return req.headers().get(HOST).is_none();
    };
    let Some(authority) = req.uri().authority() else {
        return true;
    };
    let default = if req.uri().scheme_str() == Some("http") {
        ":80"
    } else {
        ":443"
    };
    let norm = |s: &[u8]| -> Vec<u8> {
        let s = s.strip_suffix(default.as_bytes()).unwrap_or(s);
        s.to_ascii_lowercase()
    };
    norm(host.as_bytes()) == norm(authority.as_str().as_bytes())
}

/// What is decided about a new stream before it waits for anything: a malformed request
/// is refused here, and the one admitted leaves with its body reader and a Host.
fn admit(
    cx: &Arc<ConnCtx>,
    req: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) -> Option<(Request<Body>, SendResponse<Bytes>)> {
    // RFC 9113 section 8.3.1: a Host that names another entity than :authority makes
    // the request malformed, and a malformed request is a stream error, never forwarded
    // (section 8.1.1). So are two Host fields.
    if !host_agrees(&req) {
        crate::handler::Done::refused(
            cx,
            StatusCode::BAD_REQUEST,
            Termination::REFUSED,
            Duration::ZERO,
        )
        .finish(0, None);
        respond.send_reset(h2::Reason::PROTOCOL_ERROR);
        return None;
    }
    let pace = cx.frontend.timeouts.body_pace;
    let mut req = req.map(|s| Body::h2(s, pace));
    // HTTP/2 carries the host in :authority; rules and HTTP/1 servers want Host.
    if !req.headers().contains_key(HOST)
        && let Some(v) = req
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        req.headers_mut().insert(HOST, v);
    }
    Some((req, respond))
}

/// One admitted stream: the request through the handler, the response back with flow
/// control.
fn serve_stream(
    cx: Arc<ConnCtx>,
    req: Request<Body>,
    respond: SendResponse<Bytes>,
) -> impl Future<Output = ()> + Send {
    Stream::Handling {
        handler: handle_stream(cx.clone(), req),
        cx,
        respond,
        answer,
    }
}

pin_project_lite::pin_project! {
    /// A stream's future, boxed for the stream's life: the handler's future while the
    /// request is worked on (or until the client resets the stream), then the answer's in
    /// the same room. One `async` block would need room for both at once, and for the
    /// request it starts from and the handler's answer across the handler's wait.
    #[project = StreamProj]
    #[project_replace = StreamOwn]
    enum Stream<H, A, N> {
        Handling {
            #[pin]
            handler: H,
            cx: Arc<ConnCtx>,
            respond: SendResponse<Bytes>,
            // What makes the answer's future (always `answer`): a type parameter by which
            // the answer's future, an `async` block, is named in `A`.
            answer: N,
        },
        Answering {
            #[pin]
            answer: A,
        },
        Finished,
    }
}

impl<H, A, N> Future for Stream<H, A, N>
where
    H: Future<Output = Result<(Response<Body>, Done), Infallible>>,
    A: Future<Output = ()>,
    N: FnOnce(Arc<ConnCtx>, SendResponse<Bytes>, Response<Body>, Done) -> A,
{
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, tcx: &mut Context<'_>) -> Poll<()> {
        loop {
            match self.as_mut().project() {
                StreamProj::Handling {
                    handler, respond, ..
                } => {
                    let Poll::Ready(Ok((resp, done))) = handler.poll(tcx) else {
                        // The client gave up on the stream: drop the request (and its
                        // server exchange).
                        if respond.poll_reset(tcx).is_ready() {
                            self.set(Stream::Finished);
                            return Poll::Ready(());
                        }
                        return Poll::Pending;
                    };
                    let StreamOwn::Handling {
                        cx,
                        respond,
                        answer,
                        ..
                    } = self.as_mut().project_replace(Stream::Finished)
                    else {
                        return Poll::Ready(());
                    };
                    self.set(Stream::Answering {
                        answer: answer(cx, respond, resp, done),
                    });
                }
                StreamProj::Answering { answer } => {
                    ready!(answer.poll(tcx));
                    self.set(Stream::Finished);
                    return Poll::Ready(());
                }
                StreamProj::Finished => return Poll::Ready(()),
            }
        }
    }
}

/// Sends the handler's answer on the stream and completes the request's record. An
/// `async` block, which uses what it captures in place (an `async fn` would keep a moved
/// copy of each argument as well).
#[allow(clippy::manual_async_fn, reason = "arguments kept once")]
fn answer(
    cx: Arc<ConnCtx>,
    mut respond: SendResponse<Bytes>,
    resp: Response<Body>,
    done: Done,
) -> impl Future<Output = ()> + Send {
    async move {
        let (mut parts, body) = resp.into_parts();
        if parts.status == StatusCode::SWITCHING_PROTOCOLS {
            // HTTP/2 has no upgrade: the request was not forwarded as one.
            parts.status = StatusCode::BAD_GATEWAY;
        }
        // Connection-specific fields are not allowed in HTTP/2.
        strip_hop_by_hop(&mut parts.headers, false, false);
        let end = body.is_end_stream();
        let mut send = match respond.send_response(Response::from_parts(parts, ()), end) {
            Ok(s) => s,
            Err(_) => {
                done.finish(0, Some(Termination::CLIENT_ABORT_DATA));
                return;
            }
        };
        if end {
            done.finish(0, None);
            return;
        }
        let t = &cx.frontend.timeouts;
        match send_body(&mut send, body, t.client, t.send_pace).await {
            Ok(n) => done.finish(n, None),
            Err(a) => {
                if a.slow {
                    cx.frontend.live.refused.count(Refusal::SlowReader);
                }
                done.finish(a.bytes, Some(a.term))
            }
        }
    }
}

/// Sends a response body within the stream's flow-control window. A wait for window is
/// a wait for the client: each within `client_timeout`, all of them within `pace`.
async fn send_body(
    send: &mut SendStream<Bytes>,
    mut body: Body,
    client_timeout: Duration,
    pace: Option<Pace>,
) -> Result<u64, WriteAbort> {
    let mut paced = pace.map(Paced::new);
    let mut sent = 0u64;
    loop {
        let frame = {
            let next = poll_fn(|tcx| Pin::new(&mut body).poll_frame(tcx));
            let reset = poll_fn(|tcx| send.poll_reset(tcx));
            // The body first (no random pick of a branch): a reset stream refuses the data
            // sent on it, so a reset is seen either way.
            tokio::select! {
                biased;
                f = next => f,
                _ = reset => return Err(WriteAbort::new(sent, Termination::CLIENT_ABORT_DATA)),
            }
        };
        let frame = match frame {
            None => {
                return match send.send_data(Bytes::new(), true) {
                    Ok(()) => Ok(sent),
                    Err(_) => Err(WriteAbort::new(sent, Termination::CLIENT_ABORT_DATA)),
                };
            }
            Some(Err(e)) => {
                send.send_reset(h2::Reason::INTERNAL_ERROR);
                return Err(WriteAbort::new(sent, e.data_termination()));
            }
            Some(Ok(f)) => f,
        };
        match frame.into_data() {
            Ok(mut data) => {
                let last = body.is_end_stream();
                if data.is_empty() && !last {
                    continue;
                }
                loop {
                    send.reserve_capacity(data.len());
                    let cap = if data.is_empty() {
                        0
                    } else {
                        match capacity(send, client_timeout, paced.as_mut()).await {
                            Ok(Some(n)) => n,
                            Ok(None) => {
                                return Err(WriteAbort::new(sent, Termination::CLIENT_ABORT_DATA));
                            }
                            Err(slow) => {
                                send.send_reset(h2::Reason::CANCEL);
                                return Err(WriteAbort {
                                    bytes: sent,
                                    term: Termination::CLIENT_TIMEOUT_DATA,
                                    slow,
                                });
                            }
                        }
                    };
                    let chunk = data.split_to(cap.min(data.len()));
                    sent += chunk.len() as u64;
                    let end = last && data.is_empty();
                    if send.send_data(chunk, end).is_err() {
                        return Err(WriteAbort::new(sent, Termination::CLIENT_ABORT_DATA));
                    }
                    if data.is_empty() {
                        break;
                    }
                }
                if last {
                    return Ok(sent);
                }
            }
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    return match send.send_trailers(t) {
                        Ok(()) => Ok(sent),
                        Err(_) => Err(WriteAbort::new(sent, Termination::CLIENT_ABORT_DATA)),
                    };
                }
            }
        }
    }
}

/// Window for the stream: what is granted at once, or what the client grants while the
/// proxy waits, within `idle` and the pace. `None`: the stream is gone; `Err(slow)`: the
/// client took too long (too slowly, if `slow`).
async fn capacity(
    send: &mut SendStream<Bytes>,
    idle: Duration,
    paced: Option<&mut Paced>,
) -> Result<Option<usize>, bool> {
    let mut wait = pin!(poll_fn(|tcx| send.poll_capacity(tcx)));
    if let Poll::Ready(r) = poll_fn(|tcx| Poll::Ready(wait.as_mut().poll(tcx))).await {
        return Ok(r.and_then(Result::ok));
    }
    let idle = Instant::now() + idle;
    let (deadline, paced) = match paced {
        Some(p) => {
            let late = p.deadline();
            (late.min(idle), Some((p, late)))
        }
        None => (idle, None),
    };
    match tokio::time::timeout_at(deadline, wait).await {
        Ok(r) => {
            let n = r.and_then(Result::ok);
            if let (Some(n), Some((p, _))) = (n, paced) {
                p.got(n);
            }
            Ok(n)
        }
        Err(_) => Err(paced.is_some_and(|(_, late)| late < idle)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::ClientIo;
    use crate::server::Rewind;

    /// The size of the future an async fn of two arguments returns.
    fn future_size<A, B, F: Future>(_: fn(A, B) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// An HTTP/2 connection's future is boxed for the connection's life. It was 3,424
    /// bytes (jemalloc's 3,584-byte class) while it kept the handshake's future (1,280
    /// bytes) and an accepted stream's event inline; now it is in the 2,048-byte class.
    #[test]
    fn an_http2_connections_future_stays_in_its_size_class() {
        let plain = future_size(serve::<ClientIo>);
        let rewound = future_size(serve::<Rewind<ClientIo>>);
        eprintln!("HTTP/2 connection future: {plain} bytes ({rewound} after a PROXY header)");
        assert!(
            plain <= 2048,
            "the HTTP/2 connection future grew to {plain} bytes"
        );
        assert!(
            rewound <= 2048,
            "the HTTP/2 connection future grew to {rewound} bytes"
        );
    }

    /// Every stream's future is boxed for the stream's life, and hundreds of them are in
    /// flight on a busy connection. It was 2,896 bytes (jemalloc's 3,072-byte class)
    /// while one `async fn` held the handler's future and the answer's side by side, and
    /// it and the handler kept their arguments and a moved copy of each; now 1,416.
    #[test]
    fn an_http2_streams_future_stays_in_its_size_class() {
        fn size<A, B, C, F: Future>(_: fn(A, B, C) -> F) -> usize {
            std::mem::size_of::<F>()
        }
        let stream = size(serve_stream);
        eprintln!("HTTP/2 stream future: {stream} bytes");
        assert!(
            stream <= 1536,
            "the HTTP/2 stream future grew to {stream} bytes"
        );
    }

    /// Serves one stream: answers 200 with `x-echo` set to the request's `x-value`, and
    /// `x-same: constant` (a header the HPACK encoder indexes once, then refers to).
    fn answer(req: Request<RecvStream>, mut respond: SendResponse<Bytes>) {
        let echo = req.headers().get("x-value").cloned().expect("x-value");
        let resp = Response::builder()
            .status(200)
            .header("x-echo", echo)
            .header("x-same", "constant")
            .body(())
            .unwrap();
        let mut send = respond.send_response(resp, false).unwrap();
        send.send_data(Bytes::from_static(b"ok"), true).unwrap();
    }

    /// Polls the connection once; true if it found nothing more to do.
    async fn settled<T, B>(conn: &mut h2::server::Connection<T, B>) -> bool
    where
        T: AsyncRead + AsyncWrite + Unpin,
        B: bytes::Buf,
    {
        poll_fn(|tcx| Poll::Ready(conn.poll_accept(tcx).is_pending())).await
    }

    /// An idle connection gives its codec's buffers and its gone streams' room back
    /// (`release_idle_buffers`, called by `serve` once a connection has been idle for
    /// `PARK_AFTER`), and goes on: the client's next header blocks refer to entries of
    /// our decoder's table made before the release, carry Huffman-coded values, and one
    /// is larger than a frame (read into the few bytes of room a released buffer starts
    /// with, then into a buffer of its usual size); our next responses start with the
    /// table size updates that empty the client's copy of our encoder's table.
    #[tokio::test]
    async fn an_idle_http2_connection_gives_its_buffers_back_and_carries_on() {
        // A buffer not allocated again would leave the connection waiting for good.
        within_30s(three_requests_with_releases(), "stalled after a release").await;
    }

    /// Runs `test`, failing if it has not ended after 30 s.
    async fn within_30s(test: impl Future<Output = ()>, what: &str) {
        tokio::time::timeout(Duration::from_secs(30), test)
            .await
            .expect(what)
    }

    async fn three_requests_with_releases() {
        use tokio::sync::mpsc;
        let (client_io, server_io) = tokio::io::duplex(1 << 20);
        let (got_tx, mut got_rx) = mpsc::channel::<()>(1);
        let (go_tx, mut go_rx) = mpsc::channel::<()>(1);
        let server = tokio::spawn(async move {
            let mut conn = h2::server::handshake(server_io).await.unwrap();
            let mut seen = Vec::new();
            for _ in 0..3 {
                let (req, respond) = conn.accept().await.unwrap().unwrap();
                seen.push((
                    req.uri().authority().map(|a| a.to_string()),
                    req.headers().get("x-big").map(|v| v.len()),
                ));
                answer(req, respond);
                // Drive the connection until the client has the response.
                tokio::select! {
                    _ = got_rx.recv() => {}
                    r = conn.accept() => panic!("an unexpected stream: {r:?}"),
                }
                assert!(settled(&mut conn).await);
                assert!(
                    conn.release_idle_buffers(),
                    "an idle connection kept a buffer"
                );
                go_tx.send(()).await.unwrap();
            }
            seen
        });
        let (mut client, driver) = h2::client::handshake(client_io).await.unwrap();
        let driver = tokio::spawn(driver);
        for i in 0..3 {
            let mut req = Request::get("https://example.test/")
                .header("x-value", format!("value number {i}"))
                .body(())
                .unwrap();
            if i == 2 {
                let big = HeaderValue::from_str(&"b".repeat(40_000)).unwrap();
                req.headers_mut().insert("x-big", big);
            }
            let (resp, _) = client.send_request(req, true).unwrap();
            let resp = resp.await.unwrap();
            assert_eq!(resp.status(), 200);
            let echo = format!("value number {i}");
            assert_eq!(resp.headers().get("x-echo").unwrap(), echo.as_str());
            assert_eq!(resp.headers().get("x-same").unwrap(), "constant");
            let mut body = resp.into_body();
            let chunk = body.data().await.unwrap().unwrap();
            assert_eq!(&chunk[..], b"ok");
            got_tx.send(()).await.unwrap();
            go_rx.recv().await.unwrap();
        }
        let seen = server.await.unwrap();
        let host = Some("example.test".to_string());
        assert_eq!(
            seen,
            [
                (host.clone(), None),
                (host.clone(), None),
                (host, Some(40_000))
            ]
        );
        drop(client);
        driver.abort();
    }

    /// Nothing is released while a frame is partly read; the rest of it completes the
    /// request as if nothing had been asked. (What a release puts on the wire, the
    /// table size updates, is checked end to end in `tests/it/frontend.rs`.)
    #[tokio::test]
    async fn a_partly_read_frame_keeps_the_read_buffer() {
        within_30s(partly_read_frame(), "the request never came").await;
    }

    async fn partly_read_frame() {
        use tokio::io::AsyncWriteExt;
        let (mut client_io, server_io) = tokio::io::duplex(1 << 16);
        client_io
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
            .await
            .unwrap();
        let mut conn = h2::server::handshake(server_io).await.unwrap();
        // HEADERS (END_STREAM | END_HEADERS) for GET https://example.test/ on stream 1:
        // static table entries and a literal :authority.
        let block = [&[0x82, 0x87, 0x84, 0x41, 12][..], b"example.test"].concat();
        let mut headers = (block.len() as u32).to_be_bytes()[1..].to_vec();
        headers.extend_from_slice(&[1, 0x5, 0, 0, 0, 1]);
        headers.extend_from_slice(&block);
        client_io.write_all(&headers[..12]).await.unwrap();
        assert!(settled(&mut conn).await);
        assert!(
            !conn.release_idle_buffers(),
            "a partly read frame was let go"
        );
        client_io.write_all(&headers[12..]).await.unwrap();
        let (req, _respond) = conn.accept().await.unwrap().unwrap();
        assert_eq!(req.uri().authority().unwrap(), "example.test");
    }
}
