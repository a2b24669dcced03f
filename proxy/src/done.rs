//! The record of one request: what happened to it, filled in as it goes (by the
//! handler and by the layers of the backend path), and completed exactly once, when the
//! connection has sent the response or when the request is dropped unfinished.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, SystemTime};

use http::{Method, StatusCode, Uri, Version};
use tokio::time::Instant;

use crate::error::Termination;
use crate::handler::ConnCtx;
use crate::resilience::limits::Slot;
use crate::rules::Intercept;
use crate::snapshot::{Backend, Frontend};
use crate::state::{ActiveGuard, Refusal};
use crate::stick::Trackers;
use crate::upstream::Timing;

/// A request's outcome, completed when the response has been sent.
pub struct Done {
    pub status: u16,
    pub(crate) frontend: Arc<Frontend>,
    pub(crate) backend: Option<Arc<Backend>>,
    /// Whether this request counts in the backend's in-flight requests.
    pub(crate) backend_active: bool,
    pub(crate) server: Option<usize>,
    pub(crate) guard: Option<ActiveGuard>,
    /// When the request started, on both clocks; read only when an access log needs it.
    pub(crate) clock: Option<(Instant, SystemTime)>,
    pub(crate) t_request: Duration,
    pub(crate) timing: Option<Timing>,
    pub(crate) termination: Termination,
    /// Time spent in the backend's queue.
    pub(crate) t_queue: Duration,
    /// Attempts after the first.
    pub(crate) retries: u32,
    /// The backend in-flight slot, freed when the response has been sent.
    pub(crate) slot: Option<Slot>,
    /// The request line, kept only for an access log (boxed: the record moves through
    /// the request path by value).
    pub(crate) line: Option<Box<(Method, Uri, Version)>>,
    /// The connection: its client, its session (which notes the server of the request in
    /// flight) and the stick counters its connection rules track.
    pub(crate) conn: Arc<ConnCtx>,
    /// Stick counters tracked by this request's rules.
    pub(crate) track: Trackers,
    /// Request body bytes, for `bytes_in` counters.
    pub(crate) bytes_in: u64,
    /// Response bytes sent, once the connection has said so in [`finish`](Self::finish).
    pub(crate) bytes_out: u64,
    /// Whether the connection finished the request; a record dropped unfinished is a
    /// request the client went away from.
    pub(crate) finished: bool,
    /// A mode tcp session rather than a request (logged as one).
    pub(crate) tcp: bool,
    /// The request's span, when it is traced.
    pub(crate) trace: Option<crate::trace::RequestSpan>,
}

impl Done {
    pub(crate) fn new(
        cx: &Arc<ConnCtx>,
        fe: &Arc<Frontend>,
        line: Option<Box<(Method, Uri, Version)>>,
        t_request: Duration,
    ) -> Self {
        Self {
            status: 0,
            frontend: fe.clone(),
            backend: None,
            backend_active: false,
            server: None,
            guard: None,
            clock: fe
                .log
                .as_ref()
                .map(|_| (Instant::now(), SystemTime::now() - t_request)),
            t_request,
            timing: None,
            termination: Termination::NONE,
            t_queue: Duration::ZERO,
            retries: 0,
            slot: None,
            line,
            conn: cx.clone(),
            track: Trackers::default(),
            bytes_in: 0,
            bytes_out: 0,
            finished: false,
            tcp: false,
            trace: None,
        }
    }

    /// Records the backend the request (or mode tcp connection) goes to, and counts it
    /// there, in flight until the record completes.
    pub(crate) fn at_backend(&mut self, be: &Arc<Backend>) {
        be.live.requests.fetch_add(1, Relaxed);
        let n = be.live.active.fetch_add(1, Relaxed) + 1;
        be.live.active_max.fetch_max(n, Relaxed);
        self.backend = Some(be.clone());
        self.backend_active = true;
    }

    /// Records that a response rule denied the server's response, and counts it on the
    /// frontend.
    pub(crate) fn response_denied(&mut self) {
        self.frontend.live.denied.fetch_add(1, Relaxed);
        self.termination = Termination::RESPONSE_DENIED;
    }

    /// Records that a rule answered the request itself (`deny`, `return`, `redirect`),
    /// and counts it on the frontend.
    pub(crate) fn answered(&mut self, status: StatusCode, kind: Intercept) {
        let live = &self.frontend.live;
        match kind {
            Intercept::Deny => live.denied.fetch_add(1, Relaxed),
            Intercept::Return | Intercept::Redirect => live.intercepted.fetch_add(1, Relaxed),
        };
        self.termination = if kind == Intercept::Deny {
            Termination::REFUSED
        } else {
            Termination::NONE
        };
        self.status = status.as_u16();
    }

    /// A record for a request that was refused before it was read in full (bad head).
    pub fn refused(
        cx: &Arc<ConnCtx>,
        status: StatusCode,
        termination: Termination,
        t_request: Duration,
    ) -> Self {
        let mut d = Done::new(cx, &cx.frontend, None, t_request);
        d.status = status.as_u16();
        d.termination = termination;
        d.frontend
            .live
            .count_refused(Refusal::of(d.status, termination));
        d
    }

    /// Completes the request: `bytes_out` were sent to the client; `client_abort` tells
    /// how the client side failed, if it did.
    pub fn finish(mut self, bytes_out: u64, client_abort: Option<Termination>) {
        self.bytes_out = bytes_out;
        if let Some(t) = client_abort {
            self.termination = t;
        }
        self.finished = true;
        // Dropping completes it.
    }

    /// The termination code of a request the client went away from before the
    /// connection finished it, by how far it had come (HAProxy's `CR`, `CQ`, `CH`, `CD`).
    fn abandoned(&self) -> Termination {
        if self.status != 0 {
            Termination::CLIENT_ABORT_DATA
        } else if self.server.is_some() {
            Termination::CLIENT_ABORT_HEADERS
        } else if self.backend.is_some() {
            Termination::CLIENT_ABORT_QUEUE
        } else {
            Termination::CLIENT_ABORT_REQUEST
        }
    }

    /// Records the request everywhere it counts: status and byte counters, aborts, the
    /// in-flight gauges and slots it holds, stick counters, and the access log.
    fn complete(&mut self) {
        if !self.finished {
            self.termination = self.abandoned();
        }
        let bytes_out = self.bytes_out;
        let fe = &self.frontend.live;
        // A request that got no response counts in no response class.
        let answered = self.status != 0;
        if answered {
            fe.responses.record(self.status);
        }
        fe.bytes_out.fetch_add(bytes_out, Relaxed);
        if let Some(be) = &self.backend {
            if answered {
                be.live.responses.record(self.status);
            }
            be.live.bytes_out.fetch_add(bytes_out, Relaxed);
            be.live.aborts.count(self.termination);
            if let Some(i) = self.server {
                let s = &be.servers[i].live;
                if answered {
                    s.responses.record(self.status);
                }
                s.bytes_out.fetch_add(bytes_out, Relaxed);
                s.aborts.count(self.termination);
            }
        }
        let server_active = self.guard.as_ref().map_or(0, |_| {
            self.backend
                .as_ref()
                .zip(self.server)
                .map_or(0, |(b, i)| b.servers[i].live.active.load(Relaxed))
        });
        let conn_track = self.conn.info.track();
        if !self.track.is_empty() || conn_track.is_some() {
            let (status, bytes_in) = (self.status, self.bytes_in);
            let count = |e: &mut crate::stick::Entry<'_>| {
                crate::stick::count_response(e, status, bytes_in, bytes_out)
            };
            self.track.each(count);
            if let Some(t) = conn_track {
                t.each(count);
            }
        }
        drop(self.guard.take());
        drop(self.slot.take());
        self.conn.session.left_server();
        if let Some(be) = &self.backend {
            if self.backend_active {
                be.live.active.fetch_sub(1, Relaxed);
            }
            if let Some(i) = self.server {
                be.balancer.released(i);
            }
        }
        let trace_id = self.trace.as_ref().map(|t| t.record.trace_id);
        if let Some(t) = self.trace.take() {
            let mut term = [b'-'; 2];
            term.copy_from_slice(&self.termination.0);
            let at = self.backend.as_ref().map(|b| match self.server {
                Some(i) => b.servers[i].trace_where(&b.name).clone(),
                None => crate::trace::Where::backend(&b.name),
            });
            t.end(crate::trace::Outcome {
                status: self.status,
                termination: term,
                at,
                retries: self.retries,
                client: self.conn.info.client(),
            });
        }
        self.log(server_active, trace_id);
    }

    /// Sends the access log record, when the frontend has a log.
    fn log(&mut self, server_active: u64, trace_id: Option<[u8; 16]>) {
        let (Some((sink, format)), Some((started, wall))) = (&self.frontend.log, self.clock) else {
            return;
        };
        let answered = self.status != 0;
        let bytes_out = self.bytes_out;
        let ms = |d: Duration| d.as_millis() as i64;
        let (method, uri, version) = self.line.take().map_or_else(
            || (Method::GET, Uri::from_static("/"), Version::HTTP_11),
            |l| *l,
        );
        let t = self.timing;
        let mut term = [b'-'; 4];
        term[..2].copy_from_slice(&self.termination.0);
        sink.send(crate::log::Record {
            format: format.clone(),
            client: self.conn.info.client(),
            accepted: wall,
            frontend: self.frontend.name.clone(),
            tls: self.conn.info.tls,
            backend: self.backend.as_ref().map(|b| b.name.clone()),
            server: self
                .backend
                .as_ref()
                .zip(self.server)
                .map(|(b, i)| b.servers[i].name.clone()),
            t_request: ms(self.t_request),
            t_queue: if self.backend.is_some() {
                ms(self.t_queue)
            } else {
                -1
            },
            t_connect: t.map_or(-1, |t| ms(t.connect)),
            t_response: t.map_or(-1, |t| ms(t.response)),
            t_total: ms(self.t_request + started.elapsed()),
            // HAProxy logs -1 for a request that got no response.
            status: if answered { i32::from(self.status) } else { -1 },
            bytes_out,
            bytes_in: self.bytes_in,
            tcp: self.tcp,
            termination: term,
            global_conns: self.conn.shared.live.global.conns_cur.load(Relaxed),
            frontend_conns: self.frontend.live.conns_cur.load(Relaxed),
            backend_active: self
                .backend
                .as_ref()
                .map_or(0, |b| b.live.active.load(Relaxed)),
            server_active,
            retries: self.retries,
            trace_id,
            method,
            uri,
            version,
        });
    }
}

/// Whatever way a request ends (finished by its connection, or dropped with its future
/// when the client resets the stream, the connection closes or the session is shut
/// down), it is counted once, releases what it holds and is logged.
impl Drop for Done {
    fn drop(&mut self) {
        self.complete();
    }
}

#[cfg(test)]
mod tests {
    /// A request's record is moved by value through the request path (into the handler's
    /// answer, out to the connection), each move a copy of the whole: what most requests
    /// do not use (stick counters, the request line for an access log) is boxed. It was
    /// 448 bytes before, and moving it cost about 500 instructions per request.
    #[test]
    fn a_request_record_stays_small() {
        let size = std::mem::size_of::<super::Done>();
        eprintln!("request record: {size} bytes");
        assert!(size <= 232, "the request record grew to {size} bytes");
    }
}
