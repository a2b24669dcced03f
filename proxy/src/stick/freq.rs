//! Sliding-window rate counters, computed as HAProxy's `freq_ctr` does: the count of
//! the current period plus the previous period's count weighted by the part of the
//! previous period still inside the sliding window.
//!
//! Two words: the start of the current period (ms since the table's epoch), and the
//! current and previous counts packed as two 32-bit halves.

fn unpack(w: &[u64]) -> (u32, u32, u32) {
    (w[0] as u32, (w[1] >> 32) as u32, w[1] as u32)
}

fn pack(w: &mut [u64], tick: u32, curr: u32, prev: u32) {
    w[0] = u64::from(tick);
    w[1] = (u64::from(curr) << 32) | u64::from(prev);
}

/// The counts moved forward to the period holding `now`. Times are milliseconds that
/// wrap (after 49 days), so every difference is a wrapping one.
fn rotate(tick: u32, curr: u32, prev: u32, now: u32, period: u32) -> (u32, u32, u32) {
    if curr == 0 && prev == 0 {
        // Nothing counted: the next event opens a period.
        return (now, 0, 0);
    }
    let elapsed = now.wrapping_sub(tick);
    if elapsed > u32::MAX / 2 {
        // A start in the future (a replica from a node whose clock ran ahead).
        return (now, curr, prev);
    }
    let period = period.max(1);
    if elapsed < period {
        return (tick, curr, prev);
    }
    let prev = if u64::from(elapsed) < 2 * u64::from(period) {
        curr
    } else {
        0
    };
    (now.wrapping_sub(elapsed % period), 0, prev)
}

pub fn add(w: &mut [u64], now: u32, period: u32, n: u64) {
    let (t, c, p) = unpack(w);
    let (t, c, p) = rotate(t, c, p, now, period);
    pack(w, t, c.saturating_add(n.min(u64::from(u32::MAX)) as u32), p);
}

pub fn set(w: &mut [u64], now: u32, period: u32, v: u64) {
    let (t, c, p) = unpack(w);
    let (t, _, p) = rotate(t, c, p, now, period);
    pack(w, t, v.min(u64::from(u32::MAX)) as u32, p);
}

/// Events over the last `period`.
pub fn read(w: &[u64], now: u32, period: u32) -> u64 {
    let (t, c, p) = unpack(w);
    let (t, c, p) = rotate(t, c, p, now, period);
    let period = u64::from(period.max(1));
    let elapsed = u64::from(now.wrapping_sub(t)).min(period);
    u64::from(c) + u64::from(p) * (period - elapsed) / period
}

/// (current count, previous count, age of the current period in ms), for the peers.
pub fn export(w: &[u64], now: u32, period: u32) -> (u64, u32, u32) {
    let (t, c, p) = unpack(w);
    let (t, c, p) = rotate(t, c, p, now, period);
    (u64::from(c), p, now.wrapping_sub(t))
}

/// Stores counts exported by a peer.
pub fn import(w: &mut [u64], now: u32, period: u32, curr: u64, prev: u32, age: u32) {
    let age = u64::from(age).min(2 * u64::from(period.max(1))) as u32;
    pack(
        w,
        now.wrapping_sub(age),
        curr.min(u64::from(u32::MAX)) as u32,
        prev,
    );
    let (t, c, p) = unpack(w);
    let (t, c, p) = rotate(t, c, p, now, period);
    pack(w, t, c, p);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliding_window() {
        let mut w = [0u64; 2];
        for _ in 0..100 {
            add(&mut w, 1000, 10_000, 1);
        }
        assert_eq!(read(&w, 1000, 10_000), 100);
        assert_eq!(read(&w, 10_999, 10_000), 100);
        // Half-way through the next period, half of the previous one still counts.
        assert_eq!(read(&w, 16_000, 10_000), 50);
        add(&mut w, 16_000, 10_000, 10);
        assert_eq!(read(&w, 16_000, 10_000), 60);
        // Two periods later, nothing is left.
        assert_eq!(read(&w, 31_000, 10_000), 0);
    }

    #[test]
    fn times_wrap_and_replicas_may_come_from_ahead() {
        let mut w = [0u64; 2];
        // Counted just before the millisecond clock wraps, read just after.
        add(&mut w, u32::MAX - 100, 1000, 4);
        assert_eq!(read(&w, 50, 1000), 4);
        // 1201 ms after the start: 201 ms into the next period, 4 x 799/1000.
        assert_eq!(read(&w, 1100, 1000), 3);
        // A replica whose period started before this table's clock did.
        let mut r = [0u64; 2];
        import(&mut r, 0, 10_000, 7, 0, 500);
        assert_eq!(read(&r, 0, 10_000), 7);
        // A start in the future is taken as now.
        let mut f = [0u64; 2];
        pack(&mut f, 5000, 3, 0);
        assert_eq!(read(&f, 1000, 10_000), 3);
    }

    #[test]
    fn export_import_keeps_the_rate() {
        let mut a = [0u64; 2];
        add(&mut a, 5000, 1000, 8);
        let (c, p, age) = export(&a, 5500, 1000);
        let mut b = [0u64; 2];
        import(&mut b, 90_000, 1000, c, p, age);
        assert_eq!(read(&b, 90_000, 1000), read(&a, 5500, 1000));
    }
}
