//! Request and response heads.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::header::{
    CONNECTION, CONTENT_LENGTH, EXPECT, HeaderName, HeaderValue, TRANSFER_ENCODING,
};
use http::{HeaderMap, Method, StatusCode, Uri, Version};

use super::Framing;
use crate::headers::Present;

/// Why a head could not be parsed; each maps to a status for requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("malformed message head")]
    Malformed,
    #[error("request target too long")]
    UriTooLong,
    #[error("header section too large")]
    HeadersTooLarge,
    #[error("unsupported transfer coding")]
    UnsupportedTransferEncoding,
    #[error("conflicting message length")]
    BadLength,
    #[error("unsupported HTTP version")]
    Version,
    /// RFC 9112 section 3.2: no `Host` in an HTTP/1.1 request, more than one, or one
    /// that is not a host and port.
    #[error("missing, repeated or invalid Host")]
    Host,
}

impl HeadError {
    /// The status a client gets for this error.
    pub fn status(self) -> StatusCode {
        match self {
            HeadError::UriTooLong => StatusCode::URI_TOO_LONG,
            HeadError::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            HeadError::UnsupportedTransferEncoding => StatusCode::NOT_IMPLEMENTED,
            HeadError::Version => StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            HeadError::Malformed | HeadError::BadLength | HeadError::Host => {
                StatusCode::BAD_REQUEST
            }
        }
    }
}

/// Limits applied while parsing a request head.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    pub max_head: usize,
    pub max_headers: usize,
    pub max_uri: usize,
}

/// A parsed request head.
#[derive(Debug)]
pub struct RequestHead {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
    pub framing: Framing,
    /// The client allows the connection to stay open after this exchange.
    pub keep_alive: bool,
    pub expect_continue: bool,
    /// `Connection: upgrade` with an `Upgrade` header.
    pub upgrade: bool,
}

/// A parsed response head.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    pub reason: Option<Bytes>,
    pub version: Version,
    pub headers: HeaderMap,
    /// Body framing as far as the head tells; the caller applies HEAD/204/304 rules.
    pub framing: Framing,
    /// The server allows the connection to be reused.
    pub keep_alive: bool,
}

/// Headers parsed without touching the heap (a request or response with more uses it).
/// The parser's slots are left uninitialised until it fills them, so their size costs
/// nothing per message.
const STACK_HEADERS: usize = 128;
/// Headers whose byte ranges are noted on the stack (a head with more notes them on the
/// heap). The ranges are zeroed before use, so this is kept to what heads usually carry.
const STACK_RANGES: usize = 32;

fn offset_in(base: &[u8], part: &[u8]) -> (usize, usize) {
    let start = part.as_ptr() as usize - base.as_ptr() as usize;
    (start, start + part.len())
}

/// Byte ranges of one header within the head: name start and end, value start and end.
type Range = [u32; 4];

/// Records where each header lies in the head, while `httparse` borrows the buffer; the
/// ranges go on the stack for up to `STACK_RANGES` headers.
fn collect<'r>(
    base: &[u8],
    headers: &[httparse::Header<'_>],
    stack: &'r mut [Range; STACK_RANGES],
    heap: &'r mut Vec<Range>,
) -> &'r [Range] {
    let out: &mut [Range] = if headers.len() <= STACK_RANGES {
        &mut stack[..headers.len()]
    } else {
        heap.resize(headers.len(), [0; 4]);
        heap
    };
    for (r, h) in out.iter_mut().zip(headers) {
        let (ns, ne) = offset_in(base, h.name.as_bytes());
        let (vs, ve) = offset_in(base, h.value);
        *r = [ns as u32, ne as u32, vs as u32, ve as u32];
    }
    out
}

/// Room in a parsed head's map for the headers the proxy adds on the way (forwarding
/// headers, `traceparent`, `Vary`...), so that adding them does not grow the map, which
/// costs a reallocation and a rehash per request.
const ADDED_HEADERS: usize = 4;

/// The head's header map, and which of the headers the proxy looks at it holds (found
/// while the map is built, rather than in another pass over it).
fn build_headers(head: &Bytes, ranges: &[Range]) -> Result<(HeaderMap, Present), HeadError> {
    let mut map = crate::io::take_map(ranges.len() + ADDED_HEADERS);
    let mut present = Present::default();
    for r in ranges {
        let [ns, ne, vs, ve] = r.map(|x| x as usize);
        let name = HeaderName::from_bytes(&head[ns..ne]).map_err(|_| HeadError::Malformed)?;
        present.add(&name);
        // One pass over the value: a CR or LF is not a valid value byte, so a folded value
        // is found by the check that the value is valid.
        let value = match HeaderValue::from_maybe_shared(head.slice(vs..ve)) {
            Ok(v) => v,
            Err(_) => unfolded(&head[vs..ve])?,
        };
        map.append(name, value);
    }
    Ok((map, present))
}

/// A value with obsolete line folding, which only responses may carry (requests are
/// refused by the parser): each CR and LF becomes a space before the value is read or
/// passed on (RFC 9112 section 5.2). A value invalid otherwise is malformed.
#[cold]
fn unfolded(raw: &[u8]) -> Result<HeaderValue, HeadError> {
    if !raw.iter().any(|b| matches!(b, b'\r' | b'\n')) {
        return Err(HeadError::Malformed);
    }
    let unfolded: Vec<u8> = raw
        .iter()
        .map(|&b| if matches!(b, b'\r' | b'\n') { b' ' } else { b })
        .collect();
    HeaderValue::from_bytes(&unfolded).map_err(|_| HeadError::Malformed)
}

/// Body framing from `Transfer-Encoding` and `Content-Length` (RFC 9112 section 6).
/// A message with both is refused, as are unknown transfer codings.
fn body_framing(
    headers: &HeaderMap,
    present: Present,
    is_request: bool,
) -> Result<Framing, HeadError> {
    if present.has(Present::TRANSFER_ENCODING) {
        let te = headers.get_all(TRANSFER_ENCODING);
        if present.has(Present::CONTENT_LENGTH) {
            return Err(HeadError::BadLength);
        }
        // The last coding must be chunked, once (RFC 9112 section 6.1); anything else
        // cannot be delimited (requests: 400 and a close, section 6.3). Other codings,
        // before chunked or (in a response) alone and read until close, are well framed,
        // but rampart does not decode them (a request gets 501, a response 502): being
        // hop by hop they cannot be passed on as they are, least of all to HTTP/2.
        let mut last: &[u8] = b"";
        let mut chunked = 0;
        let mut others = false;
        for v in te {
            for coding in v.as_bytes().split(|b| *b == b',') {
                let c = coding.trim_ascii();
                if c.is_empty() {
                    continue;
                }
                if c.eq_ignore_ascii_case(b"chunked") {
                    chunked += 1;
                } else {
                    others = true;
                }
                last = c;
            }
        }
        let final_chunked = last.eq_ignore_ascii_case(b"chunked");
        if chunked > 1 {
            return Err(HeadError::BadLength);
        }
        if final_chunked && !others {
            return Ok(Framing::Chunked);
        }
        return match (is_request, final_chunked) {
            (true, false) => Err(HeadError::BadLength),
            _ => Err(HeadError::UnsupportedTransferEncoding),
        };
    }
    let mut len: Option<u64> = None;
    for v in values_if(headers, present, Present::CONTENT_LENGTH, CONTENT_LENGTH) {
        for part in v.as_bytes().split(|b| *b == b',') {
            let p = part.trim_ascii();
            if p.is_empty() || p.len() > 19 || !p.iter().all(u8::is_ascii_digit) {
                return Err(HeadError::BadLength);
            }
            let n: u64 = std::str::from_utf8(p)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or(HeadError::BadLength)?;
            match len {
                Some(l) if l != n => return Err(HeadError::BadLength),
                _ => len = Some(n),
            }
        }
    }
    Ok(match len {
        Some(0) => Framing::Empty,
        Some(n) => Framing::Length(n),
        None if is_request => Framing::Empty,
        None => Framing::Close,
    })
}

/// The values of `name`, looked up only when `present` says the map has it.
fn values_if(
    headers: &HeaderMap,
    present: Present,
    bit: u16,
    name: HeaderName,
) -> impl Iterator<Item = &HeaderValue> {
    present
        .has(bit)
        .then(|| headers.get_all(name))
        .into_iter()
        .flatten()
}

fn connection_flags(headers: &HeaderMap, present: Present, version: Version) -> (bool, bool) {
    let mut close = false;
    let mut keep = false;
    let mut upgrade = false;
    for v in values_if(headers, present, Present::CONNECTION, CONNECTION) {
        for t in v.as_bytes().split(|b| *b == b',') {
            let t = t.trim_ascii();
            close |= t.eq_ignore_ascii_case(b"close");
            keep |= t.eq_ignore_ascii_case(b"keep-alive");
            upgrade |= t.eq_ignore_ascii_case(b"upgrade");
        }
    }
    let keep_alive = if version == Version::HTTP_10 {
        keep && !close
    } else {
        !close
    };
    (keep_alive, upgrade)
}

/// RFC 9112 section 3.2: "A server MUST respond with a 400 (Bad Request) status code to
/// any HTTP/1.1 request message that lacks a Host header field and to any request message
/// that contains more than one Host header field line or a Host header field with an
/// invalid field value." A valid value is `uri-host [ ":" port ]`, or empty.
fn check_host(headers: &HeaderMap, present: Present, version: Version) -> Result<(), HeadError> {
    let mut all = values_if(headers, present, Present::HOST, http::header::HOST);
    match (all.next(), all.next()) {
        (Some(_), Some(_)) => Err(HeadError::Host),
        (None, _) if version == Version::HTTP_11 => Err(HeadError::Host),
        (None, _) => Ok(()),
        (Some(v), None) => {
            let v = v.as_bytes();
            if v.is_empty() || plain_host(v) || authority_host(v) {
                Ok(())
            } else {
                Err(HeadError::Host)
            }
        }
    }
}

/// A `Host` value by the authority grammar: a host, then nothing or `:` and digits, and
/// no user information.
fn authority_host(v: &[u8]) -> bool {
    let valid = |a: http::uri::Authority| {
        // After the host: nothing, or ":" and digits.
        let port = &a.as_str()[a.host().len()..];
        !a.host().is_empty()
            && (port.is_empty()
                || port
                    .strip_prefix(':')
                    .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit())))
    };
    !v.contains(&b'@') && http::uri::Authority::try_from(v).is_ok_and(valid)
}

/// The usual `Host` value, a name or IPv4 address of letters, digits, `-` and `.`, with or
/// without `:` and a port, checked byte by byte; anything else (IPv6 literals, other
/// characters, an empty port) goes through the full authority grammar. Every value this
/// accepts, that grammar accepts too.
fn plain_host(v: &[u8]) -> bool {
    let (host, port) = match memchr::memchr(b':', v) {
        Some(i) => (&v[..i], Some(&v[i + 1..])),
        None => (v, None),
    };
    !host.is_empty()
        && host
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'))
        && port.is_none_or(|p| !p.is_empty() && p.iter().all(u8::is_ascii_digit))
}

/// Parses a request head at the start of `buf`. Returns `None` when more bytes are needed
/// (after checking that what is there is within the limits); on success the head bytes are
/// removed from `buf`.
pub fn parse_request(
    buf: &mut BytesMut,
    limits: &HeadLimits,
) -> Result<Option<RequestHead>, HeadError> {
    let mut stack = [MaybeUninit::<httparse::Header<'_>>::uninit(); STACK_HEADERS];
    let mut heap;
    let slots: &mut [MaybeUninit<httparse::Header<'_>>] = if limits.max_headers <= STACK_HEADERS {
        &mut stack[..limits.max_headers]
    } else {
        heap = vec![MaybeUninit::uninit(); limits.max_headers];
        &mut heap
    };
    let mut req = httparse::Request::new(&mut []);
    let status = httparse::ParserConfig::default()
        .allow_multiple_spaces_in_request_line_delimiters(false)
        .parse_request_with_uninit_headers(&mut req, buf, slots);
    let len = match status {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            // Enforce limits on what has arrived so far.
            let line_end = memchr::memchr(b'\n', buf);
            if line_end.is_none() && buf.len() > limits.max_uri + 64 {
                return Err(HeadError::UriTooLong);
            }
            if buf.len() > limits.max_head {
                return Err(HeadError::HeadersTooLarge);
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::HeadersTooLarge),
        Err(httparse::Error::Version) => return Err(HeadError::Version),
        Err(_) => return Err(HeadError::Malformed),
    };
    if len > limits.max_head {
        return Err(HeadError::HeadersTooLarge);
    }
    let path = req.path.unwrap_or("/");
    if path.len() > limits.max_uri {
        return Err(HeadError::UriTooLong);
    }
    let method = Method::from_bytes(req.method.unwrap_or("").as_bytes())
        .map_err(|_| HeadError::Malformed)?;
    let version = if req.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let path_range = offset_in(buf, path.as_bytes());
    let (mut stack, mut heap) = ([[0u32; 4]; STACK_RANGES], Vec::new());
    let ranges = collect(buf, req.headers, &mut stack, &mut heap);
    let head = buf.split_to(len).freeze();
    let uri = if method == Method::CONNECT {
        Uri::from_maybe_shared(head.slice(path_range.0..path_range.1))
    } else {
        let p = &head[path_range.0..path_range.1];
        if !(p.starts_with(b"/")
            || p == b"*"
            || p.starts_with(b"http://")
            || p.starts_with(b"https://"))
        {
            return Err(HeadError::Malformed);
        }
        Uri::from_maybe_shared(head.slice(path_range.0..path_range.1))
    }
    .map_err(|_| HeadError::Malformed)?;
    let (headers, present) = build_headers(&head, ranges)?;
    let framing = body_framing(&headers, present, true)?;
    check_host(&headers, present, version)?;
    let (keep_alive, conn_upgrade) = connection_flags(&headers, present, version);
    let expect_continue = version == Version::HTTP_11
        && present.has(Present::EXPECT)
        && headers
            .get(EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let upgrade = conn_upgrade && present.has(Present::UPGRADE);
    Ok(Some(RequestHead {
        method,
        uri,
        version,
        headers,
        framing,
        keep_alive,
        expect_continue,
        upgrade,
    }))
}

/// Where a parsed response head's header values live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadStore {
    /// Slices of the read buffer: no copy, and the whole buffer is kept for as long as
    /// any value is.
    InBuffer,
    /// A copy of the head, of its own size. For a response to an HTTP/2 client: its HPACK
    /// encoder keeps the values it indexes for the life of the connection, and each would
    /// keep a whole read buffer (16 KiB) out of the worker's pool.
    Own,
}

/// Parses a response head at the start of `buf`; `None` when more bytes are needed.
pub fn parse_response(
    buf: &mut BytesMut,
    max_head: usize,
    store: HeadStore,
) -> Result<Option<ResponseHead>, HeadError> {
    let mut slots = [MaybeUninit::<httparse::Header<'_>>::uninit(); STACK_HEADERS];
    let mut res = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .allow_obsolete_multiline_headers_in_responses(true)
        .allow_spaces_after_header_name_in_responses(true)
        .parse_response_with_uninit_headers(&mut res, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            if buf.len() > max_head {
                return Err(HeadError::HeadersTooLarge);
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::HeadersTooLarge),
        Err(_) => return Err(HeadError::Malformed),
    };
    let status = StatusCode::from_u16(res.code.unwrap_or(0)).map_err(|_| HeadError::Malformed)?;
    let version = if res.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let reason_range = res
        .reason
        .filter(|r| Some(*r) != status.canonical_reason() && !r.is_empty())
        .map(|r| offset_in(buf, r.as_bytes()));
    let (mut stack, mut heap) = ([[0u32; 4]; STACK_RANGES], Vec::new());
    let ranges = collect(buf, res.headers, &mut stack, &mut heap);
    let head = match store {
        HeadStore::InBuffer => buf.split_to(len).freeze(),
        HeadStore::Own => {
            let head = Bytes::copy_from_slice(&buf[..len]);
            bytes::Buf::advance(buf, len);
            head
        }
    };
    let (headers, present) = build_headers(&head, ranges)?;
    let framing = body_framing(&headers, present, false)?;
    // Whether a body read until close ends the connection is for the caller to say: it
    // knows whether the response has a body at all (HEAD, 204, 304).
    let (keep_alive, _) = connection_flags(&headers, present, version);
    Ok(Some(ResponseHead {
        status,
        reason: reason_range.map(|r| head.slice(r.0..r.1)),
        version,
        headers,
        framing,
        keep_alive,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_head: 8192,
        max_headers: 32,
        max_uri: 1024,
    };

    fn req(s: &str) -> Result<Option<RequestHead>, HeadError> {
        parse_request(&mut BytesMut::from(s), &LIMITS)
    }

    #[test]
    fn parse_request_basic_and_pipelined() {
        let mut b =
            BytesMut::from("GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-A: 1\r\nX-A: 2\r\n\r\nGET /next");
        let h = parse_request(&mut b, &LIMITS).unwrap().unwrap();
        assert_eq!(h.method, Method::GET);
        assert_eq!(h.uri.path(), "/a");
        assert_eq!(h.headers.get_all("x-a").iter().count(), 2);
        assert_eq!(h.framing, Framing::Empty);
        assert!(h.keep_alive);
        assert_eq!(&b[..], b"GET /next");
    }

    #[test]
    fn parse_request_partial_needs_more() {
        assert!(req("GET / HTTP/1.1\r\nHost: x\r\n").unwrap().is_none());
    }

    #[test]
    fn parse_request_framing_rules() {
        let h = req("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::Length(5));
        let h = req("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::Chunked);
        assert_eq!(
            req("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n")
                .unwrap_err(),
            HeadError::BadLength
        );
        assert_eq!(
            req("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n")
                .unwrap_err(),
            HeadError::BadLength
        );
        let h = req("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::Length(5));
        assert_eq!(
            req("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n").unwrap_err(),
            HeadError::BadLength
        );
        assert_eq!(
            req("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n").unwrap_err(),
            HeadError::BadLength
        );
        assert_eq!(
            req("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")
                .unwrap_err(),
            HeadError::UnsupportedTransferEncoding
        );
        assert_eq!(
            req("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n")
                .unwrap_err(),
            HeadError::BadLength
        );
    }

    #[test]
    fn parse_request_limits_map_to_statuses() {
        let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(2000));
        assert_eq!(req(&long).unwrap_err().status(), StatusCode::URI_TOO_LONG);
        let partial_long = format!("GET /{}", "a".repeat(2000));
        assert_eq!(req(&partial_long).unwrap_err(), HeadError::UriTooLong);
        let many: String = (0..40).map(|i| format!("h{i}: v\r\n")).collect();
        let e = req(&format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n")).unwrap_err();
        assert_eq!(e.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        assert_eq!(
            req("GET / HTTP/1.1\r\nHost: x\r\nBad Header: x\r\n\r\n")
                .unwrap_err()
                .status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            req("GET nope HTTP/1.1\r\nHost: x\r\n\r\n").unwrap_err(),
            HeadError::Malformed
        );
    }

    #[test]
    fn parse_request_needs_exactly_one_valid_host_in_http11() {
        for ok in [
            "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: example.com:8080\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n",
            // Empty: a target without an authority (RFC 9112 section 3.2).
            "GET / HTTP/1.1\r\nHost: \r\n\r\n",
            "GET / HTTP/1.0\r\n\r\n",
            "GET http://a.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: 10.0.0.1:80\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a.test:\r\n\r\n",
        ] {
            assert!(req(ok).unwrap().is_some(), "{ok:?}");
        }
        for bad in [
            "GET / HTTP/1.1\r\n\r\n",
            "GET http://a.test/ HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n",
            "GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: user@a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a:b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: :80\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a:8:0\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a_b:80x\r\n\r\n",
        ] {
            let e = req(bad).unwrap_err();
            assert_eq!(
                (e, e.status()),
                (HeadError::Host, StatusCode::BAD_REQUEST),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_plain_host_check_accepts_nothing_the_authority_grammar_refuses() {
        // Every value of up to five bytes over an alphabet with each kind of byte the two
        // checks treat differently.
        let alphabet = b"a7-.:[]@ _%";
        let mut values: Vec<Vec<u8>> = vec![Vec::new()];
        let mut last = values.clone();
        for _ in 0..5 {
            last = last
                .iter()
                .flat_map(|v| {
                    alphabet.iter().map(move |&b| {
                        let mut w = v.clone();
                        w.push(b);
                        w
                    })
                })
                .collect();
            values.extend(last.iter().cloned());
        }
        let mut plain = 0;
        for v in &values {
            if plain_host(v) {
                plain += 1;
                assert!(authority_host(v), "{:?}", String::from_utf8_lossy(v));
            }
        }
        assert!(plain > 1000, "{plain}");
        for v in ["example.com", "example.com:8080", "10.0.0.1:80", "a-b.c"] {
            assert!(plain_host(v.as_bytes()), "{v}");
        }
    }

    #[test]
    fn parse_request_http10_keep_alive_rules() {
        assert!(!req("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap().keep_alive);
        assert!(
            req("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                .unwrap()
                .unwrap()
                .keep_alive
        );
        assert!(
            !req("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap()
                .unwrap()
                .keep_alive
        );
        let h =
            req("GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
                .unwrap()
                .unwrap();
        assert!(h.upgrade);
    }

    #[test]
    fn an_own_head_leaves_the_read_buffer_to_its_pool() {
        let text = "HTTP/1.1 200 OK\r\nDate: Mon, 07 Dec 2026 06:00:00 GMT\r\nX-Id: 42\r\n\r\nbody";
        for (store, reclaimable) in [(HeadStore::InBuffer, false), (HeadStore::Own, true)] {
            let mut b = BytesMut::with_capacity(4096);
            b.extend_from_slice(text.as_bytes());
            let h = parse_response(&mut b, 8192, store).unwrap().unwrap();
            assert_eq!(&b[..], b"body");
            assert_eq!(h.headers["x-id"], "42");
            assert_eq!(h.headers["date"], "Mon, 07 Dec 2026 06:00:00 GMT");
            b.clear();
            // Whether the buffer can be written from its start again while the head lives.
            assert_eq!(b.try_reclaim(4096), reclaimable, "{store:?}");
        }
    }

    #[test]
    fn parse_response_framing_and_reason() {
        let mut b = BytesMut::from("HTTP/1.1 200 Fine\r\nContent-Length: 3\r\n\r\nabc");
        let h = parse_response(&mut b, 8192, HeadStore::InBuffer)
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::Length(3));
        assert_eq!(h.reason.as_deref(), Some(&b"Fine"[..]));
        assert_eq!(&b[..], b"abc");
        let mut b = BytesMut::from("HTTP/1.0 200 OK\r\n\r\n");
        let h = parse_response(&mut b, 8192, HeadStore::InBuffer)
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::Close);
        assert!(!h.keep_alive);
        assert!(h.reason.is_none());
    }

    #[test]
    fn the_headers_noted_while_the_map_is_built_are_those_it_holds() {
        let head = Bytes::from_static(
            b"Host: a\r\nCONNECTION: close\r\nX-Forwarded-For: 1.2.3.4\r\nExpect: 100-continue\r\n\
              Content-Length: 0\r\nX-Other: 1\r\nTE: trailers\r\n",
        );
        let mut base = head.to_vec();
        base.extend_from_slice(b"\r\n");
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let (len, parsed) = httparse::parse_headers(&base, &mut headers)
            .unwrap()
            .unwrap();
        assert_eq!(len, base.len());
        let mut stack = [[0u32; 4]; STACK_RANGES];
        let mut heap = Vec::new();
        let ranges = collect(&base, parsed, &mut stack, &mut heap).to_vec();
        let (map, present) = build_headers(&head, &ranges).unwrap();
        assert_eq!(present, Present::of(&map));
        for bit in [
            Present::HOST,
            Present::CONNECTION,
            Present::FORWARDING,
            Present::EXPECT,
            Present::CONTENT_LENGTH,
            Present::TE,
        ] {
            assert!(present.has(bit), "{bit:#x}");
        }
        assert!(!present.has(Present::UPGRADE | Present::TRANSFER_ENCODING));
    }

    #[test]
    fn heads_with_more_headers_than_the_stack_notes_parse_whole() {
        let mut limits = LIMITS;
        limits.max_headers = STACK_HEADERS + 8;
        let mut text = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
        for i in 0..STACK_HEADERS + 4 {
            text.push_str(&format!("X-H{i}: v{i}\r\n"));
        }
        text.push_str("\r\n");
        let h = parse_request(&mut BytesMut::from(text.as_str()), &limits)
            .unwrap()
            .unwrap();
        assert_eq!(h.headers.len(), STACK_HEADERS + 5);
        let last = format!("x-h{}", STACK_HEADERS + 3);
        assert_eq!(h.headers[last.as_str()], format!("v{}", STACK_HEADERS + 3));
        // One more than the limit is refused.
        limits.max_headers = STACK_HEADERS + 4;
        assert!(matches!(
            parse_request(&mut BytesMut::from(text.as_str()), &limits),
            Err(HeadError::HeadersTooLarge)
        ));

        let mut text = String::from("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n");
        for i in 0..STACK_RANGES + 8 {
            text.push_str(&format!("X-H{i}: v{i}\r\n"));
        }
        text.push_str("\r\n");
        let h = parse_response(
            &mut BytesMut::from(text.as_str()),
            64 * 1024,
            HeadStore::InBuffer,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.headers.len(), STACK_RANGES + 9);
        assert_eq!(h.headers["x-h0"], "v0");
        let last = format!("x-h{}", STACK_RANGES + 7);
        assert_eq!(h.headers[last.as_str()], format!("v{}", STACK_RANGES + 7));
    }

    #[test]
    fn a_folded_response_value_is_unfolded_and_a_control_byte_is_refused() {
        let mut b =
            BytesMut::from("HTTP/1.1 200 OK\r\nX-A: one\r\n two\r\nContent-Length: 0\r\n\r\n");
        let h = parse_response(&mut b, 8192, HeadStore::InBuffer)
            .unwrap()
            .unwrap();
        assert_eq!(h.headers["x-a"], "one   two");
        let mut b = BytesMut::from("HTTP/1.1 200 OK\r\nX-A: o\x01ne\r\nContent-Length: 0\r\n\r\n");
        assert!(parse_response(&mut b, 8192, HeadStore::InBuffer).is_err());
    }
}
