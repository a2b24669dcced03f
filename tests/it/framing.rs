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

/// A server response row: what the server sends for `method`, and what the client must
/// get. `body: None` means the client must see the body cut short (no complete message).
struct Reply {
    why: &'static str,
    method: &'static str,
    reply: &'static [u8],
    /// The server closes its connection after the reply.
    server_closes: bool,
    status: u16,
    body: Option<&'static str>,
    /// Lines the client's response head must have (lowercase), and must not have.
    has: &'static [&'static str],
    lacks: &'static [&'static str],
    /// Trailer lines the client must get (lowercase).
    trailers: &'static [&'static str],
    client_closed: bool,
    /// Whether the proxy keeps the server connection for the next request.
    server_reused: bool,
}

const OK: Reply = Reply {
    why: "",
    method: "GET",
    reply: b"",
    server_closes: false,
    status: 200,
    body: Some(""),
    has: &[],
    lacks: &[],
    trailers: &[],
    client_closed: false,
    server_reused: true,
};

const BAD_GATEWAY: Reply = Reply {
    status: 502,
    body: None,
    server_reused: false,
    ..OK
};

const REPLIES: &[Reply] = &[
    Reply {
        why: "a well-formed response is relayed and both connections kept (baseline)",
        reply: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        body: Some("ok"),
        has: &["content-length: 2"],
        ..OK
    },
    Reply {
        why: "6.3: two different Content-Length values: 502, the server connection dropped",
        reply: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!",
        ..BAD_GATEWAY
    },
    Reply {
        why: "6.3: a list of one repeated Content-Length is one length, sent on as one value",
        reply: b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok",
        body: Some("ok"),
        has: &["content-length: 2"],
        lacks: &["content-length: 2, 2"],
        ..OK
    },
    Reply {
        why: "6.3: a Content-Length that is not 1*DIGIT: 502",
        reply: b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok",
        ..BAD_GATEWAY
    },
    Reply {
        why: "6.3: Transfer-Encoding with Content-Length is handled as an error: 502",
        reply: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        ..BAD_GATEWAY
    },
    Reply {
        why: "6.1: a transfer coding other than chunked cannot be passed on undecoded: 502",
        reply: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nnot gzip",
        server_closes: true,
        ..BAD_GATEWAY
    },
    Reply {
        why: "6.3: a body delimited by the server's close is relayed whole, the client kept",
        reply: b"HTTP/1.1 200 OK\r\n\r\nuntil close",
        server_closes: true,
        body: Some("until close"),
        server_reused: false,
        ..OK
    },
    Reply {
        why: "6.3: a body shorter than its Content-Length: the client sees it cut, closed",
        reply: b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        server_closes: true,
        body: None,
        client_closed: true,
        server_reused: false,
        ..OK
    },
    Reply {
        why: "7.1: a chunked body is relayed with its trailer fields",
        reply: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;ext=1\r\nok\r\n0\r\nX-Sum: 9\r\n\r\n",
        body: Some("ok"),
        trailers: &["x-sum: 9"],
        ..OK
    },
    Reply {
        why: "7.1: a chunk size with leading whitespace: the body is cut and both closed",
        reply: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n 2\r\nok\r\n0\r\n\r\n",
        body: None,
        client_closed: true,
        server_reused: false,
        ..OK
    },
    Reply {
        why: "7.1: a chunk size past 64 bits: the body is cut and both closed",
        reply: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000002\r\nok\r\n0\r\n\r\n",
        body: None,
        client_closed: true,
        server_reused: false,
        ..OK
    },
    Reply {
        why: "7.1: chunk data longer than its size: the body is cut and both closed",
        reply: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nok\r\n0\r\n\r\n",
        body: None,
        client_closed: true,
        server_reused: false,
        ..OK
    },
    Reply {
        why: "RFC 9110 6.5.1: trailer fields that frame, route or authenticate are not passed on",
        reply: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\nHost: evil\r\nSet-Cookie: a=b\r\nX-Sum: 9\r\n\r\n",
        body: Some("ok"),
        trailers: &["x-sum: 9"],
        ..OK
    },
    Reply {
        why: "6.3: a 204 has no body and no length, and the server connection is kept",
        reply: b"HTTP/1.1 204 No Content\r\n\r\n",
        status: 204,
        ..OK
    },
    Reply {
        why: "6.3: a 304 has no body whatever its Content-Length says; the field is passed on",
        reply: b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
        status: 304,
        has: &["content-length: 10"],
        ..OK
    },
    Reply {
        why: "6.3: a HEAD response has no body; its Content-Length is passed on",
        method: "HEAD",
        reply: b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n",
        has: &["content-length: 10"],
        ..OK
    },
    Reply {
        why: "6.3: bytes after a 204 are not a body: not relayed, the server connection dropped",
        reply: b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello",
        status: 204,
        server_reused: false,
        ..OK
    },
    Reply {
        why: "6.3: bytes after a HEAD response are not a body: not relayed, the server connection dropped",
        method: "HEAD",
        reply: b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        has: &["content-length: 5"],
        server_reused: false,
        ..OK
    },
    Reply {
        why: "5.1: whitespace between a field name and the colon is removed before relaying",
        reply: b"HTTP/1.1 200 OK\r\nX-A : 1\r\nContent-Length: 0\r\n\r\n",
        has: &["x-a: 1"],
        ..OK
    },
    Reply {
        why: "5.2: obsolete line folding is replaced by spaces before relaying",
        reply: b"HTTP/1.1 200 OK\r\nX-A: 1\r\n 2\r\nContent-Length: 0\r\n\r\n",
        has: &["x-a: 1   2"],
        ..OK
    },
    Reply {
        why: "2.2: a bare LF ending the head's lines is read as a line end",
        reply: b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
        body: Some("ok"),
        ..OK
    },
    Reply {
        why: "5: a field value with a NUL: 502",
        reply: b"HTTP/1.1 200 OK\r\nX-A: a\0b\r\nContent-Length: 0\r\n\r\n",
        ..BAD_GATEWAY
    },
    Reply {
        why: "4: a status code of four digits: 502",
        reply: b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
        ..BAD_GATEWAY
    },
    Reply {
        why: "RFC 9110 15.2: interim 1xx responses before the final one are not relayed to HTTP/1.1 GETs",
        reply: b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        body: Some("ok"),
        ..OK
    },
    Reply {
        why: "RFC 9110 15.2.2: a 101 to a request that asked for no upgrade: 502",
        reply: b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n",
        ..BAD_GATEWAY
    },
    Reply {
        why: "7.6.1: hop-by-hop fields and those Connection names are not relayed",
        reply: b"HTTP/1.1 200 OK\r\nConnection: x-hop, keep-alive\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nContent-Length: 0\r\n\r\n",
        lacks: &["x-hop", "keep-alive"],
        ..OK
    },
];

/// A server that answers `/rowN` with row N's reply and `/probe` with the path the same
/// connection served before it (`fresh` on a new connection).
async fn scripted_server() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut last = String::from("fresh");
                let mut buf = Vec::new();
                loop {
                    let end = loop {
                        if let Some(e) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break e + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end);
                    let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                    if path == "/probe" {
                        let r = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{last}",
                            last.len()
                        );
                        if s.write_all(r.as_bytes()).await.is_err() {
                            return;
                        }
                    } else {
                        let i: usize = path.trim_start_matches("/row").parse().unwrap();
                        if s.write_all(REPLIES[i].reply).await.is_err() {
                            return;
                        }
                        if REPLIES[i].server_closes {
                            let _ = s.shutdown().await;
                            return;
                        }
                    }
                    last = path;
                }
            });
        }
    });
    a
}

/// What a client got: the head (lowercase), the body if it was complete, the trailers,
/// and whether the connection closed after it.
struct Received {
    head: String,
    body: Option<String>,
    trailers: String,
    closed: bool,
}

async fn read_some(s: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 4096];
    match tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk)).await {
        Ok(Ok(n)) if n > 0 => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
        Ok(_) => false,
        Err(_) => panic!("no answer within 10 s"),
    }
}

/// Reads one line (without CRLF) from `buf`, reading more as needed; None at the end.
async fn line(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
            let l = String::from_utf8_lossy(&buf[..i]).into_owned();
            buf.drain(..i + 2);
            return Some(l);
        }
        if !read_some(s, buf).await {
            return None;
        }
    }
}

/// Reads one response; None when the connection closes before a whole head.
async fn receive(s: &mut TcpStream, method: &str) -> Option<Received> {
    let mut buf = Vec::new();
    let mut head = String::new();
    loop {
        let l = line(s, &mut buf).await?;
        if l.is_empty() {
            break;
        }
        head.push_str(&l.to_lowercase());
        head.push('\n');
    }
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let field = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
    };
    let mut trailers = String::new();
    let body = if method == "HEAD" || status == 204 || status == 304 {
        Some(String::new())
    } else if field("transfer-encoding:").as_deref() == Some("chunked") {
        let mut out = Vec::new();
        let mut complete = false;
        while let Some(size) = line(s, &mut buf).await {
            let n = usize::from_str_radix(size.split(';').next().unwrap(), 16).unwrap();
            if n == 0 {
                while let Some(t) = line(s, &mut buf).await {
                    if t.is_empty() {
                        complete = true;
                        break;
                    }
                    trailers.push_str(&t.to_lowercase());
                    trailers.push('\n');
                }
                break;
            }
            while buf.len() < n + 2 {
                if !read_some(s, &mut buf).await {
                    break;
                }
            }
            if buf.len() < n + 2 {
                break;
            }
            out.extend(buf.drain(..n));
            buf.drain(..2);
        }
        complete.then(|| String::from_utf8_lossy(&out).into_owned())
    } else if let Some(len) = field("content-length:") {
        let n: usize = len.parse().unwrap();
        while buf.len() < n {
            if !read_some(s, &mut buf).await {
                break;
            }
        }
        (buf.len() >= n).then(|| String::from_utf8_lossy(&buf[..n]).into_owned())
    } else {
        while read_some(s, &mut buf).await {}
        return Some(Received {
            head,
            body: Some(String::from_utf8_lossy(&buf).into_owned()),
            trailers,
            closed: true,
        });
    };
    // Whether the connection stays open is seen by using it again.
    Some(Received {
        head,
        body,
        trailers,
        closed: false,
    })
}

/// Sends `/probe` on the client connection `s`; None when the proxy closed it.
async fn probe_on(s: &mut TcpStream) -> Option<String> {
    if s.write_all(b"GET /probe HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .is_err()
    {
        return None;
    }
    receive(s, "GET").await.and_then(|r| r.body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9112_response_framing_table() {
    let server = scripted_server().await;
    let p = Proxy::start(&format!(
        "global: {{ threads: 1 }}\nfrontends:\n  fe:\n    bind: \"127.0.0.1:0\"\n    default_backend: be\nbackends: {{ be: {{ servers: {{ s: {{ address: \"{server}\" }} }} }} }}\n",
    ));
    let mut wrong = Vec::new();
    for (i, r) in REPLIES.iter().enumerate() {
        let mut s = TcpStream::connect(p.addr("fe")).await.unwrap();
        let req = format!(
            "{} /row{i} HTTP/1.1\r\nHost: x\r\nTE: trailers\r\n\r\n",
            r.method
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut got = receive(&mut s, r.method)
            .await
            .unwrap_or_else(|| panic!("{}: the connection closed in the head", r.why));
        let status: u16 = got.head.split_whitespace().nth(1).unwrap().parse().unwrap();
        let mut bad = Vec::new();
        if status != r.status {
            bad.push(format!("status {status}, want {}", r.status));
        }
        if r.status != 502 && got.body.as_deref() != r.body {
            bad.push(format!("body {:?}, want {:?}", got.body, r.body));
        }
        for h in r.has {
            if !got.head.lines().any(|l| l == *h) {
                bad.push(format!("no {h:?} in the head"));
            }
        }
        for h in r.lacks {
            if got.head.lines().any(|l| l.starts_with(h)) {
                bad.push(format!("{h:?} in the head"));
            }
        }
        let trailers: Vec<&str> = got.trailers.lines().collect();
        if trailers != r.trailers {
            bad.push(format!("trailers {trailers:?}, want {:?}", r.trailers));
        }
        // The next request on the same client connection, if it is still open, goes over
        // the server connection this row used, if the proxy kept it.
        let probe = match got.closed {
            true => None,
            false => probe_on(&mut s).await,
        };
        let probe = match probe {
            Some(p) => p,
            None => {
                got.closed = true;
                get(p.addr("fe"), "/probe").await.text()
            }
        };
        let reused = probe == format!("/row{i}");
        if got.closed != r.client_closed {
            bad.push(format!(
                "client closed {}, want {}",
                got.closed, r.client_closed
            ));
        }
        if reused != r.server_reused {
            bad.push(format!(
                "server connection reused {reused}, want {}",
                r.server_reused
            ));
        }
        if !bad.is_empty() {
            wrong.push(format!(
                "{}: {}\n  head: {:?}",
                r.why,
                bad.join("; "),
                got.head
            ));
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
    p.stop().await;
}
