//! Sample fetches evaluated against a request (or, in response rules, against the
//! response headers with the request line kept).

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::{HeaderMap, HeaderName, Method, Uri, Version};
use rampart_config::rules::{Converter, Fetch, SampleExpr, ScOp, ScSource};
use rampart_config::stick::DataKind;

use super::patref::{Expr, ExprKey, Out, PatRef, RefKind};
use crate::stick::{Table, Tracks};
use rampart_config::rules::PatFile;

use crate::http1::encode::version_str;

/// The connection a request arrived on.
#[derive(Debug)]
pub struct ConnInfo {
    /// The TCP connection's peer: the client, or a load balancer that sends a PROXY
    /// header.
    pub peer: SocketAddr,
    /// The TCP connection's local address.
    pub sock: SocketAddr,
    pub tls: bool,
    /// What the connection's start learnt (kept apart, and only when there is something,
    /// so that a plain connection's context stays small).
    facts: std::sync::OnceLock<Box<Facts>>,
}

/// What a connection's start learnt: its TLS handshake, its PROXY header, and the stick
/// counters its `tcp_request.connection` rules track.
#[derive(Default)]
pub struct Facts {
    /// The server name a TLS client asked for.
    pub sni: Option<Arc<str>>,
    /// The ALPN protocol a TLS client chose.
    pub alpn: Option<Alpn>,
    /// What the connection's PROXY header said (`accept_proxy`); boxed, so that a TLS
    /// connection without one keeps a few words here rather than its 136 bytes.
    pub proxied: Option<Box<crate::proxy_protocol::Proxied>>,
    /// The certificate the TLS client sent, verified (`verify: optional|required`);
    /// boxed, so that connections without one do not pay for its room.
    pub client_cert: Option<Box<crate::tls::client_cert::ClientCert>>,
    /// Stick counters tracked by `tcp_request.connection` rules.
    pub track: Option<Box<crate::stick::Trackers>>,
}

impl std::fmt::Debug for Facts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Facts")
            .field("sni", &self.sni)
            .field("alpn", &self.alpn)
            .field("proxied", &self.proxied)
            .field("client_cert", &self.client_cert)
            .field("track", &self.track.is_some())
            .finish()
    }
}

/// An ALPN protocol a bind offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    H2,
    Http11,
}

impl Alpn {
    pub fn of(id: &[u8]) -> Option<Self> {
        match id {
            b"h2" => Some(Alpn::H2),
            b"http/1.1" => Some(Alpn::Http11),
            _ => None,
        }
    }

    pub fn id(self) -> &'static [u8] {
        match self {
            Alpn::H2 => b"h2",
            Alpn::Http11 => b"http/1.1",
        }
    }
}

impl ConnInfo {
    pub fn new(peer: SocketAddr, sock: SocketAddr, tls: bool) -> Self {
        Self {
            peer,
            sock,
            tls,
            facts: Default::default(),
        }
    }

    /// Records what the connection's start learnt, once, before its first request.
    pub fn learnt(&self, f: Facts) {
        if f.sni.is_some()
            || f.alpn.is_some()
            || f.proxied.is_some()
            || f.client_cert.is_some()
            || f.track.is_some()
        {
            let _ = self.facts.set(Box::new(f));
        }
    }

    /// The stick counters the connection's `tcp_request.connection` rules track, if any.
    pub fn track(&self) -> Option<&crate::stick::Trackers> {
        self.facts.get().and_then(|f| f.track.as_deref())
    }

    /// What the connection's PROXY header said, if it had one.
    pub fn proxied(&self) -> Option<&crate::proxy_protocol::Proxied> {
        self.facts.get().and_then(|f| f.proxied.as_deref())
    }

    fn proxied_addrs(&self) -> Option<(SocketAddr, SocketAddr)> {
        self.proxied().and_then(|p| p.addrs)
    }

    /// The client's address: from the PROXY header when there was one, else the peer's.
    /// This is what `src`, logs, stick tables and forwarding headers use.
    pub fn client(&self) -> SocketAddr {
        self.proxied_addrs().map_or(self.peer, |a| a.0)
    }

    /// The address the client connected to (`dst`): from the PROXY header when there was
    /// one, else the connection's local address.
    pub fn local(&self) -> SocketAddr {
        self.proxied_addrs().map_or(self.sock, |a| a.1)
    }

    /// The certificate the TLS client sent, if it sent one.
    pub fn client_cert(&self) -> Option<&crate::tls::client_cert::ClientCert> {
        self.facts.get().and_then(|f| f.client_cert.as_deref())
    }

    /// The server name of this connection's TLS handshake (`ssl_fc_sni`).
    pub fn sni(&self) -> Option<&Arc<str>> {
        self.facts.get().and_then(|f| f.sni.as_ref())
    }

    /// The ALPN protocol the client chose: the one a PROXY header passed on, or the one
    /// negotiated on this connection's TLS.
    pub fn alpn(&self) -> Option<&[u8]> {
        match self.proxied().and_then(|p| p.alpn.as_deref()) {
            Some(a) => Some(a),
            None => self.facts.get().and_then(|f| f.alpn).map(Alpn::id),
        }
    }

    /// The server name the client asked for: this connection's SNI, or the authority a
    /// PROXY header passed on.
    pub fn server_name(&self) -> Option<&str> {
        match self.sni() {
            Some(n) => Some(n),
            None => self.proxied().and_then(|p| p.authority.as_deref()),
        }
    }
}

/// What fetches read.
pub struct SampleCtx<'a> {
    pub conn: &'a ConnInfo,
    pub frontend: &'a str,
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub version: Version,
    pub headers: &'a HeaderMap,
    /// Usable servers of a backend, by index (`nbsrv`).
    pub nbsrv: &'a (dyn Fn(usize) -> usize + Sync),
    /// Stick counters tracked so far.
    pub track: Tracks<'a>,
    /// The client's first bytes, while mode tcp content rules inspect them.
    pub payload: Option<&'a super::payload::Payload<'a>>,
}

/// Resolves the names fetches refer to, at compile time.
pub struct Resolve<'a> {
    pub backend: &'a dyn Fn(&str) -> Option<usize>,
    /// A table by name; `""` is the default table (the only one, when there is one).
    pub table: &'a dyn Fn(&str) -> Option<Arc<Table>>,
    /// The reference kept for a pattern or map file.
    pub patterns: &'a dyn Fn(RefKind, &PatFile) -> Arc<PatRef>,
}

/// A sample value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Str(Cow<'a, [u8]>),
    Int(i64),
    Ip(IpAddr),
    Bool(bool),
}

impl Value<'_> {
    /// The value as bytes (addresses and numbers in their text form).
    pub fn to_bytes(&self) -> Cow<'_, [u8]> {
        match self {
            Value::Str(s) => Cow::Borrowed(s),
            Value::Int(i) => Cow::Owned(i.to_string().into_bytes()),
            Value::Ip(ip) => Cow::Owned(ip.to_string().into_bytes()),
            Value::Bool(b) => Cow::Borrowed(if *b { b"1" } else { b"0" }),
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(i64::from(*b)),
            Value::Str(s) => std::str::from_utf8(s).ok()?.trim().parse().ok(),
            Value::Ip(_) => None,
        }
    }

    pub fn as_ip(&self) -> Option<IpAddr> {
        match self {
            Value::Ip(ip) => Some(*ip),
            Value::Str(s) => std::str::from_utf8(s).ok()?.trim().parse().ok(),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> bool {
        match self {
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::Str(s) => !s.is_empty(),
            Value::Ip(_) => true,
        }
    }
}

/// IPv4-mapped IPv6 addresses are matched as IPv4.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Keeps the first `bits` bits of an address.
pub fn mask_ip(ip: IpAddr, v4: u8, v6: u8) -> IpAddr {
    match canonical_ip(ip) {
        IpAddr::V4(a) => {
            let m = if v4 == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(v4.min(32)))
            };
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = if v6 == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(v6.min(128)))
            };
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

#[derive(Debug, Clone)]
enum CFetch {
    AlwaysTrue,
    AlwaysFalse,
    Src,
    SrcPort,
    Dst,
    DstPort,
    Method,
    Path,
    Url,
    Query,
    Base,
    UrlParam(Box<str>),
    Hdr(HeaderName, Option<i64>),
    HdrCnt(HeaderName),
    HdrVal(HeaderName),
    Cook(Box<str>),
    SslFc,
    SslFcSni,
    ClientCert(rampart_config::rules::CertField),
    FcPpAuthority,
    FcPpUniqueId,
    FcPpTlv(u8),
    ReqVer,
    NbSrv(usize),
    FeName,
    Sc {
        source: ScSource,
        op: ScOp,
        table: Option<Arc<Table>>,
    },
    TableCnt(Arc<Table>),
    TableAvl(Arc<Table>),
    ReqLen,
    ReqSslSni,
    ReqSslHelloType,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Table({})", self.name)
    }
}

/// A compiled sample expression.
#[derive(Debug, Clone)]
pub struct Sample {
    fetch: CFetch,
    /// The converters as written, to compare expressions.
    converters: Vec<Converter>,
    /// The converters ready to run, in the same order.
    run: Vec<Conv>,
}

/// A converter ready to run: most are their configuration; a map holds its index, a
/// `regsub` its compiled expression.
#[derive(Debug, Clone)]
enum Conv {
    Plain(Converter),
    Map {
        expr: Arc<Expr>,
        default: Option<Out>,
    },
    RegSub {
        regex: Arc<regex::bytes::Regex>,
        subst: Arc<[u8]>,
        global: bool,
    },
}

fn header(n: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(n.as_bytes()).map_err(|_| format!("invalid header name {n:?}"))
}

impl Sample {
    /// Compiles `e`; `r` resolves backend names for `nbsrv` and table names.
    pub fn compile(e: &SampleExpr, r: &Resolve<'_>) -> Result<Self, String> {
        let table = |name: &str| -> Result<Arc<Table>, String> {
            (r.table)(name).ok_or_else(|| {
                if name.is_empty() {
                    format!("{}: name the table", e.fetch)
                } else {
                    format!("unknown stick table {name:?}")
                }
            })
        };
        let fetch = match &e.fetch {
            Fetch::AlwaysTrue => CFetch::AlwaysTrue,
            Fetch::AlwaysFalse => CFetch::AlwaysFalse,
            Fetch::Src => CFetch::Src,
            Fetch::SrcPort => CFetch::SrcPort,
            Fetch::Dst => CFetch::Dst,
            Fetch::DstPort => CFetch::DstPort,
            Fetch::Method => CFetch::Method,
            Fetch::Path => CFetch::Path,
            Fetch::Url => CFetch::Url,
            Fetch::Query => CFetch::Query,
            Fetch::Base => CFetch::Base,
            Fetch::UrlParam(n) => CFetch::UrlParam(n.as_str().into()),
            Fetch::Hdr { name, occurrence } => CFetch::Hdr(header(name)?, *occurrence),
            Fetch::HdrCnt(n) => CFetch::HdrCnt(header(n)?),
            Fetch::HdrVal(n) => CFetch::HdrVal(header(n)?),
            Fetch::Cook(n) => CFetch::Cook(n.as_str().into()),
            Fetch::SslFc => CFetch::SslFc,
            Fetch::SslFcSni => CFetch::SslFcSni,
            Fetch::ClientCert(f) => CFetch::ClientCert(f.clone()),
            Fetch::FcPpAuthority => CFetch::FcPpAuthority,
            Fetch::FcPpUniqueId => CFetch::FcPpUniqueId,
            Fetch::FcPpTlv(t) => CFetch::FcPpTlv(*t),
            Fetch::ReqVer => CFetch::ReqVer,
            Fetch::NbSrv(b) => {
                CFetch::NbSrv((r.backend)(b).ok_or_else(|| format!("unknown backend {b:?}"))?)
            }
            Fetch::FeName => CFetch::FeName,
            Fetch::Sc(sc) => CFetch::Sc {
                source: sc.source,
                op: sc.op,
                table: match (&sc.table, sc.source) {
                    (Some(t), _) => Some(table(t)?),
                    (None, ScSource::Src) => Some(table("")?),
                    (None, ScSource::Slot(_)) => None,
                },
            },
            Fetch::TableCnt(t) => CFetch::TableCnt(table(t)?),
            Fetch::TableAvl(t) => CFetch::TableAvl(table(t)?),
            Fetch::ReqLen => CFetch::ReqLen,
            Fetch::ReqSslSni => CFetch::ReqSslSni,
            Fetch::ReqSslHelloType => CFetch::ReqSslHelloType,
        };
        let run = e
            .converters
            .iter()
            .map(|c| {
                Ok(match c {
                    Converter::Map(m) => Conv::Map {
                        expr: (r.patterns)(RefKind::Map, &m.file).expr(ExprKey {
                            method: m.method,
                            icase: false,
                            output: Some(m.output),
                        }),
                        default: m.default.as_deref().and_then(|d| Out::parse(m.output, d)),
                    },
                    Converter::RegSub {
                        regex,
                        subst,
                        global,
                        icase,
                    } => Conv::RegSub {
                        regex: Arc::new(
                            regex::bytes::RegexBuilder::new(regex)
                                .case_insensitive(*icase)
                                .size_limit(1 << 22)
                                .build()
                                .map_err(|e| format!("regsub: {e}"))?,
                        ),
                        subst: subst.as_bytes().into(),
                        global: *global,
                    },
                    c => Conv::Plain(c.clone()),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Self {
            fetch,
            converters: e.converters.clone(),
            run,
        })
    }

    /// Whether `self` and `o` fetch the same values from a request, without side effects
    /// (no stick counters, no tables): evaluating it once stands for evaluating it twice.
    pub fn same_pure(&self, o: &Sample) -> bool {
        use CFetch as F;
        let fetch = match (&self.fetch, &o.fetch) {
            (F::Src, F::Src)
            | (F::SrcPort, F::SrcPort)
            | (F::Dst, F::Dst)
            | (F::DstPort, F::DstPort)
            | (F::Method, F::Method)
            | (F::Path, F::Path)
            | (F::Url, F::Url)
            | (F::Query, F::Query)
            | (F::Base, F::Base)
            | (F::SslFc, F::SslFc)
            | (F::SslFcSni, F::SslFcSni)
            | (F::FcPpAuthority, F::FcPpAuthority)
            | (F::FcPpUniqueId, F::FcPpUniqueId)
            | (F::ReqVer, F::ReqVer)
            | (F::FeName, F::FeName)
            | (F::ReqLen, F::ReqLen)
            | (F::ReqSslSni, F::ReqSslSni)
            | (F::ReqSslHelloType, F::ReqSslHelloType) => true,
            (F::UrlParam(a), F::UrlParam(b)) | (F::Cook(a), F::Cook(b)) => a == b,
            (F::ClientCert(a), F::ClientCert(b)) => a == b,
            (F::Hdr(a, x), F::Hdr(b, y)) => a == b && x == y,
            (F::HdrCnt(a), F::HdrCnt(b)) | (F::HdrVal(a), F::HdrVal(b)) => a == b,
            (F::FcPpTlv(a), F::FcPpTlv(b)) => a == b,
            _ => false,
        };
        fetch && self.converters == o.converters
    }

    fn convert<'v>(&self, v: Value<'v>) -> Option<Value<'v>> {
        Self::convert_with(&self.run, v)
    }

    fn convert_with<'v>(run: &[Conv], mut v: Value<'v>) -> Option<Value<'v>> {
        fn owned<'x>(b: Vec<u8>) -> Value<'x> {
            Value::Str(Cow::Owned(b))
        }
        for c in run {
            let c = match c {
                Conv::Plain(c) => c,
                Conv::Map { expr, default } => {
                    v = match expr.lookup(&v) {
                        Some(found) => found,
                        None => default.as_ref()?.value(),
                    };
                    continue;
                }
                Conv::RegSub {
                    regex,
                    subst,
                    global,
                } => {
                    v = owned(super::convert::regsub(regex, &v.to_bytes(), subst, *global));
                    continue;
                }
            };
            v = match c {
                // A string already in the right case is kept as it is.
                Converter::Lower => match v {
                    Value::Str(b) if !b.iter().any(u8::is_ascii_uppercase) => Value::Str(b),
                    v => owned(v.to_bytes().to_ascii_lowercase()),
                },
                Converter::Upper => match v {
                    Value::Str(b) if !b.iter().any(u8::is_ascii_lowercase) => Value::Str(b),
                    v => owned(v.to_bytes().to_ascii_uppercase()),
                },
                Converter::IpMask { v4, v6 } => {
                    Value::Ip(mask_ip(v.as_ip()?, *v4, v6.unwrap_or(128)))
                }
                Converter::Fields {
                    index,
                    delims,
                    count,
                    words,
                } => owned(super::convert::fields(
                    &v.to_bytes(),
                    *index,
                    delims,
                    *count,
                    *words,
                )),
                Converter::Bytes { offset, length } => {
                    owned(super::convert::bytes(&v.to_bytes(), *offset, *length).to_vec())
                }
                Converter::Hex => owned(super::convert::hex(&v.to_bytes())),
                Converter::Base64 => owned(super::convert::base64(&v.to_bytes())),
                Converter::UrlDec { in_form } => {
                    owned(super::convert::url_dec(&v.to_bytes(), *in_form)?)
                }
                Converter::Json(input) => owned(super::convert::json(&v.to_bytes(), *input)?),
                // Compiled into `Conv` above.
                Converter::Map(_) | Converter::RegSub { .. } => return None,
            };
        }
        Some(v)
    }

    /// Calls `f` with each value (several for multi-valued headers and cookies) until it
    /// returns true; returns whether it did.
    pub fn any(&self, cx: &SampleCtx<'_>, f: &mut dyn FnMut(&Value<'_>) -> bool) -> bool {
        let mut emit = |v: Value<'_>| -> bool {
            match self.convert(v) {
                Some(v) => f(&v),
                None => false,
            }
        };
        match &self.fetch {
            CFetch::Hdr(name, None) => {
                for v in cx.headers.get_all(name) {
                    // A header with an empty value is there, with an empty value.
                    if v.as_bytes().trim_ascii().is_empty() {
                        if emit(Value::Str(Cow::Borrowed(b""))) {
                            return true;
                        }
                        continue;
                    }
                    for part in split_values(v.as_bytes()) {
                        if emit(Value::Str(Cow::Borrowed(part))) {
                            return true;
                        }
                    }
                }
                false
            }
            CFetch::HdrVal(name) => {
                for v in cx.headers.get_all(name) {
                    for part in split_values(v.as_bytes()) {
                        if let Some(i) = Value::Str(Cow::Borrowed(part)).as_int()
                            && emit(Value::Int(i))
                        {
                            return true;
                        }
                    }
                }
                false
            }
            CFetch::Cook(name) => {
                for v in cx.headers.get_all(http::header::COOKIE) {
                    for (k, val) in cookies(v.as_bytes()) {
                        if k == name.as_bytes() && emit(Value::Str(Cow::Borrowed(val))) {
                            return true;
                        }
                    }
                }
                false
            }
            _ => match self.one_raw(cx) {
                Some(v) => emit(v),
                None => false,
            },
        }
    }

    /// The single value of this sample (the last occurrence for headers and cookies, as
    /// HAProxy returns outside ACLs).
    pub fn value<'a>(&self, cx: &SampleCtx<'a>) -> Option<Value<'a>> {
        self.convert(self.raw_value(cx)?)
    }

    /// [`Sample::value`] before the converters.
    fn raw_value<'a>(&self, cx: &SampleCtx<'a>) -> Option<Value<'a>> {
        match &self.fetch {
            CFetch::Hdr(name, None) => {
                let last = cx.headers.get_all(name).iter().next_back()?;
                Some(Value::Str(Cow::Borrowed(
                    split_values(last.as_bytes()).last()?,
                )))
            }
            CFetch::HdrVal(name) => {
                let last = cx.headers.get_all(name).iter().next_back()?;
                Some(Value::Int(
                    Value::Str(Cow::Borrowed(last.as_bytes())).as_int()?,
                ))
            }
            CFetch::Cook(name) => {
                let mut found = None;
                for v in cx.headers.get_all(http::header::COOKIE) {
                    for (k, val) in cookies(v.as_bytes()) {
                        if k == name.as_bytes() {
                            found = Some(val);
                        }
                    }
                }
                found.map(|v| Value::Str(Cow::Borrowed(v)))
            }
            _ => self.one_raw(cx),
        }
    }

    fn one_raw<'a>(&self, cx: &SampleCtx<'a>) -> Option<Value<'a>> {
        let s = |b: &'a [u8]| Some(Value::Str(Cow::Borrowed(b)));
        match &self.fetch {
            CFetch::AlwaysTrue => Some(Value::Bool(true)),
            CFetch::AlwaysFalse => Some(Value::Bool(false)),
            CFetch::Src => Some(Value::Ip(canonical_ip(cx.conn.client().ip()))),
            CFetch::SrcPort => Some(Value::Int(i64::from(cx.conn.client().port()))),
            CFetch::Dst => Some(Value::Ip(canonical_ip(cx.conn.local().ip()))),
            CFetch::DstPort => Some(Value::Int(i64::from(cx.conn.local().port()))),
            CFetch::Method => s(cx.method.as_str().as_bytes()),
            CFetch::Path => s(cx.uri.path().as_bytes()),
            CFetch::Url => {
                if cx.uri.scheme().is_some() && cx.version != Version::HTTP_2 {
                    Some(Value::Str(Cow::Owned(cx.uri.to_string().into_bytes())))
                } else {
                    s(cx.uri
                        .path_and_query()
                        .map_or(b"/", |p| p.as_str().as_bytes()))
                }
            }
            CFetch::Query => cx.uri.query().and_then(|q| s(q.as_bytes())),
            CFetch::Base => {
                let host = host_of(cx)?;
                let mut b = Vec::with_capacity(host.len() + cx.uri.path().len());
                b.extend_from_slice(host);
                b.extend_from_slice(cx.uri.path().as_bytes());
                Some(Value::Str(Cow::Owned(b)))
            }
            CFetch::UrlParam(name) => {
                url_param(cx.uri.query()?, name).and_then(|v| s(v.as_bytes()))
            }
            CFetch::Hdr(name, Some(occ)) => {
                let all: Vec<&[u8]> = cx
                    .headers
                    .get_all(name)
                    .iter()
                    .flat_map(|v| split_values(v.as_bytes()))
                    .collect();
                let i = if *occ > 0 {
                    (*occ - 1) as usize
                } else {
                    all.len().checked_sub(occ.unsigned_abs() as usize)?
                };
                all.get(i).and_then(|v| s(v))
            }
            CFetch::HdrCnt(name) => Some(Value::Int(
                cx.headers
                    .get_all(name)
                    .iter()
                    .map(|v| split_values(v.as_bytes()).count() as i64)
                    .sum(),
            )),
            CFetch::SslFc => Some(Value::Bool(cx.conn.tls)),
            CFetch::ClientCert(f) => {
                use rampart_config::rules::CertField;
                let cert = cx.conn.client_cert();
                match f {
                    CertField::Used => Some(Value::Bool(cert.is_some())),
                    // A certificate that failed verification ends the handshake.
                    CertField::Verify => cx.conn.tls.then_some(Value::Int(0)),
                    f => cert.and_then(|c| c.text(f)).map(|b| {
                        Value::Str(match b {
                            Cow::Borrowed(b) => Cow::Borrowed(b),
                            Cow::Owned(v) => Cow::Owned(v),
                        })
                    }),
                }
            }
            CFetch::ReqLen => cx.payload.map(|p| Value::Int(p.req_len())),
            CFetch::ReqSslHelloType => cx.payload.and_then(|p| p.hello_type()).map(Value::Int),
            CFetch::ReqSslSni => {
                let p: &'a super::payload::Payload<'a> = cx.payload?;
                p.sni().and_then(s)
            }
            CFetch::SslFcSni => {
                let conn: &'a ConnInfo = cx.conn;
                conn.sni().and_then(|n| s(n.as_bytes()))
            }
            CFetch::FcPpAuthority => {
                let conn: &'a ConnInfo = cx.conn;
                conn.proxied()
                    .and_then(|p| p.authority.as_deref())
                    .and_then(|a| s(a.as_bytes()))
            }
            CFetch::FcPpUniqueId => {
                let conn: &'a ConnInfo = cx.conn;
                conn.proxied()
                    .and_then(|p| p.unique_id.as_deref())
                    .and_then(s)
            }
            CFetch::FcPpTlv(t) => {
                let conn: &'a ConnInfo = cx.conn;
                conn.proxied().and_then(|p| p.tlv(*t)).and_then(s)
            }
            CFetch::ReqVer => s(version_str(cx.version).as_bytes()),
            CFetch::NbSrv(i) => Some(Value::Int((cx.nbsrv)(*i) as i64)),
            CFetch::FeName => s(cx.frontend.as_bytes()),
            CFetch::Sc { source, op, table } => sc_fetch(cx, *source, *op, table.as_ref()),
            CFetch::TableCnt(t) => Some(Value::Int(t.used() as i64)),
            CFetch::TableAvl(t) => Some(Value::Int(t.size().saturating_sub(t.used()) as i64)),
            CFetch::Hdr(_, None) | CFetch::HdrVal(_) | CFetch::Cook(_) => None,
        }
    }

    /// Appends the value's text to `out` (nothing when absent).
    pub fn render(&self, cx: &SampleCtx<'_>, out: &mut Vec<u8>) {
        // A map lookup last writes its value straight from the map.
        if let Some((Conv::Map { expr, default }, before)) = self.run.split_last() {
            if let Some(v) = self
                .raw_value(cx)
                .and_then(|r| Self::convert_with(before, r))
            {
                expr.render(&v, default.as_ref(), out);
            }
            return;
        }
        if let Some(v) = self.value(cx) {
            out.extend_from_slice(&v.to_bytes());
        }
    }

    /// A stable hash of the value, for balancing.
    pub fn hash(&self, cx: &SampleCtx<'_>) -> Option<u64> {
        let v = self.value(cx)?;
        Some(match v {
            Value::Ip(IpAddr::V4(a)) => crate::balance::hash::hash64(&a.octets()),
            Value::Ip(IpAddr::V6(a)) => crate::balance::hash::hash64(&a.octets()),
            other => crate::balance::hash::hash64(&other.to_bytes()),
        })
    }
}

/// A stick-counter fetch: no value when the slot tracks nothing; 0 when the table has
/// no entry for the key.
fn sc_fetch<'a>(
    cx: &SampleCtx<'a>,
    source: ScSource,
    op: ScOp,
    table: Option<&Arc<Table>>,
) -> Option<Value<'a>> {
    // The tracked entry's key is borrowed; only a `src_` fetch builds one.
    let src_key;
    let (table, key): (&Arc<Table>, &crate::stick::Key) = match source {
        ScSource::Slot(n) => {
            let Some(t) = cx.track.slot(n) else {
                return match op {
                    ScOp::Tracked => Some(Value::Bool(false)),
                    _ => None,
                };
            };
            match table {
                Some(other) if !Arc::ptr_eq(other, &t.table) => {
                    if other.key_type != t.table.key_type {
                        return None;
                    }
                    (other, &t.key)
                }
                _ => (&t.table, &t.key),
            }
        }
        ScSource::Src => {
            let t = table?;
            src_key = t.key_of(&Value::Ip(canonical_ip(cx.conn.client().ip())))?;
            (t, &src_key)
        }
    };
    let n = match op {
        ScOp::Tracked => return Some(Value::Bool(true)),
        ScOp::Get(k) => table.get(key, k).unwrap_or(0),
        ScOp::IncGpc0 => table
            .with(key, true, 0, |e| {
                e.add(DataKind::Gpc0, 1);
                e.add(DataKind::Gpc0Rate, 1);
                e.get(DataKind::Gpc0).unwrap_or(0)
            })
            .unwrap_or(0),
        ScOp::ClrGpc0 => table
            .with(key, false, 0, |e| {
                let old = e.get(DataKind::Gpc0).unwrap_or(0);
                e.set(DataKind::Gpc0, 0);
                old
            })
            .unwrap_or(0),
    };
    Some(Value::Int(n.min(i64::MAX as u64) as i64))
}

/// The host a request is for: the Host header, or the URI authority.
pub fn host_of<'a>(cx: &SampleCtx<'a>) -> Option<&'a [u8]> {
    cx.headers
        .get(http::header::HOST)
        .map(|h| h.as_bytes())
        .or_else(|| cx.uri.authority().map(|a| a.as_str().as_bytes()))
}

/// Comma-separated values of a header, trimmed.
pub fn split_values(v: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    v.split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|p| !p.is_empty())
}

/// `name=value` pairs of a Cookie header.
pub fn cookies(v: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    v.split(|b| *b == b';').filter_map(|c| {
        let c = c.trim_ascii();
        let eq = c.iter().position(|b| *b == b'=')?;
        Some((c[..eq].trim_ascii(), c[eq + 1..].trim_ascii()))
    })
}

/// The first value of query parameter `name`.
pub fn url_param<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split(['&', ';']).find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every TLS connection keeps its facts (server name, ALPN) in their own box:
    /// jemalloc's 48-byte class, rather than 192 bytes with the PROXY header inline.
    #[test]
    fn a_connections_facts_stay_small() {
        let n = std::mem::size_of::<Facts>();
        assert!(n <= 48, "the connection's facts grew to {n} bytes");
    }

    #[test]
    fn helpers_parse_headers_cookies_and_queries() {
        let v: Vec<&[u8]> = split_values(b"a, b ,,c").collect();
        assert_eq!(v, vec![&b"a"[..], b"b", b"c"]);
        let c: Vec<_> = cookies(b"sid=1; theme = dark;x").collect();
        assert_eq!(
            c,
            vec![(&b"sid"[..], &b"1"[..]), (&b"theme"[..], &b"dark"[..])]
        );
        assert_eq!(url_param("a=1&b=2&a=3", "a"), Some("1"));
        assert_eq!(url_param("flag&b=2", "flag"), Some(""));
        assert_eq!(url_param("a=1", "b"), None);
        assert_eq!(
            mask_ip("10.1.2.3".parse().unwrap(), 24, 64),
            "10.1.2.0".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            mask_ip("2001:db8::1".parse().unwrap(), 24, 32),
            "2001:db8::".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            canonical_ip("::ffff:10.0.0.1".parse().unwrap()),
            "10.0.0.1".parse::<IpAddr>().unwrap()
        );
    }
}
