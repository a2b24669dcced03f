//! First-match indexes: a run of consecutive conditions, each a single ACL comparing the
//! same sample with strings the same way (`use_backend b1 if { path_beg /a/ }`,
//! `use_backend b2 if { path_beg /b/ }`, ...), answered by one lookup instead of one
//! evaluation per condition.
//!
//! The index maps each pattern to the position of the first condition that has it, so the
//! first condition that holds is the lowest position among the patterns that match. For
//! prefixes and suffixes the patterns are grouped by length, so a lookup costs one hash
//! probe per distinct pattern length, whatever the number of conditions.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Range;

use super::matcher::StrKind;
use super::sample::{Sample, SampleCtx};
use super::{AclTable, Cond};

type Map = HashMap<Vec<u8>, u32, foldhash::fast::RandomState>;

/// Runs shorter than this are tried one by one: a lookup costs about as much as two
/// conditions.
const MIN_RUN: usize = 3;

/// Conditions in order, cut into runs that an index answers and runs tried one by one.
pub struct FirstMatch {
    runs: Vec<Run>,
}

enum Run {
    /// Each condition in turn.
    Each(Range<usize>),
    /// One lookup; the range's start is the index's position 0.
    Index(Range<usize>, Box<Index>),
}

struct Index {
    sample: Sample,
    icase: bool,
    kind: StrKind,
    /// Patterns by length, shortest first, each mapped to the lowest position that has it.
    by_len: Vec<(usize, Map)>,
}

/// What makes a condition mergeable: its single ACL's sample, folding and comparison, and
/// the patterns.
struct Simple<'a> {
    sample: &'a Sample,
    icase: bool,
    kind: StrKind,
    patterns: Vec<&'a [u8]>,
}

fn simple<'a>(acls: &'a AclTable, c: &Cond) -> Option<Simple<'a>> {
    let [terms] = c.alternatives.as_slice() else {
        return None;
    };
    let [(false, i)] = terms.as_slice() else {
        return None;
    };
    if c.unless {
        return None;
    }
    let [entry] = acls.defs.get(*i)?.as_slice() else {
        return None;
    };
    let (kind, patterns) = entry.matcher.string_patterns()?;
    Some(Simple {
        sample: &entry.sample,
        icase: entry.matcher.icase,
        kind,
        patterns,
    })
}

impl Simple<'_> {
    fn joins(&self, o: &Simple<'_>) -> bool {
        self.kind == o.kind && self.icase == o.icase && self.sample.same_pure(o.sample)
    }
}

impl Index {
    fn build<'a>(first: &Simple<'_>, members: impl Iterator<Item = &'a Simple<'a>>) -> Self {
        let mut by_len: Vec<(usize, Map)> = Vec::new();
        for (pos, m) in members.enumerate() {
            for p in &m.patterns {
                let at = match by_len.binary_search_by_key(&p.len(), |(l, _)| *l) {
                    Ok(at) => at,
                    Err(at) => {
                        by_len.insert(at, (p.len(), Map::default()));
                        at
                    }
                };
                // Earlier positions win: keep the first one seen.
                by_len[at].1.entry(p.to_vec()).or_insert(pos as u32);
            }
        }
        Self {
            sample: first.sample.clone(),
            icase: first.icase,
            kind: first.kind,
            by_len,
        }
    }

    /// The lowest position with a pattern matching `s`.
    fn lookup(&self, s: &[u8]) -> Option<u32> {
        match self.kind {
            StrKind::Exact => {
                let at = self
                    .by_len
                    .binary_search_by_key(&s.len(), |(l, _)| *l)
                    .ok()?;
                self.by_len[at].1.get(s).copied()
            }
            StrKind::Prefix => self
                .by_len
                .iter()
                .take_while(|(l, _)| *l <= s.len())
                .filter_map(|(l, m)| m.get(&s[..*l]).copied())
                .min(),
            StrKind::Suffix => self
                .by_len
                .iter()
                .take_while(|(l, _)| *l <= s.len())
                .filter_map(|(l, m)| m.get(&s[s.len() - l..]).copied())
                .min(),
        }
    }

    /// The lowest position whose condition holds for the request, over every value of
    /// the sample (a condition holds when any value matches).
    fn first(&self, cx: &SampleCtx<'_>) -> Option<usize> {
        let mut best: Option<u32> = None;
        self.sample.any(cx, &mut |v| {
            let raw = v.to_bytes();
            let s: Cow<'_, [u8]> = if self.icase {
                Cow::Owned(raw.to_ascii_lowercase())
            } else {
                raw
            };
            if let Some(p) = self.lookup(&s) {
                best = Some(best.map_or(p, |b| b.min(p)));
            }
            // Nothing can come before the run's first condition.
            best == Some(0)
        });
        best.map(|p| p as usize)
    }
}

impl FirstMatch {
    /// `n` conditions tried one by one.
    pub fn each(n: usize) -> Self {
        Self {
            runs: vec![Run::Each(0..n)],
        }
    }

    /// Plans the evaluation of `conds` (`None`: always holds), in order, over `acls`.
    pub fn new(acls: &AclTable, conds: &[Option<&Cond>]) -> Self {
        let simple: Vec<Option<Simple<'_>>> = conds
            .iter()
            .map(|c| c.and_then(|c| simple(acls, c)))
            .collect();
        let mut runs = Vec::new();
        let mut each_from = 0;
        let mut i = 0;
        while i < conds.len() {
            let Some(head) = &simple[i] else {
                i += 1;
                continue;
            };
            let mut end = i + 1;
            while simple
                .get(end)
                .and_then(Option::as_ref)
                .is_some_and(|s| head.joins(s))
            {
                end += 1;
            }
            if end - i >= MIN_RUN {
                if each_from < i {
                    runs.push(Run::Each(each_from..i));
                }
                let members = simple[i..end].iter().flatten();
                runs.push(Run::Index(i..end, Box::new(Index::build(head, members))));
                each_from = end;
            }
            i = end;
        }
        if each_from < conds.len() {
            runs.push(Run::Each(each_from..conds.len()));
        }
        Self { runs }
    }

    /// The position of the first condition that holds; `eval(i)` evaluates the `i`th
    /// condition for the positions no index covers.
    pub fn first(&self, cx: &SampleCtx<'_>, mut eval: impl FnMut(usize) -> bool) -> Option<usize> {
        for run in &self.runs {
            match run {
                Run::Each(r) => {
                    if let Some(i) = r.clone().find(|i| eval(*i)) {
                        return Some(i);
                    }
                }
                Run::Index(r, index) => {
                    if let Some(p) = index.first(cx) {
                        return Some(r.start + p);
                    }
                }
            }
        }
        None
    }

    /// How many conditions indexes answer.
    pub fn indexed(&self) -> usize {
        self.runs
            .iter()
            .map(|r| match r {
                Run::Index(r, _) => r.len(),
                Run::Each(_) => 0,
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::RuleCompiler;
    use crate::rules::sample::{ConnInfo, Resolve};
    use http::{HeaderMap, HeaderValue, Method, Uri, Version};
    use rampart_config::rules::acl::{NoFiles, parse_condition};
    use rampart_config::rules::lexer::Tokens;

    /// Conditions as a `use_backend` list would have them: indexable runs of prefixes,
    /// suffixes, case-folded exact hosts and a multi-valued header, cut by conditions that
    /// are tried one by one.
    const CONDS: &[&str] = &[
        "if { path_beg /a/ }",
        "if { path_beg /a/b/ }",
        "if { path_beg /c/ /a/b/c }",
        "if { path_beg /d }",
        "if { path_beg /e/f }",
        "if { path_beg /e }",
        "if { path_beg /x } !{ src 10.0.0.0/8 }",
        "if { path_beg /y }",
        "if { hdr(host) -i -m str WWW.example.com }",
        "if { hdr(host) -i -m str api.example.com www.example.com }",
        "if { hdr(host) -i -m str static.example.com }",
        "unless { path_beg / }",
        "if { path_end .css }",
        "if { path_end .js .css }",
        "if { path_end s }",
        "if { hdr(x-tag) -m str c }",
        "if { hdr(x-tag) -m str a }",
        "if { hdr(x-tag) -m str b }",
        "if { hdr(x-tag) -m str a }",
        // Same sample, another comparison: starts no run of its own (too short).
        "if { hdr(x-tag) -m beg z }",
        "if { path -m str /exact }",
    ];

    fn compile() -> (AclTable, Vec<Cond>) {
        let backend = |_: &str| None;
        let table = |_: &str| None;
        let patterns = crate::rules::patref::PatRef::load;
        let r = Resolve {
            backend: &backend,
            table: &table,
            patterns: &patterns,
        };
        let mut rc = RuleCompiler::new(&Default::default(), &r).unwrap();
        let conds = CONDS
            .iter()
            .map(|c| {
                let mut t = Tokens::new(c).unwrap();
                rc.cond(&parse_condition(&mut t, &NoFiles).unwrap())
                    .unwrap()
            })
            .collect();
        (rc.finish(), conds)
    }

    #[test]
    fn index_answers_as_conditions_tried_in_order() {
        let (acls, conds) = compile();
        let refs: Vec<Option<&Cond>> = conds.iter().map(Some).collect();
        let fm = FirstMatch::new(&acls, &refs);
        // Runs: 6 prefixes, 3 hosts, 3 suffixes, 4 header values.
        assert_eq!(fm.indexed(), 16);
        let conn = ConnInfo::new(
            "192.0.2.1:5000".parse().unwrap(),
            "127.0.0.1:80".parse().unwrap(),
            false,
        );
        let paths = [
            "/", "/a/", "/a/b/", "/a/b/c", "/a/b/cd", "/c/x", "/d", "/dd", "/x", "/y.css", "/q.js",
            "/q.jss", "/exact", "/a.css", "/zz", "/e/f", "/e/g",
        ];
        let hosts = [
            None,
            Some("www.example.com"),
            Some("API.Example.com"),
            Some("static.example.com"),
            Some("other"),
        ];
        let tags = [
            None,
            Some("a"),
            Some("b, c"),
            Some("c, a"),
            Some("zz, b"),
            Some("a, b"),
            Some("q"),
        ];
        let mut checked = 0;
        for p in paths {
            for h in hosts {
                for tag in tags {
                    let uri: Uri = p.parse().unwrap();
                    let mut headers = HeaderMap::new();
                    if let Some(h) = h {
                        headers.insert("host", HeaderValue::from_static(h));
                    }
                    if let Some(t) = tag {
                        headers.insert("x-tag", HeaderValue::from_static(t));
                    }
                    let nbsrv = |_: usize| 0;
                    let cx = SampleCtx {
                        conn: &conn,
                        frontend: "fe",
                        method: &Method::GET,
                        uri: &uri,
                        version: Version::HTTP_11,
                        headers: &headers,
                        nbsrv: &nbsrv,
                        track: Default::default(),
                        payload: None,
                    };
                    let eval = |i: usize| conds[i].eval(&acls, &cx);
                    let linear = (0..conds.len()).find(|i| eval(*i));
                    assert_eq!(fm.first(&cx, eval), linear, "{p} {h:?} {tag:?}");
                    checked += usize::from(linear.is_some());
                }
            }
        }
        assert!(checked > 100);
    }

    #[test]
    fn short_runs_stay_one_by_one() {
        let (acls, conds) = compile();
        // Two prefixes, then a condition that always holds, then two more.
        let refs = [
            Some(&conds[0]),
            Some(&conds[1]),
            None,
            Some(&conds[2]),
            Some(&conds[3]),
        ];
        let fm = FirstMatch::new(&acls, &refs);
        assert_eq!(fm.indexed(), 0);
        assert_eq!(FirstMatch::each(3).indexed(), 0);
    }
}
