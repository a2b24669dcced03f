//! Time bounds that stretch by how long the machine kept this process from running.
//!
//! The tests check protocol timings of a few hundred milliseconds (a VRRP takeover, a
//! server marked DOWN after `fall` checks). On a busy or oversubscribed machine the
//! scheduler (or the hypervisor) can hold every process for a second at a time, and a
//! plain bound then measures the machine, not the code. A meter thread sleeps in short
//! ticks and adds up how much longer than asked each tick took; a [`Budget`] allows its
//! limit plus the stall seen since it started. On a quiet machine that is the plain
//! bound; on a stalling one, the bound moves by exactly the time nothing could run.

#![allow(dead_code)]

use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const TICK: Duration = Duration::from_millis(2);
/// Oversleep up to this much is ordinary timer slack, not a stall.
const SLACK: Duration = Duration::from_millis(3);
/// However much the machine stalls, a budget ends this long after its limit.
const CAP: Duration = Duration::from_secs(30);

static STALLED_US: AtomicU64 = AtomicU64::new(0);
/// Ticks the meter has completed.
static TICKS: AtomicU64 = AtomicU64::new(0);

/// All the stall the meter has seen since it started (it starts on first use).
pub fn stalled() -> Duration {
    static START: Once = Once::new();
    START.call_once(|| {
        let spawned = std::thread::Builder::new()
            .name("stall-meter".into())
            .spawn(|| {
                loop {
                    let t = Instant::now();
                    std::thread::sleep(TICK);
                    let over = t.elapsed().saturating_sub(TICK + SLACK);
                    let us = u64::try_from(over.as_micros()).unwrap_or(u64::MAX);
                    STALLED_US.fetch_add(us, Ordering::Relaxed);
                    TICKS.fetch_add(1, Ordering::Release);
                }
            });
        if let Err(e) = spawned {
            panic!("cannot start the stall meter: {e}");
        }
    });
    Duration::from_micros(STALLED_US.load(Ordering::Relaxed))
}

/// The meter counts a stall when its own thread runs again, which may be well after the
/// thread that noticed the time: waits until the meter has completed two more ticks (at
/// most a few seconds), so that every stall before now is counted.
fn catch_up() {
    stalled();
    let t0 = TICKS.load(Ordering::Acquire);
    let waited = Instant::now();
    while TICKS.load(Ordering::Acquire) < t0 + 2 && waited.elapsed() < CATCH_UP {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// At most this long for the meter to catch up.
const CATCH_UP: Duration = Duration::from_secs(5);

/// Whether `took` fits once the meter has caught up.
fn fits_once_counted(took: Duration, allowed: impl Fn() -> Duration) -> bool {
    catch_up();
    took <= allowed()
}

/// A time limit measured in time this process could run.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    start: Instant,
    stall0: Duration,
    limit: Duration,
}

impl Budget {
    pub fn new(limit: Duration) -> Self {
        let stall0 = stalled();
        Budget {
            start: Instant::now(),
            stall0,
            limit,
        }
    }

    /// Stall seen since the budget started.
    pub fn stall(&self) -> Duration {
        stalled().saturating_sub(self.stall0)
    }

    /// The stall since the budget started, once the meter has caught up with a stall
    /// that may have just ended.
    pub fn settled_stall(&self) -> Duration {
        catch_up();
        self.stall()
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// The limit plus the stall so far (at most [`CAP`] more).
    pub fn allowed(&self) -> Duration {
        self.limit + self.stall().min(CAP)
    }

    /// Whether more than the allowed time has passed.
    pub fn spent(&self) -> bool {
        let now = self.elapsed();
        now > self.allowed() && !fits_once_counted(now, || self.allowed())
    }

    /// Whether `took`, measured inside this budget's window, is within the limit once
    /// the stall is allowed for.
    pub fn fits(&self, took: Duration) -> bool {
        took <= self.allowed() || fits_once_counted(took, || self.allowed())
    }

    /// `took` and the stall, for messages: "412ms (stall 0ns)".
    pub fn show(&self, took: Duration) -> String {
        format!(
            "{took:?} (limit {:?}, stall {:?})",
            self.limit,
            self.stall()
        )
    }
}
