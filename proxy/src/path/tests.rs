//! The layer stack over a mock upstream: which servers attempts go to and in what order,
//! what is counted, and what is never retried, on tokio's paused clock.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use tower::ServiceExt;

use super::*;
use crate::error::ErrorKind;
use crate::handler::ConnCtx;
use crate::rules::Env;
use crate::rules::sample::ConnInfo;
use crate::snapshot::Snapshot;
use crate::state::Limit;

/// A proxy's compiled configuration and a connection to serve requests on.
struct Rig {
    snap: Arc<Snapshot>,
    cx: Arc<ConnCtx>,
    tracks: crate::stick::Trackers,
}

impl Rig {
    /// `backend` is the YAML of backend `be`; its servers are never connected to.
    fn new(backend: &str) -> Self {
        let yaml = format!(
            "frontends: {{ fe: {{ bind: \"127.0.0.1:0\", default_backend: be }} }}\nbackends:\n  be:\n{backend}"
        );
        let (snap, live) = crate::snapshot::compile_yaml(&yaml);
        let addr: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let cx = Arc::new(ConnCtx {
            info: ConnInfo::new(addr, addr, false),
            snapshot: snap.clone(),
            frontend: snap.frontends[0].clone(),
            shared: Arc::new(crate::runtime::Shared {
                snapshot: arc_swap::ArcSwap::new(snap.clone()),
                live: live.clone(),
            }),
            newest: Default::default(),
            session: live.sessions.open(),
            accepted: tokio::time::Instant::now(),
            held: None,
        });
        Rig {
            snap,
            cx,
            tracks: Default::default(),
        }
    }

    fn be(&self) -> &Arc<Backend> {
        &self.snap.backends[0]
    }

    /// What fetches see of the rig's connection.
    fn env(&self) -> Env<'_> {
        Env {
            conn: &self.cx.info,
            frontend: "fe",
            nbsrv: &|_| 3,
            conn_track: &self.tracks,
        }
    }

    /// A request's record on the rig's backend.
    fn done(&self) -> Done {
        let mut done = Done::new(&self.cx, &self.cx.frontend, None, Duration::ZERO);
        done.backend = Some(self.be().clone());
        done
    }

    /// Sends one request through the stack to `upstream`; returns the outcome and the
    /// record.
    async fn send(&self, req: Request<Body>, upstream: &Upstream) -> (Outcome, Done) {
        let mut done = self.done();
        let env = self.env();
        let out = {
            let x = Exchange::new(self.be(), self.origin(&env), &mut done);
            stack(&x, upstream.service()).oneshot(req).await
        };
        (out, done)
    }

    fn origin<'a>(&'a self, env: &'a Env<'a>) -> Origin<'a> {
        Origin {
            fe: &self.cx.frontend,
            route: None,
            env,
            session: &self.cx.session,
        }
    }
}

fn get() -> Request<Body> {
    Request::get("/").body(Body::empty()).unwrap()
}

/// A mock upstream: answers each attempt from a script, in order (the last answer
/// repeats), and notes the server of each.
#[derive(Clone)]
struct Upstream {
    script: Arc<Vec<Answer>>,
    servers: Arc<Mutex<Vec<usize>>>,
}

#[derive(Clone, Copy)]
enum Answer {
    Status(u16),
    Fail(ErrorKind),
    Overloaded,
}

impl Upstream {
    fn new(script: &[Answer]) -> Self {
        Self {
            script: Arc::new(script.to_vec()),
            servers: Arc::default(),
        }
    }

    fn servers(&self) -> Vec<usize> {
        self.servers.lock().unwrap().clone()
    }

    fn service(
        &self,
    ) -> impl Service<Attempt, Response = Response<Body>, Error = ProxyError, Future: Send>
    + Clone
    + Send
    + 'static {
        let this = self.clone();
        tower::service_fn(move |a: Attempt| {
            let mut seen = this.servers.lock().unwrap();
            seen.push(a.server);
            let i = (seen.len() - 1).min(this.script.len() - 1);
            let out = match this.script[i] {
                Answer::Status(s) => {
                    let mut r = Response::new(Body::empty());
                    *r.status_mut() = StatusCode::from_u16(s).unwrap();
                    Ok(r)
                }
                Answer::Fail(kind) => {
                    let mut e = ProxyError::new(kind, "mock failure");
                    e.side = crate::error::Side::Server;
                    Err(e)
                }
                Answer::Overloaded => {
                    Err(crate::resilience::limits::overloaded(Limit::MaxConnections))
                }
            };
            std::future::ready(out)
        })
    }
}

const THREE: &str = "    servers: { a: { address: \"127.0.0.1:1\" }, b: { address: \"127.0.0.1:2\" }, c: { address: \"127.0.0.1:3\" } }\n";

#[tokio::test(start_paused = true)]
async fn retries_go_above_balance_and_each_goes_to_another_server() {
    let rig = Rig::new(&format!(
        "{THREE}    retries: {{ attempts: 3, on: [connect-failure] }}\n"
    ));
    let up = Upstream::new(&[
        Answer::Fail(ErrorKind::ConnectFailed),
        Answer::Fail(ErrorKind::ConnectFailed),
        Answer::Status(200),
    ]);
    let (out, done) = rig.send(get(), &up).await;
    assert_eq!(out.unwrap().status(), 200);
    let servers = up.servers();
    assert_eq!(servers.len(), 3);
    let mut distinct = servers.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "redispatched: {servers:?}");
    // The record names the last server and counts the retries.
    assert_eq!(done.server, Some(servers[2]));
    assert_eq!(done.retries, 2);
    let be = rig.be();
    assert_eq!(be.live.retries.load(Relaxed), 2);
    assert_eq!(be.live.redispatches.load(Relaxed), 2);
    // Each failed attempt counted against its own server.
    assert_eq!(be.live.errors_conn.load(Relaxed), 2);
    for (i, s) in servers.iter().enumerate() {
        let want = u64::from(i < 2);
        assert_eq!(be.servers[*s].live.errors_conn.load(Relaxed), want);
    }
    drop(done);
    // Nothing stays in flight.
    assert!(be.servers.iter().all(|s| s.live.active.load(Relaxed) == 0));
    assert_eq!(be.live.retries_active.load(Relaxed), 0);
}

#[tokio::test(start_paused = true)]
async fn without_redispatch_a_retry_goes_back_to_the_same_server() {
    let rig = Rig::new(&format!(
        "{THREE}    retries: {{ attempts: 2, on: [5xx], redispatch: false }}\n"
    ));
    let up = Upstream::new(&[Answer::Status(503)]);
    let (out, done) = rig.send(get(), &up).await;
    // All attempts failed: the client gets the last answer.
    assert_eq!(out.unwrap().status(), 503);
    let servers = up.servers();
    assert_eq!(servers.len(), 3);
    assert!(servers.iter().all(|s| *s == servers[0]), "{servers:?}");
    assert_eq!(done.retries, 2);
    assert_eq!(rig.be().live.redispatches.load(Relaxed), 0);
}

#[tokio::test(start_paused = true)]
async fn a_breaker_refusal_is_never_retried() {
    let rig = Rig::new(&format!(
        "{THREE}    retries: {{ attempts: 3, on: [connect-failure, 5xx, reset] }}\n    outlier_detection: {{ consecutive_5xx: 1 }}\n"
    ));
    let up = Upstream::new(&[Answer::Overloaded]);
    let (out, _done) = rig.send(get(), &up).await;
    let e = out.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Overloaded(Limit::MaxConnections));
    assert_eq!(up.servers().len(), 1, "retried a refusal");
    let be = rig.be();
    assert_eq!(be.live.overflow.get(Limit::MaxConnections).load(Relaxed), 1);
    // Not the server's doing: outlier detection did not count it.
    let total: u64 = be
        .servers
        .iter()
        .map(|s| s.live.outlier.interval_total.load(Relaxed))
        .sum();
    assert_eq!(total, 0);
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_times_out_on_the_paused_clock_and_is_not_retried() {
    let rig = Rig::new(&format!(
        "{THREE}    retries: {{ attempts: 3, on: [connect-failure] }}\n    circuit_breaker: {{ max_requests: 1 }}\n    queue: {{ timeout: 2s }}\n"
    ));
    let be = rig.be();
    // Another request holds the only slot.
    let held = crate::resilience::limits::Gate::acquire(&be.live, be.gate.unwrap())
        .await
        .unwrap();
    let up = Upstream::new(&[Answer::Status(200)]);
    let started = tokio::time::Instant::now();
    let (out, done) = rig.send(get(), &up).await;
    assert_eq!(out.unwrap_err().kind, ErrorKind::QueueTimeout);
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert!(
        up.servers().is_empty(),
        "a refused request reached a server"
    );
    assert_eq!(be.live.overflow.get(Limit::QueueTimeout).load(Relaxed), 1);
    assert_eq!(done.server, None);
    drop(held);
}

#[tokio::test(start_paused = true)]
async fn outlier_detection_is_fed_once_per_attempt() {
    let rig = Rig::new(&format!(
        "{THREE}    retries: {{ attempts: 3, on: [5xx] }}\n    outlier_detection: {{ consecutive_5xx: 10 }}\n"
    ));
    let up = Upstream::new(&[
        Answer::Status(503),
        Answer::Fail(ErrorKind::Reset),
        Answer::Status(200),
    ]);
    let (out, _done) = rig.send(get(), &up).await;
    // `5xx` also retries what would be a 502 (a reset).
    assert_eq!(out.unwrap().status(), 200);
    let servers = up.servers();
    assert_eq!(servers.len(), 3);
    let be = rig.be();
    for s in &servers {
        assert_eq!(
            be.servers[*s].live.outlier.interval_total.load(Relaxed),
            1,
            "server {s}"
        );
    }
    // The two failures count as consecutive 5xx on their servers; the success resets
    // its own.
    assert_eq!(
        be.servers[servers[0]]
            .live
            .outlier
            .consecutive_5xx
            .load(Relaxed),
        1
    );
    assert_eq!(
        be.servers[servers[1]]
            .live
            .outlier
            .consecutive_5xx
            .load(Relaxed),
        1
    );
    assert_eq!(
        be.servers[servers[2]]
            .live
            .outlier
            .consecutive_5xx
            .load(Relaxed),
        0
    );
}

#[tokio::test(start_paused = true)]
async fn an_exhausted_budget_stops_retries_and_is_counted() {
    let rig = Rig::new(&format!(
        "{THREE}    retries: {{ attempts: 3, on: [5xx], budget: {{ ratio: 0%, min_per_second: 0 }} }}\n"
    ));
    let up = Upstream::new(&[Answer::Status(500), Answer::Status(200)]);
    let (out, _done) = rig.send(get(), &up).await;
    assert_eq!(out.unwrap().status(), 500);
    assert_eq!(up.servers().len(), 1);
    let be = rig.be();
    assert_eq!(be.live.overflow.get(Limit::RetryBudget).load(Relaxed), 1);
    assert_eq!(be.live.retries.load(Relaxed), 0);
}

#[tokio::test(start_paused = true)]
async fn max_retries_in_flight_stops_a_retry() {
    let rig = Rig::new(&format!(
        "{THREE}    retries: {{ attempts: 3, on: [5xx] }}\n    circuit_breaker: {{ max_retries: 0 }}\n"
    ));
    let up = Upstream::new(&[Answer::Status(502), Answer::Status(200)]);
    let (out, _done) = rig.send(get(), &up).await;
    assert_eq!(out.unwrap().status(), 502);
    assert_eq!(up.servers().len(), 1);
    assert_eq!(
        rig.be().live.overflow.get(Limit::MaxRetries).load(Relaxed),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn a_route_replaces_the_backend_retry_policy_and_hash() {
    let rig = Rig::new(&format!("{THREE}    balance: maglev\n"));
    // The backend retries nothing; the route retries 5xx once.
    let policy = RetryPolicy::from(
        &rampart_config::load_str(
            "frontends: { f: { bind: \"127.0.0.1:0\", default_backend: b } }\nbackends: { b: { servers: { s: { address: \"127.0.0.1:1\" } }, retries: { attempts: 1, on: [5xx] } } }\n",
            None,
            &std::collections::HashMap::<String, String>::new(),
        )
        .unwrap()
        .backends
        .get("b")
        .unwrap()
        .retries
        .clone()
        .unwrap(),
    );
    let routed = |hash: u64| {
        let mut r = get();
        r.extensions_mut().insert(RouteSettings {
            timeout: None,
            retries: Some(Arc::new(policy.clone())),
            hash: Some(hash),
        });
        r
    };
    let up = Upstream::new(&[Answer::Status(503), Answer::Status(200)]);
    let (out, _) = rig.send(routed(7), &up).await;
    assert_eq!(out.unwrap().status(), 200);
    assert_eq!(up.servers().len(), 2);
    // Without the route, the backend's policy: no retry.
    let up = Upstream::new(&[Answer::Status(503), Answer::Status(200)]);
    let (out, _) = rig.send(get(), &up).await;
    assert_eq!(out.unwrap().status(), 503);
    assert_eq!(up.servers().len(), 1);
    // The route's hash decides the server: the same hash, the same server.
    let up = Upstream::new(&[Answer::Status(200)]);
    for _ in 0..5 {
        let _ = rig.send(routed(12345), &up).await;
    }
    let servers = up.servers();
    assert!(servers.iter().all(|s| *s == servers[0]), "{servers:?}");
}

#[tokio::test(start_paused = true)]
async fn a_dropped_request_releases_what_it_holds() {
    let rig = Rig::new(&format!(
        "{THREE}    balance: leastconn\n    circuit_breaker: {{ max_requests: 5 }}\n"
    ));
    let be = rig.be().clone();
    let never = tower::service_fn(|_: Attempt| std::future::pending::<Outcome>());
    {
        let mut done = rig.done();
        let env = rig.env();
        let x = Exchange::new(&be, rig.origin(&env), &mut done);
        let fut = stack(&x, never).oneshot(get());
        tokio::pin!(fut);
        // Poll until the request is at a server, then give up on it.
        let pending = tokio::time::timeout(Duration::from_secs(1), &mut fut).await;
        assert!(pending.is_err());
        assert_eq!(
            be.servers
                .iter()
                .map(|s| s.live.active.load(Relaxed))
                .sum::<u64>(),
            1
        );
        assert_eq!(be.live.gate.inflight(), 1);
    }
    assert_eq!(
        be.servers
            .iter()
            .map(|s| s.live.active.load(Relaxed))
            .sum::<u64>(),
        0
    );
    assert_eq!(be.live.gate.inflight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_backend_rule_answers_before_the_queue_and_any_server() {
    let rig = Rig::new(&format!(
        "{THREE}    circuit_breaker: {{ max_requests: 1 }}\n    http_request: [\"deny deny_status 403 if {{ path_beg /admin }}\", \"set-header x-seen yes\"]\n"
    ));
    let be = rig.be();
    // The only slot is taken: a request that reached the breaker would wait.
    let held = crate::resilience::limits::Gate::acquire(&be.live, be.gate.unwrap())
        .await
        .unwrap();
    let up = Upstream::new(&[Answer::Status(200)]);
    let req = Request::get("/admin/x").body(Body::empty()).unwrap();
    let (out, done) = rig.send(req, &up).await;
    assert_eq!(out.unwrap().status(), 403);
    assert!(up.servers().is_empty());
    assert_eq!(done.termination, crate::error::Termination::REFUSED);
    assert_eq!(done.status, 403);
    assert_eq!(rig.cx.frontend.live.denied.load(Relaxed), 1);
    assert_eq!(be.live.overflow.get(Limit::QueueTimeout).load(Relaxed), 0);
    drop(held);
    // Another path goes on, with the rule's header.
    let seen = Arc::new(Mutex::new(None));
    let s2 = seen.clone();
    let leaf = tower::service_fn(move |a: Attempt| {
        *s2.lock().unwrap() = a.req.headers().get("x-seen").cloned();
        std::future::ready(Ok::<_, ProxyError>(Response::new(Body::empty())))
    });
    let mut done = rig.done();
    let env = rig.env();
    let x = Exchange::new(be, rig.origin(&env), &mut done);
    let out = stack(&x, leaf).oneshot(get()).await;
    assert_eq!(out.unwrap().status(), 200);
    assert_eq!(seen.lock().unwrap().as_ref().unwrap(), "yes");
    assert!(!x.state().answered);
}

#[tokio::test(start_paused = true)]
async fn a_backend_response_rule_sees_the_rewritten_request_and_can_deny() {
    let rig = Rig::new(&format!(
        "{THREE}    http_request: [\"set-path /denied if {{ path /d }}\", \"set-path /inner if {{ path / }}\"]\n    http_response: [\"set-header x-path %[path]\", \"deny if {{ path /denied }}\"]\n"
    ));
    let up = Upstream::new(&[Answer::Status(200)]);
    let (out, done) = rig.send(get(), &up).await;
    let resp = out.unwrap();
    assert_eq!(resp.headers()["x-path"], "/inner");
    assert_eq!(done.termination, crate::error::Termination::NONE);
    let req = Request::get("/d").body(Body::empty()).unwrap();
    let (out, done) = rig.send(req, &up).await;
    assert_eq!(out.unwrap().status(), 502);
    assert_eq!(done.termination, crate::error::Termination::RESPONSE_DENIED);
    assert_eq!(rig.cx.frontend.live.denied.load(Relaxed), 1);
}

#[tokio::test(start_paused = true)]
async fn hop_by_hop_headers_come_off_both_ways_and_forwarding_headers_go_on() {
    let rig = Rig::new(THREE);
    let seen = Arc::new(Mutex::new(http::HeaderMap::new()));
    let s2 = seen.clone();
    let leaf = tower::service_fn(move |a: Attempt| {
        *s2.lock().unwrap() = a.req.headers().clone();
        let r = Response::builder()
            .header("connection", "x-private")
            .header("x-private", "1")
            .header("keep-alive", "timeout=5")
            .header("x-public", "1")
            .body(Body::empty())
            .unwrap();
        std::future::ready(Ok::<_, ProxyError>(r))
    });
    let req = Request::get("/")
        .header("connection", "x-hop")
        .header("x-hop", "1")
        .header("expect", "100-continue")
        .header("x-end", "1")
        .body(Body::empty())
        .unwrap();
    let mut done = rig.done();
    let env = rig.env();
    let x = Exchange::new(rig.be(), rig.origin(&env), &mut done);
    let resp = stack(&x, leaf).oneshot(req).await.unwrap();
    let h = seen.lock().unwrap().clone();
    for gone in ["connection", "x-hop", "expect"] {
        assert!(!h.contains_key(gone), "{gone} reached the server");
    }
    assert_eq!(h["x-end"], "1");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    for gone in ["connection", "x-private", "keep-alive"] {
        assert!(
            !resp.headers().contains_key(gone),
            "{gone} reached the client"
        );
    }
    assert_eq!(resp.headers()["x-public"], "1");
}

#[tokio::test(start_paused = true)]
async fn a_stick_rule_sends_a_client_back_to_its_server_and_a_cookie_wins_over_it() {
    let rig = Rig::new(&format!(
        "{THREE}    balance: roundrobin\n    stick: [\"on src table t\"]\n    cookie: {{ name: SRV, mode: insert }}\nstick_tables: {{ t: {{ type: ip, size: 1k, store: [server_id] }} }}\n"
    ));
    let up = Upstream::new(&[Answer::Status(200)]);
    let (out, _) = rig.send(get(), &up).await;
    let set_cookie = out.unwrap().headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    for _ in 0..4 {
        let _ = rig.send(get(), &up).await;
    }
    let servers = up.servers();
    assert!(servers.iter().all(|s| *s == servers[0]), "{servers:?}");
    assert!(set_cookie.starts_with("SRV="), "{set_cookie}");
    // A cookie naming another server comes first; the entry then names that server.
    let other = (servers[0] + 1) % 3;
    let name = ["a", "b", "c"][other];
    let up = Upstream::new(&[Answer::Status(200)]);
    let with_cookie = || {
        Request::get("/")
            .header("cookie", format!("SRV={name}"))
            .body(Body::empty())
            .unwrap()
    };
    let _ = rig.send(with_cookie(), &up).await;
    let _ = rig.send(get(), &up).await;
    assert_eq!(up.servers(), vec![other, other]);
}

#[tokio::test(start_paused = true)]
async fn the_hash_comes_from_the_request_unless_the_route_sets_it() {
    let rig = Rig::new(&format!("{THREE}    balance: uri\n"));
    let up = Upstream::new(&[Answer::Status(200)]);
    let paths = ["/a", "/b", "/c", "/d", "/e", "/f"];
    for p in paths.iter().chain(paths.iter()) {
        let _ = rig
            .send(Request::get(*p).body(Body::empty()).unwrap(), &up)
            .await;
    }
    let servers = up.servers();
    // Each path goes to one server, and the paths do not all go to the same one.
    assert_eq!(servers[..6], servers[6..], "{servers:?}");
    assert!(servers[..6].iter().any(|s| *s != servers[0]), "{servers:?}");
    // A route's hash replaces the request's: every path goes to one server.
    let up = Upstream::new(&[Answer::Status(200)]);
    for p in paths {
        let mut r = Request::get(p).body(Body::empty()).unwrap();
        r.extensions_mut().insert(RouteSettings {
            hash: Some(99),
            ..RouteSettings::default()
        });
        let _ = rig.send(r, &up).await;
    }
    let servers = up.servers();
    assert!(servers.iter().all(|s| *s == servers[0]), "{servers:?}");
}
