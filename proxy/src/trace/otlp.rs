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
use prost::Message;
use rampart_config::model::Tracing;

use super::{Counters, SpanRecord, Value};

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

fn kv(key: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(v) }),
    }
}

fn span(r: SpanRecord) -> Span {
    let attributes = r
        .attrs
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                Value::Static(s) => any_value::Value::StringValue(s.to_owned()),
                Value::Shared(s) => any_value::Value::StringValue(s.to_string()),
                Value::Text(s) => any_value::Value::StringValue(s),
                Value::Int(i) => any_value::Value::IntValue(i),
            };
            kv(k, v)
        })
        .collect();
    Span {
        trace_id: r.trace_id.to_vec(),
        span_id: r.span_id.to_vec(),
        trace_state: r
            .trace_state
            .and_then(|v| v.to_str().ok().map(str::to_owned))
            .unwrap_or_default(),
        parent_span_id: if r.parent == [0; 8] {
            Vec::new()
        } else {
            r.parent.to_vec()
        },
        name: super::method_str(&r.name).to_owned(),
        kind: r.kind as i32,
        start_time_unix_nano: r.start,
        end_time_unix_nano: r.end.max(r.start),
        attributes,
        status: r.error.map(|m| Status {
            message: m.to_owned(),
            code: 2,
        }),
        // Sampled (W3C trace flags), and the parent's remoteness is unknown.
        flags: 1,
    }
}

/// One export request for `spans`.
pub fn request(service_name: &str, spans: Vec<SpanRecord>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv(
                        "service.name",
                        any_value::Value::StringValue(service_name.to_owned()),
                    ),
                    kv(
                        "telemetry.sdk.name",
                        any_value::Value::StringValue("rampart".to_owned()),
                    ),
                ],
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "rampart".to_owned(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                }),
                spans: spans.into_iter().map(span).collect(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
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

    /// Runs until every sender has gone, sending what is queued in batches.
    pub fn run(mut self, mut rx: tokio::sync::mpsc::Receiver<SpanRecord>) {
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
            let mut spans = Vec::with_capacity(batch);
            loop {
                // The first span of a batch, then whatever comes within the interval.
                if rx.recv_many(&mut spans, batch).await == 0 {
                    return;
                }
                let deadline = tokio::time::Instant::now() + self.settings.interval;
                while spans.len() < batch {
                    let room = batch - spans.len();
                    let more = tokio::select! {
                        n = rx.recv_many(&mut spans, room) => n,
                        _ = tokio::time::sleep_until(deadline) => break,
                    };
                    if more == 0 {
                        break;
                    }
                }
                let n = spans.len() as u64;
                let msg = request(&self.settings.service_name, std::mem::take(&mut spans));
                let sent = tokio::time::timeout(self.settings.timeout, self.export(msg)).await;
                match sent {
                    Ok(Ok(())) => {
                        self.counters.exported.fetch_add(n, Relaxed);
                    }
                    Ok(Err(e)) => self.failed(n, &e),
                    Err(_) => self.failed(n, "the collector did not answer in time"),
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

    async fn export(&mut self, msg: ExportTraceServiceRequest) -> Result<(), String> {
        let grpc = super::is_grpc(self.settings.protocol);
        let body = if grpc {
            // gRPC's framing: uncompressed, the length, the message.
            let mut b = BytesMut::with_capacity(5 + msg.encoded_len());
            b.put_u8(0);
            b.put_u32(msg.encoded_len() as u32);
            msg.encode(&mut b).map_err(|e| e.to_string())?;
            b.freeze()
        } else {
            Bytes::from(msg.encode_to_vec())
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
    use crate::trace::Kind;

    #[test]
    fn spans_encode_as_opentelemetry_messages() {
        let r = SpanRecord {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent: [0; 8],
            trace_state: None,
            kind: Kind::Server,
            name: http::Method::GET,
            start: 10,
            end: 20,
            attrs: vec![("http.response.status_code", Value::Int(200))],
            error: None,
        };
        let msg = request("edge", vec![r]);
        let back = ExportTraceServiceRequest::decode(&msg.encode_to_vec()[..]).unwrap();
        let rs = &back.resource_spans[0];
        assert_eq!(
            rs.resource.as_ref().unwrap().attributes[0].value,
            Some(AnyValue {
                value: Some(any_value::Value::StringValue("edge".into()))
            })
        );
        let s = &rs.scope_spans[0].spans[0];
        assert_eq!((s.kind, s.name.as_str()), (2, "GET"));
        assert!(s.parent_span_id.is_empty());
        assert_eq!(s.trace_id, vec![1; 16]);
        assert_eq!(s.status, None);
    }
}
