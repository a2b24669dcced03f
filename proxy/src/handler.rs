//! The life of one request, after its head is read and before its response is written:
//! frontend rules, backend choice, backend rules, forwarding headers, server choice, the
//! exchange with the server, response rules. Every outcome, error or not, ends as a
//! response plus a [`Done`] record that the connection completes once the response has
//! been sent (counters, in-flight bookkeeping, access log).

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, SystemTime};

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{CONNECTION, EXPECT, HeaderName, HeaderValue, TE, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use tokio::time::Instant;

use crate::body::Body;
use crate::error::{ErrorKind, ProxyError, Side};
use crate::resilience::limits::{Gate, Slot, backoff};
use crate::resilience::outlier::Result as Outlier;
use crate::resilience::retry::{RetryPolicy, now_secs};
use crate::rules::sample::{ConnInfo, SampleCtx, canonical_ip, mask_ip};
use crate::rules::{Env, Intercept, RequestLine, run_request, run_response};
use crate::snapshot::{Backend, Frontend, Snapshot};
use crate::state::{ActiveGuard, FrontendLive, Live, Refusal};
use crate::stick::{Trackers, Tracks};
use crate::upstream::{Proto, Timing};

/// What a connection knows while it serves requests.
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

/// A request's outcome, completed when the response has been sent.
pub struct Done {
    pub status: u16,
    frontend: Arc<Frontend>,
    backend: Option<Arc<Backend>>,
    /// Whether this request counts in the backend's in-flight requests.
    backend_active: bool,
    server: Option<usize>,
    guard: Option<ActiveGuard>,
    /// When the request started, on both clocks; read only when an access log needs it.
    clock: Option<(Instant, SystemTime)>,
    t_request: Duration,
    timing: Option<Timing>,
    termination: [u8; 2],
    /// Time spent in the backend's queue.
    t_queue: Duration,
    /// Attempts after the first.
    retries: u32,
    /// The backend in-flight slot, freed when the response has been sent.
    slot: Option<Slot>,
    line: Option<(Method, Uri, Version)>,
    client: std::net::SocketAddr,
    tls: bool,
    live: Arc<Live>,
    session: Arc<crate::sessions::Session>,
    /// Stick counters tracked by this request's rules.
    track: Trackers,
    conn_track: Option<Arc<Trackers>>,
    /// Request body bytes, for `bytes_in` counters.
    bytes_in: u64,
    /// Response bytes sent, once the connection has said so in [`finish`](Self::finish).
    bytes_out: u64,
    /// Whether the connection finished the request; a record dropped unfinished is a
    /// request the client went away from.
    finished: bool,
}

impl Done {
    fn new(
        cx: &ConnCtx,
        fe: &Arc<Frontend>,
        line: Option<(Method, Uri, Version)>,
        t_request: Duration,
    ) -> Self {
        Self {
            status: 0,
            frontend: fe.clone(),
            backend: None,
            backend_active: false,
            server: None,
            guard: None,
            clock: fe
                .log
                .as_ref()
                .map(|_| (Instant::now(), SystemTime::now() - t_request)),
            t_request,
            timing: None,
            termination: *b"--",
            t_queue: Duration::ZERO,
            retries: 0,
            slot: None,
            line,
            client: cx.info.client,
            tls: cx.info.tls,
            live: cx.live.clone(),
            session: cx.session.clone(),
            track: Trackers::default(),
            conn_track: cx.track.clone(),
            bytes_in: 0,
            bytes_out: 0,
            finished: false,
        }
    }

    /// A record for a request that was refused before it was read in full (bad head).
    pub fn refused(
        cx: &ConnCtx,
        status: StatusCode,
        termination: [u8; 2],
        t_request: Duration,
    ) -> Self {
        let mut d = Done::new(cx, &cx.frontend, None, t_request);
        d.status = status.as_u16();
        d.termination = termination;
        d.frontend
            .live
            .count_refused(Refusal::of(d.status, termination));
        d
    }

    /// Completes the request: `bytes_out` were sent to the client; `client_abort` tells
    /// how the client side failed, if it did.
    pub fn finish(mut self, bytes_out: u64, client_abort: Option<[u8; 2]>) {
        self.bytes_out = bytes_out;
        if let Some(t) = client_abort {
            self.termination = t;
        }
        self.finished = true;
        // Dropping completes it.
    }

    /// The termination code of a request the client went away from before the
    /// connection finished it, by how far it had come (HAProxy's `CR`, `CQ`, `CH`, `CD`).
    fn abandoned(&self) -> [u8; 2] {
        if self.status != 0 {
            *b"CD"
        } else if self.server.is_some() {
            *b"CH"
        } else if self.backend.is_some() {
            *b"CQ"
        } else {
            *b"CR"
        }
    }

    /// Records the request everywhere it counts: status and byte counters, aborts, the
    /// in-flight gauges and slots it holds, stick counters, and the access log.
    fn complete(&mut self) {
        if !self.finished {
            self.termination = self.abandoned();
        }
        let bytes_out = self.bytes_out;
        let fe = &self.frontend.live;
        // A request that got no response counts in no response class.
        let answered = self.status != 0;
        if answered {
            fe.responses.record(self.status);
        }
        fe.bytes_out.fetch_add(bytes_out, Relaxed);
        if let Some(be) = &self.backend {
            if answered {
                be.live.responses.record(self.status);
            }
            be.live.bytes_out.fetch_add(bytes_out, Relaxed);
            be.live.aborts.count(self.termination);
            if let Some(i) = self.server {
                let s = &be.servers[i].live;
                if answered {
                    s.responses.record(self.status);
                }
                s.bytes_out.fetch_add(bytes_out, Relaxed);
                s.aborts.count(self.termination);
            }
        }
        let server_active = self.guard.as_ref().map_or(0, |_| {
            self.backend
                .as_ref()
                .zip(self.server)
                .map_or(0, |(b, i)| b.servers[i].live.active.load(Relaxed))
        });
        if !self.track.is_empty() || self.conn_track.is_some() {
            let (status, bytes_in) = (self.status, self.bytes_in);
            let count = |e: &mut crate::stick::Entry<'_>| {
                crate::stick::count_response(e, status, bytes_in, bytes_out)
            };
            self.track.each(count);
            if let Some(t) = &self.conn_track {
                t.each(count);
            }
        }
        drop(self.guard.take());
        drop(self.slot.take());
        self.session.left_server();
        if let Some(be) = &self.backend {
            if self.backend_active {
                be.live.active.fetch_sub(1, Relaxed);
            }
            if let Some(i) = self.server {
                be.balancer.released(i);
            }
        }
        let (Some((sink, format)), Some((started, wall))) = (&self.frontend.log, self.clock) else {
            return;
        };
        let ms = |d: Duration| d.as_millis() as i64;
        let (method, uri, version) =
            self.line
                .take()
                .unwrap_or((Method::GET, Uri::from_static("/"), Version::HTTP_11));
        let t = self.timing;
        let mut term = [b'-'; 4];
        term[..2].copy_from_slice(&self.termination);
        sink.send(crate::log::Record {
            format: *format,
            client: self.client,
            accepted: wall,
            frontend: self.frontend.name.clone(),
            tls: self.tls,
            backend: self.backend.as_ref().map(|b| b.name.clone()),
            server: self
                .backend
                .as_ref()
                .zip(self.server)
                .map(|(b, i)| b.servers[i].name.clone()),
            t_request: ms(self.t_request),
            t_queue: if self.backend.is_some() {
                ms(self.t_queue)
            } else {
                -1
            },
            t_connect: t.map_or(-1, |t| ms(t.connect)),
            t_response: t.map_or(-1, |t| ms(t.response)),
            t_total: ms(self.t_request + started.elapsed()),
            // HAProxy logs -1 for a request that got no response.
            status: if answered { i32::from(self.status) } else { -1 },
            bytes_out,
            termination: term,
            global_conns: self.live.global.conns_cur.load(Relaxed),
            frontend_conns: self.frontend.live.conns_cur.load(Relaxed),
            backend_active: self
                .backend
                .as_ref()
                .map_or(0, |b| b.live.active.load(Relaxed)),
            server_active,
            retries: self.retries,
            method,
            uri,
            version,
        });
    }
}

/// Whatever way a request ends (finished by its connection, or dropped with its future
/// when the client resets the stream, the connection closes or the session is shut
/// down), it is counted once, releases what it holds and is logged.
impl Drop for Done {
    fn drop(&mut self) {
        self.complete();
    }
}

/// Removes hop-by-hop headers (RFC 9110 section 7.6.1), including those the `Connection`
/// header names. `keep_upgrade` keeps an upgrade handshake; `keep_te` keeps
/// `TE: trailers`, which tells the server that trailers will reach the client.
pub fn strip_hop_by_hop(h: &mut HeaderMap, keep_upgrade: bool, keep_te: bool) {
    static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
    static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
    // Most messages carry none of these: one pass over the names, no hashing.
    let any = h.keys().any(|k| {
        k == CONNECTION
            || k == TRANSFER_ENCODING
            || k == UPGRADE
            || k == TE
            || k == KEEP_ALIVE
            || k == PROXY_CONNECTION
    });
    if !any {
        return;
    }
    // Headers named by Connection go too; the usual `keep-alive` and `close` name none,
    // so the list is usually empty and allocates nothing.
    let mut named: Vec<HeaderName> = Vec::new();
    for v in h.get_all(CONNECTION) {
        for t in v.as_bytes().split(|b| *b == b',') {
            let t = t.trim_ascii();
            if t.is_empty()
                || t.eq_ignore_ascii_case(b"keep-alive")
                || t.eq_ignore_ascii_case(b"close")
            {
                continue;
            }
            if let Ok(n) = HeaderName::from_bytes(t)
                && !(keep_upgrade && n == UPGRADE)
            {
                named.push(n);
            }
        }
    }
    h.remove(CONNECTION);
    for n in named {
        h.remove(n);
    }
    h.remove(&KEEP_ALIVE);
    h.remove(&PROXY_CONNECTION);
    h.remove(TRANSFER_ENCODING);
    if keep_upgrade && h.contains_key(UPGRADE) {
        h.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        h.remove(UPGRADE);
    }
    if let Some(te) = h.get(TE) {
        let trailers = crate::http1::has_token(te.as_bytes(), "trailers");
        h.remove(TE);
        if keep_te && trailers {
            h.insert(TE, HeaderValue::from_static("trailers"));
        }
    }
}

fn ip_text(ip: IpAddr) -> String {
    canonical_ip(ip).to_string()
}

/// Applies `headers_with_underscores` to a request's header names; false when the
/// request must be refused. Some servers and frameworks read `_` as `-`, so that a
/// `Content_Length` or `X_Forwarded_For` the proxy passed as an ordinary header would
/// frame the body or name the client there.
fn underscores(
    action: Option<rampart_config::UnderscoreHeaders>,
    h: &mut HeaderMap,
    live: &FrontendLive,
) -> bool {
    use rampart_config::UnderscoreHeaders as U;
    if action == Some(U::Allow) || !h.keys().any(|k| k.as_str().contains('_')) {
        return true;
    }
    if action == Some(U::Reject) {
        return false;
    }
    let gone: Vec<HeaderName> = h
        .keys()
        .filter(|k| {
            k.as_str().contains('_') && (action == Some(U::Drop) || folds_into_framing(k.as_str()))
        })
        .cloned()
        .collect();
    live.removed_underscore
        .fetch_add(gone.len() as u64, Relaxed);
    for k in gone {
        h.remove(k);
    }
    true
}

/// Whether `name` with `_` read as `-` is a header that frames a message, routes it, or
/// names the client.
fn folds_into_framing(name: &str) -> bool {
    const FRAMING: [&str; 17] = [
        "content-length",
        "transfer-encoding",
        "host",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "expect",
        "content-encoding",
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-forwarded-port",
        "x-real-ip",
    ];
    FRAMING.iter().any(|f| {
        f.len() == name.len()
            && f.bytes()
                .zip(name.bytes())
                .all(|(a, b)| a == b || (a == b'-' && b == b'_'))
    })
}

/// Headers that tell a server who the client is, or how it connected: from a peer that is
/// not trusted, all of them are removed (whichever rampart adds itself), so that no client
/// can forge them.
static FORWARDING: [HeaderName; 6] = [
    HeaderName::from_static("forwarded"),
    HeaderName::from_static("x-forwarded-for"),
    HeaderName::from_static("x-forwarded-proto"),
    HeaderName::from_static("x-forwarded-host"),
    HeaderName::from_static("x-forwarded-port"),
    HeaderName::from_static("x-real-ip"),
];

/// Removes the forwarding headers of an untrusted peer, then adds `X-Forwarded-For`,
/// `X-Forwarded-Proto` and `Forwarded` as configured.
fn forwarding_headers(fe: &Frontend, info: &ConnInfo, h: &mut HeaderMap) {
    let f = &fe.forwarding;
    let trusted = f.trust.contains(info.client.ip());
    if !trusted && !f.keep_untrusted {
        for name in &FORWARDING {
            if let http::header::Entry::Occupied(e) = h.entry(name) {
                let n = e.remove_entry_mult().1.count();
                fe.live.removed_forwarding.fetch_add(n as u64, Relaxed);
            }
        }
    }
    if !(f.x_forwarded_for || f.x_forwarded_proto || f.forwarded) {
        return;
    }
    let trusted = trusted || f.keep_untrusted;
    let proto = if info.tls { "https" } else { "http" };
    static XFF: HeaderName = HeaderName::from_static("x-forwarded-for");
    static XFP: HeaderName = HeaderName::from_static("x-forwarded-proto");
    static FORWARDED: HeaderName = HeaderName::from_static("forwarded");
    let append = |h: &mut HeaderMap, name: &HeaderName, add: &str| {
        let mut v = BytesMut::new();
        if trusted {
            for old in h.get_all(name) {
                if !v.is_empty() {
                    v.put_slice(b", ");
                }
                v.put_slice(old.as_bytes());
            }
            if !v.is_empty() {
                v.put_slice(b", ");
            }
        }
        v.put_slice(add.as_bytes());
        if let Ok(val) = HeaderValue::from_maybe_shared(v.freeze()) {
            h.insert(name.clone(), val);
        }
    };
    let client = ip_text(info.client.ip());
    if f.x_forwarded_for {
        append(h, &XFF, &client);
    }
    if f.x_forwarded_proto && !(trusted && h.contains_key(&XFP)) {
        h.insert(
            XFP.clone(),
            HeaderValue::from_static(if info.tls { "https" } else { "http" }),
        );
    }
    if f.forwarded {
        let for_ = match canonical_ip(info.client.ip()) {
            IpAddr::V4(a) => a.to_string(),
            IpAddr::V6(a) => format!("\"[{a}]\""),
        };
        let mut el = format!("for={for_};proto={proto}");
        if let Some(host) = h.get(http::header::HOST).and_then(|v| v.to_str().ok())
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        {
            el.push_str(";host=");
            el.push_str(host);
        }
        append(h, &FORWARDED, &el);
    }
}

fn request_hash(be: &Backend, cx: &SampleCtx<'_>) -> Option<u64> {
    use crate::balance::Algo;
    use crate::balance::hash::hash64;
    match be.balancer.algo() {
        Algo::Source { v4_mask, v6_mask } => {
            Some(match mask_ip(cx.conn.client.ip(), *v4_mask, *v6_mask) {
                IpAddr::V4(a) => hash64(&a.octets()),
                IpAddr::V6(a) => hash64(&a.octets()),
            })
        }
        Algo::Uri => Some(hash64(cx.uri.path().as_bytes())),
        Algo::Hdr(name) => cx.headers.get(name).map(|v| hash64(v.as_bytes())),
        Algo::Maglev => match &be.hash_key {
            Some(k) => k.hash(cx),
            None => Some(match canonical_ip(cx.conn.client.ip()) {
                IpAddr::V4(a) => hash64(&a.octets()),
                IpAddr::V6(a) => hash64(&a.octets()),
            }),
        },
        _ => None,
    }
}

fn count_intercept(fe: &Frontend, kind: Intercept) {
    match kind {
        Intercept::Deny => fe.live.denied.fetch_add(1, Relaxed),
        Intercept::Return | Intercept::Redirect => fe.live.intercepted.fetch_add(1, Relaxed),
    };
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
    fe.live.requests.fetch_add(1, Relaxed);
    cx.live.global.requests.fetch_add(1, Relaxed);
    let (mut parts, body) = req.into_parts();
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
    if !underscores(fe.underscores, &mut parts.headers, &fe.live) {
        fe.live.count_refused(Some(Refusal::UnderscoreHeader));
        done.status = 400;
        done.termination = *b"PR";
        return (crate::error::error_response(StatusCode::BAD_REQUEST), done);
    }
    let nbsrv = |i: usize| snap.nbsrv(i);
    let conn_track: &Trackers = cx.track.as_deref().unwrap_or(&NO_TRACKERS);
    let env = Env {
        conn: &cx.info,
        frontend: &fe.name,
        nbsrv: &nbsrv,
        conn_track,
    };

    if let Some((resp, kind)) = run_request(
        &fe.request_rules,
        &fe.acls,
        &mut parts,
        &env,
        &mut done.track,
    ) {
        return intercepted(fe, resp, kind, done);
    }

    // Backend choice: the first matching route of the request's virtual host, else of
    // `use_backend`, else the default backend.
    let route = {
        let scx = SampleCtx {
            conn: &cx.info,
            frontend: &fe.name,
            method: &parts.method,
            uri: &parts.uri,
            version: parts.version,
            headers: &parts.headers,
            nbsrv: &nbsrv,
            track: Tracks {
                conn: Some(conn_track),
                req: Some(&done.track),
            },
        };
        let vhost = fe.vhosts.as_ref().and_then(|t| {
            let host = crate::routing::request_host(&parts)?;
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
            if let Some((resp, kind)) = run_request(
                &r.request_rules,
                &fe.acls,
                &mut parts,
                &env,
                &mut done.track,
            ) {
                return intercepted(fe, resp, kind, done);
            }
            r.target.choose()
        }
        None => fe.default_backend,
    };
    let Some(be) = chosen.and_then(|i| snap.backends.get(i)).cloned() else {
        let e = ProxyError::new(ErrorKind::NoBackend, "no backend for this request");
        done.status = e.status().as_u16();
        done.termination = e.termination();
        return (e.to_response(), done);
    };
    be.live.requests.fetch_add(1, Relaxed);
    let n = be.live.active.fetch_add(1, Relaxed) + 1;
    be.live.active_max.fetch_max(n, Relaxed);
    done.backend = Some(be.clone());
    done.backend_active = true;

    if let Some((resp, kind)) = run_request(
        &be.request_rules,
        &be.acls,
        &mut parts,
        &env,
        &mut done.track,
    ) {
        return intercepted(fe, resp, kind, done);
    }

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

    let key = if be.balancer.algo().hashes() {
        let scx = SampleCtx {
            conn: &cx.info,
            frontend: &fe.name,
            method: &parts.method,
            uri: &parts.uri,
            version: parts.version,
            headers: &parts.headers,
            nbsrv: &nbsrv,
            track: Tracks {
                conn: Some(conn_track),
                req: Some(&done.track),
            },
        };
        match route.map(|r| &r.hash_keys[..]).unwrap_or_default() {
            [] => request_hash(&be, &scx),
            keys if matches!(be.balancer.algo(), crate::balance::Algo::Maglev) => {
                combined_hash(keys, &scx)
            }
            _ => request_hash(&be, &scx),
        }
    } else {
        None
    };
    let mut plan = Plan {
        snap,
        fe,
        retries: route.and_then(|r| r.retries.clone()),
        timeout: route.and_then(|r| r.timeout),
        response_rules: route.map(|r| &r.response_rules[..]).unwrap_or_default(),
        persist: Persist::default(),
    };
    plan.persist = if be.stick.is_empty() && be.cookie.is_none() {
        Persist::default()
    } else {
        let scx = SampleCtx {
            conn: &cx.info,
            frontend: &fe.name,
            method: &parts.method,
            uri: &parts.uri,
            version: parts.version,
            headers: &parts.headers,
            nbsrv: &nbsrv,
            track: Tracks {
                conn: Some(conn_track),
                req: Some(&done.track),
            },
        };
        let mut p = persistence(&be, &scx);
        if let Some(c) = &be.cookie {
            // A valid cookie comes before the stick rules, as in HAProxy.
            p.cookie = request_cookie(c, &be, &mut parts.headers);
            p.server = p.cookie.map(|(i, _)| i).or(p.server);
        }
        p
    };
    forward(cx, &be, key, plan, parts, body, done).await
}

/// Completes a request that a rule answered.
fn intercepted(
    fe: &Frontend,
    resp: Response<Body>,
    kind: Intercept,
    mut done: Done,
) -> (Response<Body>, Done) {
    count_intercept(fe, kind);
    done.termination = if kind == Intercept::Deny {
        *b"PR"
    } else {
        *b"--"
    };
    done.status = resp.status().as_u16();
    (resp, done)
}

/// A route's hash keys combined (Envoy's hash policies: each key that has a value is
/// mixed in; none: no hash, the balancer picks at random).
fn combined_hash(keys: &[crate::rules::sample::Sample], cx: &SampleCtx<'_>) -> Option<u64> {
    let mut out: Option<u64> = None;
    for k in keys {
        if let Some(h) = k.hash(cx) {
            out = Some(out.map_or(h, |o| o.rotate_left(1) ^ h));
        }
    }
    out
}

/// What persistence asks of one request.
#[derive(Default)]
struct Persist {
    /// The server the client is stuck to.
    server: Option<usize>,
    /// Entries that get the chosen server.
    store: Vec<(Arc<crate::stick::Table>, crate::stick::Key)>,
    /// The server named by the client's persistence cookie, with the cookie's first-seen
    /// time (insert mode with dates).
    cookie: Option<(usize, u64)>,
}

/// Runs the backend's `stick` rules: the first matching entry that names a server wins;
/// `on` and `store-request` entries are stored with the server finally chosen.
fn persistence(be: &Backend, cx: &SampleCtx<'_>) -> Persist {
    use rampart_config::stick::{DataKind, StickKind};
    let mut p = Persist::default();
    for r in &be.stick {
        if !r.cond.as_ref().is_none_or(|c| c.eval(&be.acls, cx)) {
            continue;
        }
        let Some(key) = r.sample.value(cx).and_then(|v| r.table.key_of(&v)) else {
            continue;
        };
        if p.server.is_none() && r.kind != StickKind::StoreRequest {
            let id = r
                .table
                .with(&key, false, 0, |e| e.get(DataKind::ServerId))
                .flatten();
            if let Some(id) = id.filter(|id| *id >= 1 && (*id as usize) <= be.servers.len()) {
                p.server = Some(id as usize - 1);
            }
        }
        if r.kind != StickKind::Match {
            p.store.push((r.table.clone(), key));
        }
    }
    p
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Finds the persistence cookie in the request, and takes it off or unwraps it as the
/// mode says. Returns the server it names (with the first-seen date), if it is valid.
fn request_cookie(
    c: &crate::snapshot::CookieSpec,
    be: &Backend,
    headers: &mut HeaderMap,
) -> Option<(usize, u64)> {
    use rampart_config::stick::CookieMode;
    let mut found: Option<(usize, u64)> = None;
    let mut rewrite = false;
    for v in headers.get_all(http::header::COOKIE) {
        for (k, val) in crate::rules::sample::cookies(v.as_bytes()) {
            if k != c.name.as_bytes() {
                continue;
            }
            let val = std::str::from_utf8(val).unwrap_or("");
            let (srv, first) = match c.mode {
                CookieMode::Insert => {
                    let mut parts = val.split('|');
                    let srv = parts.next().unwrap_or("");
                    let last: Option<u64> = parts.next().and_then(|d| d.parse().ok());
                    let first: Option<u64> = parts.next().and_then(|d| d.parse().ok());
                    let now = now_unix();
                    let idle_ok = c
                        .max_idle
                        .is_none_or(|m| last.is_some_and(|l| now.saturating_sub(l) <= m.as_secs()));
                    let life_ok = c.max_life.is_none_or(|m| {
                        first.is_some_and(|f| now.saturating_sub(f) <= m.as_secs())
                    });
                    if !(idle_ok && life_ok) {
                        rewrite |= c.indirect;
                        continue;
                    }
                    (srv, first.unwrap_or(now))
                }
                CookieMode::Prefix => (val.split_once('~').map_or(val, |(s, _)| s), 0),
                CookieMode::Rewrite => (val, 0),
            };
            if let Some(i) = c.values.iter().position(|x| x == srv)
                && i < be.servers.len()
            {
                found = Some((i, first));
            }
            rewrite |= matches!(c.mode, CookieMode::Prefix) || c.indirect;
        }
    }
    if rewrite {
        // Insert+indirect: the server never sees the cookie; prefix: it sees its own value.
        let mut out: Vec<String> = Vec::new();
        for v in headers.get_all(http::header::COOKIE) {
            for part in v.as_bytes().split(|b| *b == b';') {
                let t = String::from_utf8_lossy(part.trim_ascii()).into_owned();
                if t.is_empty() {
                    continue;
                }
                match t.split_once('=') {
                    Some((k, val)) if k.trim() == c.name => {
                        if c.mode == CookieMode::Prefix
                            && let Some((_, rest)) = val.trim().split_once('~')
                        {
                            out.push(format!("{}={rest}", c.name));
                        }
                    }
                    _ => out.push(t),
                }
            }
        }
        headers.remove(http::header::COOKIE);
        if !out.is_empty()
            && let Ok(v) = HeaderValue::from_str(&out.join("; "))
        {
            headers.insert(http::header::COOKIE, v);
        }
    }
    found
}

/// Sets, rewrites or prefixes the persistence cookie in a response from server `si`.
fn response_cookie(
    c: &crate::snapshot::CookieSpec,
    si: usize,
    from_cookie: Option<(usize, u64)>,
    h: &mut HeaderMap,
) {
    use rampart_config::stick::CookieMode;
    let Some(value) = c.values.get(si) else {
        return;
    };
    match c.mode {
        CookieMode::Insert => {
            let dated = c.max_idle.is_some() || c.max_life.is_some();
            let valid = from_cookie.is_some_and(|(i, _)| i == si);
            if c.indirect && valid && !dated {
                return;
            }
            let now = now_unix();
            let v = if dated {
                let first = from_cookie
                    .filter(|(i, _)| *i == si)
                    .map_or(now, |(_, f)| f);
                format!("{}={value}|{now}|{first}{}", c.name, c.attrs)
            } else {
                format!("{}={value}{}", c.name, c.attrs)
            };
            if let Ok(v) = HeaderValue::from_str(&v) {
                h.append(http::header::SET_COOKIE, v);
                if c.nocache {
                    h.insert(
                        http::header::CACHE_CONTROL,
                        HeaderValue::from_static("private"),
                    );
                }
            }
        }
        CookieMode::Rewrite | CookieMode::Prefix => {
            let old: Vec<HeaderValue> = h
                .get_all(http::header::SET_COOKIE)
                .iter()
                .cloned()
                .collect();
            if old.is_empty() {
                return;
            }
            let mut changed = false;
            let new: Vec<HeaderValue> = old
                .into_iter()
                .map(|v| {
                    let b = v.as_bytes();
                    let Some(eq) = b.iter().position(|x| *x == b'=') else {
                        return v;
                    };
                    if b[..eq].trim_ascii() != c.name.as_bytes() {
                        return v;
                    }
                    let rest = &b[eq + 1..];
                    let end = rest.iter().position(|x| *x == b';').unwrap_or(rest.len());
                    let mut out = Vec::with_capacity(b.len() + value.len() + 1);
                    out.extend_from_slice(&b[..eq + 1]);
                    out.extend_from_slice(value.as_bytes());
                    if c.mode == CookieMode::Prefix {
                        out.push(b'~');
                        out.extend_from_slice(&rest[..end]);
                    }
                    out.extend_from_slice(&rest[end..]);
                    changed = true;
                    HeaderValue::from_bytes(&out).unwrap_or(v)
                })
                .collect();
            if changed {
                h.remove(http::header::SET_COOKIE);
                for v in new {
                    h.append(http::header::SET_COOKIE, v);
                }
                if c.nocache {
                    h.insert(
                        http::header::CACHE_CONTROL,
                        HeaderValue::from_static("private"),
                    );
                }
            }
        }
    }
}

/// What `handle` decided for `forward`: the configuration the request is served with
/// and its route's overrides of the backend's settings.
struct Plan<'a> {
    snap: &'a Snapshot,
    fe: &'a Arc<Frontend>,
    retries: Option<Arc<RetryPolicy>>,
    timeout: Option<Duration>,
    /// The route's response rules.
    response_rules: &'a [crate::rules::ResponseRule],
    /// What persistence asks of this request.
    persist: Persist,
}

/// A request body kept in memory so the request can be sent again.
enum Replay {
    /// Not kept: the request goes once.
    No(Body),
    Yes(Bytes),
}

/// Reads a request body of known length up to `max` into memory; other bodies are left
/// to stream (and the request is not retried).
async fn keep_body(body: Body, max: u64) -> Result<Replay, ProxyError> {
    use http_body::Body as _;
    if body.is_end_stream() {
        return Ok(Replay::Yes(Bytes::new()));
    }
    if let Some(b) = body.as_bytes() {
        return Ok(Replay::Yes(Bytes::copy_from_slice(b)));
    }
    match body.size_hint().exact() {
        Some(n) if n <= max => {}
        _ => return Ok(Replay::No(body)),
    }
    let mut body = body;
    let mut buf = BytesMut::new();
    loop {
        let frame = std::future::poll_fn(|c| std::pin::Pin::new(&mut body).poll_frame(c)).await;
        match frame {
            None => return Ok(Replay::Yes(buf.freeze())),
            Some(Err(e)) => {
                let mut p = ProxyError::new(e.kind, e.detail);
                p.side = e.side;
                return Err(p);
            }
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

/// The servers a request was sent to, in order, kept inline: retries are at most 10
/// (validated), so no allocation per request.
struct Tried {
    ids: [usize; 11],
    len: usize,
}

impl Tried {
    fn new() -> Self {
        Self {
            ids: [0; 11],
            len: 0,
        }
    }

    fn as_slice(&self) -> &[usize] {
        &self.ids[..self.len]
    }

    fn push(&mut self, i: usize) {
        if let Some(slot) = self.ids.get_mut(self.len) {
            *slot = i;
            self.len += 1;
        }
    }
}

/// Marks one retry in flight for the backend's `max_retries`.
struct RetryGuard(Arc<Backend>);

impl Drop for RetryGuard {
    fn drop(&mut self) {
        self.0.live.retries_active.fetch_sub(1, Relaxed);
    }
}

fn fail(mut done: Done, e: &ProxyError) -> (Response<Body>, Done) {
    done.status = e.status().as_u16();
    done.termination = e.termination();
    if e.side == Side::Client {
        let r = Refusal::of(done.status, done.termination);
        done.frontend.live.count_refused(r);
    }
    (e.to_response(), done)
}

/// The outcome of one pass over a backend's servers.
enum Pick {
    Got(usize, ActiveGuard),
    /// No server is usable at all.
    None,
    /// Usable servers exist, but all are at their `max_connections`.
    AllFull,
}

fn try_pick(
    be: &Backend,
    key: Option<u64>,
    tried: &[usize],
    redispatch: bool,
    prefer: Option<usize>,
) -> Pick {
    let mut full: Vec<usize> = Vec::new();
    // A client stuck to a server keeps it while the server can serve, including when it
    // is draining (it only takes no new clients); a DOWN server redispatches.
    if tried.is_empty()
        && let Some(i) = prefer
        && let Some(s) = be.servers.get(i)
        && s.live.persistable()
    {
        match s.live.try_start() {
            Some(g) => return Pick::Got(i, g),
            None => full.push(i),
        }
    }
    // A retry without redispatch goes back to the same server when it is usable.
    if !redispatch
        && let Some(&last) = tried.last()
        && be.servers[last].live.usable()
    {
        match be.servers[last].live.try_start() {
            Some(g) => return Pick::Got(last, g),
            None => full.push(last),
        }
    }
    let avoid: &[usize] = if redispatch { tried } else { &[] };
    while full.len() < be.servers.len() {
        let Some(i) = be.balancer.pick_excluding(key, avoid, &full) else {
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

/// Picks a server that has room under its `max_connections`, waiting for one (up to the
/// backend's queue timeout) when every usable server is full.
async fn pick_server(
    be: &Backend,
    key: Option<u64>,
    tried: &[usize],
    redispatch: bool,
    prefer: Option<usize>,
) -> Result<(usize, ActiveGuard), ProxyError> {
    let no_server = || {
        ProxyError::new(
            ErrorKind::NoServer,
            format!("no server available in backend {}", be.name),
        )
    };
    match try_pick(be, key, tried, redispatch, prefer) {
        Pick::Got(i, g) => return Ok((i, g)),
        Pick::None => return Err(no_server()),
        Pick::AllFull => {}
    }
    let Some(timeout) = be.queue_timeout else {
        return Err(crate::resilience::limits::overloaded(
            "server_max_connections",
        ));
    };
    let deadline = Instant::now() + timeout;
    loop {
        // Listen for freed slots before looking again, so that none is missed.
        let freed = be.live.server_freed.notified();
        tokio::pin!(freed);
        freed.as_mut().enable();
        match try_pick(be, key, tried, redispatch, prefer) {
            Pick::Got(i, g) => return Ok((i, g)),
            Pick::None => return Err(no_server()),
            Pick::AllFull => {}
        }
        if tokio::time::timeout_at(deadline, freed).await.is_err() {
            return Err(ProxyError::new(
                ErrorKind::QueueTimeout,
                "no server slot within the queue timeout",
            ));
        }
    }
}

/// Sends the request to a server of `be`, with the backend's limits, retries and outlier
/// detection, and runs the response rules.
async fn forward(
    cx: &ConnCtx,
    be: &Arc<Backend>,
    key: Option<u64>,
    route: Plan<'_>,
    parts: http::request::Parts,
    body: Body,
    mut done: Done,
) -> (Response<Body>, Done) {
    let fe = route.fe;
    let persist = route.persist;
    let snap = route.snap;
    let env_nbsrv = |i: usize| snap.nbsrv(i);
    let env = Env {
        conn: &cx.info,
        frontend: &fe.name,
        nbsrv: &env_nbsrv,
        conn_track: cx.track.as_deref().unwrap_or(&NO_TRACKERS),
    };
    let measure = fe.log.is_some();

    // The backend's in-flight limit, possibly after a wait in its queue.
    if let Some(limits) = be.gate {
        let started = measure.then(Instant::now);
        match Gate::acquire(&be.live, limits).await {
            Ok(slot) => done.slot = Some(slot),
            Err(e) => {
                let limit = match e.kind {
                    ErrorKind::Overloaded(l) => l,
                    _ => "queue_timeout",
                };
                be.live.overflow.count(limit);
                return fail(done, &e);
            }
        }
        done.t_queue = started.map_or(Duration::ZERO, |s| s.elapsed());
    }

    let server_timeout = route.timeout.unwrap_or(be.server_timeout);
    let policy = route
        .retries
        .or_else(|| be.retries.clone())
        .filter(|p| p.attempts > 0);
    let head_timeout = policy
        .as_ref()
        .and_then(|p| p.per_try_timeout)
        .map_or(server_timeout, |t| t.min(server_timeout));
    let method = parts.method.clone();
    let uri = parts.uri.clone();
    let version = parts.version;

    // With retries, the request is kept so it can be sent again.
    let (mut once, replay, kept_parts) = match &policy {
        None => (Some(Request::from_parts(parts, body)), None, None),
        Some(p) => match keep_body(body, p.max_body).await {
            Ok(Replay::Yes(bytes)) => {
                let keep = (
                    parts.method.clone(),
                    parts.uri.clone(),
                    parts.version,
                    parts.headers.clone(),
                );
                (
                    Some(Request::from_parts(parts, Body::full(bytes.clone()))),
                    Some(bytes),
                    Some(keep),
                )
            }
            Ok(Replay::No(body)) => (Some(Request::from_parts(parts, body)), None, None),
            Err(e) => return fail(done, &e),
        },
    };
    if policy.is_some() {
        let mut w = be
            .live
            .budget
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        w.deposit(now_secs());
    }

    let mut tried = Tried::new();
    let mut retry_guard: Option<RetryGuard> = None;
    loop {
        let redispatch = policy.as_ref().is_none_or(|p| p.redispatch);
        let (si, guard) =
            match pick_server(be, key, tried.as_slice(), redispatch, persist.server).await {
                Ok(x) => x,
                Err(e) => {
                    match e.kind {
                        ErrorKind::NoServer => be.live.no_server.fetch_add(1, Relaxed),
                        ErrorKind::Overloaded(l) => {
                            be.live.overflow.count(l);
                            0
                        }
                        _ => {
                            be.live.overflow.count("queue_timeout");
                            0
                        }
                    };
                    return fail(done, &e);
                }
            };
        let server = &be.servers[si];
        for (table, k) in &persist.store {
            table.with(k, true, 0, |e| {
                e.set(rampart_config::stick::DataKind::ServerId, si as u64 + 1)
            });
        }
        if tried.len > 0 {
            be.live.retries.fetch_add(1, Relaxed);
            server.live.retries.fetch_add(1, Relaxed);
            if !tried.as_slice().contains(&si) {
                be.live.redispatches.fetch_add(1, Relaxed);
            }
        }
        tried.push(si);
        cx.session.at_server(&server.live);
        done.server = Some(si);
        done.guard = Some(guard);
        done.retries = tried.len as u32 - 1;

        let req = match once.take() {
            Some(r) => r,
            None => {
                let (Some((m, u, v, h)), Some(bytes)) = (&kept_parts, &replay) else {
                    // Unreachable: a retry needs a kept request.
                    let e = ProxyError::new(ErrorKind::Internal, "retry without a kept request");
                    return fail(done, &e);
                };
                let mut r = Request::new(Body::full(bytes.clone()));
                *r.method_mut() = m.clone();
                *r.uri_mut() = u.clone();
                *r.version_mut() = *v;
                *r.headers_mut() = h.clone();
                r
            }
        };
        let result = server
            .upstream
            .send(req, server_timeout, head_timeout, measure)
            .await;

        if let Some(spec) = &be.outlier {
            let outcome = match &result {
                Ok((resp, _)) => Some(Outlier::Status(resp.status().as_u16())),
                Err(e) if e.side == Side::Server && !matches!(e.kind, ErrorKind::Overloaded(_)) => {
                    Some(Outlier::LocalFailure)
                }
                Err(_) => None,
            };
            if let Some(o) = outcome {
                crate::resilience::outlier::record(
                    spec,
                    &server.live,
                    &be.live,
                    be.servers.len(),
                    o,
                    std::time::Instant::now(),
                );
            }
        }

        // Should this attempt be followed by another?
        let retry = match (&policy, &result) {
            (Some(p), _)
                if replay.is_none()
                    || tried.len as u32 > p.attempts
                    || tried.len == tried.ids.len() =>
            {
                None
            }
            (Some(p), Ok((resp, _))) => p
                .retries_status(resp.status().as_u16(), &method)
                .then_some(p),
            (Some(p), Err(e)) => {
                (e.side == Side::Server && p.retries_error(e.kind, &method)).then_some(p)
            }
            (None, _) => None,
        };
        if let Some(p) = retry {
            if be.live.retries_active.load(Relaxed) >= be.max_retries {
                be.live.overflow.count("max_retries");
            } else if !be
                .live
                .budget
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .withdraw(now_secs(), p.budget_ratio, p.budget_min_per_second)
            {
                be.live.overflow.count("budget");
            } else {
                if retry_guard.is_none() {
                    be.live.retries_active.fetch_add(1, Relaxed);
                    retry_guard = Some(RetryGuard(be.clone()));
                }
                match &result {
                    Ok((resp, _)) => {
                        tracing::debug!(backend = %be.name, server = %server.name, status = resp.status().as_u16(), "retrying")
                    }
                    Err(e) => {
                        tracing::debug!(backend = %be.name, server = %server.name, "retrying after: {e}")
                    }
                }
                server_error_counts(be, si, &result);
                drop(result);
                let wait = backoff(
                    p.backoff_base,
                    p.backoff_max,
                    tried.len as u32,
                    fastrand::f64(),
                );
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                continue;
            }
        }
        drop(retry_guard);
        server_error_counts(be, si, &result);
        let mut resp = match result {
            Ok((resp, timing)) => {
                done.timing = Some(timing);
                resp
            }
            Err(e) => {
                tracing::debug!(backend = %be.name, server = %server.name, "request failed: {e}");
                return fail(done, &e);
            }
        };

        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            strip_hop_by_hop(resp.headers_mut(), false, false);
        }
        if let Some(c) = &be.cookie {
            response_cookie(c, si, persist.cookie, resp.headers_mut());
        }
        let rl = RequestLine {
            method: &method,
            uri: &uri,
            version,
        };
        let denied = run_response(
            &be.response_rules,
            &be.acls,
            &mut resp,
            &rl,
            &env,
            &done.track,
        ) || run_response(
            route.response_rules,
            &fe.acls,
            &mut resp,
            &rl,
            &env,
            &done.track,
        ) || run_response(
            &fe.response_rules,
            &fe.acls,
            &mut resp,
            &rl,
            &env,
            &done.track,
        );
        if denied {
            fe.live.denied.fetch_add(1, Relaxed);
            done.termination = *b"PH";
        }
        done.status = resp.status().as_u16();
        return (resp, done);
    }
}

/// Counts a failed attempt against its server and backend.
fn server_error_counts(
    be: &Backend,
    si: usize,
    result: &Result<(Response<Body>, Timing), ProxyError>,
) {
    let Err(e) = result else {
        return;
    };
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
