//! Choosing a server for each request.
//!
//! The balancer works on the backend's *members*: servers usable right now (ready, weight
//! above 0), the active ones, or the backup ones when no active server is usable. Members
//! and the algorithm's structure are rebuilt when the backend's epoch moves (a server
//! changed state or weight), so a pick does no scan of unusable servers.
//!
//! Each worker thread picks with a structure of its own (a request is picked for and
//! released on the worker that serves its connection), so picks on different workers
//! share no lock and no cache line; the loads `leastconn` and `random` compare are the
//! servers' shared in-flight counts.
//!
//! | algorithm    | structure                          | pick       |
//! |--------------|------------------------------------|------------|
//! | `roundrobin` | EDF heap of weighted deadlines      | O(log n)   |
//! | `static-rr`  | precomputed smooth weighted schedule| O(1)       |
//! | `leastconn`  | tournament tree of loads            | O(log n)   |
//! | `source`, `uri`, `hdr(name)` | weighted map table  | O(1)       |
//! | `random`     | weighted map table, two choices     | O(1)       |
//! | `maglev`     | Maglev lookup table                 | O(1)       |

pub mod edf;
pub mod hash;
pub mod leastconn;
pub mod maglev;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use edf::Edf;
use leastconn::LeastConn;

use crate::state::{BackendLive, ServerLive};

/// The algorithm and what it hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Algo {
    RoundRobin,
    StaticRr,
    LeastConn,
    /// Client address hash; the prefix lengths group clients of one network.
    Source {
        v4_mask: u8,
        v6_mask: u8,
    },
    Uri,
    Hdr(http::HeaderName),
    Random,
    Maglev,
}

impl Algo {
    /// Whether the algorithm uses a per-request hash key.
    pub fn hashes(&self) -> bool {
        matches!(
            self,
            Algo::Source { .. } | Algo::Uri | Algo::Hdr(_) | Algo::Maglev
        )
    }
}

/// A server as the balancer sees it.
pub struct Member {
    pub name: Arc<str>,
    pub live: Arc<ServerLive>,
    pub backup: bool,
}

#[derive(Default)]
struct Built {
    epoch: u64,
    valid: bool,
    /// Server indices of the current members.
    members: Vec<u32>,
    /// Member position of each server, for leastconn updates.
    pos_of: Vec<Option<u32>>,
    edf: Edf,
    schedule: Vec<u32>,
    cursor: usize,
    lc: Option<LeastConn>,
    /// Weighted map (server indices) for hashing and random.
    map: Vec<u32>,
    maglev: Vec<u32>,
}

/// Picks servers for one backend.
pub struct Balancer {
    algo: Algo,
    servers: Vec<Member>,
    backend: Arc<BackendLive>,
    all_backups: bool,
    /// One structure per worker thread.
    built: Box<[Shard]>,
}

/// A worker's structure, on a cache line of its own.
#[repr(align(128))]
#[derive(Default)]
struct Shard(Mutex<Built>);

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Smooth weighted round robin (nginx) unrolled into one period.
fn smooth_schedule(members: &[(u32, u32)]) -> Vec<u32> {
    let g = members.iter().fold(0, |g, (_, w)| gcd(g, *w)).max(1);
    let weights: Vec<i64> = members.iter().map(|(_, w)| i64::from(w / g)).collect();
    let total: i64 = weights.iter().sum();
    let mut current = vec![0i64; members.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for i in 0..members.len() {
            current[i] += weights[i];
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(members[best].0);
    }
    out
}

/// Each member repeated by its (gcd-reduced) weight.
fn weighted_map(members: &[(u32, u32)]) -> Vec<u32> {
    let g = members.iter().fold(0, |g, (_, w)| gcd(g, *w)).max(1);
    members
        .iter()
        .flat_map(|(i, w)| std::iter::repeat_n(*i, (w / g) as usize))
        .collect()
}

impl Balancer {
    pub fn new(
        algo: Algo,
        servers: Vec<Member>,
        backend: Arc<BackendLive>,
        all_backups: bool,
        workers: usize,
    ) -> Self {
        Self {
            algo,
            servers,
            backend,
            all_backups,
            built: (0..workers.max(1)).map(|_| Shard::default()).collect(),
        }
    }

    pub fn algo(&self) -> &Algo {
        &self.algo
    }

    fn rebuild(&self, b: &mut Built, epoch: u64) {
        let usable = |backup: bool| -> Vec<(u32, u32)> {
            self.servers
                .iter()
                .enumerate()
                .filter(|(_, s)| s.backup == backup && s.live.usable())
                .map(|(i, s)| (i as u32, s.live.weight()))
                .collect()
        };
        let mut members = usable(false);
        if members.is_empty() {
            members = usable(true);
            if !self.all_backups {
                members.truncate(1);
            }
        }
        b.epoch = epoch;
        b.valid = true;
        b.members = members.iter().map(|m| m.0).collect();
        b.pos_of = vec![None; self.servers.len()];
        for (p, (i, _)) in members.iter().enumerate() {
            b.pos_of[*i as usize] = Some(p as u32);
        }
        // Rotate the starting point so that many balancers do not all start on server 0.
        let start = if members.is_empty() {
            0
        } else {
            fastrand::usize(..members.len())
        };
        b.edf = Edf::new(&members, start);
        b.schedule = match self.algo {
            Algo::StaticRr => smooth_schedule(&members),
            _ => Vec::new(),
        };
        b.cursor = start;
        b.lc = match self.algo {
            Algo::LeastConn => {
                let weights: Vec<u32> = members.iter().map(|m| m.1).collect();
                let active: Vec<u64> = members
                    .iter()
                    .map(|m| self.servers[m.0 as usize].live.active.load(Relaxed))
                    .collect();
                Some(LeastConn::new(&weights, &active))
            }
            _ => None,
        };
        b.map = match self.algo {
            Algo::Source { .. } | Algo::Uri | Algo::Hdr(_) | Algo::Random => weighted_map(&members),
            _ => Vec::new(),
        };
        b.maglev = match self.algo {
            Algo::Maglev => {
                let entries: Vec<(&str, u32)> = members
                    .iter()
                    .map(|(i, w)| (&*self.servers[*i as usize].name, *w))
                    .collect();
                maglev::build(&entries)
                    .into_iter()
                    .map(|p| members[p as usize].0)
                    .collect()
            }
            _ => Vec::new(),
        };
    }

    /// The current worker's structure (its lock is never contended).
    fn lock(&self) -> std::sync::MutexGuard<'_, Built> {
        self.built[crate::worker::index() % self.built.len()]
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Picks a server index. `key` is the request's hash for hashing algorithms (`None`
    /// falls back to round robin); `avoid` is a server to skip when another is available.
    pub fn pick(&self, key: Option<u64>, avoid: Option<usize>) -> Option<usize> {
        self.pick_excluding(key, avoid.as_slice(), &[])
    }

    /// Picks a server index, skipping `avoid` (servers already tried) when another is
    /// usable, and never returning one of `exclude` (servers at their own limit).
    pub fn pick_excluding(
        &self,
        key: Option<u64>,
        avoid: &[usize],
        exclude: &[usize],
    ) -> Option<usize> {
        let epoch = self.backend.epoch.load(Relaxed);
        let mut b = self.lock();
        if !b.valid || b.epoch != epoch {
            self.rebuild(&mut b, epoch);
        }
        if b.members.is_empty() {
            return None;
        }
        let first = self.pick_in(&mut b, key)?;
        if !avoid.contains(&first) && !exclude.contains(&first) {
            return Some(first);
        }
        if b.members.len() == 1 {
            return (!exclude.contains(&first)).then_some(first);
        }
        // Another try without the hash, so that a hashed key can move.
        if let Some(second) = self.pick_in(&mut b, None)
            && !avoid.contains(&second)
            && !exclude.contains(&second)
        {
            return Some(second);
        }
        let n = b.members.len();
        let start = fastrand::usize(..n);
        let mut fallback = None;
        for k in 0..n {
            let m = b.members[(start + k) % n] as usize;
            if exclude.contains(&m) {
                continue;
            }
            if !avoid.contains(&m) {
                return Some(m);
            }
            fallback.get_or_insert(m);
        }
        fallback
    }

    fn pick_in(&self, b: &mut Built, key: Option<u64>) -> Option<usize> {
        let servers = &self.servers;
        match (&self.algo, key) {
            (Algo::StaticRr, _) => {
                let s = b.schedule[b.cursor % b.schedule.len()];
                b.cursor = b.cursor.wrapping_add(1);
                Some(s as usize)
            }
            (Algo::LeastConn, _) => {
                // Disjoint borrows of the members and the leastconn state: no copy.
                let Built { members, lc, .. } = b;
                let lc = lc.as_mut()?;
                let active = |p: usize| servers[members[p] as usize].live.active.load(Relaxed);
                lc.refresh_top(active, 4);
                let pos = lc.pick(active)?;
                Some(members[pos] as usize)
            }
            (Algo::Random, _) => {
                let m = &b.map;
                let x = m[fastrand::usize(..m.len())] as usize;
                let y = m[fastrand::usize(..m.len())] as usize;
                let load = |i: usize| {
                    let s = &servers[i].live;
                    (s.active.load(Relaxed) + 1) * 1024 / u64::from(s.weight().max(1))
                };
                Some(if load(y) < load(x) { y } else { x })
            }
            (Algo::Maglev, Some(k)) => {
                Some(b.maglev[(k % b.maglev.len() as u64) as usize] as usize)
            }
            (Algo::Source { .. } | Algo::Uri | Algo::Hdr(_), Some(k)) => {
                Some(b.map[(k % b.map.len() as u64) as usize] as usize)
            }
            _ => b.edf.pick().map(|i| i as usize),
        }
    }

    /// Tells the balancer that a request on server `idx` finished (leastconn bookkeeping).
    pub fn released(&self, idx: usize) {
        if self.algo != Algo::LeastConn {
            return;
        }
        let mut b = self.lock();
        if let (Some(Some(pos)), Some(lc)) = (b.pos_of.get(idx).copied(), b.lc.as_mut()) {
            lc.set_active(pos as usize, self.servers[idx].live.active.load(Relaxed));
        }
    }

    /// Usable servers (what `nbsrv` reports).
    pub fn usable_count(&self) -> usize {
        let active = self
            .servers
            .iter()
            .filter(|s| !s.backup && s.live.usable())
            .count();
        if active > 0 {
            active
        } else {
            self.servers
                .iter()
                .filter(|s| s.backup && s.live.usable())
                .count()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{AdminState, Live};

    fn backend(algo: Algo, weights: &[(u32, bool)]) -> (Balancer, Arc<Live>, Vec<Arc<ServerLive>>) {
        let live = Live::new();
        let be = live.backend("b");
        let mut lives = Vec::new();
        let members = weights
            .iter()
            .enumerate()
            .map(|(i, (w, backup))| {
                let l = live.server(
                    crate::state::ServerKey {
                        backend: "b",
                        server: &format!("s{i}"),
                    },
                    *w,
                    false,
                );
                lives.push(l.clone());
                Member {
                    name: format!("s{i}").into(),
                    live: l,
                    backup: *backup,
                }
            })
            .collect();
        (Balancer::new(algo, members, be, false, 1), live, lives)
    }

    fn shares(
        b: &Balancer,
        n: usize,
        picks: usize,
        key: impl Fn(usize) -> Option<u64>,
    ) -> Vec<f64> {
        let mut c = vec![0usize; n];
        for i in 0..picks {
            c[b.pick(key(i), None).unwrap()] += 1;
        }
        c.into_iter().map(|x| x as f64 / picks as f64).collect()
    }

    fn assert_shares(got: &[f64], want: &[f64], tol: f64) {
        for (g, w) in got.iter().zip(want) {
            assert!(
                (g - w).abs() <= tol,
                "shares {got:?}, wanted {want:?} within {tol}"
            );
        }
    }

    #[test]
    fn roundrobin_and_static_rr_follow_weights_exactly() {
        for algo in [Algo::RoundRobin, Algo::StaticRr] {
            let (b, _, _) = backend(algo, &[(3, false), (1, false), (1, false)]);
            assert_shares(&shares(&b, 3, 5000, |_| None), &[0.6, 0.2, 0.2], 0.001);
        }
    }

    #[test]
    fn static_rr_schedule_is_smooth() {
        let s = smooth_schedule(&[(0, 5), (1, 1), (2, 1)]);
        assert_eq!(s, vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn hashing_algorithms_are_sticky_and_weighted() {
        for algo in [
            Algo::Source {
                v4_mask: 32,
                v6_mask: 128,
            },
            Algo::Uri,
            Algo::Maglev,
        ] {
            let (b, _, _) = backend(algo.clone(), &[(2, false), (1, false), (1, false)]);
            let k = |i: usize| Some(hash::hash64(&(i as u64).to_le_bytes()));
            assert_shares(&shares(&b, 3, 20_000, k), &[0.5, 0.25, 0.25], 0.02);
            let first = b.pick(Some(42), None);
            assert!(
                (0..10).all(|_| b.pick(Some(42), None) == first),
                "{algo:?} is not sticky"
            );
        }
    }

    #[test]
    fn random_two_choices_prefers_less_loaded() {
        let (b, _, lives) = backend(Algo::Random, &[(1, false), (1, false)]);
        lives[0].active.store(50, Relaxed);
        let s = shares(&b, 2, 2000, |_| None);
        // Server 0 wins only when both draws land on it (one time in four).
        assert_shares(&s, &[0.25, 0.75], 0.05);
    }

    #[test]
    fn backup_used_only_when_no_active_server() {
        let (b, live, lives) = backend(Algo::RoundRobin, &[(1, false), (1, true), (1, true)]);
        assert!((0..10).all(|_| b.pick(None, None) == Some(0)));
        lives[0].set_admin(AdminState::Maint, &live.backend("b"));
        // Only the first backup, as HAProxy does without allbackups.
        assert!((0..10).all(|_| b.pick(None, None) == Some(1)));
        lives[1].set_admin(AdminState::Drain, &live.backend("b"));
        assert!((0..10).all(|_| b.pick(None, None) == Some(2)));
        lives[2].set_admin(AdminState::Maint, &live.backend("b"));
        assert_eq!(b.pick(None, None), None);
        assert_eq!(b.usable_count(), 0);
    }

    #[test]
    fn avoid_picks_another_server() {
        let (b, _, _) = backend(
            Algo::Source {
                v4_mask: 32,
                v6_mask: 128,
            },
            &[(1, false), (1, false)],
        );
        let first = b.pick(Some(7), None).unwrap();
        assert_ne!(b.pick(Some(7), Some(first)), Some(first));
    }

    #[test]
    fn leastconn_through_balancer() {
        let (b, _, lives) = backend(Algo::LeastConn, &[(1, false), (1, false)]);
        let mut guards = Vec::new();
        for _ in 0..6 {
            let i = b.pick(None, None).unwrap();
            guards.push((i, lives[i].start()));
        }
        assert_eq!(lives[0].active.load(Relaxed), 3);
        assert_eq!(lives[1].active.load(Relaxed), 3);
        // Server 1's requests finish; it becomes the least loaded.
        guards.retain(|(i, _)| *i == 0);
        b.released(1);
        assert_eq!(b.pick(None, None), Some(1));
    }
}
