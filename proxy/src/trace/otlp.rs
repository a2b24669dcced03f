//! OTLP export: spans in OpenTelemetry's protobuf messages, sent in batches to a
//! collector over HTTP (`POST /v1/traces`, `application/x-protobuf`) or gRPC
//! (`opentelemetry.proto.collector.trace.v1.TraceService/Export`).
//!
//! The messages are the subset of `opentelemetry/proto/trace/v1/trace.proto`,
//! `common/v1/common.proto`, `resource/v1/resource.proto` and
//! `collector/trace/v1/trace_service.proto` that spans here use, with the same field
//! numbers.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rampart_config::model::Tracing;

use super::{Counters, Detail, SpanRecord};

#[derive(Clone, PartialEq, prost::Message)]
pub struct ExportTraceServiceRequest {
    #[prost(message, repeated, tag = "1")]
    pub resource_spans: Vec<ResourceSpans>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ExportTraceServiceResponse {
    #[prost(message, optional, tag = "1")]
    pub partial_success: Option<ExportTracePartialSuccess>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ExportTracePartialSuccess {
    #[prost(int64, tag = "1")]
    pub rejected_spans: i64,
    #[prost(string, tag = "2")]
    pub error_message: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ResourceSpans {
    #[prost(message, optional, tag = "1")]
    pub resource: Option<Resource>,
    #[prost(message, repeated, tag = "2")]
    pub scope_spans: Vec<ScopeSpans>,
    #[prost(string, tag = "3")]
    pub schema_url: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Resource {
    #[prost(message, repeated, tag = "1")]
    pub attributes: Vec<KeyValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ScopeSpans {
    #[prost(message, optional, tag = "1")]
    pub scope: Option<InstrumentationScope>,
    #[prost(message, repeated, tag = "2")]
    pub spans: Vec<Span>,
    #[prost(string, tag = "3")]
    pub schema_url: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct InstrumentationScope {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub version: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Span {
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub span_id: Vec<u8>,
    #[prost(string, tag = "3")]
    pub trace_state: String,
    #[prost(bytes = "vec", tag = "4")]
    pub parent_span_id: Vec<u8>,
    #[prost(string, tag = "5")]
    pub name: String,
    #[prost(int32, tag = "6")]
    pub kind: i32,
    #[prost(fixed64, tag = "7")]
    pub start_time_unix_nano: u64,
    #[prost(fixed64, tag = "8")]
    pub end_time_unix_nano: u64,
    #[prost(message, repeated, tag = "9")]
    pub attributes: Vec<KeyValue>,
    #[prost(message, optional, tag = "15")]
    pub status: Option<Status>,
    #[prost(fixed32, tag = "16")]
    pub flags: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Status {
    #[prost(string, tag = "2")]
    pub message: String,
    /// 0 unset, 1 ok, 2 error.
    #[prost(int32, tag = "3")]
    pub code: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<AnyValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AnyValue {
    #[prost(oneof = "any_value::Value", tags = "1, 2, 3, 4")]
    pub value: Option<any_value::Value>,
}

pub mod any_value {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        #[prost(string, tag = "1")]
        StringValue(String),
        #[prost(bool, tag = "2")]
        BoolValue(bool),
        #[prost(int64, tag = "3")]
        IntValue(i64),
        #[prost(double, tag = "4")]
        DoubleValue(f64),
    }
}

// ---- encoding, straight from the records into one buffer ----
//
// The messages above describe the format (and decode it in tests); encoding writes the
// same fields from the span records without building them: no string is copied twice.

const LEN: u64 = 2;
const FIXED64: u64 = 1;
const VARINT: u64 = 0;

/// A varint; most here (tags, short lengths) are one byte.
#[inline]
fn varint(v: u64, b: &mut Vec<u8>) {
    if v < 0x80 {
        b.push(v as u8);
    } else {
        prost::encoding::encode_varint(v, b);
    }
}

#[inline]
fn key(b: &mut Vec<u8>, tag: u64, wire: u64) {
    varint(tag << 3 | wire, b);
}

fn bytes_field(b: &mut Vec<u8>, tag: u64, v: &[u8]) {
    key(b, tag, LEN);
    varint(v.len() as u64, b);
    b.extend_from_slice(v);
}

/// A `KeyValue` with a string value.
fn string_attr(b: &mut Vec<u8>, tag: u64, k: &str, v: &[u8]) {
    // KeyValue { key = 1; value = 2 AnyValue { string_value = 1 } }
    let any = 1 + varint_len(v.len() as u64) + v.len();
    let kv = 1 + varint_len(k.len() as u64) + k.len() + 1 + varint_len(any as u64) + any;
    key(b, tag, LEN);
    varint(kv as u64, b);
    bytes_field(b, 1, k.as_bytes());
    key(b, 2, LEN);
    varint(any as u64, b);
    bytes_field(b, 1, v);
}

#[inline]
fn varint_len(v: u64) -> usize {
    if v < 0x80 {
        1
    } else {
        prost::encoding::encoded_len_varint(v)
    }
}

/// A `KeyValue`'s key field (`key = 1`) ready to copy, built at compile time.
const fn key_field<const N: usize>(k: &str) -> [u8; N] {
    let b = k.as_bytes();
    assert!(N == b.len() + 2 && b.len() < 0x80);
    let mut out = [0u8; N];
    out[0] = 0x0a;
    out[1] = b.len() as u8;
    let mut i = 0;
    while i < b.len() {
        out[2 + i] = b[i];
        i += 1;
    }
    out
}

const K_METHOD: [u8; 21] = key_field("http.request.method");
const K_PATH: [u8; 10] = key_field("url.path");
const K_STATUS: [u8; 27] = key_field("http.response.status_code");
const K_CLIENT: [u8; 16] = key_field("client.address");
const K_FRONTEND: [u8; 18] = key_field("rampart.frontend");
const K_BACKEND: [u8; 17] = key_field("rampart.backend");
const K_SERVER: [u8; 16] = key_field("rampart.server");
const K_RETRIES: [u8; 17] = key_field("rampart.retries");
const K_TERMINATION: [u8; 21] = key_field("rampart.termination");
const K_SERVER_ADDRESS: [u8; 16] = key_field("server.address");
const K_ATTEMPT: [u8; 17] = key_field("rampart.attempt");
const K_ERROR_TYPE: [u8; 12] = key_field("error.type");

/// A span's `KeyValue` (`attributes = 9`) with a string value, its key field given.
#[inline]
fn kstr(b: &mut Vec<u8>, k: &[u8], v: &[u8]) {
    let any = 1 + varint_len(v.len() as u64) + v.len();
    let kv = k.len() + 1 + varint_len(any as u64) + any;
    b.push(9 << 3 | 2);
    varint(kv as u64, b);
    b.extend_from_slice(k);
    b.push(2 << 3 | 2);
    varint(any as u64, b);
    b.push(1 << 3 | 2);
    varint(v.len() as u64, b);
    b.extend_from_slice(v);
}

/// A span's `KeyValue` with an integer value, its key field given.
#[inline]
fn kint(b: &mut Vec<u8>, k: &[u8], v: i64) {
    let any = 1 + varint_len(v as u64);
    let kv = k.len() + 1 + varint_len(any as u64) + any;
    b.push(9 << 3 | 2);
    varint(kv as u64, b);
    b.extend_from_slice(k);
    b.push(2 << 3 | 2);
    varint(any as u64, b);
    b.push(3 << 3);
    varint(v as u64, b);
}

/// A `KeyValue` with a value written as text.
fn display_attr(b: &mut Vec<u8>, k: &[u8], v: impl std::fmt::Display, text: &mut String) {
    use std::fmt::Write as _;
    text.clear();
    let _ = write!(text, "{v}");
    kstr(b, k, text.as_bytes());
}

/// Writes `n` in decimal.
fn push_dec(t: &mut Vec<u8>, n: u32) {
    let mut digits = [0u8; 10];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    t.extend_from_slice(&digits[i..]);
}

/// An IPv4 address (and port) written without the formatting machinery, which is slow
/// for what it does here; IPv6 through it.
fn addr_attr(
    b: &mut Vec<u8>,
    k: &[u8],
    ip: std::net::IpAddr,
    port: Option<u16>,
    scratch: &mut Vec<u8>,
    text: &mut String,
) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            scratch.clear();
            for (i, o) in v4.octets().iter().enumerate() {
                if i > 0 {
                    scratch.push(b'.');
                }
                push_dec(scratch, u32::from(*o));
            }
            if let Some(p) = port {
                scratch.push(b':');
                push_dec(scratch, u32::from(p));
            }
            kstr(b, k, scratch);
        }
        std::net::IpAddr::V6(_) => match port {
            Some(p) => display_attr(b, k, std::net::SocketAddr::new(ip, p), text),
            None => display_attr(b, k, ip, text),
        },
    }
}

fn encode_span(r: &SpanRecord, b: &mut Vec<u8>, text: &mut String, scratch: &mut Vec<u8>) {
    bytes_field(b, 1, &r.trace_id);
    bytes_field(b, 2, &r.span_id);
    if let Some(ts) = &r.trace_state {
        bytes_field(b, 3, ts.as_bytes());
    }
    if r.parent != [0; 8] {
        bytes_field(b, 4, &r.parent);
    }
    let method = r.method;
    bytes_field(b, 5, method.as_bytes());
    key(b, 6, VARINT);
    varint(r.kind() as u64, b);
    key(b, 7, FIXED64);
    b.extend_from_slice(&r.start.to_le_bytes());
    key(b, 8, FIXED64);
    b.extend_from_slice(&r.end.max(r.start).to_le_bytes());
    kstr(b, &K_METHOD, method.as_bytes());
    match &r.detail {
        Detail::Request {
            path,
            status,
            client,
            frontend,
            backend,
            server,
            retries,
            termination,
        } => {
            kstr(b, &K_PATH, path.as_bytes());
            if *status != 0 {
                kint(b, &K_STATUS, i64::from(*status));
            }
            addr_attr(b, &K_CLIENT, *client, None, scratch, text);
            kstr(b, &K_FRONTEND, frontend.as_bytes());
            if let Some(be) = backend {
                kstr(b, &K_BACKEND, be.as_bytes());
            }
            if let Some(s) = server {
                kstr(b, &K_SERVER, s.as_bytes());
            }
            kint(b, &K_RETRIES, i64::from(*retries));
            kstr(b, &K_TERMINATION, termination);
        }
        Detail::Attempt {
            address,
            backend,
            server,
            attempt,
            result,
        } => {
            addr_attr(
                b,
                &K_SERVER_ADDRESS,
                address.ip(),
                Some(address.port()),
                scratch,
                text,
            );
            kstr(b, &K_BACKEND, backend.as_bytes());
            kstr(b, &K_SERVER, server.as_bytes());
            kint(b, &K_ATTEMPT, i64::from(*attempt));
            match result {
                Ok(s) => kint(b, &K_STATUS, i64::from(*s)),
                Err(e) => kstr(b, &K_ERROR_TYPE, e.as_bytes()),
            }
        }
    }
    if let Some(m) = r.error {
        // Status { message = 2; code = 3 (2: error) }
        let len = 1 + varint_len(m.len() as u64) + m.len() + 2;
        key(b, 15, LEN);
        varint(len as u64, b);
        bytes_field(b, 2, m.as_bytes());
        key(b, 3, VARINT);
        varint(2, b);
    }
    // flags: sampled.
    key(b, 16, 5);
    b.extend_from_slice(&1u32.to_le_bytes());
}

/// Room for a length of `n` bytes, filled by [`fill`] once the length is known: a varint
/// padded with continuation bytes, which protobuf decoders read like any other (the
/// format does not require the shortest form). So every byte is written once, in place.
fn placeholder(b: &mut Vec<u8>, n: usize) -> usize {
    let at = b.len();
    b.resize(at + n, 0);
    at
}

fn fill(b: &mut [u8], at: usize, n: usize, len: usize) -> bool {
    if len >> (7 * n) != 0 {
        return false;
    }
    for i in 0..n {
        let more = if i + 1 < n { 0x80 } else { 0 };
        b[at + i] = ((len >> (7 * i)) & 0x7f) as u8 | more;
    }
    true
}

/// One `ExportTraceServiceRequest` for `spans`, encoded in one pass into one buffer. A
/// span too large for its 4-byte length (256 MiB) is left out.
pub fn encode_request(service_name: &str, spans: &[SpanRecord]) -> Vec<u8> {
    let mut text = String::new();
    let mut scratch = Vec::with_capacity(64);
    let mut out = Vec::with_capacity(spans.len() * 640 + 128);
    // ExportTraceServiceRequest { resource_spans = 1 ResourceSpans {
    //   resource = 1 Resource { attributes = 1 }; scope_spans = 2 ScopeSpans {
    //     scope = 1 InstrumentationScope { name = 1; version = 2 }; spans = 2 } } }
    key(&mut out, 1, LEN);
    let resource_spans = placeholder(&mut out, 5);
    let mut resource = Vec::new();
    string_attr(&mut resource, 1, "service.name", service_name.as_bytes());
    string_attr(&mut resource, 1, "telemetry.sdk.name", b"rampart");
    bytes_field(&mut out, 1, &resource);
    key(&mut out, 2, LEN);
    let scope_spans = placeholder(&mut out, 5);
    let mut scope = Vec::new();
    bytes_field(&mut scope, 1, b"rampart");
    bytes_field(&mut scope, 2, env!("CARGO_PKG_VERSION").as_bytes());
    bytes_field(&mut out, 1, &scope);
    for r in spans {
        let start = out.len();
        key(&mut out, 2, LEN);
        let len_at = placeholder(&mut out, 4);
        encode_span(r, &mut out, &mut text, &mut scratch);
        let len = out.len() - len_at - 4;
        if !fill(&mut out, len_at, 4, len) {
            out.truncate(start);
        }
    }
    let end = out.len();
    let scope_len = end - scope_spans - 5;
    let resource_len = end - resource_spans - 5;
    // Both below 2^35: a batch is far smaller.
    fill(&mut out, scope_spans, 5, scope_len);
    fill(&mut out, resource_spans, 5, resource_len);
    out
}

type Body = Full<Bytes>;

enum Conn {
    H1(hyper::client::conn::http1::SendRequest<Body>),
    H2(hyper::client::conn::http2::SendRequest<Body>),
}

/// The exporter thread's state.
pub struct Exporter {
    settings: Tracing,
    counters: Arc<Counters>,
    conn: Option<Conn>,
    /// When the last failure was logged, to log one a minute at most.
    logged: Option<std::time::Instant>,
}

impl Exporter {
    pub fn new(settings: &Tracing, counters: Arc<Counters>) -> Self {
        Self {
            settings: settings.clone(),
            counters,
            conn: None,
            logged: None,
        }
    }

    /// Runs until the tracer goes, sending what is queued in batches: when a batch is
    /// full, and every `interval`.
    pub(crate) fn run(mut self, queue: Arc<super::Queue>) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!("tracing: cannot start the exporter: {e}");
                return;
            }
        };
        rt.block_on(async move {
            let batch = self.settings.batch.max(1);
            let mut tick = tokio::time::interval(self.settings.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let closed = queue.closed.load(Relaxed);
                let mut spans = queue.take();
                for chunk in spans.chunks(batch) {
                    let n = chunk.len() as u64;
                    let msg = encode_request(&self.settings.service_name, chunk);
                    let sent = tokio::time::timeout(self.settings.timeout, self.export(msg)).await;
                    match sent {
                        Ok(Ok(())) => {
                            self.counters.exported.fetch_add(n, Relaxed);
                        }
                        Ok(Err(e)) => self.failed(n, &e),
                        Err(_) => self.failed(n, "the collector did not answer in time"),
                    }
                }
                spans.clear();
                queue.give_back(spans);
                if closed {
                    return;
                }
                tokio::select! {
                    _ = queue.wake.notified() => {}
                    _ = tick.tick() => {}
                }
            }
        });
    }

    fn failed(&mut self, n: u64, why: &str) {
        self.counters.failed.fetch_add(n, Relaxed);
        self.conn = None;
        if self
            .logged
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
        {
            self.logged = Some(std::time::Instant::now());
            tracing::warn!(
                "tracing: {n} spans not exported to {}: {why}",
                self.settings.endpoint.value
            );
        }
    }

    async fn connect(&self) -> Result<Conn, String> {
        let tcp = tokio::net::TcpStream::connect(&self.settings.endpoint.value)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let io = TokioIo::new(tcp);
        if super::is_grpc(self.settings.protocol) {
            let (s, c) =
                hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                    .await
                    .map_err(|e| format!("HTTP/2: {e}"))?;
            tokio::spawn(c);
            Ok(Conn::H2(s))
        } else {
            let (s, c) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| format!("HTTP/1.1: {e}"))?;
            tokio::spawn(c);
            Ok(Conn::H1(s))
        }
    }

    async fn export(&mut self, msg: Vec<u8>) -> Result<(), String> {
        let grpc = super::is_grpc(self.settings.protocol);
        let body = if grpc {
            // gRPC's framing: uncompressed, the length, the message.
            let mut b = BytesMut::with_capacity(5 + msg.len());
            b.put_u8(0);
            b.put_u32(msg.len() as u32);
            b.extend_from_slice(&msg);
            b.freeze()
        } else {
            Bytes::from(msg)
        };
        let usable = match &mut self.conn {
            Some(Conn::H1(s)) => s.ready().await.is_ok(),
            Some(Conn::H2(s)) => s.ready().await.is_ok(),
            None => false,
        };
        if !usable {
            self.conn = Some(self.connect().await?);
        }
        let host = self.settings.endpoint.value.clone();
        let req = if grpc {
            http::Request::post(format!(
                "http://{host}/opentelemetry.proto.collector.trace.v1.TraceService/Export"
            ))
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header(http::header::TE, "trailers")
        } else {
            http::Request::post(self.settings.path.as_str())
                .header(http::header::HOST, host.as_str())
                .header(http::header::CONTENT_TYPE, "application/x-protobuf")
        }
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
        let resp = match &mut self.conn {
            Some(Conn::H1(s)) => s.send_request(req).await,
            Some(Conn::H2(s)) => s.send_request(req).await,
            None => return Err("no connection".into()),
        }
        .map_err(|e| e.to_string())?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let collected = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("the collector answered {status}"));
        }
        if grpc {
            // A trailers-only answer carries grpc-status in its headers.
            let code = collected
                .trailers()
                .and_then(|t| t.get("grpc-status"))
                .or_else(|| headers.get("grpc-status"))
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if code != "0" {
                let msg = collected
                    .trailers()
                    .and_then(|t| t.get("grpc-message"))
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                return Err(format!("grpc-status {code:?} {msg}"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn spans_encode_as_opentelemetry_messages() {
        let attempt = SpanRecord {
            trace_id: [1; 16],
            span_id: [3; 8],
            parent: [2; 8],
            trace_state: None,
            method: "POST",
            start: 11,
            end: 19,
            error: Some("connect_failed"),
            detail: Detail::Attempt {
                address: "[::1]:8080".parse().unwrap(),
                backend: "app".into(),
                server: "s1".into(),
                attempt: 1,
                result: Err("connect_failed"),
            },
        };
        let r = SpanRecord {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent: [0; 8],
            trace_state: Some(Box::new(http::HeaderValue::from_static("v=1"))),
            method: "GET",
            start: 10,
            end: 20,
            error: Some("request failed"),
            detail: Detail::Request {
                path: crate::trace::Path::new("/a/b"),
                status: 503,
                client: "10.1.2.3".parse().unwrap(),
                frontend: "fe".into(),
                backend: Some("app".into()),
                server: None,
                retries: 2,
                termination: *b"SC",
            },
        };
        let msg = encode_request("edge", &[r, attempt]);
        let back = ExportTraceServiceRequest::decode(&msg[..]).unwrap();
        let rs = &back.resource_spans[0];
        assert_eq!(
            rs.resource.as_ref().unwrap().attributes[0].value,
            Some(AnyValue {
                value: Some(any_value::Value::StringValue("edge".into()))
            })
        );
        let s = &rs.scope_spans[0].spans[0];
        assert_eq!((s.kind, s.name.as_str()), (2, "GET"));
        assert_eq!(s.trace_state, "v=1");
        assert!(s.parent_span_id.is_empty());
        assert_eq!(s.trace_id, vec![1; 16]);
        assert_eq!(s.span_id, vec![2; 8]);
        assert_eq!((s.start_time_unix_nano, s.end_time_unix_nano), (10, 20));
        assert_eq!(s.flags, 1);
        assert_eq!(
            s.status,
            Some(Status {
                message: "request failed".into(),
                code: 2
            })
        );
        let text = |k: &str| {
            s.attributes
                .iter()
                .find(|a| a.key == k)
                .and_then(|a| a.value.clone()?.value)
        };
        let str_of = |v: &str| Some(any_value::Value::StringValue(v.into()));
        assert_eq!(
            text("http.response.status_code"),
            Some(any_value::Value::IntValue(503))
        );
        assert_eq!(text("http.request.method"), str_of("GET"));
        assert_eq!(text("url.path"), str_of("/a/b"));
        assert_eq!(text("client.address"), str_of("10.1.2.3"));
        assert_eq!(text("rampart.frontend"), str_of("fe"));
        assert_eq!(text("rampart.termination"), str_of("SC"));
        assert_eq!(text("rampart.retries"), Some(any_value::Value::IntValue(2)));
        assert_eq!(text("rampart.backend"), str_of("app"));
        assert_eq!(text("rampart.server"), None);
        let a = &rs.scope_spans[0].spans[1];
        assert_eq!((a.kind, a.name.as_str()), (3, "POST"));
        assert_eq!(a.parent_span_id, vec![2; 8]);
        let attr = |k: &str| {
            a.attributes
                .iter()
                .find(|x| x.key == k)
                .and_then(|x| x.value.clone()?.value)
        };
        assert_eq!(attr("server.address"), str_of("[::1]:8080"));
        assert_eq!(attr("error.type"), str_of("connect_failed"));
        assert_eq!(attr("rampart.attempt"), Some(any_value::Value::IntValue(1)));
        assert_eq!(rs.scope_spans[0].scope.as_ref().unwrap().name, "rampart");
    }
}
