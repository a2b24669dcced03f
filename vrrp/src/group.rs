//! The instances of one process, kept in step with the configuration: [`Group::apply`]
//! starts new instances, stops removed ones cleanly, reconfigures changed ones in place
//! (or restarts them when the virtual router itself changed), and [`Group::track`] turns
//! the state of tracked objects into an effective priority or FAULT.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::sync::broadcast;

use crate::machine::State;
use crate::packet::Version;
use crate::speaker::{Command, Event, Handle, InstanceConfig, Stats, spawn};

/// What tracking says about an instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tracking {
    /// Sum of the weights that apply now (negative weights of failed objects, positive
    /// weights of healthy ones).
    pub weight: i32,
    /// A tracked object without a weight failed.
    pub fault: bool,
    /// What failed, for `show vrrp` (`backend:app`, `interface:eth1`, ...).
    pub failed: Vec<String>,
}

/// The priority an instance advertises: the configured one moved by the tracking
/// weights, kept within 1..=254. An address owner (255) stays 255.
pub fn effective_priority(base: u8, weight: i32) -> u8 {
    if base == 255 {
        return 255;
    }
    (i32::from(base) + weight).clamp(1, 254) as u8
}

struct Member {
    cfg: InstanceConfig,
    handle: Handle,
    tracking: Tracking,
}

/// One instance as `show vrrp`, the stats page and metrics see it.
#[derive(Debug, Clone)]
pub struct View {
    pub name: String,
    pub interface: String,
    pub vrid: u8,
    pub version: Version,
    pub interval: Duration,
    pub state: State,
    /// Configured priority.
    pub priority: u8,
    /// Advertised priority, after tracking.
    pub effective_priority: u8,
    pub master: Option<Ipv4Addr>,
    pub last_transition: Option<SystemTime>,
    pub adverts_sent: u64,
    pub adverts_received: u64,
    pub errors: u64,
    pub transitions: u64,
    pub vips: Vec<(Ipv4Addr, u8)>,
    pub failed: Vec<String>,
}

/// The running instances.
pub struct Group {
    members: Mutex<Vec<Member>>,
    /// Serializes [`Group::apply`].
    applying: tokio::sync::Mutex<()>,
    events: broadcast::Sender<Event>,
    /// Instances to start as Master: the process this one replaced had them Master.
    resume: Mutex<Vec<String>>,
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group")
            .field("instances", &self.lock().len())
            .finish()
    }
}

impl Default for Group {
    fn default() -> Self {
        Self {
            members: Mutex::new(Vec::new()),
            applying: tokio::sync::Mutex::new(()),
            events: broadcast::channel(256).0,
            resume: Mutex::new(Vec::new()),
        }
    }
}

/// Why an instance could not be started.
#[derive(Debug)]
pub struct StartFailure {
    pub instance: String,
    pub error: std::io::Error,
}

impl std::fmt::Display for StartFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "vrrp.instances.{}: {}", self.instance, self.error)
    }
}

impl Group {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Member>> {
        self.members.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// State changes of every instance.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// The configured instances, by name.
    pub fn configs(&self) -> Vec<InstanceConfig> {
        self.lock().iter().map(|m| m.cfg.clone()).collect()
    }

    /// Makes the running instances those of `wanted`. Instances that could not start
    /// are reported; the others are running whatever happened to them.
    pub async fn apply(&self, wanted: Vec<InstanceConfig>) -> Vec<StartFailure> {
        let _one = self.applying.lock().await;
        let mut stop = Vec::new();
        let mut start = Vec::new();
        {
            let mut members = self.lock();
            let mut kept: HashMap<String, Member> = HashMap::new();
            for m in members.drain(..) {
                match wanted.iter().find(|w| w.name == m.cfg.name) {
                    Some(w) if w.same_router(&m.cfg) => {
                        kept.insert(m.cfg.name.clone(), m);
                    }
                    _ => stop.push(m),
                }
            }
            for w in &wanted {
                match kept.remove(&w.name) {
                    Some(mut m) => {
                        if m.cfg != *w {
                            m.handle.send(Command::Reconfigure(Box::new(w.clone())));
                            if m.cfg.priority != w.priority {
                                m.handle.send(Command::Priority(effective_priority(
                                    w.priority,
                                    m.tracking.weight,
                                )));
                            }
                            m.cfg = w.clone();
                        }
                        members.push(m);
                    }
                    None => start.push(w.clone()),
                }
            }
        }
        for m in stop {
            tracing::info!(instance = %m.cfg.name, "stopping VRRP instance");
            m.handle.shutdown().await;
        }
        let mut failures = Vec::new();
        for cfg in start {
            let name = cfg.name.clone();
            let resume = {
                let mut r = self.resume.lock().unwrap_or_else(PoisonError::into_inner);
                let found = r.iter().position(|n| *n == name);
                found.map(|i| r.swap_remove(i)).is_some()
            };
            match spawn(cfg.clone(), self.events.clone(), resume).await {
                Ok(handle) => {
                    tracing::info!(
                        instance = %name,
                        "VRRP instance on {} (VRID {}, priority {})",
                        cfg.interface,
                        cfg.vrid,
                        cfg.priority
                    );
                    self.lock().push(Member {
                        cfg,
                        handle,
                        tracking: Tracking::default(),
                    });
                }
                Err(error) => failures.push(StartFailure {
                    instance: name,
                    error,
                }),
            }
        }
        // Configuration order, for `show vrrp` and the stats page.
        let order = |m: &Member| wanted.iter().position(|w| w.name == m.cfg.name);
        self.lock().sort_by_key(order);
        failures
    }

    /// Applies what tracking found for instance `name`.
    pub fn track(&self, name: &str, t: Tracking) {
        let mut members = self.lock();
        let Some(m) = members.iter_mut().find(|m| m.cfg.name == name) else {
            return;
        };
        if m.tracking == t {
            return;
        }
        let old = std::mem::replace(&mut m.tracking, t);
        let new = &m.tracking;
        if !new.failed.is_empty() || !old.failed.is_empty() {
            tracing::info!(
                instance = %name,
                "tracking: {}",
                if new.failed.is_empty() {
                    "all tracked objects recovered".to_string()
                } else {
                    format!("failed: {}", new.failed.join(", "))
                }
            );
        }
        if new.weight != old.weight {
            m.handle.send(Command::Priority(effective_priority(
                m.cfg.priority,
                new.weight,
            )));
        }
        if new.fault != old.fault {
            m.handle.send(Command::Fault(new.fault));
        }
    }

    /// Every instance, in configuration order.
    pub fn views(&self) -> Vec<View> {
        self.lock()
            .iter()
            .map(|m| {
                let s: &Stats = &m.handle.stats;
                View {
                    name: m.cfg.name.clone(),
                    interface: m.cfg.interface.clone(),
                    vrid: m.cfg.vrid,
                    version: m.cfg.version,
                    interval: m.cfg.interval,
                    state: s.state(),
                    priority: m.cfg.priority,
                    effective_priority: s.priority.load(Relaxed),
                    master: *s.master.lock().unwrap_or_else(PoisonError::into_inner),
                    last_transition: *s
                        .last_transition
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner),
                    adverts_sent: s.adverts_sent.load(Relaxed),
                    adverts_received: s.adverts_received.load(Relaxed),
                    errors: s.errors.load(Relaxed),
                    transitions: s.transitions.load(Relaxed),
                    vips: m.cfg.vips.clone(),
                    failed: m.tracking.failed.clone(),
                }
            })
            .collect()
    }

    /// Instances to start as Master when they start (a binary upgrade: the process this
    /// one replaces had them Master).
    pub fn resume_as_master(&self, names: Vec<String>) {
        *self.resume.lock().unwrap_or_else(PoisonError::into_inner) = names;
    }

    /// Names of the instances now Master.
    pub fn masters(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|m| m.handle.stats.state() == crate::machine::State::Master)
            .map(|m| m.cfg.name.clone())
            .collect()
    }

    /// Stops every instance for a process that takes over: no priority-0 advert, the
    /// addresses stay (see [`crate::speaker::Command::HandOver`]).
    pub async fn hand_over(&self) {
        let _one = self.applying.lock().await;
        let members: Vec<Member> = self.lock().drain(..).collect();
        for m in members {
            m.handle.hand_over().await;
        }
    }

    /// Stops every instance cleanly (Masters send priority 0 and release addresses).
    pub async fn shutdown(&self) {
        let _one = self.applying.lock().await;
        let members: Vec<Member> = self.lock().drain(..).collect();
        for m in members {
            m.handle.shutdown().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effective_priority_stays_in_range() {
        assert_eq!(effective_priority(150, -60), 90);
        assert_eq!(effective_priority(150, 0), 150);
        assert_eq!(effective_priority(100, -200), 1);
        assert_eq!(effective_priority(200, 100), 254);
        assert_eq!(effective_priority(255, -50), 255);
    }
}
