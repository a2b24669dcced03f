//! The VRRP router state machine (RFC 5798 section 6.4, RFC 3768 for v2 timing), as pure
//! code: it is given inputs with the time they happen and answers with actions, and tells
//! when it next needs to be woken. No sockets, no clocks, no sleeps.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::packet::Version;

/// A Master answers lower-priority adverts with gratuitous ARP at most this often.
const ANNOUNCE_EVERY: Duration = Duration::from_secs(1);

/// Router states (plus keepalived's FAULT, for tracked failures).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Initialize,
    Backup,
    Master,
    /// A tracked object failed: the router holds no address and sends nothing.
    Fault,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Initialize => "INIT",
            State::Backup => "BACKUP",
            State::Master => "MASTER",
            State::Fault => "FAULT",
        }
    }
}

/// Settings of one virtual router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub version: Version,
    pub vrid: u8,
    /// 1..=255 (255: address owner).
    pub priority: u8,
    /// Advertisement interval (v3: centisecond resolution; v2: whole seconds).
    pub interval: Duration,
    pub preempt: bool,
    /// With preemption: how long lower-priority adverts are still accepted before
    /// preempting, counted from the first one seen.
    pub preempt_delay: Duration,
    /// This router's primary address (the Master-vs-Master tie-break compares it).
    pub primary: Ipv4Addr,
    /// A Master answers a lower-priority advert with its own at once (keepalived's
    /// default; RFC 5798 just discards it).
    pub answer_lower_priority: bool,
}

/// Something that happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Startup,
    /// Startup of a process that takes over from one that was Master (a binary
    /// upgrade): Master at once, whatever the priority, with no Backup wait in between.
    Resume,
    /// Clean stop: a Master sends priority 0 so a Backup takes over after Skew_Time.
    Shutdown,
    /// A valid advertisement for this VRID from `src`.
    Advert {
        src: Ipv4Addr,
        priority: u8,
        interval: Duration,
    },
    /// The time returned by [`Machine::next_wakeup`] has come.
    Timer,
    /// Tracked objects failed (`true`) or recovered (`false`).
    Fault(bool),
    /// The effective priority changed (tracking weights).
    Priority(u8),
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send an advertisement with this priority.
    Advertise(u8),
    /// Add the virtual addresses and announce them (gratuitous ARP).
    TakeAddresses,
    /// Remove the virtual addresses.
    ReleaseAddresses,
    /// Announce the virtual addresses again (gratuitous ARP): another router claimed
    /// them, so neighbours may hold its MAC for them (keepalived's
    /// `garp_lower_prio_repeat`).
    Announce,
    /// The state changed.
    Transition { from: State, to: State },
}

/// One virtual router.
#[derive(Debug, Clone)]
pub struct Machine {
    cfg: Config,
    state: State,
    /// The interval the current Master advertises (v3 Backups adopt it).
    master_interval: Duration,
    master_down: Option<Instant>,
    advert_due: Option<Instant>,
    /// When a lower-priority advert was first seen while preempt_delay runs.
    preempt_since: Option<Instant>,
    /// When a Master last announced its addresses again after a lower-priority advert.
    announced: Option<Instant>,
    /// Address of the current Master as far as a Backup knows.
    pub master: Option<Ipv4Addr>,
    pub last_transition: Option<Instant>,
}

impl Machine {
    pub fn new(cfg: Config) -> Self {
        let interval = cfg.interval;
        Self {
            cfg,
            state: State::Initialize,
            master_interval: interval,
            master_down: None,
            advert_due: None,
            preempt_since: None,
            announced: None,
            master: None,
            last_transition: None,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn priority(&self) -> u8 {
        self.cfg.priority
    }

    /// Takes new timing settings (a configuration reload): the advert interval applies
    /// from the next advert a Master sends; a Backup keeps the interval its Master
    /// advertises (v3) until it hears another.
    pub fn set_timing(&mut self, interval: Duration, preempt: bool, preempt_delay: Duration) {
        self.cfg.interval = interval;
        self.cfg.preempt = preempt;
        self.cfg.preempt_delay = preempt_delay;
        if self.cfg.version == Version::V2 || self.master.is_none() {
            self.master_interval = interval;
        }
        if !preempt || preempt_delay.is_zero() {
            self.preempt_since = None;
        }
    }

    /// Skew_Time: v3 scales by the Master's interval, v2 does not (RFC 3768).
    pub fn skew(&self) -> Duration {
        let p = 256 - u32::from(self.cfg.priority);
        match self.cfg.version {
            Version::V3 => self.master_interval * p / 256,
            Version::V2 => Duration::from_secs(1) * p / 256,
        }
    }

    /// Master_Down_Interval: three Master intervals plus the skew.
    pub fn master_down_interval(&self) -> Duration {
        self.master_interval * 3 + self.skew()
    }

    /// When the machine must next get [`Input::Timer`].
    pub fn next_wakeup(&self) -> Option<Instant> {
        match self.state {
            State::Backup => self.master_down,
            State::Master => self.advert_due,
            _ => None,
        }
    }

    fn go(&mut self, to: State, now: Instant, out: &mut Vec<Action>) {
        if self.state != to {
            out.push(Action::Transition {
                from: self.state,
                to,
            });
            self.state = to;
            self.last_transition = Some(now);
        }
    }

    fn become_master(&mut self, now: Instant, out: &mut Vec<Action>) {
        out.push(Action::Advertise(self.cfg.priority));
        out.push(Action::TakeAddresses);
        self.advert_due = Some(now + self.cfg.interval);
        self.master_down = None;
        self.preempt_since = None;
        self.master = Some(self.cfg.primary);
        self.go(State::Master, now, out);
    }

    fn become_backup(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.state == State::Master {
            out.push(Action::ReleaseAddresses);
        }
        self.advert_due = None;
        self.master_down = Some(now + self.master_down_interval());
        self.go(State::Backup, now, out);
    }

    /// Handles one input at `now`.
    pub fn handle(&mut self, now: Instant, input: Input) -> Vec<Action> {
        let mut out = Vec::new();
        match input {
            Input::Resume => {
                if self.state == State::Initialize {
                    self.master_interval = self.cfg.interval;
                    self.become_master(now, &mut out);
                }
            }
            Input::Startup => {
                if self.state != State::Initialize {
                    return out;
                }
                self.master_interval = self.cfg.interval;
                if self.cfg.priority == 255 {
                    self.become_master(now, &mut out);
                } else {
                    self.become_backup(now, &mut out);
                }
            }
            Input::Shutdown => {
                if self.state == State::Master {
                    out.push(Action::Advertise(0));
                    out.push(Action::ReleaseAddresses);
                }
                self.master_down = None;
                self.advert_due = None;
                self.go(State::Initialize, now, &mut out);
            }
            Input::Timer => match self.state {
                State::Backup if self.master_down.is_some_and(|t| now >= t) => {
                    self.become_master(now, &mut out);
                }
                State::Master if self.advert_due.is_some_and(|t| now >= t) => {
                    out.push(Action::Advertise(self.cfg.priority));
                    self.advert_due = Some(now + self.cfg.interval);
                }
                _ => {}
            },
            Input::Advert {
                src,
                priority,
                interval,
            } => self.on_advert(now, src, priority, interval, &mut out),
            Input::Fault(true) => {
                if self.state == State::Master {
                    out.push(Action::Advertise(0));
                    out.push(Action::ReleaseAddresses);
                }
                self.master_down = None;
                self.advert_due = None;
                self.go(State::Fault, now, &mut out);
            }
            Input::Fault(false) => {
                if self.state == State::Fault {
                    self.master_interval = self.cfg.interval;
                    self.become_backup(now, &mut out);
                }
            }
            Input::Priority(p) => {
                let p = p.clamp(1, 255);
                if p != self.cfg.priority {
                    self.cfg.priority = p;
                    if self.state == State::Master {
                        // Announce the new priority at once, so a better Backup can preempt.
                        out.push(Action::Advertise(p));
                        self.advert_due = Some(now + self.cfg.interval);
                    }
                }
            }
        }
        out
    }

    fn on_advert(
        &mut self,
        now: Instant,
        src: Ipv4Addr,
        priority: u8,
        interval: Duration,
        out: &mut Vec<Action>,
    ) {
        let own = self.cfg.priority;
        match self.state {
            State::Backup => {
                if priority == 0 {
                    // The Master leaves: take over after Skew_Time only.
                    self.master_down = Some(now + self.skew());
                    return;
                }
                let lower = priority < own;
                let accept = if !lower || !self.cfg.preempt {
                    self.preempt_since = None;
                    true
                } else if !self.cfg.preempt_delay.is_zero() {
                    // Preempt only once lower-priority adverts have been seen this long.
                    let since = *self.preempt_since.get_or_insert(now);
                    now.duration_since(since) < self.cfg.preempt_delay
                } else {
                    false
                };
                if accept {
                    if self.cfg.version == Version::V3 && !interval.is_zero() {
                        self.master_interval = interval;
                    }
                    self.master = Some(src);
                    self.master_down = Some(now + self.master_down_interval());
                }
            }
            State::Master => {
                if priority == 0 {
                    out.push(Action::Advertise(own));
                    self.advert_due = Some(now + self.cfg.interval);
                    return;
                }
                let wins = priority > own || (priority == own && src > self.cfg.primary);
                if wins && own != 255 {
                    if self.cfg.version == Version::V3 && !interval.is_zero() {
                        self.master_interval = interval;
                    }
                    self.master = Some(src);
                    self.become_backup(now, out);
                } else {
                    if self.cfg.answer_lower_priority {
                        // Force a new election: the other side sees us and steps down.
                        out.push(Action::Advertise(own));
                        self.advert_due = Some(now + self.cfg.interval);
                    }
                    // The other side took the addresses too (a stall or a partition made
                    // it Master) and announced them: win the neighbours back, at most
                    // once a second.
                    if self
                        .announced
                        .is_none_or(|t| now.duration_since(t) >= ANNOUNCE_EVERY)
                    {
                        self.announced = Some(now);
                        out.push(Action::Announce);
                    }
                }
            }
            State::Initialize | State::Fault => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn cfg(version: Version, priority: u8, interval_ms: u64) -> Config {
        Config {
            version,
            vrid: 51,
            priority,
            interval: Duration::from_millis(interval_ms),
            preempt: true,
            preempt_delay: Duration::ZERO,
            primary: ip("10.0.0.1"),
            answer_lower_priority: true,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn advert(src: &str, priority: u8, interval_ms: u64) -> Input {
        Input::Advert {
            src: ip(src),
            priority,
            interval: ms(interval_ms),
        }
    }

    #[test]
    fn timings_match_the_rfcs_and_keepalived() {
        // v3, 1 s: MDI(150) = 3.414 s, MDI(100) = 3.609 s, Skew(100) = 0.609 s.
        let m = Machine::new(cfg(Version::V3, 150, 1000));
        assert_eq!(
            m.master_down_interval(),
            Duration::from_micros(3_414_062) + Duration::from_nanos(500)
        );
        let m = Machine::new(cfg(Version::V3, 100, 1000));
        assert_eq!(m.skew(), Duration::from_micros(609_375));
        assert_eq!(m.master_down_interval(), Duration::from_micros(3_609_375));
        // v3, 0.1 s: MDI(100) = 0.361 s, Skew(100) = 0.061 s.
        let m = Machine::new(cfg(Version::V3, 100, 100));
        assert_eq!(m.skew(), Duration::from_nanos(60_937_500));
        assert_eq!(m.master_down_interval(), Duration::from_nanos(360_937_500));
        // v2: the skew is in seconds whatever the interval (RFC 3768).
        let m = Machine::new(cfg(Version::V2, 100, 1000));
        assert_eq!(m.skew(), Duration::from_micros(609_375));
        assert_eq!(m.master_down_interval(), Duration::from_micros(3_609_375));
    }

    #[test]
    fn a_resumed_instance_is_master_at_once_and_a_handed_over_one_sends_nothing() {
        let t0 = Instant::now();
        let mut m = Machine::new(cfg(Version::V3, 100, 1000));
        let a = m.handle(t0, Input::Resume);
        assert_eq!(
            a,
            vec![
                Action::Advertise(100),
                Action::TakeAddresses,
                Action::Transition {
                    from: State::Initialize,
                    to: State::Master
                }
            ]
        );
        // Only from Initialize.
        assert!(m.handle(t0, Input::Resume).is_empty());
    }

    #[test]
    fn alone_a_backup_becomes_master_after_master_down_interval() {
        let t0 = Instant::now();
        let mut m = Machine::new(cfg(Version::V3, 100, 1000));
        let a = m.handle(t0, Input::Startup);
        assert_eq!(
            a,
            vec![Action::Transition {
                from: State::Initialize,
                to: State::Backup
            }]
        );
        let due = m.next_wakeup().unwrap();
        assert_eq!(due - t0, ms(3609) + Duration::from_micros(375));
        assert!(m.handle(due - ms(1), Input::Timer).is_empty());
        let a = m.handle(due, Input::Timer);
        assert_eq!(
            a,
            vec![
                Action::Advertise(100),
                Action::TakeAddresses,
                Action::Transition {
                    from: State::Backup,
                    to: State::Master
                }
            ]
        );
        // Then an advert every interval.
        let next = m.next_wakeup().unwrap();
        assert_eq!(next - due, ms(1000));
        assert_eq!(m.handle(next, Input::Timer), vec![Action::Advertise(100)]);
    }

    #[test]
    fn owner_starts_as_master() {
        let t0 = Instant::now();
        let mut m = Machine::new(cfg(Version::V3, 255, 1000));
        let a = m.handle(t0, Input::Startup);
        assert_eq!(a[0], Action::Advertise(255));
        assert_eq!(m.state(), State::Master);
        // An owner never steps down.
        m.handle(t0, advert("10.0.0.9", 255, 1000));
        assert_eq!(m.state(), State::Master);
    }

    #[test]
    fn adverts_hold_a_backup_and_priority_zero_means_skew() {
        let t0 = Instant::now();
        let mut m = Machine::new(cfg(Version::V3, 100, 1000));
        m.handle(t0, Input::Startup);
        let t1 = t0 + ms(3000);
        m.handle(t1, advert("10.0.0.2", 150, 1000));
        assert_eq!(m.next_wakeup().unwrap() - t1, m.master_down_interval());
        assert_eq!(m.master, Some(ip("10.0.0.2")));
        // The Master stops cleanly: takeover after Skew_Time.
        let t2 = t1 + ms(500);
        m.handle(t2, advert("10.0.0.2", 0, 1000));
        assert_eq!(m.next_wakeup().unwrap() - t2, m.skew());
        m.handle(t2 + m.skew(), Input::Timer);
        assert_eq!(m.state(), State::Master);
    }

    #[test]
    fn v3_backup_adopts_the_masters_interval() {
        let t0 = Instant::now();
        let mut m = Machine::new(cfg(Version::V3, 100, 1000));
        m.handle(t0, Input::Startup);
        m.handle(t0, advert("10.0.0.2", 150, 100));
        assert_eq!(m.master_down_interval(), Duration::from_nanos(360_937_500));
        // v2 keeps its own (intervals must match in v2).
        let mut m = Machine::new(cfg(Version::V2, 100, 1000));
        m.handle(t0, Input::Startup);
        m.handle(t0, advert("10.0.0.2", 150, 2000));
        assert_eq!(m.master_down_interval(), Duration::from_micros(3_609_375));
    }

    #[test]
    fn preemption_and_nopreempt() {
        let t0 = Instant::now();
        // A higher-priority Backup ignores a lower-priority Master and takes over.
        let mut m = Machine::new(cfg(Version::V3, 150, 1000));
        m.handle(t0, Input::Startup);
        let due = m.next_wakeup().unwrap();
        m.handle(t0 + ms(1000), advert("10.0.0.2", 100, 1000));
        assert_eq!(
            m.next_wakeup(),
            Some(due),
            "lower adverts do not reset the timer"
        );
        m.handle(due, Input::Timer);
        assert_eq!(m.state(), State::Master);
        // nopreempt: lower-priority adverts keep it Backup.
        let mut cfg2 = cfg(Version::V3, 150, 1000);
        cfg2.preempt = false;
        let mut m = Machine::new(cfg2);
        m.handle(t0, Input::Startup);
        for i in 1..20 {
            let t = t0 + ms(1000 * i);
            m.handle(t, advert("10.0.0.2", 100, 1000));
            m.handle(t, Input::Timer);
        }
        assert_eq!(m.state(), State::Backup);
    }

    #[test]
    fn preempt_delay_counts_from_the_first_lower_advert() {
        let t0 = Instant::now();
        let mut c = cfg(Version::V3, 150, 1000);
        c.preempt_delay = ms(5000);
        let mut m = Machine::new(c);
        m.handle(t0, Input::Startup);
        let mut t = t0;
        let mut became = None;
        for i in 1..=40 {
            t = t0 + ms(250 * i);
            if i % 4 == 0 {
                m.handle(t, advert("10.0.0.2", 100, 1000));
            }
            if m.next_wakeup().is_some_and(|w| t >= w) {
                m.handle(t, Input::Timer);
            }
            if m.state() == State::Master {
                became = Some(t - t0);
                break;
            }
        }
        // First lower advert at 1 s, accepted until 6 s; then MDI(150) = 3.414 s later.
        let b = became.unwrap_or_else(|| panic!("still {:?} at {:?}", m.state(), t - t0));
        assert!(b >= ms(8000) && b <= ms(9500), "took over after {b:?}");
    }

    #[test]
    fn master_vs_master_tie_break_and_higher_priority() {
        let t0 = Instant::now();
        let mut m = Machine::new(cfg(Version::V3, 100, 1000));
        m.handle(t0, Input::Startup);
        m.handle(m.next_wakeup().unwrap(), Input::Timer);
        assert_eq!(m.state(), State::Master);
        // Equal priority, lower address: we stay Master and answer at once.
        let a = m.handle(t0 + ms(5000), advert("10.0.0.0", 100, 1000));
        assert_eq!(a, vec![Action::Advertise(100), Action::Announce]);
        assert_eq!(m.state(), State::Master);
        // The addresses are announced again at most once a second.
        let a = m.handle(t0 + ms(5500), advert("10.0.0.0", 100, 1000));
        assert_eq!(a, vec![Action::Advertise(100)]);
        // Equal priority, higher address: we step down.
        let a = m.handle(t0 + ms(6000), advert("10.0.0.9", 100, 1000));
        assert!(a.contains(&Action::ReleaseAddresses));
        assert_eq!(m.state(), State::Backup);
        assert_eq!(m.master, Some(ip("10.0.0.9")));
        // A Backup does not tie-break: equal priority, lower address still holds it.
        let t = t0 + ms(7000);
        m.handle(t, advert("10.0.0.0", 100, 1000));
        assert_eq!(m.next_wakeup().unwrap() - t, m.master_down_interval());
    }

    #[test]
    fn master_answers_priority_zero_and_shutdown_sends_it() {
        let t0 = Instant::now();
        let mut m = Machine::new(cfg(Version::V3, 255, 1000));
        m.handle(t0, Input::Startup);
        assert_eq!(
            m.handle(t0 + ms(300), advert("10.0.0.2", 0, 1000)),
            vec![Action::Advertise(255)]
        );
        let a = m.handle(t0 + ms(400), Input::Shutdown);
        assert_eq!(
            a,
            vec![
                Action::Advertise(0),
                Action::ReleaseAddresses,
                Action::Transition {
                    from: State::Master,
                    to: State::Initialize
                }
            ]
        );
        assert_eq!(m.next_wakeup(), None);
    }

    #[test]
    fn fault_and_priority_tracking() {
        let t0 = Instant::now();
        let mut m = Machine::new(cfg(Version::V3, 150, 1000));
        m.handle(t0, Input::Startup);
        m.handle(m.next_wakeup().unwrap(), Input::Timer);
        assert_eq!(m.state(), State::Master);
        // A tracked backend lost its servers: priority drops by the weight, announced now.
        let a = m.handle(t0 + ms(5000), Input::Priority(90));
        assert_eq!(a, vec![Action::Advertise(90)]);
        // The peer (100) now preempts us.
        m.handle(t0 + ms(5100), advert("10.0.0.2", 100, 1000));
        assert_eq!(m.state(), State::Backup);
        // Fault: nothing held, nothing sent, no timers; recovery waits as a Backup.
        let a = m.handle(t0 + ms(6000), Input::Fault(true));
        assert_eq!(
            a,
            vec![Action::Transition {
                from: State::Backup,
                to: State::Fault
            }]
        );
        assert_eq!(m.next_wakeup(), None);
        assert!(
            m.handle(t0 + ms(6500), advert("10.0.0.2", 100, 1000))
                .is_empty()
        );
        m.handle(t0 + ms(7000), Input::Fault(false));
        assert_eq!(m.state(), State::Backup);
    }
}
