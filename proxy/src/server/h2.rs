//! An HTTP/2 client connection, served by hyper; each stream runs the same handler as
//! HTTP/1.1. Idle connections close after the keep-alive timeout, and a stopping proxy
//! sends GOAWAY and lets open streams finish.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HOST, HeaderValue};
use http::{Request, Response};
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::body::{Body, BodyError};
use crate::error::Side;
use crate::handler::{ConnCtx, Done, handle};

/// A response body that completes its request's [`Done`] when it ends or is dropped.
pub struct Tracked {
    inner: Body,
    done: Option<Done>,
    bytes: u64,
    /// Open streams of the connection, for the idle timer.
    streams: Arc<Activity>,
}

impl Tracked {
    fn finish(&mut self, abort: Option<[u8; 2]>) {
        if let Some(d) = self.done.take() {
            d.finish(self.bytes, abort);
            self.streams.end();
        }
    }
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    self.bytes += d.len() as u64;
                }
            }
            Poll::Ready(Some(Err(e))) => {
                let term = if e.side == Side::Client {
                    *b"CD"
                } else {
                    *b"SD"
                };
                self.finish(Some(term));
            }
            Poll::Ready(None) => self.finish(None),
            Poll::Pending => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let abort = if self.inner.is_end_stream() {
            None
        } else {
            Some(*b"CD")
        };
        self.finish(abort);
    }
}

/// Open streams and the time the last one ended.
#[derive(Default)]
struct Activity {
    open: AtomicUsize,
    last_end_ms: AtomicU64,
    epoch: std::sync::OnceLock<Instant>,
}

impl Activity {
    fn now_ms(&self) -> u64 {
        self.epoch.get_or_init(Instant::now).elapsed().as_millis() as u64
    }
    fn begin(&self) {
        self.open.fetch_add(1, Relaxed);
    }
    fn end(&self) {
        self.last_end_ms.store(self.now_ms(), Relaxed);
        self.open.fetch_sub(1, Relaxed);
    }
    fn idle_for(&self) -> Option<Duration> {
        (self.open.load(Relaxed) == 0).then(|| {
            Duration::from_millis(self.now_ms().saturating_sub(self.last_end_ms.load(Relaxed)))
        })
    }
}

/// Serves HTTP/2 on `io` until the client or the proxy ends the connection.
pub async fn serve<I>(io: I, cx: Arc<ConnCtx>, mut shutdown: watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::default());
    activity.now_ms();
    let keep_alive = cx.frontend.timeouts.keep_alive;
    let max_streams = cx.frontend.h2_max_streams;
    let svc_cx = cx.clone();
    let svc_activity = activity.clone();
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let cx = svc_cx.clone();
        let activity = svc_activity.clone();
        activity.begin();
        async move {
            let mut req = req.map(|b| Body::incoming(b, Side::Client));
            // HTTP/2 carries the host in :authority; rules and HTTP/1 servers want Host.
            if !req.headers().contains_key(HOST)
                && let Some(v) = req
                    .uri()
                    .authority()
                    .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            {
                req.headers_mut().insert(HOST, v);
            }
            // Boxed: hyper spawns a task per stream, and a small task is cheaper to
            // allocate and move.
            let (resp, done) = Box::pin(handle(&cx, req, Duration::ZERO)).await;
            Ok::<Response<Tracked>, Infallible>(resp.map(|b| Tracked {
                inner: b,
                done: Some(done),
                bytes: 0,
                streams: activity,
            }))
        }
    });
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(max_streams)
        .max_header_list_size(cx.frontend.head_limits.max_head as u32);
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let mut tick = tokio::time::interval((keep_alive / 2).max(Duration::from_millis(100)));
    tick.tick().await;
    let mut stopping = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(client = %cx.info.client, "HTTP/2 connection ended: {e}");
                }
                return;
            }
            _ = shutdown.changed(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tick.tick(), if !stopping => {
                if activity.idle_for().is_some_and(|d| d >= keep_alive) {
                    stopping = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}
