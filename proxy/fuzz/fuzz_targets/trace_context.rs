//! Any bytes as a client's `traceparent` header, and any text as an access log's
//! `log_format`: read or refused, never a panic. A `traceparent` that is read keeps its
//! ids through the value sent on to servers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rampart_proxy::trace;

fuzz_target!(|data: &[u8]| {
    if let Some(p) = trace::parse_traceparent(data) {
        assert_ne!(p.trace_id, [0; 16]);
        assert_ne!(p.span_id, [0; 8]);
        let sent = trace::traceparent(&p.trace_id, &p.span_id);
        let back = trace::parse_traceparent(sent.as_bytes()).expect("our own traceparent");
        assert_eq!((back.trace_id, back.span_id, back.sampled), (p.trace_id, p.span_id, true));
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = rampart_config::logformat::parse(text);
    }
});
