//! The front half of a request's life, after its head is read: frontend rules, the
//! route and backend, backend rules, header work and persistence; then the backend path
//! ([`crate::path`], a stack of tower layers) and the response rules. Every outcome, error
//! or not, ends as a response plus a [`Done`] record that the connection completes once
//! the response has been sent (counters, in-flight bookkeeping, access log), and that
//! completes itself if the request is dropped first.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use http::header::{EXPECT, UPGRADE};
use http::request::Parts;
use http::{Request, Response, StatusCode, Version};
use std::convert::Infallible;

use tower::{Service, ServiceExt};

use crate::body::Body;
pub use crate::done::Done;
use crate::error::Termination;
use crate::error::{ErrorKind, ProxyError, Side};
pub use crate::headers::strip_hop_by_hop;
use crate::headers::{forwarding_headers, underscores};
use crate::path::{Exchange, Persist, RouteSettings, upstream_client};
use crate::routing::Route;
use crate::rules::sample::{ConnInfo, SampleCtx};
use crate::rules::{Env, Intercept, RequestLine, run_request, run_response};
use crate::snapshot::{Backend, Frontend, Snapshot};
use crate::state::{Live, Refusal};
use crate::stick::{Trackers, Tracks};
use crate::upstream::Proto;

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
    pub live: Arc<Live>,
    /// This connection in the session registry.
    pub session: Arc<crate::sessions::Session>,
    /// Stick counters tracked by `tcp_request.connection` rules.
    pub track: Option<Arc<Trackers>>,
}

static NO_TRACKERS: std::sync::LazyLock<Trackers> = std::sync::LazyLock::new(Trackers::default);

/// A newer snapshot and its version of a connection's frontend.
pub struct Newest {
    pub snapshot: Arc<Snapshot>,
    pub frontend: Arc<Frontend>,
}

impl ConnCtx {
    /// The newest snapshot and its version of this connection's frontend, when a reload
    /// has replaced the connection's own; `None` while that is still current (one atomic
    /// load per request) or when the frontend is gone.
    fn newer(&self) -> Option<Arc<Newest>> {
        let generation = self.live.global.generation.load(Relaxed);
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

fn count_intercept(fe: &Frontend, kind: Intercept) {
    match kind {
        Intercept::Deny => fe.live.denied.fetch_add(1, Relaxed),
        Intercept::Return | Intercept::Redirect => fe.live.intercepted.fetch_add(1, Relaxed),
    };
}

/// Completes a request that a rule answered.
fn intercepted(
    fe: &Frontend,
    resp: Response<Body>,
    kind: Intercept,
    done: &mut Done,
) -> Response<Body> {
    count_intercept(fe, kind);
    done.termination = if kind == Intercept::Deny {
        Termination::REFUSED
    } else {
        Termination::NONE
    };
    done.status = resp.status().as_u16();
    resp
}

/// The sample context of a request, for routes, hashes and persistence.
fn sample_cx<'a>(
    cx: &'a ConnCtx,
    fe: &'a Frontend,
    parts: &'a Parts,
    nbsrv: &'a (dyn Fn(usize) -> usize + Sync),
    done: &'a Done,
) -> SampleCtx<'a> {
    SampleCtx {
        conn: &cx.info,
        frontend: &fe.name,
        method: &parts.method,
        uri: &parts.uri,
        version: parts.version,
        headers: &parts.headers,
        nbsrv,
        track: Tracks {
            conn: Some(cx.track.as_deref().unwrap_or(&NO_TRACKERS)),
            req: Some(&done.track),
        },
    }
}

/// The request path as a tower service, right after the request head is parsed: what
/// the HTTP/1 and HTTP/2 servers call for each request. It answers every request (errors
/// become responses), with the request's [`Done`] record for the connection to complete.
pub fn service(
    cx: &ConnCtx,
    t_request: Duration,
) -> impl Service<
    Request<Body>,
    Response = (Response<Body>, Done),
    Error = Infallible,
    Future: Send + '_,
> + '_ {
    tower::service_fn(move |req| async move { Ok(handle(cx, req, t_request).await) })
}

/// Serves one request.
pub async fn handle(
    cx: &ConnCtx,
    req: Request<Body>,
    t_request: Duration,
) -> (Response<Body>, Done) {
    let newer = cx.newer();
    let (snap, fe) = match &newer {
        Some(n) => (&*n.snapshot, &n.frontend),
        None => (&*cx.snapshot, &cx.frontend),
    };
    let (mut parts, body) = req.into_parts();
    let mut done = begin(cx, fe, &parts, t_request);
    if !underscores(fe.underscores, &mut parts.headers, &fe.live) {
        fe.live.count_refused(Some(Refusal::UnderscoreHeader));
        done.status = 400;
        done.termination = Termination::REFUSED;
        return (crate::error::error_response(StatusCode::BAD_REQUEST), done);
    }
    let nbsrv = |i: usize| snap.nbsrv(i);
    let env = Env {
        conn: &cx.info,
        frontend: &fe.name,
        nbsrv: &nbsrv,
        conn_track: cx.track.as_deref().unwrap_or(&NO_TRACKERS),
    };
    let (be, route) = match choose_backend(cx, snap, fe, &env, &mut parts, &mut done) {
        Chosen::Backend(be, route) => (be, route),
        Chosen::Answer(resp) => return (resp, done),
    };
    if let Some((resp, kind)) = run_request(
        &be.request_rules,
        &be.acls,
        &mut parts,
        &env,
        &mut done.track,
    ) {
        return (intercepted(fe, resp, kind, &mut done), done);
    }
    let (settings, persist) = prepare(cx, fe, &be, route, &mut parts, &nbsrv, &done);
    if !settings.is_empty() {
        parts.extensions.insert(settings);
    }
    let line = (parts.method.clone(), parts.uri.clone(), parts.version);
    let result = {
        let x = Exchange::new(&be, &cx.session, fe.log.is_some(), persist, &mut done);
        crate::path::stack(&x, upstream_client(&x))
            .oneshot(Request::from_parts(parts, body))
            .await
    };
    match result {
        Ok(resp) => {
            let rl = RequestLine {
                method: &line.0,
                uri: &line.1,
                version: line.2,
            };
            let route_rules = route.map(|r| &r.response_rules[..]).unwrap_or_default();
            (
                respond(fe, &be, route_rules, &env, &rl, resp, &mut done),
                done,
            )
        }
        Err(e) => (fail(&mut done, &e), done),
    }
}

/// Counts the request and opens its record.
fn begin(cx: &ConnCtx, fe: &Arc<Frontend>, parts: &Parts, t_request: Duration) -> Done {
    fe.live.requests.fetch_add(1, Relaxed);
    cx.live.global.requests.fetch_add(1, Relaxed);
    let line = fe
        .log
        .as_ref()
        .map(|_| (parts.method.clone(), parts.uri.clone(), parts.version));
    let mut done = Done::new(cx, fe, line, t_request);
    if let Some(t) = &cx.track {
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
    cx: &ConnCtx,
    snap: &Snapshot,
    fe: &'f Frontend,
    env: &Env<'_>,
    parts: &mut Parts,
    done: &mut Done,
) -> Chosen<'f> {
    if let Some((resp, kind)) =
        run_request(&fe.request_rules, &fe.acls, parts, env, &mut done.track)
    {
        return Chosen::Answer(intercepted(fe, resp, kind, done));
    }
    let route = {
        let scx = sample_cx(cx, fe, parts, env.nbsrv, done);
        let vhost = fe.vhosts.as_ref().and_then(|t| {
            let host = crate::routing::request_host(parts)?;
            t.hosts.get(t.select(host)?)
        });
        vhost
            .into_iter()
            .flatten()
            .chain(fe.routes.iter())
            .find(|r| r.cond.as_ref().is_none_or(|c| c.eval(&fe.acls, &scx)))
    };
    let chosen = match route {
        Some(r) => {
            if let Some((resp, kind)) =
                run_request(&r.request_rules, &fe.acls, parts, env, &mut done.track)
            {
                return Chosen::Answer(intercepted(fe, resp, kind, done));
            }
            r.target.choose()
        }
        None => fe.default_backend,
    };
    let Some(be) = chosen.and_then(|i| snap.backends.get(i)).cloned() else {
        let e = ProxyError::new(ErrorKind::NoBackend, "no backend for this request");
        return Chosen::Answer(fail(done, &e));
    };
    be.live.requests.fetch_add(1, Relaxed);
    let n = be.live.active.fetch_add(1, Relaxed) + 1;
    be.live.active_max.fetch_max(n, Relaxed);
    done.backend = Some(be.clone());
    done.backend_active = true;
    Chosen::Backend(be, route)
}

/// Prepares the request for the backend path: hop-by-hop and forwarding headers, the
/// route's settings with the balancer's hash, and what persistence asks.
fn prepare(
    cx: &ConnCtx,
    fe: &Frontend,
    be: &Backend,
    route: Option<&Route>,
    parts: &mut Parts,
    nbsrv: &(dyn Fn(usize) -> usize + Sync),
    done: &Done,
) -> (RouteSettings, Persist) {
    let upgrade = parts.headers.contains_key(UPGRADE)
        && parts.version != Version::HTTP_2
        && be.proto == Proto::Http1;
    strip_hop_by_hop(&mut parts.headers, upgrade, true);
    if parts
        .headers
        .get(EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
    {
        parts.headers.remove(EXPECT);
    }
    forwarding_headers(fe, &cx.info, &mut parts.headers);

    let hash = be
        .balancer
        .algo()
        .hashes()
        .then(|| crate::routing::hash_key(be, route, &sample_cx(cx, fe, parts, nbsrv, done)));
    let settings = RouteSettings {
        timeout: route.and_then(|r| r.timeout),
        retries: route.and_then(|r| r.retries.clone()),
        hash: hash.flatten(),
    };
    let persist = if be.stick.is_empty() && be.cookie.is_none() {
        Persist::default()
    } else {
        let mut p = crate::path::persistence(be, &sample_cx(cx, fe, parts, nbsrv, done));
        if let Some(c) = &be.cookie {
            // A valid cookie comes before the stick rules, as in HAProxy.
            p.cookie = crate::path::request_cookie(c, be, &mut parts.headers);
            p.server = p.cookie.map(|(i, _)| i).or(p.server);
        }
        p
    };
    (settings, persist)
}

/// Runs the response rules (backend's, route's, frontend's) on a server's response.
fn respond(
    fe: &Frontend,
    be: &Backend,
    route_rules: &[crate::rules::ResponseRule],
    env: &Env<'_>,
    rl: &RequestLine<'_>,
    mut resp: Response<Body>,
    done: &mut Done,
) -> Response<Body> {
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        strip_hop_by_hop(resp.headers_mut(), false, false);
    }
    let denied = run_response(
        &be.response_rules,
        &be.acls,
        &mut resp,
        rl,
        env,
        &done.track,
    ) || run_response(route_rules, &fe.acls, &mut resp, rl, env, &done.track)
        || run_response(
            &fe.response_rules,
            &fe.acls,
            &mut resp,
            rl,
            env,
            &done.track,
        );
    if denied {
        fe.live.denied.fetch_add(1, Relaxed);
        done.termination = Termination::RESPONSE_DENIED;
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
