//! Listening sockets and accept loops.
//!
//! Each worker thread has its own socket for every bind address (`SO_REUSEPORT`), so the
//! kernel spreads connections over workers and no accept is shared between threads. An
//! accept loop stops taking connections while its frontend or the process is at its
//! connection limit (the kernel queues them meanwhile), backs off on accept errors such as
//! running out of file descriptors, and ends when the proxy stops.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

use crate::handler::ConnCtx;
use crate::rules::sample::ConnInfo;
use crate::runtime::Shared;
use crate::server::{Accepted, serve_connection};
use crate::state::{FrontendLive, GlobalLive};

/// Opens a listening socket that other workers can bind too.
pub fn bind(
    addr: SocketAddr,
    v6only: bool,
    backlog: u32,
    freebind: bool,
) -> io::Result<std::net::TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(v6only)?;
        if freebind {
            s.set_freebind_v6(true)?;
        }
    } else if freebind {
        // The address may arrive later (a VRRP takeover): no rebind is needed then.
        s.set_freebind_v4(true)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(backlog.min(i32::MAX as u32) as i32)?;
    Ok(s.into())
}

/// Counts a new connection against its frontend and the process.
fn count_accepted(fe: &FrontendLive, g: &GlobalLive) {
    g.conns_cur.fetch_add(1, Relaxed);
    g.conns_total.fetch_add(1, Relaxed);
    let n = fe.conns_cur.fetch_add(1, Relaxed) + 1;
    fe.conns_max.fetch_max(n, Relaxed);
    fe.conns_total.fetch_add(1, Relaxed);
}

/// Live connections of one worker, so a stopping worker can wait for them, and the
/// worker's shard of the session registry.
pub struct Tracker {
    count: AtomicUsize,
    zero: Notify,
    shard: usize,
}

impl Default for Tracker {
    /// The current worker's.
    fn default() -> Self {
        Tracker {
            count: AtomicUsize::new(0),
            zero: Notify::new(),
            shard: crate::worker::index(),
        }
    }
}

impl Tracker {
    pub fn count(&self) -> usize {
        self.count.load(Relaxed)
    }

    /// Resolves when no connection is left.
    pub async fn idle(&self) {
        loop {
            let notified = self.zero.notified();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

fn at_limit(fe: &FrontendLive, g: &GlobalLive) -> bool {
    let fl = fe.limit.load(Relaxed);
    let gl = g.limit.load(Relaxed);
    (fl > 0 && fe.conns_cur.load(Relaxed) >= fl) || (gl > 0 && g.conns_cur.load(Relaxed) >= gl)
}

/// One listening socket of a worker for one bind of a frontend.
pub struct ListenSpec {
    pub listener: TcpListener,
    pub frontend: Arc<str>,
    /// The bind's configured address, and which of the frontend's binds with that address
    /// it is.
    pub configured: SocketAddr,
    pub nth: usize,
    /// Set when a reload removes the bind.
    pub stop: watch::Receiver<bool>,
}

/// Accepts connections for one bind of one frontend until the proxy stops or a reload
/// removes the bind. Each connection gets the snapshot current when it was accepted.
pub async fn accept_loop(
    spec: ListenSpec,
    shared: Arc<Shared>,
    tracker: Arc<Tracker>,
    mut shutdown: watch::Receiver<bool>,
) {
    let ListenSpec {
        listener,
        frontend,
        configured,
        nth,
        mut stop,
    } = spec;
    let Ok(local) = listener.local_addr() else {
        return;
    };
    loop {
        if *shutdown.borrow() || *stop.borrow() {
            return;
        }
        let Some(fe) = shared.snapshot.load().frontend(&frontend).cloned() else {
            return;
        };
        if at_limit(&fe.live, &shared.live.global) {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(10)) => continue,
                _ = shutdown.changed() => return,
            }
        }
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => return,
            _ = stop.changed() => return,
        };
        let (tcp, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE, ENFILE, ENOBUFS...: wait for resources instead of spinning.
                tracing::warn!(frontend = %frontend, %local, "accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // The configuration may have been reloaded while this loop waited in accept: the
        // connection gets the current one.
        let snapshot = shared.snapshot.load_full();
        let Some(fe) = snapshot.frontend(&frontend).cloned() else {
            return;
        };
        let Some(bind) = fe
            .binds
            .iter()
            .enumerate()
            .filter(|(_, b)| b.addr == configured)
            .nth(nth)
            .map(|(i, _)| i)
        else {
            return;
        };
        // The limit may have been reached while this loop waited in accept: hold the new
        // connection, unread, until a slot frees.
        while at_limit(&fe.live, &shared.live.global) {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                _ = shutdown.changed() => return,
            }
        }
        spawn_connection(tcp, peer, local, bind, snapshot, fe, &shared, &tracker);
    }
}

/// What a connection's context gives back when it goes, after the connection's last
/// request: its registry entry, its counts on its frontend and the process, and its place
/// among its worker's connections.
pub struct Held {
    tracker: Arc<Tracker>,
}

impl Held {
    pub(crate) fn release(&self, cx: &ConnCtx) {
        let live = &cx.shared.live;
        live.sessions.remove(self.tracker.shard, cx.session.id);
        cx.frontend.live.conns_cur.fetch_sub(1, Relaxed);
        live.global.conns_cur.fetch_sub(1, Relaxed);
        if self.tracker.count.fetch_sub(1, Relaxed) == 1 {
            self.tracker.zero.notify_waiters();
        }
    }
}

/// Serves an accepted connection in a task of its own: counted on its frontend and in
/// the session registry, with a handle to abort it (`shutdown sessions`).
#[allow(clippy::too_many_arguments)]
fn spawn_connection(
    tcp: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    local: std::net::SocketAddr,
    bind: usize,
    snapshot: Arc<crate::snapshot::Snapshot>,
    fe: Arc<crate::snapshot::Frontend>,
    shared: &Arc<Shared>,
    tracker: &Arc<Tracker>,
) {
    let spec = fe.binds.get(bind);
    let tls = spec.and_then(|b| b.tls.clone());
    let proxy = spec.map_or(crate::server::ProxyHeader::None, |b| {
        b.accept_proxy.expect(peer.ip())
    });
    count_accepted(&fe.live, &shared.live.global);
    tracker.count.fetch_add(1, Relaxed);
    let live = &shared.live;
    let cx = Arc::new_cyclic(|me| {
        let session = live.sessions.open();
        live.sessions.register(tracker.shard, session.id, me);
        ConnCtx {
            info: ConnInfo::new(peer, local, tls.is_some()),
            snapshot,
            frontend: fe,
            shared: shared.clone(),
            newest: Default::default(),
            session,
            accepted: tokio::time::Instant::now(),
            held: Some(Held {
                tracker: tracker.clone(),
            }),
        }
    });
    let a = Accepted {
        tcp,
        tls,
        proxy,
        cx: cx.clone(),
    };
    let task = tokio::spawn(serve_connection(a));
    cx.session.set_abort(task.abort_handle());
}
