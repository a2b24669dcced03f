//! A configuration compiled for serving: immutable, swapped whole on reload.
//!
//! Compiling resolves names to indices, server addresses to socket addresses, loads
//! certificates and builds rule matchers, so nothing on the request path looks anything
//! up by name. Long-lived state (counters, server state, connection pools, log writers)
//! comes from [`Live`], keyed by name, so it outlives any one snapshot.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rampart_config::model::{self, BackendTarget, Balance, Config};
use rampart_config::{ConfigError, ConfigErrors, Pos};
use rustls_pki_types::ServerName;

use crate::balance::{Algo, Balancer, Member};
use crate::http1::parse::HeadLimits;
use crate::log::LogSink;
use crate::resilience::health::CheckSpec;
use crate::resilience::limits::GateLimits;
use crate::resilience::outlier::OutlierSpec;
use crate::resilience::retry::RetryPolicy;
use crate::rules::matcher::IpSet;
use crate::rules::patref::{PatRef, RefKind};
use crate::rules::sample::{Resolve, Sample};
use crate::rules::{AclTable, Cond, ConnectionRule, RequestRule, ResponseRule, RuleCompiler};
use crate::state::{BackendLive, Declared, FrontendLive, Live, ServerKey, ServerLive};
use crate::stick::Table;
use crate::upstream::pool::{Pool, PoolConfig};
use crate::upstream::{Proto, Upstream, UpstreamTls};
use rampart_config::rules::PatFile;

/// A listening socket of a frontend.
#[derive(Clone)]
pub struct BindSpec {
    pub addr: SocketAddr,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub v6only: bool,
    pub backlog: u32,
    /// IP_FREEBIND: configured, or implied by a VRRP virtual address.
    pub freebind: bool,
    /// Who sends a PROXY header first.
    pub accept_proxy: AcceptProxy,
}

/// Which clients of a bind start with a PROXY protocol header (`accept_proxy`).
#[derive(Clone, Default)]
pub enum AcceptProxy {
    #[default]
    Off,
    All,
    /// Sources that must send one; from any other, one is refused.
    From(Arc<IpSet>),
}

impl AcceptProxy {
    /// What is expected of a connection from `peer`.
    pub fn expect(&self, peer: std::net::IpAddr) -> crate::server::ProxyHeader {
        use crate::server::ProxyHeader;
        match self {
            AcceptProxy::Off => ProxyHeader::None,
            AcceptProxy::All => ProxyHeader::Required,
            AcceptProxy::From(set) if set.contains(peer) => ProxyHeader::Required,
            AcceptProxy::From(_) => ProxyHeader::Refused,
        }
    }
}

/// Client timeouts.
#[derive(Debug, Clone, Copy)]
pub struct ClientTimeouts {
    pub client: Duration,
    pub http_request: Duration,
    pub keep_alive: Duration,
    /// The pace a request body must keep (`None`: any).
    pub body_pace: Option<crate::body::Pace>,
    /// The pace a client must take its responses at (`None`: any).
    pub send_pace: Option<crate::body::Pace>,
}

/// Forwarding header settings.
pub struct Forwarding {
    pub x_forwarded_for: bool,
    pub x_forwarded_proto: bool,
    pub forwarded: bool,
    pub trust: IpSet,
    pub keep_untrusted: bool,
}

pub use crate::routing::{Route, Routes, Target, VhostTable};

/// A compiled frontend.
pub struct Frontend {
    pub name: Arc<str>,
    /// `http`, or `tcp`: connections relayed as bytes ([`crate::tcp`]).
    pub mode: model::Mode,
    pub binds: Vec<BindSpec>,
    pub timeouts: ClientTimeouts,
    pub head_limits: HeadLimits,
    pub max_request_body: Option<u64>,
    pub h2: bool,
    pub h2_max_streams: u32,
    pub acls: AclTable,
    /// `tcp_request.connection` rules, run at accept time.
    pub connection_rules: Vec<ConnectionRule>,
    /// `tcp_request.content` rules (mode tcp), run on the client's first bytes.
    pub content_rules: Vec<ConnectionRule>,
    /// How long content rules and `use_backend` conditions may wait for more bytes.
    pub inspect_delay: Duration,
    pub request_rules: Vec<RequestRule>,
    pub response_rules: Vec<ResponseRule>,
    /// Routing by host name, tried before `routes`.
    pub vhosts: Option<VhostTable>,
    pub routes: Routes,
    pub default_backend: Option<usize>,
    pub forwarding: Forwarding,
    /// Request header names with `_` (`None`: drop those that fold into a framing or
    /// forwarding header).
    pub underscores: Option<model::UnderscoreHeaders>,
    pub log: Option<(Arc<LogSink>, crate::log::LogFormat)>,
    /// OpenTelemetry tracing of its requests.
    pub tracing: Option<crate::trace::TraceSpec>,
    pub live: Arc<FrontendLive>,
    /// `max_connections` (0: none), installed by [`install`].
    pub max_connections: u64,
    /// Set when this frontend's connections must move on: a reload changed how they are
    /// served (binds, TLS, timeouts, limits, HTTP/2 settings; after the reload grace
    /// time), or the proxy stops. Connections close gracefully (HTTP/1 `Connection:
    /// close` after the response in flight, HTTP/2 GOAWAY). A reload that changes only
    /// rules, routes or backends keeps the channel: open connections serve their next
    /// requests with the new configuration at once.
    pub retire: Arc<tokio::sync::watch::Sender<Retire>>,
}

/// A compiled server.
pub struct Server {
    pub name: Arc<str>,
    pub upstream: Upstream,
    pub live: Arc<ServerLive>,
    pub backup: bool,
    /// Active check settings, when the server is checked.
    pub check: Option<CheckSpec>,
    /// The state its configuration declares, installed in `live` by [`install`].
    pub declared: Declared,
    /// Configured weight and `disabled`, installed by [`install`] where they changed.
    pub weight: u32,
    pub disabled: bool,
    /// `max_connections` (0: none), installed by [`install`].
    pub max_active: u64,
    /// Its span attributes, encoded on the first traced request that reaches it.
    pub trace_where: std::sync::OnceLock<crate::trace::Where>,
}

impl Server {
    /// Its span attributes (`backend` is its backend's name).
    pub fn trace_where(&self, backend: &str) -> &crate::trace::Where {
        self.trace_where
            .get_or_init(|| crate::trace::Where::server(backend, &self.name, self.upstream.addr))
    }
}

/// A compiled backend.
pub struct Backend {
    pub name: Arc<str>,
    /// Response compression.
    pub compression: Option<crate::compress::Spec>,
    pub mode: model::Mode,
    /// Mode tcp: inactivity in both directions allowed once relaying (`timeouts.tunnel`).
    pub tunnel_timeout: Option<Duration>,
    pub servers: Vec<Server>,
    pub balancer: Balancer,
    /// What `maglev` hashes (default: the client address).
    pub hash_key: Option<Sample>,
    pub server_timeout: Duration,
    pub proto: Proto,
    pub acls: AclTable,
    pub request_rules: Vec<RequestRule>,
    pub response_rules: Vec<ResponseRule>,
    pub live: Arc<BackendLive>,
    pub retries: Option<Arc<RetryPolicy>>,
    /// The in-flight limit and queue, when the backend has a circuit breaker or a queue.
    pub gate: Option<GateLimits>,
    /// How long a request may wait for a server under its `max_connections`.
    pub queue_timeout: Option<Duration>,
    /// Retries in flight at once.
    pub max_retries: u64,
    pub outlier: Option<OutlierSpec>,
    /// Stick-table persistence rules.
    pub stick: Vec<StickRule>,
    /// Cookie persistence.
    pub cookie: Option<CookieSpec>,
}

/// A compiled `stick` rule.
pub struct StickRule {
    pub kind: rampart_config::stick::StickKind,
    pub sample: Sample,
    pub table: Arc<Table>,
    pub cond: Option<Cond>,
}

/// Cookie persistence, compiled.
pub struct CookieSpec {
    pub name: String,
    pub mode: rampart_config::stick::CookieMode,
    pub indirect: bool,
    pub nocache: bool,
    /// `; path=/; HttpOnly; Secure` as configured.
    pub attrs: String,
    pub max_idle: Option<Duration>,
    pub max_life: Option<Duration>,
    /// Each server's cookie value, by server index.
    pub values: Vec<String>,
}

/// Process settings.
#[derive(Debug, Clone, Copy)]
pub struct GlobalSettings {
    pub threads: usize,
    pub max_connections: u64,
    pub grace: Duration,
    pub reload_grace: Duration,
    pub reload_timeout: Duration,
}

/// A whole compiled configuration.
pub struct Snapshot {
    pub generation: u64,
    pub global: GlobalSettings,
    pub frontends: Vec<Arc<Frontend>>,
    pub backends: Vec<Arc<Backend>>,
    /// Stick tables, in configuration order.
    pub tables: Vec<Arc<Table>>,
    /// The pattern and map files ACLs and map converters use.
    pub patterns: Vec<Arc<PatRef>>,
    /// The certificate, key, CA and CRL files TLS read (the file watch reloads when one
    /// changes).
    pub tls_files: Vec<std::path::PathBuf>,
    pub config: Arc<Config>,
    /// What the configuration should fix but does not stop serving: certificates that
    /// expire soon (or expired ones served because `allow_expired` says so), each with
    /// its key path.
    pub warnings: Vec<String>,
    /// The certificates served, by frontend and bind.
    pub certificates: Vec<ServedCert>,
    /// Frontends and backends by name, to their first index.
    frontend_at: ByName,
    backend_at: ByName,
}

/// A certificate a frontend's bind serves.
#[derive(Debug, Clone)]
pub struct ServedCert {
    pub frontend: Arc<str>,
    pub bind: usize,
    pub cert: crate::tls::CertInfo,
}

/// Name to the index of the first item of that name.
/// Positions by name (a backend named per request is looked up here).
type ByName = HashMap<Arc<str>, usize, foldhash::fast::RandomState>;

fn index_by_name<'a>(names: impl Iterator<Item = &'a Arc<str>>) -> ByName {
    let mut m = ByName::default();
    for (i, n) in names.enumerate() {
        m.entry(n.clone()).or_insert(i);
    }
    m
}

/// Where a frontend's connections stand ([`Frontend::retire`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retire {
    /// Serving.
    Live,
    /// Replaced by a reload: connections close after their next response.
    Retired,
    /// The proxy stops: idle connections close at once too.
    Stopping,
}

impl Snapshot {
    pub fn frontend(&self, name: &str) -> Option<&Arc<Frontend>> {
        self.frontend_at.get(name).map(|i| &self.frontends[*i])
    }

    pub fn backend_index(&self, name: &str) -> Option<usize> {
        self.backend_at.get(name).copied()
    }

    /// Usable servers of backend `i` (`nbsrv`).
    pub fn nbsrv(&self, i: usize) -> usize {
        self.backends
            .get(i)
            .map_or(0, |b| b.balancer.usable_count())
    }
}

/// Things compilation needs from outside the configuration.
pub struct CompileEnv<'a> {
    /// Directory relative file names are read from.
    pub base_dir: &'a Path,
    pub live: &'a Live,
    pub generation: u64,
    /// Worker threads (for per-worker pools).
    pub workers: usize,
    /// Open log sinks (false for `rampart check`).
    pub open_logs: bool,
    /// The snapshot being replaced: frontends whose connections need not move on keep
    /// its retirement channels.
    pub previous: Option<&'a Snapshot>,
}

struct Errors(Vec<ConfigError>);

impl Errors {
    fn add(&mut self, pos: Pos, path: impl Into<String>, msg: impl Into<String>) {
        self.0.push(ConfigError::new(pos, path, msg));
    }
}

/// Resolves `host:port` (the first address found).
pub fn resolve(addr: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = addr.parse() {
        return Ok(a);
    }
    addr.to_socket_addrs()
        .map_err(|e| format!("cannot resolve {addr:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr:?} resolves to no address"))
}

fn algo(b: &model::Backend) -> Algo {
    match &b.balance {
        Balance::RoundRobin => Algo::RoundRobin,
        Balance::StaticRr => Algo::StaticRr,
        Balance::LeastConn => Algo::LeastConn,
        Balance::Source => Algo::Source {
            v4_mask: b.source_mask.ipv4,
            v6_mask: b.source_mask.ipv6,
        },
        Balance::Uri => Algo::Uri,
        Balance::Hdr(h) => {
            http::HeaderName::from_bytes(h.as_bytes()).map_or(Algo::RoundRobin, Algo::Hdr)
        }
        Balance::Random => Algo::Random,
        Balance::Maglev => Algo::Maglev,
    }
}

/// Compiles `cfg` into a snapshot, or returns every problem found. It writes no live
/// state (see [`install`]).
pub fn compile(cfg: Arc<Config>, env: &CompileEnv<'_>) -> Result<Snapshot, ConfigErrors> {
    let mut backend_names: HashMap<&str, usize> = HashMap::with_capacity(cfg.backends.len());
    for (i, n) in cfg.backends.names().enumerate() {
        backend_names.entry(n).or_insert(i);
    }
    let backend_index = |n: &str| backend_names.get(n).copied();
    let tables: Vec<Arc<Table>> = cfg
        .stick_tables
        .iter()
        .map(|(name, def)| env.live.tables.prepare(name, def))
        .collect();
    let mut table_index: HashMap<&str, usize> = HashMap::new();
    for (i, t) in tables.iter().enumerate() {
        table_index.entry(&t.name).or_insert(i);
    }
    let table_by_name = |n: &str| -> Option<Arc<Table>> {
        if n.is_empty() {
            return match tables.as_slice() {
                [t] => Some(t.clone()),
                _ => None,
            };
        }
        table_index.get(n).map(|i| tables[*i].clone())
    };
    let refs = crate::rules::patref::RefSet::new(env.previous.map_or(&[], |p| &p.patterns[..]));
    let pattern_ref = |k: RefKind, f: &PatFile| refs.get(k, f);
    let mut cx = Cx {
        cfg: &cfg,
        env,
        names: Resolve {
            backend: &backend_index,
            table: &table_by_name,
            patterns: &pattern_ref,
        },
        errs: Errors(Vec::new()),
        tls: TlsCache::new(
            rampart_config::validate::certificate_allowance(&cfg),
            env.live.certs.clone(),
        ),
        warnings: Vec::new(),
        served: Vec::new(),
    };
    let backends: Vec<Arc<Backend>> = cfg
        .backends
        .iter()
        .enumerate()
        .map(|(bi, (bname, b))| cx.backend(bi, bname, b))
        .collect();
    let frontends: Vec<Arc<Frontend>> = cfg
        .frontends
        .iter()
        .enumerate()
        .filter_map(|(fi, (fname, f))| cx.frontend(fi, fname, f))
        .collect();
    let Cx {
        mut errs,
        warnings,
        served,
        tls,
        ..
    } = cx;
    let mut tls_files: Vec<std::path::PathBuf> = tls.pem.files().cloned().collect();
    tls_files.sort();
    if !errs.0.is_empty() {
        errs.0.sort_by_key(|e| e.pos);
        return Err(ConfigErrors(errs.0));
    }
    let threads = cfg
        .global
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    Ok(Snapshot {
        generation: env.generation,
        global: GlobalSettings {
            threads,
            max_connections: u64::from(cfg.global.max_connections),
            grace: cfg.global.grace,
            reload_grace: cfg.global.reload_grace,
            reload_timeout: cfg.global.reload_timeout,
        },
        frontend_at: index_by_name(frontends.iter().map(|f| &f.name)),
        backend_at: index_by_name(backends.iter().map(|b| &b.name)),
        frontends,
        backends,
        tables,
        patterns: refs.into_vec(),
        tls_files,
        config: cfg,
        warnings,
        certificates: served,
    })
}

/// What the parts of one compilation share: the configuration, names resolved to
/// indices, the TLS configurations built so far, and every error and warning found.
struct Cx<'a> {
    cfg: &'a Config,
    env: &'a CompileEnv<'a>,
    names: Resolve<'a>,
    errs: Errors,
    tls: TlsCache,
    warnings: Vec<String>,
    served: Vec<ServedCert>,
}

/// What the servers of one backend share while they are compiled.
struct BackendCx<'b> {
    name: &'b str,
    path: &'b str,
    def: &'b model::Backend,
    proto: Proto,
    client_tls: Option<(Arc<rustls::ClientConfig>, Option<String>)>,
    pool: PoolConfig,
    live: &'b Arc<BackendLive>,
}

impl Cx<'_> {
    fn backend(&mut self, bi: usize, bname: &str, b: &model::Backend) -> Arc<Backend> {
        let path = format!("backends.{bname}");
        let be_pos = self.cfg.backends.entries()[bi].0.pos;
        let live = self.env.live.backend(bname);
        let proto = match b.proto {
            model::Proto::Http1 => Proto::Http1,
            model::Proto::H2 => Proto::H2,
        };
        let client_tls = match &b.tls {
            None => None,
            Some(t) => match self.tls.client(t, self.env.base_dir, proto == Proto::H2) {
                Ok(c) => Some((c, t.sni.clone())),
                Err(e) => {
                    let pos = t.ca.as_ref().map_or(be_pos, |c| c.pos);
                    self.errs.add(pos, format!("{path}.tls"), e);
                    None
                }
            },
        };
        let bcx = BackendCx {
            name: bname,
            path: &path,
            def: b,
            proto,
            client_tls,
            pool: PoolConfig {
                max_idle_per_server: b.pool.max_idle_per_server,
                idle_timeout: b.pool.idle_timeout,
            },
            live: &live,
        };
        let servers: Vec<Server> = b
            .servers
            .iter()
            .filter_map(|(sname, s)| self.server(&bcx, sname, s))
            .collect();
        let members = servers
            .iter()
            .map(|s| Member {
                name: s.name.clone(),
                live: s.live.clone(),
                backup: s.backup,
            })
            .collect();
        let hash_key = b.hash_key.as_ref().and_then(|k| {
            Sample::compile(&k.value.0, &self.names)
                .map_err(|e| self.errs.add(be_pos, format!("{path}.hash_key"), e))
                .ok()
        });
        let (acls, request_rules, response_rules, stick) = self.backend_rules(b, &path, be_pos);
        Arc::new(Backend {
            name: bname.into(),
            compression: b.compression.as_ref().map(crate::compress::Spec::new),
            mode: b.mode,
            tunnel_timeout: b.timeouts.tunnel,
            balancer: Balancer::new(
                algo(b),
                members,
                live.clone(),
                false,
                self.env.workers.max(1),
            ),
            servers,
            hash_key,
            server_timeout: b.timeouts.server,
            proto,
            acls,
            request_rules,
            response_rules,
            live,
            retries: b.retries.as_ref().map(|r| Arc::new(RetryPolicy::from(r))),
            gate: match (&b.circuit_breaker, &b.queue) {
                (None, None) => None,
                (cb, q) => Some(GateLimits {
                    max_requests: cb.as_ref().map_or(u64::MAX, |c| u64::from(c.max_requests)),
                    max_pending: cb
                        .as_ref()
                        .map_or(u64::MAX, |c| u64::from(c.max_pending_requests)),
                    queue: q.as_ref().map(|q| q.timeout),
                }),
            },
            queue_timeout: b.queue.as_ref().map(|q| q.timeout),
            max_retries: b
                .circuit_breaker
                .as_ref()
                .map_or(u64::MAX, |c| u64::from(c.max_retries)),
            outlier: b.outlier_detection.as_ref().map(OutlierSpec::from),
            stick,
            cookie: b.cookie.as_ref().map(|c| cookie_spec(b, c)),
        })
    }

    /// One server: its address (or the one set at run time), TLS name, connection pool
    /// (kept from the previous snapshot when nothing relevant changed), health check and
    /// live state.
    fn server(&mut self, bcx: &BackendCx<'_>, sname: &str, s: &model::Server) -> Option<Server> {
        let path = bcx.path;
        let key = ServerKey {
            backend: bcx.name,
            server: sname,
        };
        let addr = match self.env.live.addr_override(key).map(Ok) {
            Some(a) => a,
            None => resolve(&s.address.value),
        };
        let addr = match addr {
            Ok(a) => a,
            Err(e) => {
                self.errs
                    .add(s.address.pos, format!("{path}.servers.{sname}.address"), e);
                return None;
            }
        };
        let tls = match &bcx.client_tls {
            None => None,
            Some((config, sni)) => {
                let host = sni.clone().unwrap_or_else(|| {
                    s.address
                        .value
                        .rsplit_once(':')
                        .map_or(s.address.value.clone(), |(h, _)| {
                            h.trim_matches(['[', ']']).to_owned()
                        })
                });
                match ServerName::try_from(host.clone()) {
                    Ok(server_name) => Some(UpstreamTls {
                        config: config.clone(),
                        server_name,
                    }),
                    Err(_) => {
                        self.errs.add(
                            s.address.pos,
                            format!("{path}.tls.sni"),
                            format!("invalid server name {host:?}"),
                        );
                        None
                    }
                }
            }
        };
        let b = bcx.def;
        let tls_key = b.tls.as_ref().map(|t| {
            let sni = tls
                .as_ref()
                .map(|u| format!("{:?}", u.server_name))
                .unwrap_or_default();
            format!("{sni}|{:?}|{}", t.ca.as_ref().map(|c| &c.value), t.verify)
        });
        let workers = self.env.workers.max(1);
        let (pool_key, pool) = self
            .env
            .live
            .pool(key, addr, tls_key, bcx.proto, bcx.pool, workers);
        let proxy = send_proxy(s);
        let check = s
            .health_check
            .as_ref()
            .or(b.health_check.as_ref())
            .filter(|_| s.check)
            .map(|hc| CheckSpec::new(hc, addr, &s.address.value, tls.clone(), proxy));
        Some(Server {
            trace_where: Default::default(),
            max_active: s.max_connections.map_or(0, u64::from),
            declared: match s.status {
                model::ServerStatus::Up => Declared::Up,
                model::ServerStatus::Drain => Declared::Drain,
                model::ServerStatus::Down => Declared::Down,
            },
            weight: s.weight.value,
            disabled: s.disabled,
            name: sname.into(),
            upstream: Upstream {
                addr,
                tls,
                proto: bcx.proto,
                connect_timeout: b.timeouts.connect,
                pool,
                pool_key,
                backend: bcx.live.clone(),
                max_conns: b
                    .circuit_breaker
                    .as_ref()
                    .map_or(u64::MAX, |c| u64::from(c.max_connections)),
                send_proxy: proxy,
            },
            live: self.env.live.server(key, s.weight.value, s.disabled),
            backup: s.backup,
            check,
        })
    }

    /// A backend's ACLs, `http_request` and `http_response` rules, and `stick` rules.
    fn backend_rules(
        &mut self,
        b: &model::Backend,
        path: &str,
        be_pos: Pos,
    ) -> (
        AclTable,
        Vec<RequestRule>,
        Vec<ResponseRule>,
        Vec<StickRule>,
    ) {
        let empty = rampart_config::NamedMap::default();
        let mut rc = match RuleCompiler::new(&empty, &self.names) {
            Ok(rc) => rc,
            Err(e) => {
                self.errs.add(be_pos, path.to_owned(), e);
                return (AclTable::default(), Vec::new(), Vec::new(), Vec::new());
            }
        };
        let (req, res) = compile_rules(
            &mut rc,
            &b.http_request,
            &b.http_response,
            path,
            &mut self.errs,
        );
        let mut stick = Vec::new();
        for (i, r) in b.stick.iter().enumerate() {
            let name = r.table.as_ref().map_or("", |t| t.value.as_str());
            let compiled = (|| -> Result<StickRule, String> {
                Ok(StickRule {
                    kind: r.kind,
                    sample: Sample::compile(&r.expr, &self.names)?,
                    table: (self.names.table)(name)
                        .ok_or_else(|| format!("unknown stick table {name:?}"))?,
                    cond: r.cond.as_ref().map(|c| rc.cond(c)).transpose()?,
                })
            })();
            match compiled {
                Ok(x) => stick.push(x),
                Err(e) => self.errs.add(r.pos, format!("{path}.stick.{i}"), e),
            }
        }
        (rc.finish(), req, res, stick)
    }

    fn frontend(&mut self, fi: usize, fname: &str, f: &model::Frontend) -> Option<Arc<Frontend>> {
        let path = format!("frontends.{fname}");
        let fe_pos = self.cfg.frontends.entries()[fi].0.pos;
        let binds = self.binds(fname, f, &path);
        let names = Resolve {
            backend: self.names.backend,
            table: self.names.table,
            patterns: self.names.patterns,
        };
        let mut rc = match RuleCompiler::new(&f.acls, &names) {
            Ok(rc) => rc,
            Err(e) => {
                self.errs.add(fe_pos, format!("{path}.acls"), e);
                return None;
            }
        };
        let errs = &mut self.errs;
        let (request_rules, response_rules) =
            compile_rules(&mut rc, &f.http_request, &f.http_response, &path, errs);
        let mut connection_rules = Vec::new();
        for (i, r) in f.tcp_request.connection.iter().enumerate() {
            match rc.connection_rule(&r.rule) {
                Ok(x) => connection_rules.push(x),
                Err(e) => errs.add(r.pos, format!("{path}.tcp_request.connection.{i}"), e),
            }
        }
        let mut content_rules = Vec::new();
        for (i, r) in f.tcp_request.content.iter().enumerate() {
            match rc.connection_rule(&r.0.rule) {
                Ok(x) => content_rules.push(x),
                Err(e) => errs.add(r.0.pos, format!("{path}.tcp_request.content.{i}"), e),
            }
        }
        let routes: Vec<Route> = f
            .use_backend
            .iter()
            .enumerate()
            .filter_map(|(i, u)| {
                let p = format!("{path}.use_backend.{i}");
                compile_route(&mut rc, u, names.backend, &names, &p, errs)
            })
            .collect();
        let mut vhosts = vhosts(&mut rc, f, &path, &names, errs);
        let acls = rc.finish();
        let mut routes = Routes::new(routes);
        routes.index(&acls);
        if let Some(v) = &mut vhosts {
            v.index(&acls);
        }
        let log = match &f.access_log {
            Some(l) if self.env.open_logs => match self.env.live.log_sink(l) {
                Ok(s) => Some((
                    s,
                    crate::log::LogFormat {
                        kind: l.format.unwrap_or(match f.mode {
                            model::Mode::Http => model::LogFormatKind::Httplog,
                            model::Mode::Tcp => model::LogFormatKind::Tcplog,
                        }),
                        custom: l
                            .log_format
                            .as_ref()
                            .and_then(|f| rampart_config::logformat::parse(&f.value).ok())
                            .map(Arc::from),
                    },
                )),
                Err(e) => {
                    self.errs.add(fe_pos, format!("{path}.access_log.to"), e);
                    None
                }
            },
            _ => None,
        };
        let tracing = match (&f.tracing, &self.cfg.tracing) {
            (Some(t), Some(settings)) if self.env.open_logs => {
                match self.env.live.tracer(settings) {
                    Ok(tracer) => Some(crate::trace::TraceSpec {
                        tracer,
                        frontend: crate::trace::otlp::frontend_attr(fname),
                        ratio: t.sampling.fraction(),
                        respect_parent: t.respect_parent,
                    }),
                    Err(e) => {
                        self.errs.add(fe_pos, format!("{path}.tracing"), e);
                        None
                    }
                }
            }
            _ => None,
        };
        let trust: Vec<_> = f.forwarded.trust.iter().map(|t| t.value.0).collect();
        Some(Arc::new(Frontend {
            tracing,
            name: fname.into(),
            mode: f.mode,
            binds,
            timeouts: client_timeouts(f),
            head_limits: HeadLimits {
                max_head: f.limits.max_header_size.0 as usize,
                max_headers: f.limits.max_headers as usize,
                max_uri: f.limits.max_uri_length.0 as usize,
            },
            max_request_body: f.limits.max_request_body.map(|s| s.0),
            h2: f.http2.enabled,
            h2_max_streams: f.http2.max_concurrent_streams,
            acls,
            connection_rules,
            content_rules,
            inspect_delay: f.tcp_request.inspect_delay,
            request_rules,
            response_rules,
            vhosts,
            routes,
            default_backend: f
                .default_backend
                .as_ref()
                .and_then(|d| (names.backend)(&d.value)),
            underscores: f.headers_with_underscores,
            forwarding: Forwarding {
                x_forwarded_for: f.forwarded.x_forwarded_for,
                x_forwarded_proto: f.forwarded.x_forwarded_proto,
                forwarded: f.forwarded.forwarded,
                trust: IpSet::new(&trust),
                keep_untrusted: f.forwarded.keep_untrusted,
            },
            log,
            live: self.env.live.frontend(fname),
            max_connections: f.max_connections.map_or(0, u64::from),
            retire: self.retire(fname, f),
        }))
    }

    /// A frontend's binds, with their TLS configurations (certificates loaded once).
    fn binds(&mut self, fname: &str, f: &model::Frontend, path: &str) -> Vec<BindSpec> {
        let mut binds = Vec::new();
        for (i, b) in f.bind.iter().enumerate() {
            // In mode tcp the bytes behind TLS are not HTTP: ALPN is offered only when
            // the configuration names protocols other than the default HTTP ones.
            let tcp_tls;
            let tls_def = match &b.tls {
                Some(t)
                    if f.mode == model::Mode::Tcp && t.alpn == model::BindTls::default_alpn() =>
                {
                    tcp_tls = model::BindTls {
                        alpn: Vec::new(),
                        ..t.clone()
                    };
                    Some(&tcp_tls)
                }
                other => other.as_ref(),
            };
            let tls = match tls_def {
                None => None,
                Some(t) => match self.tls.server(t, self.env.base_dir, f.http2.enabled) {
                    Ok((c, warned, infos)) => {
                        for w in warned {
                            self.warnings.push(format!("{path}.bind.{i}.tls: {w}"));
                        }
                        let frontend: Arc<str> = fname.into();
                        self.served.extend(infos.into_iter().map(|cert| ServedCert {
                            frontend: frontend.clone(),
                            bind: i,
                            cert,
                        }));
                        Some(c)
                    }
                    Err((at, e)) => {
                        let pos = t.certificates[at.unwrap_or(0)..]
                            .first()
                            .map_or(b.address.pos, |c| c.cert.pos);
                        let within = at.map(|n| format!(".certificates.{n}")).unwrap_or_default();
                        self.errs
                            .add(pos, format!("{path}.bind.{i}.tls{within}"), e);
                        None
                    }
                },
            };
            binds.push(BindSpec {
                addr: b.address.value,
                tls,
                v6only: b.v6only,
                backlog: b.backlog,
                freebind: b.freebind || self.cfg.vrrp.is_virtual(b.address.value.ip()),
                accept_proxy: match &b.accept_proxy {
                    model::AcceptProxy::Off => AcceptProxy::Off,
                    model::AcceptProxy::All => AcceptProxy::All,
                    model::AcceptProxy::From(nets) => AcceptProxy::From(Arc::new(IpSet::new(
                        &nets.iter().map(|n| n.value.0).collect::<Vec<_>>(),
                    ))),
                },
            });
        }
        binds
    }

    /// The retirement channel of a frontend: the previous snapshot's, when its serving
    /// settings are unchanged (its connections need not move on), else a new one.
    fn retire(&self, fname: &str, f: &model::Frontend) -> Arc<tokio::sync::watch::Sender<Retire>> {
        self.env
            .previous
            .and_then(|old| {
                let keep = old.config.frontends.get(fname).is_some_and(|o| {
                    o.bind == f.bind
                        && o.timeouts == f.timeouts
                        && o.limits == f.limits
                        && o.http2 == f.http2
                });
                keep.then(|| old.frontend(fname).map(|o| o.retire.clone()))
                    .flatten()
            })
            .unwrap_or_else(|| Arc::new(tokio::sync::watch::channel(Retire::Live).0))
    }
}

/// A frontend's virtual hosts and their routes (`None` without any).
fn vhosts(
    rc: &mut RuleCompiler<'_>,
    f: &model::Frontend,
    path: &str,
    names: &Resolve<'_>,
    errs: &mut Errors,
) -> Option<VhostTable> {
    if f.virtual_hosts.is_empty() {
        return None;
    }
    let mut t = VhostTable::default();
    t.ignore_port = f.ignore_host_port;
    for (vname, vh) in f.virtual_hosts.iter() {
        let vp = format!("{path}.virtual_hosts.{vname}");
        let domains: Vec<_> = vh
            .domains
            .iter()
            .filter_map(|d| model::DomainMatch::parse(&d.value).ok())
            .collect();
        let mut rs = Vec::new();
        for (i, u) in vh.routes.iter().enumerate() {
            let p = format!("{vp}.routes.{i}");
            if let Some(r) = compile_route(rc, u, names.backend, names, &p, errs) {
                rs.push(r);
            }
        }
        t.add(&domains, rs);
    }
    Some(t)
}

fn client_timeouts(f: &model::Frontend) -> ClientTimeouts {
    ClientTimeouts {
        client: f.timeouts.client,
        http_request: f.timeouts.http_request,
        keep_alive: f.timeouts.keep_alive,
        body_pace: (!f.timeouts.request_body.is_zero()).then_some(crate::body::Pace {
            allowance: f.timeouts.request_body,
            rate: f.limits.min_request_body_rate.0,
        }),
        send_pace: (!f.timeouts.response_body.is_zero()).then_some(crate::body::Pace {
            allowance: f.timeouts.response_body,
            rate: f.limits.min_response_body_rate.0,
        }),
    }
}

/// A backend's persistence cookie.
fn cookie_spec(b: &model::Backend, c: &rampart_config::stick::Cookie) -> CookieSpec {
    let mut attrs = String::from("; path=/");
    if let Some(d) = &c.domain {
        attrs.push_str("; domain=");
        attrs.push_str(d);
    }
    if c.httponly {
        attrs.push_str("; HttpOnly");
    }
    if c.secure {
        attrs.push_str("; Secure");
    }
    CookieSpec {
        name: c.name.value.clone(),
        mode: c.mode,
        indirect: c.indirect,
        nocache: c.nocache,
        attrs,
        max_idle: c.max_idle,
        max_life: c.max_life,
        values: b
            .servers
            .iter()
            .map(|(n, s)| s.cookie.clone().unwrap_or_else(|| n.to_owned()))
            .collect(),
    }
}

/// A snapshot compiled and installed from YAML, with the live state it uses (tests).
#[cfg(test)]
pub(crate) fn compile_yaml(yaml: &str) -> (Arc<Snapshot>, Arc<Live>) {
    let cfg = rampart_config::load_str(yaml, None, &HashMap::<String, String>::new())
        .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let live = Live::new();
    let env = CompileEnv {
        base_dir: Path::new("."),
        live: &live,
        generation: 1,
        workers: 1,
        open_logs: false,
        previous: None,
    };
    let snap = Arc::new(compile(Arc::new(cfg), &env).unwrap_or_else(|e| panic!("{e}")));
    install(&snap, &live);
    (snap, live)
}

/// TLS configurations built once per compilation for identical settings: many binds or
/// backends with the same certificates share one (and its session cache).
struct TlsCache {
    server: HashMap<String, ServerTls>,
    client: HashMap<String, Result<Arc<rustls::ClientConfig>, String>>,
    pem: crate::tls::certs::Loader,
}

type ServerTls = Result<crate::tls::ServerTls, crate::tls::TlsError>;

impl TlsCache {
    fn new(allowed: u64, overrides: Arc<crate::tls::certs::Overrides>) -> Self {
        Self {
            server: HashMap::new(),
            client: HashMap::new(),
            pem: crate::tls::certs::Loader::with_overrides(allowed, Some(overrides)),
        }
    }

    fn server(&mut self, t: &model::BindTls, base: &Path, h2: bool) -> ServerTls {
        // The settings without where they were written.
        let mut k = t.clone();
        for c in &mut k.certificates {
            c.cert.pos = Pos::default();
            if let Some(key) = &mut c.key {
                key.pos = Pos::default();
            }
        }
        let key = format!("{h2} {k:?}");
        if let Some(r) = self.server.get(&key) {
            // Warnings were told the first time.
            return r.clone().map(|(c, _, infos)| (c, Vec::new(), infos));
        }
        let r = crate::tls::server_config(t, base, h2, &mut self.pem);
        self.server.insert(key, r.clone());
        r
    }

    fn client(
        &mut self,
        t: &model::UpstreamTls,
        base: &Path,
        h2: bool,
    ) -> Result<Arc<rustls::ClientConfig>, String> {
        let mut k = t.clone();
        if let Some(ca) = &mut k.ca {
            ca.pos = Pos::default();
        }
        let key = format!("{h2} {k:?}");
        if let Some(r) = self.client.get(&key) {
            return r.clone();
        }
        let r = crate::tls::client_config(t, base, h2, &mut self.pem);
        self.client.insert(key, r.clone());
        r
    }
}

/// Installs what a snapshot declares about live state, once it serves: connection
/// limits, the declared state of each server, and weights and `disabled` where the
/// configuration changed them. [`compile`] writes no live state, so a configuration that
/// is refused (or a reload given up) changes nothing that serves.
pub fn install(snapshot: &Snapshot, live: &Live) {
    use std::sync::atomic::Ordering::Relaxed;
    live.global
        .limit
        .store(snapshot.global.max_connections, Relaxed);
    for f in &snapshot.frontends {
        f.live.limit.store(f.max_connections, Relaxed);
    }
    for b in &snapshot.backends {
        for s in &b.servers {
            s.live.max_active.store(s.max_active, Relaxed);
            s.live.set_declared(s.declared, &b.live);
            s.live.configure(s.weight, s.disabled, &b.live);
        }
    }
}

/// Compiles one route; problems are added to `errs`.
fn compile_route(
    rc: &mut RuleCompiler<'_>,
    u: &model::UseBackend,
    backend_index: &dyn Fn(&str) -> Option<usize>,
    names: &Resolve<'_>,
    path: &str,
    errs: &mut Errors,
) -> Option<Route> {
    let cond = match u.cond.as_ref().map(|c| rc.cond(c)).transpose() {
        Ok(c) => c,
        Err(e) => {
            errs.add(u.pos, path, e);
            return None;
        }
    };
    let target = match &u.target {
        BackendTarget::One(b) => backend_index(&b.value).map(Target::One),
        BackendTarget::Split(parts) => {
            let mut cum = 0;
            let mut out = Vec::new();
            for (b, w) in parts {
                cum += *w;
                if let Some(bi) = backend_index(&b.value) {
                    out.push((bi, cum));
                }
            }
            (!out.is_empty()).then_some(Target::Split(out, cum))
        }
        BackendTarget::None => Some(Target::None),
        BackendTarget::Dynamic(f) => match rc.fmt(&f.value) {
            Ok(f) => Some(Target::Dynamic(f)),
            Err(e) => {
                errs.add(f.pos, path, e);
                return None;
            }
        },
    };
    let Some(target) = target else {
        errs.add(u.pos, path, "unknown backend");
        return None;
    };
    let (request_rules, response_rules) =
        compile_rules(rc, &u.http_request, &u.http_response, path, errs);
    let mut hash_keys = Vec::new();
    for k in &u.hash_key {
        match Sample::compile(&k.value.0, names) {
            Ok(s) => hash_keys.push(s),
            Err(e) => errs.add(k.pos, format!("{path}.hash_key"), e),
        }
    }
    Some(Route {
        cond,
        target,
        retries: u.retries.as_ref().map(|r| Arc::new(RetryPolicy::from(r))),
        timeout: u.timeout,
        request_rules,
        response_rules,
        hash_keys,
    })
}

fn compile_rules(
    rc: &mut RuleCompiler<'_>,
    req: &[model::RuleDef<rampart_config::rules::RequestAction>],
    res: &[model::RuleDef<rampart_config::rules::ResponseAction>],
    path: &str,
    errs: &mut Errors,
) -> (Vec<RequestRule>, Vec<ResponseRule>) {
    let mut request_rules = Vec::new();
    for (i, r) in req.iter().enumerate() {
        match rc.request_rule(&r.rule) {
            Ok(x) => request_rules.push(x),
            Err(e) => errs.add(r.pos, format!("{path}.http_request.{i}"), e),
        }
    }
    let mut response_rules = Vec::new();
    for (i, r) in res.iter().enumerate() {
        match rc.response_rule(&r.rule) {
            Ok(x) => response_rules.push(x),
            Err(e) => errs.add(r.pos, format!("{path}.http_response.{i}"), e),
        }
    }
    (request_rules, response_rules)
}

/// Identity of a connection pool: a pool is reused across reloads only when it still
/// reaches the same place the same way.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub backend: String,
    pub server: String,
    pub addr: SocketAddr,
    pub tls: Option<String>,
    pub h2: bool,
    pub cfg: (usize, Duration),
}

impl Live {
    /// The pool for a server, kept from an earlier snapshot when nothing relevant changed.
    pub fn pool(
        &self,
        server: crate::state::ServerKey<'_>,
        addr: SocketAddr,
        tls_key: Option<String>,
        proto: Proto,
        cfg: PoolConfig,
        workers: usize,
    ) -> (PoolKey, Arc<Pool>) {
        let key = PoolKey {
            backend: server.backend.to_owned(),
            server: server.server.to_owned(),
            addr,
            tls: tls_key,
            h2: proto == Proto::H2,
            cfg: (cfg.max_idle_per_server, cfg.idle_timeout),
        };
        self.pools_with(|pools: &mut HashMap<PoolKey, Arc<Pool>>| {
            if let Some(pool) = pools.get(&key) {
                return (key, pool.clone());
            }
            let pool = Pool::new(cfg, workers);
            pools.insert(key.clone(), pool.clone());
            (key, pool)
        })
    }
}

/// The PROXY header version a server is sent, if any.
fn send_proxy(s: &model::Server) -> Option<crate::proxy_protocol::Version> {
    use crate::proxy_protocol::Version;
    if s.send_proxy_v2 {
        Some(Version::V2 {
            authority: s
                .proxy_v2_options
                .contains(&model::ProxyV2Option::Authority),
            crc32c: s.proxy_v2_options.contains(&model::ProxyV2Option::Crc32c),
        })
    } else if s.send_proxy {
        Some(Version::V1)
    } else {
        None
    }
}
