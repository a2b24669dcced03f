//! Serving client connections: TLS handshake, protocol choice (ALPN on TLS, the HTTP/2
//! preface on cleartext), then the HTTP/1.1 or HTTP/2 server.

pub mod h1;
pub mod h2;
pub(crate) mod lot;
pub mod streams;

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::handler::ConnCtx;
use crate::io::ClientIo;
use crate::rules::sample::Facts;
use h1::ClientConn;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// An I/O that first yields bytes already read.
pub struct Rewind<T> {
    pre: BytesMut,
    inner: T,
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.pre.is_empty() {
            let n = self.pre.len().min(buf.remaining());
            buf.put_slice(&self.pre[..n]);
            self.pre.advance(n);
            if self.pre.is_empty() {
                self.pre = BytesMut::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<T: crate::io::Park> crate::io::Park for Rewind<T> {
    fn park(&mut self) -> bool {
        self.pre.is_empty() && self.inner.park()
    }
    fn parks(&self) -> bool {
        self.inner.parks()
    }
}

/// What a connection's first bytes must be, by its bind's `accept_proxy` and its peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// Not a PROXY header: the bind takes none.
    None,
    /// A PROXY header, or the connection is refused.
    Required,
    /// Anything but a PROXY header: the peer is not a trusted sender.
    Refused,
}

/// Everything a new connection needs.
pub struct Accepted {
    pub tcp: TcpStream,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub proxy: ProxyHeader,
    /// The connection's context, made at accept (its registry entry and counts).
    pub cx: Arc<ConnCtx>,
}

/// Why a response could not be sent whole: the bytes sent, the termination code for the
/// log, and whether the client was cut for taking the response too slowly.
pub(crate) struct WriteAbort {
    pub bytes: u64,
    pub term: crate::error::Termination,
    pub slow: bool,
}

impl WriteAbort {
    pub fn new(bytes: u64, term: crate::error::Termination) -> Self {
        Self {
            bytes,
            term,
            slow: false,
        }
    }
}

/// Serves one client connection to its end.
///
/// The task of a connection is only as large as what an idle keep-alive connection
/// needs, since that is what such a connection costs: the start (connection rules, TLS
/// handshake, protocol choice), each HTTP/1.1 exchange, a tunnel and HTTP/2 run in boxed
/// futures freed once done, and between requests the task holds the connection, its
/// context and a timer.
pub fn serve_connection(a: Accepted) -> Connection {
    Connection::Start {
        start: Box::pin(start(a)),
    }
}

/// Serves a kept HTTP/1.1 connection its worker's lot gives back ([`lot`]), from its wait
/// for the next request until `until`, its keep-alive timeout.
pub(crate) fn resume_connection(
    conn: Box<ClientConn>,
    cx: Arc<ConnCtx>,
    until: tokio::time::Instant,
) -> Connection {
    Connection::H1 {
        serve: h1::Serve::resume(conn, cx, until),
    }
}

type Starting = Pin<Box<dyn Future<Output = Option<(Started, Arc<ConnCtx>)>> + Send>>;

pin_project_lite::pin_project! {
    /// A client connection's task ([`serve_connection`]).
    #[project = ConnectionProj]
    pub enum Connection {
        Start { start: Starting },
        H1 { #[pin] serve: h1::Serve },
        H2 { serve: Pin<Box<dyn Future<Output = ()> + Send>> },
        /// Mode tcp: bytes relayed to a server.
        Tcp { relay: Pin<Box<dyn Future<Output = ()> + Send>> },
        Done,
    }
}

impl Future for Connection {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, task: &mut Context<'_>) -> Poll<()> {
        loop {
            let next = match self.as_mut().project() {
                ConnectionProj::Start { start } => match ready!(start.as_mut().poll(task)) {
                    Some((Started::H1(conn), cx)) => Connection::H1 {
                        serve: h1::Serve::new(conn, cx),
                    },
                    Some((Started::H2(io), cx)) => Connection::H2 {
                        serve: Box::pin(h2::serve(io, cx)),
                    },
                    Some((Started::Tcp(io, buf), cx)) => Connection::Tcp {
                        relay: Box::pin(crate::tcp::serve(io, buf, cx)),
                    },
                    None => Connection::Done,
                },
                ConnectionProj::H1 { serve } => match ready!(serve.poll(task)) {
                    // The client spoke the HTTP/2 preface (h2c).
                    Some((io, cx)) => Connection::H2 {
                        serve: Box::pin(h2::serve(io, cx)),
                    },
                    None => Connection::Done,
                },
                ConnectionProj::H2 { serve } | ConnectionProj::Tcp { relay: serve } => {
                    ready!(serve.as_mut().poll(task));
                    Connection::Done
                }
                ConnectionProj::Done => return Poll::Ready(()),
            };
            self.set(next);
        }
    }
}

/// A connection ready for its protocol's server.
enum Started {
    H1(Box<ClientConn>),
    H2(ClientIo),
    /// Mode tcp, with the bytes read already.
    Tcp(ClientIo, BytesMut),
}

/// Runs the connection rules, the TLS handshake and the protocol choice (ALPN on TLS;
/// on cleartext the HTTP/1.1 server recognises the HTTP/2 preface). `None`: the
/// connection is refused or gone.
async fn start(a: Accepted) -> Option<(Started, Arc<ConnCtx>)> {
    let cx = a.cx;
    let _ = a.tcp.set_nodelay(true);
    let fe = &cx.frontend;
    // Connection rules run before TLS, so a rejected client costs no handshake.
    let mut track = None;
    if !fe.connection_rules.is_empty() {
        let snap = &cx.snapshot;
        let nbsrv = |i: usize| snap.nbsrv(i);
        let mut t = crate::stick::Trackers::default();
        if !crate::rules::run_connection(
            &fe.connection_rules,
            &fe.acls,
            &cx.info,
            &fe.name,
            &nbsrv,
            &mut t,
        ) {
            fe.live
                .denied_conns
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::debug!(client = %cx.info.client(), frontend = %fe.name, "connection rejected by tcp_request rules");
            return None;
        }
        if !t.is_empty() {
            track = Some(Box::new(t));
        }
    }
    let mut tcp = a.tcp;
    let mut facts = Facts {
        track,
        ..Facts::default()
    };
    // On cleartext, the bytes read with the header go to the HTTP/1.1 server.
    let mut rbuf = BytesMut::new();
    if a.proxy != ProxyHeader::None {
        let after = a.tls.is_none().then_some(&mut rbuf);
        match Box::pin(proxy_header(&mut tcp, a.proxy, &cx, after)).await {
            Ok(p) => facts.proxied = p.map(Box::new),
            Err(e) => {
                fe.live
                    .count_refused(Some(crate::state::Refusal::ProxyHeader));
                tracing::debug!(peer = %cx.info.peer, frontend = %fe.name, "connection refused: {e}");
                return None;
            }
        }
    }
    let tcp_mode = fe.mode == rampart_config::model::Mode::Tcp;
    let Some(tls) = a.tls else {
        cx.info.learnt(facts);
        if tcp_mode {
            return Some((Started::Tcp(ClientIo::Plain(tcp), rbuf), cx));
        }
        if rbuf.is_empty() {
            crate::io::give_buf(std::mem::take(&mut rbuf));
        }
        let conn = Box::new(ClientConn::new(ClientIo::Plain(tcp), rbuf));
        return Some((Started::H1(conn), cx));
    };
    // Boxed: the handshake state is large and would otherwise sit in every connection's
    // task, TLS or not.
    let hs = Box::pin(tokio::time::timeout(
        fe.timeouts.http_request,
        crate::tls::stream::TlsStream::accept(tcp, tls),
    ))
    .await;
    let (stream, settled) = match hs {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let client = facts
                .proxied
                .and_then(|p| p.addrs)
                .map_or(cx.info.peer, |a| a.0);
            let refused_cert = e
                .get_ref()
                .and_then(|x| x.downcast_ref::<rustls::Error>())
                .is_some_and(|x| {
                    matches!(
                        x,
                        rustls::Error::InvalidCertificate(_)
                            | rustls::Error::NoCertificatesPresented
                    )
                });
            if refused_cert {
                fe.live
                    .count_refused(Some(crate::state::Refusal::ClientCert));
                tracing::info!(%client, frontend = %fe.name, "client certificate refused: {e}");
            } else {
                tracing::debug!(%client, "TLS handshake failed: {e}");
            }
            return None;
        }
        Err(_) => return None,
    };
    facts.sni = settled.sni;
    facts.alpn = settled
        .alpn
        .as_deref()
        .and_then(crate::rules::sample::Alpn::of);
    facts.client_cert = settled
        .client_cert
        .as_ref()
        .and_then(|c| crate::tls::client_cert::ClientCert::parse(c))
        .map(Box::new);
    cx.info.learnt(facts);
    let h2 = settled.alpn.as_deref() == Some(b"h2");
    let io = ClientIo::Tls(Box::new(stream));
    if tcp_mode {
        return Some((Started::Tcp(io, BytesMut::new()), cx));
    }
    if h2 {
        return Some((Started::H2(io), cx));
    }
    let conn = Box::new(ClientConn::new(io, BytesMut::new()));
    Some((Started::H1(conn), cx))
}

/// Reads the PROXY header a connection must start with, or makes sure that one from an
/// untrusted peer does not.
async fn proxy_header(
    tcp: &mut TcpStream,
    expect: ProxyHeader,
    cx: &ConnCtx,
    after: Option<&mut BytesMut>,
) -> Result<Option<crate::proxy_protocol::Proxied>, crate::proxy_protocol::ReadError> {
    use crate::proxy_protocol::{ReadError, looks_like_header, read_header, read_header_into};
    let within = cx.frontend.timeouts.http_request;
    if expect == ProxyHeader::Refused {
        // One look at the first bytes: a header's signature is refused. (A header sent in
        // pieces smaller than its signature slips past this look, but is no valid request
        // either: the HTTP server refuses it.)
        let mut first = [0u8; 12];
        let n = match tokio::time::timeout(within, tcp.peek(&mut first)).await {
            Ok(Ok(n)) => n,
            // Nothing arrived: the HTTP server's own timeout answers that.
            _ => return Ok(None),
        };
        if looks_like_header(&first[..n]) {
            return Err(ReadError::Invalid(format!(
                "PROXY header from {}, which accept_proxy.from does not trust",
                cx.info.peer.ip()
            )));
        }
        return Ok(None);
    }
    match after {
        Some(buf) => read_header_into(tcp, within, buf).await.map(Some),
        None => read_header(tcp, within).await.map(Some),
    }
}

/// Whether `buf`, the first bytes of a cleartext connection, are the HTTP/2 preface
/// (`Some(true)`), cannot be (`Some(false)`), or may be once more bytes arrive.
pub(crate) fn h2c_preface(buf: &[u8]) -> Option<bool> {
    let n = buf.len().min(PREFACE.len());
    if buf[..n] != PREFACE[..n] {
        Some(false)
    } else if n == PREFACE.len() {
        Some(true)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every client connection is one task holding a [`Connection`], and one context
    /// ([`ConnCtx`]) in an `Arc`: their sizes are most of what an idle keep-alive
    /// connection costs. tokio adds 96 bytes of header and trailer and 24 of scheduler, id
    /// and stage to the future and rounds the task up to a multiple of 128 bytes, so up to
    /// 136 bytes the task is 256. The future was 1,264 bytes before the start was boxed,
    /// 568 before each exchange was; the context and the session entry were two
    /// allocations of 224 and 192 bytes.
    ///
    /// A connection set aside ([`lot`]) keeps only its context. With the `Arc`'s counts it
    /// fits jemalloc's 224-byte class up to 208 bytes: in the 256-byte class, with the
    /// tasks and the reactor's registrations, the contexts of connections set aside kept
    /// the pages those freed from going back to the system.
    #[test]
    fn connection_task_stays_small() {
        let whole = std::mem::size_of::<Connection>();
        let h1 = std::mem::size_of::<h1::Serve>();
        let cx = std::mem::size_of::<ConnCtx>();
        eprintln!("connection future: {whole} bytes (HTTP/1.1 part {h1}); context {cx} bytes");
        assert!(whole <= 136, "the connection future grew to {whole} bytes");
        assert!(cx <= 208, "the connection context grew to {cx} bytes");
    }
}
