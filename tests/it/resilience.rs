//! Resilience with real servers and real traffic: failover with health checks and
//! retries, silent servers, outlier ejection, circuit breakers and the queue, retry
//! budgets, flapping servers, and gRPC health checks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rampart_proxy::state::ServerLive;

use crate::stall::Budget;
use crate::support::*;

/// How long a slow origin takes to answer: long enough that a request still holds its
/// connection or slot when the next one arrives, even across a stall of the machine.
const SLOW: Duration = Duration::from_secs(3);

fn server(p: &Proxy, backend: &str, name: &str) -> Arc<ServerLive> {
    p.handle()
        .live()
        .find_server(rampart_proxy::state::ServerKey {
            backend,
            server: name,
        })
        .expect("server state")
}

/// Waits until `s` shows `status`; returns how long that took.
async fn until_status(s: &ServerLive, status: &str, limit: Duration) -> Duration {
    let started = Instant::now();
    let reached = eventually(limit, || s.status_text() == status).await;
    assert!(
        reached,
        "server still {:?} after {limit:?}, wanted {status:?}",
        s.status_text()
    );
    started.elapsed()
}

/// A server that accepts connections and never answers.
async fn silent_server() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    (addr, task)
}

fn servers_yaml(list: &[(&str, SocketAddr)]) -> String {
    list.iter()
        .map(|(n, a)| format!("      {n}: {{ address: \"{a}\" }}\n"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_server_fails_no_request_goes_down_and_comes_back() {
    let a = Origin::named("a").await;
    let b = Origin::named("b").await;
    let c = Origin::named("c").await;
    let b_addr = b.addr;
    let p = Proxy::start(&format!(
        "frontends:\n  fe:\n    bind: [\"127.0.0.1:0\"]\n    default_backend: app\n\
         backends:\n  app:\n\
         \x20   health_check: {{ http: {{ path: /health }}, interval: 100ms, timeout: 200ms, rise: 2, fall: 2 }}\n\
         \x20   retries: {{ attempts: 2, on: [connect-failure, empty-response, reset, junk-response], backoff: {{ base: 1ms, max: 5ms }} }}\n\
         \x20   servers:\n{}",
        servers_yaml(&[("a", a.addr), ("b", b.addr), ("c", c.addr)])
    ));
    let fe = p.addr("fe");
    let sb = server(&p, "app", "b");
    until_status(&sb, "UP", Duration::from_secs(5)).await;

    // Two clients send a GET every 5 ms for the whole test (back to back, they would
    // starve the checker of the same process on a small machine).
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..2 {
        let stop = stop.clone();
        clients.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0usize, Vec::new());
            let deadline = Instant::now() + Duration::from_secs(30);
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                match try_request(fe, None, "/").await {
                    Ok((200, _)) => ok += 1,
                    other => failed.push(format!("{other:?}")),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (ok, failed)
        }));
    }
    assert!(eventually(Duration::from_secs(5), || b.count() > 20).await);

    // fall x interval, plus one timeout, plus jitter and scheduling slack.
    let w = Budget::new(Duration::from_millis(2 * 110 + 200 + 500));
    b.kill();
    let down = until_status(&sb, "DOWN", Duration::from_secs(5)).await;
    assert!(w.fits(down), "DOWN after {}", w.show(down));
    let last = sb.check.lock().unwrap().last.clone().unwrap();
    assert_eq!(last.status.as_str(), "L4CON");

    let w = Budget::new(Duration::from_millis(2 * 110 + 400));
    let b2 = Origin::start_on(b_addr, "b", |_| text(200, "b")).await;
    let up = until_status(&sb, "UP", Duration::from_secs(5)).await;
    assert!(w.fits(up), "UP after {}", w.show(up));
    assert!(
        eventually(Duration::from_secs(5), || b2
            .seen
            .lock()
            .unwrap()
            .iter()
            .any(|s| s.uri.path() == "/"))
        .await,
        "the restarted server gets requests again"
    );
    stop.store(true, Ordering::SeqCst);
    let mut total = 0;
    for c in clients {
        let (ok, failed) = c.await.unwrap();
        assert!(failed.is_empty(), "failed requests: {failed:?}");
        total += ok;
    }
    println!(
        "killed server DOWN after {down:?}, UP {up:?} after restart; {total} requests, none failed"
    );
    assert!(total > 50, "only {total} requests");
    let info = sb.check.lock().unwrap().clone();
    assert_eq!(info.downs, 1);
    assert!(info.failures >= 2);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_server_gives_504_or_retries_elsewhere_within_per_try_timeout() {
    let (silent, _t) = silent_server().await;
    let good = Origin::named("good").await;
    let p = Proxy::start(&format!(
        "frontends:\n  fe:\n    bind: [\"127.0.0.1:0\"]\n    use_backend:\n\
         \x20     - {{ backend: retrying, if: \"{{ path_beg /retry }}\" }}\n\
         \x20   default_backend: alone\n\
         backends:\n\
         \x20 alone:\n    timeouts: {{ server: 300ms }}\n    servers:\n{}\
         \x20 retrying:\n    timeouts: {{ server: 10s }}\n\
         \x20   retries: {{ attempts: 1, on: [response-timeout], per_try_timeout: 200ms, backoff: {{ base: 1ms, max: 1ms }} }}\n\
         \x20   servers:\n{}",
        servers_yaml(&[("silent", silent)]),
        servers_yaml(&[("silent", silent), ("good", good.addr)]),
    ));
    let fe = p.addr("fe");
    let w = Budget::new(Duration::from_secs(3));
    let (status, _) = try_request(fe, None, "/").await.unwrap();
    let took = w.elapsed();
    assert_eq!(status, 504);
    assert!(
        took >= Duration::from_millis(280) && w.fits(took),
        "504 after {}",
        w.show(took)
    );
    // Round robin sends every other first attempt to the silent server; each of those
    // succeeds on the good one after one per-try timeout.
    // A stall longer than the per-try timeout expires the good server's try as well.
    for _ in 0..6 {
        unless_stalled("a retry after one per-try timeout", || async {
            let w = Budget::new(Duration::from_secs(2));
            let (status, body) = try_request(fe, None, "/retry").await?;
            let took = w.elapsed();
            if (status, body.as_str()) == (200, "good") && w.fits(took) {
                Ok(())
            } else {
                Err(format!("{status} {body:?} after {}", w.show(took)))
            }
        })
        .await;
    }
    let be = p.handle().live().backend("retrying");
    assert!(be.retries.load(Ordering::Relaxed) >= 1);
    assert!(be.redispatches.load(Ordering::Relaxed) >= 1);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_server_is_ejected_and_returns_and_max_ejection_percent_holds() {
    let failing = Arc::new(AtomicBool::new(true));
    let all_fail = Arc::new(AtomicBool::new(false));
    let mut origins = Vec::new();
    for name in ["a", "b", "c"] {
        let (f, all) = (failing.clone(), all_fail.clone());
        let n = name.to_owned();
        origins.push(
            Origin::start(name, move |_| {
                let fails = all.load(Ordering::SeqCst) || (n == "b" && f.load(Ordering::SeqCst));
                if fails { text(503, &n) } else { text(200, &n) }
            })
            .await,
        );
    }
    let p = Proxy::start(&format!(
        "frontends:\n  fe:\n    bind: [\"127.0.0.1:0\"]\n    default_backend: app\n\
         backends:\n  app:\n\
         \x20   outlier_detection: {{ consecutive_5xx: 3, interval: 100ms, base_ejection_time: 1s, max_ejection_percent: 50% }}\n\
         \x20   servers:\n{}",
        servers_yaml(&[
            ("a", origins[0].addr),
            ("b", origins[1].addr),
            ("c", origins[2].addr)
        ])
    ));
    let fe = p.addr("fe");
    let sb = server(&p, "app", "b");
    for _ in 0..30 {
        if sb.ejected() {
            break;
        }
        try_request(fe, None, "/").await.unwrap();
    }
    assert!(sb.ejected(), "b was not ejected");
    let ejected_at = Budget::new(Duration::from_millis(2500));
    failing.store(false, Ordering::SeqCst);
    // While ejected, b gets nothing.
    let before = origins[1].count();
    let mut seen_b_back = None;
    let deadline = Budget::new(Duration::from_secs(5));
    while !deadline.spent() {
        let (status, body) = try_request(fe, None, "/").await.unwrap();
        assert_eq!(status, 200);
        if body == "b" {
            seen_b_back = Some(ejected_at.elapsed());
            break;
        }
    }
    let back = seen_b_back.expect("b never came back");
    assert!(
        back >= Duration::from_millis(900) && ejected_at.fits(back),
        "b came back after {} (base_ejection_time 1s)",
        ejected_at.show(back)
    );
    assert_eq!(origins[1].count(), before + 1);
    assert_eq!(sb.outlier.ejections.load(Ordering::Relaxed), 1);

    // Every server fails: 50% of three servers is one ejected at a time.
    all_fail.store(true, Ordering::SeqCst);
    let be = p.handle().live().backend("app");
    let mut max_ejected = 0;
    for _ in 0..60 {
        let (status, _) = try_request(fe, None, "/").await.unwrap();
        assert_eq!(status, 503);
        max_ejected = max_ejected.max(be.ejected.load(Ordering::Relaxed));
    }
    assert_eq!(
        max_ejected, 1,
        "at most one of three servers ejected at 50%"
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_breaker_answers_503_at_once_or_queues() {
    let slow = Origin::start("slow", |_| delayed(SLOW, 200, "slow")).await;
    for (queue, expect_wait) in [("", false), ("    queue: { timeout: 30s }\n", true)] {
        let p = Proxy::start(&format!(
            "frontends:\n  fe:\n    bind: [\"127.0.0.1:0\"]\n    default_backend: app\n\
             backends:\n  app:\n    circuit_breaker: {{ max_requests: 2 }}\n{queue}    servers:\n{}",
            servers_yaml(&[("slow", slow.addr)])
        ));
        let fe = p.addr("fe");
        let before = slow.count();
        let first: Vec<_> = (0..2)
            .map(|_| tokio::spawn(async move { try_request(fe, None, "/").await }))
            .collect();
        assert!(eventually(Duration::from_secs(5), || slow.count() == before + 2).await);
        let w = Budget::new(Duration::from_millis(300));
        let got = send(
            Client::H1,
            fe,
            http::Request::get("/").body(empty()).unwrap(),
            None,
        )
        .await;
        let took = w.elapsed();
        if expect_wait {
            assert_eq!(got.status, 200);
            assert!(took >= Duration::from_millis(300), "served after {took:?}");
            let be = p.handle().live().backend("app");
            assert_eq!(be.gate.pending_max.load(Ordering::Relaxed), 1);
        } else {
            assert_eq!(got.status, 503);
            assert_eq!(got.header("x-rampart-overloaded"), Some("max_requests"));
            assert!(w.fits(took), "503 after {}", w.show(took));
            let be = p.handle().live().backend("app");
            assert_eq!(be.overflow.max_requests.load(Ordering::Relaxed), 1);
        }
        for f in first {
            assert_eq!(f.await.unwrap().unwrap().0, 200);
        }
        p.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_budget_bounds_attempts_when_every_server_fails() {
    let mut origins = Vec::new();
    for n in ["a", "b", "c"] {
        origins.push(Origin::start(n, |_| text(503, "down")).await);
    }
    let p = Proxy::start(&format!(
        "frontends:\n  fe:\n    bind: [\"127.0.0.1:0\"]\n    default_backend: app\n\
         backends:\n  app:\n\
         \x20   retries: {{ attempts: 3, on: [5xx], budget: {{ ratio: 20%, min_per_second: 1 }}, backoff: {{ base: 1ms, max: 1ms }} }}\n\
         \x20   servers:\n{}",
        servers_yaml(&[
            ("a", origins[0].addr),
            ("b", origins[1].addr),
            ("c", origins[2].addr)
        ])
    ));
    let fe = p.addr("fe");
    let requests = 50;
    for _ in 0..requests {
        let (status, _) = try_request(fe, None, "/").await.unwrap();
        assert_eq!(status, 503);
    }
    let attempts: usize = origins.iter().map(Origin::count).sum();
    // 20% of 50 requests plus 1 per second over the 10 s window; without a budget it
    // would be 4 x 50.
    let budget = requests + requests / 5 + 10;
    assert!(
        attempts > requests && attempts <= budget,
        "{attempts} attempts at the origins for {requests} requests (budget {budget})"
    );
    let be = p.handle().live().backend("app");
    assert_eq!(
        be.retries.load(Ordering::Relaxed) as usize,
        attempts - requests
    );
    assert!(be.overflow.budget_exhausted.load(Ordering::Relaxed) > 0);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flapping_server_is_kept_out_by_hysteresis() {
    let stable = Origin::named("stable").await;
    let flapper = Origin::named("flapper").await;
    let flap_addr = flapper.addr;
    // It starts down; it comes up only in short spells from here on.
    flapper.kill();
    let hc = "{ http: { path: /health }, interval: 50ms, timeout: 50ms, rise: 8, fall: 1, init_state: fully-down }";
    let p = Proxy::start(&format!(
        "frontends:\n  fe:\n    bind: [\"127.0.0.1:0\"]\n    use_backend: [\"only_flapper if {{ path_beg /only }}\"]\n    default_backend: mixed\n\
         backends:\n\
         \x20 mixed:\n    health_check: {hc}\n    servers:\n{}\
         \x20 only_flapper:\n    health_check: {hc}\n    servers:\n{}",
        servers_yaml(&[("stable", stable.addr), ("flapper", flap_addr)]),
        servers_yaml(&[("flapper", flap_addr)]),
    ));
    let fe = p.addr("fe");
    until_status(&server(&p, "mixed", "stable"), "UP", Duration::from_secs(5)).await;

    // Up 200 ms, down 200 ms: at most five checks pass in a row, fewer than rise (8).
    let flap_stop = Arc::new(AtomicBool::new(false));
    let flaps = Arc::new(AtomicUsize::new(0));
    let (fs, fl) = (flap_stop.clone(), flaps.clone());
    let flapping = tokio::spawn(async move {
        let mut current: Option<Origin> = None;
        drop(flapper);
        while !fs.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(200)).await;
            current = match current.take() {
                Some(o) => {
                    o.kill();
                    None
                }
                None => {
                    Some(Origin::start_on(flap_addr, "flapper", |_| text(200, "flapper")).await)
                }
            };
            fl.fetch_add(1, Ordering::SeqCst);
        }
    });
    // At least 2.5 s and eight flaps (a stalling machine flaps more slowly).
    let started = Instant::now();
    let limit = Budget::new(Duration::from_secs(20));
    let (mut ok, mut unavailable) = (0, 0);
    while started.elapsed() < Duration::from_millis(2500)
        || flaps.load(Ordering::SeqCst) < 8
        || ok <= 10
    {
        assert!(
            !limit.spent(),
            "{} flaps and {ok} requests served in {}",
            flaps.load(Ordering::SeqCst),
            limit.show(limit.elapsed())
        );
        let (status, body) = try_request(fe, None, "/").await.unwrap();
        // The stable server can miss a 50 ms check while the machine stalls: then
        // nothing is up, and the answer is 503, never the flapper.
        match (status, body.as_str()) {
            (200, "stable") => ok += 1,
            (503, _) => {}
            other => panic!("{other:?}"),
        }
        // At once: no queue and no wait for a server (a queued request would wait for
        // the queue timeout); the bound leaves room for the machine's stalls.
        let w = Budget::new(Duration::from_secs(1));
        let (status, _) = try_request(fe, None, "/only").await.unwrap();
        assert_eq!(status, 503);
        assert!(!w.spent(), "503 took {}", w.show(w.elapsed()));
        unavailable += 1;
    }
    flap_stop.store(true, Ordering::SeqCst);
    flapping.await.unwrap();
    assert!(unavailable > 10);
    let f = server(&p, "mixed", "flapper");
    assert!(f.status_text().starts_with("DOWN"), "{}", f.status_text());
    assert_eq!(
        f.requests.load(Ordering::Relaxed),
        0,
        "the flapper got requests"
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_health_check_follows_serving_status() {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("shop.Cart", tonic_health::ServingStatus::Serving)
        .await;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            let svc = hyper_util::service::TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                        .await;
            });
        }
    });
    let p = Proxy::start(&format!(
        "frontends:\n  fe:\n    bind: [\"127.0.0.1:0\"]\n    default_backend: grpc\n\
         backends:\n  grpc:\n    proto: h2\n\
         \x20   health_check: {{ grpc: {{ service: shop.Cart }}, interval: 100ms, timeout: 5s, rise: 1, fall: 1, init_state: down }}\n\
         \x20   servers:\n{}",
        servers_yaml(&[("g", addr)])
    ));
    let s = server(&p, "grpc", "g");
    until_status(&s, "UP", Duration::from_secs(5)).await;
    assert_eq!(
        s.check
            .lock()
            .unwrap()
            .last
            .as_ref()
            .unwrap()
            .status
            .as_str(),
        "L7OK"
    );
    reporter
        .set_service_status("shop.Cart", tonic_health::ServingStatus::NotServing)
        .await;
    // The check timeout is long so that a stall of the machine cannot pass for a slow
    // server: DOWN comes from the answer.
    until_status(&s, "DOWN", Duration::from_secs(5)).await;
    let last = s.check.lock().unwrap().last.clone().unwrap();
    assert_eq!(last.status.as_str(), "L7STS");
    assert_eq!(last.desc, "NOT_SERVING");
    reporter
        .set_service_status("shop.Cart", tonic_health::ServingStatus::Serving)
        .await;
    until_status(&s, "UP", Duration::from_secs(5)).await;
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_active_down_uses_backup_and_none_gives_503_at_once() {
    let dead = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let backup = Origin::named("backup").await;
    let p = Proxy::start(&format!(
        "frontends:\n  fe:\n    bind: [\"127.0.0.1:0\"]\n    use_backend: [\"nobackup if {{ path_beg /n }}\"]\n    default_backend: app\n\
         backends:\n\
         \x20 app:\n    health_check: {{ interval: 50ms, fall: 1 }}\n    servers:\n\
         \x20     dead: {{ address: \"{dead}\" }}\n      spare: {{ address: \"{}\", backup: true }}\n\
         \x20 nobackup:\n    health_check: {{ interval: 50ms, fall: 1 }}\n    timeouts: {{ connect: 5s }}\n    servers:\n{}",
        backup.addr,
        servers_yaml(&[("dead", dead)]),
    ));
    let fe = p.addr("fe");
    until_status(&server(&p, "app", "dead"), "DOWN", Duration::from_secs(5)).await;
    until_status(
        &server(&p, "nobackup", "dead"),
        "DOWN",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(
        try_request(fe, None, "/").await.unwrap(),
        (200, "backup".to_owned())
    );
    let w = Budget::new(Duration::from_millis(200));
    assert_eq!(try_request(fe, None, "/n").await.unwrap().0, 503);
    assert!(!w.spent(), "503 took {}", w.show(w.elapsed()));
    assert_eq!(server(&p, "app", "spare").status_text(), "UP");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_max_connections_queues_or_refuses() {
    let slow = Origin::start("slow", |_| delayed(SLOW, 200, "slow")).await;
    for queue in ["", "    queue: { timeout: 30s }\n"] {
        let p = Proxy::start(&format!(
            "frontends:\n  fe:\n    bind: [\"127.0.0.1:0\"]\n    default_backend: app\n\
             backends:\n  app:\n{queue}    servers:\n      s: {{ address: \"{}\", max_connections: 1 }}\n",
            slow.addr
        ));
        let fe = p.addr("fe");
        let before = slow.count();
        let first = tokio::spawn(async move { try_request(fe, None, "/").await });
        assert!(eventually(Duration::from_secs(5), || slow.count() == before + 1).await);
        let t = Instant::now();
        let w = Budget::new(Duration::from_millis(300));
        let got = send(
            Client::H1,
            fe,
            http::Request::get("/").body(empty()).unwrap(),
            None,
        )
        .await;
        if queue.is_empty() {
            assert_eq!(got.status, 503);
            assert_eq!(
                got.header("x-rampart-overloaded"),
                Some("server_max_connections")
            );
            assert!(w.fits(t.elapsed()), "503 took {}", w.show(t.elapsed()));
        } else {
            assert_eq!(got.status, 200);
            assert!(
                t.elapsed() >= Duration::from_millis(200),
                "{:?}",
                t.elapsed()
            );
        }
        assert_eq!(first.await.unwrap().unwrap().0, 200);
        assert_eq!(server(&p, "app", "s").active_max.load(Ordering::Relaxed), 1);
        p.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_max_connections_and_route_timeout() {
    let slow = Origin::start("slow", |_| delayed(SLOW, 200, "slow")).await;
    let (silent, _t) = silent_server().await;
    let p = Proxy::start(&format!(
        "frontends:\n  fe:\n    bind: [\"127.0.0.1:0\"]\n    use_backend:\n\
         \x20     - {{ backend: quiet, timeout: 200ms, if: \"{{ path_beg /quiet }}\" }}\n\
         \x20   default_backend: app\n\
         backends:\n\
         \x20 app:\n    circuit_breaker: {{ max_connections: 1 }}\n    servers:\n{}\
         \x20 quiet:\n    timeouts: {{ server: 30s }}\n    servers:\n{}",
        servers_yaml(&[("slow", slow.addr)]),
        servers_yaml(&[("silent", silent)]),
    ));
    let fe = p.addr("fe");
    let first = tokio::spawn(async move { try_request(fe, None, "/").await });
    assert!(eventually(Duration::from_secs(5), || slow.count() == 1).await);
    // The only allowed connection is busy: a second request would need another.
    let got = send(
        Client::H1,
        fe,
        http::Request::get("/").body(empty()).unwrap(),
        None,
    )
    .await;
    assert_eq!(got.status, 503);
    assert_eq!(got.header("x-rampart-overloaded"), Some("max_connections"));
    assert_eq!(first.await.unwrap().unwrap().0, 200);
    let be = p.handle().live().backend("app");
    assert_eq!(be.overflow.max_connections.load(Ordering::Relaxed), 1);
    assert!(be.conns_open.load(Ordering::Relaxed) <= 1);

    // The route's timeout replaces the backend's 30 s.
    let w = Budget::new(Duration::from_secs(2));
    assert_eq!(try_request(fe, None, "/quiet").await.unwrap().0, 504);
    assert!(!w.spent(), "504 took {}", w.show(w.elapsed()));
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_of_many_servers_are_spread_over_the_interval() {
    // A stall of the machine bunches the checks it delayed, whatever the proxy does.
    unless_stalled("checks spread over the interval", || async {
        let buckets = first_round_of_checks().await;
        let max = *buckets.iter().max().unwrap();
        // Uniform spreading puts about 10% of the first round in each tenth of the
        // interval; checks that bunch up would put most of them in one.
        let spread = max <= 50 && buckets[..10].iter().filter(|b| **b > 0).count() >= 8;
        if spread {
            Ok(())
        } else {
            Err(format!("first round of checks by 100 ms: {buckets:?}"))
        }
    })
    .await;
}

/// 200 servers on one listener, which notes when each check connects: the first round
/// by tenth of the 1 s interval.
async fn first_round_of_checks() -> [usize; 12] {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let accepts = Arc::new(std::sync::Mutex::new(Vec::new()));
    let acc = accepts.clone();
    let started = Instant::now();
    let listener = tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            acc.lock().unwrap().push(started.elapsed());
            drop(s);
        }
    });
    let servers: String = (0..200)
        .map(|i| format!("      s{i}: {{ address: \"{addr}\" }}\n"))
        .collect();
    let p = Proxy::start(&format!(
        "frontends:\n  fe:\n    bind: [\"127.0.0.1:0\"]\n    default_backend: many\n\
         backends:\n  many:\n    health_check: {{ interval: 1s }}\n    servers:\n{servers}"
    ));
    assert!(
        eventually(Duration::from_secs(5), || accepts.lock().unwrap().len()
            >= 200)
        .await
    );
    let first: Vec<Duration> = accepts.lock().unwrap()[..200].to_vec();
    let mut buckets = [0usize; 12];
    for t in &first {
        buckets[((t.as_millis() / 100) as usize).min(11)] += 1;
    }
    p.stop().await;
    listener.abort();
    buckets
}
