//! ACLs and conditions in HAProxy's grammar.
//!
//! An ACL is `<fetch>[(<args>)][,<converter>...] [flags] [patterns...]` with the flags `-i`
//! (ignore case), `-m <method>`, `-f <file>` (patterns from a file), `-n`, `-u` and `--`.
//! A condition is `if` or `unless` followed by terms: ACL names, `!name`, and anonymous
//! ACLs in braces `{ path_beg /api }`; terms side by side must all match (AND), `||` or
//! `or` separates alternatives (OR).

use std::net::IpAddr;

use super::fetch::{MatchMethod, SampleExpr, SampleType, parse_sample};
use super::lexer::{RuleError, Token, Tokens};
use super::patfile::PatFile;

/// An IP network: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl IpNet {
    /// Parses `10.0.0.0/8`, `10.0.0.1`, `2001:db8::/32` or `10.0.0.0/255.0.0.0`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("invalid address or network {s:?}");
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max => n,
                Ok(_) => return Err(bad()),
                Err(_) => match (addr, p.parse::<std::net::Ipv4Addr>()) {
                    (IpAddr::V4(_), Ok(mask)) => {
                        let m = u32::from(mask);
                        if m.leading_ones() + m.trailing_zeros() != 32 {
                            return Err(format!("netmask {p:?} is not contiguous"));
                        }
                        m.leading_ones() as u8
                    }
                    _ => return Err(bad()),
                },
            },
        };
        Ok(Self { addr, prefix })
    }
}

/// An integer pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntMatch {
    Eq(i64),
    Ne(i64),
    Lt(i64),
    Le(i64),
    Gt(i64),
    Ge(i64),
    /// `lo:hi`, either bound may be missing.
    Range(Option<i64>, Option<i64>),
}

impl IntMatch {
    pub fn matches(&self, v: i64) -> bool {
        match *self {
            IntMatch::Eq(x) => v == x,
            IntMatch::Ne(x) => v != x,
            IntMatch::Lt(x) => v < x,
            IntMatch::Le(x) => v <= x,
            IntMatch::Gt(x) => v > x,
            IntMatch::Ge(x) => v >= x,
            IntMatch::Range(lo, hi) => lo.is_none_or(|lo| v >= lo) && hi.is_none_or(|hi| v <= hi),
        }
    }
}

/// The patterns of one ACL, typed by its match method.
#[derive(Debug, Clone, PartialEq)]
pub enum Patterns {
    None,
    Str(Vec<String>),
    Int(Vec<IntMatch>),
    Ip(Vec<IpNet>),
    /// Regular expressions, their syntax checked (the proxy compiles them).
    Reg(Vec<String>),
}

/// One ACL: what to fetch, how to match, and the patterns.
#[derive(Debug, Clone, PartialEq)]
pub struct Acl {
    pub expr: SampleExpr,
    pub method: MatchMethod,
    pub icase: bool,
    /// The patterns written in the rule.
    pub patterns: Patterns,
    /// Files of patterns (`-f`), checked for `method`; the runtime API changes them.
    pub files: Vec<PatFile>,
}

/// Reads pattern files for `-f`, and counts the patterns a configuration holds.
pub trait PatternFiles {
    fn read(&self, path: &str) -> Result<std::sync::Arc<str>, String>;
    /// Where a file named `name` is read from.
    fn resolve(&self, name: &str) -> std::path::PathBuf {
        std::path::PathBuf::from(name)
    }
    /// Reads the file named `name`.
    fn load(&self, name: &str) -> Result<PatFile, String> {
        Ok(PatFile {
            name: name.to_owned(),
            path: self.resolve(name),
            text: self.read(name)?,
        })
    }
    /// Counts `n` more ACL patterns; refuses them past [`crate::limits::MAX_ACL_PATTERNS`]
    /// for the whole configuration.
    fn count(&self, n: usize) -> Result<(), String> {
        if n > crate::limits::MAX_ACL_PATTERNS {
            return Err(crate::limits::too_many(
                "ACL patterns",
                crate::limits::MAX_ACL_PATTERNS,
            ));
        }
        Ok(())
    }
    /// Counts a regular expression of `size` states (see [`super::check_regex`]); refuses
    /// it past [`crate::limits::MAX_REGEX_TOTAL`] for the whole configuration.
    fn regex(&self, size: u64) -> Result<(), String> {
        let _ = size;
        Ok(())
    }
}

/// Reads pattern files from disk, relative to a base directory (without one, `-f` is
/// refused). A file named by several ACLs is read once per configuration, and no file may
/// be larger than [`crate::limits::MAX_PATTERN_FILE_BYTES`].
pub struct DiskFiles {
    dir: Option<std::path::PathBuf>,
    budget: std::rc::Rc<PatternBudget>,
}

impl DiskFiles {
    pub fn new(dir: Option<std::path::PathBuf>, budget: std::rc::Rc<PatternBudget>) -> Self {
        Self { dir, budget }
    }
}

/// What one configuration has loaded of its patterns: the files read, and the patterns
/// and regular expression states counted so far.
#[derive(Default)]
pub struct PatternBudget {
    files: std::cell::RefCell<
        std::collections::HashMap<std::path::PathBuf, Result<std::sync::Arc<str>, String>>,
    >,
    patterns: std::cell::Cell<usize>,
    regex_states: std::cell::Cell<u64>,
    bytes: std::cell::Cell<u64>,
}

impl PatternBudget {
    fn count(&self, n: usize) -> Result<(), String> {
        let total = self.patterns.get().saturating_add(n);
        if total > crate::limits::MAX_ACL_PATTERNS {
            return Err(crate::limits::too_many(
                "ACL patterns",
                crate::limits::MAX_ACL_PATTERNS,
            ));
        }
        self.patterns.set(total);
        Ok(())
    }
}

impl PatternFiles for DiskFiles {
    fn resolve(&self, name: &str) -> std::path::PathBuf {
        match &self.dir {
            Some(d) => d.join(name),
            None => std::path::PathBuf::from(name),
        }
    }
    fn read(&self, path: &str) -> Result<std::sync::Arc<str>, String> {
        let Some(dir) = &self.dir else {
            return NoFiles.read(path);
        };
        let p = dir.join(path);
        if let Some(r) = self.budget.files.borrow().get(&p) {
            return r.clone();
        }
        use crate::limits::{MAX_PATTERN_FILE_BYTES, MAX_PATTERN_TOTAL_BYTES};
        let mut used = self.budget.bytes.get();
        let r: Result<std::sync::Arc<str>, String> = crate::limits::read_bounded_among(
            &p,
            MAX_PATTERN_FILE_BYTES,
            MAX_PATTERN_TOTAL_BYTES,
            &mut used,
            "pattern file",
        )
        .and_then(|b| {
            String::from_utf8(b).map_err(|_| "stream did not contain valid UTF-8".to_owned())
        })
        .map(std::sync::Arc::from)
        .map_err(|e| format!("cannot read pattern file {}: {e}", p.display()));
        self.budget.bytes.set(used);
        self.budget.files.borrow_mut().insert(p, r.clone());
        r
    }
    fn count(&self, n: usize) -> Result<(), String> {
        self.budget.count(n)
    }
    fn regex(&self, size: u64) -> Result<(), String> {
        let total = self.budget.regex_states.get().saturating_add(size);
        let max = crate::limits::MAX_REGEX_TOTAL;
        if total > max {
            return Err(format!(
                "the regular expressions of the configuration compile to more than {max} \
                 states together; refused"
            ));
        }
        self.budget.regex_states.set(total);
        Ok(())
    }
}

fn parse_int(s: &str) -> Option<i64> {
    s.parse().ok()
}

fn int_patterns(words: &[Token]) -> Result<Vec<IntMatch>, RuleError> {
    let mut out = Vec::new();
    let mut op: Option<(&str, usize)> = None;
    for w in words {
        let t = w.text.as_str();
        if !w.quoted && matches!(t, "eq" | "ne" | "lt" | "le" | "gt" | "ge") {
            op = Some((t, w.offset));
            continue;
        }
        let bad = || RuleError::new(w.offset, format!("invalid integer pattern {t:?}"));
        let m = match op.take() {
            Some((o, _)) => {
                let v = parse_int(t).ok_or_else(bad)?;
                match o {
                    "eq" => IntMatch::Eq(v),
                    "ne" => IntMatch::Ne(v),
                    "lt" => IntMatch::Lt(v),
                    "le" => IntMatch::Le(v),
                    "gt" => IntMatch::Gt(v),
                    _ => IntMatch::Ge(v),
                }
            }
            None => match t.split_once(':') {
                Some((lo, hi)) => {
                    let lo = if lo.is_empty() {
                        None
                    } else {
                        Some(parse_int(lo).ok_or_else(bad)?)
                    };
                    let hi = if hi.is_empty() {
                        None
                    } else {
                        Some(parse_int(hi).ok_or_else(bad)?)
                    };
                    IntMatch::Range(lo, hi)
                }
                None => IntMatch::Eq(parse_int(t).ok_or_else(bad)?),
            },
        };
        out.push(m);
    }
    if let Some((o, off)) = op {
        return Err(RuleError::new(
            off,
            format!("operator {o:?} needs a value after it"),
        ));
    }
    Ok(out)
}

/// Parses an ACL from its words (the fetch first).
pub fn parse_acl(words: &[Token], end: usize, files: &dyn PatternFiles) -> Result<Acl, RuleError> {
    let Some(first) = words.first() else {
        return Err(RuleError::new(
            end,
            "empty ACL: expected a fetch like path_beg or src",
        ));
    };
    let (expr, implied) =
        parse_sample(&first.text, files).map_err(|m| RuleError::new(first.offset, m))?;
    let mut method = implied;
    let mut icase = false;
    let mut patterns: Vec<Token> = Vec::new();
    let mut file_names: Vec<(PatFile, usize)> = Vec::new();
    let mut i = 1;
    while i < words.len() {
        let w = &words[i];
        if w.quoted || !w.text.starts_with('-') || w.text.len() < 2 {
            break;
        }
        match w.text.as_str() {
            "-i" => icase = true,
            "-n" | "-u" => {}
            "--" => {
                i += 1;
                break;
            }
            "-m" => {
                let Some(m) = words.get(i + 1) else {
                    return Err(RuleError::new(
                        end,
                        "-m needs a match method (str, beg, end, sub, reg, dir, dom, len, int, ip, bool, found)",
                    ));
                };
                let mm = MatchMethod::from_name(&m.text).ok_or_else(|| {
                    RuleError::new(m.offset, format!("unknown match method {:?} (known: str, beg, end, sub, reg, dir, dom, len, int, ip, bool, found)", m.text))
                })?;
                method = Some(mm);
                i += 1;
            }
            "-f" => {
                let Some(f) = words.get(i + 1) else {
                    return Err(RuleError::new(end, "-f needs a file name"));
                };
                let file = files
                    .load(&f.text)
                    .map_err(|m| RuleError::new(f.offset, m))?;
                file_names.push((file, f.offset));
                i += 1;
            }
            other if parse_int(other).is_some() => break,
            other => {
                return Err(RuleError::new(
                    w.offset,
                    format!("unknown ACL flag {other:?} (known: -i, -m, -f, -n, -u, --)"),
                ));
            }
        }
        i += 1;
    }
    let inline = &words[i.min(words.len())..];
    files
        .count(inline.len())
        .map_err(|m| RuleError::new(inline.first().map_or(end, |w| w.offset), m))?;
    patterns.extend(inline.iter().cloned());
    let sample_type = expr.sample_type();
    let method = method.unwrap_or(MatchMethod::default_for(sample_type));
    // Every line is checked for the match method now, so that a bad line is refused at
    // load, and counted before it is kept.
    let mut acl_files = Vec::with_capacity(file_names.len());
    for (file, offset) in file_names {
        let (n, states) = super::patfile::check_file(&file, method, icase, None)
            .map_err(|m| RuleError::new(offset, m))?;
        files
            .count(n)
            .map_err(|m| RuleError::new(offset, format!("{}: {m}", file.name)))?;
        files.regex(states).map_err(|m| RuleError::new(offset, m))?;
        acl_files.push(file);
    }
    let pats = match method {
        MatchMethod::Found | MatchMethod::Bool => {
            if let Some(p) = patterns.first() {
                return Err(RuleError::new(
                    p.offset,
                    format!(
                        "-m {} takes no patterns",
                        if method == MatchMethod::Found {
                            "found"
                        } else {
                            "bool"
                        }
                    ),
                ));
            }
            Patterns::None
        }
        MatchMethod::Int | MatchMethod::Len => Patterns::Int(int_patterns(&patterns)?),
        MatchMethod::Ip => Patterns::Ip(
            patterns
                .iter()
                .map(|p| IpNet::parse(&p.text).map_err(|m| RuleError::new(p.offset, m)))
                .collect::<Result<_, _>>()?,
        ),
        MatchMethod::Reg => {
            for p in &patterns {
                super::check_regex(&p.text, icase)
                    .and_then(|size| files.regex(size))
                    .map_err(|e| RuleError::new(p.offset, e))?;
            }
            Patterns::Reg(patterns.into_iter().map(|p| p.text).collect())
        }
        _ => {
            if sample_type == SampleType::Bool {
                return Err(RuleError::new(
                    first.offset,
                    format!("{} is a boolean: use it without patterns", expr.fetch),
                ));
            }
            Patterns::Str(patterns.into_iter().map(|p| p.text).collect())
        }
    };
    let empty = match &pats {
        Patterns::Str(v) | Patterns::Reg(v) => v.is_empty(),
        Patterns::Int(v) => v.is_empty(),
        Patterns::Ip(v) => v.is_empty(),
        Patterns::None => false,
    };
    if empty && acl_files.is_empty() {
        return Err(RuleError::new(
            end,
            format!(
                "ACL on {} has no pattern, so it could never match (use -m found to test presence)",
                expr.fetch
            ),
        ));
    }
    Ok(Acl {
        expr,
        method,
        icase,
        patterns: pats,
        files: acl_files,
    })
}

/// A reference from a condition to an ACL.
#[derive(Debug, Clone, PartialEq)]
pub enum AclRef {
    /// A named ACL (or one of the predefined ones like `METH_GET`).
    Named { name: String, offset: usize },
    /// An ACL written in braces in the condition.
    Anonymous(Box<Acl>),
}

/// One term of a condition.
#[derive(Debug, Clone, PartialEq)]
pub struct Term {
    pub negate: bool,
    pub acl: AclRef,
}

/// `if`/`unless` and alternatives of terms that must all match.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub unless: bool,
    /// OR of ANDs.
    pub alternatives: Vec<Vec<Term>>,
}

impl Condition {
    /// The first fetch written in the condition itself that needs more than `layer`.
    pub fn fetch_above(&self, layer: crate::rules::fetch::Layer) -> Option<String> {
        self.fetch_where(|l| l > layer)
    }

    /// The first fetch written in the condition itself whose layer `pred` picks.
    pub fn fetch_where(&self, pred: impl Fn(crate::rules::fetch::Layer) -> bool) -> Option<String> {
        self.alternatives
            .iter()
            .flatten()
            .find_map(|t| match &t.acl {
                AclRef::Anonymous(a) if pred(a.expr.fetch.layer()) => {
                    Some(a.expr.fetch.to_string())
                }
                _ => None,
            })
    }

    /// Names of the named ACLs the condition uses.
    pub fn named(&self) -> impl Iterator<Item = (&str, usize)> {
        self.alternatives
            .iter()
            .flatten()
            .filter_map(|t| match &t.acl {
                AclRef::Named { name, offset } => Some((name.as_str(), *offset)),
                AclRef::Anonymous(_) => None,
            })
    }

    /// Every anonymous ACL's sample, for checks of the fetches used.
    pub fn samples(&self) -> impl Iterator<Item = &crate::rules::SampleExpr> {
        self.alternatives
            .iter()
            .flatten()
            .filter_map(|t| match &t.acl {
                AclRef::Anonymous(a) => Some(&a.expr),
                AclRef::Named { .. } => None,
            })
    }
}

/// Parses a condition starting at `if` or `unless`; it must run to the end of the rule.
pub fn parse_condition(
    toks: &mut Tokens,
    files: &dyn PatternFiles,
) -> Result<Condition, RuleError> {
    let kw = toks.expect("if or unless")?;
    let unless = match kw.text.as_str() {
        "if" => false,
        "unless" => true,
        other => {
            return Err(RuleError::new(
                kw.offset,
                format!("expected 'if' or 'unless', found {other:?}"),
            ));
        }
    };
    let mut alternatives = vec![Vec::new()];
    while let Some(t) = toks.next() {
        if !t.quoted && (t.text == "||" || t.text == "or") {
            if alternatives.last().is_some_and(Vec::is_empty) {
                return Err(RuleError::new(
                    t.offset,
                    format!("{:?} needs a term before it", t.text),
                ));
            }
            alternatives.push(Vec::new());
            continue;
        }
        let (negate, word, offset) = match t.text.strip_prefix('!') {
            Some(rest) if !t.quoted => {
                if rest.is_empty() {
                    let n = toks.expect("an ACL after '!'")?;
                    (true, n.text, n.offset)
                } else {
                    (true, rest.to_owned(), t.offset + 1)
                }
            }
            _ => (false, t.text, t.offset),
        };
        let acl = if word == "{" {
            let mut inner = Vec::new();
            let mut closed = false;
            for x in toks.by_ref() {
                if !x.quoted && x.text == "}" {
                    closed = true;
                    break;
                }
                inner.push(x);
            }
            if !closed {
                return Err(RuleError::new(
                    offset,
                    "missing '}' to close the anonymous ACL",
                ));
            }
            let end = toks.offset();
            AclRef::Anonymous(Box::new(parse_acl(&inner, end, files)?))
        } else if word == "}" {
            return Err(RuleError::new(offset, "'}' without a matching '{'"));
        } else {
            AclRef::Named { name: word, offset }
        };
        if let Some(last) = alternatives.last_mut() {
            last.push(Term { negate, acl });
        }
    }
    if alternatives.iter().any(Vec::is_empty) {
        return Err(RuleError::new(
            toks.end(),
            format!("'{}' needs at least one ACL", kw.text),
        ));
    }
    Ok(Condition {
        unless,
        alternatives,
    })
}

/// HAProxy's predefined ACLs, usable by name without being declared.
pub const PREDEFINED: &[(&str, &str)] = &[
    ("TRUE", "always_true"),
    ("FALSE", "always_false"),
    ("HTTP", "always_true"),
    ("HTTP_1.0", "req.ver 1.0"),
    ("HTTP_1.1", "req.ver 1.1"),
    ("HTTP_2.0", "req.ver 2.0"),
    ("HTTP_CONTENT", "hdr_val(content-length) gt 0"),
    ("LOCALHOST", "src 127.0.0.1/8 ::1"),
    ("METH_CONNECT", "method CONNECT"),
    ("METH_DELETE", "method DELETE"),
    ("METH_GET", "method GET HEAD"),
    ("METH_HEAD", "method HEAD"),
    ("METH_OPTIONS", "method OPTIONS"),
    ("METH_POST", "method POST"),
    ("METH_PUT", "method PUT"),
    ("METH_TRACE", "method TRACE"),
];

/// The definition of a predefined ACL.
pub fn predefined(name: &str) -> Option<Acl> {
    let (_, def) = PREDEFINED.iter().find(|(n, _)| *n == name)?;
    let toks = super::lexer::tokenize(def).ok()?;
    parse_acl(&toks, def.len(), &NoFiles).ok()
}

/// Refuses every `-f`, for contexts without files.
pub struct NoFiles;

impl PatternFiles for NoFiles {
    fn read(&self, path: &str) -> Result<std::sync::Arc<str>, String> {
        Err(format!("pattern files are not available here ({path})"))
    }
}

#[cfg(test)]
mod tests {
    use super::super::lexer::tokenize;
    use super::*;

    fn acl(s: &str) -> Result<Acl, RuleError> {
        parse_acl(&tokenize(s).unwrap(), s.len(), &NoFiles)
    }

    #[test]
    fn parse_acl_defaults_and_flags() {
        let a = acl("path_beg -i /API /v2").unwrap();
        assert_eq!(a.method, MatchMethod::Beg);
        assert!(a.icase);
        assert_eq!(a.patterns, Patterns::Str(vec!["/API".into(), "/v2".into()]));
        let a = acl("src 10.0.0.0/8 ::1 192.168.0.0/255.255.0.0").unwrap();
        assert_eq!(a.method, MatchMethod::Ip);
        let Patterns::Ip(nets) = a.patterns else {
            panic!()
        };
        assert_eq!(nets[2].prefix, 16);
        let a = acl("hdr_cnt(host) gt 1 5:7").unwrap();
        assert_eq!(
            a.patterns,
            Patterns::Int(vec![IntMatch::Gt(1), IntMatch::Range(Some(5), Some(7))])
        );
        let a = acl("hdr(x-id) -m found").unwrap();
        assert_eq!(a.patterns, Patterns::None);
        let a = acl("path -m reg ^/a[0-9]+$").unwrap();
        assert_eq!(a.method, MatchMethod::Reg);
    }

    #[test]
    fn parse_acl_errors_point_at_the_word() {
        let e = acl("path_reg /a(").unwrap_err();
        assert_eq!(e.offset, 9);
        assert!(e.message.contains("invalid regular expression"));
        let e = acl("src 10.0.0.0/40").unwrap_err();
        assert_eq!(e.offset, 4);
        let e = acl("path_beg").unwrap_err();
        assert!(e.message.contains("no pattern"));
        let e = acl("path -m bogus x").unwrap_err();
        assert!(e.message.contains("unknown match method"));
        let e = acl("ssl_fc yes").unwrap_err();
        assert!(e.message.contains("takes no patterns"), "{}", e.message);
    }

    #[test]
    fn parse_condition_or_of_ands() {
        let mut t = Tokens::new("if a !b || { path_beg /x } or c").unwrap();
        let c = parse_condition(&mut t, &NoFiles).unwrap();
        assert!(!c.unless);
        assert_eq!(c.alternatives.len(), 3);
        assert!(c.alternatives[0][1].negate);
        assert!(matches!(c.alternatives[1][0].acl, AclRef::Anonymous(_)));
        let mut t = Tokens::new("if { path_beg /x").unwrap();
        assert!(
            parse_condition(&mut t, &NoFiles)
                .unwrap_err()
                .message
                .contains("missing '}'")
        );
        let mut t = Tokens::new("if a ||").unwrap();
        assert!(parse_condition(&mut t, &NoFiles).is_err());
    }

    #[test]
    fn predefined_acls_all_parse() {
        for (name, _) in PREDEFINED {
            assert!(predefined(name).is_some(), "{name}");
        }
    }

    #[test]
    fn int_match_semantics() {
        assert!(IntMatch::Range(None, Some(5)).matches(-3));
        assert!(!IntMatch::Range(Some(1), Some(5)).matches(6));
        assert!(IntMatch::Ne(3).matches(4));
    }
}
