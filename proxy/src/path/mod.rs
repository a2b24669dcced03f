//! The backend half of the request path, as a stack of tower layers.
//!
//! Once the handler has chosen a backend and prepared the request, the request goes down
//! this stack, built in one place ([`stack`]):
//!
//! ```text
//!   Persist    stick-table entries and the persistence cookie, after the exchange
//!   Breaker    the backend's in-flight limit, with its FIFO queue
//!   Retry      tower's retry with rampart's policy: replay, budget, back-off, max_retries
//!   Balance    a server by the backend's algorithm, stickiness and max_connections
//!   ---------  per server (an Attempt: the request and the server picked for it)
//!   Outlier    outlier detection, fed once per attempt
//!   Counters   the server's and backend's error counters
//!   Upstream   the exchange with the server (HTTP/1.1 pool or HTTP/2)
//! ```
//!
//! Every layer is a small `Copy` service that borrows the request's [`Exchange`]: the
//! backend, the connection's session, and the request's record ([`Done`]), which the
//! layers fill in (queue time, server, retries, timing). No layer holds a lock shared with
//! other requests while it waits, and services are always ready, so there is no buffer.
//! Per-route settings travel in one request extension, [`RouteSettings`]. The leaf is a
//! parameter, so the stack can be tested with a mock upstream.

/// Declares a layer over the request's [`Exchange`] and its service: the layer is built
/// with the exchange, and wraps an inner service with it.
macro_rules! layer {
    ($layer:ident => $svc:ident) => {
        #[derive(Clone, Copy)]
        pub struct $layer<'a>(pub &'a $crate::path::Exchange<'a>);

        impl<'a, S> tower::Layer<S> for $layer<'a> {
            type Service = $svc<'a, S>;
            fn layer(&self, inner: S) -> Self::Service {
                $svc { x: self.0, inner }
            }
        }

        #[derive(Clone, Copy)]
        pub struct $svc<'a, S> {
            x: &'a $crate::path::Exchange<'a>,
            inner: S,
        }
    };
}
use layer;

mod breaker;
mod future;
mod persist;
mod pick;
mod retry;
mod server;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use http::{Request, Response};
use tower::{Service, ServiceBuilder};

use crate::body::Body;
use crate::done::Done;
use crate::error::ProxyError;
use crate::resilience::retry::RetryPolicy;
use crate::sessions::Session;
use crate::snapshot::Backend;

pub use breaker::BreakerLayer;
pub use persist::PersistLayer;
pub(crate) use persist::{Persist, persistence, request_cookie};
pub use pick::BalanceLayer;
pub use retry::{RetryLayer, Tried};
pub use server::{CountersLayer, OutlierLayer, upstream_client};

/// What a layer's future resolves to.
pub type Outcome = Result<Response<Body>, ProxyError>;

/// A boxed future, used where a layer waits (a queue, a body, a server).
pub type BoxFuture<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Outcome> + Send + 'a>>;

/// A route's settings for the backend path, replacing the backend's own: what xDS routes
/// and `use_backend` routes set. A request without it takes the backend's settings.
#[derive(Clone, Debug, Default)]
pub struct RouteSettings {
    /// Time for the server's response (`timeouts.server`).
    pub timeout: Option<Duration>,
    /// The retry policy.
    pub retries: Option<Arc<RetryPolicy>>,
    /// The hash a hashing balancer uses (`None`: the balancer picks as if unhashed).
    pub hash: Option<u64>,
}

impl RouteSettings {
    /// Whether the settings change nothing (then the request carries none).
    pub fn is_empty(&self) -> bool {
        self.timeout.is_none() && self.retries.is_none() && self.hash.is_none()
    }
}

/// One attempt: the request, the server chosen for it, and the time it has for the
/// response head (the retry policy's `per_try_timeout`, if any).
pub struct Attempt {
    pub server: usize,
    pub req: Request<Body>,
    pub per_try: Option<Duration>,
}

/// What the layers of one request share.
pub struct Exchange<'a> {
    pub be: &'a Backend,
    pub session: &'a Session,
    /// Whether timings are measured (an access log wants them).
    pub measure: bool,
    /// What persistence asks of this request.
    pub persist: Persist,
    state: Mutex<State<'a>>,
}

/// The parts of an exchange that layers change as the request goes.
pub struct State<'a> {
    /// The request's record, borrowed from the handler, which completes it.
    pub done: &'a mut Done,
    /// Servers tried, in order.
    pub tried: Tried,
    /// Whether a retry may go to another server (the retry policy's `redispatch`).
    pub redispatch: bool,
    /// Time each attempt has for the response head (the policy's `per_try_timeout`).
    pub per_try: Option<Duration>,
    /// Held while this request has a retry in flight (`circuit_breaker.max_retries`).
    pub(crate) retrying: Option<retry::RetryGuard>,
}

impl<'a> Exchange<'a> {
    pub fn new(
        be: &'a Backend,
        session: &'a Session,
        measure: bool,
        persist: Persist,
        done: &'a mut Done,
    ) -> Self {
        Self {
            be,
            session,
            measure,
            persist,
            state: Mutex::new(State {
                done,
                tried: Tried::new(),
                redispatch: true,
                per_try: None,
                retrying: None,
            }),
        }
    }

    /// The exchange's state. Only one layer runs at a time, so this never waits, and no
    /// layer keeps it across an await.
    pub fn state(&self) -> MutexGuard<'_, State<'a>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The backend path for one request: the layers above over `leaf`, which talks to the
/// servers ([`upstream_client`], or a mock in tests).
pub fn stack<'a, L>(
    x: &'a Exchange<'a>,
    leaf: L,
) -> impl Service<Request<Body>, Response = Response<Body>, Error = ProxyError, Future: Send + 'a> + 'a
where
    L: Service<Attempt, Response = Response<Body>, Error = ProxyError> + Clone + Send + 'a,
    L::Future: Send + 'a,
{
    ServiceBuilder::new()
        .layer(PersistLayer(x))
        .layer(BreakerLayer(x))
        .layer(RetryLayer(x))
        .layer(BalanceLayer(x))
        .layer(OutlierLayer(x))
        .layer(CountersLayer(x))
        .service(leaf)
}

#[cfg(test)]
mod tests;
