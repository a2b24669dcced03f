//! Pattern references: the files of patterns ACLs name with `-f` and the map files map
//! converters name, as HAProxy keeps them. One reference per file holds its entries; each
//! way of matching them (a match method, case folding and, for maps, an output type) keeps
//! an index built from those entries. The runtime API changes the entries (`add map`,
//! `set map`, `del acl`, `prepare`/`commit` ...): a change is checked against every index
//! first, so that it applies whole or not at all, then every index is rebuilt and swapped
//! in, and requests see it at once.
//!
//! A reload keeps a reference, with its runtime changes, while its file holds what it held
//! when it was loaded; a changed file is read anew.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use aho_corasick::AhoCorasick;
use arc_swap::ArcSwap;
use rampart_config::rules::patfile::{self, PatFile};
use rampart_config::rules::{IntMatch, IpNet, MatchMethod, SampleType};

use super::matcher::{Masked, delimited, mask4, mask6, trim_delims};
use super::sample::{Value, canonical_ip};

type FastHashMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Entry positions by key, for keys of one length.
type ByKey = FastHashMap<Box<[u8]>, u32>;

/// Keys grouped by length, shortest first.
type ByLen = Vec<(usize, ByKey)>;

/// Whether a reference serves map converters or ACLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefKind {
    Map,
    Acl,
}

impl RefKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RefKind::Map => "map",
            RefKind::Acl => "acl",
        }
    }
}

/// One entry: an identifier the runtime API shows (`#0x...`), a key (the pattern), and
/// for maps a value.
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: u64,
    pub key: Box<str>,
    pub value: Box<str>,
}

static NEXT_ENTRY: AtomicU64 = AtomicU64::new(1);
static NEXT_REF: AtomicU32 = AtomicU32::new(0);

fn entry(key: &str, value: &str) -> Entry {
    Entry {
        id: NEXT_ENTRY.fetch_add(1, Ordering::Relaxed),
        key: key.into(),
        value: value.into(),
    }
}

/// How an index matches: the match method, case folding, and for maps the output type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExprKey {
    pub method: MatchMethod,
    pub icase: bool,
    pub output: Option<SampleType>,
}

/// A map's value, converted once to its output type.
#[derive(Debug, Clone)]
pub enum Out {
    Str(Arc<[u8]>),
    Int(i64),
    Ip(IpAddr),
}

impl Out {
    /// `s` as `output`; `None` when it does not parse (refused before it gets here).
    pub fn parse(output: SampleType, s: &str) -> Option<Self> {
        match output {
            SampleType::Int => s.parse().ok().map(Out::Int),
            SampleType::Ip => s.parse().ok().map(Out::Ip),
            SampleType::Str | SampleType::Bool => Some(Out::Str(s.as_bytes().into())),
        }
    }

    /// Appends the value's text to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        match self {
            Out::Str(b) => out.extend_from_slice(b),
            Out::Int(i) => out.extend_from_slice(i.to_string().as_bytes()),
            Out::Ip(a) => out.extend_from_slice(a.to_string().as_bytes()),
        }
    }

    pub fn value(&self) -> Value<'static> {
        match self {
            Out::Str(b) => Value::Str(Cow::Owned(b.to_vec())),
            Out::Int(i) => Value::Int(*i),
            Out::Ip(a) => Value::Ip(*a),
        }
    }
}

/// Entries indexed for one way of matching.
pub struct Index {
    kind: Kind,
    /// The entries, in order (a match reports its position here).
    pub entries: Arc<Vec<Entry>>,
    /// Map values, by entry position.
    values: Vec<Option<Out>>,
}

/// Entry positions by what they match. Where several entries match, the first in order
/// wins, except for addresses, where the longest prefix wins (as HAProxy's trees do).
enum Kind {
    Never,
    Str(ByKey),
    /// By length, shortest first.
    Beg(ByLen),
    End(ByLen),
    Sub(Option<AhoCorasick>),
    Reg(Option<regex::bytes::RegexSet>, Vec<u32>),
    Dir(Vec<(Box<[u8]>, u32)>),
    Dom(Vec<(Box<[u8]>, u32)>),
    /// By prefix length, longest first.
    Ip {
        v4: Vec<(u8, FastHashMap<u32, u32>)>,
        v6: Vec<(u8, FastHashMap<u128, u32>)>,
    },
    Int(Vec<(IntMatch, u32)>),
    Len(Vec<(IntMatch, u32)>),
}

fn fold(icase: bool, s: &str) -> Box<[u8]> {
    if icase {
        s.to_ascii_lowercase().into_bytes().into()
    } else {
        s.as_bytes().into()
    }
}

fn by_len(items: Vec<(Box<[u8]>, u32)>) -> ByLen {
    let mut groups: ByLen = Vec::new();
    for (k, i) in items {
        let l = k.len();
        let g = match groups.iter().position(|(gl, _)| *gl == l) {
            Some(g) => g,
            None => {
                groups.push((l, FastHashMap::default()));
                groups.len() - 1
            }
        };
        groups[g].1.entry(k).or_insert(i);
    }
    groups.sort_by_key(|(l, _)| *l);
    groups
}

fn trim(v: &[u8], d: &[u8]) -> Box<[u8]> {
    trim_delims(v, d).into()
}

impl Index {
    /// Indexes `entries` for `key`; entries that do not fit (refused before they get
    /// here) are left out.
    pub fn build(key: ExprKey, entries: Arc<Vec<Entry>>) -> Self {
        let icase = key.icase;
        let pos = |i: usize| u32::try_from(i).unwrap_or(u32::MAX);
        let strs = || -> Vec<(Box<[u8]>, u32)> {
            entries
                .iter()
                .enumerate()
                .map(|(i, e)| (fold(icase, &e.key), pos(i)))
                .collect()
        };
        let ints = || -> Vec<(IntMatch, u32)> {
            entries
                .iter()
                .enumerate()
                .filter_map(|(i, e)| Some((patfile::parse_int_pattern(&e.key).ok()?, pos(i))))
                .collect()
        };
        let kind = match key.method {
            MatchMethod::Found | MatchMethod::Bool => Kind::Never,
            MatchMethod::Str => {
                let mut m = FastHashMap::default();
                for (k, i) in strs() {
                    m.entry(k).or_insert(i);
                }
                Kind::Str(m)
            }
            MatchMethod::Beg => Kind::Beg(by_len(strs())),
            MatchMethod::End => Kind::End(by_len(strs())),
            MatchMethod::Sub => {
                Kind::Sub(AhoCorasick::new(strs().into_iter().map(|(k, _)| k)).ok())
            }
            MatchMethod::Reg => {
                let mut ok = Vec::new();
                let mut pats = Vec::new();
                for (i, e) in entries.iter().enumerate() {
                    if regex::bytes::RegexBuilder::new(&e.key)
                        .case_insensitive(icase)
                        .size_limit(1 << 22)
                        .build()
                        .is_ok()
                    {
                        ok.push(pos(i));
                        pats.push(e.key.as_ref());
                    }
                }
                let set = regex::bytes::RegexSetBuilder::new(pats)
                    .case_insensitive(icase)
                    .size_limit(1 << 26)
                    .build()
                    .ok();
                Kind::Reg(set, ok)
            }
            MatchMethod::Dir => Kind::Dir(
                strs()
                    .into_iter()
                    .map(|(k, i)| (trim(&k, b"/?"), i))
                    .collect(),
            ),
            MatchMethod::Dom => Kind::Dom(
                strs()
                    .into_iter()
                    .map(|(k, i)| (trim(&k, b"/?.:"), i))
                    .collect(),
            ),
            MatchMethod::Ip => {
                let mut v4: Vec<(u8, FastHashMap<u32, u32>)> = Vec::new();
                let mut v6: Vec<(u8, FastHashMap<u128, u32>)> = Vec::new();
                fn put<A: Eq + std::hash::Hash>(
                    g: &mut Vec<(u8, FastHashMap<A, u32>)>,
                    p: u8,
                    a: A,
                    i: u32,
                ) {
                    let at = match g.iter().position(|(q, _)| *q == p) {
                        Some(at) => at,
                        None => {
                            g.push((p, FastHashMap::default()));
                            g.len() - 1
                        }
                    };
                    g[at].1.entry(a).or_insert(i);
                }
                for (i, e) in entries.iter().enumerate() {
                    let Ok(n) = IpNet::parse(&e.key) else {
                        continue;
                    };
                    match Masked::of(&n) {
                        Masked::V4(p, a) => put(&mut v4, p, a, pos(i)),
                        Masked::V6(p, a) => put(&mut v6, p, a, pos(i)),
                    }
                }
                v4.sort_by_key(|(p, _)| std::cmp::Reverse(*p));
                v6.sort_by_key(|(p, _)| std::cmp::Reverse(*p));
                Kind::Ip { v4, v6 }
            }
            MatchMethod::Int => Kind::Int(ints()),
            MatchMethod::Len => Kind::Len(ints()),
        };
        let values = match key.output {
            Some(o) => entries.iter().map(|e| Out::parse(o, &e.value)).collect(),
            None => Vec::new(),
        };
        Self {
            kind,
            entries,
            values,
        }
    }

    /// The position of the entry `v` matches.
    pub fn find(&self, v: &Value<'_>, icase: bool) -> Option<usize> {
        let i = match &self.kind {
            Kind::Never => None,
            Kind::Ip { v4, v6 } => match canonical_ip(v.as_ip()?) {
                IpAddr::V4(a) => {
                    let a = u32::from(a);
                    v4.iter().find_map(|(p, m)| m.get(&mask4(a, *p)).copied())
                }
                IpAddr::V6(a) => {
                    let a = u128::from(a);
                    v6.iter().find_map(|(p, m)| m.get(&mask6(a, *p)).copied())
                }
            },
            Kind::Int(ms) => {
                let x = v.as_int()?;
                ms.iter().find(|(m, _)| m.matches(x)).map(|(_, i)| *i)
            }
            Kind::Len(ms) => {
                let x = v.to_bytes().len() as i64;
                ms.iter().find(|(m, _)| m.matches(x)).map(|(_, i)| *i)
            }
            _ => {
                let raw = v.to_bytes();
                let folded;
                let s: &[u8] = if icase {
                    folded = raw.to_ascii_lowercase();
                    &folded
                } else {
                    &raw
                };
                match &self.kind {
                    Kind::Str(m) => m.get(s).copied(),
                    Kind::Beg(g) => g
                        .iter()
                        .take_while(|(l, _)| *l <= s.len())
                        .filter_map(|(l, m)| m.get(&s[..*l]).copied())
                        .min(),
                    Kind::End(g) => g
                        .iter()
                        .take_while(|(l, _)| *l <= s.len())
                        .filter_map(|(l, m)| m.get(&s[s.len() - l..]).copied())
                        .min(),
                    Kind::Sub(ac) => ac
                        .as_ref()?
                        .find_overlapping_iter(s)
                        .map(|m| m.pattern().as_u32())
                        .min(),
                    // The set folds case itself.
                    Kind::Reg(set, pos) => set
                        .as_ref()?
                        .matches(&raw)
                        .iter()
                        .next()
                        .and_then(|k| pos.get(k).copied()),
                    Kind::Dir(pats) => pats
                        .iter()
                        .find(|(p, _)| delimited(s, p, b"/?"))
                        .map(|(_, i)| *i),
                    Kind::Dom(pats) => pats
                        .iter()
                        .find(|(p, _)| delimited(s, p, b"/?.:"))
                        .map(|(_, i)| *i),
                    _ => None,
                }
            }
        };
        i.map(|i| i as usize)
    }

    /// The value of the entry at `i`, for maps.
    pub fn value(&self, i: usize) -> Option<&Out> {
        self.values.get(i)?.as_ref()
    }
}

/// One way of matching a reference's entries, kept up to date with them.
pub struct Expr {
    pub key: ExprKey,
    index: ArcSwap<Index>,
}

impl Expr {
    pub fn index(&self) -> arc_swap::Guard<Arc<Index>> {
        self.index.load()
    }

    /// The matching entry's position, if any.
    pub fn find(&self, v: &Value<'_>) -> Option<usize> {
        self.index.load().find(v, self.key.icase)
    }

    /// Appends the map value `v` finds (or `default`) to `out`, without a copy between.
    pub fn render(&self, v: &Value<'_>, default: Option<&Out>, out: &mut Vec<u8>) {
        let idx = self.index.load();
        match idx.find(v, self.key.icase).and_then(|i| idx.value(i)) {
            Some(o) => o.write(out),
            None => {
                if let Some(d) = default {
                    d.write(out);
                }
            }
        }
    }

    /// The map value `v` finds.
    pub fn lookup(&self, v: &Value<'_>) -> Option<Value<'static>> {
        let idx = self.index.load();
        let i = idx.find(v, self.key.icase)?;
        idx.value(i).map(Out::value)
    }
}

impl std::fmt::Debug for Expr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Expr({:?})", self.key)
    }
}

/// A prepared version (`prepare map`) being filled before it is committed.
struct Pending {
    version: u32,
    entries: Vec<Entry>,
}

struct RefState {
    entries: Arc<Vec<Entry>>,
    curr_ver: u32,
    next_ver: u32,
    pending: Option<Pending>,
    users: Vec<Weak<Expr>>,
}

/// A pattern or map file and its entries.
pub struct PatRef {
    /// The number `#<id>` names it by.
    pub id: u32,
    pub kind: RefKind,
    /// The file name as the configuration wrote it.
    pub name: String,
    pub path: PathBuf,
    /// The file's text when it was loaded: a reload keeps this reference while the file
    /// still holds it.
    loaded: Arc<str>,
    state: Mutex<RefState>,
}

impl std::fmt::Debug for PatRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PatRef(#{} {})", self.id, self.name)
    }
}

/// A change the runtime API asks for, refused.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused(pub String);

/// Where a runtime change goes: the current entries, or a prepared version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Current,
    At(u32),
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl PatRef {
    /// A reference holding `file`'s entries.
    pub fn load(kind: RefKind, file: &PatFile) -> Arc<Self> {
        let entries = patfile::entries(&file.text, kind == RefKind::Map)
            .map(|(_, k, v)| entry(k, v))
            .collect();
        Arc::new(Self {
            id: NEXT_REF.fetch_add(1, Ordering::Relaxed),
            kind,
            name: file.name.clone(),
            path: file.path.clone(),
            loaded: file.text.clone(),
            state: Mutex::new(RefState {
                entries: Arc::new(entries),
                curr_ver: 0,
                next_ver: 0,
                pending: None,
                users: Vec::new(),
            }),
        })
    }

    /// Whether `file` is the file this reference was loaded from, unchanged.
    pub fn same_file(&self, kind: RefKind, file: &PatFile) -> bool {
        self.kind == kind && self.path == file.path && self.loaded == file.text
    }

    /// Whether `name` (as written, the path read, or `#<id>`) names this reference.
    pub fn named(&self, name: &str) -> bool {
        match name.strip_prefix('#') {
            Some(id) => id.parse::<u32>().is_ok_and(|id| id == self.id),
            None => self.name == name || self.path.as_os_str() == name,
        }
    }

    /// The index for `key`, shared with every other user matching the same way.
    pub fn expr(&self, key: ExprKey) -> Arc<Expr> {
        let mut st = lock(&self.state);
        st.users.retain(|u| u.strong_count() > 0);
        if let Some(e) = st
            .users
            .iter()
            .filter_map(Weak::upgrade)
            .find(|e| e.key == key)
        {
            return e;
        }
        let e = Arc::new(Expr {
            key,
            index: ArcSwap::from_pointee(Index::build(key, st.entries.clone())),
        });
        st.users.push(Arc::downgrade(&e));
        e
    }

    /// The current entries.
    pub fn entries(&self) -> Arc<Vec<Entry>> {
        lock(&self.state).entries.clone()
    }

    /// The entries of `v`, or `None` when there is no such version.
    pub fn entries_at(&self, v: Version) -> Option<Vec<Entry>> {
        let st = lock(&self.state);
        match v {
            Version::Current => Some(st.entries.to_vec()),
            Version::At(n) if n == st.curr_ver => Some(st.entries.to_vec()),
            Version::At(n) => st
                .pending
                .as_ref()
                .filter(|p| p.version == n)
                .map(|p| p.entries.clone()),
        }
    }

    /// `show map`'s summary line.
    pub fn describe(&self) -> String {
        let st = lock(&self.state);
        format!(
            "{} ({}) pattern loaded from file '{}' used by {}. curr_ver={} next_ver={} entry_cnt={}",
            self.id,
            self.name,
            self.path.display(),
            self.kind.as_str(),
            st.curr_ver,
            st.next_ver,
            st.entries.len()
        )
    }

    /// Checks `key` and `value` against every index that would hold them.
    fn check(st: &RefState, key: &str, value: Option<&str>) -> Result<(), Refused> {
        for u in st.users.iter().filter_map(Weak::upgrade) {
            patfile::check_key(u.key.method, u.key.icase, key).map_err(Refused)?;
            if let (Some(o), Some(v)) = (u.key.output, value) {
                patfile::check_value(o, v).map_err(Refused)?;
            }
        }
        Ok(())
    }

    /// Rebuilds every index from the current entries.
    fn publish(st: &mut RefState) {
        st.users.retain(|u| u.strong_count() > 0);
        for u in st.users.iter().filter_map(Weak::upgrade) {
            u.index
                .store(Arc::new(Index::build(u.key, st.entries.clone())));
        }
    }

    /// Applies `f` to the entries of `v`, publishing a change to the current ones.
    fn change<T>(
        &self,
        v: Version,
        f: impl FnOnce(&mut Vec<Entry>) -> Result<T, Refused>,
    ) -> Result<T, Refused> {
        let mut st = lock(&self.state);
        let st = &mut *st;
        match v {
            Version::At(n) if n != st.curr_ver => {
                if n > st.next_ver {
                    return Err(Refused(format!(
                        "Version number in the future, please use 'prepare {}' before.",
                        self.kind.as_str()
                    )));
                }
                let Some(p) = st.pending.as_mut().filter(|p| p.version == n) else {
                    return Err(Refused("Version number out of range.".into()));
                };
                f(&mut p.entries)
            }
            _ => {
                let mut entries = st.entries.to_vec();
                let r = f(&mut entries)?;
                st.entries = Arc::new(entries);
                Self::publish(st);
                Ok(r)
            }
        }
    }

    /// `add map` / `add acl`: adds entries (all or none).
    pub fn add(&self, v: Version, items: &[(&str, &str)]) -> Result<(), Refused> {
        {
            let st = lock(&self.state);
            for (k, val) in items {
                Self::check(&st, k, (self.kind == RefKind::Map).then_some(*val))?;
            }
        }
        self.change(v, |e| {
            e.extend(items.iter().map(|(k, v)| entry(k, v)));
            Ok(())
        })
    }

    /// `set map`: sets the value of every entry with `key` (or the entry `#<id>`).
    pub fn set(&self, v: Version, key: &str, value: &str) -> Result<(), Refused> {
        {
            let st = lock(&self.state);
            for u in st.users.iter().filter_map(Weak::upgrade) {
                if let Some(o) = u.key.output {
                    patfile::check_value(o, value).map_err(Refused)?;
                }
            }
        }
        let id = ref_id(key);
        self.change(v, |e| {
            let mut found = false;
            for x in e.iter_mut() {
                if id.map_or(*x.key == *key, |id| x.id == id) {
                    x.value = value.into();
                    found = true;
                }
            }
            if found {
                Ok(())
            } else {
                Err(Refused("entry not found.".into()))
            }
        })
    }

    /// `del map` / `del acl`: removes every entry with `key` (or the entry `#<id>`).
    pub fn del(&self, v: Version, key: &str) -> Result<(), Refused> {
        let id = ref_id(key);
        self.change(v, |e| {
            let before = e.len();
            e.retain(|x| !id.map_or(*x.key == *key, |id| x.id == id));
            if e.len() == before {
                Err(Refused("Key not found.".into()))
            } else {
                Ok(())
            }
        })
    }

    /// `clear map` / `clear acl`.
    pub fn clear(&self, v: Version) -> Result<(), Refused> {
        self.change(v, |e| {
            e.clear();
            Ok(())
        })
    }

    /// `prepare map`: a new empty version; returns its number.
    pub fn prepare(&self) -> u32 {
        let mut st = lock(&self.state);
        st.next_ver = st.next_ver.wrapping_add(1);
        let version = st.next_ver;
        st.pending = Some(Pending {
            version,
            entries: Vec::new(),
        });
        version
    }

    /// `commit map @<ver>`: the prepared version becomes the current one.
    pub fn commit(&self, ver: u32) -> Result<(), Refused> {
        let mut st = lock(&self.state);
        let st = &mut *st;
        match st.pending.take() {
            Some(p) if p.version == ver => {
                st.entries = Arc::new(p.entries);
                st.curr_ver = ver;
                Self::publish(st);
                Ok(())
            }
            other => {
                st.pending = other;
                if ver == st.curr_ver {
                    Ok(())
                } else {
                    Err(Refused("Version number out of range.".into()))
                }
            }
        }
    }

    /// The entry `v` matches for `key`'s way of matching (`get map` / `get acl`), with
    /// its value for maps.
    pub fn get(&self, key: ExprKey, v: &Value<'_>) -> Option<Entry> {
        let e = self.expr(key);
        let idx = e.index();
        let i = idx.find(v, key.icase)?;
        idx.entries.get(i).cloned()
    }

    /// The ways this reference is matched now.
    pub fn keys(&self) -> Vec<ExprKey> {
        lock(&self.state)
            .users
            .iter()
            .filter_map(Weak::upgrade)
            .map(|u| u.key)
            .collect()
    }
}

/// The entry identifier in `#0x...`.
fn ref_id(key: &str) -> Option<u64> {
    let hex = key
        .strip_prefix("#0x")
        .or_else(|| key.strip_prefix("#0X"))?;
    u64::from_str_radix(hex, 16).ok()
}

/// The references one configuration uses: those of the configuration it replaces are kept
/// when their file did not change.
pub struct RefSet<'a> {
    previous: &'a [Arc<PatRef>],
    made: std::cell::RefCell<Vec<Arc<PatRef>>>,
}

impl<'a> RefSet<'a> {
    pub fn new(previous: &'a [Arc<PatRef>]) -> Self {
        Self {
            previous,
            made: Default::default(),
        }
    }

    /// The reference for `file`.
    pub fn get(&self, kind: RefKind, file: &PatFile) -> Arc<PatRef> {
        if let Some(r) = self
            .made
            .borrow()
            .iter()
            .find(|r| r.kind == kind && r.path == file.path)
        {
            return r.clone();
        }
        let r = self
            .previous
            .iter()
            .find(|r| r.same_file(kind, file))
            .cloned()
            .unwrap_or_else(|| PatRef::load(kind, file));
        self.made.borrow_mut().push(r.clone());
        r
    }

    pub fn into_vec(self) -> Vec<Arc<PatRef>> {
        let mut v = self.made.into_inner();
        v.sort_by_key(|r| r.id);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> PatFile {
        PatFile {
            name: "t.map".into(),
            path: "/x/t.map".into(),
            text: text.into(),
        }
    }

    fn s(v: &str) -> Value<'_> {
        Value::Str(Cow::Borrowed(v.as_bytes()))
    }

    fn key(method: MatchMethod) -> ExprKey {
        ExprKey {
            method,
            icase: false,
            output: Some(SampleType::Str),
        }
    }

    fn got(e: &Expr, v: &str) -> Option<String> {
        e.lookup(&s(v))
            .map(|v| String::from_utf8(v.to_bytes().to_vec()).unwrap())
    }

    #[test]
    fn lookups_follow_haproxy_order() {
        let r = PatRef::load(
            RefKind::Map,
            &file("/api/v2 two\n/api one\n/api/v2/x three\nexample.com dom\n"),
        );
        let beg = r.expr(key(MatchMethod::Beg));
        // The first entry in file order wins, not the longest.
        assert_eq!(got(&beg, "/api/v2/x/y").as_deref(), Some("two"));
        assert_eq!(got(&beg, "/api/z").as_deref(), Some("one"));
        assert_eq!(got(&beg, "/ap"), None);
        let dom = r.expr(key(MatchMethod::Dom));
        assert_eq!(got(&dom, "www.example.com").as_deref(), Some("dom"));
        let sub = r.expr(key(MatchMethod::Sub));
        assert_eq!(got(&sub, "x/api/v2/x").as_deref(), Some("two"));
        let ip = PatRef::load(
            RefKind::Map,
            &file("10.0.0.0/8 wide\n10.1.0.0/16 narrow\n::1 six\n"),
        );
        let e = ip.expr(key(MatchMethod::Ip));
        let ipv = |a: &str| e.lookup(&Value::Ip(a.parse().unwrap()));
        // The longest prefix wins.
        assert_eq!(ipv("10.1.2.3").unwrap().to_bytes().as_ref(), b"narrow");
        assert_eq!(ipv("10.2.2.3").unwrap().to_bytes().as_ref(), b"wide");
        assert_eq!(ipv("::ffff:10.2.0.1").unwrap().to_bytes().as_ref(), b"wide");
        assert_eq!(ipv("::1").unwrap().to_bytes().as_ref(), b"six");
        assert!(ipv("11.0.0.1").is_none());
        let reg = PatRef::load(RefKind::Map, &file("^/a/[0-9]+$ num\n^/a/ any\n"));
        let e = reg.expr(key(MatchMethod::Reg));
        assert_eq!(got(&e, "/a/12").as_deref(), Some("num"));
        assert_eq!(got(&e, "/a/b").as_deref(), Some("any"));
    }

    #[test]
    fn runtime_changes_apply_whole_or_not_at_all() {
        let r = PatRef::load(RefKind::Map, &file("a.com be_a\nb.com be_b\n"));
        let str_idx = r.expr(key(MatchMethod::Str));
        assert_eq!(got(&str_idx, "a.com").as_deref(), Some("be_a"));
        r.set(Version::Current, "a.com", "be_c").unwrap();
        assert_eq!(got(&str_idx, "a.com").as_deref(), Some("be_c"));
        r.add(Version::Current, &[("c.com", "be_c")]).unwrap();
        assert_eq!(got(&str_idx, "c.com").as_deref(), Some("be_c"));
        assert_eq!(
            r.del(Version::Current, "nope"),
            Err(Refused("Key not found.".into()))
        );
        assert_eq!(
            r.set(Version::Current, "nope", "x"),
            Err(Refused("entry not found.".into()))
        );
        // An address index refuses a key that is no address, and nothing changes.
        let _ip = r.expr(ExprKey {
            method: MatchMethod::Ip,
            icase: false,
            output: Some(SampleType::Str),
        });
        assert!(r.add(Version::Current, &[]).is_ok());
        let before = r.entries().len();
        assert_eq!(
            r.add(Version::Current, &[("10.0.0.1", "x"), ("notip", "y")]),
            Err(Refused(
                "'notip' is not a valid IPv4 or IPv6 address.".into()
            ))
        );
        assert_eq!(r.entries().len(), before);
        drop(_ip);
        // By identifier.
        let id = r.entries()[0].id;
        r.del(Version::Current, &format!("#0x{id:x}")).unwrap();
        assert_eq!(got(&str_idx, "a.com"), None);
        // Versions.
        let v = r.prepare();
        r.add(Version::At(v), &[("z.com", "be_z")]).unwrap();
        assert_eq!(got(&str_idx, "z.com"), None);
        assert_eq!(
            r.add(Version::At(v + 5), &[("y", "y")]),
            Err(Refused(
                "Version number in the future, please use 'prepare map' before.".into()
            ))
        );
        assert_eq!(
            r.commit(v + 1),
            Err(Refused("Version number out of range.".into()))
        );
        r.commit(v).unwrap();
        assert_eq!(got(&str_idx, "z.com").as_deref(), Some("be_z"));
        assert_eq!(got(&str_idx, "b.com"), None);
        r.clear(Version::Current).unwrap();
        assert_eq!(got(&str_idx, "z.com"), None);
    }

    #[test]
    fn a_reload_keeps_changes_while_the_file_is_unchanged() {
        let f = file("a x\n");
        let r = PatRef::load(RefKind::Map, &f);
        r.add(Version::Current, &[("b", "y")]).unwrap();
        let prev = vec![r.clone()];
        let set = RefSet::new(&prev);
        let same = set.get(RefKind::Map, &f);
        assert!(Arc::ptr_eq(&same, &r));
        assert!(Arc::ptr_eq(&set.get(RefKind::Map, &f), &r), "one per file");
        let set = RefSet::new(&prev);
        let changed = set.get(RefKind::Map, &file("a z\n"));
        assert!(!Arc::ptr_eq(&changed, &r));
        assert_eq!(changed.entries().len(), 1);
        assert!(r.named("#0") || r.named(&format!("#{}", r.id)));
        assert!(r.named("t.map") && r.named("/x/t.map") && !r.named("u.map"));
    }
}
