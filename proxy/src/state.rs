//! Long-lived state kept outside the configuration snapshot: counters, server admin state
//! and weights, connection limits. It is keyed by stable names (frontend, backend,
//! backend/server), so a reload that keeps a name keeps its state.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use rampart_config::decode::FastMap;
use tokio::sync::Notify;

use crate::error::Termination;
use crate::log::LogSink;
use crate::snapshot::PoolKey;
use crate::upstream::pool::Pool;

/// Response counters by status class.
#[derive(Default)]
pub struct StatusCounters {
    /// 1xx, 2xx, 3xx, 4xx, 5xx, other.
    pub by_class: [AtomicU64; 6],
}

impl StatusCounters {
    pub fn record(&self, status: u16) {
        let i = match status {
            100..=199 => 0,
            200..=299 => 1,
            300..=399 => 2,
            400..=499 => 3,
            500..=599 => 4,
            _ => 5,
        };
        self.by_class[i].fetch_add(1, Relaxed);
    }

    pub fn get(&self, class: usize) -> u64 {
        self.by_class[class].load(Relaxed)
    }
}

/// Counters and limits of one frontend.
#[derive(Default)]
pub struct FrontendLive {
    /// Response compression of its requests (`comp_*` in `show stat`).
    pub comp: Arc<crate::compress::Counters>,
    pub conns_cur: AtomicU64,
    pub conns_max: AtomicU64,
    pub conns_total: AtomicU64,
    pub requests: AtomicU64,
    pub responses: StatusCounters,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Requests denied by rules.
    pub denied: AtomicU64,
    /// Connections rejected by `tcp_request.connection` rules.
    pub denied_conns: AtomicU64,
    /// Malformed or refused client requests.
    pub errors: AtomicU64,
    /// Requests answered by the proxy itself (return, redirect).
    pub intercepted: AtomicU64,
    /// Connection limit (0: none).
    pub limit: AtomicU64,
    /// Requests refused and responses cut for the client's fault, by reason.
    pub refused: Refusals,
    /// Header fields removed from requests: names with an underscore
    /// (`headers_with_underscores`), and forwarding headers from untrusted peers.
    pub removed_underscore: AtomicU64,
    pub removed_forwarding: AtomicU64,
}

impl FrontendLive {
    /// Counts a request refused for the client's fault (`ereq`), by reason when known.
    pub fn count_refused(&self, r: Option<Refusal>) {
        self.errors.fetch_add(1, Relaxed);
        if let Some(r) = r {
            self.refused.count(r);
        }
    }
}

/// Why a client's request was refused, or its response cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Malformed head or body framing (400).
    BadRequest,
    /// A header name with an underscore under `headers_with_underscores: reject` (400).
    UnderscoreHeader,
    /// 414.
    UriTooLong,
    /// 431.
    HeaderTooLarge,
    /// 413.
    BodyTooLarge,
    /// A transfer coding the proxy does not implement (501).
    NotImplemented,
    /// 505.
    VersionNotSupported,
    /// The head did not arrive within `timeouts.http_request` (408).
    HeadTimeout,
    /// The body stalled or did not keep `limits.min_request_body_rate` (408).
    BodyTimeout,
    /// The client did not take its response at `limits.min_response_body_rate`.
    SlowReader,
    /// A missing, malformed or untrusted PROXY protocol header (the connection is
    /// closed).
    ProxyHeader,
    /// A client certificate missing (`verify: required`), not issued by the bind's CA,
    /// expired or revoked: the TLS handshake is refused.
    ClientCert,
}

impl Refusal {
    pub const ALL: [Refusal; 12] = [
        Refusal::BadRequest,
        Refusal::UnderscoreHeader,
        Refusal::UriTooLong,
        Refusal::HeaderTooLarge,
        Refusal::BodyTooLarge,
        Refusal::NotImplemented,
        Refusal::VersionNotSupported,
        Refusal::HeadTimeout,
        Refusal::BodyTimeout,
        Refusal::SlowReader,
        Refusal::ProxyHeader,
        Refusal::ClientCert,
    ];

    /// The `reason` label in `/metrics`.
    pub fn name(self) -> &'static str {
        match self {
            Refusal::BadRequest => "bad_request",
            Refusal::UnderscoreHeader => "underscore_header",
            Refusal::UriTooLong => "uri_too_long",
            Refusal::HeaderTooLarge => "header_too_large",
            Refusal::BodyTooLarge => "body_too_large",
            Refusal::NotImplemented => "not_implemented",
            Refusal::VersionNotSupported => "version_not_supported",
            Refusal::HeadTimeout => "head_timeout",
            Refusal::BodyTimeout => "body_timeout",
            Refusal::SlowReader => "slow_reader",
            Refusal::ProxyHeader => "proxy_header",
            Refusal::ClientCert => "client_certificate",
        }
    }

    /// The refusal a client error status stands for (with the termination code that
    /// tells a head timeout from a body one).
    pub fn of(status: u16, term: Termination) -> Option<Refusal> {
        Some(match status {
            400 => Refusal::BadRequest,
            408 if term.in_request() => Refusal::HeadTimeout,
            408 => Refusal::BodyTimeout,
            413 => Refusal::BodyTooLarge,
            414 => Refusal::UriTooLong,
            431 => Refusal::HeaderTooLarge,
            501 => Refusal::NotImplemented,
            505 => Refusal::VersionNotSupported,
            _ => return None,
        })
    }
}

/// Counts of [`Refusal`]s.
#[derive(Default)]
pub struct Refusals([AtomicU64; Refusal::ALL.len()]);

impl Refusals {
    pub fn count(&self, r: Refusal) {
        self.0[r as usize].fetch_add(1, Relaxed);
    }

    pub fn get(&self, r: Refusal) -> u64 {
        self.0[r as usize].load(Relaxed)
    }
}

/// Counters of one backend, and the epoch its balancer rebuilds on.
#[derive(Default)]
pub struct BackendLive {
    /// Response compression (`comp_*` in `show stat`).
    pub comp: Arc<crate::compress::Counters>,
    pub requests: AtomicU64,
    pub responses: StatusCounters,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub errors_conn: AtomicU64,
    pub errors_resp: AtomicU64,
    /// Requests answered 503 because no server was usable.
    pub no_server: AtomicU64,
    pub active: AtomicU64,
    /// The most requests in flight at once (`smax`).
    pub active_max: AtomicU64,
    /// Requests the client gave up on, and those the server broke off (`cli_abrt`,
    /// `srv_abrt`).
    pub aborts: Aborts,
    /// Bumped whenever a server's usability or weight changes.
    pub epoch: AtomicU64,
    /// Requests sent again after a failure (HAProxy's `wretr`).
    pub retries: AtomicU64,
    /// Retries that went to another server (HAProxy's `wredis`).
    pub redispatches: AtomicU64,
    /// Retries in flight (limited by `circuit_breaker.max_retries`).
    pub retries_active: AtomicU64,
    /// Open connections to the backend's servers.
    pub conns_open: AtomicU64,
    /// The in-flight limit with its queue.
    pub gate: crate::resilience::limits::Gate,
    /// Requests refused by each circuit breaker limit.
    pub overflow: Overflow,
    /// Woken when a server frees a slot under its `max_connections`.
    pub server_freed: Arc<Notify>,
    /// Retry budget window.
    pub budget: crate::resilience::limits::BudgetWindow,
    /// Servers ejected by outlier detection right now.
    pub ejected: AtomicU64,
}

/// Exchanges broken off, by the side that broke them off (HAProxy's `cli_abrt` and
/// `srv_abrt`).
#[derive(Default)]
pub struct Aborts {
    pub client: AtomicU64,
    pub server: AtomicU64,
}

impl Aborts {
    /// The counts by side, labelled as `/metrics` labels them.
    pub fn by_side(&self) -> [(&'static str, u64); 2] {
        [
            ("client", self.client.load(Relaxed)),
            ("server", self.server.load(Relaxed)),
        ]
    }

    /// Counts an exchange by its termination code: `C`/`c` the client's doing, `S`/`s`
    /// the server's.
    pub fn count(&self, termination: Termination) {
        if termination.by_client() {
            self.client.fetch_add(1, Relaxed);
        } else if termination.by_server() {
            self.server.fetch_add(1, Relaxed);
        }
    }
}

/// A server by its backend's name and its own, each named where it is used, so that the
/// two strings cannot be passed the wrong way round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServerKey<'a> {
    pub backend: &'a str,
    pub server: &'a str,
}

/// Requests refused by circuit breakers, by limit.
#[derive(Default)]
pub struct Overflow {
    pub max_connections: AtomicU64,
    pub max_pending_requests: AtomicU64,
    pub max_requests: AtomicU64,
    pub max_retries: AtomicU64,
    pub server_max_connections: AtomicU64,
    pub queue_timeout: AtomicU64,
    /// Retries not sent because the budget was spent.
    pub budget_exhausted: AtomicU64,
}

impl Overflow {
    /// Counts a refusal by the limit it hit.
    pub fn count(&self, limit: Limit) {
        self.get(limit).fetch_add(1, Relaxed);
    }

    /// The counter of `limit`.
    pub fn get(&self, limit: Limit) -> &AtomicU64 {
        match limit {
            Limit::MaxConnections => &self.max_connections,
            Limit::MaxPendingRequests => &self.max_pending_requests,
            Limit::MaxRequests => &self.max_requests,
            Limit::MaxRetries => &self.max_retries,
            Limit::ServerMaxConnections => &self.server_max_connections,
            Limit::QueueTimeout => &self.queue_timeout,
            Limit::RetryBudget => &self.budget_exhausted,
        }
    }
}

/// A circuit breaker limit: what refused a request or a retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    MaxConnections,
    MaxPendingRequests,
    MaxRequests,
    MaxRetries,
    ServerMaxConnections,
    QueueTimeout,
    RetryBudget,
}

impl Limit {
    pub const ALL: [Limit; 7] = [
        Limit::MaxConnections,
        Limit::MaxPendingRequests,
        Limit::MaxRequests,
        Limit::MaxRetries,
        Limit::ServerMaxConnections,
        Limit::QueueTimeout,
        Limit::RetryBudget,
    ];

    /// Its name, as in the `x-rampart-overloaded` header and the `limit` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::MaxConnections => "max_connections",
            Limit::MaxPendingRequests => "max_pending_requests",
            Limit::MaxRequests => "max_requests",
            Limit::MaxRetries => "max_retries",
            Limit::ServerMaxConnections => "server_max_connections",
            Limit::QueueTimeout => "queue_timeout",
            Limit::RetryBudget => "retry_budget",
        }
    }
}

/// Administrative state of a server, as HAProxy's `set server ... state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum AdminState {
    Ready = 0,
    /// No new requests; in-flight ones finish.
    Drain = 1,
    /// Out of service.
    Maint = 2,
}

/// A server's state as its configuration declares it (EDS `health_status`), apart from
/// the runtime admin state, which commands change and reloads keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Declared {
    Up = 0,
    /// No new requests; persistent clients stay.
    Drain = 1,
    Down = 2,
}

/// State of one server.
pub struct ServerLive {
    pub requests: AtomicU64,
    /// Requests in flight.
    pub active: AtomicU64,
    pub active_max: AtomicU64,
    pub responses: StatusCounters,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub errors_conn: AtomicU64,
    pub errors_resp: AtomicU64,
    pub aborts: Aborts,
    admin: AtomicU8,
    weight: AtomicU32,
    /// Weight from the configuration, for `set weight N%`.
    pub initial_weight: AtomicU32,
    /// `disabled` as the configuration last said, to tell when a reload changes it.
    config_disabled: AtomicBool,
    /// Whether active checks hold the server down.
    check_down: AtomicBool,
    /// Set by `set server ... health stopping` (HAProxy's NOLB): up, checked, but given
    /// no new requests until the next passed check.
    stopping: AtomicBool,
    /// Whether outlier detection ejected the server.
    ejected: AtomicBool,
    /// The state the configuration declares ([`Declared`]), set at every load.
    declared: AtomicU8,
    /// Active check state, for the stats page and runtime socket.
    pub check: Mutex<crate::resilience::health::CheckInfo>,
    /// Passive outlier detection state.
    pub outlier: crate::resilience::outlier::OutlierLive,
    /// Requests sent to this server as retries.
    pub retries: AtomicU64,
    /// Requests in flight limit (0: none).
    pub max_active: AtomicU64,
    freed: Arc<Notify>,
}

impl ServerLive {
    fn new(weight: u32, disabled: bool, freed: Arc<Notify>) -> Self {
        Self {
            check_down: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            ejected: AtomicBool::new(false),
            declared: AtomicU8::new(Declared::Up as u8),
            check: Mutex::new(crate::resilience::health::CheckInfo::default()),
            outlier: Default::default(),
            retries: AtomicU64::new(0),
            max_active: AtomicU64::new(0),
            freed,
            requests: AtomicU64::new(0),
            active: AtomicU64::new(0),
            active_max: AtomicU64::new(0),
            responses: StatusCounters::default(),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            errors_conn: AtomicU64::new(0),
            errors_resp: AtomicU64::new(0),
            aborts: Aborts::default(),
            admin: AtomicU8::new(if disabled {
                AdminState::Maint as u8
            } else {
                AdminState::Ready as u8
            }),
            weight: AtomicU32::new(weight),
            initial_weight: AtomicU32::new(weight),
            config_disabled: AtomicBool::new(disabled),
        }
    }

    pub fn admin(&self) -> AdminState {
        match self.admin.load(Relaxed) {
            0 => AdminState::Ready,
            1 => AdminState::Drain,
            _ => AdminState::Maint,
        }
    }

    pub fn set_admin(&self, s: AdminState, backend: &BackendLive) {
        if self.admin.swap(s as u8, Relaxed) != s as u8 {
            backend.epoch.fetch_add(1, Relaxed);
        }
    }

    pub fn weight(&self) -> u32 {
        self.weight.load(Relaxed)
    }

    pub fn set_weight(&self, w: u32, backend: &BackendLive) {
        if self.weight.swap(w, Relaxed) != w {
            backend.epoch.fetch_add(1, Relaxed);
        }
    }

    /// Applies the weight and `disabled` of a (re)loaded configuration where they changed
    /// since the last one: a server whose settings did not change keeps what the runtime
    /// API set.
    pub fn configure(&self, weight: u32, disabled: bool, backend: &BackendLive) {
        if self.initial_weight.swap(weight, Relaxed) != weight {
            self.set_weight(weight, backend);
        }
        if self.config_disabled.swap(disabled, Relaxed) != disabled {
            let s = if disabled {
                AdminState::Maint
            } else {
                AdminState::Ready
            };
            self.set_admin(s, backend);
        }
    }

    /// The state the configuration declares (an xDS endpoint's health status).
    pub fn declared(&self) -> Declared {
        match self.declared.load(Relaxed) {
            0 => Declared::Up,
            1 => Declared::Drain,
            _ => Declared::Down,
        }
    }

    pub fn set_declared(&self, d: Declared, backend: &BackendLive) {
        if self.declared.swap(d as u8, Relaxed) != d as u8 {
            backend.epoch.fetch_add(1, Relaxed);
        }
    }

    /// Whether the balancer may give this server new requests.
    pub fn usable(&self) -> bool {
        self.admin() == AdminState::Ready
            && self.declared() == Declared::Up
            && self.weight() > 0
            && !self.check_down.load(Relaxed)
            && !self.stopping.load(Relaxed)
            && !self.ejected.load(Relaxed)
    }

    /// Whether clients stuck to this server may keep using it: it is not in maintenance,
    /// down or ejected (draining, weight 0 and NOLB servers keep their clients).
    pub fn persistable(&self) -> bool {
        self.admin() != AdminState::Maint
            && self.declared() != Declared::Down
            && !self.check_down.load(Relaxed)
            && !self.ejected.load(Relaxed)
    }

    /// Whether active checks hold the server down.
    pub fn check_down(&self) -> bool {
        self.check_down.load(Relaxed)
    }

    /// Whether the server is in HAProxy's NOLB state.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Relaxed)
    }

    pub fn set_stopping(&self, stopping: bool, backend: &BackendLive) {
        if self.stopping.swap(stopping, Relaxed) != stopping {
            backend.epoch.fetch_add(1, Relaxed);
        }
    }

    pub fn set_check_down(&self, down: bool, backend: &BackendLive) {
        if self.check_down.swap(down, Relaxed) != down {
            backend.epoch.fetch_add(1, Relaxed);
        }
    }

    /// Whether outlier detection ejected the server.
    pub fn ejected(&self) -> bool {
        self.ejected.load(Relaxed)
    }

    pub fn set_ejected(&self, ejected: bool, backend: &BackendLive) {
        if self.ejected.swap(ejected, Relaxed) != ejected {
            if ejected {
                backend.ejected.fetch_add(1, Relaxed);
            } else {
                backend.ejected.fetch_sub(1, Relaxed);
            }
            backend.epoch.fetch_add(1, Relaxed);
        }
    }

    /// Marks one more request in flight; the guard marks it done.
    pub fn start(self: &Arc<Self>) -> ActiveGuard {
        let n = self.active.fetch_add(1, Relaxed) + 1;
        self.active_max.fetch_max(n, Relaxed);
        self.requests.fetch_add(1, Relaxed);
        ActiveGuard(self.clone())
    }

    /// Like [`start`](Self::start), unless the server already has its `max_connections`
    /// requests in flight.
    pub fn try_start(self: &Arc<Self>) -> Option<ActiveGuard> {
        let max = self.max_active.load(Relaxed);
        if max == 0 {
            return Some(self.start());
        }
        let n = self.active.fetch_add(1, Relaxed) + 1;
        if n > max {
            self.active.fetch_sub(1, Relaxed);
            return None;
        }
        self.active_max.fetch_max(n, Relaxed);
        self.requests.fetch_add(1, Relaxed);
        Some(ActiveGuard(self.clone()))
    }

    /// A copy of the active check state.
    pub fn check_info(&self) -> crate::resilience::health::CheckInfo {
        self.check
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Whether the server has active checks configured.
    pub fn has_checks(&self) -> bool {
        self.check
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .enabled
    }

    /// HAProxy's status text: `UP`, `UP 1/3`, `DOWN`, `DOWN 1/2`, `MAINT`, `DRAIN`,
    /// `no check`.
    pub fn status_text(&self) -> String {
        let check = self
            .check
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let text = crate::resilience::health::status_text(self.admin(), &check);
        match self.declared() {
            Declared::Down if text.starts_with("UP") || text == "no check" => {
                return "DOWN".to_owned();
            }
            Declared::Drain if text.starts_with("UP") || text == "no check" => {
                return "DRAIN".to_owned();
            }
            _ => {}
        }
        match text.strip_prefix("UP") {
            Some(rest) if self.stopping() => format!("NOLB{rest}"),
            _ => text,
        }
    }
}

/// Decrements a server's in-flight count when dropped.
pub struct ActiveGuard(Arc<ServerLive>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Relaxed);
        if self.0.max_active.load(Relaxed) != 0 {
            self.0.freed.notify_one();
        }
    }
}

/// Process-wide counters.
#[derive(Default)]
pub struct GlobalLive {
    pub conns_cur: AtomicU64,
    /// Idle keep-alive client connections set aside in their worker's lot, without a
    /// task or a registration with the reactor ([`crate::server::lot`]); part of
    /// `conns_cur`.
    pub conns_parked: AtomicU64,
    pub conns_total: AtomicU64,
    pub requests: AtomicU64,
    pub limit: AtomicU64,
    /// Generation of the configuration serving new connections.
    pub generation: AtomicU64,
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
}

/// All live state, by name.
#[derive(Default)]
pub struct Live {
    pub global: GlobalLive,
    frontends: Mutex<FastMap<String, Arc<FrontendLive>>>,
    backends: Mutex<FastMap<String, Arc<BackendLive>>>,
    /// Backend name, then server name.
    servers: Mutex<FastMap<String, FastMap<String, Arc<ServerLive>>>>,
    pools: Mutex<HashMap<PoolKey, Arc<Pool>>>,
    logs: Mutex<HashMap<String, Arc<LogSink>>>,
    /// The span exporter of the `tracing` section.
    tracer: Mutex<Option<Arc<crate::trace::Tracer>>>,
    checks: crate::resilience::health::Checks,
    /// Open client connections.
    pub sessions: Arc<crate::sessions::Sessions>,
    /// Stick tables, kept across reloads.
    pub tables: crate::stick::Registry,
    /// The peers that replicate them, for `show peers`.
    pub peers: Arc<crate::stick::peers::Status>,
    /// Server addresses set at run time, replacing the configured ones.
    addrs: Mutex<HashMap<(String, String), std::net::SocketAddr>>,
    /// Certificate files replaced at run time (`commit ssl cert`).
    pub certs: Arc<crate::tls::certs::Overrides>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Live {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn frontend(&self, name: &str) -> Arc<FrontendLive> {
        lock(&self.frontends)
            .entry(name.to_owned())
            .or_default()
            .clone()
    }

    /// The state of `backend/server` if it exists.
    pub fn find_server(&self, key: ServerKey<'_>) -> Option<Arc<ServerLive>> {
        lock(&self.servers)
            .get(key.backend)?
            .get(key.server)
            .cloned()
    }

    /// The address set at run time for `backend/server`, if any.
    pub fn addr_override(&self, key: ServerKey<'_>) -> Option<std::net::SocketAddr> {
        lock(&self.addrs)
            .get(&(key.backend.to_owned(), key.server.to_owned()))
            .copied()
    }

    /// Sets the address of `backend/server` until the process stops (applied by the next
    /// compile of the configuration).
    pub fn set_addr_override(&self, key: ServerKey<'_>, addr: std::net::SocketAddr) {
        lock(&self.addrs).insert((key.backend.to_owned(), key.server.to_owned()), addr);
    }

    /// The health-check registry.
    pub fn checks(&self) -> &crate::resilience::health::Checks {
        &self.checks
    }

    pub fn backend(&self, name: &str) -> Arc<BackendLive> {
        let mut m = lock(&self.backends);
        match m.get(name) {
            Some(b) => b.clone(),
            None => m.entry(name.to_owned()).or_default().clone(),
        }
    }

    /// The state of `backend/server`, created with the configured weight the first time.
    pub fn server(&self, key: ServerKey<'_>, weight: u32, disabled: bool) -> Arc<ServerLive> {
        let ServerKey { backend, server } = key;
        let mut m = lock(&self.servers);
        if let Some(s) = m.get(backend).and_then(|b| b.get(server)) {
            return s.clone();
        }
        let freed = self.backend(backend).server_freed.clone();
        m.entry(backend.to_owned())
            .or_default()
            .entry(server.to_owned())
            .or_insert_with(|| Arc::new(ServerLive::new(weight, disabled, freed)))
            .clone()
    }
}

impl Live {
    /// Runs `f` on the pool registry.
    pub fn pools_with<R>(&self, f: impl FnOnce(&mut HashMap<PoolKey, Arc<Pool>>) -> R) -> R {
        f(&mut lock(&self.pools))
    }

    /// Forgets pools that no snapshot in `keep` uses; their idle connections close when
    /// the last in-flight request using them ends.
    pub fn retain_pools(&self, keep: &std::collections::HashSet<PoolKey>) {
        lock(&self.pools).retain(|k, _| keep.contains(k));
    }

    /// The access log writer for `l`'s target (and syslog framing), opened once.
    pub fn log_sink(&self, l: &rampart_config::model::AccessLog) -> Result<Arc<LogSink>, String> {
        let key = format!(
            "{}\n{:?}\n{}\n{}\n{}",
            l.to, l.syslog_format, l.facility.0, l.tag, l.max_length
        );
        let mut logs = lock(&self.logs);
        if let Some(s) = logs.get(&key) {
            return Ok(s.clone());
        }
        let s = LogSink::open(l)?;
        logs.insert(key, s.clone());
        Ok(s)
    }

    /// The tracer for `settings`: the running one while the settings stay the same, so a
    /// reload keeps its queue and connection.
    pub fn tracer(
        &self,
        settings: &rampart_config::model::Tracing,
    ) -> Result<Arc<crate::trace::Tracer>, String> {
        let mut t = lock(&self.tracer);
        if let Some(cur) = t.as_ref().filter(|c| c.settings == *settings) {
            return Ok(cur.clone());
        }
        let new = crate::trace::Tracer::start(settings)
            .map_err(|e| format!("cannot start the span exporter: {e}"))?;
        *t = Some(new.clone());
        Ok(new)
    }

    /// The tracer in use, if any (`/metrics`).
    pub fn current_tracer(&self) -> Option<Arc<crate::trace::Tracer>> {
        lock(&self.tracer).clone()
    }

    /// Log records dropped because a writer fell behind.
    pub fn dropped_logs(&self) -> u64 {
        lock(&self.logs)
            .values()
            .map(|s| s.dropped.load(Relaxed))
            .sum()
    }
}
