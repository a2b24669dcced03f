//! Routes: which backend serves a request once the frontend's rules have run.
//!
//! A frontend has two kinds of routes, tried in this order:
//! - `virtual_hosts` (Envoy's model): the request's `Host` picks one virtual host (exact
//!   name, then the longest `*.suffix`, then the longest `prefix*`, then `*`), and only
//!   that host's routes are tried, first match wins;
//! - `use_backend` (HAProxy's model): entries tried in order, first match wins;
//!
//! then `default_backend`. A route sends requests to one backend or splits them by weight,
//! and may carry its own request and response rules (run only for requests that take the
//! route), retries, server timeout and hash key.

use std::time::Duration;

use crate::config_struct;
use crate::decode::{Cx, Decode, NamedMap, Schema, Spanned};
use crate::error::Pos;
use crate::model::{RuleDef, SampleDef, files_for, offset_pos, rule_error, text_pos};
use crate::resilience::Retries;
use crate::rules::lexer::Tokens;
use crate::rules::{RequestAction, ResponseAction};
use crate::yaml::{Node, NodeKind};

/// A backend choice: `NAME [if|unless COND]`, or a mapping with a backend or a weighted
/// split and per-route overrides.
#[derive(Debug, Clone, PartialEq)]
pub struct UseBackend {
    pub target: BackendTarget,
    pub cond: Option<crate::rules::Condition>,
    /// Where the condition text starts (offsets in the condition are relative to it).
    pub pos: Pos,
    pub retries: Option<Retries>,
    pub timeout: Option<Duration>,
    /// Request rules run for requests that take this route, after the frontend's.
    pub http_request: Vec<RuleDef<RequestAction>>,
    /// Response rules run for responses to requests that took this route, before the
    /// frontend's.
    pub http_response: Vec<RuleDef<ResponseAction>>,
    /// What a hashing backend (`maglev`) hashes for this route, instead of the backend's
    /// `hash_key`; several keys are combined, those without a value are skipped.
    pub hash_key: Vec<Spanned<SampleDef>>,
}

impl UseBackend {
    /// A route to `backend` for every request.
    pub fn to(backend: &str) -> Self {
        Self {
            target: BackendTarget::One(Spanned {
                value: backend.to_owned(),
                pos: Pos::default(),
            }),
            cond: None,
            pos: Pos::default(),
            retries: None,
            timeout: None,
            http_request: Vec::new(),
            http_response: Vec::new(),
            hash_key: Vec::new(),
        }
    }
}

/// Where a route sends requests.
#[derive(Debug, Clone, PartialEq)]
pub enum BackendTarget {
    One(Spanned<String>),
    /// Weighted split: each request goes to one of these, in proportion to the weights.
    Split(Vec<(Spanned<String>, u32)>),
    /// A backend named at request time by a log-format string (`%[...]`), usually a map
    /// lookup: a name that is no backend falls back to the default backend.
    Dynamic(Spanned<crate::rules::LogFormat>),
    /// No backend: the route's request rules answer (`return`, `redirect`, `deny`); a
    /// request they let through gets 503.
    None,
}

config_struct! {
    /// A `use_backend` entry written as a mapping: one backend or a weighted split, an
    /// optional condition, and per-route rules, retries, timeout and hash key.
    pub struct RouteDef {
        pub backend: Option<Spanned<String>>,
        pub split: NamedMap<u32>,
        pub cond_if as "if": Option<String>,
        pub cond_unless as "unless": Option<String>,
        /// Retries for requests taking this route, instead of the backend's.
        pub retries: Option<Retries>,
        /// Server timeout for requests taking this route, instead of the backend's.
        pub timeout: Option<Duration>,
        /// Request rules for requests taking this route, run after the frontend's.
        pub http_request: Vec<RuleDef<RequestAction>>,
        /// Response rules for requests that took this route, run before the frontend's.
        pub http_response: Vec<RuleDef<ResponseAction>>,
        /// What a `maglev` backend hashes for this route (one key or a list).
        pub hash_key: Vec<Spanned<SampleDef>>,
    }
}

/// A backend name, or a log-format string (`%[...]`) that names one at request time.
fn target_of(
    name: Spanned<String>,
    cx: &mut Cx,
    files: &dyn crate::rules::acl::PatternFiles,
) -> Option<BackendTarget> {
    if !name.value.contains("%[") {
        return Some(BackendTarget::One(name));
    }
    match crate::rules::logfmt::parse_logformat(&name.value, files) {
        Ok(f) => Some(BackendTarget::Dynamic(Spanned {
            value: f,
            pos: name.pos,
        })),
        Err((off, m)) => {
            cx.error(offset_pos(name.pos, off), m);
            None
        }
    }
}

impl Decode for UseBackend {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        let files = files_for(cx);
        if let NodeKind::Scalar { value, .. } = &node.kind {
            let mut toks = match Tokens::new(value) {
                Ok(t) => t,
                Err(e) => {
                    rule_error(cx, node, e);
                    return None;
                }
            };
            let Some(name) = toks.next() else {
                cx.error(node.pos, "expected a backend name");
                return None;
            };
            let start = text_pos(node);
            let cond = if toks.is_empty() {
                None
            } else {
                match crate::rules::acl::parse_condition(&mut toks, files.as_ref()) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        rule_error(cx, node, e);
                        return None;
                    }
                }
            };
            let mut route = UseBackend::to(&name.text);
            route.target = target_of(
                Spanned {
                    value: name.text,
                    pos: offset_pos(start, name.offset),
                },
                cx,
                files.as_ref(),
            )?;
            route.cond = cond;
            route.pos = start;
            return Some(route);
        }
        let def = RouteDef::decode(node, cx)?;
        let target = match (&def.backend, def.split.is_empty()) {
            (Some(b), true) => target_of(b.clone(), cx, files.as_ref())?,
            (None, false) => BackendTarget::Split(def.split.entries().to_vec()),
            (Some(_), false) => {
                cx.error(node.pos, "use either 'backend' or 'split', not both");
                return None;
            }
            (None, true) if !def.http_request.is_empty() => BackendTarget::None,
            (None, true) => {
                cx.error(
                    node.pos,
                    "a route needs 'backend', a non-empty 'split', or 'http_request' rules that answer",
                );
                return None;
            }
        };
        let (text, prefix) = match (&def.cond_if, &def.cond_unless) {
            (Some(_), Some(_)) => {
                cx.error(node.pos, "use either 'if' or 'unless', not both");
                return None;
            }
            (Some(c), None) => (Some(c.as_str()), "if "),
            (None, Some(c)) => (Some(c.as_str()), "unless "),
            (None, None) => (None, ""),
        };
        let cond_node = match &node.kind {
            NodeKind::Map(e) => e
                .iter()
                .find(|(k, _)| matches!(k.as_str(), Some("if" | "unless")))
                .map(|(_, v)| v),
            _ => None,
        };
        let cond_start = cond_node.map_or(node.pos, text_pos);
        let cond = match text {
            None => None,
            Some(c) => {
                let full = format!("{prefix}{c}");
                let parsed = Tokens::new(&full)
                    .and_then(|mut t| crate::rules::acl::parse_condition(&mut t, files.as_ref()));
                match parsed {
                    Ok(c) => Some(c),
                    Err(e) => {
                        let off = e.offset.saturating_sub(prefix.len());
                        cx.error(offset_pos(cond_start, off), e.message);
                        return None;
                    }
                }
            }
        };
        Some(UseBackend {
            target,
            retries: def.retries,
            timeout: def.timeout,
            cond,
            // Condition offsets count from the inserted prefix.
            pos: Pos {
                line: cond_start.line,
                col: cond_start.col.saturating_sub(prefix.len() as u32),
            },
            http_request: def.http_request,
            http_response: def.http_response,
            hash_key: def.hash_key,
        })
    }
    fn schema() -> Schema {
        RouteDef::schema()
    }
}

config_struct! {
    /// A virtual host: the host names it serves and its routes, tried in order.
    pub struct VirtualHost {
        /// Host names (`Host` header, compared without case): exact names, `*.suffix`,
        /// `prefix*` or `*`. A name with a port matches only that port.
        pub domains: Vec<Spanned<String>>,
        /// Routes, as `use_backend` entries; the first that matches takes the request.
        pub routes: Vec<UseBackend>,
    }
}

/// How a virtual host domain matches a host name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainMatch {
    Exact(String),
    /// `*.example.com` (stored as `.example.com`): the host ends with it and is longer.
    Suffix(String),
    /// `www.*` (stored as `www.`): the host starts with it and is longer.
    Prefix(String),
    Any,
}

impl DomainMatch {
    /// Parses a domain as Envoy reads it; `*` may only be alone, first or last.
    pub fn parse(domain: &str) -> Result<Self, String> {
        let d = domain.to_ascii_lowercase();
        if d.is_empty() {
            return Err("empty domain".to_owned());
        }
        if d.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(format!("invalid domain {domain:?}"));
        }
        let stars = d.matches('*').count();
        if d == "*" {
            return Ok(Self::Any);
        }
        match (stars, d.strip_prefix('*'), d.strip_suffix('*')) {
            (0, _, _) => Ok(Self::Exact(d)),
            (1, Some(rest), _) => Ok(Self::Suffix(rest.to_owned())),
            (1, _, Some(rest)) => Ok(Self::Prefix(rest.to_owned())),
            _ => Err(format!(
                "invalid domain {domain:?}: '*' may only be the first or last character"
            )),
        }
    }
}
