//! The probes of active health checks: a TCP connect, an HTTP/1.1 request, or a gRPC
//! `grpc.health.v1.Health/Check` call over HTTP/2. Each runs within the check's timeout
//! and reports HAProxy's result codes.

use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use http::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rampart_config::resilience::{CheckKind, GrpcCheck, HttpCheck};
use tokio::io::AsyncWriteExt;

use super::health::{CheckSpec, CheckStatus, Outcome};
use crate::body::Body;
use crate::error::ErrorKind;
use crate::http1::parse::{HeadStore, parse_response};
use crate::io::{UpIo, read_buf};

/// The most of a response a check reads.
const MAX_CHECK_RESPONSE: usize = 64 * 1024;

/// Runs one check.
pub async fn probe(spec: &CheckSpec) -> Outcome {
    let started = Instant::now();
    let done = |status, code, desc: String| Outcome {
        status,
        code,
        duration: started.elapsed(),
        desc,
    };
    let header = spec.proxy_header();
    let connect = crate::upstream::connect::connect(
        spec.target,
        tls_for(spec),
        spec.timeout,
        header.as_deref(),
    );
    let io = match connect.await {
        Ok(io) => io,
        Err(e) => {
            let status = if e.kind == ErrorKind::ConnectTimeout {
                CheckStatus::L4Timeout
            } else {
                CheckStatus::L4Refused
            };
            return done(status, None, e.detail);
        }
    };
    let left = spec.timeout.saturating_sub(started.elapsed());
    let result = match &spec.kind {
        CheckKind::Tcp => return done(CheckStatus::L4Ok, None, "Layer4 check passed".into()),
        CheckKind::Http(h) => tokio::time::timeout(left, http_check(io, h, &spec.host)).await,
        CheckKind::Grpc(g) => tokio::time::timeout(left, grpc_check(io, g, &spec.host)).await,
    };
    match result {
        Ok((status, code, desc)) => done(status, code, desc),
        Err(_) => done(
            CheckStatus::L7Timeout,
            None,
            format!("Layer7 timeout: no answer within {:?}", spec.timeout),
        ),
    }
}

/// A TCP check connects without TLS; HTTP and gRPC checks speak to the server as
/// requests do.
fn tls_for(spec: &CheckSpec) -> Option<&crate::upstream::UpstreamTls> {
    match spec.kind {
        CheckKind::Tcp => None,
        _ => spec.tls.as_ref(),
    }
}

type Verdict = (CheckStatus, Option<u32>, String);

async fn http_check(mut io: UpIo, h: &HttpCheck, host: &str) -> Verdict {
    let req = format!(
        "{} {} HTTP/1.1\r\nhost: {host}\r\nuser-agent: rampart-check\r\naccept: */*\r\nconnection: close\r\n\r\n",
        h.method, h.path
    );
    if let Err(e) = io.write_all(req.as_bytes()).await {
        return (
            CheckStatus::L7Response,
            None,
            format!("sending the check: {e}"),
        );
    }
    let mut buf = BytesMut::with_capacity(4096);
    let head = loop {
        match parse_response(&mut buf, MAX_CHECK_RESPONSE, HeadStore::InBuffer) {
            Ok(Some(head)) if head.status.is_informational() => continue,
            Ok(Some(head)) => break head,
            Ok(None) => {}
            Err(e) => {
                return (
                    CheckStatus::L7Response,
                    None,
                    format!("invalid response: {e}"),
                );
            }
        }
        match read_buf(&mut io, &mut buf).await {
            Ok(0) => {
                return (
                    CheckStatus::L7Response,
                    None,
                    "connection closed before a response".into(),
                );
            }
            Ok(_) => {}
            Err(e) => return (CheckStatus::L7Response, None, format!("reading: {e}")),
        }
    };
    let code = u32::from(head.status.as_u16());
    if !h.expect_status.contains(head.status.as_u16()) {
        return (
            CheckStatus::L7Status,
            Some(code),
            format!("HTTP status check returned code <{code}>"),
        );
    }
    if let Some(want) = &h.expect_body {
        let want = want.as_bytes();
        loop {
            if memchr::memmem::find(&buf, want).is_some() {
                break;
            }
            if buf.len() >= MAX_CHECK_RESPONSE {
                return (
                    CheckStatus::L7Response,
                    Some(code),
                    "expected body content not found".into(),
                );
            }
            match read_buf(&mut io, &mut buf).await {
                Ok(0) | Err(_) => {
                    return (
                        CheckStatus::L7Response,
                        Some(code),
                        "expected body content not found".into(),
                    );
                }
                Ok(_) => {}
            }
        }
    }
    (
        CheckStatus::L7Ok,
        Some(code),
        format!("HTTP status check returned code <{code}>"),
    )
}

/// `grpc.health.v1.HealthCheckRequest { service }` as a length-prefixed gRPC message.
pub fn grpc_request(service: &str) -> Bytes {
    let mut msg = BytesMut::new();
    if !service.is_empty() {
        msg.put_u8(0x0a); // field 1, length-delimited
        put_varint(&mut msg, service.len() as u64);
        msg.put_slice(service.as_bytes());
    }
    let mut out = BytesMut::with_capacity(5 + msg.len());
    out.put_u8(0);
    out.put_u32(msg.len() as u32);
    out.put_slice(&msg);
    out.freeze()
}

fn put_varint(b: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        b.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    b.put_u8(v as u8);
}

fn varint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// The `status` of a `HealthCheckResponse` message (one gRPC frame); 0 (UNKNOWN) when the
/// field is absent, as proto3 defaults it.
pub fn grpc_serving_status(frame: &[u8]) -> Option<u64> {
    if frame.len() < 5 || frame[0] != 0 {
        return None;
    }
    let len = u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]) as usize;
    let mut msg = frame.get(5..5 + len)?;
    let mut status = 0;
    while !msg.is_empty() {
        let (tag, n) = varint(msg)?;
        msg = &msg[n..];
        match tag & 7 {
            0 => {
                let (v, n) = varint(msg)?;
                msg = &msg[n..];
                if tag >> 3 == 1 {
                    status = v;
                }
            }
            2 => {
                let (l, n) = varint(msg)?;
                msg = msg.get(n + l as usize..)?;
            }
            1 => msg = msg.get(8..)?,
            5 => msg = msg.get(4..)?,
            _ => return None,
        }
    }
    Some(status)
}

async fn grpc_check(io: UpIo, g: &GrpcCheck, host: &str) -> Verdict {
    let (mut send, conn) = match hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake(TokioIo::new(io))
        .await
    {
        Ok(x) => x,
        Err(e) => {
            return (
                CheckStatus::L7Response,
                None,
                format!("HTTP/2 handshake: {e}"),
            );
        }
    };
    let conn = tokio::spawn(conn);
    let verdict = async {
        let req = Request::post(format!("http://{host}/grpc.health.v1.Health/Check"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("user-agent", "rampart-check")
            .body(Body::full(grpc_request(&g.service)));
        let Ok(req) = req else {
            return (
                CheckStatus::SockErr,
                None,
                format!("invalid check authority {host:?}"),
            );
        };
        let resp = match send.send_request(req).await {
            Ok(r) => r,
            Err(e) => return (CheckStatus::L7Response, None, format!("gRPC call: {e}")),
        };
        if resp.status() != StatusCode::OK {
            let code = u32::from(resp.status().as_u16());
            return (
                CheckStatus::L7Status,
                Some(code),
                format!("gRPC check returned HTTP status <{code}>"),
            );
        }
        let (data, grpc_status) = match grpc_answer(resp).await {
            Ok(x) => x,
            Err(v) => return v,
        };
        match grpc_status.as_deref() {
            Some(b"0") => {}
            Some(s) => {
                return (
                    CheckStatus::L7Status,
                    None,
                    format!("gRPC status {}", String::from_utf8_lossy(s)),
                );
            }
            None => return (CheckStatus::L7Response, None, "no grpc-status".into()),
        }
        match grpc_serving_status(&data) {
            Some(1) => (CheckStatus::L7Ok, Some(1), "SERVING".into()),
            Some(s) => {
                let name = match s {
                    0 => "UNKNOWN",
                    2 => "NOT_SERVING",
                    3 => "SERVICE_UNKNOWN",
                    _ => "unknown status",
                };
                (CheckStatus::L7Status, Some(s as u32), name.into())
            }
            None => (
                CheckStatus::L7Response,
                None,
                "invalid HealthCheckResponse".into(),
            ),
        }
    }
    .await;
    conn.abort();
    verdict
}

/// The body and the `grpc-status` (from the head, or the trailers) of a gRPC answer.
async fn grpc_answer(
    resp: http::Response<hyper::body::Incoming>,
) -> Result<(BytesMut, Option<Vec<u8>>), Verdict> {
    let mut grpc_status = resp
        .headers()
        .get("grpc-status")
        .map(|v| v.as_bytes().to_vec());
    let mut body = resp.into_body();
    let mut data = BytesMut::new();
    loop {
        let frame = std::future::poll_fn(|cx| {
            http_body::Body::poll_frame(std::pin::Pin::new(&mut body), cx)
        })
        .await;
        match frame {
            None => return Ok((data, grpc_status)),
            Some(Err(e)) => {
                return Err((CheckStatus::L7Response, None, format!("gRPC body: {e}")));
            }
            Some(Ok(f)) => match f.into_data() {
                Ok(d) => {
                    if data.len() + d.len() > MAX_CHECK_RESPONSE {
                        return Err((
                            CheckStatus::L7Response,
                            None,
                            "gRPC answer too large".into(),
                        ));
                    }
                    data.put_slice(&d);
                }
                Err(f) => {
                    if let Ok(t) = f.into_trailers()
                        && let Some(s) = t.get("grpc-status")
                    {
                        grpc_status = Some(s.as_bytes().to_vec());
                    }
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn grpc_messages() {
        assert_eq!(&grpc_request("")[..], &[0, 0, 0, 0, 0]);
        assert_eq!(
            &grpc_request("ab")[..],
            &[0, 0, 0, 0, 4, 0x0a, 2, b'a', b'b']
        );
        assert_eq!(grpc_serving_status(&[0, 0, 0, 0, 2, 0x08, 1]), Some(1));
        assert_eq!(grpc_serving_status(&[0, 0, 0, 0, 2, 0x08, 2]), Some(2));
        assert_eq!(grpc_serving_status(&[0, 0, 0, 0, 0]), Some(0));
        // An unknown length-delimited field before the status is skipped.
        assert_eq!(
            grpc_serving_status(&[0, 0, 0, 0, 5, 0x12, 1, b'x', 0x08, 1]),
            Some(1)
        );
        assert_eq!(grpc_serving_status(&[0, 0, 0, 0, 9, 0x08]), None);
        assert_eq!(grpc_serving_status(&[1, 0, 0, 0, 0]), None);
        assert_eq!(grpc_serving_status(&[0, 0, 0, 0, 1, 0x08]), None);
    }

    #[tokio::test]
    async fn tcp_and_http_probes() {
        use rampart_config::decode::Decode;
        use rampart_config::resilience::HealthCheck;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut b = BytesMut::new();
                    let _ = read_buf(&mut s, &mut b).await;
                    let answer: &[u8] = if b.starts_with(b"GET /ok ") {
                        b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\nhealthy"
                    } else if b.starts_with(b"GET /junk") {
                        b"SSH-2.0-OpenSSH\r\n\r\n"
                    } else {
                        b"HTTP/1.1 500 Oops\r\ncontent-length: 0\r\n\r\n"
                    };
                    let _ = s.write_all(answer).await;
                });
            }
        });
        let mut hc = HealthCheck::fallback().unwrap();
        let spec = CheckSpec::new(&hc, addr, "h", None, None);
        assert_eq!(probe(&spec).await.status, CheckStatus::L4Ok);
        let http = |path: &str, body: Option<&str>| {
            let mut h = HttpCheck::fallback().unwrap();
            h.path = path.into();
            h.expect_body = body.map(Into::into);
            h
        };
        hc.http = Some(http("/ok", Some("healthy")));
        let o = probe(&CheckSpec::new(&hc, addr, "h", None, None)).await;
        assert_eq!((o.status, o.code), (CheckStatus::L7Ok, Some(200)));
        hc.http = Some(http("/ok", Some("sick")));
        let o = probe(&CheckSpec::new(&hc, addr, "h", None, None)).await;
        assert_eq!(o.status, CheckStatus::L7Response);
        hc.http = Some(http("/fail", None));
        let o = probe(&CheckSpec::new(&hc, addr, "h", None, None)).await;
        assert_eq!((o.status, o.code), (CheckStatus::L7Status, Some(500)));
        hc.http = Some(http("/junk", None));
        assert_eq!(
            probe(&CheckSpec::new(&hc, addr, "h", None, None))
                .await
                .status,
            CheckStatus::L7Response
        );

        // Nothing listens there any more.
        let gone = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gone_addr = gone.local_addr().unwrap();
        drop(gone);
        hc.http = None;
        let o = probe(&CheckSpec::new(&hc, gone_addr, "h", None, None)).await;
        assert_eq!(o.status, CheckStatus::L4Refused);

        // Accepts but never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        hc.http = Some(http("/ok", None));
        hc.timeout = Duration::from_millis(100);
        let o = probe(&CheckSpec::new(
            &hc,
            silent.local_addr().unwrap(),
            "h",
            None,
            None,
        ))
        .await;
        assert_eq!(o.status, CheckStatus::L7Timeout);
    }
}
