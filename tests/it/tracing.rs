//! OpenTelemetry tracing: spans received by an in-test OTLP collector (HTTP and gRPC)
//! with the right trace and parent ids, `traceparent` propagated to the server with the
//! attempt's span id, one span per attempt on retries, sampling by ratio and by the
//! client's flag, the trace id in the access log, and a collector that never answers
//! costing no request.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;
use rampart_proxy::trace::otlp::{ExportTraceServiceRequest, Span, any_value};

use crate::support::*;

/// Spans the collector received.
#[derive(Clone, Default)]
struct Collected(Arc<Mutex<Vec<Span>>>);

impl Collected {
    fn spans(&self) -> Vec<Span> {
        self.0.lock().unwrap().clone()
    }
}

/// An OTLP collector on 127.0.0.1: HTTP (`POST /v1/traces`) and gRPC on the same port
/// (HTTP/1.1 and h2c); `stall` makes it never answer.
async fn collector(stall: bool) -> (SocketAddr, Collected) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let got = Collected::default();
    let g = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = l.accept().await else {
                continue;
            };
            let g = g.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let g = g.clone();
                    async move {
                        if stall {
                            std::future::pending::<()>().await;
                        }
                        let grpc = req
                            .headers()
                            .get("content-type")
                            .is_some_and(|v| v == "application/grpc");
                        let path = req.uri().path().to_owned();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let msg = if grpc {
                            assert_eq!(
                                path,
                                "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
                            );
                            assert_eq!(body[0], 0, "compressed gRPC message");
                            let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]);
                            assert_eq!(len as usize, body.len() - 5);
                            body.slice(5..)
                        } else {
                            assert_eq!(path, "/v1/traces");
                            body
                        };
                        let req = ExportTraceServiceRequest::decode(msg).unwrap();
                        for rs in req.resource_spans {
                            let service = rs.resource.unwrap().attributes[0].clone();
                            assert_eq!(service.key, "service.name");
                            for ss in rs.scope_spans {
                                g.0.lock().unwrap().extend(ss.spans);
                            }
                        }
                        let resp = if grpc {
                            // The response message (empty), then grpc-status in trailers.
                            let frames = http_body_util::StreamBody::new(futures_stream(vec![
                                hyper::body::Frame::data(Bytes::from_static(&[0, 0, 0, 0, 0])),
                                hyper::body::Frame::trailers({
                                    let mut t = http::HeaderMap::new();
                                    t.insert("grpc-status", "0".parse().unwrap());
                                    t
                                }),
                            ]));
                            Response::builder()
                                .header("content-type", "application/grpc")
                                .body(frames.boxed())
                                .unwrap()
                        } else {
                            Response::builder()
                                .header("content-type", "application/x-protobuf")
                                .body(Full::new(Bytes::new()).map_err(|e| match e {}).boxed())
                                .unwrap()
                        };
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (addr, got)
}

/// A stream of ready frames.
fn futures_stream(
    frames: Vec<hyper::body::Frame<Bytes>>,
) -> impl futures_core::Stream<Item = Result<hyper::body::Frame<Bytes>, Infallible>> {
    tokio_stream::iter(frames.into_iter().map(Ok))
}

fn attr(s: &Span, key: &str) -> Option<any_value::Value> {
    s.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.clone()?.value)
}

fn str_attr(s: &Span, key: &str) -> String {
    match attr(s, key) {
        Some(any_value::Value::StringValue(v)) => v,
        other => panic!("{key}: {other:?} in {s:?}"),
    }
}

fn int_attr(s: &Span, key: &str) -> i64 {
    match attr(s, key) {
        Some(any_value::Value::IntValue(v)) => v,
        other => panic!("{key}: {other:?} in {s:?}"),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn config(
    collector: SocketAddr,
    protocol: &str,
    sampling: &str,
    servers: &str,
    extra: &str,
) -> String {
    format!(
        "tracing:\n  endpoint: \"{collector}\"\n  protocol: {protocol}\n  service_name: edge\n  interval: 50ms\n\
         frontends:\n  fe:\n    bind: \"127.0.0.1:0\"\n    default_backend: app\n    tracing: {{ sampling: {sampling} }}\n{extra}\
         backends:\n  app:\n{servers}"
    )
}

/// Waits (at most 10 s) until the collector holds `n` spans.
async fn spans(got: &Collected, n: usize) -> Vec<Span> {
    let ok = eventually(Duration::from_secs(10), || got.spans().len() >= n).await;
    let s = got.spans();
    assert!(ok, "{} spans, wanted {n}: {s:?}", s.len());
    s
}

async fn get_with(addr: SocketAddr, headers: &[(&str, &str)]) -> u16 {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut s, c) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(c);
    let mut req = Request::get("/orders/7").header("host", "shop");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = s.send_request(req.body(empty()).unwrap()).await.unwrap();
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    status
}

async fn parents_and_propagation(protocol: &str) {
    let (c, got) = collector(false).await;
    let origin = Origin::named("o").await;
    let p = Proxy::start(&config(
        c,
        protocol,
        "100%",
        &format!(
            "    servers: {{ s1: {{ address: \"{}\" }} }}\n",
            origin.addr
        ),
        "",
    ));
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let tp = format!("00-{trace}-{parent}-01");
    assert_eq!(
        get_with(
            p.addr("fe"),
            &[("traceparent", &tp), ("tracestate", "vendor=1")]
        )
        .await,
        200
    );
    let s = spans(&got, 2).await;
    let server = s.iter().find(|s| s.kind == 2).expect("a SERVER span");
    let client = s.iter().find(|s| s.kind == 3).expect("a CLIENT span");
    assert_eq!(hex(&server.trace_id), trace);
    assert_eq!(hex(&server.parent_span_id), parent);
    assert_eq!(server.trace_state, "vendor=1");
    assert_eq!(server.name, "GET");
    assert_eq!(int_attr(server, "http.response.status_code"), 200);
    assert_eq!(str_attr(server, "url.path"), "/orders/7");
    assert_eq!(str_attr(server, "rampart.frontend"), "fe");
    assert_eq!(str_attr(server, "rampart.backend"), "app");
    assert_eq!(str_attr(server, "rampart.server"), "s1");
    assert_eq!(str_attr(server, "rampart.termination"), "--");
    assert_eq!(int_attr(server, "rampart.retries"), 0);
    assert!(server.end_time_unix_nano >= server.start_time_unix_nano);
    assert_eq!(hex(&client.trace_id), trace);
    assert_eq!(client.parent_span_id, server.span_id);
    assert_eq!(str_attr(client, "server.address"), origin.addr.to_string());
    assert_eq!(int_attr(client, "http.response.status_code"), 200);
    // The server got the attempt's span as its parent, and the client's tracestate.
    let seen = origin.last();
    assert_eq!(
        seen.headers["traceparent"],
        format!("00-{trace}-{}-01", hex(&client.span_id))
    );
    assert_eq!(seen.headers["tracestate"], "vendor=1");

    // Without a parent: a new trace, started here.
    got.0.lock().unwrap().clear();
    assert_eq!(get_with(p.addr("fe"), &[]).await, 200);
    let s = spans(&got, 2).await;
    let server = s.iter().find(|s| s.kind == 2).unwrap();
    assert!(server.parent_span_id.is_empty());
    assert_eq!(server.trace_id.len(), 16);
    let tp = origin.last().headers["traceparent"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        tp.starts_with(&format!("00-{}-", hex(&server.trace_id))),
        "{tp}"
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_otlp_http_collector_with_their_parents() {
    parents_and_propagation("http").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_otlp_grpc_collector_with_their_parents() {
    parents_and_propagation("grpc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_attempt_has_its_span_and_the_log_has_the_trace_id() {
    let (c, got) = collector(false).await;
    let origin = Origin::named("o").await;
    let dead = free_port();
    let dir = temp_dir("tracing-log");
    let log = dir.join("access.log");
    // One worker thread: each worker keeps its own round-robin rotation, so two
    // connections on two workers could both start with the live server.
    let p = Proxy::start_in(
        &format!(
            "global: {{ threads: 1 }}\n{}",
            config(
                c,
                "http",
                "100",
                &format!(
                    "    retries: {{ attempts: 3, on: [connect-failure], redispatch: true, backoff: {{ base: 1ms, max: 1ms }} }}\n    servers:\n      down: {{ address: \"127.0.0.1:{dead}\" }}\n      up: {{ address: \"{}\" }}\n",
                    origin.addr
                ),
                &format!(
                    "    access_log: {{ to: \"{}\", log_format: \"%ci %ST %b/%s trace=%[trace_id]\" }}\n",
                    log.display()
                ),
            )
        ),
        dir,
    );
    // Round robin: one of two requests tries the dead server first.
    assert_eq!(get_with(p.addr("fe"), &[]).await, 200);
    assert_eq!(get_with(p.addr("fe"), &[]).await, 200);
    let s = spans(&got, 5).await;
    let server = s
        .iter()
        .find(|s| s.kind == 2 && int_attr(s, "rampart.retries") == 1)
        .expect("a request retried");
    let mut attempts: Vec<&Span> = s
        .iter()
        .filter(|a| a.kind == 3 && a.parent_span_id == server.span_id)
        .collect();
    attempts.sort_by_key(|s| s.start_time_unix_nano);
    assert_eq!(attempts.len(), 2, "{s:?}");
    assert_eq!(str_attr(attempts[0], "rampart.server"), "down");
    assert_eq!(str_attr(attempts[0], "error.type"), "connect_failed");
    assert_eq!(attempts[0].status.as_ref().map(|s| s.code), Some(2));
    assert_eq!(str_attr(attempts[1], "rampart.server"), "up");
    assert_eq!(int_attr(attempts[1], "rampart.attempt"), 2);
    for a in &attempts {
        assert_eq!(a.trace_id, server.trace_id);
    }
    assert_eq!(int_attr(server, "rampart.retries"), 1);
    assert_eq!(str_attr(server, "rampart.server"), "up");
    // The access log line carries the same trace id.
    let path = p.dir.join("access.log");
    let want = format!("trace={}", hex(&server.trace_id));
    assert!(
        eventually(Duration::from_secs(10), || std::fs::read_to_string(&path)
            .is_ok_and(|t| t.contains(&want)))
        .await,
        "{:?}",
        std::fs::read_to_string(&path)
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let line = text.lines().find(|l| l.contains(&want)).unwrap();
    assert_eq!(line, format!("127.0.0.1 200 app/up {want}"));
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_follows_the_ratio_and_the_clients_flag() {
    let (c, got) = collector(false).await;
    let origin = Origin::named("o").await;
    let p = Proxy::start(&config(
        c,
        "http",
        "0%",
        &format!(
            "    servers: {{ s1: {{ address: \"{}\" }} }}\n",
            origin.addr
        ),
        "",
    ));
    // Untraced: nothing recorded, the headers go as they came.
    assert_eq!(get_with(p.addr("fe"), &[]).await, 200);
    assert!(origin.last().headers.get("traceparent").is_none());
    let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
    assert_eq!(
        get_with(p.addr("fe"), &[("traceparent", unsampled)]).await,
        200
    );
    assert_eq!(origin.last().headers["traceparent"], unsampled);
    // A sampled parent is traced even at 0%.
    let sampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    assert_eq!(
        get_with(p.addr("fe"), &[("traceparent", sampled)]).await,
        200
    );
    let s = spans(&got, 2).await;
    assert!(
        s.iter()
            .all(|s| hex(&s.trace_id) == "4bf92f3577b34da6a3ce929d0e0e4736")
    );
    // A malformed parent is ignored (a new trace would start, but not at 0%).
    assert_eq!(
        get_with(
            p.addr("fe"),
            &[("traceparent", "00-zz-00f067aa0ba902b7-01")]
        )
        .await,
        200
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(got.spans().len(), 2, "{:?}", got.spans());
    p.stop().await;

    // At 50%, about half of 400 requests without a parent are traced.
    let (c, got) = collector(false).await;
    let p = Proxy::start(&config(
        c,
        "http",
        "50%",
        &format!(
            "    servers: {{ s1: {{ address: \"{}\" }} }}\n",
            origin.addr
        ),
        "",
    ));
    let addr = p.addr("fe");
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let bodies = h1_gets(tcp, "shop", 400).await;
    assert_eq!(bodies.len(), 400);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let traced = spans(&got, 1).await.iter().filter(|s| s.kind == 2).count();
    assert!(
        (120..=280).contains(&traced),
        "{traced} of 400 traced at 50%"
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_never_answers_costs_no_request() {
    let (c, _got) = collector(true).await;
    let origin = Origin::named("o").await;
    let yaml = config(
        c,
        "http",
        "100%",
        &format!(
            "    servers: {{ s1: {{ address: \"{}\" }} }}\n",
            origin.addr
        ),
        "",
    )
    .replace(
        "  interval: 50ms\n",
        "  interval: 50ms\n  max_queue: 16\n  batch: 8\n  timeout: 60s\n",
    );
    let p = Proxy::start(&yaml);
    let tcp = tokio::net::TcpStream::connect(p.addr("fe")).await.unwrap();
    let bodies = h1_gets(tcp, "shop", 300).await;
    assert!(bodies.iter().all(|b| b == "o"));
    let t = p.handle().live().current_tracer().unwrap();
    // The exporter holds one batch; the queue holds 16; the rest were dropped.
    let dropped = t
        .counters
        .dropped
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(dropped >= 600 - 16 - 8 - 8, "{dropped} dropped");
    p.stop().await;
}

#[test]
fn tracing_settings_are_checked() {
    let e = load_errors(
        "frontends:\n  fe:\n    bind: \"127.0.0.1:0\"\n    default_backend: b\n    tracing: { sampling: 10% }\nbackends:\n  b:\n    servers: { s: { address: \"127.0.0.1:1\" } }\n",
        None,
    );
    assert!(
        e.contains("frontends.fe.tracing: tracing needs the top-level tracing section"),
        "{e}"
    );
    let e = load_errors(
        "tracing: { endpoint: \"collector\", batch: 0 }\nfrontends:\n  fe:\n    bind: \"127.0.0.1:0\"\n    default_backend: b\n    tracing: { sampling: 120% }\n    access_log: { log_format: \"%ci %[req.hdr(host)]\" }\nbackends:\n  b:\n    servers: { s: { address: \"127.0.0.1:1\" } }\n",
        None,
    );
    for want in [
        "tracing.endpoint: invalid collector address \"collector\": expected host:port",
        "tracing.batch: batch is 1 to 10000 spans",
        "expected a percentage between 0% and 100%",
        "unknown fetch '%[req.hdr(host)]' in the log format",
    ] {
        assert!(e.contains(want), "{want} missing from:\n{e}");
    }
}
