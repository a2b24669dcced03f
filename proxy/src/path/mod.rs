//! The backend half of the request path, as a stack of tower layers.
//!
//! Once the handler has run the frontend's rules and chosen a backend, the request goes
//! down this stack, built in one place ([`stack`]):
//!
//! ```text
//!   Rules      the backend's http_request rules; its http_response rules on the way back
//!   Headers    hop-by-hop headers off both ways, forwarding headers on
//!   Persist    stick rules, the persistence cookie and the balancer's hash key; after the
//!              exchange, the stick-table entries and the cookie
//!   Breaker    the backend's in-flight limit, with its FIFO queue
//!   Retry      tower's retry with rampart's policy: replay, budget, back-off, max_retries
//!   Balance    a server by the backend's algorithm, stickiness and max_connections
//!   ---------  per server (an Attempt: the request and the server picked for it)
//!   Trace      a span per attempt of a traced request, its id in `traceparent`
//!   Outlier    outlier detection, fed once per attempt
//!   Counters   the server's and backend's error counters
//!   Upstream   the exchange with the server (HTTP/1.1 pool or HTTP/2)
//! ```
//!
//! Every layer is a small `Copy` service that borrows the request's [`Exchange`]: the
//! backend, where the request came from ([`Origin`]: frontend, route, fetch environment,
//! session), and the request's record ([`Done`]), which the layers fill in (rules'
//! counters, queue time, server, retries, timing). No layer holds a lock shared with
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
pub(crate) mod future;
mod headers;
pub(crate) mod persist;
pub(crate) mod pick;
mod retry;
mod rules;
pub(crate) mod server;
mod trace;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use http::{Method, Request, Response, Uri, Version};
use tower::{Service, ServiceBuilder};

use crate::body::Body;
use crate::done::Done;
use crate::error::ProxyError;
use crate::resilience::retry::RetryPolicy;
use crate::routing::Route;
use crate::rules::Env;
use crate::sessions::Session;
use crate::snapshot::{Backend, Frontend};

pub use breaker::BreakerLayer;
pub use headers::HeadersLayer;
pub use persist::{Persist, PersistLayer};
pub use pick::BalanceLayer;
pub use retry::{RetryLayer, Tried};
pub use rules::RulesLayer;
pub use server::{CountersLayer, OutlierLayer, upstream_client};
pub use trace::TraceLayer;

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
    /// The hash a hashing balancer uses. Without it, the persistence layer computes one
    /// from the route's hash keys or the backend's (`None` there too: the balancer picks
    /// as if unhashed).
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

/// Where a request comes from: what the layers need to know besides the request.
#[derive(Clone, Copy)]
pub struct Origin<'a> {
    /// The frontend it came in on (forwarding headers, its log).
    pub fe: &'a Frontend,
    /// The route that chose the backend, if one did (its hash keys).
    pub route: Option<&'a Route>,
    /// What fetches need besides the request: the connection, its stick counters.
    pub env: &'a Env<'a>,
    /// The connection in the session registry.
    pub session: &'a Session,
}

/// What the layers of one request share.
pub struct Exchange<'a> {
    pub be: &'a Backend,
    pub from: Origin<'a>,
    /// Whether timings are measured (an access log wants them).
    pub measure: bool,
    /// The request's trace, when it is traced.
    pub trace: Option<crate::trace::AttemptParent>,
    state: Mutex<State<'a>>,
}

/// The request line after the backend's rules, which response rules read.
pub struct Line {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
}

impl Line {
    /// The line as response rules take it.
    pub fn as_request_line(&self) -> crate::rules::RequestLine<'_> {
        crate::rules::RequestLine {
            method: &self.method,
            uri: &self.uri,
            version: self.version,
        }
    }
}

/// The parts of an exchange that layers change as the request goes.
pub struct State<'a> {
    /// The request's record, borrowed from the handler, which completes it.
    pub done: &'a mut Done,
    /// Set when a backend rule answered the request itself (it went no further).
    pub answered: bool,
    /// The request line as the backend's rules left it, for the response rules.
    pub line: Option<Line>,
    /// What persistence asks of this request.
    pub persist: Persist,
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
    pub fn new(be: &'a Backend, from: Origin<'a>, done: &'a mut Done) -> Self {
        let trace = done.trace.as_ref().map(|t| crate::trace::AttemptParent {
            trace_id: t.record.trace_id,
            span_id: t.record.span_id,
        });
        Self {
            be,
            from,
            measure: from.fe.log.is_some(),
            trace,
            state: Mutex::new(State {
                done,
                answered: false,
                line: None,
                persist: Persist::default(),
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
        .layer(RulesLayer(x))
        .layer(HeadersLayer(x))
        .layer(PersistLayer(x))
        .layer(BreakerLayer(x))
        .layer(RetryLayer(x))
        .layer(BalanceLayer(x))
        .layer(TraceLayer(x))
        .layer(OutlierLayer(x))
        .layer(CountersLayer(x))
        .service(leaf)
}

#[cfg(test)]
mod tests;
