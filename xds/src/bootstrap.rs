//! Envoy's bootstrap file (`envoy -c bootstrap.yaml`), read as Envoy reads it: YAML or
//! JSON in protobuf's JSON mapping (snake_case or lowerCamelCase keys, durations as
//! `"1.5s"`, typed configurations with `@type`).
//!
//! From it come the node identity, the ADS connection (`dynamic_resources.ads_config`
//! and the static cluster it names), the static listeners and clusters (translated like
//! dynamic ones) and the admin address. A field rampart cannot honour is an error that
//! names its path and line.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap as Envoy;
use envoy_types::pb::envoy::config::core::v3 as core;
use prost_reflect::{DeserializeOptions, DynamicMessage};
use rampart_config::yaml::{Node, NodeKind};
use rampart_config::{Config, ConfigError, ConfigErrors, Pos};

use crate::client::Settings;
use crate::translate::{self, Bad};

/// What a bootstrap file sets up.
#[derive(Debug)]
pub struct Bootstrap {
    /// The static configuration: static listeners and clusters, the admin address, and
    /// an `xds` section describing the ADS connection.
    pub config: Config,
    /// The ADS connection, when the file has `dynamic_resources`.
    pub ads: Option<Settings>,
}

/// Loads a bootstrap file.
pub fn load(path: &Path) -> Result<Bootstrap, ConfigErrors> {
    let file = path.display().to_string();
    let text = rampart_config::limits::read_bounded(
        path,
        rampart_config::limits::MAX_FILE_BYTES,
        "bootstrap file",
    )
    .map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: Some(file.clone()),
            pos: Pos::default(),
            path: String::new(),
            message: if e.ends_with("refused") {
                e
            } else {
                format!("cannot read the bootstrap file: {e}")
            },
        }])
    })?;
    parse(&text).map_err(|e| e.in_file(&file))
}

fn err(pos: Pos, path: &str, message: impl Into<String>) -> ConfigErrors {
    ConfigErrors(vec![ConfigError::new(pos, path, message)])
}

/// Parses a bootstrap file's text.
pub fn parse(text: &str) -> Result<Bootstrap, ConfigErrors> {
    let node =
        rampart_config::yaml::parse(text, &rampart_config::yaml::Verbatim).map_err(ConfigErrors)?;
    let desc = crate::proto::descriptor("envoy.config.bootstrap.v3.Bootstrap")
        .ok_or_else(|| err(Pos::default(), "", "Envoy's descriptors are missing"))?;
    let opts = DeserializeOptions::new().deny_unknown_fields(true);
    let msg = DynamicMessage::deserialize_with_options(desc, crate::yamlde::NodeDe(&node), &opts)
        .map_err(|e| {
        let mut m = e.message.clone();
        if let Some(f) = m.strip_prefix("unknown field `") {
            m = format!("unknown field `{f}");
        }
        err(e.pos.unwrap_or_default(), &e.path_text(), m)
    })?;
    let unsupported = crate::check::unsupported(&msg);
    if !unsupported.is_empty() {
        return Err(ConfigErrors(
            unsupported
                .into_iter()
                .map(|u| {
                    ConfigError::new(
                        locate(&node, &u.path).unwrap_or_default(),
                        u.path,
                        u.message,
                    )
                })
                .collect(),
        ));
    }
    let b: Envoy = msg
        .transcode_to()
        .map_err(|e| err(Pos::default(), "", format!("invalid bootstrap: {e}")))?;
    build(&b, &node)
}

/// Where a field path (`static_resources.clusters[0].connect_timeout`) is in the file;
/// keys match in snake_case or lowerCamelCase.
fn locate(root: &Node, path: &str) -> Option<Pos> {
    let norm = |s: &str| s.replace('_', "").to_ascii_lowercase();
    let mut n = root;
    for part in path.split('.') {
        let (key, idx) = match part.split_once('[') {
            Some((k, rest)) => (k, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        if !key.is_empty() {
            let NodeKind::Map(entries) = &n.kind else {
                return Some(n.pos);
            };
            n = &entries
                .iter()
                .find(|(k, _)| k.as_str().is_some_and(|k| norm(k) == norm(key)))?
                .1;
        }
        if let Some(i) = idx {
            match &n.kind {
                NodeKind::Seq(items) => n = items.get(i)?,
                NodeKind::Map(entries) => {
                    n = &entries
                        .iter()
                        .find(|(k, _)| k.as_str() == Some(&i.to_string()))?
                        .1;
                }
                _ => return Some(n.pos),
            }
        }
    }
    Some(n.pos)
}

fn bad_at(root: &Node, base: &str, b: Bad) -> ConfigErrors {
    let path = translate_path(base, &b.path);
    err(locate(root, &path).unwrap_or_default(), &path, b.message)
}

fn translate_path(base: &str, p: &str) -> String {
    if p.is_empty() {
        base.to_owned()
    } else if p.starts_with('[') {
        format!("{base}{p}")
    } else {
        format!("{base}.{p}")
    }
}

fn build(b: &Envoy, root: &Node) -> Result<Bootstrap, ConfigErrors> {
    let mut cfg: Config = translate::defaults().map_err(|e| err(Pos::default(), "", e.message))?;
    let node = b.node.clone().unwrap_or_default();
    // The ADS cluster is the control plane's address, not a backend.
    let ads_cluster = b
        .dynamic_resources
        .as_ref()
        .and_then(|d| d.ads_config.as_ref())
        .and_then(|a| a.grpc_services.first())
        .and_then(|g| match &g.target_specifier {
            Some(core::grpc_service::TargetSpecifier::EnvoyGrpc(e)) => Some(e.cluster_name.clone()),
            _ => None,
        });
    let statics = b.static_resources.clone().unwrap_or_default();
    for (i, c) in statics.clusters.iter().enumerate() {
        if Some(&c.name) == ads_cluster.as_ref() {
            continue;
        }
        let base = format!("static_resources.clusters[{i}]");
        let shape = translate::check_cluster(c).map_err(|e| bad_at(root, &base, e))?;
        if shape.eds_name().is_some() {
            return Err(bad_at(
                root,
                &base,
                Bad {
                    path: "type".into(),
                    message: "a static EDS cluster is not supported by rampart (send it by CDS)"
                        .into(),
                },
            ));
        }
        cfg.backends.push(
            translate::spanned(c.name.clone()),
            translate::backend(&shape, None),
        );
    }
    let known = |n: &str| cfg.backends.contains(n);
    let known = translate::Known { cluster: &known };
    let mut frontends = Vec::new();
    let mut tcp = Vec::new();
    for (i, l) in statics.listeners.iter().enumerate() {
        let base = format!("static_resources.listeners[{i}]");
        let shape = translate::check_listener(l).map_err(|e| bad_at(root, &base, e))?;
        if let translate::RouteSource::Tcp(r) = &shape.routes {
            tcp.push((l.name.clone(), r.clone()));
        } else if !matches!(shape.routes, translate::RouteSource::Inline(_)) {
            return Err(err(
                locate(root, &base).unwrap_or_default(),
                &base,
                "a static listener needs an inline route_config in rampart",
            ));
        }
        frontends.push((
            translate::spanned(l.name.clone()),
            translate::frontend(&shape, None, &known),
        ));
    }
    cfg.frontends.extend(frontends);
    translate::tcp_backends(&mut cfg, &tcp);
    if let Some(a) = &b.admin
        && let Some(core::address::Address::SocketAddress(sa)) =
            a.address.as_ref().and_then(|a| a.address.as_ref())
    {
        let port = match sa.port_specifier {
            Some(core::socket_address::PortSpecifier::PortValue(p)) => p,
            _ => 0,
        };
        let ip: std::net::IpAddr = sa.address.parse().map_err(|_| {
            err(
                locate(root, "admin.address").unwrap_or_default(),
                "admin.address",
                format!("{:?} is not an IP address", sa.address),
            )
        })?;
        let port = u16::try_from(port).map_err(|_| {
            err(
                locate(root, "admin.address").unwrap_or_default(),
                "admin.address",
                format!("port {port} is out of range"),
            )
        })?;
        cfg.admin.http = Some(translate::spanned(
            std::net::SocketAddr::new(ip, port).to_string(),
        ));
    }
    let ads = match &b.dynamic_resources {
        None => None,
        Some(d) => Some(ads_settings(
            d,
            &node,
            &statics.clusters,
            ads_cluster.as_deref(),
            root,
        )?),
    };
    if let Some(s) = &ads {
        cfg.xds = Some(rampart_config::xds::Xds {
            server: translate::spanned(s.display.clone()),
            node: rampart_config::xds::XdsNode {
                id: translate::spanned(node.id.clone()),
                cluster: node.cluster.clone(),
                metadata: Default::default(),
            },
            mode: s.mode,
            tls: None,
            initial_fetch_timeout: s.initial_fetch_timeout,
            backoff: rampart_config::xds::XdsBackoff {
                base: s.backoff_base,
                max: s.backoff_max,
            },
        });
    }
    let errors = rampart_config::validate::validate(&cfg, false);
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    Ok(Bootstrap { config: cfg, ads })
}

fn ads_settings(
    d: &envoy_types::pb::envoy::config::bootstrap::v3::bootstrap::DynamicResources,
    node: &core::Node,
    clusters: &[envoy_types::pb::envoy::config::cluster::v3::Cluster],
    ads_cluster: Option<&str>,
    root: &Node,
) -> Result<Settings, ConfigErrors> {
    use core::api_config_source::ApiType;
    let at = |p: &str, m: String| err(locate(root, p).unwrap_or_default(), p, m);
    let ads = d.ads_config.as_ref().ok_or_else(|| {
        at(
            "dynamic_resources",
            "rampart needs dynamic_resources.ads_config (ADS)".into(),
        )
    })?;
    let mode = match ApiType::try_from(ads.api_type) {
        Ok(ApiType::Grpc | ApiType::AggregatedGrpc) => rampart_config::xds::XdsMode::Sotw,
        Ok(ApiType::DeltaGrpc | ApiType::AggregatedDeltaGrpc) => {
            rampart_config::xds::XdsMode::Delta
        }
        _ => {
            return Err(at(
                "dynamic_resources.ads_config.api_type",
                "only GRPC and DELTA_GRPC are supported by rampart".into(),
            ));
        }
    };
    let mut initial_fetch_timeout = Duration::from_secs(15);
    for (key, src) in [("lds_config", &d.lds_config), ("cds_config", &d.cds_config)] {
        let p = format!("dynamic_resources.{key}");
        match src {
            None => {}
            Some(s) => {
                let t = translate::config_source(Some(s), &p).map_err(|b| at(&p, b.to_string()))?;
                if let Some(t) = t {
                    initial_fetch_timeout = t;
                }
            }
        }
    }
    let [svc] = ads.grpc_services.as_slice() else {
        return Err(at(
            "dynamic_resources.ads_config.grpc_services",
            "one gRPC service is needed".into(),
        ));
    };
    let gp = "dynamic_resources.ads_config.grpc_services[0]";
    let Some(core::grpc_service::TargetSpecifier::EnvoyGrpc(eg)) = &svc.target_specifier else {
        return Err(at(
            gp,
            "rampart needs envoy_grpc (google_grpc is not supported)".into(),
        ));
    };
    let name = ads_cluster.unwrap_or_default();
    let (ci, cluster) = clusters
        .iter()
        .enumerate()
        .find(|(_, c)| c.name == name)
        .ok_or_else(|| {
            at(
                &format!("{gp}.envoy_grpc.cluster_name"),
                format!("no static cluster {name:?}"),
            )
        })?;
    let cp = format!("static_resources.clusters[{ci}]");
    let shape = translate::check_cluster(cluster).map_err(|e| bad_at(root, &cp, e))?;
    let cla = match &shape.endpoints {
        translate::Endpoints::Inline(c) => c.clone(),
        translate::Endpoints::Eds { .. } => {
            return Err(at(
                &cp,
                "the ADS cluster needs static endpoints (STATIC or STRICT_DNS)".into(),
            ));
        }
    };
    let servers = translate::servers(&cla, None)
        .map_err(|e| bad_at(root, &format!("{cp}.load_assignment"), e))?;
    let addrs: Vec<String> = servers
        .iter()
        .map(|(_, s)| s.address.value.clone())
        .collect();
    let Some(first) = addrs.first().cloned() else {
        return Err(at(&cp, "the ADS cluster has no endpoint".into()));
    };
    let tls = match &shape.backend.tls {
        None => None,
        Some(t) => Some(ads_tls(t, &cp, root)?),
    };
    let retry = eg.retry_policy.as_ref().or(svc.retry_policy.as_ref());
    let (mut base, mut max) = (Duration::from_millis(500), Duration::from_secs(30));
    if let Some(b) = retry.and_then(|r| r.retry_back_off.as_ref()) {
        let rp = format!("{gp}.envoy_grpc.retry_policy.retry_back_off");
        if let Some(x) = &b.base_interval {
            base = translate::duration(x, &format!("{rp}.base_interval"))
                .map_err(|e| at(&rp, e.to_string()))?;
            max = base * 10;
        }
        if let Some(x) = &b.max_interval {
            max = translate::duration(x, &format!("{rp}.max_interval"))
                .map_err(|e| at(&rp, e.to_string()))?;
        }
        if base.is_zero() || max < base {
            return Err(at(
                &rp,
                "base_interval must be above 0 and max_interval at least base_interval".into(),
            ));
        }
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    let authority = if eg.authority.is_empty() {
        first.clone()
    } else {
        eg.authority.clone()
    };
    let sni = shape
        .backend
        .tls
        .as_ref()
        .and_then(|t| t.sni.clone())
        .unwrap_or_else(|| crate::client::host_of(&first).to_owned());
    Ok(Settings {
        display: format!("{scheme}://{first}"),
        addrs,
        authority,
        tls,
        sni,
        mode,
        node: {
            let mut n = crate::client::node(&node.id, &node.cluster, node.metadata.clone());
            n.locality = node.locality.clone();
            n
        },
        node_first_only: ads.set_node_on_first_message_only,
        initial_fetch_timeout,
        backoff_base: base,
        backoff_max: max,
        max_message: eg
            .max_receive_message_length
            .map_or(crate::client::MAX_MESSAGE, |v| v.value as usize),
        metadata: svc
            .initial_metadata
            .iter()
            .map(|h| (h.key.clone(), h.value.clone()))
            .collect(),
    })
}

/// TLS to the control plane from the ADS cluster's UpstreamTlsContext.
fn ads_tls(
    t: &rampart_config::model::UpstreamTls,
    path: &str,
    root: &Node,
) -> Result<Arc<rustls::ClientConfig>, ConfigErrors> {
    if !t.verify {
        return Err(err(
            locate(root, path).unwrap_or_default(),
            path,
            "TLS to the control plane needs a validation_context (rampart always checks its certificate)",
        ));
    }
    let x = rampart_config::xds::XdsTls {
        ca: t.ca.clone(),
        cert: None,
        key: None,
        sni: t.sni.clone(),
    };
    crate::tls::client_config(&x, Path::new(""))
        .map_err(|e| err(locate(root, path).unwrap_or_default(), path, e))
}
