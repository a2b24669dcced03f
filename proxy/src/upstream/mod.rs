//! Connections to servers: pooled HTTP/1.1 keep-alive connections and multiplexed HTTP/2,
//! over TCP or TLS.

pub mod connect;
pub mod h1;
pub mod h2;
pub mod pool;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};

use crate::body::Body;
use crate::error::ProxyError;
pub use connect::UpstreamTls;
pub use h1::Timing;
use pool::Pool;

/// Protocol spoken to a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Http1,
    H2,
}

/// How to reach one server.
#[derive(Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    pub tls: Option<UpstreamTls>,
    pub proto: Proto,
    pub connect_timeout: Duration,
    pub pool: Arc<Pool>,
}

impl Upstream {
    /// Sends a request and returns the response with its body still streaming. `measure`
    /// asks for connect and response times (for access logs).
    pub async fn send(
        &self,
        req: Request<Body>,
        server_timeout: Duration,
        measure: bool,
    ) -> Result<(Response<Body>, Timing), ProxyError> {
        match self.proto {
            Proto::Http1 => h1::send(self, req, server_timeout, measure).await,
            Proto::H2 => h2::send(self, req, server_timeout, measure).await,
        }
    }
}
