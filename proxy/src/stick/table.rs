//! A stick table: bounded, sharded, with least-recently-used replacement and expiry that
//! runs off the request path.
//!
//! Each shard is a hash map from key to slot, an intrusive LRU list over the slots and a
//! flat array of the stored data (`stride` words per entry), under one short-held mutex.
//! A touched entry moves to the head of its list, and since every touch also pushes its
//! expiry out by the same `expire`, the tail is both the least recently used and the
//! first to expire: expiry pops from the tail until it meets a live entry, and a full
//! shard replaces its tail. Nothing on the request path walks the table.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use rampart_config::stick::{DataKind, KeyType, StickTable};

use super::freq;

const NIL: u32 = u32::MAX;
/// Entries looked at from the tail for one that is not in use, when a shard is full.
const EVICT_SCAN: usize = 8;

/// A table key, normalised to the table's type (4 bytes for `ip` and `integer`, 16 for
/// `ipv6`, up to `len` for strings, exactly `len` for binary).
#[derive(Clone)]
pub enum Key {
    Inline(u8, [u8; 22]),
    Heap(Box<[u8]>),
}

impl Key {
    pub fn new(b: &[u8]) -> Self {
        if b.len() <= 22 {
            let mut a = [0u8; 22];
            a[..b.len()].copy_from_slice(b);
            Key::Inline(b.len() as u8, a)
        } else {
            Key::Heap(b.into())
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Key::Inline(n, a) => &a[..usize::from(*n)],
            Key::Heap(b) => b,
        }
    }
}

impl PartialEq for Key {
    fn eq(&self, o: &Self) -> bool {
        self.as_bytes() == o.as_bytes()
    }
}
impl Eq for Key {}
impl Hash for Key {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.as_bytes().hash(h)
    }
}
impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_bytes())
    }
}

/// Where each stored data type lives in an entry's words.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// Offset and period (ms, rates only) per data type, by `DataKind::ALL` index.
    slots: [Option<(u16, u32)>; DataKind::ALL.len()],
    pub stride: usize,
    /// The stored types, in configuration order (for dumps).
    pub order: Vec<DataKind>,
}

impl Layout {
    fn new(t: &StickTable) -> Self {
        let mut slots = [None; DataKind::ALL.len()];
        let mut at = 0usize;
        let mut order = Vec::new();
        for s in &t.store {
            let i = DataKind::ALL.iter().position(|k| *k == s.kind).unwrap_or(0);
            if slots[i].is_some() {
                continue;
            }
            let period = s
                .period
                .map_or(0, |p| p.as_millis().min(u32::MAX as u128) as u32);
            slots[i] = Some((at as u16, period));
            at += if s.kind.is_rate() { 2 } else { 1 };
            order.push(s.kind);
        }
        Self {
            slots,
            stride: at,
            order,
        }
    }

    pub fn slot(&self, k: DataKind) -> Option<(usize, u32)> {
        let i = DataKind::ALL.iter().position(|x| *x == k)?;
        self.slots[i].map(|(o, p)| (usize::from(o), p))
    }

    pub fn stores(&self, k: DataKind) -> bool {
        self.slot(k).is_some()
    }

    pub fn period(&self, k: DataKind) -> Option<u32> {
        self.slot(k).map(|(_, p)| p)
    }
}

/// One entry's data, borrowed while its shard is locked.
pub struct Entry<'a> {
    data: &'a mut [u64],
    layout: &'a Layout,
    now: u32,
}

impl Entry<'_> {
    /// Adds `n` to a counter or a rate; a type the table does not store is ignored.
    pub fn add(&mut self, k: DataKind, n: u64) {
        let Some((o, period)) = self.layout.slot(k) else {
            return;
        };
        if k.is_rate() {
            freq::add(&mut self.data[o..o + 2], self.now, period, n);
        } else {
            self.data[o] = self.data[o].saturating_add(n);
        }
    }

    pub fn sub(&mut self, k: DataKind, n: u64) {
        if let Some((o, _)) = self.layout.slot(k)
            && !k.is_rate()
        {
            self.data[o] = self.data[o].saturating_sub(n);
        }
    }

    /// Sets a value; for a rate, its current window's count.
    pub fn set(&mut self, k: DataKind, v: u64) {
        let Some((o, period)) = self.layout.slot(k) else {
            return;
        };
        if k.is_rate() {
            freq::set(&mut self.data[o..o + 2], self.now, period, v);
        } else {
            self.data[o] = v;
        }
    }

    pub fn get(&self, k: DataKind) -> Option<u64> {
        let (o, period) = self.layout.slot(k)?;
        Some(if k.is_rate() {
            freq::read(&self.data[o..o + 2], self.now, period)
        } else {
            self.data[o]
        })
    }
}

struct Node {
    key: Key,
    prev: u32,
    next: u32,
    /// Milliseconds since the table's epoch; `u64::MAX` for never.
    expire: u64,
    /// Trackers holding the entry (it is not replaced or cleared while held).
    refs: u32,
    /// Changed since the peers last took it.
    dirty: bool,
    live: bool,
}

struct Shard {
    map: HashMap<Key, u32>,
    nodes: Vec<Node>,
    data: Vec<u64>,
    free: Vec<u32>,
    head: u32,
    tail: u32,
    cap: usize,
    /// Slots changed since the peers last took them.
    dirty: Vec<u32>,
}

impl Shard {
    fn new(cap: usize) -> Self {
        Self {
            map: HashMap::new(),
            nodes: Vec::new(),
            data: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            cap,
            dirty: Vec::new(),
        }
    }

    fn unlink(&mut self, i: u32) {
        let (p, n) = {
            let nd = &self.nodes[i as usize];
            (nd.prev, nd.next)
        };
        if p == NIL {
            self.head = n;
        } else {
            self.nodes[p as usize].next = n;
        }
        if n == NIL {
            self.tail = p;
        } else {
            self.nodes[n as usize].prev = p;
        }
    }

    fn push_front(&mut self, i: u32) {
        let h = self.head;
        {
            let nd = &mut self.nodes[i as usize];
            nd.prev = NIL;
            nd.next = h;
        }
        if h != NIL {
            self.nodes[h as usize].prev = i;
        }
        self.head = i;
        if self.tail == NIL {
            self.tail = i;
        }
    }

    fn remove(&mut self, i: u32) {
        self.unlink(i);
        let nd = &mut self.nodes[i as usize];
        nd.live = false;
        let key = std::mem::replace(&mut nd.key, Key::Inline(0, [0; 22]));
        self.map.remove(&key);
        self.free.push(i);
    }

    fn live_len(&self) -> usize {
        self.map.len()
    }
}

/// A dumped entry.
#[derive(Debug, Clone)]
pub struct Dumped {
    pub key: Key,
    /// Trackers holding it.
    pub refs: u32,
    /// Milliseconds until it expires (`None`: never).
    pub expire_in: Option<u64>,
    /// Values in layout order.
    pub values: Vec<(DataKind, u64)>,
}

/// An entry as the peers exchange it: key and raw words.
#[derive(Debug, Clone)]
pub struct Replica {
    pub key: Key,
    /// (type, value, and for rates the previous window's count and the age of the
    /// current window in ms).
    pub values: Vec<(DataKind, u64, u32, u32)>,
}

/// A stick table.
pub struct Table {
    pub name: std::sync::Arc<str>,
    pub key_type: KeyType,
    pub key_len: usize,
    pub layout: Layout,
    pub peers: bool,
    size: AtomicU64,
    /// Milliseconds; 0 for no expiry.
    expire: AtomicU64,
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    epoch: Instant,
    /// The configuration this table was built from (a change of type, length or stored
    /// data builds a new one).
    pub def: StickTable,
}

/// A definition's entry bound (at least one).
fn capacity(def: &StickTable) -> usize {
    def.size.value.0.max(1) as usize
}

/// Shards of at least 256 entries each, at most 16.
fn shard_count(size: usize) -> usize {
    (size / 256).clamp(1, 16)
}

fn lock(m: &Mutex<Shard>) -> std::sync::MutexGuard<'_, Shard> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Table {
    pub fn new(name: &str, def: &StickTable) -> Self {
        let size = capacity(def);
        let n = shard_count(size);
        let per = size / n;
        let extra = size % n;
        let shards = (0..n)
            .map(|i| Mutex::new(Shard::new(per + usize::from(i < extra))))
            .collect();
        Self {
            name: name.into(),
            key_type: def.key_type.value,
            key_len: def.key_len(),
            layout: Layout::new(def),
            peers: def.peers,
            size: AtomicU64::new(size as u64),
            expire: AtomicU64::new(def.expire.map_or(0, |e| e.as_millis() as u64)),
            shards,
            hasher: RandomState::new(),
            epoch: Instant::now(),
            def: def.clone(),
        }
    }

    /// Whether a new definition can keep this table's entries (same key and data).
    pub fn compatible(&self, def: &StickTable) -> bool {
        self.key_type == def.key_type.value
            && self.key_len == def.key_len()
            && self.layout == Layout::new(def)
            && self.shards.len() == shard_count(capacity(def))
    }

    /// Applies a new size (within the same shard count) and expiry.
    pub fn update(&self, def: &StickTable) {
        let size = capacity(def);
        let n = self.shards.len();
        for (i, s) in self.shards.iter().enumerate() {
            lock(s).cap = size / n + usize::from(i < size % n);
        }
        self.size.store(size as u64, Relaxed);
        self.expire
            .store(def.expire.map_or(0, |e| e.as_millis() as u64), Relaxed);
    }

    pub fn size(&self) -> u64 {
        self.size.load(Relaxed)
    }

    pub fn used(&self) -> u64 {
        self.shards.iter().map(|s| lock(s).live_len() as u64).sum()
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn expire_at(&self, now: u64) -> u64 {
        match self.expire.load(Relaxed) {
            0 => u64::MAX,
            e => now + e,
        }
    }

    /// The key for a sample value, or `None` when it does not convert to the table's type.
    pub fn key_of(&self, v: &crate::rules::sample::Value<'_>) -> Option<Key> {
        use crate::rules::sample::Value;
        Some(match self.key_type {
            KeyType::Ip => match v.as_ip().map(crate::rules::sample::canonical_ip)? {
                IpAddr::V4(a) => Key::new(&a.octets()),
                IpAddr::V6(_) => return None,
            },
            KeyType::Ipv6 => {
                let a = match v.as_ip()? {
                    IpAddr::V4(a) => a.to_ipv6_mapped(),
                    IpAddr::V6(a) => a,
                };
                Key::new(&a.octets())
            }
            KeyType::Integer => {
                let i = match v {
                    Value::Ip(IpAddr::V4(a)) => i64::from(u32::from(*a)),
                    other => other.as_int()?,
                };
                Key::new(&(i as u32).to_be_bytes())
            }
            KeyType::String => {
                let b = v.to_bytes();
                Key::new(&b[..b.len().min(self.key_len)])
            }
            KeyType::Binary => {
                let b = v.to_bytes();
                let mut k = vec![0u8; self.key_len];
                let n = b.len().min(self.key_len);
                k[..n].copy_from_slice(&b[..n]);
                Key::new(&k)
            }
        })
    }

    /// Parses a key as written on the runtime socket.
    pub fn parse_key(&self, s: &str) -> Option<Key> {
        use crate::rules::sample::Value;
        match self.key_type {
            KeyType::Ip | KeyType::Ipv6 => self.key_of(&Value::Ip(s.parse().ok()?)),
            KeyType::Integer => {
                let i: i64 = s.parse().ok()?;
                u32::try_from(i)
                    .ok()
                    .or_else(|| i32::try_from(i).ok().map(|i| i as u32))?;
                self.key_of(&Value::Int(i))
            }
            KeyType::String => self.key_of(&Value::Str(s.as_bytes().into())),
            KeyType::Binary => {
                if !s.len().is_multiple_of(2) {
                    return None;
                }
                let bytes = (0..s.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
                    .collect::<Option<Vec<u8>>>()?;
                self.key_of(&Value::Str(bytes.into()))
            }
        }
    }

    /// A key as the runtime socket prints it.
    pub fn key_text(&self, k: &Key) -> String {
        let b = k.as_bytes();
        match self.key_type {
            KeyType::Ip if b.len() == 4 => {
                std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string()
            }
            KeyType::Ipv6 if b.len() == 16 => {
                let mut a = [0u8; 16];
                a.copy_from_slice(b);
                std::net::Ipv6Addr::from(a).to_string()
            }
            KeyType::Integer if b.len() == 4 => {
                u32::from_be_bytes([b[0], b[1], b[2], b[3]]).to_string()
            }
            KeyType::String => String::from_utf8_lossy(b).into_owned(),
            _ => b.iter().map(|x| format!("{x:02x}")).collect(),
        }
    }

    fn shard_of(&self, k: &Key) -> &Mutex<Shard> {
        let h = self.hasher.hash_one(k);
        &self.shards[(h % self.shards.len() as u64) as usize]
    }

    /// Finds or (with `create`) makes the entry for `k`, refreshes it, and runs `f` on
    /// it. `refs` is added to its trackers. `None` when it is absent and not created, or
    /// when the table is full of entries in use.
    pub fn with<R>(
        &self,
        k: &Key,
        create: bool,
        refs: i32,
        f: impl FnOnce(&mut Entry<'_>) -> R,
    ) -> Option<R> {
        self.with_inner(k, create, refs, self.peers, f)
    }

    fn with_inner<R>(
        &self,
        k: &Key,
        create: bool,
        refs: i32,
        mark: bool,
        f: impl FnOnce(&mut Entry<'_>) -> R,
    ) -> Option<R> {
        let now = self.now();
        let mut g = lock(self.shard_of(k));
        let s = &mut *g;
        let stride = self.layout.stride;
        let i = match s.map.get(k) {
            Some(&i) => {
                let nd = &mut s.nodes[i as usize];
                if nd.expire <= now && nd.refs == 0 {
                    // Expired, not yet purged: starts again from zero.
                    s.data[i as usize * stride..(i as usize + 1) * stride].fill(0);
                }
                s.unlink(i);
                s.push_front(i);
                i
            }
            None if !create => return None,
            None => {
                if s.live_len() >= s.cap {
                    // Replace the least recently used entry that is not in use.
                    let mut at = s.tail;
                    let mut victim = NIL;
                    for _ in 0..EVICT_SCAN {
                        if at == NIL {
                            break;
                        }
                        if s.nodes[at as usize].refs == 0 {
                            victim = at;
                            break;
                        }
                        at = s.nodes[at as usize].prev;
                    }
                    if victim == NIL {
                        return None;
                    }
                    s.remove(victim);
                }
                let i = match s.free.pop() {
                    Some(i) => {
                        let nd = &mut s.nodes[i as usize];
                        nd.key = k.clone();
                        nd.refs = 0;
                        nd.dirty = false;
                        nd.live = true;
                        s.data[i as usize * stride..(i as usize + 1) * stride].fill(0);
                        i
                    }
                    None => {
                        s.nodes.push(Node {
                            key: k.clone(),
                            prev: NIL,
                            next: NIL,
                            expire: 0,
                            refs: 0,
                            dirty: false,
                            live: true,
                        });
                        s.data.resize(s.data.len() + stride, 0);
                        (s.nodes.len() - 1) as u32
                    }
                };
                s.map.insert(k.clone(), i);
                s.push_front(i);
                i
            }
        };
        let expire = self.expire_at(now);
        let nd = &mut s.nodes[i as usize];
        nd.expire = expire;
        nd.refs = nd.refs.saturating_add_signed(refs);
        if mark && !nd.dirty {
            nd.dirty = true;
            s.dirty.push(i);
        }
        let mut e = Entry {
            data: &mut s.data[i as usize * stride..(i as usize + 1) * stride],
            layout: &self.layout,
            now: now as u32,
        };
        Some(f(&mut e))
    }

    /// Reads one value without refreshing the entry.
    pub fn get(&self, k: &Key, kind: DataKind) -> Option<u64> {
        let now = self.now();
        let mut g = lock(self.shard_of(k));
        let s = &mut *g;
        let &i = s.map.get(k)?;
        if s.nodes[i as usize].expire <= now && s.nodes[i as usize].refs == 0 {
            return None;
        }
        let stride = self.layout.stride;
        let e = Entry {
            data: &mut s.data[i as usize * stride..(i as usize + 1) * stride],
            layout: &self.layout,
            now: now as u32,
        };
        e.get(kind)
    }

    /// Drops `n` trackers from an entry.
    pub fn release(&self, k: &Key, f: impl FnOnce(&mut Entry<'_>)) {
        self.with(k, false, -1, f);
    }

    /// Removes expired entries that are not in use. Returns how many went.
    pub fn purge(&self) -> usize {
        let now = self.now();
        let mut n = 0;
        for s in self.shards.iter() {
            let mut s = lock(s);
            let mut at = s.tail;
            while at != NIL {
                let nd = &s.nodes[at as usize];
                let prev = nd.prev;
                if nd.expire > now {
                    break;
                }
                if nd.refs == 0 {
                    s.remove(at);
                    n += 1;
                }
                at = prev;
            }
        }
        n
    }

    /// Every live entry for which `keep` holds, in no particular order.
    pub fn dump(&self, mut keep: impl FnMut(&Dumped) -> bool) -> Vec<Dumped> {
        let now = self.now();
        let mut out = Vec::new();
        for s in self.shards.iter() {
            let mut g = lock(s);
            let s = &mut *g;
            let stride = self.layout.stride;
            let mut at = s.head;
            while at != NIL {
                let i = at as usize;
                at = s.nodes[i].next;
                let nd = &s.nodes[i];
                if nd.expire <= now && nd.refs == 0 {
                    continue;
                }
                let (key, refs, expire) = (nd.key.clone(), nd.refs, nd.expire);
                let e = Entry {
                    data: &mut s.data[i * stride..(i + 1) * stride],
                    layout: &self.layout,
                    now: now as u32,
                };
                let values = self
                    .layout
                    .order
                    .iter()
                    .map(|k| (*k, e.get(*k).unwrap_or(0)))
                    .collect();
                let d = Dumped {
                    key,
                    refs,
                    expire_in: (expire != u64::MAX).then(|| expire.saturating_sub(now)),
                    values,
                };
                if keep(&d) {
                    out.push(d);
                }
            }
        }
        out
    }

    /// Removes the entries for which `remove` holds and that are not in use. Returns
    /// (removed, kept because in use).
    pub fn clear(&self, mut remove: impl FnMut(&Dumped) -> bool) -> (usize, usize) {
        let matching = self.dump(&mut remove);
        let (mut gone, mut busy) = (0, 0);
        for d in matching {
            let mut s = lock(self.shard_of(&d.key));
            match s.map.get(&d.key) {
                Some(&i) if s.nodes[i as usize].refs == 0 => {
                    s.remove(i);
                    gone += 1;
                }
                Some(_) => busy += 1,
                None => {}
            }
        }
        (gone, busy)
    }

    /// Takes the entries changed since the last call, for the peers.
    pub fn take_dirty(&self, max: usize) -> Vec<Replica> {
        let now = self.now();
        let mut out = Vec::new();
        for s in self.shards.iter() {
            let mut g = lock(s);
            let s = &mut *g;
            let stride = self.layout.stride;
            while out.len() < max {
                let Some(i) = s.dirty.pop() else { break };
                let i = i as usize;
                s.nodes[i].dirty = false;
                if !s.nodes[i].live {
                    continue;
                }
                out.push(self.replica(&s.nodes[i].key, &s.data[i * stride..(i + 1) * stride], now));
            }
        }
        out
    }

    /// Every live entry, for a full resync.
    pub fn snapshot(&self) -> Vec<Replica> {
        let now = self.now();
        let mut out = Vec::new();
        for s in self.shards.iter() {
            let s = lock(s);
            let stride = self.layout.stride;
            let mut at = s.head;
            while at != NIL {
                let i = at as usize;
                at = s.nodes[i].next;
                if s.nodes[i].expire <= now {
                    continue;
                }
                out.push(self.replica(&s.nodes[i].key, &s.data[i * stride..(i + 1) * stride], now));
            }
        }
        out
    }

    fn replica(&self, key: &Key, data: &[u64], now: u64) -> Replica {
        let values = self
            .layout
            .order
            .iter()
            .filter(|k| **k != DataKind::ConnCur)
            .filter_map(|k| {
                let (o, period) = self.layout.slot(*k)?;
                Some(if k.is_rate() {
                    let (curr, prev, age) = freq::export(&data[o..o + 2], now as u32, period);
                    (*k, curr, prev, age)
                } else {
                    (*k, data[o], 0, 0)
                })
            })
            .collect();
        Replica {
            key: key.clone(),
            values,
        }
    }

    /// Stores an entry received from a peer (types this table does not store are
    /// ignored; local concurrency counts are kept).
    pub fn apply(&self, r: &Replica) -> bool {
        if r.key.as_bytes().len() > self.key_len.max(16) {
            return false;
        }
        let now = self.now();
        let layout = &self.layout;
        // A received entry is not sent on again.
        self.with_inner(&r.key, true, 0, false, |e| {
            for (k, v, prev, age) in &r.values {
                let Some((o, period)) = layout.slot(*k) else {
                    continue;
                };
                if k.is_rate() {
                    freq::import(&mut e.data[o..o + 2], now as u32, period, *v, *prev, *age);
                } else if *k != DataKind::ConnCur {
                    e.data[o] = *v;
                }
            }
        })
        .is_some()
    }

    /// Entry slots allocated (live, free or awaiting reuse): never more than `size`.
    pub fn slots(&self) -> usize {
        self.shards.iter().map(|s| lock(s).nodes.len()).sum()
    }

    /// The expiry, for `show table`.
    pub fn expire(&self) -> Option<Duration> {
        match self.expire.load(Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::sample::Value;

    fn table(yaml: &str) -> Table {
        let cfg = rampart_config::load_str(
            &format!("frontends: {{ f: {{ bind: ':1', default_backend: b }} }}\nbackends: {{ b: {{ servers: {{ s: {{ address: '127.0.0.1:1' }} }} }} }}\nstick_tables:\n  t: {yaml}\n"),
            None,
            &std::collections::HashMap::<String, String>::new(),
        )
        .unwrap();
        let (name, def) = cfg.stick_tables.iter().next().unwrap();
        Table::new(name, def)
    }

    fn ip(s: &str) -> Key {
        Key::new(&s.parse::<std::net::Ipv4Addr>().unwrap().octets())
    }

    #[test]
    fn counts_and_rates() {
        let t = table(
            "{ type: ip, size: 100, expire: 1m, store: [http_req_cnt, http_req_rate(10s), gpc0, conn_cur] }",
        );
        for _ in 0..5 {
            t.with(&ip("10.0.0.1"), true, 0, |e| {
                e.add(DataKind::HttpReqCnt, 1);
                e.add(DataKind::HttpReqRate, 1);
            });
        }
        assert_eq!(t.get(&ip("10.0.0.1"), DataKind::HttpReqCnt), Some(5));
        assert_eq!(t.get(&ip("10.0.0.1"), DataKind::HttpReqRate), Some(5));
        assert_eq!(t.get(&ip("10.0.0.1"), DataKind::Gpt0), None);
        assert_eq!(t.get(&ip("10.0.0.2"), DataKind::HttpReqCnt), None);
        assert_eq!(t.used(), 1);
    }

    #[test]
    fn bounded_by_size_with_lru_replacement() {
        let t = table("{ type: ip, size: 1000, store: [gpc0] }");
        for i in 0..5000u32 {
            let k = Key::new(&i.to_be_bytes());
            t.with(&k, true, 0, |e| e.add(DataKind::Gpc0, 1));
            // Entry 0 is used all the time, so it is never the least recently used.
            t.with(&Key::new(&0u32.to_be_bytes()), false, 0, |_| ());
        }
        assert_eq!(t.used(), 1000);
        assert!(
            t.get(&Key::new(&0u32.to_be_bytes()), DataKind::Gpc0)
                .is_some()
        );
        assert!(
            t.get(&Key::new(&4999u32.to_be_bytes()), DataKind::Gpc0)
                .is_some()
        );
        assert!(
            t.get(&Key::new(&1u32.to_be_bytes()), DataKind::Gpc0)
                .is_none()
        );
        // However many keys pass through, the table reuses its slots.
        for i in 5000..80000u32 {
            t.with(&Key::new(&i.to_be_bytes()), true, 0, |_| ());
        }
        assert_eq!(t.used(), 1000);
        assert_eq!(t.slots(), 1000, "no growth past size");
    }

    #[test]
    fn entries_in_use_are_not_replaced() {
        let t = table("{ type: ip, size: 2, store: [conn_cur] }");
        t.with(&ip("10.0.0.1"), true, 1, |_| ());
        t.with(&ip("10.0.0.2"), true, 1, |_| ());
        assert!(t.with(&ip("10.0.0.3"), true, 1, |_| ()).is_none());
        t.release(&ip("10.0.0.1"), |_| ());
        assert!(t.with(&ip("10.0.0.3"), true, 1, |_| ()).is_some());
        assert!(t.get(&ip("10.0.0.1"), DataKind::ConnCur).is_none());
        let (gone, busy) = t.clear(|_| true);
        assert_eq!((gone, busy), (0, 2));
    }

    #[test]
    fn expiry_purges_from_the_tail() {
        let t = table("{ type: ip, size: 10, expire: 1ms, store: [gpc0] }");
        t.with(&ip("10.0.0.1"), true, 0, |_| ());
        t.with(&ip("10.0.0.2"), true, 1, |_| ());
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(t.dump(|_| true).len(), 1, "only the held entry shows");
        assert_eq!(t.purge(), 1);
        assert_eq!(t.used(), 1);
    }

    #[test]
    fn keys_convert_per_type() {
        let t = table("{ type: ipv6, size: 10, store: [gpc0] }");
        let k = t.key_of(&Value::Ip("10.0.0.1".parse().unwrap())).unwrap();
        assert_eq!(t.key_text(&k), "::ffff:10.0.0.1");
        let t = table("{ type: string, len: 4, size: 10, store: [gpc0] }");
        let k = t.key_of(&Value::Str(b"abcdef"[..].into())).unwrap();
        assert_eq!(t.key_text(&k), "abcd");
        let t = table("{ type: integer, size: 10, store: [gpc0] }");
        assert_eq!(t.key_text(&t.parse_key("42").unwrap()), "42");
        assert!(t.parse_key("x").is_none());
        let t = table("{ type: binary, len: 3, size: 10, store: [gpc0] }");
        assert_eq!(t.key_text(&t.parse_key("0a0b").unwrap()), "0a0b00");
    }

    fn rss_kib() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(0)
    }

    /// Memory per entry, measured: `cargo test -p rampart-proxy --lib
    /// stick::table::tests::memory_per_entry -- --ignored --nocapture` (the allocations
    /// are the same in a release build).
    #[test]
    #[ignore]
    fn memory_per_entry() {
        let t = table(
            "{ type: ip, size: 200k, expire: 10m, store: [http_req_rate(10s), conn_cur, gpc0] }",
        );
        let fill = |keys: std::ops::Range<u32>| {
            for i in keys {
                t.with(&Key::new(&i.to_be_bytes()), true, 0, |e| {
                    e.add(DataKind::HttpReqRate, 1)
                });
            }
            rss_kib()
        };
        let before = rss_kib();
        let at_100k = fill(0..100_000);
        let at_200k = fill(100_000..200_000);
        // Past size: entries are replaced, memory stays.
        let at_1m = fill(200_000..1_000_000);
        let at_2m = fill(1_000_000..2_000_000);
        assert_eq!(t.used(), 200 * 1024);
        println!(
            "RSS growth: first 100k entries {} KiB ({} B/entry), next 100k {} KiB ({} B/entry), 800k more inserts into the full table {} KiB, 1M more {} KiB ({} slots)",
            at_100k - before,
            (at_100k - before) * 1024 / 100_000,
            at_200k - at_100k,
            (at_200k - at_100k) * 1024 / 100_000,
            at_1m as i64 - at_200k as i64,
            at_2m as i64 - at_1m as i64,
            t.slots(),
        );
    }

    /// The same at a million entries: `cargo test --release -p rampart-proxy --lib
    /// stick::table::tests::memory_per_entry_at_1m -- --ignored --nocapture`. Also prints
    /// the time per touch while filling and while replacing, for the benchmark notes.
    #[test]
    #[ignore]
    fn memory_per_entry_at_1m() {
        let t = table(
            "{ type: ip, size: 1m, expire: 10m, store: [http_req_rate(10s), conn_cur, gpc0] }",
        );
        let fill = |keys: std::ops::Range<u32>| {
            let n = keys.len() as u128;
            let start = std::time::Instant::now();
            for i in keys {
                t.with(&Key::new(&i.to_be_bytes()), true, 0, |e| {
                    e.add(DataKind::HttpReqRate, 1)
                });
            }
            (rss_kib(), start.elapsed().as_nanos() / n)
        };
        let before = rss_kib();
        let (full, fill_ns) = fill(0..1_048_576);
        let (after, replace_ns) = fill(1_048_576..3_000_000);
        assert_eq!(t.used(), 1024 * 1024);
        println!(
            "RSS growth: 1M entries {} KiB ({} B/entry, {fill_ns} ns per insert); 1.95M more keys through the full table {} KiB ({replace_ns} ns per replacing insert)",
            full - before,
            (full - before) * 1024 / 1_048_576,
            after as i64 - full as i64,
        );
    }

    #[test]
    fn replicas_round_trip() {
        let a = table(
            "{ type: ip, size: 10, store: [server_id, http_req_rate(10s), conn_cur], peers: false }",
        );
        a.with(&ip("10.0.0.1"), true, 0, |e| {
            e.set(DataKind::ServerId, 3);
            e.add(DataKind::HttpReqRate, 7);
            e.add(DataKind::ConnCur, 2);
        });
        let snap = a.snapshot();
        let b = table("{ type: ip, size: 10, store: [server_id, http_req_rate(10s), conn_cur] }");
        assert!(b.apply(&snap[0]));
        assert_eq!(b.get(&ip("10.0.0.1"), DataKind::ServerId), Some(3));
        assert_eq!(b.get(&ip("10.0.0.1"), DataKind::HttpReqRate), Some(7));
        assert_eq!(b.get(&ip("10.0.0.1"), DataKind::ConnCur), Some(0));
    }
}
