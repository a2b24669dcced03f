//! Running the proxy: worker threads, each a single-threaded Tokio runtime with its own
//! listening sockets, a housekeeping thread, and a graceful stop.
//!
//! One runtime per worker (rather than one work-stealing runtime) keeps a connection, its
//! timers and its pooled server connections on one thread: no cross-thread wake-ups and no
//! contended state on the request path.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rampart_config::{Config, ConfigErrors};
use std::sync::Mutex;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};

use tokio::sync::{mpsc, oneshot, watch};

use crate::listener::{ListenSpec, Tracker, accept_loop, bind};
use crate::snapshot::{BindSpec, CompileEnv, Snapshot, compile};
use crate::state::Live;

/// State shared by every worker.
pub struct Shared {
    pub snapshot: ArcSwap<Snapshot>,
    pub live: Arc<Live>,
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error("frontend {frontend}: cannot bind {addr}: {error}")]
    Bind {
        frontend: String,
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("cannot start worker threads: {0}")]
    Runtime(std::io::Error),
}

/// A bound listening address.
#[derive(Debug, Clone)]
pub struct Bound {
    pub frontend: String,
    /// As configured (port 0 means "any").
    pub configured: SocketAddr,
    /// Which of the frontend's binds with this configured address it is (several binds
    /// may ask for port 0).
    pub nth: usize,
    pub local: SocketAddr,
}

/// A listening address of a frontend, open on every worker.
struct Listening {
    bound: Bound,
    /// Stops the accept loops of this address (on every worker).
    stop: watch::Sender<bool>,
    /// Copies of its sockets, to hand to a new process (see [`crate::inherit`]).
    copies: Vec<std::net::TcpListener>,
}

/// The tag of a frontend's listening sockets in a hand-over.
fn bind_tag(frontend: &str, configured: SocketAddr, nth: usize) -> String {
    format!("frontend {frontend} {configured} {nth}")
}

/// Copies of `socks` when the process keeps them for a hand-over.
fn copies(socks: &[std::net::TcpListener]) -> Vec<std::net::TcpListener> {
    if !crate::inherit::exporting() {
        return Vec::new();
    }
    socks.iter().filter_map(|s| s.try_clone().ok()).collect()
}

/// A listening socket handed to a worker.
struct ListenCmd {
    listener: std::net::TcpListener,
    frontend: Arc<str>,
    configured: SocketAddr,
    nth: usize,
    stop: watch::Receiver<bool>,
}

/// What a reload changed.
#[derive(Debug, Clone, Default)]
pub struct ReloadReport {
    pub generation: u64,
    /// What the new configuration should fix (certificates that expire soon).
    pub warnings: Vec<String>,
    pub listeners_added: Vec<Bound>,
    pub listeners_removed: Vec<Bound>,
}

/// Why a reload was refused; the running configuration is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error("frontend {frontend}: cannot bind {addr}: {error}")]
    Bind {
        frontend: String,
        addr: SocketAddr,
        error: std::io::Error,
    },
    /// The caller gave up waiting (see [`Attempt`]); nothing was applied.
    #[error("the reload was given up before the configuration was installed")]
    GaveUp,
    /// This process handed its listening sockets to a new one and is draining.
    #[error("this process is draining after a binary upgrade; reload the new process")]
    Draining,
}

/// A reload whose caller may give up waiting for it. Reloads made while it is current on
/// a thread ([`Attempt::run`]), directly or through an xDS client, install their
/// configuration only if the caller still waits at that moment; a configuration whose
/// caller gave up is never applied, however late its compilation ends.
#[derive(Debug, Default)]
pub struct Attempt(std::sync::atomic::AtomicU8);

const ATTEMPT_RUNNING: u8 = 0;
const ATTEMPT_GIVEN_UP: u8 = 1;
const ATTEMPT_INSTALLING: u8 = 2;

thread_local! {
    static CURRENT_ATTEMPT: std::cell::RefCell<Option<Arc<Attempt>>> =
        const { std::cell::RefCell::new(None) };
}

impl Attempt {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Runs `f` with this attempt current on this thread.
    pub fn run<R>(self: &Arc<Self>, f: impl FnOnce() -> R) -> R {
        let before = CURRENT_ATTEMPT.with(|c| c.replace(Some(self.clone())));
        let r = f();
        CURRENT_ATTEMPT.with(|c| c.replace(before));
        r
    }

    /// The caller gives up. False when the configuration is being installed already:
    /// installing cannot fail and is quick, so the caller waits for it instead.
    pub fn give_up(&self) -> bool {
        match self
            .0
            .compare_exchange(ATTEMPT_RUNNING, ATTEMPT_GIVEN_UP, SeqCst, SeqCst)
        {
            Ok(_) => true,
            Err(now) => now == ATTEMPT_GIVEN_UP,
        }
    }

    /// Whether the caller gave up.
    pub fn given_up(&self) -> bool {
        self.0.load(SeqCst) == ATTEMPT_GIVEN_UP
    }

    /// Whether the reload current on this thread (if any) may install its configuration;
    /// once it says yes, the caller can no longer give up.
    fn may_install() -> bool {
        CURRENT_ATTEMPT.with(|c| {
            c.borrow().as_ref().is_none_or(|a| {
                a.0.compare_exchange(ATTEMPT_RUNNING, ATTEMPT_INSTALLING, SeqCst, SeqCst)
                    .is_ok()
            })
        })
    }
}

/// What reloads need: the workers' listener channels, the listener registry, and the
/// housekeeping runtime for health checks and retirement timers. Cheap to share.
pub struct Control {
    shared: Arc<Shared>,
    workers: Vec<mpsc::UnboundedSender<ListenCmd>>,
    listening: Mutex<Vec<Listening>>,
    hk: tokio::runtime::Handle,
    /// Serializes reloads.
    reloading: Mutex<()>,
    /// Retirement channels of replaced frontends whose connections may still be open, to
    /// stop them on shutdown.
    retired: Mutex<Vec<std::sync::Weak<watch::Sender<crate::snapshot::Retire>>>>,
    /// Where the running configuration's relative file names are read from.
    base_dir: Mutex<std::path::PathBuf>,
    /// Set once the listening sockets went to a new process: nothing is reloaded then.
    draining: std::sync::atomic::AtomicBool,
}

/// A running proxy.
pub struct ProxyHandle {
    control: Arc<Control>,
    shutdown: watch::Sender<bool>,
    workers: Workers,
    housekeeping: Option<std::thread::JoinHandle<()>>,
    grace: Duration,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Compiles `cfg` for checking only: certificates, addresses and rules, without opening
/// log files or sockets. Meant for a process that ends soon after: what was compiled is
/// not freed.
pub fn check(cfg: Config, base_dir: &Path) -> Result<Vec<String>, ConfigErrors> {
    let live = Live::new();
    let env = CompileEnv {
        base_dir,
        live: &live,
        generation: 0,
        workers: 1,
        open_logs: false,
        previous: None,
    };
    let snapshot = compile(Arc::new(cfg), &env)?;
    let warnings = snapshot.warnings.clone();
    // The process ends soon after a check: freeing a large configuration piece by piece
    // would only make the answer slower.
    std::mem::forget(snapshot);
    std::mem::forget(live);
    Ok(warnings)
}

/// A frontend's binds, each with its rank among the binds with the same configured
/// address.
fn with_nth(binds: &[BindSpec]) -> impl Iterator<Item = (&BindSpec, usize)> {
    binds.iter().enumerate().map(move |(i, b)| {
        let nth = binds[..i].iter().filter(|x| x.addr == b.addr).count();
        (b, nth)
    })
}

/// The sockets of a bind: those a replaced process handed over, then as many more as it
/// takes to have one per worker; the first socket tells the real address (port 0).
/// Socket `i` goes to worker `i % workers`: a worker may take over several.
fn bind_all(
    frontend: &str,
    spec: &BindSpec,
    nth: usize,
    workers: usize,
) -> Result<(SocketAddr, Vec<std::net::TcpListener>), (SocketAddr, std::io::Error)> {
    let mut out = crate::inherit::take_tcp(&bind_tag(frontend, spec.addr, nth), spec.addr);
    let mut addr = match out.first() {
        Some(l) => l.local_addr().map_err(|e| (spec.addr, e))?,
        None => spec.addr,
    };
    while out.len() < workers {
        let l = bind(addr, spec.v6only, spec.backlog, spec.freebind).map_err(|e| (addr, e))?;
        if out.is_empty() {
            addr = l.local_addr().map_err(|e| (addr, e))?;
        }
        out.push(l);
    }
    Ok((addr, out))
}

/// Starts the proxy with `cfg`; relative file names are read from `base_dir`.
/// A listener opened for a reload: frontend, configured address, nth bind of that
/// address, local address, and one socket per worker.
type Opened = (
    Arc<str>,
    SocketAddr,
    usize,
    SocketAddr,
    Vec<std::net::TcpListener>,
);

/// Worker threads, each with a signal of its end.
type Workers = Vec<(std::thread::JoinHandle<()>, oneshot::Receiver<()>)>;

/// The listening sockets of every bind of `snapshot`, one per worker thread each: what
/// the control keeps, and each worker's initial listeners.
type Listeners = (Vec<Listening>, Vec<Vec<ListenCmd>>);

/// The listening sockets of every bind of `snapshot`.
fn bind_snapshot(snapshot: &Snapshot, threads: usize) -> Result<Listeners, StartError> {
    let mut listening = Vec::new();
    let mut per_worker: Vec<Vec<ListenCmd>> = (0..threads).map(|_| Vec::new()).collect();
    for fe in &snapshot.frontends {
        for (b, nth) in with_nth(&fe.binds) {
            let (local, socks) =
                bind_all(&fe.name, b, nth, threads).map_err(|(addr, error)| StartError::Bind {
                    frontend: fe.name.to_string(),
                    addr,
                    error,
                })?;
            let (stop, stop_rx) = watch::channel(false);
            let copies = copies(&socks);
            for (w, l) in socks.into_iter().enumerate() {
                per_worker[w % threads].push(ListenCmd {
                    listener: l,
                    frontend: fe.name.clone(),
                    configured: b.addr,
                    nth,
                    stop: stop_rx.clone(),
                });
            }
            listening.push(Listening {
                bound: Bound {
                    frontend: fe.name.to_string(),
                    configured: b.addr,
                    nth,
                    local,
                },
                stop,
                copies,
            });
        }
    }
    Ok((listening, per_worker))
}

/// A worker thread, each with its own single-threaded runtime, for each list of initial
/// listeners; returns the threads (with a signal of their end) and their command senders.
fn spawn_workers(
    per_worker: Vec<Vec<ListenCmd>>,
    shared: &Arc<Shared>,
    rx: &watch::Receiver<bool>,
    grace: Duration,
) -> Result<(Workers, Vec<mpsc::UnboundedSender<ListenCmd>>), StartError> {
    let mut workers = Vec::new();
    let mut senders = Vec::new();
    for (i, initial) in per_worker.into_iter().enumerate() {
        let shared = shared.clone();
        let rx = rx.clone();
        let (done_tx, done_rx) = oneshot::channel();
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        for c in initial {
            let _ = cmd_tx.send(c);
        }
        senders.push(cmd_tx);
        let h = std::thread::Builder::new()
            .name(format!("rampart-w{i}"))
            .spawn(move || {
                crate::worker::set_index(i);
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(worker(cmd_rx, shared, rx, grace)),
                    Err(e) => tracing::error!("worker {i}: cannot start a runtime: {e}"),
                }
                let _ = done_tx.send(());
            })
            .map_err(StartError::Runtime)?;
        workers.push((h, done_rx));
    }
    Ok((workers, senders))
}

pub fn start(cfg: Config, base_dir: &Path) -> Result<ProxyHandle, StartError> {
    let threads = cfg
        .global
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let live = Live::new();
    let env = CompileEnv {
        base_dir,
        live: &live,
        generation: 1,
        workers: threads,
        open_logs: true,
        previous: None,
    };
    let snapshot = compile(Arc::new(cfg), &env)?;
    for w in &snapshot.warnings {
        tracing::warn!("{w}");
    }
    crate::snapshot::install(&snapshot, &live);
    live.tables
        .install(&snapshot.tables, &snapshot.config.stick_tables);
    live.global.generation.store(1, Relaxed);
    let grace = snapshot.global.grace;

    let (listening, per_worker) = bind_snapshot(&snapshot, threads)?;

    // Health checks run on the housekeeping runtime, started now so that the first
    // snapshot's checks begin at once.
    let hk_runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(StartError::Runtime)?;
    crate::resilience::reconcile_checks(&snapshot, &live, hk_runtime.handle());
    let shared = Arc::new(Shared {
        snapshot: ArcSwap::from_pointee(snapshot),
        live,
    });
    let (tx, rx) = watch::channel(false);
    let (workers, senders) = spawn_workers(per_worker, &shared, &rx, grace)?;
    let control = Arc::new(Control {
        shared: shared.clone(),
        workers: senders,
        listening: Mutex::new(listening),
        hk: hk_runtime.handle().clone(),
        reloading: Mutex::new(()),
        retired: Mutex::new(Vec::new()),
        base_dir: Mutex::new(base_dir.to_path_buf()),
        draining: Default::default(),
    });
    let hk_rx = rx.clone();
    let hk_shared = shared.clone();
    let housekeeping = std::thread::Builder::new()
        .name("rampart-hk".into())
        .spawn(move || hk_runtime.block_on(housekeeping(hk_shared, hk_rx)))
        .map_err(StartError::Runtime)?;
    Ok(ProxyHandle {
        control,
        shutdown: tx,
        workers,
        housekeeping: Some(housekeeping),
        grace,
    })
}

impl Control {
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Listening addresses, in configuration order.
    pub fn bound(&self) -> Vec<Bound> {
        lock(&self.listening)
            .iter()
            .map(|l| l.bound.clone())
            .collect()
    }

    /// Copies of every frontend's listening sockets, tagged, to hand to a new process.
    pub fn listening_sockets(&self) -> Vec<crate::inherit::Listener> {
        let listening = lock(&self.listening);
        let mut out = Vec::new();
        for l in listening.iter() {
            let tag = bind_tag(&l.bound.frontend, l.bound.configured, l.bound.nth);
            for c in &l.copies {
                let Ok(fd) = c.try_clone() else { continue };
                if let Some(s) = crate::inherit::Listener::from_fd(tag.clone(), fd.into()) {
                    out.push(s);
                }
            }
        }
        out
    }

    /// Ends every accept loop. The sockets stay open in whichever process they were
    /// handed to, with the connections queued in them.
    pub fn stop_accepting(&self) {
        // Under the reload lock: no reload is half done, and none comes after.
        let _one = lock(&self.reloading);
        self.draining.store(true, Relaxed);
        let mut listening = lock(&self.listening);
        for l in listening.iter() {
            let _ = l.stop.send(true);
        }
        // Further reloads open nothing: this process is on its way out.
        listening.clear();
    }

    /// Applies a new configuration: compile, open new listeners, swap, close removed
    /// listeners, reconcile health checks, and retire the old snapshot's connections after
    /// `global.reload_grace`. On any error nothing changes.
    pub fn reload(&self, cfg: Config, base_dir: &Path) -> Result<ReloadReport, ReloadError> {
        let _one = lock(&self.reloading);
        let live = &self.shared.live;
        let result = self.apply(cfg, base_dir);
        match &result {
            Ok(r) => {
                live.global.reloads_ok.fetch_add(1, Relaxed);
                tracing::info!(generation = r.generation, "configuration reloaded");
            }
            // Counted by the caller that gave up.
            Err(ReloadError::GaveUp) => {}
            Err(e) => {
                live.global.reloads_failed.fetch_add(1, Relaxed);
                tracing::error!("reload refused, the running configuration is unchanged:\n{e}");
            }
        }
        result
    }

    /// Compiles the running configuration again, to apply a runtime change that lives in
    /// [`Live`] (a server address set through the runtime API). Counts as no reload.
    /// The directory the running configuration's relative file names are read from.
    pub fn base_dir(&self) -> std::path::PathBuf {
        lock(&self.base_dir).clone()
    }

    pub fn reapply(&self) -> Result<ReloadReport, ReloadError> {
        let _one = lock(&self.reloading);
        let cfg = self.shared.snapshot.load().config.clone();
        let base = lock(&self.base_dir).clone();
        self.apply_arc(cfg, &base)
    }

    fn apply(&self, cfg: Config, base_dir: &Path) -> Result<ReloadReport, ReloadError> {
        let r = self.apply_arc(Arc::new(cfg), base_dir);
        if r.is_ok() {
            *lock(&self.base_dir) = base_dir.to_path_buf();
        }
        r
    }

    fn apply_arc(&self, cfg: Arc<Config>, base_dir: &Path) -> Result<ReloadReport, ReloadError> {
        if self.draining.load(Relaxed) {
            return Err(ReloadError::Draining);
        }
        let live = &self.shared.live;
        let old = self.shared.snapshot.load_full();
        let generation = old.generation + 1;
        let workers = self.workers.len();
        if cfg.global.threads.is_some_and(|t| t != workers) {
            tracing::warn!(
                "global.threads changes only at restart; keeping {workers} worker threads"
            );
        }
        let env = CompileEnv {
            base_dir,
            live,
            generation,
            workers,
            open_logs: true,
            previous: Some(&old),
        };
        let snapshot = Arc::new(compile(cfg, &env)?);

        // New listeners first, so nothing is swapped unless every address could be bound.
        let mut listening = lock(&self.listening);
        let wanted: Vec<(Arc<str>, &BindSpec, usize)> = snapshot
            .frontends
            .iter()
            .flat_map(|f| with_nth(&f.binds).map(move |(b, n)| (f.name.clone(), b, n)))
            .collect();
        let same = |l: &Bound, fe: &str, b: &BindSpec, nth: usize| {
            l.frontend == fe && l.configured == b.addr && l.nth == nth
        };
        let mut opened: Vec<Opened> = Vec::new();
        for (fe, b, nth) in &wanted {
            if listening.iter().any(|l| same(&l.bound, fe, b, *nth)) {
                continue;
            }
            let (local, socks) =
                bind_all(fe, b, *nth, workers).map_err(|(addr, error)| ReloadError::Bind {
                    frontend: fe.to_string(),
                    addr,
                    error,
                })?;
            opened.push((fe.clone(), b.addr, *nth, local, socks));
        }

        // The last moment a caller that gave up can stop this reload.
        if !Attempt::may_install() {
            return Err(ReloadError::GaveUp);
        }
        // Swap. From here nothing can fail.
        self.shared.snapshot.store(snapshot.clone());
        crate::snapshot::install(&snapshot, live);
        live.tables
            .install(&snapshot.tables, &snapshot.config.stick_tables);
        live.global.generation.store(generation, Relaxed);
        let mut report = ReloadReport {
            generation,
            warnings: snapshot.warnings.clone(),
            ..ReloadReport::default()
        };
        for w in &snapshot.warnings {
            tracing::warn!("{w}");
        }
        self.open_and_close(&mut listening, opened, &wanted, &mut report);
        drop(listening);

        crate::resilience::reconcile_checks(&snapshot, live, &self.hk);
        let keys: std::collections::HashSet<_> = snapshot
            .backends
            .iter()
            .flat_map(|b| b.servers.iter().map(|s| s.upstream.pool_key.clone()))
            .collect();
        live.retain_pools(&keys);
        self.retire_moved(&old, &snapshot);
        Ok(report)
    }

    /// Hands newly opened listeners to the workers, and stops those no bind wants any more.
    fn open_and_close(
        &self,
        listening: &mut Vec<Listening>,
        opened: Vec<Opened>,
        wanted: &[(Arc<str>, &BindSpec, usize)],
        report: &mut ReloadReport,
    ) {
        let same = |l: &Bound, fe: &str, b: &BindSpec, nth: usize| {
            l.frontend == fe && l.configured == b.addr && l.nth == nth
        };
        for (fe, configured, nth, local, socks) in opened {
            let (stop, stop_rx) = watch::channel(false);
            let copies = copies(&socks);
            let n = self.workers.len();
            for (w, l) in socks.into_iter().enumerate() {
                let _ = self.workers[w % n].send(ListenCmd {
                    listener: l,
                    frontend: fe.clone(),
                    configured,
                    nth,
                    stop: stop_rx.clone(),
                });
            }
            let bound = Bound {
                frontend: fe.to_string(),
                configured,
                nth,
                local,
            };
            tracing::info!(frontend = %fe, "listening on {local}");
            report.listeners_added.push(bound.clone());
            listening.push(Listening {
                bound,
                stop,
                copies,
            });
        }
        listening.retain(|l| {
            let keep = wanted
                .iter()
                .any(|(fe, b, nth)| same(&l.bound, fe, b, *nth));
            if !keep {
                let _ = l.stop.send(true);
                tracing::info!(frontend = %l.bound.frontend, "stopped listening on {}", l.bound.local);
                report.listeners_removed.push(l.bound.clone());
            }
            keep
        });
    }

    /// Connections of frontends whose serving settings changed (or that are gone) move on
    /// after the grace time; the others serve their next requests with the new snapshot.
    fn retire_moved(&self, old: &Snapshot, snapshot: &Snapshot) {
        let kept: Vec<_> = snapshot.frontends.iter().map(|f| &f.retire).collect();
        let moving: Vec<_> = old
            .frontends
            .iter()
            .map(|f| f.retire.clone())
            .filter(|r| !kept.iter().any(|k| Arc::ptr_eq(k, r)))
            .collect();
        if !moving.is_empty() {
            let mut retired = lock(&self.retired);
            retired.extend(moving.iter().map(Arc::downgrade));
            retired.retain(|w| w.strong_count() > 0);
            drop(retired);
            let wait = snapshot.global.reload_grace;
            self.hk.spawn(async move {
                tokio::time::sleep(wait).await;
                for retire in moving {
                    retire.send_if_modified(|v| {
                        let change = *v == crate::snapshot::Retire::Live;
                        if change {
                            *v = crate::snapshot::Retire::Retired;
                        }
                        change
                    });
                }
            });
        }
    }
}

impl ProxyHandle {
    /// What reloads need, to hand to the runtime socket or a signal handler.
    pub fn control(&self) -> &Arc<Control> {
        &self.control
    }

    /// See [`Control::reload`].
    pub fn reload(&self, cfg: Config, base_dir: &Path) -> Result<ReloadReport, ReloadError> {
        self.control.reload(cfg, base_dir)
    }

    /// Listening addresses, in configuration order.
    pub fn bound(&self) -> Vec<Bound> {
        self.control.bound()
    }

    /// The first local address of `frontend`.
    pub fn local_addr(&self, frontend: &str) -> Option<SocketAddr> {
        self.bound()
            .into_iter()
            .find(|b| b.frontend == frontend)
            .map(|b| b.local)
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.control.shared
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.control.shared.snapshot.load_full()
    }

    pub fn live(&self) -> &Arc<Live> {
        &self.control.shared.live
    }

    /// How long a stop waits for open connections.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// Hands the listening sockets' work over to a new process that already accepts on
    /// them: stops accepting, asks each open connection to close after its next response
    /// (HTTP/1.1 `Connection: close`, HTTP/2 GOAWAY), so that no idle keep-alive
    /// connection is closed under a request in flight; returns once they are all gone, or
    /// closes the rest when the grace time is over.
    pub async fn hand_over(self) {
        self.control.stop_accepting();
        for f in &self.snapshot().frontends {
            f.retire.send_replace(crate::snapshot::Retire::Retired);
        }
        for w in lock(&self.control.retired).iter() {
            if let Some(r) = w.upgrade() {
                r.send_replace(crate::snapshot::Retire::Retired);
            }
        }
        let live = self.live().clone();
        let drained = tokio::time::timeout(self.grace, async {
            while live.global.conns_cur.load(Relaxed) > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        if drained.is_err() {
            // The grace time is over: what is still open is closed now.
            let n = live.sessions.abort_all();
            tracing::warn!(
                "{n} connections still open after {:?}; closing them",
                self.grace
            );
        }
        self.shutdown().await;
    }

    /// Stops accepting, lets in-flight requests finish (up to the grace time), and
    /// returns when every worker has stopped.
    pub async fn shutdown(mut self) {
        self.stop_signal();
        for (h, done) in std::mem::take(&mut self.workers) {
            let _ = done.await;
            let _ = h.join();
        }
        if let Some(h) = self.housekeeping.take() {
            let _ = h.join();
        }
    }

    fn stop_signal(&self) {
        let _ = self.shutdown.send(true);
        // `send_replace`: HTTP/1.1 connections read the state without subscribing, so
        // there may be no receiver for `send` to deliver to.
        for f in &self.snapshot().frontends {
            f.retire.send_replace(crate::snapshot::Retire::Stopping);
        }
        for w in lock(&self.control.retired).iter() {
            if let Some(r) = w.upgrade() {
                r.send_replace(crate::snapshot::Retire::Stopping);
            }
        }
        // After the signal: an idle connection that read it before this sees the
        // session's flag, and one that reads it after sees the signal.
        self.control.shared.live.sessions.close_idle();
    }
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        self.stop_signal();
    }
}

/// The housekeeping thread's work: pool sweeps every second, outlier detection passes at
/// each backend's interval (checked every 50 ms); health checks run beside it as tasks.
async fn housekeeping(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_sweep = tokio::time::Instant::now();
    let mut outliers = crate::resilience::OutlierClock::default();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        if last_sweep.elapsed() >= Duration::from_secs(1) {
            last_sweep = tokio::time::Instant::now();
            crate::upstream::pool::sweep_all();
            for t in &shared.snapshot.load().tables {
                t.purge();
            }
        }
        outliers.run(&shared.snapshot.load(), std::time::Instant::now());
    }
    shared.live.checks().stop_all();
}

async fn worker(
    mut listen: mpsc::UnboundedReceiver<ListenCmd>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let tracker = Arc::new(Tracker::default());
    loop {
        tokio::select! {
            cmd = listen.recv() => {
                let Some(c) = cmd else { break };
                match tokio::net::TcpListener::from_std(c.listener) {
                    Ok(l) => {
                        let spec = ListenSpec {
                            listener: l,
                            frontend: c.frontend,
                            configured: c.configured,
                            nth: c.nth,
                            stop: c.stop,
                        };
                        tokio::spawn(accept_loop(spec, shared.clone(), tracker.clone(), shutdown.clone()));
                    }
                    Err(e) => tracing::error!(frontend = %c.frontend, "cannot listen: {e}"),
                }
            }
            r = shutdown.changed() => {
                if r.is_err() || *shutdown.borrow() {
                    break;
                }
            }
        }
    }
    // Stopping: accept loops have ended; let open connections finish within the grace time.
    if tokio::time::timeout(grace, tracker.idle()).await.is_err() {
        tracing::warn!(
            "{} connections still open after {grace:?}; closing them",
            tracker.count()
        );
    }
}
