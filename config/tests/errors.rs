//! A table of broken configurations and the exact errors they get: position, key path and
//! message.

use std::collections::HashMap;

fn errors(yaml: &str) -> Vec<String> {
    let env: HashMap<String, String> = HashMap::from([("PORT".into(), "8080".into())]);
    match rampart_config::load_str(yaml, None, &env) {
        Ok(_) => Vec::new(),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

const FE: &str = "frontends:\n  www:\n    bind: [\":8080\"]\n    default_backend: web\n";
const BE: &str = "backends:\n  web:\n    servers:\n      s1: { address: \"127.0.0.1:9001\" }\n";

fn vrrp(vrid: &str, extra: &str) -> String {
    format!(
        "{FE}{BE}vrrp:\n  instances:\n    vi:\n      interface: eth0\n      vrid: {vrid}\n      addresses: [10.0.0.100/24]\n{extra}"
    )
}

const TCP_FE: &str = "frontends:\n  edge:\n    mode: tcp\n    bind: [\":8443\"]\n";

fn with(extra_fe: &str, extra_be: &str) -> String {
    format!("{FE}{extra_fe}{BE}{extra_be}")
}

#[test]
fn broken_configs_get_exact_errors() {
    let cases: Vec<(String, Vec<&str>)> = vec![
        (format!("{TCP_FE}    default_backend: web\n{BE}"), vec![
            "5:22: frontends.edge.default_backend: backend \"web\" is mode http, and frontend \"edge\" is mode tcp: a frontend sends its traffic to backends of its own mode",
        ]),
        (format!("{TCP_FE}    default_backend: db\n    http_request: [\"deny\"]\n    access_log: {{ format: httplog }}\n    acls: {{ h: \"hdr(host) -i x\" }}\n    use_backend:\n      - {{ backend: db, if: \"{{ hdr(host) -i x }}\" }}\n      - {{ backend: db, if: h }}\n      - {{ backend: db, timeout: 5s }}\nbackends:\n  db: {{ mode: tcp, servers: {{ s: {{ address: \"127.0.0.1:1\" }} }} }}\n"), vec![
            "2:3: frontends.edge.http_request: http_request needs mode http; frontend \"edge\" is mode tcp",
            "2:3: frontends.edge.access_log.format: httplog needs mode http; a mode tcp frontend logs tcplog or json",
            "10:26: frontends.edge.use_backend.0: hdr(host) needs an HTTP request; frontend \"edge\" is mode tcp",
            "11:28: frontends.edge.use_backend.1: ACL \"h\" uses hdr(host), which needs an HTTP request; frontend \"edge\" is mode tcp",
            "12:9: frontends.edge.use_backend.2: in mode tcp a use_backend entry takes only a backend and its condition",
        ]),
        (with("    tcp_request: { inspect_delay: 5s, content: [\"accept if { req.ssl_hello_type 1 }\"] }\n    acls: { sni: \"req.ssl_sni -i x\" }\n    access_log: { format: tcplog }\n    http_request: [\"deny if { req.len gt 0 }\"]\n", ""), vec![
            "2:3: frontends.www.tcp_request: tcp_request.content and inspect_delay need mode tcp (HTTP frontends decide with http_request rules)",
            "2:3: frontends.www.access_log.format: tcplog needs mode tcp; a mode http frontend logs httplog or json",
            "6:19: frontends.www.acls.sni: req.ssl_sni reads the payload before HTTP, which only mode tcp frontends inspect",
            "8:21: frontends.www.http_request.0: req.len reads the payload before HTTP, which only mode tcp frontends inspect",
        ]),
        (format!("{TCP_FE}    default_backend: db\n    tcp_request: {{ content: [\"reject if {{ path /x }}\", \"accept if {{ req.ssl_sni -m end .example }}\"] }}\nbackends:\n  db:\n    mode: tcp\n    balance: uri\n    proto: h2\n    cookie: {{ name: SRV }}\n    retries: {{ on: [5xx] }}\n    stick: [\"on hdr(x-user)\"]\n    servers: {{ s: {{ address: \"127.0.0.1:1\" }} }}\n"), vec![
            "6:31: frontends.edge.tcp_request.content.0: path needs an HTTP request; content rules can use the connection, its TLS handshake and the payload (req.len, req.ssl_sni, req.ssl_hello_type)",
            "8:3: backends.db.cookie: cookie persistence needs mode http; backend \"db\" is mode tcp",
            "8:3: backends.db.proto: proto h2 needs mode http; backend \"db\" is mode tcp",
            "8:3: backends.db.balance: hashing a request (balance uri or hdr) needs mode http; backend \"db\" is mode tcp",
            "13:21: backends.db.retries.on: mode tcp retries connection failures only (connect-failure)",
            "14:14: backends.db.stick.0: stick on needs a stick table, and none is declared in stick_tables",
            "14:14: backends.db.stick.0: hdr(x-user) is not known in mode tcp, where a backend sees the connection and its TLS handshake",
        ]),
        (with("", "    timeouts: { tunnel: 1h }\n"), vec![
            "6:3: backends.web.timeouts.tunnel: timeouts.tunnel applies to mode tcp backends",
        ]),
        ("frontend: {}\n".into(), vec!["1:1: frontend: unknown key \"frontend\" (did you mean \"frontends\"?)"]),
        (format!("global: {{ threads: many }}\n{FE}{BE}"), vec!["1:20: global.threads: expected a whole number between 0 and 18446744073709551615, found \"many\""]),
        (format!("global: {{ grace: 10 parsecs }}\n{FE}{BE}"), vec!["1:18: global.grace: invalid duration \"10 parsecs\": expected a number and a unit, like 250ms, 5s, 2m, 1h"]),
        (with("    limits: { max_header_size: lots }\n", ""), vec!["5:32: frontends.www.limits.max_header_size: invalid size \"lots\": expected a number with an optional k, m or g suffix"]),
        (with("    timeouts: { clinet: 5s }\n", ""), vec!["5:17: frontends.www.timeouts.clinet: unknown key \"clinet\" (did you mean \"client\"?)"]),
        (format!("{FE}backends:\n  web:\n    servers:\n      s1: {{ adress: \"127.0.0.1:9001\" }}\n"), vec!["8:13: backends.web.servers.s1.adress: unknown key \"adress\" (did you mean \"address\"?)"]),
        (format!("{FE}backends:\n  web:\n    servers:\n      s1: {{ weight: 2 }}\n"), vec!["8:11: backends.web.servers.s1: missing required key \"address\""]),
        ("frontends:\n  www:\n    bind: [\":8080\"]\n    default_backend: wbe\n".to_owned() + BE, vec!["4:22: frontends.www.default_backend: unknown backend \"wbe\" (did you mean \"web\"?)"]),
        (with("    http_request: [\"deny if { path_beg /admin } !internl\"]\n    acls: { internal: src 10.0.0.0/8 }\n", ""), vec!["5:50: frontends.www.http_request.0: unknown ACL \"internl\" (did you mean \"internal\"?)"]),
        (with("    http_request: [\"dney if { always_true }\"]\n", ""), vec!["5:21: frontends.www.http_request.0: unknown action \"dney\" (did you mean \"deny\"?)"]),
        (with("    http_request: [\"deny if { path_begin /x }\"]\n", ""), vec!["5:31: frontends.www.http_request.0: unknown fetch \"path_begin\" (did you mean \"path_beg\"?)"]),
        (with("    http_request: [\"deny if { path_beg /x\"]\n", ""), vec!["5:29: frontends.www.http_request.0: missing '}' to close the anonymous ACL"]),
        (with("    http_request: ['return string \"oops']\n", ""), vec!["5:35: frontends.www.http_request.0: unterminated double quote"]),
        (with("    acls: { bad: path_reg /a( }\n", ""), vec!["5:27: frontends.www.acls.bad: invalid regular expression \"/a(\": unclosed group"]),
        (with("    acls: { net: src 10.0.0.0/33 }\n", ""), vec!["5:22: frontends.www.acls.net: invalid address or network \"10.0.0.0/33\""]),
        (with("    acls: { TRUE: always_false }\n", ""), vec!["5:13: frontends.www.acls.TRUE: \"TRUE\" is a predefined ACL and cannot be redefined"]),
        (with("    acls: { \"no spaces\": always_true }\n", ""), vec!["5:13: frontends.www.acls.no spaces: invalid name \"no spaces\": use letters, digits, '-', '_', '.' and ':'"]),
        ("frontends:\n  www:\n    bind: [\"8080\"]\n".into(), vec!["3:12: frontends.www.bind.0: invalid bind address \"8080\": expected ip:port, [ipv6]:port or :port"]),
        ("frontends:\n  a: { bind: \":8080\" }\n  b: { bind: \"0.0.0.0:8080\" }\n".into(), vec!["3:14: frontends.b.bind.0: 0.0.0.0:8080 is already bound by frontend \"a\""]),
        ("frontends:\n  a: { bind: \":${PORT}\" }\n  b: { bind: \":${NOPE}\" }\n".into(), vec!["3:14: environment variable NOPE is not set (use ${NOPE:-default} for a default)"]),
        ("frontends:\n  a: { bind: \":80\" }\n  a: { bind: \":81\" }\n".into(), vec!["3:3: duplicate key \"a\" (first at line 2)"]),
        ("frontends:\n  a: [1, 2\n".into(), vec!["3:1: YAML syntax error: while parsing a flow sequence, expected ',' or ']'"]),
        (format!("{FE}backends:\n  web:\n    balance: roundrobn\n    servers: {{ s1: {{ address: \"127.0.0.1:1\" }} }}\n"), vec!["7:14: backends.web.balance: unknown balance algorithm \"roundrobn\" (did you mean \"roundrobin\"?)"]),
        (format!("{FE}backends:\n  web:\n    hash_key: src\n    servers: {{ s1: {{ address: \"127.0.0.1:1\", weight: 300 }} }}\n"), vec!["7:15: backends.web.hash_key: hash_key applies only to balance: maglev", "8:54: backends.web.servers.s1.weight: weight must be between 0 and 256, found 300"]),
        (with("    use_backend:\n      - split: { web: 0 }\n", ""), vec!["6:18: frontends.www.use_backend.0.split.web: split weight must be between 1 and 1000000, found 0"]),
        ("frontends:\n  www:\n    bind:\n      - { address: \":8443\", tls: { certificates: [{ cert: a.pem }], alpn: [h3], min_version: \"1.3\", max_version: \"1.2\" } }\n".into(), vec![
            "4:20: frontends.www.bind.0.tls: min_version is above max_version",
            "4:20: frontends.www.bind.0.tls.alpn: unsupported ALPN protocol \"h3\" (supported: h2, http/1.1)",
        ]),
        ("frontends:\n  www:\n    bind:\n      - { address: \":8080\", accept_proxy: maybe }\n      - { address: \":8081\", accept_proxy: { from: [] } }\n      - { address: \":8082\", accept_proxy: { from: [10.0.0.0/40] } }\n".into(), vec![
            "4:43: frontends.www.bind.0.accept_proxy: expected true or false, found \"maybe\"",
            "5:43: frontends.www.bind.1.accept_proxy: accept_proxy.from needs at least one address or network",
            "6:52: frontends.www.bind.2.accept_proxy.from.0: invalid address or network \"10.0.0.0/40\"",
        ]),
        (format!("{FE}backends:\n  web:\n    servers:\n      s1: {{ address: \"127.0.0.1:1\", send_proxy: true, send_proxy_v2: true }}\n      s2: {{ address: \"127.0.0.1:2\", proxy_v2_options: [authority] }}\n      s3: {{ address: \"127.0.0.1:3\", send_proxy_v2: true, proxy_v2_options: [ssl] }}\n"), vec![
            "8:22: backends.web.servers.s1.send_proxy_v2: send_proxy and send_proxy_v2 are exclusive: choose one version",
            "9:22: backends.web.servers.s2.proxy_v2_options: proxy_v2_options need send_proxy_v2: true",
            "10:77: backends.web.servers.s3.proxy_v2_options.0: unknown PROXY v2 option \"ssl\" (expected one of: authority, crc32c)",
        ]),
        (with("    http_request: [\"deny if { fc_pp_tlv(0x1FF) -m found }\"]\n", ""), vec!["5:31: frontends.www.http_request.0: fc_pp_tlv: \"0x1FF\" is not a TLV type (0 to 255, 0x00 to 0xFF, or a name like AUTHORITY)"]),
        (with("    acls: { a: \"path,field(0,/) -m str x\", b: \"path,wrd(1,/) -m str x\" }\n", ""), vec![
            "5:17: frontends.www.acls.a: field: the index is a non-zero number, found \"0\"",
            "5:48: frontends.www.acls.b: unknown converter \"wrd\" (did you mean \"word\"?)",
        ]),
        (with("    forwarded: { trust: [\"not-a-net\"] }\n", ""), vec!["5:26: frontends.www.forwarded.trust.0: invalid address or network \"not-a-net\""]),
        (with("    access_log: { format: xml }\n", ""), vec!["5:27: frontends.www.access_log.format: unknown log format \"xml\" (expected one of: httplog, json, tcplog)"]),
        (with("    virtual_hosts:\n      a: { domains: [\"*\", \"x.test\"], routes: [web] }\n      b: { domains: [\"*\", \"X.test\", \"*.y.*\"], routes: [web] }\n", ""), vec![
            "7:22: frontends.www.virtual_hosts.b.domains: only one virtual host may serve \"*\" (virtual host \"a\" does)",
            "7:27: frontends.www.virtual_hosts.b.domains: domain \"X.test\" is also in virtual host \"a\"",
            "7:37: frontends.www.virtual_hosts.b.domains: invalid domain \"*.y.*\": '*' may only be the first or last character",
        ]),
        (with("    virtual_hosts:\n      a: { domains: [x.test], routes: [{ if: \"{ path_beg /x }\" }] }\n", ""), vec![
            "6:40: frontends.www.virtual_hosts.a.routes.0: a route needs 'backend', a non-empty 'split', or 'http_request' rules that answer",
        ]),
        (with("    virtual_hosts:\n      a: { domains: [x.test], routes: [web, nope] }\n", ""), vec![
            "6:45: frontends.www.virtual_hosts.a.routes.1: unknown backend \"nope\"",
        ]),
        (with("    use_backend:\n      - { backend: web, hash_key: \"hdr(\" }\n", ""), vec!["6:35: frontends.www.use_backend.0.hash_key: missing ')' in \"hdr(\""]),
        (format!("{FE}{BE}xds: {{ server: \"grpc://cp:18000\", node: {{ id: n }} }}\n"), vec!["9:16: xds.server: invalid control plane address \"grpc://cp:18000\": expected http://host:port or https://host:port"]),
        (format!("{FE}{BE}xds: {{ server: \"http://cp:18000\", node: {{ id: n }}, mode: grpc }}\n"), vec!["9:58: xds.mode: unknown xDS mode \"grpc\" (expected sotw or delta)"]),
        (with("", "    retries: { on: [conect-failure] }\n"), vec!["9:21: backends.web.retries.on.0: unknown retry condition \"conect-failure\" (did you mean \"connect-failure\"?)"]),
        (with("", "    retries: { attempts: 50, backoff: { base: 1s, max: 10ms } }\n"), vec![
            "6:3: backends.web.retries.attempts: attempts must be at most 10, found 50",
            "6:3: backends.web.retries.backoff.max: backoff max is below base",
        ]),
        (with("", "    health_check: { htp: { path: /h } }\n"), vec!["9:21: backends.web.health_check.htp: unknown key \"htp\" (did you mean \"http\"?)"]),
        (with("", "    health_check: { http: { path: health }, rise: 0 }\n"), vec![
            "6:3: backends.web.health_check.rise: rise must be between 1 and 1000, found 0",
            "6:3: backends.web.health_check.http.path: a check path starts with '/' and has no spaces, found \"health\"",
        ]),
        (with("", "    health_check: { tcp: {}, grpc: {}, interval: 1ms }\n"), vec![
            "6:3: backends.web.health_check: a health check is one of tcp, http or grpc, not several",
            "6:3: backends.web.health_check.interval: interval must be at least 10ms",
        ]),
        (with("", "    health_check: { http: { expect_status: [200-299, 600] } }\n"), vec!["9:54: backends.web.health_check.http.expect_status: expected an HTTP status or a range like 200-399, found \"600\""]),
        (with("", "    health_check: { init_state: sideways }\n"), vec!["9:33: backends.web.health_check.init_state: unknown initial state \"sideways\" (expected up, fully-up, down or fully-down)"]),
        (with("", "    outlier_detection: { max_ejection_percent: 150% }\n"), vec!["9:48: backends.web.outlier_detection.max_ejection_percent: expected a percentage between 0% and 100%, found \"150%\""]),
        (with("", "    circuit_breaker: { max_requests: 0 }\n    queue: { timeout: 0s }\n"), vec![
            "6:3: backends.web.circuit_breaker.max_requests: max_requests must be at least 1",
            "6:3: backends.web.queue.timeout: a queue timeout must be above 0 (remove `queue` for immediate 503s)",
        ]),
        (vrrp("51", "      priorty: 150\n"), vec!["15:7: vrrp.instances.vi.priorty: unknown key \"priorty\" (did you mean \"priority\"?)"]),
        (vrrp("0", "      version: 4\n"), vec![
            "13:13: vrrp.instances.vi.vrid: vrid must be between 1 and 255",
            "15:16: vrrp.instances.vi.version: version must be 2 or 3, found 4",
        ]),
        (vrrp("51", "      version: 2\n      interval: 500ms\n"), vec!["16:17: vrrp.instances.vi.interval: VRRPv2 intervals are whole seconds from 1s to 255s, found 500ms; use version 3 for sub-second adverts"]),
        (vrrp("51", "      interval: 15ms\n      checksum: cisco\n"), vec![
            "15:17: vrrp.instances.vi.interval: VRRPv3 intervals are from 10ms to 40.95s in steps of 10ms, found 15ms",
            "16:17: vrrp.instances.vi.checksum: unknown checksum \"cisco\" (expected pseudo_header or message)",
        ]),
        (format!("{FE}{BE}vrrp:\n  instances:\n    vi:\n      interface: eth0\n      vrid: 51\n      addresses: [10.0.0.300/24, \"fd00::1/64\"]\n"), vec![
            "14:19: vrrp.instances.vi.addresses.0: invalid virtual address \"10.0.0.300/24\": expected an IPv4 address like 10.0.0.100/24",
            "14:34: vrrp.instances.vi.addresses.1: \"fd00::1/64\": IPv6 virtual addresses are not supported; VRRP here is IPv4",
        ]),
        (format!("{FE}{BE}vrrp:\n  instances:\n    a: {{ interface: eth0, vrid: 51, addresses: [10.0.0.100] }}\n    b: {{ interface: eth0, vrid: 51, addresses: [10.0.0.100] }}\n"), vec![
            "12:33: vrrp.instances.b.vrid: VRID 51 on eth0 is already used by instance \"a\"",
            "12:49: vrrp.instances.b.addresses: 10.0.0.100 is already a virtual address of instance \"a\"",
        ]),
        (vrrp("51", "      track:\n        - { backend: wbe, weight: -300 }\n        - { frontend: www, interface: eth1 }\n        - { frontend: wwx }\n"), vec![
            "16:22: vrrp.instances.vi.track.0.backend: unknown backend \"wbe\" (did you mean \"web\"?)",
            "16:35: vrrp.instances.vi.track.0.weight: weight must be between -254 and 254 and not 0, found -300; leave it out to go to FAULT instead",
            "17:23: vrrp.instances.vi.track.1: a tracked object is exactly one of backend, frontend or interface",
            "18:23: vrrp.instances.vi.track.2.frontend: unknown frontend \"wwx\" (did you mean \"www\"?)",
        ]),
        (vrrp("51", "      priority: 255\n      preempt: false\n      preempt_delay: 5s\n      track: [{ backend: web, weight: -50 }]\n"), vec![
            "11:5: vrrp.instances.vi.preempt_delay: preempt_delay needs preempt: true",
            "18:39: vrrp.instances.vi.track.0.weight: an address owner (priority 255) keeps its priority: track without a weight (FAULT) or lower the priority",
        ]),
        (format!("{FE}{BE}vrrp:\n  instances:\n    vi: {{ interface: eth0, vrid: 51 }}\n"), vec!["11:5: vrrp.instances.vi.addresses: an instance needs at least one virtual address"]),
    ];
    let mut failures = Vec::new();
    for (yaml, want) in cases {
        let got = errors(&yaml);
        if got != want {
            failures.push(format!(
                "--- config:\n{yaml}--- want: {want:#?}\n--- got: {got:#?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn several_errors_in_one_file_are_all_reported_in_order() {
    // The frontend and the backend each have an invalid value; their other problems
    // (an unknown backend, a bad address) are still found.
    let yaml = "global:\n  max_conections: 5\nfrontends:\n  www:\n    bind: [\":8080\"]\n    timeouts: { client: soon }\n    default_backend: nope\nbackends:\n  web:\n    balance: fastest\n    servers: { s: { address: \"x\" } }\n";
    let got = errors(yaml);
    let lines: Vec<u32> = got
        .iter()
        .map(|e| e.split(':').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(got.len(), 5, "{got:#?}");
    assert_eq!(lines, vec![2, 6, 7, 10, 11], "{got:#?}");
}

#[test]
fn a_valid_file_loads() {
    assert!(errors(&with("", "")).is_empty());
    assert!(errors("frontends:\n  a: { bind: \":${PORT}\" }\n").is_empty());
}
