//! The demo: three small HTTP servers on loopback that answer with their own name, for
//! `rampart demo` to put a front door in front of.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// The demo configuration.
pub const CONFIG: &str = include_str!("../examples/demo.yaml");

/// The demo servers: name and address.
pub const SERVERS: &[(&str, &str)] = &[
    ("web1", "127.0.0.1:9001"),
    ("web2", "127.0.0.1:9002"),
    ("api1", "127.0.0.1:9003"),
];

fn answer(name: &str, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let mut text = format!("Hello from {name}\n{} {}\n", req.method(), req.uri());
    for (k, v) in req.headers() {
        text.push_str(&format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())));
    }
    let mut r = Response::new(Full::new(Bytes::from(text)));
    r.headers_mut()
        .insert("content-type", http::HeaderValue::from_static("text/plain"));
    r
}

/// Starts one demo server on `addr`.
pub async fn serve(name: &'static str, addr: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| async move {
                    Ok::<_, Infallible>(answer(name, &req))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    Ok(())
}

/// What to try, printed once the demo is up.
pub fn banner(addr: SocketAddr) -> String {
    format!(
        "rampart demo: front door on http://{addr}/ in front of web1, web2 (weight 2:1) and api1\n\
         \n\
         Try:\n\
         \x20 curl -s http://{addr}/                  # web1 or web2 (round robin, 2:1)\n\
         \x20 curl -s http://{addr}/api/users         # api1 (use_backend api if api)\n\
         \x20 curl -s http://{addr}/ping              # answered by rampart itself\n\
         \x20 curl -si http://{addr}/private          # 403 from an http_request rule\n\
         \x20 curl -si http://{addr}/old-home         # 301 redirect\n\
         \x20 curl -s --http2-prior-knowledge http://{addr}/   # HTTP/2 on the same port\n\
         \n\
         Access log lines follow below. Stop with Ctrl-C.\n"
    )
}
