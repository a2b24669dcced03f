//! The rule language: HAProxy's ACL and action grammar, parsed at load time into typed form.

pub mod acl;
pub mod action;
pub mod fetch;
pub mod lexer;
pub mod logfmt;
pub mod patfile;

pub use acl::{Acl, AclRef, Condition, IntMatch, IpNet, Patterns, Term};
pub use action::{
    ConnAction, HeaderAction, Redirect, RedirectKind, Reply, RequestAction, ResponseAction, Rule,
    StickAction,
};
pub use fetch::{
    CertField, Converter, DnEntry, Fetch, JsonInput, MapConv, MatchMethod, SampleExpr, SampleType,
    ScFetch, ScOp, ScSource,
};
pub use lexer::RuleError;
pub use logfmt::{LogFormat, Segment};
pub use patfile::PatFile;

/// Checks a regular expression's syntax and size, and returns its size: about the number
/// of states it compiles to. Only checked: the proxy compiles each expression once.
pub fn check_regex(text: &str, icase: bool) -> Result<u64, String> {
    let hir = regex_syntax::ParserBuilder::new()
        .case_insensitive(icase)
        .build()
        .parse(text)
        .map_err(|e| {
            // Syntax errors span several lines (the expression, a caret, the message).
            let msg = e.to_string();
            let last = msg
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map_or(msg.as_str(), |l| l.trim().trim_start_matches("error: "));
            format!("invalid regular expression {text:?}: {last}")
        })?;
    let size = regex_size(&hir);
    let max = crate::limits::MAX_REGEX_SIZE;
    if size > max {
        return Err(format!(
            "regular expression {text:?} is too large: it compiles to about {size} states, \
             more than {max} (a Unicode class such as \\w counts thousands, (?-u:\\w) counts one)"
        ));
    }
    Ok(size)
}

/// About how many states `hir` compiles to: a byte per literal byte or byte range, the
/// UTF-8 sequences of Unicode classes, repetitions multiplied out.
fn regex_size(hir: &regex_syntax::hir::Hir) -> u64 {
    use regex_syntax::hir::{Class, HirKind};
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => 1,
        HirKind::Literal(l) => l.0.len() as u64,
        HirKind::Class(Class::Bytes(c)) => c.ranges().len() as u64,
        HirKind::Class(Class::Unicode(c)) => c
            .ranges()
            .iter()
            .map(|r| {
                regex_syntax::utf8::Utf8Sequences::new(r.start(), r.end())
                    .map(|s| s.len() as u64)
                    .sum::<u64>()
            })
            .sum(),
        HirKind::Repetition(r) => {
            let copies = u64::from(r.max.unwrap_or(r.min).max(r.min)) + u64::from(r.max.is_none());
            regex_size(&r.sub).saturating_mul(copies.max(1))
        }
        HirKind::Capture(c) => regex_size(&c.sub).saturating_add(1),
        HirKind::Concat(v) | HirKind::Alternation(v) => {
            v.iter().map(regex_size).fold(0, u64::saturating_add)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn regexes_are_sized_before_they_are_compiled() {
        let small = super::check_regex("^/api/[a-z]+$", false).unwrap();
        assert!(small < 100, "{small}");
        // A repetition multiplies; a Unicode class counts its UTF-8 sequences.
        assert_eq!(
            super::check_regex("^[a-z]{1000}{100}$", false).unwrap_err(),
            "regular expression \"^[a-z]{1000}{100}$\" is too large: it compiles to about \
             100002 states, more than 100000 (a Unicode class such as \\w counts thousands, \
             (?-u:\\w) counts one)"
        );
        let unicode = super::check_regex("\\w{10}", false).unwrap();
        let ascii = super::check_regex("(?-u:\\w){10}", false).unwrap();
        assert!(unicode > 100 * ascii, "{unicode} {ascii}");
        let e = super::check_regex("a(b", false).unwrap_err();
        assert!(e.starts_with("invalid regular expression \"a(b\""), "{e}");
        // Nested repetitions that would overflow are refused, not wrapped.
        assert!(super::check_regex("((a{1000}){1000}){1000}", false).is_err());
    }
}
