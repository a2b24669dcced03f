//! Mode tcp: connections relayed as bytes, with half-close, content inspection, routing of
//! TLS passthrough by the ClientHello's server name, retries, persistence, timeouts and the
//! tcplog line, through the proxy with real clients and servers.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

const WAIT: Duration = Duration::from_secs(20);

/// A server that reads its client to the end, then answers `<tag>:<bytes read>:` followed
/// by what it read, and closes.
async fn drain_server(tag: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut got = Vec::new();
                if s.read_to_end(&mut got).await.is_err() {
                    return;
                }
                let mut out = format!("{tag}:{}:", got.len()).into_bytes();
                out.extend_from_slice(&got);
                let _ = s.write_all(&out).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// Sends `data`, closes the sending side, and reads the answer to its end.
async fn exchange(addr: SocketAddr, data: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(data).await.unwrap();
    s.shutdown().await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut out)).await;
    out
}

fn log_lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

async fn wait_lines(path: &std::path::Path, n: usize) -> Vec<String> {
    eventually(WAIT, || log_lines(path).len() >= n).await;
    log_lines(path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_are_relayed_both_ways_with_half_close_and_logged_as_tcplog() {
    let server = drain_server("s1").await;
    let dir = temp_dir("tcp-relay");
    let log = dir.join("access.log");
    let yaml = format!(
        r#"
frontends:
  fe:
    mode: tcp
    bind: "127.0.0.1:0"
    access_log: {{ to: "{}" }}
    default_backend: be
backends:
  be:
    mode: tcp
    servers: {{ s1: {{ address: "{server}" }} }}
"#,
        log.display()
    );
    let p = Proxy::start(&yaml);
    let addr = p.addr("fe");
    // 1 MiB of bytes no HTTP parser would take: the server sees them all, and its answer
    // comes back after the client finished sending (a half-closed connection).
    let data: Vec<u8> = (0..1u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
    let out = exchange(addr, &data).await;
    let head = format!("s1:{}:", data.len());
    assert!(
        out.starts_with(head.as_bytes()),
        "{:?}",
        &out[..out.len().min(40)]
    );
    assert_eq!(&out[head.len()..], &data[..]);
    let lines = wait_lines(&log, 1).await;
    // %ci:%cp [%t] %ft %b/%s %Tw/%Tc/%Tt %B %ts %ac/%fc/%bc/%sc/%rc %sq/%bq
    let f: Vec<&str> = lines[0].split(' ').collect();
    assert_eq!(f.len(), 9, "{}", lines[0]);
    assert!(f[0].starts_with("127.0.0.1:"), "{}", lines[0]);
    assert!(f[1].starts_with('[') && f[1].ends_with(']'), "{}", lines[0]);
    assert_eq!(&f[2..4], &["fe", "be/s1"], "{}", lines[0]);
    assert_eq!(f[4].split('/').count(), 3, "{}", lines[0]);
    assert_eq!(f[5], out.len().to_string(), "{}", lines[0]);
    assert_eq!(f[6], "--", "{}", lines[0]);
    assert_eq!(f[8], "0/0", "{}", lines[0]);
    // Counted as a session of the backend and server, with bytes both ways.
    let snap = p.handle().snapshot();
    let be = snap.backends.iter().find(|b| &*b.name == "be").unwrap();
    assert_eq!(be.live.requests.load(Relaxed), 1);
    assert_eq!(be.live.bytes_in.load(Relaxed), data.len() as u64);
    assert_eq!(be.live.bytes_out.load(Relaxed), out.len() as u64);
    assert_eq!(be.servers[0].live.requests.load(Relaxed), 1);
    let fe = snap.frontends.iter().find(|f| &*f.name == "fe").unwrap();
    assert_eq!(fe.live.bytes_in.load(Relaxed), data.len() as u64);
    // `show stat` says so, in its mode column.
    let (_ctx, _tasks) = serve_api(
        &p,
        &format!("admin: {{ socket: {{ path: run/api.sock }} }}\n{yaml}"),
    )
    .await;
    let mut s = tokio::net::UnixStream::connect(p.dir.join("run/api.sock"))
        .await
        .unwrap();
    s.write_all(b"show stat\n").await.unwrap();
    let mut csv = String::new();
    tokio::time::timeout(WAIT, s.read_to_string(&mut csv))
        .await
        .unwrap()
        .unwrap();
    let cols: Vec<&str> = csv
        .lines()
        .next()
        .unwrap()
        .trim_start_matches("# ")
        .split(',')
        .collect();
    let col = |row: &str, name: &str| -> String {
        let i = cols.iter().position(|c| *c == name).unwrap();
        row.split(',').nth(i).unwrap_or("").to_owned()
    };
    let row = |px: &str, sv: &str| -> String {
        csv.lines()
            .find(|l| l.starts_with(&format!("{px},{sv},")))
            .unwrap_or_else(|| panic!("no row {px}/{sv} in {csv}"))
            .to_owned()
    };
    for (px, sv) in [("fe", "FRONTEND"), ("be", "BACKEND"), ("be", "s1")] {
        assert_eq!(col(&row(px, sv), "mode"), "tcp", "{px}/{sv}");
    }
    assert_eq!(col(&row("be", "BACKEND"), "stot"), "1");
    assert_eq!(col(&row("be", "BACKEND"), "bin"), data.len().to_string());
    assert_eq!(col(&row("be", "s1"), "bout"), out.len().to_string());
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_ends_the_session_and_a_refused_connect_is_retried_elsewhere() {
    // A server that reads a little, then resets its connection.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let killer = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let mut b = [0u8; 5];
            let _ = s.read_exact(&mut b).await;
            let _ = s.set_zero_linger();
            drop(s);
        }
    });
    let good = drain_server("good").await;
    let dead = format!("127.0.0.1:{}", free_port());
    let dir = temp_dir("tcp-kill");
    let log = dir.join("access.log");
    let p = Proxy::start(&format!(
        r#"
frontends:
  killed:
    mode: tcp
    bind: "127.0.0.1:0"
    access_log: {{ to: "{log}" }}
    default_backend: killer
  retried:
    mode: tcp
    bind: "127.0.0.1:0"
    access_log: {{ to: "{log}" }}
    default_backend: two
backends:
  killer:
    mode: tcp
    servers: {{ k: {{ address: "{killer}" }} }}
  two:
    mode: tcp
    retries: {{ attempts: 1 }}
    servers:
      dead: {{ address: "{dead}", weight: 100 }}
      good: {{ address: "{good}" }}
"#,
        log = log.display()
    ));
    let mut s = TcpStream::connect(p.addr("killed")).await.unwrap();
    s.write_all(b"hello, and more").await.unwrap();
    let mut out = Vec::new();
    let r = tokio::time::timeout(WAIT, s.read_to_end(&mut out)).await;
    assert!(r.is_ok(), "the session ends when its server goes");
    assert!(out.is_empty());
    let lines = wait_lines(&log, 1).await;
    assert!(
        lines[0].contains(" killer/k ") && lines[0].contains(" SD "),
        "{}",
        lines[0]
    );
    // Both connections land on the live server, one of them after a refused connect.
    for _ in 0..2 {
        let out = exchange(p.addr("retried"), b"abc").await;
        assert_eq!(out, b"good:3:abc");
    }
    let lines = wait_lines(&log, 3).await;
    let retried: Vec<&String> = lines.iter().filter(|l| l.contains(" two/")).collect();
    assert!(
        retried.iter().all(|l| l.contains(" two/good ")),
        "{retried:?}"
    );
    // %rc is the last number of the counters field.
    assert!(
        retried
            .iter()
            .any(|l| l.split(' ').nth(7).is_some_and(|c| c.ends_with("/1"))),
        "one of them was retried: {retried:?}"
    );
    let snap = p.handle().snapshot();
    let be = snap.backends.iter().find(|b| &*b.name == "two").unwrap();
    assert!(be.servers[0].live.errors_conn.load(Relaxed) >= 1);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_passthrough_is_routed_by_the_client_hello_server_name() {
    let pki = Pki::new();
    let (ca, ka) = pki.issue("a", &["a.example"], false);
    let (cb, kb) = pki.issue("b", &["b.example"], false);
    let (a, _) = tls_origin(&ca, &ka, |_| text(200, "from a")).await;
    let (b, _) = tls_origin(&cb, &kb, |_| text(200, "from b")).await;
    let other = drain_server("other").await;
    let p = Proxy::start(&format!(
        r#"
frontends:
  edge:
    mode: tcp
    bind: "127.0.0.1:0"
    tcp_request:
      inspect_delay: 5s
      content:
        - "accept if {{ req.ssl_hello_type 1 }}"
    use_backend:
      - {{ backend: a, if: "{{ req.ssl_sni -i a.example }}" }}
      - {{ backend: b, if: "{{ req.ssl_sni -m end .b.example }} or {{ req.ssl_sni b.example }}" }}
    default_backend: other
backends:
  a: {{ mode: tcp, servers: {{ a: {{ address: "{a}" }} }} }}
  b: {{ mode: tcp, servers: {{ b: {{ address: "{b}" }} }} }}
  other: {{ mode: tcp, servers: {{ o: {{ address: "{other}" }} }} }}
"#
    ));
    let addr = p.addr("edge");
    let cfg = tls_client(&pki.ca_pem, &[b"http/1.1"]);
    // The certificate each server presents is checked by the client: TLS ends at the
    // servers, not at the proxy.
    for (sni, want) in [
        ("a.example", "from a"),
        ("b.example", "from b"),
        ("A.EXAMPLE", "from a"),
    ] {
        let tls = tls_connect(addr, cfg.clone(), sni).await;
        assert_eq!(h1_gets(tls, sni, 2).await, vec![want, want], "{sni}");
    }
    // A ClientHello sent in pieces is waited for, then routed.
    let hello = {
        let server = rustls_pki_types::ServerName::try_from("b.example").unwrap();
        let mut c = rustls::ClientConnection::new(cfg.clone(), server).unwrap();
        let mut out = Vec::new();
        c.write_tls(&mut out).unwrap();
        out
    };
    let mut s = TcpStream::connect(addr).await.unwrap();
    for piece in hello.chunks(hello.len() / 3 + 1) {
        s.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut first = [0u8; 5];
    tokio::time::timeout(WAIT, s.read_exact(&mut first))
        .await
        .expect("an answer")
        .unwrap();
    assert_eq!(first[0], 22, "a TLS handshake record from server b");
    // Bytes that are not TLS go to the default backend once the client has sent them all.
    assert_eq!(exchange(addr, b"plain").await, b"other:5:plain");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_rules_reject_track_and_persistence_sticks_a_client_to_its_server() {
    let s1 = drain_server("s1").await;
    let s2 = drain_server("s2").await;
    let dir = temp_dir("tcp-rules");
    let log = dir.join("access.log");
    let p = Proxy::start(&format!(
        r#"
stick_tables:
  clients: {{ type: ip, size: 100, expire: 1m, store: [server_id, conn_cnt] }}
frontends:
  fe:
    mode: tcp
    bind: "127.0.0.1:0"
    access_log: {{ to: "{}", format: json }}
    tcp_request:
      inspect_delay: 2s
      content:
        - "track-sc0 src table clients"
        - "accept if {{ req.len ge 4 }}"
        - "reject"
    default_backend: be
backends:
  be:
    mode: tcp
    balance: roundrobin
    stick: ["on src table clients"]
    servers:
      s1: {{ address: "{s1}" }}
      s2: {{ address: "{s2}" }}
"#,
        log.display()
    ));
    let addr = p.addr("fe");
    // Too short once the client has finished sending: refused, never relayed.
    assert!(exchange(addr, b"ab").await.is_empty());
    // The same client sticks to the server it got first.
    let mut tags = Vec::new();
    for _ in 0..4 {
        let out = exchange(addr, b"long enough").await;
        tags.push(String::from_utf8_lossy(&out[..2]).into_owned());
    }
    assert!(tags.iter().all(|t| *t == tags[0]), "{tags:?}");
    let lines = wait_lines(&log, 5).await;
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\"termination\":\"PR\"") && l.contains("\"mode\":\"tcp\"")),
        "{lines:?}"
    );
    let snap = p.handle().snapshot();
    let fe = snap.frontends.iter().find(|f| &*f.name == "fe").unwrap();
    assert_eq!(fe.live.denied_conns.load(Relaxed), 1);
    let t = snap.tables.iter().find(|t| &*t.name == "clients").unwrap();
    let key = t.parse_key("127.0.0.1").unwrap();
    assert_eq!(
        t.get(&key, rampart_config::stick::DataKind::ConnCnt),
        Some(5),
        "each connection tracked once, while its content was waited for"
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_is_cut_by_the_tunnel_timeout() {
    // A server that never answers and never closes.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent = l.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    let dir = temp_dir("tcp-idle");
    let log = dir.join("access.log");
    let p = Proxy::start(&format!(
        r#"
frontends:
  fe:
    mode: tcp
    bind: "127.0.0.1:0"
    access_log: {{ to: "{}" }}
    default_backend: be
backends:
  be:
    mode: tcp
    timeouts: {{ tunnel: 300ms }}
    servers: {{ s: {{ address: "{silent}" }} }}
"#,
        log.display()
    ));
    let mut s = TcpStream::connect(p.addr("fe")).await.unwrap();
    s.write_all(b"anyone?").await.unwrap();
    let mut out = Vec::new();
    let r = tokio::time::timeout(WAIT, s.read_to_end(&mut out)).await;
    assert!(r.is_ok(), "the idle session is closed");
    let lines = wait_lines(&log, 1).await;
    assert!(lines[0].contains(" cD "), "{}", lines[0]);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_proxy_from_mode_tcp_gives_the_server_the_client_address_first() {
    let server = drain_server("pp").await;
    let p = Proxy::start(&format!(
        r#"
frontends:
  fe: {{ mode: tcp, bind: "127.0.0.1:0", default_backend: be }}
backends:
  be:
    mode: tcp
    servers: {{ s: {{ address: "{server}", send_proxy: true }} }}
"#
    ));
    let addr = p.addr("fe");
    let mut s = TcpStream::connect(addr).await.unwrap();
    let me = s.local_addr().unwrap();
    s.write_all(b"data").await.unwrap();
    s.shutdown().await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let header = format!(
        "PROXY TCP4 127.0.0.1 127.0.0.1 {} {}\r\n",
        me.port(),
        addr.port()
    );
    let want = format!("pp:{}:{header}data", header.len() + 4);
    assert_eq!(String::from_utf8_lossy(&out), want);
    p.stop().await;
}
