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
use tokio::sync::{oneshot, watch};

use crate::listener::{Tracker, accept_loop, bind};
use crate::snapshot::{CompileEnv, Snapshot, compile};
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
    pub local: SocketAddr,
}

/// A running proxy.
pub struct ProxyHandle {
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    workers: Vec<(std::thread::JoinHandle<()>, oneshot::Receiver<()>)>,
    housekeeping: Option<std::thread::JoinHandle<()>>,
    bound: Vec<Bound>,
    grace: Duration,
}

/// Compiles `cfg` for checking only: certificates, addresses and rules, without opening
/// log files or sockets.
pub fn check(cfg: Config, base_dir: &Path) -> Result<(), ConfigErrors> {
    let live = Live::new();
    let env = CompileEnv {
        base_dir,
        live: &live,
        generation: 0,
        workers: 1,
        open_logs: false,
    };
    compile(Arc::new(cfg), &env).map(|_| ())
}

/// Starts the proxy with `cfg`; relative file names are read from `base_dir`.
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
    };
    let snapshot = compile(Arc::new(cfg), &env)?;
    let grace = snapshot.global.grace;

    // Every worker gets its own socket for every bind.
    let mut per_worker: Vec<Vec<(std::net::TcpListener, Arc<str>, usize)>> =
        (0..threads).map(|_| Vec::new()).collect();
    let mut bound = Vec::new();
    for fe in &snapshot.frontends {
        for (bi, b) in fe.binds.iter().enumerate() {
            let mut addr = b.addr;
            for (w, list) in per_worker.iter_mut().enumerate() {
                let l = bind(addr, b.v6only, b.backlog).map_err(|error| StartError::Bind {
                    frontend: fe.name.to_string(),
                    addr,
                    error,
                })?;
                if w == 0 {
                    addr = l.local_addr().map_err(StartError::Runtime)?;
                    bound.push(Bound {
                        frontend: fe.name.to_string(),
                        configured: b.addr,
                        local: addr,
                    });
                }
                list.push((l, fe.name.clone(), bi));
            }
        }
    }

    // Health checks run on the housekeeping runtime, started now so that the first
    // snapshot's checks begin at once.
    let hk_runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    if let Ok(rt) = &hk_runtime {
        crate::resilience::reconcile_checks(&snapshot, &live, rt.handle());
    }
    let shared = Arc::new(Shared {
        snapshot: ArcSwap::from_pointee(snapshot),
        live,
    });
    let (tx, rx) = watch::channel(false);
    let mut workers = Vec::new();
    for (i, listeners) in per_worker.into_iter().enumerate() {
        let shared = shared.clone();
        let rx = rx.clone();
        let (done_tx, done_rx) = oneshot::channel();
        let h = std::thread::Builder::new()
            .name(format!("rampart-w{i}"))
            .spawn(move || {
                crate::worker::set_index(i);
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(worker(listeners, shared, rx, grace)),
                    Err(e) => tracing::error!("worker {i}: cannot start a runtime: {e}"),
                }
                let _ = done_tx.send(());
            })
            .map_err(StartError::Runtime)?;
        workers.push((h, done_rx));
    }
    let hk_rx = rx.clone();
    let hk_shared = shared.clone();
    let housekeeping = std::thread::Builder::new()
        .name("rampart-hk".into())
        .spawn(move || match hk_runtime {
            Ok(rt) => rt.block_on(housekeeping(hk_shared, hk_rx)),
            Err(e) => tracing::error!("housekeeping: cannot start a runtime: {e}"),
        })
        .map_err(StartError::Runtime)?;
    Ok(ProxyHandle {
        shared,
        shutdown: tx,
        workers,
        housekeeping: Some(housekeeping),
        bound,
        grace,
    })
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
        }
        outliers.run(&shared.snapshot.load(), std::time::Instant::now());
    }
    shared.live.checks().stop_all();
}

async fn worker(
    listeners: Vec<(std::net::TcpListener, Arc<str>, usize)>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let tracker = Arc::new(Tracker::default());
    for (l, fe, bind) in listeners {
        match tokio::net::TcpListener::from_std(l) {
            Ok(l) => {
                tokio::spawn(accept_loop(
                    l,
                    fe,
                    bind,
                    shared.clone(),
                    tracker.clone(),
                    shutdown.clone(),
                ));
            }
            Err(e) => tracing::error!(frontend = %fe, "cannot listen: {e}"),
        }
    }
    while !*shutdown.borrow() {
        if shutdown.changed().await.is_err() {
            break;
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

impl ProxyHandle {
    /// Listening addresses, in configuration order.
    pub fn bound(&self) -> &[Bound] {
        &self.bound
    }

    /// The first local address of `frontend`.
    pub fn local_addr(&self, frontend: &str) -> Option<SocketAddr> {
        self.bound
            .iter()
            .find(|b| b.frontend == frontend)
            .map(|b| b.local)
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.snapshot.load_full()
    }

    pub fn live(&self) -> &Arc<Live> {
        &self.shared.live
    }

    /// How long a stop waits for open connections.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// Stops accepting, lets in-flight requests finish (up to the grace time), and
    /// returns when every worker has stopped.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        for (h, done) in std::mem::take(&mut self.workers) {
            let _ = done.await;
            let _ = h.join();
        }
        if let Some(h) = self.housekeeping.take() {
            let _ = h.join();
        }
    }
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}
