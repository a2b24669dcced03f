//! Two speakers in network namespaces on a private bridge: who holds the virtual address,
//! and how fast it moves on a crash, a clean stop and a return, with and without
//! preemption, and with equal priorities. Root only: the tests skip with a reason when
//! not root, and fail instead when RAMPART_REQUIRE_PRIVILEGED=1.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn privileged() -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false);
    let ip = Command::new("ip")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if root && ip {
        return true;
    }
    let why = if !root {
        "not root"
    } else {
        "no `ip` command (iproute2)"
    };
    assert!(
        std::env::var("RAMPART_REQUIRE_PRIVILEGED").as_deref() != Ok("1"),
        "network namespace tests need root and iproute2: {why}"
    );
    println!("skipped: {why}");
    false
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A bridge namespace and two node namespaces `a` (10.77.N.1) and `b` (10.77.N.2).
struct Lab {
    ns: [String; 3],
    net: u8,
    /// The bridge ports of a and b.
    ports: Vec<String>,
}

const VIP_HOST: u8 = 100;

impl Lab {
    fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let tag = format!("{}x{n}", std::process::id() % 100_000);
        let ns = [
            format!("rvbr{tag}"),
            format!("rva{tag}"),
            format!("rvb{tag}"),
        ];
        let net = 10 + n as u8;
        let lab = Lab {
            ns,
            net,
            ports: (0..2).map(|i| format!("p{tag}{i}")).collect(),
        };
        for s in &lab.ns {
            ip(&["netns", "add", s]);
            ip(&["-n", s, "link", "set", "lo", "up"]);
        }
        let br = &lab.ns[0];
        ip(&["-n", br, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", br, "link", "set", "br0", "up"]);
        for (i, node) in lab.ns[1..].iter().enumerate() {
            let (v, p) = (format!("v{tag}{i}"), format!("p{tag}{i}"));
            ip(&["link", "add", &v, "type", "veth", "peer", "name", &p]);
            ip(&["link", "set", &v, "netns", node]);
            ip(&["link", "set", &p, "netns", br]);
            ip(&["-n", node, "link", "set", &v, "name", "eth0"]);
            let addr = format!("10.77.{}.{}/24", lab.net, i + 1);
            ip(&["-n", node, "addr", "add", &addr, "dev", "eth0"]);
            ip(&["-n", node, "link", "set", "eth0", "up"]);
            ip(&["-n", br, "link", "set", &p, "master", "br0"]);
            ip(&["-n", br, "link", "set", &p, "up"]);
        }
        lab
    }

    /// Cuts (or restores) the bridge between the nodes.
    fn partition(&self, cut: bool) {
        for p in &self.ports {
            ip(&[
                "-n",
                &self.ns[0],
                "link",
                "set",
                p,
                if cut { "down" } else { "up" },
            ]);
        }
    }

    fn vip(&self) -> String {
        format!("10.77.{}.{VIP_HOST}", self.net)
    }

    /// Whether node `i` (1 = a, 2 = b) holds the virtual address.
    fn holds(&self, i: usize) -> bool {
        let out = Command::new("ip")
            .args(["-n", &self.ns[i], "-4", "addr", "show", "dev", "eth0"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains(&format!("inet {}/", self.vip()))
    }

    fn speaker(&self, i: usize, priority: u8, extra: &[&str]) -> Speaker {
        let mut c = Command::new("ip");
        c.args([
            "netns",
            "exec",
            &self.ns[i],
            env!("CARGO_BIN_EXE_rampart-vrrp-speaker"),
        ])
        .args([
            "--interface",
            "eth0",
            "--vrid",
            "51",
            "--interval-ms",
            "100",
        ])
        .args(["--priority", &priority.to_string()])
        .args(["--vip", &format!("{}/24", self.vip())])
        .args(["--garp-repeat", "1"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        let mut child = c.spawn().unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        Speaker { child, lines: rx }
    }

    /// Waits until exactly node `i` holds the address; returns how long it took.
    fn until_holder(&self, i: usize, limit: Duration) -> Duration {
        let t = Instant::now();
        let other = 3 - i;
        while t.elapsed() < limit {
            if self.holds(i) && !self.holds(other) {
                return t.elapsed();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!(
            "after {limit:?}: a holds {}, b holds {}",
            self.holds(1),
            self.holds(2)
        );
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for s in &self.ns {
            let _ = Command::new("ip").args(["netns", "del", s]).status();
        }
    }
}

struct Speaker {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Speaker {
    fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    }

    fn wait_state(&self, state: &str, limit: Duration) {
        let t = Instant::now();
        while t.elapsed() < limit {
            if let Ok(l) = self.lines.recv_timeout(Duration::from_millis(50))
                && l.split_whitespace().nth(3) == Some(state)
            {
                return;
            }
        }
        panic!("no transition to {state} within {limit:?}");
    }
}

impl Drop for Speaker {
    fn drop(&mut self) {
        // `ip netns exec` execs the speaker, so this is the speaker's own PID.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// v3, 0.1 s adverts: MDI(100) = 0.361 s, Skew(100) = 0.061 s, MDI(150) = 0.341 s.
const SLACK: Duration = Duration::from_millis(400);

#[test]
fn crash_clean_stop_and_preemption() {
    if !privileged() {
        return;
    }
    let lab = Lab::new();
    let a = lab.speaker(1, 150, &[]);
    let b = lab.speaker(2, 100, &[]);
    a.wait_state("MASTER", Duration::from_secs(5));
    lab.until_holder(1, Duration::from_secs(5));
    b.wait_state("BACKUP", Duration::from_secs(1));

    // Crash: b takes over within Master_Down_Interval (the VIP stays on a, as with
    // keepalived after SIGKILL, so only b is checked here).
    let mut a = a;
    a.signal("KILL");
    let _ = a.child.wait();
    let t = Instant::now();
    while !lab.holds(2) {
        assert!(
            t.elapsed() < Duration::from_millis(361) + SLACK,
            "no takeover after a crash"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let crash = t.elapsed();

    // a returns: it removes its stale address at start and preempts after MDI(150).
    let a = lab.speaker(1, 150, &[]);
    let back = lab.until_holder(1, Duration::from_millis(341) + Duration::from_secs(2));
    a.wait_state("MASTER", Duration::from_secs(1));

    // Clean stop: priority 0, b takes over after Skew_Time.
    a.signal("TERM");
    let t = Instant::now();
    lab.until_holder(2, Duration::from_millis(61) + SLACK);
    let clean = t.elapsed();
    println!("takeover after crash {crash:?}, preemption {back:?}, clean stop {clean:?}");
    drop(b);
}

#[test]
fn nopreempt_keeps_the_master_and_equal_priorities_resolve_by_address() {
    if !privileged() {
        return;
    }
    let lab = Lab::new();
    let b = lab.speaker(2, 100, &[]);
    lab.until_holder(2, Duration::from_secs(3));
    // A higher priority with nopreempt does not take over.
    let a = lab.speaker(1, 150, &["--nopreempt"]);
    a.wait_state("BACKUP", Duration::from_secs(2));
    std::thread::sleep(Duration::from_millis(1500));
    assert!(lab.holds(2) && !lab.holds(1), "nopreempt took over");
    drop(a);
    drop(b);

    // Equal priorities: a Backup does not tie-break, so whoever is Master stays; two
    // Masters (after a partition) resolve to the higher address (b) within one interval.
    let lab = Lab::new();
    lab.partition(true);
    let a = lab.speaker(1, 100, &[]);
    let b = lab.speaker(2, 100, &[]);
    a.wait_state("MASTER", Duration::from_secs(3));
    b.wait_state("MASTER", Duration::from_secs(3));
    assert!(
        lab.holds(1) && lab.holds(2),
        "both hold the address while partitioned"
    );
    lab.partition(false);
    let t = Instant::now();
    lab.until_holder(2, Duration::from_secs(2));
    println!(
        "double master resolved {:?} after the partition healed",
        t.elapsed()
    );
    a.wait_state("BACKUP", Duration::from_secs(1));
}
