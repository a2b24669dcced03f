//! Reads a YAML (or JSON) tree as serde data, so that Envoy's JSON mapping of protobuf
//! (through `prost-reflect`) can decode a bootstrap file written in either form, with
//! errors that name the key path and the line.
//!
//! Plain scalars are typed as YAML 1.2's core schema types them (`true`, `null`, `12`,
//! `1.5`); quoted scalars are strings.

use std::fmt;

use rampart_config::Pos;
use rampart_config::yaml::{Node, NodeKind};
use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};

/// A decoding error with where it happened.
#[derive(Debug)]
pub struct Error {
    pub message: String,
    /// Keys and list indices from the root.
    pub path: Vec<String>,
    pub pos: Option<Pos>,
}

impl Error {
    /// The path as `a.b[2].c`.
    pub fn path_text(&self) -> String {
        let mut s = String::new();
        for p in &self.path {
            if p.starts_with('[') || s.is_empty() {
                s.push_str(p);
            } else {
                s.push('.');
                s.push_str(p);
            }
        }
        s
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = self.pos {
            write!(f, "{}:{}: ", p.line, p.col)?;
        }
        let path = self.path_text();
        if !path.is_empty() {
            write!(f, "{path}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error {
            message: msg.to_string(),
            path: Vec::new(),
            pos: None,
        }
    }
}

/// A deserializer over one node.
pub struct NodeDe<'a>(pub &'a Node);

/// What a plain scalar is.
enum Plain<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    Str(&'a str),
}

fn plain(s: &str) -> Plain<'_> {
    match s {
        "null" | "Null" | "NULL" | "~" | "" => return Plain::Null,
        "true" | "True" | "TRUE" => return Plain::Bool(true),
        "false" | "False" | "FALSE" => return Plain::Bool(false),
        _ => {}
    }
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(i) = s.parse::<i64>() {
            return Plain::Int(i);
        }
        if let Ok(u) = s.parse::<u64>() {
            return Plain::Uint(u);
        }
    }
    if digits.bytes().any(|b| b.is_ascii_digit())
        && digits
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'))
        && let Ok(f) = s.parse::<f64>()
    {
        return Plain::Float(f);
    }
    Plain::Str(s)
}

impl<'de, 'a> de::Deserializer<'de> for NodeDe<'a> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        match &self.0.kind {
            NodeKind::Null => v.visit_unit(),
            NodeKind::Scalar {
                value,
                quoted: true,
            } => v.visit_str(value),
            NodeKind::Scalar {
                value,
                quoted: false,
            } => match plain(value) {
                Plain::Null => v.visit_unit(),
                Plain::Bool(b) => v.visit_bool(b),
                Plain::Int(i) => v.visit_i64(i),
                Plain::Uint(u) => v.visit_u64(u),
                Plain::Float(f) => v.visit_f64(f),
                Plain::Str(s) => v.visit_str(s),
            },
            NodeKind::Seq(items) => v.visit_seq(Seq {
                items: items.iter(),
                index: 0,
            }),
            NodeKind::Map(entries) => v.visit_map(Map {
                entries: entries.iter(),
                value: None,
            }),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        match &self.0.kind {
            NodeKind::Null => v.visit_none(),
            NodeKind::Scalar {
                value,
                quoted: false,
            } if matches!(plain(value), Plain::Null) => v.visit_none(),
            _ => v.visit_some(self),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        match &self.0.kind {
            NodeKind::Scalar { value, .. } => v.visit_str(value),
            _ => self.deserialize_any(v),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        self.deserialize_str(v)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        self.deserialize_str(v)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char
        bytes byte_buf unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum ignored_any
    }
}

impl<'de> IntoDeserializer<'de, Error> for NodeDe<'_> {
    type Deserializer = Self;
    fn into_deserializer(self) -> Self {
        self
    }
}

/// Adds the step `step` and, if none is known yet, the position of `node` to an error
/// coming out of it.
fn located(mut e: Error, step: String, node: &Node) -> Error {
    e.path.insert(0, step);
    if e.pos.is_none() {
        e.pos = Some(node.pos);
    }
    e
}

struct Seq<'a> {
    items: std::slice::Iter<'a, Node>,
    index: usize,
}

impl<'de> SeqAccess<'de> for Seq<'_> {
    type Error = Error;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        let Some(item) = self.items.next() else {
            return Ok(None);
        };
        let i = self.index;
        self.index += 1;
        seed.deserialize(NodeDe(item))
            .map(Some)
            .map_err(|e| located(e, format!("[{i}]"), item))
    }
}

struct Map<'a> {
    entries: std::slice::Iter<'a, (Node, Node)>,
    value: Option<&'a (Node, Node)>,
}

impl<'de> MapAccess<'de> for Map<'_> {
    type Error = Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some(entry) = self.entries.next() else {
            return Ok(None);
        };
        self.value = Some(entry);
        seed.deserialize(NodeDe(&entry.0))
            .map(Some)
            .map_err(|mut e| {
                e.pos.get_or_insert(entry.0.pos);
                e
            })
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let Some(entry) = self.value.take() else {
            return Err(de::Error::custom("a value without a key"));
        };
        let key = entry.0.as_str().unwrap_or("").to_owned();
        seed.deserialize(NodeDe(&entry.1))
            .map_err(|e| located(e, key, &entry.1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    fn node(text: &str) -> Node {
        rampart_config::yaml::parse(text, &rampart_config::yaml::Verbatim).unwrap()
    }

    #[test]
    fn plain_scalars_are_typed_and_quoted_ones_are_strings() {
        let n = node("a: 12\nb: \"12\"\nc: true\nd: 1.5\ne: ~\nf: x\n");
        let v: std::collections::BTreeMap<String, serde_value_like::V> =
            Deserialize::deserialize(NodeDe(&n)).unwrap();
        assert_eq!(v["a"], serde_value_like::V::I(12));
        assert_eq!(v["b"], serde_value_like::V::S("12".into()));
        assert_eq!(v["c"], serde_value_like::V::B(true));
        assert_eq!(v["d"], serde_value_like::V::F(1.5));
        assert_eq!(v["e"], serde_value_like::V::Unit);
        assert_eq!(v["f"], serde_value_like::V::S("x".into()));
    }

    #[test]
    fn errors_carry_the_path_and_line() {
        let n = node("a:\n  b: [1, {c: x}]\n");
        let e = <std::collections::BTreeMap<String, std::collections::BTreeMap<String, Vec<u32>>>>::deserialize(NodeDe(&n))
            .unwrap_err();
        assert_eq!(e.path_text(), "a.b[1]");
        assert_eq!(e.pos.map(|p| p.line), Some(2));
    }

    /// A minimal self-describing value, to see what the deserializer produced.
    mod serde_value_like {
        use serde::de::{Deserialize, Deserializer, Visitor};
        #[derive(Debug, PartialEq)]
        pub enum V {
            I(i64),
            F(f64),
            B(bool),
            S(String),
            Unit,
        }
        impl<'de> Deserialize<'de> for V {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct Vis;
                impl<'de> Visitor<'de> for Vis {
                    type Value = V;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str("a scalar")
                    }
                    fn visit_i64<E>(self, v: i64) -> Result<V, E> {
                        Ok(V::I(v))
                    }
                    fn visit_u64<E>(self, v: u64) -> Result<V, E> {
                        Ok(V::I(v as i64))
                    }
                    fn visit_f64<E>(self, v: f64) -> Result<V, E> {
                        Ok(V::F(v))
                    }
                    fn visit_bool<E>(self, v: bool) -> Result<V, E> {
                        Ok(V::B(v))
                    }
                    fn visit_str<E>(self, v: &str) -> Result<V, E> {
                        Ok(V::S(v.to_owned()))
                    }
                    fn visit_unit<E>(self) -> Result<V, E> {
                        Ok(V::Unit)
                    }
                }
                d.deserialize_any(Vis)
            }
        }
    }
}
