//! Any received datagram decodes to an advert or an error, never a panic; a decoded
//! advert encodes back to a datagram that decodes to the same advert.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rampart_vrrp::packet::{Checksum, Version, decode, encode, ipv4_datagram};

fuzz_target!(|data: &[u8]| {
    for version in [Version::V2, Version::V3] {
        for mode in [Checksum::PseudoHeader, Checksum::MessageOnly] {
            if let Ok(r) = decode(data, version, mode, true) {
                let again = encode(&r.advert, r.src, r.dst, mode);
                let d = ipv4_datagram(r.src, r.dst, 255, &again);
                let back = decode(&d, version, mode, true).map(|x| x.advert);
                assert_eq!(back.as_ref(), Ok(&r.advert));
            }
        }
    }
});
