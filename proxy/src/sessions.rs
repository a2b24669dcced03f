//! Client connections, for the runtime API's `show sess` and `shutdown sessions server`:
//! registered at accept, removed when they end, each with the server its request in
//! flight uses and a handle to abort it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
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
}

/// Every open client connection.
#[derive(Default)]
pub struct Sessions {
    next: AtomicU64,
    all: Mutex<HashMap<u64, Arc<Session>>>,
}

/// Removes its session when the connection ends.
pub struct Registered {
    pub session: Arc<Session>,
    sessions: Arc<Sessions>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Ok(mut all) = self.sessions.all.lock() {
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
        });
        if let Ok(mut all) = self.all.lock() {
            all.insert(id, session.clone());
        }
        Registered {
            session,
            sessions: self.clone(),
        }
    }

    /// Every session, oldest first.
    pub fn list(&self) -> Vec<Arc<Session>> {
        let mut v: Vec<_> = self
            .all
            .lock()
            .map(|a| a.values().cloned().collect())
            .unwrap_or_default();
        v.sort_by_key(|s| s.id);
        v
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
