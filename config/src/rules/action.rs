//! `http_request` and `http_response` rules: an action, its arguments, and an optional
//! condition, as HAProxy writes them (`deny status 403 if { path_beg /admin } !internal`).

use super::acl::{Condition, PatternFiles, parse_condition};
use super::fetch::MatchMethod;
use super::lexer::{RuleError, Token, Tokens};
use super::logfmt::{LogFormat, parse_logformat};
use crate::rules::fetch::Layer;

/// A canned response: `deny`, `return`.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Option<LogFormat>,
    pub headers: Vec<(String, LogFormat)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirectKind {
    /// `Location` is the target itself.
    Location,
    /// `Location` is the target followed by the original path and query.
    Prefix,
    /// `Location` is `scheme://host` followed by the original path and query.
    Scheme,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Redirect {
    pub kind: RedirectKind,
    pub target: LogFormat,
    pub code: u16,
    pub drop_query: bool,
    pub append_slash: bool,
}

/// Header edits, shared by request and response rules.
#[derive(Debug, Clone, PartialEq)]
pub enum HeaderAction {
    /// Removes every value of the header, then adds this one.
    Set { name: String, value: LogFormat },
    /// Adds a value, keeping existing ones.
    Add { name: String, value: LogFormat },
    /// Removes headers whose name matches (`-m str|beg|end|sub|reg`, case-insensitive).
    Del { name: String, method: MatchMethod },
    /// Rewrites whole header values matching a regex.
    Replace {
        name: String,
        regex: String,
        replacement: LogFormat,
    },
    /// Rewrites each comma-separated value matching a regex.
    ReplaceValue {
        name: String,
        regex: String,
        replacement: LogFormat,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum RequestAction {
    /// Stops rule evaluation; the request goes on.
    Allow,
    Deny(Reply),
    Return(Reply),
    Redirect(Redirect),
    Header(HeaderAction),
    SetPath(LogFormat),
    SetQuery(LogFormat),
    ReplacePath {
        regex: String,
        replacement: LogFormat,
    },
    /// Stick-table actions, shared with connection rules.
    Stick(StickAction),
}

/// `track-sc0 src table per_ip`, `sc-inc-gpc0(0)`, `sc-set-gpt0(1) 5`.
#[derive(Debug, Clone, PartialEq)]
pub enum StickAction {
    /// Tracks the key in counter slot `slot` (0-2); the table defaults to the only
    /// table there is.
    Track {
        slot: u8,
        expr: crate::rules::SampleExpr,
        table: Option<String>,
    },
    IncGpc0 {
        slot: u8,
    },
    SetGpt0 {
        slot: u8,
        value: i64,
    },
}

/// A `tcp_request.connection` action, run when a connection is accepted (before TLS).
#[derive(Debug, Clone, PartialEq)]
pub enum ConnAction {
    Accept,
    Reject,
    Stick(StickAction),
}

/// Parses the stick-table actions; `None` when `name` is not one.
fn parse_stick_action(name: &Token, a: &mut Args) -> Result<Option<StickAction>, RuleError> {
    let slot_of = |prefix: &str| -> Result<Option<u8>, RuleError> {
        let Some(rest) = name.text.strip_prefix(prefix) else {
            return Ok(None);
        };
        let digits = rest
            .strip_prefix('(')
            .and_then(|r| r.strip_suffix(')'))
            .unwrap_or(rest);
        match digits {
            "0" => Ok(Some(0)),
            "1" => Ok(Some(1)),
            "2" => Ok(Some(2)),
            _ => Err(RuleError::new(
                name.offset,
                format!("{:?}: the counter slot must be 0, 1 or 2", name.text),
            )),
        }
    };
    if let Some(slot) = slot_of("track-sc")? {
        let f = a.next("a sample fetch")?;
        let (expr, _) = crate::rules::fetch::parse_sample(&f.text, a.files)
            .map_err(|m| RuleError::new(f.offset, m))?;
        let mut table = None;
        if a.peek().is_some_and(|t| t.text == "table") {
            a.at += 1;
            table = Some(a.next("a table name")?.text);
        }
        return Ok(Some(StickAction::Track { slot, expr, table }));
    }
    if let Some(slot) = slot_of("sc-inc-gpc0")? {
        return Ok(Some(StickAction::IncGpc0 { slot }));
    }
    if let Some(slot) = slot_of("sc-set-gpt0")? {
        let v = a.next("a value")?;
        let value = v
            .text
            .parse::<i64>()
            .ok()
            .filter(|n| u32::try_from(*n).is_ok())
            .ok_or_else(|| {
                RuleError::new(
                    v.offset,
                    format!("invalid gpt0 value {:?} (0 to 4294967295)", v.text),
                )
            })?;
        return Ok(Some(StickAction::SetGpt0 { slot, value }));
    }
    Ok(None)
}

#[derive(Debug, Clone, PartialEq)]
pub enum ResponseAction {
    Allow,
    /// Replaces the server's response (502 by default).
    Deny(Reply),
    Header(HeaderAction),
    SetStatus {
        status: u16,
        reason: Option<String>,
    },
}

/// A rule: action and optional condition.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule<A> {
    pub action: A,
    pub cond: Option<Condition>,
}

fn status_arg(t: &Token, allowed: impl Fn(u16) -> bool, what: &str) -> Result<u16, RuleError> {
    t.text
        .parse::<u16>()
        .ok()
        .filter(|s| allowed(*s))
        .ok_or_else(|| RuleError::new(t.offset, format!("invalid {what} {:?}", t.text)))
}

fn header_name(t: &Token) -> Result<String, RuleError> {
    http::HeaderName::from_bytes(t.text.as_bytes())
        .map(|h| h.as_str().to_owned())
        .map_err(|_| RuleError::new(t.offset, format!("invalid header name {:?}", t.text)))
}

fn regex_arg(t: &Token, files: &dyn PatternFiles) -> Result<String, RuleError> {
    super::check_regex(&t.text, false)
        .and_then(|size| files.regex(size))
        .map(|()| t.text.clone())
        .map_err(|e| RuleError::new(t.offset, e))
}

struct Args<'f> {
    words: Vec<Token>,
    at: usize,
    end: usize,
    /// Reads the map files converters name.
    files: &'f dyn PatternFiles,
}

impl Args<'_> {
    /// The next word as a log-format string.
    fn format(&mut self, what: &str) -> Result<LogFormat, RuleError> {
        let t = self.next(what)?;
        parse_logformat(&t.text, self.files)
            .map_err(|(off, m)| RuleError::new(t.offset + off + usize::from(t.quoted), m))
    }

    fn next(&mut self, what: &str) -> Result<Token, RuleError> {
        let t = self.words.get(self.at).cloned();
        self.at += 1;
        t.ok_or_else(|| RuleError::new(self.end, format!("missing {what}")))
    }
    fn peek(&self) -> Option<&Token> {
        self.words.get(self.at)
    }
    fn done(&self) -> Result<(), RuleError> {
        match self.peek() {
            None => Ok(()),
            Some(t) => Err(RuleError::new(
                t.offset,
                format!(
                    "unexpected {:?} (a condition starts with 'if' or 'unless')",
                    t.text
                ),
            )),
        }
    }
}

fn is_http_status(s: u16) -> bool {
    (200..=599).contains(&s)
}

fn parse_reply(a: &mut Args, default_status: u16, deny: bool) -> Result<Reply, RuleError> {
    let mut r = Reply {
        status: default_status,
        content_type: None,
        body: None,
        headers: Vec::new(),
    };
    while let Some(t) = a.peek().cloned() {
        a.at += 1;
        match t.text.as_str() {
            "status" => r.status = status_arg(&a.next("a status code")?, is_http_status, "status")?,
            "deny_status" if deny => {
                r.status = status_arg(&a.next("a status code")?, is_http_status, "status")?
            }
            "content-type" => r.content_type = Some(a.next("a content type")?.text),
            "string" => {
                let s = a.next("a string")?;
                r.body = Some(LogFormat(vec![super::logfmt::Segment::Lit(s.text)]));
            }
            "lf-string" => r.body = Some(a.format("a format string")?),
            "hdr" => {
                let n = header_name(&a.next("a header name")?)?;
                let v = a.format("a header value")?;
                r.headers.push((n, v));
            }
            other => {
                return Err(RuleError::new(
                    t.offset,
                    format!(
                        "unexpected {other:?}: expected status, content-type, string, lf-string or hdr"
                    ),
                ));
            }
        }
    }
    Ok(r)
}

fn parse_header_action(
    name: &str,
    a: &mut Args,
    files: &dyn PatternFiles,
) -> Result<Option<HeaderAction>, RuleError> {
    Ok(Some(match name {
        "set-header" | "add-header" => {
            let n = header_name(&a.next("a header name")?)?;
            let v = a.format("a header value")?;
            if name == "set-header" {
                HeaderAction::Set { name: n, value: v }
            } else {
                HeaderAction::Add { name: n, value: v }
            }
        }
        "del-header" => {
            let n = a.next("a header name")?;
            let mut method = MatchMethod::Str;
            if a.peek().is_some_and(|t| t.text == "-m") {
                a.at += 1;
                let m = a.next("a match method")?;
                method = match MatchMethod::from_name(&m.text) {
                    Some(
                        mm @ (MatchMethod::Str
                        | MatchMethod::Beg
                        | MatchMethod::End
                        | MatchMethod::Sub
                        | MatchMethod::Reg),
                    ) => mm,
                    _ => {
                        return Err(RuleError::new(
                            m.offset,
                            format!(
                                "del-header supports -m str, beg, end, sub or reg, not {:?}",
                                m.text
                            ),
                        ));
                    }
                };
            }
            let name = if method == MatchMethod::Reg {
                regex_arg(&n, files)?
            } else if method == MatchMethod::Str {
                header_name(&n)?
            } else {
                n.text.to_ascii_lowercase()
            };
            HeaderAction::Del { name, method }
        }
        "replace-header" | "replace-value" => {
            let n = header_name(&a.next("a header name")?)?;
            let regex = regex_arg(&a.next("a regular expression")?, files)?;
            let replacement = a.format("a replacement")?;
            if name == "replace-header" {
                HeaderAction::Replace {
                    name: n,
                    regex,
                    replacement,
                }
            } else {
                HeaderAction::ReplaceValue {
                    name: n,
                    regex,
                    replacement,
                }
            }
        }
        _ => return Ok(None),
    }))
}

const REQUEST_ACTIONS: &[&str] = &[
    "allow",
    "deny",
    "return",
    "redirect",
    "set-header",
    "add-header",
    "del-header",
    "replace-header",
    "replace-value",
    "set-path",
    "set-query",
    "replace-path",
    "track-sc0",
    "track-sc1",
    "track-sc2",
    "sc-inc-gpc0",
    "sc-set-gpt0",
];
const CONNECTION_ACTIONS: &[&str] = &[
    "accept",
    "reject",
    "track-sc0",
    "track-sc1",
    "track-sc2",
    "sc-inc-gpc0",
    "sc-set-gpt0",
];
const RESPONSE_ACTIONS: &[&str] = &[
    "allow",
    "deny",
    "set-header",
    "add-header",
    "del-header",
    "replace-header",
    "replace-value",
    "set-status",
];

fn split_rule<'f>(
    text: &str,
    files: &'f dyn PatternFiles,
) -> Result<(Token, Args<'f>, Tokens), RuleError> {
    let mut toks = Tokens::new(text)?;
    let end = toks.end();
    let name = toks.expect("an action")?;
    let words = toks.until_condition();
    Ok((
        name,
        Args {
            words,
            at: 0,
            end,
            files,
        },
        toks,
    ))
}

fn finish<A>(
    action: A,
    a: &Args,
    mut rest: Tokens,
    files: &dyn PatternFiles,
) -> Result<Rule<A>, RuleError> {
    a.done()?;
    let cond = if rest.is_empty() {
        None
    } else {
        Some(parse_condition(&mut rest, files)?)
    };
    Ok(Rule { action, cond })
}

fn unknown_action(name: &Token, known: &[&str]) -> RuleError {
    let hint = crate::error::nearest(&name.text, known.iter().copied())
        .map(|n| format!(" (did you mean {n:?}?)"))
        .unwrap_or_else(|| format!(" (known: {})", known.join(", ")));
    RuleError::new(name.offset, format!("unknown action {:?}{hint}", name.text))
}

/// Parses an `http_request` rule.
pub fn parse_request_rule(
    text: &str,
    files: &dyn PatternFiles,
) -> Result<Rule<RequestAction>, RuleError> {
    let (name, mut a, rest) = split_rule(text, files)?;
    let action = match name.text.as_str() {
        "allow" => RequestAction::Allow,
        "deny" => RequestAction::Deny(parse_reply(&mut a, 403, true)?),
        "return" => RequestAction::Return(parse_reply(&mut a, 200, false)?),
        "redirect" => {
            let k = a.next("location, prefix or scheme")?;
            let kind = match k.text.as_str() {
                "location" => RedirectKind::Location,
                "prefix" => RedirectKind::Prefix,
                "scheme" => RedirectKind::Scheme,
                other => {
                    return Err(RuleError::new(
                        k.offset,
                        format!("expected location, prefix or scheme, found {other:?}"),
                    ));
                }
            };
            let target = a.format("a redirect target")?;
            let mut r = Redirect {
                kind,
                target,
                code: 302,
                drop_query: false,
                append_slash: false,
            };
            while let Some(t) = a.peek().cloned() {
                a.at += 1;
                match t.text.as_str() {
                    "code" => {
                        r.code = status_arg(
                            &a.next("a redirect code")?,
                            |c| matches!(c, 301 | 302 | 303 | 307 | 308),
                            "redirect code (301, 302, 303, 307 or 308)",
                        )?
                    }
                    "drop-query" => r.drop_query = true,
                    "append-slash" => r.append_slash = true,
                    other => {
                        return Err(RuleError::new(
                            t.offset,
                            format!(
                                "unexpected {other:?}: expected code, drop-query or append-slash"
                            ),
                        ));
                    }
                }
            }
            RequestAction::Redirect(r)
        }
        "set-path" => RequestAction::SetPath(a.format("a path")?),
        "set-query" => RequestAction::SetQuery(a.format("a query string")?),
        "replace-path" => {
            let regex = regex_arg(&a.next("a regular expression")?, files)?;
            let replacement = a.format("a replacement")?;
            RequestAction::ReplacePath { regex, replacement }
        }
        other => match parse_header_action(other, &mut a, files)? {
            Some(h) => RequestAction::Header(h),
            None => match parse_stick_action(&name, &mut a)? {
                Some(s) => RequestAction::Stick(s),
                None => return Err(unknown_action(&name, REQUEST_ACTIONS)),
            },
        },
    };
    finish(action, &a, rest, files)
}

/// Parses a rule with the actions of `tcp_request` rules, before the checks of what its
/// fetches may read.
fn parse_conn_actions(text: &str, files: &dyn PatternFiles) -> Result<Rule<ConnAction>, RuleError> {
    let (name, mut a, rest) = split_rule(text, files)?;
    let action = match name.text.as_str() {
        "accept" => ConnAction::Accept,
        "reject" => ConnAction::Reject,
        _ => match parse_stick_action(&name, &mut a)? {
            Some(s) => ConnAction::Stick(s),
            None => return Err(unknown_action(&name, CONNECTION_ACTIONS)),
        },
    };
    finish(action, &a, rest, files)
}

/// The first fetch of a `tcp_request` rule (its track key, then its condition) that
/// reads more than `layer`.
fn fetch_above(rule: &Rule<ConnAction>, layer: Layer) -> Option<String> {
    let key = match &rule.action {
        ConnAction::Stick(StickAction::Track { expr, .. }) if expr.fetch.layer() > layer => {
            Some(expr.fetch.to_string())
        }
        _ => None,
    };
    key.or_else(|| rule.cond.as_ref()?.fetch_above(layer))
}

/// Parses a `tcp_request.connection` rule.
pub fn parse_connection_rule(
    text: &str,
    files: &dyn PatternFiles,
) -> Result<Rule<ConnAction>, RuleError> {
    let rule = parse_conn_actions(text, files)?;
    // Only the connection is known at accept time.
    if let Some(f) = fetch_above(&rule, Layer::Connection) {
        return Err(RuleError::new(
            0,
            format!(
                "{f} needs an HTTP request; connection rules can use src, dst, ports and stick counters only"
            ),
        ));
    }
    Ok(rule)
}

/// Parses a `tcp_request.content` rule: the actions of connection rules, with the
/// payload and the client's TLS handshake or PROXY header readable too.
pub fn parse_content_rule(
    text: &str,
    files: &dyn PatternFiles,
) -> Result<Rule<ConnAction>, RuleError> {
    let rule = parse_conn_actions(text, files)?;
    if let Some(f) = fetch_above(&rule, Layer::Payload) {
        return Err(RuleError::new(
            0,
            format!(
                "{f} needs an HTTP request; content rules can use the connection, its TLS handshake and the payload (req.len, req.ssl_sni, req.ssl_hello_type)"
            ),
        ));
    }
    Ok(rule)
}

/// Parses an `http_response` rule.
pub fn parse_response_rule(
    text: &str,
    files: &dyn PatternFiles,
) -> Result<Rule<ResponseAction>, RuleError> {
    let (name, mut a, rest) = split_rule(text, files)?;
    let action = match name.text.as_str() {
        "allow" => ResponseAction::Allow,
        "deny" => ResponseAction::Deny(parse_reply(&mut a, 502, true)?),
        "set-status" => {
            let status = status_arg(
                &a.next("a status code")?,
                |s| (100..=599).contains(&s),
                "status",
            )?;
            let mut reason = None;
            if a.peek().is_some_and(|t| t.text == "reason") {
                a.at += 1;
                reason = Some(a.next("a reason phrase")?.text);
            }
            ResponseAction::SetStatus { status, reason }
        }
        other => match parse_header_action(other, &mut a, files)? {
            Some(h) => ResponseAction::Header(h),
            None => return Err(unknown_action(&name, RESPONSE_ACTIONS)),
        },
    };
    finish(action, &a, rest, files)
}

#[cfg(test)]
mod tests {
    use super::super::acl::NoFiles;
    use super::*;

    #[test]
    fn parse_request_rules() {
        let r =
            parse_request_rule("deny status 429 if { path_beg /api } !internal", &NoFiles).unwrap();
        let RequestAction::Deny(reply) = &r.action else {
            panic!()
        };
        assert_eq!(reply.status, 429);
        assert_eq!(r.cond.unwrap().alternatives[0].len(), 2);
        let r = parse_request_rule("redirect scheme https code 301 unless { ssl_fc }", &NoFiles)
            .unwrap();
        let RequestAction::Redirect(rd) = &r.action else {
            panic!()
        };
        assert_eq!((rd.kind, rd.code), (RedirectKind::Scheme, 301));
        assert!(r.cond.unwrap().unless);
        let r = parse_request_rule(
            r#"return status 200 content-type text/plain string "ok\n" hdr X-A b"#,
            &NoFiles,
        )
        .unwrap();
        let RequestAction::Return(reply) = r.action else {
            panic!()
        };
        assert_eq!(reply.headers[0].0, "x-a");
        let r = parse_request_rule("del-header x-debug- -m beg", &NoFiles).unwrap();
        assert_eq!(
            r.action,
            RequestAction::Header(HeaderAction::Del {
                name: "x-debug-".into(),
                method: MatchMethod::Beg
            })
        );
        assert!(
            parse_request_rule("allow", &NoFiles)
                .unwrap()
                .cond
                .is_none()
        );
    }

    #[test]
    fn parse_request_rule_errors() {
        let e = parse_request_rule("dney", &NoFiles).unwrap_err();
        assert!(e.message.contains("did you mean \"deny\""), "{}", e.message);
        let e = parse_request_rule("deny status 99", &NoFiles).unwrap_err();
        assert_eq!(e.offset, 12);
        let e = parse_request_rule("set-header X-A", &NoFiles).unwrap_err();
        assert!(e.message.contains("missing a header value"));
        let e = parse_request_rule("redirect location /x code 200", &NoFiles).unwrap_err();
        assert!(e.message.contains("redirect code"));
        let e = parse_request_rule("allow sometimes", &NoFiles).unwrap_err();
        assert!(e.message.contains("unexpected \"sometimes\""));
        let e = parse_request_rule("set-header X-A %[sr]", &NoFiles).unwrap_err();
        assert!(e.message.contains("did you mean \"src\""), "{}", e.message);
        assert_eq!(e.offset, 17);
    }

    #[test]
    fn parse_stick_actions() {
        let r = parse_request_rule("track-sc0 src,ipmask(24) table per_ip", &NoFiles).unwrap();
        let RequestAction::Stick(StickAction::Track { slot, expr, table }) = r.action else {
            panic!()
        };
        assert_eq!((slot, table.as_deref()), (0, Some("per_ip")));
        assert_eq!(expr.converters.len(), 1);
        let r = parse_request_rule("sc-inc-gpc0(1) if { path /x }", &NoFiles).unwrap();
        assert_eq!(
            r.action,
            RequestAction::Stick(StickAction::IncGpc0 { slot: 1 })
        );
        let r = parse_request_rule("sc-set-gpt0(2) 7", &NoFiles).unwrap();
        assert_eq!(
            r.action,
            RequestAction::Stick(StickAction::SetGpt0 { slot: 2, value: 7 })
        );
        assert!(parse_request_rule("track-sc3 src", &NoFiles).is_err());
        assert!(parse_request_rule("track-sc0", &NoFiles).is_err());
        let c = parse_connection_rule("reject if { sc0_conn_cur gt 10 }", &NoFiles).unwrap();
        assert_eq!(c.action, ConnAction::Reject);
        let e = parse_connection_rule("track-sc0 hdr(x-key)", &NoFiles).unwrap_err();
        assert!(e.message.contains("needs an HTTP request"), "{}", e.message);
        let e = parse_connection_rule("reject if { path /x }", &NoFiles).unwrap_err();
        assert!(e.message.contains("needs an HTTP request"), "{}", e.message);
    }

    #[test]
    fn parse_response_rules() {
        let r = parse_response_rule(
            "set-status 503 reason \"Busy now\" if { always_true }",
            &NoFiles,
        )
        .unwrap();
        assert_eq!(
            r.action,
            ResponseAction::SetStatus {
                status: 503,
                reason: Some("Busy now".into())
            }
        );
        assert!(parse_response_rule("redirect location /", &NoFiles).is_err());
    }
}
