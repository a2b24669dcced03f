//! Binary upgrades through the real binary: the running process starts its successor,
//! hands it the listening sockets, and drains. Under steady HTTP/1.1, HTTP/2 and TLS
//! traffic no request fails and the port never refuses a connection; a successor that
//! cannot start leaves the old process serving; server states, stick tables and the
//! systemd main pid carry over.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use http::Request;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::cli::{Running, bin, run_command};
use crate::support::*;

/// Every process an upgrade chain started, killed when the test ends however it ends.
struct Chain(Vec<u32>);

impl Drop for Chain {
    fn drop(&mut self) {
        for pid in &self.0 {
            if alive(*pid) {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}

/// Whether `pid` runs (a zombie has ended).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Whether the runtime API listens on `sock`: the file appears when the socket is bound,
/// a moment before it listens, when a connection is still refused.
fn api_listening(sock: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(sock).is_ok()
}

async fn pid_of(sock: &Path) -> u32 {
    let info = ask_api(sock, "show info").await;
    info.lines()
        .find_map(|l| l.strip_prefix("Pid: "))
        .unwrap_or_else(|| panic!("no pid in {info}"))
        .trim()
        .parse()
        .unwrap()
}

/// Waits (at most `limit`, plus stalls) for `pid` to end.
async fn ended(pid: u32, limit: Duration) -> bool {
    let budget = crate::stall::Budget::new(limit);
    while !budget.spent() {
        if !alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    !alive(pid)
}

fn config(dir: &Path, origin: SocketAddr, tls: Option<(&Path, &Path)>, extra: &str) -> PathBuf {
    let tls_bind = match tls {
        Some((c, k)) => format!(
            "  secure:\n    bind:\n      - {{ address: \"127.0.0.1:0\", tls: {{ certificates: [{{ cert: \"{}\", key: \"{}\" }}] }} }}\n    default_backend: app\n",
            c.display(),
            k.display()
        ),
        None => String::new(),
    };
    let yaml = format!(
        "global:\n  grace: 5s\n  threads: 2\n\
         admin:\n  socket:\n    - {{ path: api.sock, level: admin }}\n\
         frontends:\n  web:\n    bind: [\"127.0.0.1:0\"]\n    default_backend: app\n{extra}{tls_bind}\
         backends:\n  app:\n    servers:\n      s1: {{ address: \"{origin}\" }}\n"
    );
    let path = dir.join("rampart.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    refused: AtomicU64,
    connects: AtomicU64,
    /// h2 requests the server never processed (sent after its GOAWAY), sent again.
    unprocessed: AtomicU64,
    errors: std::sync::Mutex<Vec<String>>,
}

impl Tally {
    fn fail(&self, what: String) {
        self.failed.fetch_add(1, Ordering::SeqCst);
        let mut e = self.errors.lock().unwrap();
        if e.len() < 20 {
            e.push(what);
        }
    }
}

/// HTTP/1.1 keep-alive requests, a new connection when the proxy closes one (after a
/// `Connection: close` answer). A request the client never sent (the connection was
/// closing) is sent again on a new connection; any other error is a failure.
async fn h1_client(addr: SocketAddr, t: Arc<Tally>, stop: Arc<AtomicBool>) {
    let mut sender: Option<hyper::client::conn::http1::SendRequest<TestBody>> = None;
    while !stop.load(Ordering::SeqCst) {
        if let Some(s) = sender.as_mut()
            && s.ready().await.is_err()
        {
            sender = None;
        }
        let s = match sender.as_mut() {
            Some(s) => s,
            None => {
                let tcp = match TcpStream::connect(addr).await {
                    Ok(t) => t,
                    Err(e) => {
                        t.refused.fetch_add(1, Ordering::SeqCst);
                        t.fail(format!("h1 connect: {e}"));
                        continue;
                    }
                };
                let (s, c) = match hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await {
                    Ok(x) => x,
                    Err(e) => {
                        t.fail(format!("h1 handshake: {e}"));
                        continue;
                    }
                };
                tokio::spawn(c);
                sender.insert(s)
            }
        };
        let req = Request::get("/h1")
            .header("host", "localhost")
            .body(empty())
            .unwrap();
        match s.send_request(req).await {
            Ok(resp) if resp.status() == 200 => match resp.into_body().collect().await {
                Ok(_) => {
                    t.ok.fetch_add(1, Ordering::SeqCst);
                }
                Err(e) => t.fail(format!("h1 body: {e}")),
            },
            Ok(resp) => t.fail(format!("h1 status {}", resp.status())),
            Err(e) if e.is_canceled() => sender = None,
            Err(e) => {
                t.fail(format!("h1: {e}"));
                sender = None;
            }
        }
    }
}

/// Whether an h2 request failed because the server's GOAWAY (NO_ERROR) said it never
/// processed it: opened after the GOAWAY, or above its last stream id. RFC 9113
/// section 8.7 lets a client send such a request again, as browsers, curl and Envoy do.
/// A stream cut after the server took it fails otherwise (a reset, a broken pipe).
fn unprocessed(e: &hyper::Error) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<h2::Error>())
        .is_some_and(|h| {
            h.is_go_away() && h.is_remote() && h.reason() == Some(h2::Reason::NO_ERROR)
        })
}

/// HTTP/2 (prior knowledge) requests, 4 streams at a time, a new connection after a
/// GOAWAY; a request the server did not process is sent again on the new connection.
async fn h2_client(addr: SocketAddr, t: Arc<Tally>, stop: Arc<AtomicBool>) {
    // Requests owed again: sent first on the next connection, before new ones.
    let mut owed = 0u64;
    while !stop.load(Ordering::SeqCst) || owed > 0 {
        let tcp = match TcpStream::connect(addr).await {
            Ok(t) => t,
            Err(e) => {
                t.refused.fetch_add(1, Ordering::SeqCst);
                t.fail(format!("h2 connect: {e}"));
                continue;
            }
        };
        let Ok((s, c)) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            TokioIo::new(tcp),
        )
        .await
        else {
            t.fail("h2 handshake".into());
            continue;
        };
        tokio::spawn(c);
        'conn: while !stop.load(Ordering::SeqCst) || owed > 0 {
            let mut batch = tokio::task::JoinSet::new();
            for _ in 0..4 {
                let mut s = s.clone();
                if s.ready().await.is_err() {
                    break 'conn;
                }
                // Only a request that goes out pays back what is owed.
                owed = owed.saturating_sub(1);
                let req = Request::get("/h2").body(empty()).unwrap();
                let fut = s.send_request(req);
                batch.spawn(async move {
                    match fut.await {
                        Ok(r) if r.status() == 200 => r
                            .into_body()
                            .collect()
                            .await
                            .map(|_| ())
                            .map_err(|e| Some(e.to_string())),
                        Ok(r) => Err(Some(format!("status {}", r.status()))),
                        Err(e) if e.is_canceled() || unprocessed(&e) => Err(None),
                        Err(e) => Err(Some(format!("{e:?}"))),
                    }
                });
            }
            while let Some(r) = batch.join_next().await {
                match r.unwrap() {
                    Ok(()) => {
                        t.ok.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(None) => {
                        t.unprocessed.fetch_add(1, Ordering::SeqCst);
                        owed += 1;
                    }
                    Err(Some(e)) => t.fail(format!("h2: {e}")),
                }
            }
        }
    }
}

/// A new TLS connection per request: handshakes through every hand-over.
async fn tls_client(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
    t: Arc<Tally>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::SeqCst) {
        match try_request(addr, Some(cfg.clone()), "/tls").await {
            Ok((200, _)) => {
                t.ok.fetch_add(1, Ordering::SeqCst);
            }
            Ok((s, _)) => t.fail(format!("tls status {s}")),
            Err(e) => t.fail(format!("tls: {e}")),
        }
    }
}

/// Connects and closes in a loop: the port must never refuse.
async fn connector(addr: SocketAddr, t: Arc<Tally>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::SeqCst) {
        match TcpStream::connect(addr).await {
            Ok(_) => {
                t.connects.fetch_add(1, Ordering::SeqCst);
            }
            Err(e) => {
                t.refused.fetch_add(1, Ordering::SeqCst);
                t.fail(format!("connect: {e}"));
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn start(cfg: &Path, binds: usize) -> Running {
    let mut cmd = bin();
    cmd.args(["run", "-c"]).arg(cfg);
    run_command(cmd, binds)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_upgrades_under_load_fail_no_request_and_never_refuse_a_connection() {
    let dir = temp_dir("upgrade-load");
    let origin = Origin::named("origin").await;
    let pki = Pki::new();
    let (c, k) = pki.issue("site", &["localhost"], false);
    let cfg = config(&dir, origin.addr, Some((&c, &k)), "");
    let r = start(&cfg, 2);
    let mut chain = Chain(vec![r.child.id()]);
    let (web, secure) = (r.addrs[0], r.addrs[1]);
    let sock = dir.join("api.sock");
    assert!(eventually(Duration::from_secs(10), || api_listening(&sock)).await);

    let t = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = tokio::task::JoinSet::new();
    for _ in 0..3 {
        load.spawn(h1_client(web, t.clone(), stop.clone()));
    }
    load.spawn(h2_client(web, t.clone(), stop.clone()));
    load.spawn(tls_client(
        secure,
        tls_client_as(&pki.ca_pem, &[b"http/1.1"], None),
        t.clone(),
        stop.clone(),
    ));
    load.spawn(connector(web, t.clone(), stop.clone()));

    // Enough requests between upgrades that each lands under load; bounded in time.
    let wait_for = |n: u64| {
        let t = t.clone();
        async move {
            let budget = crate::stall::Budget::new(Duration::from_secs(60));
            while t.ok.load(Ordering::SeqCst) < n && !budget.spent() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    let mut old = r.child.id();
    for round in 1..=5u64 {
        wait_for(round * 2000).await;
        let answer = ask_api(&sock, "upgrade").await;
        assert!(answer.starts_with("Upgrade done: process "), "{answer}");
        let new = pid_of(&sock).await;
        assert_ne!(new, old, "{answer}");
        chain.0.push(new);
        // The old process drains and exits (within the 5 s grace, plus stalls).
        assert!(
            ended(old, Duration::from_secs(15)).await,
            "process {old} still runs"
        );
        old = new;
    }
    wait_for(12_000).await;
    stop.store(true, Ordering::SeqCst);
    while load.join_next().await.is_some() {}

    let (ok, failed) = (t.ok.load(Ordering::SeqCst), t.failed.load(Ordering::SeqCst));
    let errors = t.errors.lock().unwrap().clone();
    assert_eq!(failed, 0, "{failed} failed of {ok}: {errors:?}");
    eprintln!(
        "{ok} requests, {} h2 requests sent again after a GOAWAY",
        t.unprocessed.load(Ordering::SeqCst)
    );
    assert_eq!(t.refused.load(Ordering::SeqCst), 0, "{errors:?}");
    assert!(ok >= 10_000, "only {ok} requests");
    assert!(t.connects.load(Ordering::SeqCst) > 0);
    // The last process stops as usual.
    let last = pid_of(&sock).await;
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &last.to_string()])
        .status();
    assert!(ended(last, Duration::from_secs(15)).await);
    drop(r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successor_that_cannot_start_leaves_the_old_process_serving() {
    let dir = temp_dir("upgrade-fail");
    let origin = Origin::named("origin").await;
    let cfg = config(&dir, origin.addr, None, "");
    let good = std::fs::read_to_string(&cfg).unwrap();
    let r = start(&cfg, 1);
    let mut chain = Chain(vec![r.child.id()]);
    let sock = dir.join("api.sock");
    assert!(eventually(Duration::from_secs(10), || api_listening(&sock)).await);
    let pid = pid_of(&sock).await;

    // A configuration the new process refuses: the answer says why.
    std::fs::write(
        &cfg,
        good.replace("default_backend: app", "default_backend: nope"),
    )
    .unwrap();
    let answer = ask_api(&sock, "upgrade").await;
    assert!(
        answer.starts_with("Upgrade failed, this process keeps serving: new process ")
            && answer.contains("nope"),
        "{answer}"
    );
    assert_eq!(pid_of(&sock).await, pid);
    assert_eq!(get(r.addrs[0], "/").await.text(), "origin");

    // SIGUSR2 with the configuration fixed: the same upgrade, by signal.
    std::fs::write(&cfg, &good).unwrap();
    crate::cli::signal(&r.child, "USR2");
    let budget = crate::stall::Budget::new(Duration::from_secs(20));
    let mut new = pid;
    while new == pid && !budget.spent() {
        tokio::time::sleep(Duration::from_millis(50)).await;
        new = pid_of(&sock).await;
    }
    assert_ne!(new, pid, "SIGUSR2 did not upgrade");
    chain.0.push(new);
    assert_eq!(get(r.addrs[0], "/").await.text(), "origin");
    assert!(ended(pid, Duration::from_secs(15)).await);

    // `rampart ctl upgrade` alike.
    let out = bin()
        .args(["ctl", "-s"])
        .arg(&sock)
        .arg("upgrade")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.starts_with("Upgrade done: process "), "{text} {out:?}");
    chain.0.push(pid_of(&sock).await);
    drop(r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_states_stick_tables_and_the_main_pid_carry_over() {
    let dir = temp_dir("upgrade-state");
    let origin = Origin::named("origin").await;
    let cfg = config(
        &dir,
        origin.addr,
        None,
        "    http_request: [\"track-sc0 src table per_ip\"]\n",
    );
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(
        "stick_tables:\n  per_ip: { type: ip, size: 1k, expire: 10m, store: [http_req_cnt] }\n",
    );
    text = text.replace(
        "      s1: { address:",
        "      s2: { address: \"127.0.0.1:9\", check: false }\n      s1: { address:",
    );
    std::fs::write(&cfg, &text).unwrap();
    let notify_path = dir.join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut cmd = bin();
    cmd.args(["run", "-c"])
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &notify_path);
    let r = run_command(cmd, 1);
    let mut chain = Chain(vec![r.child.id()]);
    let sock = dir.join("api.sock");
    assert!(eventually(Duration::from_secs(10), || api_listening(&sock)).await);
    ask_api(&sock, "set server app/s2 state maint").await;
    ask_api(&sock, "set server app/s1 weight 7").await;
    for _ in 0..3 {
        assert_eq!(get(r.addrs[0], "/").await.status, 200);
    }
    let table = ask_api(&sock, "show table per_ip").await;
    assert!(table.contains("http_req_cnt=3"), "{table}");

    let answer = ask_api(&sock, "upgrade").await;
    assert!(answer.starts_with("Upgrade done: process "), "{answer}");
    let new = pid_of(&sock).await;
    chain.0.push(new);

    // systemd hears that the new process is the main one now.
    let budget = crate::stall::Budget::new(Duration::from_secs(10));
    let mut seen = Vec::new();
    let mut buf = [0u8; 512];
    let want = format!("MAINPID={new}\nREADY=1\n");
    while !budget.spent() && !seen.iter().any(|m: &String| m.starts_with(&want)) {
        if let Ok(n) = notify.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    assert!(seen.iter().any(|m| m.starts_with(&want)), "{seen:?}");

    let state = ask_api(&sock, "show servers state app").await;
    let line = |srv: &str| {
        state
            .lines()
            .find(|l| l.split_whitespace().nth(3) == Some(srv))
            .unwrap_or_else(|| panic!("{srv} missing from {state}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    // srv_admin_state 1 (maintenance), srv_uweight 7.
    assert_eq!(line("s2")[6], "1", "{state}");
    assert_eq!(line("s1")[7], "7", "{state}");
    let table = ask_api(&sock, "show table per_ip").await;
    assert!(table.contains("http_req_cnt=3"), "{table}");
    // And the entry counts on in the new process.
    assert_eq!(get(r.addrs[0], "/").await.status, 200);
    let table = ask_api(&sock, "show table per_ip").await;
    assert!(table.contains("http_req_cnt=4"), "{table}");
    drop(r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_process_closes_what_is_left_at_the_end_of_its_grace_time() {
    let dir = temp_dir("upgrade-grace");
    // The server takes 60 s; the grace time is 1 s.
    let origin = Origin::start("slow", |_| delayed(Duration::from_secs(60), 200, "late")).await;
    let cfg = config(&dir, origin.addr, None, "");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("grace: 5s", "grace: 1s");
    std::fs::write(&cfg, text).unwrap();
    let r = start(&cfg, 1);
    let mut chain = Chain(vec![r.child.id()]);
    let sock = dir.join("api.sock");
    assert!(eventually(Duration::from_secs(10), || api_listening(&sock)).await);
    let old = pid_of(&sock).await;
    let addr = r.addrs[0];
    let slow = tokio::spawn(async move { try_request(addr, None, "/slow").await });
    assert!(eventually(Duration::from_secs(10), || origin.count() == 1).await);
    let answer = ask_api(&sock, "upgrade").await;
    assert!(answer.starts_with("Upgrade done: process "), "{answer}");
    chain.0.push(pid_of(&sock).await);
    // The old process does not wait for the 60 s request: it ends after its grace time,
    // and the request in flight there is cut.
    assert!(ended(old, Duration::from_secs(20)).await, "still draining");
    let cut = slow.await.unwrap();
    assert!(cut.is_err(), "{cut:?}");
    drop(r);
}
