//! Connections to servers: reuse, idle expiry, and servers that close kept-alive
//! connections behind the proxy's back.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::*;

fn proxy(origin: std::net::SocketAddr, pool: &str) -> Proxy {
    Proxy::start(&format!(
        "global: {{ threads: 1 }}\nfrontends: {{ fe: {{ bind: \"127.0.0.1:0\", default_backend: be }} }}\nbackends:\n  be:\n    pool: {pool}\n    servers: {{ s: {{ address: \"{origin}\" }} }}\n"
    ))
}

fn peers(o: &Origin) -> BTreeSet<u16> {
    o.seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.peer.port())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_to_servers_are_reused() {
    let o = Origin::named("o").await;
    let p = proxy(o.addr, "{ max_idle_per_server: 8 }");
    for _ in 0..20 {
        assert_eq!(get(p.addr("fe"), "/").await.status, 200);
    }
    assert_eq!(
        peers(&o).len(),
        1,
        "20 sequential requests used {:?}",
        peers(&o)
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_expire_and_pooling_can_be_off() {
    let o = Origin::named("o").await;
    let p = proxy(o.addr, "{ idle_timeout: 200ms }");
    get(p.addr("fe"), "/").await;
    let pool = p.handle().snapshot().backends[0].servers[0]
        .upstream
        .pool
        .clone();
    assert_eq!(pool.idle_count(), 1);
    assert!(
        eventually(Duration::from_secs(5), || pool.idle_count() == 0).await,
        "the sweep closes expired connections"
    );
    get(p.addr("fe"), "/").await;
    assert_eq!(peers(&o).len(), 2, "a new connection after expiry");
    p.stop().await;

    let o = Origin::named("o").await;
    let p = proxy(o.addr, "{ max_idle_per_server: 0 }");
    for _ in 0..5 {
        get(p.addr("fe"), "/").await;
    }
    assert_eq!(peers(&o).len(), 5, "no reuse with pooling off");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_closing_kept_alive_connections_loses_no_request() {
    // Answers one request per connection without saying so, then closes.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let conns = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c2 = conns.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            c2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
            });
        }
    });
    let p = proxy(addr, "{ max_idle_per_server: 8 }");
    for i in 0..30 {
        let g = get(p.addr("fe"), "/").await;
        assert_eq!(
            (g.status.as_u16(), g.text().as_str()),
            (200, "ok"),
            "request {i}"
        );
    }
    assert!(conns.load(std::sync::atomic::Ordering::SeqCst) >= 30);
    p.stop().await;
}
