//! Access logs to syslog: over UDP and a Unix datagram socket, in RFC 3164 (HAProxy's
//! default) and RFC 5424 layouts, with the facility and tag configured; an unreachable
//! syslog never holds a request up.

use std::time::Duration;

use crate::support::*;

fn recv_udp(s: &std::net::UdpSocket) -> String {
    let mut buf = [0u8; 4096];
    let n = s.recv(&mut buf).expect("no syslog message within 10 s");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_logs_reach_syslog_over_udp_and_unix_sockets() {
    let o = Origin::named("o").await;
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let dir = temp_dir("syslog");
    let unix_path = dir.join("log.sock");
    let unix = std::os::unix::net::UnixDatagram::bind(&unix_path).unwrap();
    unix.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let yaml = format!(
        r#"
frontends:
  edge:
    bind: ["127.0.0.1:0"]
    default_backend: be
    access_log: {{ to: "udp://{udp}", facility: local3, tag: edge }}
  api:
    bind: ["127.0.0.1:0"]
    default_backend: be
    access_log: {{ to: "unix://{unix}", syslog_format: rfc5424, format: json, max_length: 100 }}
  nobody:
    bind: ["127.0.0.1:0"]
    default_backend: be
    access_log: {{ to: "unix://{dir}/nobody.sock" }}
backends:
  be: {{ servers: {{ s: {{ address: "{o}" }} }} }}
"#,
        udp = udp.local_addr().unwrap(),
        unix = unix_path.display(),
        dir = dir.display(),
        o = o.addr,
    );
    let p = Proxy::start_in(&yaml, dir.clone());

    assert_eq!(get(p.addr("edge"), "/x").await.text(), "o");
    let m = tokio::task::spawn_blocking(move || recv_udp(&udp))
        .await
        .unwrap();
    // <PRI> is local3 (19) * 8 + info (6); then `Mmm dd hh:mm:ss tag[pid]: ` and the
    // httplog line.
    assert!(m.starts_with("<158>"), "{m}");
    let pid = std::process::id();
    let head_end = m.find(&format!(" edge[{pid}]: ")).expect("the tag and pid");
    assert_eq!(head_end, "<158>Dec  6 02:40:00".len(), "{m}");
    assert!(
        m.contains(" edge be/s ") && m.ends_with("\"GET /x HTTP/1.1\""),
        "{m}"
    );
    assert!(!m.contains('\n'));

    assert_eq!(get(p.addr("api"), "/y").await.text(), "o");
    let m = tokio::task::spawn_blocking(move || {
        let mut buf = [0u8; 4096];
        let n = unix.recv(&mut buf).expect("no syslog message within 10 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    })
    .await
    .unwrap();
    // <PRI> local0 (16) * 8 + 6; `1 TIMESTAMP HOST TAG PID - - MSG`, cut at 100 bytes.
    let parts: Vec<&str> = m.splitn(8, ' ').collect();
    assert_eq!(parts[0], "<134>1", "{m}");
    assert!(parts[1].ends_with('Z') && parts[1].contains('T'), "{m}");
    assert_eq!(&parts[3..7], ["rampart", &pid.to_string(), "-", "-"], "{m}");
    assert!(parts[7].starts_with("{\""), "{m}");
    assert_eq!(m.len(), 100, "{m}");

    // Nobody listens on this one: requests are served all the same, and the lost lines
    // are counted.
    for _ in 0..3 {
        assert_eq!(get(p.addr("nobody"), "/").await.text(), "o");
    }
    let live = p.handle().control().shared().live.clone();
    assert!(
        eventually(Duration::from_secs(10), || live.dropped_logs() >= 3).await,
        "dropped: {}",
        live.dropped_logs()
    );
    p.stop().await;
}

#[test]
fn bad_syslog_targets_are_refused() {
    let load = |log: &str| {
        let yaml = format!(
            "frontends:\n  f:\n    bind: \"127.0.0.1:0\"\n    default_backend: b\n    access_log: {log}\nbackends:\n  b: {{ servers: {{ s: {{ address: \"127.0.0.1:9\" }} }} }}\n"
        );
        load_errors(&yaml, None)
    };
    assert!(load("{ to: \"udp://127.0.0.1\" }").contains("syslog over UDP is udp://HOST:PORT"));
    assert!(load("{ to: \"unix://dev/log\" }").contains("unix:///PATH"));
    assert!(load("{ to: \"tcp://x:1\" }").contains("unknown log target"));
    assert!(
        load("{ to: syslog, facility: local9 }").contains("unknown syslog facility \"local9\"")
    );
    assert!(load("{ to: syslog, syslog_format: rfc1 }").contains("syslog format"));
    assert!(load("{ to: syslog, max_length: 10 }").contains("max_length is 64 to 65535"));
    assert!(load("{ to: syslog, tag: \"a b\" }").contains("the tag is 1 to 48"));
}
