//! One virtual router on the wire: the state machine driven by received adverts and its
//! timers, its actions carried out (adverts sent, addresses added with gratuitous ARP or
//! removed), transitions reported as events, to a notify script, and in counters.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc};

use crate::machine::{Action, Config, Input, Machine, State};
use crate::os::{self, Iface, Netlink, VrrpSocket};
use crate::packet::{self, Advert, Checksum, GROUP, Version};

/// Settings of one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceConfig {
    pub name: String,
    pub interface: String,
    pub version: Version,
    pub vrid: u8,
    pub priority: u8,
    pub interval: Duration,
    pub preempt: bool,
    pub preempt_delay: Duration,
    /// Virtual addresses with their prefix lengths.
    pub vips: Vec<(Ipv4Addr, u8)>,
    pub checksum: Checksum,
    /// Send adverts to these addresses instead of the multicast group.
    pub unicast_peers: Vec<Ipv4Addr>,
    /// Gratuitous ARPs per address on becoming Master, and again after `garp_delay`.
    pub garp_repeat: u32,
    pub garp_delay: Duration,
    /// Repeat gratuitous ARPs this often while Master.
    pub garp_refresh: Option<Duration>,
    /// Run as `script <instance> <state> <priority>` on each state change.
    pub notify: Option<PathBuf>,
}

/// A state change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub instance: String,
    pub from: State,
    pub to: State,
    pub priority: u8,
}

/// Counters and state, for `show vrrp`, the stats page and metrics.
#[derive(Debug, Default)]
pub struct Stats {
    state: AtomicU8,
    pub priority: AtomicU8,
    pub adverts_sent: AtomicU64,
    pub adverts_received: AtomicU64,
    /// Received packets dropped as invalid or not ours.
    pub errors: AtomicU64,
    pub transitions: AtomicU64,
    pub master: Mutex<Option<Ipv4Addr>>,
    pub last_transition: Mutex<Option<std::time::SystemTime>>,
}

impl Stats {
    pub fn state(&self) -> State {
        match self.state.load(Relaxed) {
            1 => State::Backup,
            2 => State::Master,
            3 => State::Fault,
            _ => State::Initialize,
        }
    }
}

/// Commands to a running instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Stop cleanly: a Master sends priority 0 and releases its addresses.
    Shutdown,
    /// Stop for a process that takes over (a binary upgrade): no priority-0 advert, the
    /// addresses stay, so the node stays Master for its peers.
    HandOver,
    /// Effective priority (after tracking weights).
    Priority(u8),
    /// Tracked objects failed or recovered.
    Fault(bool),
    /// New settings with the same interface, VRID, version, checksum and addressing
    /// (multicast or unicast) — see [`InstanceConfig::same_router`]. A Master moves to
    /// the new address list at once (removed ones released, new ones added and
    /// announced); the interval and preemption settings apply from now on. The priority
    /// is not taken from here: send [`Command::Priority`].
    Reconfigure(Box<InstanceConfig>),
}

impl InstanceConfig {
    /// Whether `other` can be applied to a running instance of `self` with
    /// [`Command::Reconfigure`] rather than by restarting it.
    pub fn same_router(&self, other: &InstanceConfig) -> bool {
        self.interface == other.interface
            && self.vrid == other.vrid
            && self.version == other.version
            && self.checksum == other.checksum
            && self.unicast_peers.is_empty() == other.unicast_peers.is_empty()
    }
}

/// A running instance.
pub struct Handle {
    pub stats: Arc<Stats>,
    commands: mpsc::UnboundedSender<Command>,
    task: tokio::task::JoinHandle<()>,
}

impl Handle {
    pub fn send(&self, c: Command) {
        let _ = self.commands.send(c);
    }

    /// Stops cleanly and waits for the adverts and address removal to be done.
    pub async fn shutdown(self) {
        let _ = self.commands.send(Command::Shutdown);
        let _ = self.task.await;
    }

    /// Stops without a word on the wire and leaves the addresses in place (see
    /// [`Command::HandOver`]).
    pub async fn hand_over(self) {
        let _ = self.commands.send(Command::HandOver);
        let _ = self.task.await;
    }
}

struct Runner {
    cfg: InstanceConfig,
    iface: Iface,
    nl: Netlink,
    sock: VrrpSocket,
    primary: Ipv4Addr,
    stats: Arc<Stats>,
    events: broadcast::Sender<Event>,
    garp_again: Option<tokio::time::Instant>,
    garp_next_refresh: Option<tokio::time::Instant>,
}

/// Starts an instance: finds the interface and its primary address, removes virtual
/// addresses left by an earlier run, opens the socket, and runs until shut down. With
/// `resume` (the process it replaces was Master), it starts as Master and keeps the
/// addresses.
pub async fn spawn(
    cfg: InstanceConfig,
    events: broadcast::Sender<Event>,
    resume: bool,
) -> std::io::Result<Handle> {
    let iface = os::iface(&cfg.interface)?;
    let nl = Netlink::new()?;
    let vips: Vec<Ipv4Addr> = cfg.vips.iter().map(|v| v.0).collect();
    let primary = nl
        .addresses(iface.index)
        .await?
        .into_iter()
        .map(|a| a.0)
        .find(|a| !vips.contains(a))
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("interface {} has no IPv4 address of its own", iface.name),
            )
        })?;
    if !resume {
        for v in &vips {
            nl.del(iface.index, *v).await?;
        }
    }
    let sock = VrrpSocket::open(&iface, primary, cfg.unicast_peers.is_empty())?;
    let stats = Arc::new(Stats::default());
    stats.priority.store(cfg.priority, Relaxed);
    let (tx, rx) = mpsc::unbounded_channel();
    let runner = Runner {
        cfg,
        iface,
        nl,
        sock,
        primary,
        stats: stats.clone(),
        events,
        garp_again: None,
        garp_next_refresh: None,
    };
    let task = tokio::spawn(runner.run(rx, resume));
    Ok(Handle {
        stats,
        commands: tx,
        task,
    })
}

impl Runner {
    fn machine_config(&self) -> Config {
        Config {
            version: self.cfg.version,
            vrid: self.cfg.vrid,
            priority: self.cfg.priority,
            interval: self.cfg.interval,
            preempt: self.cfg.preempt,
            preempt_delay: self.cfg.preempt_delay,
            primary: self.primary,
            answer_lower_priority: true,
        }
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>, resume: bool) {
        let mut m = Machine::new(self.machine_config());
        let start = if resume {
            Input::Resume
        } else {
            Input::Startup
        };
        let actions = m.handle(Instant::now(), start);
        self.execute(&m, actions).await;
        let mut buf = vec![0u8; 2048];
        loop {
            let wake = m
                .next_wakeup()
                .map(tokio::time::Instant::from_std)
                .into_iter()
                .chain(self.garp_again)
                .chain(
                    self.garp_next_refresh
                        .filter(|_| m.state() == State::Master),
                )
                .min()
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            let input = tokio::select! {
                r = self.sock.recv(&mut buf) => match r {
                    Ok(n) => self.received(&buf[..n]),
                    Err(e) => {
                        tracing::warn!(instance = %self.cfg.name, "receive failed: {e}");
                        self.stats.errors.fetch_add(1, Relaxed);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        None
                    }
                },
                _ = tokio::time::sleep_until(wake) => {
                    self.timers(&m).await;
                    Some(Input::Timer)
                }
                c = rx.recv() => match c {
                    Some(Command::HandOver) => {
                        tracing::info!(instance = %self.cfg.name, "VRRP instance handed over in state {}", m.state().as_str());
                        return;
                    }
                    None | Some(Command::Shutdown) => {
                        let actions = m.handle(Instant::now(), Input::Shutdown);
                        self.execute(&m, actions).await;
                        return;
                    }
                    Some(Command::Priority(p)) => Some(Input::Priority(p)),
                    Some(Command::Fault(f)) => Some(Input::Fault(f)),
                    Some(Command::Reconfigure(cfg)) => {
                        self.reconfigure(&mut m, *cfg).await;
                        None
                    }
                },
            };
            if let Some(i) = input {
                let actions = m.handle(Instant::now(), i);
                self.execute(&m, actions).await;
                self.stats.priority.store(m.priority(), Relaxed);
                if let Ok(mut master) = self.stats.master.lock() {
                    *master = m.master;
                }
            }
        }
    }

    async fn reconfigure(&mut self, m: &mut Machine, cfg: InstanceConfig) {
        m.set_timing(cfg.interval, cfg.preempt, cfg.preempt_delay);
        if m.state() == State::Master && cfg.vips != self.cfg.vips {
            // An address whose prefix changed is removed and added again.
            let removed: Vec<(Ipv4Addr, u8)> = self
                .cfg
                .vips
                .iter()
                .filter(|v| !cfg.vips.contains(v))
                .copied()
                .collect();
            let added: Vec<(Ipv4Addr, u8)> = cfg
                .vips
                .iter()
                .filter(|v| !self.cfg.vips.contains(v))
                .copied()
                .collect();
            self.del_vips(&removed).await;
            self.add_vips(&added).await;
            let ips: Vec<Ipv4Addr> = added.iter().map(|v| v.0).collect();
            if let Err(e) = os::send_garp(&self.iface, &ips, cfg.garp_repeat) {
                tracing::warn!(instance = %cfg.name, "gratuitous ARP failed: {e}");
            }
        }
        if cfg.garp_refresh != self.cfg.garp_refresh {
            self.garp_next_refresh = cfg.garp_refresh.map(|r| tokio::time::Instant::now() + r);
        }
        tracing::info!(instance = %cfg.name, "VRRP settings updated");
        self.cfg = cfg;
        // Adverts from now on carry the new address list; send one at once as Master so
        // the peers see it.
        if m.state() == State::Master {
            let p = m.priority();
            self.execute(m, vec![Action::Advertise(p)]).await;
        }
    }

    async fn add_vips(&self, vips: &[(Ipv4Addr, u8)]) {
        for (ip, prefix) in vips {
            if let Err(e) = self.nl.add(self.iface.index, *ip, *prefix).await {
                tracing::error!(instance = %self.cfg.name, "cannot add {ip}/{prefix}: {e}");
            }
        }
    }

    async fn del_vips(&self, vips: &[(Ipv4Addr, u8)]) {
        for (ip, _) in vips {
            if let Err(e) = self.nl.del(self.iface.index, *ip).await {
                tracing::error!(instance = %self.cfg.name, "cannot remove {ip}: {e}");
            }
        }
    }

    /// Decodes and checks a datagram; returns the machine's input for a valid advert of
    /// this instance.
    fn received(&self, d: &[u8]) -> Option<Input> {
        let check_ttl = self.cfg.unicast_peers.is_empty();
        let r = match packet::decode(d, self.cfg.version, self.cfg.checksum, check_ttl) {
            Ok(r) => r,
            Err(e) => {
                self.stats.errors.fetch_add(1, Relaxed);
                tracing::debug!(instance = %self.cfg.name, "dropped an invalid VRRP packet: {e}");
                return None;
            }
        };
        let a = &r.advert;
        if a.vrid != self.cfg.vrid || r.src == self.primary {
            return None;
        }
        if !self.cfg.unicast_peers.is_empty() && !self.cfg.unicast_peers.contains(&r.src) {
            self.stats.errors.fetch_add(1, Relaxed);
            return None;
        }
        // Like keepalived: v2 intervals must match, and the address lists must agree.
        let ours: Vec<Ipv4Addr> = self.cfg.vips.iter().map(|v| v.0).collect();
        let interval_ok = self.cfg.version == Version::V3
            || a.interval_cs == (self.cfg.interval.as_millis() as u16 / 1000).max(1) * 100;
        let addrs_ok = a.addrs.len() == ours.len() && ours.iter().all(|v| a.addrs.contains(v));
        if !interval_ok || !addrs_ok || (self.cfg.version == Version::V2 && a.auth_type != 0) {
            self.stats.errors.fetch_add(1, Relaxed);
            tracing::debug!(instance = %self.cfg.name, src = %r.src, "advert does not match this instance's settings");
            return None;
        }
        self.stats.adverts_received.fetch_add(1, Relaxed);
        Some(Input::Advert {
            src: r.src,
            priority: a.priority,
            interval: Duration::from_millis(u64::from(a.interval_cs) * 10),
        })
    }

    /// The second burst and the periodic refresh of gratuitous ARPs.
    async fn timers(&mut self, m: &Machine) {
        let now = tokio::time::Instant::now();
        if self.garp_again.is_some_and(|t| now >= t) {
            self.garp_again = None;
            if m.state() == State::Master {
                self.garp();
            }
        }
        if let Some(every) = self.cfg.garp_refresh
            && self.garp_next_refresh.is_some_and(|t| now >= t)
        {
            self.garp_next_refresh = Some(now + every);
            if m.state() == State::Master {
                self.garp();
            }
        }
    }

    fn garp(&self) {
        let vips: Vec<Ipv4Addr> = self.cfg.vips.iter().map(|v| v.0).collect();
        if let Err(e) = os::send_garp(&self.iface, &vips, self.cfg.garp_repeat) {
            tracing::warn!(instance = %self.cfg.name, "gratuitous ARP failed: {e}");
        }
    }

    async fn execute(&mut self, m: &Machine, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Advertise(priority) => {
                    let ad = Advert {
                        version: self.cfg.version,
                        vrid: self.cfg.vrid,
                        priority,
                        interval_cs: (self.cfg.interval.as_millis() / 10).clamp(1, 4095) as u16,
                        auth_type: 0,
                        auth_data: [0; 8],
                        addrs: self.cfg.vips.iter().map(|v| v.0).collect(),
                    };
                    let dsts = if self.cfg.unicast_peers.is_empty() {
                        vec![GROUP]
                    } else {
                        self.cfg.unicast_peers.clone()
                    };
                    for dst in dsts {
                        let msg = packet::encode(&ad, self.primary, dst, self.cfg.checksum);
                        match self.sock.send_to(&msg, dst).await {
                            Ok(()) => {
                                self.stats.adverts_sent.fetch_add(1, Relaxed);
                            }
                            Err(e) => {
                                self.stats.errors.fetch_add(1, Relaxed);
                                tracing::warn!(instance = %self.cfg.name, "sending an advert failed: {e}");
                            }
                        }
                    }
                }
                Action::TakeAddresses => {
                    self.add_vips(&self.cfg.vips).await;
                    self.garp();
                    let now = tokio::time::Instant::now();
                    if !self.cfg.garp_delay.is_zero() {
                        self.garp_again = Some(now + self.cfg.garp_delay);
                    }
                    self.garp_next_refresh = self.cfg.garp_refresh.map(|r| now + r);
                }
                Action::Announce => self.garp(),
                Action::ReleaseAddresses => {
                    self.del_vips(&self.cfg.vips).await;
                    self.garp_again = None;
                }
                Action::Transition { from, to } => {
                    let code = match to {
                        State::Initialize => 0,
                        State::Backup => 1,
                        State::Master => 2,
                        State::Fault => 3,
                    };
                    self.stats.state.store(code, Relaxed);
                    self.stats.transitions.fetch_add(1, Relaxed);
                    if let Ok(mut t) = self.stats.last_transition.lock() {
                        *t = Some(std::time::SystemTime::now());
                    }
                    tracing::info!(instance = %self.cfg.name, "VRRP {} -> {}", from.as_str(), to.as_str());
                    let _ = self.events.send(Event {
                        instance: self.cfg.name.clone(),
                        from,
                        to,
                        priority: m.priority(),
                    });
                    if let Some(script) = &self.cfg.notify {
                        let mut c = tokio::process::Command::new(script);
                        c.arg(&self.cfg.name)
                            .arg(to.as_str())
                            .arg(m.priority().to_string())
                            .kill_on_drop(false);
                        match c.spawn() {
                            Ok(mut child) => {
                                tokio::spawn(async move {
                                    let _ = child.wait().await;
                                });
                            }
                            Err(e) => {
                                tracing::warn!(instance = %self.cfg.name, "notify script {}: {e}", script.display())
                            }
                        }
                    }
                }
            }
        }
    }
}
