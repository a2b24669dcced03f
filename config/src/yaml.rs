//! YAML text to a tree of [`Node`]s that remember where they came from.
//!
//! This is the only place that parses YAML. It builds its own small tree from the
//! `saphyr-parser` event stream so every scalar, sequence and mapping keeps its line and
//! column, and so the scalar style (plain or quoted) is known when values are typed.
//! `${VAR}` and `${VAR:-default}` in scalar values are replaced with environment variables.

use std::collections::HashMap;

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
    Scalar {
        value: String,
        quoted: bool,
    },
    Seq(Vec<Node>),
    /// Keys in file order. Keys are scalars (anything else is an error at load).
    Map(Vec<(Node, Node)>),
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

enum Frame {
    Seq(Pos, Vec<Node>, usize),
    /// Pending key while its value is being built.
    Map(Pos, Vec<(Node, Node)>, Option<Node>, usize),
}

/// Parses one YAML document into a [`Node`]. An empty document is `Null`.
///
/// Errors are syntax errors, aliases to unknown anchors, non-scalar keys, duplicate keys,
/// and unset environment variables; several may be returned at once.
pub fn parse(text: &str, env: &dyn Env) -> Result<Node, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, Node> = HashMap::new();
    let mut root: Option<Node> = None;
    let mut documents = 0;

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
        let finished: Option<(Node, usize)> = match event {
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
                Some(n) => {
                    let mut n = n.clone();
                    n.pos = pos;
                    Some((n, 0))
                }
                None => {
                    errors.push(ConfigError::new(pos, "", "alias to an unknown anchor"));
                    Some((
                        Node {
                            pos,
                            kind: NodeKind::Null,
                        },
                        0,
                    ))
                }
            },
            Event::Scalar(value, style, anchor, _tag) => {
                let quoted = !matches!(style, ScalarStyle::Plain);
                let kind = if !quoted && matches!(&*value, "" | "~" | "null" | "Null" | "NULL") {
                    NodeKind::Null
                } else {
                    let value = match expand_env(&value, env) {
                        Ok(v) => v,
                        Err(msg) => {
                            errors.push(ConfigError::new(pos, "", msg));
                            value.into_owned()
                        }
                    };
                    NodeKind::Scalar { value, quoted }
                };
                Some((Node { pos, kind }, anchor))
            }
            Event::SequenceStart(anchor, _) => {
                stack.push(Frame::Seq(pos, Vec::new(), anchor));
                None
            }
            Event::MappingStart(anchor, _) => {
                stack.push(Frame::Map(pos, Vec::new(), None, anchor));
                None
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq(p, items, anchor)) => Some((
                    Node {
                        pos: p,
                        kind: NodeKind::Seq(items),
                    },
                    anchor,
                )),
                _ => None,
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map(p, entries, _, anchor)) => {
                    let entries = merge_keys(entries, &mut errors);
                    Some((
                        Node {
                            pos: p,
                            kind: NodeKind::Map(entries),
                        },
                        anchor,
                    ))
                }
                _ => None,
            },
        };
        let Some((node, anchor)) = finished else {
            continue;
        };
        if anchor != 0 {
            anchors.insert(anchor, node.clone());
        }
        match stack.last_mut() {
            None => root = Some(node),
            Some(Frame::Seq(_, items, _)) => items.push(node),
            Some(Frame::Map(_, entries, pending, _)) => match pending.take() {
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
                    if key.as_str() != Some("<<")
                        && let Some((dup, _)) = entries
                            .iter()
                            .find(|(k, _)| k.as_str().is_some() && k.as_str() == key.as_str())
                    {
                        errors.push(ConfigError::new(
                            key.pos,
                            "",
                            format!(
                                "duplicate key {:?} (first at line {})",
                                key.as_str().unwrap_or_default(),
                                dup.pos.line
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
            NodeKind::Seq(items) => items,
            _ => vec![v],
        };
        for src in sources {
            match src.kind {
                NodeKind::Map(m) => merged.extend(m),
                _ => errors.push(ConfigError::new(
                    src.pos,
                    "",
                    "a merge key (<<) needs a mapping or a list of mappings",
                )),
            }
        }
    }
    for (k, v) in merged {
        if !own.iter().any(|(o, _)| o.as_str() == k.as_str()) {
            own.push((k, v));
        }
    }
    own
}

/// Replaces `${NAME}` and `${NAME:-default}`; `$$` is a literal `$`.
fn expand_env(value: &str, env: &dyn Env) -> Result<String, String> {
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
                return Err(format!("unterminated ${{...}} in {value:?}"));
            };
            let inner = &r[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            let valid =
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid {
                return Err(format!("invalid environment variable name {name:?}"));
            }
            match (env.get(name), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(format!(
                        "environment variable {name} is not set (use ${{{name}:-default}} for a default)"
                    ));
                }
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

    #[test]
    fn parse_syntax_error_has_a_position() {
        let e = parse("a: [1, 2\nb: 3\n", &env()).unwrap_err();
        assert!(e[0].message.starts_with("YAML syntax error"), "{}", e[0]);
        assert!(e[0].pos.line >= 1);
    }
}
