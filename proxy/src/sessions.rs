//! Client connections, for the runtime API's `show sess` and `shutdown sessions server`:
//! registered at accept, removed when they end, each with the server its request in
//! flight uses and a handle to abort it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Waker};
use std::time::Instant;

use crate::state::ServerLive;

/// One client connection.
pub struct Session {
    pub id: u64,
    pub frontend: Arc<str>,
    pub client: SocketAddr,
    pub local: SocketAddr,
    pub tls: bool,
    pub started: Instant,
    pub requests: AtomicU64,
    /// The server of the request in flight (its state's address), 0 when none.
    server: AtomicUsize,
    abort: OnceLock<tokio::task::AbortHandle>,
    /// The connection's wait for its next request, which a stop ends.
    idle: Mutex<IdleWait>,
}

/// Whether a connection waits idle, whether a stop asked it to close, and its waker.
#[derive(Default)]
struct IdleWait {
    waiting: bool,
    closing: bool,
    waker: Option<Waker>,
}

impl Session {
    /// Notes that a request of this connection is now at `server` (two relaxed atomic
    /// writes: this runs for every request).
    pub fn at_server(&self, server: &Arc<ServerLive>) {
        self.requests.fetch_add(1, Relaxed);
        self.server.store(Arc::as_ptr(server) as usize, Relaxed);
    }

    /// The request in flight is done.
    pub fn left_server(&self) {
        self.server.store(0, Relaxed);
    }

    /// Whether the request in flight is at `server`.
    pub fn is_at(&self, server: &Arc<ServerLive>) -> bool {
        self.server.load(Relaxed) == Arc::as_ptr(server) as usize
    }

    pub fn set_abort(&self, h: tokio::task::AbortHandle) {
        let _ = self.abort.set(h);
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, IdleWait> {
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Polled while the connection waits idle for its next request: `true` when a stop
    /// asked it to close; otherwise the stop will wake it. The connection then reads its
    /// frontend's retirement state, so that a stop just before this is seen too.
    pub fn poll_idle(&self, cx: &mut Context<'_>) -> bool {
        let mut w = self.idle();
        if w.closing {
            return true;
        }
        w.waiting = true;
        if !w.waker.as_ref().is_some_and(|k| k.will_wake(cx.waker())) {
            w.waker = Some(cx.waker().clone());
        }
        false
    }

    /// The connection no longer waits idle.
    pub fn end_idle(&self) {
        let mut w = self.idle();
        w.waiting = false;
        w.waker = None;
    }

    /// Asks the connection to close if it waits idle; returns whether it did.
    fn close_idle(&self) -> bool {
        let mut w = self.idle();
        if !w.waiting {
            return false;
        }
        w.closing = true;
        if let Some(k) = w.waker.take() {
            k.wake();
        }
        true
    }
}

/// Every open client connection, in shards: each worker registers and removes its
/// connections in its own shard, so accepts on different workers take no common lock.
pub struct Sessions {
    next: AtomicU64,
    shards: [Mutex<HashMap<u64, Arc<Session>>>; SHARDS],
}

const SHARDS: usize = 16;

impl Default for Sessions {
    fn default() -> Self {
        Self {
            next: AtomicU64::new(0),
            shards: std::array::from_fn(|_| Mutex::default()),
        }
    }
}

/// Removes its session when the connection ends.
pub struct Registered {
    pub session: Arc<Session>,
    sessions: Arc<Sessions>,
    shard: usize,
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Ok(mut all) = self.sessions.shards[self.shard].lock() {
            all.remove(&self.session.id);
        }
    }
}

impl Sessions {
    pub fn register(
        self: &Arc<Self>,
        frontend: Arc<str>,
        client: SocketAddr,
        local: SocketAddr,
        tls: bool,
    ) -> Registered {
        let id = self.next.fetch_add(1, Relaxed) + 1;
        let session = Arc::new(Session {
            id,
            frontend,
            client,
            local,
            tls,
            started: Instant::now(),
            requests: AtomicU64::new(0),
            server: AtomicUsize::new(0),
            abort: OnceLock::new(),
            idle: Mutex::default(),
        });
        let shard = crate::worker::index() % SHARDS;
        if let Ok(mut all) = self.shards[shard].lock() {
            all.insert(id, session.clone());
        }
        Registered {
            session,
            sessions: self.clone(),
            shard,
        }
    }

    /// Every session, oldest first.
    pub fn list(&self) -> Vec<Arc<Session>> {
        let mut v: Vec<_> = Vec::new();
        for shard in &self.shards {
            if let Ok(a) = shard.lock() {
                v.extend(a.values().cloned());
            }
        }
        v.sort_by_key(|s| s.id);
        v
    }

    /// Closes the connections that wait idle for their next request (a stop: the others
    /// close after their response); returns how many.
    pub fn close_idle(&self) -> usize {
        self.list().iter().filter(|s| s.close_idle()).count()
    }

    /// Aborts the connections whose request in flight uses `server`; returns how many.
    pub fn shutdown_server(&self, server: &Arc<ServerLive>) -> usize {
        let mut n = 0;
        for s in self.list() {
            if s.is_at(server)
                && let Some(h) = s.abort.get()
            {
                h.abort();
                n += 1;
            }
        }
        n
    }
}
