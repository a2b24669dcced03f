//! Mode tcp: a client connection relayed to a server as bytes, both ways.
//!
//! A session inspects the client's first bytes while its frontend's content rules or
//! `use_backend` conditions need them (up to `tcp_request.inspect_delay`, so that TLS
//! passthrough can be routed by the ClientHello's server name), chooses a backend, waits
//! for the backend's in-flight limit, picks a server with the backend's algorithm and
//! persistence, connects (retrying connection failures as the backend's `retries` says),
//! and relays. Either side's end of stream is passed on as a half-close, so a client that
//! has finished sending still gets the rest of the answer. The session is counted and
//! logged like a request, in HAProxy's `tcplog` layout.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, Sleep};

use crate::done::Done;
use crate::error::{ErrorKind, Termination};
use crate::handler::ConnCtx;
use crate::io::{ClientIo, UpIo};
use crate::path::pick::{Ask, Pick, try_pick, wait_for_server};
use crate::rules::payload::Payload;
use crate::rules::{Env, Verdict, run_content};
use crate::snapshot::{Backend, Frontend};

/// The most payload held for inspection (HAProxy's default buffer size): past it, the
/// rules decide on what they have.
const MAX_INSPECT: usize = 16 << 10;

/// Each direction's relay buffer (HAProxy's buffer size).
const RELAY_BUF: usize = 16 << 10;

/// Serves a mode tcp connection: `io` after its PROXY header and TLS, with `buf` holding
/// bytes read from it already.
pub(crate) async fn serve(mut io: ClientIo, mut buf: BytesMut, cx: Arc<ConnCtx>) {
    let fe = cx.frontend.clone();
    let snap = cx.snapshot.clone();
    let mut done = Done::new(&cx, &fe, None, Duration::ZERO);
    done.tcp = true;
    let nbsrv = |i: usize| snap.nbsrv(i);
    let env = cx.env(&fe, &nbsrv);
    let backend = match inspect(&mut io, &mut buf, &snap, &fe, &env, &mut done).await {
        Ok(b) => b,
        Err(term) => {
            done.termination = term;
            done.finish(0, None);
            return;
        }
    };
    let Some(be) = backend.and_then(|i| snap.backends.get(i)).cloned() else {
        tracing::debug!(frontend = %fe.name, "no backend for this connection");
        done.termination = Termination::INTERNAL;
        fe.live.errors.fetch_add(1, Relaxed);
        done.finish(0, None);
        return;
    };
    done.at_backend(&be);
    // The server connection is counted in its backend while it is open.
    let Some((mut server_io, _slot)) = connect(&be, &cx, &env, &mut done).await else {
        done.finish(0, None);
        return;
    };
    // The bytes inspected go first.
    let pre = buf.len() as u64;
    if !buf.is_empty() {
        let sent = tokio::time::timeout(be.server_timeout, server_io.write_all(&buf)).await;
        if !matches!(sent, Ok(Ok(()))) {
            done.termination = Termination::SERVER_DATA;
            done.finish(0, None);
            return;
        }
    }
    drop(buf);
    let (idle, idle_term) = match be.tunnel_timeout {
        Some(t) => (t, Termination::CLIENT_TIMEOUT_DATA),
        None if fe.timeouts.client <= be.server_timeout => {
            (fe.timeouts.client, Termination::CLIENT_TIMEOUT_DATA)
        }
        None => (be.server_timeout, Termination::SERVER_TIMEOUT_DATA),
    };
    let relay = Relay::new(io, server_io, idle);
    let end = relay.await;
    let bytes_in = pre + end.up;
    done.bytes_in = bytes_in;
    fe.live.bytes_in.fetch_add(bytes_in, Relaxed);
    be.live.bytes_in.fetch_add(bytes_in, Relaxed);
    if let Some(si) = done.server {
        be.servers[si].live.bytes_in.fetch_add(bytes_in, Relaxed);
    }
    done.termination = match end.how {
        End::Closed => Termination::NONE,
        End::Idle => idle_term,
        End::Client(e) => {
            tracing::debug!(client = %cx.info.client(), "client side of a tcp session failed: {e}");
            Termination::CLIENT_ABORT_DATA
        }
        End::Server(e) => {
            tracing::debug!(backend = %be.name, "server side of a tcp session failed: {e}");
            Termination::SERVER_DATA
        }
    };
    done.finish(end.down, None);
}

/// Reads the client's first bytes while the content rules and `use_backend` conditions
/// need more to decide, within the inspect delay; returns the backend chosen (`None`: no
/// route and no default) or the termination code of a refused connection.
async fn inspect(
    io: &mut ClientIo,
    buf: &mut BytesMut,
    snap: &crate::snapshot::Snapshot,
    fe: &Frontend,
    env: &Env<'_>,
    done: &mut Done,
) -> Result<Option<usize>, Termination> {
    let deadline = Instant::now() + fe.inspect_delay;
    let mut from = 0;
    let mut content_done = fe.content_rules.is_empty();
    let mut client_done = false;
    loop {
        let last = client_done || buf.len() >= MAX_INSPECT || Instant::now() >= deadline;
        let payload = Payload::new(buf, last);
        if !content_done {
            match run_content(
                &fe.content_rules,
                from,
                &fe.acls,
                env,
                &payload,
                &mut done.track,
            ) {
                Verdict::Accept => content_done = true,
                Verdict::Reject => {
                    fe.live.denied_conns.fetch_add(1, Relaxed);
                    tracing::debug!(client = %env.conn.client(), frontend = %fe.name, "connection rejected by tcp_request.content rules");
                    return Err(Termination::REFUSED);
                }
                Verdict::Wait(i) => from = i,
            }
        }
        if content_done {
            let cx = env.bytes(&done.track, Some(&payload));
            match fe.routes.first_on_payload(&fe.acls, &cx) {
                Ok(Some(r)) => {
                    return Ok(r.target.resolve(
                        || cx,
                        |n| snap.backend_index(n),
                        fe.default_backend,
                    ));
                }
                Ok(None) => return Ok(fe.default_backend),
                Err(crate::rules::Short) => {}
            }
        }
        // More bytes may decide.
        buf.reserve(4096.min(MAX_INSPECT - buf.len()));
        match tokio::time::timeout_at(deadline, io.read_buf(buf)).await {
            Ok(Ok(0)) => client_done = true,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::debug!(client = %env.conn.client(), "tcp session: read failed: {e}");
                return Err(Termination::CLIENT_ABORT_REQUEST);
            }
            // The delay is over: decide on what is there.
            Err(_) => {}
        }
    }
}

/// Picks a server and connects to it, retrying connection failures on other servers as
/// the backend's `retries` allows; `None` when no connection could be made (recorded in
/// `done`).
async fn connect(
    be: &Arc<Backend>,
    cx: &Arc<ConnCtx>,
    env: &Env<'_>,
    done: &mut Done,
) -> Option<(UpIo, crate::upstream::ConnSlot)> {
    let measure = done.clock.is_some();
    let started = measure.then(Instant::now);
    if let Some(limits) = be.gate {
        match crate::resilience::limits::Gate::acquire(&be.live, limits).await {
            Ok(slot) => done.slot = Some(slot),
            Err(e) => {
                let limit = match e.kind {
                    ErrorKind::Overloaded(l) => l,
                    _ => crate::state::Limit::QueueTimeout,
                };
                be.live.overflow.count(limit);
                done.termination = e.termination();
                return None;
            }
        }
    }
    // Persistence and the balancer's hash read the connection only.
    let (persist, key) = {
        let scx = env.bytes(&done.track, None);
        let persist = (!be.stick.is_empty()).then(|| crate::path::persist::persistence(be, &scx));
        let key = be
            .balancer
            .algo()
            .hashes()
            .then(|| crate::routing::hash_key(be, None, &scx))
            .flatten();
        (persist, key)
    };
    let (attempts, redispatch) = be
        .retries
        .as_ref()
        .map_or((0, true), |r| (r.attempts, r.redispatch));
    let ask = Ask {
        key,
        redispatch,
        prefer: persist.as_ref().and_then(|p| p.server),
    };
    let mut tried = crate::path::Tried::new();
    loop {
        let picked = match try_pick(be, &ask, tried.as_slice()) {
            Pick::Got(i, g) => Ok((i, g)),
            Pick::None => Err(crate::path::pick::no_server(be)),
            Pick::AllFull => wait_for_server(be, &ask, tried.as_slice()).await,
        };
        let (si, guard) = match picked {
            Ok(x) => x,
            Err(e) => {
                done.termination = e.termination();
                return None;
            }
        };
        crate::path::pick::chosen_server(be, &mut tried, done, &cx.session, si, guard);
        if let Some(s) = started {
            done.t_queue = s.elapsed();
        }
        let server = &be.servers[si];
        let up = &server.upstream;
        let client = crate::upstream::Client {
            conn: &cx.info,
            session: cx.session.id,
        };
        let t0 = measure.then(Instant::now);
        let result = match up.conn_slot() {
            Ok(slot) => {
                let header = up.proxy_header(client);
                crate::upstream::connect::connect(
                    up.addr,
                    up.tls.as_ref(),
                    up.connect_timeout,
                    header.as_deref(),
                )
                .await
                .map(|io| (io, slot))
            }
            Err(e) => Err(e),
        };
        if let Some(spec) = &be.outlier {
            use crate::resilience::outlier::Result as Outlier;
            let outcome = match &result {
                // A connection made is a success: it resets the consecutive failures.
                Ok(_) => Some(Outlier::Status(200)),
                Err(e) if matches!(e.kind, ErrorKind::Overloaded(_)) => None,
                Err(_) => Some(Outlier::LocalFailure),
            };
            if let Some(o) = outcome {
                crate::path::server::feed_outlier(be, spec, si, o);
            }
        }
        match result {
            Ok((io, slot)) => {
                done.timing = t0.map(|t| crate::upstream::Timing {
                    connect: t.elapsed(),
                    response: Duration::ZERO,
                    reused: false,
                });
                if let Some(p) = &persist {
                    p.store_server(si);
                }
                return Some((io, slot));
            }
            Err(e) => {
                crate::path::server::count_failure(be, si, &e);
                tracing::debug!(backend = %be.name, server = %server.name, "tcp connect failed: {e}");
                if tried.len() as u32 > attempts || matches!(e.kind, ErrorKind::Overloaded(_)) {
                    done.termination = e.termination();
                    return None;
                }
            }
        }
    }
}

/// How a relay ended.
enum End {
    /// Both sides finished sending.
    Closed,
    /// Nothing moved either way for the idle timeout.
    Idle,
    Client(io::Error),
    Server(io::Error),
}

/// What a relay moved, and how it ended.
struct Relayed {
    /// Client to server.
    up: u64,
    /// Server to client.
    down: u64,
    how: End,
}

/// One direction of a relay.
struct Half {
    /// Read and not yet written; allocated at the first read and left uninitialised
    /// (it is not zeroed for each connection).
    buf: BytesMut,
    /// The reader has finished sending.
    eof: bool,
    /// The writer has been shut down after the reader's end.
    shut: bool,
    moved: u64,
}

impl Half {
    fn new() -> Self {
        Self {
            buf: BytesMut::new(),
            eof: false,
            shut: false,
            moved: 0,
        }
    }

    /// Moves what `r` has to `w`; `Ready(Ok(()))` once `r` has ended and `w` is shut
    /// down. `progress` is set when bytes moved. Errors say which side failed (`true`:
    /// the reader).
    fn poll<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        r: &mut R,
        w: &mut W,
        progress: &mut bool,
    ) -> Poll<Result<(), (bool, io::Error)>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        loop {
            if !self.buf.is_empty() {
                let n =
                    ready!(Pin::new(&mut *w).poll_write(cx, &self.buf)).map_err(|e| (false, e))?;
                if n == 0 {
                    return Poll::Ready(Err((false, io::ErrorKind::WriteZero.into())));
                }
                self.buf.advance(n);
                self.moved += n as u64;
                *progress = true;
                continue;
            }
            if self.eof {
                if !self.shut {
                    ready!(Pin::new(&mut *w).poll_shutdown(cx)).map_err(|e| (false, e))?;
                    self.shut = true;
                }
                return Poll::Ready(Ok(()));
            }
            // Empty: the whole allocation is reused.
            self.buf.clear();
            self.buf.reserve(RELAY_BUF);
            match tokio_util::io::poll_read_buf(Pin::new(&mut *r), cx, &mut self.buf) {
                Poll::Ready(Ok(0)) => self.eof = true,
                Poll::Ready(Ok(_)) => *progress = true,
                Poll::Ready(Err(e)) => return Poll::Ready(Err((true, e))),
                Poll::Pending => {
                    // Written out already: flush what a TLS writer holds.
                    ready!(Pin::new(&mut *w).poll_flush(cx)).map_err(|e| (false, e))?;
                    return Poll::Pending;
                }
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// Relays bytes both ways until both sides have finished, one fails, or nothing
    /// moves for the idle timeout.
    struct Relay {
        client: ClientIo,
        server: UpIo,
        up: Half,
        down: Half,
        up_done: bool,
        down_done: bool,
        idle: Duration,
        last: Instant,
        #[pin]
        timer: Sleep,
    }
}

impl Relay {
    fn new(client: ClientIo, server: UpIo, idle: Duration) -> Self {
        let now = Instant::now();
        Self {
            client,
            server,
            up: Half::new(),
            down: Half::new(),
            up_done: false,
            down_done: false,
            idle,
            last: now,
            timer: tokio::time::sleep_until(now + idle),
        }
    }
}

impl Future for Relay {
    type Output = Relayed;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Relayed> {
        let mut me = self.project();
        let mut progress = false;
        let mut fail = None;
        if !*me.up_done {
            match me.up.poll(cx, me.client, me.server, &mut progress) {
                Poll::Ready(Ok(())) => *me.up_done = true,
                Poll::Ready(Err((reader, e))) => {
                    fail = Some(if reader {
                        End::Client(e)
                    } else {
                        End::Server(e)
                    });
                }
                Poll::Pending => {}
            }
        }
        if fail.is_none() && !*me.down_done {
            match me.down.poll(cx, me.server, me.client, &mut progress) {
                Poll::Ready(Ok(())) => *me.down_done = true,
                Poll::Ready(Err((reader, e))) => {
                    fail = Some(if reader {
                        End::Server(e)
                    } else {
                        End::Client(e)
                    });
                }
                Poll::Pending => {}
            }
        }
        let (up, down) = (me.up.moved, me.down.moved);
        let result = |how| Relayed { up, down, how };
        if let Some(how) = fail {
            return Poll::Ready(result(how));
        }
        if *me.up_done && *me.down_done {
            return Poll::Ready(result(End::Closed));
        }
        if progress {
            *me.last = Instant::now();
        }
        // The timer is moved only when it fires: most wake-ups are for bytes.
        while me.timer.as_mut().poll(cx).is_ready() {
            let due = *me.last + *me.idle;
            if Instant::now() >= due {
                return Poll::Ready(result(End::Idle));
            }
            me.timer.as_mut().reset(due);
        }
        Poll::Pending
    }
}
