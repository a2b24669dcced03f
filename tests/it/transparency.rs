//! The transparency table: each case goes through rampart over HTTP/1.1, h2c, TLS HTTP/1.1
//! and TLS HTTP/2 to a real origin, and the origin sees what the client sent (minus
//! hop-by-hop headers, plus forwarding headers) while the client sees what the origin sent.

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response};

use crate::support::*;

const MODES: [Client; 4] = [Client::H1, Client::H2c, Client::TlsH1, Client::TlsH2];

struct Rig {
    origin: Origin,
    proxy: Proxy,
    pki: Pki,
}

/// A proxy with a cleartext listener (`bound(0)`) and a TLS one (`bound(1)`, a certificate
/// for `localhost` issued by the returned PKI), passing everything to `origin`.
fn plain_and_tls_proxy(origin: std::net::SocketAddr) -> (Proxy, Pki) {
    let pki = Pki::new();
    let (c, k) = pki.issue("site", &["localhost"], false);
    let yaml = format!(
        r#"
frontends:
  fe:
    bind:
      - "127.0.0.1:0"
      - {{ address: "127.0.0.1:0", tls: {{ certificates: [{{ cert: "{}", key: "{}" }}] }} }}
    default_backend: be
backends:
  be:
    servers: {{ o: {{ address: "{origin}" }} }}
"#,
        c.display(),
        k.display(),
    );
    (Proxy::start(&yaml), pki)
}

impl Rig {
    async fn new(handler: impl Fn(&Seen) -> Response<TestBody> + Send + Sync + 'static) -> Self {
        let origin = Origin::start("o", handler).await;
        let (proxy, pki) = plain_and_tls_proxy(origin.addr);
        Rig { proxy, origin, pki }
    }

    async fn send(&self, mode: Client, req: Request<TestBody>) -> Got {
        let addr = if mode.is_tls() {
            self.proxy.bound(1)
        } else {
            self.proxy.bound(0)
        };
        send(mode, addr, req, Some((&self.pki.ca_pem, "localhost"))).await
    }
}

/// Method, target, headers, body, and the body the origin must see.
type Case = (
    Method,
    &'static str,
    Vec<(&'static str, &'static str)>,
    TestBody,
    Bytes,
);

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
];

/// The origin saw the client's end-to-end headers (every value, in order) and the
/// forwarding headers.
fn assert_headers_passed(sent: &HeaderMap, seen: &HeaderMap, mode: Client) {
    for name in sent.keys() {
        if HOP_BY_HOP.contains(&name.as_str()) || name == "host" {
            continue;
        }
        let a: Vec<_> = sent.get_all(name).iter().collect();
        let b: Vec<_> = seen.get_all(name).iter().collect();
        assert_eq!(a, b, "{mode:?}: header {name} changed on the way");
    }
    for h in HOP_BY_HOP {
        if *h == "te" {
            continue;
        }
        assert!(
            !seen.contains_key(*h) || *h == "transfer-encoding",
            "{mode:?}: hop-by-hop {h} was forwarded"
        );
    }
    assert_eq!(
        seen.get("x-forwarded-for").unwrap(),
        "127.0.0.1",
        "{mode:?}"
    );
    let proto = if mode.is_tls() { "https" } else { "http" };
    assert_eq!(seen.get("x-forwarded-proto").unwrap(), proto, "{mode:?}");
    assert!(
        seen.contains_key("host"),
        "{mode:?}: the origin needs a Host header"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transparency_requests_reach_the_origin_unchanged() {
    let rig = Rig::new(|s| {
        let mut r = text(200, "ok");
        r.headers_mut()
            .insert("x-body-len", s.body.len().to_string().parse().unwrap());
        r
    })
    .await;
    let big: Vec<u8> = (0..1_048_576u32).map(|i| (i % 251) as u8).collect();
    for mode in MODES {
        // (method, target, headers, body)
        let cases: Vec<Case> = vec![
            (Method::GET, "/", vec![], empty(), Bytes::new()),
            (
                Method::GET,
                "/a/b?x=1&y=%20z&x=2",
                vec![("accept", "*/*")],
                empty(),
                Bytes::new(),
            ),
            (
                Method::GET,
                "/dup",
                vec![
                    ("x-dup", "one"),
                    ("x-dup", "two"),
                    ("x-dup", "three"),
                    ("cookie", "a=1"),
                    ("cookie", "b=2"),
                ],
                empty(),
                Bytes::new(),
            ),
            (
                Method::DELETE,
                "/item/7",
                vec![("x-odd", "spaced  value\twith tab")],
                empty(),
                Bytes::new(),
            ),
            (Method::OPTIONS, "/", vec![], empty(), Bytes::new()),
            (
                Method::POST,
                "/small",
                vec![("content-type", "application/json")],
                full("{\"a\":1}"),
                Bytes::from_static(b"{\"a\":1}"),
            ),
            (
                Method::PUT,
                "/large",
                vec![],
                full(big.clone()),
                Bytes::from(big.clone()),
            ),
            (
                Method::POST,
                "/chunked",
                vec![],
                frames(Frames::data(&[b"hello ", b"chunked ", b"world"], None)),
                Bytes::from_static(b"hello chunked world"),
            ),
            (Method::PATCH, "/empty-post", vec![], empty(), Bytes::new()),
        ];
        for (method, target, headers, body, expected_body) in cases {
            let mut b = Request::builder().method(method.clone()).uri(target);
            for (k, v) in &headers {
                b = b.header(*k, *v);
            }
            let req = b.body(body).unwrap();
            let sent_headers = req.headers().clone();
            let got = rig.send(mode, req).await;
            assert_eq!(
                got.status,
                200,
                "{mode:?} {method} {target}: {}",
                got.text()
            );
            let seen = rig.origin.last();
            assert_eq!(seen.method, method, "{mode:?}");
            let seen_target = seen.uri.path_and_query().unwrap().as_str();
            assert_eq!(seen_target, target, "{mode:?}: target changed");
            assert_eq!(
                seen.body, expected_body,
                "{mode:?} {method} {target}: body changed"
            );
            assert_headers_passed(&sent_headers, &seen.headers, mode);
            assert_eq!(
                got.header("x-body-len").unwrap(),
                expected_body.len().to_string()
            );
        }
    }
    rig.proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transparency_responses_reach_the_client_unchanged() {
    let big: Bytes = (0..1_048_576u32)
        .map(|i| (i % 253) as u8)
        .collect::<Vec<u8>>()
        .into();
    let big2 = big.clone();
    let rig = Rig::new(move |s| {
        let path = s.uri.path();
        let status: u16 = path.trim_start_matches("/status/").parse().unwrap_or(200);
        match path {
            "/big" => {
                let mut r = Response::new(full(big2.clone()));
                r.headers_mut()
                    .insert("content-type", "application/octet-stream".parse().unwrap());
                r
            }
            "/streamed" => Response::new(frames(Frames::data(
                &[b"part1-", b"part2-", b"part3"],
                None,
            ))),
            "/headers" => {
                let mut r = text(200, "h");
                r.headers_mut()
                    .append("set-cookie", "a=1; Path=/".parse().unwrap());
                r.headers_mut()
                    .append("set-cookie", "b=2; Path=/".parse().unwrap());
                r.headers_mut()
                    .insert("x-custom", "value with spaces".parse().unwrap());
                r
            }
            "/head-len" => {
                let mut r = Response::new(empty());
                r.headers_mut()
                    .insert("content-length", "1234".parse().unwrap());
                r
            }
            _ => {
                let mut r = text(
                    status,
                    if status == 204 || status == 304 {
                        ""
                    } else {
                        "body"
                    },
                );
                if status == 204 || status == 304 {
                    *r.body_mut() = empty();
                }
                r
            }
        }
    })
    .await;
    for mode in MODES {
        for status in [
            200u16, 201, 202, 204, 301, 304, 400, 404, 418, 500, 502, 503,
        ] {
            let got = rig
                .send(
                    mode,
                    Request::get(format!("/status/{status}"))
                        .body(empty())
                        .unwrap(),
                )
                .await;
            assert_eq!(got.status.as_u16(), status, "{mode:?}");
            if status == 204 || status == 304 {
                assert!(got.body.is_empty(), "{mode:?}: {status} must have no body");
            } else {
                assert_eq!(got.text(), "body", "{mode:?} {status}");
            }
        }
        let got = rig
            .send(mode, Request::get("/big").body(empty()).unwrap())
            .await;
        assert_eq!(got.body, big, "{mode:?}: 1 MiB body changed");
        let got = rig
            .send(mode, Request::get("/streamed").body(empty()).unwrap())
            .await;
        assert_eq!(got.text(), "part1-part2-part3", "{mode:?}");
        let got = rig
            .send(mode, Request::get("/headers").body(empty()).unwrap())
            .await;
        let cookies: Vec<_> = got
            .headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(cookies, ["a=1; Path=/", "b=2; Path=/"], "{mode:?}");
        assert_eq!(got.header("x-custom"), Some("value with spaces"));
        let got = rig
            .send(mode, Request::head("/head-len").body(empty()).unwrap())
            .await;
        assert_eq!(got.status, 200);
        assert_eq!(
            got.header("content-length"),
            Some("1234"),
            "{mode:?}: HEAD keeps the length"
        );
        assert!(got.body.is_empty());
        assert_eq!(rig.origin.last().method, Method::HEAD);
    }
    rig.proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transparency_trailers_pass_both_ways() {
    let rig = Rig::new(|s| {
        let mut t = HeaderMap::new();
        t.insert("x-checksum", "abc".parse().unwrap());
        // A field a trailer section must not carry (RFC 9110 section 6.5.1).
        t.insert("set-cookie", "session=forged".parse().unwrap());
        if let Some(req_trailers) = &s.trailers {
            for (k, v) in req_trailers {
                t.insert(k.clone(), v.clone());
            }
        }
        let mut r = Response::new(frames(Frames::data(&[b"with ", b"trailers"], Some(t))));
        // HTTP/1.1 senders declare their trailers.
        r.headers_mut()
            .insert("trailer", "x-checksum, x-request-trailer".parse().unwrap());
        r
    })
    .await;
    for mode in MODES {
        let mut req_trailers = HeaderMap::new();
        req_trailers.insert("x-request-trailer", "r1".parse().unwrap());
        req_trailers.insert("authorization", "Basic Zm9yZ2Vk".parse().unwrap());
        let req = Request::post("/t")
            .header("te", "trailers")
            .header("trailer", "x-request-trailer")
            .body(frames(Frames::data(&[b"abc"], Some(req_trailers))))
            .unwrap();
        let got = rig.send(mode, req).await;
        assert_eq!(got.text(), "with trailers", "{mode:?}");
        let t = got
            .trailers
            .unwrap_or_else(|| panic!("{mode:?}: no trailers"));
        assert_eq!(t.get("x-checksum").unwrap(), "abc", "{mode:?}");
        assert_eq!(
            t.get("x-request-trailer").unwrap(),
            "r1",
            "{mode:?}: request trailers lost"
        );
        // Neither way does a forbidden field pass.
        assert!(t.get("set-cookie").is_none(), "{mode:?}: {t:?}");
        assert!(t.get("authorization").is_none(), "{mode:?}: {t:?}");
        let seen = rig.origin.last().trailers.unwrap_or_default();
        assert!(seen.get("authorization").is_none(), "{mode:?}: {seen:?}");
    }
    rig.proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transparency_expect_100_continue_over_h1() {
    let rig = Rig::new(|s| text(200, &format!("got {}", s.body.len()))).await;
    let mut s = tokio::net::TcpStream::connect(rig.proxy.bound(0))
        .await
        .unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(
        b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(std::time::Duration::from_secs(30), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        &buf[..n],
        b"HTTP/1.1 100 Continue\r\n\r\n",
        "the interim response comes before the body is sent"
    );
    let resp = raw_one(&mut s, b"hello").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.ends_with("got 5"), "{resp}");
    assert!(!rig.origin.last().headers.contains_key("expect"));
    rig.proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transparency_http10_client_gets_close_delimited_stream() {
    let rig = Rig::new(|_| Response::new(frames(Frames::data(&[b"one ", b"two"], None)))).await;
    let out = raw(rig.proxy.bound(0), b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let lower = out.to_lowercase();
    assert!(
        !lower.contains("transfer-encoding"),
        "no chunked encoding for HTTP/1.0: {out}"
    );
    assert!(lower.contains("connection: close"));
    assert!(out.ends_with("one two"), "{out}");
    rig.proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transparency_keep_alive_and_pipelining() {
    let rig = Rig::new(|s| text(200, s.uri.path())).await;
    let mut s = tokio::net::TcpStream::connect(rig.proxy.bound(0))
        .await
        .unwrap();
    for i in 0..5 {
        let r = raw_one(
            &mut s,
            format!("GET /r{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(
            r.ends_with(&format!("/r{i}")),
            "request {i} on one connection: {r}"
        );
    }
    // Two requests in one write.
    let out = raw(rig.proxy.bound(0), b"GET /p1 HTTP/1.1\r\nHost: x\r\n\r\nGET /p2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    let p1 = out.find("/p1").expect("first pipelined answer");
    let p2 = out.find("/p2").expect("second pipelined answer");
    assert!(p1 < p2);
    rig.proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transparency_websocket_upgrade_is_relayed() {
    // An origin that accepts the upgrade and echoes bytes.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        let head = String::from_utf8_lossy(&got).to_lowercase();
        assert!(head.contains("upgrade: websocket"), "{head}");
        assert!(head.contains("connection: upgrade"), "{head}");
        s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n").await.unwrap();
        loop {
            let n = s.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            s.write_all(&buf[..n]).await.unwrap();
        }
    });
    let proxy = Proxy::start(&format!(
        "frontends: {{ fe: {{ bind: \"127.0.0.1:0\", default_backend: be }} }}\nbackends: {{ be: {{ servers: {{ o: {{ address: \"{origin}\" }} }} }} }}\n"
    ));
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(proxy.addr("fe"))
        .await
        .unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before the 101");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    s.write_all(b"ping-frame").await.unwrap();
    let n = tokio::time::timeout(std::time::Duration::from_secs(30), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"ping-frame");
    proxy.stop().await;
}

/// The forwarding headers a client may send to pass itself off as someone else.
const FORGED: [(&str, &str); 7] = [
    ("forwarded", "for=6.6.6.6;proto=https"),
    ("forwarded", "for=7.7.7.7"),
    ("x-forwarded-for", "6.6.6.6"),
    ("x-forwarded-proto", "https"),
    ("x-forwarded-host", "admin.internal"),
    ("x-forwarded-port", "443"),
    ("x-real-ip", "6.6.6.6"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transparency_forged_forwarding_headers_never_reach_the_origin() {
    let rig = Rig::new(|_| text(200, "ok")).await;
    for mode in MODES {
        let mut req = Request::get("/who").body(empty()).unwrap();
        for (n, v) in FORGED {
            req.headers_mut().append(n, v.parse().unwrap());
        }
        assert_eq!(rig.send(mode, req).await.status, 200, "{mode:?}");
        let seen = rig.origin.last().headers;
        for (n, _) in FORGED {
            let got: Vec<_> = seen.get_all(n).iter().collect();
            let want: Vec<&str> = match n {
                // What rampart itself adds (the defaults).
                "x-forwarded-for" => vec!["127.0.0.1"],
                "x-forwarded-proto" if mode.is_tls() => vec!["https"],
                "x-forwarded-proto" => vec!["http"],
                _ => vec![],
            };
            assert_eq!(got, want, "{mode:?}: {n}");
        }
    }
    // Each removal is counted (all seven fields, for each of the four requests).
    let removed: u64 = rig
        .proxy
        .handle()
        .snapshot()
        .frontends
        .iter()
        .map(|f| {
            f.live
                .removed_forwarding
                .load(std::sync::atomic::Ordering::Relaxed)
        })
        .sum();
    assert_eq!(removed, 28);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_of_untrusted_peers_are_kept_only_when_asked() {
    let origin = Origin::start("o", |_| text(200, "ok")).await;
    let p = Proxy::start(&format!(
        "frontends:\n  fe:\n    bind: \"127.0.0.1:0\"\n    forwarded: {{ keep_untrusted: true }}\n    default_backend: be\nbackends: {{ be: {{ servers: {{ s: {{ address: \"{}\" }} }} }} }}\n",
        origin.addr
    ));
    let mut req = Request::get("/who").body(empty()).unwrap();
    for (n, v) in FORGED {
        req.headers_mut().append(n, v.parse().unwrap());
    }
    assert_eq!(send(Client::H1, p.addr("fe"), req, None).await.status, 200);
    let seen = origin.last().headers;
    let all = |n: &str| seen.get_all(n).iter().collect::<Vec<_>>();
    assert_eq!(all("x-forwarded-for"), ["6.6.6.6, 127.0.0.1"]);
    assert_eq!(all("x-forwarded-proto"), ["https"]);
    assert_eq!(all("forwarded"), ["for=6.6.6.6;proto=https", "for=7.7.7.7"]);
    assert_eq!(all("x-forwarded-host"), ["admin.internal"]);
    assert_eq!(all("x-real-ip"), ["6.6.6.6"]);
    let live = p.handle().snapshot().frontends[0].live.clone();
    assert_eq!(
        live.removed_forwarding
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_names_with_underscores_follow_headers_with_underscores() {
    let origin = Origin::start("o", |_| text(200, "ok")).await;
    let sent = [
        ("content_length", "5"),
        ("transfer_encoding", "chunked"),
        ("x_forwarded_for", "6.6.6.6"),
        ("x_custom_thing", "kept"),
    ];
    for (setting, want, removed) in [
        // The default: only names that fold into framing or forwarding headers go.
        ("", vec!["x_custom_thing"], 6),
        (
            "    headers_with_underscores: allow\n",
            sent.iter().map(|s| s.0).collect(),
            0,
        ),
        ("    headers_with_underscores: drop\n", vec![], 8),
    ] {
        let p = Proxy::start(&format!(
            "frontends:\n  fe:\n    bind: \"127.0.0.1:0\"\n{setting}    default_backend: be\nbackends: {{ be: {{ servers: {{ s: {{ address: \"{}\" }} }} }} }}\n",
            origin.addr
        ));
        for mode in [Client::H1, Client::H2c] {
            let mut req = Request::get("/u").body(empty()).unwrap();
            for (n, v) in sent {
                req.headers_mut().append(n, v.parse().unwrap());
            }
            assert_eq!(send(mode, p.addr("fe"), req, None).await.status, 200);
            let seen = origin.last().headers;
            let got: Vec<&str> = sent
                .iter()
                .map(|s| s.0)
                .filter(|n| seen.contains_key(*n))
                .collect();
            assert_eq!(got, want, "{setting:?} {mode:?}");
        }
        let live = p.handle().snapshot().frontends[0].live.clone();
        let n = live
            .removed_underscore
            .load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(n, removed, "{setting:?}: fields removed, for two requests");
        p.stop().await;
    }
    let p = Proxy::start(&format!(
        "frontends:\n  fe:\n    bind: \"127.0.0.1:0\"\n    headers_with_underscores: reject\n    default_backend: be\nbackends: {{ be: {{ servers: {{ s: {{ address: \"{}\" }} }} }} }}\n",
        origin.addr
    ));
    let before = origin.count();
    for mode in [Client::H1, Client::H2c] {
        let req = Request::get("/u")
            .header("x_custom_thing", "x")
            .body(empty())
            .unwrap();
        assert_eq!(
            send(mode, p.addr("fe"), req, None).await.status,
            400,
            "{mode:?}"
        );
    }
    assert_eq!(
        origin.count(),
        before,
        "a refused request reached the origin"
    );
    let live = p.handle().snapshot().frontends[0].live.clone();
    let refused = live
        .refused
        .get(rampart_proxy::state::Refusal::UnderscoreHeader);
    assert_eq!(refused, 2);
    let errors = p.handle().snapshot().frontends[0]
        .live
        .errors
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(errors, 2);
    p.stop().await;
}

/// A body of known length is written with `MSG_MORE` while more of it is to come, so the
/// kernel may hold back a part smaller than a segment. A server that pauses in the middle
/// of its body must not leave that part held back: the client gets the first half while
/// the server still waits for it to arrive (over plain HTTP/1.1 and over TLS).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_the_server_pauses_in_reaches_the_client_up_to_the_pause() {
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
    const HALF: usize = 20_000;
    let body: Vec<u8> = (0..2 * HALF).map(|i| (i % 251) as u8).collect();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = listener.local_addr().unwrap();
    // Each request's second half waits for the word that the client has the first.
    let (go_tx, go_rx) = tokio::sync::mpsc::channel::<()>(1);
    let go_rx = std::sync::Arc::new(tokio::sync::Mutex::new(go_rx));
    let served = body.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let (body, go) = (served.clone(), go_rx.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    head.clear();
                    let mut out =
                        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len())
                            .into_bytes();
                    out.extend_from_slice(&body[..HALF]);
                    s.write_all(&out).await.unwrap();
                    if go.lock().await.recv().await.is_none() {
                        return;
                    }
                    s.write_all(&body[HALF..]).await.unwrap();
                }
            });
        }
    });
    let (proxy, pki) = plain_and_tls_proxy(origin);

    /// Reads until `have` holds a head and `want` body bytes (at most 30 s: far past the
    /// kernel's hold of at most about 200 ms, so only a part held for good fails).
    async fn read_body_to<S: AsyncRead + Unpin>(
        s: &mut S,
        have: &mut Vec<u8>,
        want: usize,
    ) -> usize {
        let read = async {
            let mut buf = vec![0u8; 65536];
            loop {
                if let Some(end) = have.windows(4).position(|w| w == b"\r\n\r\n")
                    && have.len() - (end + 4) >= want
                {
                    return end + 4;
                }
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0, "closed after {} bytes", have.len());
                have.extend_from_slice(&buf[..n]);
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(30), read)
            .await
            .unwrap_or_else(|_| panic!("only {} bytes of the response arrived", have.len()))
    }

    async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
        mut s: S,
        go: &tokio::sync::mpsc::Sender<()>,
        body: &[u8],
    ) {
        s.write_all(b"GET /paused HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        let start = read_body_to(&mut s, &mut got, HALF).await;
        assert!(
            got.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&got)
        );
        assert_eq!(&got[start..start + HALF], &body[..HALF]);
        go.send(()).await.unwrap();
        read_body_to(&mut s, &mut got, body.len()).await;
        assert_eq!(&got[start..], body);
    }

    let plain = tokio::net::TcpStream::connect(proxy.bound(0))
        .await
        .unwrap();
    exchange(plain, &go_tx, &body).await;
    let cfg = tls_client(&pki.ca_pem, &[b"http/1.1"]);
    let tls = tls_connect(proxy.bound(1), cfg, "localhost").await;
    exchange(tls, &go_tx, &body).await;
    proxy.stop().await;
}
