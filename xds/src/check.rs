//! Which fields of Envoy's messages rampart honours.
//!
//! Every field a resource (or the bootstrap file) sets is looked up here: fields rampart
//! reads are translated (and their values checked by the translator), fields listed as
//! ignored have no effect on what rampart does, and any other field is an error naming
//! its path, so that a configuration never silently means something else here than in
//! Envoy. docs/xds.md documents each entry; a test checks that it does.

use prost_reflect::{DynamicMessage, ReflectMessage, Value};

use crate::fields::VALUES;
pub use crate::fields::{FIELDS, Fields};

fn fields_of(message: &str) -> Option<&'static Fields> {
    FIELDS.iter().find(|f| f.message == message)
}

/// Why a field of a resource cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported {
    /// The field's path from the resource, like `filter_chains[0].filters[0].typed_config.tracing`.
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every field of `msg` (and of the messages it holds) that rampart neither reads nor
/// may ignore.
pub fn unsupported(msg: &DynamicMessage) -> Vec<Unsupported> {
    let mut out = Vec::new();
    walk(msg, "", &mut out);
    out
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

fn walk(msg: &DynamicMessage, path: &str, out: &mut Vec<Unsupported>) {
    let desc = msg.descriptor();
    let name = desc.full_name();
    if VALUES.contains(&name) {
        return;
    }
    if name == "google.protobuf.Any" {
        any(msg, path, out);
        return;
    }
    for u in msg.unknown_fields() {
        out.push(Unsupported {
            path: join(path, &format!("#{}", u.number())),
            message: format!(
                "field number {} is unknown to rampart's copy of {name}",
                u.number()
            ),
        });
    }
    let table = fields_of(name);
    for (field, value) in msg.fields() {
        let fname = field.name();
        let fpath = join(path, fname);
        match table {
            Some(t) if t.ignored.contains(&fname) => continue,
            Some(t) if t.read.contains(&fname) => {}
            _ => {
                out.push(Unsupported {
                    path: fpath,
                    message: format!("{} is not supported by rampart", short(name, fname)),
                });
                continue;
            }
        }
        match value {
            Value::Message(m) => walk(m, &fpath, out),
            Value::List(items) => {
                for (i, v) in items.iter().enumerate() {
                    if let Value::Message(m) = v {
                        walk(m, &format!("{fpath}[{i}]"), out);
                    }
                }
            }
            Value::Map(entries) => {
                for (k, v) in entries {
                    if let Value::Message(m) = v {
                        let key = match k {
                            prost_reflect::MapKey::String(s) => s.clone(),
                            other => format!("{other:?}"),
                        };
                        walk(m, &format!("{fpath}[{key}]"), out);
                    }
                }
            }
            _ => {}
        }
    }
}

/// An `Any`: its content is checked when it is a message rampart knows; the translator
/// decides about the others (an unknown required extension is an error there).
fn any(msg: &DynamicMessage, path: &str, out: &mut Vec<Unsupported>) {
    let url = msg
        .get_field_by_name("type_url")
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let bytes = msg
        .get_field_by_name("value")
        .and_then(|v| v.as_bytes().cloned())
        .unwrap_or_default();
    let Some(full) = url.strip_prefix(crate::proto::TYPE_PREFIX) else {
        return;
    };
    if fields_of(full).is_none() {
        return;
    }
    match crate::proto::dynamic(full, &bytes) {
        Ok(inner) => walk(&inner, path, out),
        Err(e) => out.push(Unsupported {
            path: path.to_owned(),
            message: e,
        }),
    }
}

/// `Listener.freebind`: the message's name without its package, and the field.
fn short(message: &str, field: &str) -> String {
    format!("{}.{field}", doc_name(message))
}

/// A message's name as docs/xds.md writes it: without its package (`Cluster`,
/// `Cluster.EdsClusterConfig`), with one where two would read the same.
pub fn doc_name(message: &str) -> String {
    match message {
        "envoy.config.core.v3.HttpProtocolOptions" => return "core.HttpProtocolOptions".into(),
        "envoy.config.core.v3.RetryPolicy" => return "core.RetryPolicy".into(),
        _ => {}
    }
    let start = message
        .split('.')
        .position(|s| s.starts_with(|c: char| c.is_ascii_uppercase()))
        .unwrap_or(0);
    message.split('.').skip(start).collect::<Vec<_>>().join(".")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto;

    #[test]
    fn table_names_real_messages_and_fields() {
        for t in FIELDS {
            let d = proto::descriptor(t.message)
                .unwrap_or_else(|| panic!("{} is not an Envoy message", t.message));
            for f in t.read.iter().chain(t.ignored) {
                assert!(
                    d.get_field_by_name(f).is_some(),
                    "{} has no field {f}",
                    t.message
                );
            }
        }
        for v in VALUES {
            assert!(proto::descriptor(v).is_some(), "{v}");
        }
    }

    #[test]
    fn every_field_is_documented() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/xds.md"))
            .unwrap();
        let mut missing = Vec::new();
        for t in FIELDS {
            for f in t.read.iter().chain(t.ignored) {
                let key = format!("| `{}.{f}` |", doc_name(t.message));
                if !doc.contains(&key) {
                    missing.push(key);
                }
            }
        }
        assert!(
            missing.is_empty(),
            "fields missing from docs/xds.md:\n{}",
            missing.join("\n")
        );
    }

    #[test]
    fn unsupported_names_the_path_of_each_unknown_field() {
        use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener};
        let l = Listener {
            name: "l".into(),
            stat_prefix: "ignored".into(),
            transparent: Some(envoy_types::pb::google::protobuf::BoolValue { value: true }),
            filter_chains: vec![FilterChain {
                filter_chain_match: Some(Default::default()),
                filters: vec![Filter {
                    name: "x".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let d = proto::dynamic(
            "envoy.config.listener.v3.Listener",
            &prost::Message::encode_to_vec(&l),
        )
        .unwrap();
        let found: Vec<String> = unsupported(&d).iter().map(ToString::to_string).collect();
        assert_eq!(
            found,
            [
                "filter_chains[0].filter_chain_match: FilterChain.filter_chain_match is not supported by rampart",
                "transparent: Listener.transparent is not supported by rampart",
            ]
        );
    }
}
