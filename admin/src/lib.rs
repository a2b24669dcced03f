//! rampart-admin: the operator's surfaces.
//!
//! It owns the HAProxy-compatible runtime API: Unix and loopback TCP sockets speaking
//! HAProxy's command framing, field orders and error strings, so that `socat`, hatop,
//! haproxyadmin and haproxy_exporter work unchanged ([`cli`] frames sessions, [`commands`]
//! runs them, [`stat`] lays out `show stat` and `show info`).
//!
//! It reads the proxy's live state and changes server states only through
//! `rampart-proxy`'s public handle, and depends on `rampart-config` for the model; the
//! data plane never depends on it.

pub mod cli;
pub mod commands;
pub mod http;
pub mod maps;
pub mod metrics;
pub mod page;
pub mod peers_view;
pub mod ssl;
pub mod stat;
pub mod state_file;
pub mod table;
pub mod vrrp;

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use rampart_proxy::runtime::Control;

/// Reloads the configuration from wherever it came from; returns the message for the
/// caller, or the precise errors.
pub type Reloader = dyn Fn() -> Result<String, String> + Send + Sync;

/// Starts a binary upgrade (implemented by the binary, which starts the new process); the
/// answer comes once the new process is ready, or has failed.
pub type Upgrader =
    dyn Fn() -> tokio::sync::oneshot::Receiver<Result<String, String>> + Send + Sync;

/// The text of the configuration in use, shared with whoever reloads it.
pub type ConfigText = Arc<std::sync::Mutex<Option<String>>>;

/// What the runtime API works on.
pub struct AdminCtx {
    pub control: Arc<Control>,
    pub reload: Option<Arc<Reloader>>,
    /// When the process started.
    pub started: SystemTime,
    pub started_at: Instant,
    /// `node` in `show info`: the host name unless configured.
    pub node: String,
    pub pid: u32,
    /// Where runtime server state changes are saved (`global.state_file`).
    pub state_file: Option<std::path::PathBuf>,
    /// The text of the configuration in use, for `show config`.
    pub config_text: ConfigText,
    /// The VRRP instances (`vrrp.instances`), for `show vrrp`, the stats page and metrics.
    pub vrrp: Arc<rampart_vrrp::group::Group>,
    /// The xDS client, when the configuration comes from a control plane too: `show xds`,
    /// `/config_dump` and metrics. Set once, after the client starts.
    pub xds: std::sync::OnceLock<Arc<dyn XdsView>>,
    /// Runtime API commands and admin HTTP requests being answered.
    busy: Arc<std::sync::atomic::AtomicUsize>,
    /// `upgrade`, where the process can start its successor.
    pub upgrade: std::sync::OnceLock<Arc<Upgrader>>,
    /// `set ssl cert` transactions not yet committed.
    pub ssl_tx: ssl::Transactions,
    /// Changes refused over the runtime API (a bad map entry, a bad certificate).
    pub refused: RefusedChanges,
}

/// Counts of runtime changes refused, by what they would have changed
/// (`rampart_runtime_changes_refused_total`).
#[derive(Default)]
pub struct RefusedChanges {
    pub map: std::sync::atomic::AtomicU64,
    pub acl: std::sync::atomic::AtomicU64,
    pub ssl: std::sync::atomic::AtomicU64,
}

/// What the runtime API and the admin listener show of the xDS client (implemented by
/// the binary over `rampart-xds`, which this crate does not depend on).
pub trait XdsView: Send + Sync {
    /// `show xds [json]`.
    fn show(&self, json: bool) -> String;
    /// The dynamic configuration as JSON, in Envoy's `/config_dump` layout.
    fn config_dump(&self) -> String;
    fn metrics(&self) -> XdsMetrics;
}

/// The xDS client's counters, for `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct XdsMetrics {
    pub connected: bool,
    pub connects: u64,
    pub disconnects: u64,
    pub types: Vec<XdsTypeMetrics>,
}

/// Counters of one resource type.
#[derive(Debug, Clone)]
pub struct XdsTypeMetrics {
    /// `listeners`, `routes`, `clusters` or `endpoints`.
    pub kind: &'static str,
    pub resources: u64,
    pub warming: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub last_update: Option<SystemTime>,
}

impl AdminCtx {
    pub fn new(control: Arc<Control>, reload: Option<Arc<Reloader>>) -> Arc<Self> {
        Self::with_state_file(control, reload, None)
    }

    pub fn with_state_file(
        control: Arc<Control>,
        reload: Option<Arc<Reloader>>,
        state_file: Option<std::path::PathBuf>,
    ) -> Arc<Self> {
        Self::build(control, reload, state_file, ConfigText::default())
    }

    /// Everything: `config_text` is updated by whoever reloads the configuration.
    pub fn build(
        control: Arc<Control>,
        reload: Option<Arc<Reloader>>,
        state_file: Option<std::path::PathBuf>,
        config_text: ConfigText,
    ) -> Arc<Self> {
        Arc::new(Self {
            control,
            reload,
            started: SystemTime::now(),
            started_at: Instant::now(),
            node: hostname(),
            pid: std::process::id(),
            state_file,
            config_text,
            vrrp: rampart_vrrp::group::Group::new(),
            xds: std::sync::OnceLock::new(),
            upgrade: std::sync::OnceLock::new(),
            busy: Default::default(),
            ssl_tx: Default::default(),
            refused: Default::default(),
        })
    }

    /// Counts a command or request as being answered until the guard drops.
    pub fn busy(&self) -> Busy {
        self.busy.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Busy(self.busy.clone())
    }

    /// Waits until no command or request is being answered (the one that asked for an
    /// upgrade, say), at most `limit`.
    pub async fn answered(&self, limit: std::time::Duration) {
        let _ = tokio::time::timeout(limit, async {
            while self.busy.load(std::sync::atomic::Ordering::SeqCst) > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        })
        .await;
    }

    /// Saves server states to the state file, if there is one, after a runtime change.
    pub fn persist(&self) {
        if let Some(p) = &self.state_file
            && let Err(e) = state_file::save(self, p)
        {
            tracing::warn!("cannot save server states to {}: {e}", p.display());
        }
    }
}

/// See [`AdminCtx::busy`].
pub struct Busy(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "rampart".to_owned())
}

pub use cli::{SocketError, serve_sockets};
pub use http::{HttpOpts, serve_http};
