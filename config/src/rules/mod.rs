//! The rule language: HAProxy's ACL and action grammar, parsed at load time into typed form.

pub mod acl;
pub mod action;
pub mod fetch;
pub mod lexer;
pub mod logfmt;

pub use acl::{Acl, AclRef, Condition, IntMatch, IpNet, Patterns, Term};
pub use action::{
    ConnAction, HeaderAction, Redirect, RedirectKind, Reply, RequestAction, ResponseAction, Rule,
    StickAction,
};
pub use fetch::{Converter, Fetch, MatchMethod, SampleExpr, SampleType, ScFetch, ScOp, ScSource};
pub use lexer::RuleError;
pub use logfmt::{LogFormat, Segment};

/// A regex error on one line (the `regex` crate's syntax errors span several).
pub(crate) fn regex_error(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().trim_start_matches("error: ").to_owned())
        .unwrap_or(text)
}
