//! Client connections, for the runtime API's `show sess` and `shutdown sessions server`:
//! registered at accept, removed when they end, each with the server its request in
//! flight uses and a handle to abort it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Waker};

use crate::handler::ConnCtx;
use crate::state::ServerLive;

/// A client connection's entry in the registry, part of its context ([`ConnCtx`]).
pub struct Session {
    pub id: u64,
    pub requests: AtomicU64,
    /// The server of the request in flight (its state's address), 0 when none.
    server: AtomicUsize,
    /// How a stop and `shutdown sessions` reach the connection.
    control: Mutex<Control>,
}

/// Whether a connection waits idle, whether a stop asked it to close, its waker, and
/// the handle that aborts its task.
#[derive(Default)]
struct Control {
    waiting: bool,
    closing: bool,
    waker: Option<Waker>,
    abort: Option<tokio::task::AbortHandle>,
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
        self.control().abort = Some(h);
    }

    fn control(&self) -> std::sync::MutexGuard<'_, Control> {
        lock(&self.control)
    }

    /// Polled while the connection waits idle for its next request: `true` when a stop
    /// asked it to close; otherwise the stop will wake it. The connection then reads its
    /// frontend's retirement state, so that a stop just before this is seen too.
    pub fn poll_idle(&self, cx: &mut Context<'_>) -> bool {
        let mut w = self.control();
        if w.closing {
            return true;
        }
        w.waiting = true;
        if !w.waker.as_ref().is_some_and(|k| k.will_wake(cx.waker())) {
            w.waker = Some(cx.waker().clone());
        }
        false
    }

    /// Hands the wait of an idle connection to `waker`, that of the worker's lot where
    /// the connection is set aside ([`crate::server::lot`]): a stop or a shutdown then
    /// wakes the lot. `false` when a stop already asked the connection to close.
    pub fn park(&self, waker: &Waker) -> bool {
        let mut w = self.control();
        if w.closing {
            return false;
        }
        w.waiting = true;
        w.waker = Some(waker.clone());
        // The task ends: its handle would keep its memory.
        w.abort = None;
        true
    }

    /// Whether a stop or a shutdown asked the connection to close while it waited idle.
    pub fn closing(&self) -> bool {
        self.control().closing
    }

    /// The connection no longer waits idle.
    pub fn end_idle(&self) {
        let mut w = self.control();
        w.waiting = false;
        w.waker = None;
    }

    /// Asks the connection to close if it waits idle; returns whether it did.
    fn close_idle(&self) -> bool {
        let mut w = self.control();
        if !w.waiting {
            return false;
        }
        w.closing = true;
        if let Some(k) = w.waker.take() {
            k.wake();
        }
        true
    }

    /// Aborts the connection's task, and closes the connection if it waits idle (set
    /// aside in its worker's lot, it has no task); returns whether there was either.
    fn abort(&self) -> bool {
        let mut w = self.control();
        let idle = w.waiting;
        if idle {
            w.closing = true;
            if let Some(k) = w.waker.take() {
                k.wake();
            }
        }
        w.abort.as_ref().inspect(|h| h.abort()).is_some() || idle
    }
}

/// Every open client connection, in shards: each worker registers and removes its
/// connections in its own shard, so accepts on different workers take no common lock.
/// The registry does not keep a connection's context alive: the context removes its
/// entry when it goes.
pub struct Sessions {
    next: AtomicU64,
    shards: [Mutex<HashMap<u64, Weak<ConnCtx>>>; SHARDS],
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Sessions {
    /// A new connection's entry, for its context; [`Sessions::register`] lists it.
    pub fn open(&self) -> Session {
        Session {
            id: self.next.fetch_add(1, Relaxed) + 1,
            requests: AtomicU64::new(0),
            server: AtomicUsize::new(0),
            control: Mutex::default(),
        }
    }

    /// Lists the connection `id` (its context, being made with `Arc::new_cyclic`) in
    /// `shard`, its worker's, which [`Sessions::remove`] is given too.
    pub fn register(&self, shard: usize, id: u64, cx: &Weak<ConnCtx>) {
        lock(&self.shards[shard % SHARDS]).insert(id, cx.clone());
    }

    /// Removes a connection's entry (its context is going).
    pub fn remove(&self, shard: usize, id: u64) {
        lock(&self.shards[shard % SHARDS]).remove(&id);
    }

    /// Every open connection, oldest first.
    pub fn list(&self) -> Vec<Arc<ConnCtx>> {
        let mut v: Vec<_> = Vec::new();
        for shard in &self.shards {
            v.extend(lock(shard).values().filter_map(Weak::upgrade));
        }
        v.sort_by_key(|c| c.session.id);
        v
    }

    /// Closes the connections that wait idle for their next request (a stop: the others
    /// close after their response); returns how many.
    pub fn close_idle(&self) -> usize {
        self.list()
            .iter()
            .filter(|c| c.session.close_idle())
            .count()
    }

    /// Aborts every connection; returns how many (the end of a drain's grace time).
    pub fn abort_all(&self) -> usize {
        self.list().iter().filter(|c| c.session.abort()).count()
    }

    /// Aborts the connections whose request in flight uses `server`; returns how many.
    pub fn shutdown_server(&self, server: &Arc<ServerLive>) -> usize {
        let mut n = 0;
        for c in self.list() {
            if c.session.is_at(server) && c.session.abort() {
                n += 1;
            }
        }
        n
    }
}
