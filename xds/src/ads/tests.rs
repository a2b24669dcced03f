//! The protocol engine against a fake applier: ACKs, NACKs, removals, warming, delta.

use super::*;
use crate::testing::eds;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::listener::v3 as ls;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use std::sync::Mutex;

/// Records the configurations applied; refuses those with a frontend named `bad`.
#[derive(Default)]
struct Fake {
    applied: Mutex<Vec<Config>>,
}

impl Applier for Fake {
    fn apply(&self, cfg: Config) -> Result<(), ConfigErrors> {
        if cfg.frontends.contains("bad") {
            return Err(ConfigErrors(vec![rampart_config::ConfigError::new(
                Default::default(),
                "frontends.bad.bind",
                "cannot bind 127.0.0.1:1: address in use",
            )]));
        }
        self.applied.lock().unwrap().push(cfg);
        Ok(())
    }
}

fn engine(mode: XdsMode) -> Engine {
    engine_waiting(mode, Duration::from_millis(50))
}

/// An engine whose resources wait `wait` for what they need by default.
fn engine_waiting(mode: XdsMode, wait: Duration) -> Engine {
    let base = rampart_config::load_str(
        "xds: { server: \"http://127.0.0.1:1\", node: { id: n } }\n",
        None,
        &std::collections::HashMap::<String, String>::new(),
    )
    .unwrap();
    Engine::new(mode, Node::default(), true, wait, base)
}

fn any<T: Message + prost::Name>(m: &T) -> Any {
    Any {
        type_url: T::type_url(),
        value: m.encode_to_vec(),
    }
}

fn listener(name: &str) -> ls::Listener {
    let h = hcm::HttpConnectionManager {
        http_filters: vec![hcm::HttpFilter {
            name: "envoy.filters.http.router".into(),
            ..Default::default()
        }],
        route_specifier: Some(hcm::http_connection_manager::RouteSpecifier::RouteConfig(
            Default::default(),
        )),
        ..Default::default()
    };
    ls::Listener {
        name: name.into(),
        address: Some(core::Address {
            address: Some(core::address::Address::SocketAddress(core::SocketAddress {
                address: "127.0.0.1".into(),
                port_specifier: Some(core::socket_address::PortSpecifier::PortValue(0)),
                ..Default::default()
            })),
        }),
        filter_chains: vec![ls::FilterChain {
            filters: vec![ls::Filter {
                name: "hcm".into(),
                config_type: Some(ls::filter::ConfigType::TypedConfig(any(&h))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn sotw(type_url: &str, version: &str, nonce: &str, resources: Vec<Any>) -> DiscoveryResponse {
    DiscoveryResponse {
        version_info: version.into(),
        resources,
        type_url: type_url.into(),
        nonce: nonce.into(),
        ..Default::default()
    }
}

/// The ACK or NACK among `outs` for `type_url`: (version, nonce, error).
fn answer(outs: &[Out], type_url: &str) -> (String, String, Option<String>) {
    outs.iter()
        .rev()
        .find_map(|o| match o {
            Out::Sotw(r) if r.type_url == type_url && !r.response_nonce.is_empty() => Some((
                r.version_info.clone(),
                r.response_nonce.clone(),
                r.error_detail.as_ref().map(|e| e.message.clone()),
            )),
            _ => None,
        })
        .unwrap()
}

#[test]
fn identical_resources_again_are_acked_without_applying() {
    let f = Fake::default();
    let mut e = engine(XdsMode::Sotw);
    e.on_connect();
    e.on_sotw(
        sotw(crate::proto::LISTENER, "1", "a", vec![any(&listener("l"))]),
        &f,
    );
    assert_eq!(f.applied.lock().unwrap().len(), 1);
    let outs = e.on_sotw(
        sotw(crate::proto::LISTENER, "2", "b", vec![any(&listener("l"))]),
        &f,
    );
    assert_eq!(
        answer(&outs, crate::proto::LISTENER),
        ("2".into(), "b".into(), None)
    );
    assert_eq!(
        f.applied.lock().unwrap().len(),
        1,
        "an unchanged listener was applied again"
    );
}

#[test]
fn unknown_types_and_duplicate_names_are_nacked() {
    let f = Fake::default();
    let mut e = engine(XdsMode::Sotw);
    e.on_connect();
    let outs = e.on_sotw(
        sotw(
            "type.googleapis.com/envoy.config.core.v3.Node",
            "1",
            "n",
            vec![],
        ),
        &f,
    );
    let (_, nonce, err) = answer(&outs, "type.googleapis.com/envoy.config.core.v3.Node");
    assert_eq!(nonce, "n");
    assert!(err.unwrap().contains("does not handle"));
    let outs = e.on_sotw(
        sotw(
            crate::proto::LISTENER,
            "1",
            "d",
            vec![any(&listener("l")), any(&listener("l"))],
        ),
        &f,
    );
    let (version, _, err) = answer(&outs, crate::proto::LISTENER);
    assert_eq!(
        version, "",
        "a NACK keeps the last accepted version (none yet)"
    );
    assert!(err.unwrap().contains("more than once"));
    assert!(f.applied.lock().unwrap().is_empty());
}

#[test]
fn a_resource_the_proxy_refuses_is_taken_back_and_the_others_apply() {
    let f = Fake::default();
    let mut e = engine(XdsMode::Sotw);
    e.on_connect();
    let outs = e.on_sotw(
        sotw(
            crate::proto::LISTENER,
            "1",
            "a",
            vec![any(&listener("good")), any(&listener("bad"))],
        ),
        &f,
    );
    let (version, _, err) = answer(&outs, crate::proto::LISTENER);
    let err = err.unwrap();
    assert!(
        err.contains("listener \"bad\"") && err.contains("address in use"),
        "{err}"
    );
    assert_eq!(version, "");
    let applied = f.applied.lock().unwrap();
    let last = applied.last().unwrap();
    assert!(last.frontends.contains("good") && !last.frontends.contains("bad"));
    assert!(e.store.listeners.contains_key("good") && !e.store.listeners.contains_key("bad"));
}

#[test]
fn state_of_the_world_absence_removes_listeners_and_clusters() {
    let f = Fake::default();
    let mut e = engine(XdsMode::Sotw);
    e.on_connect();
    e.on_sotw(
        sotw(
            crate::proto::LISTENER,
            "1",
            "a",
            vec![any(&listener("x")), any(&listener("y"))],
        ),
        &f,
    );
    e.on_sotw(
        sotw(crate::proto::LISTENER, "2", "b", vec![any(&listener("y"))]),
        &f,
    );
    let last = f.applied.lock().unwrap().last().cloned().unwrap();
    assert_eq!(last.frontends.names().collect::<Vec<_>>(), ["y"]);
}

#[test]
fn a_cluster_warms_until_its_endpoints_or_the_timeout() {
    let f = Fake::default();
    // A wait no stalled test thread outlasts between two calls.
    let mut e = engine_waiting(XdsMode::Sotw, Duration::from_secs(30));
    e.on_connect();
    let outs = e.on_sotw(
        sotw(crate::proto::CLUSTER, "1", "a", vec![any(&eds("web"))]),
        &f,
    );
    // Endpoints asked for before the CDS ACK; no listener request while warming.
    let urls: Vec<&str> = outs
        .iter()
        .map(|o| match o {
            Out::Sotw(r) => r.type_url.as_str(),
            Out::Delta(r) => r.type_url.as_str(),
        })
        .collect();
    assert_eq!(urls, [crate::proto::ENDPOINT, crate::proto::CLUSTER]);
    assert!(e.store.clusters["web"].warming.is_some());
    assert!(f.applied.lock().unwrap().is_empty());
    assert!(
        e.on_tick(&f).is_empty(),
        "the cluster stopped waiting early"
    );
    let outs = e.on_tick_at(Instant::now() + Duration::from_secs(61), &f);
    assert!(e.store.clusters["web"].active.is_some());
    assert!(
        f.applied
            .lock()
            .unwrap()
            .last()
            .unwrap()
            .backends
            .contains("web")
    );
    assert!(
        outs.iter()
            .any(|o| matches!(o, Out::Sotw(r) if r.type_url == crate::proto::LISTENER))
    );
}

#[test]
fn delta_reconnect_sends_initial_versions_and_empty_wildcard_subscriptions() {
    let f = Fake::default();
    let mut e = engine(XdsMode::Delta);
    e.on_connect();
    e.on_delta(
        DeltaDiscoveryResponse {
            type_url: crate::proto::LISTENER.into(),
            nonce: "1".into(),
            resources: vec![envoy_types::pb::envoy::service::discovery::v3::Resource {
                name: "l".into(),
                version: "v7".into(),
                resource: Some(any(&listener("l"))),
                ..Default::default()
            }],
            ..Default::default()
        },
        &f,
    );
    let outs = e.on_connect();
    let lds = outs
        .iter()
        .find_map(|o| match o {
            Out::Delta(r) if r.type_url == crate::proto::LISTENER => Some(r.clone()),
            _ => None,
        })
        .unwrap();
    assert!(lds.resource_names_subscribe.is_empty());
    assert_eq!(
        lds.initial_resource_versions.get("l").map(String::as_str),
        Some("v7")
    );
    assert!(
        outs.iter()
            .any(|o| matches!(o, Out::Delta(r) if r.node.is_some()))
    );
}

/// `n` endpoints for `cluster`, all different.
fn cla(
    cluster: &str,
    n: usize,
) -> envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment {
    use envoy_types::pb::envoy::config::endpoint::v3 as ep;
    let endpoint = |i: usize| ep::LbEndpoint {
        host_identifier: Some(ep::lb_endpoint::HostIdentifier::Endpoint(ep::Endpoint {
            address: Some(core::Address {
                address: Some(core::address::Address::SocketAddress(core::SocketAddress {
                    address: format!("127.{}.{}.{}", i / 62_500, i / 250 % 250, i % 250 + 1),
                    port_specifier: Some(core::socket_address::PortSpecifier::PortValue(80)),
                    ..Default::default()
                })),
            }),
            ..Default::default()
        })),
        ..Default::default()
    };
    ep::ClusterLoadAssignment {
        cluster_name: cluster.into(),
        endpoints: vec![ep::LocalityLbEndpoints {
            lb_endpoints: (0..n).map(endpoint).collect(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[test]
fn responses_past_the_configuration_limits_are_nacked_and_change_nothing() {
    use crate::proto::{CLUSTER, ENDPOINT, LISTENER};
    let f = Fake::default();
    let mut e = engine(XdsMode::Sotw);
    e.on_connect();
    // More listeners in one response than there may be frontends: refused before any is
    // read.
    let many: Vec<Any> = (0..=10_000)
        .map(|i| any(&listener(&format!("l{i}"))))
        .collect();
    let outs = e.on_sotw(sotw(LISTENER, "1", "a", many), &f);
    let (version, nonce, err) = answer(&outs, LISTENER);
    assert_eq!((version.as_str(), nonce.as_str()), ("", "a"));
    assert_eq!(
        err.as_deref(),
        Some("the response has 10001 listeners, more than the 10000 rampart takes; refused")
    );
    assert!(f.applied.lock().unwrap().is_empty());
    assert!(e.store.listeners.is_empty());

    // Each response within its own bound, but past the servers' limit together: the
    // response that would cross it is taken back whole.
    e.on_sotw(
        sotw(CLUSTER, "1", "c", vec![any(&eds("x")), any(&eds("y"))]),
        &f,
    );
    let outs = e.on_sotw(sotw(ENDPOINT, "1", "e1", vec![any(&cla("x", 60_000))]), &f);
    assert_eq!(answer(&outs, ENDPOINT), ("1".into(), "e1".into(), None));
    let outs = e.on_sotw(
        sotw(
            ENDPOINT,
            "2",
            "e2",
            vec![any(&cla("x", 50_000)), any(&cla("y", 60_000))],
        ),
        &f,
    );
    let (version, nonce, err) = answer(&outs, ENDPOINT);
    assert_eq!((version.as_str(), nonce.as_str()), ("1", "e2"));
    let err = err.unwrap();
    assert!(
        err.contains("the configuration would be too large")
            && err.contains("more than 100000 servers in the configuration"),
        "{err}"
    );
    let applied = f.applied.lock().unwrap();
    let last = applied.last().unwrap();
    assert_eq!(last.backends.get("x").unwrap().servers.len(), 60_000);
    assert_eq!(last.backends.get("y").map(|b| b.servers.len()), Some(0));
}
