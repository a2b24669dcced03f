//! Sample fetches (`src`, `path`, `hdr(host)`, ...) and converters (`lower`, `ipmask(24)`):
//! the values that ACLs match, log-format strings print and hash-based balancing hashes.

use std::fmt;

use super::acl::PatternFiles;

/// The type of value a fetch produces, which decides its default match method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleType {
    Str,
    Int,
    Ip,
    Bool,
}

/// A sample fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetch {
    AlwaysTrue,
    AlwaysFalse,
    /// Client address.
    Src,
    SrcPort,
    /// Address the client connected to.
    Dst,
    DstPort,
    Method,
    /// Path without the query string.
    Path,
    /// The request target as received.
    Url,
    /// The query string without `?`; absent when there is none.
    Query,
    /// `Host` header (without port) followed by the path, as HAProxy's `base`.
    Base,
    /// A query-string parameter's value.
    UrlParam(String),
    /// A header's values; `occurrence` picks one (1 = first, -1 = last), all when `None`.
    Hdr {
        name: String,
        occurrence: Option<i64>,
    },
    /// How many values a header has (comma-separated values count separately).
    HdrCnt(String),
    /// A header's value as an integer.
    HdrVal(String),
    /// A request cookie's value.
    Cook(String),
    /// Whether the client connection uses TLS.
    SslFc,
    /// The SNI name the client sent.
    SslFcSni,
    /// Something of the client certificate of the connection's TLS (`ssl_c_*`).
    ClientCert(CertField),
    /// The authority TLV of the connection's PROXY v2 header.
    FcPpAuthority,
    /// The unique id TLV of the connection's PROXY v2 header.
    FcPpUniqueId,
    /// Any TLV of the connection's PROXY v2 header, by type.
    FcPpTlv(u8),
    /// HTTP version as `1.0`, `1.1` or `2.0`.
    ReqVer,
    /// Usable servers in a backend.
    NbSrv(String),
    /// Name of the frontend.
    FeName,
    /// A stick counter: `sc0_http_req_rate`, `sc_get_gpc0(1,t)`, `src_conn_cur(t)`.
    Sc(ScFetch),
    /// Entries in a table.
    TableCnt(String),
    /// Free entries in a table.
    TableAvl(String),
    /// Bytes of the request payload buffered so far (TCP content inspection).
    ReqLen,
    /// The server name of a TLS ClientHello in the buffered payload, read without
    /// terminating TLS.
    ReqSslSni,
    /// 1 when the buffered payload starts with a TLS ClientHello, 0 when it does not.
    ReqSslHelloType,
}

/// What `ssl_c_*` fetches read of a client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertField {
    /// `ssl_c_used`: whether the client sent a certificate.
    Used,
    /// `ssl_c_verify`: the verification result (0: verified, or none sent).
    Verify,
    /// `ssl_c_s_dn`: the subject's distinguished name, or one entry of it.
    SubjectDn(Option<DnEntry>),
    /// `ssl_c_i_dn`: the issuer's.
    IssuerDn(Option<DnEntry>),
    /// `ssl_c_serial`: the serial number's bytes.
    Serial,
    /// `ssl_c_sha1`, `ssl_c_sha256`: the digest of the certificate (DER).
    Sha1,
    Sha256,
    /// `ssl_c_notbefore`, `ssl_c_notafter`: `YYMMDDhhmmssZ`.
    NotBefore,
    NotAfter,
}

/// One entry of a distinguished name: its short name (`CN`, `O`...) and which occurrence
/// (1: the first, -1: the last).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnEntry {
    pub name: String,
    pub occurrence: i64,
}

/// What a fetch needs to have been read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Layer {
    /// The connection alone: usable when it is accepted.
    Connection,
    /// The client's TLS handshake or PROXY header (`ssl_fc_sni`, `fc_pp_*`).
    Session,
    /// Bytes the client sent, buffered by `tcp_request.content` inspection.
    Payload,
    /// An HTTP request.
    Http,
}

/// Which entry a stick-counter fetch reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScSource {
    /// The entry tracked in slot 0-2 (or the same key in another table).
    Slot(u8),
    /// The client address looked up in a table.
    Src,
}

/// What a stick-counter fetch does with the entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScOp {
    /// Reads a stored value.
    Get(crate::stick::DataKind),
    /// Increments gpc0 and returns the new value.
    IncGpc0,
    /// Sets gpc0 to zero and returns the old value.
    ClrGpc0,
    /// Whether the slot tracks an entry (`sc0_tracked`); 0/1 for `src`.
    Tracked,
}

/// A stick-counter fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScFetch {
    pub source: ScSource,
    pub op: ScOp,
    /// The table to look in; by default the table the slot tracks (a `src_` fetch needs
    /// one unless there is a single table).
    pub table: Option<String>,
}

impl fmt::Display for ScFetch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.source {
            ScSource::Slot(n) => write!(f, "sc{n}_")?,
            ScSource::Src => f.write_str("src_")?,
        }
        match self.op {
            ScOp::Get(k @ (crate::stick::DataKind::Gpc0 | crate::stick::DataKind::Gpt0)) => {
                write!(f, "get_{}", k.name())?
            }
            ScOp::Get(k) => f.write_str(k.name())?,
            ScOp::IncGpc0 => f.write_str("inc_gpc0")?,
            ScOp::ClrGpc0 => f.write_str("clr_gpc0")?,
            ScOp::Tracked => f.write_str("tracked")?,
        }
        match &self.table {
            Some(t) => write!(f, "({t})"),
            None => Ok(()),
        }
    }
}

/// Parses the part of a stick-counter fetch after `scN_` or `src_`.
fn sc_op(name: &str) -> Option<ScOp> {
    use crate::stick::DataKind;
    Some(match name {
        "get_gpc0" => ScOp::Get(DataKind::Gpc0),
        "get_gpt0" => ScOp::Get(DataKind::Gpt0),
        "inc_gpc0" => ScOp::IncGpc0,
        "clr_gpc0" => ScOp::ClrGpc0,
        "tracked" => ScOp::Tracked,
        "gpc0" | "gpt0" => return None,
        other => ScOp::Get(DataKind::from_name(other)?),
    })
}

/// `sc0_http_req_rate`, `sc_http_req_rate(0,t)`, `src_conn_cur(t)`.
fn resolve_sc(word: &str, args: &[String]) -> Option<Result<Fetch, String>> {
    let table_arg = |a: &[String]| -> Result<Option<String>, String> {
        match a {
            [] => Ok(None),
            [t] if !t.is_empty() => Ok(Some(t.clone())),
            _ => Err(format!("{word} takes an optional table name")),
        }
    };
    let (source, op, table) = if let Some(rest) = word.strip_prefix("src_") {
        let op = sc_op(rest)?;
        if op == ScOp::Tracked {
            return None;
        }
        (ScSource::Src, op, table_arg(args))
    } else if let Some(rest) = word.strip_prefix("sc_") {
        let op = sc_op(rest)?;
        let r = match args {
            [n, rest @ ..] => match n.as_str() {
                "0" | "1" | "2" => table_arg(rest).map(|t| (n.as_bytes()[0] - b'0', t)),
                _ => Err(format!("{word}: the counter slot must be 0, 1 or 2")),
            },
            [] => Err(format!("{word} takes a counter slot, like {word}(0)")),
        };
        return Some(r.map(|(slot, table)| {
            Fetch::Sc(ScFetch {
                source: ScSource::Slot(slot),
                op,
                table,
            })
        }));
    } else {
        let rest = word.strip_prefix("sc")?;
        let (digit, rest) = rest.split_at_checked(1)?;
        let rest = rest.strip_prefix('_')?;
        let slot = match digit {
            "0" => 0,
            "1" => 1,
            "2" => 2,
            _ => return None,
        };
        (ScSource::Slot(slot), sc_op(rest)?, table_arg(args))
    };
    Some(table.map(|table| Fetch::Sc(ScFetch { source, op, table })))
}

impl Fetch {
    /// Whether the fetch reads only the connection (usable before a request is read).
    pub fn is_layer4(&self) -> bool {
        self.layer() == Layer::Connection
    }

    /// What the fetch reads.
    pub fn layer(&self) -> Layer {
        match self {
            Fetch::AlwaysTrue
            | Fetch::AlwaysFalse
            | Fetch::Src
            | Fetch::SrcPort
            | Fetch::Dst
            | Fetch::DstPort
            | Fetch::NbSrv(_)
            | Fetch::FeName
            | Fetch::Sc(_)
            | Fetch::TableCnt(_)
            | Fetch::TableAvl(_) => Layer::Connection,
            Fetch::SslFc
            | Fetch::SslFcSni
            | Fetch::ClientCert(_)
            | Fetch::FcPpAuthority
            | Fetch::FcPpUniqueId
            | Fetch::FcPpTlv(_) => Layer::Session,
            Fetch::ReqLen | Fetch::ReqSslSni | Fetch::ReqSslHelloType => Layer::Payload,
            Fetch::Method
            | Fetch::Path
            | Fetch::Url
            | Fetch::Query
            | Fetch::Base
            | Fetch::UrlParam(_)
            | Fetch::Hdr { .. }
            | Fetch::HdrCnt(_)
            | Fetch::HdrVal(_)
            | Fetch::Cook(_)
            | Fetch::ReqVer => Layer::Http,
        }
    }

    pub fn sample_type(&self) -> SampleType {
        match self {
            Fetch::Sc(ScFetch {
                op: ScOp::Tracked, ..
            }) => SampleType::Bool,
            Fetch::Sc(_) | Fetch::TableCnt(_) | Fetch::TableAvl(_) => SampleType::Int,
            Fetch::AlwaysTrue
            | Fetch::AlwaysFalse
            | Fetch::SslFc
            | Fetch::ClientCert(CertField::Used) => SampleType::Bool,
            Fetch::ClientCert(CertField::Verify) => SampleType::Int,
            Fetch::Src | Fetch::Dst => SampleType::Ip,
            Fetch::SrcPort
            | Fetch::DstPort
            | Fetch::HdrCnt(_)
            | Fetch::HdrVal(_)
            | Fetch::NbSrv(_)
            | Fetch::ReqLen
            | Fetch::ReqSslHelloType => SampleType::Int,
            _ => SampleType::Str,
        }
    }
}

impl fmt::Display for Fetch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fetch::AlwaysTrue => f.write_str("always_true"),
            Fetch::AlwaysFalse => f.write_str("always_false"),
            Fetch::Src => f.write_str("src"),
            Fetch::SrcPort => f.write_str("src_port"),
            Fetch::Dst => f.write_str("dst"),
            Fetch::DstPort => f.write_str("dst_port"),
            Fetch::Method => f.write_str("method"),
            Fetch::Path => f.write_str("path"),
            Fetch::Url => f.write_str("url"),
            Fetch::Query => f.write_str("query"),
            Fetch::Base => f.write_str("base"),
            Fetch::UrlParam(n) => write!(f, "url_param({n})"),
            Fetch::Hdr {
                name,
                occurrence: None,
            } => write!(f, "hdr({name})"),
            Fetch::Hdr {
                name,
                occurrence: Some(o),
            } => write!(f, "hdr({name},{o})"),
            Fetch::HdrCnt(n) => write!(f, "hdr_cnt({n})"),
            Fetch::HdrVal(n) => write!(f, "hdr_val({n})"),
            Fetch::Cook(n) => write!(f, "req.cook({n})"),
            Fetch::SslFc => f.write_str("ssl_fc"),
            Fetch::SslFcSni => f.write_str("ssl_fc_sni"),
            Fetch::ClientCert(c) => {
                let dn = |f: &mut fmt::Formatter<'_>, n: &str, e: &Option<DnEntry>| match e {
                    None => f.write_str(n),
                    Some(e) => write!(f, "{n}({},{})", e.name, e.occurrence),
                };
                match c {
                    CertField::Used => f.write_str("ssl_c_used"),
                    CertField::Verify => f.write_str("ssl_c_verify"),
                    CertField::SubjectDn(e) => dn(f, "ssl_c_s_dn", e),
                    CertField::IssuerDn(e) => dn(f, "ssl_c_i_dn", e),
                    CertField::Serial => f.write_str("ssl_c_serial"),
                    CertField::Sha1 => f.write_str("ssl_c_sha1"),
                    CertField::Sha256 => f.write_str("ssl_c_sha256"),
                    CertField::NotBefore => f.write_str("ssl_c_notbefore"),
                    CertField::NotAfter => f.write_str("ssl_c_notafter"),
                }
            }
            Fetch::FcPpAuthority => f.write_str("fc_pp_authority"),
            Fetch::FcPpUniqueId => f.write_str("fc_pp_unique_id"),
            Fetch::FcPpTlv(t) => write!(f, "fc_pp_tlv({t:#04x})"),
            Fetch::ReqVer => f.write_str("req.ver"),
            Fetch::NbSrv(b) => write!(f, "nbsrv({b})"),
            Fetch::FeName => f.write_str("fe_name"),
            Fetch::Sc(sc) => sc.fmt(f),
            Fetch::TableCnt(t) => write!(f, "table_cnt({t})"),
            Fetch::TableAvl(t) => write!(f, "table_avl({t})"),
            Fetch::ReqLen => f.write_str("req.len"),
            Fetch::ReqSslSni => f.write_str("req.ssl_sni"),
            Fetch::ReqSslHelloType => f.write_str("req.ssl_hello_type"),
        }
    }
}

/// How an ACL compares a sample with its patterns (`-m` flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchMethod {
    /// The sample exists (no patterns).
    Found,
    /// The sample is true or non-zero (no patterns).
    Bool,
    /// Integer comparison or range.
    Int,
    /// Address in a network.
    Ip,
    /// Exact string.
    Str,
    /// Prefix.
    Beg,
    /// Suffix.
    End,
    /// Substring.
    Sub,
    /// Regular expression.
    Reg,
    /// Slash-delimited part of a path.
    Dir,
    /// Dot-delimited part of a domain name.
    Dom,
    /// String length (integer patterns).
    Len,
}

impl MatchMethod {
    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "found" => Self::Found,
            "bool" => Self::Bool,
            "int" => Self::Int,
            "ip" => Self::Ip,
            "str" => Self::Str,
            "beg" => Self::Beg,
            "end" => Self::End,
            "sub" => Self::Sub,
            "reg" => Self::Reg,
            "dir" => Self::Dir,
            "dom" => Self::Dom,
            "len" => Self::Len,
            _ => return None,
        })
    }

    pub fn default_for(t: SampleType) -> Self {
        match t {
            SampleType::Str => Self::Str,
            SampleType::Int => Self::Int,
            SampleType::Ip => Self::Ip,
            SampleType::Bool => Self::Bool,
        }
    }
}

/// A converter applied to a sample (`,lower`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Converter {
    Lower,
    Upper,
    /// Keeps the network part of an address: IPv4 prefix length and, optionally, IPv6.
    IpMask {
        v4: u8,
        v6: Option<u8>,
    },
    /// `field`: fields `index` (1-based; negative counts from the end) to
    /// `index + count - 1` (`count` 0: to the end), split at any of `delims`; consecutive
    /// delimiters make empty fields. Out of range: the empty string. `word` (`words`):
    /// the same with words, which runs of delimiters separate, none empty.
    Fields {
        index: i64,
        delims: Vec<u8>,
        count: u64,
        words: bool,
    },
    /// Bytes from `offset`, `length` of them (all when `None`).
    Bytes {
        offset: u64,
        length: Option<u64>,
    },
    /// Upper-case hexadecimal.
    Hex,
    /// Standard base64 with padding.
    Base64,
    /// Percent-decoding; `+` is a space when `in_form`.
    UrlDec {
        in_form: bool,
    },
    /// A lookup in a map file: `map_<match>[_<output>](FILE[,DEFAULT])`.
    Map(Box<MapConv>),
    /// `regsub(REGEX,SUBST[,FLAGS])`: the first match (every match with flag `g`) replaced
    /// by `SUBST`, where `\1`..`\9` are the groups; flag `i` ignores case.
    RegSub {
        regex: String,
        subst: String,
        global: bool,
        icase: bool,
    },
    /// `json([INPUT])`: escaped for a JSON string.
    Json(JsonInput),
}

/// How `json` treats its input (HAProxy's input codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonInput {
    /// Bytes: those above 127 become `\u00XX` (the default).
    Ascii,
    /// UTF-8: invalid input fails the sample.
    Utf8,
    /// UTF-8: invalid bytes are dropped.
    Utf8Skip,
    /// UTF-8: invalid bytes become U+FFFD.
    Utf8Replace,
}

/// A map lookup: how keys match, what the values are, the file, and the value when no
/// key matches (without one, the sample fails).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapConv {
    pub method: MatchMethod,
    pub output: SampleType,
    pub file: super::patfile::PatFile,
    pub default: Option<String>,
}

/// A fetch followed by converters: `hdr(host),lower`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleExpr {
    pub fetch: Fetch,
    pub converters: Vec<Converter>,
}

impl SampleExpr {
    pub fn sample_type(&self) -> SampleType {
        let mut t = self.fetch.sample_type();
        for c in &self.converters {
            t = match c {
                Converter::Lower | Converter::Upper => SampleType::Str,
                Converter::IpMask { .. } => SampleType::Ip,
                Converter::Map(m) => m.output,
                _ => SampleType::Str,
            };
        }
        t
    }
}

/// Splits `s` at top-level commas (commas inside parentheses stay).
fn split_top(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// `name(a,b)` -> (`name`, [a, b]); `name` -> (`name`, []).
fn split_call(s: &str) -> Result<(&str, Vec<String>), String> {
    match s.find('(') {
        None => Ok((s, Vec::new())),
        Some(i) => {
            let Some(inner) = s[i + 1..].strip_suffix(')') else {
                return Err(format!("missing ')' in {s:?}"));
            };
            let args = if inner.is_empty() {
                Vec::new()
            } else {
                inner.split(',').map(|a| a.trim().to_owned()).collect()
            };
            Ok((&s[..i], args))
        }
    }
}

/// The converter keywords, for suggestions in errors.
const CONVERTER_NAMES: &[&str] = &[
    "lower", "upper", "ipmask", "field", "word", "bytes", "hex", "base64", "url_dec", "regsub",
    "json", "map", "map_str", "map_beg", "map_end", "map_sub", "map_dir", "map_dom", "map_reg",
    "map_ip", "map_int",
];

/// The fetch keywords, for suggestions in errors.
pub const FETCH_NAMES: &[&str] = &[
    "always_true",
    "always_false",
    "src",
    "src_port",
    "dst",
    "dst_port",
    "method",
    "path",
    "url",
    "query",
    "base",
    "url_param",
    "urlp",
    "hdr",
    "req.hdr",
    "hdr_cnt",
    "req.hdr_cnt",
    "hdr_val",
    "req.hdr_val",
    "cook",
    "req.cook",
    "ssl_fc",
    "ssl_c_used",
    "ssl_c_verify",
    "ssl_c_s_dn",
    "ssl_c_i_dn",
    "ssl_c_serial",
    "ssl_c_sha1",
    "ssl_c_sha256",
    "ssl_c_notbefore",
    "ssl_c_notafter",
    "ssl_fc_sni",
    "fc_pp_authority",
    "fc_pp_unique_id",
    "fc_pp_tlv",
    "req.ver",
    "req_ver",
    "nbsrv",
    "fe_name",
    "table_cnt",
    "table_avl",
    "req.len",
    "req_len",
    "req.ssl_sni",
    "req_ssl_sni",
    "req.ssl_hello_type",
    "req_ssl_hello_type",
    "sc0_http_req_rate",
    "sc0_conn_cur",
    "sc0_conn_rate",
    "sc0_get_gpc0",
    "sc0_inc_gpc0",
    "sc0_get_gpt0",
    "sc0_tracked",
    "sc_http_req_rate",
    "src_http_req_rate",
    "src_conn_cur",
    "src_get_gpc0",
    "path_beg",
    "path_end",
    "path_sub",
    "path_reg",
    "path_dir",
    "path_dom",
    "path_len",
    "url_beg",
    "url_end",
    "url_sub",
    "url_reg",
    "url_dir",
    "url_dom",
    "hdr_beg",
    "hdr_end",
    "hdr_sub",
    "hdr_reg",
    "hdr_dir",
    "hdr_dom",
    "hdr_len",
    "hdr_ip",
    "urlp_beg",
    "urlp_reg",
    "cook_beg",
    "cook_sub",
    "cook_reg",
    "ssl_fc_sni_end",
    "ssl_fc_sni_reg",
    "base_beg",
    "base_sub",
    "base_reg",
];

fn one_arg(name: &str, args: &[String]) -> Result<String, String> {
    match args {
        [a] if !a.is_empty() => Ok(a.clone()),
        _ => Err(format!("{name} takes one argument, like {name}(name)")),
    }
}

fn no_args(name: &str, args: &[String]) -> Result<(), String> {
    if args.is_empty() {
        Ok(())
    } else {
        Err(format!("{name} takes no arguments"))
    }
}

fn header_arg(name: &str, args: &[String]) -> Result<String, String> {
    let h = one_arg(name, args)?;
    http::HeaderName::from_bytes(h.as_bytes()).map_err(|_| format!("invalid header name {h:?}"))?;
    Ok(h.to_ascii_lowercase())
}

/// Resolves a fetch keyword with its arguments. A keyword with a match suffix
/// (`path_beg`, `hdr_sub(host)`) also returns the match method it implies.
pub fn resolve_fetch(word: &str, args: &[String]) -> Result<(Fetch, Option<MatchMethod>), String> {
    let plain = |f: Fetch| -> Result<(Fetch, Option<MatchMethod>), String> {
        no_args(word, args)?;
        Ok((f, None))
    };
    match word {
        "always_true" => return plain(Fetch::AlwaysTrue),
        "always_false" => return plain(Fetch::AlwaysFalse),
        "src" => return plain(Fetch::Src),
        "src_port" => return plain(Fetch::SrcPort),
        "dst" => return plain(Fetch::Dst),
        "dst_port" => return plain(Fetch::DstPort),
        "method" => return plain(Fetch::Method),
        "path" => return plain(Fetch::Path),
        "url" => return plain(Fetch::Url),
        "query" => return plain(Fetch::Query),
        "base" => return plain(Fetch::Base),
        "ssl_fc" => return plain(Fetch::SslFc),
        "ssl_fc_sni" => return plain(Fetch::SslFcSni),
        "ssl_c_used" => return plain(Fetch::ClientCert(CertField::Used)),
        "ssl_c_verify" => return plain(Fetch::ClientCert(CertField::Verify)),
        "ssl_c_serial" => return plain(Fetch::ClientCert(CertField::Serial)),
        "ssl_c_sha1" => return plain(Fetch::ClientCert(CertField::Sha1)),
        "ssl_c_sha256" => return plain(Fetch::ClientCert(CertField::Sha256)),
        "ssl_c_notbefore" => return plain(Fetch::ClientCert(CertField::NotBefore)),
        "ssl_c_notafter" => return plain(Fetch::ClientCert(CertField::NotAfter)),
        "ssl_c_s_dn" | "ssl_c_i_dn" => {
            let entry = match args {
                [] => None,
                [e] => Some(DnEntry {
                    name: e.to_ascii_uppercase(),
                    occurrence: 1,
                }),
                [e, o] => Some(DnEntry {
                    name: e.to_ascii_uppercase(),
                    occurrence: o.parse().ok().filter(|o: &i64| *o != 0).ok_or_else(|| {
                        format!("{word}: the occurrence is a non-zero number, found {o:?}")
                    })?,
                }),
                _ => {
                    return Err(format!(
                        "{word} takes an optional entry and occurrence, like {word}(CN) or {word}(OU,-1)"
                    ));
                }
            };
            let field = if word == "ssl_c_s_dn" {
                CertField::SubjectDn(entry)
            } else {
                CertField::IssuerDn(entry)
            };
            return Ok((Fetch::ClientCert(field), None));
        }
        "fc_pp_authority" => return plain(Fetch::FcPpAuthority),
        "fc_pp_unique_id" => return plain(Fetch::FcPpUniqueId),
        "fc_pp_tlv" => return Ok((Fetch::FcPpTlv(pp_tlv_type(&one_arg(word, args)?)?), None)),
        "req.ver" | "req_ver" => return plain(Fetch::ReqVer),
        "fe_name" => return plain(Fetch::FeName),
        "req.len" | "req_len" => return plain(Fetch::ReqLen),
        "req.ssl_sni" | "req_ssl_sni" => return plain(Fetch::ReqSslSni),
        "req.ssl_hello_type" | "req_ssl_hello_type" => return plain(Fetch::ReqSslHelloType),
        "url_param" | "urlp" => return Ok((Fetch::UrlParam(one_arg(word, args)?), None)),
        "cook" | "req.cook" => return Ok((Fetch::Cook(one_arg(word, args)?), None)),
        "nbsrv" => return Ok((Fetch::NbSrv(one_arg(word, args)?), None)),
        "table_cnt" => return Ok((Fetch::TableCnt(one_arg(word, args)?), None)),
        "table_avl" => return Ok((Fetch::TableAvl(one_arg(word, args)?), None)),
        "hdr_cnt" | "req.hdr_cnt" => return Ok((Fetch::HdrCnt(header_arg(word, args)?), None)),
        "hdr_val" | "req.hdr_val" => return Ok((Fetch::HdrVal(header_arg(word, args)?), None)),
        "hdr" | "req.hdr" => {
            let (name, occurrence) = match args {
                [n] => (n, None),
                [n, o] => {
                    let o: i64 = o.parse().ok().filter(|o| *o != 0).ok_or_else(|| {
                        format!("hdr occurrence must be a non-zero number, found {o:?}")
                    })?;
                    (n, Some(o))
                }
                _ => {
                    return Err(format!(
                        "{word} takes a header name and an optional occurrence, like {word}(host)"
                    ));
                }
            };
            let name = header_arg(word, std::slice::from_ref(name))?;
            return Ok((Fetch::Hdr { name, occurrence }, None));
        }
        _ => {}
    }
    if let Some(r) = resolve_sc(word, args) {
        return r.map(|f| (f, None));
    }
    // A base keyword with a match suffix.
    if let Some((base, suffix)) = word.rsplit_once('_') {
        let method = match suffix {
            "ip" => Some(MatchMethod::Ip),
            s => MatchMethod::from_name(s).filter(|m| {
                matches!(
                    m,
                    MatchMethod::Beg
                        | MatchMethod::End
                        | MatchMethod::Sub
                        | MatchMethod::Reg
                        | MatchMethod::Dir
                        | MatchMethod::Dom
                        | MatchMethod::Len
                        | MatchMethod::Found
                )
            }),
        };
        let base_ok = matches!(
            base,
            "path"
                | "url"
                | "hdr"
                | "req.hdr"
                | "urlp"
                | "url_param"
                | "cook"
                | "req.cook"
                | "ssl_fc_sni"
                | "req.ssl_sni"
                | "req_ssl_sni"
                | "base"
        );
        if let (Some(m), true) = (method, base_ok) {
            let (fetch, _) = resolve_fetch(base, args)?;
            return Ok((fetch, Some(m)));
        }
    }
    let hint = crate::error::nearest(word, FETCH_NAMES.iter().copied())
        .map(|n| format!(" (did you mean {n:?}?)"))
        .unwrap_or_default();
    Err(format!("unknown fetch {word:?}{hint}"))
}

/// A PROXY v2 TLV type: a number (`0xEA`, `234`) or HAProxy's name for it.
fn pp_tlv_type(a: &str) -> Result<u8, String> {
    let named = match a.to_ascii_uppercase().as_str() {
        "ALPN" => Some(0x01),
        "AUTHORITY" => Some(0x02),
        "CRC32C" => Some(0x03),
        "NOOP" => Some(0x04),
        "UNIQUE_ID" => Some(0x05),
        "SSL" => Some(0x20),
        "NETNS" => Some(0x30),
        _ => None,
    };
    let number = match a.strip_prefix("0x").or_else(|| a.strip_prefix("0X")) {
        Some(h) => u8::from_str_radix(h, 16).ok(),
        None => a.parse().ok(),
    };
    named.or(number).ok_or_else(|| {
        format!(
            "fc_pp_tlv: {a:?} is not a TLV type (0 to 255, 0x00 to 0xFF, or a name like AUTHORITY)"
        )
    })
}

fn parse_converter(s: &str, files: &dyn PatternFiles) -> Result<Converter, String> {
    let (name, args) = split_call(s.trim())?;
    if let Some(m) = parse_map(name, &args, files)? {
        return Ok(Converter::Map(Box::new(m)));
    }
    let mask = |a: &str, max: u8| -> Result<u8, String> {
        a.parse::<u8>()
            .ok()
            .filter(|m| *m <= max)
            .ok_or_else(|| format!("ipmask: invalid prefix length {a:?} (at most {max})"))
    };
    match name {
        "lower" if args.is_empty() => Ok(Converter::Lower),
        "upper" if args.is_empty() => Ok(Converter::Upper),
        "ipmask" => match args.as_slice() {
            [v4] => Ok(Converter::IpMask {
                v4: mask(v4, 32)?,
                v6: None,
            }),
            [v4, v6] => Ok(Converter::IpMask {
                v4: mask(v4, 32)?,
                v6: Some(mask(v6, 128)?),
            }),
            _ => Err(
                "ipmask takes one or two prefix lengths, like ipmask(24) or ipmask(24,64)".into(),
            ),
        },
        "field" | "word" => {
            let usage = || {
                format!("{name} takes an index, delimiters and an optional count, like {name}(2,/)")
            };
            let (i, d, c) = match args.as_slice() {
                [i, d] => (i, d, None),
                [i, d, c] => (i, d, Some(c)),
                _ => return Err(usage()),
            };
            let index: i64 =
                i.parse().ok().filter(|i| *i != 0).ok_or_else(|| {
                    format!("{name}: the index is a non-zero number, found {i:?}")
                })?;
            if d.is_empty() {
                return Err(format!("{name}: name at least one delimiter"));
            }
            let count = match c {
                None => 1,
                Some(c) => c
                    .parse()
                    .map_err(|_| format!("{name}: the count is a number, found {c:?}"))?,
            };
            Ok(Converter::Fields {
                index,
                delims: d.as_bytes().to_vec(),
                count,
                words: name == "word",
            })
        }
        "bytes" => {
            let num = |a: &str| {
                a.parse::<u64>()
                    .map_err(|_| format!("bytes: expected a byte count, found {a:?}"))
            };
            match args.as_slice() {
                [o] => Ok(Converter::Bytes {
                    offset: num(o)?,
                    length: None,
                }),
                [o, l] => Ok(Converter::Bytes {
                    offset: num(o)?,
                    length: Some(num(l)?),
                }),
                _ => Err("bytes takes an offset and an optional length, like bytes(0,8)".into()),
            }
        }
        "hex" if args.is_empty() => Ok(Converter::Hex),
        "base64" if args.is_empty() => Ok(Converter::Base64),
        "url_dec" => match args.as_slice() {
            [] => Ok(Converter::UrlDec { in_form: false }),
            [f] => match f.parse::<i64>() {
                Ok(n) => Ok(Converter::UrlDec { in_form: n != 0 }),
                Err(_) => Err(format!("url_dec: in_form is a number, found {f:?}")),
            },
            _ => Err("url_dec takes at most one argument (in_form)".into()),
        },
        "regsub" => {
            let (regex, subst, flags) = match args.as_slice() {
                [r, s] => (r, s, ""),
                [r, s, f] => (r, s, f.as_str()),
                _ => {
                    return Err(
                        "regsub takes a regular expression, a replacement and optional flags, like regsub(^/api/,/)"
                            .into(),
                    );
                }
            };
            if let Some(bad) = flags.chars().find(|c| !matches!(c, 'g' | 'i')) {
                return Err(format!("regsub: unknown flag {bad:?} (known: g, i)"));
            }
            let icase = flags.contains('i');
            files.regex(super::check_regex(regex, icase)?)?;
            Ok(Converter::RegSub {
                regex: regex.clone(),
                subst: subst.clone(),
                global: flags.contains('g'),
                icase,
            })
        }
        "json" => match args.as_slice() {
            [] => Ok(Converter::Json(JsonInput::Ascii)),
            [c] => match c.as_str() {
                "ascii" => Ok(Converter::Json(JsonInput::Ascii)),
                "utf8" => Ok(Converter::Json(JsonInput::Utf8)),
                "utf8s" => Ok(Converter::Json(JsonInput::Utf8Skip)),
                "utf8p" | "utf8ps" => Ok(Converter::Json(JsonInput::Utf8Replace)),
                other => Err(format!(
                    "json: unknown input code {other:?} (known: ascii, utf8, utf8s, utf8p, utf8ps)"
                )),
            },
            _ => Err("json takes at most one argument (the input code)".into()),
        },
        "lower" | "upper" | "hex" | "base64" => Err(format!("{name} takes no arguments")),
        _ => Err(format!(
            "unknown converter {name:?} ({})",
            crate::error::nearest(name, CONVERTER_NAMES.iter().copied())
                .map(|n| format!("did you mean {n:?}?"))
                .unwrap_or_else(|| format!("known: {}", CONVERTER_NAMES.join(", ")))
        )),
    }
}

/// `map`, `map_<match>` and `map_<match>_<output>`: the map converter `name` names, its
/// file loaded and checked line by line; `None` when `name` is no map converter.
fn parse_map(
    name: &str,
    args: &[String],
    files: &dyn PatternFiles,
) -> Result<Option<MapConv>, String> {
    let Some(rest) = name.strip_prefix("map") else {
        return Ok(None);
    };
    let mut parts = rest.split('_').skip(1);
    let (m, o) = (parts.next(), parts.next());
    if parts.next().is_some() || (!rest.is_empty() && !rest.starts_with('_')) {
        return Ok(None);
    }
    let method = match m.unwrap_or("str") {
        "str" => MatchMethod::Str,
        "beg" => MatchMethod::Beg,
        "end" => MatchMethod::End,
        "sub" => MatchMethod::Sub,
        "dir" => MatchMethod::Dir,
        "dom" => MatchMethod::Dom,
        "reg" | "regm" => MatchMethod::Reg,
        "ip" => MatchMethod::Ip,
        "int" => MatchMethod::Int,
        other => {
            return Err(format!(
                "{name}: unknown match type {other:?} (known: str, beg, end, sub, dir, dom, reg, ip, int)"
            ));
        }
    };
    let output = match o.unwrap_or("str") {
        "str" => SampleType::Str,
        "int" => SampleType::Int,
        "ip" => SampleType::Ip,
        other => {
            return Err(format!(
                "{name}: unknown output type {other:?} (known: str, int, ip)"
            ));
        }
    };
    let (file, default) = match args {
        [f] => (f, None),
        [f, d] => (f, Some(d.clone())),
        _ => {
            return Err(format!(
                "{name} takes a map file and an optional default value, like {name}(hosts.map,web)"
            ));
        }
    };
    if let Some(d) = &default {
        super::patfile::check_value(output, d)
            .map_err(|e| format!("{name}: the default value: {e}"))?;
    }
    let file = files.load(file)?;
    let (n, states) = super::patfile::check_file(&file, method, false, Some(output))
        .map_err(|e| format!("{name}: {e}"))?;
    files.count(n).map_err(|e| format!("{}: {e}", file.name))?;
    files.regex(states)?;
    Ok(Some(MapConv {
        method,
        output,
        file,
        default,
    }))
}

/// Parses a sample expression like `hdr(host),lower`. Returns the match method a suffixed
/// keyword implies (only meaningful in ACLs). `files` reads the map files converters name.
pub fn parse_sample(
    s: &str,
    files: &dyn PatternFiles,
) -> Result<(SampleExpr, Option<MatchMethod>), String> {
    let parts = split_top(s);
    let (word, args) = split_call(parts[0].trim())?;
    let (fetch, implied) = resolve_fetch(word, &args)?;
    let converters = parts[1..]
        .iter()
        .map(|c| parse_converter(c, files))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((SampleExpr { fetch, converters }, implied))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::acl::NoFiles;

    fn parse_sample(s: &str) -> Result<(SampleExpr, Option<MatchMethod>), String> {
        super::parse_sample(s, &NoFiles)
    }

    #[test]
    fn parse_sample_with_suffix_and_converters() {
        let (e, m) = parse_sample("hdr_beg(Host)").unwrap();
        assert_eq!(
            e.fetch,
            Fetch::Hdr {
                name: "host".into(),
                occurrence: None
            }
        );
        assert_eq!(m, Some(MatchMethod::Beg));
        let (e, m) = parse_sample("src,ipmask(24,64)").unwrap();
        assert_eq!(
            e.converters,
            vec![Converter::IpMask {
                v4: 24,
                v6: Some(64)
            }]
        );
        assert_eq!(m, None);
        assert_eq!(e.sample_type(), SampleType::Ip);
        let (e, _) = parse_sample("hdr(x-forwarded-for,-1)").unwrap();
        assert_eq!(
            e.fetch,
            Fetch::Hdr {
                name: "x-forwarded-for".into(),
                occurrence: Some(-1)
            }
        );
    }

    #[test]
    fn parse_stick_counter_fetches() {
        use crate::stick::DataKind;
        let (e, _) = parse_sample("sc0_http_req_rate").unwrap();
        assert_eq!(
            e.fetch,
            Fetch::Sc(ScFetch {
                source: ScSource::Slot(0),
                op: ScOp::Get(DataKind::HttpReqRate),
                table: None
            })
        );
        let (e, _) = parse_sample("sc2_get_gpc0(t1)").unwrap();
        assert_eq!(e.fetch.to_string(), "sc2_get_gpc0(t1)");
        let (e, _) = parse_sample("sc_conn_cur(1,t)").unwrap();
        assert_eq!(e.fetch.to_string(), "sc1_conn_cur(t)");
        let (e, _) = parse_sample("src_conn_cur(per_ip)").unwrap();
        assert_eq!(e.fetch.to_string(), "src_conn_cur(per_ip)");
        assert_eq!(e.sample_type(), SampleType::Int);
        let (e, _) = parse_sample("sc1_tracked").unwrap();
        assert_eq!(e.sample_type(), SampleType::Bool);
        assert!(parse_sample("sc3_conn_cur").is_err());
        assert!(parse_sample("sc_conn_cur").is_err());
        assert!(parse_sample("sc0_http_req_rat").is_err());
        let (e, _) = parse_sample("table_cnt(per_ip)").unwrap();
        assert_eq!(e.fetch, Fetch::TableCnt("per_ip".into()));
    }

    #[test]
    fn parse_sample_unknown_fetch_suggests() {
        let e = parse_sample("path_begin").unwrap_err();
        assert!(e.contains("did you mean \"path_beg\""), "{e}");
        assert!(
            parse_sample("hdr")
                .unwrap_err()
                .contains("takes a header name")
        );
        assert!(
            parse_sample("src,ipmask(33)")
                .unwrap_err()
                .contains("prefix length")
        );
        assert!(
            parse_sample("hdr(bad header)")
                .unwrap_err()
                .contains("invalid header name")
        );
    }
}
