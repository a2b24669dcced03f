//! The binary: `--version`, `check` on every example and on broken files, `run` with a
//! graceful stop on SIGTERM.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::support::*;

/// `rampart ctl -c cfg ARGS...`: its output, which must be a success.
pub(crate) fn ctl(cfg: &Path, args: &[&str]) -> String {
    let out = bin()
        .arg("ctl")
        .arg("-c")
        .arg(cfg)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

pub(crate) fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rampart"))
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn version_prints_name_and_version() {
    let out = bin().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("rampart {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn every_example_passes_check() {
    // `rampart check ...` exits 0 and says so as `haproxy -c` does.
    let valid = |what: &Path, cmd: &mut Command| {
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            what.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "Configuration file is valid"
        );
    };
    let mut n = 0;
    for e in std::fs::read_dir(repo().join("examples")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yaml") {
            valid(&p, bin().args(["check", "-c"]).arg(&p));
            n += 1;
        }
    }
    assert!(n >= 4, "only {n} examples found");
    // Envoy's bootstrap file.
    let boot = repo().join("examples/envoy-bootstrap/bootstrap.yaml");
    valid(&boot, bin().args(["check", "--envoy-bootstrap"]).arg(&boot));
    // The profile-guided build's training configuration, with what packaging/pgo.sh sets.
    let train = repo().join("packaging/pgo-train.yaml");
    let certs = repo().join("examples/certs");
    valid(
        &train,
        bin()
            .args(["check", "-c"])
            .arg(&train)
            .env("PGO_ORIGIN", "127.0.0.1:18080")
            .env("PGO_CERT", certs.join("example.pem"))
            .env("PGO_KEY", certs.join("example.key")),
    );
}

#[test]
fn check_reports_every_error_and_fails() {
    let dir = temp_dir("cli");
    let f = dir.join("bad.yaml");
    std::fs::write(
        &f,
        "frontends:\n  www:\n    bind: [\":8080\"]\n    defualt_backend: web\nbackends:\n  web:\n    servers: { a: { address: nowhere } }\n",
    )
    .unwrap();
    let out = bin().args(["check", "-c"]).arg(&f).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let name = f.display();
    assert!(err.contains(&format!("{name}:4:5: frontends.www.defualt_backend: unknown key \"defualt_backend\" (did you mean \"default_backend\"?)")), "{err}");
    assert!(
        err.contains(&format!(
            "{name}:7:30: backends.web.servers.a.address: invalid server address \"nowhere\""
        )),
        "{err}"
    );
    assert!(err.contains("Configuration file has 2 errors"), "{err}");
    let out = bin()
        .args(["check", "-c", "/nonexistent.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read configuration"));
}

#[test]
fn check_refuses_an_expired_certificate_and_warns_about_one_that_expires_soon() {
    let pki = Pki::new();
    let (old, old_key) = pki.issue("old", &["old.test"], true);
    let (soon, soon_key) = pki.issue_for_days("soon", &["soon.test"], 5);
    let (fine, fine_key) = pki.issue_for_days("fine", &["fine.test"], 60);
    let f = pki.dir.join("cfg.yaml");
    let check = |cert: &Path, key: &Path, extra: &str| {
        std::fs::write(
            &f,
            format!(
                "frontends:\n  fe:\n    bind: [{{ address: \"127.0.0.1:0\", tls: {{ certificates: [{{ cert: \"{}\", key: \"{}\" }}]{extra} }} }}]\n",
                cert.display(),
                key.display()
            ),
        )
        .unwrap();
        let out = bin().args(["check", "-c"]).arg(&f).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, err) = check(&old, &old_key, "");
    assert!(!ok, "an expired certificate is refused");
    assert!(
        err.contains("frontends.fe.bind.0.tls.certificates.0: certificate ")
            && err.contains(
                " days ago (Jan  1 00:00:00 2020 GMT); refused (tls.allow_expired: true serves it anyway)"
            ),
        "{err}"
    );
    let (ok, err) = check(&old, &old_key, ", allow_expired: true");
    assert!(ok, "{err}");
    assert!(
        err.contains("cfg.yaml: warning: frontends.fe.bind.0.tls: certificate ")
            && err.contains("served because tls.allow_expired is set"),
        "{err}"
    );
    let (ok, err) = check(&soon, &soon_key, "");
    assert!(ok, "{err}");
    assert!(
        err.contains("warning: frontends.fe.bind.0.tls: certificate ")
            && (err.contains("expires in 4 days (") || err.contains("expires in 5 days (")),
        "{err}"
    );
    let (ok, err) = check(&fine, &fine_key, "");
    assert!(ok && !err.contains("warning"), "{err}");
    let (ok, err) = check(&fine, &fine_key, ", expiry_warning: 90d");
    assert!(
        ok && (err.contains("expires in 59 days (") || err.contains("expires in 60 days (")),
        "{err}"
    );
}

/// The binary running a configuration; reads its log to learn the bound addresses.
pub(crate) struct Running {
    pub child: Child,
    pub addrs: Vec<SocketAddr>,
    pub log: mpsc::Receiver<String>,
    /// The lines read while waiting for the addresses.
    pub early: Vec<String>,
}

pub(crate) fn run(cfg: &Path, binds: usize) -> Running {
    run_args(&["run".as_ref(), "-c".as_ref(), cfg.as_os_str()], binds)
}

/// The binary run with `args`, once it reports `binds` frontend addresses.
pub(crate) fn run_args(args: &[&std::ffi::OsStr], binds: usize) -> Running {
    let mut cmd = bin();
    cmd.args(args);
    run_command(cmd, binds)
}

/// `cmd` (the binary with its arguments and environment) run, once it reports `binds`
/// frontend addresses.
pub(crate) fn run_command(mut cmd: Command, binds: usize) -> Running {
    let mut child = cmd
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut addrs = Vec::new();
    let mut early = Vec::new();
    while addrs.len() < binds {
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the proxy did not report listening");
        early.push(line.clone());
        // Frontend binds only (the peers listener logs its own address too).
        if let Some(a) = line
            .split("listening on ")
            .nth(1)
            .filter(|_| line.contains(" frontend="))
        {
            addrs.push(a.split_whitespace().next().unwrap().parse().unwrap());
        }
    }
    Running {
        child,
        addrs,
        log: rx,
        early,
    }
}

impl Running {
    /// Sends `sig` and waits (at most 10 s) for the exit.
    pub(crate) async fn stop(&mut self, sig: &str) -> ExitStatus {
        signal(&self.child, sig);
        self.exited(Duration::from_secs(10)).await
    }

    /// Waits for the process to exit, at most `limit`: past that it is killed and the
    /// test fails, so a proxy that does not stop never hangs the suite.
    pub(crate) async fn exited(&mut self, limit: Duration) -> ExitStatus {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("the proxy did not exit within {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A test that fails midway leaves no proxy behind.
impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub(crate) fn signal(child: &Child, sig: &str) {
    let st = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_in_flight_request_finish_then_exits_zero() {
    let arrived = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = arrived.clone();
    let slow = Origin::start("slow", move |_| {
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
        delayed(Duration::from_millis(600), 200, "finished")
    })
    .await;
    let dir = temp_dir("run");
    let cfg = dir.join("run.yaml");
    std::fs::write(
        &cfg,
        format!(
            "global: {{ grace: 5s }}\nfrontends: {{ fe: {{ bind: \"127.0.0.1:0\", default_backend: be }} }}\nbackends: {{ be: {{ servers: {{ s: {{ address: \"{}\" }} }} }} }}\n",
            slow.addr
        ),
    )
    .unwrap();
    let mut r = run(&cfg, 1);
    let addr = r.addrs[0];
    let in_flight = tokio::spawn(async move { get(addr, "/").await });
    // Stop while the request is at the server.
    assert!(
        eventually(Duration::from_secs(5), || arrived
            .load(std::sync::atomic::Ordering::SeqCst))
        .await
    );
    signal(&r.child, "TERM");
    let got = in_flight.await.unwrap();
    assert_eq!(
        (got.status.as_u16(), got.text().as_str()),
        (200, "finished"),
        "the in-flight request completed"
    );
    let status = r.exited(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0));
    let log: Vec<String> = r.log.try_iter().collect();
    assert!(
        log.iter().any(|l| l.contains("SIGTERM: stopping")),
        "{log:?}"
    );
    // Nothing listens any more.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

/// Waits for a log line containing `needle`; returns every line read meanwhile.
pub(crate) fn wait_log(r: &Running, needle: &str) -> Vec<String> {
    if let Some(i) = r.early.iter().position(|l| l.contains(needle)) {
        return r.early[..=i].to_vec();
    }
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if let Ok(line) = r.log.recv_timeout(Duration::from_millis(100)) {
            let hit = line.contains(needle);
            seen.push(line);
            if hit {
                return seen;
            }
        }
    }
    panic!("no log line with {needle:?}; got {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_and_file_changes_reload_and_a_typo_changes_nothing() {
    let o = Origin::named("origin").await;
    let dir = temp_dir("reload");
    let cfg = dir.join("rampart.yaml");
    let write = |tag: &str, extra: &str| {
        std::fs::write(
            &cfg,
            format!(
                "global: {{ reload_grace: 10ms }}\nfrontends:\n  fe:\n    bind: \"127.0.0.1:0\"\n    default_backend: be\n    http_response: [\"set-header x-tag {tag}\"]\n{extra}backends: {{ be: {{ servers: {{ s: {{ address: \"{}\" }} }} }} }}\n",
                o.addr
            ),
        )
        .unwrap();
    };
    write("one", "");
    let mut r = run(&cfg, 1);
    let addr = r.addrs[0];
    assert_eq!(get(addr, "/").await.header("x-tag"), Some("one"));

    // A file change is picked up by itself.
    write("two", "");
    wait_log(&r, "configuration reloaded");
    assert_eq!(get(addr, "/").await.header("x-tag"), Some("two"));

    // A typo: the precise error is logged, the old configuration keeps serving.
    write("three", "    timeouts: { clinet: 5s }\n");
    let log = wait_log(&r, "reload refused");
    let log = log.join("\n") + "\n" + &wait_log(&r, "clinet").join("\n");
    assert!(
        log.contains("rampart.yaml:7:17: frontends.fe.timeouts.clinet: unknown key \"clinet\" (did you mean \"client\"?)"),
        "{log}"
    );
    assert_eq!(get(addr, "/").await.header("x-tag"), Some("two"));

    // SIGHUP reloads the (fixed) file too.
    write("four", "");
    signal(&r.child, "HUP");
    wait_log(&r, "configuration reloaded");
    assert_eq!(get(addr, "/").await.header("x-tag"), Some("four"));

    let status = r.stop("TERM").await;
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_talks_to_the_runtime_api_and_reloads() {
    let o = Origin::named("origin").await;
    let dir = temp_dir("ctl");
    let cfg = dir.join("rampart.yaml");
    let write = |tag: &str| {
        std::fs::write(
            &cfg,
            format!(
                "admin: {{ socket: [{{ path: run/api.sock }}, {{ address: \"127.0.0.1:0\", level: user }}], stats: {{ auth: {{ user: ops, password: hunter2 }} }} }}\nfrontends:\n  fe:\n    bind: \"127.0.0.1:0\"\n    default_backend: be\n    http_response: [\"set-header x-tag {tag}\"]\nbackends: {{ be: {{ servers: {{ s: {{ address: \"{}\" }} }} }} }}\n",
                o.addr
            ),
        )
        .unwrap();
    };
    write("one");
    let mut r = run(&cfg, 1);
    let addr = r.addrs[0];
    wait_log(&r, "runtime API on");
    let ctl = |args: &[&str]| ctl(&cfg, args);
    assert_eq!(ctl(&["show", "backend"]), "# name\nbe\n");
    let shown = ctl(&["show", "config"]);
    assert!(
        shown.contains("password: <redacted> }") && !shown.contains("hunter2"),
        "{shown}"
    );
    assert!(shown.contains("default_backend: be"), "{shown}");
    assert_eq!(ctl(&["set", "server", "be/s", "state", "drain"]), "");
    assert_eq!(get(addr, "/").await.status, 503);
    assert_eq!(ctl(&["set server be/s state ready"]), "");
    assert_eq!(get(addr, "/").await.status, 200);

    // `reload` on the socket goes through the same applier as SIGHUP.
    std::fs::write(
        &cfg,
        std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("x-tag one", "x-tag two"),
    )
    .unwrap();
    let answer = ctl(&["reload"]);
    assert!(
        answer.starts_with("Configuration reloaded (generation "),
        "{answer}"
    );
    assert_eq!(get(addr, "/").await.header("x-tag"), Some("two"));
    std::fs::write(
        &cfg,
        std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("default_backend: be", "default_backend: eb"),
    )
    .unwrap();
    let answer = ctl(&["reload"]);
    assert!(
        answer.contains("Reload failed, the running configuration is unchanged:")
            && answer.contains("unknown backend \"eb\" (did you mean \"be\"?)"),
        "{answer}"
    );
    assert_eq!(get(addr, "/").await.status, 200);

    // The interactive prompt, fed from a pipe.
    let mut child = bin()
        .args(["ctl", "-s"])
        .arg(dir.join("run/api.sock"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(b"show backend\nshow cli level\nquit\n")
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("# name\nbe\n") && text.contains("admin"),
        "{text}"
    );

    let status = r.stop("TERM").await;
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_states_persist_in_the_state_file_across_restarts() {
    let (a, b) = (Origin::named("a").await, Origin::named("b").await);
    let dir = temp_dir("state");
    let cfg = dir.join("rampart.yaml");
    std::fs::write(
        &cfg,
        format!(
            "global: {{ state_file: run/servers.state }}\nadmin: {{ socket: {{ path: run/api.sock }} }}\nfrontends:\n  fe:\n    bind: \"127.0.0.1:0\"\n    default_backend: be\nbackends: {{ be: {{ servers: {{ a: {{ address: \"{}\" }}, b: {{ address: \"{}\", weight: 4 }} }} }} }}\n",
            a.addr, b.addr
        ),
    )
    .unwrap();
    let ctl = |args: &[&str]| ctl(&cfg, args);
    let mut r = run(&cfg, 1);
    wait_log(&r, "runtime API on");
    assert_eq!(
        ctl(&["set server be/a state drain; set server be/b weight 50%"]),
        ""
    );
    let saved = std::fs::read_to_string(dir.join("run/servers.state")).unwrap();
    assert!(
        saved.starts_with("1\n# be_id be_name srv_id srv_name "),
        "{saved}"
    );
    assert!(saved.contains("\n2 be 1 a 127.0.0.1 2 8 1 1 "), "{saved}");
    assert!(saved.contains("\n2 be 2 b 127.0.0.1 2 0 2 4 "), "{saved}");
    r.stop("TERM").await;

    // The next start restores them.
    let mut r = run(&cfg, 1);
    let log = wait_log(&r, "restored 2 server states");
    assert!(log.iter().any(|l| l.contains("0 lines skipped")), "{log:?}");
    for _ in 0..5 {
        assert_eq!(get(r.addrs[0], "/").await.text(), "b");
    }
    assert_eq!(ctl(&["get weight be/b"]), "2 (initial 4)\n");
    r.stop("TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_shown_measured_and_warned_about_on_reload() {
    let o = Origin::named("origin").await;
    let pki = Pki::new();
    pki.issue_for_days("soon", &["soon.test", "www.soon.test"], 5);
    let cfg = pki.dir.join("rampart.yaml");
    let write = |tag: &str| {
        std::fs::write(
            &cfg,
            format!(
                "admin: {{ socket: {{ path: run/api.sock }} }}\nfrontends:\n  fe:\n    bind: [{{ address: \"127.0.0.1:0\", tls: {{ certificates: [{{ cert: soon.pem, key: soon.key }}] }} }}]\n    default_backend: be\n    http_response: [\"set-header x-tag {tag}\"]\nbackends: {{ be: {{ servers: {{ s: {{ address: \"{}\" }} }} }} }}\n",
                o.addr
            ),
        )
        .unwrap();
    };
    write("one");
    let mut r = run(&cfg, 1);
    let log = wait_log(&r, "expires in").join("\n");
    assert!(log.contains("soon.pem expires in"), "{log}");
    wait_log(&r, "runtime API on");
    let ctl = |args: &[&str]| ctl(&cfg, args);

    assert_eq!(ctl(&["show", "ssl", "cert"]), "# filename\nsoon.pem\n");
    let detail = ctl(&["show", "ssl", "cert", "soon.pem"]);
    assert!(
        detail.starts_with("Filename: soon.pem\nStatus: Used\nSerial: ")
            && detail.contains("\nnotAfter: ")
            && detail.contains("\nSubject: /CN=soon.test\nIssuer: /CN=rampart test CA\n")
            && (detail.contains("\nExpires in: 4 days\n")
                || detail.contains("\nExpires in: 5 days\n"))
            && detail.contains("\nSubject Alternative Name: DNS:soon.test, DNS:www.soon.test\n")
            && detail.ends_with("\nUsed by: fe bind 0\n"),
        "{detail}"
    );
    assert_eq!(
        ctl(&["show", "ssl", "cert", "other.pem"]),
        "Can't display the certificate: Not found or the certificate is a bundle!\n"
    );

    // The reload answer carries the warning as well.
    write("two");
    let answer = ctl(&["reload"]);
    assert!(
        answer.starts_with("Configuration reloaded (generation ")
            && answer.contains("rampart.yaml: warning: frontends.fe.bind.0.tls: certificate ")
            && answer.contains("soon.pem expires in"),
        "{answer}"
    );
    // An expired certificate is refused at reload, and the one in use keeps serving.
    let (_, _) = pki.issue("soon", &["soon.test"], true);
    write("three");
    let answer = ctl(&["reload"]);
    assert!(
        answer.contains("Reload failed, the running configuration is unchanged:")
            && answer.contains("expired"),
        "{answer}"
    );
    assert_eq!(r.stop("TERM").await.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_tell_the_seconds_until_each_certificate_expires() {
    let pki = Pki::new();
    let (c, k) = pki.issue_for_days("site", &["site.test"], 30);
    let p = Proxy::start(&format!(
        "frontends:\n  fe:\n    bind: [{{ address: \"127.0.0.1:0\", tls: {{ certificates: [{{ cert: \"{}\", key: \"{}\" }}] }} }}]\n",
        c.display(),
        k.display()
    ));
    let ctx = rampart_admin::AdminCtx::new(p.handle().control().clone(), None);
    let text = rampart_admin::metrics::render(&ctx);
    let line = text
        .lines()
        .find(|l| l.starts_with("rampart_certificate_expiry_seconds{"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains(&format!("file=\"{}\"", c.display())) && line.contains("frontend=\"fe\""),
        "{line}"
    );
    let secs: i64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!((29 * 86400..=30 * 86400).contains(&secs), "{line}");
    p.stop().await;
}

/// `rampart schema`: a JSON Schema that a real validator (Python's jsonschema, with YAML
/// read as YAML 1.2) finds valid, that accepts every example, bench and packaging
/// configuration, and that flags a misspelt key and a wrong word where the docs list the
/// words.
#[test]
fn the_json_schema_accepts_the_examples_and_flags_a_misspelt_key() {
    let tools = std::process::Command::new("python3")
        .args(["-c", "import jsonschema, yaml"])
        .output();
    if !tools.is_ok_and(|o| o.status.success()) {
        assert!(
            !crate::support::required(),
            "python3 with jsonschema and yaml is needed for the schema test"
        );
        eprintln!("skipped: python3 with jsonschema and yaml not found");
        return;
    }
    let out = bin().arg("schema").output().unwrap();
    assert!(out.status.success());
    let dir = temp_dir("schema");
    let schema = dir.join("rampart.schema.json");
    std::fs::write(&schema, &out.stdout).unwrap();
    let mut files = Vec::new();
    for d in ["examples", "bench", "packaging"] {
        for e in std::fs::read_dir(repo().join(d)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "yaml") {
                files.push(p);
            }
        }
    }
    assert!(files.len() >= 6, "{files:?}");
    let check = |files: &[PathBuf]| {
        std::process::Command::new("python3")
            .arg(repo().join("tests/tools/schema_check.py"))
            .arg(&schema)
            .args(files)
            .output()
            .unwrap()
    };
    let ok = check(&files);
    assert!(
        ok.status.success(),
        "{}{}",
        String::from_utf8_lossy(&ok.stdout),
        String::from_utf8_lossy(&ok.stderr)
    );
    // A misspelt key, and a word the docs do not list.
    let quick = std::fs::read_to_string(repo().join("examples/quickstart.yaml")).unwrap();
    assert!(quick.contains("default_backend:"));
    let typo = dir.join("typo.yaml");
    std::fs::write(
        &typo,
        quick.replacen("default_backend:", "defualt_backend:", 1),
    )
    .unwrap();
    let mode = dir.join("mode.yaml");
    std::fs::write(
        &mode,
        "frontends:\n  f:\n    mode: udp\n    bind: \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let bad = check(&[typo, mode]);
    let said = String::from_utf8_lossy(&bad.stdout);
    assert!(!bad.status.success(), "{said}");
    assert!(
        said.contains("'defualt_backend' was unexpected")
            && said.contains("frontends.f.mode: 'udp' is not one of ['http', 'tcp']"),
        "{said}"
    );
}

/// systemd's notifications, received by a fake notify socket: READY=1 with the main PID
/// once listening, WATCHDOG=1 at half `WATCHDOG_USEC`, RELOADING=1 (with the monotonic
/// clock) then READY=1 around a reload, STOPPING=1 when the drain starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_hears_ready_reloading_watchdog_and_stopping() {
    let o = Origin::named("origin").await;
    let dir = temp_dir("notify");
    let cfg = dir.join("rampart.yaml");
    std::fs::write(
        &cfg,
        format!(
            "frontends:\n  fe:\n    bind: \"127.0.0.1:0\"\n    default_backend: be\nbackends: {{ be: {{ servers: {{ s: {{ address: \"{}\" }} }} }} }}\n",
            o.addr
        ),
    )
    .unwrap();
    let sock_path = dir.join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut cmd = bin();
    cmd.args(["run", "-c"])
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "400000");
    let mut r = run_command(cmd, 1);
    let pid = r.child.id();
    // Waits (at most 10 s, plus stalls) for a message that `want` accepts.
    let next = |want: &dyn Fn(&str) -> bool| -> String {
        let budget = crate::stall::Budget::new(Duration::from_secs(10));
        let mut seen = Vec::new();
        let mut buf = [0u8; 512];
        while !budget.spent() {
            if let Ok(n) = sock.recv(&mut buf) {
                let m = String::from_utf8_lossy(&buf[..n]).into_owned();
                if want(&m) {
                    return m;
                }
                seen.push(m);
            }
        }
        panic!("no such notification; got {seen:?}");
    };
    let ready = next(&|m| m.starts_with("READY=1"));
    assert!(ready.contains(&format!("\nMAINPID={pid}\n")), "{ready}");
    assert_eq!(get(r.addrs[0], "/").await.text(), "origin");
    next(&|m| m == "WATCHDOG=1");
    next(&|m| m == "WATCHDOG=1");
    signal(&r.child, "HUP");
    let reloading = next(&|m| m.starts_with("RELOADING=1"));
    let usec: u64 = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .expect("MONOTONIC_USEC")
        .parse()
        .unwrap();
    assert!(usec > 0);
    next(&|m| m.starts_with("READY=1"));
    wait_log(&r, "configuration reloaded");
    signal(&r.child, "TERM");
    next(&|m| m.starts_with("STOPPING=1"));
    assert_eq!(r.exited(Duration::from_secs(10)).await.code(), Some(0));
}

/// The unit file in packaging/ is one systemd accepts (`systemd-analyze verify`), with
/// this build's binary in place of /usr/bin/rampart.
#[test]
fn the_systemd_unit_verifies() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            !crate::support::required(),
            "systemd-analyze is needed to check packaging/rampart.service"
        );
        eprintln!("skipped: no systemd-analyze");
        return;
    }
    let unit = std::fs::read_to_string(repo().join("packaging/rampart.service")).unwrap();
    for key in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "WatchdogSec=",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE CAP_NET_RAW CAP_NET_ADMIN",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
    ] {
        assert!(unit.contains(key), "{key}");
    }
    let dir = temp_dir("unit");
    let path = dir.join("rampart.service");
    std::fs::write(
        &path,
        unit.replace("/usr/bin/rampart", env!("CARGO_BIN_EXE_rampart")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .current_dir(&dir)
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
}
