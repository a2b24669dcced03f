//! Stick tables, persistence and peers: the `stick_tables` and `peers` sections, a
//! backend's `stick` rules and `cookie`.

use std::fmt;
use std::time::Duration;

use crate::config_struct;
use crate::decode::{Cx, Decode, NamedMap, Size, Spanned, parse_duration};
use crate::error::Pos;
use crate::rules::acl::Condition;
use crate::rules::fetch::parse_sample;
use crate::rules::{RuleError, SampleExpr};
use crate::yaml::Node;

/// What a table is keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// IPv4 address (IPv6 keys that are not IPv4-mapped are not stored).
    Ip,
    /// IPv6 address; IPv4 keys are stored mapped.
    Ipv6,
    /// A 32-bit integer.
    Integer,
    /// A string, truncated to `len`.
    String,
    /// Bytes, truncated or zero-padded to `len`.
    Binary,
}

impl KeyType {
    pub fn name(self) -> &'static str {
        match self {
            KeyType::Ip => "ip",
            KeyType::Ipv6 => "ipv6",
            KeyType::Integer => "integer",
            KeyType::String => "string",
            KeyType::Binary => "binary",
        }
    }
}

impl Decode for KeyType {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        cx.parse_scalar(node, "a key type", |s| {
            Ok(match s {
                "ip" => KeyType::Ip,
                "ipv6" => KeyType::Ipv6,
                "integer" => KeyType::Integer,
                "string" => KeyType::String,
                "binary" => KeyType::Binary,
                other => {
                    return Err(format!(
                        "unknown table type {other:?} (known: ip, ipv6, integer, string, binary)"
                    ));
                }
            })
        })
    }
}

/// A counter or value a table can store, HAProxy's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataKind {
    ServerId,
    Gpt0,
    Gpc0,
    Gpc0Rate,
    ConnCnt,
    ConnCur,
    ConnRate,
    HttpReqCnt,
    HttpReqRate,
    HttpErrCnt,
    HttpErrRate,
    BytesInCnt,
    BytesInRate,
    BytesOutCnt,
    BytesOutRate,
}

impl DataKind {
    pub const ALL: [DataKind; 15] = [
        DataKind::ServerId,
        DataKind::Gpt0,
        DataKind::Gpc0,
        DataKind::Gpc0Rate,
        DataKind::ConnCnt,
        DataKind::ConnCur,
        DataKind::ConnRate,
        DataKind::HttpReqCnt,
        DataKind::HttpReqRate,
        DataKind::HttpErrCnt,
        DataKind::HttpErrRate,
        DataKind::BytesInCnt,
        DataKind::BytesInRate,
        DataKind::BytesOutCnt,
        DataKind::BytesOutRate,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DataKind::ServerId => "server_id",
            DataKind::Gpt0 => "gpt0",
            DataKind::Gpc0 => "gpc0",
            DataKind::Gpc0Rate => "gpc0_rate",
            DataKind::ConnCnt => "conn_cnt",
            DataKind::ConnCur => "conn_cur",
            DataKind::ConnRate => "conn_rate",
            DataKind::HttpReqCnt => "http_req_cnt",
            DataKind::HttpReqRate => "http_req_rate",
            DataKind::HttpErrCnt => "http_err_cnt",
            DataKind::HttpErrRate => "http_err_rate",
            DataKind::BytesInCnt => "bytes_in_cnt",
            DataKind::BytesInRate => "bytes_in_rate",
            DataKind::BytesOutCnt => "bytes_out_cnt",
            DataKind::BytesOutRate => "bytes_out_rate",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == s)
    }

    /// Whether the value is a rate over a period.
    pub fn is_rate(self) -> bool {
        matches!(
            self,
            DataKind::Gpc0Rate
                | DataKind::ConnRate
                | DataKind::HttpReqRate
                | DataKind::HttpErrRate
                | DataKind::BytesInRate
                | DataKind::BytesOutRate
        )
    }

    /// A stable number for the peers protocol.
    pub fn wire_id(self) -> u8 {
        Self::ALL.iter().position(|k| *k == self).unwrap_or(0) as u8
    }

    pub fn from_wire_id(id: u8) -> Option<Self> {
        Self::ALL.get(usize::from(id)).copied()
    }
}

impl fmt::Display for DataKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A `store` item: a data type, with its period for rates (`http_req_rate(10s)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreItem {
    pub kind: DataKind,
    pub period: Option<Duration>,
}

/// Parses `http_req_rate(10s)` or `gpc0`.
pub fn parse_store_item(s: &str) -> Result<StoreItem, String> {
    let s = s.trim();
    let (name, arg) = match s.split_once('(') {
        Some((n, rest)) => {
            let a = rest
                .strip_suffix(')')
                .ok_or_else(|| format!("missing ')' in {s:?}"))?;
            (n, Some(a))
        }
        None => (s, None),
    };
    let Some(kind) = DataKind::from_name(name) else {
        let hint = crate::error::nearest(name, DataKind::ALL.iter().map(|k| k.name()))
            .map(|n| format!(" (did you mean {n:?}?)"))
            .unwrap_or_default();
        return Err(format!("unknown data type {name:?}{hint}"));
    };
    let period = match (kind.is_rate(), arg) {
        (true, Some(a)) => {
            let p = parse_duration(a)?;
            if p.is_zero() || p > Duration::from_secs(24 * 3600) {
                return Err(format!("{name}: the period must be between 1ms and 24h"));
            }
            Some(p)
        }
        (true, None) => return Err(format!("{name} needs a period, like {name}(10s)")),
        (false, Some(_)) => return Err(format!("{name} takes no period")),
        (false, None) => None,
    };
    Ok(StoreItem { kind, period })
}

impl Decode for StoreItem {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        cx.parse_scalar(node, "a data type", parse_store_item)
    }
}

config_struct! {
    /// A stick table: entries keyed by an address, number or string, each holding the
    /// counters and values named in `store`.
    pub struct StickTable {
        pub key_type as "type": Spanned<KeyType>,
        /// Key length in bytes for `string` (default 32) and `binary` (default 32).
        pub len: Option<Spanned<u32>>,
        /// Entries at most; when full, the least recently used entry is replaced.
        pub size: Spanned<Size>,
        /// Entries unused for this long are removed; without it they stay until replaced.
        pub expire: Option<Duration>,
        pub store: Vec<Spanned<StoreItem>>,
        /// Replicate entries to the nodes in `peers`.
        pub peers: bool = false,
    }
}

impl StickTable {
    /// The key length in bytes.
    pub fn key_len(&self) -> usize {
        match self.key_type.value {
            KeyType::Ip | KeyType::Integer => 4,
            KeyType::Ipv6 => 16,
            KeyType::String | KeyType::Binary => self.len.as_ref().map_or(32, |l| l.value as usize),
        }
    }
}

config_struct! {
    /// Nodes that replicate stick tables to each other.
    pub struct Peers {
        /// This node's name among `nodes`; its address is where it listens.
        pub local: Spanned<String>,
        /// Every node (this one included): name to `address:port`.
        pub nodes: NamedMap<Spanned<String>>,
        /// Shared secret that authenticates the nodes to each other.
        pub secret: Spanned<String>,
        /// Longest wait between two connection attempts to a node.
        pub reconnect_max: Duration = Duration::from_secs(5),
    }
}

/// What a `stick` rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StickKind {
    /// Match, and store the server chosen.
    On,
    /// Match only.
    Match,
    /// Store only.
    StoreRequest,
}

/// A backend's `stick` rule: `on src table sessions if COND`.
#[derive(Debug, Clone, PartialEq)]
pub struct StickRule {
    pub kind: StickKind,
    pub expr: SampleExpr,
    pub table: Option<Spanned<String>>,
    pub cond: Option<Condition>,
    pub pos: Pos,
}

/// A stick rule as parsed from its text, before positions are resolved.
#[derive(Debug)]
pub struct ParsedStick {
    pub kind: StickKind,
    pub expr: SampleExpr,
    /// The table's name and its offset in the text.
    pub table: Option<(String, usize)>,
    pub cond: Option<Condition>,
}

/// Parses `on|match|store-request <fetch> [table <name>] [if|unless <cond>]`.
pub fn parse_stick_rule(
    text: &str,
    files: &dyn crate::rules::acl::PatternFiles,
) -> Result<ParsedStick, RuleError> {
    let mut toks = crate::rules::lexer::Tokens::new(text)?;
    let end = toks.end();
    let kind_tok = toks.expect("on, match or store-request")?;
    let kind = match kind_tok.text.as_str() {
        "on" => StickKind::On,
        "match" => StickKind::Match,
        "store-request" => StickKind::StoreRequest,
        other => {
            return Err(RuleError::new(
                kind_tok.offset,
                format!("unknown stick rule {other:?} (known: on, match, store-request)"),
            ));
        }
    };
    let words = toks.until_condition();
    let Some(fetch) = words.first() else {
        return Err(RuleError::new(end, "missing a sample fetch"));
    };
    let (expr, _) =
        parse_sample(&fetch.text, files).map_err(|m| RuleError::new(fetch.offset, m))?;
    let mut table = None;
    match &words[1..] {
        [] => {}
        [t, name] if t.text == "table" => table = Some((name.text.clone(), name.offset)),
        [t] if t.text == "table" => return Err(RuleError::new(end, "missing a table name")),
        [other, ..] => {
            return Err(RuleError::new(
                other.offset,
                format!(
                    "unexpected {:?} (expected 'table', 'if' or 'unless')",
                    other.text
                ),
            ));
        }
    }
    let cond = if toks.is_empty() {
        None
    } else {
        Some(crate::rules::acl::parse_condition(&mut toks, files)?)
    };
    Ok(ParsedStick {
        kind,
        expr,
        table,
        cond,
    })
}

impl Decode for StickRule {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        let text = cx.scalar(node, "a stick rule")?.to_owned();
        let files = crate::model::files_for(cx);
        match parse_stick_rule(&text, files.as_ref()) {
            Ok(ParsedStick {
                kind,
                expr,
                table,
                cond,
            }) => {
                let base = crate::model::text_pos(node);
                Some(StickRule {
                    kind,
                    expr,
                    table: table.map(|(t, off)| Spanned {
                        value: t,
                        pos: crate::model::offset_pos(base, off),
                    }),
                    cond,
                    pos: base,
                })
            }
            Err(e) => {
                crate::model::rule_error(cx, node, e);
                None
            }
        }
    }
}

/// How the persistence cookie is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieMode {
    /// The proxy adds `Set-Cookie: NAME=<server>` to responses.
    Insert,
    /// The server sets the cookie; the proxy replaces its value with the server's.
    Rewrite,
    /// The server sets the cookie; the proxy puts `<server>~` in front of its value and
    /// takes it off again on requests.
    Prefix,
}

impl Decode for CookieMode {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        cx.parse_scalar(node, "a cookie mode", |s| {
            Ok(match s {
                "insert" => CookieMode::Insert,
                "rewrite" => CookieMode::Rewrite,
                "prefix" => CookieMode::Prefix,
                other => {
                    return Err(format!(
                        "unknown cookie mode {other:?} (known: insert, rewrite, prefix)"
                    ));
                }
            })
        })
    }
}

config_struct! {
    /// Cookie-based persistence (HAProxy's `cookie`).
    pub struct Cookie {
        pub name: Spanned<String>,
        pub mode: CookieMode = CookieMode::Insert,
        /// Set the cookie only for clients without a valid one, and (insert mode) keep
        /// it from the server.
        pub indirect: bool = false,
        /// Mark responses that set the cookie `Cache-Control: private`.
        pub nocache: bool = false,
        pub httponly: bool = false,
        pub secure: bool = false,
        /// `Domain` attribute.
        pub domain: Option<String>,
        /// Insert mode: a cookie not used for this long is ignored.
        pub max_idle: Option<Duration>,
        /// Insert mode: a cookie older than this is ignored.
        pub max_life: Option<Duration>,
    }
}

/// The tables a configuration declares.
pub type StickTables = NamedMap<StickTable>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_items_parse_with_periods() {
        assert_eq!(
            parse_store_item("http_req_rate(10s)"),
            Ok(StoreItem {
                kind: DataKind::HttpReqRate,
                period: Some(Duration::from_secs(10))
            })
        );
        assert!(
            parse_store_item("http_req_rate")
                .unwrap_err()
                .contains("needs a period")
        );
        assert!(
            parse_store_item("gpc0(1s)")
                .unwrap_err()
                .contains("takes no period")
        );
        assert!(
            parse_store_item("http_req_rat(1s)")
                .unwrap_err()
                .contains("did you mean")
        );
        for k in DataKind::ALL {
            assert_eq!(DataKind::from_wire_id(k.wire_id()), Some(k));
        }
    }

    #[test]
    fn stick_rules_parse() {
        let files = crate::rules::acl::NoFiles;
        let r = parse_stick_rule("on src table sessions", &files).unwrap();
        assert_eq!(r.kind, StickKind::On);
        assert_eq!(r.expr.fetch, crate::rules::Fetch::Src);
        assert_eq!(r.table.map(|t| t.0), Some("sessions".into()));
        assert!(r.cond.is_none());
        let r = parse_stick_rule("match req.cook(sid) if { path_beg /app }", &files).unwrap();
        assert_eq!(r.kind, StickKind::Match);
        assert!(r.table.is_none() && r.cond.is_some());
        assert!(parse_stick_rule("onn src", &files).is_err());
        assert!(parse_stick_rule("on src tabel x", &files).is_err());
    }
}
