//! rampart-proxy: the data plane.
//!
//! It owns everything on the request path: listeners, TLS, the HTTP/1.1 and HTTP/2
//! servers, rules, backend and server choice, upstream connection pools, and the live
//! state (counters, server states) that outlives configuration reloads. It depends on
//! `rampart-config` for the model it compiles, and on nothing else of rampart's.
//!
//! The request path, in module order:
//! [`listener`] -> [`server`] (TLS, h1/h2) -> [`handler`] (frontend [`rules`], routes) ->
//! [`path`] (the backend half as tower layers: backend rules, [`headers`], persistence,
//! breaker, retry, [`balance`], outlier detection, counters) -> [`upstream`] -> back through [`server`];
//! [`done`] records each request and completes it once, [`error`] turns failures into
//! responses in one place, and [`log`] writes access logs off the request path.

pub mod balance;
pub mod body;
pub mod compress;
pub mod done;
pub mod error;
pub mod handler;
pub mod headers;
pub mod http1;
pub mod inherit;
pub mod io;
pub mod listener;
pub mod log;
pub mod path;
pub mod proxy_protocol;
pub mod resilience;
pub mod routing;
pub mod rules;
pub mod runtime;
pub mod server;
pub mod sessions;
pub mod snapshot;
pub mod state;
pub mod stick;
pub mod tcp;
pub mod tls;
pub mod trace;
pub mod upstream;
pub mod worker;

pub use body::Body;
pub use runtime::{Bound, ProxyHandle, StartError, check, start};
