//! Any bytes at the start of a connection on an `accept_proxy` bind: the PROXY header
//! parser answers a header, "more", or a refusal, never a panic. A header it takes is
//! within the bytes given and is taken the same from exactly its own bytes; "more" asks
//! for more than was given; what a header says about addresses survives being written
//! again as version 1 and version 2 and read back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rampart_proxy::proxy_protocol::{Parsed, Source, Version, encode, parse};

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Parsed::Done(len, p) => {
            assert!(len <= data.len());
            assert_eq!(parse(&data[..len]), Parsed::Done(len, p.clone()));
            for version in [
                Version::V1,
                Version::V2 {
                    authority: true,
                    crc32c: true,
                },
            ] {
                let mut out = Vec::new();
                let src = Source {
                    addrs: p.addrs,
                    alpn: p.alpn.as_deref(),
                    authority: p.authority.as_deref(),
                };
                encode(version, &src, &mut out);
                match parse(&out) {
                    Parsed::Done(n, q) => {
                        assert_eq!(n, out.len());
                        // v1 writes mixed or IPv6 addresses as TCP6: compare what they
                        // name, not their family.
                        let canon = |a: Option<(std::net::SocketAddr, std::net::SocketAddr)>| {
                            a.map(|(s, d)| {
                                let c = |x: std::net::SocketAddr| {
                                    (x.ip().to_canonical(), x.port())
                                };
                                (c(s), c(d))
                            })
                        };
                        assert_eq!(canon(q.addrs), canon(p.addrs));
                    }
                    other => panic!("{version:?} of {p:?} reads back as {other:?}"),
                }
            }
        }
        Parsed::Partial(need) => assert!(need > data.len()),
        Parsed::Invalid(_) => {}
    }
});
