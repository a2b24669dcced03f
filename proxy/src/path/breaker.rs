//! The backend's circuit breaker: at most `max_requests` in flight, with a FIFO queue of
//! `max_pending_requests` waiting up to the queue timeout. A refusal is never retried: it
//! is answered 503 at once and counted by limit.

use std::task::{Context, Poll};
use std::time::Duration;

use http::Request;
use tokio::time::Instant;
use tower::Service;

use super::Outcome;
use super::future::Maybe;
use crate::body::Body;
use crate::error::{ErrorKind, ProxyError};
use crate::resilience::limits::Gate;

super::layer!(BreakerLayer => Breaker);

impl<'a, S> Service<Request<Body>> for Breaker<'a, S>
where
    S: Service<Request<Body>, Response = http::Response<Body>, Error = ProxyError>
        + Clone
        + Send
        + 'a,
    S::Future: Send + 'a,
{
    type Response = http::Response<Body>;
    type Error = ProxyError;
    type Future = Maybe<'a, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let x = self.x;
        let Some(limits) = x.be.gate else {
            return Maybe::inner(self.inner.call(req));
        };
        let mut inner = self.inner.clone();
        Maybe::boxed(async move {
            let started = x.measure.then(Instant::now);
            let slot = Gate::acquire(&x.be.live, limits).await.inspect_err(|e| {
                x.be.live.overflow.count(match e.kind {
                    ErrorKind::Overloaded(l) => l,
                    _ => crate::state::Limit::QueueTimeout,
                });
            })?;
            {
                let mut s = x.state();
                s.done.slot = Some(slot);
                s.done.t_queue = started.map_or(Duration::ZERO, |s| s.elapsed());
            }
            std::future::poll_fn(|cx| inner.poll_ready(cx)).await?;
            inner.call(req).await as Outcome
        })
    }
}
