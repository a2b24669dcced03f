//! Any text given as a configuration file loads or is refused with errors, never a panic,
//! within the bounds of `rampart_config::limits`: `.ci/fuzz` runs it with a time limit per
//! input and a memory limit, so an input that expands (aliases, `${VAR}`, pattern files)
//! past what the limits allow fails the run.
#![no_main]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

/// A directory with a small pattern file and a large one, for `-f` in inputs.
fn base() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("rampart-config-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("p.lst"), "/a\n/b/\n10.0.0.0/8\n^/x[0-9]+$\n").unwrap();
        let many: String = (0..100_000).map(|i| format!("/p/{i}\n")).collect();
        std::fs::write(d.join("many.lst"), many).unwrap();
        d
    })
}

/// `${A}` is short, `${B}` is 64 KiB: expansions that multiply are what the text budget
/// is for.
fn env() -> &'static HashMap<String, String> {
    static ENV: OnceLock<HashMap<String, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        HashMap::from([
            ("A".to_owned(), "127.0.0.1:8080".to_owned()),
            ("B".to_owned(), "b".repeat(64 << 10)),
        ])
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match rampart_config::load_str(text, Some(base()), env()) {
        Ok(cfg) => {
            // A loaded configuration is within every count bound.
            assert!(rampart_config::validate::bounds_of(&cfg).is_empty());
        }
        Err(e) => {
            assert!(!e.0.is_empty(), "refused without an error");
            // Showing the errors is bounded too: the first hundred, then a count.
            let shown = e.to_string();
            if e.0.len() > rampart_config::limits::MAX_ERRORS {
                assert!(shown.ends_with("are shown)"), "{shown}");
            }
        }
    }
});
