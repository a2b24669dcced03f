//! Connection types: a client connection (plain or TLS) and a server connection (plain or
//! TLS), each one concrete type so that request and response bodies can own them.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

macro_rules! either_io {
    ($name:ident, $tls:ty) => {
        impl AsyncRead for $name {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
                    Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
                }
            }
        }

        impl AsyncWrite for $name {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
                    Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
                }
            }
            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
                    Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
                }
            }
            fn is_write_vectored(&self) -> bool {
                match self {
                    Self::Plain(s) => s.is_write_vectored(),
                    Self::Tls(s) => s.is_write_vectored(),
                }
            }
            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    Self::Plain(s) => Pin::new(s).poll_flush(cx),
                    Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
                }
            }
            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
                    Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
                }
            }
        }

        impl $name {
            /// The TCP socket underneath.
            pub fn tcp(&self) -> &TcpStream {
                match self {
                    Self::Plain(s) => s,
                    Self::Tls(s) => s.tcp(),
                }
            }

            /// Makes closing the connection reset it: what the kernel still holds for a
            /// peer that does not read is dropped rather than sent on, at its pace.
            pub fn reset_on_close(&self) {
                let _ =
                    socket2::SockRef::from(self.tcp()).set_linger(Some(std::time::Duration::ZERO));
            }

            /// [`AsyncWrite::poll_write`], telling the kernel that more of the same message
            /// follows (`MSG_MORE`, as HAProxy sends a message it has not finished): a
            /// part smaller than a segment waits for the next write instead of leaving
            /// alone, so a body that arrives in pieces leaves in full segments, with one
            /// wake-up of the peer instead of one per piece. Over TLS, the records.
            pub fn poll_write_more(
                &mut self,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                match self {
                    Self::Plain(s) => poll_send_more(s, cx, buf),
                    Self::Tls(s) => s.poll_write_more(cx, buf),
                }
            }

            /// Ready when there may be something to read, without a buffer: bytes on
            /// the socket, or for TLS also plaintext already decrypted or a close
            /// already received.
            pub fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self {
                    Self::Plain(s) => s.poll_read_ready(cx),
                    Self::Tls(s) => s.poll_readable(cx),
                }
            }
        }
    };
}

/// Sends `buf` on `tcp` with `MSG_MORE`: more of the same message follows, so the
/// kernel holds a part smaller than a segment back until the next send (or, should
/// none come, for at most about 200 ms, the retransmission timer's floor).
pub fn poll_send_more(
    tcp: &TcpStream,
    cx: &mut Context<'_>,
    buf: &[u8],
) -> Poll<io::Result<usize>> {
    use rustix::net::SendFlags;
    loop {
        std::task::ready!(tcp.poll_write_ready(cx))?;
        let sent = tcp.try_io(tokio::io::Interest::WRITABLE, || {
            rustix::net::send(tcp, buf, SendFlags::MORE | SendFlags::NOSIGNAL)
                .map_err(io::Error::from)
        });
        match sent {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            r => return Poll::Ready(r),
        }
    }
}

/// A client connection.
pub enum ClientIo {
    Plain(TcpStream),
    Tls(Box<crate::tls::stream::TlsStream>),
}
either_io!(ClientIo, crate::tls::stream::TlsStream);

/// A client connection that can let go of what it holds while idle: a TLS connection's
/// keys (see [`crate::tls::stream::TlsStream::park`]).
pub trait Park {
    /// Lets it go until the next record either way; whether there was anything to let go.
    fn park(&mut self) -> bool;
    /// Whether an idle wait should stop to park on the way.
    fn parks(&self) -> bool;
}

impl Park for ClientIo {
    fn park(&mut self) -> bool {
        match self {
            ClientIo::Tls(s) => s.park(),
            ClientIo::Plain(_) => false,
        }
    }

    fn parks(&self) -> bool {
        matches!(self, ClientIo::Tls(s) if s.parks())
    }
}

/// A connection to a server.
pub enum UpIo {
    Plain(TcpStream),
    Tls(Box<crate::tls::stream::TlsStream<rustls::client::UnbufferedClientConnection>>),
}
either_io!(
    UpIo,
    crate::tls::stream::TlsStream<rustls::client::UnbufferedClientConnection>
);

/// Reads into the spare capacity of `buf`, growing it when nearly full; an empty buffer
/// is swapped for one from the worker's pool.
pub fn poll_read_buf<R: AsyncRead + Unpin + ?Sized>(
    io: &mut R,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<io::Result<usize>> {
    if buf.capacity() - buf.len() < 1024 {
        if buf.is_empty() {
            give_buf(std::mem::replace(buf, take_buf()));
        } else {
            buf.reserve(READ_CHUNK);
        }
    }
    tokio_util::io::poll_read_buf(Pin::new(io), cx, buf)
}

/// How much a read asks for at once.
pub const READ_CHUNK: usize = 16 * 1024;

/// Read buffers a worker keeps for reuse.
const POOLED_BUFFERS: usize = 128;

thread_local! {
    static BUFFERS: std::cell::RefCell<std::collections::VecDeque<BytesMut>> =
        const { std::cell::RefCell::new(std::collections::VecDeque::new()) };
    static SCRATCH: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
    static MAPS: std::cell::RefCell<Vec<http::HeaderMap>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Header maps a worker keeps for reuse, and the most fields a kept map has room for: a
/// full pool holds at most about 160 KiB (5 KiB a map), and usually a third of that.
const POOLED_MAPS: usize = 32;
const POOLED_MAP_ROOM: usize = 48;

/// An empty header map with room for `n` fields, from this worker's pool when it has one.
///
/// A parsed head's map is given back once the head is written out (to the server, or to
/// the client), so the next head parsed on this worker reuses its two allocations instead
/// of making and freeing them per message.
pub fn take_map(n: usize) -> http::HeaderMap {
    match MAPS.with(|p| p.borrow_mut().pop()) {
        Some(mut m) => {
            m.reserve(n);
            m
        }
        None => http::HeaderMap::with_capacity(n),
    }
}

/// Gives a header map no longer needed back to this worker's pool (kept only when small).
pub fn give_map(mut m: http::HeaderMap) {
    if m.capacity() == 0 || m.capacity() > POOLED_MAP_ROOM {
        return;
    }
    m.clear();
    MAPS.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < POOLED_MAPS {
            p.push(m);
        }
    });
}

/// A read buffer from this worker's pool, or a new one.
///
/// Connections give their buffer back whenever it is empty (between requests, when a
/// server connection goes back to its pool), so idle connections hold no buffer and busy
/// ones do not allocate one per request. A buffer may come back while a request still
/// points into it (a response body split off a server's buffer); it is reused once that
/// is gone, so the oldest buffers are tried first.
pub fn take_buf() -> BytesMut {
    BUFFERS.with(|p| {
        let mut p = p.borrow_mut();
        for _ in 0..2 {
            let Some(mut b) = p.pop_front() else { break };
            if b.try_reclaim(READ_CHUNK) {
                return b;
            }
            // Still in use: keep it for later (or let it go when the pool is busy).
            if p.len() < POOLED_BUFFERS / 2 {
                p.push_back(b);
            }
        }
        BytesMut::with_capacity(READ_CHUNK)
    })
}

/// Gives an empty (or no longer needed) buffer back to this worker's pool.
pub fn give_buf(mut b: BytesMut) {
    if b.capacity() == 0 {
        return;
    }
    b.clear();
    BUFFERS.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < POOLED_BUFFERS {
            p.push_back(b);
        }
    });
}

/// A scratch vector for encoding a message head, from this worker's pool.
pub fn take_vec() -> Vec<u8> {
    SCRATCH
        .with(|p| p.borrow_mut().pop())
        .unwrap_or_else(|| Vec::with_capacity(1024))
}

/// Returns a scratch vector (kept only when small).
pub fn give_vec(mut v: Vec<u8>) {
    if v.capacity() > 64 * 1024 {
        return;
    }
    v.clear();
    SCRATCH.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < 64 {
            p.push(v);
        }
    });
}

/// Runs `f` with a timeout, arming the timer only if `f` does not finish at once (most
/// writes complete immediately, and a timer costs a clock read and a wheel insertion).
pub async fn timeout_lazy<F: std::future::Future>(
    t: std::time::Duration,
    f: F,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    let mut f = std::pin::pin!(f);
    let first = std::future::poll_fn(|cx| {
        Poll::Ready(match f.as_mut().poll(cx) {
            Poll::Ready(v) => Some(v),
            Poll::Pending => None,
        })
    })
    .await;
    match first {
        Some(v) => Ok(v),
        None => tokio::time::timeout(t, f).await,
    }
}

/// Reads once into `buf`; 0 means end of file.
pub async fn read_buf<R: AsyncRead + Unpin + ?Sized>(
    io: &mut R,
    buf: &mut BytesMut,
) -> io::Result<usize> {
    std::future::poll_fn(|cx| poll_read_buf(io, cx, buf)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use http::header::{CONTENT_LENGTH, HOST};

    #[test]
    fn a_header_map_given_back_is_reused_empty_with_its_room() {
        // Tests run on their own threads, so this thread's pool starts empty.
        let mut m = take_map(8);
        m.insert(HOST, HeaderValue::from_static("a"));
        m.append(CONTENT_LENGTH, HeaderValue::from_static("1"));
        let room = m.capacity();
        give_map(m);
        let again = take_map(4);
        assert!(again.is_empty(), "a reused map holds nothing of before");
        assert_eq!(again.capacity(), room, "a reused map keeps its room");
        assert!(again.get(HOST).is_none());
        // Asked for more room than the pooled map has: it grows.
        give_map(again);
        let big = take_map(room + 20);
        assert!(big.capacity() >= room + 20);
    }

    #[test]
    fn large_or_empty_header_maps_are_not_kept() {
        give_map(http::HeaderMap::new());
        give_map(http::HeaderMap::with_capacity(POOLED_MAP_ROOM * 2));
        assert_eq!(MAPS.with(|p| p.borrow().len()), 0);
        for _ in 0..POOLED_MAPS + 10 {
            give_map(http::HeaderMap::with_capacity(4));
        }
        assert_eq!(MAPS.with(|p| p.borrow().len()), POOLED_MAPS);
    }
}
