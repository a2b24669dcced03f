//! A VRRP lab in network namespaces: a bridge namespace and node namespaces on a private
//! 10.77.N.0/24 (node i is 10.77.N.i), with helpers to start processes inside nodes,
//! watch who holds an address, cut VRRP with nftables, and capture adverts with tshark.
//! Root only: [`privileged`] skips with a reason when not root, and fails instead when
//! RAMPART_REQUIRE_PRIVILEGED=1.

#![allow(dead_code)]

pub mod stall;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use stall::Budget;

/// Whether the tests can run; `tools` are further commands they need.
pub fn privileged(tools: &[&str]) -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false);
    let missing: Vec<&str> = ["ip"]
        .iter()
        .chain(tools)
        .copied()
        .filter(|t| !have(t))
        .collect();
    if root && missing.is_empty() {
        return true;
    }
    let why = if !root {
        "not root".to_string()
    } else {
        format!("missing commands: {}", missing.join(", "))
    };
    assert!(
        std::env::var("RAMPART_REQUIRE_PRIVILEGED").as_deref() != Ok("1"),
        "network namespace tests need root and their tools: {why}"
    );
    println!("skipped: {why}");
    false
}

fn have(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
        || ["/usr/sbin", "/sbin"]
            .iter()
            .any(|d| Path::new(d).join(tool).is_file())
}

pub fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn ip(args: &[&str]) {
    run("ip", args);
}

pub const VIP_HOST: u8 = 100;

pub struct Lab {
    /// The bridge namespace, then the nodes.
    pub ns: Vec<String>,
    pub net: u8,
    pub dir: PathBuf,
    /// One lab at a time per test process: the tests measure protocol timings (skew
    /// and master-down intervals of a few hundred ms), which two labs of daemons and
    /// clients sharing two cores would blur.
    _turn: std::sync::MutexGuard<'static, ()>,
}

impl Lab {
    /// A bridge and `nodes` node namespaces, each with eth0 on the bridge.
    pub fn new(nodes: usize) -> Self {
        static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
        static N: AtomicUsize = AtomicUsize::new(0);
        let turn = TURN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id() % 100_000;
        let tag = format!("{pid}x{n}");
        let mut ns = vec![format!("rvbr{tag}")];
        ns.extend((1..=nodes).map(|i| format!("rv{i}n{tag}")));
        // Distinct subnets across concurrently running tests and processes.
        let net = 10 + ((pid as usize * 7 + n) % 200) as u8;
        let dir = std::env::temp_dir().join(format!("rampart-lab-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let lab = Lab {
            ns,
            net,
            dir,
            _turn: turn,
        };
        for s in &lab.ns {
            let _ = Command::new("ip")
                .args(["netns", "del", s])
                .stderr(Stdio::null())
                .status();
            ip(&["netns", "add", s]);
            ip(&["-n", s, "link", "set", "lo", "up"]);
        }
        let br = &lab.ns[0];
        ip(&["-n", br, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", br, "link", "set", "br0", "up"]);
        for i in 1..=nodes {
            // Both ends are created in the root namespace first: unique names there.
            let (v, p) = (format!("v{tag}y{i}"), format!("p{tag}y{i}"));
            let node = &lab.ns[i];
            ip(&["link", "add", &v, "type", "veth", "peer", "name", &p]);
            ip(&["link", "set", &v, "netns", node]);
            ip(&["link", "set", &p, "netns", br]);
            ip(&["-n", node, "link", "set", &v, "name", "eth0"]);
            let addr = format!("10.77.{}.{i}/24", lab.net);
            ip(&["-n", node, "addr", "add", &addr, "dev", "eth0"]);
            ip(&["-n", node, "link", "set", "eth0", "up"]);
            ip(&["-n", br, "link", "set", &p, "master", "br0"]);
            ip(&["-n", br, "link", "set", &p, "up"]);
        }
        lab
    }

    pub fn addr(&self, host: u8) -> String {
        format!("10.77.{}.{host}", self.net)
    }

    pub fn vip(&self) -> String {
        self.addr(VIP_HOST)
    }

    /// Drops (or lets through again) IP protocol 112 between the bridge ports, with
    /// nftables in the bridge namespace: the "firewall eats VRRP" split brain.
    pub fn drop_vrrp(&self, on: bool) {
        let br = &self.ns[0];
        if on {
            let rules = "table bridge rampart_lab {\n chain forward {\n  type filter hook forward priority 0; policy accept;\n  ip protocol 112 counter drop\n }\n}\n";
            let path = self.dir.join("drop-vrrp.nft");
            std::fs::write(&path, rules).unwrap();
            run(
                "ip",
                &["netns", "exec", br, "nft", "-f", path.to_str().unwrap()],
            );
        } else {
            run(
                "ip",
                &[
                    "netns",
                    "exec",
                    br,
                    "nft",
                    "delete",
                    "table",
                    "bridge",
                    "rampart_lab",
                ],
            );
        }
    }

    /// Addresses on node `i`'s eth0.
    pub fn addrs(&self, i: usize) -> String {
        let out = Command::new("ip")
            .args(["-n", &self.ns[i], "-4", "addr", "show", "dev", "eth0"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Whether node `i` holds `vip`.
    pub fn holds_addr(&self, i: usize, vip: &str) -> bool {
        self.addrs(i).contains(&format!("inet {vip}/"))
    }

    pub fn holds(&self, i: usize) -> bool {
        self.holds_addr(i, &self.vip())
    }

    /// Waits until node `i` is the only node holding `vip`; returns how long it took.
    /// The limit stretches by the time the machine stalled (see [`stall`]).
    pub fn until_sole_holder_of(&self, i: usize, vip: &str, limit: Duration) -> Duration {
        let b = Budget::new(limit);
        let nodes = self.ns.len() - 1;
        let done = || (1..=nodes).all(|n| self.holds_addr(n, vip) == (n == i));
        while !b.spent() {
            if done() {
                return b.elapsed();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if done() {
            return b.elapsed();
        }
        let who: Vec<String> = (1..=nodes)
            .map(|n| format!("node {n}: {}", self.holds_addr(n, vip)))
            .collect();
        panic!(
            "{vip} not held by node {i} alone after {}: {who:?}",
            b.show(b.elapsed())
        );
    }

    pub fn until_holder(&self, i: usize, limit: Duration) -> Duration {
        self.until_sole_holder_of(i, &self.vip(), limit)
    }

    /// Waits until node `i` holds the VIP (whoever else does); returns the time taken.
    /// The limit stretches by the time the machine stalled.
    pub fn until_holds(&self, i: usize, limit: Duration) -> Duration {
        let b = Budget::new(limit);
        while !self.holds(i) {
            assert!(
                !b.spent() || self.holds(i),
                "node {i} does not hold the VIP after {}",
                b.show(b.elapsed())
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        b.elapsed()
    }

    /// Starts `argv` inside node `i` (0: the bridge); stdout lines are collected.
    pub fn spawn(&self, i: usize, argv: &[&str]) -> Proc {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns[i]])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        let (tx, rx) = mpsc::channel();
        for r in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for l in BufReader::new(r).lines().map_while(Result::ok) {
                    if std::env::var_os("RAMPART_LAB_VERBOSE").is_some() {
                        eprintln!("| {l}");
                    }
                    let _ = tx.send(l);
                }
            });
        }
        Proc {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// The rampart-vrrp-speaker binary (when built alongside).
    pub fn speaker(&self, bin: &str, i: usize, priority: u8, extra: &[&str]) -> Proc {
        let prio = priority.to_string();
        let vip = format!("{}/24", self.vip());
        let mut argv = vec![
            bin,
            "--interface",
            "eth0",
            "--vrid",
            "51",
            "--interval-ms",
            "100",
            "--priority",
            &prio,
            "--vip",
            &vip,
            "--garp-repeat",
            "1",
        ];
        argv.extend_from_slice(extra);
        self.spawn(i, &argv)
    }

    /// keepalived (VRRP only, in the foreground, logging to the console) in node `i`.
    pub fn keepalived(&self, i: usize, k: &Keepalived) -> Proc {
        let conf = self.dir.join(format!("keepalived-{i}.conf"));
        let interval = if k.interval_ms.is_multiple_of(1000) {
            format!("{}", k.interval_ms / 1000)
        } else {
            format!("{:.2}", k.interval_ms as f64 / 1000.0)
        };
        let text = format!(
            "global_defs {{\n  router_id node{i}\n  vrrp_version {version}\n  vrrp_garp_master_repeat 1\n  vrrp_garp_master_delay 0\n}}\n\
             vrrp_instance VI_1 {{\n  state BACKUP\n  interface eth0\n  virtual_router_id 51\n  priority {prio}\n  advert_int {interval}\n  {nopreempt}\n  virtual_ipaddress {{\n    {vip}/24 dev eth0\n  }}\n}}\n",
            version = k.version,
            prio = k.priority,
            nopreempt = if k.preempt { "" } else { "nopreempt" },
            vip = self.vip(),
        );
        std::fs::write(&conf, text).unwrap();
        let pid = |n: &str| {
            self.dir
                .join(format!("keepalived-{i}-{n}.pid"))
                .to_str()
                .unwrap()
                .to_string()
        };
        let (p1, p2, p3) = (pid("main"), pid("vrrp"), pid("check"));
        // A killed daemon leaves its pid files behind; a reused pid would look alive.
        for p in [&p1, &p2, &p3] {
            let _ = std::fs::remove_file(p);
        }
        self.spawn(
            i,
            &[
                "keepalived",
                "--dont-fork",
                "--log-console",
                "--log-detail",
                "--vrrp",
                "--dont-respawn",
                "--use-file",
                conf.to_str().unwrap(),
                "--pid",
                &p1,
                "--vrrp_pid",
                &p2,
                "--checkers_pid",
                &p3,
            ],
        )
    }

    /// Captures VRRP on the bridge until [`Capture::finish`].
    pub fn capture(&self) -> Capture {
        let file = self.dir.join(format!(
            "vrrp-{}.pcap",
            CAPTURES.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_file(&file);
        let mut p = self.spawn(
            0,
            &[
                "tshark",
                "-i",
                "br0",
                "-f",
                "ip proto 112",
                "-F",
                "pcap",
                "-w",
                file.to_str().unwrap(),
            ],
        );
        p.wait_line("Capturing on", Duration::from_secs(20));
        Capture { proc: p, file }
    }
}

static CAPTURES: AtomicUsize = AtomicUsize::new(0);

impl Drop for Lab {
    fn drop(&mut self) {
        for s in &self.ns {
            let _ = Command::new("ip").args(["netns", "del", s]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// keepalived settings for one node.
pub struct Keepalived {
    pub version: u8,
    pub priority: u8,
    pub interval_ms: u64,
    pub preempt: bool,
}

/// A process started in a namespace.
pub struct Proc {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        // `ip netns exec` execs the command, so this is the command's own PID.
        self.child.id()
    }

    pub fn signal(&self, sig: &str) {
        signal_pid(self.pid(), sig);
    }

    /// Waits for an output line containing `needle`; returns it. The limit stretches by
    /// the time the machine stalled.
    pub fn wait_line(&mut self, needle: &str, limit: Duration) -> String {
        let b = Budget::new(limit);
        if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        while !b.spent() {
            if let Ok(l) = self.lines.recv_timeout(Duration::from_millis(20)) {
                self.seen.push(l.clone());
                if l.contains(needle) {
                    return l;
                }
            }
        }
        panic!(
            "no line with {needle:?} within {}; output so far:\n{}",
            b.show(b.elapsed()),
            self.seen.join("\n")
        );
    }

    /// Takes in every line printed so far; returns them all.
    pub fn drain(&mut self) -> &[String] {
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
        &self.seen
    }

    /// Waits for a `STATE <instance> <from> <to> <priority>` line going to `state`.
    /// The limit stretches by the time the machine stalled.
    pub fn wait_state(&mut self, state: &str, limit: Duration) {
        let b = Budget::new(limit);
        while !b.spent() {
            if let Ok(l) = self.lines.recv_timeout(Duration::from_millis(20)) {
                self.seen.push(l.clone());
                if l.starts_with("STATE ") && l.split_whitespace().nth(3) == Some(state) {
                    return;
                }
            }
        }
        panic!(
            "no transition to {state} within {}; output so far:\n{}",
            b.show(b.elapsed()),
            self.seen.join("\n")
        );
    }

    /// Stops with `sig` and waits for the exit.
    pub fn stop(mut self, sig: &str) {
        self.signal(sig);
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("process {} did not exit after SIG{sig}", self.pid());
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn signal_pid(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success(), "kill -{sig} {pid}");
}

/// The VRRP child process of a keepalived started by [`Lab::keepalived`].
pub fn keepalived_vrrp_pid(lab: &Lab, i: usize) -> u32 {
    let f = lab.dir.join(format!("keepalived-{i}-vrrp.pid"));
    let t = Instant::now();
    loop {
        if let Some(p) = std::fs::read_to_string(&f)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return p;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "no {}", f.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub struct Capture {
    proc: Proc,
    file: PathBuf,
}

/// One captured advert, as tshark decodes it.
#[derive(Debug, Clone)]
pub struct Advert {
    pub time: f64,
    pub src: String,
    pub version: u8,
    pub priority: u8,
    /// tshark's verdict on the checksum ("Good", "Bad", ...).
    pub checksum: String,
    pub ttl: u8,
    pub interval: String,
    pub addrs: String,
}

impl Capture {
    /// Stops the capture and decodes it.
    pub fn finish(self) -> Vec<Advert> {
        let Capture { proc, file } = self;
        proc.signal("INT");
        let mut proc = proc;
        let _ = proc.child.wait();
        let out = Command::new("tshark")
            .args(["-r", file.to_str().unwrap(), "-Y", "vrrp", "-T", "fields"])
            .args(["-E", "separator=|"])
            .args([
                "-e",
                "frame.time_epoch",
                "-e",
                "ip.src",
                "-e",
                "vrrp.version",
                "-e",
                "vrrp.prio",
                "-e",
                "vrrp.checksum.status",
                "-e",
                "ip.ttl",
                "-e",
                "vrrp.adver_int",
                "-e",
                "vrrp.ip_addr",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tshark -r: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split('|').collect();
                (f.len() >= 8).then(|| Advert {
                    time: f[0].parse().unwrap_or(0.0),
                    src: f[1].to_string(),
                    version: f[2].parse().unwrap_or(0),
                    priority: f[3].parse().unwrap_or(0),
                    checksum: match f[4] {
                        "0" => "Bad".into(),
                        "1" => "Good".into(),
                        "2" => "Unverified".into(),
                        s => s.to_string(),
                    },
                    ttl: f[5].parse().unwrap_or(0),
                    interval: f[6].to_string(),
                    addrs: f[7].to_string(),
                })
            })
            .collect()
    }
}

/// Seconds between the last advert from `old` (with `old_priority` if given) and the
/// first advert from `new` after it.
pub fn gap(ads: &[Advert], old: &str, old_priority: Option<u8>, new: &str) -> Option<f64> {
    let last = ads
        .iter()
        .filter(|a| a.src == old && old_priority.is_none_or(|p| a.priority == p))
        .map(|a| a.time)
        .fold(None, |m: Option<f64>, t| Some(m.map_or(t, |m| m.max(t))))?;
    ads.iter()
        .filter(|a| a.src == new && a.time > last)
        .map(|a| a.time - last)
        .next()
}
