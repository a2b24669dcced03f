//! Bounds on what a configuration may hold, so that no file, however written, can make
//! loading take long or use much memory: a careless template or a hostile generator gets a
//! positioned error instead of a proxy that stalls or dies.
//!
//! Each bound is far above real use (the largest configurations seen in practice hold a
//! few thousand backends and some hundred thousand servers) and is stated in
//! docs/configuration.md. The same bounds apply to a configuration from a file, to one
//! assembled from a control plane's resources, and to what the runtime API loads.

use std::io::Read;
use std::path::Path;

/// Size of a configuration file (or an Envoy bootstrap file).
pub const MAX_FILE_BYTES: u64 = 16 << 20;
/// YAML nodes (scalars, lists and mappings) a file stands for, each alias counted as every
/// node it repeats.
pub const MAX_NODES: u64 = 1_000_000;
/// Scalar text a file stands for, with aliases and `${VAR}` expanded.
pub const MAX_TEXT_BYTES: u64 = 32 << 20;
/// Size of one ACL pattern file (`-f`).
pub const MAX_PATTERN_FILE_BYTES: u64 = 32 << 20;
/// Pattern files together (each distinct file counted once).
pub const MAX_PATTERN_TOTAL_BYTES: u64 = 64 << 20;
/// Size of a certificate, key or CA file (PEM).
pub const MAX_PEM_FILE_BYTES: u64 = 4 << 20;
/// PEM files together (each distinct file counted once).
pub const MAX_PEM_TOTAL_BYTES: u64 = 64 << 20;
/// Certificates served (distinct certificate and key pairs over all binds). Loading a
/// key proves it with a signature, the costliest step of a load; so an RSA key larger
/// than 2048 bits counts as `(bits / 2048)²` certificates (RSA-4096: 4).
pub const MAX_CERTIFICATES: usize = 1_000;
/// Frontends (with an xDS control plane: listeners and static frontends together).
pub const MAX_FRONTENDS: usize = 10_000;
/// Listening addresses over all frontends.
pub const MAX_BINDS: usize = 10_000;
/// Backends (clusters).
pub const MAX_BACKENDS: usize = 50_000;
/// Servers (endpoints) over all backends.
pub const MAX_SERVERS: usize = 100_000;
/// Rules over all frontends and backends: `http_request`, `http_response`, `tcp_request`
/// and `use_backend` entries and virtual host routes.
pub const MAX_RULES: usize = 100_000;
/// ACL patterns over the whole configuration, inline and from files (a file named by
/// several ACLs counts for each).
pub const MAX_ACL_PATTERNS: usize = 1_000_000;
/// Regular expressions over the whole configuration (ACL `-m reg` patterns, `_reg`
/// fetches, rewrites and route regexes).
pub const MAX_REGEXES: usize = 5_000;
/// States one regular expression compiles to, about (see `docs/configuration.md`): the
/// proxy's compiled size limit is not reached below it.
pub const MAX_REGEX_SIZE: u64 = 100_000;
/// States of all the regular expressions of a configuration.
pub const MAX_REGEX_TOTAL: u64 = 500_000;
/// Backends, servers, rules, ACL patterns, regular expressions and certificates together: each count
/// is a share of its limit (50,000 servers is half of [`MAX_SERVERS`]), and the shares may
/// add up to this much. One kind may be at its limit and another half way; not all of
/// them at once.
pub const MAX_SHARES: f64 = 1.5;
/// Errors reported for one file; the rest are counted.
pub const MAX_ERRORS: usize = 100;

/// `n` bytes for people: `16 MiB`, `512 KiB`, `100 bytes`.
pub fn show_bytes(n: u64) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} bytes")
    }
}

/// The message for a file of `size` bytes past [`MAX_FILE_BYTES`].
pub fn file_too_large(what: &str, size: u64) -> String {
    format!(
        "the {what} is {size} bytes, more than the {} it may be; refused",
        show_bytes(MAX_FILE_BYTES)
    )
}

/// Reads a text file of at most `max` bytes. A larger file (or a device or pipe that
/// never ends) is refused after `max + 1` bytes, without reading the rest.
pub fn read_bounded(path: &Path, max: u64, what: &str) -> Result<String, String> {
    let buf = read_bounded_bytes(path, max, what)?;
    String::from_utf8(buf).map_err(|_| "stream did not contain valid UTF-8".to_owned())
}

/// [`read_bounded`] for bytes.
pub fn read_bounded_bytes(path: &Path, max: u64, what: &str) -> Result<Vec<u8>, String> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    // Not blocked by a named pipe that nobody writes to.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| e.to_string())?;
    let kind = f.metadata().map_err(|e| e.to_string())?.file_type();
    if kind.is_fifo() || kind.is_socket() || kind.is_dir() {
        return Err(format!("the {what} is not a file; refused"));
    }
    let mut buf = Vec::new();
    f.take(max + 1)
        .read_to_end(&mut buf)
        .map_err(|e| e.to_string())?;
    if buf.len() as u64 > max {
        let size = std::fs::metadata(path)
            .ok()
            .filter(|m| m.is_file())
            .map_or_else(|| "endless".to_owned(), |m| format!("{} bytes", m.len()));
        return Err(format!(
            "the {what} is larger than the {} it may be ({size}); refused",
            show_bytes(max)
        ));
    }
    Ok(buf)
}

/// [`read_bounded_bytes`] for one of several files bounded together: the file may hold
/// `max` bytes, and all of them `total`, of which `used` are read already (and this one is
/// added to it).
pub fn read_bounded_among(
    path: &Path,
    max: u64,
    total: u64,
    used: &mut u64,
    what: &str,
) -> Result<Vec<u8>, String> {
    let buf = read_bounded_bytes(path, max, what)?;
    let after = *used + buf.len() as u64;
    if after > total {
        return Err(format!(
            "the {what}s together would be larger than the {} they may be ({} with this \
             one); refused",
            show_bytes(total),
            show_bytes(after)
        ));
    }
    *used = after;
    Ok(buf)
}

/// A count past its bound: `what` is plural ("backends").
pub fn too_many(what: &str, max: usize) -> String {
    format!("more than {max} {what} in the configuration; refused (at most {max})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_shown_in_the_largest_exact_unit() {
        assert_eq!(show_bytes(16 << 20), "16 MiB");
        assert_eq!(show_bytes(128 << 10), "128 KiB");
        assert_eq!(show_bytes(1000), "1000 bytes");
    }

    #[test]
    fn a_bounded_read_stops_after_the_bound() {
        let dir = std::env::temp_dir().join(format!("rampart-limits-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("f");
        std::fs::write(&p, "x".repeat(11)).unwrap();
        assert_eq!(read_bounded(&p, 11, "file").unwrap().len(), 11);
        let e = read_bounded(&p, 10, "pattern file").unwrap_err();
        assert!(
            e.contains("larger than the 10 bytes") && e.contains("(11 bytes)"),
            "{e}"
        );
        // A device that never ends is cut off too.
        let e = read_bounded(Path::new("/dev/zero"), 1 << 10, "file").unwrap_err();
        assert!(e.contains("endless"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
