//! Listening sockets passed from a running process to the process replacing it (a binary
//! upgrade), so that no port is ever closed and no connection queued in a socket's accept
//! queue is lost.
//!
//! The old process lists what it listens on ([`exported`]); the new one receives the
//! sockets and [`offer`]s them here before it starts. Whatever would bind an address asks
//! this pool first ([`take_tcp`], [`take_unix`]) and binds anew only what nobody handed
//! over. What nobody claimed is closed by [`release_unclaimed`] once the new process is
//! ready: the old process stops accepting only after that.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

/// Where a listening socket listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for Addr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Addr::Tcp(a) => write!(f, "{a}"),
            Addr::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

/// A listening socket with what it is for: `frontend <name> <configured> <nth>`,
/// `runtime-api`, `admin-http`, `peers`.
#[derive(Debug)]
pub struct Listener {
    pub tag: String,
    pub addr: Addr,
    pub fd: OwnedFd,
}

impl Listener {
    /// Reads the address from the socket itself: a received descriptor is not trusted to
    /// be what its tag says. `None` for anything but a bound stream socket.
    pub fn from_fd(tag: String, fd: OwnedFd) -> Option<Self> {
        let s = socket2::Socket::from(fd);
        if s.r#type().ok()? != socket2::Type::STREAM {
            return None;
        }
        let local = s.local_addr().ok()?;
        let addr = match local.as_socket() {
            Some(a) => Addr::Tcp(a),
            None => Addr::Unix(local.as_pathname()?.to_path_buf()),
        };
        Some(Self {
            tag,
            addr,
            fd: s.into(),
        })
    }
}

static POOL: Mutex<Vec<Listener>> = Mutex::new(Vec::new());
static EXPORTED: Mutex<Vec<Listener>> = Mutex::new(Vec::new());
static EXPORTING: AtomicBool = AtomicBool::new(false);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Sockets received from the process being replaced.
pub fn offer(listeners: Vec<Listener>) {
    lock(&POOL).extend(listeners);
}

/// Whether any handed-over socket is still unclaimed.
pub fn pending() -> usize {
    lock(&POOL).len()
}

/// Closes the handed-over sockets nobody claimed (binds the new configuration dropped);
/// returns them, for the log.
pub fn release_unclaimed() -> Vec<(String, Addr)> {
    lock(&POOL).drain(..).map(|l| (l.tag, l.addr)).collect()
}

/// Every handed-over TCP socket for `tag`, or, when no tag matches and `configured`
/// names a port, every one listening on exactly that address.
pub fn take_tcp(tag: &str, configured: SocketAddr) -> Vec<std::net::TcpListener> {
    let mut pool = lock(&POOL);
    let by_tag = pool
        .iter()
        .any(|l| l.tag == tag && matches!(l.addr, Addr::Tcp(_)));
    let wanted = |l: &Listener| match l.addr {
        Addr::Tcp(a) if by_tag => l.tag == tag && (configured.port() == 0 || a == configured),
        Addr::Tcp(a) => configured.port() != 0 && a == configured,
        Addr::Unix(_) => false,
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < pool.len() {
        if wanted(&pool[i]) {
            out.push(std::net::TcpListener::from(pool.swap_remove(i).fd));
        } else {
            i += 1;
        }
    }
    out
}

/// The handed-over socket tagged `tag` (or listening on `addr`), else a new one bound to
/// `addr` (`host:port`); non-blocking, and kept for a later hand-over.
pub fn take_or_bind(tag: &str, addr: &str) -> std::io::Result<std::net::TcpListener> {
    let configured = addr.parse().unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
    let l = match take_tcp(tag, configured).into_iter().next() {
        Some(l) => l,
        None => std::net::TcpListener::bind(addr)?,
    };
    l.set_nonblocking(true)?;
    export(tag, &l);
    Ok(l)
}

/// The handed-over Unix socket listening at `path`.
pub fn take_unix(path: &Path) -> Option<std::os::unix::net::UnixListener> {
    let mut pool = lock(&POOL);
    let i = pool
        .iter()
        .position(|l| matches!(&l.addr, Addr::Unix(p) if p == path))?;
    Some(std::os::unix::net::UnixListener::from(
        pool.swap_remove(i).fd,
    ))
}

/// Keeps a copy of each listening socket opened from now on, for a later hand-over
/// (the binary turns this on; a proxy embedded in tests does not keep copies).
pub fn enable_export() {
    EXPORTING.store(true, Relaxed);
}

/// Keeps a copy of a listening socket that lives as long as the process (the runtime
/// API, the admin listener, peers), for a later hand-over.
pub fn export(tag: &str, fd: &impl std::os::fd::AsFd) {
    if !EXPORTING.load(Relaxed) {
        return;
    }
    let Ok(copy) = fd.as_fd().try_clone_to_owned() else {
        return;
    };
    if let Some(l) = Listener::from_fd(tag.to_owned(), copy) {
        lock(&EXPORTED).push(l);
    }
}

/// Copies of the process-long listening sockets kept by [`export`].
pub fn exported() -> Vec<Listener> {
    lock(&EXPORTED)
        .iter()
        .filter_map(|l| {
            let fd = l.fd.try_clone().ok()?;
            Some(Listener {
                tag: l.tag.clone(),
                addr: l.addr.clone(),
                fd,
            })
        })
        .collect()
}

/// Whether copies are kept.
pub fn exporting() -> bool {
    EXPORTING.load(Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_are_taken_by_tag_then_by_address_and_only_once() {
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (aa, ba) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        offer(vec![
            Listener::from_fd("frontend web 127.0.0.1:0 0".into(), a.into()).unwrap(),
            Listener::from_fd("admin-http".into(), b.into()).unwrap(),
        ]);
        // A port-0 bind is found by its tag only.
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        assert!(take_tcp("frontend other 127.0.0.1:0 0", any).is_empty());
        let got = take_tcp("frontend web 127.0.0.1:0 0", any);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].local_addr().unwrap(), aa);
        assert!(take_tcp("frontend web 127.0.0.1:0 0", any).is_empty());
        // A fixed address is found whatever the tag.
        let got = take_tcp("frontend moved 1", ba);
        assert_eq!(got.len(), 1);
        assert!(release_unclaimed().is_empty());
    }

    #[test]
    fn a_descriptor_that_is_no_stream_socket_is_refused() {
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(Listener::from_fd("x".into(), u.into()).is_none());
    }
}
