//! Compiled routes: which backend a request goes to once the frontend's rules have run.
//!
//! A frontend's virtual hosts are tried first: the request's host picks at most one of
//! them (Envoy's order: the exact name, then the longest `*.suffix`, then the longest
//! `prefix*`, then `*`), and only its routes are tried. Then `use_backend` routes, then
//! the default backend. Within a list the first route whose condition holds wins.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::resilience::retry::RetryPolicy;
use crate::rules::first::FirstMatch;
use crate::rules::sample::{Sample, SampleCtx};
use crate::rules::{AclTable, Cond, RequestRule, ResponseRule};

/// Where a route sends requests.
pub enum Target {
    One(usize),
    /// Weighted split: (backend, cumulative weight), and the total.
    Split(Vec<(usize, u32)>, u32),
    /// No backend: the route's request rules answer.
    None,
    /// The backend this format names for the request (HAProxy's `use_backend %[...]`).
    Dynamic(crate::rules::Fmt),
}

impl Target {
    /// The backend for the request `cx` reads (made only for a dynamic name): a dynamic
    /// name that is no backend's (or renders nothing) falls back to `default`, as HAProxy
    /// does.
    pub fn resolve<'c>(
        &self,
        cx: impl FnOnce() -> SampleCtx<'c>,
        by_name: impl Fn(&str) -> Option<usize>,
        default: Option<usize>,
    ) -> Option<usize> {
        match self {
            Target::Dynamic(f) => {
                let name = f.render_bytes(&cx());
                std::str::from_utf8(&name)
                    .ok()
                    .and_then(by_name)
                    .or(default)
            }
            t => t.choose(),
        }
    }

    /// The backend for one request, for static targets.
    pub fn choose(&self) -> Option<usize> {
        match self {
            Target::One(b) => Some(*b),
            Target::Split(parts, total) => {
                let x = fastrand::u32(..(*total).max(1));
                parts
                    .iter()
                    .find(|(_, cum)| x < *cum)
                    .or(parts.first())
                    .map(|(b, _)| *b)
            }
            Target::None | Target::Dynamic(_) => None,
        }
    }
}

/// A compiled route.
pub struct Route {
    pub cond: Option<Cond>,
    pub target: Target,
    /// Retry policy replacing the backend's.
    pub retries: Option<Arc<RetryPolicy>>,
    /// Server timeout replacing the backend's.
    pub timeout: Option<Duration>,
    /// Run for requests that take the route, after the frontend's rules.
    pub request_rules: Vec<RequestRule>,
    /// Run for their responses, after the backend's rules and before the frontend's.
    pub response_rules: Vec<ResponseRule>,
    /// What a hashing backend hashes for this route (empty: the backend's own key).
    pub hash_keys: Vec<Sample>,
}

/// Routes tried in order: the first whose condition holds wins. Runs of routes that test
/// one sample against strings the same way (`path_beg`, `hdr(host)`, ...) are answered by
/// one index lookup each, so the cost does not grow with their number.
pub struct Routes {
    list: Vec<Route>,
    plan: FirstMatch,
}

impl Routes {
    /// Routes tried one by one until [`Routes::index`].
    pub fn new(list: Vec<Route>) -> Self {
        Self {
            plan: FirstMatch::each(list.len()),
            list,
        }
    }

    /// Builds the indexes over `acls`, the table the routes' conditions refer to.
    pub fn index(&mut self, acls: &AclTable) {
        let conds: Vec<Option<&Cond>> = self.list.iter().map(|r| r.cond.as_ref()).collect();
        self.plan = FirstMatch::new(acls, &conds);
    }

    /// Mode tcp: the first route whose condition holds, trying them in order; `Err` when
    /// a condition that failed may hold once more of the payload arrives.
    pub fn first_on_payload(
        &self,
        acls: &AclTable,
        cx: &SampleCtx<'_>,
    ) -> Result<Option<&Route>, crate::rules::Short> {
        for r in &self.list {
            let Some(c) = &r.cond else {
                return Ok(Some(r));
            };
            if let Some(p) = cx.payload {
                p.short.set(false);
            }
            if c.eval(acls, cx) {
                return Ok(Some(r));
            }
            if cx.payload.is_some_and(|p| p.short.get() && !p.last) {
                return Err(crate::rules::Short);
            }
        }
        Ok(None)
    }

    /// The first route whose condition holds for the request.
    pub fn first(&self, acls: &AclTable, cx: &SampleCtx<'_>) -> Option<&Route> {
        let i = self.plan.first(cx, |i| {
            self.list[i].cond.as_ref().is_none_or(|c| c.eval(acls, cx))
        })?;
        self.list.get(i)
    }
}

/// Virtual hosts by domain.
#[derive(Default)]
pub struct VhostTable {
    exact: HashMap<String, usize>,
    /// Longest first.
    suffixes: Vec<(String, usize)>,
    /// Longest first.
    prefixes: Vec<(String, usize)>,
    any: Option<usize>,
    /// Whether a port in the host is left out when choosing (Envoy's
    /// `ignore_port_in_host_matching`).
    pub ignore_port: bool,
    /// The routes of each virtual host.
    pub hosts: Vec<Routes>,
}

impl VhostTable {
    /// Adds a virtual host with its domains (already validated) and routes.
    pub fn add(&mut self, domains: &[rampart_config::model::DomainMatch], routes: Vec<Route>) {
        use rampart_config::model::DomainMatch;
        let i = self.hosts.len();
        self.hosts.push(Routes::new(routes));
        for d in domains {
            match d {
                DomainMatch::Exact(s) => {
                    self.exact.entry(s.clone()).or_insert(i);
                }
                DomainMatch::Suffix(s) => self.suffixes.push((s.clone(), i)),
                DomainMatch::Prefix(s) => self.prefixes.push((s.clone(), i)),
                DomainMatch::Any => {
                    self.any.get_or_insert(i);
                }
            }
        }
        // Stable sorts: among equal lengths, the first declared wins.
        self.suffixes
            .sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        self.prefixes
            .sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
    }

    /// Builds the routes' indexes over `acls`.
    pub fn index(&mut self, acls: &AclTable) {
        for h in &mut self.hosts {
            h.index(acls);
        }
    }

    /// The virtual host serving `host` (the `Host` header as received), if any.
    pub fn select(&self, host: &str) -> Option<usize> {
        let host = if self.ignore_port {
            without_port(host)
        } else {
            host
        };
        let lower;
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = host.to_ascii_lowercase();
            lower.as_str()
        } else {
            host
        };
        if let Some(i) = self.exact.get(host) {
            return Some(*i);
        }
        if let Some((_, i)) = self
            .suffixes
            .iter()
            .find(|(s, _)| host.len() > s.len() && host.ends_with(s.as_str()))
        {
            return Some(*i);
        }
        if let Some((_, i)) = self
            .prefixes
            .iter()
            .find(|(s, _)| host.len() > s.len() && host.starts_with(s.as_str()))
        {
            return Some(*i);
        }
        self.any
    }
}

/// `host` without a `:port` (`[v6]:port` keeps its brackets).
fn without_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((h, p))
            if !p.is_empty()
                && p.bytes().all(|b| b.is_ascii_digit())
                && (!h.contains(':') || h.ends_with(']')) =>
        {
            h
        }
        _ => host,
    }
}

/// The host a request names: its `Host` header, else the authority of its target
/// (HTTP/2's `:authority`).
pub fn request_host(parts: &http::request::Parts) -> Option<&str> {
    parts
        .headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()))
}

/// What a hashing balancer hashes for a request: the route's hash keys for `maglev`
/// backends, else the backend's own key (client address, path, header, `hash_key`).
pub(crate) fn hash_key(
    be: &crate::snapshot::Backend,
    route: Option<&Route>,
    cx: &crate::rules::sample::SampleCtx<'_>,
) -> Option<u64> {
    match route.map(|r| &r.hash_keys[..]).unwrap_or_default() {
        keys if !keys.is_empty() && matches!(be.balancer.algo(), crate::balance::Algo::Maglev) => {
            combined_hash(keys, cx)
        }
        _ => request_hash(be, cx),
    }
}

fn request_hash(
    be: &crate::snapshot::Backend,
    cx: &crate::rules::sample::SampleCtx<'_>,
) -> Option<u64> {
    use crate::balance::Algo;
    use crate::balance::hash::hash64;
    match be.balancer.algo() {
        Algo::Source { v4_mask, v6_mask } => Some(
            match crate::rules::sample::mask_ip(cx.conn.client().ip(), *v4_mask, *v6_mask) {
                std::net::IpAddr::V4(a) => hash64(&a.octets()),
                std::net::IpAddr::V6(a) => hash64(&a.octets()),
            },
        ),
        Algo::Uri => Some(hash64(cx.uri.path().as_bytes())),
        Algo::Hdr(name) => cx.headers.get(name).map(|v| hash64(v.as_bytes())),
        Algo::Maglev => match &be.hash_key {
            Some(k) => k.hash(cx),
            None => Some(
                match crate::rules::sample::canonical_ip(cx.conn.client().ip()) {
                    std::net::IpAddr::V4(a) => hash64(&a.octets()),
                    std::net::IpAddr::V6(a) => hash64(&a.octets()),
                },
            ),
        },
        _ => None,
    }
}

/// A route's hash keys combined (Envoy's hash policies: each key that has a value is
/// mixed in; none: no hash, the balancer picks at random).
fn combined_hash(
    keys: &[crate::rules::sample::Sample],
    cx: &crate::rules::sample::SampleCtx<'_>,
) -> Option<u64> {
    let mut out: Option<u64> = None;
    for k in keys {
        if let Some(h) = k.hash(cx) {
            out = Some(out.map_or(h, |o| o.rotate_left(1) ^ h));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rampart_config::model::DomainMatch;

    fn table(hosts: &[&[&str]]) -> VhostTable {
        let mut t = VhostTable::default();
        for domains in hosts {
            let d: Vec<DomainMatch> = domains
                .iter()
                .map(|d| DomainMatch::parse(d).unwrap())
                .collect();
            t.add(&d, Vec::new());
        }
        t
    }

    #[test]
    fn select_prefers_exact_then_longest_suffix_then_prefix_then_any() {
        let t = table(&[
            &["*"],
            &["*.example.com"],
            &["*.api.example.com"],
            &["api.example.com"],
            &["www.*"],
            &["www.example.*"],
        ]);
        assert_eq!(t.select("api.example.com"), Some(3));
        assert_eq!(t.select("API.Example.COM"), Some(3));
        assert_eq!(t.select("v1.api.example.com"), Some(2));
        assert_eq!(t.select("shop.example.com"), Some(1));
        // A suffix beats a prefix.
        assert_eq!(t.select("www.example.com"), Some(1));
        assert_eq!(t.select("www.example.org"), Some(5));
        assert_eq!(t.select("www.other.org"), Some(4));
        assert_eq!(t.select("other.org"), Some(0));
        // The wildcard matches at least one character.
        assert_eq!(t.select(".example.com"), Some(0));
    }

    #[test]
    fn select_without_any_host_finds_nothing_for_unknown_hosts() {
        let t = table(&[&["a.test"]]);
        assert_eq!(t.select("b.test"), None);
        // A port is part of the name unless the domain has it.
        assert_eq!(t.select("a.test:8080"), None);
        let t = table(&[&["a.test:8080"]]);
        assert_eq!(t.select("a.test:8080"), Some(0));
    }

    #[test]
    fn select_can_ignore_the_port() {
        let mut t = table(&[&["a.test"], &["[::1]"]]);
        t.ignore_port = true;
        assert_eq!(t.select("a.test:8080"), Some(0));
        assert_eq!(t.select("A.test"), Some(0));
        assert_eq!(t.select("[::1]:80"), Some(1));
        assert_eq!(t.select("[::1]"), Some(1));
    }

    #[test]
    fn split_choose_stays_within_its_backends() {
        let t = Target::Split(vec![(3, 80), (5, 100)], 100);
        let mut seen = [0; 8];
        for _ in 0..2000 {
            seen[t.choose().unwrap()] += 1;
        }
        assert_eq!(seen[3] + seen[5], 2000);
        assert!(seen[3] > seen[5], "{seen:?}");
        assert_eq!(Target::None.choose(), None);
    }
}
