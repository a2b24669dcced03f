//! rampart-xds: configuration from an Envoy xDS control plane.
//!
//! It owns the ADS stream (state of the world and delta; ACK/NACK, warming, keeping the
//! last good configuration when an update is rejected), the translation of Envoy's
//! listeners, routes, clusters and endpoints into `rampart-config` values, and the
//! reading of Envoy's bootstrap file. Every configuration it builds goes through the
//! applier the binary gives it, the same one a YAML reload uses.
//!
//! It depends on `rampart-config` only, never on the proxy, and no protobuf type leaves it:
//! its public face is [`Xds`] with its [`Settings`], the [`Applier`] the binary provides,
//! [`bootstrap::load`], and the [`view`] types.

mod check;
mod fields;
mod proto;
mod translate;
mod yamlde;

mod ads;
pub mod bootstrap;
pub mod client;
mod store;
#[cfg(test)]
mod testing;
mod tls;
pub mod view;

pub use ads::{Applier, BaseRefused};
pub use client::{Settings, Xds};
