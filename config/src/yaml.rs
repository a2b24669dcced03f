//! YAML text to a tree of [`Node`]s that remember where they came from.
//!
//! This is the only place that parses YAML. It builds its own small tree from the
//! `saphyr-parser` event stream so every scalar, sequence and mapping keeps its line and
//! column, and so the scalar style (plain or quoted) is known when values are typed.
//! `${VAR}` and `${VAR:-default}` in scalar values are replaced with environment variables.
//!
//! What a file may stand for is bounded ([`crate::limits`]): its size, the nodes it holds
//! with every alias counted as the nodes it repeats, and the scalar text it holds with
//! aliases and `${VAR}` expanded. An alias shares its anchor's lists and mappings instead of
//! copying them, and is refused before it is added when it would cross a bound, so an alias
//! bomb costs neither time nor memory. Nesting depth is bounded by the parser.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::Arc;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

use crate::error::{ConfigError, Pos};

/// A YAML node with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub kind: NodeKind,
}

/// What a node holds.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    /// `~`, `null` or nothing at all.
    Null,
    /// Any scalar; `quoted` tells a string `"80"` from a number `80`.
    Scalar { value: String, quoted: bool },
    /// Items in file order; an alias shares them with its anchor.
    Seq(Arc<Vec<Node>>),
    /// Keys in file order. Keys are scalars (anything else is an error at load).
    Map(Arc<Vec<(Node, Node)>>),
}

impl Node {
    /// The scalar text, if this is a scalar.
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar { value, .. } => Some(value),
            _ => None,
        }
    }

    /// A short name of the node's kind, for error messages.
    pub fn kind_name(&self) -> &'static str {
        match &self.kind {
            NodeKind::Null => "nothing",
            NodeKind::Scalar { .. } => "a scalar",
            NodeKind::Seq(_) => "a list",
            NodeKind::Map(_) => "a mapping",
        }
    }
}

/// How to look up environment variables (a map in tests, the process environment otherwise).
pub trait Env {
    fn get(&self, name: &str) -> Option<String>;
    /// Whether `${VAR}` is replaced at all.
    fn expands(&self) -> bool {
        true
    }
}

/// No `${VAR}` replacement: for files in other programs' formats (Envoy's bootstrap),
/// which take `$` literally.
pub struct Verbatim;

impl Env for Verbatim {
    fn get(&self, _: &str) -> Option<String> {
        None
    }
    fn expands(&self) -> bool {
        false
    }
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Env for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).cloned()
    }
}

fn pos_of(span: &Span) -> Pos {
    Pos {
        line: span.start.line() as u32,
        col: span.start.col() as u32 + 1,
    }
}

/// How much a subtree stands for: its nodes and scalar bytes, aliases expanded.
#[derive(Debug, Clone, Copy, Default)]
struct Weight {
    nodes: u64,
    bytes: u64,
}

/// A list or mapping being built, with the weight of everything before it began.
enum Frame {
    Seq(Pos, Vec<Node>, usize, Weight),
    /// Pending key while its value is being built; the keys seen, once there are many.
    Map(Pos, Vec<(Node, Node)>, Option<Node>, usize, Weight, Keys),
}

/// The keys of a mapping being built, to find duplicates: small mappings are scanned, large
/// ones hashed (seeded per process, so that crafted keys cannot make it slow).
#[derive(Default)]
struct Keys(
    Option<(
        HashMap<u64, usize, BuildIdentity>,
        foldhash::fast::RandomState,
    )>,
);

/// Mappings with more keys than this find duplicates by hashing instead of scanning.
const SCAN_KEYS: usize = 16;

impl Keys {
    /// Records `key`, to be added after `entries`; returns the index of an earlier entry
    /// with the same key.
    fn note(&mut self, key: &str, entries: &[(Node, Node)]) -> Option<usize> {
        let same = |i: &usize| entries[*i].0.as_str() == Some(key);
        if self.0.is_none() && entries.len() < SCAN_KEYS {
            return (0..entries.len()).find(same);
        }
        let (map, state) = self.0.get_or_insert_with(|| {
            let state = foldhash::fast::RandomState::default();
            let mut map = HashMap::with_capacity_and_hasher(entries.len() * 2, BuildIdentity);
            for (i, (k, _)) in entries.iter().enumerate() {
                if let Some(k) = k.as_str() {
                    map.entry(state.hash_one(k)).or_insert(i);
                }
            }
            (map, state)
        });
        match map.entry(state.hash_one(key)) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(entries.len());
                None
            }
            // Two keys with the same 64-bit keyed hash are either the same or a once in
            // an age accident, which a scan settles.
            std::collections::hash_map::Entry::Occupied(o) if same(o.get()) => Some(*o.get()),
            std::collections::hash_map::Entry::Occupied(_) => (0..entries.len()).find(same),
        }
    }
}

/// Hashing for keys that are hashes already.
#[derive(Default, Clone, Copy)]
struct BuildIdentity;

impl std::hash::BuildHasher for BuildIdentity {
    type Hasher = Identity;
    fn build_hasher(&self) -> Identity {
        Identity(0)
    }
}

struct Identity(u64);

impl std::hash::Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Parses one YAML document into a [`Node`]. An empty document is `Null`.
///
/// Errors are syntax errors, aliases to unknown anchors, non-scalar keys, duplicate keys,
/// unset environment variables, and a file past the bounds of [`crate::limits`]; several
/// may be returned at once.
pub fn parse(text: &str, env: &dyn Env) -> Result<Node, Vec<ConfigError>> {
    use crate::limits::{MAX_FILE_BYTES, MAX_TEXT_BYTES};
    let mut errors = Vec::new();
    if text.len() as u64 > MAX_FILE_BYTES {
        errors.push(ConfigError::new(
            Pos { line: 1, col: 1 },
            "",
            crate::limits::file_too_large("configuration file", text.len() as u64),
        ));
        return Err(errors);
    }
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, (Node, Weight)> = HashMap::new();
    let mut root: Option<Node> = None;
    let mut documents = 0;
    // Everything so far, aliases and variables expanded.
    let mut total = Weight::default();

    for item in Parser::new_from_str(text) {
        let (event, span) = match item {
            Ok(x) => x,
            Err(e) => {
                let m = e.marker();
                errors.push(ConfigError::new(
                    Pos {
                        line: m.line() as u32,
                        col: m.col() as u32 + 1,
                    },
                    "",
                    format!("YAML syntax error: {}", e.info()),
                ));
                return Err(errors);
            }
        };
        let pos = pos_of(&span);
        let finished: Option<(Node, usize, Weight)> = match event {
            Event::StreamStart | Event::StreamEnd | Event::Nothing | Event::DocumentEnd => None,
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    errors.push(ConfigError::new(
                        pos,
                        "",
                        "only one YAML document is allowed per file",
                    ));
                    return Err(errors);
                }
                None
            }
            Event::Alias(id) => match anchors.get(&id) {
                Some((n, w)) => {
                    total.nodes += w.nodes;
                    total.bytes += w.bytes;
                    if let Some(msg) = past_bounds(total, true) {
                        errors.push(ConfigError::new(pos, "", msg));
                        return Err(errors);
                    }
                    // Lists and mappings are shared, not copied.
                    let mut n = n.clone();
                    n.pos = pos;
                    Some((n, 0, *w))
                }
                None => {
                    errors.push(ConfigError::new(pos, "", "alias to an unknown anchor"));
                    Some((
                        Node {
                            pos,
                            kind: NodeKind::Null,
                        },
                        0,
                        Weight::default(),
                    ))
                }
            },
            Event::Scalar(value, style, anchor, _tag) => {
                let quoted = !matches!(style, ScalarStyle::Plain);
                let kind = if !quoted && matches!(&*value, "" | "~" | "null" | "Null" | "NULL") {
                    NodeKind::Null
                } else {
                    let budget = MAX_TEXT_BYTES.saturating_sub(total.bytes);
                    let value = match expand_env(&value, env, budget) {
                        Ok(v) => v,
                        Err(Expand::Invalid(msg)) => {
                            errors.push(ConfigError::new(pos, "", msg));
                            value.into_owned()
                        }
                        Err(Expand::TooLarge(msg)) => {
                            errors.push(ConfigError::new(pos, "", msg));
                            return Err(errors);
                        }
                    };
                    NodeKind::Scalar { value, quoted }
                };
                let w = Weight {
                    nodes: 1,
                    bytes: match &kind {
                        NodeKind::Scalar { value, .. } => value.len() as u64,
                        _ => 0,
                    },
                };
                total.nodes += w.nodes;
                total.bytes += w.bytes;
                if let Some(msg) = past_bounds(total, false) {
                    errors.push(ConfigError::new(pos, "", msg));
                    return Err(errors);
                }
                Some((Node { pos, kind }, anchor, w))
            }
            Event::SequenceStart(anchor, _) => {
                stack.push(Frame::Seq(pos, Vec::new(), anchor, total));
                total.nodes += 1;
                None
            }
            Event::MappingStart(anchor, _) => {
                stack.push(Frame::Map(
                    pos,
                    Vec::new(),
                    None,
                    anchor,
                    total,
                    Keys::default(),
                ));
                total.nodes += 1;
                None
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq(p, items, anchor, before)) => Some((
                    Node {
                        pos: p,
                        kind: NodeKind::Seq(Arc::new(items)),
                    },
                    anchor,
                    since(before, total),
                )),
                _ => None,
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map(p, entries, _, anchor, before, _)) => {
                    let entries = merge_keys(entries, &mut errors);
                    Some((
                        Node {
                            pos: p,
                            kind: NodeKind::Map(Arc::new(entries)),
                        },
                        anchor,
                        since(before, total),
                    ))
                }
                _ => None,
            },
        };
        if let Some(msg) = past_bounds(total, false) {
            errors.push(ConfigError::new(pos, "", msg));
            return Err(errors);
        }
        let Some((node, anchor, weight)) = finished else {
            continue;
        };
        if anchor != 0 {
            anchors.insert(anchor, (node.clone(), weight));
        }
        match stack.last_mut() {
            None => root = Some(node),
            Some(Frame::Seq(_, items, _, _)) => items.push(node),
            Some(Frame::Map(_, entries, pending, _, _, seen)) => match pending.take() {
                None => {
                    if !matches!(node.kind, NodeKind::Scalar { .. }) {
                        errors.push(ConfigError::new(
                            node.pos,
                            "",
                            format!("a key must be a scalar, found {}", node.kind_name()),
                        ));
                    }
                    *pending = Some(node);
                }
                Some(key) => {
                    if let Some(k) = key.as_str().filter(|k| *k != "<<")
                        && let Some(first) = seen.note(k, entries)
                    {
                        errors.push(ConfigError::new(
                            key.pos,
                            "",
                            format!(
                                "duplicate key {k:?} (first at line {})",
                                entries[first].0.pos.line
                            ),
                        ));
                    }
                    entries.push((key, node));
                }
            },
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(root.unwrap_or(Node {
        pos: Pos { line: 1, col: 1 },
        kind: NodeKind::Null,
    }))
}

/// The weight of what was added since `before`.
fn since(before: Weight, now: Weight) -> Weight {
    Weight {
        nodes: now.nodes - before.nodes,
        bytes: now.bytes - before.bytes,
    }
}

/// Why a file that stands for `total` is refused, if it is.
fn past_bounds(total: Weight, alias: bool) -> Option<String> {
    use crate::limits::{MAX_NODES, MAX_TEXT_BYTES};
    let how = if alias {
        "with this alias, the file stands for"
    } else {
        "the file stands for"
    };
    if total.nodes > MAX_NODES {
        return Some(format!(
            "{how} more than {MAX_NODES} YAML nodes (an alias counts as every node it \
             repeats); refused"
        ));
    }
    if total.bytes > MAX_TEXT_BYTES {
        return Some(format!(
            "{how} more than {} of scalar text (aliases and ${{VAR}} expanded); refused",
            crate::limits::show_bytes(MAX_TEXT_BYTES)
        ));
    }
    None
}

/// Applies YAML merge keys (`<<: *base` or `<<: [*a, *b]`): keys of the merged mappings
/// are added unless the mapping already has them.
fn merge_keys(entries: Vec<(Node, Node)>, errors: &mut Vec<ConfigError>) -> Vec<(Node, Node)> {
    if !entries.iter().any(|(k, _)| k.as_str() == Some("<<")) {
        return entries;
    }
    let mut own = Vec::new();
    let mut merged = Vec::new();
    for (k, v) in entries {
        if k.as_str() != Some("<<") {
            own.push((k, v));
            continue;
        }
        let sources = match v.kind {
            NodeKind::Seq(items) => Arc::unwrap_or_clone(items),
            _ => vec![v],
        };
        for src in sources {
            match src.kind {
                NodeKind::Map(m) => merged.extend(m.iter().cloned()),
                _ => errors.push(ConfigError::new(
                    src.pos,
                    "",
                    "a merge key (<<) needs a mapping or a list of mappings",
                )),
            }
        }
    }
    let mut keys: HashSet<String> = own
        .iter()
        .filter_map(|(k, _)| k.as_str().map(str::to_owned))
        .collect();
    for (k, v) in merged {
        if k.as_str().is_none_or(|s| keys.insert(s.to_owned())) {
            own.push((k, v));
        }
    }
    own
}

/// Why a scalar's variables could not be replaced.
enum Expand {
    /// A mistake in this scalar; loading goes on to find others.
    Invalid(String),
    /// The file is past its bounds; loading stops.
    TooLarge(String),
}

/// Replaces `${NAME}` and `${NAME:-default}`; `$$` is a literal `$`. The result may be at
/// most `budget` bytes long.
fn expand_env(value: &str, env: &dyn Env, budget: u64) -> Result<String, Expand> {
    if !env.expands() {
        return Ok(value.to_owned());
    }
    if !value.contains('$') {
        return Ok(value.to_owned());
    }
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if let Some(r) = rest.strip_prefix("$$") {
            out.push('$');
            rest = r;
        } else if let Some(r) = rest.strip_prefix("${") {
            let Some(end) = r.find('}') else {
                return Err(Expand::Invalid(format!(
                    "unterminated ${{...}} in {value:?}"
                )));
            };
            let inner = &r[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            let valid =
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid {
                return Err(Expand::Invalid(format!(
                    "invalid environment variable name {name:?}"
                )));
            }
            match (env.get(name), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(Expand::Invalid(format!(
                        "environment variable {name} is not set (use ${{{name}:-default}} for a default)"
                    )));
                }
            }
            if out.len() as u64 > budget {
                return Err(Expand::TooLarge(format!(
                    "with ${{{name}}} expanded, the file stands for more than {} of scalar \
                     text; refused",
                    crate::limits::show_bytes(crate::limits::MAX_TEXT_BYTES)
                )));
            }
            rest = &r[end + 1..];
        } else {
            out.push('$');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> HashMap<String, String> {
        HashMap::from([("PORT".to_owned(), "8080".to_owned())])
    }

    #[test]
    fn parse_records_positions_of_nested_values() {
        let n = parse("a:\n  b: [1, 2]\n  c: \"x\"\n", &env()).unwrap();
        let NodeKind::Map(top) = &n.kind else {
            panic!()
        };
        let NodeKind::Map(inner) = &top[0].1.kind else {
            panic!()
        };
        assert_eq!(inner[1].0.pos, Pos { line: 3, col: 3 });
        assert_eq!(inner[1].1.pos, Pos { line: 3, col: 6 });
        assert_eq!(
            inner[1].1.kind,
            NodeKind::Scalar {
                value: "x".into(),
                quoted: true
            }
        );
    }

    #[test]
    fn parse_duplicate_key_is_an_error() {
        let e = parse("a: 1\nb: 2\na: 3\n", &env()).unwrap_err();
        assert_eq!(e[0].pos, Pos { line: 3, col: 1 });
        assert!(e[0].message.contains("duplicate key \"a\""), "{}", e[0]);
    }

    #[test]
    fn parse_expands_environment_and_defaults() {
        let n = parse("p: \":${PORT}\"\nq: ${NOPE:-9}\nr: $$x\n", &env()).unwrap();
        let NodeKind::Map(m) = n.kind else { panic!() };
        assert_eq!(m[0].1.as_str(), Some(":8080"));
        assert_eq!(m[1].1.as_str(), Some("9"));
        assert_eq!(m[2].1.as_str(), Some("$x"));
        let e = parse("p: ${NOPE}\n", &env()).unwrap_err();
        assert!(e[0].message.contains("NOPE is not set"));
    }

    #[test]
    fn parse_merges_anchored_mappings() {
        let n = parse("base: &b {x: 1, y: 2}\nc:\n  <<: *b\n  y: 3\n", &env()).unwrap();
        let NodeKind::Map(m) = n.kind else { panic!() };
        let NodeKind::Map(c) = &m[1].1.kind else {
            panic!()
        };
        let keys: Vec<_> = c
            .iter()
            .map(|(k, v)| (k.as_str().unwrap(), v.as_str().unwrap()))
            .collect();
        assert_eq!(keys, vec![("y", "3"), ("x", "1")]);
    }

    /// Nine lists of nine aliases to the list before: 9^9 nodes from a few hundred bytes.
    fn laughs(levels: usize) -> String {
        let mut s = "a0: &a0 [lol]\n".to_owned();
        for i in 1..=levels {
            let refs = vec![format!("*a{}", i - 1); 9].join(", ");
            s += &format!("a{i}: &a{i} [{refs}]\n");
        }
        s
    }

    #[test]
    fn aliases_are_counted_as_they_expand_and_refused_where_they_cross_the_budget() {
        // 9^5 = 59,049 nodes at the last level: within the budget, and shared, not copied.
        let n = parse(&laughs(5), &env()).unwrap();
        let NodeKind::Map(m) = &n.kind else { panic!() };
        let (NodeKind::Seq(a5), NodeKind::Seq(a4)) = (&m[5].1.kind, &m[4].1.kind) else {
            panic!()
        };
        let NodeKind::Seq(first) = &a5[0].kind else {
            panic!()
        };
        assert!(Arc::ptr_eq(first, a4), "an alias shares what it repeats");
        // 9^9: refused at the alias that crosses 1,000,000 nodes, the seventh `*a5` of
        // `a6` (each stands for 66,430 nodes), long before anything is expanded.
        let e = parse(&laughs(9), &env()).unwrap_err();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].pos, Pos { line: 7, col: 40 });
        assert!(
            e[0].message
                .starts_with("with this alias, the file stands for more than 1000000 YAML nodes"),
            "{}",
            e[0]
        );
    }

    #[test]
    fn nodes_and_expanded_text_are_bounded_without_aliases_too() {
        let list = vec!["1"; 1_000_001].join(",");
        let e = parse(&format!("x: [{list}]\n"), &env()).unwrap_err();
        assert!(
            e[0].message.contains("more than 1000000 YAML nodes"),
            "{}",
            e[0]
        );
        let big = HashMap::from([("BIG".to_owned(), "a".repeat(1 << 20))]);
        let text = format!("x: \"{}\"\n", "${BIG}".repeat(33));
        let e = parse(&text, &big).unwrap_err();
        assert_eq!(e[0].pos, Pos { line: 1, col: 4 });
        assert!(
            e[0].message.contains("more than 32 MiB of scalar text"),
            "{}",
            e[0]
        );
        // 32 of them fit.
        let text = format!("x: \"{}\"\n", "${BIG}".repeat(31));
        assert!(parse(&text, &big).is_ok());
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = |n| format!("x: {}1{}\n", "[".repeat(n), "]".repeat(n));
        assert!(parse(&deep(200), &env()).is_ok());
        let e = parse(&deep(100_000), &env()).unwrap_err();
        assert_eq!(e[0].pos, Pos { line: 1, col: 259 });
        assert!(
            e[0].message.contains("recursion limit exceeded"),
            "{}",
            e[0]
        );
    }

    #[test]
    fn duplicate_keys_are_found_among_many() {
        let mut text: String = (0..50_000).map(|i| format!("k{i}: 1\n")).collect();
        text += "k777: 2\n";
        let e = parse(&text, &env()).unwrap_err();
        assert_eq!(e.len(), 1);
        assert_eq!(
            e[0].pos,
            Pos {
                line: 50_001,
                col: 1
            }
        );
        assert!(e[0].message.contains("duplicate key \"k777\""), "{}", e[0]);
    }

    #[test]
    fn parse_syntax_error_has_a_position() {
        let e = parse("a: [1, 2\nb: 3\n", &env()).unwrap_err();
        assert!(e[0].message.starts_with("YAML syntax error"), "{}", e[0]);
        assert!(e[0].pos.line >= 1);
    }
}
