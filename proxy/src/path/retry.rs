//! Retries: tower's `Retry` with rampart's policy. A request is sent again when its
//! policy allows the failure or status, its body is in memory (kept up to `max_body`),
//! the backend has fewer than `circuit_breaker.max_retries` retries in flight, and the
//! retry budget has room; after a jittered exponential back-off. Only server-side
//! failures are retried; a breaker's refusal never is.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};

use bytes::{BufMut, BytesMut};
use http::{Request, Response};
use tower::retry::Policy;
use tower::{Service, ServiceExt};

use super::future::Maybe;
use super::{Exchange, Outcome, RouteSettings};
use crate::body::Body;
use crate::error::{ErrorKind, ProxyError, Side};
use crate::resilience::limits::backoff;
use crate::resilience::retry::{RetryPolicy, now_secs};
use crate::state::BackendLive;
use crate::state::Limit;

/// The servers a request was sent to, in order, kept inline: retries are at most 10
/// (validated), so no allocation per request.
#[derive(Clone, Copy)]
pub struct Tried {
    ids: [usize; 11],
    len: usize,
}

impl Tried {
    pub fn new() -> Self {
        Self {
            ids: [0; 11],
            len: 0,
        }
    }

    pub fn as_slice(&self) -> &[usize] {
        &self.ids[..self.len]
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether another attempt still fits.
    pub fn is_full(&self) -> bool {
        self.len == self.ids.len()
    }

    pub fn push(&mut self, i: usize) {
        if let Some(slot) = self.ids.get_mut(self.len) {
            *slot = i;
            self.len += 1;
        }
    }
}

impl Default for Tried {
    fn default() -> Self {
        Self::new()
    }
}

/// Marks one request with a retry in flight, for the backend's `max_retries`.
pub(crate) struct RetryGuard(Arc<BackendLive>);

impl Drop for RetryGuard {
    fn drop(&mut self) {
        self.0.retries_active.fetch_sub(1, Relaxed);
    }
}

super::layer!(RetryLayer => Retrying);

impl<'a, S> Service<Request<Body>> for Retrying<'a, S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = ProxyError> + Clone + Send + 'a,
    S::Future: Send + 'a,
{
    type Response = Response<Body>;
    type Error = ProxyError;
    type Future = Maybe<'a, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let x = self.x;
        let policy = req
            .extensions()
            .get::<RouteSettings>()
            .and_then(|r| r.retries.as_ref())
            .or(x.be.retries.as_ref())
            .filter(|p| p.attempts > 0)
            .cloned();
        let Some(p) = policy else {
            return Maybe::inner(self.inner.call(req));
        };
        {
            let mut s = x.state();
            s.redispatch = p.redispatch;
            s.per_try = p.per_try_timeout;
        }
        let inner = self.inner.clone();
        Maybe::boxed(async move {
            // With retries, a body of known length up to max_body is kept so the request
            // can be sent again; any other body streams, and the request goes once.
            let req = keep_body(req, p.max_body).await?;
            x.be.live.budget.deposit(now_secs());
            let policy = Attempts { x, p: &p };
            tower::retry::Retry::new(policy, inner).oneshot(req).await as Outcome
        })
    }
}

/// Reads a request body of known length up to `max` into memory; other bodies are left
/// to stream (and the request is not retried).
async fn keep_body(req: Request<Body>, max: u64) -> Result<Request<Body>, ProxyError> {
    use http_body::Body as _;
    let (parts, mut body) = req.into_parts();
    if body.as_bytes().is_some() || body.size_hint().exact().is_none_or(|n| n > max) {
        return Ok(Request::from_parts(parts, body));
    }
    let mut buf = BytesMut::new();
    loop {
        let frame = std::future::poll_fn(|c| Pin::new(&mut body).poll_frame(c)).await;
        match frame {
            None => return Ok(Request::from_parts(parts, Body::full(buf.freeze()))),
            Some(Err(e)) => return Err(e),
            Some(Ok(f)) => {
                if let Ok(d) = f.into_data() {
                    if buf.len() as u64 + d.len() as u64 > max {
                        return Err(ProxyError::new(
                            ErrorKind::BadRequest,
                            "request body longer than its Content-Length",
                        ));
                    }
                    buf.put_slice(&d);
                }
            }
        }
    }
}

/// The retry policy of one request.
#[derive(Clone, Copy)]
struct Attempts<'a, 'p> {
    x: &'a Exchange<'a>,
    p: &'p RetryPolicy,
}

impl Policy<Request<Body>, Response<Body>, ProxyError> for Attempts<'_, '_> {
    type Future = Backoff;

    fn retry(&mut self, req: &mut Request<Body>, result: &mut Outcome) -> Option<Backoff> {
        let (p, be) = (self.p, self.x.be);
        let tried = self.x.state().tried;
        if tried.len() as u32 > p.attempts || tried.is_full() {
            return None;
        }
        let wanted = match result {
            Ok(resp) => p.retries_status(resp.status().as_u16(), req.method()),
            Err(e) => e.side == Side::Server && p.retries_error(e, req.method()),
        };
        if !wanted {
            return None;
        }
        if be.live.retries_active.load(Relaxed) >= be.max_retries {
            be.live.overflow.count(Limit::MaxRetries);
            return None;
        }
        if !be
            .live
            .budget
            .withdraw(now_secs(), p.budget_ratio, p.budget_min_per_second)
        {
            be.live.overflow.count(Limit::RetryBudget);
            return None;
        }
        {
            let mut s = self.x.state();
            if s.retrying.is_none() {
                be.live.retries_active.fetch_add(1, Relaxed);
                s.retrying = Some(RetryGuard(be.live.clone()));
            }
        }
        match result {
            Ok(resp) => {
                tracing::debug!(backend = %be.name, status = resp.status().as_u16(), "retrying")
            }
            Err(e) => tracing::debug!(backend = %be.name, "retrying after: {e}"),
        }
        let wait = backoff(
            p.backoff_base,
            p.backoff_max,
            tried.len() as u32,
            fastrand::f64(),
        );
        Some(Backoff(
            (!wait.is_zero()).then(|| Box::pin(tokio::time::sleep(wait))),
        ))
    }

    /// Only a request whose body is in memory can be sent again.
    fn clone_request(&mut self, req: &Request<Body>) -> Option<Request<Body>> {
        let mut r = Request::new(req.body().try_clone()?);
        *r.method_mut() = req.method().clone();
        *r.uri_mut() = req.uri().clone();
        *r.version_mut() = req.version();
        *r.headers_mut() = req.headers().clone();
        *r.extensions_mut() = req.extensions().clone();
        Some(r)
    }
}

/// The wait before a retry (none when the back-off drew zero).
pub struct Backoff(Option<Pin<Box<tokio::time::Sleep>>>);

impl Future for Backoff {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.0 {
            None => Poll::Ready(()),
            Some(s) => s.as_mut().poll(cx),
        }
    }
}
