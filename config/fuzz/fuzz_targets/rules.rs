//! Any text as a rule, an ACL, a sample expression or a log format: parsed or refused
//! with an error at an offset within the text, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rampart_config::rules::acl::NoFiles;
use rampart_config::rules::action::{
    parse_connection_rule, parse_request_rule, parse_response_rule,
};
use rampart_config::rules::fetch::parse_sample;
use rampart_config::rules::logfmt::parse_logformat;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let within = |offset: usize| assert!(offset <= text.len(), "offset {offset} past the text");
    if let Err(e) = parse_request_rule(text, &NoFiles) {
        within(e.offset);
    }
    if let Err(e) = parse_response_rule(text, &NoFiles) {
        within(e.offset);
    }
    if let Err(e) = parse_connection_rule(text, &NoFiles) {
        within(e.offset);
    }
    let _ = parse_sample(text);
    if let Err((offset, _)) = parse_logformat(text) {
        within(offset);
    }
});
