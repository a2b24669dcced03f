//! Frontend behaviour: connection limits, forwarding headers, access logs, shutdown.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_holds_new_clients_until_one_leaves() {
    let origin = Origin::named("o").await;
    let p = Proxy::start(&format!(
        "global: {{ threads: 1 }}\nfrontends: {{ fe: {{ bind: \"127.0.0.1:0\", max_connections: 2, default_backend: be }} }}\nbackends: {{ be: {{ servers: {{ s: {{ address: \"{}\" }} }} }} }}\n",
        origin.addr
    ));
    let a = p.addr("fe");
    let mut c1 = TcpStream::connect(a).await.unwrap();
    let mut c2 = TcpStream::connect(a).await.unwrap();
    assert!(
        raw_one(&mut c1, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 200")
    );
    assert!(
        raw_one(&mut c2, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 200")
    );
    let fe = p.handle().snapshot().frontends[0].live.clone();
    assert_eq!(fe.conns_cur.load(std::sync::atomic::Ordering::Relaxed), 2);
    // A third client waits in the kernel's queue.
    let mut c3 = TcpStream::connect(a).await.unwrap();
    c3.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let early = tokio::time::timeout(Duration::from_millis(300), c3.read(&mut buf)).await;
    assert!(
        early.is_err(),
        "the third connection was served above the limit"
    );
    drop(c1);
    let n = tokio::time::timeout(Duration::from_secs(30), c3.read(&mut buf))
        .await
        .expect("served once a slot frees")
        .unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_are_replaced_unless_the_peer_is_trusted() {
    let origin = Origin::start("o", |s| {
        let h = |n: &str| {
            s.headers
                .get_all(n)
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect::<Vec<_>>()
                .join("|")
        };
        text(
            200,
            &format!(
                "xff={} xfp={} fwd={}",
                h("x-forwarded-for"),
                h("x-forwarded-proto"),
                h("forwarded")
            ),
        )
    })
    .await;
    let cfg = |trust: &str| {
        format!(
            "frontends:\n  fe:\n    bind: \"127.0.0.1:0\"\n    forwarded: {{ forwarded: true, trust: [{trust}] }}\n    default_backend: be\nbackends: {{ be: {{ servers: {{ s: {{ address: \"{}\" }} }} }} }}\n",
            origin.addr
        )
    };
    let spoof = [
        ("x-forwarded-for", "6.6.6.6"),
        ("x-forwarded-proto", "https"),
        ("forwarded", "for=6.6.6.6"),
    ];
    let p = Proxy::start(&cfg("10.0.0.0/8"));
    let g = get_from("127.0.0.1".parse().unwrap(), p.addr("fe"), "/", &spoof).await;
    assert_eq!(
        g.text(),
        "xff=127.0.0.1 xfp=http fwd=for=127.0.0.1;proto=http;host=localhost",
        "untrusted peers cannot inject"
    );
    p.stop().await;
    let p = Proxy::start(&cfg("127.0.0.0/8"));
    let g = get_from("127.0.0.1".parse().unwrap(), p.addr("fe"), "/", &spoof).await;
    assert_eq!(
        g.text(),
        "xff=6.6.6.6, 127.0.0.1 xfp=https fwd=for=6.6.6.6, for=127.0.0.1;proto=http;host=localhost",
        "a trusted peer's chain is kept and extended"
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_writes_json_and_httplog_lines() {
    let origin = Origin::named("o").await;
    let dir = temp_dir("log");
    let json = dir.join("access.json");
    let text_log = dir.join("access.log");
    let p = Proxy::start(&format!(
        r#"
frontends:
  j:
    bind: "127.0.0.1:0"
    access_log: {{ to: "{}", format: json }}
    http_request: ["deny if {{ path /no }}"]
    default_backend: be
  h:
    bind: "127.0.0.1:0"
    access_log: {{ to: "{}", format: httplog }}
    default_backend: be
backends: {{ be: {{ servers: {{ web1: {{ address: "{}" }} }} }} }}
"#,
        json.display(),
        text_log.display(),
        origin.addr
    ));
    get(p.addr("j"), "/hello?x=1").await;
    get(p.addr("j"), "/no").await;
    get(p.addr("h"), "/page").await;
    let read = |f: &std::path::Path| std::fs::read_to_string(f).unwrap_or_default();
    assert!(
        eventually(Duration::from_secs(5), || read(&json).lines().count() >= 2
            && read(&text_log).lines().count() >= 1)
        .await
    );
    let j = read(&json);
    // Two workers write records as their requests finish: find lines by content.
    let mut lines: Vec<&str> = j.lines().collect();
    lines.sort_by_key(|l| l.contains("/no"));
    assert!(lines[0].starts_with("{\"time\":\""), "{}", lines[0]);
    for needle in [
        "\"frontend\":\"j\"",
        "\"backend\":\"be\"",
        "\"server\":\"web1\"",
        "\"method\":\"GET\"",
        "\"uri\":\"/hello?x=1\"",
        "\"status\":200",
        "\"termination\":\"----\"",
    ] {
        assert!(
            lines[0].contains(needle),
            "{needle} missing in {}",
            lines[0]
        );
    }
    assert!(
        lines[1].contains("\"status\":403")
            && lines[1].contains("\"termination\":\"PR--\"")
            && lines[1].contains("\"backend\":null"),
        "{}",
        lines[1]
    );
    let h = read(&text_log);
    let line = h.lines().next().unwrap();
    // 127.0.0.1:PORT [DATE] h be/web1 TR/Tw/Tc/Tr/Ta 200 BYTES - - ---- ... "GET /page HTTP/1.1"
    let parts: Vec<&str> = line.split(' ').collect();
    assert!(parts[0].starts_with("127.0.0.1:"), "{line}");
    assert!(
        parts[1].starts_with('[') && parts[1].ends_with(']'),
        "{line}"
    );
    assert_eq!(&parts[2..4], ["h", "be/web1"], "{line}");
    assert_eq!(parts[4].split('/').count(), 5, "{line}");
    assert_eq!(parts[5], "200", "{line}");
    assert_eq!(&parts[7..10], ["-", "-", "----"], "{line}");
    assert!(line.ends_with("\"GET /page HTTP/1.1\""), "{line}");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_in_flight_requests_and_closes_idle_ones() {
    let arrived = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = arrived.clone();
    let origin = Origin::start("slow", move |s| {
        if s.uri.path() == "/slow" {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
            return delayed(Duration::from_millis(500), 200, "done");
        }
        text(200, "done")
    })
    .await;
    let p = Proxy::start(&format!(
        "global: {{ grace: 5s }}\nfrontends: {{ fe: {{ bind: \"127.0.0.1:0\", default_backend: be }} }}\nbackends: {{ be: {{ servers: {{ s: {{ address: \"{}\" }} }} }} }}\n",
        origin.addr
    ));
    let a = p.addr("fe");
    // An idle keep-alive client and an h2 client.
    let mut idle = TcpStream::connect(a).await.unwrap();
    assert!(
        raw_one(&mut idle, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 200")
    );
    let slow = tokio::spawn(async move {
        let mut s = TcpStream::connect(a).await.unwrap();
        raw_one(&mut s, b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n").await
    });
    assert!(
        eventually(Duration::from_secs(5), || arrived
            .load(std::sync::atomic::Ordering::SeqCst))
        .await
    );
    let started = crate::stall::Budget::new(Duration::from_secs(4));
    let stop = tokio::spawn(p.stop());
    let resp = slow.await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(
        resp.to_lowercase().contains("connection: close"),
        "a stopping proxy closes after the response: {resp}"
    );
    stop.await.unwrap();
    assert!(
        !started.spent(),
        "stopped within the grace time: {}",
        started.show(started.elapsed())
    );
    let mut buf = [0u8; 1];
    assert_eq!(
        idle.read(&mut buf).await.unwrap_or(0),
        0,
        "the idle connection was closed"
    );
    assert!(TcpStream::connect(a).await.is_err(), "no longer listening");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_closes_and_a_stalled_body_gets_408() {
    let origin = Origin::start("o", |s| text(200, &format!("{}", s.body.len()))).await;
    let p = Proxy::start(&format!(
        "frontends: {{ fe: {{ bind: \"127.0.0.1:0\", timeouts: {{ keep_alive: 200ms, client: 300ms }}, default_backend: be }} }}\nbackends: {{ be: {{ servers: {{ s: {{ address: \"{}\" }} }} }} }}\n",
        origin.addr
    ));
    let a = p.addr("fe");
    let mut s = TcpStream::connect(a).await.unwrap();
    assert!(
        raw_one(&mut s, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 200")
    );
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf))
        .await
        .expect("closed after keep_alive")
        .unwrap();
    assert_eq!(n, 0);
    let mut s = TcpStream::connect(a).await.unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_max_connections_applies_across_frontends() {
    let origin = Origin::named("o").await;
    let p = Proxy::start(&format!(
        "global: {{ threads: 1, max_connections: 1 }}\nfrontends:\n  a: {{ bind: \"127.0.0.1:0\", default_backend: be }}\n  b: {{ bind: \"127.0.0.1:0\", default_backend: be }}\nbackends: {{ be: {{ servers: {{ s: {{ address: \"{}\" }} }} }} }}\n",
        origin.addr
    ));
    let mut c1 = TcpStream::connect(p.addr("a")).await.unwrap();
    assert!(
        raw_one(&mut c1, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 200")
    );
    let mut c2 = TcpStream::connect(p.addr("b")).await.unwrap();
    c2.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    assert!(
        tokio::time::timeout(Duration::from_millis(300), c2.read(&mut buf))
            .await
            .is_err(),
        "over the global limit"
    );
    drop(c1);
    let n = tokio::time::timeout(Duration::from_secs(30), c2.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_idle_close_reset_streams_and_graceful_stop() {
    use http_body_util::BodyExt;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let arrived = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = arrived.clone();
    let origin = Origin::start("o", move |s| match s.uri.path() {
        "/slow" => {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
            delayed(Duration::from_millis(400), 200, "slow done")
        }
        "/hang" => delayed(Duration::from_secs(30), 200, "never"),
        _ => text(200, "fast"),
    })
    .await;
    let p = Proxy::start(&format!(
        "global: {{ grace: 5s }}\nfrontends: {{ fe: {{ bind: \"127.0.0.1:0\", timeouts: {{ keep_alive: 300ms }}, default_backend: be }} }}\nbackends: {{ be: {{ servers: {{ s: {{ address: \"{}\" }} }} }} }}\n",
        origin.addr
    ));
    let a = p.addr("fe");
    let h2 = || async move {
        let tcp = TcpStream::connect(a).await.unwrap();
        let (s, c) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
        (s, tokio::spawn(c))
    };
    let req = |path: &str| {
        http::Request::get(format!("http://localhost{path}"))
            .body(empty())
            .unwrap()
    };

    // An idle connection is closed after keep_alive.
    let (mut s, conn) = h2().await;
    let r = s.send_request(req("/")).await.unwrap();
    assert_eq!(r.into_body().collect().await.unwrap().to_bytes(), "fast");
    tokio::time::timeout(Duration::from_secs(30), conn)
        .await
        .expect("closed after keep_alive")
        .unwrap()
        .unwrap();

    // A stream the client resets does not disturb the others on the connection.
    let (mut s, _conn) = h2().await;
    let hang = s.send_request(req("/hang"));
    let hang =
        tokio::spawn(
            async move { drop(tokio::time::timeout(Duration::from_millis(100), hang).await) },
        );
    hang.await.unwrap();
    let r = s.send_request(req("/")).await.unwrap();
    assert_eq!(r.into_body().collect().await.unwrap().to_bytes(), "fast");

    // Stopping sends GOAWAY; the in-flight stream finishes.
    let (mut s, conn) = h2().await;
    let slow = tokio::spawn(async move {
        let r = s.send_request(req("/slow")).await.unwrap();
        r.into_body().collect().await.unwrap().to_bytes()
    });
    assert!(
        eventually(Duration::from_secs(5), || arrived
            .load(std::sync::atomic::Ordering::SeqCst))
        .await
    );
    let stop = tokio::spawn(p.stop());
    assert_eq!(slow.await.unwrap(), "slow done");
    tokio::time::timeout(Duration::from_secs(30), conn)
        .await
        .expect("connection closed after GOAWAY")
        .unwrap()
        .unwrap();
    stop.await.unwrap();
}

/// One request on a TLS connection, and its response's head and body (read by its
/// Content-Length).
async fn tls_one(
    s: &mut tokio_rustls::client::TlsStream<TcpStream>,
    req: &[u8],
) -> (String, Vec<u8>) {
    s.write_all(req).await.unwrap();
    s.flush().await.unwrap();
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed before a whole response: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if buf.len() >= end + 4 + len {
            return (head, buf[end + 4..end + 4 + len].to_vec());
        }
    }
}

/// An origin answering `seen PATH`, behind a TLS frontend offering h2 and HTTP/1.1 with
/// a keep-alive timeout of 5 s.
async fn echo_path_behind_tls() -> (Origin, Pki, Proxy) {
    let origin = Origin::start("o", |s| text(200, &format!("seen {}", s.uri.path()))).await;
    let pki = Pki::new();
    let (c, k) = pki.issue("site", &["localhost"], false);
    let p = Proxy::start(&format!(
        "frontends: {{ fe: {{ bind: {{ address: \"127.0.0.1:0\", tls: {{ certificates: [{{ cert: \"{}\", key: \"{}\" }}], alpn: [h2, http/1.1] }} }}, timeouts: {{ keep_alive: 5s }}, default_backend: be }} }}\nbackends: {{ be: {{ servers: {{ s: {{ address: \"{}\" }} }} }} }}\n",
        c.display(),
        k.display(),
        origin.addr
    ));
    (origin, pki, p)
}

/// A TLS client idle for longer than the stream keeps its keys (1 s): its next request,
/// and a key update after it, are served as before, and the connection still closes at
/// the keep-alive timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_tls_connection_lets_its_keys_go_and_carries_on() {
    let (_origin, pki, p) = echo_path_behind_tls().await;
    let cfg = tls_client(&pki.ca_pem, &[b"http/1.1"]);
    let mut s = tls_connect(p.addr("fe"), cfg, "localhost").await;
    let (head, body) = tls_one(&mut s, b"GET /one HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body, b"seen /one");
    // Idle past the moment the keys go and the connection is set aside.
    assert!(
        eventually(Duration::from_secs(10), || parked(&p) == 1).await,
        "the idle TLS connection was not set aside"
    );
    let (head, body) = tls_one(&mut s, b"GET /two HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body, b"seen /two");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.get_mut().1.refresh_traffic_keys().unwrap();
    let (head, body) = tls_one(&mut s, b"GET /three HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body, b"seen /three");
    // Then nothing: the keep-alive timeout closes the connection.
    closed_within_30s(&mut s, "closed after keep_alive").await;
    p.stop().await;
}

/// Three GETs of /one, /two and /three over HTTP/2 on `io`, 1.5 s apart: idle past the
/// moment a connection without streams lets its buffers (and over TLS its keys) go; the
/// third carries a header block larger than a frame. Returns the client's sender, which
/// keeps the connection open, and the connection's task.
async fn three_streams_idle_between<I>(
    io: I,
    base: &str,
) -> (
    hyper::client::conn::http2::SendRequest<TestBody>,
    tokio::task::JoinHandle<hyper::Result<()>>,
)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(io),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    for (i, path) in ["/one", "/two", "/three"].into_iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
        let mut req = http::Request::get(format!("{base}{path}"));
        if i == 2 {
            req = req.header("x-big", "b".repeat(40_000));
        }
        let sent = send.send_request(req.body(empty()).unwrap()).await;
        let got = collect(sent.expect("HTTP/2 request")).await;
        assert_eq!(got.status, 200);
        assert_eq!(got.body, format!("seen {path}").as_bytes());
    }
    (send, conn)
}

/// Waits for an HTTP/2 client connection's task to end cleanly, for up to 30 s.
async fn ends_within_30s(conn: tokio::task::JoinHandle<hyper::Result<()>>, what: &str) {
    tokio::time::timeout(Duration::from_secs(30), conn)
        .await
        .expect(what)
        .unwrap()
        .unwrap();
}

/// The same over HTTP/2: a connection without streams for longer than 1 s lets its keys
/// and buffers go; its next streams are served, and it still closes at the keep-alive
/// timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_h2_connection_lets_its_keys_go_and_carries_on() {
    let (_origin, pki, p) = echo_path_behind_tls().await;
    let addr = p.addr("fe");
    let s = tls_connect(addr, tls_client(&pki.ca_pem, &[b"h2"]), "localhost").await;
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let base = format!("https://localhost:{}", addr.port());
    let (_send, conn) = three_streams_idle_between(s, &base).await;
    // Then nothing: the keep-alive timeout ends the connection (GOAWAY, then the close).
    ends_within_30s(conn, "closed after keep_alive").await;
    p.stop().await;
}

/// Over h2c too an idle connection lets its buffers go after 1 s, and its next streams
/// are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_h2c_connection_lets_its_buffers_go_and_carries_on() {
    let (_origin, p) = echo_path_with_keep_alive("5s").await;
    let addr = p.addr("fe");
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (send, conn) =
        three_streams_idle_between(tcp, &format!("http://localhost:{}", addr.port())).await;
    drop(send);
    ends_within_30s(conn, "closed once the client is done").await;
    p.stop().await;
}

/// The header block of the next HEADERS frame on `stream` that the proxy sends over
/// `s` (the frames before it skipped).
async fn next_header_block(s: &mut TcpStream, stream: u8) -> Vec<u8> {
    loop {
        let mut head = [0u8; 9];
        s.read_exact(&mut head).await.unwrap();
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).await.unwrap();
        if head[3] == 1 && head[8] == stream {
            return payload;
        }
    }
}

/// On the wire: once an h2c connection has had no stream for 1 s, the proxy lets its
/// buffers and its HPACK encoder's table go, and its next response head starts with the
/// table size updates to 0 and back to 4,096 that tell the client so. The response just
/// before had indexed headers, so the table was not empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_h2c_connection_empties_its_header_table_after_a_second() {
    let (_origin, p) = echo_path_with_keep_alive("30s").await;
    let mut s = TcpStream::connect(p.addr("fe")).await.unwrap();
    // GET http://x/ on `stream` (static table entries, a literal :authority),
    // END_STREAM | END_HEADERS.
    let get = |stream: u8| {
        let block = [0x82, 0x86, 0x84, 0x41, 1, b'x'];
        let mut f = vec![0, 0, block.len() as u8, 1, 0x5, 0, 0, 0, stream];
        f.extend_from_slice(&block);
        f
    };
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0".to_vec();
    hello.extend(get(1));
    s.write_all(&hello).await.unwrap();
    let first = next_header_block(&mut s, 1).await;
    assert_ne!(
        first[0] & 0xe0,
        0x20,
        "a size update before any release: {first:02x?}"
    );
    // Without a stream for longer than the second after which the proxy lets go.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.write_all(&get(3)).await.unwrap();
    let second = next_header_block(&mut s, 3).await;
    assert_eq!(second[..4], [0x20, 0x3f, 0xe1, 0x1f], "{second:02x?}");
    // The values indexed before are sent again in full, not referred to by index.
    assert!(
        second.len() >= first.len(),
        "{first:02x?} then {second:02x?}"
    );
    drop(s);
    p.stop().await;
}

/// An HTTP/2 client with an HPACK decoder of its own (curl's, nghttp2) follows a
/// connection idle for more than 1 s: the proxy empties its HPACK encoder's table then,
/// and its next response head tells the client's decoder to empty its copy (table size
/// updates to 0 and back). The same header, indexed in the first response, must come out
/// right in the next ones, on the same connection. (Over TLS: curl 7.88 does not reuse an
/// h2c connection of prior knowledge, whatever the server.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_follows_an_idle_h2_connections_emptied_header_table() {
    use std::process::Command;
    if !curl_present() {
        return;
    }
    let origin = Origin::start("o", |s| {
        let mut r = text(200, &format!("seen {}", s.uri.path()));
        r.headers_mut()
            .insert("x-same", "the same value each time".parse().unwrap());
        r.headers_mut()
            .insert("x-path", s.uri.path().parse().unwrap());
        r
    })
    .await;
    let pki = Pki::new();
    let (c, k) = pki.issue("site", &["localhost"], false);
    let ca = pki.dir.join("ca-for-curl.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let p = Proxy::start(&format!(
        "frontends: {{ fe: {{ bind: {{ address: \"127.0.0.1:0\", tls: {{ certificates: [{{ cert: \"{}\", key: \"{}\" }}], alpn: [h2, http/1.1] }} }}, timeouts: {{ keep_alive: 30s }}, default_backend: be }} }}\nbackends: {{ be: {{ servers: {{ s: {{ address: \"{}\" }} }} }} }}\n",
        c.display(),
        k.display(),
        origin.addr
    ));
    let port = p.addr("fe").port();
    let paths = ["/one", "/two", "/three"];
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "--http2", "--max-time", "30", "--cacert"])
        .arg(&ca);
    cmd.args(["--resolve", &format!("localhost:{port}:127.0.0.1")]);
    // One transfer every 2 s (`--rate 30/m`): the connection is idle for longer than 1 s
    // between them, and reused.
    cmd.args(["--rate", "30/m"]);
    for path in paths {
        cmd.args([
            "-D",
            "-",
            "-w",
            "connects=%{num_connects}\\n",
            "-o",
            "/dev/null",
        ]);
        cmd.arg(format!("https://localhost:{port}{path}"));
    }
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(out.status.success(), "curl: {out:?}");
    let heads: Vec<&str> = text.split("http/2 ").skip(1).collect();
    assert_eq!(heads.len(), 3, "{text}");
    for (head, path) in heads.iter().zip(paths) {
        assert!(head.starts_with("200"), "{head}");
        assert!(
            head.contains("\r\nx-same: the same value each time\r\n"),
            "{head}"
        );
        assert!(head.contains(&format!("\r\nx-path: {path}\r\n")), "{head}");
    }
    // The first transfer connected, the others reused its connection.
    let connects: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("connects="))
        .collect();
    assert_eq!(
        connects,
        ["connects=1", "connects=0", "connects=0"],
        "{text}"
    );
    p.stop().await;
}

/// Asserts that the proxy closes `s` (its next read finds the end) within 30 s.
async fn closed_within_30s<S: tokio::io::AsyncRead + Unpin>(s: &mut S, what: &str) {
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf))
        .await
        .expect(what)
        .unwrap_or(0);
    assert_eq!(n, 0, "{what}: bytes came instead");
}

/// The proxy's counts of idle keep-alive connections set aside in their worker's lot,
/// and of open client connections.
fn conn_counts(p: &Proxy) -> (u64, u64) {
    use std::sync::atomic::Ordering::Relaxed;
    let g = &p.handle().live().global;
    (g.conns_parked.load(Relaxed), g.conns_cur.load(Relaxed))
}

fn parked(p: &Proxy) -> u64 {
    conn_counts(p).0
}

fn open_conns(p: &Proxy) -> u64 {
    conn_counts(p).1
}

/// An origin answering `seen PATH` behind a plain frontend with the keep-alive timeout
/// `keep_alive`; a stop waits up to 60 s for open connections.
async fn echo_path_with_keep_alive(keep_alive: &str) -> (Origin, Proxy) {
    let origin = Origin::start("o", |s| text(200, &format!("seen {}", s.uri.path()))).await;
    let p = Proxy::start(&format!(
        "global: {{ grace: 60s }}\nfrontends: {{ fe: {{ bind: \"127.0.0.1:0\", timeouts: {{ keep_alive: {keep_alive} }}, default_backend: be }} }}\nbackends: {{ be: {{ servers: {{ s: {{ address: \"{}\" }} }} }} }}\n",
        origin.addr
    ));
    (origin, p)
}

/// A keep-alive client idle for longer than 1 s is set aside (no task, its socket out of
/// the reactor): its next request is served on the same connection, it is set aside
/// again, and the keep-alive timeout still closes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_set_aside_and_its_next_request_served() {
    let (_origin, p) = echo_path_with_keep_alive("4s").await;
    let mut s = TcpStream::connect(p.addr("fe")).await.unwrap();
    let r = raw_one(&mut s, b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(r.ends_with("seen /one"), "{r}");
    assert!(
        eventually(Duration::from_secs(10), || parked(&p) == 1).await,
        "the idle connection was not set aside"
    );
    for path in ["/two", "/three"] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        let r = raw_one(&mut s, req.as_bytes()).await;
        assert!(r.ends_with(&format!("seen {path}")), "{r}");
        assert!(
            eventually(Duration::from_secs(10), || parked(&p) == 1).await,
            "not set aside again after {path}"
        );
    }
    // Then nothing: the keep-alive timeout closes it where it is set aside.
    closed_within_30s(&mut s, "closed after keep_alive").await;
    assert!(
        eventually(Duration::from_secs(10), || open_conns(&p) == 0
            && parked(&p) == 0)
        .await
    );
    p.stop().await;
}

/// A request that arrives in pieces on a connection set aside is read whole, and a
/// client that closes while set aside is let go at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_aside_connection_reads_a_request_in_pieces_and_sees_its_client_leave() {
    let (_origin, p) = echo_path_with_keep_alive("60s").await;
    let addr = p.addr("fe");
    let mut a = TcpStream::connect(addr).await.unwrap();
    let mut b = TcpStream::connect(addr).await.unwrap();
    for s in [&mut a, &mut b] {
        let r = raw_one(s, b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(r.ends_with("seen /first"), "{r}");
    }
    assert!(eventually(Duration::from_secs(10), || parked(&p) == 2).await);
    a.write_all(b"GET /pie").await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), || parked(&p) == 1).await,
        "the first bytes did not take the connection back"
    );
    let r = raw_one(&mut a, b"ces HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(r.ends_with("seen /pieces"), "{r}");
    drop(b);
    assert!(
        eventually(Duration::from_secs(10), || open_conns(&p) == 1).await,
        "the client's close was not seen"
    );
    p.stop().await;
}

/// A stop closes the connections set aside at once, as it closes idle ones in their
/// tasks, rather than waiting for their keep-alive timeout or the end of its grace time
/// (120 s and 60 s, twice the 30 s allowed here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_closes_connections_set_aside() {
    let (_origin, p) = echo_path_with_keep_alive("120s").await;
    let mut conns = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(p.addr("fe")).await.unwrap();
        let r = raw_one(&mut s, b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(r.ends_with("seen /x"), "{r}");
        conns.push(s);
    }
    assert!(eventually(Duration::from_secs(10), || parked(&p) == 3).await);
    let stop = tokio::spawn(p.stop());
    for mut s in conns {
        closed_within_30s(
            &mut s,
            "closed by the stop, long before the keep-alive timeout",
        )
        .await;
    }
    tokio::time::timeout(Duration::from_secs(30), stop)
        .await
        .expect("the stop waited for connections set aside")
        .unwrap();
}
