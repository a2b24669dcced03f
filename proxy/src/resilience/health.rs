//! Active health checks with HAProxy's semantics: a health counter with `rise` and `fall`
//! hysteresis, the states and last-check codes HAProxy shows, faster checks while a server
//! changes state and slower ones while it is down, and random spread so that many servers'
//! checks never bunch up.
//!
//! Checks run as tasks on the housekeeping thread, one per checked server, never on the
//! request path. [`Checks::reconcile`] keeps them in line with the current snapshot: a
//! server whose check settings did not change keeps its task and its state across a
//! reload.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rampart_config::resilience::{CheckKind, HealthCheck, InitState};

use super::check;
use crate::state::{AdminState, BackendLive, ServerLive};
use crate::upstream::UpstreamTls;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The result code of a check, as HAProxy names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckStatus {
    /// No check ran yet.
    Init,
    /// The check could not even start (no socket).
    SockErr,
    L4Ok,
    L4Timeout,
    L4Refused,
    L7Ok,
    L7Timeout,
    /// Not a valid answer.
    L7Response,
    /// A valid answer with a failing status.
    L7Status,
}

impl CheckStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckStatus::Init => "INI",
            CheckStatus::SockErr => "SOCKERR",
            CheckStatus::L4Ok => "L4OK",
            CheckStatus::L4Timeout => "L4TOUT",
            CheckStatus::L4Refused => "L4CON",
            CheckStatus::L7Ok => "L7OK",
            CheckStatus::L7Timeout => "L7TOUT",
            CheckStatus::L7Response => "L7RSP",
            CheckStatus::L7Status => "L7STS",
        }
    }

    pub fn passed(self) -> bool {
        matches!(self, CheckStatus::L4Ok | CheckStatus::L7Ok)
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub status: CheckStatus,
    /// The HTTP status (or gRPC serving status) seen, if any.
    pub code: Option<u32>,
    pub duration: Duration,
    /// A short explanation, as HAProxy's `check_desc`.
    pub desc: String,
}

/// HAProxy's health counter: from 0 to `rise + fall - 1`; the server is up from `rise`.
/// Going up takes `rise` consecutive successes, going down `fall` consecutive failures;
/// a result the other way in between starts the count over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter {
    pub health: u32,
    pub rise: u32,
    pub fall: u32,
}

/// A change of a server's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    WentUp,
    WentDown,
}

impl Counter {
    pub fn new(rise: u32, fall: u32, init: InitState) -> Self {
        let (rise, fall) = (rise.max(1), fall.max(1));
        let health = match init {
            InitState::Up => rise,
            InitState::FullyUp => rise + fall - 1,
            InitState::Down => rise - 1,
            InitState::FullyDown => 0,
        };
        Self { health, rise, fall }
    }

    fn max(&self) -> u32 {
        self.rise + self.fall - 1
    }

    pub fn up(&self) -> bool {
        self.health >= self.rise
    }

    /// Whether the server is between steady states (`UP n/m` or `DOWN n/m`).
    pub fn transitional(&self) -> bool {
        self.health != 0 && self.health != self.max()
    }

    /// Counts one check result, as HAProxy does: a success while up restores full
    /// health, a failure while going up starts over from 0.
    pub fn record(&mut self, passed: bool) -> Option<Transition> {
        let was_up = self.up();
        if passed {
            if was_up {
                self.health = self.max();
                return None;
            }
            self.health += 1;
            if self.up() {
                self.health = self.max();
                return Some(Transition::WentUp);
            }
        } else if self.health > self.rise {
            self.health -= 1;
        } else {
            self.health = 0;
            if was_up {
                return Some(Transition::WentDown);
            }
        }
        None
    }

    /// Keeps the state (up or down) under new rise and fall values.
    pub fn resized(self, rise: u32, fall: u32) -> Self {
        let (rise, fall) = (rise.max(1), fall.max(1));
        let health = if self.up() { rise + fall - 1 } else { 0 };
        Self { health, rise, fall }
    }
}

/// What the stats page and the runtime socket show of a server's checks.
#[derive(Debug, Clone)]
pub struct CheckInfo {
    /// Whether the server is checked (false: `no check`).
    pub enabled: bool,
    /// Checks stopped at run time (`disable health`): the server counts as unchecked.
    pub paused: bool,
    pub counter: Counter,
    pub last: Option<Outcome>,
    /// When the server last changed state (up, down, admin).
    pub last_change: Instant,
    /// Failed checks (HAProxy's `chkfail`).
    pub failures: u64,
    /// UP to DOWN transitions (HAProxy's `chkdown`).
    pub downs: u64,
    /// Time spent down before the current period.
    pub downtime: Duration,
    pub down_since: Option<Instant>,
}

impl Default for CheckInfo {
    fn default() -> Self {
        Self {
            enabled: false,
            paused: false,
            counter: Counter::new(2, 3, InitState::Up),
            last: None,
            last_change: Instant::now(),
            failures: 0,
            downs: 0,
            downtime: Duration::ZERO,
            down_since: None,
        }
    }
}

impl CheckInfo {
    /// Total time down so far.
    pub fn downtime_at(&self, now: Instant) -> Duration {
        self.downtime + self.down_since.map_or(Duration::ZERO, |s| now - s)
    }
}

/// HAProxy's status string for a server in `admin` state with `check` state.
pub fn status_text(admin: AdminState, check: &CheckInfo) -> String {
    let c = &check.counter;
    if check.paused {
        let unchecked = CheckInfo {
            enabled: false,
            paused: false,
            ..check.clone()
        };
        return status_text(admin, &unchecked);
    }
    match admin {
        AdminState::Maint => "MAINT".into(),
        AdminState::Drain if !check.enabled || c.health == c.max() => "DRAIN".into(),
        AdminState::Drain if c.up() => {
            format!("DRAIN {}/{}", c.health - c.rise + 1, c.fall)
        }
        _ if !check.enabled => {
            if admin == AdminState::Drain {
                "DRAIN".into()
            } else {
                "no check".into()
            }
        }
        _ if c.up() && c.health == c.max() => "UP".into(),
        _ if c.up() => format!("UP {}/{}", c.health - c.rise + 1, c.fall),
        _ if c.health == 0 => "DOWN".into(),
        _ => format!("DOWN {}/{}", c.health, c.rise),
    }
}

/// Compiled check settings of one server.
#[derive(Clone)]
pub struct CheckSpec {
    pub kind: CheckKind,
    pub target: SocketAddr,
    /// TLS towards the server (HTTP and gRPC checks use it like requests do).
    pub tls: Option<UpstreamTls>,
    /// Host header / :authority.
    pub host: String,
    pub interval: Duration,
    pub fast_interval: Duration,
    pub down_interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    pub jitter: f64,
    pub init: InitState,
    /// The PROXY header each check begins with: a server that takes one on its traffic
    /// port expects it from checks too (`PROXY UNKNOWN` / v2 `LOCAL`, as HAProxy sends
    /// when the check has no address or port of its own).
    pub send_proxy: Option<crate::proxy_protocol::Version>,
}

impl CheckSpec {
    /// Compiles `hc` for a server at `addr` (`address` as configured, for the host).
    pub fn new(
        hc: &HealthCheck,
        addr: SocketAddr,
        address: &str,
        tls: Option<UpstreamTls>,
        send_proxy: Option<crate::proxy_protocol::Version>,
    ) -> Self {
        let own_target = hc.address.is_some() || hc.port.is_some();
        let ip = hc
            .address
            .as_deref()
            .and_then(|a| a.parse().ok())
            .unwrap_or(addr.ip());
        let target = SocketAddr::new(ip, hc.port.unwrap_or(addr.port()));
        let kind = hc.kind();
        let host = match &kind {
            CheckKind::Http(h) => h.host.clone(),
            _ => None,
        }
        .unwrap_or_else(|| address.to_owned());
        Self {
            kind,
            target,
            tls,
            host,
            interval: hc.interval,
            fast_interval: hc.fast_interval.unwrap_or(hc.interval),
            down_interval: hc.down_interval.unwrap_or(hc.interval),
            timeout: hc.timeout,
            rise: hc.rise,
            fall: hc.fall,
            jitter: hc.jitter.fraction(),
            init: hc.init_state,
            send_proxy: send_proxy.filter(|_| !own_target),
        }
    }

    /// The PROXY header a check sends first, if any.
    pub fn proxy_header(&self) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        crate::proxy_protocol::encode(self.send_proxy?, &Default::default(), &mut out);
        Some(out)
    }

    /// What identifies a check: a change restarts the server's checker.
    fn key(&self) -> String {
        format!(
            "{:?}|{}|{}|{}|{:?}|{:?}|{:?}|{:?}|{}|{}|{}|{:?}|{:?}",
            self.kind,
            self.target,
            self.tls.is_some(),
            self.host,
            self.interval,
            self.fast_interval,
            self.down_interval,
            self.timeout,
            self.rise,
            self.fall,
            self.jitter,
            self.init,
            self.send_proxy
        )
    }

    /// The nominal wait before the next check, by state.
    pub fn next_interval(&self, c: &Counter) -> Duration {
        if c.transitional() {
            self.fast_interval
        } else if !c.up() {
            self.down_interval
        } else {
            self.interval
        }
    }
}

/// `d` spread at random over `jitter` of its length around it (`unit` in [0, 1)).
pub fn jittered(d: Duration, jitter: f64, unit: f64) -> Duration {
    let spread = d.mul_f64(jitter.clamp(0.0, 1.0));
    (d - spread / 2) + spread.mul_f64(unit.clamp(0.0, 1.0))
}

/// `enable health` / `disable health`: pauses or resumes a server's checks. A paused
/// server counts as up; resuming restores the state its checks had.
pub fn set_paused(server: &ServerLive, backend: &BackendLive, paused: bool) -> bool {
    let mut info = lock(&server.check);
    if !info.enabled {
        return false;
    }
    info.paused = paused;
    let down = !paused && !info.counter.up();
    drop(info);
    server.set_check_down(down, backend);
    true
}

/// `set server ... health up|down`: forces the check state as if the checks had passed or
/// failed `rise` or `fall` times.
pub fn force(server: &ServerLive, backend: &BackendLive, up: bool, now: Instant) {
    server.set_stopping(false, backend);
    let mut info = lock(&server.check);
    let was_up = info.counter.up();
    info.counter.health = if up { info.counter.max() } else { 0 };
    if was_up != up {
        info.last_change = now;
        if up {
            if let Some(s) = info.down_since.take() {
                info.downtime += now - s;
            }
        } else {
            info.downs += 1;
            info.down_since = Some(now);
        }
    }
    drop(info);
    server.set_check_down(!up, backend);
}

/// Applies a check outcome to a server: counters, state, and the backend's epoch when its
/// usability changed.
pub fn apply(server: &ServerLive, backend: &BackendLive, outcome: Outcome, now: Instant) {
    let mut info = lock(&server.check);
    if !outcome.status.passed() {
        info.failures += 1;
    }
    let passed = outcome.status.passed();
    let transition = info.counter.record(passed);
    info.last = Some(outcome);
    if passed && server.stopping() {
        // A passed check ends a forced NOLB, as in HAProxy.
        server.set_stopping(false, backend);
    }
    match transition {
        Some(Transition::WentDown) => {
            info.downs += 1;
            info.last_change = now;
            info.down_since = Some(now);
            drop(info);
            server.set_check_down(true, backend);
        }
        Some(Transition::WentUp) => {
            info.last_change = now;
            if let Some(s) = info.down_since.take() {
                info.downtime += now - s;
            }
            drop(info);
            server.set_check_down(false, backend);
        }
        None => {}
    }
}

struct Running {
    key: String,
    task: tokio::task::AbortHandle,
}

/// The checker tasks, by `(backend, server)`.
#[derive(Default)]
pub struct Checks {
    running: Mutex<HashMap<(String, String), Running>>,
}

/// A server to check, as [`Checks::reconcile`] is given it.
pub struct Checked {
    pub backend: String,
    pub server: String,
    pub spec: CheckSpec,
    pub live: Arc<ServerLive>,
    pub backend_live: Arc<BackendLive>,
}

impl Checks {
    /// Starts checkers for servers that need one, restarts those whose settings changed,
    /// and stops those no longer checked (their servers count as up again). Tasks run on
    /// `rt`.
    pub fn reconcile(
        &self,
        wanted: Vec<Checked>,
        unchecked: Vec<(Arc<ServerLive>, Arc<BackendLive>)>,
        rt: &tokio::runtime::Handle,
    ) {
        let mut running = lock(&self.running);
        let mut keep = std::collections::HashSet::new();
        for c in wanted {
            let id = (c.backend.clone(), c.server.clone());
            keep.insert(id.clone());
            let key = c.spec.key();
            if running.get(&id).is_some_and(|r| r.key == key) {
                continue;
            }
            let restarted = running.remove(&id).map(|r| r.task.abort()).is_some();
            {
                let mut info = lock(&c.live.check);
                info.counter = if restarted || info.enabled {
                    info.counter.resized(c.spec.rise, c.spec.fall)
                } else {
                    Counter::new(c.spec.rise, c.spec.fall, c.spec.init)
                };
                info.enabled = true;
                let down = !info.counter.up();
                if down && info.down_since.is_none() {
                    info.down_since = Some(Instant::now());
                }
                drop(info);
                c.live.set_check_down(down, &c.backend_live);
            }
            let task = rt.spawn(run(c.spec, c.live, c.backend_live)).abort_handle();
            running.insert(id, Running { key, task });
        }
        running.retain(|id, r| {
            let k = keep.contains(id);
            if !k {
                r.task.abort();
            }
            k
        });
        for (s, b) in unchecked {
            let mut info = lock(&s.check);
            if info.enabled {
                info.enabled = false;
                info.last = None;
                if let Some(d) = info.down_since.take() {
                    info.downtime += d.elapsed();
                }
                drop(info);
                s.set_check_down(false, &b);
            }
        }
    }

    /// Stops every checker.
    pub fn stop_all(&self) {
        for (_, r) in lock(&self.running).drain() {
            r.task.abort();
        }
    }

    /// Servers with a running checker.
    pub fn count(&self) -> usize {
        lock(&self.running).len()
    }
}

/// One server's checker: waits, checks, records, forever.
async fn run(spec: CheckSpec, server: Arc<ServerLive>, backend: Arc<BackendLive>) {
    // The first check comes at a random point of the first interval, so that servers
    // configured together are not checked together.
    let first = spec.interval.mul_f64(fastrand::f64());
    tokio::time::sleep(first).await;
    loop {
        let paused = lock(&server.check).paused;
        if server.admin() != AdminState::Maint && !paused {
            let outcome = check::probe(&spec).await;
            apply(&server, &backend, outcome, Instant::now());
        }
        let nominal = {
            let info = lock(&server.check);
            spec.next_interval(&info.counter)
        };
        tokio::time::sleep(jittered(nominal, spec.jitter, fastrand::f64())).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(c: Counter) -> CheckInfo {
        CheckInfo {
            enabled: true,
            counter: c,
            ..CheckInfo::default()
        }
    }

    #[test]
    fn rise_and_fall_hysteresis_with_haproxy_texts() {
        let mut c = Counter::new(2, 3, InitState::FullyUp);
        let text = |c: Counter| status_text(AdminState::Ready, &info(c));
        assert_eq!(text(c), "UP");
        assert_eq!(c.record(false), None);
        assert_eq!(text(c), "UP 2/3");
        assert_eq!(c.record(false), None);
        assert_eq!(text(c), "UP 1/3");
        // A success in between restores full health: failures must be consecutive.
        assert_eq!(c.record(true), None);
        assert_eq!(text(c), "UP");
        assert_eq!(c.record(false), None);
        assert_eq!(c.record(false), None);
        assert_eq!(c.record(false), Some(Transition::WentDown));
        assert_eq!(text(c), "DOWN");
        assert_eq!(c.record(true), None);
        assert_eq!(text(c), "DOWN 1/2");
        // And successes must be consecutive too.
        assert_eq!(c.record(false), None);
        assert_eq!(text(c), "DOWN");
        assert_eq!(c.record(true), None);
        assert_eq!(c.record(true), Some(Transition::WentUp));
        assert_eq!(text(c), "UP");
    }

    #[test]
    fn init_states() {
        let mut up = Counter::new(2, 3, InitState::Up);
        assert!(up.up());
        assert_eq!(up.record(false), Some(Transition::WentDown));
        let mut down = Counter::new(2, 3, InitState::Down);
        assert!(!down.up());
        assert_eq!(down.record(true), Some(Transition::WentUp));
        let mut fully_down = Counter::new(3, 1, InitState::FullyDown);
        assert_eq!(fully_down.record(true), None);
        assert_eq!(fully_down.record(true), None);
        assert_eq!(fully_down.record(true), Some(Transition::WentUp));
        // fall 1: one failure takes it down.
        assert_eq!(fully_down.record(false), Some(Transition::WentDown));
    }

    #[test]
    fn flapping_never_rises_without_enough_successes() {
        // Good spells shorter than `rise` checks: it stays out.
        let mut c = Counter::new(3, 2, InitState::FullyDown);
        for _ in 0..100 {
            assert_eq!(c.record(true), None);
            assert_eq!(c.record(true), None);
            assert_eq!(c.record(false), None);
        }
        assert!(!c.up());
        // And an up server that fails less than `fall` times in a row stays in.
        let mut c = Counter::new(3, 2, InitState::FullyUp);
        for _ in 0..100 {
            assert_eq!(c.record(false), None);
            assert_eq!(c.record(true), None);
        }
        assert!(c.up());
    }

    #[test]
    fn admin_texts() {
        let c = Counter::new(2, 3, InitState::FullyUp);
        assert_eq!(status_text(AdminState::Maint, &info(c)), "MAINT");
        assert_eq!(status_text(AdminState::Drain, &info(c)), "DRAIN");
        assert_eq!(
            status_text(AdminState::Ready, &CheckInfo::default()),
            "no check"
        );
        let mut going = c;
        going.record(false);
        assert_eq!(status_text(AdminState::Drain, &info(going)), "DRAIN 2/3");
    }

    #[test]
    fn intervals_by_state_and_jitter_bounds() {
        use rampart_config::decode::Decode;
        let mut hc = rampart_config::resilience::HealthCheck::fallback().unwrap();
        hc.fast_interval = Some(Duration::from_millis(100));
        hc.down_interval = Some(Duration::from_secs(5));
        let spec = CheckSpec::new(&hc, "127.0.0.1:80".parse().unwrap(), "s:80", None, None);
        let mut c = Counter::new(2, 3, InitState::FullyUp);
        assert_eq!(spec.next_interval(&c), Duration::from_secs(2));
        c.record(false);
        assert_eq!(spec.next_interval(&c), Duration::from_millis(100));
        c.record(false);
        c.record(false);
        assert_eq!(spec.next_interval(&c), Duration::from_secs(5));
        let d = Duration::from_secs(2);
        assert_eq!(jittered(d, 0.1, 0.0), Duration::from_millis(1900));
        assert_eq!(jittered(d, 0.1, 0.5), d);
        assert_eq!(jittered(d, 0.0, 0.9), d);
    }

    #[test]
    fn apply_moves_server_and_epoch() {
        let live = crate::state::Live::new();
        let b = live.backend("b");
        let s = live.server(
            crate::state::ServerKey {
                backend: "b",
                server: "s",
            },
            1,
            false,
        );
        {
            let mut i = s.check.lock().unwrap();
            i.enabled = true;
            i.counter = Counter::new(1, 1, InitState::FullyUp);
        }
        let fail = Outcome {
            status: CheckStatus::L4Refused,
            code: None,
            duration: Duration::from_millis(1),
            desc: "refused".into(),
        };
        let epoch = b.epoch.load(std::sync::atomic::Ordering::Relaxed);
        let t0 = Instant::now();
        apply(&s, &b, fail, t0);
        assert!(!s.usable());
        assert_eq!(s.status_text(), "DOWN");
        assert!(b.epoch.load(std::sync::atomic::Ordering::Relaxed) > epoch);
        let ok = Outcome {
            status: CheckStatus::L4Ok,
            code: None,
            duration: Duration::from_millis(1),
            desc: String::new(),
        };
        apply(&s, &b, ok, t0 + Duration::from_secs(3));
        assert!(s.usable());
        let i = s.check.lock().unwrap();
        assert_eq!((i.failures, i.downs), (1, 1));
        assert_eq!(i.downtime, Duration::from_secs(3));
    }

    #[test]
    fn reconcile_keeps_unchanged_checkers_and_state() {
        use rampart_config::decode::Decode;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let live = crate::state::Live::new();
        let b = live.backend("b");
        let s = live.server(
            crate::state::ServerKey {
                backend: "b",
                server: "s",
            },
            1,
            false,
        );
        let mut hc = HealthCheck::fallback().unwrap();
        hc.interval = Duration::from_secs(3600);
        let addr = "127.0.0.1:9".parse().unwrap();
        let want = |hc: &HealthCheck| {
            vec![Checked {
                backend: "b".into(),
                server: "s".into(),
                spec: CheckSpec::new(hc, addr, "s:9", None, None),
                live: s.clone(),
                backend_live: b.clone(),
            }]
        };
        let checks = live.checks();
        checks.reconcile(want(&hc), vec![], rt.handle());
        assert_eq!(checks.count(), 1);
        assert_eq!(s.status_text(), "UP 1/3");
        // The server went down meanwhile; an identical reload keeps that.
        s.check.lock().unwrap().counter.health = 0;
        s.set_check_down(true, &b);
        checks.reconcile(want(&hc), vec![], rt.handle());
        assert_eq!(s.status_text(), "DOWN");
        // New rise/fall restart the checker but keep the server down.
        hc.rise = 5;
        checks.reconcile(want(&hc), vec![], rt.handle());
        assert_eq!(checks.count(), 1);
        assert_eq!(s.status_text(), "DOWN");
        assert!(!s.usable());
        // No longer checked: `no check`, and usable again.
        checks.reconcile(vec![], vec![(s.clone(), b.clone())], rt.handle());
        assert_eq!(checks.count(), 0);
        assert_eq!(s.status_text(), "no check");
        assert!(s.usable());
    }

    #[test]
    fn forced_health_and_nolb() {
        let live = crate::state::Live::new();
        let b = live.backend("b");
        let s = live.server(
            crate::state::ServerKey {
                backend: "b",
                server: "s",
            },
            1,
            false,
        );
        {
            let mut i = s.check.lock().unwrap();
            i.enabled = true;
            i.counter = Counter::new(2, 3, InitState::FullyUp);
        }
        let t = Instant::now();
        force(&s, &b, false, t);
        assert_eq!(s.status_text(), "DOWN");
        assert!(!s.usable());
        force(&s, &b, true, t);
        assert_eq!(s.status_text(), "UP");
        s.set_stopping(true, &b);
        assert_eq!(s.status_text(), "NOLB");
        assert!(!s.usable());
        let ok = Outcome {
            status: CheckStatus::L4Ok,
            code: None,
            duration: Duration::ZERO,
            desc: String::new(),
        };
        apply(&s, &b, ok, t);
        assert_eq!(s.status_text(), "UP");
        assert!(s.usable());
    }
}
