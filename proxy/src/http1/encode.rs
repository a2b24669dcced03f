//! Writing heads and chunk framing.

use http::{HeaderMap, Method, StatusCode, Version};

/// Appends `name: value\r\n` for every header.
pub fn write_headers(out: &mut Vec<u8>, headers: &HeaderMap) {
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// Appends a request line and headers (the caller adds framing headers first).
pub fn write_request_head(out: &mut Vec<u8>, method: &Method, target: &str, headers: &HeaderMap) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    write_headers(out, headers);
    out.extend_from_slice(b"\r\n");
}

/// Appends a status line and headers.
pub fn write_response_head(
    out: &mut Vec<u8>,
    status: StatusCode,
    reason: Option<&[u8]>,
    headers: &HeaderMap,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    match reason {
        Some(r) => out.extend_from_slice(r),
        None => out.extend_from_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes()),
    }
    out.extend_from_slice(b"\r\n");
    write_headers(out, headers);
    out.extend_from_slice(b"\r\n");
}

/// Appends a chunk-size line.
pub fn write_chunk_size(out: &mut Vec<u8>, len: usize) {
    use std::io::Write;
    let _ = write!(out, "{len:x}\r\n");
}

/// Appends the last chunk with trailers.
pub fn write_last_chunk(out: &mut Vec<u8>, trailers: Option<&HeaderMap>) {
    out.extend_from_slice(b"0\r\n");
    if let Some(t) = trailers {
        write_headers(out, t);
    }
    out.extend_from_slice(b"\r\n");
}

/// The protocol version string for logs and `req.ver`.
pub fn version_str(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_11 => "1.1",
        Version::HTTP_2 => "2.0",
        Version::HTTP_3 => "3.0",
        _ => "1.1",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_written_in_wire_format() {
        let mut h = HeaderMap::new();
        h.insert("host", "x".parse().unwrap());
        let mut out = Vec::new();
        write_request_head(&mut out, &Method::GET, "/a", &h);
        assert_eq!(out, b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n");
        out.clear();
        write_response_head(&mut out, StatusCode::NOT_FOUND, None, &HeaderMap::new());
        assert_eq!(out, b"HTTP/1.1 404 Not Found\r\n\r\n");
        out.clear();
        write_chunk_size(&mut out, 255);
        write_last_chunk(&mut out, Some(&h));
        assert_eq!(out, b"ff\r\n0\r\nhost: x\r\n\r\n");
    }
}
