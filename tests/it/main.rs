//! Integration tests: the proxy in-process on ephemeral ports, real origin servers, real
//! clients; the binary for the command line.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod balance;
mod certs;
mod cli;
mod compress;
mod cp;
mod errors;
mod framing;
mod frontend;
mod limits;
mod maps;
mod mtls;
mod ocsp;
mod peers;
mod proxy_protocol;
mod reload;
mod resilience;
mod rules;
mod runtime_api;
#[path = "../../vrrp/tests/lab/stall.rs"]
mod stall;
mod stats_page;
mod stick;
mod support;
mod syslog;
mod tcp;
mod tls;
mod tracing;
mod transparency;
mod upgrade;
mod upstream;
mod xds;
mod xds_cli;
mod xds_edge;
