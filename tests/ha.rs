//! rampart nodes sharing floating addresses in network namespaces: failover seen by a
//! client in a third namespace, tracking a backend, hot reload of VRRP settings, and the
//! dual-master layout. Root only (and python3 for the client and origin): the tests skip
//! with a reason otherwise, and fail instead when RAMPART_REQUIRE_PRIVILEGED=1.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../vrrp/tests/lab/mod.rs"]
mod lab;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use lab::stall::Budget;
use lab::{Lab, Proc, privileged};

const RAMPART: &str = env!("CARGO_BIN_EXE_rampart");

/// One instance of a node's configuration.
struct Inst {
    name: &'static str,
    vrid: u8,
    priority: u8,
    addrs: Vec<String>,
    track: &'static str,
}

fn config(lab: &Lab, node: usize, insts: &[Inst], with_backend: bool) -> String {
    let vip = lab.vip();
    let mut s = format!(
        "global:\n  grace: 1s\n  log_level: info\nadmin:\n  socket: {{ path: node{node}.sock }}\n  http: \"127.0.0.1:9100\"\n\
         frontends:\n  web:\n    bind: [\"{vip}:8080\"]\n    http_request: ['return status 200 content-type text/plain string \"node{node}\"']\n    default_backend: app\n\
         backends:\n  app:\n"
    );
    if with_backend {
        s.push_str("    health_check: { interval: 100ms, timeout: 100ms, fall: 2, rise: 1 }\n");
    }
    s.push_str("    servers: { s1: { address: \"127.0.0.1:9000\" } }\nvrrp:\n  instances:\n");
    for i in insts {
        s.push_str(&format!(
            "    {}:\n      interface: eth0\n      vrid: {}\n      priority: {}\n      interval: 100ms\n      addresses: [{}]\n      garp: {{ repeat: 1, delay: 0s }}\n{}",
            i.name,
            i.vrid,
            i.priority,
            i.addrs.iter().map(|a| format!("{a}/24")).collect::<Vec<_>>().join(", "),
            i.track
        ));
    }
    s
}

struct Node {
    proc: Proc,
    conf: PathBuf,
    sock: PathBuf,
}

impl Node {
    fn start(lab: &Lab, i: usize, text: &str) -> Node {
        let conf = lab.dir.join(format!("node{i}.yaml"));
        std::fs::write(&conf, text).unwrap();
        let sock = lab.dir.join(format!("node{i}.sock"));
        let _ = std::fs::remove_file(&sock);
        let mut proc = lab.spawn(i, &[RAMPART, "run", "-c", conf.to_str().unwrap()]);
        proc.wait_line("VRRP INIT -> BACKUP", Duration::from_secs(20));
        Node { proc, conf, sock }
    }

    /// One runtime API command.
    fn cmd(&self, c: &str) -> String {
        let mut s = UnixStream::connect(&self.sock).unwrap();
        s.write_all(format!("{c}\n").as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    /// The `show vrrp` line of an instance, as field name -> value.
    fn vrrp(&self, inst: &str) -> std::collections::HashMap<String, String> {
        let out = self.cmd("show vrrp");
        let mut lines = out.lines();
        let head: Vec<String> = lines
            .next()
            .unwrap()
            .trim_start_matches("# ")
            .split(' ')
            .map(str::to_owned)
            .collect();
        let line = lines
            .find(|l| l.split(' ').next() == Some(inst))
            .unwrap_or_else(|| panic!("no {inst} in show vrrp:\n{out}"));
        head.into_iter()
            .zip(line.split(' ').map(str::to_owned))
            .collect()
    }

    /// Waits until the instance shows every `(field, value)` at once. The limit stretches
    /// by the time the machine stalled.
    fn wait_vrrp(&self, inst: &str, want: &[(&str, &str)], limit: Duration) {
        let b = Budget::new(limit);
        loop {
            let got = self.vrrp(inst);
            if want
                .iter()
                .all(|(f, v)| got.get(*f).map(String::as_str) == Some(*v))
            {
                return;
            }
            assert!(
                !b.spent(),
                "{inst} is {got:?}, not {want:?} after {}",
                b.show(b.elapsed())
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn reload(&self, text: &str) {
        std::fs::write(&self.conf, text).unwrap();
        let out = self.cmd("reload");
        assert!(out.contains("Configuration reloaded"), "{out}");
    }
}

fn vi(priority: u8, addrs: Vec<String>, track: &'static str) -> Inst {
    Inst {
        name: "vi_1",
        vrid: 51,
        priority,
        addrs,
        track,
    }
}

/// A client in node 3: GET http://vip:8080/ every 10 ms, printing `ok <t> <body>` or
/// `fail <t>`, until [`Client::finish`] (at most 120 s), then `done`.
struct Client {
    proc: Proc,
    stop: PathBuf,
    /// Stall seen since the client started.
    window: Budget,
}

impl Client {
    /// Starts the client; returns once node 1 (the master) has answered it: Python takes
    /// a while to start on a busy machine.
    fn start(lab: &Lab) -> Client {
        let stop = lab.dir.join("client.stop");
        let _ = std::fs::remove_file(&stop);
        let script = format!(
            "import os, time, urllib.request\n\
             end = time.monotonic() + 120\n\
             while time.monotonic() < end and not os.path.exists('{}'):\n\
             \x20   t = time.monotonic()\n\
             \x20   try:\n\
             \x20       body = urllib.request.urlopen('http://{}:8080/', timeout=0.2).read().decode()\n\
             \x20       print('ok %.4f %s' % (t, body), flush=True)\n\
             \x20   except Exception:\n\
             \x20       print('fail %.4f' % t, flush=True)\n\
             \x20   time.sleep(0.01)\n\
             print('done', flush=True)\n",
            stop.display(),
            lab.vip()
        );
        let path = lab.dir.join("client.py");
        std::fs::write(&path, script).unwrap();
        let window = Budget::new(Duration::ZERO);
        let mut proc = lab.spawn(3, &["python3", path.to_str().unwrap()]);
        proc.wait_line(" node1", Duration::from_secs(10));
        Client { proc, stop, window }
    }

    /// Waits for an answer from node 2 that comes after every line read so far.
    fn until_node2(&mut self) {
        let mut fresh = Proc::drain(&mut self.proc).len();
        let b = Budget::new(Duration::from_secs(5));
        loop {
            let seen = Proc::drain(&mut self.proc);
            if seen[fresh..].iter().any(|l| l.ends_with(" node2")) {
                return;
            }
            fresh = seen.len();
            assert!(
                !b.spent(),
                "node 2 does not answer: {}",
                b.show(b.elapsed())
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the client: (time, Some(body) or None for a failure) for each request,
    /// and the stall seen meanwhile.
    fn finish(mut self) -> (Vec<(f64, Option<String>)>, Duration) {
        std::fs::write(&self.stop, b"").unwrap();
        self.proc.wait_line("done", Duration::from_secs(10));
        let stall = self.window.settled_stall();
        let r = self
            .proc
            .seen
            .iter()
            .filter_map(|l| {
                let mut f = l.split(' ');
                match (f.next(), f.next().and_then(|t| t.parse::<f64>().ok())) {
                    (Some("ok"), Some(t)) => Some((t, Some(f.next().unwrap_or("").to_owned()))),
                    (Some("fail"), Some(t)) => Some((t, None)),
                    _ => None,
                }
            })
            .collect();
        (r, stall)
    }
}

/// Whether node 1 answered the client, and who answered last.
fn node1_then(r: &[(f64, Option<String>)]) -> (bool, Option<&str>) {
    let mut bodies = r.iter().filter_map(|x| x.1.as_deref());
    let node1 = bodies.any(|b| b == "node1");
    (node1, r.iter().filter_map(|x| x.1.as_deref()).next_back())
}

/// The longest time between two successful requests.
fn longest_gap(r: &[(f64, Option<String>)]) -> f64 {
    let oks: Vec<f64> = r.iter().filter(|x| x.1.is_some()).map(|x| x.0).collect();
    oks.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max)
}

#[test]
fn a_client_keeps_reaching_the_vip_across_failovers() {
    if !privileged(&["python3"]) {
        return;
    }
    let lab = Lab::new(3);
    let vip = lab.vip();
    let n1 = Node::start(
        &lab,
        1,
        &config(&lab, 1, &[vi(150, vec![vip.clone()], "")], false),
    );
    let mut n2 = Node::start(
        &lab,
        2,
        &config(&lab, 2, &[vi(100, vec![vip.clone()], "")], false),
    );
    lab.until_holder(1, Duration::from_secs(3));
    // Node 2 learns the master's address from its adverts. A stall longer than the
    // master-down interval may make node 2 Master for a moment; node 1 then preempts.
    let node1 = lab.addr(1);
    let backup = [("state", "BACKUP"), ("master", node1.as_str())];
    n1.wait_vrrp("vi_1", &[("state", "MASTER")], Duration::from_secs(1));
    n2.wait_vrrp("vi_1", &backup, Duration::from_secs(3));
    let v = n2.vrrp("vi_1");
    assert!(v["adverts_received"].parse::<u64>().unwrap() > 0, "{v:?}");

    // A clean stop of the master: node 2 serves after Skew_Time.
    let mut c = Client::start(&lab);
    n1.proc.stop("TERM");
    lab.until_holder(2, Duration::from_secs(1));
    c.until_node2();
    let (r, clean_stall) = c.finish();
    let clean = longest_gap(&r);
    assert_eq!(node1_then(&r), (true, Some("node2")), "{r:?}");

    // Node 1 returns and preempts.
    let n1 = Node::start(
        &lab,
        1,
        &config(&lab, 1, &[vi(150, vec![vip.clone()], "")], false),
    );
    lab.until_holder(1, Duration::from_secs(2));
    n2.proc
        .wait_line("VRRP MASTER -> BACKUP", Duration::from_secs(1));

    // Node 1 dies (the process is killed and its link goes down): node 2 serves after
    // Master_Down_Interval.
    let mut c = Client::start(&lab);
    n1.proc.stop("KILL");
    lab::ip(&["-n", &lab.ns[1], "link", "set", "eth0", "down"]);
    lab.until_holds(2, Duration::from_secs(1));
    c.until_node2();
    let (r, crash_stall) = c.finish();
    let crash = longest_gap(&r);
    let failed = r.iter().filter(|x| x.1.is_none()).count();
    assert_eq!(node1_then(&r), (true, Some("node2")), "{r:?}");
    println!(
        "client outage: clean stop {:.0} ms (Skew_Time 61 ms), crash {:.0} ms (Master_Down_Interval 361 ms), {failed} failed requests of {}; machine stalls {clean_stall:?} and {crash_stall:?}",
        clean * 1000.0,
        crash * 1000.0,
        r.len()
    );
    // The outage is the protocol's interval plus the client's own retry period (10 ms
    // sleep, 200 ms timeout) and ARP, plus whatever the machine stalled meanwhile.
    let within = |gap: f64, bound: f64, stall: Duration| gap < bound + stall.as_secs_f64();
    assert!(
        within(clean, 0.061 + 0.4, clean_stall),
        "clean-stop outage {clean:.3} s (stall {clean_stall:?})"
    );
    assert!(
        within(crash, 0.361 + 0.5, crash_stall),
        "crash outage {crash:.3} s (stall {crash_stall:?})"
    );
}

#[test]
fn a_tracked_backend_without_servers_moves_the_vip_and_reload_applies_in_place() {
    if !privileged(&["python3"]) {
        return;
    }
    let lab = Lab::new(2);
    let vip = lab.vip();
    let track = "      track: [{ backend: app, weight: -100 }]\n";
    let origin = |i: usize| {
        lab.spawn(
            i,
            &[
                "python3",
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                "9000",
            ],
        )
    };
    let o1 = origin(1);
    let _o2 = origin(2);
    let n1 = Node::start(
        &lab,
        1,
        &config(&lab, 1, &[vi(150, vec![vip.clone()], track)], true),
    );
    let mut n2 = Node::start(
        &lab,
        2,
        &config(&lab, 2, &[vi(100, vec![vip.clone()], track)], true),
    );
    lab.until_holder(1, Duration::from_secs(3));

    // Every server of the tracked backend stops on the master: 150 - 100 = 50 < 100.
    let t = Instant::now();
    o1.stop("KILL");
    lab.until_holder(2, Duration::from_secs(3));
    let moved = t.elapsed();
    let v = n1.vrrp("vi_1");
    assert_eq!(
        (
            v["effective_priority"].as_str(),
            v["tracking_failed"].as_str()
        ),
        ("50", "backend:app"),
        "{v:?}"
    );
    // The server comes back: node 1 has 150 again and preempts.
    let _o1 = origin(1);
    lab.until_holder(1, Duration::from_secs(3));
    n1.wait_vrrp("vi_1", &[("tracking_failed", "-")], Duration::from_secs(1));

    // Reload: node 2 now has priority 200 and a second address; node 1 gets the same
    // address list. Node 2 preempts without a restart and holds both addresses.
    let vip2 = lab.addr(101);
    let both = vec![vip.clone(), vip2.clone()];
    n1.reload(&config(&lab, 1, &[vi(150, both.clone(), track)], true));
    n2.reload(&config(&lab, 2, &[vi(200, both, track)], true));
    lab.until_sole_holder_of(2, &vip2, Duration::from_secs(3));
    lab.until_holder(2, Duration::from_secs(1));
    n2.wait_vrrp("vi_1", &[("priority", "200")], Duration::from_secs(1));
    let v = n2.vrrp("vi_1");
    assert_eq!(v["addresses"], format!("{vip}/24,{vip2}/24"), "{v:?}");
    n2.proc
        .wait_line("VRRP settings updated", Duration::from_secs(1));
    assert!(
        !n2.proc
            .seen
            .iter()
            .any(|l| l.contains("stopping VRRP instance")),
        "the instance was restarted instead of reconfigured"
    );
    // The stats page and /metrics show the instance (fetched inside node 2).
    let fetch = |path: &str| {
        let code = format!(
            "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9100{path}').read().decode())"
        );
        let p = lab.spawn(2, &["python3", "-c", &code]);
        // The channel closes when the process has exited and its output is read.
        p.lines.iter().collect::<Vec<_>>().join("\n")
    };
    let metrics = fetch("/metrics");
    for want in [
        "rampart_vrrp_state{instance=\"vi_1\",state=\"master\"} 1",
        "rampart_vrrp_priority{instance=\"vi_1\"} 200",
        "rampart_vrrp_transitions_total{instance=\"vi_1\"}",
    ] {
        assert!(metrics.contains(want), "no {want} in /metrics:\n{metrics}");
    }
    let page = fetch("/stats");
    assert!(
        page.contains("<h2>VRRP</h2>") && page.contains("<td class=\"name\">vi_1</td>"),
        "no VRRP table on the stats page:\n{page}"
    );
    println!("tracked backend down: the VIP moved in {moved:?}");
}

#[test]
fn dual_master_each_node_keeps_its_own_vip() {
    if !privileged(&[]) {
        return;
    }
    let lab = Lab::new(2);
    let (va, vb) = (lab.vip(), lab.addr(101));
    let insts = |pa: u8, pb: u8| {
        [
            Inst {
                name: "vi_a",
                vrid: 51,
                priority: pa,
                addrs: vec![va.clone()],
                track: "",
            },
            Inst {
                name: "vi_b",
                vrid: 52,
                priority: pb,
                addrs: vec![vb.clone()],
                track: "",
            },
        ]
    };
    let n1 = Node::start(&lab, 1, &config(&lab, 1, &insts(150, 100), false));
    let n2 = Node::start(&lab, 2, &config(&lab, 2, &insts(100, 150), false));
    lab.until_sole_holder_of(1, &va, Duration::from_secs(3));
    lab.until_sole_holder_of(2, &vb, Duration::from_secs(3));
    let before = n2.vrrp("vi_b")["transitions"].clone();

    // Node 1 crashes: its VIP moves to node 2; node 2's own VIP never moves.
    let t = Instant::now();
    n1.proc.stop("KILL");
    lab.until_holds(2, Duration::from_secs(1));
    let moved = t.elapsed();
    assert!(lab.holds_addr(2, &vb));
    assert_eq!(n2.vrrp("vi_b")["transitions"], before);
    n2.wait_vrrp("vi_a", &[("state", "MASTER")], Duration::from_secs(1));
    println!("dual master: node 1's VIP moved to node 2 in {moved:?}; node 2's VIP stayed");
}

#[test]
fn an_upgrade_keeps_the_node_master_without_a_priority_0_advert() {
    if !privileged(&["python3", "tshark"]) {
        return;
    }
    let lab = Lab::new(3);
    let vip = lab.vip();
    let mut n1 = Node::start(
        &lab,
        1,
        &config(&lab, 1, &[vi(150, vec![vip.clone()], "")], false),
    );
    let n2 = Node::start(
        &lab,
        2,
        &config(&lab, 2, &[vi(100, vec![vip.clone()], "")], false),
    );
    lab.until_holder(1, Duration::from_secs(3));
    n1.wait_vrrp("vi_1", &[("state", "MASTER")], Duration::from_secs(1));
    n2.wait_vrrp("vi_1", &[("state", "BACKUP")], Duration::from_secs(3));
    let transitions = n2.vrrp("vi_1")["transitions"].clone();
    let pid = |n: &Node| -> u32 {
        n.cmd("show info")
            .lines()
            .find_map(|l| l.strip_prefix("Pid: "))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let old = pid(&n1);

    let cap = lab.capture();
    let c = Client::start(&lab);
    let answer = n1.cmd("upgrade");
    assert!(answer.starts_with("Upgrade done: process "), "{answer}");
    let new = pid(&n1);
    assert_ne!(new, old);
    // The new process is not the test's child: it is stopped by pid, whatever happens.
    struct Kill(u32);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &self.0.to_string()])
                .status();
        }
    }
    let _kill = Kill(new);
    n1.proc.wait_line("stopped", Duration::from_secs(10));
    n1.wait_vrrp("vi_1", &[("state", "MASTER")], Duration::from_secs(1));
    // A few adverts from the new process.
    std::thread::sleep(Duration::from_millis(500));
    let (r, _) = c.finish();
    let ads = cap.finish();

    let node1 = lab.addr(1);
    let node2 = lab.addr(2);
    assert!(
        !ads.iter().any(|a| a.src == node1 && a.priority == 0),
        "a priority-0 advert: {ads:?}"
    );
    assert!(
        !ads.iter().any(|a| a.src == node2),
        "node 2 advertised: {ads:?}"
    );
    assert!(ads.iter().filter(|a| a.src == node1).count() > 3, "{ads:?}");
    assert!(lab.holds_addr(1, &vip) && !lab.holds_addr(2, &vip));
    assert_eq!(n2.vrrp("vi_1")["transitions"], transitions);
    // Every request answered, by node 1.
    let failed = r.iter().filter(|x| x.1.is_none()).count();
    assert_eq!(failed, 0, "{r:?}");
    assert!(r.iter().all(|x| x.1.as_deref() == Some("node1")), "{r:?}");
    // The longest advert gap from node 1 across the hand-over, next to its interval.
    let times: Vec<f64> = ads
        .iter()
        .filter(|a| a.src == node1)
        .map(|a| a.time)
        .collect();
    let gap = times.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    println!(
        "upgrade: node 1 stayed Master; longest advert gap {:.0} ms (interval 100 ms); {} requests, 0 failed",
        gap * 1000.0,
        r.len()
    );
}
