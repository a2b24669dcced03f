//! rampart-xds: configuration from an Envoy xDS control plane.
//!
//! It owns the ADS stream (ACK/NACK, warming, keeping the last good configuration when an
//! update is rejected) and the translation of Envoy's listeners, routes and clusters into
//! `rampart-config` values, which then go through the same applier as a YAML reload.
//!
//! It depends on `rampart-config` only, never on the proxy, and no protobuf type leaves it.
//!
//! It holds no code yet: the crate fixes the boundary and the dependency rules above.
