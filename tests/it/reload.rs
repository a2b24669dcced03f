//! Hot reload: traffic across many reloads loses nothing, a bad configuration changes
//! nothing, runtime server state survives, listeners are reconciled.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::support::*;

fn config(tag: &str, a: &Origin, b: &Origin, extra_fe: &str) -> String {
    format!(
        "global: {{ reload_grace: 50ms }}\n\
         frontends:\n  fe:\n    bind: [\"127.0.0.1:0\"]\n    default_backend: app\n\
         \x20   http_response: [\"set-header x-config {tag}\"]\n{extra_fe}\
         backends:\n  app:\n    servers:\n      a: {{ address: \"{}\" }}\n      b: {{ address: \"{}\", weight: {} }}\n",
        a.addr,
        b.addr,
        if tag == "one" { 1 } else { 3 }
    )
}

/// Sends GETs on keep-alive connections (HTTP/1.1 or h2c) until `stop`, reconnecting
/// when the proxy closes a connection between requests. Returns (answers by config,
/// connections used, failures).
async fn steady_client(
    addr: std::net::SocketAddr,
    h2: bool,
    stop: Arc<AtomicBool>,
) -> (
    std::collections::BTreeMap<String, usize>,
    usize,
    Vec<String>,
) {
    let mut seen = std::collections::BTreeMap::new();
    let mut failures = Vec::new();
    let mut conns = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    'outer: while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        conns += 1;
        enum S {
            H1(hyper::client::conn::http1::SendRequest<TestBody>),
            H2(hyper::client::conn::http2::SendRequest<TestBody>),
        }
        let mut s = if h2 {
            let (s, c) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                    .await
                    .unwrap();
            tokio::spawn(c);
            S::H2(s)
        } else {
            let (s, c) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .unwrap();
            tokio::spawn(c);
            S::H1(s)
        };
        loop {
            if stop.load(Ordering::SeqCst) {
                break 'outer;
            }
            // A connection the proxy closed (Connection: close, GOAWAY) is replaced
            // before the next request, as any client does.
            let ready = match &mut s {
                S::H1(s) => s.ready().await.is_ok(),
                S::H2(s) => s.ready().await.is_ok(),
            };
            if !ready {
                continue 'outer;
            }
            let uri = if h2 {
                format!("http://localhost:{}/", addr.port())
            } else {
                "/".to_owned()
            };
            // HTTP/2 names the host in :authority; a different Host would be refused.
            let mut req = Request::get(uri).body(empty()).unwrap();
            if !h2 {
                req.headers_mut()
                    .insert("host", http::HeaderValue::from_static("localhost"));
            }
            let resp = match &mut s {
                S::H1(s) => s.send_request(req).await,
                S::H2(s) => s.send_request(req).await,
            };
            match resp {
                Ok(r) if r.status() == 200 => {
                    let tag = r
                        .headers()
                        .get("x-config")
                        .map(|v| v.to_str().unwrap().to_owned())
                        .unwrap_or_default();
                    *seen.entry(tag).or_insert(0) += 1;
                    if http_body_util::BodyExt::collect(r.into_body())
                        .await
                        .is_err()
                    {
                        failures.push("body failed".to_owned());
                    }
                }
                Ok(r) => failures.push(format!("status {}", r.status())),
                // Requests the server never saw: hyper could not send it on a connection
                // that was closing, or an HTTP/2 GOAWAY refused the stream (RFC 9113
                // section 6.8). Clients send those again, on a new connection.
                Err(e) if e.is_canceled() || format!("{e:?}").contains("GoAway") => {
                    continue 'outer;
                }
                Err(e) => failures.push(format!("{e:?}")),
            }
        }
    }
    (seen, conns, failures)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_reloads_under_traffic_lose_no_request() {
    let a = Origin::named("a").await;
    let b = Origin::named("b").await;
    let p = Proxy::start(&config("one", &a, &b, ""));
    let fe = p.addr("fe");
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = [false, true, false, true]
        .into_iter()
        .map(|h2| tokio::spawn(steady_client(fe, h2, stop.clone())))
        .collect();
    for i in 0..20 {
        tokio::time::sleep(Duration::from_millis(75)).await;
        let tag = if i % 2 == 0 { "two" } else { "one" };
        let r = p.reload(&config(tag, &a, &b, "")).unwrap();
        assert_eq!(r.generation, i + 2);
        assert!(r.listeners_added.is_empty() && r.listeners_removed.is_empty());
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    stop.store(true, Ordering::SeqCst);
    let mut total = 0;
    for c in clients {
        let (seen, conns, failures) = c.await.unwrap();
        assert!(failures.is_empty(), "failed requests: {failures:?}");
        assert!(
            seen.contains_key("one") && seen.contains_key("two"),
            "{seen:?}"
        );
        // The reloads change rules and weights only: open connections serve their next
        // requests with the new configuration and stay open.
        assert_eq!(
            conns, 1,
            "connections were closed by reloads that changed no connection setting"
        );
        total += seen.values().sum::<usize>();
    }
    assert!(total > 100, "{total} requests");
    let g = &p.handle().live().global;
    assert_eq!(g.reloads_ok.load(Ordering::Relaxed), 20);
    assert_eq!(g.generation.load(Ordering::Relaxed), 21);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_reload_changes_nothing_and_runtime_state_survives() {
    let a = Origin::named("a").await;
    let b = Origin::named("b").await;
    let p = Proxy::start(&config("one", &a, &b, ""));
    let fe = p.addr("fe");
    let live = p.handle().live().clone();
    let be = live.backend("app");
    live.find_server(rampart_proxy::state::ServerKey {
        backend: "app",
        server: "b",
    })
    .unwrap()
    .set_admin(rampart_proxy::state::AdminState::Drain, &be);

    let limits = || {
        let fe_live = live.frontend("fe");
        let a_live = live
            .find_server(rampart_proxy::state::ServerKey {
                backend: "app",
                server: "a",
            })
            .unwrap();
        (
            live.global.limit.load(Ordering::Relaxed),
            fe_live.limit.load(Ordering::Relaxed),
            a_live.max_active.load(Ordering::Relaxed),
        )
    };
    let before = limits();
    assert_eq!((before.1, before.2), (0, 0));

    // A certificate that does not exist: compiling fails, nothing changes, not even the
    // limits the same configuration sets.
    let with_limits = |c: String| {
        c.replace(
            "global: { reload_grace: 50ms }",
            "global: { reload_grace: 50ms, max_connections: 123 }",
        )
        .replace(
            "    default_backend: app\n",
            "    default_backend: app\n    max_connections: 9\n",
        )
        .replace(
            &format!("a: {{ address: \"{}\" }}", a.addr),
            &format!("a: {{ address: \"{}\", max_connections: 7 }}", a.addr),
        )
    };
    let bad = with_limits(config("two", &a, &b, "")).replace(
        "    bind: [\"127.0.0.1:0\"]\n",
        "    bind: [\"127.0.0.1:0\", { address: \"127.0.0.1:0\", tls: { certificates: [{ cert: missing.pem, key: missing.key }] } }]\n",
    );
    assert!(bad.contains("max_connections: 7") && bad.contains("max_connections: 9"));
    let err = p.reload(&bad).unwrap_err();
    assert_eq!(limits(), before, "a refused configuration set limits");
    assert!(
        err.contains("frontends.fe.bind.1.tls") && err.contains("missing.pem"),
        "{err}"
    );
    let got = get(fe, "/").await;
    assert_eq!(got.header("x-config"), Some("one"));
    assert_eq!(
        p.handle()
            .live()
            .global
            .reloads_failed
            .load(Ordering::Relaxed),
        1
    );
    assert_eq!(p.handle().bound().len(), 1);

    // A good reload keeps b drained (its state lives outside the configuration), and
    // sets its limits.
    p.reload(&with_limits(config("two", &a, &b, ""))).unwrap();
    assert_eq!(limits(), (123, 9, 7));
    for _ in 0..20 {
        let got = get(fe, "/").await;
        assert_eq!(
            (got.text(), got.header("x-config")),
            ("a".to_owned(), Some("two"))
        );
    }
    assert_eq!(
        live.find_server(rampart_proxy::state::ServerKey {
            backend: "app",
            server: "b"
        })
        .unwrap()
        .status_text(),
        "DRAIN"
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_of_connection_settings_moves_open_connections_after_the_grace_time() {
    let a = Origin::named("a").await;
    let b = Origin::named("b").await;
    let p = Proxy::start(&config("one", &a, &b, ""));
    let fe = p.addr("fe");
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = [false, true]
        .into_iter()
        .map(|h2| tokio::spawn(steady_client(fe, h2, stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A new client timeout: connections are served the old way until they move on.
    let timeouts = "    timeouts: { client: 45s }\n";
    p.reload(&config("two", &a, &b, timeouts)).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        let (seen, conns, failures) = c.await.unwrap();
        assert!(failures.is_empty(), "failed requests: {failures:?}");
        assert!(seen.contains_key("two"), "{seen:?}");
        assert!(
            conns >= 2,
            "connections stayed on the old settings: {conns}"
        );
    }
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_removes_and_adds_frontends() {
    let a = Origin::named("a").await;
    let b = Origin::named("b").await;
    let p = Proxy::start(&config("one", &a, &b, ""));
    let old = p.addr("fe");
    assert_eq!(get(old, "/").await.status, 200);
    let renamed = config("two", &a, &b, "").replace("  fe:\n", "  www:\n");
    let r = p.reload(&renamed).unwrap();
    assert_eq!(r.listeners_added.len(), 1);
    assert_eq!(r.listeners_removed.len(), 1);
    let new = p.addr("www");
    assert_ne!(new, old);
    let got = get(new, "/").await;
    assert_eq!(got.header("x-config"), Some("two"));
    // The removed frontend's socket is closed: connections are refused.
    assert!(
        eventually(Duration::from_secs(5), || std::net::TcpStream::connect(old)
            .is_err())
        .await,
        "{old} still accepts"
    );
    assert!(p.addr_opt("fe").is_none());
    p.stop().await;
}
