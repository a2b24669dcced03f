//! Idle connections to one server, kept per worker thread so a connection is reused on the
//! thread whose reactor drives it, and HTTP/2 connections shared by concurrent requests.
//!
//! Idle HTTP/1 connections are kept most-recently-used first (the warmest socket is reused,
//! the coldest ages out); a connection that the server closed or that sat idle too long is
//! dropped at checkout, and a periodic sweep drops them even when nobody asks.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::Instant;

use crate::body::Body;
use crate::io::UpIo;

/// A connection to a server.
pub struct UpConn {
    pub io: UpIo,
    pub rbuf: BytesMut,
    /// Whether this connection served a request before.
    pub reused: bool,
    /// The client connection (session id) this connection is private to: one that began
    /// with a PROXY header speaks for that client only.
    pub owner: Option<u64>,
    /// The wait for a response head: one timer for the connection's life, its deadline
    /// moved later for each request (an atomic store; the timer wheel finds the new
    /// deadline when the old one comes) rather than a new timer inserted into the wheel
    /// and removed again per request. Made at the first request.
    head_timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Counts the connection in its backend while it is open.
    _slot: super::ConnSlot,
}

impl UpConn {
    pub fn new(io: UpIo, slot: super::ConnSlot, owner: Option<u64>) -> Self {
        Self {
            io,
            rbuf: BytesMut::new(),
            reused: false,
            owner,
            head_timer: None,
            _slot: slot,
        }
    }

    /// Takes the connection's response-head timer, set to `deadline`; give it back with
    /// [`UpConn::keep_timer`] so the next request reuses it.
    pub fn take_timer(&mut self, deadline: Instant) -> Pin<Box<tokio::time::Sleep>> {
        match self.head_timer.take() {
            Some(mut t) => {
                t.as_mut().reset(deadline);
                t
            }
            None => Box::pin(tokio::time::sleep_until(deadline)),
        }
    }

    pub fn keep_timer(&mut self, timer: Pin<Box<tokio::time::Sleep>>) {
        self.head_timer = Some(timer);
    }
}

struct Idle {
    conn: UpConn,
    since: Instant,
}

/// Pool settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    pub max_idle_per_server: usize,
    pub idle_timeout: Duration,
}

/// An HTTP/2 connection that requests share, with the client it is private to (if any)
/// and when it was last used.
struct SharedH2 {
    send: hyper::client::conn::http2::SendRequest<Body>,
    owner: Option<u64>,
    used: Instant,
}

/// The connections to one server.
///
/// Connections that began with a PROXY header are private to their client connection
/// (`owner`): only that client's later requests reuse them, as HAProxy does.
pub struct Pool {
    shards: Box<[Mutex<Shard>]>,
    h2: Box<[Mutex<Vec<SharedH2>>]>,
    max_idle_per_shard: usize,
    idle_timeout: Duration,
}

/// A worker's idle connections to the server: shared ones, most recently used last, and
/// private ones by client connection.
#[derive(Default)]
struct Shard {
    shared: VecDeque<Idle>,
    private: HashMap<u64, Vec<Idle>, foldhash::fast::RandomState>,
    private_count: usize,
}

impl Shard {
    fn len(&self) -> usize {
        self.shared.len() + self.private_count
    }

    /// Drops the connection idle the longest.
    fn evict(&mut self) {
        if self.shared.pop_front().is_some() {
            return;
        }
        let oldest = self
            .private
            .iter()
            .flat_map(|(o, v)| v.iter().enumerate().map(move |(i, c)| (c.since, *o, i)))
            .min();
        if let Some((_, o, i)) = oldest {
            self.take_private(o, i);
        }
    }

    fn take_private(&mut self, owner: u64, i: usize) -> Option<Idle> {
        let v = self.private.get_mut(&owner)?;
        let idle = v.swap_remove(i);
        if v.is_empty() {
            self.private.remove(&owner);
        }
        self.private_count -= 1;
        Some(idle)
    }

    fn retain(&mut self, mut keep: impl FnMut(&mut Idle) -> bool) {
        self.shared.retain_mut(&mut keep);
        self.private.retain(|_, v| {
            v.retain_mut(&mut keep);
            !v.is_empty()
        });
        self.private_count = self.private.values().map(Vec::len).sum();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Whether an idle connection is still open and silent: a read that would block means
/// yes; end of file, an error or unexpected bytes mean it must not be used.
fn still_open(io: &mut UpIo) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    let mut byte = [0u8; 1];
    let mut rb = ReadBuf::new(&mut byte);
    matches!(
        std::pin::Pin::new(io).poll_read(&mut cx, &mut rb),
        Poll::Pending
    )
}

impl Pool {
    pub fn new(cfg: PoolConfig, workers: usize) -> Arc<Self> {
        let workers = workers.max(1);
        let pool = Arc::new(Self {
            shards: (0..workers).map(|_| Mutex::default()).collect(),
            h2: (0..workers).map(|_| Mutex::new(Vec::new())).collect(),
            max_idle_per_shard: cfg.max_idle_per_server.div_ceil(workers),
            idle_timeout: cfg.idle_timeout,
        });
        register(&pool);
        pool
    }

    fn shard(&self) -> usize {
        crate::worker::index() % self.shards.len()
    }

    /// An idle connection that is still usable, if there is one: a shared one (`owner`
    /// `None`), else one private to that client connection.
    pub fn checkout(&self, owner: Option<u64>) -> Option<UpConn> {
        let now = Instant::now();
        let mut q = lock(&self.shards[self.shard()]);
        loop {
            let mut idle = match owner {
                None => q.shared.pop_back()?,
                Some(o) => {
                    let last = q.private.get(&o)?.len().checked_sub(1)?;
                    q.take_private(o, last)?
                }
            };
            if now.duration_since(idle.since) < self.idle_timeout && still_open(&mut idle.conn.io) {
                idle.conn.reused = true;
                return Some(idle.conn);
            }
        }
    }

    /// Keeps a connection for reuse (or drops it when the pool is full or off).
    pub fn put(&self, mut conn: UpConn) {
        if self.max_idle_per_shard == 0 {
            return;
        }
        // An idle connection keeps no buffer.
        crate::io::give_buf(std::mem::take(&mut conn.rbuf));
        let mut q = lock(&self.shards[self.shard()]);
        if q.len() >= self.max_idle_per_shard {
            q.evict();
        }
        let owner = conn.owner;
        let idle = Idle {
            since: Instant::now(),
            conn,
        };
        match owner {
            None => q.shared.push_back(idle),
            Some(o) => {
                q.private.entry(o).or_default().push(idle);
                q.private_count += 1;
            }
        }
    }

    /// Idle connections across all workers.
    pub fn idle_count(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    /// The open HTTP/2 connection of this worker (private to `owner` when given), if
    /// there is one.
    pub fn h2_sender(
        &self,
        owner: Option<u64>,
    ) -> Option<hyper::client::conn::http2::SendRequest<Body>> {
        let mut list = lock(&self.h2[self.shard()]);
        let at = list.iter().position(|c| c.owner == owner)?;
        if list[at].send.is_closed() {
            list.swap_remove(at);
            return None;
        }
        // Only private connections age out, so only they need the time of last use (no
        // clock read per request on the shared one).
        if owner.is_some() {
            list[at].used = Instant::now();
        }
        Some(list[at].send.clone())
    }

    /// Keeps a new HTTP/2 connection for the requests that follow. Private ones beyond
    /// `max_idle_per_server` push out the least recently used.
    pub fn set_h2_sender(
        &self,
        owner: Option<u64>,
        send: hyper::client::conn::http2::SendRequest<Body>,
    ) {
        let mut list = lock(&self.h2[self.shard()]);
        list.retain(|c| c.owner != owner && !c.send.is_closed());
        if owner.is_some() && list.len() >= self.max_idle_per_shard.max(1) {
            if let Some(oldest) = (0..list.len()).min_by_key(|&i| list[i].used) {
                list.swap_remove(oldest);
            }
        }
        list.push(SharedH2 {
            send,
            owner,
            used: Instant::now(),
        });
    }

    /// Drops idle connections that expired or were closed by the server.
    fn sweep(&self) {
        let now = Instant::now();
        for shard in self.shards.iter() {
            lock(shard).retain(|i| {
                now.duration_since(i.since) < self.idle_timeout && still_open(&mut i.conn.io)
            });
        }
        // A private HTTP/2 connection unused for the idle timeout is let go (its client
        // has most likely gone); the shared one stays while it is open.
        for h in self.h2.iter() {
            lock(h).retain(|c| {
                !c.send.is_closed()
                    && (c.owner.is_none() || now.duration_since(c.used) < self.idle_timeout)
            });
        }
    }

    /// Closes every idle connection.
    pub fn clear(&self) {
        for shard in self.shards.iter() {
            *lock(shard) = Shard::default();
        }
        for h in self.h2.iter() {
            lock(h).clear();
        }
    }
}

static POOLS: Mutex<Vec<Weak<Pool>>> = Mutex::new(Vec::new());

fn register(pool: &Arc<Pool>) {
    lock(&POOLS).push(Arc::downgrade(pool));
}

/// Sweeps every live pool once; forgets dropped pools.
pub fn sweep_all() {
    let pools: Vec<Arc<Pool>> = {
        let mut all = lock(&POOLS);
        all.retain(|w| w.strong_count() > 0);
        all.iter().filter_map(Weak::upgrade).collect()
    };
    for p in pools {
        p.sweep();
    }
}
