//! Idle keep-alive client connections set aside until their next request.
//!
//! An HTTP/1.1 connection idle for [`PARK_AFTER`](super::h1::PARK_AFTER) leaves its task:
//! its socket leaves the reactor for the worker's lot, an epoll instance of its own that
//! the lot's one task watches, and of the connection only the socket, its context and,
//! over TLS, its record layer's keys stay. The task (256 bytes with its future), the
//! reactor's registration (256), the connection's state (64) and the TLS stream (128) go,
//! so a front door holding many idle clients keeps about half the memory for each.
//!
//! When a parked socket becomes readable (a request, or the client's close), the lot
//! gives it back to the reactor and the connection a task again, waiting for its request
//! as before. At the keep-alive timeout, or when a stop or `shutdown sessions` asks (the
//! connection's session wakes the lot), the lot closes it, as the connection's task
//! would have. Setting a connection aside and taking it back cost four system calls
//! (`epoll_ctl` out of the reactor and into the lot, and back) and a task; a client
//! that sends a request at least once a second never pays them.

use std::collections::BTreeSet;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

use rustix::event::epoll;
use slab::Slab;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

use super::h1::ClientConn;
use crate::handler::ConnCtx;
use crate::io::ClientIo;
use crate::tls::records::Records;
use crate::tls::stream::TlsStream;

/// A connection set aside: its socket, its keys over TLS, its context, and when its
/// keep-alive timeout ends.
struct Parked {
    tcp: std::net::TcpStream,
    tls: Option<Box<Records>>,
    cx: Arc<ConnCtx>,
    until: Instant,
    /// Told apart from an earlier connection in the same slot, in the epoll events.
    generation: u32,
}

/// A worker's lot.
struct Lot {
    inner: Mutex<Inner>,
    wakes: Arc<Wakes>,
    /// What the sessions of the connections set aside are woken through.
    waker: Waker,
}

struct Inner {
    epoll: AsyncFd<rustix::fd::OwnedFd>,
    parked: Slab<Parked>,
    /// Keep-alive deadlines, with the slot of their connection.
    due: BTreeSet<(Instant, usize)>,
    generation: u32,
    /// The lot's task is gone (its runtime stopped): no more connections come in.
    gone: bool,
}

/// The lot task's waker, and whether a session asked for a look at the connections
/// (a stop, `shutdown sessions`).
#[derive(Default)]
struct Wakes {
    look: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Wake for Wakes {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.look.store(true, Ordering::Release);
        self.wake_task();
    }
}

impl Wakes {
    fn wake_task(&self) {
        if let Some(w) = lock(&self.task).as_ref() {
            w.wake_by_ref();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The worker's lot, made with its task at the first connection set aside.
enum Slot {
    Unset,
    Ready(Arc<Lot>),
    /// No epoll instance could be made (out of file descriptors): connections stay in
    /// their tasks on this thread.
    Unavailable,
}

thread_local! {
    static LOT: std::cell::RefCell<Slot> = const { std::cell::RefCell::new(Slot::Unset) };
}

fn lot() -> Option<Arc<Lot>> {
    LOT.with(|slot| {
        let mut slot = slot.borrow_mut();
        match &*slot {
            Slot::Ready(l) if !lock(&l.inner).gone => return Some(l.clone()),
            Slot::Unavailable => return None,
            Slot::Ready(_) | Slot::Unset => {}
        }
        match Lot::start() {
            Ok(l) => {
                *slot = Slot::Ready(l.clone());
                Some(l)
            }
            Err(e) => {
                tracing::warn!("idle connections stay in their tasks: no epoll instance: {e}");
                *slot = Slot::Unavailable;
                None
            }
        }
    })
}

impl Lot {
    /// A lot and its task, on the current runtime.
    fn start() -> io::Result<Arc<Lot>> {
        let fd = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        // Deprecated for descriptors the `AsyncFd` does not own (one closed while still
        // registered); this one owns its descriptor, the epoll instance.
        #[allow(deprecated)]
        let epoll = AsyncFd::with_interest(fd, Interest::READABLE)?;
        let wakes = Arc::new(Wakes::default());
        let lot = Arc::new(Lot {
            inner: Mutex::new(Inner {
                epoll,
                parked: Slab::new(),
                due: BTreeSet::new(),
                generation: 0,
                gone: false,
            }),
            waker: Waker::from(wakes.clone()),
            wakes,
        });
        tokio::spawn(run(lot.clone()));
        Ok(lot)
    }
}

/// Sets an idle connection aside until its next request, or closes it at `until` (its
/// keep-alive timeout). Gives the connection back when it cannot be set aside (bytes
/// buffered, a TLS stream that is not quiet, no lot, no room in the lot's epoll
/// instance); `None` when it was taken: set aside, or closed (a stop asked for that
/// meanwhile, or its socket failed on the way).
pub(crate) fn park(
    conn: Box<ClientConn>,
    cx: &Arc<ConnCtx>,
    until: Instant,
) -> Option<Box<ClientConn>> {
    if !conn.parks_whole() {
        return Some(conn);
    }
    let Some(lot) = lot() else {
        return Some(conn);
    };
    // Out of the reactor (its registration is freed), into the lot.
    let taken = match (*conn).into_io() {
        ClientIo::Plain(tcp) => tcp.into_std().map(|t| (t, None)),
        ClientIo::Tls(s) => match s.into_parked() {
            Ok(r) => r.map(|(t, r)| (t, Some(r))),
            Err(s) => return Some(Box::new(ClientConn::resumed(ClientIo::Tls(s)))),
        },
    };
    let (tcp, tls) = match taken {
        Ok(t) => t,
        Err(e) => {
            tracing::debug!(client = %cx.info.client(), "idle connection lost: {e}");
            return None;
        }
    };
    let mut g = lock(&lot.inner);
    let Inner {
        epoll: ep,
        parked,
        due,
        generation,
        ..
    } = &mut *g;
    *generation = generation.wrapping_add(1);
    let slot = parked.vacant_entry();
    let key = slot.key();
    let data = epoll::EventData::new_u64(token(key, *generation));
    // Edge-triggered: a socket readable already (its request or close came meanwhile)
    // reports at once.
    let flags = epoll::EventFlags::IN | epoll::EventFlags::RDHUP | epoll::EventFlags::ET;
    if let Err(e) = epoll::add(ep.get_ref(), &tcp, data, flags) {
        // Out of watches (`fs.epoll.max_user_watches`): the connection waits in its task.
        drop(g);
        tracing::debug!(client = %cx.info.client(), "idle connection not set aside: {e}");
        return match rejoin(tcp, tls) {
            Ok(io) => Some(Box::new(ClientConn::resumed(io))),
            Err(e) => {
                tracing::debug!(client = %cx.info.client(), "idle connection lost: {e}");
                None
            }
        };
    }
    // From here a stop or `shutdown` reaches the connection through the lot; the task's
    // handle goes with the task.
    if !cx.session.park(&lot.waker) {
        // A stop asked the connection to close already.
        let _ = epoll::delete(ep.get_ref(), &tcp);
        return None;
    }
    slot.insert(Parked {
        tcp,
        tls,
        cx: cx.clone(),
        until,
        generation: *generation,
    });
    // The lot's timer stands at the earliest deadline it knew of, or none.
    let earliest = due.first().is_none_or(|&(d, _)| until < d);
    due.insert((until, key));
    cx.shared
        .live
        .global
        .conns_parked
        .fetch_add(1, Ordering::Relaxed);
    if earliest {
        drop(g);
        lot.wakes.wake_task();
    }
    None
}

fn token(key: usize, generation: u32) -> u64 {
    (u64::from(generation) << 32) | key as u64
}

/// What the lot does with a connection it took out.
enum Out {
    /// Readable: its request (or its close) came.
    Resume(Parked),
    /// Closed: a stop, a shutdown or the keep-alive timeout.
    Close(Parked),
}

/// The lot's task: takes out the connections that became readable, whose keep-alive
/// timeout came or that a stop asked to close. It lives as long as its worker.
async fn run(lot: Arc<Lot>) {
    struct Gone(Arc<Lot>);
    impl Drop for Gone {
        fn drop(&mut self) {
            // The runtime stops: what is set aside is closed with it.
            let parked = {
                let mut g = lock(&self.0.inner);
                g.gone = true;
                g.due.clear();
                std::mem::take(&mut g.parked)
            };
            for (_, p) in parked {
                unparked(&p.cx);
            }
        }
    }
    let gone = Gone(lot);
    let lot = &gone.0;
    let mut timer = Box::pin(tokio::time::sleep_until(Instant::now()));
    let mut out = Vec::new();
    std::future::poll_fn(|task| lot.poll(task, timer.as_mut(), &mut out)).await
}

impl Lot {
    fn poll(
        &self,
        task: &mut Context<'_>,
        mut timer: std::pin::Pin<&mut tokio::time::Sleep>,
        out: &mut Vec<Out>,
    ) -> Poll<()> {
        loop {
            {
                let mut w = lock(&self.wakes.task);
                if !w.as_ref().is_some_and(|w| w.will_wake(task.waker())) {
                    *w = Some(task.waker().clone());
                }
            }
            let next = {
                let mut g = lock(&self.inner);
                let g = &mut *g;
                take_readable(g, task, out);
                if self.wakes.look.swap(false, Ordering::AcqRel) {
                    take_closing(g, out);
                }
                take_due(g, Instant::now(), out);
                if g.parked.is_empty() && g.parked.capacity() > 1024 {
                    // The slots of a crowd of idle clients that has gone.
                    g.parked = Slab::new();
                }
                g.due.first().map(|&(d, _)| d)
            };
            for o in out.drain(..) {
                match o {
                    Out::Resume(p) => resume(p),
                    Out::Close(p) => unparked(&p.cx),
                }
            }
            let Some(next) = next else {
                return Poll::Pending;
            };
            if timer.deadline() != next {
                timer.as_mut().reset(next);
            }
            if timer.as_mut().poll(task).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

/// Takes out the connections the lot's epoll instance reports readable.
fn take_readable(g: &mut Inner, task: &mut Context<'_>, out: &mut Vec<Out>) {
    let mut events = [std::mem::MaybeUninit::<epoll::Event>::uninit(); 64];
    // Bounded, so that a flood of events does not keep the worker from its other tasks:
    // the rest is taken at the next poll.
    for _ in 0..64 {
        let mut ready = match g.epoll.poll_read_ready(task) {
            Poll::Ready(Ok(r)) => r,
            Poll::Ready(Err(e)) => {
                tracing::warn!("idle connections' epoll instance failed: {e}");
                return;
            }
            Poll::Pending => return,
        };
        let zero = rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let got = match epoll::wait(g.epoll.get_ref(), &mut events[..], Some(&zero)) {
            Ok(([], _)) => {
                ready.clear_ready();
                continue;
            }
            Ok((got, rest)) => {
                if !rest.is_empty() {
                    // Fewer events than room: none was left, and one coming later
                    // reports anew. (The loop's next poll registers the waker.)
                    ready.clear_ready();
                }
                got
            }
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => {
                tracing::warn!("idle connections' epoll instance failed: {e}");
                ready.clear_ready();
                return;
            }
        };
        for ev in got.iter() {
            let t = ev.data.u64();
            let (key, generation) = ((t & u64::from(u32::MAX)) as usize, (t >> 32) as u32);
            if g.parked
                .get(key)
                .is_some_and(|p| p.generation == generation)
                && let Some(p) = take(g, key)
            {
                out.push(Out::Resume(p));
            }
        }
    }
    // Events may be left: come back at once.
    task.waker().wake_by_ref();
}

/// Takes connection `key` out of the lot and its epoll instance.
fn take(g: &mut Inner, key: usize) -> Option<Parked> {
    let p = g.parked.try_remove(key)?;
    g.due.remove(&(p.until, key));
    let _ = epoll::delete(g.epoll.get_ref(), &p.tcp);
    Some(p)
}

/// Takes out the connections a stop or a shutdown asked to close.
fn take_closing(g: &mut Inner, out: &mut Vec<Out>) {
    let closing: Vec<usize> = g
        .parked
        .iter()
        .filter(|(_, p)| {
            p.cx.session.closing()
                || *p.cx.frontend.retire.borrow() == crate::snapshot::Retire::Stopping
        })
        .map(|(k, _)| k)
        .collect();
    out.extend(
        closing
            .into_iter()
            .filter_map(|key| take(g, key))
            .map(Out::Close),
    );
}

/// Takes out the connections whose keep-alive timeout came.
fn take_due(g: &mut Inner, now: Instant, out: &mut Vec<Out>) {
    while let Some(&(until, key)) = g.due.first() {
        if until > now {
            break;
        }
        g.due.pop_first();
        out.extend(take(g, key).map(Out::Close));
    }
}

/// A connection leaves the lot (the caller closes or resumes it).
fn unparked(cx: &ConnCtx) {
    cx.shared
        .live
        .global
        .conns_parked
        .fetch_sub(1, Ordering::Relaxed);
}

/// Gives a connection that became readable back to the reactor, and a task that waits
/// for its request as before.
fn resume(p: Parked) {
    unparked(&p.cx);
    let Parked {
        tcp,
        tls,
        cx,
        until,
        ..
    } = p;
    let io = match rejoin(tcp, tls) {
        Ok(io) => io,
        Err(e) => {
            tracing::debug!(client = %cx.info.client(), "idle connection lost: {e}");
            return;
        }
    };
    let conn = Box::new(ClientConn::resumed(io));
    let task = tokio::spawn(super::resume_connection(conn, cx.clone(), until));
    cx.session.set_abort(task.abort_handle());
}

/// A socket set aside, registered with the reactor again, with its TLS stream.
fn rejoin(tcp: std::net::TcpStream, tls: Option<Box<Records>>) -> io::Result<ClientIo> {
    let tcp = tokio::net::TcpStream::from_std(tcp)?;
    Ok(match tls {
        None => ClientIo::Plain(tcp),
        Some(r) => ClientIo::Tls(TlsStream::unparked(tcp, r)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection set aside keeps its context, its slot in the lot (a slab grown by
    /// doubling) and its deadline (a B-tree entry of 24 bytes): the slot is what the lot
    /// adds to the context, which `connection_task_stays_small` holds.
    #[test]
    fn a_parked_connections_slot_stays_small() {
        let n = std::mem::size_of::<Parked>();
        eprintln!("parked connection: {n} bytes");
        assert!(n <= 40, "a parked connection's slot grew to {n} bytes");
    }
}
