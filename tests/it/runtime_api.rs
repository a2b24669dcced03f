//! The runtime API over real sockets: HAProxy's framing, prompt mode, `show stat` layout,
//! server state changes and their survival across reloads, exact error strings, levels.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::support::*;

struct Api {
    proxy: Proxy,
    sock: PathBuf,
    _tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn yaml(a: &Origin, b: &Origin, tag: &str) -> String {
    format!(
        "frontends:\n  fe:\n    bind: [\"127.0.0.1:0\"]\n    default_backend: app\n    http_response: [\"set-header x-tag {tag}\"]\n\
         backends:\n  app:\n    health_check: {{ interval: 100ms, rise: 1, fall: 1 }}\n    servers:\n\
         \x20     a: {{ address: \"{}\" }}\n      b: {{ address: \"{}\", weight: 10 }}\n\
         \x20 other:\n    servers:\n      c: {{ address: \"{}\", check: false, backup: true }}\n",
        a.addr, b.addr, a.addr
    )
}

async fn api(a: &Origin, b: &Origin, level: &str) -> Api {
    let proxy = Proxy::start(&yaml(a, b, "one"));
    let sock = proxy.dir.join("run/api.sock");
    let cfg: rampart_config::model::Config = rampart_config::load_str(
        &format!(
            "admin: {{ socket: {{ path: run/api.sock, level: {level} }} }}\n{}",
            yaml(a, b, "one")
        ),
        Some(&proxy.dir),
        &rampart_config::yaml::ProcessEnv,
    )
    .unwrap();
    let ctx = rampart_admin::AdminCtx::new(proxy.handle().control().clone(), None);
    let tasks = rampart_admin::serve_sockets(&cfg.admin.socket, &proxy.dir, ctx)
        .await
        .unwrap();
    Api {
        proxy,
        sock,
        _tasks: tasks,
    }
}

const HEADER: &str = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,ctime,rtime,ttime,agent_status,agent_code,agent_duration,check_desc,agent_desc,check_rise,check_fall,check_health,agent_rise,agent_fall,agent_health,addr,cookie,mode,algo,conn_rate,conn_rate_max,conn_tot,intercepted,dcon,dses,wrew,connect,reuse,cache_lookups,cache_hits,srv_icur,src_ilim,qtime_max,ctime_max,rtime_max,ttime_max,eint,idle_conn_cur,safe_conn_cur,used_conn_cur,need_conn_est,uweight,agg_server_status,agg_server_check_status,agg_check_status,srid,sess_other,h1sess,h2sess,h3sess,req_other,h1req,h2req,h3req,proto,-,";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing_info_and_prompt_mode() {
    let (a, b) = (Origin::named("a").await, Origin::named("b").await);
    let api = api(&a, &b, "admin").await;
    let info = ask_api(&api.sock, "show info").await;
    assert!(info.ends_with("\n\n"), "{info:?}");
    for key in [
        "Name",
        "Version",
        "Release_date",
        "Nbproc",
        "Process_num",
        "Pid",
        "Uptime",
        "Maxconn",
        "CurrConns",
        "Maxpipes",
        "PipesUsed",
        "Tasks",
        "Run_queue",
        "node",
    ] {
        assert!(
            info.lines().any(|l| l.starts_with(&format!("{key}: "))),
            "show info lacks {key}: {info}"
        );
    }
    assert!(
        info.starts_with("Name: HAProxy\nVersion: 3.2.0-rampart-"),
        "{info}"
    );
    assert!(info.contains("\ndescription: rampart\n"), "{info}");

    // Several commands on one line: one answer each, each ending with an empty line.
    let two = ask_api(&api.sock, "show backend; show cli level").await;
    assert_eq!(two, "# name\napp\nother\n\nadmin\n\n");

    // Prompt mode: "> " after every answer, until quit.
    let mut s = UnixStream::connect(&api.sock).await.unwrap();
    s.write_all(b"prompt\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = String::new();
    while !got.ends_with("> ") {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0);
        got.push_str(std::str::from_utf8(&buf[..n]).unwrap());
    }
    assert_eq!(got, "\n> ");
    got.clear();
    s.write_all(b"show backend\n").await.unwrap();
    while !got.ends_with("> ") {
        let n = s.read(&mut buf).await.unwrap();
        got.push_str(std::str::from_utf8(&buf[..n]).unwrap());
    }
    assert_eq!(got, "# name\napp\nother\n\n> ");
    s.write_all(b"quit\n").await.unwrap();
    let mut rest = String::new();
    s.read_to_string(&mut rest).await.unwrap();
    assert_eq!(rest, "");

    let unknown = ask_api(&api.sock, "bogus").await;
    assert!(
        unknown.starts_with(
            "Unknown command: 'bogus'. Please enter one of the following commands only:\n  "
        ),
        "{unknown}"
    );
    let help = ask_api(&api.sock, "help").await;
    assert!(help.starts_with("The following commands are valid at this level:\n"));
    assert!(
        help.contains("  show stat [<iid> <type> <sid>] [up|no-maint|typed|json]: report counters")
    );
    api.proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_stat_csv_layout_by_name_and_position() {
    let (a, b) = (Origin::named("a").await, Origin::named("b").await);
    let api = api(&a, &b, "admin").await;
    let fe = api.proxy.addr("fe");
    let sa = api
        .proxy
        .handle()
        .live()
        .find_server(rampart_proxy::state::ServerKey {
            backend: "app",
            server: "a",
        })
        .unwrap();
    assert!(
        eventually(std::time::Duration::from_secs(5), || sa
            .check
            .lock()
            .unwrap()
            .last
            .is_some())
        .await
    );
    for _ in 0..5 {
        assert_eq!(get(fe, "/").await.status, 200);
    }
    // A response is counted once it has been sent, which may be just after the client
    // has read it.
    let fe_live = api.proxy.handle().live().frontend("fe");
    assert!(
        eventually(std::time::Duration::from_secs(5), || fe_live
            .responses
            .get(1)
            == 5)
        .await
    );
    let csv = ask_api(&api.sock, "show stat").await;
    assert!(csv.ends_with(",\n\n"), "{csv:?}");
    let lines: Vec<&str> = csv.trim_end_matches('\n').lines().collect();
    assert_eq!(lines[0], HEADER);
    // Every line has as many columns as the header (Telegraf) and ends with a comma.
    let width = HEADER.split(',').count();
    for l in &lines {
        assert!(l.ends_with(','), "{l}");
        assert_eq!(l.split(',').count(), width, "{l}");
    }
    let names: Vec<&str> = HEADER.trim_start_matches("# ").split(',').collect();
    let rows: Vec<Vec<&str>> = lines[1..].iter().map(|l| l.split(',').collect()).collect();
    let col = |row: &Vec<&str>, name: &str| {
        row[names.iter().position(|n| *n == name).unwrap()].to_owned()
    };
    let kinds: Vec<(String, String, String)> = rows
        .iter()
        .map(|r| (r[0].to_owned(), r[1].to_owned(), r[32].to_owned()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("fe", "FRONTEND", "0"),
            ("app", "a", "2"),
            ("app", "b", "2"),
            ("app", "BACKEND", "1"),
            ("other", "c", "2"),
            ("other", "BACKEND", "1"),
        ]
        .map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned()))
    );
    let fe_row = &rows[0];
    assert_eq!(col(fe_row, "status"), "OPEN");
    assert_eq!(col(fe_row, "req_tot"), "5");
    assert_eq!(fe_row[48], "5");
    assert_eq!(col(fe_row, "hrsp_2xx"), "5");
    let a_row = &rows[1];
    assert_eq!(col(a_row, "status"), "UP");
    assert_eq!(a_row[17], "UP");
    assert_eq!(col(a_row, "check_status"), "L4OK");
    assert_eq!(a_row[36], "L4OK");
    assert_eq!(col(a_row, "weight"), "1");
    assert_eq!(col(&rows[2], "weight"), "10");
    assert_eq!(col(a_row, "addr"), a.addr.to_string());
    assert_eq!(col(&rows[4], "status"), "no check");
    assert_eq!(col(&rows[4], "bck"), "1");
    let be_row = &rows[3];
    assert_eq!(col(be_row, "status"), "UP");
    assert_eq!(col(be_row, "act"), "2");
    assert_eq!(col(be_row, "algo"), "roundrobin");
    let served: u64 = col(&rows[1], "stot").parse::<u64>().unwrap()
        + col(&rows[2], "stot").parse::<u64>().unwrap();
    assert_eq!(served, 5);

    // Typed output: one field per line.
    let typed = ask_api(&api.sock, "show stat 2 4 1 typed").await;
    assert!(typed.contains("S.2.1.17.status.1:MGP:str:UP\n"), "{typed}");
    assert!(typed.contains("S.2.1.1.svname.1:MGP:str:a\n"), "{typed}");
    assert!(
        typed.ends_with("\n\n") && !typed.trim_end().contains("\n\n"),
        "{typed}"
    );
    let info = ask_api(&api.sock, "show info typed").await;
    assert!(
        info.starts_with("0.Name.1:MGP:str:HAProxy\n1.Version.1:MGP:str:3.2.0-rampart-"),
        "{info}"
    );

    // Filters: proxy id, type mask, server id.
    let only = ask_api(&api.sock, "show stat 2 4 2").await;
    let only: Vec<&str> = only.trim_end().lines().collect();
    assert_eq!(only.len(), 2);
    assert!(only[1].starts_with("app,b,"), "{only:?}");
    let by_name = ask_api(&api.sock, "show stat other 2 -1").await;
    assert!(
        by_name
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("other,BACKEND,")
    );
    assert_eq!(by_name.trim_end().lines().count(), 2);
    api.proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_changes_errors_levels_and_reload_survival() {
    let (a, b) = (Origin::named("a").await, Origin::named("b").await);
    let api = api(&a, &b, "admin").await;
    let fe = api.proxy.addr("fe");
    let s = &api.sock;
    assert_eq!(ask_api(s, "set server app/b state drain").await, "\n");
    assert_eq!(ask_api(s, "get weight app/b").await, "10 (initial 10)\n\n");
    assert_eq!(ask_api(s, "set server app/b weight 50%").await, "\n");
    assert_eq!(ask_api(s, "get weight app/b").await, "5 (initial 10)\n\n");
    assert_eq!(
        ask_api(s, "set weight app/a 300").await,
        "Absolute weight can only be between 0 and 256 inclusive.\n\n"
    );
    assert_eq!(
        ask_api(s, "set server app/nope state ready").await,
        "No such server.\n\n"
    );
    assert_eq!(
        ask_api(s, "set server nope/a state ready").await,
        "No such backend.\n\n"
    );
    assert_eq!(
        ask_api(s, "set server app state ready").await,
        "Require 'backend/server'.\n\n"
    );
    assert_eq!(
        ask_api(s, "set server app/a state sleeping").await,
        "'set server <srv> state' expects 'ready', 'drain' and 'maint'.\n\n"
    );
    assert_eq!(
        ask_api(s, "set server app/a frobnicate").await,
        "usage: set server <backend>/<server> addr | health | state | weight\n\n"
    );
    // b is drained: every request goes to a.
    for _ in 0..10 {
        assert_eq!(get(fe, "/").await.text(), "a");
    }
    let state = ask_api(s, "show servers state app").await;
    let lines: Vec<&str> = state.lines().collect();
    assert_eq!(lines[0], "1");
    assert!(lines[1].starts_with("# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight"));
    let b_line: Vec<&str> = lines[3].split(' ').collect();
    assert_eq!(&b_line[..4], &["2", "app", "2", "b"]);
    assert_eq!(b_line[6], "8", "admin state FDRAIN: {state}");
    assert_eq!(b_line[7], "5");
    assert_eq!(
        ask_api(s, "show servers state nope").await,
        "Can't find backend 'nope'.\n\n"
    );

    // The drain and the weight survive a reload.
    api.proxy.reload(&yaml(&a, &b, "two")).unwrap();
    let got = get(fe, "/").await;
    assert_eq!(
        (got.text(), got.header("x-tag")),
        ("a".to_owned(), Some("two"))
    );
    let csv = ask_api(s, "show stat 2 4 2").await;
    let row: Vec<&str> = csv.lines().nth(1).unwrap().split(',').collect();
    assert_eq!((row[17], row[18]), ("DRAIN", "5"));

    // Health: forced down, checks paused (counts as up), resumed.
    assert_eq!(ask_api(s, "disable health app/a").await, "\n");
    let row = ask_api(s, "show stat 2 4 1").await;
    assert!(row.lines().nth(1).unwrap().contains(",no check,"), "{row}");
    assert_eq!(ask_api(s, "enable health app/a").await, "\n");
    assert_eq!(ask_api(s, "disable server app/a").await, "\n");
    assert_eq!(get(fe, "/").await.status, 503);
    assert_eq!(
        ask_api(
            s,
            "set server app/a state ready; set server app/b state ready"
        )
        .await,
        "\n\n"
    );
    assert_eq!(get(fe, "/").await.status, 200);
    assert_eq!(ask_api(s, "clear counters all").await, "\n");
    let csv = ask_api(s, "show stat 1 1 -1").await;
    let row: Vec<&str> = csv.lines().nth(1).unwrap().split(',').collect();
    assert_eq!(row[48], "0", "req_tot cleared");

    // A session lowered to user may look but not touch.
    assert_eq!(
        ask_api(s, "user; set server app/a state drain").await,
        "\nPermission denied\n\n"
    );
    api.proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_level_socket_and_stale_socket_file() {
    let (a, b) = (Origin::named("a").await, Origin::named("b").await);
    let first = api(&a, &b, "user").await;
    assert_eq!(ask_api(&first.sock, "show cli level").await, "user\n\n");
    assert_eq!(
        ask_api(&first.sock, "set server app/a state drain").await,
        "Permission denied\n\n"
    );
    assert_eq!(
        ask_api(&first.sock, "clear counters").await,
        "Permission denied\n\n"
    );
    let mode = std::fs::metadata(&first.sock).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
    // The socket file of a process that is gone is replaced; one in use is not.
    let dir = first.proxy.dir.clone();
    let cfg: rampart_config::model::Config = rampart_config::load_str(
        &format!(
            "admin: {{ socket: {{ path: run/api.sock }} }}\n{}",
            yaml(&a, &b, "one")
        ),
        Some(&dir),
        &rampart_config::yaml::ProcessEnv,
    )
    .unwrap();
    let ctx = rampart_admin::AdminCtx::new(first.proxy.handle().control().clone(), None);
    let err = rampart_admin::serve_sockets(&cfg.admin.socket, &dir, ctx.clone())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("another process is listening"),
        "{err}"
    );
    for t in &first._tasks {
        t.abort();
    }
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let again = rampart_admin::serve_sockets(&cfg.admin.socket, &dir, ctx)
        .await
        .unwrap();
    assert_eq!(ask_api(&first.sock, "show cli level").await, "admin\n\n");
    for t in again {
        t.abort();
    }
    let _ = Arc::new(());
    first.proxy.stop().await;
}

/// Whether CI requires every tool the tests use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxyadmin_library_drives_the_socket() {
    let has = std::process::Command::new("python3")
        .args(["-c", "import haproxyadmin"])
        .status()
        .is_ok_and(|s| s.success());
    if !has {
        assert!(
            !required(),
            "python3 with haproxyadmin is required (pip install haproxyadmin)"
        );
        println!("skipped: python3 with the haproxyadmin package is not installed");
        return;
    }
    let (a, b) = (Origin::named("a").await, Origin::named("b").await);
    let api = api(&a, &b, "admin").await;
    for _ in 0..3 {
        get(api.proxy.addr("fe"), "/").await;
    }
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/tools/haproxyadmin_check.py"
    );
    let sock = api.sock.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg(script)
            .arg(sock)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "backends app,other");
    assert!(
        lines[1].starts_with("server a ") && lines[2].starts_with("server b "),
        "{text}"
    );
    assert!(lines[2].ends_with(" 10"), "{text}");
    assert_eq!(lines[3], "setstate True");
    assert_eq!(lines[4], "status DRAIN");
    assert_eq!(lines[5], "setweight True 7");
    assert!(lines[6].starts_with("enable True "), "{text}");
    assert_eq!(lines[7], "frontends fe");
    assert_eq!(lines[8], "requests 3");
    assert!(lines[9].starts_with("version "), "{text}");
    api.proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_server_addr_moves_the_server() {
    let (a, b) = (Origin::named("a").await, Origin::named("b").await);
    let moved = Origin::named("moved").await;
    let api = api(&a, &b, "admin").await;
    let s = &api.sock;
    let fe = api.proxy.addr("fe");
    assert_eq!(ask_api(s, "set server app/a state maint").await, "\n");
    assert_eq!(get(fe, "/").await.text(), "b");
    let answer = ask_api(
        s,
        &format!("set server app/b addr 127.0.0.1 port {}", moved.addr.port()),
    )
    .await;
    assert_eq!(
        answer,
        format!(
            "port changed from '{}' to '{}' by 'stats socket command'\n\n",
            b.addr.port(),
            moved.addr.port()
        )
    );
    for _ in 0..5 {
        assert_eq!(get(fe, "/").await.text(), "moved");
    }
    assert_eq!(
        ask_api(
            s,
            &format!("set server app/b addr 127.0.0.1 port {}", moved.addr.port())
        )
        .await,
        "nothing changed\n\n"
    );
    assert_eq!(
        ask_api(s, "set server app/b addr nowhere").await,
        "Invalid addr 'nowhere'\n\n"
    );
    assert_eq!(
        ask_api(s, "set server app/b addr").await,
        "set server <b>/<s> addr requires an address and optionally a port.\n\n"
    );
    let state = ask_api(s, "show servers state app").await;
    assert!(
        state.contains(&format!(" {} - 0 0 - - 0\n", moved.addr.port())),
        "{state}"
    );
    // The moved address survives a reload; the drain of a does too.
    api.proxy.reload(&yaml(&a, &b, "two")).unwrap();
    assert_eq!(get(fe, "/").await.text(), "moved");
    api.proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_sess_and_shutdown_sessions_server() {
    let a = Origin::named("a").await;
    let slow = Origin::start("b", |_| {
        delayed(std::time::Duration::from_secs(30), 200, "late")
    })
    .await;
    let api = api(&a, &slow, "admin").await;
    let s = &api.sock;
    let fe = api.proxy.addr("fe");
    assert_eq!(ask_api(s, "set server app/a state maint").await, "\n");
    // A request stuck at the slow server b.
    let stuck = tokio::spawn(async move {
        let tcp = tokio::net::TcpStream::connect(fe).await.unwrap();
        let (mut snd, c) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(c);
        let req = http::Request::get("/")
            .header("host", "x")
            .body(empty())
            .unwrap();
        snd.send_request(req).await
    });
    assert!(eventually(std::time::Duration::from_secs(5), || slow.count() == 1).await);
    let sess = ask_api(s, "show sess").await;
    let line = sess
        .lines()
        .find(|l| l.contains(" be=app srv=b "))
        .unwrap_or_else(|| panic!("{sess}"));
    assert!(
        line.starts_with("0x")
            && line.contains(" proto=tcpv4 src=127.0.0.1:")
            && line.contains(" fe=fe ")
            && line.contains(" reqs=1"),
        "{line}"
    );
    let t = crate::stall::Budget::new(std::time::Duration::from_secs(2));
    assert_eq!(ask_api(s, "shutdown sessions server app/b").await, "\n");
    let r = tokio::time::timeout(std::time::Duration::from_secs(30), stuck)
        .await
        .unwrap()
        .unwrap();
    assert!(r.is_err(), "the stuck request was cut: {r:?}");
    assert!(!t.spent(), "cut after {}", t.show(t.elapsed()));
    assert!(
        eventually(std::time::Duration::from_secs(5), || {
            api.proxy.handle().live().sessions.list().is_empty()
        })
        .await
    );
    assert_eq!(
        ask_api(s, "user; show sess").await,
        "\nPermission denied\n\n"
    );
    api.proxy.stop().await;
}
