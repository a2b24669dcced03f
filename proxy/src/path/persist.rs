//! Persistence: what ties a request to a server. This layer reads the backend's `stick`
//! rules and its persistence cookie from the request, and the hash key a hashing balancer
//! uses; the balancer prefers the server they name; and once the exchange is over, this
//! layer stores the server that served in the stick-table entries and sets the cookie on
//! the response.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use http::{HeaderMap, HeaderValue, Request, Response};
use tower::Service;

use super::future::{After, Hook};
use super::{Exchange, Outcome, RouteSettings};
use crate::body::Body;
use crate::error::ProxyError;
use crate::rules::sample::SampleCtx;
use crate::snapshot::Backend;

super::layer!(PersistLayer => Persistence);

impl<'a, S> Service<Request<Body>> for Persistence<'a, S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = ProxyError>,
{
    type Response = Response<Body>;
    type Error = ProxyError;
    type Future = After<S::Future, Remember<'a>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let x = self.x;
        let be = x.be;
        let settings = req.extensions().get::<RouteSettings>();
        let hashes = be.balancer.algo().hashes() && settings.is_none_or(|r| r.hash.is_none());
        if hashes || !be.stick.is_empty() || be.cookie.is_some() {
            let mut s = x.state();
            let s = &mut *s;
            let env = x.from.env;
            if hashes {
                let hash =
                    crate::routing::hash_key(be, x.from.route, &env.request(&req, &s.done.track));
                match req.extensions_mut().get_mut::<RouteSettings>() {
                    Some(r) => r.hash = hash,
                    None if hash.is_some() => {
                        req.extensions_mut().insert(RouteSettings {
                            hash,
                            ..RouteSettings::default()
                        });
                    }
                    None => {}
                }
            }
            if !be.stick.is_empty() {
                s.persist = persistence(be, &env.request(&req, &s.done.track));
            }
            if let Some(c) = &be.cookie {
                // A valid cookie comes before the stick rules, as in HAProxy.
                s.persist.cookie = request_cookie(c, be, req.headers_mut());
                if let Some((i, _)) = s.persist.cookie {
                    s.persist.server = Some(i);
                }
            }
        }
        After::new(self.inner.call(req), Remember(x))
    }
}

/// Stores the server the request went to in the stick-table entries its rules named, and
/// sets the persistence cookie on the response.
pub struct Remember<'a>(&'a Exchange<'a>);

impl Hook for Remember<'_> {
    fn after(self, out: &mut Outcome) {
        let x = self.0;
        if x.be.stick.is_empty() && x.be.cookie.is_none() {
            return;
        }
        let s = x.state();
        let Some(si) = s.done.server else {
            return;
        };
        s.persist.store_server(si);
        if let (Some(c), Ok(resp)) = (&x.be.cookie, out) {
            response_cookie(c, si, s.persist.cookie, resp.headers_mut());
        }
    }
}

/// What persistence asks of one request.
#[derive(Default)]
pub struct Persist {
    /// The server the client is stuck to.
    pub server: Option<usize>,
    /// Entries that get the chosen server.
    pub store: Vec<(Arc<crate::stick::Table>, crate::stick::Key)>,
    /// The server named by the client's persistence cookie, with the cookie's first-seen
    /// time (insert mode with dates).
    pub cookie: Option<(usize, u64)>,
}

impl Persist {
    /// Stores server `si` in the entries that get the chosen server.
    pub fn store_server(&self, si: usize) {
        for (table, k) in &self.store {
            table.with(k, true, 0, |e| {
                e.set(rampart_config::stick::DataKind::ServerId, si as u64 + 1)
            });
        }
    }
}

/// Runs the backend's `stick` rules: the first matching entry that names a server wins;
/// `on` and `store-request` entries are stored with the server finally chosen.
pub(crate) fn persistence(be: &Backend, cx: &SampleCtx<'_>) -> Persist {
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
