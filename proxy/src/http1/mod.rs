//! HTTP/1.1 message syntax (RFC 9112), shared by the client-facing server and the
//! upstream client: head parsing with `httparse`, head encoding, and body framing.
//!
//! Heads are parsed out of the connection's read buffer without copying header values:
//! the head bytes are frozen into one `Bytes` that header values point into.

pub mod decode;
pub mod encode;
pub mod parse;

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the connection closes (responses only).
    Close,
}

/// Whether a comma-separated header value list contains `token` (case-insensitive).
pub fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}
