//! Typed decoding of a [`Node`] tree that collects every error instead of stopping at the
//! first one, with the key path and position of each.
//!
//! Structs are declared with [`config_struct!`], which generates the struct, its
//! [`Decode`] impl (unknown keys are errors, with the nearest valid key suggested) and its
//! [`Schema`] (used to check that the reference documentation covers every key).

use std::fmt;
use std::time::Duration;

use crate::error::{ConfigError, Pos, nearest};
use crate::yaml::{Node, NodeKind};

/// Decoding context: the errors found so far and the key path being decoded.
#[derive(Default)]
pub struct Cx {
    errors: Vec<ConfigError>,
    path: Vec<String>,
    /// Directory that relative file names in the configuration are read from (`-f` pattern
    /// files); `None` refuses them.
    pub base_dir: Option<std::path::PathBuf>,
    /// Key paths already suggested for a misspelt key, so they are not also reported missing.
    suggested: std::collections::HashSet<String>,
    /// Pattern files read and ACL patterns counted, for the whole configuration.
    pub patterns: std::rc::Rc<crate::rules::acl::PatternBudget>,
}

impl Cx {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_base_dir(dir: std::path::PathBuf) -> Self {
        Self {
            base_dir: Some(dir),
            ..Self::default()
        }
    }

    /// The current key path, dot separated.
    pub fn path(&self) -> String {
        self.path.join(".")
    }

    /// Records an error at `pos` for the current path.
    pub fn error(&mut self, pos: Pos, message: impl Into<String>) {
        let path = self.path();
        self.errors.push(ConfigError::new(pos, path, message));
    }

    /// Records an error at `pos` for the current path extended by `key`.
    pub fn error_at_key(&mut self, pos: Pos, key: &str, message: impl Into<String>) {
        self.path.push(key.to_owned());
        self.error(pos, message);
        self.path.pop();
    }

    /// Runs `f` with `key` appended to the path.
    pub fn within<R>(&mut self, key: &str, f: impl FnOnce(&mut Self) -> R) -> R {
        self.path.push(key.to_owned());
        let r = f(self);
        self.path.pop();
        r
    }

    /// Decodes `node` as a `T` under `key`.
    pub fn field<T: Decode>(&mut self, key: &str, node: &Node) -> Option<T> {
        self.within(key, |cx| T::decode(node, cx))
    }

    /// Reports a missing required key, unless a misspelling of it was already reported.
    pub fn missing(&mut self, parent: &Node, key: &str) {
        let p = self.path();
        let full = if p.is_empty() {
            key.to_owned()
        } else {
            format!("{p}.{key}")
        };
        if !self.suggested.contains(&full) {
            self.error(parent.pos, format!("missing required key {key:?}"));
        }
    }

    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    pub fn into_errors(self) -> Vec<ConfigError> {
        self.errors
    }

    /// The entries of a mapping whose keys must all be in `keys`; unknown keys are
    /// reported (with a suggestion) and left out.
    pub fn struct_entries<'n>(
        &mut self,
        node: &'n Node,
        keys: &[&str],
    ) -> Option<Vec<(&'n str, &'n Node)>> {
        let entries = match &node.kind {
            NodeKind::Map(entries) => entries,
            NodeKind::Null => return Some(Vec::new()),
            _ => {
                self.error(
                    node.pos,
                    format!("expected a mapping, found {}", node.kind_name()),
                );
                return None;
            }
        };
        let mut out = Vec::with_capacity(entries.len());
        for (k, v) in entries.iter() {
            let Some(name) = k.as_str() else { continue };
            if keys.contains(&name) {
                out.push((name, v));
            } else {
                let hint = match nearest(name, keys.iter().copied()) {
                    Some(n) => {
                        let p = self.path();
                        self.suggested.insert(if p.is_empty() {
                            n.to_owned()
                        } else {
                            format!("{p}.{n}")
                        });
                        format!(" (did you mean {n:?}?)")
                    }
                    None => format!(" (valid keys: {})", keys.join(", ")),
                };
                self.error_at_key(k.pos, name, format!("unknown key {name:?}{hint}"));
            }
        }
        Some(out)
    }

    /// The scalar text of `node`, or an error saying what was `expected`.
    pub fn scalar<'n>(&mut self, node: &'n Node, expected: &str) -> Option<&'n str> {
        match &node.kind {
            NodeKind::Scalar { value, .. } => Some(value),
            _ => {
                self.error(
                    node.pos,
                    format!("expected {expected}, found {}", node.kind_name()),
                );
                None
            }
        }
    }

    /// Parses a scalar with `parse`; a parse error becomes a config error.
    pub fn parse_scalar<T>(
        &mut self,
        node: &Node,
        expected: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let s = self.scalar(node, expected)?;
        match parse(s) {
            Ok(v) => Some(v),
            Err(e) => {
                self.error(node.pos, e);
                None
            }
        }
    }
}

/// The keys of a struct and the shape of each value.
pub type SchemaKeys = &'static [(&'static str, fn() -> Schema)];

/// The shape of a configuration type, walked by the documentation test.
#[derive(Clone, Copy)]
pub enum Schema {
    /// A value with no keys of its own.
    Leaf,
    /// Named keys.
    Struct(SchemaKeys),
    /// User-chosen names mapping to values of one shape.
    Map(fn() -> Schema),
    /// A list of values of one shape.
    Seq(fn() -> Schema),
}

impl fmt::Debug for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schema::Leaf => f.write_str("Leaf"),
            Schema::Struct(keys) => f.debug_list().entries(keys.iter().map(|(k, _)| k)).finish(),
            Schema::Map(_) => f.write_str("Map"),
            Schema::Seq(_) => f.write_str("Seq"),
        }
    }
}

impl Schema {
    /// Every key path below this schema, like `frontends.<name>.bind[].address`.
    pub fn key_paths(&self, prefix: &str, out: &mut Vec<String>) {
        match self {
            Schema::Leaf => {}
            Schema::Struct(keys) => {
                for (k, sub) in keys.iter() {
                    let p = if prefix.is_empty() {
                        (*k).to_owned()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    out.push(p.clone());
                    sub().key_paths(&p, out);
                }
            }
            Schema::Map(sub) => sub().key_paths(&format!("{prefix}.<name>"), out),
            Schema::Seq(sub) => sub().key_paths(&format!("{prefix}[]"), out),
        }
    }
}

/// A configuration value that can be decoded from a YAML node.
pub trait Decode: Sized {
    /// Decodes `node`, recording every problem in `cx`; `None` when there was one.
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self>;

    /// The value when the key is missing from `parent`. By default a missing key is an error.
    fn absent(cx: &mut Cx, parent: &Node, key: &str) -> Option<Self> {
        cx.missing(parent, key);
        None
    }

    fn schema() -> Schema {
        Schema::Leaf
    }

    /// What to use when the value was present but invalid (its error is already
    /// recorded), so that decoding and validation can go on and report more. `None` makes
    /// the enclosing value invalid too.
    fn fallback() -> Option<Self> {
        None
    }
}

/// Declares a configuration struct: the struct itself, its decoder and its schema.
///
/// Each field is `pub name: Type` (required unless the type has its own absent value, like
/// `Option`, `Vec` or another config struct) or `pub name: Type = default`. A field whose
/// YAML key is a Rust keyword is written `pub field as "key": Type`.
#[macro_export]
macro_rules! config_struct {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $(
                $(#[$fmeta:meta])*
                pub $field:ident $(as $key:literal)? : $fty:ty $(= $default:expr)?
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $fty, )*
        }

        impl $name {
            /// The YAML keys of this struct.
            pub const KEYS: &'static [&'static str] = &[$($crate::__config_key!($field $(, $key)?)),*];
        }

        impl $crate::decode::Decode for $name {
            fn decode(node: &$crate::yaml::Node, cx: &mut $crate::decode::Cx) -> Option<Self> {
                #[allow(unused_variables)]
                let entries = cx.struct_entries(node, Self::KEYS)?;
                $(
                    let key = $crate::__config_key!($field $(, $key)?);
                    let $field: Option<$fty> = match entries.iter().find(|(k, _)| *k == key) {
                        Some((_, v)) => cx.field(key, v).or_else(|| $crate::__config_fallback!($fty $(, $default)?)),
                        None => $crate::__config_absent!(cx, node, key, $fty $(, $default)?),
                    };
                )*
                Some(Self { $( $field: $field?, )* })
            }

            fn absent(cx: &mut $crate::decode::Cx, parent: &$crate::yaml::Node, key: &str) -> Option<Self> {
                let empty = $crate::yaml::Node { pos: parent.pos, kind: $crate::yaml::NodeKind::Null };
                cx.field(key, &empty)
            }

            fn fallback() -> Option<Self> {
                let empty = $crate::yaml::Node { pos: $crate::error::Pos::default(), kind: $crate::yaml::NodeKind::Null };
                Self::decode(&empty, &mut $crate::decode::Cx::new())
            }

            fn schema() -> $crate::decode::Schema {
                $crate::decode::Schema::Struct(&[
                    $( ($crate::__config_key!($field $(, $key)?), <$fty as $crate::decode::Decode>::schema) ),*
                ])
            }
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __config_key {
    ($field:ident) => {
        stringify!($field)
    };
    ($field:ident, $key:literal) => {
        $key
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __config_fallback {
    ($fty:ty) => {
        <$fty as $crate::decode::Decode>::fallback()
    };
    ($fty:ty, $default:expr) => {
        Some($default)
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __config_absent {
    ($cx:ident, $node:ident, $key:ident, $fty:ty) => {
        <$fty as $crate::decode::Decode>::absent($cx, $node, $key)
    };
    ($cx:ident, $node:ident, $key:ident, $fty:ty, $default:expr) => {
        Some($default)
    };
}

/// A value and where it was written, for errors found after decoding (unknown backend
/// names and the like).
#[derive(Debug, Clone)]
pub struct Spanned<T> {
    pub value: T,
    pub pos: Pos,
}

impl<T: PartialEq> PartialEq for Spanned<T> {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl<T> std::ops::Deref for Spanned<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: Decode> Decode for Spanned<T> {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        Some(Spanned {
            value: T::decode(node, cx)?,
            pos: node.pos,
        })
    }
    fn schema() -> Schema {
        T::schema()
    }
}

impl<T: Decode> Decode for Option<T> {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        if node.kind == NodeKind::Null {
            return Some(None);
        }
        T::decode(node, cx).map(Some)
    }
    fn absent(_: &mut Cx, _: &Node, _: &str) -> Option<Self> {
        Some(None)
    }
    fn fallback() -> Option<Self> {
        Some(None)
    }
    fn schema() -> Schema {
        T::schema()
    }
}

/// A list; a single value where a list is expected is a list of one.
impl<T: Decode> Decode for Vec<T> {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        match &node.kind {
            NodeKind::Null => Some(Vec::new()),
            NodeKind::Seq(items) => {
                // Items that fail are left out (their errors are recorded).
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    if let Some(v) = cx.within(&format!("{i}"), |cx| T::decode(item, cx)) {
                        out.push(v);
                    }
                }
                Some(out)
            }
            _ => T::decode(node, cx).map(|v| vec![v]),
        }
    }
    fn absent(_: &mut Cx, _: &Node, _: &str) -> Option<Self> {
        Some(Vec::new())
    }
    fn fallback() -> Option<Self> {
        Some(Vec::new())
    }
    fn schema() -> Schema {
        Schema::Seq(T::schema)
    }
}

/// A mapping from user-chosen names to values, in file order.
///
/// Entries that failed to decode are left out but their names are kept as invalid, so
/// that references to them are not reported as unknown as well. Lookups in a large map go
/// through an index built at the first lookup, so that checking many references against
/// many names stays linear.
pub struct NamedMap<V> {
    entries: Vec<(Spanned<String>, V)>,
    invalid: Vec<String>,
    /// Name to the first entry of that name (`None`: declared but invalid).
    index: std::sync::OnceLock<FastMap<String, Option<usize>>>,
}

/// A hash map for names from the configuration: a fast hash, seeded per process.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Maps up to this size are searched without an index.
const SCAN_NAMES: usize = 16;

impl<V> Default for NamedMap<V> {
    fn default() -> Self {
        Self::new(Vec::new(), Vec::new())
    }
}

impl<V: Clone> Clone for NamedMap<V> {
    fn clone(&self) -> Self {
        Self::new(self.entries.clone(), self.invalid.clone())
    }
}

impl<V: PartialEq> PartialEq for NamedMap<V> {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries && self.invalid == other.invalid
    }
}

impl<V: fmt::Debug> fmt::Debug for NamedMap<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NamedMap")
            .field("entries", &self.entries)
            .field("invalid", &self.invalid)
            .finish()
    }
}

impl<V> Extend<(Spanned<String>, V)> for NamedMap<V> {
    fn extend<I: IntoIterator<Item = (Spanned<String>, V)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.push(k, v);
        }
    }
}

impl<V> FromIterator<(Spanned<String>, V)> for NamedMap<V> {
    fn from_iter<I: IntoIterator<Item = (Spanned<String>, V)>>(iter: I) -> Self {
        Self::new(iter.into_iter().collect(), Vec::new())
    }
}

impl<V> NamedMap<V> {
    /// Entries in order, and the names of entries that were declared but invalid.
    pub fn new(entries: Vec<(Spanned<String>, V)>, invalid: Vec<String>) -> Self {
        Self {
            entries,
            invalid,
            index: std::sync::OnceLock::new(),
        }
    }
    /// Adds an entry at the end.
    pub fn push(&mut self, name: Spanned<String>, value: V) {
        if let Some(index) = self.index.get_mut() {
            index
                .entry(name.value.clone())
                .or_insert(Some(self.entries.len()));
        }
        self.entries.push((name, value));
    }
    /// The entries in order.
    pub fn entries(&self) -> &[(Spanned<String>, V)] {
        &self.entries
    }
    /// The entries in order, taken out.
    pub fn into_entries(self) -> Vec<(Spanned<String>, V)> {
        self.entries
    }
    /// Names declared with an invalid value.
    pub fn invalid(&self) -> &[String] {
        &self.invalid
    }
    fn find(&self, name: &str) -> Option<Option<usize>> {
        if self.entries.len() + self.invalid.len() <= SCAN_NAMES {
            return match self.entries.iter().position(|(k, _)| k.value == name) {
                Some(i) => Some(Some(i)),
                None => self.invalid.iter().any(|n| n == name).then_some(None),
            };
        }
        let index = self.index.get_or_init(|| {
            let mut m = FastMap::with_capacity_and_hasher(self.entries.len(), Default::default());
            for (i, (k, _)) in self.entries.iter().enumerate() {
                m.entry(k.value.clone()).or_insert(Some(i));
            }
            for n in &self.invalid {
                m.entry(n.clone()).or_insert(None);
            }
            m
        });
        index.get(name).copied()
    }
    pub fn get(&self, name: &str) -> Option<&V> {
        let i = self.find(name)??;
        Some(&self.entries[i].1)
    }
    /// The value of `name`, to change (the names stay as they are).
    pub fn get_mut(&mut self, name: &str) -> Option<&mut V> {
        let i = self.find(name)??;
        Some(&mut self.entries[i].1)
    }
    /// Whether `name` is declared (even if its value was invalid).
    pub fn contains(&self, name: &str) -> bool {
        self.find(name).is_some()
    }
    /// Where `name` is declared.
    pub fn pos_of(&self, name: &str) -> Option<Pos> {
        let i = self.find(name)??;
        Some(self.entries[i].0.pos)
    }
    pub fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        self.entries.iter().map(|(k, v)| (k.value.as_str(), v))
    }
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(k, _)| k.value.as_str())
    }
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Whether `name` is a valid object name: letters, digits, `-`, `_`, `.` and `:`,
/// as HAProxy allows for proxy and server names.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

impl<V: Decode> Decode for NamedMap<V> {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        let entries = match &node.kind {
            NodeKind::Null => return Some(Self::default()),
            NodeKind::Map(e) => e,
            _ => {
                cx.error(
                    node.pos,
                    format!("expected a mapping of names, found {}", node.kind_name()),
                );
                return None;
            }
        };
        let mut out = Vec::with_capacity(entries.len());
        let mut invalid = Vec::new();
        for (k, v) in entries.iter() {
            let Some(name) = k.as_str() else { continue };
            if !valid_name(name) {
                cx.error_at_key(
                    k.pos,
                    name,
                    format!("invalid name {name:?}: use letters, digits, '-', '_', '.' and ':'"),
                );
                continue;
            }
            match cx.field::<V>(name, v) {
                Some(val) => out.push((
                    Spanned {
                        value: name.to_owned(),
                        pos: k.pos,
                    },
                    val,
                )),
                None => invalid.push(name.to_owned()),
            }
        }
        Some(NamedMap::new(out, invalid))
    }
    fn absent(_: &mut Cx, _: &Node, _: &str) -> Option<Self> {
        Some(Self::default())
    }
    fn fallback() -> Option<Self> {
        Some(Self::default())
    }
    fn schema() -> Schema {
        Schema::Map(V::schema)
    }
}

impl Decode for String {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        cx.scalar(node, "a string").map(str::to_owned)
    }
}

impl Decode for bool {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        cx.parse_scalar(node, "true or false", |s| match s {
            "true" | "True" | "TRUE" => Ok(true),
            "false" | "False" | "FALSE" => Ok(false),
            _ => Err(format!("expected true or false, found {s:?}")),
        })
    }
}

macro_rules! decode_int {
    ($($t:ty),*) => {$(
        impl Decode for $t {
            fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
                cx.parse_scalar(node, "a number", |s| {
                    s.replace('_', "").parse::<$t>().map_err(|_| {
                        format!("expected a whole number between {} and {}, found {s:?}", <$t>::MIN, <$t>::MAX)
                    })
                })
            }
        }
    )*};
}
decode_int!(u8, u16, u32, u64, usize, i64);

impl Decode for f64 {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        cx.parse_scalar(node, "a number", |s| {
            s.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| format!("expected a number, found {s:?}"))
        })
    }
}

/// Parses a duration: a number and a unit (`us`, `ms`, `s`, `m`, `h`, `d`), or a bare
/// number of milliseconds as HAProxy reads timeouts.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad =
        || format!("invalid duration {s:?}: expected a number and a unit, like 250ms, 5s, 2m, 1h");
    if num.is_empty() {
        return Err(bad());
    }
    let n: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "us" => n / 1e6,
        "ms" | "" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => return Err(bad()),
    };
    if !(0.0..=1e10).contains(&secs) {
        return Err(format!("duration {s:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

impl Decode for Duration {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        cx.parse_scalar(node, "a duration", parse_duration)
    }
}

/// A size or count: a number with an optional `k`, `m` or `g` suffix (powers of 1024).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size(pub u64);

/// Parses a size such as `16k`, `1m`, `512`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let t = lower.strip_suffix('b').unwrap_or(&lower);
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'k')) => (&t[..i], 1u64 << 10),
        Some((i, 'm')) => (&t[..i], 1 << 20),
        Some((i, 'g')) => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| {
            format!("invalid size {s:?}: expected a number with an optional k, m or g suffix")
        })
}

impl Decode for Size {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        cx.parse_scalar(node, "a size", parse_size).map(Size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_duration_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("100"), Ok(Duration::from_millis(100)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn parse_size_suffixes() {
        assert_eq!(parse_size("16k"), Ok(16384));
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert_eq!(parse_size("1MB"), Ok(1 << 20));
        assert_eq!(parse_size("512"), Ok(512));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999999999g").is_err());
    }
}
