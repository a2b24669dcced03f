//! An ADS control plane for tests: state of the world and delta over one tonic server,
//! resources set by the test, every request recorded so tests can check ACKs, NACKs,
//! nonces and subscriptions. Also the resource builders the xDS tests use. The xDS
//! benchmark (`bench/xds`) drives Envoy and rampart with the same control plane.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::cluster::v3 as cl;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::endpoint::v3 as ep;
use envoy_types::pb::envoy::config::listener::v3 as ls;
use envoy_types::pb::envoy::config::route::v3 as rt;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse, Resource,
};
use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

pub const LDS: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const RDS: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
pub const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const EDS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

/// A request the control plane received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub delta: bool,
    pub type_url: String,
    pub version: String,
    pub nonce: String,
    pub names: Vec<String>,
    pub subscribe: Vec<String>,
    pub unsubscribe: Vec<String>,
    pub initial_versions: BTreeMap<String, String>,
    pub error: Option<String>,
    pub node: Option<String>,
    /// When it arrived (the benchmark reads it).
    #[allow(dead_code)]
    pub at: Instant,
}

/// A response the control plane sent.
#[derive(Debug, Clone)]
pub struct Sent {
    pub type_url: String,
    pub version: String,
    pub nonce: String,
    pub names: Vec<String>,
    pub removed: Vec<String>,
    /// When it was sent (the benchmark reads it).
    #[allow(dead_code)]
    pub at: Instant,
}

#[derive(Default)]
struct Type {
    version: u64,
    /// name -> (resource version, resource)
    items: BTreeMap<String, (u64, Any)>,
}

#[derive(Default)]
struct State {
    types: BTreeMap<String, Type>,
    nonce: u64,
}

struct Shared {
    state: Mutex<State>,
    changed: watch::Sender<u64>,
    seen: Mutex<Vec<Seen>>,
    sent: Mutex<Vec<Sent>>,
}

/// The control plane.
pub struct Cp {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    server: Option<tokio::task::JoinHandle<()>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Cp {
    pub async fn start() -> Cp {
        Self::start_on("127.0.0.1:0".parse().unwrap(), None).await
    }

    /// Starts on `addr`, with the resources of `from` (a control plane restarted with its
    /// state).
    pub async fn start_on(addr: SocketAddr, from: Option<&Cp>) -> Cp {
        Self::start_with(addr, from, None).await
    }

    /// Starts serving over TLS (ALPN h2) with `tls`.
    pub async fn start_tls(tls: Arc<rustls::ServerConfig>) -> Cp {
        Self::start_with("127.0.0.1:0".parse().unwrap(), None, Some(tls)).await
    }

    async fn start_with(
        addr: SocketAddr,
        from: Option<&Cp>,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Cp {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: watch::channel(0).0,
            seen: Mutex::new(Vec::new()),
            sent: Mutex::new(Vec::new()),
        });
        if let Some(f) = from {
            let old = lock(&f.shared.state);
            let mut st = lock(&shared.state);
            for (t, ty) in &old.types {
                st.types.insert(
                    t.clone(),
                    Type {
                        version: ty.version,
                        items: ty.items.clone(),
                    },
                );
            }
            st.nonce = old.nonce + 1000;
        }
        let l = loop {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => break l,
                // A restart on the same port may race the old socket's close.
                Err(_) if addr.port() != 0 => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(e) => panic!("control plane bind: {e}"),
            }
        };
        let addr = l.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let svc = AggregatedDiscoveryServiceServer::new(Ads(shared.clone()))
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        // Stopping drops the listener and every open stream, as a killed process would.
        let (kill, killed) = watch::channel(false);
        let server = tokio::spawn(async move {
            let accept = async {
                while let Ok((tcp, _)) = l.accept().await {
                    let svc = hyper_util::service::TowerToHyperService::new(svc.clone());
                    let mut killed = killed.clone();
                    let tls = tls.clone();
                    tokio::spawn(async move {
                        let h2 = hyper::server::conn::http2::Builder::new(
                            hyper_util::rt::TokioExecutor::new(),
                        );
                        let serve = async {
                            match tls {
                                None => {
                                    let _ = h2
                                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                                        .await;
                                }
                                Some(cfg) => {
                                    if let Ok(s) =
                                        tokio_rustls::TlsAcceptor::from(cfg).accept(tcp).await
                                    {
                                        let _ = h2
                                            .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                                            .await;
                                    }
                                }
                            }
                        };
                        tokio::select! {
                            _ = serve => {}
                            _ = killed.wait_for(|k| *k) => {}
                        }
                    });
                }
            };
            tokio::select! {
                _ = accept => {}
                _ = stopped => {}
            }
            let _ = kill.send(true);
        });
        Cp {
            addr,
            shared,
            server: Some(server),
            stop: Some(stop),
        }
    }

    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The requests received, counted.
    pub fn requests(&self) -> usize {
        lock(&self.shared.seen).len()
    }

    /// Replaces every resource of a type and pushes the change.
    pub fn set(&self, type_url: &str, items: Vec<(String, Any)>) {
        {
            let mut st = lock(&self.shared.state);
            let ty = st.types.entry(type_url.to_owned()).or_default();
            ty.version += 1;
            let v = ty.version;
            let mut next = BTreeMap::new();
            for (name, any) in items {
                let version = match ty.items.get(&name) {
                    Some((rv, old)) if old.value == any.value => *rv,
                    _ => v,
                };
                next.insert(name, (version, any));
            }
            ty.items = next;
        }
        self.shared.changed.send_modify(|n| *n += 1);
    }

    pub fn listeners(&self, l: Vec<ls::Listener>) {
        self.set(
            LDS,
            l.into_iter().map(|x| (x.name.clone(), any(&x))).collect(),
        );
    }
    pub fn routes(&self, r: Vec<rt::RouteConfiguration>) {
        self.set(
            RDS,
            r.into_iter().map(|x| (x.name.clone(), any(&x))).collect(),
        );
    }
    pub fn clusters(&self, c: Vec<cl::Cluster>) {
        self.set(
            CDS,
            c.into_iter().map(|x| (x.name.clone(), any(&x))).collect(),
        );
    }
    pub fn endpoints(&self, e: Vec<ep::ClusterLoadAssignment>) {
        self.set(
            EDS,
            e.into_iter()
                .map(|x| (x.cluster_name.clone(), any(&x)))
                .collect(),
        );
    }

    /// The current version of a type.
    pub fn version(&self, type_url: &str) -> String {
        lock(&self.shared.state)
            .types
            .get(type_url)
            .map_or(0, |t| t.version)
            .to_string()
    }

    pub fn seen(&self) -> Vec<Seen> {
        lock(&self.shared.seen).clone()
    }

    pub fn sent(&self) -> Vec<Sent> {
        lock(&self.shared.sent).clone()
    }

    /// Stops serving: open streams end.
    pub async fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(h) = self.server.take() {
            h.abort();
            let _ = h.await;
        }
    }
}

impl Drop for Cp {
    fn drop(&mut self) {
        if let Some(h) = self.server.take() {
            h.abort();
        }
    }
}

/// Packs a resource.
pub fn any<T: Message + Name>(m: &T) -> Any {
    Any {
        type_url: T::type_url(),
        value: m.encode_to_vec(),
    }
}

struct Ads(Arc<Shared>);

type Out<T> = Pin<Box<dyn futures_core::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for Ads {
    type StreamAggregatedResourcesStream = Out<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = Out<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        req: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(sotw(self.0.clone(), req.into_inner(), tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn delta_aggregated_resources(
        &self,
        req: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(delta(self.0.clone(), req.into_inner(), tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

fn wildcard(type_url: &str) -> bool {
    type_url == LDS || type_url == CDS
}

#[derive(Default)]
struct SotwSub {
    names: BTreeSet<String>,
    sent_version: Option<u64>,
    nonce: String,
}

async fn sotw(
    shared: Arc<Shared>,
    mut reqs: Streaming<DiscoveryRequest>,
    tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
) {
    let mut subs: BTreeMap<String, SotwSub> = BTreeMap::new();
    let mut changed = shared.changed.subscribe();
    let send = |t: &str, sub: &mut SotwSub| -> Option<DiscoveryResponse> {
        let mut st = lock(&shared.state);
        st.nonce += 1;
        let nonce = st.nonce.to_string();
        let ty = st.types.get(t)?;
        let resources: Vec<(String, Any)> = ty
            .items
            .iter()
            .filter(|(n, _)| wildcard(t) || sub.names.contains(*n))
            .map(|(n, (_, a))| (n.clone(), a.clone()))
            .collect();
        sub.sent_version = Some(ty.version);
        sub.nonce = nonce.clone();
        lock(&shared.sent).push(Sent {
            type_url: t.to_owned(),
            version: ty.version.to_string(),
            nonce: nonce.clone(),
            names: resources.iter().map(|(n, _)| n.clone()).collect(),
            removed: Vec::new(),
            at: Instant::now(),
        });
        Some(DiscoveryResponse {
            version_info: ty.version.to_string(),
            resources: resources.into_iter().map(|(_, a)| a).collect(),
            type_url: t.to_owned(),
            nonce,
            ..Default::default()
        })
    };
    loop {
        tokio::select! {
            m = reqs.message() => {
                let Ok(Some(r)) = m else { return };
                lock(&shared.seen).push(Seen {
                    delta: false,
                    type_url: r.type_url.clone(),
                    version: r.version_info.clone(),
                    nonce: r.response_nonce.clone(),
                    names: r.resource_names.clone(),
                    error: r.error_detail.as_ref().map(|e| e.message.clone()),
                    node: r.node.as_ref().map(|n| n.id.clone()),
                    subscribe: Vec::new(),
                    unsubscribe: Vec::new(),
                    initial_versions: BTreeMap::new(),
                    at: Instant::now(),
                });
                let t = r.type_url.clone();
                let first = !subs.contains_key(&t);
                let sub = subs.entry(t.clone()).or_default();
                if !first && !r.response_nonce.is_empty() && r.response_nonce != sub.nonce {
                    continue; // stale
                }
                let names: BTreeSet<String> = r.resource_names.iter().cloned().collect();
                let names_changed = names != sub.names;
                sub.names = names;
                let current = lock(&shared.state).types.get(&t).map(|x| x.version);
                let behind = current.is_some() && current != sub.sent_version;
                if (first || names_changed || (behind && r.error_detail.is_none()))
                    && let Some(resp) = send(&t, sub)
                    && tx.send(Ok(resp)).await.is_err()
                {
                    return;
                }
            }
            r = changed.changed() => {
                if r.is_err() { return; }
                let types: Vec<String> = subs.keys().cloned().collect();
                // Make before break: clusters, endpoints, listeners, routes.
                let order = [CDS, EDS, LDS, RDS];
                for t in order.iter().filter(|t| types.iter().any(|x| x == *t)) {
                    let sub = subs.get_mut(*t).unwrap();
                    let current = lock(&shared.state).types.get(*t).map(|x| x.version);
                    if current.is_some()
                        && current != sub.sent_version
                        && let Some(resp) = send(t, sub)
                        && tx.send(Ok(resp)).await.is_err()
                    {
                        return;
                    }
                }
            }
        }
    }
}

#[derive(Default)]
struct DeltaSub {
    wildcard: bool,
    names: BTreeSet<String>,
    known: BTreeMap<String, String>,
}

async fn delta(
    shared: Arc<Shared>,
    mut reqs: Streaming<DeltaDiscoveryRequest>,
    tx: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
) {
    let mut subs: BTreeMap<String, DeltaSub> = BTreeMap::new();
    let mut changed = shared.changed.subscribe();
    let diff = |t: &str, sub: &mut DeltaSub, force: &[String]| -> Option<DeltaDiscoveryResponse> {
        let mut st = lock(&shared.state);
        let empty = Type::default();
        let type_version = st.types.get(t).map_or(0, |x| x.version);
        let ty_items: Vec<(String, u64, Any)> = st
            .types
            .get(t)
            .unwrap_or(&empty)
            .items
            .iter()
            .map(|(n, (v, a))| (n.clone(), *v, a.clone()))
            .collect();
        let mut resources = Vec::new();
        let mut present = BTreeSet::new();
        for (n, v, a) in ty_items {
            if !(sub.wildcard || sub.names.contains(&n)) {
                continue;
            }
            present.insert(n.clone());
            let vs = v.to_string();
            if sub.known.get(&n) != Some(&vs) || force.contains(&n) {
                sub.known.insert(n.clone(), vs.clone());
                resources.push(Resource {
                    name: n,
                    version: vs,
                    resource: Some(a),
                    ..Default::default()
                });
            }
        }
        let removed: Vec<String> = sub
            .known
            .keys()
            .filter(|n| !present.contains(*n))
            .cloned()
            .collect();
        for n in &removed {
            sub.known.remove(n);
        }
        if resources.is_empty() && removed.is_empty() {
            return None;
        }
        st.nonce += 1;
        let nonce = st.nonce.to_string();
        lock(&shared.sent).push(Sent {
            type_url: t.to_owned(),
            version: type_version.to_string(),
            nonce: nonce.clone(),
            names: resources.iter().map(|r| r.name.clone()).collect(),
            removed: removed.clone(),
            at: Instant::now(),
        });
        Some(DeltaDiscoveryResponse {
            resources,
            type_url: t.to_owned(),
            removed_resources: removed,
            nonce,
            ..Default::default()
        })
    };
    loop {
        tokio::select! {
            m = reqs.message() => {
                let Ok(Some(r)) = m else { return };
                lock(&shared.seen).push(Seen {
                    delta: true,
                    type_url: r.type_url.clone(),
                    nonce: r.response_nonce.clone(),
                    subscribe: r.resource_names_subscribe.clone(),
                    unsubscribe: r.resource_names_unsubscribe.clone(),
                    initial_versions: r.initial_resource_versions.clone().into_iter().collect(),
                    error: r.error_detail.as_ref().map(|e| e.message.clone()),
                    node: r.node.as_ref().map(|n| n.id.clone()),
                    version: String::new(),
                    names: Vec::new(),
                    at: Instant::now(),
                });
                let t = r.type_url.clone();
                let first = !subs.contains_key(&t);
                let sub = subs.entry(t.clone()).or_default();
                if first {
                    sub.known = r.initial_resource_versions.clone().into_iter().collect();
                    sub.wildcard = wildcard(&t) && (r.resource_names_subscribe.is_empty() || r.resource_names_subscribe.iter().any(|n| n == "*"));
                }
                for n in &r.resource_names_subscribe {
                    if n == "*" { sub.wildcard = true } else { sub.names.insert(n.clone()); }
                }
                for n in &r.resource_names_unsubscribe {
                    if n == "*" { sub.wildcard = false } else { sub.names.remove(n); }
                    sub.known.remove(n);
                }
                let force: Vec<String> = r.resource_names_subscribe.clone();
                if let Some(resp) = diff(&t, sub, &force) && tx.send(Ok(resp)).await.is_err() {
                    return;
                }
            }
            r = changed.changed() => {
                if r.is_err() { return; }
                for t in [CDS, EDS, LDS, RDS] {
                    let Some(sub) = subs.get_mut(t) else { continue };
                    if let Some(resp) = diff(t, sub, &[]) && tx.send(Ok(resp)).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

// Resource builders.

fn ads_source() -> core::ConfigSource {
    core::ConfigSource {
        config_source_specifier: Some(core::config_source::ConfigSourceSpecifier::Ads(
            Default::default(),
        )),
        resource_api_version: core::ApiVersion::V3 as i32,
        ..Default::default()
    }
}

fn socket(addr: &str, port: u32) -> core::Address {
    core::Address {
        address: Some(core::address::Address::SocketAddress(core::SocketAddress {
            address: addr.into(),
            port_specifier: Some(core::socket_address::PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}

/// An HTTP connection manager with the router, its routes over RDS.
pub fn hcm_rds(route: &str) -> hcm::HttpConnectionManager {
    hcm::HttpConnectionManager {
        stat_prefix: "ingress_http".into(),
        codec_type: hcm::http_connection_manager::CodecType::Auto as i32,
        http_filters: vec![hcm::HttpFilter {
            name: "envoy.filters.http.router".into(),
            config_type: Some(hcm::http_filter::ConfigType::TypedConfig(any(
                &envoy_types::pb::envoy::extensions::filters::http::router::v3::Router::default(),
            ))),
            ..Default::default()
        }],
        route_specifier: Some(hcm::http_connection_manager::RouteSpecifier::Rds(
            hcm::Rds {
                route_config_name: route.into(),
                config_source: Some(ads_source()),
            },
        )),
        ..Default::default()
    }
}

/// A listener on `127.0.0.1:port` (0: any free port) with `h`.
pub fn listener_with(name: &str, port: u32, h: hcm::HttpConnectionManager) -> ls::Listener {
    ls::Listener {
        name: name.into(),
        address: Some(socket("127.0.0.1", port)),
        filter_chains: vec![ls::FilterChain {
            filters: vec![ls::Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(ls::filter::ConfigType::TypedConfig(any(&h))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A listener whose routes come over RDS.
pub fn listener(name: &str, port: u32, route: &str) -> ls::Listener {
    listener_with(name, port, hcm_rds(route))
}

/// A route to a cluster by path prefix.
pub fn to_cluster(prefix: &str, cluster: &str) -> rt::Route {
    rt::Route {
        r#match: Some(rt::RouteMatch {
            path_specifier: Some(rt::route_match::PathSpecifier::Prefix(prefix.into())),
            ..Default::default()
        }),
        action: Some(rt::route::Action::Route(rt::RouteAction {
            cluster_specifier: Some(rt::route_action::ClusterSpecifier::Cluster(cluster.into())),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// A route splitting requests between clusters by weight.
pub fn weighted(prefix: &str, parts: &[(&str, u32)]) -> rt::Route {
    let mut r = to_cluster(prefix, "unused");
    if let Some(rt::route::Action::Route(a)) = &mut r.action {
        a.cluster_specifier = Some(rt::route_action::ClusterSpecifier::WeightedClusters(
            rt::WeightedCluster {
                clusters: parts
                    .iter()
                    .map(|(n, w)| rt::weighted_cluster::ClusterWeight {
                        name: (*n).into(),
                        weight: Some(envoy_types::pb::google::protobuf::UInt32Value { value: *w }),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            },
        ));
    }
    r
}

/// A route configuration with one virtual host for every domain.
pub fn route_config(name: &str, routes: Vec<rt::Route>) -> rt::RouteConfiguration {
    rt::RouteConfiguration {
        name: name.into(),
        virtual_hosts: vec![rt::VirtualHost {
            name: "all".into(),
            domains: vec!["*".into()],
            routes,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// An EDS cluster.
pub fn eds_cluster(name: &str) -> cl::Cluster {
    cl::Cluster {
        name: name.into(),
        cluster_discovery_type: Some(cl::cluster::ClusterDiscoveryType::Type(
            cl::cluster::DiscoveryType::Eds as i32,
        )),
        connect_timeout: Some(envoy_types::pb::google::protobuf::Duration {
            seconds: 1,
            nanos: 0,
        }),
        eds_cluster_config: Some(cl::cluster::EdsClusterConfig {
            eds_config: Some(ads_source()),
            service_name: String::new(),
        }),
        ..Default::default()
    }
}

/// An endpoint: address, weight, health status.
pub fn endpoint(addr: SocketAddr, weight: u32, health: core::HealthStatus) -> ep::LbEndpoint {
    ep::LbEndpoint {
        host_identifier: Some(ep::lb_endpoint::HostIdentifier::Endpoint(ep::Endpoint {
            address: Some(socket(&addr.ip().to_string(), u32::from(addr.port()))),
            ..Default::default()
        })),
        health_status: health as i32,
        load_balancing_weight: Some(envoy_types::pb::google::protobuf::UInt32Value {
            value: weight,
        }),
        ..Default::default()
    }
}

/// A cluster's endpoints (priority 0).
pub fn cla(cluster: &str, endpoints: Vec<ep::LbEndpoint>) -> ep::ClusterLoadAssignment {
    ep::ClusterLoadAssignment {
        cluster_name: cluster.into(),
        endpoints: vec![ep::LocalityLbEndpoints {
            lb_endpoints: endpoints,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Healthy endpoints of weight 1.
pub fn cla_of(cluster: &str, addrs: &[SocketAddr]) -> ep::ClusterLoadAssignment {
    cla(
        cluster,
        addrs
            .iter()
            .map(|a| endpoint(*a, 1, core::HealthStatus::Healthy))
            .collect(),
    )
}
