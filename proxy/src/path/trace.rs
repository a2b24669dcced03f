//! The attempt spans of a traced request: each attempt at a server gets a span (a child
//! of the request's), whose id the server receives as its parent in `traceparent`.

use std::task::{Context, Poll};

use http::Response;
use tower::Service;

use super::future::{After, Hook};
use super::{Attempt, Exchange, Outcome};
use crate::body::Body;
use crate::error::{ErrorKind, ProxyError};
use crate::trace::{AttemptSpan, TRACEPARENT, new_span_id, now_ns, traceparent};

super::layer!(TraceLayer => Traced);

impl<'a, S> Service<Attempt> for Traced<'a, S>
where
    S: Service<Attempt, Response = Response<Body>, Error = ProxyError>,
{
    type Response = Response<Body>;
    type Error = ProxyError;
    type Future = After<S::Future, Option<Box<AttemptHook<'a>>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut a: Attempt) -> Self::Future {
        let span = match self.x.trace {
            Some(parent) => {
                let span_id = new_span_id();
                a.req
                    .headers_mut()
                    .insert(TRACEPARENT.clone(), traceparent(&parent.trace_id, &span_id));
                let server = &self.x.be.servers[a.server];
                let attempt = self.x.state().tried.len() as u32;
                // Boxed: an untraced request's future stays as small as it was.
                Some(Box::new(AttemptHook {
                    x: self.x,
                    span: AttemptSpan {
                        parent,
                        span_id,
                        start: now_ns(),
                        method: a.req.method().clone(),
                        backend: self.x.be.name.clone(),
                        server: server.name.clone(),
                        address: server.upstream.addr,
                        attempt,
                    },
                }))
            }
            _ => None,
        };
        After::new(self.inner.call(a), span)
    }
}

/// An attempt's span, and where it goes when the attempt ends: into the request's span,
/// to be queued with it.
pub struct AttemptHook<'a> {
    x: &'a Exchange<'a>,
    span: AttemptSpan,
}

impl Hook for Option<Box<AttemptHook<'_>>> {
    fn after(self, out: &mut Outcome) {
        let Some(h) = self else { return };
        let AttemptHook { x, span } = *h;
        let record = span.finish(match out {
            Ok(resp) => Ok(resp.status().as_u16()),
            Err(e) => Err(error_type(&e.kind)),
        });
        match x.state().done.trace.as_mut() {
            Some(t) => t.attempts.push(record),
            None => {
                if let Some(spec) = &x.from.fe.tracing {
                    spec.tracer.send(record);
                }
            }
        }
    }
}

/// The `error.type` of a failed attempt.
fn error_type(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::ConnectFailed => "connect_failed",
        ErrorKind::ConnectTimeout => "connect_timeout",
        ErrorKind::ResponseTimeout => "response_timeout",
        ErrorKind::Reset => "reset",
        ErrorKind::RefusedStream => "refused_stream",
        ErrorKind::EmptyResponse => "empty_response",
        ErrorKind::BadResponse | ErrorKind::JunkResponse => "bad_response",
        ErrorKind::Overloaded(_) => "overloaded",
        ErrorKind::ClientAbort => "client_abort",
        _ => "error",
    }
}
