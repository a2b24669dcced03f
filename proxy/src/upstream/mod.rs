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
use crate::path::future::Either;
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
    /// The pool's identity in the registry of live pools.
    pub pool_key: crate::snapshot::PoolKey,
    /// The backend, whose open connections are counted against `max_conns`.
    pub backend: Arc<crate::state::BackendLive>,
    pub max_conns: u64,
    /// Begin each connection with a PROXY header (`send_proxy`, `send_proxy_v2`).
    pub send_proxy: Option<crate::proxy_protocol::Version>,
}

/// The client connection a request comes from: what a PROXY header to the server
/// describes, and whom a connection that began with one belongs to.
#[derive(Clone, Copy)]
pub struct Client<'a> {
    pub conn: &'a crate::rules::sample::ConnInfo,
    pub session: u64,
}

/// One open connection counted in its backend; uncounted when dropped.
pub struct ConnSlot(Arc<crate::state::BackendLive>);

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0
            .conns_open
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Upstream {
    /// Counts a new connection, unless the backend is at its `max_connections`.
    pub fn conn_slot(&self) -> Result<ConnSlot, ProxyError> {
        use std::sync::atomic::Ordering::Relaxed;
        let n = self.backend.conns_open.fetch_add(1, Relaxed) + 1;
        if n > self.max_conns {
            self.backend.conns_open.fetch_sub(1, Relaxed);
            return Err(crate::resilience::limits::overloaded(
                crate::state::Limit::MaxConnections,
            ));
        }
        Ok(ConnSlot(self.backend.clone()))
    }
}

impl Upstream {
    /// The client connection that connections to this server are private to, when they
    /// begin with a PROXY header.
    pub fn owner(&self, client: Client<'_>) -> Option<u64> {
        self.send_proxy.map(|_| client.session)
    }

    /// The PROXY header a new connection for `client` begins with, if the server takes
    /// one.
    pub fn proxy_header(&self, client: Client<'_>) -> Option<Vec<u8>> {
        let version = self.send_proxy?;
        let c = client.conn;
        let src = crate::proxy_protocol::Source {
            addrs: Some((c.client(), c.local())),
            alpn: c.alpn(),
            authority: c.server_name(),
        };
        let mut out = Vec::with_capacity(64);
        crate::proxy_protocol::encode(version, &src, &mut out);
        Some(out)
    }

    /// Sends a request and returns the response with its body still streaming. `measure`
    /// asks for connect and response times (for access logs).
    /// `head_timeout` bounds the wait for the response head (a retry policy's
    /// `per_try_timeout`); `server_timeout` bounds inactivity otherwise.
    ///
    /// Not an `async fn`: that would keep the request twice more in the exchange's future
    /// (its argument and the copy it hands on), next to the protocol's own future.
    pub fn send<'a>(
        &'a self,
        req: Request<Body>,
        server_timeout: Duration,
        head_timeout: Duration,
        measure: bool,
        client: Client<'a>,
    ) -> impl Future<Output = Result<(Response<Body>, Timing), ProxyError>> + Send + 'a {
        match self.proto {
            Proto::Http1 => Either::Left {
                fut: h1::send(self, req, server_timeout, head_timeout, measure, client),
            },
            Proto::H2 => Either::Right {
                fut: h2::send(self, req, head_timeout, measure, client),
            },
        }
    }
}
