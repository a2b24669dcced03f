//! The front half of a request's life, after its head is read: the frontend's rules, the
//! route and the backend; then the backend path ([`crate::path`], a stack of tower layers
//! from the backend's rules down to the server) and the route's and frontend's response
//! rules. Every outcome, error
//! or not, ends as a response plus a [`Done`] record that the connection completes once
//! the response has been sent (counters, in-flight bookkeeping, access log), and that
//! completes itself if the request is dropped first.

use std::borrow::Borrow;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use http::request::Parts;
use http::{Request, Response, StatusCode};
use std::convert::Infallible;

use tower::{Service, ServiceExt};

use crate::body::Body;
pub use crate::done::Done;
use crate::error::Termination;
use crate::error::{ErrorKind, ProxyError, Side};
pub use crate::headers::strip_hop_by_hop;
use crate::headers::underscores;
use crate::path::{Exchange, Line, Origin, RouteSettings, upstream_client};
use crate::routing::Route;
use crate::rules::sample::ConnInfo;
use crate::rules::{Env, run_request, run_response};
use crate::snapshot::{Backend, Frontend, Snapshot};
use crate::state::Refusal;
use crate::stick::Trackers;

pub struct ConnCtx {
    pub info: ConnInfo,
    /// The snapshot current when the connection was accepted, and its frontend: they
    /// decide how the connection is served (TLS, timeouts, limits).
    pub snapshot: Arc<Snapshot>,
    pub frontend: Arc<Frontend>,
    /// Where newer snapshots are published: each request is served with the newest one
    /// (rules, routes, backends), so a reload applies to open connections at once.
    pub shared: Arc<crate::runtime::Shared>,
    /// The newest snapshot and frontend this connection found after a reload, kept so
    /// that later requests do not look them up again (and do not all touch the shared
    /// snapshot's reference count).
    pub newest: arc_swap::ArcSwapOption<Newest>,
    /// This connection in the session registry.
    pub session: crate::sessions::Session,
    /// When the connection was accepted: its first request is due within
    /// `timeouts.http_request` of it.
    pub accepted: tokio::time::Instant,
    /// The registry entry and counts, given back when the context goes, after the last
    /// request (`None` for a context made outside a listener).
    pub held: Option<crate::listener::Held>,
}

impl Drop for ConnCtx {
    fn drop(&mut self) {
        if let Some(h) = self.held.take() {
            h.release(self);
        }
    }
}

static NO_TRACKERS: std::sync::LazyLock<Trackers> = std::sync::LazyLock::new(Trackers::default);

/// A newer snapshot and its version of a connection's frontend.
pub struct Newest {
    pub snapshot: Arc<Snapshot>,
    pub frontend: Arc<Frontend>,
}

impl ConnCtx {
    /// The stick counters the connection's `tcp_request.connection` rules track.
    pub fn conn_track(&self) -> &Trackers {
        self.info.track().unwrap_or(&NO_TRACKERS)
    }

    /// What rules see of this connection, served by `fe`; `nbsrv` counts a backend's
    /// usable servers.
    pub fn env<'a>(
        &'a self,
        fe: &'a Frontend,
        nbsrv: &'a (dyn Fn(usize) -> usize + Sync),
    ) -> Env<'a> {
        Env {
            conn: &self.info,
            frontend: &fe.name,
            nbsrv,
            conn_track: self.conn_track(),
        }
    }

    /// The newest snapshot and its version of this connection's frontend, when a reload
    /// has replaced the connection's own; `None` while that is still current (one atomic
    /// load per request) or when the frontend is gone.
    fn newer(&self) -> Option<Arc<Newest>> {
        let generation = self.shared.live.global.generation.load(Relaxed);
        if generation == self.snapshot.generation {
            return None;
        }
        if let Some(n) = self.newest.load_full()
            && n.snapshot.generation == generation
        {
            return Some(n);
        }
        let snapshot = self.shared.snapshot.load_full();
        let frontend = snapshot.frontend(&self.frontend.name)?.clone();
        let n = Arc::new(Newest { snapshot, frontend });
        self.newest.store(Some(n.clone()));
        Some(n)
    }
}

/// The request path as a tower service, right after the request head is parsed: what
/// the HTTP/1 server calls for each request ([`handle_stream`] is HTTP/2's). It answers
/// every request (errors become responses), with the request's [`Done`] record for the
/// connection to complete.
pub fn service(
    cx: &Arc<ConnCtx>,
    t_request: Duration,
) -> impl Service<
    Request<Body>,
    Response = (Response<Body>, Done),
    Error = Infallible,
    Future: Send + '_,
> + '_ {
    // `handle` is the service's future itself, not wrapped in another `async` block: the
    // request and the answer are moved once less.
    tower::service_fn(move |req: Request<Body>| {
        let (parts, body) = req.into_parts();
        handle(cx, parts, body, t_request)
    })
}

/// The request path for the request of an HTTP/2 stream: what [`service`] calls, but
/// with the future owning its share of the connection, so that the stream's future
/// holds the handler's future by value and then, in the same room, the answer's.
pub fn handle_stream(
    cx: Arc<ConnCtx>,
    req: Request<Body>,
) -> impl Future<Output = Result<(Response<Body>, Done), Infallible>> + Send {
    let (parts, body) = req.into_parts();
    handle(cx, parts, body, Duration::ZERO)
}

/// Serves one request; it never fails (errors become responses). An `async` block that
/// uses the head and body it captures in place: an `async fn` would keep its arguments
/// and a moved copy of each in the future, which the HTTP/2 server boxes per stream.
#[allow(clippy::manual_async_fn, reason = "arguments kept once")]
fn handle<C: Borrow<Arc<ConnCtx>> + Send>(
    cx: C,
    mut parts: Parts,
    body: Body,
    t_request: Duration,
) -> impl Future<Output = Result<(Response<Body>, Done), Infallible>> + Send {
    async move {
        let cx: &Arc<ConnCtx> = cx.borrow();
        let newer = cx.newer();
        let (snap, fe) = match &newer {
            Some(n) => (&*n.snapshot, &n.frontend),
            None => (&*cx.snapshot, &cx.frontend),
        };
        let mut done = begin(cx, fe, &parts, t_request);
        if let Some(t) = &fe.tracing {
            done.trace = t.start(&parts.method, &parts.uri, &parts.headers);
        }
        if !underscores(fe.underscores, &mut parts.headers, &fe.live) {
            fe.live.count_refused(Some(Refusal::UnderscoreHeader));
            done.status = 400;
            done.termination = Termination::REFUSED;
            return Ok((crate::error::error_response(StatusCode::BAD_REQUEST), done));
        }
        let nbsrv = |i: usize| snap.nbsrv(i);
        let env = cx.env(fe, &nbsrv);
        let (be, route) = match choose_backend(snap, fe, &env, &mut parts, &mut done) {
            Chosen::Backend(be, route) => (be, route),
            Chosen::Answer(resp) => return Ok((resp, done)),
        };
        let settings = RouteSettings {
            timeout: route.and_then(|r| r.timeout),
            retries: route.and_then(|r| r.retries.clone()),
            hash: None,
        };
        if !settings.is_empty() {
            parts.extensions.insert(settings);
        }
        // The algorithm the response may be compressed with, chosen before the request goes
        // to the server.
        let compress = be.compression.as_ref().and_then(|spec| {
            Some((
                spec,
                crate::compress::choose(spec, &parts.method, &parts.headers)?,
            ))
        });
        let from = Origin {
            fe,
            route,
            env: &env,
            session: &cx.session,
        };
        let (result, answered, line) = {
            let x = Exchange::new(&be, from, &mut done);
            let mut stack = crate::path::stack(&x, upstream_client(&x));
            let result = match stack.ready().await {
                Ok(s) => s.call(Request::from_parts(parts, body)).await,
                Err(e) => Err(e),
            };
            let mut s = x.state();
            (result, s.answered, s.line.take())
        };
        Ok(match result {
            // A backend rule answered: no response rules run on its answer.
            Ok(resp) if answered => (resp, done),
            Ok(resp) => {
                let route_rules = route.map(|r| &r.response_rules[..]).unwrap_or_default();
                let mut resp = respond(fe, route_rules, &env, line.as_ref(), resp, &mut done);
                if let Some((spec, algo)) = compress {
                    resp = crate::compress::apply(spec, algo, resp, [&fe.live.comp, &be.live.comp]);
                }
                (resp, done)
            }
            Err(e) => (fail(&mut done, &e), done),
        })
    }
}

/// Counts the request and opens its record.
fn begin(cx: &Arc<ConnCtx>, fe: &Arc<Frontend>, parts: &Parts, t_request: Duration) -> Done {
    fe.live.requests.fetch_add(1, Relaxed);
    cx.shared.live.global.requests.fetch_add(1, Relaxed);
    let line = fe
        .log
        .as_ref()
        .map(|_| Box::new((parts.method.clone(), parts.uri.clone(), parts.version)));
    let mut done = Done::new(cx, fe, line, t_request);
    if let Some(t) = cx.info.track() {
        t.count_request();
    }
    done.bytes_in = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| std::str::from_utf8(v.as_bytes()).ok()?.parse().ok())
        .unwrap_or(0);
    done
}

/// What the frontend decided: a backend with the route that chose it, or an answer.
enum Chosen<'f> {
    Backend(Arc<Backend>, Option<&'f Route>),
    Answer(Response<Body>),
}

/// Runs the frontend's rules and picks the backend: the first matching route of the
/// request's virtual host, else of `use_backend`, else the default backend; or the answer
/// when a rule answered or there is no backend.
fn choose_backend<'f>(
    snap: &Snapshot,
    fe: &'f Frontend,
    env: &Env<'_>,
    parts: &mut Parts,
    done: &mut Done,
) -> Chosen<'f> {
    if let Some((resp, kind)) =
        run_request(&fe.request_rules, &fe.acls, parts, env, &mut done.track)
    {
        done.answered(resp.status(), kind);
        return Chosen::Answer(resp);
    }
    let route = {
        let scx = env.cx(parts, &done.track);
        let vhost = fe.vhosts.as_ref().and_then(|t| {
            let host = crate::routing::request_host(parts)?;
            t.hosts.get(t.select(host)?)
        });
        vhost
            .and_then(|v| v.first(&fe.acls, &scx))
            .or_else(|| fe.routes.first(&fe.acls, &scx))
    };
    let chosen = match route {
        Some(r) => {
            if let Some((resp, kind)) =
                run_request(&r.request_rules, &fe.acls, parts, env, &mut done.track)
            {
                done.answered(resp.status(), kind);
                return Chosen::Answer(resp);
            }
            r.target.resolve(
                || env.cx(parts, &done.track),
                |n| snap.backend_index(n),
                fe.default_backend,
            )
        }
        None => fe.default_backend,
    };
    let Some(be) = chosen.and_then(|i| snap.backends.get(i)).cloned() else {
        let e = ProxyError::new(ErrorKind::NoBackend, "no backend for this request");
        return Chosen::Answer(fail(done, &e));
    };
    done.at_backend(&be);
    Chosen::Backend(be, route)
}

/// Runs the route's and the frontend's response rules on a server's response (the
/// backend's ran in the backend path), unless the backend's denied it already.
fn respond(
    fe: &Frontend,
    route_rules: &[crate::rules::ResponseRule],
    env: &Env<'_>,
    line: Option<&Line>,
    mut resp: Response<Body>,
    done: &mut Done,
) -> Response<Body> {
    if let Some(line) = line
        && done.termination != Termination::RESPONSE_DENIED
    {
        let rl = line.as_request_line();
        let t = &done.track;
        if run_response(route_rules, &fe.acls, &mut resp, &rl, env, t)
            || run_response(&fe.response_rules, &fe.acls, &mut resp, &rl, env, t)
        {
            done.response_denied();
        }
    }
    done.status = resp.status().as_u16();
    resp
}

/// The outermost step of the path: a failure becomes the HAProxy-style error response,
/// and the record gets its status and termination code.
fn fail(done: &mut Done, e: &ProxyError) -> Response<Body> {
    done.status = e.status().as_u16();
    done.termination = e.termination();
    if e.side == Side::Client {
        let r = Refusal::of(done.status, done.termination);
        done.frontend.live.count_refused(r);
    }
    e.to_response()
}
