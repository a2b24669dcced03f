//! The bounds on what a configuration may hold, through the binary: `rampart check` past
//! each limit answers a positioned error, and a running proxy given a file that expands
//! without end (by `reload`, SIGHUP or the file watch) stays up, keeps its connections and
//! its memory, and says why it refused; a reload that takes too long is given up.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use tokio::net::TcpStream;

use crate::cli::{bin, run, signal, wait_log};
use crate::support::*;

const BACKEND: &str = "backends: { b: { servers: { s: { address: \"127.0.0.1:1\" } } } }\n";

/// A frontend `f` with `rules` (each a quoted rule) as its `http_request` list, on line 7
/// and after.
fn with_rules(rules: impl Iterator<Item = String>) -> String {
    let mut s = format!(
        "{BACKEND}frontends:\n  f:\n    bind: \"127.0.0.1:0\"\n    default_backend: b\n    http_request:\n"
    );
    for r in rules {
        writeln!(s, "      - \"{r}\"").unwrap();
    }
    s
}

/// `rampart check` on `text` written as `name` in `dir`: must fail; returns its output.
fn refused_in(dir: &Path, name: &str, text: &str) -> String {
    let cfg = dir.join(name);
    std::fs::write(&cfg, text).unwrap();
    let out = bin().arg("check").arg("-c").arg(&cfg).output().unwrap();
    let all =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{name} passed: {}", head(&all));
    all
}

fn refused(name: &str, text: &str) -> String {
    refused_in(&temp_dir("limits"), name, text)
}

/// The first lines of a long output, for assertion messages.
fn head(s: &str) -> String {
    s.lines().take(5).collect::<Vec<_>>().join("\n")
}

fn assert_has(out: &str, want: &str) {
    assert!(out.contains(want), "want {want:?} in:\n{}", head(out));
}

/// The "billion laughs": nine lists of nine aliases to the list before (9^9 nodes).
fn laughs() -> String {
    let mut s = "a0: &a0 [lol]\n".to_owned();
    for i in 1..=9 {
        let refs = vec![format!("*a{}", i - 1); 9].join(", ");
        writeln!(s, "a{i}: &a{i} [{refs}]").unwrap();
    }
    s
}

#[test]
fn check_refuses_an_alias_bomb_where_it_crosses_the_node_budget() {
    let out = refused("laughs.yaml", &laughs());
    // Line 7 is `a6`, the first alias whose expansion crosses 1,000,000 nodes.
    assert_has(
        &out,
        "laughs.yaml:7:40: with this alias, the file stands for more than 1000000 YAML nodes",
    );
}

#[test]
fn check_refuses_too_many_nodes_too_much_text_and_too_large_a_file() {
    let list = vec!["1"; 1_000_001].join(",");
    let out = refused("nodes.yaml", &format!("x: [{list}]\n"));
    assert_has(
        &out,
        "nodes.yaml:1:1999999: the file stands for more than 1000000 YAML nodes",
    );

    let dir = temp_dir("limits");
    let cfg = dir.join("env.yaml");
    std::fs::write(
        &cfg,
        format!("global:\n  name: \"{}\"\n", "${BIG}".repeat(400)),
    )
    .unwrap();
    let out = bin()
        .arg("check")
        .arg("-c")
        .arg(&cfg)
        .env("BIG", "a".repeat(100_000))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_has(
        &String::from_utf8_lossy(&out.stderr),
        "env.yaml:2:9: with ${BIG} expanded, the file stands for more than 32 MiB of scalar text; refused",
    );

    let out = refused("big.yaml", &"#".repeat((16 << 20) + 1));
    assert_has(
        &out,
        "big.yaml: the configuration file is larger than the 16 MiB it may be (16777217 bytes); refused",
    );
}

#[test]
fn check_refuses_too_many_frontends_and_listening_addresses() {
    let mut s = format!("{BACKEND}frontends:\n");
    for i in 0..=10_000 {
        writeln!(s, "  f{i}: {{ bind: \"127.0.0.1:0\", default_backend: b }}").unwrap();
    }
    let out = refused("frontends.yaml", &s);
    assert_has(
        &out,
        "frontends.yaml:10003:3: frontends.f10000: more than 10000 frontends in the configuration; refused",
    );

    let mut s = format!("{BACKEND}frontends:\n  f:\n    default_backend: b\n    bind:\n");
    for _ in 0..=10_000 {
        s.push_str("      - \"127.0.0.1:0\"\n");
    }
    let out = refused("binds.yaml", &s);
    assert_has(
        &out,
        "binds.yaml:10006:9: frontends.f.bind: more than 10000 listening addresses in the configuration; refused",
    );
}

#[test]
fn check_refuses_too_many_backends() {
    let mut s =
        "frontends: { f: { bind: \"127.0.0.1:0\", default_backend: b0 } }\nbackends:\n".to_owned();
    for i in 0..=50_000 {
        writeln!(
            s,
            "  b{i}: {{ servers: {{ s: {{ address: \"127.0.0.1:1\" }} }} }}"
        )
        .unwrap();
    }
    let out = refused("backends.yaml", &s);
    assert_has(
        &out,
        "backends.yaml:50003:3: backends.b50000: more than 50000 backends in the configuration; refused",
    );
}

#[test]
fn check_refuses_too_many_servers() {
    let mut s =
        "frontends: { f: { bind: \"127.0.0.1:0\", default_backend: b } }\nbackends:\n  b:\n    servers:\n"
            .to_owned();
    for i in 0..=100_000 {
        writeln!(
            s,
            "      s{i}: {{ address: \"127.0.0.1:{}\" }}",
            1 + i % 60_000
        )
        .unwrap();
    }
    let out = refused("servers.yaml", &s);
    assert_has(
        &out,
        "servers.yaml:100005:7: backends.b.servers.s100000: more than 100000 servers in the configuration; refused",
    );
}

#[test]
fn check_refuses_too_many_rules() {
    let s = with_rules((0..=100_000).map(|i| format!("set-header x-a{} v", i % 100)));
    let out = refused("rules.yaml", &s);
    assert_has(
        &out,
        "rules.yaml:100007:10: frontends.f.http_request: more than 100000 rules in the configuration; refused",
    );
}

#[test]
fn check_refuses_too_many_regexes_and_one_too_large() {
    let s = with_rules((0..5_001).map(|i| format!("deny if {{ path_reg ^/a{i}/ }}")));
    let out = refused("regexes.yaml", &s);
    assert_has(
        &out,
        "regexes.yaml:5007:10: frontends.f.http_request: more than 5000 regular expressions in the configuration; refused",
    );

    let s = with_rules(std::iter::once(
        "deny if { path_reg \\\\w{1000} }".to_owned(),
    ));
    let out = refused("regex.yaml", &s);
    assert_has(
        &out,
        "regex.yaml:7:29: frontends.f.http_request.0: regular expression \"\\\\w{1000}\" is too large: it compiles to about 3388000 states, more than 100000",
    );
}

#[test]
fn check_refuses_regexes_too_large_together() {
    // Each within its own bound (99,002 states), six past 500,000 together.
    let s = with_rules((0..6).map(|i| format!("deny if {{ path_reg ^/{i}[a-z]{{1000}}{{99}}$ }}")));
    let out = refused("regex-total.yaml", &s);
    assert_has(
        &out,
        "regex-total.yaml:12:29: frontends.f.http_request.5: the regular expressions of the configuration compile to more than 500000 states together; refused",
    );
    assert_eq!(out.matches("more than").count(), 1, "{}", head(&out));
}

/// A frontend whose ACLs `a0`, `a1`... read the pattern files `files`.
fn with_pattern_files(files: &[&str]) -> String {
    let mut s = format!(
        "{BACKEND}frontends:\n  f:\n    bind: \"127.0.0.1:0\"\n    default_backend: b\n    acls:\n"
    );
    for (i, f) in files.iter().enumerate() {
        writeln!(s, "      a{i}: path -f {f}").unwrap();
    }
    s.push_str("    http_request:\n");
    for i in 0..files.len() {
        writeln!(s, "      - deny if a{i}").unwrap();
    }
    s
}

#[test]
fn check_refuses_too_many_patterns_and_pattern_files_too_large_or_not_files() {
    let dir = temp_dir("limits");
    let mut lines = String::new();
    for i in 0..=1_000_000 {
        writeln!(lines, "/p/{i}").unwrap();
    }
    std::fs::write(dir.join("many.lst"), lines).unwrap();
    let out = refused_in(&dir, "patterns.yaml", &with_pattern_files(&["many.lst"]));
    assert_has(
        &out,
        "patterns.yaml:7:19: frontends.f.acls.a0: many.lst: more than 1000000 ACL patterns in the configuration; refused",
    );

    // One file past 32 MiB; sparse, so the test writes nothing.
    let f = std::fs::File::create(dir.join("huge.lst")).unwrap();
    f.set_len((32 << 20) + 1).unwrap();
    let out = refused_in(&dir, "huge.yaml", &with_pattern_files(&["huge.lst"]));
    assert_has(
        &out,
        "huge.lst: the pattern file is larger than the 32 MiB it may be (33554433 bytes); refused",
    );

    // Three of 30 MiB: together past 64 MiB.
    for n in ["p1.lst", "p2.lst", "p3.lst"] {
        let f = std::fs::File::create(dir.join(n)).unwrap();
        f.set_len(30 << 20).unwrap();
    }
    let out = refused_in(
        &dir,
        "together.yaml",
        &with_pattern_files(&["p1.lst", "p2.lst", "p3.lst"]),
    );
    assert_has(
        &out,
        "p3.lst: the pattern files together would be larger than the 64 MiB they may be (90 MiB with this one); refused",
    );

    // A named pipe nobody writes to would block the load for good.
    let st = std::process::Command::new("mkfifo")
        .arg(dir.join("pipe.lst"))
        .status()
        .unwrap();
    assert!(st.success());
    let out = refused_in(&dir, "pipe.yaml", &with_pattern_files(&["pipe.lst"]));
    assert_has(&out, "pipe.lst: the pattern file is not a file; refused");
}

#[test]
fn check_refuses_too_many_certificates_and_too_large_a_pem_file() {
    let mut s = format!(
        "{BACKEND}frontends:\n  f:\n    default_backend: b\n    bind:\n      - address: \"127.0.0.1:0\"\n        tls:\n          certificates:\n"
    );
    for i in 0..=1_000 {
        writeln!(s, "            - {{ cert: c{i}.pem }}").unwrap();
    }
    let out = refused("certs.yaml", &s);
    assert_has(
        &out,
        "certs.yaml:1009:23: frontends.f.bind.tls.certificates: more than 1000 certificates in the configuration; refused",
    );

    // Seventeen files of 4 MiB, one per bind: the seventeenth is past 64 MiB together.
    let dir = temp_dir("limits");
    let mut s = format!("{BACKEND}frontends:\n  f:\n    default_backend: b\n    bind:\n");
    for i in 0..17 {
        let f = std::fs::File::create(dir.join(format!("p{i}.pem"))).unwrap();
        f.set_len(4 << 20).unwrap();
        writeln!(
            s,
            "      - {{ address: \"127.0.0.1:0\", tls: {{ certificates: [{{ cert: p{i}.pem }}] }} }}"
        )
        .unwrap();
    }
    let out = refused_in(&dir, "pems.yaml", &s);
    assert_has(&out, "no certificate found in");
    assert_has(
        &out,
        "pems.yaml:22:65: frontends.f.bind.16.tls.certificates.0: cannot read certificate file ",
    );
    assert_has(
        &out,
        "p16.pem: the PEM files together would be larger than the 64 MiB they may be (68 MiB with this one); refused",
    );

    let dir = temp_dir("limits");
    let f = std::fs::File::create(dir.join("big.pem")).unwrap();
    f.set_len(5 << 20).unwrap();
    let out = refused_in(
        &dir,
        "pem.yaml",
        &format!(
            "{BACKEND}frontends:\n  f:\n    default_backend: b\n    bind: [{{ address: \"127.0.0.1:0\", tls: {{ certificates: [{{ cert: big.pem }}] }} }}]\n"
        ),
    );
    assert_has(
        &out,
        "big.pem: the PEM file is larger than the 4 MiB it may be (5242880 bytes); refused",
    );
}

#[test]
fn check_refuses_a_file_at_several_limits_at_once() {
    // 60% of the servers, 62% of the rules and 40% of the regular expressions.
    let mut s =
        "frontends:\n  f:\n    bind: \"127.0.0.1:0\"\n    default_backend: b\n    http_request:\n"
            .to_owned();
    for i in 0..60_000 {
        if i < 2_000 {
            writeln!(s, "      - \"deny if {{ path_reg ^/a{i}/ }}\"").unwrap();
        } else {
            s.push_str("      - \"set-header x-a v\"\n");
        }
    }
    s.push_str("backends:\n  b:\n    servers:\n");
    for i in 0..60_000 {
        writeln!(s, "      s{i}: {{ address: \"127.0.0.1:{}\" }}", 1 + i).unwrap();
    }
    let out = refused("shares.yaml", &s);
    assert_has(
        &out,
        "shares.yaml:1:1: the configuration is too large as a whole: 60000 servers (60%), 60000 rules (60%), 2000 regular expressions (40%) make 160% of their limits together, more than the 150% allowed; refused",
    );
}

#[test]
fn check_shows_the_first_hundred_errors_and_counts_the_rest() {
    let mut s = format!(
        "{BACKEND}frontends: {{ f: {{ bind: \"127.0.0.1:0\", default_backend: b }} }}\nglobal:\n"
    );
    for i in 0..300 {
        writeln!(s, "  unknown{i}: 1").unwrap();
    }
    let out = refused("errors.yaml", &s);
    assert_has(&out, "errors.yaml:4:3: global.unknown0: unknown key");
    assert_has(&out, "... and 200 more errors (the first 100 are shown)");
    assert_eq!(out.matches("unknown key").count(), 100, "{}", head(&out));
}

/// `VmRSS` or `VmHWM` of `pid`, in bytes.
fn memory(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

/// Writes the configuration: `global` at the top, `fe` inside the frontend.
fn config(dir: &Path, origin: &Origin, tag: &str, global: &str, fe: &str) -> PathBuf {
    let cfg = dir.join("rampart.yaml");
    std::fs::write(
        &cfg,
        format!(
            "{global}admin: {{ socket: {{ path: run/api.sock }} }}\nbackends: {{ be: {{ servers: {{ s: {{ address: \"{}\" }} }} }} }}\nfrontends:\n  fe:\n    bind: \"127.0.0.1:0\"\n    default_backend: be\n    http_response: [\"set-header x-tag {tag}\"]\n{fe}",
            origin.addr
        ),
    )
    .unwrap();
    cfg
}

/// One request on an open keep-alive connection: its `x-tag`.
async fn tag_on(conn: &mut TcpStream) -> String {
    let resp = raw_one(conn, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    resp.lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("x-tag: ")
                .map(str::to_owned)
        })
        .unwrap_or_default()
}

/// `reload` on the runtime socket (named, since the file may not be readable).
fn ctl_reload(cfg: &Path) -> String {
    let out = bin()
        .args(["ctl", "-s"])
        .arg(cfg.with_file_name("run/api.sock"))
        .arg("reload")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alias_bomb_given_to_a_running_proxy_changes_nothing() {
    let o = Origin::named("origin").await;
    let dir = temp_dir("bomb");
    let cfg = config(&dir, &o, "one", "", "");
    let mut r = run(&cfg, 1);
    wait_log(&r, "runtime API on");
    let pid = r.child.id();
    let mut conn = TcpStream::connect(r.addrs[0]).await.unwrap();
    assert_eq!(tag_on(&mut conn).await, "one");
    let before = memory(pid, "VmRSS:");
    let grown = || memory(pid, "VmHWM:").saturating_sub(before);
    let bomb = format!("{}{}", laughs(), std::fs::read_to_string(&cfg).unwrap());
    let why =
        "rampart.yaml:7:40: with this alias, the file stands for more than 1000000 YAML nodes";

    // The file watch.
    std::fs::write(&cfg, &bomb).unwrap();
    let log = wait_log(&r, "reload refused").join("\n");
    assert!(log.contains("file changed"), "{log}");
    let log = log + &wait_log(&r, "YAML nodes").join("\n");
    assert!(log.contains(why), "{log}");
    assert_eq!(tag_on(&mut conn).await, "one");
    assert!(grown() < 64 << 20, "memory grew by {} bytes", grown());

    // SIGHUP.
    signal(&r.child, "HUP");
    let log = wait_log(&r, "SIGHUP").join("\n") + &wait_log(&r, "YAML nodes").join("\n");
    assert!(log.contains(why), "{log}");
    assert_eq!(tag_on(&mut conn).await, "one");
    assert!(grown() < 64 << 20, "memory grew by {} bytes", grown());

    // The runtime API's `reload`, which answers the precise error.
    let answer = ctl_reload(&cfg);
    assert!(
        answer.contains("Reload failed, the running configuration is unchanged:")
            && answer.contains(why),
        "{answer}"
    );
    assert_eq!(tag_on(&mut conn).await, "one");
    assert!(grown() < 64 << 20, "memory grew by {} bytes", grown());

    // Fixed, the file applies as usual, on the same connection.
    config(&dir, &o, "two", "", "");
    wait_log(&r, "configuration reloaded");
    assert_eq!(tag_on(&mut conn).await, "two");
    assert_eq!(r.stop("TERM").await.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_slower_than_reload_timeout_is_given_up_and_traffic_goes_on() {
    let o = Origin::named("origin").await;
    let dir = temp_dir("slow");
    let global = "global: { reload_timeout: 100ms }\n";
    let cfg = config(&dir, &o, "one", global, "");
    let mut r = run(&cfg, 1);
    wait_log(&r, "runtime API on");
    let mut conn = TcpStream::connect(r.addrs[0]).await.unwrap();
    assert_eq!(tag_on(&mut conn).await, "one");

    // Valid, within every limit, and seconds of work to compile: 4,000 regular
    // expressions (each takes about a millisecond even in an optimised build; this
    // binary is not one).
    let mut rules = "    http_request:\n".to_owned();
    for i in 0..4_000 {
        writeln!(
            rules,
            "      - \"deny if {{ path_reg ^/a{i}/[a-z]+(x|y)*$ }}\""
        )
        .unwrap();
    }
    config(&dir, &o, "slow", global, &rules);
    let log = wait_log(&r, "reload refused").join("\n");
    assert!(
        log.contains("gave up after 100ms (global.reload_timeout)")
            && log.contains("it will not be applied"),
        "{log}"
    );
    // While the given-up reload still compiles, requests are served, by the old
    // configuration; a new reload is refused with the reason.
    assert_eq!(tag_on(&mut conn).await, "one");
    let answer = ctl_reload(&cfg);
    assert!(
        answer.contains("still reading or compiling") || answer.contains("gave up after"),
        "{answer}"
    );
    wait_log(&r, "a reload given up on has ended");
    assert_eq!(tag_on(&mut conn).await, "one");

    config(&dir, &o, "two", global, "");
    wait_log(&r, "configuration reloaded");
    assert_eq!(tag_on(&mut conn).await, "two");
    assert_eq!(r.stop("TERM").await.code(), Some(0));
}

#[test]
fn check_counts_large_rsa_keys_by_their_cost() {
    // One RSA-4096 certificate (cost 4), named 700 times under different file names: the
    // count (700) passes, loading them would cost 2,800 where 700 + 80% of 1,000 may be
    // spent (the configuration's other counts use nothing of the shares).
    let dir = temp_dir("limits");
    let mut params = rcgen::CertificateParams::new(vec!["big.test".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "big.test");
    let key = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_4096)
        .unwrap();
    let cert = params.self_signed(&key).unwrap();
    let pem = format!("{}{}", cert.pem(), key.serialize_pem());
    let mut s = format!(
        "{BACKEND}frontends:\n  f:\n    default_backend: b\n    bind:\n      - address: \"127.0.0.1:0\"\n        tls:\n          certificates:\n"
    );
    for i in 0..700 {
        std::fs::write(dir.join(format!("c{i}.pem")), &pem).unwrap();
        writeln!(s, "            - {{ cert: c{i}.pem }}").unwrap();
    }
    let out = refused_in(&dir, "rsa.yaml", &s);
    assert_has(
        &out,
        "rsa.yaml:384:23: frontends.f.bind.0.tls.certificates.375: too many certificates to load: 1504 counted by their keys' sizes at ",
    );
    assert_has(
        &out,
        "c375.pem, more than the 1500 this configuration may load (at most 1000 certificates; an RSA key larger than 2048 bits counts as (bits / 2048)² certificates, this one as 4); refused",
    );

    // 300 of them (1,200) may be loaded.
    let mut s = s.lines().take(8 + 300).collect::<Vec<_>>().join("\n");
    s.push('\n');
    std::fs::write(dir.join("rsa300.yaml"), &s).unwrap();
    let out = bin()
        .arg("check")
        .arg("-c")
        .arg(dir.join("rsa300.yaml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}
