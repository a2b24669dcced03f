//! RFC 9112's requirements on request framing, one row each: the bytes a client sends,
//! the status it must get, and whether the connection must be closed after it. Where a
//! front end and a back end could read a message's framing differently, requests can be
//! smuggled; rampart refuses every such message and closes the connection.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// What a row expects: the status, and whether the connection closes after it.
struct Row {
    why: &'static str,
    input: &'static [u8],
    status: u16,
    closed: bool,
}

const fn row(why: &'static str, input: &'static [u8], status: u16, closed: bool) -> Row {
    Row {
        why,
        input,
        status,
        closed,
    }
}

const ROWS: &[Row] = &[
    row(
        "a well-formed request is served and the connection kept (baseline)",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        200,
        false,
    ),
    row(
        "3.2: an HTTP/1.1 request without Host gets 400",
        b"GET / HTTP/1.1\r\n\r\n",
        400,
        true,
    ),
    row(
        "3.2: two Host field lines get 400",
        b"GET / HTTP/1.1\r\nHost: x\r\nHost: x\r\n\r\n",
        400,
        true,
    ),
    row(
        "3.2: a Host that is not host[:port] gets 400",
        b"GET / HTTP/1.1\r\nHost: x/y\r\n\r\n",
        400,
        true,
    ),
    row(
        "3.2: an HTTP/1.0 request may leave Host out",
        b"GET / HTTP/1.0\r\n\r\n",
        200,
        true,
    ),
    row(
        "5.1: whitespace between a field name and the colon gets 400",
        b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
        400,
        true,
    ),
    row(
        "5.2: obsolete line folding in a request gets 400",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n 2\r\n\r\n",
        400,
        true,
    ),
    row(
        "2.2: a field line that starts with whitespace before the first field gets 400",
        b"GET / HTTP/1.1\r\n Host: x\r\n\r\n",
        400,
        true,
    ),
    row(
        "6.3: a transfer coding whose last is not chunked gets 400 (a MUST, over 6.1's 501)",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
        400,
        true,
    ),
    row(
        "6.3: chunked that is not the final coding gets 400",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        400,
        true,
    ),
    row(
        "6.1: chunked applied twice gets 400",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
        400,
        true,
    ),
    row(
        "6.1: a coding before the final chunked is framed but not decoded: 501",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        501,
        true,
    ),
    row(
        "6.3: Transfer-Encoding with Content-Length gets 400 and a close",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
        true,
    ),
    row(
        "6.3: two different Content-Length values get 400",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        400,
        true,
    ),
    row(
        "6.3: a Content-Length that is not 1*DIGIT gets 400",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x5\r\n\r\nhello",
        400,
        true,
    ),
    row(
        "6.3: a negative Content-Length gets 400",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        400,
        true,
    ),
    row(
        "7.1: a chunk size with leading whitespace gets 400 and a close",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n 5\r\nhello\r\n0\r\n\r\n",
        400,
        true,
    ),
    row(
        "7.1: a chunk size in 0x form gets 400",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
        400,
        true,
    ),
    row(
        "7.1: a chunk extension without a name gets 400",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;\r\nhello\r\n0\r\n\r\n",
        400,
        true,
    ),
    row(
        "7.1: chunk data longer than its size gets 400",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello!\r\n0\r\n\r\n",
        400,
        true,
    ),
    row(
        "7.1: a chunk line ended by a bare LF gets 400",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
        400,
        true,
    ),
    row(
        "7.1: extensions with tokens and quoted strings are accepted",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b;c=\"d e\"\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
        200,
        false,
    ),
    row(
        "3: a request line with two spaces gets 400",
        b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
        400,
        true,
    ),
    row(
        "3: a request target that is not origin, absolute, authority or asterisk form gets 400",
        b"GET x HTTP/1.1\r\nHost: x\r\n\r\n",
        400,
        true,
    ),
];

/// Sends `input`; returns the status and whether the proxy closed the connection.
async fn exchange(addr: std::net::SocketAddr, input: &[u8]) -> (u16, bool) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(input).await.unwrap();
    let head = raw_one(&mut s, b"").await;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    // Closed: the next read ends (or fails). Open: it waits for the next request.
    let mut b = [0u8; 1];
    let closed = match tokio::time::timeout(Duration::from_secs(2), s.read(&mut b)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) => panic!("more bytes after the response to {input:?}"),
        Err(_) => false,
    };
    (status, closed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9112_request_framing_table() {
    let origin = Origin::named("o").await;
    let p = Proxy::start(&format!(
        "frontends:\n  fe:\n    bind: \"127.0.0.1:0\"\n    default_backend: be\nbackends: {{ be: {{ servers: {{ s: {{ address: \"{}\" }} }} }} }}\n",
        origin.addr
    ));
    let mut wrong = Vec::new();
    for r in ROWS {
        let got = exchange(p.addr("fe"), r.input).await;
        if got != (r.status, r.closed) {
            wrong.push(format!(
                "{}: got status {} closed {}, want {} closed {}",
                r.why, got.0, got.1, r.status, r.closed
            ));
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
    p.stop().await;
}
