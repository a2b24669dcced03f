//! Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable Software Network
//! Load Balancer", NSDI 2016, section 3.4), with Envoy's weighting: a server of the highest
//! weight claims a slot in every round, one of a third of that weight in every third round.
//!
//! Each server walks its own permutation of the table (offset and skip from two hashes of
//! its name) and claims the first free slot. When a server leaves, only a small fraction
//! of the slots of the other servers move; the test below bounds it.

use super::hash::hash64_seeded;

/// Table size: a prime, so every skip walks the whole table.
pub const SMALL_TABLE: usize = 65_537;
const LARGE_TABLE: usize = 655_373;

/// Builds the lookup table for `(name, weight)` entries; slots hold entry indices.
pub fn build(entries: &[(&str, u32)]) -> Vec<u32> {
    let live: Vec<(usize, &str, u64)> = entries
        .iter()
        .enumerate()
        .filter(|(_, (_, w))| *w > 0)
        .map(|(i, (n, w))| (i, *n, u64::from(*w)))
        .collect();
    if live.is_empty() {
        return Vec::new();
    }
    let m = if live.len() * 100 > SMALL_TABLE {
        LARGE_TABLE
    } else {
        SMALL_TABLE
    };
    let max_w = live.iter().map(|e| e.2).max().unwrap_or(1);
    struct E {
        idx: u32,
        offset: u64,
        skip: u64,
        next: u64,
        weight: u64,
        target: u64,
    }
    let mut es: Vec<E> = live
        .iter()
        .map(|(i, n, w)| E {
            idx: *i as u32,
            offset: hash64_seeded(n.as_bytes(), 0) % m as u64,
            skip: hash64_seeded(n.as_bytes(), 1) % (m as u64 - 1) + 1,
            next: 0,
            weight: *w,
            target: 0,
        })
        .collect();
    let mut table = vec![u32::MAX; m];
    let mut filled = 0usize;
    let mut iteration: u64 = 1;
    while filled < m {
        for e in es.iter_mut() {
            if filled >= m {
                break;
            }
            if iteration * e.weight < e.target {
                continue;
            }
            e.target += max_w;
            loop {
                let c = ((e.offset + e.skip * e.next) % m as u64) as usize;
                e.next += 1;
                if table[c] == u32::MAX {
                    table[c] = e.idx;
                    filled += 1;
                    break;
                }
            }
        }
        iteration += 1;
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::hash::hash64;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("srv{i}")).collect()
    }

    #[test]
    fn maglev_spreads_evenly_and_by_weight() {
        let n = names(4);
        let entries: Vec<(&str, u32)> = n.iter().map(|s| (s.as_str(), 1)).collect();
        let t = build(&entries);
        let mut counts = [0usize; 4];
        for s in &t {
            counts[*s as usize] += 1;
        }
        for c in counts {
            let share = c as f64 / t.len() as f64;
            assert!((share - 0.25).abs() < 0.01, "share {share}");
        }
        let entries = vec![(n[0].as_str(), 3), (n[1].as_str(), 1)];
        let t = build(&entries);
        let heavy = t.iter().filter(|s| **s == 0).count() as f64 / t.len() as f64;
        assert!((heavy - 0.75).abs() < 0.01, "heavy share {heavy}");
    }

    #[test]
    fn maglev_removal_moves_only_few_other_keys() {
        let n = names(10);
        let all: Vec<(&str, u32)> = n.iter().map(|s| (s.as_str(), 1)).collect();
        let before = build(&all);
        // srv3 leaves: index 3 gets weight 0 (indices stay the same).
        let mut without = all.clone();
        without[3].1 = 0;
        let after = build(&without);
        let keys = 100_000u64;
        let (mut moved_other, mut on_other) = (0, 0);
        for k in 0..keys {
            let h = hash64(&k.to_le_bytes()) as usize;
            let b = before[h % before.len()];
            let a = after[h % after.len()];
            assert_ne!(a, 3, "a key still maps to the removed server");
            if b != 3 {
                on_other += 1;
                if a != b {
                    moved_other += 1;
                }
            }
        }
        let frac = moved_other as f64 / on_other as f64;
        // Only the leaving server's keys must move; Maglev moves a few others too.
        assert!(
            frac < 0.03,
            "{frac:.4} of the keys of remaining servers moved"
        );
    }
}
