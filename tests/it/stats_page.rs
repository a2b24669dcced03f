//! The admin HTTP listener: the stats page rendered by a real browser (headless
//! Chromium), its CSV and JSON, basic auth and the admin form, `/metrics` checked by
//! `promtool`, and the probes.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use http::Request;

use crate::support::*;

fn has(tool: &str) -> bool {
    std::process::Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

struct Admin {
    proxy: Proxy,
    http: SocketAddr,
    _task: tokio::task::JoinHandle<()>,
}

async fn admin(stats: &str, origins: &[&Origin]) -> Admin {
    let servers: String = origins
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let extra = if i == 2 { ", backup: true" } else { "" };
            format!("      {}: {{ address: \"{}\"{extra} }}\n", o.name, o.addr)
        })
        .collect();
    let yaml = format!(
        "admin: {{ http: \"127.0.0.1:0\", stats: {stats} }}\n\
         frontends:\n  www:\n    bind: [\"127.0.0.1:0\"]\n    default_backend: web\n\
         backends:\n  web:\n    health_check: {{ interval: 100ms, rise: 1, fall: 1 }}\n    servers:\n{servers}"
    );
    let proxy = Proxy::start(&yaml);
    let cfg = rampart_config::load_str(&yaml, Some(&proxy.dir), &rampart_config::yaml::ProcessEnv)
        .unwrap();
    let ctx = rampart_admin::AdminCtx::new(proxy.handle().control().clone(), None);
    let (http, task) = rampart_admin::serve_http(
        "127.0.0.1:0",
        rampart_admin::HttpOpts {
            stats: cfg.admin.stats.clone(),
        },
        ctx,
    )
    .await
    .unwrap();
    Admin {
        proxy,
        http,
        _task: task,
    }
}

async fn fetch(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Got {
    let mut b = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(
        Client::H1,
        addr,
        b.body(full(body.to_owned())).unwrap(),
        None,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_page_renders_in_chromium() {
    if !has("chromium") {
        assert!(!required(), "chromium is required");
        println!("skipped: chromium is not installed");
        return;
    }
    let (w1, w2, spare) = (
        Origin::named("web1").await,
        Origin::named("web2").await,
        Origin::named("spare").await,
    );
    let a = admin("{ refresh: 5s }", &[&w1, &w2, &spare]).await;
    for _ in 0..6 {
        get(a.proxy.addr("www"), "/").await;
    }
    let live = a.proxy.handle().live().clone();
    let be = live.backend("web");
    live.find_server(rampart_proxy::state::ServerKey {
        backend: "web",
        server: "web2",
    })
    .unwrap()
    .set_admin(rampart_proxy::state::AdminState::Drain, &be);
    let s1 = live
        .find_server(rampart_proxy::state::ServerKey {
            backend: "web",
            server: "web1",
        })
        .unwrap();
    assert!(
        eventually(Duration::from_secs(5), || s1
            .check
            .lock()
            .unwrap()
            .last
            .is_some())
        .await
    );

    let url = format!("http://{}/stats", a.http);
    let dir = temp_dir("chromium");
    let shot = dir.join("stats.png");
    let profile = dir.join("profile");
    let run = move |args: Vec<String>| {
        std::process::Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(args)
            .output()
            .unwrap()
    };
    let (u1, u2) = (url.clone(), shot.clone());
    let run2 = run.clone();
    let dom = tokio::task::spawn_blocking(move || run2(vec!["--dump-dom".into(), u1]))
        .await
        .unwrap();
    let dom = String::from_utf8_lossy(&dom.stdout).into_owned();
    assert!(dom.contains("<h2>Frontend www</h2>"), "{dom}");
    assert!(dom.contains("<h2>Backend web</h2>"), "{dom}");
    // Rows as the browser parsed them: class by state, the status cell, the check cell.
    let row = |name: &str| {
        dom.split("<tr")
            .find(|r| r.contains(&format!("<td class=\"name\">{name}</td>")))
            .unwrap_or_else(|| panic!("no row for {name} in {dom}"))
            .to_owned()
    };
    let r1 = row("web1");
    assert!(r1.starts_with(" class=\"up\""), "{r1}");
    assert!(r1.contains(" UP</td>") && r1.contains("L4OK"), "{r1}");
    let r2 = row("web2");
    assert!(
        r2.starts_with(" class=\"drain\"") && r2.contains(" DRAIN</td>"),
        "{r2}"
    );
    let r3 = row("spare");
    assert!(r3.starts_with(" class=\"backup\""), "{r3}");
    let total = row("Backend");
    assert!(
        total.starts_with(" class=\"backend\"") && total.contains("<td>UP</td>"),
        "{total}"
    );
    let fe = row("Frontend");
    assert!(fe.contains("<td>OPEN</td>"), "{fe}");
    assert!(dom.contains("<meta http-equiv=\"refresh\" content=\"5\">"));

    // A screenshot for the documentation.
    let out = tokio::task::spawn_blocking(move || {
        run(vec![
            format!("--screenshot={}", u2.display()),
            "--window-size=1500,700".into(),
            format!("{url};norefresh"),
        ])
    })
    .await
    .unwrap();
    assert!(shot.exists(), "{}", String::from_utf8_lossy(&out.stderr));
    if std::env::var_os("RAMPART_UPDATE_SCREENSHOT").is_some() {
        std::fs::copy(
            &shot,
            concat!(env!("CARGO_MANIFEST_DIR"), "/docs/stats-page.png"),
        )
        .unwrap();
    }
    a.proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_admin_form_exports_and_probes() {
    let (w1, w2, spare) = (
        Origin::named("web1").await,
        Origin::named("web2").await,
        Origin::named("spare").await,
    );
    let a = admin(
        "{ admin: true, auth: { user: ops, password: s3cret } }",
        &[&w1, &w2, &spare],
    )
    .await;
    let h = a.http;
    assert_eq!(fetch(h, "GET", "/live", &[], "").await.status, 200);
    assert_eq!(fetch(h, "GET", "/ready", &[], "").await.text(), "ready\n");
    let denied = fetch(h, "GET", "/stats", &[], "").await;
    assert_eq!(denied.status, 401);
    assert_eq!(
        denied.header("www-authenticate"),
        Some("Basic realm=\"rampart statistics\"")
    );
    let wrong = fetch(
        h,
        "GET",
        "/stats",
        &[("authorization", "Basic b3BzOm5vcGU=")],
        "",
    )
    .await;
    assert_eq!(wrong.status, 401);
    let auth = ("authorization", "Basic b3BzOnMzY3JldA==");
    let page = fetch(h, "GET", "/stats", &[auth], "").await;
    assert_eq!(page.status, 200);
    assert!(page.text().contains("<select name=\"action\">"));

    // The form drains web1; the page redirects with the result.
    let done = fetch(
        h,
        "POST",
        "/stats",
        &[auth, ("content-type", "application/x-www-form-urlencoded")],
        "b=web&s=web1&action=drain",
    )
    .await;
    assert_eq!(done.status, 303);
    assert_eq!(done.header("location"), Some("/stats;st=DONE"));
    let s1 = a
        .proxy
        .handle()
        .live()
        .find_server(rampart_proxy::state::ServerKey {
            backend: "web",
            server: "web1",
        })
        .unwrap();
    assert_eq!(s1.admin(), rampart_proxy::state::AdminState::Drain);
    let msg = fetch(h, "GET", "/stats;st=DONE;norefresh", &[auth], "")
        .await
        .text();
    assert!(
        msg.contains("Action processed successfully.") && !msg.contains("http-equiv=\"refresh\"")
    );
    let none = fetch(h, "POST", "/stats", &[auth], "b=web&action=maint").await;
    assert_eq!(none.header("location"), Some("/stats;st=NONE"));

    // CSV and JSON exports.
    let csv = fetch(h, "GET", "/stats;csv", &[auth], "").await.text();
    assert!(csv.starts_with("# pxname,svname,qcur,"));
    assert!(
        csv.lines()
            .any(|l| l.starts_with("web,web1,") && l.contains(",DRAIN,")),
        "{csv}"
    );
    let up = fetch(h, "GET", "/stats;csv;up", &[auth], "").await.text();
    assert!(!up.contains("web,web1,"), "{up}");
    let json = fetch(h, "GET", "/stats;json", &[auth], "").await.text();
    assert!(json.starts_with("[[{\"objType\":\"Frontend\""), "{json}");
    assert!(json.contains("\"field\":{\"pos\":17,\"name\":\"status\"},\"processNum\":1,\"tags\":{\"origin\":\"Metric\",\"nature\":\"Output\",\"scope\":\"Process\"},\"value\":{\"type\":\"str\",\"value\":\"DRAIN\"}"), "{json}");
    assert_eq!(fetch(h, "GET", "/nope", &[], "").await.status, 404);
    a.proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_without_duplicates() {
    let (w1, w2, spare) = (
        Origin::named("web1").await,
        Origin::named("web2").await,
        Origin::named("spare").await,
    );
    let a = admin("{}", &[&w1, &w2, &spare]).await;
    for _ in 0..4 {
        get(a.proxy.addr("www"), "/").await;
    }
    // A request with no Host, and one with a header name that folds into a framing one.
    let bad = raw(a.proxy.addr("www"), b"GET / HTTP/1.1\r\n\r\n").await;
    assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
    let odd = raw(
        a.proxy.addr("www"),
        b"GET / HTTP/1.1\r\nHost: x\r\nContent_Length: 3\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(odd.starts_with("HTTP/1.1 200"), "{odd}");
    let m = fetch(a.http, "GET", "/metrics", &[], "").await;
    assert_eq!(m.status, 200);
    let text = m.text();
    for needle in [
        "rampart_frontend_requests_total{frontend=\"www\"} 5",
        "rampart_frontend_responses_total{code=\"2xx\",frontend=\"www\"} 5",
        "rampart_frontend_refused_requests_total{frontend=\"www\",reason=\"bad_request\"} 1",
        "rampart_frontend_refused_requests_total{frontend=\"www\",reason=\"slow_reader\"} 0",
        "rampart_frontend_removed_headers_total{frontend=\"www\",reason=\"underscore\"} 1",
        "rampart_server_check_state{backend=\"web\",server=\"web1\",state=\"up\"} 1",
        "rampart_backend_breaker_rejections_total{backend=\"web\",limit=\"max_requests\"} 0",
        "rampart_reloads_total{result=\"ok\"} 0",
        "rampart_config_generation 1",
        "# TYPE process_start_time_seconds gauge",
    ] {
        assert!(text.contains(needle), "no {needle:?} in:\n{text}");
    }
    // No series twice.
    let mut seen = HashSet::new();
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let series = l.rsplit_once(' ').map_or(l, |(s, _)| s);
        assert!(seen.insert(series.to_owned()), "duplicate series {series}");
    }
    if !has("promtool") {
        assert!(
            !required(),
            "promtool is required (Debian package prometheus)"
        );
        println!("skipped promtool: not installed");
    } else {
        use std::io::Write;
        let mut child = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    a.proxy.stop().await;
}
