//! Any bytes from a client or a server: the HTTP/1 request and response head parsers and
//! the body decoder (chunked, with extensions and trailers) answer a head, "more", or an
//! error, never a panic; what they take is within what they were given, and a body never
//! yields more than its length.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use rampart_proxy::http1::decode::{Decoded, Decoder};
use rampart_proxy::http1::parse::{HeadLimits, parse_request, parse_response};
use rampart_proxy::http1::Framing;

const LIMITS: HeadLimits = HeadLimits {
    max_head: 8 << 10,
    max_headers: 64,
    max_uri: 2 << 10,
};

/// Decodes all of `buf` as a body, fed in pieces of `step` bytes.
fn body(framing: Framing, data: &[u8], step: usize) {
    let mut d = Decoder::new(framing, Some(1 << 20));
    let mut buf = BytesMut::new();
    let mut total = 0u64;
    for piece in data.chunks(step.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match d.decode(&mut buf) {
                Ok(Decoded::Data(b)) => {
                    total += b.len() as u64;
                    if let Framing::Length(n) = framing {
                        assert!(total <= n);
                    }
                }
                Ok(Decoded::Trailers(_)) => {}
                Ok(Decoded::Done) | Ok(Decoded::NeedMore) | Err(_) => break,
            }
        }
    }
    assert!(total <= data.len() as u64);
}

fuzz_target!(|data: &[u8]| {
    let step = data.first().map_or(1, |b| usize::from(*b % 16) + 1);
    let data = data.get(1..).unwrap_or_default();

    let mut buf = BytesMut::from(data);
    if let Ok(Some(head)) = parse_request(&mut buf, &LIMITS) {
        assert!(buf.len() < data.len());
        let rest = buf.clone();
        body(head.framing, &rest, step);
    }
    let mut buf = BytesMut::from(data);
    if let Ok(Some(head)) = parse_response(&mut buf, 8 << 10) {
        assert!(buf.len() < data.len());
        let rest = buf.clone();
        body(head.framing, &rest, step);
    }
    body(Framing::Chunked, data, step);
});
