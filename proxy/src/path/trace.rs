//! The attempt spans of a traced request: each attempt at a server gets a span (a child
//! of the request's), whose id the server receives as its parent in `traceparent`.

use std::task::{Context, Poll};

use http::Response;
use tower::Service;

use super::future::{After, Hook};
use super::{Attempt, Exchange, Outcome};
use crate::body::Body;
use crate::error::{ErrorKind, ProxyError};
use crate::trace::{AttemptRecord, TRACEPARENT, new_span_id, now_ns, traceparent};

super::layer!(TraceLayer => Traced);

impl<'a, S> Service<Attempt> for Traced<'a, S>
where
    S: Service<Attempt, Response = Response<Body>, Error = ProxyError>,
{
    type Response = Response<Body>;
    type Error = ProxyError;
    type Future = After<S::Future, Option<AttemptHook<'a>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut a: Attempt) -> Self::Future {
        let hook = self.x.trace.map(|parent| {
            let span_id = new_span_id();
            a.req
                .headers_mut()
                .insert(TRACEPARENT.clone(), traceparent(&parent.trace_id, &span_id));
            AttemptHook {
                x: self.x,
                span_id,
                start: now_ns(),
                server: a.server,
            }
        });
        After::new(self.inner.call(a), hook)
    }
}

/// An attempt of a traced request under way: what its span needs besides what the
/// exchange has (kept small, in the attempt's future). When the attempt ends, its span
/// goes into the request's, to be queued with it.
pub struct AttemptHook<'a> {
    x: &'a Exchange<'a>,
    span_id: [u8; 8],
    start: u64,
    server: usize,
}

impl Hook for Option<AttemptHook<'_>> {
    fn after(self, out: &mut Outcome) {
        let Some(h) = self else { return };
        let result = match out {
            Ok(resp) => Ok(resp.status().as_u16()),
            Err(e) => Err(error_type(&e.kind)),
        };
        let (be, x) = (h.x.be, h.x);
        let server = &be.servers[h.server];
        let mut state = x.state();
        let Some(t) = state.done.trace.as_mut() else {
            return;
        };
        let record = AttemptRecord {
            span_id: h.span_id,
            start: h.start,
            end: now_ns(),
            at: server.trace_where(&be.name).clone(),
            // Attempts are one after the other: this one follows those recorded.
            attempt: t.attempts() + 1,
            result,
        };
        t.add_attempt(record);
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
