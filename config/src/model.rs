//! The configuration model: what `rampart.yaml` may contain.
//!
//! Every struct here is declared with [`config_struct!`], so unknown keys are errors and
//! each key is listed in the schema that the documentation test walks. Defaults are the
//! `= value` after a field; docs/configuration.md explains each key.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use crate::config_struct;
use crate::decode::{Cx, Decode, NamedMap, Schema, Size, Spanned};
use crate::error::Pos;
use crate::resilience::{CircuitBreaker, HealthCheck, OutlierDetection, Queue, Retries};
use crate::rules::acl::{Acl, DiskFiles, PatternFiles, parse_acl};
use crate::rules::action::{
    ConnAction, Rule, parse_connection_rule, parse_content_rule, parse_request_rule,
    parse_response_rule,
};
use crate::rules::lexer::RuleError;
use crate::rules::{IpNet, RequestAction, ResponseAction, SampleExpr};
use crate::yaml::{Node, NodeKind};

pub use crate::route::{BackendTarget, DomainMatch, RouteDef, UseBackend, VirtualHost};

config_struct! {
    /// A whole configuration file.
    pub struct Config {
        pub global: Global,
        pub frontends: NamedMap<Frontend>,
        pub backends: NamedMap<Backend>,
        pub admin: Admin,
        pub vrrp: crate::vrrp::Vrrp,
        pub stick_tables: crate::stick::StickTables,
        pub peers: Option<crate::stick::Peers>,
        /// An xDS control plane that adds frontends and backends (Envoy listeners and
        /// clusters) to the ones written here.
        pub xds: Option<crate::xds::Xds>,
        /// OpenTelemetry: the collector spans are exported to (frontends say which
        /// requests are traced).
        pub tracing: Option<Tracing>,
    }
}

config_struct! {
    /// OpenTelemetry traces: export over OTLP, with a bounded queue that drops rather
    /// than slows requests.
    pub struct Tracing {
        /// The collector, `host:port`.
        pub endpoint: Spanned<String>,
        /// `http` (OTLP/HTTP, protobuf, POST to `path`) or `grpc` (OTLP/gRPC).
        pub protocol: OtlpProtocol = OtlpProtocol::Http,
        /// The URL path of OTLP/HTTP.
        pub path: String = "/v1/traces".to_owned(),
        /// The `service.name` resource attribute of every span.
        pub service_name: String = "rampart".to_owned(),
        /// Spans waiting for export at most; past it new spans are dropped and counted.
        pub max_queue: usize = 8192,
        /// Spans per export request at most.
        pub batch: usize = 2048,
        /// The longest a span waits for a fuller batch.
        pub interval: Duration = Duration::from_secs(1),
        /// Time an export request may take.
        pub timeout: Duration = Duration::from_secs(10),
    }
}

/// How spans reach the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    Http,
    Grpc,
}

impl Decode for OtlpProtocol {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        decode_enum(
            node,
            cx,
            "OTLP protocol",
            &[("http", OtlpProtocol::Http), ("grpc", OtlpProtocol::Grpc)],
        )
    }
}

config_struct! {
    /// Which requests of a frontend are traced.
    pub struct FrontendTracing {
        /// Share of requests traced when the client sent no sampling decision.
        pub sampling: crate::resilience::Percent = crate::resilience::Percent(100.0),
        /// Follow the sampled flag of the client's `traceparent` (Envoy does): a sampled
        /// parent is always traced, an unsampled one never.
        pub respect_parent: bool = true,
    }
}

config_struct! {
    /// The operator's surfaces.
    pub struct Admin {
        /// Runtime API sockets (HAProxy's `stats socket`): one or a list.
        pub socket: Vec<AdminSocket>,
        /// Address of the HTTP listener for the stats page, `/metrics`, `/ready`, `/live`.
        pub http: Option<Spanned<String>>,
        pub stats: Stats,
    }
}

config_struct! {
    /// The HTML stats page.
    pub struct Stats {
        /// Path of the page (`;csv`, `;json`, `;up`, `;no-maint`, `;norefresh` may follow).
        pub uri: String = "/stats".to_owned(),
        /// How often the page reloads itself.
        pub refresh: Duration = Duration::from_secs(5),
        /// Offer the form that sets servers ready, drain or maint (needs `auth`).
        pub admin: bool = false,
        /// Basic authentication for the page and its actions.
        pub auth: Option<StatsAuth>,
    }
}

config_struct! {
    /// A user allowed on the stats page.
    pub struct StatsAuth {
        pub user: String,
        pub password: String,
    }
}

config_struct! {
    /// A runtime API socket: a Unix socket (`path`) or a TCP address on loopback.
    pub struct AdminSocket {
        /// Unix socket path, relative to the configuration file's directory.
        pub path: Option<Spanned<String>>,
        /// TCP address; only loopback addresses are allowed.
        pub address: Option<Spanned<String>>,
        /// File mode of a Unix socket, in octal.
        pub mode: FileMode = FileMode(0o600),
        /// What commands may do: `user` (read), `operator` (also clear counters and
        /// change server weights and states) or `admin` (everything).
        pub level: CliLevel = CliLevel::Admin,
    }
}

/// Permission bits written in octal (`"0660"` or `660`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMode(pub u32);

impl Decode for FileMode {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        cx.parse_scalar(node, "a file mode", |s| {
            u32::from_str_radix(s.trim(), 8)
                .ok()
                .filter(|m| *m <= 0o777)
                .map(FileMode)
                .ok_or_else(|| format!("expected an octal file mode like \"0600\", found {s:?}"))
        })
    }
}

/// A runtime API access level, as HAProxy's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CliLevel {
    User,
    Operator,
    Admin,
}

impl CliLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            CliLevel::User => "user",
            CliLevel::Operator => "operator",
            CliLevel::Admin => "admin",
        }
    }
}

impl Decode for CliLevel {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        cx.parse_scalar(node, "a level", |s| match s {
            "user" => Ok(CliLevel::User),
            "operator" => Ok(CliLevel::Operator),
            "admin" => Ok(CliLevel::Admin),
            _ => Err(format!(
                "unknown level {s:?} (expected user, operator or admin)"
            )),
        })
    }
}

config_struct! {
    /// Process-wide settings.
    pub struct Global {
        /// Worker threads; default: the number of cores.
        pub threads: Option<usize>,
        /// Client connections across all frontends.
        pub max_connections: u32 = 100_000,
        /// How long in-flight requests may take to finish on shutdown.
        pub grace: Duration = Duration::from_secs(10),
        /// After a reload, how long open client connections keep the old configuration
        /// before they are closed gracefully and reconnect to the new one.
        pub reload_grace: Duration = Duration::from_secs(5),
        /// How long a reload may take to read, check and compile the configuration; past
        /// it the caller is told the reload gave up, and the configuration is never applied.
        pub reload_timeout: Duration = Duration::from_secs(10),
        /// Process log verbosity.
        pub log_level: LogLevel = LogLevel::Info,
        /// Where server states changed at run time (admin state, weight, health) are
        /// saved, in HAProxy's `show servers state` format, to be restored at the next start.
        pub state_file: Option<Spanned<String>>,
    }
}

/// Process log verbosity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// Decodes a scalar from a fixed set of words.
fn decode_enum<T: Copy>(node: &Node, cx: &mut Cx, what: &str, table: &[(&str, T)]) -> Option<T> {
    let s = cx.scalar(node, what)?;
    if let Some((_, v)) = table.iter().find(|(k, _)| *k == s) {
        return Some(*v);
    }
    let names: Vec<&str> = table.iter().map(|(k, _)| *k).collect();
    let hint = match crate::error::nearest(s, names.iter().copied()) {
        Some(n) => format!("did you mean {n:?}?"),
        None => format!("expected one of: {}", names.join(", ")),
    };
    cx.error(node.pos, format!("unknown {what} {s:?} ({hint})"));
    None
}

impl Decode for LogLevel {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        use LogLevel::*;
        decode_enum(
            node,
            cx,
            "log level",
            &[
                ("error", Error),
                ("warn", Warn),
                ("info", Info),
                ("debug", Debug),
                ("trace", Trace),
            ],
        )
    }
}

config_struct! {
    /// A frontend: where clients connect, and the rules applied to their requests.
    pub struct Frontend {
        /// `http` (requests are parsed, routed and rewritten) or `tcp` (the connection's
        /// bytes are relayed to a server as they are).
        pub mode: Mode = Mode::Http,
        pub bind: Vec<Bind>,
        pub timeouts: ClientTimeouts,
        /// Client connections on this frontend; default: only the global limit.
        pub max_connections: Option<u32>,
        pub limits: RequestLimits,
        pub http2: Http2,
        pub acls: NamedMap<AclDef>,
        pub tcp_request: TcpRequest,
        pub http_request: Vec<RuleDef<RequestAction>>,
        pub http_response: Vec<RuleDef<ResponseAction>>,
        /// Envoy-style routing by host name, tried before `use_backend`.
        pub virtual_hosts: NamedMap<VirtualHost>,
        /// Choose virtual hosts by the host without its port.
        pub ignore_host_port: bool = false,
        pub use_backend: Vec<UseBackend>,
        pub default_backend: Option<Spanned<String>>,
        pub forwarded: Forwarded,
        pub access_log: Option<AccessLog>,
        /// OpenTelemetry tracing of this frontend's requests (needs the `tracing`
        /// section).
        pub tracing: Option<FrontendTracing>,
        /// Request header names with `_`: `allow`, `drop` or `reject` (400); default:
        /// drop those that fold into a framing or forwarding header (`Content_Length`).
        pub headers_with_underscores: Option<UnderscoreHeaders>,
    }
}

/// What to do with request header names that contain `_`, which some servers and
/// frameworks read as `-` (Envoy's `headers_with_underscores_action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnderscoreHeaders {
    Allow,
    Drop,
    Reject,
}

impl Decode for UnderscoreHeaders {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        decode_enum(
            node,
            cx,
            "action",
            &[
                ("allow", UnderscoreHeaders::Allow),
                ("drop", UnderscoreHeaders::Drop),
                ("reject", UnderscoreHeaders::Reject),
            ],
        )
    }
}

/// How a frontend or backend handles its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Http,
    Tcp,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Http => "http",
            Mode::Tcp => "tcp",
        }
    }
}

impl Decode for Mode {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        decode_enum(
            node,
            cx,
            "mode",
            &[("http", Mode::Http), ("tcp", Mode::Tcp)],
        )
    }
}

config_struct! {
    /// Rules run before HTTP is read.
    pub struct TcpRequest {
        /// Run when a connection is accepted, before TLS: `track-sc0 src`, `reject if ...`.
        pub connection: Vec<RuleDef<ConnAction>>,
        /// Mode tcp: how long to wait for the client's first bytes while a content rule
        /// (or a `use_backend` condition) still needs more of them to decide (0: decide
        /// on what is there at once).
        pub inspect_delay: Duration = Duration::ZERO,
        /// Mode tcp: run on the client's first bytes, after TLS when the bind
        /// terminates it: `accept if { req.ssl_hello_type 1 }`, `reject if ...`.
        pub content: Vec<ContentRule>,
    }
}

/// A `tcp_request.content` rule.
#[derive(Debug, Clone, PartialEq)]
pub struct ContentRule(pub RuleDef<ConnAction>);

impl Decode for ContentRule {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        decode_rule(node, cx, parse_content_rule).map(ContentRule)
    }
}

config_struct! {
    /// Client-side timeouts.
    pub struct ClientTimeouts {
        /// Client inactivity while a request or response is in progress.
        pub client: Duration = Duration::from_secs(60),
        /// Time allowed to receive a complete request head.
        pub http_request: Duration = Duration::from_secs(10),
        /// Idle time allowed between requests on a kept-alive connection.
        pub keep_alive: Duration = Duration::from_secs(60),
        /// Time allowed for a request body, one second more for each
        /// `limits.min_request_body_rate` bytes received (0 turns it off).
        pub request_body: Duration = Duration::from_secs(20),
        /// Time a client may keep its response waiting (stalled, or taking it slowly),
        /// one second more for each `limits.min_response_body_rate` bytes it takes
        /// while the proxy waits for it (0 turns it off).
        pub response_body: Duration = Duration::from_secs(60),
    }
}

config_struct! {
    /// Limits on what a client may send, and how slowly it may read.
    pub struct RequestLimits {
        /// Request line and headers together (431 above this).
        pub max_header_size: Size = Size(64 << 10),
        /// Number of header fields (431 above this).
        pub max_headers: u32 = 100,
        /// Request target length (414 above this).
        pub max_uri_length: Size = Size(8 << 10),
        /// Request body size (413 above this); default: no limit.
        pub max_request_body: Option<Size>,
        /// Bytes per second a request body must keep up after `timeouts.request_body`
        /// (0: the body must be complete within it).
        pub min_request_body_rate: Size = Size(500),
        /// Bytes per second a client must take its response at, once it has kept the
        /// proxy waiting for `timeouts.response_body` (0: the waits must add up to less).
        pub min_response_body_rate: Size = Size(500),
    }
}

config_struct! {
    /// HTTP/2 settings for clients.
    pub struct Http2 {
        /// Accept HTTP/2 (h2c prior knowledge on cleartext, ALPN h2 on TLS).
        pub enabled: bool = true,
        pub max_concurrent_streams: u32 = 100,
    }
}

/// A listening address with optional TLS; written as `":8080"` or as a mapping.
#[derive(Debug, Clone, PartialEq)]
pub struct Bind {
    pub address: Spanned<SocketAddr>,
    pub tls: Option<BindTls>,
    /// For IPv6 addresses: accept IPv6 only (default) or IPv4 too.
    pub v6only: bool,
    pub backlog: u32,
    /// Bind even when the address is not (yet) on this node (IP_FREEBIND). Implied for
    /// the virtual addresses of `vrrp.instances`.
    pub freebind: bool,
    /// Which clients start their connections with a PROXY protocol header.
    pub accept_proxy: AcceptProxy,
}

config_struct! {
    /// A bind written as a mapping.
    pub struct BindDef {
        pub address: Spanned<BindAddress>,
        pub tls: Option<BindTls>,
        pub v6only: bool = true,
        pub backlog: u32 = 1024,
        /// Bind an address this node does not hold yet (IP_FREEBIND); implied for the
        /// virtual addresses of `vrrp.instances`.
        pub freebind: bool = false,
        /// Take the client's address from a PROXY protocol header (v1 or v2) at the start
        /// of each connection: `true` for every client, or `{ from: [networks] }` to
        /// require it from those sources and refuse it from any other.
        pub accept_proxy: AcceptProxy = AcceptProxy::Off,
    }
}

/// Which clients start their connections with a PROXY protocol header.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum AcceptProxy {
    /// No one: a header is not expected (and is not an HTTP request either).
    #[default]
    Off,
    /// Every client.
    All,
    /// Clients from these networks; from any other source a header is refused.
    From(Vec<Spanned<IpNetDef>>),
}

config_struct! {
    /// `accept_proxy` written as a mapping.
    pub struct AcceptProxyDef {
        /// Sources that send a PROXY header (load balancers); from anyone else one is
        /// refused.
        pub from: Vec<Spanned<IpNetDef>>,
    }
}

impl Decode for AcceptProxy {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        if let NodeKind::Map(entries) = &node.kind {
            // An empty list, not one whose entries were all invalid (reported already).
            let written = entries.iter().any(|(k, v)| {
                k.as_str() == Some("from") && matches!(&v.kind, NodeKind::Seq(s) if !s.is_empty())
            });
            let d = AcceptProxyDef::decode(node, cx)?;
            if d.from.is_empty() && !written {
                cx.error(
                    node.pos,
                    "accept_proxy.from needs at least one address or network",
                );
                return None;
            }
            return Some(AcceptProxy::From(d.from));
        }
        Some(if bool::decode(node, cx)? {
            AcceptProxy::All
        } else {
            AcceptProxy::Off
        })
    }
    fn schema() -> Schema {
        AcceptProxyDef::schema()
    }
}

/// A listening address: `ip:port`, `[v6]:port`, `:port` or `*:port` (all IPv4 addresses).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BindAddress(pub SocketAddr);

/// Parses a bind address.
pub fn parse_bind_address(s: &str) -> Result<SocketAddr, String> {
    let bad = || format!("invalid bind address {s:?}: expected ip:port, [ipv6]:port or :port");
    if let Some(port) = s.strip_prefix(':').or_else(|| s.strip_prefix("*:")) {
        let port: u16 = port.parse().map_err(|_| bad())?;
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port));
    }
    if let Some(port) = s.strip_prefix(":::") {
        let port: u16 = port.parse().map_err(|_| bad())?;
        return Ok(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port));
    }
    s.parse().map_err(|_| bad())
}

impl Decode for BindAddress {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        cx.parse_scalar(node, "an address", parse_bind_address)
            .map(BindAddress)
    }
}

impl Decode for Bind {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        if let NodeKind::Scalar { value, .. } = &node.kind {
            let address = match parse_bind_address(value) {
                Ok(a) => a,
                Err(e) => {
                    cx.error(node.pos, e);
                    return None;
                }
            };
            return Some(Bind {
                address: Spanned {
                    value: address,
                    pos: node.pos,
                },
                tls: None,
                v6only: true,
                backlog: 1024,
                freebind: false,
                accept_proxy: AcceptProxy::Off,
            });
        }
        let d = BindDef::decode(node, cx)?;
        Some(Bind {
            address: Spanned {
                value: d.address.value.0,
                pos: d.address.pos,
            },
            tls: d.tls,
            v6only: d.v6only,
            backlog: d.backlog,
            freebind: d.freebind,
            accept_proxy: d.accept_proxy,
        })
    }
    fn schema() -> Schema {
        BindDef::schema()
    }
}

config_struct! {
    /// TLS on a bind.
    pub struct BindTls {
        /// Certificates; the first is the default, the others are chosen by SNI.
        pub certificates: Vec<Certificate>,
        /// ALPN protocols offered, in order of preference; default: `h2` and
        /// `http/1.1` in mode http, none in mode tcp.
        pub alpn: Vec<String> = BindTls::default_alpn(),
        pub min_version: TlsVersion = TlsVersion::Tls12,
        pub max_version: TlsVersion = TlsVersion::Tls13,
        /// Stateless resumption with session tickets.
        pub session_tickets: bool = true,
        /// Stateful resumption: how many sessions to remember (0 turns it off).
        pub session_cache: usize = 1024,
        /// Serve a certificate that has expired (refused otherwise).
        pub allow_expired: bool = false,
        /// Warn at load and reload about a certificate that expires within this time.
        pub expiry_warning: Duration = Duration::from_secs(14 * 86400),
        /// Client certificates: `none` asks for none, `optional` asks and checks one
        /// when it is sent, `required` refuses a client without one (HAProxy's
        /// `verify`).
        pub verify: ClientVerify = ClientVerify::None,
        /// PEM file of the CA certificates client certificates must chain to.
        pub ca: Option<Spanned<String>>,
        /// PEM file of certificate revocation lists checked against client
        /// certificates.
        pub crl: Option<Spanned<String>>,
    }
}

/// Whether a TLS bind asks clients for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientVerify {
    None,
    Optional,
    Required,
}

impl Decode for ClientVerify {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        decode_enum(
            node,
            cx,
            "client certificate verification",
            &[
                ("none", ClientVerify::None),
                ("optional", ClientVerify::Optional),
                ("required", ClientVerify::Required),
            ],
        )
    }
}

config_struct! {
    /// A certificate chain and its private key (PEM files).
    pub struct Certificate {
        /// Certificate chain, leaf first; may also hold the key.
        pub cert: Spanned<String>,
        /// Private key; default: read from the `cert` file.
        pub key: Option<Spanned<String>>,
        /// SNI names this certificate serves; default: the names in the certificate.
        pub names: Vec<String>,
    }
}

impl BindTls {
    /// The ALPN protocols offered by default.
    pub fn default_alpn() -> Vec<String> {
        vec!["h2".to_owned(), "http/1.1".to_owned()]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

impl Decode for TlsVersion {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        decode_enum(
            node,
            cx,
            "TLS version",
            &[("1.2", TlsVersion::Tls12), ("1.3", TlsVersion::Tls13)],
        )
    }
}

config_struct! {
    /// Forwarding headers added to requests sent to backends.
    pub struct Forwarded {
        /// Add the client address to `X-Forwarded-For`.
        pub x_forwarded_for: bool = true,
        /// Set `X-Forwarded-Proto` to `http` or `https`.
        pub x_forwarded_proto: bool = true,
        /// Add an RFC 7239 `Forwarded` element.
        pub forwarded: bool = false,
        /// Peers whose incoming forwarding headers are kept and appended to; from anyone
        /// else they are removed and replaced.
        pub trust: Vec<Spanned<IpNetDef>>,
        /// Keep the forwarding headers of untrusted peers too (`Forwarded`,
        /// `X-Forwarded-*`, `X-Real-IP`): any client can then forge its address.
        pub keep_untrusted: bool = false,
    }
}

/// An address or network in the configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IpNetDef(pub IpNet);

impl Decode for IpNetDef {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        cx.parse_scalar(node, "an address or network", IpNet::parse)
            .map(IpNetDef)
    }
}

config_struct! {
    /// Access log of a frontend.
    pub struct AccessLog {
        /// `stdout`, `stderr`, a file path, or syslog: `syslog` (the local `/dev/log`),
        /// `udp://HOST:PORT` or `unix:///PATH`.
        pub to: String = "stdout".to_owned(),
        /// `httplog`, `tcplog` or `json`; default: the frontend mode's (`httplog` or
        /// `tcplog`).
        pub format: Option<LogFormatKind>,
        /// A custom line in HAProxy's `log-format` syntax, in place of `format`.
        pub log_format: Option<Spanned<String>>,
        /// Syslog: the message layout, `rfc3164` (HAProxy's default) or `rfc5424`.
        pub syslog_format: SyslogFormat = SyslogFormat::Rfc3164,
        /// Syslog: the facility (`local0` ... `local7`, `daemon`, `user`...).
        pub facility: SyslogFacility = SyslogFacility(16),
        /// Syslog: the tag (program name) of each message.
        pub tag: String = "rampart".to_owned(),
        /// Syslog: longer messages are cut to this many bytes (HAProxy's `len`).
        pub max_length: usize = 1024,
    }
}

config_struct! {
    /// Response compression: by the client's `Accept-Encoding`, for the listed content
    /// types, above a size.
    pub struct Compression {
        /// Algorithms, in order of preference: `gzip`, `br`, `zstd`.
        pub algorithms: Vec<CompressionAlgo> = vec![CompressionAlgo::Gzip],
        /// Content types compressed (a type, or a prefix ending in `/`); default: text,
        /// JSON, JavaScript, XML, SVG and the like.
        pub types: Vec<String> = Compression::default_types(),
        /// Responses whose known length is below this are sent as they are.
        pub min_size: crate::decode::Size = crate::decode::Size(256),
        /// Compression level: 1 (fastest) to 9 (gzip), 11 (br), 19 (zstd); a higher
        /// level than an algorithm has is its highest.
        pub level: u32 = 1,
        /// At or above this share of one core's CPU time used by the process (percent,
        /// over the last second), new responses are sent uncompressed (HAProxy's
        /// `maxcompcpuusage`); 100 or more: no limit; 0: never compress.
        pub cpu_limit: u32 = 100,
    }
}

impl Compression {
    pub fn default_types() -> Vec<String> {
        [
            "text/",
            "application/json",
            "application/javascript",
            "application/x-javascript",
            "application/xml",
            "application/xhtml+xml",
            "application/rss+xml",
            "application/atom+xml",
            "application/ld+json",
            "application/manifest+json",
            "application/wasm",
            "image/svg+xml",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    }
}

/// A response compression algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompressionAlgo {
    Gzip,
    Br,
    Zstd,
}

impl CompressionAlgo {
    /// The `Content-Encoding` token.
    pub fn token(self) -> &'static str {
        match self {
            CompressionAlgo::Gzip => "gzip",
            CompressionAlgo::Br => "br",
            CompressionAlgo::Zstd => "zstd",
        }
    }
}

impl Decode for CompressionAlgo {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        decode_enum(
            node,
            cx,
            "compression algorithm",
            &[
                ("gzip", CompressionAlgo::Gzip),
                ("br", CompressionAlgo::Br),
                ("zstd", CompressionAlgo::Zstd),
            ],
        )
    }
}

/// Where an access log goes, from `access_log.to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    Stdout,
    Stderr,
    File(String),
    /// Syslog over UDP: a host (name or address) and port.
    Udp(String),
    /// Syslog over a Unix datagram socket (`syslog` is `/dev/log`).
    Unix(String),
}

impl LogTarget {
    pub fn parse(to: &str) -> Result<Self, String> {
        Ok(match to {
            "stdout" => LogTarget::Stdout,
            "stderr" => LogTarget::Stderr,
            "syslog" => LogTarget::Unix("/dev/log".to_owned()),
            _ => {
                if let Some(hp) = to.strip_prefix("udp://") {
                    let ok = hp.rsplit_once(':').is_some_and(|(h, p)| {
                        !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0)
                    });
                    if !ok {
                        return Err(format!(
                            "{to:?}: syslog over UDP is udp://HOST:PORT, like udp://127.0.0.1:514"
                        ));
                    }
                    LogTarget::Udp(hp.to_owned())
                } else if let Some(p) = to.strip_prefix("unix://") {
                    if !p.starts_with('/') {
                        return Err(format!(
                            "{to:?}: syslog over a Unix socket is unix:///PATH, like unix:///dev/log"
                        ));
                    }
                    LogTarget::Unix(p.to_owned())
                } else if to.contains("://") {
                    return Err(format!(
                        "{to:?}: unknown log target (stdout, stderr, a file, syslog, udp://HOST:PORT or unix:///PATH)"
                    ));
                } else if to.is_empty() {
                    return Err("the log target is empty".to_owned());
                } else {
                    LogTarget::File(to.to_owned())
                }
            }
        })
    }
}

/// A syslog message layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyslogFormat {
    Rfc3164,
    Rfc5424,
}

impl Decode for SyslogFormat {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        decode_enum(
            node,
            cx,
            "syslog format",
            &[
                ("rfc3164", SyslogFormat::Rfc3164),
                ("rfc5424", SyslogFormat::Rfc5424),
            ],
        )
    }
}

/// A syslog facility, by its number (RFC 5424's table, HAProxy's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyslogFacility(pub u8);

/// Facility names, in number order.
pub const SYSLOG_FACILITIES: [&str; 24] = [
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "auth2",
    "ftp", "ntp", "audit", "alert", "cron2", "local0", "local1", "local2", "local3", "local4",
    "local5", "local6", "local7",
];

impl Decode for SyslogFacility {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        cx.parse_scalar(node, "a syslog facility", |s| {
            SYSLOG_FACILITIES
                .iter()
                .position(|f| *f == s)
                .map(|i| SyslogFacility(i as u8))
                .ok_or_else(|| {
                    format!(
                        "unknown syslog facility {s:?} (known: {})",
                        SYSLOG_FACILITIES.join(", ")
                    )
                })
        })
    }
}

/// Access log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormatKind {
    /// HAProxy's `option httplog` layout.
    Httplog,
    /// One JSON object per line.
    Json,
    /// HAProxy's `option tcplog` layout, for mode tcp.
    Tcplog,
}

impl Decode for LogFormatKind {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        decode_enum(
            node,
            cx,
            "log format",
            &[
                ("httplog", LogFormatKind::Httplog),
                ("json", LogFormatKind::Json),
                ("tcplog", LogFormatKind::Tcplog),
            ],
        )
    }
}

/// Where a piece of rule text starts in the file (after an opening quote).
pub(crate) fn text_pos(node: &Node) -> Pos {
    match &node.kind {
        NodeKind::Scalar { quoted: true, .. } => Pos {
            line: node.pos.line,
            col: node.pos.col + 1,
        },
        _ => node.pos,
    }
}

/// The position of a character offset within rule text starting at `start`.
pub fn offset_pos(start: Pos, offset: usize) -> Pos {
    Pos {
        line: start.line,
        col: start.col + offset as u32,
    }
}

pub(crate) fn rule_error(cx: &mut Cx, node: &Node, e: RuleError) {
    cx.error(offset_pos(text_pos(node), e.offset), e.message);
}

pub(crate) fn files_for(cx: &Cx) -> Box<dyn PatternFiles> {
    Box::new(DiskFiles::new(cx.base_dir.clone(), cx.patterns.clone()))
}

/// Decodes a rule's text with `parse`, keeping the text and where it starts.
fn decode_rule<A>(
    node: &Node,
    cx: &mut Cx,
    parse: fn(&str, &dyn PatternFiles) -> Result<Rule<A>, RuleError>,
) -> Option<RuleDef<A>> {
    let text = cx.scalar(node, "a rule")?.to_owned();
    let files = files_for(cx);
    match parse(&text, files.as_ref()) {
        Ok(rule) => Some(RuleDef {
            rule,
            text,
            pos: text_pos(node),
        }),
        Err(e) => {
            rule_error(cx, node, e);
            None
        }
    }
}

/// A rule with its text and position.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleDef<A> {
    pub rule: Rule<A>,
    pub text: String,
    /// Where the text starts.
    pub pos: Pos,
}

impl Decode for RuleDef<RequestAction> {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        decode_rule(node, cx, parse_request_rule)
    }
}

impl Decode for RuleDef<ConnAction> {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        decode_rule(node, cx, parse_connection_rule)
    }
}

impl Decode for RuleDef<ResponseAction> {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        decode_rule(node, cx, parse_response_rule)
    }
}

/// A named ACL: one definition, or a list of them that match if any does.
#[derive(Debug, Clone, PartialEq)]
pub struct AclDef(pub Vec<(Acl, Pos)>);

impl Decode for AclDef {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        let items: Vec<&Node> = match &node.kind {
            NodeKind::Seq(items) => items.iter().collect(),
            _ => vec![node],
        };
        let files = files_for(cx);
        let mut out = Vec::new();
        let mut ok = true;
        for item in items {
            let Some(text) = cx.scalar(item, "an ACL definition") else {
                ok = false;
                continue;
            };
            let parsed = crate::rules::lexer::tokenize(text)
                .and_then(|toks| parse_acl(&toks, text.chars().count(), files.as_ref()));
            match parsed {
                Ok(acl) => out.push((acl, text_pos(item))),
                Err(e) => {
                    rule_error(cx, item, e);
                    ok = false;
                }
            }
        }
        ok.then_some(AclDef(out))
    }
}

config_struct! {
    /// A backend: a group of servers and how requests are spread over them.
    pub struct Backend {
        /// `http` or `tcp`; a backend takes the connections of frontends of its mode.
        pub mode: Mode = Mode::Http,
        pub balance: Balance = Balance::RoundRobin,
        /// What `maglev` hashes; default: the client address.
        pub hash_key: Option<Spanned<SampleDef>>,
        /// Prefix lengths applied to client addresses before `source` hashing, so that
        /// clients of one network share a server (LVS persistence granularity).
        pub source_mask: SourceMask,
        pub servers: NamedMap<Server>,
        /// Protocol spoken to the servers.
        pub proto: Proto = Proto::Http1,
        /// TLS to the servers.
        pub tls: Option<UpstreamTls>,
        pub timeouts: BackendTimeouts,
        pub pool: Pool,
        /// Active health checks of the servers.
        pub health_check: Option<HealthCheck>,
        /// Passive ejection of servers that fail requests.
        pub outlier_detection: Option<OutlierDetection>,
        /// Compression of the servers' responses (HAProxy's `compression`, Envoy's
        /// compressor filter).
        pub compression: Option<Compression>,
        /// Limits; without it, none apply.
        pub circuit_breaker: Option<CircuitBreaker>,
        /// Wait for a free slot (up to a time) instead of an immediate 503.
        pub queue: Option<Queue>,
        pub retries: Option<Retries>,
        pub http_request: Vec<RuleDef<RequestAction>>,
        pub http_response: Vec<RuleDef<ResponseAction>>,
        /// Stick-table persistence: `on src table sessions`, `match ...`, `store-request ...`.
        pub stick: Vec<crate::stick::StickRule>,
        /// Cookie persistence.
        pub cookie: Option<crate::stick::Cookie>,
    }
}

config_struct! {
    /// Prefix lengths for `source` hashing.
    pub struct SourceMask {
        pub ipv4: u8 = 32,
        pub ipv6: u8 = 128,
    }
}

/// A sample expression such as `hdr(x-user)` or `src,ipmask(24)`.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleDef(pub SampleExpr);

impl Decode for SampleDef {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        let files = files_for(cx);
        cx.parse_scalar(node, "a sample fetch", |s| {
            crate::rules::fetch::parse_sample(s, files.as_ref()).map(|(e, _)| e)
        })
        .map(SampleDef)
    }
}

/// Load-balancing algorithm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Balance {
    /// Smooth weighted round robin; weights may change at run time.
    RoundRobin,
    /// Weighted round robin over a fixed schedule.
    StaticRr,
    /// Fewest requests in flight relative to weight.
    LeastConn,
    /// Hash of the client address.
    Source,
    /// Hash of the path.
    Uri,
    /// Hash of a request header; round robin when it is missing.
    Hdr(String),
    /// Power of two random choices, the less loaded wins.
    Random,
    /// Maglev consistent hashing of `hash_key`.
    Maglev,
}

impl Decode for Balance {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        cx.parse_scalar(node, "a balance algorithm", |s| {
            Ok(match s {
                "roundrobin" => Balance::RoundRobin,
                "static-rr" => Balance::StaticRr,
                "leastconn" => Balance::LeastConn,
                "source" => Balance::Source,
                "uri" => Balance::Uri,
                "random" => Balance::Random,
                "maglev" => Balance::Maglev,
                _ => {
                    if let Some(name) = s.strip_prefix("hdr(").and_then(|r| r.strip_suffix(')')) {
                        let h = http::HeaderName::from_bytes(name.as_bytes())
                            .map_err(|_| format!("invalid header name {name:?}"))?;
                        return Ok(Balance::Hdr(h.as_str().to_owned()));
                    }
                    let known = [
                        "roundrobin",
                        "static-rr",
                        "leastconn",
                        "source",
                        "uri",
                        "hdr(name)",
                        "random",
                        "maglev",
                    ];
                    let hint = crate::error::nearest(s, known)
                        .map(|n| format!("did you mean {n:?}?"))
                        .unwrap_or_else(|| format!("expected one of: {}", known.join(", ")));
                    return Err(format!("unknown balance algorithm {s:?} ({hint})"));
                }
            })
        })
    }
}

/// Protocol to the servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Http1,
    /// HTTP/2 (prior knowledge on cleartext, ALPN h2 with TLS), e.g. for gRPC.
    H2,
}

impl Decode for Proto {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        decode_enum(
            node,
            cx,
            "protocol",
            &[
                ("http1", Proto::Http1),
                ("h1", Proto::Http1),
                ("h2", Proto::H2),
            ],
        )
    }
}

config_struct! {
    /// One server.
    pub struct Server {
        /// `host:port`; a host name is resolved when the configuration loads.
        pub address: Spanned<String>,
        /// Relative share of requests, 0 to 256 (0: no new requests).
        pub weight: Spanned<u32> = Spanned { value: 1, pos: Pos::default() },
        /// Used only when no active server is available.
        pub backup: bool = false,
        /// Never used (administratively down).
        pub disabled: bool = false,
        /// Health-check this server (when the backend has checks).
        pub check: bool = true,
        /// This server's own check settings, instead of the backend's.
        pub health_check: Option<HealthCheck>,
        /// Requests in flight to this server at once; more wait in the backend's queue
        /// (with `queue`) or get 503.
        pub max_connections: Option<u32>,
        /// Value of the backend's persistence cookie for this server; default: its name.
        pub cookie: Option<String>,
        /// State declared by the configuration's source, applied at every load (an xDS
        /// control plane's endpoint health): `up`, `drain` or `down`.
        pub status: ServerStatus = ServerStatus::Up,
        /// Start each connection to this server with a PROXY protocol v1 header (the
        /// client's addresses); its health checks send `PROXY UNKNOWN`.
        pub send_proxy: bool = false,
        /// The same with a version 2 header, which also carries the client's ALPN
        /// protocol; its health checks send a `LOCAL` header.
        pub send_proxy_v2: bool = false,
        /// More version 2 fields: `authority` (the server name the client asked for)
        /// and `crc32c` (a checksum of the header).
        pub proxy_v2_options: Vec<ProxyV2Option>,
    }
}

/// An optional field of the PROXY v2 headers sent to a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyV2Option {
    Authority,
    Crc32c,
}

impl Decode for ProxyV2Option {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        decode_enum(
            node,
            cx,
            "PROXY v2 option",
            &[
                ("authority", ProxyV2Option::Authority),
                ("crc32c", ProxyV2Option::Crc32c),
            ],
        )
    }
}

/// A server's state as the configuration declares it (EDS `health_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerStatus {
    /// Takes requests.
    Up,
    /// No new requests; clients stuck to it by persistence stay.
    Drain,
    /// No requests.
    Down,
}

impl Decode for ServerStatus {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        decode_enum(
            node,
            cx,
            "server status",
            &[
                ("up", ServerStatus::Up),
                ("drain", ServerStatus::Drain),
                ("down", ServerStatus::Down),
            ],
        )
    }
}

config_struct! {
    /// TLS to the servers of a backend.
    pub struct UpstreamTls {
        /// Server name sent in SNI and verified; default: the server's host.
        pub sni: Option<String>,
        /// PEM file of trusted CA certificates; default: the bundled public roots.
        pub ca: Option<Spanned<String>>,
        /// Verify the server certificate.
        pub verify: bool = true,
        /// A client certificate chain (PEM) presented to servers that ask for one
        /// (mutual TLS); may also hold the key.
        pub cert: Option<Spanned<String>>,
        /// The client certificate's private key; default: read from the `cert` file.
        pub key: Option<Spanned<String>>,
    }
}

config_struct! {
    /// Server-side timeouts.
    pub struct BackendTimeouts {
        /// Time allowed to establish a connection (and TLS) to a server.
        pub connect: Duration = Duration::from_secs(5),
        /// Server inactivity: waiting for the response head, or between body chunks.
        pub server: Duration = Duration::from_secs(60),
        /// Mode tcp: inactivity in both directions once the connection is relayed,
        /// instead of the client and server timeouts (long-lived connections).
        pub tunnel: Option<Duration>,
    }
}

config_struct! {
    /// Pooling of idle server connections.
    pub struct Pool {
        /// Idle connections kept per server (0 turns reuse off).
        pub max_idle_per_server: usize = 256,
        /// How long an idle connection is kept.
        pub idle_timeout: Duration = Duration::from_secs(60),
    }
}
