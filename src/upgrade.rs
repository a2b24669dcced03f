//! Binary upgrade: the running process starts the binary now at its own path as a new
//! process and hands it its listening sockets, so that no port is ever closed.
//!
//! The old process opens a private Unix socket (in a directory only its user can enter)
//! and starts the new one with the socket's path in `RAMPART_UPGRADE_SOCKET`. The new
//! process connects (the old one checks that the peer is the process it started) and
//! receives, in frames of `[u32 length][u8 type][payload]`:
//!
//! - `L`: the tags of a batch of listening sockets, followed by one byte carrying the
//!   sockets themselves (`SCM_RIGHTS`);
//! - `S`: the server states, in the state file's format;
//! - `V`: the VRRP instances that are Master, which the new process starts as Master;
//! - `T`: stick table entries, as the peers protocol's update frames;
//! - `E`: the end.
//!
//! It starts with those sockets (binding only what nobody handed over), restores the
//! states and tables, and answers `R` (ready, with its pid) or `X` (the error that stopped
//! it). Only on `R` does the old process stop accepting and drain; on anything else it
//! keeps serving and says why.

use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rampart_proxy::inherit;

/// Where the new process finds the old one.
pub const ENV: &str = "RAMPART_UPGRADE_SOCKET";
/// How long the new process may take to be ready.
const READY_WITHIN: Duration = Duration::from_secs(60);
/// Sockets per `SCM_RIGHTS` message (the kernel takes at most 253).
const FDS_PER_BATCH: usize = 200;
const MAX_FRAME: usize = 256 << 20;

/// The binary's path when this process started: an upgrade starts what is at that path
/// now.
static EXE: OnceLock<Option<PathBuf>> = OnceLock::new();

/// Notes the binary's path; call once at start, before anything may replace the file.
pub fn note_exe() {
    EXE.get_or_init(|| std::env::current_exe().ok());
}

fn write_frame(s: &mut UnixStream, t: u8, payload: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(payload.len())
        .map_err(|_| std::io::Error::other("hand-over frame too large"))?;
    let mut head = [0u8; 5];
    head[..4].copy_from_slice(&len.to_be_bytes());
    head[4] = t;
    s.write_all(&head)?;
    s.write_all(payload)
}

fn read_frame(s: &mut UnixStream) -> std::io::Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 5];
    s.read_exact(&mut head)?;
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::other("hand-over frame too large"));
    }
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload)?;
    Ok((head[4], payload))
}

fn send_fds(s: &UnixStream, fds: &[BorrowedFd<'_>]) -> std::io::Result<()> {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags, sendmsg};
    let mut space = vec![MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(std::io::Error::other("too many sockets in one message"));
    }
    let n = sendmsg(s, &[IoSlice::new(b"F")], &mut control, SendFlags::empty())?;
    if n != 1 {
        return Err(std::io::Error::other("short hand-over message"));
    }
    Ok(())
}

fn recv_fds(s: &UnixStream, want: usize) -> std::io::Result<Vec<OwnedFd>> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, recvmsg};
    let mut space = vec![MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(want))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8; 1];
    let r = recvmsg(
        s,
        &mut [IoSliceMut::new(&mut byte)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut out = Vec::new();
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = m {
            out.extend(fds);
        }
    }
    if r.bytes != 1 || byte[0] != b'F' {
        return Err(std::io::Error::other("expected the sockets' message"));
    }
    if r.flags.contains(ReturnFlags::CTRUNC) || out.len() != want {
        return Err(std::io::Error::other(format!(
            "expected {want} sockets, received {}",
            out.len()
        )));
    }
    Ok(out)
}

// ---- the old process ----

/// What the old process hands over.
pub struct Handed {
    pub listeners: Vec<inherit::Listener>,
    pub states: String,
    pub vrrp_masters: Vec<String>,
    pub tables: Vec<Bytes>,
}

/// A new process that is serving.
#[derive(Debug)]
pub struct Started {
    pub pid: u32,
    pub exe: PathBuf,
    pub sockets: usize,
}

/// A private directory for the rendezvous socket, removed when dropped.
struct Rendezvous {
    dir: PathBuf,
    listener: std::os::unix::net::UnixListener,
}

impl Rendezvous {
    fn open() -> std::io::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir =
            std::env::temp_dir().join(format!("rampart-upgrade-{}-{nonce:x}", std::process::id()));
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let listener = match std::os::unix::net::UnixListener::bind(dir.join("s")) {
            Ok(l) => l,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        listener.set_nonblocking(true)?;
        Ok(Self { dir, listener })
    }

    fn path(&self) -> PathBuf {
        self.dir.join("s")
    }
}

impl Drop for Rendezvous {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts the new process, hands it `handed`, and waits until it is ready. Blocking: run
/// it off the async runtime. On an error the new process is gone and nothing changed
/// here.
pub fn start_successor(handed: Handed) -> Result<Started, String> {
    let exe = EXE
        .get()
        .cloned()
        .flatten()
        .ok_or("the binary's path is unknown")?;
    if !exe.is_file() {
        return Err(format!("{}: no such file", exe.display()));
    }
    let rv = Rendezvous::open().map_err(|e| format!("cannot open the hand-over socket: {e}"))?;
    let mut child = std::process::Command::new(&exe)
        .args(std::env::args_os().skip(1))
        .env(ENV, rv.path())
        .stdin(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
    let pid = child.id();
    match hand_to(&rv, &mut child, handed) {
        Ok(sockets) => {
            // Reaped here if it ends before this process does.
            let _ = std::thread::Builder::new()
                .name("rampart-successor".into())
                .spawn(move || child.wait());
            Ok(Started { pid, exe, sockets })
        }
        Err(e) => {
            let _ = child.kill();
            let status = child.wait();
            let status = match status {
                Ok(s) => format!(" ({s})"),
                Err(_) => String::new(),
            };
            Err(format!("new process {pid}{status}: {e}"))
        }
    }
}

fn hand_to(
    rv: &Rendezvous,
    child: &mut std::process::Child,
    handed: Handed,
) -> Result<usize, String> {
    let deadline = Instant::now() + READY_WITHIN;
    let exited = |child: &mut std::process::Child| match child.try_wait() {
        Ok(Some(s)) => Some(format!("exited before it was ready ({s})")),
        _ => None,
    };
    // The new process connects first thing.
    let mut s = loop {
        match rv.listener.accept() {
            Ok((s, _)) => {
                let cred = rustix::net::sockopt::socket_peercred(&s)
                    .map_err(|e| format!("hand-over socket: {e}"))?;
                if cred.pid.as_raw_nonzero().get() as u32 == child.id() {
                    break s;
                }
                tracing::warn!(
                    "upgrade: a process other than the new one ({}) connected; ignored",
                    cred.pid.as_raw_nonzero()
                );
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if let Some(why) = exited(child) {
                    return Err(why);
                }
                if Instant::now() >= deadline {
                    return Err("did not connect to the hand-over socket in time".into());
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(format!("hand-over socket: {e}")),
        }
    };
    let io = |e: std::io::Error| format!("hand-over: {e}");
    s.set_nonblocking(false).map_err(io)?;
    s.set_write_timeout(Some(READY_WITHIN)).map_err(io)?;
    let sockets = handed.listeners.len();
    for batch in handed.listeners.chunks(FDS_PER_BATCH) {
        let tags: Vec<&str> = batch.iter().map(|l| l.tag.as_str()).collect();
        write_frame(&mut s, b'L', tags.join("\n").as_bytes()).map_err(io)?;
        let fds: Vec<BorrowedFd<'_>> = batch.iter().map(|l| l.fd.as_fd()).collect();
        send_fds(&s, &fds).map_err(io)?;
    }
    write_frame(&mut s, b'S', handed.states.as_bytes()).map_err(io)?;
    write_frame(&mut s, b'V', handed.vrrp_masters.join("\n").as_bytes()).map_err(io)?;
    for t in &handed.tables {
        write_frame(&mut s, b'T', t).map_err(io)?;
    }
    write_frame(&mut s, b'E', &[]).map_err(io)?;
    // Then its answer, once it has started.
    let left = deadline.saturating_duration_since(Instant::now());
    s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
        .map_err(io)?;
    match read_frame(&mut s) {
        Ok((b'R', _)) => Ok(sockets),
        Ok((b'X', why)) => Err(String::from_utf8_lossy(&why).into_owned()),
        Ok((t, _)) => Err(format!("unexpected answer {t:?}")),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Err(format!("not ready within {}s", READY_WITHIN.as_secs()))
        }
        Err(_) => Err(exited(child).unwrap_or_else(|| "closed the hand-over socket".into())),
    }
}

// ---- the new process ----

/// What the old process handed over, besides the sockets (which are in
/// [`rampart_proxy::inherit`]).
#[derive(Default)]
pub struct Received {
    pub states: Option<String>,
    pub vrrp_masters: Vec<String>,
    pub tables: Vec<Bytes>,
    pub sockets: usize,
}

/// The connection to the old process, for the answer.
static ANSWER: Mutex<Option<UnixStream>> = Mutex::new(None);

/// Whether this process was started by an upgrade, and if so what it received. An error
/// means the old process could not be reached or sent something unreadable: this process
/// must not start then (its ports are the old one's).
pub fn receive() -> Option<Result<Received, String>> {
    let path = std::env::var_os(ENV).filter(|p| !p.is_empty())?;
    Some(receive_from(Path::new(&path)).map_err(|e| format!("binary upgrade: {e}")))
}

fn receive_from(path: &Path) -> std::io::Result<Received> {
    let mut s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(READY_WITHIN))?;
    let mut out = Received::default();
    loop {
        let (t, payload) = read_frame(&mut s)?;
        match t {
            b'L' => {
                let text = String::from_utf8_lossy(&payload).into_owned();
                let tags: Vec<String> = text.split('\n').map(str::to_owned).collect();
                let fds = recv_fds(&s, tags.len())?;
                let listeners: Vec<inherit::Listener> = tags
                    .into_iter()
                    .zip(fds)
                    .filter_map(|(tag, fd)| inherit::Listener::from_fd(tag, fd))
                    .collect();
                out.sockets += listeners.len();
                inherit::offer(listeners);
            }
            b'S' => out.states = Some(String::from_utf8_lossy(&payload).into_owned()),
            b'V' => {
                out.vrrp_masters = String::from_utf8_lossy(&payload)
                    .split('\n')
                    .filter(|n| !n.is_empty())
                    .map(str::to_owned)
                    .collect();
            }
            b'T' => out.tables.push(Bytes::from(payload)),
            b'E' => break,
            other => {
                return Err(std::io::Error::other(format!(
                    "unexpected hand-over frame {other:?}"
                )));
            }
        }
    }
    *ANSWER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(s);
    Ok(out)
}

fn answer(t: u8, payload: &[u8]) -> bool {
    let Some(mut s) = ANSWER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take()
    else {
        return false;
    };
    write_frame(&mut s, t, payload).is_ok()
}

/// Tells the old process this one serves (it stops accepting then). Returns whether this
/// process was started by an upgrade.
pub fn report_ready() -> bool {
    answer(b'R', std::process::id().to_string().as_bytes())
}

/// Tells the old process why this one could not start (it keeps serving).
pub fn report_failure(why: &str) {
    answer(b'X', why.as_bytes());
}

/// Applies the handed-over table entries to the tables of the new configuration.
pub fn restore_tables(tables: &[Arc<rampart_proxy::stick::Table>], frames: Vec<Bytes>) -> usize {
    let mut n = 0;
    for f in frames {
        match rampart_proxy::stick::peers::apply_frame(tables, f) {
            Ok(k) => n += k,
            Err(e) => tracing::warn!("upgrade: stick table entries not restored: {e}"),
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_and_frames_cross_a_unix_socket() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let l1 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let l2 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let want = [l1.local_addr().unwrap(), l2.local_addr().unwrap()];
        write_frame(&mut a, b'L', b"one\ntwo").unwrap();
        send_fds(&a, &[l1.as_fd(), l2.as_fd()]).unwrap();
        write_frame(&mut a, b'E', &[]).unwrap();
        let (t, tags) = read_frame(&mut b).unwrap();
        assert_eq!((t, &tags[..]), (b'L', &b"one\ntwo"[..]));
        let fds = recv_fds(&b, 2).unwrap();
        let got: Vec<_> = fds
            .into_iter()
            .map(|fd| std::net::TcpListener::from(fd).local_addr().unwrap())
            .collect();
        assert_eq!(got, want);
        assert_eq!(read_frame(&mut b).unwrap().0, b'E');
    }

    #[test]
    fn a_missing_socket_message_is_an_error() {
        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(b"X").unwrap();
        assert!(recv_fds(&b, 1).is_err());
    }

    #[test]
    fn oversized_frames_are_refused() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        a.write_all(&[0xff, 0xff, 0xff, 0xff, b'S']).unwrap();
        assert!(read_frame(&mut b).is_err());
    }
}
