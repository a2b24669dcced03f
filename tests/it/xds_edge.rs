//! rampart driven by a control plane, beyond the protocol: Envoy's route matches and
//! actions, TLS to the control plane, names taken by the static configuration, responses
//! that are too large or of the wrong type.

use std::sync::Arc;
use std::time::Duration;

use http::Request;

use crate::cp::*;
use crate::support::*;
use crate::xds::{Sidecar, basic, until_answer};

/// A request with a host and headers; the answer.
async fn ask(addr: std::net::SocketAddr, host: &str, path: &str, headers: &[(&str, &str)]) -> Got {
    let mut b = Request::get(path).header("host", host);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(Client::H1, addr, b.body(empty()).unwrap(), None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_matches_and_actions_behave_as_in_envoy() {
    use envoy_types::pb::envoy::config::core::v3 as core;
    use envoy_types::pb::envoy::config::route::v3 as rt;
    use envoy_types::pb::envoy::r#type::matcher::v3 as m;
    // The origins echo what they received.
    let echo = |name: &'static str| {
        move |s: &crate::support::Seen| {
            let h = |n: &str| {
                s.headers
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-")
                    .to_owned()
            };
            text(
                200,
                &format!(
                    "{name} {} host={} added={} removed={}",
                    s.uri,
                    h("host"),
                    h("x-added"),
                    h("x-remove-me")
                ),
            )
        }
    };
    let a = Origin::start("a", echo("a")).await;
    let b = Origin::start("b", echo("b")).await;
    let cp = Cp::start().await;
    cp.clusters(vec![eds_cluster("ca"), eds_cluster("cb")]);
    cp.endpoints(vec![cla_of("ca", &[a.addr]), cla_of("cb", &[b.addr])]);
    let m_prefix = |p: &str| rt::RouteMatch {
        path_specifier: Some(rt::route_match::PathSpecifier::Prefix(p.into())),
        ..Default::default()
    };
    let direct = |mt: rt::RouteMatch, status: u32, body: &str| rt::Route {
        r#match: Some(mt),
        action: Some(rt::route::Action::DirectResponse(
            rt::DirectResponseAction {
                status,
                body: Some(core::DataSource {
                    specifier: Some(core::data_source::Specifier::InlineString(body.into())),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )),
        ..Default::default()
    };
    let hv = |k: &str, v: &str| core::HeaderValueOption {
        header: Some(core::HeaderValue {
            key: k.into(),
            value: v.into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut canary = to_cluster("/v1/", "cb");
    canary.r#match.as_mut().unwrap().headers = vec![rt::HeaderMatcher {
        name: "x-canary".into(),
        header_match_specifier: Some(rt::header_matcher::HeaderMatchSpecifier::StringMatch(
            m::StringMatcher {
                match_pattern: Some(m::string_matcher::MatchPattern::Exact("yes".into())),
                ..Default::default()
            },
        )),
        ..Default::default()
    }];
    let mut v1 = to_cluster("/v1/", "ca");
    if let Some(rt::route::Action::Route(act)) = &mut v1.action {
        act.prefix_rewrite = "/internal/".into();
        act.host_rewrite_specifier = Some(
            rt::route_action::HostRewriteSpecifier::HostRewriteLiteral("backend.internal".into()),
        );
    }
    v1.request_headers_to_add = vec![hv("x-added", "v1")];
    v1.request_headers_to_remove = vec!["x-remove-me".into()];
    v1.response_headers_to_add = vec![hv("x-resp", "yes")];
    let mut items = to_cluster("/", "cb");
    items.r#match = Some(rt::RouteMatch {
        path_specifier: Some(rt::route_match::PathSpecifier::SafeRegex(m::RegexMatcher {
            regex: "/items/[0-9]+".into(),
            ..Default::default()
        })),
        ..Default::default()
    });
    let mut debug = m_prefix("/q");
    debug.query_parameters = vec![rt::QueryParameterMatcher {
        name: "debug".into(),
        query_parameter_match_specifier: Some(
            rt::query_parameter_matcher::QueryParameterMatchSpecifier::PresentMatch(true),
        ),
    }];
    let redirect = rt::Route {
        r#match: Some(m_prefix("/old")),
        action: Some(rt::route::Action::Redirect(rt::RedirectAction {
            path_rewrite_specifier: Some(rt::redirect_action::PathRewriteSpecifier::PathRedirect(
                "/new".into(),
            )),
            host_redirect: "example.com".into(),
            response_code: rt::redirect_action::RedirectResponseCode::Found as i32,
            ..Default::default()
        })),
        ..Default::default()
    };
    let mut exact = m_prefix("/");
    exact.path_specifier = Some(rt::route_match::PathSpecifier::Path("/exact".into()));
    let vhost = |name: &str, domains: &[&str], routes: Vec<rt::Route>| rt::VirtualHost {
        name: name.into(),
        domains: domains.iter().map(|d| (*d).into()).collect(),
        routes,
        ..Default::default()
    };
    let mut rc = route_config("r1", vec![]);
    rc.virtual_hosts = vec![
        vhost(
            "api",
            &["api.test"],
            vec![
                direct(exact, 200, "exact"),
                canary,
                v1,
                items,
                direct(debug, 418, "debug"),
                redirect,
            ],
        ),
        vhost(
            "wild",
            &["*.wild.test"],
            vec![direct(m_prefix("/"), 200, "wild")],
        ),
        vhost(
            "only",
            &["only.test"],
            vec![direct(m_prefix("/only"), 200, "only")],
        ),
        vhost("any", &["*"], vec![to_cluster("/", "ca")]),
    ];
    cp.listeners(vec![listener("ingress", 0, "r1")]);
    cp.routes(vec![rc.clone()]);
    let s = Sidecar::start(&cp, "sotw", "");
    let addr = s.listener("ingress").await;
    cp.acked(RDS).await;
    let t = |g: Got| g.text();
    assert_eq!(t(ask(addr, "api.test", "/exact", &[]).await), "exact");
    assert_eq!(t(ask(addr, "API.test", "/exact", &[]).await), "exact");
    // A header match; first match wins.
    assert!(t(ask(addr, "api.test", "/v1/x", &[("x-canary", "yes")]).await).starts_with("b /v1/x"));
    // Prefix rewrite, host rewrite, headers added and removed, response headers.
    let g = ask(addr, "api.test", "/v1/users?id=3", &[("x-remove-me", "1")]).await;
    assert_eq!(g.header("x-resp"), Some("yes"));
    assert_eq!(
        t(g),
        "a /internal/users?id=3 host=backend.internal added=v1 removed=-"
    );
    // A regex matches the whole path.
    assert!(t(ask(addr, "api.test", "/items/42", &[]).await).starts_with("b /items/42"));
    assert_eq!(ask(addr, "api.test", "/items/42x", &[]).await.status, 404);
    // Query parameters.
    let g = ask(addr, "api.test", "/q?debug=1", &[]).await;
    assert_eq!((g.status.as_u16(), g.text()), (418, "debug".to_owned()));
    assert_eq!(ask(addr, "api.test", "/q?x=1", &[]).await.status, 404);
    // A redirect.
    let g = ask(addr, "api.test", "/old/page", &[]).await;
    assert_eq!(g.status, 302);
    assert_eq!(g.header("location"), Some("http://example.com/new"));
    // Virtual hosts: a suffix wildcard, exact names without fallthrough, the default.
    assert_eq!(t(ask(addr, "x.wild.test", "/", &[]).await), "wild");
    assert_eq!(ask(addr, "only.test", "/other", &[]).await.status, 404);
    assert!(t(ask(addr, "elsewhere.test", "/z", &[]).await).starts_with("a /z"));
    // A port in the host is part of the name: api.test:80 is not api.test...
    assert!(t(ask(addr, "api.test:80", "/exact", &[]).await).starts_with("a /exact"));
    // ... unless the route configuration ignores ports (as Istio's do).
    rc.ignore_port_in_host_matching = true;
    cp.routes(vec![rc]);
    cp.acked(RDS).await;
    let g = ask(addr, "api.test:80", "/exact", &[]).await;
    assert_eq!(g.text(), "exact");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_responses_end_the_stream_and_the_last_configuration_serves() {
    let a = Origin::named("a").await;
    let cp = Cp::start().await;
    basic(&cp, &[a.addr]);
    let yaml = format!(
        "xds:\n  server: {}\n  node: {{ id: test-node }}\n  backoff: {{ base: 50ms, max: 200ms }}\n",
        cp.url()
    );
    let s = Sidecar::from_yaml(&yaml, |s| s.max_message = 64 << 10);
    let addr = s.listener("ingress").await;
    assert_eq!(until_answer(addr, "/", "a").await, "a");
    // 2,000 clusters: over the 64 KiB this client accepts.
    let many: Vec<_> = (0..2000)
        .map(|i| eds_cluster(&format!("cluster-{i:04}")))
        .collect();
    cp.clusters(many);
    let ended = eventually(Duration::from_secs(10), || {
        s.show()
            .lines()
            .nth(1)
            .is_some_and(|l| l.contains("message length too large") || l.contains("OutOfRange"))
    })
    .await;
    assert!(ended, "{}", s.show());
    for _ in 0..10 {
        assert_eq!(get(addr, "/").await.text(), "a");
    }
    // A resource that is not what its type says.
    cp.set(CDS, vec![("web".into(), any(&route_config("web", vec![])))]);
    let n = cp
        .wait(Duration::from_secs(10), "NACK", |x| {
            x.type_url == CDS && x.error.is_some()
        })
        .await;
    assert!(n.error.unwrap().contains("RouteConfiguration"));
    assert_eq!(get(addr, "/").await.text(), "a");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_the_control_plane_with_a_client_certificate() {
    let pki = Pki::new();
    let (cert, key) = pki.issue("cp", &["cp.test"], false);
    let (ccert, ckey) = pki.issue("node", &["sidecar-1"], false);
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    use rustls_pki_types::pem::PemObject;
    let chain: Vec<_> = rustls_pki_types::CertificateDer::pem_file_iter(&cert)
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let k = rustls_pki_types::PrivateKeyDer::from_pem_file(&key).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .unwrap();
    let mut server = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, k)
        .unwrap();
    server.alpn_protocols = vec![b"h2".to_vec()];
    let a = Origin::named("a").await;
    let cp = Cp::start_tls(Arc::new(server)).await;
    basic(&cp, &[a.addr]);
    let ca = pki.dir.join("ca.pem");
    let yaml = format!(
        "xds:\n  server: https://{}\n  node: {{ id: sidecar-1 }}\n  tls: {{ ca: {}, cert: {}, key: {}, sni: cp.test }}\n",
        cp.addr,
        ca.display(),
        ccert.display(),
        ckey.display()
    );
    let s = Sidecar::from_yaml(&yaml, |_| {});
    let addr = s.listener("ingress").await;
    assert_eq!(until_answer(addr, "/", "a").await, "a");
    s.stop().await;
    // Without the client certificate the control plane refuses the connection.
    let yaml = format!(
        "xds:\n  server: https://{}\n  node: {{ id: sidecar-1 }}\n  tls: {{ ca: {}, sni: cp.test }}\n  backoff: {{ base: 50ms, max: 100ms }}\n",
        cp.addr,
        ca.display()
    );
    let before = cp.requests();
    let s = Sidecar::from_yaml(&yaml, |_| {});
    let failed = eventually(Duration::from_secs(10), || {
        s.show()
            .lines()
            .nth(1)
            .is_some_and(|l| l.contains("disconnected") && !l.ends_with(" -"))
    })
    .await;
    assert!(failed, "{}", s.show());
    assert_eq!(cp.requests(), before);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_taken_by_the_static_configuration_are_refused() {
    let a = Origin::named("a").await;
    let cp = Cp::start().await;
    basic(&cp, &[a.addr]);
    let extra = format!(
        "backends:\n  web:\n    servers:\n      s: {{ address: \"{}\" }}\n",
        a.addr
    );
    let s = Sidecar::start(&cp, "sotw", &extra);
    let n = cp
        .wait(Duration::from_secs(10), "NACK", |x| {
            x.type_url == CDS && x.error.is_some()
        })
        .await;
    assert!(
        n.error
            .as_deref()
            .unwrap()
            .contains("cluster \"web\": a backend of that name is in the static configuration"),
        "{}",
        s.show()
    );
    // The static backend keeps serving the listener's routes.
    let addr = s.listener("ingress").await;
    assert_eq!(until_answer(addr, "/", "a").await, "a");
    s.stop().await;
}

/// A DataSource of inline text.
fn inline(text: &str) -> envoy_types::pb::envoy::config::core::v3::DataSource {
    use envoy_types::pb::envoy::config::core::v3 as core;
    core::DataSource {
        specifier: Some(core::data_source::Specifier::InlineString(text.into())),
        ..Default::default()
    }
}

/// A DataSource of a file.
fn file(p: &std::path::Path) -> envoy_types::pb::envoy::config::core::v3::DataSource {
    use envoy_types::pb::envoy::config::core::v3 as core;
    core::DataSource {
        specifier: Some(core::data_source::Specifier::Filename(
            p.display().to_string(),
        )),
        ..Default::default()
    }
}

/// A transport socket with a TLS context.
fn tls_socket<T: prost::Message + prost::Name>(
    ctx: T,
) -> envoy_types::pb::envoy::config::core::v3::TransportSocket {
    use envoy_types::pb::envoy::config::core::v3 as core;
    core::TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(core::transport_socket::ConfigType::TypedConfig(any(&ctx))),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_terminate_tls_with_inline_or_file_certificates() {
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
    let pki = Pki::new();
    let (cert, key) = pki.issue("api", &["api.test"], false);
    let pem = |p: &std::path::Path| std::fs::read_to_string(p).unwrap();
    let a = Origin::named("a").await;
    let cp = Cp::start().await;
    cp.clusters(vec![eds_cluster("web")]);
    cp.endpoints(vec![cla_of("web", &[a.addr])]);
    let with_tls = |name: &str, chain, key| {
        let mut l = listener(name, 0, "r1");
        l.filter_chains[0].transport_socket = Some(tls_socket(tls::DownstreamTlsContext {
            common_tls_context: Some(tls::CommonTlsContext {
                tls_certificates: vec![tls::TlsCertificate {
                    certificate_chain: Some(chain),
                    private_key: Some(key),
                    ..Default::default()
                }],
                alpn_protocols: vec!["h2".into(), "http/1.1".into()],
                ..Default::default()
            }),
            ..Default::default()
        }));
        l
    };
    let inline_l = with_tls("inline", inline(&pem(&cert)), inline(&pem(&key)));
    let file_l = with_tls("file", file(&cert), file(&key));
    cp.listeners(vec![inline_l, file_l]);
    cp.routes(vec![route_config("r1", vec![to_cluster("/", "web")])]);
    let s = Sidecar::start(&cp, "sotw", "");
    for name in ["inline", "file"] {
        let addr = s.listener(name).await;
        for mode in [Client::TlsH1, Client::TlsH2] {
            let req = Request::get("/").body(empty()).unwrap();
            let g = send(mode, addr, req, Some((&pki.ca_pem, "api.test"))).await;
            assert_eq!(g.text(), "a", "{name} {mode:?}");
        }
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_cluster_over_tls_with_health_checks_and_maglev_hashing() {
    use envoy_types::pb::envoy::config::cluster::v3 as cl;
    use envoy_types::pb::envoy::config::core::v3 as core;
    use envoy_types::pb::envoy::config::route::v3 as rt;
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
    use envoy_types::pb::google::protobuf::{Duration as PDuration, UInt32Value};
    let pki = Pki::new();
    let (cert, key) = pki.issue("backend", &["backend.test"], false);
    let mut origins = Vec::new();
    let mut snis = Vec::new();
    for name in ["t1", "t2", "t3"] {
        let (addr, sni) = tls_origin(&cert, &key, move |_| text(200, name)).await;
        origins.push(addr);
        snis.push(sni);
    }
    let cp = Cp::start().await;
    let mut c = eds_cluster("secure");
    c.cluster_discovery_type = Some(cl::cluster::ClusterDiscoveryType::Type(
        cl::cluster::DiscoveryType::Static as i32,
    ));
    c.eds_cluster_config = None;
    c.load_assignment = Some(cla_of("secure", &origins));
    c.lb_policy = cl::cluster::LbPolicy::Maglev as i32;
    c.transport_socket = Some(tls_socket(tls::UpstreamTlsContext {
        sni: "backend.test".into(),
        common_tls_context: Some(tls::CommonTlsContext {
            validation_context_type: Some(
                tls::common_tls_context::ValidationContextType::ValidationContext(
                    tls::CertificateValidationContext {
                        trusted_ca: Some(inline(&pki.ca_pem)),
                        ..Default::default()
                    },
                ),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }));
    let ms = |ms: i32| {
        Some(PDuration {
            seconds: 0,
            nanos: ms * 1_000_000,
        })
    };
    c.health_checks = vec![core::HealthCheck {
        timeout: ms(500),
        interval: ms(100),
        unhealthy_threshold: Some(UInt32Value { value: 2 }),
        healthy_threshold: Some(UInt32Value { value: 1 }),
        health_checker: Some(core::health_check::HealthChecker::HttpHealthCheck(
            core::health_check::HttpHealthCheck {
                path: "/health".into(),
                ..Default::default()
            },
        )),
        ..Default::default()
    }];
    c.outlier_detection = Some(cl::OutlierDetection::default());
    c.circuit_breakers = Some(cl::CircuitBreakers {
        thresholds: vec![cl::circuit_breakers::Thresholds {
            max_requests: Some(UInt32Value { value: 64 }),
            ..Default::default()
        }],
        ..Default::default()
    });
    cp.clusters(vec![c]);
    let mut route = to_cluster("/", "secure");
    if let Some(rt::route::Action::Route(a)) = &mut route.action {
        a.hash_policy = vec![rt::route_action::HashPolicy {
            policy_specifier: Some(rt::route_action::hash_policy::PolicySpecifier::Header(
                rt::route_action::hash_policy::Header {
                    header_name: "x-user".into(),
                    ..Default::default()
                },
            )),
            ..Default::default()
        }];
    }
    cp.listeners(vec![listener("ingress", 0, "r1")]);
    cp.routes(vec![route_config("r1", vec![route])]);
    let s = Sidecar::start(&cp, "delta", "");
    let addr = s.listener("ingress").await;
    let snap = s.proxy.handle().snapshot();
    let be = &snap.backends[snap.backend_index("secure").unwrap()];
    assert_eq!(be.gate.map(|g| g.max_requests), Some(64));
    let up = eventually(Duration::from_secs(10), || {
        be.servers
            .iter()
            .all(|x| x.live.status_text().starts_with("UP") && x.live.check_info().enabled)
    })
    .await;
    assert!(
        up,
        "{:?}",
        be.servers
            .iter()
            .map(|x| x.live.status_text())
            .collect::<Vec<_>>()
    );
    // One user always reaches the same server; users spread over the servers.
    let ask = |user: String| async move {
        let req = Request::get("/")
            .header("x-user", user)
            .body(empty())
            .unwrap();
        send(Client::H1, addr, req, None).await.text()
    };
    let mut seen = std::collections::BTreeSet::new();
    for u in 0..30 {
        let first = ask(format!("user-{u}")).await;
        assert_eq!(ask(format!("user-{u}")).await, first);
        seen.insert(first);
    }
    assert!(seen.len() >= 2, "{seen:?}");
    let names = snis
        .iter()
        .flat_map(|s| s.lock().unwrap().clone())
        .collect::<std::collections::BTreeSet<_>>();
    assert_eq!(names.into_iter().collect::<Vec<_>>(), ["backend.test"]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_policies_retry_and_removed_endpoints_finish_their_requests() {
    use envoy_types::pb::envoy::config::route::v3 as rt;
    let bad = Origin::start("bad", |_| text(503, "bad")).await;
    let good = Origin::named("good").await;
    let slow = Origin::start("slow", |_| delayed(Duration::from_millis(500), 200, "slow")).await;
    let cp = Cp::start().await;
    cp.clusters(vec![eds_cluster("web"), eds_cluster("slow")]);
    cp.endpoints(vec![
        cla_of("web", &[bad.addr, good.addr]),
        cla_of("slow", &[slow.addr]),
    ]);
    let mut r = to_cluster("/", "web");
    if let Some(rt::route::Action::Route(a)) = &mut r.action {
        a.retry_policy = Some(rt::RetryPolicy {
            retry_on: "retriable-status-codes".into(),
            retriable_status_codes: vec![503],
            num_retries: Some(envoy_types::pb::google::protobuf::UInt32Value { value: 2 }),
            ..Default::default()
        });
    }
    cp.listeners(vec![listener("ingress", 0, "r1")]);
    cp.routes(vec![route_config(
        "r1",
        vec![to_cluster("/slow", "slow"), r],
    )]);
    let s = Sidecar::start(&cp, "sotw", "");
    let addr = s.listener("ingress").await;
    assert_eq!(until_answer(addr, "/", "good").await, "good");
    for _ in 0..20 {
        let g = get(addr, "/").await;
        assert_eq!((g.status.as_u16(), g.text()), (200, "good".to_owned()));
    }
    assert!(bad.count() > 0, "the failing server was never tried");
    // An endpoint removed while a request is at it: the request finishes.
    let in_flight = tokio::spawn(async move { get(addr, "/slow").await });
    let arrived = eventually(Duration::from_secs(5), || slow.count() == 1).await;
    assert!(arrived);
    cp.endpoints(vec![
        cla_of("web", &[bad.addr, good.addr]),
        cla_of("slow", &[good.addr]),
    ]);
    cp.acked(EDS).await;
    let g = in_flight.await.unwrap();
    assert_eq!((g.status.as_u16(), g.text()), (200, "slow".to_owned()));
    assert_eq!(get(addr, "/slow").await.text(), "good");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_plane_that_stalls_leaves_the_static_configuration_serving() {
    // Accepts connections and never answers.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = l.accept().await {
            conns.push(c);
        }
    });
    let local = Origin::named("local").await;
    let yaml = format!(
        "xds:\n  server: http://{addr}\n  node: {{ id: n }}\n\
         frontends:\n  fe: {{ bind: \"127.0.0.1:0\", default_backend: local }}\n\
         backends:\n  local: {{ servers: {{ s: {{ address: \"{}\" }} }} }}\n",
        local.addr
    );
    let s = Sidecar::from_yaml(&yaml, |_| {});
    for _ in 0..10 {
        assert_eq!(get(s.proxy.addr("fe"), "/").await.text(), "local");
    }
    let shown = s.show();
    let conn = shown.lines().nth(1).unwrap();
    assert!(
        conn.contains(" disconnected ") && conn.contains(" 0 0 "),
        "{shown}"
    );
    s.stop().await;
    held.abort();
}

/// A listener with Envoy's `tcp_proxy` filter: a frontend in mode tcp.
fn tcp_listener(
    name: &str,
    spec: envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::tcp_proxy::ClusterSpecifier,
) -> envoy_types::pb::envoy::config::listener::v3::Listener {
    use envoy_types::pb::envoy::config::listener::v3 as ls;
    use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy;
    let t = TcpProxy {
        stat_prefix: name.into(),
        cluster_specifier: Some(spec),
        max_connect_attempts: Some(envoy_types::pb::google::protobuf::UInt32Value { value: 2 }),
        ..Default::default()
    };
    let mut l = listener("unused", 0, "r1");
    l.name = name.into();
    l.filter_chains = vec![ls::FilterChain {
        filters: vec![ls::Filter {
            name: "envoy.filters.network.tcp_proxy".into(),
            config_type: Some(ls::filter::ConfigType::TypedConfig(any(&t))),
        }],
        ..Default::default()
    }];
    l
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_proxy_listeners_relay_in_mode_tcp() {
    use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::tcp_proxy::ClusterSpecifier;
    use rampart_config::model::Mode;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // An echo server, as a database or mail server stands for here.
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    let held = tokio::spawn(async move {
        while let Ok((mut s, _)) = echo.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let a = Origin::named("a").await;
    let cp = Cp::start().await;
    basic(&cp, &[a.addr]);
    cp.clusters(vec![eds_cluster("web"), eds_cluster("db")]);
    cp.endpoints(vec![cla_of("web", &[a.addr]), cla_of("db", &[echo_addr])]);
    cp.listeners(vec![
        listener("ingress", 0, "r1"),
        tcp_listener("db_in", ClusterSpecifier::Cluster("db".into())),
        // `web` serves HTTP routes too: the tcp listener gets its mode tcp twin.
        tcp_listener("web_in", ClusterSpecifier::Cluster("web".into())),
    ]);
    let s = Sidecar::start(&cp, "sotw", "");
    let ingress = s.listener("ingress").await;
    let (db_in, web_in) = (s.listener("db_in").await, s.listener("web_in").await);
    assert_eq!(until_answer(ingress, "/", "a").await, "a", "{}", s.show());

    let mut c = tokio::net::TcpStream::connect(db_in).await.unwrap();
    c.write_all(b"PING 1\r\n").await.unwrap();
    let mut got = [0u8; 8];
    tokio::time::timeout(Duration::from_secs(10), c.read_exact(&mut got))
        .await
        .expect("echo timed out")
        .unwrap();
    assert_eq!(&got, b"PING 1\r\n");
    drop(c);
    // Raw bytes relayed to the HTTP origin through the twin.
    let mut c = tokio::net::TcpStream::connect(web_in).await.unwrap();
    let answer = raw_one(&mut c, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("a"),
        "{answer}"
    );

    let snap = s.proxy.handle().snapshot();
    assert_eq!(snap.frontend("db_in").unwrap().mode, Mode::Tcp);
    let mode_of = |n: &str| snap.backends[snap.backend_index(n).unwrap()].mode;
    assert_eq!(mode_of("db"), Mode::Tcp);
    assert_eq!(mode_of("web"), Mode::Http);
    assert_eq!(mode_of("web~tcp"), Mode::Tcp);
    let be = &snap.backends[snap.backend_index("db").unwrap()];
    assert_eq!(be.tunnel_timeout, Some(Duration::from_secs(3600)));
    drop(c);
    s.stop().await;
    held.abort();
}
