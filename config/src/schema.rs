//! The configuration's JSON Schema (`rampart schema`), for editors: generated from the
//! same key table `rampart check` decodes with and the docs coverage test reads, with each
//! key's text from docs/configuration.md. Every mapping of fixed keys refuses other keys,
//! so a misspelt key is flagged as it is typed; booleans, integers and closed sets of
//! words are typed; the rest (durations, sizes, addresses, rules) is checked by
//! `rampart check`, whose shorthand forms (a scalar or a mapping, one item or a list) the
//! schema lets through.

use crate::Config;
use crate::decode::{Decode, Schema};

/// The reference tables of docs/configuration.md.
const DOC: &str = include_str!("../../docs/configuration.md");

/// What the docs say of a key: its type column, default column and description.
struct Row<'a> {
    kind: &'a str,
    default: &'a str,
    text: &'a str,
}

fn rows() -> Vec<(&'static str, Row<'static>)> {
    DOC.lines()
        .filter(|l| l.starts_with("| `"))
        .filter_map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").map(str::trim).collect();
            let [key, kind, default, text, ..] = cells.as_slice() else {
                return None;
            };
            let key = key.strip_prefix('`')?.split('`').next()?;
            Some((
                key,
                Row {
                    kind,
                    default,
                    text,
                },
            ))
        })
        .collect()
}

/// The words of a closed set like `` `none`, `optional` or `required` ``, when the type
/// column is just that.
fn enumeration(kind: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut rest = String::new();
    for (i, part) in kind.split('`').enumerate() {
        if i % 2 == 1 {
            words.push(part.trim_matches('"').to_owned());
        } else {
            rest.push_str(part);
        }
    }
    let leftover = rest.replace(" or ", " ").replace(',', " ");
    let simple = |w: &String| {
        !w.is_empty()
            && w.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    };
    (words.len() >= 2 && leftover.trim().is_empty() && words.iter().all(simple)).then_some(words)
}

fn json_str(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Markdown to the plain text an editor's hover shows: no backquotes or bold marks, links
/// reduced to their text.
fn plain(md: &str) -> String {
    let mut s = md.replace("**", "").replace('`', "").replace("\\|", "|");
    while let Some(open) = s.find("](") {
        let Some(close) = s[open..].find(')') else {
            break;
        };
        s.replace_range(open..open + close + 1, "");
        if let Some(b) = s[..open].rfind('[') {
            s.remove(b);
        }
    }
    s
}

struct Gen {
    rows: Vec<(&'static str, Row<'static>)>,
}

impl Gen {
    fn node(&self, schema: &Schema, path: &str, out: &mut String) {
        out.push('{');
        let mut first = true;
        let mut field = |out: &mut String, name: &str| {
            if !first {
                out.push(',');
            }
            first = false;
            json_str(name, out);
            out.push(':');
        };
        if let Some((_, row)) = self.rows.iter().find(|(k, _)| *k == path) {
            let mut text = plain(row.text);
            if !row.default.is_empty() && row.default != "none" {
                text = format!("{text} Default: {}.", plain(row.default));
            }
            field(out, "description");
            json_str(&text, out);
            field(out, "markdownDescription");
            json_str(row.text, out);
            if matches!(schema, Schema::Leaf) {
                match row.kind {
                    "boolean" => {
                        field(out, "type");
                        out.push_str("\"boolean\"");
                    }
                    "integer" => {
                        field(out, "type");
                        out.push_str("\"integer\"");
                    }
                    k => {
                        if let Some(words) = enumeration(k) {
                            field(out, "enum");
                            out.push('[');
                            for (i, w) in words.iter().enumerate() {
                                if i > 0 {
                                    out.push(',');
                                }
                                json_str(w, out);
                            }
                            out.push(']');
                        }
                    }
                }
            }
        }
        match schema {
            Schema::Leaf => {}
            Schema::Struct(keys) => {
                field(out, "properties");
                out.push('{');
                for (i, (k, sub)) in keys.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    json_str(k, out);
                    out.push(':');
                    let p = if path.is_empty() {
                        (*k).to_owned()
                    } else {
                        format!("{path}.{k}")
                    };
                    self.node(&sub(), &p, out);
                }
                out.push('}');
                field(out, "additionalProperties");
                out.push_str("false");
            }
            Schema::Map(sub) => {
                field(out, "additionalProperties");
                self.node(&sub(), &format!("{path}.<name>"), out);
            }
            Schema::Seq(sub) => {
                field(out, "items");
                self.node(&sub(), &format!("{path}[]"), out);
            }
        }
        out.push('}');
    }
}

/// The JSON Schema (draft 2020-12) of a configuration file.
pub fn json_schema() -> String {
    let g = Gen { rows: rows() };
    let mut body = String::new();
    g.node(&Config::schema(), "", &mut body);
    // The root's own fields follow the header.
    let inner = body.strip_prefix('{').unwrap_or(&body);
    format!(
        "{{\"$schema\":\"https://json-schema.org/draft/2020-12/schema\",\"title\":\"rampart configuration\",\"type\":\"object\",{inner}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enumerations_and_plain_text() {
        assert_eq!(
            enumeration("`none`, `optional` or `required`").unwrap(),
            ["none", "optional", "required"]
        );
        assert_eq!(
            enumeration("`\"1.2\"` or `\"1.3\"`").unwrap(),
            ["1.2", "1.3"]
        );
        assert!(enumeration("duration").is_none());
        assert!(enumeration("list of `x`").is_none());
        assert!(enumeration("`http://host:port` or `https://host:port`").is_none());
        assert_eq!(
            plain("See **[Maps](#maps)** and `use_backend`."),
            "See Maps and use_backend."
        );
    }

    #[test]
    fn the_schema_names_every_key_and_closes_mappings() {
        let s = json_schema();
        assert!(s.starts_with("{\"$schema\":"));
        for k in [
            "\"frontends\":",
            "\"bind\":",
            "\"verify\":",
            "\"additionalProperties\":false",
        ] {
            assert!(s.contains(k), "{k}");
        }
        // Braces balance outside strings.
        let (mut depth, mut in_str, mut esc) = (0i64, false, false);
        for c in s.chars() {
            match (in_str, esc, c) {
                (true, true, _) => esc = false,
                (true, false, '\\') => esc = true,
                (true, false, '"') => in_str = false,
                (false, _, '"') => in_str = true,
                (false, _, '{') => depth += 1,
                (false, _, '}') => depth -= 1,
                _ => {}
            }
            assert!(depth >= 0);
        }
        assert_eq!(depth, 0);
    }
}
