//! What keeps a backend serving when its servers fail: active health checks, passive
//! outlier detection, circuit breakers with an optional queue, and retries within a
//! budget.
//!
//! A request meets them in this order (see `docs/resilience.md`):
//!
//! 1. the backend's in-flight limit ([`limits::Gate`]): a slot at once, a place in the
//!    queue, or 503 naming the limit;
//! 2. the balancer, which only sees servers that are ready, up by their checks
//!    ([`health`]) and not ejected ([`outlier`]), and skips servers at their own limit;
//! 3. the exchange, whose outcome feeds outlier detection;
//! 4. on a retryable failure, a retry: within the policy's attempts, the backend's retry
//!    budget and `max_retries`, after a backoff, to another server when there is one.
//!
//! State lives in [`crate::state`] (per backend and server, by name), so it survives a
//! reload; the logic here is written against an injected clock where time matters.

pub mod check;
pub mod health;
pub mod limits;
pub mod outlier;
pub mod retry;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use crate::snapshot::Snapshot;
use crate::state::{Live, ServerLive};

/// Starts, restarts or stops health checkers so that they match `snap`.
pub fn reconcile_checks(snap: &Snapshot, live: &Live, rt: &tokio::runtime::Handle) {
    let mut wanted = Vec::new();
    let mut unchecked = Vec::new();
    for be in &snap.backends {
        for s in &be.servers {
            match &s.check {
                Some(spec) => wanted.push(health::Checked {
                    backend: be.name.to_string(),
                    server: s.name.to_string(),
                    spec: spec.clone(),
                    live: s.live.clone(),
                    backend_live: be.live.clone(),
                }),
                None => unchecked.push((s.live.clone(), be.live.clone())),
            }
        }
    }
    live.checks().reconcile(wanted, unchecked, rt);
}

/// When each backend's outlier detection last ran.
#[derive(Default)]
pub struct OutlierClock {
    last: HashMap<Arc<str>, Instant>,
}

impl OutlierClock {
    /// Runs the outlier pass of every backend whose interval has passed.
    pub fn run(&mut self, snap: &Snapshot, now: Instant) {
        for be in &snap.backends {
            let Some(spec) = &be.outlier else {
                continue;
            };
            let last = self.last.entry(be.name.clone()).or_insert(now);
            if now.duration_since(*last) < spec.interval {
                continue;
            }
            *last = now;
            let servers: Vec<&ServerLive> = be.servers.iter().map(|s| &*s.live).collect();
            outlier::tick(spec, &servers, &be.live, now);
        }
        self.last
            .retain(|name, _| snap.backends.iter().any(|b| &b.name == name));
    }
}
