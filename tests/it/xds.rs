//! rampart as an xDS-managed proxy: an in-process ADS control plane ([`crate::cp`]) drives
//! the in-process proxy through rampart-xds, in state-of-the-world and delta modes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::HealthStatus;
use http::Request;
use hyper_util::rt::TokioIo;
use rampart_config::Config;
use rampart_xds::{Settings, Xds};

use crate::cp::*;
use crate::support::*;

/// Applies configurations to the in-process proxy as the binary does.
struct Applier {
    control: Arc<rampart_proxy::runtime::Control>,
    dir: std::path::PathBuf,
}

impl rampart_xds::Applier for Applier {
    fn current(&self) -> Option<Arc<Config>> {
        Some(self.control.shared().snapshot.load().config.clone())
    }

    fn apply(&self, cfg: Config) -> Result<(), rampart_config::ConfigErrors> {
        self.control
            .reload(cfg, &self.dir)
            .map(|_| ())
            .map_err(|e| match e {
                rampart_proxy::runtime::ReloadError::Config(c) => c,
                other => rampart_config::ConfigErrors(vec![rampart_config::ConfigError::new(
                    Default::default(),
                    "",
                    other.to_string(),
                )]),
            })
    }
}

/// The proxy with its xDS client.
pub struct Sidecar {
    pub proxy: Proxy,
    pub xds: Option<Xds>,
}

impl Sidecar {
    /// Starts the proxy with `extra` YAML (static frontends, backends, tables) and an xDS
    /// client of `cp` in `mode`.
    pub fn start(cp: &Cp, mode: &str, extra: &str) -> Sidecar {
        let yaml = format!(
            "xds:\n  server: {}\n  node: {{ id: test-node, cluster: test }}\n  mode: {mode}\n  \
             initial_fetch_timeout: 3s\n  backoff: {{ base: 50ms, max: 200ms }}\n\
             global: {{ reload_grace: 100ms }}\n{extra}",
            cp.url()
        );
        Self::from_yaml(&yaml, |_| {})
    }

    /// Starts the proxy from `yaml`, which has an `xds` section, and its client with the
    /// settings that section gives, changed by `tweak`.
    pub fn from_yaml(yaml: &str, tweak: impl FnOnce(&mut Settings)) -> Sidecar {
        let proxy = Proxy::start(yaml);
        let cfg: Config = (*proxy.handle().snapshot().config).clone();
        let mut settings = Settings::from_config(cfg.xds.as_ref().unwrap(), &proxy.dir).unwrap();
        tweak(&mut settings);
        let applier = Applier {
            control: proxy.handle().control().clone(),
            dir: proxy.dir.clone(),
        };
        let xds = Xds::start(settings, cfg, Box::new(applier)).unwrap();
        Sidecar {
            proxy,
            xds: Some(xds),
        }
    }

    /// The address of a listener from the control plane, once it is bound.
    pub async fn listener(&self, name: &str) -> std::net::SocketAddr {
        let found = eventually(Duration::from_secs(10), || {
            self.proxy.addr_opt(name).is_some()
        })
        .await;
        assert!(found, "listener {name} never bound; {}", self.show());
        self.proxy.addr(name)
    }

    pub fn show(&self) -> String {
        self.xds.as_ref().map(|x| x.show(false)).unwrap_or_default()
    }

    pub async fn stop(mut self) {
        if let Some(x) = self.xds.take() {
            tokio::task::spawn_blocking(move || x.stop()).await.unwrap();
        }
        self.proxy.stop().await;
    }
}

const MODES: [&str; 2] = ["sotw", "delta"];

impl Cp {
    /// Waits until a request matches `f`; panics with what was seen after `limit`.
    pub async fn wait(
        &self,
        limit: Duration,
        what: &str,
        f: impl Fn(&crate::cp::Seen) -> bool,
    ) -> crate::cp::Seen {
        let budget = crate::stall::Budget::new(limit);
        loop {
            if let Some(s) = self.seen().into_iter().rev().find(|s| f(s)) {
                return s;
            }
            if budget.spent() {
                panic!(
                    "control plane: no request {what} within {limit:?}; seen:\n{:#?}",
                    self.seen()
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits for the ACK of the response that carried the current version of `type_url`.
    pub async fn acked(&self, type_url: &str) -> crate::cp::Seen {
        let v = self.version(type_url);
        let last_nonce = || {
            self.sent()
                .into_iter()
                .rev()
                .find(|s| s.type_url == type_url && s.version == v)
                .map(|s| s.nonce)
        };
        let budget = crate::stall::Budget::new(Duration::from_secs(10));
        loop {
            let n = last_nonce();
            if let Some(s) = self.seen().into_iter().rev().find(|s| {
                s.type_url == type_url
                    && s.error.is_none()
                    && Some(&s.nonce) == n.as_ref()
                    && (s.delta || s.version == v)
            }) {
                return s;
            }
            if budget.spent() {
                panic!(
                    "control plane: no ACK of {type_url} version {v}; seen:\n{:#?}\nsent:\n{:#?}",
                    self.seen(),
                    self.sent()
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Sends `GET path` until the answer is `want` (or 10 s, plus stalls, have passed);
/// returns the last answer.
pub(crate) async fn until_answer(addr: std::net::SocketAddr, path: &str, want: &str) -> String {
    let budget = crate::stall::Budget::new(Duration::from_secs(10));
    loop {
        let last = get(addr, path).await.text();
        if last == want || budget.spent() {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The basic mesh with one origin `a`, served: the origin, the control plane, the proxy
/// and the listener's address.
pub(crate) async fn serving(
    mode: &str,
    extra: &str,
) -> (Origin, Cp, Sidecar, std::net::SocketAddr) {
    let a = Origin::named("a").await;
    let cp = Cp::start().await;
    basic(&cp, &[a.addr]);
    let s = Sidecar::start(&cp, mode, extra);
    let addr = s.listener("ingress").await;
    assert_eq!(
        until_answer(addr, "/", "a").await,
        "a",
        "{mode}: {}",
        s.show()
    );
    (a, cp, s, addr)
}

/// A basic mesh: listener `ingress` -> routes `r1` -> cluster `web` -> endpoints.
pub(crate) fn basic(cp: &Cp, origins: &[std::net::SocketAddr]) {
    cp.clusters(vec![eds_cluster("web")]);
    cp.endpoints(vec![cla_of("web", origins)]);
    cp.listeners(vec![listener("ingress", 0, "r1")]);
    cp.routes(vec![route_config("r1", vec![to_cluster("/", "web")])]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_configuration_of_all_four_types_serves() {
    for mode in MODES {
        let a = Origin::named("a").await;
        let cp = Cp::start().await;
        basic(&cp, &[a.addr]);
        let s = Sidecar::start(&cp, mode, "");
        let addr = s.listener("ingress").await;
        assert_eq!(
            until_answer(addr, "/x", "a").await,
            "a",
            "{mode}: {}",
            s.show()
        );
        // The first request names the node and asks for clusters (as Envoy does).
        let first = cp.seen().into_iter().next().unwrap();
        assert_eq!(first.type_url, CDS, "{mode}");
        assert_eq!(first.node.as_deref(), Some("test-node"), "{mode}");
        for t in [CDS, EDS, LDS, RDS] {
            cp.acked(t).await;
        }
        // Subscriptions follow references: EDS by cluster, RDS by listener.
        let asked = |t: &str| -> Vec<String> {
            cp.seen()
                .into_iter()
                .filter(|x| x.type_url == t)
                .flat_map(|x| if x.delta { x.subscribe } else { x.names })
                .collect()
        };
        assert!(
            asked(EDS).contains(&"web".to_owned()),
            "{mode}: {:?}",
            cp.seen()
        );
        assert!(
            asked(RDS).contains(&"r1".to_owned()),
            "{mode}: {:?}",
            cp.seen()
        );
        let first_cds = cp.sent().into_iter().find(|x| x.type_url == CDS).unwrap();
        assert_eq!(first_cds.names, ["web"]);
        let shown = s.show();
        assert!(shown.contains(" connected "), "{shown}");
        assert!(
            shown
                .lines()
                .any(|l| l.starts_with("listeners ") && l.contains(" 1 0 ")),
            "{shown}"
        );
        s.stop().await;
    }
}

/// Sends GETs on one keep-alive connection until `stop`; returns the bodies and failures.
async fn keepalive_client(
    addr: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
) -> (Vec<String>, Vec<String>, usize) {
    let mut bodies = Vec::new();
    let mut failures = Vec::new();
    let mut conns = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    'outer: while !stop.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        conns += 1;
        let (mut s, c) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(c);
        loop {
            if stop.load(Ordering::SeqCst) {
                break 'outer;
            }
            if s.ready().await.is_err() {
                continue 'outer;
            }
            let req = Request::get("/")
                .header("host", "localhost")
                .body(empty())
                .unwrap();
            match s.send_request(req).await {
                Ok(r) if r.status() == 200 => {
                    let b = http_body_util::BodyExt::collect(r.into_body())
                        .await
                        .unwrap()
                        .to_bytes();
                    bodies.push(String::from_utf8_lossy(&b).into_owned());
                }
                Ok(r) => failures.push(format!("status {}", r.status())),
                Err(e) if e.is_canceled() => continue 'outer,
                Err(e) => failures.push(format!("{e:?}")),
            }
        }
    }
    (bodies, failures, conns)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_flip_under_steady_traffic_loses_no_request_and_applies_on_open_connections() {
    for mode in MODES {
        let a = Origin::named("a").await;
        let b = Origin::named("b").await;
        let cp = Cp::start().await;
        cp.clusters(vec![eds_cluster("ca"), eds_cluster("cb")]);
        cp.endpoints(vec![cla_of("ca", &[a.addr]), cla_of("cb", &[b.addr])]);
        cp.listeners(vec![listener("ingress", 0, "r1")]);
        cp.routes(vec![route_config("r1", vec![to_cluster("/", "ca")])]);
        let s = Sidecar::start(&cp, mode, "");
        let addr = s.listener("ingress").await;
        assert_eq!(until_answer(addr, "/", "a").await, "a");
        let stop = Arc::new(AtomicBool::new(false));
        let client = tokio::spawn(keepalive_client(addr, stop.clone()));
        for i in 0..6 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let to = if i % 2 == 0 { "cb" } else { "ca" };
            cp.routes(vec![route_config("r1", vec![to_cluster("/", to)])]);
            cp.acked(RDS).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop.store(true, Ordering::SeqCst);
        let (bodies, failures, conns) = client.await.unwrap();
        assert!(failures.is_empty(), "{mode}: failed requests: {failures:?}");
        let t = tally(bodies.iter().map(String::as_str));
        assert!(t.contains_key("a") && t.contains_key("b"), "{mode}: {t:?}");
        // Route changes apply to the next request of an open connection: no reconnect.
        assert_eq!(conns, 1, "{mode}: the client had to reconnect");
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_clusters_split_80_20() {
    let a = Origin::named("a").await;
    let b = Origin::named("b").await;
    let cp = Cp::start().await;
    cp.clusters(vec![eds_cluster("ca"), eds_cluster("cb")]);
    cp.endpoints(vec![cla_of("ca", &[a.addr]), cla_of("cb", &[b.addr])]);
    cp.listeners(vec![listener("ingress", 0, "r1")]);
    cp.routes(vec![route_config(
        "r1",
        vec![weighted("/", &[("ca", 80), ("cb", 20)])],
    )]);
    let s = Sidecar::start(&cp, "sotw", "");
    let addr = s.listener("ingress").await;
    until_answer(addr, "/", "a").await;
    let mut answers = Vec::new();
    for _ in 0..500 {
        answers.push(get(addr, "/").await.text());
    }
    let t = tally(answers.iter().map(String::as_str));
    let share = *t.get("a").unwrap_or(&0) as f64 / 500.0;
    assert!((0.7..=0.9).contains(&share), "80/20 split gave {t:?}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eds_endpoints_added_removed_reweighted_and_unhealthy() {
    for mode in MODES {
        let b = Origin::named("b").await;
        let (a, cp, s, addr) = serving(mode, "").await;
        let sample = |n: usize| async move {
            let mut v = Vec::new();
            for _ in 0..n {
                v.push(get(addr, "/").await.text());
            }
            tally(v.iter().map(String::as_str))
        };
        // Added.
        cp.endpoints(vec![cla_of("web", &[a.addr, b.addr])]);
        cp.acked(EDS).await;
        let t = sample(40).await;
        assert!(
            t.contains_key("a") && t.contains_key("b"),
            "{mode} added: {t:?}"
        );
        // Removed: at once.
        cp.endpoints(vec![cla_of("web", &[b.addr])]);
        cp.acked(EDS).await;
        let t = sample(20).await;
        assert_eq!(t.keys().collect::<Vec<_>>(), ["b"], "{mode} removed: {t:?}");
        // Re-weighted 1:3 (round robin: each worker thread keeps its own rotation, so
        // within one round of exact per worker).
        cp.endpoints(vec![cla(
            "web",
            vec![
                endpoint(a.addr, 1, HealthStatus::Healthy),
                endpoint(b.addr, 3, HealthStatus::Healthy),
            ],
        )]);
        cp.acked(EDS).await;
        let t = sample(40).await;
        let (wa, wb) = (t.get("a").copied(), t.get("b").copied());
        assert!(
            matches!((wa, wb), (Some(8..=12), Some(28..=32))),
            "{mode} weights: {t:?}"
        );
        // UNHEALTHY (and DRAINING) endpoints take no requests.
        cp.endpoints(vec![cla(
            "web",
            vec![
                endpoint(a.addr, 1, HealthStatus::Unhealthy),
                endpoint(b.addr, 1, HealthStatus::Healthy),
            ],
        )]);
        cp.acked(EDS).await;
        let t = sample(20).await;
        assert_eq!(
            t.keys().collect::<Vec<_>>(),
            ["b"],
            "{mode} unhealthy: {t:?}"
        );
        let snap = s.proxy.handle().snapshot();
        let be = &snap.backends[snap.backend_index("web").unwrap()];
        let down = be
            .servers
            .iter()
            .find(|x| x.upstream.addr == a.addr)
            .unwrap();
        assert_eq!(down.live.status_text(), "DOWN");
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_invalid_resource_per_type_is_nacked_and_the_last_good_configuration_serves() {
    use envoy_types::pb::envoy::config::route::v3 as rt;
    for mode in MODES {
        let (a, cp, s, addr) = serving(mode, "").await;
        for t in [CDS, EDS, LDS, RDS] {
            cp.acked(t).await;
        }
        let nack = |t: &'static str, before: usize| {
            let cp = &cp;
            async move {
                cp.wait(Duration::from_secs(10), "NACK", |x| {
                    x.type_url == t && x.error.is_some()
                })
                .await;
                let all = cp.seen();
                all[before..]
                    .iter()
                    .find(|x| x.type_url == t && x.error.is_some())
                    .cloned()
                    .unwrap()
            }
        };
        // LDS: a port out of range; a valid new listener in the same response goes live.
        let before = cp.seen().len();
        let lds_version = cp.version(LDS);
        cp.listeners(vec![
            listener("ingress", 0, "r1"),
            listener("bad", 70000, "r1"),
            listener("extra", 0, "r1"),
        ]);
        let n = nack(LDS, before).await;
        let e = n.error.unwrap();
        assert!(
            e.contains("\"bad\"") && e.contains("port_value") && e.contains("70000"),
            "{mode}: {e}"
        );
        if mode == "sotw" {
            assert_eq!(
                n.version, lds_version,
                "a NACK keeps the last accepted version"
            );
        }
        s.listener("extra").await;
        assert_eq!(get(addr, "/").await.text(), "a");
        // RDS: a bad regex.
        let before = cp.seen().len();
        let mut bad = route_config("r1", vec![to_cluster("/", "web")]);
        bad.virtual_hosts[0].routes[0].r#match = Some(rt::RouteMatch {
            path_specifier: Some(rt::route_match::PathSpecifier::SafeRegex(
                envoy_types::pb::envoy::r#type::matcher::v3::RegexMatcher {
                    regex: "(".into(),
                    ..Default::default()
                },
            )),
            ..Default::default()
        });
        cp.routes(vec![bad]);
        let e = nack(RDS, before).await.error.unwrap();
        assert!(e.contains("safe_regex"), "{mode}: {e}");
        assert_eq!(get(addr, "/").await.text(), "a");
        // CDS: a negative connect timeout.
        let before = cp.seen().len();
        let mut c = eds_cluster("web");
        c.connect_timeout = Some(envoy_types::pb::google::protobuf::Duration {
            seconds: -1,
            nanos: 0,
        });
        cp.clusters(vec![c]);
        let e = nack(CDS, before).await.error.unwrap();
        assert!(
            e.contains("connect_timeout") && e.contains("negative"),
            "{mode}: {e}"
        );
        assert_eq!(get(addr, "/").await.text(), "a");
        // EDS: a weight of 0.
        let before = cp.seen().len();
        cp.endpoints(vec![cla(
            "web",
            vec![endpoint(a.addr, 0, HealthStatus::Healthy)],
        )]);
        let e = nack(EDS, before).await.error.unwrap();
        assert!(e.contains("load_balancing_weight"), "{mode}: {e}");
        assert_eq!(get(addr, "/").await.text(), "a");
        // One response per bad push: the client did not ask again.
        let sent = cp.sent().iter().filter(|x| x.type_url == EDS).count();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(cp.sent().iter().filter(|x| x.type_url == EDS).count(), sent);
        let shown = s.show();
        assert!(shown.contains("load_balancing_weight"), "{shown}");
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_wait_for_routes_and_clusters_for_endpoints() {
    for mode in MODES {
        let b = Origin::named("b").await;
        let (a, cp, s, addr) = serving(mode, "").await;
        // A listener whose routes have not arrived is not bound.
        cp.listeners(vec![
            listener("ingress", 0, "r1"),
            listener("late", 0, "r-late"),
        ]);
        cp.acked(LDS).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            s.proxy.addr_opt("late").is_none(),
            "{mode}: bound before its routes"
        );
        assert!(
            s.show()
                .lines()
                .any(|l| l.starts_with("listeners ") && l.contains(" 1 1 ")),
            "{}",
            s.show()
        );
        cp.routes(vec![
            route_config("r1", vec![to_cluster("/", "web")]),
            route_config("r-late", vec![to_cluster("/", "web")]),
        ]);
        let late = s.listener("late").await;
        assert_eq!(until_answer(late, "/", "a").await, "a");
        // A new cluster serves only once its endpoints are in; until then the route to
        // it answers 503 (no such cluster yet), as Envoy's does.
        cp.clusters(vec![eds_cluster("web"), eds_cluster("new")]);
        cp.routes(vec![
            route_config(
                "r1",
                vec![to_cluster("/new", "new"), to_cluster("/", "web")],
            ),
            route_config("r-late", vec![to_cluster("/", "web")]),
        ]);
        cp.acked(RDS).await;
        assert_eq!(get(addr, "/new").await.status, 503, "{mode}");
        cp.endpoints(vec![cla_of("web", &[a.addr]), cla_of("new", &[b.addr])]);
        assert_eq!(
            until_answer(addr, "/new", "b").await,
            "b",
            "{mode}: {}",
            s.show()
        );
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_killed_and_restarted_serving_goes_on_and_the_stream_resyncs() {
    for mode in MODES {
        let b = Origin::named("b").await;
        let (_a, mut cp, s, addr) = serving(mode, "").await;
        for t in [CDS, EDS, LDS, RDS] {
            cp.acked(t).await;
        }
        let port = cp.addr;
        cp.stop().await;
        // Away: the last configuration keeps serving.
        let gone = eventually(Duration::from_secs(10), || {
            s.show().contains(" disconnected ")
        })
        .await;
        assert!(gone, "{mode}: {}", s.show());
        for _ in 0..20 {
            assert_eq!(get(addr, "/").await.text(), "a", "{mode}");
        }
        // Back, with its state: the client asks again with what it holds, then takes
        // a change.
        let cp2 = Cp::start_on(port, Some(&cp)).await;
        let again = cp2
            .wait(Duration::from_secs(10), "after the restart", |x| {
                x.type_url == LDS
            })
            .await;
        if mode == "sotw" {
            assert_eq!(
                again.version,
                cp.version(LDS),
                "the last accepted version is sent again"
            );
        } else {
            assert!(again.initial_versions.contains_key("ingress"), "{again:?}");
        }
        cp2.endpoints(vec![cla_of("web", &[b.addr])]);
        assert_eq!(
            until_answer(addr, "/", "b").await,
            "b",
            "{mode}: {}",
            s.show()
        );
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_unsubscribes_and_removes() {
    let a = Origin::named("a").await;
    let cp = Cp::start().await;
    basic(&cp, &[a.addr]);
    cp.listeners(vec![
        listener("ingress", 0, "r1"),
        listener("second", 0, "r2"),
    ]);
    cp.routes(vec![
        route_config("r1", vec![to_cluster("/", "web")]),
        route_config("r2", vec![to_cluster("/", "web")]),
    ]);
    let s = Sidecar::start(&cp, "delta", "");
    let second = s.listener("second").await;
    assert_eq!(until_answer(second, "/", "a").await, "a");
    // The listener goes: removed_resources; its port closes and its routes are
    // unsubscribed.
    cp.listeners(vec![listener("ingress", 0, "r1")]);
    let gone = eventually(Duration::from_secs(10), || {
        s.proxy.addr_opt("second").is_none()
    })
    .await;
    assert!(gone, "{}", s.show());
    let removed = cp
        .sent()
        .iter()
        .any(|x| x.type_url == LDS && x.removed.contains(&"second".to_owned()));
    assert!(removed);
    cp.wait(Duration::from_secs(10), "unsubscribing r2", |x| {
        x.type_url == RDS && x.unsubscribe.contains(&"r2".to_owned())
    })
    .await;
    assert!(
        tokio::net::TcpStream::connect(second).await.is_err(),
        "port still open"
    );
    // A cluster removed by the control plane goes too.
    cp.clusters(vec![]);
    let no_backend = eventually(Duration::from_secs(10), || {
        s.proxy.handle().snapshot().backend_index("web").is_none()
    })
    .await;
    assert!(no_backend);
    let addr = s.listener("ingress").await;
    assert_eq!(get(addr, "/").await.status, 503);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_state_survives_xds_updates() {
    let a = Origin::named("a").await;
    let b = Origin::named("b").await;
    let local = Origin::named("local").await;
    let cp = Cp::start().await;
    basic(&cp, &[a.addr, b.addr]);
    let extra = format!(
        "stick_tables:\n  per_ip: {{ type: ip, size: 1k, expire: 10m, store: [http_req_cnt] }}\n\
         frontends:\n  static:\n    bind: \"127.0.0.1:0\"\n    http_request: [\"track-sc0 src table per_ip\"]\n    default_backend: local\n\
         backends:\n  local:\n    servers:\n      l1: {{ address: \"{}\" }}\n",
        local.addr
    );
    let s = Sidecar::start(&cp, "sotw", &extra);
    let addr = s.listener("ingress").await;
    until_answer(addr, "/", "a").await;
    assert_eq!(get(s.proxy.addr("static"), "/").await.text(), "local");
    let table = || s.proxy.handle().snapshot().tables[0].used();
    assert_eq!(table(), 1);
    // Drain a server at run time.
    let server_a = format!("{}", a.addr);
    let live = s
        .proxy
        .handle()
        .live()
        .find_server(rampart_proxy::state::ServerKey {
            backend: "web",
            server: &server_a,
        })
        .unwrap();
    let be_live = s.proxy.handle().live().backend("web");
    live.set_admin(rampart_proxy::state::AdminState::Drain, &be_live);
    // Updates of every type.
    let c = Origin::named("c").await;
    cp.endpoints(vec![cla_of("web", &[a.addr, b.addr, c.addr])]);
    cp.acked(EDS).await;
    let mut cl = eds_cluster("web");
    cl.connect_timeout = Some(envoy_types::pb::google::protobuf::Duration {
        seconds: 2,
        nanos: 0,
    });
    cp.clusters(vec![cl]);
    cp.acked(CDS).await;
    cp.routes(vec![route_config(
        "r1",
        vec![to_cluster("/x", "web"), to_cluster("/", "web")],
    )]);
    cp.acked(RDS).await;
    let live = s
        .proxy
        .handle()
        .live()
        .find_server(rampart_proxy::state::ServerKey {
            backend: "web",
            server: &server_a,
        })
        .unwrap();
    assert_eq!(live.admin(), rampart_proxy::state::AdminState::Drain);
    let mut seen = Vec::new();
    for _ in 0..30 {
        seen.push(get(addr, "/").await.text());
    }
    let t = tally(seen.iter().map(String::as_str));
    assert!(
        !t.contains_key("a") && t.contains_key("b") && t.contains_key("c"),
        "{t:?}"
    );
    assert_eq!(table(), 1, "the stick table lost its entry");
    s.stop().await;
}
