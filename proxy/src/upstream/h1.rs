//! One HTTP/1.1 exchange with a server: write the request, read the response head, and
//! hand back a response whose body reads from the server connection.

use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HeaderValue, TRANSFER_ENCODING};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body as _;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use super::pool::UpConn;
use super::{Client, Upstream};
use crate::body::{Body, H1Body, Source};
use crate::error::{ErrorKind, ProxyError};
use crate::http1::Framing;
use crate::http1::decode::Decoder;
use crate::http1::encode::{write_chunk_size, write_last_chunk, write_request_head};
use crate::http1::parse::{HeadStore, parse_response};
use crate::io::read_buf;

/// The reason phrase a server sent, when it is not the standard one.
#[derive(Clone, Debug)]
pub struct Reason(pub Bytes);

/// The server connection of an upgraded (101) exchange, for the tunnel.
#[derive(Clone)]
pub struct UpgradedConn(pub Arc<Mutex<Option<UpConn>>>);

/// Timing of an exchange, for the access log.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timing {
    /// Time to get a connection (zero when one was reused).
    pub connect: Duration,
    /// Time from sending the request to receiving the response head.
    pub response: Duration,
    pub reused: bool,
}

/// Bodies up to this size are written together with the head and can be resent.
const INLINE_BODY: usize = 64 * 1024;
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

fn wants_body(m: &Method) -> bool {
    matches!(*m, Method::POST | Method::PUT | Method::PATCH)
}

fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

fn write_error(e: std::io::Error, reused: bool) -> ProxyError {
    let mut err = ProxyError::new(ErrorKind::Reset, format!("writing the request: {e}"));
    err.retryable = reused;
    err
}

/// Sends `req` to the server over HTTP/1.1. An `async` block that uses the head and body
/// it captures in place (an `async fn` would keep the request and a copy of its parts).
pub fn send<'a>(
    up: &'a Upstream,
    req: Request<Body>,
    server_timeout: Duration,
    head_timeout: Duration,
    measure: bool,
    client: Client<'a>,
) -> impl Future<Output = Result<(Response<Body>, Timing), ProxyError>> + Send + 'a {
    let (mut parts, mut body) = req.into_parts();
    async move {
        let is_head = parts.method == Method::HEAD;
        let target: &str = parts.uri.path_and_query().map_or("/", |p| p.as_str());

        // Framing towards the server.
        let inline = body
            .as_bytes()
            .filter(|b| b.len() <= INLINE_BODY)
            .map(<[u8]>::len);
        let chunked;
        match inline {
            Some(len) => {
                chunked = false;
                parts.headers.remove(TRANSFER_ENCODING);
                if len > 0
                    || wants_body(&parts.method)
                    || parts.headers.contains_key(CONTENT_LENGTH)
                {
                    parts.headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
                }
            }
            None => {
                let known = body
                    .size_hint()
                    .exact()
                    .filter(|_| parts.headers.contains_key(CONTENT_LENGTH));
                chunked = known.is_none();
                if chunked {
                    parts.headers.remove(CONTENT_LENGTH);
                    parts
                        .headers
                        .insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
                }
            }
        }
        let mut head = crate::io::take_vec();
        write_request_head(&mut head, &parts.method, target, &parts.headers);
        let replayable = inline.is_some();
        if inline.is_some()
            && let Some(b) = body.take_bytes()
        {
            head.extend_from_slice(&b);
        }
        let how = How {
            replayable,
            retry_ok: replayable && idempotent(&parts.method),
            chunked,
            is_head,
            upgrade: parts.headers.contains_key(http::header::UPGRADE),
            measure,
            store: if parts.version == Version::HTTP_2 {
                HeadStore::Own
            } else {
                HeadStore::InBuffer
            },
        };
        crate::io::give_map(parts.headers);
        let result = attempt_send(
            up,
            &head,
            &mut body,
            how,
            (server_timeout, head_timeout),
            client,
        )
        .await;
        crate::io::give_vec(head);
        result
    }
}

/// How an encoded request is sent.
#[derive(Clone, Copy)]
struct How {
    /// The whole request is in the encoded bytes and can be written again.
    replayable: bool,
    /// Resending it on a new connection is safe.
    retry_ok: bool,
    chunked: bool,
    is_head: bool,
    upgrade: bool,
    measure: bool,
    /// Where the response head's values go: their own copy when the client speaks HTTP/2.
    store: HeadStore,
}

/// Sends the encoded request, once more on a new connection when a reused one turns out
/// closed and resending is safe.
async fn attempt_send(
    up: &Upstream,
    head: &[u8],
    body: &mut Body,
    how: How,
    (server_timeout, head_timeout): (Duration, Duration),
    client: Client<'_>,
) -> Result<(Response<Body>, Timing), ProxyError> {
    let How {
        replayable,
        retry_ok,
        chunked,
        is_head,
        upgrade,
        measure,
        store,
    } = how;

    let mut attempt = 0;
    loop {
        attempt += 1;
        let started = measure.then(Instant::now);
        let owner = up.owner(client);
        let (mut conn, connect) = match up.pool.checkout(owner) {
            Some(c) => (c, Duration::ZERO),
            None => {
                let slot = up.conn_slot()?;
                let header = up.proxy_header(client);
                let io =
                    // Boxed: a new connection is the rare case, and its TLS handshake
                    // would make every exchange future large.
                    Box::pin(super::connect::connect(
                        up.addr,
                        up.tls.as_ref(),
                        up.connect_timeout,
                        header.as_deref(),
                    ))
                    .await?;
                (
                    UpConn::new(io, slot, owner),
                    started.map_or(Duration::ZERO, |s| s.elapsed()),
                )
            }
        };
        let reused = conn.reused;
        let sent_at = measure.then(Instant::now);
        let result = exchange(
            &mut conn,
            head,
            if replayable { None } else { Some(&mut *body) },
            chunked,
            (upgrade, store),
            server_timeout,
            head_timeout,
        )
        .await;
        match result {
            Ok(rh) => {
                let timing = Timing {
                    connect,
                    response: sent_at.map_or(Duration::ZERO, |s| s.elapsed()),
                    reused,
                };
                return Ok((
                    build_response(rh, conn, up, is_head, upgrade, server_timeout),
                    timing,
                ));
            }
            // A reused connection the server had already closed: the request never reached
            // it, so an idempotent request in memory is sent again on a new connection.
            Err(e) if e.retryable && reused && retry_ok && attempt == 1 => {
                tracing::debug!(server = %up.addr, "reused connection failed, retrying on a new one: {}", e.detail);
                continue;
            }
            Err(mut e) => {
                // Only a connect that failed says for sure that the server never saw the
                // request; a reused connection that failed may have delivered it.
                if reused {
                    e.retryable = false;
                }
                return Err(e);
            }
        }
    }
}

/// Writes the request and reads the response head.
async fn exchange(
    conn: &mut UpConn,
    head: &[u8],
    body: Option<&mut Body>,
    chunked: bool,
    (upgrade, store): (bool, HeadStore),
    server_timeout: Duration,
    head_timeout: Duration,
) -> Result<crate::http1::parse::ResponseHead, ProxyError> {
    let reused = conn.reused;
    write_with_timeout(conn, head, server_timeout, reused).await?;
    if let Some(body) = body {
        stream_body(conn, body, chunked, server_timeout).await?;
    }
    let mut timer = conn.take_timer(Instant::now() + head_timeout);
    let read_head = async {
        let mut got_any = false;
        loop {
            if !conn.rbuf.is_empty() {
                got_any = true;
                match parse_response(&mut conn.rbuf, MAX_RESPONSE_HEAD, store) {
                    Ok(Some(h))
                        if h.status.is_informational()
                            && h.status != StatusCode::SWITCHING_PROTOCOLS =>
                    {
                        continue;
                    }
                    // After a 101 the connection speaks another protocol, which only a
                    // request that asked for it can follow.
                    Ok(Some(h)) if h.status == StatusCode::SWITCHING_PROTOCOLS && !upgrade => {
                        return Err(ProxyError::new(
                            ErrorKind::JunkResponse,
                            "101 Switching Protocols to a request that asked for no upgrade",
                        ));
                    }
                    Ok(Some(h)) => return Ok(h),
                    Ok(None) => {}
                    Err(e) => {
                        return Err(ProxyError::new(
                            ErrorKind::JunkResponse,
                            format!("invalid response head: {e}"),
                        ));
                    }
                }
            }
            if conn.rbuf.is_empty() {
                // Hold no buffer while the server works on the response.
                let ready = std::future::poll_fn(|cx| conn.io.poll_readable(cx)).await;
                if let Err(err) = ready {
                    let mut e =
                        ProxyError::new(ErrorKind::Reset, format!("reading the response: {err}"));
                    e.retryable = reused && !got_any;
                    return Err(e);
                }
            }
            match read_buf(&mut conn.io, &mut conn.rbuf).await {
                Ok(0) => {
                    let mut e = if got_any {
                        ProxyError::new(
                            ErrorKind::JunkResponse,
                            "server closed the connection in the middle of the response head",
                        )
                    } else {
                        ProxyError::new(
                            ErrorKind::EmptyResponse,
                            "server closed the connection without a response",
                        )
                    };
                    e.retryable = reused && !got_any;
                    return Err(e);
                }
                Ok(_) => {}
                Err(err) => {
                    let mut e =
                        ProxyError::new(ErrorKind::Reset, format!("reading the response: {err}"));
                    e.retryable = reused && !got_any;
                    return Err(e);
                }
            }
        }
    };
    let head = {
        let mut read_head = std::pin::pin!(read_head);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = read_head.as_mut().poll(cx) {
                return Poll::Ready(Some(r));
            }
            timer.as_mut().poll(cx).map(|()| None)
        })
        .await
    };
    conn.keep_timer(timer);
    head.unwrap_or_else(|| {
        Err(ProxyError::new(
            ErrorKind::ResponseTimeout,
            format!("no response within {head_timeout:?}"),
        ))
    })
}

async fn write_with_timeout(
    conn: &mut UpConn,
    data: &[u8],
    t: Duration,
    reused: bool,
) -> Result<(), ProxyError> {
    match crate::io::timeout_lazy(t, conn.io.write_all(data)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(write_error(e, reused)),
        Err(_) => Err(ProxyError::new(
            ErrorKind::ResponseTimeout,
            "server stopped reading the request",
        )),
    }
}

async fn stream_body(
    conn: &mut UpConn,
    body: &mut Body,
    chunked: bool,
    t: Duration,
) -> Result<(), ProxyError> {
    let mut framing = Vec::with_capacity(16);
    let mut finished = false;
    while let Some(frame) =
        std::future::poll_fn(|cx| std::pin::Pin::new(&mut *body).poll_frame(cx)).await
    {
        let frame = frame?;
        match frame.into_data() {
            Ok(data) => {
                if data.is_empty() {
                    continue;
                }
                if chunked {
                    framing.clear();
                    write_chunk_size(&mut framing, data.len());
                    write_with_timeout(conn, &framing, t, false).await?;
                    write_with_timeout(conn, &data, t, false).await?;
                    write_with_timeout(conn, b"\r\n", t, false).await?;
                } else {
                    write_with_timeout(conn, &data, t, false).await?;
                }
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers()
                    && chunked
                {
                    framing.clear();
                    write_last_chunk(&mut framing, Some(&trailers));
                    write_with_timeout(conn, &framing, t, false).await?;
                    finished = true;
                }
            }
        }
    }
    if chunked && !finished {
        write_with_timeout(conn, b"0\r\n\r\n", t, false).await?;
    }
    Ok(())
}

fn build_response(
    h: crate::http1::parse::ResponseHead,
    mut conn: UpConn,
    up: &Upstream,
    is_head: bool,
    upgrade: bool,
    server_timeout: Duration,
) -> Response<Body> {
    let status = h.status;
    let no_body = is_head
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || status.is_informational();
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = status;
    *resp.version_mut() = Version::HTTP_11;
    if let Some(r) = h.reason {
        resp.extensions_mut().insert(Reason(r));
    }
    *resp.headers_mut() = h.headers;
    if status == StatusCode::SWITCHING_PROTOCOLS && upgrade {
        resp.extensions_mut()
            .insert(UpgradedConn(Arc::new(Mutex::new(Some(conn)))));
        return resp;
    }
    // A body read until close ends the connection; a response that has no body whatever
    // its fields say (HEAD, 204, 304) leaves it open.
    let keep = h.keep_alive && (no_body || h.framing != Framing::Close);
    let framing = if no_body { Framing::Empty } else { h.framing };
    match framing {
        Framing::Empty => {
            if keep && conn.rbuf.is_empty() {
                up.pool.put(conn);
            }
        }
        Framing::Length(n) if conn.rbuf.len() as u64 >= n => {
            // The whole body arrived with the head.
            let b = conn.rbuf.split_to(n as usize).freeze();
            if keep && conn.rbuf.is_empty() {
                up.pool.put(conn);
            }
            *resp.body_mut() = Body::full(b);
        }
        _ => {
            let source = Source::Server {
                conn: Some(conn),
                pool: up.pool.clone(),
                reusable: keep,
            };
            *resp.body_mut() = Body::h1(H1Body::new(
                Decoder::new(framing, None),
                source,
                server_timeout,
            ));
        }
    }
    resp
}
