//! Passive outlier detection with Envoy's semantics: servers that fail requests in a row,
//! or fail too large a share of them over an interval, are ejected from balancing for a
//! time that grows with each ejection; at most a share of a backend's servers are ejected
//! at once. Every function takes the time as an argument, so the logic is tested with an
//! injected clock.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use rampart_config::resilience::OutlierDetection;

use crate::state::{BackendLive, ServerLive};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Compiled settings.
#[derive(Debug, Clone, PartialEq)]
pub struct OutlierSpec {
    pub consecutive_5xx: u32,
    pub consecutive_gateway: u32,
    /// (threshold as a fraction, request volume, minimum hosts).
    pub failure_percentage: Option<(f64, u64, usize)>,
    pub interval: Duration,
    pub base_ejection_time: Duration,
    pub max_ejection_time: Duration,
    pub max_ejection_fraction: f64,
}

impl From<&OutlierDetection> for OutlierSpec {
    fn from(o: &OutlierDetection) -> Self {
        Self {
            consecutive_5xx: o.consecutive_5xx,
            consecutive_gateway: o.consecutive_gateway_failure,
            failure_percentage: o.failure_percentage.as_ref().map(|f| {
                (
                    f.threshold.fraction(),
                    u64::from(f.request_volume),
                    f.minimum_hosts as usize,
                )
            }),
            interval: o.interval,
            base_ejection_time: o.base_ejection_time,
            max_ejection_time: o.max_ejection_time.max(o.base_ejection_time),
            max_ejection_fraction: o.max_ejection_percent.fraction(),
        }
    }
}

/// How a request to a server ended, as outlier detection sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Result {
    Status(u16),
    /// No response: connection refused or reset, timeout, invalid answer.
    LocalFailure,
}

/// A server's ejection history.
#[derive(Debug, Default)]
pub struct Ejection {
    /// When the current ejection began.
    pub since: Option<Instant>,
    /// Grows with each ejection; multiplies the base ejection time.
    pub multiplier: u32,
    /// Whether the server was ejected during the current interval.
    pub this_interval: bool,
}

/// Per-server counters and ejection state.
#[derive(Debug, Default)]
pub struct OutlierLive {
    pub consecutive_5xx: AtomicU32,
    pub consecutive_gateway: AtomicU32,
    pub interval_total: AtomicU64,
    pub interval_failed: AtomicU64,
    /// Ejections so far.
    pub ejections: AtomicU64,
    pub ejection: Mutex<Ejection>,
}

impl OutlierSpec {
    /// How long the `multiplier`th ejection lasts.
    pub fn ejection_time(&self, multiplier: u32) -> Duration {
        self.base_ejection_time
            .saturating_mul(multiplier.max(1))
            .min(self.max_ejection_time)
    }

    /// Whether one more of `total` servers may be ejected while `ejected` are.
    pub fn may_eject(&self, ejected: u64, total: usize) -> bool {
        ejected == 0 || ((ejected + 1) as f64) <= self.max_ejection_fraction * total as f64
    }
}

/// Ejects `server` if the backend allows one more ejection. Returns whether it did.
pub fn eject(
    spec: &OutlierSpec,
    server: &ServerLive,
    backend: &BackendLive,
    total: usize,
    now: Instant,
) -> bool {
    if server.ejected() || !spec.may_eject(backend.ejected.load(Relaxed), total) {
        return false;
    }
    let mut e = lock(&server.outlier.ejection);
    e.since = Some(now);
    e.multiplier = e.multiplier.saturating_add(1);
    e.this_interval = true;
    drop(e);
    server.outlier.ejections.fetch_add(1, Relaxed);
    server.outlier.consecutive_5xx.store(0, Relaxed);
    server.outlier.consecutive_gateway.store(0, Relaxed);
    server.set_ejected(true, backend);
    true
}

/// Records the result of one request to `server` (one of `total` in its backend),
/// ejecting it when a consecutive-failure threshold is reached.
pub fn record(
    spec: &OutlierSpec,
    server: &ServerLive,
    backend: &BackendLive,
    total: usize,
    result: Result,
    now: Instant,
) {
    let o = &server.outlier;
    o.interval_total.fetch_add(1, Relaxed);
    let (fivexx, gateway) = match result {
        Result::LocalFailure => (true, true),
        Result::Status(s) => ((500..600).contains(&s), matches!(s, 502..=504)),
    };
    if !fivexx {
        o.consecutive_5xx.store(0, Relaxed);
        o.consecutive_gateway.store(0, Relaxed);
        return;
    }
    o.interval_failed.fetch_add(1, Relaxed);
    let c5 = o.consecutive_5xx.fetch_add(1, Relaxed) + 1;
    let cg = if gateway {
        o.consecutive_gateway.fetch_add(1, Relaxed) + 1
    } else {
        o.consecutive_gateway.store(0, Relaxed);
        0
    };
    let by_5xx = spec.consecutive_5xx > 0 && c5 >= spec.consecutive_5xx;
    let by_gateway = spec.consecutive_gateway > 0 && cg >= spec.consecutive_gateway;
    if (by_5xx || by_gateway) && eject(spec, server, backend, total, now) {
        tracing::warn!(
            consecutive = c5.max(cg),
            "server ejected by outlier detection"
        );
    }
}

/// The periodic pass, every `interval`: returns ejected servers whose time is up, works
/// down the multiplier of servers that stayed well, and judges failure percentages.
pub fn tick(spec: &OutlierSpec, servers: &[&ServerLive], backend: &BackendLive, now: Instant) {
    for s in servers {
        let mut e = lock(&s.outlier.ejection);
        match e.since {
            Some(since) if now >= since + spec.ejection_time(e.multiplier) => {
                e.since = None;
                drop(e);
                s.outlier.consecutive_5xx.store(0, Relaxed);
                s.outlier.consecutive_gateway.store(0, Relaxed);
                s.set_ejected(false, backend);
            }
            Some(_) => {}
            None => {
                if !e.this_interval && e.multiplier > 0 {
                    e.multiplier -= 1;
                }
            }
        }
    }
    if let Some((threshold, volume, min_hosts)) = spec.failure_percentage {
        let judged: Vec<(&ServerLive, u64, u64)> = servers
            .iter()
            .map(|s| {
                (
                    *s,
                    s.outlier.interval_total.load(Relaxed),
                    s.outlier.interval_failed.load(Relaxed),
                )
            })
            .filter(|(_, total, _)| *total >= volume.max(1))
            .collect();
        if judged.len() >= min_hosts {
            for (s, total, failed) in judged {
                if failed as f64 >= threshold * total as f64 {
                    eject(spec, s, backend, servers.len(), now);
                }
            }
        }
    }
    for s in servers {
        s.outlier.interval_total.store(0, Relaxed);
        s.outlier.interval_failed.store(0, Relaxed);
        lock(&s.outlier.ejection).this_interval = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn spec() -> OutlierSpec {
        OutlierSpec {
            consecutive_5xx: 3,
            consecutive_gateway: 0,
            failure_percentage: None,
            interval: Duration::from_secs(1),
            base_ejection_time: Duration::from_secs(10),
            max_ejection_time: Duration::from_secs(25),
            max_ejection_fraction: 0.5,
        }
    }

    fn servers(n: usize) -> (Arc<BackendLive>, Vec<Arc<ServerLive>>) {
        let live = crate::state::Live::new();
        let b = live.backend("b");
        let s = (0..n)
            .map(|i| {
                live.server(
                    crate::state::ServerKey {
                        backend: "b",
                        server: &format!("s{i}"),
                    },
                    1,
                    false,
                )
            })
            .collect();
        (b, s)
    }

    #[test]
    fn consecutive_5xx_ejects_and_time_grows() {
        let sp = spec();
        let (b, s) = servers(4);
        let t0 = Instant::now();
        record(&sp, &s[0], &b, 4, Result::Status(500), t0);
        record(&sp, &s[0], &b, 4, Result::Status(500), t0);
        record(&sp, &s[0], &b, 4, Result::Status(200), t0);
        record(&sp, &s[0], &b, 4, Result::Status(503), t0);
        record(&sp, &s[0], &b, 4, Result::LocalFailure, t0);
        assert!(!s[0].ejected(), "a success in between resets the count");
        record(&sp, &s[0], &b, 4, Result::Status(502), t0);
        assert!(s[0].ejected());
        assert!(!s[0].usable());
        let all: Vec<&ServerLive> = s.iter().map(|x| &**x).collect();
        tick(&sp, &all, &b, t0 + Duration::from_secs(9));
        assert!(s[0].ejected());
        tick(&sp, &all, &b, t0 + Duration::from_secs(10));
        assert!(!s[0].ejected());
        // Ejected again at once: twice the base time.
        let t1 = t0 + Duration::from_secs(11);
        for _ in 0..3 {
            record(&sp, &s[0], &b, 4, Result::Status(500), t1);
        }
        assert!(s[0].ejected());
        tick(&sp, &all, &b, t1 + Duration::from_secs(19));
        assert!(s[0].ejected());
        tick(&sp, &all, &b, t1 + Duration::from_secs(20));
        assert!(!s[0].ejected());
        assert_eq!(s[0].outlier.ejections.load(Relaxed), 2);
        // Capped at max_ejection_time.
        assert_eq!(sp.ejection_time(7), Duration::from_secs(25));
        // Quiet intervals work the multiplier back down.
        for k in 0..3 {
            tick(&sp, &all, &b, t1 + Duration::from_secs(21 + k));
        }
        assert_eq!(s[0].outlier.ejection.lock().unwrap().multiplier, 0);
    }

    #[test]
    fn gateway_failures_count_only_502_to_504() {
        let mut sp = spec();
        sp.consecutive_5xx = 0;
        sp.consecutive_gateway = 2;
        let (b, s) = servers(2);
        let t = Instant::now();
        record(&sp, &s[0], &b, 2, Result::Status(504), t);
        record(&sp, &s[0], &b, 2, Result::Status(500), t);
        record(&sp, &s[0], &b, 2, Result::Status(503), t);
        assert!(!s[0].ejected());
        record(&sp, &s[0], &b, 2, Result::LocalFailure, t);
        assert!(s[0].ejected());
    }

    #[test]
    fn max_ejection_percent_is_respected_but_one_may_go() {
        let mut sp = spec();
        let (b, s) = servers(3);
        let t = Instant::now();
        for srv in &s {
            for _ in 0..5 {
                record(&sp, srv, &b, 3, Result::Status(503), t);
            }
        }
        // 50% of 3 servers: only one.
        assert_eq!(s.iter().filter(|x| x.ejected()).count(), 1);
        assert_eq!(b.ejected.load(Relaxed), 1);
        // 10% of 3 servers rounds to none, but one may always be ejected.
        sp.max_ejection_fraction = 0.1;
        let (b, s) = servers(3);
        for srv in &s {
            for _ in 0..5 {
                record(&sp, srv, &b, 3, Result::Status(503), t);
            }
        }
        assert_eq!(s.iter().filter(|x| x.ejected()).count(), 1);
    }

    #[test]
    fn failure_percentage_needs_volume_and_hosts() {
        let mut sp = spec();
        sp.consecutive_5xx = 0;
        sp.failure_percentage = Some((0.5, 10, 2));
        sp.max_ejection_fraction = 1.0;
        let (b, s) = servers(3);
        let all: Vec<&ServerLive> = s.iter().map(|x| &**x).collect();
        let t = Instant::now();
        // s0 fails 6 of 10, s1 fails 1 of 10, s2 has too few requests.
        for i in 0..10 {
            let st = if i < 6 { 500 } else { 200 };
            record(&sp, &s[0], &b, 3, Result::Status(st), t);
            let st = if i < 1 { 500 } else { 200 };
            record(&sp, &s[1], &b, 3, Result::Status(st), t);
        }
        record(&sp, &s[2], &b, 3, Result::Status(500), t);
        tick(&sp, &all, &b, t);
        assert!(s[0].ejected() && !s[1].ejected() && !s[2].ejected());
        // Counters restart each interval; one host over the volume is not enough.
        sp.failure_percentage = Some((0.5, 10, 3));
        for _ in 0..10 {
            record(&sp, &s[1], &b, 3, Result::Status(500), t);
        }
        tick(&sp, &all, &b, t + Duration::from_secs(1));
        assert!(!s[1].ejected());
    }
}
