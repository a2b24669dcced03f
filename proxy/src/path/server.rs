//! The per-server end of the path: outlier detection and error counters, fed once per
//! attempt, over the exchange with the server itself.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll, ready};

use http::Response;
use tower::Service;

use super::future::{After, Hook};
use super::{Attempt, Exchange, Outcome, RouteSettings};
use crate::body::Body;
use crate::error::{ErrorKind, ProxyError, Side};
use crate::resilience::outlier::Result as Outlier;
use crate::snapshot::{Backend, Server};
use crate::upstream::Timing;

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
/// A `service_fn` whose future, the exchange, is written straight into one allocation
/// ([`box_in_place`](super::future::box_in_place)), so that the layers' futures around it
/// stay small.
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
        let client = crate::upstream::Client {
            conn: x.from.env.conn,
            session: x.from.session.id,
        };
        super::future::box_in_place(move || Sent {
            fut: server
                .upstream
                .send(a.req, server_timeout, head_timeout, x.measure, client),
            x,
            server,
        })
    })
}

pin_project_lite::pin_project! {
    /// The exchange with a server, then its timing into the request's record. Not an
    /// `async` block, which would keep the request it hands on for the exchange's life.
    struct Sent<'a, F> {
        #[pin]
        fut: F,
        x: &'a Exchange<'a>,
        server: &'a Server,
    }
}

impl<F> Future for Sent<'_, F>
where
    F: Future<Output = Result<(Response<Body>, Timing), ProxyError>>,
{
    type Output = Result<Response<Body>, ProxyError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        Poll::Ready(match ready!(this.fut.poll(cx)) {
            Ok((resp, timing)) => {
                this.x.state().done.timing = Some(timing);
                Ok(resp)
            }
            Err(e) => {
                tracing::debug!(backend = %this.x.be.name, server = %this.server.name, "attempt failed: {e}");
                Err(e)
            }
        })
    }
}
