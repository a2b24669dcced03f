//! Earliest-deadline-first weighted round robin, as Envoy schedules weighted hosts: each
//! server's next turn is one period (1/weight) after its last, and the earliest turn goes
//! next. Picks are O(log n), heavy servers are interleaved with light ones rather than
//! served in bursts, and any weight change just rebuilds the heap.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

#[derive(Debug, Clone, Copy)]
struct Turn {
    deadline: f64,
    /// Insertion order, so equal deadlines go in a stable order.
    order: u64,
    idx: u32,
    period: f64,
}

impl PartialEq for Turn {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Turn {}
impl PartialOrd for Turn {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Turn {
    // Reversed: BinaryHeap is a max-heap and the earliest deadline must come out first.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .deadline
            .total_cmp(&self.deadline)
            .then(other.order.cmp(&self.order))
    }
}

/// The scheduler state.
#[derive(Debug, Default)]
pub struct Edf {
    heap: BinaryHeap<Turn>,
    order: u64,
}

impl Edf {
    /// A schedule over `(index, weight)`; weight-0 entries are left out. `start` rotates
    /// the starting point so that several schedulers do not all begin with the same server.
    pub fn new(entries: &[(u32, u32)], start: usize) -> Self {
        let mut e = Edf::default();
        let n = entries.len().max(1);
        for k in 0..entries.len() {
            let (idx, w) = entries[(k + start) % n];
            if w == 0 {
                continue;
            }
            let period = 1.0 / f64::from(w);
            e.order += 1;
            e.heap.push(Turn {
                deadline: period,
                order: e.order,
                idx,
                period,
            });
        }
        e
    }

    /// The next index.
    pub fn pick(&mut self) -> Option<u32> {
        let mut t = self.heap.pop()?;
        let idx = t.idx;
        t.deadline += t.period;
        self.order += 1;
        t.order = self.order;
        self.heap.push(t);
        Some(idx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edf_honours_weights_and_interleaves() {
        let mut e = Edf::new(&[(0, 5), (1, 1), (2, 1)], 0);
        let seq: Vec<u32> = (0..7).map(|_| e.pick().unwrap()).collect();
        assert_eq!(seq.iter().filter(|i| **i == 0).count(), 5);
        // Not five in a row: the light servers are interleaved.
        assert!(seq.windows(2).any(|w| w[0] != 0 && w[1] == 0) || seq[0] != 0);
        let mut e = Edf::new(&[(0, 2), (1, 0)], 0);
        assert!((0..10).all(|_| e.pick() == Some(0)));
        assert!(Edf::new(&[], 0).pick().is_none());
    }
}
