//! Server choice: the backend's balancing algorithm (rampart's own, as HAProxy has them),
//! stickiness, servers at their `max_connections` skipped, and a wait in the backend's
//! queue when every usable server is full.

use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};

use http::{Request, Response};
use tokio::time::Instant;
use tower::Service;

use super::future::Maybe;
use super::{Attempt, Exchange, Outcome, RouteSettings, State, Tried};
use crate::body::Body;
use crate::done::Done;
use crate::error::{ErrorKind, ProxyError};
use crate::snapshot::Backend;
use crate::state::{ActiveGuard, Limit};

super::layer!(BalanceLayer => Balance);

/// What one look over the backend's servers asks for.
pub(crate) struct Ask {
    /// The balancer's hash.
    pub key: Option<u64>,
    /// Whether a retry avoids the servers tried already.
    pub redispatch: bool,
    /// The server persistence sticks to.
    pub prefer: Option<usize>,
}

impl<'a, S> Service<Request<Body>> for Balance<'a, S>
where
    S: Service<Attempt, Response = Response<Body>, Error = ProxyError> + Clone + Send + 'a,
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
        let key = req.extensions().get::<RouteSettings>().and_then(|r| r.hash);
        // One look at the exchange's state for the whole pick (no other request uses it).
        let mut s = x.state();
        let ask = Ask {
            key,
            redispatch: s.redispatch,
            prefer: s.persist.server,
        };
        let per_try = s.per_try;
        match try_pick(x.be, &ask, s.tried.as_slice()) {
            Pick::Got(server, guard) => {
                chosen(x, &mut s, server, guard);
                drop(s);
                Maybe::inner(self.inner.call(Attempt {
                    server,
                    req,
                    per_try,
                }))
            }
            Pick::None => Maybe::ready(Err(no_server(x.be))),
            Pick::AllFull => {
                let tried = s.tried;
                drop(s);
                let mut inner = self.inner.clone();
                Maybe::boxed(async move {
                    let (server, guard) = wait_for_server(x.be, &ask, tried.as_slice()).await?;
                    chosen(x, &mut x.state(), server, guard);
                    std::future::poll_fn(|cx| inner.poll_ready(cx)).await?;
                    let a = Attempt {
                        server,
                        req,
                        per_try,
                    };
                    inner.call(a).await as Outcome
                })
            }
        }
    }
}

/// Records the server an attempt goes to: in the request's record (the server it is
/// logged with, its in-flight count), the connection's session, and the retry counters.
fn chosen(x: &Exchange<'_>, s: &mut State<'_>, si: usize, guard: ActiveGuard) {
    chosen_server(x.be, &mut s.tried, s.done, x.from.session, si, guard);
}

/// Records server `si` as the one an attempt goes to (a request's, or a mode tcp
/// connection's): in `done` (the server it is logged with, its in-flight count), the
/// session, and the retry counters.
pub(crate) fn chosen_server(
    be: &Backend,
    tried: &mut Tried,
    done: &mut Done,
    session: &crate::sessions::Session,
    si: usize,
    guard: ActiveGuard,
) {
    let server = &be.servers[si];
    if !tried.is_empty() {
        be.live.retries.fetch_add(1, Relaxed);
        server.live.retries.fetch_add(1, Relaxed);
        if !tried.as_slice().contains(&si) {
            be.live.redispatches.fetch_add(1, Relaxed);
        }
    }
    tried.push(si);
    done.retries = tried.len() as u32 - 1;
    // The previous attempt's server no longer has this request in flight.
    done.guard = Some(guard);
    if let Some(prev) = done.server.replace(si)
        && prev != si
    {
        be.balancer.released(prev);
    }
    session.at_server(&server.live);
}

pub(crate) fn no_server(be: &Backend) -> ProxyError {
    be.live.no_server.fetch_add(1, Relaxed);
    ProxyError::new(
        ErrorKind::NoServer,
        format!("no server available in backend {}", be.name),
    )
}

/// The outcome of one pass over a backend's servers.
pub(crate) enum Pick {
    Got(usize, ActiveGuard),
    /// No server is usable at all.
    None,
    /// Usable servers exist, but all are at their `max_connections`.
    AllFull,
}

pub(crate) fn try_pick(be: &Backend, ask: &Ask, tried: &[usize]) -> Pick {
    let mut full: Vec<usize> = Vec::new();
    // A client stuck to a server keeps it while the server can serve, including when it
    // is draining (it only takes no new clients); a DOWN server redispatches.
    if tried.is_empty()
        && let Some(i) = ask.prefer
        && let Some(s) = be.servers.get(i)
        && s.live.persistable()
    {
        match s.live.try_start() {
            Some(g) => return Pick::Got(i, g),
            None => full.push(i),
        }
    }
    // A retry without redispatch goes back to the same server when it is usable.
    if !ask.redispatch
        && let Some(&last) = tried.last()
        && be.servers[last].live.usable()
    {
        match be.servers[last].live.try_start() {
            Some(g) => return Pick::Got(last, g),
            None => full.push(last),
        }
    }
    let avoid: &[usize] = if ask.redispatch { tried } else { &[] };
    while full.len() < be.servers.len() {
        let Some(i) = be.balancer.pick_excluding(ask.key, avoid, &full) else {
            break;
        };
        match be.servers[i].live.try_start() {
            Some(g) => return Pick::Got(i, g),
            None => full.push(i),
        }
    }
    if full.is_empty() {
        Pick::None
    } else {
        Pick::AllFull
    }
}

/// Waits (up to the backend's queue timeout) for a server with room under its
/// `max_connections`, when every usable server is full.
pub(crate) async fn wait_for_server(
    be: &Backend,
    ask: &Ask,
    tried: &[usize],
) -> Result<(usize, ActiveGuard), ProxyError> {
    let Some(timeout) = be.queue_timeout else {
        be.live.overflow.count(Limit::ServerMaxConnections);
        return Err(crate::resilience::limits::overloaded(
            Limit::ServerMaxConnections,
        ));
    };
    let deadline = Instant::now() + timeout;
    loop {
        // Listen for freed slots before looking again, so that none is missed.
        let freed = be.live.server_freed.notified();
        tokio::pin!(freed);
        freed.as_mut().enable();
        match try_pick(be, ask, tried) {
            Pick::Got(i, g) => return Ok((i, g)),
            Pick::None => return Err(no_server(be)),
            Pick::AllFull => {}
        }
        if tokio::time::timeout_at(deadline, freed).await.is_err() {
            be.live.overflow.count(Limit::QueueTimeout);
            return Err(ProxyError::new(
                ErrorKind::QueueTimeout,
                "no server slot within the queue timeout",
            ));
        }
    }
}
