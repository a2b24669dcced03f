//! Response compression, as HAProxy's `compression` and Envoy's compressor filter do it:
//! gzip, brotli or zstd by the client's `Accept-Encoding` (the backend's order of
//! preference among those the client accepts), for successful responses of the listed
//! content types above a size, never for responses already encoded, partial ones
//! (`Content-Range`), `no-transform` ones or answers to HEAD. The body is compressed as it
//! streams; `Content-Length` goes, `Vary: Accept-Encoding` is added, a strong `ETag`
//! becomes weak. Above a CPU limit new responses pass uncompressed.

use std::io::Write as _;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::header::{
    ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE,
    ETAG, HeaderValue, VARY,
};
use http::{HeaderMap, Method, Response};
use rampart_config::model::{Compression, CompressionAlgo};

use crate::body::Body;

/// A backend's compression settings, compiled.
#[derive(Debug, Clone)]
pub struct Spec {
    algos: Vec<CompressionAlgo>,
    /// Lower-case types; one ending in `/` matches every subtype.
    types: Vec<String>,
    min_size: u64,
    level: u32,
    cpu_limit: u32,
}

impl Spec {
    pub fn new(c: &Compression) -> Self {
        Self {
            algos: c.algorithms.clone(),
            types: c
                .types
                .iter()
                .map(|t| t.trim().to_ascii_lowercase())
                .collect(),
            min_size: c.min_size.0,
            level: c.level.max(1),
            cpu_limit: c.cpu_limit,
        }
    }
}

/// Compression counters of a frontend or backend (`comp_in`, `comp_out`, `comp_byp`,
/// `comp_rsp` in `show stat`).
#[derive(Debug, Default)]
pub struct Counters {
    /// Bytes fed to the compressor.
    pub bytes_in: AtomicU64,
    /// Bytes it produced.
    pub bytes_out: AtomicU64,
    /// Bytes of responses that would have been compressed but for the CPU limit.
    pub bypassed: AtomicU64,
    /// Responses compressed.
    pub responses: AtomicU64,
}

/// The first of `algos` the client accepts: `Accept-Encoding` with a non-zero q for the
/// token, or for `*` when the token is not named.
pub fn negotiate(algos: &[CompressionAlgo], accept: &HeaderMap) -> Option<CompressionAlgo> {
    let mut named: Vec<(String, bool)> = Vec::new();
    for v in accept.get_all(ACCEPT_ENCODING) {
        let Ok(v) = v.to_str() else { continue };
        for item in v.split(',') {
            let mut parts = item.split(';');
            let token = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            if token.is_empty() {
                continue;
            }
            let q = parts
                .find_map(|p| p.trim().strip_prefix("q=").or(p.trim().strip_prefix("Q=")))
                .and_then(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            named.push((token, q > 0.0));
        }
    }
    let accepts = |t: &str| match named.iter().find(|(n, _)| n == t) {
        Some((_, ok)) => *ok,
        None => named.iter().any(|(n, ok)| n == "*" && *ok),
    };
    algos.iter().copied().find(|a| accepts(a.token()))
}

/// Whether a response with these headers may be compressed by `spec`.
fn eligible(spec: &Spec, status: u16, h: &HeaderMap) -> bool {
    if !matches!(status, 200..=203)
        || h.contains_key(CONTENT_ENCODING)
        || h.contains_key(CONTENT_RANGE)
    {
        return false;
    }
    if h.get_all(CACHE_CONTROL).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.to_ascii_lowercase().contains("no-transform"))
    }) {
        return false;
    }
    let Some(ct) = h.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let ct = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if !spec.types.iter().any(|t| {
        if t.ends_with('/') {
            ct.starts_with(t.as_str())
        } else {
            ct == *t
        }
    }) {
        return false;
    }
    content_length(h).is_none_or(|n| n >= spec.min_size)
}

fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// The process's CPU use in percent of one core over about the last second, sampled at
/// most every 250 ms.
fn cpu_percent() -> u32 {
    static LAST: Mutex<Option<(Instant, f64)>> = Mutex::new(None);
    static PERCENT: AtomicU32 = AtomicU32::new(0);
    let mut last = LAST
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let now = Instant::now();
    match *last {
        Some((at, _)) if now.duration_since(at) < Duration::from_millis(250) => {}
        prev => {
            if let Some(ticks) = process_cpu_seconds() {
                if let Some((at, before)) = prev {
                    let wall = now.duration_since(at).as_secs_f64();
                    if wall > 0.0 {
                        let p = ((ticks - before) / wall * 100.0).clamp(0.0, 10_000.0);
                        PERCENT.store(p as u32, Relaxed);
                    }
                }
                *last = Some((now, ticks));
            }
        }
    }
    PERCENT.load(Relaxed)
}

fn process_cpu_seconds() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    let f: Vec<&str> = s.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// The algorithm a response to this request may be compressed with: none for HEAD, else
/// the first of the backend's the client accepts.
pub fn choose(spec: &Spec, method: &Method, request: &HeaderMap) -> Option<CompressionAlgo> {
    if *method == Method::HEAD {
        return None;
    }
    negotiate(&spec.algos, request)
}

/// Compresses `resp` with `algo` (see [`choose`]) when `spec` and the response allow it;
/// counts in `counters` (the frontend's and the backend's).
pub fn apply(
    spec: &Spec,
    algo: CompressionAlgo,
    resp: Response<Body>,
    counters: [&Arc<Counters>; 2],
) -> Response<Body> {
    let (mut parts, body) = resp.into_parts();
    if http_body::Body::is_end_stream(&body)
        || !eligible(spec, parts.status.as_u16(), &parts.headers)
    {
        return Response::from_parts(parts, body);
    }
    if spec.cpu_limit < 100 && cpu_percent() >= spec.cpu_limit {
        let n = content_length(&parts.headers).unwrap_or(0);
        for c in counters {
            c.bypassed.fetch_add(n, Relaxed);
        }
        return Response::from_parts(parts, body);
    }
    let enc = match Encoder::new(algo, spec.level) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!("compression: cannot start {}: {e}", algo.token());
            return Response::from_parts(parts, body);
        }
    };
    parts.headers.remove(CONTENT_LENGTH);
    parts
        .headers
        .insert(CONTENT_ENCODING, HeaderValue::from_static(algo.token()));
    vary(&mut parts.headers);
    weaken(&mut parts.headers);
    for c in counters {
        c.responses.fetch_add(1, Relaxed);
    }
    let counters = [counters[0].clone(), counters[1].clone()];
    Response::from_parts(parts, Body::compressed(body, enc, counters))
}

/// A compressed body: the server's body through an encoder, counted as it streams.
pub(crate) struct Compressed {
    pub(crate) inner: Body,
    pub(crate) enc: Option<Encoder>,
    pub(crate) trailers: Option<HeaderMap>,
    pub(crate) counters: [Arc<Counters>; 2],
}

impl Compressed {
    pub(crate) fn count(&self, fed: usize, out: usize) {
        for c in &self.counters {
            c.bytes_in.fetch_add(fed as u64, Relaxed);
            c.bytes_out.fetch_add(out as u64, Relaxed);
        }
    }
}

/// A compressor writing into a buffer the body takes from.
pub(crate) enum Encoder {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Br(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl Encoder {
    fn new(algo: CompressionAlgo, level: u32) -> std::io::Result<Self> {
        Ok(match algo {
            CompressionAlgo::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(level.min(9)),
            )),
            // A 256 KiB window (lgwin 18): what web responses need, without brotli's
            // 4 MiB default per response in flight.
            CompressionAlgo::Br => Encoder::Br(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                16 * 1024,
                level.min(11),
                18,
            ))),
            CompressionAlgo::Zstd => Encoder::Zstd(zstd::stream::write::Encoder::new(
                Vec::new(),
                i32::try_from(level.min(19)).unwrap_or(1),
            )?),
        })
    }

    /// Compresses `b`; returns what is ready to send.
    pub(crate) fn feed(&mut self, b: &[u8]) -> std::io::Result<Vec<u8>> {
        match self {
            Encoder::Gzip(e) => {
                e.write_all(b)?;
                Ok(std::mem::take(e.get_mut()))
            }
            Encoder::Br(e) => {
                e.write_all(b)?;
                Ok(std::mem::take(e.get_mut()))
            }
            Encoder::Zstd(e) => {
                e.write_all(b)?;
                Ok(std::mem::take(e.get_mut()))
            }
        }
    }

    /// Ends the stream; returns the rest.
    pub(crate) fn finish(self) -> std::io::Result<Vec<u8>> {
        match self {
            Encoder::Gzip(e) => e.finish(),
            Encoder::Br(e) => Ok(e.into_inner()),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

/// `ETag: "x"` becomes `W/"x"`: the compressed representation is not byte-identical.
fn weaken(h: &mut HeaderMap) {
    if let Some(e) = h.get(ETAG).and_then(|v| v.to_str().ok())
        && !e.starts_with("W/")
        && let Ok(w) = HeaderValue::from_str(&format!("W/{e}"))
    {
        h.insert(ETAG, w);
    }
}

/// Adds `Accept-Encoding` to `Vary` unless it (or `*`) is there.
fn vary(h: &mut HeaderMap) {
    let has = h.get_all(VARY).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("accept-encoding") || t.trim() == "*")
        })
    });
    if !has {
        h.append(VARY, HeaderValue::from_static("accept-encoding"));
    }
}
