//! `show`, `get`, `add`, `set`, `del`, `clear`, `prepare` and `commit` for maps and ACL
//! files: HAProxy's syntax, line formats and error strings. A change applies to the
//! running process at once and whole (a bad entry refuses the command); the files on disk
//! are not written.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;

use rampart_config::rules::{MatchMethod, SampleType};
use rampart_proxy::rules::patref::{PatRef, RefKind, Version};
use rampart_proxy::rules::sample::Value;

use crate::AdminCtx;

fn refs(ctx: &AdminCtx, kind: RefKind) -> Vec<Arc<PatRef>> {
    ctx.control
        .shared()
        .snapshot
        .load()
        .patterns
        .iter()
        .filter(|r| r.kind == kind)
        .cloned()
        .collect()
}

fn unknown(kind: RefKind) -> String {
    match kind {
        RefKind::Map => "Unknown map identifier. Please use #<id> or <file>.\n".into(),
        RefKind::Acl => "Unknown ACL identifier. Please use #<id> or <file>.\n".into(),
    }
}

/// The answer to a change: nothing when done, else why it was refused (and counted).
fn changed(
    ctx: &AdminCtx,
    kind: RefKind,
    r: Result<(), rampart_proxy::rules::patref::Refused>,
) -> String {
    match r {
        Ok(()) => String::new(),
        Err(e) => {
            let n = match kind {
                RefKind::Map => &ctx.refused.map,
                RefKind::Acl => &ctx.refused.acl,
            };
            n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            format!("{}\n", e.0)
        }
    }
}

fn what(kind: RefKind) -> &'static str {
    match kind {
        RefKind::Map => "map",
        RefKind::Acl => "ACL",
    }
}

/// The reference `name` names, or the answer saying it names none.
fn find(ctx: &AdminCtx, kind: RefKind, name: &str) -> Result<Arc<PatRef>, String> {
    refs(ctx, kind)
        .into_iter()
        .find(|r| r.named(name))
        .ok_or_else(|| unknown(kind))
}

/// Splits a leading `@<version>` off `args`.
fn version<'a, 'b>(args: &'a [&'b str]) -> Result<(Version, &'a [&'b str]), String> {
    match args.split_first() {
        Some((v, rest)) if v.starts_with('@') => match v[1..].parse::<u32>() {
            Ok(n) => Ok((Version::At(n), rest)),
            Err(_) => Err("Version number must be a positive integer.\n".into()),
        },
        _ => Ok((Version::Current, args)),
    }
}

fn method_name(m: MatchMethod) -> &'static str {
    match m {
        MatchMethod::Found => "found",
        MatchMethod::Bool => "bool",
        MatchMethod::Int => "int",
        MatchMethod::Ip => "ip",
        MatchMethod::Str => "str",
        MatchMethod::Beg => "beg",
        MatchMethod::End => "end",
        MatchMethod::Sub => "sub",
        MatchMethod::Reg => "reg",
        MatchMethod::Dir => "dir",
        MatchMethod::Dom => "dom",
        MatchMethod::Len => "len",
    }
}

fn type_name(t: SampleType) -> &'static str {
    match t {
        SampleType::Str => "str",
        SampleType::Int => "sint",
        SampleType::Ip => "ip",
        SampleType::Bool => "bool",
    }
}

/// `show map [@<ver>] [<map>]`, `show acl [@<ver>] [<acl>]`.
pub fn show(ctx: &AdminCtx, kind: RefKind, args: &[&str]) -> String {
    let (v, args) = match version(args) {
        Ok(x) => x,
        Err(e) => return e,
    };
    let Some(name) = args.first() else {
        let mut out = String::from("# id (file) description\n");
        for r in refs(ctx, kind) {
            out.push_str(&r.describe());
            out.push('\n');
        }
        return out;
    };
    let r = match find(ctx, kind, name) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let Some(entries) = r.entries_at(v) else {
        return "Version number out of range.\n".into();
    };
    let mut out = String::new();
    for e in &entries {
        let _ = match kind {
            RefKind::Map => writeln!(out, "0x{:012x} {} {}", e.id, e.key, e.value),
            RefKind::Acl => writeln!(out, "0x{:012x} {}", e.id, e.key),
        };
    }
    out
}

/// `get map <map> <value>`, `get acl <acl> <value>`: the entry each way of matching finds.
pub fn get(ctx: &AdminCtx, kind: RefKind, args: &[&str]) -> String {
    let [name, sample, ..] = args else {
        return format!("Missing {} identifier and/or key.\n", what(kind));
    };
    let r = match find(ctx, kind, name) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let v = Value::Str(Cow::Borrowed(sample.as_bytes()));
    let mut out = String::new();
    for key in r.keys() {
        let idx = match key.method {
            MatchMethod::Str | MatchMethod::Ip | MatchMethod::Beg => "tree",
            _ => "list",
        };
        let case = if key.icase {
            "insensitive"
        } else {
            "sensitive"
        };
        let head = format!("type={}, case={case}", method_name(key.method));
        let _ = match (kind, r.get(key, &v)) {
            (RefKind::Map, Some(e)) => writeln!(
                out,
                "{head}, found=yes, idx={idx}, key=\"{}\", value=\"{}\", type=\"{}\"",
                e.key,
                e.value,
                type_name(key.output.unwrap_or(SampleType::Str))
            ),
            (RefKind::Map, None) => writeln!(out, "{head}, found=no"),
            (RefKind::Acl, Some(e)) => {
                writeln!(out, "{head}, match=yes, idx={idx}, pattern=\"{}\"", e.key)
            }
            (RefKind::Acl, None) => writeln!(out, "{head}, match=no"),
        };
    }
    out
}

/// `add map [@<ver>] <map> <key> <value>` (or `<map>` and a payload of `key value` lines),
/// `add acl [@<ver>] <acl> <pattern>` (or a payload of patterns).
pub fn add(ctx: &AdminCtx, kind: RefKind, args: &[&str], payload: Option<&str>) -> String {
    let (v, args) = match version(args) {
        Ok(x) => x,
        Err(e) => return e,
    };
    let usage = || {
        match kind {
        RefKind::Map => "'add map' expects three parameters (map identifier, key and value) or one parameter (map identifier) and a payload\n".to_owned(),
        RefKind::Acl => "'add acl' expects two parameters: ACL identifier and pattern.\n".to_owned(),
    }
    };
    let Some(name) = args.first() else {
        return usage();
    };
    let items: Vec<(&str, &str)> = match (kind, &args[1..], payload) {
        (RefKind::Map, [k, val], None) => vec![(*k, *val)],
        (RefKind::Acl, [p], None) => vec![(*p, "")],
        (_, [], Some(text)) => rampart_config::rules::patfile::entries(text, kind == RefKind::Map)
            .map(|(_, k, v)| (k, v))
            .collect(),
        _ => return usage(),
    };
    let r = match find(ctx, kind, name) {
        Ok(r) => r,
        Err(e) => return e,
    };
    changed(ctx, kind, r.add(v, &items))
}

/// `set map [@<ver>] <map> <key>|#<ref> <value>`.
pub fn set(ctx: &AdminCtx, args: &[&str]) -> String {
    let (v, args) = match version(args) {
        Ok(x) => x,
        Err(e) => return e,
    };
    let [name, key, value] = args else {
        return "'set map' expects three parameters: map identifier, key and value.\n".into();
    };
    let r = match find(ctx, RefKind::Map, name) {
        Ok(r) => r,
        Err(e) => return e,
    };
    changed(ctx, RefKind::Map, r.set(v, key, value))
}

/// `del map [@<ver>] <map> <key>|#<ref>`, `del acl ...`.
pub fn del(ctx: &AdminCtx, kind: RefKind, args: &[&str]) -> String {
    let (v, args) = match version(args) {
        Ok(x) => x,
        Err(e) => return e,
    };
    let [name, key] = args else {
        return format!(
            "This command expects two parameters: {} identifier and key.\n",
            what(kind)
        );
    };
    let r = match find(ctx, kind, name) {
        Ok(r) => r,
        Err(e) => return e,
    };
    changed(ctx, kind, r.del(v, key))
}

/// `clear map [@<ver>] <map>`, `clear acl ...`.
pub fn clear(ctx: &AdminCtx, kind: RefKind, args: &[&str]) -> String {
    let (v, args) = match version(args) {
        Ok(x) => x,
        Err(e) => return e,
    };
    let Some(name) = args.first() else {
        return format!("Missing {} identifier.\n", what(kind));
    };
    let r = match find(ctx, kind, name) {
        Ok(r) => r,
        Err(e) => return e,
    };
    changed(ctx, kind, r.clear(v))
}

/// `prepare map <map>`, `prepare acl <acl>`: a new empty version to fill and commit.
pub fn prepare(ctx: &AdminCtx, kind: RefKind, args: &[&str]) -> String {
    let Some(name) = args.first() else {
        return format!("Missing {} identifier.\n", what(kind));
    };
    match find(ctx, kind, name) {
        Ok(r) => format!("New version created: {}\n", r.prepare()),
        Err(e) => e,
    }
}

/// `commit map @<ver> <map>`, `commit acl @<ver> <acl>`.
pub fn commit(ctx: &AdminCtx, kind: RefKind, args: &[&str]) -> String {
    let (v, args) = match version(args) {
        Ok(x) => x,
        Err(e) => return e,
    };
    let (Version::At(n), [name]) = (v, args) else {
        return format!(
            "'commit {}' expects a version number and a {} identifier.\n",
            kind.as_str(),
            what(kind)
        );
    };
    let r = match find(ctx, kind, name) {
        Ok(r) => r,
        Err(e) => return e,
    };
    changed(ctx, kind, r.commit(n))
}
