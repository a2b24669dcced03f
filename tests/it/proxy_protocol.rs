//! The PROXY protocol: headers taken on binds (`accept_proxy`) and sent to servers
//! (`send_proxy`, `send_proxy_v2`), through the proxy with real clients and servers.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rampart_proxy::state::Refusal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

const V2_SIG: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// A version 2 header written by hand (not by the code under test): PROXY over TCP
/// from `src` to `dst`, with the given TLVs.
fn v2(src: SocketAddr, dst: SocketAddr, tlvs: &[(u8, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    let fam = match (src, dst) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            body.extend_from_slice(&s.ip().octets());
            body.extend_from_slice(&d.ip().octets());
            0x11
        }
        (SocketAddr::V6(s), SocketAddr::V6(d)) => {
            body.extend_from_slice(&s.ip().octets());
            body.extend_from_slice(&d.ip().octets());
            0x21
        }
        _ => panic!("mixed families"),
    };
    body.extend_from_slice(&src.port().to_be_bytes());
    body.extend_from_slice(&dst.port().to_be_bytes());
    for (t, v) in tlvs {
        body.push(*t);
        body.extend_from_slice(&(v.len() as u16).to_be_bytes());
        body.extend_from_slice(v);
    }
    let mut h = V2_SIG.to_vec();
    h.extend_from_slice(&[0x21, fam]);
    h.extend_from_slice(&(body.len() as u16).to_be_bytes());
    h.extend_from_slice(&body);
    h
}

/// Sends `pre` then one HTTP/1.1 request on a new connection; the whole answer (empty
/// when the proxy closed without one).
async fn request_after(addr: SocketAddr, pre: &[u8], path: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut data = pre.to_vec();
    data.extend_from_slice(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    s.write_all(&data).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn body_of(resp: &str) -> &str {
    resp.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_proxy_v1_and_v2_give_the_client_address_to_rules_logs_and_servers() {
    let origin = Origin::named("o").await;
    let dir = temp_dir("pp-log");
    let log = dir.join("access.log");
    let p = Proxy::start(&format!(
        r#"
frontends:
  fe:
    bind: {{ address: "127.0.0.1:0", accept_proxy: true }}
    access_log: {{ to: "{}", format: httplog }}
    http_request:
      - "return status 200 lf-string %[src]:%[src_port]>%[dst]:%[dst_port] if {{ path /who }}"
      - "return status 200 lf-string %[fc_pp_authority]|%[fc_pp_unique_id]|%[fc_pp_tlv(0xEA)] if {{ path /tlv }}"
    default_backend: be
backends: {{ be: {{ servers: {{ web1: {{ address: "{}" }} }} }} }}
"#,
        log.display(),
        origin.addr
    ));
    let a = p.addr("fe");
    // Version 1, IPv4.
    let r = request_after(
        a,
        b"PROXY TCP4 203.0.113.7 198.51.100.1 4444 80\r\n",
        "/who",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert_eq!(body_of(&r), "203.0.113.7:4444>198.51.100.1:80");
    // Version 2, IPv6, with a TLV the proxy does not use.
    let h = v2(
        "[2001:db8::5]:5555".parse().unwrap(),
        "[2001:db8::1]:443".parse().unwrap(),
        &[(0xE0, b"custom")],
    );
    let r = request_after(a, &h, "/who").await;
    assert_eq!(body_of(&r), "2001:db8::5:5555>2001:db8::1:443");
    // Its TLVs, as fetches.
    let h = v2(
        "192.0.2.8:8".parse().unwrap(),
        "198.51.100.1:443".parse().unwrap(),
        &[
            (0x02, b"shop.example"),
            (0x05, b"req-77"),
            (0xEA, b"\x01vpce-1234"),
        ],
    );
    let r = request_after(a, &h, "/tlv").await;
    assert_eq!(body_of(&r), "shop.example|req-77|\x01vpce-1234");
    // A LOCAL header (a load balancer's own check) keeps the connection's addresses.
    let mut local = V2_SIG.to_vec();
    local.extend_from_slice(&[0x20, 0x00, 0, 0]);
    let r = request_after(a, &local, "/who").await;
    assert!(body_of(&r).starts_with("127.0.0.1:"), "{r}");
    // The server sees the client in X-Forwarded-For; the log line has it too.
    let r = request_after(
        a,
        b"PROXY TCP4 203.0.113.9 198.51.100.1 4445 80\r\n",
        "/page",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert_eq!(
        origin.last().headers.get("x-forwarded-for").unwrap(),
        "203.0.113.9"
    );
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(eventually(Duration::from_secs(5), || read().contains("/page")).await);
    let line = read()
        .lines()
        .find(|l| l.contains("/page"))
        .unwrap()
        .to_owned();
    assert!(line.contains("203.0.113.9:4445 ["), "{line}");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_proxy_before_tls_and_its_sni_and_alpn() {
    let pki = Pki::new();
    let (c, k) = pki.issue("site", &["www.example.com"], false);
    let p = Proxy::start(&format!(
        r#"
frontends:
  fe:
    bind:
      - {{ address: "127.0.0.1:0", accept_proxy: true, tls: {{ certificates: [{{ cert: "{}", key: "{}" }}] }} }}
    http_request: ["return status 200 lf-string %[src]/%[ssl_fc_sni]"]
"#,
        c.display(),
        k.display()
    ));
    let mut tcp = TcpStream::connect(p.addr("fe")).await.unwrap();
    tcp.write_all(b"PROXY TCP4 192.0.2.44 198.51.100.1 1000 443\r\n")
        .await
        .unwrap();
    let tls = tokio_rustls::TlsConnector::from(tls_client(&pki.ca_pem, &[b"http/1.1"]))
        .connect(
            rustls_pki_types::ServerName::try_from("www.example.com").unwrap(),
            tcp,
        )
        .await
        .expect("TLS after the PROXY header");
    let body = h1_gets(tls, "www.example.com", 1).await;
    assert_eq!(body, ["192.0.2.44/www.example.com"]);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_missing_and_untrusted_proxy_headers_are_refused_and_counted() {
    let origin = Origin::named("o").await;
    let p = Proxy::start(&format!(
        r#"
frontends:
  all:
    bind: {{ address: "127.0.0.1:0", accept_proxy: true }}
    default_backend: be
  some:
    bind: {{ address: "127.0.0.1:0", accept_proxy: {{ from: ["192.0.2.0/24", "2001:db8::/32"] }} }}
    default_backend: be
backends: {{ be: {{ servers: {{ web1: {{ address: "{}" }} }} }} }}
"#,
        origin.addr
    ));
    let all = p.addr("all");
    let refused = [
        // No header at all.
        &b""[..],
        // Not a header.
        b"PROXY TCP4 not-an-address 198.51.100.1 1 2\r\n",
        b"PROXY TCP5 192.0.2.1 198.51.100.1 1 2\r\n",
        // A v2 header with an unknown command.
        b"\r\n\r\n\0\r\nQUIT\n\x2f\x11\x00\x0c\0\0\0\0\0\0\0\0\0\0\0\0",
    ];
    for pre in refused {
        let r = request_after(all, pre, "/").await;
        assert_eq!(r, "", "answered after {:?}", String::from_utf8_lossy(pre));
    }
    // A header cut short by the client closing.
    let mut s = TcpStream::connect(all).await.unwrap();
    s.write_all(b"PROXY TCP4 192.0.2.1 19").await.unwrap();
    s.shutdown().await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out)).await;
    assert!(out.is_empty());
    let fe = |name: &str| {
        p.handle()
            .snapshot()
            .frontends
            .iter()
            .find(|f| &*f.name == name)
            .unwrap()
            .live
            .clone()
    };
    let live = fe("all");
    assert!(
        eventually(Duration::from_secs(5), || live
            .refused
            .get(Refusal::ProxyHeader)
            == 5)
        .await,
        "refusals counted: {}",
        live.refused.get(Refusal::ProxyHeader)
    );
    assert_eq!(live.errors.load(std::sync::atomic::Ordering::Relaxed), 5);
    // None reached the server, and a good header still works.
    assert_eq!(origin.count(), 0);
    let r = request_after(all, b"PROXY TCP4 192.0.2.1 198.51.100.1 1 2\r\n", "/").await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");

    // From a source outside accept_proxy.from (127.0.0.1), a plain request is served and
    // a header is refused.
    let some = p.addr("some");
    let r = request_after(some, b"", "/").await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let r = request_after(some, b"PROXY TCP4 192.0.2.1 198.51.100.1 1 2\r\n", "/").await;
    assert_eq!(r, "");
    let r = request_after(
        some,
        &v2(
            "192.0.2.1:1".parse().unwrap(),
            "198.51.100.1:2".parse().unwrap(),
            &[],
        ),
        "/",
    )
    .await;
    assert_eq!(r, "");
    let live = fe("some");
    assert!(
        eventually(Duration::from_secs(5), || live
            .refused
            .get(Refusal::ProxyHeader)
            == 2)
        .await
    );
    assert_eq!(origin.count(), 2);
    p.stop().await;
}

/// What a server that takes PROXY headers saw on one connection.
#[derive(Debug, Clone)]
struct UpConn {
    header: Vec<u8>,
    requests: usize,
}

/// An HTTP/1.1 server that reads a PROXY header (v1 or v2, parsed here by hand) at the
/// start of each connection and answers `200 conn=<n>` to every request.
struct PpOrigin {
    addr: SocketAddr,
    conns: Arc<Mutex<Vec<UpConn>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PpOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn read_header(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut first = [0u8; 16];
    s.read_exact(&mut first[..6]).await.ok()?;
    if &first[..6] == b"PROXY " {
        let mut h = first[..6].to_vec();
        while !h.ends_with(b"\r\n") && h.len() < 107 {
            let mut b = [0u8; 1];
            s.read_exact(&mut b).await.ok()?;
            h.push(b[0]);
        }
        return Some(h);
    }
    s.read_exact(&mut first[6..]).await.ok()?;
    assert_eq!(&first[..12], V2_SIG, "no PROXY header");
    let len = usize::from(u16::from_be_bytes([first[14], first[15]]));
    let mut h = first.to_vec();
    h.resize(16 + len, 0);
    s.read_exact(&mut h[16..]).await.ok()?;
    Some(h)
}

impl PpOrigin {
    async fn start() -> Self {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let conns: Arc<Mutex<Vec<UpConn>>> = Arc::default();
        let c = conns.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let c = c.clone();
                tokio::spawn(async move {
                    let Some(header) = read_header(&mut s).await else {
                        return;
                    };
                    let n = {
                        let mut v = c.lock().unwrap();
                        v.push(UpConn {
                            header,
                            requests: 0,
                        });
                        v.len() - 1
                    };
                    let mut buf = Vec::new();
                    loop {
                        let mut chunk = [0u8; 4096];
                        let Ok(k) = s.read(&mut chunk).await else {
                            return;
                        };
                        if k == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..k]);
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..end + 4);
                            c.lock().unwrap()[n].requests += 1;
                            let body = format!("conn={n}");
                            let resp = format!(
                                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                                body.len()
                            );
                            if s.write_all(resp.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        Self { addr, conns, task }
    }

    fn conns(&self) -> Vec<UpConn> {
        self.conns.lock().unwrap().clone()
    }
}

/// Keep-alive requests on one client connection that begins with `pre`; the bodies.
async fn keepalive_after(addr: SocketAddr, pre: &[u8], n: usize) -> Vec<String> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(pre).await.unwrap();
    h1_gets(s, "x", n).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_proxy_v1_gives_each_client_its_own_server_connections() {
    let server = PpOrigin::start().await;
    let p = Proxy::start(&format!(
        r#"
frontends:
  fe:
    bind: {{ address: "127.0.0.1:0", accept_proxy: true }}
    default_backend: be
backends: {{ be: {{ servers: {{ web1: {{ address: "{}", send_proxy: true }} }} }} }}
"#,
        server.addr
    ));
    let a = p.addr("fe");
    let one = keepalive_after(a, b"PROXY TCP4 203.0.113.1 198.51.100.1 1111 80\r\n", 3).await;
    let two = keepalive_after(a, b"PROXY TCP6 2001:db8::2 2001:db8::1 2222 80\r\n", 3).await;
    let again = keepalive_after(a, b"PROXY TCP4 203.0.113.1 198.51.100.1 1111 80\r\n", 1).await;
    // Each client connection has its own server connection, reused for its requests
    // only: the second client did not get the first one's.
    assert!(one.iter().all(|b| *b == one[0]), "{one:?}");
    assert!(two.iter().all(|b| *b == two[0]), "{two:?}");
    assert_ne!(one[0], two[0]);
    assert_ne!(again[0], one[0]);
    let conns = server.conns();
    assert_eq!(conns.len(), 3, "{conns:?}");
    let header = |b: &str| {
        let n: usize = b.trim_start_matches("conn=").parse().unwrap();
        String::from_utf8(conns[n].header.clone()).unwrap()
    };
    assert_eq!(
        header(&one[0]),
        "PROXY TCP4 203.0.113.1 198.51.100.1 1111 80\r\n"
    );
    assert_eq!(
        header(&two[0]),
        "PROXY TCP6 2001:db8::2 2001:db8::1 2222 80\r\n"
    );
    assert_eq!(conns.iter().map(|c| c.requests).sum::<usize>(), 7);
    p.stop().await;
}

/// The TLVs of a version 2 header, parsed by hand.
fn tlvs(h: &[u8], addr_len: usize) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut t = &h[16 + addr_len..];
    while t.len() >= 3 {
        let n = usize::from(u16::from_be_bytes([t[1], t[2]]));
        out.push((t[0], t[3..3 + n].to_vec()));
        t = &t[3 + n..];
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_proxy_v2_carries_alpn_authority_and_a_checksum_from_tls_clients() {
    let server = PpOrigin::start().await;
    let pki = Pki::new();
    let (c, k) = pki.issue("site", &["www.example.com"], false);
    let p = Proxy::start(&format!(
        r#"
frontends:
  fe:
    bind:
      - {{ address: "127.0.0.1:0", tls: {{ certificates: [{{ cert: "{}", key: "{}" }}] }} }}
    default_backend: be
backends:
  be:
    servers:
      web1: {{ address: "{}", send_proxy_v2: true, proxy_v2_options: [authority, crc32c] }}
"#,
        c.display(),
        k.display(),
        server.addr
    ));
    let a = p.addr("fe");
    let got = send(
        Client::TlsH1,
        a,
        http::Request::get("/").body(empty()).unwrap(),
        Some((&pki.ca_pem, "www.example.com")),
    )
    .await;
    assert_eq!(got.status, 200);
    let conns = server.conns();
    assert_eq!(conns.len(), 1);
    let h = &conns[0].header;
    assert_eq!(&h[..12], V2_SIG);
    assert_eq!(h[12], 0x21, "version 2, PROXY command");
    assert_eq!(h[13], 0x11, "TCP over IPv4");
    assert_eq!(&h[16..20], &[127, 0, 0, 1], "client address");
    assert_eq!(&h[20..24], &[127, 0, 0, 1], "address it connected to");
    assert_eq!(u16::from_be_bytes([h[26], h[27]]), a.port());
    let t = tlvs(h, 12);
    assert_eq!(t[0], (0x01, b"http/1.1".to_vec()), "ALPN: {t:?}");
    assert_eq!(
        t[1],
        (0x02, b"www.example.com".to_vec()),
        "authority: {t:?}"
    );
    assert_eq!(t[2].0, 0x03, "CRC32C last: {t:?}");
    // The checksum, computed here bit by bit over the header with its field zeroed.
    let mut zeroed = h.clone();
    let at = h.len() - 4;
    zeroed[at..].fill(0);
    let mut crc = !0u32;
    for b in zeroed {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    assert_eq!(u32::from_be_bytes(h[at..].try_into().unwrap()), !crc);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_of_a_send_proxy_server_begin_with_unknown_or_local() {
    let v1 = PpOrigin::start().await;
    let v2s = PpOrigin::start().await;
    let p = Proxy::start(&format!(
        r#"
frontends: {{ fe: {{ bind: "127.0.0.1:0", default_backend: be }} }}
backends:
  be:
    health_check: {{ http: {{ path: /health }}, interval: 100ms }}
    servers:
      a: {{ address: "{}", send_proxy: true }}
      b: {{ address: "{}", send_proxy_v2: true }}
"#,
        v1.addr, v2s.addr
    ));
    assert!(
        eventually(Duration::from_secs(10), || v1
            .conns()
            .iter()
            .any(|c| c.requests > 0)
            && v2s.conns().iter().any(|c| c.requests > 0))
        .await
    );
    assert_eq!(v1.conns()[0].header, b"PROXY UNKNOWN\r\n");
    let h = &v2s.conns()[0].header;
    assert_eq!(h.len(), 16);
    assert_eq!(h[12], 0x20, "version 2, LOCAL command");
    // The checks pass: both servers take requests.
    assert_eq!(get(p.addr("fe"), "/").await.status, 200);
    assert_eq!(get(p.addr("fe"), "/").await.status, 200);
    p.stop().await;
}

/// HAProxy on both sides of rampart: in front, it sends rampart a version 2 header
/// (`send-proxy-v2`); behind, it takes rampart's (`accept-proxy`) and answers with the
/// client address it read. Each side reads what the other wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_reads_what_rampart_sends_and_rampart_reads_what_haproxy_sends() {
    let has = std::process::Command::new("haproxy")
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has {
        assert!(!required(), "haproxy is required");
        println!("skipped: haproxy is not installed");
        return;
    }
    let (front, behind) = (free_port(), free_port());
    let p = Proxy::start(&format!(
        r#"
frontends:
  fe:
    bind: {{ address: "127.0.0.1:0", accept_proxy: true }}
    http_request: ["return status 200 lf-string %[src]:%[src_port] if {{ path /who }}"]
    default_backend: be
backends:
  be:
    servers:
      h1: {{ address: "127.0.0.1:{behind}", send_proxy_v2: true, check: false }}
"#
    ));
    let rampart = p.addr("fe");
    let dir = temp_dir("pp-haproxy");
    let cfg = dir.join("haproxy.cfg");
    std::fs::write(
        &cfg,
        format!(
            "global\n  nbthread 1\n\
             defaults\n  mode http\n  timeout connect 5s\n  timeout client 20s\n  timeout server 20s\n\
             frontend front\n  bind 127.0.0.1:{front}\n  default_backend to_rampart\n\
             backend to_rampart\n  server r {rampart} send-proxy-v2\n\
             frontend behind\n  bind 127.0.0.1:{behind} accept-proxy\n  \
             http-request return status 200 content-type text/plain lf-string \"%[src]:%[src_port]\"\n"
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new("haproxy")
        .args(["-db", "-f"])
        .arg(&cfg)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let up = |port: u16| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
    let ready = eventually(Duration::from_secs(10), || up(front) && up(behind)).await;
    let result = async {
        assert!(ready, "haproxy did not start");
        // HAProxy in front: rampart sees the client's own port, not HAProxy's.
        let mut s = TcpStream::connect(("127.0.0.1", front)).await.unwrap();
        let port = s.local_addr().unwrap().port();
        s.write_all(b"GET /who HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out)).await;
        let out = String::from_utf8_lossy(&out).into_owned();
        assert_eq!(body_of(&out), format!("127.0.0.1:{port}"), "{out}");
        // HAProxy behind: it sees the client rampart was told about.
        let r = request_after(
            rampart,
            b"PROXY TCP4 203.0.113.5 198.51.100.1 4321 80\r\n",
            "/behind",
        )
        .await;
        assert_eq!(body_of(&r), "203.0.113.5:4321", "{r}");
    };
    let outcome = tokio::time::timeout(Duration::from_secs(60), result).await;
    let _ = child.kill();
    let _ = child.wait();
    outcome.expect("timed out");
    p.stop().await;
}
