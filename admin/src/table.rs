//! `show table`, `clear table` and `set table`: HAProxy's syntax, line formats and
//! error strings.

use std::fmt::Write as _;

use rampart_config::stick::DataKind;
use rampart_proxy::stick::{Dumped, Key, Table};

use crate::AdminCtx;

const FILTER_USAGE: &str =
    "Optional argument only supports \"data.<store_data_type>\" <operator> <value> and key <key>\n";
const SET_USAGE: &str = "Required arguments: <table> key <key> [data.<store_data_type> <value>]*\n";

fn tables(ctx: &AdminCtx) -> Vec<std::sync::Arc<Table>> {
    ctx.control.shared().snapshot.load().tables.clone()
}

/// The header line of a table.
fn header(t: &Table) -> String {
    format!(
        "# table: {}, type: {}, size:{}, used:{}\n",
        t.name,
        t.key_type.name(),
        t.size(),
        t.used()
    )
}

/// A stable identifier for an entry, in the place of HAProxy's pointer.
fn entry_id(t: &Table, k: &Key) -> u64 {
    use rampart_proxy::balance::hash::{hash64, hash64_seeded};
    hash64_seeded(k.as_bytes(), hash64(t.name.as_bytes())) & 0x7fff_ffff_ffff
}

fn entry_line(t: &Table, d: &Dumped, out: &mut String) {
    let _ = write!(
        out,
        "0x{:012x}: key={} use={} exp={} shard=0",
        entry_id(t, &d.key),
        t.key_text(&d.key),
        d.refs,
        d.expire_in.unwrap_or(0)
    );
    for (k, v) in &d.values {
        match t.layout.period(*k).filter(|_| k.is_rate()) {
            Some(p) => {
                let _ = write!(out, " {}({p})={v}", k.name());
            }
            None => {
                let _ = write!(out, " {}={v}", k.name());
            }
        }
    }
    out.push('\n');
}

#[derive(Clone, Copy)]
enum Op {
    Eq,
    Ne,
    Le,
    Ge,
    Lt,
    Gt,
}

impl Op {
    fn test(self, a: u64, b: i64) -> bool {
        let a = i128::from(a);
        let b = i128::from(b);
        match self {
            Op::Eq => a == b,
            Op::Ne => a != b,
            Op::Le => a <= b,
            Op::Ge => a >= b,
            Op::Lt => a < b,
            Op::Gt => a > b,
        }
    }
}

/// Parsed filters: data conditions (all must hold) or one key.
struct Filter {
    data: Vec<(DataKind, Op, i64)>,
    key: Option<Key>,
}

impl Filter {
    fn keep(&self, d: &Dumped) -> bool {
        if let Some(k) = &self.key
            && *k != d.key
        {
            return false;
        }
        self.data.iter().all(|(kind, op, v)| {
            d.values
                .iter()
                .find(|(k, _)| k == kind)
                .is_some_and(|(_, x)| op.test(*x, *v))
        })
    }
}

fn parse_filter(t: &Table, args: &[&str]) -> Result<Filter, String> {
    let mut f = Filter {
        data: Vec::new(),
        key: None,
    };
    let mut i = 0;
    while i < args.len() {
        let a = args[i];
        if a == "key" {
            let Some(k) = args.get(i + 1) else {
                return Err("Key value expected\n".into());
            };
            f.key = Some(t.parse_key(k).ok_or("Invalid key\n")?);
            i += 2;
            continue;
        }
        let Some(name) = a.strip_prefix("data.") else {
            return Err(FILTER_USAGE.into());
        };
        if f.data.len() == 4 {
            return Err(FILTER_USAGE.into());
        }
        let kind = DataKind::from_name(name).ok_or("Unknown data type\n")?;
        if !t.layout.stores(kind) {
            return Err("Data type not stored in this table\n".into());
        }
        let op = match args.get(i + 1).copied() {
            Some("eq") => Op::Eq,
            Some("ne") => Op::Ne,
            Some("le") => Op::Le,
            Some("ge") => Op::Ge,
            Some("lt") => Op::Lt,
            Some("gt") => Op::Gt,
            _ => {
                return Err(
                    "Require and operator among \"eq\", \"ne\", \"le\", \"ge\", \"lt\", \"gt\"\n"
                        .into(),
                );
            }
        };
        let v: i64 = args
            .get(i + 2)
            .and_then(|v| v.parse().ok())
            .ok_or("Require a valid integer value to compare against\n")?;
        f.data.push((kind, op, v));
        i += 3;
    }
    Ok(f)
}

/// `show table [<name> [filters]]`.
pub fn show(ctx: &AdminCtx, args: &[&str]) -> String {
    let all = tables(ctx);
    let Some(name) = args.first() else {
        return all.iter().map(|t| header(t)).collect();
    };
    let Some(t) = all.iter().find(|t| &*t.name == *name) else {
        return "No such table\n".into();
    };
    let f = match parse_filter(t, &args[1..]) {
        Ok(f) => f,
        Err(e) => return e,
    };
    let mut out = header(t);
    let mut entries = t.dump(|d| f.keep(d));
    entries.sort_by(|a, b| a.key.as_bytes().cmp(b.key.as_bytes()));
    for d in &entries {
        entry_line(t, d, &mut out);
    }
    out
}

/// `clear table <name> [filters]`: no filter clears every entry not in use.
pub fn clear(ctx: &AdminCtx, args: &[&str]) -> String {
    let all = tables(ctx);
    let Some(name) = args.first() else {
        return FILTER_USAGE.into();
    };
    let Some(t) = all.iter().find(|t| &*t.name == *name) else {
        return "No such table\n".into();
    };
    let f = match parse_filter(t, &args[1..]) {
        Ok(f) => f,
        Err(e) => return e,
    };
    let (_, busy) = t.clear(|d| f.keep(d));
    if busy > 0 && f.key.is_some() {
        return "Entry currently in use, cannot remove\n".into();
    }
    String::new()
}

/// `set table <name> key <key> [data.<type> <value>]*`.
pub fn set(ctx: &AdminCtx, args: &[&str]) -> String {
    let all = tables(ctx);
    let Some(name) = args.first() else {
        return SET_USAGE.into();
    };
    let Some(t) = all.iter().find(|t| &*t.name == *name) else {
        return "No such table\n".into();
    };
    let key = match (args.get(1), args.get(2)) {
        (Some(&"key"), Some(k)) => match t.parse_key(k) {
            Some(k) => k,
            None => return "Invalid key\n".into(),
        },
        (Some(&"key"), None) => return "Key value expected\n".into(),
        _ => return SET_USAGE.into(),
    };
    // Check every pair before changing anything.
    let mut values = Vec::new();
    let rest = args.get(3..).unwrap_or_default();
    let mut i = 0;
    while i < rest.len() {
        let Some(name) = rest[i].strip_prefix("data.") else {
            return "\"data.<type>\" followed by a value expected\n".into();
        };
        let Some(kind) = DataKind::from_name(name) else {
            return "Unknown data type\n".into();
        };
        if !t.layout.stores(kind) {
            return "Data type not stored in this table\n".into();
        }
        let Some(v) = rest.get(i + 1).and_then(|v| v.parse::<i64>().ok()) else {
            return "Require a valid integer value to store\n".into();
        };
        values.push((kind, v.max(0) as u64));
        i += 2;
    }
    let ok = t.with(&key, true, 0, |e| {
        for (k, v) in &values {
            e.set(*k, *v);
        }
    });
    match ok {
        Some(()) => String::new(),
        None => "Unable to allocate a new entry\n".into(),
    }
}
