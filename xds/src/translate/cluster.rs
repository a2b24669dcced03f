//! Cluster and ClusterLoadAssignment to a rampart backend and its servers.

use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3 as cl;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::endpoint::v3 as ep;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
use envoy_types::pb::envoy::extensions::upstreams::http::v3 as up;
use rampart_config::NamedMap;
use rampart_config::model::{self, Balance, Proto, ServerStatus};
use rampart_config::resilience::{
    CircuitBreaker, FailurePercentage, GrpcCheck, HealthCheck, HttpCheck, OutlierDetection,
    Percent, StatusSet, TcpCheck,
};

use super::{Bad, Res, at, bad, defaults, duration, fields, spanned};
use crate::proto;

/// A checked cluster: its backend without servers, and where the servers come from.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterShape {
    pub name: String,
    pub backend: model::Backend,
    pub endpoints: Endpoints,
}

/// Where a cluster's servers come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Endpoints {
    /// In the cluster (STATIC, STRICT_DNS, LOGICAL_DNS).
    Inline(Box<ep::ClusterLoadAssignment>),
    /// A ClusterLoadAssignment over ADS, by service name, and how long to wait for it.
    Eds {
        service: String,
        initial_fetch_timeout: Option<Duration>,
    },
}

impl ClusterShape {
    /// The EDS resource name this cluster needs, if any.
    pub fn eds_name(&self) -> Option<&str> {
        match &self.endpoints {
            Endpoints::Eds { service, .. } => Some(service),
            Endpoints::Inline(_) => None,
        }
    }
}

/// Checks a cluster.
pub fn check_cluster(c: &cl::Cluster) -> Res<ClusterShape> {
    use cl::cluster::{ClusterDiscoveryType, DiscoveryType};
    fields(c)?;
    super::name(&c.name, "name")?;
    let mut b: model::Backend = defaults()?;
    let kind = match &c.cluster_discovery_type {
        None => DiscoveryType::Static,
        Some(ClusterDiscoveryType::Type(t)) => {
            DiscoveryType::try_from(*t).or_else(|_| bad("type", "unknown cluster type"))?
        }
        Some(ClusterDiscoveryType::ClusterType(_)) => {
            return bad(
                "cluster_type",
                "custom cluster types are not supported by rampart",
            );
        }
    };
    let endpoints = match kind {
        DiscoveryType::Eds => {
            let e = c.eds_cluster_config.clone().unwrap_or_default();
            let initial_fetch_timeout = super::listener::config_source(
                e.eds_config.as_ref(),
                "eds_cluster_config.eds_config",
            )?;
            Endpoints::Eds {
                service: if e.service_name.is_empty() {
                    c.name.clone()
                } else {
                    e.service_name
                },
                initial_fetch_timeout,
            }
        }
        DiscoveryType::Static | DiscoveryType::StrictDns | DiscoveryType::LogicalDns => {
            let cla = c.load_assignment.clone().unwrap_or_default();
            check_endpoints_at(&cla, "load_assignment", kind == DiscoveryType::Static)?;
            Endpoints::Inline(Box::new(cla))
        }
        DiscoveryType::OriginalDst => {
            return bad("type", "ORIGINAL_DST clusters are not supported by rampart");
        }
    };
    // connect_timeout: Envoy's default is 5 s; it must be above 0.
    if let Some(t) = &c.connect_timeout {
        b.timeouts.connect = duration(t, "connect_timeout")?;
        if b.timeouts.connect.is_zero() {
            return bad("connect_timeout", "connect_timeout must be above 0");
        }
    }
    b.balance = balance(c)?;
    b.proto = protocol(c)?;
    if let Some(o) = &c.common_http_protocol_options
        && let Some(t) = super::timeout(
            o.idle_timeout.as_ref(),
            "common_http_protocol_options.idle_timeout",
        )?
    {
        b.pool.idle_timeout = t.unwrap_or(super::NO_TIMEOUT);
    }
    b.tls = match &c.transport_socket {
        None => None,
        Some(ts) => Some(upstream_tls(ts, "transport_socket")?),
    };
    b.circuit_breaker = Some(breakers(c.circuit_breakers.as_ref())?);
    b.outlier_detection = c
        .outlier_detection
        .as_ref()
        .map(|o| outlier(o, "outlier_detection"))
        .transpose()?;
    b.health_check = match c.health_checks.as_slice() {
        [] => None,
        [h] => Some(health_check(h, "health_checks[0]")?),
        _ => return bad("health_checks", "rampart runs one health check per cluster"),
    };
    if let Some(lb) = &c.common_lb_config
        && lb
            .healthy_panic_threshold
            .as_ref()
            .is_some_and(|p| p.value != 0.0)
    {
        return bad(
            "common_lb_config.healthy_panic_threshold",
            "rampart never sends requests to unhealthy servers (a panic threshold of 0)",
        );
    }
    Ok(ClusterShape {
        name: c.name.clone(),
        backend: b,
        endpoints,
    })
}

/// The backend of a checked cluster, with servers from `cla` for EDS clusters (`None`:
/// not arrived, so no servers).
pub fn backend(shape: &ClusterShape, cla: Option<&ep::ClusterLoadAssignment>) -> model::Backend {
    let mut b = shape.backend.clone();
    let cla = match &shape.endpoints {
        Endpoints::Inline(c) => Some(&**c),
        Endpoints::Eds { .. } => cla,
    };
    if let Some(cla) = cla {
        match servers(cla, b.health_check.as_ref()) {
            Ok(s) => b.servers = s,
            Err(e) => tracing::error!(cluster = %shape.name, "endpoints: {e}"),
        }
    }
    b
}

/// Checks a ClusterLoadAssignment.
pub fn check_endpoints(cla: &ep::ClusterLoadAssignment) -> Res<()> {
    fields(cla)?;
    check_endpoints_at(cla, "", true)
}

fn check_endpoints_at(cla: &ep::ClusterLoadAssignment, path: &str, ip_only: bool) -> Res<()> {
    for (li, l) in cla.endpoints.iter().enumerate() {
        let lp = at(path, &format!("endpoints[{li}]"));
        for (ei, e) in l.lb_endpoints.iter().enumerate() {
            let p = format!("{lp}.lb_endpoints[{ei}]");
            let (host, _) = endpoint_address(e, &p)?;
            if ip_only && host.parse::<std::net::IpAddr>().is_err() {
                return bad(
                    format!("{p}.endpoint.address.socket_address.address"),
                    format!("{host:?} is not an IP address"),
                );
            }
            if e.load_balancing_weight.is_some_and(|w| w.value == 0) {
                return bad(
                    at(&p, "load_balancing_weight"),
                    "a weight must be at least 1",
                );
            }
            use core::HealthStatus as H;
            if H::try_from(e.health_status).is_err() {
                return bad(at(&p, "health_status"), "unknown health status");
            }
        }
    }
    Ok(())
}

fn endpoint_address(e: &ep::LbEndpoint, path: &str) -> Res<(String, u16)> {
    use core::address::Address as A;
    use ep::lb_endpoint::HostIdentifier;
    let Some(HostIdentifier::Endpoint(end)) = &e.host_identifier else {
        return bad(at(path, "endpoint"), "an endpoint is needed");
    };
    let Some(A::SocketAddress(sa)) = end.address.as_ref().and_then(|a| a.address.as_ref()) else {
        return bad(
            at(path, "endpoint.address"),
            "an endpoint needs a socket address",
        );
    };
    let sp = at(path, "endpoint.address.socket_address");
    let port = match &sa.port_specifier {
        Some(core::socket_address::PortSpecifier::PortValue(p)) => *p,
        _ => return bad(at(&sp, "port_value"), "an endpoint needs port_value"),
    };
    let port = u16::try_from(port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| Bad {
            path: at(&sp, "port_value"),
            message: format!("port {port} is out of range (1-65535)"),
        })?;
    if sa.address.is_empty() {
        return bad(at(&sp, "address"), "an endpoint needs an address");
    }
    Ok((sa.address.clone(), port))
}

/// The servers of a ClusterLoadAssignment: priority 0 serves, higher priorities are
/// backups; UNHEALTHY and TIMEOUT endpoints are down, DRAINING ones drain, DEGRADED ones
/// serve only as backups. Weights above rampart's 256 are scaled down.
pub fn servers(
    cla: &ep::ClusterLoadAssignment,
    check: Option<&HealthCheck>,
) -> Res<NamedMap<model::Server>> {
    use core::HealthStatus as H;
    let max_weight = cla
        .endpoints
        .iter()
        .flat_map(|l| &l.lb_endpoints)
        .map(|e| e.load_balancing_weight.map_or(1, |w| w.value))
        .max()
        .unwrap_or(1);
    let mut out: NamedMap<model::Server> = NamedMap::default();
    for (li, l) in cla.endpoints.iter().enumerate() {
        for (ei, e) in l.lb_endpoints.iter().enumerate() {
            let p = format!("endpoints[{li}].lb_endpoints[{ei}]");
            let (host, port) = endpoint_address(e, &p)?;
            let address = match host.parse::<std::net::IpAddr>() {
                Ok(std::net::IpAddr::V6(a)) => format!("[{a}]:{port}"),
                _ => format!("{host}:{port}"),
            };
            let mut name = address.clone();
            let mut n = 2;
            while out.contains(&name) {
                name = format!("{address}#{n}");
                n += 1;
            }
            let w = e.load_balancing_weight.map_or(1, |w| w.value.max(1));
            let weight = if max_weight > 256 {
                ((u64::from(w) * 256) / u64::from(max_weight)).max(1) as u32
            } else {
                w
            };
            let status = H::try_from(e.health_status).unwrap_or(H::Unknown);
            let mut server = model::Server {
                address: spanned(address),
                weight: spanned(weight),
                backup: l.priority > 0 || status == H::Degraded,
                disabled: false,
                check: true,
                health_check: None,
                max_connections: None,
                cookie: None,
                send_proxy: false,
                send_proxy_v2: false,
                proxy_v2_options: Vec::new(),
                status: match status {
                    H::Unhealthy | H::Timeout => ServerStatus::Down,
                    H::Draining => ServerStatus::Drain,
                    _ => ServerStatus::Up,
                },
            };
            use ep::lb_endpoint::HostIdentifier;
            if let Some(HostIdentifier::Endpoint(end)) = &e.host_identifier
                && let Some(hc) = &end.health_check_config
            {
                if hc.disable_active_health_check {
                    server.check = false;
                } else if let Some(base) = check
                    && (hc.port_value != 0 || hc.address.is_some())
                {
                    let mut own = base.clone();
                    if hc.port_value != 0 {
                        own.port = Some(u16::try_from(hc.port_value).or_else(|_| {
                            bad(
                                format!("{p}.endpoint.health_check_config.port_value"),
                                format!("port {} is out of range", hc.port_value),
                            )
                        })?);
                    }
                    if let Some(core::address::Address::SocketAddress(sa)) =
                        hc.address.as_ref().and_then(|a| a.address.as_ref())
                    {
                        own.address = Some(sa.address.clone());
                    }
                    server.health_check = Some(own);
                }
            }
            out.push(spanned(name), server);
        }
    }
    Ok(out)
}

fn balance(c: &cl::Cluster) -> Res<Balance> {
    use cl::cluster::LbPolicy as L;
    Ok(match L::try_from(c.lb_policy) {
        Ok(L::RoundRobin) => Balance::RoundRobin,
        // Envoy's least request picks the less loaded of two random servers: rampart's
        // `random` does the same; Envoy's random is uniform, the closest rampart has.
        Ok(L::LeastRequest) | Ok(L::Random) => Balance::Random,
        Ok(L::RingHash) | Ok(L::Maglev) => Balance::Maglev,
        Ok(L::LoadBalancingPolicyConfig) => {
            let policies = c
                .load_balancing_policy
                .as_ref()
                .map(|p| p.policies.as_slice())
                .unwrap_or_default();
            for p in policies {
                let url = p
                    .typed_extension_config
                    .as_ref()
                    .and_then(|t| t.typed_config.as_ref())
                    .map(|a| a.type_url.as_str())
                    .unwrap_or("");
                let prefix = "type.googleapis.com/envoy.extensions.load_balancing_policies.";
                match url.strip_prefix(prefix) {
                    Some("round_robin.v3.RoundRobin") => return Ok(Balance::RoundRobin),
                    Some("least_request.v3.LeastRequest" | "random.v3.Random") => {
                        return Ok(Balance::Random);
                    }
                    Some("ring_hash.v3.RingHash" | "maglev.v3.Maglev") => {
                        return Ok(Balance::Maglev);
                    }
                    _ => {}
                }
            }
            return bad(
                "load_balancing_policy",
                "none of the load balancing policies is supported by rampart (round_robin, least_request, random, ring_hash, maglev)",
            );
        }
        _ => {
            return bad(
                "lb_policy",
                "this load balancing policy is not supported by rampart",
            );
        }
    })
}

fn protocol(c: &cl::Cluster) -> Res<Proto> {
    use up::http_protocol_options::UpstreamProtocolOptions as U;
    use up::http_protocol_options::explicit_http_config::ProtocolConfig as P;
    if c.protocol_selection != 0 {
        return bad(
            "protocol_selection",
            "USE_DOWNSTREAM_PROTOCOL is not supported by rampart (set the protocol explicitly)",
        );
    }
    let mut proto = if c.http2_protocol_options.is_some() {
        Proto::H2
    } else {
        Proto::Http1
    };
    for (key, any) in &c.typed_extension_protocol_options {
        let p = format!("typed_extension_protocol_options[{key}]");
        if any.type_url != proto::HTTP_PROTOCOL_OPTIONS {
            return bad(
                p,
                format!(
                    "protocol options {} are not supported by rampart",
                    any.type_url
                ),
            );
        }
        let o: up::HttpProtocolOptions = proto::unpack(any).or_else(|e| bad(&p, e))?;
        match &o.upstream_protocol_options {
            Some(U::ExplicitHttpConfig(e)) => match &e.protocol_config {
                Some(P::Http2ProtocolOptions(_)) => proto = Proto::H2,
                Some(P::HttpProtocolOptions(_)) => proto = Proto::Http1,
                _ => {
                    return bad(
                        at(&p, "explicit_http_config"),
                        "only HTTP/1.1 and HTTP/2 are supported by rampart",
                    );
                }
            },
            None => {}
            Some(_) => {
                return bad(
                    p,
                    "only explicit_http_config is supported by rampart (no auto or downstream protocol)",
                );
            }
        }
    }
    Ok(proto)
}

fn upstream_tls(ts: &core::TransportSocket, path: &str) -> Res<model::UpstreamTls> {
    use tls::common_tls_context::ValidationContextType as V;
    let (ctx, p): (tls::UpstreamTlsContext, String) = super::tls_context(ts, path)?;
    let mut t: model::UpstreamTls = defaults()?;
    t.sni = (!ctx.sni.is_empty()).then(|| ctx.sni.clone());
    let common = ctx.common_tls_context.unwrap_or_default();
    let cp = at(&p, "common_tls_context");
    if !common.tls_certificates.is_empty() {
        return bad(
            at(&cp, "tls_certificates"),
            "client certificates to servers are not supported by rampart yet",
        );
    }
    if let Some(params) = &common.tls_params {
        let (mut lo, mut hi) = (model::TlsVersion::Tls12, model::TlsVersion::Tls13);
        super::listener::tls_versions(params, &at(&cp, "tls_params"), &mut lo, &mut hi)?;
    }
    // Envoy checks the server's certificate only with a validation context.
    match &common.validation_context_type {
        None => t.verify = false,
        Some(V::ValidationContext(v)) => {
            t.verify = true;
            if let Some(ca) = &v.trusted_ca {
                let vp = at(&cp, "validation_context.trusted_ca");
                t.ca = Some(spanned(super::data_source(ca, &vp)?.pem(&vp)?));
            } else if v.system_root_certs.is_none() {
                return bad(
                    at(&cp, "validation_context"),
                    "a validation context needs trusted_ca or system_root_certs",
                );
            }
        }
        Some(_) => {
            return bad(
                at(&cp, "validation_context"),
                "only an inline validation_context is supported by rampart",
            );
        }
    }
    Ok(t)
}

fn breakers(cb: Option<&cl::CircuitBreakers>) -> Res<CircuitBreaker> {
    let mut out = CircuitBreaker {
        max_connections: 1024,
        max_pending_requests: 1024,
        max_requests: 1024,
        max_retries: 3,
    };
    let Some(cb) = cb else {
        return Ok(out);
    };
    for (i, t) in cb.thresholds.iter().enumerate() {
        if t.priority != core::RoutingPriority::Default as i32 {
            // rampart has no request priorities: only the default ones apply.
            continue;
        }
        let p = format!("circuit_breakers.thresholds[{i}]");
        let v = |w: Option<envoy_types::pb::google::protobuf::UInt32Value>,
                 key: &str,
                 d: u32|
         -> Res<u32> {
            match w {
                None => Ok(d),
                Some(x)
                    if x.value == 0 && key != "max_retries" && key != "max_pending_requests" =>
                {
                    bad(at(&p, key), format!("{key} must be at least 1"))
                }
                Some(x) => Ok(x.value),
            }
        };
        out.max_connections = v(t.max_connections, "max_connections", 1024)?;
        out.max_pending_requests = v(t.max_pending_requests, "max_pending_requests", 1024)?;
        out.max_requests = v(t.max_requests, "max_requests", 1024)?;
        out.max_retries = v(t.max_retries, "max_retries", 3)?;
    }
    Ok(out)
}

fn outlier(o: &cl::OutlierDetection, path: &str) -> Res<OutlierDetection> {
    let mut d: OutlierDetection = defaults()?;
    let pct = |v: Option<envoy_types::pb::google::protobuf::UInt32Value>,
               key: &str,
               dflt: u32|
     -> Res<u32> {
        let x = v.map_or(dflt, |v| v.value);
        if x > 100 {
            return bad(at(path, key), format!("{key} is a percentage, found {x}"));
        }
        Ok(x)
    };
    let dur = |v: &Option<envoy_types::pb::google::protobuf::Duration>,
               key: &str,
               dflt: Duration|
     -> Res<Duration> {
        match v {
            None => Ok(dflt),
            Some(x) => {
                let t = duration(x, &at(path, key))?;
                if t.is_zero() {
                    return bad(at(path, key), format!("{key} must be above 0"));
                }
                Ok(t)
            }
        }
    };
    d.consecutive_5xx = if pct(
        o.enforcing_consecutive_5xx,
        "enforcing_consecutive_5xx",
        100,
    )? > 0
    {
        o.consecutive_5xx.map_or(5, |v| v.value)
    } else {
        0
    };
    d.consecutive_gateway_failure = if pct(
        o.enforcing_consecutive_gateway_failure,
        "enforcing_consecutive_gateway_failure",
        0,
    )? > 0
    {
        o.consecutive_gateway_failure.map_or(5, |v| v.value)
    } else {
        0
    };
    d.failure_percentage = if pct(
        o.enforcing_failure_percentage,
        "enforcing_failure_percentage",
        0,
    )? > 0
    {
        Some(FailurePercentage {
            threshold: Percent(f64::from(pct(
                o.failure_percentage_threshold,
                "failure_percentage_threshold",
                85,
            )?)),
            request_volume: o.failure_percentage_request_volume.map_or(50, |v| v.value),
            minimum_hosts: o.failure_percentage_minimum_hosts.map_or(5, |v| v.value),
        })
    } else {
        None
    };
    if pct(o.enforcing_success_rate, "enforcing_success_rate", 0)? > 0 {
        return bad(
            at(path, "enforcing_success_rate"),
            "success rate ejection is not supported by rampart (set enforcing_success_rate to 0)",
        );
    }
    d.interval = dur(&o.interval, "interval", Duration::from_secs(10))?;
    d.base_ejection_time = dur(
        &o.base_ejection_time,
        "base_ejection_time",
        Duration::from_secs(30),
    )?;
    d.max_ejection_time = dur(
        &o.max_ejection_time,
        "max_ejection_time",
        Duration::from_secs(300),
    )?
    .max(d.base_ejection_time);
    d.max_ejection_percent = Percent(f64::from(pct(
        o.max_ejection_percent,
        "max_ejection_percent",
        10,
    )?));
    Ok(d)
}

fn health_check(h: &core::HealthCheck, path: &str) -> Res<HealthCheck> {
    use core::health_check::HealthChecker as K;
    let mut c: HealthCheck = defaults()?;
    let need =
        |d: &Option<envoy_types::pb::google::protobuf::Duration>, key: &str| -> Res<Duration> {
            let Some(d) = d else {
                return bad(at(path, key), format!("{key} is required"));
            };
            let t = duration(d, &at(path, key))?;
            if t.is_zero() {
                return bad(at(path, key), format!("{key} must be above 0"));
            }
            Ok(t)
        };
    c.timeout = need(&h.timeout, "timeout")?;
    c.interval = need(&h.interval, "interval")?;
    c.fall = h
        .unhealthy_threshold
        .map(|v| v.value)
        .filter(|v| *v > 0)
        .ok_or_else(|| Bad {
            path: at(path, "unhealthy_threshold"),
            message: "unhealthy_threshold must be at least 1".to_owned(),
        })?;
    c.rise = h
        .healthy_threshold
        .map(|v| v.value)
        .filter(|v| *v > 0)
        .ok_or_else(|| Bad {
            path: at(path, "healthy_threshold"),
            message: "healthy_threshold must be at least 1".to_owned(),
        })?;
    c.jitter = Percent(f64::from(h.interval_jitter_percent.min(100)));
    if let Some(d) = &h.unhealthy_interval {
        c.down_interval = Some(duration(d, &at(path, "unhealthy_interval"))?);
    }
    if let Some(p) = h.alt_port {
        c.port = Some(
            u16::try_from(p.value)
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| Bad {
                    path: at(path, "alt_port"),
                    message: format!("port {} is out of range", p.value),
                })?,
        );
    }
    match &h.health_checker {
        Some(K::HttpHealthCheck(x)) => {
            let hp = at(path, "http_health_check");
            if !x.path.starts_with('/') {
                return bad(
                    at(&hp, "path"),
                    "an HTTP check needs a path starting with '/'",
                );
            }
            let mut http: HttpCheck = defaults()?;
            http.path = x.path.clone();
            http.host = (!x.host.is_empty()).then(|| x.host.clone());
            http.method = match core::RequestMethod::try_from(x.method) {
                Ok(core::RequestMethod::MethodUnspecified) | Err(_) => "GET".to_owned(),
                Ok(m) => m.as_str_name().to_owned(),
            };
            // Envoy expects 200 unless told otherwise; ranges are [start, end).
            let mut set = Vec::new();
            for (i, r) in x.expected_statuses.iter().enumerate() {
                if r.start < 100 || r.end > 600 || r.end <= r.start {
                    return bad(
                        format!("{hp}.expected_statuses[{i}]"),
                        format!("invalid status range [{}, {})", r.start, r.end),
                    );
                }
                set.push((r.start as u16, (r.end - 1) as u16));
            }
            http.expect_status = StatusSet(if set.is_empty() {
                vec![(200, 200)]
            } else {
                set
            });
            c.http = Some(http);
        }
        Some(K::TcpHealthCheck(_)) => c.tcp = Some(TcpCheck {}),
        Some(K::GrpcHealthCheck(g)) => {
            c.grpc = Some(GrpcCheck {
                service: g.service_name.clone(),
            })
        }
        _ => {
            return bad(
                path,
                "a health check needs http_health_check, tcp_health_check or grpc_health_check",
            );
        }
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lb(addr: &str, port: u32, weight: u32, status: core::HealthStatus) -> ep::LbEndpoint {
        ep::LbEndpoint {
            host_identifier: Some(ep::lb_endpoint::HostIdentifier::Endpoint(ep::Endpoint {
                address: Some(core::Address {
                    address: Some(core::address::Address::SocketAddress(core::SocketAddress {
                        address: addr.into(),
                        port_specifier: Some(core::socket_address::PortSpecifier::PortValue(port)),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            })),
            health_status: status as i32,
            load_balancing_weight: Some(envoy_types::pb::google::protobuf::UInt32Value {
                value: weight,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn eds_cluster_names_its_service_and_gets_envoy_breaker_defaults() {
        let s = check_cluster(&crate::testing::eds("web")).unwrap();
        assert_eq!(s.eds_name(), Some("web"));
        assert_eq!(s.backend.circuit_breaker.as_ref().unwrap().max_retries, 3);
    }

    #[test]
    fn negative_connect_timeout_is_refused() {
        let mut c = crate::testing::eds("web");
        c.connect_timeout = Some(envoy_types::pb::google::protobuf::Duration {
            seconds: -1,
            nanos: 0,
        });
        let e = check_cluster(&c).unwrap_err();
        assert_eq!(e.path, "connect_timeout");
    }

    #[test]
    fn servers_map_priorities_health_and_weights() {
        let cla = ep::ClusterLoadAssignment {
            cluster_name: "web".into(),
            endpoints: vec![
                ep::LocalityLbEndpoints {
                    lb_endpoints: vec![
                        lb("10.0.0.1", 80, 1000, core::HealthStatus::Healthy),
                        lb("10.0.0.2", 80, 10, core::HealthStatus::Unhealthy),
                        lb("10.0.0.3", 80, 1, core::HealthStatus::Draining),
                    ],
                    ..Default::default()
                },
                ep::LocalityLbEndpoints {
                    priority: 1,
                    lb_endpoints: vec![lb("::1", 81, 1, core::HealthStatus::Unknown)],
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        check_endpoints(&cla).unwrap();
        let s = servers(&cla, None).unwrap();
        let get = |n: &str| s.get(n).unwrap();
        assert_eq!(get("10.0.0.1:80").weight.value, 256);
        assert_eq!(get("10.0.0.2:80").weight.value, 2);
        assert_eq!(get("10.0.0.2:80").status, ServerStatus::Down);
        assert_eq!(get("10.0.0.3:80").status, ServerStatus::Drain);
        assert!(get("[::1]:81").backup);
    }

    #[test]
    fn endpoints_with_zero_weight_or_port_are_refused() {
        let mut cla = ep::ClusterLoadAssignment {
            cluster_name: "web".into(),
            endpoints: vec![ep::LocalityLbEndpoints {
                lb_endpoints: vec![lb("10.0.0.1", 70000, 1, core::HealthStatus::Healthy)],
                ..Default::default()
            }],
            ..Default::default()
        };
        let e = check_endpoints(&cla).unwrap_err();
        assert!(e.path.ends_with("port_value"), "{e}");
        cla.endpoints[0].lb_endpoints[0] = lb("10.0.0.1", 80, 0, core::HealthStatus::Healthy);
        assert!(check_endpoints(&cla).is_err());
    }
}
