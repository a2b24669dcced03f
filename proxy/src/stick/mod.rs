//! Stick tables: per-key counters and stored servers, the trackers that update them for
//! a connection or a request, and the registry that keeps tables across reloads.

pub mod freq;
pub mod peers;
pub mod table;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rampart_config::stick::{DataKind, StickTable};

pub use table::{Dumped, Entry, Key, Replica, Table};

/// An entry tracked in a counter slot.
pub struct Tracked {
    pub table: Arc<Table>,
    pub key: Key,
    /// Tracked for a whole connection (counts `conn_cur`).
    conn: bool,
}

/// The stick counters (`sc0`-`sc2`) of a connection or of a request. Dropping them lets
/// go of their entries; a connection's also ends its `conn_cur`. The slots are allocated
/// when something is first tracked: most requests track nothing, and their record moves
/// through the request path by value.
#[derive(Default)]
pub struct Trackers {
    slots: Option<Box<[Option<Tracked>; 3]>>,
}

impl Trackers {
    pub fn get(&self, slot: u8) -> Option<&Tracked> {
        self.slots.as_ref()?.get(usize::from(slot))?.as_ref()
    }

    pub fn is_empty(&self) -> bool {
        self.slots
            .as_ref()
            .is_none_or(|s| s.iter().all(Option::is_none))
    }

    fn put(&mut self, slot: u8, t: Tracked) {
        let slots = self.slots.get_or_insert_with(Default::default);
        slots[usize::from(slot)] = Some(t);
    }

    fn tracked(&self) -> impl Iterator<Item = &Tracked> {
        self.slots.iter().flat_map(|s| s.iter().flatten())
    }

    /// Tracks `key` in `slot` for a connection: counts the connection and holds the
    /// entry until the trackers are dropped. False when the table is full of held
    /// entries.
    pub fn track_conn(&mut self, slot: u8, table: &Arc<Table>, key: Key) -> bool {
        let ok = table
            .with(&key, true, 1, |e| {
                e.add(DataKind::ConnCnt, 1);
                e.add(DataKind::ConnRate, 1);
                e.add(DataKind::ConnCur, 1);
            })
            .is_some();
        if ok {
            self.put(
                slot,
                Tracked {
                    table: table.clone(),
                    key,
                    conn: true,
                },
            );
        }
        ok
    }

    /// Tracks `key` in `slot` for a request: counts the request.
    pub fn track_request(&mut self, slot: u8, table: &Arc<Table>, key: Key) -> bool {
        let ok = table
            .with(&key, true, 1, |e| {
                e.add(DataKind::HttpReqCnt, 1);
                e.add(DataKind::HttpReqRate, 1);
            })
            .is_some();
        if ok {
            self.put(
                slot,
                Tracked {
                    table: table.clone(),
                    key,
                    conn: false,
                },
            );
        }
        ok
    }

    /// Runs `f` on each tracked entry.
    pub fn each(&self, mut f: impl FnMut(&mut Entry<'_>)) {
        for t in self.tracked() {
            t.table.with(&t.key, false, 0, &mut f);
        }
    }

    /// Counts a request against entries tracked by the connection.
    pub fn count_request(&self) {
        self.each(|e| {
            e.add(DataKind::HttpReqCnt, 1);
            e.add(DataKind::HttpReqRate, 1);
        });
    }
}

/// What a finished request adds to the entries it was tracked in.
pub fn count_response(e: &mut Entry<'_>, status: u16, bytes_in: u64, bytes_out: u64) {
    if (400..500).contains(&status) {
        e.add(DataKind::HttpErrCnt, 1);
        e.add(DataKind::HttpErrRate, 1);
    }
    e.add(DataKind::BytesInCnt, bytes_in);
    e.add(DataKind::BytesInRate, bytes_in);
    e.add(DataKind::BytesOutCnt, bytes_out);
    e.add(DataKind::BytesOutRate, bytes_out);
}

impl Drop for Trackers {
    fn drop(&mut self) {
        let Some(slots) = self.slots.as_mut() else {
            return;
        };
        for t in slots.iter_mut().filter_map(Option::take) {
            let conn = t.conn;
            t.table.release(&t.key, |e| {
                if conn {
                    e.sub(DataKind::ConnCur, 1);
                }
            });
        }
    }
}

/// The stick counters a fetch can see: the request's, then the connection's.
#[derive(Clone, Copy, Default)]
pub struct Tracks<'a> {
    pub conn: Option<&'a Trackers>,
    pub req: Option<&'a Trackers>,
}

impl<'a> Tracks<'a> {
    pub fn slot(&self, n: u8) -> Option<&'a Tracked> {
        self.req
            .and_then(|t| t.get(n))
            .or_else(|| self.conn.and_then(|t| t.get(n)))
    }
}

/// Tables by name, kept across reloads: a reload that keeps a table's type, key length
/// and stored data keeps its entries.
#[derive(Default)]
pub struct Registry {
    tables: Mutex<HashMap<String, Arc<Table>>>,
}

impl Registry {
    /// The table for `def`: the running one when it is compatible, else a new one. Nothing
    /// changes until [`install`](Self::install).
    pub fn prepare(&self, name: &str, def: &StickTable) -> Arc<Table> {
        let m = self
            .tables
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match m.get(name) {
            Some(t) if t.compatible(def) => t.clone(),
            _ => Arc::new(Table::new(name, def)),
        }
    }

    /// Makes `tables` the running ones, with their new size and expiry.
    pub fn install(&self, tables: &[Arc<Table>], defs: &rampart_config::stick::StickTables) {
        let mut m = self
            .tables
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for t in tables {
            if let Some(def) = defs.get(&t.name) {
                t.update(def);
            }
            if let Some(old) = m.get(&*t.name)
                && !Arc::ptr_eq(old, t)
            {
                tracing::warn!(table = %t.name, "stick table changed type, key length or stored data: starting empty");
            }
        }
        m.clear();
        for t in tables {
            m.insert(t.name.to_string(), t.clone());
        }
    }

    /// Every table, by name.
    pub fn all(&self) -> Vec<Arc<Table>> {
        let m = self
            .tables
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut v: Vec<_> = m.values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }
}
