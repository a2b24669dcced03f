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

use super::{AttemptRecord, Counters, Kind, TraceRecord};

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

/// The start of a span's `KeyValue` (`attributes = 9`) whose lengths are all one byte,
/// put together on the stack: its tag and length, the key field, the value's tag and
/// length, the tag of the value's one field. Returns where that field's value goes.
#[inline]
fn short_kv_head<const N: usize>(
    head: &mut [u8; 40],
    k: &[u8; N],
    kv: usize,
    any: usize,
    tag: u8,
) -> usize {
    head[0] = 9 << 3 | 2;
    head[1] = kv as u8;
    head[2..2 + N].copy_from_slice(k);
    head[2 + N] = 2 << 3 | 2;
    head[3 + N] = any as u8;
    head[4 + N] = tag;
    5 + N
}

/// The same, any lengths, written out field by field.
fn long_kv_head<const N: usize>(b: &mut Vec<u8>, k: &[u8; N], kv: usize, any: usize, tag: u8) {
    b.push(9 << 3 | 2);
    varint(kv as u64, b);
    b.extend_from_slice(k);
    b.push(2 << 3 | 2);
    varint(any as u64, b);
    b.push(tag);
}

/// A span's `KeyValue` with a string value, its key field given.
#[inline]
fn kstr<const N: usize>(b: &mut Vec<u8>, k: &[u8; N], v: &[u8]) {
    let any = 1 + varint_len(v.len() as u64) + v.len();
    let kv = N + 1 + varint_len(any as u64) + any;
    if kv < 0x80 && N <= 34 {
        let mut head = [0u8; 40];
        let at = short_kv_head(&mut head, k, kv, any, 1 << 3 | 2);
        head[at] = v.len() as u8;
        b.extend_from_slice(&head[..at + 1]);
    } else {
        long_kv_head(b, k, kv, any, 1 << 3 | 2);
        varint(v.len() as u64, b);
    }
    b.extend_from_slice(v);
}

/// A span's `KeyValue` with an integer value, its key field given.
#[inline]
fn kint<const N: usize>(b: &mut Vec<u8>, k: &[u8; N], v: i64) {
    let any = 1 + varint_len(v as u64);
    let kv = N + 1 + varint_len(any as u64) + any;
    if kv < 0x80 && N <= 33 && (0..0x4000).contains(&v) {
        // A value of one or two bytes.
        let mut head = [0u8; 40];
        let at = short_kv_head(&mut head, k, kv, any, 3 << 3);
        let n = if v < 0x80 {
            head[at] = v as u8;
            1
        } else {
            head[at] = (v & 0x7f) as u8 | 0x80;
            head[at + 1] = (v >> 7) as u8;
            2
        };
        b.extend_from_slice(&head[..at + n]);
    } else {
        long_kv_head(b, k, kv, any, 3 << 3);
        varint(v as u64, b);
    }
}

/// `n` in decimal at the end of `out[..at]`; the new end.
fn put_dec(out: &mut [u8; 48], mut at: usize, n: u32) -> usize {
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
    let d = &digits[i..];
    out[at..at + d.len()].copy_from_slice(d);
    at += d.len();
    at
}

/// An address (and port) as a string attribute; IPv4 written without the formatting
/// machinery, which is slow for what it does here.
fn addr_attr<const N: usize>(
    b: &mut Vec<u8>,
    k: &[u8; N],
    ip: std::net::IpAddr,
    port: Option<u16>,
) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            // At most "255.255.255.255:65535".
            let mut text = [0u8; 48];
            let mut at = 0;
            for (i, o) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    text[at] = b'.';
                    at += 1;
                }
                if o >= 100 {
                    text[at] = b'0' + o / 100;
                    at += 1;
                }
                if o >= 10 {
                    text[at] = b'0' + o / 10 % 10;
                    at += 1;
                }
                text[at] = b'0' + o % 10;
                at += 1;
            }
            if let Some(p) = port {
                text[at] = b':';
                at = put_dec(&mut text, at + 1, u32::from(p));
            }
            kstr(b, k, &text[..at]);
        }
        std::net::IpAddr::V6(_) => {
            let text = match port {
                Some(p) => std::net::SocketAddr::new(ip, p).to_string(),
                None => ip.to_string(),
            };
            kstr(b, k, text.as_bytes());
        }
    }
}

/// `rampart.frontend`, to be copied into request spans.
pub fn frontend_attr(name: &str) -> Arc<[u8]> {
    let mut b = Vec::with_capacity(24 + name.len());
    kstr(&mut b, &K_FRONTEND, name.as_bytes());
    b.into()
}

/// `rampart.backend`, and `rampart.server` when there is one.
pub(crate) fn names_attrs(b: &mut Vec<u8>, backend: &str, server: Option<&str>) {
    kstr(b, &K_BACKEND, backend.as_bytes());
    if let Some(s) = server {
        kstr(b, &K_SERVER, s.as_bytes());
    }
}

/// `server.address`.
pub(crate) fn address_attr(b: &mut Vec<u8>, a: std::net::SocketAddr) {
    addr_attr(b, &K_SERVER_ADDRESS, a.ip(), Some(a.port()));
}

/// The fields every span starts with (through its times and its method attribute), put
/// together on the stack and copied at once. Protobuf fields may come in any order: the
/// rare `trace_state` goes after them.
#[allow(clippy::too_many_arguments)]
fn span_head(
    b: &mut Vec<u8>,
    trace_id: &[u8; 16],
    span_id: &[u8; 8],
    trace_state: Option<&http::HeaderValue>,
    parent: &[u8; 8],
    method: &str,
    kind: Kind,
    start: u64,
    end: u64,
) {
    // A method name here is at most 7 bytes ("OPTIONS"): 38 + 9 + 2 + 18 + 35 bytes.
    let m = method.as_bytes();
    if m.len() > 16 {
        return span_head(
            b,
            trace_id,
            span_id,
            trace_state,
            parent,
            "_OTHER",
            kind,
            start,
            end,
        );
    }
    let mut h = [0u8; 140];
    h[0] = 1 << 3 | 2;
    h[1] = 16;
    h[2..18].copy_from_slice(trace_id);
    h[18] = 2 << 3 | 2;
    h[19] = 8;
    h[20..28].copy_from_slice(span_id);
    let mut at = 28;
    if *parent != [0; 8] {
        h[28] = 4 << 3 | 2;
        h[29] = 8;
        h[30..38].copy_from_slice(parent);
        at = 38;
    }
    h[at] = 5 << 3 | 2;
    h[at + 1] = m.len() as u8;
    h[at + 2..at + 2 + m.len()].copy_from_slice(m);
    at += 2 + m.len();
    h[at] = 6 << 3;
    h[at + 1] = kind as u8;
    h[at + 2] = 7 << 3 | 1;
    h[at + 3..at + 11].copy_from_slice(&start.to_le_bytes());
    h[at + 11] = 8 << 3 | 1;
    h[at + 12..at + 20].copy_from_slice(&end.max(start).to_le_bytes());
    at += 20;
    // attributes = 9: KeyValue { key, value = AnyValue { string_value } }
    let any = 2 + m.len();
    h[at] = 9 << 3 | 2;
    h[at + 1] = (K_METHOD.len() + 2 + any) as u8;
    h[at + 2..at + 2 + K_METHOD.len()].copy_from_slice(&K_METHOD);
    at += 2 + K_METHOD.len();
    h[at] = 2 << 3 | 2;
    h[at + 1] = any as u8;
    h[at + 2] = 1 << 3 | 2;
    h[at + 3] = m.len() as u8;
    h[at + 4..at + 4 + m.len()].copy_from_slice(m);
    at += 4 + m.len();
    b.extend_from_slice(&h[..at]);
    if let Some(ts) = trace_state {
        bytes_field(b, 3, ts.as_bytes());
    }
}

/// The fields every span ends with: its status when it failed, its flags.
fn span_tail(b: &mut Vec<u8>, error: Option<&str>) {
    if let Some(m) = error {
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

/// A request's span.
fn encode_request_span(r: &TraceRecord, b: &mut Vec<u8>) {
    span_head(
        b,
        &r.trace_id,
        &r.span_id,
        r.trace_state.as_ref(),
        &r.parent,
        r.method,
        Kind::Server,
        r.start,
        r.end,
    );
    kstr(b, &K_PATH, r.path.as_bytes());
    if r.status != 0 {
        kint(b, &K_STATUS, i64::from(r.status));
    }
    addr_attr(b, &K_CLIENT, r.client, None);
    b.extend_from_slice(&r.frontend);
    if let Some(at) = &r.at {
        b.extend_from_slice(at.names());
    }
    kint(b, &K_RETRIES, i64::from(r.retries));
    kstr(b, &K_TERMINATION, &r.termination);
    span_tail(b, r.error());
}

/// The span of one of its attempts.
fn encode_attempt_span(r: &TraceRecord, a: &AttemptRecord, b: &mut Vec<u8>) {
    span_head(
        b,
        &r.trace_id,
        &a.span_id,
        None,
        &r.span_id,
        r.method,
        Kind::Client,
        a.start,
        a.end,
    );
    b.extend_from_slice(a.at.all());
    kint(b, &K_ATTEMPT, i64::from(a.attempt));
    match a.result {
        Ok(s) => kint(b, &K_STATUS, i64::from(s)),
        Err(e) => kstr(b, &K_ERROR_TYPE, e.as_bytes()),
    }
    span_tail(b, a.error());
}

/// One span as a `ScopeSpans.spans` field; left out when too large for its 4-byte
/// length (256 MiB).
fn span_field(out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    key(out, 2, LEN);
    let len_at = placeholder(out, 4);
    write(out);
    let len = out.len() - len_at - 4;
    if !fill(out, len_at, 4, len) {
        out.truncate(start);
    }
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

/// One `ExportTraceServiceRequest` for the spans of `records`, encoded in one pass into
/// one buffer.
pub fn encode_request(service_name: &str, records: &[Box<TraceRecord>]) -> Vec<u8> {
    let spans: usize = records.iter().map(|r| r.spans()).sum();
    let mut out = Vec::with_capacity(spans * 320 + 128);
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
    for r in records {
        span_field(&mut out, |b| encode_request_span(r, b));
        for a in r.attempts() {
            span_field(&mut out, |b| encode_attempt_span(r, a, b));
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
                let mut records = queue.take();
                let mut rest = &records[..];
                while !rest.is_empty() {
                    // Requests while their spans fit in a batch (at least one).
                    let (mut take, mut n) = (0, 0);
                    while take < rest.len() && (take == 0 || n + rest[take].spans() <= batch) {
                        n += rest[take].spans();
                        take += 1;
                    }
                    let (chunk, more) = rest.split_at(take);
                    rest = more;
                    let n = n as u64;
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
                records.clear();
                queue.give_back(records);
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

    fn record(first: Option<AttemptRecord>) -> Box<TraceRecord> {
        Box::new(TraceRecord {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent: [0; 8],
            trace_state: Some(http::HeaderValue::from_static("v=1")),
            method: "GET",
            start: 10,
            end: 20,
            path: crate::trace::Path::new("/a/b"),
            status: 503,
            termination: *b"SC",
            client: "10.1.2.3".parse().unwrap(),
            frontend: frontend_attr("fe"),
            at: Some(crate::trace::Where::backend("app")),
            retries: 2,
            first,
            more: Vec::new(),
        })
    }

    #[test]
    fn attributes_decode_whatever_their_values() {
        let long = "x".repeat(300);
        for v in [0, 1, 127, 128, 503, 16383, 16384, -1, i64::MAX] {
            let big: [u8; 102] = key_field(&"k".repeat(100));
            for k in [&K_RETRIES[..], &big[..]] {
                let mut b = Vec::new();
                if k.len() == big.len() {
                    kint(&mut b, &big, v);
                    kstr(&mut b, &big, long.as_bytes());
                    kstr(&mut b, &big, b"short");
                } else {
                    kint(&mut b, &K_RETRIES, v);
                    kstr(&mut b, &K_RETRIES, long.as_bytes());
                    kstr(&mut b, &K_RETRIES, b"short");
                }
                let span = Span::decode(&b[..]).unwrap();
                let vals: Vec<_> = span
                    .attributes
                    .iter()
                    .map(|a| a.value.clone().and_then(|v| v.value))
                    .collect();
                assert_eq!(
                    vals,
                    [
                        Some(any_value::Value::IntValue(v)),
                        Some(any_value::Value::StringValue(long.clone())),
                        Some(any_value::Value::StringValue("short".into())),
                    ]
                );
                assert_eq!(span.attributes[0].key.as_bytes(), &k[2..]);
            }
        }
    }

    #[test]
    fn spans_encode_as_opentelemetry_messages() {
        let attempt = AttemptRecord {
            span_id: [3; 8],
            start: 11,
            end: 19,
            at: crate::trace::Where::server("app", "s1", "[::1]:8080".parse().unwrap()),
            attempt: 1,
            result: Err("connect_failed"),
        };
        let r = record(Some(attempt));
        let msg = encode_request("edge", &[r]);
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
        assert_eq!((a.kind, a.name.as_str()), (3, "GET"));
        assert_eq!(a.trace_id, vec![1; 16]);
        assert_eq!(a.span_id, vec![3; 8]);
        assert!(a.trace_state.is_empty());
        assert_eq!((a.start_time_unix_nano, a.end_time_unix_nano), (11, 19));
        assert_eq!(
            a.status,
            Some(Status {
                message: "connect_failed".into(),
                code: 2
            })
        );
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
        assert_eq!(attr("rampart.backend"), str_of("app"));
        assert_eq!(attr("rampart.server"), str_of("s1"));
        // IPv4 addresses are written by hand.
        let v4 = crate::trace::Where::server("b", "s", "10.20.30.4:65535".parse().unwrap());
        let mut one = record(Some(AttemptRecord {
            span_id: [4; 8],
            start: 1,
            end: 2,
            at: v4.clone(),
            attempt: 1,
            result: Ok(502),
        }));
        one.more.push(AttemptRecord {
            span_id: [5; 8],
            start: 3,
            end: 4,
            at: v4,
            attempt: 2,
            result: Ok(200),
        });
        let back = ExportTraceServiceRequest::decode(&encode_request("e", &[one])[..]).unwrap();
        let spans = &back.resource_spans[0].scope_spans[0].spans;
        assert_eq!(spans.len(), 3);
        assert_eq!(spans[1].status.as_ref().unwrap().message, "server error");
        let s = &spans[2];
        assert_eq!(s.span_id, vec![5; 8]);
        let attrs: Vec<_> = s
            .attributes
            .iter()
            .map(|a| (a.key.as_str(), a.value.clone().and_then(|v| v.value)))
            .collect();
        assert!(attrs.contains(&("server.address", str_of("10.20.30.4:65535"))));
        assert!(attrs.contains(&(
            "http.response.status_code",
            Some(any_value::Value::IntValue(200))
        )));
        assert!(s.status.is_none());
        assert_eq!(rs.scope_spans[0].scope.as_ref().unwrap().name, "rampart");
    }
}
