//! Least-connections selection with a tournament tree: leaves hold each server's load
//! (requests in flight relative to weight), inner nodes the smaller child, so the least
//! loaded server is at the root and an update costs O(log n). Equal loads go to the server
//! picked least recently, which round-robins between idle servers as HAProxy does.

/// Load key: scaled load, then last pick sequence.
type Key = (u64, u64);

#[derive(Debug)]
pub struct LeastConn {
    /// Number of leaves (a power of two).
    size: usize,
    /// `tree[1]` is the root; leaf `i` is at `size + i`; values are leaf indices.
    tree: Vec<u32>,
    keys: Vec<Key>,
    weights: Vec<u32>,
    seq: u64,
}

const EMPTY: Key = (u64::MAX, u64::MAX);

fn load(active: u64, weight: u32) -> u64 {
    // +1 so that among idle servers the heavier one counts as less loaded.
    (active + 1).saturating_mul(1 << 16) / u64::from(weight.max(1))
}

impl LeastConn {
    /// A tree over servers with these weights and current in-flight counts.
    pub fn new(weights: &[u32], active: &[u64]) -> Self {
        let n = weights.len().max(1);
        let size = n.next_power_of_two();
        let mut keys = vec![EMPTY; size];
        for (i, w) in weights.iter().enumerate() {
            if *w > 0 {
                keys[i] = (load(active[i], *w), i as u64);
            }
        }
        let mut t = Self {
            size,
            tree: vec![0; 2 * size],
            keys,
            weights: weights.to_vec(),
            seq: weights.len() as u64,
        };
        for i in 0..size {
            t.tree[size + i] = i as u32;
        }
        for p in (1..size).rev() {
            t.tree[p] = t.min_child(p);
        }
        t
    }

    fn min_child(&self, p: usize) -> u32 {
        let (a, b) = (self.tree[2 * p], self.tree[2 * p + 1]);
        if self.keys[b as usize] < self.keys[a as usize] {
            b
        } else {
            a
        }
    }

    fn update(&mut self, i: usize, active: u64) {
        if i >= self.weights.len() || self.weights[i] == 0 {
            return;
        }
        self.keys[i].0 = load(active, self.weights[i]);
        let mut p = (self.size + i) / 2;
        while p >= 1 {
            self.tree[p] = self.min_child(p);
            p /= 2;
        }
    }

    /// The least loaded server; `active_after` is its in-flight count once this request
    /// counts (the caller increments its own counter).
    pub fn pick(&mut self, active_of: impl Fn(usize) -> u64) -> Option<usize> {
        let i = self.tree[1] as usize;
        if self.keys[i] == EMPTY {
            return None;
        }
        self.seq += 1;
        self.keys[i].1 = self.seq;
        self.update(i, active_of(i) + 1);
        Some(i)
    }

    /// Records a changed in-flight count of server `i`.
    pub fn set_active(&mut self, i: usize, active: u64) {
        self.update(i, active);
    }

    /// Brings the least loaded server's load up to date with `active_of` until it holds
    /// (at most `rounds` times): other workers' requests move the loads between this
    /// tree's own updates.
    pub fn refresh_top(&mut self, active_of: impl Fn(usize) -> u64, rounds: usize) {
        for _ in 0..rounds {
            let i = self.tree[1] as usize;
            if self.keys[i] == EMPTY {
                return;
            }
            let active = active_of(i);
            if self.keys[i].0 == load(active, self.weights[i]) {
                return;
            }
            self.update(i, active);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_least_loaded_server_is_brought_up_to_date_before_a_pick() {
        // Two idle servers; then another worker puts 10 requests on server 0, which this
        // tree has not seen.
        let mut t = LeastConn::new(&[1, 1], &[0, 0]);
        let active = [10u64, 0];
        t.refresh_top(|i| active[i], 4);
        assert_eq!(t.pick(|i| active[i]), Some(1));
    }

    #[test]
    fn leastconn_picks_least_loaded_and_rotates_ties() {
        let mut active = vec![3u64, 0, 0];
        let mut t = LeastConn::new(&[1, 1, 1], &active);
        let a = t.pick(|i| active[i]).unwrap();
        active[a] += 1;
        let b = t.pick(|i| active[i]).unwrap();
        active[b] += 1;
        assert_ne!(a, 0);
        assert_ne!(b, 0);
        assert_ne!(a, b, "idle servers take turns");
        // Server 0 finishes its requests and becomes the least loaded.
        active[0] = 0;
        t.set_active(0, 0);
        assert_eq!(t.pick(|i| active[i]), Some(0));
    }

    #[test]
    fn leastconn_respects_weight() {
        let mut active = vec![0u64, 0];
        let mut t = LeastConn::new(&[3, 1], &active);
        let mut counts = [0; 2];
        for _ in 0..40 {
            let i = t.pick(|i| active[i]).unwrap();
            active[i] += 1;
            counts[i] += 1;
        }
        // With nothing completing, in-flight counts follow the weights.
        assert!((29..=31).contains(&counts[0]), "{counts:?}");
    }
}
