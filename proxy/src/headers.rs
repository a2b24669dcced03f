//! Header work on the request path: hop-by-hop fields, header names with underscores,
//! and the forwarding headers (`X-Forwarded-*`, `Forwarded`) with their trust rules.

use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;

use bytes::{BufMut, BytesMut};
use http::HeaderMap;
use http::header::{CONNECTION, HeaderName, HeaderValue, TE, TRANSFER_ENCODING, UPGRADE};

use crate::rules::sample::{ConnInfo, canonical_ip};
use crate::snapshot::Frontend;
use crate::state::FrontendLive;

/// Which of the headers the proxy reads or removes on every message a header map holds,
/// found in one pass over its names: no hashing, which costs more than the pass on the few
/// headers a message has. A set bit says the name was there when the map was looked at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Present(u16);

impl Present {
    pub const CONNECTION: u16 = 1;
    pub const TRANSFER_ENCODING: u16 = 1 << 1;
    pub const UPGRADE: u16 = 1 << 2;
    pub const TE: u16 = 1 << 3;
    pub const KEEP_ALIVE: u16 = 1 << 4;
    pub const PROXY_CONNECTION: u16 = 1 << 5;
    pub const EXPECT: u16 = 1 << 6;
    pub const CONTENT_LENGTH: u16 = 1 << 7;
    pub const HOST: u16 = 1 << 8;
    /// Any of the forwarding headers (`Forwarded`, `X-Forwarded-*`, `X-Real-IP`).
    pub const FORWARDING: u16 = 1 << 9;
    /// The hop-by-hop headers that `strip_hop_by_hop` removes by name.
    const HOP: u16 = Self::CONNECTION
        | Self::TRANSFER_ENCODING
        | Self::UPGRADE
        | Self::TE
        | Self::KEEP_ALIVE
        | Self::PROXY_CONNECTION;

    pub fn of(h: &HeaderMap) -> Present {
        let mut p = Present::default();
        for k in h.keys() {
            p.add(k);
        }
        p
    }

    /// Notes the header `k`.
    pub fn add(&mut self, k: &HeaderName) {
        self.0 |= Self::bit(k);
    }

    fn bit(k: &HeaderName) -> u16 {
        // One match on the lower-case name: a jump on its length, then one comparison.
        match k.as_str() {
            "connection" => Self::CONNECTION,
            "transfer-encoding" => Self::TRANSFER_ENCODING,
            "upgrade" => Self::UPGRADE,
            "te" => Self::TE,
            "keep-alive" => Self::KEEP_ALIVE,
            "proxy-connection" => Self::PROXY_CONNECTION,
            "expect" => Self::EXPECT,
            "content-length" => Self::CONTENT_LENGTH,
            "host" => Self::HOST,
            "forwarded" | "x-forwarded-for" | "x-forwarded-proto" | "x-forwarded-host"
            | "x-forwarded-port" | "x-real-ip" => Self::FORWARDING,
            _ => 0,
        }
    }

    pub fn has(self, bits: u16) -> bool {
        self.0 & bits != 0
    }
}

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Gives a map's values one allocation of their own, of their size. For a message going
/// to an HTTP/2 peer: its HPACK encoder keeps the values it indexes for the life of the
/// connection, and a value sliced from a read buffer would keep the whole buffer.
pub fn rehome(map: &mut HeaderMap) {
    let mut all = BytesMut::with_capacity(map.values().map(HeaderValue::len).sum());
    for v in map.values() {
        all.extend_from_slice(v.as_bytes());
    }
    let all = all.freeze();
    let mut at = 0;
    for v in map.values_mut() {
        let end = at + v.len();
        // The bytes are the value's own, so they are valid again.
        if let Ok(mut own) = HeaderValue::from_maybe_shared(all.slice(at..end)) {
            own.set_sensitive(v.is_sensitive());
            *v = own;
        }
        at = end;
    }
}

/// Removes hop-by-hop headers (RFC 9110 section 7.6.1), including those the `Connection`
/// header names. `keep_upgrade` keeps an upgrade handshake; `keep_te` keeps
/// `TE: trailers`, which tells the server that trailers will reach the client.
pub fn strip_hop_by_hop(h: &mut HeaderMap, keep_upgrade: bool, keep_te: bool) {
    let present = Present::of(h);
    strip_present(h, present, keep_upgrade, keep_te);
}

/// `strip_hop_by_hop` with the names the map held already known: only those are looked up.
pub(crate) fn strip_present(
    h: &mut HeaderMap,
    present: Present,
    keep_upgrade: bool,
    keep_te: bool,
) {
    // Most messages carry none of these, or only `Connection: keep-alive`.
    if !present.has(Present::HOP) {
        return;
    }
    if present.has(Present::CONNECTION) {
        // Headers named by Connection go too; the usual `keep-alive` and `close` name
        // none, so the list is usually empty and allocates nothing.
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
    }
    if present.has(Present::KEEP_ALIVE) {
        h.remove(&KEEP_ALIVE);
    }
    if present.has(Present::PROXY_CONNECTION) {
        h.remove(&PROXY_CONNECTION);
    }
    if present.has(Present::TRANSFER_ENCODING) {
        h.remove(TRANSFER_ENCODING);
    }
    if present.has(Present::UPGRADE) {
        // Kept upgrades are not among the names `Connection` removed above.
        if keep_upgrade {
            h.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        } else {
            h.remove(UPGRADE);
        }
    }
    if present.has(Present::TE)
        && let Some(te) = h.get(TE)
    {
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
pub(crate) fn underscores(
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
/// `present` is what the map held before: only forwarding headers it saw are looked up.
pub(crate) fn forwarding_headers(
    fe: &Frontend,
    info: &ConnInfo,
    h: &mut HeaderMap,
    present: Present,
) {
    let f = &fe.forwarding;
    let trusted = f.trust.contains(info.client().ip());
    if !trusted && !f.keep_untrusted && present.has(Present::FORWARDING) {
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
    let client = ip_text(info.client().ip());
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
        let for_ = match canonical_ip(info.client().ip()) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rehomed_values_keep_nothing_of_their_buffer() {
        let mut buf = BytesMut::with_capacity(1024);
        buf.extend_from_slice(b"abcdefghij");
        let head = buf.split_to(10).freeze();
        let mut h = HeaderMap::new();
        h.insert(
            "x-a",
            HeaderValue::from_maybe_shared(head.slice(0..3)).unwrap(),
        );
        h.append(
            "x-a",
            HeaderValue::from_maybe_shared(head.slice(3..5)).unwrap(),
        );
        let mut secret = HeaderValue::from_maybe_shared(head.slice(5..10)).unwrap();
        secret.set_sensitive(true);
        h.insert("authorization", secret);
        h.insert("x-static", HeaderValue::from_static("s"));
        drop(head);
        assert!(!buf.try_reclaim(1024), "the values hold the buffer");
        rehome(&mut h);
        assert!(buf.try_reclaim(1024), "the values still hold the buffer");
        let a: Vec<_> = h.get_all("x-a").iter().collect();
        assert_eq!(a, ["abc", "de"]);
        assert_eq!(h["authorization"], "fghij");
        assert!(h["authorization"].is_sensitive());
        assert_eq!(h["x-static"], "s");
        assert_eq!(h.len(), 4);
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    /// Headers in, whether to keep an upgrade and `TE: trailers`, the names left.
    type Case<'a> = (&'a [(&'a str, &'a str)], bool, bool, &'a [&'a str]);

    fn names(h: &HeaderMap) -> Vec<String> {
        let mut v: Vec<String> = h.keys().map(|k| k.as_str().to_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn present_sees_each_name_it_tracks_and_nothing_else() {
        for (name, bit) in [
            ("connection", Present::CONNECTION),
            ("transfer-encoding", Present::TRANSFER_ENCODING),
            ("upgrade", Present::UPGRADE),
            ("te", Present::TE),
            ("keep-alive", Present::KEEP_ALIVE),
            ("proxy-connection", Present::PROXY_CONNECTION),
            ("expect", Present::EXPECT),
            ("content-length", Present::CONTENT_LENGTH),
            ("host", Present::HOST),
            ("forwarded", Present::FORWARDING),
            ("x-forwarded-for", Present::FORWARDING),
            ("x-real-ip", Present::FORWARDING),
        ] {
            let p = Present::of(&map(&[(name, "1"), ("x-other", "2"), ("accept", "*/*")]));
            assert_eq!(p, Present(bit), "{name}");
        }
        assert_eq!(
            Present::of(&map(&[("x-forwarded", "1"), ("keep", "1")])),
            Present(0)
        );
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_come_off() {
        let cases: [Case<'_>; 8] = [
            (
                &[("connection", "keep-alive"), ("a", "1")],
                false,
                false,
                &["a"],
            ),
            (
                &[("connection", "close, x-p"), ("x-p", "1"), ("a", "1")],
                false,
                false,
                &["a"],
            ),
            (
                &[
                    ("keep-alive", "timeout=5"),
                    ("proxy-connection", "x"),
                    ("a", "1"),
                ],
                false,
                false,
                &["a"],
            ),
            (
                &[("transfer-encoding", "chunked"), ("a", "1")],
                false,
                false,
                &["a"],
            ),
            (
                &[("connection", "upgrade"), ("upgrade", "websocket")],
                true,
                false,
                &["connection", "upgrade"],
            ),
            (
                &[("connection", "upgrade"), ("upgrade", "websocket")],
                false,
                false,
                &[],
            ),
            (&[("te", "trailers, gzip")], false, true, &["te"]),
            (
                &[("connection", "te"), ("te", "trailers")],
                false,
                true,
                &[],
            ),
        ];
        for (pairs, keep_upgrade, keep_te, left) in cases {
            let mut h = map(pairs);
            strip_hop_by_hop(&mut h, keep_upgrade, keep_te);
            assert_eq!(names(&h), *left, "{pairs:?}");
        }
        let mut h = map(&[("te", "trailers, gzip")]);
        strip_hop_by_hop(&mut h, false, true);
        assert_eq!(h["te"], "trailers");
        let mut h = map(&[("connection", "upgrade"), ("upgrade", "websocket")]);
        strip_hop_by_hop(&mut h, true, false);
        assert_eq!(h["connection"], "upgrade");
    }
}
