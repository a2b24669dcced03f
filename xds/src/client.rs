//! The ADS stream to the control plane: connecting (h2c or TLS), reconnecting with
//! jittered exponential back-off, and handing responses to the [`Engine`].
//!
//! The client runs on its own thread with its own runtime, so a large update compiles
//! without delaying anything else; the last good configuration keeps serving while the
//! control plane is away.

use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use rampart_config::Config;
use rampart_config::xds::XdsMode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use crate::ads::{Applier, Engine, Out};

/// How to reach the control plane and who this node is.
#[derive(Clone)]
pub struct Settings {
    /// `host:port` addresses, tried in turn.
    pub addrs: Vec<String>,
    /// The `:authority` of the stream.
    pub authority: String,
    pub(crate) tls: Option<Arc<rustls::ClientConfig>>,
    /// Name for SNI and verification (TLS).
    pub sni: String,
    pub mode: XdsMode,
    pub(crate) node: Node,
    /// Send the node only in a stream's first request (Envoy's
    /// `set_node_on_first_message_only`).
    pub node_first_only: bool,
    pub initial_fetch_timeout: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Largest response accepted; a larger one ends the stream (logged) and reconnects.
    pub max_message: usize,
    /// gRPC metadata sent with the stream.
    pub metadata: Vec<(String, String)>,
    /// The server as configured, for `show xds`.
    pub display: String,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("addrs", &self.addrs)
            .field("mode", &self.mode)
            .field("node", &self.node.id)
            .finish_non_exhaustive()
    }
}

/// The largest response accepted by default (1,000 clusters with 10 endpoints each are
/// well under 1 MiB).
pub const MAX_MESSAGE: usize = 64 << 20;

impl Settings {
    /// Settings from a configuration's `xds` section; files are relative to `base`.
    pub fn from_config(x: &rampart_config::xds::Xds, base: &Path) -> Result<Self, String> {
        let (tls, rest) = match x.server.value.split_once("://") {
            Some(("http", r)) => (false, r),
            Some(("https", r)) => (true, r),
            _ => {
                return Err(format!(
                    "invalid control plane address {:?}",
                    x.server.value
                ));
            }
        };
        let authority = rest.trim_end_matches('/').to_owned();
        let host = host_of(&authority);
        let client_tls = if tls {
            let t = x.tls.clone().unwrap_or(rampart_config::xds::XdsTls {
                ca: None,
                cert: None,
                key: None,
                sni: None,
            });
            Some(crate::tls::client_config(&t, base)?)
        } else {
            None
        };
        let mut metadata = envoy_types::pb::google::protobuf::Struct::default();
        for (k, v) in x.node.metadata.iter() {
            metadata.fields.insert(
                k.to_owned(),
                envoy_types::pb::google::protobuf::Value {
                    kind: Some(envoy_types::pb::google::protobuf::value::Kind::StringValue(
                        v.clone(),
                    )),
                },
            );
        }
        Ok(Settings {
            addrs: vec![authority.clone()],
            sni: x
                .tls
                .as_ref()
                .and_then(|t| t.sni.clone())
                .unwrap_or_else(|| host.to_owned()),
            authority,
            tls: client_tls,
            mode: x.mode,
            node: node(&x.node.id.value, &x.node.cluster, Some(metadata)),
            node_first_only: true,
            initial_fetch_timeout: x.initial_fetch_timeout,
            backoff_base: x.backoff.base,
            backoff_max: x.backoff.max,
            max_message: MAX_MESSAGE,
            metadata: Vec::new(),
            display: x.server.value.clone(),
        })
    }
}

/// `host` of `host:port` or `[v6]:port`.
pub(crate) fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

/// The node identity, with rampart's user agent.
pub fn node(
    id: &str,
    cluster: &str,
    metadata: Option<envoy_types::pb::google::protobuf::Struct>,
) -> Node {
    use envoy_types::pb::envoy::config::core::v3::node::UserAgentVersionType;
    Node {
        id: id.to_owned(),
        cluster: cluster.to_owned(),
        metadata: metadata.filter(|m| !m.fields.is_empty()),
        user_agent_name: "rampart".to_owned(),
        user_agent_version_type: Some(UserAgentVersionType::UserAgentVersion(
            env!("CARGO_PKG_VERSION").to_owned(),
        )),
        ..Default::default()
    }
}

/// The connection's state, for `show xds` and metrics.
#[derive(Debug, Clone)]
pub struct Connection {
    pub connected: bool,
    pub since: SystemTime,
    pub connects: u64,
    pub disconnects: u64,
    pub last_error: Option<String>,
}

pub(crate) struct Inner {
    pub(crate) settings: Settings,
    pub(crate) engine: Mutex<Engine>,
    pub(crate) conn: Mutex<Connection>,
    applier: Box<dyn Applier>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A running xDS client.
pub struct Xds {
    pub(crate) inner: Arc<Inner>,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Xds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Xds")
            .field("settings", &self.inner.settings)
            .finish()
    }
}

impl Xds {
    /// Starts the client; `base` is the static configuration the resources are added to,
    /// `applier` applies each result.
    pub fn start(
        settings: Settings,
        base: Config,
        applier: Box<dyn Applier>,
    ) -> std::io::Result<Xds> {
        let engine = Engine::new(
            settings.mode,
            settings.node.clone(),
            settings.node_first_only,
            settings.initial_fetch_timeout,
            base,
        );
        let inner = Arc::new(Inner {
            settings,
            engine: Mutex::new(engine),
            conn: Mutex::new(Connection {
                connected: false,
                since: SystemTime::now(),
                connects: 0,
                disconnects: 0,
                last_error: None,
            }),
            applier,
        });
        let (stop, rx) = watch::channel(false);
        let i = inner.clone();
        let thread = std::thread::Builder::new()
            .name("rampart-xds".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(run(i, rx)),
                    Err(e) => tracing::error!("xDS: cannot start a runtime: {e}"),
                }
            })?;
        Ok(Xds {
            inner,
            stop,
            thread: Some(thread),
        })
    }

    /// Replaces the static configuration (a YAML reload) and applies it with the
    /// resources from the control plane.
    pub fn set_base(&self, base: Config) -> Result<(), crate::ads::BaseRefused> {
        let mut e = lock(&self.inner.engine);
        e.set_base(base, &*self.inner.applier)
    }

    /// Tells the client to stop (its stream closes; nothing more is applied).
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
    }

    /// Stops the client and waits for its thread.
    pub fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Xds {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// A full-jitter exponential delay for reconnection attempt `n` (0-based).
pub fn backoff(base: Duration, max: Duration, n: u32, unit: f64) -> Duration {
    let cap = base.saturating_mul(1u32 << n.min(20)).min(max);
    cap.mul_f64(unit.clamp(0.0, 1.0))
        .max(base.min(Duration::from_millis(10)))
}

async fn run(inner: Arc<Inner>, mut stop: watch::Receiver<bool>) {
    let mut attempt: u32 = 0;
    let mut addr = 0usize;
    loop {
        let target = inner.settings.addrs[addr % inner.settings.addrs.len().max(1)].clone();
        addr += 1;
        let mut progressed = false;
        let result = session(&inner, &target, &mut stop, &mut progressed).await;
        {
            let mut c = lock(&inner.conn);
            if c.connected {
                c.disconnects += 1;
            }
            c.connected = false;
            c.since = SystemTime::now();
            match &result {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(
                        "xDS: stream to {target} ended: {e}; the last configuration keeps serving"
                    );
                    c.last_error = Some(e.clone());
                }
            }
        }
        if progressed {
            attempt = 0;
        }
        let wait = backoff(
            inner.settings.backoff_base,
            inner.settings.backoff_max,
            attempt,
            fastrand::f64(),
        );
        attempt = attempt.saturating_add(1);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
    }
}

/// One stream: Ok when told to stop, Err when it ended otherwise. `progressed` is set
/// once a response arrived (the back-off starts over).
async fn session(
    inner: &Arc<Inner>,
    target: &str,
    stop: &mut watch::Receiver<bool>,
    progressed: &mut bool,
) -> Result<(), String> {
    let channel = tokio::select! {
        c = connect(&inner.settings, target) => c?,
        _ = stop.changed() => return Ok(()),
    };
    let first = lock(&inner.engine).on_connect();
    let mut client = AggregatedDiscoveryServiceClient::new(channel)
        .max_decoding_message_size(inner.settings.max_message)
        .max_encoding_message_size(inner.settings.max_message);
    match inner.settings.mode {
        XdsMode::Sotw => {
            let (tx, rx) = mpsc::unbounded_channel();
            let send = move |outs: Vec<Out>| {
                for o in outs {
                    if let Out::Sotw(r) = o {
                        let _ = tx.send(r);
                    }
                }
            };
            send(first);
            let req = with_metadata(tonic::Request::new(Outbound(rx)), &inner.settings.metadata);
            // Opening the stream waits for the control plane's answer: a stop must not.
            let stream = tokio::select! {
                s = client.stream_aggregated_resources(req) => s,
                _ = stop.changed() => return Ok(()),
            };
            let handle = |e: &mut Engine, r, a: &dyn Applier| e.on_sotw(r, a);
            drive(inner, target, stop, progressed, stream, send, handle).await
        }
        XdsMode::Delta => {
            let (tx, rx) = mpsc::unbounded_channel();
            let send = move |outs: Vec<Out>| {
                for o in outs {
                    if let Out::Delta(r) = o {
                        let _ = tx.send(r);
                    }
                }
            };
            send(first);
            let req = with_metadata(tonic::Request::new(Outbound(rx)), &inner.settings.metadata);
            // Opening the stream waits for the control plane's answer: a stop must not.
            let stream = tokio::select! {
                s = client.delta_aggregated_resources(req) => s,
                _ = stop.changed() => return Ok(()),
            };
            let handle = |e: &mut Engine, r, a: &dyn Applier| e.on_delta(r, a);
            drive(inner, target, stop, progressed, stream, send, handle).await
        }
    }
}

/// Reads a stream's responses into the engine and sends what it answers, with the
/// warming timers, until the stream ends or the client stops.
async fn drive<R>(
    inner: &Arc<Inner>,
    target: &str,
    stop: &mut watch::Receiver<bool>,
    progressed: &mut bool,
    opened: Result<tonic::Response<tonic::Streaming<R>>, tonic::Status>,
    send: impl Fn(Vec<Out>),
    handle: impl Fn(&mut Engine, R, &dyn Applier) -> Vec<Out>,
) -> Result<(), String> {
    let mut stream = opened
        .map_err(|s| format!("stream refused: {}", status_text(&s)))?
        .into_inner();
    connected(inner, target);
    loop {
        let deadline = lock(&inner.engine).next_deadline();
        tokio::select! {
            m = stream.message() => match m {
                Ok(Some(r)) => {
                    *progressed = true;
                    let outs = handle(&mut lock(&inner.engine), r, &*inner.applier);
                    send(outs);
                }
                Ok(None) => return Err("the control plane closed the stream".into()),
                Err(s) => return Err(status_text(&s)),
            },
            _ = until(deadline) => {
                let outs = lock(&inner.engine).on_tick(&*inner.applier);
                send(outs);
            }
            _ = stop.changed() => return Ok(()),
        }
    }
}

fn connected(inner: &Inner, target: &str) {
    let mut c = lock(&inner.conn);
    c.connected = true;
    c.connects += 1;
    c.since = SystemTime::now();
    tracing::info!(
        "xDS: connected to {target} ({})",
        inner.settings.mode.as_str()
    );
}

fn status_text(s: &tonic::Status) -> String {
    if s.message().is_empty() {
        format!("gRPC status {:?}", s.code())
    } else {
        format!("gRPC status {:?}: {}", s.code(), s.message())
    }
}

async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

fn with_metadata<T>(mut r: tonic::Request<T>, md: &[(String, String)]) -> tonic::Request<T> {
    for (k, v) in md {
        if let (Ok(k), Ok(v)) = (
            tonic::metadata::MetadataKey::from_bytes(k.as_bytes()),
            tonic::metadata::MetadataValue::try_from(v.as_str()),
        ) {
            r.metadata_mut().insert(k, v);
        }
    }
    r
}

/// Requests queued for the stream.
struct Outbound<T>(mpsc::UnboundedReceiver<T>);

impl<T> futures_core::Stream for Outbound<T> {
    type Item = T;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}

/// A connection to the control plane, plain or TLS.
enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Opens an HTTP/2 channel to `target` (`host:port`).
async fn connect(s: &Settings, target: &str) -> Result<tonic::transport::Channel, String> {
    let scheme = if s.tls.is_some() { "https" } else { "http" };
    let endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{}", s.authority))
        .map_err(|e| format!("invalid control plane address {}: {e}", s.authority))?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    let tls = s.tls.clone();
    let sni = s.sni.clone();
    let addr = target.to_owned();
    let connector = tower::service_fn(move |_: http::Uri| {
        let tls = tls.clone();
        let sni = sni.clone();
        let target = addr.clone();
        async move {
            let tcp = TcpStream::connect(&target).await?;
            let _ = tcp.set_nodelay(true);
            let io = match tls {
                None => Io::Plain(tcp),
                Some(cfg) => {
                    let name =
                        rustls_pki_types::ServerName::try_from(sni.clone()).map_err(|_| {
                            std::io::Error::new(
                                std::io::ErrorKind::InvalidInput,
                                format!("invalid server name {sni:?}"),
                            )
                        })?;
                    let s = tokio_rustls::TlsConnector::from(cfg)
                        .connect(name, tcp)
                        .await?;
                    Io::Tls(Box::new(s))
                }
            };
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(io))
        }
    });
    endpoint
        .connect_with_connector(connector)
        .await
        .map_err(|e| {
            use std::error::Error;
            let mut m = e.to_string();
            let mut src = e.source();
            while let Some(s) = src {
                m = format!("{m}: {s}");
                src = s.source();
            }
            format!("cannot connect to {target}: {m}")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_with_jitter() {
        let b = Duration::from_millis(500);
        let m = Duration::from_secs(30);
        assert_eq!(backoff(b, m, 0, 1.0), b);
        assert_eq!(backoff(b, m, 3, 1.0), Duration::from_secs(4));
        assert_eq!(backoff(b, m, 30, 1.0), m);
        assert!(backoff(b, m, 3, 0.25) <= Duration::from_secs(1));
        assert!(backoff(b, m, 3, 0.0) > Duration::ZERO);
    }

    #[test]
    fn host_of_strips_ports_and_brackets() {
        assert_eq!(host_of("cp.example:18000"), "cp.example");
        assert_eq!(host_of("[::1]:18000"), "::1");
        assert_eq!(host_of("cp"), "cp");
    }
}
