//! Every ACL fetch, match method, flag and operator, and every action, through the proxy.

use std::net::SocketAddr;

use http::Request;

use crate::support::*;

/// A proxy whose only rules answer 200 when `cond` holds and 404 otherwise.
fn acl_proxy(cond: &str, extra_backends: &str) -> Proxy {
    Proxy::start(&format!(
        r#"
frontends:
  fe:
    bind: ["127.0.0.1:0"]
    acls:
      named: path_beg /named
    http_request:
      - 'return status 200 string yes if {cond}'
      - return status 404 string no
backends:
  be:
    servers: {{ s: {{ address: "127.0.0.1:9", disabled: true }} }}
{extra_backends}
"#
    ))
}

async fn status(mode: Client, addr: SocketAddr, req: Request<TestBody>) -> u16 {
    send(mode, addr, req, None).await.status.as_u16()
}

fn req(method: &str, uri: &str, headers: &[(&str, &str)]) -> Request<TestBody> {
    let mut b = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(empty()).unwrap()
}

/// (condition, request that matches, request that does not)
type AclCase = (&'static str, Request<TestBody>, Request<TestBody>);

fn acl_cases() -> Vec<AclCase> {
    let get = |p: &'static str| req("GET", p, &[]);
    let h = |k: &'static str, v: &'static str| req("GET", "/", &[(k, v)]);
    vec![
        ("{ always_true }", get("/"), req("GET", "/", &[])),
        ("{ src 127.0.0.0/8 }", get("/"), get("/")),
        (
            "{ src 10.0.0.0/8 192.168.0.0/16 } || { src 127.0.0.1 }",
            get("/"),
            get("/"),
        ),
        ("{ src_port gt 0 }", get("/"), get("/")),
        ("{ dst_port 1:65535 }", get("/"), get("/")),
        ("{ method POST PUT }", req("POST", "/", &[]), get("/")),
        ("{ path /exact }", get("/exact"), get("/exact/more")),
        ("{ path -i /EXACT }", get("/exact"), get("/other")),
        ("{ path_beg /api/ /v2/ }", get("/v2/x"), get("/apix")),
        ("{ path_end .css .js }", get("/a/b.js"), get("/a/b.jsx")),
        ("{ path_sub admin }", get("/x/admin/y"), get("/x/adm/y")),
        ("{ path_reg ^/u/[0-9]+$ }", get("/u/42"), get("/u/4x")),
        (
            "{ path_dir img }",
            get("/a/img/b.png"),
            get("/a/imgs/b.png"),
        ),
        ("{ path_len gt 5 }", get("/abcdef"), get("/ab")),
        ("{ path -m beg /st }", get("/static/x"), get("/s")),
        ("{ path -m end .png }", get("/x.png"), get("/x.pngx")),
        ("{ path -m sub mid }", get("/a/mid/b"), get("/a/b")),
        ("{ path -m reg -i ^/UP }", get("/up/x"), get("/down")),
        ("{ url /a?b=1 }", get("/a?b=1"), get("/a?b=2")),
        ("{ url_beg /search? }", get("/search?q=x"), get("/search/q")),
        (
            "{ url_param(user) alice bob }",
            get("/p?x=1&user=bob"),
            get("/p?user=carol"),
        ),
        ("{ urlp(id) -m int gt 10 }", get("/p?id=11"), get("/p?id=9")),
        (
            "{ query -m sub debug=1 }",
            get("/p?a=2&debug=1"),
            get("/p?a=2"),
        ),
        ("{ query -m found }", get("/p?a"), get("/p")),
        ("{ hdr(x-a) foo }", h("x-a", "foo"), h("x-a", "food")),
        ("{ hdr(x-a) -i FOO }", h("x-a", "foo"), h("x-a", "bar")),
        (
            "{ hdr_beg(x-host) api. }",
            h("x-host", "api.example.com"),
            h("x-host", "www.example.com"),
        ),
        (
            "{ hdr_end(x-host) .example.com }",
            h("x-host", "www.example.com"),
            h("x-host", "example.org"),
        ),
        (
            "{ hdr_sub(user-agent) bot }",
            h("user-agent", "googlebot/2.1"),
            h("user-agent", "curl/8"),
        ),
        (
            "{ hdr_dom(x-host) example.com }",
            h("x-host", "a.example.com:8080"),
            h("x-host", "myexample.com"),
        ),
        (
            "{ hdr_reg(x-id) ^[0-9]+$ }",
            h("x-id", "12345"),
            h("x-id", "12a45"),
        ),
        (
            "{ hdr_cnt(x-dup) eq 2 }",
            req("GET", "/", &[("x-dup", "a"), ("x-dup", "b")]),
            h("x-dup", "a"),
        ),
        ("{ hdr_cnt(x-none) eq 0 }", get("/"), h("x-none", "1")),
        ("{ hdr_val(x-n) ge 100 }", h("x-n", "100"), h("x-n", "99")),
        (
            "{ hdr_ip(x-real-ip) 10.0.0.0/8 }",
            h("x-real-ip", "10.1.2.3"),
            h("x-real-ip", "11.1.2.3"),
        ),
        (
            "{ hdr(x-list) b }",
            h("x-list", "a, b, c"),
            h("x-list", "a, bb"),
        ),
        ("{ hdr(x-a) -m found }", h("x-a", ""), get("/")),
        ("{ hdr_len(x-a) 3 }", h("x-a", "abc"), h("x-a", "ab")),
        (
            "{ req.cook(sid) abc }",
            h("cookie", "theme=dark; sid=abc"),
            h("cookie", "sid=abd"),
        ),
        (
            "{ cook(sid) -m beg ab }",
            h("cookie", "sid=abc"),
            h("cookie", "sid=xab"),
        ),
        ("{ req.ver 1.1 }", get("/"), get("/")),
        ("{ ssl_fc }", get("/"), get("/")),
        ("{ nbsrv(be) eq 0 }", get("/"), get("/")),
        ("{ nbsrv(up) ge 1 }", get("/"), get("/")),
        ("{ always_false }", get("/"), get("/")),
        ("{ hdr(x-n) -m int lt 5 }", h("x-n", "4"), h("x-n", "5")),
        ("{ hdr(x-n) -m int le 5 }", h("x-n", "5"), h("x-n", "6")),
        ("{ hdr(x-n) -m int ne 5 }", h("x-n", "6"), h("x-n", "5")),
        ("{ hdr(x-n) -m int eq 5 }", h("x-n", "5"), h("x-n", "6")),
        ("{ hdr(x-n) 1:3 7 }", h("x-n", "7"), h("x-n", "4")),
        (
            "{ hdr(x-ip) -m ip 192.168.0.0/16 2001:db8::/32 }",
            h("x-ip", "2001:db8::7"),
            h("x-ip", "2001:db9::7"),
        ),
        (
            "{ hdr(x-host) -m dom example.com }",
            h("x-host", "example.com"),
            h("x-host", "example.co"),
        ),
        (
            "{ hdr(x-p) -m dir static }",
            h("x-p", "/a/static"),
            h("x-p", "/a/statics"),
        ),
        ("{ hdr(x-p) -m len 2 }", h("x-p", "ab"), h("x-p", "abc")),
        ("named", get("/named/x"), get("/other")),
        ("!named", get("/other"), get("/named")),
        (
            "named { method POST }",
            req("POST", "/named", &[]),
            get("/named"),
        ),
        ("METH_GET", get("/"), req("POST", "/", &[])),
        ("LOCALHOST", get("/"), get("/")),
        ("{ fe_name fe }", get("/"), get("/")),
        ("{ base_beg localhost }", get("/p"), get("/p")),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_fetches_and_matchers_match_and_do_not_match() {
    let up = Origin::named("up").await;
    let extra = format!(
        "  up:\n    servers: {{ s: {{ address: \"{}\" }} }}",
        up.addr
    );
    // Cases whose second request cannot be made to differ from the first here (client
    // address, port, TLS) are checked for the match only; FALSE-like cases for the miss.
    let match_only = [
        "{ src 127.0.0.0/8 }",
        "{ src 10.0.0.0/8 192.168.0.0/16 } || { src 127.0.0.1 }",
        "{ src_port gt 0 }",
        "{ dst_port 1:65535 }",
        "{ req.ver 1.1 }",
        "{ nbsrv(be) eq 0 }",
        "{ nbsrv(up) ge 1 }",
        "LOCALHOST",
        "{ fe_name fe }",
        "{ base_beg localhost }",
        "{ always_true }",
    ];
    let miss_only = ["{ ssl_fc }", "{ always_false }"];
    for (cond, yes, no) in acl_cases() {
        let p = acl_proxy(cond, &extra);
        let addr = p.addr("fe");
        if !miss_only.contains(&cond) {
            assert_eq!(
                status(Client::H1, addr, yes).await,
                200,
                "{cond} should match"
            );
        }
        if !match_only.contains(&cond) {
            assert_eq!(
                status(Client::H1, addr, no).await,
                404,
                "{cond} should not match"
            );
        }
        p.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_version_tls_and_sni_fetches() {
    let pki = Pki::new();
    let (c, k) = pki.issue("site", &["a.test", "b.test"], false);
    let p = Proxy::start(&format!(
        r#"
frontends:
  fe:
    bind:
      - "127.0.0.1:0"
      - {{ address: "127.0.0.1:0", tls: {{ certificates: [{{ cert: "{}", key: "{}" }}] }} }}
    http_request:
      - return status 200 string h2 if {{ req.ver 2.0 }} !{{ ssl_fc }}
      - return status 201 string tls-b if {{ ssl_fc }} {{ ssl_fc_sni b.test }}
      - return status 202 string tls if {{ ssl_fc }}
      - return status 203 string plain
"#,
        c.display(),
        k.display()
    ));
    let tls = Some((pki.ca_pem.as_str(), "a.test"));
    assert_eq!(
        send(Client::H2c, p.bound(0), req("GET", "/", &[]), None)
            .await
            .status,
        200
    );
    assert_eq!(
        send(Client::H1, p.bound(0), req("GET", "/", &[]), None)
            .await
            .status,
        203
    );
    assert_eq!(
        send(Client::TlsH1, p.bound(1), req("GET", "/", &[]), tls)
            .await
            .status,
        202
    );
    assert_eq!(
        send(
            Client::TlsH2,
            p.bound(1),
            req("GET", "/", &[]),
            Some((&pki.ca_pem, "b.test"))
        )
        .await
        .status,
        201
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_src_matches_ipv6_clients() {
    let Ok(l) = std::net::TcpListener::bind("[::1]:0") else {
        eprintln!("skipping: no IPv6 loopback here");
        return;
    };
    drop(l);
    let p = Proxy::start(
        r#"
frontends:
  fe:
    bind: ["[::1]:0", "127.0.0.1:0"]
    http_request:
      - return status 200 string v6 if { src ::1/128 }
      - return status 201 string v4 if { src 127.0.0.0/8 }
"#,
    );
    assert_eq!(get(p.bound(0), "/").await.status, 200);
    assert_eq!(get(p.bound(1), "/").await.status, 201);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_deny_return_allow_and_redirect() {
    let origin = Origin::start("o", |s| text(200, &format!("origin {}", s.uri))).await;
    let p = Proxy::start(&format!(
        r#"
frontends:
  fe:
    bind: ["127.0.0.1:0"]
    http_request:
      - allow if {{ path /admin/ok }}
      - deny if {{ path_beg /admin }}
      - deny status 429 content-type text/plain string "slow down" hdr Retry-After 30 if {{ path /limited }}
      - return status 418 content-type text/plain lf-string "teapot %[path]" hdr X-From rampart if {{ path /tea }}
      - return status 204 if {{ path /empty }}
      - redirect location https://example.com/new code 301 if {{ path /loc }}
      - redirect prefix /v2 if {{ path_beg /v1 }}
      - redirect prefix https://new.example drop-query if {{ path_beg /moved }}
      - redirect scheme https code 308 if {{ path /secure }}
      - redirect location /slash append-slash code 302 if {{ path /slash }}
    default_backend: be
backends:
  be:
    servers: {{ o: {{ address: "{}" }} }}
"#,
        origin.addr
    ));
    let a = p.addr("fe");
    let g = get(a, "/admin/ok").await;
    assert_eq!(
        (g.status.as_u16(), g.text().as_str()),
        (200, "origin /admin/ok")
    );
    let g = get(a, "/admin/x").await;
    assert_eq!(g.status, 403);
    assert!(
        g.text().contains("403 Forbidden"),
        "default deny page: {}",
        g.text()
    );
    let g = get(a, "/limited").await;
    assert_eq!((g.status.as_u16(), g.text().as_str()), (429, "slow down"));
    assert_eq!(g.header("retry-after"), Some("30"));
    let g = get(a, "/tea").await;
    assert_eq!((g.status.as_u16(), g.text().as_str()), (418, "teapot /tea"));
    assert_eq!(g.header("x-from"), Some("rampart"));
    assert_eq!(g.header("content-type"), Some("text/plain"));
    assert_eq!(get(a, "/empty").await.status, 204);
    let g = get(a, "/loc").await;
    assert_eq!(
        (g.status.as_u16(), g.header("location")),
        (301, Some("https://example.com/new"))
    );
    let g = get(a, "/v1/users?x=1").await;
    assert_eq!(
        (g.status.as_u16(), g.header("location")),
        (302, Some("/v2/v1/users?x=1"))
    );
    let g = get(a, "/moved/a?b=c").await;
    assert_eq!(g.header("location"), Some("https://new.example/moved/a"));
    let g = get(a, "/secure?q=1").await;
    assert_eq!(g.status, 308);
    assert_eq!(
        g.header("location"),
        Some(format!("https://localhost:{}/secure?q=1", a.port()).as_str())
    );
    let g = get(a, "/slash").await;
    assert_eq!(g.header("location"), Some("/slash"));
    assert_eq!(
        origin.count(),
        1,
        "only the allowed request reached the origin"
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_rewrite_requests_and_responses() {
    let origin = Origin::start("o", |s| {
        let mut r = text(200, &format!("{}", s.uri));
        for (k, v) in &s.headers {
            if k.as_str().starts_with("x-") {
                r.headers_mut().append(
                    format!("seen-{k}").parse::<http::HeaderName>().unwrap(),
                    v.clone(),
                );
            }
        }
        r.headers_mut()
            .insert("server", "origin/1.0".parse().unwrap());
        r.headers_mut()
            .insert("x-internal-id", "42".parse().unwrap());
        r.headers_mut()
            .insert("x-powered-by", "php".parse().unwrap());
        r
    })
    .await;
    let p = Proxy::start(&format!(
        r#"
frontends:
  fe:
    bind: ["127.0.0.1:0"]
    http_request:
      - set-header X-Client %[src]
      - set-header X-Replaced new
      - add-header X-Added one
      - add-header X-Added two
      - del-header X-Secret
      - del-header x-debug- -m beg
      - replace-header X-Host ^(.*)\.internal$ \1.example.com
      - set-path /rewritten%[path] if {{ path_beg /old }}
      - set-query lang=en if {{ path_beg /q }}
      - replace-path ^/api/v1/(.*) /v1/\1
    http_response:
      - set-header Server rampart
      - add-header X-Frame-Options DENY
      - del-header X-Powered-By
      - set-header X-Path %[path] if status_dummy_absent || {{ always_true }}
    acls:
      status_dummy_absent: hdr(x-never) -m found
    default_backend: be
backends:
  be:
    servers: {{ o: {{ address: "{}" }} }}
"#,
        origin.addr
    ));
    let a = p.addr("fe");
    let r = req(
        "GET",
        "/old/page?k=v",
        &[
            ("x-replaced", "old"),
            ("x-secret", "s"),
            ("x-debug-a", "1"),
            ("x-debug-b", "2"),
            ("x-host", "db.internal"),
        ],
    );
    let g = send(Client::H1, a, r, None).await;
    assert_eq!(g.text(), "/rewritten/old/page?k=v");
    let seen = origin.last();
    assert_eq!(seen.headers.get("x-client").unwrap(), "127.0.0.1");
    assert_eq!(
        seen.headers
            .get_all("x-replaced")
            .iter()
            .collect::<Vec<_>>(),
        ["new"]
    );
    assert_eq!(
        seen.headers.get_all("x-added").iter().collect::<Vec<_>>(),
        ["one", "two"]
    );
    assert!(!seen.headers.contains_key("x-secret"));
    assert!(!seen.headers.contains_key("x-debug-a") && !seen.headers.contains_key("x-debug-b"));
    assert_eq!(seen.headers.get("x-host").unwrap(), "db.example.com");
    assert_eq!(g.header("server"), Some("rampart"));
    assert_eq!(g.header("x-frame-options"), Some("DENY"));
    assert!(g.header("x-powered-by").is_none());
    // Response rules see the request as it was sent to the server (after set-path).
    assert_eq!(g.header("x-path"), Some("/rewritten/old/page"));
    assert_eq!(g.header("x-internal-id"), Some("42"));
    let g = get(a, "/q/search?lang=fr&x=1").await;
    assert_eq!(g.text(), "/q/search?lang=en");
    let g = get(a, "/api/v1/users/7").await;
    assert_eq!(g.text(), "/v1/users/7");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn use_backend_rules_split_and_default() {
    let api = Origin::named("api").await;
    let web = Origin::named("web").await;
    let canary = Origin::named("canary").await;
    let p = Proxy::start(&format!(
        r#"
frontends:
  fe:
    bind: ["127.0.0.1:0"]
    acls:
      is_api: path_beg /api/
      beta: hdr(x-beta) 1
    use_backend:
      - api if is_api
      - split: {{ web: 3, canary: 1 }}
        if: beta
      - canary unless {{ path_beg / }}
    default_backend: web
backends:
  api: {{ servers: {{ a: {{ address: "{}" }} }} }}
  web: {{ servers: {{ w: {{ address: "{}" }} }} }}
  canary: {{ servers: {{ c: {{ address: "{}" }} }} }}
"#,
        api.addr, web.addr, canary.addr
    ));
    let a = p.addr("fe");
    assert_eq!(get(a, "/api/x").await.text(), "api");
    assert_eq!(get(a, "/page").await.text(), "web");
    let mut canary_hits = 0;
    let n = 400;
    for _ in 0..n {
        if send(Client::H1, a, req("GET", "/", &[("x-beta", "1")]), None)
            .await
            .text()
            == "canary"
        {
            canary_hits += 1;
        }
    }
    // 1 in 4 expected; the split is random, so allow a wide margin (p < 1e-6 to fail).
    assert!(
        (50..=150).contains(&canary_hits),
        "canary got {canary_hits} of {n}"
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_rules_apply_after_backend_choice() {
    let o = Origin::start("o", |s| {
        text(
            200,
            s.headers
                .get("x-backend")
                .map_or("-", |v| v.to_str().unwrap()),
        )
    })
    .await;
    let p = Proxy::start(&format!(
        r#"
frontends:
  fe:
    bind: ["127.0.0.1:0"]
    use_backend: ["locked if {{ path_beg /locked }}"]
    default_backend: open
backends:
  open:
    servers: {{ o: {{ address: "{0}" }} }}
    http_request: ["set-header X-Backend open"]
  locked:
    servers: {{ o: {{ address: "{0}" }} }}
    http_request: ["deny status 401"]
    http_response: ["set-header X-Never yes"]
"#,
        o.addr
    ));
    let a = p.addr("fe");
    assert_eq!(get(a, "/x").await.text(), "open");
    assert_eq!(get(a, "/locked").await.status, 401);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtual_hosts_route_by_host_then_use_backend_applies() {
    let a = Origin::start("a", |s| text(200, &format!("a {}", s.uri))).await;
    let b = Origin::named("b").await;
    let c = Origin::named("c").await;
    let p = Proxy::start(&format!(
        "frontends:\n  fe:\n    bind: \"127.0.0.1:0\"\n    virtual_hosts:\n\
         \x20     api:\n        domains: [api.test, \"*.api.test\"]\n        routes:\n\
         \x20         - {{ backend: a, if: \"{{ path_beg /v1/ }}\", http_request: [\"replace-path ^/v1/(.*) /\\\\1\"], http_response: [\"set-header x-route v1\"] }}\n\
         \x20         - {{ http_request: [\"return status 404 string no-such-api\"] }}\n\
         \x20     any:\n        domains: [\"*\"]\n        routes: [b]\n\
         \x20   use_backend: [c]\n\
         backends:\n  a: {{ servers: {{ s: {{ address: \"{}\" }} }} }}\n  b: {{ servers: {{ s: {{ address: \"{}\" }} }} }}\n  c: {{ servers: {{ s: {{ address: \"{}\" }} }} }}\n",
        a.addr, b.addr, c.addr
    ));
    let fe = p.addr("fe");
    let ask = |host: &'static str, path: &'static str| async move {
        let req = http::Request::get(path)
            .header("host", host)
            .body(empty())
            .unwrap();
        send(Client::H1, fe, req, None).await
    };
    let g = ask("api.test", "/v1/users").await;
    assert_eq!(
        (g.text(), g.header("x-route")),
        ("a /users".to_owned(), Some("v1"))
    );
    assert_eq!(ask("eu.api.test", "/v1/x").await.text(), "a /x");
    let g = ask("api.test", "/v2/x").await;
    assert_eq!(
        (g.status.as_u16(), g.text()),
        (404, "no-such-api".to_owned())
    );
    assert_eq!(ask("other.test", "/").await.text(), "b");
    p.stop().await;
    // Without a catch-all virtual host, other hosts go on to use_backend.
    let p = Proxy::start(&format!(
        "frontends:\n  fe:\n    bind: \"127.0.0.1:0\"\n    virtual_hosts: {{ api: {{ domains: [api.test], routes: [a] }} }}\n    use_backend: [c]\n\
         backends:\n  a: {{ servers: {{ s: {{ address: \"{}\" }} }} }}\n  c: {{ servers: {{ s: {{ address: \"{}\" }} }} }}\n",
        a.addr, c.addr
    ));
    let req = http::Request::get("/")
        .header("host", "other.test")
        .body(empty())
        .unwrap();
    assert_eq!(send(Client::H1, p.addr("fe"), req, None).await.text(), "c");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexed_use_backend_runs_keep_first_match_order() {
    let a = Origin::named("a").await;
    let b = Origin::named("b").await;
    let c = Origin::named("c").await;
    // 100 prefix routes (one index), a route tried on its own, then host routes (another
    // index); earlier routes win over longer patterns further down.
    let mut routes = vec![
        "a if { path_beg /x/ }".to_owned(),
        "b if { path_beg /x/y/ }".to_owned(),
        "c if { path_beg /z/y }".to_owned(),
        "b if { path_beg /z }".to_owned(),
    ];
    routes.extend((0..96).map(|i| format!("c if {{ path_beg /p{i}/ }}")));
    routes.push("b if { path_beg /q } { method POST }".to_owned());
    routes.extend(["a", "b", "c"].map(|be| format!("{be} if {{ hdr(host) -i -m str {be}.TEST }}")));
    let p = Proxy::start(&format!(
        r#"
frontends:
  fe:
    bind: ["127.0.0.1:0"]
    use_backend: {routes:?}
    default_backend: a
backends:
  a: {{ servers: {{ s: {{ address: "{}" }} }} }}
  b: {{ servers: {{ s: {{ address: "{}" }} }} }}
  c: {{ servers: {{ s: {{ address: "{}" }} }} }}
"#,
        a.addr, b.addr, c.addr
    ));
    let fe = p.addr("fe");
    let ask = |method: &'static str, host: &'static str, path: &'static str| async move {
        send(Client::H1, fe, req(method, path, &[("host", host)]), None)
            .await
            .text()
    };
    for (method, host, path, want) in [
        ("GET", "h", "/x/y/z", "a"),
        ("GET", "h", "/z/y/1", "c"),
        ("GET", "h", "/z/q", "b"),
        ("GET", "h", "/p95/x", "c"),
        ("GET", "h", "/p96/x", "a"),
        ("POST", "c.test", "/q", "b"),
        ("GET", "C.Test", "/q", "c"),
        ("GET", "b.test", "/x/", "a"),
        ("GET", "b.test:8080", "/", "a"),
    ] {
        assert_eq!(ask(method, host, path).await, want, "{method} {host}{path}");
    }
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn string_converters_in_rules_and_conditions() {
    let p = Proxy::start(
        r#"
frontends:
  fe:
    bind: ["127.0.0.1:0"]
    acls:
      api_host: "hdr(host),field(1,:),word(-1,.,2) -m str example.com"
    http_request:
      - return status 200 lf-string "%[path,field(2,/)]|%[path,word(-1,/)]|%[path,bytes(1,3)]|%[hdr(x-k),hex]|%[hdr(x-k),base64]|%[url_param(q),url_dec(1)]" if { path_beg /c/ }
      - return status 200 string api if api_host
      - return status 404
"#,
    );
    let a = p.addr("fe");
    let req = http::Request::get("/c/one//two/?q=a%2Fb+c")
        .header("x-k", "hi!")
        .body(empty())
        .unwrap();
    let g = send(Client::H1, a, req, None).await;
    assert_eq!(g.text(), "c|two|c/o|686921|aGkh|a/b c");
    for (host, want) in [
        ("api.example.com:8443", "api"),
        ("www.example.com", "api"),
        ("example.org", "404"),
    ] {
        let req = http::Request::get("/")
            .header("host", host)
            .body(empty())
            .unwrap();
        let g = send(Client::H1, a, req, None).await;
        let got = if g.status == 404 {
            "404".to_owned()
        } else {
            g.text()
        };
        assert_eq!(got, want, "{host}");
    }
    p.stop().await;
}
