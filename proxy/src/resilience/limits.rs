//! Circuit breakers: the backend's in-flight limit with its FIFO queue, the retry budget,
//! and the retry backoff.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::error::{ErrorKind, ProxyError};
use crate::state::{BackendLive, Limit};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How a backend limits requests in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GateLimits {
    pub max_requests: u64,
    pub max_pending: u64,
    /// Waiting time in the queue; `None`: no queue, 503 at once.
    pub queue: Option<Duration>,
}

/// A backend's requests in flight, and the queue of requests waiting for a slot, served in
/// arrival order. Shared by every worker thread.
#[derive(Default)]
pub struct Gate {
    inflight: AtomicU64,
    pending: AtomicU64,
    /// Most requests ever waiting at once (HAProxy's `qmax`).
    pub pending_max: AtomicU64,
    waiters: Mutex<VecDeque<oneshot::Sender<()>>>,
}

/// A slot under a backend's in-flight limit; frees it (or hands it to the first waiter)
/// when dropped.
pub struct Slot(Arc<BackendLive>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.gate.release();
    }
}

impl Gate {
    /// Requests holding a slot.
    pub fn inflight(&self) -> u64 {
        self.inflight.load(Relaxed)
    }

    /// Requests waiting in the queue.
    pub fn pending(&self) -> u64 {
        self.pending.load(Relaxed)
    }

    fn try_take(&self, max: u64) -> bool {
        let mut cur = self.inflight.load(Relaxed);
        loop {
            if cur >= max {
                return false;
            }
            match self
                .inflight
                .compare_exchange_weak(cur, cur + 1, Relaxed, Relaxed)
            {
                Ok(_) => return true,
                Err(c) => cur = c,
            }
        }
    }

    fn release(&self) {
        // Hand the slot to the oldest waiter still waiting; else free it.
        let mut q = lock(&self.waiters);
        while let Some(w) = q.pop_front() {
            if w.send(()).is_ok() {
                return;
            }
        }
        self.inflight.fetch_sub(1, Relaxed);
    }

    /// Takes a slot of `backend`'s gate: at once when one is free and nobody waits, else
    /// in the queue (when there is one) for up to its timeout. `Err` names the limit that
    /// refused it.
    pub async fn acquire(
        backend: &Arc<BackendLive>,
        limits: GateLimits,
    ) -> Result<Slot, ProxyError> {
        let this = &backend.gate;
        let slot = || Slot(backend.clone());
        this.acquire_in(limits, slot).await
    }

    async fn acquire_in(
        &self,
        limits: GateLimits,
        slot: impl Fn() -> Slot,
    ) -> Result<Slot, ProxyError> {
        if self.pending.load(Relaxed) == 0 && self.try_take(limits.max_requests) {
            return Ok(slot());
        }
        let Some(timeout) = limits.queue else {
            return Err(overloaded(Limit::MaxRequests));
        };
        let rx = {
            let mut q = lock(&self.waiters);
            // Forget waiters that gave up; then re-check: a slot may have been freed.
            q.retain(|w| !w.is_closed());
            if q.is_empty() && self.try_take(limits.max_requests) {
                return Ok(slot());
            }
            if self.pending.load(Relaxed) >= limits.max_pending {
                return Err(overloaded(Limit::MaxPendingRequests));
            }
            let (tx, rx) = oneshot::channel();
            q.push_back(tx);
            let n = self.pending.fetch_add(1, Relaxed) + 1;
            self.pending_max.fetch_max(n, Relaxed);
            rx
        };
        let mut rx = rx;
        let got = tokio::time::timeout(timeout, &mut rx).await;
        self.pending.fetch_sub(1, Relaxed);
        match got {
            Ok(Ok(())) => Ok(slot()),
            _ => {
                // A slot handed over just as the wait ended is still ours.
                rx.close();
                if rx.try_recv().is_ok() {
                    return Ok(slot());
                }
                lock(&self.waiters).retain(|w| !w.is_closed());
                Err(ProxyError::new(
                    ErrorKind::QueueTimeout,
                    format!("no slot within the queue timeout of {timeout:?}"),
                ))
            }
        }
    }
}

/// The error of a request refused by a circuit breaker limit.
pub fn overloaded(limit: Limit) -> ProxyError {
    ProxyError::new(
        ErrorKind::Overloaded(limit),
        format!("circuit breaker: {} reached", limit.as_str()),
    )
}

/// Requests and retries of a backend over the last [`BUDGET_WINDOW`] seconds, in
/// one-second buckets of atomics: every request deposits and every retry withdraws, from
/// all workers at once, so there is no lock. A bucket is recycled by the first request of
/// its new second; a count that races with that recycling may be lost, which a budget
/// (an approximate ratio) tolerates.
#[derive(Default)]
pub struct BudgetWindow {
    buckets: [Bucket; BUDGET_WINDOW as usize],
}

#[derive(Default)]
struct Bucket {
    sec: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
}

/// Seconds a retry budget looks back.
pub const BUDGET_WINDOW: u64 = 10;

impl BudgetWindow {
    fn bucket(&self, sec: u64) -> &Bucket {
        let b = &self.buckets[(sec % BUDGET_WINDOW) as usize];
        let seen = b.sec.load(Relaxed);
        if seen != sec && b.sec.compare_exchange(seen, sec, Relaxed, Relaxed).is_ok() {
            b.requests.store(0, Relaxed);
            b.retries.store(0, Relaxed);
        }
        b
    }

    fn totals(&self, sec: u64) -> (u64, u64) {
        self.buckets
            .iter()
            .filter(|b| {
                let s = b.sec.load(Relaxed);
                s + BUDGET_WINDOW > sec && s <= sec
            })
            .fold((0, 0), |(r, t), b| {
                (r + b.requests.load(Relaxed), t + b.retries.load(Relaxed))
            })
    }

    /// Counts a first attempt at second `sec`.
    pub fn deposit(&self, sec: u64) {
        self.bucket(sec).requests.fetch_add(1, Relaxed);
    }

    /// Takes a retry from the budget if it allows one: retries over the window may reach
    /// `ratio` of the requests plus `min_per_second` for each second of the window.
    pub fn withdraw(&self, sec: u64, ratio: f64, min_per_second: u32) -> bool {
        let b = self.bucket(sec);
        let (requests, retries) = self.totals(sec);
        let allowed = requests as f64 * ratio + f64::from(min_per_second) * BUDGET_WINDOW as f64;
        if (retries + 1) as f64 > allowed {
            return false;
        }
        b.retries.fetch_add(1, Relaxed);
        true
    }
}

/// The wait before retry number `n` (from 1): full jitter over `base * 2^(n-1)`, capped
/// at `max`. `unit` is a random number in [0, 1).
pub fn backoff(base: Duration, max: Duration, n: u32, unit: f64) -> Duration {
    let exp = base.saturating_mul(1u32 << n.saturating_sub(1).min(20));
    exp.min(max).mul_f64(unit.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_allows_ratio_plus_floor() {
        let w = BudgetWindow::default();
        for _ in 0..100 {
            w.deposit(1000);
        }
        // 20% of 100 plus 1/s over 10 s: 30 retries.
        let granted = (0..100).filter(|_| w.withdraw(1000, 0.2, 1)).count();
        assert_eq!(granted, 30);
        // Ten seconds later the old requests and retries are out of the window.
        assert!(w.withdraw(1010, 0.0, 1));
        let more = (0..100).filter(|_| w.withdraw(1010, 0.0, 1)).count();
        assert_eq!(more, 9);
    }

    #[test]
    fn budget_without_floor_needs_traffic() {
        let w = BudgetWindow::default();
        assert!(!w.withdraw(5, 0.5, 0));
        w.deposit(5);
        w.deposit(6);
        assert!(w.withdraw(6, 0.5, 0));
        assert!(!w.withdraw(6, 0.5, 0));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Duration::from_millis(25);
        let m = Duration::from_millis(250);
        assert_eq!(
            backoff(b, m, 1, 0.999_999),
            Duration::from_millis(25).mul_f64(0.999_999)
        );
        assert_eq!(backoff(b, m, 2, 0.5), Duration::from_millis(25));
        assert_eq!(backoff(b, m, 3, 0.5), Duration::from_millis(50));
        assert_eq!(backoff(b, m, 10, 0.5), Duration::from_millis(125));
        assert_eq!(backoff(b, m, 40, 1.0), m);
        assert_eq!(backoff(b, m, 3, 0.0), Duration::ZERO);
    }

    fn backend() -> Arc<BackendLive> {
        crate::state::Live::new().backend("b")
    }

    #[tokio::test]
    async fn gate_refuses_without_queue_and_queues_in_order() {
        let b = backend();
        let g = &b.gate;
        let no_queue = GateLimits {
            max_requests: 1,
            max_pending: 10,
            queue: None,
        };
        let s1 = Gate::acquire(&b, no_queue).await.unwrap();
        let e = Gate::acquire(&b, no_queue).await.err().unwrap();
        assert_eq!(e.kind, ErrorKind::Overloaded(Limit::MaxRequests));
        drop(s1);
        assert_eq!(g.inflight(), 0);

        let queued = GateLimits {
            max_requests: 1,
            max_pending: 1,
            queue: Some(Duration::from_secs(5)),
        };
        let s1 = Gate::acquire(&b, queued).await.unwrap();
        let waiter = async { Gate::acquire(&b, queued).await.map(|_| ()) };
        let (r, ()) = tokio::join!(waiter, async {
            tokio::task::yield_now().await;
            // One waits; a third is over max_pending.
            assert_eq!(g.pending(), 1);
            let e = Gate::acquire(&b, queued).await.err().unwrap();
            assert_eq!(e.kind, ErrorKind::Overloaded(Limit::MaxPendingRequests));
            drop(s1);
        });
        assert!(r.is_ok());
        assert_eq!(g.inflight(), 0);
        assert_eq!(g.pending_max.load(Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn gate_queue_times_out() {
        let b = backend();
        let g = &b.gate;
        let l = GateLimits {
            max_requests: 1,
            max_pending: 10,
            queue: Some(Duration::from_millis(100)),
        };
        let _s = Gate::acquire(&b, l).await.unwrap();
        let e = Gate::acquire(&b, l).await.err().unwrap();
        assert_eq!(e.kind, ErrorKind::QueueTimeout);
        assert_eq!(g.pending(), 0);
        assert_eq!(g.inflight(), 1);
    }
}
