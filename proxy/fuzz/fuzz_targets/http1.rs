//! Any bytes from a client or a server: the HTTP/1 request and response head parsers and
//! the body decoder (chunked, with extensions and trailers) answer a head, "more", or an
//! error, never a panic; a response head reads the same kept in its buffer or copied
//! apart; what they take is within what they were given, and a body never
//! yields more than its length.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use rampart_proxy::http1::decode::{Decoded, Decoder};
use rampart_proxy::http1::parse::{HeadLimits, HeadStore, parse_request, parse_response};
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
    let in_buffer = parse_response(&mut buf, 8 << 10, HeadStore::InBuffer);
    let mut own_buf = BytesMut::from(data);
    let own = parse_response(&mut own_buf, 8 << 10, HeadStore::Own);
    // Where the head is kept changes nothing of what it says or of what is left.
    assert_eq!(buf, own_buf);
    match (&in_buffer, &own) {
        (Ok(Some(a)), Ok(Some(b))) => {
            assert_eq!(a.status, b.status);
            assert_eq!(a.reason, b.reason);
            assert_eq!(a.headers, b.headers);
            assert_eq!(a.keep_alive, b.keep_alive);
        }
        (Ok(None), Ok(None)) => {}
        (Err(a), Err(b)) => assert_eq!(a, b),
        _ => panic!("the two stores disagree: {in_buffer:?} / {own:?}"),
    }
    if let Ok(Some(head)) = in_buffer {
        assert!(buf.len() < data.len());
        let rest = buf.clone();
        body(head.framing, &rest, step);
    }
    body(Framing::Chunked, data, step);
});
