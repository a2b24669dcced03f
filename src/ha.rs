//! The VRRP side of a rampart node: the configured instances kept running and in step
//! with reloads, and tracking of backends, frontends and interfaces turned into priority
//! weights or FAULT.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rampart_config::vrrp::{Track, VrrpInstance};
use rampart_proxy::runtime::Control;
use rampart_vrrp::group::{Group, StartFailure, Tracking};
use rampart_vrrp::packet::{Checksum, Version};
use rampart_vrrp::speaker::InstanceConfig;

/// How often tracked objects are looked at.
const TRACK_EVERY: Duration = Duration::from_millis(100);

/// The speaker's settings for each configured instance.
pub fn instances(cfg: &rampart_config::Config, base: &Path) -> Vec<InstanceConfig> {
    cfg.vrrp
        .instances
        .iter()
        .map(|(name, i)| instance(name, i, base))
        .collect()
}

fn instance(name: &str, i: &VrrpInstance, base: &Path) -> InstanceConfig {
    InstanceConfig {
        name: name.to_owned(),
        interface: i.interface.value.clone(),
        version: if i.version.value == 2 {
            Version::V2
        } else {
            Version::V3
        },
        vrid: i.vrid.value,
        priority: i.priority.value,
        interval: i.interval.value,
        preempt: i.preempt,
        preempt_delay: i.preempt_delay,
        vips: i
            .addresses
            .iter()
            .map(|a| (a.value.ip, a.value.prefix))
            .collect(),
        checksum: if i.checksum.value == "message" {
            Checksum::MessageOnly
        } else {
            Checksum::PseudoHeader
        },
        unicast_peers: i.unicast_peers.iter().map(|p| p.value.0).collect(),
        garp_repeat: i.garp.repeat,
        garp_delay: i.garp.delay,
        garp_refresh: i.garp.refresh,
        notify: i
            .notify
            .as_ref()
            .map(|n| -> PathBuf { base.join(&n.value) }),
    }
}

/// What the tracker can see of the node.
pub trait Probe {
    /// Usable servers of a backend (None: no such backend).
    fn servers_up(&self, backend: &str) -> Option<usize>;
    /// Whether a frontend listens on at least one address.
    fn listening(&self, frontend: &str) -> bool;
    fn link_up(&self, interface: &str) -> bool;
}

/// The running proxy and the kernel's interfaces.
struct Live<'a>(&'a Control);

impl Probe for Live<'_> {
    fn servers_up(&self, backend: &str) -> Option<usize> {
        let snap = self.0.shared().snapshot.load();
        snap.backend_index(backend).map(|i| snap.nbsrv(i))
    }
    fn listening(&self, frontend: &str) -> bool {
        self.0.bound().iter().any(|b| b.frontend == frontend)
    }
    fn link_up(&self, interface: &str) -> bool {
        rampart_vrrp::os::link_up(interface)
    }
}

/// Evaluates an instance's tracked objects. The instance's own interface is always
/// tracked: when it is down the instance is in FAULT, as keepalived does.
pub fn evaluate(i: &VrrpInstance, probe: &dyn Probe) -> Tracking {
    let mut t = Tracking::default();
    if !probe.link_up(&i.interface.value) {
        t.fault = true;
        t.failed.push(format!("interface:{}", i.interface.value));
    }
    for tr in &i.track {
        let ok = healthy(tr, probe);
        match tr.weight.as_ref().map(|w| w.value as i32) {
            None if !ok => t.fault = true,
            Some(w) if w < 0 && !ok => t.weight += w,
            Some(w) if w > 0 && ok => t.weight += w,
            _ => {}
        }
        if !ok {
            t.failed.push(tr.label());
        }
    }
    t
}

fn healthy(t: &Track, probe: &dyn Probe) -> bool {
    if let Some(b) = &t.backend {
        return probe.servers_up(&b.value).is_some_and(|n| n > 0);
    }
    if let Some(f) = &t.frontend {
        return probe.listening(&f.value);
    }
    if let Some(i) = &t.interface {
        return probe.link_up(&i.value);
    }
    true
}

/// Starts the configured instances; an instance that cannot start stops rampart from
/// starting (a missing interface, no address on it, no permission for raw sockets).
pub async fn start(
    group: &Arc<Group>,
    cfg: &rampart_config::Config,
    base: &Path,
) -> Result<(), Vec<StartFailure>> {
    let failures = group.apply(instances(cfg, base)).await;
    if failures.is_empty() {
        Ok(())
    } else {
        group.shutdown().await;
        Err(failures)
    }
}

/// Keeps the instances in step with the running configuration (each reload makes a new
/// snapshot generation) and feeds them tracking results.
pub async fn run(group: Arc<Group>, control: Arc<Control>, base: PathBuf) {
    let mut generation = control.shared().snapshot.load().generation;
    let mut tick = tokio::time::interval(TRACK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let snap = control.shared().snapshot.load_full();
        if snap.generation != generation {
            generation = snap.generation;
            for f in group.apply(instances(&snap.config, &base)).await {
                tracing::error!("{f}; the instance is not running");
            }
        }
        let probe = Live(&control);
        for (name, i) in snap.config.vrrp.instances.iter() {
            group.track(name, evaluate(i, &probe));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Fake {
        backends: HashMap<&'static str, usize>,
        frontends: Vec<&'static str>,
        down: Vec<&'static str>,
    }

    impl Probe for Fake {
        fn servers_up(&self, b: &str) -> Option<usize> {
            self.backends.get(b).copied()
        }
        fn listening(&self, f: &str) -> bool {
            self.frontends.contains(&f)
        }
        fn link_up(&self, i: &str) -> bool {
            !self.down.contains(&i)
        }
    }

    fn inst(track: &str) -> VrrpInstance {
        let text = format!(
            "frontends:\n  web:\n    bind: \":80\"\n    default_backend: app\n\
             backends:\n  app:\n    servers:\n      a: {{address: \"127.0.0.1:1\"}}\n  db:\n    servers:\n      a: {{address: \"127.0.0.1:2\"}}\n\
             vrrp:\n  instances:\n    vi:\n      interface: eth0\n      vrid: 7\n      priority: 150\n      addresses: [10.0.0.100/24]\n      track:\n{track}"
        );
        let cfg = rampart_config::load_str(&text, None, &rampart_config::yaml::ProcessEnv)
            .unwrap_or_else(|e| panic!("{e}"));
        cfg.vrrp.instances.get("vi").cloned().unwrap()
    }

    fn fake() -> Fake {
        Fake {
            backends: HashMap::from([("app", 2), ("db", 1)]),
            frontends: vec!["web"],
            down: vec![],
        }
    }

    #[test]
    fn weights_and_faults_follow_tracked_objects() {
        let i = inst(
            "        - {backend: app, weight: -60}\n        - {frontend: web}\n        - {interface: eth1, weight: 10}\n",
        );
        let mut p = fake();
        let t = evaluate(&i, &p);
        assert_eq!((t.weight, t.fault), (10, false));
        assert!(t.failed.is_empty());

        p.backends.insert("app", 0);
        let t = evaluate(&i, &p);
        assert_eq!((t.weight, t.fault), (-50, false));
        assert_eq!(t.failed, ["backend:app"]);

        p.down.push("eth1");
        let t = evaluate(&i, &p);
        assert_eq!(t.weight, -60);
        assert_eq!(t.failed, ["backend:app", "interface:eth1"]);

        p.frontends.clear();
        let t = evaluate(&i, &p);
        assert!(t.fault);
        assert_eq!(t.failed, ["backend:app", "frontend:web", "interface:eth1"]);
    }

    #[test]
    fn the_instance_interface_down_is_a_fault() {
        let i = inst("        - {backend: db, weight: -10}\n");
        let mut p = fake();
        assert!(!evaluate(&i, &p).fault);
        p.down.push("eth0");
        let t = evaluate(&i, &p);
        assert!(t.fault);
        assert_eq!(t.failed, ["interface:eth0"]);
    }

    #[test]
    fn config_maps_to_speaker_settings() {
        let text = "frontends:\n  web:\n    bind: \"10.0.0.100:80\"\n    default_backend: app\n\
             backends:\n  app:\n    servers:\n      a: {address: \"127.0.0.1:1\"}\n\
             vrrp:\n  instances:\n    vi:\n      interface: eth0\n      vrid: 7\n      version: 2\n      priority: 200\n      interval: 2s\n      preempt: false\n      checksum: message\n      addresses: [10.0.0.100/24, 10.0.0.101]\n      unicast_peers: [10.0.0.2]\n      notify: notify.sh\n      garp: {repeat: 1, delay: 0s, refresh: 60s}\n";
        let cfg = rampart_config::load_str(text, None, &rampart_config::yaml::ProcessEnv)
            .unwrap_or_else(|e| panic!("{e}"));
        let got = instances(&cfg, Path::new("/etc/rampart"));
        assert_eq!(got.len(), 1);
        let g = &got[0];
        assert_eq!(g.version, Version::V2);
        assert_eq!((g.vrid, g.priority), (7, 200));
        assert_eq!(g.interval, Duration::from_secs(2));
        assert!(!g.preempt);
        assert_eq!(g.checksum, Checksum::MessageOnly);
        assert_eq!(
            g.vips,
            [
                ("10.0.0.100".parse().unwrap(), 24),
                ("10.0.0.101".parse().unwrap(), 32)
            ]
        );
        assert_eq!(
            g.unicast_peers,
            ["10.0.0.2".parse::<std::net::Ipv4Addr>().unwrap()]
        );
        assert_eq!(
            g.notify.as_deref(),
            Some(Path::new("/etc/rampart/notify.sh"))
        );
        assert_eq!((g.garp_repeat, g.garp_delay), (1, Duration::ZERO));
        assert_eq!(g.garp_refresh, Some(Duration::from_secs(60)));
        assert!(cfg.vrrp.is_virtual("10.0.0.101".parse().unwrap()));
    }
}
