//! Any text as a rule, an ACL, a sample expression or a log format: parsed or refused
//! with an error at an offset within the text, never a panic. Pattern and map files
//! (`-f`, `map_*(...)`) all read as one small file of mixed lines, so that their checks
//! run too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rampart_config::rules::acl::{NoFiles, PatternFiles};
use rampart_config::rules::action::{
    parse_connection_rule, parse_request_rule, parse_response_rule,
};
use rampart_config::rules::fetch::parse_sample;
use rampart_config::rules::logfmt::parse_logformat;

/// Every file name reads as the same few lines: hosts, networks, numbers, a regex.
struct AnyFile;

impl PatternFiles for AnyFile {
    fn read(&self, _: &str) -> Result<std::sync::Arc<str>, String> {
        Ok("# a map\na.test be_a\n10.0.0.0/8 7\n^/u/[0-9]+$ user\n80:90\nkeyonly\n".into())
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let within = |offset: usize| assert!(offset <= text.len(), "offset {offset} past the text");
    for files in [&NoFiles as &dyn PatternFiles, &AnyFile] {
        if let Err(e) = parse_request_rule(text, files) {
            within(e.offset);
        }
        if let Err(e) = parse_response_rule(text, files) {
            within(e.offset);
        }
        if let Err(e) = parse_connection_rule(text, files) {
            within(e.offset);
        }
        let _ = parse_sample(text, files);
        if let Err((offset, _)) = parse_logformat(text, files) {
            within(offset);
        }
    }
});
