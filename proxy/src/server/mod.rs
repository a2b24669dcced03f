//! Serving client connections: TLS handshake, protocol choice (ALPN on TLS, the HTTP/2
//! preface on cleartext), then the HTTP/1.1 or HTTP/2 server.

pub mod h1;
pub mod h2;
pub mod streams;

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::handler::ConnCtx;
use crate::io::{ClientIo, read_buf};
use crate::rules::sample::ConnInfo;
use crate::snapshot::{Frontend, Snapshot};
use crate::state::Live;
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

/// Everything a new connection needs.
pub struct Accepted {
    pub tcp: TcpStream,
    pub peer: std::net::SocketAddr,
    pub local: std::net::SocketAddr,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub snapshot: Arc<Snapshot>,
    pub frontend: Arc<Frontend>,
    pub shared: Arc<crate::runtime::Shared>,
    pub live: Arc<Live>,
    pub session: Arc<crate::sessions::Session>,
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
/// The start (connection rules, TLS handshake, protocol choice) runs in a boxed future of
/// its own, freed once it is done, so that the task of a connection is only as large as
/// the protocol's server: that is what an idle keep-alive connection costs.
pub fn serve_connection(
    a: Accepted,
    shutdown: watch::Receiver<crate::snapshot::Retire>,
) -> impl std::future::Future<Output = ()> + Send {
    let accepted = Instant::now();
    let start = Box::pin(start(a, accepted));
    async move {
        match start.await {
            Some((Started::H1(conn), cx)) => h1::serve(conn, cx, shutdown, accepted).await,
            Some((Started::H2(io), cx)) => Box::pin(h2::serve(io, cx, shutdown)).await,
            Some((Started::H2c(io), cx)) => Box::pin(h2::serve(io, cx, shutdown)).await,
            None => {}
        }
    }
}

/// A connection ready for its protocol's server.
enum Started {
    H1(Box<ClientConn>),
    H2(ClientIo),
    /// Cleartext HTTP/2, with the bytes read to recognise it.
    H2c(Rewind<ClientIo>),
}

/// Runs the connection rules, the TLS handshake and the protocol choice (ALPN on TLS,
/// the HTTP/2 preface on cleartext). `None`: the connection is refused or gone.
async fn start(a: Accepted, accepted: Instant) -> Option<(Started, Arc<ConnCtx>)> {
    let _ = a.tcp.set_nodelay(true);
    let fe = a.frontend.clone();
    let mut info = ConnInfo {
        client: a.peer,
        local: a.local,
        tls: a.tls.is_some(),
        sni: None,
    };
    // Connection rules run before TLS, so a rejected client costs no handshake.
    let mut track = None;
    if !fe.connection_rules.is_empty() {
        let snap = &a.snapshot;
        let nbsrv = |i: usize| snap.nbsrv(i);
        let mut t = crate::stick::Trackers::default();
        if !crate::rules::run_connection(
            &fe.connection_rules,
            &fe.acls,
            &info,
            &fe.name,
            &nbsrv,
            &mut t,
        ) {
            fe.live
                .denied_conns
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::debug!(client = %a.peer, frontend = %fe.name, "connection rejected by tcp_request rules");
            return None;
        }
        if !t.is_empty() {
            track = Some(Arc::new(t));
        }
    }
    let (io, h2) = match a.tls {
        Some(acceptor) => {
            // Boxed: the handshake state is large and would otherwise sit in every
            // connection's task, TLS or not.
            let hs = Box::pin(tokio::time::timeout(
                fe.timeouts.http_request,
                acceptor.accept(a.tcp),
            ))
            .await;
            let stream = match hs {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(client = %a.peer, "TLS handshake failed: {e}");
                    return None;
                }
                Err(_) => return None,
            };
            let (_, session) = stream.get_ref();
            info.sni = session.server_name().map(Arc::from);
            let h2 = session.alpn_protocol() == Some(b"h2");
            (ClientIo::Tls(Box::new(stream)), h2)
        }
        None => (ClientIo::Plain(a.tcp), false),
    };
    let cx = Arc::new(ConnCtx {
        info,
        snapshot: a.snapshot,
        frontend: fe.clone(),
        shared: a.shared,
        newest: Default::default(),
        live: a.live,
        session: a.session,
        track,
    });
    let mut conn = Box::new(ClientConn {
        io,
        rbuf: BytesMut::new(),
    });
    if h2 {
        return Some((Started::H2(conn.io), cx));
    }
    if !cx.info.tls && fe.h2 {
        // Cleartext: a client that starts with the HTTP/2 preface speaks h2c.
        let deadline = accepted + fe.timeouts.http_request;
        loop {
            let n = conn.rbuf.len().min(PREFACE.len());
            if n > 0 && conn.rbuf[..n] != PREFACE[..n] {
                break;
            }
            if n == PREFACE.len() {
                let io = Rewind {
                    pre: std::mem::take(&mut conn.rbuf),
                    inner: conn.io,
                };
                return Some((Started::H2c(io), cx));
            }
            match tokio::time::timeout_at(deadline, read_buf(&mut conn.io, &mut conn.rbuf)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
                Ok(Ok(_)) => {}
            }
        }
    }
    Some((Started::H1(conn), cx))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Arc<Snapshot> {
        crate::snapshot::compile_yaml("frontends: { fe: { bind: \"127.0.0.1:0\" } }\n").0
    }

    /// Every client connection is one task holding these futures: their size is most of
    /// what an idle keep-alive connection costs, so they are kept small (the start with
    /// its TLS handshake, each exchange and HTTP/2 are boxed; the idle wait is one small
    /// future). It was 1,264 bytes before the start was boxed, the wait rewritten and the stop
    /// signalled to idle connections through their session.
    #[tokio::test]
    async fn connection_task_stays_small() {
        let snap = snapshot();
        let shared = Arc::new(crate::runtime::Shared {
            snapshot: arc_swap::ArcSwap::new(snap.clone()),
            live: Live::new(),
        });
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (tcp, peer) = l.accept().await.unwrap();
        let (_tx, rx) = watch::channel(crate::snapshot::Retire::Live);
        let cx = Arc::new(ConnCtx {
            info: ConnInfo {
                client: peer,
                local: addr,
                tls: false,
                sni: None,
            },
            snapshot: snap.clone(),
            frontend: snap.frontends[0].clone(),
            shared: shared.clone(),
            newest: Default::default(),
            live: Live::new(),
            session: Live::new()
                .sessions
                .register("fe".into(), peer, addr, false)
                .session
                .clone(),
            track: None,
        });
        let conn = Box::new(ClientConn {
            io: ClientIo::Plain(TcpStream::connect(addr).await.unwrap()),
            rbuf: BytesMut::new(),
        });
        let h1 = std::mem::size_of_val(&h1::serve(conn, cx, rx.clone(), Instant::now()));
        let a = Accepted {
            tcp,
            peer,
            local: addr,
            tls: None,
            frontend: snap.frontends[0].clone(),
            snapshot: snap,
            shared,
            live: Live::new(),
            session: Live::new()
                .sessions
                .register("fe".into(), peer, addr, false)
                .session
                .clone(),
        };
        let whole = std::mem::size_of_val(&serve_connection(a, rx));
        eprintln!("connection future: {whole} bytes (HTTP/1.1 part {h1})");
        assert!(whole <= 640, "the connection future grew to {whole} bytes");
    }
}
