//! The `xds` section: an Envoy xDS control plane that adds frontends and backends.

use std::time::Duration;

use crate::config_struct;
use crate::decode::{Cx, Decode, NamedMap, Spanned};
use crate::yaml::Node;

config_struct! {
    /// Where the control plane is and who this node is.
    pub struct Xds {
        /// The control plane's gRPC address: `http://host:port` (h2c) or
        /// `https://host:port` (TLS, see `tls`).
        pub server: Spanned<String>,
        pub node: XdsNode,
        /// `sotw` (state of the world, Envoy's `GRPC`) or `delta` (`DELTA_GRPC`).
        pub mode: XdsMode = XdsMode::Sotw,
        /// TLS to the control plane (with an `https://` server).
        pub tls: Option<XdsTls>,
        /// How long a new listener waits for its routes, and a new cluster for its
        /// endpoints, before it is used without them.
        pub initial_fetch_timeout: Duration = Duration::from_secs(15),
        /// Reconnection delays: jittered, doubling from `base` up to `max`.
        pub backoff: XdsBackoff,
    }
}

config_struct! {
    /// The node identity sent to the control plane.
    pub struct XdsNode {
        pub id: Spanned<String>,
        pub cluster: String = String::new(),
        /// String values sent as the node's metadata.
        pub metadata: NamedMap<String>,
    }
}

config_struct! {
    /// TLS to the control plane.
    pub struct XdsTls {
        /// PEM file of CA certificates the control plane's certificate must chain to;
        /// default: the bundled public roots.
        pub ca: Option<Spanned<String>>,
        /// Client certificate chain (PEM), for control planes that require one.
        pub cert: Option<Spanned<String>>,
        /// The client certificate's private key (PEM); default: read from `cert`.
        pub key: Option<Spanned<String>>,
        /// Name to send in SNI and to verify; default: the server's host.
        pub sni: Option<String>,
    }
}

config_struct! {
    /// Reconnection back-off.
    pub struct XdsBackoff {
        pub base: Duration = Duration::from_millis(500),
        pub max: Duration = Duration::from_secs(30),
    }
}

/// The xDS protocol variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdsMode {
    /// State of the world: every response carries all resources of a type (LDS, CDS).
    Sotw,
    /// Incremental: responses carry changes and removals.
    Delta,
}

impl XdsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            XdsMode::Sotw => "sotw",
            XdsMode::Delta => "delta",
        }
    }
}

impl Decode for XdsMode {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        cx.parse_scalar(node, "an xDS mode", |s| match s {
            "sotw" | "GRPC" => Ok(XdsMode::Sotw),
            "delta" | "DELTA_GRPC" => Ok(XdsMode::Delta),
            _ => Err(format!("unknown xDS mode {s:?} (expected sotw or delta)")),
        })
    }
}
