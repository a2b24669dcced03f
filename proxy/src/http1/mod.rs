//! HTTP/1.1 message syntax (RFC 9112), shared by the client-facing server and the
//! upstream client: head parsing with `httparse`, head encoding, and body framing.
//!
//! Heads are parsed out of the connection's read buffer without copying header values:
//! the head bytes are frozen into one `Bytes` that header values point into.

pub mod decode;
pub mod encode;
pub mod parse;

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the connection closes (responses only).
    Close,
}

/// Whether a comma-separated header value list contains `token` (case-insensitive).
pub fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Fields a trailer section must not carry (RFC 9110 section 6.5.1): those that frame or
/// route the message, modify the request, authenticate, control caching or describe the
/// content, the hop-by-hop ones, and those that name the client. A recipient that merged
/// them into the head would be framed, routed or trusted by the sender's word.
const FORBIDDEN_TRAILERS: [&str; 40] = [
    "age",
    "authorization",
    "cache-control",
    "connection",
    "content-encoding",
    "content-length",
    "content-location",
    "content-range",
    "content-type",
    "cookie",
    "date",
    "expect",
    "expires",
    "forwarded",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "keep-alive",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "range",
    "retry-after",
    "set-cookie",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "vary",
    "www-authenticate",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-proto",
];

/// Removes the trailer fields [`FORBIDDEN_TRAILERS`] names; returns how many went.
pub fn drop_forbidden_trailers(t: &mut http::HeaderMap) -> usize {
    if !t.keys().any(|k| FORBIDDEN_TRAILERS.contains(&k.as_str())) {
        return 0;
    }
    let gone: Vec<http::HeaderName> = t
        .keys()
        .filter(|k| FORBIDDEN_TRAILERS.contains(&k.as_str()))
        .cloned()
        .collect();
    let mut n = 0;
    for k in gone {
        n += t.get_all(&k).iter().count();
        t.remove(k);
    }
    tracing::debug!("{n} forbidden trailer fields removed");
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_trailers_go_and_the_rest_stay() {
        let mut t = http::HeaderMap::new();
        t.append("content-length", "9".parse().unwrap());
        t.append("set-cookie", "a=b".parse().unwrap());
        t.append("set-cookie", "c=d".parse().unwrap());
        t.append("x-sum", "9".parse().unwrap());
        t.append("grpc-status", "0".parse().unwrap());
        assert_eq!(drop_forbidden_trailers(&mut t), 3);
        assert_eq!(t.len(), 2);
        assert_eq!(t["grpc-status"], "0");
        let mut clean = t.clone();
        assert_eq!(drop_forbidden_trailers(&mut clean), 0);
        assert_eq!(clean, t);
    }
}
