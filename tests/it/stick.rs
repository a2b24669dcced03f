//! Stick tables in the request path: rate limits per client, connection limits before
//! TLS, persistence by source and by cookie (down servers redispatch, draining servers
//! keep their clients), and the runtime socket's table commands.

use std::net::IpAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_per_client_with_retry_after() {
    let a = Origin::named("a").await;
    let p = Proxy::start(&format!(
        "frontends:\n  fe:\n    bind: \"127.0.0.1:0\"\n    default_backend: app\n    http_request:\n\
         \x20     - track-sc0 src table per_ip\n\
         \x20     - deny status 429 hdr Retry-After 3 if {{ sc0_http_req_rate gt 5 }}\n\
         \x20     - set-header x-rate %[sc0_http_req_rate]\n\
         backends:\n  app:\n    servers: {{ a: {{ address: \"{}\" }} }}\n\
         stick_tables:\n  per_ip: {{ type: ip, size: 1k, expire: 10s, store: [\"http_req_rate(3s)\", http_req_cnt] }}\n",
        a.addr
    ));
    let fe = p.addr("fe");
    let mut statuses = Vec::new();
    let mut retry_after = Vec::new();
    for _ in 0..8 {
        let got = get_from(ip("127.0.0.2"), fe, "/", &[]).await;
        statuses.push(got.status.as_u16());
        retry_after.push(got.header("retry-after").map(str::to_owned));
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);
    assert_eq!(retry_after[4], None);
    assert_eq!(retry_after[7].as_deref(), Some("3"));
    // The rate as the server saw it, counting the request itself.
    assert_eq!(a.last().headers["x-rate"], "5");
    // Another client is not affected.
    let other = get_from(ip("127.0.0.3"), fe, "/", &[]).await;
    assert_eq!(other.status, 200);
    assert_eq!(a.last().headers["x-rate"], "1");
    // Two periods on, nothing of the burst is left in the sliding window (a client that
    // keeps retrying meanwhile stays limited, as in HAProxy: denied requests count too).
    tokio::time::sleep(Duration::from_millis(6100)).await;
    let again = get_from(ip("127.0.0.2"), fe, "/", &[]).await;
    assert_eq!(again.status, 200);
    assert_eq!(a.last().headers["x-rate"], "1");
    let t = &p.handle().snapshot().tables[0];
    assert_eq!(t.used(), 2);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_rules_count_and_reject_before_http() {
    let a = Origin::named("a").await;
    let p = Proxy::start(&format!(
        "frontends:\n  fe:\n    bind: \"127.0.0.1:0\"\n    default_backend: app\n\
         \x20   tcp_request:\n      connection:\n\
         \x20       - track-sc1 src table conns\n\
         \x20       - reject if {{ sc1_conn_cur gt 2 }}\n\
         \x20   http_request: [\"set-header x-conns %[sc1_conn_cur]/%[sc1_conn_cnt]\"]\n\
         backends:\n  app:\n    servers: {{ a: {{ address: \"{}\" }} }}\n\
         stick_tables:\n  conns: {{ type: ip, size: 100, store: [conn_cur, conn_cnt, \"conn_rate(10s)\"] }}\n",
        a.addr
    ));
    let fe = p.addr("fe");
    let t = p.handle().snapshot().tables[0].clone();
    let key = t.parse_key("127.0.0.1").unwrap();
    let cur = |t: &rampart_proxy::stick::Table| {
        t.get(&key, rampart_config::stick::DataKind::ConnCur)
            .unwrap_or(0)
    };
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(tokio::net::TcpStream::connect(fe).await.unwrap());
    }
    assert!(eventually(Duration::from_secs(5), || cur(&t) == 2).await);
    // The third connection is closed without a byte of HTTP.
    let mut third = tokio::net::TcpStream::connect(fe).await.unwrap();
    let _ = third.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let mut buf = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(30), third.read_to_end(&mut buf))
        .await
        .expect("rejected connection not closed");
    assert!(
        n.is_err() || buf.is_empty(),
        "got {:?}",
        String::from_utf8_lossy(&buf)
    );
    assert_eq!(
        p.handle()
            .live()
            .frontend("fe")
            .denied_conns
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    drop(held);
    assert!(eventually(Duration::from_secs(5), || cur(&t) == 0).await);
    let got = get(fe, "/").await;
    assert_eq!(got.status, 200);
    assert_eq!(a.last().headers["x-conns"], "1/4");
    p.stop().await;
}

fn sticky_config(a: &Origin, b: &Origin, c: &Origin, persistence: &str) -> String {
    format!(
        "frontends:\n  fe:\n    bind: \"127.0.0.1:0\"\n    default_backend: app\n\
         backends:\n  app:\n    balance: roundrobin\n\
         \x20   health_check: {{ interval: 100ms, rise: 1, fall: 1 }}\n{persistence}\
         \x20   servers:\n      a: {{ address: \"{}\" }}\n      b: {{ address: \"{}\" }}\n      c: {{ address: \"{}\" }}\n\
         stick_tables:\n  sticky: {{ type: ip, size: 1k, expire: 30m, store: [server_id] }}\n",
        a.addr, b.addr, c.addr
    )
}

async fn body_from(src: &str, fe: std::net::SocketAddr, headers: &[(&str, &str)]) -> Got {
    get_from(ip(src), fe, "/", headers).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistence_by_source_redispatches_on_down_and_keeps_drain() {
    let (a, b, c) = (
        Origin::named("a").await,
        Origin::named("b").await,
        Origin::named("c").await,
    );
    let p = Proxy::start(&sticky_config(
        &a,
        &b,
        &c,
        "    stick: [\"on src table sticky\"]\n",
    ));
    let fe = p.addr("fe");
    let mut answers = Vec::new();
    for _ in 0..100 {
        answers.push(body_from("127.0.0.2", fe, &[]).await.text());
    }
    let first = answers[0].clone();
    assert_eq!(
        tally(answers.iter().map(String::as_str)).len(),
        1,
        "{answers:?}"
    );
    // Another client may land elsewhere, but round robin without stickiness would have
    // spread the first one over all three.
    let origin = |n: &str| match n {
        "a" => &a,
        "b" => &b,
        _ => &c,
    };
    origin(&first).kill();
    let live = p.handle().live().clone();
    assert!(
        eventually(Duration::from_secs(5), || live
            .find_server(rampart_proxy::state::ServerKey {
                backend: "app",
                server: &first
            })
            .unwrap()
            .check_down())
        .await
    );
    let moved = body_from("127.0.0.2", fe, &[]).await.text();
    assert_ne!(moved, first);
    let mut again = Vec::new();
    for _ in 0..20 {
        again.push(body_from("127.0.0.2", fe, &[]).await.text());
    }
    assert!(again.iter().all(|x| *x == moved), "{again:?}");
    // Drain: the stuck client stays, new clients never get the server.
    live.find_server(rampart_proxy::state::ServerKey {
        backend: "app",
        server: &moved,
    })
    .unwrap()
    .set_admin(
        rampart_proxy::state::AdminState::Drain,
        &live.backend("app"),
    );
    for _ in 0..10 {
        assert_eq!(body_from("127.0.0.2", fe, &[]).await.text(), moved);
    }
    for i in 3..13 {
        let other = body_from(&format!("127.0.0.{i}"), fe, &[]).await.text();
        assert_ne!(other, moved);
        assert_ne!(other, first);
    }
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistence_by_inserted_cookie() {
    let (a, b, c) = (
        Origin::named("a").await,
        Origin::named("b").await,
        Origin::named("c").await,
    );
    let p = Proxy::start(&sticky_config(
        &a,
        &b,
        &c,
        "    cookie: { name: SRV, mode: insert, indirect: true, nocache: true, httponly: true }\n",
    ));
    let fe = p.addr("fe");
    let first = body_from("127.0.0.2", fe, &[]).await;
    let set = first.header("set-cookie").unwrap().to_owned();
    let server = first.text();
    assert_eq!(set, format!("SRV={server}; path=/; HttpOnly"));
    assert_eq!(first.header("cache-control"), Some("private"));
    let cookie = format!("SRV={server}; theme=dark");
    for _ in 0..100 {
        let g = body_from("127.0.0.2", fe, &[("cookie", &cookie)]).await;
        assert_eq!(g.text(), server);
        // Indirect: a client with a valid cookie gets none, and the server never sees it.
        assert!(g.header("set-cookie").is_none());
    }
    let o = match server.as_str() {
        "a" => &a,
        "b" => &b,
        _ => &c,
    };
    assert_eq!(o.last().headers["cookie"], "theme=dark");
    o.kill();
    let live = p.handle().live().clone();
    assert!(
        eventually(Duration::from_secs(5), || live
            .find_server(rampart_proxy::state::ServerKey {
                backend: "app",
                server: &server
            })
            .unwrap()
            .check_down())
        .await
    );
    let moved = body_from("127.0.0.2", fe, &[("cookie", &cookie)]).await;
    assert_ne!(moved.text(), server);
    assert_eq!(
        moved.header("set-cookie"),
        Some(format!("SRV={}; path=/; HttpOnly", moved.text()).as_str())
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_cookie_wraps_the_server_cookie() {
    let a = Origin::start("a", |_| {
        let mut r = text(200, "a");
        r.headers_mut().insert(
            "set-cookie",
            "JSESSIONID=abc123; Path=/app".parse().unwrap(),
        );
        r
    })
    .await;
    let p = Proxy::start(&format!(
        "frontends:\n  fe:\n    bind: \"127.0.0.1:0\"\n    default_backend: app\n\
         backends:\n  app:\n    cookie: {{ name: JSESSIONID, mode: prefix }}\n    servers: {{ s1: {{ address: \"{}\" }} }}\n",
        a.addr
    ));
    let fe = p.addr("fe");
    let g = get(fe, "/").await;
    assert_eq!(
        g.header("set-cookie"),
        Some("JSESSIONID=s1~abc123; Path=/app")
    );
    let g = body_from("127.0.0.1", fe, &[("cookie", "JSESSIONID=s1~abc123")]).await;
    assert_eq!(g.status, 200);
    assert_eq!(a.last().headers["cookie"], "JSESSIONID=abc123");
    p.stop().await;
}

/// `0x...: ` prefixes vary; the rest of each line does not.
fn strip_ids(s: &str) -> String {
    s.lines()
        .map(|l| match l.split_once(": key=") {
            Some((_, rest)) => format!("key={rest}"),
            None => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_socket_table_commands() {
    let a = Origin::named("a").await;
    let yaml = format!(
        "admin: {{ socket: {{ path: run/api.sock, level: admin }} }}\n\
         frontends:\n  fe:\n    bind: \"127.0.0.1:0\"\n    default_backend: app\n    http_request: [\"track-sc0 src table per_ip\"]\n\
         backends:\n  app:\n    servers: {{ a: {{ address: \"{}\" }} }}\n\
         stick_tables:\n  per_ip: {{ type: ip, size: 100, store: [gpc0, \"http_req_rate(10s)\", http_req_cnt, server_id] }}\n\
         \x20 names: {{ type: string, len: 8, size: 10, expire: 1m, store: [gpt0] }}\n",
        a.addr
    );
    let p = Proxy::start(&yaml);
    let (_ctx, _tasks) = serve_api(&p, &yaml).await;
    let sock = p.dir.join("run/api.sock");
    let fe = p.addr("fe");
    for _ in 0..3 {
        get_from(ip("127.0.0.2"), fe, "/", &[]).await;
    }
    get_from(ip("127.0.0.3"), fe, "/", &[]).await;
    // Requests let go of their entries once their responses are sent.
    let t = p.handle().snapshot().tables[0].clone();
    assert!(eventually(Duration::from_secs(5), || t.dump(|d| d.refs > 0).is_empty()).await);

    assert_eq!(
        ask_api(&sock, "show table").await,
        "# table: per_ip, type: ip, size:100, used:2\n# table: names, type: string, size:10, used:0\n\n"
    );
    let dump = ask_api(&sock, "show table per_ip").await;
    assert!(
        dump.starts_with("0x") || dump.starts_with("# table"),
        "{dump}"
    );
    assert_eq!(
        strip_ids(&dump),
        "# table: per_ip, type: ip, size:100, used:2\n\
         key=127.0.0.2 use=0 exp=0 shard=0 gpc0=0 http_req_rate(10000)=3 http_req_cnt=3 server_id=0\n\
         key=127.0.0.3 use=0 exp=0 shard=0 gpc0=0 http_req_rate(10000)=1 http_req_cnt=1 server_id=0\n"
    );
    // Filters.
    assert_eq!(
        strip_ids(&ask_api(&sock, "show table per_ip data.http_req_cnt gt 2").await),
        "# table: per_ip, type: ip, size:100, used:2\n\
         key=127.0.0.2 use=0 exp=0 shard=0 gpc0=0 http_req_rate(10000)=3 http_req_cnt=3 server_id=0\n"
    );
    assert_eq!(
        strip_ids(&ask_api(&sock, "show table per_ip key 127.0.0.3").await),
        "# table: per_ip, type: ip, size:100, used:2\n\
         key=127.0.0.3 use=0 exp=0 shard=0 gpc0=0 http_req_rate(10000)=1 http_req_cnt=1 server_id=0\n"
    );
    // set table creates and updates.
    assert_eq!(
        ask_api(
            &sock,
            "set table per_ip key 10.0.0.9 data.gpc0 7 data.server_id 1"
        )
        .await,
        "\n"
    );
    assert!(
        ask_api(&sock, "show table per_ip key 10.0.0.9")
            .await
            .contains(" gpc0=7 ")
    );
    assert_eq!(
        ask_api(&sock, "set table names key alice data.gpt0 3").await,
        "\n"
    );
    let names = ask_api(&sock, "show table names").await;
    assert!(names.contains(": key=alice use=0 exp="), "{names}");
    assert!(names.trim_end().ends_with("gpt0=3"), "{names}");
    // Errors, HAProxy's strings.
    for (cmd, want) in [
        ("show table nope", "No such table\n"),
        ("show table per_ip data.bogus gt 1", "Unknown data type\n"),
        (
            "show table per_ip data.gpt0 gt 1",
            "Data type not stored in this table\n",
        ),
        (
            "show table per_ip data.gpc0 about 1",
            "Require and operator among \"eq\", \"ne\", \"le\", \"ge\", \"lt\", \"gt\"\n",
        ),
        (
            "show table per_ip data.gpc0 gt x",
            "Require a valid integer value to compare against\n",
        ),
        (
            "show table per_ip nonsense",
            "Optional argument only supports \"data.<store_data_type>\" <operator> <value> and key <key>\n",
        ),
        ("show table per_ip key not-an-ip", "Invalid key\n"),
        (
            "set table per_ip key 10.0.0.9 data.gpc0 x",
            "Require a valid integer value to store\n",
        ),
        (
            "set table per_ip key 10.0.0.9 gpc0 1",
            "\"data.<type>\" followed by a value expected\n",
        ),
        (
            "set table per_ip key 10.0.0.9 data.gpt0 1",
            "Data type not stored in this table\n",
        ),
        (
            "set table per_ip 10.0.0.9",
            "Required arguments: <table> key <key> [data.<store_data_type> <value>]*\n",
        ),
        ("clear table nope", "No such table\n"),
    ] {
        assert_eq!(ask_api(&sock, cmd).await, format!("{want}\n"), "{cmd}");
    }
    // clear by key, then by data filter.
    assert_eq!(
        ask_api(&sock, "clear table per_ip key 10.0.0.9").await,
        "\n"
    );
    assert!(
        !ask_api(&sock, "show table per_ip")
            .await
            .contains("10.0.0.9")
    );
    assert_eq!(
        ask_api(&sock, "clear table per_ip data.http_req_cnt le 1").await,
        "\n"
    );
    let left = ask_api(&sock, "show table per_ip").await;
    assert!(
        left.contains("key=127.0.0.2") && !left.contains("key=127.0.0.3"),
        "{left}"
    );
    assert_eq!(ask_api(&sock, "clear table per_ip").await, "\n");
    assert_eq!(
        ask_api(&sock, "show table per_ip").await,
        "# table: per_ip, type: ip, size:100, used:0\n\n"
    );
    // Tables survive a reload that keeps their shape.
    assert_eq!(
        ask_api(&sock, "set table per_ip key 10.0.0.1 data.gpc0 1").await,
        "\n"
    );
    p.reload(&yaml.replace("size: 100,", "size: 200,")).unwrap();
    assert!(
        ask_api(&sock, "show table per_ip")
            .await
            .starts_with("# table: per_ip, type: ip, size:200, used:1\n")
    );
    p.stop().await;
}
