//! Any bytes given as an OCSP response (a `.ocsp` file, `set ssl ocsp-response`): read or
//! refused, never a panic. What a response is found to say lies within the bytes given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rampart_proxy::tls::ocsp;

fuzz_target!(|data: &[u8]| {
    if let Ok(info) = ocsp::parse(data) {
        for part in [&info.cert_id, &info.serial, &info.issuer_name_hash, &info.issuer_key_hash] {
            assert!(part.len() <= data.len());
            assert!(data.windows(part.len().max(1)).any(|w| part.is_empty() || w == &part[..]));
        }
        if let Some(next) = info.next_update {
            let _ = next - info.this_update;
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ocsp::base64_decode(text);
    }
});
