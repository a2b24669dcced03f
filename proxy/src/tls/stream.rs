//! TLS connections on rustls's unbuffered API, so that an idle connection holds no buffer:
//! clients' connections (rampart the server) and connections to servers (rampart the
//! client, kept in the pools between requests).
//!
//! rustls's buffered connections keep a 4 KiB record buffer for the life of the
//! connection once it has read anything; with a front door's many idle keep-alive clients
//! that buffer is most of what each one costs. Here the received records sit in a read
//! buffer from the worker's pool only while there is something in it, and the encrypted
//! output in another only until the socket has taken it.
//!
//! A client's connection goes further once its handshake is done: the stream takes the
//! keys out of rustls and protects the records itself ([`super::records`]), so rustls's
//! connection, its handshake buffer and its state go too, and an idle client holds this
//! stream, the record layer and the keys; a parked one ([`TlsStream::park`]) not even
//! the keys' contexts. Connections to servers stay with rustls, which keeps the session
//! tickets servers send after the handshake.
//!
//! The stream is an `AsyncRead + AsyncWrite` like tokio-rustls's, so the HTTP/1, HTTP/2
//! and TCP servers and the upstream clients use it unchanged:
//! - a read decrypts the records received into the caller's buffer (what does not fit
//!   waits in `plain`);
//! - a write encrypts the caller's bytes and accepts them once they are encrypted,
//!   provided the output of the write before has gone to the socket: at most one write's
//!   worth is ever held;
//! - handshake messages after the handshake (tickets, key updates) and alerts go out
//!   ahead of anything encrypted after them.
//!
//! A peer that closes its connection without `close_notify` reads as the end of the
//! stream, as browsers and many servers do; HTTP's own framing tells a cut message.

use std::cell::RefCell;
use std::io;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::crypto::tls13::OkmBlock;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncodeTlsData, EncryptError, ReadTraffic,
    UnbufferedConnectionCommon, UnbufferedStatus, WriteTraffic,
};
use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::{CertificateDer, ServerName};

use super::records::{self, APPLICATION_DATA, Event, Opened, Records};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The most plaintext one write encrypts: two full records.
const MAX_WRITE: usize = 32 * 1024;

/// Room for one full record and its header and tag, the size output buffers start at.
const OUT_BUF: usize = 16 * 1024 + 512;

/// Bytes of answers to the peer's key updates that may wait for it to read them.
const MAX_ANSWERS: usize = 16 * 1024;

/// Buffers of each kind this worker keeps.
const POOLED_OUT: usize = 64;

/// Room for a full record in a read buffer, and more to read at once.
const IN_BUF: usize = 17 * 1024;

thread_local! {
    /// Output buffers, each initialised over its whole capacity (rustls writes into a
    /// `&mut [u8]`), so taking one costs no zeroing.
    static OUT: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    /// Read buffers. Records are copied out of them, never shared, so one comes back
    /// free and the last one given is the next one taken, still in the cache.
    static IN: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

fn take_in() -> BytesMut {
    IN.with(|p| p.borrow_mut().pop())
        .unwrap_or_else(|| BytesMut::with_capacity(IN_BUF))
}

/// Keeps decrypted bytes the reader has no room for yet.
fn keep(plain: &mut Option<Box<BytesMut>>, data: &[u8]) {
    if !data.is_empty() {
        plain
            .get_or_insert_with(Default::default)
            .extend_from_slice(data);
    }
}

/// Gives an emptied read buffer back to this worker's pool.
fn release(rx: &mut BytesMut) {
    if !rx.is_empty() || rx.capacity() == 0 {
        return;
    }
    let mut b = std::mem::take(rx);
    // All of it again (a buffer advanced to its end has no room left).
    if !b.try_reclaim(IN_BUF) || b.capacity() > 4 * IN_BUF {
        return;
    }
    IN.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < POOLED_OUT {
            p.push(b);
        }
    });
}

fn take_out() -> Vec<u8> {
    OUT.with(|p| p.borrow_mut().pop())
        .unwrap_or_else(|| vec![0; OUT_BUF])
}

fn give_out(v: Vec<u8>) {
    // What one write of `MAX_WRITE` grows a buffer to is kept; larger ones (a handshake
    // message with a long certificate chain and the data behind it) are let go.
    if v.len() < OUT_BUF || v.len() > 2 * OUT_BUF {
        return;
    }
    OUT.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < POOLED_OUT {
            p.push(v);
        }
    });
}

/// Bytes waiting for the socket: `buf[start..end]`, with `buf` as long as its capacity.
#[derive(Default)]
struct Out {
    buf: Vec<u8>,
    start: u32,
    end: u32,
}

impl Out {
    fn is_empty(&self) -> bool {
        self.start == self.end
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[self.start as usize..self.end as usize]
    }

    /// Room for at least `n` more bytes at the end.
    fn room(&mut self, n: usize) -> &mut [u8] {
        if self.buf.is_empty() {
            self.buf = take_out();
        }
        let (start, mut end) = (self.start as usize, self.end as usize);
        if self.buf.len() - end < n {
            if start > 0 {
                self.buf.copy_within(start..end, 0);
                end -= start;
                self.start = 0;
                self.end = end as u32;
            }
            if self.buf.len() - end < n {
                self.buf.resize(end + n, 0);
            }
        }
        &mut self.buf[end..]
    }

    fn filled(&mut self, n: usize) {
        self.end += n as u32;
    }

    fn consumed(&mut self, n: usize) {
        self.start += n as u32;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            give_out(std::mem::take(&mut self.buf));
        }
    }
}

/// The two ends of rustls's unbuffered connection, as the stream drives them.
pub trait End: std::ops::DerefMut<Target = UnbufferedConnectionCommon<Self::Data>> {
    type Data;
    fn process<'c, 'i>(&'c mut self, rx: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, Self::Data>;
}

impl End for UnbufferedServerConnection {
    type Data = ServerConnectionData;
    fn process<'c, 'i>(&'c mut self, rx: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(rx)
    }
}

impl End for UnbufferedClientConnection {
    type Data = ClientConnectionData;
    fn process<'c, 'i>(&'c mut self, rx: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(rx)
    }
}

/// A TLS connection over TCP: a client's (rampart the server, the default) or one to a
/// server (`TlsStream<UnbufferedClientConnection>`).
pub struct TlsStream<C = UnbufferedServerConnection> {
    tcp: TcpStream,
    session: Session<C>,
    /// Received TLS bytes not yet processed; no allocation while empty and idle.
    rx: BytesMut,
    /// Decrypted bytes the reader has not taken yet (a record larger than its buffer):
    /// rare, so an idle connection does not carry the room for it.
    plain: Option<Box<BytesMut>>,
    /// Encrypted bytes and handshake messages not yet written.
    tx: Out,
    /// The peer sent `close_notify`, or closed its side of the TCP connection.
    read_closed: bool,
    /// `close_notify` was queued.
    close_sent: bool,
    /// rustls failed (and queued its alert): the connection is unusable, and rustls is
    /// not called again.
    failed: bool,
}

/// Who protects the records: rustls, through the handshake (and for good on connections
/// to servers, whose tickets rustls keeps), or the stream itself once a client's
/// handshake is done ([`super::records`]).
enum Session<C> {
    Rustls(Box<C>),
    Own(Box<Records>),
    /// Between the two, and after a failure to hand over.
    Gone,
}

/// What processing the received records came to.
enum Step {
    /// Plaintext was delivered (to the reader's buffer or to `plain`).
    Plain,
    /// Nothing more to do without more bytes from the peer.
    NeedRead,
    /// The peer closed (`close_notify`), or the connection is closed both ways.
    Closed,
}

/// A handshake message or alert rustls has ready, into `tx`.
fn encode<D>(e: &mut EncodeTlsData<'_, D>, tx: &mut Out) -> io::Result<()> {
    let mut need = 512;
    loop {
        match e.encode(tx.room(need)) {
            Ok(n) => {
                tx.filled(n);
                return Ok(());
            }
            Err(EncodeError::InsufficientSize(s)) => need = s.required_size,
            Err(e) => return Err(io::Error::other(format!("TLS encode: {e}"))),
        }
    }
}

/// Decrypted records: into `out` as far as it fits, the rest kept for the reader. Returns
/// what the records add to the bytes to discard.
fn drain<D>(
    r: &mut ReadTraffic<'_, '_, D>,
    mut out: Option<&mut ReadBuf<'_>>,
    plain: &mut Option<Box<BytesMut>>,
) -> io::Result<usize> {
    let mut discard = 0;
    while let Some(record) = r.next_record() {
        let record = record.map_err(tls_error)?;
        discard += record.discard;
        let mut data = record.payload;
        if let Some(out) = out.as_deref_mut() {
            let n = data.len().min(out.remaining());
            out.put_slice(&data[..n]);
            data = &data[n..];
        }
        keep(plain, data);
    }
    Ok(discard)
}

/// The peer's end of the connection before the handshake was done.
fn closed_in_handshake() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the peer closed the connection during the TLS handshake",
    )
}

/// How many server names a worker keeps to share between its connections.
const SHARED_NAMES: usize = 32;

thread_local! {
    /// The server names this worker's clients asked for lately, and the slot the next new
    /// one takes once the list is full. The clients of a front door ask for a few names,
    /// and each connection keeps the one it asked for for its life: shared, it costs a
    /// reference rather than an allocation per connection. Clients asking for ever new
    /// names only take turns in the slots.
    static NAMES: RefCell<(Vec<Arc<str>>, usize)> = const { RefCell::new((Vec::new(), 0)) };
}

/// A ClientHello's `server_name` as rustls takes it: a DNS name, in lower case.
fn dns_name(raw: &[u8]) -> Option<Arc<str>> {
    let s = std::str::from_utf8(raw).ok()?;
    rustls_pki_types::DnsName::try_from(s).ok()?;
    NAMES.with_borrow_mut(|(names, next)| {
        if let Some(n) = names.iter().find(|n| n.eq_ignore_ascii_case(s)) {
            return Some(n.clone());
        }
        let n: Arc<str> = Arc::from(s.to_ascii_lowercase());
        if names.len() < SHARED_NAMES {
            names.push(n.clone());
        } else {
            names[*next] = n.clone();
            *next = (*next + 1) % SHARED_NAMES;
        }
        Some(n)
    })
}

fn failed() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the TLS connection failed")
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Seals `data` as records of type `typ` into `tx`.
fn self_seal(records: &mut Records, typ: u8, data: &[u8], tx: &mut Out) -> io::Result<()> {
    let room = tx.room(records.sealed_len(data.len()));
    let mut at = 0;
    let r = records.seal(typ, data, room, &mut at);
    tx.filled(at);
    r.map_err(io::Error::from)
}

/// The received records, processed by the stream: plaintext into `out` as far as it
/// fits, the rest into `plain`; alerts and key updates as they come.
fn process_own(
    records: &mut Records,
    rx: &mut BytesMut,
    plain: &mut Option<Box<BytesMut>>,
    tx: &mut Out,
    read_closed: &mut bool,
    mut out: Option<&mut ReadBuf<'_>>,
) -> io::Result<Step> {
    let mut delivered = false;
    let fail = |records: &mut Records, tx: &mut Out, rx: &mut BytesMut, f: records::Fatal| {
        if let Some(alert) = f.alert {
            let _ = self_seal(records, records::ALERT, &[2, alert], tx);
        }
        *rx = BytesMut::new();
        io::Error::from(f)
    };
    loop {
        let (len, typ, range) = match records.open(&mut rx[..]) {
            Ok(Opened::Record { len, typ, range }) => (len, typ, range),
            Ok(Opened::Partial) => {
                release(rx);
                return Ok(if delivered {
                    Step::Plain
                } else {
                    Step::NeedRead
                });
            }
            Err(f) => return Err(fail(records, tx, rx, f)),
        };
        if typ == APPLICATION_DATA {
            let mut data = &rx[range];
            if let Some(out) = out.as_deref_mut() {
                let n = data.len().min(out.remaining());
                out.put_slice(&data[..n]);
                data = &data[n..];
            }
            keep(plain, data);
            delivered = true;
        } else {
            // What goes back (key updates) waits for the peer to read it: a peer that
            // keeps asking without reading is cut off rather than buffered for.
            if tx.bytes().len() > MAX_ANSWERS {
                let f = records::Fatal {
                    alert: None,
                    why: "the peer asks for key updates and does not read the answers",
                };
                return Err(fail(records, tx, rx, f));
            }
            let room = tx.room(records.sealed_len(0));
            let mut at = 0;
            let r = records.control(typ, &rx[range], room, &mut at);
            tx.filled(at);
            match r {
                Ok(Event::Nothing) => {}
                Ok(Event::Closed) => {
                    *read_closed = true;
                    rx.advance(len);
                    release(rx);
                    return Ok(Step::Closed);
                }
                Err(f) => return Err(fail(records, tx, rx, f)),
            }
        }
        rx.advance(len);
    }
}

/// What a client's handshake settled, kept from rustls before the stream takes over.
#[derive(Debug, Default)]
pub struct Settled {
    /// The server name the client asked for (SNI), in lower case.
    pub sni: Option<Arc<str>>,
    /// The application protocol agreed (ALPN).
    pub alpn: Option<Vec<u8>>,
    /// The client's certificate, when it sent one.
    pub client_cert: Option<CertificateDer<'static>>,
}

/// TLS 1.3 traffic secrets learnt during the handshake: (client's, server's).
type Traffic = Option<Box<(Option<OkmBlock>, Option<OkmBlock>)>>;

impl TlsStream<UnbufferedServerConnection> {
    /// Accepts a TLS connection: the handshake, with application data the client sent
    /// right behind its last flight kept for the first read. The server name the client
    /// asked for (SNI) is read from the ClientHello as rustls reads it (a DNS name; an IP
    /// address counts as none), since rustls's unbuffered connection does not tell it.
    ///
    /// When `config` allows secret extraction ([`prepare`]), the stream then protects
    /// the records itself and rustls's connection is let go.
    pub async fn accept(tcp: TcpStream, config: Arc<ServerConfig>) -> io::Result<(Self, Settled)> {
        let own = config.enable_secret_extraction;
        let conn = UnbufferedServerConnection::new(config).map_err(tls_error)?;
        let mut s = TlsStream::new(tcp, conn);
        // `None` until the ClientHello is whole.
        let mut sni = None;
        let mut traffic: Traffic = None;
        std::future::poll_fn(|cx| {
            records::capture(&mut traffic, || s.poll_handshake(cx, Some(&mut sni)))
        })
        .await?;
        let mut settled = Settled {
            sni: sni.flatten(),
            ..Settled::default()
        };
        if let Session::Rustls(conn) = &s.session {
            settled.alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
            settled.client_cert = conn
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.clone().into_owned());
        }
        if own {
            s.take_over(traffic)?;
        }
        Ok((s, settled))
    }

    /// Hands the record layer over from rustls to the stream, unless something of the
    /// connection is beyond what [`Records`] does (then rustls goes on).
    fn take_over(&mut self, traffic: Traffic) -> io::Result<()> {
        let Session::Rustls(conn) = &self.session else {
            return Ok(());
        };
        if self.failed {
            return Ok(());
        }
        let (Some(version), Some(suite)) =
            (conn.protocol_version(), conn.negotiated_cipher_suite())
        else {
            return Ok(());
        };
        let traffic = traffic.and_then(|t| match *t {
            // Ours first: the server's.
            (Some(client), Some(server)) => Some((server, client)),
            _ => None,
        });
        if !Records::takes(version, suite, traffic.is_some()) {
            return Ok(());
        }
        let Session::Rustls(conn) = std::mem::replace(&mut self.session, Session::Gone) else {
            return Ok(());
        };
        let (secrets, _kernel) = conn.dangerous_into_kernel_connection().map_err(|e| {
            self.failed = true;
            tls_error(e)
        })?;
        let records = Records::new(version, suite, secrets, traffic).map_err(|why| {
            self.failed = true;
            io::Error::other(format!("TLS: {why}"))
        })?;
        self.session = Session::Own(Box::new(records));
        Ok(())
    }
}

/// Lets streams accepted with `config` take the record layer over from rustls once the
/// handshake is done (see [`super::records`]).
pub fn prepare(config: &mut ServerConfig) {
    config.enable_secret_extraction = true;
    config.key_log = Arc::new(records::Capture);
}

impl TlsStream<UnbufferedClientConnection> {
    /// Connects over TLS to a server named `name` (SNI, and the name its certificate is
    /// checked against).
    pub async fn connect(
        tcp: TcpStream,
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
    ) -> io::Result<Self> {
        let conn = UnbufferedClientConnection::new(config, name).map_err(tls_error)?;
        let mut s = TlsStream::new(tcp, conn);
        std::future::poll_fn(|cx| s.poll_handshake(cx, None)).await?;
        Ok(s)
    }
}

impl<C: End> TlsStream<C> {
    /// The rustls connection (ALPN protocol, the peer's certificates), while rustls
    /// protects the records.
    pub fn session(&self) -> Option<&C> {
        match &self.session {
            Session::Rustls(c) => Some(c),
            _ => None,
        }
    }

    fn is_handshaking(&self) -> bool {
        match &self.session {
            Session::Rustls(c) => c.is_handshaking(),
            _ => false,
        }
    }

    fn new(tcp: TcpStream, conn: C) -> Self {
        Self::with_session(tcp, Session::Rustls(Box::new(conn)))
    }

    fn with_session(tcp: TcpStream, session: Session<C>) -> Self {
        TlsStream {
            tcp,
            session,
            rx: BytesMut::new(),
            plain: None,
            tx: Out::default(),
            read_closed: false,
            close_sent: false,
            failed: false,
        }
    }

    /// The handshake; on the server side, `sni` gets the name the ClientHello asks for.
    fn poll_handshake(
        &mut self,
        cx: &mut Context<'_>,
        mut sni: Option<&mut Option<Option<Arc<str>>>>,
    ) -> Poll<io::Result<()>> {
        loop {
            let received = self.rx.len();
            if let Some(sni) = sni.as_deref_mut().filter(|s| s.is_none()) {
                let hello = crate::rules::payload::Payload::new(&self.rx, false);
                let name = hello.sni();
                if !hello.short.get() {
                    *sni = Some(name.and_then(dns_name));
                }
            }
            let step = self.process(None)?;
            if let Some(sni) = sni.as_deref_mut().filter(|s| s.is_none())
                && self.rx.len() < received
            {
                // rustls took records of a ClientHello longer than one record (16 KiB),
                // which the parser above does not join: the name stays unknown.
                *sni = Some(None);
            }
            match step {
                // Early data, or a record after the handshake's last: the next may be here.
                Step::Plain if self.is_handshaking() => continue,
                Step::Plain | Step::NeedRead => {}
                Step::Closed => return Poll::Ready(Err(closed_in_handshake())),
            }
            if !self.is_handshaking() {
                // Tickets and the like may still wait in `tx`: they go out ahead of the
                // first response.
                let _ = self.poll_flush_tx(cx)?;
                return Poll::Ready(Ok(()));
            }
            // The peer answers what we sent: send it all before waiting.
            ready!(self.poll_flush_tx(cx))?;
            if ready!(self.poll_fill(cx))? == 0 {
                return Poll::Ready(Err(closed_in_handshake()));
            }
        }
    }

    /// Processes the received records until there is plaintext, or more is needed from
    /// the peer. Plaintext goes to `out` as far as it fits, the rest to `plain`.
    fn process(&mut self, out: Option<&mut ReadBuf<'_>>) -> io::Result<Step> {
        self.guarded(|s| {
            let TlsStream {
                session,
                rx,
                plain,
                tx,
                read_closed,
                ..
            } = s;
            match session {
                Session::Rustls(conn) => {
                    Self::process_records(conn, rx, plain, tx, read_closed, out)
                }
                Session::Own(records) => process_own(records, rx, plain, tx, read_closed, out),
                Session::Gone => Err(failed()),
            }
        })
    }

    /// Runs `f` unless rustls has failed before, and marks it failed when `f` fails.
    fn guarded<R>(&mut self, f: impl FnOnce(&mut Self) -> io::Result<R>) -> io::Result<R> {
        if self.failed {
            return Err(failed());
        }
        let r = f(self);
        if r.is_err() {
            self.failed = true;
        }
        r
    }

    fn process_records(
        conn: &mut C,
        rx: &mut BytesMut,
        plain: &mut Option<Box<BytesMut>>,
        tx: &mut Out,
        read_closed: &mut bool,
        mut out: Option<&mut ReadBuf<'_>>,
    ) -> io::Result<Step> {
        loop {
            let UnbufferedStatus { mut discard, state } = conn.process(&mut rx[..]);
            let state = match state {
                Ok(s) => s,
                Err(e) => {
                    rx.advance(discard.min(rx.len()));
                    Self::queue_alerts(conn, rx, tx);
                    *rx = BytesMut::new();
                    return Err(tls_error(e));
                }
            };
            let step = match state {
                ConnectionState::ReadTraffic(mut r) => {
                    discard += drain(&mut r, out.as_deref_mut(), plain)?;
                    Some(Step::Plain)
                }
                ConnectionState::ReadEarlyData(_) => {
                    // Only when the configuration accepts early data, which it does not.
                    return Err(io::Error::other("TLS early data, which is not accepted"));
                }
                ConnectionState::EncodeTlsData(mut e) => {
                    encode(&mut e, tx)?;
                    None
                }
                ConnectionState::TransmitTlsData(t) => {
                    // The bytes are in `tx`, ahead of anything written after them; they go
                    // out with the next flush.
                    t.done();
                    None
                }
                ConnectionState::BlockedHandshake | ConnectionState::WriteTraffic(_) => {
                    Some(Step::NeedRead)
                }
                ConnectionState::PeerClosed | ConnectionState::Closed => {
                    *read_closed = true;
                    Some(Step::Closed)
                }
                _ => {
                    return Err(io::Error::other("unexpected TLS connection state"));
                }
            };
            rx.advance(discard);
            if let Some(step) = step {
                release(rx);
                return Ok(step);
            }
        }
    }

    /// After an error: the alert rustls queued for the peer, into `tx` (sent best effort
    /// by the caller's next flush, or by `Drop`).
    fn queue_alerts(conn: &mut C, rx: &mut BytesMut, tx: &mut Out) {
        // One call: rustls hands out what it queued before it looks at the received bytes
        // again (which would fail once more). The same bytes go along all the same, as
        // rustls may still point into them.
        let UnbufferedStatus { state, .. } = conn.process(&mut rx[..]);
        if let Ok(ConnectionState::EncodeTlsData(mut e)) = state {
            let _ = encode(&mut e, tx);
        }
    }

    /// Reads more TLS bytes from the socket; 0 at its end.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.rx.capacity() - self.rx.len() < 1024 {
            if self.rx.is_empty() {
                self.rx = take_in();
            } else {
                // A record longer than what is left: room for all of it.
                self.rx.reserve(IN_BUF);
            }
        }
        let r = tokio_util::io::poll_read_buf(Pin::new(&mut self.tcp), cx, &mut self.rx);
        if r.is_pending() {
            release(&mut self.rx);
        }
        r
    }

    /// Writes what `tx` holds to the socket.
    fn poll_flush_tx(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_send_tx(cx, false)
    }

    /// Writes `tx` out; `more`: more of the message follows (`MSG_MORE`).
    fn poll_send_tx(&mut self, cx: &mut Context<'_>, more: bool) -> Poll<io::Result<()>> {
        while !self.tx.is_empty() {
            let n = if more {
                ready!(crate::io::poll_send_more(&self.tcp, cx, self.tx.bytes()))?
            } else {
                ready!(Pin::new(&mut self.tcp).poll_write(cx, self.tx.bytes()))?
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.tx.consumed(n);
        }
        Poll::Ready(Ok(()))
    }

    /// Runs `f` on rustls's write state, once what rustls has to send first (handshake
    /// messages, alerts) is in `tx`.
    fn with_write<R>(
        &mut self,
        f: impl FnOnce(WriteTraffic<'_, C::Data>, &mut Out) -> io::Result<R>,
    ) -> io::Result<R> {
        self.guarded(|s| s.with_write_state(f))
    }

    fn with_write_state<R>(
        &mut self,
        f: impl FnOnce(WriteTraffic<'_, C::Data>, &mut Out) -> io::Result<R>,
    ) -> io::Result<R> {
        loop {
            // The received bytes go along (rustls may point into those it has begun), and
            // a record among them that completes is decrypted for the reader.
            let Session::Rustls(conn) = &mut self.session else {
                return Err(failed());
            };
            let UnbufferedStatus { mut discard, state } = conn.process(&mut self.rx[..]);
            match state.map_err(tls_error)? {
                ConnectionState::WriteTraffic(w) => {
                    self.rx.advance(discard);
                    release(&mut self.rx);
                    return f(w, &mut self.tx);
                }
                ConnectionState::EncodeTlsData(mut e) => encode(&mut e, &mut self.tx)?,
                ConnectionState::TransmitTlsData(t) => t.done(),
                ConnectionState::ReadTraffic(mut r) => {
                    discard += drain(&mut r, None, &mut self.plain)?;
                }
                ConnectionState::PeerClosed => self.read_closed = true,
                ConnectionState::Closed => return Err(io::ErrorKind::BrokenPipe.into()),
                _ => {
                    return Err(io::Error::new(
                        io::ErrorKind::NotConnected,
                        "TLS connection not ready for application data",
                    ));
                }
            }
            self.rx.advance(discard);
        }
    }

    /// Encrypts `data` into `tx`.
    fn encrypt(&mut self, data: &[u8]) -> io::Result<()> {
        if let Session::Own(records) = &mut self.session {
            return self_seal(records, APPLICATION_DATA, data, &mut self.tx)
                .inspect_err(|_| self.failed = true);
        }
        self.with_write(|mut w, tx| {
            // Each record adds a header, a tag and (TLS 1.3) its content type.
            let mut need = data.len() + (data.len() / (16 * 1024) + 1) * 64;
            loop {
                match w.encrypt(data, tx.room(need)) {
                    Ok(n) => {
                        tx.filled(n);
                        return Ok(());
                    }
                    Err(EncryptError::InsufficientSize(s)) => need = s.required_size,
                    Err(e) => return Err(io::Error::other(format!("TLS encrypt: {e}"))),
                }
            }
        })
    }

    /// Lets an idle connection's keys go until its next record ([`Records::park`]), when
    /// the stream protects the records and nothing is buffered either way. Returns
    /// whether there was something to let go.
    pub fn park(&mut self) -> bool {
        match &mut self.session {
            Session::Own(r) if self.rx.is_empty() && self.plain.is_none() && self.tx.is_empty() => {
                r.park()
            }
            _ => false,
        }
    }

    /// Whether [`TlsStream::park`] can let anything go once the connection is idle.
    pub fn parks(&self) -> bool {
        matches!(self.session, Session::Own(_))
    }

    /// Takes an idle connection apart into its socket and its record layer (parked: see
    /// [`TlsStream::park`]), for it to wait without a stream ([`crate::server::lot`]);
    /// [`TlsStream::unparked`] puts it together again. Only a connection with nothing
    /// buffered either way, not closing and not failed, comes apart: otherwise it comes
    /// back whole.
    pub fn into_parked(
        mut self: Box<Self>,
    ) -> Result<io::Result<(std::net::TcpStream, Box<Records>)>, Box<Self>> {
        let quiet = self.rx.is_empty()
            && self.plain.is_none()
            && self.tx.is_empty()
            && !self.read_closed
            && !self.close_sent
            && !self.failed;
        if !quiet || !matches!(self.session, Session::Own(_)) {
            return Err(self);
        }
        // The stream's drop sends what is queued, so its socket cannot be moved out: a
        // second descriptor of it goes, and the stream's own leaves the reactor and is
        // closed with the stream.
        let tcp = match self.tcp.as_fd().try_clone_to_owned() {
            Ok(fd) => std::net::TcpStream::from(fd),
            Err(e) => return Ok(Err(e)),
        };
        let Session::Own(mut r) = std::mem::replace(&mut self.session, Session::Gone) else {
            return Ok(Err(failed()));
        };
        r.park();
        Ok(Ok((tcp, r)))
    }

    /// A connection [`TlsStream::into_parked`] took apart, whole again.
    pub fn unparked(tcp: TcpStream, records: Box<Records>) -> Box<Self> {
        Box::new(Self::with_session(tcp, Session::Own(records)))
    }

    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// Ready when a read may make progress without waiting for the socket: plaintext or
    /// records already received, the peer's close, or a message of rustls's still to send
    /// (a read sends it, and waits for the socket to take it).
    pub fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.plain.is_some() || !self.rx.is_empty() || self.read_closed || !self.tx.is_empty() {
            Poll::Ready(Ok(()))
        } else {
            self.tcp.poll_read_ready(cx)
        }
    }
}

impl<C: End + Unpin> AsyncRead for TlsStream<C> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if let Some(plain) = this.plain.as_mut() {
                let n = plain.len().min(buf.remaining());
                buf.put_slice(&plain[..n]);
                plain.advance(n);
                if plain.is_empty() {
                    this.plain = None;
                }
                return Poll::Ready(Ok(()));
            }
            if this.read_closed || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            let before = buf.filled().len();
            match this.process(Some(buf))? {
                Step::Plain if buf.filled().len() > before || this.plain.is_some() => {
                    return Poll::Ready(Ok(()));
                }
                // An empty record: the next may already be here.
                Step::Plain => continue,
                Step::NeedRead => {}
                Step::Closed => return Poll::Ready(Ok(())),
            }
            // Handshake messages rustls answered with (a key update) go out as they can.
            if let Poll::Ready(Err(e)) = this.poll_flush_tx(cx) {
                return Poll::Ready(Err(e));
            }
            if ready!(this.poll_fill(cx))? == 0 {
                // The end of the TCP stream, with or without `close_notify`.
                this.read_closed = true;
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl<C: End> TlsStream<C> {
    /// A write after which more of the same message follows: its records go out with
    /// `MSG_MORE` (see [`crate::io::ClientIo::poll_write_more`]).
    pub fn poll_write_more(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_write_slices(cx, &[io::IoSlice::new(buf)], true)
    }

    fn poll_write_slices(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
        more: bool,
    ) -> Poll<io::Result<usize>> {
        // What the last write encrypted goes out first: one write's worth at most waits.
        ready!(self.poll_flush_tx(cx))?;
        if self.close_sent {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let n = match bufs.iter().find(|b| !b.is_empty()) {
            None => return Poll::Ready(Ok(0)),
            Some(first) if first.len() >= MAX_WRITE || bufs.len() == 1 => {
                let n = first.len().min(MAX_WRITE);
                self.encrypt(&first[..n])?;
                n
            }
            Some(_) => {
                // Several slices (a head and a body): one record for all of them, as far
                // as they fit one write.
                let mut joined = crate::io::take_vec();
                for b in bufs {
                    let take = b.len().min(MAX_WRITE - joined.len());
                    joined.extend_from_slice(&b[..take]);
                    if joined.len() == MAX_WRITE {
                        break;
                    }
                }
                let r = self.encrypt(&joined);
                let n = joined.len();
                crate::io::give_vec(joined);
                r?;
                n
            }
        };
        if let Poll::Ready(Err(e)) = self.poll_send_tx(cx, more) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }
}

impl<C: End + Unpin> AsyncWrite for TlsStream<C> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_write_slices(cx, &[io::IoSlice::new(buf)], false)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_slices(cx, bufs, false)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_flush_tx(cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_sent {
            ready!(this.poll_flush_tx(cx))?;
            this.close_sent = true;
            if let Session::Own(records) = &mut this.session {
                let _ = self_seal(records, records::ALERT, &[1, 0], &mut this.tx);
                ready!(this.poll_flush_tx(cx))?;
                return Pin::new(&mut this.tcp).poll_shutdown(cx);
            }
            // Best effort: a connection rustls has closed already has nothing to say.
            let _ = this.with_write(|mut w, tx| {
                let n = w
                    .queue_close_notify(tx.room(64))
                    .map_err(|e| io::Error::other(format!("TLS close_notify: {e}")))?;
                tx.filled(n);
                Ok(())
            });
        }
        ready!(this.poll_flush_tx(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

impl<C> Drop for TlsStream<C> {
    fn drop(&mut self) {
        // An alert queued by a failure is sent if the socket takes it at once.
        if !self.tx.is_empty() {
            let _ = self.tcp.try_write(self.tx.bytes());
        }
        give_out(std::mem::take(&mut self.tx.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    type Client = tokio_rustls::client::TlsStream<TcpStream>;

    /// Server and client settings for a certificate of `tls.test` and 127.0.0.1.
    fn configs() -> (rustls::ServerConfig, rustls::ClientConfig) {
        configs_for(
            rustls::crypto::aws_lc_rs::default_provider(),
            rustls::DEFAULT_VERSIONS,
        )
    }

    /// As [`configs`], the client with this provider and these versions.
    fn configs_for(
        client_provider: rustls::crypto::CryptoProvider,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> (rustls::ServerConfig, rustls::ClientConfig) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(vec!["tls.test".to_owned(), "127.0.0.1".to_owned()])
                .unwrap();
        let cert = params.self_signed(&key).unwrap();
        let der = CertificateDer::from(cert.der().to_vec());
        let server = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![der.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(client_provider))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (server, client)
    }

    /// A server stream and a rustls client connected to it over loopback, the client
    /// asking for `name`.
    async fn pair(name: &str) -> ((TlsStream, Settled), Client) {
        let (mut server, client) = configs();
        prepare(&mut server);
        pair_with(server, client, name).await
    }

    /// As [`pair`], with these settings.
    async fn pair_with(
        server: rustls::ServerConfig,
        client: rustls::ClientConfig,
        name: &str,
    ) -> ((TlsStream, Settled), Client) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let name = ServerName::try_from(name.to_owned()).unwrap();
        let connect = async move {
            let tcp = TcpStream::connect(addr).await.unwrap();
            tokio_rustls::TlsConnector::from(Arc::new(client))
                .connect(name, tcp)
                .await
                .unwrap()
        };
        let accept = async move {
            let (tcp, _) = listener.accept().await.unwrap();
            TlsStream::accept(tcp, Arc::new(server)).await.unwrap()
        };
        tokio::join!(accept, connect)
    }

    fn holds_nothing<C>(s: &TlsStream<C>) -> bool {
        s.rx.capacity() == 0 && s.plain.is_none() && s.tx.buf.is_empty()
    }

    #[tokio::test]
    async fn an_exchange_leaves_the_connection_without_buffers() {
        let ((mut s, settled), mut c) = pair("TLS.Test").await;
        assert_eq!(settled.sni.as_deref(), Some("tls.test"));
        assert!(
            s.session().is_none(),
            "the stream protects the records itself"
        );
        c.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"GET / HTTP/1.1\r\n\r\n");
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n";
        let slices = [io::IoSlice::new(head), io::IoSlice::new(b"hello")];
        let n = s.write_vectored(&slices).await.unwrap();
        assert_eq!(n, head.len() + 5, "both slices are taken at once");
        s.flush().await.unwrap();
        let mut got = vec![0u8; head.len() + 5];
        c.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[head.len()..], b"hello");
        assert!(holds_nothing(&s), "an idle connection holds no buffer");
    }

    /// The stream is boxed in each TLS connection, and after the handshake holds the
    /// record layer's state in a box of its own: together with the keys' contexts
    /// (aws-lc's, 1,184 bytes with AES-256-GCM, let go while the connection is parked),
    /// that is what an idle TLS connection costs besides what any connection costs.
    /// jemalloc's size classes are 128, 160, 192, 224, 256. The stream is 128 bytes in the
    /// release binary; test builds, where tokio's multi-threaded scheduler makes the socket
    /// 8 bytes larger, see 136.
    #[test]
    fn connections_share_the_server_names_they_ask_for() {
        let a = dns_name(b"Shared.Example").unwrap();
        let b = dns_name(b"shared.example").unwrap();
        assert_eq!(&*a, "shared.example");
        assert!(Arc::ptr_eq(&a, &b), "the same name is kept twice");
        assert!(dns_name(b"not a name").is_none());
        // Past the list's room, new names take turns in it and are still right.
        for i in 0..3 * SHARED_NAMES {
            let raw = format!("N{i}.example");
            assert_eq!(&*dns_name(raw.as_bytes()).unwrap(), format!("n{i}.example"));
        }
        NAMES.with_borrow(|(names, _)| assert_eq!(names.len(), SHARED_NAMES));
        let again = dns_name(b"shared.example").unwrap();
        assert_eq!(&*again, "shared.example");
    }

    #[test]
    fn a_tls_stream_stays_in_its_size_class() {
        let n = std::mem::size_of::<TlsStream>();
        let r = std::mem::size_of::<Records>();
        eprintln!("TLS stream: {n} bytes, record layer: {r}");
        assert!(n <= 136, "the TLS stream grew to {n} bytes");
        assert!(r <= 160, "the record layer grew to {r} bytes");
    }

    #[tokio::test]
    async fn a_connection_to_a_server_leaves_no_buffer_and_negotiates_alpn() {
        let (mut server, mut client) = configs();
        server.alpn_protocols = vec![b"h2".to_vec()];
        client.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let origin = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut s = tokio_rustls::TlsAcceptor::from(Arc::new(server))
                .accept(tcp)
                .await
                .unwrap();
            assert_eq!(s.get_ref().1.server_name(), Some("tls.test"));
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(&buf).await.unwrap();
            s.write_all(&vec![7u8; 50_000]).await.unwrap();
            s.flush().await.unwrap();
            // Until the client closes.
            let mut rest = Vec::new();
            s.read_to_end(&mut rest).await.unwrap();
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("tls.test").unwrap();
        let mut c = TlsStream::connect(tcp, Arc::new(client), name)
            .await
            .unwrap();
        assert_eq!(c.session().unwrap().alpn_protocol(), Some(&b"h2"[..]));
        c.write_all(b"ping").await.unwrap();
        let mut back = vec![0u8; 4 + 50_000];
        c.read_exact(&mut back).await.unwrap();
        assert_eq!(&back[..4], b"ping");
        assert!(back[4..].iter().all(|&b| b == 7));
        assert!(holds_nothing(&c), "an idle connection holds no buffer");
        c.shutdown().await.unwrap();
        origin.await.unwrap();
    }

    #[tokio::test]
    async fn a_server_with_an_untrusted_certificate_is_refused() {
        let (server, _) = configs();
        let (_, other) = configs();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let _ = tokio_rustls::TlsAcceptor::from(Arc::new(server))
                .accept(tcp)
                .await;
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("tls.test").unwrap();
        let Err(e) = TlsStream::connect(tcp, Arc::new(other), name).await else {
            panic!("a certificate of another authority was accepted");
        };
        let inner = e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>());
        assert!(
            matches!(inner, Some(rustls::Error::InvalidCertificate(_))),
            "{e}"
        );
    }

    #[tokio::test]
    async fn an_ip_address_is_no_server_name() {
        let ((_, settled), _c) = pair("127.0.0.1").await;
        assert_eq!(settled.sni, None);
    }

    #[tokio::test]
    async fn records_larger_than_reads_and_writes_larger_than_records() {
        let ((mut s, _), mut c) = pair("tls.test").await;
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let sent = data.clone();
        let client = tokio::spawn(async move {
            c.write_all(&sent).await.unwrap();
            let mut back = Vec::new();
            // The server's close_notify makes a clean end: no error.
            c.read_to_end(&mut back).await.unwrap();
            back
        });
        // Reads much smaller than a record: the rest of each record waits in `plain`.
        let mut got = Vec::new();
        let mut small = [0u8; 100];
        while got.len() < data.len() {
            let n = s.read(&mut small).await.unwrap();
            assert!(n > 0);
            got.extend_from_slice(&small[..n]);
        }
        assert_eq!(got, data);
        s.write_all(&data).await.unwrap();
        s.shutdown().await.unwrap();
        assert_eq!(client.await.unwrap(), data);
    }

    #[tokio::test]
    async fn a_key_update_the_client_asks_for_is_answered() {
        let ((mut s, _), mut c) = pair("tls.test").await;
        c.write_all(b"one ").await.unwrap();
        c.get_mut().1.refresh_traffic_keys().unwrap();
        c.write_all(b"two").await.unwrap();
        c.flush().await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while got.len() < 7 {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, b"one two");
        // The answer goes out under the server's new keys, after its own key update.
        s.write_all(b"three").await.unwrap();
        s.flush().await.unwrap();
        let mut back = [0u8; 5];
        c.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"three");
    }

    #[tokio::test]
    async fn the_clients_close_notify_reads_as_the_end() {
        let ((mut s, _), mut c) = pair("tls.test").await;
        c.write_all(b"bye").await.unwrap();
        c.shutdown().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"bye");
    }

    #[tokio::test]
    async fn a_client_that_is_not_tls_fails_the_handshake() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["tls.test".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let server = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(cert.der().to_vec())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap();
        let client = tokio::spawn(async move {
            let mut tcp = TcpStream::connect(addr).await.unwrap();
            tcp.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
                .await
                .unwrap();
            let mut answer = Vec::new();
            let _ = tcp.read_to_end(&mut answer).await;
            answer
        });
        let (tcp, _) = listener.accept().await.unwrap();
        let Err(err) = TlsStream::accept(tcp, Arc::new(server)).await else {
            panic!("the handshake succeeded");
        };
        assert!(
            err.get_ref()
                .and_then(|e| e.downcast_ref::<rustls::Error>())
                .is_some(),
            "{err}"
        );
        // A TLS alert record (type 21) went back before the connection closed.
        let answer = client.await.unwrap();
        assert_eq!(answer.first(), Some(&21), "{answer:?}");
    }

    /// Settings whose client is limited to `version` and `suite`.
    fn configs_with(
        version: &'static rustls::SupportedProtocolVersion,
        suite: rustls::CipherSuite,
    ) -> (rustls::ServerConfig, rustls::ClientConfig) {
        let mut provider = rustls::crypto::aws_lc_rs::default_provider();
        provider.cipher_suites.retain(|s| s.suite() == suite);
        configs_for(provider, &[version])
    }

    /// Both ways, records small and large, under each protocol version and cipher suite.
    #[tokio::test]
    async fn every_version_and_suite_is_taken_over() {
        use rustls::CipherSuite as S;
        let cases = [
            (&rustls::version::TLS13, S::TLS13_AES_128_GCM_SHA256),
            (&rustls::version::TLS13, S::TLS13_AES_256_GCM_SHA384),
            (&rustls::version::TLS13, S::TLS13_CHACHA20_POLY1305_SHA256),
            (
                &rustls::version::TLS12,
                S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            ),
            (
                &rustls::version::TLS12,
                S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            ),
            (
                &rustls::version::TLS12,
                S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            ),
        ];
        for (version, suite) in cases {
            let (mut server, client) = configs_with(version, suite);
            prepare(&mut server);
            let ((mut s, _), mut c) = pair_with(server, client, "tls.test").await;
            assert!(s.session().is_none(), "{suite:?} stays with rustls");
            assert_eq!(
                c.get_ref().1.negotiated_cipher_suite().map(|x| x.suite()),
                Some(suite)
            );
            let data: Vec<u8> = (0..40_000u32).map(|i| (i * 13 % 253) as u8).collect();
            for round in 0..3 {
                if round == 2 {
                    // Idle: the keys go, and come back for the next records.
                    assert!(s.park(), "{suite:?}: nothing to let go");
                    assert!(!s.park(), "{suite:?}: parked twice");
                }
                let n = if round == 1 { data.len() } else { 10 + round };
                c.write_all(&data[..n]).await.unwrap();
                c.flush().await.unwrap();
                let mut got = vec![0u8; n];
                s.read_exact(&mut got).await.unwrap();
                assert_eq!(got, data[..n], "{suite:?} round {round}");
                s.write_all(&got).await.unwrap();
                s.flush().await.unwrap();
                let mut back = vec![0u8; n];
                c.read_exact(&mut back).await.unwrap();
                assert_eq!(back, data[..n], "{suite:?} round {round}");
            }
            s.shutdown().await.unwrap();
            let mut rest = Vec::new();
            c.read_to_end(&mut rest).await.unwrap();
            assert!(rest.is_empty());
        }
    }

    #[tokio::test]
    async fn key_updates_follow_one_another() {
        let ((mut s, _), mut c) = pair("tls.test").await;
        for i in 0..5u8 {
            if i % 2 == 1 {
                assert!(s.park());
            }
            c.get_mut().1.refresh_traffic_keys().unwrap();
            c.write_all(&[i; 3]).await.unwrap();
            c.flush().await.unwrap();
            let mut got = [0u8; 3];
            s.read_exact(&mut got).await.unwrap();
            assert_eq!(got, [i; 3]);
            s.write_all(&[i + 10; 2]).await.unwrap();
            s.flush().await.unwrap();
            let mut back = [0u8; 2];
            c.read_exact(&mut back).await.unwrap();
            assert_eq!(back, [i + 10; 2]);
        }
    }

    #[tokio::test]
    async fn a_connection_with_bytes_in_flight_keeps_its_keys() {
        let ((mut s, _), mut c) = pair("tls.test").await;
        c.write_all(b"one").await.unwrap();
        c.flush().await.unwrap();
        let mut got = [0u8; 2];
        s.read_exact(&mut got).await.unwrap();
        // One byte of the record waits to be read.
        assert!(!s.park(), "parked with plaintext waiting");
        let mut last = [0u8; 1];
        s.read_exact(&mut last).await.unwrap();
        assert_eq!(last, *b"e");
        assert!(s.park());
    }

    /// A configuration not prepared for the stream: rustls protects the records, as
    /// before.
    #[tokio::test]
    async fn without_secret_extraction_rustls_goes_on() {
        let (server, client) = configs();
        let ((mut s, settled), mut c) = pair_with(server, client, "tls.test").await;
        assert_eq!(settled.sni.as_deref(), Some("tls.test"));
        assert!(s.session().is_some());
        assert!(!s.parks() && !s.park(), "rustls's keys cannot be let go");
        c.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        s.read_exact(&mut got).await.unwrap();
        s.write_all(&got).await.unwrap();
        s.flush().await.unwrap();
        c.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
    }

    /// Bytes written under the client's TLS layer, straight to the socket, after a first
    /// exchange: the read fails with a clear error and a fatal alert goes back.
    async fn hostile(bytes: &[u8]) -> (io::Error, Vec<u8>) {
        let ((mut s, _), mut c) = pair("tls.test").await;
        c.write_all(b"hi").await.unwrap();
        c.flush().await.unwrap();
        let mut got = [0u8; 2];
        s.read_exact(&mut got).await.unwrap();
        let (mut tcp, _) = c.into_inner();
        tcp.write_all(bytes).await.unwrap();
        let mut buf = [0u8; 64];
        let err = loop {
            match s.read(&mut buf).await {
                Ok(0) => panic!("the hostile record read as the end"),
                Ok(_) => continue,
                Err(e) => break e,
            }
        };
        drop(s);
        let mut answer = Vec::new();
        let _ = tcp.read_to_end(&mut answer).await;
        (err, answer)
    }

    #[tokio::test]
    async fn a_forged_record_fails_with_an_alert() {
        let mut forged = vec![23, 3, 3, 0, 40];
        forged.extend_from_slice(&[0x5a; 40]);
        let (err, answer) = hostile(&forged).await;
        assert!(err.to_string().contains("does not authenticate"), "{err}");
        // An encrypted alert record.
        assert_eq!(answer.first(), Some(&23), "{answer:?}");
    }

    #[tokio::test]
    async fn malformed_records_fail_without_a_panic() {
        for (bytes, why) in [
            (&[23u8, 3, 3, 0xff, 0xff][..], "longer than TLS allows"),
            (&[23, 3, 3, 0, 3, 1, 2, 3][..], "shorter than its tag"),
            (&[22, 3, 3, 0, 1, 1][..], "unprotected record"),
            (&[20, 3, 3, 0, 1, 1][..], "change_cipher_spec"),
            (&[99, 3, 3, 0, 1, 1][..], "unknown type"),
            (&[23, 9, 3, 0, 1, 1][..], "not TLS"),
        ] {
            let (err, _) = hostile(bytes).await;
            assert!(err.to_string().contains(why), "{err} (expected {why})");
        }
    }

    /// A peer asking for key update after key update without reading the answers is cut
    /// off once 16 KiB of them wait, instead of being buffered for.
    #[test]
    fn unread_key_update_answers_are_bounded() {
        let (mut ours, mut peer) = records::testing_pair(true, &[3; 32], &[4; 32]).unwrap();
        let mut wire = Vec::new();
        for _ in 0..1000 {
            peer.testing_key_update(&mut wire).unwrap();
        }
        let mut rx = BytesMut::from(&wire[..]);
        let (mut plain, mut tx, mut closed) = (None, Out::default(), false);
        let err = process_own(&mut ours, &mut rx, &mut plain, &mut tx, &mut closed, None)
            .err()
            .expect("bounded");
        assert!(err.to_string().contains("does not read"), "{err}");
        assert!(tx.bytes().len() < MAX_ANSWERS + 64, "{}", tx.bytes().len());
        assert!(rx.is_empty(), "nothing more is read");
    }

    /// Key updates the peer asks for are answered, and its next data opens under its
    /// new key.
    #[test]
    fn a_requested_key_update_is_answered_in_tx() {
        let (mut ours, mut peer) = records::testing_pair(true, &[5; 32], &[6; 32]).unwrap();
        let mut wire = Vec::new();
        peer.testing_key_update(&mut wire).unwrap();
        peer.testing_seal(APPLICATION_DATA, b"after", &mut wire)
            .unwrap();
        let mut rx = BytesMut::from(&wire[..]);
        let (mut plain, mut tx, mut closed) = (None, Out::default(), false);
        let step = process_own(&mut ours, &mut rx, &mut plain, &mut tx, &mut closed, None).unwrap();
        assert!(matches!(step, Step::Plain));
        assert_eq!(plain.as_deref().map(|b| &b[..]), Some(&b"after"[..]));
        // Our answer, a key update of ours, opens at the peer, which follows it.
        let mut answer = tx.bytes().to_vec();
        let Ok(Opened::Record { typ, range, .. }) = peer.open(&mut answer) else {
            panic!("the answer does not open");
        };
        let mut scratch = [0u8; 64];
        let mut at = 0;
        let plain_answer = answer[range].to_vec();
        assert!(matches!(
            peer.control(typ, &plain_answer, &mut scratch, &mut at),
            Ok(Event::Nothing)
        ));
        assert_eq!(at, 0, "no update of its own asked for");
    }
}
