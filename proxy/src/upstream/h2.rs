//! HTTP/2 to servers: one multiplexed connection per worker and server, opened on demand.

use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri, Version};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::time::Instant;

use super::h1::Timing;
use super::{Client, Upstream};
use crate::body::Body;
use crate::error::{ErrorKind, ProxyError, Side};

fn classify(e: hyper::Error) -> ProxyError {
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        if let Some(h) = s.downcast_ref::<h2::Error>() {
            // A stream the server refused was not processed and may go elsewhere.
            if h.reason() == Some(h2::Reason::REFUSED_STREAM) {
                return ProxyError::new(ErrorKind::RefusedStream, e.to_string());
            }
            if h.is_reset() || h.is_io() {
                return ProxyError::new(ErrorKind::Reset, format!("HTTP/2: {e}"));
            }
        }
        if let Some(be) = s.downcast_ref::<ProxyError>() {
            return ProxyError::on(be.side, be.kind, be.detail.clone());
        }
        source = s.source();
    }
    ProxyError::new(ErrorKind::BadResponse, format!("HTTP/2: {e}"))
}

/// Opens the worker's connection to the server; returns it with the time it took.
async fn open(
    up: &Upstream,
    measure: bool,
    client: Client<'_>,
) -> Result<(hyper::client::conn::http2::SendRequest<Body>, Duration), ProxyError> {
    let started = measure.then(Instant::now);
    let slot = up.conn_slot()?;
    let header = up.proxy_header(client);
    let io = super::connect::connect(
        up.addr,
        up.tls.as_ref(),
        up.connect_timeout,
        header.as_deref(),
    )
    .await?;
    let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(false)
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| {
            ProxyError::new(
                ErrorKind::ConnectFailed,
                format!("HTTP/2 handshake with {}: {e}", up.addr),
            )
        })?;
    let addr = up.addr;
    tokio::spawn(async move {
        let _slot = slot;
        if let Err(e) = conn.await {
            tracing::debug!(server = %addr, "HTTP/2 connection ended: {e}");
        }
    });
    up.pool.set_h2_sender(up.owner(client), send.clone());
    Ok((send, started.map_or(Duration::ZERO, |s| s.elapsed())))
}

/// Sends `req` over the server's HTTP/2 connection.
pub async fn send(
    up: &Upstream,
    mut req: Request<Body>,
    server_timeout: Duration,
    measure: bool,
    client: Client<'_>,
) -> Result<(Response<Body>, Timing), ProxyError> {
    // HTTP/2 carries the host in :authority.
    let authority = req
        .headers_mut()
        .remove(http::header::HOST)
        .and_then(|h| Authority::try_from(h.as_bytes()).ok())
        .or_else(|| req.uri().authority().cloned())
        .unwrap_or_else(|| Authority::from_static("localhost"));
    let scheme = if up.tls.is_some() {
        Scheme::HTTPS
    } else {
        Scheme::HTTP
    };
    let mut parts = req.uri().clone().into_parts();
    parts.scheme = Some(scheme);
    parts.authority = Some(authority);
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    *req.uri_mut() =
        Uri::from_parts(parts).map_err(|e| ProxyError::new(ErrorKind::Internal, e.to_string()))?;
    let client_h2 = req.version() == Version::HTTP_2;
    *req.version_mut() = Version::HTTP_2;
    // The server's HPACK table may keep these values, and the client's the response's.
    crate::headers::rehome(req.headers_mut());

    // The worker's open connection, or a new one. Opening is boxed: it is rare, and its
    // TLS and HTTP/2 handshakes would make every exchange's future large.
    let (mut s, connect, reused) = match up.pool.h2_sender(up.owner(client)) {
        Some(s) => (s, Duration::ZERO, true),
        None => {
            let (s, t) = Box::pin(open(up, measure, client)).await?;
            (s, t, false)
        }
    };
    let sent_at = measure.then(Instant::now);
    let work = async {
        s.ready().await.map_err(classify)?;
        s.send_request(req).await.map_err(classify)
    };
    let resp = match tokio::time::timeout(server_timeout, work).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(ProxyError::new(
                ErrorKind::ResponseTimeout,
                format!("no response within {server_timeout:?}"),
            ));
        }
    };
    let timing = Timing {
        connect,
        response: sent_at.map_or(Duration::ZERO, |s| s.elapsed()),
        reused,
    };
    let mut resp = resp.map(|b| Body::incoming(b, Side::Server));
    if client_h2 {
        crate::headers::rehome(resp.headers_mut());
    }
    Ok((resp, timing))
}
