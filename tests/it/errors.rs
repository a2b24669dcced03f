//! Errors to clients: 502, 503, 504 and 400/408/413/414/431/501/505, each with a short body,
//! counted; and no malformed input ever stops the proxy from serving.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rampart_proxy::state::Refusal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

fn proxy_to(addr: &str, extra: &str) -> Proxy {
    Proxy::start(&format!(
        r#"
frontends:
  fe:
    bind: ["127.0.0.1:0"]
    timeouts: {{ http_request: 300ms, client: 2s }}
    limits: {{ max_header_size: 4k, max_headers: 20, max_uri_length: 1k, max_request_body: 1k }}
    default_backend: be
backends:
  be:
    timeouts: {{ connect: 500ms, server: 300ms }}
    servers: {{ s: {{ address: "{addr}" }} }}
{extra}
"#
    ))
}

/// An address nothing listens on.
async fn closed_port() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    drop(l);
    a.to_string()
}

/// A server that answers every connection with `reply` (or never, when empty).
async fn fake_server(reply: &'static [u8]) -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                if reply.is_empty() {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                } else {
                    let _ = s.write_all(reply).await;
                    let _ = s.shutdown().await;
                }
            });
        }
    });
    a.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_gives_502() {
    let p = proxy_to(&closed_port().await, "");
    let g = get(p.addr("fe"), "/").await;
    assert_eq!(g.status, 502);
    assert!(g.text().contains("502 Bad Gateway"), "{}", g.text());
    assert_eq!(g.header("content-type"), Some("text/html"));
    let snap = p.handle().snapshot();
    assert_eq!(snap.backends[0].live.errors_conn.load(Relaxed), 1);
    assert_eq!(
        snap.backends[0].servers[0].live.errors_conn.load(Relaxed),
        1
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_or_truncated_answers_give_502() {
    for reply in [
        &b"this is not http\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        b"HTTP/1.1 abc\r\n\r\n",
        b"\x00\x01\x02",
    ] {
        let p = proxy_to(&fake_server(reply).await, "");
        let g = raw(
            p.addr("fe"),
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        // A truncated body can only be signalled by closing: the head already went out.
        if reply.starts_with(b"HTTP/1.1 200") {
            assert!(g.starts_with("HTTP/1.1 200") && g.ends_with("short"), "{g}");
        } else {
            assert!(
                g.starts_with("HTTP/1.1 502"),
                "{:?}: {g}",
                String::from_utf8_lossy(reply)
            );
        }
        p.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_server_gives_504_after_server_timeout() {
    let p = proxy_to(&fake_server(b"").await, "");
    let w = crate::stall::Budget::new(Duration::from_secs(3));
    let g = get(p.addr("fe"), "/").await;
    assert_eq!(g.status, 504);
    let took = w.elapsed();
    assert!(
        took >= Duration::from_millis(290) && w.fits(took),
        "took {}",
        w.show(took)
    );
    assert!(g.text().contains("didn't respond in time"));
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_usable_server_or_backend_gives_503() {
    let p = Proxy::start(
        r#"
frontends:
  fe:
    bind: ["127.0.0.1:0"]
    use_backend: ["empty if { path /empty }", "down if { path /down }"]
  nobackend:
    bind: ["127.0.0.1:0"]
backends:
  empty: {}
  down: { servers: { s: { address: "127.0.0.1:9", disabled: true } } }
"#,
    );
    assert_eq!(get(p.addr("fe"), "/empty").await.status, 503);
    assert_eq!(get(p.addr("fe"), "/down").await.status, 503);
    assert_eq!(get(p.addr("fe"), "/none").await.status, 503);
    assert_eq!(get(p.addr("nobackend"), "/").await.status, 503);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_client_input_gets_the_right_status() {
    let origin = Origin::named("o").await;
    let p = proxy_to(&origin.addr.to_string(), "");
    let a = p.addr("fe");
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(2000));
    let big_header = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "b".repeat(5000)
    );
    let many: String = (0..30).map(|i| format!("X-{i}: v\r\n")).collect();
    let many_headers = format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n");
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"GARBAGE\r\n\r\n".to_vec(), "400"),
        (b"GET / HTTP/1.1\r\nBad Header\r\n\r\n".to_vec(), "400"),
        (
            b"GET / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n".to_vec(),
            "400",
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
            "400",
        ),
        (b"GET nopath HTTP/1.1\r\n\r\n".to_vec(), "400"),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n".to_vec(),
            "501",
        ),
        (b"GET / HTTP/3.0\r\n\r\n".to_vec(), "505"),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n".to_vec(),
            "413",
        ),
        (long_uri.into_bytes(), "414"),
        // RFC 9112 section 3.2: exactly one valid Host in HTTP/1.1.
        (b"GET / HTTP/1.1\r\n\r\n".to_vec(), "400"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n".to_vec(), "400"),
        (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n".to_vec(), "400"),
        // RFC 9112 section 7.1: chunk-size is 1*HEXDIG, nothing before it.
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n 5\r\nhello\r\n0\r\n\r\n".to_vec(),
            "400",
        ),
        (big_header.into_bytes(), "431"),
        (many_headers.into_bytes(), "431"),
    ];
    for (input, want) in cases {
        let out = raw(a, &input).await;
        assert!(
            out.starts_with(&format!("HTTP/1.1 {want}")),
            "{:?} -> {out}",
            String::from_utf8_lossy(&input[..input.len().min(60)])
        );
        assert!(
            out.contains("<html><body><h1>"),
            "short body expected: {out}"
        );
    }
    // A chunked body over the limit is refused as it streams.
    let body = "c".repeat(0x800);
    let mut s = TcpStream::connect(a).await.unwrap();
    s.write_all(format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n{body}\r\n0\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut resp = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), s.read_to_string(&mut resp)).await;
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    let live = p.handle().snapshot().frontends[0].live.clone();
    let errors = live.errors.load(Relaxed);
    assert!(errors >= 16, "refused requests are counted: {errors}");
    // And counted by reason.
    let by_reason: Vec<(&str, u64)> = Refusal::ALL
        .iter()
        .map(|r| (r.name(), live.refused.get(*r)))
        .filter(|(_, n)| *n > 0)
        .collect();
    assert_eq!(
        by_reason,
        [
            ("bad_request", 9),
            ("uri_too_long", 1),
            ("header_too_large", 2),
            ("body_too_large", 2),
            ("not_implemented", 1),
            ("version_not_supported", 1),
        ]
    );
    // Only the two streamed chunked requests reached the origin (their heads go out
    // before the body is read: the one with a bad chunk line and the one past the limit;
    // each body was cut there, and the connection to the origin with it); nothing
    // malformed did.
    assert!(
        origin.count() <= 2,
        "malformed requests reached the origin: {}",
        origin.count()
    );
    // Still serving.
    assert_eq!(get(a, "/").await.status, 200);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_head_gets_408_and_idle_connection_closes_silently() {
    let origin = Origin::named("o").await;
    let p = proxy_to(&origin.addr.to_string(), "");
    let mut s = TcpStream::connect(p.addr("fe")).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    let live = p.handle().snapshot().frontends[0].live.clone();
    assert_eq!(live.refused.get(Refusal::HeadTimeout), 1);
    let mut s = TcpStream::connect(p.addr("fe")).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.is_empty(),
        "an idle connection is closed without a response"
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_garbage_never_stops_the_proxy() {
    let origin = Origin::named("o").await;
    let p = proxy_to(&origin.addr.to_string(), "");
    let a = p.addr("fe");
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let seeds: [&[u8]; 6] = [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"",
    ];
    for i in 0..300 {
        let mut input = seeds[i % seeds.len()].to_vec();
        let flips = (next() % 8) as usize;
        for _ in 0..flips {
            if input.is_empty() {
                input.push((next() & 0xff) as u8);
                continue;
            }
            let pos = (next() as usize) % input.len();
            match next() % 3 {
                0 => input[pos] = (next() & 0xff) as u8,
                1 => input.insert(pos, (next() & 0xff) as u8),
                _ => {
                    input.remove(pos);
                }
            }
        }
        let mut s = TcpStream::connect(a).await.unwrap();
        let _ = s.write_all(&input).await;
        let _ = s.shutdown().await;
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut sink)).await;
    }
    assert_eq!(
        get(a, "/").await.status,
        200,
        "the proxy still serves after 300 mangled inputs"
    );
    p.stop().await;
}

/// An HTTP/2 (prior knowledge) connection to `addr`, sending bodies of type `B`.
async fn h2c<B>(addr: std::net::SocketAddr) -> hyper::client::conn::http2::SendRequest<B>
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (s, c) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(c);
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_host_must_agree_with_authority() {
    let origin = Origin::named("o").await;
    let p = proxy_to(&origin.addr.to_string(), "");
    let a = p.addr("fe");
    let mut s = h2c(a).await;
    let req = |host: &str| {
        http::Request::get("http://a.test/x")
            .header("host", host)
            .body(empty())
            .unwrap()
    };
    // The same entity: the port the scheme implies, another case.
    for same in ["a.test", "A.Test:80"] {
        let r = s.send_request(req(same)).await.expect(same);
        assert_eq!(r.status(), 200, "{same}");
    }
    assert_eq!(origin.count(), 2);
    // Another one: a stream error (RFC 9113 section 8.3.1), never forwarded; the
    // connection goes on.
    let e = s.send_request(req("b.test")).await.unwrap_err();
    assert!(format!("{e:?}").contains("PROTOCOL_ERROR"), "{e:?}");
    let r = s.send_request(req("a.test")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(origin.count(), 3);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_that_trickles_is_cut_with_408() {
    let origin = Origin::named("o").await;
    let p = Proxy::start(&format!(
        "frontends:\n  fe:\n    bind: \"127.0.0.1:0\"\n    timeouts: {{ request_body: 1s }}\n    limits: {{ min_request_body_rate: 100 }}\n    default_backend: be\nbackends: {{ be: {{ servers: {{ s: {{ address: \"{}\" }} }} }} }}\n",
        origin.addr
    ));
    let a = p.addr("fe");
    // 10 bytes a second where 100 are asked: cut after about 1.1 s, long before the
    // 600 bytes are sent (a minute).
    let mut s = TcpStream::connect(a).await.unwrap();
    s.write_all(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 600\r\n\r\n")
        .await
        .unwrap();
    let mut sent = 0;
    let mut resp = Vec::new();
    while sent < 600 {
        if s.write_all(b"x").await.is_err() {
            break;
        }
        sent += 1;
        let mut buf = [0u8; 512];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await
        {
            resp.extend_from_slice(&buf[..n]);
            if n == 0 || resp.ends_with(b"</html>\n") {
                break;
            }
        }
    }
    let resp = String::from_utf8_lossy(&resp);
    assert!(
        resp.starts_with("HTTP/1.1 408"),
        "after {sent} bytes: {resp}"
    );
    assert!(sent < 600, "the whole body was sent: {resp}");
    let live = p.handle().snapshot().frontends[0].live.clone();
    assert_eq!(live.refused.get(Refusal::BodyTimeout), 1);
    // The connection is closed.
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest)).await;
    assert!(
        tokio::time::timeout(Duration::from_secs(10), s.read(&mut [0u8; 1]))
            .await
            .is_ok_and(|r| r.map_or(true, |n| n == 0)),
        "the connection stayed open"
    );

    // A body at a good pace (2,000 bytes a second) is not cut, however long it takes
    // past the first second.
    let mut s = TcpStream::connect(a).await.unwrap();
    s.write_all(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 3000\r\n\r\n")
        .await
        .unwrap();
    for _ in 0..15 {
        s.write_all(&[b'y'; 200]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let resp = raw_one(&mut s, b"").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    p.stop().await;
}

/// A request body fed from a channel, a chunk at a time.
struct Trickle(tokio::sync::mpsc::Receiver<bytes::Bytes>);

impl http_body::Body for Trickle {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|o| o.map(|b| Ok(http_body::Frame::data(b))))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_request_body_that_trickles_is_cut_with_408() {
    let origin = Origin::named("o").await;
    let p = Proxy::start(&format!(
        "frontends:\n  fe:\n    bind: \"127.0.0.1:0\"\n    timeouts: {{ request_body: 1s }}\n    limits: {{ min_request_body_rate: 100 }}\n    default_backend: be\nbackends: {{ be: {{ servers: {{ s: {{ address: \"{}\" }} }} }} }}\n",
        origin.addr
    ));
    let mut s = h2c(p.addr("fe")).await;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    // 10 bytes a second, for at most a minute.
    let feeder = tokio::spawn(async move {
        for _ in 0..600 {
            if tx.send(bytes::Bytes::from_static(b"x")).await.is_err() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        true
    });
    let req = http::Request::post("http://localhost/up")
        .body(Trickle(rx))
        .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(60), s.send_request(req))
        .await
        .expect("no answer while the body trickled")
        .unwrap();
    assert_eq!(r.status(), 408);
    let live = p.handle().snapshot().frontends[0].live.clone();
    assert_eq!(live.refused.get(Refusal::BodyTimeout), 1);
    feeder.abort();
    p.stop().await;
}

/// An origin that answers every request with `n` bytes.
async fn big_origin(n: usize) -> Origin {
    let body = bytes::Bytes::from(vec![b'z'; n]);
    Origin::start("big", move |_| {
        http::Response::builder()
            .header("content-length", n)
            .body(full(body.clone()))
            .unwrap()
    })
    .await
}

fn slow_reader_proxy(origin: &Origin) -> Proxy {
    Proxy::start(&format!(
        "frontends:\n  fe:\n    bind: \"127.0.0.1:0\"\n    timeouts: {{ response_body: 2s }}\n    limits: {{ min_response_body_rate: 2k }}\n    default_backend: be\nbackends: {{ be: {{ servers: {{ s: {{ address: \"{}\" }} }} }} }}\n",
        origin.addr
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_takes_its_response_too_slowly_is_cut() {
    const SIZE: usize = 16 << 20;
    let origin = big_origin(SIZE).await;
    let p = slow_reader_proxy(&origin);
    let a = p.addr("fe");
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut s = sock.connect(a).await.unwrap();
    s.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // 100 bytes every 100 ms, 1,000 a second where 2,000 are asked, for at most a minute:
    // the proxy waits about 4 s in all (2 s, and half a second more for each second
    // waited), then resets the connection.
    let mut got = 0usize;
    let mut ended = false;
    for _ in 0..600 {
        let mut buf = [0u8; 100];
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => {
                ended = true;
                break;
            }
            Ok(n) => got += n,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ended, "still open after {got} bytes");
    assert!(got < SIZE);
    let live = p.handle().snapshot().frontends[0].live.clone();
    assert_eq!(live.refused.get(Refusal::SlowReader), 1);

    // A client that takes the response at its own speed gets all of it, even when the
    // proxy waits for it for most of a second at the start.
    let mut s = TcpStream::connect(a).await.unwrap();
    s.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut all = Vec::new();
    s.read_to_end(&mut all).await.unwrap();
    assert!(all.starts_with(b"HTTP/1.1 200"));
    assert!(all.len() > SIZE);
    assert_eq!(live.refused.get(Refusal::SlowReader), 1);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_that_takes_its_response_too_slowly_gets_its_stream_reset() {
    const SIZE: usize = 1 << 20;
    let origin = big_origin(SIZE).await;
    let p = slow_reader_proxy(&origin);
    let tcp = TcpStream::connect(p.addr("fe")).await.unwrap();
    // A window of 100 bytes, granted again as each frame is taken.
    let (mut s, c) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(100)
        .adaptive_window(false)
        .handshake::<_, http_body_util::Empty<bytes::Bytes>>(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(c);
    let req = |path: &str| {
        http::Request::get(format!("http://localhost{path}"))
            .body(http_body_util::Empty::new())
            .unwrap()
    };
    let r = s.send_request(req("/big")).await.unwrap();
    assert_eq!(r.status(), 200);
    let mut body = r.into_body();
    // A frame (at most 100 bytes) every 100 ms, for at most a minute.
    let mut got = 0usize;
    let mut cut = false;
    for _ in 0..600 {
        match body.frame().await {
            Some(Ok(f)) => got += f.data_ref().map_or(0, |d| d.len()),
            Some(Err(e)) => {
                assert!(format!("{e:?}").contains("CANCEL"), "{e:?}");
                cut = true;
                break;
            }
            None => break,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(cut, "not cut after {got} bytes");
    let live = p.handle().snapshot().frontends[0].live.clone();
    assert_eq!(live.refused.get(Refusal::SlowReader), 1);
    // The connection goes on.
    let r = s.send_request(req("/small")).await.unwrap();
    assert_eq!(r.status(), 200);
    p.stop().await;
}

/// Requests whose client resets their HTTP/2 streams while the server has not answered
/// are completed all the same: the in-flight gauges fall back to zero, the aborts are
/// counted, and each is logged with `CH` and status -1, as HAProxy logs them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_requests_reset_in_flight_leave_no_gauge_raised() {
    let hung = fake_server(b"").await;
    let dir = temp_dir("reset");
    let log = dir.join("access.json");
    let p = Proxy::start(&format!(
        r#"
frontends:
  fe:
    bind: "127.0.0.1:0"
    access_log: {{ to: "{}", format: json }}
    default_backend: be
backends:
  be:
    balance: leastconn
    timeouts: {{ server: 60s }}
    servers: {{ s: {{ address: "{hung}" }} }}
"#,
        log.display()
    ));
    const N: u64 = 50;
    let send = h2c::<http_body_util::Empty<bytes::Bytes>>(p.addr("fe")).await;
    let mut tasks = Vec::new();
    for _ in 0..N {
        let mut s = send.clone();
        tasks.push(tokio::spawn(async move {
            let req = http::Request::get("http://x/")
                .body(http_body_util::Empty::new())
                .unwrap();
            let _ = s.send_request(req).await;
        }));
    }
    let be = p.handle().snapshot().backends[0].clone();
    let server = be.servers[0].live.clone();
    assert!(
        eventually(Duration::from_secs(20), || server.active.load(Relaxed) == N).await,
        "in flight: {}",
        server.active.load(Relaxed)
    );
    assert_eq!(be.live.active.load(Relaxed), N);
    // Dropping a response future resets its stream (RST_STREAM CANCEL).
    for t in tasks {
        t.abort();
    }
    assert!(
        eventually(Duration::from_secs(20), || be.live.active.load(Relaxed)
            == 0
            && server.active.load(Relaxed) == 0)
        .await,
        "still in flight: backend {}, server {}",
        be.live.active.load(Relaxed),
        server.active.load(Relaxed)
    );
    assert_eq!(be.live.active_max.load(Relaxed), N, "smax");
    assert_eq!(be.live.aborts.client.load(Relaxed), N);
    assert_eq!(server.aborts.client.load(Relaxed), N);
    assert_eq!(be.live.responses.get(5), 0, "no response was counted");
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        eventually(Duration::from_secs(10), || read().lines().count() as u64
            == N)
        .await
    );
    for l in read().lines() {
        assert!(
            l.contains("\"status\":-1") && l.contains("\"termination\":\"CH--\""),
            "{l}"
        );
    }
    // The connection still serves.
    drop(send);
    p.stop().await;
}
