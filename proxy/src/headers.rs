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
pub(crate) fn forwarding_headers(fe: &Frontend, info: &ConnInfo, h: &mut HeaderMap) {
    let f = &fe.forwarding;
    let trusted = f.trust.contains(info.client().ip());
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
