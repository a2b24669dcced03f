//! Frontend and backend rules compiled from their typed form: ACLs with their matchers,
//! conditions as OR-of-AND over ACL indices, and actions ready to run.
//!
//! Evaluation allocates nothing unless an action renders a value with samples; literal
//! header values are built once at compile time.

pub mod convert;
pub mod first;
pub mod matcher;
pub mod patref;
pub mod payload;
pub mod sample;

use std::collections::HashMap;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, LOCATION};
use http::{HeaderMap, HeaderName, Response, StatusCode, Uri};
use rampart_config::NamedMap;
use rampart_config::model::AclDef;
use rampart_config::rules::acl::predefined;
use rampart_config::rules::{
    Acl, AclRef, Condition, ConnAction, HeaderAction, LogFormat, MatchMethod, RedirectKind,
    RequestAction, ResponseAction, Segment, StickAction,
};
use rampart_config::stick::DataKind;
use std::sync::Arc;

use crate::body::Body;
use matcher::CompiledMatch;
use sample::{Resolve, Sample, SampleCtx};

use crate::stick::{Table, Trackers, Tracks};

struct AclEntry {
    sample: Sample,
    matcher: CompiledMatch,
}

impl AclEntry {
    fn matches(&self, cx: &SampleCtx<'_>) -> bool {
        self.sample.any(cx, &mut |v| self.matcher.matches(v))
    }
}

/// The ACLs of a frontend (or backend): named ones, predefined ones that are used, and the
/// anonymous ones written in conditions.
#[derive(Default)]
pub struct AclTable {
    /// Each ACL is an OR of definitions.
    defs: Vec<Vec<AclEntry>>,
}

/// A compiled condition.
#[derive(Debug, Clone)]
pub struct Cond {
    unless: bool,
    alternatives: Vec<Vec<(bool, usize)>>,
}

impl Cond {
    pub fn eval(&self, acls: &AclTable, cx: &SampleCtx<'_>) -> bool {
        let any = self.alternatives.iter().any(|terms| {
            terms
                .iter()
                .all(|(negate, i)| acls.defs[*i].iter().any(|e| e.matches(cx)) != *negate)
        });
        any != self.unless
    }
}

fn eval_opt(c: &Option<Cond>, acls: &AclTable, cx: &SampleCtx<'_>) -> bool {
    c.as_ref().is_none_or(|c| c.eval(acls, cx))
}

/// A format string ready to render.
#[derive(Debug, Clone)]
pub struct Fmt {
    segs: Vec<FSeg>,
    literal: Option<HeaderValue>,
}

#[derive(Debug, Clone)]
enum FSeg {
    Lit(Bytes),
    Sample(Sample),
}

impl Fmt {
    /// Renders to bytes.
    pub fn render_bytes(&self, cx: &SampleCtx<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        for s in &self.segs {
            match s {
                FSeg::Lit(b) => out.extend_from_slice(b),
                FSeg::Sample(x) => x.render(cx, &mut out),
            }
        }
        out
    }

    /// Renders to a header value; `None` if the result is not a valid header value.
    pub fn render(&self, cx: &SampleCtx<'_>) -> Option<HeaderValue> {
        if let Some(l) = &self.literal {
            return Some(l.clone());
        }
        HeaderValue::from_maybe_shared(Bytes::from(self.render_bytes(cx))).ok()
    }
}

/// A canned response.
pub struct Reply {
    status: StatusCode,
    content_type: Option<HeaderValue>,
    body: Option<Fmt>,
    headers: Vec<(HeaderName, Fmt)>,
}

impl Reply {
    fn build(&self, cx: &SampleCtx<'_>, default_page: bool) -> Response<Body> {
        let mut resp = match (&self.body, default_page) {
            (Some(b), _) => {
                let body = Bytes::from(b.render_bytes(cx));
                let mut r = Response::new(Body::full(body.clone()));
                r.headers_mut()
                    .insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
                r.headers_mut().insert(
                    CONTENT_TYPE,
                    self.content_type
                        .clone()
                        .unwrap_or(HeaderValue::from_static("text/plain")),
                );
                r
            }
            (None, true) => crate::error::error_response(self.status),
            (None, false) => {
                let mut r = Response::new(Body::empty());
                r.headers_mut().insert(CONTENT_LENGTH, HeaderValue::from(0));
                r
            }
        };
        *resp.status_mut() = self.status;
        for (n, v) in &self.headers {
            if let Some(v) = v.render(cx) {
                resp.headers_mut().append(n.clone(), v);
            }
        }
        resp
    }
}

/// How a header name is matched by `del-header`.
enum NameMatch {
    Exact(HeaderName),
    Beg(String),
    End(String),
    Sub(String),
    Reg(regex::Regex),
}

impl NameMatch {
    fn matches(&self, n: &HeaderName) -> bool {
        let s = n.as_str();
        match self {
            NameMatch::Exact(h) => h == n,
            NameMatch::Beg(p) => s.starts_with(p.as_str()),
            NameMatch::End(p) => s.ends_with(p.as_str()),
            NameMatch::Sub(p) => s.contains(p.as_str()),
            NameMatch::Reg(r) => r.is_match(s),
        }
    }
}

enum HdrAction {
    Set(HeaderName, Fmt),
    Add(HeaderName, Fmt),
    Del(NameMatch),
    Replace(HeaderName, regex::Regex, Fmt),
    ReplaceValue(HeaderName, regex::Regex, Fmt),
}

/// HAProxy writes back-references as `\1`; the regex crate as `${1}`.
fn replacement_template(rendered: &[u8]) -> String {
    let s = String::from_utf8_lossy(rendered);
    let mut out = String::with_capacity(s.len() + 8);
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '$' => out.push_str("$$"),
            '\\' => match chars.peek() {
                Some(d) if d.is_ascii_digit() => {
                    out.push_str("${");
                    out.push(*d);
                    out.push('}');
                    chars.next();
                }
                _ => out.push('\\'),
            },
            _ => out.push(c),
        }
    }
    out
}

impl HdrAction {
    /// Applies the action to `headers`; values are rendered from `cx` first.
    fn apply(
        &self,
        headers: &mut HeaderMap,
        render: &dyn Fn(&Fmt) -> Option<HeaderValue>,
        render_raw: &dyn Fn(&Fmt) -> Vec<u8>,
    ) {
        match self {
            HdrAction::Set(n, f) => {
                if let Some(v) = render(f) {
                    headers.insert(n.clone(), v);
                }
            }
            HdrAction::Add(n, f) => {
                if let Some(v) = render(f) {
                    headers.append(n.clone(), v);
                }
            }
            HdrAction::Del(NameMatch::Exact(n)) => {
                headers.remove(n);
            }
            HdrAction::Del(m) => {
                let names: Vec<HeaderName> =
                    headers.keys().filter(|k| m.matches(k)).cloned().collect();
                for n in names {
                    headers.remove(&n);
                }
            }
            HdrAction::Replace(n, re, f) | HdrAction::ReplaceValue(n, re, f) => {
                let template = replacement_template(&render_raw(f));
                let per_value = matches!(self, HdrAction::ReplaceValue(..));
                let old: Vec<HeaderValue> = headers.get_all(n).iter().cloned().collect();
                if old.is_empty() {
                    return;
                }
                headers.remove(n);
                for v in old {
                    let text = String::from_utf8_lossy(v.as_bytes()).into_owned();
                    let new = if per_value {
                        text.split(',')
                            .map(|part| re.replace(part.trim(), template.as_str()).into_owned())
                            .collect::<Vec<_>>()
                            .join(", ")
                    } else {
                        re.replace(&text, template.as_str()).into_owned()
                    };
                    if let Ok(h) = HeaderValue::from_str(&new) {
                        headers.append(n.clone(), h);
                    }
                }
            }
        }
    }
}

struct Redirect {
    kind: RedirectKind,
    target: Fmt,
    code: StatusCode,
    drop_query: bool,
    append_slash: bool,
}

enum ReqAction {
    Allow,
    Deny(Reply),
    Return(Reply),
    Redirect(Redirect),
    Header(HdrAction),
    SetPath(Fmt),
    SetQuery(Fmt),
    ReplacePath(regex::Regex, Fmt),
    Stick(StickOp),
}

enum ResAction {
    Allow,
    Deny(Reply),
    Header(HdrAction),
    SetStatus(StatusCode, Option<Bytes>),
}

/// A compiled stick-table action.
pub enum StickOp {
    Track {
        slot: u8,
        sample: Sample,
        table: Arc<Table>,
    },
    IncGpc0(u8),
    SetGpt0(u8, u64),
}

impl StickOp {
    /// Runs the action; a `Track` goes in `into` (request or connection counters) unless
    /// the slot already tracks something.
    fn run(&self, cx: &SampleCtx<'_>) -> Option<(u8, Arc<Table>, crate::stick::Key)> {
        match self {
            StickOp::Track {
                slot,
                sample,
                table,
            } => {
                if cx.track.slot(*slot).is_some() {
                    return None;
                }
                let key = table.key_of(&sample.value(cx)?)?;
                Some((*slot, table.clone(), key))
            }
            StickOp::IncGpc0(slot) => {
                if let Some(t) = cx.track.slot(*slot) {
                    t.table.with(&t.key, false, 0, |e| {
                        e.add(DataKind::Gpc0, 1);
                        e.add(DataKind::Gpc0Rate, 1);
                    });
                }
                None
            }
            StickOp::SetGpt0(slot, v) => {
                if let Some(t) = cx.track.slot(*slot) {
                    t.table
                        .with(&t.key, false, 0, |e| e.set(DataKind::Gpt0, *v));
                }
                None
            }
        }
    }
}

enum ConnOp {
    Accept,
    Reject,
    Stick(StickOp),
}

/// A compiled `tcp_request.connection` rule.
pub struct ConnectionRule {
    action: ConnOp,
    cond: Option<Cond>,
}

/// Runs connection rules on a new connection; false when one rejects it. Tracked
/// entries go in `track`.
pub fn run_connection(
    rules: &[ConnectionRule],
    acls: &AclTable,
    conn: &sample::ConnInfo,
    frontend: &str,
    nbsrv: &(dyn Fn(usize) -> usize + Sync),
    track: &mut Trackers,
) -> bool {
    let uri = Uri::from_static("/");
    for rule in rules {
        let todo = {
            let cx = SampleCtx {
                conn,
                frontend,
                method: &http::Method::GET,
                uri: &uri,
                version: http::Version::HTTP_11,
                headers: &NO_HEADERS,
                nbsrv,
                track: Tracks {
                    conn: Some(track),
                    req: None,
                },
                payload: None,
            };
            if !eval_opt(&rule.cond, acls, &cx) {
                continue;
            }
            match &rule.action {
                ConnOp::Accept => return true,
                ConnOp::Reject => return false,
                ConnOp::Stick(op) => op.run(&cx),
            }
        };
        if let Some((slot, table, key)) = todo {
            track.track_conn(slot, &table, key);
        }
    }
    true
}

/// A decision that waits for more of the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Short;

/// What `tcp_request.content` rules decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Reject,
    /// Rule `n` needs more bytes: run again from it once they arrive.
    Wait(usize),
}

/// Runs `tcp_request.content` rules from rule `from` on the client's first bytes. A rule
/// whose condition is false but may hold with more bytes (HAProxy's "may change") makes
/// the rules wait, unless no more will come. Tracked entries go in `track`.
pub fn run_content(
    rules: &[ConnectionRule],
    from: usize,
    acls: &AclTable,
    env: &Env<'_>,
    payload: &payload::Payload<'_>,
    track: &mut Trackers,
) -> Verdict {
    for (i, rule) in rules.iter().enumerate().skip(from) {
        payload.short.set(false);
        let todo = {
            let cx = env.bytes(track, Some(payload));
            if !eval_opt(&rule.cond, acls, &cx) {
                if payload.short.get() && !payload.last {
                    return Verdict::Wait(i);
                }
                continue;
            }
            match &rule.action {
                ConnOp::Accept => return Verdict::Accept,
                ConnOp::Reject => return Verdict::Reject,
                ConnOp::Stick(op) => op.run(&cx),
            }
        };
        if let Some((slot, table, key)) = todo {
            track.track_conn(slot, &table, key);
        }
    }
    Verdict::Accept
}

/// The empty header map of requests that are not HTTP (connection and content rules).
pub(crate) static NO_HEADERS: std::sync::LazyLock<HeaderMap> =
    std::sync::LazyLock::new(HeaderMap::new);

/// A compiled `http_request` rule.
pub struct RequestRule {
    action: ReqAction,
    cond: Option<Cond>,
}

/// A compiled `http_response` rule.
pub struct ResponseRule {
    action: ResAction,
    cond: Option<Cond>,
}

/// Why the proxy answered a request itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intercept {
    Deny,
    Return,
    Redirect,
}

/// Compiles rules for one frontend or backend.
pub struct RuleCompiler<'a> {
    table: AclTable,
    named: HashMap<String, usize>,
    resolve: &'a Resolve<'a>,
}

fn header_name(n: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(n.as_bytes()).map_err(|_| format!("invalid header name {n:?}"))
}

impl<'a> RuleCompiler<'a> {
    /// Starts with the named ACLs of `acls`.
    pub fn new(acls: &NamedMap<AclDef>, resolve: &'a Resolve<'a>) -> Result<Self, String> {
        let mut c = Self {
            table: AclTable::default(),
            named: HashMap::new(),
            resolve,
        };
        for (name, def) in acls.iter() {
            let entries = def
                .0
                .iter()
                .map(|(a, _)| c.entry(a))
                .collect::<Result<Vec<_>, _>>()?;
            c.named.insert(name.to_owned(), c.table.defs.len());
            c.table.defs.push(entries);
        }
        Ok(c)
    }

    fn entry(&self, a: &Acl) -> Result<AclEntry, String> {
        Ok(AclEntry {
            sample: Sample::compile(&a.expr, self.resolve)?,
            matcher: CompiledMatch::compile(a, self.resolve.patterns)?,
        })
    }

    fn acl_ref(&mut self, r: &AclRef) -> Result<usize, String> {
        match r {
            AclRef::Named { name, .. } => {
                if let Some(i) = self.named.get(name) {
                    return Ok(*i);
                }
                let def = predefined(name).ok_or_else(|| format!("unknown ACL {name:?}"))?;
                let e = self.entry(&def)?;
                self.named.insert(name.clone(), self.table.defs.len());
                self.table.defs.push(vec![e]);
                Ok(self.table.defs.len() - 1)
            }
            AclRef::Anonymous(a) => {
                let e = self.entry(a)?;
                self.table.defs.push(vec![e]);
                Ok(self.table.defs.len() - 1)
            }
        }
    }

    pub fn cond(&mut self, c: &Condition) -> Result<Cond, String> {
        let mut alternatives = Vec::with_capacity(c.alternatives.len());
        for terms in &c.alternatives {
            let mut out = Vec::with_capacity(terms.len());
            for t in terms {
                out.push((t.negate, self.acl_ref(&t.acl)?));
            }
            alternatives.push(out);
        }
        Ok(Cond {
            unless: c.unless,
            alternatives,
        })
    }

    fn opt_cond(&mut self, c: &Option<Condition>) -> Result<Option<Cond>, String> {
        c.as_ref().map(|c| self.cond(c)).transpose()
    }

    /// A format for bodies and targets (any bytes).
    pub fn fmt(&self, f: &LogFormat) -> Result<Fmt, String> {
        let segs =
            f.0.iter()
                .map(|s| match s {
                    Segment::Lit(l) => Ok(FSeg::Lit(Bytes::from(l.clone()))),
                    Segment::Sample(e) => Sample::compile(e, self.resolve).map(FSeg::Sample),
                })
                .collect::<Result<Vec<_>, String>>()?;
        let literal = f.as_literal().and_then(|l| HeaderValue::from_str(l).ok());
        Ok(Fmt { segs, literal })
    }

    /// A format for header values: literal text must be a valid header value.
    fn header_fmt(&self, f: &LogFormat) -> Result<Fmt, String> {
        let fmt = self.fmt(f)?;
        match f.as_literal() {
            Some(l) if fmt.literal.is_none() => Err(format!("invalid header value {l:?}")),
            _ => Ok(fmt),
        }
    }

    fn reply(&self, r: &rampart_config::rules::Reply) -> Result<Reply, String> {
        Ok(Reply {
            status: StatusCode::from_u16(r.status).map_err(|e| e.to_string())?,
            content_type: r
                .content_type
                .as_deref()
                .map(|c| {
                    HeaderValue::from_str(c).map_err(|_| format!("invalid content type {c:?}"))
                })
                .transpose()?,
            body: r.body.as_ref().map(|b| self.fmt(b)).transpose()?,
            headers: r
                .headers
                .iter()
                .map(|(n, v)| Ok((header_name(n)?, self.header_fmt(v)?)))
                .collect::<Result<_, String>>()?,
        })
    }

    fn header_action(&self, h: &HeaderAction) -> Result<HdrAction, String> {
        let re = |r: &str| regex::Regex::new(r).map_err(|e| e.to_string());
        Ok(match h {
            HeaderAction::Set { name, value } => {
                HdrAction::Set(header_name(name)?, self.header_fmt(value)?)
            }
            HeaderAction::Add { name, value } => {
                HdrAction::Add(header_name(name)?, self.header_fmt(value)?)
            }
            HeaderAction::Del { name, method } => HdrAction::Del(match method {
                MatchMethod::Beg => NameMatch::Beg(name.to_ascii_lowercase()),
                MatchMethod::End => NameMatch::End(name.to_ascii_lowercase()),
                MatchMethod::Sub => NameMatch::Sub(name.to_ascii_lowercase()),
                MatchMethod::Reg => NameMatch::Reg(
                    regex::RegexBuilder::new(name)
                        .case_insensitive(true)
                        .build()
                        .map_err(|e| e.to_string())?,
                ),
                _ => NameMatch::Exact(header_name(name)?),
            }),
            HeaderAction::Replace {
                name,
                regex,
                replacement,
            } => HdrAction::Replace(header_name(name)?, re(regex)?, self.fmt(replacement)?),
            HeaderAction::ReplaceValue {
                name,
                regex,
                replacement,
            } => HdrAction::ReplaceValue(header_name(name)?, re(regex)?, self.fmt(replacement)?),
        })
    }

    pub fn request_rule(
        &mut self,
        r: &rampart_config::rules::Rule<RequestAction>,
    ) -> Result<RequestRule, String> {
        let action = match &r.action {
            RequestAction::Allow => ReqAction::Allow,
            RequestAction::Deny(rep) => ReqAction::Deny(self.reply(rep)?),
            RequestAction::Return(rep) => ReqAction::Return(self.reply(rep)?),
            RequestAction::Redirect(rd) => ReqAction::Redirect(Redirect {
                kind: rd.kind,
                target: self.fmt(&rd.target)?,
                code: StatusCode::from_u16(rd.code).map_err(|e| e.to_string())?,
                drop_query: rd.drop_query,
                append_slash: rd.append_slash,
            }),
            RequestAction::Header(h) => ReqAction::Header(self.header_action(h)?),
            RequestAction::SetPath(f) => ReqAction::SetPath(self.fmt(f)?),
            RequestAction::SetQuery(f) => ReqAction::SetQuery(self.fmt(f)?),
            RequestAction::ReplacePath { regex, replacement } => ReqAction::ReplacePath(
                regex::Regex::new(regex).map_err(|e| e.to_string())?,
                self.fmt(replacement)?,
            ),
            RequestAction::Stick(a) => ReqAction::Stick(self.stick_action(a)?),
        };
        Ok(RequestRule {
            action,
            cond: self.opt_cond(&r.cond)?,
        })
    }

    /// Compiles a stick-table action.
    pub fn stick_action(&self, a: &StickAction) -> Result<StickOp, String> {
        Ok(match a {
            StickAction::Track { slot, expr, table } => {
                let name = table.as_deref().unwrap_or("");
                let t = (self.resolve.table)(name).ok_or_else(|| {
                    if name.is_empty() {
                        format!("track-sc{slot}: name the table")
                    } else {
                        format!("unknown stick table {name:?}")
                    }
                })?;
                StickOp::Track {
                    slot: *slot,
                    sample: Sample::compile(expr, self.resolve)?,
                    table: t,
                }
            }
            StickAction::IncGpc0 { slot } => StickOp::IncGpc0(*slot),
            StickAction::SetGpt0 { slot, value } => StickOp::SetGpt0(*slot, *value as u64),
        })
    }

    /// Compiles a `tcp_request.connection` rule.
    pub fn connection_rule(
        &mut self,
        r: &rampart_config::rules::Rule<ConnAction>,
    ) -> Result<ConnectionRule, String> {
        let action = match &r.action {
            ConnAction::Accept => ConnOp::Accept,
            ConnAction::Reject => ConnOp::Reject,
            ConnAction::Stick(a) => ConnOp::Stick(self.stick_action(a)?),
        };
        Ok(ConnectionRule {
            action,
            cond: self.opt_cond(&r.cond)?,
        })
    }

    pub fn response_rule(
        &mut self,
        r: &rampart_config::rules::Rule<ResponseAction>,
    ) -> Result<ResponseRule, String> {
        let action = match &r.action {
            ResponseAction::Allow => ResAction::Allow,
            ResponseAction::Deny(rep) => ResAction::Deny(self.reply(rep)?),
            ResponseAction::Header(h) => ResAction::Header(self.header_action(h)?),
            ResponseAction::SetStatus { status, reason } => ResAction::SetStatus(
                StatusCode::from_u16(*status).map_err(|e| e.to_string())?,
                reason.as_ref().map(|r| Bytes::from(r.clone())),
            ),
        };
        Ok(ResponseRule {
            action,
            cond: self.opt_cond(&r.cond)?,
        })
    }

    pub fn finish(self) -> AclTable {
        self.table
    }
}

/// Rebuilds a URI with a new path and/or query, keeping scheme and authority.
fn with_path_query(uri: &Uri, path: Option<&[u8]>, query: Option<Option<&[u8]>>) -> Option<Uri> {
    let p = path.map_or_else(|| uri.path().as_bytes().to_vec(), <[u8]>::to_vec);
    let q: Option<Vec<u8>> = match query {
        Some(q) => q.filter(|q| !q.is_empty()).map(<[u8]>::to_vec),
        None => uri.query().map(|q| q.as_bytes().to_vec()),
    };
    let mut pq = p;
    if pq.first() != Some(&b'/') && pq != b"*" {
        pq.insert(0, b'/');
    }
    if let Some(q) = q {
        pq.push(b'?');
        pq.extend_from_slice(&q);
    }
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(http::uri::PathAndQuery::from_maybe_shared(Bytes::from(pq)).ok()?);
    Uri::from_parts(parts).ok()
}

fn redirect_response(rd: &Redirect, cx: &SampleCtx<'_>) -> Response<Body> {
    let target = rd.target.render_bytes(cx);
    let mut path = cx.uri.path().as_bytes().to_vec();
    if rd.append_slash && path.last() != Some(&b'/') {
        path.push(b'/');
    }
    let query = if rd.drop_query { None } else { cx.uri.query() };
    let mut loc = Vec::with_capacity(target.len() + path.len() + 16);
    match rd.kind {
        RedirectKind::Location => {
            loc.extend_from_slice(&target);
        }
        RedirectKind::Prefix => {
            // A prefix of "/" keeps the path as it is (HAProxy's special case).
            if target != b"/" {
                loc.extend_from_slice(target.strip_suffix(b"/").unwrap_or(&target));
            }
            loc.extend_from_slice(&path);
            if let Some(q) = query {
                loc.push(b'?');
                loc.extend_from_slice(q.as_bytes());
            }
        }
        RedirectKind::Scheme => {
            loc.extend_from_slice(&target);
            loc.extend_from_slice(b"://");
            loc.extend_from_slice(sample::host_of(cx).unwrap_or(b""));
            loc.extend_from_slice(&path);
            if let Some(q) = query {
                loc.push(b'?');
                loc.extend_from_slice(q.as_bytes());
            }
        }
    }
    let mut r = Response::new(Body::empty());
    *r.status_mut() = rd.code;
    let h = r.headers_mut();
    h.insert(CONTENT_LENGTH, HeaderValue::from(0));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_maybe_shared(Bytes::from(loc)) {
        h.insert(LOCATION, v);
    }
    r
}

/// What fetches need besides the request itself.
pub struct Env<'a> {
    pub conn: &'a sample::ConnInfo,
    pub frontend: &'a str,
    pub nbsrv: &'a (dyn Fn(usize) -> usize + Sync),
    /// The connection's stick counters.
    pub conn_track: &'a Trackers,
}

/// The request line of connections that are not HTTP.
static NO_URI: std::sync::LazyLock<Uri> = std::sync::LazyLock::new(|| Uri::from_static("/"));

impl Env<'_> {
    /// Mode tcp: the sample context of a connection without HTTP, with the stick counters
    /// its content rules tracked and the payload while it is inspected.
    pub fn bytes<'b>(
        &'b self,
        req: &'b Trackers,
        payload: Option<&'b payload::Payload<'b>>,
    ) -> SampleCtx<'b> {
        SampleCtx {
            conn: self.conn,
            frontend: self.frontend,
            method: &http::Method::GET,
            uri: &NO_URI,
            version: http::Version::HTTP_11,
            headers: &NO_HEADERS,
            nbsrv: self.nbsrv,
            track: Tracks {
                conn: Some(self.conn_track),
                req: Some(req),
            },
            payload,
        }
    }

    /// The sample context of a request head, with the request's stick counters.
    pub fn cx<'b>(&'b self, parts: &'b http::request::Parts, req: &'b Trackers) -> SampleCtx<'b> {
        self.head(
            &parts.method,
            &parts.uri,
            parts.version,
            &parts.headers,
            req,
        )
    }

    /// The sample context of a whole request, with the request's stick counters.
    pub fn request<'b, B>(&'b self, r: &'b http::Request<B>, req: &'b Trackers) -> SampleCtx<'b> {
        self.head(r.method(), r.uri(), r.version(), r.headers(), req)
    }

    fn head<'b>(
        &'b self,
        method: &'b http::Method,
        uri: &'b Uri,
        version: http::Version,
        headers: &'b http::HeaderMap,
        req: &'b Trackers,
    ) -> SampleCtx<'b> {
        SampleCtx {
            conn: self.conn,
            frontend: self.frontend,
            method,
            uri,
            version,
            headers,
            nbsrv: self.nbsrv,
            track: Tracks {
                conn: Some(self.conn_track),
                req: Some(req),
            },
            payload: None,
        }
    }
}

/// Runs `http_request` rules in order. Returns a response when a rule answers the request.
pub fn run_request(
    rules: &[RequestRule],
    acls: &AclTable,
    parts: &mut http::request::Parts,
    env: &Env<'_>,
    track: &mut Trackers,
) -> Option<(Response<Body>, Intercept)> {
    for rule in rules {
        if !eval_opt(&rule.cond, acls, &env.cx(parts, track)) {
            continue;
        }
        match &rule.action {
            ReqAction::Stick(op) => {
                if let Some((slot, table, key)) = op.run(&env.cx(parts, track)) {
                    track.track_request(slot, &table, key);
                }
            }
            ReqAction::Allow => return None,
            ReqAction::Deny(r) => {
                return Some((r.build(&env.cx(parts, track), true), Intercept::Deny));
            }
            ReqAction::Return(r) => {
                return Some((r.build(&env.cx(parts, track), false), Intercept::Return));
            }
            ReqAction::Redirect(rd) => {
                return Some((
                    redirect_response(rd, &env.cx(parts, track)),
                    Intercept::Redirect,
                ));
            }
            ReqAction::Header(h) => {
                let (rendered, raw) = {
                    let cx = env.cx(parts, track);
                    // Render before mutating: values may read the headers being changed.
                    let v = match h {
                        HdrAction::Set(_, f) | HdrAction::Add(_, f) => f.render(&cx),
                        _ => None,
                    };
                    let raw = match h {
                        HdrAction::Replace(_, _, f) | HdrAction::ReplaceValue(_, _, f) => {
                            f.render_bytes(&cx)
                        }
                        _ => Vec::new(),
                    };
                    (v, raw)
                };
                h.apply(&mut parts.headers, &|_| rendered.clone(), &|_| raw.clone());
            }
            ReqAction::SetPath(f) => {
                let p = f.render_bytes(&env.cx(parts, track));
                if let Some(u) = with_path_query(&parts.uri, Some(&p), None) {
                    parts.uri = u;
                }
            }
            ReqAction::SetQuery(f) => {
                let q = f.render_bytes(&env.cx(parts, track));
                if let Some(u) = with_path_query(&parts.uri, None, Some(Some(&q))) {
                    parts.uri = u;
                }
            }
            ReqAction::ReplacePath(re, f) => {
                let template = replacement_template(&f.render_bytes(&env.cx(parts, track)));
                let new = re.replace(parts.uri.path(), template.as_str()).into_owned();
                if let Some(u) = with_path_query(&parts.uri, Some(new.as_bytes()), None) {
                    parts.uri = u;
                }
            }
        }
    }
    None
}

/// The request line kept for response rules.
pub struct RequestLine<'a> {
    pub method: &'a http::Method,
    pub uri: &'a Uri,
    pub version: http::Version,
}

/// Runs `http_response` rules. `hdr()` reads the response headers. Returns true when a
/// rule denied the response (it is then replaced).
pub fn run_response(
    rules: &[ResponseRule],
    acls: &AclTable,
    resp: &mut Response<Body>,
    req: &RequestLine<'_>,
    env: &Env<'_>,
    track: &Trackers,
) -> bool {
    for rule in rules {
        let cx = SampleCtx {
            conn: env.conn,
            frontend: env.frontend,
            method: req.method,
            uri: req.uri,
            version: req.version,
            headers: resp.headers(),
            nbsrv: env.nbsrv,
            track: Tracks {
                conn: Some(env.conn_track),
                req: Some(track),
            },
            payload: None,
        };
        if !eval_opt(&rule.cond, acls, &cx) {
            continue;
        }
        match &rule.action {
            ResAction::Allow => return false,
            ResAction::Deny(r) => {
                *resp = r.build(&cx, true);
                return true;
            }
            ResAction::SetStatus(s, reason) => {
                *resp.status_mut() = *s;
                match reason {
                    Some(r) => {
                        resp.extensions_mut()
                            .insert(crate::upstream::h1::Reason(r.clone()));
                    }
                    None => {
                        resp.extensions_mut()
                            .remove::<crate::upstream::h1::Reason>();
                    }
                }
            }
            ResAction::Header(h) => {
                let rendered = match h {
                    HdrAction::Set(_, f) | HdrAction::Add(_, f) => f.render(&cx),
                    _ => None,
                };
                let raw = match h {
                    HdrAction::Replace(_, _, f) | HdrAction::ReplaceValue(_, _, f) => {
                        f.render_bytes(&cx)
                    }
                    _ => Vec::new(),
                };
                h.apply(resp.headers_mut(), &|_| rendered.clone(), &|_| raw.clone());
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replacement_template_converts_backrefs() {
        assert_eq!(replacement_template(br"\1-x\2$"), "${1}-x${2}$$");
    }

    #[test]
    fn with_path_query_keeps_authority() {
        let u: Uri = "http://h/a?b=1".parse().unwrap();
        let n = with_path_query(&u, Some(b"/z"), None).unwrap();
        assert_eq!(n.to_string(), "http://h/z?b=1");
        let n = with_path_query(&u, None, Some(Some(b""))).unwrap();
        assert_eq!(n.to_string(), "http://h/a");
    }
}
