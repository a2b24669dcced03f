//! Envoy's protobuf types: their type URLs, and the descriptors that let rampart read
//! Envoy's JSON/YAML form (the bootstrap file) and see which fields a resource sets.
//!
//! The generated Rust types come from the `envoy-types` crate. Its descriptors are cut
//! down to what rampart reads (`envoy.desc`, made by `examples/trim_descriptors.rs`).

use std::sync::LazyLock;

use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};

pub use envoy_types::pb::envoy::config::cluster::v3::Cluster;
pub use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
pub use envoy_types::pb::envoy::config::listener::v3::Listener;
pub use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
pub use envoy_types::pb::google::protobuf::Any;

/// `type.googleapis.com/` and a message's full name.
pub const TYPE_PREFIX: &str = "type.googleapis.com/";

pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

pub const HCM: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
pub const TCP_PROXY: &str =
    "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";
pub const ROUTER: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";
pub const HTTP_PROTOCOL_OPTIONS: &str =
    "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
pub const FILE_ACCESS_LOG: &str =
    "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog";
pub const STDOUT_ACCESS_LOG: &str =
    "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog";
pub const STDERR_ACCESS_LOG: &str =
    "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StderrAccessLog";

static POOL: LazyLock<Option<DescriptorPool>> =
    LazyLock::new(
        || match DescriptorPool::decode(&include_bytes!("envoy.desc")[..]) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::error!("Envoy descriptors cannot be read: {e}");
                None
            }
        },
    );

/// The descriptors of Envoy's messages.
pub fn pool() -> Option<&'static DescriptorPool> {
    POOL.as_ref()
}

/// The descriptor of a message by full name (`envoy.config.listener.v3.Listener`).
pub fn descriptor(full_name: &str) -> Option<MessageDescriptor> {
    pool()?.get_message_by_name(full_name)
}

/// Decodes `bytes` as the message `full_name` into its reflective form.
pub fn dynamic(full_name: &str, bytes: &[u8]) -> Result<DynamicMessage, String> {
    let desc = descriptor(full_name).ok_or_else(|| format!("unknown message type {full_name}"))?;
    DynamicMessage::decode(desc, bytes).map_err(|e| format!("invalid {full_name}: {e}"))
}

/// Decodes an `Any` holding a `T`, checking its type URL.
pub fn unpack<T: prost::Message + prost::Name + Default>(any: &Any) -> Result<T, String> {
    let want = T::type_url();
    if any.type_url != want {
        return Err(format!("expected {want}, found {}", any.type_url));
    }
    T::decode(any.value.as_slice()).map_err(|e| format!("invalid {}: {e}", T::full_name()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Name;

    #[test]
    fn descriptors_know_every_type_rampart_reads() {
        for url in [
            LISTENER,
            ROUTE,
            CLUSTER,
            ENDPOINT,
            HCM,
            ROUTER,
            HTTP_PROTOCOL_OPTIONS,
            "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            FILE_ACCESS_LOG,
            STDOUT_ACCESS_LOG,
            STDERR_ACCESS_LOG,
            "type.googleapis.com/envoy.config.bootstrap.v3.Bootstrap",
        ] {
            let name = url.strip_prefix(TYPE_PREFIX).unwrap();
            assert!(descriptor(name).is_some(), "{name} missing from envoy.desc");
        }
        assert_eq!(Listener::type_url(), LISTENER);
        assert_eq!(ClusterLoadAssignment::type_url(), ENDPOINT);
    }

    #[test]
    fn descriptors_agree_with_generated_types() {
        // A message encoded by the generated type reads back field for field.
        let l = Listener {
            name: "l".into(),
            stat_prefix: "s".into(),
            ..Default::default()
        };
        let d = dynamic(
            "envoy.config.listener.v3.Listener",
            &prost::Message::encode_to_vec(&l),
        )
        .unwrap();
        let names: Vec<String> = d.fields().map(|(f, _)| f.name().to_owned()).collect();
        assert_eq!(names, ["name", "stat_prefix"]);
        assert_eq!(d.transcode_to::<Listener>().unwrap(), l);
    }
}
