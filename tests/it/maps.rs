//! Maps and ACL files: `map` converters choosing backends (`use_backend %[...]`), ACLs
//! reading `-f` files, and both changed at run time over the runtime socket with
//! HAProxy's commands and answers, kept across a reload while the file is unchanged.

use std::net::IpAddr;
use std::path::PathBuf;

use crate::support::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The body the origin answering a request for `host` from `src` sends (its name), or
/// the status when the proxy answered.
async fn who(fe: std::net::SocketAddr, src: &str, host: &str) -> String {
    let g = get_from(ip(src), fe, "/", &[("host", host)]).await;
    if g.status == 200 {
        g.text()
    } else {
        g.status.as_u16().to_string()
    }
}

fn yaml(a: &Origin, b: &Origin, web: &Origin) -> String {
    format!(
        r#"
admin: {{ socket: {{ path: run/api.sock, level: admin }} }}
frontends:
  fe:
    bind: ["127.0.0.1:0"]
    acls:
      blocked: src -f blocked.acl
    http_request:
      - deny if blocked
      - set-header x-mapped %[req.hdr(host),lower,map(hosts.map,none)]
    use_backend: ["%[req.hdr(host),lower,map(hosts.map,web)]"]
    default_backend: web
backends:
  be_a: {{ servers: {{ s: {{ address: "{}" }} }} }}
  be_b: {{ servers: {{ s: {{ address: "{}" }} }} }}
  web: {{ servers: {{ s: {{ address: "{}" }} }} }}
"#,
        a.addr, b.addr, web.addr
    )
}

struct Setup {
    proxy: Proxy,
    ctx: std::sync::Arc<rampart_admin::AdminCtx>,
    sock: PathBuf,
    _tasks: Vec<tokio::task::JoinHandle<()>>,
}

async fn setup(yaml: &str, dir: PathBuf) -> Setup {
    let proxy = Proxy::start_in(yaml, dir);
    let (ctx, tasks) = serve_api(&proxy, yaml).await;
    let sock = proxy.dir.join("run/api.sock");
    Setup {
        proxy,
        ctx,
        sock,
        _tasks: tasks,
    }
}

/// `0x...` entry identifiers vary; the rest of each line does not.
fn strip_ids(s: &str) -> String {
    s.lines()
        .map(|l| match l.split_once(' ') {
            Some((id, rest)) if id.starts_with("0x") => rest.to_owned(),
            _ => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_map_changes_routing_at_once_and_acl_files_change_live() {
    let (a, b, web) = (
        Origin::named("a").await,
        Origin::named("b").await,
        Origin::named("web").await,
    );
    let dir = temp_dir("maps");
    std::fs::write(
        dir.join("hosts.map"),
        "# host to backend\na.test be_a\nb.test   be_b\n",
    )
    .unwrap();
    std::fs::write(dir.join("blocked.acl"), "# nobody yet\n").unwrap();
    let s = setup(&yaml(&a, &b, &web), dir.clone()).await;
    let fe = s.proxy.addr("fe");
    let sock = &s.sock;

    // The map chooses, its default and the default backend answer the rest.
    assert_eq!(who(fe, "127.0.0.2", "a.test").await, "a");
    assert_eq!(who(fe, "127.0.0.2", "B.TEST").await, "b");
    assert_eq!(who(fe, "127.0.0.2", "other.test").await, "web");
    assert_eq!(a.last().headers["x-mapped"], "be_a");

    let list = ask_api(sock, "show map").await;
    assert!(list.starts_with("# id (file) description\n"), "{list}");
    assert!(
        list.contains("(hosts.map) pattern loaded from file ")
            && list.contains("curr_ver=0 next_ver=0 entry_cnt=2\n"),
        "{list}"
    );
    assert_eq!(
        strip_ids(&ask_api(sock, "show map hosts.map").await),
        "a.test be_a\nb.test be_b\n"
    );
    let id = list
        .lines()
        .find(|l| l.contains("(hosts.map)"))
        .and_then(|l| l.split(' ').next())
        .unwrap();
    assert_eq!(
        ask_api(sock, &format!("show map #{id}")).await,
        ask_api(sock, "show map hosts.map").await
    );
    assert_eq!(
        ask_api(sock, "get map hosts.map a.test").await,
        "type=str, case=sensitive, found=yes, idx=tree, key=\"a.test\", value=\"be_a\", type=\"str\"\n\n"
    );
    assert_eq!(
        ask_api(sock, "get map hosts.map x").await,
        "type=str, case=sensitive, found=no\n\n"
    );

    // `set map` moves a host at once; `add map` adds one; a name that is no backend falls
    // back to the default backend.
    assert_eq!(ask_api(sock, "set map hosts.map a.test be_b").await, "\n");
    assert_eq!(who(fe, "127.0.0.2", "a.test").await, "b");
    assert_eq!(ask_api(sock, "add map hosts.map c.test be_a").await, "\n");
    assert_eq!(who(fe, "127.0.0.2", "c.test").await, "a");
    assert_eq!(ask_api(sock, "set map hosts.map c.test nosuch").await, "\n");
    assert_eq!(who(fe, "127.0.0.2", "c.test").await, "web");
    assert_eq!(ask_api(sock, "del map hosts.map c.test").await, "\n");
    assert_eq!(
        ask_api(sock, "del map hosts.map c.test").await,
        "Key not found.\n\n"
    );
    assert_eq!(
        ask_api(sock, "set map hosts.map c.test be_a").await,
        "entry not found.\n\n"
    );
    // A payload adds several entries at once.
    assert_eq!(
        ask_api(sock, "add map hosts.map <<\nd.test be_b\ne.test be_a\n\n").await,
        "\n"
    );
    assert_eq!(who(fe, "127.0.0.2", "d.test").await, "b");
    assert_eq!(who(fe, "127.0.0.2", "e.test").await, "a");
    // By entry identifier.
    let shown = ask_api(sock, "show map hosts.map").await;
    let e_id = shown
        .lines()
        .find(|l| l.contains(" e.test "))
        .and_then(|l| l.split(' ').next())
        .unwrap()
        .to_owned();
    assert_eq!(
        ask_api(sock, &format!("del map hosts.map #{e_id}")).await,
        "\n"
    );
    assert_eq!(who(fe, "127.0.0.2", "e.test").await, "web");

    // Bad input changes nothing and says why, with HAProxy's words.
    let before = ask_api(sock, "show map hosts.map").await;
    for (cmd, answer) in [
        (
            "show map nosuch",
            "Unknown map identifier. Please use #<id> or <file>.\n\n",
        ),
        (
            "add map hosts.map onlykey",
            "'add map' expects three parameters (map identifier, key and value) or one parameter (map identifier) and a payload\n\n",
        ),
        (
            "set map hosts.map",
            "'set map' expects three parameters: map identifier, key and value.\n\n",
        ),
        (
            "del map hosts.map",
            "This command expects two parameters: map identifier and key.\n\n",
        ),
        ("clear map", "Missing map identifier.\n\n"),
        ("get map", "Missing map identifier and/or key.\n\n"),
        (
            "add map @9 hosts.map x y",
            "Version number in the future, please use 'prepare map' before.\n\n",
        ),
        (
            "show acl nosuch",
            "Unknown ACL identifier. Please use #<id> or <file>.\n\n",
        ),
    ] {
        assert_eq!(ask_api(sock, cmd).await, answer, "{cmd}");
    }
    assert_eq!(ask_api(sock, "show map hosts.map").await, before);
    let metrics = rampart_admin::metrics::render(&s.ctx);
    assert!(
        metrics.contains("rampart_runtime_changes_refused_total{kind=\"map\"} 3\n"),
        "the refused changes are counted:\n{metrics}"
    );

    // ACL files: a client added to the file is refused at once, and let in again.
    assert_eq!(who(fe, "127.0.0.3", "a.test").await, "b");
    assert_eq!(ask_api(sock, "add acl blocked.acl 127.0.0.3").await, "\n");
    assert_eq!(who(fe, "127.0.0.3", "a.test").await, "403");
    assert_eq!(who(fe, "127.0.0.4", "a.test").await, "b");
    assert_eq!(
        ask_api(sock, "get acl blocked.acl 127.0.0.3").await,
        "type=ip, case=sensitive, match=yes, idx=tree, pattern=\"127.0.0.3\"\n\n"
    );
    assert_eq!(
        ask_api(sock, "add acl blocked.acl notanip").await,
        "'notanip' is not a valid IPv4 or IPv6 address.\n\n"
    );
    assert_eq!(
        strip_ids(&ask_api(sock, "show acl blocked.acl").await),
        "127.0.0.3\n"
    );
    assert_eq!(ask_api(sock, "del acl blocked.acl 127.0.0.3").await, "\n");
    assert_eq!(who(fe, "127.0.0.3", "a.test").await, "b");
    assert_eq!(
        ask_api(sock, "add acl blocked.acl 127.0.0.0/24").await,
        "\n"
    );
    assert_eq!(who(fe, "127.0.0.5", "a.test").await, "403");
    assert_eq!(ask_api(sock, "clear acl blocked.acl").await, "\n");
    assert_eq!(who(fe, "127.0.0.5", "a.test").await, "b");

    // An atomic replacement: nothing changes until the commit.
    assert_eq!(
        ask_api(sock, "prepare map hosts.map").await,
        "New version created: 1\n\n"
    );
    assert_eq!(
        ask_api(sock, "add map @1 hosts.map a.test be_a").await,
        "\n"
    );
    assert_eq!(who(fe, "127.0.0.2", "a.test").await, "b");
    assert_eq!(who(fe, "127.0.0.2", "d.test").await, "b");
    assert_eq!(
        strip_ids(&ask_api(sock, "show map @1 hosts.map").await),
        "a.test be_a\n"
    );
    assert_eq!(
        ask_api(sock, "commit map @2 hosts.map").await,
        "Version number out of range.\n\n"
    );
    assert_eq!(ask_api(sock, "commit map @1 hosts.map").await, "\n");
    assert_eq!(who(fe, "127.0.0.2", "a.test").await, "a");
    assert_eq!(who(fe, "127.0.0.2", "d.test").await, "web");
    assert!(
        ask_api(sock, "show map")
            .await
            .contains("curr_ver=1 next_ver=1 entry_cnt=1\n")
    );

    // A reload keeps the runtime state of an unchanged file...
    s.proxy.reload(&yaml(&a, &b, &web)).unwrap();
    assert_eq!(who(fe, "127.0.0.2", "a.test").await, "a");
    assert_eq!(who(fe, "127.0.0.2", "b.test").await, "web");
    // ... and reads a changed file anew.
    std::fs::write(dir.join("hosts.map"), "b.test be_a\n").unwrap();
    s.proxy.reload(&yaml(&a, &b, &web)).unwrap();
    assert_eq!(who(fe, "127.0.0.2", "b.test").await, "a");
    assert_eq!(who(fe, "127.0.0.2", "a.test").await, "web");
    assert_eq!(
        strip_ids(&ask_api(sock, "show map hosts.map").await),
        "b.test be_a\n"
    );
    s.proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn map_match_types_and_converters_in_headers() {
    let origin = Origin::named("o").await;
    let dir = temp_dir("maps-types");
    std::fs::write(
        dir.join("paths.map"),
        "/api/v2 api-v2\n/api api\n^/u/[0-9]+$ user\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("nets.map"),
        "127.0.0.0/8 loopback\n127.0.0.7 seven\n",
    )
    .unwrap();
    std::fs::write(dir.join("doms.map"), "example.com ex\n").unwrap();
    let yaml = format!(
        r#"
frontends:
  fe:
    bind: ["127.0.0.1:0"]
    http_request:
      - set-header x-beg %[path,map_beg(paths.map,none)]
      - set-header x-reg %[path,map_reg(paths.map,none)]
      - set-header x-ip %[src,map_ip(nets.map)]
      - set-header x-dom %[req.hdr(host),map_dom(doms.map,none)]
      - set-header x-sub %[path,regsub(^/api/,/v1/,)]
      - set-header x-json %[req.hdr(x-in),json]
    default_backend: o
backends:
  o: {{ servers: {{ s: {{ address: "{}" }} }} }}
"#,
        origin.addr
    );
    let p = Proxy::start_in(&yaml, dir);
    let fe = p.addr("fe");
    let g = get_from(
        ip("127.0.0.7"),
        fe,
        "/api/v2/items",
        &[("host", "www.example.com"), ("x-in", "say \"hi\"")],
    )
    .await;
    assert_eq!(g.status, 200);
    let h = origin.last().headers;
    assert_eq!(h["x-beg"], "api-v2");
    // Every key is a regular expression, unanchored unless it says so.
    assert_eq!(h["x-reg"], "api-v2");
    assert_eq!(h["x-ip"], "seven");
    assert_eq!(h["x-dom"], "ex");
    assert_eq!(h["x-sub"], "/v1/v2/items");
    assert_eq!(h["x-json"], "say \\\"hi\\\"");
    get_from(ip("127.0.0.9"), fe, "/u/42", &[("host", "other.org")]).await;
    let h = origin.last().headers;
    assert_eq!(h["x-beg"], "none");
    assert_eq!(h["x-reg"], "user");
    assert_eq!(h["x-ip"], "loopback");
    assert_eq!(h["x-dom"], "none");
    p.stop().await;
}

#[test]
fn bad_map_and_acl_files_are_refused_at_load_with_the_line() {
    let dir = temp_dir("maps-bad");
    std::fs::write(dir.join("nets.map"), "10.0.0.0/8 a\nbad x\n").unwrap();
    std::fs::write(dir.join("ports.map"), "a 1\nb notint\n").unwrap();
    std::fs::write(dir.join("nets.acl"), "10.0.0.1\n10.0.0.300\n").unwrap();
    let load = |rule: &str| {
        let yaml = format!(
            "frontends:\n  fe:\n    bind: [\"127.0.0.1:0\"]\n    http_request: ['{rule}']\n    default_backend: b\nbackends:\n  b: {{ servers: {{ s: {{ address: \"127.0.0.1:9\" }} }} }}\n"
        );
        load_errors(&yaml, Some(&dir))
    };
    let e = load("set-header x %[src,map_ip(nets.map)]");
    assert!(
        e.contains(
            "map_ip: 'bad' is not a valid IPv4 or IPv6 address at line 2 of file 'nets.map'"
        ),
        "{e}"
    );
    let e = load("set-header x %[req.hdr(x),map_str_int(ports.map)]");
    assert!(
        e.contains("map_str_int: unable to parse 'notint' at line 2 of file 'ports.map'"),
        "{e}"
    );
    let e = load("deny if { src -f nets.acl }");
    assert!(
        e.contains("'10.0.0.300' is not a valid IPv4 or IPv6 address at line 2 of file 'nets.acl'"),
        "{e}"
    );
    let e = load("set-header x %[src,map_ip(missing.map)]");
    assert!(e.contains("cannot read pattern file"), "{e}");
    let e = load("set-header x %[src,map_foo(nets.map)]");
    assert!(e.contains("map_foo: unknown match type \"foo\""), "{e}");
}
