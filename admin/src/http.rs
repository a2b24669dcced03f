//! The admin HTTP listener: the stats page and its CSV/JSON exports and admin form,
//! Prometheus `/metrics`, and the `/ready` and `/live` probes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rampart_config::model::Stats;
use rampart_proxy::resilience::health;
use rampart_proxy::state::AdminState;

use crate::AdminCtx;
use crate::page::{self, PageOpts};
use crate::stat::{self, Filter};

/// What the listener serves.
pub struct HttpOpts {
    pub stats: Stats,
}

/// Binds `addr` and serves until the returned task is aborted.
pub async fn serve_http(
    addr: &str,
    opts: HttpOpts,
    ctx: Arc<AdminCtx>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let l = rampart_proxy::inherit::take_or_bind(&format!("admin-http {addr}"), addr)
        .and_then(tokio::net::TcpListener::from_std)?;
    let local = l.local_addr()?;
    tracing::info!(
        "stats page on http://{local}{}, metrics on /metrics",
        opts.stats.uri
    );
    let opts = Arc::new(opts);
    let task = tokio::spawn(async move {
        loop {
            let (tcp, _) = match l.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("admin HTTP accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let (ctx, opts) = (ctx.clone(), opts.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let (ctx, opts) = (ctx.clone(), opts.clone());
                    async move {
                        let _busy = ctx.busy();
                        Ok::<_, Infallible>(handle(&ctx, &opts, req).await)
                    }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(std::time::Duration::from_secs(10))
                    .serve_connection(TokioIo::new(tcp), svc);
                let _ = tokio::time::timeout(std::time::Duration::from_secs(300), conn).await;
            });
        }
    });
    Ok((local, task))
}

fn reply(status: StatusCode, ctype: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(ctype) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    r
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64(input: &[u8]) -> String {
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Compares in time independent of where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

fn authorized(stats: &Stats, req: &Request<Incoming>) -> bool {
    let Some(auth) = &stats.auth else {
        return true;
    };
    let want = format!(
        "Basic {}",
        base64(format!("{}:{}", auth.user, auth.password).as_bytes())
    );
    req.headers()
        .get(header::AUTHORIZATION)
        .is_some_and(|v| same(v.as_bytes(), want.as_bytes()))
}

fn form_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn handle(
    ctx: &Arc<AdminCtx>,
    opts: &HttpOpts,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    match path.as_str() {
        "/live" => return reply(StatusCode::OK, "text/plain", "ok\n"),
        "/ready" => {
            let ready = ctx
                .control
                .shared()
                .live
                .global
                .generation
                .load(std::sync::atomic::Ordering::Relaxed)
                > 0
                && !ctx.control.bound().is_empty();
            return if ready {
                reply(StatusCode::OK, "text/plain", "ready\n")
            } else {
                reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "not ready\n")
            };
        }
        "/metrics" => {
            return reply(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                crate::metrics::render(ctx),
            );
        }
        "/config_dump" => {
            return match ctx.xds.get() {
                Some(x) => reply(StatusCode::OK, "application/json", x.config_dump()),
                None => reply(
                    StatusCode::NOT_FOUND,
                    "text/plain",
                    "no xDS control plane is configured\n",
                ),
            };
        }
        _ => {}
    }
    let stats = &opts.stats;
    let (base, mods) = match path.split_once(';') {
        Some((b, m)) => (b, m),
        None => (path.as_str(), ""),
    };
    if base != stats.uri && base.trim_end_matches('/') != stats.uri.trim_end_matches('/') {
        return reply(StatusCode::NOT_FOUND, "text/plain", "Not found\n");
    }
    if !authorized(stats, &req) {
        let mut r = reply(
            StatusCode::UNAUTHORIZED,
            "text/html",
            "<html><body><h1>401 Unauthorized</h1>\nYou need a valid user and password to access this content.\n</body></html>\n",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Basic realm=\"rampart statistics\""),
        );
        return r;
    }
    if req.method() == Method::POST {
        if !stats.admin {
            return reply(
                StatusCode::FORBIDDEN,
                "text/plain",
                "The stats page's admin form is not enabled.\n",
            );
        }
        let body = match Limited::new(req.into_body(), 64 * 1024).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return reply(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "text/plain",
                    "Form too large.\n",
                );
            }
        };
        let st = admin_action(ctx, &String::from_utf8_lossy(&body));
        ctx.persist();
        let mut r = reply(StatusCode::SEE_OTHER, "text/plain", "");
        if let Ok(v) = header::HeaderValue::from_str(&format!("{};st={st}", stats.uri)) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        return r;
    }
    let mut filter = Filter::default();
    let mut refresh = Some(stats.refresh.as_secs().max(1));
    let mut status = None;
    let (mut csv, mut json) = (false, false);
    for m in mods.split(';').filter(|m| !m.is_empty()) {
        match m {
            "csv" => csv = true,
            "json" => json = true,
            "up" => filter.up_only = true,
            "no-maint" => filter.no_maint = true,
            "norefresh" => refresh = None,
            m if m.starts_with("st=") => status = Some(&m[3..]),
            _ => {}
        }
    }
    if csv {
        return reply(StatusCode::OK, "text/plain", stat::show_stat(ctx, &filter));
    }
    if json {
        return reply(
            StatusCode::OK,
            "application/json",
            stat::show_stat_json(ctx, &filter),
        );
    }
    let html = page::render(
        ctx,
        &PageOpts {
            uri: &stats.uri,
            refresh,
            admin: stats.admin,
            filter,
            status,
        },
    );
    reply(StatusCode::OK, "text/html; charset=utf-8", html)
}

/// Applies the form's action to the chosen servers; returns HAProxy's status code.
fn admin_action(ctx: &AdminCtx, form: &str) -> &'static str {
    let mut backend = None;
    let mut servers = Vec::new();
    let mut action = None;
    for pair in form.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = form_decode(v);
        match k {
            "b" => backend = Some(v),
            "s" => servers.push(v),
            "action" => action = Some(v),
            _ => {}
        }
    }
    let (Some(b), Some(action)) = (backend, action) else {
        return "ERRP";
    };
    if servers.is_empty() || action.is_empty() {
        return "NONE";
    }
    let snap = ctx.control.shared().snapshot.load_full();
    let Some(bi) = snap.backend_index(&b) else {
        return "ERRP";
    };
    let be = &snap.backends[bi];
    let mut done = 0;
    for s in &servers {
        let Some(srv) = be.servers.iter().find(|x| &*x.name == s.as_str()) else {
            continue;
        };
        let l = &srv.live;
        let ok = match action.as_str() {
            "ready" => {
                l.set_admin(AdminState::Ready, &be.live);
                true
            }
            "drain" => {
                l.set_admin(AdminState::Drain, &be.live);
                true
            }
            "maint" => {
                l.set_admin(AdminState::Maint, &be.live);
                true
            }
            "dhlth" => health::set_paused(l, &be.live, true),
            "ehlth" => health::set_paused(l, &be.live, false),
            "hrunn" | "hdown" => {
                let enabled = l.has_checks();
                if enabled {
                    health::force(l, &be.live, action == "hrunn", std::time::Instant::now());
                }
                enabled
            }
            _ => return "ERRP",
        };
        if ok {
            done += 1;
        }
    }
    match done {
        0 => "NONE",
        n if n == servers.len() => "DONE",
        _ => "PART",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_and_forms() {
        assert_eq!(base64(b"admin:secret"), "YWRtaW46c2VjcmV0");
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(form_decode("web%201+x%2Fy%zz%4"), "web 1 x/y%zz%4");
    }
}
