//! ACL matchers, each with the structure that suits it: a hash set for exact strings,
//! per-length hash sets for prefixes and suffixes, Aho-Corasick for substrings, a regex set
//! for regular expressions, per-prefix-length hash sets for networks.

use std::collections::HashMap;
use std::net::IpAddr;

use aho_corasick::AhoCorasick;
use rampart_config::rules::{Acl, IntMatch, IpNet, MatchMethod, Patterns};

use super::patref::{Expr, ExprKey, PatRef, RefKind};
use super::sample::{Value, canonical_ip};
use rampart_config::rules::PatFile;
use std::sync::Arc;

/// Hash sets of patterns: built from the configuration, so a fast hash seeded per process
/// is enough (and lookups stay fast for sets of millions).
type HashSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;

/// `items` grouped by `key`, each group a set, groups in key order.
fn grouped<K: Ord + Copy + std::hash::Hash, T: Eq + std::hash::Hash>(
    items: Vec<T>,
    key: impl Fn(&T) -> K,
) -> Vec<(K, HashSet<T>)> {
    let mut sizes: HashMap<K, usize> = HashMap::new();
    for t in &items {
        *sizes.entry(key(t)).or_default() += 1;
    }
    let mut groups: HashMap<K, HashSet<T>> = sizes
        .into_iter()
        .map(|(k, n)| (k, HashSet::with_capacity_and_hasher(n, Default::default())))
        .collect();
    for t in items {
        if let Some(g) = groups.get_mut(&key(&t)) {
            g.insert(t);
        }
    }
    let mut out: Vec<_> = groups.into_iter().collect();
    out.sort_by_key(|(k, _)| *k);
    out
}

/// Strings grouped by length, for prefix or suffix lookups in O(distinct lengths).
#[derive(Debug, Default)]
struct AffixSet {
    by_len: Vec<(usize, HashSet<Vec<u8>>)>,
}

impl AffixSet {
    fn new(patterns: Vec<Vec<u8>>) -> Self {
        Self {
            by_len: grouped(patterns, Vec::len),
        }
    }

    fn prefix_of(&self, s: &[u8]) -> bool {
        self.by_len
            .iter()
            .take_while(|(l, _)| *l <= s.len())
            .any(|(l, set)| set.contains(&s[..*l]))
    }

    fn suffix_of(&self, s: &[u8]) -> bool {
        self.by_len
            .iter()
            .take_while(|(l, _)| *l <= s.len())
            .any(|(l, set)| set.contains(&s[s.len() - l..]))
    }
}

/// Networks grouped by prefix length: membership costs one hash lookup per distinct length.
#[derive(Debug, Default)]
pub struct IpSet {
    v4: Vec<(u8, HashSet<u32>)>,
    v6: Vec<(u8, HashSet<u128>)>,
}

pub(crate) fn mask4(a: u32, p: u8) -> u32 {
    if p == 0 {
        0
    } else {
        a & (u32::MAX << (32 - u32::from(p)))
    }
}

pub(crate) fn mask6(a: u128, p: u8) -> u128 {
    if p == 0 {
        0
    } else {
        a & (u128::MAX << (128 - u32::from(p)))
    }
}

/// Masked addresses grouped by prefix length, longest first.
fn by_prefix<A: Eq + std::hash::Hash>(nets: Vec<(u8, A)>) -> Vec<(u8, HashSet<A>)> {
    let mut sizes = [0usize; 129];
    for (p, _) in &nets {
        sizes[usize::from(*p).min(128)] += 1;
    }
    let mut out: Vec<(u8, HashSet<A>)> = (0..=128u8)
        .rev()
        .filter(|p| sizes[usize::from(*p)] > 0)
        .map(|p| {
            let n = sizes[usize::from(p)];
            (p, HashSet::with_capacity_and_hasher(n, Default::default()))
        })
        .collect();
    for (p, a) in nets {
        if let Some((_, set)) = out.iter_mut().find(|(q, _)| *q == p) {
            set.insert(a);
        }
    }
    out
}

/// A network as its prefix length and masked address, IPv4-mapped ones as IPv4.
pub(crate) enum Masked {
    V4(u8, u32),
    V6(u8, u128),
}

impl Masked {
    pub(crate) fn of(n: &IpNet) -> Self {
        match canonical_ip(n.addr) {
            IpAddr::V4(a) => {
                let p = if n.addr.is_ipv6() {
                    n.prefix.saturating_sub(96)
                } else {
                    n.prefix
                };
                Masked::V4(p, mask4(a.into(), p))
            }
            IpAddr::V6(a) => Masked::V6(n.prefix, mask6(a.into(), n.prefix)),
        }
    }
}

impl IpSet {
    pub fn new(nets: &[IpNet]) -> Self {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for n in nets {
            match Masked::of(n) {
                Masked::V4(p, a) => v4.push((p, a)),
                Masked::V6(p, a) => v6.push((p, a)),
            }
        }
        Self {
            v4: by_prefix(v4),
            v6: by_prefix(v6),
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match canonical_ip(ip) {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                self.v4.iter().any(|(p, s)| s.contains(&mask4(a, *p)))
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                self.v6.iter().any(|(p, s)| s.contains(&mask6(a, *p)))
            }
        }
    }
}

/// How a string pattern is compared with a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrKind {
    /// The whole sample (`-m str`).
    Exact,
    /// Its start (`-m beg`).
    Prefix,
    /// Its end (`-m end`).
    Suffix,
}

/// A compiled ACL matcher.
#[derive(Debug)]
pub enum Matcher {
    Found,
    Bool,
    Int(Vec<IntMatch>),
    Len(Vec<IntMatch>),
    Ip(IpSet),
    Str(HashSet<Vec<u8>>),
    Beg(AffixSetBox),
    End(AffixSetBox),
    Sub(Box<AhoCorasick>),
    Reg(Box<regex::bytes::RegexSet>),
    /// Patterns that must appear as whole slash-delimited parts.
    Dir(Vec<Vec<u8>>),
    /// Patterns that must appear as whole dot-delimited parts.
    Dom(Vec<Vec<u8>>),
}

/// Boxed to keep `Matcher` small.
#[derive(Debug)]
pub struct AffixSetBox(Box<AffixSet>);

/// Whether `pat` occurs in `s` bounded by delimiters (or the ends).
pub(crate) fn delimited(s: &[u8], pat: &[u8], delim: &[u8]) -> bool {
    if pat.is_empty() || pat.len() > s.len() {
        return false;
    }
    memchr::memmem::find_iter(s, pat).any(|i| {
        let before_ok = i == 0 || delim.contains(&s[i - 1]);
        let end = i + pat.len();
        let after_ok = end == s.len() || delim.contains(&s[end]);
        before_ok && after_ok
    })
}

/// `v` without the delimiters `d` at its ends (a `-m dir` or `-m dom` pattern).
pub(crate) fn trim_delims<'v>(v: &'v [u8], d: &[u8]) -> &'v [u8] {
    let start = v.iter().position(|b| !d.contains(b)).unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !d.contains(b))
        .map_or(start, |e| e + 1);
    &v[start..end]
}

/// A matcher and whether it lowercases samples first.
#[derive(Debug)]
pub struct CompiledMatch {
    pub matcher: Matcher,
    pub icase: bool,
    /// The pattern files (`-f`), as the runtime API keeps them.
    pub files: Vec<Arc<Expr>>,
}

fn fold(icase: bool, v: &str) -> Vec<u8> {
    if icase {
        v.to_ascii_lowercase().into_bytes()
    } else {
        v.as_bytes().to_vec()
    }
}

impl CompiledMatch {
    /// Compiles `acl`; `files` gives the reference of each of its pattern files.
    pub fn compile(
        acl: &Acl,
        files: &dyn Fn(RefKind, &PatFile) -> Arc<PatRef>,
    ) -> Result<Self, String> {
        let icase = acl.icase;
        let refs = acl
            .files
            .iter()
            .map(|f| {
                files(RefKind::Acl, f).expr(ExprKey {
                    method: acl.method,
                    icase,
                    output: None,
                })
            })
            .collect();
        let strs = |p: &Patterns| -> Vec<Vec<u8>> {
            match p {
                Patterns::Str(v) => v.iter().map(|s| fold(icase, s)).collect(),
                _ => Vec::new(),
            }
        };
        let trim = |d: &'static [u8]| move |v: Vec<u8>| trim_delims(&v, d).to_vec();
        let matcher = match (acl.method, &acl.patterns) {
            (MatchMethod::Found, _) => Matcher::Found,
            (MatchMethod::Bool, _) => Matcher::Bool,
            (MatchMethod::Int, Patterns::Int(v)) => Matcher::Int(v.clone()),
            (MatchMethod::Len, Patterns::Int(v)) => Matcher::Len(v.clone()),
            (MatchMethod::Ip, Patterns::Ip(v)) => Matcher::Ip(IpSet::new(v)),
            (MatchMethod::Str, p) => {
                let v = strs(p);
                let mut set = HashSet::with_capacity_and_hasher(v.len(), Default::default());
                set.extend(v);
                Matcher::Str(set)
            }
            (MatchMethod::Beg, p) => Matcher::Beg(AffixSetBox(Box::new(AffixSet::new(strs(p))))),
            (MatchMethod::End, p) => Matcher::End(AffixSetBox(Box::new(AffixSet::new(strs(p))))),
            (MatchMethod::Sub, p) => Matcher::Sub(Box::new(
                AhoCorasick::new(strs(p)).map_err(|e| e.to_string())?,
            )),
            (MatchMethod::Dir, p) => Matcher::Dir(strs(p).into_iter().map(trim(b"/?")).collect()),
            (MatchMethod::Dom, p) => Matcher::Dom(strs(p).into_iter().map(trim(b"/?.:")).collect()),
            (MatchMethod::Reg, Patterns::Reg(v)) => Matcher::Reg(Box::new(
                regex::bytes::RegexSetBuilder::new(v)
                    .case_insensitive(icase)
                    .size_limit(1 << 22)
                    .build()
                    .map_err(|e| e.to_string())?,
            )),
            (m, _) => return Err(format!("match method {m:?} does not fit these patterns")),
        };
        Ok(Self {
            matcher,
            icase,
            files: refs,
        })
    }

    /// For the string comparisons a first-match index merges (`-m str`, `-m beg`,
    /// `-m end`): how it compares and its patterns, already folded for `-i`.
    pub fn string_patterns(&self) -> Option<(StrKind, Vec<&[u8]>)> {
        if !self.files.is_empty() {
            // Entries change at run time: they cannot be merged into a fixed index.
            return None;
        }
        fn affixes(a: &AffixSetBox) -> Vec<&[u8]> {
            a.0.by_len
                .iter()
                .flat_map(|(_, set)| set.iter().map(Vec::as_slice))
                .collect()
        }
        match &self.matcher {
            Matcher::Str(set) => Some((StrKind::Exact, set.iter().map(Vec::as_slice).collect())),
            Matcher::Beg(a) => Some((StrKind::Prefix, affixes(a))),
            Matcher::End(a) => Some((StrKind::Suffix, affixes(a))),
            _ => None,
        }
    }

    /// Whether `v` matches.
    pub fn matches(&self, v: &Value<'_>) -> bool {
        self.matches_inline(v) || self.files.iter().any(|f| f.find(v).is_some())
    }

    /// Whether `v` matches a pattern written in the rule.
    fn matches_inline(&self, v: &Value<'_>) -> bool {
        match &self.matcher {
            Matcher::Found => true,
            Matcher::Bool => v.as_bool(),
            Matcher::Int(ms) => v.as_int().is_some_and(|i| ms.iter().any(|m| m.matches(i))),
            Matcher::Len(ms) => {
                let l = v.to_bytes().len() as i64;
                ms.iter().any(|m| m.matches(l))
            }
            Matcher::Ip(set) => v.as_ip().is_some_and(|ip| set.contains(ip)),
            _ => {
                let raw = v.to_bytes();
                let folded;
                let s: &[u8] = if self.icase {
                    folded = raw.to_ascii_lowercase();
                    &folded
                } else {
                    &raw
                };
                match &self.matcher {
                    Matcher::Str(set) => set.contains(s),
                    Matcher::Beg(a) => a.0.prefix_of(s),
                    Matcher::End(a) => a.0.suffix_of(s),
                    Matcher::Sub(ac) => ac.is_match(s),
                    // The regex set folds case itself.
                    Matcher::Reg(r) => r.is_match(&raw),
                    Matcher::Dir(pats) => pats.iter().any(|p| delimited(s, p, b"/?")),
                    Matcher::Dom(pats) => pats.iter().any(|p| delimited(s, p, b"/?.:")),
                    _ => false,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rampart_config::rules::acl::{NoFiles, parse_acl};
    use rampart_config::rules::lexer::tokenize;
    use std::borrow::Cow;

    fn m(def: &str) -> CompiledMatch {
        let acl = parse_acl(&tokenize(def).unwrap(), def.len(), &NoFiles).unwrap();
        CompiledMatch::compile(&acl, &|k, f| PatRef::load(k, f)).unwrap()
    }

    fn s(v: &str) -> Value<'_> {
        Value::Str(Cow::Borrowed(v.as_bytes()))
    }

    #[test]
    fn string_matchers() {
        let c = m("path -m str /a /b");
        assert!(c.matches(&s("/a")) && !c.matches(&s("/ab")));
        let c = m("path_beg /api/ /v2");
        assert!(c.matches(&s("/api/x")) && c.matches(&s("/v2")) && !c.matches(&s("/ap")));
        let c = m("path_end .css .js");
        assert!(c.matches(&s("/a/b.css")) && !c.matches(&s("/a.cs")));
        let c = m("path_sub -i admin");
        assert!(c.matches(&s("/x/ADMIN/y")) && !c.matches(&s("/adm")));
        let c = m("path_reg ^/u/[0-9]+$");
        assert!(c.matches(&s("/u/42")) && !c.matches(&s("/u/x")));
        let c = m("path_reg -i ^/UP");
        assert!(c.matches(&s("/up/x")));
        let c = m("path_dir img");
        assert!(
            c.matches(&s("/a/img/b.png")) && c.matches(&s("/img")) && !c.matches(&s("/imgs/x"))
        );
        let c = m("hdr_dom(host) example.com");
        assert!(
            c.matches(&s("www.example.com"))
                && c.matches(&s("example.com:8080"))
                && !c.matches(&s("myexample.com"))
        );
        let c = m("hdr_len(x) gt 3");
        assert!(c.matches(&s("abcd")) && !c.matches(&s("abc")));
    }

    #[test]
    fn ip_and_int_matchers() {
        let c = m("src 10.0.0.0/8 192.168.1.7 2001:db8::/32");
        let ip = |x: &str| Value::Ip(x.parse().unwrap());
        assert!(c.matches(&ip("10.2.3.4")));
        assert!(c.matches(&ip("192.168.1.7")));
        assert!(!c.matches(&ip("192.168.1.8")));
        assert!(c.matches(&ip("2001:db8:1::5")));
        assert!(c.matches(&ip("::ffff:10.0.0.1")));
        assert!(!c.matches(&ip("2001:db9::1")));
        assert!(c.matches(&s("10.9.9.9")), "strings are parsed for -m ip");
        let c = m("dst_port 80 443 8000:8999");
        assert!(
            c.matches(&Value::Int(443))
                && c.matches(&Value::Int(8080))
                && !c.matches(&Value::Int(81))
        );
        let c = m("hdr_cnt(host) ne 1");
        assert!(c.matches(&Value::Int(2)) && !c.matches(&Value::Int(1)));
        let c = m("src 0.0.0.0/0");
        assert!(c.matches(&ip("1.2.3.4")) && !c.matches(&ip("::1")));
    }
}
