//! Any first bytes of a mode tcp connection: the payload fetches (`req.ssl_sni`,
//! `req.ssl_hello_type`, `req.len`) answer or say "not yet", never panic. A name found is
//! within the bytes given; a whole record's answer does not change when more bytes
//! follow it; and once no more bytes will come, nothing asks for more.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rampart_proxy::rules::payload::Payload;

fuzz_target!(|data: &[u8]| {
    let p = Payload::new(data, false);
    let sni = p.sni();
    let kind = p.hello_type();
    if let Some(n) = sni {
        let (start, end) = (data.as_ptr() as usize, data.as_ptr() as usize + data.len());
        assert!(n.as_ptr() as usize >= start && n.as_ptr() as usize + n.len() <= end);
        assert_eq!(kind, Some(1));
    }
    if kind.is_some() {
        let mut more = data.to_vec();
        more.extend_from_slice(b"\x17\x03\x03\x00\x01x");
        let q = Payload::new(&more, false);
        assert_eq!(q.sni(), sni);
        assert_eq!(q.hello_type(), kind);
    }
    let last = Payload::new(data, true);
    let _ = (last.sni(), last.hello_type(), last.req_len());
    assert!(!last.short.get(), "no more bytes will come");
    assert_eq!(last.req_len(), data.len() as i64);
});
