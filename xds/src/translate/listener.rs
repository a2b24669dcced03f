//! Listener (with its HTTP connection manager) to a rampart frontend.

use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::listener::v3::{FilterChain, Listener, ListenerFilter};
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
use rampart_config::model;
use rampart_config::rules::{HeaderAction, RequestAction, ResponseAction, Rule};

use super::{Bad, Res, at, bad, defaults, duration, fields, spanned, timeout};
use crate::proto;

/// Where a listener's routes come from.
#[derive(Debug, Clone, PartialEq)]
pub enum RouteSource {
    /// In the listener itself.
    Inline(Box<RouteConfiguration>),
    /// A RouteConfiguration by name over ADS, and how long to wait for it.
    Rds {
        name: String,
        initial_fetch_timeout: Option<Duration>,
    },
    /// No routes: a `tcp_proxy` listener relays connections to its clusters (mode tcp).
    Tcp(TcpRoute),
}

/// Where a `tcp_proxy` listener sends its connections.
#[derive(Debug, Clone, PartialEq)]
pub struct TcpRoute {
    /// The clusters and their weights (`cluster` is one, of weight 1).
    pub clusters: Vec<(String, u32)>,
    /// Inactivity in both directions before the session is closed (`idle_timeout`, 1 h
    /// by default, 0 for none).
    pub idle_timeout: Duration,
    /// Connection attempts, the first included (`max_connect_attempts`, 1 by default).
    pub connect_attempts: u32,
}

/// A checked listener: everything but its routes.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerShape {
    pub name: String,
    /// The frontend without routes.
    pub frontend: model::Frontend,
    pub routes: RouteSource,
    /// The listener's port, for `strip_matching_host_port`.
    pub port: u16,
}

/// Checks a listener and everything in it but its routes (RDS ones arrive on their own;
/// an inline route configuration is checked here too).
pub fn check_listener(l: &Listener) -> Res<ListenerShape> {
    fields(l)?;
    super::name(&l.name, "name")?;
    let (addr, v6only) = socket_address(l.address.as_ref(), "address")?;
    if l.bind_to_port.is_some_and(|b| !b.value) {
        return bad(
            "bind_to_port",
            "listeners that do not bind are not supported by rampart",
        );
    }
    let mut accept_proxy = model::AcceptProxy::Off;
    for (i, lf) in l.listener_filters.iter().enumerate() {
        match lf.name.as_str() {
            "envoy.filters.listener.tls_inspector" | "envoy.filters.listener.http_inspector" => {}
            "envoy.filters.listener.proxy_protocol" => {
                proxy_protocol_filter(lf, &format!("listener_filters[{i}]"))?;
                accept_proxy = model::AcceptProxy::All;
            }
            other => {
                return bad(
                    format!("listener_filters[{i}].name"),
                    format!(
                        "listener filter {other:?} is not supported by rampart (proxy_protocol is; tls_inspector and http_inspector have no effect and are accepted)"
                    ),
                );
            }
        }
    }
    let (chain, chain_path) = match (l.filter_chains.as_slice(), &l.default_filter_chain) {
        ([c], None) => (c, "filter_chains[0]".to_owned()),
        ([], Some(c)) => (c, "default_filter_chain".to_owned()),
        ([], None) => return bad("filter_chains", "a listener needs a filter chain"),
        _ => {
            return bad(
                "filter_chains",
                "rampart serves one filter chain per listener (no filter_chain_match)",
            );
        }
    };
    let bind_tls = match &chain.transport_socket {
        None => None,
        Some(ts) => Some(downstream_tls(ts, &at(&chain_path, "transport_socket"))?),
    };
    let filter = network_filter(chain, &chain_path)?;
    let mut fe: model::Frontend = defaults()?;
    fe.bind = vec![model::Bind {
        address: spanned(addr),
        tls: bind_tls,
        v6only,
        backlog: l.tcp_backlog_size.map_or(1024, |v| v.value.clamp(1, 65535)),
        freebind: l.freebind.is_some_and(|v| v.value),
        accept_proxy,
    }];
    let routes = match filter {
        NetworkFilter::Hcm(hcm, hcm_path) => apply_hcm(&hcm, &hcm_path, addr.port(), &mut fe)?,
        NetworkFilter::Tcp(t, tpath) => {
            let route = tcp_route(&t, &tpath)?;
            fe.mode = model::Mode::Tcp;
            fe.timeouts.client = route.idle_timeout;
            fe.access_log = access_log(&t.access_log, &at(&tpath, "access_log"))?;
            RouteSource::Tcp(route)
        }
    };
    Ok(ListenerShape {
        name: l.name.clone(),
        frontend: fe,
        routes,
        port: addr.port(),
    })
}

/// Envoy's PROXY protocol listener filter: a header is required of every client, as
/// `accept_proxy: true` has it. Its options that rampart has no equivalent for are
/// refused rather than ignored.
fn proxy_protocol_filter(lf: &ListenerFilter, path: &str) -> Res<()> {
    use envoy_types::pb::envoy::config::listener::v3::listener_filter::ConfigType;
    use envoy_types::pb::envoy::extensions::filters::listener::proxy_protocol::v3::ProxyProtocol;
    use prost::Name as _;
    let p = at(path, "typed_config");
    let cfg: ProxyProtocol = match &lf.config_type {
        None => return Ok(()),
        Some(ConfigType::TypedConfig(a)) if a.type_url == ProxyProtocol::type_url() => {
            crate::proto::unpack(a).or_else(|e| bad(&p, e))?
        }
        Some(ConfigType::TypedConfig(a)) => {
            return bad(
                p,
                format!("expected a ProxyProtocol config, found {}", a.type_url),
            );
        }
        Some(_) => return bad(p, "listener filter discovery is not supported by rampart"),
    };
    if cfg.allow_requests_without_proxy_protocol {
        return bad(
            at(&p, "allow_requests_without_proxy_protocol"),
            "rampart requires the PROXY header of every client of a listener that takes it",
        );
    }
    if !cfg.rules.is_empty() || cfg.pass_through_tlvs.is_some() {
        return bad(
            at(&p, "rules"),
            "TLVs as dynamic metadata are not supported by rampart",
        );
    }
    if !cfg.disallowed_versions.is_empty() {
        return bad(
            at(&p, "disallowed_versions"),
            "rampart takes both PROXY protocol versions",
        );
    }
    Ok(())
}

/// The frontend of a checked listener, with its routes from `routes` (`None`: not
/// arrived, so every request gets 404 as in Envoy).
pub fn frontend(
    shape: &ListenerShape,
    routes: Option<&RouteConfiguration>,
    known: &super::Known<'_>,
) -> model::Frontend {
    let mut fe = shape.frontend.clone();
    let rc = match &shape.routes {
        RouteSource::Inline(rc) => Some(&**rc),
        RouteSource::Rds { .. } => routes,
        RouteSource::Tcp(_) => None,
    };
    if let RouteSource::Tcp(route) = &shape.routes {
        // The backends are named once every listener is known (`tcp_backends`): the
        // clusters for now, those that exist only.
        let known: Vec<&str> = route
            .clusters
            .iter()
            .map(|(c, _)| c.as_str())
            .filter(|c| (known.cluster)(c))
            .collect();
        fe.use_backend = known
            .iter()
            .take(1)
            .map(|c| model::UseBackend::to(c))
            .collect();
        return fe;
    }
    if let Some(rc) = rc {
        // Checked on arrival; a failure here would be a bug, and leaves the routes empty.
        match super::virtual_hosts(rc, known) {
            Ok((vhosts, leading)) => {
                fe.virtual_hosts = vhosts;
                fe.http_request.extend(leading);
                fe.ignore_host_port = rc.ignore_port_in_host_matching;
            }
            Err(e) => tracing::error!(listener = %shape.name, "routes: {e}"),
        }
    }
    // No virtual host, or no route in it: 404, as Envoy answers (NR).
    let mut not_found = model::UseBackend::to("");
    not_found.target = model::BackendTarget::None;
    not_found.http_request = vec![super::route::reply_rule(404, None)];
    fe.use_backend = vec![not_found];
    fe
}

/// An address a listener binds: an IP and a port (no names, no pipes).
fn socket_address(a: Option<&core::Address>, path: &str) -> Res<(std::net::SocketAddr, bool)> {
    use core::address::Address as A;
    let Some(A::SocketAddress(sa)) = a.and_then(|a| a.address.as_ref()) else {
        return bad(
            path,
            "a listener needs a socket address (pipes and internal addresses are not supported)",
        );
    };
    let path = at(path, "socket_address");
    if sa.protocol != core::socket_address::Protocol::Tcp as i32 {
        return bad(at(&path, "protocol"), "only TCP listeners are supported");
    }
    let port = match &sa.port_specifier {
        Some(core::socket_address::PortSpecifier::PortValue(p)) => *p,
        _ => return bad(at(&path, "port_value"), "a listener needs port_value"),
    };
    let port = u16::try_from(port).or_else(|_| {
        bad(
            at(&path, "port_value"),
            format!("port {port} is out of range (0-65535)"),
        )
    })?;
    let ip: std::net::IpAddr = sa.address.parse().or_else(|_| {
        bad(
            at(&path, "address"),
            format!("{:?} is not an IP address", sa.address),
        )
    })?;
    Ok((std::net::SocketAddr::new(ip, port), !sa.ipv4_compat))
}

/// The chain's one network filter: the HTTP connection manager, or `tcp_proxy`.
enum NetworkFilter {
    Hcm(Box<hcm::HttpConnectionManager>, String),
    Tcp(Box<TcpProxy>, String),
}

fn network_filter(chain: &FilterChain, path: &str) -> Res<NetworkFilter> {
    use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
    let [filter] = chain.filters.as_slice() else {
        return bad(
            at(path, "filters"),
            "rampart needs exactly one network filter: the HTTP connection manager or tcp_proxy",
        );
    };
    let fpath = at(path, "filters[0].typed_config");
    match &filter.config_type {
        Some(ConfigType::TypedConfig(any)) if any.type_url == proto::HCM => {
            let h = proto::unpack(any).or_else(|e| bad(&fpath, e))?;
            Ok(NetworkFilter::Hcm(Box::new(h), fpath))
        }
        Some(ConfigType::TypedConfig(any)) if any.type_url == proto::TCP_PROXY => {
            let t = proto::unpack(any).or_else(|e| bad(&fpath, e))?;
            Ok(NetworkFilter::Tcp(Box::new(t), fpath))
        }
        Some(ConfigType::TypedConfig(any)) => bad(
            fpath,
            format!(
                "network filter {} ({}) is not supported by rampart (the HTTP connection manager and tcp_proxy are)",
                filter.name, any.type_url
            ),
        ),
        _ => bad(fpath, "the network filter needs a typed_config"),
    }
}

/// A `tcp_proxy`'s clusters, idle timeout and connection attempts.
fn tcp_route(t: &TcpProxy, path: &str) -> Res<TcpRoute> {
    use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::tcp_proxy::ClusterSpecifier;
    let clusters = match &t.cluster_specifier {
        Some(ClusterSpecifier::Cluster(c)) => {
            super::name(c, &at(path, "cluster"))?;
            vec![(c.clone(), 1)]
        }
        Some(ClusterSpecifier::WeightedClusters(w)) => {
            let p = at(path, "weighted_clusters.clusters");
            if w.clusters.is_empty() {
                return bad(p, "weighted_clusters needs at least one cluster");
            }
            let mut out = Vec::new();
            for (i, c) in w.clusters.iter().enumerate() {
                super::name(&c.name, &format!("{p}[{i}].name"))?;
                if c.weight == 0 || c.weight > 1_000_000 {
                    return bad(
                        format!("{p}[{i}].weight"),
                        format!("a weight is 1 to 1000000, found {}", c.weight),
                    );
                }
                out.push((c.name.clone(), c.weight));
            }
            out
        }
        None => return bad(path, "tcp_proxy needs cluster or weighted_clusters"),
    };
    let idle_timeout = timeout(t.idle_timeout.as_ref(), &at(path, "idle_timeout"))?
        .unwrap_or(Some(Duration::from_secs(3600)))
        .unwrap_or(super::NO_TIMEOUT);
    let connect_attempts = match t.max_connect_attempts {
        None => 1,
        Some(n) if n.value >= 1 && n.value <= 10 => n.value,
        Some(n) => {
            return bad(
                at(path, "max_connect_attempts"),
                format!("max_connect_attempts is 1 to 10, found {}", n.value),
            );
        }
    };
    Ok(TcpRoute {
        clusters,
        idle_timeout,
        connect_attempts,
    })
}

/// Gives the clusters `tcp_proxy` listeners use backends in mode tcp: a cluster only they
/// use turns mode tcp; one that HTTP routes use too gets a mode tcp twin named
/// `<cluster>~tcp`, which the listeners then use. Each such backend takes the longest
/// idle timeout (as `timeouts.tunnel`) and the most connection attempts of its listeners.
pub fn tcp_backends(cfg: &mut model::Config, tcp: &[(String, TcpRoute)]) {
    use std::collections::HashSet;
    let mut http_used: HashSet<String> = HashSet::new();
    for (_, f) in cfg.frontends.iter() {
        if f.mode != model::Mode::Http {
            continue;
        }
        if let Some(d) = &f.default_backend {
            http_used.insert(d.value.clone());
        }
        let routes = f
            .use_backend
            .iter()
            .chain(f.virtual_hosts.iter().flat_map(|(_, v)| v.routes.iter()));
        for r in routes {
            match &r.target {
                model::BackendTarget::One(b) => {
                    http_used.insert(b.value.clone());
                }
                model::BackendTarget::Split(parts) => {
                    http_used.extend(parts.iter().map(|(b, _)| b.value.clone()));
                }
                _ => {}
            }
        }
    }
    for (fe_name, route) in tcp {
        let mut parts = Vec::new();
        for (cluster, weight) in &route.clusters {
            let Some(be) = cfg.backends.get(cluster).cloned() else {
                continue;
            };
            let name = if http_used.contains(cluster) {
                format!("{cluster}~tcp")
            } else {
                cluster.clone()
            };
            let mut b = cfg.backends.get(&name).cloned().unwrap_or(be);
            let fresh = b.mode != model::Mode::Tcp;
            b.mode = model::Mode::Tcp;
            b.proto = model::Proto::Http1;
            b.timeouts.tunnel = Some(match b.timeouts.tunnel {
                Some(t) if !fresh => t.max(route.idle_timeout),
                _ => route.idle_timeout,
            });
            let attempts = route.connect_attempts.saturating_sub(1);
            let more = b
                .retries
                .as_ref()
                .is_none_or(|r| fresh || r.attempts < attempts);
            if attempts > 0 && more {
                if let Ok(mut r) = defaults::<rampart_config::resilience::Retries>() {
                    r.attempts = attempts;
                    r.on = vec![spanned(rampart_config::resilience::RetryOn::ConnectFailure)];
                    b.retries = Some(r);
                }
            } else if fresh {
                b.retries = None;
            }
            match cfg.backends.get_mut(&name) {
                Some(slot) => *slot = b,
                None => cfg.backends.push(spanned(name.clone()), b),
            }
            parts.push((spanned(name), *weight));
        }
        let Some(f) = cfg.frontends.get_mut(fe_name) else {
            continue;
        };
        f.use_backend = match parts.len() {
            0 => Vec::new(),
            1 => vec![model::UseBackend::to(&parts[0].0.value)],
            _ => {
                let mut u = model::UseBackend::to("");
                u.target = model::BackendTarget::Split(parts);
                vec![u]
            }
        };
    }
}

/// Applies the connection manager's settings to `fe`; returns where the routes come from.
fn apply_hcm(
    h: &hcm::HttpConnectionManager,
    path: &str,
    port: u16,
    fe: &mut model::Frontend,
) -> Res<RouteSource> {
    use hcm::http_connection_manager::{CodecType, RouteSpecifier, StripPortMode};
    match CodecType::try_from(h.codec_type) {
        Ok(CodecType::Auto | CodecType::Http2) => fe.http2.enabled = true,
        Ok(CodecType::Http1) => fe.http2.enabled = false,
        _ => {
            return bad(
                at(path, "codec_type"),
                "only AUTO, HTTP1 and HTTP2 are supported",
            );
        }
    }
    http_filters(&h.http_filters, &at(path, "http_filters"))?;
    if h.normalize_path.is_some_and(|b| b.value) || h.merge_slashes {
        return bad(
            at(
                path,
                if h.merge_slashes {
                    "merge_slashes"
                } else {
                    "normalize_path"
                },
            ),
            "path normalization is not supported by rampart",
        );
    }
    // Timeouts: Envoy's defaults where rampart's differ (stream idle 5 min, idle 1 h).
    fe.timeouts.client = timeout(
        h.stream_idle_timeout.as_ref(),
        &at(path, "stream_idle_timeout"),
    )?
    .unwrap_or(Some(Duration::from_secs(300)))
    .unwrap_or(super::NO_TIMEOUT);
    if let Some(t) = timeout(
        h.request_headers_timeout.as_ref(),
        &at(path, "request_headers_timeout"),
    )? {
        fe.timeouts.http_request = t.unwrap_or(super::NO_TIMEOUT);
    }
    fe.timeouts.keep_alive = Duration::from_secs(3600);
    if let Some(o) = &h.common_http_protocol_options {
        let p = at(path, "common_http_protocol_options");
        if let Some(t) = timeout(o.idle_timeout.as_ref(), &at(&p, "idle_timeout"))? {
            fe.timeouts.keep_alive = t.unwrap_or(super::NO_TIMEOUT);
        }
        if let Some(n) = o.max_headers_count {
            fe.limits.max_headers = n.value.max(1);
        }
    }
    fe.limits.max_header_size = rampart_config::Size(
        u64::from(
            h.max_request_headers_kb
                .map_or(60, |v| v.value)
                .clamp(1, 8192),
        ) << 10,
    );
    if let Some(n) = h
        .http2_protocol_options
        .as_ref()
        .and_then(|o| o.max_concurrent_streams)
    {
        fe.http2.max_concurrent_streams = n.value.clamp(1, 1 << 20);
    }
    // Forwarding headers: without use_remote_address Envoy passes X-Forwarded-For on and
    // trusts X-Forwarded-Proto; with it, it appends the client address.
    fe.forwarded.forwarded = false;
    fe.forwarded.x_forwarded_proto = true;
    fe.forwarded.x_forwarded_for =
        h.use_remote_address.is_some_and(|b| b.value) && !h.skip_xff_append;
    fe.forwarded.trust = vec![
        spanned(model::IpNetDef(rampart_config::rules::IpNet {
            addr: std::net::Ipv4Addr::UNSPECIFIED.into(),
            prefix: 0,
        })),
        spanned(model::IpNetDef(rampart_config::rules::IpNet {
            addr: std::net::Ipv6Addr::UNSPECIFIED.into(),
            prefix: 0,
        })),
    ];
    // Host port stripping, as rules run before routing.
    let strip = match (&h.strip_port_mode, h.strip_matching_host_port) {
        (Some(StripPortMode::StripAnyHostPort(true)), _) => Some("[0-9]+".to_owned()),
        (_, true) => Some(port.to_string()),
        _ => None,
    };
    if let Some(p) = strip {
        fe.http_request
            .push(rule(RequestAction::Header(HeaderAction::Replace {
                name: "host".to_owned(),
                regex: format!("^(.+):{p}$"),
                replacement: super::literal("\\1"),
            })));
    }
    if !h.via.is_empty() {
        super::name(&h.via, &at(path, "via"))?;
        fe.http_request
            .push(rule(RequestAction::Header(HeaderAction::Add {
                name: "via".to_owned(),
                value: super::literal(&h.via),
            })));
        fe.http_response.push(model::RuleDef {
            rule: Rule {
                action: ResponseAction::Header(HeaderAction::Add {
                    name: "via".to_owned(),
                    value: super::literal(&h.via),
                }),
                cond: None,
            },
            text: format!("add-header via {}", h.via),
            pos: Default::default(),
        });
    }
    fe.access_log = access_log(&h.access_log, &at(path, "access_log"))?;
    match &h.route_specifier {
        Some(RouteSpecifier::RouteConfig(rc)) => {
            super::check_routes(rc).map_err(|b| Bad {
                path: at(&at(path, "route_config"), &b.path),
                message: b.message,
            })?;
            Ok(RouteSource::Inline(Box::new(rc.clone())))
        }
        Some(RouteSpecifier::Rds(r)) => {
            let p = at(path, "rds");
            if r.route_config_name.is_empty() {
                return bad(
                    at(&p, "route_config_name"),
                    "an RDS route_config_name is needed",
                );
            }
            let initial_fetch_timeout =
                config_source(r.config_source.as_ref(), &at(&p, "config_source"))?;
            Ok(RouteSource::Rds {
                name: r.route_config_name.clone(),
                initial_fetch_timeout,
            })
        }
        _ => bad(path, "the connection manager needs route_config or rds"),
    }
}

/// A config source for RDS or EDS: only ADS; returns its `initial_fetch_timeout`.
pub fn config_source(c: Option<&core::ConfigSource>, path: &str) -> Res<Option<Duration>> {
    use core::config_source::ConfigSourceSpecifier as S;
    let Some(c) = c else {
        return bad(path, "a config source is needed (ads: {})");
    };
    match &c.config_source_specifier {
        Some(S::Ads(_)) => {}
        _ => {
            return bad(
                path,
                "only ADS config sources (ads: {}) are supported by rampart",
            );
        }
    }
    match &c.initial_fetch_timeout {
        None => Ok(None),
        Some(d) => duration(d, &at(path, "initial_fetch_timeout")).map(Some),
    }
}

/// HTTP filters: the router last; optional or disabled filters before it are skipped;
/// any other is an error.
fn http_filters(filters: &[hcm::HttpFilter], path: &str) -> Res<()> {
    use hcm::http_filter::ConfigType;
    let is_router = |f: &hcm::HttpFilter| match &f.config_type {
        Some(ConfigType::TypedConfig(a)) => a.type_url == proto::ROUTER,
        None => f.name == "envoy.filters.http.router",
        _ => false,
    };
    let Some(last) = filters.last() else {
        return bad(path, "the HTTP filters must end with the router");
    };
    if !is_router(last) {
        return bad(
            format!("{path}[{}]", filters.len() - 1),
            "the HTTP filters must end with envoy.filters.http.router",
        );
    }
    for (i, f) in filters[..filters.len() - 1].iter().enumerate() {
        if f.is_optional || f.disabled {
            continue;
        }
        let what = match &f.config_type {
            Some(ConfigType::TypedConfig(a)) => format!("{} ({})", f.name, a.type_url),
            _ => f.name.clone(),
        };
        return bad(
            format!("{path}[{i}]"),
            format!(
                "HTTP filter {what} is not supported by rampart (mark it is_optional to skip it)"
            ),
        );
    }
    Ok(())
}

/// The connection manager's access log: a file, stdout or stderr, in rampart's httplog
/// layout.
fn access_log(
    logs: &[envoy_types::pb::envoy::config::accesslog::v3::AccessLog],
    path: &str,
) -> Res<Option<model::AccessLog>> {
    use envoy_types::pb::envoy::config::accesslog::v3::access_log::ConfigType;
    use envoy_types::pb::envoy::extensions::access_loggers::file::v3::FileAccessLog;
    let log = match logs {
        [] => return Ok(None),
        [one] => one,
        _ => return bad(path, "rampart writes one access log per frontend"),
    };
    let p = format!("{path}[0].typed_config");
    let to = match &log.config_type {
        Some(ConfigType::TypedConfig(a)) if a.type_url == proto::FILE_ACCESS_LOG => {
            let f: FileAccessLog = proto::unpack(a).or_else(|e| bad(&p, e))?;
            if f.access_log_format.is_some() {
                return bad(
                    at(&p, "format"),
                    "access log formats are not supported: rampart writes HAProxy's httplog layout",
                );
            }
            f.path
        }
        Some(ConfigType::TypedConfig(a)) if a.type_url == proto::STDOUT_ACCESS_LOG => {
            access_log_format(a, &p)?;
            "stdout".to_owned()
        }
        Some(ConfigType::TypedConfig(a)) if a.type_url == proto::STDERR_ACCESS_LOG => {
            access_log_format(a, &p)?;
            "stderr".to_owned()
        }
        Some(ConfigType::TypedConfig(a)) => {
            return bad(
                p,
                format!("access logger {} is not supported by rampart", a.type_url),
            );
        }
        None => return bad(p, "an access log needs a typed_config"),
    };
    let mut l: model::AccessLog = defaults()?;
    l.to = to;
    Ok(Some(l))
}

fn access_log_format(a: &proto::Any, path: &str) -> Res<()> {
    use envoy_types::pb::envoy::extensions::access_loggers::stream::v3::StdoutAccessLog;
    // Stdout and stderr loggers share their layout: one optional format.
    let s: StdoutAccessLog = prost::Message::decode(a.value.as_slice())
        .or_else(|e| bad(path, format!("invalid access logger: {e}")))?;
    if s.access_log_format.is_some() {
        return bad(
            at(path, "log_format"),
            "access log formats are not supported: rampart writes HAProxy's httplog layout",
        );
    }
    Ok(())
}

/// TLS on a listener: certificates (files or inline PEM), ALPN, versions, resumption.
fn downstream_tls(ts: &core::TransportSocket, path: &str) -> Res<model::BindTls> {
    let (ctx, p): (tls::DownstreamTlsContext, String) = super::tls_context(ts, path)?;
    if ctx.require_client_certificate.is_some_and(|b| b.value) {
        return bad(
            at(&p, "require_client_certificate"),
            "client certificates are not supported by rampart yet",
        );
    }
    let mut t: model::BindTls = defaults()?;
    let common = ctx.common_tls_context.unwrap_or_default();
    let cp = at(&p, "common_tls_context");
    if common.validation_context_type.is_some() {
        return bad(
            at(&cp, "validation_context"),
            "client certificate validation is not supported by rampart yet",
        );
    }
    if common.tls_certificates.is_empty() {
        return bad(
            at(&cp, "tls_certificates"),
            "a TLS listener needs a certificate",
        );
    }
    for (i, c) in common.tls_certificates.iter().enumerate() {
        let cpath = format!("{cp}.tls_certificates[{i}]");
        let chain = c
            .certificate_chain
            .as_ref()
            .map(|d| super::data_source(d, &at(&cpath, "certificate_chain")))
            .transpose()?
            .ok_or_else(|| Bad {
                path: at(&cpath, "certificate_chain"),
                message: "a certificate chain is needed".to_owned(),
            })?
            .pem(&at(&cpath, "certificate_chain"))?;
        let key = c
            .private_key
            .as_ref()
            .map(|d| super::data_source(d, &at(&cpath, "private_key")))
            .transpose()?
            .map(|k| k.pem(&at(&cpath, "private_key")))
            .transpose()?;
        t.certificates.push(model::Certificate {
            cert: spanned(chain),
            key: key.map(spanned),
            names: Vec::new(),
        });
    }
    // Envoy offers no ALPN unless told to.
    t.alpn = common.alpn_protocols.clone();
    for (i, a) in t.alpn.iter().enumerate() {
        if a != "h2" && a != "http/1.1" {
            return bad(
                format!("{cp}.alpn_protocols[{i}]"),
                format!("ALPN protocol {a:?} is not supported (h2, http/1.1)"),
            );
        }
    }
    if let Some(params) = &common.tls_params {
        tls_versions(
            params,
            &at(&cp, "tls_params"),
            &mut t.min_version,
            &mut t.max_version,
        )?;
    }
    use tls::downstream_tls_context::SessionTicketKeysType;
    if matches!(
        ctx.session_ticket_keys_type,
        Some(SessionTicketKeysType::DisableStatelessSessionResumption(
            true
        ))
    ) {
        t.session_tickets = false;
    } else if ctx.session_ticket_keys_type.is_some() {
        return bad(
            at(&p, "session_ticket_keys"),
            "session ticket keys are not supported by rampart",
        );
    }
    if ctx.disable_stateful_session_resumption {
        t.session_cache = 0;
    }
    Ok(t)
}

/// TLS versions: 1.2 and 1.3 only.
pub(crate) fn tls_versions(
    p: &tls::TlsParameters,
    path: &str,
    min: &mut model::TlsVersion,
    max: &mut model::TlsVersion,
) -> Res<()> {
    use tls::tls_parameters::TlsProtocol;
    let v = |n: i32, key: &str, auto: model::TlsVersion| -> Res<model::TlsVersion> {
        match TlsProtocol::try_from(n) {
            Ok(TlsProtocol::TlsAuto) => Ok(auto),
            Ok(TlsProtocol::TlSv12) => Ok(model::TlsVersion::Tls12),
            Ok(TlsProtocol::TlSv13) => Ok(model::TlsVersion::Tls13),
            _ => bad(at(path, key), "rampart supports TLS 1.2 and 1.3"),
        }
    };
    *min = v(
        p.tls_minimum_protocol_version,
        "tls_minimum_protocol_version",
        model::TlsVersion::Tls12,
    )?;
    *max = v(
        p.tls_maximum_protocol_version,
        "tls_maximum_protocol_version",
        model::TlsVersion::Tls13,
    )?;
    if !p.cipher_suites.is_empty()
        || !p.ecdh_curves.is_empty()
        || !p.signature_algorithms.is_empty()
    {
        return bad(
            path,
            "cipher suites, curves and signature algorithms are rampart's own (rustls defaults)",
        );
    }
    if *min > *max {
        return bad(path, "the minimum TLS version is above the maximum");
    }
    Ok(())
}

/// A request rule without a condition.
pub(crate) fn rule(action: RequestAction) -> model::RuleDef<RequestAction> {
    model::RuleDef {
        text: describe(&action),
        rule: Rule { action, cond: None },
        pos: Default::default(),
    }
}

/// A short text for a translated rule (shown where rules are listed).
pub(crate) fn describe(a: &RequestAction) -> String {
    match a {
        RequestAction::Header(HeaderAction::Set { name, .. }) => format!("set-header {name}"),
        RequestAction::Header(HeaderAction::Add { name, .. }) => format!("add-header {name}"),
        RequestAction::Header(HeaderAction::Del { name, .. }) => format!("del-header {name}"),
        RequestAction::Header(HeaderAction::Replace { name, regex, .. }) => {
            format!("replace-header {name} {regex}")
        }
        RequestAction::ReplacePath { regex, .. } => format!("replace-path {regex}"),
        RequestAction::Return(r) => format!("return status {}", r.status),
        RequestAction::Redirect(r) => format!("redirect code {}", r.code),
        _ => "rule".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::listener::v3::Filter;
    use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;

    pub(crate) fn hcm_listener(name: &str, port: u32, h: hcm::HttpConnectionManager) -> Listener {
        Listener {
            name: name.into(),
            address: Some(core::Address {
                address: Some(core::address::Address::SocketAddress(core::SocketAddress {
                    address: "127.0.0.1".into(),
                    port_specifier: Some(core::socket_address::PortSpecifier::PortValue(port)),
                    ..Default::default()
                })),
            }),
            filter_chains: vec![FilterChain {
                filters: vec![Filter {
                    name: "envoy.filters.network.http_connection_manager".into(),
                    config_type: Some(ConfigType::TypedConfig(envoy_types::util::pack_any(h))),
                }],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn router() -> hcm::HttpFilter {
        hcm::HttpFilter {
            name: "envoy.filters.http.router".into(),
            config_type: Some(hcm::http_filter::ConfigType::TypedConfig(
                envoy_types::util::pack_any(
                    envoy_types::pb::envoy::extensions::filters::http::router::v3::Router::default(
                    ),
                ),
            )),
            ..Default::default()
        }
    }

    fn rds_hcm(name: &str) -> hcm::HttpConnectionManager {
        hcm::HttpConnectionManager {
            stat_prefix: "ingress".into(),
            http_filters: vec![router()],
            route_specifier: Some(hcm::http_connection_manager::RouteSpecifier::Rds(
                hcm::Rds {
                    route_config_name: name.into(),
                    config_source: Some(core::ConfigSource {
                        config_source_specifier: Some(
                            core::config_source::ConfigSourceSpecifier::Ads(Default::default()),
                        ),
                        ..Default::default()
                    }),
                },
            )),
            ..Default::default()
        }
    }

    #[test]
    fn check_listener_reads_address_and_rds_name() {
        let s = check_listener(&hcm_listener("l1", 8080, rds_hcm("r1"))).unwrap();
        assert_eq!(
            s.frontend.bind[0].address.value.to_string(),
            "127.0.0.1:8080"
        );
        assert_eq!(
            s.routes,
            RouteSource::Rds {
                name: "r1".into(),
                initial_fetch_timeout: None
            }
        );
        assert_eq!(s.frontend.timeouts.client, Duration::from_secs(300));
    }

    #[test]
    fn proxy_protocol_listener_filter_requires_the_header() {
        use envoy_types::pb::envoy::config::listener::v3::listener_filter::ConfigType as Lf;
        use envoy_types::pb::envoy::extensions::filters::listener::proxy_protocol::v3::ProxyProtocol;
        let filter = |cfg: Option<ProxyProtocol>| ListenerFilter {
            name: "envoy.filters.listener.proxy_protocol".into(),
            config_type: cfg.map(|c| Lf::TypedConfig(envoy_types::util::pack_any(c))),
            ..Default::default()
        };
        let mut l = hcm_listener("l", 80, rds_hcm("r"));
        let s = check_listener(&l).unwrap();
        assert_eq!(s.frontend.bind[0].accept_proxy, model::AcceptProxy::Off);
        for cfg in [None, Some(ProxyProtocol::default())] {
            l.listener_filters = vec![filter(cfg)];
            let s = check_listener(&l).unwrap();
            assert_eq!(s.frontend.bind[0].accept_proxy, model::AcceptProxy::All);
        }
        l.listener_filters = vec![filter(Some(ProxyProtocol {
            allow_requests_without_proxy_protocol: true,
            ..Default::default()
        }))];
        let e = check_listener(&l).unwrap_err();
        assert!(
            e.path.ends_with("allow_requests_without_proxy_protocol"),
            "{e}"
        );
    }

    #[test]
    fn check_listener_refuses_bad_ports_and_addresses() {
        let e = check_listener(&hcm_listener("l1", 70000, rds_hcm("r1"))).unwrap_err();
        assert_eq!(e.path, "address.socket_address.port_value");
        assert!(e.message.contains("70000"), "{e}");
        let mut l = hcm_listener("l1", 80, rds_hcm("r1"));
        if let Some(core::address::Address::SocketAddress(sa)) =
            l.address.as_mut().and_then(|a| a.address.as_mut())
        {
            sa.address = "not-an-ip".into();
        }
        let e = check_listener(&l).unwrap_err();
        assert_eq!(e.path, "address.socket_address.address");
    }

    #[test]
    fn check_listener_refuses_unknown_required_http_filters_and_skips_optional_ones() {
        let mut h = rds_hcm("r");
        let mut cors = hcm::HttpFilter {
            name: "envoy.filters.http.cors".into(),
            ..Default::default()
        };
        h.http_filters.insert(0, cors.clone());
        let e = check_listener(&hcm_listener("l", 80, h.clone())).unwrap_err();
        assert!(e.path.ends_with("http_filters[0]"), "{e}");
        cors.is_optional = true;
        h.http_filters[0] = cors;
        check_listener(&hcm_listener("l", 80, h)).unwrap();
    }

    #[test]
    fn check_listener_names_unsupported_fields() {
        let mut h = rds_hcm("r");
        h.tracing = Some(Default::default());
        let e = check_listener(&hcm_listener("l", 80, h)).unwrap_err();
        assert_eq!(e.path, "filter_chains[0].filters[0].typed_config.tracing");
    }
}
