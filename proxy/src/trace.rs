//! OpenTelemetry tracing: the W3C trace context (`traceparent`, `tracestate`), a span for
//! each traced request (kind SERVER) and one for each attempt at a server (kind CLIENT,
//! whose id the server receives as its parent), exported over OTLP (HTTP or gRPC).
//!
//! A request is traced when its frontend has `tracing`: by the client's sampled flag, or
//! at the frontend's sampling ratio when the client sent none. An untraced request costs
//! one header lookup and, without a parent, one random number; its headers are forwarded
//! as they came. Finished spans go into a bounded queue; an exporter thread sends them in
//! batches. When the queue is full, spans are dropped and counted: tracing never slows a
//! request.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use http::{HeaderMap, HeaderValue, Method};
use rampart_config::model::{OtlpProtocol, Tracing};

pub mod otlp;

/// The `traceparent` header.
pub static TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
/// The `tracestate` header.
pub static TRACESTATE: http::HeaderName = http::HeaderName::from_static("tracestate");

/// A trace context from a `traceparent` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub sampled: bool,
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn unhex<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    if s.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = hex_val(s[2 * i])? << 4 | hex_val(s[2 * i + 1])?;
    }
    Some(out)
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    for b in bytes {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 15)]);
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    let mut v = Vec::with_capacity(bytes.len() * 2);
    push_hex(&mut v, bytes);
    String::from_utf8(v).unwrap_or_default()
}

/// Parses a `traceparent` value (W3C Trace Context level 1): `00-<trace>-<span>-<flags>`;
/// a later version is read for its first four fields. Invalid values (bad hex, upper
/// case, all-zero ids, version `ff`) are `None`.
pub fn parse_traceparent(v: &[u8]) -> Option<Parent> {
    if v.len() < 55 {
        return None;
    }
    let version = unhex::<1>(&v[0..2])?[0];
    if version == 0xff
        || (version == 0 && v.len() != 55)
        || (version > 0 && v.len() > 55 && v[55] != b'-')
    {
        return None;
    }
    if v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let trace_id = unhex::<16>(&v[3..35])?;
    let span_id = unhex::<8>(&v[36..52])?;
    let flags = unhex::<1>(&v[53..55])?[0];
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    Some(Parent {
        trace_id,
        span_id,
        sampled: flags & 1 == 1,
    })
}

/// A `traceparent` value for a sampled span.
pub fn traceparent(trace_id: &[u8; 16], span_id: &[u8; 8]) -> HeaderValue {
    let mut v = [0u8; 55];
    v[..3].copy_from_slice(b"00-");
    for (i, b) in trace_id.iter().enumerate() {
        v[3 + 2 * i] = HEX[usize::from(b >> 4)];
        v[4 + 2 * i] = HEX[usize::from(b & 15)];
    }
    v[35] = b'-';
    for (i, b) in span_id.iter().enumerate() {
        v[36 + 2 * i] = HEX[usize::from(b >> 4)];
        v[37 + 2 * i] = HEX[usize::from(b & 15)];
    }
    v[52..].copy_from_slice(b"-01");
    HeaderValue::from_bytes(&v).unwrap_or(HeaderValue::from_static(""))
}

/// A new, non-zero trace id.
pub fn new_trace_id() -> [u8; 16] {
    loop {
        let id = fastrand::u128(..).to_be_bytes();
        if id != [0; 16] {
            return id;
        }
    }
}

/// A new, non-zero span id.
pub fn new_span_id() -> [u8; 8] {
    fastrand::u64(1..).to_be_bytes()
}

/// Now, in nanoseconds since the Unix epoch: the real-time clock, read through the vDSO
/// without the conversions `SystemTime` goes through (a request reads it four times).
pub fn now_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Realtime);
    u64::try_from(t.tv_sec)
        .unwrap_or(0)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(u64::try_from(t.tv_nsec).unwrap_or(0))
}

/// Where a request went, as span attributes encoded once per server (OTLP `KeyValue`s,
/// each a span's `attributes` field) and copied whole into every span that has them:
/// `rampart.backend` and `rampart.server`, which the request's span carries, then
/// `server.address`, which its attempts' spans add.
#[derive(Clone)]
pub struct Where {
    bytes: Arc<[u8]>,
    /// The length of the first two.
    names: usize,
}

impl Where {
    /// A server's attributes.
    pub fn server(backend: &str, server: &str, address: std::net::SocketAddr) -> Self {
        let mut b = Vec::with_capacity(96);
        otlp::names_attrs(&mut b, backend, Some(server));
        let names = b.len();
        otlp::address_attr(&mut b, address);
        Self {
            bytes: b.into(),
            names,
        }
    }

    /// A backend's, for a request that reached no server.
    pub fn backend(backend: &str) -> Self {
        let mut b = Vec::with_capacity(32);
        otlp::names_attrs(&mut b, backend, None);
        Self {
            names: b.len(),
            bytes: b.into(),
        }
    }

    /// `rampart.backend` and `rampart.server`.
    pub fn names(&self) -> &[u8] {
        &self.bytes[..self.names]
    }

    /// Those and `server.address`.
    pub fn all(&self) -> &[u8] {
        &self.bytes
    }
}

impl std::fmt::Debug for Where {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Where(..)")
    }
}

/// The kind of a span (OpenTelemetry's numbering).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Server = 2,
    Client = 3,
}

/// A traced request, recorded as it goes and queued whole for export once it is over:
/// its own span (kind SERVER) and the spans of its attempts at servers (kind CLIENT). It
/// lives on the heap from the start, so queueing it moves one pointer; its attributes
/// are kept as they come on the request path (shared names, addresses, the path) and
/// written out by the exporter.
#[derive(Debug)]
pub struct TraceRecord {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// All zero: none.
    pub parent: [u8; 8],
    pub trace_state: Option<HeaderValue>,
    pub method: &'static str,
    pub start: u64,
    pub end: u64,
    /// A copy: the request's own URI may hold its connection's read buffer.
    pub path: Path,
    /// 0: no response.
    pub status: u16,
    pub termination: [u8; 2],
    pub client: std::net::IpAddr,
    /// `rampart.frontend`, encoded.
    pub frontend: Arc<[u8]>,
    /// The backend and server it went to, when it went to one.
    pub at: Option<Where>,
    pub retries: u32,
    /// Its attempts: the first (most requests have one), then the others.
    pub first: Option<AttemptRecord>,
    pub more: Vec<AttemptRecord>,
}

impl TraceRecord {
    /// How many spans it makes.
    pub fn spans(&self) -> usize {
        1 + usize::from(self.first.is_some()) + self.more.len()
    }

    /// Its attempts, in order.
    pub fn attempts(&self) -> impl Iterator<Item = &AttemptRecord> {
        self.first.iter().chain(&self.more)
    }

    /// The request span's error status, when it failed.
    pub fn error(&self) -> Option<&'static str> {
        (self.status == 0 || self.status >= 500 || self.termination[0] != b'-')
            .then_some("request failed")
    }
}

/// The span of one attempt at a server (its trace and parent are its request's).
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub span_id: [u8; 8],
    pub start: u64,
    pub end: u64,
    pub at: Where,
    pub attempt: u32,
    /// The response's status, or the error's type.
    pub result: Result<u16, &'static str>,
}

impl AttemptRecord {
    /// The span's error status, when the attempt failed.
    pub fn error(&self) -> Option<&'static str> {
        match self.result {
            Ok(s) => (s >= 500).then_some("server error"),
            Err(e) => Some(e),
        }
    }
}

/// A request's path, copied (the request's URI may hold its connection's read buffer):
/// in place when short, as most are, else on the heap.
#[derive(Clone)]
pub enum Path {
    Inline { len: u8, bytes: [u8; 62] },
    Heap(Box<str>),
}

impl Path {
    pub fn new(p: &str) -> Self {
        if p.len() <= 62 {
            let mut bytes = [0u8; 62];
            bytes[..p.len()].copy_from_slice(p.as_bytes());
            Path::Inline {
                len: p.len() as u8,
                bytes,
            }
        } else {
            Path::Heap(p.into())
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Path::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Path::Heap(s) => s.as_bytes(),
        }
    }
}

impl std::fmt::Debug for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

/// Spans' fate, for `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    pub exported: AtomicU64,
    /// Dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Lost with an export the collector refused or that failed.
    pub failed: AtomicU64,
}

/// Requests waiting for the exporter, and the spans they make.
#[derive(Default)]
#[allow(
    clippy::vec_box,
    reason = "records are made on the heap on the request path; queueing moves a pointer"
)]
pub(crate) struct Pending {
    pub(crate) records: Vec<Box<TraceRecord>>,
    pub(crate) spans: usize,
}

/// Traced requests waiting for the exporter, and how it is woken.
#[allow(
    clippy::vec_box,
    reason = "records are made on the heap on the request path; queueing moves a pointer"
)]
pub(crate) struct Queue {
    pending: std::sync::Mutex<Pending>,
    /// The vector the exporter emptied last, given back: the queue swaps between two
    /// vectors whose memory stays allocated, so the request path never grows one.
    spare: std::sync::Mutex<Vec<Box<TraceRecord>>>,
    /// Pokes the exporter when a batch is full, or when the tracer goes.
    pub(crate) wake: tokio::sync::Notify,
    pub(crate) closed: std::sync::atomic::AtomicBool,
    /// Spans, at most.
    max: usize,
    batch: usize,
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[allow(clippy::vec_box, reason = "as in `Queue`")]
impl Queue {
    /// Takes what is queued, leaving the spare vector in its place.
    pub(crate) fn take(&self) -> Vec<Box<TraceRecord>> {
        let mut room = std::mem::take(&mut *lock(&self.spare));
        if room.capacity() == 0 {
            room.reserve(self.batch.min(self.max));
        }
        let mut p = lock(&self.pending);
        p.spans = 0;
        std::mem::replace(&mut p.records, room)
    }

    /// Gives an emptied vector back, to be the next one filled.
    pub(crate) fn give_back(&self, mut v: Vec<Box<TraceRecord>>) {
        v.clear();
        *lock(&self.spare) = v;
    }
}

/// Where spans go: a bounded queue the exporter thread empties. The request path only
/// pushes (under a lock held for the push); the exporter is woken when a batch is full,
/// else it comes by every `interval`, so a span costs no thread wake-up. The thread ends,
/// after sending what is queued, once the last holder drops the tracer (a reload that
/// changes `tracing`).
pub struct Tracer {
    queue: Arc<Queue>,
    pub counters: Arc<Counters>,
    pub settings: Tracing,
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer")
            .field("endpoint", &self.settings.endpoint.value)
            .finish()
    }
}

impl Tracer {
    /// Starts the exporter thread for `settings`.
    pub fn start(settings: &Tracing) -> std::io::Result<Arc<Self>> {
        let max = settings.max_queue.max(1);
        let batch = settings.batch.max(1);
        let queue = Arc::new(Queue {
            pending: std::sync::Mutex::new(Pending {
                records: Vec::with_capacity(batch.min(max)),
                spans: 0,
            }),
            spare: std::sync::Mutex::new(Vec::new()),
            wake: tokio::sync::Notify::new(),
            closed: Default::default(),
            max,
            batch,
        });
        let counters = Arc::new(Counters::default());
        let exporter = otlp::Exporter::new(settings, counters.clone());
        let q = queue.clone();
        std::thread::Builder::new()
            .name("rampart-otlp".into())
            .spawn(move || exporter.run(q))?;
        Ok(Arc::new(Self {
            queue,
            counters,
            settings: settings.clone(),
        }))
    }

    /// Queues a finished request with its attempts, or drops it (its spans counted) when
    /// they do not fit in the queue.
    pub fn send(&self, record: Box<TraceRecord>) {
        let q = &self.queue;
        let n = record.spans();
        let (before, after) = {
            let mut p = lock(&q.pending);
            let before = p.spans;
            if before + n > q.max {
                drop(p);
                self.counters.dropped.fetch_add(n as u64, Relaxed);
                return;
            }
            p.records.push(record);
            p.spans += n;
            (before, p.spans)
        };
        if before < q.batch && after >= q.batch {
            q.wake.notify_one();
        }
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        self.queue.closed.store(true, Relaxed);
        self.queue.wake.notify_one();
    }
}

/// A frontend's tracing: its tracer and which requests it traces.
#[derive(Debug, Clone)]
pub struct TraceSpec {
    pub tracer: Arc<Tracer>,
    /// The frontend's name as a span attribute, encoded.
    pub frontend: Arc<[u8]>,
    /// 0 to 1.
    pub ratio: f64,
    pub respect_parent: bool,
}

/// A traced request under way: its record, open until the request's outcome completes,
/// and where it goes then.
#[derive(Debug)]
pub struct RequestSpan {
    pub tracer: Arc<Tracer>,
    pub record: Box<TraceRecord>,
}

impl TraceSpec {
    /// Decides whether a request with `headers` is traced; its span if it is.
    pub fn start(
        &self,
        method: &Method,
        uri: &http::Uri,
        headers: &HeaderMap,
    ) -> Option<RequestSpan> {
        let parent = headers
            .get(&TRACEPARENT)
            .and_then(|v| parse_traceparent(v.as_bytes()));
        let sampled = match parent {
            Some(p) if self.respect_parent => p.sampled,
            _ => self.ratio > 0.0 && (self.ratio >= 1.0 || fastrand::f64() < self.ratio),
        };
        if !sampled {
            return None;
        }
        Some(RequestSpan {
            tracer: self.tracer.clone(),
            record: Box::new(TraceRecord {
                trace_id: parent.map_or_else(new_trace_id, |p| p.trace_id),
                span_id: new_span_id(),
                parent: parent.map_or([0; 8], |p| p.span_id),
                trace_state: parent.and_then(|_| headers.get(&TRACESTATE).cloned()),
                method: method_str(method),
                start: now_ns(),
                end: 0,
                path: Path::new(uri.path()),
                status: 0,
                termination: [b'-'; 2],
                client: std::net::Ipv4Addr::UNSPECIFIED.into(),
                frontend: self.frontend.clone(),
                at: None,
                retries: 0,
                first: None,
                more: Vec::new(),
            }),
        })
    }
}

/// What the request span's attributes come from, when the request's record completes.
pub struct Outcome {
    pub status: u16,
    pub termination: [u8; 2],
    pub at: Option<Where>,
    pub retries: u32,
    pub client: std::net::SocketAddr,
}

impl RequestSpan {
    /// Ends the span and queues it with its attempts'.
    pub fn end(self, o: Outcome) {
        let mut r = self.record;
        r.end = now_ns();
        r.status = o.status;
        r.termination = o.termination;
        r.at = o.at;
        r.retries = o.retries;
        r.client = o.client.ip();
        self.tracer.send(r);
    }

    /// How many attempts' spans it holds.
    pub fn attempts(&self) -> u32 {
        u32::from(self.record.first.is_some()) + self.record.more.len() as u32
    }

    /// Keeps an ended attempt's span, to be queued with this one.
    pub fn add_attempt(&mut self, span: AttemptRecord) {
        if self.record.first.is_none() {
            self.record.first = Some(span);
        } else {
            self.record.more.push(span);
        }
    }
}

/// A standard method's name without allocating; others as `_OTHER`, as OpenTelemetry's
/// conventions have it.
pub fn method_str(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "_OTHER",
    }
}

/// The trace a request's attempts belong to: its trace id and the request span's id.
#[derive(Debug, Clone, Copy)]
pub struct AttemptParent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
}

/// Whether the protocol is gRPC.
pub(crate) fn is_grpc(p: OtlpProtocol) -> bool {
    p == OtlpProtocol::Grpc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_bad_values_are_refused() {
        let v = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let p = parse_traceparent(v).unwrap();
        assert!(p.sampled);
        assert_eq!(hex(&p.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex(&p.span_id), "00f067aa0ba902b7");
        assert_eq!(traceparent(&p.trace_id, &p.span_id).as_bytes(), &v[..]);
        let unsampled = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        assert!(!parse_traceparent(unsampled).unwrap().sampled);
        for bad in [
            &b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"[..],
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            b"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"garbage",
            b"",
        ] {
            assert!(
                parse_traceparent(bad).is_none(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // A later version may carry more fields.
        let later = b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-ever";
        assert!(parse_traceparent(later).is_some());
    }

    #[test]
    fn paths_are_kept_whatever_their_length() {
        for p in ["/", "/orders/7", &"/x".repeat(31), &"/long".repeat(40)] {
            assert_eq!(Path::new(p).as_bytes(), p.as_bytes());
        }
        assert!(matches!(Path::new(&"/x".repeat(31)), Path::Inline { .. }));
        assert!(matches!(Path::new(&"/long".repeat(40)), Path::Heap(_)));
    }

    #[test]
    fn ids_are_never_zero() {
        for _ in 0..1000 {
            assert_ne!(new_trace_id(), [0; 16]);
            assert_ne!(new_span_id(), [0; 8]);
        }
    }
}
