//! The per-server end of the path: outlier detection and error counters, fed once per
//! attempt, over the exchange with the server itself.

use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};

use http::Response;
use tower::Service;

use super::future::{After, Hook};
use super::{Attempt, Exchange, Outcome, RouteSettings};
use crate::body::Body;
use crate::error::{ErrorKind, ProxyError, Side};
use crate::resilience::outlier::Result as Outlier;
use crate::snapshot::Backend;

/// Declares a layer whose service runs `$hook` on each attempt's outcome.
macro_rules! hook_layer {
    ($layer:ident, $svc:ident, $hook:ident) => {
        super::layer!($layer => $svc);

        impl<'a, S> Service<Attempt> for $svc<'a, S>
        where
            S: Service<Attempt, Response = Response<Body>, Error = ProxyError>,
        {
            type Response = Response<Body>;
            type Error = ProxyError;
            type Future = After<S::Future, $hook<'a>>;

            fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
                self.inner.poll_ready(cx)
            }

            fn call(&mut self, a: Attempt) -> Self::Future {
                let hook = $hook {
                    be: self.x.be,
                    server: a.server,
                };
                After::new(self.inner.call(a), hook)
            }
        }
    };
}

hook_layer!(OutlierLayer, OutlierDetection, FeedOutlier);
hook_layer!(CountersLayer, Counters, CountErrors);

/// Feeds outlier detection with an attempt's outcome: its status, or a local failure for
/// errors on the server's side (a breaker's refusal is not the server's doing).
pub struct FeedOutlier<'a> {
    be: &'a Backend,
    server: usize,
}

impl Hook for FeedOutlier<'_> {
    fn after(self, out: &mut Outcome) {
        let Some(spec) = &self.be.outlier else {
            return;
        };
        let outcome = match out {
            Ok(resp) => Outlier::Status(resp.status().as_u16()),
            Err(e) if e.side == Side::Server && !matches!(e.kind, ErrorKind::Overloaded(_)) => {
                Outlier::LocalFailure
            }
            Err(_) => return,
        };
        feed_outlier(self.be, spec, self.server, outcome);
    }
}

/// Feeds server `si`'s outlier detection with one outcome.
pub(crate) fn feed_outlier(
    be: &Backend,
    spec: &crate::resilience::outlier::OutlierSpec,
    si: usize,
    outcome: Outlier,
) {
    crate::resilience::outlier::record(
        spec,
        &be.servers[si].live,
        &be.live,
        be.servers.len(),
        outcome,
        std::time::Instant::now(),
    );
}

/// Counts a failed attempt against its server and backend (`econ`, `eresp`, and the
/// breaker's `max_connections`).
pub struct CountErrors<'a> {
    be: &'a Backend,
    server: usize,
}

impl Hook for CountErrors<'_> {
    fn after(self, out: &mut Outcome) {
        if let Err(e) = out {
            count_failure(self.be, self.server, e);
        }
    }
}

/// Counts a failed attempt against server `si` and its backend.
pub(crate) fn count_failure(be: &Backend, si: usize, e: &ProxyError) {
    let server = &be.servers[si];
    match e.kind {
        ErrorKind::ConnectFailed | ErrorKind::ConnectTimeout => {
            be.live.errors_conn.fetch_add(1, Relaxed);
            server.live.errors_conn.fetch_add(1, Relaxed);
        }
        ErrorKind::Overloaded(l) => be.live.overflow.count(l),
        _ if e.side == Side::Server => {
            be.live.errors_resp.fetch_add(1, Relaxed);
            server.live.errors_resp.fetch_add(1, Relaxed);
        }
        _ => {}
    }
}

/// The exchange with the server an attempt was given: over its connection pool
/// (HTTP/1.1) or its HTTP/2 connection, within the route's or backend's server timeout
/// and the retry policy's per-try timeout. The timing goes into the request's record.
///
/// A `service_fn` over an async block: its future is a type parameter of the stack, so
/// the whole exchange stays inline in the request's future, with no allocation.
pub fn upstream_client<'a>(
    x: &'a Exchange<'a>,
) -> impl Service<Attempt, Response = Response<Body>, Error = ProxyError, Future: Send + 'a>
+ Clone
+ Send
+ 'a {
    tower::service_fn(move |a: Attempt| {
        let server_timeout = a
            .req
            .extensions()
            .get::<RouteSettings>()
            .and_then(|r| r.timeout)
            .unwrap_or(x.be.server_timeout);
        let head_timeout = a.per_try.map_or(server_timeout, |t| t.min(server_timeout));
        let server = &x.be.servers[a.server];
        super::future::box_in_place(move || async move {
            let client = crate::upstream::Client {
                conn: x.from.env.conn,
                session: x.from.session.id,
            };
            let (resp, timing) = server
                .upstream
                .send(a.req, server_timeout, head_timeout, x.measure, client)
                .await
                .inspect_err(|e| {
                    tracing::debug!(backend = %x.be.name, server = %server.name, "attempt failed: {e}");
                })?;
            x.state().done.timing = Some(timing);
            Ok(resp)
        })
    })
}
