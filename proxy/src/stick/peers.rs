//! Peers: nodes that replicate stick tables to each other over TCP, so that persistence
//! and rate-limit counters survive a failover between them.
//!
//! Each node listens on its own address and connects out to every other node; a node
//! sends its updates on the connections it opened and applies what arrives on the ones
//! it accepted. On connecting, a node first proves it knows the shared secret (both
//! sides answer the other's random challenge with an HMAC-SHA256), then sends a full copy
//! of its replicated tables, then batches of changed entries every 20 ms.
//!
//! The request path only marks entries changed. One collector takes the changes and
//! queues each batch for every connected peer in a bounded queue; a peer whose queue is
//! full (slow or stuck) is marked for a full resync instead, so nothing ever waits on a
//! peer.
//!
//! Frames: a 4-byte big-endian length, a type byte, the payload; at most 4 MiB.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use rampart_config::stick::{DataKind, Peers as PeersConfig};
use rustls::crypto::SecureRandom;
use rustls::crypto::hash::{Hash, HashAlgorithm};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, watch};

use super::{Key, Replica, Table};

const MAGIC: &[u8; 8] = b"RMPTPEER";
const VERSION: u8 = 1;
const MAX_FRAME: usize = 4 << 20;
const QUEUE: usize = 256;
const BATCH: usize = 2000;
const FLUSH: Duration = Duration::from_millis(20);
const HEARTBEAT: Duration = Duration::from_secs(2);
const IDLE: Duration = Duration::from_secs(10);
const HANDSHAKE: Duration = Duration::from_secs(5);

const T_HELLO: u8 = 1;
const T_CHALLENGE: u8 = 2;
const T_AUTH: u8 = 3;
const T_OK: u8 = 4;
const T_ERROR: u8 = 5;
const T_UPDATES: u8 = 10;
const T_RESYNC_END: u8 = 11;
const T_HEARTBEAT: u8 = 12;

/// What `show peers` reports about one remote node.
#[derive(Debug, Clone)]
pub struct PeerView {
    pub name: String,
    pub addr: String,
    /// `CONNECTING`, `ESTABLISHED`, `DISCONNECTED` (our connection to it).
    pub state: &'static str,
    /// Whether it is connected to us (its updates reach us).
    pub inbound: bool,
    pub last_sync: Option<SystemTime>,
    /// Batches queued for it.
    pub pending: usize,
    pub updates_sent: u64,
    pub updates_received: u64,
    pub reconnects: u64,
    pub last_error: Option<String>,
}

struct Peer {
    name: String,
    addr: String,
    view: Mutex<PeerView>,
    /// Batches for it, while connected.
    queue: Mutex<Option<mpsc::Sender<Bytes>>>,
    /// Set when a batch could not be queued: the next step is a full resync.
    resync: std::sync::atomic::AtomicBool,
    /// Pokes the connector to retry now (the peer just connected to us).
    poke: Notify,
    sent: AtomicU64,
}

/// The peers of this node, for `show peers`.
#[derive(Default)]
pub struct Status {
    peers: Mutex<Vec<Arc<Peer>>>,
    local: Mutex<Option<(String, String)>>,
}

impl Status {
    /// (local name, local address) and each remote node, in configuration order.
    pub fn views(&self) -> (Option<(String, String)>, Vec<PeerView>) {
        let local = self.local.lock().ok().and_then(|l| l.clone());
        let peers = self.peers.lock().map(|p| p.clone()).unwrap_or_default();
        let views = peers
            .iter()
            .map(|p| {
                let mut v = p
                    .view
                    .lock()
                    .map(|v| v.clone())
                    .unwrap_or_else(|e| e.into_inner().clone());
                v.pending = p
                    .queue
                    .lock()
                    .ok()
                    .and_then(|q| q.as_ref().map(|q| QUEUE - q.capacity()))
                    .unwrap_or(0);
                v.updates_sent = p.sent.load(Relaxed);
                v
            })
            .collect();
        (local, views)
    }
}

/// The tables to replicate, as the running configuration has them.
pub type TablesFn = Arc<dyn Fn() -> Vec<Arc<Table>> + Send + Sync>;

/// A running peers service.
pub struct Handle {
    stop: watch::Sender<bool>,
    /// Ends the accept loop only (the listening socket was handed to a new process).
    accepting: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Handle {
    /// Stops taking connections from other nodes, which reach the process this one
    /// handed its listening socket to; this node's own connections to them go on.
    pub fn stop_accepting(&self) {
        let _ = self.accepting.send(true);
    }

    /// Stops it (sending what is pending first, for up to a second).
    pub fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts the peers service: binds the local address (an error if it cannot), then runs
/// on its own thread.
pub fn start(cfg: &PeersConfig, tables: TablesFn, status: Arc<Status>) -> std::io::Result<Handle> {
    let local_addr = cfg
        .nodes
        .get(&cfg.local.value)
        .map(|a| a.value.clone())
        .unwrap_or_default();
    let std_listener = crate::inherit::take_or_bind(&format!("peers {local_addr}"), &local_addr)?;
    let key = Secret::new(cfg.secret.value.as_bytes())?;
    let local = cfg.local.value.clone();
    let peers: Vec<Arc<Peer>> = cfg
        .nodes
        .iter()
        .filter(|(n, _)| *n != local)
        .map(|(n, a)| {
            Arc::new(Peer {
                name: n.to_owned(),
                addr: a.value.clone(),
                view: Mutex::new(PeerView {
                    name: n.to_owned(),
                    addr: a.value.clone(),
                    state: "CONNECTING",
                    inbound: false,
                    last_sync: None,
                    pending: 0,
                    updates_sent: 0,
                    updates_received: 0,
                    reconnects: 0,
                    last_error: None,
                }),
                queue: Mutex::new(None),
                resync: std::sync::atomic::AtomicBool::new(true),
                poke: Notify::new(),
                sent: AtomicU64::new(0),
            })
        })
        .collect();
    if let Ok(mut p) = status.peers.lock() {
        *p = peers.clone();
    }
    if let Ok(mut l) = status.local.lock() {
        *l = Some((local.clone(), local_addr.clone()));
    }
    let reconnect_max = cfg.reconnect_max;
    let (stop, stop_rx) = watch::channel(false);
    let (accepting, accepting_rx) = watch::channel(false);
    let thread = std::thread::Builder::new()
        .name("rampart-peers".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!("peers: cannot start a runtime: {e}");
                    return;
                }
            };
            rt.block_on(async move {
                let listener = match TcpListener::from_std(std_listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!("peers: {e}");
                        return;
                    }
                };
                let ctx = Arc::new(Ctx {
                    local,
                    key,
                    peers,
                    tables,
                });
                tracing::info!(local = %ctx.local, "peers listening on {local_addr}");
                let mut tasks = tokio::task::JoinSet::new();
                tasks.spawn(accept_loop(
                    ctx.clone(),
                    listener,
                    stop_rx.clone(),
                    accepting_rx,
                ));
                tasks.spawn(collector(ctx.clone(), stop_rx.clone()));
                for p in &ctx.peers {
                    tasks.spawn(connector(
                        ctx.clone(),
                        p.clone(),
                        reconnect_max,
                        stop_rx.clone(),
                    ));
                }
                let mut stop_rx = stop_rx;
                let _ = stop_rx.wait_for(|s| *s).await;
                // Give connectors a moment to send what is queued.
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    while tasks.join_next().await.is_some() {}
                })
                .await;
                tasks.abort_all();
            });
        })?;
    Ok(Handle {
        stop,
        accepting,
        thread: Some(thread),
    })
}

struct Ctx {
    local: String,
    key: Secret,
    peers: Vec<Arc<Peer>>,
    tables: TablesFn,
}

impl Ctx {
    fn replicated(&self) -> Vec<Arc<Table>> {
        (self.tables)().into_iter().filter(|t| t.peers).collect()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

// ---- frames ----

async fn write_frame<W: AsyncWrite + Unpin>(
    s: &mut W,
    t: u8,
    payload: &[u8],
) -> std::io::Result<()> {
    let mut b = BytesMut::with_capacity(5 + payload.len());
    b.put_u32(payload.len() as u32 + 1);
    b.put_u8(t);
    b.put_slice(payload);
    s.write_all(&b).await
}

async fn read_frame(s: &mut TcpStream) -> std::io::Result<(u8, Bytes)> {
    let n = s.read_u32().await? as usize;
    if n == 0 || n > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {n} bytes (at most {MAX_FRAME})"),
        ));
    }
    let mut b = vec![0u8; n];
    s.read_exact(&mut b).await?;
    let mut b = Bytes::from(b);
    let t = b.get_u8();
    Ok((t, b))
}

fn bad(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.into())
}

fn put_str(b: &mut BytesMut, s: &str) {
    let s = &s.as_bytes()[..s.len().min(255)];
    b.put_u8(s.len() as u8);
    b.put_slice(s);
}

fn get_str(b: &mut Bytes) -> std::io::Result<String> {
    if !b.has_remaining() {
        return Err(bad("truncated"));
    }
    let n = usize::from(b.get_u8());
    if b.remaining() < n {
        return Err(bad("truncated"));
    }
    String::from_utf8(b.split_to(n).to_vec()).map_err(|_| bad("name is not UTF-8"))
}

/// The shared secret as an HMAC-SHA256 key (RFC 2104), over the SHA-256 and the random
/// source of the crypto provider TLS uses.
struct Secret {
    sha256: &'static dyn Hash,
    random: &'static dyn SecureRandom,
    /// The key padded to SHA-256's 64-byte block, XORed with 0x36 and with 0x5c.
    ipad: [u8; 64],
    opad: [u8; 64],
}

impl Secret {
    fn new(secret: &[u8]) -> std::io::Result<Self> {
        let provider = crate::tls::provider();
        let sha256 = provider
            .cipher_suites
            .iter()
            .filter_map(|s| s.tls13())
            .map(|s| s.common.hash_provider)
            .find(|h| h.algorithm() == HashAlgorithm::SHA256)
            .ok_or_else(|| bad("the crypto provider has no SHA-256"))?;
        let mut block = [0u8; 64];
        if secret.len() > block.len() {
            let digest = sha256.hash(secret);
            block[..digest.as_ref().len()].copy_from_slice(digest.as_ref());
        } else {
            block[..secret.len()].copy_from_slice(secret);
        }
        Ok(Secret {
            sha256,
            random: provider.secure_random,
            ipad: block.map(|b| b ^ 0x36),
            opad: block.map(|b| b ^ 0x5c),
        })
    }

    /// HMAC-SHA256 of the concatenated parts.
    fn mac(&self, parts: &[&[u8]]) -> Vec<u8> {
        let mut inner = self.sha256.start();
        inner.update(&self.ipad);
        for p in parts {
            inner.update(p);
        }
        let inner = inner.finish();
        let mut outer = self.sha256.start();
        outer.update(&self.opad);
        outer.update(inner.as_ref());
        outer.finish().as_ref().to_vec()
    }

    fn nonce(&self) -> std::io::Result<[u8; 16]> {
        let mut n = [0u8; 16];
        self.random
            .fill(&mut n)
            .map_err(|_| bad("no random bytes for a challenge"))?;
        Ok(n)
    }
}

fn proof(key: &Secret, role: &[u8], cn: &[u8], sn: &[u8], from: &str, to: &str) -> Vec<u8> {
    key.mac(&[role, cn, sn, from.as_bytes(), b"\0", to.as_bytes()])
}

/// Encodes entries of one table as UPDATES frames of at most `BATCH` entries.
pub fn encode_updates(table: &Table, entries: &[Replica]) -> Vec<Bytes> {
    entries
        .chunks(BATCH)
        .map(|chunk| {
            let mut b = BytesMut::new();
            put_str(&mut b, &table.name);
            b.put_u8(table.key_type as u8);
            b.put_u16(table.key_len as u16);
            b.put_u32(chunk.len() as u32);
            for r in chunk {
                let k = r.key.as_bytes();
                b.put_u16(k.len() as u16);
                b.put_slice(k);
                b.put_u8(r.values.len() as u8);
                for (kind, v, prev, age) in &r.values {
                    b.put_u8(kind.wire_id());
                    b.put_u64(*v);
                    b.put_u32(*prev);
                    b.put_u32(*age);
                }
            }
            b.freeze()
        })
        .collect()
}

/// Decodes an UPDATES frame: the table name, key type and length, entries.
pub fn decode_updates(mut b: Bytes) -> std::io::Result<(String, u8, u16, Vec<Replica>)> {
    let name = get_str(&mut b)?;
    if b.remaining() < 7 {
        return Err(bad("truncated"));
    }
    let kt = b.get_u8();
    let kl = b.get_u16();
    let n = b.get_u32() as usize;
    let mut out = Vec::with_capacity(n.min(BATCH));
    for _ in 0..n {
        if b.remaining() < 2 {
            return Err(bad("truncated"));
        }
        let kn = usize::from(b.get_u16());
        if kn > 1024 || b.remaining() < kn + 1 {
            return Err(bad("bad key"));
        }
        let key = Key::new(&b.split_to(kn));
        let nv = usize::from(b.get_u8());
        if b.remaining() < nv * 17 {
            return Err(bad("truncated"));
        }
        let mut values = Vec::with_capacity(nv);
        for _ in 0..nv {
            let id = b.get_u8();
            let (v, prev, age) = (b.get_u64(), b.get_u32(), b.get_u32());
            if let Some(k) = DataKind::from_wire_id(id) {
                values.push((k, v, prev, age));
            }
        }
        out.push(Replica { key, values });
    }
    Ok((name, kt, kl, out))
}

// ---- outgoing ----

async fn collector(ctx: Arc<Ctx>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(FLUSH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => {}
        }
        let stopping = *stop.borrow();
        for t in ctx.replicated() {
            loop {
                let dirty = t.take_dirty(BATCH);
                if dirty.is_empty() {
                    break;
                }
                for frame in encode_updates(&t, &dirty) {
                    for p in &ctx.peers {
                        let q = lock(&p.queue);
                        let Some(q) = q.as_ref() else { continue };
                        if q.try_send(frame.clone()).is_err() {
                            p.resync.store(true, Relaxed);
                        }
                    }
                }
            }
        }
        if stopping {
            return;
        }
    }
}

fn set_view(p: &Peer, f: impl FnOnce(&mut PeerView)) {
    f(&mut lock(&p.view));
}

async fn connector(ctx: Arc<Ctx>, p: Arc<Peer>, max: Duration, mut stop: watch::Receiver<bool>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if *stop.borrow() {
            return;
        }
        set_view(&p, |v| v.state = "CONNECTING");
        let r = session_out(&ctx, &p, &mut stop).await;
        *lock(&p.queue) = None;
        p.resync.store(true, Relaxed);
        let was_up = matches!(r, Ok(true));
        if let Err(e) = &r {
            tracing::debug!(peer = %p.name, "peer connection: {e}");
            set_view(&p, |v| v.last_error = Some(e.to_string()));
        }
        set_view(&p, |v| {
            v.state = "DISCONNECTED";
            v.reconnects += 1;
        });
        if *stop.borrow() {
            return;
        }
        if was_up {
            backoff = Duration::from_millis(100);
        }
        let wait = backoff.mul_f64(0.5 + fastrand::f64());
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = p.poke.notified() => {}
            _ = stop.changed() => {}
        }
        backoff = (backoff * 2).min(max);
    }
}

/// One outgoing connection's life. Ok(true) when it got as far as sending updates.
async fn session_out(
    ctx: &Ctx,
    p: &Peer,
    stop: &mut watch::Receiver<bool>,
) -> std::io::Result<bool> {
    let mut s = tokio::time::timeout(HANDSHAKE, TcpStream::connect(&p.addr))
        .await
        .map_err(|_| bad("connect timed out"))??;
    let _ = s.set_nodelay(true);
    tokio::time::timeout(HANDSHAKE, handshake_out(ctx, p, &mut s))
        .await
        .map_err(|_| bad("handshake timed out"))??;
    tracing::info!(peer = %p.name, "connected to peer {}", p.addr);
    let (tx, mut rx) = mpsc::channel::<Bytes>(QUEUE);
    // Queue first, then resync: updates made during the resync are queued behind it.
    *lock(&p.queue) = Some(tx);
    p.resync.store(true, Relaxed);
    set_view(p, |v| {
        v.state = "ESTABLISHED";
        v.last_error = None;
    });
    let mut beat = tokio::time::interval(HEARTBEAT);
    // The peer never writes on this connection after the handshake: reading shows at
    // once when it closes or dies, instead of at the next failed write.
    let (mut rd, mut wr) = s.split();
    let mut probe = [0u8; 1];
    loop {
        if p.resync.swap(false, Relaxed) {
            // Drop what was queued: the full copy includes it.
            while rx.try_recv().is_ok() {}
            let mut n = 0u64;
            for t in ctx.replicated() {
                let snap = t.snapshot();
                n += snap.len() as u64;
                for f in encode_updates(&t, &snap) {
                    write_frame(&mut wr, T_UPDATES, &f).await?;
                }
            }
            write_frame(&mut wr, T_RESYNC_END, &[]).await?;
            p.sent.fetch_add(n, Relaxed);
            set_view(p, |v| v.last_sync = Some(SystemTime::now()));
            tracing::debug!(peer = %p.name, entries = n, "full resync sent");
        }
        tokio::select! {
            f = rx.recv() => {
                let Some(f) = f else { return Ok(true) };
                write_frame(&mut wr, T_UPDATES, &f).await?;
                let mut n = 1u64;
                while let Ok(f) = rx.try_recv() {
                    write_frame(&mut wr, T_UPDATES, &f).await?;
                    n += 1;
                }
                p.sent.fetch_add(n, Relaxed);
                set_view(p, |v| v.last_sync = Some(SystemTime::now()));
            }
            _ = beat.tick() => write_frame(&mut wr, T_HEARTBEAT, &[]).await?,
            r = rd.read(&mut probe) => {
                return Err(match r {
                    Ok(0) => bad("the peer closed the connection"),
                    Ok(_) => bad("unexpected data from the peer"),
                    Err(e) => e,
                });
            }
            _ = stop.changed() => {
                // Flush what is queued, then go.
                while let Ok(f) = rx.try_recv() {
                    write_frame(&mut wr, T_UPDATES, &f).await?;
                }
                let _ = wr.shutdown().await;
                return Ok(true);
            }
        }
    }
}

async fn handshake_out(ctx: &Ctx, p: &Peer, s: &mut TcpStream) -> std::io::Result<()> {
    let cn = ctx.key.nonce()?;
    let mut b = BytesMut::new();
    b.put_slice(MAGIC);
    b.put_u8(VERSION);
    put_str(&mut b, &ctx.local);
    put_str(&mut b, &p.name);
    b.put_slice(&cn);
    write_frame(s, T_HELLO, &b).await?;
    let (t, mut f) = read_frame(s).await?;
    match t {
        T_CHALLENGE if f.remaining() == 16 + 32 => {}
        T_ERROR => {
            let msg = String::from_utf8_lossy(&f).into_owned();
            tracing::warn!(peer = %p.name, "peer {} refused us: {msg}", p.addr);
            return Err(bad(format!("refused: {msg}")));
        }
        _ => return Err(bad("unexpected answer to hello")),
    }
    let sn = f.split_to(16);
    let want = proof(&ctx.key, b"server", &cn, &sn, &ctx.local, &p.name);
    if !constant_eq(&f, &want) {
        tracing::warn!(peer = %p.name, "peer {} failed authentication (wrong secret?)", p.addr);
        write_frame(s, T_ERROR, b"authentication failed").await?;
        return Err(bad("the peer could not prove the shared secret"));
    }
    let mine = proof(&ctx.key, b"client", &cn, &sn, &ctx.local, &p.name);
    write_frame(s, T_AUTH, &mine).await?;
    let (t, f) = read_frame(s).await?;
    match t {
        T_OK => Ok(()),
        T_ERROR => {
            let msg = String::from_utf8_lossy(&f).into_owned();
            tracing::warn!(peer = %p.name, "peer {} refused us: {msg}", p.addr);
            Err(bad(format!("refused: {msg}")))
        }
        _ => Err(bad("unexpected answer to auth")),
    }
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

// ---- incoming ----

async fn accept_loop(
    ctx: Arc<Ctx>,
    l: TcpListener,
    mut stop: watch::Receiver<bool>,
    mut accepting: watch::Receiver<bool>,
) {
    loop {
        let (s, from) = tokio::select! {
            r = l.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!("peers accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
            _ = accepting.changed() => return,
        };
        let ctx = ctx.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            if let Err(e) = session_in(&ctx, s, stop).await {
                tracing::debug!("peer connection from {from}: {e}");
            }
        });
    }
}

async fn session_in(
    ctx: &Ctx,
    mut s: TcpStream,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let from = s.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let peer = match tokio::time::timeout(HANDSHAKE, handshake_in(ctx, &mut s, &from)).await {
        Ok(r) => r?,
        Err(_) => return Err(bad("handshake timed out")),
    };
    tracing::info!(peer = %peer.name, "peer connected from {from}");
    set_view(&peer, |v| v.inbound = true);
    // It may have restarted: our connection to it resyncs it at once.
    peer.poke.notify_one();
    let r = async {
        loop {
            let (t, f) = tokio::select! {
                r = tokio::time::timeout(IDLE, read_frame(&mut s)) => match r {
                    Ok(x) => x?,
                    Err(_) => return Err(bad("peer silent for 10s")),
                },
                _ = stop.changed() => return Ok(()),
            };
            match t {
                T_UPDATES => {
                    let (name, kt, kl, entries) = decode_updates(f)?;
                    let n = apply(ctx, &name, kt, kl, &entries);
                    set_view(&peer, |v| {
                        v.updates_received += n as u64;
                        v.last_sync = Some(SystemTime::now());
                    });
                }
                T_RESYNC_END | T_HEARTBEAT => {}
                other => return Err(bad(format!("unexpected frame type {other}"))),
            }
        }
    }
    .await;
    set_view(&peer, |v| v.inbound = false);
    r
}

fn apply(ctx: &Ctx, name: &str, kt: u8, kl: u16, entries: &[Replica]) -> usize {
    apply_to(&ctx.replicated(), name, kt, kl, entries)
}

/// Applies one update frame (as [`encode_updates`] makes them) to the table of its name
/// among `tables`, replicated or not: how a binary upgrade carries every table over to
/// the new process. Returns how many entries were applied.
pub fn apply_frame(tables: &[Arc<Table>], frame: Bytes) -> std::io::Result<usize> {
    let (name, kt, kl, entries) = decode_updates(frame)?;
    Ok(apply_to(tables, &name, kt, kl, &entries))
}

fn apply_to(tables: &[Arc<Table>], name: &str, kt: u8, kl: u16, entries: &[Replica]) -> usize {
    let Some(t) = tables.iter().find(|t| &*t.name == name) else {
        tracing::debug!(table = name, "peer update for a table not replicated here");
        return 0;
    };
    if t.key_type as u8 != kt || t.key_len != usize::from(kl) {
        tracing::warn!(
            table = name,
            "peer update with another key type or length: ignored"
        );
        return 0;
    }
    entries.iter().filter(|r| t.apply(r)).count()
}

async fn handshake_in(ctx: &Ctx, s: &mut TcpStream, from: &str) -> std::io::Result<Arc<Peer>> {
    let (t, mut f) = read_frame(s).await?;
    if t != T_HELLO || f.remaining() < 9 || &f[..8] != MAGIC {
        return Err(bad("not a rampart peer"));
    }
    f.advance(8);
    let version = f.get_u8();
    if version != VERSION {
        let msg = format!("unsupported protocol version {version} (this node speaks {VERSION})");
        tracing::warn!("peer connection from {from} refused: {msg}");
        write_frame(s, T_ERROR, msg.as_bytes()).await?;
        return Err(bad(msg));
    }
    let name = get_str(&mut f)?;
    let to = get_str(&mut f)?;
    if f.remaining() != 16 {
        return Err(bad("bad hello"));
    }
    let cn = f.split_to(16);
    let Some(peer) = ctx.peers.iter().find(|p| p.name == name).cloned() else {
        tracing::warn!("peer connection from {from} refused: unknown peer {name:?}");
        write_frame(s, T_ERROR, b"unknown peer").await?;
        return Err(bad("unknown peer"));
    };
    if to != ctx.local {
        tracing::warn!(
            "peer connection from {from} refused: it expects {to:?}, this is {:?}",
            ctx.local
        );
        write_frame(s, T_ERROR, b"wrong local name").await?;
        return Err(bad("wrong local name"));
    }
    let sn = ctx.key.nonce()?;
    let mut b = BytesMut::new();
    b.put_slice(&sn);
    b.put_slice(&proof(&ctx.key, b"server", &cn, &sn, &name, &to));
    write_frame(s, T_CHALLENGE, &b).await?;
    let (t, f) = read_frame(s).await?;
    let want = proof(&ctx.key, b"client", &cn, &sn, &name, &to);
    if t != T_AUTH || !constant_eq(&f, &want) {
        tracing::warn!(peer = %name, "peer connection from {from} refused: authentication failed (wrong secret?)");
        set_view(&peer, |v| {
            v.last_error = Some(format!("{from}: authentication failed"))
        });
        write_frame(s, T_ERROR, b"authentication failed").await?;
        return Err(bad("authentication failed"));
    }
    write_frame(s, T_OK, &[]).await?;
    Ok(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_round_trip_and_reject_garbage() {
        let r = Replica {
            key: Key::new(&[10, 0, 0, 1]),
            values: vec![
                (DataKind::ServerId, 2, 0, 0),
                (DataKind::HttpReqRate, 9, 3, 120),
            ],
        };
        let cfg = rampart_config::load_str(
            "frontends: { f: { bind: ':1', default_backend: b } }\nbackends: { b: { servers: { s: { address: '127.0.0.1:1' } } } }\nstick_tables: { t: { type: ip, size: 10, store: [server_id] } }\n",
            None,
            &std::collections::HashMap::<String, String>::new(),
        )
        .unwrap();
        let (n, def) = cfg.stick_tables.iter().next().unwrap();
        let t = Table::new(n, def);
        let frames = encode_updates(&t, &[r]);
        let (name, kt, kl, back) = decode_updates(frames[0].clone()).unwrap();
        assert_eq!((name.as_str(), kt, kl), ("t", t.key_type as u8, 4));
        assert_eq!(
            back[0].values,
            vec![
                (DataKind::ServerId, 2, 0, 0),
                (DataKind::HttpReqRate, 9, 3, 120)
            ]
        );
        for cut in 0..frames[0].len() {
            // Truncated frames are errors, never panics.
            let _ = decode_updates(frames[0].slice(..cut));
        }
        assert!(
            decode_updates(Bytes::from_static(&[
                1, b't', 0, 0, 4, 0xff, 0xff, 0xff, 0xff
            ]))
            .is_err()
        );
    }

    #[test]
    fn proofs_depend_on_the_secret_and_role() {
        let a = Secret::new(b"secret-one").unwrap();
        let b = Secret::new(b"secret-two").unwrap();
        let p1 = proof(&a, b"client", b"n1", b"n2", "x", "y");
        assert_eq!(p1, proof(&a, b"client", b"n1", b"n2", "x", "y"));
        assert_ne!(p1, proof(&b, b"client", b"n1", b"n2", "x", "y"));
        assert_ne!(p1, proof(&a, b"server", b"n1", b"n2", "x", "y"));
    }

    #[test]
    fn hmac_sha256_matches_rfc_4231() {
        let hex = |v: Vec<u8>| v.iter().map(|b| format!("{b:02x}")).collect::<String>();
        // Test case 2: a short key.
        let k = Secret::new(b"Jefe").unwrap();
        assert_eq!(
            hex(k.mac(&[b"what do ya want ", b"for nothing?"])),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block is hashed first.
        let k = Secret::new(&[0xaa; 131]).unwrap();
        assert_eq!(
            hex(k.mac(&[b"Test Using Larger Than Block-Size Key - Hash Key First"])),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
        assert_ne!(k.nonce().unwrap(), k.nonce().unwrap());
    }
}
