//! Test support: origin servers that record what they receive, the proxy started
//! in-process on ephemeral ports, and clients over HTTP/1.1, h2c and TLS.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A body made of given frames (no length: HTTP/1.1 sends it chunked).
pub struct Frames(pub VecDeque<Frame<Bytes>>);

impl Frames {
    pub fn data(chunks: &[&[u8]], trailers: Option<HeaderMap>) -> Self {
        let mut q: VecDeque<Frame<Bytes>> = chunks
            .iter()
            .map(|c| Frame::data(Bytes::copy_from_slice(c)))
            .collect();
        if let Some(t) = trailers {
            q.push_back(Frame::trailers(t));
        }
        Frames(q)
    }
}

impl http_body::Body for Frames {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(Ok))
    }
    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }
}

pub type TestBody =
    http_body_util::combinators::UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

pub fn full(b: impl Into<Bytes>) -> TestBody {
    http_body_util::Full::new(b.into())
        .map_err(|e| match e {})
        .boxed_unsync()
}

pub fn empty() -> TestBody {
    full(Bytes::new())
}

pub fn frames(f: Frames) -> TestBody {
    f.map_err(|e| match e {}).boxed_unsync()
}

/// What an origin server received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: http::Method,
    pub uri: http::Uri,
    pub version: http::Version,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
    pub peer: SocketAddr,
}

type Handler = Arc<dyn Fn(&Seen) -> Response<TestBody> + Send + Sync>;

/// An origin server on 127.0.0.1:0 speaking HTTP/1.1 and h2c.
pub struct Origin {
    pub addr: SocketAddr,
    pub name: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
    killed: tokio::sync::watch::Sender<bool>,
}

impl Origin {
    /// Answers `200 <name>` to everything.
    pub async fn named(name: &str) -> Self {
        let n = name.to_owned();
        Self::start(name, move |_| text(200, &n)).await
    }

    pub async fn start(
        name: &str,
        f: impl Fn(&Seen) -> Response<TestBody> + Send + Sync + 'static,
    ) -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap(), name, f).await
    }

    pub async fn start_on(
        addr: SocketAddr,
        name: &str,
        f: impl Fn(&Seen) -> Response<TestBody> + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind(addr).await.expect("bind origin");
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let hits = Arc::new(AtomicUsize::new(0));
        let handler: Handler = Arc::new(f);
        let (s2, h2) = (seen.clone(), hits.clone());
        let (killed, kill_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, peer)) = listener.accept().await else {
                    continue;
                };
                let (seen, hits, handler) = (s2.clone(), h2.clone(), handler.clone());
                let mut kill_rx = kill_rx.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (seen, hits, handler) = (seen.clone(), hits.clone(), handler.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let collected = body.collect().await;
                            let (body, trailers) = match collected {
                                Ok(c) => {
                                    let t = c.trailers().cloned();
                                    (c.to_bytes(), t)
                                }
                                Err(_) => (Bytes::new(), None),
                            };
                            let s = Seen {
                                method: parts.method,
                                uri: parts.uri,
                                version: parts.version,
                                headers: parts.headers,
                                body,
                                trailers,
                                peer,
                            };
                            hits.fetch_add(1, Ordering::SeqCst);
                            let resp = handler(&s);
                            seen.lock().unwrap().push(s);
                            if let Some(Delay(d)) = resp.extensions().get::<Delay>() {
                                tokio::time::sleep(*d).await;
                            }
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), svc);
                    tokio::select! {
                        _ = conn => {}
                        _ = kill_rx.wait_for(|k| *k) => {}
                    }
                });
            }
        });
        Origin {
            addr,
            name: name.to_owned(),
            seen,
            hits,
            task,
            killed,
        }
    }

    /// Dies like a killed process: stops listening and drops every open connection,
    /// requests in flight included.
    pub fn kill(&self) {
        self.task.abort();
        let _ = self.killed.send(true);
    }

    pub fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the origin saw no request")
    }

    pub fn count(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Stops accepting and drops the listener (existing connections are left to die).
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Put in a response's extensions: the origin waits this long before answering.
#[derive(Clone, Copy)]
pub struct Delay(pub Duration);

/// A plain-text response sent after `d`.
pub fn delayed(d: Duration, status: u16, body: &str) -> Response<TestBody> {
    let mut r = text(status, body);
    r.extensions_mut().insert(Delay(d));
    r
}

/// A plain-text response.
pub fn text(status: u16, body: &str) -> Response<TestBody> {
    let mut r = Response::new(full(body.to_owned()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    r.headers_mut()
        .insert("content-type", "text/plain".parse().unwrap());
    r
}

/// The proxy running in this test process.
pub struct Proxy {
    pub handle: Option<rampart_proxy::ProxyHandle>,
    pub dir: PathBuf,
}

impl Proxy {
    /// Starts the proxy from YAML; relative files are read from `dir` (a temp dir).
    pub fn start(yaml: &str) -> Self {
        Self::start_in(yaml, temp_dir("proxy"))
    }

    pub fn start_in(yaml: &str, dir: PathBuf) -> Self {
        let cfg = rampart_config::load_str(yaml, Some(&dir), &rampart_config::yaml::ProcessEnv)
            .unwrap_or_else(|e| panic!("config errors:\n{e}\n---\n{yaml}"));
        let handle =
            rampart_proxy::start(cfg, &dir).unwrap_or_else(|e| panic!("start failed: {e}"));
        Proxy {
            handle: Some(handle),
            dir,
        }
    }

    /// Applies another configuration to the running proxy.
    pub fn reload(&self, yaml: &str) -> Result<rampart_proxy::runtime::ReloadReport, String> {
        let cfg =
            rampart_config::load_str(yaml, Some(&self.dir), &rampart_config::yaml::ProcessEnv)
                .map_err(|e| e.to_string())?;
        self.handle()
            .reload(cfg, &self.dir)
            .map_err(|e| e.to_string())
    }

    pub fn addr_opt(&self, frontend: &str) -> Option<SocketAddr> {
        self.handle.as_ref().unwrap().local_addr(frontend)
    }

    pub fn addr(&self, frontend: &str) -> SocketAddr {
        self.handle
            .as_ref()
            .unwrap()
            .local_addr(frontend)
            .expect("frontend bound")
    }

    /// The `n`th bound address (configuration order).
    pub fn bound(&self, n: usize) -> SocketAddr {
        self.handle.as_ref().unwrap().bound()[n].local
    }

    pub fn handle(&self) -> &rampart_proxy::ProxyHandle {
        self.handle.as_ref().unwrap()
    }

    pub async fn stop(mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown().await;
        }
    }
}

/// A fresh temporary directory. The first call removes those of earlier test runs whose
/// process is gone, so that runs do not pile up directories (a test's own are kept while
/// it runs, and after it for a look when it failed).
pub fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    static SWEEP: std::sync::Once = std::sync::Once::new();
    SWEEP.call_once(sweep_temp_dirs);
    let d = std::env::temp_dir().join(format!(
        "rampart-test-{}-{tag}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn sweep_temp_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("rampart-test-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// How a client talks to the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    H1,
    H2c,
    TlsH1,
    TlsH2,
}

impl Client {
    pub fn is_h2(self) -> bool {
        matches!(self, Client::H2c | Client::TlsH2)
    }
    pub fn is_tls(self) -> bool {
        matches!(self, Client::TlsH1 | Client::TlsH2)
    }
}

/// A collected response.
#[derive(Debug)]
pub struct Got {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
    pub version: http::Version,
}

impl Got {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// TLS client settings trusting the test CA.
pub fn tls_client(ca_pem: &str, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    tls_client_as(ca_pem, alpn, None)
}

use rustls_pki_types::pem::PemObject;

/// Connects a TLS client.
pub async fn tls_connect(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
    sni: &str,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(cfg)
        .connect(
            rustls_pki_types::ServerName::try_from(sni.to_owned()).unwrap(),
            tcp,
        )
        .await
        .expect("TLS handshake")
}

pub async fn collect(resp: Response<Incoming>) -> Got {
    let (parts, body) = resp.into_parts();
    let c = body.collect().await.expect("response body");
    let trailers = c.trailers().cloned();
    Got {
        status: parts.status,
        headers: parts.headers,
        body: c.to_bytes(),
        trailers,
        version: parts.version,
    }
}

/// Sends one request on a new connection and collects the response. For TLS modes,
/// `tls` gives the client settings (ALPN is set from the mode) and SNI.
pub async fn send(
    mode: Client,
    addr: SocketAddr,
    mut req: Request<TestBody>,
    tls: Option<(&str, &str)>,
) -> Got {
    if req.uri().authority().is_none() && mode.is_h2() {
        let mut parts = req.uri().clone().into_parts();
        parts.scheme = Some(if mode.is_tls() {
            http::uri::Scheme::HTTPS
        } else {
            http::uri::Scheme::HTTP
        });
        parts.authority = Some(format!("localhost:{}", addr.port()).parse().unwrap());
        *req.uri_mut() = http::Uri::from_parts(parts).unwrap();
    }
    if !mode.is_h2() && !req.headers().contains_key("host") {
        req.headers_mut().insert(
            "host",
            format!("localhost:{}", addr.port()).parse().unwrap(),
        );
    }
    let fut = async {
        match mode {
            Client::H1 => {
                let tcp = TcpStream::connect(addr).await.unwrap();
                let (mut s, c) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                    .await
                    .unwrap();
                tokio::spawn(c);
                collect(s.send_request(req).await.expect("h1 request")).await
            }
            Client::H2c => {
                let tcp = TcpStream::connect(addr).await.unwrap();
                let (mut s, c) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                        .await
                        .unwrap();
                tokio::spawn(c);
                collect(s.send_request(req).await.expect("h2c request")).await
            }
            Client::TlsH1 | Client::TlsH2 => {
                let (ca, sni) = tls.expect("TLS settings");
                let alpn: &[&[u8]] = if mode == Client::TlsH2 {
                    &[b"h2"]
                } else {
                    &[b"http/1.1"]
                };
                let s = tls_connect(addr, tls_client(ca, alpn), sni).await;
                if mode == Client::TlsH2 {
                    let (mut s, c) = hyper::client::conn::http2::handshake(
                        TokioExecutor::new(),
                        TokioIo::new(s),
                    )
                    .await
                    .unwrap();
                    tokio::spawn(c);
                    collect(s.send_request(req).await.expect("TLS h2 request")).await
                } else {
                    let (mut s, c) = hyper::client::conn::http1::handshake(TokioIo::new(s))
                        .await
                        .unwrap();
                    tokio::spawn(c);
                    collect(s.send_request(req).await.expect("TLS h1 request")).await
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .expect("request timed out")
}

/// `GET path` over HTTP/1.1.
pub async fn get(addr: SocketAddr, path: &str) -> Got {
    let req = Request::get(path).body(empty()).unwrap();
    send(Client::H1, addr, req, None).await
}

/// Writes raw bytes and reads until the proxy closes the connection (or `limit`).
pub async fn raw(addr: SocketAddr, data: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(data).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Writes raw bytes and reads one response head and its Content-Length body.
pub async fn raw_one(s: &mut TcpStream, data: &[u8]) -> String {
    s.write_all(data).await.unwrap();
    let mut buf = Vec::new();
    let read = async {
        loop {
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| {
                        l.strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    break;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("raw response timed out");
    String::from_utf8_lossy(&buf).into_owned()
}

/// A self-signed CA and certificates it signs, written as PEM files.
pub struct Pki {
    pub dir: PathBuf,
    pub ca_pem: String,
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Pki {
    pub fn new() -> Self {
        let dir = temp_dir("pki");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "rampart test CA");
        let key = rcgen::KeyPair::generate().unwrap();
        let ca = rcgen::CertifiedIssuer::self_signed(params, key).unwrap();
        let ca_pem = ca.pem();
        std::fs::write(dir.join("ca.pem"), &ca_pem).unwrap();
        Pki { dir, ca_pem, ca }
    }

    /// [`Pki::issue`] of a certificate that expires `days` from now.
    pub fn issue_for_days(&self, stem: &str, names: &[&str], days: i64) -> (PathBuf, PathBuf) {
        self.issue_with(stem, names, |p| {
            p.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(days);
        })
    }

    /// Writes `<stem>.pem` and `<stem>.key` for `names`; `expired` makes it expire in 2020.
    pub fn issue(&self, stem: &str, names: &[&str], expired: bool) -> (PathBuf, PathBuf) {
        self.issue_with(stem, names, |p| {
            if expired {
                p.not_before = rcgen::date_time_ymd(2019, 1, 1);
                p.not_after = rcgen::date_time_ymd(2020, 1, 1);
            }
        })
    }

    fn issue_with(
        &self,
        stem: &str,
        names: &[&str],
        adjust: impl FnOnce(&mut rcgen::CertificateParams),
    ) -> (PathBuf, PathBuf) {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            names.first().copied().unwrap_or("x"),
        );
        adjust(&mut params);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let c = self.dir.join(format!("{stem}.pem"));
        let k = self.dir.join(format!("{stem}.key"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    /// Writes `<stem>.crl`, a revocation list of the CA revoking the certificates in
    /// `revoked` (PEM files it issued).
    pub fn crl(&self, stem: &str, revoked: &[&Path]) -> PathBuf {
        let now = time::OffsetDateTime::now_utc();
        let revoked_certs = revoked
            .iter()
            .map(|p| {
                let der = rustls_pki_types::CertificateDer::pem_file_iter(p)
                    .unwrap()
                    .next()
                    .unwrap()
                    .unwrap();
                let (_, c) =
                    <x509_parser::certificate::X509Certificate as x509_parser::prelude::FromDer<
                        _,
                    >>::from_der(&der)
                    .unwrap();
                rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from_slice(c.raw_serial()),
                    revocation_time: now,
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                }
            })
            .collect();
        let crl = rcgen::CertificateRevocationListParams {
            this_update: now - time::Duration::hours(1),
            next_update: now + time::Duration::days(7),
            crl_number: rcgen::SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&self.ca)
        .unwrap();
        let path = self.dir.join(format!("{stem}.crl"));
        std::fs::write(&path, crl.pem().unwrap()).unwrap();
        path
    }

    pub fn path(&self, p: &Path) -> String {
        p.display().to_string()
    }
}

/// Polls `f` until it returns true, for up to `limit`.
pub async fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let budget = crate::stall::Budget::new(limit);
    while !budget.spent() {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f()
}

/// Runs `attempt` until it passes. A failure counts only when the machine kept running
/// meanwhile: a check of a timeout or a schedule cannot tell a slow proxy from a process
/// the scheduler (or the hypervisor) held off the CPU for a second. After five attempts
/// that all failed during a stall, the check is skipped with the reason printed.
pub async fn unless_stalled<F, Fut>(what: &str, mut attempt: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    const EXCUSE: Duration = Duration::from_millis(50);
    for n in 1..=5 {
        let w = crate::stall::Budget::new(Duration::ZERO);
        match attempt().await {
            Ok(()) => return,
            Err(e) => {
                let stall = w.settled_stall();
                assert!(stall >= EXCUSE, "{what}: {e} (stall {stall:?})");
                println!("{what}: attempt {n} failed during a stall of {stall:?}: {e}");
            }
        }
    }
    println!("skipped: {what}: the machine stalled during every attempt");
}

/// `GET path` over HTTP/1.1 from a given loopback source address, with extra headers.
pub async fn get_from(
    src: std::net::IpAddr,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Got {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(src, 0)).unwrap();
    let tcp = sock.connect(addr).await.unwrap();
    let (mut s, c) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(c);
    let mut b = Request::get(path);
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        b = b.header("host", "localhost");
    }
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = tokio::time::timeout(
        Duration::from_secs(10),
        s.send_request(b.body(empty()).unwrap()),
    )
    .await
    .expect("request timed out")
    .expect("request failed");
    collect(resp).await
}

/// Counts answers by body text.
pub fn tally<'a>(
    answers: impl IntoIterator<Item = &'a str>,
) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    for a in answers {
        *m.entry(a.to_owned()).or_insert(0) += 1;
    }
    m
}

/// An origin over TLS (HTTP/1.1 and h2 by ALPN) with the given certificate; records the
/// SNI names it was asked for.
pub async fn tls_origin(
    cert: &Path,
    key: &Path,
    f: impl Fn(&Seen) -> Response<TestBody> + Send + Sync + 'static,
) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let chain: Vec<_> = rustls_pki_types::CertificateDer::pem_file_iter(cert)
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(key).unwrap();
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let snis = Arc::new(Mutex::new(Vec::new()));
    let handler: Handler = Arc::new(f);
    let s2 = snis.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, peer)) = listener.accept().await else {
                continue;
            };
            let (acceptor, snis, handler) = (acceptor.clone(), s2.clone(), handler.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                snis.lock()
                    .unwrap()
                    .push(tls.get_ref().1.server_name().unwrap_or("").to_owned());
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let handler = handler.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let c = body.collect().await.ok();
                        let s = Seen {
                            method: parts.method,
                            uri: parts.uri,
                            version: parts.version,
                            headers: parts.headers,
                            trailers: c.as_ref().and_then(|c| c.trailers().cloned()),
                            body: c.map(|c| c.to_bytes()).unwrap_or_default(),
                            peer,
                        };
                        Ok::<_, Infallible>(handler(&s))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, snis)
}

/// Whether tests that need a tool or root must run (CI) rather than skip.
pub fn required() -> bool {
    std::env::var("RAMPART_REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1")
}

/// Whether `curl` can be run; a test that needs it skips without it (saying so), and
/// fails instead where the environment is required to be complete (`required`).
pub fn curl_present() -> bool {
    if std::process::Command::new("curl")
        .arg("-V")
        .output()
        .is_ok()
    {
        return true;
    }
    assert!(!required(), "curl is needed for this test");
    eprintln!("skipped: no curl");
    false
}

/// A port free now on 127.0.0.1 (for a program that cannot be told to take port 0).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `n` keep-alive `GET /` requests with `host` over an open connection; the bodies.
pub async fn h1_gets<I>(io: I, host: &str, n: usize) -> Vec<String>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut out = Vec::new();
    for _ in 0..n {
        let req = Request::get("/")
            .header("host", host)
            .body(empty())
            .unwrap();
        // The connection takes the next request once it has finished the last one.
        s.ready().await.unwrap();
        let b = s.send_request(req).await.unwrap().into_body();
        let b = b.collect().await.unwrap().to_bytes();
        out.push(String::from_utf8_lossy(&b).into_owned());
    }
    out
}

/// Serves the runtime API sockets `yaml`'s `admin` section names, for the proxy `p` runs;
/// returns what they work on and the tasks serving them (dropping them does not stop
/// them: abort to).
pub async fn serve_api(
    p: &Proxy,
    yaml: &str,
) -> (
    Arc<rampart_admin::AdminCtx>,
    Vec<tokio::task::JoinHandle<()>>,
) {
    let cfg =
        rampart_config::load_str(yaml, Some(&p.dir), &rampart_config::yaml::ProcessEnv).unwrap();
    let ctx = rampart_admin::AdminCtx::new(p.handle().control().clone(), None);
    let tasks = rampart_admin::serve_sockets(&cfg.admin.socket, &p.dir, ctx.clone())
        .await
        .unwrap();
    (ctx, tasks)
}

/// Sends `text` (a command line, or a line ending in `<<` and its payload) on the runtime
/// API socket `sock`, a newline added if missing; the answer, read until the socket closes.
pub async fn ask_api(sock: &Path, text: &str) -> String {
    let mut s = tokio::net::UnixStream::connect(sock).await.unwrap();
    s.write_all(text.as_bytes()).await.unwrap();
    if !text.ends_with('\n') {
        s.write_all(b"\n").await.unwrap();
    }
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_string(&mut out))
        .await
        .expect("the socket did not close")
        .unwrap();
    out
}

/// A TLS client trusting `ca_pem` and offering `alpn`, presenting the certificate and key
/// in the PEM files `id` when given.
pub fn tls_client_as(
    ca_pem: &str,
    alpn: &[&[u8]],
    id: Option<(&Path, &Path)>,
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let mut cfg = match id {
        Some((c, k)) => b
            .with_client_auth_cert(
                rustls_pki_types::CertificateDer::pem_file_iter(c)
                    .unwrap()
                    .map(|c| c.unwrap())
                    .collect(),
                rustls_pki_types::PrivateKeyDer::from_pem_file(k).unwrap(),
            )
            .unwrap(),
        None => b.with_no_client_auth(),
    };
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    Arc::new(cfg)
}

/// One `GET /` (host `localhost`) over HTTP/1.1 on a new connection, over TLS with `tls`
/// (SNI `localhost`) or in clear text without: the status and body, or why it failed
/// (a refused client certificate surfaces at the handshake in TLS 1.2, at the first read
/// in TLS 1.3). At most 10 s.
pub async fn try_request(
    addr: SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
    path: &str,
) -> Result<(u16, String), String> {
    async fn over<I>(io: I, path: &str) -> Result<(u16, String), String>
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (mut s, c) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(c);
        let req = Request::get(path)
            .header("host", "localhost")
            .body(empty())
            .map_err(|e| e.to_string())?;
        let resp = s.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
    let work = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        match tls {
            None => over(tcp, path).await,
            Some(cfg) => {
                let s = tokio_rustls::TlsConnector::from(cfg)
                    .connect(
                        rustls_pki_types::ServerName::try_from("localhost").unwrap(),
                        tcp,
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                over(s, path).await
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
}

/// The errors loading `yaml` (relative files read from `dir`) gives; panics when it loads.
pub fn load_errors(yaml: &str, dir: Option<&Path>) -> String {
    match rampart_config::load_str(yaml, dir, &rampart_config::yaml::ProcessEnv) {
        Ok(_) => panic!("the configuration loaded:\n{yaml}"),
        Err(e) => e.to_string(),
    }
}
